//! A test double of Twilio's Messages API: a real HTTP/1.1 server on 127.0.0.1.
//!
//! It serves `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` as Twilio's API defines it
//! (API v2010, the `CreateMessage` operation): HTTP basic auth with the account SID and auth
//! token, a form-encoded body with `To`, `From` and/or `MessagingServiceSid`, and `Body`; a
//! `201 Created` with the message resource on success, and Twilio's error object
//! `{code, message, more_info, status}` otherwise. Every accepted message is recorded so a
//! test can read the code it carried, and the next requests can be scripted to fail — with an
//! error status, or as Twilio also does, with a `201` whose message resource is already
//! `failed` or `undelivered` and carries an `error_code` and `error_message`.
//!
//! `From` is checked as Twilio checks it: an E.164 number, a short code (5 or 6 digits) or an
//! alphanumeric sender ID (1 to 11 of `A-Z a-z 0-9`, space, `+ - _ &`, at least one letter);
//! anything else is refused with 21212.
//!
//! As in Twilio's API definition, `From` and `MessagingServiceSid` may both be sent (the
//! service then sends from `From`); neither is refused with 21603. [`Sent`] keeps both, so a
//! test can check that a client sent exactly one.
//!
//! The server runs on a thread of its own with its own runtime, so both plain and async
//! tests can use it; it stops when the handle is dropped.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failure is a failed test

use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use serde_json::{Value, json};

/// One message the double accepted (answered 201).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The message SID it answered (`SM` and 32 hex digits).
    pub sid: String,
    /// `To`, as sent.
    pub to: String,
    /// `From`, when sent.
    pub from: Option<String>,
    /// `MessagingServiceSid`, when sent.
    pub messaging_service_sid: Option<String>,
    /// `Body`, as sent.
    pub body: String,
    /// When it was accepted, RFC 2822 as Twilio writes it.
    pub date_created: String,
    /// The `status` the 201 answered: `queued`, or `failed` / `undelivered` when scripted.
    pub status: String,
}

impl Sent {
    /// The first run of 6 or more digits in the body: the one-time code.
    pub fn code(&self) -> Option<String> {
        self.body
            .split(|c: char| !c.is_ascii_digit())
            .find(|run| run.len() >= 6)
            .map(String::from)
    }
}

/// One request the double received, accepted or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// When it arrived.
    pub at: Instant,
    /// The HTTP status answered.
    pub status: u16,
    /// The Twilio error code answered, if any.
    pub code: Option<u64>,
}

/// A scripted failure for the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// 429 Too Many Requests (Twilio error 20429), with `Retry-After: n` when given.
    TooManyRequests {
        /// Seconds to put in `Retry-After`.
        retry_after: Option<u64>,
    },
    /// A server error: 500 (20500), 502 (20502) or 503 (20503).
    ServerError(u16),
    /// A Twilio error code, answered with the HTTP status Twilio uses for it
    /// (21211, 21610, 21408: 400; 20003: 401).
    Twilio(u64),
    /// A `201 Created` whose message resource already has this `status` (`failed`,
    /// `undelivered`) and, when given, this `error_code` with Twilio's `error_message` for it
    /// (30003, 30005, 30006, 30007, 30008). The message is recorded as created.
    Created {
        /// The message's `status`.
        status: &'static str,
        /// Its `error_code`, or null.
        error_code: Option<u64>,
    },
}

/// Twilio's `error_message` for a delivery error code, as its error dictionary names it.
pub fn delivery_error(code: u64) -> &'static str {
    match code {
        30003 => "Unreachable destination handset",
        30005 => "Unknown destination handset",
        30006 => "Landline or unreachable carrier",
        30007 => "Message filtered",
        30008 => "Unknown error",
        _ => "Message delivery failed",
    }
}

/// Twilio's HTTP status and message for an error code (`{to}` stands for the `To` number).
pub fn twilio_error(code: u64) -> (u16, &'static str) {
    match code {
        20003 => (401, "Authenticate"),
        20404 => (404, "The requested resource was not found"),
        20429 => (429, "Too Many Requests"),
        20500 => (500, "Internal Server Error"),
        20502 => (502, "Bad Gateway"),
        20503 => (503, "Service Unavailable"),
        21211 => (400, "The 'To' number {to} is not a valid phone number."),
        21212 => (
            400,
            "The 'From' number is not a valid phone number, shortcode, or alphanumeric sender ID.",
        ),
        21408 => (
            400,
            "Permission to send an SMS has not been enabled for the region indicated by the 'To' number: {to}.",
        ),
        21602 => (400, "Message body is required."),
        21603 => (400, "A 'From' phone number is required."),
        21604 => (400, "A 'To' phone number is required."),
        21610 => (400, "Attempt to send to unsubscribed recipient"),
        _ => (400, "Twilio error"),
    }
}

#[derive(Default)]
struct Inner {
    messages: Vec<Sent>,
    script: VecDeque<Failure>,
    hits: Vec<Hit>,
}

struct Shared {
    account_sid: String,
    auth_token: String,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The running double. Dropping it stops the server.
pub struct TwilioDouble {
    base_url: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for TwilioDouble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioDouble")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

fn random_hex(n: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::with_capacity(n + 16);
    while out.len() < n {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out.truncate(n);
    out
}

fn is_e164(s: &str) -> bool {
    s.strip_prefix('+').is_some_and(|d| {
        (2..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

/// Whether Twilio takes `s` as `From`: an E.164 number, a short code, or an alphanumeric
/// sender ID.
fn is_sender(s: &str) -> bool {
    let short_code = (5..=6).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    let alpha = (1..=11).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" +-_&".contains(&b))
        && s.bytes().any(|b| b.is_ascii_alphabetic());
    is_e164(s) || short_code || alpha
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The fields of an `application/x-www-form-urlencoded` body, in order.
fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Twilio's error object as a response.
fn error_response(code: u64, to: &str, retry_after: Option<u64>) -> (u16, Option<u64>, Response) {
    let (status, message) = twilio_error(code);
    let body = json!({
        "code": code,
        "message": message.replace("{to}", to),
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    });
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        axum::Json(body),
    )
        .into_response();
    if let Some(s) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    (status, Some(code), response)
}

fn authenticated(shared: &Shared, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(encoded) = value.strip_prefix("Basic ") else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return false;
    };
    text.split_once(':')
        .is_some_and(|(user, pass)| user == shared.account_sid && pass == shared.auth_token)
}

fn create_message(
    shared: &Shared,
    sid: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> (u16, Option<u64>, Response) {
    let form = parse_form(body);
    let to = field(&form, "To").unwrap_or_default().to_string();
    // Twilio authenticates before anything else.
    if !authenticated(shared, headers) {
        return error_response(20003, &to, None);
    }
    if sid != shared.account_sid {
        return error_response(20404, &to, None);
    }
    let scripted = shared.lock().script.pop_front();
    let mut created = ("queued", None);
    match scripted {
        Some(Failure::TooManyRequests { retry_after }) => {
            return error_response(20429, &to, retry_after);
        }
        Some(Failure::ServerError(status)) => {
            let code = match status {
                502 => 20502,
                503 => 20503,
                _ => 20500,
            };
            return error_response(code, &to, None);
        }
        Some(Failure::Twilio(code)) => return error_response(code, &to, None),
        Some(Failure::Created { status, error_code }) => created = (status, error_code),
        None => {}
    }
    if to.is_empty() {
        return error_response(21604, &to, None);
    }
    if !is_e164(&to) {
        return error_response(21211, &to, None);
    }
    let text = field(&form, "Body").unwrap_or_default().to_string();
    if text.is_empty() {
        return error_response(21602, &to, None);
    }
    let from = field(&form, "From").map(String::from);
    let service = field(&form, "MessagingServiceSid").map(String::from);
    if from.is_none() && service.is_none() {
        return error_response(21603, &to, None);
    }
    // Twilio also accepts both: the Messaging Service then sends from `From`.
    if from.as_deref().is_some_and(|f| !is_sender(f)) {
        return error_response(21212, &to, None);
    }
    let message_sid = format!("SM{}", random_hex(32));
    let now = jiff::Timestamp::now().to_zoned_datetime(jiff::tz::TimeZone::UTC);
    let date = jiff::fmt::rfc2822::to_string(&now).unwrap_or_default();
    let uri = format!("/2010-04-01/Accounts/{sid}/Messages/{message_sid}.json");
    let resource = json!({
        "account_sid": sid,
        "api_version": "2010-04-01",
        "body": text,
        "date_created": date,
        "date_sent": Value::Null,
        "date_updated": date,
        "direction": "outbound-api",
        "error_code": created.1,
        "error_message": created.1.map(delivery_error),
        "from": from,
        "messaging_service_sid": service,
        "num_media": "0",
        "num_segments": "1",
        "price": Value::Null,
        "price_unit": "USD",
        "sid": message_sid,
        "status": created.0,
        "subresource_uris": {
            "media": format!("/2010-04-01/Accounts/{sid}/Messages/{message_sid}/Media.json")
        },
        "to": to,
        "uri": uri,
    });
    shared.lock().messages.push(Sent {
        sid: message_sid,
        to,
        from,
        messaging_service_sid: service,
        body: text,
        date_created: date,
        status: created.0.to_string(),
    });
    (
        201,
        None,
        (StatusCode::CREATED, axum::Json(resource)).into_response(),
    )
}

async fn messages_handler(
    State(shared): State<Arc<Shared>>,
    UrlPath(sid): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let (status, code, response) = create_message(&shared, &sid, &headers, &body);
    shared.lock().hits.push(Hit { at, status, code });
    response
}

async fn not_found(State(shared): State<Arc<Shared>>) -> Response {
    let (status, code, response) = error_response(20404, "", None);
    shared.lock().hits.push(Hit {
        at: Instant::now(),
        status,
        code,
    });
    response
}

impl TwilioDouble {
    /// Starts a double with a fresh account SID and auth token, on 127.0.0.1 and a free port.
    pub fn start() -> Self {
        let shared = Arc::new(Shared {
            account_sid: format!("AC{}", random_hex(32)),
            auth_token: random_hex(32),
            inner: Mutex::new(Inner::default()),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .route(
                "/2010-04-01/Accounts/{sid}/Messages.json",
                post(messages_handler),
            )
            .fallback(not_found)
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("twilio-double".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                    // Not a graceful shutdown: clients keep idle connections open, and the
                    // runtime's drop closes them all.
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = stopped => {}
                    }
                });
            })
            .unwrap();
        Self {
            base_url,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`, the provider's `base_url`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The account SID it accepts.
    pub fn account_sid(&self) -> &str {
        &self.shared.account_sid
    }

    /// The auth token it accepts.
    pub fn auth_token(&self) -> &str {
        &self.shared.auth_token
    }

    /// Writes the auth token to `dir/twilio.token`, readable by its owner only.
    pub fn write_token(&self, dir: &Path) -> PathBuf {
        let path = dir.join("twilio.token");
        crate::write_private(&path, &format!("{}\n", self.auth_token()));
        path
    }

    /// Provider settings that point at this double, sending from `+14155552345`.
    pub fn settings(&self, token_file: &Path) -> toml::Table {
        let mut t = toml::Table::new();
        t.insert("account_sid".into(), self.account_sid().into());
        t.insert(
            "auth_token_file".into(),
            token_file.display().to_string().into(),
        );
        t.insert("from".into(), "+14155552345".into());
        t.insert("base_url".into(), self.base_url().into());
        t
    }

    /// The next `n` requests answer `failure` (after these, requests are served normally).
    pub fn fail_next(&self, n: usize, failure: Failure) {
        let mut inner = self.shared.lock();
        inner.script.extend(std::iter::repeat_n(failure, n));
    }

    /// Every message accepted so far, oldest first.
    pub fn messages(&self) -> Vec<Sent> {
        self.shared.lock().messages.clone()
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Hit> {
        self.shared.lock().hits.clone()
    }
}

impl Drop for TwilioDouble {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
