//! The etcd v3 gRPC API, as etcd 3.5 defines it on the wire.
//!
//! The `.proto` files under `proto/` are written in this repository: message,
//! field, enum and service names and numbers are those of etcd 3.5 (they are
//! facts of the protocol), so any etcd client talks to a server built on these
//! types. They are compiled by `build.rs` with `protox`, so no `protoc` is
//! needed. Byte fields are [`bytes::Bytes`](prost::bytes::Bytes), which makes
//! copies of keys and values cheap.
//!
//! # Layout
//!
//! - [`mvccpb`]: `KeyValue` and `Event`, the data model.
//! - [`authpb`]: users, roles and permissions.
//! - [`etcdserverpb`]: the request and response messages, and the client and
//!   server code of the `KV`, `Watch`, `Lease`, `Cluster`, `Maintenance` and
//!   `Auth` services.
//! - [`v3lockpb`] and [`v3electionpb`]: the `Lock` and `Election` services
//!   etcd serves beside them, built on the services above.
//!
//! # Example
//!
//! ```
//! use etcd_proto::etcdserverpb::RangeRequest;
//!
//! let request = RangeRequest { key: "foo".into(), ..Default::default() };
//! assert_eq!(&request.key[..], b"foo");
//! ```

/// Keys, values and watch events (`mvccpb`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// Users, roles and permissions (`authpb`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// The etcd v3 services and their messages (`etcdserverpb`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// The lock service (`v3lockpb`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// The election service (`v3electionpb`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// The README's example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
