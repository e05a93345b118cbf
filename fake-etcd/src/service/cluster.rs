//! `etcdserverpb.Cluster`: a cluster of one member, which cannot change.

use std::sync::Arc;

use etcd_proto::etcdserverpb::{
    cluster_server::Cluster, Member as MemberEntry, MemberAddRequest, MemberAddResponse,
    MemberListRequest, MemberListResponse, MemberPromoteRequest, MemberPromoteResponse,
    MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use super::serve;
use crate::error::EtcdError;
use crate::member::{Applied, Member};

/// The Cluster service of one member.
#[derive(Debug, Clone)]
pub(crate) struct ClusterService {
    member: Arc<Member>,
}

impl ClusterService {
    pub(crate) fn new(member: Arc<Member>) -> Self {
        Self { member }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        _: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        Err(EtcdError::MethodNotImplemented("MemberAdd").into())
    }

    async fn member_remove(
        &self,
        _: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(EtcdError::MethodNotImplemented("MemberRemove").into())
    }

    async fn member_update(
        &self,
        _: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(EtcdError::MethodNotImplemented("MemberUpdate").into())
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let identity = &self.member.identity;
        let mut response = serve(&self.member, request, |_, _, _| {
            Ok(Applied::response(MemberListResponse {
                header: None,
                members: vec![MemberEntry {
                    id: identity.member_id,
                    name: identity.name.clone(),
                    peer_ur_ls: identity.peer_urls.clone(),
                    client_ur_ls: identity.client_urls.clone(),
                    is_learner: false,
                }],
            }))
        })?;
        // etcd's MemberList header carries no revision.
        if let Some(header) = &mut response.get_mut().header {
            header.revision = 0;
        }
        Ok(response)
    }

    async fn member_promote(
        &self,
        _: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(EtcdError::MethodNotImplemented("MemberPromote").into())
    }
}
