//! `etcdserverpb.Lease`: grants, revokes and queries run through the
//! [pipeline](super); each keepalive stream is a task that renews one lease
//! per request, in order.

use std::pin::Pin;
use std::sync::Arc;

use etcd_proto::etcdserverpb::{
    lease_server::Lease, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::{authorize, serve};
use crate::auth::Credentials;
use crate::cluster::Path;
use crate::error::EtcdError;
use crate::member::{Applied, Member, Route};

/// The Lease service of one member.
#[derive(Debug, Clone)]
pub(crate) struct LeaseService {
    member: Arc<Member>,
}

impl LeaseService {
    pub(crate) fn new(member: Arc<Member>) -> Self {
        Self { member }
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let response = serve(&self.member, request, |core, req, now| {
            let lease = core
                .lessor
                .grant(req.id, req.ttl, now)
                .map_err(EtcdError::from)?;
            Ok(Applied::response(LeaseGrantResponse {
                header: None,
                id: lease.id,
                ttl: lease.ttl,
                error: String::new(),
            }))
        })
        .await?;
        // The new lease's deadline may be the soonest timer now.
        self.member.shared.timer_wakeup.notify_one();
        Ok(response)
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        serve(&self.member, request, |core, req, _| {
            let events = core.revoke(req.id).map_err(EtcdError::from)?;
            Ok(Applied::with_events(LeaseRevokeResponse::default(), events))
        })
        .await
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        self.member.admit_stream(&request).await?;
        let member = Arc::clone(&self.member);
        let credentials = authorize::credentials(&request);
        let mut requests = request.into_inner();
        let mut end = self.member.faults.end_keepalives.subscribe();
        let (responses, stream) = tokio::sync::mpsc::channel(16);
        // One response per request, in order. The stream ends when the
        // client's side does (OK), with the client's error, or with an
        // injected one.
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    request = requests.next() => match request {
                        Some(Ok(req)) => keep_alive(&member, &credentials, &req).await,
                        Some(Err(status)) => Err(status),
                        None => return,
                    },
                    ended = end.recv() => match ended {
                        Ok(status) => Err(status),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    },
                };
                let failed = next.is_err();
                if responses.send(next).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(stream),
        )))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        serve(&self.member, request, |core, req, now| {
            let response = match core.lessor.get(req.id) {
                Some(lease) => LeaseTimeToLiveResponse {
                    header: None,
                    id: lease.id,
                    // Whole seconds left, truncated, as etcd reports them.
                    ttl: lease.deadline.saturating_sub(now).as_secs() as i64,
                    granted_ttl: lease.ttl,
                    keys: if req.keys {
                        lease.keys.iter().cloned().collect()
                    } else {
                        Vec::new()
                    },
                },
                None => LeaseTimeToLiveResponse {
                    header: None,
                    id: req.id,
                    ttl: -1,
                    granted_ttl: 0,
                    keys: Vec::new(),
                },
            };
            Ok(Applied::response(response))
        })
        .await
    }

    async fn lease_leases(
        &self,
        request: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        serve(&self.member, request, |core, _, _| {
            let leases = core
                .lessor
                .by_deadline()
                .map(|l| LeaseStatus { id: l.id })
                .collect();
            Ok(Applied::response(LeaseLeasesResponse {
                header: None,
                leases,
            }))
        })
        .await
    }
}

/// Renews one lease: the granted TTL if it is alive, 0 if it is unknown or
/// has expired (the stream stays open either way). A caller who may not
/// write the lease's keys ends the stream with etcd's error.
async fn keep_alive(
    member: &Member,
    credentials: &Credentials,
    request: &LeaseKeepAliveRequest,
) -> Result<LeaseKeepAliveResponse, Status> {
    // A renewal is forwarded to the leader, and waits for one.
    member
        .wait_for_route(Route {
            path: Path::Leader,
            learner_ok: false,
            require_leader: false,
        })
        .await?;
    let now = member.shared.clock.now();
    let mut core = member.lock();
    super::arrive(&mut core, request, credentials, now)?;
    // The header's revision is taken before the renewal, as etcd does.
    let header = Some(member.header_source(&core).at(core.store.revision()));
    let id = request.id;
    let ttl = core.lessor.renew(id, now).unwrap_or(0);
    Ok(LeaseKeepAliveResponse { header, id, ttl })
}
