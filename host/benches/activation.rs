//! Load benchmark of the whole activation path over HTTP: create a request for an MFA role,
//! answer hello's code prompt, get `active` back — every activation durable (SQLite WAL,
//! synchronous = FULL, group commit) before the API answers.
//!
//! Run: `cargo build --release --workspace && cargo bench -p rolegate --bench activation`.
//! The daemon and the load generator share this 2-core machine, as they would with oha.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: failing loudly is right

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rolegate::clock::SystemClock;
use rolegate::config::{Config, ProviderConfig};
use rolegate::plugins::Providers;
use rolegate::roles::{self, RoleSpec};
use rolegate::secrets::SealingKey;
use rolegate::service::{Service, Settings};
use rolegate::store::Store;
use rolegate::store::sqlite::Sqlite;
use rolegate::{tokens, users};
use serde_json::{Value, json};

const USERS: usize = 256;

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or_default()
}

fn main() {
    let lib = target_dir().join("librolegate_example_hello.so");
    if !lib.exists() {
        eprintln!(
            "{} is missing: run `cargo build --release --workspace` first",
            lib.display()
        );
        std::process::exit(2);
    }
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("server")
        .max_blocking_threads(16)
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (url, user_tokens) = server_rt.block_on(async {
        let store = Arc::new(Store::from(
            Sqlite::open(&dir.path().join("bench.db"), 0).unwrap(),
        ));
        let key = Arc::new(SealingKey::load_or_create(&dir.path().join("bench.key")).unwrap());
        let config = Config {
            providers: vec![ProviderConfig {
                id: "hello".into(),
                library: lib.clone(),
                sha256: None,
                unpinned: true,
                isolation: Default::default(),
                deadline_ms: None,
                settings: Default::default(),
            }],
            ..Default::default()
        };
        let providers = Arc::new(Providers::load(&config).await.unwrap());
        let settings = Settings {
            lockout_threshold: 1_000_000,
            requests_per_minute: 1_000_000,
            ..Default::default()
        };
        let service = Arc::new(Service::new(
            Arc::clone(&store),
            providers,
            Arc::new(SystemClock),
            key,
            settings,
        ));
        let accounts: Vec<String> = (0..USERS).map(|i| format!("CONTOSO\\user{i}")).collect();
        let a2 = accounts.clone();
        let tokens = store
            .write(move |tx| {
                let mut out = Vec::new();
                for a in &a2 {
                    users::create(
                        tx,
                        users::NewUser {
                            account: a.clone(),
                            ..Default::default()
                        },
                        1,
                        0,
                    )?;
                    out.push(tokens::issue(tx, a, false, "bench", 0)?);
                }
                roles::create(
                    tx,
                    &RoleSpec {
                        name: "admins".into(),
                        candidates: a2.iter().cloned().collect(),
                        approvers: Default::default(),
                        ttl_s: 3600,
                        max_ttl_s: 3600,
                        availability: None,
                        justification_required: false,
                        approval_enabled: false,
                        mfa_enabled: true,
                        providers: vec!["hello".into()],
                    },
                    0,
                )?;
                Ok(out)
            })
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = rolegate::api::Api::new(service).router();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, tokens)
    });

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("loadgen")
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| {:>3} | {:>12} | {:>14} | {:>8} | {:>8} |",
        "c", "activations", "activations/s", "p50 ms", "p99 ms"
    );
    println!("|-----|--------------|----------------|----------|----------|");
    let tokens = Arc::new(user_tokens);
    for c in [1usize, 8, 32] {
        let duration = Duration::from_secs(8);
        let (count, mut lat) = client_rt.block_on(async {
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .unwrap();
            let start = Instant::now();
            let mut tasks = Vec::new();
            for w in 0..c {
                let (client, url, tokens) = (client.clone(), url.clone(), Arc::clone(&tokens));
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut i = w;
                    while start.elapsed() < duration && lat.len() < 100_000 {
                        let token = &tokens[i % tokens.len()];
                        i += c;
                        let t = Instant::now();
                        let r: Value = client
                            .post(format!("{url}/v1/requests"))
                            .bearer_auth(token)
                            .json(&json!({"role": "admins", "justification": "bench"}))
                            .send()
                            .await
                            .unwrap()
                            .json()
                            .await
                            .unwrap();
                        let id = r["id"].as_str().expect("request id").to_string();
                        let digits = r["prompt"]["message"]
                            .as_str()
                            .unwrap()
                            .split(' ')
                            .nth(1)
                            .unwrap();
                        let code: String = digits.chars().rev().collect();
                        let done: Value = client
                            .post(format!("{url}/v1/requests/{id}/answer"))
                            .bearer_auth(token)
                            .json(&json!({"code": code}))
                            .send()
                            .await
                            .unwrap()
                            .json()
                            .await
                            .unwrap();
                        assert_eq!(done["state"], "active", "{done}");
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
            "| {c:>3} | {count:>12} | {:>14.0} | {:>8.2} | {:>8.2} |",
            count as f64 / duration.as_secs_f64(),
            p(0.5),
            p(0.99)
        );
    }
}
