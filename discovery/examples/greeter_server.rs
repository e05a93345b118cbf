//! A Greeter gRPC server that registers itself in etcd under `greeter`.
//!
//! ```sh
//! cargo run -p fake-etcd &                       # or any etcd
//! cargo run -p etcd-grpc-discovery --example greeter_server -- 127.0.0.1:50051
//! cargo run -p etcd-grpc-discovery --example greeter_server -- 127.0.0.1:50052
//! ```
//!
//! `ETCD_ENDPOINTS` (default `http://127.0.0.1:2379`) says where etcd is.
//! Ctrl-C deregisters and stops; killing it leaves the key to its 10 s lease.

use std::net::SocketAddr;

use discovery_test_greeter::NamedGreeter;
use etcd_grpc_discovery::Registrar;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50051".into())
        .parse()?;
    let endpoints =
        std::env::var("ETCD_ENDPOINTS").unwrap_or_else(|_| "http://127.0.0.1:2379".into());
    let client =
        etcd_client::Client::connect(endpoints.split(',').collect::<Vec<_>>(), None).await?;

    let registration = Registrar::builder(client, "greeter", addr.to_string())
        .metadata(serde_json::json!({"weight": 1}))
        .ttl(10)
        .start();
    println!("serving on {addr}, registering as {}", registration.key());

    tonic::transport::Server::builder()
        .add_service(NamedGreeter::new(addr.to_string()).into_service())
        .serve_with_shutdown(addr, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    registration.deregister().await?;
    println!("deregistered");
    Ok(())
}
