//! `etcdserverpb.Cluster`: the members of the cluster, and changes to
//! them, with etcd's checks (see [`cluster`](crate::cluster)).
//!
//! Every response lists all members, sorted by ID, under a header with no
//! revision, as etcd's does. A change is a raft entry; a member removed
//! stops serving (its server watches for that), as etcd's process exits.

use std::sync::Arc;

use etcd_proto::etcdserverpb::{
    cluster_server::Cluster, Member as MemberEntry, MemberAddRequest, MemberAddResponse,
    MemberListRequest, MemberListResponse, MemberPromoteRequest, MemberPromoteResponse,
    MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
    ResponseHeader,
};
use tonic::{Request, Response, Status};

use super::serve;
use crate::cluster::{member_id, MemberRecord};
use crate::core::Core;
use crate::header::HasHeader;
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

    /// Runs a membership change through the pipeline, then lets everyone
    /// waiting on the cluster see it.
    async fn change<Q, R>(
        &self,
        request: Request<Q>,
        apply: impl FnOnce(&mut Core, &Q) -> Result<R, crate::error::EtcdError> + Send,
    ) -> Result<Response<R>, Status>
    where
        Q: super::EtcdRequest,
        R: HasHeader,
    {
        let shared = &self.member.shared;
        let response = serve(&self.member, request, |core, req, now| {
            let response = apply(core, req)?;
            core.reconcile_cluster(now);
            Ok(Applied::response(response))
        })
        .await;
        shared.cluster_changed();
        without_revision(response)
    }
}

/// A member as `MemberList` shows it.
fn entry(m: &MemberRecord) -> MemberEntry {
    MemberEntry {
        id: m.id,
        name: m.name.clone(),
        peer_ur_ls: m.peer_urls.clone(),
        client_ur_ls: m.client_urls.clone(),
        is_learner: m.is_learner,
    }
}

/// Every member, by ID.
fn members(core: &Core) -> Vec<MemberEntry> {
    core.cluster.members().map(entry).collect()
}

/// etcd's Cluster responses carry no revision in their header.
fn without_revision<R: HasHeader>(
    response: Result<Response<R>, Status>,
) -> Result<Response<R>, Status> {
    let mut response = response?;
    if let Some(header) = response.get_mut().header_mut() {
        header.revision = 0;
    }
    Ok(response)
}

fn no_header() -> Option<ResponseHeader> {
    None
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let shared = Arc::clone(&self.member.shared);
        let asked = self.member.id();
        self.change(request, move |core, req| {
            let now = shared.clock.now();
            let unix_seconds = (shared.clock.unix_time_at_zero() + now).as_secs();
            let id = member_id(&req.peer_ur_ls, &core.cluster.token, Some(unix_seconds));
            let added = core
                .cluster
                .add(asked, id, req.peer_ur_ls.clone(), req.is_learner, now)?;
            Ok(MemberAddResponse {
                header: no_header(),
                // Not started yet: no name, no client URLs.
                member: Some(MemberEntry {
                    id: added.id,
                    peer_ur_ls: added.peer_urls,
                    is_learner: added.is_learner,
                    ..Default::default()
                }),
                members: members(core),
            })
        })
        .await
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let asked = self.member.id();
        let shared = Arc::clone(&self.member.shared);
        self.change(request, move |core, req| {
            core.cluster.remove(asked, req.id, shared.clock.now())?;
            Ok(MemberRemoveResponse {
                header: no_header(),
                members: members(core),
            })
        })
        .await
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        self.change(request, |core, req| {
            core.cluster.update(req.id, req.peer_ur_ls.clone())?;
            Ok(MemberUpdateResponse {
                header: no_header(),
                members: members(core),
            })
        })
        .await
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let response = serve(&self.member, request, |core, _, _| {
            Ok(Applied::response(MemberListResponse {
                header: no_header(),
                members: members(core),
            }))
        })
        .await;
        without_revision(response)
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        self.change(request, |core, req| {
            core.cluster.promote(req.id)?;
            Ok(MemberPromoteResponse {
                header: no_header(),
                members: members(core),
            })
        })
        .await
    }
}
