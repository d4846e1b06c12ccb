//! Users: the candidates and approvers rolegate knows, with the phone number phone and SMS
//! providers use. A changed phone number raises event 825, as in MIM.

use crate::model::error::{Error, Result};
use crate::records::events::{self, NewEvent, Severity};
use crate::store::{Row, Tx, Value};

/// A user as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Account name as given (`CONTOSO\jdoe`); unique without regard to case.
    pub account: String,
    /// Display name.
    pub display_name: String,
    /// Phone in E.164, with ` x<extension>` when there is one.
    pub phone: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// Where the user came from (a directory DN), when imported.
    pub source: Option<String>,
    /// Whether the user may request roles.
    pub enabled: bool,
    /// Created, Unix ms.
    pub created_at: i64,
    /// Last changed, Unix ms.
    pub updated_at: i64,
}

/// The fields of a new user; the phone is normalised on the way in.
#[derive(Debug, Clone, Default)]
pub struct NewUser {
    /// Account name.
    pub account: String,
    /// Display name (the account when empty).
    pub display_name: String,
    /// Phone as written by an admin or a directory.
    pub phone: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// Directory DN it was copied from.
    pub source: Option<String>,
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    /// New display name.
    pub display_name: Option<String>,
    /// New phone (`Some(None)` removes it).
    pub phone: Option<Option<String>>,
    /// New e-mail (`Some(None)` removes it).
    pub email: Option<Option<String>>,
    /// Enable or disable.
    pub enabled: Option<bool>,
}

/// The key accounts are compared by (see [`crate::model::identity`]): one rule everywhere.
pub use crate::model::identity::{account_key, same_account};

pub use crate::model::limits::DEFAULT_DISPLAY_NAME_CHARS;

/// What a new or changed user is checked against: the phone's default country code, the
/// display name's limit, and whether an admin allows a name that looks like another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserRules {
    /// Country code for phone numbers written without one.
    pub default_country_code: u16,
    /// The longest display name, in characters.
    pub display_name_chars: usize,
    /// Accept an account that mixes scripts or looks like an existing one (an admin's
    /// explicit choice, recorded in the user's creation event).
    pub allow_lookalike: bool,
}

impl From<u16> for UserRules {
    /// The default rules with this country code.
    fn from(default_country_code: u16) -> Self {
        Self {
            default_country_code,
            display_name_chars: DEFAULT_DISPLAY_NAME_CHARS,
            allow_lookalike: false,
        }
    }
}

/// Refuses a display name longer than the limit, or one holding characters that hide or
/// reorder text.
fn check_display_name(name: &str, max: usize) -> Result<()> {
    let n = name.chars().count();
    if n > max {
        return Err(Error::Invalid {
            what: "display_name".into(),
            message: format!(
                "a display name has at most {max} characters (`[limits] display_name_chars`), not {n}"
            ),
        });
    }
    if name
        .chars()
        .any(|c| c.is_control() || crate::model::identity::hides(c))
    {
        return Err(Error::Invalid {
            what: "display_name".into(),
            message: format!(
                "{} holds invisible or text-reordering characters",
                crate::model::identity::quoted(name)
            ),
        });
    }
    Ok(())
}

/// The existing account a new one would be confused with: the same skeleton under another
/// key. (Found by skeleton, an indexed column of its own table.)
pub fn lookalike_of(tx: &mut dyn Tx, account: &str) -> Result<Option<String>> {
    let rows = tx.query(
        "SELECT u.account, u.account_key FROM account_skeletons s JOIN users u ON u.account_key = s.account_key WHERE s.skeleton = $1",
        &[crate::model::identity::skeleton(account).into()],
    )?;
    let key = account_key(account);
    for r in &rows {
        if r.text(1)? != key {
            return Ok(Some(r.text(0)?));
        }
    }
    Ok(None)
}

fn check_email(email: &str) -> Result<()> {
    let ok = email.len() <= 254
        && email.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && d.contains('.') && !email.chars().any(char::is_whitespace)
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid {
            what: "email".into(),
            message: format!("`{email}` is not an e-mail address"),
        })
    }
}

fn normalise_phone(phone: Option<&str>, default_cc: u16) -> Result<Option<String>> {
    match phone.map(str::trim) {
        None | Some("") => Ok(None),
        Some(p) => Ok(Some(crate::model::phone::parse(p, default_cc)?.to_string())),
    }
}

/// The last four digits, for messages that must not spread whole numbers.
/// A phone number shown by its last four digits (`…0100`), or `none`.
pub fn masked(phone: Option<&str>) -> String {
    match phone {
        None => "none".into(),
        Some(p) => {
            let digits: String = p
                .split(" x")
                .next()
                .unwrap_or("")
                .chars()
                .filter(char::is_ascii_digit)
                .collect();
            let tail = &digits[digits.len().saturating_sub(4)..];
            format!("…{tail}")
        }
    }
}

const COLUMNS: &str =
    "account, display_name, phone, email, source, enabled, created_at, updated_at";

/// A user from a row of its columns, in the order `account, display_name, phone, email,
/// source, enabled, created_at, updated_at`.
pub(crate) fn from_row(r: &Row) -> Result<User> {
    Ok(User {
        account: r.text(0)?,
        display_name: r.text(1)?,
        phone: r.opt_text(2)?,
        email: r.opt_text(3)?,
        source: r.opt_text(4)?,
        enabled: r.int(5)? != 0,
        created_at: r.int(6)?,
        updated_at: r.int(7)?,
    })
}

/// A new user checked on its own (name, e-mail, display name, phone, mixed scripts), as it
/// would be stored.
fn checked(new: NewUser, rules: UserRules, now_ms: i64) -> Result<User> {
    let account = new.account.trim().to_string();
    crate::model::identity::check_name(crate::model::identity::NameKind::Account, &account)?;
    if let Some(e) = &new.email {
        check_email(e)?;
    }
    check_display_name(new.display_name.trim(), rules.display_name_chars)?;
    let phone = normalise_phone(new.phone.as_deref(), rules.default_country_code)?;
    if !rules.allow_lookalike
        && let Some(label) = crate::model::identity::mixed_script_label(&account)
    {
        return Err(Error::Invalid {
            what: "account".into(),
            message: format!(
                "{} mixes scripts in {} (a look-alike trick): check the spelling, or allow this one name with `--allow-lookalike`",
                crate::model::identity::quoted(&account),
                crate::model::identity::quoted(label)
            ),
        });
    }
    let display_name = if new.display_name.trim().is_empty() {
        account.clone()
    } else {
        new.display_name.trim().to_string()
    };
    Ok(User {
        account,
        display_name,
        phone,
        email: new.email,
        source: new.source,
        enabled: true,
        created_at: now_ms,
        updated_at: now_ms,
    })
}

/// The refusal of an account that exists (`existing`, spelled as stored) under `account`.
fn exists_already(existing: &str, account: &str) -> Error {
    Error::Conflict(format!(
        "user {} exists already{}",
        crate::model::identity::quoted(existing),
        if existing == account {
            String::new()
        } else {
            format!(
                " ({} is another spelling of it)",
                crate::model::identity::quoted(account)
            )
        }
    ))
}

/// The refusal of an account that reads like `other`'s.
fn looks_like(account: &str, other: &str) -> Error {
    Error::Conflict(format!(
        "{} looks like the existing user {}: check the spelling, or allow this one name with `--allow-lookalike`",
        crate::model::identity::quoted(account),
        crate::model::identity::quoted(other)
    ))
}

/// How many users [`create_many`] looks up or inserts per statement.
const BULK_CHUNK: usize = 500;

/// Creates many users at once (an import): each checked as [`create`] checks one — and
/// against the others of the batch —, the look-ups and inserts made a chunk of 500 at a
/// time instead of four statements per user (round trips, on PostgreSQL). All or nothing:
/// a refusal says which user (its index in `new`) and why.
pub fn create_many(
    tx: &mut dyn Tx,
    new: Vec<NewUser>,
    rules: impl Into<UserRules>,
    now_ms: i64,
) -> std::result::Result<Vec<User>, (usize, Error)> {
    use std::collections::HashMap;
    let rules = rules.into();
    let mut users = Vec::with_capacity(new.len());
    // Each key and skeleton of the batch, with the index that holds it.
    let mut keys: HashMap<String, usize> = HashMap::with_capacity(new.len());
    let mut skeletons: HashMap<String, usize> = HashMap::with_capacity(new.len());
    for (i, n) in new.into_iter().enumerate() {
        let user = checked(n, rules, now_ms).map_err(|e| (i, e))?;
        let key = account_key(&user.account);
        if let Some(&j) = keys.get(&key) {
            let first: &User = &users[j];
            return Err((
                i,
                Error::Conflict(format!(
                    "user {} is in the batch twice (also as {})",
                    crate::model::identity::quoted(&user.account),
                    crate::model::identity::quoted(&first.account)
                )),
            ));
        }
        keys.insert(key, i);
        let skeleton = crate::model::identity::skeleton(&user.account);
        if !rules.allow_lookalike
            && let Some(&j) = skeletons.get(&skeleton)
        {
            let first: &User = &users[j];
            return Err((
                i,
                Error::Conflict(format!(
                    "{} looks like {}, another new user of the batch: check the spelling, or allow this one name with `--allow-lookalike`",
                    crate::model::identity::quoted(&user.account),
                    crate::model::identity::quoted(&first.account)
                )),
            ));
        }
        skeletons.insert(skeleton, i);
        users.push(user);
    }
    // Accounts that exist already, under any spelling.
    let all_keys: Vec<(&String, &usize)> = keys.iter().collect();
    for chunk in all_keys.chunks(BULK_CHUNK) {
        let rows = tx
            .query(
                &format!(
                    "SELECT account, account_key FROM users WHERE account_key IN ({})",
                    crate::store::placeholders(chunk.len())
                ),
                &chunk
                    .iter()
                    .map(|(k, _)| (*k).clone().into())
                    .collect::<Vec<Value>>(),
            )
            .map_err(|e| (0, e))?;
        if let Some(r) = rows.first() {
            let (existing, key) = (
                r.text(0).map_err(|e| (0, e))?,
                r.text(1).map_err(|e| (0, e))?,
            );
            let i = keys.get(&key).copied().unwrap_or(0);
            return Err((i, exists_already(&existing, &users[i].account)));
        }
    }
    // Accounts that read like a stored one.
    if !rules.allow_lookalike {
        let all: Vec<(&String, &usize)> = skeletons.iter().collect();
        for chunk in all.chunks(BULK_CHUNK) {
            let rows = tx
                .query(
                    &format!(
                        "SELECT u.account, s.skeleton FROM account_skeletons s JOIN users u ON u.account_key = s.account_key WHERE s.skeleton IN ({})",
                        crate::store::placeholders(chunk.len())
                    ),
                    &chunk.iter().map(|(s, _)| (*s).clone().into()).collect::<Vec<Value>>(),
                )
                .map_err(|e| (0, e))?;
            if let Some(r) = rows.first() {
                let (other, skeleton) = (
                    r.text(0).map_err(|e| (0, e))?,
                    r.text(1).map_err(|e| (0, e))?,
                );
                let i = skeletons.get(&skeleton).copied().unwrap_or(0);
                return Err((i, looks_like(&users[i].account, &other)));
            }
        }
    }
    for (c, chunk) in users.chunks(BULK_CHUNK).enumerate() {
        let at = c * BULK_CHUNK;
        let mut params: Vec<Value> = Vec::with_capacity(chunk.len() * 9);
        let mut skeleton_params: Vec<Value> = Vec::with_capacity(chunk.len() * 2);
        for u in chunk {
            params.extend([
                u.account.clone().into(),
                u.display_name.clone().into(),
                u.phone.clone().into(),
                u.email.clone().into(),
                u.source.clone().into(),
                u.enabled.into(),
                Value::Int(now_ms),
                Value::Int(now_ms),
                account_key(&u.account).into(),
            ]);
            skeleton_params.extend([
                account_key(&u.account).into(),
                crate::model::identity::skeleton(&u.account).into(),
            ]);
        }
        tx.execute(
            &format!(
                "INSERT INTO users ({COLUMNS}, account_key) VALUES {}",
                crate::store::value_rows(chunk.len(), 9)
            ),
            &params,
        )
        .map_err(|e| (at, e))?;
        tx.execute(
            &format!(
                "INSERT INTO account_skeletons (account_key, skeleton) VALUES {}",
                crate::store::value_rows(chunk.len(), 2)
            ),
            &skeleton_params,
        )
        .map_err(|e| (at, e))?;
    }
    Ok(users)
}

/// Creates a user; an account that exists (under any spelling of the same key) is a
/// conflict, and one that mixes scripts in a label or looks like an existing account is
/// refused unless `rules` allow it.
pub fn create(
    tx: &mut dyn Tx,
    new: NewUser,
    rules: impl Into<UserRules>,
    now_ms: i64,
) -> Result<User> {
    // A batch of one: the same checks, look-ups and inserts.
    let mut made = create_many(tx, vec![new], rules, now_ms).map_err(|(_, e)| e)?;
    made.pop().ok_or_else(|| Error::Store {
        what: "creating a user".into(),
        message: "nothing was created".into(),
    })
}

/// The users with these accounts (any spelling), by account key: one statement per 500
/// accounts (an import's look-ups), not one each.
pub fn get_many(
    tx: &mut dyn Tx,
    accounts: &[&str],
) -> Result<std::collections::HashMap<String, User>> {
    let mut keys: Vec<String> = accounts.iter().map(|a| account_key(a)).collect();
    keys.sort();
    keys.dedup();
    let mut out = std::collections::HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(BULK_CHUNK) {
        let rows = tx.query(
            &format!(
                "SELECT {COLUMNS}, account_key FROM users WHERE account_key IN ({})",
                crate::store::placeholders(chunk.len())
            ),
            &chunk
                .iter()
                .map(|k| k.clone().into())
                .collect::<Vec<Value>>(),
        )?;
        for r in &rows {
            out.insert(r.text(8)?, from_row(r)?);
        }
    }
    Ok(out)
}

/// The user with this account (any case).
pub fn get(tx: &mut dyn Tx, account: &str) -> Result<Option<User>> {
    let rows = tx.query(
        &format!("SELECT {COLUMNS} FROM users WHERE account_key = $1"),
        &[account_key(account).into()],
    )?;
    rows.first().map(from_row).transpose()
}

/// All users, by account.
pub fn list(tx: &mut dyn Tx) -> Result<Vec<User>> {
    tx.query(
        &format!("SELECT {COLUMNS} FROM users ORDER BY account_key"),
        &[],
    )?
    .iter()
    .map(from_row)
    .collect()
}

/// Changes a user; a different phone number raises event 825 in the same transaction.
pub fn update(
    tx: &mut dyn Tx,
    account: &str,
    changes: UserChanges,
    rules: impl Into<UserRules>,
    actor: &str,
    now_ms: i64,
) -> Result<User> {
    let rules = rules.into();
    let mut user = get(tx, account)?.ok_or_else(|| Error::NotFound {
        what: format!("user `{account}`"),
    })?;
    let old_phone = user.phone.clone();
    if let Some(d) = changes.display_name {
        check_display_name(d.trim(), rules.display_name_chars)?;
        user.display_name = d.trim().to_string();
    }
    if let Some(p) = changes.phone {
        user.phone = normalise_phone(p.as_deref(), rules.default_country_code)?;
    }
    if let Some(e) = changes.email {
        if let Some(e) = &e {
            check_email(e)?;
        }
        user.email = e;
    }
    if let Some(en) = changes.enabled {
        user.enabled = en;
    }
    user.updated_at = now_ms;
    tx.execute(
        "UPDATE users SET display_name = $1, phone = $2, email = $3, enabled = $4, updated_at = $5 WHERE account_key = $6",
        &[
            user.display_name.clone().into(),
            user.phone.clone().into(),
            user.email.clone().into(),
            user.enabled.into(),
            Value::Int(now_ms),
            account_key(account).into(),
        ],
    )?;
    if user.phone != old_phone {
        let mut e = NewEvent::new(
            events::PHONE_CHANGED,
            Severity::Warning,
            "admin",
            format!(
                "telephone number changed from {} to {} by `{actor}`",
                masked(old_phone.as_deref()),
                masked(user.phone.as_deref())
            ),
        );
        e.account = Some(user.account.clone());
        events::append(tx, e, now_ms)?;
    }
    Ok(user)
}

/// Removes a user and their credentials; true when there was one.
pub fn remove(tx: &mut dyn Tx, account: &str) -> Result<bool> {
    let key = account_key(account);
    tx.execute(
        "DELETE FROM credentials WHERE account_key = $1",
        &[key.clone().into()],
    )?;
    tx.execute(
        "DELETE FROM account_skeletons WHERE account_key = $1",
        &[key.clone().into()],
    )?;
    Ok(tx.execute("DELETE FROM users WHERE account_key = $1", &[key.into()])? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::events::{Filter, PHONE_CHANGED};
    use crate::store::sqlite::Sqlite;

    #[tokio::test]
    async fn many_users_at_once_are_checked_as_one_at_a_time_and_all_or_nothing() {
        let (_dir, db) = db();
        let u = |a: &str| NewUser {
            account: a.into(),
            phone: Some("425 555 0100".into()),
            ..Default::default()
        };
        db.write(move |tx| {
            create(tx, u("CONTOSO\\jdoe"), 1, 1)?;
            create(tx, u("CONTOSO\\ops"), 1, 1).map(drop)
        })
        .await
        .unwrap();
        // 1,201 users: three chunks, the last one short.
        let many: Vec<NewUser> = (0..1_201)
            .map(|i| u(&format!("CONTOSO\\user{i}")))
            .collect();
        let made = db
            .write(move |tx| create_many(tx, many, 1, 2).map_err(|(_, e)| e))
            .await
            .unwrap();
        assert_eq!(made.len(), 1_201);
        assert_eq!(made[7].phone.as_deref(), Some("+14255550100"));
        let stored = db.read(list).await.unwrap();
        assert_eq!(stored.len(), 1_203);
        let one = db
            .read(|tx| get(tx, "contoso\\USER1200"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (one.account.as_str(), one.created_at),
            ("CONTOSO\\user1200", 2)
        );
        // Each refusal names the user (its index) and stores nothing of the batch.
        for (batch, index, says) in [
            (
                vec!["CONTOSO\\new1", "contoso\\JDOE"],
                1,
                "user `CONTOSO\\jdoe` exists already (`contoso\\JDOE` is another spelling of it)",
            ),
            (
                vec!["CONTOSO\\new1", "CONTOSO\\new2", "contoso\\NEW1"],
                2,
                "user `contoso\\NEW1` is in the batch twice (also as `CONTOSO\\new1`)",
            ),
            (
                vec!["CONTOSO\\new1", "CONTOSO\\jd\u{43e}e"],
                1,
                "mixes scripts",
            ),
            (
                vec!["CONTOSO\\new1", "CONTOSO\\орѕ"],
                1,
                "looks like the existing user `CONTOSO\\ops`",
            ),
            (
                vec!["CONTOSO\\sys", "CONTOSO\\ѕуѕ"],
                1,
                "looks like `CONTOSO\\sys`, another new user of the batch",
            ),
            (vec!["CONTOSO\\new1", ""], 1, "account"),
        ] {
            let users: Vec<NewUser> = batch.iter().map(|a| u(a)).collect();
            let (i, e) = db
                .write(move |tx| Ok(create_many(tx, users, 1, 3)))
                .await
                .unwrap()
                .unwrap_err();
            assert_eq!(i, index, "{batch:?}: {e}");
            assert!(e.to_string().contains(says), "{batch:?}: {e}");
        }
        assert_eq!(
            db.read(list).await.unwrap().len(),
            1_203,
            "nothing of a refused batch"
        );
    }

    fn db() -> (tempfile::TempDir, Sqlite) {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("rolegate.db"), 0).unwrap();
        (dir, db)
    }

    fn jdoe(phone: Option<&str>) -> NewUser {
        NewUser {
            account: "CONTOSO\\jdoe".into(),
            display_name: "Jane Doe".into(),
            phone: phone.map(String::from),
            email: Some("jdoe@contoso.com".into()),
            source: None,
        }
    }

    #[tokio::test]
    async fn a_user_is_created_with_a_normalised_phone_and_found_in_any_case() {
        let (_d, db) = db();
        let u = db
            .write(|tx| create(tx, jdoe(Some("(425) 555-0100 x12")), 1, 5))
            .await
            .unwrap();
        assert_eq!(u.phone.as_deref(), Some("+14255550100 x12"));
        let got = db
            .read(|tx| get(tx, "contoso\\JDOE"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, u);
        let e = db
            .write(|tx| create(tx, jdoe(None), 1, 6))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "user `CONTOSO\\jdoe` exists already");
    }

    #[tokio::test]
    async fn bad_input_is_refused_and_nothing_is_stored() {
        let (_d, db) = db();
        let e = db
            .write(|tx| create(tx, jdoe(Some("call me maybe")), 1, 5))
            .await
            .unwrap_err();
        assert!(
            e.to_string().starts_with("phone number `call me maybe`:"),
            "{e}"
        );
        let mut bad = jdoe(None);
        bad.email = Some("not-an-address".into());
        let e = db.write(move |tx| create(tx, bad, 1, 5)).await.unwrap_err();
        assert!(e.to_string().contains("is not an e-mail address"), "{e}");
        assert!(db.read(|tx| list(tx)).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_phone_change_raises_825_and_a_failed_change_keeps_the_old_number() {
        let (_d, db) = db();
        db.write(|tx| create(tx, jdoe(Some("+1 425 555 0100")), 1, 5))
            .await
            .unwrap();
        let change = |p: &'static str| UserChanges {
            phone: Some(Some(p.into())),
            ..Default::default()
        };
        let u = db
            .write(move |tx| {
                update(
                    tx,
                    "CONTOSO\\jdoe",
                    change("+1 425 555 0199"),
                    1,
                    "admin",
                    9,
                )
            })
            .await
            .unwrap();
        assert_eq!(u.phone.as_deref(), Some("+14255550199"));
        let e = db
            .write(move |tx| update(tx, "CONTOSO\\jdoe", change("555-CALL-NOW"), 1, "admin", 10))
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("phone number"), "{e}");
        // The same number again is no change.
        db.write(move |tx| {
            update(
                tx,
                "CONTOSO\\jdoe",
                change("(425) 555-0199"),
                1,
                "admin",
                11,
            )
        })
        .await
        .unwrap();
        let stored = db
            .read(|tx| get(tx, "CONTOSO\\jdoe"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.phone.as_deref(), Some("+14255550199"));
        let events = db
            .read(|tx| {
                events::list(
                    tx,
                    &Filter {
                        id: Some(PHONE_CHANGED),
                        ..Default::default()
                    },
                )
            })
            .await
            .unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].severity, "warning");
        assert_eq!(events[0].account.as_deref(), Some("CONTOSO\\jdoe"));
        assert_eq!(
            events[0].message,
            "telephone number changed from …0100 to …0199 by `admin`"
        );
    }

    #[tokio::test]
    async fn removing_and_missing_users() {
        let (_d, db) = db();
        db.write(|tx| create(tx, jdoe(None), 1, 5)).await.unwrap();
        assert!(db.write(|tx| remove(tx, "contoso\\jdoe")).await.unwrap());
        assert!(!db.write(|tx| remove(tx, "contoso\\jdoe")).await.unwrap());
        let e = db
            .write(|tx| update(tx, "nobody", UserChanges::default(), 1, "a", 1))
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "user `nobody` not found");
    }
}
