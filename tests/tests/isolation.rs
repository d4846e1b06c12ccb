//! Panics, crashes and hangs in plugins: the host stays up, in both isolation modes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rolegate::Error;
use rolegate::config::{Isolation, PluginsConfig, ProviderConfig};
use rolegate::plugins::{LoadedProvider, load_one};
use rolegate_e2e::{misbehave_lib, rolegate_bin};
use rolegate_sdk::message::{ChallengeContext, Health, Input, Step, UserContext};
use rolegate_sdk::{ErrorKind, Verdict};

fn plugins(max_crashes: usize) -> PluginsConfig {
    PluginsConfig {
        worker: Some(rolegate_bin()),
        max_crashes,
        ..Default::default()
    }
}

async fn misbehave(mode: &str, isolation: Isolation, deadline_ms: u64) -> LoadedProvider {
    try_misbehave(mode, isolation, deadline_ms, 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn try_misbehave(
    mode: &str,
    isolation: Isolation,
    deadline_ms: u64,
    max_crashes: usize,
) -> rolegate::Result<LoadedProvider> {
    let mut settings = toml::Table::new();
    settings.insert("mode".into(), toml::Value::String(mode.into()));
    load_misbehave(mode, settings, isolation, deadline_ms, max_crashes).await
}

/// Misbehave claiming its calls are quick (so the host calls it on the request's thread).
async fn quick_misbehave(mode: &str) -> LoadedProvider {
    let mut settings = toml::Table::new();
    settings.insert("mode".into(), toml::Value::String(mode.into()));
    settings.insert("quick".into(), toml::Value::Boolean(true));
    load_misbehave(mode, settings, Isolation::InProcess, 5_000, 100)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn load_misbehave(
    mode: &str,
    settings: toml::Table,
    isolation: Isolation,
    deadline_ms: u64,
    max_crashes: usize,
) -> rolegate::Result<LoadedProvider> {
    let p = ProviderConfig {
        sunset: None,
        id: format!("mis-{mode}"),
        library: misbehave_lib(),
        sha256: None,
        unpinned: true,
        isolation,
        deadline_ms: Some(deadline_ms),
        settings,
    };
    load_one(&p, &plugins(max_crashes)).await
}

fn ctx(request_id: &str) -> ChallengeContext {
    ChallengeContext {
        user: UserContext {
            account: "jdoe".into(),
            ..Default::default()
        },
        role: "admins".into(),
        request_id: request_id.into(),
        now: 1,
        ..Default::default()
    }
}

async fn still_serves(p: &LoadedProvider) {
    let h: Health = p.health().await.unwrap();
    assert_eq!(h, Health::ok());
    let step = p
        .challenge_continue(
            ctx("r9"),
            b"r9".to_vec().into(),
            Input::Code {
                code: "1234".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        step,
        Step::Done {
            verdict: Verdict::approved(None)
        }
    );
}

#[tokio::test]
async fn a_panic_is_an_error_value_in_both_modes() {
    for iso in [Isolation::InProcess, Isolation::Process] {
        let p = misbehave("panic", iso, 5_000).await;
        let e = p.challenge_start(ctx("r1")).await.unwrap_err();
        let pe = e.provider_error().unwrap_or_else(|| panic!("{e}"));
        assert_eq!(pe.kind, ErrorKind::Panicked, "{iso}");
        assert_eq!(
            e.to_string(),
            "provider `mis-panic` failed `challenge_start`: panicked: the provider panicked: misbehave: deliberate panic for r1"
        );
        still_serves(&p).await;
        p.shutdown().await;
    }
}

#[tokio::test]
async fn a_quick_providers_panic_is_an_error_value_too() {
    let p = quick_misbehave("panic").await;
    assert!(
        p.calls_inline(),
        "a quick in-process provider is called inline"
    );
    let e = p.challenge_start(ctx("r1")).await.unwrap_err();
    let pe = e.provider_error().unwrap_or_else(|| panic!("{e}"));
    assert_eq!(pe.kind, ErrorKind::Panicked);
    still_serves(&p).await;
    assert!(p.calls_inline(), "one panic is not slowness");
}

#[tokio::test]
async fn a_quick_provider_that_is_slow_goes_back_to_blocking_threads() {
    let p = quick_misbehave("slow").await;
    assert!(p.calls_inline());
    for i in 0..3 {
        assert!(p.calls_inline(), "demoted after {i} slow calls only");
        let step = p.challenge_start(ctx("r1")).await.unwrap();
        assert!(matches!(step, Step::Ask { .. }), "{step:?}");
    }
    assert!(!p.calls_inline(), "three slow calls lose the privilege");
    // It still answers, now from a blocking thread.
    let step = p.challenge_start(ctx("r1")).await.unwrap();
    assert!(matches!(step, Step::Ask { .. }), "{step:?}");
    still_serves(&p).await;
    // A provider that does not claim it is never called inline.
    let plain = misbehave("ok", Isolation::InProcess, 5_000).await;
    assert!(!plain.calls_inline());
    let worker = misbehave("ok", Isolation::Process, 5_000).await;
    assert!(!worker.calls_inline());
    worker.shutdown().await;
}

#[tokio::test]
async fn a_panic_while_creating_is_a_settings_error() {
    for iso in [Isolation::InProcess, Isolation::Process] {
        let e = try_misbehave("panic-create", iso, 5_000, 100)
            .await
            .unwrap_err();
        assert_eq!(
            e.provider_error().map(|e| e.kind),
            Some(ErrorKind::Panicked)
        );
        assert!(
            e.to_string()
                .ends_with("refused its settings: panicked: the provider panicked: misbehave: panic while creating"),
            "{e}"
        );
    }
}

#[tokio::test]
async fn a_segfault_costs_one_call_and_the_worker_restarts() {
    let p = misbehave("segfault", Isolation::Process, 5_000).await;
    let e = p.challenge_start(ctx("r1")).await.unwrap_err();
    assert!(matches!(e, Error::WorkerCrashed { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "provider `mis-segfault`: its worker process was killed by signal 11 (SIGSEGV) during `challenge_start`; it restarts on the next call"
    );
    still_serves(&p).await;
    // And again: each crash is contained.
    let e = p.challenge_start(ctx("r2")).await.unwrap_err();
    assert!(e.to_string().contains("SIGSEGV"), "{e}");
    still_serves(&p).await;
    p.shutdown().await;
}

#[tokio::test]
async fn an_abort_is_contained_too() {
    let p = misbehave("abort", Isolation::Process, 5_000).await;
    let e = p.challenge_start(ctx("r1")).await.unwrap_err();
    assert!(e.to_string().contains("SIGABRT"), "{e}");
    still_serves(&p).await;
    p.shutdown().await;
}

#[tokio::test]
async fn a_hang_passes_its_deadline_and_the_worker_is_replaced() {
    let p = misbehave("hang", Isolation::Process, 400).await;
    let t = Instant::now();
    let e = p.challenge_start(ctx("r1")).await.unwrap_err();
    let waited = t.elapsed();
    assert!(matches!(e, Error::Deadline { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "provider `mis-hang` did not answer `challenge_start` within 400 ms; its worker process was killed and restarts on the next call"
    );
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    still_serves(&p).await;
    p.shutdown().await;
}

#[test]
fn an_in_process_hang_passes_its_deadline_and_the_host_goes_on() {
    // A runtime waits for its blocking threads when dropped; the abandoned call never ends,
    // so this runtime is shut down in the background, as the daemon does at exit.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let p = misbehave("hang", Isolation::InProcess, 300).await;
        let e = p.challenge_start(ctx("r1")).await.unwrap_err();
        assert!(
            e.to_string().ends_with(
                "an in-process call cannot be stopped, so its thread is abandoned (use isolation = \"process\")"
            ),
            "{e}"
        );
        still_serves(&p).await;
    });
    rt.shutdown_background();
}

#[tokio::test]
async fn a_crash_loop_holds_the_provider_down() {
    let p = try_misbehave("segfault", Isolation::Process, 5_000, 3)
        .await
        .unwrap();
    for _ in 0..3 {
        let e = p.challenge_start(ctx("r1")).await.unwrap_err();
        assert!(matches!(e, Error::WorkerCrashed { .. }), "{e}");
    }
    let e = p.health().await.unwrap_err();
    assert!(matches!(e, Error::CrashLoop { .. }), "{e}");
    assert!(
        e.to_string().starts_with(
            "provider `mis-segfault`: its worker crashed 3 times in 60 s; not restarting it for"
        ),
        "{e}"
    );
}

#[tokio::test]
async fn stdout_noise_does_not_corrupt_the_pipe() {
    let p = misbehave("noisy", Isolation::Process, 5_000).await;
    for i in 0..5 {
        let step = p.challenge_start(ctx(&format!("r{i}"))).await.unwrap();
        assert!(matches!(step, Step::Ask { .. }), "{step:?}");
    }
    p.shutdown().await;
}

#[tokio::test]
async fn concurrent_calls_to_a_worker_each_get_their_own_answer() {
    let p = Arc::new(misbehave("ok", Isolation::Process, 5_000).await);
    let mut tasks = Vec::new();
    for i in 0..64 {
        let p = Arc::clone(&p);
        tasks.push(tokio::spawn(async move {
            let id = format!("req-{i}");
            let code = if i % 2 == 0 { "1234" } else { "9999" };
            let step = p
                .challenge_continue(
                    ctx(&id),
                    id.as_bytes().to_vec().into(),
                    Input::Code { code: code.into() },
                )
                .await
                .unwrap();
            (i, step)
        }));
    }
    for t in tasks {
        let (i, step) = t.await.unwrap();
        let approved = matches!(
            step,
            Step::Done {
                verdict: Verdict::Approved { .. }
            }
        );
        assert_eq!(approved, i % 2 == 0, "call {i}: {step:?}");
    }
    p.shutdown().await;
}

/// The same containment for plugins written in C, compiled from tests/plugins/broken/.
mod c_plugins {
    use super::*;
    use rolegate::plugins::Plugin;
    use rolegate_e2e::broken_c;

    async fn c_plugin(name: &str, deadline_ms: u64) -> (tempfile::TempDir, LoadedProvider) {
        let dir = tempfile::tempdir().unwrap();
        let lib = broken_c(name, dir.path());
        let p = Plugin::open(
            "c",
            &lib,
            None,
            Isolation::Process,
            Duration::from_millis(deadline_ms),
            &plugins(100),
        )
        .await
        .unwrap()
        .instantiate(&serde_json::json!({}))
        .await
        .unwrap();
        (dir, p)
    }

    #[tokio::test]
    async fn a_c_segfault_costs_one_call() {
        let (_dir, p) = c_plugin("segfault.c", 5_000).await;
        assert_eq!(p.info().unwrap().id, "segfault");
        let e = p.challenge_start(ctx("r1")).await.unwrap_err();
        assert!(e.to_string().contains("signal 11 (SIGSEGV)"), "{e}");
        assert_eq!(
            p.health().await.unwrap().status,
            rolegate_sdk::HealthStatus::Ok
        );
        p.shutdown().await;
    }

    #[tokio::test]
    async fn a_c_hang_passes_its_deadline() {
        let (_dir, p) = c_plugin("hang.c", 300).await;
        let e = p.challenge_start(ctx("r1")).await.unwrap_err();
        assert!(matches!(e, Error::Deadline { .. }), "{e}");
        assert_eq!(
            p.health().await.unwrap().status,
            rolegate_sdk::HealthStatus::Ok
        );
        p.shutdown().await;
    }
}
