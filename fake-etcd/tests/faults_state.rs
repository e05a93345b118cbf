//! State faults: compaction under a watcher, the NOSPACE alarm, a leader
//! change.

mod common;

use common::{connect, put_on_new_lease, status_of};

use std::time::Duration;

use etcd_client::{AlarmAction, AlarmOptions, AlarmType, PutOptions, WatchOptions};
use fake_etcd::FakeEtcd;
use tonic::Code;

#[tokio::test]
async fn a_watcher_resuming_below_a_compaction_is_told() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut client = connect(&etcd).await;
    let first = client
        .put("k", "1", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    client.put("k", "2", None).await.unwrap();
    let compacted = etcd.revision();
    assert_eq!(etcd.compact(compacted), Ok(()));
    assert_eq!(
        etcd.compact(1),
        Err(fake_etcd::ControlError::Compacted {
            requested: 1,
            compacted
        }),
        "at or below the last compaction is refused"
    );
    assert!(matches!(
        etcd.compact(compacted + 10),
        Err(fake_etcd::ControlError::FutureRevision { .. })
    ));
    let mut watch = client
        .watch("k", Some(WatchOptions::new().with_start_revision(first)))
        .await
        .unwrap();
    assert!(watch.message().await.unwrap().unwrap().created());
    let canceled = watch.message().await.unwrap().unwrap();
    assert!(canceled.canceled());
    assert_eq!(canceled.compact_revision(), etcd.revision());
}

#[tokio::test]
async fn no_space_refuses_writes_until_disarmed() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut client = connect(&etcd).await;
    client.put("kept", "v", None).await.unwrap();
    etcd.raise_no_space();

    let s = status_of(client.put("k", "v", None).await.unwrap_err());
    assert_eq!(
        (s.code(), s.message()),
        (
            Code::ResourceExhausted,
            "etcdserver: mvcc: database space exceeded"
        )
    );
    assert!(
        client.lease_grant(10, None).await.is_err(),
        "a grant needs space too"
    );
    client
        .delete("kept", None)
        .await
        .expect("deletes still work");
    let alarms = client
        .alarm(AlarmAction::Get, AlarmType::None, None)
        .await
        .unwrap();
    assert_eq!(alarms.alarms().len(), 1);
    assert_eq!(alarms.alarms()[0].alarm(), AlarmType::Nospace);
    let status = client.status().await.unwrap();
    assert!(
        status.errors().iter().any(|e| e.contains("NOSPACE")),
        "{:?}",
        status.errors()
    );

    // What `etcdctl alarm disarm` does.
    let member = alarms.alarms()[0].member_id();
    let mut options = AlarmOptions::new();
    options.with_member(member);
    client
        .alarm(AlarmAction::Deactivate, AlarmType::Nospace, Some(options))
        .await
        .unwrap();
    client.put("k", "v", None).await.expect("writes work again");
}

#[tokio::test]
async fn a_leader_change_bumps_the_term_and_renews_leases() {
    let etcd = FakeEtcd::start().await.unwrap();
    let mut client = connect(&etcd).await;
    let lease = put_on_new_lease(&mut client, "k", 10).await;
    let mut watch = client.watch("k", None).await.unwrap();
    assert!(watch.message().await.unwrap().unwrap().created());
    let term = client.status().await.unwrap().raft_term();
    etcd.advance(Duration::from_secs(9)).await;

    etcd.change_leader();

    assert_eq!(client.status().await.unwrap().raft_term(), term + 1);
    assert_eq!(
        etcd.lease(lease).unwrap().remaining,
        Duration::from_secs(10)
    );
    client
        .put("k", "w", Some(PutOptions::new().with_lease(lease)))
        .await
        .unwrap();
    let resp = watch.message().await.unwrap().unwrap();
    assert_eq!(
        resp.events().len(),
        1,
        "streams survive a leader change on a single member"
    );
    assert_eq!(resp.header().unwrap().raft_term(), term + 1);
}
