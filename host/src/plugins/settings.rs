//! The plugins' settings: those shared by all (`[plugins]`) and each provider's own
//! (`[[provider]]`), as the configuration file spells them.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

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
        }
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
