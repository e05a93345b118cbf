//! A service registration that lives on a 10 s lease, kept alive, then left
//! to expire: minutes of etcd time in a few milliseconds. Run with
//! `cargo run -p fake-etcd --example virtual_time_lease_expiry`.

use std::time::Duration;

use etcd_client::{Client, PutOptions, WatchOptions};
use fake_etcd::FakeEtcd;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let etcd = FakeEtcd::start().await?;
    let mut client = Client::connect([etcd.endpoint()], None).await?;
    let mut watch = client
        .watch("services/", Some(WatchOptions::new().with_prefix()))
        .await?;
    watch.message().await?; // created

    let lease = client.lease_grant(10, None).await?.id();
    client
        .put(
            "services/api/1",
            "10.0.0.1:8080",
            Some(PutOptions::new().with_lease(lease)),
        )
        .await?;
    let (mut keeper, mut renewals) = client.lease_keep_alive(lease).await?;

    // Five minutes of keepalives every 5 s.
    for _ in 0..60 {
        etcd.advance(Duration::from_secs(5)).await;
        keeper.keep_alive().await?;
        renewals.message().await?;
    }
    println!(
        "after {:?}: still registered: {}",
        etcd.elapsed(),
        !client.get("services/api/1", None).await?.kvs().is_empty()
    );

    // The process "dies": no more keepalives.
    drop(keeper);
    etcd.advance(Duration::from_secs(10)).await;
    // The watcher saw the registration, then sees it go.
    println!("lease expired by {:?}", etcd.elapsed());
    while let Some(resp) = watch.message().await? {
        for e in resp.events() {
            let key = e.kv().map_or("", |kv| kv.key_str().unwrap_or(""));
            let revision = e.kv().map_or(0, |kv| kv.mod_revision());
            println!("{:?} {key} at revision {revision}", e.event_type());
        }
        if resp
            .events()
            .iter()
            .any(|e| e.event_type() == etcd_client::EventType::Delete)
        {
            break;
        }
    }
    Ok(())
}
