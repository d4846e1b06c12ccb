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
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::error::{Error, Result};

/// A certificate this close to its end is reported at start, at each reload and twice a day.
pub const EXPIRY_WARNING: jiff::SignedDuration = jiff::SignedDuration::from_hours(14 * 24);

/// What the daemon serves HTTPS with: the files it came from and the key pair in use.
pub struct ServerTls {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Arc<Current>,
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
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
    /// they belong together and that the certificate is valid at `now`.
    pub fn load(cert_path: &Path, key_path: &Path, now: Timestamp) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let (key, summary) = read_pair(cert_path, key_path, &provider, now)?;
        let current = Arc::new(Current(RwLock::new((key, summary))));
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error(cert_path, format!("no TLS version to offer: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            provider,
            current,
            config: Arc::new(config),
        })
    }

    /// Reads the files again and serves new handshakes with them; on any error the pair in use
    /// stays (a renewal half-written, a key left world-readable must not take HTTPS down).
    pub fn reload(&self, now: Timestamp) -> Result<CertSummary> {
        let (key, summary) = read_pair(&self.cert_path, &self.key_path, &self.provider, now)?;
        let mut current = self.current.0.write().map_err(|_| {
            tls_error(
                &self.cert_path,
                "the certificate in use is unreadable".into(),
            )
        })?;
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

    /// An acceptor for one connection's handshake.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config))
    }
}

fn tls_error(path: &Path, message: String) -> Error {
    Error::Tls {
        path: path.to_path_buf(),
        message,
    }
}

/// Reads and checks one certificate chain and its key.
fn read_pair(
    cert_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
    now: Timestamp,
) -> Result<(Arc<CertifiedKey>, CertSummary)> {
    let pem = std::fs::read(cert_path).map_err(|source| Error::Io {
        what: format!("cannot read the TLS certificate {}", cert_path.display()),
        source,
    })?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| tls_error(cert_path, format!("not a PEM certificate chain: {e}")))?;
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
    crate::config::check_private(key_path)?;
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
