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

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use ::postgres::types::ToSql;
use ::postgres::{SimpleQueryMessage, Statement};

use super::{Conn, MAX_BATCH, Param, db_error, refs, rows_of};
use crate::model::error::{Error, Result};
use crate::store::{EventHead, FailTx, Lead, Queued, Row, Tx, Value};

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
        if self.events.is_empty() || !sql.contains("event") {
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
        Some(self.head)
    }

    fn held_events(&mut self) -> Option<&mut Vec<Vec<Value>>> {
        Some(self.events)
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
    let mut columns: Vec<Box<dyn ToSql + Sync>> = Vec::with_capacity(width + 2);
    if width == 0 {
        // Only the head: an update of its own.
        sql = "UPDATE event_head SET seq = $1, hash = $2 WHERE one = 1".into();
    } else {
        sql.push_str(&format!(
            "{} SELECT * FROM UNNEST(",
            crate::store::INSERT_EVENT_COLUMNS
        ));
        for c in 0..width {
            let cells = rows.iter().map(|r| r.get(c).unwrap_or(&Value::Null));
            let ints = rows
                .iter()
                .all(|r| matches!(r.get(c), Some(Value::Int(_) | Value::Null)));
            if c > 0 {
                sql.push_str(", ");
            }
            if ints {
                sql.push_str(&format!("${}::bigint[]", c + 1));
                let column: Vec<Option<i64>> = cells
                    .map(|v| match v {
                        Value::Int(i) => Some(*i),
                        _ => None,
                    })
                    .collect();
                columns.push(Box::new(column));
            } else {
                sql.push_str(&format!("${}::text[]", c + 1));
                let column = cells
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
        sql.push(')');
    }
    if let Some((seq, hash)) = head {
        columns.push(Box::new(seq));
        columns.push(Box::new(hash.to_string()));
    }
    Ok(EventsInsert { sql, columns })
}

/// A batch begun: the event chain's head (seq, hash), and its leads' answers in order.
type Begun = ((i64, String), Vec<Option<Answer>>);

/// Begins a batch — reconnecting when the connection was lost, locking the event head and
/// reading it, setting the savepoint a failed write rolls the batch back to — and sends the
/// writes' leads right behind, in their order: one round trip for all. Returns the head and
/// each lead's answer (none for a write without one, or whose lead could not be prepared).
fn begin(
    conn: &mut Option<Conn>,
    config: &tokio_postgres::Config,
    durable: bool,
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
    // The head row's lock keeps other instances' batches out until this one commits, so
    // the head read here stays true for the whole batch.
    let begin_sql = format!(
        "BEGIN; SET LOCAL synchronous_commit = {sync}; SELECT seq, hash FROM event_head WHERE one = 1 FOR UPDATE; SAVEPOINT batch"
    );
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
    let head = answer.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some((
            r.get(0).and_then(|v| v.parse::<i64>().ok()),
            r.get(1).map(str::to_string),
        )),
        _ => None,
    });
    match head {
        Some((Some(seq), Some(hash))) => Ok(((seq, hash), answers)),
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

/// Stores what the batch held back (its events, the head) and commits, sent together.
fn finish(c: &mut Conn, head: &EventHead, events: &[Vec<Value>]) -> Result<()> {
    let dirty = match (&head.head, head.dirty) {
        (Some((seq, hash)), true) => Some((*seq, hash.as_str())),
        _ => None,
    };
    if events.is_empty() && dirty.is_none() {
        return c.batch("COMMIT").map_err(|e| db_error("committing", &e));
    }
    let insert = events_insert(events, dirty)?;
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
        let begun = begin(&mut conn, config, durable, &leads);
        let away = matches!(begun, Err(Error::StoreUnavailable { .. }));
        let (begun, mut head, answers) = match begun {
            Ok((h, answers)) => (
                Ok(()),
                EventHead {
                    head: Some(h),
                    dirty: false,
                },
                answers,
            ),
            Err(e) => (Err(e), EventHead::default(), Vec::new()),
        };
        let live = answers.iter().filter(|a| a.is_some()).count();
        let mut ahead = Ahead { answers, live };
        events.clear();
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
            let mut tx = BatchTx {
                conn: c,
                head: &mut head,
                events: &mut events,
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
            (Ok(()), Some(c)) => finish(c, &head, &events).err().map(|e| {
                let _ = c.batch("ROLLBACK");
                e.to_string()
            }),
        };
        if begun.is_ok() {
            // How long the chain's head was held: what the instances sharing the database
            // take in turn.
            crate::model::metrics::METRICS
                .store_batch_seconds
                .observe(started.elapsed());
        }
        for done in completions {
            done(outcome.as_deref());
        }
    }
}
