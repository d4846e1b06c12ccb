//! API tokens: bearer secrets shown once, stored as hashes, each for one account.

use crate::error::{Error, Result};
use crate::secrets::{new_token, token_hash};
use crate::store::{Tx, Value};

/// Who a token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The account.
    pub account: String,
    /// Whether it may administer users, roles, tokens and read events.
    pub admin: bool,
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
        "INSERT INTO tokens (hash, account, admin, label, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, NULL)",
        &[hash.into(), account.trim().into(), admin.into(), label.into(), Value::Int(now_ms)],
    )?;
    Ok(token)
}

/// The caller a token belongs to, if it is valid.
pub fn verify(tx: &mut dyn Tx, token: &str, now_ms: i64) -> Result<Option<Caller>> {
    verify_hash(tx, &token_hash(token), now_ms)
}

/// [`verify`] for a token already hashed (a caller that keys its cache by the hash).
pub fn verify_hash(tx: &mut dyn Tx, hash: &str, now_ms: i64) -> Result<Option<Caller>> {
    let rows = tx.query(
        "SELECT account, admin, expires_at FROM tokens WHERE hash = $1",
        &[hash.into()],
    )?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    if let Some(Value::Int(exp)) = r.0.get(2)
        && *exp <= now_ms
    {
        return Ok(None);
    }
    Ok(Some(Caller {
        account: r.text(0)?,
        admin: r.int(1)? != 0,
    }))
}

/// How many tokens exist (a first start has none).
pub fn count(tx: &mut dyn Tx) -> Result<i64> {
    tx.query("SELECT COUNT(*) FROM tokens", &[])?
        .first()
        .map(|r| r.int(0))
        .transpose()
        .map(|n| n.unwrap_or(0))
}
