//! The host's configuration file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::http::server::{
    DEFAULT_CLIENT_TIMEOUT_S, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
};
use crate::model::error::{Error, Result};

/// The host's configuration, as read from `rolegate.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The HTTP server.
    #[serde(default)]
    pub server: ServerConfig,
    /// Where state is kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// Limits the host enforces for every provider.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Lengths of free-text fields (justification, display names, reasons, labels).
    #[serde(default)]
    pub limits: crate::model::limits::TextLimits,
    /// Where events go besides the database.
    #[serde(default)]
    pub events: EventsConfig,
    /// How plugins run.
    #[serde(default)]
    pub plugins: PluginsConfig,
    /// The MFA providers, one `[[provider]]` table each.
    #[serde(default, rename = "provider")]
    pub providers: Vec<ProviderConfig>,
    /// The LDAP directory users can be copied from (`user new --from-directory`).
    #[serde(default)]
    pub directory: Option<crate::records::directory::DirectoryConfig>,
}

/// The HTTP server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Seconds a client may take to send a request's headers, and then its body; also how
    /// long a kept-alive connection may sit idle.
    #[serde(default = "default_client_timeout_s")]
    pub client_timeout_s: u64,
    /// Open connections at most (beyond them, new ones are closed at once).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Open connections from one client address at most (IPv6: one /64).
    #[serde(default = "default_max_connections_per_client")]
    pub max_connections_per_client: usize,
    /// Allow `listen` beyond the loopback interface although the API speaks plain HTTP.
    #[serde(default)]
    pub allow_plaintext: bool,
    /// A file that gets one JSON line per HTTP request (relative to the config's folder).
    #[serde(default)]
    pub access_log: Option<PathBuf>,
    /// The certificate chain (PEM) to serve HTTPS with; with `tls_key`.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM, a private file); with `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that API clients' certificates must chain to: when set, a
    /// connection without such a certificate is refused in the TLS handshake (mutual TLS, on
    /// top of the bearer token). Needs `tls_cert` and `tls_key`.
    #[serde(default)]
    pub tls_client_ca: Option<PathBuf>,
    /// Certificate revocation lists (PEM) from the `tls_client_ca` CAs: a client certificate
    /// revoked in them is refused. Re-read on SIGHUP.
    #[serde(default)]
    pub tls_client_crl: Option<PathBuf>,
    /// A private file holding the token that may read `/metrics` and nothing else.
    #[serde(default)]
    pub metrics_token_file: Option<PathBuf>,
}

fn default_listen() -> String {
    "127.0.0.1:8420".into()
}

/// The values `[server] client_timeout_s` may take.
pub const CLIENT_TIMEOUT_S_RANGE: std::ops::RangeInclusive<u64> = 1..=3600;

fn default_client_timeout_s() -> u64 {
    DEFAULT_CLIENT_TIMEOUT_S
}

/// The values `[server] max_connections` may take.
pub const MAX_CONNECTIONS_RANGE: std::ops::RangeInclusive<usize> = 1..=1_000_000;

fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}

/// The fewest characters a metrics token may have.
pub const MIN_METRICS_TOKEN: usize = 32;

fn default_max_connections_per_client() -> usize {
    DEFAULT_MAX_CONNECTIONS_PER_CLIENT
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            client_timeout_s: DEFAULT_CLIENT_TIMEOUT_S,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            allow_plaintext: false,
            access_log: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            tls_client_crl: None,
            metrics_token_file: None,
        }
    }
}

impl ServerConfig {
    /// Why `listen` must not be served, if it must not: it is no address, or it reaches
    /// beyond this machine while the API speaks plain HTTP (tokens and MFA codes in clear).
    pub fn listen_refusal(&self) -> Option<String> {
        use std::net::ToSocketAddrs as _;
        let addrs: Vec<std::net::SocketAddr> = match self.listen.to_socket_addrs() {
            Ok(a) => a.collect(),
            Err(e) => {
                return Some(format!(
                    "[server] listen = `{}` is not a host:port address: {e}",
                    self.listen
                ));
            }
        };
        if self.allow_plaintext || self.tls().is_some() {
            return None;
        }
        let beyond = addrs.iter().find(|a| !a.ip().is_loopback())?;
        Some(format!(
            "[server] listen = `{}` reaches beyond this machine ({}): rolegate speaks plain HTTP, so API tokens and MFA codes would cross the network unencrypted. Set [server] tls_cert and tls_key to serve HTTPS, listen on 127.0.0.1 behind a TLS reverse proxy, or set [server] allow_plaintext = true if the path to the clients is protected otherwise (a private link, a mesh that does TLS)",
            self.listen,
            beyond.ip()
        ))
    }

    /// The token of `metrics_token_file`, when one is set: read from a private file, and
    /// refused (without being shown) when too short to resist guessing.
    pub fn metrics_token(&self) -> Result<Option<String>> {
        let Some(file) = &self.metrics_token_file else {
            return Ok(None);
        };
        let token = read_secret(file)?;
        let what = || format!("[server] metrics_token_file {}", file.display());
        if token.chars().any(|c| !c.is_ascii_graphic()) {
            return Err(Error::Invalid {
                what: what(),
                message: "the token must be one line of printable ASCII without spaces".into(),
            });
        }
        if token.len() < MIN_METRICS_TOKEN {
            return Err(Error::Invalid {
                what: what(),
                message: format!(
                    "the token has {} characters; it needs at least {MIN_METRICS_TOKEN} (make one with `openssl rand -hex 32`)",
                    token.len()
                ),
            });
        }
        Ok(Some(token))
    }

    /// The certificate and key files, when the API is served over HTTPS.
    pub fn tls(&self) -> Option<(&Path, &Path)> {
        self.tls_cert.as_deref().zip(self.tls_key.as_deref())
    }

    /// What API clients' certificates are checked against, when mutual TLS is asked for.
    pub fn client_certs(&self) -> Option<crate::http::tls::ClientCerts> {
        self.tls_client_ca
            .clone()
            .map(|ca| crate::http::tls::ClientCerts {
                ca,
                crl: self.tls_client_crl.clone(),
            })
    }

    /// The limits the HTTP server puts on clients.
    pub fn limits(&self) -> crate::http::server::Limits {
        crate::http::server::Limits {
            client_timeout: Duration::from_secs(self.client_timeout_s),
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            ..crate::http::server::Limits::default()
        }
    }
}

pub use crate::store::{DEFAULT_WAL_MB, StoreConfig, WAL_MB_RANGE};

/// Where events go besides the database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// A JSON-lines file that receives every event (for a SIEM), with its chain hash.
    #[serde(default)]
    pub jsonl: Option<PathBuf>,
    /// The file of signed checkpoints of the chain's head (relative to the config's folder);
    /// `rolegate.anchors` beside the key file when unset.
    #[serde(default)]
    pub anchor_file: Option<PathBuf>,
    /// How often the chain's head is checked and, when it moved, anchored (milliseconds).
    #[serde(default = "default_anchor_interval_ms")]
    pub anchor_interval_ms: u64,
}

/// The anchor intervals the setting accepts, in milliseconds.
pub const ANCHOR_INTERVAL_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=3_600_000;

fn default_anchor_interval_ms() -> u64 {
    1_000
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            jsonl: None,
            anchor_file: None,
            anchor_interval_ms: default_anchor_interval_ms(),
        }
    }
}

impl EventsConfig {
    /// The anchor file: `anchor_file`, or `rolegate.anchors` beside `key_file`.
    pub fn anchor_path(&self, key_file: &Path) -> PathBuf {
        self.anchor_file
            .clone()
            .unwrap_or_else(|| key_file.with_file_name("rolegate.anchors"))
    }
}

/// Limits every provider gets from the host.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Country calling code for phone numbers written without one (MIM's DefaultCountryCode).
    #[serde(default = "default_cc")]
    pub default_country_code: u16,
    /// Wrong answers allowed in one challenge.
    #[serde(default = "default_wrong")]
    pub max_wrong_answers: i64,
    /// Wrong answers per user and provider (across their requests) that lock the user out.
    #[serde(default = "default_lockout")]
    pub lockout_threshold: i64,
    /// Lockout length, seconds.
    #[serde(default = "default_lockout_s")]
    pub lockout_s: i64,
    /// How long a request may wait for approval, seconds.
    #[serde(default = "default_approval_s")]
    pub approval_timeout_s: i64,
    /// Requests one account may create per minute.
    #[serde(default = "default_rpm")]
    pub requests_per_minute: u32,
}

fn default_rpm() -> u32 {
    30
}

fn default_cc() -> u16 {
    1
}
fn default_wrong() -> i64 {
    3
}
fn default_lockout() -> i64 {
    5
}
fn default_lockout_s() -> i64 {
    900
}
/// The values `[policy] lockout_s` and `approval_timeout_s` may take, in seconds: up to 366
/// days. (The service adds them, in milliseconds, to the time: an unbounded value overflowed.)
pub const POLICY_SECONDS_RANGE: std::ops::RangeInclusive<i64> = 1..=31_622_400;

fn default_approval_s() -> i64 {
    86_400
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            default_country_code: default_cc(),
            max_wrong_answers: default_wrong(),
            lockout_threshold: default_lockout(),
            lockout_s: default_lockout_s(),
            approval_timeout_s: default_approval_s(),
            requests_per_minute: default_rpm(),
        }
    }
}

pub use crate::plugins::{Isolation, PluginsConfig, ProviderConfig};

use crate::store::private_files::read_private;
pub use crate::store::private_files::{check_private, read_secret};

impl Config {
    /// Reads and checks a config file: private permissions, known keys, unique provider ids.
    pub fn load(path: &Path) -> Result<Self> {
        let text = read_private(path, "config ")?;
        let mut config = Self::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in &mut config.providers {
            if p.library.is_relative() {
                p.library = base.join(&p.library);
            }
        }
        // Every other file the config names is relative to the config's folder too.
        let optional = [
            &mut config.store.postgres_password_file,
            &mut config.events.jsonl,
            &mut config.events.anchor_file,
            &mut config.server.tls_cert,
            &mut config.server.tls_key,
            &mut config.server.tls_client_ca,
            &mut config.server.tls_client_crl,
            &mut config.server.access_log,
            &mut config.server.metrics_token_file,
            &mut config.plugins.worker,
        ];
        let directory = config
            .directory
            .as_mut()
            .and_then(|d| d.bind_password_file.as_mut());
        for p in [&mut config.store.sqlite, &mut config.store.key_file]
            .into_iter()
            .chain(optional.into_iter().flatten())
            .chain(directory)
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(d) = &config.directory {
            d.check()?;
        }
        Ok(config)
    }

    /// Parses config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let p = &config.policy;
        if p.max_wrong_answers < 1 || p.lockout_threshold < 1 {
            return Err(Error::Config {
                path: path.to_path_buf(),
                message: "[policy] limits must be at least 1".into(),
            });
        }
        for (key, seconds) in [
            ("[policy] lockout_s", p.lockout_s),
            ("[policy] approval_timeout_s", p.approval_timeout_s),
        ] {
            within(path, key, seconds, &POLICY_SECONDS_RANGE, " (seconds)")?;
        }
        config.limits.validate().map_err(|message| Error::Config {
            path: path.to_path_buf(),
            message,
        })?;
        if !crate::model::phone::is_country_code(p.default_country_code) {
            return Err(Error::Config {
                path: path.to_path_buf(),
                message: format!(
                    "[policy] default_country_code = {} is not an assigned country code",
                    p.default_country_code
                ),
            });
        }
        let server = &config.server;
        if server.tls_cert.is_some() != server.tls_key.is_some() {
            let (set, missing) = if server.tls_cert.is_some() {
                ("tls_cert", "tls_key")
            } else {
                ("tls_key", "tls_cert")
            };
            return Err(Error::Config {
                path: path.to_path_buf(),
                message: format!(
                    "[server] {set} is set but {missing} is not: HTTPS needs the certificate chain (tls_cert) and its private key (tls_key)"
                ),
            });
        }
        if server.tls_client_crl.is_some() && server.tls_client_ca.is_none() {
            return Err(Error::Config {
                path: path.to_path_buf(),
                message: "[server] tls_client_crl is set but tls_client_ca is not: revocation lists retire client certificates, which only mutual TLS asks for".into(),
            });
        }
        if server.tls_client_ca.is_some() && server.tls_cert.is_none() {
            return Err(Error::Config {
                path: path.to_path_buf(),
                message: "[server] tls_client_ca is set but tls_cert and tls_key are not: client certificates are asked for in the TLS handshake, so the daemon must serve HTTPS".into(),
            });
        }
        within(
            path,
            "[server] client_timeout_s",
            server.client_timeout_s,
            &CLIENT_TIMEOUT_S_RANGE,
            " (seconds)",
        )?;
        within(
            path,
            "[server] max_connections",
            server.max_connections,
            &MAX_CONNECTIONS_RANGE,
            "",
        )?;
        within(
            path,
            "[server] max_connections_per_client",
            server.max_connections_per_client,
            &MAX_CONNECTIONS_RANGE,
            "",
        )?;
        within(
            path,
            "[store] wal_mb",
            config.store.wal_mb,
            &WAL_MB_RANGE,
            " (MB)",
        )?;
        within(
            path,
            "[events] anchor_interval_ms",
            config.events.anchor_interval_ms,
            &ANCHOR_INTERVAL_MS_RANGE,
            " (milliseconds)",
        )?;
        if let Some(conn) = &config.store.postgres {
            crate::store::postgres::parse_config(conn, None).map_err(|e| Error::Config {
                path: path.to_path_buf(),
                message: format!("[store] postgres: {e}"),
            })?;
        } else if config.store.postgres_password_file.is_some() {
            return Err(Error::Config {
                path: path.to_path_buf(),
                message: "[store] postgres_password_file is set without postgres".into(),
            });
        }
        let mut seen: HashMap<&str, &Path> = HashMap::new();
        for p in &config.providers {
            if let Some(first) = seen.insert(p.id.as_str(), p.library.as_path()) {
                return Err(Error::DuplicateProvider {
                    id: p.id.clone(),
                    first: first.to_path_buf(),
                    second: p.library.clone(),
                });
            }
            if p.id.is_empty()
                || p.id.len() > 64
                || !p
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                return Err(Error::Config {
                    path: path.to_path_buf(),
                    message: format!(
                        "provider id `{}` must be 1 to 64 lower-case letters, digits, `-` or `_`",
                        p.id
                    ),
                });
            }
            p.sunset().map_err(|message| Error::Config {
                path: path.to_path_buf(),
                message,
            })?;
            if p.sha256.is_some() && p.unpinned {
                return Err(Error::Config {
                    path: path.to_path_buf(),
                    message: format!(
                        "provider `{}` sets both `sha256` and `unpinned = true`; keep one",
                        p.id
                    ),
                });
            }
            if p.sha256.is_none() && !p.unpinned {
                return Err(Error::Config {
                    path: path.to_path_buf(),
                    message: format!(
                        "provider `{}` has no `sha256` pin; pin the library (`rolegate provider pin {}`) or set `unpinned = true` for development",
                        p.id,
                        p.library.display()
                    ),
                });
            }
            if p.deadline_ms == Some(0) {
                return Err(Error::Config {
                    path: path.to_path_buf(),
                    message: format!("provider `{}`: `deadline_ms` must be above 0", p.id),
                });
            }
            timeout_within_deadline(path, p, &config.plugins)?;
        }
        Ok(config)
    }
}

/// Refuses a provider whose `timeout_ms` setting (sms-twilio's budget for one send, retries
/// included) is longer than its call deadline: the host would abandon the call before the
/// provider gives up with its own clear error, and the admin would read "did not answer
/// within 5000 ms" instead of Twilio's reason.
///
/// Checked here rather than by the provider: the host owns the deadline, and telling it to
/// the provider would take a settings key every provider refuses as unknown (they must,
/// docs/abi.md section 4) or a new field in the ABI. The config is the one place that sees
/// both numbers, so the rule holds for any provider that has a `timeout_ms`.
fn timeout_within_deadline(path: &Path, p: &ProviderConfig, plugins: &PluginsConfig) -> Result<()> {
    // Not an integer: the provider's own check names it.
    let Some(timeout_ms) = p
        .settings
        .get("timeout_ms")
        .and_then(toml::Value::as_integer)
    else {
        return Ok(());
    };
    let deadline_ms = p.deadline(plugins).as_millis();
    if u128::try_from(timeout_ms).is_ok_and(|t| t > deadline_ms) {
        let which = match p.deadline_ms {
            Some(_) => "its `deadline_ms`",
            None => "`[plugins] deadline_ms`",
        };
        return Err(Error::Config {
            path: path.to_path_buf(),
            message: format!(
                "provider `{}`: setting `timeout_ms` = {timeout_ms} is longer than the provider's call deadline of {deadline_ms} ms ({which}): the host would abandon the call before the provider gives up; lower `timeout_ms` below {deadline_ms} or raise the deadline",
                p.id
            ),
        });
    }
    Ok(())
}

/// A refusal naming `key` when `value` is outside `range` (`unit` follows the range).
fn within<T: PartialOrd + std::fmt::Display>(
    path: &Path,
    key: &str,
    value: T,
    range: &std::ops::RangeInclusive<T>,
    unit: &str,
) -> Result<()> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(Error::Config {
        path: path.to_path_buf(),
        message: format!(
            "{key} = {value} is outside {}..={}{unit}",
            range.start(),
            range.end()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config> {
        Config::parse(s, Path::new("test.toml"))
    }

    #[test]
    fn a_provider_with_settings_parses() {
        let c = parse(
            r#"
            [[provider]]
            id = "hello"
            library = "libhello.so"
            sha256 = "00"
            isolation = "process"
            [provider.settings]
            digits = 6
            "#,
        )
        .unwrap();
        assert_eq!(c.providers[0].isolation, Isolation::Process);
        assert_eq!(
            c.providers[0].settings_json().unwrap(),
            serde_json::json!({"digits": 6})
        );
        assert_eq!(c.providers[0].deadline(&c.plugins), Duration::from_secs(5));
    }

    #[test]
    fn a_provider_timeout_longer_than_its_deadline_is_refused_naming_both() {
        let sms = |plugins: &str, own: &str, timeout: &str| {
            parse(&format!(
                "{plugins}\n[[provider]]\nid = \"sms\"\nlibrary = \"x.so\"\nunpinned = true\n{own}\n[provider.settings]\n{timeout}\n"
            ))
        };
        let e = sms("", "", "timeout_ms = 6000").unwrap_err().to_string();
        assert!(
            e.contains("provider `sms`")
                && e.contains("`timeout_ms` = 6000")
                && e.contains("call deadline of 5000 ms")
                && e.contains("`[plugins] deadline_ms`"),
            "{e}"
        );
        let e = sms("", "deadline_ms = 2000", "timeout_ms = 2001")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`timeout_ms` = 2001")
                && e.contains("2000 ms")
                && e.contains("its `deadline_ms`"),
            "{e}"
        );
        let e = sms("[plugins]\ndeadline_ms = 3000", "", "timeout_ms = 4000")
            .unwrap_err()
            .to_string();
        assert!(e.contains("4000") && e.contains("3000 ms"), "{e}");
        // Up to the deadline, or no timeout, or one that is no integer (the provider's own
        // check names it): the config passes.
        for (plugins, own, timeout) in [
            ("", "", "timeout_ms = 5000"),
            ("", "", "timeout_ms = 4000"),
            ("", "deadline_ms = 9000", "timeout_ms = 8000"),
            ("[plugins]\ndeadline_ms = 9000", "", "timeout_ms = 9000"),
            ("", "", ""),
            ("", "", "timeout_ms = \"long\""),
            ("", "", "timeout_ms = -1"),
        ] {
            assert!(
                sms(plugins, own, timeout).is_ok(),
                "{plugins} {own} {timeout}"
            );
        }
    }

    #[test]
    fn refusals_name_the_problem() {
        let e = parse("[[provider]]\nid='a'\nlibrary='x'\nsha256='0'\ncolour=1").unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let e = parse("[[provider]]\nid='a'\nlibrary='x'").unwrap_err();
        assert!(e.to_string().contains("no `sha256` pin"), "{e}");
        let e = parse("[[provider]]\nid='A b'\nlibrary='x'\nunpinned=true").unwrap_err();
        assert!(e.to_string().contains("`A b`"), "{e}");
        let e =
            parse("[[provider]]\nid='a'\nlibrary='x'\nunpinned=true\nisolation='vm'").unwrap_err();
        assert!(e.to_string().contains("vm"), "{e}");
        let e = parse(
            "[[provider]]\nid='a'\nlibrary='x'\nunpinned=true\n[[provider]]\nid='a'\nlibrary='y'\nunpinned=true",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("provider id `a` is declared twice in the config (libraries x and y)"),
            "{e}"
        );
    }

    #[test]
    fn the_wal_length_is_a_setting_within_bounds() {
        assert_eq!(parse("").unwrap().store.wal_mb, DEFAULT_WAL_MB);
        assert_eq!(parse("[store]\nwal_mb = 64").unwrap().store.wal_mb, 64);
        for bad in ["0", "3", "4097"] {
            let e = parse(&format!("[store]\nwal_mb = {bad}")).unwrap_err();
            assert!(
                e.to_string()
                    .contains(&format!("[store] wal_mb = {bad} is outside 4..=4096 (MB)")),
                "{e}"
            );
        }
        let e = parse("[store]\nwal_mb = -1").unwrap_err();
        assert!(e.to_string().contains("wal_mb"), "{e}");
    }

    #[test]
    fn the_policy_s_durations_are_bounded() {
        // Flagged by the config fuzz target's check (fuzz/config) on `lockout_s =
        // 9223372036854775`, which was accepted: the service adds a lockout, in milliseconds,
        // to the time — an overflow (a panic in a debug build; in a release build a lockout
        // that ended before it began).
        for key in ["lockout_s", "approval_timeout_s"] {
            parse(&format!("[policy]\n{key} = 31622400")).unwrap();
            for bad in [
                "0",
                "-1",
                "31622401",
                "9223372036854775",
                "9223372036854775807",
            ] {
                let e = parse(&format!("[policy]\n{key} = {bad}")).unwrap_err();
                assert!(
                    e.to_string().contains(&format!(
                        "[policy] {key} = {bad} is outside 1..=31622400 (seconds)"
                    )),
                    "{e}"
                );
            }
        }
        let e = parse("[policy]\nmax_wrong_answers = 0").unwrap_err();
        assert!(
            e.to_string().contains("[policy] limits must be at least 1"),
            "{e}"
        );
    }

    #[test]
    fn the_anchor_file_and_interval_are_settings_within_bounds() {
        use std::os::unix::fs::PermissionsExt as _;
        let c = parse("").unwrap();
        assert_eq!(c.events.anchor_interval_ms, 1_000);
        assert_eq!(
            c.events.anchor_path(&c.store.key_file),
            Path::new("rolegate.anchors")
        );
        let c = parse("[events]\nanchor_interval_ms = 250").unwrap();
        assert_eq!(c.events.anchor_interval_ms, 250);
        for bad in ["0", "99", "3600001"] {
            let e = parse(&format!("[events]\nanchor_interval_ms = {bad}")).unwrap_err();
            assert!(
                e.to_string().contains(&format!(
                    "[events] anchor_interval_ms = {bad} is outside 100..=3600000 (milliseconds)"
                )),
                "{e}"
            );
        }
        // Beside the key file by default; a set file is relative to the config's folder.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rolegate.toml");
        std::fs::write(&p, "[store]\nkey_file = \"/etc/rolegate/rolegate.key\"").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!(
            c.events.anchor_path(&c.store.key_file),
            Path::new("/etc/rolegate/rolegate.anchors")
        );
        std::fs::write(&p, "[events]\nanchor_file = \"state/chain.anchors\"").unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!(
            c.events.anchor_path(&c.store.key_file),
            dir.path().join("state/chain.anchors")
        );
    }

    #[test]
    fn plain_http_is_served_on_loopback_only_unless_allowed() {
        let server = |listen: &str, allow: bool| ServerConfig {
            listen: listen.into(),
            allow_plaintext: allow,
            ..ServerConfig::default()
        };
        for ok in [
            "127.0.0.1:8420",
            "[::1]:8420",
            "localhost:8420",
            "127.0.0.1:0",
        ] {
            assert_eq!(server(ok, false).listen_refusal(), None, "{ok}");
        }
        for beyond in ["0.0.0.0:8420", "192.0.2.10:8420", "[::]:8420"] {
            let refusal = server(beyond, false).listen_refusal().expect(beyond);
            assert!(
                refusal.contains(&format!("[server] listen = `{beyond}` reaches beyond"))
                    && refusal.contains("allow_plaintext = true"),
                "{refusal}"
            );
            assert_eq!(server(beyond, true).listen_refusal(), None, "{beyond}");
        }
        let refusal = server("8420", true).listen_refusal().expect("no host");
        assert!(
            refusal.contains("[server] listen = `8420` is not a host:port address"),
            "{refusal}"
        );
        assert!(
            parse("[server]\nallow_plaintext = true")
                .unwrap()
                .server
                .allow_plaintext
        );
        // HTTPS may listen anywhere.
        let tls = ServerConfig {
            tls_cert: Some("cert.pem".into()),
            tls_key: Some("key.pem".into()),
            ..server("0.0.0.0:8420", false)
        };
        assert_eq!(tls.listen_refusal(), None);
    }

    #[test]
    fn https_needs_both_files_named_beside_the_config() {
        use std::os::unix::fs::PermissionsExt as _;
        for (set, missing) in [("tls_cert", "tls_key"), ("tls_key", "tls_cert")] {
            let e = parse(&format!("[server]\n{set} = \"x.pem\"")).unwrap_err();
            assert!(
                e.to_string()
                    .contains(&format!("[server] {set} is set but {missing} is not")),
                "{e}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rolegate.toml");
        std::fs::write(
            &p,
            "[server]\ntls_cert = \"cert.pem\"\ntls_key = \"/etc/rolegate/key.pem\"",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!(
            c.server.tls(),
            Some((
                dir.path().join("cert.pem").as_path(),
                Path::new("/etc/rolegate/key.pem")
            ))
        );
        assert_eq!(parse("").unwrap().server.tls(), None);
        // Client certificates need HTTPS; their CA is named beside the config too.
        let e = parse("[server]\ntls_client_ca = \"clients.pem\"").unwrap_err();
        assert!(
            e.to_string()
                .contains("[server] tls_client_ca is set but tls_cert and tls_key are not"),
            "{e}"
        );
        std::fs::write(
            &p,
            "[server]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\ntls_client_ca = \"clients.pem\"",
        )
        .unwrap();
        let c = Config::load(&p).unwrap();
        assert_eq!(c.server.tls_client_ca, Some(dir.path().join("clients.pem")));
        let e = parse("[server]\ntls_client_crl = \"clients.crl\"").unwrap_err();
        assert!(
            e.to_string()
                .contains("[server] tls_client_crl is set but tls_client_ca is not"),
            "{e}"
        );
    }

    #[test]
    fn the_server_limits_are_settings_within_bounds() {
        let c = parse("").unwrap();
        assert_eq!(
            c.server.limits().client_timeout,
            Duration::from_secs(DEFAULT_CLIENT_TIMEOUT_S)
        );
        assert_eq!(c.server.limits().max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(
            c.server.limits().max_connections_per_client,
            DEFAULT_MAX_CONNECTIONS_PER_CLIENT
        );
        let c = parse(
            "[server]\nclient_timeout_s = 5\nmax_connections = 64\nmax_connections_per_client = 8",
        )
        .unwrap();
        assert_eq!(c.server.limits().client_timeout, Duration::from_secs(5));
        assert_eq!(c.server.limits().max_connections, 64);
        assert_eq!(c.server.limits().max_connections_per_client, 8);
        for bad in ["0", "3601"] {
            let e = parse(&format!("[server]\nclient_timeout_s = {bad}")).unwrap_err();
            assert!(
                e.to_string().contains(&format!(
                    "[server] client_timeout_s = {bad} is outside 1..=3600 (seconds)"
                )),
                "{e}"
            );
        }
        let e = parse("[server]\nmax_connections = 0").unwrap_err();
        assert!(
            e.to_string()
                .contains("[server] max_connections = 0 is outside 1..=1000000"),
            "{e}"
        );
        let e = parse("[server]\nmax_connections_per_client = 0").unwrap_err();
        assert!(
            e.to_string()
                .contains("[server] max_connections_per_client = 0 is outside 1..=1000000"),
            "{e}"
        );
        let e = parse("[server]\nmax_conections = 10").unwrap_err();
        assert!(e.to_string().contains("max_conections"), "{e}");
    }

    #[test]
    fn readable_files_are_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rolegate.toml");
        std::fs::write(&p, "").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Config::load(&p).unwrap_err();
        assert!(e.to_string().contains("mode 644"), "{e}");
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        Config::load(&p).unwrap();
    }
}
