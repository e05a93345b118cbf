//! The registrar and resolver under random schedules of faults: while a
//! schedule runs, resolvers publish only states etcd held; after it heals,
//! everything converges within a bound, with no duplicate and no stale
//! entry. On the fake in virtual time (many cases), and on a real etcd
//! with `ETCD_ENDPOINTS` (a few cases, real waits, faults through bridges).

use conformance::discovery_properties::skip_unless_fake;

#[test]
fn registrar_and_resolver_converge_after_random_faults() {
    conformance::discovery_properties::registrar_and_resolver_converge(256);
}

/// With virtual time a schedule replays exactly: the same steps and seed
/// give the same trace, to the millisecond and the revision.
#[tokio::test(start_paused = true)]
async fn a_schedule_replays_identically_from_its_seed() {
    use conformance::discovery_properties::{trace_schedule, Step};
    if skip_unless_fake("a_schedule_replays_identically_from_its_seed") {
        return;
    }
    let schedule = vec![
        Step::Start(0),
        Step::Start(1),
        Step::Wait(3),
        Step::Partition(9),
        Step::Kill(1),
        Step::DropConnections,
        Step::CompactGap(0),
        Step::Errors(2),
        Step::Restart,
        Step::Start(2),
    ];
    let first = trace_schedule(schedule.clone(), 42).await.unwrap();
    let second = trace_schedule(schedule, 42).await.unwrap();
    assert!(first.len() > 15, "a trace worth comparing: {first:#?}");
    assert_eq!(first, second);
}

/// The first bug the property found: an instance's key deleted while no
/// watch could be opened (a watch outage with compaction) was never put
/// back, because the registrar re-watched its key from "now".
#[tokio::test(start_paused = true)]
async fn regression_key_deleted_during_a_watch_outage_is_restored() {
    use conformance::discovery_properties::{check_schedule, Step, Variant};
    if skip_unless_fake("regression_key_deleted_during_a_watch_outage_is_restored") {
        return;
    }
    let schedule = vec![Step::Start(2), Step::CompactGap(2)];
    check_schedule(schedule, 1, Variant::Correct).await.unwrap();
}

/// Found by the property: an instance whose key was overwritten out of
/// band died before putting it back. The model had overwritten it with no
/// lease, so the foreign key stayed for ever; a squatter's key now has a
/// lease nobody renews, and goes with it.
#[tokio::test(start_paused = true)]
async fn an_overwritten_key_of_an_instance_that_dies_goes_away() {
    use conformance::discovery_properties::{check_schedule, Step, Variant};
    if skip_unless_fake("an_overwritten_key_of_an_instance_that_dies_goes_away") {
        return;
    }
    let schedule = vec![
        Step::Start(2),
        Step::Wait(1),
        Step::DropConnections,
        Step::Overwrite(2),
        Step::DieInGap(2),
    ];
    check_schedule(schedule, 1795329810557152822, Variant::Correct)
        .await
        .unwrap();
}

/// A resolver that merges on re-listing instead of replacing keeps
/// instances deleted during a watch gap; the property must catch it.
#[test]
fn a_resolver_that_merges_on_relist_is_caught() {
    use conformance::discovery_properties::{run_property, Variant};
    if skip_unless_fake("a_resolver_that_merges_on_relist_is_caught") {
        return;
    }
    run_property(1024, Variant::MergesOnRelist).expect_err("the broken resolver is caught");
}

/// A resolver that empties its snapshot when a call fails publishes a set
/// etcd never held; the property must catch it.
#[test]
fn a_resolver_that_empties_on_errors_is_caught() {
    use conformance::discovery_properties::{run_property, Variant};
    if skip_unless_fake("a_resolver_that_empties_on_errors_is_caught") {
        return;
    }
    let failure =
        run_property(1024, Variant::ClearsOnError).expect_err("the broken resolver is caught");
    // Caught for the right reason: an empty set published while etcd held
    // instances (the runner wraps the message and adds the schedule).
    assert!(
        failure.contains(" published [] at revision ")
            && failure.contains(", when etcd held [Endpoint {"),
        "{failure}"
    );
}

/// The schedule that exposes a merging resolver, checked directly: an
/// instance dies while the resolvers cannot watch, and its lease expires
/// in the gap. The real resolver drops it; the broken one keeps it.
#[tokio::test(start_paused = true)]
async fn a_death_in_a_watch_gap_is_seen_only_by_replacing() {
    use conformance::discovery_properties::{check_schedule, Step, Variant};
    if skip_unless_fake("a_death_in_a_watch_gap_is_seen_only_by_replacing") {
        return;
    }
    let schedule = vec![
        Step::Start(0),
        Step::Start(1),
        Step::Wait(2),
        Step::Kill(0),
        Step::CompactGap(1),
    ];
    check_schedule(schedule.clone(), 7, Variant::Correct)
        .await
        .unwrap();
    let failure = check_schedule(schedule, 7, Variant::MergesOnRelist)
        .await
        .unwrap_err();
    // Caught for the right reason: a resolver published the dead instance
    // after re-listing, at a revision where etcd held only the live one.
    let endpoint =
        |addr: &str| format!(r#"Endpoint {{ id: "{addr}", addr: "{addr}", metadata: Null }}"#);
    let (dead, live) = (endpoint("10.0.0.1:50051"), endpoint("10.0.0.2:50051"));
    assert!(
        failure.starts_with("resolver ")
            && failure.contains(&format!(" published [{dead}, {live}] at revision "))
            && failure.ends_with(&format!(", when etcd held [{live}]")),
        "{failure}"
    );
}

/// Found by the property in CI: the registrar saw its key deleted, but the
/// put that should have restored it failed (an injected timeout), and the
/// failure was ignored while the watch stayed quiet: the key stayed gone.
#[tokio::test(start_paused = true)]
async fn regression_a_failed_restore_is_retried() {
    use conformance::discovery_properties::{check_schedule, Step, Variant};
    if skip_unless_fake("regression_a_failed_restore_is_retried") {
        return;
    }
    let schedule = vec![
        Step::Start(0),
        Step::Wait(1),
        Step::DeleteKey(0),
        Step::Errors(1),
        Step::DeleteKey(0),
    ];
    check_schedule(schedule, 1795325971919158188, Variant::Correct)
        .await
        .unwrap();
}
