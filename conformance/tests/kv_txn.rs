//! Txn scenarios: compares, branches, nesting, validation and revisions.

use conformance::run;
use conformance::scenarios::txn;

#[tokio::test]
async fn compare_targets() {
    run(txn::compare_targets).await;
}

#[tokio::test]
async fn compare_boundaries() {
    run(txn::compare_boundaries).await;
}

#[tokio::test]
async fn compare_over_ranges() {
    run(txn::compare_over_ranges).await;
}

#[tokio::test]
async fn branches_revisions_and_headers() {
    run(txn::branches_revisions_and_headers).await;
}

#[tokio::test]
async fn nested_txns() {
    run(txn::nested_txns).await;
}

#[tokio::test]
async fn txn_validation() {
    run(txn::txn_validation).await;
}

#[tokio::test]
async fn txns_without_changes() {
    run(txn::txns_without_changes).await;
}

#[tokio::test]
async fn txn_range_revisions() {
    run(txn::txn_range_revisions).await;
}
