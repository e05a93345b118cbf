//! The gRPC glue: one module per etcd service, and the request pipeline
//! they all share.
//!
//! Every unary RPC goes through the same stages, in etcd's order:
//!
//! 1. **decode**: tonic, within the 2 MiB receive limit ([`limits`]);
//! 2. **validate**: the checks etcd makes on arrival, which need no state
//!    ([`EtcdRequest::validate`]), and for requests that go through raft the
//!    1.5 MiB request limit;
//! 3. **identify and authorize** the caller ([`authorize`]): its token or
//!    certificate says who it is, and each request type says what it
//!    needs, checked on arrival (before the raft entry) or when applied,
//!    as etcd checks it. This is the one place a token is read and a
//!    permission checked;
//! 4. **apply, publish, respond**: [`Member::apply`] takes the lock, counts
//!    the raft entry, checks the space quota, runs the request, tells
//!    watchers and fills the header.
//!
//! A service's handler is then only what its RPC means. Streams (Watch,
//! LeaseKeepAlive) run the same stages per message. Every service is
//! served by the server tonic generates for it, except Watch, served by
//! [`watch_wire`] so that a write's events can be encoded once for all the
//! watchers that get them. Lock and Election sit
//! above the others, as in etcd: they call the member's KV, Lease and Watch
//! services through its own in-process client ([`local_client`]), so each
//! of their steps passes this pipeline as any client's request does.

pub(crate) mod auth;
pub(crate) mod authorize;
pub(crate) mod cluster;
pub(crate) mod election;
pub(crate) mod kv;
pub(crate) mod lease;
pub(crate) mod limits;
pub(crate) mod local_client;
pub(crate) mod lock;
pub(crate) mod maintenance;
pub(crate) mod watch;
pub(crate) mod watch_wire;

use std::time::Duration;

use prost::Message;
use tonic::{Response, Status};

use crate::auth::{AuthInfo, Credentials};
use crate::cluster::Path;
use crate::core::Core;
use crate::error::EtcdError;
use crate::header::HasHeader;
use crate::limits::check_raft_size;
use crate::member::{Access, Applied, Member, Route};
use authorize::Authorize;

/// A request of etcd's API, as the pipeline sees it.
pub(crate) trait EtcdRequest: Message + Authorize {
    /// How it goes through the member: a read, or a write through raft.
    fn access(&self) -> Access;

    /// How it reaches the data, which decides what a member out of touch
    /// with the leader does with it: a read is local unless it says
    /// otherwise, a write is a proposal.
    fn path(&self) -> Path {
        match self.access() {
            Access::Read => Path::Local,
            Access::Write | Access::WriteKv | Access::WriteData => Path::Proposal,
        }
    }

    /// Whether a learner serves it: only `Status` and serializable ranges.
    fn learner_ok(&self) -> bool {
        false
    }

    /// etcd's checks on arrival (`v3rpc`), before any state is looked at.
    fn validate(&self) -> Result<(), EtcdError> {
        Ok(())
    }
}

/// Runs a unary request through every stage of the pipeline: `apply` is
/// what the RPC does to the core, given the member's time.
pub(crate) async fn serve<Q, R>(
    member: &Member,
    request: tonic::Request<Q>,
    apply: impl FnOnce(&mut Core, &Q, Duration) -> Result<Applied<R>, EtcdError> + Send,
) -> Result<Response<R>, Status>
where
    Q: EtcdRequest,
    R: HasHeader,
{
    let require_leader = requires_leader(&request);
    let (request, credentials) = admit(request)?;
    let stale = member
        .wait_for_route(Route {
            path: request.path(),
            learner_ok: request.learner_ok(),
            require_leader,
        })
        .await?;
    let access = request.access();
    let response = member.apply(
        access,
        stale,
        |core, now| arrive(core, &request, &credentials, now),
        |core, caller, now| {
            if core.auth.enabled() {
                request.at_apply(core, caller).map_err(Q::auth_error)?;
            }
            apply(core, &request, now)
        },
    )?;
    Ok(Response::new(response))
}

/// Whether the client asked to be answered only by a member with a leader
/// (clientv3's `WithRequireLeader`: metadata `hasleader: true`).
pub(crate) fn requires_leader<Q>(request: &tonic::Request<Q>) -> bool {
    request
        .metadata()
        .get("hasleader")
        .is_some_and(|v| v.as_bytes() == b"true")
}

/// The stages before a request touches the member: its credentials,
/// validation, and the size limit of raft requests.
pub(crate) fn admit<Q: EtcdRequest>(
    request: tonic::Request<Q>,
) -> Result<(Q, Credentials), EtcdError> {
    let credentials = authorize::credentials(&request);
    let request = request.into_inner();
    request.validate()?;
    if request.access() != Access::Read {
        check_raft_size(&request)?;
    }
    Ok((request, credentials))
}

/// Who the caller is, and what etcd checks before a request goes through
/// raft; under the member's lock. With auth disabled every check passes,
/// so none is made: the common case costs nothing per request.
pub(crate) fn arrive<Q: Authorize>(
    core: &mut Core,
    request: &Q,
    credentials: &Credentials,
    now: Duration,
) -> Result<Option<AuthInfo>, EtcdError> {
    if !core.auth.enabled() {
        return Ok(None);
    }
    let caller = core
        .auth
        .identify(credentials, now)
        .map_err(Q::auth_error)?;
    request
        .on_arrival(core, caller.as_ref())
        .map_err(Q::auth_error)?;
    Ok(caller)
}

/// The checks on arrival alone, for RPCs that do not go through
/// [`serve`] (streams, and maintenance RPCs with no raft entry).
pub(crate) fn authorize_arrival<Q: Authorize>(
    member: &Member,
    request: &Q,
    credentials: &Credentials,
) -> Result<Option<AuthInfo>, EtcdError> {
    let now = member.shared.clock.now();
    arrive(&mut member.lock(), request, credentials, now)
}

/// Declares how requests of each type go through the member.
macro_rules! etcd_requests {
    ($($request:ty => $access:expr
        $(, validate = $validate:expr)?
        $(, path = $path:expr)?
        $(, learner_ok = $learner:expr)?;)*) => {
        $(impl EtcdRequest for $request {
            fn access(&self) -> Access {
                #[allow(clippy::redundant_closure_call)]
                ($access)(self)
            }
            $(fn validate(&self) -> Result<(), EtcdError> {
                #[allow(clippy::redundant_closure_call)]
                ($validate)(self)
            })?
            $(fn path(&self) -> Path {
                #[allow(clippy::redundant_closure_call)]
                ($path)(self)
            })?
            $(fn learner_ok(&self) -> bool {
                #[allow(clippy::redundant_closure_call)]
                ($learner)(self)
            })?
        })*
    };
}

/// A range's path: a serializable one is answered locally.
fn range_path(range: &pb::RangeRequest) -> Path {
    if range.serializable {
        Path::Local
    } else {
        Path::ReadIndex
    }
}

/// A txn's path: a write is a proposal; a read is linearizable unless
/// every range in it (nested ones too) is serializable, as etcd's
/// `isTxnSerializable` decides.
fn txn_path(txn: &pb::TxnRequest) -> Path {
    fn serializable(txn: &pb::TxnRequest) -> bool {
        txn.success.iter().chain(&txn.failure).all(|op| {
            use pb::request_op::Request;
            match &op.request {
                Some(Request::RequestRange(range)) => range.serializable,
                Some(Request::RequestTxn(txn)) => serializable(txn),
                _ => true,
            }
        })
    }
    if !kv_apply::is_txn_read_only(txn) {
        Path::Proposal
    } else if serializable(txn) {
        Path::Local
    } else {
        Path::ReadIndex
    }
}

use crate::kv::{apply as kv_apply, validate as kv_validate};
use etcd_proto::etcdserverpb as pb;

etcd_requests! {
    pb::RangeRequest => |_| Access::Read, validate = kv_validate::check_range,
        path = range_path, learner_ok = |range: &pb::RangeRequest| range.serializable;
    pb::PutRequest => |_| Access::WriteData, validate = kv_validate::check_put;
    pb::DeleteRangeRequest => |_| Access::WriteKv, validate = kv_validate::check_delete;
    pb::TxnRequest => |txn: &pb::TxnRequest| {
        if kv_apply::is_txn_read_only(txn) {
            Access::Read
        } else if kv_apply::txn_puts(txn) {
            Access::WriteData
        } else {
            Access::WriteKv
        }
    }, validate = kv_validate::check_txn, path = txn_path;
    pb::CompactionRequest => |_| Access::WriteKv;
    pb::LeaseGrantRequest => |_| Access::WriteData;
    pb::LeaseRevokeRequest => |_| Access::WriteKv;
    // Lease lookups and renewals are forwarded to the leader.
    pb::LeaseTimeToLiveRequest => |_| Access::Read, path = |_| Path::Leader;
    pb::LeaseLeasesRequest => |_| Access::Read;
    pb::AlarmRequest => |_| Access::Write;
    pb::StatusRequest => |_| Access::Read, learner_ok = |_| true;
    pb::HashKvRequest => |_| Access::Read;
    pb::HashRequest => |_| Access::Read;
    // ENABLE and CANCEL are checked before they are proposed: the handler
    // counts their raft entry only once they pass.
    pb::DowngradeRequest => |_| Access::Read, path = |_| Path::Proposal;
    pb::MemberListRequest => |_| Access::Read, path = |list: &pb::MemberListRequest| {
        if list.linearizable { Path::ReadIndex } else { Path::Local }
    };
    // Membership changes are configuration changes through raft.
    pb::MemberAddRequest => |_| Access::Write, validate = |add: &pb::MemberAddRequest| {
        // etcd parses the URLs before anything else.
        if crate::cluster::urls_are_valid(&add.peer_ur_ls) {
            Ok(())
        } else {
            Err(EtcdError::BadMemberUrls)
        }
    };
    pb::MemberRemoveRequest => |_| Access::Write;
    pb::MemberUpdateRequest => |_| Access::Write;
    pb::MemberPromoteRequest => |_| Access::Write;
    // Every Auth RPC goes through raft, reads included.
    pb::AuthEnableRequest => |_| Access::Write;
    pb::AuthDisableRequest => |_| Access::Write;
    pb::AuthStatusRequest => |_| Access::Write;
    pb::AuthenticateRequest => |_| Access::Write;
    pb::AuthUserAddRequest => |_| Access::Write;
    pb::AuthUserGetRequest => |_| Access::Write;
    pb::AuthUserListRequest => |_| Access::Write;
    pb::AuthUserDeleteRequest => |_| Access::Write;
    pb::AuthUserChangePasswordRequest => |_| Access::Write;
    pb::AuthUserGrantRoleRequest => |_| Access::Write;
    pb::AuthUserRevokeRoleRequest => |_| Access::Write;
    pb::AuthRoleAddRequest => |_| Access::Write;
    pb::AuthRoleGetRequest => |_| Access::Write;
    pb::AuthRoleListRequest => |_| Access::Write;
    pb::AuthRoleDeleteRequest => |_| Access::Write;
    pb::AuthRoleGrantPermissionRequest => |_| Access::Write;
    pb::AuthRoleRevokePermissionRequest => |_| Access::Write;
}
