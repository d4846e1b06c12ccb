//! Loading provider plugins and calling them, in-process or in a supervised worker process.

pub mod check;
pub mod frame;
pub mod health;
pub mod library;
pub mod process;
mod settings;
pub mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rolegate_sdk::abi::{Instance, Table};
use rolegate_sdk::message::{
    ChallengeContext, EnrollContext, Health, Input, ProviderInfo, Request, Response, Step,
};
use rolegate_sdk::{Bytes, ProviderError};
use serde::de::DeserializeOwned;

use crate::model::error::{Error, Result};
use health::{HealthRule, Observed, Seen, Tracker};
pub use settings::{Isolation, PluginsConfig, ProviderConfig};

/// Hung in-process calls tolerated before a provider refuses new calls.
const MAX_ABANDONED: usize = 16;

/// A call by a provider that says it is quick taking longer than this counts as a strike.
const QUICK_LIMIT: Duration = Duration::from_millis(10);

/// Strikes after which a "quick" provider's calls go back to blocking threads.
const QUICK_STRIKES: usize = 3;

/// A plugin library that passed the loader's checks, ready to make instances.
#[derive(Debug, Clone)]
pub struct Plugin {
    /// The provider id from the config.
    pub id: String,
    /// The library file.
    pub library: PathBuf,
    /// The SHA-256 of the bytes that were checked (and loaded).
    pub sha256: String,
    /// Where instances run.
    pub isolation: Isolation,
    /// The deadline of each call.
    pub deadline: Duration,
    /// How its health is judged from its calls.
    pub health_rule: HealthRule,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    InProcess(Table),
    Process {
        exe: PathBuf,
        max_crashes: usize,
        crash_window: Duration,
        observer: Option<process::Observer>,
    },
}

/// The executable that serves `plugin-worker`: the config's, or the running binary.
pub fn worker_exe(plugins: &PluginsConfig) -> Result<PathBuf> {
    match &plugins.worker {
        Some(p) => Ok(p.clone()),
        None => std::env::current_exe().map_err(|source| Error::Io {
            what: "cannot locate the rolegate executable for plugin workers".into(),
            source,
        }),
    }
}

impl Plugin {
    /// Checks (and for in-process isolation, loads) a library.
    ///
    /// For `process` isolation the host only reads, hashes and checks the file: the library's
    /// code runs in the worker alone, which loads exactly the bytes the host checked.
    pub async fn open(
        id: &str,
        library: &Path,
        pin: Option<&str>,
        isolation: Isolation,
        deadline: Duration,
        plugins: &PluginsConfig,
    ) -> Result<Self> {
        let (id2, lib2, pin2) = (id.to_string(), library.to_path_buf(), pin.map(String::from));
        let joined = tokio::task::spawn_blocking(move || match isolation {
            Isolation::InProcess => {
                library::open(&id2, &lib2, pin2.as_deref()).map(|l| (l.sha256, Some(l.table)))
            }
            Isolation::Process => {
                library::inspect(&id2, &lib2, pin2.as_deref()).map(|i| (i.sha256, None))
            }
        })
        .await;
        let (sha256, table) = joined.map_err(|e| Error::Load {
            id: id.to_string(),
            library: library.to_path_buf(),
            reason: format!("the loader failed: {e}"),
        })??;
        let kind = match (isolation, table) {
            (Isolation::InProcess, Some(t)) => Kind::InProcess(t),
            _ => Kind::Process {
                exe: worker_exe(plugins)?,
                max_crashes: plugins.max_crashes,
                crash_window: Duration::from_secs(plugins.crash_window_s),
                observer: None,
            },
        };
        Ok(Self {
            id: id.to_string(),
            library: library.to_path_buf(),
            sha256,
            isolation,
            deadline,
            health_rule: plugins.health_rule()?,
            kind,
        })
    }

    /// Reports worker crashes of this plugin's instances to `observer`.
    pub fn observe(mut self, observer: Option<process::Observer>) -> Self {
        if let Kind::Process { observer: o, .. } = &mut self.kind {
            *o = observer;
        }
        self
    }

    /// Creates an instance from settings and reads its info.
    pub async fn instantiate(&self, settings: &serde_json::Value) -> Result<LoadedProvider> {
        if !settings.is_object() {
            return Err(Error::Load {
                id: self.id.clone(),
                library: self.library.clone(),
                reason: "settings must be a table".into(),
            });
        }
        let settings_json = serde_json::to_vec(settings).map_err(|e| Error::Load {
            id: self.id.clone(),
            library: self.library.clone(),
            reason: format!("settings cannot be encoded: {e}"),
        })?;
        let backend = match &self.kind {
            Kind::InProcess(table) => {
                let table = *table;
                let created = tokio::time::timeout(
                    self.deadline,
                    tokio::task::spawn_blocking(move || table.create(&settings_json)),
                )
                .await;
                let instance = match created {
                    Err(_) => {
                        return Err(Error::Deadline {
                            id: self.id.clone(),
                            op: "create",
                            ms: self.deadline.as_millis() as u64,
                            action: "its thread is abandoned",
                        });
                    }
                    Ok(Err(e)) => {
                        return Err(Error::Load {
                            id: self.id.clone(),
                            library: self.library.clone(),
                            reason: format!("create failed: {e}"),
                        });
                    }
                    Ok(Ok(Err(source))) => {
                        return Err(Error::Settings {
                            id: self.id.clone(),
                            library: self.library.clone(),
                            source,
                        });
                    }
                    Ok(Ok(Ok(i))) => i,
                };
                Backend::InProcess {
                    instance: Arc::new(instance),
                    abandoned: Arc::new(AtomicUsize::new(0)),
                    inline: AtomicBool::new(false),
                    strikes: AtomicUsize::new(0),
                }
            }
            Kind::Process {
                exe,
                max_crashes,
                crash_window,
                observer,
            } => {
                let spec = process::Spec {
                    id: self.id.clone(),
                    exe: exe.clone(),
                    library: self.library.clone(),
                    sha256: self.sha256.clone(),
                    settings: settings_json,
                    deadline: self.deadline,
                    max_crashes: *max_crashes,
                    crash_window: *crash_window,
                    observer: observer.clone(),
                };
                Backend::Process(Arc::new(process::Supervisor::start(spec).await?))
            }
        };
        let mut provider = LoadedProvider {
            plugin: self.clone(),
            info: None,
            backend,
            calls: crate::model::metrics::METRICS.provider(&self.id),
            health: Arc::new(Tracker::new(&self.id, self.health_rule)),
            sunset: None,
        };
        let info: ProviderInfo = provider.call(&Request::Info).await?;
        if let Backend::InProcess { inline, .. } = &provider.backend {
            inline.store(info.quick, Ordering::Relaxed);
        }
        provider.info = Some(info);
        Ok(provider)
    }
}

enum Backend {
    InProcess {
        instance: Arc<Instance>,
        abandoned: Arc<AtomicUsize>,
        /// Calls run on the caller's thread (the provider says it is quick, and has kept
        /// its word so far).
        inline: AtomicBool,
        /// Quick calls that took longer than [`QUICK_LIMIT`].
        strikes: AtomicUsize,
    },
    Process(Arc<process::Supervisor>),
}

/// A provider instance the host can call.
pub struct LoadedProvider {
    /// The library it came from.
    pub plugin: Plugin,
    info: Option<ProviderInfo>,
    backend: Backend,
    /// Its calls' durations and failures, for `/metrics`.
    calls: Arc<crate::model::metrics::ProviderCalls>,
    /// Its health, as the host sees it from its calls.
    health: Arc<Tracker>,
    /// When roles stop accepting it (`sunset` in its config), if ever.
    sunset: Option<jiff::Timestamp>,
}

impl std::fmt::Debug for LoadedProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedProvider")
            .field("id", &self.plugin.id)
            .field("isolation", &self.plugin.isolation)
            .finish_non_exhaustive()
    }
}

impl LoadedProvider {
    /// The provider id from the config.
    pub fn id(&self) -> &str {
        &self.plugin.id
    }

    /// When roles stop accepting the provider (its `sunset`), if ever.
    pub fn sunset(&self) -> Option<jiff::Timestamp> {
        self.sunset
    }

    /// The provider's sunset, when it has passed at `now`: no new enrolment or challenge.
    pub fn retired_at(&self, now: jiff::Timestamp) -> Option<jiff::Timestamp> {
        self.sunset.filter(|s| now >= *s)
    }

    /// What the provider said about itself when it was created.
    pub fn info(&self) -> Option<&ProviderInfo> {
        self.info.as_ref()
    }

    /// Whether in-process calls currently run on the caller's thread (a quick provider).
    pub fn calls_inline(&self) -> bool {
        matches!(&self.backend, Backend::InProcess { inline, .. } if inline.load(Ordering::Relaxed))
    }

    /// Its health as the host sees it from its calls (beside the provider's own `health`).
    pub fn seen(&self) -> Seen {
        self.health.status()
    }

    /// What the host has seen of its calls, with the detail an admin reads.
    pub fn observed(&self) -> Observed {
        self.health.observed()
    }

    /// Sends raw request bytes, returning the raw response; never blocks the async runtime.
    pub async fn call_raw(&self, op: &'static str, request: Vec<u8>) -> Result<Vec<u8>> {
        let started = std::time::Instant::now();
        let answer = self.call_backend(op, request).await;
        self.calls.observe(
            op,
            started.elapsed(),
            answer.as_ref().err().and_then(Error::call_failure_kind),
        );
        answer
    }

    async fn call_backend(&self, op: &'static str, request: Vec<u8>) -> Result<Vec<u8>> {
        match &self.backend {
            Backend::InProcess {
                instance,
                abandoned,
                inline,
                strikes,
            } => {
                if inline.load(Ordering::Relaxed) {
                    // A quick provider's call costs microseconds: handing it to a blocking
                    // thread would cost more than the call. A slow call stalls this thread
                    // once; after a few the provider loses the privilege.
                    let started = std::time::Instant::now();
                    let answer = instance.call_raw(&request);
                    let took = started.elapsed();
                    if took > QUICK_LIMIT {
                        let n = strikes.fetch_add(1, Ordering::Relaxed) + 1;
                        if n >= QUICK_STRIKES && inline.swap(false, Ordering::Relaxed) {
                            tracing::warn!(
                                provider = %self.plugin.id,
                                op,
                                took_ms = took.as_millis() as u64,
                                "the provider says its calls are quick, but {n} took longer than {} ms: its calls now run on blocking threads",
                                QUICK_LIMIT.as_millis()
                            );
                        }
                    }
                    return Ok(answer);
                }
                let hung = abandoned.load(Ordering::Relaxed);
                if hung >= MAX_ABANDONED {
                    return Err(Error::Provider {
                        id: self.plugin.id.clone(),
                        op,
                        source: ProviderError::unavailable(format!(
                            "{hung} calls hung past their deadline; refusing new calls (run it with isolation = \"process\" so hung calls can be killed)"
                        )),
                    });
                }
                let instance = Arc::clone(instance);
                let abandoned_after = Arc::clone(abandoned);
                let handle = tokio::task::spawn_blocking(move || instance.call_raw(&request));
                match tokio::time::timeout(self.plugin.deadline, handle).await {
                    Ok(Ok(bytes)) => Ok(bytes),
                    Ok(Err(e)) => Err(Error::Provider {
                        id: self.plugin.id.clone(),
                        op,
                        source: ProviderError::internal(format!("the call's thread failed: {e}")),
                    }),
                    Err(_) => {
                        abandoned_after.fetch_add(1, Ordering::Relaxed);
                        Err(Error::Deadline {
                            id: self.plugin.id.clone(),
                            op,
                            ms: self.plugin.deadline.as_millis() as u64,
                            action: "an in-process call cannot be stopped, so its thread is abandoned (use isolation = \"process\")",
                        })
                    }
                }
            }
            Backend::Process(sup) => sup.call(op, &request).await,
        }
    }

    /// Sends a request and decodes the provider's answer, counting its outcome toward the
    /// provider's health. A provider the host sees `down` is not called (but for a trial call
    /// every `down_retry_s`, and `health`, which is always asked).
    pub async fn call<T: DeserializeOwned>(&self, request: &Request) -> Result<T> {
        let op = request.op();
        let probe = matches!(request, Request::Health);
        if !probe && !self.health.admits() {
            let o = self.health.observed();
            return Err(Error::Provider {
                id: self.plugin.id.clone(),
                op,
                source: ProviderError::unavailable(format!(
                    "the host sees it down ({} failed calls in a row; newest: {}), so it is not called; a trial call goes through every {} s",
                    o.failures_in_a_row,
                    o.reason.as_deref().unwrap_or("unknown"),
                    self.plugin.health_rule.retry_after.as_secs()
                )),
            });
        }
        let started = std::time::Instant::now();
        let answer = self.call_decoded(op, request).await;
        let failure = answer.as_ref().err().and_then(Error::call_failure_kind);
        self.calls.observe(op, started.elapsed(), failure);
        match (&answer, failure) {
            (Err(e), Some(kind)) if e.is_provider_fault() => {
                // Every failed call is in the log (a down provider is not called, so an outage
                // writes a few lines, not one per request); its health's changes at `warn`.
                tracing::info!(provider = %self.plugin.id, op, kind, "provider call failed: {e}");
                self.health.failed(kind, e.to_string());
            }
            // The provider's own health answer says nothing of its calls: only its faults
            // (a crash, a hang) count.
            _ if probe => {}
            _ => self.health.succeeded(),
        }
        answer
    }

    async fn call_decoded<T: DeserializeOwned>(
        &self,
        op: &'static str,
        request: &Request,
    ) -> Result<T> {
        let bytes = serde_json::to_vec(request).map_err(|e| Error::Protocol {
            id: self.plugin.id.clone(),
            op,
            message: format!("the request cannot be encoded: {e}"),
        })?;
        let answer = self.call_backend(op, bytes).await?;
        let response: Response<T> =
            serde_json::from_slice(&answer).map_err(|e| Error::Protocol {
                id: self.plugin.id.clone(),
                op,
                message: e.to_string(),
            })?;
        response.into_result().map_err(|source| Error::Provider {
            id: self.plugin.id.clone(),
            op,
            source,
        })
    }

    /// Asks the provider for its health.
    pub async fn health(&self) -> Result<Health> {
        self.call(&Request::Health).await
    }

    /// Begins an enrolment.
    pub async fn enroll_start(&self, ctx: EnrollContext) -> Result<Step> {
        self.call(&Request::EnrollStart { ctx }).await
    }

    /// Continues an enrolment.
    pub async fn enroll_continue(
        &self,
        ctx: EnrollContext,
        state: Bytes,
        input: Input,
    ) -> Result<Step> {
        self.call(&Request::EnrollContinue { ctx, state, input })
            .await
    }

    /// Begins a challenge.
    pub async fn challenge_start(&self, ctx: ChallengeContext) -> Result<Step> {
        self.call(&Request::ChallengeStart { ctx }).await
    }

    /// Continues a challenge with the user's answer.
    pub async fn challenge_continue(
        &self,
        ctx: ChallengeContext,
        state: Bytes,
        input: Input,
    ) -> Result<Step> {
        self.call(&Request::ChallengeContinue { ctx, state, input })
            .await
    }

    /// Polls an out-of-band challenge.
    pub async fn challenge_poll(&self, ctx: ChallengeContext, state: Bytes) -> Result<Step> {
        self.call(&Request::ChallengePoll { ctx, state }).await
    }

    /// A challenge's next step: the user's input judged, or (with none) the provider polled.
    pub async fn challenge_next(
        &self,
        ctx: ChallengeContext,
        state: Bytes,
        input: Option<Input>,
    ) -> Result<Step> {
        match input {
            Some(input) => self.challenge_continue(ctx, state, input).await,
            None => self.challenge_poll(ctx, state).await,
        }
    }

    /// Abandons a challenge.
    pub async fn cancel(&self, ctx: ChallengeContext, state: Bytes) -> Result<()> {
        let _: Option<serde_json::Value> = self.call(&Request::Cancel { ctx, state }).await?;
        Ok(())
    }

    /// Stops a worker process, if any.
    pub async fn shutdown(&self) {
        if let Backend::Process(sup) = &self.backend {
            sup.shutdown().await;
        }
    }
}

/// Every configured provider, by id.
#[derive(Debug, Default)]
pub struct Providers {
    by_id: BTreeMap<String, Arc<LoadedProvider>>,
}

impl Providers {
    /// Loads every configured provider; the first refusal stops the load and names the file.
    pub async fn load(plugins: &PluginsConfig, providers: &[ProviderConfig]) -> Result<Self> {
        Self::load_observed(plugins, providers, None).await
    }

    /// Like [`Providers::load`], reporting worker crashes to `observer`.
    pub async fn load_observed(
        plugins: &PluginsConfig,
        providers: &[ProviderConfig],
        observer: Option<process::Observer>,
    ) -> Result<Self> {
        let mut by_id = BTreeMap::new();
        for p in providers {
            let provider = load_observed(p, plugins, observer.clone()).await?;
            tracing::info!(
                provider = %p.id,
                library = %p.library.display(),
                isolation = %p.isolation,
                sha256 = %provider.plugin.sha256,
                "provider loaded"
            );
            by_id.insert(p.id.clone(), Arc::new(provider));
        }
        Ok(Self { by_id })
    }

    /// The provider with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<LoadedProvider>> {
        self.by_id.get(id)
    }

    /// The providers' ids, in order: what a role may name.
    pub fn ids(&self) -> impl Iterator<Item = &str> + Clone {
        self.by_id.keys().map(String::as_str)
    }

    /// All providers, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<LoadedProvider>> {
        self.by_id.values()
    }
}

/// Loads one configured provider.
pub async fn load_one(p: &ProviderConfig, plugins: &PluginsConfig) -> Result<LoadedProvider> {
    load_observed(p, plugins, None).await
}

/// Loads one configured provider, reporting its worker crashes to `observer`.
pub async fn load_observed(
    p: &ProviderConfig,
    plugins: &PluginsConfig,
    observer: Option<process::Observer>,
) -> Result<LoadedProvider> {
    if p.unpinned {
        tracing::warn!(provider = %p.id, library = %p.library.display(), "loading an unpinned plugin library");
    }
    let plugin = Plugin::open(
        &p.id,
        &p.library,
        p.sha256.as_deref(),
        p.isolation,
        p.deadline(plugins),
        plugins,
    )
    .await?
    .observe(observer);
    let sunset = p.sunset().map_err(|reason| Error::Load {
        id: p.id.clone(),
        library: p.library.clone(),
        reason,
    })?;
    let mut provider = plugin.instantiate(&p.settings_json()?).await?;
    provider.sunset = sunset;
    Ok(provider)
}
