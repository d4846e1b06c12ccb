//! The provider: a PhoneFactor phone call per challenge, out of band.
//!
//! `challenge_start` places the call on a thread of its own (the SDK's synchronous request
//! stays open until the call ends) and answers `Wait`; `challenge_poll` answers `Wait` while the
//! call rings and the verdict once PhoneFactor has answered. The call in flight lives in this
//! instance's memory: a poll that reaches another host, or this one after a restart, is told
//! the call is unknown here (legacy calls need the poll on the host that placed them, as MIM's
//! one service had it).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rolegate_sdk::phone::PhoneNumber;
use rolegate_sdk::random::{fill as random, u32 as random_u32};
use rolegate_sdk::serde::{Deserialize, Serialize};
use rolegate_sdk::{
    ChallengeContext, DenyReason, EnrollContext, FactorKind, Health, HealthStatus, PromptKind,
    ProviderError, ProviderInfo, Settings, Step, Verdict,
};

use crate::call_status::{self, Outcome};
use crate::mfa_settings::{self, Mode as FileMode};
use crate::pfp::{self, Mode};
use crate::transport::{self, Transport};

/// The provider's settings: where the deployment's files are, and test overrides.
#[derive(Debug, Clone, Deserialize)]
#[serde(crate = "rolegate_sdk::serde", deny_unknown_fields)]
pub struct LegacySettings {
    /// The deployment's `MfaSettings.xml`, read as it is (must be private to its owner).
    pub mfa_settings: PathBuf,
    /// The PKCS#12 file, when `CertFilePath` names a path that is not on this machine and
    /// the file does not lie beside `MfaSettings.xml`.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// A PEM file of extra CA certificates to trust (a private endpoint, or a test double).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Endpoints in failover order (default: PhoneFactor's primary and backup).
    #[serde(default)]
    pub endpoints: Option<Vec<String>>,
    /// `standard` (the call asks the user to press #), `pin` (the call asks for the PIN the
    /// user enrolled), `sms-two-way` (a text the user answers by text with its code) or
    /// `sms-one-way` (a text with a code the user types here).
    #[serde(default = "default_mode")]
    pub mode: String,
    /// In `pin` mode, the fewest digits a PIN may have (4 to 10; PINs have at most 10).
    #[serde(default = "default_pin_min_length")]
    pub pin_min_length: usize,
    /// The text of SMS modes; `<$otp$>` stands for the code PhoneFactor draws.
    #[serde(default)]
    pub sms_text: Option<String>,
    /// Seconds a call may ring before the challenge is given up (10 to 300).
    #[serde(default = "default_call_timeout")]
    pub call_timeout_s: u64,
    /// `applicationName` in the request.
    #[serde(default = "default_application")]
    pub application_name: String,
    /// Whether calls abroad are allowed.
    #[serde(default = "default_true")]
    pub allow_international: bool,
    /// Calls (and texts) in flight at once, at most (1 to 10,000): each holds a thread and a
    /// connection while it rings, so a flood of requests cannot exhaust the host.
    #[serde(default = "default_max_calls")]
    pub max_calls: usize,
}

fn default_max_calls() -> usize {
    200
}

fn default_pin_min_length() -> usize {
    4
}

/// The most digits a PIN may have.
const PIN_MAX_LENGTH: usize = 10;

fn default_mode() -> String {
    "standard".into()
}
fn default_call_timeout() -> u64 {
    90
}
fn default_application() -> String {
    "rolegate".into()
}
fn default_true() -> bool {
    true
}

/// A call in flight: the answer, once the request thread has it.
type Slot = Arc<Mutex<Option<Result<pfp::Response, String>>>>;

/// The state the host keeps between polls.
#[derive(Debug, Serialize, Deserialize)]
#[serde(crate = "rolegate_sdk::serde", deny_unknown_fields)]
struct CallState {
    request_id: String,
    call: String,
    deadline: u64,
}

/// The legacy phone-call provider.
pub struct LegacyPhone {
    settings: LegacySettings,
    /// The instance's mode; in PIN mode it holds no PIN: each call carries the user's own.
    mode: Mode,
    license_key: String,
    group_key: String,
    username: Option<String>,
    default_country_code: u16,
    transport: Arc<Transport>,
    /// Calls by id, with the host-clock second after which nobody polls them any more. A
    /// finished call stays until then, so that every poll of it (two tabs, a retry) gets the
    /// same verdict.
    calls: Mutex<HashMap<String, (Slot, u64)>>,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for LegacyPhone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyPhone")
            .field("mfa_settings", &self.settings.mfa_settings)
            .finish_non_exhaustive()
    }
}

fn config(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::config(e.to_string())
}

fn denied(reason: DenyReason, message: impl Into<String>) -> Step {
    Step::Done {
        verdict: Verdict::denied(reason, message.into()),
    }
}

/// The number as the user sees it on the spinner: only its last four digits.
fn masked(p: &PhoneNumber) -> String {
    let tail: String = p
        .national
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("+{} •••{tail}", p.country_code)
}

impl rolegate_sdk::Provider for LegacyPhone {
    fn create(settings: Settings) -> Result<Self, ProviderError> {
        let settings: LegacySettings = settings.parse()?;
        let file = mfa_settings::read(&settings.mfa_settings).map_err(config)?;
        let sdk = match &file.mode {
            FileMode::Sdk(s) => s.clone(),
            FileMode::MfaServer(s) => {
                return Err(ProviderError::config(format!(
                    "{}: MFA Server mode (LOCMFA, {}) is not supported: its Web Service SDK is not publicly documented. Point MfaSettings.xml at the PhoneFactor SDK, or move these roles to another provider",
                    file.path.display(),
                    s.url
                )));
            }
        };
        let mode = match settings.mode.as_str() {
            "standard" => Mode::Standard,
            "sms-two-way" | "sms-one-way" => {
                let message = settings.sms_text.clone().unwrap_or_else(|| {
                    if settings.mode == "sms-two-way" {
                        "Reply with <$otp$> to approve your rolegate activation".into()
                    } else {
                        "Your rolegate code is <$otp$>".into()
                    }
                });
                if !message.contains("<$otp$>") || message.len() > 160 {
                    return Err(ProviderError::config(
                        "setting `sms_text` must contain <$otp$> and fit one text (160 characters)",
                    ));
                }
                if settings.mode == "sms-two-way" {
                    Mode::SmsTwoWay { message }
                } else {
                    Mode::SmsOneWay { message }
                }
            }
            "pin" => Mode::Pin(String::new()),
            other => {
                return Err(ProviderError::config(format!(
                    "setting `mode` must be standard, pin, sms-two-way or sms-one-way, not `{other}`"
                )));
            }
        };
        if !(4..=PIN_MAX_LENGTH).contains(&settings.pin_min_length) {
            return Err(ProviderError::config(format!(
                "setting `pin_min_length` must be between 4 and {PIN_MAX_LENGTH}, not {}",
                settings.pin_min_length
            )));
        }
        if !(1..=10_000).contains(&settings.max_calls) {
            return Err(ProviderError::config(format!(
                "setting `max_calls` must be between 1 and 10000, not {}",
                settings.max_calls
            )));
        }
        if !(10..=300).contains(&settings.call_timeout_s) {
            return Err(ProviderError::config(format!(
                "setting `call_timeout_s` must be between 10 and 300 seconds, not {}",
                settings.call_timeout_s
            )));
        }
        let p12_path = sdk
            .cert_file(&file.path, settings.cert_file.as_deref())
            .map_err(config)?;
        let p12 = std::fs::read(&p12_path)
            .map_err(|e| config(format!("cannot read {}: {e}", p12_path.display())))?;
        let (certs, key) =
            transport::load_p12(&p12, &sdk.cert_password, &p12_path.display().to_string())
                .map_err(config)?;
        let ca = match &settings.ca_file {
            Some(p) => Some(
                std::fs::read(p)
                    .map_err(|e| config(format!("setting `ca_file`: {}: {e}", p.display())))?,
            ),
            None => None,
        };
        let endpoints: Vec<String> = settings.endpoints.clone().unwrap_or_else(|| {
            transport::DEFAULT_ENDPOINTS
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
        // The SDK held the request open until the call ended: the socket may wait as long
        // as the call may ring.
        let transport = Transport::new(
            certs,
            key,
            &endpoints,
            ca.as_deref(),
            Duration::from_secs(settings.call_timeout_s),
        )
        .map_err(config)?;
        let default_country_code: u16 = sdk
            .default_country_code
            .parse()
            .map_err(|_| config("DefaultCountryCode is not a number"))?;
        Ok(Self {
            mode,
            license_key: sdk.license_key.clone(),
            group_key: sdk.group_key.clone(),
            username: sdk.username.clone(),
            default_country_code,
            transport: Arc::new(transport),
            calls: Mutex::new(HashMap::new()),
            in_flight: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            settings,
        })
    }

    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            id: "legacy-phone".into(),
            name: "Phone call (Azure MFA / PhoneFactor)".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            vendor: "rolegate".into(),
            factor: FactorKind::Phone,
            // In PIN mode the user chooses a PIN first; the call then asks for it.
            needs_enrolment: matches!(self.mode, Mode::Pin(_)),
            needs_phone: true,
            responder: PromptKind::Phone,
            quick: false,
            answer_ahead: false,
            sdk_version: String::new(),
            several_credentials: false,
        }
    }

    fn health(&self) -> Health {
        let pending = self
            .calls
            .lock()
            .map(|c| {
                c.values()
                    .filter(|(s, _)| s.lock().map(|r| r.is_none()).unwrap_or(false))
                    .count()
            })
            .unwrap_or(0);
        Health {
            status: HealthStatus::Ok,
            message: format!("{pending} call(s) in flight"),
        }
    }

    fn enroll_start(&self, ctx: &EnrollContext) -> Result<Step, ProviderError> {
        if !matches!(self.mode, Mode::Pin(_)) {
            return Err(ProviderError::unsupported(
                "this provider needs no enrolment outside `pin` mode",
            ));
        }
        let _ = ctx;
        Ok(Step::Ask {
            prompt: rolegate_sdk::Prompt::Code {
                message: format!(
                    "Choose a PIN of {} to {PIN_MAX_LENGTH} digits: you will type it on the phone's keypad when rolegate calls",
                    self.settings.pin_min_length
                ),
                length: None,
            },
            state: to_state(&PinEnrolment { first: None })?,
            expires_in: PIN_ENROLMENT_EXPIRES_IN,
            reference: None,
        })
    }

    fn enroll_continue(
        &self,
        ctx: &EnrollContext,
        state: &[u8],
        input: &rolegate_sdk::Input,
    ) -> Result<Step, ProviderError> {
        // Outside PIN mode there is no enrolment at all: both operations are unsupported.
        if !matches!(self.mode, Mode::Pin(_)) {
            return Err(ProviderError::unsupported(
                "this provider needs no enrolment outside `pin` mode",
            ));
        }
        let state: PinEnrolment = rolegate_sdk::serde_json::from_slice(state)
            .map_err(|_| ProviderError::bad_input("the state is not a PIN enrolment's"))?;
        let rolegate_sdk::Input::Code { code } = input else {
            return Err(ProviderError::bad_input("type the PIN's digits"));
        };
        let pin = code.trim();
        match state.first {
            None => {
                self.check_pin(pin, ctx.user.phone.as_deref())?;
                let mut salt = [0u8; 16];
                random(&mut salt)?;
                let first = PinHash {
                    hash: pin_hash(&salt, pin).into(),
                    salt: salt.to_vec().into(),
                };
                Ok(Step::Ask {
                    prompt: rolegate_sdk::Prompt::Code {
                        message: "Type the same PIN again".into(),
                        length: u8::try_from(pin.len()).ok(),
                    },
                    state: to_state(&PinEnrolment { first: Some(first) })?,
                    expires_in: PIN_ENROLMENT_EXPIRES_IN,
                    reference: None,
                })
            }
            Some(first) => {
                let again = pin_hash(&first.salt.0, pin);
                if !rolegate_sdk::constant_time_eq(&again, &first.hash.0) {
                    return Ok(denied(DenyReason::WrongAnswer, "the two PINs differ"));
                }
                let data = rolegate_sdk::serde_json::to_vec(&PinCredential {
                    pin: pin.to_string(),
                })
                .map_err(|e| ProviderError::internal(format!("credential: {e}")))?;
                Ok(Step::Done {
                    verdict: Verdict::approved(Some(rolegate_sdk::Credential {
                        id: "pin".into(),
                        label: "Phone call PIN".into(),
                        data: data.into(),
                    })),
                })
            }
        }
    }

    fn challenge_start(&self, ctx: &ChallengeContext) -> Result<Step, ProviderError> {
        let Some(raw) = ctx.user.phone.as_deref().filter(|p| !p.trim().is_empty()) else {
            return Ok(denied(
                DenyReason::NotEnrolled,
                "the user has no phone number to call",
            ));
        };
        let phone = match PhoneNumber::parse(raw, self.default_country_code) {
            Ok(p) => p,
            Err(e) => return Ok(denied(DenyReason::NotEnrolled, e.to_string())),
        };
        use std::sync::atomic::Ordering;
        if self.in_flight.fetch_add(1, Ordering::SeqCst) >= self.settings.max_calls {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(ProviderError::unavailable(format!(
                "{} calls are in flight already (max_calls); try again shortly",
                self.settings.max_calls
            )));
        }
        // Released when this call's request ends, whichever way.
        struct Release(Arc<std::sync::atomic::AtomicUsize>);
        impl Drop for Release {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let release = Release(Arc::clone(&self.in_flight));
        let request_id = random_u32()? % 10_000;
        let mode = match &self.mode {
            Mode::Pin(_) => match pin_of(ctx)? {
                Some(pin) => Mode::Pin(pin),
                None => {
                    return Ok(denied(
                        DenyReason::NotEnrolled,
                        "no PIN is enrolled for the phone call: enrol one first",
                    ));
                }
            },
            other => other.clone(),
        };
        let username = self
            .username
            .clone()
            .unwrap_or_else(|| ctx.user.account.clone());
        let xml = pfp::Request {
            request_id,
            license_key: &self.license_key,
            group_key: &self.group_key,
            username: &username,
            phone: &phone,
            allow_international: self.settings.allow_international,
            application: &self.settings.application_name,
            mode: &mode,
            host_ip: "127.0.0.1",
            host_name: "rolegate",
        }
        .to_xml();
        if matches!(mode, Mode::SmsOneWay { .. }) {
            let step = self.text_a_code(ctx, &xml, &phone);
            drop(release);
            return step;
        }
        let call = format!("{}-{:08x}", ctx.request_id, random_u32()?);
        let slot: Slot = Arc::new(Mutex::new(None));
        let deadline = ctx.now.saturating_add(self.settings.call_timeout_s);
        if let Ok(mut calls) = self.calls.lock() {
            // Calls past their deadline (and a grace for late polls) are dropped.
            if calls.len() > 1_000 {
                calls.retain(|_, (_, until)| until.saturating_add(300) > ctx.now);
            }
            calls.insert(call.clone(), (Arc::clone(&slot), deadline));
        }
        let transport = Arc::clone(&self.transport);
        std::thread::Builder::new()
            .name("legacy-phone-call".into())
            .spawn(move || {
                let answer = transport
                    .post(&xml)
                    .map_err(|e| e.to_string())
                    .and_then(|a| {
                        if a.status != 200 {
                            return Err(format!("PhoneFactor answered HTTP {}", a.status));
                        }
                        pfp::Response::parse(&a.body).map_err(|e| e.to_string())
                    });
                // The call's place is free before anyone can see its answer.
                drop(release);
                if let Ok(mut s) = slot.lock() {
                    *s = Some(answer);
                }
            })
            .map_err(|e| ProviderError::unavailable(format!("cannot place the call: {e}")))?;
        let state = CallState {
            request_id: ctx.request_id.clone(),
            call,
            deadline,
        };
        Ok(Step::Wait {
            state: rolegate_sdk::serde_json::to_vec(&state)
                .map_err(|e| ProviderError::internal(format!("state: {e}")))?
                .into(),
            poll_after_ms: 1000,
            status: match self.mode {
                Mode::SmsTwoWay { .. } => {
                    format!(
                        "Texting {}: reply to the text with its code",
                        masked(&phone)
                    )
                }
                Mode::Pin(_) => format!(
                    "Calling {}: answer, type your PIN and press #",
                    masked(&phone)
                ),
                _ => format!("Calling {}: answer and press #", masked(&phone)),
            },
            reference: None,
        })
    }

    fn challenge_poll(&self, ctx: &ChallengeContext, state: &[u8]) -> Result<Step, ProviderError> {
        let state: CallState = rolegate_sdk::serde_json::from_slice(state)
            .map_err(|_| ProviderError::bad_input("the state is not a legacy phone call's"))?;
        if state.request_id != ctx.request_id {
            return Err(ProviderError::bad_input(
                "the call state belongs to another request",
            ));
        }
        let slot = self
            .calls
            .lock()
            .ok()
            .and_then(|c| c.get(&state.call).map(|(s, _)| Arc::clone(s)));
        let Some(slot) = slot else {
            return Ok(denied(
                DenyReason::Other,
                "this call was placed by another host or before a restart; ask again",
            ));
        };
        // Read, not taken: a concurrent or repeated poll of this call gets the same verdict.
        let answer = slot.lock().ok().and_then(|s| s.clone());
        let Some(answer) = answer else {
            if ctx.now >= state.deadline {
                return Ok(denied(
                    DenyReason::Expired,
                    "the phone call was not answered in time",
                ));
            }
            return Ok(Step::Wait {
                state: rolegate_sdk::serde_json::to_vec(&state)
                    .map_err(|e| ProviderError::internal(format!("state: {e}")))?
                    .into(),
                poll_after_ms: 1000,
                status: "Ringing…".into(),
                reference: None,
            });
        };
        let response = answer.map_err(ProviderError::unavailable)?;
        if !response.success {
            return Ok(denied(
                DenyReason::Other,
                format!(
                    "PhoneFactor refused the call (error {})",
                    response
                        .error_id
                        .map_or_else(|| "unknown".to_string(), |e| e.to_string())
                ),
            ));
        }
        let Some(code) = response.call_status else {
            return Ok(denied(
                DenyReason::Other,
                "PhoneFactor's answer has no call status",
            ));
        };
        // In PIN mode "PIN entered" without `authenticated` is a PIN that did not match.
        if matches!(self.mode, Mode::Pin(_)) && code == 1 && !response.authenticated {
            return Ok(denied(
                DenyReason::WrongAnswer,
                "the phone call ended: the PIN typed on the phone was wrong (call status 1)",
            ));
        }
        Ok(match call_status::verdict(code, response.authenticated) {
            (Outcome::Approved, _) => Step::Done {
                verdict: Verdict::approved(None),
            },
            (Outcome::Denied(reason), message) => denied(reason, message),
            (Outcome::Pending, message) => denied(DenyReason::Other, message),
        })
    }

    fn challenge_continue(
        &self,
        ctx: &ChallengeContext,
        state: &[u8],
        input: &rolegate_sdk::Input,
    ) -> Result<Step, ProviderError> {
        let state: TextState = rolegate_sdk::serde_json::from_slice(state).map_err(|_| {
            ProviderError::bad_input("only a texted code is typed; a call's outcome is polled")
        })?;
        if state.request_id != ctx.request_id {
            return Err(ProviderError::bad_input(
                "the state belongs to another request",
            ));
        }
        let rolegate_sdk::Input::Code { code } = input else {
            return Err(ProviderError::bad_input("type the code from the text"));
        };
        let code = code.trim();
        if code.len() != usize::from(state.length) || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ProviderError::bad_input(format!(
                "the code must be {} digits",
                state.length
            )));
        }
        if ctx.now >= state.expires_at {
            return Ok(denied(DenyReason::Expired, "the texted code expired"));
        }
        let typed = code_hash(&state.salt.0, &ctx.request_id, code);
        Ok(if rolegate_sdk::constant_time_eq(&typed, &state.hash.0) {
            Step::Done {
                verdict: Verdict::approved(None),
            }
        } else {
            denied(DenyReason::WrongAnswer, "wrong code")
        })
    }

    fn cancel(&self, _ctx: &ChallengeContext, state: &[u8]) -> Result<(), ProviderError> {
        if let Ok(state) = rolegate_sdk::serde_json::from_slice::<CallState>(state) {
            self.forget(&state.call);
        }
        Ok(())
    }
}

/// Seconds a PIN enrolment's prompts stay open.
const PIN_ENROLMENT_EXPIRES_IN: u64 = 300;

/// A PIN enrolment's state (sealed by the host): after the first entry, only its salted hash.
#[derive(Debug, Serialize, Deserialize)]
#[serde(crate = "rolegate_sdk::serde", deny_unknown_fields)]
struct PinEnrolment {
    first: Option<PinHash>,
}

/// A salted hash of a PIN typed once, to compare the second entry with.
#[derive(Debug, Serialize, Deserialize)]
#[serde(crate = "rolegate_sdk::serde", deny_unknown_fields)]
struct PinHash {
    salt: rolegate_sdk::Bytes,
    hash: rolegate_sdk::Bytes,
}

/// The enrolled PIN. PhoneFactor compares it with what the user types on the keypad, so the
/// call carries it (`plainText`, inside the mutually authenticated TLS connection); at rest
/// the host keeps it sealed with its key, like every credential.
#[derive(Serialize, Deserialize)]
#[serde(crate = "rolegate_sdk::serde", deny_unknown_fields)]
struct PinCredential {
    pin: String,
}

fn pin_hash(salt: &[u8], pin: &str) -> Vec<u8> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(salt);
    h.update(pin.as_bytes());
    h.finalize().to_vec()
}

fn to_state<T: Serialize>(state: &T) -> Result<rolegate_sdk::Bytes, ProviderError> {
    Ok(rolegate_sdk::serde_json::to_vec(state)
        .map_err(|e| ProviderError::internal(format!("state: {e}")))?
        .into())
}

/// The user's enrolled PIN, when they have one.
fn pin_of(ctx: &ChallengeContext) -> Result<Option<String>, ProviderError> {
    let Some(c) = ctx.credentials.first() else {
        return Ok(None);
    };
    let pin: PinCredential = rolegate_sdk::serde_json::from_slice(c.data.as_slice())
        // A credential that is not this provider's is input it cannot use, not its own bug.
        .map_err(|_| ProviderError::bad_input("the stored credential is not a PIN credential"))?;
    Ok(Some(pin.pin))
}

/// Why a PIN is too easy to guess, if it is: one digit repeated, a run up or down (1234,
/// 9876), or digits of the user's own phone number.
fn weak_pin(pin: &str, phone: Option<&str>) -> Option<&'static str> {
    let d: Vec<i16> = pin
        .bytes()
        .map(|b| i16::from(b) - i16::from(b'0'))
        .collect();
    let steps: Vec<i16> = d.windows(2).map(|w| w[1] - w[0]).collect();
    if steps.iter().all(|s| *s == 0) {
        return Some("it repeats one digit");
    }
    if steps.iter().all(|s| *s == 1) || steps.iter().all(|s| *s == -1) {
        return Some("its digits run in order");
    }
    let phone_digits: String = phone
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    if phone_digits.contains(pin) {
        return Some("it is part of your phone number");
    }
    None
}

/// A texted code's state: never the code, only its salted hash bound to the request.
#[derive(Debug, Serialize, Deserialize)]
#[serde(crate = "rolegate_sdk::serde", deny_unknown_fields)]
struct TextState {
    request_id: String,
    expires_at: u64,
    length: u8,
    salt: rolegate_sdk::Bytes,
    hash: rolegate_sdk::Bytes,
}

fn code_hash(salt: &[u8], request_id: &str, code: &str) -> Vec<u8> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(salt);
    h.update(request_id.as_bytes());
    h.update([0u8]);
    h.update(code.as_bytes());
    h.finalize().to_vec()
}

impl LegacyPhone {
    /// Refuses a PIN of the wrong shape or one too easy to guess, saying why (never echoing it).
    fn check_pin(&self, pin: &str, phone: Option<&str>) -> Result<(), ProviderError> {
        let min = self.settings.pin_min_length;
        if !(min..=PIN_MAX_LENGTH).contains(&pin.len()) || !pin.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(ProviderError::bad_input(format!(
                "a PIN is {min} to {PIN_MAX_LENGTH} digits"
            )));
        }
        if let Some(why) = weak_pin(pin, phone) {
            return Err(ProviderError::bad_input(format!(
                "that PIN is too easy to guess: {why}; choose another"
            )));
        }
        Ok(())
    }

    /// One-way SMS: PhoneFactor texts a code and tells it to us; the user types it here.
    fn text_a_code(
        &self,
        ctx: &ChallengeContext,
        xml: &str,
        phone: &PhoneNumber,
    ) -> Result<Step, ProviderError> {
        let answer = self
            .transport
            .post(xml)
            .map_err(|e| ProviderError::unavailable(e.to_string()))?;
        if answer.status != 200 {
            return Err(ProviderError::unavailable(format!(
                "PhoneFactor answered HTTP {}",
                answer.status
            )));
        }
        let response = pfp::Response::parse(&answer.body)
            .map_err(|e| ProviderError::unavailable(e.to_string()))?;
        if !response.success {
            return Ok(denied(
                DenyReason::Other,
                format!(
                    "PhoneFactor refused the text (error {})",
                    response
                        .error_id
                        .map_or_else(|| "unknown".to_string(), |e| e.to_string())
                ),
            ));
        }
        let otp = match (&response.otp, response.call_status) {
            (Some(otp), _)
                if !otp.is_empty()
                    && otp.len() <= 16
                    && otp.bytes().all(|b| b.is_ascii_digit()) =>
            {
                otp.clone()
            }
            (_, Some(code)) => {
                let (_, message) = call_status::verdict(code, false);
                let reason = match call_status::lookup(code).outcome {
                    Outcome::Denied(r) => r,
                    _ => DenyReason::Other,
                };
                return Ok(denied(reason, message));
            }
            _ => {
                return Ok(denied(
                    DenyReason::Other,
                    "PhoneFactor sent no code and no status",
                ));
            }
        };
        let mut salt = [0u8; 16];
        random(&mut salt)?;
        let state = TextState {
            request_id: ctx.request_id.clone(),
            expires_at: ctx
                .now
                .saturating_add(self.settings.call_timeout_s.max(300)),
            length: u8::try_from(otp.len()).unwrap_or(16),
            hash: code_hash(&salt, &ctx.request_id, &otp).into(),
            salt: salt.to_vec().into(),
        };
        Ok(Step::Ask {
            prompt: rolegate_sdk::Prompt::Code {
                message: format!("Type the code texted to {}", masked(phone)),
                length: Some(state.length),
            },
            state: rolegate_sdk::serde_json::to_vec(&state)
                .map_err(|e| ProviderError::internal(format!("state: {e}")))?
                .into(),
            expires_in: self.settings.call_timeout_s.max(300),
            reference: None,
        })
    }

    fn forget(&self, call: &str) {
        if let Ok(mut c) = self.calls.lock() {
            c.remove(call);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rolegate_e2e::phonefactor::{Double, deployment, pki, scripted};
    use rolegate_sdk::serde_json::{Value, json};
    use rolegate_sdk::{Provider as _, UserContext};
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::Path;

    fn private(p: &Path, bytes: &[u8]) {
        std::fs::write(p, bytes).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn create(settings: Value) -> Result<LegacyPhone, ProviderError> {
        let Value::Object(map) = settings else {
            panic!()
        };
        LegacyPhone::create(Settings(map))
    }

    fn ctx(phone: Option<&str>, now: u64) -> ChallengeContext {
        ChallengeContext {
            user: UserContext {
                account: "CONTOSO\\jdoe".into(),
                phone: phone.map(String::from),
                ..Default::default()
            },
            role: "Domain Admins".into(),
            request_id: "r1".into(),
            now,
            ..Default::default()
        }
    }

    /// Places a call and polls (bounded) until it is done.
    fn call(p: &LegacyPhone, phone: &str) -> Step {
        call_with(p, &ctx(Some(phone), 1_000))
    }

    /// Places the call of challenge `c` and polls (bounded) until it is done.
    fn call_with(p: &LegacyPhone, c: &ChallengeContext) -> Step {
        poll_to_end(p, c, p.challenge_start(c).unwrap()).0
    }

    /// Polls (bounded) from `step` until the call is done: the outcome, and the state of the
    /// poll that brought it.
    fn poll_to_end(
        p: &LegacyPhone,
        c: &ChallengeContext,
        mut step: Step,
    ) -> (Step, rolegate_sdk::Bytes) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut last = rolegate_sdk::Bytes(Vec::new());
        while let Step::Wait { state, .. } = &step {
            assert!(std::time::Instant::now() < deadline, "no outcome in 10 s");
            std::thread::sleep(Duration::from_millis(50));
            last = state.clone();
            step = p.challenge_poll(c, &state.0).unwrap();
        }
        (step, last)
    }

    fn reason_and_message(step: &Step) -> (Option<DenyReason>, String) {
        match step {
            Step::Done {
                verdict: Verdict::Denied {
                    reason, message, ..
                },
            } => (Some(*reason), message.clone()),
            Step::Done {
                verdict: Verdict::Approved { .. },
            } => (None, "approved".into()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_scripted_outcome_gets_its_verdict_and_message() {
        let dir = tempfile::tempdir().unwrap();
        pki(dir.path());
        let d = Double::start(dir.path(), scripted);
        let p = create(deployment(dir.path(), d.port)).unwrap();
        let c = ctx(Some("+1 425 555 0001"), 1_000);
        match p.challenge_start(&c).unwrap() {
            Step::Wait { status, .. } => {
                assert_eq!(status, "Calling +1 •••0001: answer and press #")
            }
            other => panic!("{other:?}"),
        }
        for (phone, want, text) in [
            ("+14255550001", None, "approved"),
            ("+14255550009", None, "approved"),
            (
                "+14255550004",
                Some(DenyReason::Expired),
                "no phone input: timed out (call status 4)",
            ),
            (
                "+14255550013",
                Some(DenyReason::Unreachable),
                "got voicemail (call status 13)",
            ),
            (
                "+14255550014",
                Some(DenyReason::Declined),
                "user is blocked (call status 14)",
            ),
            (
                "+14255550108",
                Some(DenyReason::Declined),
                "user hung up (call status 108)",
            ),
            (
                "+14255550112",
                Some(DenyReason::Fraud),
                "fraud code entered (call status 112)",
            ),
            (
                "+14255550100",
                Some(DenyReason::NotEnrolled),
                "invalid phone number (call status 100)",
            ),
        ] {
            let (reason, message) = reason_and_message(&call(&p, phone));
            assert_eq!(reason, want, "{phone}: {message}");
            assert!(message.contains(text), "{phone}: {message}");
        }
        // The request carried the deployment's keys, the country code apart, the account.
        let bodies = d.bodies.lock().unwrap();
        let first = bodies.first().unwrap();
        assert!(
            first.contains("<countryCode>1</countryCode>")
                && first
                    .contains("<phonenumber userCanChangePhone=\"no\">4255550001</phonenumber>"),
            "{first}"
        );
        assert!(
            first.contains("<username>CONTOSO\\jdoe</username>"),
            "{first}"
        );
    }

    #[test]
    fn refusals_no_phone_wrong_keys_unknown_calls_and_timeouts() {
        let dir = tempfile::tempdir().unwrap();
        pki(dir.path());
        let d = Double::start(dir.path(), scripted);
        let settings = deployment(dir.path(), d.port);
        let p = create(settings.clone()).unwrap();
        let (reason, message) = reason_and_message(&p.challenge_start(&ctx(None, 1)).unwrap());
        assert_eq!(reason, Some(DenyReason::NotEnrolled));
        assert!(message.contains("no phone number"), "{message}");
        assert!(d.bodies.lock().unwrap().is_empty(), "nothing was sent");

        // A poll that reaches another instance (another host, or after a restart).
        let c = ctx(Some("+14255550009"), 1_000);
        let Step::Wait { state, .. } = p.challenge_start(&c).unwrap() else {
            panic!()
        };
        let other = create(settings.clone()).unwrap();
        let (reason, message) = reason_and_message(&other.challenge_poll(&c, &state.0).unwrap());
        assert_eq!(reason, Some(DenyReason::Other));
        assert!(message.contains("another host"), "{message}");
        // A finished call answers every poll of it alike (two pollers, a retry).
        let c1 = ctx(Some("+14255550001"), 1_000);
        let (first, s1) = poll_to_end(&p, &c1, p.challenge_start(&c1).unwrap());
        assert_eq!(reason_and_message(&first).0, None, "approved");
        assert_eq!(p.challenge_poll(&c1, &s1.0).unwrap(), first);
        // Past the call's deadline while it still rings: expired.
        let late = ctx(Some("+14255550009"), 1_011);
        let (reason, _) = reason_and_message(&p.challenge_poll(&late, &state.0).unwrap());
        assert_eq!(reason, Some(DenyReason::Expired));
        // Garbage state and another request's state are bad input.
        assert_eq!(
            p.challenge_poll(&c, b"junk").unwrap_err().kind,
            rolegate_sdk::ErrorKind::BadInput
        );

        // Keys PhoneFactor does not know: the call is refused with its error number.
        let xml = std::fs::read_to_string(dir.path().join("MfaSettings.xml")).unwrap();
        private(
            &dir.path().join("MfaSettings.xml"),
            xml.replace("LIC-123", "LIC-999").as_bytes(),
        );
        let wrong = create(settings.clone()).unwrap();
        let (reason, message) = reason_and_message(&call(&wrong, "+14255550001"));
        assert_eq!(reason, Some(DenyReason::Other));
        assert!(message.contains("refused the call (error 5)"), "{message}");
    }

    #[test]
    fn settings_and_files_are_checked_at_creation() {
        let dir = tempfile::tempdir().unwrap();
        pki(dir.path());
        let settings = deployment(dir.path(), 1);
        let mut bad = settings.clone();
        bad["mode"] = json!("voiceprint");
        assert!(
            create(bad)
                .unwrap_err()
                .message
                .contains("must be standard, pin, sms-two-way or sms-one-way, not `voiceprint`")
        );
        let mut bad = settings.clone();
        bad["mode"] = json!("pin");
        bad["pin_min_length"] = json!(3);
        assert!(
            create(bad)
                .unwrap_err()
                .message
                .contains("`pin_min_length` must be between 4 and 10")
        );
        let mut bad = settings.clone();
        bad["mode"] = json!("sms-two-way");
        bad["sms_text"] = json!("no placeholder");
        assert!(create(bad).unwrap_err().message.contains("<$otp$>"));
        let mut bad = settings.clone();
        bad["surprise"] = json!(1);
        assert!(create(bad).unwrap_err().message.contains("surprise"));
        std::fs::set_permissions(
            dir.path().join("cert_key.p12"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let e = create(settings.clone()).unwrap_err();
        assert_eq!(e.kind, rolegate_sdk::ErrorKind::Config);
        assert!(
            e.message.contains("cert_key.p12") && e.message.contains("readable by others"),
            "{}",
            e.message
        );
        std::fs::set_permissions(
            dir.path().join("cert_key.p12"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        private(
            &dir.path().join("MfaSettings.xml"),
            b"<m><LOCMFA>true</LOCMFA><LOCMFASRV>https://mfa.contoso.com/PfWsSdk.asmx</LOCMFASRV></m>",
        );
        let e = create(settings).unwrap_err();
        assert!(
            e.message.contains("MFA Server mode") && e.message.contains("not supported"),
            "{}",
            e.message
        );
    }

    #[test]
    fn sms_modes_text_a_code_one_way_or_two_way() {
        let dir = tempfile::tempdir().unwrap();
        pki(dir.path());
        let d = Double::start(dir.path(), scripted);
        let mut settings = deployment(dir.path(), d.port);
        settings["mode"] = json!("sms-two-way");
        let two = create(settings.clone()).unwrap();
        let c = ctx(Some("+14255550001"), 1_000);
        match two.challenge_start(&c).unwrap() {
            Step::Wait { status, .. } => {
                assert!(status.starts_with("Texting +1 •••0001"), "{status}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            reason_and_message(&call(&two, "+14255550001")).0,
            None,
            "approved"
        );

        settings["mode"] = json!("sms-one-way");
        let one = create(settings).unwrap();
        let Step::Ask { prompt, state, .. } = one.challenge_start(&c).unwrap() else {
            panic!()
        };
        assert_eq!(
            prompt,
            rolegate_sdk::Prompt::Code {
                message: "Type the code texted to +1 •••0001".into(),
                length: Some(6)
            }
        );
        assert!(
            !String::from_utf8_lossy(&state.0).contains("482913"),
            "no code in the state"
        );
        let typed = |code: &str| {
            one.challenge_continue(
                &c,
                &state.0,
                &rolegate_sdk::Input::Code { code: code.into() },
            )
        };
        assert_eq!(
            reason_and_message(&typed("111111").unwrap()).0,
            Some(DenyReason::WrongAnswer)
        );
        assert_eq!(
            typed("12ab56").unwrap_err().kind,
            rolegate_sdk::ErrorKind::BadInput
        );
        assert_eq!(
            reason_and_message(&typed("482913").unwrap()).0,
            None,
            "approved"
        );
        let bodies = d.bodies.lock().unwrap();
        let last = bodies.last().unwrap();
        assert!(
            last.contains("direction=\"one-way\"")
                && last.contains("Your rolegate code is &lt;$otp$&gt;"),
            "{last}"
        );
        // A text to an invalid number: the status's verdict.
        drop(bodies);
        let bad = ctx(Some("+14255550100"), 1_000);
        assert_eq!(
            reason_and_message(&one.challenge_start(&bad).unwrap()).0,
            Some(DenyReason::NotEnrolled)
        );
    }

    fn enrol_ctx(phone: &str) -> EnrollContext {
        EnrollContext {
            user: UserContext {
                account: "CONTOSO\\jdoe".into(),
                phone: Some(phone.into()),
                ..Default::default()
            },
            credentials: Vec::new(),
            origin: None,
            now: 1_000,
        }
    }

    fn code(c: &str) -> rolegate_sdk::Input {
        rolegate_sdk::Input::Code { code: c.into() }
    }

    /// Enrols `pin` (typed twice) and returns the credential.
    fn enrol_pin(p: &LegacyPhone, pin: &str) -> rolegate_sdk::Credential {
        let e = enrol_ctx("+1 425 555 0001");
        let Step::Ask { state, .. } = p.enroll_start(&e).unwrap() else {
            panic!()
        };
        let Step::Ask { state, .. } = p.enroll_continue(&e, &state.0, &code(pin)).unwrap() else {
            panic!()
        };
        match p.enroll_continue(&e, &state.0, &code(pin)).unwrap() {
            Step::Done {
                verdict:
                    Verdict::Approved {
                        credential: Some(c),
                        ..
                    },
            } => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pin_mode_enrols_a_pin_typed_twice_and_each_call_carries_it() {
        let dir = tempfile::tempdir().unwrap();
        pki(dir.path());
        let d = Double::start(dir.path(), scripted);
        let mut settings = deployment(dir.path(), d.port);
        // Standard mode needs no enrolment, and says so.
        let standard = create(settings.clone()).unwrap();
        assert!(!standard.info().needs_enrolment);
        assert_eq!(
            standard
                .enroll_start(&enrol_ctx("+14255550001"))
                .unwrap_err()
                .kind,
            rolegate_sdk::ErrorKind::Unsupported
        );

        settings["mode"] = json!("pin");
        let p = create(settings.clone()).unwrap();
        assert!(p.info().needs_enrolment && p.info().needs_phone);
        let e = enrol_ctx("+1 425 555 0001");
        let Step::Ask { prompt, state, .. } = p.enroll_start(&e).unwrap() else {
            panic!()
        };
        assert!(
            matches!(&prompt, rolegate_sdk::Prompt::Code { message, length: None } if message.contains("4 to 10 digits")),
            "{prompt:?}"
        );
        // Bad shapes and guessable PINs are refused as bad input (the prompt stays).
        for (bad, why) in [
            ("123", "4 to 10 digits"),
            ("12345678901", "4 to 10 digits"),
            ("12a4", "4 to 10 digits"),
            ("7777", "repeats one digit"),
            ("3456", "run in order"),
            ("9876", "run in order"),
            ("5550", "part of your phone number"),
        ] {
            let err = p.enroll_continue(&e, &state.0, &code(bad)).unwrap_err();
            assert_eq!(err.kind, rolegate_sdk::ErrorKind::BadInput, "{bad}");
            assert!(err.message.contains(why), "{bad}: {}", err.message);
            assert!(!err.message.contains(bad), "no PIN in the message");
        }
        let Step::Ask {
            prompt,
            state: again,
            ..
        } = p.enroll_continue(&e, &state.0, &code("7391")).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            prompt,
            rolegate_sdk::Prompt::Code {
                message: "Type the same PIN again".into(),
                length: Some(4)
            }
        );
        assert!(
            !String::from_utf8_lossy(&again.0).contains("7391"),
            "the state holds a salted hash, never the PIN"
        );
        // A second entry that differs ends the enrolment without a credential.
        let (reason, message) =
            reason_and_message(&p.enroll_continue(&e, &again.0, &code("7392")).unwrap());
        assert_eq!(reason, Some(DenyReason::WrongAnswer));
        assert!(message.contains("differ"), "{message}");
        let credential = enrol_pin(&p, "7391");
        assert_eq!(credential.id, "pin");

        // Without a PIN enrolled the call is not placed.
        let bodies_before = d.bodies.lock().unwrap().len();
        let (reason, message) =
            reason_and_message(&p.challenge_start(&ctx(Some("+14255550001"), 1)).unwrap());
        assert_eq!(reason, Some(DenyReason::NotEnrolled));
        assert!(message.contains("no PIN is enrolled"), "{message}");
        assert_eq!(d.bodies.lock().unwrap().len(), bodies_before);

        // The right PIN: the scripted user types it and the call approves.
        let with = |phone: &str, cred: &rolegate_sdk::Credential| {
            let mut c = ctx(Some(phone), 1_000);
            c.credentials = vec![cred.clone()];
            c
        };
        let c = with("+14255550001", &credential);
        let Step::Wait { status, .. } = p.challenge_start(&c).unwrap() else {
            panic!()
        };
        assert_eq!(
            status,
            "Calling +1 •••0001: answer, type your PIN and press #"
        );
        assert_eq!(reason_and_message(&call_with(&p, &c)).0, None, "approved");
        let body = d.bodies.lock().unwrap().last().unwrap().clone();
        assert!(
            body.contains("<pinInfo pinMode=\"pin\"><pin pinFormat=\"plainText\" pinChangeRequired=\"no\">7391</pin>"),
            "{body}"
        );
        // Another PIN than the one the user types: the call ends denied, as a wrong answer.
        let other = enrol_pin(&p, "2580");
        let (reason, message) = reason_and_message(&call_with(&p, &with("+14255550001", &other)));
        assert_eq!(reason, Some(DenyReason::WrongAnswer));
        assert!(
            message.contains("PIN typed on the phone was wrong"),
            "{message}"
        );
        // No PIN typed at all.
        let (reason, message) =
            reason_and_message(&call_with(&p, &with("+14255550002", &credential)));
        assert_eq!(reason, Some(DenyReason::WrongAnswer));
        assert!(
            message.contains("no PIN entered (call status 2)"),
            "{message}"
        );
        // A credential that is not a PIN's is bad input (never the provider's fault), not a call.
        let mut c = ctx(Some("+14255550001"), 1_000);
        c.credentials = vec![rolegate_sdk::Credential {
            id: "pin".into(),
            label: String::new(),
            data: b"junk".to_vec().into(),
        }];
        assert_eq!(
            p.challenge_start(&c).unwrap_err().kind,
            rolegate_sdk::ErrorKind::BadInput
        );
    }

    #[test]
    fn calls_in_flight_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        pki(dir.path());
        let d = Double::start(dir.path(), scripted);
        let mut settings = deployment(dir.path(), d.port);
        settings["max_calls"] = json!(1);
        let p = create(settings.clone()).unwrap();
        let c = ctx(Some("+14255550009"), 1_000);
        let Step::Wait { state, .. } = p.challenge_start(&c).unwrap() else {
            panic!()
        };
        let e = p.challenge_start(&c).unwrap_err();
        assert_eq!(e.kind, rolegate_sdk::ErrorKind::Unavailable);
        assert!(e.message.contains("max_calls"), "{}", e.message);
        // Once the slow call has its answer, a new call may start.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut step = p.challenge_poll(&c, &state.0).unwrap();
        while let Step::Wait { state, .. } = &step {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(50));
            step = p.challenge_poll(&c, &state.0).unwrap();
        }
        assert!(p.challenge_start(&ctx(Some("+14255550001"), 1_000)).is_ok());
        settings["max_calls"] = json!(0);
        assert!(
            create(settings)
                .unwrap_err()
                .message
                .contains("`max_calls`")
        );
    }

    #[test]
    fn the_provider_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        pki(dir.path());
        let d = Double::start(dir.path(), scripted);
        let options = rolegate_sdk::conformance::Options {
            settings: deployment(dir.path(), d.port),
            ..Default::default()
        };
        let report = rolegate_sdk::conformance::check_provider::<LegacyPhone>(&options);
        eprintln!("{report}");
        assert!(report.passed_strict(), "{report}");
        let mut settings = deployment(dir.path(), d.port);
        settings["mode"] = json!("pin");
        // The PIN the user chooses, twice: the check cannot make one up.
        let options = rolegate_sdk::conformance::Options {
            settings,
            enrol_codes: vec!["4826".into(), "4826".into()],
            ..Default::default()
        };
        let report = rolegate_sdk::conformance::check_provider::<LegacyPhone>(&options);
        eprintln!("{report}");
        assert!(report.passed_strict(), "PIN mode: {report}");
    }
}
