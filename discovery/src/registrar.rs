//! The registrar: keeps one instance registered under a lease for as long as
//! it runs, through everything etcd and the network do to it.
//!
//! A task owns the registration and moves through [`RegistrationState`]s:
//! it grants a lease, puts the instance's key with it, and then keeps the
//! lease alive on an **absolute-deadline** schedule (a renewal every third
//! of the TTL, and the lease counted lost once its deadline passes without
//! one, whatever the stream did). A keepalive stream that ends is reopened
//! on the same lease. A lost lease (expired, revoked, unknown) is replaced
//! by a new one under the **same** key, after a jittered backoff so a fleet
//! does not stampede etcd. The task watches its own key and puts it back if
//! someone deletes or overwrites it.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, EventType, PutOptions, WatchOptions, WatchStream};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backoff::{random_seed, Backoff};
use crate::codec::{Codec, Endpoint, GoNaming};
use crate::{is_lease_not_found, Error};

/// Where a registration stands; watch it for health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// Granting a lease and putting the key.
    Registering,
    /// The key is in etcd under a live lease.
    Live {
        /// The lease the key is attached to.
        lease: i64,
    },
    /// The lease is still within its TTL but renewals are failing.
    Degraded {
        /// The lease the key is attached to.
        lease: i64,
        /// What is failing.
        reason: String,
    },
    /// The lease is gone; a new registration is on its way.
    Lost {
        /// Why.
        reason: String,
    },
    /// Deregistered on request; the task has ended.
    Deregistered,
}

impl RegistrationState {
    /// Whether the instance is registered now.
    pub fn is_live(&self) -> bool {
        matches!(self, Self::Live { .. } | Self::Degraded { .. })
    }
}

/// Options for a registration; see [`Registrar::builder`].
#[must_use = "a builder does nothing until `start` is called"]
pub struct RegistrarBuilder {
    client: Client,
    service: String,
    endpoint: Endpoint,
    ttl: i64,
    codec: Arc<dyn Codec>,
    backoff: (Duration, Duration),
    seed: Option<u64>,
}

/// Registers instances of services in etcd.
#[derive(Debug)]
pub struct Registrar;

impl Registrar {
    /// A registration of `addr` (`host:port`) in `service`, under instance
    /// ID `addr` (Go's convention) unless [`RegistrarBuilder::instance_id`]
    /// says otherwise.
    pub fn builder(
        client: Client,
        service: impl Into<String>,
        addr: impl Into<String>,
    ) -> RegistrarBuilder {
        let addr = addr.into();
        RegistrarBuilder {
            client,
            service: service.into(),
            endpoint: Endpoint {
                id: addr.clone(),
                addr,
                metadata: Value::Null,
            },
            ttl: 10,
            codec: Arc::new(GoNaming),
            backoff: (Duration::from_millis(100), Duration::from_secs(5)),
            seed: None,
        }
    }
}

impl RegistrarBuilder {
    /// The instance ID: the key is `<service>/<id>`.
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.endpoint.id = id.into();
        self
    }

    /// Metadata (weight, zone, version...).
    pub fn metadata(mut self, metadata: Value) -> Self {
        self.endpoint.metadata = metadata;
        self
    }

    /// The lease TTL in seconds (10 unless set; etcd raises anything under
    /// 2).
    pub fn ttl(mut self, seconds: i64) -> Self {
        self.ttl = seconds;
        self
    }

    /// How the instance is laid out ([`GoNaming`] unless set).
    pub fn codec(mut self, codec: impl Codec) -> Self {
        self.codec = Arc::new(codec);
        self
    }

    /// The first and the longest delay before re-registering (100 ms and
    /// 5 s unless set); each delay is a random share of its cap.
    pub fn backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = (first, max);
        self
    }

    /// Seeds the retry jitter, for runs that must replay.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Starts registering in a task on the current tokio runtime. The
    /// returned handle shows the state; dropping it stops the keepalives
    /// (the key then goes when its lease expires).
    pub fn start(self) -> Registration {
        let (state_tx, state_rx) = watch::channel(RegistrationState::Registering);
        let (commands, command_rx) = mpsc::channel(8);
        let key = crate::codec::instance_key(&self.service, &self.endpoint.id);
        let seed = self.seed.unwrap_or_else(random_seed);
        let task = Task {
            client: self.client,
            key: key.clone(),
            endpoint: self.endpoint,
            ttl: self.ttl,
            codec: self.codec,
            backoff: Backoff::new(self.backoff.0, self.backoff.1, seed),
            state: state_tx,
            commands: command_rx,
        };
        Registration {
            key,
            state: state_rx,
            commands,
            task: tokio::spawn(task.run()),
        }
    }
}

/// A running registration.
///
/// # Example
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let etcd = fake_etcd::FakeEtcd::start().await?;
/// # let client = etcd_client::Client::connect([etcd.endpoint()], None).await?;
/// use etcd_grpc_discovery::Registrar;
///
/// let registration = Registrar::builder(client, "greeter", "10.0.0.1:50051")
///     .metadata(serde_json::json!({"weight": 2}))
///     .ttl(10)
///     .start();
/// registration.live().await;
/// registration.deregister().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Registration {
    key: String,
    state: watch::Receiver<RegistrationState>,
    commands: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

enum Command {
    Metadata(Value, oneshot::Sender<Result<(), Error>>),
    Deregister(oneshot::Sender<Result<(), Error>>),
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Metadata(..) => "Metadata",
            Command::Deregister(..) => "Deregister",
        })
    }
}

impl Registration {
    /// The key the instance is registered under.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The state now.
    pub fn state(&self) -> RegistrationState {
        self.state.borrow().clone()
    }

    /// A receiver of every state change (for readiness and health checks).
    pub fn watch_state(&self) -> watch::Receiver<RegistrationState> {
        self.state.clone()
    }

    /// Waits until the instance is registered.
    pub async fn live(&self) {
        let mut rx = self.state.clone();
        let _ = rx.wait_for(RegistrationState::is_live).await;
    }

    /// Replaces the metadata, in place (same key, same lease).
    ///
    /// # Errors
    ///
    /// If etcd refuses the put, or the registration has ended.
    pub async fn update_metadata(&self, metadata: Value) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Metadata(metadata, tx))
            .await
            .map_err(|_| Error::Ended)?;
        rx.await.map_err(|_| Error::Ended)?
    }

    /// Deletes the key and revokes the lease, then ends.
    ///
    /// # Errors
    ///
    /// If etcd cannot be reached (the key then goes when its lease expires).
    pub async fn deregister(self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Deregister(tx))
            .await
            .map_err(|_| Error::Ended)?;
        rx.await.map_err(|_| Error::Ended)?
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        // Deregistering needs etcd; drop only stops renewing, and the TTL
        // removes the key. (Aborting a finished task does nothing.)
        self.task.abort();
    }
}

struct Task {
    client: Client,
    key: String,
    endpoint: Endpoint,
    ttl: i64,
    codec: Arc<dyn Codec>,
    backoff: Backoff,
    state: watch::Sender<RegistrationState>,
    commands: mpsc::Receiver<Command>,
}

/// Why a live registration stopped being live.
enum Outcome {
    Lost(String),
    Deregistered,
}

impl Outcome {
    /// No renewal came back before the lease's deadline: etcd may have
    /// expired it, so it counts as lost.
    fn deadline_passed() -> Self {
        Self::Lost("no renewal before the lease's deadline".into())
    }
}

impl Task {
    async fn run(mut self) {
        loop {
            self.state.send_replace(RegistrationState::Registering);
            let lease = match self.register().await {
                Ok(lease) => lease,
                Err(err) => {
                    self.state.send_replace(RegistrationState::Lost {
                        reason: err.to_string(),
                    });
                    if self.wait_or_command().await {
                        return;
                    }
                    continue;
                }
            };
            match self.keep_alive(lease).await {
                Outcome::Deregistered => return,
                Outcome::Lost(reason) => {
                    tracing::warn!(key = %self.key, lease, %reason, "registration lost; registering again");
                    self.state.send_replace(RegistrationState::Lost { reason });
                    // Best effort: the old lease must not keep a copy alive.
                    let limit = self.call_limit();
                    let _ = bounded(limit, self.client.lease_revoke(lease)).await;
                    if self.wait_or_command().await {
                        return;
                    }
                }
            }
        }
    }

    /// Sleeps for the next backoff delay while answering commands (with no
    /// lease held); returns `true` if deregistered meanwhile.
    async fn wait_or_command(&mut self) -> bool {
        let sleep = tokio::time::sleep(self.backoff.next_delay());
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                biased;
                () = &mut sleep => return false,
                command = self.commands.recv() => match command {
                    None => return false,
                    Some(command) => if self.handle(command, None).await { return true },
                }
            }
        }
    }

    /// Grants a lease and puts the key with it.
    async fn register(&mut self) -> Result<i64, Error> {
        let limit = self.call_limit();
        let lease = bounded(limit, self.client.lease_grant(self.ttl, None))
            .await?
            .id();
        if let Err(err) = self.put(lease).await {
            let _ = bounded(limit, self.client.lease_revoke(lease)).await;
            return Err(err);
        }
        Ok(lease)
    }

    /// Applies a command; returns `true` once deregistered.
    async fn handle(&mut self, command: Command, lease: Option<i64>) -> bool {
        match command {
            Command::Metadata(metadata, reply) => {
                self.endpoint.metadata = metadata;
                let result = match lease {
                    Some(lease) => self.put(lease).await,
                    // Not registered now: the next registration carries it.
                    None => Ok(()),
                };
                let _ = reply.send(result);
                false
            }
            Command::Deregister(reply) => {
                let limit = self.call_limit();
                let mut result = bounded(limit, self.client.delete(self.key.as_str(), None))
                    .await
                    .map(drop);
                if let Some(lease) = lease {
                    let revoked = bounded(limit, self.client.lease_revoke(lease)).await;
                    if result.is_ok() {
                        result = revoked.map(drop).or_else(|e| {
                            if e.is_lease_not_found() {
                                Ok(())
                            } else {
                                Err(e)
                            }
                        });
                    }
                }
                self.state.send_replace(RegistrationState::Deregistered);
                let _ = reply.send(result);
                true
            }
        }
    }

    async fn put(&mut self, lease: i64) -> Result<(), Error> {
        let value = self.codec.encode(&self.endpoint);
        let limit = self.call_limit();
        let put = self.client.put(
            self.key.as_str(),
            value,
            Some(PutOptions::new().with_lease(lease)),
        );
        bounded(limit, put).await?;
        Ok(())
    }

    /// How long one call to etcd may take: a call hangs during a partition,
    /// and the registration must move on (and notice a lost lease) instead.
    fn call_limit(&self) -> Duration {
        Duration::from_secs(self.ttl.max(2) as u64)
    }

    /// Keeps `lease` alive until it is lost or the instance deregisters.
    async fn keep_alive(&mut self, lease: i64) -> Outcome {
        let ttl = self.call_limit();
        let mut deadline = Instant::now() + ttl;
        let interval = ttl / 3;
        let mut next_renewal = Instant::now() + interval;
        let mut keeper = None;
        let mut own_key = tokio::time::timeout_at(deadline, self.watch_own_key(lease))
            .await
            .ok()
            .flatten();
        // With no own-key watch, when to check the key again. Kept across
        // passes of the loop: renewals come every TTL/3, and a sleep made
        // afresh on each pass would never end with a TTL of 3 s or less.
        let mut recheck_at = Instant::now() + OWN_KEY_RECHECK;
        self.state.send_replace(RegistrationState::Live { lease });
        self.backoff.reset();
        loop {
            if keeper.is_none() {
                let opened =
                    tokio::time::timeout_at(deadline, self.client.lease_keep_alive(lease)).await;
                let Ok(opened) = opened else {
                    return Outcome::deadline_passed();
                };
                match opened {
                    Ok(pair) => keeper = Some(pair),
                    Err(err) if is_lease_not_found(&err) => {
                        return Outcome::Lost("lease not found".into())
                    }
                    Err(err) => {
                        self.state.send_replace(RegistrationState::Degraded {
                            lease,
                            reason: err.to_string(),
                        });
                        next_renewal = (Instant::now() + self.backoff.next_delay()).min(deadline);
                    }
                }
            }
            if Instant::now() >= deadline {
                return Outcome::deadline_passed();
            }
            let own_value = self.codec.encode(&self.endpoint);
            tokio::select! {
                // In order, so that a schedule replays identically in virtual
                // time (tokio otherwise picks among ready branches at random).
                biased;
                () = tokio::time::sleep_until(next_renewal) => {
                    if let Some((sender, responses)) = keeper.as_mut() {
                        let sent_at = Instant::now();
                        if sender.keep_alive().await.is_err() {
                            keeper = None;
                            continue;
                        }
                        // Wait for the answer, but never past the deadline.
                        let answer = tokio::time::timeout_at(deadline, responses.message()).await;
                        match answer {
                            Ok(Ok(Some(resp))) if resp.ttl() > 0 => {
                                deadline = sent_at + Duration::from_secs(resp.ttl() as u64);
                                next_renewal = Instant::now() + interval;
                                self.backoff.reset();
                                self.state.send_if_modified(|s| {
                                    let live = RegistrationState::Live { lease };
                                    (*s != live).then(|| *s = live).is_some()
                                });
                            }
                            Ok(Ok(Some(_))) => return Outcome::Lost("the lease expired".into()),
                            Ok(Ok(None) | Err(_)) => {
                                // The stream ended: reopen it on the same lease.
                                self.state.send_replace(RegistrationState::Degraded { lease, reason: "keepalive stream ended".into() });
                                keeper = None;
                                next_renewal = (Instant::now() + self.backoff.next_delay()).min(deadline);
                            }
                            Err(_) => return Outcome::deadline_passed(),
                        }
                    } else {
                        next_renewal = (Instant::now() + self.backoff.next_delay()).min(deadline);
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Outcome::deadline_passed();
                }
                changed = next_own_key_change(&mut own_key, recheck_at, &own_value, lease) => {
                    match changed {
                        OwnKey::Intact => {}
                        OwnKey::Changed => {
                            tracing::info!(key = %self.key, "registration deleted or overwritten; putting it back");
                            if let Err(err) = self.put(lease).await {
                                if err.is_lease_not_found() {
                                    return Outcome::Lost("lease not found".into());
                                }
                                // The watch has nothing more to say about a
                                // key that stays deleted: drop it, so the key
                                // is checked (and put back) again shortly.
                                tracing::warn!(key = %self.key, %err, "could not put the registration back; retrying");
                                own_key = None;
                                recheck_at = Instant::now() + OWN_KEY_RECHECK;
                            }
                        }
                        OwnKey::StreamEnded => {
                            own_key = tokio::time::timeout_at(deadline, self.watch_own_key(lease)).await.ok().flatten();
                            recheck_at = Instant::now() + OWN_KEY_RECHECK;
                        }
                    }
                }
                command = self.commands.recv() => {
                    match command {
                        Some(command) => {
                            let metadata = matches!(command, Command::Metadata(..));
                            if self.handle(command, Some(lease)).await {
                                return Outcome::Deregistered;
                            }
                            if metadata {
                                // If that put failed, etcd still holds the old
                                // value and the watch will not say so: check
                                // the key (and put it back) shortly.
                                own_key = None;
                                recheck_at = Instant::now() + OWN_KEY_RECHECK;
                            }
                        }
                        // Every handle is gone: keep the registration alive anyway
                        // until the task is aborted.
                        None => std::future::pending::<()>().await,
                    }
                }
            }
        }
    }

    /// A watch on the instance's own key. The key is checked first, and put
    /// back if it is missing or not ours, and the watch starts right after
    /// that check: a change made while no watch was open (during a watch
    /// outage, say) is not missed.
    async fn watch_own_key(&mut self, lease: i64) -> Option<WatchStream> {
        let limit = self.call_limit();
        let current = bounded(limit, self.client.get(self.key.as_str(), None))
            .await
            .ok()?;
        let revision = current.header().map_or(0, |h| h.revision());
        let value = self.codec.encode(&self.endpoint);
        let intact = current
            .kvs()
            .first()
            .is_some_and(|kv| kv.value() == value.as_slice() && kv.lease() == lease);
        if !intact {
            tracing::info!(key = %self.key, "registration missing or changed; putting it back");
            self.put(lease).await.ok()?;
        }
        let options = WatchOptions::new().with_start_revision(revision + 1);
        self.client
            .watch(self.key.as_str(), Some(options))
            .await
            .ok()
    }
}

/// With no watch on its own key, how long the registration waits before
/// checking the key again (and opening a new watch).
const OWN_KEY_RECHECK: Duration = Duration::from_secs(1);

enum OwnKey {
    Intact,
    Changed,
    StreamEnded,
}

/// The next change to the registration's own key: a delete, or a put of
/// another value or lease.
async fn next_own_key_change(
    stream: &mut Option<WatchStream>,
    recheck_at: Instant,
    value: &[u8],
    lease: i64,
) -> OwnKey {
    let Some(stream) = stream.as_mut() else {
        // No watch: check again at `recheck_at`.
        tokio::time::sleep_until(recheck_at).await;
        return OwnKey::StreamEnded;
    };
    match stream.message().await {
        Ok(Some(resp)) => {
            if resp.canceled() {
                return OwnKey::StreamEnded;
            }
            let changed = resp.events().iter().any(|e| match e.event_type() {
                EventType::Delete => true,
                EventType::Put => e
                    .kv()
                    .is_some_and(|kv| kv.value() != value || kv.lease() != lease),
            });
            if changed {
                OwnKey::Changed
            } else {
                OwnKey::Intact
            }
        }
        _ => OwnKey::StreamEnded,
    }
}

/// Runs a call to etcd for at most `limit`.
async fn bounded<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(Error::from),
        Err(_) => Err(Error::Timeout(limit)),
    }
}

impl std::fmt::Debug for RegistrarBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrarBuilder")
            .field("codec", &self.codec)
            .finish_non_exhaustive()
    }
}
