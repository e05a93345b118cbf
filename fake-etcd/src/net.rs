//! The network side of a member: the gRPC server on a listener, background
//! tasks, and client connections that obey the fault switches.
//!
//! A member has a lifetime token (cancelled when its [`FakeEtcd`] is
//! dropped) and, under it, one token per *incarnation* of its server (a
//! restart ends one and starts the next on the same address). Under the
//! incarnation, each generation of connections has its own token, so
//! `drop_connections` breaks the connections accepted so far while the
//! listener goes on accepting. Every accepted socket is wrapped in a
//! [`Connection`] that fails its I/O once its token is cancelled, and stops
//! reading and writing while the member is paused.
//!
//! Besides its TCP listener, each incarnation accepts in-process
//! connections: [`InProcessListener`] hands it one end of an in-memory
//! duplex pipe per connection (see [`FakeEtcd::in_process_channel`]). They
//! go through the same [`Connection`] wrapper, so every fault applies to
//! them as to sockets.
//!
//! [`FakeEtcd`]: crate::FakeEtcd
//! [`FakeEtcd::in_process_channel`]: crate::FakeEtcd::in_process_channel

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use etcd_proto::etcdserverpb::{
    cluster_server::ClusterServer, kv_server::KvServer, lease_server::LeaseServer,
    maintenance_server::MaintenanceServer, watch_server::WatchServer,
};
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream, WatchStream};
use tokio_stream::{Stream, StreamExt};
use tokio_util::either::Either;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::Server;

use crate::core::Shared;
use crate::faults::InjectFaults;
use crate::service::{
    cluster::ClusterService, kv::KvService, lease::LeaseService, limits::GrpcGoLimitErrors,
    limits::MAX_RECV_BYTES, maintenance::MaintenanceService, watch::WatchService,
};

/// Starts the tasks a member runs for its whole life, whatever its server
/// does: timers (for clocks that move by themselves) and the watch syncer.
pub(crate) fn spawn_member_tasks(shared: &Arc<Shared>, member: &CancellationToken) {
    if shared.clock.moves_by_itself() {
        tokio::spawn(run_timers_on_time(Arc::clone(shared), member.clone()));
    }
    tokio::spawn(sync_lagging_watchers(Arc::clone(shared), member.clone()));
}

/// Serves the member's gRPC services on `listener` and on the in-process
/// `pipes` until `incarnation` is cancelled; every connection breaks then.
pub(crate) async fn serve_grpc(
    listener: TcpListener,
    pipes: InProcessIncoming,
    shared: Arc<Shared>,
    incarnation: CancellationToken,
) -> io::Result<()> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    shared.faults.new_generation(&incarnation);
    let sockets = {
        let shared = Arc::clone(&shared);
        TcpListenerStream::new(listener).map(move |stream| {
            let stream = stream?;
            // Small requests and responses must not wait for Nagle's delay.
            stream.set_nodelay(true)?;
            Ok::<_, io::Error>(Connection::new(Either::Left(stream), &shared))
        })
    };
    let pipes = {
        let shared = Arc::clone(&shared);
        pipes.map(move |pipe| Ok(Connection::new(Either::Right(pipe), &shared)))
    };
    let connections = sockets.merge(pipes);

    Server::builder()
        .layer(GrpcGoLimitErrors)
        .layer(InjectFaults {
            faults: Arc::clone(&shared.faults),
        })
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
        .serve_with_incoming_shutdown(connections, incarnation.cancelled_owned())
        .await
        .map_err(io::Error::other)
}

/// Catches up watchers that fell behind, whenever their stream has made
/// room in its outbox.
async fn sync_lagging_watchers(shared: Arc<Shared>, member: CancellationToken) {
    loop {
        // A stream that drains wakes this at once; as in etcd, anything
        // still waiting is retried every 100 ms too, so a wakeup lost to a
        // race costs a delay, never a stuck watcher.
        let waiting = shared.lock().watchers.has_unsynced();
        let retry = async {
            if waiting {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = member.cancelled() => return,
            () = shared.watch_sync.notified() => {}
            () = retry => {}
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
async fn run_timers_on_time(shared: Arc<Shared>, member: CancellationToken) {
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
            () = member.cancelled() => return,
            () = due => {}
            () = shared.expiry_wakeup.notified() => {}
        }
    }
}

/// How big an in-process pipe's buffer is, each way: a writer waits when it
/// is full, as on a socket.
const PIPE_BUFFER: usize = 256 * 1024;

/// The in-process connections an incarnation accepts.
pub(crate) type InProcessIncoming = UnboundedReceiverStream<DuplexStream>;

/// The in-process counterpart of the TCP listener: the incarnation now
/// serving takes the server ends of in-memory pipes from it. Between
/// incarnations (during a restart) a connection is refused, as a closed
/// port refuses one.
#[derive(Debug, Default)]
pub(crate) struct InProcessListener {
    serving: Mutex<Option<mpsc::UnboundedSender<DuplexStream>>>,
}

impl InProcessListener {
    /// Starts taking connections for a new incarnation, at once (before its
    /// task runs: a client may connect as soon as `start` returns). The
    /// previous incarnation's stream ends when it drops it.
    pub(crate) fn listen(&self) -> InProcessIncoming {
        let (sender, receiver) = mpsc::unbounded_channel();
        *self.serving.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender);
        UnboundedReceiverStream::new(receiver)
    }

    /// Opens a connection: the client's end of a fresh pipe.
    pub(crate) fn connect(&self) -> io::Result<DuplexStream> {
        let (client, server) = tokio::io::duplex(PIPE_BUFFER);
        let serving = self.serving.lock().unwrap_or_else(|p| p.into_inner());
        match serving.as_ref().map(|incarnation| incarnation.send(server)) {
            Some(Ok(())) => Ok(client),
            _ => Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                "fake-etcd is not serving",
            )),
        }
    }
}

/// A client connection (a socket or an in-process pipe): breaks when its
/// generation is dropped, stalls while the member is paused.
struct Connection {
    stream: Either<TcpStream, DuplexStream>,
    closed: Pin<Box<WaitForCancellationFutureOwned>>,
    pause_switch: WatchStream<bool>,
    paused: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("stream", &self.stream)
            .field("paused", &self.paused)
            .finish_non_exhaustive()
    }
}

impl Connection {
    fn new(stream: Either<TcpStream, DuplexStream>, shared: &Shared) -> Self {
        Self {
            stream,
            closed: Box::pin(shared.faults.connection_token().cancelled_owned()),
            pause_switch: WatchStream::new(shared.faults.paused.subscribe()),
            paused: false,
        }
    }

    /// `Ready(Err)` once the connection is dropped, `Pending` while paused
    /// (the task is woken when that changes), `Ready(Ok)` otherwise.
    fn poll_open(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.closed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "fake-etcd dropped the connection",
            )));
        }
        while let Poll::Ready(Some(paused)) = Pin::new(&mut self.pause_switch).poll_next(cx) {
            self.paused = paused;
        }
        if self.paused {
            Poll::Pending
        } else {
            Poll::Ready(Ok(()))
        }
    }
}

macro_rules! ready_open {
    ($self:ident, $cx:ident) => {
        match $self.poll_open($cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    };
}

impl Connected for Connection {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        match &self.stream {
            Either::Left(socket) => socket.connect_info(),
            Either::Right(_) => TcpConnectInfo {
                local_addr: None,
                remote_addr: None,
            },
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready_open!(this, cx);
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready_open!(this, cx);
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready_open!(this, cx);
        Pin::new(&mut this.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready_open!(this, cx);
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
