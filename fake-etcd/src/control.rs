//! The control API: the handle's controls over HTTP, for tests in any
//! language driving the `fake-etcd` binary.
//!
//! Plain HTTP/1.1 on its own loopback port; parameters in the query string;
//! answers in JSON. Every call answers `200` with `{"ok":true,...}` or an
//! error status with `{"ok":false,"error":"..."}`.
//!
//! | call | does |
//! |---|---|
//! | `GET /v1/status` | revision, raft term, elapsed time, time source, seed, pause and stall state, active faults |
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
//! | `GET /v1/auth` | auth enabled, auth revision, users, roles and permissions, live tokens |
//! | `POST /v1/expire-auth-tokens?user=NAME` | expire that user's simple tokens now (every user's without `user`) |
//! | `GET /v1/members` | every member: ID (hex, as etcdctl prints it), name, endpoint, state, leader, learner |
//! | `POST /v1/stop-member?id=HEX`, `start-member`, `pause-member`, `resume-member`, `isolate-member`, `heal-member` | one member's faults |
//! | `POST /v1/start-added-member?id=HEX&name=NAME` | start a member added by `member add` |
//! | `POST /v1/move-leader?to=HEX` | move leadership, as `etcdctl move-leader` |
//!
//! `rpc` takes `Put`, `KV/Put` or `any`; `code` a gRPC code name
//! (`unavailable`) or number; `message` defaults to etcd's text for
//! `unavailable` ("etcdserver: request timed out").
//!
//! Every call is checked against [`CONTROLS`] before it runs: an unknown
//! control, a wrong method, an unknown parameter (a typo such as `cuont=2`
//! would otherwise turn "fail twice" into "fail always") or a value out of
//! range is refused with a one-line error that names the valid choices.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

pub use crate::duration::parse_duration;
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
    let result = match parse_query(request.uri().query()) {
        Err(refused) => Err(refused),
        Ok(query) => match check_call(request.method(), request.uri().path(), &query) {
            Ok(()) => dispatch(etcd, request.method(), request.uri().path(), &query).await,
            Err(refused) => Err(refused),
        },
    };
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

/// The query's parameters, decoded. Empty pairs (a trailing `&`) are
/// nothing; a parameter given twice is refused, since only one of its
/// values could count.
fn parse_query(query: Option<&str>) -> Result<HashMap<String, String>, (StatusCode, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    let mut parameters = HashMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(key);
        if parameters.insert(key.clone(), decode(value)).is_some() {
            return Err(bad(format!(
                "parameter `{key}` is given twice: give it once"
            )));
        }
    }
    Ok(parameters)
}

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

/// One parameter of a control.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// Its name in the query string.
    pub name: &'static str,
    /// What it takes.
    pub help: &'static str,
}

/// One control of the API.
#[derive(Debug, Clone, Copy)]
pub struct Control {
    /// Its name: the path is `/v1/<name>`.
    pub name: &'static str,
    /// `GET` for reads, `POST` for everything that changes something.
    pub method: &'static str,
    /// Its parameters.
    pub params: &'static [Param],
    /// The parameter `fake-etcd ctl` fills with a bare value
    /// (`ctl advance 30s` is `advance?by=30s`).
    pub bare: Option<&'static str>,
    /// What it does.
    pub help: &'static str,
}

const RPC: Param = Param {
    name: "rpc",
    help: "the RPC: Put, KV/Put, Range, ... or any (default any)",
};
const CODE: Param = Param {
    name: "code",
    help: "a gRPC error code name (unavailable) or number, 1 to 16 (default unavailable)",
};
const MESSAGE: Param = Param {
    name: "message",
    help: "the status message (default etcd's text for unavailable)",
};

/// Every control, with its method and parameters: what the API accepts.
pub const CONTROLS: &[Control] = &[
    Control {
        name: "status",
        method: "GET",
        bare: None,
        params: &[],
        help: "revision, raft term, time, seed, pause and stall state, active faults",
    },
    Control {
        name: "leases",
        method: "GET",
        bare: None,
        params: &[],
        help: "every lease: id, granted TTL, time left, keys",
    },
    Control {
        name: "advance",
        method: "POST",
        bare: Some("by"),
        params: &[Param {
            name: "by",
            help: "a duration: 500ms, 30s, 1.5s, 2m, 1h",
        }],
        help: "advance virtual time, expiring what falls due",
    },
    Control {
        name: "expire-lease",
        method: "POST",
        bare: Some("id"),
        params: &[Param {
            name: "id",
            help: "a lease ID, decimal or 0x-hex",
        }],
        help: "expire a lease now",
    },
    Control {
        name: "drop-connections",
        method: "POST",
        bare: None,
        params: &[],
        help: "break every client connection",
    },
    Control {
        name: "pause",
        method: "POST",
        bare: None,
        params: &[],
        help: "a partition: answer nothing, close nothing",
    },
    Control {
        name: "resume",
        method: "POST",
        bare: None,
        params: &[],
        help: "end a pause",
    },
    Control {
        name: "restart",
        method: "POST",
        bare: None,
        params: &[],
        help: "restart on the same port with the same data",
    },
    Control {
        name: "compact",
        method: "POST",
        bare: Some("revision"),
        params: &[Param {
            name: "revision",
            help: "the revision (default: the current one)",
        }],
        help: "compact the history",
    },
    Control {
        name: "fail",
        method: "POST",
        bare: None,
        params: &[
            RPC,
            CODE,
            MESSAGE,
            Param {
                name: "count",
                help: "fail the next N calls (a whole number)",
            },
            Param {
                name: "probability",
                help: "fail each call with this probability, 0 to 1",
            },
        ],
        help: "inject errors (neither count nor probability: always)",
    },
    Control {
        name: "delay",
        method: "POST",
        bare: Some("by"),
        params: &[
            RPC,
            Param {
                name: "by",
                help: "a duration: 500ms, 30s, ...",
            },
        ],
        help: "add latency",
    },
    Control {
        name: "clear-faults",
        method: "POST",
        bare: None,
        params: &[],
        help: "remove injected errors and delays",
    },
    Control {
        name: "stall-watches",
        method: "POST",
        bare: None,
        params: &[],
        help: "hold watch responses",
    },
    Control {
        name: "unstall-watches",
        method: "POST",
        bare: None,
        params: &[],
        help: "deliver held watch responses",
    },
    Control {
        name: "end-watch-streams",
        method: "POST",
        bare: None,
        params: &[CODE, MESSAGE],
        help: "end every watch stream with an error",
    },
    Control {
        name: "end-keepalive-streams",
        method: "POST",
        bare: None,
        params: &[CODE, MESSAGE],
        help: "end every keepalive stream with an error",
    },
    Control {
        name: "no-space",
        method: "POST",
        bare: None,
        params: &[],
        help: "raise the NOSPACE alarm",
    },
    Control {
        name: "disarm-no-space",
        method: "POST",
        bare: None,
        params: &[],
        help: "clear the NOSPACE alarm",
    },
    Control {
        name: "change-leader",
        method: "POST",
        bare: None,
        params: &[],
        help: "a leader election: term +1, leases renewed",
    },
    Control {
        name: "auth",
        method: "GET",
        bare: None,
        params: &[],
        help: "auth enabled, auth revision, users, roles, permissions, live tokens",
    },
    Control {
        name: "expire-auth-tokens",
        method: "POST",
        bare: Some("user"),
        params: &[Param {
            name: "user",
            help: "whose tokens (every user's if left out)",
        }],
        help: "expire simple tokens now, as their TTL lapsing would",
    },
    Control {
        name: "members",
        method: "GET",
        bare: None,
        params: &[],
        help: "every member: id, name, endpoint, state, leader, learner",
    },
    Control {
        name: "stop-member",
        method: "POST",
        bare: Some("id"),
        params: &[MEMBER_ID],
        help: "stop a member: its connections close, its port refuses",
    },
    Control {
        name: "start-member",
        method: "POST",
        bare: Some("id"),
        params: &[MEMBER_ID],
        help: "start a stopped member again",
    },
    Control {
        name: "pause-member",
        method: "POST",
        bare: Some("id"),
        params: &[MEMBER_ID],
        help: "freeze a member, as SIGSTOP",
    },
    Control {
        name: "resume-member",
        method: "POST",
        bare: Some("id"),
        params: &[MEMBER_ID],
        help: "unfreeze a paused member",
    },
    Control {
        name: "isolate-member",
        method: "POST",
        bare: Some("id"),
        params: &[MEMBER_ID],
        help: "cut a member off from the others (it still serves clients)",
    },
    Control {
        name: "heal-member",
        method: "POST",
        bare: Some("id"),
        params: &[MEMBER_ID],
        help: "reconnect an isolated member",
    },
    Control {
        name: "start-added-member",
        method: "POST",
        bare: Some("id"),
        params: &[
            MEMBER_ID,
            Param {
                name: "name",
                help: "its name, as etcd's --name",
            },
        ],
        help: "start a member added by `member add`",
    },
    Control {
        name: "move-leader",
        method: "POST",
        bare: Some("to"),
        params: &[Param {
            name: "to",
            help: "the new leader's member ID, in hex",
        }],
        help: "move leadership (term +1, leases renewed)",
    },
];

/// A member's ID, as etcdctl prints it.
const MEMBER_ID: Param = Param {
    name: "id",
    help: "the member's ID, in hex as etcdctl prints it",
};

/// Every control with its method, parameters and what it does, for
/// `fake-etcd ctl --help`.
pub fn describe_controls() -> String {
    let mut text = String::from("Controls:\n");
    for control in CONTROLS {
        text.push_str(&format!(
            "  {:<22} {:<4} {}\n",
            control.name, control.method, control.help
        ));
        for param in control.params {
            text.push_str(&format!(
                "  {:<22}      {}={}\n",
                "", param.name, param.help
            ));
        }
    }
    text
}

/// Refuses a call that no control takes, with the valid choices.
fn check_call(
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
) -> Result<(), (StatusCode, String)> {
    let name = path.strip_prefix("/v1/").unwrap_or(path);
    let Some(control) = CONTROLS.iter().find(|c| c.name == name) else {
        let names: Vec<&str> = CONTROLS.iter().map(|c| c.name).collect();
        return Err((
            StatusCode::NOT_FOUND,
            format!(
                "no such control: {method} {path}; the controls are {}",
                names.join(", ")
            ),
        ));
    };
    if method.as_str() != control.method {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{name} takes {}, not {method}", control.method),
        ));
    }
    let mut unknown: Vec<&str> = query
        .keys()
        .map(String::as_str)
        .filter(|key| !control.params.iter().any(|p| p.name == *key))
        .collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        let valid: Vec<&str> = control.params.iter().map(|p| p.name).collect();
        let valid = if valid.is_empty() {
            "it takes none".to_owned()
        } else {
            format!("it takes {}", valid.join(", "))
        };
        return Err(bad(format!(
            "unknown parameter {} for {name}: {valid}",
            unknown
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
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
            "endpoints": etcd.endpoints(),
            "paused": etcd.is_paused(),
            "watches_stalled": etcd.watches_stalled(),
            "faults": etcd.active_faults(),
        })),
        ("GET", "/v1/leases") => Ok(json!({
            "leases": etcd.leases().iter().map(|l| json!({
                "id": l.id,
                "granted_ttl": l.granted_ttl,
                "remaining_ms": l.remaining.as_millis() as u64,
                "keys": l.keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>()
        })),
        ("GET", "/v1/auth") => {
            let auth = etcd.auth();
            let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
            Ok(json!({
                "enabled": auth.enabled,
                "revision": auth.revision,
                "users": auth.users.iter().map(|u| json!({
                    "name": u.name,
                    "roles": u.roles,
                    "no_password": u.no_password,
                })).collect::<Vec<_>>(),
                "roles": auth.roles.iter().map(|r| json!({
                    "name": r.name,
                    "permissions": r.permissions.iter().map(|p| json!({
                        "type": p.kind,
                        "key": text(&p.key),
                        "range_end": text(&p.range_end),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "tokens": auth.tokens.iter().map(|t| json!({
                    "token": t.token,
                    "user": t.user,
                    "expires_in_ms": t.expires_in.as_millis() as u64,
                })).collect::<Vec<_>>(),
            }))
        }
        ("POST", "/v1/expire-auth-tokens") => {
            let user = query.get("user").map(String::as_str);
            Ok(json!({ "expired": etcd.expire_auth_tokens(user) }))
        }
        ("POST", "/v1/advance") => {
            let by = parse_duration(param(query, "by")?).ok_or_else(|| {
                bad("`by` must be a duration like 30s, 500ms, 1.5s or 2m (not negative)")
            })?;
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
            .ok_or_else(|| bad("`id` must be a lease ID, decimal or 0x-hex"))?;
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
                Some(r) => r
                    .parse()
                    .map_err(|_| bad("`revision` must be a whole number"))?,
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
                (Some(_), Some(_)) => {
                    return Err(bad("give `count` or `probability`, not both"));
                }
                (Some(n), None) => etcd.fail_next(
                    rpc,
                    n.parse()
                        .map_err(|_| bad("`count` must be a whole number, 0 or more"))?,
                    status,
                ),
                (None, Some(p)) => {
                    let probability: f64 = p
                        .parse()
                        .ok()
                        .filter(|p: &f64| (0.0..=1.0).contains(p))
                        .ok_or_else(|| bad("`probability` must be a number from 0 to 1"))?;
                    etcd.fail_randomly(rpc, probability, status);
                }
                (None, None) => etcd.fail_always(rpc, status),
            }
            done()
        }
        ("POST", "/v1/delay") => {
            let rpc = parse_rpc(query)?;
            let by = parse_duration(param(query, "by")?).ok_or_else(|| {
                bad("`by` must be a duration like 30s, 500ms, 1.5s or 2m (not negative)")
            })?;
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
        ("GET", "/v1/members") => {
            let members: Vec<Value> = etcd
                .members()
                .into_iter()
                .map(|m| {
                    json!({
                        "id": format!("{:x}", m.id),
                        "name": m.name,
                        "endpoint": m.endpoint,
                        "state": m.state.as_str(),
                        "leader": m.is_leader,
                        "learner": m.is_learner,
                    })
                })
                .collect();
            Ok(json!({ "members": members }))
        }
        ("POST", "/v1/stop-member") => {
            member_control(etcd.stop_member(member_id(query, "id")?).await)
        }
        ("POST", "/v1/start-member") => {
            member_control(etcd.start_member(member_id(query, "id")?).await)
        }
        ("POST", "/v1/pause-member") => member_control(etcd.pause_member(member_id(query, "id")?)),
        ("POST", "/v1/resume-member") => {
            member_control(etcd.resume_member(member_id(query, "id")?))
        }
        ("POST", "/v1/isolate-member") => {
            member_control(etcd.isolate_member(member_id(query, "id")?))
        }
        ("POST", "/v1/heal-member") => member_control(etcd.heal_member(member_id(query, "id")?)),
        ("POST", "/v1/start-added-member") => {
            let id = member_id(query, "id")?;
            let name = query
                .get("name")
                .cloned()
                .unwrap_or_else(|| format!("member-{id:x}"));
            match etcd.start_added_member(id, &name).await {
                Ok(endpoint) => Ok(json!({ "endpoint": endpoint })),
                Err(err) => Err(bad(err.to_string())),
            }
        }
        ("POST", "/v1/move-leader") => member_control(etcd.move_leader(member_id(query, "to")?)),
        _ => Err((
            StatusCode::NOT_FOUND,
            format!("no such control: {method} {path}"),
        )),
    }
}

/// A member ID parameter, in hex as etcdctl prints it (`0x` allowed).
fn member_id(query: &HashMap<String, String>, name: &str) -> Result<u64, (StatusCode, String)> {
    let raw = query
        .get(name)
        .ok_or_else(|| bad(format!("give `{name}`, a member ID in hex")))?;
    let hex = raw.strip_prefix("0x").unwrap_or(raw);
    u64::from_str_radix(hex, 16).map_err(|_| bad(format!("`{raw}` is not a member ID in hex")))
}

/// The answer to a member control: done, or refused with the reason (an
/// unknown member is not found).
fn member_control(outcome: Result<(), crate::ControlError>) -> Answer {
    match outcome {
        Ok(()) => Ok(json!({})),
        Err(err @ crate::ControlError::NoSuchMember(_)) => {
            Err((StatusCode::NOT_FOUND, err.to_string()))
        }
        Err(err) => Err(bad(err.to_string())),
    }
}

fn parse_rpc(query: &HashMap<String, String>) -> Result<Rpc, (StatusCode, String)> {
    let name = query.get("rpc").map_or("any", String::as_str);
    Rpc::parse(name).ok_or_else(|| {
        bad(format!(
            "unknown rpc `{name}`: give a method such as Put, KV/Put or Range, or any"
        ))
    })
}

fn parse_status(query: &HashMap<String, String>) -> Result<Status, (StatusCode, String)> {
    let code = match query.get("code") {
        None => Code::Unavailable,
        Some(name) => parse_code(name).ok_or_else(|| {
            bad(format!(
                "unknown gRPC code `{name}`: give a name such as unavailable or not_found, or a number from 1 to 16"
            ))
        })?,
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

/// An error code: a name or number from 1 to 16 (OK is no error).
fn parse_code(name: &str) -> Option<Code> {
    if let Ok(n) = name.parse::<i32>() {
        return (1..=16).contains(&n).then(|| Code::from_i32(n));
    }
    let wanted = name.to_ascii_lowercase().replace(['_', '-'], "");
    (1..=16)
        .map(Code::from_i32)
        .find(|c| format!("{c:?}").to_ascii_lowercase() == wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_rpcs_parse() {
        assert_eq!(parse_code("unavailable"), Some(Code::Unavailable));
        assert_eq!(
            parse_code("RESOURCE_EXHAUSTED"),
            Some(Code::ResourceExhausted)
        );
        assert_eq!(parse_code("14"), Some(Code::Unavailable));
        assert_eq!(parse_code("nope"), None);
        assert_eq!(parse_code("0"), None, "OK is no error");
        assert_eq!(parse_code("ok"), None);
    }

    #[test]
    fn a_parameter_given_twice_is_refused_and_empty_pairs_are_nothing() {
        assert!(parse_query(Some("by=Range&by=200ms")).is_err());
        let query = parse_query(Some("rpc=Put&&count=1&")).unwrap();
        assert_eq!(query.len(), 2);
        assert!(parse_query(None).unwrap().is_empty());
    }
}
