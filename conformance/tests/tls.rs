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
