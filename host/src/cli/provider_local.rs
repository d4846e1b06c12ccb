//! `rolegate provider check | list --config | pin`: the commands that load plugin libraries here
//! rather than ask the daemon.

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
    /// Run the conformance checks against a plugin library; exits non-zero on any failure.
    Check {
        /// The plugin library (.so).
        library: PathBuf,
        /// A TOML file with the provider's settings (the `[provider.settings]` table's keys).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where to run the plugin.
        #[arg(long, default_value = "in-process")]
        isolation: Isolation,
        /// Deadline of each call, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        deadline_ms: u64,
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
}

pub(crate) fn read_settings(path: &Path) -> anyhow::Result<serde_json::Value> {
    check_private(path)?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    Ok(serde_json::to_value(table)?)
}

pub(crate) fn check(
    library: &Path,
    config: Option<&Path>,
    isolation: Isolation,
    deadline_ms: u64,
) -> anyhow::Result<ExitCode> {
    if deadline_ms == 0 {
        bail!("--deadline-ms must be above 0");
    }
    let settings = match config {
        Some(p) => read_settings(p)?,
        None => serde_json::json!({}),
    };
    let rt = runtime()?;
    let _guard = rt.enter();
    let deadline = Duration::from_millis(deadline_ms);
    println!(
        "rolegate provider check: {} ({isolation})",
        library.display()
    );
    let plugins_config = PluginsConfig::default();
    let plugin = match rt.block_on(Plugin::open(
        "check",
        library,
        None,
        isolation,
        deadline,
        &plugins_config,
    )) {
        Ok(p) => p,
        Err(e) => {
            println!("  FAIL  {:<32} {e}", "load");
            println!("checks: 0 ok, 1 failed, 0 skipped");
            return Ok(ExitCode::FAILURE);
        }
    };
    println!("  ok    {:<32} sha256 {}", "load", plugin.sha256);
    let target = rolegate::plugins::check::HostTarget::new(plugin, rt.handle().clone());
    let options = rolegate_sdk::conformance::Options {
        settings,
        deadline: deadline + Duration::from_millis(500),
        ..Default::default()
    };
    let report = rolegate_sdk::conformance::run(&target, &options);
    println!("{report}");
    let ok = report.passed();
    drop(target);
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
