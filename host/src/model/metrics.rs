//! The daemon's metrics, served at `GET /metrics` in Prometheus's text format: what an
//! operator graphs and alerts on (activations, MFA failures, lockouts, provider latency,
//! the store's commit time, HTTP answers, refused connections).
//!
//! Counters of what happened to rolegate's state (`rolegate_events_total`) are counted only
//! once the write that raised them has committed, durably: a write undone, or a batch that
//! did not commit, counts nothing. Everything here is process-wide and costs an atomic add
//! or two on the request path.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The upper bounds (seconds) of every histogram's buckets: from half a millisecond (a
/// commit, a quick provider call) to 10 s (an SMS gateway at its deadline).
pub const BUCKETS_S: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram of durations with [`BUCKETS_S`].
#[derive(Debug)]
pub struct Histogram {
    /// Observations at or under each bound (not cumulative; summed when rendered).
    buckets: [AtomicU64; BUCKETS_S.len()],
    /// Observations over the last bound.
    over: AtomicU64,
    /// The observations' sum, in nanoseconds.
    sum_ns: AtomicU64,
}

impl Histogram {
    /// An empty histogram.
    pub const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; BUCKETS_S.len()],
            over: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        match BUCKETS_S.iter().position(|b| s <= *b) {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.buckets
            .iter()
            .chain([&self.over])
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }

    /// The recorded durations' sum.
    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_ns.load(Ordering::Relaxed))
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0u64;
        for (bound, n) in BUCKETS_S.iter().zip(&self.buckets) {
            cumulative += n.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.over.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

/// One provider's calls: how long they took, how many failed and why, and its health as the
/// host sees it.
#[derive(Debug, Default)]
pub struct ProviderCalls {
    /// Each operation's figures, by the SDK's operation name.
    by_op: Mutex<BTreeMap<&'static str, Arc<OpCalls>>>,
    /// Failed calls, by (operation, kind).
    failed: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// The health the host sees (0 ok, 1 degraded, 2 down), once it is tracked.
    health: AtomicI64,
}

/// The calls of one operation of one provider.
#[derive(Debug, Default)]
struct OpCalls {
    /// How long they took.
    seconds: Histogram,
}

impl ProviderCalls {
    /// Records one call of `op` that took `took`; `failure` names its kind when it failed
    /// (`deadline`, `crash`, `unavailable`, … as in metrics.md).
    pub fn observe(&self, op: &'static str, took: Duration, failure: Option<&'static str>) {
        let calls = match self.by_op.lock() {
            Ok(mut m) => Arc::clone(m.entry(op).or_default()),
            Err(_) => return,
        };
        calls.seconds.observe(took);
        if let Some(kind) = failure
            && let Ok(mut f) = self.failed.lock()
        {
            *f.entry((op, kind)).or_default() += 1;
        }
    }

    /// Publishes the provider's health as the host sees it (0 ok, 1 degraded, 2 down).
    pub fn set_health(&self, level: u8) {
        self.health.store(i64::from(level) + 1, Ordering::Relaxed);
    }

    /// Failed calls of `op` of this kind so far.
    pub fn failures(&self, op: &'static str, kind: &'static str) -> u64 {
        self.failed
            .lock()
            .map(|f| f.get(&(op, kind)).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// Status codes are below this (HTTP's are 100–599).
const STATUS_CODES: usize = 600;

/// The process's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Committed events, by (event id, provider or "").
    events: Mutex<BTreeMap<(i64, String), u64>>,
    /// HTTP answers, by status code (HTTP's codes are all below 600).
    http_status: [AtomicU64; STATUS_CODES],
    /// How long the server took to answer each HTTP request.
    pub http_seconds: Histogram,
    /// How long each store write waited for its durable commit (queue, batch, fsync).
    pub store_write_seconds: Histogram,
    /// How long each group-commit batch held the database's write lock, begin to commit.
    pub store_batch_seconds: Histogram,
    /// PostgreSQL: how long each batch held what all instances take in turn (the store and
    /// the chain's head for its whole length, or the head alone while its events are chained).
    pub store_chain_seconds: Histogram,
    /// Writes whose batch did not commit (a full disk, an I/O error, a lost connection).
    pub store_commit_failures: AtomicU64,
    /// Statements PostgreSQL's writer sent ahead, with its batch's begin.
    pub store_leads: AtomicU64,
    /// Batches rolled back to their start to run a write alone (PostgreSQL).
    pub store_rewinds: AtomicU64,
    /// Each provider's calls, by provider id.
    providers: Mutex<BTreeMap<String, Arc<ProviderCalls>>>,
    /// Connections open now.
    pub connections_open: AtomicI64,
    /// Connections closed at once: over `max_connections` or the client's share.
    pub connections_refused: AtomicU64,
    /// When the process started (Unix seconds), once [`Metrics::started`] is called.
    start_time_s: AtomicI64,
}

/// The process's metrics.
pub static METRICS: Metrics = Metrics::new();

/// Events a write appended: (event id, provider).
pub type Appended = Vec<(i64, Option<String>)>;

thread_local! {
    /// The events appended by the write running on this thread, while a writer collects them.
    static APPENDED: RefCell<Option<Appended>> = const { RefCell::new(None) };
}

/// Runs one store write, returning what it returned and the events it appended (to be
/// counted once its batch commits: see [`Metrics::committed`]).
pub fn collect_events<T>(write: impl FnOnce() -> T) -> (T, Appended) {
    APPENDED.with(|a| *a.borrow_mut() = Some(Vec::new()));
    let out = write();
    let appended = APPENDED.with(|a| a.borrow_mut().take()).unwrap_or_default();
    (out, appended)
}

/// Notes an appended event, when the write that appends it is being collected.
pub fn appended(id: i64, provider: Option<&str>) {
    APPENDED.with(|a| {
        if let Some(v) = a.borrow_mut().as_mut() {
            v.push((id, provider.map(str::to_owned)));
        }
    });
}

/// How many requests are in each unfinished state now, read from the store when scraped.
pub type InFlight = Vec<(&'static str, i64)>;

impl Metrics {
    /// Empty metrics.
    pub const fn new() -> Self {
        Self {
            events: Mutex::new(BTreeMap::new()),
            http_status: [const { AtomicU64::new(0) }; STATUS_CODES],
            http_seconds: Histogram::new(),
            store_write_seconds: Histogram::new(),
            store_batch_seconds: Histogram::new(),
            store_chain_seconds: Histogram::new(),
            store_commit_failures: AtomicU64::new(0),
            store_leads: AtomicU64::new(0),
            store_rewinds: AtomicU64::new(0),
            providers: Mutex::new(BTreeMap::new()),
            connections_open: AtomicI64::new(0),
            connections_refused: AtomicU64::new(0),
            start_time_s: AtomicI64::new(0),
        }
    }

    /// Notes when the daemon started.
    pub fn started(&self, unix_s: i64) {
        self.start_time_s.store(unix_s, Ordering::Relaxed);
    }

    /// Counts the events of a write whose batch committed.
    pub fn committed(&self, events: Appended) {
        if events.is_empty() {
            return;
        }
        if let Ok(mut m) = self.events.lock() {
            for (id, provider) in events {
                *m.entry((id, provider.unwrap_or_default())).or_default() += 1;
            }
        }
    }

    /// How many committed events had `id` (and `provider`, when given).
    pub fn events(&self, id: i64, provider: Option<&str>) -> u64 {
        self.events.lock().map_or(0, |m| {
            m.iter()
                .filter(|((i, p), _)| *i == id && provider.is_none_or(|want| p == want))
                .map(|(_, n)| n)
                .sum()
        })
    }

    /// Counts one HTTP answer and how long it took.
    pub fn http(&self, status: u16, took: Duration) {
        if let Some(n) = self.http_status.get(usize::from(status)) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        self.http_seconds.observe(took);
    }

    /// How many HTTP answers had `status`.
    pub fn http_answers(&self, status: u16) -> u64 {
        self.http_status
            .get(usize::from(status))
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// The call figures of provider `id` (made on its first use).
    pub fn provider(&self, id: &str) -> Arc<ProviderCalls> {
        match self.providers.lock() {
            Ok(mut m) => Arc::clone(m.entry(id.to_owned()).or_default()),
            Err(_) => Arc::default(),
        }
    }

    /// Everything, in Prometheus's text exposition format (version 0.0.4).
    pub fn render(&self, in_flight: &InFlight) -> String {
        let mut out = String::with_capacity(8 * 1024);
        head(
            &mut out,
            "rolegate_build_info",
            "gauge",
            "The running version (always 1).",
        );
        let _ = writeln!(
            &mut out,
            "rolegate_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        scalar(
            &mut out,
            "rolegate_start_time_seconds",
            "gauge",
            "When the daemon started, in Unix seconds.",
            self.start_time_s.load(Ordering::Relaxed),
        );

        head(
            &mut out,
            "rolegate_events_total",
            "counter",
            "Events committed to the event log since start, by event id (docs/events.md) and provider.",
        );
        if let Ok(m) = self.events.lock() {
            for ((id, provider), n) in m.iter() {
                let _ = writeln!(
                    &mut out,
                    "rolegate_events_total{{id=\"{id}\",provider=\"{}\"}} {n}",
                    escape(provider)
                );
            }
        }

        head(
            &mut out,
            "rolegate_requests",
            "gauge",
            "Requests in each unfinished state now (read from the store when scraped).",
        );
        for (state, n) in in_flight {
            let _ = writeln!(&mut out, "rolegate_requests{{state=\"{state}\"}} {n}");
        }

        head(
            &mut out,
            "rolegate_provider_call_duration_seconds",
            "histogram",
            "How long each call into a provider took, by provider id and operation.",
        );
        // (provider, operation, its figures), ordered by provider then operation.
        let mut calls: Vec<(String, &'static str, Arc<OpCalls>)> = Vec::new();
        let mut failed: Vec<(String, &'static str, &'static str, u64)> = Vec::new();
        let mut health: Vec<(String, i64)> = Vec::new();
        if let Ok(providers) = self.providers.lock() {
            for (id, p) in providers.iter() {
                if let Ok(ops) = p.by_op.lock() {
                    calls.extend(ops.iter().map(|(op, c)| (escape(id), *op, Arc::clone(c))));
                }
                if let Ok(f) = p.failed.lock() {
                    failed.extend(f.iter().map(|((op, kind), n)| (escape(id), *op, *kind, *n)));
                }
                let level = p.health.load(Ordering::Relaxed);
                if level > 0 {
                    health.push((escape(id), level - 1));
                }
            }
        }
        for (id, op, c) in &calls {
            let labels = format!("provider=\"{id}\",op=\"{op}\"");
            c.seconds
                .render(&mut out, "rolegate_provider_call_duration_seconds", &labels);
        }
        head(
            &mut out,
            "rolegate_provider_call_failures_total",
            "counter",
            "Provider calls that failed, by provider id, operation and kind (deadline, crash, crash_loop, protocol, load, unavailable, internal, panicked, config: the provider's failures; bad_input, unsupported: the request refused).",
        );
        for (id, op, kind, n) in &failed {
            let _ = writeln!(
                &mut out,
                "rolegate_provider_call_failures_total{{provider=\"{id}\",op=\"{op}\",kind=\"{kind}\"}} {n}"
            );
        }
        head(
            &mut out,
            "rolegate_provider_health",
            "gauge",
            "Each provider's health as the host sees it from its calls: 0 ok, 1 degraded, 2 down.",
        );
        for (id, level) in &health {
            let _ = writeln!(
                &mut out,
                "rolegate_provider_health{{provider=\"{id}\"}} {level}"
            );
        }

        head(
            &mut out,
            "rolegate_store_write_duration_seconds",
            "histogram",
            "How long each write waited for its durable commit (queue, group commit, fsync).",
        );
        self.store_write_seconds
            .render(&mut out, "rolegate_store_write_duration_seconds", "");
        head(
            &mut out,
            "rolegate_store_batch_duration_seconds",
            "histogram",
            "How long each group-commit batch held the database's write lock, from its begin to its commit (PostgreSQL: the locks of the accounts it writes for, or of the whole store).",
        );
        self.store_batch_seconds
            .render(&mut out, "rolegate_store_batch_duration_seconds", "");
        head(
            &mut out,
            "rolegate_store_chain_hold_seconds",
            "histogram",
            "PostgreSQL: how long each batch spent on what every instance sharing the database takes in turn: the whole store for a batch that may change anything; for a batch on accounts, its events' chaining and commit (a wait for another instance's turn included).",
        );
        self.store_chain_seconds
            .render(&mut out, "rolegate_store_chain_hold_seconds", "");
        scalar(
            &mut out,
            "rolegate_store_commit_failures_total",
            "counter",
            "Writes whose batch did not commit (a full disk, an I/O error, a lost database connection).",
            self.store_commit_failures.load(Ordering::Relaxed),
        );
        scalar(
            &mut out,
            "rolegate_store_leads_total",
            "counter",
            "Statements PostgreSQL's writer sent back to back with a batch's begin, before their writes ran.",
            self.store_leads.load(Ordering::Relaxed),
        );
        scalar(
            &mut out,
            "rolegate_store_rewinds_total",
            "counter",
            "Times a PostgreSQL batch was rolled back to its start and its writes so far run again: a failed write, or one that did not run the statement sent ahead for it.",
            self.store_rewinds.load(Ordering::Relaxed),
        );

        head(
            &mut out,
            "rolegate_http_requests_total",
            "counter",
            "HTTP requests answered, by status code.",
        );
        for (code, n) in self.http_status.iter().enumerate() {
            let n = n.load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(
                    &mut out,
                    "rolegate_http_requests_total{{code=\"{code}\"}} {n}"
                );
            }
        }
        head(
            &mut out,
            "rolegate_http_request_duration_seconds",
            "histogram",
            "How long the server took to answer each HTTP request.",
        );
        self.http_seconds
            .render(&mut out, "rolegate_http_request_duration_seconds", "");
        scalar(
            &mut out,
            "rolegate_connections_open",
            "gauge",
            "Client connections open now.",
            self.connections_open.load(Ordering::Relaxed),
        );
        scalar(
            &mut out,
            "rolegate_connections_refused_total",
            "counter",
            "Connections closed at once: over max_connections or the client's max_connections_per_client.",
            self.connections_refused.load(Ordering::Relaxed),
        );
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A metric family of one unlabelled sample.
fn scalar(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    head(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format needs it: backslash, double quote and newline escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets_sum_and_count() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "a=\"b\"");
        assert!(
            out.contains("x_seconds_bucket{a=\"b\",le=\"0.0005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{a=\"b\",le=\"0.0025\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{a=\"b\",le=\"0.005\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{a=\"b\",le=\"10\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{a=\"b\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_sum{a=\"b\"} 60.0033\n"), "{out}");
        assert!(out.contains("x_seconds_count{a=\"b\"} 3\n"), "{out}");
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn only_collected_writes_note_their_events_and_label_values_are_escaped() {
        // Outside a collecting write, nothing is kept.
        appended(103, Some("ignored"));
        let ((), got) = collect_events(|| {
            appended(103, Some("totp"));
            appended(200, None);
        });
        assert_eq!(got, vec![(103, Some("totp".into())), (200, None)]);
        let ((), none) = collect_events(|| ());
        assert!(none.is_empty());

        let m = Metrics::new();
        m.committed(got);
        m.committed(vec![(103, Some("we\"ird\\id\n".into()))]);
        assert_eq!(m.events(103, None), 2);
        assert_eq!(m.events(103, Some("totp")), 1);
        assert_eq!(m.events(200, Some("")), 1);
        let text = m.render(&vec![("active", 7)]);
        assert!(text.contains("rolegate_events_total{id=\"103\",provider=\"totp\"} 1\n"));
        assert!(text.contains("rolegate_events_total{id=\"200\",provider=\"\"} 1\n"));
        assert!(
            text.contains("provider=\"we\\\"ird\\\\id\\n\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("rolegate_requests{state=\"active\"} 7\n"));
        // Every sample line belongs to a family declared before it.
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.insert(rest.split(' ').next().unwrap_or_default().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| declared.contains(*f)))
                    .unwrap_or(name);
                assert!(declared.contains(family), "{line} has no # TYPE before it");
            }
        }
    }

    #[test]
    fn provider_calls_count_failures_by_operation() {
        let m = Metrics::new();
        let calls = m.provider("sms");
        calls.observe("challenge_start", Duration::from_millis(40), None);
        calls.observe("challenge_start", Duration::from_secs(11), Some("deadline"));
        calls.set_health(1);
        assert!(Arc::ptr_eq(&calls, &m.provider("sms")));
        let text = m.render(&Vec::new());
        assert!(text.contains("rolegate_provider_call_duration_seconds_count{provider=\"sms\",op=\"challenge_start\"} 2\n"), "{text}");
        assert!(
            text.contains(
                "rolegate_provider_call_failures_total{provider=\"sms\",op=\"challenge_start\",kind=\"deadline\"} 1\n"
            ),
            "{text}"
        );
        assert_eq!(calls.failures("challenge_start", "deadline"), 1);
        assert!(
            text.contains("rolegate_provider_health{provider=\"sms\"} 1\n"),
            "{text}"
        );
    }
}
