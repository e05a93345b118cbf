//! The embedding handle, [`FakeEtcd`], and its builder.
//!
//! A member's server runs in tasks on the caller's tokio runtime (so a
//! test's paused clock reaches it); the handle holds the tokens that stop
//! them (see [`net`](crate::net)), so dropping it closes every client
//! connection at once instead of waiting for long-lived streams to end. The
//! handle is also the test's remote control: time, leases, and faults.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_proto::etcdserverpb::AlarmType;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::auth::token::{self, TokenConfig};
use crate::auth::{AuthConfig, DEFAULT_BCRYPT_COST};
use crate::clock::{Clock, TimeSource};
use crate::cluster::{self, Cluster, InitialMember, Process, DEFAULT_CLUSTER_TOKEN};
use crate::error::EtcdError;
use crate::faults::Rpc;
use crate::member::{Member, Shared, DEFAULT_PROGRESS_INTERVAL};
use crate::net;
use crate::watch::{MAX_PROGRESS_INTERVAL, MIN_PROGRESS_INTERVAL};

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
    /// The state every member shares.
    pub(crate) shared: Arc<Shared>,
    /// Every member ever started, in the order they started; the first is
    /// the one [`FakeEtcd::endpoint`] names.
    pub(crate) servers: Mutex<Vec<Arc<MemberServer>>>,
    /// Cancelled when the handle is dropped: ends everything.
    pub(crate) lifetime: CancellationToken,
    /// Why a server stopped, once one has stopped without being asked to.
    pub(crate) failure: tokio::sync::watch::Sender<Option<ServerFailure>>,
    /// The client port's TLS, kept for restarts.
    pub(crate) tls: Option<net::ServerTls>,
    /// The seed of every member's random faults.
    seed: u64,
}

/// One member's server: its address, and the incarnation now running.
#[derive(Debug)]
pub(crate) struct MemberServer {
    pub(crate) member: Arc<Member>,
    pub(crate) addr: SocketAddr,
    /// The server now running; replaced by a restart. Cancelled while the
    /// member is stopped.
    pub(crate) serving: Mutex<Incarnation>,
}

impl MemberServer {
    pub(crate) fn endpoint(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub(crate) fn incarnation(&self) -> std::sync::MutexGuard<'_, Incarnation> {
        self.serving.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the server: every connection breaks, the port refuses.
    pub(crate) async fn stop(&self) {
        let (token, task) = {
            let mut serving = self.incarnation();
            (serving.token.clone(), serving.task.take())
        };
        token.cancel();
        if let Some(task) = task {
            // The listener must be closed before the address is bound again.
            let _ = task.await;
        }
    }
}

/// A server failure, kept to be handed to every caller of
/// [`FakeEtcd::failure`].
#[derive(Debug, Clone)]
pub(crate) struct ServerFailure {
    kind: io::ErrorKind,
    message: String,
}

#[derive(Debug)]
pub(crate) struct Incarnation {
    token: CancellationToken,
    task: Option<JoinHandle<io::Result<()>>>,
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

    /// The endpoint to give a client, such as `http://127.0.0.1:41234`
    /// (`https://` when the member serves TLS): the first member's, in a
    /// cluster (see [`FakeEtcd::endpoints`]).
    pub fn endpoint(&self) -> String {
        self.first().endpoint(self.tls.is_some())
    }

    /// Every member's endpoint, in the order they started: what a client of
    /// a cluster is given.
    pub fn endpoints(&self) -> Vec<String> {
        self.servers()
            .iter()
            .map(|server| server.endpoint(self.tls.is_some()))
            .collect()
    }

    /// The address the first member listens on.
    pub fn addr(&self) -> SocketAddr {
        self.first().addr
    }

    /// The first member's server.
    fn first(&self) -> Arc<MemberServer> {
        Arc::clone(&self.servers()[0])
    }

    /// The first member: the one handle-wide controls read from.
    pub(crate) fn member(&self) -> Arc<Member> {
        Arc::clone(&self.first().member)
    }

    pub(crate) fn servers(&self) -> std::sync::MutexGuard<'_, Vec<Arc<MemberServer>>> {
        self.servers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every member's server, for controls that reach them all.
    fn all(&self) -> Vec<Arc<MemberServer>> {
        self.servers().clone()
    }

    /// A channel to this member with no socket under it: each connection is
    /// an in-memory pipe, so calls skip the kernel's TCP stack. Faults
    /// (dropped connections, pauses, restarts, injected errors) apply to it
    /// as to TCP connections: a dropped connection is reopened on the next
    /// call, as a socket would be.
    ///
    /// With etcd-client (feature `raw-channel`):
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let etcd = fake_etcd::FakeEtcd::start().await?;
    /// let channel = etcd_client::Channel::Tonic(etcd.in_process_channel());
    /// let mut client = etcd_client::Client::from_channel(channel, None).await?;
    ///
    /// client.put("greeting", "hello", None).await?;
    /// assert_eq!(client.get("greeting", None).await?.kvs()[0].value(), b"hello");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Programs in other languages, and clients that must see a real
    /// socket (a TCP proxy such as [`Bridge`](crate::Bridge) in between),
    /// use [`FakeEtcd::endpoint`].
    pub fn in_process_channel(&self) -> tonic::transport::Channel {
        crate::pipe::channel(Arc::downgrade(&self.member().in_process))
    }

    /// The member's state as an etcd snapshot: a bbolt database file, as
    /// `etcdctl snapshot save` saves one (less its sha256 trailer).
    /// `etcdctl snapshot status` and `etcdutl snapshot restore` take it,
    /// and so does [`FakeEtcdBuilder::restore_snapshot`].
    pub fn snapshot(&self) -> Vec<u8> {
        crate::snapshot::save(&self.shared.lock())
    }

    /// The current revision of the store.
    pub fn revision(&self) -> i64 {
        self.shared.lock().store.revision()
    }

    /// The keys that start with `prefix`, with their values, as they were
    /// at `revision` (0 or less: now, as a range takes it), in key order;
    /// read straight from the store, past any injected fault or pause: for
    /// a test's assertions.
    ///
    /// # Errors
    ///
    /// [`ControlError::Compacted`] or [`ControlError::FutureRevision`] if
    /// that revision is not readable, as a range at it would fail.
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let etcd = fake_etcd::FakeEtcd::start().await?;
    /// let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await?;
    /// let first = client.put("svc/a", "1", None).await?.header().unwrap().revision();
    /// client.put("svc/b", "2", None).await?;
    ///
    /// let then = etcd.read_prefix("svc/", first)?;
    /// assert_eq!(then, vec![(b"svc/a".to_vec(), b"1".to_vec())]);
    /// assert_eq!(etcd.read_prefix("svc/", 0)?.len(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn read_prefix(
        &self,
        prefix: impl AsRef<[u8]>,
        revision: i64,
    ) -> Result<Vec<KeyAndValue>, ControlError> {
        let prefix = bytes::Bytes::copy_from_slice(prefix.as_ref());
        let range = crate::mvcc::KeyRange::new(&prefix, &crate::watch::prefix_range_end(&prefix));
        let core = self.shared.lock();
        let store = &core.store;
        let current = store.revision();
        let revision = if revision <= 0 { current } else { revision };
        if revision < store.compact_revision() {
            return Err(ControlError::Compacted {
                requested: revision,
                compacted: store.compact_revision(),
            });
        }
        if revision > current {
            return Err(ControlError::FutureRevision {
                requested: revision,
                current,
            });
        }
        Ok(store
            .range_at(&range, revision)
            .map(|kv| (kv.key.to_vec(), kv.stored.value.to_vec()))
            .collect())
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
    /// With [`TimeSource::Tokio`] this sleeps for `by` on tokio's clock:
    /// under `#[tokio::test(start_paused = true)]` the runtime's
    /// auto-advance gets there at once, and every timer on the way (the
    /// client's keepalives and retries too) fires at its own time, in order.
    /// On a runtime whose clock is not paused, that is a real wait.
    ///
    /// # Panics
    ///
    /// With [`TimeSource::Real`], whose time cannot be moved.
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
            // tokio's own advice for moving a paused clock so that every
            // timer on the way fires in order (the client's keepalives
            // included): sleep, and let the runtime's auto-advance get
            // there at once.
            Clock::Tokio { .. } => tokio::time::sleep(by).await,
            Clock::Real { .. } => panic!("FakeEtcd::advance: real time cannot be advanced; use TimeSource::Virtual or TimeSource::Tokio"),
        }
        self.shared.lock().run_timers(self.shared.clock.now());
    }

    /// Where the member's time comes from.
    pub fn time_source(&self) -> TimeSource {
        match self.shared.clock {
            Clock::Virtual { .. } => TimeSource::Virtual,
            Clock::Real { .. } => TimeSource::Real,
            Clock::Tokio { .. } => TimeSource::Tokio,
        }
    }

    /// Time on the member's clock since it started.
    pub fn elapsed(&self) -> Duration {
        self.shared.clock.now()
    }

    /// Expires a lease now, as etcd does when its TTL lapses: its keys are
    /// deleted in one revision, and watchers see the DELETE events.
    ///
    /// # Errors
    ///
    /// [`ControlError::NoSuchLease`] if the lease was never granted, or is
    /// already revoked or expired.
    pub fn expire_lease(&self, id: i64) -> Result<(), ControlError> {
        self.shared
            .lock()
            .expire(id)
            .map_err(|_| ControlError::NoSuchLease(id))
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

/// A key and its value, as [`FakeEtcd::read_prefix`] returns them.
pub type KeyAndValue = (Vec<u8>, Vec<u8>);

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

impl FakeEtcd {
    /// The seed of the member's random faults (see
    /// [`FakeEtcd::fail_randomly`]); print it to replay a run.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Breaks every client connection now. The member keeps listening, so
    /// clients reconnect; every stream they had (watch, keepalive) is gone.
    pub fn drop_connections(&self) {
        for server in self.all() {
            let serving = server.incarnation();
            server.member.faults.drop_connections(&serving.token);
        }
    }

    /// Stops answering, without closing anything: connections neither read
    /// nor write, and new ones are accepted but not served. This is a
    /// network partition as a client sees it. Undone by
    /// [`FakeEtcd::resume`].
    pub fn pause(&self) {
        for server in self.all() {
            server.member.faults.paused.send_replace(true);
        }
    }

    /// Whether the member is paused ([`FakeEtcd::pause`]).
    pub fn is_paused(&self) -> bool {
        *self.member().faults.paused.borrow()
    }

    /// Whether watch responses are held ([`FakeEtcd::stall_watches`]).
    pub fn watches_stalled(&self) -> bool {
        *self.member().faults.watches_stalled.borrow()
    }

    /// The injected errors and delays in force, each in words (`fail Put:
    /// the next 2 calls, with Unavailable "etcdserver: no leader"`).
    pub fn active_faults(&self) -> Vec<String> {
        self.member().faults.describe()
    }

    /// Ends a [`FakeEtcd::pause`]: everything held goes through.
    pub fn resume(&self) {
        for server in self.all() {
            server.member.faults.paused.send_replace(false);
        }
    }

    /// Restarts the member: the server stops (every connection and stream
    /// breaks, the port refuses connections for a moment) and listens again
    /// on the same address with the same data. As after a real restart, the
    /// raft term goes up by one and every lease is renewed to its full TTL
    /// (a new leader extends all leases).
    ///
    /// # Errors
    ///
    /// If the address cannot be bound again.
    pub async fn restart(&self) -> io::Result<()> {
        let servers = self.all();
        for server in &servers {
            server.stop().await;
        }
        self.shared.change_cluster(|core| {
            for server in &servers {
                core.cluster
                    .set_process(server.member.id(), Process::Stopped);
            }
        });
        for server in &servers {
            if !self.shared.lock().cluster.was_removed(server.member.id()) {
                self.serve_again(server).await?;
            }
        }
        Ok(())
    }

    /// Starts a stopped member's server again on its address, and tells the
    /// cluster it runs.
    pub(crate) async fn serve_again(&self, server: &MemberServer) -> io::Result<()> {
        let listener = TcpListener::bind(server.addr).await?;
        let incarnation = spawn_incarnation(
            listener,
            &server.member,
            &self.lifetime,
            self.failure.clone(),
            self.tls.clone(),
        );
        *server.incarnation() = incarnation;
        let id = server.member.id();
        self.shared
            .change_cluster(|core| core.cluster.set_process(id, Process::Running));
        Ok(())
    }

    /// Waits until the member's server stops without being asked to (its
    /// listener can no longer accept connections, or its task ended), and
    /// returns why. While the member serves it never returns, so a program
    /// can wait on it beside its own shutdown signal, as
    /// [`FakeEtcdBuilder::serve`] and the binary do.
    pub async fn failure(&self) -> io::Error {
        let mut failure = self.failure.subscribe();
        let failure = match failure.wait_for(Option::is_some).await {
            Ok(failure) => failure.clone(),
            // The handle holds the sender: this cannot happen while `self`
            // lives, but a value is owed all the same.
            Err(_) => None,
        };
        match failure {
            Some(f) => io::Error::new(f.kind, f.message),
            None => io::Error::other("fake-etcd's server stopped"),
        }
    }

    /// Fails the next `count` calls of `rpc` with `status` (see
    /// [`errors`](crate::errors) for etcd's own).
    ///
    /// # Example
    ///
    /// ```
    /// use fake_etcd::{errors, FakeEtcd, Rpc};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let etcd = FakeEtcd::start().await?;
    /// let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await?;
    /// etcd.fail_next(Rpc::Put, 1, errors::leader_changed());
    ///
    /// let err = client.put("k", "v", None).await.unwrap_err();
    /// assert!(err.to_string().contains("etcdserver: leader changed"));
    /// client.put("k", "v", None).await?; // the next one goes through
    /// # Ok(())
    /// # }
    /// ```
    pub fn fail_next(&self, rpc: Rpc, count: usize, status: Status) {
        for server in self.all() {
            server
                .member
                .faults
                .fail(rpc, Some(count), None, status.clone());
        }
    }

    /// Fails every call of `rpc` with `status` until
    /// [`FakeEtcd::clear_faults`].
    pub fn fail_always(&self, rpc: Rpc, status: Status) {
        for server in self.all() {
            server.member.faults.fail(rpc, None, None, status.clone());
        }
    }

    /// Fails each call of `rpc` with probability `probability`, drawn from
    /// the member's seeded generator ([`FakeEtcdBuilder::seed`]).
    pub fn fail_randomly(&self, rpc: Rpc, probability: f64, status: Status) {
        for server in self.all() {
            let faults = &server.member.faults;
            faults.fail(rpc, None, Some(probability), status.clone());
        }
    }

    /// Delays every call of `rpc` by `by` (real time, or tokio's paused time)
    /// until [`FakeEtcd::clear_faults`].
    pub fn delay(&self, rpc: Rpc, by: Duration) {
        for server in self.all() {
            server.member.faults.delay(rpc, by);
        }
    }

    /// Removes every injected error and delay.
    pub fn clear_faults(&self) {
        for server in self.all() {
            server.member.faults.clear();
        }
    }

    /// Stops delivering watch responses (the streams stay open; events are
    /// kept and arrive after [`FakeEtcd::unstall_watches`], as from a slow
    /// network).
    pub fn stall_watches(&self) {
        for server in self.all() {
            server.member.faults.watches_stalled.send_replace(true);
        }
    }

    /// Ends a [`FakeEtcd::stall_watches`].
    pub fn unstall_watches(&self) {
        for server in self.all() {
            server.member.faults.watches_stalled.send_replace(false);
        }
    }

    /// Ends every open watch stream with `status`.
    pub fn end_watch_streams(&self, status: Status) {
        for server in self.all() {
            let _ = server.member.faults.end_watches.send(status.clone());
        }
    }

    /// Ends every open lease keepalive stream with `status`.
    pub fn end_keepalive_streams(&self, status: Status) {
        for server in self.all() {
            let _ = server.member.faults.end_keepalives.send(status.clone());
        }
    }

    /// Compacts the history at `revision`, as `etcdctl compaction` would: a
    /// watcher that resumes from before it is told its history is gone.
    ///
    /// # Errors
    ///
    /// As etcd refuses: [`ControlError::Compacted`] at or below the last
    /// compaction, [`ControlError::FutureRevision`] past the current
    /// revision.
    pub fn compact(&self, revision: i64) -> Result<(), ControlError> {
        let mut core = self.shared.lock();
        core.record_raft_entry();
        let (compacted, current) = (core.store.compact_revision(), core.store.revision());
        core.store.compact(revision).map_err(|err| match err {
            EtcdError::FutureRevision => ControlError::FutureRevision {
                requested: revision,
                current,
            },
            _ => ControlError::Compacted {
                requested: revision,
                compacted,
            },
        })
    }

    /// Raises the NOSPACE alarm: writes that store data fail with etcd's
    /// "database space exceeded" until [`FakeEtcd::disarm_no_space`] (or an
    /// `etcdctl alarm disarm`).
    pub fn raise_no_space(&self) {
        let member = self.member().id();
        let mut core = self.shared.lock();
        use etcd_proto::etcdserverpb::alarm_request::AlarmAction;
        core.alarm(
            AlarmAction::Activate as i32,
            member,
            AlarmType::Nospace as i32,
        );
    }

    /// Clears the NOSPACE alarm.
    pub fn disarm_no_space(&self) {
        let member = self.member().id();
        let mut core = self.shared.lock();
        use etcd_proto::etcdserverpb::alarm_request::AlarmAction;
        core.alarm(
            AlarmAction::Deactivate as i32,
            member,
            AlarmType::Nospace as i32,
        );
    }

    /// Simulates a leader election: the raft term goes up by one and, as a
    /// new leader does, every lease is renewed to its full TTL. A single
    /// member stays leader, so streams go on, as they do on etcd.
    pub fn change_leader(&self) {
        self.shared.lock().change_leader(self.shared.clock.now());
        self.shared.timer_wakeup.notify_one();
    }

    /// The current raft term.
    pub fn raft_term(&self) -> u64 {
        self.shared.lock().raft_term
    }
}

impl Drop for FakeEtcd {
    fn drop(&mut self) {
        self.lifetime.cancel();
    }
}

/// Starts one incarnation of the member's server on `listener` (and its
/// in-process listener), under `lifetime`. If it stops when its token was
/// not cancelled, `failure` says why.
pub(crate) fn spawn_incarnation(
    listener: TcpListener,
    member: &Arc<Member>,
    lifetime: &CancellationToken,
    failure: tokio::sync::watch::Sender<Option<ServerFailure>>,
    tls: Option<net::ServerTls>,
) -> Incarnation {
    let pipes = member.in_process.listen();
    let internal = member.internal.listen();
    let token = lifetime.child_token();
    let server = tokio::spawn(net::serve_grpc(
        listener,
        pipes,
        internal,
        Arc::clone(member),
        token.clone(),
        tls,
    ));
    // A member removed from the cluster stops, as etcd's process exits.
    {
        let member = Arc::clone(member);
        let token = token.clone();
        tokio::spawn(async move {
            let mut changes = member.shared.changes.subscribe();
            loop {
                if member.lock().cluster.was_removed(member.id()) {
                    // The answer to the removal goes out first.
                    tokio::task::yield_now().await;
                    token.cancel();
                    return;
                }
                tokio::select! {
                    changed = changes.changed() => if changed.is_err() { return },
                    () = token.cancelled() => return,
                }
            }
        });
    }
    let asked_to_stop = token.clone();
    let task = tokio::spawn(async move {
        let outcome = match server.await {
            Ok(Ok(())) if asked_to_stop.is_cancelled() => return Ok(()),
            Ok(Ok(())) => io::Error::other("fake-etcd's gRPC server stopped accepting connections"),
            Ok(Err(err)) => err,
            Err(join) if join.is_panic() => io::Error::other("fake-etcd's gRPC server panicked"),
            Err(_) => return Ok(()),
        };
        tracing::error!(error = %outcome, "the server failed");
        failure.send_replace(Some(ServerFailure {
            kind: outcome.kind(),
            message: outcome.to_string(),
        }));
        Err(outcome)
    });
    Incarnation {
        token,
        task: Some(task),
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
    /// Listeners given for the members, by position.
    listeners: Vec<Option<TcpListener>>,
    members: Option<usize>,
    initial_cluster: Option<String>,
    cluster_token: ClusterToken,
    name: Option<String>,
    cluster_id: Option<u64>,
    member_id: Option<u64>,
    advertise_client_urls: Vec<String>,
    advertise_peer_urls: Vec<String>,
    time: TimeSource,
    progress_notify_interval: Option<Duration>,
    restore_snapshot: Option<std::path::PathBuf>,
    compacted_at: Option<i64>,
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsOptions>,
    seed: Option<u64>,
    auth_token: Option<String>,
    auth_token_ttl: Option<Duration>,
    bcrypt_cost: Option<u32>,
}

/// The largest revision [`FakeEtcdBuilder::compacted_at`] takes: writes
/// after it must not run out of revisions.
const MAX_STARTING_REVISION: i64 = 1 << 62;

impl FakeEtcdBuilder {
    /// The seed of random faults ([`FakeEtcd::fail_randomly`]); taken from
    /// `FAKE_ETCD_SEED` if set, else from the clock. A test that fails can
    /// print [`FakeEtcd::seed`] and be replayed with it.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// How often watchers that asked for progress notifications get one
    /// (etcd's 10 minutes unless set), on the member's clock: from 1 ms to
    /// 365 days, or [`FakeEtcdBuilder::start`] refuses it.
    pub fn progress_notify_interval(mut self, interval: Duration) -> Self {
        self.progress_notify_interval = Some(interval);
        self
    }

    /// Starts from the state in an etcd snapshot file: one taken from a
    /// real etcd with `etcdctl snapshot save` (its sha256 trailer is
    /// checked) or from a fake ([`FakeEtcd::snapshot`]). Keys come back with
    /// their history since the last compaction, revisions and compaction
    /// point included; leases with their TTLs restarted and their keys;
    /// alarms too. A production state, in a unit test.
    ///
    /// [`FakeEtcdBuilder::start`] fails with [`io::ErrorKind::InvalidData`]
    /// and one line ("not an etcd snapshot: …") if the file is not one.
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let original = fake_etcd::FakeEtcd::start().await?;
    /// let mut client = etcd_client::Client::connect([original.endpoint()], None).await?;
    /// client.put("config/a", "1", None).await?;
    /// let file = std::env::temp_dir().join(format!("doc-{}.db", std::process::id()));
    /// std::fs::write(&file, original.snapshot())?;
    ///
    /// let copy = fake_etcd::FakeEtcd::builder().restore_snapshot(&file).start().await?;
    /// assert_eq!(copy.read_prefix("config/", 0)?, original.read_prefix("config/", 0)?);
    /// assert_eq!(copy.revision(), original.revision());
    /// # std::fs::remove_file(&file)?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn restore_snapshot(mut self, path: impl AsRef<std::path::Path>) -> Self {
        self.restore_snapshot = Some(path.as_ref().to_path_buf());
        self
    }

    /// Starts as an etcd whose history up to `revision` was written,
    /// deleted and compacted away: no keys, the store at `revision`, and
    /// reads and watches before it, and compactions at or before it,
    /// refused as compacted. For
    /// code that meets a long-lived etcd's large revisions; the
    /// differential tester also lines a fresh fake up with a reused etcd
    /// this way. `start` refuses a revision below 1 or above 2^62 (room
    /// for the writes to come), or one given with
    /// [`FakeEtcdBuilder::restore_snapshot`].
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let etcd = fake_etcd::FakeEtcd::builder().compacted_at(5_000).start().await?;
    /// let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await?;
    /// let put = client.put("k", "v", None).await?;
    /// assert_eq!(put.header().unwrap().revision(), 5_001);
    /// let old = etcd_client::GetOptions::new().with_revision(4_999);
    /// assert!(client.get("k", Some(old)).await.is_err()); // compacted
    /// # Ok(())
    /// # }
    /// ```
    pub fn compacted_at(mut self, revision: i64) -> Self {
        self.compacted_at = Some(revision);
        self
    }

    /// Serves the client port over TLS with etcd's options (feature
    /// `tls`): see [`tls`](crate::tls) for an example with throwaway
    /// certificates. The endpoint becomes `https://…`; the in-process
    /// channel stays plaintext.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, options: crate::tls::TlsOptions) -> Self {
        self.tls = Some(options);
        self
    }

    /// How auth tokens are made, in etcd's `--auth-token` syntax: `simple`
    /// (the default), or `jwt,pub-key=FILE,priv-key=FILE,sign-method=ALG`
    /// with an optional `ttl=5m` (RS256/384/512, PS256/384/512, ES256/384
    /// with both PEM keys, or HS256/384/512 with the secret in `priv-key`).
    /// [`FakeEtcdBuilder::start`] refuses a bad spec or unreadable keys
    /// with [`io::ErrorKind::InvalidInput`].
    pub fn auth_token(mut self, spec: impl Into<String>) -> Self {
        self.auth_token = Some(spec.into());
        self
    }

    /// How long a simple token lives unused (etcd's `--auth-token-ttl`,
    /// 300 s unless set), on the member's clock: each use restarts it, and
    /// [`FakeEtcd::advance`] past it expires the token.
    pub fn auth_token_ttl(mut self, ttl: Duration) -> Self {
        self.auth_token_ttl = Some(ttl);
        self
    }

    /// The bcrypt cost of user passwords (etcd's `--bcrypt-cost`: 10
    /// unless set, from 4 to 31). A lower cost makes adding users and
    /// logging in faster in tests.
    pub fn bcrypt_cost(mut self, cost: u32) -> Self {
        self.bcrypt_cost = Some(cost);
        self
    }

    /// Where the member's time comes from ([`TimeSource::Virtual`] unless
    /// set).
    pub fn time(mut self, source: TimeSource) -> Self {
        self.time = source;
        self
    }

    /// Serves on this listener instead of binding a free loopback port
    /// (the first member's, in a cluster).
    pub fn listener(mut self, listener: TcpListener) -> Self {
        self.listeners = vec![Some(listener)];
        self
    }

    /// Serves each member on one of these listeners, in order; members
    /// beyond them bind free loopback ports.
    pub fn listeners(mut self, listeners: impl IntoIterator<Item = TcpListener>) -> Self {
        self.listeners = listeners.into_iter().map(Some).collect();
        self
    }

    /// Starts a cluster of `count` members (1 to 7), each with its own
    /// endpoint, ID and name (`infra1`, `infra2`...), sharing one store as
    /// etcd's raft makes them: see [`FakeEtcd::members`] for their faults.
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let etcd = fake_etcd::FakeEtcd::builder().members(3).start().await?;
    /// let mut client = etcd_client::Client::connect(etcd.endpoints(), None).await?;
    /// client.put("k", "v", None).await?;
    /// assert_eq!(client.member_list().await?.members().len(), 3);
    /// # Ok(())
    /// # }
    /// ```
    pub fn members(mut self, count: usize) -> Self {
        self.members = Some(count);
        self
    }

    /// The initial members, in etcd's `--initial-cluster` syntax
    /// (`infra1=http://10.0.0.1:2380,infra2=...`): their names and peer
    /// URLs, from which their IDs come, as etcd derives them (a cluster
    /// started with the same flags as a real one has the same IDs).
    /// Overrides [`FakeEtcdBuilder::members`].
    pub fn initial_cluster(mut self, spec: impl Into<String>) -> Self {
        self.initial_cluster = Some(spec.into());
        self
    }

    /// etcd's `--initial-cluster-token` (`etcd-cluster` unless set), which
    /// goes into every member's ID.
    pub fn initial_cluster_token(mut self, token: impl Into<String>) -> Self {
        self.cluster_token = ClusterToken(token.into());
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

    /// The peer URLs `member list` reports (etcd's
    /// `--initial-advertise-peer-urls`); `http://localhost:2380`, etcd's
    /// default, if unset. The fake listens on no peer port.
    pub fn advertise_peer_urls(mut self, urls: impl IntoIterator<Item = String>) -> Self {
        self.advertise_peer_urls = urls.into_iter().collect();
        self
    }

    /// Starts serving in tasks on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// If no listener was given and no loopback port can be bound; with
    /// [`io::ErrorKind::InvalidInput`] if an option is out of range (a
    /// progress notify interval outside 1 ms to 365 days).
    pub async fn start(mut self) -> io::Result<FakeEtcd> {
        let auth = self.auth_config()?;
        let initial = self.initial_members()?;
        #[cfg(feature = "tls")]
        let tls: Option<net::ServerTls> =
            self.tls.as_ref().map(|t| t.server_config()).transpose()?;
        // Bad certificates or keys are refused here, not by a server task
        // that would die after `start` said all was well.
        #[cfg(feature = "tls")]
        if let Some(config) = &tls {
            tonic::transport::Server::builder()
                .tls_config(config.clone())
                .map_err(|err| {
                    io::Error::new(io::ErrorKind::InvalidInput, format!("TLS: {err}"))
                })?;
        }
        #[cfg(not(feature = "tls"))]
        let tls: Option<net::ServerTls> = None;
        let scheme = if tls.is_some() { "https" } else { "http" };
        if self.listeners.len() > initial.len() {
            // Serving some of them and not the others would leave clients
            // of the rest waiting on a port nobody answers.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} client URLs for {} member(s): give one per member at most",
                    self.listeners.len(),
                    initial.len()
                ),
            ));
        }
        let mut listeners = Vec::with_capacity(initial.len());
        for i in 0..initial.len() {
            let listener = match self.listeners.get_mut(i).and_then(Option::take) {
                Some(listener) => listener,
                None => TcpListener::bind(("127.0.0.1", 0)).await?,
            };
            listeners.push(listener);
        }
        let mut members = Vec::with_capacity(initial.len());
        for (i, ((name, peer_urls), listener)) in initial.into_iter().zip(&listeners).enumerate() {
            let addr = listener.local_addr()?;
            let client_urls = if i == 0 && !self.advertise_client_urls.is_empty() {
                std::mem::take(&mut self.advertise_client_urls)
            } else {
                vec![format!("{scheme}://{addr}")]
            };
            let id = match self.member_id {
                Some(id) if i == 0 => id,
                _ => cluster::member_id(&peer_urls, &self.cluster_token, None),
            };
            members.push(InitialMember {
                id,
                name,
                peer_urls,
                client_urls,
            });
        }
        let ids: Vec<u64> = members.iter().map(|m| m.id).collect();
        let unique: std::collections::BTreeSet<u64> = ids.iter().copied().collect();
        if unique.len() != ids.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "two members have the same peer URLs",
            ));
        }
        let cluster_id = self.cluster_id.unwrap_or_else(|| cluster::cluster_id(&ids));
        let progress = self
            .progress_notify_interval
            .unwrap_or(DEFAULT_PROGRESS_INTERVAL);
        check_progress_interval(progress)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, err))?;
        let seed = self
            .seed
            .or_else(seed_from_env)
            .unwrap_or_else(seed_from_clock);
        match (self.compacted_at, &self.restore_snapshot) {
            (Some(revision), _) if !(1..=MAX_STARTING_REVISION).contains(&revision) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "compacted_at({revision}): a revision from 1 to {MAX_STARTING_REVISION}"
                    ),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "compacted_at and restore_snapshot both say where the store starts",
                ))
            }
            _ => {}
        }
        let loaded = match &self.restore_snapshot {
            Some(path) => {
                let file = std::fs::read(path).map_err(|err| {
                    io::Error::new(err.kind(), format!("cannot read {}: {err}", path.display()))
                })?;
                let loaded = crate::snapshot::load(&file)
                    .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
                Some(loaded)
            }
            None => None,
        };
        let cluster = Cluster::new(cluster_id, &self.cluster_token, members);
        let shared = Arc::new(Shared::new(
            cluster,
            Clock::new(self.time),
            progress,
            seed,
            auth,
        ));
        {
            let mut core = shared.lock();
            // A fresh member has applied its own addition, the leader's
            // empty entry, its attributes and the cluster version; each
            // further initial member adds its addition and attributes.
            core.raft_index += 2 * (ids.len() as u64 - 1);
            if let Some(loaded) = loaded {
                loaded.into_core(&mut core, shared.clock.now());
            }
            if let Some(revision) = self.compacted_at {
                core.store = crate::mvcc::Store::restore(Vec::new(), revision);
            }
        }
        let lifetime = CancellationToken::new();
        let failure = tokio::sync::watch::Sender::new(None);
        let mut servers = Vec::with_capacity(ids.len());
        for (id, listener) in ids.into_iter().zip(listeners) {
            let member = Arc::new(Member::new(id, Arc::clone(&shared), seed));
            if servers.is_empty() {
                // The cluster's timers and watch syncer run once, whichever
                // member they are given.
                net::spawn_member_tasks(&member, &lifetime);
            }
            let addr = listener.local_addr()?;
            let serving =
                spawn_incarnation(listener, &member, &lifetime, failure.clone(), tls.clone());
            servers.push(Arc::new(MemberServer {
                member,
                addr,
                serving: Mutex::new(serving),
            }));
        }
        Ok(FakeEtcd {
            shared,
            servers: Mutex::new(servers),
            lifetime,
            failure,
            tls,
            seed,
        })
    }

    /// Each initial member's name and peer URLs.
    fn initial_members(&self) -> io::Result<Vec<(String, Vec<String>)>> {
        let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidInput, message);
        if let Some(spec) = &self.initial_cluster {
            let mut members: Vec<(String, Vec<String>)> = Vec::new();
            for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                let (name, url) = entry.split_once('=').ok_or_else(|| {
                    invalid(format!("--initial-cluster: {entry:?} is not name=peer-url"))
                })?;
                if !cluster::urls_are_valid(&[url.to_owned()]) {
                    return Err(invalid(format!("--initial-cluster: bad peer URL {url:?}")));
                }
                // etcd gives a member several URLs by naming it several times.
                match members.iter_mut().find(|(n, _)| n == name) {
                    Some((_, urls)) => urls.push(url.to_owned()),
                    None => members.push((name.to_owned(), vec![url.to_owned()])),
                }
            }
            if members.is_empty() {
                return Err(invalid("--initial-cluster names no member".into()));
            }
            return Ok(members);
        }
        let count = self.members.unwrap_or(1);
        if !(1..=MAX_MEMBERS).contains(&count) {
            return Err(invalid(format!(
                "a cluster has from 1 to {MAX_MEMBERS} members, not {count}"
            )));
        }
        if count == 1 {
            let name = self.name.clone().unwrap_or_else(|| "default".to_owned());
            let peer_urls = if self.advertise_peer_urls.is_empty() {
                vec!["http://localhost:2380".to_owned()]
            } else {
                self.advertise_peer_urls.clone()
            };
            return Ok(vec![(name, peer_urls)]);
        }
        // Names and peer ports as etcd's own three-member Procfile has
        // them (infra1 on 12380, infra2 on 22380...).
        Ok((1..=count)
            .map(|i| {
                (
                    format!("infra{i}"),
                    vec![format!("http://127.0.0.1:{i}2380")],
                )
            })
            .collect())
    }

    /// The auth options, checked as etcd checks its flags.
    fn auth_config(&self) -> io::Result<AuthConfig> {
        let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidInput, message);
        let ttl = self.auth_token_ttl.unwrap_or(token::DEFAULT_SIMPLE_TTL);
        if ttl.is_zero() {
            return Err(invalid("--auth-token-ttl must be more than 0".into()));
        }
        let tokens = match &self.auth_token {
            Some(spec) => TokenConfig::parse(spec, ttl).map_err(invalid)?,
            None => TokenConfig::Simple { ttl },
        };
        let bcrypt_cost = self.bcrypt_cost.unwrap_or(DEFAULT_BCRYPT_COST);
        if !(4..=31).contains(&bcrypt_cost) {
            return Err(invalid(format!(
                "--bcrypt-cost {bcrypt_cost} is out of range: it must be from 4 to 31"
            )));
        }
        Ok(AuthConfig {
            tokens,
            bcrypt_cost,
        })
    }

    /// Serves until `shutdown` completes (what the binary does with Ctrl-C).
    ///
    /// # Errors
    ///
    /// If no listener was given and no loopback port can be bound, or if
    /// the server fails.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> io::Result<()> {
        let etcd = self.start().await?;
        tracing::info!(endpoint = %etcd.endpoint(), seed = etcd.seed(), "serving etcd v3 API");
        tokio::select! {
            () = shutdown => {
                tracing::info!("shutting down");
                Ok(())
            }
            failure = etcd.failure() => Err(failure),
        }
    }
}

/// The most members a fake cluster has.
const MAX_MEMBERS: usize = 7;

/// etcd's `--initial-cluster-token`.
#[derive(Debug, Clone)]
struct ClusterToken(String);

impl Default for ClusterToken {
    fn default() -> Self {
        Self(DEFAULT_CLUSTER_TOKEN.to_owned())
    }
}

impl std::ops::Deref for ClusterToken {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// Why a control on a [`FakeEtcd`] (or an option of its builder) was
/// refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// No such lease: never granted, or already revoked or expired.
    #[error("no lease {0} (never granted, or revoked or expired)")]
    NoSuchLease(i64),
    /// The revision is at or below the last compaction.
    #[error("revision {requested} is compacted (the last compaction was at {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: i64,
        /// The revision of the last compaction.
        compacted: i64,
    },
    /// The revision is past the current one.
    #[error("revision {requested} is in the future (the store is at {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: i64,
        /// The store's current revision.
        current: i64,
    },
    /// A progress notify interval outside what the fake takes.
    #[error("progress notify interval {0:?} is out of range: it must be from 1ms to 365 days")]
    ProgressInterval(Duration),
    /// No member has this ID (never added, or removed).
    #[error("no member {0:x} in the cluster")]
    NoSuchMember(u64),
    /// The member is not in the state the control needs (starting one
    /// that runs, say).
    #[error("member {id:x} is {state}: cannot {control} it")]
    MemberState {
        /// The member's ID.
        id: u64,
        /// Its state, in words.
        state: &'static str,
        /// What was asked.
        control: &'static str,
    },
    /// A member's server could not listen again.
    #[error("member {id:x} cannot listen: {error}")]
    Listen {
        /// The member's ID.
        id: u64,
        /// Why, in words.
        error: String,
    },
    /// etcd refused a leader move.
    #[error("{0}")]
    MoveLeader(String),
}

/// Whether [`FakeEtcdBuilder::progress_notify_interval`] takes `interval`:
/// from 1 ms to 365 days (a zero interval would tick on every advance
/// forever).
///
/// # Errors
///
/// [`ControlError::ProgressInterval`] outside that range.
///
/// ```
/// use std::time::Duration;
/// assert!(fake_etcd::check_progress_interval(Duration::from_secs(10)).is_ok());
/// assert!(fake_etcd::check_progress_interval(Duration::ZERO).is_err());
/// ```
pub fn check_progress_interval(interval: Duration) -> Result<(), ControlError> {
    if (MIN_PROGRESS_INTERVAL..=MAX_PROGRESS_INTERVAL).contains(&interval) {
        Ok(())
    } else {
        Err(ControlError::ProgressInterval(interval))
    }
}

/// The seed in `FAKE_ETCD_SEED`, if set and a number.
fn seed_from_env() -> Option<u64> {
    std::env::var("FAKE_ETCD_SEED").ok()?.parse().ok()
}

fn seed_from_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
