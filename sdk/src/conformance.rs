//! The conformance suite: the contract checks a provider must pass.
//!
//! The host's `rolegate provider check <library>` runs them against a loaded plugin (in process
//! or in a worker process), and a vendor can run them in their own `cargo test`:
//!
//! ```ignore
//! #[test]
//! fn my_provider_conforms() {
//!     let report = rolegate_sdk::conformance::check_provider::<MyProvider>(&Default::default());
//!     assert!(report.passed_strict(), "{report}");
//! }
//! ```
//!
//! Every rule the contract states as a must (`docs/abi.md`, `include/rolegate_provider.h`) is a
//! check that can fail; [`CHECKS`] lists them with the rule each one holds the provider to.
//! A check that could not run is a *skip*, with its reason: [`Report::passed`] tolerates skips,
//! [`Report::passed_strict`] does not (nor does `rolegate provider check` without
//! `--allow-skips`).
//!
//! A provider that needs enrolment is enrolled first, by a scripted responder: a `display`
//! prompt with an `otpauth://` URI is answered with the code an authenticator app would show,
//! other prompts with the codes of [`Options::enrol_codes`] in order, and a `display` prompt
//! with nothing else to go on is acknowledged. The challenge checks then run with the credential
//! the enrolment issued, as the host would hand it back.
//!
//! Every call the suite makes runs on its own thread and is awaited for at most
//! [`Options::deadline`]: a call that does not answer in time fails its check as a hang, and its
//! thread is left behind rather than blocking the suite. The one exception is
//! [`Target::create`] through [`run`]: the target is only borrowed, so `create` runs on the
//! caller's thread and an answer past the deadline fails afterwards (a target that enforces its
//! own deadline, such as a worker process, never blocks). [`check_provider`] and
//! [`check_table`] bound `create` too.
//!
//! A call that crashes the process running the suite (a segfault in a C plugin loaded in
//! process) cannot be reported by that process. A checker that runs the suite in a child
//! process watches its [`Observer`] events, and runs it again with the call that crashed listed
//! in [`Options::crashed`]: the suite then fails that call without making it, and goes on.

mod cases;
mod challenge;
#[cfg(test)]
mod check_tests;
mod enrol;
mod otp;
mod session;

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::abi::{Instance, Table};
use crate::error::ProviderError;
use crate::provider::Provider;

pub use otp::code_for_uri;
use session::{Maker, Session};

/// Name of the host's check that the library loads (the suite itself never loads a library).
pub const LOAD: &str = "load";
/// Name of the check that the provider accepts [`Options::settings`].
pub const CREATE: &str = "create";
/// Name of the check of `info`.
pub const INFO: &str = "info";
/// Name of the check of `health`.
pub const HEALTH: &str = "health";
/// Name of the check that an unknown setting is refused with a `config` error naming it.
pub const UNKNOWN_SETTINGS: &str = "unknown settings rejected";
/// Name of the check that a setting of the wrong type is refused with a `config` error naming it.
pub const WRONG_SETTINGS: &str = "wrong setting values rejected";
/// Name of the check that settings that are not a JSON object are `bad_input`.
pub const SETTINGS_NOT_OBJECT: &str = "settings not an object rejected";
/// Name of the check of the raw functions' edge cases (null pointers), in process only.
pub const ABI_EDGES: &str = "abi edge cases";
/// Name of the check that malformed requests (not JSON, not an object, bad state) are `bad_input`.
pub const GARBAGE: &str = "garbage is bad input";
/// Name of the check that a request without a string `op` is `bad_input`.
pub const MISSING_OP: &str = "missing or non-string op is bad input";
/// Name of the check that an unknown `op` is `unsupported`, never `bad_input`.
pub const UNSUPPORTED_OP: &str = "unknown op is unsupported";
/// Name of the check that every field of every request, of the wrong type, is `bad_input`.
pub const WRONG_TYPES: &str = "wrong field types are bad input";
/// Name of the check that huge strings and arrays and deep nesting are survived.
pub const HUGE: &str = "huge and deep input survived";
/// Name of the check that bytes that are not UTF-8 are `bad_input`.
pub const NOT_UTF8: &str = "bytes that are not UTF-8 are bad input";
/// Name of the check that any valid JSON is read alike (whitespace, escapes, key order).
pub const ANY_JSON: &str = "any valid JSON accepted";
/// Name of the check that a request is read by its length, not up to a NUL.
pub const BY_LENGTH: &str = "requests read by length";
/// Name of the check of enrolment (driven to a credential, or `unsupported` when none is needed).
pub const ENROLMENT: &str = "enrolment";
/// Name of the check that an input of a kind the prompt does not take is `bad_input`.
pub const WRONG_INPUT: &str = "wrong input kinds are bad input";
/// Name of the check that a challenge's state is refused for another request.
pub const STATE_BOUND: &str = "state bound to its request";
/// Name of the check that a challenge, answered by the scripted responder, ends in a verdict.
pub const CHALLENGE: &str = "challenge reaches a verdict";
/// Name of the check that the provider judges time by `ctx.now`, not its own clock.
pub const CLOCK: &str = "ctx.now is the clock";
/// Name of the check that a challenge's state works on another instance.
pub const ROUND_TRIP: &str = "state survives a round trip";
/// Name of the check that `cancel` is idempotent.
pub const CANCEL: &str = "cancel is idempotent";
/// Name of the check that concurrent calls answer alike.
pub const CONCURRENT: &str = "concurrent calls are consistent";
/// Name of the check that every answer is a valid message.
pub const VALID_MESSAGES: &str = "answers are valid messages";
/// Name of the check that no error, denial or status message holds a secret the suite knows.
pub const NO_SECRETS: &str = "no secrets in messages";
/// Name of the host's check that the plugin writes nothing to stdout (in process only).
pub const QUIET_STDOUT: &str = "nothing written to stdout";

/// Every check, in the order a report lists them, with the rule of the contract it holds.
pub const CHECKS: &[(&str, &str)] = &[
    (
        LOAD,
        "the library exports `rolegate_provider_v1`, returning a table of ABI v1 at least 40 bytes long (the host's loader)",
    ),
    (
        CREATE,
        "create accepts the settings given, answers within the deadline and writes an instance",
    ),
    (
        INFO,
        "info is a well-formed ProviderInfo, the same at every call; answer_ahead only with responder `code`",
    ),
    (HEALTH, "health answers a Health within the deadline"),
    (
        UNKNOWN_SETTINGS,
        "a settings key the provider does not know is refused with a `config` error naming it",
    ),
    (
        WRONG_SETTINGS,
        "a settings value of the wrong type is refused with a `config` error naming its key",
    ),
    (
        SETTINGS_NOT_OBJECT,
        "settings that are not a JSON object are refused with `bad_input`",
    ),
    (
        ENROLMENT,
        "an enrolment's steps are `ask` then `done`, approved with the new credential; a provider that needs none answers both operations `unsupported`",
    ),
    (
        ABI_EDGES,
        "create with a null instance pointer answers bad_input; a refused create leaves no instance; destroy(NULL) and free_buffer({NULL,0}) are harmless; a NULL request is bad_input",
    ),
    (
        GARBAGE,
        "a request that is not JSON, not an object, or carries a state that is not the provider's is `bad_input`",
    ),
    (
        MISSING_OP,
        "a request without a string `op` is `bad_input`, never a crash",
    ),
    (
        UNSUPPORTED_OP,
        "an `op` the provider does not know is `unsupported`, never `bad_input` or a crash",
    ),
    (
        WRONG_TYPES,
        "every field of every request, given a value of the wrong type, is `bad_input`",
    ),
    (
        HUGE,
        "huge strings and arrays and deep nesting get a valid answer within the deadline: no crash, no hang, no `internal`",
    ),
    (
        NOT_UTF8,
        "a request with bytes that are not UTF-8 is `bad_input`",
    ),
    (
        ANY_JSON,
        "any valid JSON is read alike: whitespace, escapes such as \\u00e9, the `op` anywhere in its object",
    ),
    (
        BY_LENGTH,
        "a request is read by its length: it is not NUL-terminated, and a NUL inside a string is part of it",
    ),
    (
        WRONG_INPUT,
        "an input of a kind the prompt does not take is `bad_input`",
    ),
    (
        STATE_BOUND,
        "a challenge's state handed back with another request_id is `bad_input`",
    ),
    (
        CHALLENGE,
        "a challenge answered as a user would ends in a verdict; the right code is approved",
    ),
    (
        CLOCK,
        "time is judged by `ctx.now`, not the provider's own clock",
    ),
    (
        ROUND_TRIP,
        "no per-challenge memory: a state continues on a new instance, and a tampered state is never approved",
    ),
    (
        CANCEL,
        "cancel is idempotent: a second cancel answers as the first",
    ),
    (
        CONCURRENT,
        "call is safe from many threads at once on one instance, and they get the same answers",
    ),
    (
        VALID_MESSAGES,
        "every answer is one response envelope of the documented shape",
    ),
    (
        NO_SECRETS,
        "no error, denial or status message holds a code, a key or a credential's data",
    ),
    (
        QUIET_STDOUT,
        "the plugin writes nothing to stdout (in process, it is the host's)",
    ),
];

/// The setting the suite adds to check that unknown settings are refused.
pub const UNKNOWN_KEY: &str = "rolegate_check_unknown_key";
/// The operation the suite sends to check that unknown operations are `unsupported`.
pub const UNKNOWN_OP: &str = "rolegate_check_unknown_op";

/// Something that can create provider instances: a loaded library, a worker process, or a Table.
pub trait Target: Sync {
    /// A fresh instance from settings (a JSON object, or anything else to check a refusal); a
    /// refused configuration is an Err.
    fn create(&self, settings: &Value) -> Result<Box<dyn Endpoint>, ProviderError>;

    /// The ABI table itself, when the target calls one in this process ([`ABI_EDGES`] needs it).
    fn table(&self) -> Option<Table> {
        None
    }
}

/// One live instance.
pub trait Endpoint: Send + Sync {
    /// Sends one raw JSON request, returns the raw JSON response bytes; Err only for a transport failure (worker crashed, deadline passed).
    fn call_raw(&self, request: &[u8]) -> Result<Vec<u8>, ProviderError>;
}

impl Target for Table {
    fn create(&self, settings: &Value) -> Result<Box<dyn Endpoint>, ProviderError> {
        let bytes = serde_json::to_vec(settings).map_err(|e| {
            ProviderError::internal(format!("the settings could not be encoded: {e}"))
        })?;
        let instance = Table::create(self, &bytes)?;
        Ok(Box::new(instance))
    }

    fn table(&self) -> Option<Table> {
        Some(*self)
    }
}

impl Endpoint for Instance {
    fn call_raw(&self, request: &[u8]) -> Result<Vec<u8>, ProviderError> {
        Ok(Instance::call_raw(self, request))
    }
}

/// A call that crashed the process running an earlier pass of the suite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crashed {
    /// The call's label, as [`Observer::call_started`] gave it (or a check's name, for a crash
    /// outside any call).
    pub label: String,
    /// How the process ended ("killed by signal 11 (SIGSEGV)").
    pub how: String,
}

/// How the suite runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The settings every instance is created with (a JSON object).
    pub settings: Value,
    /// How long any one call may take before it counts as a hang.
    pub deadline: Duration,
    /// How many threads call at once in the concurrency check.
    pub threads: usize,
    /// Answers for enrolment prompts the suite cannot work out itself (a PIN the user chooses,
    /// a code only the vendor's test device shows), in the order the prompts come.
    pub enrol_codes: Vec<String>,
    /// Calls that crashed the process running an earlier pass: not made again, failed.
    pub crashed: Vec<Crashed>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            settings: Value::Object(serde_json::Map::new()),
            deadline: Duration::from_secs(5),
            threads: 16,
            enrol_codes: Vec::new(),
            crashed: Vec::new(),
        }
    }
}

/// Told what the suite does as it does it, so a crash can be pinned on the call that caused it.
pub trait Observer: Sync {
    /// A check begins.
    fn check_started(&self, name: &str) {
        let _ = name;
    }
    /// A call to the provider begins; `label` names it the same way in every pass.
    fn call_started(&self, label: &str) {
        let _ = label;
    }
    /// A call ended: answered, failed, or abandoned as a hang.
    fn call_ended(&self, label: &str) {
        let _ = label;
    }
    /// A check ended with this result.
    fn check_ended(&self, check: &Check) {
        let _ = check;
    }
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl Observer for Quiet {}

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The provider honours this part of the contract.
    Pass,
    /// The provider breaks this part of the contract.
    Fail,
    /// The check could not be run; the detail says why. Not a failure, but not a pass either.
    Skip,
}

/// One check: its name, its outcome and what was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// The check's name (one of the constants of this module).
    pub name: String,
    /// Whether it passed.
    pub outcome: Outcome,
    /// What was seen (or, for a skip, why it could not run), for an admin or a vendor.
    pub detail: String,
}

impl Check {
    /// A check with this outcome.
    pub fn new(name: &str, outcome: Outcome, detail: impl Into<String>) -> Self {
        Self {
            name: name.to_string(),
            outcome,
            detail: detail.into(),
        }
    }
}

/// The results of a run, in the order the checks ran.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Every check, passed, failed or skipped.
    pub checks: Vec<Check>,
}

/// How many checks ended each way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Passed.
    pub ok: usize,
    /// Failed.
    pub failed: usize,
    /// Skipped.
    pub skipped: usize,
}

impl Report {
    /// Whether no check failed (skipped checks do not count as failures).
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.outcome != Outcome::Fail)
    }

    /// Whether every check ran and none failed: no failure and no skip.
    pub fn passed_strict(&self) -> bool {
        self.checks.iter().all(|c| c.outcome == Outcome::Pass)
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> + '_ {
        self.checks.iter().filter(|c| c.outcome == Outcome::Fail)
    }

    /// The skipped checks.
    pub fn skips(&self) -> impl Iterator<Item = &Check> + '_ {
        self.checks.iter().filter(|c| c.outcome == Outcome::Skip)
    }

    /// The check of that name, when it ran.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// How many checks passed, failed and were skipped.
    pub fn counts(&self) -> Counts {
        let count = |o| self.checks.iter().filter(|c| c.outcome == o).count();
        Counts {
            ok: count(Outcome::Pass),
            failed: count(Outcome::Fail),
            skipped: count(Outcome::Skip),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .checks
            .iter()
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(0);
        for check in &self.checks {
            let mark = match check.outcome {
                Outcome::Pass => "ok",
                Outcome::Fail => "FAIL",
                Outcome::Skip => "skip",
            };
            let mut lines = check.detail.lines();
            writeln!(
                f,
                "  {mark:<4}  {:<width$}  {}",
                check.name,
                lines.next().unwrap_or("")
            )?;
            for line in lines {
                writeln!(f, "  {:<4}  {:<width$}  {line}", "", "")?;
            }
        }
        let skips: Vec<&Check> = self.skips().collect();
        if !skips.is_empty() {
            writeln!(f, "skipped, and why:")?;
            for check in skips {
                let reason = check.detail.lines().next().unwrap_or("");
                writeln!(f, "  - {}: {reason}", check.name)?;
            }
        }
        let counts = self.counts();
        // Never "N passed, N failed": CI reads that form as a test runner's summary.
        write!(
            f,
            "checks: {} ok, {} failed, {} skipped",
            counts.ok, counts.failed, counts.skipped
        )
    }
}

/// Runs every check against a target.
pub fn run(target: &dyn Target, options: &Options) -> Report {
    run_observed(target, options, &Quiet)
}

/// Runs every check against a target, telling `observer` of each check and call.
pub fn run_observed(target: &dyn Target, options: &Options, observer: &dyn Observer) -> Report {
    Session::new(Maker::Borrowed(target), options, observer).run()
}

/// Runs every check against a table in this process, `create` bounded by the deadline too.
pub fn check_table(table: Table, options: &Options, observer: &dyn Observer) -> Report {
    Session::new(Maker::Table(table), options, observer).run()
}

/// Runs every check against provider `P`, through the real C ABI but without loading a library.
pub fn check_provider<P: Provider>(options: &Options) -> Report {
    check_table(Table::for_provider::<P>(), options, &Quiet)
}
