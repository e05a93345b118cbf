//! The in-process transport: etcd-client over in-memory pipes, with the
//! same behaviour and the same connection faults as over TCP.

mod common;

use common::{connect, connect_in_process};

use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use fake_etcd::{errors, FakeEtcd, Rpc, TimeSource};

#[tokio::test]
async fn in_process_and_tcp_clients_share_one_store() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut memory = connect_in_process(&etcd).await;
    let mut tcp = connect(&etcd).await;

    let put = memory.put("k", "from memory", None).await.unwrap();
    let got = tcp.get("k", None).await.unwrap();

    assert_eq!(got.kvs()[0].value(), b"from memory");
    assert_eq!(
        got.header().unwrap().revision(),
        put.header().unwrap().revision()
    );
}

#[tokio::test]
async fn watch_streams_work_in_process() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut client = connect_in_process(&etcd).await;
    let mut watch = client
        .watch("svc/", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    assert!(watch.message().await.unwrap().unwrap().created());

    client.put("svc/a", "1", None).await.unwrap();

    let resp = watch.message().await.unwrap().unwrap();
    assert_eq!(resp.events().len(), 1);
    assert_eq!(resp.events()[0].event_type(), EventType::Put);
    assert_eq!(resp.events()[0].kv().unwrap().key(), b"svc/a");
}

#[tokio::test]
async fn dropped_connections_break_in_process_streams_and_the_client_reconnects() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut client = connect_in_process(&etcd).await;
    client.put("k", "v", None).await.unwrap();
    let mut watch = client.watch("k", None).await.unwrap();
    assert!(watch.message().await.unwrap().unwrap().created());

    etcd.drop_connections();

    let ended = tokio::time::timeout(Duration::from_secs(5), watch.message())
        .await
        .expect("the stream ends");
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
    // The first call may meet the broken pipe; the next one reconnects.
    if client.get("k", None).await.is_err() {
        assert_eq!(client.get("k", None).await.unwrap().kvs().len(), 1);
    }
    assert_eq!(etcd.watcher_count(), 0);
}

#[tokio::test]
async fn a_restart_is_survived_in_process() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut client = connect_in_process(&etcd).await;
    client.put("k", "v", None).await.unwrap();

    etcd.restart().await.unwrap();

    let mut value = None;
    for _ in 0..3 {
        if let Ok(resp) = client.get("k", None).await {
            value = Some(resp.kvs()[0].value().to_vec());
            break;
        }
    }
    assert_eq!(
        value.as_deref(),
        Some(&b"v"[..]),
        "same data after the restart"
    );
}

/// A partition: the call hangs, with no error, until the member resumes.
#[tokio::test(start_paused = true)]
async fn a_paused_member_holds_in_process_calls_until_resumed() {
    let etcd = FakeEtcd::builder()
        .time(TimeSource::Tokio)
        .start()
        .await
        .unwrap();
    let mut client = connect_in_process(&etcd).await;
    client.put("k", "v", None).await.unwrap();

    etcd.pause();
    let held = tokio::time::timeout(Duration::from_secs(10), client.get("k", None)).await;
    assert!(held.is_err(), "no answer while paused: {held:?}");

    etcd.resume();
    assert_eq!(client.get("k", None).await.unwrap().kvs().len(), 1);
}

#[tokio::test]
async fn injected_errors_reach_in_process_clients() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut client = connect_in_process(&etcd).await;
    etcd.fail_next(Rpc::Range, 1, errors::no_leader());

    let err = client.get("k", None).await.unwrap_err();

    assert!(err.to_string().contains("etcdserver: no leader"), "{err}");
    client.get("k", None).await.unwrap();
}

#[tokio::test]
async fn a_dropped_member_refuses_in_process_connections() {
    let etcd = FakeEtcd::start().await.unwrap();
    let channel = etcd.in_process_channel();
    drop(etcd);

    let channel = etcd_client::Channel::Tonic(channel);
    let result = etcd_client::Client::from_channel(channel, None).await;
    if let Ok(mut client) = result {
        assert!(client.get("k", None).await.is_err());
    }
}

/// A client may connect the moment `start` returns, on any runtime: the
/// in-process listener is there before the server's task first runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_can_connect_as_soon_as_start_returns() {
    for _ in 0..50 {
        let etcd = FakeEtcd::start().await.unwrap();
        let channel = etcd_client::Channel::Tonic(etcd.in_process_channel());
        let mut client = etcd_client::Client::from_channel(channel, None)
            .await
            .unwrap();
        client.get("k", None).await.unwrap();
    }
}
