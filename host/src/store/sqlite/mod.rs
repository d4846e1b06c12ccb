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
//!
//! Rooms: `writer` (the group-commit loop and its change triggers), `wal` (the syncer and the
//! checkpointer); this file opens the database and keeps the transaction and the reader pool.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, types::ValueRef};

use super::changes::{Changes, Kind, Stamp};
use super::{Completion, EventHead, FailTx, Queued, Row, Tx, Value, Writer};
use crate::model::error::{Error, Result};

mod wal;
mod writer;

use wal::*;
use writer::*;

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
        // A query that writes (`UPDATE … RETURNING`, a `WITH` that changes rows) is redone
        // with the batch's other statements when a neighbour fails, as `execute`'s are.
        if let Some(redo) = self.redo.as_deref_mut()
            && !sql.trim_start().starts_with("SELECT")
        {
            redo.push((cached_sql(sql), params.to_vec()));
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
        crate::store::private_files::check_private(path)?;
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
        self.writer
            .submit(
                crate::store::Plan {
                    durable: true,
                    ..Default::default()
                },
                op,
            )
            .await
    }

    /// Like [`Sqlite::write`], but when `durable` is false the caller hears back once the
    /// commit survives a crash of rolegate, not necessarily a power loss (the WAL not yet
    /// fsync'd): for state that is cheap to lose, such as a challenge waiting for its answer.
    pub async fn write_with<T: Send + 'static>(
        &self,
        durable: bool,
        op: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.writer
            .submit(
                crate::store::Plan {
                    durable,
                    ..Default::default()
                },
                op,
            )
            .await
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
