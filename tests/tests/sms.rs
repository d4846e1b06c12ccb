//! The sms-twilio provider end to end: the real library loaded by the host, sending through a
//! Twilio double over real HTTP, the code read back from the recorded SMS.

use rolegate_e2e::daemon::sample;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rolegate::config::ProviderConfig;
use rolegate::model::clock::ManualClock;
use rolegate::plugins::Providers;
use rolegate::records::events;
use rolegate::records::roles::{self, RoleSpec};
use rolegate::records::users::{self, NewUser};
use rolegate::service::{NewRequest, RequestView, Requester, Service, Settings};
use rolegate::store::secrets::SealingKey;
use rolegate_e2e::daemon::{Daemon, serve_config};
use rolegate_e2e::stores::{Backend, Location};
use rolegate_e2e::twilio::{Failure, TwilioDouble};
use rolegate_e2e::{rolegate_bin, sms_twilio_lib, write_private};
use rolegate_sdk::Input;

const T0: &str = "2026-11-26T10:00:00Z";
const JDOE: &str = "CONTOSO\\jdoe";
const NOPHONE: &str = "CONTOSO\\nophone";

struct World {
    _at: Location,
    service: Arc<Service>,
    double: TwilioDouble,
    token: String,
}

async fn load(settings: toml::Table) -> rolegate::Result<Providers> {
    let sms = ProviderConfig {
        settings,
        ..rolegate_e2e::provider_config("sms", sms_twilio_lib(), "in-process")
    };
    rolegate_e2e::load_providers(vec![sms]).await
}

/// A service on SQLite with the sms provider pointing at a fresh double; `extra` settings are
/// added to the double's, and `token` replaces the token file's content when given.
async fn world_with(extra: &[(&str, toml::Value)], token: Option<&str>) -> World {
    let at = Location::new(Backend::Sqlite);
    let double = TwilioDouble::start();
    let token_file = double.write_token(at.path());
    if let Some(t) = token {
        write_private(&token_file, t);
    }
    let mut settings = double.settings(&token_file);
    for (k, v) in extra {
        settings.insert((*k).into(), v.clone());
    }
    let providers = load(settings).await.unwrap();
    let clock = Arc::new(ManualClock::new(T0.parse().unwrap()));
    let store = Arc::new(at.open().await);
    let key = Arc::new(SealingKey::load_or_create(&at.path().join("rolegate.key")).unwrap());
    let service = Service::new(store, Arc::new(providers), clock, key, Settings::default());
    service
        .store()
        .write(|tx| {
            users::create(
                tx,
                NewUser {
                    account: JDOE.into(),
                    display_name: "Jane".into(),
                    phone: Some("+1 425 555 0142".into()),
                    ..Default::default()
                },
                1,
                0,
            )?;
            users::create(
                tx,
                NewUser {
                    account: NOPHONE.into(),
                    display_name: "No Phone".into(),
                    ..Default::default()
                },
                1,
                0,
            )?;
            roles::create(
                tx,
                &RoleSpec {
                    name: "sms-admins".into(),
                    candidates: [JDOE.to_string(), NOPHONE.to_string()].into(),
                    approvers: [].into(),
                    ttl_s: 3600,
                    max_ttl_s: 7200,
                    availability: None,
                    justification_required: false,
                    approval_enabled: false,
                    mfa_enabled: true,
                    providers: vec!["sms".into()],
                    when_factor_down: Default::default(),
                    shadow: Vec::new(),
                },
                0,
            )
        })
        .await
        .unwrap();
    let token = double.auth_token().to_string();
    World {
        _at: at,
        service: Arc::new(service),
        double,
        token,
    }
}

async fn world() -> World {
    world_with(&[], None).await
}

async fn request(w: &World) -> RequestView {
    w.service
        .request(JDOE, "sms-admins", "patch night", None, None)
        .await
        .unwrap()
}

fn code(c: &str) -> Input {
    Input::Code { code: c.into() }
}

/// The request failed, with a reason that holds neither the token nor any code sent; returns
/// what the admin reads of it (event 101's message: the provider's own words). A failure of
/// the provider or of Twilio is not the user's: the user's reason says so, and no wrong
/// answer is counted against them.
async fn failed_reason(w: &World, v: &RequestView) -> String {
    assert_eq!(v.state, "failed", "{v:?}");
    let reason = v.reason.clone().unwrap_or_default();
    let id = v.id.clone();
    let (events, failures) = w
        .service
        .store()
        .read(move |tx| {
            let events = events::list(
                tx,
                &events::Filter {
                    id: Some(events::MFA_NOT_COMPLETED),
                    ..Default::default()
                },
            )?;
            let failures = tx.query("SELECT COALESCE(SUM(failures), 0) FROM lockouts", &[])?;
            Ok((events, failures[0].int(0)?))
        })
        .await
        .unwrap();
    let detail = events
        .iter()
        .find(|e| e.request.as_deref() == Some(id.as_str()))
        .map(|e| e.message.clone())
        .expect("event 101 for the failed request");
    if detail.contains("the provider failed") {
        assert!(
            reason.contains("the factor `sms` is unavailable")
                && reason.contains("nothing was counted against you"),
            "{reason}"
        );
        assert_eq!(failures, 0, "a provider's failure counted against the user");
    }
    for text in [&reason, &detail] {
        assert!(!text.contains(&w.token), "the token leaked: {text}");
        for m in w.double.messages() {
            assert!(!text.contains(&m.code().unwrap()), "a code leaked: {text}");
        }
    }
    detail
}

#[tokio::test]
async fn a_role_activates_with_the_code_from_the_sms() {
    let w = world().await;
    let v = request(&w).await;
    assert_eq!(v.state, "pending_mfa", "{v:?}");
    assert_eq!(v.provider.as_deref(), Some("sms"));
    let prompt = v.prompt.clone().unwrap();
    assert_eq!(prompt["kind"], "code");
    assert_eq!(prompt["message"], "Type the code sent by SMS to …42");
    assert_eq!(prompt["length"], 6);
    let sent = w.double.messages();
    assert_eq!(sent.len(), 1);
    let sms = &sent[0];
    assert_eq!(sms.to, "+14255550142");
    assert_eq!(sms.from.as_deref(), Some("+14155552345"));
    assert_eq!(sms.messaging_service_sid, None, "exactly one sender field");
    assert!(
        sms.sid.starts_with("SM") && sms.sid.len() == 34,
        "{}",
        sms.sid
    );
    let c = sms.code().unwrap();
    assert_eq!(
        sms.body,
        format!("Your rolegate code is {c}. It expires in 5 minutes.")
    );
    let done = w.service.answer(&v.id, JDOE, code(&c)).await.unwrap();
    assert_eq!(done.state, "active", "{done:?}");
    // One use: the request is over, so the same code is refused.
    let e = w.service.answer(&v.id, JDOE, code(&c)).await.unwrap_err();
    assert!(e.to_string().contains("not waiting for MFA"), "{e}");
    assert_eq!(w.double.messages().len(), 1);
    // A second request while the role is held: refused before anything is sent.
    let e = w
        .service
        .request(JDOE, "sms-admins", "again", None, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains(&v.id), "the first one named: {e}");
    assert_eq!(
        w.double.messages().len(),
        1,
        "no text for a refused request"
    );
}

#[tokio::test]
async fn a_wrong_code_is_denied() {
    let w = world().await;
    let v = request(&w).await;
    let right = w.double.messages()[0].code().unwrap();
    let wrong: String = right
        .chars()
        .map(|c| if c == '1' { '2' } else { '1' })
        .collect();
    let r = w.service.answer(&v.id, JDOE, code(&wrong)).await.unwrap();
    assert_eq!(r.state, "pending_mfa");
    assert!(
        r.reason
            .as_deref()
            .unwrap_or_default()
            .contains("wrong code"),
        "{r:?}"
    );
    // Malformed input changes nothing: no attempt is used up.
    let e = w
        .service
        .answer(&v.id, JDOE, code("12ab"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("6 digits"), "{e}");
    let _ = w.service.answer(&v.id, JDOE, code(&wrong)).await.unwrap();
    let r = w.service.answer(&v.id, JDOE, code(&wrong)).await.unwrap();
    assert_eq!(r.state, "failed", "{r:?}");
    assert!(
        r.reason
            .as_deref()
            .unwrap_or_default()
            .contains("no attempts left"),
        "{r:?}"
    );
    let e = w
        .service
        .answer(&v.id, JDOE, code(&right))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not waiting for MFA"), "{e}");
}

#[tokio::test]
async fn a_user_without_a_phone_is_refused_and_nothing_is_sent() {
    let w = world().await;
    let e = w
        .service
        .request(NOPHONE, "sms-admins", "x", None, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("phone number"), "{e}");
    let e = w
        .service
        .request(NOPHONE, "sms-admins", "x", None, Some("sms"))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("you have no phone number on record"),
        "{e}"
    );
    assert!(w.double.requests().is_empty(), "{:?}", w.double.requests());
}

/// A code sent with the request cannot be the SMS's (none was sent yet): refused before the
/// provider runs, so no SMS goes out and no request is stored.
#[tokio::test]
async fn a_code_sent_with_the_request_is_refused_and_nothing_is_sent() {
    let w = world().await;
    let e = w
        .service
        .request_as(
            Requester::Account(JDOE.into()),
            NewRequest {
                role: "sms-admins",
                answer: Some(code("123456")),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("provider `sms` sends or shows what its prompt's answer depends on"),
        "{e}"
    );
    assert!(w.double.requests().is_empty(), "{:?}", w.double.requests());
    assert!(w.service.requests_of(JDOE, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_429_is_retried_after_the_retry_after() {
    let w = world().await;
    w.double.fail_next(
        1,
        Failure::TooManyRequests {
            retry_after: Some(1),
        },
    );
    let v = request(&w).await;
    assert_eq!(v.state, "pending_mfa", "{v:?}");
    let hits = w.double.requests();
    assert_eq!(
        hits.iter().map(|h| h.status).collect::<Vec<_>>(),
        [429, 201]
    );
    let gap = hits[1].at - hits[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After: 1 not honoured: {gap:?}"
    );
    let c = w.double.messages()[0].code().unwrap();
    let done = w.service.answer(&v.id, JDOE, code(&c)).await.unwrap();
    assert_eq!(done.state, "active");
}

#[tokio::test]
async fn server_errors_are_retried_then_given_up_clearly() {
    let w = world().await;
    w.double.fail_next(3, Failure::ServerError(500));
    let started = Instant::now();
    let v = request(&w).await;
    let took = started.elapsed();
    let reason = failed_reason(&w, &v).await;
    assert!(reason.contains("unavailable"), "{reason}");
    assert!(reason.contains("3 attempt(s)"), "{reason}");
    assert!(
        reason.contains("HTTP 500") && reason.contains("20500"),
        "{reason}"
    );
    assert_eq!(w.double.requests().len(), 3);
    assert!(w.double.messages().is_empty());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // The next request goes through: the failure was Twilio's, not the provider's.
    let v = request(&w).await;
    assert_eq!(v.state, "pending_mfa", "{v:?}");
}

#[tokio::test]
async fn a_503_then_success_is_retried() {
    let w = world().await;
    w.double.fail_next(2, Failure::ServerError(503));
    let v = request(&w).await;
    assert_eq!(v.state, "pending_mfa", "{v:?}");
    let statuses: Vec<u16> = w.double.requests().iter().map(|h| h.status).collect();
    assert_eq!(statuses, [503, 503, 201]);
}

#[tokio::test]
async fn twilio_refusals_name_the_problem_without_the_token() {
    let w = world().await;
    for (code, needles) in [
        (21211, &["21211", "invalid", "…42"][..]),
        (21610, &["21610", "STOP", "START"][..]),
        (21408, &["21408", "region", "geographic permissions"][..]),
        (20003, &["20003", "credentials", "twilio.token"][..]),
    ] {
        w.double.fail_next(1, Failure::Twilio(code));
        let before = w.double.requests().len();
        let v = request(&w).await;
        let reason = failed_reason(&w, &v).await;
        for n in needles {
            assert!(reason.contains(n), "{code}: `{n}` missing from: {reason}");
        }
        assert_eq!(
            w.double.requests().len(),
            before + 1,
            "{code} must not be retried"
        );
    }
    assert!(w.double.messages().is_empty());
}

#[tokio::test]
async fn a_wrong_auth_token_is_a_clear_error() {
    let w = world_with(&[], Some("0123456789abcdef0123456789abcdef\n")).await;
    let v = request(&w).await;
    let reason = failed_reason(&w, &v).await;
    assert!(reason.contains("20003"), "{reason}");
    assert!(reason.contains("credentials"), "{reason}");
    assert!(
        !reason.contains("0123456789abcdef0123456789abcdef"),
        "{reason}"
    );
    assert_eq!(w.double.requests()[0].status, 401);
}

#[tokio::test]
async fn a_messaging_service_is_sent_instead_of_from() {
    let at = tempfile::tempdir().unwrap();
    let double = TwilioDouble::start();
    let token_file = double.write_token(at.path());
    let mut settings = double.settings(&token_file);
    settings.remove("from");
    settings.insert(
        "messaging_service_sid".into(),
        "MG0123456789abcdef0123456789abcdef".into(),
    );
    settings.insert("code_length".into(), 8.into());
    let providers = load(settings).await.unwrap();
    let p = providers.get("sms").unwrap();
    let ctx = rolegate_sdk::ChallengeContext {
        user: rolegate_sdk::UserContext {
            account: "jdoe".into(),
            phone: Some("+442071838750x12".into()),
            ..Default::default()
        },
        role: "r".into(),
        request_id: "req-1".into(),
        now: 1_000,
        ..Default::default()
    };
    let step = p.challenge_start(ctx).await.unwrap();
    assert!(matches!(step, rolegate_sdk::Step::Ask { .. }), "{step:?}");
    let sent = double.messages();
    assert_eq!(sent[0].to, "+442071838750", "the extension is not sent");
    assert_eq!(sent[0].from, None);
    assert_eq!(
        sent[0].messaging_service_sid.as_deref(),
        Some("MG0123456789abcdef0123456789abcdef")
    );
    assert_eq!(sent[0].code().unwrap().len(), 8);
}

#[tokio::test]
async fn a_token_file_readable_by_others_is_refused_at_load() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let double = TwilioDouble::start();
    let token_file = double.write_token(dir.path());
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = load(double.settings(&token_file)).await.unwrap_err();
    let text = e.to_string();
    assert!(text.contains(&token_file.display().to_string()), "{text}");
    assert!(text.contains("readable by group or others"), "{text}");
    assert!(text.contains("`auth_token_file`"), "{text}");
    assert!(!text.contains(double.auth_token()), "{text}");
    assert!(double.requests().is_empty());
}

fn check(lib: &Path, config: &Path, isolation: &str) -> (bool, String) {
    let out = Command::new(rolegate_bin())
        .args(["provider", "check"])
        .arg(lib)
        .arg("--config")
        .arg(config)
        .args(["--isolation", isolation])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn provider_check_passes_against_the_double() {
    let dir = tempfile::tempdir().unwrap();
    let double = TwilioDouble::start();
    let token_file = double.write_token(dir.path());
    let cfg = dir.path().join("sms.toml");
    write_private(
        &cfg,
        &toml::to_string(&double.settings(&token_file)).unwrap(),
    );
    for iso in ["in-process", "process"] {
        let (ok, out) = check(&sms_twilio_lib(), &cfg, iso);
        assert!(ok, "{out}");
        assert!(out.contains(" 0 failed"), "{out}");
        assert!(!out.contains("FAIL"), "{out}");
        assert!(!out.contains(double.auth_token()), "{out}");
    }
    assert!(!double.messages().is_empty(), "the check sent no SMS");
    // Settings the provider refuses fail the check, naming the key.
    write_private(
        &cfg,
        &format!(
            "{}code_length = 4\n",
            toml::to_string(&double.settings(&token_file)).unwrap()
        ),
    );
    let (ok, out) = check(&sms_twilio_lib(), &cfg, "in-process");
    assert!(!ok, "{out}");
    assert!(out.contains("`code_length`"), "{out}");
}

// --- over HTTP, with the daemon ------------------------------------------------------------

/// Starts `rolegate serve` with `provider` as the config's provider table, in `dir`.
fn serve(dir: tempfile::TempDir, provider: &str) -> Daemon {
    let cfg = dir.path().join("rolegate.toml");
    write_private(
        &cfg,
        &format!("[server]\nlisten = \"127.0.0.1:0\"\n\n{provider}"),
    );
    serve_config(dir, &cfg)
}

/// A POST with a bearer token.
async fn call(
    d: &Daemon,
    token: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    rolegate_e2e::daemon::call(d, Some(token), "POST", path, Some(body)).await
}

fn toml_provider(double: &TwilioDouble, token_file: &Path) -> String {
    let mut provider = toml::Table::new();
    provider.insert("id".into(), "sms".into());
    provider.insert(
        "library".into(),
        sms_twilio_lib().display().to_string().into(),
    );
    provider.insert("unpinned".into(), true.into());
    provider.insert("isolation".into(), "process".into());
    provider.insert("settings".into(), double.settings(token_file).into());
    let mut doc = toml::Table::new();
    doc.insert("provider".into(), vec![toml::Value::from(provider)].into());
    toml::to_string(&doc).unwrap()
}

#[tokio::test]
async fn the_daemon_activates_a_role_with_an_sms_code() {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let double = TwilioDouble::start();
    let token_file = double.write_token(dir.path());
    let provider = toml_provider(&double, &token_file);
    let d = serve(dir, &provider);
    let admin = d.admin.clone();
    assert!(!admin.is_empty(), "no admin token printed");
    let (s, r) = call(
        &d,
        &admin,
        "/v1/users",
        json!({"account": JDOE, "phone": "+1 425 555 0142"}),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    let role = json!({"name": "sms-admins", "candidates": [JDOE], "approvers": [], "ttl_s": 3600,
                      "max_ttl_s": 7200, "mfa_enabled": true, "approval_enabled": false, "providers": ["sms"]});
    let (s, r) = call(&d, &admin, "/v1/roles", role).await;
    assert_eq!(s, 201, "{r}");
    let (s, t) = call(&d, &admin, "/v1/tokens", json!({"account": JDOE})).await;
    assert_eq!(s, 201, "{t}");
    let user = t["token"].as_str().unwrap().to_string();
    let (s, r) = call(
        &d,
        &user,
        "/v1/requests",
        json!({"role": "sms-admins", "justification": "patch night"}),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["state"], "pending_mfa", "{r}");
    assert_eq!(r["prompt"]["message"], "Type the code sent by SMS to …42");
    let id = r["id"].as_str().unwrap().to_string();
    let c = double.messages()[0].code().unwrap();
    let (s, r) = call(
        &d,
        &user,
        &format!("/v1/requests/{id}/answer"),
        json!({"code": c}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["state"], "active", "{r}");
}

// --- issue 28: what Twilio really answers ---------------------------------------------------

/// The event of one id for one request, by its message.
async fn event_of(w: &World, id: i64, request: &str) -> String {
    let request = request.to_string();
    let list = w
        .service
        .store()
        .read(move |tx| {
            events::list(
                tx,
                &events::Filter {
                    id: Some(id),
                    ..Default::default()
                },
            )
        })
        .await
        .unwrap();
    list.into_iter()
        .find(|e| e.request.as_deref() == Some(request.as_str()))
        .unwrap_or_else(|| panic!("no event {id} for request {request}"))
        .message
}

#[tokio::test]
async fn a_201_for_a_failed_or_undelivered_sms_is_a_provider_failure_not_a_prompt() {
    let w = world().await;
    for (status, code, words) in [
        ("failed", Some(30003), "Unreachable destination handset"),
        ("undelivered", Some(30005), "Unknown destination handset"),
        ("queued", Some(30007), "Message filtered"),
        ("failed", None, "`failed`"),
    ] {
        w.double.fail_next(
            1,
            Failure::Created {
                status,
                error_code: code,
            },
        );
        let before = w.double.requests().len();
        let v = request(&w).await;
        assert!(
            v.prompt.is_none(),
            "{status}: a prompt for a failed SMS: {v:?}"
        );
        let detail = failed_reason(&w, &v).await;
        let sid = w.double.messages().last().unwrap().sid.clone();
        assert_eq!(w.double.messages().last().unwrap().status, status);
        for n in [
            "unavailable",
            "will not arrive",
            &format!("`{status}`"),
            sid.as_str(),
            words,
            "…42",
        ] {
            assert!(detail.contains(n), "{status}: `{n}` missing from: {detail}");
        }
        if let Some(code) = code {
            assert!(detail.contains(&format!("Twilio error {code}")), "{detail}");
        }
        assert!(!detail.contains("+14255550142"), "{detail}");
        let hits = w.double.requests();
        assert_eq!(hits.len(), before + 1, "{status}: sent again");
        assert_eq!(hits.last().unwrap().status, 201);
    }
    // Twilio taking the next one as usual: a prompt again.
    let v = request(&w).await;
    assert_eq!(v.state, "pending_mfa", "{v:?}");
}

#[tokio::test]
async fn the_sms_message_sid_is_in_the_request_event_and_not_in_the_prompt() {
    let w = world().await;
    let v = request(&w).await;
    assert_eq!(v.state, "pending_mfa", "{v:?}");
    let sid = w.double.messages()[0].sid.clone();
    assert!(sid.starts_with("SM") && sid.len() == 34, "{sid}");
    let created = event_of(&w, events::REQUEST_CREATED, &v.id).await;
    assert_eq!(
        created,
        format!("requested for 3600 s, provider reference `{sid}`: patch night")
    );
    assert!(!v.prompt.unwrap().to_string().contains(&sid));
    assert!(!v.reason.unwrap_or_default().contains(&sid));
}

#[tokio::test]
async fn alphanumeric_and_short_code_sms_senders_are_taken_and_bad_ones_refused_at_load() {
    let at = tempfile::tempdir().unwrap();
    let double = TwilioDouble::start();
    let token_file = double.write_token(at.path());
    for from in ["Contoso IT", "R&D_2FA", "54321", "123456", "+14155552345"] {
        let mut settings = double.settings(&token_file);
        settings.insert("from".into(), from.into());
        let providers = load(settings).await.unwrap();
        let ctx = rolegate_sdk::ChallengeContext {
            user: rolegate_sdk::UserContext {
                account: "jdoe".into(),
                phone: Some("+14255550142".into()),
                ..Default::default()
            },
            role: "r".into(),
            request_id: "req-1".into(),
            now: 1_000,
            ..Default::default()
        };
        let step = providers
            .get("sms")
            .unwrap()
            .challenge_start(ctx)
            .await
            .unwrap();
        assert!(
            matches!(step, rolegate_sdk::Step::Ask { .. }),
            "{from}: {step:?}"
        );
        let sent = double.messages().pop().unwrap();
        assert_eq!(sent.from.as_deref(), Some(from));
        assert_eq!(step.reference(), Some(sent.sid.as_str()));
    }
    for (from, why) in [
        ("Contoso.IT", "`.` is not allowed"),
        ("ContosoITDept", "at most 11 characters"),
        ("1234", "at least one letter"),
        ("1234567", "at least one letter"),
        ("", "it is empty"),
    ] {
        let before = double.requests().len();
        let mut settings = double.settings(&token_file);
        settings.insert("from".into(), from.into());
        let text = load(settings).await.unwrap_err().to_string();
        assert!(
            text.contains("refused its settings")
                && text.contains("setting `from`")
                && text.contains(why),
            "{from}: {text}"
        );
        assert_eq!(double.requests().len(), before, "sent at load");
    }
}

fn sms_config(double: &TwilioDouble, token_file: &Path, extra: &str, settings: &str) -> String {
    let provider = toml_provider(double, token_file);
    // The provider's own keys go first in its table, the extra settings after its others.
    let provider = provider.replacen("[[provider]]\n", &format!("[[provider]]\n{extra}"), 1);
    format!("[server]\nlisten = \"127.0.0.1:0\"\n\n{provider}{settings}")
}

#[test]
fn an_sms_timeout_longer_than_the_call_deadline_is_refused_at_start_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let double = TwilioDouble::start();
    let token_file = double.write_token(dir.path());
    let cfg = dir.path().join("rolegate.toml");
    for (extra, timeout, numbers) in [
        ("", 6000, ["6000", "5000 ms"]),
        ("deadline_ms = 2000\n", 2500, ["2500", "2000 ms"]),
    ] {
        write_private(
            &cfg,
            &sms_config(
                &double,
                &token_file,
                extra,
                &format!("timeout_ms = {timeout}\n"),
            ),
        );
        let said = rolegate_e2e::daemon::refused_to_serve(&cfg);
        for n in numbers {
            assert!(said.contains(n), "`{n}` missing: {said}");
        }
        assert!(
            said.contains("provider `sms`") && said.contains("`timeout_ms`"),
            "{said}"
        );
    }
    assert!(double.requests().is_empty());
    // At the deadline, it starts.
    write_private(
        &cfg,
        &sms_config(&double, &token_file, "", "timeout_ms = 5000\n"),
    );
    let d = serve_config(dir, &cfg);
    assert!(!d.url.is_empty());
}

#[tokio::test]
async fn provider_test_sms_sends_exactly_one_message_and_needs_an_admin() {
    use rolegate_e2e::daemon::cli;
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let double = TwilioDouble::start();
    let token_file = double.write_token(dir.path());
    let d = serve(dir, &toml_provider(&double, &token_file));
    let admin = d.admin.clone();
    let (s, _) = call(&d, &admin, "/v1/users", json!({"account": JDOE})).await;
    assert_eq!(s, 201);
    let (_, t) = call(&d, &admin, "/v1/tokens", json!({"account": JDOE})).await;
    let user = t["token"].as_str().unwrap().to_string();

    // A user's token is refused, and nothing is sent.
    let (s, r) = call(
        &d,
        &user,
        "/v1/providers/sms/test",
        json!({"to": "+14255550142"}),
    )
    .await;
    assert_eq!(s, 403, "{r}");
    let (ok, out) = cli(
        &d,
        &user,
        &["provider", "test", "sms", "--to", "+14255550142"],
        "",
    );
    assert!(!ok, "{out}");
    assert!(out.contains("admin"), "{out}");
    let (s, _) = rolegate_e2e::daemon::call(
        &d,
        None,
        "POST",
        "/v1/providers/sms/test",
        Some(json!({"to": "+14255550142"})),
    )
    .await;
    assert_eq!(s, 401);
    assert!(double.requests().is_empty(), "{:?}", double.requests());

    // An admin's: one message, its SID printed and in event 410.
    let (ok, out) = cli(
        &d,
        &admin,
        &["provider", "test", "sms", "--to", "+1 425 555 0142"],
        "",
    );
    assert!(ok, "{out}");
    let sent = double.messages();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(double.requests().len(), 1);
    assert_eq!(sent[0].to, "+14255550142");
    assert!(
        out.contains(&format!(
            "provider `sms` sent a test message to +14255550142: reference {}",
            sent[0].sid
        )),
        "{out}"
    );
    let (s, list) =
        rolegate_e2e::daemon::call(&d, Some(&admin), "GET", "/v1/events?id=410", None).await;
    assert_eq!(s, 200, "{list}");
    let e = &list[0];
    assert_eq!(e["provider"], "sms", "{e}");
    assert_eq!(e["severity"], "information", "{e}");
    let (_, me) = rolegate_e2e::daemon::call(&d, Some(&admin), "GET", "/v1/me", None).await;
    let m = e["message"].as_str().unwrap();
    assert_eq!(
        m,
        format!(
            "test message sent to …0142, provider reference `{}`, by `{}`",
            sent[0].sid,
            me["account"].as_str().unwrap()
        )
    );

    // Twilio making the message failed: the command fails with Twilio's code, and says so in
    // event 410; still one request to Twilio.
    double.fail_next(
        1,
        Failure::Created {
            status: "failed",
            error_code: Some(30003),
        },
    );
    let (ok, out) = cli(
        &d,
        &admin,
        &["provider", "test", "sms", "--to", "+14255550142"],
        "",
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("Twilio error 30003") && out.contains("`failed`"),
        "{out}"
    );
    assert!(!out.contains(double.auth_token()), "{out}");
    assert_eq!(double.requests().len(), 2);
    let (_, list) =
        rolegate_e2e::daemon::call(&d, Some(&admin), "GET", "/v1/events?id=410", None).await;
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert_eq!(list[0]["severity"], "warning", "{list}");
    assert!(
        list[0]["message"].as_str().unwrap().contains("30003"),
        "{list}"
    );

    // A provider that texts nothing, an unknown one, a number that is none: refused, unsent.
    for (path, body, status) in [
        (
            "/v1/providers/nope/test",
            json!({"to": "+14255550142"}),
            404,
        ),
        ("/v1/providers/sms/test", json!({"to": "not a number"}), 422),
    ] {
        let (s, r) = call(&d, &admin, path, body).await;
        assert_eq!(s, status, "{path}: {r}");
    }
    assert_eq!(double.requests().len(), 2);
}

// --- issue 28: the rotated token, as a new user met it --------------------------------------

#[tokio::test]
async fn a_rotated_twilio_token_turns_the_provider_down_for_the_admin_and_it_recovers_when_fixed() {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let double = TwilioDouble::start();
    // The token in the file is an old one: Twilio answers 401 (20003) to every send.
    let token_file = dir.path().join("twilio.token");
    write_private(&token_file, "0123456789abcdef0123456789abcdef\n");
    let provider = toml_provider(&double, &token_file);
    let cfg = dir.path().join("rolegate.toml");
    write_private(
        &cfg,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[plugins]\ndegraded_after = 2\ndown_after = 3\nrecover_after = 2\ndown_retry_s = 1\n\n{provider}"
        ),
    );
    let d = serve_config(dir, &cfg);
    let admin = d.admin.clone();
    call(
        &d,
        &admin,
        "/v1/users",
        json!({"account": JDOE, "phone": "+1 425 555 0142"}),
    )
    .await;
    let role = json!({"name": "sms-admins", "candidates": [JDOE], "ttl_s": 3600, "max_ttl_s": 3600,
                      "mfa_enabled": true, "providers": ["sms"]});
    let (s, r) = call(&d, &admin, "/v1/roles", role).await;
    assert_eq!(s, 201, "{r}");
    let (_, t) = call(&d, &admin, "/v1/tokens", json!({"account": JDOE})).await;
    let user = t["token"].as_str().unwrap().to_string();
    let ask = || call(&d, &user, "/v1/requests", json!({"role": "sms-admins"}));
    for _ in 0..3 {
        let (s, r) = ask().await;
        assert_eq!(s, 201, "{r}");
        assert_eq!(r["state"], "failed", "{r}");
        // The user reads what to do, not Twilio's account or code.
        let reason = r["reason"].as_str().unwrap();
        assert!(
            reason.contains("unavailable") && reason.contains("try again later"),
            "{reason}"
        );
        assert!(
            !reason.contains("20003") && !reason.contains(double.account_sid()),
            "{reason}"
        );
    }
    let line = d.said("provider down");
    assert!(line.contains("sms") && line.contains("20003"), "{line}");
    assert!(!line.contains(double.auth_token()), "{line}");
    // The admin sees it in the provider list and the metrics.
    let (_, list) =
        rolegate_e2e::daemon::call(&d, Some(&admin), "GET", "/v1/providers", None).await;
    let sms = &list[0];
    assert_eq!(sms["health"]["status"], "down", "{list}");
    assert!(
        sms["health"]["seen"]["reason"]
            .as_str()
            .unwrap()
            .contains("20003"),
        "{list}"
    );
    let (_, m) = rolegate_e2e::daemon::call(&d, Some(&admin), "GET", "/metrics", None).await;
    let text = m.as_str().unwrap();
    assert_eq!(
        sample(
            text,
            "rolegate_provider_call_failures_total{provider=\"sms\",op=\"challenge_start\",kind=\"config\"}"
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        sample(text, "rolegate_provider_health{provider=\"sms\"}"),
        2.0,
        "{text}"
    );
    let sent_while_down = double.requests().len();

    // The admin puts the new token in place; after the retry interval a trial call goes
    // through, succeeds, and the provider comes back by itself.
    write_private(&token_file, &format!("{}\n", double.auth_token()));
    let (_, r) = ask().await;
    assert_eq!(r["state"], "failed", "refused at once while down: {r}");
    assert_eq!(
        double.requests().len(),
        sent_while_down,
        "no call while down"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    for _ in 0..2 {
        let (_, r) = ask().await;
        assert_eq!(r["state"], "pending_mfa", "{r}");
    }
    let line = d.said("provider ok again");
    assert!(line.contains("sms"), "{line}");
    let (_, list) =
        rolegate_e2e::daemon::call(&d, Some(&admin), "GET", "/v1/providers", None).await;
    assert_eq!(list[0]["health"]["seen"]["status"], "ok", "{list}");
}
