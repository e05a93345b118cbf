//! `etcdserverpb.Lease`.

use std::pin::Pin;
use std::sync::Arc;

use etcd_proto::etcdserverpb::{
    lease_server::Lease, LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use super::check_raft_size;
use crate::core::Shared;
use crate::error::EtcdError;

/// The Lease service of one member.
#[derive(Debug, Clone)]
pub(crate) struct LeaseService {
    shared: Arc<Shared>,
}

impl LeaseService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let req = request.into_inner();
        check_raft_size(&req)?;
        let now = self.shared.clock.now();
        let mut core = self.shared.lock();
        core.record_raft_entry();
        if core.no_space() {
            return Err(EtcdError::NoSpace.into());
        }
        let lease = core
            .lessor
            .grant(req.id, req.ttl, now)
            .map_err(EtcdError::from)?;
        let mut resp = LeaseGrantResponse {
            header: None,
            id: lease.id,
            ttl: lease.ttl,
            error: String::new(),
        };
        self.shared.fill_header(&mut resp.header, &core);
        drop(core);
        self.shared.expiry_wakeup.notify_one();
        Ok(Response::new(resp))
    }

    async fn lease_revoke(
        &self,
        request: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let req = request.into_inner();
        check_raft_size(&req)?;
        let mut core = self.shared.lock();
        core.record_raft_entry();
        core.revoke(req.id).map_err(EtcdError::from)?;
        let mut resp = LeaseRevokeResponse::default();
        self.shared.fill_header(&mut resp.header, &core);
        Ok(Response::new(resp))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let shared = Arc::clone(&self.shared);
        let mut requests = request.into_inner();
        let mut end = self.shared.faults.end_keepalives.subscribe();
        let (responses, stream) = tokio::sync::mpsc::channel(16);
        // One response per request, in order. The stream ends when the
        // client's side does (OK), with the client's error, or with an
        // injected one.
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    request = requests.next() => match request {
                        Some(Ok(req)) => Ok(keep_alive(&shared, req.id)),
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
        let req = request.into_inner();
        let now = self.shared.clock.now();
        let core = self.shared.lock();
        let mut resp = match core.lessor.get(req.id) {
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
        self.shared.fill_header(&mut resp.header, &core);
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        let core = self.shared.lock();
        let leases = core
            .lessor
            .by_deadline()
            .map(|l| LeaseStatus { id: l.id })
            .collect();
        let mut resp = LeaseLeasesResponse {
            header: None,
            leases,
        };
        self.shared.fill_header(&mut resp.header, &core);
        Ok(Response::new(resp))
    }
}

/// Renews one lease: the granted TTL if it is alive, 0 if it is unknown or
/// has expired (the stream stays open either way).
fn keep_alive(shared: &Shared, id: i64) -> LeaseKeepAliveResponse {
    let now = shared.clock.now();
    let mut core = shared.lock();
    // The header's revision is taken before the renewal, as etcd does.
    let mut resp = LeaseKeepAliveResponse {
        header: None,
        id,
        ttl: 0,
    };
    shared.fill_header(&mut resp.header, &core);
    resp.ttl = core.lessor.renew(id, now).unwrap_or(0);
    resp
}
