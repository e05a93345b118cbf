//! The member's client of itself, as etcd's `v3client` is: the Lock and
//! Election services run on it, so everything they do is an ordinary KV,
//! Lease or Watch call through the member's own gRPC services (and their
//! pipeline), visible to other clients as revisions and events.
//!
//! Each call carries the caller's credentials (its `token` or
//! `authorization` metadata, or its certificate's common name), as etcd's
//! in-process client carries the caller's context. Errors come back as etcd's server-side clients return
//! them: `Unknown` with the plain message, since a clientv3 error carries no
//! gRPC status.

use bytes::Bytes;
use etcd_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    kv_client::KvClient,
    lease_client::LeaseClient,
    range_request::{SortOrder, SortTarget},
    request_op,
    watch_client::WatchClient,
    watch_request::RequestUnion,
    Compare, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, RangeRequest,
    RangeResponse, RequestOp, ResponseHeader, TxnRequest, TxnResponse, WatchCreateRequest,
    WatchRequest, WatchResponse,
};
use etcd_proto::mvccpb::KeyValue;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::Status;

use super::authorize::{credentials, forwarded};
use crate::error::EtcdError;

/// The TTL of the lease a session grants itself when the caller gives none
/// (clientv3's `concurrency` default).
pub(crate) const SESSION_TTL: i64 = 60;

/// A client of the member's own services, acting for one caller.
#[derive(Debug, Clone)]
pub(crate) struct LocalClient {
    channel: Channel,
    credentials: MetadataMap,
}

/// A server-side client's error, as etcd reports it.
fn unknown(status: Status) -> Status {
    Status::unknown(status.message())
}

impl LocalClient {
    /// A client over `channel` (a pipe to the member itself) acting for
    /// the caller of `request`: its token, or its certificate's name.
    pub(crate) fn for_caller<T>(channel: Channel, request: &tonic::Request<T>) -> Self {
        let credentials = forwarded(request.metadata(), &credentials(request));
        Self {
            channel,
            credentials,
        }
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        *request.metadata_mut() = self.credentials.clone();
        request
    }

    /// A session's lease: `lease` itself, or a fresh lease of
    /// [`SESSION_TTL`] seconds for 0. A given lease is neither checked nor
    /// kept alive, and neither is a fresh one (etcd orphans the session).
    pub(crate) async fn session_lease(&self, lease: i64) -> Result<i64, Status> {
        if lease != 0 {
            return Ok(lease);
        }
        let granted = LeaseClient::new(self.channel.clone())
            .lease_grant(self.request(LeaseGrantRequest {
                ttl: SESSION_TTL,
                id: 0,
            }))
            .await
            .map_err(unknown)?;
        Ok(granted.into_inner().id)
    }

    pub(crate) async fn txn(&self, txn: TxnRequest) -> Result<TxnResponse, Status> {
        KvClient::new(self.channel.clone())
            .txn(self.request(txn))
            .await
            .map(tonic::Response::into_inner)
            .map_err(unknown)
    }

    pub(crate) async fn range(&self, range: RangeRequest) -> Result<RangeResponse, Status> {
        KvClient::new(self.channel.clone())
            .range(self.request(range))
            .await
            .map(tonic::Response::into_inner)
            .map_err(unknown)
    }

    pub(crate) async fn delete(&self, key: Bytes) -> Result<DeleteRangeResponse, Status> {
        KvClient::new(self.channel.clone())
            .delete_range(self.request(DeleteRangeRequest {
                key,
                ..Default::default()
            }))
            .await
            .map(tonic::Response::into_inner)
            .map_err(unknown)
    }

    /// The key under `prefix` created first (`WithFirstCreate`), with the
    /// range's header.
    pub(crate) async fn first_created(
        &self,
        prefix: &Bytes,
    ) -> Result<(ResponseHeader, Option<KeyValue>), Status> {
        let mut found = self.range(top(prefix, SortOrder::Ascend, 0)).await?;
        Ok((found.header.unwrap_or_default(), found.kvs.pop()))
    }

    /// Waits until every key under `prefix` created at or before
    /// `max_create_revision` is deleted (clientv3's `waitDeletes`): the
    /// newest such key is watched until it goes, then the next.
    pub(crate) async fn wait_deletes(
        &self,
        prefix: &Bytes,
        max_create_revision: i64,
    ) -> Result<(), Status> {
        loop {
            let mut last = self
                .range(top(prefix, SortOrder::Descend, max_create_revision))
                .await?;
            let Some(kv) = last.kvs.pop() else {
                return Ok(());
            };
            let revision = last.header.map_or(0, |h| h.revision);
            let mut watch = self.watch(kv.key, revision, false).await?;
            loop {
                let response = watch.next().await?;
                if response
                    .events
                    .iter()
                    .any(|e| e.r#type == etcd_proto::mvccpb::event::EventType::Delete as i32)
                {
                    break;
                }
            }
        }
    }

    /// Watches `key` (or the keys under it, for `prefix`) from
    /// `start_revision`.
    pub(crate) async fn watch(
        &self,
        key: Bytes,
        start_revision: i64,
        prefix: bool,
    ) -> Result<Watch, Status> {
        let range_end = if prefix {
            crate::watch::prefix_range_end(&key)
        } else {
            Bytes::new()
        };
        let create = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key,
                range_end,
                start_revision,
                ..Default::default()
            })),
        };
        // One create, then the request side stays open (and the watch
        // with it) until the watch is dropped.
        let requests = tokio_stream::iter([create]).chain(tokio_stream::pending());
        let responses = WatchClient::new(self.channel.clone())
            .watch(self.request(requests))
            .await
            .map_err(unknown)?
            .into_inner();
        Ok(Watch { responses })
    }
}

/// A watch on the member, as clientv3 hands its events out.
#[derive(Debug)]
pub(crate) struct Watch {
    responses: tonic::Streaming<WatchResponse>,
}

impl Watch {
    /// The next response that carries events. A watch that is cancelled
    /// (its history compacted) or ends fails, as clientv3's `Err()` does.
    pub(crate) async fn next(&mut self) -> Result<WatchResponse, Status> {
        loop {
            let response = self
                .responses
                .message()
                .await
                .map_err(unknown)?
                .ok_or(EtcdError::LostWatcher)?;
            // clientv3's WatchResponse.Err(), sent as Unknown.
            if response.compact_revision != 0 {
                return Err(unknown(EtcdError::Compacted.into()));
            }
            if response.canceled {
                return Err(if response.cancel_reason.is_empty() {
                    unknown(EtcdError::FutureRevision.into())
                } else {
                    Status::unknown(response.cancel_reason)
                });
            }
            if !response.events.is_empty() {
                return Ok(response);
            }
        }
    }
}

/// `WithFirstCreate` (ascending) or `WithLastCreate` (descending) over the
/// keys under `prefix`, created at or before `max_create_revision` (0: any).
pub(crate) fn top(prefix: &Bytes, order: SortOrder, max_create_revision: i64) -> RangeRequest {
    RangeRequest {
        key: prefix.clone(),
        range_end: crate::watch::prefix_range_end(prefix),
        limit: 1,
        sort_order: order as i32,
        sort_target: SortTarget::Create as i32,
        max_create_revision,
        ..Default::default()
    }
}

/// `If create_revision(key) == revision`.
pub(crate) fn created_at(key: &Bytes, revision: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Create as i32,
        key: key.clone(),
        target_union: Some(TargetUnion::CreateRevision(revision)),
        range_end: Bytes::new(),
    }
}

/// An op of a txn.
pub(crate) fn op(request: request_op::Request) -> RequestOp {
    RequestOp {
        request: Some(request),
    }
}

/// The key of a session's lock or candidacy: `<prefix><lease in hex>`.
pub(crate) fn session_key(prefix: &Bytes, lease: i64) -> Bytes {
    // Go's %x of an int64: a sign and the magnitude, not two's complement.
    let hex = if lease < 0 {
        format!("-{:x}", lease.unsigned_abs())
    } else {
        format!("{lease:x}")
    };
    let mut key = prefix.to_vec();
    key.extend_from_slice(hex.as_bytes());
    key.into()
}

/// `<name>/`, the prefix of a lock's or an election's keys.
pub(crate) fn prefix_of(name: &[u8]) -> Bytes {
    let mut prefix = name.to_vec();
    prefix.push(b'/');
    prefix.into()
}
