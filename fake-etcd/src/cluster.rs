//! The cluster as raft would make it: who the members are, who leads, who
//! can reach whom, and what each member has applied.
//!
//! The fake keeps one store for the whole cluster (in the [`Core`]), which
//! is what raft guarantees to clients of a healthy cluster: a write
//! acknowledged by any member is seen by every linearizable read after it.
//! What raft lets differ between members is modelled here, as data:
//!
//! - **leadership**: a leader exists while a quorum of voters is up (running,
//!   not paused, not isolated) and connected; losing it, or losing the
//!   leader, holds an election once a quorum is back (term + 1, every lease
//!   renewed, as etcd's new leader does);
//! - **what a member has applied**: a member in touch with the leader is in
//!   sync; one that is not (isolated, paused, stopped, or in a cluster with
//!   no leader) keeps a copy of the state as it was when it lost touch
//!   ([`StaleView`]), which its serializable reads and `Status` answer from,
//!   until it is back in sync;
//! - **membership**: etcd's `MemberAdd`, `MemberRemove`, `MemberUpdate` and
//!   `MemberPromote`, with their checks and errors, learners included.
//!
//! A paused member is a frozen process (SIGSTOP): if it led, it still
//! believes it does, so when it comes back before anyone else was elected
//! the same leader and term return. An isolated or stopped leader, or one
//! that cannot reach a quorum, steps down, as etcd's check-quorum makes it.
//! Transitions that take etcd an election timeout are immediate here.
//!
//! [`Core`]: crate::core::Core

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sha1::{Digest, Sha1};

use crate::error::EtcdError;
use crate::mvcc::Store;

/// etcd's `--initial-cluster-token` unless set.
pub(crate) const DEFAULT_CLUSTER_TOKEN: &str = "etcd-cluster";

/// A member's ID as etcd derives it: the first 8 bytes (big-endian) of
/// sha1(sorted peer URLs ‖ cluster token ‖ Unix seconds, for a member
/// added at run time).
pub(crate) fn member_id(peer_urls: &[String], token: &str, added_at_unix: Option<u64>) -> u64 {
    let mut sorted = peer_urls.to_vec();
    sorted.sort();
    let mut hasher = Sha1::new();
    hasher.update(sorted.concat().as_bytes());
    hasher.update(token.as_bytes());
    if let Some(seconds) = added_at_unix {
        hasher.update(seconds.to_string().as_bytes());
    }
    first_u64(&hasher.finalize())
}

/// A cluster's ID as etcd derives it from its initial members' IDs: the
/// first 8 bytes of sha1 over the sorted IDs, each big-endian.
pub(crate) fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut sorted = member_ids.to_vec();
    sorted.sort_unstable();
    let mut hasher = Sha1::new();
    for id in sorted {
        hasher.update(id.to_be_bytes());
    }
    first_u64(&hasher.finalize())
}

fn first_u64(hash: &[u8]) -> u64 {
    let mut first = [0; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_be_bytes(first)
}

/// Whether a list of member URLs is one etcd's `types.NewURLs` takes:
/// not empty, each `http` or `https` with a `host:port` and no path.
pub(crate) fn urls_are_valid(urls: &[String]) -> bool {
    !urls.is_empty() && urls.iter().all(|url| url_is_valid(url))
}

fn url_is_valid(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    if scheme != "http" && scheme != "https" {
        return false;
    }
    // No path, query or fragment; a bare trailing slash is a path too.
    if rest.contains(['/', '?', '#']) {
        return false;
    }
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let Some((host, port)) = host_port.rsplit_once(':') else {
        return false;
    };
    !host.is_empty() && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit())
}

/// What a member's process is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Process {
    /// Added to the cluster, never started.
    NotStarted,
    /// Serving.
    Running,
    /// Frozen (SIGSTOP): no answers, no raft, and no change of mind.
    Paused,
    /// Not running; its port refuses connections.
    Stopped,
}

/// The state a member that lost touch with the leader still serves from.
#[derive(Debug, Clone)]
pub(crate) struct StaleView {
    pub(crate) store: Store,
    pub(crate) raft_index: u64,
    pub(crate) raft_term: u64,
}

/// One member as the cluster knows it.
#[derive(Debug, Clone)]
pub(crate) struct MemberRecord {
    pub(crate) id: u64,
    /// Empty until the member has started and published it.
    pub(crate) name: String,
    pub(crate) peer_urls: Vec<String>,
    /// Empty until the member has started and published them.
    pub(crate) client_urls: Vec<String>,
    pub(crate) is_learner: bool,
    pub(crate) process: Process,
    /// Cut off from the other members (it still answers its clients).
    pub(crate) isolated: bool,
    /// `Some` while the member is out of touch with the leader.
    pub(crate) stale: Option<Box<StaleView>>,
    /// Since when its peers have had a working connection to it.
    pub(crate) link: Link,
}

/// A member's connection to its peers, as etcd's transport reports it
/// (`ActiveSince`): membership changes need links older than
/// [`HEALTH_INTERVAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// Not connected: stopped, never started, or cut off.
    Down,
    /// Connected since this time on the fake's clock.
    Since(Duration),
    /// Connected since before anything the fake's clock has seen: the
    /// initial members start settled, as if the cluster had been up for a
    /// while, so that a test may change membership at once.
    Settled,
}

/// A majority of `voters` (etcd's `quorum`).
fn majority_of(voters: usize) -> usize {
    voters / 2 + 1
}

/// etcd's `HealthInterval`: how long a peer connection must have been up
/// before a membership change counts it.
pub(crate) const HEALTH_INTERVAL: Duration = Duration::from_secs(5);

impl MemberRecord {
    /// Running, and reachable by the others.
    fn up(&self) -> bool {
        self.process == Process::Running && !self.isolated
    }

    /// Connected to its peers. A frozen process keeps its sockets, and
    /// its peers keep counting it: etcd 3.5.1 took a learner at once from
    /// a leader whose follower had just been thawed after 7 s of SIGSTOP
    /// (the conformance test `membership_waits_for_a_member_that_was_frozen`).
    fn linked(&self) -> bool {
        matches!(self.process, Process::Running | Process::Paused) && !self.isolated
    }

    /// Whether its link has been up for longer than [`HEALTH_INTERVAL`]
    /// (etcd's `ActiveSince(…).Before(now - HealthInterval)`).
    fn settled(&self, now: Duration) -> bool {
        self.linked()
            && match self.link {
                Link::Down => false,
                Link::Since(since) => since + HEALTH_INTERVAL < now,
                Link::Settled => true,
            }
    }

    /// Whether the member has ever started.
    pub(crate) fn started(&self) -> bool {
        self.process != Process::NotStarted
    }
}

/// How a request reaches the data, which decides what a member out of
/// touch with the leader does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    /// Answered from the member's own state: serializable reads, `Status`,
    /// a plain `MemberList`, `LeaseLeases`, hashes, watch creation.
    Local,
    /// A linearizable read: the leader confirms the read index first.
    ReadIndex,
    /// Proposed through raft: every write.
    Proposal,
    /// Forwarded to the leader: lease renewals and TTL lookups.
    Leader,
}

/// What a member does with a request now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Serve it from the current state.
    Current,
    /// Serve it from the member's stale view.
    Stale,
    /// Wait for the member to be back in sync; fail with this error at
    /// the request timeout.
    Wait(EtcdError),
}

/// Members, leadership and reachability.
#[derive(Debug, Clone)]
pub(crate) struct Cluster {
    pub(crate) id: u64,
    pub(crate) token: String,
    members: BTreeMap<u64, MemberRecord>,
    removed: BTreeSet<u64>,
    /// The member that holds leadership; it may be paused, and then no one
    /// is served until it is back or another is elected.
    leader: Option<u64>,
}

/// An initial member: name, peer URLs and client URLs.
#[derive(Debug, Clone)]
pub(crate) struct InitialMember {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) peer_urls: Vec<String>,
    pub(crate) client_urls: Vec<String>,
}

/// What a change of reachability did to leadership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Election {
    /// Nothing changed.
    None,
    /// A new leader was elected: the term goes up, leases are renewed.
    Elected,
}

impl Cluster {
    /// A cluster of running members, the first of which leads (each of
    /// etcd's members campaigns at once; one wins).
    pub(crate) fn new(id: u64, token: &str, initial: Vec<InitialMember>) -> Self {
        let leader = initial.first().map(|m| m.id);
        let members = initial
            .into_iter()
            .map(|m| {
                let record = MemberRecord {
                    id: m.id,
                    name: m.name,
                    peer_urls: m.peer_urls,
                    client_urls: m.client_urls,
                    is_learner: false,
                    process: Process::Running,
                    isolated: false,
                    stale: None,
                    link: Link::Settled,
                };
                (m.id, record)
            })
            .collect();
        Self {
            id,
            token: token.to_owned(),
            members,
            removed: BTreeSet::new(),
            leader,
        }
    }

    /// Every member, by ID (as `MemberList` lists them).
    pub(crate) fn members(&self) -> impl Iterator<Item = &MemberRecord> {
        self.members.values()
    }

    /// A member by ID.
    pub(crate) fn member(&self, id: u64) -> Option<&MemberRecord> {
        self.members.get(&id)
    }

    /// The IDs of the members removed, in order.
    pub(crate) fn removed(&self) -> impl Iterator<Item = u64> + '_ {
        self.removed.iter().copied()
    }

    /// Whether the member was removed from the cluster.
    pub(crate) fn was_removed(&self, id: u64) -> bool {
        self.removed.contains(&id)
    }

    /// The leader the member sees, if it sees one (what `Status.leader`
    /// reports: 0 for none).
    pub(crate) fn leader_seen_by(&self, id: u64) -> Option<u64> {
        if self.in_sync(id) {
            self.leader
        } else {
            None
        }
    }

    /// The leader every member in touch sees, if there is one.
    pub(crate) fn effective_leader(&self) -> Option<u64> {
        let leader = self.leader?;
        (self.members.get(&leader)?.up() && self.has_quorum()).then_some(leader)
    }

    /// Whether the member is in touch with a working leader.
    pub(crate) fn in_sync(&self, id: u64) -> bool {
        self.effective_leader().is_some() && self.members.get(&id).is_some_and(|m| m.up())
    }

    /// Whether every member is a voter in touch with a working leader: no
    /// request of any member waits, reads stale or is refused by the
    /// cluster.
    pub(crate) fn all_in_sync(&self) -> bool {
        self.members
            .values()
            .all(|m| !m.is_learner && self.in_sync(m.id))
    }

    /// The member's stale view, while it is out of touch.
    pub(crate) fn stale_view(&self, id: u64) -> Option<&StaleView> {
        self.members.get(&id)?.stale.as_deref()
    }

    fn voters(&self) -> impl Iterator<Item = &MemberRecord> {
        self.members.values().filter(|m| !m.is_learner)
    }

    fn quorum(&self) -> usize {
        self.voters().count() / 2 + 1
    }

    fn has_quorum(&self) -> bool {
        self.voters().filter(|m| m.up()).count() >= self.quorum()
    }

    /// What member `id` does with a request taking `path`; `learner_ok`
    /// says whether a learner serves it, `require_leader` whether the
    /// client asked for a leader (etcd's `hasleader` metadata). In etcd's
    /// order: the learner check, the leader requirement, then the path.
    pub(crate) fn gate(
        &self,
        id: u64,
        path: Path,
        learner_ok: bool,
        require_leader: bool,
    ) -> Result<Gate, EtcdError> {
        if !learner_ok && self.members.get(&id).is_some_and(|m| m.is_learner) {
            return Err(EtcdError::NotSupportedForLearner);
        }
        let in_sync = self.in_sync(id);
        if require_leader && !in_sync {
            return Err(EtcdError::NoLeader);
        }
        if in_sync {
            return Ok(Gate::Current);
        }
        Ok(match path {
            Path::Local if self.stale_view(id).is_some() => Gate::Stale,
            Path::Local => Gate::Current,
            Path::ReadIndex => Gate::Wait(EtcdError::RequestTimedOut),
            Path::Proposal => Gate::Wait(EtcdError::ProposalDeadlineExceeded),
            Path::Leader => Gate::Wait(EtcdError::NoLeader),
        })
    }

    /// Sets a member's process state.
    pub(crate) fn set_process(&mut self, id: u64, process: Process) {
        if let Some(m) = self.members.get_mut(&id) {
            m.process = process;
        }
    }

    /// Cuts a member off from the others, or reconnects it.
    pub(crate) fn set_isolated(&mut self, id: u64, isolated: bool) {
        if let Some(m) = self.members.get_mut(&id) {
            m.isolated = isolated;
        }
    }

    /// Brings leadership and every member's view up to date after a
    /// change: steps a leader down or elects one as raft would, then
    /// freezes the view of each member that lost touch (as of `current`)
    /// and drops it for each member back in touch.
    pub(crate) fn reconcile(
        &mut self,
        current_index: u64,
        current: impl Fn() -> StaleView,
    ) -> Election {
        let has_quorum = self.has_quorum();
        let holder = self.leader.and_then(|l| self.members.get(&l));
        let keeps_leading = match holder {
            None => false,
            // A frozen leader believes it leads until it hears otherwise.
            Some(l) if l.process == Process::Paused => {
                let others_up = self.voters().filter(|m| m.up()).count();
                others_up < self.quorum()
            }
            Some(l) => l.up() && has_quorum,
        };
        if !keeps_leading {
            self.leader = None;
        }
        // Views freeze before an election, so that a new leader is chosen
        // among the most up to date.
        self.freeze_views(&current);
        let mut election = Election::None;
        if self.leader.is_none() && has_quorum {
            let newest = |m: &&MemberRecord| {
                let index = m.stale.as_ref().map_or(current_index, |v| v.raft_index);
                // Highest index first; lowest ID breaks ties.
                (index, std::cmp::Reverse(m.id))
            };
            self.leader = self
                .voters()
                .filter(|m| m.up())
                .max_by_key(newest)
                .map(|m| m.id);
            election = Election::Elected;
        }
        let leader_up = self.effective_leader().is_some();
        for m in self.members.values_mut() {
            if leader_up && m.up() {
                m.stale = None;
            }
        }
        election
    }

    /// Brings every member's link up to date: a member that came up (or
    /// back) at `now` has a fresh link, one that went down has none.
    pub(crate) fn update_links(&mut self, now: Duration) {
        for m in self.members.values_mut() {
            m.link = match (m.linked(), m.link) {
                (false, _) => Link::Down,
                (true, Link::Down) => Link::Since(now),
                (true, link) => link,
            };
        }
    }

    fn freeze_views(&mut self, current: &impl Fn() -> StaleView) {
        let leader_up = self.effective_leader().is_some();
        for m in self.members.values_mut() {
            if !(leader_up && m.up()) && m.stale.is_none() {
                m.stale = Some(Box::new(current()));
            }
        }
    }

    /// Takes a member's stale view out, to read from it.
    pub(crate) fn take_stale_view(&mut self, id: u64) -> Option<Box<StaleView>> {
        self.members.get_mut(&id)?.stale.take()
    }

    /// Puts back what [`Cluster::take_stale_view`] took.
    pub(crate) fn put_stale_view(&mut self, id: u64, view: Box<StaleView>) {
        if let Some(m) = self.members.get_mut(&id) {
            m.stale = Some(view);
        }
    }

    /// `MoveLeader` asked of member `asked`, to `target`: in etcd's order
    /// of checks. Returns whether leadership moved (the caller bumps the
    /// term); `Ok(false)` when the target already leads.
    pub(crate) fn move_leader(&mut self, asked: u64, target: u64) -> Result<bool, EtcdError> {
        if self.effective_leader() != Some(asked) {
            return Err(EtcdError::NotLeader);
        }
        let Some(transferee) = self.members.get(&target) else {
            return Err(EtcdError::BadLeaderTransferee);
        };
        if transferee.is_learner {
            return Err(EtcdError::BadLeaderTransferee);
        }
        if target == asked {
            return Ok(false);
        }
        if !transferee.up() {
            return Err(EtcdError::LeaderTransferTimedOut);
        }
        self.leader = Some(target);
        Ok(true)
    }

    /// Started voters after a change, and whether they would be a quorum
    /// of `voters` (etcd's strict reconfiguration check).
    fn started_voters_are_quorum(&self, voters: usize, started: usize) -> bool {
        started > voters / 2
    }

    /// `MemberAdd`, after URL validation: etcd's strict reconfiguration
    /// checks, then the checks at apply. `id` is the new member's ID;
    /// `now` is the fake's clock.
    pub(crate) fn add(
        &mut self,
        asked: u64,
        id: u64,
        peer_urls: Vec<String>,
        is_learner: bool,
        now: Duration,
    ) -> Result<MemberRecord, EtcdError> {
        let voting = self.voters().count();
        if !is_learner {
            let started = self.voters().filter(|m| m.started()).count();
            // etcd lets a lone member add a second voter (restoring a
            // cluster from one member's data) though 1 of 2 is no quorum.
            let lone = voting == 1 && started == 1;
            if !lone && !self.started_voters_are_quorum(voting + 1, started) {
                return Err(EtcdError::NotEnoughStartedMembers);
            }
        }
        // As the 3.5 tip checks (`isConnectedToQuorumAfterAddingNewMemberSince`),
        // for a learner too: the member asked must have been connected to
        // a quorum of the voters plus one, the new member counted as down,
        // for the last health interval. 3.5.1 asks for every voter.
        if voting > 1 && self.settled_voters(asked, now) < majority_of(voting + 1) {
            return Err(EtcdError::UnhealthyCluster);
        }
        if self
            .members
            .values()
            .any(|m| m.peer_urls.iter().any(|u| peer_urls.contains(u)))
        {
            return Err(EtcdError::PeerUrlExists);
        }
        if self.members.contains_key(&id) || self.removed.contains(&id) {
            return Err(EtcdError::MemberExists);
        }
        if is_learner && self.members.values().any(|m| m.is_learner) {
            return Err(EtcdError::TooManyLearners);
        }
        let record = MemberRecord {
            id,
            name: String::new(),
            peer_urls,
            client_urls: Vec::new(),
            is_learner,
            process: Process::NotStarted,
            isolated: false,
            stale: None,
            link: Link::Down,
        };
        self.members.insert(id, record.clone());
        Ok(record)
    }

    /// Voters the member `asked` has been connected to for the last
    /// [`HEALTH_INTERVAL`], itself included (etcd's `numConnectedSince`).
    fn settled_voters(&self, asked: u64, now: Duration) -> usize {
        let Some(me) = self.members.get(&asked) else {
            return 0;
        };
        let me_voting = usize::from(!me.is_learner);
        if !me.settled(now) {
            return me_voting;
        }
        me_voting
            + self
                .voters()
                .filter(|m| m.id != asked && m.settled(now))
                .count()
    }

    /// `MemberRemove`: etcd's strict checks for a voter, then the removal.
    /// Returns the removed member.
    pub(crate) fn remove(
        &mut self,
        asked: u64,
        id: u64,
        now: Duration,
    ) -> Result<MemberRecord, EtcdError> {
        let Some(member) = self.members.get(&id) else {
            return Err(EtcdError::MemberNotFound);
        };
        if !member.is_learner {
            let voters = self.voters().count() - 1;
            let started = self.voters().filter(|m| m.id != id && m.started()).count();
            if !self.started_voters_are_quorum(voters, started) {
                return Err(EtcdError::NotEnoughStartedMembers);
            }
            // Removing a member the one asked has no connection to cannot
            // lose a quorum that is up; removing itself is checked.
            let connected = member.linked() && self.members.get(&asked).is_some_and(|m| m.linked());
            if id == asked || connected {
                let active = self.settled_voters(asked, now);
                if active.saturating_sub(1) < 1 + voters / 2 {
                    return Err(EtcdError::UnhealthyCluster);
                }
            }
        }
        let removed = self.members.remove(&id).ok_or(EtcdError::MemberNotFound)?;
        self.removed.insert(id);
        if self.leader == Some(id) {
            self.leader = None;
        }
        Ok(removed)
    }

    /// `MemberUpdate`: new peer URLs for a member. Unlike etcd 3.5, which
    /// commits URLs it cannot parse and then panics on every member, bad
    /// URLs are refused.
    pub(crate) fn update(&mut self, id: u64, peer_urls: Vec<String>) -> Result<(), EtcdError> {
        if !self.members.contains_key(&id) {
            return Err(EtcdError::MemberNotFound);
        }
        if !urls_are_valid(&peer_urls) {
            return Err(EtcdError::BadMemberUrls);
        }
        if self
            .members
            .values()
            .any(|m| m.id != id && m.peer_urls.iter().any(|u| peer_urls.contains(u)))
        {
            return Err(EtcdError::PeerUrlExists);
        }
        if let Some(m) = self.members.get_mut(&id) {
            m.peer_urls = peer_urls;
        }
        Ok(())
    }

    /// `MemberPromote`: a learner that is in sync with the leader becomes a
    /// voter.
    pub(crate) fn promote(&mut self, id: u64) -> Result<(), EtcdError> {
        let in_sync = self.in_sync(id);
        let Some(member) = self.members.get_mut(&id) else {
            return Err(EtcdError::MemberNotFound);
        };
        if !member.is_learner {
            return Err(EtcdError::MemberNotLearner);
        }
        if !in_sync {
            return Err(EtcdError::LearnerNotReady);
        }
        member.is_learner = false;
        Ok(())
    }

    /// A started member publishes its name and client URLs, as etcd's
    /// member does once it joins.
    pub(crate) fn publish(&mut self, id: u64, name: &str, client_urls: Vec<String>) {
        if let Some(m) = self.members.get_mut(&id) {
            m.name = name.to_owned();
            m.client_urls = client_urls;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A time at which the initial members' links are settled.
    const T0: Duration = Duration::ZERO;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn urls(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn three() -> Cluster {
        let initial = (1..=3)
            .map(|i| InitialMember {
                id: i,
                name: format!("infra{i}"),
                peer_urls: urls(&[&format!("http://127.0.0.1:{i}2380")]),
                client_urls: urls(&[&format!("http://127.0.0.1:{i}2379")]),
            })
            .collect();
        Cluster::new(9, DEFAULT_CLUSTER_TOKEN, initial)
    }

    fn view(index: u64) -> StaleView {
        StaleView {
            store: Store::default(),
            raft_index: index,
            raft_term: 2,
        }
    }

    #[test]
    fn ids_are_etcds() {
        // etcd's own default member: `--initial-advertise-peer-urls
        // http://localhost:2380`, token `etcd-cluster`.
        let id = member_id(
            &urls(&["http://localhost:2380"]),
            DEFAULT_CLUSTER_TOKEN,
            None,
        );
        assert_eq!(id, 10_276_657_743_932_975_437);
        assert_eq!(cluster_id(&[id]), 14_841_639_068_965_178_418);
    }

    #[test]
    fn urls_are_checked_as_etcd_checks_them() {
        assert!(urls_are_valid(&urls(&["http://10.0.0.1:2380"])));
        assert!(urls_are_valid(&urls(&["https://host:1", "http://[::1]:2"])));
        for bad in [
            "",
            "garbage",
            "ftp://h:1",
            "http://h",
            "http://h:1/path",
            "http://h:1/",
            "unix://sock:1",
            "http://:1",
        ] {
            assert!(!urls_are_valid(&urls(&[bad])), "{bad:?}");
        }
        assert!(!urls_are_valid(&[]));
    }

    #[test]
    fn an_isolated_follower_loses_its_leader_and_keeps_a_stale_view() {
        let mut c = three();
        assert_eq!(c.reconcile(8, || view(8)), Election::None);
        assert_eq!(c.leader_seen_by(3), Some(1));
        assert!(c.all_in_sync());
        c.set_isolated(3, true);
        assert_eq!(c.reconcile(8, || view(8)), Election::None);
        assert!(!c.all_in_sync());
        assert_eq!(c.leader_seen_by(3), None);
        assert_eq!(c.leader_seen_by(2), Some(1));
        assert_eq!(c.stale_view(3).unwrap().raft_index, 8);
        assert_eq!(c.gate(3, Path::Local, false, false), Ok(Gate::Stale));
        assert_eq!(
            c.gate(3, Path::ReadIndex, false, false),
            Ok(Gate::Wait(EtcdError::RequestTimedOut))
        );
        assert_eq!(
            c.gate(3, Path::Local, false, true),
            Err(EtcdError::NoLeader)
        );
        c.set_isolated(3, false);
        assert_eq!(c.reconcile(9, || view(9)), Election::None);
        assert!(c.stale_view(3).is_none());
        assert_eq!(c.gate(3, Path::Proposal, false, true), Ok(Gate::Current));
    }

    #[test]
    fn an_isolated_leader_steps_down_and_the_others_elect() {
        let mut c = three();
        c.set_isolated(1, true);
        assert_eq!(c.reconcile(8, || view(8)), Election::Elected);
        assert_eq!(c.effective_leader(), Some(2));
        assert_eq!(c.leader_seen_by(1), None);
    }

    #[test]
    fn a_paused_leader_and_follower_come_back_with_the_same_leader() {
        let mut c = three();
        c.set_process(1, Process::Paused);
        c.set_process(2, Process::Paused);
        assert_eq!(c.reconcile(8, || view(8)), Election::None);
        assert_eq!(c.leader_seen_by(3), None);
        c.set_process(1, Process::Running);
        c.set_process(2, Process::Running);
        assert_eq!(c.reconcile(8, || view(8)), Election::None);
        assert_eq!(c.effective_leader(), Some(1));
    }

    #[test]
    fn a_leader_without_quorum_steps_down_and_a_new_election_follows() {
        let mut c = three();
        c.set_process(2, Process::Stopped);
        c.set_process(3, Process::Stopped);
        c.reconcile(8, || view(8));
        assert_eq!(c.effective_leader(), None);
        c.set_process(3, Process::Running);
        assert_eq!(c.reconcile(8, || view(8)), Election::Elected);
        assert!(c.effective_leader().is_some());
    }

    #[test]
    fn the_most_up_to_date_member_wins_an_election() {
        let mut c = three();
        c.set_process(3, Process::Stopped);
        c.reconcile(8, || view(8));
        // 1 and 2 move on to 10 without 3; then both stop and 3 and 2 return.
        c.set_process(1, Process::Stopped);
        c.set_process(2, Process::Stopped);
        c.reconcile(10, || view(10));
        c.set_process(3, Process::Running);
        c.set_process(2, Process::Running);
        assert_eq!(c.reconcile(10, || view(10)), Election::Elected);
        assert_eq!(c.effective_leader(), Some(2));
    }

    #[test]
    fn membership_changes_check_what_etcd_checks() {
        let mut c = three();
        c.reconcile(8, || view(8));
        let new = urls(&["http://127.0.0.1:42380"]);
        assert_eq!(
            c.add(1, 7, urls(&["http://127.0.0.1:12380"]), false, T0)
                .unwrap_err(),
            EtcdError::PeerUrlExists
        );
        assert_eq!(
            c.add(1, 1, new.clone(), false, T0).unwrap_err(),
            EtcdError::MemberExists
        );
        let learner = c.add(1, 7, new, true, T0).unwrap();
        assert!(learner.is_learner && learner.name.is_empty());
        assert_eq!(
            c.add(1, 8, urls(&["http://127.0.0.1:52380"]), true, T0)
                .unwrap_err(),
            EtcdError::TooManyLearners
        );
        assert_eq!(c.promote(1), Err(EtcdError::MemberNotLearner));
        assert_eq!(c.promote(7), Err(EtcdError::LearnerNotReady));
        assert_eq!(
            c.gate(7, Path::Proposal, false, false),
            Err(EtcdError::NotSupportedForLearner)
        );
        c.set_process(7, Process::Running);
        c.reconcile(9, || view(9));
        c.promote(7).unwrap();
        assert_eq!(c.promote(99), Err(EtcdError::MemberNotFound));
        assert_eq!(c.remove(1, 99, T0).unwrap_err(), EtcdError::MemberNotFound);
        c.remove(1, 1, T0).unwrap();
        assert_eq!(c.remove(2, 1, T0).unwrap_err(), EtcdError::MemberNotFound);
        assert!(c.was_removed(1));
        assert_eq!(c.reconcile(9, || view(9)), Election::Elected);
        assert_eq!(
            c.update(2, urls(&["garbage"])),
            Err(EtcdError::BadMemberUrls)
        );
        assert_eq!(
            c.update(2, urls(&["http://127.0.0.1:32380"])),
            Err(EtcdError::PeerUrlExists)
        );
        assert_eq!(
            c.update(1, urls(&["http://a:1"])),
            Err(EtcdError::MemberNotFound)
        );
    }

    #[test]
    fn a_member_cut_off_cannot_add_even_a_learner() {
        let mut c = three();
        c.set_isolated(1, true);
        c.update_links(secs(1));
        c.reconcile(8, || view(8));
        assert_eq!(
            c.add(1, 7, urls(&["http://a:1"]), true, secs(1))
                .unwrap_err(),
            EtcdError::UnhealthyCluster
        );
        // The others see 2 of 3 voters: short of a quorum of 3 + 1, as
        // etcd counts even for a learner.
        assert_eq!(
            c.add(2, 7, urls(&["http://a:1"]), true, secs(1))
                .unwrap_err(),
            EtcdError::UnhealthyCluster
        );
        c.set_isolated(1, false);
        c.update_links(secs(2));
        assert!(c.add(2, 7, urls(&["http://a:1"]), true, secs(8)).is_ok());
    }

    #[test]
    fn membership_changes_wait_for_a_health_interval_after_a_member_returns() {
        let mut c = three();
        c.set_process(3, Process::Stopped);
        c.update_links(secs(100));
        c.set_process(3, Process::Running);
        c.update_links(secs(101));
        c.reconcile(8, || view(8));
        let learner = || urls(&["http://a:1"]);
        for at in [101, 106] {
            assert_eq!(
                c.add(1, 7, learner(), true, secs(at)).unwrap_err(),
                EtcdError::UnhealthyCluster,
                "at {at} s"
            );
            assert_eq!(
                c.remove(1, 2, secs(at)).unwrap_err(),
                EtcdError::UnhealthyCluster,
                "at {at} s"
            );
        }
        // A paused member keeps its connections, however long it is frozen.
        c.set_process(2, Process::Paused);
        c.update_links(secs(107));
        assert!(c.add(1, 7, learner(), true, secs(120)).is_ok());
        c.remove(1, 7, secs(120)).unwrap();
        c.set_process(2, Process::Running);
        c.update_links(secs(121));
        assert!(c.add(1, 8, learner(), true, secs(121)).is_ok());
        c.remove(1, 8, secs(121)).unwrap();
        // Removing a member that is up breaks no quorum once settled.
        c.remove(1, 3, secs(121)).unwrap();
    }

    #[test]
    fn a_single_member_adds_at_once() {
        let mut c = Cluster::new(
            1,
            "t",
            vec![InitialMember {
                id: 1,
                name: "a".into(),
                peer_urls: urls(&["http://127.0.0.1:2380"]),
                client_urls: Vec::new(),
            }],
        );
        c.set_process(1, Process::Stopped);
        c.update_links(secs(10));
        c.set_process(1, Process::Running);
        c.update_links(secs(11));
        assert!(c.add(1, 7, urls(&["http://a:1"]), true, secs(11)).is_ok());
        c.remove(1, 7, secs(11)).unwrap();
        // A voter too, though 1 started of 2 is no quorum: etcd allows it.
        assert!(c.add(1, 8, urls(&["http://b:1"]), false, secs(11)).is_ok());
    }

    #[test]
    fn a_voter_cannot_be_added_without_enough_started_members() {
        let mut c = three();
        c.reconcile(8, || view(8));
        c.add(1, 7, urls(&["http://a:1"]), false, T0).unwrap();
        // 4 voters, 3 started: a 5th needs 3 of 5 started: fine.
        c.add(1, 8, urls(&["http://b:1"]), false, T0).unwrap();
        // 6 voters need 4 started; 3 are.
        assert_eq!(
            c.add(1, 9, urls(&["http://c:1"]), false, T0).unwrap_err(),
            EtcdError::NotEnoughStartedMembers
        );
    }

    #[test]
    fn moving_the_leader() {
        let mut c = three();
        c.reconcile(8, || view(8));
        assert_eq!(c.move_leader(2, 3), Err(EtcdError::NotLeader));
        assert_eq!(c.move_leader(1, 0), Err(EtcdError::BadLeaderTransferee));
        assert_eq!(c.move_leader(1, 1), Ok(false));
        assert_eq!(c.move_leader(1, 3), Ok(true));
        assert_eq!(c.effective_leader(), Some(3));
    }
}
