//! A small client for Twilio's Messages API: create one message, with retries.
//!
//! `POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded `To`,
//! `From` or `MessagingServiceSid`, and `Body`, with HTTP basic auth (account SID, auth
//! token). Twilio answers 201 with the message resource, or an error object
//! `{code, message, more_info, status}`. A 201 whose resource is already `failed` or
//! `undelivered`, or carries an `error_code`, is a message that will not arrive: a failure.

use std::error::Error as _;
use std::fmt;
use std::io::Read as _;
use std::time::{Duration, Instant};

use rolegate_sdk::serde::Deserialize;
use rolegate_sdk::{ErrorKind, ProviderError};

use crate::code;
use crate::settings::{Checked, Sender, TokenSource};

/// The most of a response body read: Twilio's answers are a few hundred bytes.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;
/// The first retry waits this long; each later one twice as long as the one before.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// No computed backoff waits longer than this (a `Retry-After` may, within the budget).
const BACKOFF_CAP: Duration = Duration::from_secs(4);
/// Longest text taken from Twilio's error message.
const MAX_UPSTREAM_MESSAGE: usize = 300;

/// Twilio's error object, as far as it could be read, with the HTTP status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TwilioError {
    /// The HTTP status.
    pub(crate) http: u16,
    /// Twilio's error code (`21211`), when the body had one.
    pub(crate) code: Option<u64>,
    /// Twilio's message, cleaned of control characters and clipped.
    pub(crate) message: Option<String>,
    /// Twilio's link to the error's documentation.
    pub(crate) more_info: Option<String>,
}

#[derive(Deserialize)]
#[serde(crate = "rolegate_sdk::serde")]
struct ErrorBody {
    #[serde(default)]
    code: Option<u64>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    more_info: Option<String>,
}

/// The fields of Twilio's Message resource that the provider reads (API v2010: `sid` is `SM`
/// or `MM` and 32 hex digits; `error_code` an integer or null; `error_message` null unless
/// the status is `failed` or `undelivered`).
#[derive(Deserialize)]
#[serde(crate = "rolegate_sdk::serde")]
struct MessageBody {
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    error_code: Option<rolegate_sdk::serde_json::Value>,
    #[serde(default)]
    error_message: Option<String>,
}

/// Longest message SID kept (Twilio's are 34 characters).
const MAX_SID_CHARS: usize = 64;

/// A message SID fit to show: ASCII letters and digits only, at most [`MAX_SID_CHARS`].
fn message_sid(sid: Option<String>) -> Option<String> {
    sid.map(|s| s.trim().to_string()).filter(|s| {
        !s.is_empty() && s.len() <= MAX_SID_CHARS && s.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// Twilio's `error_code` as text: a number, or a short string of digits; none for null.
fn error_code(value: Option<&rolegate_sdk::serde_json::Value>) -> Option<String> {
    use rolegate_sdk::serde_json::Value;
    match value? {
        Value::Null => None,
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(clean(s, 16)).filter(|s| !s.is_empty()),
        other => Some(clean(&other.to_string(), 16)),
    }
}

/// What a 2xx answer says of the message Twilio created: its SID (when the body had a valid
/// one), or — when its `status` is already `failed` or `undelivered`, or it carries an
/// `error_code` — an `unavailable` error naming the SID, the status, Twilio's code and
/// message (cleaned of `secrets`, the recipient shown by its last two digits).
pub(crate) fn read_created(
    body: &str,
    secrets: &[&str],
    to: &str,
) -> Result<Option<String>, ProviderError> {
    let Ok(m) = rolegate_sdk::serde_json::from_str::<MessageBody>(body) else {
        // A 2xx is Twilio's word that it took the message, even without a readable body.
        return Ok(None);
    };
    let sid = message_sid(m.sid);
    let status = m
        .status
        .map(|s| clean(&s, 32).to_ascii_lowercase())
        .filter(|s| !s.is_empty());
    let code = error_code(m.error_code.as_ref());
    let failed = matches!(status.as_deref(), Some("failed" | "undelivered"));
    if !failed && code.is_none() {
        return Ok(sid);
    }
    let mut detail = String::new();
    if let Some(code) = &code {
        detail.push_str(&format!("Twilio error {code}"));
    }
    if let Some(text) = m
        .error_message
        .map(|t| clean(&scrub(&t, secrets, to), MAX_UPSTREAM_MESSAGE))
        .filter(|t| !t.is_empty())
    {
        if !detail.is_empty() {
            detail.push_str(": ");
        }
        detail.push_str(&text);
    }
    if let Some(code) = code
        .as_deref()
        .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
    {
        detail.push_str(&format!(" (see https://www.twilio.com/docs/errors/{code})"));
    }
    let message = match &sid {
        Some(sid) => format!("message {sid}"),
        None => "the message".to_string(),
    };
    let status = status.as_deref().unwrap_or("unknown");
    let mut text = format!(
        "the SMS to {} will not arrive: Twilio created {message} with status `{status}`",
        masked(to)
    );
    if !detail.is_empty() {
        text.push_str(&format!(" [{detail}]"));
    }
    Err(ProviderError::unavailable(text))
}

/// Keeps printable text only, at most `max` characters.
fn clean(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out.trim().to_string()
}

impl TwilioError {
    /// Reads Twilio's error object from a response body; a body that is not one still gives
    /// the HTTP status. Every secret is removed wherever Twilio's text might have echoed it,
    /// and the recipient's number shown only by its last two digits — before the text is
    /// clipped, so that no clip leaves part of a secret where a whole one was.
    pub(crate) fn parse(http: u16, body: &str, secrets: &[&str], to: &str) -> Self {
        let parsed: Option<ErrorBody> = rolegate_sdk::serde_json::from_str(body).ok();
        let text = |m: String, max: usize| Some(clean(&scrub(&m, secrets, to), max));
        match parsed {
            Some(b) => Self {
                http,
                code: b.code,
                message: b
                    .message
                    .and_then(|m| text(m, MAX_UPSTREAM_MESSAGE))
                    .filter(|m| !m.is_empty()),
                more_info: b
                    .more_info
                    .and_then(|m| text(m, 120))
                    .filter(|m| !m.is_empty()),
            },
            None => Self {
                http,
                ..Self::default()
            },
        }
    }
}

/// `text` with every secret replaced and the recipient's number shown by its last two digits
/// (before any clipping: a secret cut in two would be neither replaced nor whole).
fn scrub(text: &str, secrets: &[&str], to: &str) -> String {
    let mut text = text.to_string();
    for secret in secrets.iter().filter(|s| s.len() >= 4) {
        text = text.replace(secret, "[redacted]");
    }
    if to.len() >= 4 {
        text = text.replace(to, &masked(to));
    }
    text
}

impl fmt::Display for TwilioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(code) = self.code {
            write!(f, "Twilio error {code}, ")?;
        }
        write!(f, "HTTP {}", self.http)?;
        match &self.message {
            Some(m) => write!(f, ": {m}"),
            None => Ok(()),
        }
    }
}

/// Why one attempt failed in a way worth retrying.
#[derive(Debug, Clone)]
enum Retryable {
    /// 429 or 5xx.
    Http(TwilioError),
    /// No answer: connection refused or reset, TLS failure, time-out.
    Transport(String),
}

impl fmt::Display for Retryable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Retryable::Http(e) => write!(f, "{e}"),
            Retryable::Transport(why) => write!(f, "{why}"),
        }
    }
}

/// The recipient's number as shown in messages: its last two digits only.
pub(crate) fn masked(phone: &str) -> String {
    let digits: Vec<char> = phone.chars().filter(char::is_ascii_digit).collect();
    let tail: String = digits[digits.len().saturating_sub(2)..].iter().collect();
    format!("…{tail}")
}

/// The error for a message Twilio refused (an answer that retrying cannot change).
pub(crate) fn refused(
    err: &TwilioError,
    to: &str,
    account_sid: &str,
    token_source: &str,
) -> ProviderError {
    let who = masked(to);
    let (kind, text) = match (err.code, err.http) {
        (Some(20003), _) | (None, 401) => (
            ErrorKind::Config,
            format!(
                "Twilio refused the credentials of account {account_sid}; check the auth token in {token_source}"
            ),
        ),
        (Some(21211), _) => (
            ErrorKind::BadInput,
            format!(
                "Twilio refused the recipient's phone number {who} as invalid; correct the user's phone number"
            ),
        ),
        (Some(21610), _) => (
            ErrorKind::BadInput,
            format!(
                "the recipient {who} has unsubscribed from this sender by replying STOP; the user must text START to the sending number before codes can reach them"
            ),
        ),
        (Some(21408), _) => (
            ErrorKind::Config,
            format!(
                "this Twilio account may not send SMS to the region of {who}; allow that country in the console's Messaging geographic permissions"
            ),
        ),
        (_, 401 | 403 | 404) => (
            ErrorKind::Config,
            format!(
                "Twilio refused the message for account {account_sid}; check `account_sid`, the auth token and `base_url`"
            ),
        ),
        _ => (
            ErrorKind::Internal,
            match &err.more_info {
                Some(link) => format!("Twilio refused the message to {who} (see {link})"),
                None => format!("Twilio refused the message to {who}"),
            },
        ),
    };
    ProviderError::new(kind, format!("{text} [{err}]"))
}

/// How long to wait before retry number `retry` (1 for the first retry), without jitter.
pub(crate) fn backoff(retry: u32) -> Duration {
    let factor = 1u32 << retry.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_CAP)
}

/// Adds up to a quarter of `wait` at random, so that many hosts do not retry in step.
fn jitter(wait: Duration) -> Duration {
    let mut b = [0u8; 1];
    match code::random(&mut b) {
        Ok(()) => wait + wait / 4 * u32::from(b[0]) / 255,
        Err(_) => wait,
    }
}

/// `Retry-After` in seconds, as Twilio sends it with a 429 (an HTTP date is not honoured).
pub(crate) fn retry_after(value: Option<&str>) -> Option<Duration> {
    value?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// What a transport error was, without the request's contents or the token.
fn transport(e: &reqwest::Error, token: &str) -> String {
    let what = if e.is_timeout() {
        "the request to Twilio timed out"
    } else if e.is_connect() {
        "could not connect to Twilio"
    } else {
        "the request to Twilio failed"
    };
    let mut text = what.to_string();
    let mut source = e.source();
    let mut depth = 0;
    while let Some(s) = source {
        if depth == 3 {
            break;
        }
        text.push_str(": ");
        text.push_str(&clean(&scrub(&s.to_string(), &[token], ""), 160));
        source = s.source();
        depth += 1;
    }
    text
}

/// A message Twilio accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Accepted {
    /// The message SID (`SM…`), when the answer had one.
    pub(crate) sid: Option<String>,
    /// Attempts it took.
    pub(crate) attempts: u32,
}

/// The Twilio client of one provider instance.
pub(crate) struct Twilio {
    client: reqwest::blocking::Client,
    url: String,
    account_sid: String,
    token: TokenSource,
    sender: Sender,
    budget: Duration,
    max_attempts: u32,
}

impl fmt::Debug for Twilio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Twilio")
            .field("url", &self.url)
            .field("token", &self.token.describe())
            .field("sender", &self.sender)
            .finish_non_exhaustive()
    }
}

impl Twilio {
    /// A client for the validated settings.
    pub(crate) fn new(settings: &Checked) -> Result<Self, ProviderError> {
        let client = reqwest::blocking::Client::builder()
            // Never follow a redirect: it would carry the credentials elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("rolegate-sms-twilio/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(settings.timeout.min(Duration::from_secs(3)))
            .timeout(settings.timeout)
            .build()
            .map_err(|e| {
                ProviderError::internal(format!("the HTTP client could not be built: {e}"))
            })?;
        Ok(Self {
            client,
            url: format!(
                "{}/2010-04-01/Accounts/{}/Messages.json",
                settings.base_url, settings.account_sid
            ),
            account_sid: settings.account_sid.clone(),
            token: settings.token.clone(),
            sender: settings.sender.clone(),
            budget: settings.timeout,
            max_attempts: settings.max_attempts,
        })
    }

    /// Whether the token can be read now (for `health`).
    pub(crate) fn token_readable(&self) -> Result<(), ProviderError> {
        self.token.read().map(|_| ())
    }

    /// Sends `body` to `to` (E.164). Retries 429, 5xx and transport failures with exponential
    /// backoff (honouring `Retry-After`) within the time budget; errors never hold the token
    /// or `secret` (the code inside the body).
    pub(crate) fn send(
        &self,
        to: &str,
        body: &str,
        secret: &str,
    ) -> Result<Accepted, ProviderError> {
        let started = Instant::now();
        let deadline = started + self.budget;
        let token = self.token.read()?;
        let sender = match &self.sender {
            Sender::From(from) => ("From", from.as_str()),
            Sender::Service(sid) => ("MessagingServiceSid", sid.as_str()),
        };
        let form = [("To", to), sender, ("Body", body)];
        let mut attempts = 0u32;
        let mut last: Option<Retryable> = None;
        let mut out_of_time: Option<String> = None;
        while attempts < self.max_attempts {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                out_of_time = Some(format!(
                    "the {} ms budget of `timeout_ms` ran out",
                    self.budget.as_millis()
                ));
                break;
            }
            attempts += 1;
            let sent = self
                .client
                .post(&self.url)
                .basic_auth(&self.account_sid, Some(&token))
                .form(&form)
                .timeout(remaining)
                .send();
            let (failure, asked) = match sent {
                Ok(response) => {
                    let status = response.status();
                    let asked = retry_after(
                        response
                            .headers()
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok()),
                    );
                    let mut text = String::new();
                    // A body cut short still leaves the status to act on.
                    let _ = response.take(MAX_RESPONSE_BYTES).read_to_string(&mut text);
                    if status.is_success() {
                        // Not retried when failed: Twilio made the message; another attempt
                        // would be a second SMS (with the same code), not this one mended.
                        let sid = read_created(&text, &[&token, secret], to)?;
                        return Ok(Accepted { sid, attempts });
                    }
                    let err = TwilioError::parse(status.as_u16(), &text, &[&token, secret], to);
                    if status.as_u16() == 429 || status.is_server_error() {
                        (Retryable::Http(err), asked)
                    } else {
                        return Err(refused(&err, to, &self.account_sid, &self.token.describe()));
                    }
                }
                Err(e) => (Retryable::Transport(transport(&e, &token)), None),
            };
            last = Some(failure);
            if attempts >= self.max_attempts {
                break;
            }
            let wait = asked.unwrap_or_else(|| jitter(backoff(attempts)));
            if Instant::now() + wait >= deadline {
                out_of_time = Some(match asked {
                    Some(a) => format!(
                        "Twilio asked to retry after {} s, past the {} ms budget of `timeout_ms`",
                        a.as_secs(),
                        self.budget.as_millis()
                    ),
                    None => format!(
                        "the {} ms budget of `timeout_ms` ran out",
                        self.budget.as_millis()
                    ),
                });
                break;
            }
            std::thread::sleep(wait);
        }
        let last = last.map_or_else(|| "no attempt could be made".to_string(), |l| l.to_string());
        let why = out_of_time.unwrap_or_else(|| format!("`max_attempts` is {}", self.max_attempts));
        Err(ProviderError::unavailable(format!(
            "the SMS could not be sent: Twilio did not take it after {attempts} attempt(s) in {} ms ({why}); last: {last}",
            started.elapsed().as_millis()
        )))
    }
}

/// What `Twilio::send` makes of one answer from Twilio (HTTP `status`, the `Retry-After`
/// header, the body): the message SID of a success; or the text of the error a refusal
/// becomes, or of the failure a retry would follow, with the wait Twilio asked for. The same
/// functions, in the same order.
///
/// Not part of the crate's interface: public for the fuzz target of `fuzz/` only.
#[doc(hidden)]
pub fn fuzz_answer(
    status: u16,
    retry_after_header: Option<&str>,
    body: &str,
    to: &str,
    token: &str,
    secret: &str,
) -> Result<Option<String>, (String, Option<Duration>)> {
    let asked = retry_after(retry_after_header);
    if (200..300).contains(&status) {
        return read_created(body, &[token, secret], to).map_err(|e| (e.message, None));
    }
    let err = TwilioError::parse(status, body, &[token, secret], to);
    if status == 429 || (500..600).contains(&status) {
        return Err((Retryable::Http(err).to_string(), asked));
    }
    let e = refused(
        &err,
        to,
        "AC00000000000000000000000000000000",
        "the file /t",
    );
    Err((e.message, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twilio_errors_are_read_and_cleaned() {
        let e = TwilioError::parse(
            400,
            r#"{"code":21211,"message":"The 'To' number +1555 is not valid.\n","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#,
            &[],
            "",
        );
        assert_eq!(e.code, Some(21211));
        assert_eq!(
            e.to_string(),
            "Twilio error 21211, HTTP 400: The 'To' number +1555 is not valid."
        );
        let e = TwilioError::parse(502, "<html>bad gateway</html>", &[], "");
        assert_eq!(e.to_string(), "HTTP 502");
        let e = TwilioError::parse(
            400,
            r#"{"code":1,"message":"token s3cr3tt0k3n code 123456"}"#,
            &["s3cr3tt0k3n", "123456"],
            "+14255550142",
        );
        assert_eq!(
            e.message.as_deref(),
            Some("token [redacted] code [redacted]")
        );
        let e = TwilioError::parse(
            400,
            r#"{"code":21211,"message":"The 'To' number +14255550142 is not valid."}"#,
            &[],
            "+14255550142",
        );
        assert_eq!(
            e.message.as_deref(),
            Some("The 'To' number …42 is not valid.")
        );
    }

    #[test]
    fn a_secret_the_clip_would_cut_is_redacted_whole() {
        // Found by fuzzing (fuzz/twilio_response): the text was clipped (300 characters of
        // the message, 120 of the link) before the secrets were replaced, so a token or code
        // that the clip cut in two was left as its first characters ("s3cr3tt0k…").
        let token = "s3cr3tt0k3n5ecr3tt0k3n5ecr3tt0k3";
        let to = "+14255550142";
        for (secret, at) in [(token, 290), (token, 299), ("48213307", 295), (to, 293)] {
            let text = format!("{} {secret} and more", "a".repeat(at));
            let body = rolegate_sdk::serde_json::json!({
                "code": 1, "message": text, "more_info": format!("{}{secret}", "b".repeat(at - 180)),
            })
            .to_string();
            let e = TwilioError::parse(400, &body, &[token, "48213307"], to);
            let shown = format!("{e} {:?}", e.more_info);
            assert!(!shown.contains(&secret[..8]), "{secret} at {at}: {shown}");
            assert!(shown.contains('…'), "clipped: {shown}");
            let created = rolegate_sdk::serde_json::json!({
                "sid": "SM0123456789abcdef0123456789abcdef", "status": "failed",
                "error_code": 30008, "error_message": text,
            })
            .to_string();
            let e = read_created(&created, &[token, "48213307"], to).unwrap_err();
            assert!(!e.message.contains(&secret[..8]), "{}", e.message);
        }
    }

    fn err(code: u64, http: u16) -> TwilioError {
        TwilioError {
            http,
            code: Some(code),
            message: Some("m".into()),
            more_info: None,
        }
    }

    #[test]
    fn known_twilio_errors_map_to_clear_provider_errors() {
        let sid = "AC00000000000000000000000000000000";
        let to = "+14255550142";
        let e = refused(&err(21211, 400), to, sid, "the file /t");
        assert_eq!(e.kind, ErrorKind::BadInput);
        assert!(
            e.message.contains("invalid") && e.message.contains("…42"),
            "{}",
            e.message
        );
        assert!(!e.message.contains(to), "{}", e.message);
        let e = refused(&err(21610, 400), to, sid, "");
        assert_eq!(e.kind, ErrorKind::BadInput);
        assert!(
            e.message.contains("STOP") && e.message.contains("21610"),
            "{}",
            e.message
        );
        let e = refused(&err(21408, 400), to, sid, "");
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(e.message.contains("region"), "{}", e.message);
        let e = refused(&err(20003, 401), to, sid, "the file /t");
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(
            e.message.contains("credentials") && e.message.contains("/t"),
            "{}",
            e.message
        );
        let e = refused(&err(30007, 400), to, sid, "");
        assert_eq!(e.kind, ErrorKind::Internal);
        assert!(
            e.message.ends_with("[Twilio error 30007, HTTP 400: m]"),
            "{}",
            e.message
        );
        let e = refused(
            &TwilioError {
                http: 401,
                ..Default::default()
            },
            to,
            sid,
            "",
        );
        assert_eq!(e.kind, ErrorKind::Config);
    }

    #[test]
    fn backoff_doubles_up_to_a_cap_and_retry_after_is_seconds() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(2), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(1));
        assert_eq!(backoff(40), BACKOFF_CAP);
        let j = jitter(Duration::from_millis(400));
        assert!(
            j >= Duration::from_millis(400) && j <= Duration::from_millis(500),
            "{j:?}"
        );
        assert_eq!(retry_after(Some("1")), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(Some(" 0 ")), Some(Duration::ZERO));
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(None), None);
    }

    #[test]
    fn only_the_last_two_digits_are_shown() {
        assert_eq!(masked("+14255550142"), "…42");
        assert_eq!(masked("7"), "…7");
    }
}
