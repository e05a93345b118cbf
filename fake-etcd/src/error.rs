//! etcd's errors, and the one table that turns them into gRPC statuses.
//!
//! Clients (Go's clientv3 above all) recognise etcd errors by their exact
//! message text, so every message here is byte for byte the one in etcd's
//! `api/v3rpc/rpctypes/error.go` (or `mvcc`'s, for watch cancel reasons),
//! with the same gRPC code. Every text the fake sends lives in this table:
//! the services, the watch hub, the injected [`errors`](crate::errors) and
//! the control API all take theirs from here, so the table test below
//! covers every message a client can see.

use tonic::{Code, Status};

use crate::auth::AuthError;

/// An error the fake answers with, as etcd 3.5 would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EtcdError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    #[error("etcdserver: request timed out")]
    RequestTimedOut,
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    #[error("etcdserver: no leader")]
    NoLeader,
    #[error("etcdserver: server stopped")]
    ServerStopped,
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    #[error("etcdserver: not leader")]
    NotLeader,
    #[error("etcdserver: request timed out, leader transfer took too long")]
    LeaderTransferTimedOut,
    /// A proposal that raft never committed before the request timeout:
    /// etcd sends its context's raw error.
    #[error("context deadline exceeded")]
    ProposalDeadlineExceeded,
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    #[error("etcdserver: unhealthy cluster")]
    UnhealthyCluster,
    #[error("etcdserver: member ID already exist")]
    MemberExists,
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStartedMembers,
    #[error("etcdserver: given member URLs are invalid")]
    BadMemberUrls,
    #[error("etcdserver: member not found")]
    MemberNotFound,
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    #[error("etcdserver: wrong downgrade target version format")]
    WrongDowngradeVersionFormat,
    #[error("etcdserver: invalid downgrade target version")]
    InvalidDowngradeTargetVersion,
    #[error("etcdserver: cluster has a downgrade job in progress")]
    DowngradeInProcess,
    #[error("etcdserver: no inflight downgrade job")]
    NoInflightDowngrade,
    /// Not mapped to a gRPC code by etcd: sent as `Unknown`.
    #[error("etcdserver: unknown method")]
    UnknownMethod,
    /// clientv3's `concurrency` errors, which etcd's Lock and Election
    /// servers send as `Unknown` with their plain text.
    #[error("mutex: session is expired")]
    SessionExpired,
    #[error("election: not leader")]
    ElectionNotLeader,
    #[error("election: no leader")]
    ElectionNoLeader,
    #[error("\"leader\" field must be provided")]
    MissingLeaderKey,
    #[error("lost watcher waiting for delete")]
    LostWatcher,
    /// A watch's cancel reason (mvcc's `ErrEmptyWatcherRange`), never a
    /// status: etcd sends it inside a `WatchResponse`.
    #[error("mvcc: watcher range is empty")]
    WatcherRangeEmpty,
    /// A watch's cancel reason (`ErrWatcherDuplicateID`), never a status.
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateWatchId,
    /// Go's bcrypt refuses to hash a password over 72 bytes; etcd sends its
    /// error raw.
    #[error("bcrypt: password length exceeds 72 bytes")]
    PasswordTooLong,
    /// Any other failure to hash a password, raw, as etcd sends bcrypt's
    /// errors.
    #[error("bcrypt: {0}")]
    Bcrypt(String),
    /// An error of the auth store, as etcd's `togRPCError` sends it: its
    /// `etcdserver: ...` status, or `Unknown` with the raw text for the
    /// few it does not map.
    #[error("{}", .0.mapped().map_or_else(|| .0.to_string(), |(_, text)| text.to_owned()))]
    Auth(AuthError),
    /// An auth error sent raw (`Unknown`, `auth: ...`), as etcd's
    /// Defragment, Snapshot, Hash and HashKV do.
    #[error("{0}")]
    AuthUnmapped(AuthError),
}

impl From<AuthError> for EtcdError {
    fn from(err: AuthError) -> Self {
        Self::Auth(err)
    }
}

impl EtcdError {
    /// The gRPC code etcd sends this error with.
    pub(crate) fn code(&self) -> Code {
        match self {
            Self::EmptyKey
            | Self::KeyNotFound
            | Self::ValueProvided
            | Self::LeaseProvided
            | Self::TooManyOps
            | Self::DuplicateKey
            | Self::RequestTooLarge
            | Self::WrongDowngradeVersionFormat
            | Self::InvalidDowngradeTargetVersion
            | Self::BadMemberUrls => Code::InvalidArgument,
            Self::Compacted | Self::FutureRevision | Self::LeaseTtlTooLarge => Code::OutOfRange,
            Self::LeaseExists
            | Self::BadLeaderTransferee
            | Self::DowngradeInProcess
            | Self::NoInflightDowngrade
            | Self::NotLeader
            | Self::MemberExists
            | Self::PeerUrlExists
            | Self::NotEnoughStartedMembers
            | Self::MemberNotLearner
            | Self::LearnerNotReady
            | Self::TooManyLearners => Code::FailedPrecondition,
            Self::LeaseNotFound | Self::MemberNotFound => Code::NotFound,
            Self::NoSpace | Self::TooManyRequests => Code::ResourceExhausted,
            Self::Corrupt => Code::DataLoss,
            Self::RequestTimedOut
            | Self::LeaderChanged
            | Self::NoLeader
            | Self::ServerStopped
            | Self::NotSupportedForLearner
            | Self::UnhealthyCluster => Code::Unavailable,
            Self::LeaderTransferTimedOut | Self::ProposalDeadlineExceeded => Code::Unknown,
            // Only ever a cancel reason; were it a status, etcd's
            // `togRPCError` would send an unmapped error as `Unknown`.
            Self::WatcherRangeEmpty
            | Self::DuplicateWatchId
            | Self::UnknownMethod
            | Self::SessionExpired
            | Self::ElectionNotLeader
            | Self::ElectionNoLeader
            | Self::MissingLeaderKey
            | Self::LostWatcher
            | Self::PasswordTooLong
            | Self::Bcrypt(_) => Code::Unknown,
            Self::Auth(err) => err.mapped().map_or(Code::Unknown, |(code, _)| code),
            Self::AuthUnmapped(_) => Code::Unknown,
        }
    }

    /// The message, as clients match on it.
    pub(crate) fn message(&self) -> String {
        self.to_string()
    }
}

/// A status code's name as grpc-go writes it (`Canceled`, with one l), in
/// a status's text (`rpc error: code = … desc = …`) and in metrics labels.
pub(crate) fn go_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// A status as grpc-go prints it, which etcd puts in a refused watch's
/// cancel reason.
pub(crate) fn go_status_text(status: &Status) -> String {
    format!(
        "rpc error: code = {} desc = {}",
        go_code_name(status.code()),
        status.message()
    )
}

impl From<EtcdError> for Status {
    fn from(err: EtcdError) -> Self {
        Status::new(err.code(), err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire form of every error, as etcd's rpctypes/error.go defines it.
    #[test]
    fn every_error_has_etcds_code_and_text() {
        let table = [
            (
                EtcdError::EmptyKey,
                Code::InvalidArgument,
                "etcdserver: key is not provided",
            ),
            (
                EtcdError::KeyNotFound,
                Code::InvalidArgument,
                "etcdserver: key not found",
            ),
            (
                EtcdError::ValueProvided,
                Code::InvalidArgument,
                "etcdserver: value is provided",
            ),
            (
                EtcdError::LeaseProvided,
                Code::InvalidArgument,
                "etcdserver: lease is provided",
            ),
            (
                EtcdError::TooManyOps,
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            (
                EtcdError::DuplicateKey,
                Code::InvalidArgument,
                "etcdserver: duplicate key given in txn request",
            ),
            (
                EtcdError::Compacted,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision has been compacted",
            ),
            (
                EtcdError::FutureRevision,
                Code::OutOfRange,
                "etcdserver: mvcc: required revision is a future revision",
            ),
            (
                EtcdError::RequestTooLarge,
                Code::InvalidArgument,
                "etcdserver: request is too large",
            ),
            (
                EtcdError::LeaseNotFound,
                Code::NotFound,
                "etcdserver: requested lease not found",
            ),
            (
                EtcdError::LeaseExists,
                Code::FailedPrecondition,
                "etcdserver: lease already exists",
            ),
            (
                EtcdError::LeaseTtlTooLarge,
                Code::OutOfRange,
                "etcdserver: too large lease TTL",
            ),
            (
                EtcdError::NoSpace,
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
            ),
            (
                EtcdError::Corrupt,
                Code::DataLoss,
                "etcdserver: corrupt cluster",
            ),
            (
                EtcdError::RequestTimedOut,
                Code::Unavailable,
                "etcdserver: request timed out",
            ),
            (
                EtcdError::LeaderChanged,
                Code::Unavailable,
                "etcdserver: leader changed",
            ),
            (
                EtcdError::NoLeader,
                Code::Unavailable,
                "etcdserver: no leader",
            ),
            (
                EtcdError::ServerStopped,
                Code::Unavailable,
                "etcdserver: server stopped",
            ),
            (
                EtcdError::TooManyRequests,
                Code::ResourceExhausted,
                "etcdserver: too many requests",
            ),
            (
                EtcdError::BadLeaderTransferee,
                Code::FailedPrecondition,
                "etcdserver: bad leader transferee",
            ),
            (
                EtcdError::WrongDowngradeVersionFormat,
                Code::InvalidArgument,
                "etcdserver: wrong downgrade target version format",
            ),
            (
                EtcdError::InvalidDowngradeTargetVersion,
                Code::InvalidArgument,
                "etcdserver: invalid downgrade target version",
            ),
            (
                EtcdError::DowngradeInProcess,
                Code::FailedPrecondition,
                "etcdserver: cluster has a downgrade job in progress",
            ),
            (
                EtcdError::NoInflightDowngrade,
                Code::FailedPrecondition,
                "etcdserver: no inflight downgrade job",
            ),
            (
                EtcdError::UnknownMethod,
                Code::Unknown,
                "etcdserver: unknown method",
            ),
            (
                EtcdError::SessionExpired,
                Code::Unknown,
                "mutex: session is expired",
            ),
            (
                EtcdError::ElectionNotLeader,
                Code::Unknown,
                "election: not leader",
            ),
            (
                EtcdError::ElectionNoLeader,
                Code::Unknown,
                "election: no leader",
            ),
            (
                EtcdError::MissingLeaderKey,
                Code::Unknown,
                "\"leader\" field must be provided",
            ),
            (
                EtcdError::LostWatcher,
                Code::Unknown,
                "lost watcher waiting for delete",
            ),
            (
                EtcdError::ProposalDeadlineExceeded,
                Code::Unknown,
                "context deadline exceeded",
            ),
            (
                EtcdError::NotSupportedForLearner,
                Code::Unavailable,
                "etcdserver: rpc not supported for learner",
            ),
            (
                EtcdError::LearnerNotReady,
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member which is in sync with leader",
            ),
            (
                EtcdError::BadMemberUrls,
                Code::InvalidArgument,
                "etcdserver: given member URLs are invalid",
            ),
            (
                EtcdError::MemberNotFound,
                Code::NotFound,
                "etcdserver: member not found",
            ),
            (
                EtcdError::PasswordTooLong,
                Code::Unknown,
                "bcrypt: password length exceeds 72 bytes",
            ),
            (
                EtcdError::Bcrypt("invalid cost 99".into()),
                Code::Unknown,
                "bcrypt: invalid cost 99",
            ),
            (
                EtcdError::WatcherRangeEmpty,
                Code::Unknown,
                "mvcc: watcher range is empty",
            ),
            (
                EtcdError::DuplicateWatchId,
                Code::Unknown,
                "mvcc: duplicate watch ID provided on the WatchStream",
            ),
        ];
        let auth = [
            (
                AuthError::RootUserNotExist,
                Code::FailedPrecondition,
                "etcdserver: root user does not exist",
            ),
            (
                AuthError::RootRoleNotExist,
                Code::FailedPrecondition,
                "etcdserver: root user does not have root role",
            ),
            (
                AuthError::UserAlreadyExist,
                Code::FailedPrecondition,
                "etcdserver: user name already exists",
            ),
            (
                AuthError::UserEmpty,
                Code::InvalidArgument,
                "etcdserver: user name is empty",
            ),
            (
                AuthError::UserNotFound,
                Code::FailedPrecondition,
                "etcdserver: user name not found",
            ),
            (
                AuthError::RoleAlreadyExist,
                Code::FailedPrecondition,
                "etcdserver: role name already exists",
            ),
            (
                AuthError::RoleNotFound,
                Code::FailedPrecondition,
                "etcdserver: role name not found",
            ),
            (
                AuthError::RoleEmpty,
                Code::InvalidArgument,
                "etcdserver: role name is empty",
            ),
            (
                AuthError::PermissionNotGiven,
                Code::InvalidArgument,
                "etcdserver: permission not given",
            ),
            (
                AuthError::AuthFailed,
                Code::InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password",
            ),
            (
                AuthError::NoPasswordUser,
                Code::Unknown,
                "auth: authentication failed, password was given for no password user",
            ),
            (
                AuthError::PermissionDenied,
                Code::PermissionDenied,
                "etcdserver: permission denied",
            ),
            (
                AuthError::RoleNotGranted,
                Code::FailedPrecondition,
                "etcdserver: role is not granted to the user",
            ),
            (
                AuthError::PermissionNotGranted,
                Code::FailedPrecondition,
                "etcdserver: permission is not granted to the role",
            ),
            (
                AuthError::AuthNotEnabled,
                Code::FailedPrecondition,
                "etcdserver: authentication is not enabled",
            ),
            (
                AuthError::AuthOldRevision,
                Code::InvalidArgument,
                "etcdserver: revision of auth store is old",
            ),
            (
                AuthError::InvalidAuthToken,
                Code::Unauthenticated,
                "etcdserver: invalid auth token",
            ),
            (
                AuthError::InvalidAuthMgmt,
                Code::InvalidArgument,
                "etcdserver: invalid auth management",
            ),
            (
                AuthError::VerifyOnly,
                Code::Unknown,
                "auth: token signing attempted with verify-only key",
            ),
        ];
        let unmapped = [
            (AuthError::PermissionDenied, "auth: permission denied"),
            (AuthError::UserEmpty, "auth: user name is empty"),
            (AuthError::UserNotFound, "auth: user not found"),
            (AuthError::InvalidAuthToken, "auth: invalid auth token"),
        ];
        let table = table
            .into_iter()
            .chain(
                auth.into_iter()
                    .map(|(err, code, text)| (EtcdError::Auth(err), code, text)),
            )
            .chain(
                unmapped
                    .into_iter()
                    .map(|(err, text)| (EtcdError::AuthUnmapped(err), Code::Unknown, text)),
            );
        for (err, code, message) in table {
            let status = Status::from(err);
            assert_eq!(status.code(), code, "{message}");
            assert_eq!(status.message(), message);
        }
    }
}
