//! Stored roles: the policy of each role, kept as a JSON document so that policy fields can be
//! added without a migration.

use std::collections::BTreeSet;

use jiff::SignedDuration;
use serde::{Deserialize, Serialize};

use crate::model::error::{Error, Result};
use crate::model::identity::{NameKind, check_name, quoted, same_account, skeleton};
use crate::model::role::{AvailabilityWindow, FactorDown, Role};
use crate::store::{Tx, Value};

/// A role's policy as it is stored and exchanged (API, CLI, import).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    /// Role name.
    pub name: String,
    /// Candidate accounts.
    #[serde(default)]
    pub candidates: BTreeSet<String>,
    /// Approver accounts.
    #[serde(default)]
    pub approvers: BTreeSet<String>,
    /// Default activation length, seconds.
    pub ttl_s: i64,
    /// Longest activation, seconds.
    pub max_ttl_s: i64,
    /// Availability window, when the role has one.
    #[serde(default)]
    pub availability: Option<WindowSpec>,
    /// Whether a justification is required.
    #[serde(default)]
    pub justification_required: bool,
    /// Whether approval is required (MIM ApprovalEnabled).
    #[serde(default)]
    pub approval_enabled: bool,
    /// Whether MFA is required (MIM MFAEnabled).
    #[serde(default)]
    pub mfa_enabled: bool,
    /// Accepted providers, in order of preference.
    #[serde(default)]
    pub providers: Vec<String>,
    /// When the chosen provider is unavailable: `fail_closed` (the default) or `fallback` to
    /// the next provider the user can use.
    #[serde(default)]
    pub when_factor_down: FactorDown,
    /// Providers tried in shadow after the real factor succeeds: their outcome is recorded
    /// (events 104, 105) and counted by readiness, never decides the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadow: Vec<String>,
}

/// An availability window as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    /// Days (`mon`, `mon-fri`).
    pub days: Vec<String>,
    /// Opening time, `HH:MM`.
    pub from: String,
    /// Closing time, `HH:MM`.
    pub to: String,
    /// IANA time zone.
    pub time_zone: String,
}

impl RoleSpec {
    /// The policy, checked: every field valid, the time zone known.
    pub fn to_role(&self) -> Result<Role> {
        let availability = match &self.availability {
            None => None,
            Some(w) => {
                let days: Vec<&str> = w.days.iter().map(String::as_str).collect();
                Some(AvailabilityWindow::new(
                    &days,
                    &w.from,
                    &w.to,
                    &w.time_zone,
                )?)
            }
        };
        let role = Role {
            name: self.name.trim().to_string(),
            candidates: self.candidates.clone(),
            approvers: self.approvers.clone(),
            ttl_default: SignedDuration::from_secs(self.ttl_s),
            ttl_max: SignedDuration::from_secs(self.max_ttl_s),
            availability,
            justification_required: self.justification_required,
            approval_enabled: self.approval_enabled,
            mfa_enabled: self.mfa_enabled,
            providers: self.providers.clone(),
            when_factor_down: self.when_factor_down,
            shadow: self.shadow.clone(),
        };
        role.validate()?;
        Ok(role)
    }
}

fn decode(name: &str, policy: &str) -> Result<RoleSpec> {
    serde_json::from_str(policy).map_err(|e| Error::Store {
        what: format!("reading role `{name}`"),
        message: format!("its stored policy is not valid: {e}"),
    })
}

/// Stores a new role; the name must be free.
pub fn create(tx: &mut dyn Tx, spec: &RoleSpec, now_ms: i64) -> Result<()> {
    check_name(NameKind::Role, &spec.name)?;
    check_accounts(spec, None)?;
    check_people(tx, spec, None)?;
    spec.to_role()?;
    if get(tx, &spec.name)?.is_some() {
        return Err(Error::Conflict(format!(
            "role `{}` exists already",
            spec.name
        )));
    }
    // A role whose name reads like another's (another case, a look-alike letter) would be
    // mistaken for it in every list and event.
    let skeleton = skeleton(&spec.name);
    for r in tx.query("SELECT name FROM roles", &[])? {
        let other = r.text(0)?;
        if same_account(&other, &spec.name) || crate::model::identity::skeleton(&other) == skeleton
        {
            return Err(Error::Conflict(format!(
                "role {} looks like the existing role {}: choose a name that reads differently",
                quoted(&spec.name),
                quoted(&other)
            )));
        }
    }
    let policy = serde_json::to_string(spec).map_err(|e| Error::Store {
        what: "encoding a role".into(),
        message: e.to_string(),
    })?;
    tx.execute(
        "INSERT INTO roles (name, revision, policy, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)",
        &[
            spec.name.trim().into(),
            Value::Int(new_revision()?),
            policy.into(),
            Value::Int(now_ms),
        ],
    )?;
    Ok(())
}

/// Replaces a role's policy; a change of its providers or shadows is kept in its history
/// (for [`rollback`]), naming `actor`.
pub fn replace(tx: &mut dyn Tx, spec: &RoleSpec, actor: &str, now_ms: i64) -> Result<()> {
    replace_as(tx, spec, actor, now_ms, false)
}

fn replace_as(
    tx: &mut dyn Tx,
    spec: &RoleSpec,
    actor: &str,
    now_ms: i64,
    rollback: bool,
) -> Result<()> {
    let old = get(tx, &spec.name)?;
    check_accounts(spec, old.as_ref())?;
    check_people(tx, spec, old.as_ref())?;
    spec.to_role()?;
    let policy = serde_json::to_string(spec).map_err(|e| Error::Store {
        what: "encoding a role".into(),
        message: e.to_string(),
    })?;
    let n = tx.execute(
        "UPDATE roles SET policy = $1, updated_at = $2, revision = $3 WHERE name = $4",
        &[
            policy.into(),
            Value::Int(now_ms),
            Value::Int(new_revision()?),
            spec.name.trim().into(),
        ],
    )?;
    if n == 0 {
        return Err(Error::NotFound {
            what: format!("role `{}`", spec.name),
        });
    }
    if let Some(old) = old
        && (old.providers != spec.providers || old.shadow != spec.shadow)
    {
        record_change(tx, &old, spec, actor, now_ms, rollback)?;
    }
    Ok(())
}

/// One change of a role's providers or shadows, as its history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ProviderChange {
    /// When, Unix ms.
    pub at: i64,
    /// Who made it.
    pub actor: String,
    /// The providers before it.
    pub providers_before: Vec<String>,
    /// The shadow providers before it.
    pub shadow_before: Vec<String>,
    /// The providers after it.
    pub providers_after: Vec<String>,
    /// The shadow providers after it.
    pub shadow_after: Vec<String>,
    /// Whether it was a rollback.
    pub rollback: bool,
}

/// How many changes a role's history keeps (the oldest go first).
pub const HISTORY_KEPT: i64 = 100;

fn list_json(l: &[String]) -> Result<String> {
    serde_json::to_string(l).map_err(|e| Error::Store {
        what: "encoding a provider list".into(),
        message: e.to_string(),
    })
}

fn record_change(
    tx: &mut dyn Tx,
    old: &RoleSpec,
    new: &RoleSpec,
    actor: &str,
    now_ms: i64,
    rollback: bool,
) -> Result<()> {
    let name = new.name.trim();
    let rows = tx.query(
        "SELECT COALESCE(MAX(seq), 0) FROM role_history WHERE role = $1",
        &[name.into()],
    )?;
    let seq = rows.first().map(|r| r.int(0)).transpose()?.unwrap_or(0) + 1;
    tx.execute(
        "INSERT INTO role_history (role, at, seq, actor, providers_before, shadow_before, providers_after, shadow_after, rollback) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            name.into(),
            Value::Int(now_ms),
            Value::Int(seq),
            actor.into(),
            list_json(&old.providers)?.into(),
            list_json(&old.shadow)?.into(),
            list_json(&new.providers)?.into(),
            list_json(&new.shadow)?.into(),
            Value::Int(i64::from(rollback)),
        ],
    )?;
    tx.execute(
        "DELETE FROM role_history WHERE role = $1 AND seq <= $2",
        &[name.into(), Value::Int(seq - HISTORY_KEPT)],
    )?;
    Ok(())
}

/// A role's provider changes, newest first (at most [`HISTORY_KEPT`]).
pub fn history(tx: &mut dyn Tx, name: &str) -> Result<Vec<ProviderChange>> {
    let list = |r: &crate::store::Row, i: usize| -> Result<Vec<String>> {
        serde_json::from_str(&r.text(i)?).map_err(|e| Error::Store {
            what: format!("reading the history of role `{name}`"),
            message: e.to_string(),
        })
    };
    tx.query(
        "SELECT at, actor, providers_before, shadow_before, providers_after, shadow_after, rollback FROM role_history WHERE role = $1 ORDER BY seq DESC",
        &[name.trim().into()],
    )?
    .iter()
    .map(|r| {
        Ok(ProviderChange {
            at: r.int(0)?,
            actor: r.text(1)?,
            providers_before: list(r, 2)?,
            shadow_before: list(r, 3)?,
            providers_after: list(r, 4)?,
            shadow_after: list(r, 5)?,
            rollback: r.int(6)? != 0,
        })
    })
    .collect()
}

/// Puts a role's providers and shadows back as they were before their latest change (a
/// rollback is a change too: a second one undoes the first). Returns the role before and
/// after; refused, changing nothing, when there is no change to undo or the earlier lists no
/// longer fit the role's policy.
pub fn rollback(
    tx: &mut dyn Tx,
    name: &str,
    actor: &str,
    now_ms: i64,
) -> Result<(RoleSpec, RoleSpec)> {
    let current = get(tx, name)?.ok_or_else(|| Error::NotFound {
        what: format!("role `{}`", name.trim()),
    })?;
    let Some(last) = history(tx, name)?.into_iter().next() else {
        return Err(Error::Conflict(format!(
            "role `{}` has no earlier provider list to go back to: its providers have not changed since it was created (or since rolegate kept a history)",
            current.name
        )));
    };
    let mut earlier = current.clone();
    earlier.providers = last.providers_before;
    earlier.shadow = last.shadow_before;
    earlier.to_role().map_err(|e| Error::Invalid {
        what: format!("rollback of role `{}`", current.name),
        message: format!("the earlier provider list does not fit the role now: {e}"),
    })?;
    replace_as(tx, &earlier, actor, now_ms, true)?;
    Ok((current, earlier))
}

/// Refuses candidates and approvers whose names hide or reorder text (those already in
/// `old`, stored before the rule, are kept).
fn check_accounts(spec: &RoleSpec, old: Option<&RoleSpec>) -> Result<()> {
    for (list, names) in [
        ("candidates", &spec.candidates),
        ("approvers", &spec.approvers),
    ] {
        let kept = old.map(|o| {
            if list == "candidates" {
                &o.candidates
            } else {
                &o.approvers
            }
        });
        for name in names {
            if kept.is_some_and(|k| k.contains(name)) {
                continue;
            }
            check_name(NameKind::Account, name.trim()).map_err(|e| Error::Invalid {
                what: format!("role `{}`: {list}", spec.name.trim()),
                message: e.to_string(),
            })?;
        }
    }
    Ok(())
}

/// Refuses candidates and approvers who are not users, naming each (a misspelt account would
/// otherwise sit in the role unnoticed, and a user created later under that name would gain
/// it). Names the role had already stay: removing a user does not lock its roles' edits.
fn check_people(tx: &mut dyn Tx, spec: &RoleSpec, old: Option<&RoleSpec>) -> Result<()> {
    let mut unknown = Vec::new();
    for (what, names, kept) in [
        ("candidate", &spec.candidates, old.map(|o| &o.candidates)),
        ("approver", &spec.approvers, old.map(|o| &o.approvers)),
    ] {
        for name in names {
            if kept.is_some_and(|k| k.contains(name)) {
                continue;
            }
            if crate::records::users::get(tx, name)?.is_none() {
                unknown.push(format!("{what} {}", quoted(name)));
            }
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid {
        what: format!("role `{}`", spec.name.trim()),
        message: format!(
            "no such user: {} (create the user first, or copy it from the directory)",
            unknown.join(", ")
        ),
    })
}

/// Refuses providers and shadows that are not configured, naming each and the configured ones
/// (a misspelt `totpp` would leave the role's MFA with a factor nobody can use). Ones the role
/// had already stay (a provider taken out of the config does not lock the role's edits).
pub fn check_providers<'a>(
    spec: &RoleSpec,
    old: Option<&RoleSpec>,
    configured: impl Iterator<Item = &'a str> + Clone,
) -> Result<()> {
    let mut unknown = Vec::new();
    for (what, names, kept) in [
        ("provider", &spec.providers, old.map(|o| &o.providers)),
        ("shadow provider", &spec.shadow, old.map(|o| &o.shadow)),
    ] {
        for name in names {
            if kept.is_some_and(|k| k.contains(name)) || configured.clone().any(|c| c == name) {
                continue;
            }
            unknown.push(format!("{what} `{name}`"));
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    let known: Vec<String> = configured.map(|c| format!("`{c}`")).collect();
    Err(Error::Invalid {
        what: format!("role `{}`", spec.name.trim()),
        message: format!(
            "unknown {}: no such provider is configured (configured: {})",
            unknown.join(", "),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        ),
    })
}

/// The role with this name.
pub fn get(tx: &mut dyn Tx, name: &str) -> Result<Option<RoleSpec>> {
    let rows = tx.query(
        "SELECT name, policy FROM roles WHERE name = $1",
        &[name.trim().into()],
    )?;
    match rows.first() {
        None => Ok(None),
        Some(r) => decode(&r.text(0)?, &r.text(1)?).map(Some),
    }
}

/// A fresh random revision for a changed role (never 0, the "nothing cached" value).
fn new_revision() -> Result<i64> {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).map_err(|e| Error::Store {
        what: "drawing a role revision".into(),
        message: e.to_string(),
    })?;
    Ok((i64::from_le_bytes(b) & i64::MAX).max(1))
}

/// A role's revision, with its policy text only when the revision is not `known` (for
/// callers that cache the parsed role: an unchanged role costs no policy read).
pub fn get_if_changed(
    tx: &mut dyn Tx,
    name: &str,
    known: i64,
) -> Result<Option<(i64, Option<String>)>> {
    let rows = tx.query(
        "SELECT revision, CASE WHEN revision = $2 THEN NULL ELSE policy END FROM roles WHERE name = $1",
        &[name.trim().into(), Value::Int(known)],
    )?;
    match rows.first() {
        None => Ok(None),
        Some(r) => {
            let policy = match r.0.get(1) {
                Some(Value::Null) | None => None,
                Some(_) => Some(r.text(1)?),
            };
            Ok(Some((r.int(0)?, policy)))
        }
    }
}

/// Parses stored policy text (from [`get_if_changed`]).
pub fn parse(name: &str, policy: &str) -> Result<RoleSpec> {
    decode(name, policy)
}

/// All roles, by name.
pub fn list(tx: &mut dyn Tx) -> Result<Vec<RoleSpec>> {
    tx.query("SELECT name, policy FROM roles ORDER BY name", &[])?
        .iter()
        .map(|r| decode(&r.text(0)?, &r.text(1)?))
        .collect()
}

/// How long before a provider's sunset the daemon starts warning of it.
pub const SUNSET_NOTICE: SignedDuration = SignedDuration::from_hours(30 * 24);

/// What an admin should hear at start about retired and retiring providers (`sunset`): each
/// provider past its sunset or within [`SUNSET_NOTICE`] of it, and each MFA role left with no
/// provider once those sunsets pass — its candidates could then not activate it.
pub fn sunset_warnings(
    roles: &[RoleSpec],
    sunsets: &[(String, jiff::Timestamp)],
    now: jiff::Timestamp,
) -> Vec<String> {
    let due = |at: &jiff::Timestamp| now.duration_until(*at) <= SUNSET_NOTICE;
    let mut out = Vec::new();
    for (id, at) in sunsets.iter().filter(|(_, at)| due(at)) {
        if now >= *at {
            out.push(format!(
                "provider `{id}` was retired on {at}: roles no longer start challenges with it, nor enrol users in it"
            ));
        } else {
            let days = now.duration_until(*at).as_hours() / 24;
            out.push(format!("provider `{id}` retires on {at} (in {days} days)"));
        }
    }
    for role in roles.iter().filter(|r| r.mfa_enabled) {
        let retiring = |p: &String| sunsets.iter().any(|(id, at)| id == p && due(at));
        if !role.providers.is_empty() && role.providers.iter().all(retiring) {
            out.push(format!(
                "role `{}` accepts only {}: once retired, its candidates cannot activate it; add a provider (`rolegate role set '{}' --providers …`)",
                role.name,
                role.providers
                    .iter()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                role.name
            ));
        }
    }
    out
}

/// Removes a role; true when there was one.
pub fn remove(tx: &mut dyn Tx, name: &str) -> Result<bool> {
    // A later role of the same name starts without this one's history.
    tx.execute(
        "DELETE FROM role_history WHERE role = $1",
        &[name.trim().into()],
    )?;
    Ok(tx.execute("DELETE FROM roles WHERE name = $1", &[name.trim().into()])? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::Sqlite;

    /// A store holding the users `spec()` names.
    async fn with_people(dir: &tempfile::TempDir) -> Sqlite {
        let db = Sqlite::open(&dir.path().join("rolegate.db"), 0).unwrap();
        db.write(|tx| {
            for account in ["CONTOSO\\jdoe", "CONTOSO\\boss"] {
                crate::records::users::create(
                    tx,
                    crate::records::users::NewUser {
                        account: account.into(),
                        display_name: account.into(),
                        phone: None,
                        email: None,
                        source: None,
                    },
                    1u16,
                    1,
                )?;
            }
            Ok(())
        })
        .await
        .unwrap();
        db
    }

    fn spec() -> RoleSpec {
        serde_json::from_value(serde_json::json!({
            "name": "Domain Admins",
            "candidates": ["CONTOSO\\jdoe"],
            "approvers": ["CONTOSO\\boss"],
            "ttl_s": 3600, "max_ttl_s": 14400,
            "availability": {"days": ["mon-fri"], "from": "08:00", "to": "18:00", "time_zone": "Europe/London"},
            "approval_enabled": true, "mfa_enabled": true,
            "providers": ["phone-legacy", "totp"]
        }))
        .unwrap()
    }

    #[test]
    fn sunsets_within_a_month_or_past_are_announced_with_the_roles_they_would_strand() {
        let now: jiff::Timestamp = "2027-09-01T00:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        let mut legacy_only = spec();
        legacy_only.name = "Legacy".into();
        legacy_only.providers = vec!["phone-legacy".into()];
        let mut no_mfa = legacy_only.clone();
        no_mfa.name = "NoMfa".into();
        no_mfa.mfa_enabled = false;
        // Both: `Domain Admins` keeps TOTP, so only `Legacy` would be stranded.
        let roles = [spec(), legacy_only, no_mfa];

        let soon = [("phone-legacy".to_string(), at("2027-09-30T00:00:00Z"))];
        let said = sunset_warnings(&roles, &soon, now);
        assert_eq!(said.len(), 2, "{said:?}");
        assert_eq!(
            said[0],
            "provider `phone-legacy` retires on 2027-09-30T00:00:00Z (in 29 days)"
        );
        assert!(
            said[1].starts_with("role `Legacy` accepts only `phone-legacy`: once retired"),
            "{said:?}"
        );

        let past = [("phone-legacy".to_string(), at("2027-08-01T00:00:00Z"))];
        let said = sunset_warnings(&roles, &past, now);
        assert!(
            said[0].contains("was retired on 2027-08-01T00:00:00Z"),
            "{said:?}"
        );
        assert_eq!(said.len(), 2);

        // Far off: nothing yet.
        let later = [("phone-legacy".to_string(), at("2028-01-01T00:00:00Z"))];
        assert!(sunset_warnings(&roles, &later, now).is_empty());
        assert!(sunset_warnings(&roles, &[], now).is_empty());
    }

    #[tokio::test]
    async fn candidates_approvers_and_providers_that_do_not_exist_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("rolegate.db"), 0).unwrap();
        let e = db
            .write(|tx| create(tx, &spec(), 1))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no such user: candidate `CONTOSO\\jdoe`, approver `CONTOSO\\boss`"),
            "{e}"
        );
        assert!(db.read(list).await.unwrap().is_empty(), "nothing stored");
        let db = with_people(&dir).await;
        db.write(|tx| create(tx, &spec(), 1)).await.unwrap();
        // A user removed later stays in the role, and the role can still be edited; a new
        // name must be a user.
        db.write(|tx| crate::records::users::remove(tx, "contoso\\BOSS").map(drop))
            .await
            .unwrap();
        let mut edited = spec();
        edited.ttl_s = 60;
        let e2 = edited.clone();
        db.write(move |tx| replace(tx, &e2, "admin", 2))
            .await
            .unwrap();
        edited.candidates.insert("CONTOSO\\jdoe2".into());
        let e = db
            .write(move |tx| replace(tx, &edited, "admin", 3))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no such user: candidate `CONTOSO\\jdoe2`"),
            "{e}"
        );

        // Providers: a misspelt one is named, with the configured ones.
        let mut typo = spec();
        typo.providers = vec!["totpp".into(), "totp".into()];
        typo.mfa_enabled = true;
        let e = check_providers(&typo, None, ["phone-legacy", "totp"].into_iter())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "role `Domain Admins`: unknown provider `totpp`: no such provider is configured (configured: `phone-legacy`, `totp`)"
        );
        typo.shadow = vec!["smartcard".into()];
        let e = check_providers(&typo, None, std::iter::empty())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("provider `totpp`, provider `totp`, shadow provider `smartcard`")
                && e.ends_with("(configured: none)"),
            "{e}"
        );
        // One the role had already stays (taken out of the config since).
        assert!(check_providers(&typo, Some(&typo.clone()), std::iter::empty()).is_ok());
    }

    #[tokio::test]
    async fn roles_round_trip_and_bad_policies_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = with_people(&dir).await;
        let s = spec();
        let s2 = s.clone();
        db.write(move |tx| create(tx, &s2, 1)).await.unwrap();
        let got = db
            .read(|tx| get(tx, "Domain Admins"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, s);
        assert!(got.to_role().unwrap().availability.is_some());
        let e = db
            .write(move |tx| create(tx, &spec(), 2))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "role `Domain Admins` exists already");

        let mut bad = spec();
        bad.providers.clear();
        let e = db
            .write(move |tx| replace(tx, &bad, "admin", 3))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no provider"), "{e}");
        let stored = db
            .read(|tx| get(tx, "Domain Admins"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.providers.len(), 2, "the failed change lost nothing");

        let e = serde_json::from_value::<RoleSpec>(serde_json::json!({
            "name": "x", "ttl_s": 1, "max_ttl_s": 1, "mfa": true
        }))
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `mfa`"), "{e}");
        assert!(db.write(|tx| remove(tx, "Domain Admins")).await.unwrap());
        assert!(db.read(list).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_changed_role_gets_a_new_revision_and_an_unchanged_one_sends_no_policy() {
        let dir = tempfile::tempdir().unwrap();
        let db = with_people(&dir).await;
        db.write(|tx| create(tx, &spec(), 1)).await.unwrap();
        let (rev, policy) = db
            .read(|tx| get_if_changed(tx, "Domain Admins", 0))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(rev, 0);
        assert_eq!(parse("Domain Admins", &policy.unwrap()).unwrap(), spec());
        let same = db
            .read(move |tx| get_if_changed(tx, "Domain Admins", rev))
            .await
            .unwrap();
        assert_eq!(
            same,
            Some((rev, None)),
            "the known revision: no policy read"
        );

        let mut changed = spec();
        changed.ttl_s = 60;
        db.write(move |tx| replace(tx, &changed, "admin", 2))
            .await
            .unwrap();
        let (rev2, policy) = db
            .read(move |tx| get_if_changed(tx, "Domain Admins", rev))
            .await
            .unwrap()
            .unwrap();
        assert_ne!(rev2, rev, "a change makes a new revision");
        assert_eq!(parse("Domain Admins", &policy.unwrap()).unwrap().ttl_s, 60);
        assert_eq!(
            db.read(|tx| get_if_changed(tx, "nope", 0)).await.unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn provider_changes_are_kept_and_roll_back_one_step_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let db = with_people(&dir).await;
        let mut s = spec();
        s.providers = vec!["phone-legacy".into()];
        let s1 = s.clone();
        db.write(move |tx| create(tx, &s1, 1)).await.unwrap();
        let e = db
            .write(|tx| rollback(tx, "Domain Admins", "admin", 2))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no earlier provider list"), "{e}");

        // A change of something else is not a provider change.
        let mut ttl = s.clone();
        ttl.ttl_s = 600;
        db.write(move |tx| replace(tx, &ttl, "admin", 3))
            .await
            .unwrap();
        assert!(
            db.read(|tx| history(tx, "Domain Admins"))
                .await
                .unwrap()
                .is_empty()
        );

        let mut shadowed = s.clone();
        shadowed.ttl_s = 600;
        shadowed.shadow = vec!["totp".into()];
        db.write(move |tx| replace(tx, &shadowed, "CONTOSO\\boss", 4))
            .await
            .unwrap();
        let mut moved = s.clone();
        moved.ttl_s = 600;
        moved.providers = vec!["totp".into()];
        db.write(move |tx| replace(tx, &moved, "CONTOSO\\boss", 5))
            .await
            .unwrap();

        let (before, after) = db
            .write(|tx| rollback(tx, "Domain Admins", "CONTOSO\\root", 6))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(before.providers, ["totp"]);
        assert_eq!(after.providers, ["phone-legacy"]);
        assert_eq!(after.shadow, ["totp"]);
        assert_eq!(after.ttl_s, 600, "only the provider lists go back");
        let h = db.read(|tx| history(tx, "Domain Admins")).await.unwrap();
        assert_eq!(h.len(), 3);
        assert!(h[0].rollback && h[0].actor == "CONTOSO\\root" && h[0].at == 6);
        assert!(!h[1].rollback && h[1].providers_after == ["totp"]);

        // A second rollback undoes the first.
        let (_, again) = db
            .write(|tx| rollback(tx, "Domain Admins", "admin", 7))
            .await
            .unwrap();
        assert_eq!(again.providers, ["totp"]);

        // An earlier list that no longer fits the policy is refused, and nothing changes.
        let mut off = again.clone();
        off.mfa_enabled = false;
        db.write(move |tx| replace(tx, &off, "admin", 8))
            .await
            .unwrap();
        let e = db
            .write(|tx| rollback(tx, "Domain Admins", "admin", 9))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("does not fit the role now"), "{e}");
        let now = db
            .read(|tx| get(tx, "Domain Admins"))
            .await
            .unwrap()
            .unwrap();
        assert!(now.providers == ["totp"] && !now.mfa_enabled);

        assert!(db.write(|tx| remove(tx, "Domain Admins")).await.unwrap());
        assert!(
            db.read(|tx| history(tx, "Domain Admins"))
                .await
                .unwrap()
                .is_empty()
        );
    }
}
