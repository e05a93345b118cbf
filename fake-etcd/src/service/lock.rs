//! `v3lockpb.Lock`: distributed locks, run as etcd runs them, through the
//! member's own client ([`LocalClient`]) as clientv3's `concurrency.Mutex`.
//!
//! A lock named `n` is held by the key under `n/` created first. Lock puts
//! the caller's key, `n/<lease in hex>`, on the caller's lease (a fresh
//! 60 s one for lease 0, never kept alive), then waits for every key
//! created before it to be deleted (released, or gone with its lease),
//! watching the newest of them each time. Unlock deletes the key.

use bytes::Bytes;
use etcd_proto::etcdserverpb::{
    range_request::SortOrder, request_op::Request as Op, response_op::Response as OpResponse,
    PutRequest, RangeRequest, TxnRequest,
};
use etcd_proto::v3lockpb::{
    lock_server::Lock, LockRequest, LockResponse, UnlockRequest, UnlockResponse,
};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::local_client::{created_at, op, prefix_of, session_key, top, LocalClient};
use crate::error::EtcdError;

/// The Lock service of one member.
#[derive(Debug, Clone)]
pub(crate) struct LockService {
    /// A pipe to the member itself.
    channel: Channel,
}

impl LockService {
    pub(crate) fn new(channel: Channel) -> Self {
        Self { channel }
    }
}

/// Deletes a waiter's key if its Lock call ends before it holds the lock
/// (an error, or the caller going away), as etcd does with a background
/// context.
struct WithdrawOnDrop {
    client: Option<LocalClient>,
    key: Bytes,
}

impl WithdrawOnDrop {
    fn disarm(mut self) {
        self.client = None;
    }
}

impl Drop for WithdrawOnDrop {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let key = self.key.clone();
            tokio::spawn(async move {
                let _ = client.delete(key).await;
            });
        }
    }
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(&self, request: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        let client = LocalClient::for_caller(self.channel.clone(), &request);
        let request = request.into_inner();
        let lease = client.session_lease(request.lease).await?;
        let prefix = prefix_of(&request.name);
        let key = session_key(&prefix, lease);
        // The holder: the key under the prefix created first.
        let owner = op(Op::RequestRange(top(&prefix, SortOrder::Ascend, 0)));
        let tried = client
            .txn(TxnRequest {
                compare: vec![created_at(&key, 0)],
                success: vec![
                    op(Op::RequestPut(PutRequest {
                        key: key.clone(),
                        lease,
                        ..Default::default()
                    })),
                    owner.clone(),
                ],
                failure: vec![
                    op(Op::RequestRange(RangeRequest {
                        key: key.clone(),
                        ..Default::default()
                    })),
                    owner,
                ],
            })
            .await?;
        let ranges: Vec<_> = tried
            .responses
            .iter()
            .map(|r| match &r.response {
                Some(OpResponse::ResponseRange(range)) => Some(range),
                _ => None,
            })
            .collect();
        let header = tried.header.unwrap_or_default();
        // My revision: the put's, or (a re-entrant call) my key's creation.
        let my_revision = if tried.succeeded {
            header.revision
        } else {
            ranges[0]
                .and_then(|r| r.kvs.first())
                .map_or(header.revision, |kv| kv.create_revision)
        };
        let holder = ranges[1].and_then(|r| r.kvs.first());
        if holder.is_none_or(|kv| kv.create_revision == my_revision) {
            return Ok(Response::new(LockResponse {
                header: Some(header),
                key: key.clone(),
            }));
        }

        // Cancelled while waiting (the caller went away): the guard deletes
        // the key in the background, as etcd does with a background context.
        let withdraw = WithdrawOnDrop {
            client: Some(client.clone()),
            key: key.clone(),
        };
        let waited = async {
            client.wait_deletes(&prefix, my_revision - 1).await?;
            // My own lease may have expired while I waited.
            client
                .range(RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                })
                .await
        }
        .await;
        withdraw.disarm();
        let mine = match waited {
            Ok(mine) => mine,
            Err(status) => {
                // An error: the key is deleted before the answer, as etcd's
                // mutex unlocks before it returns.
                let _ = client.delete(key).await;
                return Err(status);
            }
        };
        if mine.kvs.is_empty() {
            return Err(EtcdError::SessionExpired.into());
        }
        Ok(Response::new(LockResponse {
            header: mine.header,
            key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<UnlockRequest>,
    ) -> Result<Response<UnlockResponse>, Status> {
        let client = LocalClient::for_caller(self.channel.clone(), &request);
        let deleted = client.delete(request.into_inner().key).await?;
        Ok(Response::new(UnlockResponse {
            header: deleted.header,
        }))
    }
}
