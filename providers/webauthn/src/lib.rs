//! webauthn: WebAuthn credentials (Windows Hello, FIDO2 security keys, passkeys) as a
//! rolegate factor, each activation's assertion bound to the request it approves.
//!
//! One library serves several provider entries through its `profile` setting:
//! `windows-hello` (a platform authenticator, user verification required, attestation
//! requested, an AAGUID allow-list defaulting to the Windows Hello authenticators),
//! `security-key` (roaming FIDO2 keys, user verification a setting) and `passkey` (any
//! authenticator, user verification required).
//!
//! **The ceremony's state lives with the host.** webauthn-rs keeps a registration's or an
//! authentication's state (the challenge, the credentials it expects) for the server to hold.
//! A provider keeps nothing between calls — it may run in another process, or the answer may
//! reach another host of a PostgreSQL cluster — so the state is serialised (webauthn-rs's
//! `danger-allow-state-serialisation` feature) and returned as the step's state, which the host
//! seals with its key under the request's id and never shows to the user. The feature's name
//! warns against state a client could alter or replay; the host's sealing is what rules both
//! out, and the state also carries the account, the request and its expiry, checked on return.
//!
//! **The challenge is bound to the request.** webauthn-rs draws a random challenge and has no
//! way to take one. The provider derives the challenge the authenticator signs from it:
//! `SHA-256("rolegate-webauthn-v1" ‖ random challenge ‖ request id ‖ role ‖ ttl_s ‖
//! justification)` (each field length-prefixed), and writes the derived value both into the
//! options the browser receives and into the state webauthn-rs verifies against. The
//! randomness stays (a fresh nonce per challenge), and the signed `clientDataJSON` now commits
//! to the request's id, role, length and justification: an assertion made for one request
//! cannot answer another, and the signature is evidence of what the user approved. The
//! prompt's options carry those facts for the page to show beside the button.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rolegate_sdk::serde::{Deserialize, Serialize};
use rolegate_sdk::serde_json::{self, Value, json};
use rolegate_sdk::{
    ChallengeContext, Credential, DenyReason, EnrollContext, FactorKind, Input, Prompt, PromptKind,
    Provider, ProviderError, ProviderInfo, Settings, Step, Verdict, export_provider,
};
use sha2::{Digest as _, Sha256};
use webauthn_rs::prelude::{
    AttestationCaList, AttestationCaListBuilder, AttestationMetadata, AuthenticatorAttachment,
    Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, SecurityKey, SecurityKeyAuthentication, SecurityKeyRegistration,
    Url, Uuid, Webauthn, WebauthnBuilder, WebauthnError,
};

/// The Windows Hello authenticators' AAGUIDs: hardware, VBS hardware, software.
pub const WINDOWS_HELLO_AAGUIDS: [&str; 3] = [
    "08987058-cadc-4b81-b6e1-30de50dcbe96",
    "9ddd1817-af5a-4672-a2b9-3e3dd95000a9",
    "6028b017-b1d4-4c02-b4b3-afcdafc96bb2",
];

/// What kind of authenticator an entry accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(crate = "rolegate_sdk::serde", rename_all = "kebab-case")]
pub enum Profile {
    /// Windows Hello: a platform authenticator, user verification required, attestation
    /// requested, an AAGUID allow-list.
    WindowsHello,
    /// A roaming FIDO2 security key; user verification as the settings say.
    SecurityKey,
    /// Any authenticator; user verification required.
    Passkey,
}

/// User verification for the `security-key` profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(crate = "rolegate_sdk::serde", rename_all = "snake_case")]
pub enum UserVerification {
    /// The key must verify its user (a PIN, a fingerprint).
    Required,
    /// Presence is enough (a touch).
    Discouraged,
}

/// The provider's settings (`[provider.settings]` in the host's config).
#[derive(Debug, Clone, Deserialize)]
#[serde(crate = "rolegate_sdk::serde", deny_unknown_fields)]
pub struct WebauthnSettings {
    /// Which authenticators this entry accepts.
    pub profile: Profile,
    /// The relying party id: the domain the credentials belong to (`pam.contoso.com`).
    pub rp_id: String,
    /// The name authenticators show.
    #[serde(default = "default_rp_name")]
    pub rp_name: String,
    /// The web origins the ceremonies may come from (`https://pam.contoso.com`): https, or a
    /// loopback address; each must be the RP id or a subdomain of it.
    pub origins: Vec<String>,
    /// AAGUIDs accepted at enrolment; `windows-hello` defaults to Windows Hello's three,
    /// the other profiles to any.
    #[serde(default)]
    pub aaguids: Option<Vec<String>>,
    /// `security-key` only: `required` (the default) or `discouraged`.
    #[serde(default)]
    pub user_verification: Option<UserVerification>,
    /// Seconds a user has to complete a ceremony (30 to 600).
    #[serde(default = "default_expires_in")]
    pub expires_in: u64,
    /// PEM files of the attestation CAs the authenticators' certificates must chain to (the
    /// vendors' roots), each trusted for the AAGUIDs in `aaguids`: the AAGUID check is then
    /// proven rather than self-asserted. `windows-hello` and `security-key` only.
    #[serde(default)]
    pub attestation_roots: Option<Vec<String>>,
}

fn default_rp_name() -> String {
    "rolegate".into()
}
fn default_expires_in() -> u64 {
    120
}

/// The WebAuthn provider.
pub struct WebauthnProvider {
    settings: WebauthnSettings,
    webauthn: Webauthn,
    aaguids: Option<Vec<Uuid>>,
    uv_required: bool,
    /// The attestation CAs, when configured: a registration's certificate chain must reach one.
    roots: Option<AttestationCaList>,
}

/// A stored credential, as the host keeps it (sealed).
#[derive(Serialize, Deserialize)]
#[serde(crate = "rolegate_sdk::serde")]
struct Stored {
    profile: Profile,
    /// The authenticator's AAGUID, when it said.
    aaguid: Option<String>,
    /// Whether the AAGUID was proven by an attestation chain to a configured root (otherwise
    /// it is what the authenticator claimed).
    #[serde(default)]
    attested: bool,
    /// webauthn-rs's credential (public key, counter).
    key: Key,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(crate = "rolegate_sdk::serde", rename_all = "snake_case")]
enum Key {
    Passkey(Passkey),
    SecurityKey(SecurityKey),
}

/// An enrolment's state, sealed by the host between the calls.
#[derive(Serialize, Deserialize)]
#[serde(crate = "rolegate_sdk::serde")]
struct Enrolment {
    account: String,
    expires_at: u64,
    stage: Stage,
}

/// Where an enrolment stands.
#[derive(Serialize, Deserialize)]
#[serde(crate = "rolegate_sdk::serde", rename_all = "snake_case")]
enum Stage {
    /// A user who holds a credential proves it before another is registered: a user's API
    /// token alone must never add a factor.
    Prove(Authentication),
    /// The new credential's registration.
    Register(Registration),
}

#[derive(Serialize, Deserialize)]
#[serde(crate = "rolegate_sdk::serde", rename_all = "snake_case")]
enum Registration {
    Passkey(PasskeyRegistration),
    SecurityKey(SecurityKeyRegistration),
}

/// A challenge's state, sealed by the host between the two calls.
#[derive(Serialize, Deserialize)]
#[serde(crate = "rolegate_sdk::serde")]
struct Challenge {
    account: String,
    request_id: String,
    expires_at: u64,
    /// The random challenge webauthn-rs drew, before binding (kept for the evidence).
    nonce: String,
    authentication: Authentication,
}

#[derive(Serialize, Deserialize)]
#[serde(crate = "rolegate_sdk::serde", rename_all = "snake_case")]
enum Authentication {
    Passkey(PasskeyAuthentication),
    SecurityKey(SecurityKeyAuthentication),
}

/// The largest answer taken, in bytes of JSON: a registration with a certificate chain is a
/// few KiB; anything far larger is refused before it is parsed further.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The user's JSON answer, refused as bad input when it is not JSON or is oversized.
fn json_answer<'a>(input: &'a Input, what: &str) -> Result<&'a Value, ProviderError> {
    let Input::Json { value } = input else {
        return Err(ProviderError::bad_input(format!(
            "expected the authenticator's {what} as JSON"
        )));
    };
    let size = serde_json::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_ANSWER_BYTES {
        return Err(ProviderError::bad_input(format!(
            "the answer is {size} bytes: larger than any authenticator's {what} ({MAX_ANSWER_BYTES} at most)"
        )));
    }
    Ok(value)
}

fn config(m: impl Into<String>) -> ProviderError {
    ProviderError::config(m)
}

/// Checks an origin against the RP id: https (or http on a loopback address), its host the RP
/// id or a subdomain of it.
fn check_origin(rp_id: &str, origin: &str) -> Result<Url, ProviderError> {
    let url = Url::parse(origin)
        .map_err(|e| config(format!("setting `origins`: `{origin}` is not a URL ({e})")))?;
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let loopback = host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback());
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(config(format!(
                "setting `origins`: `{origin}` must be https (http only on a loopback address): browsers offer WebAuthn to secure origins only"
            )));
        }
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(config(format!(
            "setting `origins`: `{origin}` must be an origin (scheme, host, port), without a path"
        )));
    }
    let rp = rp_id.to_ascii_lowercase();
    if host != rp && !host.ends_with(&format!(".{rp}")) {
        return Err(config(format!(
            "setting `origins`: `{origin}` is not `{rp_id}` nor a subdomain of it: a browser would refuse the ceremony"
        )));
    }
    Ok(url)
}

impl WebauthnProvider {
    fn deny(reason: DenyReason, message: impl Into<String>) -> Step {
        Step::Done {
            verdict: Verdict::denied(reason, message.into()),
        }
    }

    /// A ceremony's prompt, its state kept (sealed) by the host until the answer.
    fn ask(&self, options: Value, state: &impl Serialize) -> Result<Step, ProviderError> {
        Ok(Step::Ask {
            prompt: Prompt::Webauthn { options },
            state: serde_json::to_vec(state)
                .map_err(|e| ProviderError::internal(format!("ceremony state: {e}")))?
                .into(),
            expires_in: self.settings.expires_in,
            reference: None,
        })
    }

    /// A denial naming the credential the answer was made with (the host marks it for
    /// `Cloned`).
    fn deny_with(reason: DenyReason, message: impl Into<String>, credential: &str) -> Step {
        Step::Done {
            verdict: Verdict::Denied {
                reason,
                message: message.into(),
                credential_id: Some(credential.to_string()),
            },
        }
    }

    /// An approval that stores (or updates) the credential, and says what was verified.
    fn approve(
        id: String,
        label: String,
        stored: &Stored,
        detail: String,
    ) -> Result<Step, ProviderError> {
        Ok(Step::Done {
            verdict: Verdict::Approved {
                credential: Some(Credential {
                    id,
                    label,
                    data: serde_json::to_vec(stored)
                        .map_err(|e| ProviderError::internal(format!("credential: {e}")))?
                        .into(),
                }),
                detail,
            },
        })
    }

    /// The user handle: stable per account, revealing nothing of it.
    fn user_handle(account: &str) -> Uuid {
        let digest = Sha256::digest(format!("rolegate-webauthn-user\0{account}").as_bytes());
        let mut b = [0u8; 16];
        b.copy_from_slice(&digest[..16]);
        Uuid::from_bytes(b)
    }

    fn stored(credentials: &[Credential]) -> Result<Vec<(Credential, Stored)>, ProviderError> {
        Credential::decode_all(credentials, "WebAuthn")
    }

    fn attachment(&self) -> Option<AuthenticatorAttachment> {
        match self.settings.profile {
            Profile::WindowsHello => Some(AuthenticatorAttachment::Platform),
            Profile::SecurityKey => Some(AuthenticatorAttachment::CrossPlatform),
            Profile::Passkey => None,
        }
    }
}

/// The attestation CAs from PEM files, each trusted for every allowed AAGUID; refused naming
/// the file that cannot be read or holds no certificate.
fn attestation_roots(
    files: &[String],
    aaguids: &[Uuid],
) -> Result<AttestationCaList, ProviderError> {
    if files.is_empty() {
        return Err(config(
            "setting `attestation_roots` lists no file: leave it out, or name the vendors' CA files",
        ));
    }
    let mut builder = AttestationCaListBuilder::new();
    for file in files {
        let pem = std::fs::read(file).map_err(|e| {
            config(format!(
                "setting `attestation_roots`: `{file}` cannot be read ({e})"
            ))
        })?;
        for aaguid in aaguids {
            builder
                .insert_device_pem(&pem, *aaguid, format!("root {file}"), Default::default())
                .map_err(|e| {
                    config(format!(
                        "setting `attestation_roots`: `{file}` is not a PEM certificate ({e:?})"
                    ))
                })?;
        }
    }
    Ok(builder.build())
}

/// The challenge the authenticator signs for a request: the random one, bound to the request.
fn bound_challenge(nonce: &str, ctx: &ChallengeContext) -> String {
    URL_SAFE_NO_PAD.encode(ctx.bind("rolegate-webauthn-v1", nonce.as_bytes()))
}

/// Replaces the challenge in webauthn-rs's serialised authentication state; refused when the
/// state does not have the layout this provider was written for (a changed webauthn-rs must
/// fail, never verify against an unbound challenge).
fn rebind_state(state: &mut Value, from: &str, to: &str) -> Result<(), ProviderError> {
    match state.pointer_mut("/ast/challenge") {
        Some(c) if c.as_str() == Some(from) => {
            *c = Value::String(to.into());
            Ok(())
        }
        _ => Err(ProviderError::internal(
            "webauthn-rs's authentication state has an unexpected layout: the challenge cannot be bound",
        )),
    }
}

/// Why webauthn-rs refused an assertion, in words an admin can act on.
fn refusal(e: &WebauthnError) -> (DenyReason, String) {
    use WebauthnError as E;
    match e {
        E::MismatchedChallenge => (
            DenyReason::WrongAnswer,
            "the assertion was made for another challenge (another request, or replayed)".into(),
        ),
        E::AuthenticationFailure => (
            DenyReason::WrongAnswer,
            "the signature does not verify: the assertion was altered, or made by another key"
                .into(),
        ),
        E::InvalidRPOrigin => (
            DenyReason::Other,
            "the assertion came from an origin this provider does not allow".into(),
        ),
        E::InvalidRPIDHash => (
            DenyReason::Other,
            "the assertion was made for another relying party id".into(),
        ),
        E::UserNotVerified => (
            DenyReason::Other,
            "the authenticator did not verify the user (a PIN or biometric is required)".into(),
        ),
        E::UserNotPresent => (
            DenyReason::Other,
            "the authenticator did not confirm the user's presence".into(),
        ),
        E::CredentialPossibleCompromise => (
            DenyReason::Cloned,
            "the authenticator's signature counter went backwards: it may have been cloned".into(),
        ),
        E::AttestationChainNotTrusted(_)
        | E::AttestationTrustFailure
        | E::AttestationNotVerifiable
        | E::AttestationUntrustedAaguid
        | E::AttestationCertificateTrustStoreEmpty
        | E::AttestationFormatMissingAaguid
        | E::AttestationCertificateAAGUIDMismatch => (
            DenyReason::Other,
            format!(
                "the authenticator's attestation does not chain to a configured root for its AAGUID (setting `attestation_roots`): {other:?}",
                other = e
            ),
        ),
        other => (
            DenyReason::Other,
            format!("webauthn-rs refused the answer ({other:?})"),
        ),
    }
}

impl Provider for WebauthnProvider {
    fn create(settings: Settings) -> Result<Self, ProviderError> {
        let settings: WebauthnSettings = settings.parse()?;
        let rp_id = settings.rp_id.trim();
        if rp_id.is_empty() || rp_id.contains(['/', ':', ' ']) {
            return Err(config(format!(
                "setting `rp_id` must be a domain (`pam.contoso.com`), not `{}`",
                settings.rp_id
            )));
        }
        if settings.origins.is_empty() {
            return Err(config(
                "setting `origins` must list at least one origin (`https://pam.contoso.com`)",
            ));
        }
        let origins = settings
            .origins
            .iter()
            .map(|o| check_origin(rp_id, o))
            .collect::<Result<Vec<_>, _>>()?;
        if !(30..=600).contains(&settings.expires_in) {
            return Err(config(format!(
                "setting `expires_in` must be between 30 and 600 seconds, not {}",
                settings.expires_in
            )));
        }
        let uv_required = match (settings.profile, settings.user_verification) {
            (Profile::SecurityKey, uv) => uv != Some(UserVerification::Discouraged),
            (_, None | Some(UserVerification::Required)) => true,
            (p, Some(UserVerification::Discouraged)) => {
                return Err(config(format!(
                    "setting `user_verification`: the `{}` profile always requires it",
                    serde_json::to_value(p)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default()
                )));
            }
        };
        let aaguids = match (&settings.aaguids, settings.profile) {
            (Some(list), _) => Some(
                list.iter()
                    .map(|a| {
                        Uuid::parse_str(a.trim()).map_err(|_| {
                            config(format!(
                                "setting `aaguids`: `{a}` is not an AAGUID (a UUID like `{}`)",
                                WINDOWS_HELLO_AAGUIDS[0]
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            (None, Profile::WindowsHello) => Some(
                WINDOWS_HELLO_AAGUIDS
                    .iter()
                    .filter_map(|a| Uuid::parse_str(a).ok())
                    .collect(),
            ),
            (None, _) => None,
        };
        let roots = match &settings.attestation_roots {
            None => None,
            Some(_) if settings.profile == Profile::Passkey => {
                return Err(config(
                    "setting `attestation_roots`: the `passkey` profile accepts any authenticator; use `windows-hello` or `security-key` to require an attested one",
                ));
            }
            Some(files) => {
                let Some(allowed) = aaguids.as_ref().filter(|a| !a.is_empty()) else {
                    return Err(config(
                        "setting `attestation_roots` needs `aaguids`: the AAGUIDs the roots vouch for",
                    ));
                };
                Some(attestation_roots(files, allowed)?)
            }
        };
        let mut builder = WebauthnBuilder::new(rp_id, &origins[0])
            .map_err(|e| config(format!("the relying party: {e:?}")))?
            .rp_name(settings.rp_name.trim());
        for o in &origins[1..] {
            builder = builder.append_allowed_origin(o);
        }
        let webauthn = builder
            .build()
            .map_err(|e| config(format!("the relying party: {e:?}")))?;
        Ok(Self {
            settings,
            webauthn,
            aaguids,
            uv_required,
            roots,
        })
    }

    fn info(&self) -> ProviderInfo {
        let name = match self.settings.profile {
            Profile::WindowsHello => "Windows Hello",
            Profile::SecurityKey => "Security key (FIDO2)",
            Profile::Passkey => "Passkey",
        };
        ProviderInfo {
            id: "webauthn".into(),
            name: name.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            vendor: "rolegate".into(),
            factor: FactorKind::Webauthn,
            needs_enrolment: true,
            needs_phone: false,
            responder: PromptKind::Webauthn,
            quick: true,
            answer_ahead: false,
            sdk_version: String::new(),
            several_credentials: true,
        }
    }

    fn enroll_start(&self, ctx: &EnrollContext) -> Result<Step, ProviderError> {
        let stored = Self::stored(&ctx.credentials)?;
        let expires_at = ctx.now + self.settings.expires_in;
        if !stored.is_empty() {
            // Another credential beside the ones the user holds: one of them first.
            let (mut options, authentication) = self.start_authentication(&stored)?;
            options["ceremony"] = json!("get");
            options["purpose"] = json!("prove");
            let state = Enrolment {
                account: ctx.user.account.clone(),
                expires_at,
                stage: Stage::Prove(authentication),
            };
            return self.ask(options, &state);
        }
        self.start_registration(ctx, &stored, expires_at)
    }

    fn enroll_continue(
        &self,
        ctx: &EnrollContext,
        state: &[u8],
        input: &Input,
    ) -> Result<Step, ProviderError> {
        let state: Enrolment = serde_json::from_slice(state)
            .map_err(|_| ProviderError::bad_input("the enrolment state is not WebAuthn's"))?;
        if state.account != ctx.user.account {
            return Err(ProviderError::bad_input(
                "the enrolment state belongs to another user",
            ));
        }
        if ctx.now >= state.expires_at {
            return Ok(Self::deny(
                DenyReason::Expired,
                "the enrolment expired; start it again",
            ));
        }
        let value = json_answer(input, "answer")?;
        let registration = match &state.stage {
            Stage::Prove(authentication) => {
                let stored = Self::stored(&ctx.credentials)?;
                return match self.finish_authentication(value, authentication, stored)? {
                    Ok(_) => self.start_registration(
                        ctx,
                        &Self::stored(&ctx.credentials)?,
                        state.expires_at,
                    ),
                    Err(denied) => Ok(denied),
                };
            }
            Stage::Register(registration) => registration,
        };
        let label = value
            .get("label")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .unwrap_or("WebAuthn credential");
        if label.chars().count() > 64 || label.chars().any(char::is_control) {
            return Err(ProviderError::bad_input(
                "the label must be at most 64 characters, without control characters",
            ));
        }
        let credential: RegisterPublicKeyCredential =
            serde_json::from_value(value.get("credential").cloned().unwrap_or(Value::Null))
                .map_err(|e| {
                    ProviderError::bad_input(format!(
                        "`credential` is not a WebAuthn registration response: {e}"
                    ))
                })?;
        let (key, aaguid) = match registration {
            Registration::Passkey(reg) => {
                match self.webauthn.finish_passkey_registration(&credential, reg) {
                    Ok(k) => (Key::Passkey(k), None),
                    Err(e) => {
                        let (reason, why) = refusal(&e);
                        return Ok(Self::deny(reason, why));
                    }
                }
            }
            Registration::SecurityKey(reg) => {
                match self
                    .webauthn
                    .finish_securitykey_registration(&credential, reg)
                {
                    Ok(k) => {
                        let aaguid = match &k.attestation().metadata {
                            AttestationMetadata::Packed { aaguid }
                            | AttestationMetadata::Tpm { aaguid, .. } => Some(*aaguid),
                            _ => None,
                        };
                        (Key::SecurityKey(k), aaguid)
                    }
                    Err(e) => {
                        let (reason, why) = refusal(&e);
                        return Ok(Self::deny(reason, why));
                    }
                }
            }
        };
        if let Some(allowed) = &self.aaguids {
            match aaguid {
                Some(a) if allowed.contains(&a) => {}
                Some(a) => {
                    return Ok(Self::deny(
                        DenyReason::Other,
                        format!("this authenticator (AAGUID {a}) is not one this provider accepts"),
                    ));
                }
                None => {
                    return Ok(Self::deny(
                        DenyReason::Other,
                        "the authenticator did not say what it is (no attested AAGUID), and this provider accepts only listed authenticators",
                    ));
                }
            }
        }
        let id = match &key {
            Key::Passkey(k) => URL_SAFE_NO_PAD.encode(AsRef::<[u8]>::as_ref(k.cred_id())),
            Key::SecurityKey(k) => URL_SAFE_NO_PAD.encode(AsRef::<[u8]>::as_ref(k.cred_id())),
        };
        let stored = Stored {
            profile: self.settings.profile,
            aaguid: aaguid.map(|a| a.to_string()),
            attested: self.roots.is_some() && aaguid.is_some(),
            key,
        };
        Self::approve(id, label.to_string(), &stored, String::new())
    }

    fn challenge_start(&self, ctx: &ChallengeContext) -> Result<Step, ProviderError> {
        let stored = Self::stored(&ctx.credentials)?;
        if stored.is_empty() {
            return Ok(Self::deny(
                DenyReason::NotEnrolled,
                "no WebAuthn credential is registered for this user",
            ));
        }
        let (mut options, authentication) = self.start_authentication(&stored)?;
        let nonce = options
            .pointer("/publicKey/challenge")
            .and_then(Value::as_str)
            .map(String::from)
            .ok_or_else(|| ProviderError::internal("the options have no challenge"))?;
        let bound = bound_challenge(&nonce, ctx);
        let mut auth_state = serde_json::to_value(&authentication)
            .map_err(|e| ProviderError::internal(format!("authentication state: {e}")))?;
        let inner = match &mut auth_state {
            Value::Object(m) => m.values_mut().next(),
            _ => None,
        }
        .ok_or_else(|| ProviderError::internal("the authentication state is empty"))?;
        rebind_state(inner, &nonce, &bound)?;
        let authentication: Authentication = serde_json::from_value(auth_state)
            .map_err(|e| ProviderError::internal(format!("authentication state: {e}")))?;
        if let Some(pk) = options.get_mut("publicKey").and_then(Value::as_object_mut) {
            pk.insert("challenge".into(), json!(bound));
        }
        options["ceremony"] = json!("get");
        // What the user approves, for the page to show beside the button.
        options["request"] = json!({
            "id": ctx.request_id,
            "role": ctx.role,
            "ttl_s": ctx.ttl_s,
            "justification": ctx.justification,
        });
        let state = Challenge {
            account: ctx.user.account.clone(),
            request_id: ctx.request_id.clone(),
            expires_at: ctx.now + self.settings.expires_in,
            nonce,
            authentication,
        };
        self.ask(options, &state)
    }

    fn challenge_continue(
        &self,
        ctx: &ChallengeContext,
        state: &[u8],
        input: &Input,
    ) -> Result<Step, ProviderError> {
        let state: Challenge = serde_json::from_slice(state)
            .map_err(|_| ProviderError::bad_input("the challenge state is not WebAuthn's"))?;
        if state.account != ctx.user.account || state.request_id != ctx.request_id {
            return Err(ProviderError::bad_input(
                "the challenge state belongs to another request",
            ));
        }
        if ctx.now >= state.expires_at {
            return Ok(Self::deny(DenyReason::Expired, "the prompt expired"));
        }
        let value = json_answer(input, "assertion")?;
        let stored = Self::stored(&ctx.credentials)?;
        match self.finish_authentication(value, &state.authentication, stored)? {
            Ok(proved) => {
                let detail = format!(
                    "credential {} ({}), AAGUID {} ({}), user {}, counter {}",
                    proved.credential.id,
                    proved.credential.label,
                    proved.stored.aaguid.as_deref().unwrap_or("none"),
                    if proved.stored.attested {
                        "attested by a configured root"
                    } else {
                        "self-asserted"
                    },
                    if proved.user_verified {
                        "verified"
                    } else {
                        "present (not verified)"
                    },
                    proved.counter
                );
                Self::approve(
                    proved.credential.id,
                    proved.credential.label,
                    &proved.stored,
                    detail,
                )
            }
            Err(denied) => Ok(denied),
        }
    }
}

/// An assertion that verified: the credential it was made with, updated (its counter).
struct Proved {
    credential: Credential,
    stored: Stored,
    user_verified: bool,
    counter: u32,
}

impl WebauthnProvider {
    /// Options and state for an assertion by one of the user's credentials.
    fn start_authentication(
        &self,
        stored: &[(Credential, Stored)],
    ) -> Result<(Value, Authentication), ProviderError> {
        let fail = |e: WebauthnError| ProviderError::internal(format!("authentication: {e:?}"));
        let (options, authentication) = match self.settings.profile {
            Profile::Passkey => {
                let keys: Vec<Passkey> = stored
                    .iter()
                    .filter_map(|(_, s)| match &s.key {
                        Key::Passkey(k) => Some(k.clone()),
                        Key::SecurityKey(_) => None,
                    })
                    .collect();
                let (rcr, st) = self
                    .webauthn
                    .start_passkey_authentication(&keys)
                    .map_err(fail)?;
                (rcr, Authentication::Passkey(st))
            }
            Profile::SecurityKey | Profile::WindowsHello => {
                let keys: Vec<SecurityKey> = stored
                    .iter()
                    .filter_map(|(_, s)| match &s.key {
                        Key::SecurityKey(k) => Some(k.clone()),
                        Key::Passkey(_) => None,
                    })
                    .collect();
                let (rcr, st) = self
                    .webauthn
                    .start_securitykey_authentication(&keys)
                    .map_err(fail)?;
                (rcr, Authentication::SecurityKey(st))
            }
        };
        let mut options = serde_json::to_value(&options)
            .map_err(|e| ProviderError::internal(format!("authentication options: {e}")))?;
        if let Some(pk) = options.get_mut("publicKey").and_then(Value::as_object_mut) {
            pk.insert(
                "userVerification".into(),
                json!(if self.uv_required {
                    "required"
                } else {
                    "discouraged"
                }),
            );
            pk.insert("timeout".into(), json!(self.settings.expires_in * 1000));
        }
        Ok((options, authentication))
    }

    /// Verifies an assertion against the state and the user's credentials as the host holds
    /// them now: the credential it proved, or the denial to answer.
    fn finish_authentication(
        &self,
        value: &Value,
        authentication: &Authentication,
        stored: Vec<(Credential, Stored)>,
    ) -> Result<Result<Proved, Step>, ProviderError> {
        let assertion: PublicKeyCredential =
            serde_json::from_value(value.clone()).map_err(|e| {
                ProviderError::bad_input(format!("the answer is not a WebAuthn assertion: {e}"))
            })?;
        let used = URL_SAFE_NO_PAD.encode(AsRef::<[u8]>::as_ref(&assertion.raw_id));
        let Some((credential, mut s)) = stored.into_iter().find(|(c, _)| c.id == used) else {
            return Ok(Err(Self::deny(
                DenyReason::WrongAnswer,
                "the assertion was made with a credential this user has not registered here",
            )));
        };
        let result = match authentication {
            Authentication::Passkey(st) => {
                self.webauthn.finish_passkey_authentication(&assertion, st)
            }
            Authentication::SecurityKey(st) => self
                .webauthn
                .finish_securitykey_authentication(&assertion, st),
        };
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                let (reason, why) = refusal(&e);
                return Ok(Err(Self::deny_with(reason, why, &credential.id)));
            }
        };
        if self.uv_required && !result.user_verified() {
            return Ok(Err(Self::deny_with(
                DenyReason::Other,
                "the authenticator did not verify the user (a PIN or biometric is required)",
                &credential.id,
            )));
        }
        // The counter advances through the host's credential update. The state holds the
        // credentials as they were at the challenge's start, so webauthn-rs compares the
        // counter with that copy: the stored credential the host hands back now is the one
        // to compare with. An authenticator that counts (a counter above 0) must have moved
        // it past the stored value; one that does not count always says 0. A fresh challenge
        // was signed (the state's), so a counter at or below the stored one is no replay of
        // an old assertion: another authenticator holds the same key — a copy.
        let advanced = match &mut s.key {
            Key::Passkey(k) => k.update_credential(&result),
            Key::SecurityKey(k) => k.update_credential(&result),
        };
        if result.counter() > 0 && advanced != Some(true) {
            return Ok(Err(Self::deny_with(
                DenyReason::Cloned,
                format!(
                    "the authenticator's signature counter did not advance past the stored one (it said {}): another authenticator holds a copy of this credential",
                    result.counter()
                ),
                &credential.id,
            )));
        }
        Ok(Ok(Proved {
            credential,
            stored: s,
            user_verified: result.user_verified(),
            counter: result.counter(),
        }))
    }

    /// The registration ceremony's prompt, excluding the credentials the user holds.
    fn start_registration(
        &self,
        ctx: &EnrollContext,
        stored: &[(Credential, Stored)],
        expires_at: u64,
    ) -> Result<Step, ProviderError> {
        let exclude: Vec<_> = stored
            .iter()
            .map(|(_, s)| match &s.key {
                Key::Passkey(k) => k.cred_id().clone(),
                Key::SecurityKey(k) => k.cred_id().clone(),
            })
            .collect();
        let exclude = (!exclude.is_empty()).then_some(exclude);
        let handle = Self::user_handle(&ctx.user.account);
        let name = &ctx.user.account;
        let display = if ctx.user.display_name.trim().is_empty() {
            name.as_str()
        } else {
            ctx.user.display_name.as_str()
        };
        let fail = |e: WebauthnError| ProviderError::internal(format!("registration: {e:?}"));
        let (options, registration) = match self.settings.profile {
            Profile::Passkey => {
                let (ccr, reg) = self
                    .webauthn
                    .start_passkey_registration(handle, name, display, exclude)
                    .map_err(fail)?;
                (ccr, Registration::Passkey(reg))
            }
            Profile::SecurityKey | Profile::WindowsHello => {
                let (ccr, reg) = self
                    .webauthn
                    .start_securitykey_registration(
                        handle,
                        name,
                        display,
                        exclude,
                        self.roots.clone(),
                        self.attachment(),
                    )
                    .map_err(fail)?;
                (ccr, Registration::SecurityKey(reg))
            }
        };
        let mut options = serde_json::to_value(&options)
            .map_err(|e| ProviderError::internal(format!("registration options: {e}")))?;
        if let Some(pk) = options.get_mut("publicKey").and_then(Value::as_object_mut) {
            // What the profile asks of the authenticator (the checks are the provider's own).
            if self.aaguids.is_some() {
                pk.insert("attestation".into(), json!("direct"));
            }
            pk.insert("timeout".into(), json!(self.settings.expires_in * 1000));
            match self.settings.profile {
                Profile::WindowsHello => {
                    pk.insert("hints".into(), json!(["client-device"]));
                }
                Profile::SecurityKey => {
                    pk.insert("hints".into(), json!(["security-key"]));
                }
                Profile::Passkey => {}
            }
            if !self.uv_required
                && let Some(ext) = pk.get_mut("extensions").and_then(Value::as_object_mut)
            {
                // A key that cannot verify its user must still be able to use the credential:
                // no protection policy that would demand verification.
                ext.remove("credentialProtectionPolicy");
                ext.remove("enforceCredentialProtectionPolicy");
            }
            if let Some(sel) = pk
                .get_mut("authenticatorSelection")
                .and_then(Value::as_object_mut)
            {
                sel.insert(
                    "userVerification".into(),
                    json!(if self.uv_required {
                        "required"
                    } else {
                        "discouraged"
                    }),
                );
                if self.settings.profile == Profile::Passkey {
                    // Asked for, not required: an authenticator that cannot keep a
                    // discoverable credential still registers (challenges name the user's
                    // credentials, so none needs to be discoverable).
                    sel.insert("residentKey".into(), json!("preferred"));
                }
            }
        }
        options["ceremony"] = json!("create");
        let state = Enrolment {
            account: ctx.user.account.clone(),
            expires_at,
            stage: Stage::Register(registration),
        };
        self.ask(options, &state)
    }
}

export_provider!(WebauthnProvider);

#[cfg(test)]
mod tests;
