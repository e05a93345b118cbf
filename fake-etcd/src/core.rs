//! The state of one fake etcd member: everything a request may change.
//!
//! [`Core`] is synchronous and knows nothing of gRPC, the network or time
//! sources: a caller passes the time in, and gets etcd's answers and errors
//! back as data. The member (`member.rs`) keeps it behind one lock and
//! runs every request through it, which makes each request atomic, as a
//! request applied by etcd's raft loop is.

use std::collections::BTreeSet;
use std::time::Duration;

use etcd_proto::etcdserverpb::{alarm_request::AlarmAction, AlarmMember, AlarmType};
use etcd_proto::mvccpb::Event;

use crate::auth::AuthStore;
use crate::cluster::{Cluster, Election, StaleView};
use crate::error::EtcdError;
use crate::header::HeaderSource;
use crate::lease::{LeaseError, LeaseKeys, Lessor};
use crate::mvcc::Store;
use crate::watch::{self, WatchHub};

/// The raft term of a freshly started single member.
pub(crate) const INITIAL_RAFT_TERM: u64 = 2;
/// The cluster version a 3.5 member records and reports (major.minor;
/// the patch is always 0).
pub(crate) const CLUSTER_VERSION: (u64, u64) = (3, 5);

/// [`CLUSTER_VERSION`] as etcd writes it: `3.5.0`.
pub(crate) fn cluster_version() -> String {
    let (major, minor) = CLUSTER_VERSION;
    format!("{major}.{minor}.0")
}

/// A cluster downgrade, once one was enabled or cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Downgrade {
    pub(crate) enabled: bool,
    /// `major.minor.0`, or empty once cancelled.
    pub(crate) target_version: String,
}

/// A downgrade target as etcd reads one: `X.Y.Z` (with an optional
/// pre-release and build), or `X.Y`; the patch and the rest are dropped.
fn downgrade_target(version: &str) -> Option<(u64, u64)> {
    /// Dot-separated identifiers of `[0-9A-Za-z-]`, none empty (semver's
    /// pre-release and build syntax, as go-semver checks it).
    fn identifiers(text: &str) -> bool {
        text.split('.')
            .all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    }
    fn semver(text: &str) -> Option<(u64, u64)> {
        let (text, build) = match text.split_once('+') {
            Some((text, build)) => (text, Some(build)),
            None => (text, None),
        };
        let (core, pre) = match text.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (text, None),
        };
        if !build.is_none_or(identifiers) || !pre.is_none_or(identifiers) {
            return None;
        }
        let parts: Vec<&str> = core.split('.').collect();
        // go-semver parses each number as an int64.
        let number = |part: &str| -> Option<u64> {
            (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                .then(|| part.parse::<i64>().ok().map(|n| n as u64))
                .flatten()
        };
        match parts.as_slice() {
            [major, minor, patch] => {
                number(patch)?;
                Some((number(major)?, number(minor)?))
            }
            _ => None,
        }
    }
    semver(version).or_else(|| semver(&format!("{version}.0")))
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
    /// What the raised alarms make of etcd's applier.
    applier: Applier,
    /// Members, leadership, reachability.
    pub(crate) cluster: Cluster,
    pub(crate) downgrade: Option<Downgrade>,
    /// Users, roles, permissions and tokens.
    pub(crate) auth: AuthStore,
}

impl Core {
    pub(crate) fn new(cluster: Cluster, progress_interval: Duration, auth: AuthStore) -> Self {
        // Lease IDs start from the first member's ID, as from etcd's.
        let first_member = cluster.members().next().map_or(0, |m| m.id);
        Self {
            store: Store::default(),
            lessor: Lessor::new(first_member),
            watchers: WatchHub::new(progress_interval),
            raft_term: INITIAL_RAFT_TERM,
            // A fresh etcd 3.5 member has applied four entries before it
            // serves its first request: its own addition to the cluster,
            // the new leader's empty entry, its published attributes and
            // the cluster version.
            raft_index: 4,
            alarms: BTreeSet::new(),
            applier: Applier::Normal,
            cluster,
            downgrade: None,
            auth,
        }
    }

    /// `Downgrade(VALIDATE)`: whether the cluster may be downgraded to
    /// `version` (only to the previous minor version, and not while a
    /// downgrade is under way), in etcd's order of checks.
    pub(crate) fn validate_downgrade(&self, version: &str) -> Result<(u64, u64), EtcdError> {
        let target = downgrade_target(version).ok_or(EtcdError::WrongDowngradeVersionFormat)?;
        let (major, minor) = CLUSTER_VERSION;
        if target != (major, minor.saturating_sub(1)) {
            return Err(EtcdError::InvalidDowngradeTargetVersion);
        }
        if self.downgrade.as_ref().is_some_and(|d| d.enabled) {
            return Err(EtcdError::DowngradeInProcess);
        }
        Ok(target)
    }

    /// `Downgrade(ENABLE)`: validates, then records the downgrade.
    pub(crate) fn enable_downgrade(&mut self, version: &str) -> Result<(), EtcdError> {
        let (major, minor) = self.validate_downgrade(version)?;
        self.downgrade = Some(Downgrade {
            enabled: true,
            target_version: format!("{major}.{minor}.0"),
        });
        Ok(())
    }

    /// `Downgrade(CANCEL)`: ends the downgrade under way.
    pub(crate) fn cancel_downgrade(&mut self) -> Result<(), EtcdError> {
        if !self.downgrade.as_ref().is_some_and(|d| d.enabled) {
            return Err(EtcdError::NoInflightDowngrade);
        }
        self.downgrade = Some(Downgrade {
            enabled: false,
            target_version: String::new(),
        });
        Ok(())
    }

    /// What member `member_id`'s response headers say now (the term of
    /// its stale view, while it has one: it has not heard of a newer one).
    pub(crate) fn header_source(&self, member_id: u64) -> HeaderSource {
        HeaderSource {
            cluster_id: self.cluster.id,
            member_id,
            raft_term: self
                .cluster
                .stale_view(member_id)
                .map_or(self.raft_term, |v| v.raft_term),
        }
    }

    /// Brings leadership and the members' views up to date after a change
    /// of membership or reachability; an election renews every lease, as a
    /// new leader does.
    pub(crate) fn reconcile_cluster(&mut self, now: Duration) {
        let (store, raft_index, raft_term) = (&self.store, self.raft_index, self.raft_term);
        let current = || StaleView {
            store: store.clone(),
            raft_index,
            raft_term,
        };
        self.cluster.update_links(now);
        if self.cluster.reconcile(raft_index, current) == Election::Elected {
            self.change_leader(now);
        }
    }

    /// Runs `read` against what member `member_id` has applied: its stale
    /// view if it has one (the view is swapped in for the read and back
    /// after it, even if the read panics), else the current state.
    pub(crate) fn as_seen_by<T>(&mut self, member_id: u64, read: impl FnOnce(&mut Core) -> T) -> T {
        let Some(view) = self.cluster.take_stale_view(member_id) else {
            return read(self);
        };
        struct Swapped<'c> {
            core: &'c mut Core,
            member_id: u64,
            view: Option<Box<StaleView>>,
        }
        impl Swapped<'_> {
            fn swap(&mut self) {
                if let Some(view) = self.view.as_deref_mut() {
                    std::mem::swap(&mut self.core.store, &mut view.store);
                    std::mem::swap(&mut self.core.raft_index, &mut view.raft_index);
                    std::mem::swap(&mut self.core.raft_term, &mut view.raft_term);
                }
            }
        }
        impl Drop for Swapped<'_> {
            fn drop(&mut self) {
                self.swap();
                if let Some(view) = self.view.take() {
                    self.core.cluster.put_stale_view(self.member_id, view);
                }
            }
        }
        let mut swapped = Swapped {
            core: self,
            member_id,
            view: Some(view),
        };
        swapped.swap();
        read(swapped.core)
    }

    /// A leader election, as a client sees it: the term goes up by one and,
    /// as a new leader does, every lease is renewed to its full TTL.
    pub(crate) fn change_leader(&mut self, now: Duration) {
        self.raft_term += 1;
        self.lessor.renew_all(now);
    }

    /// The watch hub, with what its calls read of the rest of the core.
    pub(crate) fn watch(&mut self) -> (&mut WatchHub, watch::Context<'_>) {
        // The watch service puts each stream's own member in its headers.
        let header = self.header_source(0);
        let ctx = watch::Context {
            store: &self.store,
            header,
        };
        (&mut self.watchers, ctx)
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

    /// The raised alarms: `(member, alarm type)`.
    pub(crate) fn alarms(&self) -> impl Iterator<Item = (u64, i32)> + '_ {
        self.alarms.iter().copied()
    }

    /// Raises an alarm (restoring one from a snapshot), and sets the
    /// applier as etcd's `restoreAlarms` does at start: CORRUPT over
    /// NOSPACE.
    pub(crate) fn raise_alarm(&mut self, member: u64, alarm: i32) {
        if alarm != AlarmType::None as i32 {
            self.alarms.insert((member, alarm));
        }
        let raised = |kind: AlarmType| self.alarms.iter().any(|&(_, a)| a == kind as i32);
        self.applier = if raised(AlarmType::Corrupt) {
            Applier::Corrupt
        } else if raised(AlarmType::Nospace) {
            Applier::Capped
        } else {
            Applier::Normal
        };
    }

    /// etcd's applier as the raised alarms leave it.
    pub(crate) fn applier(&self) -> Applier {
        self.applier
    }

    /// Runs `Maintenance.Alarm`: lists, raises or clears alarms. Raising or
    /// clearing `NONE` does nothing; clearing an alarm that is not raised
    /// answers with no alarms. As in etcd, the first alarm of a kind sets
    /// the applier (CORRUPT refuses every KV and lease write, NOSPACE
    /// those that store data), and clearing the last of NOSPACE or CORRUPT
    /// sets it back to normal, whatever else is still raised.
    pub(crate) fn alarm(&mut self, action: i32, member_id: u64, alarm: i32) -> Vec<AlarmMember> {
        let member = |&(member_id, alarm): &(u64, i32)| AlarmMember { member_id, alarm };
        let count =
            |alarms: &BTreeSet<(u64, i32)>| alarms.iter().filter(|&&(_, a)| a == alarm).count();
        let before = count(&self.alarms);
        match AlarmAction::try_from(action) {
            Ok(AlarmAction::Get) => self
                .alarms
                .iter()
                .filter(|&&(_, a)| alarm == AlarmType::None as i32 || a == alarm)
                .map(member)
                .collect(),
            Ok(AlarmAction::Activate) if alarm != AlarmType::None as i32 => {
                self.alarms.insert((member_id, alarm));
                if before == 0 {
                    match AlarmType::try_from(alarm) {
                        Ok(AlarmType::Corrupt) => self.applier = Applier::Corrupt,
                        Ok(AlarmType::Nospace) => self.applier = Applier::Capped,
                        _ => {}
                    }
                }
                vec![member(&(member_id, alarm))]
            }
            Ok(AlarmAction::Deactivate) if self.alarms.remove(&(member_id, alarm)) => {
                let cleared = count(&self.alarms) == 0;
                let resets = matches!(
                    AlarmType::try_from(alarm),
                    Ok(AlarmType::Corrupt | AlarmType::Nospace)
                );
                if cleared && resets {
                    self.applier = Applier::Normal;
                }
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
    /// it had any), in key order. Returns that write's events, for the
    /// caller to publish.
    pub(crate) fn revoke(&mut self, id: i64) -> Result<Vec<Event>, LeaseError> {
        let lease = self.lessor.remove(id)?;
        Ok(self.delete_lease_keys(lease.keys))
    }

    /// Expires one lease now, as its TTL lapsing would: a revoke proposed
    /// through raft, its DELETE events published.
    pub(crate) fn expire(&mut self, id: i64) -> Result<(), LeaseError> {
        let lease = self.lessor.remove(id)?;
        self.expired(lease.keys);
        Ok(())
    }

    /// Expires every lease whose deadline is at or before `now`, soonest
    /// first, each as a revoke.
    fn expire_due(&mut self, now: Duration) {
        while let Some(lease) = self.lessor.pop_expired(now) {
            self.expired(lease.keys);
        }
    }

    fn expired(&mut self, keys: LeaseKeys) {
        // etcd expires a lease by proposing a revoke through raft.
        self.record_raft_entry();
        let events = self.delete_lease_keys(keys);
        self.publish(events);
    }

    fn delete_lease_keys(&mut self, keys: LeaseKeys) -> Vec<Event> {
        let mut write = self.store.write();
        for key in keys {
            write.delete(&key);
        }
        write.into_events()
    }

    /// Tells watchers about a write's events.
    pub(crate) fn publish(&mut self, events: Vec<Event>) {
        if !events.is_empty() {
            let (watchers, ctx) = self.watch();
            watchers.publish(events, ctx);
        }
    }

    /// Catches up the watchers that fell behind, as far as their streams
    /// have room.
    pub(crate) fn sync_watchers(&mut self) {
        let (watchers, ctx) = self.watch();
        watchers.sync(ctx);
    }

    /// Runs everything due by `now` on the member's clock: lease expiry,
    /// soonest first (only a leader expires leases: without one they wait,
    /// and the next leader renews them), then progress notifications.
    pub(crate) fn run_timers(&mut self, now: Duration) {
        if self.leases_expire() {
            self.expire_due(now);
        }
        let (watchers, ctx) = self.watch();
        watchers.progress_due(now, ctx);
    }

    /// Whether due leases expire: only a leader expires them, by proposing
    /// revokes, which a CORRUPT alarm refuses (etcd's lessor retries them
    /// until the alarm is cleared).
    fn leases_expire(&self) -> bool {
        self.cluster.effective_leader().is_some() && self.applier != Applier::Corrupt
    }

    /// When [`Core::run_timers`] next has something to do.
    pub(crate) fn next_timer(&self) -> Option<Duration> {
        // Without a leader no lease expires: its deadline is no timer (one
        // already past would wake the timer task in a loop).
        let lease_deadline = self
            .leases_expire()
            .then(|| self.lessor.next_deadline())
            .flatten();
        match (lease_deadline, self.watchers.next_progress_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// etcd's applier as its alarms leave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applier {
    Normal,
    /// NOSPACE: writes that store data are refused.
    Capped,
    /// CORRUPT: every KV and lease write is refused.
    Corrupt,
}

#[cfg(test)]
mod downgrade_tests {
    use super::*;

    #[test]
    fn downgrade_targets_parse_as_etcd_parses_them() {
        assert_eq!(downgrade_target("3.4"), Some((3, 4)));
        assert_eq!(downgrade_target("3.4.0"), Some((3, 4)));
        assert_eq!(downgrade_target("3.4.7-rc.1+build"), Some((3, 4)));
        for bad in [
            "",
            "3",
            "x.y",
            "3.4.x",
            "3..4",
            "3.4.0.0",
            " 3.4",
            "3.4.0-a..b",
            "3.4.0+x+y",
            "3.99999999999999999999.0",
        ] {
            assert_eq!(downgrade_target(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_downgrade_goes_one_minor_version_back_once_at_a_time() {
        let auth = crate::auth::AuthStore::new(Default::default(), 0, Duration::ZERO);
        let cluster = Cluster::new(1, crate::cluster::DEFAULT_CLUSTER_TOKEN, Vec::new());
        let mut core = Core::new(cluster, Duration::from_secs(600), auth);
        assert_eq!(
            core.validate_downgrade("nope"),
            Err(EtcdError::WrongDowngradeVersionFormat)
        );
        for wrong in ["3.3", "3.5", "4.4"] {
            assert_eq!(
                core.validate_downgrade(wrong),
                Err(EtcdError::InvalidDowngradeTargetVersion)
            );
        }
        assert_eq!(core.cancel_downgrade(), Err(EtcdError::NoInflightDowngrade));
        core.enable_downgrade("3.4").unwrap();
        assert_eq!(
            core.validate_downgrade("3.4"),
            Err(EtcdError::DowngradeInProcess)
        );
        core.cancel_downgrade().unwrap();
        assert_eq!(core.validate_downgrade("3.4.0"), Ok((3, 4)));
    }
}
