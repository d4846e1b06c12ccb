//! The challenge checks, run with the enrolled credential: wrong inputs, state bound to its
//! request, a challenge driven to its verdict, the clock, the round trip, cancel, concurrency.

use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::session::{
    Made, Reply, Session, Shared, code, error_text, fail, human, now, pass, probe_input,
    random_bytes, skip, step_shape, step_text, verdict_text, wire,
};
use super::{CANCEL, CHALLENGE, CLOCK, CONCURRENT, Check, ROUND_TRIP, STATE_BOUND, WRONG_INPUT};
use crate::bytes::Bytes;
use crate::error::ErrorKind;
use crate::message::{
    ChallengeContext, DenyReason, Input, Prompt, ProviderInfo, Request, Step, Verdict,
};

/// How a challenge goes on after its first step.
#[derive(Clone)]
pub(super) enum Next {
    Continue(Input),
    Poll,
}

impl Next {
    pub(super) fn op(&self) -> &'static str {
        match self {
            Next::Continue(_) => "challenge_continue",
            Next::Poll => "challenge_poll",
        }
    }

    pub(super) fn request(&self, ctx: &ChallengeContext, state: &Bytes) -> Request {
        match self {
            Next::Continue(input) => Request::ChallengeContinue {
                ctx: ctx.clone(),
                state: state.clone(),
                input: input.clone(),
            },
            Next::Poll => Request::ChallengePoll {
                ctx: ctx.clone(),
                state: state.clone(),
            },
        }
    }
}

/// A state and the call that follows it, for the concurrency and cancel checks.
pub(super) struct Probe {
    ctx: ChallengeContext,
    state: Bytes,
    next: Next,
    /// Why the state is garbage, when challenge_start gave none.
    garbage: Option<String>,
    /// challenge_start itself broke (panic, hang, invalid answer).
    broken_start: Option<String>,
}

/// Where an answer came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Computed from what the enrolment showed (an otpauth URI): the right answer.
    Computed,
    /// A well-formed guess, almost surely wrong.
    Guess,
    /// The acknowledgement a display or phone prompt takes.
    Acknowledged,
}

/// How a challenge driven to its end ended.
struct Driven {
    end: Reply<Step>,
    computed: bool,
    guessed: bool,
    polls: usize,
    waiting: bool,
}

/// The most polls the check makes before it gives up waiting for an out-of-band verdict.
const MAX_POLLS: usize = 10;

/// The longest it sleeps between two polls, whatever `poll_after_ms` asks.
const MAX_POLL_SLEEP: Duration = Duration::from_secs(1);

/// Inputs a prompt of this kind does not take, as JSON (an unknown kind included).
fn wrong_inputs(prompt: &Prompt) -> Vec<(&'static str, Value)> {
    let code = ("a code", json!({"kind": "code", "code": "000000"}));
    let ack = ("an acknowledgement", json!({"kind": "acknowledge"}));
    let bytes = ("bytes", json!({"kind": "bytes", "data": "AAAA"}));
    let json = (
        "a JSON value",
        json!({"kind": "json", "value": {"rolegate": "check"}}),
    );
    let unknown = (
        "an input of an unknown kind",
        json!({"kind": "rolegate_check_unknown_kind", "code": "000000"}),
    );
    match prompt {
        Prompt::Code { .. } => vec![ack, bytes, json, unknown],
        Prompt::Display { .. } | Prompt::Phone { .. } => vec![bytes, json, unknown],
        Prompt::Webauthn { .. } => vec![code, bytes, ack, unknown],
        Prompt::Smartcard { .. } => vec![code, json, ack, unknown],
    }
}

impl Session<'_> {
    /// Why challenge checks cannot run, when the provider needs an enrolment that gave nothing.
    fn unenrolled(&self) -> Option<String> {
        if !self.needs_enrolment() {
            return None;
        }
        self.enrolled(|e| {
            e.credential.is_none().then(|| {
                "the provider needs enrolment, and the check's enrolment gave no credential (see `enrolment`)".to_string()
            })
        })
    }

    /// How the check answers a challenge's prompt, at `now`.
    fn challenge_answer(&self, prompt: &Prompt, now: u64) -> (Input, Source) {
        if let Prompt::Code { .. } = prompt
            && let Some(code) = self.enrolled(|e| e.otp.as_ref().map(|o| o.code(now)))
        {
            self.learn_secret(&code);
            return (Input::Code { code }, Source::Computed);
        }
        match prompt {
            Prompt::Display { .. } | Prompt::Phone { .. } => {
                (Input::Acknowledge, Source::Acknowledged)
            }
            other => (probe_input(other), Source::Guess),
        }
    }

    pub(super) fn follow(
        &self,
        endpoint: &Shared,
        what: &str,
        ctx: &ChallengeContext,
        state: &Bytes,
        next: &Next,
    ) -> Reply<Step> {
        self.call_request(endpoint, what, &next.request(ctx, state))
    }

    /// Answers and polls a challenge from its first step until a verdict, as a user would.
    fn drive(&self, endpoint: &Shared, ctx: &mut ChallengeContext, first: Reply<Step>) -> Driven {
        let base = ctx.now;
        let started = Instant::now();
        let mut driven = Driven {
            end: first,
            computed: false,
            guessed: false,
            polls: 0,
            waiting: false,
        };
        for step in 1..=MAX_POLLS + 6 {
            ctx.now = base + started.elapsed().as_secs();
            let reply = match &driven.end {
                Reply::Ok(Step::Ask { prompt, state, .. }) => {
                    let (input, source) = self.challenge_answer(prompt, ctx.now);
                    driven.computed |= source == Source::Computed;
                    driven.guessed |= source == Source::Guess;
                    let request = Request::ChallengeContinue {
                        ctx: ctx.clone(),
                        state: state.clone(),
                        input,
                    };
                    self.call_request(endpoint, &format!("challenge_continue {step}"), &request)
                }
                Reply::Ok(Step::Wait {
                    state,
                    poll_after_ms,
                    ..
                }) => {
                    if driven.polls >= MAX_POLLS {
                        driven.waiting = true;
                        return driven;
                    }
                    driven.polls += 1;
                    thread::sleep(Duration::from_millis(*poll_after_ms).min(MAX_POLL_SLEEP));
                    ctx.now = base + started.elapsed().as_secs();
                    let request = Request::ChallengePoll {
                        ctx: ctx.clone(),
                        state: state.clone(),
                    };
                    self.call_request(endpoint, &format!("challenge_poll {step}"), &request)
                }
                _ => return driven,
            };
            self.update_from(&reply);
            driven.end = reply;
        }
        driven
    }

    fn update_from(&self, reply: &Reply<Step>) {
        if let Reply::Ok(step) = reply {
            self.update_credential(step);
        }
    }

    pub(super) fn check_wrong_input(&self, endpoint: &Shared) -> Check {
        let mut targets: Vec<(&str, Value)> = Vec::new();
        let ctx = self.challenge_ctx("check-input");
        let start: Reply<Step> = self.call_request(
            endpoint,
            "challenge_start",
            &Request::ChallengeStart { ctx: ctx.clone() },
        );
        let mut prompts = Vec::new();
        if let Reply::Ok(Step::Ask { prompt, state, .. }) = &start {
            let request = Request::ChallengeContinue {
                ctx: ctx.clone(),
                state: state.clone(),
                input: Input::Acknowledge,
            };
            if let Ok(v) = serde_json::to_value(&request) {
                targets.push(("challenge_continue", v));
                prompts.push(prompt.clone());
            }
        }
        if let Some((prompt, state)) = self.enrolled(|e| e.first_ask.clone()) {
            let request = Request::EnrollContinue {
                ctx: super::session::enroll_ctx(now()),
                state,
                input: Input::Acknowledge,
            };
            if let Ok(v) = serde_json::to_value(&request) {
                targets.push(("enroll_continue", v));
                prompts.push(prompt);
            }
        }
        if targets.is_empty() {
            if start.broken() {
                return fail(
                    WRONG_INPUT,
                    format!("challenge_start: {}", start.describe()),
                );
            }
            if let Some(why) = self.unenrolled() {
                return skip(WRONG_INPUT, why);
            }
            return pass(
                WRONG_INPUT,
                format!(
                    "not applicable: no prompt to answer (challenge_start answered {})",
                    start.describe()
                ),
            );
        }
        let mut failures = Vec::new();
        let mut total = 0;
        for ((op, base), prompt) in targets.iter().zip(&prompts) {
            for (name, input) in wrong_inputs(prompt) {
                total += 1;
                let mut request = base.clone();
                request["input"] = input;
                let what = format!("{op} with {name} to a {} prompt", wire(&prompt.kind()));
                let reply: Reply<Step> = self.call(
                    endpoint,
                    &what,
                    serde_json::to_vec(&request).unwrap_or_default(),
                );
                if reply.error_kind() != Some(ErrorKind::BadInput) {
                    failures.push(format!(
                        "{what}: expected a bad_input error, got {}",
                        reply.describe()
                    ));
                }
            }
        }
        if failures.is_empty() {
            pass(
                WRONG_INPUT,
                format!("{total} answers of a kind the prompt does not take answered bad_input"),
            )
        } else {
            fail(WRONG_INPUT, super::session::some_of(failures, 5))
        }
    }

    /// The first step of a challenge as a state and how to go on, or the check's result.
    fn first_state(
        &self,
        name: &str,
        endpoint: &Shared,
        ctx: &ChallengeContext,
    ) -> Result<(Bytes, Next), Check> {
        let start: Reply<Step> = self.call_request(
            endpoint,
            "challenge_start",
            &Request::ChallengeStart { ctx: ctx.clone() },
        );
        match start {
            Reply::Ok(Step::Ask { prompt, state, .. }) => {
                let (input, _) = self.challenge_answer(&prompt, ctx.now);
                let input = match input {
                    // A computed code would spend the credential's next step: a guess will do.
                    Input::Code { .. } => probe_input(&prompt),
                    other => other,
                };
                Ok((state, Next::Continue(input)))
            }
            Reply::Ok(Step::Wait { state, .. }) => Ok((state, Next::Poll)),
            Reply::Ok(Step::Done { verdict }) => Err(match self.unenrolled() {
                Some(why) => skip(name, why),
                None => pass(
                    name,
                    format!(
                        "not applicable: challenge_start decided at once ({}), so there is no state",
                        verdict_text(&verdict)
                    ),
                ),
            }),
            other if other.broken() => {
                Err(fail(name, format!("challenge_start: {}", other.describe())))
            }
            other => Err(match self.unenrolled() {
                Some(why) => skip(name, why),
                None if other.error_kind() == Some(ErrorKind::Unavailable) => skip(
                    name,
                    format!(
                        "challenge_start answered {}: the provider's service is unavailable",
                        other.describe()
                    ),
                ),
                None => fail(
                    name,
                    format!(
                        "challenge_start with a plausible context: expected a step, got {}",
                        other.describe()
                    ),
                ),
            }),
        }
    }

    pub(super) fn check_state_bound(&self, endpoint: &Shared) -> Check {
        let ctx = self.challenge_ctx("check-bound");
        let (state, next) = match self.first_state(STATE_BOUND, endpoint, &ctx) {
            Ok(s) => s,
            Err(check) => return check,
        };
        let mut failures = Vec::new();
        for (what, other) in [
            ("another request_id", "check-other"),
            (
                "the request_id with a NUL character added",
                "check-bound\u{0}",
            ),
            ("a prefix of the request_id", "check-boun"),
        ] {
            let mut ctx2 = ctx.clone();
            ctx2.request_id = other.into();
            let label = format!("{} with {what}", next.op());
            let reply = self.follow(endpoint, &label, &ctx2, &state, &next);
            if reply.error_kind() != Some(ErrorKind::BadInput) {
                failures.push(format!(
                    "{label}: expected a bad_input error, got {}",
                    reply.describe()
                ));
            }
        }
        if failures.is_empty() {
            pass(
                STATE_BOUND,
                format!(
                    "{} with the state of request `check-bound` refused for three other request ids",
                    next.op()
                ),
            )
        } else {
            fail(STATE_BOUND, failures.join("; "))
        }
    }

    pub(super) fn check_challenge(&self, endpoint: &Shared) -> Check {
        if let Some(why) = self.unenrolled() {
            return skip(CHALLENGE, why);
        }
        // A step or two after the enrolment's code, so its step is not a replay.
        let period = self.enrolled(|e| e.otp.as_ref().map_or(0, |o| o.period()));
        let mut ctx = self.challenge_ctx_at("check-verdict", now() + 2 * period);
        let start: Reply<Step> = self.call_request(
            endpoint,
            "challenge_start",
            &Request::ChallengeStart { ctx: ctx.clone() },
        );
        let driven = self.drive(endpoint, &mut ctx, start);
        let polls = match driven.polls {
            0 => String::new(),
            1 => " after 1 poll".to_string(),
            n => format!(" after {n} polls"),
        };
        if driven.waiting {
            return skip(
                CHALLENGE,
                format!(
                    "still waiting after {} polls: the out-of-band step did not finish while the check waited",
                    driven.polls
                ),
            );
        }
        match &driven.end {
            Reply::Ok(Step::Done {
                verdict: Verdict::Approved { .. },
            }) if driven.guessed => fail(CHALLENGE, "a guessed answer (all zeros) was approved"),
            Reply::Ok(Step::Done {
                verdict: Verdict::Approved { .. },
            }) => pass(
                CHALLENGE,
                if driven.computed {
                    format!(
                        "approved with the code computed from the enrolment's otpauth URI{polls}"
                    )
                } else {
                    format!("approved{polls}")
                },
            ),
            Reply::Ok(Step::Done {
                verdict: Verdict::Denied {
                    reason, message, ..
                },
            }) if driven.computed => fail(
                CHALLENGE,
                format!(
                    "the right code (computed from the enrolment's otpauth URI) was denied ({}: {})",
                    wire(reason),
                    super::session::clip(message)
                ),
            ),
            Reply::Ok(Step::Done { verdict }) => pass(
                CHALLENGE,
                format!(
                    "{}{polls}, for {}",
                    verdict_text(verdict),
                    if driven.guessed {
                        "a guessed answer (the right one is out of the check's reach)"
                    } else {
                        "the answers a user's acknowledgement gives"
                    }
                ),
            ),
            other if other.broken() => fail(CHALLENGE, other.describe()),
            other if other.error_kind() == Some(ErrorKind::Unavailable) => skip(
                CHALLENGE,
                format!(
                    "{}: the provider's service is unavailable",
                    other.describe()
                ),
            ),
            other if driven.guessed && other.error_kind() == Some(ErrorKind::BadInput) => skip(
                CHALLENGE,
                format!(
                    "the check's guessed answer was refused as malformed ({}): it cannot answer this prompt",
                    other.describe()
                ),
            ),
            other => fail(
                CHALLENGE,
                format!("expected a verdict, got {}", other.describe()),
            ),
        }
    }

    pub(super) fn check_clock(&self, endpoint: &Shared) -> Check {
        if let Some(why) = self.unenrolled() {
            return skip(CLOCK, why);
        }
        let otp = self.enrolled(|e| e.otp.clone());
        let day = 86_400;
        if let Some(otp) = otp {
            // A day ahead of the real clock: only a provider that reads ctx.now approves.
            let t = now() + day;
            let ctx = self.challenge_ctx_at("check-clock", t);
            let start: Reply<Step> = self.call_request(
                endpoint,
                "challenge_start, a day ahead",
                &Request::ChallengeStart { ctx: ctx.clone() },
            );
            let Reply::Ok(Step::Ask { state, .. }) = start else {
                return fail(
                    CLOCK,
                    format!(
                        "challenge_start a day ahead: expected an Ask, got {}",
                        start.describe()
                    ),
                );
            };
            let right = otp.code(t);
            self.learn_secret(&right);
            let reply: Reply<Step> = self.call_request(
                endpoint,
                "challenge_continue, a day ahead",
                &Request::ChallengeContinue {
                    ctx: ctx.clone(),
                    state,
                    input: Input::Code { code: right },
                },
            );
            self.update_from(&reply);
            if !matches!(
                reply,
                Reply::Ok(Step::Done {
                    verdict: Verdict::Approved { .. }
                })
            ) {
                return fail(
                    CLOCK,
                    format!(
                        "the code for ctx.now (a day ahead of this machine's clock) got {}: the provider judges codes by its own clock",
                        reply.describe()
                    ),
                );
            }
            // Two days ahead, answered after the prompt's expiry (by ctx.now) with that
            // moment's code: too late.
            let t2 = now() + 2 * day;
            let ctx = self.challenge_ctx_at("check-clock-late", t2);
            let start: Reply<Step> = self.call_request(
                endpoint,
                "challenge_start, two days ahead",
                &Request::ChallengeStart { ctx: ctx.clone() },
            );
            let Reply::Ok(Step::Ask {
                state, expires_in, ..
            }) = start
            else {
                return fail(
                    CLOCK,
                    format!(
                        "challenge_start two days ahead: expected an Ask, got {}",
                        start.describe()
                    ),
                );
            };
            let late = t2 + expires_in + 1;
            let mut late_ctx = ctx;
            late_ctx.now = late;
            let reply: Reply<Step> = self.call_request(
                endpoint,
                "challenge_continue, after the expiry",
                &Request::ChallengeContinue {
                    ctx: late_ctx,
                    state,
                    input: Input::Code {
                        code: otp.code(late),
                    },
                },
            );
            self.update_from(&reply);
            return match reply {
                Reply::Ok(Step::Done {
                    verdict: Verdict::Approved { .. },
                }) => fail(
                    CLOCK,
                    format!(
                        "an answer {expires_in} s after the prompt's expiry (by ctx.now) was approved"
                    ),
                ),
                r if r.broken() => fail(
                    CLOCK,
                    format!("an answer after the expiry: {}", r.describe()),
                ),
                r => pass(
                    CLOCK,
                    format!(
                        "the right code at a ctx.now a day ahead approved; an answer past the prompt's expiry (by ctx.now) refused ({})",
                        r.describe()
                    ),
                ),
            };
        }
        let t = now();
        let ctx = self.challenge_ctx_at("check-clock", t);
        let start: Reply<Step> = self.call_request(
            endpoint,
            "challenge_start",
            &Request::ChallengeStart { ctx: ctx.clone() },
        );
        match start {
            Reply::Ok(Step::Ask {
                prompt,
                state,
                expires_in,
                ..
            }) => {
                let mut late = ctx;
                late.now = t.saturating_add(expires_in).saturating_add(1);
                let (input, _) = self.challenge_answer(&prompt, late.now);
                let reply: Reply<Step> = self.call_request(
                    endpoint,
                    "challenge_continue, after the expiry",
                    &Request::ChallengeContinue {
                        ctx: late,
                        state,
                        input,
                    },
                );
                match reply {
                    Reply::Ok(Step::Done {
                        verdict: Verdict::Approved { .. },
                    }) => fail(
                        CLOCK,
                        "an answer after the prompt's expiry (by ctx.now) was approved",
                    ),
                    Reply::Ok(Step::Done {
                        verdict:
                            Verdict::Denied {
                                reason: DenyReason::Expired,
                                ..
                            },
                    }) => pass(
                        CLOCK,
                        "an answer after the prompt's expiry (by ctx.now, not this machine's clock) denied as expired",
                    ),
                    r if r.broken() => fail(
                        CLOCK,
                        format!("an answer after the expiry: {}", r.describe()),
                    ),
                    r => pass(
                        CLOCK,
                        format!(
                            "an answer after the prompt's expiry (by ctx.now) not approved ({}); no right answer known to check more",
                            r.describe()
                        ),
                    ),
                }
            }
            r if r.broken() => fail(CLOCK, format!("challenge_start: {}", r.describe())),
            r => pass(
                CLOCK,
                format!(
                    "not applicable: challenge_start answered {} (no prompt with an expiry to check; an out-of-band verdict may come at any poll)",
                    r.describe()
                ),
            ),
        }
    }

    pub(super) fn check_round_trip(&self) -> Check {
        let first = match self.create(&self.options.settings) {
            Made::Ok(endpoint) => endpoint,
            other => {
                return fail(
                    ROUND_TRIP,
                    format!(
                        "a second instance could not be created: {}",
                        other.describe()
                    ),
                );
            }
        };
        let ctx = self.challenge_ctx("check-1");
        let (state, next) = match self.first_state(ROUND_TRIP, &first, &ctx) {
            Ok(s) => s,
            Err(check) => {
                self.dispose(first);
                return check;
            }
        };
        if !self.dispose(first) {
            return fail(
                ROUND_TRIP,
                format!(
                    "destroying the first instance did not finish within {}: a hang",
                    human(self.deadline())
                ),
            );
        }
        let second = match self.create(&self.options.settings) {
            Made::Ok(endpoint) => endpoint,
            other => {
                return fail(
                    ROUND_TRIP,
                    format!("a new instance could not be created: {}", other.describe()),
                );
            }
        };
        let op = next.op();
        let mut failures = Vec::new();
        let mut skipped = None;
        let mut seen = Vec::new();
        let reply = self.follow(
            &second,
            &format!("{op} on a new instance"),
            &ctx,
            &state,
            &next,
        );
        match &reply {
            Reply::Ok(step) => seen.push(format!(
                "a new instance continued the challenge ({op}: {})",
                step_text(step)
            )),
            Reply::Err(e) if matches!(e.kind, ErrorKind::BadInput | ErrorKind::Internal) => {
                // Control: is it the state from elsewhere, or the probe answer itself?
                let own: Reply<Step> = self.call_request(
                    &second,
                    "challenge_start on the new instance",
                    &Request::ChallengeStart { ctx: ctx.clone() },
                );
                let control = match own {
                    Reply::Ok(Step::Ask { prompt, state, .. })
                        if matches!(next, Next::Continue(_)) =>
                    {
                        Some(self.follow(
                            &second,
                            &format!("{op}, its own challenge"),
                            &ctx,
                            &state,
                            &Next::Continue(probe_input(&prompt)),
                        ))
                    }
                    Reply::Ok(Step::Wait { state, .. }) if matches!(next, Next::Poll) => {
                        Some(self.follow(
                            &second,
                            &format!("{op}, its own challenge"),
                            &ctx,
                            &state,
                            &Next::Poll,
                        ))
                    }
                    _ => None,
                };
                match control {
                    Some(Reply::Ok(_)) => failures.push(format!(
                        "a new instance refused the state of a challenge started on a destroyed one ({op}: {}) but accepted a challenge of its own: the provider keeps per-challenge state (or a per-instance key) in memory",
                        error_text(e)
                    )),
                    Some(Reply::Err(c)) if c.kind == ErrorKind::BadInput && e.kind == ErrorKind::BadInput => {
                        skipped = Some(format!(
                            "the probe answer is refused as malformed even for a challenge started on the same instance ({}); cannot tell whether state survives",
                            error_text(&c)
                        ));
                    }
                    _ => failures.push(format!(
                        "a new instance refused the state of a challenge started on a destroyed one ({op}: {})",
                        error_text(e)
                    )),
                }
            }
            Reply::Err(e) if e.kind != ErrorKind::Panicked => seen.push(format!(
                "a new instance answered the state with {}",
                error_text(e)
            )),
            other => failures.push(format!(
                "a new instance, given the state ({op}): {}",
                other.describe()
            )),
        }
        if state.is_empty() {
            seen.push("the state is empty, nothing to tamper with".to_string());
        } else {
            let mut tampered = state.0.clone();
            let middle = tampered.len() / 2;
            tampered[middle] ^= 0x01;
            let reply = self.follow(
                &second,
                &format!("{op} with a tampered state"),
                &ctx,
                &Bytes(tampered),
                &next,
            );
            match &reply {
                Reply::Ok(Step::Done {
                    verdict: Verdict::Approved { .. },
                }) => failures.push(format!("a state with one byte flipped was approved ({op})")),
                r if r.broken() => failures.push(format!(
                    "a state with one byte flipped ({op}): {}",
                    r.describe()
                )),
                r => seen.push(format!(
                    "a tampered state was not approved ({})",
                    r.describe()
                )),
            }
        }
        self.dispose(second);
        if !failures.is_empty() {
            fail(ROUND_TRIP, failures.join("; "))
        } else if let Some(why) = skipped {
            seen.insert(0, why);
            skip(ROUND_TRIP, seen.join("; "))
        } else {
            pass(ROUND_TRIP, seen.join("; "))
        }
    }

    /// A challenge started on the shared instance, or a garbage state when none can be had.
    pub(super) fn probe(&self, endpoint: &Shared) -> Probe {
        let ctx = self.challenge_ctx("check-2");
        let start: Reply<Step> = self.call_request(
            endpoint,
            "challenge_start",
            &Request::ChallengeStart { ctx: ctx.clone() },
        );
        let broken_start = start
            .broken()
            .then(|| format!("challenge_start: {}", start.describe()));
        let garbage = |why: String| Probe {
            ctx: ctx.clone(),
            state: Bytes(random_bytes(48)),
            next: Next::Continue(code(6)),
            garbage: Some(why),
            broken_start: broken_start.clone(),
        };
        match start {
            Reply::Ok(Step::Ask { prompt, state, .. }) => Probe {
                ctx: ctx.clone(),
                state,
                next: Next::Continue(probe_input(&prompt)),
                garbage: None,
                broken_start: None,
            },
            Reply::Ok(Step::Wait { state, .. }) => Probe {
                ctx: ctx.clone(),
                state,
                next: Next::Poll,
                garbage: None,
                broken_start: None,
            },
            other => garbage(format!(
                "with a garbage state: challenge_start gave none ({})",
                other.describe()
            )),
        }
    }

    pub(super) fn check_cancel(&self, endpoint: &Shared, probe: &Probe) -> Check {
        let request = Request::Cancel {
            ctx: probe.ctx.clone(),
            state: probe.state.clone(),
        };
        let first: Reply<()> = self.call_request(endpoint, "cancel", &request);
        let second: Reply<()> = self.call_request(endpoint, "cancel again", &request);
        let ok = |_: &()| "Ok".to_string();
        let (a, b) = (first.shape_with(ok), second.shape_with(ok));
        let with = probe
            .garbage
            .as_deref()
            .map_or(String::new(), |why| format!(", {why}"));
        if first.broken() || second.broken() {
            fail(
                CANCEL,
                format!(
                    "first cancel: {}; second cancel: {}{with}",
                    first.describe(),
                    second.describe()
                ),
            )
        } else if a != b {
            fail(
                CANCEL,
                format!(
                    "the first cancel answered {}, the second {}{with}",
                    first.describe(),
                    second.describe()
                ),
            )
        } else if first.error_kind().is_some() && probe.garbage.is_none() {
            pass(
                CANCEL,
                format!(
                    "both calls answered {} (cancelling a live challenge)",
                    first.describe()
                ),
            )
        } else {
            pass(CANCEL, format!("both calls answered {a}{with}"))
        }
    }

    pub(super) fn check_concurrent(&self, endpoint: &Shared, probe: &Probe) -> Check {
        let wanted = self.options.threads.max(1);
        let info_request = super::session::encode(&Request::Info);
        let follow_request = super::session::encode(&probe.next.request(&probe.ctx, &probe.state));
        let op = probe.next.op();
        let (info_request, follow_request) = (&info_request, &follow_request);
        type Answers = (Reply<ProviderInfo>, Reply<Step>);
        let answers: Vec<Option<Answers>> = thread::scope(|scope| {
            let mut gates = Vec::new();
            let mut handles = Vec::new();
            for i in 0..wanted {
                let (tx, rx) = mpsc::channel::<Arc<Barrier>>();
                let spawned = thread::Builder::new()
                    .name(format!("rolegate-check-{i}"))
                    .spawn_scoped(scope, move || {
                        let barrier = rx.recv().ok()?;
                        barrier.wait();
                        let info = self.call(endpoint, "info", info_request.clone());
                        let step = self.call(endpoint, op, follow_request.clone());
                        Some((info, step))
                    });
                match spawned {
                    Ok(handle) => {
                        gates.push(tx);
                        handles.push(handle);
                    }
                    Err(_) => break,
                }
            }
            // The barrier counts only the threads that started, so none waits forever.
            let barrier = Arc::new(Barrier::new(handles.len()));
            for gate in &gates {
                let _ = gate.send(Arc::clone(&barrier));
            }
            handles
                .into_iter()
                .map(|h| h.join().ok().flatten())
                .collect()
        });
        let started = answers.len();
        let mut failures = Vec::new();
        if let Some(why) = &probe.broken_start {
            failures.push(why.clone());
        }
        if started < wanted {
            failures.push(format!(
                "only {started} of {wanted} threads could be started"
            ));
        }
        let mut first_info: Option<ProviderInfo> = None;
        let mut first_shape: Option<(String, String)> = None;
        let mut info_differs = false;
        let mut broken = Vec::new();
        let mut shapes = Vec::new();
        for answer in answers.iter() {
            let Some((info, step)) = answer else {
                broken.push("a calling thread ended early".to_string());
                continue;
            };
            match info {
                Reply::Ok(info) => match &first_info {
                    None => first_info = Some(info.clone()),
                    Some(first) if first != info => info_differs = true,
                    Some(_) => {}
                },
                other => broken.push(format!("info: {}", other.describe_with(|_| String::new()))),
            }
            if step.broken() {
                broken.push(format!("{op}: {}", step.describe()));
            }
            let shape = step.shape_with(step_shape);
            // An out-of-band outcome may arrive between two polls: a `Wait` beside a verdict
            // is time passing, not disagreement (the verdicts must still agree).
            if op == "challenge_poll" && shape == "Wait" {
                continue;
            }
            match &first_shape {
                None => first_shape = Some((shape.clone(), step.describe())),
                Some((s, _)) if *s != shape => shapes.push(step.describe()),
                Some(_) => {}
            }
        }
        if info_differs {
            failures.push("info differed between threads".to_string());
        }
        if !broken.is_empty() {
            broken.sort();
            broken.dedup();
            failures.push(format!(
                "{} of the concurrent calls broke: {}",
                broken.len(),
                broken.join("; ")
            ));
        }
        if !shapes.is_empty() {
            shapes.sort();
            shapes.dedup();
            let first = first_shape
                .as_ref()
                .map_or(String::new(), |(_, d)| d.clone());
            failures.push(format!(
                "{op} with the same state and answer got different answers: {first}; {}",
                shapes.join("; ")
            ));
        }
        if !failures.is_empty() {
            return fail(CONCURRENT, failures.join("; "));
        }
        // Every poll may have answered Wait: the verdict had not come yet.
        let answered = first_shape.map_or_else(|| "Wait".to_string(), |(_, d)| d);
        let with = probe
            .garbage
            .as_deref()
            .map_or(String::new(), |why| format!(", {why}"));
        pass(
            CONCURRENT,
            format!(
                "{started} threads at once: the same info, and every {op} answered {answered}{with}"
            ),
        )
    }
}
