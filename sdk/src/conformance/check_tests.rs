use std::collections::HashMap;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::session::{human, random_bytes};
use super::*;
use crate::bytes::Bytes;
use crate::error::ErrorKind;
use crate::message::{
    ChallengeContext, Credential, DenyReason, EnrollContext, FactorKind, Input, Prompt, PromptKind,
    ProviderInfo, Step, Verdict,
};
use crate::settings::Settings;

const GOOD: u8 = 0;
const ACCEPTS_UNKNOWN: u8 = 1;
const PANICS: u8 = 2;
const IN_MEMORY: u8 = 3;
const INTERNAL: u8 = 4;
const HANGS: u8 = 5;
const AHEAD_NOT_TYPED: u8 = 7;
const UNBOUND: u8 = 8;
const HANGING_HEALTH: u8 = 9;
const LOOSE_INPUT: u8 = 10;

#[derive(Serialize, Deserialize)]
struct DemoState {
    nonce: String,
    request_id: String,
}

/// A small provider: the code is the first six digits of a random nonce. `FLAW` selects
/// which rule of the contract it breaks (none for `GOOD`).
struct Demo<const FLAW: u8> {
    memory: Mutex<HashMap<String, String>>,
}

fn nonce() -> String {
    // Digits 1 to 9: a code of zeros is always wrong.
    random_bytes(40)
        .iter()
        .map(|b| char::from(b'1' + b % 9))
        .collect()
}

fn ask(prompt: Prompt, state: Vec<u8>, expires_in: u64) -> Step {
    Step::Ask {
        prompt,
        state: Bytes(state),
        expires_in,
        reference: None,
    }
}

fn done(verdict: Verdict) -> Step {
    Step::Done { verdict }
}

fn denied(reason: DenyReason, message: &str) -> Step {
    done(Verdict::denied(reason, message))
}

fn info(id: &str, needs_enrolment: bool) -> ProviderInfo {
    ProviderInfo {
        id: id.into(),
        name: "Demo".into(),
        version: "1.0.0".into(),
        vendor: "rolegate tests".into(),
        factor: FactorKind::Code,
        needs_enrolment,
        needs_phone: false,
        responder: PromptKind::Code,
        quick: false,
        answer_ahead: false,
        sdk_version: String::new(),
        several_credentials: false,
    }
}

fn refuse_unknown(settings: &Settings) -> Result<(), ProviderError> {
    if settings.0.is_empty() {
        return Ok(());
    }
    let keys: Vec<&str> = settings.0.keys().map(String::as_str).collect();
    Err(ProviderError::config(format!(
        "unknown settings: {}",
        keys.join(", ")
    )))
}

impl<const FLAW: u8> Demo<FLAW> {
    fn expected_code(&self, ctx: &ChallengeContext, state: &[u8]) -> Result<String, ProviderError> {
        if FLAW == IN_MEMORY {
            let key = std::str::from_utf8(state).unwrap_or("");
            return self
                .memory
                .lock()
                .unwrap()
                .get(key)
                .cloned()
                .ok_or_else(|| ProviderError::bad_input("no such challenge"));
        }
        match serde_json::from_slice::<DemoState>(state) {
            Ok(s) if s.request_id == ctx.request_id || FLAW == UNBOUND => {
                Ok(s.nonce[..6].to_string())
            }
            Ok(_) => Err(ProviderError::bad_input(
                "the state belongs to another request",
            )),
            Err(_) => match FLAW {
                PANICS => panic!("garbage state"),
                INTERNAL => Err(ProviderError::internal("could not read the state")),
                HANGS => {
                    thread::sleep(Duration::from_secs(10));
                    Err(ProviderError::bad_input("the state is not demo's"))
                }
                _ => Err(ProviderError::bad_input("the state is not demo's")),
            },
        }
    }
}

impl<const FLAW: u8> Provider for Demo<FLAW> {
    fn create(settings: Settings) -> Result<Self, ProviderError> {
        if FLAW != ACCEPTS_UNKNOWN {
            refuse_unknown(&settings)?;
        }
        Ok(Self {
            memory: Mutex::default(),
        })
    }

    fn info(&self) -> ProviderInfo {
        let mut i = info("demo", false);
        if FLAW == AHEAD_NOT_TYPED {
            i.responder = PromptKind::Webauthn;
            i.answer_ahead = true;
        }
        i
    }

    fn health(&self) -> crate::message::Health {
        if FLAW == HANGING_HEALTH {
            thread::sleep(Duration::from_secs(10));
        }
        crate::message::Health::ok()
    }

    fn challenge_start(&self, ctx: &ChallengeContext) -> Result<Step, ProviderError> {
        let nonce = nonce();
        let state = if FLAW == IN_MEMORY {
            let key = nonce[6..26].to_string();
            self.memory
                .lock()
                .unwrap()
                .insert(key.clone(), nonce[..6].to_string());
            key.into_bytes()
        } else {
            serde_json::to_vec(&DemoState {
                nonce,
                request_id: ctx.request_id.clone(),
            })
            .unwrap()
        };
        Ok(ask(
            Prompt::Code {
                message: "Type the code".into(),
                length: Some(6),
            },
            state,
            60,
        ))
    }

    fn challenge_continue(
        &self,
        ctx: &ChallengeContext,
        state: &[u8],
        input: &Input,
    ) -> Result<Step, ProviderError> {
        let expected = self.expected_code(ctx, state)?;
        let code = match input {
            Input::Code { code } => code.clone(),
            _ if FLAW == LOOSE_INPUT => String::new(),
            _ => return Err(ProviderError::bad_input("a code, please")),
        };
        if FLAW != LOOSE_INPUT && code.len() != 6 {
            return Err(ProviderError::bad_input("six digits, please"));
        }
        Ok(if code == expected {
            done(Verdict::approved(None))
        } else {
            denied(DenyReason::WrongAnswer, "wrong code")
        })
    }

    fn cancel(&self, _ctx: &ChallengeContext, state: &[u8]) -> Result<(), ProviderError> {
        if FLAW == IN_MEMORY {
            let key = std::str::from_utf8(state).unwrap_or("");
            self.memory.lock().unwrap().remove(key);
        }
        Ok(())
    }
}

/// Enrols with a secret shown on a display prompt (no otpauth URI): the user types it back.
/// `FLAW` 1 approves the enrolment without a credential; 2 answers it with a Wait.
struct Secret<const FLAW: u8>;

const SECRET: &str = "7351";

impl<const FLAW: u8> Provider for Secret<FLAW> {
    fn create(settings: Settings) -> Result<Self, ProviderError> {
        refuse_unknown(&settings)?;
        Ok(Self)
    }

    fn info(&self) -> ProviderInfo {
        info("secret", true)
    }

    fn enroll_start(&self, _ctx: &EnrollContext) -> Result<Step, ProviderError> {
        Ok(ask(
            Prompt::Display {
                message: format!("Your secret is {SECRET}: type it to confirm"),
                uri: None,
                png: None,
                text: None,
            },
            b"secret-enrolment".to_vec(),
            300,
        ))
    }

    fn enroll_continue(
        &self,
        _ctx: &EnrollContext,
        state: &[u8],
        input: &Input,
    ) -> Result<Step, ProviderError> {
        if state != b"secret-enrolment" {
            return Err(ProviderError::bad_input("not a secret enrolment"));
        }
        let Input::Code { code } = input else {
            if let Input::Acknowledge = input {
                return Ok(denied(DenyReason::WrongAnswer, "type the secret"));
            }
            return Err(ProviderError::bad_input("type the secret"));
        };
        if FLAW == 2 {
            return Ok(Step::Wait {
                state: Bytes(b"x".to_vec()),
                poll_after_ms: 10,
                status: String::new(),
                reference: None,
            });
        }
        Ok(if code == SECRET {
            done(Verdict::approved((FLAW != 1).then(|| Credential {
                id: "secret-1".into(),
                label: "secret".into(),
                data: Bytes(SECRET.as_bytes().to_vec()),
            })))
        } else {
            denied(DenyReason::WrongAnswer, "not the secret")
        })
    }

    fn challenge_start(&self, ctx: &ChallengeContext) -> Result<Step, ProviderError> {
        if ctx.credentials.is_empty() {
            return Ok(denied(DenyReason::NotEnrolled, "enrol first"));
        }
        Ok(ask(
            Prompt::Code {
                message: "Type your secret".into(),
                length: Some(4),
            },
            ctx.request_id.as_bytes().to_vec(),
            60,
        ))
    }

    fn challenge_continue(
        &self,
        ctx: &ChallengeContext,
        state: &[u8],
        input: &Input,
    ) -> Result<Step, ProviderError> {
        if state != ctx.request_id.as_bytes() {
            return Err(ProviderError::bad_input("not this request's state"));
        }
        let Input::Code { code } = input else {
            return Err(ProviderError::bad_input("type the secret"));
        };
        let right = ctx
            .credentials
            .iter()
            .any(|c| c.data.as_slice() == code.as_bytes());
        Ok(if right {
            done(Verdict::approved(None))
        } else {
            denied(DenyReason::WrongAnswer, "wrong secret")
        })
    }
}

/// An authenticator-app provider (an otpauth URI at enrolment, its codes at challenges).
/// `FLAW` 1 judges codes by its own clock; 2 names the typed code when it denies it.
struct Totp<const FLAW: u8>;

#[derive(Serialize, Deserialize)]
struct TotpChallenge {
    request_id: String,
    expires_at: u64,
}

const TOTP_URI: &str = "otpauth://totp/demo:check?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

impl<const FLAW: u8> Totp<FLAW> {
    fn now(ctx_now: u64) -> u64 {
        if FLAW == 1 {
            super::session::now()
        } else {
            ctx_now
        }
    }
}

impl<const FLAW: u8> Provider for Totp<FLAW> {
    fn create(settings: Settings) -> Result<Self, ProviderError> {
        refuse_unknown(&settings)?;
        Ok(Self)
    }

    fn info(&self) -> ProviderInfo {
        info("totp-demo", true)
    }

    fn enroll_start(&self, _ctx: &EnrollContext) -> Result<Step, ProviderError> {
        Ok(ask(
            Prompt::Display {
                message: "Scan it".into(),
                uri: Some(TOTP_URI.into()),
                png: None,
                text: None,
            },
            b"totp-enrolment".to_vec(),
            300,
        ))
    }

    fn enroll_continue(
        &self,
        ctx: &EnrollContext,
        state: &[u8],
        input: &Input,
    ) -> Result<Step, ProviderError> {
        if state != b"totp-enrolment" {
            return Err(ProviderError::bad_input("not a TOTP enrolment"));
        }
        let Input::Code { code } = input else {
            return Err(ProviderError::bad_input("type the app's code"));
        };
        let expected = code_for_uri(TOTP_URI, Self::now(ctx.now)).unwrap_or_default();
        Ok(if *code == expected {
            done(Verdict::approved(Some(Credential {
                id: "totp-1".into(),
                label: "app".into(),
                data: Bytes(TOTP_URI.as_bytes().to_vec()),
            })))
        } else {
            denied(DenyReason::WrongAnswer, "wrong code")
        })
    }

    fn challenge_start(&self, ctx: &ChallengeContext) -> Result<Step, ProviderError> {
        if ctx.credentials.is_empty() {
            return Ok(denied(DenyReason::NotEnrolled, "enrol first"));
        }
        let state = TotpChallenge {
            request_id: ctx.request_id.clone(),
            expires_at: ctx.now + 60,
        };
        Ok(ask(
            Prompt::Code {
                message: "Type the app's code".into(),
                length: Some(6),
            },
            serde_json::to_vec(&state).unwrap(),
            60,
        ))
    }

    fn challenge_continue(
        &self,
        ctx: &ChallengeContext,
        state: &[u8],
        input: &Input,
    ) -> Result<Step, ProviderError> {
        let state: TotpChallenge = serde_json::from_slice(state)
            .map_err(|_| ProviderError::bad_input("not a TOTP state"))?;
        if state.request_id != ctx.request_id {
            return Err(ProviderError::bad_input("another request's state"));
        }
        let Input::Code { code } = input else {
            return Err(ProviderError::bad_input("type the app's code"));
        };
        if code.len() != 6 {
            return Err(ProviderError::bad_input("six digits"));
        }
        let now = Self::now(ctx.now);
        if now >= state.expires_at {
            return Ok(denied(DenyReason::Expired, "too late"));
        }
        let expected = code_for_uri(TOTP_URI, now).unwrap_or_default();
        Ok(if *code == expected {
            done(Verdict::approved(None))
        } else if FLAW == 2 {
            denied(
                DenyReason::WrongAnswer,
                &format!("{code} is wrong, expected {expected}"),
            )
        } else {
            denied(DenyReason::WrongAnswer, "wrong code")
        })
    }
}

fn outcome(report: &Report, name: &str) -> Outcome {
    report
        .check(name)
        .unwrap_or_else(|| panic!("no check {name}:\n{report}"))
        .outcome
}

fn detail<'a>(report: &'a Report, name: &str) -> &'a str {
    &report.check(name).unwrap().detail
}

fn failed(report: &Report) -> Vec<&str> {
    report.failures().map(|c| c.name.as_str()).collect()
}

fn assert_only_failure(report: &Report, name: &str) {
    assert_eq!(failed(report), [name], "\n{report}");
    let shown = report.to_string();
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("  FAIL  ") && l.contains(name)),
        "{shown}"
    );
    assert!(shown.ends_with(", 1 failed, 0 skipped"), "{shown}");
}

#[test]
fn a_good_provider_passes_every_check() {
    let report = check_provider::<Demo<GOOD>>(&Options::default());
    assert!(report.passed_strict(), "\n{report}");
    // Every check but the host's own (load, stdout) ran, in the documented order.
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    let expected: Vec<&str> = CHECKS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| ![LOAD, QUIET_STDOUT, CANCEL, CONCURRENT].contains(n))
        .collect();
    assert_eq!(&names[..names.len() - 4], &expected[..expected.len() - 2]);
    assert_eq!(
        &names[names.len() - 4..],
        [CANCEL, CONCURRENT, VALID_MESSAGES, NO_SECRETS]
    );
    let shown = report.to_string();
    assert!(shown.contains("  ok    info "), "{shown}");
    assert!(shown.contains("demo 1.0.0 by rolegate tests (code factor, responder code)"));
    assert!(
        shown.ends_with("checks: 25 ok, 0 failed, 0 skipped"),
        "{shown}"
    );
    // CI reads "N passed, N failed" as a test runner's summary: never print it.
    assert!(!shown.contains(" passed, "), "{shown}");
    assert!(!shown.contains("skipped, and why"), "{shown}");
    assert!(detail(&report, ROUND_TRIP).contains("Done: denied (wrong_answer)"));
    assert!(detail(&report, CONCURRENT).starts_with("16 threads at once"));
    assert!(detail(&report, ENROLMENT).contains("needs none"));
    assert!(
        detail(&report, WRONG_TYPES).starts_with("216 requests"),
        "{report}"
    );
}

#[test]
fn every_check_has_a_rule() {
    for (name, rule) in CHECKS {
        assert!(!rule.is_empty(), "{name}");
    }
    let mut names: Vec<&str> = CHECKS.iter().map(|(n, _)| *n).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), CHECKS.len());
}

#[test]
fn an_answer_ahead_that_is_not_typed_fails_info() {
    let report = check_provider::<Demo<AHEAD_NOT_TYPED>>(&Options::default());
    assert_only_failure(&report, INFO);
    let d = detail(&report, INFO);
    assert!(
        d.contains("answer_ahead is for answers the user types") && d.contains("`webauthn`"),
        "{d}"
    );
}

#[test]
fn run_takes_any_target_and_leaves_out_the_raw_edges() {
    let table = Table::for_provider::<Demo<GOOD>>();
    let report = run(&table, &Options::default());
    // A table is a target whose functions are in this process: the edges run too.
    assert!(report.check(ABI_EDGES).is_some());
    assert!(report.passed_strict(), "\n{report}");
    let report = run(&BadHealth(table), &Options::default());
    assert!(report.check(ABI_EDGES).is_none(), "\n{report}");
}

#[test]
fn accepting_unknown_settings_fails_that_check() {
    let report = check_provider::<Demo<ACCEPTS_UNKNOWN>>(&Options::default());
    assert_only_failure(&report, UNKNOWN_SETTINGS);
    assert_eq!(
        detail(&report, UNKNOWN_SETTINGS),
        "expected a Config error naming `rolegate_check_unknown_key`, got Ok"
    );
}

#[test]
fn panicking_on_garbage_state_fails_garbage() {
    let report = check_provider::<Demo<PANICS>>(&Options::default());
    assert!(failed(&report).contains(&GARBAGE), "\n{report}");
    let d = detail(&report, GARBAGE);
    assert!(d.contains("challenge_continue with a garbage state"), "{d}");
    assert!(d.contains("panicked error"), "{d}");
}

#[test]
fn challenge_state_in_memory_fails_the_round_trip() {
    let report = check_provider::<Demo<IN_MEMORY>>(&Options::default());
    assert!(failed(&report).contains(&ROUND_TRIP), "\n{report}");
    assert!(
        detail(&report, ROUND_TRIP).contains("in memory"),
        "\n{report}"
    );
}

#[test]
fn internal_instead_of_bad_input_fails_garbage() {
    let report = check_provider::<Demo<INTERNAL>>(&Options::default());
    assert!(failed(&report).contains(&GARBAGE), "\n{report}");
    let d = detail(&report, GARBAGE);
    assert!(
        d.contains("expected a bad_input error, got internal error"),
        "{d}"
    );
}

#[test]
fn a_hang_fails_its_check_without_blocking() {
    let options = Options {
        deadline: Duration::from_millis(300),
        threads: 4,
        ..Options::default()
    };
    let started = Instant::now();
    let report = check_provider::<Demo<HANGS>>(&options);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(failed(&report).contains(&GARBAGE), "\n{report}");
    let d = detail(&report, GARBAGE);
    assert!(d.contains("did not answer within 300 ms: a hang"), "{d}");
}

#[test]
fn a_hanging_health_fails_health_only() {
    let options = Options {
        deadline: Duration::from_millis(300),
        ..Options::default()
    };
    let report = check_provider::<Demo<HANGING_HEALTH>>(&options);
    assert_only_failure(&report, HEALTH);
    assert!(
        detail(&report, HEALTH).contains("did not answer within 300 ms: a hang"),
        "\n{report}"
    );
}

#[test]
fn state_for_any_request_fails_state_bound() {
    let report = check_provider::<Demo<UNBOUND>>(&Options::default());
    assert_only_failure(&report, STATE_BOUND);
    let d = detail(&report, STATE_BOUND);
    assert!(
        d.contains("with another request_id: expected a bad_input error, got Done: denied"),
        "{d}"
    );
}

#[test]
fn taking_any_input_kind_fails_wrong_input() {
    let report = check_provider::<Demo<LOOSE_INPUT>>(&Options::default());
    assert!(failed(&report).contains(&WRONG_INPUT), "\n{report}");
    let d = detail(&report, WRONG_INPUT);
    assert!(
        d.contains("challenge_continue with bytes to a code prompt"),
        "{d}"
    );
}

#[test]
fn refused_settings_skip_what_needs_an_instance() {
    let options = Options {
        settings: json!({"colour": "blue"}),
        ..Options::default()
    };
    let report = check_provider::<Demo<GOOD>>(&options);
    assert_eq!(outcome(&report, CREATE), Outcome::Fail);
    assert!(detail(&report, CREATE).contains("colour"));
    assert_eq!(outcome(&report, UNKNOWN_SETTINGS), Outcome::Pass);
    for name in [
        INFO, HEALTH, GARBAGE, ENROLMENT, ROUND_TRIP, CANCEL, CONCURRENT,
    ] {
        assert_eq!(outcome(&report, name), Outcome::Skip, "{name}\n{report}");
    }
    // `colour` of the wrong type is refused naming it, as a wrong value must be.
    assert_eq!(
        outcome(&report, WRONG_SETTINGS),
        Outcome::Pass,
        "\n{report}"
    );
    assert_eq!(failed(&report), [CREATE]);
    assert!(!report.passed() && !report.passed_strict());
}

#[test]
fn an_enrolment_that_wants_a_code_is_skipped_without_one_and_done_with_it() {
    let report = check_provider::<Secret<0>>(&Options::default());
    assert!(report.passed(), "\n{report}");
    assert!(!report.passed_strict());
    assert_eq!(outcome(&report, ENROLMENT), Outcome::Skip);
    let d = detail(&report, ENROLMENT);
    assert!(d.contains("denied (wrong_answer: type the secret)"), "{d}");
    assert!(d.contains("supply it in `enrol_codes`"), "{d}");
    for name in [CHALLENGE, CLOCK, ROUND_TRIP] {
        assert_eq!(outcome(&report, name), Outcome::Skip, "{name}\n{report}");
        assert!(detail(&report, name).contains("enrolment gave no credential"));
    }
    // The skips are summed up, each with its reason, before the counts.
    let shown = report.to_string();
    let summary = shown.split("skipped, and why:\n").nth(1).unwrap();
    assert!(
        summary.contains("  - enrolment: denied (wrong_answer"),
        "{shown}"
    );
    assert!(summary.contains("  - challenge reaches a verdict: the provider needs enrolment"));

    let options = Options {
        enrol_codes: vec![SECRET.into()],
        ..Options::default()
    };
    let report = check_provider::<Secret<0>>(&options);
    assert!(report.passed_strict(), "\n{report}");
    let d = detail(&report, ENROLMENT);
    assert!(d.contains("enrolled (credential `secret-1`) through 1 prompt (display), answered with a code from enrol_codes"), "{d}");
    // The challenges ran with the credential: a guess at its secret is denied.
    assert!(
        detail(&report, CHALLENGE).contains("denied (wrong_answer)"),
        "\n{report}"
    );
    assert!(detail(&report, ROUND_TRIP).contains("a new instance continued"));
}

#[test]
fn an_enrolment_without_a_credential_or_with_a_wait_fails() {
    let options = Options {
        enrol_codes: vec![SECRET.into()],
        ..Options::default()
    };
    let report = check_provider::<Secret<1>>(&options);
    assert_eq!(outcome(&report, ENROLMENT), Outcome::Fail, "\n{report}");
    assert!(detail(&report, ENROLMENT).contains("approved without a credential"));
    let report = check_provider::<Secret<2>>(&options);
    assert_eq!(outcome(&report, ENROLMENT), Outcome::Fail, "\n{report}");
    assert!(detail(&report, ENROLMENT).contains("an enrolment has no poll"));
}

#[test]
fn an_otpauth_enrolment_is_answered_with_the_apps_code() {
    let report = check_provider::<Totp<0>>(&Options::default());
    assert!(report.passed_strict(), "\n{report}");
    assert!(detail(&report, ENROLMENT).contains("a code computed from the otpauth URI"));
    assert!(detail(&report, CHALLENGE).starts_with("approved with the code computed"));
    assert!(
        detail(&report, CLOCK).contains("a day ahead approved"),
        "\n{report}"
    );
    assert!(
        detail(&report, NO_SECRETS).contains("none of the"),
        "\n{report}"
    );
}

#[test]
fn a_provider_on_its_own_clock_fails_the_clock() {
    let report = check_provider::<Totp<1>>(&Options::default());
    // The verdict check answers with a code a few steps ahead too: both see it.
    assert_eq!(failed(&report), [CHALLENGE, CLOCK], "\n{report}");
    assert!(detail(&report, CLOCK).contains("judges codes by its own clock"));
}

#[test]
fn a_denial_that_names_the_code_fails_no_secrets() {
    let report = check_provider::<Totp<2>>(&Options::default());
    assert_eq!(failed(&report), [NO_SECRETS], "\n{report}");
    assert!(
        detail(&report, NO_SECRETS).contains("is wrong, expected"),
        "\n{report}"
    );
}

/// A target wrapping a table, whose endpoints answer some requests themselves.
struct Rewrite<F: Fn(&[u8]) -> Option<Result<Vec<u8>, ProviderError>> + Sync + Send + Copy>(
    Table,
    F,
);

struct RewriteEndpoint<F>(crate::abi::Instance, F);

impl<F: Fn(&[u8]) -> Option<Result<Vec<u8>, ProviderError>> + Sync + Send + Copy + 'static> Target
    for Rewrite<F>
{
    fn create(&self, settings: &Value) -> Result<Box<dyn Endpoint>, ProviderError> {
        let bytes = serde_json::to_vec(settings).unwrap();
        Ok(Box::new(RewriteEndpoint(self.0.create(&bytes)?, self.1)))
    }
}

impl<F: Fn(&[u8]) -> Option<Result<Vec<u8>, ProviderError>> + Sync + Send> Endpoint
    for RewriteEndpoint<F>
{
    fn call_raw(&self, request: &[u8]) -> Result<Vec<u8>, ProviderError> {
        match (self.1)(request) {
            Some(answer) => answer,
            None => Ok(self.0.call_raw(request)),
        }
    }
}

fn op_of(request: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Value>(request)
        .ok()?
        .get("op")
        .cloned()
}

#[test]
fn an_unknown_op_answered_bad_input_fails_its_check() {
    let target = Rewrite(
        Table::for_provider::<Demo<GOOD>>(),
        |r: &[u8]| match op_of(r)?.as_str()? {
            "info" | "health" | "challenge_start" | "challenge_continue" | "challenge_poll"
            | "cancel" | "enroll_start" | "enroll_continue" => None,
            _ => Some(Ok(
                br#"{"error":{"kind":"bad_input","message":"unknown op"}}"#.to_vec(),
            )),
        },
    );
    let report = run(&target, &Options::default());
    assert_eq!(failed(&report), [UNSUPPORTED_OP], "\n{report}");
    let d = detail(&report, UNSUPPORTED_OP);
    assert!(d.starts_with("10 of 10 requests: an unknown op: expected an unsupported error, got bad_input error: unknown op"), "{d}");
}

#[test]
fn a_crash_on_a_request_without_op_fails_missing_op() {
    // What a worker reports when the plugin segfaults on a request without a string op.
    let target = Rewrite(Table::for_provider::<Demo<GOOD>>(), |r: &[u8]| {
        let v: Value = serde_json::from_slice(r).ok()?;
        (v.is_object() && !v.get("op").is_some_and(Value::is_string)).then(|| {
            Err(ProviderError::unavailable(
                "the worker was killed by signal 11 (SIGSEGV)",
            ))
        })
    });
    let report = run(&target, &Options::default());
    assert_eq!(failed(&report), [MISSING_OP], "\n{report}");
    let d = detail(&report, MISSING_OP);
    assert!(d.contains("an empty object: expected a bad_input error, got a transport failure (unavailable error: the worker was killed by signal 11 (SIGSEGV))"), "{d}");
}

#[test]
fn a_field_of_the_wrong_type_taken_as_good_fails_wrong_types() {
    // A reader that takes `now` from a string, as a C provider using atoi would.
    let target = Rewrite(Table::for_provider::<Demo<GOOD>>(), |r: &[u8]| {
        let mut v: Value = serde_json::from_slice(r).ok()?;
        let now = v.pointer("/ctx/now")?.as_str()?.parse::<u64>().ok()?;
        v["ctx"]["now"] = json!(now);
        Some(Ok(RewriteInner::call(&v)))
    });
    let report = run(&target, &Options::default());
    assert_eq!(failed(&report), [WRONG_TYPES], "\n{report}");
    let d = detail(&report, WRONG_TYPES);
    assert!(
        d.contains(
            "challenge_start with `ctx.now` = \"1767225600\": expected a bad_input error, got Ask"
        ),
        "{d}"
    );
}

/// Answers a request with a fresh `Demo<GOOD>` (for rewrites that fix a request up first).
struct RewriteInner;

impl RewriteInner {
    fn call(request: &Value) -> Vec<u8> {
        let table = Table::for_provider::<Demo<GOOD>>();
        let instance = table.create(b"{}").unwrap();
        instance.call_raw(&serde_json::to_vec(request).unwrap())
    }
}

/// A target whose instances answer `health` with a malformed message.
struct BadHealth(Table);

struct BadHealthEndpoint(crate::abi::Instance);

impl Target for BadHealth {
    fn create(&self, settings: &Value) -> Result<Box<dyn Endpoint>, ProviderError> {
        let bytes = serde_json::to_vec(settings).unwrap();
        Ok(Box::new(BadHealthEndpoint(self.0.create(&bytes)?)))
    }
}

impl Endpoint for BadHealthEndpoint {
    fn call_raw(&self, request: &[u8]) -> Result<Vec<u8>, ProviderError> {
        if request == br#"{"op":"health"}"# {
            return Ok(br#"{"ok":{"status":42}}"#.to_vec());
        }
        Ok(self.0.call_raw(request))
    }
}

#[test]
fn an_invalid_answer_is_named_by_its_call() {
    let target = BadHealth(Table::for_provider::<Demo<GOOD>>());
    let report = run(&target, &Options::default());
    assert_eq!(
        outcome(&report, VALID_MESSAGES),
        Outcome::Fail,
        "\n{report}"
    );
    let d = detail(&report, VALID_MESSAGES);
    assert!(d.starts_with("1 of "), "{d}");
    assert!(d.contains("health: "), "{d}");
    assert_eq!(outcome(&report, HEALTH), Outcome::Fail);
}

/// Records what the suite tells its observer.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Observer for Recorder {
    fn check_started(&self, name: &str) {
        self.0.lock().unwrap().push(format!("check {name}"));
    }
    fn call_started(&self, label: &str) {
        self.0.lock().unwrap().push(format!("call {label}"));
    }
    fn call_ended(&self, label: &str) {
        self.0.lock().unwrap().push(format!("end {label}"));
    }
    fn check_ended(&self, check: &Check) {
        self.0.lock().unwrap().push(format!("done {}", check.name));
    }
}

#[test]
fn calls_are_labelled_alike_in_every_pass_and_a_crashed_one_is_not_repeated() {
    let table = Table::for_provider::<Demo<GOOD>>();
    let labels = |options: &Options| {
        let recorder = Recorder::default();
        let report = check_table(table, options, &recorder);
        let mut calls: Vec<String> = recorder
            .0
            .into_inner()
            .unwrap()
            .into_iter()
            .filter(|e| e.starts_with("call "))
            .collect();
        calls.sort();
        calls.dedup();
        (report, calls)
    };
    let (_, first) = labels(&Options::default());
    let (_, second) = labels(&Options::default());
    assert_eq!(first, second);
    assert!(first.contains(&"call missing or non-string op is bad input: op null".to_string()));
    assert!(first.contains(&"call abi edge cases: destroy(NULL)".to_string()));
    // The next pass, told that a call crashed the process, fails it without making it.
    let options = Options {
        crashed: vec![
            Crashed {
                label: "missing or non-string op is bad input: op null".into(),
                how: "killed by signal 11 (SIGSEGV)".into(),
            },
            Crashed {
                label: HEALTH.into(),
                how: "killed by signal 6 (SIGABRT)".into(),
            },
        ],
        ..Options::default()
    };
    let (report, calls) = labels(&options);
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("call missing or non-string op is bad input: "))
    );
    assert_eq!(failed(&report), [HEALTH, MISSING_OP], "\n{report}");
    let d = detail(&report, MISSING_OP);
    assert_eq!(
        d,
        "op null: crashed the process that made the call (killed by signal 11 (SIGSEGV)); with isolation = \"in-process\" this takes the host down; the check's other calls were not made"
    );
    assert!(detail(&report, HEALTH).contains("outside any call"));
}

#[test]
fn a_report_reads_and_travels_as_json() {
    let report = Report {
        checks: vec![
            Check::new(INFO, Outcome::Pass, "fine"),
            Check::new(ENROLMENT, Outcome::Skip, "no code\nsecond line"),
            Check::new(GARBAGE, Outcome::Fail, "crashed"),
        ],
    };
    let shown = report.to_string();
    assert!(
        shown.contains("  skip  enrolment             no code\n"),
        "{shown}"
    );
    assert!(
        shown.contains("\n                              second line\n"),
        "{shown}"
    );
    assert!(
        shown.contains("skipped, and why:\n  - enrolment: no code\n"),
        "{shown}"
    );
    assert!(
        shown.ends_with("checks: 1 ok, 1 failed, 1 skipped"),
        "{shown}"
    );
    let v = serde_json::to_value(&report).unwrap();
    assert_eq!(
        v["checks"][1],
        json!({"name": "enrolment", "outcome": "skip", "detail": "no code\nsecond line"})
    );
    let back: Report = serde_json::from_value(v).unwrap();
    assert_eq!(back, report);
    assert_eq!(
        report.counts(),
        Counts {
            ok: 1,
            failed: 1,
            skipped: 1
        }
    );
}

#[test]
fn durations_read_well() {
    assert_eq!(human(Duration::from_secs(5)), "5 s");
    assert_eq!(human(Duration::from_millis(300)), "300 ms");
    assert_eq!(human(Duration::from_millis(1500)), "1.5 s");
    assert_eq!(random_bytes(13).len(), 13);
    assert_ne!(random_bytes(16), random_bytes(16));
}

#[test]
fn unknown_settings_do_not_break_the_error_kind_list() {
    // A kind the host does not know decodes as internal: never as bad_input.
    let e: ProviderError = serde_json::from_str(r#"{"kind":"odd","message":"m"}"#).unwrap();
    assert_eq!(e.kind, ErrorKind::Internal);
}
