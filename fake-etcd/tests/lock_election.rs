//! Lock and Election on the fake's own KV, Lease and Watch, with waits
//! driven by virtual time.

mod common;

use std::time::Duration;

use common::{connect, status_of, PATIENCE};
use etcd_client::{Client, LockOptions, ProclaimOptions, ResignOptions};
use fake_etcd::FakeEtcd;
use tonic::Code;

async fn lease(client: &mut Client, ttl: i64) -> i64 {
    client.lease_grant(ttl, None).await.unwrap().id()
}

/// Whether a spawned call is still waiting once every task has had its
/// chance: on tokio's paused clock the timeout fires only when all are
/// idle, and costs no wall time.
async fn still_waiting<T>(task: &mut tokio::task::JoinHandle<T>) -> bool {
    tokio::time::timeout(PATIENCE, task).await.is_err()
}

#[tokio::test(start_paused = true)]
async fn a_lock_is_a_key_under_its_name_and_waits_for_earlier_holders() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut first = connect(&etcd).await;
    let mut second = connect(&etcd).await;
    let held_by = lease(&mut first, 30).await;
    let waits_on = lease(&mut second, 60).await;

    let held = first
        .lock("jobs", Some(LockOptions::new().with_lease(held_by)))
        .await
        .unwrap();
    assert_eq!(held.key(), format!("jobs/{held_by:x}").as_bytes());
    let put_revision = held.header().unwrap().revision();
    assert_eq!(put_revision, etcd.revision(), "the header is the put's");

    // Re-entrant: the same lease gets the same key at once.
    let again = first
        .lock("jobs", Some(LockOptions::new().with_lease(held_by)))
        .await
        .unwrap();
    assert_eq!(again.key(), held.key());

    let mut waiter = tokio::spawn(async move {
        second
            .lock("jobs", Some(LockOptions::new().with_lease(waits_on)))
            .await
    });
    assert!(
        still_waiting(&mut waiter).await,
        "the holder has not let go"
    );
    // The waiter's key is there, visible to everyone, behind the holder's.
    let keys = first
        .get("jobs/", Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap();
    assert_eq!(keys.kvs().len(), 2);

    // The holder's lease expires: the lock passes inside that advance.
    etcd.advance(Duration::from_secs(31)).await;
    let granted = tokio::time::timeout(PATIENCE, waiter)
        .await
        .expect("granted once the holder's lease expired")
        .unwrap()
        .unwrap();
    assert_eq!(granted.key(), format!("jobs/{waits_on:x}").as_bytes());

    first.unlock(granted.key()).await.unwrap();
    assert!(first
        .get("jobs/", Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .unwrap()
        .kvs()
        .is_empty());
}

/// Lock and Election call the member as etcd's in-process client does:
/// past the test's faults, which stay for the test's own calls.
#[tokio::test(start_paused = true)]
async fn the_members_own_calls_pass_the_tests_faults_by() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut holder = connect(&etcd).await;
    let mut waiter = connect(&etcd).await;
    etcd.fail_next(fake_etcd::Rpc::Txn, 1, fake_etcd::errors::leader_changed());
    etcd.stall_watches();
    let held_by = lease(&mut holder, 30).await;
    let waits_on = lease(&mut waiter, 60).await;
    holder
        .lock("jobs", Some(LockOptions::new().with_lease(held_by)))
        .await
        .expect("Lock's txn is not the test's Txn");
    let mut waiting = tokio::spawn(async move {
        waiter
            .lock("jobs", Some(LockOptions::new().with_lease(waits_on)))
            .await
    });
    assert!(still_waiting(&mut waiting).await);
    etcd.advance(Duration::from_secs(31)).await;
    tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("the waiter's watch is not stalled by the test's stall")
        .unwrap()
        .unwrap();
    let failed = holder.txn(etcd_client::Txn::new()).await.unwrap_err();
    assert!(failed.to_string().contains("leader changed"), "{failed}");
}

#[tokio::test(start_paused = true)]
async fn lock_errors_are_unknown_with_etcds_plain_text() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut client = connect(&etcd).await;
    let missing = client
        .lock("jobs", Some(LockOptions::new().with_lease(12345)))
        .await
        .unwrap_err();
    let status = status_of(missing);
    assert_eq!(status.code(), Code::Unknown);
    assert_eq!(status.message(), "etcdserver: requested lease not found");

    let empty = status_of(client.unlock("").await.unwrap_err());
    assert_eq!(
        (empty.code(), empty.message()),
        (Code::Unknown, "etcdserver: key is not provided")
    );
    // Unlocking a key that is not there is fine.
    client.unlock("jobs/nothing").await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_lock_without_a_lease_lives_sixty_seconds() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut client = connect(&etcd).await;
    let held = client.lock("jobs", None).await.unwrap();
    let leases = etcd.leases();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].granted_ttl, 60);
    assert_eq!(leases[0].keys, vec![held.key().to_vec()]);
    etcd.advance(Duration::from_secs(61)).await;
    assert!(client.get(held.key(), None).await.unwrap().kvs().is_empty());
}

/// A waiter whose own lease expires while it waits learns it when the lock
/// is released: etcd's "mutex: session is expired".
#[tokio::test(start_paused = true)]
async fn a_waiter_whose_lease_expires_is_told_its_session_expired() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut holder = connect(&etcd).await;
    let mut waiter = connect(&etcd).await;
    let held_by = lease(&mut holder, 60).await;
    let short = lease(&mut waiter, 5).await;
    let held = holder
        .lock("jobs", Some(LockOptions::new().with_lease(held_by)))
        .await
        .unwrap();
    let mut waiting = tokio::spawn(async move {
        waiter
            .lock("jobs", Some(LockOptions::new().with_lease(short)))
            .await
    });
    assert!(still_waiting(&mut waiting).await);
    etcd.advance(Duration::from_secs(6)).await; // the waiter's key is gone
    assert!(still_waiting(&mut waiting).await, "still behind the holder");
    holder.unlock(held.key()).await.unwrap();
    let expired = status_of(
        tokio::time::timeout(PATIENCE, waiting)
            .await
            .expect("answered once the lock was released")
            .unwrap()
            .unwrap_err(),
    );
    assert_eq!(
        (expired.code(), expired.message()),
        (Code::Unknown, "mutex: session is expired")
    );
}

#[tokio::test(start_paused = true)]
async fn a_waiter_that_goes_away_takes_its_key_with_it() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut holder = connect(&etcd).await;
    let mut quitter = connect(&etcd).await;
    let held_by = lease(&mut holder, 30).await;
    let quits = lease(&mut quitter, 30).await;
    holder
        .lock("jobs", Some(LockOptions::new().with_lease(held_by)))
        .await
        .unwrap();
    let mut waiter = tokio::spawn(async move {
        quitter
            .lock("jobs", Some(LockOptions::new().with_lease(quits)))
            .await
    });
    assert!(still_waiting(&mut waiter).await);
    waiter.abort();
    let quitter_key = format!("jobs/{quits:x}");
    let mut gone = false;
    for _ in 0..100 {
        if holder
            .get(quitter_key.as_str(), None)
            .await
            .unwrap()
            .kvs()
            .is_empty()
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(gone, "the withdrawn waiter's key was deleted");
}

/// The README's example: two candidates, the leader's lease expires under
/// `advance`, and the other wins, with no sleeps.
#[tokio::test(start_paused = true)]
async fn the_next_candidate_wins_when_the_leaders_lease_expires() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut alice = connect(&etcd).await;
    let mut bob = connect(&etcd).await;
    let alice_lease = lease(&mut alice, 10).await;
    let bob_lease = lease(&mut bob, 60).await;

    let won = alice
        .campaign("leader", "alice", alice_lease)
        .await
        .unwrap();
    let alice_key = won.leader().unwrap().clone();
    assert_eq!(
        alice.leader("leader").await.unwrap().kv().unwrap().value(),
        b"alice"
    );

    let mut observer = alice.observe("leader").await.unwrap();
    let first = tokio::time::timeout(PATIENCE, observer.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.kv().unwrap().value(), b"alice");

    alice
        .proclaim(
            "alice, again",
            Some(ProclaimOptions::new().with_leader(alice_key.clone())),
        )
        .await
        .unwrap();
    let proclaimed = tokio::time::timeout(PATIENCE, observer.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(proclaimed.kv().unwrap().value(), b"alice, again");

    let mut campaign = tokio::spawn(async move { bob.campaign("leader", "bob", bob_lease).await });
    assert!(still_waiting(&mut campaign).await, "alice still leads");

    etcd.advance(Duration::from_secs(11)).await;
    let bob_won = tokio::time::timeout(PATIENCE, campaign)
        .await
        .expect("bob wins once alice's lease expired")
        .unwrap()
        .unwrap();
    assert_eq!(
        bob_won.leader().unwrap().key(),
        format!("leader/{bob_lease:x}").as_bytes()
    );
    let next = tokio::time::timeout(PATIENCE, observer.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.kv().unwrap().value(), b"bob");

    // Alice lost: proclaiming fails, resigning is still OK.
    let not_leader = status_of(
        alice
            .proclaim(
                "mine",
                Some(ProclaimOptions::new().with_leader(alice_key.clone())),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (not_leader.code(), not_leader.message()),
        (Code::Unknown, "election: not leader")
    );
    alice
        .resign(Some(ResignOptions::new().with_leader(alice_key)))
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_election_without_candidates_has_no_leader() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut client = connect(&etcd).await;
    let status = status_of(client.leader("nobody").await.unwrap_err());
    assert_eq!(
        (status.code(), status.message()),
        (Code::Unknown, "election: no leader")
    );
}
