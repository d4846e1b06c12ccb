//! The `rolegate` command: the daemon, the admin CLI and the plugin worker.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

use rolegate::config::{Config, Isolation, PluginsConfig, check_private};

mod cli;

use cli::approval::ApprovalCommand;
use cli::request::RequestCommand;
use cli::role::RoleCommand;
use cli::token::TokenCommand;
use cli::user::UserCommand;
use rolegate::plugins::{self, Plugin, Providers};

/// mimalloc instead of glibc's allocator: the request path allocates on one thread and frees
/// on another (the API's threads, the database writer), which glibc serves slowly; measured
/// by `cargo bench --bench activation`: about a fifth less CPU per activation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "rolegate",
    version,
    about = "Privileged role activation gated by pluggable MFA"
)]
struct Cli {
    /// The daemon's URL.
    #[arg(
        long,
        global = true,
        env = "ROLEGATE_URL",
        default_value = "http://127.0.0.1:8420"
    )]
    server: String,
    /// Your API token (prefer the environment variable: command lines are visible to others).
    #[arg(long, global = true, env = "ROLEGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A CA certificate bundle (PEM) to trust for the daemon's HTTPS, beside the system's.
    #[arg(long, global = true, env = "ROLEGATE_CA_FILE")]
    ca_file: Option<PathBuf>,
    /// A client certificate (PEM) to present to a daemon that asks for one (mutual TLS).
    #[arg(
        long,
        global = true,
        env = "ROLEGATE_CLIENT_CERT",
        requires = "client_key"
    )]
    client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM, a private file).
    #[arg(
        long,
        global = true,
        env = "ROLEGATE_CLIENT_KEY",
        requires = "client_cert"
    )]
    client_key: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Users (the PAM user cmdlets).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Roles (the PAM role cmdlets).
    Role {
        #[command(subcommand)]
        command: RoleCommand,
    },
    /// Activation requests.
    Request {
        #[command(subcommand)]
        command: RequestCommand,
    },
    /// Enrol in a provider that needs it (shows the enrolment material, asks for the code).
    Enrol {
        /// The provider id.
        provider: String,
    },
    /// Requests to approve.
    Approval {
        #[command(subcommand)]
        command: ApprovalCommand,
    },
    /// The event log; `events verify` checks its hash chain.
    Events {
        /// `verify` to check the chain.
        action: Option<String>,
        /// Only this event id.
        #[arg(long)]
        id: Option<i64>,
        /// Only this user.
        #[arg(long)]
        user: Option<String>,
        /// Only this role.
        #[arg(long)]
        role: Option<String>,
        /// Only since this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Whose token this is: its account, and whether it is an admin's.
    Whoami,
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Inspect and check provider plugins.
    Provider {
        #[command(subcommand)]
        command: ProviderCommand,
    },
    /// Take an existing deployment as it is (offline, on the configured store).
    Import {
        #[command(subcommand)]
        command: ImportCommand,
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
enum ImportCommand {
    /// MIM PAM: the legacy phone provider from MfaSettings.xml, users and roles from CSV
    /// exports of Get-PAMUser and Get-PAMRole (docs/migration-from-mim.md lists the columns).
    Mim {
        /// The host's config file (its store is written; its providers are checked).
        #[arg(long, env = "ROLEGATE_CONFIG", default_value = "rolegate.toml")]
        config: PathBuf,
        /// The deployment's MfaSettings.xml.
        #[arg(long)]
        settings: PathBuf,
        /// `Get-PAMUser | Export-Csv` output.
        #[arg(long)]
        users: Option<PathBuf>,
        /// `Get-PAMRole | Export-Csv` output.
        #[arg(long)]
        roles: Option<PathBuf>,
        /// The provider id MFA roles get.
        #[arg(long, default_value = "phone-legacy")]
        provider_id: String,
        /// Show what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::PluginWorker { library, sha256 } = &cli.command {
        let code = plugins::worker::run(library, sha256);
        return ExitCode::from(u8::try_from(code).unwrap_or(2));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // The CLI says why a certificate is not trusted in its own error.
                .unwrap_or_else(|_| {
                    // The anchors' copies (one a minute) are for the journal to keep.
                    tracing_subscriber::EnvFilter::new(
                        "warn,rolegate::anchor=info,rustls_platform_verifier=off",
                    )
                }),
        )
        // Colours for a terminal only, not for a journal or a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rolegate: {}", error_chain(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, each cause once: errors that already name their
/// source in their own message are not repeated.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// Threads for blocking work (in-process provider calls, PostgreSQL reads): enough for slow
/// providers to overlap, few enough that they do not crowd out the database writer on a
/// small machine (the default of 512 did, under load).
const BLOCKING_THREADS: usize = 16;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(BLOCKING_THREADS)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let daemon = Daemon {
        server: cli.server.clone(),
        token: cli.token.clone(),
        ca_file: cli.ca_file.clone(),
        identity: cli.client_cert.clone().zip(cli.client_key.clone()),
    };
    let json = cli.json;
    let go = |r: Remote| remote(&daemon, json, r);
    match cli.command {
        Command::User { command } => go(Remote::User(command)),
        Command::Role { command } => go(Remote::Role(command)),
        Command::Request { command } => go(Remote::Request(command)),
        Command::Approval { command } => go(Remote::Approval(command)),
        Command::Enrol { provider } => go(Remote::Enrol(provider)),
        Command::Token { command } => go(Remote::Token(command)),
        Command::Whoami => go(Remote::Whoami),
        Command::Events {
            action,
            id,
            user,
            role,
            since,
            limit,
        } => go(Remote::Events {
            action,
            id,
            user,
            role,
            since,
            limit,
        }),
        Command::Provider { command } => match command {
            ProviderCommand::Check {
                library,
                config,
                isolation,
                deadline_ms,
            } => check(&library, config.as_deref(), isolation, deadline_ms),
            ProviderCommand::List {
                config: Some(config),
            } => list(&config, cli.json),
            ProviderCommand::List { config: None } => remote(&daemon, cli.json, Remote::Providers),
            ProviderCommand::Pin { library } => {
                let hash = plugins::library::sha256_file(&library)
                    .with_context(|| format!("cannot read {}", library.display()))?;
                println!("{hash}");
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Serve { config } => serve(&config),
        Command::Import {
            command:
                ImportCommand::Mim {
                    config,
                    settings,
                    users,
                    roles,
                    provider_id,
                    dry_run,
                },
        } => import_mim(
            &config,
            &settings,
            users.as_deref(),
            roles.as_deref(),
            &provider_id,
            dry_run,
        ),
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

enum Remote {
    User(UserCommand),
    Role(RoleCommand),
    Request(RequestCommand),
    Approval(ApprovalCommand),
    Enrol(String),
    Token(TokenCommand),
    Whoami,
    Providers,
    Events {
        action: Option<String>,
        id: Option<i64>,
        user: Option<String>,
        role: Option<String>,
        since: Option<String>,
        limit: i64,
    },
}

/// The daemon the CLI talks to, and how.
struct Daemon {
    server: String,
    token: Option<String>,
    ca_file: Option<PathBuf>,
    /// The client certificate and key, for mutual TLS.
    identity: Option<(PathBuf, PathBuf)>,
}

fn remote(daemon: &Daemon, json: bool, what: Remote) -> anyhow::Result<ExitCode> {
    use rolegate::client::{Client, table};
    let client = Client::with_identity(
        &daemon.server,
        daemon.token.clone(),
        daemon.ca_file.as_deref(),
        daemon
            .identity
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path())),
    )?;
    let rt = runtime()?;
    let (value, columns): (serde_json::Value, Option<&[(&str, &str)]>) = rt.block_on(async {
        anyhow::Ok(match what {
            Remote::User(c) => cli::user::run(&client, c).await?,
            Remote::Role(c) => cli::role::run(&client, c).await?,
            Remote::Request(c) => cli::request::run(&client, json, c).await?,
            Remote::Approval(c) => cli::approval::run(&client, json, c).await?,
            Remote::Enrol(provider) => cli::enrol::run(&client, json, provider).await?,
            Remote::Token(c) => cli::token::run(&client, json, c).await?,
            Remote::Whoami => cli::token::whoami(&client, json).await?,
            Remote::Providers => cli::providers::list(&client).await?,
            Remote::Events {
                action,
                id,
                user,
                role,
                since,
                limit,
            } => {
                cli::events::run(
                    &client,
                    json,
                    cli::events::Query {
                        action,
                        id,
                        user,
                        role,
                        since,
                        limit,
                    },
                )
                .await?
            }
        })
    })?;
    match (json, columns, &value) {
        (false, _, serde_json::Value::String(s)) => println!("{s}"),
        (false, Some(cols), v) => print!("{}", table(v, cols)),
        _ => println!("{}", serde_json::to_string_pretty(&value)?),
    }
    Ok(ExitCode::SUCCESS)
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
    ("totp", "librolegate_provider_totp.so", Isolation::InProcess),
];

fn import_mim(
    config_path: &Path,
    settings: &Path,
    users: Option<&Path>,
    roles: Option<&Path>,
    provider_id: &str,
    dry_run: bool,
) -> anyhow::Result<ExitCode> {
    use rolegate::config::ProviderConfig;
    let config = Config::load(config_path)?;
    let settings = std::fs::canonicalize(settings)
        .with_context(|| format!("cannot find {}", settings.display()))?;
    let read = |p: &Path| {
        std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
    };
    // Every file is checked before anything is written.
    let user_rows = match users {
        Some(p) => rolegate::import::read_users(&p.display().to_string(), &read(p)?)?,
        None => Vec::new(),
    };
    let role_rows = match roles {
        Some(p) => rolegate::import::read_roles(&p.display().to_string(), &read(p)?, provider_id)?,
        None => Vec::new(),
    };
    let rt = runtime()?;
    rt.block_on(async {
        // The legacy provider: the configured one, or a new block for the library built beside
        // this binary; either way it is loaded once here, so a bad MfaSettings.xml or .p12
        // stops the import with the provider's own message.
        let existing = config.providers.iter().find(|p| p.id == provider_id).cloned();
        let (provider, block) = match existing {
            Some(p) => (p, None),
            None => {
                let exe = std::env::current_exe().context("cannot locate the rolegate executable")?;
                let lib = exe
                    .parent()
                    .context("the executable has no folder")?
                    .join("librolegate_provider_legacy_phone.so");
                let hash = plugins::library::sha256_file(&lib)
                    .with_context(|| format!("cannot read {}", lib.display()))?;
                let mut table = toml::Table::new();
                table.insert("mfa_settings".into(), toml::Value::String(settings.display().to_string()));
                let p = ProviderConfig {
                    sunset: None,
                    id: provider_id.to_string(),
                    library: lib.clone(),
                    sha256: Some(hash.clone()),
                    unpinned: false,
                    isolation: Isolation::Process,
                    deadline_ms: None,
                    settings: table,
                };
                let block = format!(
                    "\n# Added by `rolegate import mim`: the legacy phone call, from MfaSettings.xml as it is.\n[[provider]]\nid = \"{provider_id}\"\nlibrary = {}\nsha256 = \"{hash}\"\nisolation = \"process\"\n[provider.settings]\nmfa_settings = {}\n",
                    toml::Value::String(lib.display().to_string()),
                    toml::Value::String(settings.display().to_string()),
                );
                (p, Some(block))
            }
        };
        let loaded = plugins::load_one(&provider, &config.plugins)
            .await
            .with_context(|| format!("the legacy phone provider `{provider_id}` does not load"))?;
        loaded.shutdown().await;
        let now = jiff::Timestamp::now().as_millisecond();
        let store_config = config.store.clone();
        let store = tokio::task::spawn_blocking(move || rolegate::store::Store::open(&store_config, now)).await??;
        let cc = config.policy.default_country_code;
        let (u, r) = (user_rows, role_rows);
        let plan = if dry_run {
            store.read(move |tx| rolegate::import::plan(tx, &u, &r, cc)).await?
        } else {
            store.write(move |tx| rolegate::import::apply(tx, &u, &r, cc, now)).await?
        };
        store.close();
        let verb = if dry_run { "would be " } else { "" };
        match (&block, dry_run) {
            (Some(b), true) => println!("provider `{provider_id}` would be added to {}:{b}", config_path.display()),
            (Some(b), false) => {
                use std::io::Write as _;
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(config_path)
                    .with_context(|| format!("cannot write {}", config_path.display()))?;
                f.write_all(b.as_bytes())?;
                println!("provider `{provider_id}` added to {} (restart the daemon to load it)", config_path.display());
            }
            (None, _) => println!("provider `{provider_id}`: configured already, and it loads"),
        }
        let names = |v: &[String]| if v.is_empty() { String::new() } else { format!(": {}", v.join(", ")) };
        let changed: Vec<String> = plan.users_changed.iter().map(|(a, f)| format!("{a} ({})", f.join(", "))).collect();
        println!("users: {} {verb}created{}", plan.users_created.len(), names(&plan.users_created));
        println!("users: {} {verb}changed{}", changed.len(), names(&changed));
        println!("users: {} unchanged", plan.users_unchanged);
        println!("roles: {} {verb}created{}", plan.roles_created.len(), names(&plan.roles_created));
        println!("roles: {} {verb}changed{}", plan.roles_changed.len(), names(&plan.roles_changed));
        println!("roles: {} unchanged", plan.roles_unchanged);
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

fn serve(config_path: &Path) -> anyhow::Result<ExitCode> {
    use std::sync::Arc;
    let config = Config::load(config_path)?;
    if let Some(refusal) = config.server.listen_refusal() {
        anyhow::bail!("{}: {refusal}", config_path.display());
    }
    // The certificate and key are checked before anything opens: a wrong file names itself.
    let tls = match config.server.tls() {
        Some((cert, key)) => Some(Arc::new(rolegate::tls::ServerTls::load(
            cert,
            key,
            config.server.client_certs(),
            jiff::Timestamp::now(),
        )?)),
        None => None,
    };
    let metrics_token = config.server.metrics_token()?;
    rolegate::metrics::METRICS.started(jiff::Timestamp::now().as_second());
    let rt = runtime()?;
    // Opened before anything else too; its writer is a thread of its own.
    let access_log = match &config.server.access_log {
        Some(path) => Some(rolegate::access::AccessLog::open(path)?),
        None => None,
    };
    let served = rt.block_on(async move {
        let now = jiff::Timestamp::now().as_millisecond();
        // Blocking (PostgreSQL connects and migrates): off the runtime's threads.
        let store_config = config.store.clone();
        let store = Arc::new(
            tokio::task::spawn_blocking(move || rolegate::store::Store::open(&store_config, now))
                .await??,
        );
        let key = Arc::new(rolegate::secrets::SealingKey::load_or_create(&config.store.key_file)?);
        {
            let key = Arc::clone(&key);
            store
                .write(move |tx| rolegate::secrets::check_key(tx, &key))
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", config.store.key_file.display()))?;
        }
        // The chain's anchors: checkpoints signed with a key derived from the key file's.
        let anchor_file = Arc::new(rolegate::anchor::AnchorFile::new(
            config.events.anchor_path(&config.store.key_file),
            rolegate::anchor::AnchorKey::derive(&key)?,
        ));
        let anchors = {
            let file = Arc::clone(&anchor_file);
            tokio::task::spawn_blocking(move || file.prepare().and_then(|()| file.read())).await??
        };
        let anchor_path = anchor_file.path().display().to_string();
        if !anchors.unreadable().is_empty() {
            tracing::warn!(
                file = %anchor_path,
                lines = ?anchors.unreadable(),
                "lines of the anchor file are no checkpoint (a write cut short by a crash, or not rolegate's); they are set aside"
            );
        }
        // A tail cut (or a chain rewritten) while the daemon was down is said and recorded,
        // not a refusal to start: an admin must be able to investigate.
        let problems = {
            let anchors = anchors.clone();
            store
                .read(move |tx| rolegate::anchor::check_end(tx, &anchors))
                .await?
        };
        // The cut is said once here, not again when the anchorer first sees the lower head.
        let found_cut = !problems.is_empty();
        for problem in problems {
            tracing::error!(
                file = %anchor_path,
                "the event log failed its anchor check: {problem}; `rolegate events verify` reports it"
            );
            let at = jiff::Timestamp::now().as_millisecond();
            store
                .write(move |tx| {
                    let ev = rolegate::events::NewEvent::new(
                        rolegate::events::ANCHOR_MISMATCH,
                        rolegate::events::Severity::Error,
                        "monitoring",
                        format!("the event log failed its anchor check at start: {problem}"),
                    );
                    rolegate::events::append(tx, ev, at)
                })
                .await?;
        }
        let anchorer = Arc::new(tokio::sync::Mutex::new(rolegate::anchor::Anchorer::new(
            Arc::clone(&anchor_file),
            anchors.newest().filter(|_| !found_cut),
        )));
        let (crash_tx, mut crash_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
        let providers = match Providers::load_observed(&config.plugins, &config.providers, Some(crash_tx)).await {
            Ok(p) => Arc::new(p),
            Err(e) => {
                let message = e.to_string();
                let _ = store
                    .write(move |tx| {
                        let ev = rolegate::events::NewEvent::new(
                            rolegate::events::PROVIDER_REFUSED,
                            rolegate::events::Severity::Error,
                            "plugins",
                            message,
                        );
                        rolegate::events::append(tx, ev, now)
                    })
                    .await;
                store.close();
                return Err(e.into());
            }
        };
        for p in providers.iter() {
            let message = format!(
                "{} ({}, sha256 {}, {})",
                p.plugin.library.display(),
                p.info().map(|i| i.name.as_str()).unwrap_or(""),
                p.plugin.sha256,
                p.plugin.isolation
            );
            let id = p.id().to_string();
            store
                .write(move |tx| {
                    let mut ev = rolegate::events::NewEvent::new(
                        rolegate::events::PROVIDER_LOADED,
                        rolegate::events::Severity::Information,
                        "plugins",
                        message,
                    );
                    ev.provider = Some(id);
                    rolegate::events::append(tx, ev, now)
                })
                .await?;
        }
        // Retired and retiring providers, and the roles they would leave without MFA.
        let sunsets: Vec<(String, jiff::Timestamp)> = providers
            .iter()
            .filter_map(|p| Some((p.id().to_string(), p.sunset()?)))
            .collect();
        if !sunsets.is_empty() {
            let roles = store.read(rolegate::roles::list).await?;
            for warning in rolegate::roles::sunset_warnings(&roles, &sunsets, jiff::Timestamp::now()) {
                tracing::warn!("{warning}");
            }
        }
        {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                while let Some((id, status)) = crash_rx.recv().await {
                    let at = jiff::Timestamp::now().as_millisecond();
                    let written = store
                        .write(move |tx| {
                            let mut ev = rolegate::events::NewEvent::new(
                                rolegate::events::PROVIDER_CRASHED,
                                rolegate::events::Severity::Error,
                                "plugins",
                                format!("the worker process {status}"),
                            );
                            ev.provider = Some(id);
                            rolegate::events::append(tx, ev, at)
                        })
                        .await;
                    if let Err(e) = written {
                        tracing::error!(error = %e, "cannot record a provider crash");
                    }
                }
            });
        }
        let p = &config.policy;
        let settings = rolegate::service::Settings {
            default_country_code: p.default_country_code,
            max_wrong_answers: p.max_wrong_answers,
            lockout_threshold: p.lockout_threshold,
            lockout_duration: jiff::SignedDuration::from_secs(p.lockout_s),
            approval_timeout: jiff::SignedDuration::from_secs(p.approval_timeout_s),
            requests_per_minute: p.requests_per_minute,
            limits: config.limits,
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
        // Counted and issued in one transaction: of several instances starting at once on
        // one PostgreSQL database, one issues the first token.
        let first = store
            .write(move |tx| {
                if rolegate::tokens::count(tx)? > 0 {
                    return Ok(None);
                }
                rolegate::tokens::issue(tx, "admin", true, "first admin", now).map(Some)
            })
            .await?;
        if let Some(token) = first {
            eprintln!(
                "rolegate: first start. The admin token (shown once, keep it secret):\n\n    export ROLEGATE_TOKEN={token}\n"
            );
        }
        if let Some(directory) = config.directory.clone()
            && directory.monitor_interval_s > 0
        {
            let store = Arc::clone(&store);
            let cc = config.policy.default_country_code;
            let every = Duration::from_secs(directory.monitor_interval_s);
            let directory = Arc::new(directory);
            tokio::spawn(async move {
                let mut reported = std::collections::HashMap::new();
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    if let Err(e) = rolegate::directory::monitor_once(&store, Arc::clone(&directory), cc, &mut reported).await {
                        tracing::warn!(error = %e, "the directory monitor could not compare phone numbers");
                    }
                }
            });
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
        if let Some(path) = config.events.jsonl.clone() {
            let mut sink = rolegate::events::JsonLinesSink::open(&path)?;
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                loop {
                    tick.tick().await;
                    let last = sink.last();
                    let batch = store
                        .read_long(move |tx| rolegate::events::after(tx, last, 1000))
                        .await;
                    let result = batch.and_then(|b| {
                        let n = b.len();
                        sink.export(&b).map(|_| n)
                    });
                    match result {
                        Ok(1000) => tick.reset_immediately(),
                        Ok(_) => {}
                        Err(e) => tracing::error!(error = %e, "event export failed; retrying"),
                    }
                }
            });
        }
        // Anchors the head every interval in which it moved (see docs/events.md).
        let anchoring = {
            let anchorer = Arc::clone(&anchorer);
            let store = Arc::clone(&store);
            let every = Duration::from_millis(config.events.anchor_interval_ms);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut failing = false;
                loop {
                    tick.tick().await;
                    let now = jiff::Timestamp::now().as_millisecond();
                    match anchorer.lock().await.tick(&store, now).await {
                        Ok(_) => failing = false,
                        // Said once per failing spell, not every interval.
                        Err(e) if !failing => {
                            tracing::error!(error = %e, "cannot anchor the event chain; retrying");
                            failing = true;
                        }
                        Err(_) => {}
                    }
                }
            })
        };
        let listener = tokio::net::TcpListener::bind(&config.server.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.server.listen))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        eprintln!(
            "rolegate: serving on {scheme}://{} (web page at /, OpenAPI at /openapi.json, metrics at /metrics); Ctrl-C or SIGTERM stops",
            listener.local_addr()?
        );
        on_hangup(tls.clone(), access_log.clone())?;
        let app = rolegate::api::Api::new(service)
            .with_anchors(Some(Arc::clone(&anchor_file)))
            .with_directory(config.directory.clone())
            .with_metrics_token(metrics_token.as_deref())
            .router();
        let limits = config.server.limits();
        raise_open_files(limits.max_connections);
        // Ctrl-C, or SIGTERM as systemd and container runtimes send: stop accepting, let the
        // requests in progress finish, then close the store cleanly.
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot listen for SIGTERM")?;
        let stop = async move {
            let signal = tokio::select! {
                _ = tokio::signal::ctrl_c() => "interrupt",
                _ = terminate.recv() => "SIGTERM",
            };
            eprintln!("rolegate: stopping ({signal}): finishing the requests in progress");
        };
        let serving = rolegate::server::Serving {
            limits,
            tls,
            access_log: access_log.clone(),
        };
        rolegate::server::serve(listener, app, serving, stop).await;
        if let Some(log) = access_log {
            log.flush(Duration::from_secs(2));
        }
        // The last events anchored, and that checkpoint copied to the log, before the store
        // closes.
        anchoring.abort();
        {
            let mut anchorer = anchorer.lock().await;
            let now = jiff::Timestamp::now().as_millisecond();
            if let Err(e) = anchorer.tick(&store, now).await {
                tracing::error!(error = %e, "cannot anchor the event chain at shutdown");
            }
            anchorer.mirror();
        }
        store.close();
        eprintln!("rolegate: stopped");
        anyhow::Ok(())
    });
    // An in-process provider call that hung past its deadline must not hold up the exit.
    rt.shutdown_timeout(Duration::from_secs(5));
    served?;
    Ok(ExitCode::SUCCESS)
}

/// What SIGHUP (`systemctl reload rolegate`, a certificate renewal hook, logrotate) does: the
/// TLS certificate and key are read again, and the access log is opened again. Says which
/// certificate HTTPS is served with, and warns twice a day while it nears its end. Without
/// either, SIGHUP keeps its usual meaning.
fn on_hangup(
    tls: Option<std::sync::Arc<rolegate::tls::ServerTls>>,
    access_log: Option<rolegate::access::AccessLog>,
) -> anyhow::Result<()> {
    use rolegate::tls::EXPIRY_WARNING;
    if tls.is_none() && access_log.is_none() {
        return Ok(());
    }
    let file = tls
        .as_ref()
        .map(|t| t.cert_path().display().to_string())
        .unwrap_or_default();
    let summary = tls.as_ref().and_then(|t| t.summary());
    if let Some(s) = &summary {
        eprintln!("rolegate: TLS with {s} ({file})");
    }
    if tls.as_ref().is_some_and(|t| t.asks_client_certs()) {
        eprintln!(
            "rolegate: clients must present a certificate from [server] tls_client_ca (mutual TLS)"
        );
    }
    let near_end = move |s: &rolegate::tls::CertSummary| {
        let left = jiff::Timestamp::now().duration_until(s.not_after);
        if left < EXPIRY_WARNING {
            tracing::warn!(
                certificate = %s.subject,
                not_after = %s.not_after,
                file = %file,
                "the TLS certificate ends in less than 14 days: renew it, then send SIGHUP"
            );
        }
    };
    if let Some(s) = &summary {
        near_end(s);
    }
    if let Some(log) = &access_log {
        eprintln!("rolegate: access log {}", log.path().display());
    }
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    let mut twice_a_day = tokio::time::interval(Duration::from_secs(12 * 3600));
    twice_a_day.reset();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                got = hup.recv() => {
                    if got.is_none() {
                        break;
                    }
                    if let Some(log) = &access_log {
                        log.reopen();
                    }
                    let Some(tls) = &tls else { continue };
                    match tls.reload(jiff::Timestamp::now()) {
                        Ok(s) => {
                            // A lifecycle line like the others (a closed stderr is no reason to panic).
                            let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("rolegate: TLS reloaded: {s}\n"));
                            near_end(&s);
                        }
                        Err(e) => tracing::error!(
                            error = %e,
                            "TLS reload refused: new handshakes keep the certificate in use"
                        ),
                    }
                }
                _ = twice_a_day.tick() => {
                    if let Some(s) = tls.as_ref().and_then(|t| t.summary()) {
                        near_end(&s);
                    }
                }
            }
        }
    });
    Ok(())
}

/// Raises the soft limit on open files as far as `max_connections` clients (each a file
/// descriptor) need beside the store's and plugins' files — within the hard limit, no further —
/// and warns when the hard limit is too low for them.
fn raise_open_files(max_connections: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, which lives on this stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    // Room for the store, the plugins' workers and the log besides the clients.
    let needed = max_connections as u64 + 256;
    if lim.rlim_cur < needed {
        let raised = libc::rlimit {
            rlim_cur: needed.min(lim.rlim_max),
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    if lim.rlim_cur < needed {
        tracing::warn!(
            open_files = lim.rlim_cur,
            needed,
            "the open-file limit is below [server] max_connections + 256: connections beyond it will fail to be accepted; raise LimitNOFILE or lower max_connections"
        );
    }
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
    // SMS needs a Twilio account: shown, not loaded (see docs/providers/sms-twilio.md).
    let sms = bin_dir.join("librolegate_provider_sms_twilio.so");
    if let Ok(hash) = plugins::library::sha256_file(&sms) {
        writeln!(
            text,
            "# SMS via Twilio: fill in the account, put the auth token in a file (chmod 600), uncomment.\n\
             # [[provider]]\n# id = \"sms\"\n# library = {}\n# sha256 = \"{hash}\"\n# isolation = \"process\"\n\
             # [provider.settings]\n# account_sid = \"AC…\"\n# auth_token_file = {}\n# from = \"+1…\"\n",
            toml::Value::String(sms.display().to_string()),
            toml::Value::String(
                std::fs::canonicalize(dir)
                    .unwrap_or_else(|_| dir.to_path_buf())
                    .join("twilio.token")
                    .display()
                    .to_string()
            )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::other("permission denied");
        let e = anyhow::Error::new(rolegate::Error::Io {
            what: "reading key.bin".into(),
            source: io,
        })
        .context("starting");
        assert_eq!(
            error_chain(&e),
            "starting: reading key.bin: permission denied"
        );
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_chain(&e), "outer: inner");
    }
}
