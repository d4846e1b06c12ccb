//! `rolegate import mim`: a MIM PAM deployment's users and roles, from CSV exports of
//! `Get-PAMUser` and `Get-PAMRole` (`| Export-Csv`), imported in one transaction.
//!
//! Every row is checked before anything is written; a bad row is reported with its line
//! number and nothing is imported. A re-run changes only what differs (idempotent). Roles that
//! had `MFAEnabled` get the legacy phone provider, so nothing changes for their users until an
//! admin adds or swaps providers.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::model::error::{Error, Result};
use crate::records::roles::{self, RoleSpec, WindowSpec};
use crate::records::users::{self, NewUser, UserChanges};
use crate::store::Tx;

mod csv;
mod diff;
mod resolve;
mod settings;

pub use csv::{Record, decode, delimiter, parse_csv, parse_with};
pub use resolve::{Files, Warning};
pub use settings::{country_code as settings_country_code, other_reading};

/// A row: its line and its fields by lower-cased header.
type Row = (usize, BTreeMap<String, String>);

/// A header line: its number and its lower-cased names.
type Header = (usize, Vec<String>);

/// A CSV file's header line and rows.
fn rows(name: &str, text: &str) -> Result<(Header, Vec<Row>)> {
    let mut records = parse_csv(name, text)?.into_iter();
    let Some(header) = records.next() else {
        return Err(Error::Invalid {
            what: name.to_string(),
            message: "the file has no header line".into(),
        });
    };
    let names: Vec<String> = header
        .fields
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    let rows = records
        .map(|r| {
            if r.fields.len() != names.len() {
                return Err(Error::Invalid {
                    what: format!("{name} line {}", r.line),
                    message: format!(
                        "{} fields where the header has {}",
                        r.fields.len(),
                        names.len()
                    ),
                });
            }
            Ok((
                r.line,
                names
                    .iter()
                    .cloned()
                    .zip(r.fields.into_iter().map(|f| f.trim().to_string()))
                    .collect(),
            ))
        })
        .collect::<Result<Vec<Row>>>()?;
    Ok(((header.line, names), rows))
}

/// A warning for each header not in `known` (lower case).
fn unknown_columns(name: &str, header: &Header, known: &[&[&str]]) -> Vec<Warning> {
    header
        .1
        .iter()
        .filter(|h| !known.iter().any(|k| k.contains(&h.as_str())))
        .map(|h| Warning {
            file: name.to_string(),
            line: header.0,
            message: format!("column `{h}` is not understood and is not imported"),
        })
        .collect()
}

fn pick<'a>(row: &'a BTreeMap<String, String>, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| row.get(*n).map(String::as_str))
        .filter(|v| !v.is_empty())
}

fn flag(v: Option<&str>) -> std::result::Result<bool, String> {
    match v.map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") | Some("0") | Some("no") => Ok(false),
        Some("true") | Some("1") | Some("yes") => Ok(true),
        Some(other) => Err(format!("`{other}` is not True or False")),
    }
}

/// A list field: entries separated by `;` (or `,` inside one field), blanks dropped.
fn list(v: Option<&str>) -> BTreeSet<String> {
    v.unwrap_or_default()
        .split([';', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// `HH:MM` from `HH:MM`, `HH:MM:SS`, `h:mm:ss AM|PM` or a date-time's time part (as
/// PowerShell writes a DateTime).
fn time_of_day(v: &str) -> Option<String> {
    let v = v.trim();
    let upper = v.to_ascii_uppercase();
    let (v, pm) = if upper.ends_with(" PM") {
        (&v[..v.len() - 3], Some(true))
    } else if upper.ends_with(" AM") {
        (&v[..v.len() - 3], Some(false))
    } else {
        (v, None)
    };
    let t = v.rsplit([' ', 'T']).next()?;
    let mut parts = t.split(':');
    let mut h: u8 = parts.next()?.trim().parse().ok()?;
    let m: u8 = parts.next()?.trim().parse().ok()?;
    match pm {
        Some(true) if h < 12 => h += 12,
        Some(false) if h == 12 => h = 0,
        _ => {}
    }
    (h < 24 && m < 60).then(|| format!("{h:02}:{m:02}"))
}

/// The columns of a `Get-PAMUser` export read for each field, first found first (lower case:
/// headers are matched in any case). docs/migration-from-mim.md lists them.
pub mod user_columns {
    /// The source (CORP) account's name.
    pub const ACCOUNT: &[&str] = &["sourceaccountname", "account"];
    /// The source account's domain.
    pub const DOMAIN: &[&str] = &["sourcedomain", "domain"];
    /// The PAM (PRIV) account's name: the stored account when no source account is given.
    pub const PAM_ACCOUNT: &[&str] = &["accountname", "privaccountname"];
    /// The display name.
    pub const DISPLAY_NAME: &[&str] = &["displayname", "sourcedisplayname", "privdisplayname"];
    /// The phone number.
    pub const PHONE: &[&str] = &[
        "sourcephonenumber",
        "phonenumber",
        "phone",
        "telephonenumber",
        "mobilephone",
    ];
    /// The e-mail address.
    pub const EMAIL: &[&str] = &["sourceemailaddress", "emailaddress", "email", "mail"];
    /// Read for nothing, and not worth a warning.
    pub const IGNORED: &[&str] = &["objectid", "sourcesid", "privsid", "privdomain"];
}

/// A `Get-PAMUser` export as read.
#[derive(Debug, Clone, Default)]
pub struct UserFile {
    /// The file's name as given.
    pub name: String,
    /// The users with their lines.
    pub users: Vec<(usize, NewUser)>,
    /// Other names of a user (its PAM account), by [`users::account_key`], to its account.
    pub aliases: BTreeMap<String, String>,
    /// What the file holds that is not imported.
    pub warnings: Vec<Warning>,
}

/// A `Get-PAMRole` export as read.
#[derive(Debug, Clone, Default)]
pub struct RoleFile {
    /// The file's name as given.
    pub name: String,
    /// The roles with their lines, candidates and approvers as written.
    pub roles: Vec<(usize, RoleSpec)>,
    /// The file's columns (lower case): a re-run compares only the fields they carry.
    pub columns: BTreeSet<String>,
    /// What the file holds that is not imported.
    pub warnings: Vec<Warning>,
}

/// The columns of a `Get-PAMRole` export that are read or knowingly left (lower case).
const ROLE_COLUMNS: &[&str] = &[
    "displayname",
    "name",
    "candidates",
    "approvers",
    "ttl",
    "mfaenabled",
    "approvalenabled",
    "availabilitywindowenabled",
    "availablefrom",
    "availableto",
    "timezone",
    "description",
    "privileges",
    "disableautoapprovalifowner",
    "objectid",
];

/// Reads a `Get-PAMUser` export (columns: [`user_columns`]): the account is
/// `SourceDomain\SourceAccountName`, or the PAM `AccountName` when the source is absent.
pub fn read_users(name: &str, text: &str) -> Result<Vec<(usize, NewUser)>> {
    read_user_file(name, text).map(|f| f.users)
}

/// Reads a `Get-PAMUser` export with the other name each user has (its PAM `AccountName`
/// beside `DOMAIN\\SourceAccountName`) and a warning for each column not understood.
pub fn read_user_file(name: &str, text: &str) -> Result<UserFile> {
    use user_columns as c;
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut seen = BTreeMap::new();
    let mut aliases: BTreeMap<String, String> = BTreeMap::new();
    let (header, rows) = rows(name, text)?;
    let warnings = unknown_columns(
        name,
        &header,
        &[
            c::ACCOUNT,
            c::DOMAIN,
            c::PAM_ACCOUNT,
            c::DISPLAY_NAME,
            c::PHONE,
            c::EMAIL,
            c::IGNORED,
        ],
    );
    for (line, row) in rows {
        let Some(account) = pick(&row, c::ACCOUNT).or_else(|| pick(&row, c::PAM_ACCOUNT)) else {
            errors.push(format!("line {line}: no SourceAccountName or AccountName"));
            continue;
        };
        let account = match pick(&row, c::DOMAIN) {
            Some(d) if !account.contains('\\') => format!("{d}\\{account}"),
            _ => account.to_string(),
        };
        if let Some(first) = seen.insert(users::account_key(&account), line) {
            errors.push(format!("line {line}: `{account}` is also on line {first}"));
            continue;
        }
        let pam = pick(&row, c::PAM_ACCOUNT).filter(|p| !users::same_account(p, &account));
        if let Some(other) =
            pam.and_then(|p| aliases.insert(users::account_key(p), account.clone()))
        {
            errors.push(format!(
                "line {line}: AccountName `{}` is also `{other}`'s",
                pam.unwrap_or_default()
            ));
            continue;
        }
        out.push((
            line,
            NewUser {
                account,
                display_name: pick(&row, c::DISPLAY_NAME).unwrap_or_default().to_string(),
                phone: pick(&row, c::PHONE).map(str::to_string),
                email: pick(&row, c::EMAIL).map(str::to_string),
                source: None,
            },
        ));
    }
    for (line, u) in &out {
        // A PAM name that is some user's own account would name two users.
        if let Some(other) = aliases.get(&users::account_key(&u.account)) {
            errors.push(format!(
                "line {line}: `{}` is this user's account and `{other}`'s AccountName",
                u.account
            ));
        }
    }
    if errors.is_empty() {
        Ok(UserFile {
            name: name.to_string(),
            users: out,
            aliases,
            warnings,
        })
    } else {
        Err(Error::Invalid {
            what: name.to_string(),
            message: errors.join("; "),
        })
    }
}

/// Whether a field holds what `Export-Csv` writes for a collection it cannot flatten: the
/// collection's type name (`System.Object[]`, `...PAMUser[]`, a `Collections.Generic` list).
fn is_type_name(v: &str) -> bool {
    !v.contains('\\')
        && !v.contains(';')
        && (v.ends_with("[]") || v.starts_with("System.Collections."))
}

/// Seconds from a TTL as `Export-Csv` writes it: a number of seconds, or a .NET TimeSpan
/// (`[-][d.]hh:mm[:ss[.fffffff]]`; a fraction of a second is dropped).
pub fn ttl_seconds(v: &str) -> Option<i64> {
    let v = v.trim();
    if !v.contains(':') {
        return v.parse().ok();
    }
    let (days, clock) = match v.split_once(':') {
        Some((head, _)) if head.contains('.') => {
            let (d, rest) = v.split_once('.')?;
            (d.parse::<i64>().ok()?, rest)
        }
        _ => (0, v),
    };
    let mut parts = clock.split(':');
    let num = |p: Option<&str>, max: i64| {
        p.and_then(|p| p.parse::<i64>().ok())
            .filter(|n| (0..max).contains(n))
    };
    let h = num(parts.next(), 24)?;
    let m = num(parts.next(), 60)?;
    let s = match parts.next() {
        None => 0,
        Some(sec) => {
            let (whole, frac) = sec.split_once('.').unwrap_or((sec, "0"));
            if frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            num(Some(whole), 60)?
        }
    };
    if parts.next().is_some() || days < 0 {
        return None;
    }
    days.checked_mul(86_400)?.checked_add(h * 3600 + m * 60 + s)
}

/// Reads a `Get-PAMRole` export: `DisplayName` (or `Name`), `Candidates` and `Approvers`
/// (accounts separated by `;`), `TTL` (seconds or a TimeSpan), `MFAEnabled`, `ApprovalEnabled`,
/// `AvailabilityWindowEnabled`, `AvailableFrom`, `AvailableTo`, and an optional `TimeZone`
/// (IANA; here `UTC` when absent — the CLI passes a zone to [`read_role_file`] instead).
/// Roles with MFA get `mfa_provider`.
pub fn read_roles(name: &str, text: &str, mfa_provider: &str) -> Result<Vec<(usize, RoleSpec)>> {
    read_role_file(name, text, mfa_provider, Some("UTC")).map(|f| f.roles)
}

/// Reads a `Get-PAMRole` export (see [`read_roles`]) with a warning for each column not
/// understood; an availability window without a `TimeZone` column is in `time_zone`, and
/// refused when there is none.
pub fn read_role_file(
    name: &str,
    text: &str,
    mfa_provider: &str,
    time_zone: Option<&str>,
) -> Result<RoleFile> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut seen = BTreeMap::new();
    let (header, rows) = rows(name, text)?;
    let warnings = unknown_columns(name, &header, &[ROLE_COLUMNS]);
    for (line, row) in rows {
        let mut problem = |m: String| errors.push(format!("line {line}: {m}"));
        let Some(role) = pick(&row, &["displayname", "name"]) else {
            problem("no DisplayName".into());
            continue;
        };
        if let Some(first) = seen.insert(role.to_ascii_lowercase(), line) {
            problem(format!("role `{role}` is also on line {first}"));
            continue;
        }
        let ttl: i64 = match pick(&row, &["ttl"]).map(ttl_seconds) {
            Some(Some(t)) if t > 0 => t,
            None => 3600,
            _ => {
                problem(
                    "TTL must be a positive number of seconds or a TimeSpan (`01:00:00`, \
                     `1.00:00:00`)"
                        .into(),
                );
                continue;
            }
        };
        let mut typed = false;
        for column in ["candidates", "approvers"] {
            if let Some(v) = pick(&row, &[column]).filter(|v| is_type_name(v)) {
                problem(format!(
                    "{column} holds `{v}`, a type name, not the users: export the role with \
                     the `Select` in docs/migration-from-mim.md"
                ));
                typed = true;
            }
        }
        if typed {
            continue;
        }
        let flags = (
            flag(pick(&row, &["mfaenabled"])),
            flag(pick(&row, &["approvalenabled"])),
            flag(pick(&row, &["availabilitywindowenabled"])),
        );
        let (mfa, approval, window) = match flags {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            (m, a, w) => {
                for (what, r) in [
                    ("MFAEnabled", m),
                    ("ApprovalEnabled", a),
                    ("AvailabilityWindowEnabled", w),
                ] {
                    if let Err(e) = r {
                        problem(format!("{what}: {e}"));
                    }
                }
                continue;
            }
        };
        let availability = if window {
            let from = pick(&row, &["availablefrom"]).and_then(time_of_day);
            let to = pick(&row, &["availableto"]).and_then(time_of_day);
            match (from, to, pick(&row, &["timezone"]).or(time_zone)) {
                (Some(_), Some(_), None) => {
                    problem(
                        "the availability window has no time zone: give `--time-zone` (the \
                         machine's zone could not be told)"
                            .into(),
                    );
                    continue;
                }
                (Some(from), Some(to), Some(zone)) => Some(WindowSpec {
                    days: vec!["mon-sun".into()],
                    from,
                    to,
                    time_zone: zone.to_string(),
                }),
                _ => {
                    problem(
                        "the availability window needs AvailableFrom and AvailableTo as HH:MM"
                            .into(),
                    );
                    continue;
                }
            }
        } else {
            None
        };
        let spec = RoleSpec {
            name: role.to_string(),
            candidates: list(pick(&row, &["candidates"])),
            approvers: list(pick(&row, &["approvers"])),
            ttl_s: ttl,
            max_ttl_s: ttl,
            availability,
            justification_required: false,
            approval_enabled: approval,
            mfa_enabled: mfa,
            providers: if mfa {
                vec![mfa_provider.to_string()]
            } else {
                Vec::new()
            },
            when_factor_down: Default::default(),
            shadow: Vec::new(),
        };
        if let Err(e) = spec.to_role() {
            problem(e.to_string());
            continue;
        }
        out.push((line, spec));
    }
    if errors.is_empty() {
        Ok(RoleFile {
            name: name.to_string(),
            roles: out,
            columns: header.1.iter().cloned().collect(),
            warnings,
        })
    } else {
        Err(Error::Invalid {
            what: name.to_string(),
            message: errors.join("; "),
        })
    }
}

/// What an import does (or, in a dry run, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Users to create.
    pub users_created: Vec<String>,
    /// Users whose fields differ, with the names of those fields (changed with `--update`).
    pub users_changed: Vec<(String, Vec<String>)>,
    /// Users already as the file has them.
    pub users_unchanged: usize,
    /// Roles to create.
    pub roles_created: Vec<String>,
    /// Roles whose fields the files carry differ, with their names (changed with `--update`).
    pub roles_changed: Vec<(String, Vec<String>)>,
    /// Roles already as the file has them.
    pub roles_unchanged: usize,
    /// What is imported otherwise than written, or not at all.
    pub warnings: Vec<Warning>,
    /// Whether the differences were (or would be) written: `--update`.
    pub update: bool,
}

/// Compares the files with the store (reads only).
pub fn plan(tx: &mut dyn Tx, files: &Files, default_cc: u16, update: bool) -> Result<Plan> {
    let mut p = prepared_plan(tx, files, default_cc)?.0;
    p.update = update;
    Ok(p)
}

/// A plan with the users and roles as they would be written.
type PlannedWrites = (Plan, Vec<(usize, NewUser)>, Vec<(usize, RoleSpec)>);

/// The plan with the users and roles as they would be written.
fn prepared_plan(tx: &mut dyn Tx, files: &Files, default_cc: u16) -> Result<PlannedWrites> {
    let (warnings, users, roles) = resolve::prepare(tx, files, default_cc)?;
    let mut p = Plan {
        warnings,
        ..Plan::default()
    };
    // The stored users the file names, in a few statements.
    let names: Vec<&str> = users.iter().map(|(_, u)| u.account.as_str()).collect();
    let stored = users::get_many(tx, &names)?;
    for (_, u) in &users {
        let phone = match &u.phone {
            Some(raw) => Some(crate::model::phone::parse(raw, default_cc)?.to_string()),
            None => None,
        };
        match stored.get(&users::account_key(&u.account)).cloned() {
            None => p.users_created.push(u.account.clone()),
            Some(existing) => {
                let mut changed = Vec::new();
                if !u.display_name.is_empty() && existing.display_name != u.display_name {
                    changed.push("display_name".to_string());
                }
                if phone.is_some() && existing.phone != phone {
                    changed.push("phone".to_string());
                }
                if u.email.is_some() && existing.email != u.email {
                    changed.push("email".to_string());
                }
                if changed.is_empty() {
                    p.users_unchanged += 1;
                } else {
                    p.users_changed.push((u.account.clone(), changed));
                }
            }
        }
    }
    let mut written = Vec::with_capacity(roles.len());
    for (line, r) in roles {
        match roles::get(tx, &r.name)? {
            None => {
                p.roles_created.push(r.name.clone());
                written.push((line, r));
            }
            Some(existing) => {
                let (merged, changed) = diff::merge_role(&existing, &r, &files.roles.columns);
                if changed.is_empty() {
                    p.roles_unchanged += 1;
                } else {
                    p.roles_changed.push((r.name.clone(), changed));
                }
                written.push((line, merged));
            }
        }
    }
    Ok((p, users, written))
}

/// Applies the files in the caller's transaction (all or nothing), raising the admin events;
/// with `strict`, any warning refuses the import before anything is written; without
/// `update`, users and roles that exist are left as they are (their differences reported).
pub fn apply(
    tx: &mut dyn Tx,
    files: &Files,
    default_cc: u16,
    (strict, update): (bool, bool),
    now_ms: i64,
) -> Result<Plan> {
    let (mut p, users, roles) = prepared_plan(tx, files, default_cc)?;
    p.update = update;
    if strict && !p.warnings.is_empty() {
        return Err(strict_refusal(&p.warnings));
    }
    let actor = "rolegate import mim";
    let at = |line: &usize, what: &str, e: Error| Error::Invalid {
        what: format!("{what} line {line}"),
        message: e.to_string(),
    };
    // New users in bulk (a few statements per 500 users, not four each), with their events
    // in one chained run; a refusal names the file's line.
    let created: std::collections::HashSet<&String> = p.users_created.iter().collect();
    let (lines, new): (Vec<usize>, Vec<_>) = users
        .iter()
        .filter(|(_, u)| created.contains(&u.account))
        .map(|(line, u)| (*line, u.clone()))
        .unzip();
    let made = users::create_many(tx, new, default_cc, now_ms)
        .map_err(|(i, e)| at(lines.get(i).unwrap_or(&0), "users", e))?;
    crate::records::events::append_many(
        tx,
        made.iter()
            .map(|u| {
                let mut e = crate::records::events::NewEvent::new(
                    crate::records::events::USER_CREATED,
                    crate::records::events::Severity::Information,
                    "admin",
                    format!("user imported by `{actor}`"),
                );
                e.account = Some(u.account.clone());
                e
            })
            .collect(),
        now_ms,
    )?;
    for (line, u) in &users {
        if created.contains(&u.account) {
            continue;
        } else if let Some((_, fields)) = p
            .users_changed
            .iter()
            .find(|(a, _)| update && *a == u.account)
        {
            let changes = UserChanges {
                display_name: fields
                    .iter()
                    .any(|f| f == "display_name")
                    .then(|| u.display_name.clone()),
                phone: fields.iter().any(|f| f == "phone").then(|| u.phone.clone()),
                email: fields.iter().any(|f| f == "email").then(|| u.email.clone()),
                enabled: None,
            };
            users::update(tx, &u.account, changes, default_cc, actor, now_ms)
                .map_err(|e| at(line, "users", e))?;
            crate::records::events::admin_change(
                tx,
                crate::records::events::USER_CHANGED,
                actor,
                Some(&u.account),
                None,
                &format!("user re-imported ({})", fields.join(", ")),
                now_ms,
            )?;
        }
    }
    for (line, r) in &roles {
        if p.roles_created.contains(&r.name) {
            roles::create(tx, r, now_ms).map_err(|e| at(line, "roles", e))?;
            crate::records::events::admin_change(
                tx,
                crate::records::events::ROLE_CREATED,
                actor,
                None,
                Some(&r.name),
                "role imported",
                now_ms,
            )?;
        } else if let Some((_, fields)) =
            p.roles_changed.iter().find(|(n, _)| update && *n == r.name)
        {
            roles::replace(tx, r, actor, now_ms).map_err(|e| at(line, "roles", e))?;
            crate::records::events::admin_change(
                tx,
                crate::records::events::ROLE_CHANGED,
                actor,
                None,
                Some(&r.name),
                &format!("role re-imported ({})", fields.join(", ")),
                now_ms,
            )?;
        }
    }
    Ok(p)
}

/// The refusal `--strict` gives: every warning, by file and line.
pub fn strict_refusal(warnings: &[Warning]) -> Error {
    Error::Invalid {
        what: "--strict".into(),
        message: format!(
            "{} warning(s), nothing imported: {}",
            warnings.len(),
            warnings
                .iter()
                .map(|w| format!("{} line {}: {}", w.file, w.line, w.message))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_csv_is_parsed_with_quotes_crlf_and_the_type_line() {
        let text = "\u{feff}#TYPE Microsoft.ResourceManagement.Automation.ObjectModel.PAMUser\r\n\"SourceAccountName\",\"SourceDomain\",\"DisplayName\",\"PhoneNumber\"\r\n\"jdoe\",\"CONTOSO\",\"Doe, \"\"Jane\"\"\",\"+1 425 555 0100\"\r\n\r\n\"bob\",\"CONTOSO\",\"Bob\",\"\"\r\n";
        let users = read_users("users.csv", text).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].0, 3, "line numbers count the #TYPE line");
        assert_eq!(users[0].1.account, "CONTOSO\\jdoe");
        assert_eq!(users[0].1.display_name, "Doe, \"Jane\"");
        assert_eq!(users[0].1.phone.as_deref(), Some("+1 425 555 0100"));
        assert_eq!(users[1].1.phone, None);
        assert_eq!(users[1].0, 5);
    }

    #[test]
    fn a_last_line_of_white_space_is_blank_like_any_other() {
        // Found by fuzzing (fuzz/mim_import): a file whose last line, without a line end,
        // held only white space (a lone CR, spaces) had it read as a record of one field,
        // then refused as `1 fields where the header has 2`.
        for end in ["\r", "  ", "\t", "\n\r"] {
            let text = format!("SourceAccountName,DisplayName\njdoe,J\n{end}");
            let records = parse_csv("u.csv", &text).unwrap();
            assert_eq!(records.len(), 2, "{end:?}");
            let users = read_users("u.csv", &text).unwrap();
            assert_eq!(users.len(), 1, "{end:?}");
        }
        // A field of white space in quotes is still a record when it is not alone.
        let records = parse_csv("u.csv", "a,b\n\" \",\"\"").unwrap();
        assert_eq!(records[1].fields, vec![" ".to_string(), String::new()]);
    }

    #[test]
    fn bad_rows_are_all_reported_with_their_lines() {
        let e = read_users(
            "u.csv",
            "SourceAccountName,DisplayName\njdoe,J\n,Nobody\nJDOE,again\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 3: no SourceAccountName")
                && e.contains("line 4: `JDOE` is also on line 2"),
            "{e}"
        );
        let e = read_users("u.csv", "a,b\n1,2,3\n").unwrap_err().to_string();
        assert!(e.contains("u.csv line 2") && e.contains("3 fields"), "{e}");
        let e = read_users("u.csv", "a\n\"open\n").unwrap_err().to_string();
        assert!(e.contains("not closed"), "{e}");
        let roles = "DisplayName,Candidates,Approvers,TTL,MFAEnabled,ApprovalEnabled,AvailabilityWindowEnabled,AvailableFrom,AvailableTo\n\
            Ops,a;b,,3600,True,False,False,,\n\
            Bad TTL,a,,-5,False,False,False,,\n\
            Window,a,,600,False,False,True,09:00,\n\
            Flag,a,,600,Maybe,False,False,,\n";
        let e = read_roles("r.csv", roles, "phone-legacy")
            .unwrap_err()
            .to_string();
        for want in [
            "line 3: TTL",
            "line 4: the availability window",
            "line 5: MFAEnabled: `maybe`",
        ] {
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn roles_map_mim_s_flags_and_mfa_roles_get_the_legacy_provider() {
        let text = "DisplayName,Candidates,Approvers,TTL,MFAEnabled,ApprovalEnabled,AvailabilityWindowEnabled,AvailableFrom,AvailableTo,TimeZone\n\
            Domain Admins,CONTOSO\\jdoe;CONTOSO\\bob,CONTOSO\\boss,7200,True,True,True,1/1/0001 8:00:00 AM,18:30:00,Europe/London\n\
            Helpdesk,CONTOSO\\amy,,1800,False,False,False,,,\n";
        let roles = read_roles("r.csv", text, "phone-legacy").unwrap();
        let (_, da) = &roles[0];
        assert!(da.mfa_enabled && da.approval_enabled);
        assert_eq!(da.providers, vec!["phone-legacy".to_string()]);
        assert_eq!(da.candidates.len(), 2);
        assert_eq!(da.ttl_s, 7200);
        let w = da.availability.as_ref().unwrap();
        assert_eq!(
            (w.from.as_str(), w.to.as_str(), w.time_zone.as_str()),
            ("08:00", "18:30", "Europe/London")
        );
        let (_, hd) = &roles[1];
        assert!(!hd.mfa_enabled && hd.providers.is_empty() && hd.availability.is_none());
    }
}

#[cfg(test)]
mod export_tests {
    use super::*;

    /// `Get-PAMUser | Export-Csv users.csv` in Windows PowerShell 5.1: the `#TYPE` line (the
    /// type name is plausible, not verified against a MIM server), every field quoted, CRLF,
    /// MIM's own column names in MIM's case.
    const PS51_USERS: &str = "#TYPE Microsoft.IdentityManagement.PamCmdlets.PAMUser\r\n\
        \"SourceDisplayName\",\"SourceDomain\",\"SourceAccountName\",\"SourcePhoneNumber\",\"SourceEmailAddress\",\"AccountName\",\"DisplayName\"\r\n\
        \"Jen\",\"CONTOSO\",\"jen\",\"+1 213 555 1212\",\"jen@contoso.test\",\"PRIV.jen\",\"PRIV Jen\"\r\n";

    #[test]
    fn mim_s_own_column_names_are_read_in_any_case() {
        let users = read_users("u.csv", PS51_USERS).unwrap();
        let (line, u) = &users[0];
        assert_eq!(*line, 3);
        assert_eq!(u.account, "CONTOSO\\jen");
        assert_eq!(u.phone.as_deref(), Some("+1 213 555 1212"));
        assert_eq!(u.email.as_deref(), Some("jen@contoso.test"));
        assert_eq!(u.display_name, "PRIV Jen");
        let lower = PS51_USERS.replace("SourcePhoneNumber", "SOURCEPHONENUMBER");
        let users = read_users("u.csv", &lower).unwrap();
        assert_eq!(users[0].1.phone.as_deref(), Some("+1 213 555 1212"));
        // Without a source account, the PAM account is the account.
        let users = read_users(
            "u.csv",
            "AccountName,SourcePhoneNumber\nPRIV.jen,12135551212\n",
        )
        .unwrap();
        assert_eq!(users[0].1.account, "PRIV.jen");
    }

    #[test]
    fn a_utf16_semicolon_export_reads_as_the_utf8_comma_one() {
        let roles = "\"DisplayName\",\"Candidates\",\"Approvers\",\"TTL\",\"MFAEnabled\",\"ApprovalEnabled\",\"AvailabilityWindowEnabled\",\"AvailableFrom\",\"AvailableTo\"\r\n\
            \"Domain Admins\",\"CONTOSO\\jen;CONTOSO\\bob\",\"\",\"01:00:00\",\"True\",\"False\",\"True\",\"01.01.0001 08:00:00\",\"01.01.0001 18:00:00\"\r\n\
            \"Helpdesk\",\"CONTOSO\\bob\",\"\",\"1.00:00:00\",\"False\",\"False\",\"False\",\"\",\"\"\r\n";
        let semicolons = roles.replace("\",\"", "\";\"");
        let mut utf16 = vec![0xFF, 0xFE];
        for u in semicolons.encode_utf16() {
            utf16.extend(u.to_le_bytes());
        }
        let text = decode("r.csv", &utf16).unwrap();
        let a = read_roles("r.csv", roles, "phone-legacy").unwrap();
        let b = read_roles("r.csv", &text, "phone-legacy").unwrap();
        assert_eq!(a, b);
        assert_eq!((a[0].1.ttl_s, a[1].1.ttl_s), (3600, 86_400));
        assert_eq!(a[0].1.candidates.len(), 2);
        let w = a[0].1.availability.as_ref().unwrap();
        assert_eq!((w.from.as_str(), w.to.as_str()), ("08:00", "18:00"));
    }

    #[test]
    fn ttl_is_seconds_or_a_timespan() {
        for (v, want) in [
            ("600", Some(600)),
            ("01:00:00", Some(3600)),
            ("00:30", Some(1800)),
            ("1.02:00:00", Some(93_600)),
            ("00:10:00.5000000", Some(600)),
            ("25:00:00", None),
            ("01:60:00", None),
            ("1:2:3:4", None),
            ("-1.00:00:00", None),
            ("00:10:00.", None),
            ("soon", None),
        ] {
            assert_eq!(ttl_seconds(v), want, "{v}");
        }
    }

    #[test]
    fn a_collection_exported_as_its_type_name_is_refused_by_line() {
        let text = "DisplayName,Candidates,Approvers,TTL\n\
            Ops,System.Object[],,600\n\
            Web,CONTOSO\\jen,Microsoft.IdentityManagement.PamCmdlets.PAMUser[],600\n";
        let e = read_roles("r.csv", text, "phone-legacy")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2: candidates holds `System.Object[]`")
                && e.contains("line 3: approvers holds"),
            "{e}"
        );
    }
}
