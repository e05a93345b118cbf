//! A cluster of fake members: one store seen through every endpoint,
//! leadership as raft settles it, and each member's faults answered as an
//! etcd 3.5 member answers them (`etcd-auth-lock-maintenance.md` §4).
//!
//! Tests whose requests wait for etcd's 7 s request timeout run on tokio's
//! paused clock (`TimeSource::Tokio`), so the timeout costs nothing.

mod common;

use std::time::Duration;

use common::{status_of, within};
use etcd_client::{Client, GetOptions, PutOptions, WatchOptions};
use etcd_proto::etcdserverpb::{kv_client::KvClient, RangeRequest};
use fake_etcd::{FakeEtcd, MemberState, TimeSource};
use tonic::Code;

async fn cluster(time: TimeSource) -> FakeEtcd {
    FakeEtcd::builder()
        .members(3)
        .time(time)
        .start()
        .await
        .unwrap()
}

async fn client_of(etcd: &FakeEtcd, id: u64) -> Client {
    let endpoint = etcd.member_endpoint(id).unwrap();
    Client::connect([endpoint], None).await.unwrap()
}

fn ids(etcd: &FakeEtcd) -> Vec<u64> {
    etcd.members().iter().map(|m| m.id).collect()
}

#[tokio::test]
async fn every_member_reports_itself_the_same_leader_and_the_same_index() {
    let etcd = cluster(TimeSource::Virtual).await;
    let ids = ids(&etcd);
    assert_eq!(ids.len(), 3);
    let leader = etcd.leader().unwrap();
    for &id in &ids {
        let status = client_of(&etcd, id).await.status().await.unwrap();
        let header = status.header().unwrap();
        assert_eq!(header.member_id(), id);
        assert_eq!(status.leader(), leader);
        // A fresh three-member etcd 3.5 has applied 8 entries, at term 2.
        assert_eq!(status.raft_index(), 8);
        assert_eq!(status.raft_term(), 2);
        assert!(!status.is_learner());
    }
    let list = client_of(&etcd, ids[1]).await.member_list().await.unwrap();
    let names: Vec<&str> = list.members().iter().map(|m| m.name()).collect();
    assert_eq!(list.members().len(), 3);
    assert!(names.contains(&"infra1") && names.contains(&"infra3"));
    let listed: Vec<u64> = list.members().iter().map(|m| m.id()).collect();
    assert_eq!(listed, ids, "sorted by ID");
    assert_eq!(list.header().unwrap().revision(), 0);
}

#[tokio::test]
async fn a_write_through_one_member_is_read_through_every_other() {
    let etcd = cluster(TimeSource::Virtual).await;
    let ids = ids(&etcd);
    let put = client_of(&etcd, ids[0])
        .await
        .put("k", "v", None)
        .await
        .unwrap();
    for &id in &ids[1..] {
        let got = client_of(&etcd, id).await.get("k", None).await.unwrap();
        assert_eq!(got.kvs()[0].value(), b"v");
        assert_eq!(
            got.header().unwrap().revision(),
            put.header().unwrap().revision()
        );
        assert_eq!(got.header().unwrap().member_id(), id);
    }
}

#[tokio::test(start_paused = true)]
async fn an_isolated_member_answers_as_an_isolated_etcd_member() {
    let etcd = cluster(TimeSource::Tokio).await;
    let healthy = etcd.leader().unwrap();
    let cut_off = ids(&etcd).into_iter().find(|&id| id != healthy).unwrap();
    let mut writer = client_of(&etcd, healthy).await;
    writer.put("k", "before", None).await.unwrap();
    let term = etcd.raft_term();
    etcd.isolate_member(cut_off).unwrap();
    assert_eq!(etcd.raft_term(), term, "a follower cut off elects no one");
    writer.put("k", "after", None).await.unwrap();

    let mut alone = client_of(&etcd, cut_off).await;
    let serializable = Some(GetOptions::new().with_serializable());
    let stale = alone.get("k", serializable.clone()).await.unwrap();
    assert_eq!(stale.kvs()[0].value(), b"before");

    let linearizable = within("a linearizable read", alone.get("k", None)).await;
    let status = status_of(linearizable.unwrap_err());
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "etcdserver: request timed out");

    let write = within("a write", alone.put("k", "lost", None)).await;
    let status = status_of(write.unwrap_err());
    assert_eq!(status.code(), Code::Unknown);
    assert_eq!(status.message(), "context deadline exceeded");

    // Asking for a leader is refused at once.
    let endpoint = etcd.member_endpoint(cut_off).unwrap();
    let mut raw = KvClient::connect(endpoint).await.unwrap();
    let mut request = tonic::Request::new(RangeRequest {
        key: bytes::Bytes::from_static(b"k"),
        serializable: true,
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("hasleader", "true".parse().unwrap());
    let refused = raw.range(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    assert_eq!(refused.message(), "etcdserver: no leader");

    let status = alone.status().await.unwrap();
    assert_eq!(status.leader(), 0);
    assert_eq!(status.errors(), ["etcdserver: no leader"]);
    let seen: Vec<MemberState> = etcd.members().iter().map(|m| m.state).collect();
    assert!(seen.contains(&MemberState::Isolated));

    etcd.heal_member(cut_off).unwrap();
    let fresh = alone.get("k", serializable).await.unwrap();
    assert_eq!(fresh.kvs()[0].value(), b"after");
    assert_eq!(etcd.raft_term(), term);
}

#[tokio::test(start_paused = true)]
async fn a_watch_on_an_isolated_member_sees_nothing_until_it_is_back() {
    let etcd = cluster(TimeSource::Tokio).await;
    let ids = ids(&etcd);
    let mut writer = client_of(&etcd, ids[0]).await;
    let mut watcher = client_of(&etcd, ids[2]).await;
    etcd.isolate_member(ids[2]).unwrap();
    let mut events = watcher
        .watch("w", Some(WatchOptions::new().with_prefix()))
        .await
        .unwrap();
    // The watch is created at once, as on an isolated etcd member.
    let created = within("created", events.message()).await.unwrap().unwrap();
    assert!(created.created());
    writer.put("w/1", "1", None).await.unwrap();
    let held = tokio::time::timeout(Duration::from_secs(30), events.message()).await;
    assert!(held.is_err(), "an isolated member delivered {held:?}");
    etcd.heal_member(ids[2]).unwrap();
    let delivered = within("the held event", events.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivered.events()[0].kv().unwrap().key(), b"w/1");
    assert_eq!(delivered.header().unwrap().member_id(), ids[2]);
}

#[tokio::test]
async fn stopping_the_leader_elects_another_and_renews_leases() {
    let etcd = cluster(TimeSource::Virtual).await;
    let leader = etcd.leader().unwrap();
    let other = ids(&etcd).into_iter().find(|&id| id != leader).unwrap();
    let mut client = client_of(&etcd, other).await;
    let lease = client.lease_grant(10, None).await.unwrap().id();
    etcd.advance(Duration::from_secs(8)).await;
    let term = etcd.raft_term();

    etcd.stop_member(leader).await.unwrap();
    let new_leader = etcd.leader().unwrap();
    assert_ne!(new_leader, leader);
    assert_eq!(etcd.raft_term(), term + 1);
    // A new leader renews every lease to its full TTL.
    assert_eq!(
        etcd.lease(lease).unwrap().remaining,
        Duration::from_secs(10)
    );
    let address = etcd.member_endpoint(leader).unwrap();
    let address = address.trim_start_matches("http://");
    let refused = tokio::net::TcpStream::connect(address).await;
    assert!(refused.is_err(), "a stopped member's port refuses");

    etcd.start_member(leader).await.unwrap();
    assert_eq!(
        etcd.leader(),
        Some(new_leader),
        "a returning member follows"
    );
    let back = client_of(&etcd, leader).await.status().await.unwrap();
    assert_eq!(back.leader(), new_leader);
}

#[tokio::test(start_paused = true)]
async fn without_a_quorum_nothing_is_written_and_no_lease_expires() {
    let etcd = cluster(TimeSource::Tokio).await;
    let ids = ids(&etcd);
    let mut last = client_of(&etcd, ids[0]).await;
    let lease = last.lease_grant(5, None).await.unwrap().id();
    last.put("k", "v", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    etcd.stop_member(ids[1]).await.unwrap();
    etcd.stop_member(ids[2]).await.unwrap();
    assert_eq!(etcd.leader(), None);

    let write = within("a write without quorum", last.put("x", "y", None)).await;
    assert_eq!(
        status_of(write.unwrap_err()).message(),
        "context deadline exceeded"
    );
    etcd.advance(Duration::from_secs(60)).await;
    assert!(etcd.lease(lease).is_some(), "no leader, no expiry");

    let term = etcd.raft_term();
    etcd.start_member(ids[2]).await.unwrap();
    assert!(etcd.leader().is_some());
    assert_eq!(etcd.raft_term(), term + 1);
    assert_eq!(etcd.lease(lease).unwrap().remaining, Duration::from_secs(5));
    etcd.advance(Duration::from_secs(6)).await;
    assert!(etcd.lease(lease).is_none());
    assert!(last.get("k", None).await.unwrap().kvs().is_empty());
}

#[tokio::test]
async fn a_paused_leader_and_follower_return_with_the_same_leader_and_term() {
    let etcd = cluster(TimeSource::Virtual).await;
    let leader = etcd.leader().unwrap();
    let follower = ids(&etcd).into_iter().find(|&id| id != leader).unwrap();
    let term = etcd.raft_term();
    // Frozen together, as by one SIGSTOP: the follower first, so that the
    // member left alone never has a quorum to elect another leader.
    etcd.pause_member(follower).unwrap();
    etcd.pause_member(leader).unwrap();
    assert_eq!(etcd.leader(), None);
    etcd.resume_member(leader).unwrap();
    etcd.resume_member(follower).unwrap();
    assert_eq!(etcd.leader(), Some(leader));
    assert_eq!(etcd.raft_term(), term);
}

#[tokio::test]
async fn members_are_added_as_learners_started_promoted_and_removed() {
    let etcd = cluster(TimeSource::Virtual).await;
    let ids = ids(&etcd);
    let mut client = Client::connect(etcd.endpoints(), None).await.unwrap();

    let bad = client
        .member_add(["not a url"], None)
        .await
        .map(|_| ())
        .unwrap_err();
    let bad = status_of(bad);
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(bad.message(), "etcdserver: given member URLs are invalid");

    let taken = status_of(
        client
            .member_add(["http://127.0.0.1:12380"], None)
            .await
            .map(|_| ())
            .unwrap_err(),
    );
    assert_eq!(taken.message(), "etcdserver: Peer URLs already exists");

    let learner = etcd_client::MemberAddOptions::new().with_is_learner();
    let added = client
        .member_add(["http://127.0.0.1:42380"], Some(learner))
        .await
        .unwrap();
    let new = added.member().unwrap().clone();
    assert!(new.is_learner() && new.name().is_empty());
    assert_eq!(added.member_list().len(), 4);
    assert_eq!(added.header().unwrap().revision(), 0);
    let second = status_of(
        client
            .member_add(
                ["http://127.0.0.1:52380"],
                Some(etcd_client::MemberAddOptions::new().with_is_learner()),
            )
            .await
            .map(|_| ())
            .unwrap_err(),
    );
    assert_eq!(
        second.message(),
        "etcdserver: too many learner members in cluster"
    );

    let not_ready = status_of(
        client
            .member_promote(new.id())
            .await
            .map(|_| ())
            .unwrap_err(),
    );
    assert_eq!(
        not_ready.message(),
        "etcdserver: can only promote a learner member which is in sync with leader"
    );
    let voter = status_of(client.member_promote(ids[0]).await.map(|_| ()).unwrap_err());
    assert_eq!(
        voter.message(),
        "etcdserver: can only promote a learner member"
    );

    let endpoint = etcd.start_added_member(new.id(), "infra4").await.unwrap();
    let mut on_learner = Client::connect([endpoint], None).await.unwrap();
    client.put("k", "v", None).await.unwrap();
    let read = on_learner
        .get("k", Some(GetOptions::new().with_serializable()))
        .await
        .unwrap();
    assert_eq!(read.kvs()[0].value(), b"v");
    assert!(on_learner.status().await.unwrap().is_learner());
    let refused = status_of(on_learner.put("k", "w", None).await.unwrap_err());
    assert_eq!(refused.code(), Code::Unavailable);
    assert_eq!(
        refused.message(),
        "etcdserver: rpc not supported for learner"
    );
    let listed = client.member_list().await.unwrap();
    let named = listed
        .members()
        .iter()
        .find(|m| m.id() == new.id())
        .unwrap();
    assert_eq!(named.name(), "infra4");

    client.member_promote(new.id()).await.unwrap();
    assert!(!on_learner.status().await.unwrap().is_learner());

    // Removing the leader is allowed: the others elect a new one, and the
    // removed member stops serving.
    let leader = etcd.leader().unwrap();
    let term = etcd.raft_term();
    let survivor = ids.iter().copied().find(|&id| id != leader).unwrap();
    let mut survivor_client = client_of(&etcd, survivor).await;
    let removed = survivor_client.member_remove(leader).await.unwrap();
    assert_eq!(removed.members().len(), 3);
    assert_ne!(etcd.leader(), Some(leader));
    assert_eq!(etcd.raft_term(), term + 1);
    let gone = status_of(
        survivor_client
            .member_remove(leader)
            .await
            .map(|_| ())
            .unwrap_err(),
    );
    assert_eq!(gone.code(), Code::NotFound);
    assert_eq!(gone.message(), "etcdserver: member not found");
    let update = status_of(
        survivor_client
            .member_update(survivor, vec!["garbage".to_owned()])
            .await
            .map(|_| ())
            .unwrap_err(),
    );
    assert_eq!(
        update.message(),
        "etcdserver: given member URLs are invalid"
    );
    let endpoint = etcd.member_endpoint(leader).unwrap();
    within("the removed member's port to close", async {
        loop {
            let answered = match Client::connect([endpoint.clone()], None).await {
                Err(_) => false,
                Ok(mut c) => c.status().await.is_ok(),
            };
            if !answered {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn the_leader_moves_where_it_is_told() {
    let etcd = cluster(TimeSource::Virtual).await;
    let leader = etcd.leader().unwrap();
    let others: Vec<u64> = ids(&etcd).into_iter().filter(|&id| id != leader).collect();
    let mut on_follower = client_of(&etcd, others[0]).await;
    let refused = status_of(
        on_follower
            .move_leader(others[1])
            .await
            .map(|_| ())
            .unwrap_err(),
    );
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(refused.message(), "etcdserver: not leader");

    let mut on_leader = client_of(&etcd, leader).await;
    let bad = status_of(on_leader.move_leader(12345).await.map(|_| ()).unwrap_err());
    assert_eq!(bad.message(), "etcdserver: bad leader transferee");
    let term = etcd.raft_term();
    on_leader.move_leader(leader).await.unwrap();
    assert_eq!(etcd.raft_term(), term, "to itself: nothing moves");
    on_leader.move_leader(others[1]).await.unwrap();
    assert_eq!(etcd.leader(), Some(others[1]));
    assert_eq!(etcd.raft_term(), term + 1);
    let status = on_follower.status().await.unwrap();
    assert_eq!(status.leader(), others[1]);
    assert_eq!(status.raft_term(), term + 1);
}

#[tokio::test]
async fn controls_refuse_what_does_not_apply() {
    let etcd = cluster(TimeSource::Virtual).await;
    let id = ids(&etcd)[0];
    assert!(etcd.heal_member(id).is_err());
    assert!(etcd.start_member(id).await.is_err());
    assert!(etcd.isolate_member(7).is_err());
    etcd.isolate_member(id).unwrap();
    assert!(etcd.isolate_member(id).is_err());
    assert!(FakeEtcd::builder().members(0).start().await.is_err());
    assert!(FakeEtcd::builder().members(8).start().await.is_err());
}

#[tokio::test]
async fn initial_cluster_gives_the_ids_etcd_derives() {
    let etcd = FakeEtcd::builder()
        .initial_cluster("a=http://10.0.0.1:2380,b=http://10.0.0.2:2380")
        .start()
        .await
        .unwrap();
    let names: Vec<String> = etcd.members().into_iter().map(|m| m.name).collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"a".to_owned()));
    assert_eq!(etcd.endpoints().len(), 2);
    assert!(FakeEtcd::builder()
        .initial_cluster("a=http://x:1,b=http://x:1")
        .start()
        .await
        .is_err());
}

#[tokio::test]
async fn membership_waits_five_seconds_after_a_member_comes_back() {
    // etcd counts a peer for a membership change only once its connection
    // has been up for the 5 s health interval; initial members count at
    // once (the fake starts settled).
    let etcd = cluster(TimeSource::Virtual).await;
    let ids = ids(&etcd);
    let mut client = client_of(&etcd, ids[0]).await;
    let learner = || Some(etcd_client::MemberAddOptions::new().with_is_learner());

    etcd.stop_member(ids[2]).await.unwrap();
    etcd.start_member(ids[2]).await.unwrap();
    etcd.advance(Duration::from_millis(5_000)).await;
    let unhealthy = status_of(
        client
            .member_add(["http://127.0.0.1:42380"], learner())
            .await
            .map(|_| ())
            .unwrap_err(),
    );
    assert_eq!(unhealthy.code(), Code::Unavailable);
    assert_eq!(unhealthy.message(), "etcdserver: unhealthy cluster");
    let remove = status_of(client.member_remove(ids[1]).await.map(|_| ()).unwrap_err());
    assert_eq!(remove.message(), "etcdserver: unhealthy cluster");

    // etcd wants the link up for longer than the interval.
    etcd.advance(Duration::from_millis(1)).await;
    let added = client
        .member_add(["http://127.0.0.1:42380"], learner())
        .await
        .unwrap();
    client
        .member_remove(added.member().unwrap().id())
        .await
        .unwrap();
}
