//! Maintenance calls that take the target to themselves: HashKV (etcd's
//! checksum of its key history, checked against a value the scenario
//! computes itself from what it wrote) and Downgrade (cluster-wide state).

use etcd_proto::etcdserverpb::{
    downgrade_request::DowngradeAction, request_op::Request as Op, CompactionRequest,
    DeleteRangeRequest, DowngradeRequest, DowngradeResponse, HashKvRequest, HashKvResponse,
    HashRequest, PutRequest, RequestOp, SnapshotRequest, TxnRequest,
};
use etcd_proto::mvccpb::KeyValue;
use prost::Message;
use tonic::{Code, Status};

use super::{assert_status, b, finished, within};
use crate::Scenario;

/// One entry of etcd's `key` bucket: a change, at `(main, sub)`.
#[derive(Debug, Clone)]
struct Entry {
    main: i64,
    sub: i64,
    key: String,
    /// `None` for a deletion.
    put: Option<KeyValue>,
}

/// What the scenario wrote, as etcd's backend holds it.
#[derive(Debug, Default)]
struct Model {
    entries: Vec<Entry>,
}

impl Model {
    fn put(&mut self, main: i64, sub: i64, key: &str, value: &str, lease: i64) {
        let previous = self.latest(key, main - 1);
        let (create_revision, version) = match previous {
            Some(kv) => (kv.create_revision, kv.version + 1),
            None => (main, 1),
        };
        self.entries.push(Entry {
            main,
            sub,
            key: key.to_owned(),
            put: Some(KeyValue {
                key: b(key),
                create_revision,
                mod_revision: main,
                version,
                value: b(value),
                lease,
            }),
        });
    }

    fn delete(&mut self, main: i64, sub: i64, key: &str) {
        self.entries.push(Entry {
            main,
            sub,
            key: key.to_owned(),
            put: None,
        });
    }

    /// The key as a read at `rev` sees it.
    fn latest(&self, key: &str, rev: i64) -> Option<KeyValue> {
        self.entries
            .iter()
            .filter(|e| e.key == key && e.main <= rev)
            .max_by_key(|e| (e.main, e.sub))
            .and_then(|e| e.put.clone())
    }

    /// etcd's HashKV at `rev` after a compaction at `compacted`, computed
    /// from the definition: crc32c (Castagnoli) of `"key"`, then of each
    /// bucket entry (revision bytes, the stored `KeyValue`) at or below
    /// `rev` in revision order, where entries at or below the compaction
    /// point count only if they are puts a read at `rev` still sees.
    fn hash_kv(&self, rev: i64, compacted: i64) -> u32 {
        let mut entries: Vec<&Entry> = self.entries.iter().filter(|e| e.main <= rev).collect();
        entries.sort_by_key(|e| (e.main, e.sub));
        let mut hash = crc32c::crc32c(b"key");
        for entry in entries {
            if entry.main <= compacted {
                let still_seen = entry.put.is_some()
                    && self
                        .latest(&entry.key, rev)
                        .is_some_and(|kv| kv.mod_revision == entry.main);
                if !still_seen {
                    continue;
                }
            }
            let mut bucket_key = (entry.main as u64).to_be_bytes().to_vec();
            bucket_key.push(b'_');
            bucket_key.extend_from_slice(&(entry.sub as u64).to_be_bytes());
            let stored = match &entry.put {
                Some(kv) => kv.clone(),
                None => {
                    bucket_key.push(b't');
                    KeyValue {
                        key: b(&entry.key),
                        ..Default::default()
                    }
                }
            };
            hash = crc32c::crc32c_append(hash, &bucket_key);
            hash = crc32c::crc32c_append(hash, &stored.encode_to_vec());
        }
        hash
    }
}

fn put_op(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(Op::RequestPut(PutRequest {
            key: b(key),
            value: b(value),
            ..Default::default()
        })),
    }
}

async fn hash_kv(s: &Scenario, revision: i64) -> Result<HashKvResponse, Status> {
    s.maintenance()
        .hash_kv(HashKvRequest { revision })
        .await
        .map(tonic::Response::into_inner)
}

/// HashKV after puts, overwrites, a txn of several changes, deletes, a
/// lease and a compaction equals the value computed from its definition,
/// at the current revision and at past ones; with etcd's answers for
/// compacted, future and negative revisions. Every key is deleted and the
/// history compacted first, so that the hash covers only this scenario's
/// writes: it takes the target to itself.
pub async fn hash_kv_matches_its_definition(s: &mut Scenario) {
    let mut kv = s.kv();
    let cleared = kv
        .delete_range(DeleteRangeRequest {
            key: b("\0"),
            range_end: b("\0"),
            prev_kv: false,
        })
        .await
        .expect("delete every key")
        .into_inner();
    let start = cleared.header.expect("header").revision;
    // Already compacted there is as good.
    let _ = kv
        .compact(CompactionRequest {
            revision: start,
            physical: true,
        })
        .await;

    let (a, bk, c, d, e) = (s.key("a"), s.key("b"), s.key("c"), s.key("d"), s.key("e"));
    let mut model = Model::default();
    let put = |key: &str, value: &str, lease: i64| {
        let mut kv = s.kv();
        let request = PutRequest {
            key: b(key),
            value: b(value),
            lease,
            ..Default::default()
        };
        async move {
            kv.put(request)
                .await
                .expect("put")
                .into_inner()
                .header
                .unwrap()
                .revision
        }
    };
    let r1 = put(&a, "1", 0).await;
    model.put(r1, 0, &a, "1", 0);
    let r2 = put(&bk, "2", 0).await;
    model.put(r2, 0, &bk, "2", 0);
    let r3 = put(&a, "3", 0).await;
    model.put(r3, 0, &a, "3", 0);
    let txn = kv
        .txn(TxnRequest {
            compare: Vec::new(),
            success: vec![
                put_op(&c, "4"),
                RequestOp {
                    request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
                        key: b(&bk),
                        ..Default::default()
                    })),
                },
                put_op(&d, "5"),
            ],
            failure: Vec::new(),
        })
        .await
        .expect("txn")
        .into_inner();
    let r4 = txn.header.unwrap().revision;
    model.put(r4, 0, &c, "4", 0);
    model.delete(r4, 1, &bk);
    model.put(r4, 2, &d, "5", 0);
    let r5 = kv
        .delete_range(DeleteRangeRequest {
            key: b(&d),
            ..Default::default()
        })
        .await
        .expect("delete")
        .into_inner()
        .header
        .unwrap()
        .revision;
    model.delete(r5, 0, &d);
    let lease = s.client().lease_grant(60, None).await.unwrap().id();
    let r6 = put(&e, "6", lease).await;
    model.put(r6, 0, &e, "6", lease);

    let before = hash_kv(s, 0).await.expect("hash");
    assert_eq!(
        before.hash,
        model.hash_kv(r6, start),
        "before the compaction"
    );
    assert_eq!(before.header.unwrap().revision, r6);

    kv.compact(CompactionRequest {
        revision: r3,
        physical: true,
    })
    .await
    .expect("compact");
    let now = hash_kv(s, 0).await.expect("hash");
    assert_eq!(now.compact_revision, r3);
    assert_eq!(now.hash, model.hash_kv(r6, r3), "after the compaction");
    let at_r4 = hash_kv(s, r4).await.expect("hash at a past revision");
    assert_eq!(at_r4.hash, model.hash_kv(r4, r3), "at {r4}");
    // The compaction revision itself: etcd 3.5.1 refuses it, the 3.5
    // branch (which the fake follows) hashes it.
    match hash_kv(s, r3).await {
        Ok(at_compaction) => assert_eq!(at_compaction.hash, model.hash_kv(r3, r3)),
        Err(status) => {
            assert_status(
                Err::<(), _>(status),
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            );
            assert!(!s.is_fake(), "the fake follows the 3.5 branch");
        }
    }
    assert_status(
        hash_kv(s, r2).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision has been compacted",
    );
    assert_status(
        hash_kv(s, r6 + 1000).await,
        Code::OutOfRange,
        "etcdserver: mvcc: required revision is a future revision",
    );
    let negative = hash_kv(s, -1).await.expect("negative revision");
    assert_eq!(
        negative.hash,
        crc32c::crc32c(b"key"),
        "nothing but the bucket name"
    );
    s.client().lease_revoke(lease).await.unwrap();
}

async fn downgrade(s: &Scenario, action: i32, version: &str) -> Result<DowngradeResponse, Status> {
    s.maintenance()
        .downgrade(DowngradeRequest {
            action,
            version: version.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Sends a downgrade ENABLE or CANCEL, which etcd 3.5 applies but never
/// answers: it times out after the request timeout (7 s), on the fake's
/// clock as on etcd's. `applied` says when the change has landed.
async fn unanswered_downgrade(s: &Scenario, action: DowngradeAction, applied: Code) {
    let mut maintenance = s.maintenance();
    let request = DowngradeRequest {
        action: action as i32,
        version: "3.4".to_owned(),
    };
    let sent = tokio::spawn(async move { maintenance.downgrade(request).await });
    // Applied (VALIDATE says so), and so waiting, before time passes.
    let mut waited = 0;
    loop {
        let validated = downgrade(s, DowngradeAction::Validate as i32, "3.4").await;
        if validated.as_ref().err().map(Status::code) == Some(applied)
            || (applied == Code::Ok && validated.is_ok())
        {
            break;
        }
        waited += 1;
        assert!(waited < 100, "{action:?} never applied: {validated:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    s.pass(std::time::Duration::from_secs(7)).await;
    let answer = finished(sent, "the request timeout").await;
    assert_status(answer, Code::Unavailable, "etcdserver: request timed out");
}

/// Downgrade: VALIDATE's checks in etcd's order and its answer; ENABLE and
/// CANCEL applied but timing out, as in etcd 3.5; an unknown action. The
/// cluster is left as it was (no downgrade under way).
pub async fn downgrade_validation_and_timeouts(s: &mut Scenario) {
    // A run that failed half-way on a real etcd may have left a downgrade
    // under way: end it first (nothing to end is fine).
    if downgrade(s, DowngradeAction::Validate as i32, "3.4")
        .await
        .is_err()
    {
        unanswered_downgrade(s, DowngradeAction::Cancel, Code::Ok).await;
    }
    let validated = downgrade(s, DowngradeAction::Validate as i32, "3.4")
        .await
        .expect("3.4 is the one version a 3.5 cluster may go down to");
    assert_eq!(validated.version, "3.5.0");
    assert!(validated.header.expect("header").revision > 0);
    for wrong_format in ["", "3", "three.four", "3.4.x"] {
        assert_status(
            downgrade(s, DowngradeAction::Validate as i32, wrong_format).await,
            Code::InvalidArgument,
            "etcdserver: wrong downgrade target version format",
        );
    }
    for wrong_target in ["3.3", "3.5", "3.3.0", "2.4"] {
        assert_status(
            downgrade(s, DowngradeAction::Validate as i32, wrong_target).await,
            Code::InvalidArgument,
            "etcdserver: invalid downgrade target version",
        );
    }
    assert_status(
        downgrade(s, DowngradeAction::Cancel as i32, "").await,
        Code::FailedPrecondition,
        "etcdserver: no inflight downgrade job",
    );
    assert_status(
        downgrade(s, 7, "3.4").await,
        Code::Unknown,
        "etcdserver: unknown method",
    );

    unanswered_downgrade(s, DowngradeAction::Enable, Code::FailedPrecondition).await;
    assert_status(
        downgrade(s, DowngradeAction::Validate as i32, "3.4").await,
        Code::FailedPrecondition,
        "etcdserver: cluster has a downgrade job in progress",
    );
    unanswered_downgrade(s, DowngradeAction::Cancel, Code::Ok).await;
    downgrade(s, DowngradeAction::Validate as i32, "3.4")
        .await
        .expect("no downgrade under way any more");
}

/// Snapshot streams the database in 32 KiB messages whose remaining_bytes
/// count down to 0, then its sha256 alone, with no header anywhere; the
/// database is a bbolt file (4096-byte pages). Hash has a full header, is
/// stable while nothing changes, and moves with a write.
pub async fn snapshot_stream_and_hash(s: &mut Scenario) {
    // Enough data for several messages.
    for i in 0..100 {
        s.kv()
            .put(PutRequest {
                key: b(s.key(&format!("k{i:03}"))),
                value: vec![b'v'; 1000].into(),
                ..Default::default()
            })
            .await
            .expect("put");
    }
    let mut stream = s
        .maintenance()
        .snapshot(SnapshotRequest {})
        .await
        .expect("snapshot")
        .into_inner();
    let mut messages = Vec::new();
    while let Some(message) = within("a snapshot message", stream.message())
        .await
        .expect("a snapshot message")
    {
        assert_eq!(message.header, None, "no header in a snapshot message");
        messages.push(message);
    }
    let checksum = messages.pop().expect("the checksum message");
    assert_eq!((checksum.remaining_bytes, checksum.blob.len()), (0, 32));
    let total: usize = messages.iter().map(|m| m.blob.len()).sum();
    assert_eq!(total % 4096, 0, "whole bbolt pages");
    assert!(messages.len() >= 3);
    let mut sent = 0;
    for (i, message) in messages.iter().enumerate() {
        if i + 1 < messages.len() {
            assert_eq!(message.blob.len(), 32 * 1024);
        }
        sent += message.blob.len();
        assert_eq!(message.remaining_bytes, (total - sent) as u64);
    }
    let database: Vec<u8> = messages
        .iter()
        .flat_map(|m| m.blob.iter().copied())
        .collect();
    use sha2::Digest;
    assert_eq!(
        sha2::Sha256::digest(&database).as_slice(),
        &checksum.blob[..]
    );
    // The bbolt magic, in the first meta page.
    assert_eq!(&database[16..20], &0xED0C_DAEDu32.to_le_bytes());

    let first = s
        .maintenance()
        .hash(HashRequest {})
        .await
        .expect("hash")
        .into_inner();
    let header = first.header.expect("header");
    assert!(header.revision > 0 && header.member_id != 0 && header.raft_term > 0);
    let again = s
        .maintenance()
        .hash(HashRequest {})
        .await
        .expect("hash")
        .into_inner();
    assert_eq!(again.hash, first.hash, "nothing changed");
    s.kv()
        .put(PutRequest {
            key: b(s.key("changed")),
            value: b("v"),
            ..Default::default()
        })
        .await
        .expect("put");
    let after = s
        .maintenance()
        .hash(HashRequest {})
        .await
        .expect("hash")
        .into_inner();
    assert_ne!(after.hash, first.hash, "a write changes the hash");
}

/// The CORRUPT and NOSPACE alarms as etcd's applier takes them: CORRUPT
/// refuses every KV and lease write (reads and read-only txns go on),
/// NOSPACE those that store data. The first alarm of a kind replaces the
/// applier, and clearing the last of either kind restores a normal one,
/// even with the other still raised. Alarms are cluster-wide: the target
/// is the scenario's alone, and both are cleared whatever happens.
pub async fn alarms_set_what_etcd_applies(s: &mut Scenario) {
    use etcd_proto::etcdserverpb::{
        alarm_request::AlarmAction, AlarmRequest, AlarmType, LeaseGrantRequest, RangeRequest,
        StatusRequest,
    };
    let mut maintenance = s.maintenance();
    let member_id = maintenance
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .member_id;
    let alarm = move |action: AlarmAction, alarm: AlarmType| AlarmRequest {
        action: action as i32,
        member_id,
        alarm: alarm as i32,
    };
    // Clears every alarm, whoever raised it (a failed run included).
    let disarm = {
        let maintenance = maintenance.clone();
        move || {
            let mut maintenance = maintenance.clone();
            async move {
                let raised = maintenance
                    .alarm(alarm(AlarmAction::Get, AlarmType::None))
                    .await
                    .expect("list alarms")
                    .into_inner()
                    .alarms;
                for raised in raised {
                    let clear = AlarmRequest {
                        action: AlarmAction::Deactivate as i32,
                        member_id: raised.member_id,
                        alarm: raised.alarm,
                    };
                    maintenance.alarm(clear).await.expect("disarm");
                }
            }
        }
    };
    disarm().await;
    let (mut kv, mut lease, key) = (s.kv(), s.lease(), s.key("alarmed"));
    let body = tokio::spawn(async move {
        let put = |value: &str| PutRequest {
            key: b(&key),
            value: b(value),
            ..Default::default()
        };
        kv.put(put("before")).await.unwrap();
        let corrupt = "etcdserver: corrupt cluster";
        maintenance
            .alarm(alarm(AlarmAction::Activate, AlarmType::Corrupt))
            .await
            .unwrap();
        assert_status(kv.put(put("x")).await, Code::DataLoss, corrupt);
        let delete = DeleteRangeRequest {
            key: b(&key),
            ..Default::default()
        };
        assert_status(
            kv.delete_range(delete.clone()).await,
            Code::DataLoss,
            corrupt,
        );
        let revision = kv
            .range(RangeRequest {
                key: b(&key),
                ..Default::default()
            })
            .await
            .expect("reads go on")
            .into_inner()
            .header
            .unwrap()
            .revision;
        let read_only = TxnRequest {
            success: vec![RequestOp {
                request: Some(Op::RequestRange(RangeRequest {
                    key: b(&key),
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        kv.txn(read_only).await.expect("read-only txns go on");
        let compact = CompactionRequest {
            revision,
            physical: false,
        };
        assert_status(kv.compact(compact).await, Code::DataLoss, corrupt);
        let grant = LeaseGrantRequest { ttl: 60, id: 0 };
        assert_status(lease.lease_grant(grant).await, Code::DataLoss, corrupt);
        let errors = maintenance
            .status(StatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .errors;
        assert!(errors.iter().any(|e| e.contains("CORRUPT")), "{errors:?}");

        // The first NOSPACE replaces the applier: only data is refused.
        maintenance
            .alarm(alarm(AlarmAction::Activate, AlarmType::Nospace))
            .await
            .unwrap();
        assert_status(
            kv.put(put("x")).await,
            Code::ResourceExhausted,
            "etcdserver: mvcc: database space exceeded",
        );
        kv.delete_range(delete)
            .await
            .expect("deletes store nothing");
        // Clearing CORRUPT leaves a normal applier, NOSPACE or not.
        maintenance
            .alarm(alarm(AlarmAction::Deactivate, AlarmType::Corrupt))
            .await
            .unwrap();
        kv.put(put("after")).await.expect("a normal applier");
    });
    let outcome = tokio::time::timeout(std::time::Duration::from_secs(30), body).await;
    disarm().await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(failed)) => std::panic::resume_unwind(failed.into_panic()),
        Err(_) => panic!("alarms_set_what_etcd_applies: no end after 30 s"),
    }
}
