//! The PhoneFactor test double: a test PKI made with the openssl command at test time, and an
//! HTTPS server on 127.0.0.1 that requires a client certificate from that test CA and answers
//! `pfpMessage` requests as a scripted user would.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Runs the openssl command in `dir`, failing the test with its message when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command (scripts/test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test CA, a server certificate for 127.0.0.1, a client certificate from the CA in a
/// modern and a legacy (RC2/3DES) PKCS#12 file, and a client certificate from elsewhere.
pub fn pki(dir: &Path) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=rolegate test CA",
    ]);
    openssl(dir, &ca);
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (who, ext) in [("server", "server.ext"), ("client", "client.ext")] {
        let mut req = vec!["req"];
        req.extend(ec);
        let (key, csr, pem) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.pem"),
        );
        let subj = format!("/CN={who}");
        req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(dir, &req);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                ext,
            ],
        );
    }
    let export = [
        "pkcs12",
        "-export",
        "-inkey",
        "client.key",
        "-in",
        "client.pem",
        "-certfile",
        "ca.pem",
        "-passout",
        "pass:s3cret&pw",
    ];
    let mut modern = export.to_vec();
    modern.extend(["-out", "client.p12"]);
    openssl(dir, &modern);
    let mut legacy = export.to_vec();
    legacy.extend(["-legacy", "-out", "client-legacy.p12"]);
    openssl(dir, &legacy);
    let mut rogue = vec!["req", "-x509"];
    rogue.extend(ec);
    rogue.extend([
        "-keyout",
        "rogue.key",
        "-out",
        "rogue.pem",
        "-days",
        "2",
        "-subj",
        "/CN=rogue",
    ]);
    openssl(dir, &rogue);
    openssl(
        dir,
        &[
            "pkcs12",
            "-export",
            "-inkey",
            "rogue.key",
            "-in",
            "rogue.pem",
            "-passout",
            "pass:x",
            "-out",
            "rogue.p12",
        ],
    );
}

/// An HTTPS server on 127.0.0.1 that requires a client certificate from the test CA and
/// answers every POST with `answer`, recording the bodies.
pub struct Double {
    /// The double's port on 127.0.0.1.
    pub port: u16,
    /// Every request body it accepted.
    pub bodies: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Double {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Double {
    /// Starts the double; `answer` gives, for a request body, a delay in ms and the XML reply.
    pub fn start(dir: &Path, answer: fn(&str) -> (u64, String)) -> Double {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&provider),
        )
        .build()
        .unwrap();
        let certs: Vec<_> = CertificateDer::pem_file_iter(dir.join("server.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs, key)
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (Arc::clone(&bodies), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            for _ in 0..50 {
                let Ok((mut tcp, _)) = listener.accept() else {
                    return;
                };
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let (config, b) = (Arc::clone(&config), Arc::clone(&b));
                std::thread::spawn(move || {
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut conn = rustls::ServerConnection::new(Arc::clone(&config)).unwrap();
                    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Read the head and the body (Content-Length); a refused handshake ends here.
                    let body = loop {
                        match tls.read(&mut chunk) {
                            Ok(0) | Err(_) => break None,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        let text = String::from_utf8_lossy(&buf).to_string();
                        if let Some((head, body)) = text.split_once("\r\n\r\n") {
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("Content-Length: "))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            if body.len() >= len {
                                break Some((head.to_string(), body.to_string()));
                            }
                        }
                    };
                    let Some((head, body)) = body else { return };
                    assert!(head.starts_with("POST /pfd/pfd.pl HTTP/1.0"), "{head}");
                    assert!(
                        head.contains("Content-Type: text/xml; charset=utf-8"),
                        "{head}"
                    );
                    b.lock().unwrap().push(body.clone());
                    let (delay, answer) = answer(&body);
                    std::thread::sleep(Duration::from_millis(delay));
                    let reply = format!(
                        "HTTP/1.0 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    let _ = tls.write_all(reply.as_bytes());
                    let _ = tls.flush();
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                });
            }
        });
        Double {
            port,
            bodies,
            stop,
            thread: Some(thread),
        }
    }
}

/// The license and group keys the double accepts (the deployment files carry them).
pub const LICENSE_KEY: &str = "LIC-123";
/// See [`LICENSE_KEY`].
pub const GROUP_KEY: &str = "GRP-456";

/// The PIN the scripted user at `…0001` types when a call asks for one.
pub const USER_PIN: &str = "7391";

/// Answers as a scripted user would, by the number's last four digits: `0001` answers and
/// presses # (in PIN mode: types [`USER_PIN`], so the call succeeds only when the request
/// carries that PIN; in SMS modes: a one-way text with code 482913, or a two-way text
/// answered), `0002` answers but types no PIN, `0009` answers after 1.5 s, `0004` never
/// answers, `0013` voicemail, `0014` blocked, `0108` hangs up, `0112` enters the fraud code,
/// anything else is an invalid number. Unknown license or group keys fail the request
/// (error 5).
pub fn scripted(body: &str) -> (u64, String) {
    let has = |s: &str| body.contains(s);
    if !has(&format!("<licenseKey>{LICENSE_KEY}</licenseKey>"))
        || !has(&format!("<groupKey>{GROUP_KEY}</groupKey>"))
    {
        return (0, "<pfpMessage><response><status disposition=\"fail\"><error-id>5</error-id></status></response></pfpMessage>".into());
    }
    let number = body
        .split("<phonenumber")
        .nth(1)
        .and_then(|r| r.split('>').nth(1))
        .and_then(|r| r.split('<').next())
        .unwrap_or_default();
    let suffix = &number[number.len().saturating_sub(4)..];
    // SMS modes: a one-way text reports the code it sent (callStatus 20); a two-way text
    // answered with its code is callStatus 19.
    if body.contains("mode=\"sms\"") && suffix == "0001" {
        let reply = if body.contains("direction=\"one-way\"") {
            "<authenticated>no</authenticated><callStatus>20</callStatus><otp>482913</otp>"
        } else {
            "<authenticated>yes</authenticated><callStatus>19</callStatus>"
        };
        return (
            0,
            format!(
                "<pfpMessage><response request-id=\"1\"><status disposition=\"success\"/><authenticationResponse>{reply}</authenticationResponse></response></pfpMessage>"
            ),
        );
    }
    // PIN mode: the user types their PIN; PhoneFactor compares it with the request's.
    let pin_mode = body.contains("pinMode=\"pin\"");
    let pin_matches = body
        .split("<pin ")
        .nth(1)
        .and_then(|r| r.split('>').nth(1))
        .and_then(|r| r.split('<').next())
        == Some(USER_PIN);
    let (delay, status, yes) = match suffix {
        "0001" if pin_mode => (0, 1, pin_matches),
        "0001" => (0, 1, true),
        "0002" => (0, 2, false),
        "0009" => (1500, 1, true),
        "0004" => (0, 4, false),
        "0013" => (0, 13, false),
        "0014" => (0, 14, false),
        "0108" => (0, 108, false),
        "0112" => (0, 112, false),
        _ => (0, 100, false),
    };
    let yes = if yes { "yes" } else { "no" };
    (
        delay,
        format!(
            "<pfpMessage><response request-id=\"1\"><status disposition=\"success\"/><authenticationResponse><authenticated>{yes}</authenticated><callStatus>{status}</callStatus></authenticationResponse></response></pfpMessage>"
        ),
    )
}

fn private(p: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(p, bytes).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A deployment's files in `dir` (after [`pki`]): an `MfaSettings.xml` as MIM's setup leaves
/// it (BOM, CRLF, a Windows `CertFilePath`), the legacy .p12 beside it as `cert_key.p12`;
/// returns the provider settings that point at them and at the double on `port`.
pub fn deployment(dir: &Path, port: u16) -> serde_json::Value {
    private(
        &dir.join("MfaSettings.xml"),
        format!("\u{feff}<MfaSettings>\r\n<LICENSE_KEY>{LICENSE_KEY}</LICENSE_KEY>\r\n<GROUP_KEY>{GROUP_KEY}</GROUP_KEY>\r\n<CERT_PASSWORD>s3cret&amp;pw</CERT_PASSWORD>\r\n<CertFilePath>C:\\MIM\\cert_key.p12</CertFilePath>\r\n<DefaultCountryCode>1</DefaultCountryCode>\r\n</MfaSettings>\r\n").as_bytes(),
    );
    let p12 = std::fs::read(dir.join("client-legacy.p12")).unwrap();
    private(&dir.join("cert_key.p12"), &p12);
    serde_json::json!({
        "mfa_settings": dir.join("MfaSettings.xml"),
        "ca_file": dir.join("ca.pem"),
        "endpoints": [format!("https://127.0.0.1:{port}/pfd/pfd.pl")],
        "call_timeout_s": 10,
    })
}
