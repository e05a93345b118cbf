//! Leases: grant, revoke, keepalive, time-to-live, listing, expiry, and
//! attaching keys. Time passes through [`Scenario::pass`], so on the fake
//! these run in virtual time and on a real etcd with short real waits.

use std::time::Duration;

use etcd_proto::etcdserverpb::{
    request_op::Request, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest,
    RequestOp, TxnRequest,
};
use tonic::Code;

use super::kv::{names, put, range, range_of};
use super::{assert_status, b};
use crate::Scenario;

const NOT_FOUND: &str = "etcdserver: requested lease not found";

/// A lease ID no other scenario picks: the prefix's hash, kept positive or
/// made negative on request.
fn own_id(s: &Scenario, salt: u64) -> i64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (s.prefix(), salt).hash(&mut h);
    (h.finish() >> 2) as i64 | 1
}

/// Grants a lease with a server-chosen ID.
pub async fn grant(s: &Scenario, ttl: i64) -> i64 {
    let resp = s
        .lease()
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await
        .expect("grant")
        .into_inner();
    resp.id
}

/// Puts `key` attached to `lease`; returns the new revision.
pub async fn put_with_lease(s: &Scenario, key: &str, lease: i64) -> i64 {
    let req = PutRequest {
        key: b(s.key(key)),
        value: b("v"),
        lease,
        ..Default::default()
    };
    s.kv()
        .put(req)
        .await
        .expect("put with lease")
        .into_inner()
        .header
        .unwrap()
        .revision
}

async fn time_to_live(
    s: &Scenario,
    id: i64,
    keys: bool,
) -> etcd_proto::etcdserverpb::LeaseTimeToLiveResponse {
    s.lease()
        .lease_time_to_live(LeaseTimeToLiveRequest { id, keys })
        .await
        .expect("ttl")
        .into_inner()
}

/// Server-chosen IDs are positive and unique; client-chosen ones (negative
/// too) are used as is; TTLs under 2 s are raised, over 9e9 s refused.
pub async fn grant_rules(s: &mut Scenario) {
    let a = grant(s, 10).await;
    let b_id = grant(s, 10).await;
    assert!(a > 0 && b_id > 0 && a != b_id, "{a} {b_id}");

    let mine = -own_id(s, 1);
    let resp = s
        .lease()
        .lease_grant(LeaseGrantRequest { ttl: 10, id: mine })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((resp.id, resp.ttl), (mine, 10));
    assert!(resp.error.is_empty());
    assert_status(
        s.lease()
            .lease_grant(LeaseGrantRequest { ttl: 10, id: mine })
            .await,
        Code::FailedPrecondition,
        "etcdserver: lease already exists",
    );
    for short in [0, 1, -5] {
        let resp = s
            .lease()
            .lease_grant(LeaseGrantRequest { ttl: short, id: 0 })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.ttl, 2, "a TTL of {short} is raised to the minimum");
    }
    assert_status(
        s.lease()
            .lease_grant(LeaseGrantRequest {
                ttl: 9_000_000_001,
                id: 0,
            })
            .await,
        Code::OutOfRange,
        "etcdserver: too large lease TTL",
    );
    let resp = s
        .lease()
        .lease_grant(LeaseGrantRequest {
            ttl: 9_000_000_000,
            id: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.ttl, 9_000_000_000);
    for id in [a, b_id, mine, resp.id] {
        s.lease()
            .lease_revoke(LeaseRevokeRequest { id })
            .await
            .unwrap();
    }
}

/// A grant does not bump the revision; its header has the current one.
pub async fn grant_keeps_revision(s: &mut Scenario) {
    let rev = put(s, "k", "v").await;
    let resp = s
        .lease()
        .lease_grant(LeaseGrantRequest { ttl: 10, id: 0 })
        .await
        .unwrap()
        .into_inner();
    let header = resp.header.unwrap();
    assert!(header.cluster_id != 0 && header.member_id != 0);
    if s.is_fake() {
        assert_eq!(header.revision, rev);
    }
}

/// Revoke deletes the lease's keys in one revision (none if it had none);
/// an unknown lease is NotFound.
pub async fn revoke(s: &mut Scenario) {
    let lease = grant(s, 60).await;
    put_with_lease(s, "a", lease).await;
    let rev = put_with_lease(s, "b", lease).await;
    put(s, "plain", "v").await;
    let resp = s
        .lease()
        .lease_revoke(LeaseRevokeRequest { id: lease })
        .await
        .unwrap()
        .into_inner();
    let after = resp.header.unwrap().revision;
    assert!(
        after > rev,
        "the header has the revision after the deletion"
    );
    let r = range(s, range_of(s, "", None)).await;
    assert_eq!(names(s, &r), ["plain"]);
    assert_status(
        s.lease()
            .lease_revoke(LeaseRevokeRequest { id: lease })
            .await,
        Code::NotFound,
        NOT_FOUND,
    );

    let empty = grant(s, 60).await;
    let resp = s
        .lease()
        .lease_revoke(LeaseRevokeRequest { id: empty })
        .await
        .unwrap()
        .into_inner();
    if s.is_fake() {
        assert_eq!(resp.header.unwrap().revision, after, "no keys, no revision");
        assert_eq!(
            after,
            rev + 2,
            "one revision for both keys (and one for the plain put)"
        );
    }
}

/// TimeToLive: truncated seconds left, the granted TTL, keys on request;
/// -1 for an unknown lease.
pub async fn time_to_live_reports(s: &mut Scenario) {
    let lease = grant(s, 10).await;
    put_with_lease(s, "b", lease).await;
    put_with_lease(s, "a", lease).await;
    let t = time_to_live(s, lease, true).await;
    assert_eq!((t.id, t.granted_ttl), (lease, 10));
    assert!((9..=10).contains(&t.ttl), "{}", t.ttl);
    let mut keys: Vec<_> = t
        .keys
        .iter()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    keys.sort();
    assert_eq!(keys, [s.key("a"), s.key("b")]);
    assert!(time_to_live(s, lease, false).await.keys.is_empty());

    s.pass(Duration::from_secs(3)).await;
    let t = time_to_live(s, lease, false).await;
    assert!((6..=7).contains(&t.ttl), "{}", t.ttl);

    let unknown = time_to_live(s, own_id(s, 2), true).await;
    assert_eq!(
        (unknown.id, unknown.ttl, unknown.granted_ttl),
        (own_id(s, 2), -1, 0)
    );
    assert!(unknown.header.is_some());
    s.lease()
        .lease_revoke(LeaseRevokeRequest { id: lease })
        .await
        .unwrap();
}

/// Leases lists every lease, soonest expiry first, when the leader
/// answers. A follower's lessor keeps no deadlines (etcd demotes every
/// lease to "forever" there), so its order is Go's map order: on a
/// cluster, only the set is checked when a follower answers.
pub async fn leases_sorted_by_expiry(s: &mut Scenario) {
    let late = grant(s, 300).await;
    let soon = grant(s, 100).await;
    let middle = grant(s, 200).await;
    let answer = s
        .lease()
        .lease_leases(LeaseLeasesRequest {})
        .await
        .unwrap()
        .into_inner();
    let listed: Vec<i64> = answer.leases.iter().map(|l| l.id).collect();
    let position = |id| listed.iter().position(|&l| l == id).expect("listed");
    let answered_by = answer.header.as_ref().map_or(0, |h| h.member_id);
    let leader = s
        .maintenance()
        .status(etcd_proto::etcdserverpb::StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .leader;
    if s.endpoints().len() <= 1 || answered_by == leader {
        assert!(
            position(soon) < position(middle) && position(middle) < position(late),
            "{listed:?}"
        );
    }
    for id in [late, soon, middle] {
        s.lease()
            .lease_revoke(LeaseRevokeRequest { id })
            .await
            .unwrap();
    }
}

/// KeepAlive answers each request with the granted TTL and resets the
/// deadline; an unknown lease gets TTL 0 and the stream stays open.
pub async fn keep_alive_stream(s: &mut Scenario) {
    let lease = grant(s, 3).await;
    let unknown = own_id(s, 3);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    // etcd (grpc-go) sends the stream's headers with its first response, so
    // the call only returns once a request is on its way.
    tx.send(LeaseKeepAliveRequest { id: lease }).await.unwrap();
    let first = 1;
    let mut responses = s
        .lease()
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("keepalive stream")
        .into_inner();
    for (i, id) in [lease, unknown, lease].into_iter().enumerate() {
        if i >= first {
            tx.send(LeaseKeepAliveRequest { id }).await.unwrap();
        }
        let resp = responses
            .message()
            .await
            .unwrap()
            .expect("a response per request");
        let expected = if id == lease { 3 } else { 0 };
        assert_eq!((resp.id, resp.ttl), (id, expected));
        assert!(resp.header.unwrap().revision > 0);
    }
    // Renewals keep it alive past its TTL.
    for _ in 0..3 {
        s.pass(Duration::from_secs(2)).await;
        tx.send(LeaseKeepAliveRequest { id: lease }).await.unwrap();
        assert_eq!(responses.message().await.unwrap().unwrap().ttl, 3);
    }
    assert!(
        time_to_live(s, lease, false).await.ttl > 0,
        "still alive after 6 s of renewals"
    );
    s.pass_ttl(3).await;
    tx.send(LeaseKeepAliveRequest { id: lease }).await.unwrap();
    assert_eq!(
        responses.message().await.unwrap().unwrap().ttl,
        0,
        "expired"
    );
}

/// A lease expires after its TTL with no keepalive: its keys go, in one
/// revision, and it is unknown afterwards.
pub async fn expiry_deletes_keys(s: &mut Scenario) {
    let lease = grant(s, 2).await;
    for k in ["c", "a", "b"] {
        put_with_lease(s, k, lease).await;
    }
    put(s, "plain", "v").await;
    s.pass(Duration::from_secs(1)).await;
    assert_eq!(
        names(s, &range(s, range_of(s, "", None)).await).len(),
        4,
        "not yet"
    );
    s.pass_ttl(1).await;
    let r = range(s, range_of(s, "", None)).await;
    assert_eq!(names(s, &r), ["plain"]);
    assert_eq!(time_to_live(s, lease, false).await.ttl, -1);
    assert_status(
        s.lease()
            .lease_revoke(LeaseRevokeRequest { id: lease })
            .await,
        Code::NotFound,
        NOT_FOUND,
    );
}

/// Put with a lease attaches; a put without one detaches; a delete
/// detaches; ignore_lease keeps it; a missing lease fails a put or a txn.
pub async fn attach_and_detach(s: &mut Scenario) {
    let first = grant(s, 60).await;
    let second = grant(s, 60).await;
    put_with_lease(s, "moved", first).await;
    put_with_lease(s, "moved", second).await;
    put_with_lease(s, "detached", first).await;
    put(s, "detached", "plain").await;
    put_with_lease(s, "deleted", first).await;
    s.kv()
        .delete_range(DeleteRangeRequest {
            key: b(s.key("deleted")),
            ..Default::default()
        })
        .await
        .unwrap();
    put_with_lease(s, "kept", first).await;
    let keep = PutRequest {
        key: b(s.key("kept")),
        value: b("new"),
        ignore_lease: true,
        ..Default::default()
    };
    s.kv().put(keep).await.unwrap();

    let keys_of = |t: etcd_proto::etcdserverpb::LeaseTimeToLiveResponse| {
        let mut k: Vec<_> = t
            .keys
            .iter()
            .map(|k| String::from_utf8_lossy(&k[s.prefix().len()..]).into_owned())
            .collect();
        k.sort();
        k
    };
    assert_eq!(keys_of(time_to_live(s, first, true).await), ["kept"]);
    assert_eq!(keys_of(time_to_live(s, second, true).await), ["moved"]);
    let r = range(
        s,
        RangeRequest {
            key: b(s.key("kept")),
            ..Default::default()
        },
    )
    .await;
    assert_eq!((r.kvs[0].lease, &r.kvs[0].value[..]), (first, &b"new"[..]));

    let missing = own_id(s, 4);
    let req = PutRequest {
        key: b(s.key("x")),
        lease: missing,
        ..Default::default()
    };
    assert_status(s.kv().put(req.clone()).await, Code::NotFound, NOT_FOUND);
    let txn = TxnRequest {
        success: vec![RequestOp {
            request: Some(Request::RequestPut(req)),
        }],
        ..Default::default()
    };
    assert_status(s.kv().txn(txn).await, Code::NotFound, NOT_FOUND);
    let in_txn = PutRequest {
        key: b(s.key("t")),
        lease: second,
        ..Default::default()
    };
    let txn = TxnRequest {
        success: vec![RequestOp {
            request: Some(Request::RequestPut(in_txn)),
        }],
        ..Default::default()
    };
    s.kv().txn(txn).await.unwrap();
    assert_eq!(keys_of(time_to_live(s, second, true).await), ["moved", "t"]);

    s.lease()
        .lease_revoke(LeaseRevokeRequest { id: first })
        .await
        .unwrap();
    let r = range(s, range_of(s, "", None)).await;
    assert_eq!(
        names(s, &r),
        ["detached", "moved", "t"],
        "only first's keys went"
    );
    s.lease()
        .lease_revoke(LeaseRevokeRequest { id: second })
        .await
        .unwrap();
}

/// `etcd-client`'s keeper keeps a lease alive across many steps shorter
/// than its TTL; the lease expires after a step longer than the TTL.
pub async fn etcd_client_keep_alive(s: &mut Scenario) {
    let mut client = s.client();
    let lease = client.lease_grant(3, None).await.unwrap().id();
    let key = s.key("alive");
    client
        .put(
            key.as_str(),
            "v",
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await
        .unwrap();
    let (mut keeper, mut stream) = client.lease_keep_alive(lease).await.unwrap();
    for _ in 0..5 {
        s.pass(Duration::from_secs(2)).await;
        keeper.keep_alive().await.unwrap();
        let resp = stream.message().await.unwrap().expect("keepalive response");
        assert_eq!((resp.id(), resp.ttl()), (lease, 3));
    }
    assert_eq!(
        client.get(key.as_str(), None).await.unwrap().kvs().len(),
        1,
        "alive after 10 s"
    );
    s.pass_ttl(3).await;
    assert!(
        client
            .get(key.as_str(), None)
            .await
            .unwrap()
            .kvs()
            .is_empty(),
        "gone after the TTL"
    );
    keeper.keep_alive().await.unwrap();
    assert_eq!(stream.message().await.unwrap().unwrap().ttl(), 0);
}
