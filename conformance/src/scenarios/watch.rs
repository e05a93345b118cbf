//! Watch: creation, IDs, events, history, compaction, filters, progress,
//! fragments and slow consumers, checked on a raw stream so every field of
//! every response is seen.

use std::time::Duration;

use etcd_proto::etcdserverpb::{
    request_op::Request, watch_create_request::FilterType, watch_request::RequestUnion,
    CompactionRequest, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest, WatchCancelRequest,
    WatchCreateRequest, WatchProgressRequest, WatchRequest, WatchResponse,
};
use etcd_proto::mvccpb::{event::EventType, Event};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::kv::put;
use super::{b, within};
use crate::Scenario;

/// How long a response may take to arrive before the scenario fails.
const PATIENCE: Duration = Duration::from_secs(10);
/// Watch IDs the barrier uses, far from those the scenarios pick.
const BARRIER_ID: i64 = 1 << 40;

/// One raw watch stream.
#[derive(Debug)]
pub struct RawWatch {
    requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
    barriers: i64,
}

impl RawWatch {
    /// Opens a stream with a first create request (grpc-go sends a stream's
    /// headers with its first response, so something must be asked first).
    pub async fn open(s: &Scenario, first: WatchCreateRequest) -> Self {
        let (requests, rx) = mpsc::channel(64);
        requests.send(create_request(first)).await.unwrap();
        let responses = s
            .watch()
            .watch(ReceiverStream::new(rx))
            .await
            .expect("watch stream")
            .into_inner();
        RawWatch {
            requests,
            responses,
            barriers: 0,
        }
    }

    /// Sends a request.
    pub async fn send(&self, request: RequestUnion) {
        self.requests
            .send(WatchRequest {
                request_union: Some(request),
            })
            .await
            .expect("stream open");
    }

    /// Sends a create request.
    pub async fn create(&self, create: WatchCreateRequest) {
        self.send(RequestUnion::CreateRequest(create)).await;
    }

    /// The next response.
    pub async fn next(&mut self) -> WatchResponse {
        tokio::time::timeout(PATIENCE, self.responses.message())
            .await
            .expect("a watch response in time")
            .expect("stream healthy")
            .expect("stream open")
    }

    /// Asserts that nothing was sent before this point: creates a watcher on
    /// a key no one writes and expects its `created` response next, then
    /// cancels it. Responses on a stream arrive in order, so this needs no
    /// waiting.
    pub async fn expect_nothing_sent(&mut self, s: &Scenario, what: &str) {
        self.barriers += 1;
        let id = BARRIER_ID + self.barriers;
        self.create(WatchCreateRequest {
            key: b(s.key("\u{1}barrier")),
            watch_id: id,
            ..Default::default()
        })
        .await;
        let response = self.next().await;
        assert!(
            response.created && response.watch_id == id,
            "{what}: got {response:?}"
        );
        self.send(RequestUnion::CancelRequest(WatchCancelRequest {
            watch_id: id,
        }))
        .await;
        let response = self.next().await;
        assert!(
            response.canceled && response.watch_id == id,
            "{what}: got {response:?}"
        );
    }

    /// Collects events of watch `id` until `count` have arrived.
    pub async fn events(&mut self, id: i64, count: usize) -> Vec<Event> {
        let mut events = Vec::new();
        while events.len() < count {
            let r = self.next().await;
            assert_eq!(r.watch_id, id, "unexpected response {r:?}");
            assert!(!r.canceled, "canceled: {r:?}");
            events.extend(r.events);
        }
        assert_eq!(events.len(), count, "more events than expected");
        events
    }
}

fn create_request(create: WatchCreateRequest) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(create)),
    }
}

fn on_key(s: &Scenario, key: &str) -> WatchCreateRequest {
    WatchCreateRequest {
        key: b(s.key(key)),
        ..Default::default()
    }
}

fn on_prefix(s: &Scenario) -> WatchCreateRequest {
    WatchCreateRequest {
        key: b(s.prefix()),
        range_end: s.prefix_end().into(),
        ..Default::default()
    }
}

fn name(s: &Scenario, e: &Event) -> String {
    String::from_utf8_lossy(&e.kv.as_ref().unwrap().key[s.prefix().len()..]).into_owned()
}

fn kind(e: &Event) -> EventType {
    EventType::try_from(e.r#type).unwrap()
}

/// The first watch of a stream is ID 0 and IDs count up; a chosen ID is
/// used; a duplicate or an empty range is refused in the `created`
/// response; cancel answers, an unknown cancel does not.
pub async fn create_ids_and_cancel(s: &mut Scenario) {
    let mut w = RawWatch::open(s, on_key(s, "a")).await;
    let first = w.next().await;
    assert!(
        first.created && !first.canceled && first.watch_id == 0,
        "{first:?}"
    );
    assert!(first.header.unwrap().revision > 0);
    w.create(on_key(s, "b")).await;
    assert_eq!(w.next().await.watch_id, 1);
    w.create(WatchCreateRequest {
        watch_id: 7,
        ..on_key(s, "c")
    })
    .await;
    assert_eq!(w.next().await.watch_id, 7);

    w.create(WatchCreateRequest {
        watch_id: 7,
        ..on_key(s, "d")
    })
    .await;
    let dup = w.next().await;
    assert!(dup.created && dup.canceled && dup.watch_id == -1, "{dup:?}");
    assert_eq!(
        dup.cancel_reason,
        "mvcc: duplicate watch ID provided on the WatchStream"
    );

    w.create(WatchCreateRequest {
        key: b(s.key("z")),
        range_end: b(s.key("a")),
        ..Default::default()
    })
    .await;
    let empty = w.next().await;
    assert!(
        empty.created && empty.canceled && empty.watch_id == -1,
        "{empty:?}"
    );
    assert_eq!(empty.cancel_reason, "mvcc: watcher range is empty");

    w.send(RequestUnion::CancelRequest(WatchCancelRequest {
        watch_id: 1,
    }))
    .await;
    let canceled = w.next().await;
    assert!(
        canceled.canceled && canceled.watch_id == 1 && canceled.cancel_reason.is_empty(),
        "{canceled:?}"
    );
    assert!(canceled.header.unwrap().revision > 0);
    w.send(RequestUnion::CancelRequest(WatchCancelRequest {
        watch_id: 424242,
    }))
    .await;
    w.expect_nothing_sent(s, "an unknown cancel gets no answer")
        .await;

    // Canceled watchers get nothing; live ones get their events.
    put(s, "b", "1").await;
    let rev = put(s, "a", "1").await;
    let r = w.next().await;
    assert_eq!(
        (r.watch_id, r.events.len(), r.header.unwrap().revision),
        (0, 1, rev)
    );
}

/// One response per write revision per watcher: a txn's events together, in
/// execution order; DELETE carries only the key and revision; prev_kv comes
/// for updates and deletes, never for creates.
pub async fn live_events(s: &mut Scenario) {
    let mut w = RawWatch::open(
        s,
        WatchCreateRequest {
            prev_kv: true,
            ..on_prefix(s)
        },
    )
    .await;
    assert!(w.next().await.created);
    let r1 = put(s, "k", "1").await;
    let r2 = put(s, "k", "2").await;
    let txn = TxnRequest {
        success: vec![
            RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: b(s.key("z")),
                    value: b("z"),
                    ..Default::default()
                })),
            },
            RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: b(s.key("a")),
                    value: b("a"),
                    ..Default::default()
                })),
            },
            RequestOp {
                request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                    key: b(s.key("k")),
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    let r3 = s
        .kv()
        .txn(txn)
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision;

    let first = w.next().await;
    assert_eq!(
        (first.header.unwrap().revision, first.events.len()),
        (r1, 1)
    );
    let create = &first.events[0];
    assert_eq!(kind(create), EventType::Put);
    assert!(create.prev_kv.is_none(), "a create has no prev_kv");
    let kv = create.kv.as_ref().unwrap();
    assert_eq!(
        (
            kv.create_revision,
            kv.mod_revision,
            kv.version,
            &kv.value[..]
        ),
        (r1, r1, 1, &b"1"[..])
    );

    let second = w.next().await;
    assert_eq!(second.header.unwrap().revision, r2);
    assert_eq!(&second.events[0].prev_kv.as_ref().unwrap().value[..], b"1");

    let third = w.next().await;
    assert_eq!(third.header.unwrap().revision, r3);
    let order: Vec<_> = third.events.iter().map(|e| (name(s, e), kind(e))).collect();
    assert_eq!(
        order,
        [
            ("z".into(), EventType::Put),
            ("a".into(), EventType::Put),
            ("k".into(), EventType::Delete)
        ],
        "one response, in the txn's order"
    );
    let delete = &third.events[2];
    let kv = delete.kv.as_ref().unwrap();
    assert_eq!(
        (
            kv.mod_revision,
            kv.create_revision,
            kv.version,
            kv.lease,
            kv.value.len()
        ),
        (r3, 0, 0, 0, 0)
    );
    assert_eq!(&delete.prev_kv.as_ref().unwrap().value[..], b"2");
}

/// NOPUT and NODELETE drop their events; a response whose events are all
/// dropped is not sent.
pub async fn filters(s: &mut Scenario) {
    let mut w = RawWatch::open(
        s,
        WatchCreateRequest {
            filters: vec![FilterType::Noput as i32],
            ..on_prefix(s)
        },
    )
    .await;
    assert!(w.next().await.created);
    w.create(WatchCreateRequest {
        filters: vec![FilterType::Nodelete as i32],
        ..on_prefix(s)
    })
    .await;
    assert!(w.next().await.created);
    put(s, "k", "v").await;
    let r = w.next().await;
    assert_eq!((r.watch_id, kind(&r.events[0])), (1, EventType::Put));
    w.expect_nothing_sent(s, "the no-put watcher gets nothing for a put")
        .await;
    s.kv()
        .delete_range(DeleteRangeRequest {
            key: b(s.key("k")),
            ..Default::default()
        })
        .await
        .unwrap();
    let r = w.next().await;
    assert_eq!((r.watch_id, kind(&r.events[0])), (0, EventType::Delete));
    w.expect_nothing_sent(s, "the no-delete watcher gets nothing for a delete")
        .await;
}

/// A watch from a past revision replays history (several revisions may
/// share a response), then follows live writes; a watch from the future
/// gets only writes from that revision on.
pub async fn history_then_live(s: &mut Scenario) {
    let start = put(s, "a", "1").await;
    put(s, "b", "1").await;
    s.kv()
        .delete_range(DeleteRangeRequest {
            key: b(s.key("a")),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut w = RawWatch::open(
        s,
        WatchCreateRequest {
            start_revision: start,
            prev_kv: true,
            ..on_prefix(s)
        },
    )
    .await;
    let created = w.next().await;
    assert!(
        created.created && created.events.is_empty(),
        "created comes first, alone: {created:?}"
    );
    let history = w.events(0, 3).await;
    let seen: Vec<_> = history.iter().map(|e| (name(s, e), kind(e))).collect();
    assert_eq!(
        seen,
        [
            ("a".into(), EventType::Put),
            ("b".into(), EventType::Put),
            ("a".into(), EventType::Delete)
        ]
    );
    assert_eq!(&history[2].prev_kv.as_ref().unwrap().value[..], b"1");
    let live = put(s, "c", "1").await;
    let r = w.next().await;
    assert_eq!(
        (r.header.unwrap().revision, name(s, &r.events[0])),
        (live, "c".into())
    );

    let future = live + 3;
    let mut f = RawWatch::open(
        s,
        WatchCreateRequest {
            start_revision: future,
            ..on_prefix(s)
        },
    )
    .await;
    assert!(f.next().await.created);
    let mut last = live;
    while last < future {
        last = put(s, "d", "x").await;
    }
    // On a shared etcd other writes move the revision too; on the fake the
    // first event is exactly at the start revision.
    let r = f.next().await;
    let first = r.events[0].kv.as_ref().unwrap().mod_revision;
    assert!(first >= future, "{first} < {future}");
    if s.is_fake() {
        assert_eq!(first, future);
    }
}

/// A watch from before the compaction point is created, then canceled with
/// the compaction revision (header revision 0); its ID stays taken until
/// canceled. Needs the target's history to itself.
pub async fn compacted_start(s: &mut Scenario) {
    let old = put(s, "k", "1").await;
    put(s, "k", "2").await;
    let compact_at = put(s, "k", "3").await;
    s.kv()
        .compact(CompactionRequest {
            revision: compact_at,
            physical: true,
        })
        .await
        .unwrap();

    let mut w = RawWatch::open(
        s,
        WatchCreateRequest {
            start_revision: old,
            watch_id: 5,
            ..on_key(s, "k")
        },
    )
    .await;
    let created = w.next().await;
    assert!(
        created.created && !created.canceled && created.watch_id == 5,
        "{created:?}"
    );
    let compacted = w.next().await;
    assert!(
        compacted.canceled && compacted.watch_id == 5 && compacted.events.is_empty(),
        "{compacted:?}"
    );
    assert_eq!(compacted.compact_revision, compact_at);
    assert!(compacted.cancel_reason.is_empty());
    assert_eq!(
        compacted.header.unwrap().revision,
        0,
        "etcd sends revision 0 here"
    );

    w.create(WatchCreateRequest {
        watch_id: 5,
        ..on_key(s, "k")
    })
    .await;
    assert_eq!(
        w.next().await.cancel_reason,
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
    w.send(RequestUnion::CancelRequest(WatchCancelRequest {
        watch_id: 5,
    }))
    .await;
    let canceled = w.next().await;
    assert!(canceled.canceled && canceled.watch_id == 5, "{canceled:?}");

    // From the compaction revision itself, history is still there.
    w.create(WatchCreateRequest {
        start_revision: compact_at,
        ..on_key(s, "k")
    })
    .await;
    assert!(w.next().await.created);
    let events = w.events(0, 1).await;
    assert_eq!(&events[0].kv.as_ref().unwrap().value[..], b"3");

    // etcd-client surfaces the compaction the same way.
    let mut client = s.client();
    let key = s.key("k");
    let mut stream = client
        .watch(
            key.as_str(),
            Some(etcd_client::WatchOptions::new().with_start_revision(old)),
        )
        .await
        .unwrap();
    let mut saw = None;
    while let Some(resp) = tokio::time::timeout(PATIENCE, stream.message())
        .await
        .unwrap()
        .unwrap()
    {
        if resp.canceled() {
            saw = Some(resp.compact_revision());
            break;
        }
    }
    assert_eq!(saw, Some(compact_at));
}

/// Revoking or expiring a lease deletes its keys in one revision: one
/// response of DELETE events in key order.
pub async fn lease_deletes(s: &mut Scenario) {
    let lease = super::lease::grant(s, 2).await;
    for k in ["c", "a", "b"] {
        super::lease::put_with_lease(s, k, lease).await;
    }
    let mut w = RawWatch::open(s, on_prefix(s)).await;
    assert!(w.next().await.created);
    s.pass_ttl(2).await;
    let r = w.next().await;
    let names: Vec<_> = r.events.iter().map(|e| (name(s, e), kind(e))).collect();
    assert_eq!(
        names,
        [
            ("a".into(), EventType::Delete),
            ("b".into(), EventType::Delete),
            ("c".into(), EventType::Delete)
        ]
    );
    assert!(r
        .events
        .iter()
        .all(|e| e.kv.as_ref().unwrap().mod_revision == r.header.unwrap().revision));
}

/// A progress request on a stream whose watchers are synced is answered
/// with watch ID -1 and the current revision.
pub async fn progress_request(s: &mut Scenario) {
    let mut w = RawWatch::open(s, on_prefix(s)).await;
    assert!(w.next().await.created);
    let rev = put(s, "k", "v").await;
    assert_eq!(w.next().await.events.len(), 1);
    w.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
        .await;
    let progress = w.next().await;
    assert!(
        progress.watch_id == -1 && progress.events.is_empty() && !progress.canceled,
        "{progress:?}"
    );
    assert!(progress.header.unwrap().revision >= rev);

    // With no watcher left on the stream, etcd 3.5.1 still answers (watch
    // ID -1); the 3.5 tip (`progressIfSync`) sends nothing, as the fake.
    // Either way, the stream goes on serving.
    w.send(RequestUnion::CancelRequest(WatchCancelRequest {
        watch_id: 0,
    }))
    .await;
    assert!(w.next().await.canceled);
    w.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
        .await;
    w.create(WatchCreateRequest {
        watch_id: BARRIER_ID,
        ..on_key(s, "\u{1}barrier")
    })
    .await;
    let first = w.next().await;
    let created = if first.watch_id == -1 {
        assert!(
            !first.created && !first.canceled && first.events.is_empty(),
            "{first:?}"
        );
        w.next().await
    } else {
        first
    };
    assert!(
        created.created && created.watch_id == BARRIER_ID,
        "{created:?}"
    );
}

/// Many watchers on one stream each get only what they match.
pub async fn many_watchers_one_stream(s: &mut Scenario) {
    let mut w = RawWatch::open(s, on_key(s, "k0")).await;
    assert!(w.next().await.created);
    for i in 1..20 {
        w.create(on_key(s, &format!("k{i}"))).await;
        assert_eq!(w.next().await.watch_id, i);
    }
    for i in (0..20).rev() {
        put(s, &format!("k{i}"), "v").await;
        let r = w.next().await;
        assert_eq!((r.watch_id, name(s, &r.events[0])), (i, format!("k{i}")));
    }
}

/// A consumer that does not read while thousands of writes happen misses
/// nothing: every event arrives, once, in order.
pub async fn slow_consumer_catches_up(s: &mut Scenario) {
    let mut w = RawWatch::open(s, on_prefix(s)).await;
    assert!(w.next().await.created);
    let writes = 2000;
    let mut kv = s.kv();
    for i in 0..writes {
        let req = PutRequest {
            key: b(s.key(&format!("k{i:05}"))),
            value: vec![b'x'; 512].into(),
            ..Default::default()
        };
        kv.put(req).await.unwrap();
    }
    let events = w.events(0, writes).await;
    let mut last = 0;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(name(s, e), format!("k{i:05}"));
        let rev = e.kv.as_ref().unwrap().mod_revision;
        assert!(rev > last, "in order");
        last = rev;
    }
}

/// Watchers of one key and of its prefix, 50 of each kind on one stream
/// (plain, `prev_kv`, no puts, prefix), and a consumer that does not read
/// while 200 writes of 1 KiB values happen, far more than a stream and its
/// connection buffer: every watcher gets
/// every event it asked for, once, in order, with a txn's events of one
/// revision in one response.
pub async fn a_crowd_on_one_stream_gets_every_event_once(s: &mut Scenario) {
    const EACH: i64 = 50;
    const WRITES: i64 = 200;
    // Values carry the write's number, padded so that the responses
    // overflow the stream's buffer and HTTP/2 windows.
    let padded = |value: &str| format!("{value:.<1024}");
    let create = |id: i64| match id % 4 {
        0 => on_key(s, "k"),
        1 => WatchCreateRequest {
            prev_kv: true,
            ..on_key(s, "k")
        },
        2 => WatchCreateRequest {
            filters: vec![FilterType::Noput as i32],
            ..on_key(s, "k")
        },
        _ => on_prefix(s),
    };
    let mut w = RawWatch::open(s, create(0)).await;
    assert!(w.next().await.created);
    for id in 1..4 * EACH {
        w.create(create(id)).await;
        let r = w.next().await;
        assert!(r.created && r.watch_id == id, "{r:?}");
    }
    // What each kind should see: (type, key, value, previous value).
    type Seen = (EventType, String, String, Option<String>);
    let mut expected: [Vec<Seen>; 4] = Default::default();
    let mut value_of_k: Option<String> = None;
    let mut kv = s.kv();
    for i in 0..WRITES {
        let value = i.to_string();
        let put = |key: &str| PutRequest {
            key: b(s.key(key)),
            value: b(padded(&value)),
            ..Default::default()
        };
        let mut events = Vec::new();
        if i % 2 == 1 && i % 10 != 9 {
            let del = DeleteRangeRequest {
                key: b(s.key("k")),
                ..Default::default()
            };
            kv.delete_range(del).await.unwrap();
            // A delete event carries the deleted key, with no value.
            let previous = value_of_k.take();
            events.push((EventType::Delete, "k".to_string(), String::new(), previous));
        } else {
            if i % 10 == 9 {
                let op = |put| RequestOp {
                    request: Some(Request::RequestPut(put)),
                };
                let txn = TxnRequest {
                    success: vec![op(put("k2")), op(put("k"))],
                    ..Default::default()
                };
                kv.txn(txn).await.unwrap();
                events.push((EventType::Put, "k2".to_string(), value.clone(), None));
            } else {
                kv.put(put("k")).await.unwrap();
            }
            let previous = value_of_k.replace(value.clone());
            events.push((EventType::Put, "k".to_string(), value, previous));
        }
        for e in events {
            let on_k = e.1 == "k";
            if on_k {
                expected[0].push((e.0, e.1.clone(), e.2.clone(), None));
                expected[1].push(e.clone());
                if e.0 == EventType::Delete {
                    expected[2].push((e.0, e.1.clone(), e.2.clone(), None));
                }
            }
            expected[3].push((e.0, e.1, e.2, None));
        }
    }
    let want = |id: i64| expected[(id % 4) as usize].len();
    let mut seen: Vec<Vec<Seen>> = vec![Vec::new(); (4 * EACH) as usize];
    let mut last_revision = vec![0; (4 * EACH) as usize];
    while (0..4 * EACH).any(|id| seen[id as usize].len() < want(id)) {
        let r = w.next().await;
        assert!(!r.canceled && !r.events.is_empty(), "{r:?}");
        let id = r.watch_id as usize;
        let first = r.events[0].kv.as_ref().unwrap().mod_revision;
        assert!(
            first > last_revision[id],
            "watcher {id}: a revision split or repeated"
        );
        last_revision[id] = r.events.last().unwrap().kv.as_ref().unwrap().mod_revision;
        seen[id].extend(r.events.iter().map(|e| {
            let kv = e.kv.as_ref().unwrap();
            let unpadded = |value: &[u8]| {
                String::from_utf8_lossy(value)
                    .trim_end_matches('.')
                    .to_string()
            };
            let value = unpadded(&kv.value);
            let previous = e.prev_kv.as_ref().map(|p| unpadded(&p.value));
            (kind(e), name(s, e), value, previous)
        }));
    }
    for id in 0..4 * EACH {
        assert_eq!(
            seen[id as usize],
            expected[(id % 4) as usize],
            "watcher {id}"
        );
    }
    w.expect_nothing_sent(s, "after every event").await;
}

/// With `fragment`, a response over 2 MiB is split; every piece but the
/// last says `fragment`, and no event is lost.
pub async fn fragments(s: &mut Scenario) {
    for k in ["a", "b", "c"] {
        let req = PutRequest {
            key: b(s.key(k)),
            value: vec![b'v'; 1_000_000].into(),
            ..Default::default()
        };
        s.kv().put(req).await.unwrap();
    }
    let mut w = RawWatch::open(
        s,
        WatchCreateRequest {
            fragment: true,
            prev_kv: true,
            ..on_prefix(s)
        },
    )
    .await;
    assert!(w.next().await.created);
    let del = DeleteRangeRequest {
        key: b(s.prefix()),
        range_end: s.prefix_end().into(),
        prev_kv: false,
    };
    s.kv().delete_range(del).await.unwrap();
    let mut pieces = Vec::new();
    loop {
        let r = w.next().await;
        let more = r.fragment;
        pieces.push(r);
        if !more {
            break;
        }
    }
    assert!(pieces.len() >= 2, "split into {} pieces", pieces.len());
    let events: Vec<_> = pieces
        .iter()
        .flat_map(|p| p.events.iter())
        .map(|e| name(s, e))
        .collect();
    assert_eq!(events, ["a", "b", "c"]);
    assert!(pieces
        .iter()
        .all(|p| p.events.iter().all(|e| e.prev_kv.is_some())));
}

/// A negative start revision. The 3.5 tip (≥ 3.5.24) refuses it at once,
/// before looking at the range: created and canceled, watch ID -1, as
/// compacted. etcd 3.5.1 creates the watcher (an empty range is refused
/// first, as empty) and cancels it as compacted when the start is below the
/// compaction point (-1 before any compaction; scenarios running beside
/// this one may compact). Both are accepted.
pub async fn negative_start_revision(s: &mut Scenario) {
    let tip_refusal = |r: &WatchResponse| {
        r.created
            && r.canceled
            && r.watch_id == -1
            && r.cancel_reason == "etcdserver: mvcc: required revision has been compacted"
    };
    for start in [-1, -5] {
        let mut w = RawWatch::open(
            s,
            WatchCreateRequest {
                start_revision: start,
                ..on_key(s, "k")
            },
        )
        .await;
        let created = w.next().await;
        if tip_refusal(&created) {
            continue;
        }
        assert!(
            created.created && !created.canceled && created.watch_id == 0,
            "start {start}: neither the tip's refusal nor 3.5.1's watcher: {created:?}"
        );
        // 3.5.1: then at most a compaction cancel, before anything asked
        // for later; the key was never written, so no event.
        w.create(WatchCreateRequest {
            watch_id: BARRIER_ID,
            ..on_key(s, "\u{1}barrier")
        })
        .await;
        loop {
            let r = w.next().await;
            if r.watch_id == BARRIER_ID && r.created {
                break;
            }
            assert!(
                r.watch_id == 0 && r.canceled && r.events.is_empty(),
                "start {start}: {r:?}"
            );
        }
    }
    let mut w = RawWatch::open(
        s,
        WatchCreateRequest {
            start_revision: -1,
            range_end: b(s.key("a")),
            ..on_key(s, "b")
        },
    )
    .await;
    let refused = w.next().await;
    assert!(
        tip_refusal(&refused)
            || (refused.created
                && refused.canceled
                && refused.watch_id == -1
                && refused.cancel_reason == "mvcc: watcher range is empty"),
        "an empty range from -1: {refused:?}"
    );
}

/// A megabyte key under range watchers, one whose range holds it and one
/// whose range does not, is written, delivered and deleted at once (issue
/// #15: the fake once took time quadratic in a key's length to find the
/// watchers it matches, a 1 MB key never answered, and every other client
/// waited meanwhile; etcd takes milliseconds).
pub async fn a_megabyte_key_under_range_watchers(s: &mut Scenario) {
    let mut client = s.client();
    let near = s.key("big/");
    let far = s.key("other/");
    let prefix = || Some(etcd_client::WatchOptions::new().with_prefix());
    let mut holding = client.watch(near.as_str(), prefix()).await.unwrap();
    assert!(within("created", holding.message())
        .await
        .unwrap()
        .unwrap()
        .created());
    let mut elsewhere = client.watch(far.as_str(), prefix()).await.unwrap();
    assert!(within("created", elsewhere.message())
        .await
        .unwrap()
        .unwrap()
        .created());
    let mut key = near.clone().into_bytes();
    key.resize(1_000_000, b'x');

    within("the put's answer", client.put(key.clone(), "v", None))
        .await
        .unwrap();
    within("the delete's answer", client.delete(key.clone(), None))
        .await
        .unwrap();
    let mut events = Vec::new();
    while events.len() < 2 {
        let response = within("the PUT and DELETE events", holding.message())
            .await
            .unwrap()
            .unwrap();
        events.extend(
            response
                .events()
                .iter()
                .map(|e| (e.event_type(), e.kv().unwrap().key().len())),
        );
    }
    use etcd_client::EventType::{Delete, Put};
    assert_eq!(events, vec![(Put, key.len()), (Delete, key.len())]);
    // The other range saw neither: its first event is a write of its own.
    client.put(format!("{far}k"), "v", None).await.unwrap();
    let first = within("the other range's event", elsewhere.message())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first.events()[0].kv().unwrap().key(),
        format!("{far}k").as_bytes()
    );
}
