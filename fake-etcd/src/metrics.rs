//! `GET /metrics` on the client port, as etcd serves it beside gRPC: the
//! Prometheus text format, with go-grpc-prometheus's
//! `grpc_server_started_total` and `grpc_server_handled_total` counters per
//! service, method and status code. Clients' test suites read these to
//! count calls (how many times a client logged in, say).
//!
//! A layer in front of the member's client services answers `/metrics`
//! itself and counts every other request: started when it arrives, handled
//! with the status its response ends with (its trailers, or its headers
//! for an immediate error; a stream the client drops counts as
//! `Canceled`). The member's own client (Lock, Election) is not counted,
//! as etcd's in-process client bypasses the gRPC server.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use tower::{Layer, Service};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One RPC as the counters label it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Method {
    service: String,
    method: String,
}

impl Method {
    /// `/etcdserverpb.KV/Range` → `etcdserverpb.KV`, `Range`.
    fn of(path: &str) -> Option<Self> {
        let (service, method) = path.strip_prefix('/')?.split_once('/')?;
        Some(Self {
            service: service.to_owned(),
            method: method.to_owned(),
        })
    }

    /// go-grpc-prometheus's `grpc_type`.
    fn kind(&self) -> &'static str {
        match self.method.as_str() {
            "Watch" | "LeaseKeepAlive" => "bidi_stream",
            "Snapshot" | "Observe" => "server_stream",
            _ => "unary",
        }
    }
}

/// The counters of one member.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    started: Mutex<BTreeMap<Method, u64>>,
    handled: Mutex<BTreeMap<(Method, &'static str), u64>>,
}

impl Metrics {
    fn start(&self, method: &Method) {
        *lock(&self.started).entry(method.clone()).or_default() += 1;
    }

    fn handled(&self, method: Method, code: &'static str) {
        *lock(&self.handled).entry((method, code)).or_default() += 1;
    }

    /// The Prometheus text exposition of every counter.
    pub(crate) fn render(&self) -> String {
        let labels = |m: &Method| {
            format!(
                "grpc_method=\"{}\",grpc_service=\"{}\",grpc_type=\"{}\"",
                m.method,
                m.service,
                m.kind()
            )
        };
        let mut text = String::from(
            "# HELP grpc_server_handled_total Total number of RPCs completed on the server, regardless of success or failure.\n\
             # TYPE grpc_server_handled_total counter\n",
        );
        for ((method, code), count) in lock(&self.handled).iter() {
            text.push_str(&format!(
                "grpc_server_handled_total{{grpc_code=\"{code}\",{}}} {count}\n",
                labels(method)
            ));
        }
        text.push_str(
            "# HELP grpc_server_started_total Total number of RPCs started on the server.\n\
             # TYPE grpc_server_started_total counter\n",
        );
        for (method, count) in lock(&self.started).iter() {
            text.push_str(&format!(
                "grpc_server_started_total{{{}}} {count}\n",
                labels(method)
            ));
        }
        text
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// grpc-go's name of a status code, from its number.
fn code_name(code: &[u8]) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    std::str::from_utf8(code)
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .and_then(|c| NAMES.get(c).copied())
        .unwrap_or("Unknown")
}

fn status_of(headers: &HeaderMap) -> Option<&'static str> {
    headers.get("grpc-status").map(|s| code_name(s.as_bytes()))
}

/// Serves `/metrics` and counts the calls it lets through.
#[derive(Debug, Clone)]
pub(crate) struct ServeMetrics {
    pub(crate) metrics: Arc<Metrics>,
}

impl<S> Layer<S> for ServeMetrics {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Counted {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// The services behind [`ServeMetrics`].
#[derive(Debug, Clone)]
pub(crate) struct Counted<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> Service<Request<B>> for Counted<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Body<Data = Bytes> + Send + 'static,
    R::Error: Into<BoxError>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if request.uri().path() == "/metrics" {
            let text = self.metrics.render();
            return Box::pin(async move {
                let mut response = Response::new(tonic::body::Body::new(
                    http_body_util::Full::new(Bytes::from(text)),
                ));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                Ok(response)
            });
        }
        let method = Method::of(request.uri().path());
        if let Some(method) = &method {
            self.metrics.start(method);
        }
        let metrics = Arc::clone(&self.metrics);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let Some(method) = method else {
                return Ok(response.map(tonic::body::Body::new));
            };
            // An immediate error carries its status in the headers.
            if let Some(code) = status_of(response.headers()) {
                metrics.handled(method, code);
                return Ok(response.map(tonic::body::Body::new));
            }
            Ok(response.map(|body| {
                tonic::body::Body::new(CountOnEnd {
                    body: Box::pin(body),
                    pending: Some((metrics, method)),
                })
            }))
        })
    }
}

/// A response body that counts its call as handled when its trailers say
/// how it ended, or as canceled if it is dropped first.
struct CountOnEnd<R> {
    body: Pin<Box<R>>,
    pending: Option<(Arc<Metrics>, Method)>,
}

impl<R> CountOnEnd<R> {
    fn finish(&mut self, code: &'static str) {
        if let Some((metrics, method)) = self.pending.take() {
            metrics.handled(method, code);
        }
    }
}

impl<R> Drop for CountOnEnd<R> {
    fn drop(&mut self) {
        self.finish("Canceled");
    }
}

impl<R: Body<Data = Bytes>> Body for CountOnEnd<R> {
    type Data = Bytes;
    type Error = R::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = self.body.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_of) {
                    self.finish(code);
                }
            }
            Poll::Ready(None) => self.finish("OK"),
            Poll::Ready(Some(Err(_))) => self.finish("Unknown"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_go_grpc_prometheus_writes_them() {
        let metrics = Metrics::default();
        let login = Method::of("/etcdserverpb.Auth/Authenticate").unwrap();
        metrics.start(&login);
        metrics.handled(login, code_name(b"0"));
        let watch = Method::of("/etcdserverpb.Watch/Watch").unwrap();
        metrics.handled(watch, code_name(b"1"));
        let text = metrics.render();
        assert!(text.contains(
            "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Authenticate\",grpc_service=\"etcdserverpb.Auth\",grpc_type=\"unary\"} 1\n"
        ));
        assert!(text.contains("grpc_code=\"Canceled\",grpc_method=\"Watch\",grpc_service=\"etcdserverpb.Watch\",grpc_type=\"bidi_stream\"} 1\n"));
        assert!(text.contains("grpc_server_started_total{grpc_method=\"Authenticate\""));
    }
}
