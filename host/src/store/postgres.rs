//! The PostgreSQL backend: the same SQL, migrations and group-commit writer as SQLite, so
//! several rolegate instances can share one state (see `docs/ha-postgresql.md`).
//!
//! Each instance has one writer connection that commits whatever is queued in one
//! transaction, each write in its own savepoint, and a pool of reading connections. Every
//! batch first locks the event chain's head row: batches of different instances then commit
//! one after the other and can never deadlock, and the hash chain stays a chain. A batch of
//! writes that need not be durable commits with `synchronous_commit = off`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use ::postgres::{Client, NoTls, Statement};
use bytes::BytesMut;

use super::{FailTx, Queued, Row, Tx, Value, Writer};
use crate::model::error::{Error, Result};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;

/// Key of the advisory lock that keeps two instances from migrating at once.
const MIGRATION_LOCK: i64 = 0x726f_6c65_6761_7465; // "rolegate"

fn db_error(what: &str, e: &::postgres::Error) -> Error {
    // The server's own message (constraint, syntax, connection) without the connection
    // string, which may carry a password.
    let message = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    };
    if unreachable(e) {
        return Error::StoreUnavailable {
            what: what.to_string(),
            message,
        };
    }
    Error::Store {
        what: what.to_string(),
        message,
    }
}

/// Whether an error says the server cannot be reached now, rather than that a statement
/// failed: no SQLSTATE at all (the socket refused, dropped, timed out), class 08 (connection
/// exception), or the server shutting down or starting (57P01–57P03).
fn unreachable(e: &::postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        None => e.as_db_error().is_none(),
        Some(code) => {
            let c = code.code();
            c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03")
        }
    }
}

/// A [`Value`] bound to a parameter of whatever type the server inferred for it.
#[derive(Debug)]
struct Param<'a>(&'a Value);

impl ToSql for Param<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let mismatch = |what: &str| format!("{what} cannot be bound to a {ty} parameter").into();
        match self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                _ => Err(mismatch("an integer")),
            },
            Value::Text(s) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    s.as_str().to_sql(ty, out)
                }
                _ => Err(mismatch("text")),
            },
            Value::Blob(b) => match *ty {
                Type::BYTEA => b.as_slice().to_sql(ty, out),
                _ => Err(mismatch("bytes")),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn column(row: &::postgres::Row, i: usize) -> Result<Value> {
    let ty = row.columns().get(i).map(|c| c.type_().clone());
    let bad = |e: ::postgres::Error| db_error("reading a row", &e);
    Ok(match ty {
        Some(Type::INT8) => row
            .try_get::<_, Option<i64>>(i)
            .map_err(bad)?
            .map_or(Value::Null, Value::Int),
        Some(Type::INT4) => row
            .try_get::<_, Option<i32>>(i)
            .map_err(bad)?
            .map_or(Value::Null, |v| Value::Int(i64::from(v))),
        Some(Type::INT2) => row
            .try_get::<_, Option<i16>>(i)
            .map_err(bad)?
            .map_or(Value::Null, |v| Value::Int(i64::from(v))),
        Some(Type::BOOL) => row
            .try_get::<_, Option<bool>>(i)
            .map_err(bad)?
            .map_or(Value::Null, |v| Value::Int(i64::from(v))),
        Some(Type::BYTEA) => row
            .try_get::<_, Option<Vec<u8>>>(i)
            .map_err(bad)?
            .map_or(Value::Null, Value::Blob),
        Some(Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME) => row
            .try_get::<_, Option<String>>(i)
            .map_err(bad)?
            .map_or(Value::Null, Value::Text),
        Some(other) => {
            return Err(Error::Store {
                what: "reading a row".into(),
                message: format!("column {i} has type {other}, which rolegate does not read"),
            });
        }
        None => {
            return Err(Error::Store {
                what: "reading a row".into(),
                message: format!("no column {i}"),
            });
        }
    })
}

/// One connection and its prepared statements.
struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl Conn {
    fn connect(config: &::postgres::Config) -> Result<Self> {
        let client = config
            .connect(NoTls)
            .map_err(|e| db_error("connecting to PostgreSQL", &e))?;
        Ok(Self {
            client,
            statements: HashMap::new(),
        })
    }

    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self
            .client
            .prepare(sql)
            .map_err(|e| db_error("preparing a statement", &e))?;
        if self.statements.len() >= 256 {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    fn batch(&mut self, sql: &str) -> std::result::Result<(), ::postgres::Error> {
        self.client.batch_execute(sql)
    }
}

impl Tx for Conn {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let stmt = self.statement(sql)?;
        let params: Vec<Param<'_>> = params.iter().map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        self.client
            .execute(&stmt, &refs)
            .map_err(|e| db_error("writing", &e))
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let stmt = self.statement(sql)?;
        let params: Vec<Param<'_>> = params.iter().map(Param).collect();
        let refs: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let rows = self
            .client
            .query(&stmt, &refs)
            .map_err(|e| db_error("reading", &e))?;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| column(r, i))
                    .collect::<Result<Vec<_>>>()
            })
            .map(|r| r.map(Row))
            .collect()
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }
}

/// Parses a connection string (`host=… user=… dbname=…` or a `postgresql://` URL) and checks
/// that it reaches the server without crossing a network in clear text; the error names the
/// problem, never the string (it may hold a password).
pub fn parse_config(
    text: &str,
    password: Option<String>,
) -> std::result::Result<::postgres::Config, String> {
    let mut config: ::postgres::Config = text
        .parse()
        .map_err(|e: ::postgres::Error| format!("not a valid connection string: {e}"))?;
    if let Some(p) = password {
        config.password(p);
    }
    for host in config.get_hosts() {
        if let ::postgres::config::Host::Tcp(name) = host {
            let local =
                name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !local {
                return Err(format!(
                    "it names the host {name}: rolegate speaks to PostgreSQL without TLS, so it only connects through a Unix socket (host=/run/postgresql) or to a loopback address; reach a remote server through a local TLS tunnel or pooler"
                ));
            }
        }
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    config.application_name("rolegate");
    Ok(config)
}

/// A PostgreSQL store.
pub struct Postgres {
    config: ::postgres::Config,
    writer: Writer,
    readers: Arc<Mutex<Vec<Conn>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .finish_non_exhaustive()
    }
}

impl Postgres {
    /// Connects and migrates (one instance at a time, under an advisory lock).
    ///
    /// Blocking: call it before the async runtime serves, or from `spawn_blocking`.
    pub fn open(config: ::postgres::Config, now_ms: i64) -> Result<Self> {
        let mut conn = Conn::connect(&config)?;
        conn.batch("BEGIN").map_err(|e| db_error("migrating", &e))?;
        let migrated = conn
            .client
            .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .map_err(|e| db_error("migrating", &e))
            .and_then(|_| super::schema::migrate(&mut conn, now_ms));
        match migrated {
            Ok(_) => conn
                .batch("COMMIT")
                .map_err(|e| db_error("migrating", &e))?,
            Err(e) => {
                let _ = conn.batch("ROLLBACK");
                return Err(e);
            }
        }
        let (tx, rx) = mpsc::channel::<Queued>();
        let writer = {
            let config = config.clone();
            std::thread::Builder::new()
                .name("pg-writer".into())
                .spawn(move || write_loop(conn, &config, rx))
                .map_err(|source| Error::Io {
                    what: "starting the database writer".into(),
                    source,
                })?
        };
        Ok(Self {
            config,
            writer: Writer::new(tx),
            readers: Arc::new(Mutex::new(Vec::new())),
            threads: Mutex::new(vec![writer]),
        })
    }

    /// Runs `op` in the next group-commit transaction; returns once it is committed (when
    /// `durable`) — a batch of only non-durable writes does not wait for the WAL flush.
    pub async fn write_with<T: Send + 'static>(
        &self,
        durable: bool,
        op: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.writer.submit(durable, op).await
    }

    /// Runs `op` on a pooled connection (each statement sees what is committed), off the
    /// async runtime.
    pub async fn read<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let readers = Arc::clone(&self.readers);
        let config = self.config.clone();
        let run = move || {
            let mut conn = match readers.lock().ok().and_then(|mut r| r.pop()) {
                Some(c) if !c.client.is_closed() => c,
                _ => Conn::connect(&config)?,
            };
            let result = op(&mut conn);
            if !conn.client.is_closed()
                && let Ok(mut r) = readers.lock()
            {
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

    /// Finishes queued writes and closes the connections.
    pub fn close(&self) {
        self.writer.close();
        let threads: Vec<_> = self
            .threads
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
        // A client closes itself by blocking on its own runtime, which may not happen on
        // an async runtime's thread: close the pool on a thread of its own.
        let pool: Vec<Conn> = self
            .readers
            .lock()
            .map(|mut r| r.drain(..).collect())
            .unwrap_or_default();
        if !pool.is_empty() {
            let _ = std::thread::spawn(move || drop(pool)).join();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.close();
    }
}

/// Begins a batch: reconnects when the connection was lost, then locks the event head.
fn begin(conn: &mut Option<Conn>, config: &::postgres::Config, durable: bool) -> Result<()> {
    if conn.as_ref().is_none_or(|c| c.client.is_closed()) {
        *conn = None;
        *conn = Some(Conn::connect(config)?);
    }
    let Some(c) = conn.as_mut() else {
        return Err(Error::Store {
            what: "writing".into(),
            message: "no connection".into(),
        });
    };
    let sync = if durable { "on" } else { "off" };
    c.batch(&format!(
        "BEGIN; SET LOCAL synchronous_commit = {sync}; SELECT 1 FROM event_head WHERE one = 1 FOR UPDATE"
    ))
    .map_err(|e| {
        let _ = c.batch("ROLLBACK");
        db_error("beginning a transaction", &e)
    })
}

fn write_loop(conn: Conn, config: &::postgres::Config, rx: mpsc::Receiver<Queued>) {
    let mut conn = Some(conn);
    let mut batch: Vec<Queued> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let durable = batch.iter().any(|q| q.durable);
        let begun = begin(&mut conn, config, durable);
        let away = matches!(begun, Err(Error::StoreUnavailable { .. }));
        let mut completions = Vec::with_capacity(batch.len());
        // Set when a savepoint could not be taken or undone: the transaction may be aborted,
        // and PostgreSQL answers COMMIT on an aborted transaction by rolling back quietly.
        let mut broken = false;
        for Queued { job, .. } in batch.drain(..) {
            let c = match (&begun, conn.as_mut()) {
                (Ok(()), Some(c)) => c,
                _ => {
                    let (_, done) = job(&mut FailTx("postgres", away));
                    completions.push(done);
                    continue;
                }
            };
            let saved = c.batch("SAVEPOINT op").is_ok();
            broken |= !saved;
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut *c)));
            let ok = matches!(ran, Ok((true, _)));
            if saved {
                if !ok {
                    broken |= c.batch("ROLLBACK TO SAVEPOINT op").is_err();
                }
                broken |= c.batch("RELEASE SAVEPOINT op").is_err();
            }
            if let Ok((_, done)) = ran {
                completions.push(done);
            }
        }
        let outcome = match (&begun, conn.as_mut()) {
            (Err(e), _) => Some(e.to_string()),
            (Ok(()), None) => Some(
                Error::StoreUnavailable {
                    what: "writing".into(),
                    message: "the connection was lost".into(),
                }
                .to_string(),
            ),
            (Ok(()), Some(c)) if broken => {
                let _ = c.batch("ROLLBACK");
                Some("the transaction failed and was rolled back".to_string())
            }
            (Ok(()), Some(c)) => c.batch("COMMIT").err().map(|e| {
                let _ = c.batch("ROLLBACK");
                db_error("committing", &e).to_string()
            }),
        };
        for done in completions {
            done(outcome.as_deref());
        }
    }
}
