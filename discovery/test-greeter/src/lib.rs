//! Test support for `etcd-grpc-discovery`'s examples and tests: the
//! `Greeter` gRPC service (compiled from `proto/hello.proto` by this crate's
//! build script, so the published library never compiles it), a server
//! whose replies say which instance answered, and servers that can be
//! killed like a crashed process.
//!
//! Not published: `etcd-grpc-discovery` lists it as a dev-dependency only.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// The generated `hello` package: `Greeter` client and server,
/// `HelloRequest`, `HelloReply`.
#[allow(clippy::all, missing_docs, unreachable_pub)]
pub mod hello {
    tonic::include_proto!("hello");
}

use hello::greeter_server::{Greeter, GreeterServer};
use hello::{HelloReply, HelloRequest};

/// A `Greeter` that puts its own address in every reply, so a client can
/// see where each call went.
#[derive(Debug, Clone)]
pub struct NamedGreeter {
    server: String,
}

impl NamedGreeter {
    /// A greeter answering as `server` (its address, usually).
    pub fn new(server: impl Into<String>) -> Self {
        Self {
            server: server.into(),
        }
    }

    /// The greeter as a tonic service.
    pub fn into_service(self) -> GreeterServer<Self> {
        GreeterServer::new(self)
    }
}

#[tonic::async_trait]
impl Greeter for NamedGreeter {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        Ok(Response::new(HelloReply {
            message: format!("hello {}", request.into_inner().name),
            server: self.server.clone(),
        }))
    }
}

/// A greeter serving on `127.0.0.1:<any port>` in a task of the current
/// runtime; returns its address.
///
/// # Panics
///
/// If no local port can be bound.
pub async fn serve() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(NamedGreeter::new(addr.to_string()).into_service())
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

/// A greeter on a runtime of its own, so that [`KillableServer::kill`]
/// can end it like a crashed process: its listener and every connection
/// close at once, with no goodbye to the clients.
#[derive(Debug)]
pub struct KillableServer {
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl KillableServer {
    /// Starts a greeter on `127.0.0.1:<any port>`.
    ///
    /// # Panics
    ///
    /// If the runtime cannot be built or no local port can be bound.
    pub fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the server");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        runtime.spawn(async move {
            let listener = TcpListener::from_std(listener).expect("tokio listener");
            tonic::transport::Server::builder()
                .add_service(NamedGreeter::new(addr.to_string()).into_service())
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
        });
        Self {
            addr,
            runtime: Some(runtime),
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Kills the server: its runtime is shut down, which drops the listener
    /// and every connection without a GOAWAY. Safe to call from async code.
    pub fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for KillableServer {
    fn drop(&mut self) {
        self.kill();
    }
}
