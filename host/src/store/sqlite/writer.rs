//! The one writer thread: batches of transactions committed together (group commit), the
//! triggers that name the keys each batch changed, and the watch for other processes' commits.

use super::*;

/// How often an idle writer looks for commits made by another process: the bound on how late
/// the daemon's caches see them (under load, it looks before every batch).
pub(super) const FOREIGN_POLL: Duration = Duration::from_millis(100);

/// Most writes committed in one transaction.
pub(super) const MAX_BATCH: usize = 512;

/// The size of the last batch from which on the writer counts as under load.
pub(super) const COMMIT_COMPANY: usize = 3;

/// Under load, how many writes a batch waits for (at most [`COMMIT_DELAY`]) before it commits.
pub(super) const COMMIT_SIBLINGS: usize = 8;

/// The longest a batch waits for [`COMMIT_SIBLINGS`]: short beside a request's latency, long
/// enough for the requests in flight to queue their writes. 600 µs against 300: at c=32 ~5%
/// more activations per second and a lower p99 in 8 of 10 alternating runs (fewer, fuller
/// commits); 1 ms was no better; c=8 unchanged.
pub(super) const COMMIT_DELAY: Duration = Duration::from_micros(600);

/// The keys the triggers on the writer's connection named during the current transaction.
pub(super) type Touched = Arc<Mutex<Vec<(Kind, String)>>>;

/// The tables whose rows caches keep, the key each row is cached by, and its kind's tag.
pub(super) const CACHED_TABLES: [(&str, &str, Kind); 5] = [
    ("users", "account_key", Kind::Account),
    ("credentials", "account_key", Kind::Account),
    ("lockouts", "account_key", Kind::Account),
    ("roles", "name", Kind::Role),
    ("tokens", "hash", Kind::Token),
];

/// Makes the writer's connection name every changed row of a cached table: a function that
/// records the key, called by temporary triggers (this connection's alone; the schema is
/// untouched). Every write goes through this connection, whatever code path issues it.
pub(super) fn record_changes(conn: &Connection) -> Result<Touched> {
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
pub(super) struct Changed {
    pub(super) changes: Arc<Changes>,
    pub(super) touched: Touched,
}

impl Changed {
    /// Publishes the keys the transaction changed (committed or not: a rolled back change
    /// only costs a cache miss).
    pub(super) fn publish(&self) {
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
pub(super) type Synced = Vec<Completion>;

/// The writer: commits what is queued in one transaction at a time, hands the durable
/// writes' callers to the syncer, and starts the WAL over when the checkpointer says that
/// little is left to copy.
pub(super) fn write_loop(
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
        let started = std::time::Instant::now();
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
        for Queued {
            job, durable: d, ..
        } in batch.drain(..)
        {
            if !begun || undo_all {
                let (_, done) = job(&mut FailTx("sqlite", false));
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
            (Some((seq, hash)), true) => crate::store::store_event_head(
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
        if begun {
            crate::model::metrics::METRICS
                .store_batch_seconds
                .observe(started.elapsed());
        }
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
pub(super) fn foreign_commits(conn: &Connection, seen: &mut Option<i64>) -> bool {
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
pub(super) fn redo_from_scratch(conn: &Connection, redo: &Redo) -> bool {
    if !exec_cached(conn, "ROLLBACK") || !exec_cached(conn, "BEGIN IMMEDIATE") {
        return false;
    }
    redo.iter().all(|(sql, params)| rerun(conn, sql, params))
}

/// Runs a recorded statement again, stepping through any rows it returns (a query that
/// writes, which `execute` would refuse).
fn rerun(conn: &Connection, sql: &str, params: &[Value]) -> bool {
    let Ok(mut stmt) = conn.prepare_cached(sql) else {
        return false;
    };
    let Ok(mut rows) = stmt.query(rusqlite::params_from_iter(params.iter().map(Param))) else {
        return false;
    };
    loop {
        match rows.next() {
            Ok(Some(_)) => {}
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}
