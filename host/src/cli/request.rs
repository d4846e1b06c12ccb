//! `rolegate request`: activation requests — new (walking MFA), get, close.

use anyhow::bail;
use clap::Subcommand;
use rolegate::client::{Client, request_summary, segment};
use serde_json::json;

use super::Out;

/// The `rolegate request` commands.
#[derive(Subcommand)]
pub(crate) enum RequestCommand {
    /// Request a role and complete its MFA here (New-PAMRequest).
    New {
        /// The role.
        #[arg(long)]
        role: String,
        /// Why (-Justification).
        #[arg(long, default_value = "")]
        justification: String,
        /// Activation length, seconds (-RequestedTTL).
        #[arg(long)]
        ttl: Option<i64>,
        /// The MFA provider, when the role accepts several.
        #[arg(long)]
        provider: Option<String>,
        /// Start later, at this RFC 3339 time (-RequestedTime).
        #[arg(long)]
        start: Option<String>,
        /// The code your authenticator app shows, sent with the request (TOTP roles): one
        /// round trip, no prompt. `-` reads it first, from the terminal without echo or a
        /// line of standard input.
        #[arg(long)]
        code: Option<String>,
    },
    /// Answer a request's MFA prompt here (a smartcard's, or a code), e.g. one the web page
    /// sent to the terminal because a browser cannot reach the card reader.
    Answer {
        /// Request id.
        id: String,
    },
    /// Show a request, or your requests (Get-PAMRequest).
    Get {
        /// Request id; your requests when omitted.
        id: Option<String>,
    },
    /// Close a request (Close-PAMRequest).
    Close {
        /// Request id.
        id: String,
    },
    /// List requests, newest first: yours, or with `--all` everyone's (admins; MIM's
    /// Get-PAMRequest across users).
    List {
        /// Everyone's requests (admins).
        #[arg(long)]
        all: bool,
        /// Only this user's (with `--all`).
        #[arg(long, requires = "all")]
        account: Option<String>,
        /// Only this role's.
        #[arg(long)]
        role: Option<String>,
        /// Only in these states, comma-separated (active, scheduled, pending_mfa,
        /// pending_approval, expired, closed, rejected, failed, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

/// The columns of `request list` and `approval list`: who, what, why, for how long, when.
pub(crate) const REQUEST_LIST_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("USER", "account"),
    ("ROLE", "role"),
    ("STATE", "state"),
    ("JUSTIFICATION", "justification"),
    ("TTL S", "ttl_s"),
    ("CREATED", "created_at"),
    ("ENDS", "expires_at"),
    ("REASON", "reason"),
];

/// The request table's columns.
pub(crate) const REQUEST_COLUMNS: &[(&str, &str)] = &[
    ("ID", "id"),
    ("USER", "account"),
    ("ROLE", "role"),
    ("STATE", "state"),
    ("PROVIDER", "provider"),
    ("REASON", "reason"),
];

/// Runs a `request` command against the daemon.
pub(crate) async fn run(client: &Client, json: bool, cmd: RequestCommand) -> anyhow::Result<Out> {
    Ok(match cmd {
        RequestCommand::New {
            role,
            justification,
            ttl,
            provider,
            start,
            code,
        } => {
            let code = match code.as_deref() {
                Some("-") => Some(rolegate::client::read_code("Enter the code")?),
                other => other.map(String::from),
            }
            .map(|c| c.trim().to_string());
            let mut body = json!({"role": role, "justification": justification, "ttl_s": ttl,
                "provider": provider, "starts_at": start});
            // Only when given: a daemon older than the field refuses fields it does not know.
            if let Some(code) = code {
                body["code"] = json!(code);
            }
            let v = client.call("POST", "/v1/requests", Some(body)).await?;
            let v = rolegate::client::walk_request(client, v).await?;
            // A request that ended without the role is a failure for scripts too.
            if matches!(
                v["state"].as_str(),
                Some("failed" | "rejected" | "cancelled")
            ) {
                bail!("{}", request_summary(&v));
            }
            if json {
                (v, None)
            } else {
                (json!(request_summary(&v)), None)
            }
        }
        RequestCommand::Answer { id } => {
            let v = client
                .call("GET", &format!("/v1/requests/{}", segment(&id)), None)
                .await?;
            let v = rolegate::client::walk_request(client, v).await?;
            if matches!(
                v["state"].as_str(),
                Some("failed" | "rejected" | "cancelled")
            ) {
                bail!("{}", request_summary(&v));
            }
            if json {
                (v, None)
            } else {
                (json!(request_summary(&v)), None)
            }
        }
        RequestCommand::Get { id: Some(id) } => (
            client
                .call("GET", &format!("/v1/requests/{}", segment(&id)), None)
                .await?,
            Some(REQUEST_COLUMNS),
        ),
        RequestCommand::Get { id: None } => (
            client.call("GET", "/v1/requests", None).await?,
            Some(REQUEST_LIST_COLUMNS),
        ),
        RequestCommand::List {
            all,
            account,
            role,
            state,
            limit,
        } => {
            let mut query = vec![format!("limit={limit}")];
            if all {
                query.push("all=true".into());
            }
            for (name, value) in [("account", account), ("role", role), ("state", state)] {
                if let Some(v) = value {
                    query.push(format!("{name}={}", segment(&v)));
                }
            }
            (
                client
                    .call("GET", &format!("/v1/requests?{}", query.join("&")), None)
                    .await?,
                Some(REQUEST_LIST_COLUMNS),
            )
        }
        RequestCommand::Close { id } => {
            let v = client
                .call(
                    "POST",
                    &format!("/v1/requests/{}/close", segment(&id)),
                    None,
                )
                .await?;
            if json {
                (v, None)
            } else {
                (json!(request_summary(&v)), None)
            }
        }
    })
}
