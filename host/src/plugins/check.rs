//! `rolegate provider check`: the SDK's conformance suite run against a library as the host
//! loads it.
//!
//! - `isolation = "process"`: the suite calls a supervised worker process ([`HostTarget`]); a
//!   crash costs the call it happened in, which fails its check. Whether the library loads at
//!   all is asked of a child first ([`ChildRun::load_only`]): a refusal or a crash there is
//!   `load`, so a worker that then fails in `create` fails `create`.
//! - `isolation = "in-process"`: the library is loaded into a *child* of the checker
//!   (`rolegate check-worker`, [`child_main`]), which runs the suite and streams what it does to
//!   the checker ([`run_in_child`]). A crash ends the child, not the checker: the call in flight
//!   is named, the child is run again with that call marked as crashed (the suite fails it
//!   without repeating it), and so on until a pass ends. The child also checks that the plugin
//!   writes nothing to its stdout.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::os::fd::FromRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use rolegate_sdk::ProviderError;
use rolegate_sdk::conformance::{
    self, Check, Crashed, Endpoint, LOAD, Observer, Options, Outcome, QUIET_STDOUT, Report, Target,
};
use serde::{Deserialize, Serialize};

use crate::model::error::Error;
use crate::plugins::{Isolation, LoadedProvider, Plugin, PluginsConfig, library, process};

/// A plugin library seen through the host's loader, as the conformance suite's target.
pub struct HostTarget {
    plugin: Plugin,
    plugins: PluginsConfig,
    runtime: tokio::runtime::Handle,
}

impl HostTarget {
    /// Wraps a plugin; calls run on `runtime` (the suite calls from plain threads).
    pub fn new(plugin: Plugin, plugins: PluginsConfig, runtime: tokio::runtime::Handle) -> Self {
        Self {
            plugin,
            plugins,
            runtime,
        }
    }

    /// Starts a worker with settings as they are, even when not a JSON object (which the host
    /// itself never sends, but the suite checks the provider refuses).
    fn create_raw(&self, settings: &serde_json::Value) -> Result<Box<dyn Endpoint>, ProviderError> {
        if self.plugin.isolation != Isolation::Process {
            return Err(ProviderError::internal(
                "settings that are not an object reach an in-process plugin only through its table",
            ));
        }
        let spec = process::Spec {
            id: self.plugin.id.clone(),
            exe: super::worker_exe(&self.plugins).map_err(as_provider_error)?,
            library: self.plugin.library.clone(),
            sha256: self.plugin.sha256.clone(),
            settings: serde_json::to_vec(settings).map_err(|e| {
                ProviderError::internal(format!("the settings cannot be encoded: {e}"))
            })?,
            deadline: self.plugin.deadline,
            max_crashes: self.plugins.max_crashes,
            crash_window: Duration::from_secs(self.plugins.crash_window_s),
            observer: None,
        };
        let supervisor = on_runtime(&self.runtime, process::Supervisor::start(spec))
            .map_err(as_provider_error)?;
        Ok(Box::new(HostEndpoint {
            backend: Backend::Worker(Arc::new(supervisor)),
            runtime: self.runtime.clone(),
        }))
    }
}

/// Runs `f` on one of the runtime's own threads and waits for it.
///
/// A worker process dies with the thread that started it (`PR_SET_PDEATHSIG`), and the suite
/// calls from short-lived threads: a worker (re)started there would be killed when its call's
/// thread ends. The runtime's threads live as long as the check.
fn on_runtime<T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    f: impl std::future::Future<Output = crate::Result<T>> + Send + 'static,
) -> crate::Result<T> {
    runtime.block_on(runtime.spawn(f)).unwrap_or_else(|e| {
        Err(Error::Provider {
            id: "check".into(),
            op: "check",
            source: ProviderError::internal(format!("the check's task failed: {e}")),
        })
    })
}

fn as_provider_error(e: Error) -> ProviderError {
    match e {
        Error::Settings { source, .. } => source,
        Error::Provider { source, .. } => source,
        other => ProviderError::unavailable(other.to_string()),
    }
}

enum Backend {
    Provider(Arc<LoadedProvider>),
    Worker(Arc<process::Supervisor>),
}

struct HostEndpoint {
    backend: Backend,
    runtime: tokio::runtime::Handle,
}

impl Endpoint for HostEndpoint {
    fn call_raw(&self, request: &[u8]) -> Result<Vec<u8>, ProviderError> {
        let request = request.to_vec();
        match &self.backend {
            Backend::Provider(p) => {
                let provider = Arc::clone(p);
                on_runtime(&self.runtime, async move {
                    provider.call_raw("check", request).await
                })
            }
            Backend::Worker(s) => {
                let supervisor = Arc::clone(s);
                on_runtime(&self.runtime, async move {
                    supervisor.call("check", &request).await
                })
            }
        }
        .map_err(as_provider_error)
    }
}

impl Drop for HostEndpoint {
    fn drop(&mut self) {
        match &self.backend {
            Backend::Provider(p) => {
                let provider = Arc::clone(p);
                self.runtime.spawn(async move { provider.shutdown().await });
            }
            Backend::Worker(s) => {
                let supervisor = Arc::clone(s);
                self.runtime
                    .spawn(async move { supervisor.shutdown().await });
            }
        }
    }
}

impl Target for HostTarget {
    fn create(&self, settings: &serde_json::Value) -> Result<Box<dyn Endpoint>, ProviderError> {
        if !settings.is_object() {
            return self.create_raw(settings);
        }
        let (plugin, settings) = (self.plugin.clone(), settings.clone());
        let provider = on_runtime(
            &self.runtime,
            async move { plugin.instantiate(&settings).await },
        )
        .map_err(as_provider_error)?;
        Ok(Box::new(HostEndpoint {
            backend: Backend::Provider(Arc::new(provider)),
            runtime: self.runtime.clone(),
        }))
    }
}

// --- in process, in a child of the checker --------------------------------------------------

/// What the checker asks its child to run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildRun {
    /// The plugin library.
    pub library: PathBuf,
    /// The provider's settings.
    pub settings: serde_json::Value,
    /// Each call's deadline, in milliseconds.
    pub deadline_ms: u64,
    /// Answers for enrolment prompts the suite cannot work out.
    pub enrol_codes: Vec<String>,
    /// Calls that crashed an earlier pass.
    pub crashed: Vec<Crashed>,
    /// Only load the library (and say whether it loads): the checks run elsewhere.
    #[serde(default)]
    pub load_only: bool,
}

/// One line from the child to the checker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Event {
    CheckStarted(String),
    CallStarted(String),
    CallEnded(String),
    CheckEnded(Check),
    Loaded { sha256: String },
    Refused(String),
    Report(Report),
}

/// Writes events, one JSON line each, to the checker; a lost checker ends the child.
struct Events(Mutex<File>);

impl Events {
    fn send(&self, event: &Event) {
        let Ok(mut line) = serde_json::to_vec(event) else {
            return;
        };
        line.push(b'\n');
        let mut out = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if out.write_all(&line).and_then(|()| out.flush()).is_err() {
            std::process::exit(3);
        }
    }
}

impl Observer for Events {
    fn check_started(&self, name: &str) {
        self.send(&Event::CheckStarted(name.to_string()));
    }
    fn call_started(&self, label: &str) {
        self.send(&Event::CallStarted(label.to_string()));
    }
    fn call_ended(&self, label: &str) {
        self.send(&Event::CallEnded(label.to_string()));
    }
    fn check_ended(&self, check: &Check) {
        self.send(&Event::CheckEnded(check.clone()));
    }
}

/// Points fd 1 at an anonymous file (what the plugin prints lands there); returns the
/// checker's pipe and that file.
fn capture_stdout() -> std::io::Result<(File, File)> {
    // SAFETY: dup of a descriptor the process owns.
    let proto = unsafe { libc::dup(1) };
    if proto < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `proto` is a fresh descriptor this function owns.
    let proto = unsafe { File::from_raw_fd(proto) };
    // SAFETY: a valid C string; memfd_create has no other preconditions.
    let fd = unsafe { libc::memfd_create(c"rolegate-check-stdout".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor this function owns.
    let capture = unsafe { File::from_raw_fd(fd) };
    // SAFETY: both descriptors are open; fd 1 becomes a copy of the capture file's.
    if unsafe { libc::dup2(fd, 1) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((proto, capture))
}

/// What the plugin wrote to stdout during the run, as a check.
fn quiet_stdout(capture: &mut File) -> Check {
    // Rust's own stdout buffer: flush it so that what the plugin printed through it counts.
    let _ = std::io::stdout().flush();
    let mut text = Vec::new();
    let read = capture
        .seek(SeekFrom::Start(0))
        .and_then(|_| capture.take(200).read_to_end(&mut text));
    let size = capture.metadata().map(|m| m.len()).unwrap_or(0);
    match read {
        Err(e) => Check::new(
            QUIET_STDOUT,
            Outcome::Skip,
            format!("could not read what was written to stdout: {e}"),
        ),
        Ok(_) if size == 0 => Check::new(QUIET_STDOUT, Outcome::Pass, "nothing written to stdout"),
        Ok(_) => Check::new(
            QUIET_STDOUT,
            Outcome::Fail,
            format!(
                "the plugin wrote {size} bytes to stdout, which is the host's with isolation = \"in-process\" (log to stderr): `{}`",
                String::from_utf8_lossy(&text).escape_debug()
            ),
        ),
    }
}

/// `rolegate check-worker`: loads the library into this process and runs the suite on it,
/// streaming events on stdout; returns the exit code.
pub fn child_main() -> i32 {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("rolegate check-worker: cannot read the run: {e}");
        return 2;
    }
    let run: ChildRun = match serde_json::from_slice(&input) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rolegate check-worker: the run is not valid: {e}");
            return 2;
        }
    };
    let (proto, mut capture) = match capture_stdout() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("rolegate check-worker: cannot set up stdout: {e}");
            return 2;
        }
    };
    let events = Events(Mutex::new(proto));
    events.send(&Event::CheckStarted(LOAD.to_string()));
    events.send(&Event::CallStarted(LOAD.to_string()));
    let loaded = library::open("check", &run.library, None);
    events.send(&Event::CallEnded(LOAD.to_string()));
    let loaded = match loaded {
        Ok(l) => l,
        Err(e) => {
            let reason = match e {
                Error::Load { reason, .. } => reason,
                other => other.to_string(),
            };
            events.send(&Event::Refused(reason));
            return 0;
        }
    };
    events.send(&Event::Loaded {
        sha256: loaded.sha256.clone(),
    });
    if run.load_only {
        events.send(&Event::Report(Report::default()));
        std::process::exit(0)
    }
    let options = Options {
        settings: run.settings,
        deadline: Duration::from_millis(run.deadline_ms.max(1)),
        enrol_codes: run.enrol_codes,
        crashed: run.crashed,
        ..Options::default()
    };
    let mut report = conformance::check_table(loaded.table, &options, &events);
    events.send(&Event::CheckStarted(QUIET_STDOUT.to_string()));
    let quiet = quiet_stdout(&mut capture);
    events.send(&Event::CheckEnded(quiet.clone()));
    report.checks.push(quiet);
    events.send(&Event::Report(report));
    // Calls abandoned as hangs may still run: leave without waiting for them.
    std::process::exit(0)
}

/// The result of a check run: the library's hash when it loaded, and every check (`load`
/// first).
#[derive(Debug, Clone)]
pub struct Checked {
    /// The library's SHA-256, when it was read.
    pub sha256: Option<String>,
    /// Every check, `load` first.
    pub report: Report,
}

/// How a child process ended, in words.
fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(sig)) => {
            let name = match sig {
                libc::SIGSEGV => "SIGSEGV",
                libc::SIGABRT => "SIGABRT",
                libc::SIGBUS => "SIGBUS",
                libc::SIGILL => "SIGILL",
                libc::SIGFPE => "SIGFPE",
                libc::SIGKILL => "SIGKILL",
                libc::SIGTERM => "SIGTERM",
                _ => "a signal",
            };
            format!("killed by signal {sig} ({name})")
        }
        _ => "ended".to_string(),
    }
}

/// The most passes a run makes: each crash costs one.
const MAX_PASSES: usize = 40;

/// What one pass of the child saw before it ended.
#[derive(Default)]
struct Pass {
    sha256: Option<String>,
    refused: Option<String>,
    report: Option<Report>,
    current: Option<String>,
    ended: Vec<Check>,
    in_flight: HashMap<String, usize>,
    /// Why the child ended without a report (its exit, or a stall).
    how: Option<String>,
}

/// Runs the suite in a child process (`exe check-worker`) until a pass ends, each crash
/// failing the call (or check) it happened in.
pub fn run_in_child(exe: &Path, run: &ChildRun) -> Checked {
    let mut run = run.clone();
    // A child that says nothing for this long has stalled: every call has a deadline.
    let stall = Duration::from_millis(run.deadline_ms.saturating_mul(4)) + Duration::from_secs(10);
    let mut passes = 0;
    loop {
        passes += 1;
        let pass = one_pass(exe, &run, stall);
        let load_check = match (&pass.refused, &pass.sha256) {
            (Some(reason), _) => Check::new(LOAD, Outcome::Fail, reason.clone()),
            (None, Some(sha)) => Check::new(LOAD, Outcome::Pass, format!("sha256 {sha}")),
            (None, None) => Check::new(
                LOAD,
                Outcome::Fail,
                format!(
                    "the library crashed the process loading it ({}) before it finished loading (its initialisers run then): with isolation = \"in-process\" this takes the host down",
                    pass.how.as_deref().unwrap_or("ended")
                ),
            ),
        };
        if pass.refused.is_some() || pass.sha256.is_none() {
            return Checked {
                sha256: pass.sha256,
                report: Report {
                    checks: vec![load_check],
                },
            };
        }
        if let Some(report) = pass.report {
            let mut checks = vec![load_check];
            checks.extend(report.checks);
            return Checked {
                sha256: pass.sha256,
                report: Report { checks },
            };
        }
        let how = pass.how.clone().unwrap_or_else(|| "ended".to_string());
        let mut blamed: Vec<String> = pass
            .in_flight
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(label, _)| label.clone())
            .collect();
        if blamed.is_empty()
            && let Some(check) = &pass.current
        {
            blamed.push(check.clone());
        }
        let fresh: Vec<String> = blamed
            .into_iter()
            .filter(|l| !run.crashed.iter().any(|c| &c.label == l))
            .collect();
        if fresh.is_empty() || passes >= MAX_PASSES {
            // Nothing new to blame, or too many crashes: report what ran, and why it stopped.
            let mut checks = vec![load_check];
            checks.extend(pass.ended);
            checks.push(Check::new(
                pass.current.as_deref().unwrap_or("run"),
                Outcome::Fail,
                format!(
                    "the process running the checks {how} after {passes} passes; the checks after this one did not run"
                ),
            ));
            return Checked {
                sha256: pass.sha256,
                report: Report { checks },
            };
        }
        for label in fresh {
            run.crashed.push(Crashed {
                label,
                how: how.clone(),
            });
        }
    }
}

/// Runs the child once, reading its events until it ends or stalls.
fn one_pass(exe: &Path, run: &ChildRun, stall: Duration) -> Pass {
    let mut pass = Pass::default();
    let child = Command::new(exe)
        .arg("check-worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            pass.refused = Some(format!(
                "cannot start the checking process {}: {e}",
                exe.display()
            ));
            return pass;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        let bytes = serde_json::to_vec(run).unwrap_or_default();
        // A child that cannot read it ends at once, and says why on stderr.
        let _ = stdin.write_all(&bytes);
    }
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        pass.refused = Some("the checking process has no stdout".into());
        return pass;
    };
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        match rx.recv_timeout(stall) {
            Ok(line) => {
                // A line that is not an event (the plugin wrote to the pipe) is ignored.
                if let Ok(event) = serde_json::from_str::<Event>(&line) {
                    pass.take(event);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                pass.how = Some(format!(
                    "made no progress for {} s and was stopped",
                    stall.as_secs()
                ));
                break;
            }
        }
    }
    let status = child.wait();
    let _ = reader.join();
    if pass.how.is_none() {
        pass.how = Some(match status {
            Ok(s) => describe_exit(s),
            Err(e) => format!("ended (status unknown: {e})"),
        });
    }
    pass
}

impl Pass {
    fn take(&mut self, event: Event) {
        match event {
            Event::CheckStarted(name) => self.current = Some(name),
            Event::CallStarted(label) => *self.in_flight.entry(label).or_default() += 1,
            Event::CallEnded(label) => {
                if let Some(n) = self.in_flight.get_mut(&label) {
                    *n = n.saturating_sub(1);
                }
            }
            Event::CheckEnded(check) => {
                self.current = None;
                self.ended.push(check);
            }
            Event::Loaded { sha256 } => {
                self.current = None;
                self.in_flight.clear();
                self.sha256 = Some(sha256);
            }
            Event::Refused(reason) => self.refused = Some(reason),
            Event::Report(report) => self.report = Some(report),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_travel_as_json_lines() {
        let e = Event::CheckEnded(Check::new("info", Outcome::Pass, "fine"));
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(
            line,
            r#"{"check_ended":{"name":"info","outcome":"pass","detail":"fine"}}"#
        );
        let mut pass = Pass::default();
        pass.take(Event::CallStarted("a: b".into()));
        pass.take(Event::CallStarted("a: b".into()));
        pass.take(Event::CallEnded("a: b".into()));
        assert_eq!(pass.in_flight["a: b"], 1);
        pass.take(serde_json::from_str(&line).unwrap());
        assert_eq!(pass.ended.len(), 1);
    }
}
