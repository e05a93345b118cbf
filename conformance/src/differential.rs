//! Differential testing: the same random sequence of requests sent to a
//! reference etcd and to a fresh fake, every answer compared field by
//! field, error codes and texts included.
//!
//! # How a case runs
//!
//! 1. The reference (a real etcd at [`ENDPOINTS_VAR`], reused by every
//!    case) is reset: alarms disarmed, leases revoked, keys deleted, and its
//!    history compacted at its revision `C`.
//! 2. A fresh fake starts at the same point
//!    ([`FakeEtcdBuilder::compacted_at`](fake_etcd::FakeEtcdBuilder::compacted_at)`(C)`),
//!    on the real clock, so that every revision in every answer can be
//!    compared as it is, and a lease's remaining TTL too (within a second).
//! 3. Each step (KV with every option and its invalid inputs, values around
//!    the 1.5 MiB request limit and the 2 MiB message limit, nested txns,
//!    compactions, every Lease call, two Watch streams with creates,
//!    cancels, progress requests, filters, fragments and `prev_kv`, and the
//!    Maintenance calls) goes to the reference, then to the fake, and the
//!    two answers are compared after normalising only what must differ:
//!    member and cluster IDs and raft terms in headers, lease IDs (by order
//!    of grant), remaining TTLs (within a second), and what Status and Hash
//!    report about the raft log and the database file.
//! 4. At the end each watch stream's responses are compared, per watch ID,
//!    as lists of events and of created, cancelled and progress responses
//!    (how events are batched into responses is timing, not behaviour).
//!
//! proptest shrinks a divergence to the shortest sequence that shows it,
//! and the failure names the seed that replays the run.
//!
//! # Drift points
//!
//! Where etcd 3.5.1 and the 3.5 branch tip differ, the fake follows the tip
//! and the tester accepts the tip's answer ([`Drift`]): a progress request
//! on a stream with no watch is not sent, nor a watch from a negative
//! revision or one the client numbers -1; the fake may leave out progress
//! responses while a watch is unsynced; and HashKV at the compaction
//! revision may be refused by the reference.
//!
//! # Requests that kill etcd
//!
//! Some requests crash etcd 3.5 (3.5.1 and the tip), so the tester does
//! not send them: a Range sorted by a target outside the enum, an Alarm
//! with an action outside the enum, and the activation of an alarm other
//! than NOSPACE or CORRUPT. The fake answers them; `fuzz` covers them.
//!
//! Without [`ENDPOINTS_VAR`] the reference is a second fake, reached over
//! TCP: the tester then checks that the fake answers the same sequence the
//! same way twice, and its own machinery.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use bytes::Bytes;
use etcd_proto::etcdserverpb::{
    alarm_request::AlarmAction, auth_client::AuthClient, cluster_client::ClusterClient,
    downgrade_request::DowngradeAction, kv_client::KvClient, lease_client::LeaseClient,
    maintenance_client::MaintenanceClient, response_op::Response as OpResponse,
    watch_client::WatchClient, watch_request::RequestUnion, AlarmRequest, AlarmType,
    AuthRoleAddRequest, AuthRoleDeleteRequest, AuthRoleGetRequest, AuthRoleGrantPermissionRequest,
    AuthRoleListRequest, AuthRoleRevokePermissionRequest, AuthStatusRequest, AuthUserAddRequest,
    AuthUserChangePasswordRequest, AuthUserDeleteRequest, AuthUserGetRequest,
    AuthUserGrantRoleRequest, AuthUserListRequest, AuthUserRevokeRoleRequest, AuthenticateRequest,
    CompactionRequest, DeleteRangeRequest, DowngradeRequest, HashKvRequest, HashRequest,
    LeaseGrantRequest, LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest,
    MemberListRequest, MoveLeaderRequest, PutRequest, RangeRequest, ResponseHeader, StatusRequest,
    TxnRequest, TxnResponse, WatchCreateRequest, WatchRequest, WatchResponse,
};
use etcd_proto::mvccpb::KeyValue;
use fake_etcd::{FakeEtcd, TimeSource};
use proptest::prelude::*;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::fuzz::{self, LeaseRef, Rev};
use crate::{Target, ENDPOINTS_VAR};

/// One step of a differential case.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub enum Step {
    Range(RangeRequest, Rev),
    Put(PutRequest, LeaseRef),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(Rev, bool),
    Grant(LeaseGrantRequest),
    Revoke(LeaseRef),
    TimeToLive(LeaseRef, bool),
    Leases,
    Alarm(AlarmRequest),
    Status,
    Hash,
    HashKv(Rev),
    MoveLeader(u64),
    /// Only VALIDATE: ENABLE and CANCEL change the cluster for longer
    /// than a case and wait out etcd's request timeout.
    Downgrade(String),
    /// `MemberList`, linearizable or not.
    MemberList(bool),
    /// An Auth call (auth itself stays disabled).
    Auth(AuthCall),
    /// A watch request on stream 0 or 1. A create's start revision is a
    /// [`WatchStart`], resolved when it is sent.
    Watch(usize, RequestUnion, WatchStart),
}

/// Users and roles the auth calls name: empty, ordinary, and root.
const USERS: [&str; 4] = ["", "alice", "bob", "root"];
const ROLES: [&str; 4] = ["", "reader", "writer", "root"];

/// An Auth call, by index into [`USERS`] and [`ROLES`]. Auth is never
/// enabled: the calls that manage users and roles work without it.
#[derive(Debug, Clone)]
#[allow(missing_docs)]
pub enum AuthCall {
    Status,
    Authenticate(usize, &'static str),
    UserAdd(usize, &'static str, bool),
    UserGet(usize),
    UserList,
    UserDelete(usize),
    UserChangePassword(usize, &'static str),
    UserGrantRole(usize, usize),
    UserRevokeRole(usize, usize),
    RoleAdd(usize),
    RoleGet(usize),
    RoleList,
    RoleDelete(usize),
    RoleGrantPermission(usize, i32, Bytes, Bytes),
    RoleRevokePermission(usize, Bytes, Bytes),
}

fn auth_call() -> impl Strategy<Value = AuthCall> {
    let user = 0usize..USERS.len();
    let role = 0usize..ROLES.len();
    // No password longer than bcrypt's 72 bytes: a drift point
    // ([`Drift::LongPassword`]).
    let password = prop::sample::select(vec!["", "pw", "a password of some length"]);
    prop_oneof![
        1 => Just(AuthCall::Status),
        1 => (user.clone(), password.clone()).prop_map(|(u, p)| AuthCall::Authenticate(u, p)),
        3 => (user.clone(), password.clone(), any::<bool>())
            .prop_map(|(u, p, none)| AuthCall::UserAdd(u, p, none)),
        1 => user.clone().prop_map(AuthCall::UserGet),
        1 => Just(AuthCall::UserList),
        1 => user.clone().prop_map(AuthCall::UserDelete),
        1 => (user.clone(), password).prop_map(|(u, p)| AuthCall::UserChangePassword(u, p)),
        2 => (user.clone(), role.clone()).prop_map(|(u, r)| AuthCall::UserGrantRole(u, r)),
        1 => (user, role.clone()).prop_map(|(u, r)| AuthCall::UserRevokeRole(u, r)),
        3 => role.clone().prop_map(AuthCall::RoleAdd),
        1 => role.clone().prop_map(AuthCall::RoleGet),
        1 => Just(AuthCall::RoleList),
        1 => role.clone().prop_map(AuthCall::RoleDelete),
        3 => (role.clone(), fuzz::enum_value(), fuzz::key(), fuzz::key())
            .prop_map(|(r, kind, key, end)| AuthCall::RoleGrantPermission(r, kind, key, end)),
        1 => (role, fuzz::key(), fuzz::key())
            .prop_map(|(r, key, end)| AuthCall::RoleRevokePermission(r, key, end)),
    ]
}

/// Where a watch starts, relative to the case.
#[derive(Debug, Clone, Copy)]
pub enum WatchStart {
    /// Now (start revision 0).
    Now,
    /// Before the compaction the case started with: refused as compacted.
    Compacted,
    /// At the compaction point itself.
    CompactionPoint,
    /// A revision already written (the current one, minus this).
    Past(i64),
    /// A revision not yet written (the current one, plus this).
    Future(i64),
}

/// Values around the limits: the 1.5 MiB request limit and the 2 MiB
/// message limit, as well as ordinary ones.
fn value() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        12 => prop::collection::vec(any::<u8>(), 0..32).prop_map(Bytes::from),
        1 => (1_572_800usize..1_573_000).prop_map(|n| Bytes::from(vec![b'v'; n])),
        1 => (2_097_000usize..2_097_300).prop_map(|n| Bytes::from(vec![b'w'; n])),
    ]
}

fn put_request() -> impl Strategy<Value = PutRequest> {
    (fuzz::put_request(), value()).prop_map(|(mut put, value)| {
        if !put.ignore_value {
            put.value = value;
        }
        put
    })
}

fn watch_start() -> impl Strategy<Value = WatchStart> {
    prop_oneof![
        4 => Just(WatchStart::Now),
        1 => Just(WatchStart::Compacted),
        1 => Just(WatchStart::CompactionPoint),
        2 => (0i64..4).prop_map(WatchStart::Past),
        1 => (1i64..3).prop_map(WatchStart::Future),
    ]
}

/// Lease TTLs that cannot run out during a case (a case lasts seconds, on
/// the real clock), and the invalid ones.
fn grant() -> impl Strategy<Value = LeaseGrantRequest> {
    (
        prop::sample::select(vec![30i64, 60, 3600, 9_000_000_001, i64::MAX]),
        prop::sample::select(vec![0i64, 0, 0, 7, -3]),
    )
        .prop_map(|(ttl, id)| LeaseGrantRequest { ttl, id })
}

/// A range that etcd can answer: a sort target outside the enum with an
/// ascending or descending order makes etcd 3.5 (3.5.1 and the tip)
/// sort with no sorter, a nil dereference that kills the process. The
/// fake answers it unsorted; the fuzzer covers it.
fn survivable(mut range: RangeRequest) -> RangeRequest {
    use etcd_proto::etcdserverpb::range_request::SortTarget;
    if SortTarget::try_from(range.sort_target).is_err() {
        range.sort_target = SortTarget::Key as i32;
    }
    range
}

fn survivable_txn(mut txn: TxnRequest) -> TxnRequest {
    use etcd_proto::etcdserverpb::request_op::Request;
    for op in txn.success.iter_mut().chain(txn.failure.iter_mut()) {
        op.request = match op.request.take() {
            Some(Request::RequestRange(range)) => Some(Request::RequestRange(survivable(range))),
            Some(Request::RequestTxn(txn)) => Some(Request::RequestTxn(survivable_txn(txn))),
            other => other,
        };
    }
    txn
}

/// An alarm request etcd survives. An action outside the enum kills etcd
/// 3.5.1 (a nil response dereferenced in the maintenance server), and so
/// does activating an alarm other than NOSPACE or CORRUPT, at apply, and
/// again at each restart as the entry is replayed. The fake answers both;
/// the fuzzer covers them.
fn survivable_alarm(mut alarm: AlarmRequest) -> AlarmRequest {
    if alarm.action == AlarmAction::Activate as i32 && !matches!(alarm.alarm, 1 | 2) {
        alarm.alarm = AlarmType::Nospace as i32;
    }
    alarm
}

/// One step, any RPC the tester compares.
pub fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (fuzz::range_request(), fuzz::rev()).prop_map(|(r, rev)| Step::Range(survivable(r), rev)),
        6 => (put_request(), fuzz::lease_ref()).prop_map(|(p, l)| Step::Put(p, l)),
        2 => fuzz::delete_request().prop_map(Step::Delete),
        4 => fuzz::txn_request().prop_map(|txn| Step::Txn(survivable_txn(txn))),
        1 => (fuzz::rev(), any::<bool>()).prop_map(|(r, physical)| Step::Compact(r, physical)),
        2 => grant().prop_map(Step::Grant),
        1 => fuzz::lease_ref().prop_map(Step::Revoke),
        1 => (fuzz::lease_ref(), any::<bool>()).prop_map(|(l, k)| Step::TimeToLive(l, k)),
        1 => Just(Step::Leases),
        1 => (0i32..3, fuzz::enum_value(), prop::sample::select(vec![0u64, 1, u64::MAX]))
            .prop_map(|(action, alarm, member_id)| Step::Alarm(survivable_alarm(AlarmRequest { action, member_id, alarm }))),
        1 => Just(Step::Status),
        1 => Just(Step::Hash),
        1 => fuzz::rev().prop_map(Step::HashKv),
        1 => any::<u64>().prop_map(Step::MoveLeader),
        1 => prop::sample::select(vec!["", "3.4", "3.5", "x", "3.4.0-rc"])
            .prop_map(|v| Step::Downgrade(v.to_owned())),
        5 => (0usize..2, fuzz::watch_request(), watch_start())
            .prop_map(|(stream, request, start)| Step::Watch(stream, request, start)),
        1 => any::<bool>().prop_map(Step::MemberList),
        3 => auth_call().prop_map(Step::Auth),
    ]
}

/// A documented difference between etcd 3.5.1 and the 3.5 branch tip,
/// where the fake follows the tip and the tester accepts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Drift {
    /// A progress request on a stream without a watch: 3.5.1 answers with
    /// watch ID -1, the tip (`progressIfSync`) sends nothing. Not sent.
    ProgressWithoutWatch,
    /// A progress request while a watch of the stream is not synced
    /// (catching up, or about to be cancelled as compacted): 3.5.1
    /// answers at once, the tip does not. Accepted when the fake's watch
    /// responses are etcd's without some progress responses (see
    /// `watches_agree`, which also accepts the timing of compaction
    /// cancels).
    ProgressWhileUnsynced,
    /// A watch from a negative revision: 3.5.1 creates it, the tip refuses
    /// it at once. Not sent.
    NegativeStartRevision,
    /// A watch the client numbers -1: in 3.5.1 any refused create on its
    /// stream (whose answer carries ID -1) makes the server forget the
    /// watch was announced, so its later responses are held for ever; the
    /// tip sends responses for ID -1 always. Not sent.
    ClientWatchIdMinusOne,
    /// A password longer than bcrypt's 72 bytes: 3.5.1's bcrypt cut it
    /// short silently, the tip's refuses it (before the user name is
    /// checked). Not sent.
    LongPassword,
    /// A permission whose range is not a range (empty key, or an end
    /// before the key): 3.5.1 grants it, the tip refuses it first with
    /// "invalid auth management". Not sent.
    InvalidPermissionRange,
    /// HashKV at the compaction revision: 3.5.1 refuses it as compacted,
    /// the tip hashes it. Accepted either way.
    HashKvAtCompaction,
    /// A txn whose puts are all inside nested txns, while the NOSPACE
    /// alarm is raised: 3.5.1's quota cost skips nested txns, so it applies
    /// the txn; the tip counts them (etcd 6a83a79cf) and refuses it with
    /// "database space exceeded". Not sent.
    NestedPutsUnderNoSpace,
}

/// Whether `txn` puts only from nested txns, so that etcd 3.5.1 and the
/// tip cost it differently under the NOSPACE alarm
/// ([`Drift::NestedPutsUnderNoSpace`]).
fn puts_only_in_nested_txns(txn: &TxnRequest) -> bool {
    use etcd_proto::etcdserverpb::request_op::Request;
    fn puts(txn: &TxnRequest, nested: bool) -> bool {
        txn.success
            .iter()
            .chain(&txn.failure)
            .any(|op| match &op.request {
                Some(Request::RequestPut(_)) => true,
                Some(Request::RequestTxn(inner)) => nested && puts(inner, true),
                _ => false,
            })
    }
    !puts(txn, false) && puts(txn, true)
}

/// Whether `side` has the NOSPACE alarm raised (by any member).
async fn space_alarm_raised(side: &mut Side) -> bool {
    let list = AlarmRequest {
        action: AlarmAction::Get as i32,
        ..Default::default()
    };
    side.maintenance.alarm(list).await.is_ok_and(|r| {
        r.into_inner()
            .alarms
            .iter()
            .any(|a| a.alarm == AlarmType::Nospace as i32)
    })
}

/// A watch stream of one side.
struct Stream {
    requests: mpsc::Sender<WatchRequest>,
    responses: mpsc::UnboundedReceiver<Result<WatchResponse, tonic::Status>>,
    /// What it said so far, by watch ID.
    said: BTreeMap<i64, Vec<Said>>,
    /// The watches created and not cancelled by the client (for
    /// [`Drift::ProgressWithoutWatch`]); a watch cancelled as compacted
    /// still counts, as it does for etcd until the client cancels it.
    active: std::collections::BTreeSet<i64>,
    /// Whether a watch was created on it from a past or future revision,
    /// and so may have been unsynced when a progress request came.
    may_lag: bool,
    /// Whether it ended.
    ended: bool,
}

impl Stream {
    /// Takes in one response, or the status the stream ended with.
    fn record(&mut self, next: Result<WatchResponse, tonic::Status>, granted: &[i64]) {
        let response = match next {
            Ok(response) => response,
            Err(status) => {
                let ended = Said::Ended(format!("{:?} {:?}", status.code(), status.message()));
                self.said.entry(i64::MIN).or_default().push(ended);
                self.ended = true;
                return;
            }
        };
        let revision = response.header.as_ref().map_or(0, |h| h.revision);
        let of_watch = self.said.entry(response.watch_id).or_default();
        if response.created {
            of_watch.push(Said::Created(revision));
            if !response.canceled {
                self.active.insert(response.watch_id);
            }
        }
        if response.canceled || response.compact_revision != 0 {
            of_watch.push(Said::Canceled {
                reason: response.cancel_reason,
                compact_revision: response.compact_revision,
            });
        } else if !response.created && response.events.is_empty() {
            of_watch.push(Said::Progress(revision));
        }
        for mut event in response.events {
            event.kv.iter_mut().for_each(|kv| lease_in(kv, granted));
            event
                .prev_kv
                .iter_mut()
                .for_each(|kv| lease_in(kv, granted));
            of_watch.push(Said::Event(format!("{event:?}")));
        }
    }

    /// Reads until a created response comes (etcd answers every create
    /// with one): its watch ID, and whether it was refused.
    async fn created(&mut self, granted: &[i64]) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while !self.ended {
            let Ok(Some(next)) = tokio::time::timeout_at(deadline, self.responses.recv()).await
            else {
                return format!("no created response within {PATIENCE:?}");
            };
            let created = next.as_ref().ok().filter(|r| r.created).map(|r| {
                format!(
                    "created {} canceled {} {:?}",
                    r.watch_id, r.canceled, r.cancel_reason
                )
            });
            self.record(next, granted);
            if let Some(created) = created {
                return created;
            }
        }
        "the stream ended".into()
    }

    /// Reads until the stream has been quiet for `quiet`; what it said.
    async fn drain(&mut self, granted: &[i64], quiet: Duration) -> BTreeMap<i64, Vec<Said>> {
        while !self.ended {
            match tokio::time::timeout(quiet, self.responses.recv()).await {
                Ok(Some(next)) => self.record(next, granted),
                _ => break,
            }
        }
        std::mem::take(&mut self.said)
    }
}

/// One target of the comparison, and what normalises its answers.
struct Side {
    name: &'static str,
    channel: Channel,
    kv: KvClient<Channel>,
    lease: LeaseClient<Channel>,
    maintenance: MaintenanceClient<Channel>,
    auth: AuthClient<Channel>,
    cluster: ClusterClient<Channel>,
    /// The auth revision when the case began: a reused etcd's has moved on.
    auth_base: u64,
    streams: Vec<Stream>,
    /// Leases granted in this case, in order: their IDs compare by index.
    granted: Vec<i64>,
    member_id: u64,
    cluster_id: u64,
    /// How long its watch streams must be silent to be drained.
    quiet: Duration,
    /// Keeps a fake side running.
    _fake: Option<FakeEtcd>,
}

/// The largest message a side accepts: etcd's clients' default.
const MAX_MESSAGE: usize = 64 << 20;

/// How long one request may take before the tester calls it a hang.
const PATIENCE: Duration = Duration::from_secs(10);

/// How long a real etcd's watch stream must stay silent before the tester
/// believes it has seen everything (etcd syncs lagging watchers every
/// 100 ms).
const QUIET_ETCD: Duration = Duration::from_millis(300);

/// The same for a fake, which delivers as it writes.
const QUIET_FAKE: Duration = Duration::from_millis(30);

impl Side {
    async fn connect(
        name: &'static str,
        channel: Channel,
        fake: Option<FakeEtcd>,
    ) -> Result<Self, String> {
        let mut maintenance =
            MaintenanceClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE);
        let status = maintenance
            .status(StatusRequest {})
            .await
            .map_err(|e| format!("{name}: status: {e}"))?
            .into_inner();
        let header = status.header.unwrap_or_default();
        let mut auth = AuthClient::new(channel.clone());
        let auth_base = auth
            .auth_status(AuthStatusRequest {})
            .await
            .map_err(|e| format!("{name}: auth status: {e}"))?
            .into_inner()
            .auth_revision;
        let mut streams = Vec::new();
        for _ in 0..2 {
            streams.push(open_stream(&channel));
        }
        Ok(Side {
            name,
            channel: channel.clone(),
            kv: KvClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            lease: LeaseClient::new(channel.clone()),
            maintenance,
            auth,
            cluster: ClusterClient::new(channel.clone()),
            auth_base,
            streams,
            granted: Vec::new(),
            member_id: header.member_id,
            cluster_id: header.cluster_id,
            quiet: if fake.is_some() {
                QUIET_FAKE
            } else {
                QUIET_ETCD
            },
            _fake: fake,
        })
    }

    /// The revision now.
    async fn revision(&mut self) -> Result<i64, String> {
        let response = self
            .kv
            .range(RangeRequest {
                key: Bytes::from_static(b"\0"),
                count_only: true,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("{}: range: {e}", self.name))?;
        Ok(response.into_inner().header.unwrap_or_default().revision)
    }
}

/// Opens a watch stream without waiting for its response headers: etcd
/// (grpc-go) sends them only with its first message.
fn open_stream(channel: &Channel) -> Stream {
    let (requests, outgoing) = mpsc::channel(64);
    let (incoming, responses) = mpsc::unbounded_channel();
    let mut client = WatchClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE);
    tokio::spawn(async move {
        let outgoing = tokio_stream::wrappers::ReceiverStream::new(outgoing);
        let mut stream = match client.watch(outgoing).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                let _ = incoming.send(Err(status));
                return;
            }
        };
        loop {
            let next = match stream.message().await {
                Ok(Some(response)) => Ok(response),
                Ok(None) => break,
                Err(status) => Err(status),
            };
            let ended = next.is_err();
            if incoming.send(next).is_err() || ended {
                break;
            }
        }
    });
    Stream {
        requests,
        responses,
        said: BTreeMap::new(),
        active: std::collections::BTreeSet::new(),
        may_lag: false,
        ended: false,
    }
}

/// Brings the reference to an empty, compacted state: alarms disarmed,
/// leases revoked, keys deleted, history compacted. Returns the
/// compaction revision.
async fn reset(channel: &Channel) -> Result<i64, String> {
    let mut maintenance = MaintenanceClient::new(channel.clone());
    let mut lease = LeaseClient::new(channel.clone());
    let mut kv = KvClient::new(channel.clone());
    let fail = |what: &str, e: tonic::Status| format!("resetting the reference: {what}: {e}");
    let alarms = maintenance
        .alarm(AlarmRequest {
            action: AlarmAction::Get as i32,
            ..Default::default()
        })
        .await
        .map_err(|e| fail("alarms", e))?
        .into_inner()
        .alarms;
    for alarm in alarms {
        maintenance
            .alarm(AlarmRequest {
                action: AlarmAction::Deactivate as i32,
                member_id: alarm.member_id,
                alarm: alarm.alarm,
            })
            .await
            .map_err(|e| fail("disarming an alarm", e))?;
    }
    let leases = lease
        .lease_leases(LeaseLeasesRequest {})
        .await
        .map_err(|e| fail("leases", e))?
        .into_inner()
        .leases;
    for l in leases {
        // A lease may expire meanwhile.
        let _ = lease.lease_revoke(LeaseRevokeRequest { id: l.id }).await;
    }
    let mut auth = AuthClient::new(channel.clone());
    let users = auth
        .user_list(AuthUserListRequest {})
        .await
        .map_err(|e| fail("users", e))?
        .into_inner()
        .users;
    for name in users {
        auth.user_delete(AuthUserDeleteRequest { name })
            .await
            .map_err(|e| fail("deleting a user", e))?;
    }
    let roles = auth
        .role_list(AuthRoleListRequest {})
        .await
        .map_err(|e| fail("roles", e))?
        .into_inner()
        .roles;
    for role in roles {
        auth.role_delete(AuthRoleDeleteRequest { role })
            .await
            .map_err(|e| fail("deleting a role", e))?;
    }
    let deleted = kv
        .delete_range(DeleteRangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            prev_kv: false,
        })
        .await
        .map_err(|e| fail("delete", e))?
        .into_inner();
    let revision = deleted.header.unwrap_or_default().revision;
    match kv
        .compact(CompactionRequest {
            revision,
            physical: true,
        })
        .await
    {
        Ok(_) => Ok(revision),
        // Nothing was written since the last case's reset.
        Err(e) if e.message().contains("has been compacted") => Ok(revision),
        Err(e) => Err(fail("compact", e)),
    }
}

/// What a case compares against: a real etcd, or a second fake.
#[derive(Debug, Clone)]
pub enum Reference {
    /// A real etcd at this endpoint, reset before each case.
    Real(String),
    /// A fresh fake per case, over TCP.
    Fake,
}

impl Reference {
    /// The reference of this run: the etcd at [`ENDPOINTS_VAR`] if set,
    /// else a second fake.
    pub fn of_this_run() -> Reference {
        match Target::current() {
            Target::Fake => Reference::Fake,
            Target::Real(endpoints) => Reference::Real(endpoints[0].clone()),
        }
    }

    /// A reference side ready for a case, and its compaction revision.
    async fn side(&self) -> Result<(Side, i64), String> {
        match self {
            Reference::Real(endpoint) => {
                // A channel per case: each case has a runtime of its own.
                let channel = tonic::transport::Endpoint::from_shared(endpoint.clone())
                    .map_err(|e| format!("{ENDPOINTS_VAR}: {e}"))?
                    .connect()
                    .await
                    .map_err(|e| format!("connecting to {endpoint}: {e}"))?;
                let compacted = reset(&channel).await?;
                Ok((Side::connect("etcd", channel, None).await?, compacted))
            }
            Reference::Fake => {
                // A fixed, large compaction point, as a reused etcd has.
                let compacted = 1_000;
                let fake = start_fake(compacted).await?;
                let channel = tonic::transport::Endpoint::from_shared(fake.endpoint())
                    .map_err(|e| e.to_string())?
                    .connect()
                    .await
                    .map_err(|e| format!("connecting to the reference fake: {e}"))?;
                Ok((
                    Side::connect("reference fake", channel, Some(fake)).await?,
                    compacted,
                ))
            }
        }
    }
}

async fn start_fake(compacted: i64) -> Result<FakeEtcd, String> {
    FakeEtcd::builder()
        .compacted_at(compacted)
        .time(TimeSource::Real)
        .start()
        .await
        .map_err(|e| format!("starting the fake: {e}"))
}

/// Runs one case: every step to both sides, answers compared as they come,
/// watch streams compared at the end, the reference reset after it
/// whatever happened. The drift points it met.
///
/// # Errors
///
/// The first divergence (both answers, normalised), with the step, or a
/// case that did not end within two minutes.
pub async fn run_case(steps: Vec<Step>, reference: &Reference) -> Result<Vec<Drift>, String> {
    let (mut expected, compacted) = within(CASE_LIMIT, "the reference", reference.side()).await?;
    let outcome = within(
        CASE_LIMIT,
        "the case",
        compare_case(&steps, &mut expected, compacted),
    )
    .await;
    // Leave a real reference clean (no alarm, no lease, no key) for
    // whatever runs next, whatever the case did.
    if let Reference::Real(_) = reference {
        within(
            CASE_LIMIT,
            "resetting the reference",
            reset(&expected.channel),
        )
        .await?;
    }
    outcome
}

/// How long a whole case may take before the tester calls it a hang.
const CASE_LIMIT: Duration = Duration::from_secs(120);

/// `future`'s outcome, or an error naming `what` after `limit`.
async fn within<T>(
    limit: Duration,
    what: &str,
    future: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| Err(format!("{what}: no end within {limit:?}")))
}

/// Runs `steps` on `expected` (ready, compacted at `compacted`) and on a
/// fresh fake; the drift points met, or the first divergence.
async fn compare_case(
    steps: &[Step],
    expected: &mut Side,
    compacted: i64,
) -> Result<Vec<Drift>, String> {
    let fake = start_fake(compacted).await?;
    let channel = fake.in_process_channel();
    let mut actual = Side::connect("fake", channel, Some(fake)).await?;
    let mut case = Case {
        compacted,
        drifts: Vec::new(),
        leased: false,
        ttls: Vec::new(),
    };
    for (i, step) in steps.iter().enumerate() {
        let current = expected.revision().await?;
        let fake_current = actual.revision().await?;
        if current != fake_current {
            return Err(format!(
                "before step {i} ({step:?}): etcd is at revision {current}, the fake at {fake_current}"
            ));
        }
        let want = case.send(expected, step, current).await;
        let got = case.send(&mut actual, step, current).await;
        let ttls_agree = match case.ttls[..] {
            [etcd, fake] => (etcd - fake).abs() <= 1,
            _ => true,
        };
        case.ttls.clear();
        if !ttls_agree || (want != got && !case.accepts(step, &want, &got)) {
            return Err(format!("step {i}: {step:?}\n  etcd: {want}\n  fake: {got}"));
        }
    }
    let ([want_0, want_1], [got_0, got_1]) = (&mut expected.streams[..], &mut actual.streams[..])
    else {
        return Err("each side has two watch streams".into());
    };
    let lagging = [want_0.may_lag, want_1.may_lag];
    let (want_quiet, got_quiet) = (expected.quiet, actual.quiet);
    let (expected_granted, actual_granted) = (&expected.granted, &actual.granted);
    let drained = tokio::join!(
        want_0.drain(expected_granted, want_quiet),
        want_1.drain(expected_granted, want_quiet),
        got_0.drain(actual_granted, got_quiet),
        got_1.drain(actual_granted, got_quiet),
    );
    for (stream, (want, got)) in [(drained.0, drained.2), (drained.1, drained.3)]
        .into_iter()
        .enumerate()
    {
        match watches_agree(&want, &got, case.compacted, lagging[stream]) {
            Agreement::Same => {}
            Agreement::ProgressLeftOut => case.drifts.push(Drift::ProgressWhileUnsynced),
            Agreement::Different => {
                return Err(format!(
                    "watch stream {stream} after the last step, per watch ID:\n  etcd: {want:?}\n  fake: {got:?}"
                ))
            }
        }
    }
    Ok(case.drifts)
}

/// What a case knows while it runs.
struct Case {
    /// The latest compaction revision.
    compacted: i64,
    /// Drift points met so far.
    drifts: Vec<Drift>,
    /// Whether a put named a lease: lease IDs are each target's own, and
    /// HashKV hashes them with the keys.
    leased: bool,
    /// The remaining TTLs the sides answered in this step, compared within
    /// a second (the sides granted a moment apart).
    ttls: Vec<i64>,
}

impl Case {
    /// Sends `step` to `side`; its answer, normalised, as text.
    async fn send(&mut self, side: &mut Side, step: &Step, current: i64) -> String {
        match tokio::time::timeout(PATIENCE, self.answer(side, step, current)).await {
            Ok(answer) => answer,
            Err(_) => format!("no answer within {PATIENCE:?}"),
        }
    }

    async fn answer(&mut self, side: &mut Side, step: &Step, current: i64) -> String {
        let ids = Ids {
            member: side.member_id,
            cluster: side.cluster_id,
        };
        match step.clone() {
            Step::Range(mut range, rev) => {
                range.revision = fuzz::resolve(rev, current);
                shown(side.kv.range(range).await, |mut r| {
                    ids.header(&mut r.header);
                    r.kvs.iter_mut().for_each(|kv| lease_in(kv, &side.granted));
                    r
                })
            }
            Step::Put(mut put, lease) => {
                put.lease = fuzz::lease_of(lease, &side.granted);
                self.leased |= put.lease != 0;
                shown(side.kv.put(put).await, |mut r| {
                    ids.header(&mut r.header);
                    r.prev_kv
                        .iter_mut()
                        .for_each(|kv| lease_in(kv, &side.granted));
                    r
                })
            }
            Step::Delete(delete) => shown(side.kv.delete_range(delete).await, |mut r| {
                ids.header(&mut r.header);
                r.prev_kvs
                    .iter_mut()
                    .for_each(|kv| lease_in(kv, &side.granted));
                r
            }),
            Step::Txn(txn) => {
                if puts_only_in_nested_txns(&txn) && space_alarm_raised(side).await {
                    self.drifts.push(Drift::NestedPutsUnderNoSpace);
                    return "not sent: a drift point".into();
                }
                shown(side.kv.txn(txn).await, |mut r| {
                    txn_normalised(&mut r, ids, &side.granted);
                    r
                })
            }
            Step::Compact(rev, physical) => {
                let revision = fuzz::resolve(rev, current);
                let answer = side
                    .kv
                    .compact(CompactionRequest { revision, physical })
                    .await;
                if answer.is_ok() {
                    self.compacted = self.compacted.max(revision);
                }
                shown(answer, |mut r| {
                    ids.header(&mut r.header);
                    r
                })
            }
            Step::Grant(grant) => {
                let answer = side.lease.lease_grant(grant).await;
                if let Ok(granted) = &answer {
                    side.granted.push(granted.get_ref().id);
                }
                shown(answer, |mut r| {
                    ids.header(&mut r.header);
                    r.id = normalised_lease(r.id, &side.granted);
                    r
                })
            }
            Step::Revoke(lease) => {
                let id = fuzz::lease_of(lease, &side.granted);
                shown(
                    side.lease.lease_revoke(LeaseRevokeRequest { id }).await,
                    |mut r| {
                        ids.header(&mut r.header);
                        r
                    },
                )
            }
            Step::TimeToLive(lease, keys) => {
                let id = fuzz::lease_of(lease, &side.granted);
                let answer = side
                    .lease
                    .lease_time_to_live(LeaseTimeToLiveRequest { id, keys })
                    .await;
                let ttls = &mut self.ttls;
                shown(answer, |mut r| {
                    ids.header(&mut r.header);
                    r.id = normalised_lease(r.id, &side.granted);
                    // A live lease's remaining TTL is compared apart,
                    // within a second.
                    if r.ttl > 0 {
                        ttls.push(r.ttl);
                        r.ttl = 1;
                    }
                    r
                })
            }
            Step::Leases => shown(
                side.lease.lease_leases(LeaseLeasesRequest {}).await,
                |mut r| {
                    ids.header(&mut r.header);
                    r.leases
                        .iter_mut()
                        .for_each(|l| l.id = normalised_lease(l.id, &side.granted));
                    r
                },
            ),
            Step::Alarm(alarm) => shown(side.maintenance.alarm(alarm).await, |mut r| {
                ids.header(&mut r.header);
                for alarm in &mut r.alarms {
                    alarm.member_id = ids.member(alarm.member_id);
                }
                // etcd lists the raised alarms from Go maps, in no order.
                r.alarms.sort_by_key(|a| (a.member_id, a.alarm));
                r
            }),
            Step::Status => shown(side.maintenance.status(StatusRequest {}).await, |mut r| {
                ids.header(&mut r.header);
                r.leader = ids.member(r.leader);
                // The raft log and the database file are the fake's own.
                (
                    r.db_size,
                    r.db_size_in_use,
                    r.raft_index,
                    r.raft_term,
                    r.raft_applied_index,
                ) = (0, 0, 0, 0, 0);
                // One error a raised alarm, listed from Go maps: in no order.
                r.errors.sort();
                r
            }),
            Step::Hash => shown(side.maintenance.hash(HashRequest {}).await, |mut r| {
                ids.header(&mut r.header);
                // Hashes the database file, meta buckets included.
                r.hash = 0;
                r
            }),
            Step::HashKv(rev) => {
                let revision = fuzz::resolve(rev, current);
                let leased = self.leased;
                shown(
                    side.maintenance.hash_kv(HashKvRequest { revision }).await,
                    |mut r| {
                        ids.header(&mut r.header);
                        if leased {
                            // It hashes each target's own lease IDs.
                            r.hash = 0;
                        }
                        r
                    },
                )
            }
            Step::MoveLeader(target_id) => {
                let target_id = if target_id % 4 == 0 {
                    side.member_id
                } else {
                    target_id
                };
                shown(
                    side.maintenance
                        .move_leader(MoveLeaderRequest { target_id })
                        .await,
                    |mut r| {
                        ids.header(&mut r.header);
                        r
                    },
                )
            }
            Step::Downgrade(version) => shown(
                side.maintenance
                    .downgrade(DowngradeRequest {
                        action: DowngradeAction::Validate as i32,
                        version,
                    })
                    .await,
                |mut r| {
                    ids.header(&mut r.header);
                    r
                },
            ),
            Step::MemberList(linearizable) => {
                let list = MemberListRequest { linearizable };
                shown(side.cluster.member_list(list).await, |mut r| {
                    ids.header(&mut r.header);
                    for m in &mut r.members {
                        m.id = ids.member(m.id);
                        // Ports are each target's own.
                        m.peer_ur_ls.clear();
                        m.client_ur_ls.clear();
                    }
                    r
                })
            }
            Step::Auth(AuthCall::RoleGrantPermission(_, _, key, end))
                if !valid_permission_range(&key, &end) =>
            {
                self.drifts.push(Drift::InvalidPermissionRange);
                "not sent: a drift point".into()
            }
            Step::Auth(call) => auth_answer(side, ids, call).await,
            Step::Watch(stream, request, start) => {
                let stream = &mut side.streams[stream % 2];
                let mut creates = false;
                let request = match request {
                    RequestUnion::CreateRequest(create) => {
                        let Some(create) = self.start(create, start, current) else {
                            return "not sent: a drift point".into();
                        };
                        stream.may_lag |= create.start_revision != 0;
                        creates = true;
                        RequestUnion::CreateRequest(create)
                    }
                    RequestUnion::ProgressRequest(_) if stream.active.is_empty() => {
                        self.drifts.push(Drift::ProgressWithoutWatch);
                        return "not sent: a drift point".into();
                    }
                    RequestUnion::CancelRequest(cancel) => {
                        stream.active.remove(&cancel.watch_id);
                        RequestUnion::CancelRequest(cancel)
                    }
                    other => other,
                };
                let sent = stream
                    .requests
                    .send(WatchRequest {
                        request_union: Some(request),
                    })
                    .await;
                match (sent, creates) {
                    (Err(_), _) => "the stream is closed".into(),
                    (Ok(()), true) => stream.created(&side.granted).await,
                    (Ok(()), false) => "sent".into(),
                }
            }
        }
    }

    /// A create's start revision, or `None` for a drift point.
    fn start(
        &mut self,
        mut create: WatchCreateRequest,
        start: WatchStart,
        current: i64,
    ) -> Option<WatchCreateRequest> {
        create.start_revision = match start {
            WatchStart::Now => 0,
            WatchStart::Compacted => self.compacted - 1,
            WatchStart::CompactionPoint => self.compacted,
            WatchStart::Past(back) => current - back,
            WatchStart::Future(ahead) => current + ahead,
        };
        if create.start_revision < 0 {
            self.drifts.push(Drift::NegativeStartRevision);
            return None;
        }
        if create.watch_id == -1 {
            self.drifts.push(Drift::ClientWatchIdMinusOne);
            return None;
        }
        Some(create)
    }

    /// Whether a difference is a documented drift point.
    fn accepts(&mut self, step: &Step, want: &str, got: &str) -> bool {
        let Step::HashKv(_) = step else {
            return false;
        };
        let at_compaction = want.contains("required revision has been compacted")
            && got.starts_with("ok ")
            && got.contains(&format!("compact_revision: {}", self.compacted));
        if at_compaction {
            self.drifts.push(Drift::HashKvAtCompaction);
        }
        at_compaction
    }
}

/// Whether the 3.5 tip takes `[key, end)` as a permission's range
/// (`isValidPermissionRange`): a key, then no end, an end after the key,
/// or `"\0"` (from the key on).
fn valid_permission_range(key: &[u8], end: &[u8]) -> bool {
    !key.is_empty() && (end.is_empty() || key < end || end == b"\0")
}

/// Sends an Auth call; its answer, normalised.
async fn auth_answer(side: &mut Side, ids: Ids, call: AuthCall) -> String {
    let auth = &mut side.auth;
    let user = |u: usize| USERS[u].to_owned();
    let role = |r: usize| ROLES[r].to_owned();
    macro_rules! header_only {
        ($answer:expr) => {
            shown($answer, |mut r| {
                ids.header(&mut r.header);
                r
            })
        };
    }
    match call {
        AuthCall::Status => {
            let base = side.auth_base;
            shown(auth.auth_status(AuthStatusRequest {}).await, |mut r| {
                ids.header(&mut r.header);
                r.auth_revision = r.auth_revision.saturating_sub(base);
                r
            })
        }
        AuthCall::Authenticate(u, password) => header_only!(
            auth.authenticate(AuthenticateRequest {
                name: user(u),
                password: password.to_owned(),
            })
            .await
        ),
        AuthCall::UserAdd(u, password, no_password) => header_only!(
            auth.user_add(AuthUserAddRequest {
                name: user(u),
                password: password.to_owned(),
                options: Some(etcd_proto::authpb::UserAddOptions { no_password }),
                hashed_password: String::new(),
            })
            .await
        ),
        AuthCall::UserGet(u) => {
            header_only!(auth.user_get(AuthUserGetRequest { name: user(u) }).await)
        }
        AuthCall::UserList => header_only!(auth.user_list(AuthUserListRequest {}).await),
        AuthCall::UserDelete(u) => {
            header_only!(
                auth.user_delete(AuthUserDeleteRequest { name: user(u) })
                    .await
            )
        }
        AuthCall::UserChangePassword(u, password) => header_only!(
            auth.user_change_password(AuthUserChangePasswordRequest {
                name: user(u),
                password: password.to_owned(),
                hashed_password: String::new(),
            })
            .await
        ),
        AuthCall::UserGrantRole(u, r) => header_only!(
            auth.user_grant_role(AuthUserGrantRoleRequest {
                user: user(u),
                role: role(r),
            })
            .await
        ),
        AuthCall::UserRevokeRole(u, r) => header_only!(
            auth.user_revoke_role(AuthUserRevokeRoleRequest {
                name: user(u),
                role: role(r),
            })
            .await
        ),
        AuthCall::RoleAdd(r) => {
            header_only!(auth.role_add(AuthRoleAddRequest { name: role(r) }).await)
        }
        AuthCall::RoleGet(r) => {
            header_only!(auth.role_get(AuthRoleGetRequest { role: role(r) }).await)
        }
        AuthCall::RoleList => header_only!(auth.role_list(AuthRoleListRequest {}).await),
        AuthCall::RoleDelete(r) => {
            header_only!(
                auth.role_delete(AuthRoleDeleteRequest { role: role(r) })
                    .await
            )
        }
        AuthCall::RoleGrantPermission(r, perm_type, key, range_end) => header_only!(
            auth.role_grant_permission(AuthRoleGrantPermissionRequest {
                name: role(r),
                perm: Some(etcd_proto::authpb::Permission {
                    perm_type,
                    key,
                    range_end,
                }),
            })
            .await
        ),
        AuthCall::RoleRevokePermission(r, key, range_end) => header_only!(
            auth.role_revoke_permission(AuthRoleRevokePermissionRequest {
                role: role(r),
                key,
                range_end,
            })
            .await
        ),
    }
}

/// The IDs a side's answers carry, normalised away.
#[derive(Clone, Copy)]
struct Ids {
    member: u64,
    cluster: u64,
}

impl Ids {
    fn header(self, header: &mut Option<ResponseHeader>) {
        if let Some(h) = header {
            if h.member_id == self.member {
                h.member_id = 0;
            }
            if h.cluster_id == self.cluster {
                h.cluster_id = 0;
            }
            h.raft_term = 0;
        }
    }

    fn member(self, id: u64) -> u64 {
        if id == self.member {
            0
        } else {
            id
        }
    }
}

/// A granted lease's ID as its place in the order of grants (as
/// `-(index + 1)`, which no real ID is), any other ID as it is.
fn normalised_lease(id: i64, granted: &[i64]) -> i64 {
    match granted.iter().position(|&g| g == id) {
        Some(index) if id != 0 => -(index as i64 + 1),
        _ => id,
    }
}

fn lease_in(kv: &mut KeyValue, granted: &[i64]) {
    kv.lease = normalised_lease(kv.lease, granted);
}

fn txn_normalised(txn: &mut TxnResponse, ids: Ids, granted: &[i64]) {
    ids.header(&mut txn.header);
    for response in txn.responses.iter_mut().filter_map(|r| r.response.as_mut()) {
        match response {
            OpResponse::ResponseRange(r) => {
                ids.header(&mut r.header);
                r.kvs.iter_mut().for_each(|kv| lease_in(kv, granted));
            }
            OpResponse::ResponsePut(r) => {
                ids.header(&mut r.header);
                r.prev_kv.iter_mut().for_each(|kv| lease_in(kv, granted));
            }
            OpResponse::ResponseDeleteRange(r) => {
                ids.header(&mut r.header);
                r.prev_kvs.iter_mut().for_each(|kv| lease_in(kv, granted));
            }
            OpResponse::ResponseTxn(r) => txn_normalised(r, ids, granted),
        }
    }
}

/// An answer as text: `ok <response>` after `normalise`, or the status's
/// code and message.
fn shown<T: Debug>(
    answer: Result<tonic::Response<T>, tonic::Status>,
    normalise: impl FnOnce(T) -> T,
) -> String {
    match answer {
        Ok(response) => format!("ok {:?}", normalise(response.into_inner())),
        Err(status) => format!("{:?} {:?}", status.code(), status.message()),
    }
}

/// Whether the fake's watch responses (`got`) are etcd's (`want`) up to
/// what timing decides on etcd's side:
///
/// - progress responses: etcd 3.5.1 answers every progress request at
///   once, the 3.5 tip only once every watch of the stream is synced, so
///   on a stream where a watch started from a past or future revision
///   (`may_lag`) the fake may leave some out;
/// - the revision a compaction cancels a lagging watch with: etcd cancels
///   it when its sync loop (every 100 ms) next runs, with the compaction
///   revision of that moment, which a later compaction may have moved on;
///   the fake cancels at once. etcd's may be the fake's or a later one, up
///   to `latest_compaction`; and if the client cancels the watch before
///   that sync, etcd never says it was compacted.
fn watches_agree(
    want: &BTreeMap<i64, Vec<Said>>,
    got: &BTreeMap<i64, Vec<Said>>,
    latest_compaction: i64,
    may_lag: bool,
) -> Agreement {
    let same = |want: &Said, got: &Said| match (want, got) {
        (
            Said::Canceled {
                reason: r1,
                compact_revision: etcd,
            },
            Said::Canceled {
                reason: r2,
                compact_revision: fake,
            },
        ) if r1 == r2 && *fake > 0 => (*fake..=latest_compaction).contains(etcd),
        _ => want == got,
    };
    let mut progress_left_out = false;
    let ids: std::collections::BTreeSet<&i64> = want.keys().chain(got.keys()).collect();
    for id in ids {
        let (want, got) = (
            want.get(id).map_or(&[][..], Vec::as_slice),
            got.get(id).map_or(&[][..], Vec::as_slice),
        );
        let mut got = got.iter().peekable();
        for said in want {
            let plain_cancel = matches!(
                said,
                Said::Canceled {
                    compact_revision: 0,
                    ..
                }
            );
            let compacted =
                |g: &&Said| matches!(g, Said::Canceled { compact_revision: c, .. } if *c > 0);
            if plain_cancel && got.peek().is_some_and(compacted) {
                // The client cancelled the watch before etcd's sync loop
                // got to it; the fake had cancelled it as compacted.
                got.next();
            }
            if got.peek().is_some_and(|g| same(said, g)) {
                got.next();
            } else if matches!(said, Said::Progress(_)) && may_lag {
                progress_left_out = true;
            } else {
                return Agreement::Different;
            }
        }
        if got.next().is_some() {
            return Agreement::Different;
        }
    }
    if progress_left_out {
        Agreement::ProgressLeftOut
    } else {
        Agreement::Same
    }
}

/// How the fake's watch responses compare with etcd's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Agreement {
    Same,
    /// The same but for progress responses the 3.5 tip does not send
    /// while a watch is unsynced ([`Drift::ProgressWhileUnsynced`]).
    ProgressLeftOut,
    Different,
}

/// What a watch said, in an order that does not depend on timing.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Said {
    Created(i64),
    Canceled {
        reason: String,
        compact_revision: i64,
    },
    Progress(i64),
    Event(String),
    /// The stream ended with this status (listed under watch ID `i64::MIN`).
    Ended(String),
}

/// Runs `cases` random cases of fewer than `steps` steps with `seed` against
/// this run's reference ([`ENDPOINTS_VAR`], else a second fake).
///
/// # Errors
///
/// The shrunk divergence, with the seed that replays it.
pub fn compare(seed: u64, cases: u32, steps: usize) -> Result<(), String> {
    let reference = Reference::of_this_run();
    let strategy = prop::collection::vec(step(), 1..steps);
    let reference = &reference;
    let first = std::sync::Once::new();
    let drifts = std::sync::Mutex::new(BTreeMap::<Drift, usize>::new());
    let outcome = crate::properties::run_with_seed(seed, cases, &strategy, false, |steps, _| {
        let (first, drifts) = (&first, &drifts);
        async move {
            match run_case(steps, reference).await {
                Ok(met) => {
                    let mut drifts = drifts.lock().expect("drift tally");
                    for drift in met {
                        *drifts.entry(drift).or_default() += 1;
                    }
                    Ok(())
                }
                Err(divergence) => {
                    // Shrinking reruns cases for a while: say what was
                    // found first, in case the run is stopped before it
                    // ends.
                    first.call_once(|| {
                        crate::say(&format!("differential: found, shrinking: {divergence}"))
                    });
                    Err(divergence)
                }
            }
        }
    });
    let drifts = drifts.into_inner().expect("drift tally");
    crate::say(&format!(
        "differential: seed {seed}: drift points met, counted on each target (where 3.5.1 and the 3.5 tip differ; the fake follows the tip): {drifts:?}"
    ));
    outcome
}
