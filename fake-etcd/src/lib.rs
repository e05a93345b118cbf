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
//! - `watch`: the watch hub: watchers, their index, catch-up and progress;
//!   a write's events leave it as one delivery per stream, which the
//!   stream's sender turns into `WatchResponse`s.
//! - `core`: everything a request may change (store, lessor, watch hub,
//!   raft term and index, alarms, the cluster), synchronous, with no gRPC
//!   in it.
//! - `cluster`: the members, who leads, who can reach whom, and what each
//!   member has applied: raft's effects on clients, as data.
//! - `auth`: users, roles, key permissions and tokens, as etcd's auth
//!   store keeps and checks them.
//! - `header`: what a response header holds, built in one place.
//! - `limits`: etcd's request size limits.
//! - `member`: one member above the core its cluster shares: identity,
//!   faults, listeners, `Member::wait_for_route` (what a member out of
//!   touch with its leader does with a request) and `Member::apply`, the
//!   one way a request reaches the core.
//! - `service`: tonic glue, one module per etcd service, and the request
//!   pipeline they share (decode, validate, authorize, apply, respond).
//! - `snapshot`: the member's state as etcd's bbolt database, and back
//!   (`Maintenance.Snapshot`, `Hash`, and starting from a snapshot).
//! - `metrics`: `GET /metrics` on the client port, with gRPC call counters.
//! - `pipe`: in-process connections, with no socket under them.
//! - `tls` (feature `tls`): TLS on the client port with etcd's options, and
//!   throwaway certificates for tests (feature `tls-test-certs`).
//! - `net`: the gRPC server, background tasks, connections that obey faults.
//! - `server`: [`FakeEtcd`], its builder, and the test's controls.
//! - `members`: the controls over each member of a cluster (stop, pause,
//!   isolate, move the leader), and what they report.
//! - `control` (feature `control`, on by default): the controls over HTTP,
//!   for the binary and other languages.
//! - `bridge`: [`Bridge`], a TCP proxy with switches, for any etcd.
//! - `faults`: injected errors and latency ([`Rpc`], [`errors`]), stream and
//!   connection switches.
//! - `error`: etcd's errors and their exact gRPC form.

#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod auth;
mod bridge;
mod clock;
mod cluster;
#[cfg(feature = "control")]
#[cfg_attr(docsrs, doc(cfg(feature = "control")))]
pub mod control;
mod core;
mod duration;
mod error;
mod faults;
mod header;
mod kv;
mod lease;
mod limits;
mod member;
mod members;
mod metrics;
mod mvcc;
mod net;
mod pipe;
mod revision;
mod rng;
mod server;
mod service;
mod snapshot;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod tls;
mod watch;

pub use auth::handle::{AuthRole, AuthState, AuthToken, AuthUser, KeyPermission};
pub use bridge::Bridge;
pub use clock::TimeSource;
pub use faults::{errors, Rpc};
pub use members::{MemberInfo, MemberState};
pub use server::{
    check_progress_interval, ControlError, FakeEtcd, FakeEtcdBuilder, KeyAndValue, LeaseInfo,
};
pub use snapshot::SnapshotError;
