//! The schema, as numbered migrations both backends run.
//!
//! A migration is applied once, inside the writer's transaction, and recorded in
//! `schema_migrations`; a database newer than this binary is refused rather than touched.
//! `{blob}` stands for the backend's byte type; a statement that begins with `{sqlite}` runs
//! only on SQLite (its physical layout: rowid aliases, `WITHOUT ROWID` tables).

use crate::model::error::{Error, Result};
use crate::store::{Tx, Value};

/// Every migration, in order. Never edit one that has shipped: add the next.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "users, roles, requests, credentials, events, tokens, lockouts",
        r#"
CREATE TABLE users (
    account       TEXT PRIMARY KEY,
    account_key   TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    phone         TEXT,
    email         TEXT,
    source        TEXT,
    enabled       BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE TABLE roles (
    name          TEXT PRIMARY KEY,
    policy        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE TABLE requests (
    id            TEXT PRIMARY KEY,
    account_key   TEXT NOT NULL,
    role          TEXT NOT NULL,
    state         TEXT NOT NULL,
    justification TEXT NOT NULL,
    ttl_s         BIGINT NOT NULL,
    provider      TEXT,
    challenge     {blob},
    prompt        TEXT,
    ask_expires_at BIGINT,
    version       BIGINT NOT NULL,
    wrong_answers BIGINT NOT NULL,
    needs_approval BIGINT NOT NULL DEFAULT 0,
    decided_by    TEXT,
    reason        TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    starts_at     BIGINT,
    expires_at    BIGINT
);
CREATE INDEX requests_by_state ON requests (state, expires_at);
CREATE INDEX requests_by_user ON requests (account_key, created_at);
CREATE TABLE credentials (
    account_key   TEXT NOT NULL,
    provider      TEXT NOT NULL,
    id            TEXT NOT NULL,
    label         TEXT NOT NULL,
    sealed        {blob} NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (account_key, provider, id)
);
CREATE TABLE events (
    seq           BIGINT PRIMARY KEY,
    id            BIGINT NOT NULL,
    severity      TEXT NOT NULL,
    source        TEXT NOT NULL,
    at            BIGINT NOT NULL,
    account       TEXT,
    role          TEXT,
    request       TEXT,
    provider      TEXT,
    message       TEXT NOT NULL,
    prev_hash     TEXT NOT NULL,
    hash          TEXT NOT NULL
);
CREATE INDEX events_by_id ON events (id, at);
CREATE TABLE event_head (
    one           BIGINT PRIMARY KEY,
    seq           BIGINT NOT NULL,
    hash          TEXT NOT NULL
);
INSERT INTO event_head (one, seq, hash) VALUES (1, 0, '');
CREATE TABLE tokens (
    hash          TEXT PRIMARY KEY,
    account       TEXT NOT NULL,
    admin         BIGINT NOT NULL,
    label         TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT
);
CREATE TABLE lockouts (
    account_key   TEXT NOT NULL,
    provider      TEXT NOT NULL,
    failures      BIGINT NOT NULL,
    locked_until  BIGINT,
    PRIMARY KEY (account_key, provider)
);
"#,
    ),
    (
        2,
        "meta: the sealing key's check value",
        r#"
CREATE TABLE meta (
    name          TEXT PRIMARY KEY,
    value         {blob} NOT NULL
);
"#,
    ),
    (
        3,
        "roles: a revision before the policy, so a cached role is checked without reading it",
        r#"
CREATE TABLE roles_v3 (
    name          TEXT PRIMARY KEY,
    revision      BIGINT NOT NULL,
    policy        TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
INSERT INTO roles_v3 (name, revision, policy, created_at, updated_at)
    SELECT name, updated_at, policy, created_at, updated_at FROM roles;
DROP TABLE roles;
ALTER TABLE roles_v3 RENAME TO roles;
"#,
    ),
    (
        4,
        "SQLite layout: users, credentials, lockouts and tokens clustered by their keys, events by seq",
        r#"
{sqlite} CREATE TABLE users_v4 (
    account       TEXT NOT NULL UNIQUE,
    account_key   TEXT NOT NULL PRIMARY KEY,
    display_name  TEXT NOT NULL,
    phone         TEXT,
    email         TEXT,
    source        TEXT,
    enabled       BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
) WITHOUT ROWID;
{sqlite} INSERT INTO users_v4 (account, account_key, display_name, phone, email, source, enabled, created_at, updated_at)
    SELECT account, account_key, display_name, phone, email, source, enabled, created_at, updated_at FROM users;
{sqlite} DROP TABLE users;
{sqlite} ALTER TABLE users_v4 RENAME TO users;
{sqlite} CREATE TABLE credentials_v4 (
    account_key   TEXT NOT NULL,
    provider      TEXT NOT NULL,
    id            TEXT NOT NULL,
    label         TEXT NOT NULL,
    sealed        BLOB NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (account_key, provider, id)
) WITHOUT ROWID;
{sqlite} INSERT INTO credentials_v4 (account_key, provider, id, label, sealed, created_at, updated_at)
    SELECT account_key, provider, id, label, sealed, created_at, updated_at FROM credentials;
{sqlite} DROP TABLE credentials;
{sqlite} ALTER TABLE credentials_v4 RENAME TO credentials;
{sqlite} CREATE TABLE lockouts_v4 (
    account_key   TEXT NOT NULL,
    provider      TEXT NOT NULL,
    failures      BIGINT NOT NULL,
    locked_until  BIGINT,
    PRIMARY KEY (account_key, provider)
) WITHOUT ROWID;
{sqlite} INSERT INTO lockouts_v4 (account_key, provider, failures, locked_until)
    SELECT account_key, provider, failures, locked_until FROM lockouts;
{sqlite} DROP TABLE lockouts;
{sqlite} ALTER TABLE lockouts_v4 RENAME TO lockouts;
{sqlite} CREATE TABLE tokens_v4 (
    hash          TEXT NOT NULL PRIMARY KEY,
    account       TEXT NOT NULL,
    admin         BIGINT NOT NULL,
    label         TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT
) WITHOUT ROWID;
{sqlite} INSERT INTO tokens_v4 (hash, account, admin, label, created_at, expires_at)
    SELECT hash, account, admin, label, created_at, expires_at FROM tokens;
{sqlite} DROP TABLE tokens;
{sqlite} ALTER TABLE tokens_v4 RENAME TO tokens;
{sqlite} CREATE TABLE events_v4 (
    seq           INTEGER PRIMARY KEY,
    id            BIGINT NOT NULL,
    severity      TEXT NOT NULL,
    source        TEXT NOT NULL,
    at            BIGINT NOT NULL,
    account       TEXT,
    role          TEXT,
    request       TEXT,
    provider      TEXT,
    message       TEXT NOT NULL,
    prev_hash     TEXT NOT NULL,
    hash          TEXT NOT NULL
);
{sqlite} INSERT INTO events_v4 (seq, id, severity, source, at, account, role, request, provider, message, prev_hash, hash)
    SELECT seq, id, severity, source, at, account, role, request, provider, message, prev_hash, hash FROM events;
{sqlite} DROP TABLE events;
{sqlite} ALTER TABLE events_v4 RENAME TO events;
{sqlite} CREATE INDEX events_by_id ON events (id, at)
"#,
    ),
    (
        5,
        "events_by_id in sequence order: the newest events of one id without sorting them all",
        r#"
DROP INDEX events_by_id;
CREATE INDEX events_by_id ON events (id, seq)
"#,
    ),
    (
        6,
        "tokens: the account's key, so that a user's tokens are found without reading them all",
        r#"
ALTER TABLE tokens ADD COLUMN account_key TEXT;
CREATE INDEX tokens_by_account ON tokens (account_key)
"#,
    ),
    (
        7,
        "one identity rule: account keys are NFKC case folds; users' confusable skeletons (a table of their own: the users' rows every request reads stay as narrow); events' account keys where they differ from the account",
        r#"
CREATE TABLE account_skeletons (
    account_key   TEXT NOT NULL PRIMARY KEY,
    skeleton      TEXT NOT NULL
);
CREATE INDEX account_skeletons_by_skeleton ON account_skeletons (skeleton);
ALTER TABLE events ADD COLUMN account_key TEXT
"#,
    ),
    (
        8,
        "migration role by role: shadow challenges beside the requests, and each role's provider lists before each change (for rollback)",
        r#"
CREATE TABLE shadow_challenges (
    request_id    TEXT NOT NULL PRIMARY KEY,
    account_key   TEXT NOT NULL,
    role          TEXT NOT NULL,
    provider      TEXT NOT NULL,
    prompt        TEXT NOT NULL,
    challenge     {blob} NOT NULL,
    expires_at    BIGINT NOT NULL,
    wrong_answers BIGINT NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE INDEX shadow_challenges_by_expiry ON shadow_challenges (expires_at);
CREATE TABLE role_history (
    role          TEXT NOT NULL,
    at            BIGINT NOT NULL,
    seq           BIGINT NOT NULL,
    actor         TEXT NOT NULL,
    providers_before TEXT NOT NULL,
    shadow_before TEXT NOT NULL,
    providers_after TEXT NOT NULL,
    shadow_after  TEXT NOT NULL,
    rollback      BIGINT NOT NULL,
    PRIMARY KEY (role, seq)
)
"#,
    ),
    (
        9,
        "credentials an admin must look at: a mark (why) and when it was set; a marked credential is no longer offered to its provider",
        r#"
ALTER TABLE credentials ADD COLUMN flag TEXT;
ALTER TABLE credentials ADD COLUMN flagged_at BIGINT
"#,
    ),
    (
        10,
        "requests: the account as its user spells it (shown; the key stays for look-ups), and an index of the live ones (one per user and role)",
        r#"
ALTER TABLE requests ADD COLUMN account TEXT;
UPDATE requests SET account = (SELECT users.account FROM users WHERE users.account_key = requests.account_key);
CREATE INDEX requests_live ON requests (account_key, role) WHERE state IN ('pending_mfa', 'pending_approval', 'scheduled', 'active')
"#,
    ),
    (
        11,
        "PostgreSQL: the event chain's append and the locking of accounts as functions of the server, so that instances write for different accounts at once and chain a batch's events as it commits (SQLite: nothing)",
        "",
    ),
];

/// The version after whose statements PostgreSQL gets [`APPEND_EVENTS`] and [`LOCK_ACCOUNTS`].
const APPEND_FUNCTION: i64 = 11;

/// The function that chains and inserts a batch's events when the batch commits, with the
/// head's row lock held only for that: each event's hash covers the previous hash, `[`, its
/// number, `,`, and the bytes the writer sent (`tails`: the rest of its JSON array, as
/// `records::events` hashes it). Returns the new head's number.
pub(crate) const APPEND_EVENTS: &str = r#"
CREATE OR REPLACE FUNCTION rolegate_append_events(
    ids BIGINT[], severities TEXT[], sources TEXT[], ats BIGINT[], accounts TEXT[],
    roles TEXT[], requests TEXT[], providers TEXT[], messages TEXT[], account_keys TEXT[],
    tails BYTEA[]
) RETURNS BIGINT LANGUAGE plpgsql AS $append$
DECLARE
    s BIGINT;
    h TEXT;
    n INT := coalesce(array_length(ids, 1), 0);
    prevs TEXT[] := '{}';
    hashes TEXT[] := '{}';
BEGIN
    SELECT seq, hash INTO s, h FROM event_head WHERE one = 1 FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'the event chain has no head row';
    END IF;
    FOR i IN 1 .. n LOOP
        prevs[i] := h;
        h := encode(sha256(convert_to(h || '[' || (s + i) || ',', 'UTF8') || tails[i]), 'hex');
        hashes[i] := h;
    END LOOP;
    INSERT INTO events (seq, id, severity, source, at, account, role, request, provider,
                        message, prev_hash, hash, account_key)
        SELECT s + e.i, e.id, e.severity, e.source, e.at, e.account, e.role, e.request,
               e.provider, e.message, e.prev_hash, e.hash, e.account_key
        FROM unnest(ids, severities, sources, ats, accounts, roles, requests, providers,
                    messages, prevs, hashes, account_keys)
             WITH ORDINALITY AS e(id, severity, source, at, account, role, request, provider,
                                  message, prev_hash, hash, account_key, i);
    UPDATE event_head SET seq = s + n, hash = h WHERE one = 1;
    RETURN s + n;
END
$append$
"#;

/// The application name of the connections of releases before schema 11 (later ones add the
/// schema they were made for: see `store::postgres`).
const OLDER_APPLICATION: &str = "rolegate";

/// Refuses schema 11 while an instance of an older release is connected: its batches lock
/// the event chain's head only, and would not wait for this release's locks of accounts
/// (two live requests of one user, batches waiting on each other until PostgreSQL ends one).
fn refuse_older_instances(tx: &mut dyn Tx) -> Result<()> {
    // An instance stopped a moment ago may still be listed while its backends exit: looked
    // at again for up to 2 s (the activity view is a snapshot per transaction, cleared first).
    let mut looks = 0;
    let (n, from) = loop {
        tx.execute("SELECT pg_stat_clear_snapshot()", &[])?;
        let rows = tx.query(
            "SELECT count(*), coalesce(string_agg(DISTINCT coalesce(host(client_addr), 'the local socket'), ', '), '') FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1 AND pid <> pg_backend_pid()",
            &[OLDER_APPLICATION.into()],
        )?;
        let (n, from) = match rows.first() {
            Some(r) => (r.int(0)?, r.text(1)?),
            None => (0, String::new()),
        };
        looks += 1;
        if n == 0 {
            return Ok(());
        }
        if looks == 20 {
            break (n, from);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    Err(Error::Store {
        what: "migrating the database to schema 11".into(),
        message: format!(
            "{n} connection(s) of an older rolegate are open (from {from}): stop every instance of the older release, then start this one — from schema 11 instances write for different accounts at once, and an older one would not wait for them"
        ),
    })
}

/// The function that locks a batch's accounts for the rest of its transaction, in the order
/// given (the writer sorts them, so that two instances never wait for each other's).
pub(crate) const LOCK_ACCOUNTS: &str = r#"
CREATE OR REPLACE FUNCTION rolegate_lock_accounts(class INT, keys INT[])
RETURNS VOID LANGUAGE plpgsql AS $lock$
DECLARE
    k INT;
BEGIN
    FOREACH k IN ARRAY keys LOOP
        PERFORM pg_advisory_xact_lock(class, k);
    END LOOP;
END
$lock$
"#;

/// The version after whose statements every account key is computed again under the one
/// identity rule, and the columns it adds are filled (in Rust: see [`rekey_accounts`]).
const IDENTITY_RULE: i64 = 7;

/// The version after whose statements the tokens get their account keys (computed in Rust:
/// see [`fill_token_keys`]).
const TOKEN_KEYS: i64 = 6;

/// The newest schema version this binary knows.
pub fn latest() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// Applies the migrations the database lacks; returns how many ran.
pub fn migrate(tx: &mut dyn Tx, now_ms: i64) -> Result<usize> {
    tx.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        &[],
    )?;
    let rows = tx.query(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        &[],
    )?;
    let current = rows.first().map(|r| r.int(0)).transpose()?.unwrap_or(0);
    if current > latest() {
        return Err(Error::Store {
            what: "opening the database".into(),
            message: format!(
                "its schema is version {current}, newer than this rolegate knows ({}); run the newer rolegate",
                latest()
            ),
        });
    }
    let blob = if tx.backend() == "postgres" {
        "BYTEA"
    } else {
        "BLOB"
    };
    let mut ran = 0;
    for (version, description, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        if *version == APPEND_FUNCTION && tx.backend() == "postgres" {
            refuse_older_instances(tx)?;
        }
        for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let statement = match statement.strip_prefix("{sqlite}") {
                Some(_) if tx.backend() != "sqlite" => continue,
                Some(s) => s,
                None => statement,
            };
            tx.execute(&statement.replace("{blob}", blob), &[])?;
        }
        if *version == TOKEN_KEYS {
            fill_token_keys(tx)?;
        }
        if *version == IDENTITY_RULE {
            rekey_accounts(tx)?;
        }
        if *version == APPEND_FUNCTION && tx.backend() == "postgres" {
            tx.execute(APPEND_EVENTS, &[])?;
            tx.execute(LOCK_ACCOUNTS, &[])?;
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, description, applied_at) VALUES ($1, $2, $3)",
            &[
                Value::Int(*version),
                Value::from(*description),
                Value::Int(now_ms),
            ],
        )?;
        ran += 1;
    }
    Ok(ran)
}

/// Schema 7's backfill: every account key becomes the account's NFKC case fold (it was its
/// Unicode lower case), users get their skeletons and events their account keys (where
/// they differ from the account). Two users
/// whose names the new rule makes one account stop the migration (nothing changes), naming
/// both, for an admin to remove or rename one first.
fn rekey_accounts(tx: &mut dyn Tx) -> Result<()> {
    use crate::model::identity::{account_key, skeleton};
    use std::collections::HashMap;
    // Users: their spelling gives the key; two spellings of one key cannot both stay.
    let users = tx.query("SELECT account, account_key FROM users", &[])?;
    let mut by_key: HashMap<String, String> = HashMap::new();
    let mut moved: Vec<(String, String)> = Vec::new();
    for r in &users {
        let (account, old) = (r.text(0)?, r.text(1)?);
        let key = account_key(&account);
        if let Some(other) = by_key.insert(key.clone(), account.clone()) {
            return Err(Error::Store {
                what: "upgrading the database to schema 7 (one identity rule)".into(),
                message: format!(
                    "users `{other}` and `{account}` are one account under Unicode's NFKC case folding; remove or rename one with the previous rolegate, then start this one again (nothing was changed)"
                ),
            });
        }
        tx.execute(
            "INSERT INTO account_skeletons (account_key, skeleton) VALUES ($1, $2)",
            &[key.clone().into(), skeleton(&account).into()],
        )?;
        if key != old {
            moved.push((old, key));
        }
    }
    // In two steps, so that no key is ever held by two rows (a new key may be another
    // row's old one).
    for (i, (old, _)) in moved.iter().enumerate() {
        tx.execute(
            "UPDATE users SET account_key = $1 WHERE account_key = $2",
            &[format!("\u{1}rekey{i}").into(), old.clone().into()],
        )?;
    }
    for (i, (_, key)) in moved.iter().enumerate() {
        tx.execute(
            "UPDATE users SET account_key = $1 WHERE account_key = $2",
            &[key.clone().into(), format!("\u{1}rekey{i}").into()],
        )?;
    }
    // Rows that know an account only by its old key: the fold of a lower case is the fold.
    for table in ["credentials", "lockouts", "requests"] {
        let keys = tx.query(&format!("SELECT DISTINCT account_key FROM {table}"), &[])?;
        let changed: Vec<(String, String)> = keys
            .iter()
            .filter_map(|r| r.text(0).ok())
            .map(|old| (account_key(&old), old))
            .filter(|(new, old)| new != old)
            .collect();
        for (i, (_, old)) in changed.iter().enumerate() {
            tx.execute(
                &format!("UPDATE {table} SET account_key = $1 WHERE account_key = $2"),
                &[format!("\u{1}rekey{i}").into(), old.clone().into()],
            )?;
        }
        for (i, (new, _)) in changed.iter().enumerate() {
            tx.execute(
                &format!("UPDATE {table} SET account_key = $1 WHERE account_key = $2"),
                &[new.clone().into(), format!("\u{1}rekey{i}").into()],
            )?;
        }
    }
    // Tokens keep their account's spelling.
    for r in tx.query("SELECT DISTINCT account FROM tokens", &[])? {
        let account = r.text(0)?;
        tx.execute(
            "UPDATE tokens SET account_key = $1 WHERE account = $2",
            &[account_key(&account).into(), account.into()],
        )?;
    }
    // Events: by sequence number, a batch at a time (their primary key; a log may be long).
    let mut after = 0i64;
    loop {
        let rows = tx.query(
            "SELECT seq, account FROM events WHERE seq > $1 ORDER BY seq LIMIT 5000",
            &[Value::Int(after)],
        )?;
        let Some(last) = rows.last() else { break };
        after = last.int(0)?;
        for r in &rows {
            // Only where it differs (see `events::append`).
            if let Ok(Some(account)) = r.opt_text(1)
                && account_key(&account) != account
            {
                tx.execute(
                    "UPDATE events SET account_key = $1 WHERE seq = $2",
                    &[account_key(&account).into(), Value::Int(r.int(0)?)],
                )?;
            }
        }
    }
    Ok(())
}

/// Schema 6's backfill: every token without one gets its account's key. In Rust, as the key
/// is not what SQL's `lower` computes alike on both backends.
fn fill_token_keys(tx: &mut dyn Tx) -> Result<()> {
    for r in tx.query(
        "SELECT hash, account FROM tokens WHERE account_key IS NULL",
        &[],
    )? {
        tx.execute(
            "UPDATE tokens SET account_key = $1 WHERE hash = $2",
            &[
                crate::model::identity::account_key(&r.text(1)?).into(),
                r.text(0)?.into(),
            ],
        )?;
    }
    Ok(())
}
