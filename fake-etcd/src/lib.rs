//! An in-memory etcd v3 server for tests.
//!
//! `fake-etcd` speaks etcd 3.5's gRPC API over real TCP, so any etcd client
//! (Rust's `etcd-client`, Go's `clientv3`, `etcdctl`) uses it unchanged: same
//! revisions, same response headers, same error codes and messages.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let etcd = fake_etcd::FakeEtcd::start().await?;
//! let mut client = etcd_client::Client::connect([etcd.endpoint()], None).await?;
//! let put = client.put("k", "v", None).await?;
//! assert_eq!(put.header().unwrap().revision(), 2);
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - `mvcc`: the multi-version store (key histories in an ordered map).
//! - `kv`: what KV requests mean: validation, then application to the store.
//! - `lease`: the lessor, with its deadline queue.
//! - `clock`: where time comes from ([`TimeSource`]).
//! - `core`: one member's state behind one lock, its identity and alarms.
//! - `watch`: watch streams, the index of watchers, catch-up and progress.
//! - `service`: tonic glue, one module per etcd service, and request limits.
//! - `server`: [`FakeEtcd`], its builder, and the test's controls.
//! - `net`: the gRPC server, background tasks, connections that obey faults.
//! - [`control`]: the controls over HTTP, for the binary and other languages.
//! - `bridge`: [`Bridge`], a TCP proxy with switches, for any etcd.
//! - `faults`: injected errors and latency ([`Rpc`], [`errors`]), stream and
//!   connection switches.
//! - `error`: etcd's errors and their exact gRPC form.

#![doc(test(attr(deny(warnings))))]

mod bridge;
mod clock;
pub mod control;
mod core;
mod error;
mod faults;
mod kv;
mod lease;
mod mvcc;
mod net;
mod revision;
mod server;
mod service;
mod watch;

pub use bridge::Bridge;
pub use clock::TimeSource;
pub use faults::{errors, Rpc};
pub use server::{FakeEtcd, FakeEtcdBuilder, LeaseInfo};
