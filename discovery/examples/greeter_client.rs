//! A client that finds Greeter servers through etcd and balances its calls
//! over them; stop a server and it leaves the rotation.
//!
//! ```sh
//! cargo run -p etcd-grpc-discovery --example greeter_client -- 20
//! ```
//!
//! `ETCD_ENDPOINTS` (default `http://127.0.0.1:2379`) says where etcd is;
//! the argument is how many calls to make, one a second.

use std::time::Duration;

use etcd_grpc_discovery::balance::{BalancedChannel, WhenEmpty};
use etcd_grpc_discovery::{service_of_target, Resolver};

use discovery_test_greeter::hello::greeter_client::GreeterClient;
use discovery_test_greeter::hello::HelloRequest;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let calls: usize = std::env::args().nth(1).map_or(Ok(10), |n| n.parse())?;
    let endpoints =
        std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "http://127.0.0.1:2379".into());
    let client =
        etcd_client::Client::connect(endpoints.split(',').collect::<Vec<_>>(), None).await?;

    // The same target a Go client would dial.
    let service = service_of_target("etcd:///greeter").ok_or("not an etcd target")?;
    let resolver = Resolver::builder(client, service).start();
    let channel = BalancedChannel::new(&resolver, WhenEmpty::Wait(Duration::from_secs(5)));
    let mut greeter = GreeterClient::new(channel);

    for i in 0..calls {
        match greeter
            .say_hello(HelloRequest {
                name: format!("call {i}"),
            })
            .await
        {
            Ok(reply) => {
                let reply = reply.into_inner();
                println!(
                    "{} (from {}; {} instance(s) known)",
                    reply.message,
                    reply.server,
                    resolver.snapshot().endpoints.len()
                );
            }
            Err(status) => println!("call {i} failed: {}", status.message()),
        }
        if i + 1 < calls {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    Ok(())
}
