//! `rolegate role`: roles and their policy (the PAM role cmdlets).

use clap::Subcommand;
use rolegate::client::{Client, segment};
use serde_json::json;

use super::Out;

/// A role's policy as `role new` and `role set` take it.
#[derive(clap::Args, Default)]
pub(crate) struct RoleArgs {
    /// Candidate accounts, comma-separated (New-PAMRole -Candidates).
    #[arg(long, value_delimiter = ',')]
    candidates: Option<Vec<String>>,
    /// Approver accounts, comma-separated (-Approvers).
    #[arg(long, value_delimiter = ',')]
    approvers: Option<Vec<String>>,
    /// Default activation length, seconds (-TTL).
    #[arg(long)]
    ttl: Option<i64>,
    /// Longest activation, seconds.
    #[arg(long)]
    max_ttl: Option<i64>,
    /// Require MFA through the role's providers (-MFAEnabled): yes or no (1/0, true/false).
    #[arg(long, value_parser = yes_no)]
    mfa_enabled: Option<bool>,
    /// Require an approver's approval (-ApprovalEnabled): yes or no (1/0, true/false).
    #[arg(long, value_parser = yes_no)]
    approval_enabled: Option<bool>,
    /// Require a justification: yes or no (1/0, true/false).
    #[arg(long, value_parser = yes_no)]
    justification_required: Option<bool>,
    /// Accepted MFA providers in order of preference, comma-separated.
    #[arg(long, value_delimiter = ',')]
    providers: Option<Vec<String>>,
    /// Providers to try in shadow, comma-separated: after the real factor succeeds the user is
    /// asked for the first they can use; recorded (events 207, 208), never deciding.
    #[arg(long, value_delimiter = ',')]
    shadow: Option<Vec<String>>,
    /// Remove the shadow providers.
    #[arg(long, conflicts_with = "shadow")]
    no_shadow: bool,
    /// When the chosen provider is unavailable: `fail-closed` (refuse; the default) or
    /// `fallback` (the next provider the user can use, in the role's order).
    #[arg(long, value_parser = ["fail-closed", "fallback"])]
    when_factor_down: Option<String>,
    /// Availability window days (`mon-fri`), comma-separated (-AvailabilityWindowEnabled).
    #[arg(long, value_delimiter = ',')]
    available_days: Option<Vec<String>>,
    /// Window opening time, HH:MM (-AvailableFrom).
    #[arg(long)]
    available_from: Option<String>,
    /// Window closing time, HH:MM (-AvailableTo).
    #[arg(long)]
    available_to: Option<String>,
    /// Window time zone (IANA).
    #[arg(long)]
    time_zone: Option<String>,
    /// Remove the availability window.
    #[arg(long)]
    no_window: bool,
}

/// The `rolegate role` commands.
#[derive(Subcommand)]
pub(crate) enum RoleCommand {
    /// Add a role (New-PAMRole).
    New {
        /// Role name.
        name: String,
        #[command(flatten)]
        args: RoleArgs,
    },
    /// Change a role (Set-PAMRole).
    Set {
        /// Role name.
        name: String,
        #[command(flatten)]
        args: RoleArgs,
    },
    /// Show one role, or all (Get-PAMRole).
    Get {
        /// Role name; all roles when omitted.
        name: Option<String>,
    },
    /// Remove a role (Remove-PAMRole).
    Remove {
        /// Role name.
        name: String,
    },
    /// Put a role's providers and shadows back as they were before their latest change
    /// (event 513); a second rollback undoes the first.
    Rollback {
        /// Role name.
        name: String,
    },
    /// Which candidates could satisfy each role's MFA today with each of its providers and
    /// shadows (enrolled, phone on record, not locked out), shadow successes, and which
    /// provider the role could drop.
    Readiness {
        /// Role name; every role when omitted.
        name: Option<String>,
    },
    /// A role's provider changes, newest first: when, who, the lists before and after.
    History {
        /// Role name.
        name: String,
    },
}

/// Readiness as people read it: a role a block, its providers as a table, then what it means.
fn readiness_text(v: &serde_json::Value) -> String {
    const PROVIDER_COLUMNS: &[(&str, &str)] = &[
        ("PROVIDER", "provider"),
        ("SHADOW", "shadow"),
        ("STATUS", "status"),
        ("READY", "ready"),
        ("CANDIDATES", "candidates"),
        ("SHADOW DONE BY", "shadow_completed_by"),
        ("SHADOW OK", "shadow_completed"),
        ("SHADOW FAILED", "shadow_not_completed"),
    ];
    let mut out = String::new();
    for r in v.as_array().into_iter().flatten() {
        out.push_str(&format!("role `{}`\n", r["role"].as_str().unwrap_or("-")));
        if r["providers"].as_array().is_some_and(|p| !p.is_empty()) {
            for line in rolegate::client::table(&r["providers"], PROVIDER_COLUMNS).lines() {
                out.push_str(&format!("  {line}\n"));
            }
        }
        for s in r["summary"].as_array().into_iter().flatten() {
            out.push_str(&format!("  - {}\n", s.as_str().unwrap_or_default()));
        }
        out.push('\n');
    }
    out.trim_end().to_string()
}

/// The rollback's columns.
const ROLLBACK_COLUMNS: &[(&str, &str)] = &[
    ("ROLE", "role"),
    ("PROVIDERS", "providers"),
    ("SHADOW", "shadow"),
    ("PROVIDERS BEFORE", "providers_before"),
    ("SHADOW BEFORE", "shadow_before"),
];

/// The history table's columns.
const HISTORY_COLUMNS: &[(&str, &str)] = &[
    ("AT", "at"),
    ("ACTOR", "actor"),
    ("PROVIDERS BEFORE", "providers_before"),
    ("SHADOW BEFORE", "shadow_before"),
    ("PROVIDERS AFTER", "providers_after"),
    ("SHADOW AFTER", "shadow_after"),
    ("ROLLBACK", "rollback"),
];

/// The role table's columns.
pub(crate) const ROLE_COLUMNS: &[(&str, &str)] = &[
    ("NAME", "name"),
    ("MFA", "mfa_enabled"),
    ("PROVIDERS", "providers"),
    ("SHADOW", "shadow"),
    ("APPROVAL", "approval_enabled"),
    ("TTL", "ttl_s"),
    ("MAX TTL", "max_ttl_s"),
    ("CANDIDATES", "candidates"),
];

/// A yes/no option's value: `1/0`, `true/false`, `yes/no`, `on/off`, in any case.
fn yes_no(v: &str) -> Result<bool, String> {
    rolegate::model::yes_no(v)
        .ok_or_else(|| format!("`{}` is not yes or no (1/0, true/false, yes/no)", v.trim()))
}

fn role_body(
    name: &str,
    base: Option<serde_json::Value>,
    a: RoleArgs,
) -> anyhow::Result<serde_json::Value> {
    use serde_json::json;
    // What `GET` adds for an admin to read is not part of the policy.
    let base = base.map(|mut b| {
        if let Some(o) = b.as_object_mut() {
            o.remove("warnings");
        }
        b
    });
    let mut v = base.unwrap_or_else(|| {
        json!({"name": name, "candidates": [], "approvers": [], "ttl_s": 3600, "max_ttl_s": 3600,
               "justification_required": false, "approval_enabled": false, "mfa_enabled": false, "providers": []})
    });
    if let Some(c) = a.candidates {
        v["candidates"] = json!(c);
    }
    if let Some(c) = a.approvers {
        v["approvers"] = json!(c);
    }
    if let Some(t) = a.ttl {
        v["ttl_s"] = json!(t);
        if a.max_ttl.is_none() && v["max_ttl_s"].as_i64().unwrap_or(0) < t {
            v["max_ttl_s"] = json!(t);
        }
    }
    if let Some(t) = a.max_ttl {
        v["max_ttl_s"] = json!(t);
    }
    if let Some(m) = a.mfa_enabled {
        v["mfa_enabled"] = json!(m);
    }
    if let Some(m) = a.approval_enabled {
        v["approval_enabled"] = json!(m);
    }
    if let Some(m) = a.justification_required {
        v["justification_required"] = json!(m);
    }
    if let Some(p) = a.providers {
        v["providers"] = json!(p);
    }
    if a.no_shadow {
        v["shadow"] = json!([]);
    } else if let Some(p) = a.shadow {
        let p: Vec<String> = p.into_iter().filter(|p| !p.trim().is_empty()).collect();
        v["shadow"] = json!(p);
    }
    if let Some(w) = a.when_factor_down {
        v["when_factor_down"] = json!(w.replace('-', "_"));
    }
    if a.no_window {
        v["availability"] = serde_json::Value::Null;
    } else if a.available_days.is_some() || a.available_from.is_some() || a.available_to.is_some() {
        let old = v["availability"].clone();
        v["availability"] = json!({
            "days": a.available_days.map(|d| json!(d)).unwrap_or_else(|| old["days"].clone()),
            "from": a.available_from.map(|d| json!(d)).unwrap_or_else(|| old["from"].clone()),
            "to": a.available_to.map(|d| json!(d)).unwrap_or_else(|| old["to"].clone()),
            "time_zone": a.time_zone.map(|d| json!(d)).unwrap_or_else(|| {
                if old["time_zone"].is_null() { json!("UTC") } else { old["time_zone"].clone() }
            }),
        });
    }
    Ok(v)
}

/// Runs a `role` command against the daemon.
pub(crate) async fn run(client: &Client, json: bool, cmd: RoleCommand) -> anyhow::Result<Out> {
    Ok(match cmd {
        RoleCommand::Readiness { name } => {
            let v = match &name {
                Some(n) => {
                    let one = client
                        .call("GET", &format!("/v1/roles/{}/readiness", segment(n)), None)
                        .await?;
                    json!([one])
                }
                None => client.call("GET", "/v1/readiness", None).await?,
            };
            if json {
                (v, None)
            } else {
                (json!(readiness_text(&v)), None)
            }
        }
        RoleCommand::New { name, args } => {
            let body = role_body(&name, None, args)?;
            (
                client.call("POST", "/v1/roles", Some(body)).await?,
                Some(ROLE_COLUMNS),
            )
        }
        RoleCommand::Set { name, args } => {
            let path = format!("/v1/roles/{}", segment(&name));
            let current = client.call("GET", &path, None).await?;
            let body = role_body(&name, Some(current), args)?;
            (
                client.call("PUT", &path, Some(body)).await?,
                Some(ROLE_COLUMNS),
            )
        }
        RoleCommand::Get { name: Some(n) } => {
            let v = client
                .call("GET", &format!("/v1/roles/{}", segment(&n)), None)
                .await?;
            // Warnings go to standard error, so the table (or JSON) stays clean to parse.
            for w in v["warnings"].as_array().into_iter().flatten() {
                eprintln!("warning: {}", w.as_str().unwrap_or_default());
            }
            (v, Some(ROLE_COLUMNS))
        }
        RoleCommand::Get { name: None } => (
            client.call("GET", "/v1/roles", None).await?,
            Some(ROLE_COLUMNS),
        ),
        RoleCommand::Remove { name } => {
            client
                .call("DELETE", &format!("/v1/roles/{}", segment(&name)), None)
                .await?;
            (json!(format!("removed role `{name}`")), None)
        }
        RoleCommand::Rollback { name } => {
            let v = client
                .call(
                    "POST",
                    &format!("/v1/roles/{}/rollback", segment(&name)),
                    None,
                )
                .await?;
            (v, Some(ROLLBACK_COLUMNS))
        }
        RoleCommand::History { name } => {
            let v = client
                .call(
                    "GET",
                    &format!("/v1/roles/{}/history", segment(&name)),
                    None,
                )
                .await?;
            let mut changes = v["changes"].clone();
            // Times as people read them (the JSON keeps Unix ms).
            for c in changes.as_array_mut().into_iter().flatten() {
                if let Some(t) = c["at"]
                    .as_i64()
                    .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
                {
                    c["at"] = json!(t.to_string());
                }
            }
            (changes, Some(HISTORY_COLUMNS))
        }
    })
}
