//! `rolegate user`: users, their credentials and lockouts (the PAM user cmdlets).

use clap::Subcommand;
use rolegate::client::{Client, segment};
use serde_json::json;

use super::Out;

/// The `rolegate user` commands.
#[derive(Subcommand)]
pub(crate) enum UserCommand {
    /// Add a user (New-PAMUser).
    New {
        /// Account (`CONTOSO\jdoe`).
        account: String,
        /// Display name.
        #[arg(long)]
        display_name: Option<String>,
        /// Phone number; the default country code applies when it has none.
        #[arg(long)]
        phone: Option<String>,
        /// E-mail address.
        #[arg(long)]
        email: Option<String>,
        /// Copy display name, phone and e-mail from the configured directory (once).
        #[arg(long)]
        from_directory: bool,
        /// Accept an account that mixes scripts or looks like an existing one (recorded in
        /// event 500): only for a name you have checked letter by letter.
        #[arg(long)]
        allow_lookalike: bool,
    },
    /// Change a user (Set-PAMUser); a phone change raises event 825.
    Set {
        /// Account.
        account: String,
        /// Display name.
        #[arg(long)]
        display_name: Option<String>,
        /// Phone number (empty to remove).
        #[arg(long)]
        phone: Option<String>,
        /// E-mail (empty to remove).
        #[arg(long)]
        email: Option<String>,
        /// Enable or disable the user.
        #[arg(long)]
        enabled: Option<bool>,
    },
    /// Show one user, or all (Get-PAMUser).
    Get {
        /// Account; all users when omitted.
        account: Option<String>,
    },
    /// Remove a user (Remove-PAMUser).
    Remove {
        /// Account.
        account: String,
    },
    /// List a user's credentials (never their secrets).
    Credentials {
        /// Account.
        account: String,
    },
    /// Remove a user's credential, e.g. a lost phone (event 311); the user may enrol again.
    RemoveCredential {
        /// Account.
        account: String,
        /// The provider the credential belongs to.
        #[arg(long)]
        provider: String,
        /// The credential's id (from `user credentials`).
        #[arg(long)]
        id: String,
    },
    /// Lift a user's lockout from a provider (event 301).
    Unlock {
        /// Account.
        account: String,
        /// The provider the user is locked out of.
        #[arg(long)]
        provider: String,
    },
}

/// The user table's columns.
pub(crate) const USER_COLUMNS: &[(&str, &str)] = &[
    ("ACCOUNT", "account"),
    ("DISPLAY NAME", "display_name"),
    ("PHONE", "phone"),
    ("EMAIL", "email"),
    ("ENABLED", "enabled"),
];

/// The credential table's columns.
pub(crate) const CREDENTIAL_COLUMNS: &[(&str, &str)] = &[
    ("PROVIDER", "provider"),
    ("ID", "id"),
    ("LABEL", "label"),
    ("CREATED", "created_at"),
    ("FLAG", "flag"),
];

/// Runs a `user` command against the daemon.
pub(crate) async fn run(client: &Client, cmd: UserCommand) -> anyhow::Result<Out> {
    Ok(match cmd {
        UserCommand::New {
            account,
            display_name,
            phone,
            email,
            from_directory,
            allow_lookalike,
        } => {
            let mut body = json!({"account": account,
                "display_name": display_name.unwrap_or_default(), "phone": phone, "email": email,
                "from_directory": from_directory});
            // Sent only when set: a daemon that predates it refuses unknown fields.
            if allow_lookalike {
                body["allow_lookalike"] = json!(true);
            }
            (
                client.call("POST", "/v1/users", Some(body)).await?,
                Some(USER_COLUMNS),
            )
        }
        UserCommand::Set {
            account,
            display_name,
            phone,
            email,
            enabled,
        } => {
            let mut body = serde_json::Map::new();
            if let Some(d) = display_name {
                body.insert("display_name".into(), json!(d));
            }
            if let Some(p) = phone {
                body.insert(
                    "phone".into(),
                    if p.is_empty() { json!(null) } else { json!(p) },
                );
            }
            if let Some(e) = email {
                body.insert(
                    "email".into(),
                    if e.is_empty() { json!(null) } else { json!(e) },
                );
            }
            if let Some(e) = enabled {
                body.insert("enabled".into(), json!(e));
            }
            (
                client
                    .call(
                        "PATCH",
                        &format!("/v1/users/{}", segment(&account)),
                        Some(body.into()),
                    )
                    .await?,
                Some(USER_COLUMNS),
            )
        }
        UserCommand::Get { account: Some(a) } => (
            client
                .call("GET", &format!("/v1/users/{}", segment(&a)), None)
                .await?,
            Some(USER_COLUMNS),
        ),
        UserCommand::Get { account: None } => (
            client.call("GET", "/v1/users", None).await?,
            Some(USER_COLUMNS),
        ),
        UserCommand::Remove { account } => {
            client
                .call("DELETE", &format!("/v1/users/{}", segment(&account)), None)
                .await?;
            (json!(format!("removed user `{account}`")), None)
        }
        UserCommand::Credentials { account } => {
            let path = format!("/v1/users/{}/credentials", segment(&account));
            (
                client.call("GET", &path, None).await?,
                Some(CREDENTIAL_COLUMNS),
            )
        }
        UserCommand::RemoveCredential {
            account,
            provider,
            id,
        } => {
            let path = format!(
                "/v1/users/{}/credentials/{}/{}",
                segment(&account),
                segment(&provider),
                segment(&id)
            );
            client.call("DELETE", &path, None).await?;
            (
                json!(format!(
                    "credential `{id}` of `{account}` in `{provider}` removed"
                )),
                None,
            )
        }
        UserCommand::Unlock { account, provider } => {
            let v = client
                .call(
                    "POST",
                    &format!("/v1/users/{}/unlock", segment(&account)),
                    Some(json!({"provider": provider})),
                )
                .await?;
            let said = if v["unlocked"] == true {
                "lockout lifted"
            } else {
                "was not locked out"
            };
            (json!(format!("`{account}` on `{provider}`: {said}")), None)
        }
    })
}
