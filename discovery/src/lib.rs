//! Service discovery for gRPC on etcd, wire-compatible with Go's
//! `etcd:///` naming.
//!
//! A server announces itself with a [`Registrar`]: its address (and
//! metadata) goes under `<service>/<instance>` with a lease that the
//! registration keeps alive, re-creating it after any loss. Clients follow
//! the service with a [`Resolver`], which keeps an authoritative
//! [`Snapshot`] of the live instances in step with etcd, through dropped
//! connections, compaction and restarts, and feeds balancers
//! ([`balance`]). By default keys and values are exactly what Go's
//! `naming/endpoints` writes ([`GoNaming`]), so Rust and Go services join the
//! same fleet; [`Codec`] lets other layouts plug in.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let etcd = fake_etcd::FakeEtcd::start().await?;
//! # let endpoint = etcd.endpoint();
//! use std::time::Duration;
//! use etcd_grpc_discovery::{Registrar, Resolver};
//!
//! let client = etcd_client::Client::connect([endpoint], None).await?;
//! let registration = Registrar::builder(client.clone(), "greeter", "127.0.0.1:50051").ttl(10).start();
//! let resolver = Resolver::builder(client, "greeter").start();
//!
//! let snapshot = resolver.wait_for_endpoints(Duration::from_secs(5)).await?;
//! assert_eq!(snapshot.addrs(), ["127.0.0.1:50051"]);
//! registration.deregister().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Layout
//!
//! - `codec`: [`Endpoint`], [`Codec`], [`GoNaming`] and [`ServerInfo`].
//! - `go_json`: JSON written byte for byte as Go writes it.
//! - `registrar`: [`Registrar`], [`Registration`], [`RegistrationState`].
//! - `resolver`: [`Resolver`] and its [`Snapshot`].
//! - [`balance`]: a balanced tonic channel, routing by instance, weighted
//!   choice, and a consistent-hash ring.
//! - `target`: [`service_of_target`] for `etcd:///service` targets.

#![doc(test(attr(deny(warnings))))]

mod backoff;
pub mod balance;
mod codec;
mod go_json;
mod registrar;
mod resolver;
mod target;

pub use codec::{Codec, Endpoint, GoNaming, ServerInfo};
pub use registrar::{EndReason, Registrar, RegistrarBuilder, Registration, RegistrationState};
pub use resolver::{Resolver, ResolverBuilder, Snapshot};
pub use target::service_of_target;

/// What discovery calls can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// etcd refused or could not be reached.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// The service has no instance (and the caller chose not to wait, or
    /// waited long enough), or not the one asked for.
    #[error("no endpoints: {0}")]
    NoEndpoints(String),
    /// An instance is registered, but its address cannot be dialed (not a
    /// valid URI once `http://` is put before it).
    #[error("instance {id:?} has an invalid address {addr:?}: {reason}")]
    InvalidAddress {
        /// The instance's ID.
        id: String,
        /// The address it registered.
        addr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// etcd did not answer in time.
    #[error("etcd did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// The registration has ended, for the reason given.
    #[error("the registration has ended: {0}")]
    Ended(EndReason),
}

impl Error {
    fn is_lease_not_found(&self) -> bool {
        matches!(self, Error::Etcd(err) if is_lease_not_found(err))
    }
}

/// Whether etcd answered that a lease does not exist (its NotFound status
/// with "etcdserver: requested lease not found").
pub(crate) fn is_lease_not_found(err: &etcd_client::Error) -> bool {
    matches!(err, etcd_client::Error::GRpcStatus(status)
        if status.code() == tonic::Code::NotFound
            && status.message() == "etcdserver: requested lease not found")
}

/// The README's example, compiled as a doctest so it cannot drift.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
