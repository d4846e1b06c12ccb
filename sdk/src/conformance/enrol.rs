//! The enrolment check: a scripted responder drives the provider's enrolment prompts to a
//! credential, which the challenge checks then use as the host would hand it back.

use super::Check;
use super::ENROLMENT;
use super::otp::Otp;
use super::session::{
    Reply, Session, Shared, clip, enroll_ctx, fail, now, pass, random_bytes, skip, step_text, wire,
};
use crate::bytes::Bytes;
use crate::error::ErrorKind;
use crate::message::{Input, Prompt, Request, Step, Verdict};

/// The most steps an enrolment may take before the check gives up on it.
const MAX_STEPS: usize = 8;

/// Where the check says a vendor supplies a code it cannot work out.
const HOW_TO_SUPPLY: &str = "supply it in `enrol_codes` (for `rolegate provider check`, in the `[rolegate_check]` table of the --config file)";

/// How the responder answered one prompt.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answered {
    /// With the code an app set up from the otpauth URI shows.
    Computed,
    /// With a code from `enrol_codes`.
    Supplied,
    /// Acknowledged a display prompt for want of anything better.
    Acknowledged,
}

/// Answers enrolment prompts as a scripted user.
struct Responder<'a> {
    codes: &'a [String],
    next: usize,
    otp: Option<Otp>,
    answers: Vec<Answered>,
}

impl Responder<'_> {
    fn supplied(&mut self) -> Option<String> {
        let code = self.codes.get(self.next).cloned();
        if code.is_some() {
            self.next += 1;
            self.answers.push(Answered::Supplied);
        }
        code
    }

    fn computed(&mut self, now: u64) -> Option<String> {
        let code = self.otp.as_ref().map(|o| o.code(now));
        if code.is_some() {
            self.answers.push(Answered::Computed);
        }
        code
    }

    /// The input for `prompt` at `now`, or why the check cannot answer it.
    fn answer(&mut self, prompt: &Prompt, now: u64) -> Result<Input, String> {
        match prompt {
            Prompt::Display { uri, .. } => {
                if let Some(otp) = uri.as_deref().and_then(Otp::from_uri) {
                    self.otp = Some(otp);
                }
                if let Some(code) = self.computed(now).or_else(|| self.supplied()) {
                    return Ok(Input::Code { code });
                }
                self.answers.push(Answered::Acknowledged);
                Ok(Input::Acknowledge)
            }
            Prompt::Code { message, .. } => match self.supplied().or_else(|| self.computed(now)) {
                Some(code) => Ok(Input::Code { code }),
                None => Err(format!(
                    "the enrolment asks for a code the check cannot know (\"{}\"): {HOW_TO_SUPPLY}",
                    clip(message)
                )),
            },
            Prompt::Phone { .. } => {
                self.answers.push(Answered::Acknowledged);
                Ok(Input::Acknowledge)
            }
            other => Err(format!(
                "the enrolment shows a `{}` prompt, which the check cannot answer",
                wire(&other.kind())
            )),
        }
    }

    /// Whether a refusal may be the check's fault: it acknowledged what wanted a code.
    fn guessed(&self) -> bool {
        self.answers.contains(&Answered::Acknowledged)
    }

    fn how(&self) -> String {
        let mut parts: Vec<&str> = self
            .answers
            .iter()
            .map(|a| match a {
                Answered::Computed => "a code computed from the otpauth URI",
                Answered::Supplied => "a code from enrol_codes",
                Answered::Acknowledged => "an acknowledgement",
            })
            .collect();
        parts.dedup();
        if parts.is_empty() {
            "no answer".to_string()
        } else {
            parts.join(", then ")
        }
    }
}

impl Session<'_> {
    pub(super) fn check_enrolment(&self, endpoint: &Shared) -> Check {
        if !self.needs_enrolment() {
            return self.check_no_enrolment(endpoint);
        }
        match self.enrol(endpoint) {
            Ok(detail) => pass(ENROLMENT, detail),
            Err(check) => check,
        }
    }

    /// A provider that needs no enrolment answers both operations `unsupported`.
    fn check_no_enrolment(&self, endpoint: &Shared) -> Check {
        let start: Reply<Step> = self.call_request(
            endpoint,
            "enroll_start",
            &Request::EnrollStart {
                ctx: enroll_ctx(now()),
            },
        );
        let cont: Reply<Step> = self.call_request(
            endpoint,
            "enroll_continue",
            &Request::EnrollContinue {
                ctx: enroll_ctx(now()),
                state: Bytes(random_bytes(24)),
                input: Input::Code {
                    code: "000000".into(),
                },
            },
        );
        let mut failures = Vec::new();
        for (op, reply) in [("enroll_start", start), ("enroll_continue", cont)] {
            if reply.error_kind() != Some(ErrorKind::Unsupported) {
                failures.push(format!(
                    "{op}: expected an unsupported error (info says no enrolment is needed), got {}",
                    reply.describe()
                ));
            }
        }
        if failures.is_empty() {
            pass(
                ENROLMENT,
                "needs none: enroll_start and enroll_continue answered unsupported",
            )
        } else {
            fail(ENROLMENT, failures.join("; "))
        }
    }

    /// Drives the enrolment to a credential; the pass detail, or the failed or skipped check.
    fn enrol(&self, endpoint: &Shared) -> Result<String, Check> {
        let mut responder = Responder {
            codes: &self.options.enrol_codes,
            next: 0,
            otp: None,
            answers: Vec::new(),
        };
        let mut reply: Reply<Step> = self.call_request(
            endpoint,
            "enroll_start",
            &Request::EnrollStart {
                ctx: enroll_ctx(now()),
            },
        );
        let mut prompts = Vec::new();
        for step in 1..=MAX_STEPS {
            match reply {
                Reply::Ok(Step::Ask { prompt, state, .. }) => {
                    prompts.push(wire(&prompt.kind()));
                    self.enrolled(|e| {
                        if e.first_ask.is_none() {
                            e.first_ask = Some((prompt.clone(), state.clone()));
                        }
                    });
                    if let Prompt::Display { uri: Some(uri), .. } = &prompt
                        && let Some(secret) = uri
                            .split(['?', '&'])
                            .find_map(|kv| kv.strip_prefix("secret="))
                    {
                        self.learn_secret(secret);
                    }
                    let t = now();
                    let input = responder
                        .answer(&prompt, t)
                        .map_err(|why| skip(ENROLMENT, why))?;
                    if let Input::Code { code } = &input {
                        self.learn_secret(code);
                    }
                    reply = self.call_request(
                        endpoint,
                        &format!("enroll_continue {step}"),
                        &Request::EnrollContinue {
                            ctx: enroll_ctx(t),
                            state,
                            input,
                        },
                    );
                }
                Reply::Ok(Step::Wait { .. }) => {
                    return Err(fail(
                        ENROLMENT,
                        format!(
                            "step {step} of the enrolment is a Wait: an enrolment has no poll, its steps are ask and done (the host ends it without a credential)"
                        ),
                    ));
                }
                Reply::Ok(Step::Done {
                    verdict:
                        Verdict::Approved {
                            credential: Some(credential),
                            ..
                        },
                }) => {
                    self.learn_credential(&credential);
                    let id = clip(&credential.id);
                    self.enrolled(|e| {
                        e.credential = Some(credential);
                        e.otp = responder.otp.clone();
                    });
                    return Ok(format!(
                        "enrolled (credential `{id}`) through {} prompt{} ({}), answered with {}",
                        prompts.len(),
                        if prompts.len() == 1 { "" } else { "s" },
                        prompts.join(", "),
                        responder.how()
                    ));
                }
                Reply::Ok(Step::Done {
                    verdict:
                        Verdict::Approved {
                            credential: None, ..
                        },
                }) => {
                    return Err(fail(
                        ENROLMENT,
                        "the enrolment was approved without a credential: it must end approved with the new credential",
                    ));
                }
                Reply::Ok(Step::Done {
                    verdict:
                        Verdict::Denied {
                            reason, message, ..
                        },
                }) => {
                    let seen = format!("denied ({}: {})", wire(&reason), clip(&message));
                    return Err(if responder.guessed() {
                        skip(
                            ENROLMENT,
                            format!(
                                "{seen} after the check acknowledged a display prompt it had no code for: if the enrolment wants a code, {HOW_TO_SUPPLY}"
                            ),
                        )
                    } else {
                        fail(
                            ENROLMENT,
                            format!("{seen}, answered with {}", responder.how()),
                        )
                    });
                }
                other if other.broken() => {
                    return Err(fail(
                        ENROLMENT,
                        format!("step {step}: {}", other.describe()),
                    ));
                }
                other => {
                    let seen = other.describe();
                    return Err(match other.error_kind() {
                        Some(ErrorKind::Unavailable) => skip(
                            ENROLMENT,
                            format!("{seen}: the provider's service is unavailable"),
                        ),
                        Some(ErrorKind::BadInput) if responder.guessed() => skip(
                            ENROLMENT,
                            format!(
                                "{seen} after the check acknowledged a display prompt it had no code for: if the enrolment wants a code, {HOW_TO_SUPPLY}"
                            ),
                        ),
                        _ if step == 1 && prompts.is_empty() => fail(
                            ENROLMENT,
                            format!(
                                "enroll_start (info says the provider needs enrolment): expected a step, got {seen}"
                            ),
                        ),
                        _ => fail(
                            ENROLMENT,
                            format!("step {step}, answered with {}: {seen}", responder.how()),
                        ),
                    });
                }
            }
        }
        Err(fail(
            ENROLMENT,
            format!(
                "no verdict after {MAX_STEPS} steps ({}); last: {}",
                prompts.join(", "),
                reply.describe_with(step_text)
            ),
        ))
    }
}
