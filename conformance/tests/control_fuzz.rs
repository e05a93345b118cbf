//! Arbitrary HTTP to the control API: whatever the method, path, query or
//! bytes, it answers (a one-line JSON error, or hyper's own 400 for what is
//! not HTTP), never panics or hangs, and the fake goes on serving gRPC
//! afterwards. proptest, seeded (see `conformance::properties`);
//! `PROPTEST_CASES` asks for a longer run. The control API is the fake's
//! own, so this runs only against the fake.

use std::sync::Arc;
use std::time::Duration;

use conformance::scenarios::within;
use fake_etcd::control::CONTROLS;
use fake_etcd::FakeEtcd;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A word of a request: one the API knows, or not.
fn word(known: Vec<&'static str>) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(known).prop_map(str::to_owned),
        1 => "[a-z_-]{0,8}",
        1 => "[ -~]{0,12}",
    ]
}

/// A parameter's value: plausible, extreme, or junk.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "0",
            "1",
            "-1",
            "2",
            "0.5",
            "1.5",
            "-0.1",
            "NaN",
            "inf",
            "1e308",
            "18446744073709551616",
            "9223372036854775807",
            "0x7fffffffffffffff",
            "0xzz",
            "30s",
            "1h",
            "-1s",
            "500ms",
            "99999999h",
            "1.5.1s",
            "Put",
            "KV/Put",
            "any",
            "Nope",
            "unavailable",
            "14",
            "0",
            "17",
            "%ff%fe",
            "%",
            "a%20b",
            "root",
        ])
        .prop_map(str::to_owned),
        "[ -~]{0,16}",
    ]
}

/// One call: mostly a control with its own method and parameters (so the
/// handlers themselves are reached, with junk values), sometimes anything.
fn call() -> impl Strategy<Value = Vec<u8>> {
    (0..CONTROLS.len()).prop_flat_map(|index| {
        let control = &CONTROLS[index];
        let params: Vec<&'static str> = control
            .params
            .iter()
            .map(|p| p.name)
            .chain(["rpc", "by"])
            .collect();
        let method = word(vec![control.method, control.method, "GET", "POST", "PUT"]);
        let name = word(vec![control.name]);
        let query = prop::collection::vec((word(params), value()), 0..4);
        (method, name, query).prop_map(|(method, name, query)| {
            let query: Vec<String> = query.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!(
                "{method} /v1/{name}?{} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                query.join("&")
            )
            .into_bytes()
        })
    })
}

/// Raw request bytes, shown as text in a failure.
#[derive(Clone)]
struct Raw(Vec<u8>);

impl std::fmt::Debug for Raw {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

/// One raw HTTP request.
fn request() -> impl Strategy<Value = Raw> {
    prop_oneof![
        8 => call(),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => Just(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nContent-Length: 99\r\n\r\nshort".to_vec()),
    ]
    .prop_map(Raw)
}

/// Sends `bytes` on a fresh connection and reads until the server closes
/// it or a response is complete. `None` if the server said nothing.
async fn send(address: std::net::SocketAddr, bytes: &[u8]) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    (!answer.is_empty()).then(|| String::from_utf8_lossy(&answer).into_owned())
}

async fn check(requests: Vec<Raw>) -> Result<(), TestCaseError> {
    let etcd = Arc::new(FakeEtcd::start().await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(fake_etcd::control::serve(Arc::clone(&etcd), listener));
    let mut kv = etcd_proto::etcdserverpb::kv_client::KvClient::new(etcd.in_process_channel());
    for Raw(bytes) in requests {
        let answer = within("an answer", send(address, &bytes)).await;
        if let Some(answer) = &answer {
            let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer, ""));
            prop_assert!(head.starts_with("HTTP/1.1 "), "not HTTP: {answer:?}");
            prop_assert!(
                !head.starts_with("HTTP/1.1 5"),
                "a server error: {answer:?}"
            );
            if !body.is_empty() {
                let json: serde_json::Value = serde_json::from_str(body)
                    .map_err(|e| TestCaseError::fail(format!("{e}: {answer:?}")))?;
                prop_assert!(json["ok"].is_boolean(), "{answer:?}");
                if json["ok"] == false {
                    let error = json["error"].as_str().unwrap_or_default();
                    prop_assert!(!error.is_empty() && !error.contains('\n'), "{answer:?}");
                }
            }
        } else {
            // Only something that is not HTTP may go unanswered.
            prop_assert!(!bytes.starts_with(b"GET /v1/") && !bytes.starts_with(b"POST /v1/"));
        }
        // Whatever was switched on, switched off: the fake still serves.
        etcd.resume();
        etcd.unstall_watches();
        etcd.clear_faults();
        etcd.disarm_no_space();
        let put = etcd_proto::etcdserverpb::PutRequest {
            key: "k".into(),
            value: "v".into(),
            ..Default::default()
        };
        within("a put after the control call", kv.put(put))
            .await
            .map_err(|e| TestCaseError::fail(format!("the fake stopped serving: {e}")))?;
        prop_assert!(!server.is_finished(), "the control API stopped");
    }
    server.abort();
    Ok(())
}

#[test]
fn arbitrary_http_never_breaks_the_control_api() {
    if !conformance::runs_on_fake_only(
        "arbitrary_http_never_breaks_the_control_api",
        "the control API is the fake's",
    ) {
        return;
    }
    let strategy = prop::collection::vec(request(), 1..8);
    let result = conformance::properties::run_seeded(64, &strategy, false, |requests, _| async {
        check(requests).await.map_err(|failure| failure.to_string())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
