//! `etcdserverpb.Maintenance`: status, alarms, defragmentation, hashes,
//! snapshots, leader moves and downgrades of a single in-memory member.

use std::sync::Arc;

use etcd_proto::etcdserverpb::{
    downgrade_request::DowngradeAction, maintenance_server::Maintenance, AlarmRequest,
    AlarmResponse, DefragmentRequest, DefragmentResponse, DowngradeRequest, DowngradeResponse,
    HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest,
    MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::{authorize, authorize_arrival, serve};
use crate::error::EtcdError;
use crate::member::{Applied, Member, ETCD_VERSION, REQUEST_TIMEOUT};
use crate::snapshot;

/// A fresh etcd's database file: bbolt's initial pages.
const EMPTY_DB_BYTES: i64 = 20_480;
/// An estimate of what one retained key costs in etcd's database.
const BYTES_PER_KEY: i64 = 128;
/// The size of a snapshot's data messages (etcd's `snapshotSendBufferSize`).
const SNAPSHOT_CHUNK: usize = 32 * 1024;

/// The Maintenance service of one member.
#[derive(Debug, Clone)]
pub(crate) struct MaintenanceService {
    member: Arc<Member>,
}

impl MaintenanceService {
    pub(crate) fn new(member: Arc<Member>) -> Self {
        Self { member }
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<AlarmRequest>,
    ) -> Result<Response<AlarmResponse>, Status> {
        serve(&self.member, request, |core, req, _| {
            let alarms = core.alarm(req.action, req.member_id, req.alarm);
            Ok(Applied::response(AlarmResponse {
                header: None,
                alarms,
            }))
        })
        .await
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let id = self.member.id();
        serve(&self.member, request, |core, _, _| {
            let db_size = EMPTY_DB_BYTES + BYTES_PER_KEY * core.store.retained_keys() as i64;
            let leader = core.cluster.leader_seen_by(id);
            let mut errors = Vec::new();
            if leader.is_none() {
                errors.push(EtcdError::NoLeader.to_string());
            }
            errors.extend(core.alarm_errors());
            Ok(Applied::response(StatusResponse {
                header: None,
                version: ETCD_VERSION.to_owned(),
                db_size,
                leader: leader.unwrap_or(0),
                raft_index: core.raft_index,
                raft_term: core.raft_term,
                raft_applied_index: core.raft_index,
                errors,
                db_size_in_use: db_size,
                is_learner: core.cluster.member(id).is_some_and(|m| m.is_learner),
            }))
        })
        .await
    }

    async fn defragment(
        &self,
        request: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        let credentials = authorize::credentials(&request);
        authorize_arrival(&self.member, request.get_ref(), &credentials)?;
        // Memory needs no defragmenting; compaction already freed it. etcd
        // answers with an empty response, no header.
        Ok(Response::new(DefragmentResponse::default()))
    }

    async fn hash(&self, request: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let member = &self.member;
        serve(member, request, |core, _, _| {
            let buckets = snapshot::buckets(core);
            Ok(Applied::response(HashResponse {
                header: None,
                hash: snapshot::hash(&buckets),
            }))
        })
        .await
    }

    async fn hash_kv(
        &self,
        request: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        serve(&self.member, request, |core, req, _| {
            let (hash, compact_revision) = core.store.hash_kv(req.revision)?;
            Ok(Applied::response(HashKvResponse {
                header: None,
                hash,
                compact_revision,
            }))
        })
        .await
    }

    type SnapshotStream = ReceiverStream<Result<SnapshotResponse, Status>>;

    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let credentials = authorize::credentials(&request);
        authorize_arrival(&self.member, request.get_ref(), &credentials)?;
        // One consistent read of the whole state, as etcd's one bbolt read
        // transaction.
        let database = {
            let core = self.member.lock();
            snapshot::save(&core)
        };
        let checksum = Bytes::copy_from_slice(&Sha256::digest(&database));
        let database = Bytes::from(database);
        let (messages, stream) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let total = database.len();
            let mut sent = 0;
            while sent < total {
                let chunk = database.slice(sent..total.min(sent + SNAPSHOT_CHUNK));
                sent += chunk.len();
                let message = SnapshotResponse {
                    header: None,
                    remaining_bytes: (total - sent) as u64,
                    blob: chunk,
                };
                if messages.send(Ok(message)).await.is_err() {
                    return;
                }
            }
            // Then the checksum `etcdctl snapshot save` verifies, alone.
            let checksum = SnapshotResponse {
                header: None,
                remaining_bytes: 0,
                blob: checksum,
            };
            let _ = messages.send(Ok(checksum)).await;
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn move_leader(
        &self,
        request: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        // Only the leader moves leadership; to itself is done at once. A
        // new leader means a new term, and leases renewed. etcd answers with
        // no header.
        let credentials = authorize::credentials(&request);
        authorize_arrival(&self.member, request.get_ref(), &credentials)?;
        let target = request.into_inner().target_id;
        let asked = self.member.id();
        let shared = &self.member.shared;
        let moved = shared.change_cluster(|core| {
            let moved = core.cluster.move_leader(asked, target)?;
            if moved {
                core.change_leader(shared.clock.now());
            }
            Ok(moved)
        });
        match moved {
            Ok(_) => Ok(Response::new(MoveLeaderResponse::default())),
            // The transferee cannot catch up: etcd gives up at the request
            // timeout.
            Err(EtcdError::LeaderTransferTimedOut) => {
                let deadline = shared.clock.now() + REQUEST_TIMEOUT;
                shared.clock.sleep_until(deadline).await;
                Err(EtcdError::LeaderTransferTimedOut.into())
            }
            Err(err) => Err(err.into()),
        }
    }

    async fn downgrade(
        &self,
        request: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        let action = DowngradeAction::try_from(request.get_ref().action);
        let response = serve(&self.member, request, |core, req, _| {
            match action {
                Ok(DowngradeAction::Validate) => {
                    core.validate_downgrade(&req.version)?;
                }
                Ok(DowngradeAction::Enable) => {
                    core.enable_downgrade(&req.version)?;
                    core.record_raft_entry();
                }
                Ok(DowngradeAction::Cancel) => {
                    core.cancel_downgrade()?;
                    core.record_raft_entry();
                }
                Err(_) => return Err(EtcdError::UnknownMethod),
            }
            Ok(Applied::response(DowngradeResponse {
                header: None,
                version: crate::core::cluster_version(),
            }))
        })
        .await?;
        if action == Ok(DowngradeAction::Validate) {
            return Ok(response);
        }
        // etcd 3.5 applies ENABLE and CANCEL but never wakes the request
        // that proposed them: it times out, on the member's clock.
        let deadline = self.member.shared.clock.now() + REQUEST_TIMEOUT;
        self.member.shared.clock.sleep_until(deadline).await;
        Err(EtcdError::RequestTimedOut.into())
    }
}
