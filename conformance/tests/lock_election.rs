//! Lock and Election scenarios, including their waits on lease expiry.

use conformance::run;
use conformance::scenarios::{election, lock};

#[tokio::test]
async fn lock_waits_for_an_expiring_holder() {
    run(lock::lock_waits_for_an_expiring_holder).await;
}

#[tokio::test]
async fn lock_leases_and_errors() {
    run(lock::lock_leases_and_errors).await;
}

#[tokio::test]
async fn election_passes_on_when_the_leader_expires() {
    run(election::election_passes_on_when_the_leader_expires).await;
}
