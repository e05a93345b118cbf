//! Helpers shared by the integration tests.

#![allow(dead_code, unreachable_pub)]

use etcd_client::Client;
use fake_etcd::FakeEtcd;

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
