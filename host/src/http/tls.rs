//! The daemon's own HTTPS: a certificate chain and its private key from PEM files, served
//! with rustls (TLS 1.2 and 1.3, its safe defaults), and swapped for new files on a reload
//! (SIGHUP) without dropping a connection — certificates are renewed every few weeks now.
//!
//! Without it, the API could only leave the machine through a TLS reverse proxy: bearer
//! tokens and MFA codes must never cross a network in clear.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use jiff::Timestamp;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::model::error::{Error, Result};

/// A certificate this close to its end is reported at start, at each reload and twice a day.
pub const EXPIRY_WARNING: jiff::SignedDuration = jiff::SignedDuration::from_hours(14 * 24);

/// What the daemon serves HTTPS with: the files it came from and the key pair in use.
pub struct ServerTls {
    cert_path: PathBuf,
    key_path: PathBuf,
    /// What clients' certificates are checked against (mutual TLS), when asked for.
    client: Option<ClientCerts>,
    provider: Arc<CryptoProvider>,
    current: Arc<Current>,
    /// The configuration new handshakes get: a reload swaps it whole (a new client CA).
    config: RwLock<Arc<rustls::ServerConfig>>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

/// What API clients' certificates are checked against (mutual TLS): the CAs they must
/// chain to, and the revocation lists that retire single certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCerts {
    /// The CA certificates (PEM).
    pub ca: PathBuf,
    /// Certificate revocation lists (PEM) from those CAs, when kept.
    pub crl: Option<PathBuf>,
}

/// What a served certificate says of itself, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// The leaf certificate's subject (`CN=rolegate.example.org`).
    pub subject: String,
    /// When it stops being valid.
    pub not_after: Timestamp,
}

impl fmt::Display for CertSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "certificate {} valid until {}",
            self.subject, self.not_after
        )
    }
}

/// The key pair every new handshake is served with, swapped whole by a reload.
struct Current(RwLock<(Arc<CertifiedKey>, CertSummary)>);

impl fmt::Debug for Current {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Current(..)")
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|c| Arc::clone(&c.0))
    }
}

impl ServerTls {
    /// Loads the certificate chain and key (a private file, as SSH keys are), and checks that
    /// they belong together and that the certificate is valid at `now`. With `client`,
    /// every client must present a certificate that chains to one of its CAs and is not
    /// revoked.
    pub fn load(
        cert_path: &Path,
        key_path: &Path,
        client: Option<ClientCerts>,
        now: Timestamp,
    ) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (key, summary) = read_pair(cert_path, key_path, &provider, now)?;
        let current = Arc::new(Current(RwLock::new((key, summary))));
        let config = server_config(cert_path, client.as_ref(), &provider, &current)?;
        Ok(Self {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            client,
            provider,
            current,
            config: RwLock::new(config),
        })
    }

    /// Reads the files again and serves new handshakes with them; on any error the pair and
    /// client CAs in use stay (a renewal half-written, a key left world-readable must not
    /// take HTTPS down).
    pub fn reload(&self, now: Timestamp) -> Result<CertSummary> {
        let (key, summary) = read_pair(&self.cert_path, &self.key_path, &self.provider, now)?;
        let unreadable = || {
            tls_error(
                &self.cert_path,
                "the certificate in use is unreadable".into(),
            )
        };
        // The client CAs are read again too (one added, one retired); the key pair is shared
        // with the configuration in use, so without them nothing else needs building.
        if let Some(client) = &self.client {
            let config =
                server_config(&self.cert_path, Some(client), &self.provider, &self.current)?;
            *self.config.write().map_err(|_| unreadable())? = config;
        }
        let mut current = self.current.0.write().map_err(|_| unreadable())?;
        *current = (key, summary.clone());
        Ok(summary)
    }

    /// The certificate new handshakes get.
    pub fn summary(&self) -> Option<CertSummary> {
        self.current.0.read().ok().map(|c| c.1.clone())
    }

    /// The certificate file (for messages).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// Whether clients must present a certificate from the configured CAs.
    pub fn asks_client_certs(&self) -> bool {
        self.client.is_some()
    }

    /// An acceptor for one connection's handshake.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = match self.config.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        tokio_rustls::TlsAcceptor::from(config)
    }
}

/// The server configuration: the swappable key pair, and client certificates checked
/// against `client` when it is set.
fn server_config(
    cert_path: &Path,
    client: Option<&ClientCerts>,
    provider: &Arc<CryptoProvider>,
    current: &Arc<Current>,
) -> Result<Arc<rustls::ServerConfig>> {
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(cert_path, format!("no TLS version to offer: {e}")))?;
    let builder = match client {
        Some(c) => builder.with_client_cert_verifier(client_verifier(c, provider)?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::clone(current) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads the CA certificates clients' certificates must chain to, and the revocation lists.
fn client_verifier(
    client: &ClientCerts,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    let ca_path = client.ca.as_path();
    let certs = read_certs(ca_path, "client CA file", "bundle")?;
    if certs.is_empty() {
        return Err(tls_error(
            ca_path,
            "holds no CA certificate (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            tls_error(
                ca_path,
                format!("its certificate #{} is not a usable CA: {e}", i + 1),
            )
        })?;
    }
    let mut builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(provider),
    );
    if let Some(crl_path) = &client.crl {
        let pem = std::fs::read(crl_path).map_err(|source| Error::Io {
            what: format!("cannot read the client CRL file {}", crl_path.display()),
            source,
        })?;
        let crls: Vec<CertificateRevocationListDer<'static>> =
            CertificateRevocationListDer::pem_slice_iter(&pem)
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| tls_error(crl_path, format!("not a PEM CRL bundle: {e}")))?;
        if crls.is_empty() {
            return Err(tls_error(
                crl_path,
                "holds no revocation list (expected PEM: -----BEGIN X509 CRL-----)".into(),
            ));
        }
        // The client's own certificate is looked up in its CA's list; a list that does not
        // cover it (another CA's) refuses it rather than letting it through unchecked.
        builder = builder.with_crls(crls).only_check_end_entity_revocation();
    }
    builder.build().map_err(|e| {
        let path = client.crl.as_deref().unwrap_or(ca_path);
        let e = e.to_string();
        // OpenSSL writes v1 lists unless told otherwise; rustls reads v2 only.
        let hint = if e.contains("CRL") {
            " (a revocation list must be v2, with a CRL number and the CA's key identifier, as RFC 5280 asks: `openssl ca -gencrl` with crlnumber and crl_extensions set)"
        } else {
            ""
        };
        tls_error(path, format!("cannot check client certificates with it: {e}{hint}"))
    })
}

fn tls_error(path: &Path, message: String) -> Error {
    Error::Tls {
        path: path.to_path_buf(),
        message,
    }
}

/// The certificates in a PEM file (`what` names the file in messages, `kind` what it holds).
fn read_certs(path: &Path, what: &str, kind: &str) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).map_err(|source| Error::Io {
        what: format!("cannot read the {what} {}", path.display()),
        source,
    })?;
    CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| tls_error(path, format!("not a PEM certificate {kind}: {e}")))
}

/// Reads and checks one certificate chain and its key.
fn read_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
    now: Timestamp,
) -> Result<(Arc<CertifiedKey>, CertSummary)> {
    let chain = read_certs(cert_path, "TLS certificate", "chain")?;
    let leaf = chain.first().ok_or_else(|| {
        tls_error(
            cert_path,
            "holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
        )
    })?;
    let summary = summarise(leaf).map_err(|m| tls_error(cert_path, m))?;
    if summary.not_after <= now {
        return Err(tls_error(
            cert_path,
            format!(
                "the certificate {} expired at {}",
                summary.subject, summary.not_after
            ),
        ));
    }
    crate::store::private_files::check_private(key_path)?;
    let key_pem = std::fs::read(key_path).map_err(|source| Error::Io {
        what: format!("cannot read the TLS key {}", key_path.display()),
        source,
    })?;
    // The key's bytes are never put in a message: only what kind of problem it is.
    let encrypted = key_pem
        .windows(b"ENCRYPTED PRIVATE KEY".len())
        .any(|w| w == b"ENCRYPTED PRIVATE KEY");
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        let why = match e {
            _ if encrypted => {
                "is encrypted: a daemon cannot type its passphrase; store it decrypted (`openssl pkey -in KEY -out KEY.new`) with mode 0600".to_string()
            }
            rustls::pki_types::pem::Error::NoItemsFound => {
                "holds no private key (expected PEM: PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)"
                    .to_string()
            }
            _ => "is not a readable PEM private key".to_string(),
        };
        tls_error(key_path, why)
    })?;
    let signing = provider.key_provider.load_private_key(key).map_err(|_| {
        tls_error(
            key_path,
            "holds a key of a kind TLS cannot sign with".into(),
        )
    })?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|_| {
        tls_error(
            key_path,
            format!(
                "is not the key of the certificate in {} ({})",
                cert_path.display(),
                summary.subject
            ),
        )
    })?;
    Ok((Arc::new(certified), summary))
}

/// The leaf's subject and end of validity.
fn summarise(leaf: &CertificateDer<'_>) -> std::result::Result<CertSummary, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("its first certificate cannot be parsed: {e}"))?;
    let end = cert.validity().not_after.timestamp();
    let not_after = Timestamp::from_second(end)
        .map_err(|e| format!("its first certificate's end of validity is out of range: {e}"))?;
    Ok(CertSummary {
        subject: cert.subject().to_string(),
        not_after,
    })
}
