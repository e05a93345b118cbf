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

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use tower::{Layer, Service};

use crate::error::go_code_name;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// go-grpc-prometheus's `grpc_type` of an RPC, by its method's name.
fn kind(method: &str) -> &'static str {
    match method {
        "Watch" | "LeaseKeepAlive" => "bidi_stream",
        "Snapshot" | "Observe" => "server_stream",
        _ => "unary",
    }
}

/// The calls of one RPC.
#[derive(Debug, Default)]
struct Calls {
    started: u64,
    handled: BTreeMap<&'static str, u64>,
}

/// The counters of one member, by gRPC path (`/etcdserverpb.KV/Range`).
/// A call looks its path up without allocating, and keeps the shared key
/// to count its end.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    calls: Mutex<HashMap<Arc<str>, Calls>>,
}

impl Metrics {
    /// Counts a call started on `path`; the key to count its end with.
    fn start(&self, path: &str) -> Arc<str> {
        let mut calls = lock(&self.calls);
        let key = match calls.get_key_value(path) {
            Some((key, _)) => Arc::clone(key),
            None => {
                let key: Arc<str> = Arc::from(path);
                calls.insert(Arc::clone(&key), Calls::default());
                key
            }
        };
        if let Some(calls) = calls.get_mut(&key) {
            calls.started += 1;
        }
        key
    }

    fn handled(&self, path: &Arc<str>, code: &'static str) {
        if let Some(calls) = lock(&self.calls).get_mut(path) {
            *calls.handled.entry(code).or_default() += 1;
        }
    }

    /// The Prometheus text exposition of every counter, sorted.
    pub(crate) fn render(&self) -> String {
        let calls = lock(&self.calls);
        let mut by_name: Vec<(&str, &str, &Calls)> = calls
            .iter()
            .filter_map(|(path, calls)| {
                let (service, method) = path.strip_prefix('/')?.split_once('/')?;
                Some((service, method, calls))
            })
            .collect();
        by_name.sort_by(|a, b| (a.1, a.0).cmp(&(b.1, b.0)));
        let labels = |service: &str, method: &str| {
            format!(
                "grpc_method=\"{method}\",grpc_service=\"{service}\",grpc_type=\"{}\"",
                kind(method)
            )
        };
        let mut text = String::from(
            "# HELP grpc_server_handled_total Total number of RPCs completed on the server, regardless of success or failure.\n\
             # TYPE grpc_server_handled_total counter\n",
        );
        for (service, method, calls) in &by_name {
            for (code, count) in &calls.handled {
                text.push_str(&format!(
                    "grpc_server_handled_total{{grpc_code=\"{code}\",{}}} {count}\n",
                    labels(service, method)
                ));
            }
        }
        text.push_str(
            "# HELP grpc_server_started_total Total number of RPCs started on the server.\n\
             # TYPE grpc_server_started_total counter\n",
        );
        for (service, method, calls) in &by_name {
            text.push_str(&format!(
                "grpc_server_started_total{{{}}} {}\n",
                labels(service, method),
                calls.started
            ));
        }
        text
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The status code in a `grpc-status` header or trailer, by grpc-go's name.
fn status_of(headers: &HeaderMap) -> Option<&'static str> {
    let code = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    Some(go_code_name(tonic::Code::from_i32(code)))
}

/// Whether `path` names an RPC: `/package.Service/Method`.
fn is_rpc(path: &str) -> bool {
    path.strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .is_some_and(|(service, method)| !service.is_empty() && !method.is_empty())
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
    R: Body<Data = Bytes> + Send + Unpin + 'static,
    R::Error: Into<BoxError>,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = CountedCall<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if request.uri().path() == "/metrics" {
            let mut page = Response::new(tonic::body::Body::new(http_body_util::Full::new(
                Bytes::from(self.metrics.render()),
            )));
            page.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            return CountedCall::Page { page: Some(page) };
        }
        let path = request.uri().path();
        let pending = is_rpc(path).then(|| (Arc::clone(&self.metrics), self.metrics.start(path)));
        CountedCall::Call {
            inner: self.inner.call(request),
            pending,
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`Counted`]: the metrics page, or the inner service's
    /// answer with its body counted on its end. No allocation of its own
    /// beyond tonic's body box.
    #[project = CountedCallProjection]
    pub(crate) enum CountedCall<F> {
        Page { page: Option<Response<tonic::body::Body>> },
        Call {
            #[pin]
            inner: F,
            // The counters, and the call's key in them; `None` for a path
            // that names no RPC.
            pending: Option<(Arc<Metrics>, Arc<str>)>,
        },
    }
}

impl<F, R, E> Future for CountedCall<F>
where
    F: Future<Output = Result<Response<R>, E>>,
    R: Body<Data = Bytes> + Send + Unpin + 'static,
    R::Error: Into<BoxError>,
{
    type Output = Result<Response<tonic::body::Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (inner, pending) = match self.project() {
            CountedCallProjection::Page { page } => {
                return Poll::Ready(Ok(page.take().expect("polled after it was ready")));
            }
            CountedCallProjection::Call { inner, pending } => (inner, pending),
        };
        let response = std::task::ready!(inner.poll(cx))?;
        let Some((metrics, method)) = pending.take() else {
            return Poll::Ready(Ok(response.map(tonic::body::Body::new)));
        };
        // An immediate error carries its status in the headers.
        if let Some(code) = status_of(response.headers()) {
            metrics.handled(&method, code);
            return Poll::Ready(Ok(response.map(tonic::body::Body::new)));
        }
        Poll::Ready(Ok(response.map(|body| {
            tonic::body::Body::new(CountOnEnd {
                body,
                pending: Some((metrics, method)),
            })
        })))
    }
}

/// A response body that counts its call as handled when its trailers say
/// how it ended, or as canceled if it is dropped first.
struct CountOnEnd<R> {
    body: R,
    pending: Option<(Arc<Metrics>, Arc<str>)>,
}

impl<R> CountOnEnd<R> {
    fn finish(&mut self, code: &'static str) {
        if let Some((metrics, method)) = self.pending.take() {
            metrics.handled(&method, code);
        }
    }
}

impl<R> Drop for CountOnEnd<R> {
    fn drop(&mut self) {
        self.finish("Canceled");
    }
}

impl<R: Body<Data = Bytes> + Unpin> Body for CountOnEnd<R> {
    type Data = Bytes;
    type Error = R::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
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
        let login = metrics.start("/etcdserverpb.Auth/Authenticate");
        metrics.handled(&login, go_code_name(tonic::Code::Ok));
        let watch = metrics.start("/etcdserverpb.Watch/Watch");
        metrics.handled(&watch, go_code_name(tonic::Code::Cancelled));
        let text = metrics.render();
        assert!(text.contains(
            "grpc_server_handled_total{grpc_code=\"OK\",grpc_method=\"Authenticate\",grpc_service=\"etcdserverpb.Auth\",grpc_type=\"unary\"} 1\n"
        ));
        assert!(text.contains("grpc_code=\"Canceled\",grpc_method=\"Watch\",grpc_service=\"etcdserverpb.Watch\",grpc_type=\"bidi_stream\"} 1\n"));
        assert!(text.contains("grpc_server_started_total{grpc_method=\"Authenticate\""));
    }
}
