//! The event log's anchors: checkpoints of the chain's head signed outside the database.
//! A daemon anchors its head; a tail cut while it was down (the head row rewritten to match)
//! is said at its next start and reported by `rolegate events verify` with the anchored
//! sequence number; a malformed row is named by its sequence number, never a 500 of verify.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::append;
use rolegate::records::anchor::{AnchorFile, AnchorKey, Anchorer, check_end};
use rolegate::records::events::{self, Verification};
use rolegate::store::secrets::SealingKey;
use rolegate::store::sqlite::Sqlite;
use rolegate::store::{Store, Value};
use rolegate_e2e::both;
use rolegate_e2e::daemon::{Daemon, call, cli, serve_config};
use rolegate_e2e::stores::Location;
use rolegate_e2e::write_private;
use serde_json::{Value as Json, json};

async fn verify_with(db: &Store, file: &AnchorFile) -> events::Report {
    let anchors = file.read().unwrap();
    db.read(move |tx| events::verify_anchored(tx, &anchors))
        .await
        .unwrap()
}

fn anchor_file(dir: &Path) -> AnchorFile {
    let key = SealingKey::load_or_create(&dir.join("rolegate.key")).unwrap();
    AnchorFile::new(
        dir.join("rolegate.anchors"),
        AnchorKey::derive(&key).unwrap(),
    )
}

both! {
#[tokio::test]
async fn anchors_catch_a_cut_tail_and_a_malformed_row_is_named(backend) {
    let at = Location::new(backend);
    let db = at.open().await;
    for i in 0..8 {
        append(&db, i).await;
    }
    let file = Arc::new(anchor_file(at.path()));
    file.prepare().unwrap();
    let mut anchorer = Anchorer::new(Arc::clone(&file), None);
    let c = anchorer.tick(&db, 1_764_150_000_000).await.unwrap().unwrap();
    assert_eq!(c.seq, 8);
    let r = verify_with(&db, &file).await;
    assert_eq!(r.verification, Verification::Intact(8));
    assert_eq!(r.anchored_seq, Some(8));

    // The newest three deleted and the head row set to match the last kept event.
    db.write(|tx| {
        tx.execute("DELETE FROM events WHERE seq > $1", &[Value::Int(5)])?;
        tx.execute(
            "UPDATE event_head SET seq = 5, hash = (SELECT hash FROM events WHERE seq = 5) WHERE one = 1",
            &[],
        )
    })
    .await
    .unwrap();
    assert_eq!(db.read(events::verify).await.unwrap(), Verification::Intact(5));
    let r = verify_with(&db, &file).await;
    assert_eq!(r.anchored_seq, Some(8));
    assert_eq!(
        r.verification,
        Verification::Broken {
            seq: 6,
            reason: "the chain ends at event 5 but event 8 was anchored at 2025-11-26T09:40:00Z (the newest events were deleted)".into()
        }
    );
    let anchors = file.read().unwrap();
    let said = db.read(move |tx| check_end(tx, &anchors)).await.unwrap();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].starts_with("the chain ends at event 5 but event 8 was anchored"), "{said:?}");

    // A column holding what the chain never wrote: SQLite keeps any type in any column;
    // PostgreSQL, a NULL once the constraint is dropped.
    let edited = match backend {
        Backend::Sqlite => db.write(|tx| tx.execute("UPDATE events SET at = 'x' WHERE seq = 3", &[])).await,
        Backend::Postgres => db.write(|tx| {
            tx.execute("ALTER TABLE events ALTER COLUMN message DROP NOT NULL", &[])?;
            tx.execute("UPDATE events SET message = NULL WHERE seq = 3", &[])
        }).await,
    };
    edited.unwrap();
    let reason = match verify_with(&db, &file).await.verification {
        Verification::Broken { seq: 3, reason } => reason,
        other => panic!("{other:?}"),
    };
    let expected = match backend {
        Backend::Sqlite => "row 3 is malformed: `at` holds the text \"x\", not an integer",
        Backend::Postgres => "row 3 is malformed: `message` holds NULL, not text",
    };
    assert_eq!(reason, expected);
    let e = db
        .read(|tx| events::list(tx, &events::Filter::default()))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(expected), "{e}");
    db.close();
}
}

/// The config of a daemon with no provider: events come from admin changes.
fn config(dir: &Path) -> std::path::PathBuf {
    let cfg = dir.join("rolegate.toml");
    write_private(
        &cfg,
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[events]\nanchor_interval_ms = 200\n",
    );
    cfg
}

/// The checkpoints of the daemon's anchor file: (seq, hash) in the file's order.
fn checkpoints(dir: &Path) -> Vec<(i64, String)> {
    std::fs::read_to_string(dir.join("rolegate.anchors"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: Json = serde_json::from_str(l).unwrap();
            (
                v["seq"].as_i64().unwrap(),
                v["hash"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Runs SQL on the stopped daemon's database.
async fn edit_database(dir: &Path, sql: Vec<String>) {
    let db: Store = Sqlite::open(&dir.join("rolegate.db"), 0).unwrap().into();
    db.write(move |tx| {
        for s in &sql {
            tx.execute(s, &[])?;
        }
        Ok(())
    })
    .await
    .unwrap();
    db.close();
}

fn restart(dir: tempfile::TempDir) -> Daemon {
    let cfg = dir.path().join("rolegate.toml");
    serve_config(dir, &cfg)
}

#[tokio::test]
async fn a_tail_cut_while_the_daemon_was_down_is_reported_with_the_anchored_seq() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let d = serve_config(dir, &cfg);
    let admin = d.admin.clone();
    for name in ["alice", "bob", "carol", "dave", "erin", "frank", "grace"] {
        let (s, v) = call(
            &d,
            Some(&admin),
            "POST",
            "/v1/users",
            Some(json!({"account": name})),
        )
        .await;
        assert_eq!(s, 201, "{v}");
    }
    let (s, newest) = call(&d, Some(&admin), "GET", "/v1/events?limit=1", None).await;
    assert_eq!(s, 200, "{newest}");
    let n = newest[0]["seq"].as_i64().unwrap();
    assert!(n >= 7, "{newest}");
    // The head is anchored within a few intervals, and the checkpoint copied to the log.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !checkpoints(d.dir.path()).iter().any(|c| c.0 == n) {
        assert!(
            Instant::now() < deadline,
            "event {n} not anchored in 10 s: {:?}",
            checkpoints(d.dir.path())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = d.said("event chain anchored");
    assert!(line.contains("rolegate::anchor"), "{line}");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(d.dir.path().join("rolegate.anchors"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (ok, out) = cli(&d, &admin, &["events", "verify"], "");
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "event log intact: {n} events verified; anchored up to event {n}"
        )),
        "{out}"
    );

    let (status, _, dir) = d.terminate();
    assert!(status.success());
    // The cut: the newest events go, and the head row is set to the last kept one's hash.
    // The kept part ends before any older checkpoint of a cut event, so that the events the
    // restart appends (one: the failed check) meet no checkpoint of the old tail.
    let pinned: Vec<i64> = checkpoints(dir.path()).iter().map(|c| c.0).collect();
    let kept = (1..n - 2)
        .rev()
        .find(|k| !pinned.contains(&(k + 1)))
        .unwrap();
    edit_database(
        dir.path(),
        vec![
            format!("DELETE FROM events WHERE seq > {kept}"),
            format!("UPDATE event_head SET seq = {kept}, hash = (SELECT hash FROM events WHERE seq = {kept})"),
        ],
    )
    .await;

    // The daemon starts (an admin must be able to look), says so and records it.
    let d = restart(dir);
    let said = d.start_lines.join("\n");
    assert!(
        said.contains(&format!(
            "the chain ends at event {kept} but event {n} was anchored at"
        )),
        "{said}"
    );
    let (s, recorded) = call(&d, Some(&admin), "GET", "/v1/events?id=600", None).await;
    assert_eq!(s, 200, "{recorded}");
    assert_eq!(recorded[0]["seq"], kept + 1, "{recorded}");
    assert!(
        recorded[0]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("event {n} was anchored")),
        "{recorded}"
    );

    let (ok, out) = cli(&d, &admin, &["events", "verify"], "");
    assert!(!ok, "a cut tail passed: {out}");
    assert!(
        out.contains(&format!("event log TAMPERED at event {}: the chain ends at event {} but event {n} was anchored at", kept + 2, kept + 1)),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "(the newest events were deleted); anchored up to event {n}, signed "
        )),
        "{out}"
    );
    let (s, v) = call(&d, Some(&admin), "GET", "/v1/events/verify", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["intact"].as_bool(), v["anchored_seq"].as_i64()),
        (Some(false), Some(n)),
        "{v}"
    );
    assert_eq!(v["seq"], kept + 2, "{v}");

    // A malformed row: verify names it; the listing's error names it in the log.
    let (_, _, dir) = d.terminate();
    edit_database(
        dir.path(),
        vec!["UPDATE events SET at = 'x' WHERE seq = 3".into()],
    )
    .await;
    let d = restart(dir);
    let (s, v) = call(&d, Some(&admin), "GET", "/v1/events/verify", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["intact"], false, "{v}");
    assert_eq!(v["seq"], 3, "{v}");
    assert_eq!(
        v["reason"], "row 3 is malformed: `at` holds the text \"x\", not an integer",
        "{v}"
    );
    assert_eq!(v["anchored_seq"], n, "{v}");
    let (ok, out) = cli(&d, &admin, &["events", "verify"], "");
    assert!(
        !ok && out.contains("event log TAMPERED at event 3: row 3 is malformed"),
        "{out}"
    );
    // Listing the log fails on the row, and says which to the admin (not only the log).
    let (s, v) = call(&d, Some(&admin), "GET", "/v1/events", None).await;
    assert_eq!(s, 500, "{v}");
    assert_eq!(v["error"]["code"], "malformed_data", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("row 3 is malformed: `at` holds the text"),
        "{v}"
    );
    let (ok, out) = cli(&d, &admin, &["--json", "events", "verify"], "");
    assert!(!ok && out.contains("\"intact\": false"), "{out}");
    let line = d.said("row 3 is malformed");
    assert!(
        line.contains("`rolegate events verify` checks the whole log"),
        "{line}"
    );
}
