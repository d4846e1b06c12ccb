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
    Mim(MimArgs),
}

/// `rolegate import mim`'s options.
#[derive(clap::Args)]
pub(crate) struct MimArgs {
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
    /// Refuse the import (non-zero exit, nothing written) when there is any warning.
    #[arg(long)]
    strict: bool,
    /// Change existing users and roles where the files differ (only the fields they carry);
    /// without it, differences are reported and left as they are.
    #[arg(long)]
    update: bool,
    /// The IANA time zone of MIM's availability windows (default: this machine's zone).
    #[arg(long)]
    time_zone: Option<String>,
}

/// Prints the warnings as a table: file, line, what.
fn print_warnings(warnings: &[rolegate::records::import::Warning]) {
    if warnings.is_empty() {
        println!("warnings: none");
        return;
    }
    println!("warnings: {}", warnings.len());
    let width = warnings
        .iter()
        .map(|w| w.file.chars().count() + w.line.to_string().len() + 1)
        .max()
        .unwrap_or(0);
    for w in warnings {
        let at = format!("{}:{}", w.file, w.line);
        println!("  {at:<width$}  {}", w.message);
    }
}

/// Runs `rolegate import mim`; with `json`, prints one JSON object (the plan and what was done).
pub(crate) fn import_mim(args: &MimArgs, json: bool) -> anyhow::Result<ExitCode> {
    let MimArgs {
        config: config_path,
        settings,
        users,
        roles,
        provider_id,
        dry_run,
        strict,
        update,
        time_zone,
    } = args;
    let update = *update;
    let (dry_run, strict, provider_id) = (*dry_run, *strict, provider_id.as_str());
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
    // The windows' zone: the flag, else this machine's (never UTC by default).
    let zone = match time_zone {
        Some(z) => Some(
            jiff::tz::TimeZone::get(z)
                .map(|_| z.clone())
                .with_context(|| format!("--time-zone `{z}` is not an IANA time zone"))?,
        ),
        None => jiff::tz::TimeZone::try_system()
            .ok()
            .and_then(|z| z.iana_name().map(str::to_string)),
    };
    // DefaultCountryCode from the MfaSettings.xml given, as MIM applied it.
    let settings_cc = {
        let bytes = std::fs::read(&settings)
            .with_context(|| format!("cannot read {}", settings.display()))?;
        rolegate::records::import::settings_country_code(&settings.display().to_string(), &bytes)?
    };
    // Every file is checked before anything is written, and the bad rows of both reported.
    use rolegate::records::import::{Files, read_role_file, read_user_file};
    let user_file = users
        .as_deref()
        .map(|p| read(p).and_then(|t| Ok(read_user_file(&p.display().to_string(), &t)?)));
    let role_file = roles.as_deref().map(|p| {
        read(p).and_then(|t| {
            Ok(read_role_file(
                &p.display().to_string(),
                &t,
                provider_id,
                zone.as_deref(),
            )?)
        })
    });
    let files = match (user_file.transpose(), role_file.transpose()) {
        (Ok(u), Ok(r)) => Files {
            users: u.unwrap_or_default(),
            roles: r.unwrap_or_default(),
        },
        (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e),
        (Err(a), Err(b)) => anyhow::bail!("{a:#}\n{b:#}"),
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
        // A configured provider reads its own file: the one given is still read and checked by
        // the provider (a copy of its block pointed at it), then only its DefaultCountryCode is used.
        let configured_file = provider.settings.get("mfa_settings").and_then(|v| v.as_str()).map(PathBuf::from);
        let reads_other = block.is_none()
            && configured_file.as_deref().and_then(|f| std::fs::canonicalize(f).ok()).as_deref() != Some(settings.as_path());
        if reads_other {
            let mut check = provider.clone();
            check.settings.insert("mfa_settings".into(), toml::Value::String(settings.display().to_string()));
            let loaded = plugins::load_one(&check, &config.plugins).await.with_context(|| {
                format!("{} does not load with provider `{provider_id}`'s other settings", settings.display())
            })?;
            loaded.shutdown().await;
        }
        let now = jiff::Timestamp::now().as_millisecond();
        let store_config = config.store.clone();
        let store = tokio::task::spawn_blocking(move || rolegate::store::Store::open(&store_config, now)).await??;
        let cc = settings_cc.unwrap_or(config.policy.default_country_code);
        let plan = if dry_run {
            store.read(move |tx| rolegate::records::import::plan(tx, &files, cc, update)).await
        } else {
            store.write(move |tx| rolegate::records::import::apply(tx, &files, cc, (strict, update), now)).await
        };
        store.close();
        let plan = plan?;
        if dry_run && strict && !plan.warnings.is_empty() {
            if !json {
                print_warnings(&plan.warnings);
            }
            return Err(rolegate::records::import::strict_refusal(&plan.warnings).into());
        }
        let provider_action = match (&block, dry_run) {
            (Some(_), true) => "would_be_added",
            (Some(_), false) => "added",
            (None, _) => "configured",
        };
        let verb = if dry_run { "would be " } else { "" };
        if let (Some(b), false) = (&block, dry_run) {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(config_path)
                .with_context(|| format!("cannot write {}", config_path.display()))?;
            f.write_all(b.as_bytes())?;
        }
        if json {
            let report = serde_json::json!({
                "dry_run": dry_run,
                "provider": {"id": provider_id, "action": provider_action, "config": config_path.display().to_string(), "block": block},
                "settings": {"file": settings.display().to_string(), "read_by_configured_provider": !reads_other},
                "country_code": {"value": cc, "from": if settings_cc.is_some() { "settings" } else { "policy" }},
                "time_zone": zone,
                "plan": plan,
            });
            println!("{}", serde_json::to_string_pretty(&report)?);
            return Ok(());
        }
        if reads_other {
            println!("{}: read and checked; provider `{provider_id}` keeps reading {}", settings.display(), configured_file.as_deref().map(|f| f.display().to_string()).unwrap_or_default());
        }
        match (&block, dry_run) {
            (Some(b), true) => println!("provider `{provider_id}` would be added to {}:{b}", config_path.display()),
            (Some(_), false) => {
                println!("provider `{provider_id}` added to {} (restart the daemon to load it)", config_path.display());
            }
            (None, _) => println!("provider `{provider_id}`: configured already, and it loads"),
        }
        match settings_cc {
            Some(cc) => println!("phone numbers without a country code: +{cc} (DefaultCountryCode in {})", settings.display()),
            None => println!("phone numbers without a country code: +{cc} ([policy] default_country_code)"),
        }
        match &zone {
            Some(z) => println!("availability windows without a TimeZone column: {z}"),
            None => println!("availability windows without a TimeZone column: none given (--time-zone), and this machine's zone is unknown"),
        }
        let names = |v: &[String]| if v.is_empty() { String::new() } else { format!(": {}", v.join(", ")) };
        let fields = |v: &[(String, Vec<String>)]| -> Vec<String> { v.iter().map(|(a, f)| format!("{a} ({})", f.join(", "))).collect() };
        let (users_changed, roles_changed) = (fields(&plan.users_changed), fields(&plan.roles_changed));
        let differ = if update { format!("{verb}changed") } else { "differ, left as they are (--update changes them)".to_string() };
        println!("users: {} {verb}created{}", plan.users_created.len(), names(&plan.users_created));
        println!("users: {} {differ}{}", users_changed.len(), names(&users_changed));
        println!("users: {} unchanged", plan.users_unchanged);
        println!("roles: {} {verb}created{}", plan.roles_created.len(), names(&plan.roles_created));
        println!("roles: {} {differ}{}", roles_changed.len(), names(&roles_changed));
        println!("roles: {} unchanged", plan.roles_unchanged);
        print_warnings(&plan.warnings);
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
