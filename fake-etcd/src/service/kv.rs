//! `etcdserverpb.KV`.

use std::sync::Arc;

use etcd_proto::etcdserverpb::{
    kv_server::Kv, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

use super::check_raft_size;
use crate::core::Shared;
use crate::error::EtcdError;
use crate::kv::{apply, validate};

/// The KV service of one member.
#[derive(Debug, Clone)]
pub(crate) struct KvService {
    shared: Arc<Shared>,
}

impl KvService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let req = request.into_inner();
        validate::check_range(&req)?;
        let core = self.shared.lock();
        let mut resp = apply::range(&core.store, &req)?;
        self.shared.fill_header(&mut resp.header, &core);
        Ok(Response::new(resp))
    }

    async fn put(&self, request: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = request.into_inner();
        validate::check_put(&req)?;
        check_raft_size(&req)?;
        let mut core = self.shared.lock();
        core.record_raft_entry();
        if core.no_space() {
            return Err(EtcdError::NoSpace.into());
        }
        let (store, leases) = core.store_and_leases();
        let (mut resp, events) = apply::put(store, leases, &req)?;
        core.publish(&events);
        self.shared.fill_header(&mut resp.header, &core);
        Ok(Response::new(resp))
    }

    async fn delete_range(
        &self,
        request: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let req = request.into_inner();
        validate::check_delete(&req)?;
        check_raft_size(&req)?;
        let mut core = self.shared.lock();
        core.record_raft_entry();
        let (store, leases) = core.store_and_leases();
        let (mut resp, events) = apply::delete_range(store, leases, &req);
        core.publish(&events);
        self.shared.fill_header(&mut resp.header, &core);
        Ok(Response::new(resp))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let req = request.into_inner();
        validate::check_txn(&req)?;
        let read_only = apply::is_txn_read_only(&req);
        if !read_only {
            check_raft_size(&req)?;
        }
        let mut core = self.shared.lock();
        if !read_only {
            core.record_raft_entry();
            if core.no_space() && apply::txn_puts(&req) {
                return Err(EtcdError::NoSpace.into());
            }
        }
        let (store, leases) = core.store_and_leases();
        let (mut resp, events) = apply::txn(store, leases, &req)?;
        core.publish(&events);
        self.shared.fill_header(&mut resp.header, &core);
        Ok(Response::new(resp))
    }

    async fn compact(
        &self,
        request: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        let req = request.into_inner();
        check_raft_size(&req)?;
        let mut core = self.shared.lock();
        core.record_raft_entry();
        core.store.compact(req.revision)?;
        let mut resp = CompactionResponse::default();
        self.shared.fill_header(&mut resp.header, &core);
        Ok(Response::new(resp))
    }
}
