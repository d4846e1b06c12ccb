//! The PhoneFactor transport: the XML request POSTed over HTTPS with the client certificate
//! from the deployment's PKCS#12 file, to the primary endpoint and then each backup on a
//! transport failure — as the SDK did (HTTP/1.0, no keep-alive, `text/xml`).

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs as _};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

use crate::Error;

/// Azure MFA's primary and backup endpoints, as the SDK had them.
pub const DEFAULT_ENDPOINTS: &[&str] = &[
    "https://pfd.phonefactor.net/pfd/pfd.pl",
    "https://pfd2.phonefactor.net/pfd/pfd.pl",
];

/// The most of a response read: PhoneFactor's answers are a few hundred bytes.
const MAX_RESPONSE: u64 = 256 * 1024;

/// One endpoint: `https://host[:port]/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// TCP port (443 unless given).
    pub port: u16,
    /// The request path.
    pub path: String,
}

impl Endpoint {
    /// Parses an `https://` URL; anything else is refused, naming it.
    pub fn parse(url: &str) -> Result<Self, Error> {
        let bad = |why: &str| Error::Transport(format!("endpoint `{url}`: {why}"));
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad("must start with https://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("needs a host and no user name"));
        }
        let port = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| bad("the port is not a number"))
        };
        // An IPv6 address is in brackets (`[::1]`, `[::1]:8443`): its colons are not a port's.
        let (host, port) = match authority.strip_prefix('[') {
            Some(bracketed) => match bracketed.split_once(']') {
                Some((h, "")) => (h, 443),
                Some((h, after)) => match after.strip_prefix(':') {
                    Some(p) => (h, port(p)?),
                    None => return Err(bad("has text after its `]` that is no port")),
                },
                None => return Err(bad("opens a `[` it does not close")),
            },
            None => match authority.rsplit_once(':') {
                Some((h, _)) if h.contains(':') => {
                    return Err(bad(
                        "an IPv6 address goes in brackets: `https://[::1]:443/…`",
                    ));
                }
                Some((h, p)) => (h, port(p)?),
                None => (authority, 443),
            },
        };
        if host.is_empty() || host.contains(['[', ']']) || path.contains(char::is_whitespace) {
            return Err(bad("is not a usable URL"));
        }
        Ok(Self {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

/// The client certificate and key from a PKCS#12 file (modern AES or legacy RC2/3DES).
pub fn load_p12(
    bytes: &[u8],
    password: &str,
    name: &str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), Error> {
    let bad = |why: String| Error::Certificate {
        file: name.to_string(),
        message: why,
    };
    let store = p12_keystore::KeyStore::from_pkcs12(
        bytes,
        password,
        p12_keystore::Pkcs12ImportPolicy::Relaxed,
    )
    .map_err(|e| {
        bad(format!(
            "cannot be opened ({e}); check CERT_PASSWORD in MfaSettings.xml"
        ))
    })?;
    let (_, chain) = store
        .private_key_chain()
        .ok_or_else(|| bad("holds no private key with its certificate".into()))?;
    let certs: Vec<CertificateDer<'static>> = chain
        .certs()
        .iter()
        .map(|c| CertificateDer::from(c.as_der().to_vec()))
        .collect();
    if certs.is_empty() {
        return Err(bad("holds a key without a certificate".into()));
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(chain.key().as_der().to_vec()));
    Ok((certs, key))
}

/// An HTTPS client with the deployment's certificate, and the endpoints in failover order.
pub struct Transport {
    config: Arc<rustls::ClientConfig>,
    endpoints: Vec<Endpoint>,
    timeout: Duration,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("endpoints", &self.endpoints)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Which endpoint answered, and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The index of the endpoint that answered (0: the primary).
    pub endpoint: usize,
    /// The HTTP status.
    pub status: u16,
    /// The response body.
    pub body: String,
}

impl Transport {
    /// A client presenting `certs`/`key`, trusting the system's roots plus `extra_roots_pem`
    /// (a private CA, or a test's), sending to `endpoints` in order.
    pub fn new(
        certs: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        endpoints: &[String],
        extra_roots_pem: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Self, Error> {
        if endpoints.is_empty() {
            return Err(Error::Transport("no endpoint is configured".into()));
        }
        let endpoints = endpoints
            .iter()
            .map(|e| Endpoint::parse(e))
            .collect::<Result<Vec<_>, _>>()?;
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(c);
        }
        if let Some(pem) = extra_roots_pem {
            let mut n = 0;
            for c in CertificateDer::pem_slice_iter(pem) {
                let c = c.map_err(|e| Error::Transport(format!("the CA file is not PEM: {e}")))?;
                roots.add(c).map_err(|e| {
                    Error::Transport(format!("a CA certificate is not usable: {e}"))
                })?;
                n += 1;
            }
            if n == 0 {
                return Err(Error::Transport("the CA file holds no certificate".into()));
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Transport(format!("TLS setup: {e}")))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| Error::Transport(format!("the client certificate is not usable: {e}")))?;
        Ok(Self {
            config: Arc::new(config),
            endpoints,
            timeout,
        })
    }

    /// POSTs `xml` to the first endpoint that answers; transport failures (connect, TLS, a
    /// connection cut before an answer) move on to the next. Every failure is named.
    pub fn post(&self, xml: &str) -> Result<Answer, Error> {
        let mut failures = Vec::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            match self.post_one(e, xml) {
                Ok((status, body)) => {
                    return Ok(Answer {
                        endpoint: i,
                        status,
                        body,
                    });
                }
                Err(why) => failures.push(format!("{}:{}: {why}", e.host, e.port)),
            }
        }
        Err(Error::Transport(format!(
            "no PhoneFactor endpoint answered ({})",
            failures.join("; ")
        )))
    }

    fn post_one(&self, e: &Endpoint, xml: &str) -> Result<(u16, String), String> {
        let addr = (e.host.as_str(), e.port)
            .to_socket_addrs()
            .map_err(|err| format!("cannot resolve: {err}"))?
            .next()
            .ok_or("no address")?;
        let mut tcp = TcpStream::connect_timeout(&addr, self.timeout)
            .map_err(|err| format!("connect: {err}"))?;
        tcp.set_read_timeout(Some(self.timeout))
            .and_then(|()| tcp.set_write_timeout(Some(self.timeout)))
            .map_err(|err| err.to_string())?;
        let name =
            ServerName::try_from(e.host.clone()).map_err(|err| format!("server name: {err}"))?;
        let mut conn = rustls::ClientConnection::new(Arc::clone(&self.config), name)
            .map_err(|err| format!("TLS: {err}"))?;
        let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
        let head = format!(
            "POST {} HTTP/1.0\r\nHost: {}\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            e.path,
            e.host,
            xml.len()
        );
        tls.write_all(head.as_bytes())
            .and_then(|()| tls.write_all(xml.as_bytes()))
            .and_then(|()| tls.flush())
            .map_err(|err| format!("sending: {err}"))?;
        let mut raw = Vec::new();
        match std::io::Read::by_ref(&mut tls)
            .take(MAX_RESPONSE)
            .read_to_end(&mut raw)
        {
            Ok(_) => {}
            // A peer that closes without TLS close_notify after a full answer is common.
            Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => {}
            Err(err) => return Err(format!("reading the answer: {err}")),
        }
        read_answer(&raw).map_err(str::to_string)
    }
}

/// Splits PhoneFactor's raw HTTP answer into its status and body (lossy UTF-8).
///
/// Not part of the crate's interface: public for the fuzz target of `fuzz/` only.
#[doc(hidden)]
pub fn read_answer(raw: &[u8]) -> Result<(u16, String), &'static str> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or("the answer has no HTTP header")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("the answer has no HTTP status")?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rolegate_e2e::phonefactor::{Double, pki};
    use std::net::TcpListener;
    use std::path::Path;

    const OK: &str = "<pfpMessage><response request-id=\"1\"><status disposition=\"success\"/><authenticationResponse><authenticated>yes</authenticated><callStatus>1</callStatus></authenticationResponse></response></pfpMessage>";

    fn transport(
        dir: &Path,
        p12: &str,
        password: &str,
        endpoints: &[String],
    ) -> Result<Transport, Error> {
        let bytes = std::fs::read(dir.join(p12)).unwrap();
        let (certs, key) = load_p12(&bytes, password, p12)?;
        let ca = std::fs::read(dir.join("ca.pem")).unwrap();
        Transport::new(certs, key, endpoints, Some(&ca), Duration::from_secs(5))
    }

    #[test]
    fn endpoints_take_ipv6_addresses_with_or_without_a_port() {
        // Found by fuzzing (fuzz/pfp_response): `https://\u{fffd}]:t88x` was taken whole for
        // a host on port 443 (a `]` before the last colon made the colon no port's), which,
        // written back as a URL, did not parse; and `https://[::1]/pfd` was refused ("the port
        // is not a number": the address's last colon was taken for the port's).
        let e = |host: &str, port: u16, path: &str| Endpoint {
            host: host.into(),
            port,
            path: path.into(),
        };
        for (url, want) in [
            ("https://[::1]/pfd/pfd.pl", e("::1", 443, "/pfd/pfd.pl")),
            ("https://[::1]", e("::1", 443, "/")),
            ("https://[2001:db8::7]:8443/x", e("2001:db8::7", 8443, "/x")),
            (
                "https://pfd.phonefactor.net:443/",
                e("pfd.phonefactor.net", 443, "/"),
            ),
        ] {
            assert_eq!(Endpoint::parse(url).unwrap(), want, "{url}");
        }
        for bad in [
            "https://\u{fffd}]:t88x",
            "https://x]:443/y",
            "https://[::1/x",
            "https://[::1]x/y",
            "https://[::1]:/y",
            "https://::1/x",
            "https://[]/x",
            "https://[a]b]/x",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn modern_and_legacy_pkcs12_files_authenticate_and_failover_finds_the_backup() {
        let dir = tempfile::tempdir().unwrap();
        pki(dir.path());
        let d = Double::start(dir.path(), |_| (0, OK.to_string()));
        // The primary is a closed port: the backup answers.
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoints = vec![
            format!("https://127.0.0.1:{closed}/pfd/pfd.pl"),
            format!("https://127.0.0.1:{}/pfd/pfd.pl", d.port),
        ];
        for p12 in ["client.p12", "client-legacy.p12"] {
            let t = transport(dir.path(), p12, "s3cret&pw", &endpoints).unwrap();
            let a = t.post("<pfpMessage version=\"1.5\"/>").unwrap();
            assert_eq!((a.endpoint, a.status), (1, 200), "{p12}");
            let r = crate::pfp::Response::parse(&a.body).unwrap();
            assert!(
                r.success && r.authenticated && r.call_status == Some(1),
                "{p12}"
            );
        }
        assert_eq!(d.bodies.lock().unwrap().len(), 2);
        assert_eq!(d.bodies.lock().unwrap()[0], "<pfpMessage version=\"1.5\"/>");
    }

    #[test]
    fn a_wrong_password_a_foreign_certificate_and_dead_endpoints_are_named() {
        let dir = tempfile::tempdir().unwrap();
        pki(dir.path());
        let e = transport(
            dir.path(),
            "client-legacy.p12",
            "wrong",
            &["https://127.0.0.1:1/x".into()],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("client-legacy.p12") && e.contains("CERT_PASSWORD"),
            "{e}"
        );
        assert!(!e.contains("wrong"), "no password in errors: {e}");

        let d = Double::start(dir.path(), |_| (0, OK.to_string()));
        let url = vec![format!("https://127.0.0.1:{}/pfd/pfd.pl", d.port)];
        let t = transport(dir.path(), "rogue.p12", "x", &url).unwrap();
        let e = t.post("<x/>").unwrap_err().to_string();
        assert!(
            e.contains("no PhoneFactor endpoint answered") && e.contains(&d.port.to_string()),
            "{e}"
        );
        assert!(
            d.bodies.lock().unwrap().is_empty(),
            "the server never saw the request"
        );

        let closed: Vec<String> = (0..2)
            .map(|_| {
                let p = TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port();
                format!("https://127.0.0.1:{p}/pfd/pfd.pl")
            })
            .collect();
        let t = transport(dir.path(), "client.p12", "s3cret&pw", &closed).unwrap();
        let e = t.post("<x/>").unwrap_err().to_string();
        assert_eq!(e.matches("connect").count(), 2, "both tried: {e}");
        for bad in [
            "http://x/y",
            "https:///y",
            "https://u@h/y",
            "https://h:port/y",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Endpoint::parse("https://pfd.phonefactor.net/pfd/pfd.pl").unwrap(),
            Endpoint {
                host: "pfd.phonefactor.net".into(),
                port: 443,
                path: "/pfd/pfd.pl".into()
            }
        );
    }
}
