//! `rolegate import mim`: an existing MIM PAM deployment taken as it is.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;

use rolegate::config::{Config, Isolation};
use rolegate::plugins;

use crate::runtime;

#[derive(Subcommand)]
pub(crate) enum ImportCommand {
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

pub(crate) fn import_mim(
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
    // Export-Csv and Out-File write UTF-8 (with or without a BOM) or UTF-16 with a BOM.
    let read = |p: &Path| -> anyhow::Result<String> {
        let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        Ok(rolegate::records::import::decode(
            &p.display().to_string(),
            &bytes,
        )?)
    };
    // Every file is checked before anything is written.
    let user_rows = match users {
        Some(p) => rolegate::records::import::read_users(&p.display().to_string(), &read(p)?)?,
        None => Vec::new(),
    };
    let role_rows = match roles {
        Some(p) => {
            rolegate::records::import::read_roles(&p.display().to_string(), &read(p)?, provider_id)?
        }
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
            store.read(move |tx| rolegate::records::import::plan(tx, &u, &r, cc)).await?
        } else {
            store.write(move |tx| rolegate::records::import::apply(tx, &u, &r, cc, now)).await?
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
