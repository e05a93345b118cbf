//! The gRPC receive limit, reported as etcd reports it.
//!
//! etcd (grpc-go) refuses a message over 2 MiB with `ResourceExhausted` and
//! "grpc: received message larger than max (N vs. 2097152)". tonic enforces
//! the same limit but says it with `OutOfRange` and words of its own. This
//! layer rewrites that one status in responses into grpc-go's form, so clients
//! that match on the code or text see what they would see from etcd.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderValue, Request, Response};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use tower::{Layer, Service};

pub(crate) use crate::limits::MAX_RECV_BYTES;

const TONIC_PREFIX: &str = "Error, decoded message length too large: found ";

/// Rewrites tonic's "message too large" status as grpc-go's.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GrpcGoLimitErrors;

impl<S> Layer<S> for GrpcGoLimitErrors {
    type Service = RewriteLimitErrors<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RewriteLimitErrors { inner }
    }
}

/// The service [`GrpcGoLimitErrors`] wraps around the gRPC services.
#[derive(Debug, Clone)]
pub(crate) struct RewriteLimitErrors<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for RewriteLimitErrors<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Rewritten<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        Rewritten {
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    /// The answer of [`RewriteLimitErrors`]: the inner one, its headers
    /// rewritten when it is ready (with no allocation of its own).
    pub(crate) struct Rewritten<F> {
        #[pin]
        inner: F,
    }
}

impl<F, R, E> Future for Rewritten<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut response = std::task::ready!(self.project().inner.poll(cx))?;
        rewrite(response.headers_mut());
        Poll::Ready(Ok(response))
    }
}

/// Rewrites a trailers-only response carrying tonic's limit error.
fn rewrite(headers: &mut HeaderMap) {
    const OUT_OF_RANGE: &str = "11";
    const RESOURCE_EXHAUSTED: &str = "8";
    if headers.get("grpc-status").is_none_or(|s| s != OUT_OF_RANGE) {
        return;
    }
    let Some(found) = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode)
        .and_then(|m| {
            m.strip_prefix(TONIC_PREFIX)
                .map(|rest| rest.split(' ').next().unwrap_or("").to_owned())
        })
    else {
        return;
    };
    let message = format!("grpc: received message larger than max ({found} vs. {MAX_RECV_BYTES})");
    headers.insert("grpc-status", HeaderValue::from_static(RESOURCE_EXHAUSTED));
    if let Ok(value) = HeaderValue::from_str(&percent_encode(&message)) {
        headers.insert("grpc-message", value);
    }
}

/// gRPC percent-encodes status messages (spaces and printable ASCII stay).
const GRPC_MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, GRPC_MESSAGE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonic_limit_status_becomes_grpc_gos() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("11"));
        let tonic = "Error, decoded message length too large: found 3000000 bytes, the limit is: 2097152 bytes";
        headers.insert(
            "grpc-message",
            HeaderValue::from_str(&percent_encode(tonic)).unwrap(),
        );
        rewrite(&mut headers);
        assert_eq!(headers["grpc-status"], "8");
        assert_eq!(
            percent_decode(headers["grpc-message"].to_str().unwrap()),
            "grpc: received message larger than max (3000000 vs. 2097152)"
        );
    }

    #[test]
    fn other_statuses_are_left_alone() {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("11"));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static("etcdserver: mvcc: required revision is a future revision"),
        );
        let before = headers.clone();
        rewrite(&mut headers);
        assert_eq!(headers, before);
    }
}
