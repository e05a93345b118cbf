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
//! connections: [`InProcessListener`](crate::pipe::InProcessListener) hands it one end of an in-memory
//! duplex pipe per connection (see [`FakeEtcd::in_process_channel`]). They
//! go through the same [`Connection`] wrapper, so every fault applies to
//! them as to sockets.
//!
//! [`FakeEtcd`]: crate::FakeEtcd
//! [`FakeEtcd::in_process_channel`]: crate::FakeEtcd::in_process_channel

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use etcd_proto::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer,
};
use etcd_proto::v3electionpb::election_server::ElectionServer;
use etcd_proto::v3lockpb::lock_server::LockServer;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::{TcpListenerStream, WatchStream};
use tokio_stream::{Stream, StreamExt};
use tokio_util::either::Either;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::service::Routes;
use tonic::transport::server::{Connected, TcpConnectInfo};
use tonic::transport::Server;

use crate::faults::InjectFaults;
use crate::member::Member;
use crate::metrics::ServeMetrics;
use crate::pipe::InProcessIncoming;
use crate::service::authorize::InternalCall;
use crate::service::{
    auth::AuthService, cluster::ClusterService, election::ElectionService, kv::KvService,
    lease::LeaseService, limits::GrpcGoLimitErrors, limits::MAX_RECV_BYTES, lock::LockService,
    maintenance::MaintenanceService, watch::WatchService, watch_wire::WatchServer,
};

/// Starts the tasks a member runs for its whole life, whatever its server
/// does: timers (for clocks that move by themselves) and the watch syncer.
pub(crate) fn spawn_member_tasks(member: &Arc<Member>, lifetime: &CancellationToken) {
    if member.shared.clock.moves_by_itself() {
        tokio::spawn(run_timers_on_time(Arc::clone(member), lifetime.clone()));
    }
    tokio::spawn(sync_lagging_watchers(Arc::clone(member), lifetime.clone()));
}

/// Serves the member's gRPC services on `listener` and on the in-process
/// `pipes` until `incarnation` is cancelled; every connection breaks then.
///
/// # Errors
///
/// If the listener fails for good (an accept error that no retry can cure,
/// such as a socket shut down under it): the incarnation is cancelled, so
/// every connection breaks too, and the error is returned.
pub(crate) async fn serve_grpc(
    listener: TcpListener,
    pipes: InProcessIncoming,
    internal: InProcessIncoming,
    member: Arc<Member>,
    incarnation: CancellationToken,
    tls: Option<ServerTls>,
) -> io::Result<()> {
    member.faults.new_generation(&incarnation);
    // tonic logs an accept error and carries on; one that can never clear
    // would leave a server that looks alive and answers nothing, so it ends
    // the incarnation instead, and is reported.
    let listener_failure = Arc::new(std::sync::Mutex::new(None));
    let sockets = {
        let member = Arc::clone(&member);
        let listener_failure = Arc::clone(&listener_failure);
        let incarnation = incarnation.clone();
        TcpListenerStream::new(listener).map_while(move |stream| match stream {
            Err(err) if !accept_error_is_transient(&err) => {
                *listener_failure
                    .lock()
                    .unwrap_or_else(|p: std::sync::PoisonError<_>| p.into_inner()) = Some(err);
                incarnation.cancel();
                None
            }
            Err(err) => Some(Err(err)),
            Ok(stream) => Some(
                // Small requests and responses must not wait for Nagle's delay.
                stream
                    .set_nodelay(true)
                    .map(|()| Connection::new(Either::Left(stream), &member)),
            ),
        })
    };
    let pipes = {
        let member = Arc::clone(&member);
        pipes.map(move |pipe| Ok(Connection::new(Either::Right(pipe), &member)))
    };
    let routes = services(&member, true).await;
    // The member's own client, past every fault: its connections end only
    // with the incarnation.
    let internal = {
        let routes = services(&member, false).await;
        let closes_with = incarnation.clone();
        let pipes =
            internal.map(move |pipe| Ok::<_, io::Error>(Connection::internal(pipe, &closes_with)));
        // Marks its requests, so that the caller's certificate name it
        // passes on is believed (see `authorize::FORWARDED_COMMON_NAME`).
        let mark_internal =
            tower::util::MapRequestLayer::new(|mut request: http::Request<tonic::body::Body>| {
                request.extensions_mut().insert(InternalCall);
                request
            });
        Server::builder()
            .layer(GrpcGoLimitErrors)
            .layer(mark_internal)
            .add_routes(routes)
            .serve_with_incoming_shutdown(pipes, incarnation.clone().cancelled_owned())
    };
    let server = || {
        // HTTP/1 too: etcd answers `GET /metrics` on its client port.
        Server::builder()
            .accept_http1(true)
            .layer(ServeMetrics {
                metrics: Arc::clone(&member.metrics),
            })
            .layer(GrpcGoLimitErrors)
            .layer(InjectFaults {
                faults: Arc::clone(&member.faults),
            })
    };
    let clients = async {
        match tls {
            // Plaintext: one server for sockets and pipes alike.
            None => {
                server()
                    .add_routes(routes)
                    .serve_with_incoming_shutdown(
                        sockets.merge(pipes),
                        incarnation.clone().cancelled_owned(),
                    )
                    .await
                    .map_err(io::Error::other)?;
            }
            // TLS on the client port; the in-process pipes (the test's own
            // channel, and Lock and Election calling the member) stay plaintext.
            #[cfg(feature = "tls")]
            Some(tls) => {
                let secure = server()
                    .tls_config(tls)
                    .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?
                    .add_routes(routes.clone())
                    .serve_with_incoming_shutdown(sockets, incarnation.clone().cancelled_owned());
                let plain = server()
                    .add_routes(routes)
                    .serve_with_incoming_shutdown(pipes, incarnation.clone().cancelled_owned());
                // One server stopping ends the incarnation, so the other stops
                // too and the failure, if any, is reported.
                let stop_both = |result| {
                    incarnation.cancel();
                    result
                };
                let (secure, plain) = tokio::join!(async { stop_both(secure.await) }, async {
                    stop_both(plain.await)
                });
                secure.and(plain).map_err(io::Error::other)?;
            }
            #[cfg(not(feature = "tls"))]
            Some(never) => match never {},
        }
        Ok::<(), io::Error>(())
    };
    let (clients, internal) = tokio::join!(clients, async {
        let result = internal.await;
        // The member's own client outliving its server would wait forever.
        incarnation.cancel();
        result
    });
    clients?;
    internal.map_err(io::Error::other)?;
    let failure = listener_failure
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    match failure {
        Some(err) => Err(io::Error::new(
            err.kind(),
            format!("the client listener failed: {err}"),
        )),
        None => Ok(()),
    }
}

/// The TLS a server incarnation serves its client port with.
#[cfg(feature = "tls")]
pub(crate) type ServerTls = tonic::transport::ServerTlsConfig;
/// Without the `tls` feature there is none to give: a type with no values.
#[cfg(not(feature = "tls"))]
#[derive(Debug, Clone)]
pub(crate) enum ServerTls {}

/// Every gRPC service of the member, with etcd's receive limit; `faults`
/// says whether the test's watch faults reach its watch streams (not for
/// the member's own client).
async fn services(member: &Arc<Member>, faults: bool) -> Routes {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    // Lock and Election call the member's own services through this, as
    // etcd's in-process client does.
    let own_channel = crate::pipe::channel(Arc::downgrade(&member.internal));
    let watch = if faults {
        WatchService::new(Arc::clone(member))
    } else {
        WatchService::exempt_from_faults(Arc::clone(member))
    };
    Routes::new(health)
        .add_service(
            KvServer::new(KvService::new(Arc::clone(member)))
                .max_decoding_message_size(MAX_RECV_BYTES),
        )
        .add_service(
            MaintenanceServer::new(MaintenanceService::new(Arc::clone(member)))
                .max_decoding_message_size(MAX_RECV_BYTES),
        )
        .add_service(WatchServer::new(watch, MAX_RECV_BYTES))
        .add_service(
            LeaseServer::new(LeaseService::new(Arc::clone(member)))
                .max_decoding_message_size(MAX_RECV_BYTES),
        )
        .add_service(
            LockServer::new(LockService::new(own_channel.clone()))
                .max_decoding_message_size(MAX_RECV_BYTES),
        )
        .add_service(
            ElectionServer::new(ElectionService::new(own_channel))
                .max_decoding_message_size(MAX_RECV_BYTES),
        )
        .add_service(
            ClusterServer::new(ClusterService::new(Arc::clone(member)))
                .max_decoding_message_size(MAX_RECV_BYTES),
        )
        .add_service(
            AuthServer::new(AuthService::new(Arc::clone(member)))
                .max_decoding_message_size(MAX_RECV_BYTES),
        )
}

/// Whether an accept error concerns one connection (or a passing shortage)
/// and the listener can go on, rather than the listener itself.
fn accept_error_is_transient(err: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        err.kind(),
        ConnectionAborted
            | ConnectionReset
            | ConnectionRefused
            | Interrupted
            | WouldBlock
            | TimedOut
            | OutOfMemory
            | QuotaExceeded
    ) || err.raw_os_error().is_some_and(is_resource_shortage)
}

/// ENOMEM, ENFILE, EMFILE (the same numbers on Linux and the BSDs) and
/// ENOBUFS: too many files or too little memory for now; accepting may work
/// again once connections close.
fn is_resource_shortage(errno: i32) -> bool {
    const ENOBUFS: i32 = if cfg!(target_os = "linux") { 105 } else { 55 };
    matches!(errno, 12 | 23 | 24) || errno == ENOBUFS
}

/// Catches up watchers that fell behind, whenever their stream has made
/// room in its outbox.
async fn sync_lagging_watchers(member: Arc<Member>, lifetime: CancellationToken) {
    loop {
        // A stream that drains wakes this at once; as in etcd, anything
        // still waiting is retried every 100 ms too, so a wakeup lost to a
        // race costs a delay, never a stuck watcher.
        let waiting = member.lock().watchers.has_unsynced();
        let retry = async {
            if waiting {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = lifetime.cancelled() => return,
            () = member.shared.watch_sync.notified() => {}
            () = retry => {}
        }
        member.lock().sync_watchers();
    }
}

/// Runs lease expiry and progress notifications when they fall due, for
/// clocks that move by themselves: sleeps until the earliest deadline, or
/// until a grant may have made an earlier one.
async fn run_timers_on_time(member: Arc<Member>, lifetime: CancellationToken) {
    loop {
        let next = {
            let mut core = member.lock();
            core.run_timers(member.shared.clock.now());
            core.next_timer()
        };
        let due = async {
            match next {
                Some(deadline) => member.shared.clock.sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = lifetime.cancelled() => return,
            () = due => {}
            () = member.shared.timer_wakeup.notified() => {}
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
    /// A connection of the member's own client: never dropped or paused by
    /// a fault, closed with the incarnation.
    fn internal(pipe: DuplexStream, incarnation: &CancellationToken) -> Self {
        Self {
            stream: Either::Right(pipe),
            closed: Box::pin(incarnation.child_token().cancelled_owned()),
            // A switch no one holds: never paused.
            pause_switch: WatchStream::new(tokio::sync::watch::channel(false).1),
            paused: false,
        }
    }

    fn new(stream: Either<TcpStream, DuplexStream>, member: &Member) -> Self {
        Self {
            stream,
            closed: Box::pin(member.faults.connection_token().cancelled_owned()),
            pause_switch: WatchStream::new(member.faults.paused.subscribe()),
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
