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

use etcd_client::{
    Client, EventType, LeaseKeepAliveStream, LeaseKeeper, PutOptions, WatchOptions, WatchStream,
};
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
    /// The task stopped without deregistering (it panicked, or its runtime
    /// shut down); the key goes when its lease expires.
    Stopped {
        /// Why, as far as is known.
        reason: String,
    },
}

impl RegistrationState {
    /// Whether the instance is registered now.
    pub fn is_live(&self) -> bool {
        matches!(self, Self::Live { .. } | Self::Degraded { .. })
    }

    /// Whether the registration has ended for good: no state follows.
    pub fn has_ended(&self) -> bool {
        self.end_reason().is_some()
    }

    /// Why the registration ended, if it has.
    pub fn end_reason(&self) -> Option<EndReason> {
        match self {
            Self::Deregistered => Some(EndReason::Deregistered),
            Self::Stopped { reason } => Some(EndReason::Stopped(reason.clone())),
            _ => None,
        }
    }
}

/// Why a registration ended (see [`Error::Ended`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// It was deregistered.
    Deregistered,
    /// Its task stopped without deregistering: it panicked, or its runtime
    /// shut down (the text says which, when known).
    Stopped(String),
}

impl std::fmt::Display for EndReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Deregistered => f.write_str("deregistered"),
            Self::Stopped(reason) => f.write_str(reason),
        }
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
/// use etcd_grpc_discovery::{Registrar, RegistrationState};
///
/// let registration = Registrar::builder(client, "greeter", "10.0.0.1:50051")
///     .metadata(serde_json::json!({"weight": 2}))
///     .ttl(10)
///     .start();
/// let lease = registration.live().await?;
/// assert_eq!(registration.state(), RegistrationState::Live { lease });
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

    /// Waits until the instance is registered; returns its lease.
    ///
    /// # Errors
    ///
    /// [`Error::Ended`] if the registration ended first (or had already),
    /// with the reason.
    pub async fn live(&self) -> Result<i64, Error> {
        let mut rx = self.state.clone();
        let state = rx
            .wait_for(|s| s.is_live() || s.has_ended())
            .await
            .map(|state| state.clone());
        match state {
            Ok(RegistrationState::Live { lease } | RegistrationState::Degraded { lease, .. }) => {
                Ok(lease)
            }
            _ => Err(self.ended()),
        }
    }

    /// The error for a registration whose task has ended. The task writes
    /// its last state as it ends, so the reason is there.
    fn ended(&self) -> Error {
        let reason = self.state.borrow().end_reason();
        Error::Ended(
            reason.unwrap_or_else(|| EndReason::Stopped("the registration task ended".into())),
        )
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
            .map_err(|_| self.ended())?;
        rx.await.map_err(|_| self.ended())?
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
            .map_err(|_| self.ended())?;
        rx.await.map_err(|_| self.ended())?
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
    /// The lease's TTL, in seconds.
    ttl: i64,
    codec: Arc<dyn Codec>,
    backoff: Backoff,
    state: watch::Sender<RegistrationState>,
    commands: mpsc::Receiver<Command>,
}

/// Why the keepalive of one lease stopped.
enum Outcome {
    /// The lease is lost: register again.
    Lost(String),
    /// Deregistered on request: the task ends.
    Deregistered,
    /// Every handle is gone (the [`Registration`] was dropped): the task
    /// ends, as dropping promises, and the key goes with its lease.
    HandleDropped,
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
                Outcome::Deregistered | Outcome::HandleDropped => return,
                Outcome::Lost(reason) => {
                    tracing::warn!(key = %self.key, lease, %reason, "registration lost; registering again");
                    self.state.send_replace(RegistrationState::Lost { reason });
                    // Best effort: the old lease must not keep a copy alive.
                    let timeout = self.call_timeout();
                    let _ = bounded(timeout, self.client.lease_revoke(lease)).await;
                    if self.wait_or_command().await {
                        return;
                    }
                }
            }
        }
    }

    /// Sleeps for the next backoff delay while answering commands (with no
    /// lease held); returns `true` if the task must end (deregistered, or
    /// every handle dropped).
    async fn wait_or_command(&mut self) -> bool {
        let sleep = tokio::time::sleep(self.backoff.next_delay());
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                biased;
                () = &mut sleep => return false,
                command = self.commands.recv() => match command {
                    None => return true,
                    Some(command) => if self.handle(command, None).await { return true },
                }
            }
        }
    }

    /// Grants a lease and puts the key with it.
    async fn register(&mut self) -> Result<i64, Error> {
        let limit = self.call_timeout();
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
                let limit = self.call_timeout();
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
        let timeout = self.call_timeout();
        let put = self.client.put(
            self.key.as_str(),
            value,
            Some(PutOptions::new().with_lease(lease)),
        );
        bounded(timeout, put).await?;
        Ok(())
    }

    /// The lease's time to live (etcd raises anything under 2 s to its
    /// minimum).
    fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.ttl.max(2) as u64)
    }

    /// How long one call to etcd may take. A call hangs during a
    /// partition, and the registration must move on (and notice a lost
    /// lease) instead; past a TTL, no lease the call was about can still be
    /// alive, so the TTL is the bound. A separate name from [`lease_ttl`]
    /// because it is a separate decision.
    ///
    /// [`lease_ttl`]: Task::lease_ttl
    fn call_timeout(&self) -> Duration {
        self.lease_ttl()
    }

    /// Keeps `lease` alive until it is lost, the instance deregisters, or
    /// every handle is dropped: a [`KeepAlive`] state machine fed one event
    /// at a time.
    async fn keep_alive(&mut self, lease: i64) -> Outcome {
        let mut machine = KeepAlive::new(lease, self.lease_ttl());
        machine.own_key =
            match tokio::time::timeout_at(machine.deadline, self.watch_own_key(lease)).await {
                Ok(Some(stream)) => OwnKeyWatch::Watching(Box::new(stream)),
                _ => OwnKeyWatch::recheck_soon(),
            };
        self.state.send_replace(RegistrationState::Live { lease });
        self.backoff.reset();
        loop {
            // What the own key must hold, as of the latest metadata.
            let own_value = self.codec.encode(&self.endpoint);
            let transition = match machine.next_event(&mut self.commands, &own_value).await {
                Event::RenewalDue => self.on_renewal_due(&mut machine).await,
                Event::DeadlinePassed => Transition::End(Outcome::deadline_passed()),
                Event::OwnKey(change) => self.on_own_key(&mut machine, change).await,
                Event::Command(command) => self.on_command(&mut machine, command).await,
            };
            if let Some(outcome) = self.apply(&mut machine, transition) {
                return outcome;
            }
        }
    }

    /// The one place where a transition changes the published state and
    /// the schedule; `Some` when this lease's keepalive is over.
    fn apply(&mut self, machine: &mut KeepAlive, transition: Transition) -> Option<Outcome> {
        let lease = machine.lease;
        match transition {
            Transition::Stay => None,
            Transition::Renewed { deadline } => {
                machine.deadline = deadline;
                machine.next_renewal = Instant::now() + machine.renew_every;
                self.backoff.reset();
                self.state.send_if_modified(|s| {
                    let live = RegistrationState::Live { lease };
                    (*s != live).then(|| *s = live).is_some()
                });
                None
            }
            Transition::Degraded { reason } => {
                // Reopen the stream after a backoff, on the same lease,
                // but never later than the deadline.
                machine.keeper = None;
                machine.next_renewal =
                    (Instant::now() + self.backoff.next_delay()).min(machine.deadline);
                self.state
                    .send_replace(RegistrationState::Degraded { lease, reason });
                None
            }
            Transition::End(outcome) => Some(outcome),
        }
    }

    /// A renewal is due: open the keepalive stream if there is none, send
    /// a renewal, and wait for its answer (never past the deadline).
    async fn on_renewal_due(&mut self, machine: &mut KeepAlive) -> Transition {
        if machine.keeper.is_none() {
            let opened = tokio::time::timeout_at(
                machine.deadline,
                self.client.lease_keep_alive(machine.lease),
            )
            .await;
            match opened {
                Err(_) => return Transition::End(Outcome::deadline_passed()),
                Ok(Err(err)) if is_lease_not_found(&err) => {
                    return Transition::End(Outcome::Lost("lease not found".into()))
                }
                Ok(Err(err)) => {
                    return Transition::Degraded {
                        reason: err.to_string(),
                    }
                }
                Ok(Ok(pair)) => machine.keeper = Some(pair),
            }
        }
        let Some((sender, responses)) = machine.keeper.as_mut() else {
            unreachable!("the keeper was opened just above");
        };
        let sent_at = Instant::now();
        if sender.keep_alive().await.is_err() {
            return Transition::Degraded {
                reason: "keepalive stream ended".into(),
            };
        }
        match tokio::time::timeout_at(machine.deadline, responses.message()).await {
            Ok(Ok(Some(resp))) if resp.ttl() > 0 => Transition::Renewed {
                deadline: sent_at + Duration::from_secs(resp.ttl() as u64),
            },
            Ok(Ok(Some(_))) => Transition::End(Outcome::Lost("the lease expired".into())),
            Ok(Ok(None) | Err(_)) => Transition::Degraded {
                reason: "keepalive stream ended".into(),
            },
            Err(_) => Transition::End(Outcome::deadline_passed()),
        }
    }

    /// The own key changed, or its watch ended (or, with no watch, it is
    /// time to check the key again).
    async fn on_own_key(&mut self, machine: &mut KeepAlive, change: OwnKey) -> Transition {
        match change {
            OwnKey::Intact => {}
            OwnKey::Changed => {
                tracing::info!(key = %self.key, "registration deleted or overwritten; putting it back");
                if let Err(err) = self.put(machine.lease).await {
                    if err.is_lease_not_found() {
                        return Transition::End(Outcome::Lost("lease not found".into()));
                    }
                    // The watch has nothing more to say about a key that
                    // stays deleted: drop it, so the key is checked (and put
                    // back) again shortly.
                    tracing::warn!(key = %self.key, %err, "could not put the registration back; retrying");
                    machine.own_key = OwnKeyWatch::recheck_soon();
                }
            }
            OwnKey::StreamEnded => {
                let watched =
                    tokio::time::timeout_at(machine.deadline, self.watch_own_key(machine.lease))
                        .await;
                machine.own_key = match watched {
                    Ok(Some(stream)) => OwnKeyWatch::Watching(Box::new(stream)),
                    _ => OwnKeyWatch::recheck_soon(),
                };
            }
        }
        Transition::Stay
    }

    /// A command from the handle, or `None` once every handle is gone.
    async fn on_command(
        &mut self,
        machine: &mut KeepAlive,
        command: Option<Command>,
    ) -> Transition {
        let Some(command) = command else {
            return Transition::End(Outcome::HandleDropped);
        };
        let metadata = matches!(command, Command::Metadata(..));
        if self.handle(command, Some(machine.lease)).await {
            return Transition::End(Outcome::Deregistered);
        }
        if metadata {
            // If that put failed, etcd still holds the old value and the
            // watch will not say so: check the key (and put it back)
            // shortly.
            machine.own_key = OwnKeyWatch::recheck_soon();
        }
        Transition::Stay
    }

    /// A watch on the instance's own key. The key is checked first, and put
    /// back if it is missing or not ours, and the watch starts right after
    /// that check: a change made while no watch was open (during a watch
    /// outage, say) is not missed.
    async fn watch_own_key(&mut self, lease: i64) -> Option<WatchStream> {
        let timeout = self.call_timeout();
        let current = bounded(timeout, self.client.get(self.key.as_str(), None))
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

impl Drop for Task {
    fn drop(&mut self) {
        // However the task ends (deregistered, a panic, its runtime shutting
        // down, an abort), the state's last word says so: `live()` and
        // friends read it to tell why.
        let reason = if std::thread::panicking() {
            "the registration task panicked"
        } else {
            "the registration task was stopped"
        };
        self.state.send_if_modified(|state| {
            if state.has_ended() {
                return false;
            }
            *state = RegistrationState::Stopped {
                reason: reason.into(),
            };
            true
        });
    }
}

/// The keepalive of one lease as a state machine: its schedule, its
/// keepalive stream and its own-key watch. [`KeepAlive::next_event`] waits
/// for the next event, a `Task::on_*` method handles it and returns a
/// [`Transition`], and `Task::apply` carries it out.
struct KeepAlive {
    lease: i64,
    /// A renewal every third of the TTL, as etcd's own client does.
    renew_every: Duration,
    /// When the lease expires unless a renewal comes back first: counted
    /// from when the last answered renewal was sent (absolute, so a slow
    /// reconnect cannot push it out).
    deadline: Instant,
    next_renewal: Instant,
    /// The keepalive stream, when open.
    keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    own_key: OwnKeyWatch,
}

/// What the keepalive waits for.
enum Event {
    RenewalDue,
    DeadlinePassed,
    OwnKey(OwnKey),
    /// A command, or `None` once every handle is gone.
    Command(Option<Command>),
}

/// What an event changes; see `Task::apply`.
enum Transition {
    /// Nothing to publish or reschedule.
    Stay,
    /// A renewal was answered: the lease lives until `deadline`.
    Renewed { deadline: Instant },
    /// Renewals are failing while the lease is within its deadline: reopen
    /// the stream after a backoff.
    Degraded { reason: String },
    /// This lease's keepalive is over.
    End(Outcome),
}

/// The registration's watch on its own key, or, with none, when to check
/// the key again (and open a new watch).
enum OwnKeyWatch {
    /// Boxed: a stream is large, and this enum moves on every change.
    Watching(Box<WatchStream>),
    /// An absolute time, kept across events: renewals come every TTL/3,
    /// and a delay made afresh on each event would never end with a TTL
    /// of 3 s or less.
    RecheckAt(Instant),
}

impl OwnKeyWatch {
    fn recheck_soon() -> Self {
        Self::RecheckAt(Instant::now() + OWN_KEY_RECHECK)
    }
}

impl KeepAlive {
    fn new(lease: i64, ttl: Duration) -> Self {
        let now = Instant::now();
        let renew_every = ttl / 3;
        Self {
            lease,
            renew_every,
            deadline: now + ttl,
            next_renewal: now + renew_every,
            keeper: None,
            own_key: OwnKeyWatch::recheck_soon(),
        }
    }

    /// The next event, in a fixed order of precedence, so that a schedule
    /// replays identically in virtual time (tokio otherwise picks among
    /// ready branches at random).
    async fn next_event(
        &mut self,
        commands: &mut mpsc::Receiver<Command>,
        own_value: &[u8],
    ) -> Event {
        if Instant::now() >= self.deadline {
            return Event::DeadlinePassed;
        }
        let lease = self.lease;
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(self.next_renewal) => Event::RenewalDue,
            () = tokio::time::sleep_until(self.deadline) => Event::DeadlinePassed,
            change = next_own_key_change(&mut self.own_key, own_value, lease) => Event::OwnKey(change),
            command = commands.recv() => Event::Command(command),
        }
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
async fn next_own_key_change(watch: &mut OwnKeyWatch, value: &[u8], lease: i64) -> OwnKey {
    let stream = match watch {
        OwnKeyWatch::Watching(stream) => stream,
        OwnKeyWatch::RecheckAt(at) => {
            tokio::time::sleep_until(*at).await;
            return OwnKey::StreamEnded;
        }
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
