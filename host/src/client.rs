//! The CLI's side of the API: a small client for the daemon, with human and JSON output.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::model::error::{Error, Result};

/// A client of one daemon, with one token.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    /// Whether it presents a client certificate (for what a refused connection means).
    presents_certificate: bool,
    /// How the smartcard responder finds the card (reader, wait).
    card: crate::smartcard::Options,
}

fn transport(url: &str, presents_certificate: bool, e: reqwest::Error) -> Error {
    // reqwest's own message is only "error sending request": the cause is in its sources.
    let e = e.without_url();
    let mut why = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        why = format!("{why}: {s}");
        source = s.source();
    }
    // What the daemon's side of the handshake refused comes back as an alert it sent.
    let alert = |names: &[&str]| {
        names
            .iter()
            .any(|n| why.contains(&format!("received fatal alert: {n}")))
    };
    let hint = if alert(&["CertificateRequired"]) {
        "the daemon asks for a client certificate: set --client-cert and --client-key (or ROLEGATE_CLIENT_CERT and ROLEGATE_CLIENT_KEY)"
    } else if alert(&[
        "UnknownCA",
        "BadCertificate",
        "DecryptError",
        "CertificateUnknown",
        "CertificateExpired",
        "CertificateRevoked",
        "UnsupportedCertificate",
    ]) {
        "the daemon refused the client certificate: it must come from the CA in the daemon's [server] tls_client_ca"
    } else if url.starts_with("https:") && closed_early(&why) {
        // TLS 1.3: the daemon judges the client's certificate (or its absence) after the
        // client's side of the handshake is done, and its alert may lose the race with the
        // request: then all the client sees is a connection closed before any answer.
        if presents_certificate {
            "the daemon closed the connection after the TLS handshake: it may have refused the client certificate, which must come from the CA in the daemon's [server] tls_client_ca"
        } else {
            "the daemon closed the connection after the TLS handshake: if it asks for client certificates ([server] tls_client_ca), set --client-cert and --client-key (or ROLEGATE_CLIENT_CERT and ROLEGATE_CLIENT_KEY)"
        }
    } else if why.contains("not valid for name") || why.contains("NotValidForName") {
        "the daemon's certificate is not for this host name: use a name (or address) its certificate names in --server"
    } else if why.contains("certificate expired") || why.contains("Expired") {
        "the daemon's certificate has expired: renew it, then `systemctl reload rolegate` (SIGHUP)"
    } else if why.contains("certificate") {
        "the daemon's certificate is not trusted: set --ca-file or ROLEGATE_CA_FILE to the CA that signed it"
    } else {
        "is `rolegate serve` running? set --server or ROLEGATE_URL"
    };
    Error::Io {
        what: format!("cannot reach the rolegate daemon at {url} ({hint})"),
        source: std::io::Error::other(why),
    }
}

/// Whether a request's error says the connection closed before the request went out or its
/// answer came back (hyper's words for it).
fn closed_early(why: &str) -> bool {
    [
        "connection was not ready",
        "connection closed before message completed",
        "peer closed connection without sending TLS close_notify",
        "Connection reset by peer",
    ]
    .iter()
    .any(|w| why.contains(w))
}

/// Whether `url` names this machine (a token sent there in clear does not cross a network).
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The client certificate and key the CLI presents, read as one PEM identity. The key file
/// must be private (as SSH keys are); its bytes never appear in a message.
fn client_identity(cert: &Path, key: &Path) -> Result<reqwest::Identity> {
    let mut pem = std::fs::read(cert).map_err(|source| Error::Io {
        what: format!("cannot read the client certificate {}", cert.display()),
        source,
    })?;
    if !pem
        .windows(b"BEGIN CERTIFICATE".len())
        .any(|w| w == b"BEGIN CERTIFICATE")
    {
        return Err(Error::Invalid {
            what: format!("client certificate {}", cert.display()),
            message: "holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
        });
    }
    crate::store::private_files::check_private(key)?;
    let key_pem = std::fs::read(key).map_err(|source| Error::Io {
        what: format!("cannot read the client key {}", key.display()),
        source,
    })?;
    pem.push(b'\n');
    pem.extend_from_slice(&key_pem);
    reqwest::Identity::from_pem(&pem).map_err(|_| Error::Invalid {
        what: format!("client key {}", key.display()),
        message: "is not a readable, unencrypted PEM private key for the certificate".into(),
    })
}

impl Client {
    /// The same client, its smartcard responder using `reader` (None: the only one) and
    /// waiting up to `wait` for a card.
    pub fn with_card(mut self, reader: Option<String>, wait: Duration) -> Self {
        self.card = crate::smartcard::Options { reader, wait };
        self
    }

    /// Has the card sign a smartcard prompt's challenge (PC/SC on a blocking thread; the PIN
    /// read without echo, never shown or logged): the answer the provider takes.
    async fn card_answer(&self, prompt: &Value) -> Result<Value> {
        use base64::Engine as _;
        use base64::engine::general_purpose::STANDARD;
        let challenge = prompt["challenge"]
            .as_str()
            .and_then(|c| STANDARD.decode(c).ok())
            .ok_or_else(|| Error::Invalid {
                what: "prompt".into(),
                message: "the smartcard prompt has no challenge to sign".into(),
            })?;
        if let Some(message) = prompt["message"].as_str() {
            eprintln!("{message}");
        }
        let options = self.card.clone();
        let answer = tokio::task::spawn_blocking(move || {
            crate::smartcard::sign(
                &challenge,
                &options,
                &mut |question| read_code(question).map(|pin| pin.trim().to_string()),
                &mut |progress| eprintln!("{progress}"),
            )
        })
        .await
        .map_err(|e| Error::Invalid {
            what: "smartcard".into(),
            message: format!("the card's thread failed: {e}"),
        })??;
        Ok(json!({
            "certificate": STANDARD.encode(&answer.certificate),
            "signature": STANDARD.encode(&answer.signature),
        }))
    }

    /// What a terminal says of a prompt it cannot answer: for a WebAuthn ceremony (which needs
    /// a browser), the link to the daemon's page where it runs.
    fn to_the_page(&self, kind: Option<&str>, fragment: &str) -> String {
        match kind {
            Some("webauthn") => format!(
                "a WebAuthn ceremony (Windows Hello, a security key) runs in a browser, not in a terminal: open {}/{fragment}, sign in with your token, and follow the page",
                self.base.trim_end_matches('/')
            ),
            other => format!(
                "this terminal cannot answer a `{}` prompt; use the web page ({})",
                other.unwrap_or("unknown"),
                self.base.trim_end_matches('/')
            ),
        }
    }

    /// A client of the daemon at `base` (`http://127.0.0.1:8420`, `https://pam.example.org:8420`),
    /// trusting the certificates in `ca_file` (PEM) beside the system's. A token is never
    /// sent over plain HTTP to another machine.
    pub fn new(base: &str, token: Option<String>, ca_file: Option<&Path>) -> Result<Self> {
        Self::with_identity(base, token, ca_file, None)
    }

    /// Like [`Client::new`], presenting the certificate in `identity` (a PEM chain, and its
    /// key in a private file) to a daemon that asks for client certificates (mutual TLS).
    pub fn with_identity(
        base: &str,
        token: Option<String>,
        ca_file: Option<&Path>,
        identity: Option<(&Path, &Path)>,
    ) -> Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        let bad_url = |message: String| Error::Invalid {
            what: format!("server URL `{base}`"),
            message,
        };
        let url = reqwest::Url::parse(&base).map_err(|e| bad_url(e.to_string()))?;
        match url.scheme() {
            "https" => {}
            "http" if token.is_none() || is_loopback(&url) => {}
            "http" => {
                return Err(bad_url(
                    "plain HTTP to another machine would send the token unencrypted: use https:// (the daemon's [server] tls_cert, or a TLS proxy in front of it)".into(),
                ));
            }
            other => {
                return Err(bad_url(format!(
                    "the scheme `{other}` is not http or https"
                )));
            }
        }
        let mut builder = reqwest::Client::builder();
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|source| Error::Io {
                what: format!("cannot read the CA file {}", path.display()),
                source,
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| Error::Invalid {
                    what: format!("CA file {}", path.display()),
                    message: format!("not a PEM certificate bundle: {e}"),
                })?;
            if certs.is_empty() {
                return Err(Error::Invalid {
                    what: format!("CA file {}", path.display()),
                    message: "holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)"
                        .into(),
                });
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let presents_certificate = identity.is_some();
        if let Some((cert, key)) = identity {
            builder = builder.identity(client_identity(cert, key)?);
        }
        let http = builder.build().map_err(|e| Error::Invalid {
            what: "HTTP client".into(),
            message: e.to_string(),
        })?;
        Ok(Self {
            base,
            token,
            http,
            presents_certificate,
            card: crate::smartcard::Options {
                reader: None,
                wait: Duration::from_secs(30),
            },
        })
    }

    /// Sends one call; an error answer becomes an error naming the server's message.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "GET" => self.http.get(&url),
            "POST" => self.http.post(&url),
            "PATCH" => self.http.patch(&url),
            "PUT" => self.http.put(&url),
            _ => self.http.delete(&url),
        };
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| transport(&self.base, self.presents_certificate, e))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| transport(&self.base, self.presents_certificate, e))?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok(value);
        }
        let message = value["error"]["message"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| value.as_str().unwrap_or("").to_string());
        Err(match status.as_u16() {
            401 if self.token.as_deref().is_none_or(|t| t.trim().is_empty()) => Error::NoToken,
            401 => Error::TokenRefused { message },
            404 => Error::NotFound {
                what: message.trim_end_matches(" not found").to_string(),
            },
            409 => Error::Conflict(message),
            _ => Error::Daemon {
                status: status.as_u16(),
                message: if message.trim().is_empty() {
                    format!("the daemon answered {status}")
                } else {
                    message
                },
            },
        })
    }
}

/// Percent-encodes one path segment (accounts hold `\`).
pub fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Prints rows of `columns` from a JSON array (or one object) as an aligned table.
pub fn table(value: &Value, columns: &[(&str, &str)]) -> String {
    let rows: Vec<&Value> = match value {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    let cell = |v: &Value, key: &str| -> String {
        let mut cur = v;
        for part in key.split('.') {
            cur = &cur[part];
        }
        match cur {
            Value::Null => "-".into(),
            // Times (Unix ms) as a person reads them, UTC to the second.
            Value::Number(n) if key.ends_with("_at") => n
                .as_i64()
                .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
                .map(|t| t.strftime("%Y-%m-%d %H:%M:%SZ").to_string())
                .unwrap_or_else(|| n.to_string()),
            Value::String(s) => s.clone(),
            Value::Array(a) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(String::from)
                        .unwrap_or_else(|| x.to_string())
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        }
    };
    let mut widths: Vec<usize> = columns.iter().map(|(h, _)| h.len()).collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|(_, k)| cell(r, k)).collect())
        .collect();
    for row in &cells {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |vals: Vec<&str>, out: &mut String| {
        let parts: Vec<String> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{v:<w$}", w = widths[i]))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(columns.iter().map(|(h, _)| *h).collect(), &mut out);
    for row in &cells {
        line(row.iter().map(String::as_str).collect(), &mut out);
    }
    out
}

fn end_time(v: &Value) -> String {
    v["expires_at"]
        .as_i64()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|t| t.to_string())
        .unwrap_or_else(|| "-".into())
}

/// Walks a new request through its MFA in the terminal: reads codes without echo, shows a
/// spinner while a provider waits, and ends with the request's final state.
pub async fn walk_request(client: &Client, mut v: Value) -> Result<Value> {
    let frames = ['|', '/', '-', '\\'];
    let mut frame = 0;
    loop {
        if v["state"] != "pending_mfa" {
            break;
        }
        let id = v["id"].as_str().unwrap_or_default().to_string();
        if let Some(reason) = v["reason"].as_str() {
            eprintln!("{reason}");
        }
        let prompt = v["prompt"].clone();
        match prompt["kind"].as_str() {
            Some("code") => {
                let message = prompt["message"].as_str().unwrap_or("Enter the code");
                let code = read_code(message)?;
                match client
                    .call(
                        "POST",
                        &format!("/v1/requests/{id}/answer"),
                        Some(json!({"code": code.trim()})),
                    )
                    .await
                {
                    Ok(next) => v = next,
                    // A malformed code changes nothing on the server: ask again.
                    Err(Error::Daemon {
                        status: 400 | 422,
                        message,
                    }) => {
                        eprintln!("{message}");
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            Some("wait") | Some("phone") => {
                let status = prompt["status"]
                    .as_str()
                    .or(prompt["message"].as_str())
                    .unwrap_or("waiting for the provider");
                let after = prompt["poll_after_ms"]
                    .as_u64()
                    .unwrap_or(1000)
                    .clamp(200, 10_000);
                let mut err = std::io::stderr();
                let _ = write!(err, "\r{} {status}   ", frames[frame % frames.len()]);
                let _ = err.flush();
                frame += 1;
                tokio::time::sleep(Duration::from_millis(after)).await;
                v = client
                    .call("POST", &format!("/v1/requests/{id}/poll"), None)
                    .await?;
                if v["state"] != "pending_mfa" {
                    let _ = writeln!(err);
                }
            }
            Some("smartcard") => {
                let value = client.card_answer(&prompt).await?;
                v = client
                    .call(
                        "POST",
                        &format!("/v1/requests/{id}/answer"),
                        Some(json!({"input": {"kind": "json", "value": value}})),
                    )
                    .await?;
            }
            other => {
                return Err(Error::Invalid {
                    what: "prompt".into(),
                    message: client.to_the_page(other, &format!("#request/{id}")),
                });
            }
        }
    }
    walk_shadow(client, v).await
}

/// Walks a role's shadow factor once the real one is done: asks for it, says it does not
/// decide the request, and lets the user skip it (an empty line, or no input). Whatever
/// happens to it, the request as it stands is returned.
async fn walk_shadow(client: &Client, mut v: Value) -> Result<Value> {
    let mut told = false;
    let mut polls = 0u32;
    loop {
        let shadow = v["shadow"].clone();
        if shadow.is_null() {
            return Ok(v);
        }
        if let Some(reason) = shadow["reason"].as_str() {
            eprintln!("{reason}");
        }
        if shadow["outcome"] != "asked" {
            return Ok(v);
        }
        let provider = shadow["provider"].as_str().unwrap_or("a new factor");
        if !told {
            eprintln!(
                "Role `{}` is trying the factor `{provider}` before relying on it. Your request does not depend on it; an empty answer skips it.",
                v["role"].as_str().unwrap_or("-")
            );
            told = true;
        }
        let id = v["id"].as_str().unwrap_or_default().to_string();
        let prompt = &shadow["prompt"];
        let next = match prompt["kind"].as_str() {
            Some("code") => {
                let message = prompt["message"].as_str().unwrap_or("Enter the code");
                let code = match read_code(message) {
                    Ok(c) if !c.trim().is_empty() => c,
                    // Skipped: the request stands; the trial ends unanswered.
                    _ => return Ok(v),
                };
                client
                    .call(
                        "POST",
                        &format!("/v1/requests/{id}/answer"),
                        Some(json!({"code": code.trim()})),
                    )
                    .await
            }
            Some("wait") | Some("phone") if polls < 120 => {
                polls += 1;
                let after = prompt["poll_after_ms"]
                    .as_u64()
                    .unwrap_or(1000)
                    .clamp(200, 10_000);
                tokio::time::sleep(Duration::from_millis(after)).await;
                client
                    .call("POST", &format!("/v1/requests/{id}/poll"), None)
                    .await
            }
            _ => return Ok(v),
        };
        match next {
            Ok(n) => {
                let ended = n["shadow"].is_null();
                v = n;
                if ended {
                    return Ok(v);
                }
            }
            // The trial never fails the request: its error is shown, the request stands.
            Err(e) => {
                eprintln!("the trial factor: {e}");
                return Ok(v);
            }
        }
    }
}

/// Walks an enrolment: shows the material a `display` prompt carries, reads the code that
/// confirms it, and continues until the provider is done.
pub async fn walk_enrolment(client: &Client, mut v: Value) -> Result<Value> {
    let mut refused = 0;
    while v["done"] != true && v["state"].is_string() {
        let prompt = v["prompt"].clone();
        let state = v["state"].as_str().unwrap_or_default().to_string();
        let provider = v["provider"].as_str().unwrap_or_default().to_string();
        let question = match prompt["kind"].as_str() {
            Some("display") => {
                eprintln!("{}", prompt["message"].as_str().unwrap_or(""));
                if let Some(text) = prompt["text"].as_str() {
                    eprintln!("{text}");
                }
                if let Some(uri) = prompt["uri"].as_str() {
                    eprintln!("{uri}");
                }
                "Type the code to confirm".to_string()
            }
            Some("code") => prompt["message"]
                .as_str()
                .unwrap_or("Enter the code")
                .to_string(),
            Some("smartcard") => {
                let value = client.card_answer(&prompt).await?;
                v = client
                    .call(
                        "POST",
                        "/v1/enrolments/continue",
                        Some(json!({"provider": provider, "state": state,
                            "input": {"kind": "json", "value": value}})),
                    )
                    .await?;
                continue;
            }
            other => {
                return Err(Error::Invalid {
                    what: "prompt".into(),
                    message: client.to_the_page(other, &format!("#enrol/{provider}")),
                });
            }
        };
        let code = read_code(&question)?;
        match client
            .call(
                "POST",
                "/v1/enrolments/continue",
                Some(json!({"provider": provider, "state": state, "code": code.trim()})),
            )
            .await
        {
            Ok(next) => {
                v = next;
                refused = 0;
            }
            // A refused entry (a PIN too easy to guess) changes nothing: ask again, a few times.
            Err(Error::Daemon {
                status: 400 | 422,
                message,
            }) if refused < 4 => {
                refused += 1;
                eprintln!("{message}");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(v)
}

/// Reads a code: from the terminal without echo, or a line of standard input for scripts.
pub fn read_code(message: &str) -> Result<String> {
    use std::io::IsTerminal as _;
    let io = |source| Error::Io {
        what: "reading the code".into(),
        source,
    };
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password(format!("{message}: ")).map_err(io);
    }
    eprintln!("{message}:");
    let mut line = String::new();
    let n = std::io::stdin().read_line(&mut line).map_err(io)?;
    if n == 0 {
        return Err(Error::Invalid {
            what: "code".into(),
            message: "standard input ended before a code was given".into(),
        });
    }
    Ok(line)
}

/// One line about a request's outcome, for people.
pub fn request_summary(v: &Value) -> String {
    let id = v["id"].as_str().unwrap_or("-");
    let role = v["role"].as_str().unwrap_or("-");
    match v["state"].as_str() {
        Some("active") => format!(
            "request {id}: role `{role}` is active until {}",
            end_time(v)
        ),
        Some("scheduled") => format!(
            "request {id}: role `{role}` granted from {} until {}",
            v["starts_at"]
                .as_i64()
                .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into()),
            end_time(v)
        ),
        // "MFA done" only where there was MFA.
        Some("pending_approval") if v["provider"].is_string() => {
            format!("request {id}: MFA done; waiting for an approver of `{role}`")
        }
        Some("pending_approval") => {
            format!("request {id}: waiting for an approver of `{role}`")
        }
        Some(state) => format!(
            "request {id}: {state}{}",
            v["reason"]
                .as_str()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        ),
        None => format!("request {id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_never_goes_in_clear_to_another_machine() {
        let token = || Some("rg_secret".to_string());
        for local in [
            "http://127.0.0.1:8420",
            "http://localhost:8420/",
            "http://[::1]:8420",
            "https://pam.example.org:8420",
        ] {
            assert!(Client::new(local, token(), None).is_ok(), "{local}");
        }
        let e = Client::new("http://pam.example.org:8420", token(), None).unwrap_err();
        let message = e.to_string();
        assert!(
            message.contains("server URL `http://pam.example.org:8420`")
                && message.contains("would send the token unencrypted")
                && !message.contains("rg_secret"),
            "{message}"
        );
        // Without a token nothing secret is sent (the web page, /healthz).
        assert!(Client::new("http://pam.example.org:8420", None, None).is_ok());
        let e = Client::new("ftp://127.0.0.1", None, None).unwrap_err();
        assert!(e.to_string().contains("`ftp` is not http or https"), "{e}");
        let e = Client::new("127.0.0.1:8420", None, None).unwrap_err();
        assert!(e.to_string().contains("server URL `127.0.0.1:8420`"), "{e}");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate\n").unwrap();
        let e = Client::new("https://127.0.0.1:8420", None, Some(&ca)).unwrap_err();
        assert!(
            e.to_string().contains("ca.pem") && e.to_string().contains("holds no certificate"),
            "{e}"
        );
        let missing = dir.path().join("missing.pem");
        let e = Client::new("https://127.0.0.1:8420", None, Some(&missing)).unwrap_err();
        assert!(
            e.to_string().contains("cannot read the CA file")
                && e.to_string().contains("missing.pem"),
            "{e}"
        );
    }
}
