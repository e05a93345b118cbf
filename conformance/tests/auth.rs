//! Auth scenarios. Each turns auth on, which changes what every other
//! client of the target may do, so each takes the target to itself.

use conformance::run_exclusive;
use conformance::scenarios::auth;

#[tokio::test]
async fn auth_revision_counts_changes() {
    run_exclusive(auth::auth_revision_counts_changes).await;
}

#[tokio::test]
async fn enable_and_disable() {
    run_exclusive(auth::enable_and_disable).await;
}

#[tokio::test]
async fn authenticate_answers() {
    run_exclusive(auth::authenticate_answers).await;
}

#[tokio::test]
async fn user_rpcs() {
    run_exclusive(auth::user_rpcs).await;
}

#[tokio::test]
async fn role_rpcs() {
    run_exclusive(auth::role_rpcs).await;
}

#[tokio::test]
async fn admin_calls_need_root() {
    run_exclusive(auth::admin_calls_need_root).await;
}

#[tokio::test]
async fn kv_permissions() {
    run_exclusive(auth::kv_permissions).await;
}

#[tokio::test]
async fn lease_cluster_and_maintenance_calls() {
    run_exclusive(auth::lease_cluster_and_maintenance_calls).await;
}

#[tokio::test]
async fn watch_permissions() {
    run_exclusive(auth::watch_permissions).await;
}

#[tokio::test]
async fn token_lifetimes() {
    run_exclusive(auth::token_lifetimes).await;
}
