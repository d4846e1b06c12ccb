//! The daemon over HTTP: `rolegate serve` started as a process, driven with real requests.

use rolegate_e2e::daemon::sample;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rolegate_e2e::daemon::{Daemon, call, cli, cli_at, refused_to_serve, serve_config};
use rolegate_e2e::{hello_lib, rolegate_bin, write_private};
use serde_json::{Value, json};

fn start() -> Daemon {
    let d = start_with("");
    assert!(!d.admin.is_empty(), "no first admin token printed");
    d
}

fn start_with(extra: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rolegate.toml");
    write_private(
        &cfg,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[events]\njsonl = \"events.jsonl\"\n\n[[provider]]\nid = \"hello\"\nlibrary = \"{}\"\nunpinned = true\n{extra}",
            hello_lib().display()
        ),
    );
    serve_config(dir, &cfg)
}

/// The right answer to hello's prompt in a request view: the digits it shows, reversed.
fn hello_answer(view: &Value) -> String {
    let message = view["prompt"]["message"].as_str().unwrap();
    message.split(' ').nth(1).unwrap().chars().rev().collect()
}

/// Requests a role as `token` (`body` as `POST /v1/requests` takes it), answers hello's
/// prompt right, and checks that the request became active; returns its id.
async fn activate_with_hello(d: &Daemon, token: &str, body: Value) -> String {
    let (s, r) = call(d, Some(token), "POST", "/v1/requests", Some(body)).await;
    assert_eq!(s, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    let (s, r) = call(
        d,
        Some(token),
        "POST",
        &format!("/v1/requests/{id}/answer"),
        Some(json!({"code": hello_answer(&r)})),
    )
    .await;
    assert_eq!((s, r["state"].as_str()), (200, Some("active")), "{r}");
    id
}

/// The status of a call without a body.
async fn status(d: &Daemon, token: &str, method: &str, path: &str) -> u16 {
    call(d, Some(token), method, path, None).await.0
}

/// Creates a user as `admin` (`body` as `POST /v1/users` takes it) and returns the user.
async fn new_user(d: &Daemon, admin: &str, body: Value) -> Value {
    let (s, v) = call(d, Some(admin), "POST", "/v1/users", Some(body)).await;
    assert_eq!(s, 201, "{v}");
    v
}

/// Issues a token as `admin` (`body`: account, label, admin) and returns its secret.
async fn issue_token(d: &Daemon, admin: &str, body: Value) -> String {
    let (s, t) = call(d, Some(admin), "POST", "/v1/tokens", Some(body)).await;
    assert_eq!(s, 201, "{t}");
    t["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_user_activates_a_role_through_mfa_over_http() {
    let d = start();
    let admin = d.admin.clone();
    new_user(
        &d,
        &admin,
        json!({"account": "CONTOSO\\jdoe", "display_name": "Jane", "phone": "425 555 0100"}),
    )
    .await;
    new_user(&d, &admin, json!({"account": "CONTOSO\\boss"})).await;
    let role = json!({"name": "Domain Admins", "candidates": ["CONTOSO\\jdoe"], "approvers": ["CONTOSO\\boss"],
                      "ttl_s": 3600, "max_ttl_s": 7200, "mfa_enabled": true, "approval_enabled": true, "providers": ["hello"]});
    let (s, _) = call(&d, Some(&admin), "POST", "/v1/roles", Some(role)).await;
    assert_eq!(s, 201);
    let user = issue_token(&d, &admin, json!({"account": "CONTOSO\\jdoe"})).await;
    let boss = issue_token(&d, &admin, json!({"account": "CONTOSO\\boss"})).await;

    let (s, r) = call(
        &d,
        Some(&user),
        "POST",
        "/v1/requests",
        Some(json!({"role": "Domain Admins", "justification": "patch night"})),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["state"], "pending_mfa");
    let id = r["id"].as_str().unwrap().to_string();
    let answer = hello_answer(&r);
    let (s, r) = call(
        &d,
        Some(&user),
        "POST",
        &format!("/v1/requests/{id}/answer"),
        Some(json!({"code": answer})),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["state"], "pending_approval");

    // The requester cannot approve; the approver sees it and approves.
    let (s, e) = call(
        &d,
        Some(&user),
        "POST",
        &format!("/v1/approvals/{id}/approve"),
        None,
    )
    .await;
    assert_eq!(s, 403, "{e}");
    let (_, list) = call(&d, Some(&boss), "GET", "/v1/approvals", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (s, r) = call(
        &d,
        Some(&boss),
        "POST",
        &format!("/v1/approvals/{id}/approve"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["state"], "active");

    let (_, ev) = call(&d, Some(&admin), "GET", "/v1/events?id=103", None).await;
    assert_eq!(ev.as_array().unwrap().len(), 1);
    let (_, v) = call(&d, Some(&admin), "GET", "/v1/events/verify", None).await;
    assert_eq!(v["intact"], true);
    // The SIEM file follows the log within a second or so.
    let jsonl = d.dir.path().join("events.jsonl");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while Instant::now() < deadline && !text.contains("\"id\":203") {
        std::thread::sleep(Duration::from_millis(100));
        text = std::fs::read_to_string(&jsonl).unwrap_or_default();
    }
    assert!(
        text.contains("\"id\":103") && text.contains("\"id\":203"),
        "{text}"
    );
    let (s, r) = call(
        &d,
        Some(&user),
        "POST",
        &format!("/v1/requests/{id}/close"),
        None,
    )
    .await;
    assert_eq!((s, r["state"].as_str()), (200, Some("closed")));
}

#[tokio::test]
async fn refusals_over_http_have_status_codes_and_messages() {
    let d = start();
    let (s, e) = call(&d, None, "GET", "/v1/roles", None).await;
    assert_eq!(s, 401);
    assert_eq!(e["error"]["code"], "unauthorized");
    let (s, _) = call(&d, Some("rg_nonsense"), "GET", "/v1/roles", None).await;
    assert_eq!(s, 401);
    // Request creation verifies its token inside its own read: the same refusal.
    for token in [None, Some("rg_nonsense")] {
        let (s, e) = call(
            &d,
            token,
            "POST",
            "/v1/requests",
            Some(json!({"role": "r"})),
        )
        .await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (401, Some("unauthorized")),
            "{e}"
        );
    }
    let admin = d.admin.clone();
    call(
        &d,
        Some(&admin),
        "POST",
        "/v1/users",
        Some(json!({"account": "jdoe"})),
    )
    .await;
    let user = issue_token(&d, &admin, json!({"account": "jdoe"})).await;
    let (s, e) = call(
        &d,
        Some(&user),
        "POST",
        "/v1/users",
        Some(json!({"account": "eve"})),
    )
    .await;
    assert_eq!((s, e["error"]["code"].as_str()), (403, Some("forbidden")));
    let (s, e) = call(
        &d,
        Some(&admin),
        "POST",
        "/v1/users",
        Some(json!({"account": "x", "phone": "call me"})),
    )
    .await;
    assert_eq!(s, 422);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("phone number `call me`"),
        "{e}"
    );
    let (s, e) = call(
        &d,
        Some(&user),
        "POST",
        "/v1/requests",
        Some(json!({"role": "nope"})),
    )
    .await;
    assert_eq!(
        (s, e["error"]["message"].as_str()),
        (404, Some("role `nope` not found"))
    );
    let (s, e) = call(
        &d,
        Some(&admin),
        "PATCH",
        "/v1/users/jdoe",
        Some(json!({"phone": "+44 20 7946 0958"})),
    )
    .await;
    assert_eq!(s, 200, "{e}");
    let (_, ev) = call(&d, Some(&admin), "GET", "/v1/events?id=825", None).await;
    assert_eq!(ev.as_array().unwrap().len(), 1, "{ev}");
    let (s, doc) = call(&d, None, "GET", "/openapi.json", None).await;
    assert_eq!(s, 200);
    assert_eq!(doc["openapi"], "3.1.0");
}

/// Adds user `jdoe`, a role `r` for them with MFA through `provider`, and returns jdoe's token.
async fn jdoe_with_role(d: &Daemon, provider: &str) -> String {
    let admin = d.admin.clone();
    call(
        d,
        Some(&admin),
        "POST",
        "/v1/users",
        Some(json!({"account": "jdoe"})),
    )
    .await;
    let role = json!({"name": "r", "candidates": ["jdoe"], "ttl_s": 60, "max_ttl_s": 60,
                      "mfa_enabled": true, "providers": [provider]});
    let (s, e) = call(d, Some(&admin), "POST", "/v1/roles", Some(role)).await;
    assert_eq!(s, 201, "{e}");
    issue_token(d, &admin, json!({"account": "jdoe"})).await
}

#[tokio::test]
async fn the_cli_mirrors_the_pam_cmdlets_against_a_running_daemon() {
    let d = start();
    let admin = d.admin.clone();
    let ok = |r: (bool, String)| {
        assert!(r.0, "{}", r.1);
        r.1
    };
    ok(cli(
        &d,
        &admin,
        &[
            "user",
            "new",
            "CONTOSO\\jdoe",
            "--display-name",
            "Jane Doe",
            "--phone",
            "425 555 0100",
        ],
        "",
    ));
    ok(cli(&d, &admin, &["user", "new", "CONTOSO\\boss"], ""));
    let out = ok(cli(&d, &admin, &["user", "get", "CONTOSO\\jdoe"], ""));
    assert!(out.contains("+14255550100"), "{out}");
    ok(cli(
        &d,
        &admin,
        &[
            "role",
            "new",
            "Domain Admins",
            "--candidates",
            "CONTOSO\\jdoe",
            "--approvers",
            "CONTOSO\\boss",
            "--ttl",
            "3600",
            "--mfa-enabled",
            "1",
            "--providers",
            "hello",
        ],
        "",
    ));
    let out = ok(cli(
        &d,
        &admin,
        &["role", "set", "Domain Admins", "--approval-enabled", "1"],
        "",
    ));
    assert!(out.contains("Domain Admins"), "{out}");
    let out = ok(cli(
        &d,
        &admin,
        &["--json", "token", "new", "--account", "CONTOSO\\jdoe"],
        "",
    ));
    let user: String = serde_json::from_str::<Value>(&out).unwrap()["token"]
        .as_str()
        .unwrap()
        .into();
    let out = ok(cli(
        &d,
        &admin,
        &["--json", "token", "new", "--account", "CONTOSO\\boss"],
        "",
    ));
    let boss: String = serde_json::from_str::<Value>(&out).unwrap()["token"]
        .as_str()
        .unwrap()
        .into();
    // Whose token is it: the CLI asks the daemon; a revoked or made-up one is refused.
    assert_eq!(
        ok(cli(&d, &user, &["whoami"], "")).trim(),
        "`CONTOSO\\jdoe` (a user token)"
    );
    assert_eq!(
        ok(cli(&d, &admin, &["whoami"], "")).trim(),
        "`admin` (an admin token)"
    );
    let me: Value = serde_json::from_str(&ok(cli(&d, &boss, &["--json", "whoami"], ""))).unwrap();
    assert_eq!(
        (me["account"].as_str(), me["admin"].as_bool()),
        (Some("CONTOSO\\boss"), Some(false))
    );
    let (okay, out) = cli(&d, "rg_not_a_token", &["whoami"], "");
    assert!(!okay, "{out}");
    assert!(
        out.contains("the daemon refused the token (the token is not valid); set --token or ROLEGATE_TOKEN to a valid one"),
        "{out}"
    );

    // A wrong code on standard input: the challenge fails after the attempts, clearly.
    let (okay, out) = cli(
        &d,
        &user,
        &[
            "request",
            "new",
            "--role",
            "Domain Admins",
            "--justification",
            "x",
        ],
        "000000\n000000\n000000\n",
    );
    assert!(!okay, "a request that failed exits non-zero: {out}");
    assert!(
        out.contains("failed (wrong code; no attempts left)"),
        "{out}"
    );

    // The right code: read the prompt, answer it, then the approver approves.
    let (_, pending) = call(
        &d,
        Some(&user),
        "POST",
        "/v1/requests",
        Some(json!({"role": "Domain Admins"})),
    )
    .await;
    let id = pending["id"].as_str().unwrap().to_string();
    let answer = hello_answer(&pending);
    call(
        &d,
        Some(&user),
        "POST",
        &format!("/v1/requests/{id}/answer"),
        Some(json!({"code": answer})),
    )
    .await;
    let out = ok(cli(&d, &boss, &["approval", "list"], ""));
    assert!(
        out.contains(&id) && out.contains("pending_approval"),
        "{out}"
    );
    let out = ok(cli(&d, &boss, &["approval", "approve", &id], ""));
    assert!(out.contains("is active until"), "{out}");
    let out = ok(cli(&d, &admin, &["events", "--id", "103"], ""));
    assert!(out.contains("MFA completed"), "{out}");
    let out = ok(cli(&d, &admin, &["events", "verify"], ""));
    assert!(out.starts_with("event log intact:"), "{out}");
    let out = ok(cli(
        &d,
        &admin,
        &["user", "unlock", "CONTOSO\\jdoe", "--provider", "hello"],
        "",
    ));
    assert!(out.contains("was not locked out"), "{out}");
    let (okay, out) = cli(&d, &user, &["user", "new", "eve"], "");
    assert!(!okay && out.contains("this needs an admin token"), "{out}");
    let (okay, out) = cli(&d, "rg_bad", &["role", "get"], "");
    assert!(!okay && out.contains("the token is not valid"), "{out}");
}

#[tokio::test]
async fn provider_loads_and_crashes_are_in_the_event_log() {
    let d = start_with(&format!(
        "\n[[provider]]\nid = \"mis\"\nlibrary = \"{}\"\nunpinned = true\nisolation = \"process\"\n[provider.settings]\nmode = \"segfault\"\n",
        rolegate_e2e::misbehave_lib().display()
    ));
    let admin = d.admin.clone();
    let (_, loaded) = call(&d, Some(&admin), "GET", "/v1/events?id=400", None).await;
    assert_eq!(loaded.as_array().unwrap().len(), 2, "{loaded}");
    let user = jdoe_with_role(&d, "mis").await;
    let (s, r) = call(
        &d,
        Some(&user),
        "POST",
        "/v1/requests",
        Some(json!({"role": "r"})),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["state"], "failed", "{r}");
    // The user hears that the provider failed and that nothing counts against them; the
    // admin reads the crash in event 101 (and 402 below).
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains("the factor `mis` is unavailable") && reason.contains("try again later"),
        "{r}"
    );
    assert!(!reason.contains("SIGSEGV"), "{r}");
    let (_, failed) = call(&d, Some(&admin), "GET", "/v1/events?id=101", None).await;
    let failed = failed[0]["message"].as_str().unwrap();
    assert!(
        failed.contains("SIGSEGV") && failed.contains("not counted as the user's failure"),
        "{failed}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, crashed) = call(&d, Some(&admin), "GET", "/v1/events?id=402", None).await;
        if let Some(e) = crashed.as_array().and_then(|a| a.first()) {
            assert_eq!(e["provider"], "mis");
            assert!(
                e["message"]
                    .as_str()
                    .unwrap()
                    .contains("signal 11 (SIGSEGV)"),
                "{e}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "no 402 event");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, failed) = call(&d, Some(&admin), "GET", "/v1/events?id=101", None).await;
    assert_eq!(failed.as_array().unwrap().len(), 1);
    // The metrics say the same: the crashed call, the failed MFA, the crash.
    let (s, metrics) = call(&d, Some(&admin), "GET", "/metrics", None).await;
    assert_eq!(s, 200);
    let text = metrics.as_str().unwrap();
    assert_eq!(
        sample(
            text,
            "rolegate_provider_call_failures_total{provider=\"mis\",op=\"challenge_start\",kind=\"crash\"}"
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(text, "rolegate_events_total{id=\"101\",provider=\"mis\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(text, "rolegate_events_total{id=\"402\",provider=\"mis\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(text, "rolegate_requests{state=\"active\"}"),
        0.0,
        "{text}"
    );
}

#[tokio::test]
async fn a_refused_provider_stops_the_start_and_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rolegate.toml");
    write_private(
        &cfg,
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[provider]]\nid = \"gone\"\nlibrary = \"libgone.so\"\nunpinned = true\n",
    );
    let stderr = refused_to_serve(&cfg);
    assert!(
        stderr.contains("provider `gone`:") && stderr.contains("libgone.so: file not found"),
        "{stderr}"
    );
    let db = rolegate::store::sqlite::Sqlite::open(&dir.path().join("rolegate.db"), 0).unwrap();
    let refused = db
        .read(|tx| {
            rolegate::records::events::list(
                tx,
                &rolegate::records::events::Filter {
                    id: Some(rolegate::records::events::PROVIDER_REFUSED),
                    ..Default::default()
                },
            )
        })
        .await
        .unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(
        refused[0].provider.as_deref(),
        Some("gone"),
        "401 names the provider"
    );
    assert!(
        refused[0].message.ends_with("libgone.so: file not found"),
        "{}",
        refused[0].message
    );
}

#[tokio::test]
async fn a_user_enrols_then_activates_with_the_enrolled_factor() {
    let d = start_with(&format!(
        "\n[[provider]]\nid = \"sec\"\nlibrary = \"{}\"\nunpinned = true\n[provider.settings]\nmode = \"enrol\"\n",
        rolegate_e2e::misbehave_lib().display()
    ));
    let admin = d.admin.clone();
    let user = jdoe_with_role(&d, "sec").await;

    let (s, e) = call(
        &d,
        Some(&user),
        "POST",
        "/v1/requests",
        Some(json!({"role": "r"})),
    )
    .await;
    assert_eq!(s, 403, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("you can use none of them yet"),
        "{e}"
    );

    // A wrong confirmation code stores nothing; a tampered state is refused.
    let (okay, out) = cli(&d, &user, &["enrol", "sec"], "1111\n");
    assert!(!okay && out.contains("that is not the secret"), "{out}");
    let (_, v) = call(
        &d,
        Some(&user),
        "POST",
        "/v1/enrolments",
        Some(json!({"provider": "sec"})),
    )
    .await;
    assert_eq!(v["prompt"]["kind"], "display", "{v}");
    let mut state = v["state"].as_str().unwrap().to_string();
    state.replace_range(..2, if state.starts_with("00") { "11" } else { "00" });
    let (s, e) = call(
        &d,
        Some(&user),
        "POST",
        "/v1/enrolments/continue",
        Some(json!({"provider": "sec", "state": state, "code": "4321"})),
    )
    .await;
    assert_eq!(s, 422, "{e}");

    let (okay, out) = cli(&d, &user, &["enrol", "sec"], "4321\n");
    assert!(okay, "{out}");
    assert!(
        out.contains("your secret is 4321") && out.contains("enrolled in `sec` (credential `c1`)"),
        "{out}"
    );

    let (s, r) = call(
        &d,
        Some(&user),
        "POST",
        "/v1/requests",
        Some(json!({"role": "r"})),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    let (_, r) = call(
        &d,
        Some(&user),
        "POST",
        &format!("/v1/requests/{id}/answer"),
        Some(json!({"code": "4321"})),
    )
    .await;
    assert_eq!(r["state"], "active", "{r}");
    let (_, ev) = call(&d, Some(&admin), "GET", "/v1/events?id=310", None).await;
    assert_eq!(ev.as_array().unwrap().len(), 1, "{ev}");

    // While an answer is on its way, an admin disables the user, or removes the credential
    // (a lost key): the right answer no longer activates (a disabled user's request is
    // cancelled; a request whose credential went stays pending).
    let (dr, ur) = (&d, user.as_str());
    let new_request = || async move {
        rolegate_e2e::daemon::close_active(dr, ur, "r").await;
        let (s, r) = call(
            dr,
            Some(ur),
            "POST",
            "/v1/requests",
            Some(json!({"role": "r"})),
        )
        .await;
        assert_eq!(s, 201, "{r}");
        r["id"].as_str().unwrap().to_string()
    };
    let answer = |id: String| async move {
        call(
            dr,
            Some(ur),
            "POST",
            &format!("/v1/requests/{id}/answer"),
            Some(json!({"code": "4321"})),
        )
        .await
    };
    let id = new_request().await;
    let (s, _) = call(
        &d,
        Some(&admin),
        "PATCH",
        "/v1/users/jdoe",
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(s, 200);
    let (s, e) = answer(id.clone()).await;
    assert_eq!(s, 403, "{e}");
    assert!(
        e.to_string().contains("not an enabled rolegate user"),
        "{e}"
    );
    // Disabling the user cancelled the request (what they wait for ends with their access);
    // the refused answer changed nothing of it.
    let (_, r) = call(&d, Some(&admin), "GET", &format!("/v1/requests/{id}"), None).await;
    assert_eq!(r["state"], "cancelled", "{r}");
    assert_eq!(r["reason"], "`jdoe` was disabled by `admin`", "{r}");
    let (s, _) = call(
        &d,
        Some(&admin),
        "PATCH",
        "/v1/users/jdoe",
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(s, 200);
    let id = new_request().await;
    let (s, e) = call(
        &d,
        Some(&admin),
        "DELETE",
        "/v1/users/jdoe/credentials/sec/c1",
        None,
    )
    .await;
    assert_eq!(s, 200, "{e}");
    let (s, e) = answer(id.clone()).await;
    assert_eq!(s, 409, "{e}");
    assert!(e.to_string().contains("the credentials changed"), "{e}");
    let (_, r) = call(&d, Some(&admin), "GET", &format!("/v1/requests/{id}"), None).await;
    assert_eq!(r["state"], "pending_mfa", "{r}");
    let (s, e) = call(
        &d,
        Some(&user),
        "POST",
        "/v1/enrolments",
        Some(json!({"provider": "hello"})),
    )
    .await;
    assert_eq!(s, 422, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("needs no enrolment"),
        "{e}"
    );
}

/// Two daemons on one PostgreSQL database (HA): a request made on one is answered on the
/// other, one first admin token is issued, and the event chain stays whole.
#[tokio::test]
async fn two_daemons_share_one_postgresql_database() {
    let conn = rolegate_e2e::pg::fresh_database();
    let store = format!("\n[store]\npostgres = \"{conn}\"\n");
    let a = start_with(&store);
    assert!(
        !a.admin.is_empty(),
        "the first start prints the admin token"
    );
    // Every instance needs the same key file: one with its own is refused at start.
    let other = tempfile::tempdir().unwrap();
    let cfg = other.path().join("rolegate.toml");
    write_private(
        &cfg,
        &format!("[server]\nlisten = \"127.0.0.1:0\"\n{store}"),
    );
    let mut c = Command::new(rolegate_bin())
        .args(["serve", "--config"])
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let out = c.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs the same key file"), "{stderr}");

    let key = a.dir.path().join("rolegate.key");
    let b = start_with(&format!("{store}key_file = \"{}\"\n", key.display()));
    assert!(
        b.admin.is_empty(),
        "the second instance issues no second token"
    );
    let user = jdoe_with_role(&a, "hello").await;
    let (s, v) = call(
        &b,
        Some(&user),
        "POST",
        "/v1/requests",
        Some(json!({"role": "r", "justification": "quarter close"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let code = hello_answer(&v);
    let (s, v) = call(
        &a,
        Some(&user),
        "POST",
        &format!("/v1/requests/{id}/answer"),
        Some(json!({"code": code})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "active");
    let (s, v) = call(
        &b,
        Some(&a.admin),
        "GET",
        &format!("/v1/requests/{id}"),
        None,
    )
    .await;
    assert_eq!((s, v["state"].as_str()), (200, Some("active")));
    let (s, v) = call(&b, Some(&a.admin), "GET", "/v1/events/verify", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["intact"], true, "{v}");
}

/// Every admin change is in the event log: who did what, naming fields rather than values.
#[tokio::test]
async fn admin_changes_are_logged_with_their_actor() {
    let d = start();
    let admin = d.admin.clone();
    new_user(
        &d,
        &admin,
        json!({"account": "jdoe", "phone": "425 555 0100"}),
    )
    .await;
    let (s, _) = call(
        &d,
        Some(&admin),
        "PATCH",
        "/v1/users/jdoe",
        Some(json!({"email": "jdoe@contoso.com", "enabled": false})),
    )
    .await;
    assert_eq!(s, 200);
    let role = json!({"name": "r", "candidates": ["jdoe"], "ttl_s": 60, "max_ttl_s": 60});
    let (s, _) = call(&d, Some(&admin), "POST", "/v1/roles", Some(role)).await;
    assert_eq!(s, 201);
    let role = json!({"name": "r", "candidates": ["jdoe"], "ttl_s": 120, "max_ttl_s": 600});
    let (s, _) = call(&d, Some(&admin), "PUT", "/v1/roles/r", Some(role)).await;
    assert_eq!(s, 200);
    issue_token(&d, &admin, json!({"account": "jdoe", "label": "laptop"})).await;
    let (s, _) = call(&d, Some(&admin), "DELETE", "/v1/roles/r", None).await;
    assert_eq!(s, 204);
    let (s, _) = call(&d, Some(&admin), "DELETE", "/v1/users/jdoe", None).await;
    assert_eq!(s, 204);
    // A refused change leaves no event.
    let (s, _) = call(&d, Some(&admin), "DELETE", "/v1/users/nobody", None).await;
    assert_eq!(s, 404);

    let (s, list) = call(&d, Some(&admin), "GET", "/v1/events?limit=100", None).await;
    assert_eq!(s, 200);
    let admin_events: Vec<(i64, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .filter(|e| e["source"] == "admin")
        .map(|e| {
            (
                e["id"].as_i64().unwrap(),
                e["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let ids: Vec<i64> = admin_events.iter().map(|e| e.0).collect();
    assert_eq!(ids, [500, 501, 510, 511, 520, 512, 502], "{admin_events:?}");
    for (_, m) in &admin_events {
        assert!(m.ends_with("by `admin`"), "{m}");
    }
    assert!(
        admin_events[1].1.contains("email, enabled=false"),
        "{:?}",
        admin_events[1]
    );
    assert!(
        !admin_events[1].1.contains("contoso.com"),
        "values stay out: {:?}",
        admin_events[1]
    );
    assert!(
        admin_events[3].1.contains("max_ttl_s, ttl_s"),
        "{:?}",
        admin_events[3]
    );
    assert!(
        admin_events[4]
            .1
            .contains("user token issued (label `laptop`)"),
        "{:?}",
        admin_events[4]
    );
}

#[tokio::test]
async fn a_revoked_token_is_refused_at_once() {
    let d = start();
    let admin = d.admin.clone();
    new_user(&d, &admin, json!({"account": "jdoe"})).await;
    let token = issue_token(&d, &admin, json!({"account": "jdoe", "label": "laptop"})).await;
    // It works, and the daemon now keeps it in its token cache.
    assert_eq!(status(&d, &token, "GET", "/v1/requests").await, 200);
    // Admins list tokens by id, never by secret; users may not list them.
    assert_eq!(status(&d, &token, "GET", "/v1/tokens").await, 403);
    let (s, list) = call(&d, Some(&admin), "GET", "/v1/tokens", None).await;
    assert_eq!(s, 200);
    assert!(!list.to_string().contains(&token), "{list}");
    let laptop: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["label"] == "laptop")
        .collect();
    assert_eq!(laptop.len(), 1, "{list}");
    assert_eq!(laptop[0]["account"], "jdoe");
    assert_eq!(laptop[0]["admin"], false);
    let id = laptop[0]["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 16);
    // Refusals: a malformed id, an unknown one, a user revoking.
    let (s, e) = call(&d, Some(&admin), "DELETE", "/v1/tokens/not-an-id", None).await;
    assert_eq!(s, 422, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is not a token id"),
        "{e}"
    );
    assert_eq!(
        status(&d, &admin, "DELETE", "/v1/tokens/0123456789abcdef").await,
        404
    );
    assert_eq!(
        status(&d, &token, "DELETE", &format!("/v1/tokens/{id}")).await,
        403
    );
    // Revoked with the CLI: refused on the very next call, though the daemon had it cached.
    let (ok, out) = cli(&d, &admin, &["token", "revoke", &id], "");
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("token `{id}` of `jdoe` revoked")),
        "{out}"
    );
    assert_eq!(status(&d, &token, "GET", "/v1/requests").await, 401);
    assert_eq!(
        status(&d, &admin, "DELETE", &format!("/v1/tokens/{id}")).await,
        404
    );
    let (ok, out) = cli(&d, &admin, &["token", "list"], "");
    assert!(
        ok && !out.contains(&id) && out.contains("first admin"),
        "{out}"
    );
    let (s, events) = call(&d, Some(&admin), "GET", "/v1/events?id=521", None).await;
    assert_eq!(s, 200);
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0]["message"],
        format!("user token `{id}` revoked (label `laptop`) by `admin`")
    );
    assert_eq!(events[0]["account"], "jdoe");
    // Removing a user revokes their tokens with them, at once.
    let second = issue_token(&d, &admin, json!({"account": "JDOE"})).await;
    assert_eq!(status(&d, &second, "GET", "/v1/requests").await, 200);
    assert_eq!(status(&d, &admin, "DELETE", "/v1/users/jdoe").await, 204);
    assert_eq!(status(&d, &second, "GET", "/v1/requests").await, 401);
    let (s, removed) = call(&d, Some(&admin), "GET", "/v1/events?id=502", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        removed[0]["message"],
        "user and credentials removed, 1 token(s) revoked by `admin`"
    );
    // Another process ends a token the daemon has cached (a bare statement on the database
    // file, as `rolegate import` writes it): refused once the daemon's writer notices that
    // commit (within 100 ms; waited for here up to 5 s).
    new_user(&d, &admin, json!({"account": "jroe"})).await;
    let third = issue_token(&d, &admin, json!({"account": "jroe"})).await;
    let fourth = issue_token(&d, &admin, json!({"account": "jroe"})).await;
    assert_eq!(status(&d, &third, "GET", "/v1/requests").await, 200);
    let now = jiff::Timestamp::now().as_millisecond();
    let expire = |token: &str, at: i64| {
        let hash = rolegate::store::secrets::token_hash(token);
        move |tx: &mut dyn rolegate::store::Tx| {
            tx.execute(
                "UPDATE tokens SET expires_at = $1 WHERE hash = $2",
                &[rolegate::store::Value::Int(at), hash.into()],
            )
        }
    };
    let other =
        rolegate::store::sqlite::Sqlite::open(&d.dir.path().join("rolegate.db"), now).unwrap();
    other.write(expire(&third, now - 1)).await.unwrap();
    // The fourth may live three more seconds: it is first used (and cached) before that.
    let end = now + 3_000;
    other.write(expire(&fourth, end)).await.unwrap();
    other.close();
    let mut waited = 0;
    while status(&d, &third, "GET", "/v1/requests").await != 401 {
        assert!(
            waited < 5_000,
            "another process's expiry of a token never counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        waited += 50;
    }
    // A cached token stops working at its expiry, with no change to tell of it.
    assert_eq!(status(&d, &fourth, "GET", "/v1/requests").await, 200);
    assert_eq!(status(&d, &fourth, "GET", "/v1/requests").await, 200);
    let left = end + 50 - jiff::Timestamp::now().as_millisecond();
    tokio::time::sleep(std::time::Duration::from_millis(left.max(0) as u64)).await;
    assert_eq!(status(&d, &fourth, "GET", "/v1/requests").await, 401);
}

/// The web page is served from the binary with a strict policy, writes server data as text
/// only, and calls only endpoints the API documents.
#[tokio::test]
async fn the_web_page_is_served_with_a_strict_policy() {
    let d = start();
    let client = reqwest::Client::new();
    let get = |path: &str| client.get(format!("{}{path}", d.url)).send();
    let r = get("/").await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let csp = h["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    // The page may be revalidated; the API's answers (tokens, secrets, prompts) never stored.
    assert_eq!(h["cache-control"], "no-cache");
    let token = client
        .post(format!("{}/v1/tokens", d.url))
        .bearer_auth(&d.admin)
        .json(&json!({"account": "CONTOSO\\ops", "label": "cached?", "admin": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 201);
    assert_eq!(token.headers()["cache-control"], "no-store");
    assert_eq!(token.headers()["x-content-type-options"], "nosniff");
    let refused = get("/v1/roles").await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["cache-control"], "no-store");
    let html = r.text().await.unwrap();
    // No inline script: every <script> names its source.
    assert_eq!(
        html.matches("<script").count(),
        html.matches("<script src=").count()
    );
    assert!(html.contains("/ui/app.css"));

    // The console's scripts, each served as JavaScript.
    let mut js = String::new();
    for script in ["/ui/lib.js", "/ui/app.js", "/ui/admin.js"] {
        assert!(
            html.contains(&format!("<script src=\"{script}\"")),
            "{script}"
        );
        let r = get(script).await.unwrap();
        assert_eq!(r.status(), 200, "{script}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/javascript")
        );
        js += &r.text().await.unwrap();
    }
    assert!(
        !js.contains("innerHTML") && !js.contains("eval("),
        "server data is text only"
    );
    assert!(js.contains("sessionStorage"), "the token stays in the tab");
    let r = get("/ui/app.css").await.unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );

    // Every API path the page calls is one the OpenAPI document lists.
    let (_, doc) = call(&d, None, "GET", "/openapi.json", None).await;
    let paths: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let mut used = 0;
    for piece in js.split('"').filter(|p| p.starts_with("/v1/")) {
        let piece = piece.split('?').next().unwrap();
        assert!(
            paths.iter().any(|p| p.starts_with(piece)),
            "the page calls {piece}, which the API does not document"
        );
        used += 1;
    }
    assert!(used >= 6, "{used}");
    for suffix in ["/poll", "/answer", "/close", "/approve", "/reject"] {
        assert!(
            js.contains(&format!("\"{suffix}\"")) || js.contains("\"/\" + verb"),
            "{suffix}"
        );
        assert!(paths.iter().any(|p| p.ends_with(suffix)), "{suffix}");
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// TOTP end to end: `rolegate enrol totp` shows the QR code in the terminal and confirms
/// with a typed code; requests then activate with the app's codes, a used code is refused,
/// and two requests racing with one code activate once.
#[tokio::test]
async fn a_user_enrols_in_totp_and_activates_with_its_codes() {
    use rolegate_provider_totp::code_for_uri;
    let d = start_with(&format!(
        "\n[[provider]]\nid = \"totp\"\nlibrary = \"{}\"\nunpinned = true\n[provider.settings]\nissuer = \"Contoso PAM\"\nskew = 2\n",
        rolegate_e2e::totp_lib().display()
    ));
    let user = jdoe_with_role(&d, "totp").await;

    // Enrol through the CLI, acting as the user: read the key it shows, type the code.
    let child = Command::new(rolegate_bin())
        .args(["--server", &d.url, "enrol", "totp"])
        .env("ROLEGATE_TOKEN", &user)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rolegate_e2e::daemon::TotpEnrolment { uri, code, screen } =
        rolegate_e2e::daemon::enrol_totp(child, |uri| code_for_uri(uri, unix_now()).unwrap());
    assert!(screen.contains('█') && screen.contains("Key: "), "{screen}");
    assert!(uri.contains("issuer=Contoso%20PAM"), "{uri}");

    // The enrolment's own code is spent: a request answered with it is refused.
    let request = || async {
        rolegate_e2e::daemon::close_active(&d, &user, "r").await;
        let (s, r) = call(
            &d,
            Some(&user),
            "POST",
            "/v1/requests",
            Some(json!({"role": "r"})),
        )
        .await;
        assert_eq!(s, 201, "{r}");
        assert_eq!(r["prompt"]["kind"], "code", "{r}");
        r["id"].as_str().unwrap().to_string()
    };
    let answer = |id: String, code: String| {
        let (d, user) = (&d, user.clone());
        async move {
            call(
                d,
                Some(&user),
                "POST",
                &format!("/v1/requests/{id}/answer"),
                Some(json!({"code": code})),
            )
            .await
        }
    };
    let id = request().await;
    let (_, r) = answer(id.clone(), code.clone()).await;
    assert_eq!(r["state"], "pending_mfa", "{r}");
    assert!(
        r["reason"].as_str().unwrap_or("").contains("used already"),
        "{r}"
    );
    // The app's next code (inside the skew) activates.
    let next = code_for_uri(&uri, unix_now() + 30).unwrap();
    let (_, r) = answer(id, next.clone()).await;
    assert_eq!(r["state"], "active", "{r}");

    // Two requests racing with one fresh code (two steps ahead, still inside the skew):
    // one activation, never two.
    let (a, b) = (request().await, request().await);
    let fresh = code_for_uri(&uri, unix_now() + 60).unwrap();
    let ((_, ra), (_, rb)) = tokio::join!(answer(a, fresh.clone()), answer(b, fresh));
    let active = [&ra, &rb].iter().filter(|r| r["state"] == "active").count();
    assert_eq!(active, 1, "{ra}\n{rb}");

    // Malformed codes are refused without using up the request.
    let id = request().await;
    let (s, e) = answer(id.clone(), "12ab56".into()).await;
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]["message"].as_str().unwrap().contains("6 digits"),
        "{e}"
    );
    let (_, r) = call(&d, Some(&user), "GET", &format!("/v1/requests/{id}"), None).await;
    assert_eq!(r["state"], "pending_mfa", "{r}");

    // The user's token alone cannot add or swap a factor: a second enrolment is refused.
    let (s, e) = call(
        &d,
        Some(&user),
        "POST",
        "/v1/enrolments",
        Some(json!({"provider": "totp"})),
    )
    .await;
    assert_eq!(s, 409, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("enrolled in `totp` already"),
        "{e}"
    );
    // The user and admins see the credential, never its secret; an admin removes it.
    let (s, list) = call(&d, Some(&user), "GET", "/v1/users/jdoe/credentials", None).await;
    assert_eq!(s, 200, "{list}");
    let creds = list.as_array().unwrap();
    assert_eq!(creds.len(), 1, "{list}");
    assert_eq!(creds[0]["provider"], "totp");
    assert!(
        creds[0].get("data").is_none() && !list.to_string().contains("secret"),
        "{list}"
    );
    let cred = creds[0]["id"].as_str().unwrap().to_string();
    let (s, _) = call(
        &d,
        Some(&user),
        "DELETE",
        &format!("/v1/users/jdoe/credentials/totp/{cred}"),
        None,
    )
    .await;
    assert_eq!(s, 403, "users do not remove factors themselves");
    let (okay, out) = cli(&d, &d.admin, &["user", "credentials", "jdoe"], "");
    assert!(okay && out.contains(&cred) && out.contains("totp"), "{out}");
    let (okay, out) = cli(
        &d,
        &d.admin,
        &[
            "user",
            "remove-credential",
            "jdoe",
            "--provider",
            "totp",
            "--id",
            &cred,
        ],
        "",
    );
    assert!(okay, "{out}");
    let (_, ev) = call(&d, Some(&d.admin), "GET", "/v1/events?id=311", None).await;
    assert_eq!(ev.as_array().unwrap().len(), 1, "{ev}");
    let (s, e) = call(
        &d,
        Some(&user),
        "POST",
        "/v1/requests",
        Some(json!({"role": "r"})),
    )
    .await;
    assert_eq!(s, 403, "no factor left: {e}");
    // Enrolling again works now.
    let (s, v) = call(
        &d,
        Some(&user),
        "POST",
        "/v1/enrolments",
        Some(json!({"provider": "totp"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["prompt"]["kind"], "display", "{v}");
}

/// A TOTP code sent with the request (`code` in `POST /v1/requests`, `rolegate request new
/// --code`) activates in one round trip; a used one leaves the request open for the next
/// code, a malformed one stores nothing, and roles that cannot take a code ahead (no MFA, a
/// provider whose prompt carries what the answer depends on) refuse it before anything runs.
#[tokio::test]
async fn a_totp_code_sent_with_the_request_activates_in_one_round_trip() {
    use rolegate_provider_totp::code_for_uri;
    let d = start_with(&format!(
        "\n[[provider]]\nid = \"totp\"\nlibrary = \"{}\"\nunpinned = true\n[provider.settings]\nskew = 3\n",
        rolegate_e2e::totp_lib().display()
    ));
    let user = jdoe_with_role(&d, "totp").await;
    let admin = d.admin.clone();
    for role in [
        json!({"name": "h", "candidates": ["jdoe"], "ttl_s": 60, "max_ttl_s": 60, "mfa_enabled": true, "providers": ["hello"]}),
        json!({"name": "open", "candidates": ["jdoe"], "ttl_s": 60, "max_ttl_s": 60, "mfa_enabled": false}),
    ] {
        let (s, e) = call(&d, Some(&admin), "POST", "/v1/roles", Some(role)).await;
        assert_eq!(s, 201, "{e}");
    }
    // Enrol through the API, confirming with this step's code.
    let (s, v) = call(
        &d,
        Some(&user),
        "POST",
        "/v1/enrolments",
        Some(json!({"provider": "totp"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let uri = v["prompt"]["uri"].as_str().unwrap().to_string();
    let (s, v) = call(
        &d,
        Some(&user),
        "POST",
        "/v1/enrolments/continue",
        Some(json!({"provider": "totp", "state": v["state"],
                    "code": code_for_uri(&uri, unix_now()).unwrap()})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let stored = || async {
        let (s, list) = call(&d, Some(&user), "GET", "/v1/requests", None).await;
        assert_eq!(s, 200, "{list}");
        list.as_array().unwrap().len()
    };

    // The CLI reads the code first (`--code -`) and sends it with the request: active, no prompt.
    let next = code_for_uri(&uri, unix_now() + 30).unwrap();
    let (okay, out) = cli(
        &d,
        &user,
        &["request", "new", "--role", "r", "--code", "-"],
        &format!("{next}\n"),
    );
    assert!(okay && out.contains("active"), "{out}");
    assert_eq!(stored().await, 1);
    let (_, ev) = call(&d, Some(&admin), "GET", "/v1/events?account=jdoe", None).await;
    let ids: Vec<i64> = ev
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["id"].as_i64())
        .collect();
    for id in [200, 103, 203] {
        assert!(ids.contains(&id), "event {id} missing: {ev}");
    }

    // The same code again: the request is stored, open, its prompt answerable with the next.
    rolegate_e2e::daemon::close_active(&d, &user, "r").await;
    let (s, r) = call(
        &d,
        Some(&user),
        "POST",
        "/v1/requests",
        Some(json!({"role": "r", "code": next})),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["state"], "pending_mfa", "{r}");
    assert_eq!(r["prompt"]["kind"], "code", "{r}");
    assert!(
        r["reason"].as_str().unwrap_or("").contains("used already"),
        "{r}"
    );
    let id = r["id"].as_str().unwrap().to_string();
    let (s, r) = call(
        &d,
        Some(&user),
        "POST",
        &format!("/v1/requests/{id}/answer"),
        Some(json!({"code": code_for_uri(&uri, unix_now() + 60).unwrap()})),
    )
    .await;
    assert_eq!((s, &r["state"]), (200, &json!("active")), "{r}");
    assert_eq!(stored().await, 2);

    // Two requests racing with one fresh code: one activation, never two.
    rolegate_e2e::daemon::close_active(&d, &user, "r").await;
    let fresh = code_for_uri(&uri, unix_now() + 90).unwrap();
    let body = json!({"role": "r", "code": fresh});
    let ((_, ra), (_, rb)) = tokio::join!(
        call(&d, Some(&user), "POST", "/v1/requests", Some(body.clone())),
        call(&d, Some(&user), "POST", "/v1/requests", Some(body)),
    );
    let active = [&ra, &rb].iter().filter(|r| r["state"] == "active").count();
    assert_eq!(active, 1, "{ra}\n{rb}");
    let stored_now = stored().await;

    // Refusals store nothing: a malformed code, a role with no MFA, a provider whose prompt
    // must be seen first.
    rolegate_e2e::daemon::close_active(&d, &user, "r").await;
    for (body, status, says) in [
        (json!({"role": "r", "code": "12ab56"}), 400, "6 digits"),
        (
            json!({"role": "open", "code": "123456"}),
            422,
            "role `open` asks for no MFA",
        ),
        (
            json!({"role": "h", "code": "123456"}),
            422,
            "provider `hello` sends or shows what its prompt's answer depends on",
        ),
    ] {
        let (s, e) = call(&d, Some(&user), "POST", "/v1/requests", Some(body)).await;
        assert_eq!(s, status, "{e}");
        let message = e["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{e}");
    }
    assert_eq!(stored().await, stored_now);
    let (okay, out) = cli(
        &d,
        &user,
        &["request", "new", "--role", "h", "--code", "123456"],
        "",
    );
    assert!(
        !okay && out.contains("send the request without an answer"),
        "{out}"
    );
}

#[test]
fn the_totp_provider_passes_its_check() {
    let out = Command::new(rolegate_bin())
        .args(["provider", "check"])
        .arg(rolegate_e2e::totp_lib())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(" 0 failed") && !text.contains("FAIL"),
        "{text}"
    );
}

/// The web page in headless Chromium: sign in with a token, enrol in TOTP from the QR code's
/// page (the PNG renders under the page's CSP), then activate a role with the app's code.
#[tokio::test]
async fn the_web_page_enrols_and_activates_in_a_real_browser() {
    use rolegate_e2e::browser::Browser;
    let d = start_with(&format!(
        "\n[[provider]]\nid = \"totp\"\nlibrary = \"{}\"\nunpinned = true\n[provider.settings]\nskew = 2\n",
        rolegate_e2e::totp_lib().display()
    ));
    let user = jdoe_with_role(&d, "totp").await;
    let b = Browser::start().await;
    b.sign_in(&format!("{}/", d.url), &user).await;

    // Enrol: the provider list, the QR code image, the key, the confirming code.
    b.click("#nav a[href='#/enrol']").await;
    b.wait_for(
        "return document.querySelectorAll('#enrol-provider option').length === 1",
        "the providers that need enrolment",
    )
    .await;
    b.click("#enrol-form button").await;
    b.wait_for(
        "const i = document.getElementById('enrol-qr'); return !i.hidden && i.complete && i.naturalWidth > 100",
        "the QR code image",
    )
    .await;
    let key_line = b.text("#enrol-key").await;
    let secret: String = key_line
        .trim_start_matches("Key: ")
        .split('(')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let app = rolegate_provider_totp::Secret {
        secret,
        algorithm: "SHA1".into(),
        digits: 6,
        period: 30,
        last_step: None,
    };
    let code = rolegate_provider_totp::code_for_secret(&app, unix_now()).unwrap();
    b.type_into("#enrol-code", &code).await;
    b.click("#enrol-code-form button").await;
    b.wait_for(
        "return document.getElementById('enrol-result').textContent.startsWith('Enrolled')",
        "the enrolment to complete",
    )
    .await;
    // The page says whose token it holds, and lists the user's credentials (never their data).
    assert_eq!(b.text("#who").await, "jdoe");
    b.wait_for(
        "return document.getElementById('my-credentials-body').textContent.includes('totp')",
        "the new credential in the user's list",
    )
    .await;

    // Activate: the role picked on the request screen, the code prompt, active.
    b.click("#nav a[href='#/activate']").await;
    b.wait_for(
        "return !!document.querySelector('#role option[value=r]')",
        "the roles the user may request",
    )
    .await;
    b.eval("const s = document.getElementById('role'); s.value = 'r'; s.dispatchEvent(new Event('change')); return true")
        .await;
    b.click("#request-form button[type=submit]").await;
    b.wait_for(
        "return !document.getElementById('code-form').hidden",
        "the code prompt",
    )
    .await;
    let next = rolegate_provider_totp::code_for_secret(&app, unix_now() + 30).unwrap();
    b.type_into("#code", &next).await;
    b.click("#code-form button").await;
    b.wait_for(
        "return document.getElementById('request-result').textContent.includes(' is active until ')",
        "the activation",
    )
    .await;
    // The same state the page shows is the API's.
    let (_, list) = call(&d, Some(&user), "GET", "/v1/requests", None).await;
    assert_eq!(list[0]["state"], "active", "{list}");

    // The app's code typed with the request: active at once, no prompt. (The role comes
    // preselected in the request screen's link; the first activation ended first, as a
    // second one for a role already held is refused.)
    let first = list[0]["id"].as_str().unwrap().to_string();
    let (s, v) = call(
        &d,
        Some(&user),
        "POST",
        &format!("/v1/requests/{first}/close"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let later = rolegate_provider_totp::code_for_secret(&app, unix_now() + 60).unwrap();
    b.eval("location.hash = '#/activate/r'; document.getElementById('request-result').textContent = ''; return true")
        .await;
    b.wait_for(
        "return document.getElementById('scr-activate').dataset.loaded === 'yes' && document.getElementById('role').value === 'r'",
        "the request screen with the role picked",
    )
    .await;
    b.type_into("#request-code", &later).await;
    b.click("#request-form button[type=submit]").await;
    b.wait_for(
        "return document.getElementById('request-result').textContent.includes(' is active until ')",
        "the second activation",
    )
    .await;
    let (_, list) = call(&d, Some(&user), "GET", "/v1/requests", None).await;
    let newest = list[0]["id"].as_str().unwrap().to_string();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert_eq!(list[0]["state"], "active", "{list}");
    // The request's screen: its own link, its id in short.
    assert_eq!(
        b.eval("return location.hash").await,
        json!(format!("#/request/{newest}"))
    );
    assert!(
        b.text("#request-facts")
            .await
            .contains(&newest[newest.len() - 8..]),
        "{list}"
    );
    // The code is not left in the form.
    b.wait_for(
        "return document.getElementById('request-code').value === ''",
        "the code field emptied",
    )
    .await;
}

/// The admin's part of the web page: users, roles and tokens, through the same API.
#[tokio::test]
async fn the_web_page_lets_an_admin_manage_users_roles_and_tokens_in_a_real_browser() {
    use rolegate_e2e::browser::Browser;
    let d = start_with(&format!(
        "\n[[provider]]\nid = \"sec\"\nlibrary = \"{}\"\nunpinned = true\n[provider.settings]\nmode = \"enrol\"\n",
        rolegate_e2e::misbehave_lib().display()
    ));
    let admin = d.admin.clone();
    // The approver the role gets below: roles name existing users only.
    new_user(&d, &admin, json!({"account": "boss"})).await;
    let b = Browser::start().await;
    b.goto(&format!("{}/", d.url)).await;
    b.type_into("#token", &admin).await;
    b.click("#signin-form button").await;
    b.wait_for(
        "return !document.querySelector('#nav .admin-only').hidden",
        "the admin's screens",
    )
    .await;
    assert_eq!(b.text("#who").await, "admin (admin)");
    // The first admin's account is no user: their Enrol screen lists no credentials, and no
    // error.
    let screen = |hash: &str| {
        let route = hash.trim_start_matches("#/").to_string();
        format!(
            "if (location.hash !== {h}) {{ location.hash = {h}; return false; }} const s = document.querySelector('.screen:not([hidden])'); return !!s && s.dataset.route === {r} && s.dataset.loaded === 'yes'",
            h = json!(hash),
            r = json!(route)
        )
    };
    b.wait_for(&screen("#/enrol"), "the Enrol screen").await;
    assert_eq!(b.text("#enrol-result").await, "");
    assert_eq!(
        b.eval("return document.querySelectorAll('#my-credentials-body tr:not(.empty)').length")
            .await,
        json!(0)
    );
    b.wait_for(&screen("#/users"), "the Users screen").await;
    let rows_with = |body: &str, text: &str| {
        format!(
            "[...document.querySelectorAll('#{body} tr')].some(r => r.textContent.includes({}))",
            json!(text)
        )
    };
    let row_has = |body: &str, text: &str| format!("return {}", rows_with(body, text));
    let row_gone = |body: &str, text: &str| format!("return !{}", rows_with(body, text));
    // Click the first button in the row of `body` whose text includes `text`.
    let click_in_row = |body: &str, text: &str| {
        format!(
            "[...document.querySelectorAll('#{body} tr')].find(r => r.textContent.includes({})).querySelector('button').click()",
            json!(text)
        )
    };
    // Click the button labelled `label…` in that row.
    let click_labelled = |body: &str, text: &str, label: &str| {
        format!(
            "[...[...document.querySelectorAll('#{body} tr')].find(r => r.textContent.includes({})).querySelectorAll('button')].find(b => b.textContent.startsWith({})).click()",
            json!(text),
            json!(label)
        )
    };

    // A user, their phone normalised as the API does; a bad phone is refused, naming it.
    b.type_into("#user-account", "CONTOSO\\jdoe").await;
    b.type_into("#user-name", "Jane Doe").await;
    b.type_into("#user-phone", "425 555 0100").await;
    b.click("#user-form button[type=submit]").await;
    b.wait_for(&row_has("users-body", "+14255550100"), "the new user")
        .await;
    b.type_into("#user-account", "eve").await;
    b.type_into("#user-phone", "call me maybe").await;
    b.click("#user-form button[type=submit]").await;
    b.wait_for(
        "return document.getElementById('user-status').textContent.includes('phone')",
        "the refused phone",
    )
    .await;
    let (_, users) = call(&d, Some(&admin), "GET", "/v1/users", None).await;
    assert!(
        users
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["account"] != "eve"),
        "{users}"
    );

    // Editing the user: a bad number is refused and the stored one kept; a new one is
    // normalised and raises event 825 (as Set-PAMUser did), and only the phone is changed.
    b.eval(&click_labelled("users-body", "jdoe", "Edit")).await;
    b.wait_for(
        "return document.getElementById('user-account').readOnly",
        "the user in the form",
    )
    .await;
    assert_eq!(
        b.eval("return document.getElementById('user-phone').value")
            .await,
        json!("+14255550100")
    );
    b.type_into("#user-phone", "not a phone").await;
    b.click("#user-form button[type=submit]").await;
    b.wait_for(
        "return document.getElementById('user-status').textContent.includes('phone')",
        "the refused phone",
    )
    .await;
    b.type_into("#user-phone", "+44 20 7946 0958").await;
    b.click("#user-form button[type=submit]").await;
    b.wait_for(&row_has("users-body", "+442079460958"), "the new number")
        .await;
    let (_, u) = call(&d, Some(&admin), "GET", "/v1/users/CONTOSO%5Cjdoe", None).await;
    assert_eq!(
        (u["phone"].as_str(), u["display_name"].as_str()),
        (Some("+442079460958"), Some("Jane Doe")),
        "{u}"
    );
    let (_, ev) = call(&d, Some(&admin), "GET", "/v1/events?id=825", None).await;
    assert_eq!(ev.as_array().unwrap().len(), 1, "{ev}");

    // A role with MFA through hello, then edited: approval on, a new default duration. The
    // candidates, approvers and providers are picked from lists, not typed.
    let tick = |list: &str, value: &str| {
        format!(
            "const c = [...document.querySelectorAll('#{list} input[type=checkbox]')].find(c => c.value === {}); c.click(); return c.checked",
            json!(value)
        )
    };
    b.wait_for(&screen("#/admin-roles"), "the Roles screen")
        .await;
    b.type_into("#role-name", "Ops").await;
    assert_eq!(
        b.eval(&tick("role-candidates", "CONTOSO\\jdoe")).await,
        json!(true)
    );
    assert_eq!(b.eval(&tick("role-providers", "hello")).await, json!(true));
    b.click("#role-mfa").await;
    b.type_into("#role-ttl", "30").await;
    b.type_into("#role-max-ttl", "60").await;
    b.click("#role-save").await;
    b.wait_for(&row_has("roles-body", "Ops"), "the new role")
        .await;
    b.eval(&click_in_row("roles-body", "Ops")).await;
    b.wait_for(
        "return document.getElementById('role-name').readOnly",
        "the role in the form",
    )
    .await;
    b.click("#role-approval").await;
    assert_eq!(b.eval(&tick("role-approvers", "boss")).await, json!(true));
    b.type_into("#role-ttl", "45").await;
    // An availability window: a zone that does not exist is refused, naming it, and the role
    // stays as it was; a real one is kept.
    b.type_into("#role-days", "mon-fri, sat").await;
    b.type_into("#role-from", "08:00").await;
    b.type_into("#role-to", "18:00").await;
    b.type_into("#role-tz", "Mars/Olympus").await;
    b.click("#role-save").await;
    b.wait_for(
        "return document.getElementById('role-status').textContent.includes('`Mars/Olympus` is not a known time zone')",
        "the refused time zone",
    )
    .await;
    let (_, role) = call(&d, Some(&admin), "GET", "/v1/roles/Ops", None).await;
    assert_eq!(role["approval_enabled"], false, "{role}");
    assert!(role["availability"].is_null(), "{role}");
    b.type_into("#role-tz", "Europe/London").await;
    b.click("#role-save").await;
    b.wait_for(
        "return !document.getElementById('role-name').readOnly",
        "the saved role",
    )
    .await;
    let (_, role) = call(&d, Some(&admin), "GET", "/v1/roles/Ops", None).await;
    assert_eq!(role["providers"], json!(["hello"]), "{role}");
    assert_eq!(role["mfa_enabled"], true, "{role}");
    assert_eq!(role["approval_enabled"], true, "{role}");
    assert_eq!(role["approvers"], json!(["boss"]), "{role}");
    assert_eq!(role["candidates"], json!(["CONTOSO\\jdoe"]), "{role}");
    assert_eq!(
        (role["ttl_s"].as_i64(), role["max_ttl_s"].as_i64()),
        (Some(2700), Some(3600))
    );
    assert_eq!(
        role["availability"],
        json!({"days": ["mon-fri", "sat"], "from": "08:00", "to": "18:00", "time_zone": "Europe/London"})
    );
    b.wait_for(
        &row_has("roles-body", "mon-fri, sat 08:00–18:00 Europe/London"),
        "the window in the role list",
    )
    .await;
    // Emptied in the form, the window goes: the role is available at any time again.
    b.eval(&click_in_row("roles-body", "Ops")).await;
    b.wait_for(
        "return document.getElementById('role-tz').value === 'Europe/London'",
        "the window in the form",
    )
    .await;
    for field in ["#role-days", "#role-from", "#role-to", "#role-tz"] {
        b.type_into(field, "").await;
    }
    b.click("#role-save").await;
    b.wait_for(
        &row_has("roles-body", "any time"),
        "the role without a window",
    )
    .await;
    let (_, role) = call(&d, Some(&admin), "GET", "/v1/roles/Ops", None).await;
    assert!(role["availability"].is_null(), "{role}");
    assert_eq!(role["approvers"], json!(["boss"]), "{role}");

    // A token for the user, shown once; it works; revoked from the list, it stops working.
    b.wait_for(&screen("#/tokens"), "the Tokens screen").await;
    b.type_into("#token-account", "CONTOSO\\jdoe").await;
    b.type_into("#token-label", "laptop").await;
    b.click("#token-form button[type=submit]").await;
    b.wait_for(
        "return document.getElementById('token-issued').textContent.includes('shown once')",
        "the issued token",
    )
    .await;
    let shown = b.text("#token-issued").await;
    let token = shown.rsplit(' ').next().unwrap().to_string();
    assert_eq!(status(&d, &token, "GET", "/v1/requests").await, 200);
    let (_, who) = call(&d, Some(&token), "GET", "/v1/me", None).await;
    assert_eq!(
        who,
        json!({"account": "CONTOSO\\jdoe", "admin": false, "expires_at": null})
    );

    // The user enrols (with the token); the admin sees the credential and removes it — a
    // lost key — at the second click, after which the user has none.
    let (_, v) = call(
        &d,
        Some(&token),
        "POST",
        "/v1/enrolments",
        Some(json!({"provider": "sec"})),
    )
    .await;
    let (s, e) = call(
        &d,
        Some(&token),
        "POST",
        "/v1/enrolments/continue",
        Some(json!({"provider": "sec", "state": v["state"], "code": "4321"})),
    )
    .await;
    assert_eq!(s, 200, "{e}");
    b.wait_for(&screen("#/users"), "the Users screen").await;
    b.eval(&click_labelled("users-body", "jdoe", "Credentials"))
        .await;
    b.wait_for(&row_has("credentials-body", "sec"), "the user's credential")
        .await;
    assert_eq!(
        b.text("#credentials-of").await,
        "Credentials of CONTOSO\\jdoe"
    );
    b.eval(&click_labelled("credentials-body", "sec", "Remove"))
        .await;
    b.wait_for(&row_has("credentials-body", "Confirm"), "the question")
        .await;
    let creds = format!("/v1/users/{}/credentials", "CONTOSO%5Cjdoe");
    let (_, list) = call(&d, Some(&admin), "GET", &creds, None).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    b.eval(&click_labelled("credentials-body", "sec", "Confirm"))
        .await;
    b.wait_for(&row_gone("credentials-body", "sec"), "the credential gone")
        .await;
    let (_, list) = call(&d, Some(&admin), "GET", &creds, None).await;
    assert_eq!(list, json!([]));
    let (_, ev) = call(&d, Some(&admin), "GET", "/v1/events?id=311", None).await;
    assert_eq!(ev.as_array().unwrap().len(), 1, "{ev}");
    b.wait_for(&screen("#/tokens"), "the Tokens screen").await;
    b.wait_for(&row_has("tokens-body", "laptop"), "the token in the list")
        .await;
    // Revoking takes a second click too.
    b.eval(&click_labelled("tokens-body", "laptop", "Revoke"))
        .await;
    b.wait_for(&row_has("tokens-body", "Confirm"), "the question")
        .await;
    assert_eq!(status(&d, &token, "GET", "/v1/requests").await, 200);
    b.eval(&click_labelled("tokens-body", "laptop", "Confirm"))
        .await;
    b.wait_for(
        &row_gone("tokens-body", "laptop"),
        "the revoked token gone from the list",
    )
    .await;
    assert_eq!(status(&d, &token, "GET", "/v1/requests").await, 401);

    // The providers, and a lockout lifted (there was none: the page says so).
    b.wait_for(&screen("#/providers"), "the Providers screen")
        .await;
    b.wait_for(&row_has("providers-body", "hello"), "the provider list")
        .await;
    b.wait_for(&screen("#/users"), "the Users screen").await;
    b.type_into("#unlock-account", "CONTOSO\\jdoe").await;
    b.eval("document.getElementById('unlock-provider').value = 'hello'; return true")
        .await;
    b.click("#unlock-form button[type=submit]").await;
    b.wait_for(
        "return document.getElementById('unlock-result').textContent.includes('was not locked out of hello')",
        "the unlock's answer",
    )
    .await;

    // Disabling the user.
    b.eval(&click_in_row("users-body", "jdoe")).await;
    b.wait_for(
        "return [...document.querySelectorAll('#users-body tr')].some(r => r.textContent.includes('jdoe') && r.textContent.includes('Enable'))",
        "the user disabled",
    )
    .await;
    let (_, u) = call(&d, Some(&admin), "GET", "/v1/users/CONTOSO%5Cjdoe", None).await;
    assert_eq!(u["enabled"], false, "{u}");
    // Every change is an admin event, naming what changed (the refused one is none).
    let (_, ev) = call(&d, Some(&admin), "GET", "/v1/events?id=511", None).await;
    let messages: Vec<&str> = ev
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        [
            "role changed (availability) by `admin`",
            "role changed (approval_enabled, approvers, availability, ttl_s) by `admin`"
        ],
        "{ev}"
    );

    // Issue 29: a shadow provider from the form; readiness lists it; the rollback button
    // (two clicks) puts the previous lists back (event 513).
    b.wait_for(&screen("#/admin-roles"), "the Roles screen")
        .await;
    b.eval(&click_in_row("roles-body", "Ops")).await;
    b.wait_for(
        "return document.getElementById('role-name').readOnly",
        "the role in the form",
    )
    .await;
    assert_eq!(b.eval(&tick("role-shadow", "sec")).await, json!(true));
    b.click("#role-save").await;
    b.wait_for(
        &row_has("roles-body", "hello (shadow: sec)"),
        "the shadow in the role list",
    )
    .await;
    b.wait_for(&screen("#/providers"), "the Providers screen")
        .await;
    b.wait_for(
        &format!(
            "return {} && {}",
            rows_with("readiness-body", "Ops"),
            rows_with("readiness-body", "shadow")
        ),
        "the role's readiness",
    )
    .await;
    // jdoe was disabled above: nobody could use either provider today, and the page says so.
    assert_eq!(
        b.text("#readiness-summary").await,
        "Ops: the role has no enabled candidate"
    );
    assert!(
        b.text("#readiness-body")
            .await
            .contains("Ops sec shadow ok 0 of 0 0 of 0"),
        "{}",
        b.text("#readiness-body").await
    );
    b.wait_for(&screen("#/admin-roles"), "the Roles screen")
        .await;
    b.eval(&click_labelled("roles-body", "Ops", "Roll back"))
        .await;
    b.wait_for(&row_has("roles-body", "Confirm"), "the rollback's question")
        .await;
    let (_, role) = call(&d, Some(&admin), "GET", "/v1/roles/Ops", None).await;
    assert_eq!(
        role["shadow"],
        json!(["sec"]),
        "one click changes nothing: {role}"
    );
    b.eval(&click_labelled("roles-body", "Ops", "Confirm"))
        .await;
    b.wait_for(
        &row_gone("roles-body", "(shadow: sec)"),
        "the rolled-back role",
    )
    .await;
    let (_, role) = call(&d, Some(&admin), "GET", "/v1/roles/Ops", None).await;
    assert!(role.get("shadow").is_none(), "{role}");
    let (_, ev) = call(&d, Some(&admin), "GET", "/v1/events?id=513", None).await;
    assert!(
        ev[0]["message"]
            .as_str()
            .unwrap()
            .contains("rolled back from [hello] (shadow: [sec]) to [hello] by `admin`"),
        "{ev}"
    );

    // Removing takes a second click: the first only asks.
    let remove_in_row = |body: &str, text: &str| click_labelled(body, text, "Remove");
    let confirm_in_row = |body: &str, text: &str| click_labelled(body, text, "Confirm");
    b.eval(&remove_in_row("roles-body", "Ops")).await;
    b.wait_for(&row_has("roles-body", "Confirm"), "the question")
        .await;
    assert_eq!(status(&d, &admin, "GET", "/v1/roles/Ops").await, 200);
    b.eval(&confirm_in_row("roles-body", "Ops")).await;
    b.wait_for(
        &row_gone("roles-body", "Ops"),
        "the role gone from the list",
    )
    .await;
    assert_eq!(status(&d, &admin, "GET", "/v1/roles/Ops").await, 404);
    b.wait_for(&screen("#/users"), "the Users screen").await;
    b.eval(&click_labelled("users-body", "jdoe", "Credentials"))
        .await;
    b.wait_for(
        "return !document.getElementById('credentials').hidden",
        "the user's credentials on show",
    )
    .await;
    b.eval(&remove_in_row("users-body", "jdoe")).await;
    b.eval(&confirm_in_row("users-body", "jdoe")).await;
    b.wait_for(
        &row_gone("users-body", "jdoe"),
        "the user gone from the list",
    )
    .await;
    assert!(
        b.eval("return document.getElementById('credentials').hidden")
            .await
            .as_bool()
            .unwrap(),
        "the removed user's credentials are still on show"
    );
    assert_eq!(
        status(&d, &admin, "GET", "/v1/users/CONTOSO%5Cjdoe").await,
        404
    );
}

/// A daemon with the legacy phone provider `id` (extra `settings` lines) against a scripted
/// PhoneFactor double, the `users` with their phones and tokens, and a role "Domain Admins"
/// whose MFA is that provider. Keep the double and the PKI directory alive with the daemon.
async fn phone_role(
    id: &str,
    settings: &str,
    users: &[(&'static str, &str)],
) -> (
    rolegate_e2e::phonefactor::Double,
    tempfile::TempDir,
    Daemon,
    std::collections::HashMap<&'static str, String>,
) {
    use rolegate_e2e::phonefactor::{Double, deployment, pki, scripted};
    let pki_dir = tempfile::tempdir().unwrap();
    pki(pki_dir.path());
    let double = Double::start(pki_dir.path(), scripted);
    let s = deployment(pki_dir.path(), double.port);
    let d = start_with(&format!(
        "\n[[provider]]\nid = \"{id}\"\nlibrary = \"{}\"\nunpinned = true\n[provider.settings]\n{settings}mfa_settings = \"{}\"\nca_file = \"{}\"\nendpoints = [\"{}\"]\ncall_timeout_s = 10\n",
        rolegate_e2e::legacy_phone_lib().display(),
        s["mfa_settings"].as_str().unwrap(),
        s["ca_file"].as_str().unwrap(),
        s["endpoints"][0].as_str().unwrap(),
    ));
    let admin = d.admin.clone();
    let mut tokens = std::collections::HashMap::new();
    for (account, phone) in users {
        new_user(&d, &admin, json!({"account": account, "phone": phone})).await;
        tokens.insert(
            *account,
            issue_token(&d, &admin, json!({"account": account})).await,
        );
    }
    let candidates: Vec<&str> = users.iter().map(|(a, _)| *a).collect();
    let role = json!({"name": "Domain Admins", "candidates": candidates, "ttl_s": 600, "max_ttl_s": 600,
                      "mfa_enabled": true, "providers": [id]});
    let (st, e) = call(&d, Some(&admin), "POST", "/v1/roles", Some(role)).await;
    assert_eq!(st, 201, "{e}");
    (double, pki_dir, d, tokens)
}

/// The legacy phone call end to end: a role whose MFA is the PhoneFactor call activates when
/// the user answers (the CLI shows the ringing status, then the activation; event 103); a
/// fraud code fails the request (event 101) and locks the user out; voicemail fails it too.
#[tokio::test]
async fn a_legacy_phone_call_activates_a_role_and_its_failures_are_events() {
    let (double, _pki, d, tokens) = phone_role(
        "phone-legacy",
        "",
        &[
            ("jdoe", "+1 425 555 0001"),
            ("mallory", "+1 425 555 0112"),
            ("vm", "+1 425 555 0013"),
        ],
    )
    .await;
    let admin = d.admin.clone();
    let (okay, out) = cli(
        &d,
        &tokens["jdoe"],
        &["request", "new", "--role", "Domain Admins"],
        "",
    );
    assert!(okay, "{out}");
    assert!(
        out.contains("Calling +1 •••0001"),
        "the ringing status: {out}"
    );
    assert!(out.contains("is active until"), "{out}");
    let (_, ev) = call(&d, Some(&admin), "GET", "/v1/events?id=103", None).await;
    assert_eq!(ev.as_array().unwrap().len(), 1, "{ev}");

    let (okay, out) = cli(
        &d,
        &tokens["mallory"],
        &["request", "new", "--role", "Domain Admins"],
        "",
    );
    assert!(!okay, "{out}");
    assert!(out.contains("fraud code entered"), "{out}");
    let (okay, out) = cli(
        &d,
        &tokens["vm"],
        &["request", "new", "--role", "Domain Admins"],
        "",
    );
    // The user hears what to do; the provider's words are the admin's, in event 101.
    assert!(
        !okay && out.contains("could not reach you") && !out.contains("voicemail"),
        "{out}"
    );
    let (_, ev) = call(&d, Some(&admin), "GET", "/v1/events?id=101", None).await;
    assert!(ev.to_string().contains("got voicemail"), "{ev}");
    let failed: Vec<&str> = ev
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["account"].as_str())
        .collect();
    assert_eq!(failed.len(), 2, "{ev}");
    let (_, ev) = call(&d, Some(&admin), "GET", "/v1/events?id=300", None).await;
    assert!(
        ev.to_string().contains("mallory"),
        "a fraud code locks the user out: {ev}"
    );
    // The call carried the deployment's keys and the number split as PhoneFactor takes it.
    let bodies = double.bodies.lock().unwrap();
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("<countryCode>1</countryCode>")
                && b.contains(">4255550001</phonenumber>"))
    );
}

/// Legacy PIN mode end to end: a user enrols a PIN with the CLI (typed twice; a guessable one
/// is refused and asked again), and the call that asks for it activates the role. A PIN the
/// user does not type, or none typed, fails the request at once (event 101) instead of
/// leaving it waiting on a call that has ended; a user with no PIN is told to enrol.
#[tokio::test]
async fn a_legacy_pin_call_activates_after_a_pin_enrolment() {
    let (double, _pki, d, tokens) = phone_role(
        "phone-pin",
        "mode = \"pin\"\n",
        &[
            ("jdoe", "+1 425 555 0001"),
            ("eve", "+1 206 555 0001"),
            ("mute", "+1 425 555 0002"),
            ("new", "+1 425 555 0001"),
        ],
    )
    .await;
    let admin = d.admin.clone();

    // No PIN yet: the request is refused with what to do.
    let (st, e) = call(
        &d,
        Some(&tokens["new"]),
        "POST",
        "/v1/requests",
        Some(json!({"role": "Domain Admins"})),
    )
    .await;
    assert!(st >= 400, "{e}");
    assert!(e.to_string().contains("you are not enrolled"), "{e}");

    // Enrol with the CLI: 1234 is refused (asked again), then 7391 twice.
    let (okay, out) = cli(
        &d,
        &tokens["jdoe"],
        &["enrol", "phone-pin"],
        "1234\n7391\n7391\n",
    );
    assert!(okay, "{out}");
    assert!(
        out.contains("too easy to guess: its digits run in order"),
        "{out}"
    );
    assert!(out.contains("Type the same PIN again"), "{out}");
    assert!(
        out.contains("enrolled in `phone-pin` (credential `pin`)"),
        "{out}"
    );
    assert!(!out.contains("7391"), "the PIN is never echoed: {out}");
    let (okay, out) = cli(
        &d,
        &tokens["jdoe"],
        &["request", "new", "--role", "Domain Admins"],
        "",
    );
    assert!(okay, "{out}");
    assert!(
        out.contains("Calling +1 •••0001: answer, type your PIN and press #")
            && out.contains("is active until"),
        "{out}"
    );
    assert!(
        double
            .bodies
            .lock()
            .unwrap()
            .iter()
            .any(|b| b.contains("pinMode=\"pin\"") && b.contains(">7391</pin>")),
        "the call carried the enrolled PIN"
    );

    // eve enrolled another PIN than the one typed on her phone; mute types none.
    for (who, pin, said) in [
        ("eve", "2580", "the PIN typed on the phone was wrong"),
        ("mute", "2580", "no PIN entered (call status 2)"),
    ] {
        let (okay, out) = cli(
            &d,
            &tokens[who],
            &["enrol", "phone-pin"],
            &format!("{pin}\n{pin}\n"),
        );
        assert!(okay, "{out}");
        let (okay, out) = cli(
            &d,
            &tokens[who],
            &["request", "new", "--role", "Domain Admins", "--json"],
            "",
        );
        assert!(!okay, "{who}: {out}");
        assert!(out.contains(said), "{who}: {out}");
        assert!(
            !out.contains("attempt(s) left"),
            "a call is not asked again: {out}"
        );
        let (_, list) = call(&d, Some(&tokens[who]), "GET", "/v1/requests", None).await;
        assert_eq!(list[0]["state"], "failed", "{who}: {list}");
    }
    let (_, ev) = call(&d, Some(&admin), "GET", "/v1/events?id=101", None).await;
    assert_eq!(ev.as_array().unwrap().len(), 2, "{ev}");
    let (_, ev) = call(&d, Some(&admin), "GET", "/v1/events?id=310", None).await;
    assert!(
        ev.as_array().unwrap().len() >= 3,
        "enrolments are events: {ev}"
    );
}

fn rolegate(args: &[&str]) -> (bool, String) {
    let out = Command::new(rolegate_bin()).args(args).output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Issue 5's "done when": a deployment's MfaSettings.xml and CSV exports are imported
/// (dry run first, bad rows refused by line, a re-run changes nothing), and an imported MFA
/// role then activates through the legacy phone call, the CLI showing the ringing status.
#[tokio::test]
async fn an_imported_mim_deployment_activates_through_the_phone_call() {
    use rolegate_e2e::phonefactor::{Double, deployment, pki, scripted};
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let double = Double::start(dir.path(), scripted);
    let s = deployment(dir.path(), double.port);
    let settings = s["mfa_settings"].as_str().unwrap().to_string();
    let cfg = dir.path().join("rolegate.toml");
    let base = "[server]\nlisten = \"127.0.0.1:0\"\n";
    write_private(&cfg, base);
    let users = dir.path().join("users.csv");
    std::fs::write(&users, "#TYPE Microsoft.ResourceManagement.Automation.ObjectModel.PAMUser\r\n\"SourceAccountName\",\"SourceDomain\",\"DisplayName\",\"PhoneNumber\"\r\n\"jdoe\",\"CONTOSO\",\"Jane Doe\",\"425 555 0001\"\r\n\"bob\",\"CONTOSO\",\"Bob\",\"+1 425 555 0013\"\r\n").unwrap();
    let roles = dir.path().join("roles.csv");
    std::fs::write(&roles, "\"DisplayName\",\"Candidates\",\"Approvers\",\"TTL\",\"MFAEnabled\",\"ApprovalEnabled\",\"AvailabilityWindowEnabled\",\"AvailableFrom\",\"AvailableTo\"\r\n\"Domain Admins\",\"CONTOSO\\jdoe;CONTOSO\\bob\",\"\",\"3600\",\"True\",\"False\",\"False\",\"\",\"\"\r\n\"Helpdesk\",\"CONTOSO\\bob\",\"\",\"1800\",\"False\",\"False\",\"False\",\"\",\"\"\r\n").unwrap();
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = [
            "import",
            "mim",
            "--config",
            cfg.to_str().unwrap(),
            "--settings",
            &settings,
            "--users",
            users.to_str().unwrap(),
            "--roles",
            roles.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        rolegate(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // Dry run: the provider block and the plan are shown; nothing is written.
    let (ok, out) = run(&["--dry-run"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("would be added") && out.contains("mfa_settings"),
        "{out}"
    );
    assert!(
        out.contains("users: 2 would be created: CONTOSO\\jdoe, CONTOSO\\bob"),
        "{out}"
    );
    assert!(out.contains("roles: 2 would be created"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&cfg).unwrap(),
        base,
        "the config is untouched"
    );

    // The provider with the test double's endpoint (a real deployment keeps PhoneFactor's).
    write_private(
        &cfg,
        &format!(
            "{base}[[provider]]\nid = \"phone-legacy\"\nlibrary = \"{}\"\nunpinned = true\n[provider.settings]\nmfa_settings = \"{settings}\"\nca_file = \"{}\"\nendpoints = [\"{}\"]\ncall_timeout_s = 10\n",
            rolegate_e2e::legacy_phone_lib().display(),
            s["ca_file"].as_str().unwrap(),
            s["endpoints"][0].as_str().unwrap(),
        ),
    );
    // A bad row stops everything, naming its line.
    let good_roles = std::fs::read_to_string(&roles).unwrap();
    std::fs::write(&roles, format!("{good_roles}\"Broken\",\"CONTOSO\\bob\",\"\",\"soon\",\"False\",\"False\",\"False\",\"\",\"\"\r\n")).unwrap();
    let (ok, out) = run(&[]);
    assert!(
        !ok && out.contains("line 4: TTL must be a positive number"),
        "{out}"
    );
    std::fs::write(&roles, &good_roles).unwrap();
    let (ok, out) = run(&[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("configured already, and it loads") && out.contains("users: 2 created"),
        "{out}"
    );
    let (ok, out) = run(&[]);
    assert!(
        ok && out.contains("users: 2 unchanged") && out.contains("roles: 2 unchanged"),
        "a re-run changes nothing: {out}"
    );

    // The daemon on the imported state: jdoe activates through the phone call.
    let d = serve_config(dir, &cfg);
    let admin = d.admin.clone();
    let token = issue_token(&d, &admin, json!({"account": "CONTOSO\\jdoe"})).await;
    let (okay, out) = cli(
        &d,
        &token,
        &["request", "new", "--role", "Domain Admins"],
        "",
    );
    assert!(okay, "{out}");
    assert!(
        out.contains("Calling +1 •••0001") && out.contains("is active until"),
        "{out}"
    );
    let (_, r) = call(&d, Some(&admin), "GET", "/v1/roles/Domain%20Admins", None).await;
    assert_eq!(r["providers"], json!(["phone-legacy"]), "{r}");
    let (_, ev) = call(&d, Some(&admin), "GET", "/v1/events?id=510", None).await;
    assert_eq!(
        ev.as_array().unwrap().len(),
        2,
        "role imports are admin events: {ev}"
    );

    // Issue 29: an admin's changes since the import stay. A re-run leaves the role as it is;
    // --update changes only the field the file changed, not the justification rule nor the
    // longer maximum the admin set (nor the providers).
    let mut body = r.clone();
    body.as_object_mut().unwrap().remove("warnings");
    body["justification_required"] = json!(true);
    body["max_ttl_s"] = json!(7200);
    let (status, put) = call(
        &d,
        Some(&admin),
        "PUT",
        "/v1/roles/Domain%20Admins",
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{put}");
    let (ok, out) = run(&[]);
    assert!(ok && out.contains("roles: 2 unchanged"), "{out}");
    std::fs::write(&roles, good_roles.replacen("\"3600\"", "\"5400\"", 1)).unwrap();
    let (ok, out) = run(&[]);
    assert!(
        ok && out.contains(
            "roles: 1 differ, left as they are (--update changes them): Domain Admins (ttl_s)"
        ),
        "{out}"
    );
    let (ok, out) = run(&["--update"]);
    assert!(
        ok && out.contains("roles: 1 changed: Domain Admins (ttl_s)"),
        "{out}"
    );
    let (_, r) = call(&d, Some(&admin), "GET", "/v1/roles/Domain%20Admins", None).await;
    assert_eq!(
        (
            &r["ttl_s"],
            &r["max_ttl_s"],
            &r["justification_required"],
            &r["providers"]
        ),
        (
            &json!(5400),
            &json!(7200),
            &json!(true),
            &json!(["phone-legacy"])
        ),
        "{r}"
    );
}

/// Issue 29: the import reads what MIM's cmdlets export — Windows PowerShell 5.1's
/// `Get-PAMUser | Out-File` (UTF-16 LE with a BOM, CRLF, the `#TYPE` line, MIM's `Source...`
/// columns) and `Get-PAMRole | Export-Csv -UseCulture` in a `;` culture (UTF-8 with a BOM, TTL
/// as a TimeSpan); a role whose candidates were exported as a type name is refused by line.
#[tokio::test]
async fn the_import_reads_powershell_5_1_and_7_exports() {
    use rolegate_e2e::phonefactor::{Double, deployment, pki, scripted};
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let double = Double::start(dir.path(), scripted);
    let s = deployment(dir.path(), double.port);
    let settings = s["mfa_settings"].as_str().unwrap().to_string();
    let cfg = dir.path().join("rolegate.toml");
    write_private(
        &cfg,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[[provider]]\nid = \"phone-legacy\"\nlibrary = \"{}\"\nunpinned = true\n[provider.settings]\nmfa_settings = \"{settings}\"\nca_file = \"{}\"\nendpoints = [\"{}\"]\n",
            rolegate_e2e::legacy_phone_lib().display(),
            s["ca_file"].as_str().unwrap(),
            s["endpoints"][0].as_str().unwrap(),
        ),
    );
    let users = dir.path().join("users.csv");
    let text = "#TYPE Microsoft.IdentityManagement.PamCmdlets.PAMUser\r\n\"SourceDisplayName\",\"SourceDomain\",\"SourceAccountName\",\"SourcePhoneNumber\",\"SourceEmailAddress\"\r\n\"Jen\",\"CONTOSO\",\"jen\",\"+1 213 555 1212\",\"jen@contoso.test\"\r\n\"Jérôme\",\"CONTOSO\",\"jerome\",\"+33 1 23 45 67 89\",\"\"\r\n";
    let mut utf16 = vec![0xFF, 0xFE];
    for u in text.encode_utf16() {
        utf16.extend(u.to_le_bytes());
    }
    std::fs::write(&users, utf16).unwrap();
    let roles = dir.path().join("roles.csv");
    let write_roles = |body: &str| {
        let mut bytes = vec![0xEF, 0xBB, 0xBF];
        bytes.extend(format!("\"DisplayName\";\"Candidates\";\"Approvers\";\"TTL\";\"MFAEnabled\";\"ApprovalEnabled\";\"AvailabilityWindowEnabled\"\r\n{body}").as_bytes());
        std::fs::write(&roles, bytes).unwrap();
    };
    write_roles(
        "\"Domain Admins\";\"CONTOSO\\jen;CONTOSO\\jerome\";\"\";\"01:00:00\";\"True\";\"False\";\"False\"\r\n\"Helpdesk\";\"CONTOSO\\jerome\";\"\";\"1.00:00:00\";\"False\";\"False\";\"False\"\r\n",
    );
    let import: Vec<&str> = vec![
        "import",
        "mim",
        "--config",
        cfg.to_str().unwrap(),
        "--settings",
        &settings,
        "--users",
        users.to_str().unwrap(),
        "--roles",
        roles.to_str().unwrap(),
    ];
    let run = |extra: &[&str]| {
        let mut a = import.clone();
        a.extend(extra);
        rolegate(&a)
    };
    let (ok, out) = run(&["--dry-run"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("users: 2 would be created: CONTOSO\\jen, CONTOSO\\jerome")
            && out.contains("roles: 2 would be created: Domain Admins, Helpdesk"),
        "{out}"
    );
    assert!(out.contains("warnings: none"), "{out}");

    // A candidate matching no user: a warning table in the dry run and the real run;
    // --strict refuses (non-zero exit, nothing written).
    write_roles(
        "\"Domain Admins\";\"CONTOSO\\jen;CONTOSO\\ghost\";\"\";\"3600\";\"True\";\"False\";\"False\"\r\n",
    );
    let roles_name = roles.display().to_string();
    let (ok, out) = run(&["--dry-run"]);
    assert!(
        ok && out.contains("warnings: 1")
            && out.contains(&format!(
                "{roles_name}:2  role `Domain Admins`: candidate `CONTOSO\\ghost` matches no user"
            )),
        "{out}"
    );
    for extra in [&["--strict"][..], &["--strict", "--dry-run"]] {
        let (ok, out) = run(extra);
        assert!(
            !ok && out.contains("1 warning(s), nothing imported")
                && out.contains(&format!(
                    "{roles_name} line 2: role `Domain Admins`: candidate `CONTOSO\\ghost`"
                )),
            "{extra:?}: {out}"
        );
    }
    let (ok, out) = run(&[]);
    assert!(
        ok && out.contains("users: 2 created") && out.contains("warnings: 1"),
        "--strict wrote nothing; without it the import goes on: {out}"
    );

    // Bad rows in both files are all reported before anything is written.
    let good_users = std::fs::read(&users).unwrap();
    std::fs::write(
        &users,
        "SourceDomain,SourceAccountName\nCONTOSO,amy\nCONTOSO,AMY\n",
    )
    .unwrap();
    write_roles(
        "\"Domain Admins\";\"System.Object[]\";\"\";\"01:00:00\";\"True\";\"False\";\"False\"\r\n\"Helpdesk\";\"CONTOSO\\jerome\";\"\";\"later\";\"False\";\"False\";\"False\"\r\n",
    );
    let (ok, out) = run(&["--dry-run"]);
    assert!(
        !ok && out.contains("line 2: candidates holds `System.Object[]`")
            && out.contains("line 3: TTL must be")
            && out.contains("line 3: `CONTOSO\\AMY` is also on line 2"),
        "{out}"
    );
    std::fs::write(&users, good_users).unwrap();
    write_roles(
        "\"Domain Admins\";\"CONTOSO\\jen;CONTOSO\\ghost\";\"\";\"3600\";\"True\";\"False\";\"False\"\r\n",
    );
    let (ok, out) = run(&["--dry-run"]);
    assert!(
        ok && out.contains("users: 2 unchanged") && out.contains("roles: 1 unchanged"),
        "nothing more was written: {out}"
    );

    // A re-run creates nothing twice and changes an existing role only with --update, naming
    // the fields (the dry run too); only the fields the file carries are compared.
    write_roles(
        "\"Domain Admins\";\"CONTOSO\\jen;CONTOSO\\ghost\";\"\";\"02:00:00\";\"True\";\"False\";\"False\"\r\n",
    );
    for extra in [&["--dry-run"][..], &[]] {
        let (ok, out) = run(extra);
        assert!(
            ok && out.contains("roles: 1 differ, left as they are (--update changes them): Domain Admins (ttl_s, max_ttl_s)"),
            "{extra:?}: {out}"
        );
    }
    let (ok, out) = run(&["--update", "--dry-run"]);
    assert!(
        ok && out.contains("roles: 1 would be changed: Domain Admins (ttl_s, max_ttl_s)"),
        "{out}"
    );
    let (ok, out) = run(&["--update"]);
    assert!(
        ok && out.contains("roles: 1 changed: Domain Admins (ttl_s, max_ttl_s)"),
        "{out}"
    );
    let (ok, out) = run(&["--dry-run"]);
    assert!(
        ok && out.contains("roles: 1 unchanged") && out.contains("users: 2 unchanged"),
        "{out}"
    );

    // --json: the plan and what was done as one JSON object, nothing else on stdout.
    let out = Command::new(rolegate_bin())
        .args(&import)
        .args(["--dry-run", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(v["dry_run"], json!(true), "{v}");
    assert_eq!(v["provider"]["action"], json!("configured"), "{v}");
    assert_eq!(v["plan"]["roles_unchanged"], json!(1), "{v}");
    assert_eq!(v["plan"]["users_unchanged"], json!(2), "{v}");
    assert_eq!(
        v["country_code"],
        json!({"value": 1, "from": "settings"}),
        "{v}"
    );
    assert_eq!(v["plan"]["warnings"][0]["line"], json!(2), "{v}");

    // A UK deployment: DefaultCountryCode from the MfaSettings.xml given, the trunk 0 dropped,
    // digits that may already carry +44 named; the windows' zone is the flag.
    let uk = dir.path().join("MfaSettings-uk.xml");
    let xml = std::fs::read_to_string(&settings).unwrap();
    assert!(
        xml.contains("<DefaultCountryCode>1</DefaultCountryCode>"),
        "{xml}"
    );
    write_private(
        &uk,
        &xml.replace("<DefaultCountryCode>1<", "<DefaultCountryCode>44<"),
    );
    std::fs::write(&users, "SourceDomain,SourceAccountName,SourcePhoneNumber\r\nUK,ann,020 7946 0011\r\nUK,ian,447700900123\r\n").unwrap();
    write_roles(
        "\"Night\";\"UK\\ann\";\"\";\"3600\";\"False\";\"False\";\"True\";\"08:00\";\"18:00\"\r\n",
    );
    let roles_text = std::fs::read_to_string(&roles).unwrap().replace(
        "\"AvailabilityWindowEnabled\"",
        "\"AvailabilityWindowEnabled\";\"AvailableFrom\";\"AvailableTo\"",
    );
    std::fs::write(&roles, roles_text).unwrap();
    let uk_args = |extra: &[&str]| {
        let mut a = vec![
            "import",
            "mim",
            "--config",
            cfg.to_str().unwrap(),
            "--settings",
            uk.to_str().unwrap(),
            "--users",
            users.to_str().unwrap(),
            "--roles",
            roles.to_str().unwrap(),
            "--dry-run",
        ];
        a.extend(extra);
        rolegate(&a)
    };
    let (ok, out) = uk_args(&["--time-zone", "Europe/London"]);
    assert!(
        ok && out.contains("phone numbers without a country code: +44 (DefaultCountryCode in")
            && out.contains("availability windows without a TimeZone column: Europe/London")
            && out.contains("users: 2 would be created: UK\\ann, UK\\ian")
            && out.contains("`447700900123` may already carry country code 44: imported as written, +44447700900123; if it is +447700900123"),
        "{out}"
    );
    assert!(
        out.contains("MfaSettings-uk.xml: read and checked; provider `phone-legacy` keeps reading"),
        "{out}"
    );
    // --settings is read and checked by the provider even when one is configured.
    write_private(
        &uk,
        &xml.replace(
            "</MfaSettings>",
            "<CustomPhoneProvider>Contoso.Phone.dll</CustomPhoneProvider></MfaSettings>",
        ),
    );
    let (ok, out) = uk_args(&["--time-zone", "Europe/London"]);
    assert!(
        !ok && out.contains("does not load with provider `phone-legacy`")
            && out.contains("CustomPhoneProvider"),
        "{out}"
    );
    let (ok, out) = uk_args(&["--time-zone", "Mars/Olympus"]);
    assert!(
        !ok && out.contains("--time-zone `Mars/Olympus` is not an IANA time zone"),
        "{out}"
    );
}

/// `user new --from-directory` copies display name, phone and e-mail from a real OpenLDAP
/// directory once (New-PAMUser from the CORP domain); an account not in it is refused.
#[tokio::test]
async fn users_are_created_from_the_directory() {
    use rolegate_e2e::ldap::{ADMIN_DN, BASE_DN, Slapd};
    let slapd = Slapd::start(&format!(
        "dn: uid=jdoe,{BASE_DN}\nobjectClass: inetOrgPerson\nuid: jdoe\ncn: Jane Doe\nsn: Doe\ndisplayName: Jane Doe\ntelephoneNumber: (425) 555-0001\nmail: jdoe@contoso.test\n\ndn: uid=bob,{BASE_DN}\nobjectClass: inetOrgPerson\nuid: bob\ncn: Bob\nsn: B\nmobile: +44 20 7946 0000\n"
    ));
    let dir = tempfile::tempdir().unwrap();
    let password = slapd.password_file(dir.path());
    let d = start_with(&format!(
        "\n[directory]\nurl = \"{}\"\nbind_dn = \"{ADMIN_DN}\"\nbind_password_file = \"{}\"\nbase_dn = \"{BASE_DN}\"\naccount_attribute = \"uid\"\nmonitor_interval_s = 1\n",
        slapd.url,
        password.display()
    ));
    let admin = d.admin.clone();
    let (okay, out) = cli(
        &d,
        &admin,
        &["user", "new", "CONTOSO\\jdoe", "--from-directory", "--json"],
        "",
    );
    assert!(okay, "{out}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|_| panic!("{out}"));
    assert_eq!(v["display_name"], "Jane Doe", "{v}");
    assert_eq!(v["phone"], "+14255550001", "normalised: {v}");
    assert_eq!(v["email"], "jdoe@contoso.test", "{v}");
    assert!(
        v["source"].as_str().unwrap().starts_with("uid=jdoe,"),
        "{v}"
    );
    // The second phone attribute when the first is absent; what the admin writes wins.
    let v = new_user(
        &d,
        &admin,
        json!({"account": "bob", "display_name": "Robert", "from_directory": true}),
    )
    .await;
    assert_eq!(
        (v["display_name"].as_str(), v["phone"].as_str()),
        (Some("Robert"), Some("+442079460000")),
        "{v}"
    );
    let (st, e) = call(
        &d,
        Some(&admin),
        "POST",
        "/v1/users",
        Some(json!({"account": "CONTOSO\\nobody", "from_directory": true})),
    )
    .await;
    assert_eq!(st, 404, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not in the directory"),
        "{e}"
    );

    // Someone edits jdoe's phone in the directory: the monitor raises 825 once (source
    // monitoring) and the stored number stays, so the next call still goes to the old phone.
    slapd.modify(&format!(
        "dn: uid=jdoe,{BASE_DN}\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +1 206 555 0199\n"
    ));
    let deadline = Instant::now() + Duration::from_secs(15);
    let monitored = loop {
        let (_, ev) = call(&d, Some(&admin), "GET", "/v1/events?id=825", None).await;
        let m: Vec<Value> = ev
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["source"] == "monitoring")
            .cloned()
            .collect();
        if !m.is_empty() {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "no 825 from the monitor in 15 s: {ev}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(monitored[0]["account"], "CONTOSO\\jdoe", "{monitored:?}");
    assert_eq!(monitored[0]["severity"], "warning", "{monitored:?}");
    assert!(
        monitored[0]["message"].as_str().unwrap().contains("…0199"),
        "{monitored:?}"
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, ev) = call(&d, Some(&admin), "GET", "/v1/events?id=825", None).await;
    let again = ev
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == "monitoring")
        .count();
    assert_eq!(again, 1, "raised once per change: {ev}");
    let (_, u) = call(&d, Some(&admin), "GET", "/v1/users/CONTOSO%5Cjdoe", None).await;
    assert_eq!(u["phone"], "+14255550001", "the stored number is kept: {u}");

    // A daemon without [directory] says so.
    let plain = start();
    let (st, e) = call(
        &plain,
        Some(&plain.admin),
        "POST",
        "/v1/users",
        Some(json!({"account": "jdoe", "from_directory": true})),
    )
    .await;
    assert_eq!(st, 422, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no [directory]"),
        "{e}"
    );
}

/// A daemon killed (SIGKILL) in the middle of a stream of activations loses none it reported
/// active: after a restart on the same folder each is active, and the event chain is whole.
#[tokio::test]
async fn a_killed_daemon_loses_no_activation_it_reported() {
    let d = start_with("\n[policy]\nrequests_per_minute = 100000\n");
    let admin = d.admin.clone();
    let user = jdoe_with_role(&d, "hello").await;
    // A role per client: one live activation per user and role.
    for i in 0..8 {
        let role = json!({"name": format!("load-{i}"), "candidates": ["jdoe"], "ttl_s": 600,
                          "max_ttl_s": 600, "mfa_enabled": true, "providers": ["hello"]});
        let (s, e) = call(&d, Some(&admin), "POST", "/v1/roles", Some(role)).await;
        assert_eq!(s, 201, "{e}");
    }

    // Eight clients activate in a loop, each its own role, and close each activation before
    // the next; each records the ids the daemon reported active, and those it reported closed.
    let reported = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let closed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut clients = Vec::new();
    for i in 0..8 {
        let (url, user, reported, closed) = (
            d.url.clone(),
            user.clone(),
            reported.clone(),
            closed.clone(),
        );
        let role = format!("load-{i}");
        clients.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            // Until the daemon is gone (or the bounds are reached): errors end the loop.
            for _ in 0..2_000 {
                if Instant::now() > deadline {
                    break;
                }
                let Ok(r) = client
                    .post(format!("{url}/v1/requests"))
                    .bearer_auth(&user)
                    .json(&json!({"role": role, "justification": "load"}))
                    .send()
                    .await
                else {
                    break;
                };
                let Ok(r) = r.json::<Value>().await else {
                    break;
                };
                let id = r["id"].as_str().unwrap_or_default().to_string();
                let Ok(done) = client
                    .post(format!("{url}/v1/requests/{id}/answer"))
                    .bearer_auth(&user)
                    .json(&json!({"code": hello_answer(&r)}))
                    .send()
                    .await
                else {
                    break;
                };
                let Ok(done) = done.json::<Value>().await else {
                    break;
                };
                if done["state"] != "active" {
                    continue;
                }
                reported.lock().unwrap().push(id.clone());
                let Ok(c) = client
                    .post(format!("{url}/v1/requests/{id}/close"))
                    .bearer_auth(&user)
                    .send()
                    .await
                else {
                    break;
                };
                let Ok(c) = c.json::<Value>().await else {
                    break;
                };
                if c["state"] == "closed" {
                    closed.lock().unwrap().push(id);
                }
            }
        }));
    }
    // Killed while the clients still write.
    while reported.lock().unwrap().len() < 200 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let dir = d.kill();
    for c in clients {
        c.await.unwrap();
    }
    let reported = reported.lock().unwrap().clone();
    let closed = closed.lock().unwrap().clone();
    assert!(reported.len() >= 200, "only {} activations", reported.len());

    let cfg = dir.path().join("rolegate.toml");
    let d = serve_config(dir, &cfg);
    assert!(d.admin.is_empty(), "the restart found its database");
    // Each activation reported is there: closed when its close was reported, else active or
    // closed (a close the kill cut off may or may not have been written).
    for id in &reported {
        let (s, r) = call(&d, Some(&admin), "GET", &format!("/v1/requests/{id}"), None).await;
        let want: &[&str] = if closed.contains(id) {
            &["closed"]
        } else {
            &["active", "closed"]
        };
        assert!(
            s == 200 && want.contains(&r["state"].as_str().unwrap_or_default()),
            "{id}: {r}"
        );
    }
    let (_, ev) = call(&d, Some(&admin), "GET", "/v1/events?id=103", None).await;
    assert!(ev.as_array().unwrap().len() >= reported.len(), "{ev}");
    let (_, v) = call(&d, Some(&admin), "GET", "/v1/events/verify", None).await;
    assert_eq!(v["intact"], true, "{v}");
}

#[tokio::test]
async fn a_role_naming_an_unknown_provider_candidate_or_approver_is_refused_naming_each() {
    let d = start();
    let admin = d.admin.clone();
    new_user(&d, &admin, json!({"account": "CONTOSO\\jdoe"})).await;
    // A role `Ops` with these providers, candidates and approvers, sent by the admin.
    let send = |method: &'static str, path: &'static str, p: Value, c: Value, a: Value| {
        let role = json!({"name": "Ops", "candidates": c, "approvers": a, "ttl_s": 60,
                          "max_ttl_s": 60, "mfa_enabled": true, "approval_enabled": true,
                          "providers": p});
        call(&d, Some(&admin), method, path, Some(role))
    };
    let jdoe = || json!(["CONTOSO\\jdoe"]);
    let (s, e) = send("POST", "/v1/roles", json!(["totpp"]), jdoe(), jdoe()).await;
    assert_eq!(s, 422, "{e}");
    let m = e["error"]["message"].as_str().unwrap_or_default();
    assert!(
        m.contains("unknown provider `totpp`") && m.contains("(configured: `hello`)"),
        "{m}"
    );
    let (s, e) = send(
        "POST",
        "/v1/roles",
        json!(["hello"]),
        json!(["CONTOSO\\jdoe", "ghost"]),
        json!(["boss"]),
    )
    .await;
    assert_eq!(s, 422, "{e}");
    let m = e["error"]["message"].as_str().unwrap_or_default();
    assert!(
        m.contains("candidate `ghost`") && m.contains("approver `boss`"),
        "{m}"
    );
    let (s, roles) = call(&d, Some(&admin), "GET", "/v1/roles", None).await;
    assert_eq!((s, roles), (200, json!([])), "nothing stored");
    // The CLI says the same, as a sentence.
    let args =
        "role new Ops --candidates CONTOSO\\jdoe --ttl 60 --mfa-enabled yes --providers totpp";
    let (ok, out) = cli(&d, &admin, &args.split(' ').collect::<Vec<_>>(), "");
    assert!(!ok && out.contains("unknown provider `totpp`"), "{out}");
    // Spelled right, it is taken; an edit adding a stranger is refused.
    let (s, e) = send(
        "POST",
        "/v1/roles",
        json!(["hello"]),
        json!(["contoso\\JDOE"]),
        jdoe(),
    )
    .await;
    assert_eq!(s, 201, "{e}");
    let (s, e) = send(
        "PUT",
        "/v1/roles/Ops",
        json!(["hello"]),
        json!(["CONTOSO\\jdoe", "eve"]),
        jdoe(),
    )
    .await;
    assert_eq!(s, 422, "{e}");
    assert!(e.to_string().contains("candidate `eve`"), "{e}");
}

#[tokio::test]
async fn request_list_all_shows_an_admin_everyones_requests_with_filters() {
    let d = start();
    let admin = d.admin.clone();
    let user = jdoe_with_role(&d, "hello").await;
    let id = activate_with_hello(
        &d,
        &user,
        json!({"role": "r", "justification": "patch night", "ttl_s": 60}),
    )
    .await;
    // A second one while it is active: refused, naming it and its end.
    let (s, e) = call(
        &d,
        Some(&user),
        "POST",
        "/v1/requests",
        Some(json!({"role": "r"})),
    )
    .await;
    assert_eq!(s, 409, "{e}");
    let m = e["error"]["message"].as_str().unwrap_or_default();
    assert!(m.contains(&id) && m.contains("active until"), "{m}");
    let (ok, out) = cli(&d, &user, &["request", "new", "--role", "r"], "");
    assert!(
        !ok && out.contains(&id) && out.contains("close it first"),
        "{out}"
    );

    // The user's own list: justification and length shown, times as dates.
    let (ok, out) = cli(&d, &user, &["request", "list"], "");
    assert!(
        ok && out.contains("JUSTIFICATION") && out.contains("patch night"),
        "{out}"
    );
    assert!(
        out.contains(&id) && out.contains("active") && out.contains("Z"),
        "{out}"
    );
    // Everyone's: admins only; filters by role, user and state.
    let (ok, out) = cli(&d, &user, &["request", "list", "--all"], "");
    assert!(!ok && out.contains("admin"), "{out}");
    let (ok, out) = cli(&d, &user, &["request", "list", "--account", "jdoe"], "");
    assert!(!ok && out.contains("--all"), "{out}");
    for (args, found) in [
        (vec!["--role", "r", "--state", "active"], true),
        (
            vec!["--account", "JDOE", "--state", "active,pending_mfa"],
            true,
        ),
        (vec!["--state", "closed"], false),
        (vec!["--role", "other"], false),
    ] {
        let mut all = vec!["request", "list", "--all"];
        all.extend(args.iter().copied());
        let (ok, out) = cli(&d, &admin, &all, "");
        assert!(ok, "{out}");
        assert_eq!(out.contains(&id), found, "{args:?}: {out}");
    }
    let (ok, out) = cli(
        &d,
        &admin,
        &["request", "list", "--all", "--state", "done"],
        "",
    );
    assert!(
        !ok && out.contains("`done` is not a request state"),
        "{out}"
    );
}

#[tokio::test]
async fn the_configs_owner_issues_an_admin_token_offline_when_none_is_left() {
    let d = start();
    let admin = d.admin.clone();
    // Every admin token revoked: nothing can be had through the API any more.
    let (_, list) = call(&d, Some(&admin), "GET", "/v1/tokens", None).await;
    let first = list[0]["id"].as_str().unwrap().to_string();
    let (s, r) = call(
        &d,
        Some(&admin),
        "DELETE",
        &format!("/v1/tokens/{first}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(status(&d, &admin, "GET", "/v1/me").await, 401);

    let cfg = d.dir.path().join("rolegate.toml");
    let run = |args: &[&str], as_nobody: bool| {
        let mut c = if as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
                .arg(rolegate_bin());
            c
        } else {
            Command::new(rolegate_bin())
        };
        let out = c
            .args(args)
            .env_remove("ROLEGATE_TOKEN")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let cfg_s = cfg.to_str().unwrap();
    // Only an admin token, only with the config, only by its owner.
    let (ok, out) = run(&["token", "new", "--offline", "--config", cfg_s], false);
    assert!(!ok && out.contains("--admin"), "{out}");
    let (ok, out) = run(&["token", "new", "--admin", "--offline"], false);
    assert!(!ok && out.contains("--config"), "{out}");
    let (ok, out) = run(
        &["token", "new", "--admin", "--offline", "--config", cfg_s],
        true,
    );
    assert!(
        !ok && !out.contains("ROLEGATE_TOKEN="),
        "another user: {out}"
    );

    let (ok, out) = run(
        &[
            "token",
            "new",
            "--admin",
            "--offline",
            "--config",
            cfg_s,
            "--label",
            "break glass",
        ],
        false,
    );
    assert!(ok, "{out}");
    let token = out
        .split("ROLEGATE_TOKEN=")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .unwrap()
        .to_string();
    // The running daemon takes it at once, as an admin.
    let (s, me) = call(&d, Some(&token), "GET", "/v1/me", None).await;
    assert_eq!(
        (s, &me["account"], &me["admin"]),
        (200, &json!("admin"), &json!(true)),
        "{me}"
    );
    let (_, ev) = call(&d, Some(&token), "GET", "/v1/events?id=520", None).await;
    let m = ev[0]["message"].as_str().unwrap_or_default();
    assert!(m.contains("offline") && m.contains("break glass"), "{ev}");
    assert!(!m.contains(&token), "never the token: {m}");
    // The running daemon's next events follow the offline one in one chain.
    new_user(&d, &token, json!({"account": "CONTOSO\\after"})).await;
    let (_, v) = call(&d, Some(&token), "GET", "/v1/events/verify", None).await;
    assert_eq!(v["intact"], true, "{v}");
}

#[tokio::test]
async fn sighup_without_tls_or_access_log_reloads_nothing_and_the_daemon_keeps_serving() {
    // `systemctl reload rolegate` sends SIGHUP: it must never stop the gate (systemd counts a
    // death by SIGHUP as a clean exit, and would not restart it).
    let d = start();
    d.hangup();
    assert!(d.said("SIGHUP").contains("nothing to reload"));
    d.hangup();
    d.said("nothing to reload");
    let (s, me) = call(&d, Some(&d.admin), "GET", "/v1/me", None).await;
    assert_eq!(s, 200, "still serving: {me}");
}

#[tokio::test]
async fn sigterm_stops_the_daemon_cleanly_and_a_restart_finds_everything() {
    let d = start();
    let admin = d.admin.clone();
    let token = jdoe_with_role(&d, "hello").await;
    let id = activate_with_hello(
        &d,
        &token,
        json!({"role": "r", "justification": "before the stop"}),
    )
    .await;

    let (status, said, dir) = d.terminate();
    assert!(status.success(), "{status}: {said:?}");
    assert!(
        said.iter()
            .any(|l| l.contains("rolegate: stopping (SIGTERM)")),
        "{said:?}"
    );
    assert_eq!(
        said.last().map(String::as_str),
        Some("rolegate: stopped"),
        "{said:?}"
    );
    // A clean stop logs no error (the expiry sweep once failed on the closed store).
    assert!(!said.iter().any(|l| l.contains("ERROR")), "{said:?}");
    // A clean stop checkpoints and truncates the WAL: the database file alone holds the state.
    let wal = dir.path().join("rolegate.db-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "the WAL was left with data"
    );

    let cfg = dir.path().join("rolegate.toml");
    let d = serve_config(dir, &cfg);
    assert!(d.admin.is_empty(), "the restart found its database");
    let (s, again) = call(&d, Some(&admin), "GET", &format!("/v1/requests/{id}"), None).await;
    assert_eq!(
        (s, again["state"].as_str()),
        (200, Some("active")),
        "{again}"
    );
    let (_, v) = call(&d, Some(&admin), "GET", "/v1/events/verify", None).await;
    assert_eq!(v["intact"], true, "{v}");
}

#[tokio::test]
async fn server_limits_in_the_config_are_applied_and_bad_ones_refused() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let server = |limits: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{limits}\n\n[[provider]]\nid = \"hello\"\nlibrary = \"{}\"\nunpinned = true\n",
            hello_lib().display()
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rolegate.toml");
    // Plain HTTP beyond the loopback interface is refused before anything is opened.
    write_private(&cfg, &server("").replace("127.0.0.1:0", "0.0.0.0:8420"));
    let stderr = refused_to_serve(&cfg);
    assert!(
        stderr.contains("[server] listen = `0.0.0.0:8420` reaches beyond this machine")
            && stderr.contains("allow_plaintext = true"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("rolegate.db").exists(),
        "a database was created"
    );

    write_private(&cfg, &server("client_timeout_s = 0"));
    let stderr = refused_to_serve(&cfg);
    assert!(
        stderr.contains("[server] client_timeout_s = 0 is outside 1..=3600 (seconds)"),
        "{stderr}"
    );

    // (3 s: the two held connections must not go idle past it while the third is tried.)
    write_private(&cfg, &server("client_timeout_s = 3\nmax_connections = 2"));
    let d = serve_config(dir, &cfg);
    let addr = d.url.trim_start_matches("http://").to_string();
    // A client that never finishes its headers is cut off after 3 seconds.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut buf))
        .await
        .expect("the slow client was never cut off")
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    assert!(started.elapsed() >= Duration::from_millis(2_500));
    // Two connections held open; a third is closed unserved.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let n = c.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(c);
    }
    let mut third = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let n = tokio::time::timeout(Duration::from_secs(10), third.read(&mut buf))
        .await
        .expect("the third connection was neither served nor closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
}

/// The daemon's own HTTPS, as an admin sets it up: refused files named before anything opens,
/// the CLI trusting a private CA, a plain-HTTP client told to use https, a silent client cut off,
/// and a renewed certificate taken on SIGHUP while a broken one is not.
#[tokio::test]
async fn https_from_the_config_reloads_on_sighup_and_refuses_bad_files() {
    use rolegate_e2e::phonefactor::pki;
    use std::os::unix::fs::PermissionsExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    // Two test PKIs: the certificate served first, and its renewal from another CA.
    let (first, renewal) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    pki(first.path());
    pki(renewal.path());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(first.path().join("server.pem"), &cert).unwrap();
    std::fs::copy(first.path().join("server.key"), &key).unwrap();
    let cfg = dir.path().join("rolegate.toml");
    let config = |server: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nclient_timeout_s = 2\n{server}\n\n[[provider]]\nid = \"hello\"\nlibrary = \"{}\"\nunpinned = true\n",
            hello_lib().display()
        )
    };
    let refused = |server: &str| {
        write_private(&cfg, &config(server));
        let said = refused_to_serve(&cfg);
        assert!(
            !dir.path().join("rolegate.db").exists(),
            "a database was created"
        );
        said
    };
    let both = "tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"";
    let said = refused("tls_cert = \"cert.pem\"");
    assert!(
        said.contains("[server] tls_cert is set but tls_key is not"),
        "{said}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let said = refused(both);
    assert!(
        said.contains("key.pem is readable by group or others (mode 644)"),
        "{said}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let said = refused("tls_cert = \"key.pem\"\ntls_key = \"key.pem\"");
    assert!(said.contains("key.pem: holds no certificate"), "{said}");
    let encrypted = dir.path().join("encrypted.pem");
    let out = Command::new("openssl")
        .args(["pkey", "-aes256", "-passout", "pass:x", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&encrypted)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::set_permissions(&encrypted, std::fs::Permissions::from_mode(0o600)).unwrap();
    let said = refused("tls_cert = \"cert.pem\"\ntls_key = \"encrypted.pem\"");
    assert!(
        said.contains("encrypted.pem: is encrypted: a daemon cannot type its passphrase"),
        "{said}"
    );
    let said = refused(&format!(
        "tls_cert = \"cert.pem\"\ntls_key = \"{}\"",
        renewal.path().join("server.key").display()
    ));
    assert!(
        said.contains("server.key: is not the key of the certificate in")
            && !said.contains("BEGIN"),
        "{said}"
    );

    write_private(&cfg, &config(both));
    let d = serve_config(dir, &cfg);
    assert!(d.url.starts_with("https://127.0.0.1:"), "{}", d.url);
    // The test certificates live two days: the daemon says so.
    d.said("ends in less than 14 days");
    let ca_first = first.path().join("ca.pem");
    let ca_renewal = renewal.path().join("ca.pem");
    let ca = |path: &std::path::Path| ["--ca-file".to_string(), path.display().to_string()];
    // `provider list` by `url` with `ca_args`.
    let list_at = |url: &str, ca_args: &[String]| {
        let mut args: Vec<&str> = ca_args.iter().map(String::as_str).collect();
        args.extend(["provider", "list"]);
        cli_at(url, &d.admin, &args, "")
    };
    let list = |ca_args: &[String]| list_at(&d.url, ca_args);
    let (ok, out) = list(&ca(&ca_first));
    assert!(ok && out.contains("hello"), "{out}");
    // Without the private CA the CLI refuses the daemon, and says what to do.
    let (ok, out) = list(&[]);
    assert!(
        !ok && out.contains("set --ca-file or ROLEGATE_CA_FILE"),
        "{out}"
    );
    // By a name its certificate does not hold (it names 127.0.0.1 only): said so.
    let (ok, said) = list_at(&d.url.replace("127.0.0.1", "localhost"), &ca(&ca_first));
    assert!(
        !ok && said.contains("certificate is not for this host name"),
        "{said}"
    );
    let addr = d.url.trim_start_matches("https://").to_string();
    // Plain HTTP to the HTTPS port: a readable refusal, not a broken handshake.
    let mut plain = tokio::net::TcpStream::connect(&addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut answer))
        .await
        .expect("no answer to plain HTTP")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("use an https:// URL"),
        "{answer}"
    );
    // A client that connects and never starts its handshake is cut off after 2 s.
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("the silent client was never cut off")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(started.elapsed() >= Duration::from_millis(1_500));

    // A renewal half done (the new key beside the old certificate) is refused; HTTPS goes on
    // with the certificate in use.
    std::fs::copy(renewal.path().join("server.key"), &key).unwrap();
    d.hangup();
    let line = d.said("TLS reload refused");
    assert!(line.contains("is not the key of the certificate"), "{line}");
    let (ok, out) = list(&ca(&ca_first));
    assert!(ok, "{out}");
    // The whole renewal is taken on the next SIGHUP, for new connections.
    std::fs::copy(renewal.path().join("server.pem"), &cert).unwrap();
    d.hangup();
    d.said("rolegate: TLS reloaded: certificate CN=server");
    let (ok, out) = list(&ca(&ca_renewal));
    assert!(ok && out.contains("hello"), "{out}");
    let (ok, out) = list(&ca(&ca_first));
    // (Both test CAs have one name: the old one's key does not check the new certificate.)
    assert!(!ok && out.contains("invalid peer certificate"), "{out}");
}

/// A test PKI (see `pki`) whose client key is private, as the CLI requires of it.
fn client_pki() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    rolegate_e2e::phonefactor::pki(dir.path());
    std::fs::set_permissions(
        dir.path().join("client.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    dir
}

/// A daemon's folder serving `pki`'s server certificate (`cert.pem`, `key.pem`, the key
/// private) and holding its CA as `clients.pem`.
fn mtls_dir(pki: &std::path::Path) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    for (from, to) in [
        ("server.pem", "cert.pem"),
        ("server.key", "key.pem"),
        ("ca.pem", "clients.pem"),
    ] {
        std::fs::copy(pki.join(from), dir.path().join(to)).unwrap();
    }
    std::fs::set_permissions(
        dir.path().join("key.pem"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    dir
}

/// The CLI's arguments that present `pki`'s client certificate.
fn as_client(pki: &std::path::Path) -> Vec<String> {
    vec![
        "--client-cert".to_string(),
        pki.join("client.pem").display().to_string(),
        "--client-key".to_string(),
        pki.join("client.key").display().to_string(),
    ]
}

/// `rolegate provider list` as the admin over HTTPS, trusting `pki`'s CA, with `client`'s
/// arguments (a client certificate, or none).
fn list_over_mtls(d: &Daemon, pki: &std::path::Path, client: &[String]) -> (bool, String) {
    let ca = pki.join("ca.pem").display().to_string();
    let mut args = vec!["--ca-file", ca.as_str()];
    args.extend(client.iter().map(String::as_str));
    args.extend(["provider", "list"]);
    cli_at(&d.url, &d.admin, &args, "")
}

/// Mutual TLS as an admin sets it up: only clients with a certificate from the configured CA
/// reach the API (the token still names the caller); a client without one, or with one from
/// another CA, is told what is wrong; a client key others can read is refused before anything
/// is sent; and a new client CA is taken on SIGHUP.
#[tokio::test]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_ca() {
    use std::os::unix::fs::PermissionsExt as _;
    let (ours, theirs) = (client_pki(), client_pki());
    let dir = mtls_dir(ours.path());
    let cfg = dir.path().join("rolegate.toml");
    let config = |server: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n\n[[provider]]\nid = \"hello\"\nlibrary = \"{}\"\nunpinned = true\n",
            hello_lib().display()
        )
    };
    let tls = "tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"";
    // A client CA without HTTPS, and a file that holds no certificate: refused at start.
    write_private(&cfg, &config("tls_client_ca = \"clients.pem\""));
    let said = refused_to_serve(&cfg);
    assert!(
        said.contains("[server] tls_client_ca is set but tls_cert and tls_key are not"),
        "{said}"
    );
    write_private(
        &cfg,
        &config(&format!("{tls}\ntls_client_ca = \"key.pem\"")),
    );
    let said = refused_to_serve(&cfg);
    assert!(
        said.contains("key.pem: holds no CA certificate") && !said.contains("PRIVATE KEY"),
        "{said}"
    );
    assert!(
        !dir.path().join("rolegate.db").exists(),
        "a database was created"
    );

    write_private(
        &cfg,
        &config(&format!("{tls}\ntls_client_ca = \"clients.pem\"")),
    );
    let d = serve_config(dir, &cfg);
    d.said("clients must present a certificate from [server] tls_client_ca");
    let list = |client: &[String]| list_over_mtls(&d, ours.path(), client);
    // With our CA's client certificate, the API answers as before.
    let (ok, out) = list(&as_client(ours.path()));
    assert!(ok && out.contains("hello"), "{out}");
    // Without one: refused in the handshake, and the CLI says what to set.
    let (ok, out) = list(&[]);
    assert!(
        !ok && out.contains("set --client-cert and --client-key"),
        "{out}"
    );
    // With another CA's: refused, and said so.
    let (ok, out) = list(&as_client(theirs.path()));
    assert!(
        !ok && out.contains("refused the client certificate"),
        "{out}"
    );
    // A certificate without its key is a usage error; a key others can read is refused
    // before anything is sent, without its bytes in the message.
    let (ok, out) = list(&as_client(ours.path())[..2]);
    assert!(!ok && out.contains("--client-key"), "{out}");
    let key_of_ours = ours.path().join("client.key");
    std::fs::set_permissions(&key_of_ours, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, out) = list(&as_client(ours.path()));
    assert!(
        !ok && out.contains("client.key is readable by group or others")
            && !out.contains("PRIVATE KEY"),
        "{out}"
    );
    std::fs::set_permissions(&key_of_ours, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A new client CA, taken on SIGHUP: their clients in, ours out.
    std::fs::copy(
        theirs.path().join("ca.pem"),
        d.dir.path().join("clients.pem"),
    )
    .unwrap();
    d.hangup();
    d.said("rolegate: TLS reloaded");
    let (ok, out) = list(&as_client(theirs.path()));
    assert!(ok && out.contains("hello"), "{out}");
    let (ok, out) = list(&as_client(ours.path()));
    assert!(
        !ok && out.contains("refused the client certificate"),
        "{out}"
    );
}

/// A client certificate revoked by its CA is refused once the CA's new revocation list is in
/// place (SIGHUP), and a file that holds no list is refused at start.
#[tokio::test]
async fn mutual_tls_refuses_a_client_certificate_its_ca_revoked() {
    use rolegate_e2e::phonefactor::openssl;
    let ours = client_pki();
    // The CA's own books, as `openssl ca` keeps them.
    // (A v2 list with a number and the CA's key id, as RFC 5280 asks and rustls reads.)
    std::fs::write(ours.path().join("index.txt"), "").unwrap();
    std::fs::write(ours.path().join("crlnumber"), "01\n").unwrap();
    std::fs::write(
        ours.path().join("ca.cnf"),
        "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 2\ncrl_extensions = crl_ext\n[crl_ext]\nauthorityKeyIdentifier = keyid:always\n",
    )
    .unwrap();
    let ca_cmd = [
        "ca", "-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.pem",
    ];
    let gencrl = |out: &str| {
        let mut args = ca_cmd.to_vec();
        args.extend(["-gencrl", "-out", out]);
        openssl(ours.path(), &args);
    };
    gencrl("none-revoked.crl");
    let dir = mtls_dir(ours.path());
    std::fs::copy(
        ours.path().join("none-revoked.crl"),
        dir.path().join("clients.crl"),
    )
    .unwrap();
    let cfg = dir.path().join("rolegate.toml");
    let config = |crl: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\ntls_client_ca = \"clients.pem\"\ntls_client_crl = \"{crl}\"\n\n[[provider]]\nid = \"hello\"\nlibrary = \"{}\"\nunpinned = true\n",
            hello_lib().display()
        )
    };
    write_private(&cfg, &config("cert.pem"));
    let said = refused_to_serve(&cfg);
    assert!(
        said.contains("cert.pem: holds no revocation list"),
        "{said}"
    );
    write_private(&cfg, &config("clients.crl"));
    let d = serve_config(dir, &cfg);
    let list = || list_over_mtls(&d, ours.path(), &as_client(ours.path()));
    let (ok, out) = list();
    assert!(ok && out.contains("hello"), "{out}");
    // The CA revokes the client's certificate and publishes a new list.
    let mut revoke = ca_cmd.to_vec();
    revoke.extend(["-revoke", "client.pem"]);
    openssl(ours.path(), &revoke);
    gencrl("revoked.crl");
    std::fs::copy(
        ours.path().join("revoked.crl"),
        d.dir.path().join("clients.crl"),
    )
    .unwrap();
    d.hangup();
    d.said("rolegate: TLS reloaded");
    let (ok, out) = list();
    assert!(
        !ok && out.contains("refused the client certificate"),
        "{out}"
    );
}

/// The access log as an admin reads it: a line per request with the client, the request, the
/// status and the token's public id (never the token), refusals included; and a new file after
/// logrotate moves it away and sends SIGHUP.
#[tokio::test]
async fn the_access_log_records_each_request_and_reopens_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rolegate.toml");
    write_private(
        &cfg,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\naccess_log = \"access.jsonl\"\n\n[[provider]]\nid = \"hello\"\nlibrary = \"{}\"\nunpinned = true\n",
            hello_lib().display()
        ),
    );
    let d = serve_config(dir, &cfg);
    d.said("rolegate: access log");
    let log = d.dir.path().join("access.jsonl");
    let admin = d.admin.clone();
    let (s, _) = call(&d, Some(&admin), "GET", "/v1/providers", None).await;
    assert_eq!(s, 200);
    let (s, _) = call(&d, Some("rg_not-a-token"), "GET", "/v1/users", None).await;
    assert_eq!(s, 401);
    let (s, _) = call(&d, None, "GET", "/healthz", None).await;
    assert_eq!(s, 200);
    let lines = |path: &std::path::Path, n: usize| -> Vec<Value> {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            if lines.len() >= n {
                assert!(!text.contains(&admin), "the token itself was logged");
                return lines;
            }
            assert!(Instant::now() < until, "{n} lines not written: {text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let got = lines(&log, 3);
    let admin_id =
        &rolegate::store::secrets::token_hash(&admin)[..rolegate::records::tokens::ID_LEN];
    let wrong_id = &rolegate::store::secrets::token_hash("rg_not-a-token")
        [..rolegate::records::tokens::ID_LEN];
    let seen: Vec<(&str, &str, u64, Option<&str>)> = got
        .iter()
        .map(|l| {
            assert_eq!(l["client"], "127.0.0.1", "{l}");
            assert!(l["us"].as_u64().is_some() && l["time"].is_string(), "{l}");
            (
                l["method"].as_str().unwrap(),
                l["path"].as_str().unwrap(),
                l["status"].as_u64().unwrap(),
                l["token"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("GET", "/v1/providers", 200, Some(admin_id)),
            ("GET", "/v1/users", 401, Some(wrong_id)),
            ("GET", "/healthz", 200, None),
        ]
    );
    // logrotate: move the file away, SIGHUP; the next line goes to a new file.
    let rotated = d.dir.path().join("access.jsonl.1");
    std::fs::rename(&log, &rotated).unwrap();
    d.hangup();
    let until = Instant::now() + Duration::from_secs(10);
    while !log.exists() {
        let _ = call(&d, None, "GET", "/healthz", None).await;
        assert!(Instant::now() < until, "no new access log after SIGHUP");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(lines(&log, 1)[0]["path"], "/healthz");
    assert!(lines(&rotated, 3).len() >= 3);
    // The last request before a stop is in the log when the daemon has exited.
    let (s, _) = call(&d, Some(&admin), "GET", "/v1/roles", None).await;
    assert_eq!(s, 200);
    let (status, _, _dir) = d.terminate();
    assert!(status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["path"], "/v1/roles", "{text}");
}

/// Ctrl-C in a terminal and systemd's stop signal the daemon's whole process group: its plugin
/// workers must not die of it as if they had crashed (a warning, and event 402 in the chain,
/// on every stop); the daemon stops them itself.
#[tokio::test]
async fn a_stop_signalled_to_the_whole_group_records_no_worker_crash() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rolegate.toml");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[[provider]]\nid = \"hello\"\nlibrary = \"{}\"\nunpinned = true\nisolation = \"process\"\n",
        hello_lib().display()
    );
    write_private(&cfg, &config);
    let d = serve_config(dir, &cfg);
    let admin = d.admin.clone();
    // The worker is up and answering.
    let (s, v) = call(&d, Some(&admin), "GET", "/v1/providers", None).await;
    assert_eq!(s, 200, "{v}");
    assert!(v.to_string().contains("\"ok\""), "{v}");
    let (status, said, dir) = d.terminate_group();
    assert!(status.success(), "{said:?}");
    let said = said.join("\n");
    assert!(
        said.contains("rolegate: stopped")
            && !said.contains("plugin worker ended")
            && !said.contains("provider crash"),
        "{said}"
    );
    // Nor is a crash in the event chain when it starts again.
    let d = serve_config(dir, &cfg);
    let (_, events) = call(&d, Some(&admin), "GET", "/v1/events?id=402", None).await;
    assert_eq!(events.as_array().map(Vec::len), Some(0), "{events}");
}

#[tokio::test]
async fn metrics_count_committed_activations_for_the_scrape_token_and_admins_only() {
    let scrape = "0123456789abcdef0123456789abcdef-scrape";
    let dir = tempfile::tempdir().unwrap();
    write_private(&dir.path().join("metrics.token"), &format!("{scrape}\n"));
    let cfg = dir.path().join("rolegate.toml");
    write_private(
        &cfg,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmetrics_token_file = \"metrics.token\"\n\n[[provider]]\nid = \"hello\"\nlibrary = \"{}\"\nunpinned = true\n",
            hello_lib().display()
        ),
    );
    let d = serve_config(dir, &cfg);
    let admin = d.admin.clone();
    new_user(&d, &admin, json!({"account": "jdoe"})).await;
    new_user(&d, &admin, json!({"account": "mallory"})).await;
    let role = json!({"name": "Ops", "candidates": ["jdoe"], "ttl_s": 3600, "max_ttl_s": 7200,
                      "mfa_enabled": true, "providers": ["hello"]});
    let (s, _) = call(&d, Some(&admin), "POST", "/v1/roles", Some(role)).await;
    assert_eq!(s, 201);
    let user = issue_token(&d, &admin, json!({"account": "jdoe"})).await;
    let mallory = issue_token(&d, &admin, json!({"account": "mallory"})).await;

    // Nobody else reads the metrics: no token, a user's token, a wrong one.
    assert_eq!(call(&d, None, "GET", "/metrics", None).await.0, 401);
    assert_eq!(status(&d, &user, "GET", "/metrics").await, 403);
    assert_eq!(
        status(
            &d,
            "0123456789abcdef0123456789abcdef-wrong",
            "GET",
            "/metrics"
        )
        .await,
        401
    );

    // One activation through MFA, one refused request (not a candidate).
    let body = json!({"role": "Ops", "justification": "deploy"});
    activate_with_hello(&d, &user, body.clone()).await;
    let (s, _) = call(&d, Some(&mallory), "POST", "/v1/requests", Some(body)).await;
    assert_eq!(s, 403);

    let resp = reqwest::Client::new()
        .get(format!("{}/metrics", d.url))
        .bearer_auth(scrape)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        resp.headers()
    );
    let text = resp.text().await.unwrap();
    // Committed events, by id: one request created, MFA completed with hello, activated;
    // the refused request raised nothing. One activation held now.
    for (series, want) in [
        ("rolegate_events_total{id=\"200\",", 1.0),
        ("rolegate_events_total{id=\"103\",provider=\"hello\"}", 1.0),
        ("rolegate_events_total{id=\"203\",", 1.0),
        ("rolegate_events_total{id=\"101\",", 0.0),
        ("rolegate_events_total{id=\"400\",", 1.0),
        ("rolegate_requests{state=\"active\"}", 1.0),
        ("rolegate_requests{state=\"pending_mfa\"}", 0.0),
    ] {
        assert_eq!(sample(&text, series), want, "{series}\n{text}");
    }
    // The provider's calls: the challenge's start and its answer, each timed.
    for op in ["challenge_start", "challenge_continue"] {
        let series = format!(
            "rolegate_provider_call_duration_seconds_count{{provider=\"hello\",op=\"{op}\"}}"
        );
        assert_eq!(sample(&text, &series), 1.0, "{series}\n{text}");
    }
    assert_eq!(sample(&text, "rolegate_provider_call_failures_total"), 0.0);
    assert_eq!(
        sample(&text, "rolegate_http_requests_total{code=\"403\"}"),
        2.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "rolegate_http_requests_total{code=\"401\"}"),
        2.0,
        "{text}"
    );
    assert!(sample(&text, "rolegate_http_request_duration_seconds_count") >= 9.0);
    assert!(
        sample(&text, "rolegate_store_write_duration_seconds_count") >= 5.0,
        "{text}"
    );
    // Each write ran in a batch, a batch held at least one; each took some time.
    let batches = sample(&text, "rolegate_store_batch_duration_seconds_count");
    assert!(
        batches >= 1.0 && batches <= sample(&text, "rolegate_store_write_duration_seconds_count"),
        "{text}"
    );
    assert!(
        sample(&text, "rolegate_store_batch_duration_seconds_sum") > 0.0,
        "{text}"
    );
    assert_eq!(sample(&text, "rolegate_store_commit_failures_total"), 0.0);
    assert!(sample(&text, "rolegate_connections_open") >= 1.0, "{text}");
    assert!(sample(&text, "rolegate_start_time_seconds") as u64 > unix_now() - 600);
    // No secret in them: not the scrape token, not a user's.
    assert!(!text.contains(scrape) && !text.contains(&user));

    // Admins may read them too.
    let (s, by_admin) = call(&d, Some(&admin), "GET", "/metrics", None).await;
    assert_eq!(s, 200);
    assert!(
        by_admin
            .as_str()
            .unwrap()
            .contains("rolegate_build_info{version=")
    );
}

#[test]
fn a_metrics_token_file_that_is_readable_by_others_or_weak_is_refused_at_start() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rolegate.toml");
    write_private(
        &cfg,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nmetrics_token_file = \"m.token\"\n\n[[provider]]\nid = \"hello\"\nlibrary = \"{}\"\nunpinned = true\n",
            hello_lib().display()
        ),
    );
    let token = dir.path().join("m.token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let stderr = refused_to_serve(&cfg);
    assert!(
        stderr.contains("m.token") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    write_private(&token, "short-secret\n");
    let stderr = refused_to_serve(&cfg);
    assert!(
        stderr.contains("metrics_token_file") && stderr.contains("at least 32"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("short-secret"),
        "the token was shown: {stderr}"
    );
    assert!(
        !dir.path().join("rolegate.db").exists(),
        "the store was opened before the refusal"
    );
}

#[tokio::test]
async fn a_provider_past_its_sunset_takes_no_new_challenge_or_enrolment_and_is_announced() {
    let in_ten_days = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(240))
        .strftime("%Y-%m-%d")
        .to_string();
    let provider = |id: &str, lib: &std::path::Path, sunset: &str| {
        format!(
            "\n[[provider]]\nid = \"{id}\"\nlibrary = \"{}\"\nunpinned = true\n{sunset}\n",
            lib.display()
        )
    };
    let d = start_with(&format!(
        "{}{}{}",
        provider("old", &hello_lib(), "sunset = \"2020-01-01\""),
        provider(
            "totp-old",
            &rolegate_e2e::totp_lib(),
            "sunset = \"2020-06-30T12:00:00+02:00\""
        ),
        provider("soon", &hello_lib(), &format!("sunset = \"{in_ten_days}\"")),
    ));
    let admin = d.admin.clone();
    // Announced at start: the retired ones, and the one retiring within a month.
    let said = d.start_lines.join("\n");
    assert!(
        said.contains("provider `old` was retired on 2020-01-01T00:00:00Z"),
        "{said}"
    );
    assert!(
        said.contains("provider `totp-old` was retired on 2020-06-30T10:00:00Z"),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "provider `soon` retires on {in_ten_days}T00:00:00Z (in "
        )),
        "{said}"
    );
    assert!(!said.contains("provider `hello` retire"), "{said}");

    new_user(&d, &admin, json!({"account": "jdoe"})).await;
    for (name, providers) in [
        ("Mixed", json!(["old", "hello"])),
        ("Stranded", json!(["old"])),
    ] {
        let role = json!({"name": name, "candidates": ["jdoe"], "ttl_s": 600, "max_ttl_s": 600,
                          "mfa_enabled": true, "providers": providers});
        let (s, e) = call(&d, Some(&admin), "POST", "/v1/roles", Some(role)).await;
        assert_eq!(s, 201, "{e}");
    }
    let user = issue_token(&d, &admin, json!({"account": "jdoe"})).await;

    // A role that still has a live provider goes on with it.
    let (s, r) = call(
        &d,
        Some(&user),
        "POST",
        "/v1/requests",
        Some(json!({"role": "Mixed"})),
    )
    .await;
    assert_eq!((s, r["provider"].as_str()), (201, Some("hello")), "{r}");
    // Asking for the retired one by name is refused, saying why.
    let (s, e) = call(
        &d,
        Some(&user),
        "POST",
        "/v1/requests",
        Some(json!({"role": "Mixed", "provider": "old"})),
    )
    .await;
    assert_eq!(s, 403, "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.contains("has been retired"), "{message}");
    // A role left with only retired providers cannot be activated: the message says so.
    let (s, e) = call(
        &d,
        Some(&user),
        "POST",
        "/v1/requests",
        Some(json!({"role": "Stranded"})),
    )
    .await;
    assert_eq!(s, 403, "{e}");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`old` (retired on 2020-01-01T00:00:00Z"),
        "{message}"
    );
    // No new enrolment in a retired provider.
    let (s, e) = call(
        &d,
        Some(&user),
        "POST",
        "/v1/enrolments",
        Some(json!({"provider": "totp-old"})),
    )
    .await;
    assert_eq!(s, 403, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("provider `totp-old` was retired on 2020-06-30T10:00:00Z"),
        "{e}"
    );
    // The provider list says which are retired and when the others retire.
    let (_, list) = call(&d, Some(&admin), "GET", "/v1/providers", None).await;
    let by_id = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_id("old")["retired"], true);
    assert_eq!(by_id("old")["sunset"], "2020-01-01T00:00:00Z");
    assert_eq!(by_id("soon")["retired"], false);
    assert_eq!(by_id("hello")["sunset"], Value::Null);
    let (okay, out) = cli(&d, &admin, &["provider", "list"], "");
    assert!(
        okay && out.contains("SUNSET") && out.contains("2020-01-01T00:00:00Z"),
        "{out}"
    );

    // A restart names the role the retired provider strands.
    let (_, said, dir) = d.terminate();
    drop(said);
    let cfg = dir.path().join("rolegate.toml");
    let d = serve_config(dir, &cfg);
    let said = d.start_lines.join("\n");
    assert!(
        said.contains("role `Stranded` accepts only `old`: once retired"),
        "{said}"
    );
    assert!(!said.contains("role `Mixed`"), "{said}");
}

#[test]
fn a_sunset_that_is_no_date_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rolegate.toml");
    write_private(
        &cfg,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[[provider]]\nid = \"hello\"\nlibrary = \"{}\"\nunpinned = true\nsunset = \"next spring\"\n",
            hello_lib().display()
        ),
    );
    let stderr = refused_to_serve(&cfg);
    assert!(
        stderr.contains("provider `hello`: sunset = `next spring` is neither a date"),
        "{stderr}"
    );
    assert!(!dir.path().join("rolegate.db").exists());
}

/// Issue 26's holes, through the CLI and HTTP as an attacker inside the organisation would:
/// self-approval under another spelling, a disabled user's token, a user's history under any
/// spelling, look-alike accounts.
#[tokio::test]
async fn separation_of_duties_holds_under_every_spelling_over_the_cli() {
    let d = start();
    let admin = d.admin.clone();
    for account in ["CONTOSO\\Åsa", "CONTOSO\\boss"] {
        let (ok, out) = cli(&d, &admin, &["user", "new", account], "");
        assert!(ok, "{out}");
    }
    let role = json!({"name": "Ops", "candidates": ["contoso\\ÅSA"], "approvers": ["CONTOSO\\A\u{30a}sa", "CONTOSO\\boss"],
                      "ttl_s": 3600, "max_ttl_s": 7200, "approval_enabled": true});
    let (s, r) = call(&d, Some(&admin), "POST", "/v1/roles", Some(role)).await;
    assert_eq!(s, 201, "{r}");
    let asa = issue_token(&d, &admin, json!({"account": "contoso\\åsa"})).await;
    let boss = issue_token(&d, &admin, json!({"account": "CONTOSO\\boss"})).await;
    let (ok, out) = cli(
        &d,
        &asa,
        &[
            "--json",
            "request",
            "new",
            "--role",
            "Ops",
            "--justification",
            "x",
        ],
        "",
    );
    assert!(ok, "{out}");
    let id = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (ok, out) = cli(&d, &asa, &["approval", "approve", &id], "");
    assert!(
        !ok && out.contains("cannot approve their own request"),
        "{out}"
    );

    // A disabled user's token does nothing: no approval, no request, no read.
    let (s, _) = call(
        &d,
        Some(&admin),
        "PATCH",
        "/v1/users/contoso%5CBOSS",
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(s, 200);
    for (method, path, body) in [
        ("POST", format!("/v1/approvals/{id}/approve"), None),
        (
            "POST",
            "/v1/requests".to_string(),
            Some(json!({"role": "Ops"})),
        ),
        ("GET", "/v1/requests".to_string(), None),
        ("GET", "/v1/approvals".to_string(), None),
        ("GET", "/v1/me".to_string(), None),
    ] {
        let (s, e) = call(&d, Some(&boss), method, &path, body).await;
        assert_eq!(s, 403, "{method} {path}: {e}");
        assert!(
            e.to_string().contains("not an enabled rolegate user"),
            "{e}"
        );
    }
    let (_, r) = call(&d, Some(&admin), "GET", &format!("/v1/requests/{id}"), None).await;
    assert_eq!(r["state"], "pending_approval");
    let (s, _) = call(
        &d,
        Some(&admin),
        "PATCH",
        "/v1/users/contoso%5Cboss",
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!(s, 200);
    let (ok, out) = cli(&d, &boss, &["approval", "approve", &id], "");
    assert!(ok, "{out}");

    // Her history is one history under any spelling: created (500), requested, approved, active.
    let history = |user: &str| {
        let (ok, out) = cli(&d, &admin, &["--json", "events", "--user", user], "");
        assert!(ok, "{out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        let mut ids: Vec<i64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect();
        ids.sort();
        ids
    };
    let ids = history("CONTOSO\\Åsa");
    for want in [200, 201, 203, 500] {
        assert!(ids.contains(&want), "{want} missing from {ids:?}");
    }
    assert_eq!(history("contoso\\ÅSA"), ids);
    assert_eq!(history("CONTOSO\\A\u{30a}sa"), ids);

    // Look-alikes are refused naming what they resemble, unless an admin allows one.
    let (ok, out) = cli(&d, &admin, &["user", "new", "CONTOSO\\b\u{43e}ss"], "");
    assert!(!ok && out.contains("mixes scripts"), "{out}");
    let (ok, out) = cli(&d, &admin, &["user", "new", "CONTOSO\u{2216}boss"], "");
    assert!(
        !ok && out.contains("looks like the existing user `CONTOSO\\boss`"),
        "{out}"
    );
    let (ok, out) = cli(&d, &admin, &["user", "new", "CONTOSO\\bo\u{200b}ss"], "");
    assert!(!ok && out.contains("U+200B"), "{out}");
    let (ok, out) = cli(
        &d,
        &admin,
        &["user", "new", "CONTOSO\\b\u{43e}ss", "--allow-lookalike"],
        "",
    );
    assert!(ok, "{out}");
    let (_, created) = call(&d, Some(&admin), "GET", "/v1/events?id=500", None).await;
    assert!(
        created[0]["message"]
            .as_str()
            .unwrap()
            .contains("looking like `CONTOSO\\boss` and mixing scripts: allowed by `admin`"),
        "{created}"
    );
    // Disabled, she holds nothing any more: her activation closes (205, saying why).
    let (s, _) = call(
        &d,
        Some(&admin),
        "PATCH",
        "/v1/users/CONTOSO%5C%C3%85sa",
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(s, 200);
    let (_, r) = call(&d, Some(&admin), "GET", &format!("/v1/requests/{id}"), None).await;
    assert_eq!(r["state"], "closed", "{r}");
    assert_eq!(r["reason"], "`CONTOSO\\Åsa` was disabled by `admin`", "{r}");
    let (_, changed) = call(&d, Some(&admin), "GET", "/v1/events?id=501", None).await;
    assert!(
        changed[0]["message"]
            .as_str()
            .unwrap()
            .contains("enabled=false, 1 request(s) ended"),
        "{changed}"
    );
    // A user's token needs a user.
    let (s, e) = call(
        &d,
        Some(&admin),
        "POST",
        "/v1/tokens",
        Some(json!({"account": "CONTOSO\\nobody"})),
    )
    .await;
    assert_eq!(s, 404, "{e}");
    assert!(e.to_string().contains("create the user first"), "{e}");
}

/// Issue 32's CLI consistency, first part: yes/no options take the usual spellings, a missing
/// token is said plainly, and a reader that goes away ends the output quietly.
#[tokio::test]
async fn the_cli_takes_yes_no_says_when_no_token_and_ends_quietly_on_a_closed_pipe() {
    let d = start();
    let admin = d.admin.clone();
    for (i, value) in ["true", "yes", "1", "FALSE", "no", "0"].iter().enumerate() {
        let (okay, out) = cli(
            &d,
            &admin,
            &[
                "role",
                "new",
                &format!("r{i}"),
                "--mfa-enabled",
                value,
                "--providers",
                "hello",
            ],
            "",
        );
        assert!(okay, "{value}: {out}");
        let (_, role) = call(&d, Some(&admin), "GET", &format!("/v1/roles/r{i}"), None).await;
        assert_eq!(role["mfa_enabled"], json!(i < 3), "{value}: {role}");
    }
    let (okay, out) = cli(
        &d,
        &admin,
        &["role", "new", "x", "--mfa-enabled", "maybe"],
        "",
    );
    assert!(!okay && out.contains("`maybe` is not yes or no"), "{out}");
    // The daemon's refusal is one plain sentence; its HTTP status only with --verbose.
    let (okay, out) = cli(
        &d,
        &admin,
        &["role", "new", "x", "--mfa-enabled", "yes"],
        "",
    );
    assert!(!okay, "{out}");
    assert_eq!(
        out.trim(),
        "rolegate: role `x`: MFA is enabled but no provider is listed: add one with `--providers`"
    );
    let (_, out) = cli(
        &d,
        &admin,
        &["--verbose", "role", "new", "x", "--mfa-enabled", "yes"],
        "",
    );
    assert!(out.trim().ends_with("(HTTP 422)"), "{out}");

    // No token at all: one plain sentence saying how to give one.
    let out = Command::new(rolegate_e2e::rolegate_bin())
        .args(["--server", &d.url, "role", "get"])
        .env_remove("ROLEGATE_TOKEN")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("no API token: set ROLEGATE_TOKEN or --token"),
        "{said}"
    );

    // `rolegate events --json | <a reader that has gone>`: no panic, no error line, success.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            // The reader closes its end at once and lives on: the CLI's write meets no reader.
            "'{}' --server '{}' events --json --limit 1000 | sh -c 'exec 0<&-; sleep 1'",
            rolegate_e2e::rolegate_bin().display(),
            d.url
        ))
        .env("ROLEGATE_TOKEN", &admin)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !said.contains("panicked") && !said.to_lowercase().contains("broken pipe"),
        "{said}"
    );
}
