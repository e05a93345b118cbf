//! The pipeline's authorize stage: who a caller is, and what each RPC
//! needs of it, as etcd 3.5 checks it (the branch tip where it is stricter
//! than 3.5.1: Compact, lease calls, nested txns, Put-with-lease inside a
//! txn, Status and MemberList all checked).
//!
//! Each request type states two checks: [`Authorize::on_arrival`] (etcd's
//! API layer, before the request goes through raft: no raft entry if it
//! fails) and [`Authorize::at_apply`] (etcd's `authApplierV3`, after the
//! raft entry). Root may do anything; with auth disabled every check passes.

use etcd_proto::etcdserverpb::{self as pb, alarm_request::AlarmAction, request_op};
use tonic::metadata::MetadataMap;

use crate::auth::permissions::Need;
use crate::auth::{AuthError, AuthInfo, ClientName, Credentials};
use crate::core::Core;
use crate::error::EtcdError;

/// The metadata a caller's token travels in, in etcd's order of preference.
pub(crate) const TOKEN_METADATA: [&str; 2] = ["token", "authorization"];

/// The metadata in which the member's own client (Lock, Election) passes
/// on the common name of its caller's certificate. Honoured only on the
/// internal listener, which no one outside the process can reach.
pub(crate) const FORWARDED_COMMON_NAME: &str = "x-fake-etcd-forwarded-cn";

/// Marks a request that came through the member's internal listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InternalCall;

/// What a request presents: its token (a `Bearer ` prefix stripped, as the
/// 3.5 tip does) and its verified client certificate's common name (not
/// for requests relayed by etcd's gRPC gateway, as etcd ignores those).
pub(crate) fn credentials<T>(request: &tonic::Request<T>) -> Credentials {
    let metadata = request.metadata();
    let token = TOKEN_METADATA
        .iter()
        .find_map(|name| metadata.get(*name))
        .and_then(|value| value.to_str().ok())
        .map(|token| token.strip_prefix("Bearer ").unwrap_or(token).to_owned());
    let client = if request.extensions().get::<InternalCall>().is_some() {
        metadata
            .get(FORWARDED_COMMON_NAME)
            .and_then(|value| value.to_str().ok())
            .map_or(ClientName::None, |name| ClientName::Known(name.to_owned()))
    } else if metadata.contains_key("grpcgateway-accept") {
        ClientName::None
    } else {
        peer_certificate(request)
    };
    Credentials { token, client }
}

/// The metadata the member's own client sends on behalf of a caller.
pub(crate) fn forwarded(metadata: &MetadataMap, credentials: &Credentials) -> MetadataMap {
    let mut forwarded = MetadataMap::new();
    for name in TOKEN_METADATA {
        if let Some(value) = metadata.get(name) {
            forwarded.insert(name, value.clone());
        }
    }
    if let Some(cn) = credentials
        .client
        .common_name()
        .and_then(|cn| cn.parse().ok())
    {
        forwarded.insert(FORWARDED_COMMON_NAME, cn);
    }
    forwarded
}

#[cfg(feature = "tls")]
fn peer_certificate<T>(request: &tonic::Request<T>) -> ClientName {
    request
        .peer_certs()
        .map_or(ClientName::None, ClientName::Certificate)
}

#[cfg(not(feature = "tls"))]
fn peer_certificate<T>(_: &tonic::Request<T>) -> ClientName {
    ClientName::None
}

/// What a request needs of its caller.
pub(crate) trait Authorize {
    /// The form of this RPC's auth errors (most are mapped to `etcdserver:`
    /// statuses; a few maintenance RPCs send them raw).
    fn auth_error(err: AuthError) -> EtcdError {
        EtcdError::Auth(err)
    }

    /// etcd's checks in its API layer, before raft.
    fn on_arrival(&self, _core: &Core, _caller: Option<&AuthInfo>) -> Result<(), AuthError> {
        Ok(())
    }

    /// etcd's checks when the request is applied, after its raft entry.
    fn at_apply(&self, _core: &Core, _caller: Option<&AuthInfo>) -> Result<(), AuthError> {
        Ok(())
    }
}

/// Put: WRITE on the key, WRITE on every key already on its lease (else
/// the caller could revoke what it cannot write), and READ for `prev_kv`.
fn check_put(
    core: &Core,
    caller: Option<&AuthInfo>,
    put: &pb::PutRequest,
) -> Result<(), AuthError> {
    let auth = &core.auth;
    auth.check(caller, Need::Write, &put.key, b"")?;
    check_lease_keys(core, caller, put.lease, Need::Write)?;
    if put.prev_kv {
        auth.check(caller, Need::Read, &put.key, b"")?;
    }
    Ok(())
}

/// `need` on every key attached to `lease` (none to check for an admin or
/// an unknown lease).
fn check_lease_keys(
    core: &Core,
    caller: Option<&AuthInfo>,
    lease: i64,
    need: Need,
) -> Result<(), AuthError> {
    let auth = &core.auth;
    let Some(lease) = core.lessor.get(lease) else {
        return Ok(());
    };
    if auth.is_admin(caller) {
        return Ok(());
    }
    lease
        .keys
        .iter()
        .try_for_each(|key| auth.check(caller, need, key, b""))
}

/// Txn: READ on every compare, and every op of both branches whatever the
/// outcome, nested txns included.
fn check_txn(
    core: &Core,
    caller: Option<&AuthInfo>,
    txn: &pb::TxnRequest,
) -> Result<(), AuthError> {
    let auth = &core.auth;
    for compare in &txn.compare {
        auth.check(caller, Need::Read, &compare.key, &compare.range_end)?;
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match &op.request {
            Some(request_op::Request::RequestRange(range)) => {
                auth.check(caller, Need::Read, &range.key, &range.range_end)?;
            }
            Some(request_op::Request::RequestPut(put)) => check_put(core, caller, put)?,
            Some(request_op::Request::RequestDeleteRange(delete)) => {
                if delete.prev_kv {
                    auth.check(caller, Need::Read, &delete.key, &delete.range_end)?;
                }
                auth.check(caller, Need::Write, &delete.key, &delete.range_end)?;
            }
            Some(request_op::Request::RequestTxn(nested)) => check_txn(core, caller, nested)?,
            None => {}
        }
    }
    Ok(())
}

impl Authorize for pb::RangeRequest {
    fn on_arrival(&self, core: &Core, caller: Option<&AuthInfo>) -> Result<(), AuthError> {
        let auth = &core.auth;
        auth.check(caller, Need::Read, &self.key, &self.range_end)
    }
}

impl Authorize for pb::PutRequest {
    fn at_apply(&self, core: &Core, caller: Option<&AuthInfo>) -> Result<(), AuthError> {
        check_put(core, caller, self)
    }
}

impl Authorize for pb::DeleteRangeRequest {
    fn at_apply(&self, core: &Core, caller: Option<&AuthInfo>) -> Result<(), AuthError> {
        let auth = &core.auth;
        auth.check(caller, Need::Write, &self.key, &self.range_end)?;
        if self.prev_kv {
            auth.check(caller, Need::Read, &self.key, &self.range_end)?;
        }
        Ok(())
    }
}

impl Authorize for pb::TxnRequest {
    // A read-only txn is served without raft, checked on arrival; a write
    // is checked when applied. Either way, the same checks.
    fn on_arrival(&self, core: &Core, caller: Option<&AuthInfo>) -> Result<(), AuthError> {
        if crate::kv::apply::is_txn_read_only(self) {
            check_txn(core, caller, self)
        } else {
            Ok(())
        }
    }

    fn at_apply(&self, core: &Core, caller: Option<&AuthInfo>) -> Result<(), AuthError> {
        if crate::kv::apply::is_txn_read_only(self) {
            Ok(())
        } else {
            check_txn(core, caller, self)
        }
    }
}

/// Only root: the RPCs etcd's `AuthAdmin` and `authMaintenanceServer`
/// guard (Compact, alarm changes, leader moves, downgrades, membership
/// changes).
macro_rules! admin_only {
    ($($request:ty),*) => {$(
        impl Authorize for $request {
            fn on_arrival(&self, core: &Core, caller: Option<&AuthInfo>) -> Result<(), AuthError> {
                let auth = &core.auth;
                auth.check_admin(caller)
            }
        }
    )*};
}

/// Any identified caller (etcd's `requireAuthInfo`).
macro_rules! identified {
    ($($request:ty),*) => {$(
        impl Authorize for $request {
            fn on_arrival(&self, core: &Core, caller: Option<&AuthInfo>) -> Result<(), AuthError> {
                let auth = &core.auth;
                auth.check_identified(caller)
            }
        }
    )*};
}

/// Only root, with the error sent raw (`Unknown "auth: ..."`), as etcd's
/// maintenance server sends it for Hash, HashKV, Defragment and Snapshot.
macro_rules! admin_only_unmapped {
    ($($request:ty),*) => {$(
        impl Authorize for $request {
            fn auth_error(err: AuthError) -> EtcdError {
                EtcdError::AuthUnmapped(err)
            }
            fn on_arrival(&self, core: &Core, caller: Option<&AuthInfo>) -> Result<(), AuthError> {
                let auth = &core.auth;
                auth.check_admin(caller)
            }
        }
    )*};
}

admin_only!(
    pb::CompactionRequest,
    pb::DowngradeRequest,
    pb::MoveLeaderRequest,
    pb::MemberAddRequest,
    pb::MemberRemoveRequest,
    pb::MemberUpdateRequest,
    pb::MemberPromoteRequest
);
identified!(
    pb::LeaseGrantRequest,
    pb::StatusRequest,
    pb::MemberListRequest
);
admin_only_unmapped!(
    pb::HashRequest,
    pb::HashKvRequest,
    pb::DefragmentRequest,
    pb::SnapshotRequest
);

impl Authorize for pb::AlarmRequest {
    fn on_arrival(&self, core: &Core, caller: Option<&AuthInfo>) -> Result<(), AuthError> {
        let auth = &core.auth;
        if self.action == AlarmAction::Get as i32 {
            auth.check_identified(caller)
        } else {
            auth.check_admin(caller)
        }
    }
}

impl Authorize for pb::LeaseRevokeRequest {
    fn on_arrival(&self, core: &Core, caller: Option<&AuthInfo>) -> Result<(), AuthError> {
        let auth = &core.auth;
        auth.check_identified(caller)
    }

    fn at_apply(&self, core: &Core, caller: Option<&AuthInfo>) -> Result<(), AuthError> {
        check_lease_keys(core, caller, self.id, Need::Write)
    }
}

/// A keepalive: WRITE on every key of the lease (etcd's `checkLeaseRenew`).
impl Authorize for pb::LeaseKeepAliveRequest {
    fn on_arrival(&self, core: &Core, caller: Option<&AuthInfo>) -> Result<(), AuthError> {
        let auth = &core.auth;
        auth.check_identified(caller)?;
        check_lease_keys(core, caller, self.id, Need::Write)
    }
}

impl Authorize for pb::LeaseTimeToLiveRequest {
    fn on_arrival(&self, core: &Core, caller: Option<&AuthInfo>) -> Result<(), AuthError> {
        let auth = &core.auth;
        auth.check_identified(caller)?;
        if self.keys {
            check_lease_keys(core, caller, self.id, Need::Read)?;
        }
        Ok(())
    }
}

impl Authorize for pb::LeaseLeasesRequest {
    fn on_arrival(&self, core: &Core, caller: Option<&AuthInfo>) -> Result<(), AuthError> {
        let auth = &core.auth;
        auth.check_identified(caller)?;
        if auth.is_admin(caller) {
            return Ok(());
        }
        core.lessor.by_deadline().try_for_each(|lease| {
            lease
                .keys
                .iter()
                .try_for_each(|key| auth.check(caller, Need::Read, key, b""))
        })
    }
}

/// Auth's own RPCs that only root may call, once auth is enabled (etcd's
/// `needAdminPermission`, checked when applied, before the RPC's checks).
macro_rules! auth_admin {
    ($($request:ty),*) => {$(
        impl Authorize for $request {
            fn at_apply(&self, core: &Core, caller: Option<&AuthInfo>) -> Result<(), AuthError> {
                let auth = &core.auth;
                auth.check_admin(caller)
            }
        }
    )*};
}

auth_admin!(
    pb::AuthEnableRequest,
    pb::AuthDisableRequest,
    pb::AuthStatusRequest,
    pb::AuthUserAddRequest,
    pb::AuthUserDeleteRequest,
    pb::AuthUserChangePasswordRequest,
    pb::AuthUserGrantRoleRequest,
    pb::AuthUserRevokeRoleRequest,
    pb::AuthUserListRequest,
    pb::AuthRoleAddRequest,
    pb::AuthRoleGrantPermissionRequest,
    pb::AuthRoleRevokePermissionRequest,
    pb::AuthRoleDeleteRequest,
    pb::AuthRoleListRequest
);

/// Anyone may try to log in.
impl Authorize for pb::AuthenticateRequest {}

/// An admin, or the user asking about itself.
impl Authorize for pb::AuthUserGetRequest {
    fn at_apply(&self, core: &Core, caller: Option<&AuthInfo>) -> Result<(), AuthError> {
        let auth = &core.auth;
        match auth.check_admin(caller) {
            Err(err) if caller.is_none_or(|c| c.user != self.name) => Err(err),
            _ => Ok(()),
        }
    }
}

/// An admin, or a holder of the role.
impl Authorize for pb::AuthRoleGetRequest {
    fn at_apply(&self, core: &Core, caller: Option<&AuthInfo>) -> Result<(), AuthError> {
        let auth = &core.auth;
        match auth.check_admin(caller) {
            Err(err) if !caller.is_some_and(|c| auth.has_role(&c.user, &self.role)) => Err(err),
            _ => Ok(()),
        }
    }
}
