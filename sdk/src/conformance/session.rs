//! One run of the suite: instances, calls under a deadline, and the checks in their order.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::otp::Otp;
use super::{
    CANCEL, CHALLENGE, CLOCK, CONCURRENT, CREATE, Check, ENROLMENT, Endpoint, HEALTH, INFO,
    NO_SECRETS, Observer, Options, Outcome, ROUND_TRIP, Report, SETTINGS_NOT_OBJECT, STATE_BOUND,
    Target, UNKNOWN_KEY, UNKNOWN_SETTINGS, VALID_MESSAGES, WRONG_INPUT, WRONG_SETTINGS,
};
use crate::abi::Table;
use crate::bytes::Bytes;
use crate::error::{ErrorKind, ProviderError};
use crate::message::{
    ChallengeContext, Credential, EnrollContext, Health, Input, Prompt, ProviderInfo, Request,
    Response, Step, UserContext, Verdict,
};

pub(super) type Shared = Arc<dyn Endpoint>;

/// What became of a `create`.
pub(super) enum Made {
    Ok(Shared),
    Err(ProviderError),
    Hang(Duration),
    Late(Duration, Duration),
    Crashed(String),
}

impl Made {
    pub(super) fn describe(&self) -> String {
        match self {
            Made::Ok(_) => "Ok".to_string(),
            Made::Err(e) => error_text(e),
            Made::Hang(d) => format!("create did not answer within {}: a hang", human(*d)),
            Made::Late(took, d) => format!(
                "create answered after {}, past the deadline of {}",
                human(*took),
                human(*d)
            ),
            Made::Crashed(how) => crashed_text(how),
        }
    }
}

/// What became of one call.
pub(super) enum Reply<T> {
    Ok(T),
    Err(ProviderError),
    Hang(Duration),
    Transport(ProviderError),
    Invalid(String),
    Crashed(String),
}

impl<T> Reply<T> {
    pub(super) fn describe_with(&self, ok: impl FnOnce(&T) -> String) -> String {
        match self {
            Reply::Ok(v) => ok(v),
            Reply::Err(e) => error_text(e),
            Reply::Hang(d) => format!("did not answer within {}: a hang", human(*d)),
            Reply::Transport(e) => format!("a transport failure ({})", error_text(e)),
            Reply::Invalid(why) => format!("an invalid answer ({why})"),
            Reply::Crashed(how) => crashed_text(how),
        }
    }

    pub(super) fn error_kind(&self) -> Option<ErrorKind> {
        match self {
            Reply::Err(e) => Some(e.kind),
            _ => None,
        }
    }

    /// A panic, a hang, a crash, a transport failure or an invalid answer: never acceptable.
    pub(super) fn broken(&self) -> bool {
        match self {
            Reply::Ok(_) => false,
            Reply::Err(e) => e.kind == ErrorKind::Panicked,
            Reply::Hang(_) | Reply::Transport(_) | Reply::Invalid(_) | Reply::Crashed(_) => true,
        }
    }

    /// The answer's shape: `ok` (refined by `ok`), an error kind, or what went wrong.
    pub(super) fn shape_with(&self, ok: impl FnOnce(&T) -> String) -> String {
        match self {
            Reply::Ok(v) => ok(v),
            Reply::Err(e) => format!("{} error", e.kind),
            Reply::Hang(_) => "a hang".to_string(),
            Reply::Transport(_) => "a transport failure".to_string(),
            Reply::Invalid(_) => "an invalid answer".to_string(),
            Reply::Crashed(_) => "a crash".to_string(),
        }
    }
}

impl Reply<Step> {
    pub(super) fn describe(&self) -> String {
        self.describe_with(step_text)
    }
}

impl Reply<()> {
    pub(super) fn describe(&self) -> String {
        self.describe_with(|()| "Ok".to_string())
    }
}

impl Reply<Value> {
    pub(super) fn describe(&self) -> String {
        self.describe_with(|_| "Ok".to_string())
    }
}

fn crashed_text(how: &str) -> String {
    format!(
        "crashed the process that made the call ({how}); with isolation = \"in-process\" this takes the host down"
    )
}

pub(super) fn error_text(e: &ProviderError) -> String {
    format!("{} error: {}", e.kind, clip(&e.message))
}

pub(super) fn step_text(step: &Step) -> String {
    match step {
        Step::Ask { prompt, .. } => format!("Ask ({} prompt)", wire(&prompt.kind())),
        Step::Wait { .. } => "Wait".to_string(),
        Step::Done { verdict } => format!("Done: {}", verdict_text(verdict)),
    }
}

pub(super) fn verdict_text(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Approved { .. } => "approved".to_string(),
        Verdict::Denied { reason, .. } => format!("denied ({})", wire(reason)),
    }
}

/// The shape concurrent answers must share: step type, verdict outcome.
pub(super) fn step_shape(step: &Step) -> String {
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
pub(super) fn wire<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_string(),
    }
}

pub(super) fn clip(text: &str) -> String {
    const MAX: usize = 200;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let mut out: String = text.chars().take(MAX).collect();
        out.push('…');
        out
    }
}

pub(super) fn excerpt(bytes: &[u8]) -> String {
    const MAX: usize = 120;
    let mut out = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]).into_owned();
    if bytes.len() > MAX {
        out.push('…');
    }
    out
}

pub(super) fn human(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// At most `max` items of a list of problems, and how many more there were.
pub(super) fn some_of(mut items: Vec<String>, max: usize) -> String {
    items.dedup();
    let more = items.len().saturating_sub(max);
    items.truncate(max);
    let mut out = items.join("; ");
    if more > 0 {
        out.push_str(&format!("; and {more} more"));
    }
    out
}

// --- calls under a deadline ----------------------------------------------------------------

pub(super) enum Raw {
    Answer(Vec<u8>),
    Transport(ProviderError),
    Hang,
}

/// Calls on a thread of its own and waits at most `deadline`; a late thread is left behind.
///
/// The endpoint sees `request[..len]`: whatever follows in the buffer is not part of it.
pub(super) fn call_within(
    endpoint: &Shared,
    request: Vec<u8>,
    len: usize,
    deadline: Duration,
) -> Raw {
    let (tx, rx) = mpsc::channel();
    let endpoint = Arc::clone(endpoint);
    let spawned = thread::Builder::new()
        .name("rolegate-check-call".into())
        .spawn(move || {
            let n = len.min(request.len());
            let _ = tx.send(endpoint.call_raw(&request[..n]));
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

/// Runs `f` on a thread of its own for at most `deadline`; None when it hangs or panics.
pub(super) fn within<T: Send + 'static>(
    deadline: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    let spawned = thread::Builder::new()
        .name("rolegate-check-raw".into())
        .spawn(move || {
            let _ = tx.send(f());
        });
    spawned.ok()?;
    rx.recv_timeout(deadline).ok()
}

/// Where instances come from: a borrowed target (create runs inline) or a table (bounded).
pub(crate) enum Maker<'a> {
    Borrowed(&'a dyn Target),
    Table(Table),
}

// --- requests --------------------------------------------------------------------------------

pub(super) fn now() -> u64 {
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

pub(super) fn user() -> UserContext {
    UserContext {
        account: "rolegate-check".into(),
        display_name: "Rolegate Check".into(),
        phone: Some("+14255550100".into()),
        email: Some("rolegate-check@example.invalid".into()),
    }
}

/// The web origin the suite's contexts carry.
pub(super) const ORIGIN: &str = "https://rolegate-check.example.invalid";

pub(super) fn enroll_ctx(now: u64) -> EnrollContext {
    EnrollContext {
        user: user(),
        credentials: Vec::new(),
        origin: Some(ORIGIN.into()),
        now,
    }
}

pub(super) fn encode(request: &Request) -> Vec<u8> {
    serde_json::to_vec(request).unwrap_or_default()
}

pub(super) fn code(digits: usize) -> Input {
    Input::Code {
        code: "0".repeat(digits),
    }
}

/// A well-formed but (almost surely) wrong answer to a prompt.
pub(super) fn probe_input(prompt: &Prompt) -> Input {
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

pub(super) const NO_INSTANCE: &str = "no instance: create failed";

pub(super) fn pass(name: &str, detail: impl Into<String>) -> Check {
    Check::new(name, Outcome::Pass, detail)
}

pub(super) fn fail(name: &str, detail: impl Into<String>) -> Check {
    Check::new(name, Outcome::Fail, detail)
}

pub(super) fn skip(name: &str, detail: impl Into<String>) -> Check {
    Check::new(name, Outcome::Skip, detail)
}

/// What the enrolment gave the challenge checks.
#[derive(Default)]
pub(super) struct Enrolled {
    /// The credential issued (updated as challenges approve with a new one).
    pub(super) credential: Option<Credential>,
    /// The generator of the codes an app set up at enrolment would show.
    pub(super) otp: Option<Otp>,
    /// The enrolment's first prompt and its state, for the wrong-input check.
    pub(super) first_ask: Option<(Prompt, Bytes)>,
}

// --- the suite ---------------------------------------------------------------------------------

pub(crate) struct Session<'a> {
    maker: Maker<'a>,
    pub(super) options: &'a Options,
    observer: &'a dyn Observer,
    answers: AtomicUsize,
    invalid: Mutex<Vec<String>>,
    /// Error, denial and status messages seen, by call label (for NO_SECRETS).
    messages: Mutex<Vec<(String, String)>>,
    /// Secrets the suite learnt (codes it computed or was given, credential data).
    pub(super) secrets: Mutex<Vec<String>>,
    current: Mutex<String>,
    pub(super) info: Mutex<Option<ProviderInfo>>,
    pub(super) enrolled: Mutex<Enrolled>,
}

impl<'a> Session<'a> {
    pub(crate) fn new(maker: Maker<'a>, options: &'a Options, observer: &'a dyn Observer) -> Self {
        Self {
            maker,
            options,
            observer,
            answers: AtomicUsize::new(0),
            invalid: Mutex::new(Vec::new()),
            messages: Mutex::new(Vec::new()),
            secrets: Mutex::new(Vec::new()),
            current: Mutex::new(String::new()),
            info: Mutex::new(None),
            enrolled: Mutex::new(Enrolled::default()),
        }
    }

    pub(super) fn deadline(&self) -> Duration {
        self.options.deadline
    }

    pub(super) fn table(&self) -> Option<Table> {
        match &self.maker {
            Maker::Borrowed(t) => t.table(),
            Maker::Table(t) => Some(*t),
        }
    }

    pub(super) fn info(&self) -> Option<ProviderInfo> {
        self.info.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn needs_enrolment(&self) -> bool {
        self.info().is_some_and(|i| i.needs_enrolment)
    }

    pub(super) fn enrolled<R>(&self, f: impl FnOnce(&mut Enrolled) -> R) -> R {
        f(&mut self.enrolled.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The credentials a challenge context carries: the enrolled one, if any.
    pub(super) fn credentials(&self) -> Vec<Credential> {
        self.enrolled(|e| e.credential.clone().into_iter().collect())
    }

    /// A challenge context with the enrolled credential, at `now`.
    pub(super) fn challenge_ctx_at(&self, request_id: &str, now: u64) -> ChallengeContext {
        ChallengeContext {
            user: user(),
            role: "rolegate-check-role".into(),
            request_id: request_id.into(),
            ttl_s: 3600,
            justification: "rolegate provider check".into(),
            credentials: self.credentials(),
            origin: Some(ORIGIN.into()),
            now,
        }
    }

    pub(super) fn challenge_ctx(&self, request_id: &str) -> ChallengeContext {
        self.challenge_ctx_at(request_id, now())
    }

    /// Keeps a credential update from an approved challenge, as the host does.
    pub(super) fn update_credential(&self, step: &Step) {
        if let Step::Done {
            verdict:
                Verdict::Approved {
                    credential: Some(update),
                    ..
                },
        } = step
        {
            self.learn_credential(update);
            self.enrolled(|e| {
                if e.credential.as_ref().is_some_and(|c| c.id == update.id) {
                    e.credential = Some(update.clone());
                }
            });
        }
    }

    pub(super) fn learn_secret(&self, secret: &str) {
        // Short values ("0", "1234") appear in messages by chance; they prove nothing.
        if secret.chars().count() >= 6 {
            self.secrets
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(secret.to_string());
        }
    }

    pub(super) fn learn_credential(&self, c: &Credential) {
        use base64::Engine as _;
        let data = c.data.as_slice();
        if data.len() >= 8 {
            self.learn_secret(&base64::engine::general_purpose::STANDARD.encode(data));
        }
    }

    fn label(&self, what: &str) -> String {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        format!("{current}: {what}")
    }

    fn crashed(&self, label: &str) -> Option<String> {
        self.options
            .crashed
            .iter()
            .find(|c| c.label == label)
            .map(|c| c.how.clone())
    }

    /// Runs one check: tells the observer, and fails it at once if it crashed a pass before.
    pub(super) fn checked(&self, name: &str, f: impl FnOnce() -> Check) -> Check {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = name.to_string();
        self.observer.check_started(name);
        // A call of this check crashed a pass before: the check fails on it, and the rest of
        // its calls are not made (each might crash again, costing a pass each).
        let prefix = format!("{name}: ");
        let in_call = self
            .options
            .crashed
            .iter()
            .find_map(|c| c.label.strip_prefix(&prefix).map(|what| (what, &c.how)));
        let check = match (self.crashed(name), in_call) {
            (Some(how), _) => fail(
                name,
                format!("the check {} outside any call", crashed_text(&how)),
            ),
            (None, Some((what, how))) => fail(
                name,
                format!(
                    "{what}: {}; the check's other calls were not made",
                    crashed_text(how)
                ),
            ),
            (None, None) => f(),
        };
        self.observer.check_ended(&check);
        check
    }

    pub(super) fn create(&self, settings: &Value) -> Made {
        let label = self.label("create");
        if let Some(how) = self.crashed(&label) {
            return Made::Crashed(how);
        }
        self.observer.call_started(&label);
        let made = self.create_unobserved(settings);
        self.observer.call_ended(&label);
        made
    }

    fn create_unobserved(&self, settings: &Value) -> Made {
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
                        self.dispose(Arc::from(endpoint));
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

    /// Drops an instance (the plugin's `destroy`) on a thread of its own; false if it hangs.
    pub(super) fn dispose(&self, endpoint: Shared) -> bool {
        let label = self.label("destroy");
        if self.crashed(&label).is_some() {
            // It crashed a pass before: keep the instance rather than destroy it again.
            std::mem::forget(endpoint);
            return true;
        }
        self.observer.call_started(&label);
        let (tx, rx) = mpsc::channel();
        let spawned = thread::Builder::new()
            .name("rolegate-check-destroy".into())
            .spawn(move || {
                drop(endpoint);
                let _ = tx.send(());
            });
        let done = match spawned {
            Ok(_) => !matches!(
                rx.recv_timeout(self.deadline()),
                Err(RecvTimeoutError::Timeout)
            ),
            Err(_) => false,
        };
        self.observer.call_ended(&label);
        done
    }

    /// One call, decoded as the response of `op`; undecodable answers are recorded.
    pub(super) fn call<T: DeserializeOwned>(
        &self,
        endpoint: &Shared,
        what: &str,
        request: Vec<u8>,
    ) -> Reply<T> {
        let len = request.len();
        self.call_prefix(endpoint, what, request, len)
    }

    /// Like [`Session::call`], the endpoint seeing only the first `len` bytes of `buffer`.
    pub(super) fn call_prefix<T: DeserializeOwned>(
        &self,
        endpoint: &Shared,
        what: &str,
        buffer: Vec<u8>,
        len: usize,
    ) -> Reply<T> {
        let label = self.label(what);
        if let Some(how) = self.crashed(&label) {
            return Reply::Crashed(how);
        }
        self.observer.call_started(&label);
        let raw = call_within(endpoint, buffer, len, self.deadline());
        self.observer.call_ended(&label);
        match raw {
            Raw::Hang => Reply::Hang(self.deadline()),
            Raw::Transport(e) => Reply::Transport(e),
            Raw::Answer(bytes) => {
                self.answers.fetch_add(1, Ordering::Relaxed);
                self.note_messages(&label, &bytes);
                match serde_json::from_slice::<Response<T>>(&bytes) {
                    Ok(Response::Ok(value)) => Reply::Ok(value),
                    Ok(Response::Error(e)) => Reply::Err(e),
                    Err(e) => {
                        let why = format!("{what}: {e}, in `{}`", excerpt(&bytes));
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

    /// Keeps the texts of an answer that reach logs and users: error and denial messages,
    /// wait statuses (prompts may show secrets to their user: enrolment material).
    fn note_messages(&self, label: &str, bytes: &[u8]) {
        let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
            return;
        };
        let mut texts = Vec::new();
        if let Some(m) = value.pointer("/error/message").and_then(Value::as_str) {
            texts.push(m.to_string());
        }
        for pointer in ["/ok/verdict/message", "/ok/status", "/ok/message"] {
            if let Some(m) = value.pointer(pointer).and_then(Value::as_str) {
                texts.push(m.to_string());
            }
        }
        if !texts.is_empty() {
            let mut messages = self.messages.lock().unwrap_or_else(|p| p.into_inner());
            for t in texts {
                messages.push((label.to_string(), t));
            }
        }
    }

    pub(super) fn call_request<T: DeserializeOwned>(
        &self,
        endpoint: &Shared,
        what: &str,
        request: &Request,
    ) -> Reply<T> {
        self.call(endpoint, what, encode(request))
    }

    pub(crate) fn run(&self) -> Report {
        let mut checks = Vec::new();
        let mut main = None;
        checks.push(
            self.checked(CREATE, || match self.create(&self.options.settings) {
                Made::Ok(endpoint) => {
                    main = Some(endpoint);
                    pass(CREATE, "settings accepted")
                }
                Made::Err(e) if matches!(e.kind, ErrorKind::Config | ErrorKind::BadInput) => fail(
                    CREATE,
                    format!("the settings were refused: {}", error_text(&e)),
                ),
                Made::Err(e) => fail(CREATE, format!("create failed: {}", error_text(&e))),
                other => fail(CREATE, other.describe()),
            }),
        );
        let Some(main) = main else {
            checks.push(self.checked(INFO, || skip(INFO, NO_INSTANCE)));
            checks.push(self.checked(HEALTH, || skip(HEALTH, NO_INSTANCE)));
            checks.push(self.checked(UNKNOWN_SETTINGS, || self.check_unknown_settings()));
            checks.push(self.checked(WRONG_SETTINGS, || self.check_wrong_settings()));
            checks.push(self.checked(SETTINGS_NOT_OBJECT, || self.check_settings_not_object()));
            for (name, _) in super::CHECKS {
                if super::session::AFTER_CREATE.contains(name) {
                    checks.push(self.checked(name, || skip(name, NO_INSTANCE)));
                }
            }
            checks.push(self.checked(VALID_MESSAGES, || self.check_valid_messages()));
            checks.push(self.checked(NO_SECRETS, || self.check_no_secrets()));
            return Report { checks };
        };
        checks.push(self.checked(INFO, || self.check_info(&main)));
        checks.push(self.checked(HEALTH, || self.check_health(&main)));
        checks.push(self.checked(UNKNOWN_SETTINGS, || self.check_unknown_settings()));
        checks.push(self.checked(WRONG_SETTINGS, || self.check_wrong_settings()));
        checks.push(self.checked(SETTINGS_NOT_OBJECT, || self.check_settings_not_object()));
        checks.push(self.checked(ENROLMENT, || self.check_enrolment(&main)));
        checks.extend(self.garbage_checks(&main));
        checks.push(self.checked(WRONG_INPUT, || self.check_wrong_input(&main)));
        checks.push(self.checked(STATE_BOUND, || self.check_state_bound(&main)));
        checks.push(self.checked(CHALLENGE, || self.check_challenge(&main)));
        checks.push(self.checked(CLOCK, || self.check_clock(&main)));
        checks.push(self.checked(ROUND_TRIP, || self.check_round_trip()));
        let mut probe = None;
        let concurrent = self.checked(CONCURRENT, || {
            let p = self.probe(&main);
            let c = self.check_concurrent(&main, &p);
            probe = Some(p);
            c
        });
        // Concurrency first: cancelling first could change how the state is answered.
        checks.push(self.checked(CANCEL, || match &probe {
            Some(p) => self.check_cancel(&main, p),
            // The concurrency check did not get as far (a crash): a challenge of its own.
            None => self.check_cancel(&main, &self.probe(&main)),
        }));
        checks.push(concurrent);
        self.dispose(main);
        checks.push(self.checked(VALID_MESSAGES, || self.check_valid_messages()));
        checks.push(self.checked(NO_SECRETS, || self.check_no_secrets()));
        Report { checks }
    }

    fn check_info(&self, endpoint: &Shared) -> Check {
        let first: Reply<ProviderInfo> = self.call_request(endpoint, "info", &Request::Info);
        let info = match first {
            Reply::Ok(info) => info,
            other => {
                let seen = other.describe_with(|_| String::new());
                return fail(INFO, format!("expected a ProviderInfo, got {seen}"));
            }
        };
        *self.info.lock().unwrap_or_else(|p| p.into_inner()) = Some(info.clone());
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
        let second: Reply<ProviderInfo> = self.call_request(endpoint, "info again", &Request::Info);
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
        if problems.is_empty() {
            pass(
                INFO,
                format!(
                    "{} {} by {} ({} factor, responder {}{})",
                    info.id,
                    info.version,
                    info.vendor,
                    wire(&info.factor),
                    wire(&info.responder),
                    if info.needs_enrolment {
                        ", needs enrolment"
                    } else {
                        ""
                    }
                ),
            )
        } else {
            fail(INFO, problems.join("; "))
        }
    }

    fn check_health(&self, endpoint: &Shared) -> Check {
        let reply: Reply<Health> = self.call_request(endpoint, "health", &Request::Health);
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

    /// Each key of the settings given, with a value of another type, is refused naming it.
    fn check_wrong_settings(&self) -> Check {
        let Value::Object(settings) = &self.options.settings else {
            return skip(WRONG_SETTINGS, "the settings given are not a JSON object");
        };
        if settings.is_empty() {
            return pass(
                WRONG_SETTINGS,
                "no settings given, so none to give a wrong value (give some with --config to check them)",
            );
        }
        let mut failures = Vec::new();
        let mut tried = 0;
        for (key, value) in settings {
            let wrong = match value {
                Value::String(_) => serde_json::json!([7]),
                Value::Object(_) | Value::Array(_) => Value::String("rolegate-check".into()),
                _ => serde_json::json!({"rolegate": "check"}),
            };
            let mut bad = settings.clone();
            bad.insert(key.clone(), wrong.clone());
            tried += 1;
            match self.create(&Value::Object(bad)) {
                Made::Ok(endpoint) => {
                    self.dispose(endpoint);
                    failures.push(format!("`{key}` = {wrong} was accepted"));
                }
                Made::Err(e) if e.kind == ErrorKind::Config && e.message.contains(key.as_str()) => {
                }
                Made::Err(e) if e.kind == ErrorKind::Config => failures.push(format!(
                    "`{key}` = {wrong} was refused without naming the key: {}",
                    clip(&e.message)
                )),
                other => failures.push(format!(
                    "`{key}` = {wrong}: expected a config error naming it, got {}",
                    other.describe()
                )),
            }
        }
        if failures.is_empty() {
            pass(
                WRONG_SETTINGS,
                format!(
                    "{tried} setting{} of the wrong type refused, each naming its key",
                    if tried == 1 { "" } else { "s" }
                ),
            )
        } else {
            fail(WRONG_SETTINGS, some_of(failures, 4))
        }
    }

    fn check_settings_not_object(&self) -> Check {
        let mut failures = Vec::new();
        let cases = [
            serde_json::json!([]),
            Value::String("rolegate-check".into()),
            serde_json::json!(7),
            Value::Null,
        ];
        for settings in &cases {
            match self.create(settings) {
                Made::Ok(endpoint) => {
                    self.dispose(endpoint);
                    failures.push(format!("{settings} was accepted"));
                }
                Made::Err(e) if e.kind == ErrorKind::BadInput => {}
                other => failures.push(format!(
                    "{settings}: expected a bad_input error, got {}",
                    other.describe()
                )),
            }
        }
        if failures.is_empty() {
            pass(
                SETTINGS_NOT_OBJECT,
                format!(
                    "{} settings that are not an object refused with bad_input",
                    cases.len()
                ),
            )
        } else {
            fail(SETTINGS_NOT_OBJECT, some_of(failures, 4))
        }
    }

    pub(super) fn check_valid_messages(&self) -> Check {
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
                    some_of(invalid, 6)
                ),
            )
        }
    }

    fn check_no_secrets(&self) -> Check {
        let secrets = self
            .secrets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let messages = self
            .messages
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut leaks = Vec::new();
        for (label, text) in &messages {
            if secrets.iter().any(|s| text.contains(s.as_str())) {
                leaks.push(format!("{label}: `{}`", clip(text)));
            }
        }
        if !leaks.is_empty() {
            return fail(
                NO_SECRETS,
                format!(
                    "messages that reach logs and events hold a code or a credential's data: {}",
                    some_of(leaks, 4)
                ),
            );
        }
        if secrets.is_empty() {
            pass(
                NO_SECRETS,
                format!(
                    "{} messages read; the check learnt no secret long enough to look for (a code of 6 characters or more, credential data of 8 bytes or more)",
                    messages.len()
                ),
            )
        } else {
            pass(
                NO_SECRETS,
                format!(
                    "{} messages hold none of the {} codes and credentials the check knows",
                    messages.len(),
                    secrets.len()
                ),
            )
        }
    }
}

/// The checks that need an instance, skipped when `create` fails (between settings and the end).
pub(super) const AFTER_CREATE: &[&str] = &[
    ENROLMENT,
    super::ABI_EDGES,
    super::GARBAGE,
    super::MISSING_OP,
    super::UNSUPPORTED_OP,
    super::WRONG_TYPES,
    super::HUGE,
    super::NOT_UTF8,
    super::ANY_JSON,
    super::BY_LENGTH,
    WRONG_INPUT,
    STATE_BOUND,
    CHALLENGE,
    CLOCK,
    ROUND_TRIP,
    CANCEL,
    CONCURRENT,
];

impl Session<'_> {
    /// Runs `f` as one observed call named `what` (a raw ABI call); a crash of an earlier pass
    /// fails it without running it.
    pub(super) fn observed_raw<T>(
        &self,
        what: &str,
        f: impl FnOnce() -> Result<T, String>,
    ) -> Result<T, String> {
        let label = self.label(what);
        if let Some(how) = self.crashed(&label) {
            return Err(crashed_text(&how));
        }
        self.observer.call_started(&label);
        let result = f();
        self.observer.call_ended(&label);
        result
    }
}
