//! Maintenance scenarios that take the target to themselves.

use conformance::run_exclusive;
use conformance::scenarios::maintenance;

#[tokio::test]
async fn hash_kv_matches_its_definition() {
    run_exclusive(maintenance::hash_kv_matches_its_definition).await;
}

#[tokio::test]
async fn downgrade_validation_and_timeouts() {
    run_exclusive(maintenance::downgrade_validation_and_timeouts).await;
}

#[tokio::test]
async fn snapshot_stream_and_hash() {
    run_exclusive(maintenance::snapshot_stream_and_hash).await;
}

#[tokio::test]
async fn alarms_set_what_etcd_applies() {
    run_exclusive(maintenance::alarms_set_what_etcd_applies).await;
}
