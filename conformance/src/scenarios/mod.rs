//! Scenario bodies, by area. Each is an `async fn(&mut Scenario)` that panics
//! with a message saying what etcd does differently from what it saw.

pub mod cluster;
pub mod faults;
pub mod kv;
pub mod lease;
pub mod txn;
pub mod watch;

use std::fmt::Debug;

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
