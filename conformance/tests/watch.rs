//! Watch scenarios.

use conformance::scenarios::watch;
use conformance::{run, run_exclusive};

#[tokio::test]
async fn create_ids_and_cancel() {
    run(watch::create_ids_and_cancel).await;
}

#[tokio::test]
async fn live_events() {
    run(watch::live_events).await;
}

#[tokio::test]
async fn filters() {
    run(watch::filters).await;
}

#[tokio::test]
async fn history_then_live() {
    run(watch::history_then_live).await;
}

#[tokio::test]
async fn compacted_start() {
    run_exclusive(watch::compacted_start).await;
}

#[tokio::test]
async fn lease_deletes() {
    run(watch::lease_deletes).await;
}

#[tokio::test]
async fn progress_request() {
    run(watch::progress_request).await;
}

#[tokio::test]
async fn many_watchers_one_stream() {
    run(watch::many_watchers_one_stream).await;
}

#[tokio::test]
async fn slow_consumer_catches_up() {
    run(watch::slow_consumer_catches_up).await;
}

#[tokio::test]
async fn a_crowd_on_one_stream_gets_every_event_once() {
    run(watch::a_crowd_on_one_stream_gets_every_event_once).await;
}

#[tokio::test]
async fn fragments() {
    run(watch::fragments).await;
}

#[tokio::test]
async fn negative_start_revision() {
    run(watch::negative_start_revision).await;
}

#[tokio::test]
async fn a_megabyte_key_under_range_watchers() {
    run(watch::a_megabyte_key_under_range_watchers).await;
}
