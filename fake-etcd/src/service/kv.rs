//! `etcdserverpb.KV`: each RPC is what [`kv::apply`](crate::kv::apply)
//! does, run through the [pipeline](super).

use std::sync::Arc;

use etcd_proto::etcdserverpb::{
    kv_server::Kv, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

use super::serve;
use crate::kv::apply;
use crate::member::{Applied, Member};

/// The KV service of one member.
#[derive(Debug, Clone)]
pub(crate) struct KvService {
    member: Arc<Member>,
}

impl KvService {
    pub(crate) fn new(member: Arc<Member>) -> Self {
        Self { member }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        serve(&self.member, request, |core, req, _| {
            apply::range(&core.store, req).map(Applied::response)
        })
        .await
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        serve(&self.member, request, |core, req, _| {
            let (store, leases) = core.store_and_leases();
            let (response, events) = apply::put(store, leases, req)?;
            Ok(Applied::with_events(response, events))
        })
        .await
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        serve(&self.member, request, |core, req, _| {
            let (store, leases) = core.store_and_leases();
            let (response, events) = apply::delete_range(store, leases, req);
            Ok(Applied::with_events(response, events))
        })
        .await
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        serve(&self.member, request, |core, req, _| {
            let (store, leases) = core.store_and_leases();
            let (response, events) = apply::txn(store, leases, req)?;
            Ok(Applied::with_events(response, events))
        })
        .await
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        serve(&self.member, request, |core, req, _| {
            core.store.compact(req.revision)?;
            Ok(Applied::response(CompactionResponse::default()))
        })
        .await
    }
}
