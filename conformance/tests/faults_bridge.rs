//! Connection faults through the TCP bridge, on either target.

use conformance::run;
use conformance::scenarios::faults;

#[tokio::test]
async fn bridge_drops_connections() {
    run(faults::bridge_drops_connections).await;
}

#[tokio::test]
async fn bridge_pause_holds_requests() {
    run(faults::bridge_pause_holds_requests).await;
}

#[tokio::test]
async fn bridge_blackhole_times_out() {
    run(faults::bridge_blackhole_times_out).await;
}
