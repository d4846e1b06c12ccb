//! ABI round-trip benchmark: prints a table of call latencies and plugin load time.
//!
//! Run: `cargo build --release --workspace && cargo bench -p rolegate --bench abi`.
//! It loads the example hello provider built beside the bench binary, in-process and in a
//! worker process, and measures a `challenge_continue` round trip with a ~200-byte request.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: failing loudly is right

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rolegate::config::{Isolation, PluginsConfig};
use rolegate::plugins::{Plugin, library};
use rolegate_sdk::message::{ChallengeContext, Input, Request, Response, Step, UserContext};

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/release/deps/abi-<hash> → target/release
    exe.parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .unwrap_or_default()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn row(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "| {name:<44} | {:>7} | {:>9.2} | {:>9.2} | {:>9.2} | {:>9.2} |",
        samples.len(),
        percentile(&samples, 0.50).as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6,
        percentile(&samples, 0.999).as_secs_f64() * 1e6,
        mean.as_secs_f64() * 1e6,
    );
}

fn main() {
    let dir = target_dir();
    let lib = dir.join("librolegate_example_hello.so");
    let worker = dir.join("rolegate");
    if !lib.exists() || !worker.exists() {
        eprintln!(
            "{} or {} is missing: run `cargo build --release --workspace` first",
            lib.display(),
            worker.display()
        );
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let ctx = ChallengeContext {
        user: UserContext {
            account: "jdoe".into(),
            ..Default::default()
        },
        role: "admins".into(),
        request_id: "r1".into(),
        now: 1_764_000_000,
        ..Default::default()
    };

    // A state from a real challenge, then the request measured.
    let table = library::open("bench", &lib, None).expect("load").table;
    let instance = table.create(b"{}").expect("create");
    let start = serde_json::to_vec(&Request::ChallengeStart { ctx: ctx.clone() }).expect("encode");
    let step: Response<Step> = serde_json::from_slice(&instance.call_raw(&start)).expect("decode");
    let Ok(Step::Ask { state, .. }) = step.into_result() else {
        panic!("hello did not ask")
    };
    let request = serde_json::to_vec(&Request::ChallengeContinue {
        ctx: ctx.clone(),
        state,
        input: Input::Code {
            code: "000000".into(),
        },
    })
    .expect("encode");
    println!("request size: {} bytes\n", request.len());
    println!(
        "| {:<44} | {:>7} | {:>9} | {:>9} | {:>9} | {:>9} |",
        "path", "calls", "p50 µs", "p99 µs", "p99.9 µs", "mean µs"
    );
    println!(
        "|{:-<46}|{:->9}|{:->11}|{:->11}|{:->11}|{:->11}|",
        "", "", "", "", "", ""
    );

    const N: usize = 50_000;
    let budget = Duration::from_secs(20);

    // 1. The bare ABI: encode nothing, one C call, copy the answer, free it.
    let mut samples = Vec::with_capacity(N);
    let t0 = Instant::now();
    for _ in 0..N {
        let t = Instant::now();
        let out = instance.call_raw(&request);
        samples.push(t.elapsed());
        assert!(!out.is_empty());
        if t0.elapsed() > budget {
            break;
        }
    }
    row("in-process, raw ABI call (sync)", samples);

    // 2. The same plus encoding the request and decoding the step (what the host does).
    let mut samples = Vec::with_capacity(N);
    let t0 = Instant::now();
    let typed = Request::ChallengeContinue {
        ctx: ctx.clone(),
        state: serde_json::from_slice::<Request>(&request)
            .ok()
            .and_then(|r| match r {
                Request::ChallengeContinue { state, .. } => Some(state),
                _ => None,
            })
            .expect("state"),
        input: Input::Code {
            code: "000000".into(),
        },
    };
    for _ in 0..N {
        let t = Instant::now();
        let bytes = serde_json::to_vec(&typed).expect("encode");
        let out = instance.call_raw(&bytes);
        let step: Response<Step> = serde_json::from_slice(&out).expect("decode");
        samples.push(t.elapsed());
        assert!(step.into_result().is_ok());
        if t0.elapsed() > budget {
            break;
        }
    }
    row("in-process, typed (encode + call + decode)", samples);

    // 3 and 4. Through the host's async handle, in-process (spawn_blocking) and isolated.
    let plugins = PluginsConfig {
        worker: Some(worker.clone()),
        ..Default::default()
    };
    for (label, isolation) in [
        (
            "in-process, async handle (spawn_blocking)",
            Isolation::InProcess,
        ),
        ("process-isolated, async handle (pipe)", Isolation::Process),
    ] {
        // Measured inside a spawned task, where a server's handlers run (not on block_on's thread).
        let samples = rt.block_on(async {
            let lib = lib.clone();
            let plugins = plugins.clone();
            let request = request.clone();
            tokio::spawn(async move {
                let plugin = Plugin::open(
                    "bench",
                    &lib,
                    None,
                    isolation,
                    Duration::from_secs(5),
                    &plugins,
                )
                .await
                .expect("open");
                let p = plugin
                    .instantiate(&serde_json::json!({}))
                    .await
                    .expect("instantiate");
                let mut samples = Vec::with_capacity(N);
                let t0 = Instant::now();
                for _ in 0..N {
                    let t = Instant::now();
                    let out = p
                        .call_raw("challenge_continue", request.clone())
                        .await
                        .expect("call");
                    samples.push(t.elapsed());
                    assert!(!out.is_empty());
                    if t0.elapsed() > budget {
                        break;
                    }
                }
                p.shutdown().await;
                samples
            })
            .await
            .expect("bench task")
        });
        row(label, samples);
    }

    // 5. Load time: read + hash + stage + dlopen + validate the table + create + info.
    let mut samples = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        let p = rt.block_on(async {
            Plugin::open(
                "bench",
                &lib,
                None,
                Isolation::InProcess,
                Duration::from_secs(5),
                &plugins,
            )
            .await
            .expect("open")
            .instantiate(&serde_json::json!({}))
            .await
            .expect("instantiate")
        });
        samples.push(t.elapsed());
        drop(p);
    }
    row("plugin load, in-process (read+pin+dlopen+create)", samples);

    let mut samples = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        rt.block_on(async {
            let p = Plugin::open(
                "bench",
                &lib,
                None,
                Isolation::Process,
                Duration::from_secs(5),
                &plugins,
            )
            .await
            .expect("open")
            .instantiate(&serde_json::json!({}))
            .await
            .expect("instantiate");
            p.shutdown().await;
        });
        samples.push(t.elapsed());
    }
    row("plugin load, process (spawn worker+create+info)", samples);

    smartcard_verification(&dir);
}

/// Runs the `openssl` command in `dir` (the bench's keys, certificates and signatures).
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let ok = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(ok, "openssl {args:?} failed");
}

/// The smartcard provider's `challenge_continue` in-process (a raw ABI call), whose cost is the
/// verification of the card's signature: P-256 and RSA-2048 cards, their keys, certificates
/// and signatures made by the openssl command. The same state and signature are verified
/// again and again (the provider keeps nothing: each call verifies in full).
fn smartcard_verification(dir: &std::path::Path) {
    use base64::Engine as _;
    let lib = dir.join("librolegate_provider_smartcard.so");
    if !lib.exists() {
        eprintln!("{} is missing: skipping the smartcard rows", lib.display());
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    let table = library::open("smartcard", &lib, None).expect("load").table;
    let instance = table.create(b"{}").expect("create");
    let call = |req: &Request| -> Step {
        let out = instance.call_raw(&serde_json::to_vec(req).expect("encode"));
        let r: Response<Step> = serde_json::from_slice(&out).expect("decode");
        r.into_result().expect("step")
    };
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    for (name, keygen) in [
        (
            "P-256",
            vec![
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "card.key",
            ],
        ),
        ("RSA-2048", vec!["genrsa", "-out", "card.key", "2048"]),
    ] {
        openssl(d, &keygen);
        std::fs::write(
            d.join("card.cnf"),
            "[req]\ndistinguished_name = dn\n[dn]\n[v3]\nkeyUsage=critical,digitalSignature\n",
        )
        .expect("cnf");
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "card.key",
                "-subj",
                "/CN=bench card",
                "-days",
                "30",
                "-extensions",
                "v3",
                "-config",
                "card.cnf",
                "-outform",
                "DER",
                "-out",
                "card.der",
            ],
        );
        let cert = std::fs::read(d.join("card.der")).expect("cert");
        let sign = |bytes: &[u8]| -> Vec<u8> {
            std::fs::write(d.join("msg"), bytes).expect("msg");
            openssl(
                d,
                &["dgst", "-sha256", "-sign", "card.key", "-out", "sig", "msg"],
            );
            std::fs::read(d.join("sig")).expect("sig")
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.as_secs())
            .unwrap_or(0);
        let user = UserContext {
            account: "jdoe".into(),
            ..Default::default()
        };
        let ectx = rolegate_sdk::message::EnrollContext {
            user: user.clone(),
            credentials: vec![],
            origin: None,
            now,
        };
        let Step::Ask {
            prompt: rolegate_sdk::Prompt::Smartcard { challenge, .. },
            state,
            ..
        } = call(&Request::EnrollStart { ctx: ectx.clone() })
        else {
            panic!("no smartcard prompt")
        };
        let answer = |challenge: &[u8]| Input::Json {
            value: serde_json::json!({"certificate": b64(&cert), "signature": b64(&sign(challenge))}),
        };
        let Step::Done {
            verdict:
                rolegate_sdk::Verdict::Approved {
                    credential: Some(credential),
                    ..
                },
        } = call(&Request::EnrollContinue {
            ctx: ectx,
            state,
            input: answer(challenge.as_slice()),
        })
        else {
            panic!("{name}: not enrolled")
        };
        let ctx = ChallengeContext {
            user,
            role: "admins".into(),
            request_id: "r1".into(),
            credentials: vec![credential],
            now,
            ..Default::default()
        };
        let Step::Ask {
            prompt: rolegate_sdk::Prompt::Smartcard { challenge, .. },
            state,
            ..
        } = call(&Request::ChallengeStart { ctx: ctx.clone() })
        else {
            panic!("no smartcard prompt")
        };
        let request = serde_json::to_vec(&Request::ChallengeContinue {
            ctx,
            state,
            input: answer(challenge.as_slice()),
        })
        .expect("encode");
        let mut samples = Vec::new();
        let t0 = Instant::now();
        while samples.len() < 2_000 && t0.elapsed() < Duration::from_secs(10) {
            let t = Instant::now();
            let out = instance.call_raw(&request);
            samples.push(t.elapsed());
            assert!(
                String::from_utf8_lossy(&out).contains("approved"),
                "{name}: {}",
                String::from_utf8_lossy(&out)
            );
        }
        row(
            &format!("smartcard {name}: verify (challenge_continue, raw)"),
            samples,
        );
    }
}
