//! sms-twilio: a one-time code sent by SMS through Twilio's Messages API.
//!
//! `challenge_start` draws a code from the operating system's CSPRNG, sends it to the user's
//! phone with Twilio (retrying 429, 5xx and transport failures within `timeout_ms`), and asks
//! the user to type it; the message SID goes with the step as its `reference`, for the
//! host's event. A message Twilio creates already `failed` or `undelivered` is an error. The
//! challenge state carries no code: only a salted SHA-256 of it, bound to the activation
//! request, with the expiry and the request id. `challenge_continue` hashes what the user
//! typed the same way and compares in constant time.
//!
//! One use: the host takes one answer per `Ask` (a wrong answer is re-asked against the same
//! state only up to its `max_wrong_answers`), and ends the request once the challenge is
//! `Done`, so an approved code can never be presented again; a state is also refused for any
//! other request id. The provider itself keeps nothing between calls, as the contract asks.
//!
//! Settings and the Twilio error mapping are documented in `docs/providers/sms-twilio.md`.

mod code;
mod settings;
mod twilio;

use rolegate_sdk::serde::{Deserialize, Serialize};
use rolegate_sdk::{
    Bytes, ChallengeContext, DenyReason, FactorKind, Health, HealthStatus, Input, Prompt,
    PromptKind, Provider, ProviderError, ProviderInfo, Settings, Step, Verdict, export_provider,
};

pub use settings::SmsSettings;
#[doc(hidden)]
pub use twilio::fuzz_answer;

use crate::settings::{Checked, is_e164, render_body};
use crate::twilio::{Twilio, masked};

/// Version of the state layout.
const STATE_VERSION: u8 = 1;

/// The challenge as the host stores it (sealed) between calls: never the code itself.
#[derive(Debug, Serialize, Deserialize)]
#[serde(crate = "rolegate_sdk::serde", deny_unknown_fields)]
struct State {
    v: u8,
    request_id: String,
    expires_at: u64,
    length: u8,
    salt: Bytes,
    hash: Bytes,
}

/// The SMS-via-Twilio provider.
#[derive(Debug)]
pub struct SmsTwilio {
    settings: Checked,
    twilio: Twilio,
}

/// The number Twilio gets: the E.164 part of the user's phone, without an extension.
fn recipient(phone: &str) -> &str {
    phone
        .split(['x', 'X', ';'])
        .next()
        .unwrap_or_default()
        .trim()
}

fn denied(reason: DenyReason, message: impl Into<String>) -> Step {
    Step::Done {
        verdict: Verdict::denied(reason, message.into()),
    }
}

impl SmsTwilio {
    fn state(&self, ctx: &ChallengeContext, code: &str) -> Result<Bytes, ProviderError> {
        let mut salt = [0u8; code::SALT_LEN];
        code::random(&mut salt)?;
        let state = State {
            v: STATE_VERSION,
            request_id: ctx.request_id.clone(),
            expires_at: ctx.now.saturating_add(self.settings.code_lifetime_s),
            length: self.settings.code_length,
            hash: Bytes(code::digest(&salt, &ctx.request_id, code).to_vec()),
            salt: Bytes(salt.to_vec()),
        };
        rolegate_sdk::serde_json::to_vec(&state)
            .map(Bytes)
            .map_err(|e| ProviderError::internal(format!("the state could not be encoded: {e}")))
    }
}

fn read_state(bytes: &[u8]) -> Result<State, ProviderError> {
    let state: State = rolegate_sdk::serde_json::from_slice(bytes)
        .map_err(|_| ProviderError::bad_input("the challenge state is not sms-twilio's"))?;
    if state.v != STATE_VERSION
        || state.salt.len() != code::SALT_LEN
        || state.hash.len() != 32
        || !(6..=10).contains(&state.length)
    {
        return Err(ProviderError::bad_input(
            "the challenge state is not sms-twilio's (unknown layout)",
        ));
    }
    Ok(state)
}

impl Provider for SmsTwilio {
    fn create(settings: Settings) -> Result<Self, ProviderError> {
        let settings = Checked::from_settings(&settings)?;
        let twilio = Twilio::new(&settings)?;
        Ok(Self { settings, twilio })
    }

    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            id: "sms-twilio".into(),
            name: "SMS code (Twilio)".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            vendor: "rolegate".into(),
            factor: FactorKind::Code,
            needs_enrolment: false,
            needs_phone: true,
            responder: PromptKind::Code,
            // Sending waits on Twilio: never on the host's request threads.
            quick: false,
            answer_ahead: false,
            sdk_version: String::new(),
            several_credentials: false,
        }
    }

    fn health(&self) -> Health {
        // No network: health is polled, and a probe request would cost nothing less than a
        // real one. It reports what can break without Twilio: the token.
        match self.twilio.token_readable() {
            Ok(()) => Health::ok(),
            Err(e) => Health {
                status: HealthStatus::Down,
                message: e.message,
            },
        }
    }

    fn challenge_start(&self, ctx: &ChallengeContext) -> Result<Step, ProviderError> {
        let phone = ctx
            .user
            .phone
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty());
        let Some(phone) = phone else {
            return Ok(denied(
                DenyReason::NotEnrolled,
                format!(
                    "`{}` has no phone number on record, so no SMS code can be sent; an admin must add one",
                    ctx.user.account
                ),
            ));
        };
        let to = recipient(phone);
        if !is_e164(to) {
            return Err(ProviderError::bad_input(format!(
                "the phone number of `{}` (ending {}) is not in E.164 form, so no SMS was sent",
                ctx.user.account,
                masked(to)
            )));
        }
        let code = code::generate(self.settings.code_length)?;
        let state = self.state(ctx, &code)?;
        let body = render_body(&self.settings.body, &code, self.settings.code_lifetime_s);
        let sent = self.twilio.send(to, &body, &code)?;
        Ok(Step::Ask {
            prompt: Prompt::Code {
                message: format!("Type the code sent by SMS to {}", masked(to)),
                length: Some(self.settings.code_length),
            },
            state,
            expires_in: self.settings.code_lifetime_s,
            // The message SID is for the admin (the host records it), not in the prompt.
            reference: sent.sid,
        })
    }

    fn challenge_continue(
        &self,
        ctx: &ChallengeContext,
        state: &[u8],
        input: &Input,
    ) -> Result<Step, ProviderError> {
        let state = read_state(state)?;
        if state.request_id != ctx.request_id {
            return Err(ProviderError::bad_input(
                "the challenge state belongs to another request",
            ));
        }
        if ctx.now >= state.expires_at {
            return Ok(denied(
                DenyReason::Expired,
                "the SMS code expired; request the role again for a new one",
            ));
        }
        let Input::Code { code } = input else {
            return Err(ProviderError::bad_input(
                "sms-twilio expects the typed code from the SMS",
            ));
        };
        let code = code.trim();
        if code.len() != usize::from(state.length) || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ProviderError::bad_input(format!(
                "the code must be {} digits",
                state.length
            )));
        }
        let typed = code::digest(state.salt.as_slice(), &ctx.request_id, code);
        let verdict = if code::same(&typed, state.hash.as_slice()) {
            Verdict::approved(None)
        } else {
            Verdict::denied(DenyReason::WrongAnswer, "wrong code")
        };
        Ok(Step::Done { verdict })
    }
}

export_provider!(SmsTwilio);

#[cfg(test)]
mod tests;
