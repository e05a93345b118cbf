//! Leases on the three time sources, driven by the test.

mod common;

use common::{connect, put_on_new_lease};

use std::time::{Duration, Instant};

use fake_etcd::{FakeEtcd, TimeSource};

#[tokio::test]
async fn virtual_time_stands_still_until_advanced() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut client = connect(&etcd).await;
    let lease = put_on_new_lease(&mut client, "k", 60).await;

    tokio::time::sleep(Duration::from_millis(20)).await;
    let info = etcd.lease(lease).unwrap();
    assert_eq!(
        (info.granted_ttl, info.remaining),
        (60, Duration::from_secs(60))
    );
    assert_eq!(info.keys, [b"k".to_vec()]);

    etcd.advance(Duration::from_secs(59)).await;
    assert_eq!(client.get("k", None).await.unwrap().kvs().len(), 1);
    etcd.advance(Duration::from_micros(1_000_001)).await;
    assert!(client.get("k", None).await.unwrap().kvs().is_empty());
    assert!(etcd.lease(lease).is_none());
    assert_eq!(etcd.elapsed(), Duration::from_micros(60_000_001));
}

#[tokio::test]
async fn one_advance_expires_every_due_lease_in_deadline_order() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut client = connect(&etcd).await;
    let mut leases = Vec::new();
    for ttl in [30, 10, 20] {
        let id = put_on_new_lease(&mut client, format!("k{ttl}"), ttl).await;
        leases.push(id);
    }
    let before = etcd.revision();
    let order: Vec<i64> = etcd.leases().iter().map(|l| l.granted_ttl).collect();
    assert_eq!(order, [10, 20, 30]);
    etcd.advance(Duration::from_secs(25)).await;
    assert_eq!(
        etcd.revision(),
        before + 2,
        "one revision per expired lease with keys"
    );
    let left = client
        .get("k", Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(left.kvs()[0].key(), b"k30");
}

#[tokio::test]
async fn expire_lease_acts_now() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut client = connect(&etcd).await;
    let lease = put_on_new_lease(&mut client, "k", 3600).await;
    assert_eq!(etcd.expire_lease(lease), Ok(()));
    assert_eq!(
        etcd.expire_lease(lease),
        Err(fake_etcd::ControlError::NoSuchLease(lease))
    );
    assert!(client.get("k", None).await.unwrap().kvs().is_empty());
    assert_eq!(
        client.lease_time_to_live(lease, None).await.unwrap().ttl(),
        -1
    );
}

/// Under a paused tokio clock, the client's keepalive timer and the fake's
/// lease share one timeline: hours pass in milliseconds of wall time.
#[tokio::test(start_paused = true)]
async fn tokio_time_drives_leases_and_client_timers_together() {
    let etcd = FakeEtcd::builder()
        .time(TimeSource::Tokio)
        .start()
        .await
        .unwrap();
    let mut client = connect(&etcd).await;
    let lease = put_on_new_lease(&mut client, "k", 10).await;
    let (mut keeper, mut responses) = client.lease_keep_alive(lease).await.unwrap();

    let wall = Instant::now();
    for _ in 0..720 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        keeper.keep_alive().await.unwrap();
        assert_eq!(responses.message().await.unwrap().unwrap().ttl(), 10);
    }
    assert_eq!(
        client.get("k", None).await.unwrap().kvs().len(),
        1,
        "alive after an hour"
    );
    drop(keeper);

    // No more keepalives: tokio auto-advances to the deadline, where the
    // fake's expiry task runs.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(client.get("k", None).await.unwrap().kvs().is_empty());
    assert!(
        wall.elapsed() < Duration::from_secs(60),
        "virtual hours, not real ones"
    );
}

#[tokio::test]
async fn real_time_expires_leases_by_itself() {
    let etcd = FakeEtcd::builder()
        .time(TimeSource::Real)
        .start()
        .await
        .unwrap();
    let mut client = connect(&etcd).await;
    // etcd's minimum TTL is 2 s, so this test waits that long.
    put_on_new_lease(&mut client, "k", 2).await;
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert!(client.get("k", None).await.unwrap().kvs().is_empty());
}

/// The same seeded schedule, run twice, gives the same trace.
#[tokio::test]
async fn virtual_time_is_deterministic() {
    async fn trace() -> Vec<(i64, i64, usize)> {
        let etcd = FakeEtcd::start().await.unwrap();
        let mut client = connect(&etcd).await;
        let mut trace = Vec::new();
        for step in 0..20i64 {
            let id = put_on_new_lease(&mut client, format!("k{step}"), 2 + step % 7).await;
            etcd.advance(Duration::from_millis(700 * (step as u64 % 5)))
                .await;
            let live = client
                .get("k", Some(etcd_client::GetOptions::new().with_prefix()))
                .await
                .unwrap();
            trace.push((id, etcd.revision(), live.kvs().len()));
        }
        trace
    }
    assert_eq!(trace().await, trace().await);
}
