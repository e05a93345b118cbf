//! Shared helpers: a fake etcd on tokio's (paused) clock, so the fake's
//! leases and the registrar's timers share one timeline.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use etcd_client::Client;
use etcd_grpc_discovery::{Registration, RegistrationState, Resolver};
use fake_etcd::{FakeEtcd, TimeSource};

pub async fn fake() -> (FakeEtcd, Client) {
    let etcd = FakeEtcd::builder()
        .time(TimeSource::Tokio)
        .seed(1)
        .start()
        .await
        .unwrap();
    let client = Client::connect([etcd.endpoint()], None).await.unwrap();
    (etcd, client)
}

/// Waits (in virtual time) until the resolver's addresses are `expected`.
pub async fn settle(resolver: &Resolver, expected: &[&str]) {
    let mut rx = resolver.subscribe();
    let wanted: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    let reached = tokio::time::timeout(
        Duration::from_secs(120),
        rx.wait_for(|s| {
            s.addrs()
                .iter()
                .map(|a| (*a).to_owned())
                .collect::<Vec<_>>()
                == wanted
                && !s.stale
        }),
    )
    .await;
    assert!(
        reached.is_ok(),
        "resolver never reached {expected:?}: {:?}",
        resolver.snapshot()
    );
}

/// Waits (in virtual time) until the registration is live on a lease other
/// than `not`.
pub async fn live_again(registration: &Registration, not: Option<i64>) -> i64 {
    let mut rx = registration.watch_state();
    let reached = tokio::time::timeout(
        Duration::from_secs(120),
        rx.wait_for(|s| match s {
            RegistrationState::Live { lease } => Some(*lease) != not,
            _ => false,
        }),
    )
    .await;
    let state = match reached {
        Ok(Ok(state)) => state.clone(),
        _ => panic!("registration not live again: {:?}", registration.state()),
    };
    match state {
        RegistrationState::Live { lease } => lease,
        other => panic!("not live: {other:?}"),
    }
}

/// The registrations under `service/` in etcd: (key, lease).
pub async fn stored(client: &Client, service: &str) -> Vec<(String, i64)> {
    let resp = client
        .clone()
        .get(
            format!("{service}/"),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    resp.kvs()
        .iter()
        .map(|kv| (kv.key_str().unwrap().to_owned(), kv.lease()))
        .collect()
}
