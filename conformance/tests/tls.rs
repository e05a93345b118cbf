//! TLS on the fake's client port, as etcd serves it: a client that trusts
//! the CA gets in; with client certificate authentication, only one whose
//! certificate the trusted CA signed does.

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use fake_etcd::tls::TestCertificates;
use fake_etcd::FakeEtcd;

fn fake_only(name: &str) -> bool {
    conformance::runs_on_fake_only(name, "the fake's TLS is set up by the test")
}

fn trusting(ca_pem: &str) -> TlsOptions {
    TlsOptions::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost")
}

async fn put_through(etcd: &FakeEtcd, tls: TlsOptions) -> Result<(), etcd_client::Error> {
    let options = ConnectOptions::new()
        .with_tls(tls)
        .with_timeout(std::time::Duration::from_secs(5))
        .with_connect_timeout(std::time::Duration::from_secs(5));
    let mut client = Client::connect([etcd.endpoint()], Some(options)).await?;
    client.put("k", "v", None).await.map(drop)
}

#[tokio::test]
async fn a_client_that_trusts_the_ca_talks_tls() {
    if !fake_only("a_client_that_trusts_the_ca_talks_tls") {
        return;
    }
    let certs = TestCertificates::generate().unwrap();
    let etcd = FakeEtcd::builder()
        .tls(certs.server_options())
        .start()
        .await
        .unwrap();
    assert!(etcd.endpoint().starts_with("https://127.0.0.1:"));
    put_through(&etcd, trusting(&certs.ca_pem)).await.unwrap();
    // The in-process channel stays plaintext, and sees the same data.
    assert_eq!(etcd.read_prefix("k", 0).unwrap().len(), 1);

    // A plaintext client gets nowhere; nor does one trusting another CA.
    let plain = async {
        let endpoint = etcd.endpoint().replace("https://", "http://");
        let options = ConnectOptions::new().with_timeout(std::time::Duration::from_secs(2));
        let mut client = Client::connect([endpoint], Some(options)).await?;
        client.put("k", "v", None).await.map(drop)
    };
    assert!(plain.await.is_err());
    let other = TestCertificates::generate().unwrap();
    assert!(put_through(&etcd, trusting(&other.ca_pem)).await.is_err());
    // Refused for what they were, not because the server went away.
    put_through(&etcd, trusting(&certs.ca_pem)).await.unwrap();
}

#[tokio::test]
async fn client_cert_auth_admits_only_certificates_the_ca_signed() {
    if !fake_only("client_cert_auth_admits_only_certificates_the_ca_signed") {
        return;
    }
    let certs = TestCertificates::generate().unwrap();
    let etcd = FakeEtcd::builder()
        .tls(certs.server_options().client_cert_auth(true))
        .start()
        .await
        .unwrap();
    let app = certs.client("app").unwrap();
    let signed = trusting(&certs.ca_pem).identity(Identity::from_pem(&app.cert_pem, &app.key_pem));
    put_through(&etcd, signed).await.unwrap();

    assert!(
        put_through(&etcd, trusting(&certs.ca_pem)).await.is_err(),
        "no client certificate"
    );
    let stranger = TestCertificates::generate().unwrap().client("app").unwrap();
    let unsigned =
        trusting(&certs.ca_pem).identity(Identity::from_pem(&stranger.cert_pem, &stranger.key_pem));
    assert!(
        put_through(&etcd, unsigned).await.is_err(),
        "a certificate another CA signed"
    );
    let app = certs.client("app").unwrap();
    let signed = trusting(&certs.ca_pem).identity(Identity::from_pem(&app.cert_pem, &app.key_pem));
    put_through(&etcd, signed)
        .await
        .expect("refused for what they were, not because the server went away");
    // A restart keeps TLS.
    etcd.restart().await.unwrap();
    let app = certs.client("app").unwrap();
    let signed = trusting(&certs.ca_pem).identity(Identity::from_pem(&app.cert_pem, &app.key_pem));
    put_through(&etcd, signed).await.unwrap();
}

#[tokio::test]
async fn client_cert_auth_without_a_trusted_ca_is_refused() {
    if !fake_only("client_cert_auth_without_a_trusted_ca_is_refused") {
        return;
    }
    let certs = TestCertificates::generate().unwrap();
    let options = fake_etcd::tls::TlsOptions::new(
        certs.server_cert_pem.clone(),
        certs.server_key_pem.clone(),
    )
    .client_cert_auth(true);
    let err = FakeEtcd::builder().tls(options).start().await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("trusted CA"), "{err}");
}

/// A client certificate's signed connection as `etcd-client`.
async fn client_with_cert(etcd: &FakeEtcd, certs: &TestCertificates, common_name: &str) -> Client {
    let cert = certs.client(common_name).unwrap();
    let tls = trusting(&certs.ca_pem).identity(Identity::from_pem(&cert.cert_pem, &cert.key_pem));
    let options = ConnectOptions::new()
        .with_tls(tls)
        .with_timeout(std::time::Duration::from_secs(5))
        .with_connect_timeout(std::time::Duration::from_secs(5));
    Client::connect([etcd.endpoint()], Some(options))
        .await
        .unwrap()
}

/// With auth on and no token, a verified certificate's CN is the user, as
/// in etcd: the only way in for a user without a password, and it reaches
/// Lock too, whose steps run as the caller.
#[tokio::test]
async fn the_certificate_common_name_logs_in_as_the_user() {
    use etcd_client::{LockOptions, Permission, UserAddOptions};
    if !fake_only("the_certificate_common_name_logs_in_as_the_user") {
        return;
    }
    let certs = TestCertificates::generate().unwrap();
    let etcd = FakeEtcd::builder()
        .bcrypt_cost(4)
        .tls(certs.server_options().client_cert_auth(true))
        .start()
        .await
        .unwrap();
    // Set up over the in-process channel (plaintext, no certificate).
    let channel = etcd_client::Channel::Tonic(etcd.in_process_channel());
    let setup = Client::from_channel(channel, None).await.unwrap();
    let mut auth = setup.auth_client();
    auth.user_add("root", "rootpw", None).await.unwrap();
    auth.user_grant_role("root", "root").await.unwrap();
    let no_password = UserAddOptions::new().with_no_pwd();
    auth.user_add("app", "", Some(no_password)).await.unwrap();
    auth.role_add("app-rw").await.unwrap();
    let app_keys = Permission::read_write("app/").with_prefix();
    auth.role_grant_permission("app-rw", app_keys)
        .await
        .unwrap();
    auth.user_grant_role("app", "app-rw").await.unwrap();
    auth.auth_enable().await.unwrap();

    let mut app = client_with_cert(&etcd, &certs, "app").await;
    app.put("app/x", "1", None).await.unwrap();
    let denied = app.put("other", "1", None).await.unwrap_err();
    assert!(
        denied.to_string().contains("etcdserver: permission denied"),
        "{denied}"
    );
    // Lock's own writes run as the caller: allowed under app/, not elsewhere.
    let lock = app
        .lock("app/lock", Some(LockOptions::new().with_lease(0)))
        .await
        .unwrap();
    app.unlock(lock.key()).await.unwrap();
    let refused = app.lock("elsewhere", None).await.unwrap_err();
    assert!(
        refused.to_string().contains("permission denied"),
        "{refused}"
    );

    // A certificate for a user that does not exist gets nothing.
    let mut ghost = client_with_cert(&etcd, &certs, "ghost").await;
    assert!(ghost.get("app/x", None).await.is_err());
    // Root by certificate may do anything.
    let mut root = client_with_cert(&etcd, &certs, "root").await;
    root.put("other", "1", None).await.unwrap();
}
