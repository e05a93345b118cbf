//! What a client sees when etcd misbehaves, on demand: an injected error,
//! a dropped connection, a restart. Run with `cargo run -p fake-etcd
//! --example inject_faults`.

use etcd_client::Client;
use fake_etcd::{errors, FakeEtcd, Rpc};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let etcd = FakeEtcd::start().await?;
    let mut client = Client::connect([etcd.endpoint()], None).await?;
    client.put("k", "1", None).await?;

    etcd.fail_next(Rpc::Put, 1, errors::leader_changed());
    println!(
        "injected: {}",
        client.put("k", "2", None).await.unwrap_err()
    );
    client.put("k", "2", None).await?;

    etcd.drop_connections();
    // The first call may meet the broken connection; a retry reconnects.
    if let Err(err) = client.get("k", None).await {
        println!("after a dropped connection: {err}");
    }
    println!(
        "then: {:?}",
        client.get("k", None).await?.kvs()[0].value_str()?
    );

    etcd.restart().await?;
    let _ = client.get("k", None).await;
    let status = client.status().await?;
    println!(
        "after a restart: raft term {}, value {:?}",
        status.raft_term(),
        client.get("k", None).await?.kvs()[0].value_str()?
    );
    println!("replay random faults with FAKE_ETCD_SEED={}", etcd.seed());
    Ok(())
}
