//! totp: time-based one-time codes (RFC 6238) from an authenticator app.
//!
//! Enrolment draws a secret from the operating system's CSPRNG and shows it as an
//! `otpauth://` URI, a QR code (PNG for the web page, block characters for the terminal) and
//! a typed key; the credential exists only once the user has typed one valid code. Each
//! challenge accepts a code from the current time step or `skew` steps either side, and
//! never a step at or before the last one accepted: that step travels back to the host as a
//! credential update, stored with the verdict, so replay protection survives restarts and
//! holds across hosts sharing one database.

use rolegate_sdk::serde::{Deserialize, Serialize};
use rolegate_sdk::{
    ChallengeContext, Credential, DenyReason, EnrollContext, FactorKind, Input, Prompt, PromptKind,
    Provider, ProviderError, ProviderInfo, Settings, Step, Verdict, export_provider,
};
use totp_rs::{Algorithm, Builder, Totp};

/// The provider's settings (`[providers.settings]` in the host's config).
#[derive(Debug, Clone, Deserialize)]
#[serde(crate = "rolegate_sdk::serde", deny_unknown_fields)]
pub struct TotpSettings {
    /// HMAC algorithm of new enrolments: `SHA1` (what every app supports), `SHA256`, `SHA512`.
    #[serde(default = "default_algorithm")]
    pub algorithm: String,
    /// Digits per code of new enrolments: 6 or 8.
    #[serde(default = "default_digits")]
    pub digits: u8,
    /// Seconds per time step of new enrolments (15 to 300).
    #[serde(default = "default_period")]
    pub period: u64,
    /// Steps accepted either side of the current one, for clock drift (0 to 10).
    #[serde(default = "default_skew")]
    pub skew: u8,
    /// The issuer label the authenticator app shows beside the account.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// Seconds a user has to type a code at a challenge (30 to 600).
    #[serde(default = "default_expires_in")]
    pub expires_in: u64,
    /// Seconds a user has to scan the code and confirm an enrolment (60 to 3600).
    #[serde(default = "default_enrol_expires_in")]
    pub enrol_expires_in: u64,
}

fn default_algorithm() -> String {
    "SHA1".into()
}
fn default_digits() -> u8 {
    6
}
fn default_period() -> u64 {
    30
}
fn default_skew() -> u8 {
    1
}
fn default_issuer() -> String {
    "rolegate".into()
}
fn default_expires_in() -> u64 {
    120
}
fn default_enrol_expires_in() -> u64 {
    600
}

/// A credential's private data: the secret and the parameters the app was set up with
/// (kept per credential, so a settings change never breaks an existing enrolment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(crate = "rolegate_sdk::serde", deny_unknown_fields)]
pub struct Secret {
    /// The shared secret, base32 (RFC 4648, no padding).
    pub secret: String,
    /// `SHA1`, `SHA256` or `SHA512`.
    pub algorithm: String,
    /// Digits per code.
    pub digits: u8,
    /// Seconds per step.
    pub period: u64,
    /// The last time step accepted; codes at or before it are refused.
    #[serde(default)]
    pub last_step: Option<u64>,
}

/// An enrolment in progress, as the host stores it between calls (sealed at rest).
#[derive(Debug, Serialize, Deserialize)]
#[serde(crate = "rolegate_sdk::serde", deny_unknown_fields)]
struct Enrolment {
    secret: Secret,
    account: String,
    expires_at: u64,
}

/// A challenge in progress.
#[derive(Debug, Serialize, Deserialize)]
#[serde(crate = "rolegate_sdk::serde", deny_unknown_fields)]
struct Challenge {
    request_id: String,
    expires_at: u64,
}

/// What a code is, checked against one credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Valid at this time step, later than any accepted before.
    Accepted(u64),
    /// Valid, but at a step already used: a replay.
    Replayed,
    /// Not valid within the window.
    Wrong,
}

fn algorithm(name: &str) -> Option<Algorithm> {
    match name.to_ascii_uppercase().as_str() {
        "SHA1" => Some(Algorithm::SHA1),
        "SHA256" => Some(Algorithm::SHA256),
        "SHA512" => Some(Algorithm::SHA512),
        _ => None,
    }
}

/// Secret length per algorithm: the HMAC's output size, as RFC 4226 recommends.
fn secret_len(a: Algorithm) -> usize {
    match a {
        Algorithm::SHA1 => 20,
        Algorithm::SHA256 => 32,
        _ => 64,
    }
}

impl Secret {
    /// The generator for this credential (`account` only labels the otpauth URI).
    fn totp(&self, issuer: Option<&str>, account: &str) -> Result<Totp, ProviderError> {
        let alg = algorithm(&self.algorithm).ok_or_else(|| {
            ProviderError::bad_input(format!(
                "the credential names an unknown algorithm `{}`",
                self.algorithm
            ))
        })?;
        if !matches!(self.digits, 6 | 8) || self.period == 0 {
            return Err(ProviderError::bad_input(
                "the credential's digits or period are not valid",
            ));
        }
        let bytes = totp_rs::Secret::try_from_base32(&self.secret)
            .map_err(|_| ProviderError::bad_input("the credential's secret is not base32"))?;
        Builder::new()
            .with_algorithm(alg)
            .with_digits(self.digits)
            .with_step_duration(self.period)
            .with_secret(bytes)
            .with_skew(0)
            .with_account_name(account.replace(':', "."))
            .with_issuer(issuer.map(|i| i.to_string()))
            .build()
            .map_err(|e| ProviderError::bad_input(format!("the credential is not usable: {e}")))
    }

    /// Checks `code` (already validated: digits only, this credential's length) at `now`.
    pub fn check(&self, code: &str, now: u64, skew: u8) -> Result<Check, ProviderError> {
        let totp = self.totp(None, "")?;
        let origin = now / self.period;
        let mut accepted: Option<u64> = None;
        let mut replayed = false;
        // Every step in the window is computed and compared, match or not.
        for step in origin.saturating_sub(u64::from(skew))..=origin.saturating_add(u64::from(skew))
        {
            let expected = totp.generate(step.saturating_mul(self.period)).to_string();
            if rolegate_sdk::constant_time_eq(expected.as_bytes(), code.as_bytes()) {
                if self.last_step.is_some_and(|last| step <= last) {
                    replayed = true;
                } else {
                    accepted = Some(accepted.map_or(step, |a| a.max(step)));
                }
            }
        }
        Ok(match (accepted, replayed) {
            (Some(step), _) => Check::Accepted(step),
            (None, true) => Check::Replayed,
            (None, false) => Check::Wrong,
        })
    }

    fn encode(&self) -> Result<Vec<u8>, ProviderError> {
        rolegate_sdk::serde_json::to_vec(self)
            .map_err(|e| ProviderError::internal(format!("credential encoding failed: {e}")))
    }

    fn decode(data: &[u8]) -> Result<Self, ProviderError> {
        rolegate_sdk::serde_json::from_slice(data)
            .map_err(|_| ProviderError::bad_input("a stored credential is not a TOTP credential"))
    }
}

/// The typed code, spaces removed, if it is `digits` digits; else a `BadInput` error.
fn typed_code(input: &Input, lengths: &[u8]) -> Result<String, ProviderError> {
    let Input::Code { code } = input else {
        return Err(ProviderError::bad_input("TOTP expects a typed code"));
    };
    let code: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    let ok_len = lengths.iter().any(|&n| code.len() == usize::from(n));
    if !ok_len || !code.bytes().all(|b| b.is_ascii_digit()) {
        let want = match lengths {
            [one] => format!("{one} digits"),
            _ => "6 or 8 digits".into(),
        };
        return Err(ProviderError::bad_input(format!("the code must be {want}")));
    }
    Ok(code)
}

fn random(n: usize) -> Result<Vec<u8>, ProviderError> {
    let mut b = vec![0u8; n];
    rolegate_sdk::random::fill(&mut b)?;
    Ok(b)
}

fn encode_state<T: Serialize>(state: &T) -> Result<Vec<u8>, ProviderError> {
    rolegate_sdk::serde_json::to_vec(state)
        .map_err(|e| ProviderError::internal(format!("state encoding failed: {e}")))
}

fn denied(reason: DenyReason, message: &str) -> Step {
    Step::Done {
        verdict: Verdict::denied(reason, message),
    }
}

/// The QR code of `text` as a PNG (black on white, 6 pixels a module, a 4-module margin).
pub fn qr_png(qr: &qrcodegen::QrCode) -> Result<Vec<u8>, ProviderError> {
    const SCALE: usize = 6;
    const MARGIN: i32 = 4;
    let modules = qr.size() + 2 * MARGIN;
    let side = usize::try_from(modules).unwrap_or(0) * SCALE;
    let mut pixels = Vec::with_capacity(side * side);
    for py in 0..side {
        for px in 0..side {
            let (x, y) = ((px / SCALE) as i32 - MARGIN, (py / SCALE) as i32 - MARGIN);
            pixels.push(if qr.get_module(x, y) { 0u8 } else { 255u8 });
        }
    }
    let mut out = Vec::new();
    let side32 = u32::try_from(side)
        .map_err(|_| ProviderError::internal("the QR code is too large for a PNG"))?;
    let mut encoder = png::Encoder::new(&mut out, side32, side32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let png_error = |e: png::EncodingError| ProviderError::internal(format!("PNG encoding: {e}"));
    let mut writer = encoder.write_header().map_err(png_error)?;
    writer.write_image_data(&pixels).map_err(png_error)?;
    writer.finish().map_err(png_error)?;
    Ok(out)
}

/// The QR code in block characters for a terminal: two modules a line, light modules
/// drawn (as `qrencode -t UTF8` does, so it reads dark-on-light in a dark terminal).
pub fn qr_text(qr: &qrcodegen::QrCode) -> String {
    const MARGIN: i32 = 2;
    let light = |x: i32, y: i32| !qr.get_module(x, y);
    let mut out = String::new();
    let (lo, hi) = (-MARGIN, qr.size() + MARGIN);
    let mut y = lo;
    while y < hi {
        for x in lo..hi {
            out.push(match (light(x, y), y + 1 < hi && light(x, y + 1)) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        out.push('\n');
        y += 2;
    }
    out
}

/// The key in groups of four, as people type it into an app.
fn grouped(key: &str) -> String {
    key.as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The TOTP provider.
#[derive(Debug)]
pub struct TotpProvider {
    settings: TotpSettings,
    algorithm: Algorithm,
}

impl TotpProvider {
    fn enrolment_secret(&self) -> Result<Secret, ProviderError> {
        let bytes = random(secret_len(self.algorithm))?;
        Ok(Secret {
            secret: totp_rs::Secret::from(bytes).to_base32(),
            algorithm: self.settings.algorithm.to_ascii_uppercase(),
            digits: self.settings.digits,
            period: self.settings.period,
            last_step: None,
        })
    }

    fn credentials(ctx: &ChallengeContext) -> Result<Vec<(String, String, Secret)>, ProviderError> {
        ctx.credentials
            .iter()
            .map(|c| {
                Ok((
                    c.id.clone(),
                    c.label.clone(),
                    Secret::decode(c.data.as_slice())?,
                ))
            })
            .collect()
    }
}

impl Provider for TotpProvider {
    fn create(settings: Settings) -> Result<Self, ProviderError> {
        let settings: TotpSettings = settings.parse()?;
        let Some(alg) = algorithm(&settings.algorithm) else {
            return Err(ProviderError::config(format!(
                "setting `algorithm` must be SHA1, SHA256 or SHA512, not `{}`",
                settings.algorithm
            )));
        };
        if !matches!(settings.digits, 6 | 8) {
            return Err(ProviderError::config(format!(
                "setting `digits` must be 6 or 8, not {}",
                settings.digits
            )));
        }
        if !(15..=300).contains(&settings.period) {
            return Err(ProviderError::config(format!(
                "setting `period` must be between 15 and 300 seconds, not {}",
                settings.period
            )));
        }
        if settings.skew > 10 {
            return Err(ProviderError::config(format!(
                "setting `skew` must be between 0 and 10 steps, not {}",
                settings.skew
            )));
        }
        let issuer = settings.issuer.trim();
        if issuer.is_empty() || issuer.contains(':') || issuer.len() > 64 {
            return Err(ProviderError::config(
                "setting `issuer` must be 1 to 64 characters without `:`",
            ));
        }
        if !(30..=600).contains(&settings.expires_in) {
            return Err(ProviderError::config(format!(
                "setting `expires_in` must be between 30 and 600 seconds, not {}",
                settings.expires_in
            )));
        }
        if !(60..=3600).contains(&settings.enrol_expires_in) {
            return Err(ProviderError::config(format!(
                "setting `enrol_expires_in` must be between 60 and 3600 seconds, not {}",
                settings.enrol_expires_in
            )));
        }
        Ok(Self {
            settings,
            algorithm: alg,
        })
    }

    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            id: "totp".into(),
            name: "Authenticator app (TOTP)".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            vendor: "rolegate".into(),
            factor: FactorKind::Code,
            needs_enrolment: true,
            needs_phone: false,
            responder: PromptKind::Code,
            quick: true,
            answer_ahead: true,
            sdk_version: String::new(),
            several_credentials: false,
        }
    }

    fn enroll_start(&self, ctx: &EnrollContext) -> Result<Step, ProviderError> {
        let secret = self.enrolment_secret()?;
        let totp = secret.totp(Some(self.settings.issuer.trim()), &ctx.user.account)?;
        let uri = totp
            .to_url()
            .map_err(|e| ProviderError::internal(format!("otpauth URI: {e}")))?;
        let qr = qrcodegen::QrCode::encode_text(&uri, qrcodegen::QrCodeEcc::Medium)
            .map_err(|_| ProviderError::internal("the otpauth URI is too long for a QR code"))?;
        let png = qr_png(&qr)?;
        let text = format!(
            "{}\nKey: {}  ({}, {} digits, every {} s)\n",
            qr_text(&qr),
            grouped(&secret.secret),
            secret.algorithm,
            secret.digits,
            secret.period
        );
        let state = Enrolment {
            secret,
            account: ctx.user.account.clone(),
            expires_at: ctx.now.saturating_add(self.settings.enrol_expires_in),
        };
        Ok(Step::Ask {
            prompt: Prompt::Display {
                message: format!(
                    "Scan the QR code with your authenticator app (or type the key into it), then type the {}-digit code it shows",
                    self.settings.digits
                ),
                uri: Some(uri),
                png: Some(png.into()),
                text: Some(text),
            },
            state: encode_state(&state)?.into(),
            expires_in: self.settings.enrol_expires_in,
            reference: None,
        })
    }

    fn enroll_continue(
        &self,
        ctx: &EnrollContext,
        state: &[u8],
        input: &Input,
    ) -> Result<Step, ProviderError> {
        let state: Enrolment = rolegate_sdk::serde_json::from_slice(state)
            .map_err(|_| ProviderError::bad_input("the enrolment state is not TOTP's"))?;
        if state.account != ctx.user.account {
            return Err(ProviderError::bad_input(
                "the enrolment state belongs to another user",
            ));
        }
        let code = typed_code(input, &[state.secret.digits])?;
        if ctx.now >= state.expires_at {
            return Ok(denied(
                DenyReason::Expired,
                "the enrolment expired; start it again",
            ));
        }
        match state.secret.check(&code, ctx.now, self.settings.skew)? {
            Check::Accepted(step) => {
                let mut secret = state.secret;
                // The confirming code is spent: it cannot also answer a challenge.
                secret.last_step = Some(step);
                let id = format!("totp-{}", hex(&random(4)?));
                Ok(Step::Done {
                    verdict: Verdict::Approved {
                        credential: Some(Credential {
                            id,
                            label: format!("Authenticator app ({})", secret.algorithm),
                            data: secret.encode()?.into(),
                        }),
                        detail: String::new(),
                    },
                })
            }
            Check::Replayed | Check::Wrong => Ok(denied(
                DenyReason::WrongAnswer,
                "that code does not match: check the app's entry and the device's clock, then try again",
            )),
        }
    }

    fn challenge_start(&self, ctx: &ChallengeContext) -> Result<Step, ProviderError> {
        let creds = Self::credentials(ctx)?;
        if creds.is_empty() {
            return Ok(denied(
                DenyReason::NotEnrolled,
                "no authenticator app is enrolled: enrol one first (`rolegate enrol`)",
            ));
        }
        let mut lengths: Vec<u8> = creds.iter().map(|(_, _, s)| s.digits).collect();
        lengths.dedup();
        let length = match lengths.as_slice() {
            [one] => Some(*one),
            _ => None,
        };
        let state = Challenge {
            request_id: ctx.request_id.clone(),
            expires_at: ctx.now.saturating_add(self.settings.expires_in),
        };
        Ok(Step::Ask {
            prompt: Prompt::Code {
                message: "Type the code your authenticator app shows".into(),
                length,
            },
            state: encode_state(&state)?.into(),
            expires_in: self.settings.expires_in,
            reference: None,
        })
    }

    fn challenge_continue(
        &self,
        ctx: &ChallengeContext,
        state: &[u8],
        input: &Input,
    ) -> Result<Step, ProviderError> {
        let state: Challenge = rolegate_sdk::serde_json::from_slice(state)
            .map_err(|_| ProviderError::bad_input("the challenge state is not TOTP's"))?;
        if state.request_id != ctx.request_id {
            return Err(ProviderError::bad_input(
                "the challenge state belongs to another request",
            ));
        }
        let creds = Self::credentials(ctx)?;
        let lengths: Vec<u8> = creds.iter().map(|(_, _, s)| s.digits).collect();
        if lengths.is_empty() {
            return Ok(denied(
                DenyReason::NotEnrolled,
                "no authenticator app is enrolled",
            ));
        }
        let code = typed_code(input, &lengths)?;
        if ctx.now >= state.expires_at {
            return Ok(denied(DenyReason::Expired, "the challenge expired"));
        }
        let mut replayed = false;
        for (id, label, secret) in creds {
            if code.len() != usize::from(secret.digits) {
                continue;
            }
            match secret.check(&code, ctx.now, self.settings.skew)? {
                Check::Accepted(step) => {
                    let mut secret = secret;
                    secret.last_step = Some(step);
                    return Ok(Step::Done {
                        verdict: Verdict::approved(Some(Credential {
                            id,
                            label,
                            data: secret.encode()?.into(),
                        })),
                    });
                }
                Check::Replayed => replayed = true,
                Check::Wrong => {}
            }
        }
        Ok(if replayed {
            denied(
                DenyReason::Replayed,
                "this code was used already: wait for the app's next code",
            )
        } else {
            denied(DenyReason::WrongAnswer, "wrong code")
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The otpauth URI's secret, for tests and tools that act as the user's app.
pub fn secret_of_uri(uri: &str) -> Option<String> {
    let query = uri.split_once('?')?.1;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("secret="))
        .map(str::to_string)
}

/// The code an app set up from `uri` shows at `now` (what a test's "user" types).
pub fn code_for_uri(uri: &str, now: u64) -> Option<String> {
    let secret = secret_of_uri(uri)?;
    let param = |name: &str| {
        uri.split_once('?')?
            .1
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")[..]).map(str::to_string))
    };
    let s = Secret {
        secret,
        algorithm: param("algorithm").unwrap_or_else(|| "SHA1".into()),
        digits: param("digits").and_then(|d| d.parse().ok()).unwrap_or(6),
        period: param("period").and_then(|p| p.parse().ok()).unwrap_or(30),
        last_step: None,
    };
    code_for_secret(&s, now)
}

/// The code for a stored secret at `now`.
pub fn code_for_secret(secret: &Secret, now: u64) -> Option<String> {
    let totp = secret.totp(None, "").ok()?;
    Some(totp.generate(now).to_string())
}

export_provider!(TotpProvider);

#[cfg(test)]
mod tests;
