//! Helpers shared by the integration tests.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use etcd_client::Client;
use fake_etcd::FakeEtcd;

/// Far longer than anything a test waits for takes; only a hang gets
/// there.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// What `future` gives, which must come within [`PATIENCE`]: a test that
/// would wait for ever fails, naming what it waited for.
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing after {PATIENCE:?}"))
}

/// An `etcd-client` connected to `etcd`.
pub async fn connect(etcd: &FakeEtcd) -> Client {
    Client::connect([etcd.endpoint()], None).await.unwrap()
}

/// The gRPC status inside an `etcd-client` error.
pub fn status_of(err: etcd_client::Error) -> tonic::Status {
    match err {
        etcd_client::Error::GRpcStatus(status) => status,
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

/// An `etcd-client` on `etcd`'s in-process channel (no socket).
pub async fn connect_in_process(etcd: &FakeEtcd) -> Client {
    let channel = etcd_client::Channel::Tonic(etcd.in_process_channel());
    Client::from_channel(channel, None).await.unwrap()
}

/// Grants a lease of `ttl` seconds and puts `key` on it; the lease's ID.
pub async fn put_on_new_lease(client: &mut Client, key: impl Into<Vec<u8>>, ttl: i64) -> i64 {
    let lease = client.lease_grant(ttl, None).await.unwrap().id();
    let attach = etcd_client::PutOptions::new().with_lease(lease);
    client.put(key, "v", Some(attach)).await.unwrap();
    lease
}
