//! `v3electionpb.Election`: leader elections, run as etcd runs them,
//! through the member's own client ([`LocalClient`]) as clientv3's
//! `concurrency.Election`.
//!
//! In an election named `n`, each candidate's key is `n/<lease in hex>`,
//! on its lease; the key created first leads, and its value is the leader's
//! proclamation. Campaign puts the key and waits for every earlier one to
//! go; Proclaim and Resign act only while the key's create revision is the
//! leadership's (`LeaderKey.rev`); Leader reads the first key; Observe
//! follows the first key's values and, when it goes, the next leader.

use bytes::Bytes;
use etcd_proto::etcdserverpb::{
    request_op::Request as Op, response_op::Response as OpResponse, DeleteRangeRequest, PutRequest,
    RangeRequest, ResponseHeader, TxnRequest, TxnResponse,
};
use etcd_proto::mvccpb::event::EventType;
use etcd_proto::v3electionpb::{
    election_server::Election, CampaignRequest, CampaignResponse, LeaderKey, LeaderRequest,
    LeaderResponse, ProclaimRequest, ProclaimResponse, ResignRequest, ResignResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::local_client::{created_at, op, prefix_of, session_key, LocalClient};
use crate::error::EtcdError;

/// The Election service of one member.
#[derive(Debug, Clone)]
pub(crate) struct ElectionService {
    /// A pipe to the member itself.
    channel: Channel,
}

impl ElectionService {
    pub(crate) fn new(channel: Channel) -> Self {
        Self { channel }
    }

    fn client<T>(&self, request: &Request<T>) -> LocalClient {
        LocalClient::for_caller(self.channel.clone(), request)
    }
}

/// `If create_revision(key) == rev Then <then>`: an act of the leadership
/// `rev` names, which does nothing once it is lost.
async fn as_leader(
    client: &LocalClient,
    key: &Bytes,
    rev: i64,
    then: Op,
) -> Result<TxnResponse, Status> {
    client
        .txn(TxnRequest {
            compare: vec![created_at(key, rev)],
            success: vec![op(then)],
            failure: Vec::new(),
        })
        .await
}

fn put(key: &Bytes, value: Bytes, lease: i64) -> Op {
    Op::RequestPut(PutRequest {
        key: key.clone(),
        value,
        lease,
        ..Default::default()
    })
}

fn delete(key: &Bytes) -> Op {
    Op::RequestDeleteRange(DeleteRangeRequest {
        key: key.clone(),
        ..Default::default()
    })
}

/// Resigns a candidacy if its Campaign call is dropped while it waits (the
/// caller went away), as etcd does with a background context.
struct ResignOnDrop {
    client: Option<LocalClient>,
    key: Bytes,
    rev: i64,
}

impl ResignOnDrop {
    fn disarm(mut self) {
        self.client = None;
    }
}

impl Drop for ResignOnDrop {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let (key, rev) = (self.key.clone(), self.rev);
            tokio::spawn(async move {
                let _ = as_leader(&client, &key, rev, delete(&key)).await;
            });
        }
    }
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<CampaignRequest>,
    ) -> Result<Response<CampaignResponse>, Status> {
        let client = self.client(&request);
        let request = request.into_inner();
        let lease = client.session_lease(request.lease).await?;
        let prefix = prefix_of(&request.name);
        let key = session_key(&prefix, lease);
        let first = client
            .txn(TxnRequest {
                compare: vec![created_at(&key, 0)],
                success: vec![op(put(&key, request.value.clone(), lease))],
                failure: vec![op(Op::RequestRange(RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                }))],
            })
            .await?;
        let header = first.header.unwrap_or_default();
        let mut rev = header.revision;
        if !first.succeeded {
            // A candidacy of this lease already exists: it is resumed, and
            // proclaims the new value if it differs.
            let existing = first.responses.first().and_then(|r| match &r.response {
                Some(OpResponse::ResponseRange(range)) => range.kvs.first(),
                _ => None,
            });
            if let Some(kv) = existing {
                rev = kv.create_revision;
                if kv.value != request.value {
                    let proclaimed =
                        as_leader(&client, &key, rev, put(&key, request.value.clone(), lease))
                            .await;
                    match proclaimed {
                        Ok(txn) if txn.succeeded => {}
                        // etcd forgets the leadership first, so its
                        // resign then does nothing at all.
                        Ok(_) => return Err(Status::from(EtcdError::ElectionNotLeader)),
                        Err(status) => {
                            let _ = as_leader(&client, &key, rev, delete(&key)).await;
                            return Err(status);
                        }
                    }
                }
            }
        }
        let resign = ResignOnDrop {
            client: Some(client.clone()),
            key: key.clone(),
            rev,
        };
        let waited = client.wait_deletes(&prefix, rev - 1).await;
        resign.disarm();
        waited?;
        // etcd does not check that the key is still there: a candidate
        // whose lease expired while it waited is told it won.
        Ok(Response::new(CampaignResponse {
            header: Some(header),
            leader: Some(LeaderKey {
                name: request.name,
                key,
                rev,
                lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<ProclaimRequest>,
    ) -> Result<Response<ProclaimResponse>, Status> {
        let client = self.client(&request);
        let request = request.into_inner();
        let leader = request
            .leader
            .ok_or_else(|| Status::from(EtcdError::MissingLeaderKey))?;
        let lease = client.session_lease(leader.lease).await?;
        let txn = as_leader(
            &client,
            &leader.key,
            leader.rev,
            put(&leader.key, request.value, lease),
        )
        .await?;
        if !txn.succeeded {
            return Err(Status::from(EtcdError::ElectionNotLeader));
        }
        Ok(Response::new(ProclaimResponse { header: txn.header }))
    }

    async fn leader(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<LeaderResponse>, Status> {
        let client = self.client(&request);
        let prefix = prefix_of(&request.into_inner().name);
        let (header, kv) = client.first_created(&prefix).await?;
        let kv = kv.ok_or_else(|| Status::from(EtcdError::ElectionNoLeader))?;
        Ok(Response::new(LeaderResponse {
            header: Some(header),
            kv: Some(kv),
        }))
    }

    type ObserveStream = ReceiverStream<Result<LeaderResponse, Status>>;

    async fn observe(
        &self,
        request: Request<LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let client = self.client(&request);
        let prefix = prefix_of(&request.into_inner().name);
        let (responses, stream) = mpsc::channel(16);
        tokio::spawn(async move {
            let observing = observe(&client, &prefix, &responses);
            // The stream ends when the client goes away, or (as etcd's
            // does) without an error when the member's watch fails.
            tokio::select! {
                _ = observing => {}
                () = responses.closed() => {}
            }
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn resign(
        &self,
        request: Request<ResignRequest>,
    ) -> Result<Response<ResignResponse>, Status> {
        let client = self.client(&request);
        let leader = request
            .into_inner()
            .leader
            .ok_or_else(|| Status::from(EtcdError::MissingLeaderKey))?;
        // Only for etcd's side effect: a session on lease 0 grants a 60 s
        // lease.
        client.session_lease(leader.lease).await?;
        // OK whether or not it still led.
        let txn = as_leader(&client, &leader.key, leader.rev, delete(&leader.key)).await?;
        Ok(Response::new(ResignResponse { header: txn.header }))
    }
}

/// clientv3's `Election.observe`: the leader, each of its new values, and
/// when it goes, the next leader; returns when a call fails or the
/// receiver is gone.
async fn observe(
    client: &LocalClient,
    prefix: &Bytes,
    responses: &mpsc::Sender<Result<LeaderResponse, Status>>,
) -> Result<(), Status> {
    let send = |header: ResponseHeader, kv| {
        responses.send(Ok(LeaderResponse {
            header: Some(header),
            kv: Some(kv),
        }))
    };
    loop {
        let (mut header, first) = client.first_created(prefix).await?;
        let leader = match first {
            Some(kv) => kv,
            None => {
                // No leader yet: the first PUT under the prefix is one.
                let mut watch = client.watch(prefix.clone(), header.revision, true).await?;
                loop {
                    let response = watch.next().await?;
                    let put = response
                        .events
                        .into_iter()
                        .find(|e| e.r#type == EventType::Put as i32)
                        .and_then(|e| e.kv);
                    if let Some(kv) = put {
                        header = response.header.unwrap_or_default();
                        header.revision = kv.mod_revision;
                        break kv;
                    }
                }
            }
        };
        let key = leader.key.clone();
        if send(header, leader).await.is_err() {
            return Ok(());
        }
        let mut watch = client.watch(key, header.revision + 1, false).await?;
        'leading: loop {
            let response = watch.next().await?;
            let header = response.header.unwrap_or_default();
            for event in response.events {
                if event.r#type == EventType::Delete as i32 {
                    break 'leading;
                }
                if let Some(kv) = event.kv {
                    if send(header, kv).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}
