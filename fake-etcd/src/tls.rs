//! TLS on the client port, with etcd's options (feature `tls`), and
//! throwaway certificates for tests (feature `tls-test-certs`).
//!
//! [`TlsOptions`] mirrors etcd's flags: `--cert-file` and `--key-file` (the
//! server's identity), `--trusted-ca-file` and `--client-cert-auth` (require
//! a client certificate signed by that CA). The fake serves gRPC over rustls
//! with ALPN `h2` (the gRPC health service included); its in-process
//! channel and the control API stay plaintext.
//!
//! ```
//! # // The certificates need the `tls-test-certs` feature.
//! # #[cfg(not(feature = "tls-test-certs"))]
//! # fn main() {}
//! # #[cfg(feature = "tls-test-certs")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use fake_etcd::tls::TestCertificates;
//!
//! let certs = TestCertificates::generate()?;
//! let etcd = fake_etcd::FakeEtcd::builder()
//!     .tls(certs.server_options().client_cert_auth(true))
//!     .start()
//!     .await?;
//! assert!(etcd.endpoint().starts_with("https://"));
//!
//! let client_cert = certs.client("app")?; // CN=app: the user, with auth enabled
//! let tls = etcd_client::TlsOptions::new()
//!     .ca_certificate(etcd_client::Certificate::from_pem(&certs.ca_pem))
//!     .identity(etcd_client::Identity::from_pem(&client_cert.cert_pem, &client_cert.key_pem));
//! let options = etcd_client::ConnectOptions::new().with_tls(tls);
//! let mut client = etcd_client::Client::connect([etcd.endpoint()], Some(options)).await?;
//! client.put("k", "v", None).await?;
//! # Ok(())
//! # }
//! ```

use std::io;
use std::path::Path;

/// TLS for a fake's client port, as etcd's `--cert-file`, `--key-file`,
/// `--trusted-ca-file` and `--client-cert-auth` configure it.
#[derive(Clone)]
pub struct TlsOptions {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    trusted_ca_pem: Option<Vec<u8>>,
    client_cert_auth: bool,
}

impl std::fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("TlsOptions")
            .field("trusted_ca", &self.trusted_ca_pem.is_some())
            .field("client_cert_auth", &self.client_cert_auth)
            .finish_non_exhaustive()
    }
}

impl TlsOptions {
    /// The server's certificate chain and private key, PEM-encoded.
    pub fn new(cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        Self {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
            trusted_ca_pem: None,
            client_cert_auth: false,
        }
    }

    /// The same, read from files (etcd's `--cert-file`, `--key-file`).
    ///
    /// # Errors
    ///
    /// If either file cannot be read (the error names it).
    pub fn from_files(cert_file: &Path, key_file: &Path) -> io::Result<Self> {
        Ok(Self::new(read(cert_file)?, read(key_file)?))
    }

    /// The CA that client certificates must be signed by (etcd's
    /// `--trusted-ca-file`), PEM-encoded.
    pub fn trusted_ca(mut self, ca_pem: impl Into<Vec<u8>>) -> Self {
        self.trusted_ca_pem = Some(ca_pem.into());
        self
    }

    /// The same, read from a file.
    ///
    /// # Errors
    ///
    /// If the file cannot be read (the error names it).
    pub fn trusted_ca_file(self, ca_file: &Path) -> io::Result<Self> {
        Ok(self.trusted_ca(read(ca_file)?))
    }

    /// Require every client to present a certificate signed by the trusted
    /// CA (etcd's `--client-cert-auth`). Without it, as in etcd, client
    /// certificates are not asked for.
    pub fn client_cert_auth(mut self, required: bool) -> Self {
        self.client_cert_auth = required;
        self
    }

    /// tonic's server configuration for these options.
    pub(crate) fn server_config(&self) -> io::Result<tonic::transport::ServerTlsConfig> {
        let identity = tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem);
        let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
        if self.client_cert_auth {
            let ca = self.trusted_ca_pem.as_ref().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "client certificate authentication needs a trusted CA (--trusted-ca-file)",
                )
            })?;
            config = config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
        }
        Ok(config)
    }
}

fn read(path: &Path) -> io::Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|err| io::Error::new(err.kind(), format!("cannot read {}: {err}", path.display())))
}

/// A throwaway CA, a server certificate for `localhost` and `127.0.0.1`
/// signed by it, and client certificates on demand: TLS in a test with no
/// files on disk.
#[cfg(feature = "tls-test-certs")]
#[derive(Debug)]
pub struct TestCertificates {
    /// The CA's certificate, PEM: what clients trust.
    pub ca_pem: String,
    /// The server's certificate, PEM.
    pub server_cert_pem: String,
    /// The server's private key, PEM.
    pub server_key_pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// A client certificate and its key, PEM.
#[cfg(feature = "tls-test-certs")]
#[derive(Debug, Clone)]
pub struct ClientCertificate {
    /// The certificate, whose common name names the client.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

#[cfg(feature = "tls-test-certs")]
fn tls_error(err: rcgen::Error) -> io::Error {
    io::Error::other(format!("generating test certificates: {err}"))
}

#[cfg(feature = "tls-test-certs")]
impl TestCertificates {
    /// Generates a CA and a server certificate.
    ///
    /// # Errors
    ///
    /// If a key or certificate cannot be generated (it can't, short of a
    /// broken crypto provider).
    pub fn generate() -> io::Result<Self> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let mut ca = CertificateParams::new(Vec::new()).map_err(tls_error)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "fake-etcd test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().map_err(tls_error)?;
        let ca_cert = ca.self_signed(&ca_key).map_err(tls_error)?;
        let issuer = rcgen::Issuer::new(ca, ca_key);

        let mut server =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .map_err(tls_error)?;
        server
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        server.use_authority_key_identifier_extension = true;
        let server_key = KeyPair::generate().map_err(tls_error)?;
        let server_cert = server.signed_by(&server_key, &issuer).map_err(tls_error)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            issuer,
        })
    }

    /// The server's [`TlsOptions`], trusting this CA for client
    /// certificates (required once `client_cert_auth(true)`).
    pub fn server_options(&self) -> TlsOptions {
        TlsOptions::new(self.server_cert_pem.clone(), self.server_key_pem.clone())
            .trusted_ca(self.ca_pem.clone())
    }

    /// A client certificate signed by this CA, with `common_name` as its CN
    /// (the user it logs in as, when auth is enabled and no token is sent).
    ///
    /// # Errors
    ///
    /// As [`TestCertificates::generate`].
    pub fn client(&self, common_name: &str) -> io::Result<ClientCertificate> {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        let mut params = CertificateParams::new(Vec::new()).map_err(tls_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(tls_error)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(tls_error)?;
        Ok(ClientCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The common name (CN) of a DER certificate's subject: the user a client
/// certificate logs in as.
pub(crate) fn common_name(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, certificate) = X509Certificate::from_der(der).ok()?;
    let cn = certificate.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}
