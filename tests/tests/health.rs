//! The provider boundary as an admin and a user meet it: health from what the host sees, the
//! role's rule for a factor that is down, user-sized messages, and a library swapped under a
//! running daemon.

use rolegate_e2e::daemon::sample;
use std::time::{Duration, Instant};

use rolegate_e2e::daemon::{Daemon, call, cli, serve_config};
use rolegate_e2e::{hello_lib, misbehave_lib, write_private};
use serde_json::{Value, json};

/// A daemon with `hello` (works) and `out` (misbehave in `mode`), judging health quickly:
/// degraded after 2 failures, down after 3 in a row, no trial for an hour.
fn start(mode: &str, extra: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rolegate.toml");
    write_private(
        &cfg,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[plugins]\ndegraded_after = 2\ndown_after = 3\nrecover_after = 2\ndown_retry_s = 3600\n\n\
             [[provider]]\nid = \"hello\"\nlibrary = \"{}\"\nunpinned = true\n\n\
             [[provider]]\nid = \"out\"\nlibrary = \"{}\"\nunpinned = true\n[provider.settings]\nmode = \"{mode}\"\n{extra}",
            hello_lib().display(),
            misbehave_lib().display()
        ),
    );
    serve_config(dir, &cfg)
}

/// Adds `jdoe` and role `r` (MFA through `providers`, in order, with `rule` when a factor is
/// down); returns jdoe's token.
async fn jdoe(d: &Daemon, providers: &[&str], rule: &str) -> String {
    let admin = d.admin.clone();
    let (s, e) = call(
        d,
        Some(&admin),
        "POST",
        "/v1/users",
        Some(json!({"account": "jdoe"})),
    )
    .await;
    assert_eq!(s, 201, "{e}");
    let role = json!({"name": "r", "candidates": ["jdoe"], "ttl_s": 60, "max_ttl_s": 60,
                      "mfa_enabled": true, "providers": providers, "when_factor_down": rule});
    let (s, e) = call(d, Some(&admin), "POST", "/v1/roles", Some(role)).await;
    assert_eq!(s, 201, "{e}");
    let (s, t) = call(
        d,
        Some(&admin),
        "POST",
        "/v1/tokens",
        Some(json!({"account": "jdoe"})),
    )
    .await;
    assert_eq!(s, 201, "{t}");
    t["token"].as_str().unwrap().to_string()
}

async fn metrics(d: &Daemon) -> String {
    let admin = d.admin.clone();
    let (s, m) = call(d, Some(&admin), "GET", "/metrics", None).await;
    assert_eq!(s, 200);
    m.as_str().unwrap().to_string()
}

async fn provider(d: &Daemon, token: &str, id: &str) -> Value {
    let (s, list) = call(d, Some(token), "GET", "/v1/providers", None).await;
    assert_eq!(s, 200, "{list}");
    list.as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .cloned()
        .unwrap()
}

/// Requests role `r` as `user`: the status and the request's view.
async fn ask(d: &Daemon, user: &str) -> (u16, Value) {
    call(
        d,
        Some(user),
        "POST",
        "/v1/requests",
        Some(json!({"role": "r"})),
    )
    .await
}

async fn events(d: &Daemon, id: i64) -> Vec<Value> {
    let admin = d.admin.clone();
    let (s, v) = call(d, Some(&admin), "GET", &format!("/v1/events?id={id}"), None).await;
    assert_eq!(s, 200, "{v}");
    v.as_array().unwrap().clone()
}

/// What a user hears must be theirs to act on: no provider internals.
fn user_sized(text: &str) {
    for leak in [
        "HTTP 503",
        "sha256",
        "SIGSEGV",
        "signal",
        ".so",
        "AC",
        "/",
        "unavailable:",
    ] {
        assert!(!text.contains(leak), "`{leak}` reached a user: {text}");
    }
}

#[tokio::test]
async fn an_outage_turns_a_provider_degraded_then_down_counted_logged_once_and_refused_closed() {
    let d = start("outage", "");
    let user = jdoe(&d, &["out"], "fail_closed").await;
    let admin = d.admin.clone();
    assert_eq!(
        provider(&d, &admin, "out").await["health"]["seen"]["status"],
        "ok"
    );
    for n in 1..=3 {
        let (s, r) = ask(&d, &user).await;
        assert_eq!(s, 201, "{r}");
        assert_eq!(r["state"], "failed", "request {n}: {r}");
        let reason = r["reason"].as_str().unwrap();
        assert!(
            reason.contains("unavailable") && reason.contains("try again later"),
            "{reason}"
        );
        user_sized(reason);
        if n == 2 {
            let line = d.said("provider degraded");
            assert!(line.contains("out"), "{line}");
            assert!(line.contains("WARN"), "{line}");
        }
    }
    let line = d.said("provider down");
    assert!(line.contains("WARN") && line.contains("out"), "{line}");
    // The admin sees why; the user, that it is down and what to do.
    let p = provider(&d, &admin, "out").await;
    assert_eq!(p["health"]["status"], "down", "{p}");
    assert_eq!(p["health"]["seen"]["status"], "down", "{p}");
    assert_eq!(p["health"]["seen"]["failures_in_a_row"], 3, "{p}");
    assert!(
        p["health"]["seen"]["reason"]
            .as_str()
            .unwrap()
            .contains("HTTP 503"),
        "{p}"
    );
    let seen_by_user = provider(&d, &user, "out").await;
    assert_eq!(seen_by_user["health"]["status"], "down");
    assert!(seen_by_user.get("sha256").is_none(), "{seen_by_user}");
    user_sized(&seen_by_user.to_string());
    let text = metrics(&d).await;
    let failures = "rolegate_provider_call_failures_total{provider=\"out\",op=\"challenge_start\",kind=\"unavailable\"}";
    assert_eq!(sample(&text, failures), 3.0, "{text}");
    assert_eq!(
        sample(&text, "rolegate_provider_health{provider=\"out\"}"),
        2.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "rolegate_provider_health{provider=\"hello\"}"),
        0.0,
        "{text}"
    );
    // Down: the next request is refused without calling the provider (one trial an hour).
    let (s, r) = ask(&d, &user).await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["state"], "failed", "{r}");
    user_sized(r["reason"].as_str().unwrap());
    let text = metrics(&d).await;
    assert_eq!(
        sample(&text, failures),
        3.0,
        "the provider was called: {text}"
    );
    // Each 101 says, for the admin, that the provider failed and nothing was counted.
    let failed = events(&d, 101).await;
    assert_eq!(failed.len(), 4);
    assert!(
        failed[0]["message"]
            .as_str()
            .unwrap()
            .contains("not counted as the user's failure"),
        "{failed:?}"
    );
    // The admin sees the role has no usable factor today.
    let (s, role) = call(&d, Some(&admin), "GET", "/v1/roles/r", None).await;
    assert_eq!(s, 200);
    let warnings = role["warnings"].to_string();
    assert!(warnings.contains("`out` is down"), "{warnings}");
    // Only once each: no second "down" line for the refused request.
    let (_, said, _) = d.terminate();
    assert!(
        !said.iter().any(|l| l.contains("provider down")),
        "logged twice: {said:?}"
    );
}

#[tokio::test]
async fn a_role_that_falls_back_uses_the_next_factor_with_an_event_and_one_that_fails_closed_does_not()
 {
    let d = start("outage", "");
    let user = jdoe(&d, &["out", "hello"], "fallback").await;
    let (s, r) = ask(&d, &user).await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["state"], "pending_mfa", "{r}");
    assert_eq!(r["provider"], "hello", "{r}");
    // Hello's prompt: the digits it shows, reversed.
    let message = r["prompt"]["message"].as_str().unwrap();
    let code: String = message.split(' ').nth(1).unwrap().chars().rev().collect();
    let id = r["id"].as_str().unwrap();
    let (s, v) = call(
        &d,
        Some(&user),
        "POST",
        &format!("/v1/requests/{id}/answer"),
        Some(json!({"code": code})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "active", "{v}");
    let fell = events(&d, 206).await;
    assert_eq!(fell.len(), 1, "{fell:?}");
    assert_eq!(fell[0]["provider"], "out");
    assert_eq!(fell[0]["request"], id);
    let m = fell[0]["message"].as_str().unwrap();
    assert!(
        m.contains("from `out` to `hello`") && m.contains("HTTP 503"),
        "{m}"
    );

    // Done with that activation (one live per user and role).
    let (s, c) = call(
        &d,
        Some(&user),
        "POST",
        &format!("/v1/requests/{id}/close"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{c}");
    // The same role, failing closed: no fallback, no event, the request fails.
    let admin = d.admin.clone();
    let (s, e) = call(
        &d,
        Some(&admin),
        "PUT",
        "/v1/roles/r",
        Some(
            json!({"name": "r", "candidates": ["jdoe"], "ttl_s": 60, "max_ttl_s": 60,
                    "mfa_enabled": true, "providers": ["out", "hello"]}),
        ),
    )
    .await;
    assert_eq!(s, 200, "{e}");
    let (_, r) = ask(&d, &user).await;
    assert_eq!(r["state"], "failed", "{r}");
    assert_eq!(r["provider"], "out", "{r}");
    assert_eq!(events(&d, 206).await.len(), 1, "no new fallback");
}

#[tokio::test]
async fn role_get_warns_of_a_factor_no_candidate_can_use_today() {
    let d = start(
        "ok",
        "\n[[provider]]\nid = \"sec\"\nlibrary = \"MIS\"\nunpinned = true\n[provider.settings]\nmode = \"enrol\"\n"
            .replace("MIS", &misbehave_lib().display().to_string())
            .as_str(),
    );
    let user = jdoe(&d, &["sec"], "fallback").await;
    let admin = d.admin.clone();
    let (s, role) = call(&d, Some(&admin), "GET", "/v1/roles/r", None).await;
    assert_eq!(s, 200, "{role}");
    let warnings = role["warnings"].to_string();
    assert!(
        warnings.contains("no candidate can use provider `sec` today: nobody is enrolled"),
        "{warnings}"
    );
    assert!(
        warnings.contains("no candidate can activate role `r` today"),
        "{warnings}"
    );
    assert!(warnings.contains("nothing to fall back to"), "{warnings}");
    // A user reads the role, not who else lacks what.
    let (s, seen) = call(&d, Some(&user), "GET", "/v1/roles/r", None).await;
    assert_eq!(s, 200);
    assert!(seen.get("warnings").is_none(), "{seen}");
    // The CLI says it on standard error.
    let (ok, out) = cli(&d, &admin, &["role", "get", "r"], "");
    assert!(ok, "{out}");
    assert!(
        out.contains("warning: no candidate can use provider `sec` today"),
        "{out}"
    );
    // A role whose factor someone can use raises none.
    let (s, e) = call(
        &d,
        Some(&admin),
        "POST",
        "/v1/roles",
        Some(
            json!({"name": "fine", "candidates": ["jdoe"], "ttl_s": 60, "max_ttl_s": 60,
                    "mfa_enabled": true, "providers": ["hello"]}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{e}");
    let (_, fine) = call(&d, Some(&admin), "GET", "/v1/roles/fine", None).await;
    assert_eq!(fine["warnings"], json!([]), "{fine}");
}

#[tokio::test]
async fn a_library_swapped_under_a_running_daemon_raises_401_naming_the_provider() {
    let dir = tempfile::tempdir().unwrap();
    let lib = dir.path().join("libpinned.so");
    std::fs::copy(misbehave_lib(), &lib).unwrap();
    let pin = sha256_hex(&std::fs::read(&lib).unwrap());
    let cfg = dir.path().join("rolegate.toml");
    write_private(
        &cfg,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[[provider]]\nid = \"pinned\"\nlibrary = \"{}\"\nsha256 = \"{pin}\"\nisolation = \"process\"\n[provider.settings]\nmode = \"segfault\"\n",
            lib.display()
        ),
    );
    let d = serve_config(dir, &cfg);
    let user = jdoe(&d, &["pinned"], "fail_closed").await;
    // The first request crashes the worker (402); then the library changes on disk.
    let (_, r) = ask(&d, &user).await;
    assert_eq!(r["state"], "failed", "{r}");
    user_sized(r["reason"].as_str().unwrap());
    let swapped = d.dir.path().join("libpinned.so.new");
    std::fs::copy(hello_lib(), &swapped).unwrap();
    std::fs::rename(&swapped, d.dir.path().join("libpinned.so")).unwrap();
    // The next request needs a new worker, which refuses the file.
    let (_, r) = ask(&d, &user).await;
    assert_eq!(r["state"], "failed", "{r}");
    user_sized(r["reason"].as_str().unwrap());
    let line = d.said("a new plugin worker was refused");
    assert!(line.contains("pinned"), "{line}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let e = events(&d, 401).await;
        if !e.is_empty() || Instant::now() > deadline {
            break e;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0]["provider"], "pinned");
    assert!(
        refused[0]["message"]
            .as_str()
            .unwrap()
            .contains("a new worker was refused"),
        "{refused:?}"
    );
    // Asked again, the same refusal is not told again.
    ask(&d, &user).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(events(&d, 401).await.len(), 1);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Issue 33: a host whose PostgreSQL is unreachable stays alive (`/healthz`), says it is not
/// ready (`/readyz` 503) so that a load balancer takes it out, answers calls with 503
/// `store_unavailable` and Retry-After instead of a 500, and serves again once the database is
/// back — reconnecting by itself.
#[tokio::test]
async fn a_host_whose_database_is_away_is_alive_not_ready_and_comes_back() {
    let (proxy, through) =
        rolegate_e2e::proxy::Cuttable::in_front_of(&rolegate_e2e::pg::fresh_database());
    let d = start("ok", &format!("\n[store]\npostgres = \"{through}\"\n"));
    let admin = d.admin.clone();
    let client = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut r = client.get(format!("{}{path}", d.url));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(String::from);
            (status, retry, r.text().await.unwrap())
        }
    };
    assert_eq!(get("/readyz", None).await.0, 200);
    assert_eq!(get("/v1/roles", Some(&admin)).await.0, 200);
    // The request path's read (pipelined on shared connections) opens them before the cut.
    let user = jdoe(&d, &["hello"], "fallback").await;
    let close = |id: String| {
        let (d, user) = (&d, user.clone());
        async move {
            let path = format!("/v1/requests/{id}/close");
            let (s, c) = call(d, Some(&user), "POST", &path, None).await;
            assert_eq!(s, 200, "{c}");
        }
    };
    let (s, r) = ask(&d, &user).await;
    assert_eq!(s, 201, "{r}");
    close(r["id"].as_str().unwrap().to_string()).await;

    proxy.cut();
    let (s, _, body) = get("/healthz", None).await;
    assert_eq!(
        (s, body.as_str()),
        (200, "ok"),
        "alive: liveness does not ask the store"
    );
    let (s, retry, body) = get("/readyz", None).await;
    assert_eq!(s, 503, "{body}");
    assert!(
        retry.is_some() && body.contains("store_unavailable"),
        "{retry:?} {body}"
    );
    // A read and a write: 503 with Retry-After, never a 500.
    let (s, retry, body) = get("/v1/roles", Some(&admin)).await;
    assert_eq!((s, retry.as_deref()), (503, Some("5")), "{body}");
    assert!(body.contains("the store is unreachable now"), "{body}");
    let (s, e) = call(
        &d,
        Some(&admin),
        "POST",
        "/v1/users",
        Some(json!({"account": "asmith"})),
    )
    .await;
    assert_eq!(
        (s, &e["error"]["code"]),
        (503, &json!("store_unavailable")),
        "{e}"
    );
    // A user's request too: its read's shared connection is gone.
    let (s, e) = ask(&d, &user).await;
    assert_eq!(
        (s, &e["error"]["code"]),
        (503, &json!("store_unavailable")),
        "{e}"
    );

    // Back: ready again within a few seconds, and the write goes through.
    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(15);
    while get("/readyz", None).await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready again 15 s after the database came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, e) = call(
        &d,
        Some(&admin),
        "POST",
        "/v1/users",
        Some(json!({"account": "asmith"})),
    )
    .await;
    assert_eq!(s, 201, "{e}");
    // And the user's request, on connections opened again.
    let (s, r) = ask(&d, &user).await;
    assert_eq!((s, &r["state"]), (201, &json!("pending_mfa")), "{r}");
}
