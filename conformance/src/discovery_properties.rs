//! Property tests of the `discovery` registrar and resolver: random
//! schedules of instances starting and stopping, time passing, partitions,
//! dropped connections, restarts, watch gaps with compaction, out-of-band
//! deletes and injected errors. After each schedule heals and settles,
//! every resolver must agree with the live registrations.
//!
//! Runs on the fake, in paused tokio time shared by the fake's leases and
//! the registrar's timers, so a case of minutes of etcd time takes
//! milliseconds and replays from its seed ([`crate::properties::SEED_VAR`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use discovery::{Registrar, Registration, Resolver};
use etcd_client::{Client, GetOptions};
use fake_etcd::{errors, FakeEtcd, Rpc, TimeSource};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

const SERVICE: &str = "svc";
const INSTANCES: u8 = 3;
const TTL: i64 = 6;

/// One step of a schedule.
#[derive(Debug, Clone)]
pub enum Step {
    /// Start instance `i` (if it is not running).
    Start(u8),
    /// Deregister instance `i`.
    Stop(u8),
    /// Kill instance `i`: its keepalives stop; its key goes with its lease.
    Kill(u8),
    /// Let this many seconds pass.
    Wait(u8),
    /// Partition the member for this many seconds, then heal.
    Partition(u8),
    /// Break every connection.
    DropConnections,
    /// Restart the member.
    Restart,
    /// Keep watchers away for a TTL while an instance's key is deleted and
    /// history is compacted: a watch gap.
    CompactGap(u8),
    /// Instance `i` dies while watchers are kept away; its lease expires and
    /// history is compacted before they return.
    DieInGap(u8),
    /// Delete instance `i`'s key behind its back.
    DeleteKey(u8),
    /// Fail the next few calls of every RPC.
    Errors(u8),
    /// Change instance `i`'s weight.
    Metadata(u8, u8),
}

/// Schedules of up to `max` steps.
pub fn schedule(max: usize) -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        4 => (0..INSTANCES).prop_map(Step::Start),
        1 => (0..INSTANCES).prop_map(Step::Stop),
        1 => (0..INSTANCES).prop_map(Step::Kill),
        3 => (1..20u8).prop_map(Step::Wait),
        1 => (1..15u8).prop_map(Step::Partition),
        1 => Just(Step::DropConnections),
        1 => Just(Step::Restart),
        1 => (0..INSTANCES).prop_map(Step::CompactGap),
        1 => (0..INSTANCES).prop_map(Step::DieInGap),
        1 => (0..INSTANCES).prop_map(Step::DeleteKey),
        1 => (1..4u8).prop_map(Step::Errors),
        1 => (0..INSTANCES, 1..9u8).prop_map(|(i, w)| Step::Metadata(i, w)),
    ];
    proptest::collection::vec(step, 1..max)
}

fn addr(i: u8) -> String {
    format!("10.0.0.{}:50051", i + 1)
}

/// Runs `cases` random schedules against the fake.
///
/// # Panics
///
/// When a property fails: with the shrunk schedule and the seed.
pub fn registrar_and_resolver_converge(cases: u32) {
    if let Err(failure) = run_property(cases, Variant::Correct) {
        panic!("{failure}");
    }
}

/// Which resolver the property drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// The real one.
    Correct,
    /// One that merges on re-listing instead of replacing (a known bug
    /// class), to show the property catches it.
    MergesOnRelist,
}

/// Runs the property; `Err` holds the shrunk failing schedule and the seed.
///
/// # Errors
///
/// When a schedule breaks a property.
pub fn run_property(cases: u32, variant: Variant) -> Result<(), String> {
    let (mut runner, seed) = crate::properties::seeded_runner(cases);
    let result = runner.run(&schedule(16), |steps| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        runtime
            .block_on(check(steps, seed, variant))
            .map_err(TestCaseError::fail)
    });
    result.map_err(|failure| {
        format!(
            "{failure}\nnote: rerun with {}={seed} to replay this run",
            crate::properties::SEED_VAR
        )
    })
}

/// Runs one schedule and checks the properties (for regression tests of
/// schedules the property once shrank to).
///
/// # Errors
///
/// When the schedule breaks a property.
pub async fn check_schedule(steps: Vec<Step>, seed: u64, variant: Variant) -> Result<(), String> {
    check(steps, seed, variant).await
}

struct World {
    etcd: FakeEtcd,
    client: Client,
    running: BTreeMap<u8, Registration>,
    /// Killed instances: their keys must be gone once their TTL has passed.
    killed: BTreeSet<u8>,
}

impl World {
    async fn start(&mut self, i: u8, seed: u64) {
        if self.running.contains_key(&i) {
            return;
        }
        self.killed.remove(&i);
        let registration = Registrar::builder(self.client.clone(), SERVICE, addr(i))
            .ttl(TTL)
            .seed(seed ^ u64::from(i))
            .backoff(Duration::from_millis(100), Duration::from_secs(2))
            .start();
        self.running.insert(i, registration);
    }
}

async fn check(steps: Vec<Step>, seed: u64, variant: Variant) -> Result<(), String> {
    let etcd = FakeEtcd::builder()
        .time(TimeSource::Tokio)
        .seed(seed)
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let client = Client::connect([etcd.endpoint()], None)
        .await
        .map_err(|e| e.to_string())?;
    let resolvers: Vec<Resolver> = (0..2)
        .map(|r| {
            let builder = Resolver::builder(client.clone(), SERVICE)
                .seed(seed.wrapping_add(100 + r))
                .backoff(Duration::from_millis(50), Duration::from_secs(2));
            match variant {
                Variant::Correct => builder.start(),
                Variant::MergesOnRelist => builder.broken_merge_on_relist().start(),
            }
        })
        .collect();
    let mut world = World {
        etcd,
        client,
        running: BTreeMap::new(),
        killed: BTreeSet::new(),
    };

    for step in &steps {
        match *step {
            Step::Start(i) => world.start(i, seed).await,
            Step::Stop(i) => {
                if let Some(registration) = world.running.remove(&i) {
                    // During an outage a deregister may fail; the key then
                    // goes with its lease, like a killed instance's.
                    if registration.deregister().await.is_err() {
                        world.killed.insert(i);
                    }
                }
            }
            Step::Kill(i) => {
                if world.running.remove(&i).is_some() {
                    world.killed.insert(i);
                }
            }
            Step::Wait(s) => tokio::time::sleep(Duration::from_secs(u64::from(s))).await,
            Step::Partition(s) => {
                world.etcd.pause();
                world.etcd.advance(Duration::from_secs(u64::from(s))).await;
                world.etcd.resume();
            }
            Step::DropConnections => world.etcd.drop_connections(),
            Step::Restart => world.etcd.restart().await.map_err(|e| e.to_string())?,
            Step::CompactGap(i) => {
                world.etcd.fail_always(Rpc::Watch, errors::no_leader());
                world.etcd.end_watch_streams(errors::leader_changed());
                // Long enough for killed instances' leases to expire unseen.
                tokio::time::sleep(Duration::from_secs(TTL as u64 + 1)).await;
                let _ = world
                    .client
                    .clone()
                    .delete(format!("{SERVICE}/{}", addr(i)), None)
                    .await;
                world.etcd.compact(world.etcd.revision());
                tokio::time::sleep(Duration::from_millis(500)).await;
                world.etcd.clear_faults();
            }
            Step::DieInGap(i) => {
                world.etcd.fail_always(Rpc::Watch, errors::no_leader());
                world.etcd.end_watch_streams(errors::leader_changed());
                if world.running.remove(&i).is_some() {
                    world.killed.insert(i);
                }
                tokio::time::sleep(Duration::from_secs(TTL as u64 + 1)).await;
                world.etcd.compact(world.etcd.revision());
                world.etcd.clear_faults();
            }
            Step::DeleteKey(i) => {
                let _ = world
                    .client
                    .clone()
                    .delete(format!("{SERVICE}/{}", addr(i)), None)
                    .await;
            }
            Step::Errors(n) => {
                world
                    .etcd
                    .fail_next(Rpc::Any, usize::from(n), errors::request_timed_out())
            }
            Step::Metadata(i, w) => {
                if let Some(registration) = world.running.get(&i) {
                    let _ = registration
                        .update_metadata(serde_json::json!({ "weight": w }))
                        .await;
                }
            }
        }
    }

    // Heal and settle: no faults, then more than a TTL plus the longest
    // backoff of virtual time.
    world.etcd.clear_faults();
    world.etcd.resume();
    tokio::time::sleep(Duration::from_secs(TTL as u64 * 2 + 5)).await;

    let live: BTreeSet<String> = world.running.keys().map(|i| addr(*i)).collect();
    for (i, registration) in &world.running {
        if !registration.state().is_live() {
            return Err(format!(
                "instance {i} not live after healing: {:?}",
                registration.state()
            ));
        }
    }
    let stored = world
        .client
        .clone()
        .get(format!("{SERVICE}/"), Some(GetOptions::new().with_prefix()))
        .await
        .map_err(|e| e.to_string())?;
    let keys: Vec<String> = stored
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap_or("").to_owned())
        .collect();
    let stored_addrs: BTreeSet<String> = keys
        .iter()
        .map(|k| k.trim_start_matches(&format!("{SERVICE}/")).to_owned())
        .collect();
    if stored_addrs.len() != keys.len() || stored_addrs != live {
        return Err(format!("etcd holds {keys:?}, live instances are {live:?}"));
    }
    for (r, resolver) in resolvers.iter().enumerate() {
        let snapshot = resolver.snapshot();
        let seen: BTreeSet<String> = snapshot
            .endpoints
            .values()
            .map(|e| e.addr.clone())
            .collect();
        if seen != live || snapshot.stale || snapshot.endpoints.len() != seen.len() {
            return Err(format!(
                "resolver {r} sees {snapshot:?}, live instances are {live:?}"
            ));
        }
    }
    Ok(())
}
