//! One member: who it is, its clock, its fault switches, its listeners, and
//! its [`Core`] behind one lock, with the one way requests reach the core.
//!
//! Every service and background task holds an `Arc<Member>`. A request
//! reaches the core only through [`Member::apply`], which takes the lock,
//! counts the raft entry a write makes, refuses data writes under a NOSPACE
//! alarm, runs the request, tells watchers about its events and fills the
//! response header, in that order, for every RPC alike. The core is never
//! held across an `.await`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etcd_proto::mvccpb::Event;
use tokio::sync::Notify;

use crate::auth::{AuthConfig, AuthInfo, AuthStore};
use crate::clock::Clock;
use crate::core::Core;
use crate::error::EtcdError;
use crate::faults::FaultState;
use crate::header::HasHeader;
use crate::pipe::InProcessListener;

/// etcd's default interval between progress notifications.
pub(crate) const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(600);
/// etcd's default cluster ID for a single member started with no flags.
pub(crate) const DEFAULT_CLUSTER_ID: u64 = 14_841_639_068_965_178_418;
/// etcd's default member ID for a single member started with no flags.
pub(crate) const DEFAULT_MEMBER_ID: u64 = 10_276_657_743_932_975_437;
/// How long etcd lets a request wait for raft before it answers "request
/// timed out": 5 s plus two election timeouts, at etcd's defaults.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(7);
/// The version the fake reports: the etcd its behaviour is checked against.
pub(crate) const ETCD_VERSION: &str = "3.5.1";

/// Who this member is, as headers, `Status` and `MemberList` report it.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) cluster_id: u64,
    pub(crate) member_id: u64,
    pub(crate) name: String,
    pub(crate) peer_urls: Vec<String>,
    pub(crate) client_urls: Vec<String>,
}

/// How a request goes through the member, as etcd's server decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Served from the member's state, no raft entry (ranges, read-only
    /// txns, status).
    Read,
    /// Proposed through raft: one entry, whether or not it succeeds.
    Write,
    /// A write that stores data, which a NOSPACE alarm refuses (puts,
    /// txns with a put, lease grants: etcd's quota check).
    WriteData,
}

/// What a request did: its response, and the events its write made (none
/// for a read, or a write that changed nothing).
#[derive(Debug)]
pub(crate) struct Applied<R> {
    pub(crate) response: R,
    pub(crate) events: Option<Arc<[Event]>>,
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
    pub(crate) fn with_events(response: R, events: Arc<[Event]>) -> Self {
        Self {
            response,
            events: Some(events),
        }
    }
}

/// One member's identity and state; what every service and task shares.
#[derive(Debug)]
pub(crate) struct Member {
    pub(crate) identity: Identity,
    pub(crate) clock: Clock,
    /// Wakes the timer task when something may now be due sooner than the
    /// deadline it sleeps towards.
    pub(crate) timer_wakeup: Notify,
    /// Wakes the watch syncer: a lagging stream has made room.
    pub(crate) watch_sync: Notify,
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
    core: Mutex<Core>,
}

impl Member {
    pub(crate) fn new(
        identity: Identity,
        clock: Clock,
        progress_interval: Duration,
        seed: u64,
        auth: AuthConfig,
    ) -> Self {
        let auth = AuthStore::new(auth, seed, clock.unix_time_at_zero());
        let core = Core::new(
            identity.cluster_id,
            identity.member_id,
            progress_interval,
            auth,
        );
        Self {
            identity,
            clock,
            timer_wakeup: Notify::new(),
            watch_sync: Notify::new(),
            faults: Arc::new(FaultState::new(seed)),
            metrics: Arc::default(),
            in_process: Arc::default(),
            internal: Arc::default(),
            core: Mutex::new(core),
        }
    }

    /// Who the member is, as a snapshot records it.
    pub(crate) fn membership(&self) -> crate::snapshot::Membership<'_> {
        crate::snapshot::Membership {
            member_id: self.identity.member_id,
            name: &self.identity.name,
            peer_urls: &self.identity.peer_urls,
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

    /// Runs one request against the core: `arrive` first (who the caller
    /// is, and the checks etcd makes before a request goes through raft),
    /// then the raft entry and quota check its `access` calls for, then
    /// `request` itself (given the caller and the member's time), then its
    /// events to the watchers and the header to its response. A failed
    /// request publishes nothing.
    pub(crate) fn apply<R: HasHeader>(
        &self,
        access: Access,
        arrive: impl FnOnce(&mut Core, Duration) -> Result<Option<AuthInfo>, EtcdError>,
        request: impl FnOnce(&mut Core, Option<&AuthInfo>, Duration) -> Result<Applied<R>, EtcdError>,
    ) -> Result<R, EtcdError> {
        let now = self.clock.now();
        let mut core = self.lock();
        let caller = arrive(&mut core, now)?;
        if access != Access::Read {
            core.record_raft_entry();
        }
        if access == Access::WriteData && core.no_space() {
            return Err(EtcdError::NoSpace);
        }
        let Applied {
            mut response,
            events,
        } = request(&mut core, caller.as_ref(), now)?;
        if let Some(events) = events {
            core.publish(&events);
        }
        let revision = core.store.revision();
        core.header_source().fill(response.header_mut(), revision);
        Ok(response)
    }
}
