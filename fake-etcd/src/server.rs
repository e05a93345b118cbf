//! Serving a member over gRPC: the embedding handle and the accept loop.
//!
//! [`FakeEtcd`] owns a server task spawned on the caller's tokio runtime (so
//! a test's paused clock reaches it) and a cancellation token. Every accepted
//! connection is wrapped in a [`Connection`] that fails its I/O once the token
//! is cancelled, so dropping the handle closes every client connection at
//! once, instead of waiting for long-lived streams to end.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use etcd_proto::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::Server;

use crate::clock::{Clock, TimeSource};
use crate::core::{
    Identity, Shared, DEFAULT_CLUSTER_ID, DEFAULT_MEMBER_ID, DEFAULT_PROGRESS_INTERVAL,
};
use crate::service::{
    cluster::ClusterService, kv::KvService, lease::LeaseService, limits::GrpcGoLimitErrors,
    limits::MAX_RECV_BYTES, maintenance::MaintenanceService, watch::WatchService,
};

/// A running fake etcd member, listening on a loopback port.
///
/// Dropping it shuts the server down and closes every client connection.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let etcd = fake_etcd::FakeEtcd::start().await?;
/// let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await?;
///
/// client.put("greeting", "hello", None).await?;
/// let resp = client.get("greeting", None).await?;
///
/// assert_eq!(resp.kvs()[0].value(), b"hello");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct FakeEtcd {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

impl FakeEtcd {
    /// Starts a member on `127.0.0.1` on a free port, with default options.
    ///
    /// # Errors
    ///
    /// If no loopback port can be bound.
    pub async fn start() -> io::Result<Self> {
        Self::builder().start().await
    }

    /// A builder for a member with options.
    pub fn builder() -> FakeEtcdBuilder {
        FakeEtcdBuilder::default()
    }

    /// The endpoint to give a client, such as `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the member listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The current revision of the store.
    pub fn revision(&self) -> i64 {
        self.shared.lock().store.revision()
    }

    /// How many watchers are open, on all watch streams: for tests that
    /// check their code cancels what it watches.
    pub fn watcher_count(&self) -> usize {
        self.shared.lock().watchers.watcher_count()
    }

    /// Moves the member's clock forward by `by` and expires every lease that
    /// falls due, soonest deadline first, before returning: a 30 s lease
    /// is gone, with its keys, as soon as `advance(31 s)` returns.
    ///
    /// With [`TimeSource::Tokio`] this advances tokio's paused clock (so the
    /// client's timers move too).
    ///
    /// # Panics
    ///
    /// With [`TimeSource::Real`], whose time cannot be moved; and with
    /// [`TimeSource::Tokio`] if tokio's clock is not paused.
    ///
    /// # Example
    ///
    /// ```
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let etcd = fake_etcd::FakeEtcd::start().await?;
    /// let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await?;
    /// let lease = client.lease_grant(30, None).await?.id();
    /// let attach = etcd_client::PutOptions::new().with_lease(lease);
    /// client.put("service/a", "10.0.0.1:80", Some(attach)).await?;
    ///
    /// etcd.advance(Duration::from_secs(31)).await;
    ///
    /// assert!(client.get("service/a", None).await?.kvs().is_empty());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn advance(&self, by: Duration) {
        match &self.shared.clock {
            Clock::Virtual { .. } => {
                self.shared.clock.advance_virtual(by);
            }
            Clock::Tokio { .. } => tokio::time::advance(by).await,
            Clock::Real { .. } => panic!("FakeEtcd::advance: real time cannot be advanced; use TimeSource::Virtual or TimeSource::Tokio"),
        }
        self.shared.lock().run_timers(self.shared.clock.now());
    }

    /// Time on the member's clock since it started.
    pub fn elapsed(&self) -> Duration {
        self.shared.clock.now()
    }

    /// Expires a lease now, as etcd does when its TTL lapses: its keys are
    /// deleted in one revision. Returns `false` if there is no such lease.
    pub fn expire_lease(&self, id: i64) -> bool {
        self.shared.lock().revoke(id).is_ok()
    }

    /// A lease's state, for assertions; `None` if it does not exist.
    pub fn lease(&self, id: i64) -> Option<LeaseInfo> {
        let now = self.shared.clock.now();
        self.shared
            .lock()
            .lessor
            .get(id)
            .map(|l| LeaseInfo::of(l, now))
    }

    /// Every lease, soonest expiry first.
    pub fn leases(&self) -> Vec<LeaseInfo> {
        let now = self.shared.clock.now();
        self.shared
            .lock()
            .lessor
            .by_deadline()
            .map(|l| LeaseInfo::of(l, now))
            .collect()
    }
}

/// A lease as the member sees it (see [`FakeEtcd::lease`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeaseInfo {
    /// The lease ID.
    pub id: i64,
    /// The TTL it was granted, in seconds (after raising to etcd's minimum).
    pub granted_ttl: i64,
    /// Time left before it expires.
    pub remaining: Duration,
    /// The keys attached to it, in key order.
    pub keys: Vec<Vec<u8>>,
}

impl LeaseInfo {
    fn of(lease: &crate::lease::Lease, now: Duration) -> Self {
        Self {
            id: lease.id,
            granted_ttl: lease.ttl,
            remaining: lease.deadline.saturating_sub(now),
            keys: lease.keys.iter().map(|k| k.to_vec()).collect(),
        }
    }
}

impl Drop for FakeEtcd {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Options for a [`FakeEtcd`]; see [`FakeEtcd::builder`].
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// let etcd = fake_etcd::FakeEtcd::builder().name("infra1").start().await?;
/// assert!(etcd.endpoint().starts_with("http://127.0.0.1:"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Default)]
#[must_use = "a builder does nothing until `start` or `serve` is called"]
pub struct FakeEtcdBuilder {
    listener: Option<TcpListener>,
    name: Option<String>,
    cluster_id: Option<u64>,
    member_id: Option<u64>,
    advertise_client_urls: Vec<String>,
    time: TimeSource,
    progress_notify_interval: Option<Duration>,
}

impl FakeEtcdBuilder {
    /// How often watchers that asked for progress notifications get one
    /// (etcd's 10 minutes unless set), on the member's clock.
    pub fn progress_notify_interval(mut self, interval: Duration) -> Self {
        self.progress_notify_interval = Some(interval);
        self
    }

    /// Where the member's time comes from ([`TimeSource::Virtual`] unless
    /// set).
    pub fn time(mut self, source: TimeSource) -> Self {
        self.time = source;
        self
    }

    /// Serves on this listener instead of binding a free loopback port.
    pub fn listener(mut self, listener: TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// The member's name, as `member list` shows it (etcd's `--name`;
    /// `default` if unset).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The cluster ID in every response header (etcd's default if unset).
    pub fn cluster_id(mut self, id: u64) -> Self {
        self.cluster_id = Some(id);
        self
    }

    /// The member ID in every response header (etcd's default if unset).
    pub fn member_id(mut self, id: u64) -> Self {
        self.member_id = Some(id);
        self
    }

    /// The client URLs `member list` reports (etcd's
    /// `--advertise-client-urls`); the listening address if unset.
    pub fn advertise_client_urls(mut self, urls: impl IntoIterator<Item = String>) -> Self {
        self.advertise_client_urls = urls.into_iter().collect();
        self
    }

    /// Starts serving in a task on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// If no listener was given and no loopback port can be bound.
    pub async fn start(self) -> io::Result<FakeEtcd> {
        let (server, serving) = self.prepare().await?;
        tokio::spawn(serving);
        Ok(server)
    }

    /// Serves until `shutdown` completes (what the binary does with Ctrl-C).
    ///
    /// # Errors
    ///
    /// If no listener was given and no loopback port can be bound, or if
    /// serving fails.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let (server, serving) = self.prepare().await?;
        tracing::info!(endpoint = %server.endpoint(), "serving etcd v3 API");
        tokio::select! {
            result = serving => result,
            () = shutdown => {
                tracing::info!("shutting down");
                Ok(())
            }
        }
    }

    async fn prepare(self) -> io::Result<(FakeEtcd, impl Future<Output = io::Result<()>>)> {
        let listener = match self.listener {
            Some(listener) => listener,
            None => TcpListener::bind(("127.0.0.1", 0)).await?,
        };
        let addr = listener.local_addr()?;
        let client_urls = if self.advertise_client_urls.is_empty() {
            vec![format!("http://{addr}")]
        } else {
            self.advertise_client_urls
        };
        let identity = Identity {
            cluster_id: self.cluster_id.unwrap_or(DEFAULT_CLUSTER_ID),
            member_id: self.member_id.unwrap_or(DEFAULT_MEMBER_ID),
            name: self.name.unwrap_or_else(|| "default".to_owned()),
            peer_urls: vec!["http://localhost:2380".to_owned()],
            client_urls,
        };
        let progress = self
            .progress_notify_interval
            .unwrap_or(DEFAULT_PROGRESS_INTERVAL);
        let shared = Arc::new(Shared::new(identity, Clock::new(self.time), progress));
        let shutdown = CancellationToken::new();
        let serving = serve(listener, Arc::clone(&shared), shutdown.clone());
        Ok((
            FakeEtcd {
                addr,
                shared,
                shutdown,
            },
            serving,
        ))
    }
}

/// Serves the member's gRPC services on `listener` until `shutdown`.
async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    if shared.clock.moves_by_itself() {
        tokio::spawn(run_timers_on_time(Arc::clone(&shared), shutdown.clone()));
    }
    tokio::spawn(sync_lagging_watchers(Arc::clone(&shared), shutdown.clone()));

    let connections = {
        let shutdown = shutdown.clone();
        TcpListenerStream::new(listener).map(move |stream| {
            let stream = stream?;
            // Small requests and responses must not wait for Nagle's delay.
            stream.set_nodelay(true)?;
            Ok::<_, io::Error>(Connection::new(stream, &shutdown))
        })
    };

    Server::builder()
        .layer(GrpcGoLimitErrors)
        .add_service(health)
        .add_service(
            KvServer::new(KvService::new(Arc::clone(&shared)))
                .max_decoding_message_size(MAX_RECV_BYTES),
        )
        .add_service(
            MaintenanceServer::new(MaintenanceService::new(Arc::clone(&shared)))
                .max_decoding_message_size(MAX_RECV_BYTES),
        )
        .add_service(
            WatchServer::new(WatchService::new(Arc::clone(&shared)))
                .max_decoding_message_size(MAX_RECV_BYTES),
        )
        .add_service(
            LeaseServer::new(LeaseService::new(Arc::clone(&shared)))
                .max_decoding_message_size(MAX_RECV_BYTES),
        )
        .add_service(
            ClusterServer::new(ClusterService::new(shared))
                .max_decoding_message_size(MAX_RECV_BYTES),
        )
        .serve_with_incoming_shutdown(connections, shutdown.cancelled_owned())
        .await
        .map_err(io::Error::other)
}

/// Catches up watchers that fell behind, whenever their stream has made
/// room in its outbox.
async fn sync_lagging_watchers(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = shared.watch_sync.notified() => {}
        }
        let mut core = shared.lock();
        let core = &mut *core;
        let ctx = crate::watch::Context {
            store: &core.store,
            raft_term: core.raft_term,
        };
        core.watchers.sync(ctx);
    }
}

/// Runs lease expiry and progress notifications when they fall due, for
/// clocks that move by themselves: sleeps until the earliest deadline, or
/// until a grant may have made an earlier one.
async fn run_timers_on_time(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let next = {
            let mut core = shared.lock();
            core.run_timers(shared.clock.now());
            core.next_timer()
        };
        let due = async {
            match next {
                Some(deadline) => shared.clock.sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = due => {}
            () = shared.expiry_wakeup.notified() => {}
        }
    }
}

/// A client connection that breaks when the server shuts down.
struct Connection {
    stream: TcpStream,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl Connection {
    fn new(stream: TcpStream, shutdown: &CancellationToken) -> Self {
        Self {
            stream,
            closed: Box::pin(shutdown.clone().cancelled_owned()),
        }
    }

    fn check_open(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.closed.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "fake-etcd stopped",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check_open(cx)?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_open(cx)?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check_open(cx)?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check_open(cx)?;
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
