//! The control API: the handle's controls over HTTP, for tests in any
//! language driving the `fake-etcd` binary.
//!
//! Plain HTTP/1.1 on its own loopback port; parameters in the query string;
//! answers in JSON. Every call answers `200` with `{"ok":true,...}` or an
//! error status with `{"ok":false,"error":"..."}`.
//!
//! | call | does |
//! |---|---|
//! | `GET /v1/status` | revision, raft term, elapsed time, time source, seed |
//! | `GET /v1/leases` | every lease: id, granted TTL, ms left, keys |
//! | `POST /v1/advance?by=30s` | advance virtual time (`500ms`, `1.5s`, `2m`, `1h`) |
//! | `POST /v1/expire-lease?id=N` | expire a lease now (decimal, or hex with `0x`) |
//! | `POST /v1/drop-connections` | break every client connection |
//! | `POST /v1/pause`, `POST /v1/resume` | partition and heal |
//! | `POST /v1/restart` | restart on the same port with the same data |
//! | `POST /v1/compact?revision=N` | compact (at the current revision without `revision`) |
//! | `POST /v1/fail?rpc=Put&code=unavailable&message=...&count=N` | fail the next N calls (`probability=0.3` for random, neither for always) |
//! | `POST /v1/delay?rpc=Range&by=200ms` | add latency |
//! | `POST /v1/clear-faults` | remove injected errors and delays |
//! | `POST /v1/stall-watches`, `POST /v1/unstall-watches` | hold watch responses |
//! | `POST /v1/end-watch-streams?code=&message=` | end every watch stream with an error |
//! | `POST /v1/end-keepalive-streams?code=&message=` | end every keepalive stream with an error |
//! | `POST /v1/no-space`, `POST /v1/disarm-no-space` | raise or clear NOSPACE |
//! | `POST /v1/change-leader` | a leader election |
//!
//! `rpc` takes `Put`, `KV/Put` or `any`; `code` a gRPC code name
//! (`unavailable`) or number; `message` defaults to etcd's text for
//! `unavailable` ("etcdserver: request timed out").

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tonic::{Code, Status};

use crate::{FakeEtcd, Rpc, TimeSource};

/// Serves the control API for `etcd` on `listener` until `etcd`'s last
/// other handle is gone and the listener fails, or the task is dropped.
///
/// # Errors
///
/// If accepting connections fails.
pub async fn serve(etcd: Arc<FakeEtcd>, listener: TcpListener) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let etcd = Arc::clone(&etcd);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let etcd = Arc::clone(&etcd);
                async move { Ok::<_, Infallible>(handle(&etcd, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(etcd: &FakeEtcd, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .map(|q| {
            q.split('&')
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    let decode = |s: &str| {
                        percent_encoding::percent_decode_str(&s.replace('+', " "))
                            .decode_utf8_lossy()
                            .into_owned()
                    };
                    (decode(k), decode(v))
                })
                .collect()
        })
        .unwrap_or_default();
    let result = dispatch(etcd, request.method(), request.uri().path(), &query).await;
    let (status, body) = match result {
        Ok(mut value) => {
            if let Value::Object(map) = &mut value {
                map.insert("ok".into(), Value::Bool(true));
            }
            (StatusCode::OK, value)
        }
        Err((status, error)) => (status, json!({ "ok": false, "error": error })),
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string() + "\n")))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

type Answer = Result<Value, (StatusCode, String)>;

fn bad(message: impl Into<String>) -> (StatusCode, String) {
    (StatusCode::BAD_REQUEST, message.into())
}

fn param<'q>(
    query: &'q HashMap<String, String>,
    name: &str,
) -> Result<&'q str, (StatusCode, String)> {
    query
        .get(name)
        .map(String::as_str)
        .ok_or_else(|| bad(format!("missing parameter `{name}`")))
}

async fn dispatch(
    etcd: &FakeEtcd,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
) -> Answer {
    let done = || Ok(json!({}));
    match (method.as_str(), path) {
        ("GET", "/v1/status") => Ok(json!({
            "revision": etcd.revision(),
            "raft_term": etcd.raft_term(),
            "elapsed_ms": etcd.elapsed().as_millis() as u64,
            "time": format!("{:?}", etcd.time_source()).to_lowercase(),
            "seed": etcd.seed(),
            "endpoint": etcd.endpoint(),
        })),
        ("GET", "/v1/leases") => Ok(json!({
            "leases": etcd.leases().iter().map(|l| json!({
                "id": l.id,
                "granted_ttl": l.granted_ttl,
                "remaining_ms": l.remaining.as_millis() as u64,
                "keys": l.keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>()
        })),
        ("POST", "/v1/advance") => {
            let by = parse_duration(param(query, "by")?)
                .ok_or_else(|| bad("`by` is not a duration like 30s or 500ms"))?;
            if etcd.time_source() == TimeSource::Real {
                return Err((
                    StatusCode::CONFLICT,
                    "time is real here; start the fake with --time virtual".into(),
                ));
            }
            etcd.advance(by).await;
            Ok(
                json!({ "elapsed_ms": etcd.elapsed().as_millis() as u64, "revision": etcd.revision() }),
            )
        }
        ("POST", "/v1/expire-lease") => {
            let raw = param(query, "id")?;
            let id = match raw.strip_prefix("0x") {
                Some(hex) => i64::from_str_radix(hex, 16).ok(),
                None => raw.parse().ok(),
            }
            .ok_or_else(|| bad("`id` is not a lease ID"))?;
            match etcd.expire_lease(id) {
                Ok(()) => done(),
                Err(err) => Err((StatusCode::NOT_FOUND, err.to_string())),
            }
        }
        ("POST", "/v1/drop-connections") => {
            etcd.drop_connections();
            done()
        }
        ("POST", "/v1/pause") => {
            etcd.pause();
            done()
        }
        ("POST", "/v1/resume") => {
            etcd.resume();
            done()
        }
        ("POST", "/v1/restart") => {
            etcd.restart()
                .await
                .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
            Ok(json!({ "raft_term": etcd.raft_term() }))
        }
        ("POST", "/v1/compact") => {
            let revision = match query.get("revision") {
                Some(r) => r.parse().map_err(|_| bad("`revision` is not a number"))?,
                None => etcd.revision(),
            };
            match etcd.compact(revision) {
                Ok(()) => Ok(json!({ "revision": revision })),
                Err(err) => Err(bad(format!("etcd refuses to compact: {err}"))),
            }
        }
        ("POST", "/v1/fail") => {
            let rpc = parse_rpc(query)?;
            let status = parse_status(query)?;
            match (query.get("count"), query.get("probability")) {
                (Some(n), _) => etcd.fail_next(
                    rpc,
                    n.parse().map_err(|_| bad("`count` is not a number"))?,
                    status,
                ),
                (None, Some(p)) => etcd.fail_randomly(
                    rpc,
                    p.parse()
                        .map_err(|_| bad("`probability` is not a number"))?,
                    status,
                ),
                (None, None) => etcd.fail_always(rpc, status),
            }
            done()
        }
        ("POST", "/v1/delay") => {
            let rpc = parse_rpc(query)?;
            let by =
                parse_duration(param(query, "by")?).ok_or_else(|| bad("`by` is not a duration"))?;
            etcd.delay(rpc, by);
            done()
        }
        ("POST", "/v1/clear-faults") => {
            etcd.clear_faults();
            done()
        }
        ("POST", "/v1/stall-watches") => {
            etcd.stall_watches();
            done()
        }
        ("POST", "/v1/unstall-watches") => {
            etcd.unstall_watches();
            done()
        }
        ("POST", "/v1/end-watch-streams") => {
            etcd.end_watch_streams(parse_status(query)?);
            done()
        }
        ("POST", "/v1/end-keepalive-streams") => {
            etcd.end_keepalive_streams(parse_status(query)?);
            done()
        }
        ("POST", "/v1/no-space") => {
            etcd.raise_no_space();
            done()
        }
        ("POST", "/v1/disarm-no-space") => {
            etcd.disarm_no_space();
            done()
        }
        ("POST", "/v1/change-leader") => {
            etcd.change_leader();
            Ok(json!({ "raft_term": etcd.raft_term() }))
        }
        _ => Err((
            StatusCode::NOT_FOUND,
            format!("no such control: {method} {path}"),
        )),
    }
}

fn parse_rpc(query: &HashMap<String, String>) -> Result<Rpc, (StatusCode, String)> {
    let name = query.get("rpc").map_or("any", String::as_str);
    Rpc::parse(name).ok_or_else(|| bad(format!("unknown rpc `{name}`")))
}

fn parse_status(query: &HashMap<String, String>) -> Result<Status, (StatusCode, String)> {
    let code = match query.get("code") {
        None => Code::Unavailable,
        Some(name) => parse_code(name).ok_or_else(|| bad(format!("unknown gRPC code `{name}`")))?,
    };
    let message = match query.get("message") {
        Some(m) => m.clone(),
        None if code == Code::Unavailable => {
            crate::errors::request_timed_out().message().to_owned()
        }
        None => String::new(),
    };
    Ok(Status::new(code, message))
}

fn parse_code(name: &str) -> Option<Code> {
    if let Ok(n) = name.parse::<i32>() {
        return (0..=16).contains(&n).then(|| Code::from_i32(n));
    }
    let wanted = name.to_ascii_lowercase().replace(['_', '-'], "");
    (0..=16)
        .map(Code::from_i32)
        .find(|c| format!("{c:?}").to_ascii_lowercase() == wanted)
}

/// Parses a duration as the control API and the binary's flags take it:
/// `500ms`, `30s`, `1.5s`, `2m`, `1h`, `250us`.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(fake_etcd::control::parse_duration("1.5s"), Some(Duration::from_millis(1500)));
/// assert_eq!(fake_etcd::control::parse_duration("30"), None);
/// ```
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "us" | "µs" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_codes_and_rpcs_parse() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Some(Duration::from_micros(250)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("30"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_code("unavailable"), Some(Code::Unavailable));
        assert_eq!(
            parse_code("RESOURCE_EXHAUSTED"),
            Some(Code::ResourceExhausted)
        );
        assert_eq!(parse_code("14"), Some(Code::Unavailable));
        assert_eq!(parse_code("nope"), None);
    }
}
