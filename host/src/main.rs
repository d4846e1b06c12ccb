//! The `rolegate` command: the daemon, the admin CLI and the plugin worker.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

mod cli;
mod daemon;

use cli::approval::ApprovalCommand;
use cli::import::{ImportCommand, import_mim};
use cli::provider_local::{ProviderCommand, check, list};
use cli::request::RequestCommand;
use cli::role::RoleCommand;
use cli::token::TokenCommand;
use cli::user::UserCommand;
use daemon::quickstart::quickstart;
use daemon::serve;
use rolegate::plugins;

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
        help_heading = "Global options",
        env = "ROLEGATE_URL",
        default_value = "http://127.0.0.1:8420"
    )]
    server: String,
    /// Your API token (prefer the environment variable: command lines are visible to others).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "ROLEGATE_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// A CA certificate bundle (PEM) to trust for the daemon's HTTPS, beside the system's.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "ROLEGATE_CA_FILE"
    )]
    ca_file: Option<PathBuf>,
    /// A client certificate (PEM) to present to a daemon that asks for one (mutual TLS).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "ROLEGATE_CLIENT_CERT",
        requires = "client_key"
    )]
    client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM, a private file).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "ROLEGATE_CLIENT_KEY",
        requires = "client_cert"
    )]
    client_key: Option<PathBuf>,
    /// The smartcard reader to use when several are attached (`rolegate` lists them when it
    /// must choose).
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "ROLEGATE_READER"
    )]
    reader: Option<String>,
    /// Seconds to wait for a smartcard to be inserted.
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        default_value_t = 30
    )]
    card_wait: u64,
    /// Print JSON instead of tables.
    #[arg(long, global = true, help_heading = "Global options")]
    json: bool,
    /// Say more when something fails (the daemon's HTTP status).
    #[arg(long, global = true, help_heading = "Global options")]
    verbose: bool,
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
        /// The address and port to serve on.
        #[arg(long, default_value = "127.0.0.1:8420")]
        listen: String,
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
    /// Load a plugin into this process and run the conformance checks, reporting each call on
    /// stdout (started by `provider check`, which survives a crash of this process).
    #[command(hide = true)]
    CheckWorker,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::PluginWorker { library, sha256 } = &cli.command {
        let code = plugins::worker::run(library, sha256);
        return ExitCode::from(u8::try_from(code).unwrap_or(2));
    }
    if let Command::CheckWorker = &cli.command {
        let code = plugins::check::child_main();
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
    let verbose = cli.verbose;
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            let status = match e.downcast_ref::<rolegate::Error>() {
                Some(rolegate::Error::Daemon { status, .. }) if verbose => {
                    format!(" (HTTP {status})")
                }
                _ => String::new(),
            };
            eprintln!("rolegate: {}{status}", error_chain(&e));
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

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
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
        reader: cli.reader.clone(),
        card_wait: std::time::Duration::from_secs(cli.card_wait.clamp(1, 600)),
    };
    let json = cli.json;
    let go = |r: Remote| remote(&daemon, json, r);
    match cli.command {
        Command::User { command } => go(Remote::User(command)),
        Command::Role { command } => go(Remote::Role(command)),
        Command::Request { command } => go(Remote::Request(command)),
        Command::Approval { command } => go(Remote::Approval(command)),
        Command::Enrol { provider } => go(Remote::Enrol(provider)),
        // The offline admin token needs no daemon (nor a token to reach it).
        Command::Token {
            command:
                TokenCommand::New {
                    offline: true,
                    account,
                    label,
                    config: Some(config),
                    ..
                },
        } => cli::token::issue_offline(&config, account.as_deref(), &label, json),
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
                allow_skips,
            } => check(
                &library,
                config.as_deref(),
                isolation,
                deadline_ms,
                allow_skips,
                cli.json,
            ),
            ProviderCommand::List {
                config: Some(config),
            } => list(&config, cli.json),
            ProviderCommand::List { config: None } => remote(&daemon, cli.json, Remote::Providers),
            ProviderCommand::Test { provider, to } => {
                remote(&daemon, cli.json, Remote::ProviderTest { provider, to })
            }
            ProviderCommand::Pin { library } => {
                let hash = plugins::library::sha256_file(&library)
                    .with_context(|| format!("cannot read {}", library.display()))?;
                println!("{hash}");
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Serve { config } => serve(&config),
        Command::Import {
            command: ImportCommand::Mim(args),
        } => import_mim(&args, cli.json),
        Command::Quickstart {
            dir,
            no_serve,
            listen,
        } => {
            let path = quickstart(&dir, &listen)?;
            if no_serve {
                Ok(ExitCode::SUCCESS)
            } else {
                serve(&path)
            }
        }
        Command::PluginWorker { .. } | Command::CheckWorker => Ok(ExitCode::from(2)),
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
    ProviderTest {
        provider: String,
        to: String,
    },
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
    /// The smartcard reader, when several.
    reader: Option<String>,
    /// How long to wait for a smartcard.
    card_wait: std::time::Duration,
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
    )?
    .with_card(daemon.reader.clone(), daemon.card_wait);
    let rt = runtime()?;
    let (value, columns): (serde_json::Value, Option<&[(&str, &str)]>) = rt.block_on(async {
        anyhow::Ok(match what {
            Remote::User(c) => cli::user::run(&client, c).await?,
            Remote::Role(c) => cli::role::run(&client, json, c).await?,
            Remote::Request(c) => cli::request::run(&client, json, c).await?,
            Remote::Approval(c) => cli::approval::run(&client, json, c).await?,
            Remote::Enrol(provider) => cli::enrol::run(&client, json, provider).await?,
            Remote::Token(c) => cli::token::run(&client, json, c).await?,
            Remote::Whoami => cli::token::whoami(&client, json).await?,
            Remote::Providers => cli::providers::list(&client).await?,
            Remote::ProviderTest { provider, to } => {
                cli::providers::test(&client, json, &provider, &to).await?
            }
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
    let text = match (json, columns, &value) {
        (false, _, serde_json::Value::String(s)) => format!("{s}\n"),
        (false, Some(cols), v) => table(v, cols),
        _ => format!("{}\n", serde_json::to_string_pretty(&value)?),
    };
    emit(&text)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the command's output; a reader that went away (`rolegate events | head`) ends it
/// quietly, as other Unix tools do.
fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
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
