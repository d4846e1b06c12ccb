//! PostgreSQL's group-commit writer: one connection, one transaction a batch.
//!
//! A batch begins by locking the event chain's head row (instances take turns at it), and the
//! statements its writes said they would run first ([`Lead`]) are sent right behind the
//! `BEGIN`, back to back: the server runs them one after the other in one round trip, in the
//! order the writes are queued, and each write then finds its statement's answer waiting —
//! as if it had sent it itself, since nothing ran in between. Anything else a write runs goes
//! to the server as it asks. The batch's events are held and inserted by one statement sent
//! with the `COMMIT`.
//!
//! There is no savepoint per write (two round trips each). What each write ran is recorded
//! instead, with its answer; when a write fails — or runs a statement while leads of the writes
//! after it have already run, which would have run its statement after theirs — the batch is
//! rolled back to its start and the writes before it run again (each must get the answer it
//! got the first time, or the whole batch is undone); the rest of the batch then runs a
//! statement at a time. The head's lock, taken before the savepoint, is kept throughout.
//!
//! A batch whose writes each name the accounts whose rows alone they change ([`crate::store::Plan::accounts`]) does
//! not lock the head at its start: it locks those accounts (sorted, so that two instances
//! never wait for each other's), and its events are chained as it commits, by a function of
//! the server (`rolegate_append_events`) that holds the head's lock only from then until the
//! commit is on disk. Other instances' batches on other accounts run meanwhile. A batch with
//! any other write locks the whole store: every batch holds a shared advisory lock ([`GATE`]),
//! and such a batch an exclusive one, with the head, for its whole length.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use ::postgres::types::ToSql;
use ::postgres::{SimpleQueryMessage, Statement};

use sha2::Digest as _;

use super::{Conn, MAX_BATCH, Param, db_error, refs, rows_of};
use crate::model::error::{Error, Result};
use crate::store::{EventHead, FailTx, Lead, Queued, Row, Tx, Value};

/// The advisory lock every batch takes ("rolegate" in ASCII): shared by a batch of writes on
/// accounts, exclusive by a batch that may change anything, which so runs while no other
/// instance writes.
const GATE: i64 = 8_245_928_625_520_604_261;

/// The first key of the accounts' advisory locks ("role" in ASCII); the second is the
/// account's ([`account_lock`]).
const ACCOUNT_CLASS: i32 = 1_919_904_869;

/// The most accounts a batch locks one by one; a batch for more locks the whole store instead.
/// PostgreSQL keeps every lock in one table shared by all its connections, sized
/// `max_locks_per_transaction` × `max_connections` (6,400 by default): a few instances
/// locking hundreds each must not fill it.
const MAX_ACCOUNT_LOCKS: usize = 256;

/// An account's lock: the first four bytes of its key's SHA-256, the same on every instance
/// and release (two accounts that share one merely take turns).
fn account_lock(account_key: &str) -> i32 {
    let d = sha2::Sha256::digest(account_key.as_bytes());
    i32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// A statement's answer as the write asks for it.
enum Answer {
    Rows(Result<Vec<Row>>),
    Count(Result<u64>),
}

/// What one of the futures sent together answers.
enum Sent {
    Simple(std::result::Result<Vec<SimpleQueryMessage>, tokio_postgres::Error>),
    Answer(Option<Answer>),
}

type Sending<'a> = Pin<Box<dyn Future<Output = Sent> + 'a>>;

/// What a write's statement answered, to check that running it again answers the same.
#[derive(PartialEq)]
enum Expect {
    Count(u64),
    Rows(Vec<Row>),
}

/// What a batch ran, in order, to run again when one of its writes fails and the batch is
/// rolled back to its start: statements with their answers, and held events inserted before
/// one that reads them.
enum Redone {
    Statement(String, Vec<Value>, Expect),
    Events(Vec<Vec<Value>>),
}

/// The leads sent with the batch's `BEGIN`: each write's answer, and how many ran that no
/// write has taken yet (while any has, a statement sent now would run after them).
struct Ahead {
    answers: Vec<Option<Answer>>,
    live: usize,
}

impl Ahead {
    /// The leads are gone (rolled back): the writes left run their statements themselves.
    fn forget(&mut self) {
        self.answers.iter_mut().for_each(|a| *a = None);
        self.live = 0;
    }
}

/// The writer's transaction: the batch's event head (read under its lock when the batch
/// began, stored once before it commits), the events held for one insert, what ran, and the
/// write's lead with its answer.
struct BatchTx<'a> {
    conn: &'a mut Conn,
    head: &'a mut EventHead,
    events: &'a mut Vec<Vec<Value>>,
    /// The batch's events to chain as it commits, when it locked accounts, not the head.
    unchained: Option<&'a mut Vec<Vec<Value>>>,
    redo: &'a mut Vec<Redone>,
    ahead: &'a mut Ahead,
    lead: Option<(Lead, Answer)>,
    /// Set when a statement failed: PostgreSQL has then aborted the transaction.
    failed: bool,
    /// How often held events were inserted before a statement that reads them.
    flushes: usize,
}

impl BatchTx<'_> {
    /// The answer waiting for this statement, when it is the write's lead.
    fn take_lead(&mut self, sql: &str, params: &[Value], rows: bool) -> Option<Answer> {
        let matches = self
            .lead
            .as_ref()
            .is_some_and(|(l, _)| l.rows == rows && l.sql == sql && l.params == params);
        if !matches {
            return None;
        }
        let (_, answer) = self.lead.take()?;
        self.ahead.live = self.ahead.live.saturating_sub(1);
        Some(answer)
    }

    /// Before a statement sent now: when leads of this write or later ones have run and not
    /// been taken, the batch is rolled back to its start and what ran before runs again, so
    /// that this statement runs where it belongs.
    fn rewind_if_ahead(&mut self) -> Result<()> {
        if self.ahead.live == 0 {
            return Ok(());
        }
        self.ahead.forget();
        self.lead = None;
        if redo_from_start(self.conn, self.redo) {
            return Ok(());
        }
        self.failed = true;
        Err(Error::Store {
            what: "writing".into(),
            message: "the batch could not be run again from its start".into(),
        })
    }

    /// Inserts the held events before a statement that may read or change the log.
    fn flush_before(&mut self, sql: &str) -> Result<()> {
        if !sql.contains("event") {
            return Ok(());
        }
        if self.unchained.is_some() {
            // Its events are not in the log before the batch commits, and other instances
            // append meanwhile: a write that reads or changes the log locks the store.
            self.failed = true;
            return Err(Error::Store {
                what: "writing".into(),
                message: "a write on one account's rows touched the event log".into(),
            });
        }
        if self.events.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(self.events);
        self.flushes += 1;
        match events_insert(&rows, None).and_then(|i| i.run(self.conn)) {
            Ok(()) => {
                self.redo.push(Redone::Events(rows));
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    fn ran(&mut self, sql: &str, params: &[Value], expect: Expect) {
        self.redo
            .push(Redone::Statement(sql.to_string(), params.to_vec(), expect));
    }
}

impl Tx for BatchTx<'_> {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let answer = match self.take_lead(sql, params, false) {
            Some(Answer::Count(r)) => r,
            Some(Answer::Rows(_)) => unreachable_answer(),
            None => {
                self.rewind_if_ahead()?;
                self.flush_before(sql)?;
                self.conn.execute(sql, params)
            }
        };
        match answer {
            Ok(n) => {
                self.ran(sql, params, Expect::Count(n));
                Ok(n)
            }
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let answer = match self.take_lead(sql, params, true) {
            Some(Answer::Rows(r)) => r,
            Some(Answer::Count(_)) => unreachable_answer(),
            None => {
                self.rewind_if_ahead()?;
                self.flush_before(sql)?;
                self.conn.query(sql, params)
            }
        };
        let rows = answer.inspect_err(|_| self.failed = true)?;
        // A query that writes (a `WITH … UPDATE/INSERT`) runs again with the batch's others.
        if !sql.trim_start().starts_with("SELECT") {
            self.ran(sql, params, Expect::Rows(rows.clone()));
        }
        Ok(rows)
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn event_head(&mut self) -> Option<&mut EventHead> {
        self.unchained.is_none().then_some(&mut *self.head)
    }

    fn held_events(&mut self) -> Option<&mut Vec<Vec<Value>>> {
        self.unchained.is_none().then_some(&mut *self.events)
    }

    fn unchained_events(&mut self) -> Option<&mut Vec<Vec<Value>>> {
        self.unchained.as_deref_mut()
    }
}

/// A lead's answer of the other kind than its write asks for: `take_lead` matches the kind,
/// so this is never reached; answered as a failed statement rather than a panic.
fn unreachable_answer<T>() -> Result<T> {
    Err(Error::Store {
        what: "writing".into(),
        message: "a statement's answer was of the wrong kind".into(),
    })
}

/// The statement inserting event rows (in the order of [`crate::store::INSERT_EVENT_COLUMNS`]),
/// each column bound as one array (`UNNEST`): one round trip and one prepared statement for
/// any number. With `head`, the chain's new head is stored by the same statement.
struct EventsInsert {
    sql: String,
    columns: Vec<Box<dyn ToSql + Sync>>,
}

impl EventsInsert {
    fn run(&self, conn: &mut Conn) -> Result<()> {
        let stmt = conn.statement(&self.sql)?;
        let refs: Vec<&(dyn ToSql + Sync)> = self.columns.iter().map(|c| c.as_ref()).collect();
        conn.rt
            .block_on(conn.client.execute(&stmt, &refs))
            .map_err(|e| db_error("appending events", &e))?;
        Ok(())
    }
}

fn events_insert(rows: &[Vec<Value>], head: Option<(i64, &str)>) -> Result<EventsInsert> {
    let width = rows.first().map_or(0, Vec::len);
    let mut sql = match head {
        Some(_) => format!(
            "WITH h AS (UPDATE event_head SET seq = ${}, hash = ${} WHERE one = 1) ",
            width + 1,
            width + 2
        ),
        None => String::new(),
    };
    let mut columns = Vec::with_capacity(width + 2);
    if width == 0 {
        // Only the head: an update of its own.
        sql = "UPDATE event_head SET seq = $1, hash = $2 WHERE one = 1".into();
    } else {
        let (casts, arrays) = array_columns(rows, None)?;
        sql.push_str(&format!(
            "{} SELECT * FROM UNNEST({})",
            crate::store::INSERT_EVENT_COLUMNS,
            casts.join(", ")
        ));
        columns = arrays;
    }
    if let Some((seq, hash)) = head {
        columns.push(Box::new(seq));
        columns.push(Box::new(hash.to_string()));
    }
    Ok(EventsInsert { sql, columns })
}

/// The call that chains a batch's unchained events ([`Tx::unchained_events`]) under the
/// head's lock and inserts them, as the batch commits.
fn events_append(rows: &[Vec<Value>]) -> Result<EventsInsert> {
    let (casts, columns) = array_columns(rows, Some(&APPEND_TYPES))?;
    Ok(EventsInsert {
        sql: format!("SELECT rolegate_append_events({})", casts.join(", ")),
        columns,
    })
}

/// The types of `rolegate_append_events`' parameters, in the order of an unchained row.
const APPEND_TYPES: [&str; 11] = [
    "bigint", "text", "text", "bigint", "text", "text", "text", "text", "text", "text", "bytea",
];

/// Each column of `rows` as one array parameter (`$1::bigint[]`, `text[]` or `bytea[]`: as
/// `types` says, else by what the column holds), with the casts that name them in order.
#[allow(clippy::type_complexity)]
fn array_columns(
    rows: &[Vec<Value>],
    types: Option<&[&str]>,
) -> Result<(Vec<String>, Vec<Box<dyn ToSql + Sync>>)> {
    let width = types.map_or_else(|| rows.first().map_or(0, Vec::len), <[&str]>::len);
    let mut casts = Vec::with_capacity(width);
    let mut columns: Vec<Box<dyn ToSql + Sync>> = Vec::with_capacity(width + 2);
    for c in 0..width {
        let cells = || rows.iter().map(move |r| r.get(c).unwrap_or(&Value::Null));
        let all = |kind: &str, f: fn(&Value) -> bool| match types {
            Some(t) => t.get(c) == Some(&kind),
            None => cells().all(|v| matches!(v, Value::Null) || f(v)),
        };
        if all("bigint", |v| matches!(v, Value::Int(_))) {
            casts.push(format!("${}::bigint[]", c + 1));
            let column: Vec<Option<i64>> = cells()
                .map(|v| match v {
                    Value::Int(i) => Some(*i),
                    _ => None,
                })
                .collect();
            columns.push(Box::new(column));
        } else if all("bytea", |v| matches!(v, Value::Blob(_))) {
            casts.push(format!("${}::bytea[]", c + 1));
            let column: Vec<Option<Vec<u8>>> = cells()
                .map(|v| match v {
                    Value::Blob(b) => Some(b.clone()),
                    _ => None,
                })
                .collect();
            columns.push(Box::new(column));
        } else {
            casts.push(format!("${}::text[]", c + 1));
            let column = cells()
                .map(|v| match v {
                    Value::Null => Ok(None),
                    Value::Text(t) => Ok(Some(t.clone())),
                    other => Err(Error::Store {
                        what: "appending events".into(),
                        message: format!("column {c} holds {other:?}, not text"),
                    }),
                })
                .collect::<Result<Vec<Option<String>>>>()?;
            columns.push(Box::new(column));
        }
    }
    Ok((casts, columns))
}

/// A batch begun: the event chain's head (seq, hash) when it locked the head, and its leads'
/// answers in order.
type Begun = (Option<(i64, String)>, Vec<Option<Answer>>);

/// Begins a batch — reconnecting when the connection was lost, locking `accounts` (sorted)
/// or else the whole store and the event head (read), setting the savepoint a failed write
/// rolls the batch back to — and sends the writes' leads right behind, in their order: one
/// round trip for all. Returns the head and each lead's answer (none for a write without one,
/// or whose lead could not be prepared).
fn begin(
    conn: &mut Option<Conn>,
    config: &tokio_postgres::Config,
    durable: bool,
    accounts: Option<&[i32]>,
    leads: &[Option<Lead>],
) -> Result<Begun> {
    if conn.as_ref().is_none_or(Conn::is_closed) {
        *conn = None;
        *conn = Some(Conn::connect(config)?);
    }
    let Some(c) = conn.as_mut() else {
        return Err(Error::Store {
            what: "writing".into(),
            message: "no connection".into(),
        });
    };
    // Prepared before the transaction (a round trip only for a statement new to the
    // connection); one that cannot be is left to its write, which then hears why.
    let statements: Vec<Option<Statement>> = leads
        .iter()
        .map(|l| l.as_ref().and_then(|l| c.statement(&l.sql).ok()))
        .collect();
    if c.is_closed() {
        return Err(Error::StoreUnavailable {
            what: "beginning a transaction".into(),
            message: "the connection was lost".into(),
        });
    }
    let sync = if durable { "on" } else { "off" };
    let locks = match accounts {
        // Numbers only: nothing a write says reaches this text.
        Some(keys) => format!(
            "SELECT pg_advisory_xact_lock_shared({GATE}); SELECT rolegate_lock_accounts({ACCOUNT_CLASS}, '{{{}}}')",
            keys.iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
        // The store's lock keeps other instances' batches out until this one commits, and
        // the head row's keeps the head read here true for the whole batch.
        None => format!(
            "SELECT pg_advisory_xact_lock({GATE}); SELECT seq, hash FROM event_head WHERE one = 1 FOR UPDATE"
        ),
    };
    let begin_sql =
        format!("BEGIN; SET LOCAL synchronous_commit = {sync}; {locks}; SAVEPOINT batch");
    let params: Vec<Vec<Param<'_>>> = leads
        .iter()
        .map(|l| {
            l.as_ref()
                .map(|l| l.params.iter().map(Param).collect())
                .unwrap_or_default()
        })
        .collect();
    let bound: Vec<Vec<&(dyn ToSql + Sync)>> = params.iter().map(|p| refs(p)).collect();
    let client = &c.client;
    let mut sending: Vec<Sending<'_>> = Vec::with_capacity(leads.len() + 1);
    let begin_sql = begin_sql.as_str();
    sending.push(Box::pin(async move {
        Sent::Simple(client.simple_query(begin_sql).await)
    }));
    for ((lead, stmt), bound) in leads.iter().zip(&statements).zip(&bound) {
        let rows = lead.as_ref().is_some_and(|l| l.rows);
        sending.push(Box::pin(async move {
            let Some(stmt) = stmt else {
                return Sent::Answer(None);
            };
            Sent::Answer(Some(if rows {
                Answer::Rows(
                    client
                        .query(stmt, bound)
                        .await
                        .map_err(|e| db_error("writing", &e))
                        .and_then(|r| rows_of(&r)),
                )
            } else {
                Answer::Count(
                    client
                        .execute(stmt, bound)
                        .await
                        .map_err(|e| db_error("writing", &e)),
                )
            }))
        }));
    }
    let sending_leads = statements.iter().filter(|s| s.is_some()).count();
    let mut sent = c.all(sending).into_iter();
    crate::model::metrics::METRICS
        .store_leads
        .fetch_add(sending_leads as u64, Ordering::Relaxed);
    let begun = match sent.next() {
        Some(Sent::Simple(r)) => r,
        _ => {
            let _ = c.batch("ROLLBACK");
            return Err(Error::Store {
                what: "beginning a transaction".into(),
                message: "no answer to BEGIN".into(),
            });
        }
    };
    let answers: Vec<Option<Answer>> = sent
        .map(|s| match s {
            Sent::Answer(a) => a,
            Sent::Simple(_) => None,
        })
        .collect();
    let answer = begun.map_err(|e| {
        let _ = c.batch("ROLLBACK");
        db_error("beginning a transaction", &e)
    })?;
    if accounts.is_some() {
        return Ok((None, answers));
    }
    // The head's is the row of two columns (the locks' are of one).
    let head = answer.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) if r.len() == 2 => Some((
            r.get(0).and_then(|v| v.parse::<i64>().ok()),
            r.get(1).map(str::to_string),
        )),
        _ => None,
    });
    match head {
        Some((Some(seq), Some(hash))) => Ok((Some((seq, hash)), answers)),
        _ => {
            let _ = c.batch("ROLLBACK");
            Err(Error::Store {
                what: "beginning a transaction".into(),
                message: "the event chain has no head row".into(),
            })
        }
    }
}

/// Rolls the batch back to its start and runs what its good writes ran again, leaving the
/// database as if nothing else had run (the head's lock, taken before, is kept). False when
/// that fails, or a statement answers otherwise than it did (the caller then undoes the
/// whole batch).
fn redo_from_start(c: &mut Conn, redo: &[Redone]) -> bool {
    crate::model::metrics::METRICS
        .store_rewinds
        .fetch_add(1, Ordering::Relaxed);
    if c.batch("ROLLBACK TO SAVEPOINT batch").is_err() {
        return false;
    }
    redo.iter().all(|r| match r {
        Redone::Statement(sql, params, Expect::Count(n)) => {
            c.execute(sql, params).is_ok_and(|m| m == *n)
        }
        Redone::Statement(sql, params, Expect::Rows(rows)) => {
            c.query(sql, params).is_ok_and(|r| r == *rows)
        }
        Redone::Events(rows) => events_insert(rows, None).and_then(|i| i.run(c)).is_ok(),
    })
}

/// Stores what the batch held back (its events, the head; or its unchained events, chained
/// now) and commits, sent together.
fn finish(
    c: &mut Conn,
    head: &EventHead,
    events: &[Vec<Value>],
    unchained: &[Vec<Value>],
) -> Result<()> {
    let dirty = match (&head.head, head.dirty) {
        (Some((seq, hash)), true) => Some((*seq, hash.as_str())),
        _ => None,
    };
    let insert = match (unchained.is_empty(), events.is_empty() && dirty.is_none()) {
        (true, true) => return c.batch("COMMIT").map_err(|e| db_error("committing", &e)),
        (false, _) => events_append(unchained)?,
        (true, false) => events_insert(events, dirty)?,
    };
    let stmt = c.statement(&insert.sql)?;
    let bound: Vec<&(dyn ToSql + Sync)> = insert.columns.iter().map(|c| c.as_ref()).collect();
    let client = &c.client;
    let stmt = &stmt;
    let bound = &bound;
    let sending: Vec<Sending<'_>> = vec![
        Box::pin(async move {
            Sent::Answer(Some(Answer::Count(
                client
                    .execute(stmt, bound)
                    .await
                    .map_err(|e| db_error("appending events", &e)),
            )))
        }),
        Box::pin(async move { Sent::Simple(client.simple_query("COMMIT").await) }),
    ];
    let mut sent = c.all(sending).into_iter();
    // A failed insert left the transaction aborted, and PostgreSQL answers that COMMIT by
    // rolling back: the insert's error is the batch's.
    if let Some(Sent::Answer(Some(Answer::Count(Err(e))))) = sent.next() {
        return Err(e);
    }
    match sent.next() {
        Some(Sent::Simple(Ok(_))) => Ok(()),
        Some(Sent::Simple(Err(e))) => Err(db_error("committing", &e)),
        _ => Err(Error::Store {
            what: "committing".into(),
            message: "no answer to COMMIT".into(),
        }),
    }
}

/// The writer thread: takes what is queued, up to [`MAX_BATCH`] writes, and commits them in
/// one transaction, each write's caller hearing how its batch's commit went.
pub(super) fn write_loop(conn: Conn, config: &tokio_postgres::Config, rx: mpsc::Receiver<Queued>) {
    let mut conn = Some(conn);
    let mut batch: Vec<Queued> = Vec::with_capacity(MAX_BATCH);
    let mut events: Vec<Vec<Value>> = Vec::new();
    let mut unchained: Vec<Vec<Value>> = Vec::new();
    let mut redo: Vec<Redone> = Vec::new();
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let durable = batch.iter().any(|q| q.durable);
        let started = std::time::Instant::now();
        let leads: Vec<Option<Lead>> = batch.iter_mut().map(|q| q.lead.take()).collect();
        // The accounts to lock, when every write named its own.
        let accounts = batch
            .iter()
            .all(|q| !q.accounts.is_empty())
            .then(|| {
                let mut keys: Vec<i32> = batch
                    .iter()
                    .flat_map(|q| q.accounts.iter().map(|a| account_lock(a)))
                    .collect();
                keys.sort_unstable();
                keys.dedup();
                keys
            })
            .filter(|keys| keys.len() <= MAX_ACCOUNT_LOCKS);
        let keyed = accounts.is_some();
        let begun = begin(&mut conn, config, durable, accounts.as_deref(), &leads);
        let away = matches!(begun, Err(Error::StoreUnavailable { .. }));
        let (begun, mut head, answers) = match begun {
            Ok((h, answers)) => (
                Ok(()),
                EventHead {
                    head: h,
                    dirty: false,
                },
                answers,
            ),
            Err(e) => (Err(e), EventHead::default(), Vec::new()),
        };
        let live = answers.iter().filter(|a| a.is_some()).count();
        let mut ahead = Ahead { answers, live };
        events.clear();
        unchained.clear();
        redo.clear();
        let mut completions = Vec::with_capacity(batch.len());
        // Set when a failed write could not be undone alone: the whole batch then is (and
        // PostgreSQL answers COMMIT on an aborted transaction by rolling back quietly).
        let mut undo_all = false;
        for (i, (Queued { job, .. }, lead)) in batch.drain(..).zip(leads).enumerate() {
            let c = match (&begun, conn.as_mut()) {
                (Ok(()), Some(c)) if !undo_all => c,
                _ => {
                    let (_, done) = job(&mut FailTx("postgres", away));
                    completions.push(done);
                    continue;
                }
            };
            let waiting = ahead.answers.get_mut(i).and_then(Option::take);
            let (before, held, ran_mark) = (head.clone(), events.len(), redo.len());
            let held_unchained = unchained.len();
            let mut tx = BatchTx {
                conn: c,
                head: &mut head,
                events: &mut events,
                unchained: keyed.then_some(&mut unchained),
                redo: &mut redo,
                ahead: &mut ahead,
                lead: lead.zip(waiting),
                failed: false,
                flushes: 0,
            };
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut tx)));
            let (failed, flushed, unused) = (tx.failed, tx.flushes > 0, tx.lead.is_some());
            match ran {
                Ok((true, done)) if !failed => {
                    completions.push(done);
                    // Its lead ran, but the write did not want it: undone by running the
                    // batch again without it.
                    if unused {
                        ahead.forget();
                        if !redo_from_start(c, &redo) {
                            undo_all = true;
                        }
                    }
                }
                ran => {
                    // A write that failed (or claimed success past a failed statement, which
                    // aborted the transaction) is undone alone — unless it had inserted
                    // earlier writes' held events, which the undo would lose. Leads that ran
                    // after it are undone with it.
                    let ok = matches!(ran, Ok((true, _)));
                    head = before;
                    events.truncate(held);
                    unchained.truncate(held_unchained);
                    redo.truncate(ran_mark);
                    ahead.forget();
                    if ok || flushed || !redo_from_start(c, &redo) {
                        undo_all = true;
                    }
                    if let Ok((_, done)) = ran {
                        completions.push(done);
                    }
                }
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
            (Ok(()), Some(c)) if undo_all => {
                let _ = c.batch("ROLLBACK");
                Some("the transaction failed and was rolled back".to_string())
            }
            (Ok(()), Some(c)) => {
                let finishing = std::time::Instant::now();
                let finished = finish(c, &head, &events, &unchained).err().map(|e| {
                    let _ = c.batch("ROLLBACK");
                    e.to_string()
                });
                // What every instance takes in turn: the whole batch, or (on accounts) the
                // chaining of its events and its commit — measured from here, so a bound
                // from above (the round trip, and any wait for another instance's turn).
                let held = if keyed { finishing } else { started };
                crate::model::metrics::METRICS
                    .store_chain_seconds
                    .observe(held.elapsed());
                finished
            }
        };
        if begun.is_ok() {
            // How long the batch held its locks: the whole store's (and the chain's head),
            // or its accounts'.
            crate::model::metrics::METRICS
                .store_batch_seconds
                .observe(started.elapsed());
        }
        for done in completions {
            done(outcome.as_deref());
        }
    }
}
