//! The provider's settings: decoding, validation, and where the auth token comes from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rolegate_sdk::serde::Deserialize;
use rolegate_sdk::serde::de::IgnoredAny;
use rolegate_sdk::{ProviderError, Settings};

/// Twilio's production API.
pub(crate) const DEFAULT_BASE_URL: &str = "https://api.twilio.com";
/// The SMS text unless `body` says otherwise.
pub(crate) const DEFAULT_BODY: &str =
    "Your rolegate code is {code}. It expires in {minutes} minutes.";
/// Default sending budget, retries included. The host's default call deadline
/// (`[plugins].deadline_ms`) is 5000 ms: the budget stays a second below it so the provider
/// gives up with its own clear error before the host abandons the call.
pub(crate) const DEFAULT_TIMEOUT_MS: u64 = 4_000;
/// Twilio's limit on a message body, in characters.
const MAX_BODY_CHARS: usize = 1_600;
/// Upper bound of a token read from a file or the environment.
const MAX_TOKEN_BYTES: usize = 256;

/// The provider's settings, the `[provider.settings]` table of the host's config.
///
/// The auth token itself is never a setting: it comes from a private file or an environment
/// variable, so the config can be shown and backed up without it.
#[derive(Debug, Clone, Deserialize)]
#[serde(crate = "rolegate_sdk::serde", deny_unknown_fields)]
pub struct SmsSettings {
    /// The Twilio account SID: `AC` and 32 hex digits.
    pub account_sid: String,
    /// A file, readable by its owner only, holding the auth token.
    #[serde(default)]
    pub auth_token_file: Option<PathBuf>,
    /// The name of an environment variable holding the auth token.
    #[serde(default)]
    pub auth_token_env: Option<String>,
    /// The sender: a number in E.164 (`+14155552345`), a short code (`54321`) or an
    /// alphanumeric sender ID (`Contoso IT`); or use `messaging_service_sid`.
    #[serde(default)]
    pub from: Option<String>,
    /// A Messaging Service SID (`MG` and 32 hex digits); or use `from`.
    #[serde(default)]
    pub messaging_service_sid: Option<String>,
    /// Where Twilio's API is; `http://` only for 127.0.0.1, `[::1]` or localhost (tests).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// The SMS text; must contain `{code}`, may contain `{minutes}`.
    #[serde(default = "default_body")]
    pub body: String,
    /// Digits in a code, 6 to 10.
    #[serde(default = "default_code_length")]
    pub code_length: u8,
    /// Seconds a code stays valid, 30 to 3600.
    #[serde(default = "default_code_lifetime_s")]
    pub code_lifetime_s: u64,
    /// Total budget for sending one SMS, retries included, in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts at sending one SMS (the first included), 1 to 10.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Refused with a clear message: the token never goes in the settings.
    #[serde(default)]
    auth_token: Option<IgnoredAny>,
}

fn default_base_url() -> String {
    DEFAULT_BASE_URL.into()
}

fn default_body() -> String {
    DEFAULT_BODY.into()
}

fn default_code_length() -> u8 {
    6
}

fn default_code_lifetime_s() -> u64 {
    300
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

fn default_max_attempts() -> u32 {
    3
}

/// Where the auth token is read from, each time a message is sent (so it can be rotated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenSource {
    /// A private file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl TokenSource {
    /// Where the token is, for messages ("the file /etc/…", "the environment variable X").
    pub(crate) fn describe(&self) -> String {
        match self {
            TokenSource::File(p) => format!("the file {}", p.display()),
            TokenSource::Env(name) => format!("the environment variable `{name}`"),
        }
    }

    /// Reads the token; errors name the file or variable, never the token.
    pub(crate) fn read(&self) -> Result<String, ProviderError> {
        match self {
            TokenSource::File(path) => read_token_file(path),
            TokenSource::Env(name) => {
                let value = std::env::var_os(name).ok_or_else(|| {
                    ProviderError::config(format!(
                        "setting `auth_token_env`: the environment variable `{name}` is not set"
                    ))
                })?;
                let value = value.into_string().map_err(|_| {
                    ProviderError::config(format!(
                        "setting `auth_token_env`: the environment variable `{name}` is not valid UTF-8"
                    ))
                })?;
                check_token(&value, "auth_token_env", &self.describe())
            }
        }
    }
}

/// Refuses a token file its group or others can read (as OpenSSH does for private keys),
/// then reads it.
fn read_token_file(path: &Path) -> Result<String, ProviderError> {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;
    let shown = path.display();
    let mut file = std::fs::File::open(path).map_err(|e| {
        ProviderError::config(format!(
            "setting `auth_token_file`: cannot open {shown}: {e}"
        ))
    })?;
    // The mode of the file actually opened, not of whatever the path names a moment later.
    let meta = file.metadata().map_err(|e| {
        ProviderError::config(format!(
            "setting `auth_token_file`: cannot read the metadata of {shown}: {e}"
        ))
    })?;
    if !meta.is_file() {
        return Err(ProviderError::config(format!(
            "setting `auth_token_file`: {shown} is not a regular file"
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ProviderError::config(format!(
            "setting `auth_token_file`: {shown} is readable by group or others (mode {mode:03o}); run `chmod 600 {shown}` — the Twilio auth token must be private"
        )));
    }
    let mut text = String::new();
    file.by_ref()
        .take(MAX_TOKEN_BYTES as u64 + 2)
        .read_to_string(&mut text)
        .map_err(|e| {
            ProviderError::config(format!(
                "setting `auth_token_file`: cannot read {shown}: {e}"
            ))
        })?;
    check_token(&text, "auth_token_file", &format!("the file {shown}"))
}

/// Trims a token and checks its shape without ever printing it.
fn check_token(raw: &str, key: &str, source: &str) -> Result<String, ProviderError> {
    let token = raw.trim();
    if token.is_empty() {
        return Err(ProviderError::config(format!(
            "setting `{key}`: {source} holds no auth token (it is empty)"
        )));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(ProviderError::config(format!(
            "setting `{key}`: {source} holds more than {MAX_TOKEN_BYTES} bytes; it should hold only the auth token"
        )));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ProviderError::config(format!(
            "setting `{key}`: {source} should hold only the auth token, on one line"
        )));
    }
    Ok(token.to_string())
}

/// Who the message is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sender {
    /// A Twilio number, short code or alphanumeric sender ID (`From`).
    From(String),
    /// A Messaging Service (`MessagingServiceSid`).
    Service(String),
}

/// Validated settings, ready to use.
#[derive(Debug, Clone)]
pub(crate) struct Checked {
    pub(crate) account_sid: String,
    pub(crate) token: TokenSource,
    pub(crate) sender: Sender,
    /// The base URL without a trailing `/`.
    pub(crate) base_url: String,
    pub(crate) body: String,
    pub(crate) code_length: u8,
    pub(crate) code_lifetime_s: u64,
    pub(crate) timeout: Duration,
    pub(crate) max_attempts: u32,
}

fn is_sid(s: &str, prefix: &str) -> bool {
    s.len() == 34 && s.starts_with(prefix) && s[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// Whether `s` is an E.164 number: `+`, then 2 to 15 digits, the first not 0.
pub(crate) fn is_e164(s: &str) -> bool {
    let Some(digits) = s.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Longest alphanumeric sender ID Twilio takes.
const MAX_ALPHA_SENDER: usize = 11;

/// Whether `s` is a short code: 5 or 6 digits.
pub(crate) fn is_short_code(s: &str) -> bool {
    (5..=6).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// Why `s` is not an alphanumeric sender ID as Twilio defines one (1 to 11 characters among
/// `A`–`Z`, `a`–`z`, `0`–`9`, space, `+`, `-`, `_` and `&`, at least one of them a letter),
/// or `None` when it is one.
pub(crate) fn alpha_sender_fault(s: &str) -> Option<String> {
    let len = s.chars().count();
    if len == 0 {
        return Some("it is empty".into());
    }
    if len > MAX_ALPHA_SENDER {
        return Some(format!(
            "an alphanumeric sender ID has at most {MAX_ALPHA_SENDER} characters, and this has {len}"
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ' ' | '+' | '-' | '_' | '&')))
    {
        return Some(format!(
            "`{}` is not allowed in an alphanumeric sender ID (letters A-Z and a-z, digits, spaces, `+`, `-`, `_` and `&`)",
            c.escape_default()
        ));
    }
    if !s.bytes().any(|b| b.is_ascii_alphabetic()) {
        return Some("an alphanumeric sender ID needs at least one letter".into());
    }
    None
}

/// Checks `from` as Twilio takes it: an E.164 number, a short code or an alphanumeric
/// sender ID; the error names the setting and says which forms are accepted.
fn check_from(from: &str) -> Result<(), ProviderError> {
    if is_e164(from) || is_short_code(from) {
        return Ok(());
    }
    let Some(why) = alpha_sender_fault(from) else {
        return Ok(());
    };
    Err(ProviderError::config(format!(
        "setting `from`: `{}` is not a sender Twilio takes ({why}): use a phone number in E.164 form (`+` and up to 15 digits, such as +14155552345), a short code (5 or 6 digits, such as 54321), an alphanumeric sender ID (1 to 11 letters, digits, spaces, `+`, `-`, `_` or `&`, at least one letter, such as `Contoso IT`), or set `messaging_service_sid` instead",
        shown(from)
    )))
}

/// At most 40 characters of a value, for messages about it.
fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if s.chars().count() > 40 {
        out.push('…');
    }
    out
}

fn check_base_url(raw: &str) -> Result<String, ProviderError> {
    let bad = |why: &str| ProviderError::config(format!("setting `base_url`: {why}"));
    let url = reqwest::Url::parse(raw.trim())
        .map_err(|e| bad(&format!("`{}` is not a URL: {e}", shown(raw))))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "must not carry credentials; the provider sends the account SID and token itself",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    let host = url.host_str().unwrap_or_default();
    match url.scheme() {
        "https" => {}
        "http" if matches!(host, "127.0.0.1" | "localhost" | "[::1]") => {}
        "http" => {
            return Err(bad(&format!(
                "plain http is allowed only for 127.0.0.1, [::1] or localhost (a test double), not `{}`; use https",
                shown(host)
            )));
        }
        other => {
            return Err(bad(&format!(
                "the scheme must be https, not `{}`",
                shown(other)
            )));
        }
    }
    if host.is_empty() {
        return Err(bad("has no host"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

fn check_body(body: &str, max_code: u8, lifetime_s: u64) -> Result<(), ProviderError> {
    let bad = |why: String| ProviderError::config(format!("setting `body`: {why}"));
    if !body.contains("{code}") {
        return Err(bad("must contain `{code}`, where the code goes".to_string()));
    }
    // Only the two known placeholders: a typo (`{cdoe}`) would otherwise reach users.
    let mut rest = body;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            return Err(bad("has a `{` that is never closed".to_string()));
        };
        let name = &after[..close];
        if name != "code" && name != "minutes" {
            return Err(bad(format!(
                "unknown placeholder `{{{}}}`; use `{{code}}` and `{{minutes}}`",
                shown(name)
            )));
        }
        rest = &after[close + 1..];
    }
    let longest = render_body(body, &"0".repeat(usize::from(max_code)), lifetime_s);
    if longest.chars().count() > MAX_BODY_CHARS {
        return Err(bad(format!(
            "is longer than Twilio's {MAX_BODY_CHARS} characters once filled in"
        )));
    }
    Ok(())
}

/// Fills in the SMS text.
pub(crate) fn render_body(template: &str, code: &str, lifetime_s: u64) -> String {
    let minutes = lifetime_s.div_ceil(60).to_string();
    template
        .replace("{code}", code)
        .replace("{minutes}", &minutes)
}

impl Checked {
    /// Decodes and validates the settings; every error names the key at fault.
    pub(crate) fn from_settings(settings: &Settings) -> Result<Self, ProviderError> {
        let s: SmsSettings = settings.parse()?;
        if s.auth_token.is_some() {
            return Err(ProviderError::config(
                "setting `auth_token`: the auth token is never accepted in the settings; put it in a file readable by its owner only and set `auth_token_file`, or in an environment variable named by `auth_token_env`",
            ));
        }
        let account_sid = s.account_sid.trim().to_string();
        if !is_sid(&account_sid, "AC") {
            return Err(ProviderError::config(format!(
                "setting `account_sid`: `{}` is not an account SID (`AC` followed by 32 hex digits, as Twilio's console shows it)",
                shown(&account_sid)
            )));
        }
        let token = match (s.auth_token_file, s.auth_token_env) {
            (Some(_), Some(_)) => {
                return Err(ProviderError::config(
                    "settings `auth_token_file` and `auth_token_env`: set only one of them",
                ));
            }
            (None, None) => {
                return Err(ProviderError::config(
                    "settings: `auth_token_file` or `auth_token_env` is required (where the Twilio auth token is)",
                ));
            }
            (Some(path), None) => {
                if !path.is_absolute() {
                    return Err(ProviderError::config(format!(
                        "setting `auth_token_file`: {} must be an absolute path",
                        path.display()
                    )));
                }
                TokenSource::File(path)
            }
            (None, Some(name)) => {
                let valid = name.bytes().enumerate().all(|(i, b)| {
                    b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit())
                });
                if name.is_empty() || !valid {
                    return Err(ProviderError::config(format!(
                        "setting `auth_token_env`: `{}` is not an environment variable name (letters, digits and `_`, not starting with a digit)",
                        shown(&name)
                    )));
                }
                TokenSource::Env(name)
            }
        };
        // Refuse a missing, empty or over-readable token now, at load, not at the first SMS.
        token.read()?;
        let sender = match (s.from, s.messaging_service_sid) {
            (Some(_), Some(_)) => {
                return Err(ProviderError::config(
                    "settings `from` and `messaging_service_sid`: set only one of them",
                ));
            }
            (None, None) => {
                return Err(ProviderError::config(
                    "settings: `from` (a Twilio number, short code or alphanumeric sender ID) or `messaging_service_sid` is required",
                ));
            }
            (Some(from), None) => {
                let from = from.trim().to_string();
                check_from(&from)?;
                Sender::From(from)
            }
            (None, Some(sid)) => {
                let sid = sid.trim().to_string();
                if !is_sid(&sid, "MG") {
                    return Err(ProviderError::config(format!(
                        "setting `messaging_service_sid`: `{}` is not a Messaging Service SID (`MG` followed by 32 hex digits)",
                        shown(&sid)
                    )));
                }
                Sender::Service(sid)
            }
        };
        let base_url = check_base_url(&s.base_url)?;
        if !(6..=10).contains(&s.code_length) {
            return Err(ProviderError::config(format!(
                "setting `code_length` must be between 6 and 10 digits, not {}",
                s.code_length
            )));
        }
        if !(30..=3600).contains(&s.code_lifetime_s) {
            return Err(ProviderError::config(format!(
                "setting `code_lifetime_s` must be between 30 and 3600 seconds, not {}",
                s.code_lifetime_s
            )));
        }
        check_body(&s.body, s.code_length, s.code_lifetime_s)?;
        if !(100..=60_000).contains(&s.timeout_ms) {
            return Err(ProviderError::config(format!(
                "setting `timeout_ms` must be between 100 and 60000 milliseconds (and below the provider's `deadline_ms`, 5000 by default), not {}",
                s.timeout_ms
            )));
        }
        if !(1..=10).contains(&s.max_attempts) {
            return Err(ProviderError::config(format!(
                "setting `max_attempts` must be between 1 and 10, not {}",
                s.max_attempts
            )));
        }
        Ok(Self {
            account_sid,
            token,
            sender,
            base_url,
            body: s.body,
            code_length: s.code_length,
            code_lifetime_s: s.code_lifetime_s,
            timeout: Duration::from_millis(s.timeout_ms),
            max_attempts: s.max_attempts,
        })
    }
}
