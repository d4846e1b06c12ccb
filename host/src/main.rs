//! The `rolegate` command: the daemon, the admin CLI and the plugin worker.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

use rolegate::config::{Config, Isolation, PluginsConfig, check_private};
use rolegate::plugins::{self, Plugin, Providers};

#[derive(Parser)]
#[command(
    name = "rolegate",
    version,
    about = "Privileged role activation gated by pluggable MFA"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect and check provider plugins.
    Provider {
        #[command(subcommand)]
        command: ProviderCommand,
    },
    /// Run the daemon: the HTTP API over the configured store and providers.
    Serve {
        /// The host's config file.
        #[arg(long, env = "ROLEGATE_CONFIG", default_value = "rolegate.toml")]
        config: PathBuf,
    },
    /// Write a quick-start config for the first-party plugins built beside this binary, load
    /// them, and serve.
    Quickstart {
        /// Folder for the generated config, database and key.
        #[arg(long, default_value = "rolegate-quickstart")]
        dir: PathBuf,
        /// Write and check the config, but do not start the daemon.
        #[arg(long)]
        no_serve: bool,
    },
    /// Serve one plugin over stdin/stdout for an isolated provider (started by the host).
    #[command(hide = true)]
    PluginWorker {
        /// The plugin library.
        #[arg(long)]
        library: PathBuf,
        /// The SHA-256 the host checked.
        #[arg(long)]
        sha256: String,
    },
}

#[derive(Subcommand)]
enum ProviderCommand {
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
    /// Load every provider of a config and show it with its health.
    List {
        /// The host's config file.
        #[arg(long, env = "ROLEGATE_CONFIG")]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a library's SHA-256, the value for its `sha256` pin.
    Pin {
        /// The plugin library.
        library: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::PluginWorker { library, sha256 } = &cli.command {
        let code = plugins::worker::run(library, sha256);
        return ExitCode::from(u8::try_from(code).unwrap_or(2));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rolegate: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Provider { command } => match command {
            ProviderCommand::Check {
                library,
                config,
                isolation,
                deadline_ms,
            } => check(&library, config.as_deref(), isolation, deadline_ms),
            ProviderCommand::List { config, json } => list(&config, json),
            ProviderCommand::Pin { library } => {
                let hash = plugins::library::sha256_file(&library)
                    .with_context(|| format!("cannot read {}", library.display()))?;
                println!("{hash}");
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Serve { config } => serve(&config),
        Command::Quickstart { dir, no_serve } => {
            let path = quickstart(&dir)?;
            if no_serve {
                Ok(ExitCode::SUCCESS)
            } else {
                serve(&path)
            }
        }
        Command::PluginWorker { .. } => Ok(ExitCode::from(2)),
    }
}

fn read_settings(path: &Path) -> anyhow::Result<serde_json::Value> {
    check_private(path)?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    Ok(serde_json::to_value(table)?)
}

fn check(
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
    let target = rolegate::check::HostTarget::new(plugin, rt.handle().clone());
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

fn list(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let config = Config::load(config)?;
    let rt = runtime()?;
    let rows = rt.block_on(async {
        let providers = Providers::load(&config).await?;
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
            "{:<14} {:<40} {:<9} {:<11} {:<8} SHA-256",
            "ID", "NAME", "VERSION", "ISOLATION", "HEALTH"
        );
        for r in &rows {
            let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
            println!(
                "{:<14} {:<40} {:<9} {:<11} {:<8} {}…",
                s(&r["id"]),
                s(&r["info"]["name"]),
                s(&r["info"]["version"]),
                s(&r["isolation"]),
                s(&r["health"]),
                s(&r["sha256"]).chars().take(16).collect::<String>()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// First-party plugin libraries that ship beside the binary: (id, file name, isolation).
const FIRST_PARTY: &[(&str, &str, Isolation)] = &[
    (
        "hello",
        "librolegate_example_hello.so",
        Isolation::InProcess,
    ),
    (
        "hello-isolated",
        "librolegate_example_hello.so",
        Isolation::Process,
    ),
];

fn serve(config_path: &Path) -> anyhow::Result<ExitCode> {
    use std::sync::Arc;
    let config = Config::load(config_path)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let now = jiff::Timestamp::now().as_millisecond();
        let store = Arc::new(rolegate::store::sqlite::Sqlite::open(&config.store.sqlite, now)?);
        let key = Arc::new(rolegate::secrets::SealingKey::load_or_create(&config.store.key_file)?);
        let providers = Arc::new(Providers::load(&config).await?);
        let p = &config.policy;
        let settings = rolegate::service::Settings {
            default_country_code: p.default_country_code,
            max_wrong_answers: p.max_wrong_answers,
            lockout_threshold: p.lockout_threshold,
            lockout_duration: jiff::SignedDuration::from_secs(p.lockout_s),
            approval_timeout: jiff::SignedDuration::from_secs(p.approval_timeout_s),
            ..Default::default()
        };
        let service = Arc::new(rolegate::service::Service::new(
            Arc::clone(&store),
            providers,
            Arc::new(rolegate::clock::SystemClock),
            key,
            settings,
        ));
        // Activations that ended while the host was down end now.
        let ended = service.expire_due().await?;
        if ended > 0 {
            tracing::info!(ended, "ended what was due while the host was down");
        }
        if store.read(rolegate::tokens::count).await? == 0 {
            let token = store
                .write(move |tx| rolegate::tokens::issue(tx, "admin", true, "first admin", now))
                .await?;
            eprintln!(
                "rolegate: first start. The admin token (shown once, keep it secret):\n\n    export ROLEGATE_TOKEN={token}\n"
            );
        }
        let expirer = Arc::clone(&service);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Err(e) = expirer.expire_due().await {
                    tracing::error!(error = %e, "expiry failed");
                }
            }
        });
        let listener = tokio::net::TcpListener::bind(&config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        eprintln!(
            "rolegate: serving on http://{} (OpenAPI at /openapi.json); Ctrl-C stops",
            listener.local_addr()?
        );
        let app = rolegate::api::Api::new(service).router();
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
        store.close();
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn quickstart(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::fmt::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let exe = std::env::current_exe().context("cannot locate the rolegate executable")?;
    let bin_dir = exe.parent().context("the executable has no folder")?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let mut text = String::from(
        "# rolegate quick-start config, generated by `rolegate quickstart`.\n\
         # Pins are the SHA-256 of the libraries built beside the binary; regenerate after a rebuild.\n\n\
         [server]\nlisten = \"127.0.0.1:8420\"\n\n\
         [store]\nsqlite = \"rolegate.db\"\nkey_file = \"rolegate.key\"\n\n",
    );
    for (id, file, isolation) in FIRST_PARTY {
        let lib = bin_dir.join(file);
        if !lib.exists() {
            bail!(
                "{} is missing: build the workspace first (cargo build --release --workspace)",
                lib.display()
            );
        }
        let hash = plugins::library::sha256_file(&lib)
            .with_context(|| format!("cannot read {}", lib.display()))?;
        let library = toml::Value::String(lib.display().to_string());
        writeln!(
            text,
            "[[provider]]\nid = \"{id}\"\nlibrary = {library}\nsha256 = \"{hash}\"\nisolation = \"{isolation}\"\n"
        )?;
    }
    let path = dir.join("rolegate.toml");
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        f.write_all(text.as_bytes())?;
    }
    println!("wrote {}", path.display());
    list(&path, false)?;
    Ok(path)
}
