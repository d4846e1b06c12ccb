//! The conformance suite: the contract checks a provider must pass.
//!
//! The host's `rolegate provider check <library>` runs them against a loaded plugin (in process
//! or in a worker process), and a vendor can run them in their own `cargo test`:
//!
//! ```ignore
//! #[test]
//! fn my_provider_conforms() {
//!     let report = rolegate_sdk::conformance::check_provider::<MyProvider>(&Default::default());
//!     assert!(report.passed(), "{report}");
//! }
//! ```
//!
//! Every call the suite makes runs on its own thread and is awaited for at most
//! [`Options::deadline`]: a call that does not answer in time fails its check as a hang, and its
//! thread is left behind rather than blocking the suite. The one exception is
//! [`Target::create`] through [`run`]: the target is only borrowed, so `create` runs on the
//! caller's thread and an answer past the deadline fails afterwards (a target that enforces its
//! own deadline, such as a worker process, never blocks). [`check_provider`] bounds `create`
//! too.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::abi::{Instance, Table};
use crate::bytes::Bytes;
use crate::error::{ErrorKind, ProviderError};
use crate::message::{
    ChallengeContext, DenyReason, EnrollContext, Health, Input, Prompt, ProviderInfo, Request,
    Response, Step, UserContext, Verdict,
};
use crate::provider::Provider;

/// Name of the check that the provider accepts [`Options::settings`].
pub const CREATE: &str = "create";
/// Name of the check of `info`.
pub const INFO: &str = "info";
/// Name of the check of `health`.
pub const HEALTH: &str = "health";
/// Name of the check that an unknown setting is refused with a `config` error naming it.
pub const UNKNOWN_SETTINGS: &str = "unknown settings rejected";
/// Name of the check that malformed requests are answered with `bad_input`.
pub const GARBAGE: &str = "garbage is bad input";
/// Name of the check that a challenge's state works on another instance.
pub const ROUND_TRIP: &str = "state survives a round trip";
/// Name of the check that `cancel` is idempotent.
pub const CANCEL: &str = "cancel is idempotent";
/// Name of the check that concurrent calls answer alike.
pub const CONCURRENT: &str = "concurrent calls are consistent";
/// Name of the check that every answer is a valid message.
pub const VALID_MESSAGES: &str = "answers are valid messages";

/// The setting the suite adds to check that unknown settings are refused.
pub const UNKNOWN_KEY: &str = "rolegate_check_unknown_key";
/// The operation the suite sends to check that unknown operations are `unsupported`.
pub const UNKNOWN_OP: &str = "rolegate_check_unknown_op";

/// Something that can create provider instances: a loaded library, a worker process, or a Table.
pub trait Target: Sync {
    /// A fresh instance from settings (a JSON object); a refused configuration is an Err.
    fn create(&self, settings: &Value) -> Result<Box<dyn Endpoint>, ProviderError>;
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
}

impl Endpoint for Instance {
    fn call_raw(&self, request: &[u8]) -> Result<Vec<u8>, ProviderError> {
        Ok(Instance::call_raw(self, request))
    }
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
}

impl Default for Options {
    fn default() -> Self {
        Self {
            settings: Value::Object(serde_json::Map::new()),
            deadline: Duration::from_secs(5),
            threads: 16,
        }
    }
}

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The provider honours this part of the contract.
    Pass,
    /// The provider breaks this part of the contract.
    Fail,
    /// The check could not be run (no instance, nothing to test); not a failure.
    Skip,
}

/// One check: its name, its outcome and what was seen.
#[derive(Debug, Clone)]
pub struct Check {
    /// The check's name (one of the constants of this module).
    pub name: &'static str,
    /// Whether it passed.
    pub outcome: Outcome,
    /// What was seen, for an admin or a vendor.
    pub detail: String,
}

/// The results of a run, in the order the checks ran.
#[derive(Debug, Clone)]
pub struct Report {
    /// Every check, passed, failed or skipped.
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether no check failed (skipped checks do not count as failures).
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.outcome != Outcome::Fail)
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> + '_ {
        self.checks.iter().filter(|c| c.outcome == Outcome::Fail)
    }

    /// The check of that name, when it ran.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    fn count(&self, outcome: Outcome) -> usize {
        self.checks.iter().filter(|c| c.outcome == outcome).count()
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
        // Never "N passed, N failed": CI reads that form as a test runner's summary.
        write!(
            f,
            "checks: {} ok, {} failed, {} skipped",
            self.count(Outcome::Pass),
            self.count(Outcome::Fail),
            self.count(Outcome::Skip)
        )
    }
}

/// Runs every check against a target.
pub fn run(target: &dyn Target, options: &Options) -> Report {
    Session::new(Maker::Borrowed(target), options).run()
}

/// Runs every check against provider `P`, through the real C ABI but without loading a library.
pub fn check_provider<P: Provider>(options: &Options) -> Report {
    Session::new(Maker::Table(Table::for_provider::<P>()), options).run()
}

// --- results of single calls -------------------------------------------------------------

type Shared = Arc<dyn Endpoint>;

/// What became of a `create`.
enum Made {
    Ok(Shared),
    Err(ProviderError),
    Hang(Duration),
    Late(Duration, Duration),
}

impl Made {
    fn describe(&self) -> String {
        match self {
            Made::Ok(_) => "Ok".to_string(),
            Made::Err(e) => error_text(e),
            Made::Hang(d) => format!("create did not answer within {}: a hang", human(*d)),
            Made::Late(took, d) => format!(
                "create answered after {}, past the deadline of {}",
                human(*took),
                human(*d)
            ),
        }
    }
}

/// What became of one call.
enum Reply<T> {
    Ok(T),
    Err(ProviderError),
    Hang(Duration),
    Transport(ProviderError),
    Invalid(String),
}

impl<T> Reply<T> {
    fn describe_with(&self, ok: impl FnOnce(&T) -> String) -> String {
        match self {
            Reply::Ok(v) => ok(v),
            Reply::Err(e) => error_text(e),
            Reply::Hang(d) => format!("did not answer within {}: a hang", human(*d)),
            Reply::Transport(e) => format!("a transport failure ({})", error_text(e)),
            Reply::Invalid(why) => format!("an invalid answer ({why})"),
        }
    }

    fn error_kind(&self) -> Option<ErrorKind> {
        match self {
            Reply::Err(e) => Some(e.kind),
            _ => None,
        }
    }

    /// A panic, a hang, a transport failure or an invalid answer: never acceptable.
    fn broken(&self) -> bool {
        match self {
            Reply::Ok(_) => false,
            Reply::Err(e) => e.kind == ErrorKind::Panicked,
            Reply::Hang(_) | Reply::Transport(_) | Reply::Invalid(_) => true,
        }
    }

    /// The answer's shape: `ok` (refined by `ok`), an error kind, or what went wrong.
    fn shape_with(&self, ok: impl FnOnce(&T) -> String) -> String {
        match self {
            Reply::Ok(v) => ok(v),
            Reply::Err(e) => format!("{} error", e.kind),
            Reply::Hang(_) => "a hang".to_string(),
            Reply::Transport(_) => "a transport failure".to_string(),
            Reply::Invalid(_) => "an invalid answer".to_string(),
        }
    }
}

impl Reply<Step> {
    fn describe(&self) -> String {
        self.describe_with(step_text)
    }
}

impl Reply<()> {
    fn describe(&self) -> String {
        self.describe_with(|()| "Ok".to_string())
    }
}

impl Reply<Value> {
    fn describe(&self) -> String {
        self.describe_with(|_| "Ok".to_string())
    }
}

fn error_text(e: &ProviderError) -> String {
    format!("{} error: {}", e.kind, clip(&e.message))
}

fn step_text(step: &Step) -> String {
    match step {
        Step::Ask { prompt, .. } => format!("Ask ({} prompt)", wire(&prompt.kind())),
        Step::Wait { .. } => "Wait".to_string(),
        Step::Done { verdict } => format!("Done: {}", verdict_text(verdict)),
    }
}

fn verdict_text(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Approved { .. } => "approved".to_string(),
        Verdict::Denied { reason, .. } => format!("denied ({})", wire(reason)),
    }
}

/// The shape concurrent answers must share: step type, verdict outcome.
fn step_shape(step: &Step) -> String {
    match step {
        Step::Ask { prompt, .. } => format!("Ask ({} prompt)", wire(&prompt.kind())),
        Step::Wait { .. } => "Wait".to_string(),
        Step::Done {
            verdict: Verdict::Approved { .. },
        } => "Done: approved".to_string(),
        Step::Done {
            verdict: Verdict::Denied { .. },
        } => "Done: denied".to_string(),
    }
}

/// A value's name on the wire (`wrong_answer`, `code`).
fn wire<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_string(),
    }
}

fn clip(text: &str) -> String {
    const MAX: usize = 200;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let mut out: String = text.chars().take(MAX).collect();
        out.push('…');
        out
    }
}

fn excerpt(bytes: &[u8]) -> String {
    const MAX: usize = 120;
    let mut out = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]).into_owned();
    if bytes.len() > MAX {
        out.push('…');
    }
    out
}

fn human(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

// --- calls under a deadline ----------------------------------------------------------------

enum Raw {
    Answer(Vec<u8>),
    Transport(ProviderError),
    Hang,
}

/// Calls on a thread of its own and waits at most `deadline`; a late thread is left behind.
fn call_within(endpoint: &Shared, request: Vec<u8>, deadline: Duration) -> Raw {
    let (tx, rx) = mpsc::channel();
    let endpoint = Arc::clone(endpoint);
    let spawned = thread::Builder::new()
        .name("rolegate-check-call".into())
        .spawn(move || {
            let _ = tx.send(endpoint.call_raw(&request));
        });
    if let Err(e) = spawned {
        return Raw::Transport(ProviderError::internal(format!(
            "the check could not start a thread: {e}"
        )));
    }
    match rx.recv_timeout(deadline) {
        Ok(Ok(bytes)) => Raw::Answer(bytes),
        Ok(Err(e)) => Raw::Transport(e),
        Err(RecvTimeoutError::Timeout) => Raw::Hang,
        Err(RecvTimeoutError::Disconnected) => Raw::Transport(ProviderError::new(
            ErrorKind::Panicked,
            "the endpoint panicked while calling",
        )),
    }
}

/// Drops an instance (the plugin's `destroy`) on a thread of its own; false if it hangs.
fn dispose(endpoint: Shared, deadline: Duration) -> bool {
    let (tx, rx) = mpsc::channel();
    let spawned = thread::Builder::new()
        .name("rolegate-check-destroy".into())
        .spawn(move || {
            drop(endpoint);
            let _ = tx.send(());
        });
    match spawned {
        Ok(_) => !matches!(rx.recv_timeout(deadline), Err(RecvTimeoutError::Timeout)),
        Err(_) => false,
    }
}

/// Where instances come from: a borrowed target (create runs inline) or a table (bounded).
enum Maker<'a> {
    Borrowed(&'a dyn Target),
    Table(Table),
}

// --- requests --------------------------------------------------------------------------------

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Random bytes from std alone: each `RandomState` is freshly keyed.
pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut out = Vec::with_capacity(n + 8);
    let mut counter = 0u64;
    while out.len() < n {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(counter);
        hasher.write_u128(nanos);
        out.extend_from_slice(&hasher.finish().to_le_bytes());
        counter += 1;
    }
    out.truncate(n);
    out
}

fn user() -> UserContext {
    UserContext {
        account: "rolegate-check".into(),
        display_name: "Rolegate Check".into(),
        phone: Some("+14255550100".into()),
        email: Some("rolegate-check@example.invalid".into()),
    }
}

fn challenge_ctx(request_id: &str) -> ChallengeContext {
    ChallengeContext {
        user: user(),
        role: "rolegate-check-role".into(),
        request_id: request_id.into(),
        credentials: Vec::new(),
        origin: None,
        now: now(),
    }
}

fn encode(request: &Request) -> Vec<u8> {
    serde_json::to_vec(request).unwrap_or_default()
}

fn code(digits: usize) -> Input {
    Input::Code {
        code: "0".repeat(digits),
    }
}

/// A well-formed but (almost surely) wrong answer to a prompt.
fn probe_input(prompt: &Prompt) -> Input {
    match prompt {
        Prompt::Code { length, .. } => code(length.map_or(6, usize::from).max(1)),
        Prompt::Phone { .. } | Prompt::Display { .. } => Input::Acknowledge,
        Prompt::Webauthn { .. } => Input::Json {
            value: serde_json::json!({
                "id": "cm9sZWdhdGUtY2hlY2s",
                "rawId": "cm9sZWdhdGUtY2hlY2s",
                "type": "public-key",
                "response": {}
            }),
        },
        Prompt::Smartcard { .. } => Input::Bytes {
            data: Bytes(vec![0; 64]),
        },
    }
}

/// How a challenge goes on after its first step.
#[derive(Clone)]
enum Next {
    Continue(Input),
    Poll,
}

impl Next {
    fn op(&self) -> &'static str {
        match self {
            Next::Continue(_) => "challenge_continue",
            Next::Poll => "challenge_poll",
        }
    }

    fn request(&self, ctx: &ChallengeContext, state: &Bytes) -> Request {
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
struct Probe {
    ctx: ChallengeContext,
    state: Bytes,
    next: Next,
    /// Why the state is garbage, when challenge_start gave none.
    garbage: Option<String>,
    /// challenge_start itself broke (panic, hang, invalid answer).
    broken_start: Option<String>,
}

const NO_INSTANCE: &str = "no instance: create failed";
const NEEDS_ENROLMENT: &str = "needs enrolment; no credential to challenge";

fn check(name: &'static str, outcome: Outcome, detail: impl Into<String>) -> Check {
    Check {
        name,
        outcome,
        detail: detail.into(),
    }
}

fn pass(name: &'static str, detail: impl Into<String>) -> Check {
    check(name, Outcome::Pass, detail)
}

fn fail(name: &'static str, detail: impl Into<String>) -> Check {
    check(name, Outcome::Fail, detail)
}

fn skip(name: &'static str, detail: impl Into<String>) -> Check {
    check(name, Outcome::Skip, detail)
}

// --- the suite ---------------------------------------------------------------------------------

struct Session<'a> {
    maker: Maker<'a>,
    options: &'a Options,
    answers: AtomicUsize,
    invalid: Mutex<Vec<String>>,
}

impl<'a> Session<'a> {
    fn new(maker: Maker<'a>, options: &'a Options) -> Self {
        Self {
            maker,
            options,
            answers: AtomicUsize::new(0),
            invalid: Mutex::new(Vec::new()),
        }
    }

    fn deadline(&self) -> Duration {
        self.options.deadline
    }

    fn create(&self, settings: &Value) -> Made {
        let deadline = self.deadline();
        match &self.maker {
            Maker::Borrowed(target) => {
                let started = Instant::now();
                let result = catch_unwind(AssertUnwindSafe(|| target.create(settings)))
                    .unwrap_or_else(|_| {
                        Err(ProviderError::new(
                            ErrorKind::Panicked,
                            "the target panicked in create",
                        ))
                    });
                let took = started.elapsed();
                if took > deadline {
                    if let Ok(endpoint) = result {
                        dispose(Arc::from(endpoint), deadline);
                    }
                    return Made::Late(took, deadline);
                }
                match result {
                    Ok(endpoint) => Made::Ok(Arc::from(endpoint)),
                    Err(e) => Made::Err(e),
                }
            }
            Maker::Table(table) => {
                let table = *table;
                let settings = settings.clone();
                let (tx, rx) = mpsc::channel();
                let spawned = thread::Builder::new()
                    .name("rolegate-check-create".into())
                    .spawn(move || {
                        let _ = tx.send(<Table as Target>::create(&table, &settings));
                    });
                if let Err(e) = spawned {
                    return Made::Err(ProviderError::internal(format!(
                        "the check could not start a thread: {e}"
                    )));
                }
                match rx.recv_timeout(deadline) {
                    Ok(Ok(endpoint)) => Made::Ok(Arc::from(endpoint)),
                    Ok(Err(e)) => Made::Err(e),
                    Err(RecvTimeoutError::Timeout) => Made::Hang(deadline),
                    Err(RecvTimeoutError::Disconnected) => {
                        Made::Err(ProviderError::new(ErrorKind::Panicked, "create panicked"))
                    }
                }
            }
        }
    }

    fn dispose(&self, endpoint: Shared) -> bool {
        dispose(endpoint, self.deadline())
    }

    /// One call, decoded as the response of `op`; undecodable answers are recorded.
    fn call<T: DeserializeOwned>(
        &self,
        endpoint: &Shared,
        op: &'static str,
        request: Vec<u8>,
    ) -> Reply<T> {
        match call_within(endpoint, request, self.deadline()) {
            Raw::Hang => Reply::Hang(self.deadline()),
            Raw::Transport(e) => Reply::Transport(e),
            Raw::Answer(bytes) => {
                self.answers.fetch_add(1, Ordering::Relaxed);
                match serde_json::from_slice::<Response<T>>(&bytes) {
                    Ok(Response::Ok(value)) => Reply::Ok(value),
                    Ok(Response::Error(e)) => Reply::Err(e),
                    Err(e) => {
                        let why = format!("{op}: {e}, in `{}`", excerpt(&bytes));
                        self.invalid
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(why.clone());
                        Reply::Invalid(why)
                    }
                }
            }
        }
    }

    fn call_request<T: DeserializeOwned>(&self, endpoint: &Shared, request: &Request) -> Reply<T> {
        self.call(endpoint, request.op(), encode(request))
    }

    fn run(&self) -> Report {
        let mut checks = Vec::new();
        let main = match self.create(&self.options.settings) {
            Made::Ok(endpoint) => {
                checks.push(pass(CREATE, "settings accepted"));
                Some(endpoint)
            }
            Made::Err(e) => {
                checks.push(fail(
                    CREATE,
                    format!("the settings were refused: {}", error_text(&e)),
                ));
                None
            }
            other => {
                checks.push(fail(CREATE, other.describe()));
                None
            }
        };
        let Some(main) = main else {
            checks.push(skip(INFO, NO_INSTANCE));
            checks.push(skip(HEALTH, NO_INSTANCE));
            checks.push(self.check_unknown_settings());
            for name in [GARBAGE, ROUND_TRIP, CANCEL, CONCURRENT] {
                checks.push(skip(name, NO_INSTANCE));
            }
            checks.push(self.check_valid_messages());
            return Report { checks };
        };
        let (info_check, info) = self.check_info(&main);
        checks.push(info_check);
        checks.push(self.check_health(&main));
        checks.push(self.check_unknown_settings());
        checks.push(self.check_garbage(&main, info.as_ref()));
        checks.push(self.check_round_trip(info.as_ref()));
        let probe = self.probe(&main);
        // Concurrency first: cancelling first could change how the state is answered.
        let concurrent = self.check_concurrent(&main, &probe);
        checks.push(self.check_cancel(&main, &probe));
        checks.push(concurrent);
        self.dispose(main);
        checks.push(self.check_valid_messages());
        Report { checks }
    }

    fn check_info(&self, endpoint: &Shared) -> (Check, Option<ProviderInfo>) {
        let first: Reply<ProviderInfo> = self.call_request(endpoint, &Request::Info);
        let info = match first {
            Reply::Ok(info) => info,
            other => {
                let seen = other.describe_with(|_| String::new());
                return (
                    fail(INFO, format!("expected a ProviderInfo, got {seen}")),
                    None,
                );
            }
        };
        let mut problems = Vec::new();
        let id_ok = info
            .id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if info.id.is_empty() || info.id.len() > 64 || !id_ok {
            problems.push(format!(
                "id `{}` must be 1 to 64 lower-case ASCII letters, digits, `-` or `_`",
                clip(&info.id)
            ));
        }
        for (field, value) in [
            ("name", &info.name),
            ("version", &info.version),
            ("vendor", &info.vendor),
        ] {
            if value.trim().is_empty() {
                problems.push(format!("{field} is empty"));
            }
        }
        // An answer known before the challenge is one the user types (an app's code): a
        // WebAuthn assertion, a card's signature or a call answers the challenge itself.
        if info.answer_ahead && !info.takes_answer_ahead() {
            problems.push(format!(
                "answer_ahead is for answers the user types (responder `code`), not responder `{}`, whose answer depends on the challenge",
                wire(&info.responder)
            ));
        }
        let second: Reply<ProviderInfo> = self.call_request(endpoint, &Request::Info);
        match second {
            Reply::Ok(again) if again == info => {}
            Reply::Ok(again) => problems.push(format!(
                "info changed between two calls: {info:?} then {again:?}"
            )),
            other => problems.push(format!(
                "a second info call answered {}",
                other.describe_with(|_| String::new())
            )),
        }
        let check = if problems.is_empty() {
            pass(
                INFO,
                format!(
                    "{} {} by {} ({} factor, responder {})",
                    info.id,
                    info.version,
                    info.vendor,
                    wire(&info.factor),
                    wire(&info.responder)
                ),
            )
        } else {
            fail(INFO, problems.join("; "))
        };
        (check, Some(info))
    }

    fn check_health(&self, endpoint: &Shared) -> Check {
        let reply: Reply<Health> = self.call_request(endpoint, &Request::Health);
        match reply {
            Reply::Ok(health) if health.message.is_empty() => {
                pass(HEALTH, format!("status {}", wire(&health.status)))
            }
            Reply::Ok(health) => pass(
                HEALTH,
                format!("status {}: {}", wire(&health.status), clip(&health.message)),
            ),
            other => fail(
                HEALTH,
                format!(
                    "expected a health report, got {}",
                    other.describe_with(|_| String::new())
                ),
            ),
        }
    }

    fn check_unknown_settings(&self) -> Check {
        let Value::Object(mut settings) = self.options.settings.clone() else {
            return skip(UNKNOWN_SETTINGS, "the settings given are not a JSON object");
        };
        settings.insert(UNKNOWN_KEY.into(), Value::Bool(true));
        let expected = format!("expected a Config error naming `{UNKNOWN_KEY}`");
        match self.create(&Value::Object(settings)) {
            Made::Ok(endpoint) => {
                self.dispose(endpoint);
                fail(UNKNOWN_SETTINGS, format!("{expected}, got Ok"))
            }
            Made::Err(e) if e.kind == ErrorKind::Config && e.message.contains(UNKNOWN_KEY) => {
                pass(UNKNOWN_SETTINGS, format!("refused: {}", clip(&e.message)))
            }
            Made::Err(e) if e.kind == ErrorKind::Config => fail(
                UNKNOWN_SETTINGS,
                format!(
                    "{expected}, got a Config error that does not name it: {}",
                    clip(&e.message)
                ),
            ),
            other => fail(
                UNKNOWN_SETTINGS,
                format!("{expected}, got {}", other.describe()),
            ),
        }
    }

    fn check_garbage(&self, endpoint: &Shared, info: Option<&ProviderInfo>) -> Check {
        struct Case {
            what: &'static str,
            request: Vec<u8>,
            /// Decode the answer as a Step (the request itself is well-formed).
            step: bool,
            expect: ErrorKind,
            /// Also acceptable, with why.
            also: Option<(ErrorKind, &'static str)>,
        }
        let ctx = challenge_ctx("check-garbage");
        let garbage = || Bytes(random_bytes(48));
        let mut not_json = vec![0xff];
        not_json.extend(random_bytes(31));
        let start = encode(&Request::ChallengeStart { ctx: ctx.clone() });
        let truncated = start[..start.len() / 2].to_vec();
        let wrong_type = serde_json::json!({
            "op": "challenge_start",
            "ctx": {"user": {"account": "rolegate-check"}, "role": "rolegate-check-role",
                    "request_id": "check-garbage", "now": "soon"}
        });
        let needs_enrolment = info.is_some_and(|i| i.needs_enrolment);
        let enroll_also = (!needs_enrolment).then_some((
            ErrorKind::Unsupported,
            "enroll_continue answered unsupported (the provider needs no enrolment)",
        ));
        let plain = |what, request: Vec<u8>| Case {
            what,
            request,
            step: false,
            expect: ErrorKind::BadInput,
            also: None,
        };
        let cases = vec![
            plain("random bytes", not_json),
            plain("JSON that is not an object", br#"[{"op":"info"}]"#.to_vec()),
            plain("truncated JSON", truncated),
            plain(
                "a field of the wrong type",
                serde_json::to_vec(&wrong_type).unwrap_or_default(),
            ),
            plain(
                "challenge_continue without ctx",
                br#"{"op":"challenge_continue"}"#.to_vec(),
            ),
            Case {
                what: "challenge_continue with a garbage state",
                request: encode(&Request::ChallengeContinue {
                    ctx: ctx.clone(),
                    state: garbage(),
                    input: code(6),
                }),
                step: true,
                expect: ErrorKind::BadInput,
                also: None,
            },
            Case {
                what: "challenge_poll with a garbage state",
                request: encode(&Request::ChallengePoll {
                    ctx: ctx.clone(),
                    state: garbage(),
                }),
                step: true,
                expect: ErrorKind::BadInput,
                also: None,
            },
            Case {
                what: "enroll_continue with a garbage state",
                request: encode(&Request::EnrollContinue {
                    ctx: EnrollContext {
                        user: user(),
                        credentials: Vec::new(),
                        origin: None,
                        now: now(),
                    },
                    state: garbage(),
                    input: code(6),
                }),
                step: true,
                expect: ErrorKind::BadInput,
                also: enroll_also,
            },
            Case {
                what: "an unknown op",
                request: format!(r#"{{"op":"{UNKNOWN_OP}"}}"#).into_bytes(),
                step: false,
                expect: ErrorKind::Unsupported,
                also: Some((
                    ErrorKind::BadInput,
                    "the unknown op answered bad_input; the contract asks for unsupported",
                )),
            },
        ];
        let total = cases.len();
        let mut failures = Vec::new();
        let mut notes = Vec::new();
        for case in cases {
            let (kind, hang, seen) = if case.step {
                let reply: Reply<Step> = self.call(endpoint, case.what, case.request);
                (
                    reply.error_kind(),
                    matches!(reply, Reply::Hang(_)),
                    reply.describe(),
                )
            } else {
                let reply: Reply<Value> = self.call(endpoint, case.what, case.request);
                (
                    reply.error_kind(),
                    matches!(reply, Reply::Hang(_)),
                    reply.describe(),
                )
            };
            match (kind, case.also) {
                (Some(k), _) if k == case.expect => {}
                (Some(k), Some((also, why))) if k == also => notes.push(why),
                _ if hang => failures.push(format!("{}: {seen}", case.what)),
                _ => failures.push(format!(
                    "{}: expected a {} error, got {seen}",
                    case.what, case.expect
                )),
            }
        }
        if failures.is_empty() {
            let mut detail = format!(
                "{} malformed requests answered bad_input, the unknown op unsupported",
                total - 1
            );
            for note in notes {
                detail.push_str("; ");
                detail.push_str(note);
            }
            pass(GARBAGE, detail)
        } else {
            fail(GARBAGE, failures.join("; "))
        }
    }

    fn follow(
        &self,
        endpoint: &Shared,
        ctx: &ChallengeContext,
        state: &Bytes,
        next: &Next,
    ) -> Reply<Step> {
        self.call(endpoint, next.op(), encode(&next.request(ctx, state)))
    }

    fn check_round_trip(&self, info: Option<&ProviderInfo>) -> Check {
        let needs_enrolment = info.is_some_and(|i| i.needs_enrolment);
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
        let ctx = challenge_ctx("check-1");
        let start: Reply<Step> =
            self.call_request(&first, &Request::ChallengeStart { ctx: ctx.clone() });
        let (state, next) = match start {
            Reply::Ok(Step::Ask { prompt, state, .. }) => {
                (state, Next::Continue(probe_input(&prompt)))
            }
            Reply::Ok(Step::Wait { state, .. }) => (state, Next::Poll),
            Reply::Ok(Step::Done { verdict }) => {
                self.dispose(first);
                return match verdict {
                    Verdict::Denied {
                        reason: DenyReason::NotEnrolled,
                        ..
                    } if needs_enrolment => skip(ROUND_TRIP, NEEDS_ENROLMENT),
                    verdict => skip(
                        ROUND_TRIP,
                        format!(
                            "challenge_start decided at once ({}); no state to carry to another instance",
                            verdict_text(&verdict)
                        ),
                    ),
                };
            }
            other => {
                self.dispose(first);
                let seen = other.describe();
                return match other.error_kind() {
                    _ if other.broken() => fail(ROUND_TRIP, format!("challenge_start: {seen}")),
                    Some(_) if needs_enrolment => skip(ROUND_TRIP, NEEDS_ENROLMENT),
                    Some(ErrorKind::Unavailable) => skip(
                        ROUND_TRIP,
                        format!("challenge_start answered {seen}; cannot test the round trip"),
                    ),
                    _ => fail(
                        ROUND_TRIP,
                        format!(
                            "challenge_start with a plausible context: expected a step, got {seen}"
                        ),
                    ),
                };
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
        let reply = self.follow(&second, &ctx, &state, &next);
        match &reply {
            Reply::Ok(step) => seen.push(format!(
                "a new instance continued the challenge ({op}: {})",
                step_text(step)
            )),
            Reply::Err(e) if matches!(e.kind, ErrorKind::BadInput | ErrorKind::Internal) => {
                // Control: is it the state from elsewhere, or the probe answer itself?
                let own: Reply<Step> =
                    self.call_request(&second, &Request::ChallengeStart { ctx: ctx.clone() });
                let control = match own {
                    Reply::Ok(Step::Ask { prompt, state, .. })
                        if matches!(next, Next::Continue(_)) =>
                    {
                        Some(self.follow(
                            &second,
                            &ctx,
                            &state,
                            &Next::Continue(probe_input(&prompt)),
                        ))
                    }
                    Reply::Ok(Step::Wait { state, .. }) if matches!(next, Next::Poll) => {
                        Some(self.follow(&second, &ctx, &state, &Next::Poll))
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
            let reply = self.follow(&second, &ctx, &Bytes(tampered), &next);
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
    fn probe(&self, endpoint: &Shared) -> Probe {
        let ctx = challenge_ctx("check-2");
        let start: Reply<Step> =
            self.call_request(endpoint, &Request::ChallengeStart { ctx: ctx.clone() });
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

    fn check_cancel(&self, endpoint: &Shared, probe: &Probe) -> Check {
        let request = Request::Cancel {
            ctx: probe.ctx.clone(),
            state: probe.state.clone(),
        };
        let first: Reply<()> = self.call_request(endpoint, &request);
        let second: Reply<()> = self.call_request(endpoint, &request);
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

    fn check_concurrent(&self, endpoint: &Shared, probe: &Probe) -> Check {
        let wanted = self.options.threads.max(1);
        let info_request = encode(&Request::Info);
        let follow_request = encode(&probe.next.request(&probe.ctx, &probe.state));
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
        let answered = first_shape.map_or(String::new(), |(_, d)| d);
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

    fn check_valid_messages(&self) -> Check {
        let answers = self.answers.load(Ordering::Relaxed);
        let invalid = self
            .invalid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if answers == 0 {
            skip(VALID_MESSAGES, "no answers to check")
        } else if invalid.is_empty() {
            pass(VALID_MESSAGES, format!("{answers} answers, all valid"))
        } else {
            fail(
                VALID_MESSAGES,
                format!(
                    "{} of {answers} answers are not valid messages: {}",
                    invalid.len(),
                    invalid.join("; ")
                ),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{FactorKind, PromptKind};
    use crate::settings::Settings;
    use serde::Deserialize;
    use std::collections::HashMap;

    const GOOD: u8 = 0;
    const ACCEPTS_UNKNOWN: u8 = 1;
    const PANICS: u8 = 2;
    const IN_MEMORY: u8 = 3;
    const INTERNAL: u8 = 4;
    const HANGS: u8 = 5;
    const ENROLS: u8 = 6;
    const AHEAD_NOT_TYPED: u8 = 7;

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

    impl<const FLAW: u8> Demo<FLAW> {
        fn expected_code(
            &self,
            ctx: &ChallengeContext,
            state: &[u8],
        ) -> Result<String, ProviderError> {
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
                Ok(s) if s.request_id == ctx.request_id => Ok(s.nonce[..6].to_string()),
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
            if FLAW != ACCEPTS_UNKNOWN && !settings.0.is_empty() {
                let keys: Vec<&str> = settings.0.keys().map(String::as_str).collect();
                return Err(ProviderError::config(format!(
                    "unknown settings: {}",
                    keys.join(", ")
                )));
            }
            Ok(Self {
                memory: Mutex::default(),
            })
        }

        fn info(&self) -> ProviderInfo {
            ProviderInfo {
                id: "demo".into(),
                name: "Demo".into(),
                version: "1.0.0".into(),
                vendor: "rolegate tests".into(),
                factor: FactorKind::Code,
                needs_enrolment: FLAW == ENROLS,
                needs_phone: false,
                responder: if FLAW == AHEAD_NOT_TYPED {
                    PromptKind::Webauthn
                } else {
                    PromptKind::Code
                },
                quick: false,
                answer_ahead: FLAW == AHEAD_NOT_TYPED,
                sdk_version: String::new(),
            }
        }

        fn enroll_continue(
            &self,
            _ctx: &EnrollContext,
            state: &[u8],
            _input: &Input,
        ) -> Result<Step, ProviderError> {
            if FLAW != ENROLS {
                return Err(ProviderError::unsupported("no enrolment"));
            }
            let _: DemoState = serde_json::from_slice(state)
                .map_err(|_| ProviderError::bad_input("the state is not demo's"))?;
            Err(ProviderError::bad_input("nothing to enrol"))
        }

        fn challenge_start(&self, ctx: &ChallengeContext) -> Result<Step, ProviderError> {
            if FLAW == ENROLS && ctx.credentials.is_empty() {
                return Ok(Step::Done {
                    verdict: Verdict::Denied {
                        reason: DenyReason::NotEnrolled,
                        message: "enrol first".into(),
                    },
                });
            }
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
            Ok(Step::Ask {
                prompt: Prompt::Code {
                    message: "Type the code".into(),
                    length: Some(6),
                },
                state: Bytes(state),
                expires_in: 60,
                reference: None,
            })
        }

        fn challenge_continue(
            &self,
            ctx: &ChallengeContext,
            state: &[u8],
            input: &Input,
        ) -> Result<Step, ProviderError> {
            let expected = self.expected_code(ctx, state)?;
            let Input::Code { code } = input else {
                return Err(ProviderError::bad_input("a code, please"));
            };
            if code.len() != 6 {
                return Err(ProviderError::bad_input("six digits, please"));
            }
            let verdict = if *code == expected {
                Verdict::Approved { credential: None }
            } else {
                Verdict::Denied {
                    reason: DenyReason::WrongAnswer,
                    message: "wrong code".into(),
                }
            };
            Ok(Step::Done { verdict })
        }

        fn cancel(&self, _ctx: &ChallengeContext, state: &[u8]) -> Result<(), ProviderError> {
            if FLAW == IN_MEMORY {
                let key = std::str::from_utf8(state).unwrap_or("");
                self.memory.lock().unwrap().remove(key);
            }
            Ok(())
        }
    }

    fn outcome(report: &Report, name: &str) -> Outcome {
        report
            .check(name)
            .unwrap_or_else(|| panic!("no check {name}:\n{report}"))
            .outcome
    }

    fn assert_only_failure(report: &Report, name: &str) {
        let failed: Vec<&str> = report.failures().map(|c| c.name).collect();
        assert_eq!(failed, [name], "\n{report}");
        let shown = report.to_string();
        assert!(
            shown
                .lines()
                .any(|l| l.starts_with("  FAIL  ") && l.contains(name)),
            "{shown}"
        );
        assert!(
            shown.ends_with("checks: 8 ok, 1 failed, 0 skipped"),
            "{shown}"
        );
    }

    fn detail<'a>(report: &'a Report, name: &str) -> &'a str {
        &report.check(name).unwrap().detail
    }

    #[test]
    fn a_good_provider_passes_every_check() {
        let report = check_provider::<Demo<GOOD>>(&Options::default());
        assert!(report.passed(), "\n{report}");
        assert_eq!(report.checks.len(), 9);
        assert!(
            report.checks.iter().all(|c| c.outcome == Outcome::Pass),
            "\n{report}"
        );
        let shown = report.to_string();
        assert!(shown.contains("  ok    info "), "{shown}");
        assert!(shown.contains("demo 1.0.0 by rolegate tests (code factor, responder code)"));
        assert!(
            shown.ends_with("checks: 9 ok, 0 failed, 0 skipped"),
            "{shown}"
        );
        // CI reads "N passed, N failed" as a test runner's summary: never print it.
        assert!(!shown.contains(" passed, "), "{shown}");
        assert!(detail(&report, ROUND_TRIP).contains("Done: denied (wrong_answer)"));
        assert!(detail(&report, CONCURRENT).starts_with("16 threads at once"));
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
    fn run_takes_any_target() {
        let table = Table::for_provider::<Demo<GOOD>>();
        let report = run(&table, &Options::default());
        assert!(report.passed(), "\n{report}");
        assert_eq!(report.failures().count(), 0);
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
        assert_only_failure(&report, GARBAGE);
        let d = detail(&report, GARBAGE);
        assert!(d.contains("challenge_continue with a garbage state"), "{d}");
        assert!(d.contains("panicked error"), "{d}");
    }

    #[test]
    fn challenge_state_in_memory_fails_the_round_trip() {
        let report = check_provider::<Demo<IN_MEMORY>>(&Options::default());
        assert_only_failure(&report, ROUND_TRIP);
        assert!(
            detail(&report, ROUND_TRIP).contains("in memory"),
            "\n{report}"
        );
    }

    #[test]
    fn internal_instead_of_bad_input_fails_garbage() {
        let report = check_provider::<Demo<INTERNAL>>(&Options::default());
        assert_only_failure(&report, GARBAGE);
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
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_only_failure(&report, GARBAGE);
        let d = detail(&report, GARBAGE);
        assert!(d.contains("did not answer within 300 ms: a hang"), "{d}");
    }

    #[test]
    fn needing_enrolment_skips_the_round_trip() {
        let report = check_provider::<Demo<ENROLS>>(&Options::default());
        assert!(report.passed(), "\n{report}");
        assert_eq!(outcome(&report, ROUND_TRIP), Outcome::Skip);
        assert_eq!(detail(&report, ROUND_TRIP), NEEDS_ENROLMENT);
        assert!(
            report
                .to_string()
                .lines()
                .any(|l| l.starts_with("  skip  state survives a round trip ")
                    && l.ends_with(" needs enrolment; no credential to challenge")),
            "\n{report}"
        );
        assert!(
            report
                .to_string()
                .ends_with("checks: 8 ok, 0 failed, 1 skipped")
        );
    }

    #[test]
    fn refused_settings_skip_what_needs_an_instance() {
        let options = Options {
            settings: serde_json::json!({"colour": "blue"}),
            ..Options::default()
        };
        let report = check_provider::<Demo<GOOD>>(&options);
        assert_eq!(outcome(&report, CREATE), Outcome::Fail);
        assert!(detail(&report, CREATE).contains("colour"));
        assert_eq!(outcome(&report, UNKNOWN_SETTINGS), Outcome::Pass);
        for name in [INFO, HEALTH, GARBAGE, ROUND_TRIP, CANCEL, CONCURRENT] {
            assert_eq!(outcome(&report, name), Outcome::Skip, "{name}\n{report}");
        }
        assert_eq!(report.failures().count(), 1);
    }

    /// A target whose instances answer `health` with a malformed message.
    struct BadHealth(Table);

    struct BadHealthEndpoint(Instance);

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
    fn an_invalid_answer_is_named_by_its_op() {
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

    #[test]
    fn transport_failures_and_durations_read_well() {
        assert_eq!(human(Duration::from_secs(5)), "5 s");
        assert_eq!(human(Duration::from_millis(300)), "300 ms");
        assert_eq!(human(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(random_bytes(13).len(), 13);
        assert_ne!(random_bytes(16), random_bytes(16));
    }
}
