//! Scenario bodies, by area. Each is an `async fn(&mut Scenario)` that panics
//! with a message saying what etcd does differently from what it saw.

pub mod auth;
pub mod cluster;
pub mod election;
pub mod faults;
pub mod kv;
pub mod lease;
pub mod lock;
pub mod maintenance;
pub mod txn;
pub mod watch;

use std::fmt::Debug;
use std::time::Duration;

use crate::Scenario;

use bytes::Bytes;
use tonic::{Code, Status};

/// Asserts that `result` failed with exactly etcd's code and message.
#[track_caller]
pub fn assert_status<T: Debug>(result: Result<T, Status>, code: Code, message: &str) {
    match result {
        Ok(value) => panic!("expected {code:?} {message:?}, got success: {value:?}"),
        Err(status) => {
            assert_eq!(
                (status.code(), status.message()),
                (code, message),
                "expected etcd's error, got {status:?}"
            );
        }
    }
}

/// Bytes of a string.
pub fn b(s: impl AsRef<str>) -> Bytes {
    Bytes::copy_from_slice(s.as_ref().as_bytes())
}

/// Shows that `task` does not finish. On the fake, under tokio's paused
/// clock, a 10 s timeout fires only once every task is idle, so whatever
/// could answer (every hop of a round trip included) has had its chance,
/// in no wall time. A real etcd is given half a second of real time.
pub async fn assert_not_finished<T>(
    s: &Scenario,
    task: &mut tokio::task::JoinHandle<T>,
    what: &str,
) {
    let patience = if s.is_fake() {
        tokio::time::pause();
        Duration::from_secs(10)
    } else {
        Duration::from_millis(500)
    };
    let outcome = tokio::time::timeout(patience, task).await;
    if s.is_fake() {
        tokio::time::resume();
    }
    assert!(outcome.is_err(), "{what}");
}

/// Waits for `task` to finish, which it must soon: a real etcd's lease
/// expiry, checked every 500 ms, included.
pub async fn finished<T>(task: tokio::task::JoinHandle<T>, what: &str) -> T {
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap_or_else(|_| panic!("{what}: still waiting after 10 s"))
        .unwrap_or_else(|err| panic!("{what}: {err}"))
}

/// The gRPC status inside an `etcd-client` error.
#[track_caller]
pub fn status_of(err: etcd_client::Error) -> Status {
    match err {
        etcd_client::Error::GRpcStatus(status) => status,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

/// What `future` gives, which must come soon (a stream message, an
/// answer): a test that would wait for ever fails after 10 s, naming what
/// it waited for.
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), future)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing after 10 s"))
}
