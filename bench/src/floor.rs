//! The floor: a tonic server whose KV handlers return empty responses, the
//! cost of a gRPC round trip and nothing else (and, for the benchmark's
//! large ranges, a canned response as large as the fake's).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use etcd_proto::etcdserverpb::kv_server::{Kv, KvServer};
use etcd_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, ResponseHeader, TxnRequest, TxnResponse,
};
use etcd_proto::mvccpb::KeyValue;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

/// KV handlers that do nothing, but for ranges the benchmark loads.
#[derive(Default)]
struct Empty {
    canned: Mutex<HashMap<usize, RangeResponse>>,
}

/// The size of a range the benchmark loads, from its prefix
/// (`.../range<N>/`).
fn loaded_size(key: &[u8]) -> Option<usize> {
    let key = std::str::from_utf8(key).ok()?;
    let (_, tail) = key.rsplit_once("/range")?;
    tail.strip_suffix('/')?.parse().ok()
}

#[tonic::async_trait]
impl Kv for Empty {
    /// Empty, except for the benchmark's large ranges: those get a canned
    /// response of the same size and shape as the fake's (built once), so
    /// the floor shows what encoding, moving and decoding that many keys
    /// costs, whatever the server.
    async fn range(
        &self,
        request: Request<RangeRequest>,
    ) -> Result<Response<RangeResponse>, Status> {
        let request = request.into_inner();
        let Some(size) = loaded_size(&request.key) else {
            return Ok(Response::new(RangeResponse::default()));
        };
        let mut canned = self.canned.lock().unwrap_or_else(|p| p.into_inner());
        let response = canned.entry(size).or_insert_with(|| RangeResponse {
            header: Some(ResponseHeader::default()),
            count: size as i64,
            more: false,
            kvs: (0..size)
                .map(|i| KeyValue {
                    key: [&request.key[..], format!("{i:07}").as_bytes()]
                        .concat()
                        .into(),
                    value: crate::workloads::VALUE.as_bytes().to_vec().into(),
                    create_revision: 1_000_000 + i as i64,
                    mod_revision: 1_000_000 + i as i64,
                    version: 1,
                    lease: 0,
                })
                .collect(),
        });
        Ok(Response::new(response.clone()))
    }
    async fn put(&self, _: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        Ok(Response::new(PutResponse::default()))
    }
    async fn delete_range(
        &self,
        _: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        Ok(Response::new(DeleteRangeResponse::default()))
    }
    async fn txn(&self, _: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        Ok(Response::new(TxnResponse::default()))
    }
    async fn compact(
        &self,
        _: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        Ok(Response::new(CompactionResponse::default()))
    }
}

/// How big an in-process pipe's buffer is each way: as the fake's.
const PIPE_BUFFER: usize = 256 * 1024;

/// Serves the floor over in-memory pipes, as the fake's in-process channel
/// does: the floor of every ratio of `fake (in-memory)`.
pub(crate) fn start_in_memory() -> tonic::transport::Channel {
    let (connections, incoming) = tokio::sync::mpsc::unbounded_channel();
    let incoming = tokio_stream::wrappers::UnboundedReceiverStream::new(incoming)
        .map(Ok::<tokio::io::DuplexStream, std::io::Error>);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KvServer::new(Empty::default()))
            .serve_with_incoming(incoming),
    );
    let connector = tower::service_fn(move |_: http::Uri| {
        let (client, server) = tokio::io::duplex(PIPE_BUFFER);
        let sent = connections
            .send(server)
            .map_err(|_| std::io::Error::other("the in-process floor stopped"));
        std::future::ready(sent.map(|()| hyper_util::rt::TokioIo::new(client)))
    });
    tonic::transport::Endpoint::from_static("http://floor.in-process")
        .connect_with_connector_lazy(connector)
}

/// Serves the floor on a free loopback port, with Nagle off as the fake has.
pub(crate) async fn start() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // `Server::tcp_nodelay` applies only to listeners tonic binds itself.
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|stream| {
        let stream = stream?;
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(stream)
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KvServer::new(Empty::default()))
            .serve_with_incoming(incoming),
    );
    Ok(addr)
}
