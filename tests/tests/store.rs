//! The store on both backends: group commit, one winner per transition, migrations, the
//! event chain; on PostgreSQL also two instances sharing one database (HA).

use std::sync::Arc;

use rolegate::records::events::{self, NewEvent, Severity, Verification};
use rolegate::store::postgres::{Postgres, parse_config};
use rolegate::store::{Plan, Store, Value};
use rolegate_e2e::both;
use rolegate_e2e::stores::{Backend, Location};

fn role_row(i: i64) -> [Value; 5] {
    [
        format!("r{i}").into(),
        Value::Int(i + 1),
        "{}".into(),
        Value::Int(i),
        Value::Int(i),
    ]
}

/// Appends test event `i` (MFA completed, at 1000 + i ms); shared with the anchor tests.
/// How many of the spawned writes succeeded.
async fn succeeded<T>(
    tasks: Vec<tokio::task::JoinHandle<rolegate::model::error::Result<T>>>,
) -> usize {
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    ok
}

pub(crate) async fn append(store: &Store, i: i64) {
    store
        .write(move |tx| {
            events::append(
                tx,
                NewEvent::new(
                    events::MFA_COMPLETED,
                    Severity::Information,
                    "activation",
                    format!("event {i}"),
                ),
                1000 + i,
            )
        })
        .await
        .unwrap();
}

both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_all_committed_and_a_failure_stays_alone(backend) {
    let at = Location::new(backend);
    let db = Arc::new(at.open().await);
    let mut tasks = Vec::new();
    for i in 0..200i64 {
        let db = Arc::clone(&db);
        tasks.push(tokio::spawn(async move {
            db.write(move |tx| {
                if i % 50 == 7 {
                    tx.execute("INSERT INTO roles VALUES ($1, $2, $3, $4, $5)", &role_row(i))?;
                    // Fails after a write: the savepoint must undo that write alone.
                    tx.execute("INSERT INTO nowhere VALUES (1)", &[])?;
                }
                tx.execute("INSERT INTO roles VALUES ($1, $2, $3, $4, $5)", &role_row(i))
            })
            .await
        }));
    }
    let mut failed = 0;
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            assert!(e.to_string().contains("nowhere"), "{e}");
            failed += 1;
        }
    }
    assert_eq!(failed, 4);
    db.close();
    // Reopen: every acknowledged write is there, the failed ones are not.
    let db = at.open().await;
    let rows = db
        .read(|tx| tx.query("SELECT COUNT(*) FROM roles", &[]))
        .await
        .unwrap();
    assert_eq!(rows[0].int(0).unwrap(), 196);
    db.close();
}
}

both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conditional_transition_has_one_winner(backend) {
    let at = Location::new(backend);
    let db = Arc::new(at.open().await);
    db.write(|tx| {
        tx.execute(
            "INSERT INTO requests (id, account_key, role, state, justification, ttl_s, created_at, updated_at, version, wrong_answers) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 0, 0)",
            &["q1".into(), "jdoe".into(), "r".into(), "pending_approval".into(), "x".into(), Value::Int(3600), Value::Int(0)],
        )
    })
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let db = Arc::clone(&db);
        tasks.push(tokio::spawn(async move {
            db.write(|tx| {
                tx.execute(
                    "UPDATE requests SET state = $1 WHERE id = $2 AND state = $3",
                    &["active".into(), "q1".into(), "pending_approval".into()],
                )
            })
            .await
            .unwrap()
        }));
    }
    let mut winners = 0;
    for t in tasks {
        winners += t.await.unwrap();
    }
    assert_eq!(winners, 1);
    db.close();
}
}

/// Opens the store at `at` and closes it again, for a test that expects the open to fail.
async fn try_open(at: &Location) -> rolegate::model::error::Result<()> {
    match &at.postgres {
        None => {
            rolegate::store::sqlite::Sqlite::open(&at.path().join("rolegate.db"), 0).map(|_| ())
        }
        Some(conn) => {
            let config = parse_config(conn, None).unwrap();
            tokio::task::spawn_blocking(move || Postgres::open(config, 0).map(|_| ()))
                .await
                .unwrap()
        }
    }
}

/// Takes users, events and tokens back to schema 5 (both backends): no skeletons, no
/// events' account keys (schema 7), no account key beside a token's account (schema 6) —
/// for a test that puts the database back to an older version, whose migrations then run again.
fn undo_token_keys(tx: &mut dyn rolegate::store::Tx) -> rolegate::model::error::Result<()> {
    undo_identity_rule(tx)?;
    tx.execute("DROP INDEX tokens_by_account", &[])?;
    tx.execute("ALTER TABLE tokens DROP COLUMN account_key", &[])?;
    Ok(())
}

/// Takes the requests back to schema 9: the account by its key only, no index of the live
/// ones (schema 10's).
fn undo_request_accounts(tx: &mut dyn rolegate::store::Tx) -> rolegate::model::error::Result<()> {
    tx.execute("DROP INDEX requests_live", &[])?;
    tx.execute("ALTER TABLE requests DROP COLUMN account", &[])?;
    Ok(())
}

both! {
#[tokio::test]
async fn requests_stored_before_schema_10_show_their_user_as_spelled(backend) {
    let at = Location::new(backend);
    let db = at.open().await;
    db.write(|tx| {
        undo_request_accounts(tx)?;
        tx.execute(
            "INSERT INTO users (account, account_key, display_name, phone, email, source, enabled, created_at, updated_at) VALUES ('CONTOSO\\JDoe', 'contoso\\jdoe', 'Jane', NULL, NULL, NULL, 1, 1, 2)",
            &[],
        )?;
        for (id, key) in [("r1", "contoso\\jdoe"), ("r2", "contoso\\gone")] {
            tx.execute(
                "INSERT INTO requests (id, account_key, role, state, justification, ttl_s, created_at, updated_at, version, wrong_answers) VALUES ($1, $2, 'ops', 'closed', '', 60, 1, 1, 0, 0)",
                &[id.into(), key.into()],
            )?;
        }
        tx.execute("DELETE FROM schema_migrations WHERE version >= $1", &[Value::Int(10)])
    })
    .await
    .unwrap();
    db.close();
    drop(db);
    let db = at.open().await;
    let rows = db
        .read(|tx| tx.query("SELECT id, account FROM requests ORDER BY id", &[]))
        .await
        .unwrap();
    assert_eq!(rows[0].opt_text(1).unwrap().as_deref(), Some("CONTOSO\\JDoe"), "the user's spelling");
    assert_eq!(rows[1].opt_text(1).unwrap(), None, "a removed user: the key is all there is");
    db.close();
}
}

/// Takes the credentials back to schema 8: no flag for an admin (schema 9's).
fn undo_credential_flags(tx: &mut dyn rolegate::store::Tx) -> rolegate::model::error::Result<()> {
    undo_request_accounts(tx)?;
    tx.execute("ALTER TABLE credentials DROP COLUMN flagged_at", &[])?;
    tx.execute("ALTER TABLE credentials DROP COLUMN flag", &[])?;
    Ok(())
}

both! {
#[tokio::test]
async fn credentials_stored_before_schema_9_stay_usable_and_unflagged(backend) {
    let at = Location::new(backend);
    let db = at.open().await;
    db.write(|tx| {
        undo_credential_flags(tx)?;
        tx.execute(
            "INSERT INTO credentials (account_key, provider, id, label, sealed, created_at, updated_at) VALUES ('contoso\\jdoe', 'windows-hello', 'c1', 'laptop', $1, 1, 2)",
            &[vec![1u8].into()],
        )?;
        tx.execute("DELETE FROM schema_migrations WHERE version >= $1", &[Value::Int(9)])
    })
    .await
    .unwrap();
    db.close();
    drop(db);
    let db = at.open().await;
    let rows = db
        .read(|tx| {
            tx.query(
                "SELECT id, label FROM credentials WHERE account_key = 'contoso\\jdoe' AND flag IS NULL AND flagged_at IS NULL",
                &[],
            )
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].text(1).unwrap(), "laptop");
    db.close();
}
}

/// Takes users and events back to schema 6: no skeletons, no events' account keys (and no
/// shadow challenges or role history, schema 8's).
fn undo_identity_rule(tx: &mut dyn rolegate::store::Tx) -> rolegate::model::error::Result<()> {
    undo_credential_flags(tx)?;
    tx.execute("DROP TABLE shadow_challenges", &[])?;
    tx.execute("DROP TABLE role_history", &[])?;
    tx.execute("DROP TABLE account_skeletons", &[])?;
    tx.execute("ALTER TABLE events DROP COLUMN account_key", &[])?;
    Ok(())
}

both! {
#[tokio::test]
async fn roles_stored_before_migration_3_survive_it(backend) {
    let at = Location::new(backend);
    let db = at.open().await;
    // Put the database back to schema 2, with a role stored the way it was then.
    db.write(|tx| {
        undo_token_keys(tx)?;
        tx.execute("DROP TABLE roles", &[])?;
        tx.execute(
            "CREATE TABLE roles (name TEXT PRIMARY KEY, policy TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
            &[],
        )?;
        tx.execute(
            "INSERT INTO roles VALUES ($1, $2, $3, $4)",
            &[
                "Domain Admins".into(),
                r#"{"name":"Domain Admins","candidates":["CONTOSO\\jdoe"],"ttl_s":60,"max_ttl_s":120,"mfa_enabled":false}"#.into(),
                Value::Int(5),
                Value::Int(7),
            ],
        )?;
        tx.execute("DELETE FROM schema_migrations WHERE version >= $1", &[Value::Int(3)])
    })
    .await
    .unwrap();
    db.close();
    drop(db);
    let db = at.open().await;
    let role = db
        .read(|tx| rolegate::records::roles::get(tx, "Domain Admins"))
        .await
        .unwrap()
        .expect("the role survived the migration");
    assert_eq!(role.ttl_s, 60);
    assert!(role.candidates.contains("CONTOSO\\jdoe"));
    let (revision, policy) = db
        .read(|tx| rolegate::records::roles::get_if_changed(tx, "Domain Admins", 0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(revision, 7, "a migrated role's revision is its last change");
    assert!(policy.is_some());
    db.close();
}
}

both! {
#[tokio::test]
async fn a_lone_write_that_fails_leaves_nothing_behind(backend) {
    let at = Location::new(backend);
    let db = at.open().await;
    append(&db, 0).await;
    // Alone in its batch (each write is awaited before the next): it writes a row and an
    // event, then fails; neither stays, and the event chain goes on from the event before.
    let e = db
        .write(|tx| {
            tx.execute("INSERT INTO roles VALUES ($1, $2, $3, $4, $5)", &role_row(1))?;
            events::append(
                tx,
                NewEvent::new(events::MFA_COMPLETED, Severity::Information, "x", "lost"),
                2000,
            )?;
            tx.execute("INSERT INTO nowhere VALUES (1)", &[])
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nowhere"), "{e}");
    append(&db, 2).await;
    let rows = db
        .read(|tx| tx.query("SELECT COUNT(*) FROM roles", &[]))
        .await
        .unwrap();
    assert_eq!(rows[0].int(0).unwrap(), 0);
    assert_eq!(db.read(events::verify).await.unwrap(), Verification::Intact(2));
    db.close();
}
}

both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_in_a_shared_batch_undoes_only_itself(backend) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    let at = Location::new(backend);
    let db = Arc::new(at.open().await);
    // The first write holds the writer until the others are queued: they share one batch.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let running = Arc::new(AtomicBool::new(false));
    let first = {
        let (db, running) = (Arc::clone(&db), Arc::clone(&running));
        tokio::spawn(async move {
            db.write(move |tx| {
                running.store(true, Ordering::SeqCst);
                let _ = held.recv_timeout(Duration::from_secs(10));
                tx.execute("INSERT INTO roles VALUES ($1, $2, $3, $4, $5)", &role_row(0))
            })
            .await
        })
    };
    for _ in 0..500 {
        if running.load(Ordering::SeqCst) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(running.load(Ordering::SeqCst), "the first write never ran");
    // Each: a role row and an event; 2 then fails, 3 panics, after their writes.
    // The events name a provider of this test's own, so that the metrics count only them.
    let label = format!("shared-batch-{backend:?}");
    let mut tasks = Vec::new();
    for i in 1..=4i64 {
        let db = Arc::clone(&db);
        let label = label.clone();
        tasks.push(tokio::spawn(async move {
            db.write(move |tx| {
                tx.execute("INSERT INTO roles VALUES ($1, $2, $3, $4, $5)", &role_row(i))?;
                events::append(
                    tx,
                    NewEvent {
                        provider: Some(label),
                        ..NewEvent::new(events::MFA_COMPLETED, Severity::Information, "x", format!("event {i}"))
                    },
                    1000 + i,
                )?;
                if i == 2 {
                    tx.execute("INSERT INTO nowhere VALUES (1)", &[])?;
                }
                if i == 3 {
                    panic!("write 3 breaks after its writes");
                }
                Ok(i)
            })
            .await
        }));
        // In this order in the queue.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    release.send(()).unwrap();
    first.await.unwrap().unwrap();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap().map_err(|e| e.to_string()));
    }
    assert_eq!(results[0], Ok(1));
    assert!(results[1].as_ref().is_err_and(|e| e.contains("nowhere")), "{:?}", results[1]);
    assert!(results[2].is_err(), "{:?}", results[2]);
    assert_eq!(results[3], Ok(4));
    // The metrics count the committed writes' events only: not the failed one's, nor the
    // panicked one's.
    assert_eq!(rolegate::model::metrics::METRICS.events(events::MFA_COMPLETED, Some(&label)), 2);
    db.close();
    // What stays, after a restart: the good writes' rows and events, an intact chain.
    let db = at.open().await;
    let rows = db
        .read(|tx| tx.query("SELECT name FROM roles ORDER BY name", &[]))
        .await
        .unwrap();
    let names: Vec<String> = rows.iter().map(|r| r.text(0).unwrap()).collect();
    assert_eq!(names, ["r0", "r1", "r4"]);
    assert_eq!(db.read(events::verify).await.unwrap(), Verification::Intact(2));
    append(&db, 9).await;
    assert_eq!(db.read(events::verify).await.unwrap(), Verification::Intact(3));
    db.close();
}
}

both! {
#[tokio::test]
async fn rows_stored_before_migration_4_survive_it(backend) {
    let at = Location::new(backend);
    let db = at.open().await;
    for i in 0..3 {
        append(&db, i).await;
    }
    db.write(|tx| {
        tx.execute(
            "INSERT INTO users (account, account_key, display_name, phone, email, source, enabled, created_at, updated_at) VALUES ($1, $2, $3, $4, NULL, NULL, 1, 1, 2)",
            &["CONTOSO\\jdoe".into(), "contoso\\jdoe".into(), "Jane".into(), "+14255550100".into()],
        )?;
        tx.execute(
            "INSERT INTO credentials (account_key, provider, id, label, sealed, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 1, 2)",
            &["contoso\\jdoe".into(), "totp".into(), "app".into(), "phone".into(), vec![1u8, 2, 3].into()],
        )?;
        tx.execute(
            "INSERT INTO lockouts (account_key, provider, failures, locked_until) VALUES ($1, $2, 4, 99)",
            &["contoso\\jdoe".into(), "totp".into()],
        )?;
        tx.execute(
            "INSERT INTO tokens (hash, account, admin, label, created_at, expires_at) VALUES ('h', 'CONTOSO\\jdoe', 0, 'laptop', 1, NULL)",
            &[],
        )?;
        undo_token_keys(tx)?;
        if tx.backend() == "sqlite" {
            // Back to the layout of schema 3: rowid tables, events.seq not the rowid.
            for (table, pk) in [
                ("users", "account TEXT PRIMARY KEY, account_key TEXT NOT NULL UNIQUE, display_name TEXT NOT NULL, phone TEXT, email TEXT, source TEXT, enabled BIGINT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL"),
                ("credentials", "account_key TEXT NOT NULL, provider TEXT NOT NULL, id TEXT NOT NULL, label TEXT NOT NULL, sealed BLOB NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, PRIMARY KEY (account_key, provider, id)"),
                ("lockouts", "account_key TEXT NOT NULL, provider TEXT NOT NULL, failures BIGINT NOT NULL, locked_until BIGINT, PRIMARY KEY (account_key, provider)"),
                ("tokens", "hash TEXT PRIMARY KEY, account TEXT NOT NULL, admin BIGINT NOT NULL, label TEXT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT"),
                ("events", "seq BIGINT PRIMARY KEY, id BIGINT NOT NULL, severity TEXT NOT NULL, source TEXT NOT NULL, at BIGINT NOT NULL, account TEXT, role TEXT, request TEXT, provider TEXT, message TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL"),
            ] {
                tx.execute(&format!("CREATE TABLE old_{table} ({pk})"), &[])?;
                tx.execute(&format!("INSERT INTO old_{table} SELECT * FROM {table}"), &[])?;
                tx.execute(&format!("DROP TABLE {table}"), &[])?;
                tx.execute(&format!("ALTER TABLE old_{table} RENAME TO {table}"), &[])?;
            }
            tx.execute("CREATE INDEX events_by_id ON events (id, at)", &[])?;
        }
        tx.execute("DELETE FROM schema_migrations WHERE version >= $1", &[Value::Int(4)])
    })
    .await
    .unwrap();
    db.close();
    drop(db);
    let db = at.open().await;
    let user = db
        .read(|tx| rolegate::records::users::get(tx, "contoso\\JDOE"))
        .await
        .unwrap()
        .expect("the user survived the migration");
    assert_eq!((user.display_name.as_str(), user.phone.as_deref()), ("Jane", Some("+14255550100")));
    let rows = db
        .read(|tx| {
            let mut rows = tx.query("SELECT sealed FROM credentials WHERE account_key = $1", &["contoso\\jdoe".into()])?;
            rows.extend(tx.query("SELECT failures FROM lockouts WHERE account_key = $1", &["contoso\\jdoe".into()])?);
            rows.extend(tx.query("SELECT label FROM tokens WHERE hash = 'h'", &[])?);
            Ok(rows)
        })
        .await
        .unwrap();
    assert_eq!(rows[0].blob(0).unwrap(), vec![1u8, 2, 3]);
    assert_eq!(rows[1].int(0).unwrap(), 4);
    assert_eq!(rows[2].text(0).unwrap(), "laptop");
    // Migration 6 gave the token its account's key: removing the user finds it by the key.
    let revoked = db
        .write(|tx| rolegate::records::tokens::revoke_account(tx, " contoso\\JDOE "))
        .await
        .unwrap();
    assert_eq!(revoked, ["h"]);
    // The chain is intact and grows on.
    append(&db, 3).await;
    assert_eq!(db.read(events::verify).await.unwrap(), Verification::Intact(4));
    if at.postgres.is_none() {
        let layout = db
            .read(|tx| tx.query("SELECT name, sql FROM sqlite_master WHERE name IN ('users', 'credentials', 'lockouts', 'tokens', 'events')", &[]))
            .await
            .unwrap();
        assert_eq!(layout.len(), 5);
        for r in &layout {
            let (name, sql) = (r.text(0).unwrap(), r.text(1).unwrap());
            if name == "events" {
                assert!(sql.contains("seq           INTEGER PRIMARY KEY"), "{sql}");
            } else {
                assert!(sql.ends_with("WITHOUT ROWID"), "{name}: {sql}");
            }
        }
    }
    db.close();
}
}

both! {
#[tokio::test]
async fn values_round_trip_and_migrations_run_once(backend) {
    let at = Location::new(backend);
    let db = at.open().await;
    let blob: Vec<u8> = (0..=255).collect();
    let b = blob.clone();
    db.write(move |tx| {
        tx.execute(
            "INSERT INTO credentials (account_key, provider, id, label, sealed, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &["jdoe".into(), "hello".into(), "c1".into(), "Jäne’s key ✓".into(), b.into(), Value::Int(i64::MAX), Value::Int(i64::MIN)],
        )
    })
    .await
    .unwrap();
    let rows = db
        .read(|tx| {
            tx.query(
                "SELECT label, sealed, created_at, updated_at, NULL FROM credentials WHERE id = $1",
                &["c1".into()],
            )
        })
        .await
        .unwrap();
    assert_eq!(rows[0].text(0).unwrap(), "Jäne’s key ✓");
    assert_eq!(rows[0].blob(1).unwrap(), blob);
    assert_eq!(rows[0].int(2).unwrap(), i64::MAX);
    assert_eq!(rows[0].int(3).unwrap(), i64::MIN);
    assert_eq!(rows[0].opt_text(4).unwrap(), None);
    db.close();
    drop(db);
    let db = at.open().await;
    let n = db
        .read(|tx| tx.query("SELECT COUNT(*) FROM schema_migrations", &[]))
        .await
        .unwrap();
    assert_eq!(
        n[0].int(0).unwrap(),
        rolegate::store::schema::latest(),
        "opened twice, migrated once"
    );
    // A database newer than this binary is refused, untouched.
    db.write(|tx| {
        tx.execute(
            "INSERT INTO schema_migrations VALUES ($1, $2, $3)",
            &[Value::Int(99), "future".into(), Value::Int(0)],
        )
    })
    .await
    .unwrap();
    db.close();
    drop(db);
    let e = try_open(&at).await.unwrap_err();
    assert!(e.to_string().contains("schema is version 99"), "{e}");
}
}

both! {
#[tokio::test]
async fn the_event_chain_detects_an_edit_and_a_deletion(backend) {
    let at = Location::new(backend);
    let db = at.open().await;
    for i in 0..5 {
        append(&db, i).await;
    }
    assert_eq!(db.read(events::verify).await.unwrap(), Verification::Intact(5));
    db.write(|tx| {
        tx.execute(
            "UPDATE events SET message = $1 WHERE seq = $2",
            &["nothing happened".into(), Value::Int(3)],
        )
    })
    .await
    .unwrap();
    match db.read(events::verify).await.unwrap() {
        Verification::Broken { seq, .. } => assert_eq!(seq, 3),
        other => panic!("an edit went unseen: {other:?}"),
    }
    db.write(|tx| {
        tx.execute("UPDATE events SET message = $1 WHERE seq = $2", &["event 2".into(), Value::Int(3)])?;
        tx.execute("DELETE FROM events WHERE seq = $1", &[Value::Int(2)])
    })
    .await
    .unwrap();
    match db.read(events::verify).await.unwrap() {
        Verification::Broken { seq, reason } => {
            assert_eq!(seq, 2);
            assert!(reason.contains("missing"), "{reason}");
        }
        other => panic!("a deletion went unseen: {other:?}"),
    }
    db.close();
}
}

/// Issue 33: the request path's reads arriving all at once on a fresh instance open one
/// connection per pipelined slot, not one each: the connections an instance opens stay
/// bounded (the migration's, kept as the first pooled reader, the writer's and at most four
/// pipelined ones), whatever the burst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_first_reads_opens_few_connections() {
    // Counted on their way: every connection the instance opens, kept or not.
    let (proxy, through) =
        rolegate_e2e::proxy::Cuttable::in_front_of(&rolegate_e2e::pg::fresh_database());
    let config = parse_config(&through, None).unwrap();
    let db: Arc<Store> = Arc::new(
        tokio::task::spawn_blocking(move || Postgres::open(config, 0))
            .await
            .unwrap()
            .unwrap()
            .into(),
    );
    let mut tasks = Vec::new();
    for i in 0..200i64 {
        let db = Arc::clone(&db);
        tasks.push(tokio::spawn(async move {
            let rows = db
                .query("SELECT $1::bigint + 1".into(), vec![Value::Int(i)])
                .await
                .unwrap();
            assert_eq!(rows[0].int(0).unwrap(), i + 1);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let opened = proxy.forwarded();
    assert!((3..=6).contains(&opened), "{opened} connections opened");
    db.close();
}

/// Issue 33: a pipelined reading connection that the server ends (a restart, an admin's
/// `pg_terminate_backend`) costs no read: the next one opens a fresh connection, or reads
/// again on one when the read it sent was cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_on_after_the_server_ends_their_connection() {
    let at = Location::new(Backend::Postgres);
    let db = Arc::new(at.open().await);
    let one = |db: Arc<Store>, i: i64| async move {
        db.query("SELECT $1::bigint * 2".into(), vec![Value::Int(i)])
            .await
            .map(|rows| rows[0].int(0).unwrap())
    };
    for round in 0..5i64 {
        assert_eq!(one(Arc::clone(&db), round).await.unwrap(), round * 2);
        // Ended from a pooled connection: every other backend of this database (the
        // pipelined one and the writer's).
        let ended = db
            .read(|tx| {
                tx.query(
                    "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend') t",
                    &[],
                )
            })
            .await
            .unwrap();
        assert!(ended[0].int(0).unwrap() >= 1, "round {round}");
        // Reads at once, some finding the connection closed, some sent on it as it closes.
        let reads: Vec<_> = (0..8)
            .map(|i| tokio::spawn(one(Arc::clone(&db), i)))
            .collect();
        for (i, r) in reads.into_iter().enumerate() {
            assert_eq!(r.await.unwrap().unwrap(), i as i64 * 2, "round {round}");
        }
    }
    db.close();
}

/// A write planned as `plan` that appends `e` and is then held open inside its batch (the
/// batch's locks taken) until the sender returned is used or dropped; returns once it is in.
async fn hold_open(
    store: &Arc<Store>,
    plan: Plan,
    e: NewEvent,
) -> (
    std::sync::mpsc::Sender<()>,
    tokio::task::JoinHandle<rolegate::model::error::Result<()>>,
) {
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let (inside, entered) = tokio::sync::oneshot::channel::<()>();
    let store = Arc::clone(store);
    let held = tokio::spawn(async move {
        store
            .write_planned(plan, move |tx| {
                events::append(tx, e, 10)?;
                let _ = inside.send(());
                wait.recv_timeout(std::time::Duration::from_secs(30)).ok();
                Ok(())
            })
            .await
    });
    entered.await.unwrap();
    (go, held)
}

/// Issue 33: instances sharing PostgreSQL write for different accounts at once. While one
/// instance's batch on account `alice` is held open, another's batch on `bob` commits (its
/// event chained after everything committed before it); a write on `alice`, and a write that
/// may change anything, wait until alice's batch ends. Then one unbroken chain, in commit
/// order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_for_different_accounts_do_not_wait_for_each_other() {
    let at = Location::new(Backend::Postgres);
    let (a, b, c) = (
        Arc::new(at.open().await),
        Arc::new(at.open().await),
        Arc::new(at.open().await),
    );
    let on = |account: &str| Plan {
        durable: true,
        lead: None,
        accounts: vec![account.to_string()],
    };
    let event = |what: &str| {
        let mut e = NewEvent::new(events::MFA_COMPLETED, Severity::Information, "x", what);
        e.account = Some(what.split(' ').next().unwrap_or_default().to_string());
        e
    };
    append(&a, 0).await;
    // alice's batch on `a`: its event appended (held unchained), then held open.
    let (go, held) = hold_open(&a, on("alice"), event("alice first")).await;
    // bob's commits meanwhile (it would wait for alice's if batches locked the whole store);
    // the server chains what the client hashes: quotes, a line break, non-ASCII, no role.
    let e = event("bob");
    let mut odd = event("bob téléphone ✓ \"quoted\"\n\u{1f}");
    odd.provider = Some("totp".into());
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        b.write_planned(on("bob"), move |tx| {
            events::append(tx, e, 20)?;
            events::append(tx, odd, -1)
        }),
    )
    .await
    .expect("a write for bob waited for alice's batch")
    .unwrap();
    // A second write for alice, and one that may change anything, wait.
    let e = event("alice second");
    let alice_again = tokio::spawn({
        let b = Arc::clone(&b);
        async move {
            b.write_planned(on("alice"), move |tx| events::append(tx, e, 30))
                .await
        }
    });
    let e = event("admin");
    let anything = tokio::spawn({
        let c = Arc::clone(&c);
        async move { c.write(move |tx| events::append(tx, e, 40)).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !alice_again.is_finished(),
        "a second write for alice did not wait"
    );
    assert!(
        !anything.is_finished(),
        "a write on the whole store did not wait"
    );
    go.send(()).unwrap();
    held.await.unwrap().unwrap();
    alice_again.await.unwrap().unwrap();
    anything.await.unwrap().unwrap();
    assert_eq!(
        a.read(events::verify).await.unwrap(),
        Verification::Intact(6)
    );
    let order: Vec<String> = a
        .read(|tx| tx.query("SELECT message FROM events ORDER BY seq", &[]))
        .await
        .unwrap()
        .iter()
        .map(|r| r.text(0).unwrap())
        .collect();
    // bob's committed first, so they are chained first; the last two in either order.
    assert_eq!(
        order[1..4],
        [
            "bob".to_string(),
            "bob téléphone ✓ \"quoted\"\n\u{1f}".to_string(),
            "alice first".to_string()
        ],
        "{order:?}"
    );
    // alice's first batch was held open half a second, but held the chain only to commit.
    let m = &rolegate::model::metrics::METRICS;
    let (batches, chain) = (m.store_batch_seconds.sum(), m.store_chain_seconds.sum());
    assert!(
        m.store_chain_seconds.count() >= 5,
        "every batch that committed is counted"
    );
    assert!(
        batches.saturating_sub(chain) >= std::time::Duration::from_millis(400),
        "batches {batches:?}, chain held {chain:?}"
    );
    for s in [a, b, c] {
        s.close();
    }
}

/// Issue 33: a batch for more accounts than PostgreSQL's writer locks one by one (256: its
/// lock table is shared and bounded) locks the whole store instead — correct, and other
/// instances' writes for any account wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_for_hundreds_of_accounts_locks_the_whole_store() {
    let at = Location::new(Backend::Postgres);
    let (a, b) = (Arc::new(at.open().await), Arc::new(at.open().await));
    let many = Plan {
        durable: true,
        lead: None,
        accounts: (0..300).map(|i| format!("user{i}")).collect(),
    };
    let e = NewEvent::new(events::MFA_COMPLETED, Severity::Information, "x", "many");
    let (go, held) = hold_open(&a, many, e).await;
    let other = tokio::spawn({
        let b = Arc::clone(&b);
        let plan = Plan {
            durable: true,
            lead: None,
            accounts: vec!["zed".into()],
        };
        async move {
            b.write_planned(plan, |tx| {
                let e = NewEvent::new(events::MFA_COMPLETED, Severity::Information, "x", "zed");
                events::append(tx, e, 2)
            })
            .await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !other.is_finished(),
        "a write for another account did not wait"
    );
    go.send(()).unwrap();
    held.await.unwrap().unwrap();
    other.await.unwrap().unwrap();
    assert_eq!(
        a.read(events::verify).await.unwrap(),
        Verification::Intact(2)
    );
    a.close();
    b.close();
}

/// Issue 33: schema 11 changes how instances take turns (accounts' locks), which a running
/// instance of an older release would not respect: the migration refuses while one is
/// connected, says so and from where, and changes nothing; once it is gone, it runs.
#[tokio::test]
async fn the_migration_to_schema_11_waits_for_older_instances_to_stop() {
    let at = Location::new(Backend::Postgres);
    let db = at.open().await;
    append(&db, 0).await;
    db.write(|tx| tx.execute("DELETE FROM schema_migrations WHERE version >= 11", &[]))
        .await
        .unwrap();
    db.close();
    drop(db);
    let conn = at.postgres.clone().unwrap();
    // An older release's connection (its application name); blocking clients, off the runtime.
    let (e, version) = tokio::task::spawn_blocking(move || {
        let mut older = postgres::Client::connect(
            &format!("{conn} application_name=rolegate"),
            postgres::NoTls,
        )
        .unwrap();
        let e = Store::open(
            &rolegate::store::StoreConfig {
                postgres: Some(conn.clone()),
                ..Default::default()
            },
            0,
        )
        .unwrap_err()
        .to_string();
        let version = older
            .query_one("SELECT max(version) FROM schema_migrations", &[])
            .unwrap()
            .get::<_, i64>(0);
        older.close().unwrap();
        (e, version)
    })
    .await
    .unwrap();
    assert!(
        e.contains("schema 11") && e.contains("1 connection(s) of an older rolegate"),
        "{e}"
    );
    assert!(
        e.contains("stop every instance of the older release"),
        "{e}"
    );
    assert_eq!(version, 10, "nothing migrated");
    let db = at.open().await;
    append(&db, 1).await;
    assert_eq!(
        db.read(events::verify).await.unwrap(),
        Verification::Intact(2)
    );
    db.close();
}

/// Two rolegate instances on one PostgreSQL database, appending at once: one unbroken chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_event_chain() {
    let at = Location::new(Backend::Postgres);
    let a = Arc::new(at.open().await);
    let b = Arc::new(at.open().await);
    let mut tasks = Vec::new();
    for i in 0..100 {
        let s = Arc::clone(if i % 2 == 0 { &a } else { &b });
        tasks.push(tokio::spawn(async move { append(&s, i).await }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        a.read(events::verify).await.unwrap(),
        Verification::Intact(100)
    );
    assert_eq!(
        b.read(events::verify).await.unwrap(),
        Verification::Intact(100)
    );
    a.close();
    b.close();
}

/// Two instances writing at once, some writes failing after they appended: each failure is
/// undone alone (its batch rolled back to its start and the others run again, the chain's
/// head still locked), and the other instance's batches neither slip in between nor break
/// the chain; every counter the good writes moved counts each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_writes_on_two_instances_at_once_leave_one_chain_and_every_good_write() {
    let at = Location::new(Backend::Postgres);
    let a = Arc::new(at.open().await);
    let b = Arc::new(at.open().await);
    a.write(|tx| tx.execute("CREATE TABLE tally (n BIGINT NOT NULL)", &[]))
        .await
        .unwrap();
    a.write(|tx| tx.execute("INSERT INTO tally VALUES (0)", &[]))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..120i64 {
        let s = Arc::clone(if i % 2 == 0 { &a } else { &b });
        tasks.push(tokio::spawn(async move {
            s.write(move |tx| {
                // A read-modify-write: run again after a neighbour's failure, it must read
                // what it read the first time, or the tally comes out wrong.
                let n = tx.query("SELECT n FROM tally", &[])?[0].int(0)?;
                tx.execute("UPDATE tally SET n = $1", &[(n + 1).into()])?;
                events::append(
                    tx,
                    NewEvent::new(
                        events::MFA_COMPLETED,
                        Severity::Information,
                        "x",
                        format!("write {i}"),
                    ),
                    1000 + i,
                )?;
                if i % 5 == 2 {
                    tx.execute("INSERT INTO nowhere VALUES (1)", &[])?;
                }
                Ok(())
            })
            .await
        }));
    }
    let ok = succeeded(tasks).await;
    assert_eq!(ok, 96);
    let tally = a
        .read(|tx| tx.query("SELECT n FROM tally", &[]))
        .await
        .unwrap();
    assert_eq!(tally[0].int(0).unwrap(), 96, "each good write counted once");
    assert_eq!(
        a.read(events::verify).await.unwrap(),
        Verification::Intact(96)
    );
    a.close();
    b.close();
}

/// However many reads are in flight, an instance holds at most 17 connections (16 reading,
/// one writing): a burst of requests queues for a reader instead of opening a connection
/// each, which would exhaust the server's `max_connections` with a few instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_reads_opens_at_most_sixteen_reading_connections() {
    let at = Location::new(Backend::Postgres);
    let db = Arc::new(at.open().await);
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let db = Arc::clone(&db);
        tasks.push(tokio::spawn(async move {
            db.read(|tx| tx.query("SELECT 1 FROM pg_sleep(0.05)", &[]))
                .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().len(), 1);
    }
    let open = db
        .read(|tx| {
            tx.query(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()",
                &[],
            )
        })
        .await
        .unwrap();
    let open = open[0].int(0).unwrap();
    assert!((2..=17).contains(&open), "{open} connections");
    db.close();
}

#[test]
fn a_bad_or_remote_connection_string_is_refused_without_echoing_it() {
    let e = parse_config("host=db.example.com user=rolegate password=hunter2", None).unwrap_err();
    assert!(e.contains("db.example.com") && e.contains("TLS"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
    let e = parse_config("host=127.0.0.1 sslmode=bogus password=hunter2", None).unwrap_err();
    assert!(e.contains("not a valid connection string"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
    assert!(parse_config("host=/run/postgresql user=rolegate dbname=rolegate", None).is_ok());
    assert!(parse_config("postgresql://rolegate@127.0.0.1:5433/rolegate", None).is_ok());
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = parse_config(
        &format!("host=127.0.0.1 port={port} user=rolegate dbname=rolegate password=hunter2"),
        None,
    )
    .unwrap();
    let e = tokio::task::spawn_blocking(move || Postgres::open(config, 0))
        .await
        .unwrap()
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("connecting to PostgreSQL"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

both! {
#[tokio::test]
async fn the_key_check_accepts_the_same_key_and_refuses_another(backend) {
    use rolegate::store::secrets::{SealingKey, check_key};
    let at = Location::new(backend);
    let db = at.open().await;
    let key = Arc::new(SealingKey::load_or_create(&at.path().join("a.key")).unwrap());
    for _ in 0..2 {
        let k = Arc::clone(&key);
        db.write(move |tx| check_key(tx, &k)).await.unwrap();
    }
    let other = Arc::new(SealingKey::load_or_create(&at.path().join("b.key")).unwrap());
    let e = db.write(move |tx| check_key(tx, &other)).await.unwrap_err();
    assert!(e.to_string().contains("needs the same key file"), "{e}");
    db.close();
}
}

both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_a_failed_write_leave_no_gap_in_the_chain(backend) {
    let at = Location::new(backend);
    let db = Arc::new(at.open().await);
    let mut tasks = Vec::new();
    for i in 0..60i64 {
        let db = Arc::clone(&db);
        tasks.push(tokio::spawn(async move {
            db.write(move |tx| {
                events::append(
                    tx,
                    NewEvent::new(events::MFA_COMPLETED, Severity::Information, "activation", format!("event {i}")),
                    1000 + i,
                )?;
                if i % 7 == 3 {
                    // Fails after appending: the event and its place in the chain go with it.
                    tx.execute("INSERT INTO nowhere VALUES (1)", &[])?;
                }
                Ok(())
            })
            .await
        }));
    }
    let ok = succeeded(tasks).await;
    assert_eq!(ok, 51);
    assert_eq!(db.read(events::verify).await.unwrap(), Verification::Intact(51));
    db.close();
    // After a restart the chain goes on from the stored head.
    let db = at.open().await;
    append(&db, 99).await;
    assert_eq!(db.read(events::verify).await.unwrap(), Verification::Intact(52));
    db.close();
}
}

both! {
#[tokio::test]
async fn accounts_stored_before_the_identity_rule_get_their_new_keys(backend) {
    let at = Location::new(backend);
    let db = at.open().await;
    // Schema 6: keys were Unicode lower case, so `Straße` and `STRASSE` were two keys.
    db.write(|tx| {
        let mut e = NewEvent::new(events::USER_CREATED, Severity::Information, "admin", "created");
        e.account = Some("CONTOSO\\Straße".into());
        events::append(tx, e, 5)?;
        undo_identity_rule(tx)?;
        for (account, key) in [("CONTOSO\\Straße", "contoso\\straße"), ("CONTOSO\\Åsa", "contoso\\åsa")] {
            tx.execute(
                "INSERT INTO users (account, account_key, display_name, phone, email, source, enabled, created_at, updated_at) VALUES ($1, $2, $1, NULL, NULL, NULL, 1, 1, 2)",
                &[account.into(), key.into()],
            )?;
        }
        tx.execute(
            "INSERT INTO credentials (account_key, provider, id, label, sealed, created_at, updated_at) VALUES ($1, 'totp', 'app', 'phone', $2, 1, 2)",
            &["contoso\\straße".into(), vec![1u8].into()],
        )?;
        tx.execute(
            "INSERT INTO lockouts (account_key, provider, failures, locked_until) VALUES ($1, 'totp', 2, NULL)",
            &["contoso\\straße".into()],
        )?;
        tx.execute(
            "INSERT INTO tokens (hash, account, account_key, admin, label, created_at, expires_at) VALUES ('h', 'CONTOSO\\STRASSE', 'contoso\\strasse', 0, 'laptop', 1, NULL)",
            &[],
        )?;
        tx.execute("DELETE FROM schema_migrations WHERE version >= $1", &[Value::Int(7)])
    })
    .await
    .unwrap();
    db.close();
    drop(db);
    let db = at.open().await;
    let (user, creds, locks, token, events, skeleton) = db
        .read(|tx| {
            let user = rolegate::records::users::get(tx, "contoso\\STRASSE")?;
            let creds = tx.query("SELECT account_key FROM credentials", &[])?;
            let locks = tx.query("SELECT account_key, failures FROM lockouts", &[])?;
            let token = tx.query("SELECT account_key FROM tokens WHERE hash = 'h'", &[])?;
            let events = events::list(
                tx,
                &events::Filter {
                    account: Some("contoso\\STRASSE".into()),
                    ..Default::default()
                },
            )?;
            let skeleton = tx.query("SELECT skeleton FROM account_skeletons WHERE account_key = $1", &["contoso\\åsa".into()])?;
            Ok((user, creds, locks, token, events, skeleton))
        })
        .await
        .unwrap();
    assert_eq!(user.unwrap().account, "CONTOSO\\Straße", "found under another spelling");
    assert_eq!(creds[0].text(0).unwrap(), "contoso\\strasse");
    assert_eq!(locks[0].text(0).unwrap(), "contoso\\strasse");
    assert_eq!(locks[0].int(1).unwrap(), 2);
    assert_eq!(token[0].text(0).unwrap(), "contoso\\strasse");
    assert_eq!(events.len(), 1, "the event is found by the user's key");
    assert_eq!(skeleton[0].text(0).unwrap(), rolegate::model::identity::skeleton("CONTOSO\\Åsa"));
    // The chain is intact: the key is beside the hashed fields, not among them.
    assert!(matches!(db.read(events::verify).await.unwrap(), Verification::Intact(1)));
    db.close();
    drop(db);

    // Two users the rule makes one stop the upgrade, named, with nothing changed.
    let at = Location::new(backend);
    let db = at.open().await;
    db.write(|tx| {
        undo_identity_rule(tx)?;
        for (account, key) in [("jdoe", "jdoe"), ("ｊｄｏｅ", "ｊｄｏｅ")] {
            tx.execute(
                "INSERT INTO users (account, account_key, display_name, phone, email, source, enabled, created_at, updated_at) VALUES ($1, $2, $1, NULL, NULL, NULL, 1, 1, 2)",
                &[account.into(), key.into()],
            )?;
        }
        tx.execute("DELETE FROM schema_migrations WHERE version >= $1", &[Value::Int(7)])
    })
    .await
    .unwrap();
    db.close();
    drop(db);
    for _ in 0..2 {
        let e = try_open(&at).await.unwrap_err().to_string();
        assert!(e.contains("`jdoe`") && e.contains("`ｊｄｏｅ`"), "{e}");
        assert!(e.contains("nothing was changed"), "{e}");
    }
}
}

both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_reads_the_events_its_batch_appended(backend) {
    // PostgreSQL's writer holds a batch's events for one insert before it commits: a write
    // that reads the log must still see its own and its batch's earlier ones.
    let at = Location::new(backend);
    let db = Arc::new(at.open().await);
    let mut tasks = Vec::new();
    for i in 0..8i64 {
        let db = Arc::clone(&db);
        tasks.push(tokio::spawn(async move {
            db.write(move |tx| {
                events::append(
                    tx,
                    NewEvent::new(events::MFA_COMPLETED, Severity::Information, "x", format!("seen {i}")),
                    1000 + i,
                )?;
                let rows = tx.query(
                    "SELECT count(*) FROM events WHERE message = $1",
                    &[format!("seen {i}").into()],
                )?;
                rows[0].int(0)
            })
            .await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 1);
    }
    let all = db
        .read(|tx| tx.query("SELECT count(*) FROM events WHERE message LIKE 'seen %'", &[]))
        .await
        .unwrap();
    assert_eq!(all[0].int(0).unwrap(), 8);
    assert_eq!(db.read(events::verify).await.unwrap(), Verification::Intact(8));
    db.close();
}
}

both! {
/// Issue 33: the request path's reads, many at once (PostgreSQL pipelines them on shared
/// connections, spilling to more past a depth): each gets its own answer, and an error in
/// one (a statement the server refuses) stays with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_reads_at_once_each_get_their_own_answer(backend) {
    let at = Location::new(backend);
    let db = Arc::new(at.open().await);
    db.write(|tx| {
        for i in 0..100 {
            tx.execute(
                "INSERT INTO roles (name, revision, policy, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)",
                &role_row(i),
            )?;
        }
        Ok(())
    })
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for round in 0..3 {
        for i in 0..100i64 {
            let db = Arc::clone(&db);
            tasks.push(tokio::spawn(async move {
                if i % 25 == 7 {
                    // Refused by the server: its error, and nothing else's.
                    let e = db
                        .query("SELECT revision FROM no_such_table WHERE name = $1".into(), vec![format!("r{i}").into()])
                        .await
                        .unwrap_err();
                    assert!(e.to_string().contains("no_such_table"), "{e}");
                    return;
                }
                let rows = db
                    .query(
                        "SELECT revision, name FROM roles WHERE name = $1".into(),
                        vec![format!("r{i}").into()],
                    )
                    .await
                    .unwrap();
                assert_eq!(rows.len(), 1, "round {round}, role r{i}");
                assert_eq!(rows[0].int(0).unwrap(), i + 1);
                assert_eq!(rows[0].text(1).unwrap(), format!("r{i}"));
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
}
}

both! {
/// Issue 33: statements a write says it will run first (its lead) are sent by PostgreSQL's
/// writer with its batch's `BEGIN`, before the write runs. Whatever a write then does — takes
/// its lead's answer, runs more after it, runs something else, runs nothing, fails after it,
/// or has a lead that fails — the store answers as if each write ran its own statements one
/// after the other: every increment seen once, no lead a write did not run left in, one chain.
/// (SQLite has no use for leads: the same writes, the same answers.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_sent_ahead_answer_as_if_each_ran_alone(backend) {
    use rolegate::store::Lead;
    let at = Location::new(backend);
    let a = Arc::new(at.open().await);
    // On PostgreSQL a second instance on the same database, whose batches take turns.
    let b = match backend {
        Backend::Postgres => Arc::new(at.open().await),
        Backend::Sqlite => Arc::clone(&a),
    };
    a.write(|tx| {
        tx.execute(
            "CREATE TABLE tally (one BIGINT NOT NULL, n BIGINT NOT NULL CHECK (n < 1000000))",
            &[],
        )?;
        tx.execute("INSERT INTO tally VALUES (1, 0)", &[])
    })
    .await
    .unwrap();
    const ADD: &str = "UPDATE tally SET n = n + 1 WHERE one = $1 RETURNING n";
    let lead = |sql: &str, rows: bool| Lead {
        sql: sql.to_string(),
        params: vec![Value::Int(1)],
        rows,
    };
    let mut tasks = Vec::new();
    for i in 0..200i64 {
        let s = Arc::clone(if i % 2 == 0 { &a } else { &b });
        let kind = i % 8;
        let ahead = match kind {
            0 | 1 | 4 => Some(lead(ADD, true)),
            // A lead the write does not run: what it did must not stay.
            2 | 3 => Some(lead("UPDATE tally SET n = n + 1000 WHERE one = $1 RETURNING n", true)),
            // A lead that fails when it runs (the check), after it prepared.
            5 => Some(lead("UPDATE tally SET n = n + 1000000 WHERE one = $1 RETURNING n", true)),
            7 => Some(lead("UPDATE tally SET n = n + 1 WHERE one = $1", false)),
            _ => None,
        };
        let run = {
            let ahead = ahead.clone();
            move |tx: &mut dyn rolegate::store::Tx| -> rolegate::model::error::Result<Option<i64>> {
                let seen = match kind {
                    3 => None,
                    5 => {
                        let l = ahead.as_ref().map(|l| l.sql.clone()).unwrap_or_default();
                        Some(tx.query(&l, &[Value::Int(1)])?[0].int(0)?)
                    }
                    7 => {
                        let n = tx.execute("UPDATE tally SET n = n + 1 WHERE one = $1", &[Value::Int(1)])?;
                        assert_eq!(n, 1);
                        None
                    }
                    _ => Some(tx.query(ADD, &[Value::Int(1)])?[0].int(0)?),
                };
                if kind == 1 {
                    // More after the lead: it must see the lead's own effect, and no later one.
                    let now = tx.query("SELECT n FROM tally WHERE one = 1", &[])?[0].int(0)?;
                    assert_eq!(Some(now), seen, "write {i} read another write's increment");
                }
                events::append(
                    tx,
                    NewEvent::new(events::MFA_COMPLETED, Severity::Information, "x", format!("write {i}")),
                    1000 + i,
                )?;
                if kind == 4 {
                    tx.execute("INSERT INTO nowhere VALUES (1)", &[])?;
                }
                Ok(seen)
            }
        };
        // Most on one account (PostgreSQL locks it, not the store), some on the whole store:
        // the same answers either way.
        let plan = Plan {
            durable: true,
            lead: ahead,
            accounts: (i % 5 != 0).then(|| "tally".to_string()).into_iter().collect(),
        };
        tasks.push(tokio::spawn(async move { (kind, s.write_planned(plan, run).await) }));
    }
    let mut seen = Vec::new();
    let mut good = 0;
    for t in tasks {
        let (kind, r) = t.await.unwrap();
        match (kind, r) {
            (4 | 5, Err(_)) => {}
            (4 | 5, Ok(_)) => panic!("a write of kind {kind} succeeded"),
            (_, Err(e)) => panic!("a write of kind {kind} failed: {e}"),
            (_, Ok(n)) => {
                good += 1;
                seen.extend(n);
            }
        }
    }
    assert_eq!(good, 150);
    // Kinds 0, 1, 2, 6 and 7 added one each: 125, each value seen by one write only.
    let tally = a
        .read(|tx| tx.query("SELECT n FROM tally", &[]))
        .await
        .unwrap();
    assert_eq!(tally[0].int(0).unwrap(), 125, "a lead no write ran stayed, or one ran twice");
    seen.sort_unstable();
    let before = seen.len();
    seen.dedup();
    assert_eq!(seen.len(), before, "two writes saw the same increment");
    assert_eq!(seen.len(), 100);
    assert!(seen.iter().all(|n| (1..=125).contains(n)), "{seen:?}");
    assert_eq!(a.read(events::verify).await.unwrap(), Verification::Intact(150));
    // Writes that take their lead beside writes that leave theirs unrun, and nothing else to
    // roll their batches back: the unrun leads must still be undone.
    let mut tasks = Vec::new();
    for i in 0..40i64 {
        let s = Arc::clone(if i % 2 == 0 { &a } else { &b });
        let ahead = if i % 4 < 2 {
            lead(ADD, true)
        } else {
            lead("UPDATE tally SET n = n + 1000 WHERE one = $1 RETURNING n", true)
        };
        let add = i % 4 < 2;
        let plan = Plan {
            durable: true,
            lead: Some(ahead),
            accounts: (i % 3 != 0).then(|| "tally".to_string()).into_iter().collect(),
        };
        tasks.push(tokio::spawn(async move {
            s.write_planned(plan, move |tx| {
                if add {
                    tx.query(ADD, &[Value::Int(1)])?;
                }
                Ok(())
            })
            .await
        }));
    }
    assert_eq!(succeeded(tasks).await, 40);
    let tally = a
        .read(|tx| tx.query("SELECT n FROM tally", &[]))
        .await
        .unwrap();
    assert_eq!(tally[0].int(0).unwrap(), 145, "a lead no write ran stayed");
    if let Backend::Postgres = backend {
        let m = &rolegate::model::metrics::METRICS;
        assert!(m.store_leads.load(std::sync::atomic::Ordering::Relaxed) > 0);
        assert!(m.store_rewinds.load(std::sync::atomic::Ordering::Relaxed) > 0);
    }
    a.close();
    b.close();
}
}
