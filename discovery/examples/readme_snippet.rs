//! The README's service discovery snippet, whole and runnable: everything
//! between the `README snippet` markers is what the README shows; the
//! lines around it stand up an in-process fake etcd and one Greeter
//! server so that it runs anywhere.
//!
//! ```sh
//! cargo run -p etcd-grpc-discovery --example readme_snippet
//! ```

use std::time::Duration;

use discovery_test_greeter::hello::greeter_client::GreeterClient;
use discovery_test_greeter::hello::HelloRequest;
use etcd_grpc_discovery::balance::{BalancedChannel, WhenEmpty};
use etcd_grpc_discovery::{Registrar, Resolver};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let etcd = fake_etcd::FakeEtcd::start().await?;
    let client = etcd_client::Client::connect([etcd.endpoint()], None).await?;
    let addr = discovery_test_greeter::serve().await.to_string();

    // --- README snippet start ---
    // Server side: registered under greeter/<addr> with a 10 s lease, kept
    // alive, re-registered after any loss, restored if deleted out of band.
    let registration = Registrar::builder(client.clone(), "greeter", addr.clone())
        .metadata(serde_json::json!({"weight": 2}))
        .ttl(10)
        .start();
    let lease = registration.live().await?; // or Err(Error::Ended(why))

    // Client side: a snapshot kept in step with etcd through reconnects and
    // compaction, feeding a channel that round-robins over the instances
    // whose connection is ready.
    let resolver = Resolver::builder(client, "greeter").start(); // etcd:///greeter
    let channel = BalancedChannel::new(&resolver, WhenEmpty::Wait(Duration::from_secs(5)));
    let mut greeter = GreeterClient::new(channel);
    let reply = greeter
        .say_hello(HelloRequest {
            name: "world".into(),
        })
        .await?
        .into_inner();
    // --- README snippet end ---

    println!(
        "{} (from {}; registered on lease {lease})",
        reply.message, reply.server
    );
    assert_eq!(reply.server, addr);
    registration.deregister().await?;
    Ok(())
}
