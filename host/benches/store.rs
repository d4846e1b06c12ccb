//! Group-commit write benchmark: durable writes/s and latency at several concurrencies.
//!
//! Run: `cargo bench -p rolegate --bench store`. Each write is what an activation costs the
//! store at least: a request row inserted and an event row appended, committed with fsync
//! (SQLite WAL, synchronous = FULL) before the caller hears back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: failing loudly is right

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rolegate::store::Value;
use rolegate::store::sqlite::Sqlite;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "| {:>3} | {:>8} | {:>10} | {:>8} | {:>8} |",
        "c", "writes", "writes/s", "p50 ms", "p99 ms"
    );
    println!("|-----|----------|------------|----------|----------|");
    for c in [1usize, 8, 32] {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Sqlite::open(&dir.path().join("bench.db"), 0).unwrap());
        let seq = Arc::new(AtomicU64::new(0));
        let duration = Duration::from_secs(5);
        let (count, mut lat) = rt.block_on(async {
            let start = Instant::now();
            let mut tasks = Vec::new();
            for _ in 0..c {
                let db = Arc::clone(&db);
                let seq = Arc::clone(&seq);
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    while start.elapsed() < duration && lat.len() < 200_000 {
                        let n = seq.fetch_add(1, Ordering::Relaxed) as i64;
                        let t = Instant::now();
                        db.write(move |tx| {
                            tx.execute(
                                "INSERT INTO requests (id, account_key, role, state, justification, ttl_s, created_at, updated_at, version, wrong_answers) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, 0, 0)",
                                &[format!("req-{n}").into(), "jdoe".into(), "admins".into(), "active".into(), "bench".into(), Value::Int(3600), Value::Int(n)],
                            )?;
                            tx.execute(
                                "INSERT INTO events (seq, id, severity, source, at, account, role, request, message, prev_hash, hash) VALUES ($1, 103, 'information', 'bench', $2, 'jdoe', 'admins', $3, 'MFA completed', '', '')",
                                &[Value::Int(n), Value::Int(n), format!("req-{n}").into()],
                            )
                        })
                        .await
                        .unwrap();
                        lat.push(t.elapsed());
                    }
                    lat
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            (all.len(), all)
        });
        lat.sort();
        let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
        println!(
            "| {c:>3} | {count:>8} | {:>10.0} | {:>8.2} | {:>8.2} |",
            count as f64 / duration.as_secs_f64(),
            p(0.5),
            p(0.99)
        );
        db.close();
    }
}
