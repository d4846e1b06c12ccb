//! The host's error type.

use std::path::PathBuf;

use rolegate_sdk::ProviderError;

/// Everything that can go wrong in the host, each naming the file, key or provider at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller's bearer token is not valid (unknown, revoked or expired).
    #[error("the token is not valid")]
    Unauthorized,

    /// The daemon refused a call: its own sentence (the HTTP status is kept for `--verbose`).
    #[error("{message}")]
    Daemon {
        /// The HTTP status it answered.
        status: u16,
        /// Its message.
        message: String,
    },

    /// The CLI had no token to send to a daemon that asks for one.
    #[error("no API token: set ROLEGATE_TOKEN or --token")]
    NoToken,

    /// The daemon refused the CLI's token: its message, and how to give another.
    #[error(
        "the daemon refused the token ({message}); set --token or ROLEGATE_TOKEN to a valid one"
    )]
    TokenRefused {
        /// The daemon's reason.
        message: String,
    },

    /// The config file cannot be used.
    #[error("config {path}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },

    /// A secret or config file is readable by others.
    #[error(
        "{path} is readable by group or others (mode {mode:03o}); run `chmod 600 {path}` — rolegate refuses secrets others can read"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// The daemon's TLS certificate or key cannot be served.
    #[error("TLS {path}: {message}")]
    Tls {
        /// The certificate or key file.
        path: PathBuf,
        /// What is wrong with it (never the key's bytes).
        message: String,
    },

    /// A provider library was refused at load time.
    #[error("provider `{id}`: {library}: {reason}")]
    Load {
        /// The provider id from the config.
        id: String,
        /// The library file.
        library: PathBuf,
        /// Why it was refused.
        reason: String,
    },

    /// The same provider id is declared twice.
    #[error("provider id `{id}` is declared twice in the config (libraries {first} and {second})")]
    DuplicateProvider {
        /// The repeated id.
        id: String,
        /// The library of the first declaration.
        first: PathBuf,
        /// The library of the second declaration.
        second: PathBuf,
    },

    /// A provider refused its settings at create time.
    #[error("provider `{id}`: {library}: refused its settings: {source}")]
    Settings {
        /// The provider id.
        id: String,
        /// The library file.
        library: PathBuf,
        /// The provider's error, naming the key.
        #[source]
        source: ProviderError,
    },

    /// A provider answered a call with an error.
    #[error("provider `{id}` failed `{op}`: {source}")]
    Provider {
        /// The provider id.
        id: String,
        /// The operation.
        op: &'static str,
        /// The provider's error.
        #[source]
        source: ProviderError,
    },

    /// A provider did not answer in time.
    #[error("provider `{id}` did not answer `{op}` within {ms} ms; {action}")]
    Deadline {
        /// The provider id.
        id: String,
        /// The operation.
        op: &'static str,
        /// The deadline in milliseconds.
        ms: u64,
        /// What the host did about it.
        action: &'static str,
    },

    /// A provider's worker process died during a call.
    #[error(
        "provider `{id}`: its worker process {status} during `{op}`; it restarts on the next call"
    )]
    WorkerCrashed {
        /// The provider id.
        id: String,
        /// The operation.
        op: &'static str,
        /// How the worker ended ("was killed by signal 11 (SIGSEGV)").
        status: String,
    },

    /// A provider's worker keeps crashing and is held down for a while.
    #[error(
        "provider `{id}`: its worker crashed {crashes} times in {window_s} s; not restarting it for {wait_s} s"
    )]
    CrashLoop {
        /// The provider id.
        id: String,
        /// Crashes counted in the window.
        crashes: usize,
        /// The window in seconds.
        window_s: u64,
        /// Seconds until the next restart is allowed.
        wait_s: u64,
    },

    /// A provider's answer broke the protocol.
    #[error("provider `{id}` sent an invalid answer to `{op}`: {message}")]
    Protocol {
        /// The provider id.
        id: String,
        /// The operation.
        op: &'static str,
        /// What was wrong.
        message: String,
    },

    /// A phone number that cannot be normalised to E.164.
    #[error("phone number `{input}`: {reason}")]
    Phone {
        /// What was given (at most 64 characters).
        input: String,
        /// Why it is refused.
        reason: String,
    },

    /// A value (role, window, user) that breaks a rule; the message names the field.
    #[error("{what}: {message}")]
    Invalid {
        /// What is invalid.
        what: String,
        /// Which field, and why.
        message: String,
    },

    /// A stored row holds what rolegate never writes there (edited outside it): named so
    /// that an admin can find it.
    #[error("{what}: {message}")]
    Malformed {
        /// What was being read.
        what: String,
        /// Which row and column, and what it holds.
        message: String,
    },
    /// The database cannot be reached (refused, dropped or timed-out connection, a server
    /// shutting down): the call may succeed later, on this host or another.
    #[error("database unreachable: {what}: {message}")]
    StoreUnavailable {
        /// What was being done.
        what: String,
        /// The connection's error.
        message: String,
    },

    /// The database failed.
    #[error("database: {what}: {message}")]
    Store {
        /// What was being done.
        what: String,
        /// The database's message.
        message: String,
    },

    /// The thing asked for does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for (`user \`jdoe\``).
        what: String,
    },

    /// The action conflicts with what is stored (it exists already, or changed meanwhile).
    #[error("{0}")]
    Conflict(String),

    /// The policy refuses the action.
    #[error("{0}")]
    Refused(crate::model::refusal::Refusal),

    /// An I/O error outside any provider.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The kind of a failed provider call, as `rolegate_provider_call_failures_total` names
    /// it; `None` for errors that are no provider call's.
    pub fn call_failure_kind(&self) -> Option<&'static str> {
        match self {
            Error::Deadline { .. } => Some("deadline"),
            Error::WorkerCrashed { .. } => Some("crash"),
            Error::CrashLoop { .. } => Some("crash_loop"),
            Error::Protocol { .. } => Some("protocol"),
            Error::Load { .. } => Some("load"),
            Error::Settings { .. } => Some("config"),
            Error::Provider { source, .. } => Some(source.kind.as_str()),
            _ => None,
        }
    }

    /// Whether this error says the provider itself is failing (an outage, a crash, a hang, a
    /// broken answer), as opposed to a request it refused as malformed or unsupported: only
    /// these count toward the provider's health.
    pub fn is_provider_fault(&self) -> bool {
        !matches!(
            self.call_failure_kind(),
            None | Some("bad_input") | Some("unsupported")
        )
    }

    /// The provider an error is about, when it is about one.
    pub fn provider_id(&self) -> Option<&str> {
        match self {
            Error::Load { id, .. }
            | Error::Settings { id, .. }
            | Error::Provider { id, .. }
            | Error::Deadline { id, .. }
            | Error::WorkerCrashed { id, .. }
            | Error::CrashLoop { id, .. }
            | Error::Protocol { id, .. }
            | Error::DuplicateProvider { id, .. } => Some(id),
            _ => None,
        }
    }

    /// The provider's own error, when the provider answered with one.
    pub fn provider_error(&self) -> Option<&ProviderError> {
        match self {
            Error::Provider { source, .. } | Error::Settings { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The host's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
