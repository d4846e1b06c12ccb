//! The plugins' settings: those shared by all (`[plugins]`) and each provider's own
//! (`[[provider]]`), as the configuration file spells them.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::health::HealthRule;
use crate::model::error::{Error, Result};

/// Settings shared by all plugins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// The executable that serves `isolation = "process"` plugins (`rolegate plugin-worker`);
    /// the running `rolegate` binary when unset.
    #[serde(default)]
    pub worker: Option<PathBuf>,
    /// Deadline of one provider call, in milliseconds, unless a provider sets its own.
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    /// How many worker crashes within `crash_window_s` put a provider on hold.
    #[serde(default = "default_max_crashes")]
    pub max_crashes: usize,
    /// The window, in seconds, in which crashes are counted.
    #[serde(default = "default_crash_window_s")]
    pub crash_window_s: u64,
    /// The window, in seconds, in which a provider's failed calls are counted for its health.
    #[serde(default = "default_health_window_s")]
    pub health_window_s: u64,
    /// Failed calls within `health_window_s` that make a provider `degraded`.
    #[serde(default = "default_degraded_after")]
    pub degraded_after: u32,
    /// Failed calls in a row that make a provider `down` (refused at once, but for a trial).
    #[serde(default = "default_down_after")]
    pub down_after: u32,
    /// Successful calls in a row that bring a `degraded` provider back to `ok`.
    #[serde(default = "default_recover_after")]
    pub recover_after: u32,
    /// Seconds between the trial calls a `down` provider is given to come back.
    #[serde(default = "default_down_retry_s")]
    pub down_retry_s: u64,
}

fn default_health_window_s() -> u64 {
    60
}

fn default_degraded_after() -> u32 {
    3
}

fn default_down_after() -> u32 {
    5
}

fn default_recover_after() -> u32 {
    3
}

fn default_down_retry_s() -> u64 {
    30
}

fn default_deadline_ms() -> u64 {
    5_000
}

fn default_max_crashes() -> usize {
    5
}

fn default_crash_window_s() -> u64 {
    60
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            worker: None,
            deadline_ms: default_deadline_ms(),
            max_crashes: default_max_crashes(),
            crash_window_s: default_crash_window_s(),
            health_window_s: default_health_window_s(),
            degraded_after: default_degraded_after(),
            down_after: default_down_after(),
            recover_after: default_recover_after(),
            down_retry_s: default_down_retry_s(),
        }
    }
}

impl PluginsConfig {
    /// How the host judges providers from their calls; a clear error names a setting that
    /// cannot work.
    pub fn health_rule(&self) -> Result<HealthRule> {
        let bad = |message: String| Error::Invalid {
            what: "[plugins]".into(),
            message,
        };
        for (key, v) in [
            ("health_window_s", self.health_window_s),
            ("down_retry_s", self.down_retry_s),
            ("degraded_after", u64::from(self.degraded_after)),
            ("down_after", u64::from(self.down_after)),
            ("recover_after", u64::from(self.recover_after)),
        ] {
            if v == 0 {
                return Err(bad(format!("`{key}` must be at least 1, not 0")));
            }
        }
        for (key, v) in [
            ("health_window_s", self.health_window_s),
            ("down_retry_s", self.down_retry_s),
        ] {
            if v > 86_400 {
                return Err(bad(format!("`{key}` = {v} is over a day (86400 s)")));
            }
        }
        Ok(HealthRule {
            window: Duration::from_secs(self.health_window_s),
            degraded_after: self.degraded_after,
            down_after: self.down_after,
            recover_after: self.recover_after,
            retry_after: Duration::from_secs(self.down_retry_s),
        })
    }
}

/// Where a plugin runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Loaded into the host: fastest; a crash or hang in the plugin affects the host.
    #[default]
    InProcess,
    /// In a supervised child process: a crash or hang costs one call and a restart.
    Process,
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isolation::InProcess => "in-process",
            Isolation::Process => "process",
        })
    }
}

impl std::str::FromStr for Isolation {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "in-process" => Ok(Isolation::InProcess),
            "process" => Ok(Isolation::Process),
            other => Err(format!(
                "unknown isolation `{other}`: use `in-process` or `process`"
            )),
        }
    }
}

/// One provider: which library, how it runs, and its own settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// The id roles refer to (`totp`, `phone-legacy`); unique in the config.
    pub id: String,
    /// The shared library, relative to the config file's folder when not absolute.
    pub library: PathBuf,
    /// The SHA-256 of the library, in hex; loading refuses any other file.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Load without a pin (for development only): the host logs a warning.
    #[serde(default)]
    pub unpinned: bool,
    /// Where the plugin runs.
    #[serde(default)]
    pub isolation: Isolation,
    /// Deadline of one call in milliseconds; `[plugins].deadline_ms` when unset.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// When roles stop accepting this provider (a factor being retired, such as the legacy
    /// phone call): a date (its first moment, UTC) or an RFC 3339 time.
    #[serde(default)]
    pub sunset: Option<String>,
    /// The provider's own settings, handed to it as a JSON object.
    #[serde(default)]
    pub settings: toml::Table,
}

impl ProviderConfig {
    /// The moment of `sunset`, if set; a clear error for a value that is no date or time.
    pub fn sunset(&self) -> std::result::Result<Option<jiff::Timestamp>, String> {
        let Some(text) = self.sunset.as_deref() else {
            return Ok(None);
        };
        if let Ok(t) = text.parse::<jiff::Timestamp>() {
            return Ok(Some(t));
        }
        text.parse::<jiff::civil::Date>()
            .and_then(|d| jiff::tz::TimeZone::UTC.to_timestamp(d.into()))
            .map(Some)
            .map_err(|_| {
                format!(
                    "provider `{}`: sunset = `{text}` is neither a date (2027-09-30, from its first moment in UTC) nor an RFC 3339 time (2027-09-30T18:00:00Z, 2027-09-30T20:00:00+02:00)",
                    self.id
                )
            })
    }

    /// The provider's settings as a JSON object.
    pub fn settings_json(&self) -> Result<serde_json::Value> {
        serde_json::to_value(&self.settings).map_err(|e| Error::Load {
            id: self.id.clone(),
            library: self.library.clone(),
            reason: format!("its settings cannot be expressed as JSON: {e}"),
        })
    }

    /// The effective call deadline.
    pub fn deadline(&self, plugins: &PluginsConfig) -> Duration {
        Duration::from_millis(self.deadline_ms.unwrap_or(plugins.deadline_ms))
    }
}
