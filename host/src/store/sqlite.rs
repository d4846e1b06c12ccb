//! The SQLite backend: WAL, `synchronous = FULL`, one group-commit writer thread, a pool of
//! read-only connections, and checkpoints off the writer's path.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, types::ValueRef};

use super::{FailTx, Queued, Row, Tx, Value, Writer};
use crate::error::{Error, Result};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;

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

fn to_sql(v: &Value) -> rusqlite::types::Value {
    match v {
        Value::Null => rusqlite::types::Value::Null,
        Value::Int(i) => rusqlite::types::Value::Integer(*i),
        Value::Text(s) => rusqlite::types::Value::Text(s.clone()),
        Value::Blob(b) => rusqlite::types::Value::Blob(b.clone()),
    }
}

/// A SQLite connection seen as a [`Tx`].
pub struct SqliteTx<'a> {
    conn: &'a Connection,
}

impl Tx for SqliteTx<'_> {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let mut stmt = self
            .conn
            .prepare_cached(&sqlite_sql(sql))
            .map_err(|e| db_error("preparing a statement", e))?;
        let params: Vec<_> = params.iter().map(to_sql).collect();
        stmt.execute(rusqlite::params_from_iter(params))
            .map(|n| n as u64)
            .map_err(|e| db_error("writing", e))
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let mut stmt = self
            .conn
            .prepare_cached(&sqlite_sql(sql))
            .map_err(|e| db_error("preparing a query", e))?;
        let columns = stmt.column_count();
        let params: Vec<_> = params.iter().map(to_sql).collect();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params))
            .map_err(|e| db_error("reading", e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| db_error("reading", e))? {
            let mut row = Vec::with_capacity(columns);
            for i in 0..columns {
                let v = r.get_ref(i).map_err(|e| db_error("reading", e))?;
                row.push(match v {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(i) => Value::Int(i),
                    ValueRef::Real(f) => Value::Int(f as i64),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
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
}

/// A SQLite store.
pub struct Sqlite {
    path: PathBuf,
    writer: Writer,
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
        crate::config::check_private(path)?;
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
            let mut tx = SqliteTx { conn: &conn };
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
        let (tx, rx) = mpsc::channel::<Queued>();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = std::thread::Builder::new()
            .name("rolegate-sqlite-writer".into())
            .spawn(move || write_loop(conn, rx))
            .map_err(|source| Error::Io {
                what: "starting the database writer".into(),
                source,
            })?;
        let checkpointer = {
            let path = path.to_path_buf();
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("rolegate-sqlite-checkpoint".into())
                .spawn(move || checkpoint_loop(&path, &stop))
                .map_err(|source| Error::Io {
                    what: "starting the checkpointer".into(),
                    source,
                })?
        };
        Ok(Self {
            path: path.to_path_buf(),
            writer: Writer::new(tx),
            readers: Arc::new(Mutex::new(Vec::new())),
            stop,
            threads: Mutex::new(vec![writer, checkpointer]),
        })
    }

    /// Runs `op` in the next group-commit transaction; returns once it is durable (fsync'd).
    pub async fn write<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.writer.submit(true, op).await
    }

    /// Like [`Sqlite::write`], but when `durable` is false the commit survives a crash of
    /// rolegate and not necessarily a power loss (WAL without fsync): for state that is cheap
    /// to lose, such as a challenge still waiting for its answer. A batch holding any durable
    /// write is fsync'd whole.
    pub async fn write_with<T: Send + 'static>(
        &self,
        durable: bool,
        op: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.writer.submit(durable, op).await
    }

    /// Runs `op` on a read-only connection, off the async runtime.
    pub async fn read<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let readers = Arc::clone(&self.readers);
        let path = self.path.clone();
        let run = move || {
            let conn = match readers.lock().ok().and_then(|mut r| r.pop()) {
                Some(c) => c,
                None => open_connection(&path, true)?,
            };
            let result = op(&mut SqliteTx { conn: &conn });
            if let Ok(mut r) = readers.lock() {
                r.push(conn);
            }
            result
        };
        tokio::task::spawn_blocking(run)
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

fn write_loop(conn: Connection, rx: mpsc::Receiver<Queued>) {
    let mut batch: Vec<Queued> = Vec::with_capacity(MAX_BATCH);
    let mut full = true;
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut completions = Vec::with_capacity(batch.len());
        let need_full = batch.iter().any(|q| q.durable);
        if need_full != full {
            let pragma = if need_full {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            };
            if conn.execute_batch(pragma).is_ok() {
                full = need_full;
            }
        }
        let begun = conn.execute_batch("BEGIN IMMEDIATE");
        for Queued { job, .. } in batch.drain(..) {
            if begun.is_err() {
                let (_, done) = job(&mut FailTx("sqlite"));
                completions.push(done);
                continue;
            }
            let saved = exec_cached(&conn, "SAVEPOINT op");
            // A panicking write is undone and its caller told the writer failed; the others
            // of the batch go on.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                job(&mut SqliteTx { conn: &conn })
            }));
            let ok = matches!(ran, Ok((true, _)));
            if saved {
                if !ok {
                    exec_cached(&conn, "ROLLBACK TO op");
                }
                exec_cached(&conn, "RELEASE op");
            }
            if let Ok((_, done)) = ran {
                completions.push(done);
            }
        }
        let outcome = match &begun {
            Err(e) => Some(e.to_string()),
            Ok(()) => conn.execute_batch("COMMIT").err().map(|e| {
                let _ = conn.execute_batch("ROLLBACK");
                e.to_string()
            }),
        };
        for done in completions {
            done(outcome.as_deref());
        }
    }
}

/// Runs a parameterless statement through the statement cache (no re-parsing per write).
fn exec_cached(conn: &Connection, sql: &str) -> bool {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .is_ok()
}

fn checkpoint_loop(path: &Path, stop: &AtomicBool) {
    let Ok(conn) = open_connection(path, false) else {
        return;
    };
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        // PASSIVE never waits for the writer; it copies what it can.
        let _ = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE);");
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
}
