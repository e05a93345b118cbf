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

use crate::clock::{Clock, TimeSource};
use crate::core::{
    Identity, Shared, DEFAULT_CLUSTER_ID, DEFAULT_MEMBER_ID, DEFAULT_PROGRESS_INTERVAL,
};
use crate::faults::Rpc;
use crate::net;

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
    /// Cancelled when the handle is dropped: ends everything.
    member: CancellationToken,
    /// The server now running; replaced by a restart.
    serving: Mutex<Incarnation>,
}

#[derive(Debug)]
struct Incarnation {
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

    /// The endpoint to give a client, such as `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address the member listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
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
        let shared = Arc::downgrade(&self.shared);
        let connector = tower::service_fn(move |_: http::Uri| {
            let pipe = match shared.upgrade() {
                Some(shared) => shared.in_process.connect(),
                None => Err(io::Error::new(
                    io::ErrorKind::ConnectionRefused,
                    "fake-etcd was dropped",
                )),
            };
            std::future::ready(pipe.map(hyper_util::rt::TokioIo::new))
        });
        tonic::transport::Endpoint::from_static("http://fake-etcd.in-process")
            .connect_with_connector_lazy(connector)
    }

    /// The current revision of the store.
    pub fn revision(&self) -> i64 {
        self.shared.lock().store.revision()
    }

    /// The keys that start with `prefix`, with their values, as they were
    /// at `revision` (0 or less: now, as a range takes it), in key order;
    /// read straight from the store, past any injected fault or pause: for
    /// a test's assertions. `None` if that revision is compacted or not
    /// written yet.
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
    /// let then = etcd.read_prefix("svc/", first).unwrap();
    /// assert_eq!(then, vec![(b"svc/a".to_vec(), b"1".to_vec())]);
    /// assert_eq!(etcd.read_prefix("svc/", 0).unwrap().len(), 2);
    /// # Ok(())
    /// # }
    /// ```
    pub fn read_prefix(
        &self,
        prefix: impl AsRef<[u8]>,
        revision: i64,
    ) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
        let prefix = bytes::Bytes::copy_from_slice(prefix.as_ref());
        let end = crate::watch::prefix_end(&prefix).unwrap_or_else(|| vec![0]);
        let range = crate::mvcc::KeyRange::new(&prefix, &bytes::Bytes::from(end));
        let core = self.shared.lock();
        let store = &core.store;
        let revision = if revision <= 0 {
            store.revision()
        } else {
            revision
        };
        if revision < store.compact_revision() || revision > store.revision() {
            return None;
        }
        Some(
            store
                .range_at(&range, revision)
                .map(|kv| (kv.key.to_vec(), kv.value.to_vec()))
                .collect(),
        )
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
    /// deleted in one revision. Returns `false` if there is no such lease.
    pub fn expire_lease(&self, id: i64) -> bool {
        let mut core = self.shared.lock();
        // As an expiry in etcd: a revoke proposed through raft.
        core.record_raft_entry();
        core.revoke(id).is_ok()
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

impl FakeEtcd {
    /// The seed of the member's random faults (see
    /// [`FakeEtcd::fail_randomly`]); print it to replay a run.
    pub fn seed(&self) -> u64 {
        self.shared.faults.seed
    }

    /// Breaks every client connection now. The member keeps listening, so
    /// clients reconnect; every stream they had (watch, keepalive) is gone.
    pub fn drop_connections(&self) {
        let serving = self.serving.lock().unwrap_or_else(|p| p.into_inner());
        self.shared.faults.drop_connections(&serving.token);
    }

    /// Stops answering, without closing anything: connections neither read
    /// nor write, and new ones are accepted but not served. This is a
    /// network partition as a client sees it. Undone by
    /// [`FakeEtcd::resume`].
    pub fn pause(&self) {
        self.shared.faults.paused.send_replace(true);
    }

    /// Ends a [`FakeEtcd::pause`]: everything held goes through.
    pub fn resume(&self) {
        self.shared.faults.paused.send_replace(false);
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
        let (old_token, old_task) = {
            let mut serving = self.serving.lock().unwrap_or_else(|p| p.into_inner());
            (serving.token.clone(), serving.task.take())
        };
        old_token.cancel();
        if let Some(task) = old_task {
            // The old listener must be closed before the address is bound.
            let _ = task.await;
        }
        {
            let mut core = self.shared.lock();
            core.raft_term += 1;
            core.lessor.renew_all(self.shared.clock.now());
        }
        let listener = TcpListener::bind(self.addr).await?;
        let pipes = self.shared.in_process.listen();
        let token = self.member.child_token();
        let task = tokio::spawn(net::serve_grpc(
            listener,
            pipes,
            Arc::clone(&self.shared),
            token.clone(),
        ));
        *self.serving.lock().unwrap_or_else(|p| p.into_inner()) = Incarnation {
            token,
            task: Some(task),
        };
        self.shared.expiry_wakeup.notify_one();
        Ok(())
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
        self.shared.faults.fail(rpc, Some(count), None, status);
    }

    /// Fails every call of `rpc` with `status` until
    /// [`FakeEtcd::clear_faults`].
    pub fn fail_always(&self, rpc: Rpc, status: Status) {
        self.shared.faults.fail(rpc, None, None, status);
    }

    /// Fails each call of `rpc` with probability `probability`, drawn from
    /// the member's seeded generator ([`FakeEtcdBuilder::seed`]).
    pub fn fail_randomly(&self, rpc: Rpc, probability: f64, status: Status) {
        self.shared
            .faults
            .fail(rpc, None, Some(probability), status);
    }

    /// Delays every call of `rpc` by `by` (real time, or tokio's paused time)
    /// until [`FakeEtcd::clear_faults`].
    pub fn delay(&self, rpc: Rpc, by: Duration) {
        self.shared.faults.delay(rpc, by);
    }

    /// Removes every injected error and delay.
    pub fn clear_faults(&self) {
        self.shared.faults.clear();
    }

    /// Stops delivering watch responses (the streams stay open; events are
    /// kept and arrive after [`FakeEtcd::unstall_watches`], as from a slow
    /// network).
    pub fn stall_watches(&self) {
        self.shared.faults.watches_stalled.send_replace(true);
    }

    /// Ends a [`FakeEtcd::stall_watches`].
    pub fn unstall_watches(&self) {
        self.shared.faults.watches_stalled.send_replace(false);
    }

    /// Ends every open watch stream with `status`.
    pub fn end_watch_streams(&self, status: Status) {
        let _ = self.shared.faults.end_watches.send(status);
    }

    /// Ends every open lease keepalive stream with `status`.
    pub fn end_keepalive_streams(&self, status: Status) {
        let _ = self.shared.faults.end_keepalives.send(status);
    }

    /// Compacts the history at `revision`, as `etcdctl compaction` would: a
    /// watcher that resumes from before it is told its history is gone.
    /// Returns `false` if etcd would refuse (at or below the last compaction,
    /// or in the future).
    pub fn compact(&self, revision: i64) -> bool {
        let mut core = self.shared.lock();
        core.record_raft_entry();
        core.store.compact(revision).is_ok()
    }

    /// Raises the NOSPACE alarm: writes that store data fail with etcd's
    /// "database space exceeded" until [`FakeEtcd::disarm_no_space`] (or an
    /// `etcdctl alarm disarm`).
    pub fn raise_no_space(&self) {
        let member = self.shared.identity.member_id;
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
        let member = self.shared.identity.member_id;
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
        let mut core = self.shared.lock();
        core.raft_term += 1;
        core.lessor.renew_all(self.shared.clock.now());
    }

    /// The current raft term.
    pub fn raft_term(&self) -> u64 {
        self.shared.lock().raft_term
    }
}

impl Drop for FakeEtcd {
    fn drop(&mut self) {
        self.member.cancel();
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
    seed: Option<u64>,
}

impl FakeEtcdBuilder {
    /// The seed of random faults ([`FakeEtcd::fail_randomly`]); taken from
    /// `FAKE_ETCD_SEED` if set, else from the clock. A test that fails can
    /// print [`FakeEtcd::seed`] and be replayed with it.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

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

    /// Starts serving in tasks on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// If no listener was given and no loopback port can be bound.
    pub async fn start(self) -> io::Result<FakeEtcd> {
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
        let seed = self
            .seed
            .or_else(seed_from_env)
            .unwrap_or_else(seed_from_clock);
        let shared = Arc::new(Shared::new(identity, Clock::new(self.time), progress, seed));
        let member = CancellationToken::new();
        net::spawn_member_tasks(&shared, &member);
        let pipes = shared.in_process.listen();
        let token = member.child_token();
        let task = tokio::spawn(net::serve_grpc(
            listener,
            pipes,
            Arc::clone(&shared),
            token.clone(),
        ));
        Ok(FakeEtcd {
            addr,
            shared,
            member,
            serving: Mutex::new(Incarnation {
                token,
                task: Some(task),
            }),
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
        shutdown.await;
        tracing::info!("shutting down");
        Ok(())
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
