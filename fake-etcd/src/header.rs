//! Response headers: the one place that says what a header holds.
//!
//! etcd stamps every response with the cluster and member that answered,
//! the raft term, and (for most calls) the store revision. The core builds
//! a [`HeaderSource`] from its state and everything that answers (services,
//! the watch hub) asks it for headers, so no two places fill one
//! differently.

use etcd_proto::etcdserverpb::ResponseHeader;

/// What every header of a member says at one moment, apart from the
/// revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeaderSource {
    pub(crate) cluster_id: u64,
    pub(crate) member_id: u64,
    pub(crate) raft_term: u64,
}

impl HeaderSource {
    /// A header at `revision` (0 for the responses etcd sends without one).
    pub(crate) fn at(self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            raft_term: self.raft_term,
            revision,
        }
    }

    /// Completes a header a response may have started: identity and term
    /// always, `current` as the revision unless the response set one (a
    /// write reports the revision it created).
    pub(crate) fn fill(self, header: &mut Option<ResponseHeader>, current: i64) {
        let revision = header.as_ref().map_or(0, |h| h.revision);
        *header = Some(self.at(if revision == 0 { current } else { revision }));
    }
}

/// The responses whose header the request pipeline fills.
pub(crate) trait HasHeader {
    /// The response's header slot.
    fn header_mut(&mut self) -> &mut Option<ResponseHeader>;
}

macro_rules! has_header {
    ($($response:ty),* $(,)?) => {
        $(impl HasHeader for $response {
            fn header_mut(&mut self) -> &mut Option<ResponseHeader> {
                &mut self.header
            }
        })*
    };
}

use etcd_proto::etcdserverpb as pb;

has_header!(
    pb::RangeResponse,
    pb::PutResponse,
    pb::DeleteRangeResponse,
    pb::TxnResponse,
    pb::CompactionResponse,
    pb::LeaseGrantResponse,
    pb::LeaseRevokeResponse,
    pb::LeaseTimeToLiveResponse,
    pb::LeaseLeasesResponse,
    pb::LeaseKeepAliveResponse,
    pb::AlarmResponse,
    pb::StatusResponse,
    pb::HashKvResponse,
    pb::HashResponse,
    pb::DowngradeResponse,
    pb::MemberListResponse,
    pb::MemberAddResponse,
    pb::MemberRemoveResponse,
    pb::MemberUpdateResponse,
    pb::MemberPromoteResponse,
    pb::AuthEnableResponse,
    pb::AuthDisableResponse,
    pb::AuthStatusResponse,
    pb::AuthenticateResponse,
    pb::AuthUserAddResponse,
    pb::AuthUserGetResponse,
    pb::AuthUserListResponse,
    pb::AuthUserDeleteResponse,
    pb::AuthUserChangePasswordResponse,
    pb::AuthUserGrantRoleResponse,
    pb::AuthUserRevokeRoleResponse,
    pb::AuthRoleAddResponse,
    pb::AuthRoleGetResponse,
    pb::AuthRoleListResponse,
    pb::AuthRoleDeleteResponse,
    pb::AuthRoleGrantPermissionResponse,
    pb::AuthRoleRevokePermissionResponse,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_keeps_a_revision_the_response_set() {
        let source = HeaderSource {
            cluster_id: 1,
            member_id: 2,
            raft_term: 3,
        };
        let mut set = Some(ResponseHeader {
            revision: 7,
            ..Default::default()
        });
        source.fill(&mut set, 9);
        assert_eq!(set, Some(source.at(7)));
        let mut unset = None;
        source.fill(&mut unset, 9);
        assert_eq!(unset, Some(source.at(9)));
    }
}
