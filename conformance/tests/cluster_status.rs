//! Maintenance and Cluster scenarios: what `endpoint status`, `endpoint
//! health` and `member list` rely on.

use conformance::run;
use conformance::scenarios::cluster;

#[tokio::test]
async fn status_of_a_single_member() {
    run(cluster::status_of_a_single_member).await;
}

#[tokio::test]
async fn member_list() {
    run(cluster::member_list).await;
}

#[tokio::test]
async fn no_alarms() {
    run(cluster::no_alarms).await;
}

#[tokio::test]
async fn move_leader_of_a_single_member() {
    run(cluster::move_leader_of_a_single_member).await;
}
