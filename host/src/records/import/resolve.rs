//! Who the files name: a PAM user is known by its account (`DOMAIN\name`) and by its PAM
//! `AccountName`; candidates and approvers written either way resolve to the one stored
//! account. What cannot be resolved or normalised is a warning, not a silence.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{RoleFile, UserFile};
use crate::model::error::Result;
use crate::records::roles::RoleSpec;
use crate::records::users::{self, NewUser};
use crate::store::Tx;

/// Something the import reports without refusing it (unless `--strict`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    /// The file, as given.
    pub file: String,
    /// The line (the header's for a column).
    pub line: usize,
    /// What is wrong, naming the value.
    pub message: String,
}

/// Both files as read (either may be empty).
#[derive(Debug, Clone, Default)]
pub struct Files {
    /// The `Get-PAMUser` export.
    pub users: UserFile,
    /// The `Get-PAMRole` export.
    pub roles: RoleFile,
}

/// The users as they would be stored (a phone that cannot be normalised dropped, with a
/// warning), the roles with their candidates and approvers resolved, and every warning.
pub(super) type Prepared = (Vec<Warning>, Vec<(usize, NewUser)>, Vec<(usize, RoleSpec)>);

/// Resolves the files against each other and the store (reads only).
pub(super) fn prepare(tx: &mut dyn Tx, files: &Files, default_cc: u16) -> Result<Prepared> {
    let mut warnings: Vec<Warning> = files.users.warnings.clone();
    warnings.extend(files.roles.warnings.iter().cloned());
    let warn = |file: &str, line: usize, message: String| Warning {
        file: file.to_string(),
        line,
        message,
    };
    // Each file user's key to its account and whether it will have a phone.
    let mut known: BTreeMap<String, (String, bool)> = BTreeMap::new();
    let mut out_users = Vec::new();
    // The stored users the files name (a phone kept when the file has none; a candidate
    // found in the store), in a few statements rather than one each.
    let mut names: Vec<&str> = files
        .users
        .users
        .iter()
        .map(|(_, u)| u.account.as_str())
        .collect();
    for (_, r) in &files.roles.roles {
        names.extend(r.candidates.iter().map(String::as_str));
        names.extend(r.approvers.iter().map(String::as_str));
    }
    let stored = users::get_many(tx, &names)?;
    let stored_user = |name: &str| stored.get(&users::account_key(name));
    for (line, u) in &files.users.users {
        let mut u = u.clone();
        if let Some(Err(e)) = u
            .phone
            .as_deref()
            .map(|raw| crate::model::phone::parse(raw, default_cc))
        {
            warnings.push(warn(
                &files.users.name,
                *line,
                format!("`{}`: {e}; imported without a phone", u.account),
            ));
            u.phone = None;
        }
        if let Some(other) = u.phone.as_deref().and_then(|raw| {
            let read = crate::model::phone::parse(raw, default_cc).ok()?;
            super::settings::other_reading(raw, default_cc).map(|o| (read, o))
        }) {
            warnings.push(warn(
                &files.users.name,
                *line,
                format!(
                    "`{}`: `{}` may already carry country code {default_cc}: imported as \
                     written, {}; if it is {}, write it with a `+`",
                    u.account,
                    u.phone.as_deref().unwrap_or_default(),
                    other.0,
                    other.1
                ),
            ));
        }
        let stored_phone = match u.phone {
            Some(_) => false,
            None => stored_user(&u.account).is_some_and(|s| s.phone.is_some()),
        };
        let has_phone = u.phone.is_some() || stored_phone;
        known.insert(
            users::account_key(&u.account),
            (u.account.clone(), has_phone),
        );
        out_users.push((*line, u));
    }
    let mut out_roles = Vec::new();
    for (line, r) in &files.roles.roles {
        let mut r = r.clone();
        let resolve = |names: &BTreeSet<String>,
                       what: &str,
                       warnings: &mut Vec<Warning>|
         -> Result<BTreeSet<String>> {
            let mut out = BTreeSet::new();
            for name in names {
                let key = users::account_key(name);
                let found = match known.get(&key) {
                    Some(k) => Some(k.clone()),
                    None => match files.users.aliases.get(&key) {
                        Some(acc) => known.get(&users::account_key(acc)).cloned(),
                        None => stored_user(name).map(|s| (s.account.clone(), s.phone.is_some())),
                    },
                };
                match found {
                    Some((account, has_phone)) => {
                        if what == "candidate" && r.mfa_enabled && !has_phone {
                            warnings.push(warn(
                                &files.roles.name,
                                *line,
                                format!(
                                    "role `{}`: candidate `{account}` has no phone, so the \
                                     phone call cannot reach them",
                                    r.name
                                ),
                            ));
                        }
                        out.insert(account);
                    }
                    // The import's rule: a name that is no user (in the users file or
                    // the store) is left out of the role, with a warning (`--strict`
                    // refuses); a role naming a non-user is refused everywhere else.
                    None => {
                        warnings.push(warn(
                            &files.roles.name,
                            *line,
                            format!(
                                "role `{}`: {what} `{name}` matches no user: left out of the role",
                                r.name
                            ),
                        ));
                    }
                }
            }
            Ok(out)
        };
        let candidates = resolve(&r.candidates, "candidate", &mut warnings)?;
        let approvers = resolve(&r.approvers, "approver", &mut warnings)?;
        (r.candidates, r.approvers) = (candidates, approvers);
        out_roles.push((*line, r));
    }
    Ok((warnings, out_users, out_roles))
}

#[cfg(test)]
mod tests {
    use super::super::{RoleFile, apply, plan, read_role_file, read_user_file};
    use super::*;
    use crate::records::roles;
    use crate::store::sqlite::Sqlite;

    const USERS: &str = "#TYPE Microsoft.IdentityManagement.PamCmdlets.PAMUser\r\n\
        \"SourceDomain\",\"SourceAccountName\",\"AccountName\",\"SourcePhoneNumber\",\"Mood\"\r\n\
        \"CONTOSO\",\"jen\",\"PRIV.jen\",\"+1 213 555 1212\",\"calm\"\r\n\
        \"CONTOSO\",\"bob\",\"PRIV.bob\",\"\",\"\"\r\n\
        \"CONTOSO\",\"amy\",\"PRIV.amy\",\"call me\",\"\"\r\n";
    const ROLES: &str = "DisplayName,Candidates,Approvers,TTL,MFAEnabled\r\n\
        Domain Admins,PRIV.jen;contoso\\BOB;CONTOSO\\ghost,PRIV.amy,01:00:00,True\r\n";

    fn files() -> Files {
        Files {
            users: read_user_file("users.csv", USERS).unwrap(),
            roles: read_role_file("roles.csv", ROLES, "phone-legacy", Some("UTC")).unwrap(),
        }
    }

    #[tokio::test]
    async fn candidates_resolve_by_either_name_and_the_rest_is_warned_by_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("rolegate.db"), 0).unwrap();
        let p = db.read(|tx| plan(tx, &files(), 1, false)).await.unwrap();
        let said: Vec<String> = p
            .warnings
            .iter()
            .map(|w| format!("{}:{} {}", w.file, w.line, w.message))
            .collect();
        for want in [
            "users.csv:2 column `mood` is not understood",
            "users.csv:5 `CONTOSO\\amy`: phone number `call me`",
            "roles.csv:2 role `Domain Admins`: candidate `CONTOSO\\bob` has no phone",
            "roles.csv:2 role `Domain Admins`: candidate `CONTOSO\\ghost` matches no user",
        ] {
            assert!(
                said.iter().any(|s| s.starts_with(want)),
                "{want}: {said:#?}"
            );
        }
        assert_eq!(said.len(), 4, "{said:#?}");
        // --strict: refused in the transaction, nothing written.
        let e = db
            .write(|tx| apply(tx, &files(), 1, (true, false), 5))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("4 warning(s), nothing imported") && e.contains("roles.csv line 2"),
            "{e}"
        );
        assert!(db.read(|tx| users::list(tx)).await.unwrap().is_empty());
        // Without it: one account per user, the PAM names mapped to it.
        db.write(|tx| apply(tx, &files(), 1, (false, false), 5))
            .await
            .unwrap();
        let role = db
            .read(|tx| roles::get(tx, "Domain Admins"))
            .await
            .unwrap()
            .unwrap();
        let names = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>();
        assert_eq!(
            names(&role.candidates),
            ["CONTOSO\\bob", "CONTOSO\\jen"],
            "a name that matches no user is left out of the role"
        );
        assert_eq!(names(&role.approvers), ["CONTOSO\\amy"]);
        let stored = db.read(|tx| users::list(tx)).await.unwrap();
        assert_eq!(stored.len(), 3);
        assert!(stored.iter().all(|u| u.account.starts_with("CONTOSO\\")));
        // A re-run finds what it stored: the bad phone is still reported, nothing else new.
        let p = db.read(|tx| plan(tx, &files(), 1, false)).await.unwrap();
        assert_eq!((p.users_unchanged, p.roles_unchanged), (3, 1), "{p:?}");
    }

    #[test]
    fn a_pam_name_that_is_two_users_is_refused() {
        let e = read_user_file(
            "u.csv",
            "SourceDomain,SourceAccountName,AccountName\nC,jen,PRIV.x\nC,bob,priv.X\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 3: AccountName `priv.X` is also `C\\jen`'s"),
            "{e}"
        );
        let e = read_user_file(
            "u.csv",
            "SourceDomain,SourceAccountName,AccountName\nC,jen,C\\bob\nC,bob,\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("line 3: `C\\bob` is this user's account and `C\\jen`'s"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn numbers_take_the_given_country_code_and_ambiguous_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("rolegate.db"), 0).unwrap();
        let files = Files {
            users: read_user_file(
                "u.csv",
                "SourceDomain,SourceAccountName,SourcePhoneNumber\nC,jen,020 7946 0011\nC,bob,447700900123\n",
            )
            .unwrap(),
            roles: RoleFile::default(),
        };
        let p = db.write(move |tx| {
            apply(tx, &files, 44, (false, false), 5)?;
            users::list(tx)
        });
        let stored = p.await.unwrap();
        let phone = |a: &str| {
            stored
                .iter()
                .find(|u| u.account == a)
                .and_then(|u| u.phone.clone())
        };
        assert_eq!(phone("C\\jen").as_deref(), Some("+442079460011"));
        assert_eq!(phone("C\\bob").as_deref(), Some("+44447700900123"));
        let files = Files {
            users: read_user_file(
                "u.csv",
                "SourceDomain,SourceAccountName,SourcePhoneNumber\nC,bob,447700900123\n",
            )
            .unwrap(),
            roles: RoleFile::default(),
        };
        let p = db
            .read(move |tx| plan(tx, &files, 44, false))
            .await
            .unwrap();
        assert_eq!(p.warnings.len(), 1, "{p:?}");
        assert!(
            p.warnings[0].message.contains("`447700900123` may already carry country code 44: imported as written, +44447700900123; if it is +447700900123"),
            "{p:?}"
        );
    }

    #[test]
    fn a_window_without_a_zone_is_refused_not_taken_as_utc() {
        let text = "DisplayName,Candidates,TTL,AvailabilityWindowEnabled,AvailableFrom,AvailableTo\nOps,C\\jen,600,True,08:00,18:00\n";
        let e = read_role_file("r.csv", text, "p", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2: the availability window has no time zone"),
            "{e}"
        );
        let f = read_role_file("r.csv", text, "p", Some("Europe/London")).unwrap();
        let w = f.roles[0].1.availability.clone().unwrap();
        assert_eq!(w.time_zone, "Europe/London");
    }
}
