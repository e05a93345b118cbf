//! The resolver against the fake: through dropped connections, a
//! compaction gap, a restart, and values in Go's format.

mod common;

use std::time::Duration;

use common::{fake, settle};
use etcd_grpc_discovery::Resolver;
use fake_etcd::{errors, Rpc};

fn go_value(addr: &str) -> String {
    format!(r#"{{"Op":0,"Addr":"{addr}","Metadata":null}}"#)
}

#[tokio::test(start_paused = true)]
async fn lists_then_follows_puts_and_deletes() {
    let (_etcd, mut client) = fake().await;
    client
        .put("svc/a", go_value("10.0.0.1:1"), None)
        .await
        .unwrap();
    client
        .put("svc_other/x", go_value("10.9.9.9:1"), None)
        .await
        .unwrap();
    let resolver = Resolver::builder(client.clone(), "svc").start();
    settle(&resolver, &["10.0.0.1:1"]).await;
    client
        .put("svc/b", go_value("10.0.0.2:1"), None)
        .await
        .unwrap();
    settle(&resolver, &["10.0.0.1:1", "10.0.0.2:1"]).await;
    client.delete("svc/a", None).await.unwrap();
    settle(&resolver, &["10.0.0.2:1"]).await;
    let snapshot = resolver.snapshot();
    assert!(snapshot.synced && !snapshot.stale);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_connection_is_resumed_without_missing_changes() {
    let (etcd, mut client) = fake().await;
    client
        .put("svc/a", go_value("10.0.0.1:1"), None)
        .await
        .unwrap();
    let resolver = Resolver::builder(client.clone(), "svc").seed(3).start();
    settle(&resolver, &["10.0.0.1:1"]).await;

    // Keep the watch from coming back while changes happen.
    etcd.fail_always(Rpc::Watch, errors::no_leader());
    etcd.drop_connections();
    let mut rx = resolver.subscribe();
    rx.wait_for(|s| s.stale).await.unwrap();
    assert_eq!(
        resolver.snapshot().addrs(),
        ["10.0.0.1:1"],
        "the last good set stays, marked stale"
    );
    let mut writer = client.clone();
    let mut retries = 0;
    while writer
        .put("svc/b", go_value("10.0.0.2:1"), None)
        .await
        .is_err()
    {
        retries += 1;
        assert!(retries < 5);
    }
    writer.delete("svc/a", None).await.unwrap();

    etcd.clear_faults();
    settle(&resolver, &["10.0.0.2:1"]).await;
}

/// While the resolver cannot watch, an instance goes away and the history
/// is compacted: on return it must list again and replace its snapshot (a
/// merge would keep the deleted instance).
#[tokio::test(start_paused = true)]
async fn a_compaction_gap_is_listed_again_and_replaced() {
    let (etcd, mut client) = fake().await;
    client
        .put("svc/a", go_value("10.0.0.1:1"), None)
        .await
        .unwrap();
    client
        .put("svc/b", go_value("10.0.0.2:1"), None)
        .await
        .unwrap();
    let resolver = Resolver::builder(client.clone(), "svc").start();
    settle(&resolver, &["10.0.0.1:1", "10.0.0.2:1"]).await;

    etcd.fail_always(Rpc::Watch, errors::no_leader());
    etcd.end_watch_streams(errors::leader_changed());
    let mut rx = resolver.subscribe();
    rx.wait_for(|s| s.stale).await.unwrap();
    client.delete("svc/a", None).await.unwrap();
    client
        .put("svc/c", go_value("10.0.0.3:1"), None)
        .await
        .unwrap();
    etcd.compact(etcd.revision()).unwrap();

    etcd.clear_faults();
    settle(&resolver, &["10.0.0.2:1", "10.0.0.3:1"]).await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_is_followed() {
    let (etcd, mut client) = fake().await;
    client
        .put("svc/a", go_value("10.0.0.1:1"), None)
        .await
        .unwrap();
    let resolver = Resolver::builder(client.clone(), "svc").start();
    settle(&resolver, &["10.0.0.1:1"]).await;
    etcd.restart().await.unwrap();
    let mut retries = 0;
    while client
        .put("svc/b", go_value("10.0.0.2:1"), None)
        .await
        .is_err()
    {
        retries += 1;
        assert!(retries < 5);
    }
    settle(&resolver, &["10.0.0.1:1", "10.0.0.2:1"]).await;
}

/// What Go writes and how its reader treats odd values.
#[tokio::test(start_paused = true)]
async fn go_format_values_are_read_as_go_reads_them() {
    let (_etcd, mut client) = fake().await;
    let resolver = Resolver::builder(client.clone(), "svc").start();
    client
        .put(
            "svc/ok",
            r#"{"Op":0,"Addr":"10.0.0.1:1","Metadata":{"weight":3}}"#,
            None,
        )
        .await
        .unwrap();
    client
        .put("svc/lower", r#"{"op":0,"addr":"10.0.0.2:1"}"#, None)
        .await
        .unwrap();
    client
        .put("svc/bad-op", r#"{"Op":"0","Addr":"10.0.0.3:1"}"#, None)
        .await
        .unwrap();
    client
        .put("svc/not-json", "10.0.0.4:1", None)
        .await
        .unwrap();
    settle(&resolver, &["10.0.0.1:1", "10.0.0.2:1"]).await;
    assert_eq!(resolver.snapshot().endpoints["ok"].weight(), 3);

    // Overwritten with a bad value: the old endpoint stays, as in Go.
    client.put("svc/ok", "garbage", None).await.unwrap();
    client
        .put("svc/marker", go_value("10.0.0.5:1"), None)
        .await
        .unwrap();
    settle(&resolver, &["10.0.0.1:1", "10.0.0.2:1", "10.0.0.5:1"]).await;
}

#[tokio::test(start_paused = true)]
async fn periodic_resync_replaces_the_snapshot() {
    let (_etcd, mut client) = fake().await;
    client
        .put("svc/a", go_value("10.0.0.1:1"), None)
        .await
        .unwrap();
    let resolver = Resolver::builder(client.clone(), "svc")
        .resync_every(Duration::from_secs(60))
        .start();
    settle(&resolver, &["10.0.0.1:1"]).await;
    let before = resolver.snapshot().revision;
    // A write outside the service: the watch says nothing of it, and the
    // fake's progress notifications are 10 minutes apart, so only a
    // re-list can bring the snapshot to its revision.
    let outside = client.put("other/x", "1", None).await.unwrap();
    let outside = outside.header().unwrap().revision();
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(resolver.snapshot().revision, outside, "re-listed");
    client
        .put("svc/b", go_value("10.0.0.2:1"), None)
        .await
        .unwrap();
    settle(&resolver, &["10.0.0.1:1", "10.0.0.2:1"]).await;
    assert!(resolver.snapshot().revision > before);
}
