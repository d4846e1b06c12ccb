//! `rolegate token` and `rolegate whoami`: API tokens, and whose token this is.

use clap::Subcommand;
use rolegate::client::{Client, segment};
use serde_json::json;

use super::Out;

/// The `rolegate token` commands.
#[derive(Subcommand)]
pub(crate) enum TokenCommand {
    /// Issue a token for an account; it is shown once.
    ///
    /// With `--admin --offline --config FILE`, the owner of the config issues an admin token
    /// straight into the store, without the API: when no admin token is left (the first one
    /// lost, every admin token revoked). Event 520 records it.
    New {
        /// The account it speaks for (`admin` by default with `--offline`).
        #[arg(long, required_unless_present = "offline")]
        account: Option<String>,
        /// Let it administer users, roles, tokens and events.
        #[arg(long)]
        admin: bool,
        /// A note for admins.
        #[arg(long, default_value = "")]
        label: String,
        /// Write the token into the store named by `--config`, without the daemon: only for
        /// `--admin`, and only by the config file's owner.
        #[arg(long, requires_all = ["admin", "config"])]
        offline: bool,
        /// The host's config file (with `--offline`).
        #[arg(long, requires = "offline")]
        config: Option<std::path::PathBuf>,
    },
    /// List the tokens: id, account, admin, label, when issued (never a secret).
    List,
    /// Revoke a token by its id (from `token list`): it stops working at once.
    Revoke {
        /// The token's id.
        id: String,
    },
}

/// Runs a `token` command against the daemon.
pub(crate) async fn run(client: &Client, json: bool, cmd: TokenCommand) -> anyhow::Result<Out> {
    Ok(match cmd {
        TokenCommand::List => (
            client.call("GET", "/v1/tokens", None).await?,
            Some(
                &[
                    ("ID", "id"),
                    ("ACCOUNT", "account"),
                    ("ADMIN", "admin"),
                    ("LABEL", "label"),
                    ("CREATED", "created_at"),
                ][..],
            ),
        ),
        TokenCommand::Revoke { id } => {
            let v = client
                .call("DELETE", &format!("/v1/tokens/{}", segment(&id)), None)
                .await?;
            if json {
                (v, None)
            } else {
                (
                    json!(format!(
                        "token `{}` of `{}` revoked",
                        v["id"].as_str().unwrap_or(""),
                        v["account"].as_str().unwrap_or("")
                    )),
                    None,
                )
            }
        }
        TokenCommand::New { offline: true, .. } => {
            anyhow::bail!("`--offline` runs without the daemon (internal: dispatched apart)")
        }
        TokenCommand::New {
            account,
            admin,
            label,
            ..
        } => {
            let account = account.unwrap_or_default();
            let v = client
                .call(
                    "POST",
                    "/v1/tokens",
                    Some(json!({"account": account, "admin": admin, "label": label})),
                )
                .await?;
            if json {
                (v, None)
            } else {
                (
                    json!(format!(
                        "token for `{account}` (shown once): {}",
                        v["token"].as_str().unwrap_or("")
                    )),
                    None,
                )
            }
        }
    })
}

/// `rolegate token new --admin --offline --config FILE`: the config's owner issues an admin
/// token into the store directly (event 520, its actor naming the local user), for when none
/// can be had through the API. The config is read as the daemon reads it (a secret file
/// readable by others is refused), and only its owner — the account that runs the daemon, or
/// root — may do this: whoever can write the store could anyway.
pub(crate) fn issue_offline(
    config_path: &std::path::Path,
    account: Option<&str>,
    label: &str,
    json: bool,
) -> anyhow::Result<std::process::ExitCode> {
    use anyhow::Context;
    use std::os::unix::fs::MetadataExt;
    let config = rolegate::config::Config::load(config_path)?;
    let owner = std::fs::metadata(config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?
        .uid();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if me != owner && me != 0 {
        anyhow::bail!(
            "only the owner of {} (uid {owner}) or root may issue a token offline; you are uid {me}",
            config_path.display()
        );
    }
    let account = account.unwrap_or("admin").trim().to_string();
    let label = if label.is_empty() {
        "issued offline".to_string()
    } else {
        label.to_string()
    };
    let actor = format!("offline (uid {me})");
    let now = jiff::Timestamp::now().as_millisecond();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let token = rt.block_on(async {
        let store_config = config.store.clone();
        let store =
            tokio::task::spawn_blocking(move || rolegate::store::Store::open(&store_config, now))
                .await??;
        let (a, l) = (account.clone(), label.clone());
        let token = store
            .write(move |tx| {
                let token = rolegate::records::tokens::issue(tx, &a, true, &l, now)?;
                rolegate::records::events::admin_change(
                    tx,
                    rolegate::records::events::TOKEN_ISSUED,
                    &actor,
                    Some(&a),
                    None,
                    &format!("admin token issued offline by the config's owner: {l}"),
                    now,
                )?;
                Ok(token)
            })
            .await;
        store.close();
        anyhow::Ok(token?)
    })?;
    if json {
        println!(
            "{}",
            json!({"account": account, "admin": true, "token": token})
        );
    } else {
        eprintln!(
            "rolegate: an admin token for `{account}` (shown once, keep it secret):\n\n    export ROLEGATE_TOKEN={token}\n"
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Whose token this is.
pub(crate) async fn whoami(client: &Client, json: bool) -> anyhow::Result<Out> {
    let v = client.call("GET", "/v1/me", None).await?;
    Ok(if json {
        (v, None)
    } else {
        let kind = if v["admin"] == true {
            "an admin token"
        } else {
            "a user token"
        };
        (
            json!(format!(
                "`{}` ({kind})",
                v["account"].as_str().unwrap_or("")
            )),
            None,
        )
    })
}
