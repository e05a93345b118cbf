//! Txn: compares, branches, nesting, validation, revisions and headers.

use etcd_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op::Request,
    response_op::Response,
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, ResponseOp, TxnRequest,
    TxnResponse,
};
use tonic::Code;

use super::kv::{names, put, range, range_of};
use super::{assert_status, b};
use crate::Scenario;

const DUPLICATE: &str = "etcdserver: duplicate key given in txn request";

fn op_put(s: &Scenario, key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: b(s.key(key)),
            value: b(value),
            ..Default::default()
        })),
    }
}

fn op_get(s: &Scenario, key: &str) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(RangeRequest {
            key: b(s.key(key)),
            ..Default::default()
        })),
    }
}

fn op_del(s: &Scenario, key: &str, end: Option<&str>) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
            key: b(s.key(key)),
            range_end: end.map(|e| b(s.key(e))).unwrap_or_default(),
            prev_kv: false,
        })),
    }
}

fn op_txn(txn: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestTxn(txn)),
    }
}

fn cmp(
    s: &Scenario,
    key: &str,
    target: CompareTarget,
    result: CompareResult,
    union: TargetUnion,
) -> Compare {
    Compare {
        key: b(s.key(key)),
        target: target as i32,
        result: result as i32,
        target_union: Some(union),
        range_end: Default::default(),
    }
}

async fn txn(s: &Scenario, req: TxnRequest) -> TxnResponse {
    s.kv().txn(req).await.expect("txn").into_inner()
}

fn range_response(op: &ResponseOp) -> &etcd_proto::etcdserverpb::RangeResponse {
    match &op.response {
        Some(Response::ResponseRange(r)) => r,
        other => panic!("expected a range response, got {other:?}"),
    }
}

/// All five compare targets, each result, and the zero KeyValue a missing key
/// compares as (except VALUE, which then always fails).
pub async fn compare_targets(s: &mut Scenario) {
    use CompareResult::{Equal, Greater, Less, NotEqual};
    use CompareTarget::{Create, Lease, Mod, Value, Version};
    let rev = put(s, "k", "m").await;
    let second = put(s, "k", "m").await;
    let cases = [
        (cmp(s, "k", Version, Equal, TargetUnion::Version(2)), true),
        (cmp(s, "k", Version, Greater, TargetUnion::Version(1)), true),
        (cmp(s, "k", Version, Less, TargetUnion::Version(2)), false),
        (
            cmp(s, "k", Create, Equal, TargetUnion::CreateRevision(rev)),
            true,
        ),
        (
            cmp(s, "k", Mod, Equal, TargetUnion::ModRevision(second)),
            true,
        ),
        (
            cmp(s, "k", Mod, NotEqual, TargetUnion::ModRevision(second)),
            false,
        ),
        (cmp(s, "k", Value, Equal, TargetUnion::Value(b("m"))), true),
        (
            cmp(s, "k", Value, Greater, TargetUnion::Value(b("a"))),
            true,
        ),
        (cmp(s, "k", Value, Less, TargetUnion::Value(b("z"))), true),
        (cmp(s, "k", Lease, Equal, TargetUnion::Lease(0)), true),
        (
            cmp(s, "missing", Version, Equal, TargetUnion::Version(0)),
            true,
        ),
        (
            cmp(s, "missing", Create, Less, TargetUnion::CreateRevision(1)),
            true,
        ),
        (
            cmp(s, "missing", Value, NotEqual, TargetUnion::Value(b("x"))),
            false,
        ),
        (
            cmp(s, "missing", Value, Equal, TargetUnion::Value(b(""))),
            false,
        ),
    ];
    for (compare, expected) in cases {
        let resp = txn(
            s,
            TxnRequest {
                compare: vec![compare.clone()],
                ..Default::default()
            },
        )
        .await;
        assert_eq!(resp.succeeded, expected, "{compare:?}");
    }
    // A missing target_union compares against zero.
    for (result, expected) in [(Greater, true), (Equal, false)] {
        let mut no_union = cmp(s, "k", Version, result, TargetUnion::Version(2));
        no_union.target_union = None;
        let compare = vec![no_union];
        let resp = txn(
            s,
            TxnRequest {
                compare,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(
            resp.succeeded, expected,
            "version 2 against a missing target (0), {result:?}"
        );
    }
}

/// Every compare target with every result at its boundaries: a value one
/// below the key's, the key's own, and one above. An off-by-one (`LESS`
/// taken as `<=`, `GREATER` as `>=`) fails here on the equal value.
pub async fn compare_boundaries(s: &mut Scenario) {
    use std::cmp::Ordering;
    use CompareResult::{Equal, Greater, Less, NotEqual};
    use CompareTarget::{Create, Lease, Mod, Value, Version};
    let lease = s
        .lease()
        .lease_grant(etcd_proto::etcdserverpb::LeaseGrantRequest { ttl: 60, id: 0 })
        .await
        .expect("lease grant")
        .into_inner()
        .id;
    put(s, "k", "m").await;
    s.kv()
        .put(PutRequest {
            key: b(s.key("k")),
            value: b("m"),
            lease,
            ..Default::default()
        })
        .await
        .expect("put with lease");
    let mut got = range(
        s,
        RangeRequest {
            key: b(s.key("k")),
            ..Default::default()
        },
    )
    .await;
    let kv = got.kvs.remove(0);
    // (target, the key's value, a union holding a value near it)
    type Numeric = (CompareTarget, i64, fn(i64) -> TargetUnion);
    let numeric: [Numeric; 4] = [
        (Version, kv.version, TargetUnion::Version),
        (Create, kv.create_revision, TargetUnion::CreateRevision),
        (Mod, kv.mod_revision, TargetUnion::ModRevision),
        (Lease, kv.lease, TargetUnion::Lease),
    ];
    let mut cases = Vec::new();
    for (target, actual, union) in numeric {
        for given in [actual - 1, actual, actual + 1] {
            cases.push((target, union(given), actual.cmp(&given)));
        }
    }
    for given in ["l", "m", "n"] {
        cases.push((
            Value,
            TargetUnion::Value(b(given)),
            b"m"[..].cmp(given.as_bytes()),
        ));
    }
    for (target, union, actual_vs_given) in cases {
        for result in [Equal, NotEqual, Greater, Less] {
            let expected = match result {
                Equal => actual_vs_given == Ordering::Equal,
                NotEqual => actual_vs_given != Ordering::Equal,
                Greater => actual_vs_given == Ordering::Greater,
                Less => actual_vs_given == Ordering::Less,
            };
            let compare = cmp(s, "k", target, result, union.clone());
            let resp = txn(
                s,
                TxnRequest {
                    compare: vec![compare.clone()],
                    ..Default::default()
                },
            )
            .await;
            assert_eq!(resp.succeeded, expected, "{compare:?}");
        }
    }
}

/// A compare over a range holds only if every key in it satisfies it.
pub async fn compare_over_ranges(s: &mut Scenario) {
    put(s, "r/a", "1").await;
    put(s, "r/b", "1").await;
    let over = |value: &str| {
        let mut c = cmp(
            s,
            "r/",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value(b(value)),
        );
        c.range_end = b(s.key("r0"));
        TxnRequest {
            compare: vec![c],
            ..Default::default()
        }
    };
    assert!(txn(s, over("1")).await.succeeded);
    put(s, "r/b", "2").await;
    assert!(!txn(s, over("1")).await.succeeded);
}

/// The chosen branch runs; all its ops share one revision; ranges later in
/// the txn see earlier writes; inner headers carry only revisions.
pub async fn branches_revisions_and_headers(s: &mut Scenario) {
    let before = put(s, "k", "1").await;
    let req = TxnRequest {
        compare: vec![cmp(
            s,
            "k",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value(b("1")),
        )],
        success: vec![
            op_get(s, "k"),
            op_put(s, "k", "2"),
            op_put(s, "j", "x"),
            op_get(s, "k"),
            op_del(s, "nothing", None),
        ],
        failure: vec![op_put(s, "failed", "x")],
    };
    let resp = txn(s, req).await;
    assert!(resp.succeeded);
    let header = resp.header.unwrap();
    let rev = header.revision;
    assert!(header.cluster_id != 0 && header.member_id != 0);
    let inner: Vec<_> = resp
        .responses
        .iter()
        .map(|r| {
            let h = match &r.response {
                Some(Response::ResponseRange(x)) => x.header,
                Some(Response::ResponsePut(x)) => x.header,
                Some(Response::ResponseDeleteRange(x)) => x.header,
                _ => None,
            }
            .expect("inner header");
            assert_eq!(
                (h.cluster_id, h.member_id, h.raft_term),
                (0, 0, 0),
                "inner headers carry only the revision"
            );
            h.revision
        })
        .collect();
    // The first range ran before any write in the txn, the rest after.
    assert_eq!(inner[1..], [rev, rev, rev, rev]);
    assert!(inner[0] < rev && inner[0] >= before);
    assert_eq!(&range_response(&resp.responses[0]).kvs[0].value[..], b"1");
    assert_eq!(&range_response(&resp.responses[3]).kvs[0].value[..], b"2");

    let r = range(s, range_of(s, "", None)).await;
    assert_eq!(names(s, &r), ["j", "k"]);
    assert!(
        r.kvs.iter().all(|kv| kv.mod_revision == rev),
        "one revision for the whole txn"
    );

    // The failure branch.
    let req = TxnRequest {
        compare: vec![cmp(
            s,
            "k",
            CompareTarget::Value,
            CompareResult::Equal,
            TargetUnion::Value(b("1")),
        )],
        success: vec![op_put(s, "never", "x")],
        failure: vec![op_get(s, "k")],
    };
    let resp = txn(s, req).await;
    assert!(!resp.succeeded && resp.responses.len() == 1);
}

/// Nested txns: their compares see the state before the txn, their
/// responses have an empty header, and branch errors count only on the taken
/// path.
pub async fn nested_txns(s: &mut Scenario) {
    let nested = TxnRequest {
        compare: vec![cmp(
            s,
            "n1",
            CompareTarget::Version,
            CompareResult::Equal,
            TargetUnion::Version(0),
        )],
        success: vec![op_put(s, "n2", "then")],
        failure: vec![op_put(s, "n2", "else")],
    };
    let req = TxnRequest {
        success: vec![op_put(s, "n1", "x"), op_txn(nested)],
        ..Default::default()
    };
    let resp = txn(s, req).await;
    match &resp.responses[1].response {
        Some(Response::ResponseTxn(inner)) => {
            assert!(
                inner.succeeded,
                "a nested compare sees the state before the txn"
            );
            assert_eq!(
                inner.header.unwrap_or_default(),
                Default::default(),
                "nested header is empty"
            );
        }
        other => panic!("expected a txn response, got {other:?}"),
    }
    let r = range(
        s,
        RangeRequest {
            key: b(s.key("n2")),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(&r.kvs[0].value[..], b"then");

    // A bad lease on the branch not taken is ignored; on the taken one it
    // fails the whole txn and changes nothing.
    let bad_lease = RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: b(s.key("l")),
            lease: 0x7bad_1ea5e,
            ..Default::default()
        })),
    };
    let ok = TxnRequest {
        success: vec![op_put(s, "ok", "1")],
        failure: vec![bad_lease.clone()],
        ..Default::default()
    };
    assert!(txn(s, ok).await.succeeded);
    let fails = TxnRequest {
        success: vec![op_put(s, "not-written", "1"), bad_lease],
        ..Default::default()
    };
    assert_status(
        s.kv().txn(fails).await,
        Code::NotFound,
        "etcdserver: requested lease not found",
    );
    let r = range(
        s,
        RangeRequest {
            key: b(s.key("not-written")),
            ..Default::default()
        },
    )
    .await;
    assert!(r.kvs.is_empty(), "a failed txn changes nothing");

    let ignore_missing = RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: b(s.key("absent")),
            ignore_value: true,
            ..Default::default()
        })),
    };
    let req = TxnRequest {
        success: vec![ignore_missing],
        ..Default::default()
    };
    assert_status(
        s.kv().txn(req).await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );
}

/// Validation: op limits (nested txns share the budget), empty keys, empty
/// ops, and the duplicate-key rules on both branches.
pub async fn txn_validation(s: &mut Scenario) {
    let puts = |s: &Scenario, p: &str, n: usize| {
        (0..n)
            .map(|i| op_put(s, &format!("{p}{i}"), "v"))
            .collect::<Vec<_>>()
    };
    let ok = TxnRequest {
        success: puts(s, "k", 128),
        ..Default::default()
    };
    let resp = txn(s, ok).await;
    assert_eq!(resp.responses.len(), 128, "128 ops are allowed");
    let too_many = TxnRequest {
        success: puts(s, "k", 129),
        ..Default::default()
    };
    assert_status(
        s.kv().txn(too_many).await,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );
    let mut parent = puts(s, "p", 99);
    parent.push(op_txn(TxnRequest {
        success: puts(s, "n", 29),
        ..Default::default()
    }));
    let nested_too_many = TxnRequest {
        success: parent,
        ..Default::default()
    };
    assert_status(
        s.kv().txn(nested_too_many).await,
        Code::InvalidArgument,
        "etcdserver: too many operations in txn request",
    );
    let mut parent = puts(s, "p", 99);
    parent.push(op_txn(TxnRequest {
        success: puts(s, "n", 28),
        ..Default::default()
    }));
    txn(
        s,
        TxnRequest {
            success: parent,
            ..Default::default()
        },
    )
    .await;

    let empty_compare = Compare {
        key: b(""),
        ..Default::default()
    };
    let req = TxnRequest {
        compare: vec![empty_compare],
        ..Default::default()
    };
    assert_status(
        s.kv().txn(req).await,
        Code::InvalidArgument,
        "etcdserver: key is not provided",
    );
    let req = TxnRequest {
        success: vec![RequestOp { request: None }],
        ..Default::default()
    };
    assert_status(
        s.kv().txn(req).await,
        Code::InvalidArgument,
        "etcdserver: key not found",
    );

    let dup = |success: Vec<RequestOp>| TxnRequest {
        success,
        ..Default::default()
    };
    let refused = [
        dup(vec![op_put(s, "a", "1"), op_put(s, "a", "2")]),
        dup(vec![op_del(s, "a", Some("c")), op_put(s, "b", "1")]),
        dup(vec![
            op_txn(TxnRequest {
                success: vec![op_put(s, "a", "1")],
                ..Default::default()
            }),
            op_txn(TxnRequest {
                success: vec![op_put(s, "a", "1")],
                ..Default::default()
            }),
        ]),
        dup(vec![
            op_del(s, "a", Some("z")),
            op_txn(TxnRequest {
                success: vec![op_put(s, "b", "1")],
                ..Default::default()
            }),
        ]),
        // Checked on the failure branch too, whatever the compares say.
        TxnRequest {
            failure: vec![op_put(s, "a", "1"), op_put(s, "a", "2")],
            ..Default::default()
        },
    ];
    for req in refused {
        assert_status(
            s.kv().txn(req.clone()).await,
            Code::InvalidArgument,
            DUPLICATE,
        );
    }
    let allowed = [
        dup(vec![op_del(s, "a", Some("c")), op_del(s, "b", Some("d"))]),
        dup(vec![op_txn(TxnRequest {
            success: vec![op_put(s, "a", "1")],
            failure: vec![op_put(s, "a", "2")],
            ..Default::default()
        })]),
        TxnRequest {
            success: vec![op_put(s, "a", "1")],
            failure: vec![op_put(s, "a", "2")],
            ..Default::default()
        },
    ];
    for req in allowed {
        txn(s, req).await;
    }
}

/// A txn that changes nothing (reads, or deletes of missing keys) keeps the
/// revision; a read-only txn is not limited in size.
pub async fn txns_without_changes(s: &mut Scenario) {
    let rev = put(s, "k", "v").await;
    let read_only = TxnRequest {
        success: vec![op_get(s, "k")],
        ..Default::default()
    };
    let resp = txn(s, read_only).await;
    let delete_missing = TxnRequest {
        success: vec![op_del(s, "missing", None)],
        ..Default::default()
    };
    let resp2 = txn(s, delete_missing).await;
    if s.is_fake() {
        assert_eq!(resp.header.unwrap().revision, rev);
        assert_eq!(resp2.header.unwrap().revision, rev);
    }
    let empty = txn(s, TxnRequest::default()).await;
    assert!(empty.succeeded && empty.responses.is_empty());

    let big_read = TxnRequest {
        success: vec![RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: vec![b'k'; 1_700_000].into(),
                ..Default::default()
            })),
        }],
        ..Default::default()
    };
    txn(s, big_read).await;
}

/// Ranges inside a txn check their revision against the store: future and
/// compacted revisions fail the txn.
pub async fn txn_range_revisions(s: &mut Scenario) {
    let rev = put(s, "k", "v").await;
    let at = |s: &Scenario, revision: i64| TxnRequest {
        success: vec![RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: b(s.key("k")),
                revision,
                ..Default::default()
            })),
        }],
        ..Default::default()
    };
    let resp = txn(s, at(s, rev)).await;
    assert_eq!(range_response(&resp.responses[0]).kvs.len(), 1);
    assert_status(
        s.kv().txn(at(s, rev + 1_000_000)).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    // A negative revision is compared with the compaction point as is.
    assert_status(
        s.kv().txn(at(s, -2)).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
}
