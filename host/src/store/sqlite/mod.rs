//! The SQLite backend: WAL, one group-commit writer thread, a syncer thread that fsyncs the
//! WAL behind it, a pool of read-only connections, and checkpoints off the writer's path.
//!
//! Durability is that of `synchronous = FULL` — a durable write is acknowledged only after an
//! fsync of the WAL that began after its commit — but the fsync is not in the writer's way:
//! the writer runs with `synchronous = NORMAL` and commits the next batch while the syncer
//! flushes the previous ones (one fsync for all of them).
//!
//! The WAL is started over (instead of growing) once it is long, which needs every frame
//! copied back into the database between two of the writer's transactions — a moment when
//! every write waits. The checkpointer copies the bulk beforehand, once the WAL is three
//! quarters long (the writer's commit hook tells it the length), and tells the writer when
//! only a small tail is left; the writer copies that tail itself. A WAL restarted every 512
//! commits by the writer alone held writes up for 5–16 ms each time; copying every 10 ms
//! instead of late cost ~5% more CPU (hot pages copied again and again).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, types::ValueRef};

use super::changes::{Changes, Kind, Stamp};
use super::{Completion, EventHead, FailTx, Queued, Row, Tx, Value, Writer};
use crate::error::{Error, Result};

/// When the WAL is started over, and how much of it the writer copies back itself.
#[derive(Debug, Clone, Copy)]
struct WalLimits {
    /// The WAL size (in frames, one page each) from which on it is started over.
    restart_frames: i64,
    /// The WAL size from which on the checkpointer copies it back. Late, so that a page
    /// written by every commit (an index's last leaf, the event head) is copied about once
    /// per WAL, not once per checkpoint: fewer writes and fsyncs beside the writer's.
    copy_from: i64,
    /// The most frames the writer copies back itself to start the WAL over; the
    /// checkpointer copies the rest beforehand, off the writer's path.
    tail_frames: i64,
    /// The WAL size from which on the writer checkpoints itself though the checkpointer has
    /// not called it (it stopped, or cannot keep up): the WAL must not grow without bound.
    fallback_frames: i64,
}

impl WalLimits {
    /// The limits of a WAL started over at `mb` megabytes (4 KB pages). Each start-over holds
    /// every write up for one short checkpoint (its two fsyncs, 2–10 ms here), so they should
    /// be rare: at 64 MB, 17–21 per 8-second run of the activation bench at ~9,000/s, enough
    /// of them to set its p99; at 256 MB, 3–5, and the p99 was lower in 8 of 10 alternating
    /// pairs (median 10.1 against 11.5 ms). Readers do not pay for a long WAL: they only
    /// search the frames written since the last checkpoint, which the checkpointer starts at
    /// three quarters of it.
    fn for_megabytes(mb: u32) -> Self {
        let restart_frames = i64::from(mb) * 256;
        Self {
            restart_frames,
            copy_from: restart_frames / 4 * 3,
            tail_frames: 256,
            fallback_frames: restart_frames * 2,
        }
    }
}

/// What the writer and the checkpointer tell each other about the WAL.
#[derive(Debug, Default)]
struct WalWatch {
    /// The WAL's length in frames after the writer's last commit (its commit hook).
    frames: AtomicI64,
    /// Set by the checkpointer when little is left to copy: the writer may start it over.
    tail_ready: AtomicBool,
}

/// The shortest pause between two background checkpoints: short under load, so that each
/// copies little and the tail left for the writer stays small.
const CHECKPOINT_PAUSE: Duration = Duration::from_millis(10);

/// The longest pause between two background checkpoints, when there was nothing to copy.
const CHECKPOINT_IDLE_PAUSE: Duration = Duration::from_millis(250);

/// The most checkpoints in a row that shrink the tail left for the writer: the first copies
/// the bulk, each further one what the writer appended meanwhile.
const CHECKPOINT_ROUNDS: usize = 6;

/// How often an idle writer looks for commits made by another process: the bound on how late
/// the daemon's caches see them (under load, it looks before every batch).
const FOREIGN_POLL: Duration = Duration::from_millis(100);

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;

/// The size of the last batch from which on the writer counts as under load.
const COMMIT_COMPANY: usize = 3;

/// Under load, how many writes a batch waits for (at most [`COMMIT_DELAY`]) before it commits.
const COMMIT_SIBLINGS: usize = 8;

/// The longest a batch waits for [`COMMIT_SIBLINGS`]: short beside a request's latency, long
/// enough for the requests in flight to queue their writes. 600 µs against 300: at c=32 ~5%
/// more activations per second and a lower p99 in 8 of 10 alternating runs (fewer, fuller
/// commits); 1 ms was no better; c=8 unchanged.
const COMMIT_DELAY: Duration = Duration::from_micros(600);

thread_local! {
    /// Rewritten statements by their text, per thread (each connection is used by one
    /// thread at a time): the rewrite runs once per statement, not once per execution.
    static REWRITTEN: std::cell::RefCell<std::collections::HashMap<String, std::rc::Rc<str>>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// The statement with SQLite's parameter syntax, from the per-thread cache.
fn cached_sql(sql: &str) -> std::rc::Rc<str> {
    REWRITTEN.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(s) = cache.get(sql) {
            return std::rc::Rc::clone(s);
        }
        if cache.len() >= 512 {
            cache.clear();
        }
        let s: std::rc::Rc<str> = sqlite_sql(sql).into();
        cache.insert(sql.to_string(), std::rc::Rc::clone(&s));
        s
    })
}

/// Rewrites `$1` parameters as SQLite's `?1`.
fn sqlite_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

fn db_error(what: &str, e: rusqlite::Error) -> Error {
    Error::Store {
        what: what.to_string(),
        message: e.to_string(),
    }
}

/// A [`Value`] bound without copying it.
struct Param<'a>(&'a Value);

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::Borrowed(match self.0 {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// The statements a batch's writes have run, to run again when a later write of the batch
/// fails and the transaction is rolled back under them.
type Redo = Vec<(std::rc::Rc<str>, Vec<Value>)>;

/// A SQLite connection seen as a [`Tx`].
pub struct SqliteTx<'a> {
    conn: &'a Connection,
    /// The writer's event head (none on reading connections).
    head: Option<&'a mut EventHead>,
    /// Where the writer records each statement that ran (in batches of several writes).
    redo: Option<&'a mut Redo>,
    /// The writer's account of changed keys (none on reading connections).
    changed: Option<&'a Changed>,
}

impl Tx for SqliteTx<'_> {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let sql = cached_sql(sql);
        let n = run(self.conn, &sql, params)?;
        // Only a statement that ran is redone (a failed one changed nothing).
        if let Some(redo) = self.redo.as_deref_mut() {
            redo.push((sql, params.to_vec()));
        }
        Ok(n)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let mut stmt = self
            .conn
            .prepare_cached(&cached_sql(sql))
            .map_err(|e| db_error("preparing a query", e))?;
        let columns = stmt.column_count();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter().map(Param)))
            .map_err(|e| db_error("reading", e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| db_error("reading", e))? {
            let mut row = Vec::with_capacity(columns);
            for i in 0..columns {
                let v = r.get_ref(i).map_err(|e| db_error("reading", e))?;
                row.push(match v {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(i) => Value::Int(i),
                    // No column holds a real: a whole one reads as the integer it is, any
                    // other as text, so that a typed read names the column instead of
                    // reading a truncated number (`at = at + 0.5` must not pass for `at`).
                    ValueRef::Real(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                        Value::Int(f as i64)
                    }
                    ValueRef::Real(f) => Value::Text(format!("{f}")),
                    ValueRef::Text(t) => Value::Text(match std::str::from_utf8(t) {
                        Ok(text) => text.to_owned(),
                        Err(_) => String::from_utf8_lossy(t).into_owned(),
                    }),
                    ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                });
            }
            out.push(Row(row));
        }
        Ok(out)
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn event_head(&mut self) -> Option<&mut EventHead> {
        self.head.as_deref_mut()
    }

    /// No committed write changed the key since the read (as [`Changes::still_fresh`]
    /// judges), nor any write of the writer's transaction under way.
    fn unchanged_since(
        &self,
        kind: Kind,
        key: &str,
        read: Stamp,
        read_at: i64,
        now_ms: i64,
    ) -> bool {
        self.changed.is_some_and(|c| {
            c.changes.still_fresh(kind, key, read, read_at, now_ms)
                && c.touched
                    .lock()
                    .is_ok_and(|t| !t.iter().any(|(k, changed)| *k == kind && changed == key))
        })
    }
}

/// Runs one statement (in SQLite's syntax) through the statement cache.
fn run(conn: &Connection, sql: &str, params: &[Value]) -> Result<u64> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(|e| db_error("preparing a statement", e))?;
    stmt.execute(rusqlite::params_from_iter(params.iter().map(Param)))
        .map(|n| n as u64)
        .map_err(|e| db_error("writing", e))
}

/// A SQLite store.
pub struct Sqlite {
    path: PathBuf,
    writer: Writer,
    /// The keys the writer changed, for caches of rows (see [`Changes`]).
    changes: Arc<Changes>,
    readers: Arc<Mutex<Vec<Connection>>>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqlite")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn open_connection(path: &Path, read_only: bool) -> Result<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| db_error(&format!("opening {}", path.display()), e))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| db_error("setting the busy timeout", e))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

impl Sqlite {
    /// Opens (creating when missing, with mode 0600) and migrates the database at `path`.
    pub fn open(path: &Path, now_ms: i64) -> Result<Self> {
        Self::open_sized(path, now_ms, super::DEFAULT_WAL_MB)
    }

    /// Opens the database with its WAL started over at `wal_mb` megabytes under load
    /// (`[store] wal_mb`).
    pub fn open_sized(path: &Path, now_ms: i64, wal_mb: u32) -> Result<Self> {
        Self::open_with(path, now_ms, WalLimits::for_megabytes(wal_mb))
    }

    fn open_with(path: &Path, now_ms: i64, limits: WalLimits) -> Result<Self> {
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|source| Error::Io {
                    what: format!("creating {}", path.display()),
                    source,
                })?;
        }
        crate::private_files::check_private(path)?;
        let conn = open_connection(path, false)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA wal_autocheckpoint = 0;
             PRAGMA foreign_keys = ON;",
        )
        .map_err(|e| db_error("configuring the database", e))?;
        {
            conn.execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| db_error("migrating", e))?;
            let mut tx = SqliteTx {
                conn: &conn,
                head: None,
                redo: None,
                changed: None,
            };
            match super::schema::migrate(&mut tx, now_ms) {
                Ok(_) => conn
                    .execute_batch("COMMIT")
                    .map_err(|e| db_error("migrating", e))?,
                Err(e) => {
                    let _ = conn.execute_batch("ROLLBACK");
                    return Err(e);
                }
            }
        }
        // Statement journals and temporary tables stay in memory.
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA temp_store = MEMORY;")
            .map_err(|e| db_error("configuring the database", e))?;
        let (tx, rx) = mpsc::channel::<Queued>();
        let (sync_tx, sync_rx) = mpsc::channel::<Synced>();
        let stop = Arc::new(AtomicBool::new(false));
        let watch = Arc::new(WalWatch::default());
        let changes = Arc::new(Changes::default());
        let touched = record_changes(&conn)?;
        let mut conn = conn;
        {
            let watch = Arc::clone(&watch);
            conn.wal_hook(Some(
                move |_: &mut rusqlite::hooks::Wal, pages: std::os::raw::c_int| {
                    watch.frames.store(i64::from(pages), Ordering::Relaxed);
                    Ok(())
                },
            ))
            .map_err(|e| db_error("watching the WAL", e))?;
        }
        let syncer = {
            let mut wal = path.as_os_str().to_owned();
            wal.push("-wal");
            let wal = PathBuf::from(wal);
            std::thread::Builder::new()
                .name("sqlite-syncer".into())
                .spawn(move || sync_loop(&wal, sync_rx))
                .map_err(|source| Error::Io {
                    what: "starting the database syncer".into(),
                    source,
                })?
        };
        let writer = {
            let watch = Arc::clone(&watch);
            let changed = Changed {
                changes: Arc::clone(&changes),
                touched,
            };
            std::thread::Builder::new()
                .name("sqlite-writer".into())
                .spawn(move || write_loop(conn, rx, sync_tx, &watch, &changed, limits))
        }
        .map_err(|source| Error::Io {
            what: "starting the database writer".into(),
            source,
        })?;
        let checkpointer = {
            let path = path.to_path_buf();
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("sqlite-checkpt".into())
                .spawn(move || checkpoint_loop(&path, &stop, &watch, limits))
                .map_err(|source| Error::Io {
                    what: "starting the checkpointer".into(),
                    source,
                })?
        };
        Ok(Self {
            path: path.to_path_buf(),
            writer: Writer::new(tx),
            changes,
            readers: Arc::new(Mutex::new(Vec::new())),
            stop,
            // Joined in this order: the writer drains its queue, then the syncer its own.
            threads: Mutex::new(vec![writer, syncer, checkpointer]),
        })
    }

    /// The keys this store's writer changed, for caches of the rows they name.
    pub fn changes(&self) -> &Arc<Changes> {
        &self.changes
    }

    /// Runs `op` in the next group-commit transaction; returns once it is durable (fsync'd).
    pub async fn write<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.writer.submit(true, op).await
    }

    /// Like [`Sqlite::write`], but when `durable` is false the caller hears back once the
    /// commit survives a crash of rolegate, not necessarily a power loss (the WAL not yet
    /// fsync'd): for state that is cheap to lose, such as a challenge waiting for its answer.
    pub async fn write_with<T: Send + 'static>(
        &self,
        durable: bool,
        op: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.writer.submit(durable, op).await
    }

    /// Runs `op` on a read-only connection, on the calling thread.
    ///
    /// A read in WAL mode never waits for the writer and takes microseconds on the indexed
    /// lookups of the request path, so it runs in place: a hop to a blocking thread and back
    /// cost more than the read itself.
    pub async fn read<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        read_pooled(&self.readers, &self.path, op)
    }

    /// Like [`Sqlite::read`], on a blocking thread: for reads that may take long (the
    /// whole event chain, long listings), which must not hold up the async runtime.
    pub async fn read_long<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (readers, path) = (Arc::clone(&self.readers), self.path.clone());
        tokio::task::spawn_blocking(move || read_pooled(&readers, &path, op))
            .await
            .map_err(|e| Error::Store {
                what: "reading".into(),
                message: format!("the reader failed: {e}"),
            })?
    }

    /// Finishes queued writes, checkpoints, and stops the background threads.
    pub fn close(&self) {
        self.writer.close();
        self.stop.store(true, Ordering::SeqCst);
        let threads: Vec<_> = self
            .threads
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
        if let Ok(conn) = open_connection(&self.path, false) {
            let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);");
        }
    }
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        self.close();
    }
}

/// The keys the triggers on the writer's connection named during the current transaction.
type Touched = Arc<Mutex<Vec<(Kind, String)>>>;

/// The tables whose rows caches keep, the key each row is cached by, and its kind's tag.
const CACHED_TABLES: [(&str, &str, Kind); 5] = [
    ("users", "account_key", Kind::Account),
    ("credentials", "account_key", Kind::Account),
    ("lockouts", "account_key", Kind::Account),
    ("roles", "name", Kind::Role),
    ("tokens", "hash", Kind::Token),
];

/// Makes the writer's connection name every changed row of a cached table: a function that
/// records the key, called by temporary triggers (this connection's alone; the schema is
/// untouched). Every write goes through this connection, whatever code path issues it.
fn record_changes(conn: &Connection) -> Result<Touched> {
    use rusqlite::functions::FunctionFlags;
    let touched: Touched = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&touched);
    conn.create_scalar_function(
        "rolegate_changed",
        2,
        FunctionFlags::SQLITE_UTF8,
        move |ctx| {
            let tag: String = ctx.get(0)?;
            let key: String = ctx.get(1)?;
            if let (Some(kind), Ok(mut t)) = (Kind::from_tag(&tag), sink.lock()) {
                t.push((kind, key));
            }
            Ok(0i64)
        },
    )
    .map_err(|e| db_error("watching cached tables", e))?;
    let mut sql = String::new();
    for (table, key, kind) in CACHED_TABLES {
        let tag = kind.tag();
        sql.push_str(&format!(
            "CREATE TEMP TRIGGER rolegate_{table}_inserted AFTER INSERT ON main.{table} BEGIN SELECT rolegate_changed('{tag}', NEW.{key}); END;
             CREATE TEMP TRIGGER rolegate_{table}_updated AFTER UPDATE ON main.{table} BEGIN SELECT rolegate_changed('{tag}', OLD.{key}); SELECT rolegate_changed('{tag}', NEW.{key}); END;
             CREATE TEMP TRIGGER rolegate_{table}_deleted AFTER DELETE ON main.{table} BEGIN SELECT rolegate_changed('{tag}', OLD.{key}); END;"
        ));
    }
    conn.execute_batch(&sql)
        .map_err(|e| db_error("watching cached tables", e))?;
    Ok(touched)
}

/// What the writer tells caches after each transaction.
struct Changed {
    changes: Arc<Changes>,
    touched: Touched,
}

impl Changed {
    /// Publishes the keys the transaction changed (committed or not: a rolled back change
    /// only costs a cache miss).
    fn publish(&self) {
        match self.touched.lock() {
            Ok(mut t) => {
                self.changes
                    .publish(t.iter().map(|(kind, key)| (*kind, key.as_str())));
                t.clear();
            }
            Err(_) => self.changes.all_changed(),
        }
    }
}

/// What the syncer is handed: the completions of a committed batch whose callers wait for
/// the disk, or the news that the writer stopped.
type Synced = Vec<Completion>;

/// The writer: commits what is queued in one transaction at a time, hands the durable
/// writes' callers to the syncer, and starts the WAL over when the checkpointer says that
/// little is left to copy.
fn write_loop(
    conn: Connection,
    rx: mpsc::Receiver<Queued>,
    sync: mpsc::Sender<Synced>,
    watch: &WalWatch,
    changed: &Changed,
    limits: WalLimits,
) {
    let mut batch: Vec<Queued> = Vec::with_capacity(MAX_BATCH);
    // The WAL length at which the writer checkpoints without being asked.
    let mut fallback_at = limits.fallback_frames;
    // This writer is the daemon's only one, so the head it keeps stays true between batches;
    // it is dropped (and read again) whenever a batch does not commit, or another process
    // committed.
    let mut head = EventHead::default();
    let mut last_batch = 0usize;
    let mut version = None;
    foreign_commits(&conn, &mut version);
    loop {
        let first = match rx.recv_timeout(FOREIGN_POLL) {
            Ok(job) => job,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if foreign_commits(&conn, &mut version) {
                    changed.changes.all_changed();
                    head = EventHead::default();
                }
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Group commit under load: when the last batch was a crowd, wait a moment for more
        // writes before committing, so that one commit (its WAL frames, its fsync) serves
        // several. A writer with little company never waits: there, waiting is only latency.
        // The wait is for as many writes as the last batch had (a little more, up to
        // COMMIT_SIBLINGS): what the load has just shown it brings in that time.
        let want = (last_batch + 1).min(COMMIT_SIBLINGS);
        if last_batch >= COMMIT_COMPANY && batch.len() < want {
            let until = std::time::Instant::now() + COMMIT_DELAY;
            while batch.len() < want {
                let left = until.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    break;
                }
                match rx.recv_timeout(left) {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
        }
        last_batch = batch.len();
        let mut durable = Vec::with_capacity(batch.len());
        let mut at_once = Vec::new();
        let begun = exec_cached(&conn, "BEGIN IMMEDIATE");
        // With the write lock held, nothing else commits until this batch has: a commit made
        // before it by another process (`rolegate import`) leaves the caches and the event head
        // stale, so they are dropped.
        if begun && foreign_commits(&conn, &mut version) {
            changed.changes.all_changed();
            head = EventHead::default();
        }
        // No savepoint per write (their page copies cost the writer ~15%): the
        // statements that each write ran are recorded instead, and when one write fails, the
        // transaction is rolled back and the batch's earlier writes are run again — failures
        // are rare (a lost race, a refused credential), successes are every request.
        let shared = batch.len() > 1;
        let mut redo: Redo = Vec::new();
        // Set when a failed write could not be undone alone: the whole batch then is.
        let mut undo_all = false;
        for Queued { job, durable: d } in batch.drain(..) {
            if !begun || undo_all {
                let (_, done) = job(&mut FailTx("sqlite"));
                at_once.push(done);
                continue;
            }
            let before = head.clone();
            let mark = redo.len();
            // A panicking write is undone and its caller told the writer failed; the others
            // of the batch go on.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                job(&mut SqliteTx {
                    conn: &conn,
                    head: Some(&mut head),
                    redo: shared.then_some(&mut redo),
                    changed: Some(changed),
                })
            }));
            let ok = matches!(ran, Ok((true, _)));
            // An I/O error or a full disk makes SQLite roll the whole transaction back itself.
            let lost = conn.is_autocommit();
            if !ok || lost {
                head = before;
                redo.truncate(mark);
                if !shared || lost || !redo_from_scratch(&conn, &redo) {
                    undo_all = true;
                }
            }
            if let Ok((_, done)) = ran {
                // A failed write has nothing to wait for on disk.
                if d && ok && !undo_all {
                    durable.push(done)
                } else {
                    at_once.push(done)
                }
            }
        }
        // The head is stored once per batch, inside it.
        let stored_head = match (&head.head, head.dirty && begun && !undo_all) {
            (Some((seq, hash)), true) => super::store_event_head(
                &mut SqliteTx {
                    conn: &conn,
                    head: None,
                    redo: None,
                    changed: None,
                },
                *seq,
                hash,
            )
            .err()
            .map(|e| e.to_string()),
            _ => None,
        };
        let outcome = if !begun {
            Some("the transaction could not begin".to_string())
        } else if undo_all {
            let _ = conn.execute_batch("ROLLBACK");
            // A lone failed write keeps its own error; its head was restored already.
            shared.then(|| "a failed write could not be undone alone".to_string())
        } else if let Some(e) = stored_head {
            let _ = conn.execute_batch("ROLLBACK");
            Some(e)
        } else {
            let committed = conn
                .prepare_cached("COMMIT")
                .and_then(|mut s| s.execute([]));
            committed.err().map(|e| {
                let _ = conn.execute_batch("ROLLBACK");
                e.to_string()
            })
        };
        if outcome.is_some() {
            head = EventHead::default();
        }
        head.dirty = false;
        // Caches learn of the batch's changes before any of its callers hears back.
        changed.publish();
        for done in at_once {
            done(outcome.as_deref());
        }
        if outcome.is_some() {
            for done in durable {
                done(outcome.as_deref());
            }
        } else if !durable.is_empty()
            && let Err(mpsc::SendError(lost)) = sync.send(durable)
        {
            for done in lost {
                done(Some("the database syncer stopped"));
            }
        }
        // With the WAL fully copied back, the next transaction starts the WAL over instead of
        // growing it (a growing WAL costs block allocation on every commit and longer page
        // lookups in every read). Only a checkpoint between two of the writer's transactions
        // can copy everything, and every write waits while it runs — so the checkpointer
        // copies the bulk beforehand and the writer only the last few frames.
        let frames = watch.frames.load(Ordering::Relaxed);
        if frames < limits.fallback_frames {
            fallback_at = limits.fallback_frames;
        }
        let fallback = frames >= fallback_at;
        if watch.tail_ready.swap(false, Ordering::AcqRel) || fallback {
            let _ = checkpoint(&conn);
            if fallback {
                // A reader may have kept it from copying everything: try again later.
                fallback_at = frames.saturating_add(limits.restart_frames / 4);
            }
        }
    }
}

/// Whether another connection committed since the last look (`PRAGMA data_version` counts
/// the commits of every connection but this one; the daemon's readers never write, so these
/// are other processes'). A failed look counts as a commit.
fn foreign_commits(conn: &Connection, seen: &mut Option<i64>) -> bool {
    let now = conn
        .prepare_cached("PRAGMA data_version")
        .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
        .ok();
    let foreign = now.is_none() || now != *seen;
    *seen = now;
    foreign
}

/// Rolls the writer's transaction back and runs the recorded statements of the batch's good
/// writes again, leaving the database as if the failed write had never run. False when that
/// fails (the caller then undoes the whole batch).
fn redo_from_scratch(conn: &Connection, redo: &Redo) -> bool {
    if !exec_cached(conn, "ROLLBACK") || !exec_cached(conn, "BEGIN IMMEDIATE") {
        return false;
    }
    redo.iter()
        .all(|(sql, params)| run(conn, sql, params).is_ok())
}

/// Makes committed batches durable: one fsync of the WAL covers every batch committed
/// before it began, so the writer goes on with the next batch meanwhile. A failed fsync
/// fails its callers and every later durable write (the kernel may have dropped the pages).
fn sync_loop(wal: &Path, rx: mpsc::Receiver<Synced>) {
    let mut file: Option<std::fs::File> = None;
    let mut broken: Option<String> = None;
    while let Ok(first) = rx.recv() {
        let mut waiting = first;
        while let Ok(more) = rx.try_recv() {
            waiting.extend(more);
        }
        if broken.is_none() {
            if file.is_none() {
                match std::fs::File::open(wal) {
                    Ok(f) => {
                        // The WAL's directory entry must survive too (once).
                        if let Some(dir) = wal.parent()
                            && let Ok(d) = std::fs::File::open(dir)
                        {
                            let _ = d.sync_all();
                        }
                        file = Some(f);
                    }
                    Err(e) => broken = Some(format!("opening the WAL to sync it: {e}")),
                }
            }
            if let Some(f) = &file
                && let Err(e) = f.sync_data()
            {
                broken = Some(format!("fsync of the WAL failed: {e}"));
            }
        }
        for done in waiting {
            done(broken.as_deref());
        }
    }
}

/// Runs `op` on a pooled read-only connection, in one read transaction: its queries see one
/// snapshot, and SQLite checks the WAL (and, after any commit, drops its page cache) once
/// instead of per query. A panicking read must not lose the connection, nor poison the pool.
fn read_pooled<T>(
    readers: &Mutex<Vec<Connection>>,
    path: &Path,
    op: impl FnOnce(&mut dyn Tx) -> Result<T>,
) -> Result<T> {
    let conn = match readers.lock().ok().and_then(|mut r| r.pop()) {
        Some(c) => c,
        None => open_connection(path, true)?,
    };
    let begun = exec_cached(&conn, "BEGIN");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        op(&mut SqliteTx {
            conn: &conn,
            head: None,
            redo: None,
            changed: None,
        })
    }));
    if begun {
        exec_cached(&conn, "COMMIT");
    }
    if let Ok(mut r) = readers.lock() {
        r.push(conn);
    }
    result.unwrap_or_else(|_| {
        Err(Error::Store {
            what: "reading".into(),
            message: "the read panicked".into(),
        })
    })
}

/// Runs a parameterless statement through the statement cache (no re-parsing per write).
fn exec_cached(conn: &Connection, sql: &str) -> bool {
    run(conn, sql, &[]).is_ok()
}

/// A passive checkpoint (it never waits for the writer or readers; it copies what it can):
/// the frames in the WAL and how many of them are copied back, or `None` when another
/// checkpoint was running or it failed.
fn checkpoint(conn: &Connection) -> Option<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })
    .ok()
    .filter(|(busy, log, _)| *busy == 0 && *log >= 0)
    .map(|(_, log, copied)| (log, copied))
}

/// Copies the WAL back into the database off the writer's path once it has grown long, and
/// when little of it is left to copy, tells the writer to start it over; copies what is left
/// when the writer is idle.
fn checkpoint_loop(path: &Path, stop: &AtomicBool, watch: &WalWatch, limits: WalLimits) {
    let Ok(conn) = open_connection(path, false) else {
        return;
    };
    let mut pause = CHECKPOINT_PAUSE;
    let mut seen = -1;
    // Whether everything was copied since the writer went idle.
    let mut tidy = true;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(pause);
        let frames = watch.frames.load(Ordering::Relaxed);
        if frames == seen {
            // No commit since the last look: copy what is left once (readers then find every
            // page in the database file), and look less and less often.
            if !tidy {
                tidy = checkpoint(&conn).is_some_and(|(log, copied)| log == copied);
            }
            pause = (pause * 2).min(CHECKPOINT_IDLE_PAUSE);
            continue;
        }
        seen = frames;
        tidy = false;
        pause = CHECKPOINT_PAUSE;
        if frames < limits.copy_from {
            continue;
        }
        let Some(mut state) = checkpoint(&conn) else {
            continue;
        };
        for _ in 0..CHECKPOINT_ROUNDS {
            if state.0 - state.1 <= limits.tail_frames {
                break;
            }
            match checkpoint(&conn) {
                Some(next) => state = next,
                None => break,
            }
        }
        let (log, copied) = state;
        if log >= limits.restart_frames && log - copied <= limits.tail_frames {
            watch.tail_ready.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_rewritten_for_sqlite() {
        assert_eq!(
            sqlite_sql("a = $1 AND b = $12 AND c = '$x'"),
            "a = ?1 AND b = ?12 AND c = '$x'"
        );
    }

    #[tokio::test]
    async fn migrations_run_once_and_the_file_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rolegate.db");
        drop(Sqlite::open(&path, 0).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let db = Sqlite::open(&path, 0).unwrap();
        let n = db
            .read(|tx| tx.query("SELECT COUNT(*) FROM schema_migrations", &[]))
            .await
            .unwrap();
        assert_eq!(n[0].int(0).unwrap(), super::super::schema::latest());
        db.close();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Sqlite::open(&path, 0).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
    }

    /// Runs 1,500 durable writes under `limits`; the times the WAL was started over and the
    /// longest it was seen. Every write must be there after a restart.
    async fn stream_of_writes(limits: WalLimits) -> (u32, u64) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rolegate.db");
        let wal = dir.path().join("rolegate.db-wal");
        let db = Sqlite::open_with(&path, 0, limits).unwrap();
        let writes = 1500;
        let mut longest = 0;
        for i in 0..writes {
            db.write(move |tx| {
                tx.execute(
                    "INSERT INTO meta (name, value) VALUES ($1, $2)",
                    &[Value::Text(format!("k{i}")), Value::Blob(vec![7; 1024])],
                )
            })
            .await
            .unwrap();
            if i % 25 == 0 {
                longest = longest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
            }
        }
        // The WAL header counts the times it was started over (its checkpoint sequence).
        let header = std::fs::read(&wal).unwrap();
        let restarts = u32::from_be_bytes([header[12], header[13], header[14], header[15]]);
        db.close();
        let db = Sqlite::open(&path, 0).unwrap();
        let n = db
            .read(|tx| tx.query("SELECT COUNT(*) FROM meta WHERE name LIKE 'k%'", &[]))
            .await
            .unwrap();
        assert_eq!(n[0].int(0).unwrap(), writes);
        (restarts, longest)
    }

    /// Under a steady stream of writes the WAL is started over once it is long (the
    /// checkpointer copying the bulk, the writer the tail), so it stays short.
    #[tokio::test]
    async fn the_wal_is_started_over_while_writes_go_on() {
        let (restarts, longest) = stream_of_writes(WalLimits {
            restart_frames: 64,
            copy_from: 48,
            tail_frames: 16,
            // The writer's own fallback never fires here: only the hand-over can keep the
            // WAL short.
            fallback_frames: i64::MAX,
        })
        .await;
        assert!(restarts >= 3, "the WAL was started over {restarts} times");
        // Without starting over, these writes make a WAL of about 4,000 frames (16 MB).
        assert!(
            longest < 8 << 20,
            "the WAL grew to {longest} bytes: it was not started over"
        );
    }

    /// The `wal_mb` setting bounds the WAL: 1,500 writes would make it ~16 MB; at 4 MB it
    /// is started over, and never grows much past the writer's fallback (twice the setting:
    /// 2,048 frames of a 4 KB page and a 24-byte header, ~8.4 MB).
    #[tokio::test]
    async fn the_wal_is_started_over_at_its_configured_length() {
        let (restarts, longest) = stream_of_writes(WalLimits::for_megabytes(4)).await;
        assert!(restarts >= 2, "the WAL was started over {restarts} times");
        assert!(
            longest < 9 << 20,
            "the WAL grew to {longest} bytes, past twice its 4 MB"
        );
    }

    /// When the checkpointer does not copy (here: never asked to), the writer starts the
    /// WAL over itself once it reaches its fallback length.
    #[tokio::test]
    async fn the_writer_starts_the_wal_over_without_the_checkpointer() {
        let (restarts, longest) = stream_of_writes(WalLimits {
            restart_frames: 64,
            copy_from: i64::MAX,
            tail_frames: 16,
            fallback_frames: 128,
        })
        .await;
        assert!(restarts >= 3, "the WAL was started over {restarts} times");
        assert!(
            longest < 8 << 20,
            "the WAL grew to {longest} bytes: it was not started over"
        );
    }
}
