//! misbehave: a provider that breaks on purpose, chosen by its `mode` setting.
//!
//! Modes act in `challenge_start` (every other call behaves): `ok` asks for code `1234`;
//! `panic` panics; `segfault` writes through a null pointer; `abort` aborts the process;
//! `hang` never returns; `noisy` prints to stdout, then asks; `enrol` needs an enrolment (the
//! secret is `4321`) and answers challenges with that secret. `lenient` behaves but accepts unknown settings keys (it breaks the
//! contract that `rolegate provider check` verifies); `panic-create` panics while creating;
//! `slow` sleeps 30 ms, then asks; `outage` fails `challenge_start` as a provider whose
//! service is down (Unavailable); `outage-answer` asks, then fails every answer that way.
//! The setting `quick = true` makes it claim quick calls.
//!
//! Modes that break the contract before the SDK decodes a request (what a plugin written from
//! the header alone gets wrong), for `rolegate provider check`'s refusals: `segfault-no-op`
//! segfaults on a JSON object without a string `op`; `segfault-garbage` segfaults on anything
//! that is not JSON; `unknown-op-bad-input` answers an op it does not know with `bad_input`
//! instead of `unsupported`; `hang-health` never answers `health`.

use rolegate_sdk::serde::Deserialize;
use rolegate_sdk::{
    ChallengeContext, Credential, DenyReason, EnrollContext, FactorKind, Input, Prompt, PromptKind,
    Provider, ProviderError, ProviderInfo, Settings, Step, Verdict,
};

#[derive(Debug, Deserialize)]
#[serde(crate = "rolegate_sdk::serde", deny_unknown_fields)]
struct Strict {
    mode: String,
    #[serde(default)]
    quick: bool,
}

/// The misbehaving provider.
#[derive(Debug)]
pub struct Misbehave {
    mode: String,
    quick: bool,
}

impl Provider for Misbehave {
    fn create(settings: Settings) -> Result<Self, ProviderError> {
        let (mode, quick) = match settings.0.get("mode").and_then(|v| v.as_str()) {
            Some("lenient") => ("lenient".to_string(), false),
            _ => {
                let s = settings.parse::<Strict>()?;
                (s.mode, s.quick)
            }
        };
        match mode.as_str() {
            "ok"
            | "panic"
            | "segfault"
            | "abort"
            | "hang"
            | "lenient"
            | "noisy"
            | "enrol"
            | "slow"
            | "outage"
            | "outage-answer"
            | "segfault-no-op"
            | "segfault-garbage"
            | "unknown-op-bad-input"
            | "context"
            | "hang-health" => Ok(Self { mode, quick }),
            "panic-create" => panic!("misbehave: panic while creating"),
            other => Err(ProviderError::config(format!(
                "setting `mode`: unknown mode `{other}`"
            ))),
        }
    }

    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            id: "misbehave".into(),
            name: "Misbehave (test plugin)".into(),
            version: "0.1.0".into(),
            vendor: "rolegate tests".into(),
            factor: FactorKind::Code,
            needs_enrolment: self.mode == "enrol",
            needs_phone: false,
            responder: PromptKind::Code,
            quick: self.quick,
            answer_ahead: false,
            sdk_version: String::new(),
            several_credentials: false,
        }
    }

    fn health(&self) -> rolegate_sdk::Health {
        if self.mode == "hang-health" {
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        }
        rolegate_sdk::Health::ok()
    }

    fn enroll_start(&self, ctx: &EnrollContext) -> Result<Step, ProviderError> {
        if self.mode != "enrol" {
            return Err(ProviderError::unsupported(
                "this provider needs no enrolment",
            ));
        }
        Ok(Step::Ask {
            prompt: Prompt::Display {
                message: format!(
                    "{}: your secret is 4321; type it to confirm",
                    ctx.user.account
                ),
                uri: Some("misbehave://secret/4321".into()),
                png: None,
                text: Some("[4321]".into()),
            },
            state: b"enrol".to_vec().into(),
            expires_in: 300,
            reference: None,
        })
    }

    fn enroll_continue(
        &self,
        _ctx: &EnrollContext,
        state: &[u8],
        input: &Input,
    ) -> Result<Step, ProviderError> {
        if self.mode != "enrol" {
            return Err(ProviderError::unsupported(
                "this provider needs no enrolment",
            ));
        }
        if state != b"enrol" {
            return Err(ProviderError::bad_input("state is not an enrolment"));
        }
        if !matches!(input, Input::Code { .. } | Input::Acknowledge) {
            return Err(ProviderError::bad_input("type the secret"));
        }
        let verdict = match input {
            Input::Code { code } if code == "4321" => Verdict::approved(Some(Credential {
                id: "c1".into(),
                label: "secret".into(),
                data: b"4321".to_vec().into(),
            })),
            _ => Verdict::denied(DenyReason::WrongAnswer, "that is not the secret"),
        };
        Ok(Step::Done { verdict })
    }

    fn challenge_start(&self, ctx: &ChallengeContext) -> Result<Step, ProviderError> {
        if self.mode == "enrol" && ctx.credentials.is_empty() {
            return Ok(Step::Done {
                verdict: Verdict::denied(DenyReason::NotEnrolled, "not enrolled"),
            });
        }
        match self.mode.as_str() {
            "panic" => panic!("misbehave: deliberate panic for {}", ctx.request_id),
            "segfault" => {
                let p: *mut u8 = std::ptr::null_mut();
                // SAFETY: not safe at all: this plugin exists to crash its process.
                unsafe { p.write_volatile(1) };
                Err(ProviderError::internal("unreachable"))
            }
            "abort" => std::process::abort(),
            // The provider's service is down (an outage, a rotated credential).
            "outage" => Err(ProviderError::unavailable(
                "the service answered HTTP 503 (outage)",
            )),
            "noisy" => {
                // Output on stdout must not corrupt a worker's pipe.
                println!("misbehave: noise on stdout");
                print!("{{\"ok\":");
                self.challenge_start_ok(ctx)
            }
            "slow" => {
                std::thread::sleep(std::time::Duration::from_millis(30));
                self.challenge_start_ok(ctx)
            }
            "hang" => loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            },
            // Says what the host told it of the request (a test reads it back).
            "context" => Ok(Step::Ask {
                prompt: Prompt::Code {
                    message: format!(
                        "Type 1234 (role {}, {} s, because {})",
                        ctx.role, ctx.ttl_s, ctx.justification
                    ),
                    length: Some(4),
                },
                state: ctx.request_id.as_bytes().to_vec().into(),
                expires_in: 60,
                reference: None,
            }),
            "enrol" => Ok(Step::Ask {
                prompt: Prompt::Code {
                    message: "Type your secret".into(),
                    length: Some(4),
                },
                state: ctx.request_id.as_bytes().to_vec().into(),
                expires_in: 60,
                reference: None,
            }),
            _ => self.challenge_start_ok(ctx),
        }
    }

    fn challenge_continue(
        &self,
        ctx: &ChallengeContext,
        state: &[u8],
        input: &Input,
    ) -> Result<Step, ProviderError> {
        if state != ctx.request_id.as_bytes() {
            return Err(ProviderError::bad_input("state is not this request's"));
        }
        let Input::Code { code } = input else {
            return Err(ProviderError::bad_input("expected a code"));
        };
        if self.mode == "outage-answer" {
            // Down between the prompt and the answer, whatever was typed.
            return Err(ProviderError::unavailable(
                "the service answered HTTP 503 (outage)",
            ));
        }
        let verdict = if self.mode == "enrol" {
            match ctx.credentials.first() {
                Some(c) if c.data.as_slice() == code.as_bytes() => Verdict::Approved {
                    // A credential update: the host stores it with the verdict.
                    credential: Some(Credential {
                        id: c.id.clone(),
                        label: format!("{} (used)", c.label),
                        data: c.data.clone(),
                    }),
                    // What was verified, for event 103 (the host drops the control
                    // character and the backquote).
                    detail: format!("credential `{}`\n matched", c.id),
                },
                // As a WebAuthn provider says of a counter that went backwards.
                Some(c) if code == "clone" => Verdict::Denied {
                    reason: DenyReason::Cloned,
                    message: "the counter went backwards".into(),
                    credential_id: Some(c.id.clone()),
                },
                _ => Verdict::denied(DenyReason::WrongAnswer, "wrong secret"),
            }
        } else if code == "1234" {
            Verdict::approved(None)
        } else {
            Verdict::denied(DenyReason::WrongAnswer, "wrong code")
        };
        Ok(Step::Done { verdict })
    }
}

impl Misbehave {
    fn challenge_start_ok(&self, ctx: &ChallengeContext) -> Result<Step, ProviderError> {
        Ok(Step::Ask {
            prompt: Prompt::Code {
                message: "Type 1234".into(),
                length: Some(4),
            },
            state: ctx.request_id.as_bytes().to_vec().into(),
            expires_in: 60,
            reference: None,
        })
    }
}

/// The modes that act on the raw request, before the SDK decodes it; None to let it.
fn raw_flaw(mode: &str, request: &[u8]) -> Option<&'static [u8]> {
    let value = rolegate_sdk::serde_json::from_slice::<rolegate_sdk::serde_json::Value>(request);
    match (mode, &value) {
        ("segfault-garbage", Err(_)) => segfault(),
        ("segfault-no-op", Ok(v))
            if v.is_object() && !v.get("op").is_some_and(|o| o.is_string()) =>
        {
            segfault()
        }
        ("unknown-op-bad-input", Ok(v)) => {
            let op = v.get("op")?.as_str()?;
            const KNOWN: [&str; 8] = [
                "info",
                "health",
                "enroll_start",
                "enroll_continue",
                "challenge_start",
                "challenge_continue",
                "challenge_poll",
                "cancel",
            ];
            // An object without `op`: the SDK answers it with bad_input, as it did here.
            (!KNOWN.contains(&op)).then_some(b"{}".as_slice())
        }
        _ => None,
    }
}

fn segfault() -> ! {
    let p: *mut u8 = std::ptr::null_mut();
    // SAFETY: not safe at all: this plugin exists to crash its process.
    unsafe { p.write_volatile(1) };
    std::process::abort()
}

/// `call`, with the raw modes' flaws in front of the SDK's own.
///
/// # Safety
/// As [`rolegate_sdk::abi::call_impl`].
unsafe extern "C" fn call(
    instance: *mut std::ffi::c_void,
    request: *const u8,
    len: usize,
) -> rolegate_sdk::abi::Buffer {
    // SAFETY: the host passes an instance made by this table's create, or null.
    if let Some(provider) = unsafe { instance.cast::<Misbehave>().as_ref() }
        && !request.is_null()
    {
        // SAFETY: the host passes a buffer valid for `len` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(request, len) };
        if let Some(instead) = raw_flaw(&provider.mode, bytes) {
            // SAFETY: as for this function; `instead` is valid for its length.
            return unsafe {
                rolegate_sdk::abi::call_impl::<Misbehave>(instance, instead.as_ptr(), instead.len())
            };
        }
    }
    // SAFETY: as for this function.
    unsafe { rolegate_sdk::abi::call_impl::<Misbehave>(instance, request, len) }
}

static TABLE: rolegate_sdk::abi::ProviderTableV1 = rolegate_sdk::abi::ProviderTableV1 {
    call,
    ..rolegate_sdk::abi::ProviderTableV1::for_provider::<Misbehave>()
};

/// The rolegate plugin entry point (ABI v1): the SDK's table, with `call` wrapped.
#[unsafe(no_mangle)]
pub extern "C" fn rolegate_provider_v1() -> *const rolegate_sdk::abi::ProviderTableV1 {
    &TABLE
}
