//! The Watch service on the wire: its one method served here rather than
//! by the generated `WatchServer`, whose codec only takes messages, so
//! that a stream's responses can go out as [`WatchFrame`]s, shared parts
//! encoded once for many watchers (see the `frame` module of `watch`).
//! Requests decode as they would with the generated server, with the same
//! size limit; a call to any other method of the service is answered
//! `Unimplemented`, as the generated server answers it.

use std::convert::Infallible;
use std::sync::Arc;

use etcd_proto::etcdserverpb::WatchRequest;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::{http, Body, BoxFuture, Context, Poll, Service, StdError};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic::{Status, Streaming};
use tonic_prost::ProstDecoder;

use super::watch::{Responses, WatchService};
use crate::watch::WatchFrame;

/// `etcdserverpb.Watch`, as the router takes it.
#[derive(Debug, Clone)]
pub(crate) struct WatchServer {
    service: Arc<WatchService>,
    max_decoding_message_size: usize,
}

impl WatchServer {
    /// Serves `service`, refusing requests larger than
    /// `max_decoding_message_size` as the generated servers do.
    pub(crate) fn new(service: WatchService, max_decoding_message_size: usize) -> Self {
        Self {
            service: Arc::new(service),
            max_decoding_message_size,
        }
    }
}

impl NamedService for WatchServer {
    const NAME: &'static str = "etcdserverpb.Watch";
}

impl<B> Service<http::Request<B>> for WatchServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != "/etcdserverpb.Watch/Watch" {
            return Box::pin(async { Ok(unimplemented()) });
        }
        let method = WatchMethod(Arc::clone(&self.service));
        let limit = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc = Grpc::new(WatchCodec).apply_max_message_size_config(Some(limit), None);
            Ok(grpc.streaming(method, request).await)
        })
    }
}

/// What the generated servers answer for a method they do not have.
fn unimplemented() -> http::Response<tonic::body::Body> {
    let mut response = http::Response::new(tonic::body::Body::default());
    let headers = response.headers_mut();
    headers.insert(
        Status::GRPC_STATUS,
        (tonic::Code::Unimplemented as i32).into(),
    );
    headers.insert(
        http::header::CONTENT_TYPE,
        tonic::metadata::GRPC_CONTENT_TYPE,
    );
    response
}

/// The `Watch` method.
struct WatchMethod(Arc<WatchService>);

impl StreamingService<WatchRequest> for WatchMethod {
    type Response = WatchFrame;
    type ResponseStream = Responses;
    type Future = BoxFuture<tonic::Response<Responses>, Status>;

    fn call(&mut self, request: tonic::Request<Streaming<WatchRequest>>) -> Self::Future {
        let service = Arc::clone(&self.0);
        Box::pin(async move { service.watch(request).await })
    }
}

/// Decodes requests with prost, and writes frames.
#[derive(Debug, Clone, Copy, Default)]
struct WatchCodec;

impl Codec for WatchCodec {
    type Encode = WatchFrame;
    type Decode = WatchRequest;
    type Encoder = FrameEncoder;
    type Decoder = ProstDecoder<WatchRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        FrameEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

#[derive(Debug)]
struct FrameEncoder;

impl Encoder for FrameEncoder {
    type Item = WatchFrame;
    type Error = Status;

    fn encode(&mut self, frame: WatchFrame, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        frame
            .encode(buf)
            .map_err(|err| Status::internal(err.to_string()))
    }
}
