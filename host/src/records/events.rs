//! The audit log: numbered events, hash-chained so that an edited or deleted row is detected.
//!
//! MIM PAM's event ids keep their meaning (101, 103, 825); the others are rolegate's own and
//! never change meaning once shipped (see docs/events.md).

use sha2::{Digest as _, Sha256};

use crate::model::error::{Error, Result};
use crate::records::anchor::{Anchors, Checkpoint};
use crate::store::{Row, Tx, Value};

/// MIM 101 (Error): the user did not complete MFA during activation.
pub const MFA_NOT_COMPLETED: i64 = 101;
/// MIM 103 (Information): the user completed MFA during activation.
pub const MFA_COMPLETED: i64 = 103;
/// MIM 825 (Warning): a user's telephone number changed.
pub const PHONE_CHANGED: i64 = 825;
/// A request was created.
pub const REQUEST_CREATED: i64 = 200;
/// An approver approved a request.
pub const REQUEST_APPROVED: i64 = 201;
/// An approver rejected a request (or approval timed out).
pub const REQUEST_REJECTED: i64 = 202;
/// A request became active: the user holds the role.
pub const REQUEST_ACTIVATED: i64 = 203;
/// An activation ran its time.
pub const REQUEST_EXPIRED: i64 = 204;
/// An activation or request was closed before its time.
pub const REQUEST_CLOSED: i64 = 205;
/// A new request's provider failed to start its challenge, and the role's rule
/// (`when_factor_down = "fallback"`) tried the next provider the user can use.
pub const MFA_FELL_BACK: i64 = 206;
/// A shadow factor (a provider the role tries without relying on it) was completed after the
/// real factor; it decided nothing.
pub const SHADOW_COMPLETED: i64 = 207;
/// A shadow factor was not completed (wrong answers, not answered in time, the provider
/// failed, or the user could not use it); it decided nothing.
pub const SHADOW_NOT_COMPLETED: i64 = 208;
/// A user was locked out of a provider after repeated failures.
pub const LOCKED_OUT: i64 = 300;
/// An admin lifted a lockout.
pub const UNLOCKED: i64 = 301;
/// A user enrolled in a provider (a credential was stored).
pub const ENROLLED: i64 = 310;
/// An admin removed a user's credential (a lost phone or key).
pub const CREDENTIAL_REMOVED: i64 = 311;
/// A credential answered as only a copy could (a signature counter that went backwards): the
/// host set it aside for an admin.
pub const CREDENTIAL_FLAGGED: i64 = 312;
/// A provider plugin was loaded (library, hash, isolation).
pub const PROVIDER_LOADED: i64 = 400;
/// A provider plugin was refused at load time; the host did not start.
pub const PROVIDER_REFUSED: i64 = 401;
/// A provider's worker process crashed or was killed past its deadline.
pub const PROVIDER_CRASHED: i64 = 402;
/// An admin sent a test message through a provider (`rolegate provider test`), or tried to.
pub const PROVIDER_TESTED: i64 = 410;

/// An admin created a user.
pub const USER_CREATED: i64 = 500;
/// An admin changed a user (the fields are named, not their values).
pub const USER_CHANGED: i64 = 501;
/// An admin removed a user and their credentials.
pub const USER_REMOVED: i64 = 502;
/// An admin created a role.
pub const ROLE_CREATED: i64 = 510;
/// An admin changed a role's policy (the changed settings are named).
pub const ROLE_CHANGED: i64 = 511;
/// An admin removed a role.
pub const ROLE_REMOVED: i64 = 512;
/// An admin rolled a role's providers back to their previous list (`rolegate role rollback`).
pub const ROLE_ROLLED_BACK: i64 = 513;
/// An admin issued an API token.
pub const TOKEN_ISSUED: i64 = 520;
/// An admin revoked an API token.
pub const TOKEN_REVOKED: i64 = 521;

/// At start, the chain's end failed its anchor check (newest events deleted, an anchored
/// event rewritten, or a checkpoint whose MAC fails).
pub const ANCHOR_MISMATCH: i64 = 600;

/// Appends an admin change: what `actor` did, to which user or role.
pub fn admin_change(
    tx: &mut dyn Tx,
    id: i64,
    actor: &str,
    account: Option<&str>,
    role: Option<&str>,
    what: &str,
    at_ms: i64,
) -> Result<()> {
    let mut e = NewEvent::new(
        id,
        Severity::Information,
        "admin",
        format!("{what} by `{actor}`"),
    );
    e.account = account.map(str::to_string);
    e.role = role.map(str::to_string);
    append(tx, e, at_ms)
}

/// How serious an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Normal operation.
    Information,
    /// Needs an admin's eye.
    Warning,
    /// Something failed.
    Error,
}

impl Severity {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Information => "information",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// An event to append.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewEvent {
    /// The event id (see the table in docs/events.md).
    pub id: i64,
    /// Its severity name.
    pub severity: &'static str,
    /// What raised it (`activation`, `monitoring`, `admin`, `plugins`).
    pub source: &'static str,
    /// The user, when there is one.
    pub account: Option<String>,
    /// The role, when there is one.
    pub role: Option<String>,
    /// The request, when there is one.
    pub request: Option<String>,
    /// The provider, when there is one.
    pub provider: Option<String>,
    /// What happened, for an admin (never a secret).
    pub message: String,
}

impl NewEvent {
    /// An event with an id, severity, source and message; the rest is set by field.
    pub fn new(
        id: i64,
        severity: Severity,
        source: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            id,
            severity: severity.as_str(),
            source,
            message: message.into(),
            ..Default::default()
        }
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// The event id.
    pub id: i64,
    /// Severity name.
    pub severity: String,
    /// What raised it.
    pub source: String,
    /// When, in Unix milliseconds.
    pub at: i64,
    /// The user.
    pub account: Option<String>,
    /// The role.
    pub role: Option<String>,
    /// The request.
    pub request: Option<String>,
    /// The provider.
    pub provider: Option<String>,
    /// The message.
    pub message: String,
    /// The previous event's hash.
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

fn chain_hash(prev: &str, e: &Event) -> String {
    let tail = canonical_tail(
        e.id,
        &e.severity,
        &e.source,
        e.at,
        [&e.account, &e.role, &e.request, &e.provider],
        &e.message,
    );
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(format!("[{},", e.seq).as_bytes());
    h.update(&tail);
    hex::encode(h.finalize())
}

/// The bytes an event's hash covers after its sequence number: a JSON array is an
/// unambiguous encoding of the fields (lengths and nulls included), and the whole is
/// `[seq,` followed by these — the same bytes as a `json!` array of all the fields. Apart so
/// that PostgreSQL can chain events whose numbers are only known when their batch commits.
fn canonical_tail(
    id: i64,
    severity: &str,
    source: &str,
    at: i64,
    [account, role, request, provider]: [&Option<String>; 4],
    message: &str,
) -> Vec<u8> {
    // Serialized as a tuple: the same bytes as a `json!` array, without building one.
    let mut tail = serde_json::to_vec(&(
        id, severity, source, at, account, role, request, provider, message,
    ))
    .unwrap_or_default();
    // `[` starts the array; the sequence number and its comma stand in its place.
    tail.remove(0);
    tail
}

const COLUMNS: &str =
    "seq, id, severity, source, at, account, role, request, provider, message, prev_hash, hash";

/// The names of [`COLUMNS`], for a malformed row's description.
const NAMES: [&str; 12] = [
    "seq",
    "id",
    "severity",
    "source",
    "at",
    "account",
    "role",
    "request",
    "provider",
    "message",
    "prev_hash",
    "hash",
];

/// An event row whose columns do not hold what the chain wrote (edited outside rolegate:
/// SQLite keeps whatever type a statement stores).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Malformed {
    /// Its sequence number, when that column can be read.
    seq: Option<i64>,
    /// Which column, and what it holds.
    what: String,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.seq {
            Some(seq) => write!(f, "row {seq} is malformed: {}", self.what),
            None => write!(f, "a row is malformed: {}", self.what),
        }
    }
}

/// What a column holds, for a message (text shortened; bytes only counted).
fn describe(v: Option<&Value>) -> String {
    match v {
        None => "nothing (the column is missing)".into(),
        Some(Value::Null) => "NULL".into(),
        Some(Value::Int(i)) => format!("the integer {i}"),
        Some(Value::Text(t)) => {
            let short: String = t.chars().take(40).collect();
            let more = if short.len() < t.len() { "…" } else { "" };
            format!("the text {short:?}{more}")
        }
        Some(Value::Blob(b)) => format!("{} bytes of binary data", b.len()),
    }
}

fn read_event(r: &Row) -> std::result::Result<Event, Malformed> {
    let seq = match r.0.first() {
        Some(Value::Int(s)) => Some(*s),
        _ => None,
    };
    let bad = |i: usize, want: &str| Malformed {
        seq,
        what: format!(
            "`{}` holds {}, not {want}",
            NAMES.get(i).copied().unwrap_or("?"),
            describe(r.0.get(i))
        ),
    };
    let int = |i: usize| match r.0.get(i) {
        Some(Value::Int(v)) => Ok(*v),
        _ => Err(bad(i, "an integer")),
    };
    let text = |i: usize| match r.0.get(i) {
        Some(Value::Text(v)) => Ok(v.clone()),
        _ => Err(bad(i, "text")),
    };
    let opt_text = |i: usize| match r.0.get(i) {
        Some(Value::Null) => Ok(None),
        Some(Value::Text(v)) => Ok(Some(v.clone())),
        _ => Err(bad(i, "text or NULL")),
    };
    Ok(Event {
        seq: int(0)?,
        id: int(1)?,
        severity: text(2)?,
        source: text(3)?,
        at: int(4)?,
        account: opt_text(5)?,
        role: opt_text(6)?,
        request: opt_text(7)?,
        provider: opt_text(8)?,
        message: text(9)?,
        prev_hash: text(10)?,
        hash: text(11)?,
    })
}

/// An event from its row; a malformed row is an error naming its sequence number.
fn from_row(r: &Row) -> Result<Event> {
    read_event(r).map_err(|m| Error::Malformed {
        what: "reading the event log".into(),
        message: format!("{m}; `rolegate events verify` checks the whole log"),
    })
}

/// Appends an event inside the caller's transaction, extending the chain.
pub fn append(tx: &mut dyn Tx, e: NewEvent, at_ms: i64) -> Result<()> {
    append_many(tx, vec![e], at_ms).map(drop)
}

/// Bounded: the chain keeps what it holds for ever (fields that feed a message have their own
/// limits; this catches whatever slips past them).
fn bounded(message: String) -> String {
    if message.len() > crate::model::limits::EVENT_MESSAGE_CHARS {
        crate::model::limits::cut(&message, crate::model::limits::EVENT_MESSAGE_CHARS)
    } else {
        message
    }
}

/// How many events [`append_many`] inserts per statement.
const EVENTS_PER_INSERT: usize = 200;

/// Appends events in order, chained as [`append`] chains one: the head read once, the rows
/// inserted up to 200 per statement, the head stored once — an import's thousands of events
/// in a few round trips rather than three each.
///
/// Returns the events as chained, or none when the writer chains them as its batch commits
/// ([`Tx::unchained_events`]: their numbers and hashes are not known before).
pub fn append_many(tx: &mut dyn Tx, new: Vec<NewEvent>, at_ms: i64) -> Result<Vec<Event>> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    if let Some(unchained) = tx.unchained_events() {
        for e in new {
            let message = bounded(e.message);
            let tail = canonical_tail(
                e.id,
                e.severity,
                e.source,
                at_ms,
                [&e.account, &e.role, &e.request, &e.provider],
                &message,
            );
            crate::model::metrics::appended(e.id, e.provider.as_deref());
            let key = account_key_if_other(e.account.as_deref());
            unchained.push(vec![
                Value::Int(e.id),
                e.severity.into(),
                e.source.into(),
                Value::Int(at_ms),
                e.account.into(),
                e.role.into(),
                e.request.into(),
                e.provider.into(),
                message.into(),
                key.into(),
                Value::Blob(tail),
            ]);
        }
        return Ok(Vec::new());
    }
    let cached = tx.event_head().and_then(|h| h.head.clone());
    let (prev_seq, prev_hash) = match cached {
        Some(head) => head,
        None => {
            let sql = if tx.backend() == "postgres" {
                "SELECT seq, hash FROM event_head WHERE one = 1 FOR UPDATE"
            } else {
                "SELECT seq, hash FROM event_head WHERE one = 1"
            };
            let head = tx.query(sql, &[])?;
            let head = head.first().ok_or_else(|| Error::Store {
                what: "appending an event".into(),
                message: "the event chain has no head row".into(),
            })?;
            (head.int(0)?, head.text(1)?)
        }
    };
    let (mut seq, mut hash) = (prev_seq, prev_hash);
    let mut out = Vec::with_capacity(new.len());
    for e in new {
        let mut event = Event {
            seq: seq + 1,
            id: e.id,
            severity: e.severity.to_string(),
            source: e.source.to_string(),
            at: at_ms,
            account: e.account,
            role: e.role,
            request: e.request,
            provider: e.provider,
            message: bounded(e.message),
            prev_hash: hash,
            hash: String::new(),
        };
        event.hash = chain_hash(&event.prev_hash, &event);
        (seq, hash) = (event.seq, event.hash.clone());
        out.push(event);
    }
    let rows: Vec<Vec<Value>> = out.iter().map(event_params).collect();
    match tx.held_events() {
        // The writer inserts its batch's events together, before it commits.
        Some(held) => held.extend(rows),
        None => insert_rows(tx, &rows)?,
    }
    for event in &out {
        crate::model::metrics::appended(event.id, event.provider.as_deref());
    }
    match tx.event_head() {
        // The writer stores the head once, before its batch commits.
        Some(h) => {
            h.head = Some((seq, hash));
            h.dirty = true;
        }
        None => {
            store_head(tx, seq, &hash)?;
        }
    }
    Ok(out)
}

/// Inserts event rows (as [`event_params`] makes them), up to 200 per statement.
pub(crate) fn insert_rows(tx: &mut dyn Tx, rows: &[Vec<Value>]) -> Result<()> {
    for chunk in rows.chunks(EVENTS_PER_INSERT) {
        let (sql, params) = match chunk {
            [one] => (INSERT_EVENT.to_string(), one.clone()),
            _ => (
                format!(
                    "{INSERT_EVENT_COLUMNS} VALUES {}",
                    crate::store::value_rows(chunk.len(), 13)
                ),
                chunk.concat(),
            ),
        };
        tx.execute(&sql, &params)?;
    }
    Ok(())
}

/// An event's row as [`INSERT_EVENT`] takes it.
fn event_params(event: &Event) -> Vec<Value> {
    vec![
        Value::Int(event.seq),
        Value::Int(event.id),
        event.severity.clone().into(),
        event.source.clone().into(),
        Value::Int(event.at),
        event.account.clone().into(),
        event.role.clone().into(),
        event.request.clone().into(),
        event.provider.clone().into(),
        event.message.clone().into(),
        event.prev_hash.clone().into(),
        event.hash.clone().into(),
        account_key_if_other(event.account.as_deref()).into(),
    ]
}

/// The event's account key where it differs from the account (outside the hash: it is
/// derived from the account) lets a filter find a user's events under any spelling. The
/// events of requests name the account by its key already, and store no second copy.
const INSERT_EVENT: &str = "INSERT INTO events (seq, id, severity, source, at, account, role, request, provider, message, prev_hash, hash, account_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

use crate::store::INSERT_EVENT_COLUMNS;

/// The key of an event's account, when it is not the account as written.
fn account_key_if_other(account: Option<&str>) -> Option<String> {
    let account = account?;
    // Lower-case ASCII with no white space around is its own key (a request's events).
    if account.is_ascii()
        && !account.bytes().any(|b| b.is_ascii_uppercase())
        && account.trim().len() == account.len()
    {
        return None;
    }
    let key = crate::model::identity::account_key(account);
    (key != account).then_some(key)
}

pub use crate::store::store_event_head as store_head;

/// Which events to list.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this event id.
    pub id: Option<i64>,
    /// Only this user.
    pub account: Option<String>,
    /// Only this role.
    pub role: Option<String>,
    /// Only at or after this time (Unix ms).
    pub since_ms: Option<i64>,
    /// Only before this time (Unix ms).
    pub until_ms: Option<i64>,
    /// Only this provider's.
    pub provider: Option<String>,
    /// Only those before this sequence number (the next page, newest first).
    pub before_seq: Option<i64>,
    /// At most this many, newest first.
    pub limit: Option<i64>,
}

/// Lists events, newest first. A malformed row (a column holding another type, written
/// outside rolegate) fails the listing with an error naming the row's sequence number.
pub fn list(tx: &mut dyn Tx, f: &Filter) -> Result<Vec<Event>> {
    let (sql, params) = list_query(f);
    tx.query(&sql, &params)?.iter().map(from_row).collect()
}

/// The query [`list`] runs for a filter, and its parameters.
fn list_query(f: &Filter) -> (String, Vec<Value>) {
    let mut sql = format!("SELECT {COLUMNS} FROM events WHERE 1 = 1");
    let mut params = Vec::new();
    // Each clause names its parameter `?`, once or more.
    let mut add = |clause: &str, v: Value, params: &mut Vec<Value>| {
        params.push(v);
        sql.push_str(" AND ");
        sql.push_str(&clause.replace('?', &format!("${}", params.len())));
    };
    if let Some(id) = f.id {
        add("id = ?", Value::Int(id), &mut params);
    }
    if let Some(a) = &f.account {
        // The key where it was stored, else the account is its own key.
        add(
            "(account_key = ? OR (account_key IS NULL AND account = ?))",
            crate::model::identity::account_key(a).into(),
            &mut params,
        );
    }
    if let Some(r) = &f.role {
        add("role = ?", r.clone().into(), &mut params);
    }
    if let Some(t) = f.since_ms {
        add("at >= ?", Value::Int(t), &mut params);
    }
    if let Some(t) = f.until_ms {
        add("at < ?", Value::Int(t), &mut params);
    }
    if let Some(p) = &f.provider {
        add("provider = ?", p.clone().into(), &mut params);
    }
    if let Some(s) = f.before_seq {
        add("seq < ?", Value::Int(s), &mut params);
    }
    let limit = f.limit.unwrap_or(1000).clamp(1, 100_000);
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT {limit}"));
    (sql, params)
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// Every event is intact; this many were checked.
    Intact(i64),
    /// The chain breaks at this sequence number, for this reason.
    Broken {
        /// The first event at fault.
        seq: i64,
        /// What is wrong.
        reason: String,
    },
}

/// What [`verify_anchored`] found: the verdict, and how far the anchors reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The chain's verdict, its anchors included.
    pub verification: Verification,
    /// The newest valid checkpoint's sequence number; `None` when none was found.
    pub anchored_seq: Option<i64>,
    /// When that checkpoint was signed (Unix ms).
    pub anchored_at_ms: Option<i64>,
}

/// Walks the whole chain: recomputes every hash, checks the links, the numbering and the head.
/// A malformed row is reported as a break at its sequence number, not as an error.
pub fn verify(tx: &mut dyn Tx) -> Result<Verification> {
    Ok(verify_anchored(tx, &Anchors::default())?.verification)
}

/// Like [`verify`], and checks the chain against `anchors` (their MACs checked when read):
/// every event a checkpoint names must carry the anchored hash, and the chain must reach the
/// newest checkpoint — else the newest events were deleted, whatever the head row says. A
/// checkpoint whose MAC fails is reported too, after the chain's own faults.
pub fn verify_anchored(tx: &mut dyn Tx, anchors: &Anchors) -> Result<Report> {
    let newest = anchors.newest();
    let report = |verification| Report {
        verification,
        anchored_seq: newest.map(|c| c.seq),
        anchored_at_ms: newest.map(|c| c.at_ms),
    };
    let broken = |seq, reason| report(Verification::Broken { seq, reason });
    // The checkpoints the walk meets, by sequence number.
    let mut pins: Vec<&Checkpoint> = anchors.valid().iter().filter(|c| c.seq > 0).collect();
    pins.sort_by_key(|c| c.seq);
    let mut pins = pins.into_iter().peekable();
    let mut expected_seq = 1;
    let mut prev = String::new();
    loop {
        let rows = tx.query(
            &format!("SELECT {COLUMNS} FROM events WHERE seq >= $1 ORDER BY seq LIMIT 1000"),
            &[Value::Int(expected_seq)],
        )?;
        if rows.is_empty() {
            break;
        }
        for r in &rows {
            let e = match read_event(r) {
                Ok(e) => e,
                Err(m) => {
                    let seq = m.seq.unwrap_or(expected_seq);
                    let m = Malformed {
                        seq: Some(seq),
                        ..m
                    };
                    return Ok(broken(seq, m.to_string()));
                }
            };
            if e.seq != expected_seq {
                return Ok(broken(
                    expected_seq,
                    format!("event {expected_seq} is missing (deleted?)"),
                ));
            }
            if e.prev_hash != prev {
                return Ok(broken(
                    e.seq,
                    "its link to the previous event does not match".into(),
                ));
            }
            if chain_hash(&prev, &e) != e.hash {
                return Ok(broken(
                    e.seq,
                    "its content does not match its hash (edited?)".into(),
                ));
            }
            // The numbering has no gap from 1, so every checkpoint up to here is this event's.
            while let Some(c) = pins.next_if(|c| c.seq <= e.seq) {
                if c.hash != e.hash {
                    return Ok(broken(
                        e.seq,
                        format!(
                            "event {} is not the event anchored at {}: its hash differs (the chain was rewritten up to here)",
                            e.seq,
                            c.at()
                        ),
                    ));
                }
            }
            prev = e.hash;
            expected_seq += 1;
        }
    }
    let last = expected_seq - 1;
    if let Some(c) = newest
        && c.seq > last
    {
        return Ok(broken(
            last + 1,
            format!(
                "the chain ends at event {last} but event {} was anchored at {} (the newest events were deleted)",
                c.seq,
                c.at()
            ),
        ));
    }
    let head = tx.query("SELECT seq, hash FROM event_head WHERE one = 1", &[])?;
    if let Some(h) = head.first() {
        let (seq, hash) = match (h.int(0), h.text(1)) {
            (Ok(seq), Ok(hash)) => (seq, hash),
            _ => {
                return Ok(broken(
                    expected_seq,
                    format!(
                        "the head row is malformed: `seq` holds {}, `hash` holds {}",
                        describe(h.0.first()),
                        describe(h.0.get(1))
                    ),
                ));
            }
        };
        if seq != last || hash != prev {
            return Ok(broken(
                expected_seq,
                format!(
                    "the chain ends at event {last} but {seq} were written (the newest were deleted?)"
                ),
            ));
        }
    }
    if let Some(r) = anchors.refused().first() {
        return Ok(broken(r.seq, r.to_string()));
    }
    Ok(report(Verification::Intact(last)))
}

/// An event as one JSON object (the API's and the JSON-lines sink's form).
pub fn to_json(e: &Event) -> serde_json::Value {
    serde_json::json!({
        "seq": e.seq, "id": e.id, "severity": e.severity, "source": e.source, "at": e.at,
        "account": e.account, "role": e.role, "request": e.request, "provider": e.provider,
        "message": e.message, "prev_hash": e.prev_hash, "hash": e.hash,
    })
}

/// Events after `seq`, oldest first, at most `limit` (for exporters that follow the log).
pub fn after(tx: &mut dyn Tx, seq: i64, limit: i64) -> Result<Vec<Event>> {
    tx.query(
        &format!("SELECT {COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT $2"),
        &[Value::Int(seq), Value::Int(limit.clamp(1, 10_000))],
    )?
    .iter()
    .map(from_row)
    .collect()
}

/// Appends new events to a JSON-lines file for a SIEM, following the log.
///
/// The last exported sequence number is kept beside the file (`<file>.seq`), so a restart
/// resumes where it stopped. Delivery is at least once: a crash between writing a line and
/// recording its number repeats that line; `seq` and `hash` identify duplicates.
pub struct JsonLinesSink {
    path: std::path::PathBuf,
    seq_path: std::path::PathBuf,
    last: i64,
}

impl JsonLinesSink {
    /// Opens the sink, reading where it stopped.
    pub fn open(path: &std::path::Path) -> Result<Self> {
        let seq_path = path.with_extension("jsonl.seq");
        let last = match std::fs::read_to_string(&seq_path) {
            Ok(s) => s.trim().parse().map_err(|_| Error::Config {
                path: seq_path.clone(),
                message: "holds no sequence number; delete it to export from the start".into(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => {
                return Err(Error::Io {
                    what: format!("reading {}", seq_path.display()),
                    source,
                });
            }
        };
        Ok(Self {
            path: path.to_path_buf(),
            seq_path,
            last,
        })
    }

    /// The last exported sequence number.
    pub fn last(&self) -> i64 {
        self.last
    }

    /// Writes `events` (which must follow `last`) and records the new position.
    pub fn export(&mut self, events: &[Event]) -> Result<usize> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let fresh: Vec<&Event> = events.iter().filter(|e| e.seq > self.last).collect();
        let Some(newest) = fresh.last().map(|e| e.seq) else {
            return Ok(0);
        };
        let io = |what: &str, p: &std::path::Path, source| Error::Io {
            what: format!("{what} {}", p.display()),
            source,
        };
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|e| io("opening", &self.path, e))?;
        let mut buf = String::new();
        for e in &fresh {
            buf.push_str(&to_json(e).to_string());
            buf.push('\n');
        }
        f.write_all(buf.as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(|e| io("writing", &self.path, e))?;
        let tmp = self.seq_path.with_extension("seq.tmp");
        std::fs::write(&tmp, format!("{newest}\n"))
            .and_then(|()| std::fs::rename(&tmp, &self.seq_path))
            .map_err(|e| io("recording the position in", &self.seq_path, e))?;
        self.last = newest;
        Ok(fresh.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::Sqlite;

    #[tokio::test]
    async fn many_events_at_once_chain_exactly_as_one_at_a_time() {
        let events = || -> Vec<NewEvent> {
            (0..450)
                .map(|i| {
                    let mut e = NewEvent::new(
                        USER_CREATED,
                        Severity::Information,
                        "admin",
                        format!("user imported #{i}"),
                    );
                    e.account = Some(format!("CONTOSO\\User{i}"));
                    e
                })
                .collect()
        };
        let dir = tempfile::tempdir().unwrap();
        let one = Sqlite::open(&dir.path().join("one.db"), 0).unwrap();
        let many = Sqlite::open(&dir.path().join("many.db"), 0).unwrap();
        for db in [&one, &many] {
            db.write(|tx| {
                append(
                    tx,
                    NewEvent::new(1, Severity::Information, "test", "first"),
                    5,
                )
                .map(drop)
            })
            .await
            .unwrap();
        }
        one.write(move |tx| {
            for e in events() {
                append(tx, e, 7)?;
            }
            Ok(())
        })
        .await
        .unwrap();
        let appended = many
            .write(move |tx| append_many(tx, events(), 7))
            .await
            .unwrap();
        assert_eq!(appended.len(), 450);
        let everything = |tx: &mut dyn Tx| {
            list(
                tx,
                &Filter {
                    limit: Some(1_000),
                    ..Default::default()
                },
            )
        };
        let a = one.read(everything).await.unwrap();
        let b = many.read(everything).await.unwrap();
        assert_eq!(a.len(), 451);
        assert_eq!(a, b, "the same rows, seq and hashes");
        assert!(matches!(
            many.read(verify).await.unwrap(),
            Verification::Intact(451)
        ));
        // By a user's other spelling, too (the account key column).
        let found = many
            .read(|tx| {
                list(
                    tx,
                    &Filter {
                        account: Some("contoso\\USER449".into()),
                        ..Default::default()
                    },
                )
            })
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
    }

    #[test]
    fn the_chain_hash_keeps_its_encoding() {
        // The encoding of the first release (a `json!` array): changing it would make every
        // stored chain fail verification.
        let e = Event {
            seq: 7,
            id: 825,
            severity: "warning".into(),
            source: "admin".into(),
            at: 1_764_150_000_000,
            account: Some("CONTOSO\\jdoe".into()),
            role: None,
            request: Some("q\"1\n".into()),
            provider: None,
            message: "téléphone ✓ changed".into(),
            prev_hash: "ab".into(),
            hash: String::new(),
        };
        let old = serde_json::json!([
            e.seq, e.id, e.severity, e.source, e.at, e.account, e.role, e.request, e.provider,
            e.message
        ]);
        let mut h = Sha256::new();
        h.update(b"ab");
        h.update(old.to_string().as_bytes());
        assert_eq!(chain_hash("ab", &e), hex::encode(h.finalize()));
    }

    async fn db_with_events(n: i64) -> (tempfile::TempDir, Sqlite) {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("rolegate.db"), 0).unwrap();
        for i in 0..n {
            db.write(move |tx| {
                let mut e = NewEvent::new(
                    if i % 2 == 0 {
                        MFA_COMPLETED
                    } else {
                        MFA_NOT_COMPLETED
                    },
                    Severity::Information,
                    "activation",
                    format!("event {i}"),
                );
                e.account = Some(if i % 3 == 0 { "jdoe" } else { "ann" }.into());
                append(tx, e, 1000 + i)
            })
            .await
            .unwrap();
        }
        (dir, db)
    }

    #[tokio::test]
    async fn the_json_lines_sink_exports_each_event_once_and_resumes() {
        let (dir, db) = db_with_events(3).await;
        let path = dir.path().join("events.jsonl");
        let mut sink = JsonLinesSink::open(&path).unwrap();
        let batch = db.read(|tx| after(tx, 0, 100)).await.unwrap();
        assert_eq!(sink.export(&batch).unwrap(), 3);
        assert_eq!(sink.export(&batch).unwrap(), 0, "nothing twice");
        for i in 3..5 {
            db.write(move |tx| {
                append(
                    tx,
                    NewEvent::new(
                        MFA_COMPLETED,
                        Severity::Information,
                        "activation",
                        format!("event {i}"),
                    ),
                    2000,
                )
            })
            .await
            .unwrap();
        }
        // A new sink (a restart) resumes after event 3.
        let mut sink = JsonLinesSink::open(&path).unwrap();
        assert_eq!(sink.last(), 3);
        let last = sink.last();
        let batch = db.read(move |tx| after(tx, last, 100)).await.unwrap();
        assert_eq!(sink.export(&batch).unwrap(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        let seqs: Vec<i64> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["id"], MFA_COMPLETED);
        assert_eq!(first["hash"].as_str().unwrap().len(), 64);
    }

    #[tokio::test]
    async fn an_intact_chain_verifies_and_filters_work() {
        let (_d, db) = db_with_events(10).await;
        assert_eq!(db.read(verify).await.unwrap(), Verification::Intact(10));
        let f = Filter {
            id: Some(MFA_COMPLETED),
            account: Some("jdoe".into()),
            ..Default::default()
        };
        let got = db.read(move |tx| list(tx, &f)).await.unwrap();
        let seqs: Vec<i64> = got.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [7, 1]); // i = 6 and 0: even and divisible by 3, newest first
        let f = Filter {
            since_ms: Some(1005),
            limit: Some(2),
            ..Default::default()
        };
        let got = db.read(move |tx| list(tx, &f)).await.unwrap();
        assert_eq!(got.iter().map(|e| e.seq).collect::<Vec<_>>(), [10, 9]);
    }

    #[tokio::test]
    async fn the_newest_events_of_one_id_are_read_in_order_not_sorted() {
        // `events --id N` must stay quick on a chain of millions: the index is walked from
        // the newest entry down, and the limit ends the walk (no sort of every match).
        let (_d, db) = db_with_events(10).await;
        let (sql, params) = list_query(&Filter {
            id: Some(MFA_COMPLETED),
            since_ms: Some(0),
            limit: Some(10),
            ..Default::default()
        });
        let plan = db
            .read(move |tx| tx.query(&format!("EXPLAIN QUERY PLAN {sql}"), &params))
            .await
            .unwrap();
        let plan: Vec<String> = plan.iter().map(|r| r.text(3).unwrap()).collect();
        assert!(plan.iter().any(|p| p.contains("events_by_id")), "{plan:?}");
        assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{plan:?}");
        let f = Filter {
            id: Some(MFA_COMPLETED),
            limit: Some(3),
            ..Default::default()
        };
        let got = db.read(move |tx| list(tx, &f)).await.unwrap();
        // Events 1..=10, the odd ones MFA_COMPLETED: its newest three, newest first.
        let seqs: Vec<i64> = got.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [9, 7, 5]);
        assert!(got.iter().all(|e| e.id == MFA_COMPLETED));
    }

    #[tokio::test]
    async fn an_edited_row_is_detected() {
        let (_d, db) = db_with_events(5).await;
        db.write(|tx| {
            tx.execute(
                "UPDATE events SET message = 'nothing happened' WHERE seq = 3",
                &[],
            )
        })
        .await
        .unwrap();
        let v = db.read(verify).await.unwrap();
        assert_eq!(
            v,
            Verification::Broken {
                seq: 3,
                reason: "its content does not match its hash (edited?)".into()
            }
        );
    }

    #[tokio::test]
    async fn a_deleted_row_is_detected_in_the_middle_and_at_the_end() {
        let (_d, db) = db_with_events(5).await;
        db.write(|tx| tx.execute("DELETE FROM events WHERE seq = 2", &[]))
            .await
            .unwrap();
        let v = db.read(verify).await.unwrap();
        assert!(matches!(v, Verification::Broken { seq: 2, .. }), "{v:?}");

        let (_d, db) = db_with_events(5).await;
        db.write(|tx| tx.execute("DELETE FROM events WHERE seq = 5", &[]))
            .await
            .unwrap();
        let v = db.read(verify).await.unwrap();
        match v {
            Verification::Broken { seq: 5, reason } => {
                assert!(reason.contains("newest were deleted"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    /// An anchor file with a fresh key in `dir`.
    fn anchor_file(dir: &std::path::Path) -> crate::records::anchor::AnchorFile {
        let key =
            crate::store::secrets::SealingKey::load_or_create(&dir.join("rolegate.key")).unwrap();
        crate::records::anchor::AnchorFile::new(
            dir.join("rolegate.anchors"),
            crate::records::anchor::AnchorKey::derive(&key).unwrap(),
        )
    }

    /// Anchors the event `seq` as stored, signed at `at_ms`.
    async fn anchor(db: &Sqlite, file: &crate::records::anchor::AnchorFile, seq: i64, at_ms: i64) {
        let rows = db
            .read(move |tx| tx.query("SELECT hash FROM events WHERE seq = $1", &[Value::Int(seq)]))
            .await
            .unwrap();
        let c = file.sign(seq, &rows[0].text(0).unwrap(), at_ms).unwrap();
        file.append(&c).unwrap();
    }

    async fn verify_with(db: &Sqlite, file: &crate::records::anchor::AnchorFile) -> Report {
        let anchors = file.read().unwrap();
        db.read(move |tx| verify_anchored(tx, &anchors))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_cut_tail_with_its_head_rewritten_is_caught_by_the_anchor() {
        let (dir, db) = db_with_events(10).await;
        let file = anchor_file(dir.path());
        anchor(&db, &file, 10, 1_764_150_000_000).await;
        assert_eq!(
            verify_with(&db, &file).await,
            Report {
                verification: Verification::Intact(10),
                anchored_seq: Some(10),
                anchored_at_ms: Some(1_764_150_000_000),
            }
        );
        // The newest three deleted, and the head row set to the last kept event's hash.
        db.write(|tx| {
            tx.execute("DELETE FROM events WHERE seq > 7", &[])?;
            tx.execute(
                "UPDATE event_head SET seq = 7, hash = (SELECT hash FROM events WHERE seq = 7)",
                &[],
            )
        })
        .await
        .unwrap();
        // The chain alone cannot tell.
        assert_eq!(db.read(verify).await.unwrap(), Verification::Intact(7));
        let r = verify_with(&db, &file).await;
        assert_eq!(r.anchored_seq, Some(10));
        assert_eq!(
            r.verification,
            Verification::Broken {
                seq: 8,
                reason: "the chain ends at event 7 but event 10 was anchored at 2025-11-26T09:40:00Z (the newest events were deleted)".into()
            }
        );
    }

    #[tokio::test]
    async fn an_intact_chain_verifies_with_its_anchors_and_a_rewrite_is_caught() {
        let (dir, db) = db_with_events(10).await;
        let file = anchor_file(dir.path());
        // No file yet: intact, nothing anchored.
        assert_eq!(
            verify_with(&db, &file).await,
            Report {
                verification: Verification::Intact(10),
                anchored_seq: None,
                anchored_at_ms: None,
            }
        );
        for (seq, at) in [(3, 1000), (6, 2000), (9, 3000)] {
            anchor(&db, &file, seq, at).await;
        }
        let r = verify_with(&db, &file).await;
        assert_eq!(r.verification, Verification::Intact(10));
        assert_eq!((r.anchored_seq, r.anchored_at_ms), (Some(9), Some(3000)));
        // Someone rewrites the chain from event 5 on, every hash recomputed and the head
        // row too: the chain holds, the checkpoint of event 6 does not.
        db.write(|tx| {
            let rows = tx.query(
                &format!("SELECT {COLUMNS} FROM events WHERE seq >= 5 ORDER BY seq"),
                &[],
            )?;
            let mut prev = tx.query("SELECT hash FROM events WHERE seq = 4", &[])?[0].text(0)?;
            for r in &rows {
                let mut e = from_row(r)?;
                e.message = format!("{} (rewritten)", e.message);
                e.prev_hash = prev.clone();
                e.hash = chain_hash(&prev, &e);
                tx.execute(
                    "UPDATE events SET message = $1, prev_hash = $2, hash = $3 WHERE seq = $4",
                    &[
                        e.message.clone().into(),
                        e.prev_hash.clone().into(),
                        e.hash.clone().into(),
                        Value::Int(e.seq),
                    ],
                )?;
                store_head(tx, e.seq, &e.hash)?;
                prev = e.hash;
            }
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!(db.read(verify).await.unwrap(), Verification::Intact(10));
        match verify_with(&db, &file).await.verification {
            Verification::Broken { seq: 6, reason } => assert_eq!(
                reason,
                "event 6 is not the event anchored at 1970-01-01T00:00:02Z: its hash differs (the chain was rewritten up to here)"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_forged_checkpoint_is_reported() {
        let (dir, db) = db_with_events(5).await;
        let file = anchor_file(dir.path());
        anchor(&db, &file, 5, 1000).await;
        // A checkpoint of an event that never was, without the key: its MAC cannot match.
        let mut forged = file.sign(5, "00", 2000).unwrap();
        forged.seq = 40;
        file.append(&forged).unwrap();
        // Another key file's checkpoint is no better.
        let other = tempfile::tempdir().unwrap();
        anchor(&db, &anchor_file(other.path()), 5, 3000).await;
        let text = std::fs::read_to_string(other.path().join("rolegate.anchors")).unwrap();
        std::fs::write(
            dir.path().join("rolegate.anchors"),
            std::fs::read_to_string(dir.path().join("rolegate.anchors")).unwrap() + &text,
        )
        .unwrap();
        let r = verify_with(&db, &file).await;
        assert_eq!(r.anchored_seq, Some(5), "the valid checkpoint still counts");
        match r.verification {
            Verification::Broken { seq: 40, reason } => assert!(
                reason.starts_with("line 2 of the anchor file (event 40, 1970-01-01T00:00:02Z) does not carry a valid MAC"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        let anchors = file.read().unwrap();
        assert_eq!(anchors.refused().len(), 2);
        assert_eq!(anchors.refused()[1].line, 3);
    }

    #[tokio::test]
    async fn a_fraction_in_an_integer_column_is_no_integer() {
        // Read as a truncated integer, `at + 0.5` would hash as the original and pass.
        let (_d, db) = db_with_events(3).await;
        db.write(|tx| tx.execute("UPDATE events SET at = at + 0.5 WHERE seq = 2", &[]))
            .await
            .unwrap();
        match db.read(verify).await.unwrap() {
            Verification::Broken { seq: 2, reason } => {
                assert!(reason.contains("row 2 is malformed: `at`"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_malformed_row_is_reported_by_its_seq_not_as_an_error() {
        let (_d, db) = db_with_events(5).await;
        // SQLite keeps what a statement stores, whatever the column's declared type.
        db.write(|tx| tx.execute("UPDATE events SET at = 'x' WHERE seq = 3", &[]))
            .await
            .unwrap();
        assert_eq!(
            db.read(verify).await.unwrap(),
            Verification::Broken {
                seq: 3,
                reason: "row 3 is malformed: `at` holds the text \"x\", not an integer".into()
            }
        );
        let e = db
            .read(|tx| list(tx, &Filter::default()))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("row 3 is malformed: `at` holds the text \"x\""),
            "{e}"
        );
        let e = db
            .read(|tx| after(tx, 0, 10))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("row 3 is malformed"), "{e}");

        let (_d, db) = db_with_events(5).await;
        db.write(|tx| tx.execute("UPDATE events SET message = x'00ff' WHERE seq = 4", &[]))
            .await
            .unwrap();
        assert_eq!(
            db.read(verify).await.unwrap(),
            Verification::Broken {
                seq: 4,
                reason: "row 4 is malformed: `message` holds 2 bytes of binary data, not text"
                    .into()
            }
        );

        // A NULL where NOT NULL was declared: the table rebuilt without the constraint.
        let (_d, db) = db_with_events(5).await;
        db.write(|tx| {
            // CREATE TABLE ... AS keeps the columns, not their constraints.
            tx.execute("CREATE TABLE events_loose AS SELECT * FROM events", &[])?;
            tx.execute("DROP TABLE events", &[])?;
            tx.execute("ALTER TABLE events_loose RENAME TO events", &[])?;
            tx.execute("UPDATE events SET message = NULL WHERE seq = 2", &[])
        })
        .await
        .unwrap();
        assert_eq!(
            db.read(verify).await.unwrap(),
            Verification::Broken {
                seq: 2,
                reason: "row 2 is malformed: `message` holds NULL, not text".into()
            }
        );
        // A long text is shortened in the message.
        db.write(|tx| {
            tx.execute(
                "UPDATE events SET message = 'm', severity = 7, id = $1 WHERE seq = 2",
                &[Value::Text("y".repeat(100))],
            )
        })
        .await
        .unwrap();
        match db.read(verify).await.unwrap() {
            Verification::Broken { seq: 2, reason } => assert_eq!(
                reason,
                format!(
                    "row 2 is malformed: `id` holds the text {:?}…, not an integer",
                    "y".repeat(40)
                )
            ),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_rehashed_edit_still_breaks_the_next_link() {
        let (_d, db) = db_with_events(4).await;
        // An attacker edits event 2 and recomputes its own hash, but not the chain after it.
        db.write(|tx| {
            let rows = tx.query(&format!("SELECT {COLUMNS} FROM events WHERE seq = 2"), &[])?;
            let mut e = from_row(&rows[0])?;
            e.message = "forged".into();
            let h = chain_hash(&e.prev_hash, &e);
            tx.execute(
                "UPDATE events SET message = 'forged', hash = $1 WHERE seq = 2",
                &[h.into()],
            )
        })
        .await
        .unwrap();
        let v = db.read(verify).await.unwrap();
        assert!(matches!(v, Verification::Broken { seq: 3, .. }), "{v:?}");
    }
}
