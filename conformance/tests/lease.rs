//! Lease scenarios: grant, revoke, keepalive, time-to-live, expiry, attach.

use conformance::run;
use conformance::scenarios::lease;

#[tokio::test]
async fn grant_rules() {
    run(lease::grant_rules).await;
}

#[tokio::test]
async fn grant_keeps_revision() {
    run(lease::grant_keeps_revision).await;
}

#[tokio::test]
async fn revoke() {
    run(lease::revoke).await;
}

#[tokio::test]
async fn time_to_live_reports() {
    run(lease::time_to_live_reports).await;
}

#[tokio::test]
async fn leases_sorted_by_expiry() {
    run(lease::leases_sorted_by_expiry).await;
}

#[tokio::test]
async fn keep_alive_stream() {
    run(lease::keep_alive_stream).await;
}

#[tokio::test]
async fn expiry_deletes_keys() {
    run(lease::expiry_deletes_keys).await;
}

#[tokio::test]
async fn attach_and_detach() {
    run(lease::attach_and_detach).await;
}

#[tokio::test]
async fn etcd_client_keep_alive() {
    run(lease::etcd_client_keep_alive).await;
}
