//! The web console in headless Chromium: every screen, as an admin and as a plain user, at a
//! desktop (1280x800) and a phone (390x844) width, checked by axe-core (no serious or critical
//! violation), for horizontal scrolling at the phone width, and saved as screenshots to
//! `target/artefacts/console/`; then what a user and an admin rely on: a role requested from
//! My roles and activated through the TOTP prompt, the admin's two-step close in Elevated
//! now, and the server's refusals shown beside the forms that caused them.

use std::path::PathBuf;

use rolegate_e2e::browser::Browser;
use rolegate_e2e::daemon::{Daemon, call, serve_config};
use rolegate_provider_totp::{Secret, code_for_secret};
use serde_json::{Value, json};

const DESKTOP: (u32, u32, &str) = (1280, 800, "desktop");
const PHONE: (u32, u32, &str) = (390, 844, "phone");

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn daemon() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rolegate.toml");
    rolegate_e2e::write_private(
        &cfg,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[[provider]]\nid = \"totp\"\nlibrary = \"{}\"\nunpinned = true\n[provider.settings]\nskew = 2\n",
            rolegate_e2e::totp_lib().display()
        ),
    );
    serve_config(dir, &cfg)
}

async fn ok(d: &Daemon, token: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let (s, v) = call(d, Some(token), method, path, body).await;
    assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
    v
}

/// Users, roles and tokens through the API; jdoe enrolled in TOTP. Returns jdoe's token and
/// authenticator app.
async fn setup(d: &Daemon) -> (String, Secret) {
    let admin = d.admin.as_str();
    for (account, name, phone) in [
        ("jdoe", "Jane Doe", "+1 425 555 0100"),
        ("boss", "Bo Ss", "+1 425 555 0101"),
        ("CONTOSO\\ops", "Ops on call", "+1 425 555 0102"),
    ] {
        let u = json!({"account": account, "display_name": name, "phone": phone});
        ok(d, admin, "POST", "/v1/users", Some(u)).await;
    }
    for role in [
        json!({"name": "Ops", "candidates": ["jdoe"], "ttl_s": 1800, "max_ttl_s": 3600,
               "mfa_enabled": true, "providers": ["totp"]}),
        json!({"name": "Audit readers", "candidates": ["jdoe", "boss"], "approvers": ["boss"],
               "approval_enabled": true, "justification_required": true,
               "ttl_s": 3600, "max_ttl_s": 7200}),
        json!({"name": "Night shift", "candidates": ["jdoe"], "ttl_s": 600, "max_ttl_s": 1200,
               "availability": {"days": ["mon-sun"], "from": "00:00", "to": "23:59", "time_zone": "Europe/London"}}),
        json!({"name": "Database owners", "candidates": ["CONTOSO\\ops"], "approvers": ["jdoe"],
               "approval_enabled": true, "ttl_s": 600, "max_ttl_s": 600}),
    ] {
        ok(d, admin, "POST", "/v1/roles", Some(role)).await;
    }
    let user = ok(
        d,
        admin,
        "POST",
        "/v1/tokens",
        Some(json!({"account": "jdoe", "label": "jdoe's laptop"})),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    ok(
        d,
        admin,
        "POST",
        "/v1/tokens",
        Some(json!({"account": "boss", "label": "boss's phone"})),
    )
    .await;
    // jdoe's authenticator app, enrolled through the API.
    let v = ok(
        d,
        &user,
        "POST",
        "/v1/enrolments",
        Some(json!({"provider": "totp"})),
    )
    .await;
    let text = v["prompt"]["text"].as_str().unwrap_or_default();
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("Key: "))
        .unwrap_or_else(|| panic!("no key in {v}"));
    let app = Secret {
        secret: key.split('(').next().unwrap().split_whitespace().collect(),
        algorithm: "SHA1".into(),
        digits: 6,
        period: 30,
        last_step: None,
    };
    let code = code_for_secret(&app, unix_now()).unwrap();
    let done = ok(
        d,
        &user,
        "POST",
        "/v1/enrolments/continue",
        Some(json!({"provider": "totp", "state": v["state"], "code": code})),
    )
    .await;
    assert_eq!(done["done"], true, "{done}");
    // A request waiting for boss's approval.
    ok(
        d,
        &user,
        "POST",
        "/v1/requests",
        Some(json!({"role": "Audit readers", "justification": "quarterly audit"})),
    )
    .await;
    // And one waiting for jdoe's.
    let ops = ok(
        d,
        admin,
        "POST",
        "/v1/tokens",
        Some(json!({"account": "CONTOSO\\ops"})),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    ok(
        d,
        &ops,
        "POST",
        "/v1/requests",
        Some(json!({"role": "Database owners", "justification": "schema migration"})),
    )
    .await;
    (user, app)
}

/// axe-core's script: fetched by `scripts/test` into `target/axe-core/`.
fn axe_source() -> String {
    let root = rolegate_e2e::target_dir();
    let candidates = [
        root.join("../axe-core/package/axe.min.js"),
        root.join("axe-core/package/axe.min.js"),
        rolegate_e2e::workspace_root().join("target/axe-core/package/axe.min.js"),
    ];
    for p in &candidates {
        if let Ok(s) = std::fs::read_to_string(p) {
            return s;
        }
    }
    panic!(
        "axe-core is missing (looked for {candidates:?}): run scripts/test, or `mkdir -p target/axe-core && cd target/axe-core && npm pack axe-core@4 && tar xzf axe-core-*.tgz`"
    );
}

fn artefacts() -> PathBuf {
    rolegate_e2e::workspace_root().join("target/artefacts/console")
}

/// Runs axe-core on the page; panics listing every serious or critical violation.
async fn axe(b: &Browser, axe_js: &str, what: &str) {
    if b.eval("return typeof window.axe === 'object'").await != Value::Bool(true) {
        b.eval(&format!("{axe_js}\n;return true")).await;
    }
    let v = b
        .eval_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations
               .filter(v => v.impact === 'serious' || v.impact === 'critical')
               .map(v => ({id: v.id, impact: v.impact, help: v.help,
                           targets: v.nodes.map(n => n.target.join(' ')).slice(0, 8)}))),
               e => done('axe failed: ' + e));",
        )
        .await;
    let list = v
        .as_array()
        .unwrap_or_else(|| panic!("{what}: axe did not run: {v}"));
    assert!(
        list.is_empty(),
        "{what}: axe-core found serious or critical violations:\n{}",
        list.iter()
            .map(|v| format!(
                "  {} ({}): {} at {}",
                v["id"].as_str().unwrap_or_default(),
                v["impact"].as_str().unwrap_or_default(),
                v["help"].as_str().unwrap_or_default(),
                v["targets"]
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Opens the screen at `hash` and waits for its data.
async fn open(b: &Browser, hash: &str, route: &str) {
    b.eval(&format!("location.hash = {}; return true", json!(hash)))
        .await;
    b.wait_until(
        &format!(
            "const s = document.querySelector('.screen:not([hidden])'); return !!s && s.dataset.route === {} && s.dataset.loaded === 'yes'",
            json!(route)
        ),
        &format!("the screen {hash}"),
        15,
    )
    .await;
}

/// Visits each of `screens` ((hash, route, screenshot name)) at both widths: axe-core, the
/// document's width at the phone's, a screenshot.
async fn visit_all(b: &Browser, axe_js: &str, who: &str, screens: &[(String, &str, String)]) {
    for (w, h, width) in [DESKTOP, PHONE] {
        b.set_viewport(w, h).await;
        for (hash, route, name) in screens {
            open(b, hash, route).await;
            let what = format!("{who} on {hash} at {width}");
            axe(b, axe_js, &what).await;
            if width == "phone" {
                let sw = b
                    .eval("return document.documentElement.scrollWidth")
                    .await
                    .as_u64()
                    .unwrap();
                assert!(sw <= 390, "{what}: the document is {sw} px wide");
            }
            b.eval("window.scrollTo(0, 0); return true").await;
            b.screenshot(&artefacts().join(format!("{name}-{width}.png")))
                .await;
        }
    }
}

/// Clicks the first button in the row of `body` whose text includes `row` and whose own text
/// starts with `label`.
fn click_in_row(body: &str, row: &str, label: &str) -> String {
    format!(
        "const r = [...document.querySelectorAll('#{body} tr')].find(r => r.textContent.includes({})); const b = r && [...r.querySelectorAll('button')].find(b => b.textContent.startsWith({})); const t = b ? b.textContent : null; if (b) b.click(); return t",
        json!(row),
        json!(label)
    )
}

#[tokio::test]
async fn the_console_serves_every_screen_accessibly_at_desktop_and_phone_widths() {
    let started = std::time::Instant::now();
    let axe_js = axe_source();
    let d = daemon();
    let admin = d.admin.clone();
    let (user, app) = setup(&d).await;
    let page = format!("{}/", d.url);
    let b = Browser::start().await;
    b.set_viewport(DESKTOP.0, DESKTOP.1).await;
    b.sign_in(&format!("{page}#/roles"), &user).await;
    assert_eq!(b.text("#who").await, "jdoe");

    // --- a user: request a role from My roles, answer the TOTP prompt -----------------------
    open(&b, "#/roles", "roles").await;
    b.wait_until(
        "return document.getElementById('my-roles-body').textContent.includes('Ops')",
        "jdoe's roles",
        10,
    )
    .await;
    // Only the roles jdoe may request (`?mine=true`).
    assert!(
        !b.text("#my-roles-body").await.contains("Database owners"),
        "{}",
        b.text("#my-roles-body").await
    );
    b.eval(
        "[...document.querySelectorAll('#my-roles-body tr')].find(r => r.textContent.includes('Ops')).querySelector('a').click(); return true",
    )
    .await;
    open(&b, "#/activate/Ops", "activate").await;
    assert_eq!(
        b.eval("return document.getElementById('role').value").await,
        json!("Ops"),
        "the role is preselected in the picker"
    );
    assert_eq!(
        b.eval("return document.getElementById('role').tagName")
            .await,
        json!("SELECT")
    );
    b.wait_until(
        "return !!document.querySelector('#request-provider option[value=\"totp\"]')",
        "the role's factors",
        10,
    )
    .await;
    b.type_into("#justification", "patch night").await;
    b.type_into("#minutes", "30").await;
    b.click("#request-form button[type=submit]").await;
    b.wait_until(
        "return location.hash.startsWith('#/request/') && !document.getElementById('code-form').hidden",
        "the code prompt",
        15,
    )
    .await;
    // A wrong code first: the prompt says so, beside it.
    let wrong = code_for_secret(&app, unix_now() + 7200).unwrap();
    b.type_into("#code", &wrong).await;
    b.click("#code-form button").await;
    b.wait_until(
        "return document.getElementById('mfa-status').textContent.includes('wrong')",
        "the wrong code's message",
        10,
    )
    .await;
    let right = code_for_secret(&app, unix_now() + 30).unwrap();
    b.type_into("#code", &right).await;
    b.click("#code-form button").await;
    b.wait_until(
        "return document.getElementById('request-result').textContent.includes(' is active until ')",
        "the activation",
        10,
    )
    .await;
    let screen = b.text("#scr-request").await;
    assert!(
        !screen.contains("wrong") && !screen.contains("attempt"),
        "a stale message is left: {screen}"
    );
    let (_, mine) = call(&d, Some(&user), "GET", "/v1/requests", None).await;
    let active = mine
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["role"] == "Ops")
        .unwrap()
        .clone();
    assert_eq!(active["state"], "active", "{mine}");
    let id = active["id"].as_str().unwrap().to_string();
    // The id is shown short, the full one in its title.
    assert!(
        screen.contains(&id[id.len() - 8..]) && !screen.contains(&id),
        "{screen}"
    );
    // A second request for the role while it is active: the server's refusal (409), next to
    // the form.
    open(&b, "#/activate/Ops", "activate").await;
    b.click("#request-form button[type=submit]").await;
    b.wait_until(
        "return document.getElementById('request-form-status').classList.contains('err')",
        "the refused second request",
        10,
    )
    .await;
    let said = b.text("#request-form-status").await;
    assert!(
        said.contains(&id),
        "the refusal names the active request: {said}"
    );

    // --- every screen a user has ---------------------------------------------------------
    let user_screens: Vec<(String, &str, String)> = vec![
        ("#/roles".into(), "roles", "my-roles".into()),
        ("#/activate/Ops".into(), "activate", "request-form".into()),
        (
            format!("#/request/{id}"),
            "request",
            "request-status".into(),
        ),
        ("#/requests".into(), "requests", "my-requests".into()),
        ("#/approvals".into(), "approvals", "approvals".into()),
        ("#/enrol".into(), "enrol", "enrol".into()),
        ("#/elevated".into(), "missing", "not-for-users".into()),
    ];
    visit_all(&b, &axe_js, "jdoe", &user_screens).await;
    // My requests: the closed and open states, the justification.
    b.set_viewport(DESKTOP.0, DESKTOP.1).await;
    open(&b, "#/requests", "requests").await;
    let list = b.text("#requests-body").await;
    assert!(
        list.contains("pending approval") && list.contains("quarterly audit"),
        "{list}"
    );

    // The approver's inbox: the requester, the justification.
    open(&b, "#/approvals", "approvals").await;
    let inbox = b.text("#approvals-body").await;
    assert!(
        inbox.contains("CONTOSO\\ops") && inbox.contains("schema migration"),
        "{inbox}"
    );

    // --- an admin ---------------------------------------------------------------------------
    b.click("#signout").await;
    b.type_into("#token", &admin).await;
    b.click("#signin-form button").await;
    b.wait_until(
        "return !document.getElementById('app').hidden && !document.querySelector('#nav .admin-only').hidden",
        "the admin's screens",
        15,
    )
    .await;
    let admin_screens: Vec<(String, &str, String)> = vec![
        ("#/elevated".into(), "elevated", "elevated".into()),
        ("#/users".into(), "users", "users".into()),
        ("#/admin-roles".into(), "admin-roles", "roles".into()),
        ("#/providers".into(), "providers", "providers".into()),
        ("#/tokens".into(), "tokens", "tokens".into()),
        ("#/events".into(), "events", "events".into()),
        ("#/roles".into(), "roles", "admin-my-roles".into()),
        ("#/activate".into(), "activate", "admin-request-form".into()),
        (
            format!("#/request/{id}"),
            "request",
            "admin-request-status".into(),
        ),
        ("#/requests".into(), "requests", "admin-my-requests".into()),
        ("#/approvals".into(), "approvals", "admin-approvals".into()),
        ("#/enrol".into(), "enrol", "admin-enrol".into()),
    ];
    visit_all(&b, &axe_js, "admin", &admin_screens).await;
    b.set_viewport(DESKTOP.0, DESKTOP.1).await;

    // Elevated now: jdoe's activation; Close asks first (the request stays active), Escape
    // backs out, the confirmation closes it, and says so beside the list.
    open(&b, "#/elevated", "elevated").await;
    b.wait_until(
        "return [...document.querySelectorAll('#elevated-body tr')].some(r => r.textContent.includes('jdoe') && r.textContent.includes('Ops'))",
        "jdoe's activation in Elevated now",
        10,
    )
    .await;
    let label = b
        .eval(&click_in_row("elevated-body", "jdoe", "Close"))
        .await;
    assert_eq!(label, json!("Close"));
    b.wait_until(
        "return [...document.querySelectorAll('#elevated-body button')].some(b => b.textContent.startsWith('Confirm'))",
        "the question",
        5,
    )
    .await;
    let still = ok(&d, &admin, "GET", &format!("/v1/requests/{id}"), None).await;
    assert_eq!(
        still["state"], "active",
        "one click closes nothing: {still}"
    );
    b.press("#elevated-body button[data-armed]", "\u{E00C}")
        .await;
    b.wait_until(
        "return !document.querySelector('#elevated-body button[data-armed]')",
        "Escape backing out",
        5,
    )
    .await;
    b.eval(&click_in_row("elevated-body", "jdoe", "Close"))
        .await;
    let still = ok(&d, &admin, "GET", &format!("/v1/requests/{id}"), None).await;
    assert_eq!(still["state"], "active", "{still}");
    b.eval(&click_in_row("elevated-body", "jdoe", "Confirm"))
        .await;
    b.wait_until(
        "return document.getElementById('elevated-body-status').textContent.includes('Closed Ops of jdoe')",
        "the close's confirmation beside the list",
        10,
    )
    .await;
    let closed = ok(&d, &admin, "GET", &format!("/v1/requests/{id}"), None).await;
    assert_eq!(closed["state"], "closed", "{closed}");
    b.wait_until(
        "return ![...document.querySelectorAll('#elevated-body tr')].some(r => r.textContent.includes('Ops'))",
        "the closed activation gone from Elevated now",
        10,
    )
    .await;
    // The closed request shows its state and no end.
    open(&b, &format!("#/request/{id}"), "request").await;
    let said = b.text("#scr-request").await;
    assert!(
        said.contains("closed") && !said.contains("ends ") && !said.contains("active until"),
        "{said}"
    );

    // Roles: a provider the server does not know (a list read before the config changed) is
    // refused, naming it, next to the form; the candidates are picked, not typed.
    open(&b, "#/admin-roles", "admin-roles").await;
    b.type_into("#role-name", "Typo").await;
    b.eval(
        "[...document.querySelectorAll('#role-candidates input[type=checkbox]')].find(c => c.value === 'jdoe').click(); return true",
    )
    .await;
    b.click("#role-mfa").await;
    b.eval("pick.providers.add('totpp'); return true").await;
    b.type_into("#role-ttl", "30").await;
    b.type_into("#role-max-ttl", "60").await;
    b.click("#role-save").await;
    b.wait_until(
        "return document.getElementById('role-status').classList.contains('err')",
        "the refused provider",
        10,
    )
    .await;
    let said = b.text("#role-status").await;
    assert!(said.contains("totpp"), "{said}");
    let (s, _) = call(&d, Some(&admin), "GET", "/v1/roles/Typo", None).await;
    assert_eq!(s, 404, "the refused role was created");
    // With the real provider it is created, and says so.
    b.eval(
        "const c = [...document.querySelectorAll('#role-providers input')].find(c => c.value === 'totpp'); c.click(); [...document.querySelectorAll('#role-providers input')].find(c => c.value === 'totp').click(); return true",
    )
    .await;
    b.click("#role-save").await;
    b.wait_until(
        "return document.getElementById('role-status').textContent.includes('Created role Typo')",
        "the created role",
        10,
    )
    .await;
    let role = ok(&d, &admin, "GET", "/v1/roles/Typo", None).await;
    assert_eq!(role["providers"], json!(["totp"]), "{role}");
    assert_eq!(role["candidates"], json!(["jdoe"]), "{role}");

    // Tokens: Revoke asks first; the confirmation revokes and says so beside the list.
    open(&b, "#/tokens", "tokens").await;
    b.eval(&click_in_row("tokens-body", "boss's phone", "Revoke"))
        .await;
    b.wait_until(
        "return [...document.querySelectorAll('#tokens-body button')].some(b => b.textContent.startsWith('Confirm'))",
        "the question",
        5,
    )
    .await;
    let (_, tokens) = call(&d, Some(&admin), "GET", "/v1/tokens", None).await;
    assert!(tokens.to_string().contains("boss's phone"), "{tokens}");
    b.eval(&click_in_row("tokens-body", "boss's phone", "Confirm"))
        .await;
    b.wait_until(
        "return document.getElementById('tokens-body-status').textContent.includes('Revoked the token')",
        "the revocation's confirmation",
        10,
    )
    .await;
    let (_, tokens) = call(&d, Some(&admin), "GET", "/v1/tokens", None).await;
    assert!(!tokens.to_string().contains("boss's phone"), "{tokens}");

    // Events: filtered by the provider (new in the API) and by the event id.
    open(&b, "#/events", "events").await;
    b.type_into("#ev-provider", "totp").await;
    b.click("#events-form button[type=submit]").await;
    b.wait_until(
        "return document.getElementById('events-status').classList.contains('ok') && document.getElementById('events-body').textContent.includes('totp')",
        "the events of the totp provider",
        10,
    )
    .await;
    let shown = b.eval("return [...document.querySelectorAll('#events-body tr')].every(r => r.querySelector('td[data-label=Provider]').textContent === 'totp')").await;
    assert_eq!(shown, json!(true), "the provider filter");
    // Older events, by keyset paging (`before_seq`): none older than these few.
    b.click("#ev-older").await;
    b.wait_until(
        "return document.getElementById('events-status').textContent.includes('older events')",
        "the older events",
        10,
    )
    .await;
    let said = b.text("#events-status").await;
    assert!(
        !b.eval("return document.getElementById('events-status').classList.contains('err')")
            .await
            .as_bool()
            .unwrap(),
        "{said}"
    );
    eprintln!(
        "console test: {} s; screenshots in {}",
        started.elapsed().as_secs(),
        artefacts().display()
    );
}
