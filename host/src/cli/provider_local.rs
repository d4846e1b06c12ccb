//! `rolegate provider check | list --config | pin`: the commands that load plugin libraries here
//! rather than ask the daemon (`provider list` and `provider test` ask it: `providers.rs`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;

use rolegate::config::{Config, Isolation, PluginsConfig, check_private};
use rolegate::plugins::{Plugin, Providers};

use crate::runtime;

#[derive(Subcommand)]
pub(crate) enum ProviderCommand {
    /// Run the conformance checks against a plugin library; exits non-zero on any failure or
    /// skipped check (see --allow-skips). With --json, prints the report as JSON.
    Check {
        /// The plugin library (.so).
        library: PathBuf,
        /// A TOML file with the provider's settings (the `[provider.settings]` table's keys),
        /// and the check's own in a `[rolegate_check]` table (`enrol_codes`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where to run the plugin (in-process runs it in a child process of the check, so a
        /// crash fails a check rather than the check itself).
        #[arg(long, default_value = "in-process")]
        isolation: Isolation,
        /// Deadline of each call, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        deadline_ms: u64,
        /// Exit 0 when no check failed even if some were skipped (they are still listed).
        #[arg(long)]
        allow_skips: bool,
    },
    /// The daemon's providers with their health; with --config, load a config's providers here.
    List {
        /// Load the providers of this config file instead of asking the daemon.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print a library's SHA-256, the value for its `sha256` pin.
    Pin {
        /// The plugin library.
        library: PathBuf,
    },
    /// Send one test message through the daemon's provider (admin): checks its account
    /// (Twilio's, for sms-twilio) with a real text or call to `--to`; event 410.
    Test {
        /// The provider's id in the daemon's config (`sms`).
        provider: String,
        /// The phone number to send to.
        #[arg(long)]
        to: String,
    },
}

pub(crate) fn read_settings(path: &Path) -> anyhow::Result<serde_json::Value> {
    check_private(path)?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    Ok(serde_json::to_value(table)?)
}

/// The `[rolegate_check]` table of a check's --config file: the check's own settings.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckConfig {
    /// Answers for enrolment prompts the check cannot work out, in order.
    #[serde(default)]
    enrol_codes: Vec<String>,
}

/// The table of a check's --config file that holds the check's own settings, not the provider's.
const CHECK_TABLE: &str = "rolegate_check";

/// The provider's settings and the check's own, from a check's --config file.
fn read_check_config(path: &Path) -> anyhow::Result<(serde_json::Value, CheckConfig)> {
    let mut settings = read_settings(path)?;
    let own = match settings.as_object_mut().and_then(|m| m.remove(CHECK_TABLE)) {
        Some(v) => serde_json::from_value(v)
            .with_context(|| format!("{}: the `[{CHECK_TABLE}]` table", path.display()))?,
        None => CheckConfig::default(),
    };
    Ok((settings, own))
}

pub(crate) fn check(
    library: &Path,
    config: Option<&Path>,
    isolation: Isolation,
    deadline_ms: u64,
    allow_skips: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use rolegate::plugins::check::{Checked, ChildRun, HostTarget, run_in_child};
    use rolegate_sdk::conformance::{Check, LOAD, Outcome, Report};

    if deadline_ms == 0 {
        bail!("--deadline-ms must be above 0");
    }
    let (settings, own) = match config {
        Some(p) => read_check_config(p)?,
        None => (serde_json::json!({}), CheckConfig::default()),
    };
    let deadline = Duration::from_millis(deadline_ms);
    let exe = std::env::current_exe().context("cannot locate the rolegate executable")?;
    let run = ChildRun {
        library: library.to_path_buf(),
        settings,
        deadline_ms,
        enrol_codes: own.enrol_codes,
        crashed: Vec::new(),
        load_only: isolation == Isolation::Process,
    };
    // In process: the whole run, in a child. In process isolation: whether the library loads
    // (in a child, so that a crash while loading is `load`), then the run against a worker.
    let loaded = run_in_child(&exe, &run);
    let checked = match isolation {
        Isolation::InProcess => loaded,
        Isolation::Process if !loaded.report.passed() => loaded,
        Isolation::Process => {
            let rt = runtime()?;
            let _guard = rt.enter();
            // Crashes are what the check looks for: never hold the provider down for them.
            let plugins_config = PluginsConfig {
                worker: Some(exe),
                max_crashes: usize::MAX,
                ..PluginsConfig::default()
            };
            let opened = rt.block_on(Plugin::open(
                "check",
                library,
                None,
                isolation,
                deadline,
                &plugins_config,
            ));
            let checked = match opened {
                Ok(plugin) => {
                    let sha256 = plugin.sha256.clone();
                    let target = HostTarget::new(plugin, plugins_config, rt.handle().clone());
                    let options = rolegate_sdk::conformance::Options {
                        settings: run.settings,
                        // The worker's own deadline comes first: its failure names the call.
                        deadline: deadline + Duration::from_millis(500),
                        enrol_codes: run.enrol_codes,
                        ..Default::default()
                    };
                    let report = rolegate_sdk::conformance::run(&target, &options);
                    drop(target);
                    let mut checks = vec![Check::new(
                        LOAD,
                        Outcome::Pass,
                        format!(
                            "sha256 {sha256} (and a worker process is started for each instance)"
                        ),
                    )];
                    checks.extend(report.checks);
                    Checked {
                        sha256: Some(sha256),
                        report: Report { checks },
                    }
                }
                // The library changed between the two reads.
                Err(e) => Checked {
                    sha256: None,
                    report: Report {
                        checks: vec![Check::new(LOAD, Outcome::Fail, e.to_string())],
                    },
                },
            };
            rt.shutdown_timeout(Duration::from_secs(2));
            checked
        }
    };
    let report = &checked.report;
    let counts = report.counts();
    let passed = counts.failed == 0 && (allow_skips || counts.skipped == 0);
    if json {
        let v = JsonReport {
            library,
            isolation: isolation.to_string(),
            sha256: checked.sha256.as_deref(),
            passed,
            allow_skips,
            counts,
            checks: &report.checks,
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "rolegate provider check: {} ({isolation})",
            library.display()
        );
        println!("{report}");
        let verdict = if counts.failed > 0 {
            format!(
                "verdict: does not conform ({} check{} failed)",
                counts.failed,
                if counts.failed == 1 { "" } else { "s" }
            )
        } else if counts.skipped > 0 && !allow_skips {
            format!(
                "verdict: incomplete ({} check{} skipped; --allow-skips accepts skips)",
                counts.skipped,
                if counts.skipped == 1 { "" } else { "s" }
            )
        } else if counts.skipped > 0 {
            format!(
                "verdict: conforms, with {} check{} skipped (--allow-skips)",
                counts.skipped,
                if counts.skipped == 1 { "" } else { "s" }
            )
        } else {
            "verdict: conforms".to_string()
        };
        println!("{verdict}");
    }
    Ok(if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `provider check --json`: the report, fields in this order (docs/writing-a-provider.md).
#[derive(serde::Serialize)]
struct JsonReport<'a> {
    library: &'a Path,
    isolation: String,
    sha256: Option<&'a str>,
    passed: bool,
    allow_skips: bool,
    counts: rolegate_sdk::conformance::Counts,
    checks: &'a [rolegate_sdk::conformance::Check],
}

pub(crate) fn list(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let config = Config::load(config)?;
    let rt = runtime()?;
    let rows = rt.block_on(async {
        let providers = Providers::load(&config.plugins, &config.providers).await?;
        let mut rows = Vec::new();
        for p in providers.iter() {
            let health = match p.health().await {
                Ok(h) => format!("{:?}", h.status).to_lowercase(),
                Err(e) => format!("error: {e}"),
            };
            rows.push(serde_json::json!({
                "id": p.id(),
                "info": p.info(),
                "isolation": p.plugin.isolation.to_string(),
                "library": p.plugin.library,
                "sha256": p.plugin.sha256,
                "health": health,
                "sunset": p.sunset().map(|t| t.to_string()),
            }));
        }
        for p in providers.iter() {
            p.shutdown().await;
        }
        anyhow::Ok(rows)
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{:<14} {:<40} {:<9} {:<11} {:<8} {:<21} SHA-256",
            "ID", "NAME", "VERSION", "ISOLATION", "HEALTH", "SUNSET"
        );
        for r in &rows {
            let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
            println!(
                "{:<14} {:<40} {:<9} {:<11} {:<8} {:<21} {}…",
                s(&r["id"]),
                s(&r["info"]["name"]),
                s(&r["info"]["version"]),
                s(&r["isolation"]),
                s(&r["health"]),
                s(&r["sunset"]),
                s(&r["sha256"]).chars().take(16).collect::<String>()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
