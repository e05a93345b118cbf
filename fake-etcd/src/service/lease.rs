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
        // One response per request, in order; the stream ends when the
        // client's side does, or with an injected error.
        let responses = request
            .into_inner()
            .map_while(Result::ok)
            .map(move |req| Ok(keep_alive(&shared, req.id)));
        let mut end = self.shared.faults.end_keepalives.subscribe();
        let ended = async_stream_end(async move {
            loop {
                match end.recv().await {
                    Ok(status) => return status,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        std::future::pending().await
                    }
                }
            }
        });
        let merged = responses.merge(ended);
        Ok(Response::new(Box::pin(merged)))
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

/// A stream that yields one error when `ended` completes, then ends.
fn async_stream_end(ended: impl std::future::Future<Output = Status> + Send + 'static) -> EndWith {
    EndWith(Some(Box::pin(ended)))
}

/// See [`async_stream_end`].
struct EndWith(Option<Pin<Box<dyn std::future::Future<Output = Status> + Send>>>);

impl Stream for EndWith {
    type Item = Result<LeaseKeepAliveResponse, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let Some(ended) = self.0.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let status = std::task::ready!(ended.as_mut().poll(cx));
        self.0 = None;
        std::task::Poll::Ready(Some(Err(status)))
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
