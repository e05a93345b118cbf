//! A server that stops without being asked to says so.

use std::net::Shutdown;
use std::time::Duration;

use fake_etcd::FakeEtcd;

const PATIENCE: Duration = Duration::from_secs(5);

/// A listener the test can break from outside: the server's socket, and a
/// duplicate of it that the test keeps.
fn breakable_listener() -> (tokio::net::TcpListener, std::net::TcpListener) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let handle = listener.try_clone().unwrap();
    (tokio::net::TcpListener::from_std(listener).unwrap(), handle)
}

/// Once, a dead server went unnoticed: `serve` never looked at its task.
#[tokio::test]
async fn a_listener_that_fails_is_reported_by_failure() {
    let (listener, handle) = breakable_listener();
    let etcd = FakeEtcd::builder()
        .listener(listener)
        .start()
        .await
        .unwrap();
    let mut client = etcd_client::Client::connect([etcd.endpoint()], None)
        .await
        .unwrap();
    client.put("k", "v", None).await.unwrap();

    // On Linux, accept() on a listening socket shut down for reading fails
    // with EINVAL, for good.
    socket2::SockRef::from(&handle)
        .shutdown(Shutdown::Read)
        .unwrap();

    let failure = tokio::time::timeout(PATIENCE, etcd.failure())
        .await
        .expect("the failure is reported");
    assert!(
        failure.to_string().contains("the client listener failed"),
        "{failure}"
    );
    // Every caller hears it, not only the first.
    let again = tokio::time::timeout(PATIENCE, etcd.failure())
        .await
        .unwrap();
    assert_eq!(again.to_string(), failure.to_string());
}

#[tokio::test]
async fn serve_returns_the_error_of_a_server_that_dies() {
    let (listener, handle) = breakable_listener();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(
        FakeEtcd::builder()
            .listener(listener)
            .serve(std::future::pending()),
    );
    // Serving: a client gets an answer.
    let mut client = etcd_client::Client::connect([format!("http://{addr}")], None)
        .await
        .unwrap();
    client.put("k", "v", None).await.unwrap();

    socket2::SockRef::from(&handle)
        .shutdown(Shutdown::Read)
        .unwrap();
    let outcome = tokio::time::timeout(PATIENCE, served)
        .await
        .expect("serve returns")
        .unwrap();
    let err = outcome.expect_err("serve reports the failure");
    assert!(err.to_string().contains("listener failed"), "{err}");
}

#[tokio::test]
async fn a_healthy_server_reports_no_failure() {
    let etcd = FakeEtcd::start().await.unwrap();
    etcd.restart().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(50), etcd.failure())
            .await
            .is_err(),
        "a restart is no failure"
    );
}
