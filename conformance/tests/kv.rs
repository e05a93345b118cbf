//! KV scenarios: Range, Put, DeleteRange, Compact, limits and headers.

use conformance::scenarios::kv;
use conformance::{run, run_exclusive};

#[tokio::test]
async fn range_end_rules() {
    run(kv::range_end_rules).await;
}

#[tokio::test]
async fn reads_at_old_revisions() {
    run(kv::reads_at_old_revisions).await;
}

#[tokio::test]
async fn limit_more_and_count() {
    run(kv::limit_more_and_count).await;
}

#[tokio::test]
async fn sort_targets_and_orders() {
    run(kv::sort_targets_and_orders).await;
}

#[tokio::test]
async fn keys_only_and_count_only() {
    run(kv::keys_only_and_count_only).await;
}

#[tokio::test]
async fn revision_filters() {
    run(kv::revision_filters).await;
}

#[tokio::test]
async fn put_versions_and_revisions() {
    run(kv::put_versions_and_revisions).await;
}

#[tokio::test]
async fn put_options_and_errors() {
    run(kv::put_options_and_errors).await;
}

#[tokio::test]
async fn delete_ranges() {
    run(kv::delete_ranges).await;
}

#[tokio::test]
async fn delete_nothing_keeps_revision() {
    run(kv::delete_nothing_keeps_revision).await;
}

#[tokio::test]
async fn compaction_rules() {
    run_exclusive(kv::compaction_rules).await;
}

#[tokio::test]
async fn request_size_limits() {
    run(kv::request_size_limits).await;
}

#[tokio::test]
async fn response_headers() {
    run(kv::response_headers).await;
}

#[tokio::test]
async fn through_etcd_client() {
    run(kv::through_etcd_client).await;
}

#[tokio::test]
async fn sort_ties_in_etcd_3_5_1s_order() {
    run(kv::sort_ties_in_etcd_3_5_1s_order).await;
}
