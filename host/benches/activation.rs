//! Load benchmark of the whole activation path over HTTP: create a request for an MFA role,
//! answer the provider's code prompt, get `active` back — every activation durable (group
//! commit, the WAL fsync'd after its commit) before the API answers.
//!
//! Run: `cargo build --release --workspace && cargo bench -p rolegate --bench activation`.
//!
//! A user holds one live activation per role: the bench role's activations last 1 s, and the
//! users are many enough (20,000 for hello, 4,096 for WebAuthn, 192,000 for TOTP) that each
//! comes round again after its last one ended; every create pays the check for a live one.
//! `ROLEGATE_BENCH_PROVIDER=totp` gates the role with the TOTP provider instead of hello:
//! 192,000 enrolled users (`ROLEGATE_BENCH_USERS`), each code computed as the user's app would,
//! each time step used once per user (replay protection refuses a second use), so the load
//! never waits for fresh codes: a user has two usable codes (this step's and the next's) per
//! 30 s, and the three levels back to back take up to ~150,000 activations in 24 s here
//! (64,000 users ran short: "waited … for fresh TOTP steps"; 192,000 cost no more CPU per
//! activation in alternating runs, 247–251 against 240–256 µs). With
//! `ROLEGATE_BENCH_POSTGRES="host=… dbname=<empty database>"` it runs on PostgreSQL; `ROLEGATE_BENCH_C="32"` picks the concurrencies.
//! The daemon and the load generator share this 2-core machine, as they would with oha; the
//! generator is a minimal keep-alive HTTP/1.1 client (one connection per worker) so that
//! its own cost stays small beside the server's.
//!
//! Each worker starts its next activation as soon as the last one is active (a closed loop):
//! the table's throughput is the most the machine does, and its latencies are those of a
//! saturated machine. `ROLEGATE_BENCH_RATE=8000` offers a fixed load instead, as wrk2 does:
//! the workers start activations on a schedule (together, that many a second), and each
//! latency counts from its scheduled start — a stall delays every activation scheduled
//! during it, and all of them count — so the p99 is the one users see at that load. (The
//! generator's timer has millisecond steps: an activation may start up to 1 ms after its
//! schedule, and that counts against it too.)
//!
//! `ROLEGATE_BENCH_PROVIDER=webauthn` gates the role with the WebAuthn provider (the
//! `passkey` profile, RP `localhost`): 4,096 users (`ROLEGATE_BENCH_USERS`) each enrol a software
//! authenticator (webauthn-authenticator-rs's SoftPasskey, P-256) through the service before
//! the load; each activation is the request, the authenticator's assertion over the bound
//! challenge signed in the load generator, and the answer. Each worker owns its users (no
//! two answers race on one credential's counter). A line under the table gives the load
//! generator's own CPU per activation (the signing included), to subtract from the process's.
//!
//! `ROLEGATE_BENCH_HOSTS=2` (with PostgreSQL) serves from that many separate processes on
//! the one database — this binary again, each a whole server — and splits the workers
//! between them (worker `w` to host `w mod n`), as a load balancer would; the CPU column
//! then counts the hosts' processes and the load generator. With PostgreSQL, a line under
//! the table gives the database's own CPU per activation (every `postgres` process on the
//! machine), to add to rolegate's.
//!
//! `ROLEGATE_BENCH_HOST_CPU=0.3` (with `ROLEGATE_BENCH_HOSTS`, as root) holds each host process
//! to that share of one core (a cgroup v1 `cpu` group of its own, `cfs_quota_us` over a 10 ms
//! period): on a machine too small to give each host cores of its own, it shows whether hosts
//! add up once their own CPU is not what binds them — what the database takes in turn.
//!
//! `ROLEGATE_BENCH_CODE_AHEAD=1` (with TOTP) sends each code with its request (`code` in
//! `POST /v1/requests`, as `rolegate request new --code` does): one round trip per
//! activation instead of two.
//!
//! `ROLEGATE_BENCH_TLS=1` serves HTTPS (a P-256 certificate made with the openssl command,
//! TLS 1.3, one handshake per kept-alive connection), to measure what the daemon's own TLS
//! costs per activation.
//!
//! `ROLEGATE_BENCH_ACCESS_LOG=1` writes the access log (`[server] access_log`) meanwhile.
//!
//! `ROLEGATE_BENCH_WAL_MB=1024` starts SQLite's WAL over at that length instead of the
//! default's (`[store] wal_mb`), to compare WAL lengths with one binary.
//!
//! Under the table, one line per level gives the tail (p95 … max, the share of activations
//! of 10 ms or more) and the host's own unsteadiness meanwhile: the share of 50-ms windows in
//! which a light probe (~25 µs of fixed arithmetic every 2 ms, ~1% of one core) ran at half
//! speed or less. On a shared virtual machine that share moves the p99 more than most changes
//! to rolegate do; compare runs with similar shares. The line also gives the share of
//! activations that ran (in part) in those windows, and the p99 of the others: rolegate's own
//! tail, apart from the host's slow stretches (which an idle machine shows too: the `noise`
//! bench).
//!
//! `ROLEGATE_BENCH_TRACE=/tmp/trace` writes, per level, one line per activation (its start, ms
//! into the level, and its latency, ms) to `/tmp/trace.c32` and the like, and the probe's pieces
//! (start and length, ms) to `/tmp/trace.c32.probe`: to lay a tail beside the host's speed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: failing loudly is right

#[path = "common/work.rs"]
mod work;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rolegate::config::{Config, ProviderConfig};
use rolegate::model::clock::SystemClock;
use rolegate::plugins::Providers;
use rolegate::records::roles::{self, RoleSpec};
use rolegate::records::{tokens, users};
use rolegate::service::{Service, Settings};
use rolegate::store::Store;
use rolegate::store::secrets::SealingKey;
use rolegate::store::sqlite::Sqlite;

/// The TOTP secret of bench user `i` (a 20-byte SHA1 key, as apps use).
fn totp_secret(i: usize) -> rolegate_provider_totp::Secret {
    use sha2::Digest as _;
    let raw = sha2::Sha256::digest(format!("rolegate-bench-{i}").as_bytes());
    rolegate_provider_totp::Secret {
        secret: base32(&raw[..20]),
        algorithm: "SHA1".into(),
        digits: 6,
        period: 30,
        last_step: None,
    }
}

/// RFC 4648 base32 without padding.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(char::from(ALPHABET[((buffer >> (bits - 5)) & 31) as usize]));
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The origin the bench's soft authenticators sign for (the provider's `origins`).
const WEBAUTHN_ORIGIN: &str = "https://localhost";

fn main() {
    let chosen = std::env::var("ROLEGATE_BENCH_PROVIDER").unwrap_or_default();
    let totp = chosen == "totp";
    let webauthn = chosen == "webauthn";
    let (provider, lib) = if totp {
        ("totp", target_dir().join("librolegate_provider_totp.so"))
    } else if webauthn {
        (
            "webauthn",
            target_dir().join("librolegate_provider_webauthn.so"),
        )
    } else {
        ("hello", target_dir().join("librolegate_example_hello.so"))
    };
    let users: usize = std::env::var("ROLEGATE_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        // One live activation per user and role: the role's activations last 1 s (no sweep
        // runs here; a request past its end no longer counts), and each user comes round
        // again later than that at any level.
        .unwrap_or(if totp {
            192_000
        } else if webauthn {
            4_096
        } else {
            20_000
        });
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
    // ROLEGATE_BENCH_HOSTS=2: the load goes to that many server processes sharing the
    // PostgreSQL database (this bench's binary again, started with ROLEGATE_BENCH_CHILD naming
    // the folder of the sealing key), split between them.
    let child = std::env::var_os("ROLEGATE_BENCH_CHILD").map(PathBuf::from);
    let hosts: usize = std::env::var("ROLEGATE_BENCH_HOSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if hosts > 0 && std::env::var("ROLEGATE_BENCH_POSTGRES").is_err() {
        eprintln!("ROLEGATE_BENCH_HOSTS needs ROLEGATE_BENCH_POSTGRES: hosts share one database");
        std::process::exit(2);
    }
    let key_dir = child.clone().unwrap_or_else(|| dir.path().to_path_buf());
    let tls_files = std::env::var("ROLEGATE_BENCH_TLS")
        .is_ok_and(|v| v == "1")
        .then(|| test_certificate(dir.path()));
    let (urls, user_tokens, authenticators, mut started_hosts) = server_rt.block_on(async {
        // ROLEGATE_BENCH_POSTGRES names an empty PostgreSQL database to run on instead.
        let store = Arc::new(match std::env::var("ROLEGATE_BENCH_POSTGRES") {
            Ok(conn) if !conn.is_empty() => {
                let config = rolegate::store::postgres::parse_config(&conn, None).unwrap();
                tokio::task::spawn_blocking(move || {
                    rolegate::store::postgres::Postgres::open(config, 0)
                })
                .await
                .unwrap()
                .unwrap()
                .into()
            }
            _ => {
                let wal_mb = std::env::var("ROLEGATE_BENCH_WAL_MB")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(rolegate::config::DEFAULT_WAL_MB);
                Store::from(Sqlite::open_sized(&dir.path().join("bench.db"), 0, wal_mb).unwrap())
            }
        });
        if child.is_none() {
            println!("store: {}", store.backend());
        }
        let key = Arc::new(SealingKey::load_or_create(&key_dir.join("bench.key")).unwrap());
        if child.is_none() {
            println!("provider: {provider}, users: {users}");
        }
        let sealing = Arc::clone(&key);
        let config = Config {
            providers: vec![ProviderConfig {
                sunset: None,
                id: provider.into(),
                library: lib.clone(),
                sha256: None,
                unpinned: true,
                isolation: Default::default(),
                deadline_ms: None,
                settings: if webauthn {
                    serde_json::from_value(serde_json::json!({
                        "profile": "passkey", "rp_id": "localhost", "origins": [WEBAUTHN_ORIGIN]
                    }))
                    .unwrap()
                } else {
                    Default::default()
                },
            }],
            ..Default::default()
        };
        let providers = Arc::new(
            Providers::load(&config.plugins, &config.providers)
                .await
                .unwrap(),
        );
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
        let accounts: Vec<String> = (0..users).map(|i| format!("CONTOSO\\user{i}")).collect();
        // A host started by the bench serves what the bench enrolled.
        let tokens = if child.is_some() {
            Vec::new()
        } else {
            enrol(&store, &sealing, &accounts, totp, provider).await
        };
        // WebAuthn: each user enrols a software authenticator through the service.
        let mut authenticators = Vec::new();
        if webauthn && child.is_none() {
            use webauthn_authenticator_rs::WebauthnAuthenticator as _;
            let origin = webauthn_authenticator_rs::prelude::Url::parse(WEBAUTHN_ORIGIN).unwrap();
            for a in &accounts {
                let mut soft = webauthn_authenticator_rs::softpasskey::SoftPasskey::new(true);
                let v = service.enroll_start(a, provider).await.unwrap();
                let options = v.prompt.unwrap()["options"].clone();
                let reg = soft
                    .do_registration(origin.clone(), serde_json::from_value(options).unwrap())
                    .unwrap();
                let done = service
                    .enroll_continue(
                        a,
                        provider,
                        v.state.as_deref().unwrap(),
                        rolegate_sdk::Input::Json {
                            value: serde_json::json!({"credential": reg, "label": "bench"}),
                        },
                    )
                    .await
                    .unwrap();
                assert!(done.done, "{:?}", done.message);
                authenticators.push(std::sync::Mutex::new(soft));
            }
        }
        if hosts > 0 {
            // The hosts serve; this process only makes the load.
            store.close();
            let (started, urls) = Hosts::start(hosts, dir.path());
            println!("hosts: {hosts} processes on one database, the load split between them");
            return (urls, tokens, authenticators, Some(started));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = rolegate::http::api::Api::new(service)
            .router()
            .layer(axum::middleware::from_fn(timed));
        let tls = tls_files.as_ref().map(|(cert, key, _)| {
            Arc::new(
                rolegate::http::tls::ServerTls::load(cert, key, None, jiff::Timestamp::now())
                    .unwrap(),
            )
        });
        // The daemon's own server (its limits, TCP_NODELAY, the body deadline), never stopped.
        tokio::spawn(rolegate::http::server::serve(
            listener,
            app,
            rolegate::http::server::Serving {
                // Every worker connects from 127.0.0.1: any concurrency asked for is served.
                limits: rolegate::http::server::Limits {
                    max_connections_per_client: rolegate::config::DEFAULT_MAX_CONNECTIONS,
                    ..Default::default()
                },
                tls,
                access_log: std::env::var("ROLEGATE_BENCH_ACCESS_LOG")
                    .is_ok_and(|v| v == "1")
                    .then(|| {
                        println!("(access log: a line per request)");
                        rolegate::http::access::AccessLog::open(&dir.path().join("access.jsonl"))
                            .unwrap()
                    }),
            },
            std::future::pending(),
        ));
        if child.is_some() {
            // A host of ROLEGATE_BENCH_HOSTS: says where it serves, and serves until the
            // bench closes its standard input; a line in says its writer's counts so far.
            use std::io::{BufRead as _, Write as _};
            println!("{url}");
            let _ = std::io::stdout().flush();
            let _ = tokio::task::spawn_blocking(|| {
                let m = &rolegate::model::metrics::METRICS;
                for _ in std::io::stdin().lock().lines() {
                    println!(
                        "{} {} {} {}",
                        m.store_batch_seconds.count(),
                        m.store_batch_seconds.sum().as_secs_f64(),
                        m.store_chain_seconds.sum().as_secs_f64(),
                        m.store_write_seconds.count()
                    );
                    let _ = std::io::stdout().flush();
                }
            })
            .await;
            std::process::exit(0);
        }
        (vec![url], tokens, authenticators, None)
    });
    let authenticators = Arc::new(authenticators);

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("loadgen")
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| {:>3} | {:>12} | {:>14} | {:>8} | {:>8} | {:>15} | {:>15} | {:>12} | {:>13} |",
        "c",
        "activations",
        "activations/s",
        "p50 ms",
        "p99 ms",
        "server p50 ms",
        "server p99 ms",
        "CPU µs/act",
        "writer µs/act"
    );
    println!(
        "|-----|--------------|----------------|----------|----------|-----------------|-----------------|--------------|---------------|"
    );
    println!(
        "(p50/p99: one activation, both requests, at the client; server: one request inside the server; CPU: the whole process's CPU time per activation, load generator included — steadier than activations/s when other tenants share the machine; writer: the one database writer thread's CPU time per activation, what bounds SQLite's throughput)"
    );
    let tokens = Arc::new(user_tokens);
    // TOTP: per user, the last time step used + 1 (0: none yet).
    let used: Arc<Vec<AtomicU64>> =
        Arc::new((0..tokens.len()).map(|_| AtomicU64::new(0)).collect());
    let addrs: Arc<Vec<String>> = Arc::new(
        urls.iter()
            .map(|u| u.trim_start_matches("http://").to_string())
            .collect(),
    );
    let tls_client = tls_files.as_ref().map(|(_, _, ca)| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    });
    if tls_client.is_some() {
        println!("(HTTPS: the daemon's own TLS, one handshake per worker's connection)");
    }
    // TOTP: the code sent with the request (`code` in `POST /v1/requests`), one round trip.
    let ahead = totp && std::env::var("ROLEGATE_BENCH_CODE_AHEAD").is_ok_and(|v| v == "1");
    if ahead {
        println!("(TOTP codes sent with the request: one round trip per activation)");
    }
    // ROLEGATE_BENCH_C="32" runs only the listed concurrencies (for a profile of one).
    let levels: Vec<usize> = std::env::var("ROLEGATE_BENCH_C")
        .ok()
        .map(|v| v.split(',').filter_map(|c| c.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![1, 8, 32]);
    // A fixed offered load (activations per second, across the workers) instead of a closed
    // loop.
    let rate: Option<f64> = std::env::var("ROLEGATE_BENCH_RATE")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|r: &f64| *r > 0.0);
    if let Some(rate) = rate {
        println!(
            "(paced: {rate:.0} activations/s offered across the workers; each latency from the activation's scheduled start)"
        );
    }
    let probe_work = Probe::calibrate();
    // The tail of each level, printed under the table: where the p99 sits in it.
    let mut tails = Vec::new();
    for c in levels {
        let duration = Duration::from_secs(8);
        let _ = server_quantiles();
        let probe = Probe::start(probe_work);
        let hosts_before = started_hosts
            .as_ref()
            .map_or((0.0, 0.0), Hosts::cpu_seconds);
        let cpu_before = process_cpu_seconds() + hosts_before.0;
        let writer_before = thread_cpu_seconds(WRITER_THREAD) + hosts_before.1;
        let postgres_before = postgres_cpu_seconds();
        let loadgen_before = thread_cpu_seconds(LOADGEN_THREAD);
        let store = &rolegate::model::metrics::METRICS;
        // The writers' batches, writes and lock times: this process's, or the hosts' summed.
        let writers = |hosts: &mut Option<Hosts>| match hosts.as_mut() {
            Some(h) => h.writers(),
            None => (
                store.store_batch_seconds.count(),
                store.store_batch_seconds.sum().as_secs_f64(),
                store.store_chain_seconds.sum().as_secs_f64(),
                store.store_write_seconds.count(),
            ),
        };
        let writers_before = writers(&mut started_hosts);
        let batches_before = (
            store.store_batch_seconds.count(),
            store.store_batch_seconds.sum(),
            store.store_write_seconds.count(),
            store.store_leads.load(std::sync::atomic::Ordering::Relaxed),
            store
                .store_rewinds
                .load(std::sync::atomic::Ordering::Relaxed),
        );
        let level_start = std::time::SystemTime::now();
        let start = Instant::now();
        let (count, lat) = client_rt.block_on(async {
            let mut tasks = Vec::new();
            for w in 0..c {
                // Split between the hosts, when there are several.
                let addr = addrs[w % addrs.len()].clone();
                let (tokens, used) = (Arc::clone(&tokens), Arc::clone(&used));
                let authenticators = Arc::clone(&authenticators);
                let tls_client = tls_client.clone();
                tasks.push(tokio::spawn(async move {
                    // One kept-alive connection per worker, as a load generator (wrk, oha)
                    // holds them: the client's own cost stays small beside the server's.
                    let mut conn = Conn::open(&addr, tls_client).await;
                    let mut lat = Vec::new();
                    let mut i = w;
                    let mut waits = 0u64;
                    // Paced: this worker's share of the schedule, its starts staggered
                    // across the workers.
                    let interval = rate.map(|r| Duration::from_secs_f64(c as f64 / r));
                    let mut next =
                        start + interval.unwrap_or_default().mul_f64(w as f64 / c as f64);
                    while start.elapsed() < duration && lat.len() < 100_000 {
                        // When this activation counts from: its scheduled start, or now.
                        let scheduled = match interval {
                            Some(interval) => {
                                tokio::time::sleep_until(next.into()).await;
                                let at = next;
                                next += interval;
                                Some(at)
                            }
                            None => None,
                        };
                        let mut user = i % tokens.len();
                        i += c;
                        let mut totp_code = None;
                        if totp {
                            // The app's code for the current step, or the next one (inside
                            // the default skew), whichever this user has not used yet: each
                            // (user, step) is claimed once across workers and runs.
                            let mut tries = 0;
                            let step = loop {
                                let now = unix_now() / 30;
                                let cur = used[user].load(Ordering::Relaxed);
                                let fresh = match cur.checked_sub(1) {
                                    None => Some(now),
                                    Some(last) if last < now + 1 => Some((last + 1).max(now)),
                                    Some(_) => None,
                                };
                                if let Some(step) = fresh
                                    && used[user]
                                        .compare_exchange(
                                            cur,
                                            step + 1,
                                            Ordering::Relaxed,
                                            Ordering::Relaxed,
                                        )
                                        .is_ok()
                                {
                                    break step;
                                }
                                tries += 1;
                                if tries * c >= tokens.len() {
                                    waits += 1;
                                    tokio::time::sleep(Duration::from_millis(200)).await;
                                    tries = 0;
                                }
                                user = i % tokens.len();
                                i += c;
                            };
                            let secret = totp_secret(user);
                            let code = rolegate_provider_totp::code_for_secret(&secret, step * 30);
                            // One code in a million is also the next step's: the provider then
                            // records the later step (the same digits cannot be used twice), and
                            // so must the load, or its next code for this user is a replay.
                            if code.is_some()
                                && code
                                    == rolegate_provider_totp::code_for_secret(
                                        &secret,
                                        (step + 1) * 30,
                                    )
                            {
                                used[user].fetch_max(step + 2, Ordering::Relaxed);
                            }
                            totp_code = code;
                        }
                        let token = &tokens[user];
                        let t = scheduled.unwrap_or_else(Instant::now);
                        if let (true, Some(code)) = (ahead, &totp_code) {
                            let body = format!(
                                r#"{{"role":"admins","justification":"bench","code":"{code}"}}"#
                            );
                            let done: Done =
                                conn.post("/v1/requests", token, body.as_bytes()).await;
                            assert_eq!(done.state, "active", "{}", done.reason.unwrap_or_default());
                            lat.push((t - start, t.elapsed()));
                            continue;
                        }
                        let r: Created = conn
                            .post(
                                "/v1/requests",
                                token,
                                br#"{"role":"admins","justification":"bench"}"#,
                            )
                            .await;
                        if webauthn {
                            // The user's authenticator signs the request's bound challenge.
                            use webauthn_authenticator_rs::WebauthnAuthenticator as _;
                            let options = r.prompt.options.expect("WebAuthn options");
                            let assertion = authenticators[user]
                                .lock()
                                .unwrap()
                                .do_authentication(
                                    webauthn_authenticator_rs::prelude::Url::parse(WEBAUTHN_ORIGIN)
                                        .unwrap(),
                                    serde_json::from_value(options).unwrap(),
                                )
                                .unwrap();
                            let body = serde_json::to_vec(&serde_json::json!({
                                "input": {"kind": "json", "value": assertion}
                            }))
                            .unwrap();
                            let done: Done = conn
                                .post(&format!("/v1/requests/{}/answer", r.id), token, &body)
                                .await;
                            assert_eq!(done.state, "active", "{}", done.reason.unwrap_or_default());
                            lat.push((t - start, t.elapsed()));
                            continue;
                        }
                        let code: String = match totp_code {
                            Some(code) => code,
                            None => {
                                let digits =
                                    r.prompt.message.split(' ').nth(1).expect("hello's digits");
                                digits.chars().rev().collect()
                            }
                        };
                        let body = format!(r#"{{"code":"{code}"}}"#);
                        let done: Done = conn
                            .post(
                                &format!("/v1/requests/{}/answer", r.id),
                                token,
                                body.as_bytes(),
                            )
                            .await;
                        assert_eq!(done.state, "active", "{}", done.reason.unwrap_or_default());
                        lat.push((t - start, t.elapsed()));
                    }
                    if waits > 0 {
                        eprintln!("worker {w}: waited {waits} times for fresh TOTP steps");
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
        let trace = std::env::var("ROLEGATE_BENCH_TRACE").ok();
        if let Some(path) = &trace {
            write_trace(&format!("{path}.c{c}"), level_start, &lat);
        }
        let host = probe.finish(trace.as_ref().map(|p| format!("{p}.c{c}.probe")));
        // The activations that ran while the host was at half speed or less, and the p99 of
        // the others: rolegate's own tail, apart from the host's.
        let in_slow = |&(at, l): &(Duration, Duration)| {
            let (from, to) = (start + at, start + at + l);
            host.slow.iter().any(|&(s, e)| s < to && e > from)
        };
        let mut quiet: Vec<Duration> = lat.iter().filter(|a| !in_slow(a)).map(|a| a.1).collect();
        quiet.sort();
        let overlapped = (lat.len() - quiet.len()) as f64 * 100.0 / lat.len().max(1) as f64;
        let quiet_p99 = quiet
            .get((quiet.len().saturating_sub(1) as f64 * 0.99) as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3);
        let quiet_over = quiet.iter().filter(|l| l.as_millis() >= 10).count() as f64 * 100.0
            / quiet.len().max(1) as f64;
        let mut lat: Vec<Duration> = lat.into_iter().map(|(_, l)| l).collect();
        lat.sort();
        let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
        let (s50, s99) = server_quantiles();
        let hosts_after = started_hosts
            .as_ref()
            .map_or((0.0, 0.0), Hosts::cpu_seconds);
        let cpu = (process_cpu_seconds() + hosts_after.0 - cpu_before) / count.max(1) as f64 * 1e6;
        let writer = (thread_cpu_seconds(WRITER_THREAD) + hosts_after.1 - writer_before)
            / count.max(1) as f64
            * 1e6;
        let postgres = (postgres_cpu_seconds() - postgres_before) / count.max(1) as f64 * 1e6;
        let loadgen =
            (thread_cpu_seconds(LOADGEN_THREAD) - loadgen_before) / count.max(1) as f64 * 1e6;
        println!(
            "| {c:>3} | {count:>12} | {:>14.0} | {:>8.2} | {:>8.2} | {s50:>15.2} | {s99:>15.2} | {cpu:>12.0} | {writer:>13.0} |",
            count as f64 / duration.as_secs_f64(),
            p(0.5),
            p(0.99)
        );
        let over_10ms = lat.iter().filter(|l| l.as_millis() >= 10).count();
        tails.push(format!(
            "load generator at c={c}: {loadgen:.0} CPU µs/act of the {cpu:.0} (the process's less this: {:.0} µs/act of the server's)",
            cpu - loadgen
        ));
        // The writers' batches (every host's): how long each held its locks, and the share of
        // the level's time that what hosts sharing a database take in turn was held — near
        // 100%, another host adds nothing.
        let writers_after = writers(&mut started_hosts);
        let batches = writers_after.0 - writers_before.0;
        if batches > 0 {
            let held = writers_after.1 - writers_before.1;
            let chain = writers_after.2 - writers_before.2;
            let writes = writers_after.3 - writers_before.3;
            tails.push(format!(
                "batches at c={c}: {batches}, {:.1} writes each, {:.2} ms each from begin to commit; the write lock held {:.0}% of the level's time (summed over hosts); what the hosts take in turn (PostgreSQL) held {:.0}%",
                writes as f64 / batches as f64,
                held * 1e3 / batches as f64,
                held * 100.0 / duration.as_secs_f64(),
                chain * 100.0 / duration.as_secs_f64()
            ));
        }
        if started_hosts.is_none() && batches > 0 {
            let leads =
                store.store_leads.load(std::sync::atomic::Ordering::Relaxed) - batches_before.3;
            let rewinds = store
                .store_rewinds
                .load(std::sync::atomic::Ordering::Relaxed)
                - batches_before.4;
            if leads > 0 || rewinds > 0 {
                tails.push(format!(
                    "leads at c={c}: {leads} statements sent ahead ({:.1} a batch), {rewinds} batches rolled back to their start",
                    leads as f64 / batches as f64
                ));
            }
        }
        if postgres > 0.0 {
            tails.push(format!(
                "PostgreSQL at c={c}: {postgres:.0} CPU µs/act (all its processes), {:.0} with rolegate's",
                postgres + cpu
            ));
        }
        tails.push(format!(
            "tail at c={c}: p95 {:.2} ms, p98 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2}; {:.2}% of activations took 10 ms or more; host: {:.1}% of 50-ms windows at half speed or less, {overlapped:.1}% of activations ran in them; the others: p99 {quiet_p99:.2} ms, {quiet_over:.2}% took 10 ms or more",
            p(0.95),
            p(0.98),
            p(0.99),
            p(0.999),
            p(1.0),
            over_10ms as f64 * 100.0 / lat.len().max(1) as f64,
            host.slow_share,
        ));
    }
    for t in tails {
        println!("{t}");
    }
}

/// Writes one line per activation — its start (ms into the level) and its latency (ms) —
/// so that a tail can be laid beside the host probe and the store's background work.
fn write_trace(path: &str, start: std::time::SystemTime, lat: &[(Duration, Duration)]) {
    let mut lines: Vec<_> = lat.to_vec();
    lines.sort();
    let unix = start
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    write_pairs(
        path,
        &format!("# level start {unix:.6} s since the epoch\n"),
        &lines,
    );
}

/// Writes `head`, then a line per pair: both in ms, comma-separated.
fn write_pairs(path: &str, head: &str, pairs: &[(Duration, Duration)]) {
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let text: String = std::iter::once(head.to_string())
        .chain(
            pairs
                .iter()
                .map(|(a, b)| format!("{:.3},{:.3}\n", ms(a), ms(b))),
        )
        .collect();
    std::fs::write(path, text).unwrap();
}

/// A light probe of the host's own speed while a level runs (see the `noise` bench): one
/// thread does ~25 µs of fixed arithmetic every 2 ms — about 1% of one core — and keeps how
/// long each piece took. A shared virtual machine runs some stretches at a fraction of its
/// speed; a p99 measured across them carries that, and the tail line says how much of the
/// level it was.
struct Probe {
    started: Instant,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<work::Piece>>,
}

impl Probe {
    /// The window the speed is judged over.
    const WINDOW: Duration = Duration::from_millis(50);

    /// The number of steps of a piece that take ~25 µs here.
    fn calibrate() -> u64 {
        work::steps_for(Duration::from_micros(25))
    }

    fn start(n: u64) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let started = Instant::now();
        let thread = std::thread::Builder::new()
            .name("probe".into())
            .spawn(move || {
                let start = started;
                let mut pieces = Vec::new();
                while !flag.load(Ordering::Relaxed) && pieces.len() < 1_000_000 {
                    let t = Instant::now();
                    work::piece(n);
                    pieces.push((t - start, t.elapsed()));
                    std::thread::sleep(Duration::from_millis(2));
                }
                pieces
            })
            .unwrap();
        Self {
            started,
            stop,
            thread,
        }
    }

    /// Stops the probe; its windows whose median piece took at least twice the level's fast
    /// pieces (its 10th percentile): stretches at half speed or less.
    /// With `trace`, the pieces are written there (start and length, ms) first.
    fn finish(self, trace: Option<String>) -> HostSpeed {
        self.stop.store(true, Ordering::Relaxed);
        let pieces = self.thread.join().unwrap_or_default();
        if let Some(path) = trace {
            write_pairs(&path, "", &pieces);
        }
        let mut all: Vec<Duration> = pieces.iter().map(|p| p.1).collect();
        all.sort();
        let Some(&fast) = all.get(all.len() / 10) else {
            return HostSpeed::default();
        };
        let windows = work::window_medians(&pieces, Self::WINDOW);
        let slow: Vec<(Instant, Instant)> = windows
            .iter()
            .filter(|w| w.1 >= fast * 2)
            .map(|w| (self.started + w.0, self.started + w.0 + Self::WINDOW))
            .collect();
        HostSpeed {
            slow_share: slow.len() as f64 * 100.0 / windows.len().max(1) as f64,
            slow,
        }
    }
}

/// What the probe saw of the host during a level.
#[derive(Default)]
struct HostSpeed {
    /// The share (%) of the windows at half speed or less.
    slow_share: f64,
    /// Those windows, from start to end.
    slow: Vec<(Instant, Instant)>,
}

/// Enrols the bench's users (a token each; with TOTP, a finished enrolment's credential) and
/// creates its role: users made 2,000 to a write (`users::create_many`, as an import makes
/// them), so that PostgreSQL's enrolment is not one round trip per user per table.
async fn enrol(
    store: &Arc<Store>,
    sealing: &Arc<SealingKey>,
    accounts: &[String],
    totp: bool,
    provider: &'static str,
) -> Vec<String> {
    let started = Instant::now();
    let mut out = Vec::with_capacity(accounts.len());
    for (chunk, names) in accounts.chunks(2_000).enumerate() {
        let names = names.to_vec();
        let sealing = Arc::clone(sealing);
        let first = chunk * 2_000;
        out.extend(
            store
                .write(move |tx| {
                    let new = names
                        .iter()
                        .map(|a| users::NewUser {
                            account: a.clone(),
                            ..Default::default()
                        })
                        .collect();
                    users::create_many(tx, new, 1, 0).map_err(|(_, e)| e)?;
                    let mut tokens = Vec::with_capacity(names.len());
                    for (i, a) in names.iter().enumerate() {
                        tokens.push(tokens::issue(tx, a, false, "bench", 0)?);
                        if totp {
                            // Enrolled as a finished enrolment stores it.
                            let data = serde_json::to_vec(&totp_secret(first + i)).unwrap();
                            let credential = rolegate_sdk::Credential {
                                id: "totp-1".into(),
                                label: "Authenticator app".into(),
                                data: data.into(),
                            };
                            rolegate::service::store_credential(
                                tx,
                                &sealing,
                                a,
                                "totp",
                                &credential,
                                0,
                            )?;
                        }
                    }
                    Ok(tokens)
                })
                .await
                .unwrap(),
        );
    }
    let candidates = accounts.iter().cloned().collect();
    store
        .write(move |tx| {
            roles::create(
                tx,
                &RoleSpec {
                    name: "admins".into(),
                    candidates,
                    approvers: Default::default(),
                    // 1 s: a user's next activation finds the last one over.
                    ttl_s: 1,
                    max_ttl_s: 1,
                    availability: None,
                    justification_required: false,
                    approval_enabled: false,
                    mfa_enabled: true,
                    providers: vec![provider.into()],
                    when_factor_down: Default::default(),
                    shadow: Vec::new(),
                },
                0,
            )
        })
        .await
        .unwrap();
    println!(
        "(enrolled {} users in {:.1} s)",
        accounts.len(),
        started.elapsed().as_secs_f64()
    );
    settle(store).await;
    out
}

/// Leaves the database as a running one is, not as a bulk load left it: the measured levels
/// would otherwise meet the enrolment's aftermath — PostgreSQL's autovacuum and analyze of
/// the tables that just grew by the users; SQLite's WAL is checkpointed. Only the tables the
/// enrolment filled: `requests` analyzed while still empty is planned as a table of no rows
/// (a sequential scan behind each new request's one-live-request check) until autovacuum
/// analyzes it again — measured 4× slower over a level, far from what a running gate sees.
async fn settle(store: &Store) {
    let started = Instant::now();
    let steps: &[&str] = if store.wants_leads() {
        &["VACUUM ANALYZE users, tokens, credentials, account_skeletons"]
    } else {
        &["PRAGMA wal_checkpoint(TRUNCATE)"]
    };
    for step in steps {
        let sql = step.to_string();
        if let Err(e) = store.read(move |tx| tx.query(&sql, &[])).await {
            println!("(could not run {step} after enrolment: {e})");
        }
    }
    println!(
        "(settled after enrolment: {} in {:.1} s)",
        steps.join(", "),
        started.elapsed().as_secs_f64()
    );
}

/// The server processes of ROLEGATE_BENCH_HOSTS: each this binary again, serving until its
/// standard input closes (when this process drops it).
struct Hosts(
    Vec<std::process::Child>,
    Vec<std::io::BufReader<std::process::ChildStdout>>,
);

impl Hosts {
    /// Starts `n` hosts on the database of `ROLEGATE_BENCH_POSTGRES` with the sealing key in
    /// `key_dir`; returns them and their URLs.
    fn start(n: usize, key_dir: &std::path::Path) -> (Self, Vec<String>) {
        use std::io::BufRead as _;
        let exe = std::env::current_exe().unwrap();
        let share: Option<f64> = std::env::var("ROLEGATE_BENCH_HOST_CPU").ok().map(|v| {
            v.parse()
                .expect("ROLEGATE_BENCH_HOST_CPU is a share of one core")
        });
        let mut children = Vec::new();
        let mut outs = Vec::new();
        let mut urls = Vec::new();
        for i in 0..n {
            let mut c = std::process::Command::new(&exe)
                .env("ROLEGATE_BENCH_CHILD", key_dir)
                .env_remove("ROLEGATE_BENCH_HOSTS")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            if let Some(share) = share {
                // Its own group, so that each host gets the share (a group for all would share it).
                let group = format!(
                    "/sys/fs/cgroup/cpu/rolegate-bench-{}-{i}",
                    std::process::id()
                );
                std::fs::create_dir_all(&group).expect("a cgroup v1 cpu group (run as root)");
                std::fs::write(format!("{group}/cpu.cfs_period_us"), "10000").unwrap();
                std::fs::write(
                    format!("{group}/cpu.cfs_quota_us"),
                    format!("{}", (share * 10_000.0) as u64),
                )
                .unwrap();
                std::fs::write(format!("{group}/cgroup.procs"), c.id().to_string()).unwrap();
            }
            let mut out = std::io::BufReader::new(c.stdout.take().unwrap());
            let mut line = String::new();
            while !line.starts_with("http://") {
                line.clear();
                assert!(
                    out.read_line(&mut line).unwrap() > 0,
                    "a host ended before serving"
                );
            }
            urls.push(line.trim().to_string());
            children.push(c);
            outs.push(out);
        }
        (Self(children, outs), urls)
    }

    /// The hosts' writers so far, summed: batches, seconds they held their locks, seconds
    /// they held what the hosts take in turn, writes.
    fn writers(&mut self) -> (u64, f64, f64, u64) {
        use std::io::{BufRead as _, Write as _};
        let mut sum = (0, 0.0, 0.0, 0);
        for (c, out) in self.0.iter_mut().zip(&mut self.1) {
            let Some(stdin) = c.stdin.as_mut() else {
                continue;
            };
            let _ = writeln!(stdin, "stats").and_then(|()| stdin.flush());
            let mut line = String::new();
            let _ = out.read_line(&mut line);
            let v: Vec<&str> = line.split_whitespace().collect();
            if let [b, h, ch, w] = v[..] {
                sum.0 += b.parse::<u64>().unwrap_or(0);
                sum.1 += h.parse::<f64>().unwrap_or(0.0);
                sum.2 += ch.parse::<f64>().unwrap_or(0.0);
                sum.3 += w.parse::<u64>().unwrap_or(0);
            }
        }
        sum
    }

    /// The hosts' CPU time so far, and that of their database writers.
    fn cpu_seconds(&self) -> (f64, f64) {
        let mut all = 0.0;
        let mut writers = 0.0;
        for c in &self.0 {
            let proc = format!("/proc/{}", c.id());
            all += stat_cpu_seconds(
                &std::fs::read_to_string(format!("{proc}/stat")).unwrap_or_default(),
            );
            writers += tasks_cpu_seconds(&format!("{proc}/task"), WRITER_THREAD);
        }
        (all, writers)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for c in &mut self.0 {
            drop(c.stdin.take());
            let _ = c.wait();
        }
        for i in 0..self.0.len() {
            // Gone with its process (an empty group is removed; none was made without a share).
            let _ = std::fs::remove_dir(format!(
                "/sys/fs/cgroup/cpu/rolegate-bench-{}-{i}",
                std::process::id()
            ));
        }
    }
}

/// The CPU time so far of every process named `postgres` (the server and its backends): the
/// database's share of an activation's cost.
fn postgres_cpu_seconds() -> f64 {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    procs
        .flatten()
        .filter(|p| {
            std::fs::read_to_string(p.path().join("comm")).is_ok_and(|c| c.trim_end() == "postgres")
        })
        .map(|p| {
            stat_cpu_seconds(&std::fs::read_to_string(p.path().join("stat")).unwrap_or_default())
        })
        .sum()
}

/// The database writer's thread, per backend (names as the kernel keeps them: ≤ 15 bytes).
const WRITER_THREAD: [&str; 2] = ["sqlite-writer", "pg-writer"];

/// The load generator's threads.
const LOADGEN_THREAD: [&str; 2] = ["loadgen", "loadgen"];

/// This process's CPU time so far (user + system), from /proc/self/stat.
fn process_cpu_seconds() -> f64 {
    stat_cpu_seconds(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default())
}

/// The CPU time so far of this process's threads with one of these names.
fn thread_cpu_seconds(names: [&str; 2]) -> f64 {
    tasks_cpu_seconds("/proc/self/task", names)
}

/// The CPU time so far of the threads under `tasks` (a /proc task folder) with one of these
/// names.
fn tasks_cpu_seconds(tasks: &str, names: [&str; 2]) -> f64 {
    let Ok(tasks) = std::fs::read_dir(tasks) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| names.contains(&c.trim_end()))
        })
        .map(|t| {
            stat_cpu_seconds(&std::fs::read_to_string(t.path().join("stat")).unwrap_or_default())
        })
        .sum()
}

/// utime + stime of a /proc stat line, in seconds.
fn stat_cpu_seconds(stat: &str) -> f64 {
    // Fields after the command name (which may hold spaces): utime and stime are the 12th
    // and 13th, in clock ticks (100 a second on Linux).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum::<u64>() as f64 / 100.0
}

#[derive(serde::Deserialize)]
struct Prompt {
    #[serde(default)]
    message: String,
    /// A WebAuthn prompt's options.
    #[serde(default)]
    options: Option<serde_json::Value>,
}

#[derive(serde::Deserialize)]
struct Created {
    id: String,
    prompt: Prompt,
}

#[derive(serde::Deserialize)]
struct Done {
    state: String,
    #[serde(default)]
    reason: Option<String>,
}

/// A certificate for 127.0.0.1 from a CA of its own, made with the openssl command: the
/// certificate and key files, and the CA's certificate for the client.
fn test_certificate(
    dir: &std::path::Path,
) -> (PathBuf, PathBuf, rustls::pki_types::CertificateDer<'static>) {
    use rustls::pki_types::pem::PemObject as _;
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=bench CA",
    ]);
    openssl(&ca);
    let mut req = vec!["req"];
    req.extend(ec);
    req.extend([
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
        "-subj",
        "/CN=bench",
    ]);
    openssl(&req);
    std::fs::write(dir.join("tls.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "tls.pem",
        "-days",
        "2",
        "-extfile",
        "tls.ext",
    ]);
    let ca = rustls::pki_types::CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap();
    (dir.join("tls.pem"), dir.join("tls.key"), ca)
}

/// Plain TCP or TLS under the client.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// A minimal HTTP/1.1 keep-alive client: the request line, three headers, a JSON body; the
/// answer read to its Content-Length.
struct Conn {
    stream: tokio::io::BufReader<Box<dyn Stream>>,
    host: String,
}

impl Conn {
    async fn open(addr: &str, tls: Option<tokio_rustls::TlsConnector>) -> Self {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        let stream: Box<dyn Stream> = match tls {
            None => Box::new(tcp),
            Some(tls) => {
                let name = rustls::pki_types::ServerName::IpAddress(
                    "127.0.0.1".parse::<std::net::IpAddr>().unwrap().into(),
                );
                Box::new(tls.connect(name, tcp).await.unwrap())
            }
        };
        Self {
            stream: tokio::io::BufReader::new(stream),
            host: addr.to_string(),
        }
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &mut self,
        path: &str,
        token: &str,
        body: &[u8],
    ) -> T {
        use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.stream.get_mut().write_all(&req).await.unwrap();
        self.stream.get_mut().flush().await.unwrap();
        let mut line = String::new();
        self.stream.read_line(&mut line).await.unwrap();
        assert!(line.starts_with("HTTP/1.1 20"), "{line}");
        let mut length = 0usize;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap();
            }
        }
        let mut buf = vec![0u8; length];
        self.stream.read_exact(&mut buf).await.unwrap();
        serde_json::from_slice(&buf).unwrap()
    }
}

/// Time each request spends in the server (from its head parsed to its answer built).
static SERVER_US: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

async fn timed(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let t = Instant::now();
    let r = next.run(req).await;
    let us = t.elapsed().as_micros().min(u32::MAX as u128) as u32;
    if let Ok(mut v) = SERVER_US.lock() {
        v.push(us);
    }
    r
}

/// The server-side p50 and p99 of one HTTP request (ms) since the last call.
fn server_quantiles() -> (f64, f64) {
    let mut v = SERVER_US
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default();
    if v.is_empty() {
        return (0.0, 0.0);
    }
    v.sort_unstable();
    let q = |p: f64| f64::from(v[((v.len() - 1) as f64 * p) as usize]) / 1e3;
    (q(0.5), q(0.99))
}

/// The daemon's allocator (see `main.rs`), so that the bench measures what runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
