//! One member: who it is, its fault switches, its listeners, and the
//! [`Shared`] state of its cluster (the [`Core`] behind one lock, the clock),
//! with the one way requests reach the core.
//!
//! Every service and background task holds an `Arc<Member>`; the members
//! of a cluster hold the same `Arc<Shared>`. A request first waits, if its
//! member is out of touch with the leader, as etcd's would
//! ([`Member::wait_for_route`]), then reaches the core only through
//! [`Member::apply`], which takes the lock,
//! counts the raft entry a write makes, refuses data writes under a NOSPACE
//! alarm, runs the request, tells watchers about its events and fills the
//! response header, in that order, for every RPC alike. The core is never
//! held across an `.await`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etcd_proto::mvccpb::Event;
use tokio::sync::Notify;

use crate::auth::{AuthConfig, AuthInfo, AuthStore};
use crate::clock::Clock;
use crate::cluster::{Cluster, Gate, Path};
use crate::core::{Applier, Core};
use crate::error::EtcdError;
use crate::faults::FaultState;
use crate::header::HasHeader;
use crate::pipe::InProcessListener;

/// etcd's default interval between progress notifications.
pub(crate) const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(600);
/// How long etcd lets a request wait for raft before it answers "request
/// timed out": 5 s plus two election timeouts, at etcd's defaults.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);
/// The version the fake reports: the etcd its behaviour is checked against.
pub(crate) const ETCD_VERSION: &str = "3.5.1";

/// How a request goes through the member, as etcd's server decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Served from the member's state, no raft entry (ranges, read-only
    /// txns, status).
    Read,
    /// Proposed through raft: one entry, whether or not it succeeds.
    Write,
    /// A write that etcd's KV and lease applier makes, which a CORRUPT
    /// alarm refuses (deletes, txns that write, compactions, revokes).
    WriteKv,
    /// A KV or lease write that stores data, which a NOSPACE alarm refuses
    /// too (puts, txns with a put, lease grants: etcd's quota check).
    WriteData,
}

/// What a request did: its response, and the events its write made (none
/// for a read, or a write that changed nothing).
#[derive(Debug)]
pub(crate) struct Applied<R> {
    pub(crate) response: R,
    pub(crate) events: Option<Vec<Event>>,
}

impl<R> Applied<R> {
    /// A response with no events to publish.
    pub(crate) fn response(response: R) -> Self {
        Self {
            response,
            events: None,
        }
    }

    /// A write's response and the events it made.
    pub(crate) fn with_events(response: R, events: Vec<Event>) -> Self {
        Self {
            response,
            events: Some(events),
        }
    }
}

/// What every member of one cluster shares: the state, the clock, and the
/// signals the cluster's tasks wait on.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) clock: Clock,
    /// Wakes the timer task when something may now be due sooner than the
    /// deadline it sleeps towards.
    pub(crate) timer_wakeup: Notify,
    /// Wakes the watch syncer: a lagging stream has made room.
    pub(crate) watch_sync: Notify,
    /// Told of every change of membership, leadership or reachability:
    /// requests waiting for a leader, held watch streams, and servers of
    /// removed members wait on it.
    pub(crate) changes: tokio::sync::watch::Sender<()>,
    /// Whether every member is a voter in touch with a working leader:
    /// then no request waits or reads stale, and the pipeline skips the
    /// per-request look at the cluster (the common case costs nothing).
    all_in_sync: AtomicBool,
    core: Mutex<Core>,
}

impl Shared {
    pub(crate) fn new(
        cluster: Cluster,
        clock: Clock,
        progress_interval: Duration,
        seed: u64,
        auth: AuthConfig,
    ) -> Self {
        let auth = AuthStore::new(auth, seed, clock.unix_time_at_zero());
        Self {
            clock,
            timer_wakeup: Notify::new(),
            watch_sync: Notify::new(),
            changes: tokio::sync::watch::Sender::new(()),
            all_in_sync: AtomicBool::new(true),
            core: Mutex::new(Core::new(cluster, progress_interval, auth)),
        }
    }

    /// Locks the state. A panic while it was held (a bug) must not take every
    /// other client down with it, so a poisoned lock is still used: each
    /// request validates before it changes anything, so the state is whole.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes the cluster (membership, reachability), then settles
    /// leadership and views and tells everyone waiting on a change.
    pub(crate) fn change_cluster<T>(&self, change: impl FnOnce(&mut Core) -> T) -> T {
        let now = self.clock.now();
        let outcome = {
            let mut core = self.lock();
            let outcome = change(&mut core);
            core.reconcile_cluster(now);
            outcome
        };
        self.cluster_changed();
        outcome
    }

    /// Tells everyone waiting on the cluster that it changed (after a
    /// reconcile).
    pub(crate) fn cluster_changed(&self) {
        let all_in_sync = self.lock().cluster.all_in_sync();
        self.all_in_sync.store(all_in_sync, Ordering::Release);
        self.changes.send_replace(());
        // Leases may expire again, or not; the timer re-reads its deadline.
        self.timer_wakeup.notify_one();
    }
}

/// One member: who it is, its faults and listeners, and the cluster it
/// shares with the others.
#[derive(Debug)]
pub(crate) struct Member {
    /// The member's ID. Its name and URLs are in the cluster's records,
    /// which membership changes update.
    id: u64,
    pub(crate) shared: Arc<Shared>,
    /// Injected errors, delays, and the connection switches.
    pub(crate) faults: Arc<FaultState>,
    /// Calls counted for `/metrics`.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// Where in-process connections arrive.
    pub(crate) in_process: Arc<InProcessListener>,
    /// Where the member's own client (Lock, Election) connects: served
    /// apart, past every injected fault, as etcd's in-process client calls
    /// its handlers directly.
    pub(crate) internal: Arc<InProcessListener>,
}

impl Member {
    pub(crate) fn new(id: u64, shared: Arc<Shared>, seed: u64) -> Self {
        Self {
            id,
            shared,
            faults: Arc::new(FaultState::new(seed)),
            metrics: Arc::default(),
            in_process: Arc::default(),
            internal: Arc::default(),
        }
    }

    /// The member's ID.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Waits, if it must, until this member can serve a request taking
    /// `route`: at once when it is in sync with a leader; at once too, from
    /// its stale view, for a local read; otherwise until it is back in sync
    /// or the request timeout passes on the cluster's clock, when the
    /// request fails with etcd's error for its path. Returns whether to
    /// read from the stale view.
    pub(crate) async fn wait_for_route(&self, route: Route) -> Result<bool, EtcdError> {
        if self.shared.all_in_sync.load(Ordering::Acquire) {
            return Ok(false);
        }
        let gate = |core: &Core| {
            core.cluster.gate(
                self.id(),
                route.path,
                route.learner_ok,
                route.require_leader,
            )
        };
        let first = gate(&self.lock())?;
        let mut changes = match first {
            Gate::Current => return Ok(false),
            Gate::Stale => return Ok(true),
            Gate::Wait(_) => self.shared.changes.subscribe(),
        };
        let deadline = self.shared.clock.now() + REQUEST_TIMEOUT;
        loop {
            let now = gate(&self.lock())?;
            match now {
                Gate::Current => return Ok(false),
                Gate::Stale => return Ok(true),
                Gate::Wait(err) => {
                    tokio::select! {
                        changed = changes.changed() => if changed.is_err() {
                            return Err(EtcdError::ServerStopped);
                        },
                        () = self.shared.clock.sleep_until(deadline) => return Err(err),
                    }
                }
            }
        }
    }

    /// What etcd's stream interceptor checks before a stream opens: a
    /// learner serves none, and with `hasleader` a member without a leader
    /// refuses it at once.
    pub(crate) async fn admit_stream<Q>(
        &self,
        request: &tonic::Request<Q>,
    ) -> Result<(), EtcdError> {
        self.wait_for_route(Route {
            path: Path::Local,
            learner_ok: false,
            require_leader: crate::service::requires_leader(request),
        })
        .await
        .map(drop)
    }

    /// Locks the cluster's state (see [`Shared::lock`]).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        self.shared.lock()
    }

    /// What this member's response headers say now.
    pub(crate) fn header_source(&self, core: &Core) -> crate::header::HeaderSource {
        core.header_source(self.id())
    }

    /// Runs one request against the core: `arrive` first (who the caller
    /// is, and the checks etcd makes before a request goes through raft),
    /// then the raft entry and quota check its `access` calls for, then
    /// `request` itself (given the caller and the member's time), then its
    /// events to the watchers and the header to its response. A failed
    /// request publishes nothing.
    pub(crate) fn apply<R: HasHeader>(
        &self,
        access: Access,
        stale: bool,
        arrive: impl FnOnce(&mut Core, Duration) -> Result<Option<AuthInfo>, EtcdError>,
        request: impl FnOnce(&mut Core, Option<&AuthInfo>, Duration) -> Result<Applied<R>, EtcdError>,
    ) -> Result<R, EtcdError> {
        let now = self.shared.clock.now();
        let mut core = self.lock();
        if stale {
            // A local read from what this member has applied; its header
            // says so.
            return core.as_seen_by(self.id(), |core| {
                let caller = arrive(core, now)?;
                let mut response = request(core, caller.as_ref(), now)?.response;
                let revision = core.store.revision();
                self.header_source(core)
                    .fill(response.header_mut(), revision);
                Ok(response)
            });
        }
        let caller = arrive(&mut core, now)?;
        if access != Access::Read {
            core.record_raft_entry();
        }
        match (core.applier(), access) {
            (Applier::Corrupt, Access::WriteKv | Access::WriteData) => {
                return Err(EtcdError::Corrupt)
            }
            (Applier::Capped, Access::WriteData) => return Err(EtcdError::NoSpace),
            _ => {}
        }
        let Applied {
            mut response,
            events,
        } = request(&mut core, caller.as_ref(), now)?;
        if let Some(events) = events {
            core.publish(events);
        }
        let revision = core.store.revision();
        self.header_source(&core)
            .fill(response.header_mut(), revision);
        Ok(response)
    }
}

/// How a request reaches the data, for [`Member::wait_for_route`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route {
    pub(crate) path: Path,
    /// Whether a learner serves it (only `Status` and serializable ranges).
    pub(crate) learner_ok: bool,
    /// Whether the client asked for a leader (etcd's `hasleader` metadata).
    pub(crate) require_leader: bool,
}
