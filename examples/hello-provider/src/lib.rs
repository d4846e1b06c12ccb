//! hello: an example rolegate provider.
//!
//! The challenge shows a random number; the user proves they are at the keyboard by typing its
//! digits in reverse order. It demonstrates the whole contract (settings that refuse unknown
//! keys, opaque state that survives restarts, expiry from the host's clock, constant-time
//! comparison, clean errors on bad input) with nothing but the SDK. It is a demonstration, not
//! a second factor: anyone who can read the prompt can answer it.

use rolegate_sdk::serde::{Deserialize, Serialize};
use rolegate_sdk::{
    ChallengeContext, DenyReason, FactorKind, Input, Prompt, PromptKind, Provider, ProviderError,
    ProviderInfo, Settings, Step, Verdict, export_provider,
};

/// The provider's settings (`[providers.<id>.settings]` in the host's config).
#[derive(Debug, Clone, Deserialize)]
#[serde(crate = "rolegate_sdk::serde", deny_unknown_fields)]
pub struct HelloSettings {
    /// How many digits the challenge has (4 to 9).
    #[serde(default = "default_digits")]
    pub digits: u8,
    /// How long the user has to answer, in seconds (10 to 3600).
    #[serde(default = "default_expires_in")]
    pub expires_in: u64,
}

fn default_digits() -> u8 {
    6
}

fn default_expires_in() -> u64 {
    120
}

/// The challenge as the host stores it between calls.
#[derive(Debug, Serialize, Deserialize)]
#[serde(crate = "rolegate_sdk::serde")]
struct State {
    challenge: String,
    expires_at: u64,
    request_id: String,
}

/// The hello provider.
#[derive(Debug)]
pub struct Hello {
    settings: HelloSettings,
}

impl Hello {
    /// The answer the user must type for a challenge.
    pub fn answer(challenge: &str) -> String {
        challenge.chars().rev().collect()
    }
}

impl Provider for Hello {
    fn create(settings: Settings) -> Result<Self, ProviderError> {
        let settings: HelloSettings = settings.parse()?;
        if !(4..=9).contains(&settings.digits) {
            return Err(ProviderError::config(format!(
                "setting `digits` must be between 4 and 9, not {}",
                settings.digits
            )));
        }
        if !(10..=3600).contains(&settings.expires_in) {
            return Err(ProviderError::config(format!(
                "setting `expires_in` must be between 10 and 3600 seconds, not {}",
                settings.expires_in
            )));
        }
        Ok(Self { settings })
    }

    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            id: "hello".into(),
            name: "Hello (example: type the code backwards)".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            vendor: "rolegate examples".into(),
            factor: FactorKind::Code,
            needs_enrolment: false,
            needs_phone: false,
            responder: PromptKind::Code,
            quick: true,
            answer_ahead: false,
            sdk_version: String::new(),
            several_credentials: false,
        }
    }

    fn challenge_start(&self, ctx: &ChallengeContext) -> Result<Step, ProviderError> {
        let challenge = rolegate_sdk::random::digits(usize::from(self.settings.digits))?;
        let state = State {
            challenge: challenge.clone(),
            expires_at: ctx.now.saturating_add(self.settings.expires_in),
            request_id: ctx.request_id.clone(),
        };
        let state = rolegate_sdk::serde_json::to_vec(&state)
            .map_err(|e| ProviderError::internal(format!("state encoding failed: {e}")))?;
        Ok(Step::Ask {
            prompt: Prompt::Code {
                message: format!("Type {challenge} backwards"),
                length: Some(self.settings.digits),
            },
            state: state.into(),
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
        let state: State = rolegate_sdk::serde_json::from_slice(state)
            .map_err(|_| ProviderError::bad_input("the challenge state is not hello's"))?;
        if state.request_id != ctx.request_id {
            return Err(ProviderError::bad_input(
                "the challenge state belongs to another request",
            ));
        }
        let Input::Code { code } = input else {
            return Err(ProviderError::bad_input("hello expects a typed code"));
        };
        let code = code.trim();
        if code.len() != state.challenge.len() || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ProviderError::bad_input(format!(
                "the code must be {} digits",
                state.challenge.len()
            )));
        }
        if ctx.now >= state.expires_at {
            return Ok(Step::Done {
                verdict: Verdict::denied(DenyReason::Expired, "the challenge expired"),
            });
        }
        let expected = Hello::answer(&state.challenge);
        let verdict = if rolegate_sdk::constant_time_eq(code.as_bytes(), expected.as_bytes()) {
            Verdict::approved(None)
        } else {
            Verdict::denied(DenyReason::WrongAnswer, "wrong code")
        };
        Ok(Step::Done { verdict })
    }
}

export_provider!(Hello);

#[cfg(test)]
mod tests {
    use super::*;
    use rolegate_sdk::serde_json::{Value, json};
    use rolegate_sdk::{Bytes, ErrorKind, UserContext};

    fn hello(settings: Value) -> Result<Hello, ProviderError> {
        let Value::Object(map) = settings else {
            panic!("not an object")
        };
        Hello::create(Settings(map))
    }

    fn ctx(now: u64) -> ChallengeContext {
        ChallengeContext {
            user: UserContext {
                account: "jdoe".into(),
                ..Default::default()
            },
            role: "admins".into(),
            request_id: "r1".into(),
            now,
            ..Default::default()
        }
    }

    fn start(p: &Hello, now: u64) -> (String, Bytes) {
        match p.challenge_start(&ctx(now)).unwrap() {
            Step::Ask {
                prompt: Prompt::Code { message, .. },
                state,
                ..
            } => {
                let challenge = message.split(' ').nth(1).unwrap().to_string();
                (challenge, state)
            }
            other => panic!("{other:?}"),
        }
    }

    fn code(c: &str) -> Input {
        Input::Code { code: c.into() }
    }

    #[test]
    fn the_reversed_code_is_approved_and_others_denied() {
        let p = hello(json!({})).unwrap();
        let (challenge, state) = start(&p, 1000);
        assert_eq!(challenge.len(), 6);
        let right = Hello::answer(&challenge);
        let ok = p
            .challenge_continue(&ctx(1001), &state.0, &code(&right))
            .unwrap();
        assert_eq!(
            ok,
            Step::Done {
                verdict: Verdict::approved(None)
            }
        );
        let wrong: String = right
            .chars()
            .map(|c| if c == '1' { '2' } else { '1' })
            .collect();
        let denied = p
            .challenge_continue(&ctx(1001), &state.0, &code(&wrong))
            .unwrap();
        assert!(matches!(
            denied,
            Step::Done {
                verdict: Verdict::Denied {
                    reason: DenyReason::WrongAnswer,
                    ..
                }
            }
        ));
    }

    #[test]
    fn an_expired_challenge_is_denied_even_with_the_right_code() {
        let p = hello(json!({"expires_in": 10})).unwrap();
        let (challenge, state) = start(&p, 1000);
        let step = p
            .challenge_continue(&ctx(1010), &state.0, &code(&Hello::answer(&challenge)))
            .unwrap();
        assert!(matches!(
            step,
            Step::Done {
                verdict: Verdict::Denied {
                    reason: DenyReason::Expired,
                    ..
                }
            }
        ));
    }

    #[test]
    fn bad_input_is_refused_cleanly() {
        let p = hello(json!({})).unwrap();
        let (_, state) = start(&p, 0);
        for bad in ["12", "abcdef", "1234567", ""] {
            let e = p
                .challenge_continue(&ctx(1), &state.0, &code(bad))
                .unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadInput, "{bad}");
        }
        let e = p
            .challenge_continue(&ctx(1), b"\x00garbage", &code("123456"))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadInput);
        let e = p
            .challenge_continue(&ctx(1), &state.0, &Input::Acknowledge)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadInput);
        let mut other = ctx(1);
        other.request_id = "r2".into();
        let e = p
            .challenge_continue(&other, &state.0, &code("123456"))
            .unwrap_err();
        assert!(e.message.contains("another request"));
    }

    #[test]
    fn settings_are_checked_and_name_the_key() {
        let e = hello(json!({"digitz": 6})).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(e.message.contains("digitz"), "{}", e.message);
        let e = hello(json!({"digits": 12})).unwrap_err();
        assert!(e.message.contains("`digits`"), "{}", e.message);
        let e = hello(json!({"expires_in": "soon"})).unwrap_err();
        assert!(e.message.contains("expires_in"), "{}", e.message);
        assert_eq!(hello(json!({"digits": 4})).unwrap().settings.digits, 4);
    }
}

#[cfg(test)]
mod conformance {
    use rolegate_sdk::conformance::{Options, check_provider};

    #[test]
    fn hello_passes_the_conformance_suite_through_the_c_abi() {
        let report = check_provider::<super::Hello>(&Options::default());
        eprintln!("{report}");
        assert!(report.passed_strict(), "{report}");
        let four = Options {
            settings: rolegate_sdk::serde_json::json!({"digits": 4}),
            ..Options::default()
        };
        let report = check_provider::<super::Hello>(&four);
        assert!(report.passed_strict(), "{report}");
    }
}
