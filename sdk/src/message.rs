//! The messages that cross the plugin boundary, as JSON.
//!
//! Every message tolerates added fields in both directions: decoders ignore fields they do
//! not know, and every field added after ABI v1 is optional (`#[serde(default)]`), so an old
//! plugin runs on a new host and a new plugin on an old host. Nothing here is ever removed or
//! renamed within one ABI version.
//!
//! The tagged enums (`Request`, `Input`, `Step`, `Verdict`, `Prompt`) derive serde's code as
//! inherent functions (`#[serde(remote = "Self")]`) and get their trait impls from
//! `tagged!`, which writes the tag first and decodes without buffering (see `tagged.rs`).

use serde::{Deserialize, Serialize};

use crate::bytes::Bytes;
use crate::error::ProviderError;

/// A call from the host to a provider instance.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Request {
    /// Describe the provider.
    Info,
    /// Report whether the provider can serve challenges now.
    Health,
    /// Begin enrolling a user.
    EnrollStart {
        /// Who is enrolling.
        ctx: EnrollContext,
    },
    /// Continue an enrolment with the user's input.
    EnrollContinue {
        /// Who is enrolling.
        ctx: EnrollContext,
        /// The state returned by the previous step.
        state: Bytes,
        /// What the user answered.
        input: Input,
    },
    /// Begin a challenge.
    ChallengeStart {
        /// The user, role, request and stored credentials.
        ctx: ChallengeContext,
    },
    /// Continue a challenge with the user's answer to an `Ask`.
    ChallengeContinue {
        /// The user, role, request and stored credentials.
        ctx: ChallengeContext,
        /// The state returned by the previous step.
        state: Bytes,
        /// What the user answered.
        input: Input,
    },
    /// Ask for the outcome of an out-of-band challenge after a `Wait`.
    ChallengePoll {
        /// The user, role, request and stored credentials.
        ctx: ChallengeContext,
        /// The state returned by the previous step.
        state: Bytes,
    },
    /// Abandon a challenge (hang up a call, forget a code); must be idempotent.
    Cancel {
        /// The user, role, request and stored credentials.
        ctx: ChallengeContext,
        /// The state returned by the previous step.
        state: Bytes,
    },
}

crate::tagged::tagged!(Request, "op");

impl Request {
    /// The operation's name as it travels in the `op` field.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Info => "info",
            Request::Health => "health",
            Request::EnrollStart { .. } => "enroll_start",
            Request::EnrollContinue { .. } => "enroll_continue",
            Request::ChallengeStart { .. } => "challenge_start",
            Request::ChallengeContinue { .. } => "challenge_continue",
            Request::ChallengePoll { .. } => "challenge_poll",
            Request::Cancel { .. } => "cancel",
        }
    }
}

/// A provider's answer: a value, or an error.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response<T> {
    /// The call succeeded.
    Ok(T),
    /// The call failed.
    Error(ProviderError),
}

impl<T> Response<T> {
    /// Turns the response into a `Result`.
    pub fn into_result(self) -> Result<T, ProviderError> {
        match self {
            Response::Ok(v) => Ok(v),
            Response::Error(e) => Err(e),
        }
    }
}

impl<T> From<Result<T, ProviderError>> for Response<T> {
    fn from(r: Result<T, ProviderError>) -> Self {
        match r {
            Ok(v) => Response::Ok(v),
            Err(e) => Response::Error(e),
        }
    }
}

/// What a provider is, for admins and for the host's choice of client responder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderInfo {
    /// Stable identifier of the provider implementation, lower-case (`totp`, `sms-twilio`).
    pub id: String,
    /// Name shown to users and admins.
    pub name: String,
    /// The provider's own version.
    pub version: String,
    /// Who ships it.
    pub vendor: String,
    /// What kind of factor it is.
    pub factor: FactorKind,
    /// Whether a user must enrol (and hold a credential) before a challenge.
    pub needs_enrolment: bool,
    /// Whether a challenge needs the user's phone number.
    pub needs_phone: bool,
    /// The client responder a challenge needs.
    pub responder: PromptKind,
    /// Whether every call is brief computation that never waits on I/O or a lock held
    /// elsewhere (a TOTP or code check): the host may then make in-process calls on the
    /// request's own thread rather than hand them to a blocking thread.
    #[serde(default)]
    pub quick: bool,
    /// Whether the answer to a challenge's first prompt is known before the challenge starts
    /// (a code from the user's authenticator app, which no challenge changes): the host then
    /// accepts it with the request, in one round trip. False when the challenge sends or
    /// shows what the answer depends on (a code by SMS, a call, a WebAuthn challenge).
    #[serde(default)]
    pub answer_ahead: bool,
    /// Whether a user may hold several credentials of this provider (a laptop's Windows
    /// Hello and a spare security key). The host then lets a user who holds one enrol
    /// another, and the provider must first prove one the user holds (a user's API token
    /// alone must never add a factor); otherwise an admin removes the old one first.
    #[serde(default)]
    pub several_credentials: bool,
    /// The SDK version the provider was built with (filled by the Rust SDK).
    #[serde(default)]
    pub sdk_version: String,
}

impl ProviderInfo {
    /// Whether a host may take the first prompt's answer with the request: `answer_ahead`,
    /// for an answer the user types (a WebAuthn assertion or a card's signature answers the
    /// challenge itself, so it cannot come before it).
    pub fn takes_answer_ahead(&self) -> bool {
        self.answer_ahead && self.responder == PromptKind::Code
    }
}

/// The kind of factor a provider checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FactorKind {
    /// A one-time code the user types (TOTP, SMS, email).
    Code,
    /// A phone call the user answers.
    Phone,
    /// A WebAuthn authenticator or Windows Hello.
    Webauthn,
    /// A smartcard signing through PC/SC.
    Smartcard,
    /// Anything else; kinds unknown to this SDK decode as `Other`.
    #[serde(other)]
    Other,
}

/// The kind of prompt a provider shows, answered by a client responder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum PromptKind {
    /// Digits to type.
    Code,
    /// Nothing to type: answer the phone.
    Phone,
    /// WebAuthn creation or request options.
    Webauthn,
    /// A challenge the card signs.
    Smartcard,
    /// Enrolment material to show (otpauth URI, QR code).
    Display,
}

/// Provider health.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Overall state.
    pub status: HealthStatus,
    /// Detail for an admin.
    #[serde(default)]
    pub message: String,
}

impl Health {
    /// Healthy, with nothing to add.
    pub fn ok() -> Self {
        Self {
            status: HealthStatus::Ok,
            message: String::new(),
        }
    }
}

/// Whether a provider can serve.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HealthStatus {
    /// Serving.
    Ok,
    /// Serving with trouble (slow upstream, backup endpoint in use).
    Degraded,
    /// Cannot serve; states unknown to this SDK decode as `Down`.
    #[serde(other)]
    Down,
}

/// The user a call is about.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserContext {
    /// Account name (`CONTOSO\jdoe` or `jdoe`).
    pub account: String,
    /// Display name.
    #[serde(default)]
    pub display_name: String,
    /// Phone in E.164 (`+14255550100`), with an optional extension after `x`, when known.
    #[serde(default)]
    pub phone: Option<String>,
    /// E-mail address, when known.
    #[serde(default)]
    pub email: Option<String>,
}

/// Context of an enrolment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollContext {
    /// Who is enrolling.
    pub user: UserContext,
    /// The user's existing credentials for this provider (to avoid duplicates).
    #[serde(default)]
    pub credentials: Vec<Credential>,
    /// The web origin the user came from (WebAuthn needs it), when any.
    #[serde(default)]
    pub origin: Option<String>,
    /// The host's clock, Unix seconds: providers use it instead of their own.
    pub now: u64,
}

/// Context of a challenge.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeContext {
    /// Who is being challenged.
    pub user: UserContext,
    /// The role being activated.
    pub role: String,
    /// The activation request's id.
    pub request_id: String,
    /// The activation's length the request asks for, seconds (0 from a host that does not
    /// say): with `role` and `justification`, what a provider may bind its challenge to, so
    /// that the user's answer is evidence of what they approved.
    #[serde(default)]
    pub ttl_s: u64,
    /// The request's justification, as the user wrote it (empty when none, or from a host
    /// that does not say).
    #[serde(default)]
    pub justification: String,
    /// The user's stored credentials for this provider.
    #[serde(default)]
    pub credentials: Vec<Credential>,
    /// The web origin the user came from (WebAuthn needs it), when any.
    #[serde(default)]
    pub origin: Option<String>,
    /// The host's clock, Unix seconds: providers use it instead of their own.
    pub now: u64,
}

impl ChallengeContext {
    /// A challenge bound to this request: `SHA-256(domain ‖ nonce ‖ request id ‖ role ‖ ttl_s
    /// ‖ justification)`, each after `domain` prefixed with its length (8 bytes, big-endian).
    /// What a device signs over it commits to what the user approves, and cannot answer
    /// another request; `domain` names the provider's use (`"rolegate-smartcard-v1"`), and
    /// `nonce` is fresh for each challenge ([`crate::random::fill`]).
    pub fn bind(&self, domain: &str, nonce: &[u8]) -> [u8; 32] {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(domain.as_bytes());
        for field in [
            nonce,
            self.request_id.as_bytes(),
            self.role.as_bytes(),
            self.ttl_s.to_string().as_bytes(),
            self.justification.as_bytes(),
        ] {
            h.update((field.len() as u64).to_be_bytes());
            h.update(field);
        }
        h.finalize().into()
    }
}

/// An opaque credential a provider issued at enrolment; the host stores it encrypted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    /// Identifies the credential among a user's credentials for one provider.
    pub id: String,
    /// A name the user recognises ("YubiKey 5", "Authenticator app").
    #[serde(default)]
    pub label: String,
    /// The provider's private data (secret, public key, counters).
    pub data: Bytes,
}

impl Credential {
    /// Each credential with its data decoded as the provider's JSON type `T`; one that does
    /// not decode is bad input naming it ("credential `x` is not a `kind` credential").
    pub fn decode_all<T: serde::de::DeserializeOwned>(
        credentials: &[Credential],
        kind: &str,
    ) -> Result<Vec<(Credential, T)>, ProviderError> {
        credentials
            .iter()
            .map(|c| {
                serde_json::from_slice::<T>(c.data.as_slice())
                    .map(|t| (c.clone(), t))
                    .map_err(|_| {
                        ProviderError::bad_input(format!(
                            "credential `{}` is not a {kind} credential",
                            c.id
                        ))
                    })
            })
            .collect()
    }
}

/// The user's answer to an `Ask`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Input {
    /// Typed text (digits of a code).
    Code {
        /// What the user typed.
        code: String,
    },
    /// A structured answer (a WebAuthn credential response).
    Json {
        /// The answer.
        value: serde_json::Value,
    },
    /// Raw bytes (a smartcard's signature).
    Bytes {
        /// The answer.
        data: Bytes,
    },
    /// No content: the user acknowledged a `Display` prompt.
    Acknowledge,
}

crate::tagged::tagged!(Input, "kind");

/// What the host must do next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Step {
    /// The user must answer the prompt within `expires_in` seconds.
    Ask {
        /// What to show.
        prompt: Prompt,
        /// Opaque state the host hands back with the answer.
        state: Bytes,
        /// Seconds the prompt stays valid.
        expires_in: u64,
        /// What the provider sent or started out of band (a message SID, a call id), for the
        /// admin: the host records it in the challenge's event. Never a secret.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    /// Something happens out of band (a phone is ringing); poll after `poll_after_ms`.
    Wait {
        /// Opaque state the host hands back on poll.
        state: Bytes,
        /// How long to wait before polling, in milliseconds.
        poll_after_ms: u64,
        /// What is happening, for the user's spinner ("calling +1 425 555 0100").
        #[serde(default)]
        status: String,
        /// What the provider sent or started out of band (a call id), for the admin: the
        /// host records it in the challenge's event. Never a secret.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reference: Option<String>,
    },
    /// The challenge or enrolment is over.
    Done {
        /// The outcome.
        verdict: Verdict,
    },
}

crate::tagged::tagged!(Step, "step");

impl Step {
    /// The provider's reference to what it sent or started (a message SID, a call id), when
    /// it gave one: only `Ask` and `Wait` carry one.
    pub fn reference(&self) -> Option<&str> {
        match self {
            Step::Ask { reference, .. } | Step::Wait { reference, .. } => reference.as_deref(),
            Step::Done { .. } => None,
        }
    }
}

/// The outcome of a challenge or enrolment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Verdict {
    /// The factor was verified (challenge) or the credential issued (enrolment).
    Approved {
        /// For an enrolment, the new credential; for a challenge, an updated credential
        /// (replay state such as TOTP's last step or a WebAuthn counter) that the host stores
        /// atomically with the verdict.
        #[serde(default)]
        credential: Option<Credential>,
        /// What was verified, for the admin: the host writes it into the completion's event
        /// (a WebAuthn credential's id, label, AAGUID and counter). Never a secret.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        detail: String,
    },
    /// The factor was not verified.
    Denied {
        /// Why, for the host's counters and events.
        reason: DenyReason,
        /// What happened, never a secret: the admin reads it always, the user only for a
        /// reason of their own doing (wrong answer, replayed, declined, expired, fraud).
        message: String,
        /// The id of the user's credential the answer was made with, when known: the host
        /// names it in the event and, for [`DenyReason::Cloned`], marks it for the admin.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        credential_id: Option<String>,
    },
}

impl Verdict {
    /// An approval, with the credential to store or update (if any) and nothing to add.
    pub fn approved(credential: Option<Credential>) -> Self {
        Verdict::Approved {
            credential,
            detail: String::new(),
        }
    }

    /// A denial for `reason`, its message for the admin (and the user, when theirs).
    pub fn denied(reason: DenyReason, message: impl Into<String>) -> Self {
        Verdict::Denied {
            reason,
            message: message.into(),
            credential_id: None,
        }
    }
}

crate::tagged::tagged!(Verdict, "outcome");

/// Why a challenge was denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DenyReason {
    /// The answer was wrong (the host counts it toward the attempt cap and lockout).
    WrongAnswer,
    /// The challenge's time ran out.
    Expired,
    /// The user declined (pressed a "deny" key, cancelled on the device).
    Declined,
    /// The user could not be reached (no answer, voicemail, hung up).
    Unreachable,
    /// The user reported fraud: the host locks the user out.
    Fraud,
    /// The user has no usable credential or phone for this provider.
    NotEnrolled,
    /// The code or response was already used.
    Replayed,
    /// The credential answered as only a copy of it could (a WebAuthn signature counter that
    /// did not advance past the stored one): the host marks the credential (named in
    /// `credential_id`) so that an admin sees it, and stops offering it. A host that predates
    /// this reason reads it as `other`.
    Cloned,
    /// Anything else; reasons unknown to this SDK decode as `Other`.
    #[serde(other)]
    Other,
}

/// A prompt for the user, presented by the CLI or web page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Prompt {
    /// Type a code.
    Code {
        /// What to tell the user ("Enter the 6-digit code from your app").
        message: String,
        /// Expected number of digits, when fixed.
        #[serde(default)]
        length: Option<u8>,
    },
    /// Answer the phone.
    Phone {
        /// What to tell the user.
        message: String,
    },
    /// Run a WebAuthn ceremony with these options.
    Webauthn {
        /// `PublicKeyCredentialCreationOptions` or `...RequestOptions` as JSON.
        options: serde_json::Value,
    },
    /// Sign this challenge with the smartcard.
    Smartcard {
        /// What to tell the user.
        message: String,
        /// Bytes the card must sign.
        challenge: Bytes,
    },
    /// Show enrolment material, then acknowledge or answer with a code.
    Display {
        /// What to tell the user.
        message: String,
        /// A URI to show or encode (`otpauth://...`).
        #[serde(default)]
        uri: Option<String>,
        /// A PNG image (a QR code) for the web page.
        #[serde(default)]
        png: Option<Bytes>,
        /// A text rendering (a terminal QR code).
        #[serde(default)]
        text: Option<String>,
    },
}

crate::tagged::tagged!(Prompt, "kind");

impl Prompt {
    /// The prompt's kind.
    pub fn kind(&self) -> PromptKind {
        match self {
            Prompt::Code { .. } => PromptKind::Code,
            Prompt::Phone { .. } => PromptKind::Phone,
            Prompt::Webauthn { .. } => PromptKind::Webauthn,
            Prompt::Smartcard { .. } => PromptKind::Smartcard,
            Prompt::Display { .. } => PromptKind::Display,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ignores_unknown_fields_from_a_newer_host() {
        let json = r#"{"op":"challenge_start","future_field":1,
            "ctx":{"user":{"account":"jdoe","shoe_size":44},"role":"r","request_id":"1","now":5,"x":[]}}"#;
        let r: Request = serde_json::from_str(json).unwrap();
        match r {
            Request::ChallengeStart { ctx } => {
                assert_eq!(ctx.user.account, "jdoe");
                assert_eq!(ctx.now, 5);
                assert!(ctx.credentials.is_empty());
            }
            other => panic!("decoded as {other:?}"),
        }
    }

    #[test]
    fn a_bound_challenge_commits_to_every_fact_of_the_request() {
        let ctx = ChallengeContext {
            request_id: "r1".into(),
            role: "Domain Admins".into(),
            ttl_s: 3600,
            justification: "patch night".into(),
            ..Default::default()
        };
        let base = ctx.bind("d", b"nonce");
        assert_eq!(base, ctx.bind("d", b"nonce"), "deterministic");
        let mut changed = Vec::new();
        changed.push(ctx.bind("e", b"nonce"));
        changed.push(ctx.bind("d", b"nonc3"));
        for edit in 0..4 {
            let mut c = ctx.clone();
            match edit {
                0 => c.request_id = "r2".into(),
                1 => c.role = "Domain Admin".into(),
                2 => c.ttl_s = 3601,
                _ => c.justification = "patch night!".into(),
            }
            changed.push(c.bind("d", b"nonce"));
        }
        // Fields are length-prefixed: moving bytes between them changes the challenge too.
        let mut shifted = ctx.clone();
        shifted.role = "Domain AdminsX".into();
        shifted.justification = "atch night".into();
        changed.push(shifted.bind("d", b"nonce"));
        for c in changed {
            assert_ne!(c, base);
        }
    }

    #[test]
    fn step_wire_format_is_stable() {
        let step = Step::Ask {
            prompt: Prompt::Code {
                message: "m".into(),
                length: Some(6),
            },
            state: Bytes(vec![1]),
            expires_in: 60,
            reference: None,
        };
        let s = serde_json::to_string(&Response::Ok(step)).unwrap();
        assert_eq!(
            s,
            r#"{"ok":{"step":"ask","prompt":{"kind":"code","message":"m","length":6},"state":"AQ==","expires_in":60}}"#
        );
        let denied = Step::Done {
            verdict: Verdict::denied(DenyReason::WrongAnswer, "no"),
        };
        assert_eq!(
            serde_json::to_string(&denied).unwrap(),
            r#"{"step":"done","verdict":{"outcome":"denied","reason":"wrong_answer","message":"no"}}"#
        );
    }

    #[test]
    fn a_reference_travels_when_given_and_is_optional_when_read() {
        let step = Step::Ask {
            prompt: Prompt::Code {
                message: "m".into(),
                length: None,
            },
            state: Bytes(vec![1]),
            expires_in: 60,
            reference: Some("SM0123".into()),
        };
        let s = serde_json::to_string(&step).unwrap();
        assert!(s.ends_with(r#","reference":"SM0123"}"#), "{s}");
        assert_eq!(step.reference(), Some("SM0123"));
        assert_eq!(serde_json::from_str::<Step>(&s).unwrap(), step);
        // From a provider built before the field: none.
        let old: Step = serde_json::from_str(
            r#"{"step":"wait","state":"AQ==","poll_after_ms":5,"status":"ringing"}"#,
        )
        .unwrap();
        assert_eq!(old.reference(), None);
        let wait: Step = serde_json::from_str(
            r#"{"step":"wait","state":"AQ==","poll_after_ms":5,"reference":"CA9"}"#,
        )
        .unwrap();
        assert_eq!(wait.reference(), Some("CA9"));
    }

    #[test]
    fn unknown_reasons_and_factors_degrade_gracefully() {
        let v: Verdict =
            serde_json::from_str(r#"{"outcome":"denied","reason":"solar_flare","message":"m"}"#)
                .unwrap();
        assert_eq!(v, Verdict::denied(DenyReason::Other, "m"));
        let f: FactorKind = serde_json::from_str("\"iris\"").unwrap();
        assert_eq!(f, FactorKind::Other);
    }

    #[test]
    fn error_response_wire_format() {
        let r: Response<()> = Response::Error(ProviderError::bad_input("bad"));
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"error":{"kind":"bad_input","message":"bad"}}"#
        );
    }
}
