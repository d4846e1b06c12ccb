//! smartcard: PIV smartcards (YubiKey PIV, issued PIV/CAC cards) as a rolegate factor — the
//! card's PIV Authentication key (slot 9A) signs a challenge bound to the request.
//!
//! **Enrolment** takes the slot 9A certificate as the responder (`rolegate enrol`, which
//! speaks PC/SC) read it, with the card's signature over a fresh challenge (proof that the
//! card holds the key), and checks the certificate before storing anything: its validity
//! period, key usage `digitalSignature`, and — as the settings ask — an issuer among the
//! configured CA certificates, an extended key usage, and a revocation list. It stores the
//! certificate (for the checks at each use) and its SHA-256 fingerprint, labelled with the
//! certificate's subject.
//!
//! **Activation** asks the card to sign `SHA-256("rolegate-smartcard-v1" ‖ nonce ‖ request id
//! ‖ role ‖ ttl_s ‖ justification)` (each field length-prefixed), so that the signature is
//! evidence of what the user approved, and verifies it with the enrolled key: ECDSA P-256
//! (SHA-256) and P-384 (SHA-384), RSA 2048 to 4096 bits (PKCS#1 v1.5, SHA-256), each over the
//! challenge bytes. The certificate's validity and revocation are checked again at each use.
//!
//! The answer, at enrolment and activation, is JSON: `{"certificate": <base64 DER>,
//! "signature": <base64>}` (ECDSA signatures DER-encoded, as PIV cards return them, or raw
//! `r‖s`). An activation may also answer with the signature's bytes alone.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use der::{Decode as _, DecodePem as _, Encode as _};
use rolegate_sdk::serde::{Deserialize, Serialize};
use rolegate_sdk::serde_json::{self, Value};
use rolegate_sdk::{
    ChallengeContext, Credential, DenyReason, EnrollContext, FactorKind, Input, Prompt, PromptKind,
    Provider, ProviderError, ProviderInfo, Settings, Step, Verdict, export_provider,
};
use sha2::{Digest as _, Sha256, Sha384};
use x509_cert::Certificate;
use x509_cert::crl::CertificateList;
use x509_cert::ext::pkix::{ExtendedKeyUsage, KeyUsage};

/// The provider's settings (`[provider.settings]` in the host's config).
#[derive(Debug, Clone, Deserialize)]
#[serde(crate = "rolegate_sdk::serde", deny_unknown_fields)]
pub struct SmartcardSettings {
    /// PEM files of the CA certificates a card's certificate must be issued by (directly); none:
    /// any issuer (the fingerprint enrolled is what is trusted).
    #[serde(default)]
    pub ca_files: Vec<String>,
    /// Extended key usages (OIDs) of which the certificate must have one, when given
    /// (`1.3.6.1.5.5.7.3.2` TLS client, `1.3.6.1.4.1.311.20.2.2` smartcard logon).
    #[serde(default)]
    pub extended_key_usages: Vec<String>,
    /// A certificate revocation list (DER or PEM), read again at each check; a revoked card is
    /// refused, and so is every card while the list is past its next update.
    #[serde(default)]
    pub crl_file: Option<String>,
    /// Seconds a user has to sign (30 to 600).
    #[serde(default = "default_expires_in")]
    pub expires_in: u64,
}

fn default_expires_in() -> u64 {
    120
}

/// The smartcard provider.
pub struct SmartcardProvider {
    settings: SmartcardSettings,
    cas: Vec<Certificate>,
    ekus: Vec<der::oid::ObjectIdentifier>,
}

/// A stored credential, as the host keeps it (sealed).
#[derive(Serialize, Deserialize)]
#[serde(crate = "rolegate_sdk::serde")]
struct Stored {
    /// The slot 9A certificate, base64 DER.
    certificate: String,
    /// Its SHA-256, lower-case hex.
    fingerprint: String,
    /// Its subject, for the admin.
    subject: String,
}

/// A ceremony's state, sealed by the host between the calls.
#[derive(Serialize, Deserialize)]
#[serde(crate = "rolegate_sdk::serde")]
struct Pending {
    account: String,
    /// The request it is for (empty for an enrolment).
    request_id: String,
    expires_at: u64,
    /// The bytes the card must sign, base64.
    challenge: String,
}

/// What the responder sends back.
struct Answer {
    certificate: Option<Vec<u8>>,
    signature: Vec<u8>,
}

/// A public key a card may hold.
enum Key {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Rsa(rsa::RsaPublicKey),
}

/// A checked certificate: the parsed form and what the provider keeps of it.
struct Checked {
    key: Key,
    fingerprint: String,
    subject: String,
}

fn config(m: impl Into<String>) -> ProviderError {
    ProviderError::config(m)
}

fn deny(reason: DenyReason, message: impl Into<String>) -> Step {
    Step::Done {
        verdict: Verdict::denied(reason, message),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fingerprint as admins read it: its first 16 hex digits.
fn short(fingerprint: &str) -> &str {
    fingerprint.get(..16).unwrap_or(fingerprint)
}

/// Unix seconds of an X.509 time.
fn unix(t: &x509_cert::time::Time) -> u64 {
    t.to_unix_duration().as_secs()
}

/// A date for messages (UTC, to the day).
fn date(t: &x509_cert::time::Time) -> String {
    let d = t.to_date_time();
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

const OID_EC: &str = "1.2.840.10045.2.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";
const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_SHA256_RSA: &str = "1.2.840.113549.1.1.11";
const OID_SHA384_RSA: &str = "1.2.840.113549.1.1.12";
const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const OID_ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";

/// The public key of a certificate, when it is one this provider verifies.
fn key_of(cert: &Certificate) -> Result<Key, String> {
    let spki = cert.tbs_certificate().subject_public_key_info();
    let alg = spki.algorithm.oid.to_string();
    let bits = spki.subject_public_key.raw_bytes();
    match alg.as_str() {
        OID_EC => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.decode_as::<der::oid::ObjectIdentifier>().ok())
                .map(|o| o.to_string())
                .unwrap_or_default();
            match curve.as_str() {
                OID_P256 => p256::ecdsa::VerifyingKey::from_sec1_bytes(bits)
                    .map(Key::P256)
                    .map_err(|_| "its P-256 public key is malformed".to_string()),
                OID_P384 => p384::ecdsa::VerifyingKey::from_sec1_bytes(bits)
                    .map(Key::P384)
                    .map_err(|_| "its P-384 public key is malformed".to_string()),
                other => Err(format!(
                    "its elliptic curve ({}) is not supported: P-256 and P-384 are",
                    if other.is_empty() { "unnamed" } else { other }
                )),
            }
        }
        OID_RSA => {
            use rsa::pkcs1::DecodeRsaPublicKey as _;
            use rsa::traits::PublicKeyParts as _;
            let key = rsa::RsaPublicKey::from_pkcs1_der(bits)
                .map_err(|_| "its RSA public key is malformed".to_string())?;
            let size = key.n().bit_width();
            if !(2048..=4096).contains(&size) {
                return Err(format!(
                    "its RSA key has {size} bits: 2048 to 4096 are supported"
                ));
            }
            Ok(Key::Rsa(key))
        }
        other => Err(format!(
            "its key algorithm ({other}) is not supported: ECDSA P-256 or P-384, or RSA"
        )),
    }
}

/// Whether `signature` is `key`'s over `message`: ECDSA with the curve's hash (DER or raw
/// `r‖s`), RSA PKCS#1 v1.5 with SHA-256.
fn verifies(key: &Key, message: &[u8], signature: &[u8]) -> bool {
    use p256::ecdsa::signature::Verifier as _;
    match key {
        Key::P256(k) => p256::ecdsa::Signature::from_der(signature)
            .or_else(|_| p256::ecdsa::Signature::from_slice(signature))
            .is_ok_and(|s| k.verify(message, &s).is_ok()),
        Key::P384(k) => p384::ecdsa::Signature::from_der(signature)
            .or_else(|_| p384::ecdsa::Signature::from_slice(signature))
            .is_ok_and(|s| k.verify(message, &s).is_ok()),
        Key::Rsa(k) => rsa::pkcs1v15::Signature::try_from(signature).is_ok_and(|s| {
            rsa::pkcs1v15::VerifyingKey::<Sha256>::new(k.clone())
                .verify(message, &s)
                .is_ok()
        }),
    }
}

/// Whether `issuer`'s key signed `tbs` with the algorithm `alg` (an issuer's signature over a
/// certificate or a CRL): ECDSA with SHA-256 or SHA-384, RSA PKCS#1 v1.5 with either.
fn issued_by(issuer: &Key, alg: &str, tbs: &[u8], signature: &[u8]) -> bool {
    use p256::ecdsa::signature::Verifier as _;
    use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
    let digest: Vec<u8> = match alg {
        OID_ECDSA_SHA256 | OID_SHA256_RSA => Sha256::digest(tbs).to_vec(),
        OID_ECDSA_SHA384 | OID_SHA384_RSA => Sha384::digest(tbs).to_vec(),
        _ => return false,
    };
    match (issuer, alg) {
        (Key::P256(k), OID_ECDSA_SHA256 | OID_ECDSA_SHA384) => {
            p256::ecdsa::Signature::from_der(signature)
                .is_ok_and(|s| k.verify_prehash(&digest, &s).is_ok())
        }
        (Key::P384(k), OID_ECDSA_SHA256 | OID_ECDSA_SHA384) => {
            p384::ecdsa::Signature::from_der(signature)
                .is_ok_and(|s| k.verify_prehash(&digest, &s).is_ok())
        }
        (Key::Rsa(k), OID_SHA256_RSA) => {
            rsa::pkcs1v15::Signature::try_from(signature).is_ok_and(|s| {
                rsa::pkcs1v15::VerifyingKey::<Sha256>::new(k.clone())
                    .verify(tbs, &s)
                    .is_ok()
            })
        }
        (Key::Rsa(k), OID_SHA384_RSA) => {
            rsa::pkcs1v15::Signature::try_from(signature).is_ok_and(|s| {
                rsa::pkcs1v15::VerifyingKey::<Sha384>::new(k.clone())
                    .verify(tbs, &s)
                    .is_ok()
            })
        }
        _ => false,
    }
}

/// The bytes a card signs for a request: the nonce bound to the request.
fn bound_challenge(nonce: &[u8], ctx: &ChallengeContext) -> Vec<u8> {
    ctx.bind("rolegate-smartcard-v1", nonce).to_vec()
}

/// Reads the responder's answer: `{certificate, signature}` as base64, or (activation only)
/// the signature's bytes alone.
fn answer(input: &Input) -> Result<Answer, ProviderError> {
    const MAX: usize = 16 * 1024;
    let field = |v: &Value, name: &str| -> Result<Option<Vec<u8>>, ProviderError> {
        match v.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() <= MAX * 2 => STANDARD
                .decode(s.trim())
                .map(Some)
                .map_err(|_| ProviderError::bad_input(format!("`{name}` is not base64"))),
            Some(_) => Err(ProviderError::bad_input(format!(
                "`{name}` must be a base64 string of at most {MAX} bytes"
            ))),
        }
    };
    match input {
        Input::Json { value } => {
            let signature = field(value, "signature")?.ok_or_else(|| {
                ProviderError::bad_input("the answer has no `signature` (base64)")
            })?;
            Ok(Answer {
                certificate: field(value, "certificate")?,
                signature,
            })
        }
        Input::Bytes { data } if data.as_slice().len() <= MAX => Ok(Answer {
            certificate: None,
            signature: data.as_slice().to_vec(),
        }),
        _ => Err(ProviderError::bad_input(
            "expected the card's answer: {\"certificate\": base64 DER, \"signature\": base64}",
        )),
    }
}

impl SmartcardProvider {
    fn ask(
        &self,
        message: String,
        challenge: Vec<u8>,
        pending: Pending,
    ) -> Result<Step, ProviderError> {
        Ok(Step::Ask {
            prompt: Prompt::Smartcard {
                message,
                challenge: challenge.into(),
            },
            state: serde_json::to_vec(&pending)
                .map_err(|e| ProviderError::internal(format!("state: {e}")))?
                .into(),
            expires_in: self.settings.expires_in,
            reference: None,
        })
    }

    /// Checks a certificate at `now` as the settings ask: parsed, in its validity period, for
    /// digital signatures, with an allowed extended key usage, issued by a configured CA, not
    /// revoked, with a supported key. The reason it fails, in words for the admin and user.
    fn check(&self, der: &[u8], now: u64) -> Result<Checked, String> {
        let cert = Certificate::from_der(der)
            .map_err(|e| format!("the card's certificate is not valid DER ({e})"))?;
        let tbs = cert.tbs_certificate();
        let subject = tbs.subject().to_string();
        let validity = tbs.validity();
        if now < unix(&validity.not_before) {
            return Err(format!(
                "the card's certificate ({subject}) is not valid before {}",
                date(&validity.not_before)
            ));
        }
        if now > unix(&validity.not_after) {
            return Err(format!(
                "the card's certificate ({subject}) expired on {}",
                date(&validity.not_after)
            ));
        }
        match tbs.get_extension::<KeyUsage>() {
            Ok(Some((_, ku))) if ku.digital_signature() => {}
            Ok(_) => {
                return Err(format!(
                    "the card's certificate ({subject}) is not for digital signatures (key usage)"
                ));
            }
            Err(_) => {
                return Err(format!(
                    "the card's certificate ({subject}) has a malformed key usage"
                ));
            }
        }
        if !self.ekus.is_empty() {
            let found = match tbs.get_extension::<ExtendedKeyUsage>() {
                Ok(Some((_, eku))) => eku.0.iter().any(|o| self.ekus.contains(o)),
                _ => false,
            };
            if !found {
                return Err(format!(
                    "the card's certificate ({subject}) has none of the extended key usages this provider requires"
                ));
            }
        }
        let key =
            key_of(&cert).map_err(|why| format!("the card's certificate ({subject}): {why}"))?;
        let tbs_der = tbs
            .to_der()
            .map_err(|e| format!("the card's certificate cannot be re-encoded ({e})"))?;
        if !self.cas.is_empty() {
            let alg = cert.signature_algorithm().oid.to_string();
            let sig = cert.signature().raw_bytes();
            let issued = self.cas.iter().any(|ca| {
                ca.tbs_certificate().subject() == tbs.issuer()
                    && key_of(ca).is_ok_and(|k| issued_by(&k, &alg, &tbs_der, sig))
            });
            if !issued {
                return Err(format!(
                    "the card's certificate ({subject}) is not issued by a CA this provider trusts (issuer {})",
                    tbs.issuer()
                ));
            }
        }
        if let Some(file) = &self.settings.crl_file {
            self.not_revoked(&cert, file, now)?;
        }
        Ok(Checked {
            key,
            fingerprint: hex(&Sha256::digest(der)),
            subject,
        })
    }

    /// Refuses a certificate the CRL in `file` revokes, and every certificate while the CRL
    /// cannot be read, is not the card's issuer's, fails its CA's signature or is past its next
    /// update (fail closed).
    fn not_revoked(&self, cert: &Certificate, file: &str, now: u64) -> Result<(), String> {
        let bytes = std::fs::read(file)
            .map_err(|e| format!("the revocation list `{file}` cannot be read ({e})"))?;
        let crl = CertificateList::from_der(&bytes)
            .or_else(|_| CertificateList::from_pem(&bytes))
            .map_err(|e| format!("the revocation list `{file}` is not a CRL ({e})"))?;
        let tbs = cert.tbs_certificate();
        if &crl.tbs_cert_list.issuer != tbs.issuer() {
            return Err(format!(
                "the revocation list `{file}` is {}'s, not the card's issuer's ({})",
                crl.tbs_cert_list.issuer,
                tbs.issuer()
            ));
        }
        if !self.cas.is_empty() {
            let tbs_der = crl
                .tbs_cert_list
                .to_der()
                .map_err(|e| format!("the revocation list cannot be re-encoded ({e})"))?;
            let alg = crl.signature_algorithm.oid.to_string();
            let signed = self.cas.iter().any(|ca| {
                ca.tbs_certificate().subject() == &crl.tbs_cert_list.issuer
                    && key_of(ca)
                        .is_ok_and(|k| issued_by(&k, &alg, &tbs_der, crl.signature.raw_bytes()))
            });
            if !signed {
                return Err(format!(
                    "the revocation list `{file}` is not signed by a configured CA"
                ));
            }
        }
        if let Some(next) = &crl.tbs_cert_list.next_update
            && now > unix(next)
        {
            return Err(format!(
                "the revocation list `{file}` is out of date (next update was {}): no card is accepted until it is renewed",
                date(next)
            ));
        }
        let serial = tbs.serial_number();
        if let Some(entry) = crl
            .tbs_cert_list
            .revoked_certificates
            .iter()
            .flatten()
            .find(|r| &r.serial_number == serial)
        {
            return Err(format!(
                "the card's certificate ({}) was revoked on {}",
                tbs.subject(),
                date(&entry.revocation_date)
            ));
        }
        Ok(())
    }

    fn stored(credentials: &[Credential]) -> Result<Vec<(Credential, Stored)>, ProviderError> {
        Credential::decode_all(credentials, "smartcard")
    }

    /// Opens a state this provider wrote, for `account` (and `request_id`), not expired.
    fn pending(state: &[u8], account: &str, request_id: &str) -> Result<Pending, ProviderError> {
        let p: Pending = serde_json::from_slice(state)
            .map_err(|_| ProviderError::bad_input("the state is not the smartcard provider's"))?;
        if p.account != account || p.request_id != request_id {
            return Err(ProviderError::bad_input(
                "the state belongs to another user or request",
            ));
        }
        Ok(p)
    }
}

impl Provider for SmartcardProvider {
    fn create(settings: Settings) -> Result<Self, ProviderError> {
        let settings: SmartcardSettings = settings.parse()?;
        if !(30..=600).contains(&settings.expires_in) {
            return Err(config(format!(
                "setting `expires_in` must be between 30 and 600 seconds, not {}",
                settings.expires_in
            )));
        }
        let mut cas = Vec::new();
        for file in &settings.ca_files {
            let pem = std::fs::read(file).map_err(|e| {
                config(format!("setting `ca_files`: `{file}` cannot be read ({e})"))
            })?;
            let certs = Certificate::load_pem_chain(&pem).map_err(|e| {
                config(format!(
                    "setting `ca_files`: `{file}` is not PEM certificates ({e})"
                ))
            })?;
            if certs.is_empty() {
                return Err(config(format!(
                    "setting `ca_files`: `{file}` holds no certificate"
                )));
            }
            for ca in &certs {
                key_of(ca).map_err(|why| {
                    config(format!(
                        "setting `ca_files`: `{file}`'s certificate {}: {why}",
                        ca.tbs_certificate().subject()
                    ))
                })?;
            }
            cas.extend(certs);
        }
        let ekus = settings
            .extended_key_usages
            .iter()
            .map(|o| {
                o.trim().parse::<der::oid::ObjectIdentifier>().map_err(|_| {
                    config(format!(
                        "setting `extended_key_usages`: `{o}` is not an OID (like `1.3.6.1.5.5.7.3.2`)"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(file) = &settings.crl_file
            && let Err(e) = std::fs::metadata(file)
        {
            return Err(config(format!(
                "setting `crl_file`: `{file}` cannot be read ({e})"
            )));
        }
        Ok(Self {
            settings,
            cas,
            ekus,
        })
    }

    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            id: "smartcard".into(),
            name: "Smartcard (PIV)".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            vendor: "rolegate".into(),
            factor: FactorKind::Smartcard,
            needs_enrolment: true,
            needs_phone: false,
            responder: PromptKind::Smartcard,
            quick: true,
            answer_ahead: false,
            sdk_version: String::new(),
            several_credentials: false,
        }
    }

    fn enroll_start(&self, ctx: &EnrollContext) -> Result<Step, ProviderError> {
        let mut nonce = [0u8; 32];
        rolegate_sdk::random::fill(&mut nonce)?;
        let pending = Pending {
            account: ctx.user.account.clone(),
            request_id: String::new(),
            expires_at: ctx.now + self.settings.expires_in,
            challenge: STANDARD.encode(nonce),
        };
        self.ask(
            "Insert your PIV smartcard: rolegate reads its authentication certificate (slot 9A) and the card signs with it (you type its PIN)".into(),
            nonce.to_vec(),
            pending,
        )
    }

    fn enroll_continue(
        &self,
        ctx: &EnrollContext,
        state: &[u8],
        input: &Input,
    ) -> Result<Step, ProviderError> {
        let pending = Self::pending(state, &ctx.user.account, "")?;
        if ctx.now >= pending.expires_at {
            return Ok(deny(
                DenyReason::Expired,
                "the enrolment expired; start it again",
            ));
        }
        let answer = answer(input)?;
        let Some(der) = answer.certificate else {
            return Err(ProviderError::bad_input(
                "the answer has no `certificate`: the card's slot 9A certificate is enrolled",
            ));
        };
        let checked = match self.check(&der, ctx.now) {
            Ok(c) => c,
            Err(why) => return Ok(deny(DenyReason::Other, why)),
        };
        let challenge = STANDARD
            .decode(&pending.challenge)
            .map_err(|_| ProviderError::bad_input("the state's challenge is not base64"))?;
        if !verifies(&checked.key, &challenge, &answer.signature) {
            return Ok(deny(
                DenyReason::WrongAnswer,
                format!(
                    "the signature is not the card's ({}) over this enrolment's challenge",
                    checked.subject
                ),
            ));
        }
        let stored = Stored {
            certificate: STANDARD.encode(&der),
            fingerprint: checked.fingerprint.clone(),
            subject: checked.subject.clone(),
        };
        Ok(Step::Done {
            verdict: Verdict::approved(Some(Credential {
                id: checked.fingerprint,
                label: checked.subject.chars().take(64).collect(),
                data: serde_json::to_vec(&stored)
                    .map_err(|e| ProviderError::internal(format!("credential: {e}")))?
                    .into(),
            })),
        })
    }

    fn challenge_start(&self, ctx: &ChallengeContext) -> Result<Step, ProviderError> {
        let stored = Self::stored(&ctx.credentials)?;
        let Some((_, card)) = stored.first() else {
            return Ok(deny(
                DenyReason::NotEnrolled,
                "no smartcard is enrolled for this user",
            ));
        };
        let mut nonce = [0u8; 32];
        rolegate_sdk::random::fill(&mut nonce)?;
        let challenge = bound_challenge(&nonce, ctx);
        let pending = Pending {
            account: ctx.user.account.clone(),
            request_id: ctx.request_id.clone(),
            expires_at: ctx.now + self.settings.expires_in,
            challenge: STANDARD.encode(&challenge),
        };
        let minutes = ctx.ttl_s.div_ceil(60);
        let why = if ctx.justification.is_empty() {
            String::new()
        } else {
            format!(", because: {}", ctx.justification)
        };
        self.ask(
            format!(
                "Sign with your smartcard ({}) to approve role {} for {minutes} min{why} (request {})",
                card.subject, ctx.role, ctx.request_id
            ),
            challenge,
            pending,
        )
    }

    fn challenge_continue(
        &self,
        ctx: &ChallengeContext,
        state: &[u8],
        input: &Input,
    ) -> Result<Step, ProviderError> {
        let pending = Self::pending(state, &ctx.user.account, &ctx.request_id)?;
        if ctx.now >= pending.expires_at {
            return Ok(deny(DenyReason::Expired, "the prompt expired"));
        }
        let answer = answer(input)?;
        let challenge = STANDARD
            .decode(&pending.challenge)
            .map_err(|_| ProviderError::bad_input("the state's challenge is not base64"))?;
        let stored = Self::stored(&ctx.credentials)?;
        // The card it says it is, or (a bare signature) any enrolled one.
        let candidates: Vec<&(Credential, Stored)> = match &answer.certificate {
            Some(der) => {
                let fingerprint = hex(&Sha256::digest(der));
                let found: Vec<_> = stored
                    .iter()
                    .filter(|(_, s)| s.fingerprint == fingerprint)
                    .collect();
                if found.is_empty() {
                    let subject = Certificate::from_der(der)
                        .map(|c| c.tbs_certificate().subject().to_string())
                        .unwrap_or_else(|_| "unreadable".into());
                    return Ok(deny(
                        DenyReason::WrongAnswer,
                        format!(
                            "this card's certificate ({subject}, SHA-256 {}) is not the one enrolled",
                            short(&fingerprint)
                        ),
                    ));
                }
                found
            }
            None => stored.iter().collect(),
        };
        let mut last = None;
        for (credential, card) in candidates {
            let der = STANDARD
                .decode(&card.certificate)
                .map_err(|_| ProviderError::bad_input("the stored certificate is not base64"))?;
            // Checked again at each use: expiry and revocation happen after enrolment.
            let checked = match self.check(&der, ctx.now) {
                Ok(c) => c,
                Err(why) => {
                    last = Some(why);
                    continue;
                }
            };
            if verifies(&checked.key, &challenge, &answer.signature) {
                return Ok(Step::Done {
                    verdict: Verdict::Approved {
                        credential: None,
                        detail: format!(
                            "certificate {} (SHA-256 {})",
                            card.subject, card.fingerprint
                        ),
                    },
                });
            }
            last = Some(format!(
                "the signature is not the enrolled card's ({}) over this request's challenge",
                credential.label
            ));
        }
        let why = last.unwrap_or_else(|| "no enrolled card could verify the signature".into());
        let reason = if why.starts_with("the signature") {
            DenyReason::WrongAnswer
        } else {
            DenyReason::Other
        };
        Ok(deny(reason, why))
    }
}

export_provider!(SmartcardProvider);

#[cfg(test)]
mod tests;
