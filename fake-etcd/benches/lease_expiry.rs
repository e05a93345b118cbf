//! Wall time of the virtual-time lease scenario: grant a 60 s lease, attach
//! keys, advance 61 s, observe the keys gone. Run with
//! `cargo bench -p fake-etcd --bench lease_expiry`; prints the median and the
//! spread over repeated runs (no assertion: machines are noisy).

use std::time::{Duration, Instant};

use etcd_client::{Client, GetOptions, PutOptions};
use fake_etcd::FakeEtcd;

const RUNS: usize = 50;

async fn scenario() -> Duration {
    let started = Instant::now();
    let etcd = FakeEtcd::start().await.expect("start");
    let mut client = Client::connect([etcd.endpoint()], None)
        .await
        .expect("connect");
    let lease = client.lease_grant(60, None).await.expect("grant").id();
    for i in 0..10 {
        client
            .put(
                format!("svc/{i}"),
                "addr",
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .expect("put");
    }
    etcd.advance(Duration::from_secs(61)).await;
    let left = client
        .get("svc/", Some(GetOptions::new().with_prefix()))
        .await
        .expect("get");
    assert!(left.kvs().is_empty(), "the lease expired");
    started.elapsed()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut times: Vec<Duration> = (0..RUNS).map(|_| runtime.block_on(scenario())).collect();
    times.sort();
    println!(
        "lease expiry scenario (start fake, connect, grant 60 s, 10 puts, advance 61 s, get): \
         median {:?}, min {:?}, max {:?} over {RUNS} runs",
        times[RUNS / 2],
        times[0],
        times[RUNS - 1]
    );
}
