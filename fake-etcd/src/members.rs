//! The test's controls over the members of a fake cluster: each member's
//! endpoint and state, and the faults a real cluster suffers (a member
//! stopped, frozen, cut off from the others; the leader moved).
//!
//! The controls change the cluster's model ([`cluster`](crate::cluster))
//! and the member's server together, and settle leadership before they
//! return: what takes etcd an election timeout is immediate here, so a test
//! observes the outcome without waiting.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::cluster::Process;
use crate::error::EtcdError;
use crate::member::Member;
use crate::server::{spawn_incarnation, ControlError, FakeEtcd, MemberServer};

/// What a member is doing, as [`FakeEtcd::members`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberState {
    /// Serving, in touch with the others.
    Running,
    /// Serving its clients, but cut off from the other members
    /// ([`FakeEtcd::isolate_member`]).
    Isolated,
    /// Frozen, as a process under SIGSTOP ([`FakeEtcd::pause_member`]).
    Paused,
    /// Not running: its port refuses connections
    /// ([`FakeEtcd::stop_member`]).
    Stopped,
    /// Added to the cluster (`MemberAdd`), never started
    /// ([`FakeEtcd::start_added_member`]).
    NotStarted,
}

impl MemberState {
    /// The state as one word, as the control API reports it (`running`,
    /// `isolated`, `paused`, `stopped`, `not_started`).
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Running => "running",
            MemberState::Isolated => "isolated",
            MemberState::Paused => "paused",
            MemberState::Stopped => "stopped",
            MemberState::NotStarted => "not_started",
        }
    }
}

/// A member of the cluster, as [`FakeEtcd::members`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberInfo {
    /// The member's ID, as `MemberList` and response headers give it.
    pub id: u64,
    /// Its name (empty until an added member starts).
    pub name: String,
    /// Where its clients connect, once it has started.
    pub endpoint: Option<String>,
    /// Whether it is a learner (a non-voting member).
    pub is_learner: bool,
    /// Whether it is the leader the cluster's members in touch follow.
    pub is_leader: bool,
    /// What it is doing.
    pub state: MemberState,
}

impl FakeEtcd {
    /// Every member of the cluster, by ID (as `MemberList` orders them).
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let etcd = fake_etcd::FakeEtcd::builder().members(3).start().await?;
    /// let members = etcd.members();
    /// assert_eq!(members.len(), 3);
    /// assert_eq!(members.iter().filter(|m| m.is_leader).count(), 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn members(&self) -> Vec<MemberInfo> {
        let endpoints: Vec<(u64, String)> = self
            .servers()
            .iter()
            .map(|s| (s.member.id(), s.endpoint(self.tls.is_some())))
            .collect();
        let core = self.shared.lock();
        let leader = core.cluster.effective_leader();
        core.cluster
            .members()
            .map(|m| MemberInfo {
                id: m.id,
                name: m.name.clone(),
                endpoint: endpoints
                    .iter()
                    .find(|(id, _)| *id == m.id)
                    .map(|(_, e)| e.clone()),
                is_learner: m.is_learner,
                is_leader: leader == Some(m.id),
                state: state_of(m),
            })
            .collect()
    }

    /// The leader that the members in touch follow, if there is one (none
    /// while a quorum is down or cut off).
    pub fn leader(&self) -> Option<u64> {
        self.shared.lock().cluster.effective_leader()
    }

    /// A member's endpoint, once it has started.
    pub fn member_endpoint(&self, id: u64) -> Option<String> {
        self.server(id).map(|s| s.endpoint(self.tls.is_some()))
    }

    /// An in-process channel to one member (see
    /// [`FakeEtcd::in_process_channel`]).
    pub fn member_channel(&self, id: u64) -> Option<tonic::transport::Channel> {
        self.server(id)
            .map(|s| crate::pipe::channel(Arc::downgrade(&s.member.in_process)))
    }

    /// Stops a member: its server closes every connection and its port
    /// refuses new ones. If it led, the others elect a new leader (term +1)
    /// if they are a quorum; if they are not, no one leads until enough
    /// members are back.
    ///
    /// # Errors
    ///
    /// [`ControlError::NoSuchMember`], or [`ControlError::MemberState`] if
    /// it is not running (stopped, paused, never started).
    pub async fn stop_member(&self, id: u64) -> Result<(), ControlError> {
        let server = self.started(id, "stop")?;
        self.expect(id, "stop", &[MemberState::Running, MemberState::Isolated])?;
        server.stop().await;
        self.shared
            .change_cluster(|core| core.cluster.set_process(id, Process::Stopped));
        Ok(())
    }

    /// Starts a stopped member again on its address, with the data it had:
    /// it catches up with the others if they have a leader.
    ///
    /// # Errors
    ///
    /// [`ControlError::NoSuchMember`], [`ControlError::MemberState`] if it
    /// is not stopped, [`ControlError::Listen`] if its address is taken.
    pub async fn start_member(&self, id: u64) -> Result<(), ControlError> {
        let server = self.started(id, "start")?;
        self.expect(id, "start", &[MemberState::Stopped])?;
        self.serve_again(&server)
            .await
            .map_err(|err| ControlError::Listen {
                id,
                error: err.to_string(),
            })
    }

    /// Starts a member added by `MemberAdd` (as `etcd --initial-cluster-state
    /// existing` would) under `name`, on a free loopback port: it publishes
    /// its name and client URL, and joins (a learner stays one until
    /// promoted). Returns its endpoint.
    ///
    /// # Errors
    ///
    /// [`ControlError::NoSuchMember`], [`ControlError::MemberState`] if it
    /// has already started, [`ControlError::Listen`] if no port is free.
    pub async fn start_added_member(&self, id: u64, name: &str) -> Result<String, ControlError> {
        self.expect(id, "start", &[MemberState::NotStarted])?;
        let listen_error = |err: std::io::Error| ControlError::Listen {
            id,
            error: err.to_string(),
        };
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(listen_error)?;
        let addr = listener.local_addr().map_err(listen_error)?;
        let member = Arc::new(Member::new(id, Arc::clone(&self.shared), self.seed()));
        let serving = spawn_incarnation(
            listener,
            &member,
            &self.lifetime,
            self.failure.clone(),
            self.tls.clone(),
        );
        let server = Arc::new(MemberServer {
            member,
            addr,
            serving: std::sync::Mutex::new(serving),
        });
        let endpoint = server.endpoint(self.tls.is_some());
        self.servers().push(server);
        self.shared.change_cluster(|core| {
            // Publishing its attributes is a raft entry.
            core.record_raft_entry();
            core.cluster.publish(id, name, vec![endpoint.clone()]);
            core.cluster.set_process(id, Process::Running);
        });
        Ok(endpoint)
    }

    /// Freezes a member as SIGSTOP freezes a process: its connections stay
    /// open but nothing is read or answered, and it takes no part in raft.
    /// A frozen leader still believes it leads: if it is back before the
    /// others elect a new one, the same leader and term return.
    ///
    /// # Errors
    ///
    /// [`ControlError::NoSuchMember`], or [`ControlError::MemberState`] if
    /// it is not running.
    pub fn pause_member(&self, id: u64) -> Result<(), ControlError> {
        let server = self.started(id, "pause")?;
        self.expect(id, "pause", &[MemberState::Running, MemberState::Isolated])?;
        server.member.faults.paused.send_replace(true);
        self.shared
            .change_cluster(|core| core.cluster.set_process(id, Process::Paused));
        Ok(())
    }

    /// Ends a [`FakeEtcd::pause_member`]: what was held goes through.
    ///
    /// # Errors
    ///
    /// [`ControlError::NoSuchMember`], or [`ControlError::MemberState`] if
    /// it is not paused.
    pub fn resume_member(&self, id: u64) -> Result<(), ControlError> {
        let server = self.started(id, "resume")?;
        self.expect(id, "resume", &[MemberState::Paused])?;
        self.shared
            .change_cluster(|core| core.cluster.set_process(id, Process::Running));
        server.member.faults.paused.send_replace(false);
        Ok(())
    }

    /// Cuts a member off from the others, as a network partition does; it
    /// goes on answering its clients as an isolated etcd member does:
    /// serializable reads from what it had (stale), linearizable reads
    /// failing with "etcdserver: request timed out" and writes with
    /// "context deadline exceeded" after the request timeout (7 s on the
    /// cluster's clock), requests asking for a leader refused at once with
    /// "etcdserver: no leader", watch events held, `Status` with no leader.
    /// If it led, the others elect a new leader.
    ///
    /// With [`TimeSource::Virtual`](crate::TimeSource::Virtual), a request
    /// that waits for the timeout waits until the test advances the clock;
    /// with [`TimeSource::Tokio`](crate::TimeSource::Tokio) under a paused
    /// runtime, it fails at once.
    ///
    /// # Errors
    ///
    /// [`ControlError::NoSuchMember`], or [`ControlError::MemberState`] if
    /// it is not running.
    ///
    /// # Example
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use etcd_client::{Client, GetOptions};
    /// let etcd = fake_etcd::FakeEtcd::builder().members(3).start().await?;
    /// let ids: Vec<u64> = etcd.members().iter().map(|m| m.id).collect();
    /// let (healthy, isolated) = (ids[0], ids[2]);
    /// let mut writer = Client::connect([etcd.member_endpoint(healthy).unwrap()], None).await?;
    /// writer.put("k", "before", None).await?;
    ///
    /// etcd.isolate_member(isolated)?;
    /// writer.put("k", "after", None).await?;
    ///
    /// let endpoint = etcd.member_endpoint(isolated).unwrap();
    /// let mut alone = Client::connect([endpoint], None).await?;
    /// let stale = alone.get("k", Some(GetOptions::new().with_serializable())).await?;
    /// assert_eq!(stale.kvs()[0].value(), b"before");
    ///
    /// etcd.heal_member(isolated)?;
    /// let fresh = alone.get("k", Some(GetOptions::new().with_serializable())).await?;
    /// assert_eq!(fresh.kvs()[0].value(), b"after");
    /// # Ok(())
    /// # }
    /// ```
    pub fn isolate_member(&self, id: u64) -> Result<(), ControlError> {
        self.started(id, "isolate")?;
        self.expect(id, "isolate", &[MemberState::Running])?;
        self.shared
            .change_cluster(|core| core.cluster.set_isolated(id, true));
        Ok(())
    }

    /// Reconnects an isolated member: it catches up with the others (if
    /// they have a leader), and what it held goes out.
    ///
    /// # Errors
    ///
    /// [`ControlError::NoSuchMember`], or [`ControlError::MemberState`] if
    /// it is not isolated.
    pub fn heal_member(&self, id: u64) -> Result<(), ControlError> {
        self.started(id, "heal")?;
        self.expect(id, "heal", &[MemberState::Isolated])?;
        self.shared
            .change_cluster(|core| core.cluster.set_isolated(id, false));
        Ok(())
    }

    /// Moves leadership to member `to`, as `etcdctl move-leader` does: the
    /// term goes up by one and every lease is renewed (a new leader's
    /// lessor). Streams go on.
    ///
    /// # Errors
    ///
    /// [`ControlError::MoveLeader`] with etcd's reason: no leader ("not
    /// leader"), an unknown member or a learner ("bad leader transferee"),
    /// one that is down ("leader transfer took too long").
    pub fn move_leader(&self, to: u64) -> Result<(), ControlError> {
        let now = self.shared.clock.now();
        self.shared.change_cluster(|core| {
            let leader = core
                .cluster
                .effective_leader()
                .ok_or_else(|| ControlError::MoveLeader(EtcdError::NotLeader.to_string()))?;
            let moved = core
                .cluster
                .move_leader(leader, to)
                .map_err(|err| ControlError::MoveLeader(err.to_string()))?;
            if moved {
                core.change_leader(now);
            }
            Ok(())
        })
    }

    /// The server of a member that has started.
    fn server(&self, id: u64) -> Option<Arc<MemberServer>> {
        self.servers().iter().find(|s| s.member.id() == id).cloned()
    }

    fn started(&self, id: u64, control: &'static str) -> Result<Arc<MemberServer>, ControlError> {
        match self.server(id) {
            Some(server) if !self.shared.lock().cluster.was_removed(id) => Ok(server),
            _ => {
                self.expect(id, control, &[])?;
                Err(ControlError::NoSuchMember(id))
            }
        }
    }

    /// Checks that the member is in one of `states`.
    fn expect(
        &self,
        id: u64,
        control: &'static str,
        states: &[MemberState],
    ) -> Result<(), ControlError> {
        let core = self.shared.lock();
        let member = core
            .cluster
            .member(id)
            .ok_or(ControlError::NoSuchMember(id))?;
        let state = state_of(member);
        if states.contains(&state) {
            Ok(())
        } else {
            Err(ControlError::MemberState {
                id,
                state: state.as_str(),
                control,
            })
        }
    }
}

fn state_of(member: &crate::cluster::MemberRecord) -> MemberState {
    match member.process {
        Process::NotStarted => MemberState::NotStarted,
        Process::Stopped => MemberState::Stopped,
        Process::Paused => MemberState::Paused,
        Process::Running if member.isolated => MemberState::Isolated,
        Process::Running => MemberState::Running,
    }
}
