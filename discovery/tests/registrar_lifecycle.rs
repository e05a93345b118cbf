//! The registrar against the fake: register, update, deregister, and each
//! fault it must come back from.

mod common;

use std::time::Duration;

use common::{fake, live_again, settle, stored};
use etcd_grpc_discovery::{
    Codec, EndReason, Endpoint, Error, Registrar, RegistrationState, Resolver,
};
use fake_etcd::{errors, Rpc};
use serde_json::json;

#[tokio::test(start_paused = true)]
async fn register_update_and_deregister() {
    let (etcd, client) = fake().await;
    let resolver = Resolver::builder(client.clone(), "greeter").start();
    let registration = Registrar::builder(client.clone(), "greeter", "10.0.0.1:50051")
        .metadata(json!({"weight": 2}))
        .ttl(10)
        .start();
    let lease = live_again(&registration, None).await;
    settle(&resolver, &["10.0.0.1:50051"]).await;
    assert_eq!(
        stored(&client, "greeter").await,
        [("greeter/10.0.0.1:50051".to_owned(), lease)]
    );
    assert_eq!(resolver.snapshot().endpoints["10.0.0.1:50051"].weight(), 2);

    registration
        .update_metadata(json!({"weight": 5}))
        .await
        .unwrap();
    let mut rx = resolver.subscribe();
    rx.wait_for(|s| {
        s.endpoints
            .get("10.0.0.1:50051")
            .is_some_and(|e| e.weight() == 5)
    })
    .await
    .unwrap();
    assert_eq!(
        stored(&client, "greeter").await[0].1,
        lease,
        "updated in place, same lease"
    );

    // It stays live across many TTLs.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(registration.state(), RegistrationState::Live { lease });

    registration.deregister().await.unwrap();
    settle(&resolver, &[]).await;
    assert!(stored(&client, "greeter").await.is_empty());
    assert!(etcd.lease(lease).is_none(), "the lease is revoked");
}

/// The member is partitioned longer than the TTL: the lease expires; once
/// the partition heals the registrar registers again, under the same key.
#[tokio::test(start_paused = true)]
async fn lease_expiry_during_a_partition_is_recovered() {
    let (etcd, client) = fake().await;
    let resolver = Resolver::builder(client.clone(), "svc").start();
    let registration = Registrar::builder(client.clone(), "svc", "10.0.0.2:1")
        .ttl(6)
        .start();
    let first = live_again(&registration, None).await;
    settle(&resolver, &["10.0.0.2:1"]).await;

    etcd.pause();
    etcd.advance(Duration::from_secs(7)).await;
    assert!(etcd.lease(first).is_none(), "expired during the partition");
    let mut rx = registration.watch_state();
    rx.wait_for(|s| matches!(s, RegistrationState::Lost { .. }))
        .await
        .unwrap();
    etcd.resume();

    let second = live_again(&registration, Some(first)).await;
    assert_ne!(first, second);
    settle(&resolver, &["10.0.0.2:1"]).await;
    assert_eq!(
        stored(&client, "svc").await,
        [("svc/10.0.0.2:1".to_owned(), second)],
        "one key, the new lease"
    );
}

/// The keepalive stream ends while the lease is alive: it is reopened on
/// the same lease.
#[tokio::test(start_paused = true)]
async fn a_dropped_keepalive_stream_is_reopened_on_the_same_lease() {
    let (etcd, client) = fake().await;
    let registration = Registrar::builder(client.clone(), "svc", "10.0.0.3:1")
        .ttl(9)
        .start();
    let lease = live_again(&registration, None).await;
    etcd.end_keepalive_streams(errors::leader_changed());
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        registration.state(),
        RegistrationState::Live { lease },
        "same lease, still live"
    );
    assert_eq!(
        stored(&client, "svc").await,
        [("svc/10.0.0.3:1".to_owned(), lease)]
    );

    etcd.drop_connections();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        registration.state(),
        RegistrationState::Live { lease },
        "through a dropped connection too"
    );
}

/// Someone deletes or overwrites the key: it is put back.
#[tokio::test(start_paused = true)]
async fn a_key_deleted_or_overwritten_out_of_band_is_restored() {
    let (_etcd, mut client) = fake().await;
    let resolver = Resolver::builder(client.clone(), "svc").start();
    let registration = Registrar::builder(client.clone(), "svc", "10.0.0.4:1")
        .ttl(10)
        .start();
    let lease = live_again(&registration, None).await;
    settle(&resolver, &["10.0.0.4:1"]).await;

    client.delete("svc/10.0.0.4:1", None).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    settle(&resolver, &["10.0.0.4:1"]).await;
    assert_eq!(
        stored(&client, "svc").await,
        [("svc/10.0.0.4:1".to_owned(), lease)]
    );

    client
        .put(
            "svc/10.0.0.4:1",
            r#"{"Op":0,"Addr":"10.9.9.9:1","Metadata":null}"#,
            None,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    settle(&resolver, &["10.0.0.4:1"]).await;
    assert_eq!(
        stored(&client, "svc").await,
        [("svc/10.0.0.4:1".to_owned(), lease)]
    );
}

/// With no watch on its own key (watches fail), the registrar checks the
/// key on a timer, and puts it back: also with a short TTL, whose renewals
/// (every 2/3 s) come before the check is due. A review found the check
/// re-armed on every renewal, and so never due with a TTL under 3 s.
#[tokio::test(start_paused = true)]
async fn a_key_deleted_while_watches_fail_is_restored_even_with_a_short_ttl() {
    let (etcd, mut client) = fake().await;
    let registration = Registrar::builder(client.clone(), "svc", "10.0.0.5:1")
        .ttl(2)
        .start();
    let lease = live_again(&registration, None).await;

    etcd.fail_always(Rpc::Watch, errors::no_leader());
    etcd.end_watch_streams(errors::leader_changed());
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.delete("svc/10.0.0.5:1", None).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;

    assert_eq!(
        stored(&client, "svc").await,
        [("svc/10.0.0.5:1".to_owned(), lease)],
        "put back while watches still fail"
    );
}

/// Grants fail for a while (etcd unavailable): the registrar keeps trying
/// with backoff and registers once they succeed.
#[tokio::test(start_paused = true)]
async fn failing_grants_are_retried() {
    let (etcd, client) = fake().await;
    etcd.fail_next(Rpc::LeaseGrant, 5, errors::no_leader());
    let registration = Registrar::builder(client.clone(), "svc", "10.0.0.5:1").start();
    // Every state until live: each failed grant shows as `Lost` for the
    // length of its backoff (time stands still while this task can run, so
    // none is missed).
    let mut states = registration.watch_state();
    let mut lost = Vec::new();
    loop {
        match states.borrow_and_update().clone() {
            RegistrationState::Lost { reason } => lost.push(reason),
            RegistrationState::Live { .. } => break,
            _ => {}
        }
        states.changed().await.unwrap();
    }
    assert_eq!(lost.len(), 5, "each failed grant was seen: {lost:?}");
    assert!(
        lost.iter()
            .all(|reason| reason.contains("etcdserver: no leader")),
        "{lost:?}"
    );
    assert_eq!(stored(&client, "svc").await.len(), 1);
}

/// A codec that panics: the registration's task dies with it.
#[derive(Debug)]
struct PanickingCodec;

impl Codec for PanickingCodec {
    fn encode(&self, _: &Endpoint) -> Vec<u8> {
        panic!("this codec cannot encode (on purpose)")
    }

    fn decode(&self, _: &str, _: &[u8], _: &[u8]) -> Option<Endpoint> {
        None
    }
}

/// `live()` once returned `()` when the task had died, as if registered.
/// It now says the registration ended, and why.
#[tokio::test(start_paused = true)]
async fn live_says_when_the_registration_has_ended() {
    let (_etcd, client) = fake().await;
    let registration = Registrar::builder(client.clone(), "svc", "10.0.0.7:1")
        .codec(PanickingCodec)
        .start();
    // Paused time: the limit fires only if the task never says it ended.
    let ended = tokio::time::timeout(Duration::from_secs(3600), registration.live())
        .await
        .expect("live() answers once the task has ended")
        .unwrap_err();
    assert!(
        matches!(
            &ended,
            Error::Ended(EndReason::Stopped(reason)) if reason == "the registration task panicked"
        ),
        "{ended:?}"
    );
    assert!(registration.state().has_ended());
    let update = registration.update_metadata(json!({"weight": 2})).await;
    assert!(
        matches!(update, Err(Error::Ended(EndReason::Stopped(_)))),
        "{update:?}"
    );
    assert!(
        stored(&client, "svc").await.is_empty(),
        "a lease was granted, the put never happened"
    );
}

/// After a restart (streams broken, leases renewed) it stays registered.
#[tokio::test(start_paused = true)]
async fn a_restart_is_survived() {
    let (etcd, client) = fake().await;
    let resolver = Resolver::builder(client.clone(), "svc").start();
    let registration = Registrar::builder(client.clone(), "svc", "10.0.0.6:1")
        .ttl(6)
        .start();
    live_again(&registration, None).await;
    etcd.restart().await.unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(registration.state().is_live(), "{:?}", registration.state());
    settle(&resolver, &["10.0.0.6:1"]).await;
    assert_eq!(stored(&client, "svc").await.len(), 1);
}
