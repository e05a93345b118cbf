//! Connection faults: drop, pause (partition) and restart, as `etcd-client`
//! sees them, and recovery with no acknowledged write lost.

mod common;

use common::{connect, put_on_new_lease};

use std::time::Duration;

use etcd_client::{Client, GetOptions};
use fake_etcd::{FakeEtcd, TimeSource};

async fn count(client: &mut Client) -> usize {
    client
        .get("k", Some(GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .kvs()
        .len()
}

#[tokio::test]
async fn dropped_connections_break_streams_and_clients_reconnect() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut client = connect(&etcd).await;
    for i in 0..10 {
        client.put(format!("k{i}"), "v", None).await.unwrap();
    }
    let mut watch = client
        .watch("k", Some(etcd_client::WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(watch.message().await.unwrap().unwrap().created());

    etcd.drop_connections();

    let ended = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("the stream ends");
    assert!(
        !matches!(ended, Ok(Some(_))),
        "no more responses on the broken stream: {ended:?}"
    );
    assert_eq!(
        count(&mut client).await,
        10,
        "the client reconnects and nothing is lost"
    );
    assert_eq!(
        etcd.watcher_count(),
        0,
        "the broken stream's watchers are freed"
    );
}

/// A partition: requests hang (no error, no answer) until it heals, then
/// complete. Under a paused tokio clock the client's timeout fires at once.
#[tokio::test(start_paused = true)]
async fn paused_member_answers_nothing_until_resumed() {
    let etcd = FakeEtcd::builder()
        .time(TimeSource::Tokio)
        .start()
        .await
        .unwrap();
    let mut client = connect(&etcd).await;
    client.put("k0", "before", None).await.unwrap();

    etcd.pause();
    let mut during = client.clone();
    let write = tokio::spawn(async move { during.put("k1", "during", None).await });
    let waited = tokio::time::timeout(Duration::from_secs(30), count(&mut client.clone())).await;
    assert!(waited.is_err(), "nothing is answered during a partition");
    assert!(!write.is_finished());

    etcd.resume();
    write
        .await
        .unwrap()
        .expect("the held write completes after the partition");
    assert_eq!(count(&mut client).await, 2);
}

#[tokio::test]
async fn restart_keeps_data_breaks_streams_and_renews_leases() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut client = connect(&etcd).await;
    let lease = put_on_new_lease(&mut client, "k-leased", 10).await;
    client.put("k-plain", "v", None).await.unwrap();
    let revision = etcd.revision();
    let term = etcd.raft_term();
    etcd.advance(Duration::from_secs(8)).await;
    let mut watch = client
        .watch("k", Some(etcd_client::WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(watch.message().await.unwrap().unwrap().created());

    etcd.restart().await.unwrap();

    let ended = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("the stream ends");
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
    assert_eq!(count(&mut client).await, 2, "same data after the restart");
    assert_eq!(etcd.revision(), revision);
    assert_eq!(etcd.raft_term(), term + 1);
    let status = client.status().await.unwrap();
    assert_eq!(status.raft_term(), term + 1);
    // The new leader renewed the lease: 8 s had passed, it has 10 again.
    assert_eq!(
        etcd.lease(lease).unwrap().remaining,
        Duration::from_secs(10)
    );
    etcd.advance(Duration::from_secs(9)).await;
    assert_eq!(count(&mut client).await, 2);
    etcd.advance(Duration::from_secs(1)).await;
    assert_eq!(count(&mut client).await, 1);
}
