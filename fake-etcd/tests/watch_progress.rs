//! Progress notifications on the member's clock, and watcher bookkeeping.

mod common;

use std::time::Duration;

use common::{connect, within, PATIENCE};
use etcd_client::{Client, WatchOptions};
use fake_etcd::FakeEtcd;

async fn next(stream: &mut etcd_client::WatchStream) -> etcd_client::WatchResponse {
    within("a watch response", stream.message())
        .await
        .unwrap()
        .unwrap()
}

/// A fake ticking every `interval`, a client, and a watch on `k` that asked
/// for progress notifications, created.
async fn progress_watch(interval: Duration) -> (FakeEtcd, Client, etcd_client::WatchStream) {
    let etcd = FakeEtcd::builder()
        .progress_notify_interval(interval)
        .start()
        .await
        .unwrap();
    let mut client = connect(&etcd).await;
    let mut stream = client
        .watch("k", Some(WatchOptions::new().with_progress_notify()))
        .await
        .unwrap();
    assert!(next(&mut stream).await.created());
    (etcd, client, stream)
}

#[tokio::test]
async fn progress_notifications_follow_virtual_time() {
    let (etcd, mut client, mut stream) = progress_watch(Duration::from_secs(10)).await;

    etcd.advance(Duration::from_secs(10)).await;
    let progress = next(&mut stream).await;
    assert!(progress.events().is_empty() && !progress.canceled());
    assert_eq!(progress.header().unwrap().revision(), 1);

    // A tick after events sends no notification; the next quiet one does.
    let rev = client
        .put("k", "v", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    assert_eq!(next(&mut stream).await.events().len(), 1);
    etcd.advance(Duration::from_secs(10)).await;
    etcd.advance(Duration::from_secs(10)).await;
    let progress = next(&mut stream).await;
    assert!(progress.events().is_empty());
    assert_eq!(progress.header().unwrap().revision(), rev);
    // The one before it was skipped: a put now arrives next, not a progress.
    client.put("k", "w", None).await.unwrap();
    assert_eq!(next(&mut stream).await.events().len(), 1);
}

#[tokio::test]
async fn closing_a_stream_frees_its_watchers() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut client = Client::connect([etcd.endpoint()], None).await.unwrap();
    let mut stream = client.watch("a", None).await.unwrap();
    assert!(stream.message().await.unwrap().unwrap().created());
    stream.watch("b", None).await.unwrap();
    assert!(stream.message().await.unwrap().unwrap().created());
    assert_eq!(etcd.watcher_count(), 2);
    stream.cancel(1).await.unwrap();
    assert!(stream.message().await.unwrap().unwrap().canceled());
    assert_eq!(etcd.watcher_count(), 1);
    drop(stream);
    drop(client);
    for _ in 0..100 {
        if etcd.watcher_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "watchers left after the client went away: {}",
        etcd.watcher_count()
    );
}

/// A zero interval once made `advance` spin forever, re-queuing a tick that
/// was already due; out-of-range intervals are now refused where they are
/// set.
#[tokio::test]
async fn a_progress_interval_out_of_range_is_refused() {
    for interval in [Duration::ZERO, Duration::from_secs(366 * 24 * 3600)] {
        let err = FakeEtcd::builder()
            .progress_notify_interval(interval)
            .start()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(
            err.to_string().contains("from 1ms to 365 days"),
            "{interval:?}: {err}"
        );
    }
}

/// The shortest interval taken ticks once per advance, however far the
/// advance goes.
#[tokio::test]
async fn the_shortest_progress_interval_ticks_once_per_advance() {
    let (etcd, _client, mut stream) = progress_watch(Duration::from_millis(1)).await;
    tokio::time::timeout(PATIENCE, etcd.advance(Duration::from_secs(3600)))
        .await
        .expect("advance returns");
    let progress = next(&mut stream).await;
    assert!(progress.events().is_empty() && !progress.canceled());
}
