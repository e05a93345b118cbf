//! Range, Put, DeleteRange and Compact, as etcd 3.5 answers them.

use etcd_proto::etcdserverpb::{
    range_request::{SortOrder, SortTarget},
    CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse,
};
use tonic::Code;

use super::{assert_status, b};
use crate::Scenario;

const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";
const FUTURE: &str = "etcdserver: mvcc: required revision is a future revision";
const EMPTY_KEY: &str = "etcdserver: key is not provided";

/// Puts `key` under the scenario's prefix; returns the new revision.
pub async fn put(s: &Scenario, key: &str, value: &str) -> i64 {
    let req = PutRequest {
        key: b(s.key(key)),
        value: b(value),
        ..Default::default()
    };
    let resp = s.kv().put(req).await.expect("put").into_inner();
    resp.header.expect("header").revision
}

/// A range request over the scenario's keys `[from, to)` (`to` empty: all).
pub fn range_of(s: &Scenario, from: &str, to: Option<&str>) -> RangeRequest {
    RangeRequest {
        key: b(s.key(from)),
        range_end: match to {
            Some(to) => b(s.key(to)),
            None => s.prefix_end().into(),
        },
        ..Default::default()
    }
}

/// Runs a range request.
pub async fn range(s: &Scenario, req: RangeRequest) -> RangeResponse {
    s.kv().range(req).await.expect("range").into_inner()
}

/// The keys of a response, without the scenario prefix.
pub fn names(s: &Scenario, resp: &RangeResponse) -> Vec<String> {
    resp.kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key[s.prefix().len()..]).into_owned())
        .collect()
}

/// Single key, prefix, `[key, end)`, from-key, and an end at or before the
/// key (an empty result, not an error).
pub async fn range_end_rules(s: &mut Scenario) {
    for k in ["a", "b", "b1", "c"] {
        put(s, k, k).await;
    }
    let single = RangeRequest {
        key: b(s.key("b")),
        ..Default::default()
    };
    let r = range(s, single).await;
    assert_eq!(names(s, &r), ["b"]);

    let r = range(s, range_of(s, "b", Some("c"))).await;
    assert_eq!(names(s, &r), ["b", "b1"]);

    let r = range(s, range_of(s, "", None)).await;
    assert_eq!(names(s, &r), ["a", "b", "b1", "c"], "prefix");

    for end in ["b", "a"] {
        let r = range(s, range_of(s, "b", Some(end))).await;
        assert!(
            r.kvs.is_empty() && r.count == 0,
            "end {end} ≤ key gives nothing"
        );
    }

    // From-key reaches past this scenario's keys on a shared etcd, so look
    // at the first ones only.
    let mut from = RangeRequest {
        key: b(s.key("b1")),
        range_end: b("\0"),
        ..Default::default()
    };
    from.limit = 2;
    let r = range(s, from).await;
    assert_eq!(names(s, &r)[..], ["b1", "c"]);

    let missing = RangeRequest {
        key: b(s.key("zz")),
        ..Default::default()
    };
    let r = range(s, missing).await;
    assert!(r.kvs.is_empty() && r.count == 0 && !r.more);
}

/// Reads at old revisions see the store as it was; the header always has
/// the current revision; a future revision is refused.
pub async fn reads_at_old_revisions(s: &mut Scenario) {
    let r1 = put(s, "k", "1").await;
    let r2 = put(s, "k", "2").await;
    let mut del = DeleteRangeRequest {
        key: b(s.key("k")),
        ..Default::default()
    };
    del.prev_kv = false;
    let r3 = s
        .kv()
        .delete_range(del)
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision;
    assert!(r1 < r2 && r2 < r3, "one revision each: {r1} {r2} {r3}");
    if s.is_fake() {
        assert_eq!((r2, r3), (r1 + 1, r1 + 2));
    }

    let at = |rev| RangeRequest {
        key: b(s.key("k")),
        revision: rev,
        ..Default::default()
    };
    let before = range(s, at(r1 - 1)).await;
    assert!(before.kvs.is_empty());
    let first = range(s, at(r1)).await;
    assert_eq!(&first.kvs[0].value[..], b"1");
    assert!(
        first.header.as_ref().unwrap().revision >= r3,
        "header has the current revision"
    );
    let second = range(s, at(r2)).await;
    assert_eq!(&second.kvs[0].value[..], b"2");
    assert_eq!(
        (second.kvs[0].create_revision, second.kvs[0].version),
        (r1, 2)
    );
    assert!(range(s, at(r3)).await.kvs.is_empty());

    let current = first.header.unwrap().revision;
    assert_status(
        s.kv().range(at(current + 1_000_000)).await,
        Code::OutOfRange,
        FUTURE,
    );
    assert_status(
        s.kv()
            .range(RangeRequest {
                key: b(""),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        EMPTY_KEY,
    );
}

/// `limit` truncates and sets `more`; `count` ignores it; zero and negative
/// limits mean none.
pub async fn limit_more_and_count(s: &mut Scenario) {
    for k in ["a", "b", "c", "d"] {
        put(s, k, k).await;
    }
    let with_limit = |limit| RangeRequest {
        limit,
        ..range_of(s, "", None)
    };
    let r = range(s, with_limit(2)).await;
    assert_eq!(
        (names(s, &r), r.more, r.count),
        (vec!["a".into(), "b".into()], true, 4)
    );
    let r = range(s, with_limit(4)).await;
    assert_eq!((r.kvs.len(), r.more, r.count), (4, false, 4));
    for unlimited in [0, -1] {
        let r = range(s, with_limit(unlimited)).await;
        assert_eq!((r.kvs.len(), r.more), (4, false), "limit {unlimited}");
    }
}

/// Every sort target and order; a target other than KEY with no order sorts
/// ascending.
pub async fn sort_targets_and_orders(s: &mut Scenario) {
    // Created in the order c, a, b with values that sort b, c, a; "a" is
    // updated twice so its version and mod revision are highest.
    put(s, "c", "2").await;
    put(s, "a", "3").await;
    put(s, "b", "1").await;
    put(s, "a", "3").await;
    put(s, "a", "3").await;
    let sorted = |target: SortTarget, order: SortOrder| RangeRequest {
        sort_target: target as i32,
        sort_order: order as i32,
        ..range_of(s, "", None)
    };
    let cases = [
        (SortTarget::Key, SortOrder::None, ["a", "b", "c"]),
        (SortTarget::Key, SortOrder::Ascend, ["a", "b", "c"]),
        (SortTarget::Key, SortOrder::Descend, ["c", "b", "a"]),
        (SortTarget::Create, SortOrder::Ascend, ["c", "a", "b"]),
        (SortTarget::Create, SortOrder::Descend, ["b", "a", "c"]),
        (SortTarget::Create, SortOrder::None, ["c", "a", "b"]),
        (SortTarget::Mod, SortOrder::Descend, ["a", "b", "c"]),
        (SortTarget::Mod, SortOrder::None, ["c", "b", "a"]),
        (SortTarget::Value, SortOrder::Ascend, ["b", "c", "a"]),
        (SortTarget::Value, SortOrder::Descend, ["a", "c", "b"]),
        (SortTarget::Version, SortOrder::Descend, ["a", "b", "c"]),
    ];
    for (target, order, expected) in cases {
        let r = range(s, sorted(target, order)).await;
        let got = names(s, &r);
        if target == SortTarget::Version {
            // b and c tie on version 1; etcd's sort leaves ties unordered.
            assert_eq!(got[0], "a", "{target:?} {order:?}");
        } else {
            assert_eq!(got, expected, "{target:?} {order:?}");
        }
    }
    // Sorting happens before the limit.
    let r = range(
        s,
        RangeRequest {
            limit: 1,
            ..sorted(SortTarget::Key, SortOrder::Descend)
        },
    )
    .await;
    assert_eq!((names(s, &r), r.more, r.count), (vec!["c".into()], true, 3));
}

/// Ties in a sort by version or value come back in the order etcd 3.5.1's
/// unstable sort (Go 1.16's `sort.Sort`) leaves them, not in key order:
/// twenty keys, four of them written twice.
pub async fn sort_ties_in_etcd_3_5_1s_order(s: &mut Scenario) {
    for i in 0..20 {
        put(s, &format!("e{:02}", (i * 7) % 20), "v").await;
    }
    for i in [3, 5, 11, 17] {
        put(s, &format!("e{i:02}"), "v2").await;
    }
    let ascending =
        "e14 e01 e02 e18 e04 e16 e06 e07 e08 e09 e10 e15 e12 e13 e00 e19 e11 e05 e17 e03";
    let descending =
        "e05 e17 e11 e03 e00 e04 e06 e07 e08 e09 e10 e02 e12 e13 e14 e15 e16 e01 e18 e19";
    for target in [SortTarget::Version, SortTarget::Value] {
        for (order, expected) in [
            (SortOrder::Ascend, ascending),
            (SortOrder::Descend, descending),
        ] {
            let request = RangeRequest {
                sort_target: target as i32,
                sort_order: order as i32,
                ..range_of(s, "", None)
            };
            let got = names(s, &range(s, request).await).join(" ");
            assert_eq!(got, expected, "{target:?} {order:?}");
        }
    }
}

/// keys_only clears values and keeps the rest; count_only returns only the
/// count and wins over keys_only.
pub async fn keys_only_and_count_only(s: &mut Scenario) {
    put(s, "a", "value-a").await;
    put(s, "b", "value-b").await;
    let r = range(
        s,
        RangeRequest {
            keys_only: true,
            ..range_of(s, "", None)
        },
    )
    .await;
    assert_eq!(names(s, &r), ["a", "b"]);
    assert!(r
        .kvs
        .iter()
        .all(|kv| kv.value.is_empty() && kv.version == 1 && kv.mod_revision > 0));

    let both = RangeRequest {
        keys_only: true,
        count_only: true,
        limit: 1,
        ..range_of(s, "", None)
    };
    let r = range(s, both).await;
    assert_eq!((r.kvs.len(), r.count, r.more), (0, 2, false));
}

/// The min/max mod and create revision filters; count ignores them.
pub async fn revision_filters(s: &mut Scenario) {
    let ra = put(s, "a", "1").await;
    let rb = put(s, "b", "1").await;
    let ra2 = put(s, "a", "2").await;
    let filtered = |f: fn(&mut RangeRequest, i64, i64, i64)| {
        let mut req = range_of(s, "", None);
        f(&mut req, ra, rb, ra2);
        req
    };
    let r = range(s, filtered(|r, _, rb, _| r.max_mod_revision = rb)).await;
    assert_eq!(
        (names(s, &r), r.count),
        (vec!["b".into()], 2),
        "count ignores filters"
    );
    let r = range(s, filtered(|r, _, _, ra2| r.min_mod_revision = ra2)).await;
    assert_eq!(names(s, &r), ["a"]);
    let r = range(s, filtered(|r, _, rb, _| r.min_create_revision = rb)).await;
    assert_eq!(names(s, &r), ["b"]);
    let r = range(s, filtered(|r, ra, _, _| r.max_create_revision = ra)).await;
    assert_eq!(names(s, &r), ["a"]);
    let r = range(
        s,
        filtered(|r, _, rb, _| {
            r.max_mod_revision = rb;
            r.limit = 1;
        }),
    )
    .await;
    assert_eq!((names(s, &r), r.more), (vec!["b".into()], false));
}

/// A new key has create = mod = its revision and version 1; each put bumps
/// the revision by one, even with an unchanged value, and the version by one.
pub async fn put_versions_and_revisions(s: &mut Scenario) {
    let r1 = put(s, "k", "v").await;
    let r2 = put(s, "k", "v").await;
    assert!(r2 > r1, "an unchanged value still takes a revision");
    if s.is_fake() {
        // On a shared etcd other scenarios write in between.
        assert_eq!(r2, r1 + 1, "exactly one");
    }
    let r = range(
        s,
        RangeRequest {
            key: b(s.key("k")),
            ..Default::default()
        },
    )
    .await;
    let kv = &r.kvs[0];
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version, kv.lease),
        (r1, r2, 2, 0)
    );
    assert_eq!(r.count, 1);
}

/// prev_kv, ignore_value, ignore_lease and their errors, in etcd's order.
pub async fn put_options_and_errors(s: &mut Scenario) {
    let key = b(s.key("k"));
    let put_req = |value: &str| PutRequest {
        key: key.clone(),
        value: b(value),
        ..Default::default()
    };

    let first = s
        .kv()
        .put(PutRequest {
            prev_kv: true,
            ..put_req("1")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(first.prev_kv.is_none(), "no previous value for a new key");
    let second = s
        .kv()
        .put(PutRequest {
            prev_kv: true,
            ..put_req("2")
        })
        .await
        .unwrap()
        .into_inner();
    let prev = second.prev_kv.expect("prev_kv");
    assert_eq!((&prev.value[..], prev.version), (&b"1"[..], 1));

    let kept = PutRequest {
        ignore_value: true,
        ..put_req("")
    };
    let kept = s.kv().put(kept).await.unwrap().into_inner();
    let r = range(
        s,
        RangeRequest {
            key: key.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!((&r.kvs[0].value[..], r.kvs[0].version), (&b"2"[..], 3));
    assert_eq!(r.kvs[0].mod_revision, kept.header.unwrap().revision);
    let lease_kept = PutRequest {
        ignore_lease: true,
        ..put_req("3")
    };
    s.kv()
        .put(lease_kept)
        .await
        .expect("ignore_lease on an existing key");

    let missing = b(s.key("missing"));
    let cases = [
        (
            PutRequest {
                key: b(""),
                ..put_req("x")
            },
            Code::InvalidArgument,
            EMPTY_KEY,
        ),
        (
            PutRequest {
                ignore_value: true,
                ..put_req("x")
            },
            Code::InvalidArgument,
            "etcdserver: value is provided",
        ),
        (
            PutRequest {
                ignore_lease: true,
                lease: 5,
                ..put_req("x")
            },
            Code::InvalidArgument,
            "etcdserver: lease is provided",
        ),
        (
            PutRequest {
                key: missing.clone(),
                ignore_value: true,
                ..put_req("")
            },
            Code::InvalidArgument,
            "etcdserver: key not found",
        ),
        (
            PutRequest {
                key: missing.clone(),
                ignore_lease: true,
                ..put_req("x")
            },
            Code::InvalidArgument,
            "etcdserver: key not found",
        ),
        (
            PutRequest {
                key: missing,
                lease: 0x7eed_0bad,
                ..put_req("x")
            },
            Code::NotFound,
            "etcdserver: requested lease not found",
        ),
        // Both faults: the empty key is reported first.
        (
            PutRequest {
                key: b(""),
                ignore_value: true,
                ..put_req("x")
            },
            Code::InvalidArgument,
            EMPTY_KEY,
        ),
    ];
    for (req, code, message) in cases {
        assert_status(s.kv().put(req).await, code, message);
    }
    let r = range(s, range_of(s, "", None)).await;
    assert_eq!(names(s, &r), ["k"], "failed puts change nothing");
}

/// Deleting a range deletes the live keys in it, in key order; a delete that
/// finds nothing does not bump the revision.
pub async fn delete_ranges(s: &mut Scenario) {
    for k in ["a", "b", "c", "d"] {
        put(s, k, k).await;
    }
    let del = DeleteRangeRequest {
        key: b(s.key("b")),
        range_end: b(s.key("d")),
        prev_kv: true,
    };
    let resp = s.kv().delete_range(del).await.unwrap().into_inner();
    assert_eq!(resp.deleted, 2);
    let prev: Vec<_> = resp.prev_kvs.iter().map(|kv| kv.value.clone()).collect();
    assert_eq!(prev, [b("b"), b("c")]);
    let rev = resp.header.unwrap().revision;

    let without_prev = DeleteRangeRequest {
        key: b(s.key("a")),
        ..Default::default()
    };
    let resp = s
        .kv()
        .delete_range(without_prev)
        .await
        .unwrap()
        .into_inner();
    assert_eq!((resp.deleted, resp.prev_kvs.len()), (1, 0));
    let after_second = resp.header.unwrap().revision;
    assert!(after_second > rev, "a delete takes a revision");
    if s.is_fake() {
        assert_eq!(after_second, rev + 1, "exactly one");
    }

    let nothing = DeleteRangeRequest {
        key: b(s.key("nothing")),
        prev_kv: true,
        ..Default::default()
    };
    let resp = s.kv().delete_range(nothing).await.unwrap().into_inner();
    assert_eq!((resp.deleted, resp.prev_kvs.len()), (0, 0));
    let after = range(s, range_of(s, "", None)).await;
    assert_eq!(names(s, &after), ["d"]);
    if s.is_fake() {
        // On a shared etcd other scenarios move the revision meanwhile.
        assert_eq!(
            resp.header.unwrap().revision,
            after_second,
            "no bump when nothing is deleted"
        );
    }

    // A key recreated after a delete starts a new generation.
    let r = put(s, "a", "again").await;
    let resp = range(
        s,
        RangeRequest {
            key: b(s.key("a")),
            ..Default::default()
        },
    )
    .await;
    assert_eq!((resp.kvs[0].create_revision, resp.kvs[0].version), (r, 1));

    assert_status(
        s.kv().delete_range(DeleteRangeRequest::default()).await,
        Code::InvalidArgument,
        EMPTY_KEY,
    );
}

/// A delete that finds nothing leaves the revision alone (checked in a
/// place where no other writer can move it: the fake).
pub async fn delete_nothing_keeps_revision(s: &mut Scenario) {
    let rev = put(s, "a", "1").await;
    let nothing = DeleteRangeRequest {
        key: b(s.key("zzz")),
        ..Default::default()
    };
    let resp = s.kv().delete_range(nothing).await.unwrap().into_inner();
    let header = resp.header.unwrap();
    if s.is_fake() {
        assert_eq!(header.revision, rev);
    } else {
        assert!(header.revision >= rev);
    }
}

/// Compaction: reads below the compaction revision fail, reads at it work,
/// compacting again at or below it fails, and a future revision is refused.
/// Needs the target's history to itself.
pub async fn compaction_rules(s: &mut Scenario) {
    let r1 = put(s, "k", "1").await;
    let r2 = put(s, "k", "2").await;
    let r3 = put(s, "k", "3").await;
    let compact = |revision| CompactionRequest {
        revision,
        physical: false,
    };
    let resp = s
        .kv()
        .compact(compact(r2))
        .await
        .expect("compact")
        .into_inner();
    assert!(
        resp.header.unwrap().revision == r3,
        "compaction does not bump the revision (no one else writes: history is held exclusively)"
    );

    let at = |rev| RangeRequest {
        key: b(s.key("k")),
        revision: rev,
        ..Default::default()
    };
    assert_status(s.kv().range(at(r1)).await, Code::OutOfRange, COMPACTED);
    let r = range(s, at(r2)).await;
    assert_eq!(
        &r.kvs[0].value[..],
        b"2",
        "the compaction revision itself stays readable"
    );
    assert_eq!(&range(s, at(r3)).await.kvs[0].value[..], b"3");

    assert_status(
        s.kv().compact(compact(r2)).await,
        Code::OutOfRange,
        COMPACTED,
    );
    assert_status(
        s.kv().compact(compact(r1)).await,
        Code::OutOfRange,
        COMPACTED,
    );
    assert_status(
        s.kv().compact(compact(r3 + 1_000_000)).await,
        Code::OutOfRange,
        FUTURE,
    );
    // The current revision may be compacted.
    let current = range(s, at(0)).await.header.unwrap().revision;
    s.kv()
        .compact(compact(current))
        .await
        .expect("compact at the current revision");
    // And through etcd-client, the error surfaces as the same status.
    let err = s
        .client
        .compact(current, None)
        .await
        .expect_err("compacted again");
    assert!(err.to_string().contains(COMPACTED), "{err}");
}

/// Request size limits: a write over 1.5 MiB is refused by etcd, a message
/// over 2 MiB by gRPC; a read with a large key is fine.
pub async fn request_size_limits(s: &mut Scenario) {
    let put_of = |len: usize| PutRequest {
        key: b("big"),
        value: vec![b'x'; len].into(),
        ..Default::default()
    };
    // Keep the key inside the scenario's prefix; the numbers assume key "big".
    let accepted = PutRequest {
        key: b(s.key("big")),
        ..put_of(1_572_834 - s.prefix().len())
    };
    s.kv()
        .put(accepted)
        .await
        .expect("a write just under 1.5 MiB");
    let refused = PutRequest {
        key: b(s.key("big")),
        ..put_of(1_572_844 - s.prefix().len())
    };
    assert_status(
        s.kv().put(refused).await,
        Code::InvalidArgument,
        "etcdserver: request is too large",
    );

    let huge = PutRequest {
        key: b(s.key("huge")),
        ..put_of(3_000_000)
    };
    match s.kv().put(huge).await {
        Err(status) => {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert!(
                status
                    .message()
                    .starts_with("grpc: received message larger than max (")
                    && status.message().ends_with(" vs. 2097152)"),
                "{status:?}"
            );
        }
        Ok(resp) => panic!("a 3 MB message was accepted: {resp:?}"),
    }

    let big_key = RangeRequest {
        key: vec![b'k'; 1_800_000].into(),
        ..Default::default()
    };
    let r = range(s, big_key).await;
    assert!(r.kvs.is_empty());
    // The server still serves.
    put(s, "after", "ok").await;
}

/// Every response header carries cluster ID, member ID and raft term, the
/// same on every call.
pub async fn response_headers(s: &mut Scenario) {
    let rev = put(s, "k", "v").await;
    let put_header = s
        .kv()
        .put(PutRequest {
            key: b(s.key("k")),
            value: b("w"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap();
    let range_header = range(s, range_of(s, "", None)).await.header.unwrap();
    assert!(put_header.cluster_id != 0 && put_header.member_id != 0 && put_header.raft_term != 0);
    assert_eq!(
        (put_header.cluster_id, put_header.member_id),
        (range_header.cluster_id, range_header.member_id)
    );
    assert!(put_header.revision > rev);
    assert!(range_header.revision >= put_header.revision);
}

/// The same calls through `etcd-client`, as applications make them.
pub async fn through_etcd_client(s: &mut Scenario) {
    use etcd_client::{GetOptions, PutOptions, SortOrder, SortTarget};
    let (a, b_key) = (s.key("a"), s.key("b"));
    s.client().put(a.as_str(), "1", None).await.unwrap();
    let put = s
        .client
        .put(b_key.as_str(), "2", Some(PutOptions::new().with_prev_key()))
        .await
        .unwrap();
    assert!(put.prev_key().is_none());
    let prefix = s.prefix().to_owned();
    let opts = GetOptions::new()
        .with_prefix()
        .with_sort(SortTarget::Key, SortOrder::Descend);
    let resp = s.client().get(prefix.as_str(), Some(opts)).await.unwrap();
    let keys: Vec<_> = resp
        .kvs()
        .iter()
        .map(|kv| kv.key_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, [b_key.clone(), a.clone()]);
    let del = s
        .client
        .delete(
            prefix.as_str(),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert_eq!(del.deleted(), 2);
    let err = s.client().put("", "x", None).await.expect_err("empty key");
    match err {
        etcd_client::Error::GRpcStatus(status) => {
            assert_eq!(
                (status.code(), status.message()),
                (Code::InvalidArgument, EMPTY_KEY)
            );
        }
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}
