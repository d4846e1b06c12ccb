//! A provider's health as the host sees it: from the outcomes of its recent calls, beside the
//! provider's own `health` answer. A provider that keeps failing turns `degraded`, then `down`,
//! and comes back by itself when its calls succeed again; each change is logged once.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How the host judges a provider from its calls (`[plugins]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthRule {
    /// The window in which failed calls are counted.
    pub window: Duration,
    /// Failed calls within the window that make a provider `degraded`.
    pub degraded_after: u32,
    /// Failed calls in a row (no success between) that make it `down`.
    pub down_after: u32,
    /// Successful calls in a row that bring a `degraded` provider back to `ok`.
    pub recover_after: u32,
    /// How often a `down` provider is given one trial call (the rest are refused at once).
    pub retry_after: Duration,
}

impl Default for HealthRule {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            degraded_after: 3,
            down_after: 5,
            recover_after: 3,
            retry_after: Duration::from_secs(30),
        }
    }
}

/// A provider's health as the host sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seen {
    /// Its calls succeed.
    Ok,
    /// Some of its recent calls failed.
    Degraded,
    /// Its recent calls all failed: it is treated as unavailable.
    Down,
}

impl Seen {
    /// The stable name (`ok`, `degraded`, `down`).
    pub fn as_str(self) -> &'static str {
        match self {
            Seen::Ok => "ok",
            Seen::Degraded => "degraded",
            Seen::Down => "down",
        }
    }

    /// The gauge value in `/metrics` (0 ok, 1 degraded, 2 down).
    pub fn level(self) -> u8 {
        self as u8
    }
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the host has seen of a provider, for `provider list` and the web page (admin detail).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Observed {
    /// The health the calls say.
    pub status: Seen,
    /// Why, when not `ok`: the newest failure's kind and the admin's detail.
    pub reason: Option<String>,
    /// When the status last changed (RFC 3339).
    pub since: String,
    /// Failed calls within the window.
    pub failures_in_window: u32,
    /// Failed calls since the last success.
    pub failures_in_a_row: u32,
}

/// One provider's record of its recent calls.
#[derive(Debug)]
pub struct Tracker {
    id: String,
    rule: HealthRule,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// When each failure within the window happened.
    failures: VecDeque<Instant>,
    in_a_row: u32,
    successes_in_a_row: u32,
    status: Seen,
    since: jiff::Timestamp,
    /// The newest failure: its kind and what the admin should read.
    last_failure: Option<(&'static str, String)>,
    /// When a `down` provider was last let through for a trial.
    last_trial: Option<Instant>,
}

impl Tracker {
    /// A provider with no call seen yet: `ok`.
    pub fn new(id: &str, rule: HealthRule) -> Self {
        crate::model::metrics::METRICS
            .provider(id)
            .set_health(Seen::Ok.level());
        Self {
            id: id.to_string(),
            rule,
            inner: Mutex::new(Inner {
                failures: VecDeque::new(),
                in_a_row: 0,
                successes_in_a_row: 0,
                status: Seen::Ok,
                since: jiff::Timestamp::now(),
                last_failure: None,
                last_trial: None,
            }),
        }
    }

    /// Records a call that got a usable answer.
    pub fn succeeded(&self) {
        self.record(Instant::now(), None);
    }

    /// Records a call that failed on the provider's side (`kind` as in the failures metric);
    /// `detail` is for the admin and names no secret.
    pub fn failed(&self, kind: &'static str, detail: String) {
        self.record(Instant::now(), Some((kind, detail)));
    }

    fn record(&self, now: Instant, failure: Option<(&'static str, String)>) {
        let Ok(mut g) = self.inner.lock() else {
            return;
        };
        match failure {
            Some(f) => {
                g.failures.push_back(now);
                g.in_a_row = g.in_a_row.saturating_add(1);
                g.successes_in_a_row = 0;
                g.last_failure = Some(f);
            }
            None => {
                g.in_a_row = 0;
                g.successes_in_a_row = g.successes_in_a_row.saturating_add(1);
            }
        }
        self.settle(&mut g, now);
    }

    /// Recomputes the status at `now`, logging and publishing a change.
    fn settle(&self, g: &mut Inner, now: Instant) {
        while g
            .failures
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > self.rule.window)
        {
            g.failures.pop_front();
        }
        let in_window = g.failures.len() as u32;
        let status = if g.in_a_row >= self.rule.down_after {
            Seen::Down
        } else if in_window >= self.rule.degraded_after
            && g.successes_in_a_row < self.rule.recover_after
        {
            Seen::Degraded
        } else {
            Seen::Ok
        };
        if status == g.status {
            return;
        }
        let was = g.status;
        g.status = status;
        g.since = jiff::Timestamp::now();
        match status {
            Seen::Ok => g.last_trial = None,
            // The first trial comes one interval after it went down, not at once.
            Seen::Down if was != Seen::Down => g.last_trial = Some(now),
            _ => {}
        }
        crate::model::metrics::METRICS
            .provider(&self.id)
            .set_health(status.level());
        let (kind, detail) = g
            .last_failure
            .as_ref()
            .map_or(("", ""), |(k, d)| (*k, d.as_str()));
        if status > was {
            tracing::warn!(
                provider = %self.id,
                health = %status,
                was = %was,
                failures_in_window = in_window,
                failures_in_a_row = g.in_a_row,
                kind,
                "provider {status}: {in_window} failed call(s) in {} s, {} in a row; newest: {detail}",
                self.rule.window.as_secs(),
                g.in_a_row
            );
        } else if status == Seen::Ok {
            tracing::warn!(
                provider = %self.id,
                health = %status,
                was = %was,
                "provider ok again: its calls succeed"
            );
        } else {
            tracing::warn!(
                provider = %self.id,
                health = %status,
                was = %was,
                "provider {status}, no longer {was}: its calls succeed again"
            );
        }
    }

    /// The health now (a window that has emptied brings a provider back).
    pub fn status(&self) -> Seen {
        let Ok(mut g) = self.inner.lock() else {
            return Seen::Ok;
        };
        self.settle(&mut g, Instant::now());
        g.status
    }

    /// What the host has seen, with the detail an admin reads.
    pub fn observed(&self) -> Observed {
        let Ok(mut g) = self.inner.lock() else {
            return Observed {
                status: Seen::Ok,
                reason: None,
                since: String::new(),
                failures_in_window: 0,
                failures_in_a_row: 0,
            };
        };
        self.settle(&mut g, Instant::now());
        Observed {
            status: g.status,
            reason: match (g.status, &g.last_failure) {
                (Seen::Ok, _) | (_, None) => None,
                (_, Some((kind, detail))) => Some(format!("{kind}: {detail}")),
            },
            since: g.since.to_string(),
            failures_in_window: g.failures.len() as u32,
            failures_in_a_row: g.in_a_row,
        }
    }

    /// Whether a call may go to the provider now: always unless it is `down`, and then one
    /// trial call every `retry_after`, so that it can come back by itself.
    pub fn admits(&self) -> bool {
        let Ok(mut g) = self.inner.lock() else {
            return true;
        };
        let now = Instant::now();
        self.settle(&mut g, now);
        if g.status != Seen::Down {
            return true;
        }
        match g.last_trial {
            Some(t) if now.saturating_duration_since(t) < self.rule.retry_after => false,
            _ => {
                g.last_trial = Some(now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> HealthRule {
        HealthRule {
            window: Duration::from_secs(60),
            degraded_after: 2,
            down_after: 4,
            recover_after: 2,
            retry_after: Duration::from_secs(30),
        }
    }

    #[test]
    fn failures_degrade_then_take_down_and_successes_bring_back() {
        let t = Tracker::new("health-unit-a", rule());
        assert_eq!(t.status(), Seen::Ok);
        t.failed("unavailable", "twilio said 401".into());
        assert_eq!(t.status(), Seen::Ok, "one failure is noise");
        t.failed("unavailable", "twilio said 401".into());
        assert_eq!(t.status(), Seen::Degraded);
        let o = t.observed();
        assert_eq!(o.failures_in_window, 2);
        assert_eq!(o.reason.as_deref(), Some("unavailable: twilio said 401"));
        t.failed("deadline", "no answer in 5000 ms".into());
        t.failed("deadline", "no answer in 5000 ms".into());
        assert_eq!(t.status(), Seen::Down);
        assert_eq!(t.observed().failures_in_a_row, 4);
        // One success: no longer down, still degraded (the window holds the failures).
        t.succeeded();
        assert_eq!(t.status(), Seen::Degraded);
        t.succeeded();
        assert_eq!(t.status(), Seen::Ok);
        assert_eq!(t.observed().reason, None);
    }

    #[test]
    fn a_down_provider_gets_one_trial_per_retry_interval() {
        let t = Tracker::new(
            "health-unit-b",
            HealthRule {
                retry_after: Duration::from_millis(100),
                ..rule()
            },
        );
        for _ in 0..4 {
            t.failed("crash", "signal 11 (SIGSEGV)".into());
        }
        assert_eq!(t.status(), Seen::Down);
        assert!(!t.admits(), "no call right after it went down");
        std::thread::sleep(Duration::from_millis(150));
        assert!(t.admits(), "one trial once the interval has passed");
        assert!(!t.admits(), "the next ones wait for the next interval");
        t.failed("crash", "signal 11 (SIGSEGV)".into());
        assert_eq!(t.status(), Seen::Down, "a failed trial keeps it down");
        assert!(!t.admits());
        std::thread::sleep(Duration::from_millis(150));
        assert!(t.admits());
        t.succeeded();
        assert_eq!(
            t.status(),
            Seen::Degraded,
            "a successful trial brings it back up"
        );
        assert!(t.admits());
    }

    #[test]
    fn failures_out_of_the_window_are_forgotten() {
        let t = Tracker::new("health-unit-c", rule());
        let long_ago = Instant::now()
            .checked_sub(Duration::from_secs(120))
            .unwrap_or_else(Instant::now);
        t.record(long_ago, Some(("internal", "x".into())));
        t.record(long_ago, Some(("internal", "x".into())));
        t.record(Instant::now(), None);
        assert_eq!(t.status(), Seen::Ok);
        assert_eq!(t.observed().failures_in_window, 0);
    }

    #[test]
    fn health_is_published_as_a_gauge() {
        let t = Tracker::new("health-unit-d", rule());
        for _ in 0..4 {
            t.failed("protocol", "not JSON".into());
        }
        let text =
            crate::model::metrics::METRICS.render(&crate::model::metrics::InFlight::default());
        assert!(
            text.contains("rolegate_provider_health{provider=\"health-unit-d\"} 2"),
            "{text}"
        );
    }
}
