//! API tokens: bearer secrets shown once, stored as hashes, each for one account.

use crate::model::error::{Error, Result};
use crate::store::secrets::{new_token, token_hash};
use crate::store::{Tx, Value};

/// Who a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The account.
    pub account: String,
    /// Whether it may administer users, roles, tokens and read events.
    pub admin: bool,
    /// When the token stops working (Unix ms), if ever: a cache must not outlive it.
    pub expires_at: Option<i64>,
}

/// Issues a token; returns the secret (to show once).
pub fn issue(
    tx: &mut dyn Tx,
    account: &str,
    admin: bool,
    label: &str,
    now_ms: i64,
) -> Result<String> {
    if account.trim().is_empty() {
        return Err(Error::Invalid {
            what: "token".into(),
            message: "a token needs an account".into(),
        });
    }
    let (token, hash) = new_token()?;
    tx.execute(
        "INSERT INTO tokens (hash, account, account_key, admin, label, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, NULL)",
        &[
            hash.into(),
            account.trim().into(),
            crate::model::identity::account_key(account).into(),
            admin.into(),
            label.into(),
            Value::Int(now_ms),
        ],
    )?;
    Ok(token)
}

/// The caller a token belongs to, if it is valid.
pub fn verify(tx: &mut dyn Tx, token: &str, now_ms: i64) -> Result<Option<Caller>> {
    verify_hash(tx, &token_hash(token), now_ms)
}

/// [`verify`] for a token already hashed (a caller that keys its cache by the hash).
///
/// A token speaks only for a user who may act: one whose account is a disabled user, or a
/// user's token (not an admin's) whose user does not exist, is refused
/// ([`crate::model::role::Refusal::UserNotAllowed`]). An admin token whose account is no user (the
/// first admin) stays valid.
pub fn verify_hash(tx: &mut dyn Tx, hash: &str, now_ms: i64) -> Result<Option<Caller>> {
    // A create reads its token with its account instead (`service::account_and_role`).
    let sql = "SELECT t.account, t.admin, t.expires_at, u.enabled FROM tokens t LEFT JOIN users u ON u.account_key = t.account_key WHERE t.hash = $1";
    let rows = tx.query(sql, &[hash.into()])?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    let expires_at = match r.0.get(2) {
        Some(Value::Int(exp)) if *exp <= now_ms => return Ok(None),
        Some(Value::Int(exp)) => Some(*exp),
        _ => None,
    };
    let admin = r.int(1)? != 0;
    let may_act = match r.0.get(3) {
        Some(Value::Int(enabled)) => *enabled != 0,
        _ => admin,
    };
    if !may_act {
        // The holder is told why (the token is theirs); nothing is done with it.
        return Err(Error::Refused(
            crate::model::role::Refusal::UserNotAllowed {
                account: r.text(0)?,
            },
        ));
    }
    Ok(Some(Caller {
        account: r.text(0)?,
        admin,
        expires_at,
    }))
}

/// How many hex digits of a token's hash name it to admins (its public id).
pub const ID_LEN: usize = 16;

/// The public id of the token with `hash`: what `token list` shows and the access log writes.
pub fn id_of_hash(hash: &str) -> String {
    hash.chars().take(ID_LEN).collect()
}

/// A token as admins see it: an id (the start of its hash), never the secret.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct TokenView {
    /// The first [`ID_LEN`] hex digits of the token's hash.
    pub id: String,
    /// The account it speaks for.
    pub account: String,
    /// Whether it may administer.
    pub admin: bool,
    /// The admin's note.
    pub label: String,
    /// When it was issued (ms since the epoch).
    pub created_at: i64,
    /// When it stops working, if ever (ms since the epoch).
    pub expires_at: Option<i64>,
}

const VIEW_COLUMNS: &str = "hash, account, admin, label, created_at, expires_at";

fn view(r: &crate::store::Row) -> Result<(String, TokenView)> {
    let hash = r.text(0)?;
    let expires_at = match r.0.get(5) {
        Some(Value::Int(t)) => Some(*t),
        _ => None,
    };
    Ok((
        hash.clone(),
        TokenView {
            id: id_of_hash(&hash),
            account: r.text(1)?,
            admin: r.int(2)? != 0,
            label: r.text(3)?,
            created_at: r.int(4)?,
            expires_at,
        },
    ))
}

/// Every token, oldest first.
pub fn list(tx: &mut dyn Tx) -> Result<Vec<TokenView>> {
    tx.query(
        &format!("SELECT {VIEW_COLUMNS} FROM tokens ORDER BY created_at, hash"),
        &[],
    )?
    .iter()
    .map(|r| view(r).map(|(_, v)| v))
    .collect()
}

/// Revokes the token with this id: returns it and its whole hash, or `None` when no token
/// has that id.
pub fn revoke(tx: &mut dyn Tx, id: &str) -> Result<Option<(String, TokenView)>> {
    if id.len() != ID_LEN
        || !id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(Error::Invalid {
            what: "token id".into(),
            message: format!(
                "`{}` is not a token id ({ID_LEN} lower-case hex digits, as `token list` shows)",
                id.chars().take(64).collect::<String>()
            ),
        });
    }
    let rows = tx.query(
        &format!("SELECT {VIEW_COLUMNS} FROM tokens WHERE substr(hash, 1, {ID_LEN}) = $1"),
        &[id.into()],
    )?;
    let found = match rows.as_slice() {
        [] => return Ok(None),
        [one] => view(one)?,
        _ => {
            return Err(Error::Conflict(format!(
                "several tokens share the id `{id}`; nothing was revoked"
            )));
        }
    };
    tx.execute(
        "DELETE FROM tokens WHERE hash = $1",
        &[found.0.clone().into()],
    )?;
    Ok(Some(found))
}

/// Revokes every token of `account` (compared as accounts are: by their keys, see
/// [`crate::model::identity`]); returns their hashes.
pub fn revoke_account(tx: &mut dyn Tx, account: &str) -> Result<Vec<String>> {
    let key = crate::records::users::account_key(account);
    // A token without a key was issued by an instance older than schema 6 still running
    // beside upgraded ones (PostgreSQL): it is compared by its account instead.
    let mut revoked = Vec::new();
    for r in tx.query(
        "SELECT hash, account, account_key FROM tokens WHERE account_key = $1 OR account_key IS NULL",
        &[key.clone().into()],
    )? {
        let theirs = match r.opt_text(2)? {
            Some(k) => k == key,
            None => crate::records::users::same_account(&r.text(1)?, account),
        };
        if theirs {
            revoked.push(r.text(0)?);
        }
    }
    for hash in &revoked {
        tx.execute("DELETE FROM tokens WHERE hash = $1", &[hash.clone().into()])?;
    }
    Ok(revoked)
}

/// How many tokens exist (a first start has none).
pub fn count(tx: &mut dyn Tx) -> Result<i64> {
    tx.query("SELECT COUNT(*) FROM tokens", &[])?
        .first()
        .map(|r| r.int(0))
        .transpose()
        .map(|n| n.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::Sqlite;

    #[tokio::test]
    async fn a_users_tokens_are_revoked_also_when_issued_without_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("rolegate.db"), 0).unwrap();
        let revoked = db
            .write(|tx| {
                issue(tx, "CONTOSO\\jdoe", false, "laptop", 1)?;
                issue(tx, "CONTOSO\\ann", false, "laptop", 1)?;
                // As an instance older than schema 6 stores a token: no account key.
                tx.execute(
                    "INSERT INTO tokens (hash, account, admin, label, created_at, expires_at) VALUES ('old', 'Contoso\\JDoe', 0, 'phone', 1, NULL)",
                    &[],
                )?;
                revoke_account(tx, " contoso\\JDOE ")
            })
            .await
            .unwrap();
        assert_eq!(revoked.len(), 2, "{revoked:?}");
        assert!(revoked.iter().any(|h| h == "old"));
        let left = db.read(list).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].account, "CONTOSO\\ann");
    }
}
