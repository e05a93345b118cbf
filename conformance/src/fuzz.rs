//! Fuzzing the fake through its wire: random, structurally valid requests to
//! every unary RPC and to watch streams, valid and not (empty keys, huge
//! and negative revisions and TTLs, unknown leases and enum values, nested
//! txns, compactions, time jumps), and arbitrary bytes as the message of
//! every unary RPC of every service (Auth, Lock, Election and Cluster
//! included) and of the streaming ones, over the in-process channel.
//!
//! Whatever a request says, the fake must answer it with a status or a
//! response, never panic, go on serving, and keep its invariants, checked
//! after every request:
//!
//! - the revision never goes down;
//! - every key's revisions are consistent (`1 ≤ create ≤ mod ≤ current`,
//!   version 1 exactly when created at that revision);
//! - lease attachments agree both ways (a key names a live lease that lists
//!   it; a lease lists only keys that name it);
//! - an acknowledged put is readable at its revision, with its value;
//! - watch responses never come from the future, and a stream's events
//!   come in revision order.
//!
//! This runs only against the fake: the point is that no input breaks it.
//! proptest drives it (seeded, shrinking to the shortest breaking
//! sequence); `PROPTEST_CASES` asks for a longer hunt.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::Duration;

use bytes::Bytes;
use etcd_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    kv_client::KvClient,
    lease_client::LeaseClient,
    maintenance_client::MaintenanceClient,
    request_op::Request as Op,
    watch_client::WatchClient,
    watch_request::RequestUnion,
    AlarmRequest, CompactionRequest, Compare, DeleteRangeRequest, DowngradeRequest, HashKvRequest,
    HashRequest, LeaseGrantRequest, LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest,
    MoveLeaderRequest, PutRequest, RangeRequest, RangeResponse, RequestOp, StatusRequest,
    TxnRequest, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest,
    WatchResponse,
};
use fake_etcd::FakeEtcd;
use proptest::prelude::*;
use tokio::sync::mpsc;
use tonic::transport::Channel;

/// A revision a request names: relative to the store's, or absolute.
#[derive(Debug, Clone, Copy)]
pub enum Rev {
    /// The current revision plus this (negative: the past).
    Current(i64),
    /// This exact number (0, negatives, extremes).
    Exactly(i64),
}

/// A lease a request names.
#[derive(Debug, Clone, Copy)]
pub enum LeaseRef {
    /// No lease.
    None,
    /// The n-th lease granted so far (modulo their number), if any.
    Granted(usize),
    /// An ID no one granted.
    Unknown(i64),
}

/// One step of a fuzz case.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub enum Step {
    Range(RangeRequest, Rev),
    Put(PutRequest, LeaseRef),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(Rev),
    Grant(LeaseGrantRequest),
    Revoke(LeaseRef),
    TimeToLive(LeaseRef, bool),
    Leases,
    Alarm(AlarmRequest),
    Status,
    Hash,
    HashKv(Rev),
    MoveLeader(u64),
    Downgrade(DowngradeRequest),
    /// Moves the fake's clock (lease expiry, progress, timeouts).
    Advance(Duration),
    /// A watch request on stream 0 or 1.
    Watch(usize, RequestUnion),
    /// Arbitrary bytes as the message of the RPC at this index of
    /// [`RAW_PATHS`] (modulo their number).
    Raw(usize, Bytes),
}

/// Every RPC of etcd's API, by its gRPC path; those that stream take the
/// bytes as their one request message.
pub const RAW_PATHS: &[&str] = &[
    "/etcdserverpb.KV/Range",
    "/etcdserverpb.KV/Put",
    "/etcdserverpb.KV/DeleteRange",
    "/etcdserverpb.KV/Txn",
    "/etcdserverpb.KV/Compact",
    "/etcdserverpb.Lease/LeaseGrant",
    "/etcdserverpb.Lease/LeaseRevoke",
    "/etcdserverpb.Lease/LeaseTimeToLive",
    "/etcdserverpb.Lease/LeaseLeases",
    "/etcdserverpb.Lease/LeaseKeepAlive",
    "/etcdserverpb.Watch/Watch",
    "/etcdserverpb.Cluster/MemberAdd",
    "/etcdserverpb.Cluster/MemberRemove",
    "/etcdserverpb.Cluster/MemberUpdate",
    "/etcdserverpb.Cluster/MemberList",
    "/etcdserverpb.Cluster/MemberPromote",
    "/etcdserverpb.Maintenance/Alarm",
    "/etcdserverpb.Maintenance/Status",
    "/etcdserverpb.Maintenance/Defragment",
    "/etcdserverpb.Maintenance/Hash",
    "/etcdserverpb.Maintenance/HashKV",
    "/etcdserverpb.Maintenance/Snapshot",
    "/etcdserverpb.Maintenance/MoveLeader",
    "/etcdserverpb.Maintenance/Downgrade",
    "/etcdserverpb.Auth/AuthEnable",
    "/etcdserverpb.Auth/AuthDisable",
    "/etcdserverpb.Auth/AuthStatus",
    "/etcdserverpb.Auth/Authenticate",
    "/etcdserverpb.Auth/UserAdd",
    "/etcdserverpb.Auth/UserGet",
    "/etcdserverpb.Auth/UserList",
    "/etcdserverpb.Auth/UserDelete",
    "/etcdserverpb.Auth/UserChangePassword",
    "/etcdserverpb.Auth/UserGrantRole",
    "/etcdserverpb.Auth/UserRevokeRole",
    "/etcdserverpb.Auth/RoleAdd",
    "/etcdserverpb.Auth/RoleGet",
    "/etcdserverpb.Auth/RoleList",
    "/etcdserverpb.Auth/RoleDelete",
    "/etcdserverpb.Auth/RoleGrantPermission",
    "/etcdserverpb.Auth/RoleRevokePermission",
    "/v3lockpb.Lock/Lock",
    "/v3lockpb.Lock/Unlock",
    "/v3electionpb.Election/Campaign",
    "/v3electionpb.Election/Proclaim",
    "/v3electionpb.Election/Leader",
    "/v3electionpb.Election/Observe",
    "/v3electionpb.Election/Resign",
    "/grpc.health.v1.Health/Check",
    "/etcdserverpb.KV/NoSuchMethod",
];

/// Whether the RPC at `path` streams its responses (or its requests).
fn streams(path: &str) -> bool {
    ["/Watch", "/LeaseKeepAlive", "/Snapshot", "/Observe"]
        .iter()
        .any(|end| path.ends_with(end))
}

/// Bytes that are not a message etcd defined: random, and protobuf's
/// sharp edges (a varint that never ends, a length past the end, a field
/// of wire type 7, a group, field number 0).
fn raw_bytes() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        6 => prop::collection::vec(any::<u8>(), 0..48),
        1 => prop::sample::select(vec![
            vec![0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, b'x'],
            vec![0x0f],
            vec![0x0b, 0x0c],
            vec![0x00, 0x01],
            vec![0x12, 0x02, 0x0a],
        ]),
    ]
    .prop_map(Bytes::from)
}

/// A codec that sends bytes as they are and takes whatever comes back.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put(dst, item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        let length = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, length)))
    }
}

/// Sends `message` as the RPC at `path`; any answer will do. A stream is
/// read for a moment, then dropped.
async fn send_raw(channel: &Channel, path: &'static str, message: Bytes) -> Result<(), String> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| format!("the channel is not ready: {e}"))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    if streams(path.path()) {
        let request = tonic::Request::new(tokio_stream::once(message));
        if let Ok(response) = grpc.streaming(request, path, RawCodec).await {
            let mut responses = response.into_inner();
            let _ = tokio::time::timeout(Duration::from_millis(10), responses.message()).await;
        }
    } else {
        let _ = grpc
            .unary(tonic::Request::new(message), path, RawCodec)
            .await;
    }
    Ok(())
}

pub(crate) fn key() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        4 => prop::collection::vec(prop::sample::select(vec![0u8, b'a', b'b', b'z', 0xff]), 0..4),
        1 => Just(Vec::new()),
        1 => (1usize..3000).prop_map(|n| vec![b'k'; n]),
    ]
    .prop_map(Bytes::from)
}

pub(crate) fn value() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        8 => prop::collection::vec(any::<u8>(), 0..32),
        1 => (1_500_000usize..1_600_000).prop_map(|n| vec![b'v'; n]),
    ]
    .prop_map(Bytes::from)
}

pub(crate) fn rev() -> impl Strategy<Value = Rev> {
    prop_oneof![
        3 => (-3i64..3).prop_map(Rev::Current),
        1 => prop::sample::select(vec![0, -1, 1, i64::MAX, i64::MIN]).prop_map(Rev::Exactly),
    ]
}

pub(crate) fn lease_ref() -> impl Strategy<Value = LeaseRef> {
    prop_oneof![
        2 => Just(LeaseRef::None),
        3 => (0usize..4).prop_map(LeaseRef::Granted),
        1 => prop::sample::select(vec![-1, 1, 42, i64::MAX]).prop_map(LeaseRef::Unknown),
    ]
}

pub(crate) fn enum_value() -> impl Strategy<Value = i32> {
    prop_oneof![4 => 0i32..5, 1 => prop::sample::select(vec![-1, 99, i32::MAX])]
}

pub(crate) fn range_request() -> impl Strategy<Value = RangeRequest> {
    (
        key(),
        key(),
        prop::sample::select(vec![0i64, 1, 2, -1]),
        enum_value(),
        enum_value(),
        any::<[bool; 3]>(),
        prop::sample::select(vec![0i64, 1, 5, -1]),
    )
        .prop_map(
            |(key, range_end, limit, sort_order, sort_target, flags, bound)| RangeRequest {
                key,
                range_end,
                limit,
                sort_order,
                sort_target,
                serializable: flags[0],
                keys_only: flags[1],
                count_only: flags[2],
                min_mod_revision: bound,
                max_mod_revision: bound * 3,
                min_create_revision: bound,
                max_create_revision: bound * 2,
                ..Default::default()
            },
        )
}

pub(crate) fn put_request() -> impl Strategy<Value = PutRequest> {
    (key(), value(), any::<[bool; 3]>()).prop_map(|(key, value, flags)| PutRequest {
        key,
        value: if flags[1] { Bytes::new() } else { value },
        prev_kv: flags[0],
        ignore_value: flags[1],
        ignore_lease: flags[2],
        lease: 0,
    })
}

pub(crate) fn delete_request() -> impl Strategy<Value = DeleteRangeRequest> {
    (key(), key(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

pub(crate) fn compare() -> impl Strategy<Value = Compare> {
    (
        key(),
        key(),
        enum_value(),
        enum_value(),
        -2i64..8,
        value(),
        any::<bool>(),
    )
        .prop_map(|(key, range_end, result, target, number, value, ranged)| {
            let union = match CompareTarget::try_from(target) {
                Ok(CompareTarget::Version) => Some(TargetUnion::Version(number)),
                Ok(CompareTarget::Create) => Some(TargetUnion::CreateRevision(number)),
                Ok(CompareTarget::Mod) => Some(TargetUnion::ModRevision(number)),
                Ok(CompareTarget::Value) => Some(TargetUnion::Value(value)),
                Ok(CompareTarget::Lease) => Some(TargetUnion::Lease(number)),
                Err(_) => None,
            };
            Compare {
                result: if result == 4 {
                    CompareResult::NotEqual as i32
                } else {
                    result
                },
                target,
                key,
                target_union: union,
                range_end: if ranged { range_end } else { Bytes::new() },
            }
        })
}

pub(crate) fn request_op() -> impl Strategy<Value = RequestOp> {
    let leaf = prop_oneof![
        range_request().prop_map(Op::RequestRange),
        put_request().prop_map(Op::RequestPut),
        delete_request().prop_map(Op::RequestDeleteRange),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        (
            prop::collection::vec(compare(), 0..3),
            prop::collection::vec(
                inner.clone().prop_map(|request| RequestOp {
                    request: Some(request),
                }),
                0..3,
            ),
            prop::collection::vec(
                inner.prop_map(|request| RequestOp {
                    request: Some(request),
                }),
                0..3,
            ),
        )
            .prop_map(|(compare, success, failure)| {
                Op::RequestTxn(TxnRequest {
                    compare,
                    success,
                    failure,
                })
            })
    })
    .prop_map(|request| RequestOp {
        request: Some(request),
    })
}

pub(crate) fn txn_request() -> impl Strategy<Value = TxnRequest> {
    (
        prop::collection::vec(compare(), 0..3),
        prop::collection::vec(request_op(), 0..4),
        prop::collection::vec(request_op(), 0..4),
    )
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        })
}

pub(crate) fn watch_request() -> impl Strategy<Value = RequestUnion> {
    prop_oneof![
        3 => (key(), key(), prop::sample::select(vec![0i64, 0, 1, 2, -1, 1000]), any::<[bool; 4]>(), prop::collection::vec(enum_value(), 0..2), -1i64..3)
            .prop_map(|(key, range_end, start_revision, flags, filters, watch_id)| {
                RequestUnion::CreateRequest(WatchCreateRequest {
                    key,
                    range_end,
                    start_revision,
                    progress_notify: flags[0],
                    filters,
                    prev_kv: flags[1],
                    watch_id,
                    fragment: flags[2],
                })
            }),
        1 => (-1i64..4).prop_map(|watch_id| RequestUnion::CancelRequest(WatchCancelRequest { watch_id })),
        1 => Just(RequestUnion::ProgressRequest(WatchProgressRequest {})),
    ]
}

/// One step, any RPC.
pub fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (range_request(), rev()).prop_map(|(r, rev)| Step::Range(r, rev)),
        6 => (put_request(), lease_ref()).prop_map(|(p, l)| Step::Put(p, l)),
        2 => delete_request().prop_map(Step::Delete),
        4 => txn_request().prop_map(Step::Txn),
        1 => rev().prop_map(Step::Compact),
        3 => (prop::sample::select(vec![-5i64, 0, 1, 2, 30, 30, 60, 9_000_000_001, i64::MAX]), prop::sample::select(vec![0i64, 0, 0, 7, -3]))
            .prop_map(|(ttl, id)| Step::Grant(LeaseGrantRequest { ttl, id })),
        1 => lease_ref().prop_map(Step::Revoke),
        1 => (lease_ref(), any::<bool>()).prop_map(|(l, k)| Step::TimeToLive(l, k)),
        1 => Just(Step::Leases),
        1 => (enum_value(), enum_value(), prop::sample::select(vec![0u64, 1, u64::MAX]))
            .prop_map(|(action, alarm, member_id)| Step::Alarm(AlarmRequest { action, member_id, alarm })),
        1 => Just(Step::Status),
        1 => Just(Step::Hash),
        1 => rev().prop_map(Step::HashKv),
        1 => any::<u64>().prop_map(Step::MoveLeader),
        1 => (enum_value(), prop::sample::select(vec!["", "3.4", "3.5", "x", "3.4.0-rc"]))
            .prop_map(|(action, version)| Step::Downgrade(DowngradeRequest { action, version: version.to_owned() })),
        2 => prop::sample::select(vec![1u64, 3, 31, 700]).prop_map(|s| Step::Advance(Duration::from_secs(s))),
        4 => (0usize..2, watch_request()).prop_map(|(stream, request)| Step::Watch(stream, request)),
        4 => (0..RAW_PATHS.len(), raw_bytes()).prop_map(|(path, message)| Step::Raw(path, message)),
    ]
}

/// Panics anywhere in the process (a server task included), counted.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

/// A watch stream the case drives.
struct Stream {
    requests: mpsc::Sender<WatchRequest>,
    responses: tonic::Streaming<WatchResponse>,
    /// The last event revision per watch ID.
    last_event: HashMap<i64, i64>,
}

/// The clients a case uses, all over the fake's in-process channel.
struct Clients {
    channel: Channel,
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    maintenance: MaintenanceClient<Channel>,
    streams: Vec<Stream>,
}

async fn open_stream(channel: &Channel) -> Result<Stream, String> {
    let (requests, outgoing) = mpsc::channel(64);
    let responses = WatchClient::new(channel.clone())
        .max_decoding_message_size(64 << 20)
        .watch(tokio_stream::wrappers::ReceiverStream::new(outgoing))
        .await
        .map_err(|e| format!("opening a watch stream: {e}"))?
        .into_inner();
    Ok(Stream {
        requests,
        responses,
        last_event: HashMap::new(),
    })
}

/// Runs one case: every step, then the invariants after each.
///
/// # Errors
///
/// The first broken invariant, or a panic, with the step that caused it.
pub async fn run_case(steps: Vec<Step>) -> Result<(), String> {
    count_panics();
    let panics_before = PANICS.load(Ordering::SeqCst);
    let etcd = FakeEtcd::builder()
        .progress_notify_interval(Duration::from_secs(5))
        .start()
        .await
        .map_err(|e| e.to_string())?;
    let channel = etcd.in_process_channel();
    let mut clients = Clients {
        channel: channel.clone(),
        kv: KvClient::new(channel.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20),
        lease: LeaseClient::new(channel.clone()),
        maintenance: MaintenanceClient::new(channel.clone()),
        streams: vec![open_stream(&channel).await?, open_stream(&channel).await?],
    };
    let mut granted: Vec<i64> = Vec::new();
    let mut last_revision = 1;
    for (i, step) in steps.iter().enumerate() {
        let context = |what: String| format!("after step {i} ({step:?}): {what}");
        // Time is paused: a limit fires only once every task is idle, so
        // it says "this will never answer", at no cost in wall time.
        let outcome = tokio::time::timeout(
            PATIENCE,
            apply(&etcd, &mut clients, &mut granted, step.clone()),
        )
        .await;
        match outcome {
            Ok(result) => result.map_err(context)?,
            // etcd 3.5 never answers a downgrade's ENABLE or CANCEL
            // until its request timeout; nothing else may wait for ever.
            Err(_) if leaves_waiting(step) => {}
            Err(_) => return Err(context("no answer: the fake hangs".into())),
        }
        if PANICS.load(Ordering::SeqCst) != panics_before {
            return Err(context("the fake panicked".into()));
        }
        last_revision = tokio::time::timeout(
            PATIENCE,
            check_invariants(&etcd, &mut clients, last_revision),
        )
        .await
        .map_err(|_| context("the invariant checks got no answer: the fake hangs".into()))?
        .map_err(context)?;
    }
    Ok(())
}

/// How long a step may wait for its answer on the paused clock: far more
/// than any request takes (a downgrade's 7 s request timeout included).
const PATIENCE: Duration = Duration::from_secs(60);

/// Whether etcd may leave `step` unanswered for as long as the case runs: a
/// downgrade's ENABLE or CANCEL that passed its checks (answered only at
/// its request timeout), and a Lock or a Campaign, which wait, as they
/// should, for an earlier holder whose session lease nobody lets expire.
fn leaves_waiting(step: &Step) -> bool {
    use etcd_proto::etcdserverpb::downgrade_request::DowngradeAction;
    match step {
        Step::Downgrade(d) => {
            d.action == DowngradeAction::Enable as i32 || d.action == DowngradeAction::Cancel as i32
        }
        Step::Raw(path, _) => {
            let path = RAW_PATHS[path % RAW_PATHS.len()];
            path.ends_with("/Lock") || path.ends_with("/Campaign")
        }
        _ => false,
    }
}

pub(crate) fn resolve(rev: Rev, current: i64) -> i64 {
    match rev {
        Rev::Current(delta) => current + delta,
        Rev::Exactly(n) => n,
    }
}

/// The lease ID `lease` names, given the leases granted so far.
pub(crate) fn lease_of(lease: LeaseRef, granted: &[i64]) -> i64 {
    match lease {
        LeaseRef::None => 0,
        LeaseRef::Granted(n) if granted.is_empty() => n as i64,
        LeaseRef::Granted(n) => granted[n % granted.len()],
        LeaseRef::Unknown(id) => id,
    }
}

/// Sends one step. Any status is a fine answer; only what the invariants
/// and the acknowledged-write check say is not.
async fn apply(
    etcd: &FakeEtcd,
    clients: &mut Clients,
    granted: &mut Vec<i64>,
    step: Step,
) -> Result<(), String> {
    let current = etcd.revision();
    match step {
        Step::Range(mut range, revision) => {
            range.revision = resolve(revision, current);
            let _ = clients.kv.range(range).await;
        }
        Step::Put(mut put, lease) => {
            put.lease = lease_of(lease, granted);
            let written = put.clone();
            if let Ok(response) = clients.kv.put(put).await {
                let revision = response.into_inner().header.map_or(0, |h| h.revision);
                check_acknowledged(etcd, clients, &written, revision).await?;
            }
        }
        Step::Delete(delete) => {
            let _ = clients.kv.delete_range(delete).await;
        }
        Step::Txn(txn) => {
            let _ = clients.kv.txn(txn).await;
        }
        Step::Compact(revision) => {
            let revision = resolve(revision, current);
            let _ = clients
                .kv
                .compact(CompactionRequest {
                    revision,
                    physical: false,
                })
                .await;
        }
        Step::Grant(grant) => {
            if let Ok(response) = clients.lease.lease_grant(grant).await {
                granted.push(response.into_inner().id);
            }
        }
        Step::Revoke(lease) => {
            let id = lease_of(lease, granted);
            let _ = clients.lease.lease_revoke(LeaseRevokeRequest { id }).await;
        }
        Step::TimeToLive(lease, keys) => {
            let id = lease_of(lease, granted);
            let _ = clients
                .lease
                .lease_time_to_live(LeaseTimeToLiveRequest { id, keys })
                .await;
        }
        Step::Leases => {
            let _ = clients.lease.lease_leases(LeaseLeasesRequest {}).await;
        }
        Step::Alarm(alarm) => {
            let _ = clients.maintenance.alarm(alarm).await;
        }
        Step::Status => {
            let _ = clients.maintenance.status(StatusRequest {}).await;
        }
        Step::Hash => {
            let _ = clients.maintenance.hash(HashRequest {}).await;
        }
        Step::HashKv(revision) => {
            let revision = resolve(revision, current);
            let _ = clients
                .maintenance
                .hash_kv(HashKvRequest { revision })
                .await;
        }
        Step::MoveLeader(target_id) => {
            let _ = clients
                .maintenance
                .move_leader(MoveLeaderRequest { target_id })
                .await;
        }
        Step::Downgrade(downgrade) => {
            let _ = clients.maintenance.downgrade(downgrade).await;
        }
        Step::Advance(by) => etcd.advance(by).await,
        Step::Watch(stream, request) => {
            let stream = &clients.streams[stream % clients.streams.len()];
            let _ = stream
                .requests
                .send(WatchRequest {
                    request_union: Some(request),
                })
                .await;
        }
        Step::Raw(path, message) => {
            send_raw(&clients.channel, RAW_PATHS[path % RAW_PATHS.len()], message).await?;
        }
    }
    Ok(())
}

/// An acknowledged put is readable at its revision, with what it wrote.
async fn check_acknowledged(
    etcd: &FakeEtcd,
    clients: &mut Clients,
    written: &PutRequest,
    revision: i64,
) -> Result<(), String> {
    let read = clients
        .kv
        .range(RangeRequest {
            key: written.key.clone(),
            revision,
            ..Default::default()
        })
        .await;
    let kvs = match read {
        Ok(read) => read.into_inner().kvs,
        // Compacted meanwhile cannot happen (nothing ran between), and a
        // read of a revision just acknowledged must work.
        Err(status) => return Err(format!("the put at {revision} cannot be read: {status:?}")),
    };
    let Some(kv) = kvs.first() else {
        return Err(format!("the put at {revision} is not there"));
    };
    if kv.mod_revision != revision || (!written.ignore_value && kv.value != written.value) {
        return Err(format!(
            "the put at {revision} reads back as {kv:?} (the store is at {})",
            etcd.revision()
        ));
    }
    Ok(())
}

/// Every key, and every lease with its keys, as of one revision.
///
/// The two come from two reads. A write of the fake's own may land between
/// them (a Lock waiter that gave up withdraws its key in the background, as
/// etcd does), so the reads are repeated until no revision came between.
async fn store_and_leases(
    etcd: &FakeEtcd,
    clients: &mut Clients,
) -> Result<(RangeResponse, BTreeMap<i64, Vec<Vec<u8>>>), String> {
    const TRIES: usize = 100;
    for _ in 0..TRIES {
        let all = clients
            .kv
            .range(RangeRequest {
                key: Bytes::from_static(b"\0"),
                range_end: Bytes::from_static(b"\0"),
                ..Default::default()
            })
            .await
            .map_err(|status| format!("the fake stopped serving: {status:?}"))?
            .into_inner();
        let leases = etcd.leases().into_iter().map(|l| (l.id, l.keys)).collect();
        // Every write that attaches or detaches a key takes a revision.
        if all.header.as_ref().map_or(0, |h| h.revision) == etcd.revision() {
            return Ok((all, leases));
        }
    }
    Err(format!("the store kept changing under {TRIES} reads"))
}

/// Checks every invariant; the revision now.
async fn check_invariants(
    etcd: &FakeEtcd,
    clients: &mut Clients,
    last_revision: i64,
) -> Result<i64, String> {
    // Still serving, and the revision never goes down.
    let (all, leases) = store_and_leases(etcd, clients).await?;
    let current = all.header.map_or(0, |h| h.revision);
    if current < last_revision {
        return Err(format!(
            "the revision went down: {last_revision} → {current}"
        ));
    }
    // Every key's revisions.
    for kv in &all.kvs {
        let ok = 1 <= kv.create_revision
            && kv.create_revision <= kv.mod_revision
            && kv.mod_revision <= current
            && kv.version >= 1
            && ((kv.version == 1) == (kv.create_revision == kv.mod_revision));
        if !ok {
            return Err(format!("inconsistent revisions at {current}: {kv:?}"));
        }
    }
    // Lease attachments, both ways.
    for kv in all.kvs.iter().filter(|kv| kv.lease != 0) {
        let listed = leases
            .get(&kv.lease)
            .is_some_and(|keys| keys.contains(&kv.key.to_vec()));
        if !listed {
            return Err(format!("{kv:?} names a lease that does not list it"));
        }
    }
    let by_key: HashMap<&[u8], i64> = all.kvs.iter().map(|kv| (&kv.key[..], kv.lease)).collect();
    for (id, keys) in &leases {
        for key in keys {
            if by_key.get(key.as_slice()) != Some(id) {
                return Err(format!("lease {id} lists {key:?}, which does not name it"));
            }
        }
    }
    // Watch responses so far: none from the future, events in order.
    for stream in &mut clients.streams {
        while let Ok(Ok(Some(response))) =
            tokio::time::timeout(Duration::from_millis(1), stream.responses.message()).await
        {
            if response.created {
                // A watch ID may be reused after a cancel: a new history.
                stream.last_event.remove(&response.watch_id);
            }
            let revision = response.header.map_or(0, |h| h.revision);
            if revision > current {
                return Err(format!(
                    "a watch response from the future: {revision} > {current}"
                ));
            }
            for event in &response.events {
                let at = event.kv.as_ref().map_or(0, |kv| kv.mod_revision);
                let last = stream.last_event.entry(response.watch_id).or_insert(0);
                if at < *last {
                    return Err(format!(
                        "watch {} went back in time: {at} after {last}",
                        response.watch_id
                    ));
                }
                *last = at;
            }
        }
    }
    Ok(current)
}

/// The property: `cases` random sequences of up to `steps` steps.
///
/// # Errors
///
/// The shrunk failing sequence, with the seed that replays the run.
pub fn fuzz(cases: u32, steps: usize) -> Result<(), String> {
    let strategy = prop::collection::vec(step(), 1..steps);
    crate::properties::run_seeded(cases, &strategy, true, |steps, _| run_case(steps))
}
