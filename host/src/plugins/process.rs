//! The host side of `isolation = "process"`: a supervised worker process per provider instance.
//!
//! Calls are multiplexed over the worker's pipe by id. A call that passes its deadline kills
//! the worker; a worker that dies fails the calls in flight with its exit status. Either way
//! the next call starts a fresh worker, unless the worker keeps crashing (then the provider
//! is held down for the rest of the crash window).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;
use tokio::process::{ChildStdin, Command};
use tokio::sync::{Mutex, oneshot};

use rolegate_sdk::message::Response;

use super::frame::{self, CALL, CREATE, FATAL};
use crate::model::error::{Error, Result};

type Pending = StdMutex<HashMap<u64, oneshot::Sender<Outcome>>>;

/// What became of one call.
enum Outcome {
    Answer(Vec<u8>),
    Died(String),
}

/// How to start a worker for one provider instance.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The provider id (for messages).
    pub id: String,
    /// The worker executable (`rolegate`).
    pub exe: PathBuf,
    /// The plugin library.
    pub library: PathBuf,
    /// The hash the host checked; the worker refuses any other file.
    pub sha256: String,
    /// The provider's settings, JSON.
    pub settings: Vec<u8>,
    /// Deadline of each call.
    pub deadline: Duration,
    /// Crashes within `crash_window` that put the provider on hold.
    pub max_crashes: usize,
    /// Window in which crashes are counted.
    pub crash_window: Duration,
    /// Told of every worker that ended without being asked to (id, how it ended).
    pub observer: Option<Observer>,
}

/// What the supervisor tells the daemon of a provider's workers, for its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerNews {
    /// A worker ended without being asked to (a crash, or a kill past the deadline).
    Ended {
        /// The provider id.
        id: String,
        /// How it ended ("was killed by signal 11 (SIGSEGV)").
        status: String,
    },
    /// A new worker refused to start after the first (the library changed under the
    /// daemon, so its pin broke, or the provider refused its settings): told once per reason.
    Refused {
        /// The provider id.
        id: String,
        /// The loader's words.
        reason: String,
    },
}

/// Receives the news of a provider's workers.
pub type Observer = tokio::sync::mpsc::UnboundedSender<WorkerNews>;

struct Worker {
    kill: StdMutex<Option<oneshot::Sender<()>>>,
    stdin: Mutex<ChildStdin>,
    pending: Arc<Pending>,
    dead: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
    next_id: AtomicU64,
}

impl Worker {
    /// Asks the reader task, which owns the child, to kill it.
    fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        if let Some(tx) = self.kill.lock().ok().and_then(|mut k| k.take()) {
            let _ = tx.send(());
        }
    }
}

/// A supervised worker process serving one provider instance.
pub struct Supervisor {
    spec: Spec,
    current: Mutex<Option<Arc<Worker>>>,
    crashes: Arc<StdMutex<VecDeque<Instant>>>,
    /// Whether a worker has started (later starts are restarts).
    started: AtomicBool,
    /// The last restart refusal reported, so that each is reported once.
    refused: StdMutex<Option<String>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("id", &self.spec.id)
            .finish_non_exhaustive()
    }
}

fn describe_exit(status: std::io::Result<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(sig)) => format!("was killed by signal {sig} ({})", signal_name(sig)),
            _ => "ended".to_string(),
        },
        Err(e) => format!("ended (status unknown: {e})"),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

impl Supervisor {
    /// Starts the first worker and creates the instance; refusals come back as load errors.
    pub async fn start(spec: Spec) -> Result<Self> {
        let sup = Self {
            spec,
            current: Mutex::new(None),
            crashes: Arc::new(StdMutex::new(VecDeque::new())),
            started: AtomicBool::new(false),
            refused: StdMutex::new(None),
        };
        sup.worker().await?;
        Ok(sup)
    }

    fn load_error(&self, reason: String) -> Error {
        Error::Load {
            id: self.spec.id.clone(),
            library: self.spec.library.clone(),
            reason,
        }
    }

    fn check_crash_loop(&self) -> Result<()> {
        let Ok(mut c) = self.crashes.lock() else {
            return Ok(());
        };
        let now = Instant::now();
        while c
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.spec.crash_window)
        {
            c.pop_front();
        }
        if c.len() >= self.spec.max_crashes
            && let Some(first) = c.front()
        {
            let wait = self
                .spec
                .crash_window
                .saturating_sub(now.duration_since(*first));
            return Err(Error::CrashLoop {
                id: self.spec.id.clone(),
                crashes: c.len(),
                window_s: self.spec.crash_window.as_secs(),
                wait_s: wait.as_secs().max(1),
            });
        }
        Ok(())
    }

    /// The live worker, starting one when there is none.
    async fn worker(&self) -> Result<Arc<Worker>> {
        let mut current = self.current.lock().await;
        if let Some(w) = current.as_ref()
            && !w.dead.load(Ordering::SeqCst)
        {
            return Ok(Arc::clone(w));
        }
        *current = None;
        self.check_crash_loop()?;
        let w = match self.spawn().await {
            Ok(w) => Arc::new(w),
            Err(e) => {
                if self.started.load(Ordering::SeqCst) {
                    self.refused_on_restart(&e);
                }
                return Err(e);
            }
        };
        self.started.store(true, Ordering::SeqCst);
        if let Ok(mut r) = self.refused.lock() {
            *r = None;
        }
        *current = Some(Arc::clone(&w));
        Ok(w)
    }

    /// Logs and reports a restart the loader refused, once per reason (every call retries it).
    fn refused_on_restart(&self, e: &Error) {
        let reason = e.to_string();
        let Ok(mut last) = self.refused.lock() else {
            return;
        };
        if last.as_deref() == Some(reason.as_str()) {
            return;
        }
        *last = Some(reason.clone());
        tracing::error!(
            provider = %self.spec.id,
            library = %self.spec.library.display(),
            "a new plugin worker was refused: {reason}"
        );
        if let Some(o) = &self.spec.observer {
            let _ = o.send(WorkerNews::Refused {
                id: self.spec.id.clone(),
                reason,
            });
        }
    }

    async fn spawn(&self) -> Result<Worker> {
        let mut child = Command::new(&self.spec.exe)
            .arg("plugin-worker")
            .arg("--library")
            .arg(&self.spec.library)
            .arg("--sha256")
            .arg(&self.spec.sha256)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                self.load_error(format!(
                    "cannot start the worker process {}: {e}",
                    self.spec.exe.display()
                ))
            })?;
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(self.load_error("the worker process has no pipes".into()));
        };
        let mut stdout = tokio::io::BufReader::with_capacity(64 * 1024, stdout);
        // Create the instance, under the deadline.
        let hello = frame::encode(CREATE, 0, &self.spec.settings);
        let created = tokio::time::timeout(self.spec.deadline, async {
            // A worker that refused the library has already said why and exited: a failed
            // write here is expected, and its FATAL frame is still in the pipe.
            if stdin.write_all(&hello).await.is_ok() {
                let _ = stdin.flush().await;
            }
            frame::read_async(&mut stdout).await
        })
        .await;
        let first = match created {
            Err(_) => {
                let _ = child.start_kill();
                return Err(self.load_error(format!(
                    "the worker did not create the provider within {} ms",
                    self.spec.deadline.as_millis()
                )));
            }
            Ok(Err(e)) => {
                let _ = child.start_kill();
                return Err(self.load_error(format!("the worker's pipe failed: {e}")));
            }
            Ok(Ok(None)) => {
                let status = describe_exit(child.wait().await);
                return Err(
                    self.load_error(format!("the worker {status} before creating the provider"))
                );
            }
            Ok(Ok(Some(f))) => f,
        };
        match first.kind {
            FATAL => {
                let _ = child.wait().await;
                return Err(self.load_error(String::from_utf8_lossy(&first.payload).into_owned()));
            }
            CREATE => {
                let response: Response<Option<serde_json::Value>> =
                    serde_json::from_slice(&first.payload).map_err(|e| {
                        self.load_error(format!("the plugin's answer to create is invalid: {e}"))
                    })?;
                if let Response::Error(source) = response {
                    let _ = child.wait().await;
                    return Err(Error::Settings {
                        id: self.spec.id.clone(),
                        library: self.spec.library.clone(),
                        source,
                    });
                }
            }
            other => {
                let _ = child.start_kill();
                return Err(self.load_error(format!(
                    "the worker answered create with frame kind {other}"
                )));
            }
        }
        let pending: Arc<Pending> = Arc::new(StdMutex::new(HashMap::new()));
        let dead = Arc::new(AtomicBool::new(false));
        let (kill_tx, mut kill_rx) = oneshot::channel::<()>();
        let stopping = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            kill: StdMutex::new(Some(kill_tx)),
            stdin: Mutex::new(stdin),
            pending: Arc::clone(&pending),
            dead: Arc::clone(&dead),
            stopping: Arc::clone(&stopping),
            next_id: AtomicU64::new(1),
        };
        // The reader task owns the child: it routes answers, kills the child when asked, and
        // reaps it when the pipe closes, failing the calls still in flight with its status.
        let id = self.spec.id.clone();
        let crashes = Arc::clone(&self.crashes);
        let observer = self.spec.observer.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    read = frame::read_async(&mut stdout) => match read {
                        Ok(Some(f)) if f.kind == CALL => {
                            let tx = pending.lock().ok().and_then(|mut p| p.remove(&f.id));
                            if let Some(tx) = tx {
                                let _ = tx.send(Outcome::Answer(f.payload));
                            }
                        }
                        Ok(Some(f)) if f.kind == FATAL => {
                            tracing::error!(provider = %id, reason = %String::from_utf8_lossy(&f.payload), "plugin worker gave up");
                        }
                        Ok(Some(_)) | Ok(None) | Err(_) => break,
                    },
                    _ = &mut kill_rx => {
                        let _ = child.start_kill();
                        break;
                    }
                }
            }
            dead.store(true, Ordering::SeqCst);
            let status = describe_exit(child.wait().await);
            if stopping.load(Ordering::SeqCst) {
                tracing::debug!(provider = %id, %status, "plugin worker stopped");
            } else {
                if let Ok(mut c) = crashes.lock() {
                    c.push_back(Instant::now());
                }
                tracing::warn!(provider = %id, %status, "plugin worker ended");
                if let Some(o) = &observer {
                    let _ = o.send(WorkerNews::Ended {
                        id: id.clone(),
                        status: status.clone(),
                    });
                }
            }
            let waiting: Vec<_> = pending
                .lock()
                .map(|mut p| p.drain().collect())
                .unwrap_or_default();
            for (_, tx) in waiting {
                let _ = tx.send(Outcome::Died(status.clone()));
            }
        });
        Ok(worker)
    }

    /// Sends one request and waits for its answer, under the deadline.
    pub async fn call(&self, op: &'static str, request: &[u8]) -> Result<Vec<u8>> {
        let worker = self.worker().await?;
        let id = worker.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = worker.pending.lock() {
            p.insert(id, tx);
        }
        let bytes = frame::encode(CALL, id, request);
        let sent = async {
            let mut stdin = worker.stdin.lock().await;
            stdin.write_all(&bytes).await?;
            stdin.flush().await
        };
        let outcome = tokio::time::timeout(self.spec.deadline, async {
            if sent.await.is_err() {
                // The pipe is closed: the reader reports how the worker ended.
            }
            rx.await
        })
        .await;
        match outcome {
            Ok(Ok(Outcome::Answer(bytes))) => Ok(bytes),
            Ok(Ok(Outcome::Died(status))) => Err(Error::WorkerCrashed {
                id: self.spec.id.clone(),
                op,
                status,
            }),
            Ok(Err(_)) => Err(Error::WorkerCrashed {
                id: self.spec.id.clone(),
                op,
                status: "ended".into(),
            }),
            Err(_) => {
                if let Ok(mut p) = worker.pending.lock() {
                    p.remove(&id);
                }
                worker.kill();
                Err(Error::Deadline {
                    id: self.spec.id.clone(),
                    op,
                    ms: self.spec.deadline.as_millis() as u64,
                    action: "its worker process was killed and restarts on the next call",
                })
            }
        }
    }

    /// Stops the worker process.
    pub async fn shutdown(&self) {
        if let Some(w) = self.current.lock().await.take() {
            w.stopping.store(true, Ordering::SeqCst);
            w.kill();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if let Ok(mut current) = self.current.try_lock()
            && let Some(w) = current.take()
        {
            w.stopping.store(true, Ordering::SeqCst);
            w.kill();
        }
    }
}
