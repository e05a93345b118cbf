//! Injected errors, latency, stalled and ended streams.

mod common;

use common::{connect, status_of};

use std::time::Duration;

use etcd_client::{Client, WatchOptions, WatchResponse, WatchStream};
use fake_etcd::{errors, FakeEtcd, Rpc, TimeSource};
use tonic::Code;

#[tokio::test]
async fn fail_next_fails_exactly_that_many_calls_with_etcds_status() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut client = connect(&etcd).await;
    etcd.fail_next(Rpc::Put, 2, errors::request_timed_out());
    for _ in 0..2 {
        let status = status_of(client.put("k", "v", None).await.unwrap_err());
        assert_eq!(
            (status.code(), status.message()),
            (Code::Unavailable, "etcdserver: request timed out")
        );
    }
    client
        .get("k", None)
        .await
        .expect("other RPCs are untouched");
    client
        .put("k", "v", None)
        .await
        .expect("the third put goes through");
    assert_eq!(etcd.revision(), 2, "failed calls changed nothing");
}

#[tokio::test]
async fn fail_always_until_cleared() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut client = connect(&etcd).await;
    etcd.fail_always(Rpc::Any, errors::no_leader());
    for _ in 0..3 {
        assert_eq!(
            status_of(client.get("k", None).await.unwrap_err()).message(),
            "etcdserver: no leader"
        );
    }
    etcd.clear_faults();
    client.get("k", None).await.unwrap();
}

#[tokio::test]
async fn random_failures_replay_from_the_seed() {
    async fn outcomes(seed: u64) -> Vec<bool> {
        let etcd = FakeEtcd::builder().seed(seed).start().await.unwrap();
        assert_eq!(etcd.seed(), seed);
        let mut client = connect(&etcd).await;
        etcd.fail_randomly(Rpc::Range, 0.5, errors::leader_changed());
        let mut outcomes = Vec::new();
        for _ in 0..40 {
            outcomes.push(client.get("k", None).await.is_ok());
        }
        outcomes
    }
    let first = outcomes(7).await;
    assert_eq!(first, outcomes(7).await);
    assert!(first.contains(&true) && first.contains(&false));
}

#[tokio::test(start_paused = true)]
async fn delay_holds_calls_on_tokio_time() {
    let etcd = FakeEtcd::builder()
        .time(TimeSource::Tokio)
        .start()
        .await
        .unwrap();
    let mut client = connect(&etcd).await;
    etcd.delay(Rpc::Range, Duration::from_secs(3));
    let started = tokio::time::Instant::now();
    client.get("k", None).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(3));
    let put_started = tokio::time::Instant::now();
    client.put("k", "v", None).await.unwrap();
    assert!(
        put_started.elapsed() < Duration::from_secs(3),
        "only Range is delayed"
    );
}

/// A fake on tokio's clock (paused by the test), a client of it, and a
/// watch of `prefix` that the fake has confirmed.
async fn watching_on_tokio_time(prefix: &str) -> (FakeEtcd, Client, WatchStream) {
    let etcd = FakeEtcd::builder()
        .time(TimeSource::Tokio)
        .start()
        .await
        .unwrap();
    let mut client = connect(&etcd).await;
    let mut watch = client
        .watch(prefix, Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(watch.message().await.unwrap().unwrap().created());
    (etcd, client, watch)
}

/// The keys of a watch response's events, in order.
fn keys_of(response: &WatchResponse) -> impl Iterator<Item = String> + '_ {
    response
        .events()
        .iter()
        .map(|e| e.kv().unwrap().key_str().unwrap().to_owned())
}

#[tokio::test(start_paused = true)]
async fn stalled_watches_deliver_everything_once_unstalled() {
    let (etcd, mut client, mut watch) = watching_on_tokio_time("k").await;
    etcd.stall_watches();
    for i in 0..300 {
        client.put(format!("k{i}"), "v", None).await.unwrap();
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(60), watch.message())
            .await
            .is_err(),
        "stalled"
    );
    etcd.unstall_watches();
    let mut seen = 0;
    while seen < 300 {
        let resp = watch.message().await.unwrap().unwrap();
        for event in resp.events() {
            assert_eq!(event.kv().unwrap().key_str().unwrap(), format!("k{seen}"));
            seen += 1;
        }
    }
}

/// A stall that starts while a stream is busy sending (its client's flow
/// control window full, writes queued behind it) holds the writes not yet
/// sent: it takes effect at the next write, not only once the stream has
/// nothing left to send.
#[tokio::test(start_paused = true)]
async fn a_stall_holds_a_busy_stream_from_its_next_write() {
    const WRITES: usize = 64;
    let (etcd, mut client, mut watch) = watching_on_tokio_time("big").await;
    // 64 KiB each: 4 MiB in all, twice the client's 2 MiB stream window,
    // so about half of them wait in the stream's outbox.
    let value = vec![b'v'; 64 * 1024];
    for i in 0..WRITES {
        client
            .put(format!("big{i:02}"), value.clone(), None)
            .await
            .unwrap();
    }
    etcd.stall_watches();
    let mut seen = Vec::new();
    while let Ok(response) = tokio::time::timeout(Duration::from_secs(60), watch.message()).await {
        seen.extend(keys_of(&response.unwrap().unwrap()));
    }
    assert!(
        seen.len() < WRITES,
        "a stall while busy held nothing back: {} of {WRITES} writes came",
        seen.len()
    );
    etcd.unstall_watches();
    while seen.len() < WRITES {
        seen.extend(keys_of(&watch.message().await.unwrap().unwrap()));
    }
    let expected: Vec<String> = (0..WRITES).map(|i| format!("big{i:02}")).collect();
    assert_eq!(seen, expected, "every write once, in order, once unstalled");
}

#[tokio::test]
async fn ended_streams_fail_with_the_injected_status() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut client = connect(&etcd).await;
    let mut watch = client.watch("k", None).await.unwrap();
    assert!(watch.message().await.unwrap().unwrap().created());
    let lease = client.lease_grant(30, None).await.unwrap().id();
    let (mut keeper, mut keepalives) = client.lease_keep_alive(lease).await.unwrap();
    keeper.keep_alive().await.unwrap();
    assert_eq!(keepalives.message().await.unwrap().unwrap().ttl(), 30);

    etcd.end_watch_streams(errors::leader_changed());
    etcd.end_keepalive_streams(errors::no_leader());

    let status = status_of(watch.message().await.unwrap_err());
    assert_eq!(status.message(), "etcdserver: leader changed");
    let status = status_of(keepalives.message().await.unwrap_err());
    assert_eq!(status.message(), "etcdserver: no leader");
    // New streams work.
    let (mut keeper, mut keepalives) = client.lease_keep_alive(lease).await.unwrap();
    keeper.keep_alive().await.unwrap();
    assert_eq!(keepalives.message().await.unwrap().unwrap().ttl(), 30);
}
