//! The smallest use: a fake etcd for the length of a test, talked to with
//! the `etcd-client` crate. Run with `cargo run -p fake-etcd --example
//! embed_in_test`.

use etcd_client::{Client, GetOptions};
use fake_etcd::FakeEtcd;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let etcd = FakeEtcd::start().await?;
    let mut client = Client::connect([etcd.endpoint()], None).await?;

    client.put("config/feature-x", "on", None).await?;
    client.put("config/feature-y", "off", None).await?;
    let config = client
        .get("config/", Some(GetOptions::new().with_prefix()))
        .await?;

    for kv in config.kvs() {
        println!("{} = {}", kv.key_str()?, kv.value_str()?);
    }
    println!("revision {}", etcd.revision());
    Ok(())
}
