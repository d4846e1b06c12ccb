//! `rolegate token` and `rolegate whoami`: API tokens, and whose token this is.

use clap::Subcommand;
use rolegate::client::{Client, segment};
use serde_json::json;

use super::Out;

/// The `rolegate token` commands.
#[derive(Subcommand)]
pub(crate) enum TokenCommand {
    /// Issue a token for an account; it is shown once.
    New {
        /// The account it speaks for.
        #[arg(long)]
        account: String,
        /// Let it administer users, roles, tokens and events.
        #[arg(long)]
        admin: bool,
        /// A note for admins.
        #[arg(long, default_value = "")]
        label: String,
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
        TokenCommand::New {
            account,
            admin,
            label,
        } => {
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
