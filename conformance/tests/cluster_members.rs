//! Cluster scenarios, on a three-member fake or a real three-member etcd:
//! members agreeing on their leader, a member frozen and thawed, the stale
//! serializable read of a member cut off from the others, a leader move,
//! and a learner added and removed.
//!
//! On the fake, each test starts its own three-member cluster. On a real
//! etcd they need a cluster: `scripts/real-etcd run --members 3 -- cargo
//! test -p conformance --test cluster_members`, which sets
//! `ETCD_ENDPOINTS` to every member and `ETCD_MEMBER_PIDS` to their
//! processes; a member is frozen with SIGSTOP (as a partition freezes it,
//! to the others) and thawed with SIGCONT. With fewer endpoints each test
//! says SKIPPED. Tests that freeze members run one at a time.

use std::time::Duration;

use conformance::{say, Target};
use etcd_client::{Client, GetOptions, MemberAddOptions};
use fake_etcd::FakeEtcd;

/// How long a real cluster may take to settle after a change (an election
/// takes about a second at etcd's defaults).
const SETTLE: Duration = Duration::from_secs(20);

/// One test at a time freezes members of the real cluster.
static FREEZING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Three members to fault: the test's own fake, or the real cluster.
enum Members {
    Fake(FakeEtcd),
    Real {
        endpoints: Vec<String>,
        pids: Vec<u32>,
    },
}

impl Members {
    /// The cluster this test runs on; `None` (after saying SKIPPED) if the
    /// real target is not a cluster of three.
    async fn get(test: &str) -> Option<Members> {
        match Target::current() {
            Target::Fake => {
                let fake = FakeEtcd::builder().members(3).start().await.unwrap();
                Some(Members::Fake(fake))
            }
            Target::Real(endpoints) => {
                let pids: Vec<u32> = std::env::var("ETCD_MEMBER_PIDS")
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|p| p.trim().parse().ok())
                    .collect();
                if endpoints.len() != 3 || pids.len() != 3 {
                    say(&format!(
                        "SKIPPED: {test}: needs a three-member etcd (scripts/real-etcd run --members 3)"
                    ));
                    return None;
                }
                Some(Members::Real {
                    endpoints: endpoints.clone(),
                    pids,
                })
            }
        }
    }

    fn is_fake(&self) -> bool {
        matches!(self, Members::Fake(_))
    }

    fn endpoints(&self) -> Vec<String> {
        match self {
            Members::Fake(fake) => fake.endpoints(),
            Members::Real { endpoints, .. } => endpoints.clone(),
        }
    }

    async fn client(&self, i: usize) -> Client {
        Client::connect([self.endpoints()[i].clone()], None)
            .await
            .unwrap()
    }

    /// The member ID of member `i`, from its own header.
    async fn id(&self, i: usize) -> u64 {
        let status = self.client(i).await.status().await.unwrap();
        status.header().unwrap().member_id()
    }

    /// Freezes member `i`, as SIGSTOP does.
    async fn freeze(&self, i: usize) {
        match self {
            Members::Fake(fake) => fake.pause_member(self.id(i).await).unwrap(),
            Members::Real { pids, .. } => signal(pids[i], "-STOP"),
        }
    }

    /// Lets `by` pass: the fake's clock is advanced, a real cluster waited on.
    async fn pass(&self, by: Duration) {
        match self {
            Members::Fake(fake) => fake.advance(by).await,
            Members::Real { .. } => tokio::time::sleep(by).await,
        }
    }

    /// Thaws member `i`.
    fn thaw(&self, i: usize, id: u64) {
        match self {
            Members::Fake(fake) => fake.resume_member(id).unwrap(),
            Members::Real { pids, .. } => signal(pids[i], "-CONT"),
        }
    }
}

/// Thaws every member of a real cluster when a test ends, however it ends:
/// a failing test must not leave the next ones a frozen cluster.
struct ThawOnDrop<'a>(&'a Members);

impl Drop for ThawOnDrop<'_> {
    fn drop(&mut self) {
        if let Members::Real { pids, .. } = self.0 {
            for pid in pids {
                let _ = std::process::Command::new("kill")
                    .args(["-CONT", &pid.to_string()])
                    .status();
            }
        }
    }
}

fn signal(pid: u32, which: &str) {
    let status = std::process::Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {which} {pid}");
}

/// Polls `check` until it holds, within [`SETTLE`]: a real cluster settles
/// in its own time, a fake at once.
async fn settles<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + SETTLE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not after {SETTLE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Index of the member that leads, and the others.
async fn roles(members: &Members) -> (usize, Vec<usize>) {
    let leader = members.client(0).await.status().await.unwrap().leader();
    let mut lead = 0;
    let mut others = Vec::new();
    for i in 0..3 {
        if members.id(i).await == leader {
            lead = i;
        } else {
            others.push(i);
        }
    }
    (lead, others)
}

#[tokio::test]
async fn three_members_agree_on_their_leader() {
    let Some(members) = Members::get("three_members_agree_on_their_leader").await else {
        return;
    };
    let _one_at_a_time = FREEZING.lock().await;
    let mut ids = Vec::new();
    let mut leaders = Vec::new();
    for i in 0..3 {
        let status = members.client(i).await.status().await.unwrap();
        ids.push(status.header().unwrap().member_id());
        leaders.push(status.leader());
        assert!(!status.is_learner());
        assert!(status.errors().is_empty(), "{:?}", status.errors());
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3, "each member answers with its own ID");
    assert!(leaders.iter().all(|&l| l == leaders[0] && l != 0));

    let list = members.client(1).await.member_list().await.unwrap();
    let listed: Vec<u64> = list.members().iter().map(|m| m.id()).collect();
    assert_eq!(listed, ids, "every member, sorted by ID");
    assert!(list.members().iter().all(|m| !m.name().is_empty()));
    assert_eq!(list.header().unwrap().revision(), 0);

    // A write through one member is read linearizably through the others.
    let key = format!("/conformance/cluster/{}", std::process::id());
    let put = members
        .client(0)
        .await
        .put(key.as_str(), "v", None)
        .await
        .unwrap();
    for i in 1..3 {
        let got = members
            .client(i)
            .await
            .get(key.as_str(), None)
            .await
            .unwrap();
        assert_eq!(got.kvs()[0].value(), b"v");
        assert!(got.header().unwrap().revision() >= put.header().unwrap().revision());
    }
    members
        .client(0)
        .await
        .delete(key.as_str(), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_member_cut_off_serves_stale_serializable_reads_and_no_leader() {
    let test = "a_member_cut_off_serves_stale_serializable_reads_and_no_leader";
    let Some(members) = Members::get(test).await else {
        return;
    };
    let _one_at_a_time = FREEZING.lock().await;
    let _thaw = ThawOnDrop(&members);
    let key = format!("/conformance/stale/{}", std::process::id());
    let (lead, others) = roles(&members).await;
    let (cut_off, follower) = (others[0], others[1]);
    let ids: Vec<u64> = futures_ids(&members).await;
    members
        .client(lead)
        .await
        .put(key.as_str(), "1", None)
        .await
        .unwrap();
    settles("the follower to have the first write", || async {
        let got = members
            .client(cut_off)
            .await
            .get(key.as_str(), Some(GetOptions::new().with_serializable()))
            .await
            .unwrap();
        got.kvs().first().is_some_and(|kv| kv.value() == b"1")
    })
    .await;

    // The member misses a write, then comes back alone: the others are
    // frozen, so it has no one to catch up from.
    members.freeze(cut_off).await;
    members
        .client(lead)
        .await
        .put(key.as_str(), "2", None)
        .await
        .unwrap();
    members.freeze(follower).await;
    members.freeze(lead).await;
    members.thaw(cut_off, ids[cut_off]);

    let mut alone = members.client(cut_off).await;
    let stale = alone
        .get(key.as_str(), Some(GetOptions::new().with_serializable()))
        .await
        .unwrap();
    // The fake's member missed the write. A real one may still apply it
    // from what the leader had sent into its socket before it froze, so
    // there it may be either; it is served all the same.
    let value = stale.kvs()[0].value();
    if members.is_fake() {
        assert_eq!(value, b"1", "a serializable read is stale");
    } else {
        assert!(value == b"1" || value == b"2", "{value:?}");
    }
    settles("the member alone to see no leader", || {
        let mut alone = alone.clone();
        async move {
            let status = alone.status().await.unwrap();
            status.leader() == 0 && status.errors() == ["etcdserver: no leader"]
        }
    })
    .await;

    members.thaw(follower, ids[follower]);
    members.thaw(lead, ids[lead]);
    settles("the member to catch up", || {
        let mut alone = alone.clone();
        let key = key.clone();
        async move {
            let got = alone
                .get(key.as_str(), Some(GetOptions::new().with_serializable()))
                .await;
            got.is_ok_and(|got| got.kvs().first().is_some_and(|kv| kv.value() == b"2"))
        }
    })
    .await;
    settles("a leader for every member", || async {
        let mut all = true;
        for i in 0..3 {
            let status = members.client(i).await.status().await;
            all &= status.is_ok_and(|s| s.leader() != 0);
        }
        all
    })
    .await;
    members
        .client(lead)
        .await
        .delete(key.as_str(), None)
        .await
        .ok();
}

async fn futures_ids(members: &Members) -> Vec<u64> {
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(members.id(i).await);
    }
    ids
}

#[tokio::test]
async fn the_leader_moves_and_the_term_grows() {
    let Some(members) = Members::get("the_leader_moves_and_the_term_grows").await else {
        return;
    };
    let _one_at_a_time = FREEZING.lock().await;
    let (lead, others) = roles(&members).await;
    let term = members
        .client(lead)
        .await
        .status()
        .await
        .unwrap()
        .raft_term();
    let target = members.id(others[0]).await;

    let refused = members
        .client(others[1])
        .await
        .move_leader(target)
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        refused.to_string().contains("etcdserver: not leader"),
        "{refused}"
    );
    let bad = members
        .client(lead)
        .await
        .move_leader(12345)
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        bad.to_string()
            .contains("etcdserver: bad leader transferee"),
        "{bad}"
    );

    members
        .client(lead)
        .await
        .move_leader(target)
        .await
        .unwrap();
    settles("every member to follow the new leader", || async {
        let mut all = true;
        for i in 0..3 {
            let status = members.client(i).await.status().await.unwrap();
            all &= status.leader() == target && status.raft_term() > term;
        }
        all
    })
    .await;
}

#[tokio::test]
async fn a_learner_is_added_refused_promotion_and_removed() {
    let test = "a_learner_is_added_refused_promotion_and_removed";
    let Some(members) = Members::get(test).await else {
        return;
    };
    let _one_at_a_time = FREEZING.lock().await;
    let mut client = members.client(0).await;
    let bad = client
        .member_add(["nope"], None)
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        bad.to_string()
            .contains("etcdserver: given member URLs are invalid"),
        "{bad}"
    );

    // A port nothing listens on: the learner never starts. A real cluster
    // refuses changes as "unhealthy" until its members have been connected
    // for etcd's health interval (5 s) after it starts.
    let url = "http://127.0.0.1:9";
    let deadline = tokio::time::Instant::now() + SETTLE;
    let added = loop {
        let learner = Some(MemberAddOptions::new().with_is_learner());
        match client.member_add([url], learner).await {
            Ok(response) => break response,
            Err(err) if err.to_string().contains("etcdserver: unhealthy cluster") => {
                assert!(tokio::time::Instant::now() < deadline, "still {err}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(err) => panic!("member add: {err}"),
        }
    };
    let learner = added.member().unwrap().clone();
    assert!(learner.is_learner());
    assert!(learner.name().is_empty());
    assert_eq!(learner.peer_urls(), [url]);
    assert_eq!(added.member_list().len(), 4);

    let listed = client.member_list().await.unwrap();
    let entry = listed
        .members()
        .iter()
        .find(|m| m.id() == learner.id())
        .unwrap();
    assert!(entry.name().is_empty() && entry.client_urls().is_empty());

    let not_ready = client
        .member_promote(learner.id())
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        not_ready
            .to_string()
            .contains("can only promote a learner member which is in sync with leader"),
        "{not_ready}"
    );
    let removed = client.member_remove(learner.id()).await.unwrap();
    assert_eq!(removed.members().len(), 3);
    let gone = client
        .member_remove(learner.id())
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(
        gone.to_string().contains("etcdserver: member not found"),
        "{gone}"
    );
}

/// A frozen member keeps its connections to its peers (its sockets stay
/// open), so a membership change counts it as connected, however long it
/// was frozen: right after a follower is thawed from 7 s of SIGSTOP, a
/// learner is added at once. (A member that is restarted comes back on new
/// connections, and is counted only 5 s later: etcd's health interval.)
#[tokio::test]
async fn a_member_thawed_after_a_long_freeze_still_counts_for_membership() {
    let test = "a_member_thawed_after_a_long_freeze_still_counts_for_membership";
    let Some(members) = Members::get(test).await else {
        return;
    };
    let _one_at_a_time = FREEZING.lock().await;
    let _thaw = ThawOnDrop(&members);
    let (leader, followers) = roles(&members).await;
    let frozen = followers[0];
    let frozen_id = members.id(frozen).await;
    members.freeze(frozen).await;
    members.pass(Duration::from_secs(7)).await;
    members.thaw(frozen, frozen_id);
    settles("the thawed member answers", || async {
        members.client(frozen).await.status().await.is_ok()
    })
    .await;

    let mut client = members.client(leader).await;
    let learner = Some(MemberAddOptions::new().with_is_learner());
    let added = client.member_add(["http://127.0.0.1:9"], learner).await;
    // Leave the cluster as it was before judging.
    if let Ok(added) = &added {
        client
            .member_remove(added.member().unwrap().id())
            .await
            .unwrap();
    }
    assert!(added.is_ok(), "{:?}", added.map(|_| ()));
}
