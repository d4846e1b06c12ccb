//! Storage: one API over SQLite (the embedded default) and PostgreSQL (for HA).
//!
//! Writes go through one writer per store that commits whatever is queued in a single
//! transaction (group commit): each write is durable (fsync'd) before its caller hears of it,
//! and a burst of writes shares one fsync. One failing write does not undo the others of its
//! batch: the batch is rolled back (PostgreSQL: to its one savepoint, its lock kept) and the
//! good writes' statements are run again. Reads run on a pool of connections
//! beside the writer.
//!
//! SQL is written once, in the subset both databases speak, with `$1`-style parameters and
//! the [`Value`] type; each backend implements [`Tx`].

pub mod changes;
pub mod postgres;
pub mod private_files;
pub mod schema;
pub mod secrets;
pub mod sqlite;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, mpsc};

use tokio::sync::oneshot;

use crate::model::error::{Error, Result};

/// A value bound to, or read from, a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// A 64-bit integer.
    Int(i64),
    /// UTF-8 text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Int(i64::from(v))
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Blob(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// One result row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row(pub Vec<Value>);

fn column_error(i: usize, want: &str, got: &Value) -> Error {
    Error::Store {
        what: "reading a row".into(),
        message: format!("column {i} should be {want}, found {got:?}"),
    }
}

impl Row {
    fn at(&self, i: usize) -> Result<&Value> {
        self.0.get(i).ok_or_else(|| Error::Store {
            what: "reading a row".into(),
            message: format!("no column {i}"),
        })
    }

    /// Column `i` as an integer.
    pub fn int(&self, i: usize) -> Result<i64> {
        match self.at(i)? {
            Value::Int(v) => Ok(*v),
            other => Err(column_error(i, "an integer", other)),
        }
    }

    /// Column `i` as text.
    pub fn text(&self, i: usize) -> Result<String> {
        match self.at(i)? {
            Value::Text(v) => Ok(v.clone()),
            other => Err(column_error(i, "text", other)),
        }
    }

    /// Column `i` as optional text.
    pub fn opt_text(&self, i: usize) -> Result<Option<String>> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Text(v) => Ok(Some(v.clone())),
            other => Err(column_error(i, "text or null", other)),
        }
    }

    /// Column `i` as bytes.
    pub fn blob(&self, i: usize) -> Result<Vec<u8>> {
        match self.at(i)? {
            Value::Blob(v) => Ok(v.clone()),
            other => Err(column_error(i, "bytes", other)),
        }
    }
}

/// The event chain's head (sequence number, hash) as a writer keeps it between writes, so
/// that appending an event does not read and rewrite the head row each time: the row is
/// written once per batch, in the batch's transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventHead {
    /// The newest event's (seq, hash); `None` until read from the database.
    pub head: Option<(i64, String)>,
    /// Whether `head` is newer than the stored row.
    pub dirty: bool,
}

/// A transaction (or a read-only connection) of any backend.
pub trait Tx {
    /// Runs a statement; returns the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64>;
    /// Runs a query; returns its rows.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>>;
    /// Which backend this is (`sqlite`, `postgres`), for the rare statement that differs.
    fn backend(&self) -> &'static str;
    /// The writer's cached event head, when this transaction has one.
    fn event_head(&mut self) -> Option<&mut EventHead> {
        None
    }
    /// Where this writer holds event rows to insert all of its batch's together, when it
    /// does (PostgreSQL's writer: one statement a batch instead of one an event).
    fn held_events(&mut self) -> Option<&mut Vec<Vec<Value>>> {
        None
    }
    /// Where this writer holds its batch's events unchained, when it chains them as the batch
    /// commits (PostgreSQL's writer, for writes on one account's rows: other instances append
    /// meanwhile, so numbers and hashes are only known then). Each row: id, severity, source,
    /// at, account, role, request, provider, message, account key (where it differs from the
    /// account), and the bytes its hash covers after its number.
    fn unchained_events(&mut self) -> Option<&mut Vec<Vec<Value>>> {
        None
    }
    /// Whether this writer vouches that no write changed the rows of `key` since a read
    /// stamped `read` (before it) at `read_at` (Unix ms), younger than the bound at `now_ms`
    /// — this transaction's own writes included: a check that would read them again may then
    /// trust that read. False when it cannot tell (PostgreSQL, readers).
    fn unchanged_since(
        &self,
        _kind: changes::Kind,
        _key: &str,
        _read: changes::Stamp,
        _read_at: i64,
        _now_ms: i64,
    ) -> bool {
        false
    }
}

/// A write to run in the writer's transaction.
pub type WriteOp<T> = Box<dyn FnOnce(&mut dyn Tx) -> Result<T> + Send>;

/// A store of either backend, chosen by the config.
#[derive(Debug)]
pub enum Store {
    /// The embedded default.
    Sqlite(sqlite::Sqlite),
    /// A PostgreSQL server, for several rolegate instances sharing one state.
    Postgres(Box<postgres::Postgres>),
}

impl Store {
    /// Opens the configured backend: PostgreSQL when `postgres` is set, else the SQLite
    /// file. Blocking (connects and migrates): call it before serving.
    pub fn open(config: &StoreConfig, now_ms: i64) -> Result<Self> {
        let Some(conn) = &config.postgres else {
            return sqlite::Sqlite::open_sized(&config.sqlite, now_ms, config.wal_mb)
                .map(Store::Sqlite);
        };
        let password = config
            .postgres_password_file
            .as_deref()
            .map(crate::store::private_files::read_secret)
            .transpose()?;
        let pg = postgres::parse_config(conn, password).map_err(|message| Error::Store {
            what: "reading [store] postgres".into(),
            message,
        })?;
        postgres::Postgres::open(pg, now_ms).map(Store::from)
    }

    /// Runs `op` in the next group-commit transaction; returns once it is durable.
    pub async fn write<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.write_with(true, op).await
    }

    /// Like [`Store::write`]; a write with `durable` false may be lost with the machine's
    /// power (not with a crash of rolegate) when its whole batch is of such writes.
    pub async fn write_with<T: Send + 'static>(
        &self,
        durable: bool,
        op: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.write_planned(
            Plan {
                durable,
                ..Plan::default()
            },
            op,
        )
        .await
    }

    /// Like [`Store::write_with`], for a write of which more is known beforehand ([`Plan`]):
    /// on PostgreSQL its first statement is sent with its batch's others, and a write on one
    /// account's rows does not wait for other instances' writes on other accounts. SQLite
    /// has no use for either.
    pub async fn write_planned<T: Send + 'static>(
        &self,
        plan: Plan,
        op: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        match self {
            Store::Sqlite(s) => s.write_with(plan.durable, op).await,
            Store::Postgres(p) => p.write_planned(plan, op).await,
        }
    }

    /// Whether writes have a use for their [`Lead`] (PostgreSQL), worth finding beforehand.
    pub fn wants_leads(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Runs `op` on a reading connection (SQLite: in place, for the short indexed reads of
    /// the request path; PostgreSQL: on a blocking thread).
    pub async fn read<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        match self {
            Store::Sqlite(s) => s.read(op).await,
            Store::Postgres(p) => p.read(op).await,
        }
    }

    /// Runs one reading statement: PostgreSQL pipelines it on a connection shared with the
    /// other reads in flight (fewer round trips to wake the server for than one connection
    /// a read); SQLite runs it as [`Store::read`] does. For the request path's one read.
    pub async fn query(&self, sql: String, params: Vec<Value>) -> Result<Vec<Row>> {
        match self {
            Store::Sqlite(s) => s.read(move |tx| tx.query(&sql, &params)).await,
            Store::Postgres(p) => p.query(&sql, &params).await,
        }
    }

    /// Like [`Store::read`], for a read that may take long (the whole event chain, a long
    /// listing): never on the async runtime's threads.
    pub async fn read_long<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        match self {
            Store::Sqlite(s) => s.read_long(op).await,
            Store::Postgres(p) => p.read(op).await,
        }
    }

    /// Finishes queued writes and closes the connections.
    pub fn close(&self) {
        match self {
            Store::Sqlite(s) => s.close(),
            Store::Postgres(p) => p.close(),
        }
    }

    /// The writer's account of changed keys, for caches of rows: SQLite only (with
    /// PostgreSQL, other hosts write too, and every read goes to the database).
    pub fn changes(&self) -> Option<&std::sync::Arc<changes::Changes>> {
        match self {
            Store::Sqlite(s) => Some(s.changes()),
            Store::Postgres(_) => None,
        }
    }

    /// Which backend this is (`sqlite`, `postgres`).
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }
}

impl From<sqlite::Sqlite> for Store {
    fn from(s: sqlite::Sqlite) -> Self {
        Store::Sqlite(s)
    }
}

impl From<postgres::Postgres> for Store {
    fn from(p: postgres::Postgres) -> Self {
        Store::Postgres(Box::new(p))
    }
}

/// `$1, $2, … $n`: the parameters of an `IN (…)` list of `n` values.
pub fn placeholders(n: usize) -> String {
    placeholders_from(1, n)
}

/// `$first, … `: the parameters of an `IN (…)` list of `n` values after `first - 1` others.
pub fn placeholders_from(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($1, $2), ($3, $4), …`: the parameters of a multi-row `VALUES` of `rows` rows of `cols`
/// columns each.
pub fn value_rows(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| {
            let row: Vec<String> = (1..=cols).map(|c| format!("${}", r * cols + c)).collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The event log's insert without its rows of values, in the order of an event's row
/// (`records::events` makes the rows; PostgreSQL's writer inserts a batch's together).
pub const INSERT_EVENT_COLUMNS: &str = "INSERT INTO events (seq, id, severity, source, at, account, role, request, provider, message, prev_hash, hash, account_key)";

/// How [`Error::StoreUnavailable`] reads: a batch's failure that starts so was the database
/// going away.
pub(crate) const UNREACHABLE: &str = "database unreachable:";

/// Tells a queued write's caller how its batch's commit went (`Some(error)` when it failed).
pub(crate) type Completion = Box<dyn FnOnce(Option<&str>) + Send>;
/// A queued write: runs in the batch's transaction, says whether it succeeded.
pub(crate) type Job = Box<dyn FnOnce(&mut dyn Tx) -> (bool, Completion) + Send>;

/// A queued write and what is known of it beforehand.
pub(crate) struct Queued {
    /// Whether the write must be durable before it is acknowledged.
    pub(crate) durable: bool,
    /// The write.
    pub(crate) job: Job,
    /// The statement the write will run first, when its caller could tell ([`lead_of`]).
    pub(crate) lead: Option<Lead>,
    /// The accounts whose rows alone the write changes, when its caller could tell ([`Plan`]).
    pub(crate) accounts: Vec<String>,
}

/// What a write's caller knows of it before it runs ([`Store::write_planned`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Whether it must reach the disk before its caller hears back ([`Store::write_with`]).
    pub durable: bool,
    /// The statement it will run first ([`lead_of`]).
    pub lead: Option<Lead>,
    /// The keys of the accounts whose rows alone it changes — their requests, credentials,
    /// lockouts and shadow challenges, nothing else but new events — when that is all it
    /// changes. PostgreSQL's writer then locks those accounts, not the whole store: instances
    /// sharing the database write for different accounts at once, and take turns only to
    /// chain their events as they commit. Empty (the default): the write may change anything
    /// (an admin's change, an import), and runs while no other instance writes.
    pub accounts: Vec<String>,
}

/// The one statement a write will run, known before the writer runs it: PostgreSQL's writer
/// sends a batch's leads back to back with its `BEGIN` (one round trip for all), and the write
/// then finds its answer waiting. Only a hint: a write that runs anything else is run as if
/// there were none (the batch is rolled back to its start and the writes before it run again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lead {
    /// The statement.
    pub sql: String,
    /// Its parameters.
    pub params: Vec<Value>,
    /// Whether the write reads its rows ([`Tx::query`]) rather than a count ([`Tx::execute`]).
    pub rows: bool,
}

/// The first statement `op` runs, found by running it on a transaction that records that
/// statement and refuses it (so `op` must be free of effects outside its transaction, and
/// give the same statement again when run for real). `None` when that statement only reads
/// (a write after a read needs its answer first) or reads or writes the event log (which the
/// writer holds back until its batch ends).
pub fn lead_of<T>(op: impl FnOnce(&mut dyn Tx) -> Result<T>) -> Option<Lead> {
    let mut planner = Planner::default();
    let _ = op(&mut planner);
    planner
        .lead
        .filter(|l| !l.sql.trim_start().starts_with("SELECT") && !l.sql.contains("event"))
}

/// The transaction [`lead_of`] runs a write on: PostgreSQL's writer as a write sees it (an
/// event head and held events in memory), which records the first statement and refuses it.
#[derive(Default)]
struct Planner {
    lead: Option<Lead>,
    head: EventHead,
    events: Vec<Vec<Value>>,
}

impl Planner {
    fn record(&mut self, sql: &str, params: &[Value], rows: bool) -> Error {
        if self.lead.is_none() {
            self.lead = Some(Lead {
                sql: sql.to_string(),
                params: params.to_vec(),
                rows,
            });
        }
        Error::Store {
            what: "planning a write".into(),
            message: "statements are only recorded here".into(),
        }
    }
}

impl Tx for Planner {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        Err(self.record(sql, params, false))
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        Err(self.record(sql, params, true))
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn event_head(&mut self) -> Option<&mut EventHead> {
        // Any head: the events' hashes are not among a lead's parameters.
        self.head.head.get_or_insert_with(|| (0, String::new()));
        Some(&mut self.head)
    }

    fn held_events(&mut self) -> Option<&mut Vec<Vec<Value>>> {
        Some(&mut self.events)
    }
}

/// The sending side of a backend's group-commit writer thread.
pub(crate) struct Writer(Mutex<Option<mpsc::Sender<Queued>>>);

impl Writer {
    /// Wraps the channel to a running writer thread.
    pub(crate) fn new(tx: mpsc::Sender<Queued>) -> Self {
        Self(Mutex::new(Some(tx)))
    }

    /// Queues `op` (its first statement `lead`, when known) and waits for its batch's commit.
    pub(crate) async fn submit<T: Send + 'static>(
        &self,
        plan: Plan,
        op: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = oneshot::channel::<Result<T>>();
        let queued = std::time::Instant::now();
        let job: Job = Box::new(move |tx| {
            let (result, events) = crate::model::metrics::collect_events(|| op(tx));
            let ok = result.is_ok();
            let completion: Completion = Box::new(move |commit_error| {
                let metrics = &crate::model::metrics::METRICS;
                if commit_error.is_some() {
                    // Its batch did not commit (or could not begin), whatever the write did.
                    metrics
                        .store_commit_failures
                        .fetch_add(1, Ordering::Relaxed);
                }
                let out = match (result, commit_error) {
                    (Ok(v), None) => {
                        // Counted only now: the write's events are durable.
                        metrics.committed(events);
                        Ok(v)
                    }
                    // A batch that failed because the database went away says so (a 503
                    // to the caller, not a 500).
                    (Ok(_), Some(e)) if e.starts_with(UNREACHABLE) => {
                        Err(Error::StoreUnavailable {
                            what: "committing".into(),
                            message: e.to_string(),
                        })
                    }
                    (Ok(_), Some(e)) => Err(Error::Store {
                        what: "committing".into(),
                        message: e.to_string(),
                    }),
                    (Err(e), _) => Err(e),
                };
                metrics.store_write_seconds.observe(queued.elapsed());
                let _ = reply.send(out);
            });
            (ok, completion)
        });
        let sender = self
            .0
            .lock()
            .ok()
            .and_then(|w| w.as_ref().cloned())
            .ok_or_else(|| Error::Store {
                what: "writing".into(),
                message: "the store is closed".into(),
            })?;
        sender
            .send(Queued {
                durable: plan.durable,
                job,
                lead: plan.lead,
                accounts: plan.accounts,
            })
            .map_err(|_| Error::Store {
                what: "writing".into(),
                message: "the database writer stopped".into(),
            })?;
        answer.await.map_err(|_| Error::Store {
            what: "writing".into(),
            message: "the database writer stopped before answering".into(),
        })?
    }

    /// Stops taking writes; the writer thread ends once the queue is drained.
    pub(crate) fn close(&self) {
        if let Ok(mut w) = self.0.lock() {
            w.take();
        }
    }
}

/// A transaction that refuses everything (its batch could not begin): its backend, and
/// whether that was because the database could not be reached.
pub(crate) struct FailTx(pub(crate) &'static str, pub(crate) bool);

impl Tx for FailTx {
    fn execute(&mut self, _: &str, _: &[Value]) -> Result<u64> {
        if self.1 {
            return Err(Error::StoreUnavailable {
                what: "writing".into(),
                message: "the transaction could not begin".into(),
            });
        }
        Err(Error::Store {
            what: "writing".into(),
            message: "the transaction could not begin".into(),
        })
    }
    fn query(&mut self, _: &str, _: &[Value]) -> Result<Vec<Row>> {
        self.execute("", &[]).map(|_| Vec::new())
    }
    fn backend(&self) -> &'static str {
        self.0
    }
}

/// Where state is kept.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// The SQLite database file (relative to the config's folder).
    #[serde(default = "default_db")]
    pub sqlite: PathBuf,
    /// The key file that seals credentials; keep it outside the database's backups.
    #[serde(default = "default_key")]
    pub key_file: PathBuf,
    /// A PostgreSQL connection string; when set, state lives there instead of `sqlite`.
    #[serde(default)]
    pub postgres: Option<String>,
    /// A private file holding the PostgreSQL password, kept out of the connection string.
    #[serde(default)]
    pub postgres_password_file: Option<PathBuf>,
    /// How long (MB) SQLite's WAL grows under sustained writes before it is started over:
    /// each start-over holds writes for a few milliseconds, so fewer is a shorter tail.
    #[serde(default = "default_wal_mb")]
    pub wal_mb: u32,
}

/// The WAL's default length before a start-over, in MB.
pub const DEFAULT_WAL_MB: u32 = 256;

/// The WAL lengths the setting accepts, in MB.
pub const WAL_MB_RANGE: std::ops::RangeInclusive<u32> = 4..=4096;

fn default_wal_mb() -> u32 {
    DEFAULT_WAL_MB
}

fn default_db() -> PathBuf {
    PathBuf::from("rolegate.db")
}

fn default_key() -> PathBuf {
    PathBuf::from("rolegate.key")
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            sqlite: default_db(),
            key_file: default_key(),
            postgres: None,
            postgres_password_file: None,
            wal_mb: DEFAULT_WAL_MB,
        }
    }
}

/// Writes the event chain's head row (the newest sequence number and hash): the writer does
/// it once per batch, the chain's own append when no writer keeps the head.
pub fn store_event_head(tx: &mut dyn Tx, seq: i64, hash: &str) -> Result<()> {
    tx.execute(
        "UPDATE event_head SET seq = $1, hash = $2 WHERE one = 1",
        &[Value::Int(seq), hash.into()],
    )?;
    Ok(())
}
