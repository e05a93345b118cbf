//! The state of one fake etcd member, and who may touch it.
//!
//! [`Shared`] is what every service and background task holds: the member's
//! identity (fixed for its life) and the [`Core`], behind one mutex. The core
//! is synchronous and never held across an `.await`: every request takes the
//! lock, does all of its work, and releases it, which makes each request
//! atomic, as a request applied by etcd's raft loop is.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etcd_proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmMember, AlarmType, ResponseHeader,
};
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::faults::FaultState;
use crate::lease::{LeaseError, Lessor};
use crate::mvcc::{KeyRange, Store};
use crate::watch::{self, WatchHub};

/// etcd's default interval between progress notifications.
pub(crate) const DEFAULT_PROGRESS_INTERVAL: Duration = Duration::from_secs(600);

/// etcd's default cluster ID for a single member started with no flags.
pub(crate) const DEFAULT_CLUSTER_ID: u64 = 14_841_639_068_965_178_418;
/// etcd's default member ID for a single member started with no flags.
pub(crate) const DEFAULT_MEMBER_ID: u64 = 10_276_657_743_932_975_437;
/// The raft term of a freshly started single member.
pub(crate) const INITIAL_RAFT_TERM: u64 = 2;
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

/// Everything a request may change.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) store: Store,
    pub(crate) lessor: Lessor,
    pub(crate) watchers: WatchHub,
    pub(crate) raft_term: u64,
    /// Entries "applied by raft": one per write request, as in etcd, whose
    /// index a client sees in `Status`.
    pub(crate) raft_index: u64,
    alarms: BTreeSet<(u64, i32)>,
}

impl Core {
    fn new(identity: &Identity, progress_interval: Duration) -> Self {
        Self {
            store: Store::default(),
            lessor: Lessor::new(identity.member_id),
            watchers: WatchHub::new(identity.cluster_id, identity.member_id, progress_interval),
            raft_term: INITIAL_RAFT_TERM,
            // A fresh etcd member has applied a few configuration entries
            // before it serves its first request.
            raft_index: 5,
            alarms: BTreeSet::new(),
        }
    }

    /// Counts one write request through "raft".
    pub(crate) fn record_raft_entry(&mut self) {
        self.raft_index += 1;
    }

    /// The raised alarms as `Status.errors` lists them (gogoproto's text
    /// form of each `AlarmMember`).
    pub(crate) fn alarm_errors(&self) -> Vec<String> {
        self.alarms
            .iter()
            .map(|&(member, alarm)| {
                let name = AlarmType::try_from(alarm)
                    .map_or_else(|_| alarm.to_string(), |a| a.as_str_name().to_owned());
                if member == 0 {
                    format!("alarm:{name} ")
                } else {
                    format!("memberID:{member} alarm:{name} ")
                }
            })
            .collect()
    }

    /// Whether the NOSPACE alarm is raised (writes that store data fail).
    pub(crate) fn no_space(&self) -> bool {
        self.alarms
            .iter()
            .any(|&(_, alarm)| alarm == AlarmType::Nospace as i32)
    }

    /// Runs `Maintenance.Alarm`: lists, raises or clears alarms. Raising or
    /// clearing `NONE` does nothing; clearing an alarm that is not raised
    /// answers with no alarms.
    pub(crate) fn alarm(&mut self, action: i32, member_id: u64, alarm: i32) -> Vec<AlarmMember> {
        let member = |&(member_id, alarm): &(u64, i32)| AlarmMember { member_id, alarm };
        match AlarmAction::try_from(action) {
            Ok(AlarmAction::Get) => self
                .alarms
                .iter()
                .filter(|&&(_, a)| alarm == AlarmType::None as i32 || a == alarm)
                .map(member)
                .collect(),
            Ok(AlarmAction::Activate) if alarm != AlarmType::None as i32 => {
                self.alarms.insert((member_id, alarm));
                vec![member(&(member_id, alarm))]
            }
            Ok(AlarmAction::Deactivate) if self.alarms.remove(&(member_id, alarm)) => {
                vec![member(&(member_id, alarm))]
            }
            _ => Vec::new(),
        }
    }

    /// The store and the lessor, borrowed together for a KV write.
    pub(crate) fn store_and_leases(&mut self) -> (&mut Store, &mut Lessor) {
        (&mut self.store, &mut self.lessor)
    }

    /// Revokes a lease: its keys are deleted in one write (one revision, if
    /// it had any), in key order.
    pub(crate) fn revoke(&mut self, id: i64) -> Result<(), LeaseError> {
        let lease = self.lessor.remove(id)?;
        self.delete_lease_keys(lease.keys);
        Ok(())
    }

    /// Expires every lease whose deadline is at or before `now`, soonest
    /// first, each as a revoke.
    fn expire_due(&mut self, now: Duration) {
        while let Some(lease) = self.lessor.pop_expired(now) {
            // etcd expires a lease by proposing a revoke through raft.
            self.record_raft_entry();
            self.delete_lease_keys(lease.keys);
        }
    }

    fn delete_lease_keys(&mut self, keys: BTreeSet<bytes::Bytes>) {
        let mut write = self.store.write();
        for key in keys {
            write.delete_range(&KeyRange::Single(key));
        }
        let events = write.into_events();
        self.publish(&events);
    }

    /// Tells watchers about a write's events.
    pub(crate) fn publish(&mut self, events: &[etcd_proto::mvccpb::Event]) {
        if !events.is_empty() {
            let ctx = watch::Context {
                store: &self.store,
                raft_term: self.raft_term,
            };
            self.watchers.publish(events, ctx);
        }
    }

    /// Runs everything due by `now` on the member's clock: lease expiry,
    /// soonest first, then progress notifications.
    pub(crate) fn run_timers(&mut self, now: Duration) {
        self.expire_due(now);
        let ctx = watch::Context {
            store: &self.store,
            raft_term: self.raft_term,
        };
        self.watchers.progress_due(now, ctx);
    }

    /// When [`Core::run_timers`] next has something to do.
    pub(crate) fn next_timer(&self) -> Option<Duration> {
        match (
            self.lessor.next_deadline(),
            self.watchers.next_progress_deadline(),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// What the services share: identity and state.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) identity: Identity,
    pub(crate) clock: Clock,
    /// Wakes the timer task when something may now be due sooner than the
    /// deadline it sleeps towards.
    pub(crate) expiry_wakeup: Notify,
    /// Wakes the watch syncer: a lagging stream has made room.
    pub(crate) watch_sync: Notify,
    /// Injected errors, delays, and the connection switches.
    pub(crate) faults: Arc<FaultState>,
    /// Where in-process connections arrive.
    pub(crate) in_process: crate::net::InProcessListener,
    core: Mutex<Core>,
}

impl Shared {
    pub(crate) fn new(
        identity: Identity,
        clock: Clock,
        progress_interval: Duration,
        seed: u64,
    ) -> Self {
        let core = Mutex::new(Core::new(&identity, progress_interval));
        Self {
            identity,
            clock,
            expiry_wakeup: Notify::new(),
            watch_sync: Notify::new(),
            faults: Arc::new(FaultState::new(seed)),
            in_process: crate::net::InProcessListener::default(),
            core,
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

    /// A response header as etcd fills it: identity and term always, and the
    /// current revision unless the response set one.
    pub(crate) fn fill_header(&self, header: &mut Option<ResponseHeader>, core: &Core) {
        let h = header.get_or_insert_with(Default::default);
        h.cluster_id = self.identity.cluster_id;
        h.member_id = self.identity.member_id;
        h.raft_term = core.raft_term;
        if h.revision == 0 {
            h.revision = core.store.revision();
        }
    }

    /// A header with no revision (what `MemberList` answers with).
    pub(crate) fn header_without_revision(&self, core: &Core) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            cluster_id: self.identity.cluster_id,
            member_id: self.identity.member_id,
            raft_term: core.raft_term,
            revision: 0,
        })
    }
}
