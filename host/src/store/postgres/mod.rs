//! The PostgreSQL backend: the same SQL, migrations and group-commit writer as SQLite, so
//! several rolegate instances can share one state (see `docs/ha-postgresql.md`).
//!
//! Each instance has one writer connection that commits whatever is queued in one
//! transaction, a few connections on which the request path's reads are pipelined, and a
//! pool of reading connections for the rest. Every batch first locks and reads the
//! event chain's head row: batches of different instances then commit one after the other
//! and can never deadlock, the hash chain stays a chain, and the head read stays true for the
//! batch (stored once, with the batch's events in one insert, before it commits). The
//! statements writes say they will run are sent together with the batch's `BEGIN` (see the
//! `writer` module). A write that fails is undone by rolling the batch back to its start and
//! running the others' statements again. A batch of writes that need not be durable commits with
//! `synchronous_commit = off`.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use ::postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use ::postgres::{NoTls, Statement};
use bytes::BytesMut;

use super::{Plan, Queued, Row, Tx, Value, Writer};
use crate::model::error::{Error, Result};

mod writer;

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;

/// The most reads of a closure ([`Postgres::read`]) an instance runs at once, and so its
/// pooled reading connections: with the writer's and the [`PIPELINED`] ones, at most 21
/// connections an instance, whatever the load (PostgreSQL's default `max_connections` is
/// 100). 8, 16 and 64 measured alike at c=32 (run to run noise); an unbounded pool opened one
/// connection per request in flight.
const MAX_READERS: usize = 16;

/// The most connections the pipelined reads of the request path share ([`Postgres::query`]).
/// Each carries many reads at once, which its server process runs back to back without
/// sleeping between them: the deeper the pipeline, the less each read costs the server.
const PIPELINED: usize = 4;

/// Reads in flight on one pipelined connection before the next one takes the overflow: one
/// connection carried all of c=32's reads here at 8–36 % more activations a second than four
/// sharing them evenly; past this depth a read would queue ~0.5 ms behind the others.
const SPILL_DEPTH: usize = 16;

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

/// The parameters as the client takes them.
fn refs<'a>(params: &'a [Param<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

/// Rows as rolegate reads them.
fn rows_of(rows: &[::postgres::Row]) -> Result<Vec<Row>> {
    rows.iter()
        .map(|r| {
            (0..r.len())
                .map(|i| column(r, i))
                .collect::<Result<Vec<_>>>()
                .map(Row)
        })
        .collect()
}

/// Keeps a prepared statement for its text; past 256 a connection starts over (statements
/// are built from a bounded set of shapes, so this only bounds a surprise).
fn remember(statements: &mut HashMap<String, Statement>, sql: &str, s: &Statement) {
    if statements.len() >= 256 {
        statements.clear();
    }
    statements.insert(sql.to_string(), s.clone());
}

/// One connection and its prepared statements: a tokio-postgres client driven by a runtime of
/// its own, on whichever thread uses it (the writer's, a blocking reader's), so that the writer
/// can send statements back to back (a blocking client waits for each answer before it sends
/// the next).
struct Conn {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    statements: HashMap<String, Statement>,
}

impl Conn {
    /// Connects, with a runtime that runs only while its user waits on it.
    fn connect(config: &tokio_postgres::Config) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Io {
                what: "starting a database connection".into(),
                source,
            })?;
        let (client, connection) = rt
            .block_on(config.connect(NoTls))
            .map_err(|e| db_error("connecting to PostgreSQL", &e))?;
        rt.spawn(async move {
            // Ends with the connection; the client then reads as closed.
            let _ = connection.await;
        });
        Ok(Self {
            rt,
            client,
            statements: HashMap::new(),
        })
    }

    fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    fn statement(&mut self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self
            .rt
            .block_on(self.client.prepare(sql))
            .map_err(|e| db_error("preparing a statement", &e))?;
        remember(&mut self.statements, sql, &s);
        Ok(s)
    }

    fn batch(&mut self, sql: &str) -> std::result::Result<(), tokio_postgres::Error> {
        self.rt.block_on(self.client.batch_execute(sql))
    }

    /// Runs `sending` to the end, sent in their order: each is first polled (and so hands its
    /// message to the connection) after the ones before it, whatever any of them answers.
    fn all<T>(&self, mut sending: Vec<Pin<Box<dyn Future<Output = T> + '_>>>) -> Vec<T> {
        let mut out: Vec<Option<T>> = sending.iter().map(|_| None).collect();
        self.rt.block_on(std::future::poll_fn(|cx| {
            let mut pending = false;
            for (f, o) in sending.iter_mut().zip(out.iter_mut()) {
                if o.is_none() {
                    match f.as_mut().poll(cx) {
                        Poll::Ready(v) => *o = Some(v),
                        Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        }));
        out.into_iter().flatten().collect()
    }
}

impl Tx for Conn {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let stmt = self.statement(sql)?;
        let params: Vec<Param<'_>> = params.iter().map(Param).collect();
        let refs = refs(&params);
        self.rt
            .block_on(self.client.execute(&stmt, &refs))
            .map_err(|e| db_error("writing", &e))
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let stmt = self.statement(sql)?;
        let params: Vec<Param<'_>> = params.iter().map(Param).collect();
        let refs = refs(&params);
        let rows = self
            .rt
            .block_on(self.client.query(&stmt, &refs))
            .map_err(|e| db_error("reading", &e))?;
        rows_of(&rows)
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
) -> std::result::Result<tokio_postgres::Config, String> {
    let mut config: tokio_postgres::Config = text
        .parse()
        .map_err(|e: ::postgres::Error| format!("not a valid connection string: {e}"))?;
    if let Some(p) = password {
        config.password(p);
    }
    for host in config.get_hosts() {
        if let tokio_postgres::config::Host::Tcp(name) = host {
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
    // Named with the schema whose locking it follows, so that a migration can tell an older
    // release's connections (`rolegate`) from this one's.
    config.application_name(APPLICATION_NAME);
    Ok(config)
}

/// The application name of this release's connections (`pg_stat_activity`).
pub const APPLICATION_NAME: &str = "rolegate (schema 11)";

/// A connection that carries many reads at once: its statements are pipelined.
struct Pipelined {
    client: tokio_postgres::Client,
    statements: Mutex<HashMap<String, Statement>>,
}

impl Pipelined {
    async fn connect(config: &tokio_postgres::Config) -> Result<Self> {
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| db_error("connecting to PostgreSQL", &e))?;
        // The connection's socket is driven by a task of the runtime that opened it; when
        // that runtime ends, the client reads as closed and is opened again.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Self {
            client,
            statements: Mutex::new(HashMap::new()),
        })
    }

    async fn statement(&self, sql: &str) -> Result<Statement> {
        if let Some(s) = self
            .statements
            .lock()
            .ok()
            .and_then(|m| m.get(sql).cloned())
        {
            return Ok(s);
        }
        let s = self
            .client
            .prepare(sql)
            .await
            .map_err(|e| db_error("preparing a statement", &e))?;
        if let Ok(mut m) = self.statements.lock() {
            remember(&mut m, sql, &s);
        }
        Ok(s)
    }

    async fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let stmt = self.statement(sql).await?;
        let params: Vec<Param<'_>> = params.iter().map(Param).collect();
        let refs = refs(&params);
        let rows = self
            .client
            .query(&stmt, &refs)
            .await
            .map_err(|e| db_error("reading", &e))?;
        rows_of(&rows)
    }
}

/// One pipelined connection (opened when first used) and the reads it carries now.
#[derive(Default)]
struct Slot {
    conn: Mutex<Option<Arc<Pipelined>>>,
    /// Held while the connection is being opened: the reads that find it missing together
    /// wait for one connection instead of each opening its own.
    opening: tokio::sync::Mutex<()>,
    /// When opening it last failed, and why: the reads that waited for that attempt fail
    /// with it rather than each waiting out a connect timeout of its own, one after another.
    failed: Mutex<Option<(std::time::Instant, bool, String)>>,
    in_flight: AtomicUsize,
}

/// Counts a read in flight on its slot until dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A PostgreSQL store.
pub struct Postgres {
    config: tokio_postgres::Config,
    writer: Writer,
    readers: Arc<Mutex<Vec<Conn>>>,
    /// The connections of [`Postgres::query`], filled in order.
    pipelined: Vec<Slot>,
    /// Bounds the reads in flight, and so the reading connections.
    reading: Arc<tokio::sync::Semaphore>,
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
    pub fn open(config: tokio_postgres::Config, now_ms: i64) -> Result<Self> {
        let mut conn = Conn::connect(&config)?;
        conn.batch("BEGIN").map_err(|e| db_error("migrating", &e))?;
        let migrated = conn
            .rt
            .block_on(
                conn.client
                    .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]),
            )
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
        let writer_conn = Conn::connect(&config)?;
        let (tx, rx) = mpsc::channel::<Queued>();
        let writer = {
            let config = config.clone();
            std::thread::Builder::new()
                .name("pg-writer".into())
                .spawn(move || writer::write_loop(writer_conn, &config, rx))
                .map_err(|source| Error::Io {
                    what: "starting the database writer".into(),
                    source,
                })?
        };
        Ok(Self {
            config,
            writer: Writer::new(tx),
            // The migration's connection is the first reader's.
            readers: Arc::new(Mutex::new(vec![conn])),
            pipelined: (0..PIPELINED).map(|_| Slot::default()).collect(),
            reading: Arc::new(tokio::sync::Semaphore::new(MAX_READERS)),
            threads: Mutex::new(vec![writer]),
        })
    }

    /// Runs `op` in the next group-commit transaction; returns once it is committed (when
    /// `plan.durable`) — a batch of only non-durable writes does not wait for the WAL flush.
    /// A write that will run `plan.lead` first has it sent with the other leads of its batch,
    /// right behind the batch's `BEGIN`; a batch whose writes each name their account locks
    /// only those accounts ([`Plan::accounts`]).
    pub async fn write_planned<T: Send + 'static>(
        &self,
        plan: Plan,
        op: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.writer.submit(plan, op).await
    }

    /// Runs `op` on a pooled connection (each statement sees what is committed), off the
    /// async runtime.
    pub async fn read<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut dyn Tx) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let permit = Arc::clone(&self.reading)
            .acquire_owned()
            .await
            .map_err(|_| Error::Store {
                what: "reading".into(),
                message: "the store is closed".into(),
            })?;
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
            drop(permit);
            result
        };
        tokio::task::spawn_blocking(run)
            .await
            .map_err(|e| Error::Store {
                what: "reading".into(),
                message: format!("the reader failed: {e}"),
            })?
    }

    /// Runs one reading statement on a connection shared with other reads in flight, which
    /// the server then runs back to back: the request path's reads, without a blocking thread
    /// or a connection of their own. Read once more on a fresh connection when the shared one
    /// was lost (the server restarted or ended it, the runtime that drove it ended).
    pub async fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        // The first connection not yet carrying its share, else the least busy.
        let slot = self
            .pipelined
            .iter()
            .find(|s| s.in_flight.load(Ordering::Relaxed) < SPILL_DEPTH)
            .or_else(|| {
                self.pipelined
                    .iter()
                    .min_by_key(|s| s.in_flight.load(Ordering::Relaxed))
            })
            .ok_or_else(|| Error::Store {
                what: "reading".into(),
                message: "no reading connection".into(),
            })?;
        slot.in_flight.fetch_add(1, Ordering::Relaxed);
        let _counted = InFlight(&slot.in_flight);
        let conn = Self::pipelined_conn(slot, &self.config).await?;
        match conn.query(sql, params).await {
            // The server ended the connection (a restart, `pg_terminate_backend`): the error
            // may come before the client reads as closed, so it is set aside now.
            Err(Error::StoreUnavailable { .. }) => {
                if let Ok(mut s) = slot.conn.lock()
                    && s.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn))
                {
                    *s = None;
                }
                Self::pipelined_conn(slot, &self.config)
                    .await?
                    .query(sql, params)
                    .await
            }
            answer => answer,
        }
    }

    /// The open connection of `slot`, opened now when it is not.
    async fn pipelined_conn(
        slot: &Slot,
        config: &tokio_postgres::Config,
    ) -> Result<Arc<Pipelined>> {
        let cell = &slot.conn;
        let open = || {
            cell.lock()
                .ok()
                .and_then(|c| c.clone())
                .filter(|c| !c.client.is_closed())
        };
        if let Some(c) = open() {
            return Ok(c);
        }
        let asked = std::time::Instant::now();
        let _opening = slot.opening.lock().await;
        // Opened by the read that held the lock before this one — or that read's attempt
        // failed while this one waited.
        if let Some(c) = open() {
            return Ok(c);
        }
        if let Some((at, away, message)) = slot.failed.lock().ok().and_then(|f| f.clone())
            && at >= asked
        {
            let what = "connecting to PostgreSQL".to_string();
            return Err(match away {
                true => Error::StoreUnavailable { what, message },
                false => Error::Store { what, message },
            });
        }
        let fresh = match Pipelined::connect(config).await {
            Ok(c) => Arc::new(c),
            Err(e) => {
                let (away, message) = match &e {
                    Error::StoreUnavailable { message, .. } => (true, message.clone()),
                    Error::Store { message, .. } => (false, message.clone()),
                    other => (false, other.to_string()),
                };
                if let Ok(mut f) = slot.failed.lock() {
                    *f = Some((std::time::Instant::now(), away, message));
                }
                return Err(e);
            }
        };
        if let Ok(mut c) = cell.lock() {
            match c.as_ref() {
                // Another read opened it meanwhile: share that one.
                Some(open) if !open.client.is_closed() => return Ok(Arc::clone(open)),
                _ => *c = Some(Arc::clone(&fresh)),
            }
        }
        Ok(fresh)
    }

    /// Finishes queued writes and closes the connections.
    pub fn close(&self) {
        self.writer.close();
        for slot in &self.pipelined {
            if let Ok(mut c) = slot.conn.lock() {
                c.take();
            }
        }
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
