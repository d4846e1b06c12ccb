//! Test harness: locates the libraries and binaries the workspace built, builds C plugins.
//!
//! The tests need `cargo build --workspace` (the cdylibs and the `rolegate` binary) to have
//! run first; the README's test command does that.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The folder with the built binaries and cdylibs (`target/debug`).
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn built(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` before the tests",
        p.display()
    );
    p
}

/// The example hello provider library.
pub fn hello_lib() -> PathBuf {
    built("librolegate_example_hello.so")
}

/// The TOTP provider library.
pub fn totp_lib() -> PathBuf {
    built("librolegate_provider_totp.so")
}

/// The legacy phone-call provider library.
pub fn legacy_phone_lib() -> PathBuf {
    built("librolegate_provider_legacy_phone.so")
}

/// The SMS-via-Twilio provider library.
pub fn sms_twilio_lib() -> PathBuf {
    built("librolegate_provider_sms_twilio.so")
}

/// A port on 127.0.0.1 that nothing listens on now (for a server a test starts on it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// The WebAuthn provider library.
pub fn webauthn_lib() -> PathBuf {
    built("librolegate_provider_webauthn.so")
}

/// The smartcard (PIV) provider library.
pub fn smartcard_lib() -> PathBuf {
    built("librolegate_provider_smartcard.so")
}

/// The misbehaving test provider library.
pub fn misbehave_lib() -> PathBuf {
    built("librolegate_test_misbehave.so")
}

/// The `rolegate` binary.
pub fn rolegate_bin() -> PathBuf {
    built("rolegate")
}

/// Compiles a C plugin source into a shared library in `out_dir`.
pub fn build_c(src: &Path, out_dir: &Path) -> PathBuf {
    let stem = src.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin");
    let out = out_dir.join(format!("lib{stem}.so"));
    let include = workspace_root().join("sdk/include");
    let status = Command::new("cc")
        .args(["-std=c11", "-O1", "-Wall", "-shared", "-fPIC", "-I"])
        .arg(&include)
        .arg("-o")
        .arg(&out)
        .arg(src)
        .status()
        .unwrap_or_else(|e| panic!("cannot run cc: {e}"));
    assert!(status.success(), "cc failed on {}", src.display());
    out
}

/// A C source from `tests/plugins/broken/`, compiled.
pub fn broken_c(name: &str, out_dir: &Path) -> PathBuf {
    build_c(
        &workspace_root().join("tests/plugins/broken").join(name),
        out_dir,
    )
}

/// Writes a file readable by its owner only (config and settings files must be private).
pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// The ids of the events a request raised, oldest first.
pub async fn request_event_ids(service: &rolegate::service::Service, request: &str) -> Vec<i64> {
    use rolegate::records::events::{self, Filter};
    let r = request.to_string();
    let mut ids: Vec<i64> = service
        .store()
        .read(move |tx| events::list(tx, &Filter::default()))
        .await
        .unwrap_or_else(|e| panic!("reading the event log: {e}"))
        .into_iter()
        .filter(|e| e.request.as_deref() == Some(r.as_str()))
        .map(|e| e.id)
        .collect();
    ids.reverse();
    ids
}

/// Closes `account`'s active activations of `role`: one live request per user and role, so a
/// test that activates a role again is done with the last one first.
pub async fn close_active(service: &rolegate::service::Service, account: &str, role: &str) {
    let live = service
        .list_requests(rolegate::service::RequestFilter {
            account: Some(account.to_string()),
            role: Some(role.to_string()),
            states: vec![rolegate::model::activation::RequestState::Active],
            before_ms: None,
            limit: 100,
        })
        .await
        .unwrap_or_else(|e| panic!("listing {account}'s requests: {e}"));
    for v in live {
        service
            .close(&v.id, account, false)
            .await
            .unwrap_or_else(|e| panic!("closing {}: {e}", v.id));
    }
}

/// An unpinned provider of the test build (`isolation` as the config spells it).
pub fn provider_config(
    id: &str,
    library: PathBuf,
    isolation: &str,
) -> rolegate::config::ProviderConfig {
    rolegate::config::ProviderConfig {
        sunset: None,
        id: id.into(),
        library,
        sha256: None,
        unpinned: true,
        isolation: isolation
            .parse()
            .unwrap_or_else(|e| panic!("isolation `{isolation}`: {e}")),
        deadline_ms: None,
        settings: Default::default(),
    }
}

/// Loads `providers` as the daemon would, with this build's worker for isolated ones.
pub async fn load_providers(
    providers: Vec<rolegate::config::ProviderConfig>,
) -> rolegate::Result<rolegate::plugins::Providers> {
    let config = rolegate::config::Config {
        plugins: rolegate::config::PluginsConfig {
            worker: Some(rolegate_bin()),
            ..Default::default()
        },
        providers,
        ..Default::default()
    };
    rolegate::plugins::Providers::load(&config.plugins, &config.providers).await
}

pub mod browser;
pub mod daemon;
pub mod ldap;
pub mod pcsc;
pub mod pg;
pub mod phonefactor;
pub mod proxy;
pub mod stores;
pub mod twilio;

/// Creates users of these accounts with nothing else set (the tests' plain candidates and
/// approvers), inside the caller's write.
pub fn create_users(
    tx: &mut dyn rolegate::store::Tx,
    accounts: &[&str],
) -> rolegate::model::error::Result<()> {
    for account in accounts {
        rolegate::records::users::create(
            tx,
            rolegate::records::users::NewUser {
                account: (*account).into(),
                ..Default::default()
            },
            1,
            0,
        )?;
    }
    Ok(())
}
