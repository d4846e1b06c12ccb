//! The activation service end to end: real stores (SQLite and PostgreSQL, every test on
//! both), real hello plugin, injected clock.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use rolegate::Error;
use rolegate::model::clock::{Clock as _, ManualClock};
use rolegate::plugins::Providers;
use rolegate::records::events::{self, Filter};
use rolegate::records::roles::{self, RoleSpec};
use rolegate::records::users::{self, NewUser};
use rolegate::service::{RequestView, Service, Settings};
use rolegate::store::changes::Kind;
use rolegate::store::secrets::SealingKey;
use rolegate_e2e::both;
use rolegate_e2e::hello_lib;
use rolegate_e2e::stores::{Backend, Location};
use rolegate_sdk::Input;

const T0: &str = "2026-11-26T10:00:00Z"; // a Thursday

struct World {
    _at: Location,
    service: Arc<Service>,
    clock: Arc<ManualClock>,
}

async fn providers() -> Providers {
    let hello = rolegate_e2e::provider_config("hello", hello_lib(), "in-process");
    rolegate_e2e::load_providers(vec![hello]).await.unwrap()
}

async fn open_service(
    at: &Location,
    providers: Arc<Providers>,
    clock: Arc<ManualClock>,
    settings: Settings,
) -> Service {
    let store = Arc::new(at.open().await);
    let key = Arc::new(SealingKey::load_or_create(&at.path().join("rolegate.key")).unwrap());
    Service::new(store, providers, clock, key, settings)
}

async fn world_with(backend: Backend, settings: Settings) -> World {
    let at = Location::new(backend);
    let clock = Arc::new(ManualClock::new(T0.parse().unwrap()));
    let service = open_service(
        &at,
        Arc::new(providers().await),
        Arc::clone(&clock),
        settings,
    )
    .await;
    let store = service.store().clone();
    store
        .write(|tx| {
            for (a, n) in [
                ("CONTOSO\\jdoe", "Jane"),
                ("CONTOSO\\boss", "Bo"),
                ("CONTOSO\\eve", "Eve"),
            ] {
                users::create(
                    tx,
                    NewUser {
                        account: a.into(),
                        display_name: n.into(),
                        ..Default::default()
                    },
                    1,
                    0,
                )?;
            }
            for (name, mfa, approval) in [
                ("auto", false, false),
                ("mfa", true, false),
                ("approval", false, true),
                ("both", true, true),
            ] {
                roles::create(tx, &spec(name, mfa, approval), 0)?;
            }
            let mut windowed = spec("office-hours", false, false);
            windowed.availability = Some(roles::WindowSpec {
                days: vec!["mon-fri".into()],
                from: "09:00".into(),
                to: "17:00".into(),
                time_zone: "Europe/Paris".into(),
            });
            roles::create(tx, &windowed, 0)
        })
        .await
        .unwrap();
    World {
        _at: at,
        service: Arc::new(service),
        clock,
    }
}

async fn world(backend: Backend) -> World {
    world_with(backend, Settings::default()).await
}

fn spec(name: &str, mfa: bool, approval: bool) -> RoleSpec {
    RoleSpec {
        name: name.into(),
        candidates: ["CONTOSO\\jdoe".to_string(), "CONTOSO\\boss".to_string()].into(),
        approvers: ["CONTOSO\\boss".to_string()].into(),
        ttl_s: 3600,
        max_ttl_s: 7200,
        availability: None,
        justification_required: false,
        approval_enabled: approval,
        mfa_enabled: mfa,
        providers: if mfa { vec!["hello".into()] } else { vec![] },
        when_factor_down: Default::default(),
        shadow: Vec::new(),
    }
}

/// The right answer to hello's prompt: the digits it shows, reversed.
fn right_code(view: &RequestView) -> String {
    let message = view.prompt.as_ref().unwrap()["message"].as_str().unwrap();
    let digits = message.split(' ').nth(1).unwrap();
    digits.chars().rev().collect()
}

fn wrong_code(view: &RequestView) -> String {
    right_code(view)
        .chars()
        .map(|c| if c == '1' { '2' } else { '1' })
        .collect()
}

fn code(c: String) -> Input {
    Input::Code { code: c }
}

async fn event_ids(w: &World, request: &str) -> Vec<i64> {
    rolegate_e2e::request_event_ids(&w.service, request).await
}

both! {
#[tokio::test]
async fn a_role_without_mfa_or_approval_activates_at_once(backend) {
    let w = world(backend).await;
    let v = w
        .service
        .request(
            "CONTOSO\\jdoe",
            "auto",
            "patching",
            Some(SignedDuration::from_hours(9)),
            None,
        )
        .await
        .unwrap();
    assert_eq!(v.state, "active");
    assert_eq!(v.ttl_s, 7200, "capped at the role's maximum");
    let t0: Timestamp = T0.parse().unwrap();
    assert_eq!(v.expires_at, Some(t0.as_millisecond() + 7_200_000));
    assert_eq!(event_ids(&w, &v.id).await, [200, 203]);
}
}

both! {
#[tokio::test]
async fn mfa_only_activates_after_the_right_code(backend) {
    let w = world(backend).await;
    let v = w
        .service
        .request("CONTOSO\\jdoe", "mfa", "x", None, None)
        .await
        .unwrap();
    assert_eq!(v.state, "pending_mfa");
    assert_eq!(v.provider.as_deref(), Some("hello"));
    assert_eq!(v.prompt.as_ref().unwrap()["kind"], "code");
    let done = w
        .service
        .answer(&v.id, "CONTOSO\\jdoe", code(right_code(&v)))
        .await
        .unwrap();
    assert_eq!(done.state, "active");
    assert_eq!(event_ids(&w, &v.id).await, [200, 103, 203]);
}
}

both! {
#[tokio::test]
async fn approval_only_and_self_approval_is_refused(backend) {
    let w = world(backend).await;
    let v = w
        .service
        .request("CONTOSO\\boss", "approval", "x", None, None)
        .await
        .unwrap();
    assert_eq!(v.state, "pending_approval");
    let e = w.service.approve(&v.id, "CONTOSO\\boss").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "`CONTOSO\\boss` cannot approve their own request"
    );
    let e = w.service.approve(&v.id, "CONTOSO\\eve").await.unwrap_err();
    assert!(e.to_string().contains("not an approver"), "{e}");

    let v = w
        .service
        .request("CONTOSO\\jdoe", "approval", "x", None, None)
        .await
        .unwrap();
    let r = w
        .service
        .reject(&v.id, "contoso\\BOSS", Some("not today"))
        .await
        .unwrap();
    assert_eq!(r.state, "rejected");
    assert_eq!(
        r.reason.as_deref(),
        Some("rejected by `contoso\\BOSS`: not today")
    );
    let v = w
        .service
        .request("CONTOSO\\jdoe", "approval", "x", None, None)
        .await
        .unwrap();
    let a = w.service.approve(&v.id, "CONTOSO\\boss").await.unwrap();
    assert_eq!(a.state, "active");
    assert_eq!(event_ids(&w, &v.id).await, [200, 201, 203]);
}
}

both! {
#[tokio::test]
async fn mfa_then_approval(backend) {
    let w = world(backend).await;
    let v = w
        .service
        .request("CONTOSO\\jdoe", "both", "x", None, None)
        .await
        .unwrap();
    let after = w
        .service
        .answer(&v.id, "CONTOSO\\jdoe", code(right_code(&v)))
        .await
        .unwrap();
    assert_eq!(after.state, "pending_approval");
    let a = w.service.approve(&v.id, "CONTOSO\\boss").await.unwrap();
    assert_eq!(a.state, "active");
    assert_eq!(event_ids(&w, &v.id).await, [200, 103, 201, 203]);
}
}

both! {
#[tokio::test]
async fn wrong_answers_fail_the_challenge_then_lock_the_user_out(backend) {
    let w = world_with(backend, Settings {
        lockout_threshold: 4,
        ..Default::default()
    })
    .await;
    let v = w
        .service
        .request("CONTOSO\\jdoe", "mfa", "x", None, None)
        .await
        .unwrap();
    let r = w
        .service
        .answer(&v.id, "CONTOSO\\jdoe", code(wrong_code(&v)))
        .await
        .unwrap();
    assert_eq!(r.state, "pending_mfa");
    assert_eq!(r.reason.as_deref(), Some("wrong code; 2 attempt(s) left"));
    w.service
        .answer(&v.id, "CONTOSO\\jdoe", code(wrong_code(&v)))
        .await
        .unwrap();
    let r = w
        .service
        .answer(&v.id, "CONTOSO\\jdoe", code(wrong_code(&v)))
        .await
        .unwrap();
    assert_eq!(r.state, "failed");
    assert_eq!(r.reason.as_deref(), Some("wrong code; no attempts left"));
    assert_eq!(*event_ids(&w, &v.id).await.last().unwrap(), 101);
    // Even the right code no longer counts.
    let e = w
        .service
        .answer(&v.id, "CONTOSO\\jdoe", code(right_code(&v)))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("is failed, not waiting for MFA"),
        "{e}"
    );
    // The fourth failure locks the user out of hello.
    let v = w
        .service
        .request("CONTOSO\\jdoe", "mfa", "x", None, None)
        .await
        .unwrap();
    w.service
        .answer(&v.id, "CONTOSO\\jdoe", code(wrong_code(&v)))
        .await
        .unwrap();
    let e = w
        .service
        .request("CONTOSO\\jdoe", "mfa", "x", None, None)
        .await
        .unwrap_err();
    assert!(
        e.to_string().starts_with(
            "too many failed attempts with `hello`: locked out until 2026-11-26T10:15:00Z"
        ),
        "{e}"
    );
    // An admin lifts the lockout (event 301); a second unlock finds nothing to lift.
    assert!(
        w.service
            .unlock("contoso\\jdoe", "hello", "admin")
            .await
            .unwrap()
    );
    assert!(
        !w.service
            .unlock("contoso\\jdoe", "hello", "admin")
            .await
            .unwrap()
    );
    let unlocked = w
        .service
        .store()
        .read(|tx| {
            events::list(
                tx,
                &Filter {
                    id: Some(events::UNLOCKED),
                    ..Default::default()
                },
            )
        })
        .await
        .unwrap();
    assert_eq!(unlocked.len(), 1);
    assert_eq!(
        unlocked[0].message,
        "lockout from `hello` lifted by `admin`"
    );
    // Malformed input is refused without counting.
    let v = w
        .service
        .request("CONTOSO\\jdoe", "mfa", "x", None, None)
        .await
        .unwrap();
    let e = w
        .service
        .answer(&v.id, "CONTOSO\\jdoe", code("12".into()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("the code must be 6 digits"), "{e}");
    let ok = w
        .service
        .answer(&v.id, "CONTOSO\\jdoe", code(right_code(&v)))
        .await
        .unwrap();
    assert_eq!(ok.state, "active");
}
}

both! {
#[tokio::test]
async fn a_right_answer_clears_the_failures_counted_before_it(backend) {
    let w = world_with(backend, Settings {
        lockout_threshold: 4,
        ..Default::default()
    })
    .await;
    let u = "CONTOSO\\jdoe";
    // A new request answered wrong `wrong` times, then right when `right`.
    let attempt = |wrong: usize, right: bool| {
        let s = Arc::clone(&w.service);
        async move {
            let v = s.request(u, "mfa", "x", None, None).await.unwrap();
            for _ in 0..wrong {
                s.answer(&v.id, u, code(wrong_code(&v))).await.unwrap();
            }
            if right {
                let r = s.answer(&v.id, u, code(right_code(&v))).await.unwrap();
                assert_eq!(r.state, "active");
                // One live activation per user and role: done with it.
                s.close(&v.id, u, false).await.unwrap();
            }
        }
    };
    // Two wrong answers before each right one: never four failures in a row, though ten in all.
    for _ in 0..5 {
        attempt(2, true).await;
    }
    // Three failures, then a request answered right at once: its create saw them, its answer
    // clears them.
    attempt(3, false).await;
    attempt(0, true).await;
    // Three failures since the last success: one short of the lockout; the fourth locks.
    attempt(3, false).await;
    attempt(1, false).await;
    let e = w
        .service
        .request(u, "mfa", "x", None, None)
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("too many failed attempts with `hello`"), "{e}");
}
}

both! {
/// One sweep ends what is due for every account (the accounts it reads first are the ones its
/// write locks), and leaves what is not due.
#[tokio::test]
async fn one_sweep_ends_what_is_due_for_every_account(backend) {
    let w = world(backend).await;
    let mut due = Vec::new();
    for u in ["CONTOSO\\jdoe", "CONTOSO\\boss"] {
        due.push(w.service.request(u, "auto", "x", None, None).await.unwrap().id);
    }
    w.clock.advance(SignedDuration::from_mins(61));
    let later = w
        .service
        .request("CONTOSO\\jdoe", "mfa", "x", None, None)
        .await
        .unwrap()
        .id;
    assert_eq!(w.service.expire_due().await.unwrap(), 2);
    for id in &due {
        assert_eq!(w.service.get(id, None).await.unwrap().state, "expired");
    }
    assert_eq!(w.service.get(&later, None).await.unwrap().state, "pending_mfa");
    assert_eq!(w.service.expire_due().await.unwrap(), 0, "each ended once");
}
}

both! {
#[tokio::test]
async fn activations_expire_with_the_clock_and_prompts_time_out(backend) {
    let w = world(backend).await;
    // Nothing due yet: the sweep writes nothing (no batch holding every instance's writes).
    let writes = || rolegate::model::metrics::METRICS.store_write_seconds.count();
    let before = writes();
    assert_eq!(w.service.expire_due().await.unwrap(), 0);
    assert_eq!(writes(), before, "a sweep with nothing due wrote");
    let active = w
        .service
        .request("CONTOSO\\jdoe", "auto", "x", None, None)
        .await
        .unwrap();
    let pending = w
        .service
        .request("CONTOSO\\jdoe", "mfa", "x", None, None)
        .await
        .unwrap();
    let before = writes();
    assert_eq!(w.service.expire_due().await.unwrap(), 0, "nothing due before its time");
    assert_eq!(writes(), before, "a sweep with nothing due wrote");
    w.clock.advance(SignedDuration::from_mins(30));
    assert_eq!(
        w.service.expire_due().await.unwrap(),
        1,
        "the prompt (2 min) expired"
    );
    let p = w.service.get(&pending.id, None).await.unwrap();
    assert_eq!(p.state, "failed");
    assert_eq!(*event_ids(&w, &pending.id).await.last().unwrap(), 101);
    w.clock.advance(SignedDuration::from_mins(31));
    assert_eq!(w.service.expire_due().await.unwrap(), 1);
    let a = w
        .service
        .get(&active.id, Some("CONTOSO\\jdoe"))
        .await
        .unwrap();
    assert_eq!(a.state, "expired");
    assert_eq!(event_ids(&w, &active.id).await, [200, 203, 204]);
    assert_eq!(w.service.expire_due().await.unwrap(), 0);
}
}

both! {
#[tokio::test]
async fn policy_refusals(backend) {
    let w = world(backend).await;
    let e = w
        .service
        .request("CONTOSO\\eve", "auto", "x", None, None)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "`CONTOSO\\eve` is not a candidate for role `auto`"
    );
    let e = w
        .service
        .request("CONTOSO\\nobody", "auto", "x", None, None)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("not an enabled rolegate user"),
        "{e}"
    );
    let e = w
        .service
        .request("CONTOSO\\jdoe", "ghost", "x", None, None)
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "role `ghost` not found");
    // 10:00Z is 11:00 in Paris: open; Saturday is not.
    w.service
        .request("CONTOSO\\jdoe", "office-hours", "x", None, None)
        .await
        .unwrap();
    w.clock.set("2026-11-28T10:00:00Z".parse().unwrap());
    let e = w
        .service
        .request("CONTOSO\\jdoe", "office-hours", "x", None, None)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("can be activated only on mon, tue, wed, thu, fri"),
        "{e}"
    );
    // Another user's request is invisible.
    let v = w
        .service
        .request("CONTOSO\\jdoe", "mfa", "x", None, None)
        .await
        .unwrap();
    let e = w
        .service
        .answer(&v.id, "CONTOSO\\boss", code(right_code(&v)))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
}
}

both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_answers_and_approvals_take_effect_once(backend) {
    let w = world(backend).await;
    let v = w
        .service
        .request("CONTOSO\\jdoe", "mfa", "x", None, None)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = Arc::clone(&w.service);
        let (id, c) = (v.id.clone(), right_code(&v));
        tasks.push(tokio::spawn(async move {
            s.answer(&id, "CONTOSO\\jdoe", code(c)).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(v) => {
                assert_eq!(v.state, "active");
                ok += 1;
            }
            Err(e) => assert!(matches!(e, Error::Conflict(_)), "{e}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(
        event_ids(&w, &v.id).await,
        [200, 103, 203],
        "one activation"
    );

    let v = w
        .service
        .request("CONTOSO\\jdoe", "approval", "x", None, None)
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = Arc::clone(&w.service);
        let id = v.id.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                s.approve(&id, "CONTOSO\\boss").await
            } else {
                s.close(&id, "CONTOSO\\jdoe", false).await
            }
        }));
    }
    // Approvals race each other and a close: at most one approval wins, one activation at
    // most. A close may win too — before the approval (a cancellation, and then no approval
    // wins) or after it (ending the activation the approval started).
    let mut approvals = 0;
    let mut closes = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        if t.await.unwrap().is_ok() {
            if i % 2 == 0 {
                approvals += 1;
            } else {
                closes += 1;
            }
        }
    }
    assert!(approvals <= 1 && closes <= 1 && approvals + closes >= 1);
    let ids = event_ids(&w, &v.id).await;
    let activations = ids.iter().filter(|&&i| i == 203).count();
    assert_eq!(activations, approvals, "{ids:?}");
    let state = w.service.get(&v.id, None).await.unwrap().state;
    match (approvals, closes) {
        (1, 0) => assert_eq!(state, "active"),
        (1, 1) => assert_eq!(state, "closed"),
        _ => assert_eq!(state, "cancelled"),
    }
}
}

both! {
#[tokio::test]
async fn a_challenge_continues_after_a_restart(backend) {
    let at = Location::new(backend);
    let clock = Arc::new(ManualClock::new(T0.parse().unwrap()));
    let v = {
        let s = open_service(
            &at,
            Arc::new(providers().await),
            Arc::clone(&clock),
            Settings::default(),
        )
        .await;
        s.store()
            .write(|tx| {
                rolegate_e2e::create_users(tx, &["CONTOSO\\jdoe", "CONTOSO\\boss"])?;
                roles::create(tx, &spec("mfa", true, false), 0)
            })
            .await
            .unwrap();
        let v = s
            .request("CONTOSO\\jdoe", "mfa", "x", None, None)
            .await
            .unwrap();
        s.store().close();
        v
    };
    // A new store, a new plugin instance, the same files.
    let s = open_service(&at, Arc::new(providers().await), clock, Settings::default()).await;
    let done = s
        .answer(&v.id, "CONTOSO\\jdoe", code(right_code(&v)))
        .await
        .unwrap();
    assert_eq!(done.state, "active");
}
}

both! {
#[tokio::test]
async fn closing_ends_an_activation_once(backend) {
    let w = world(backend).await;
    let v = w
        .service
        .request("CONTOSO\\jdoe", "auto", "x", None, None)
        .await
        .unwrap();
    let e = w
        .service
        .close(&v.id, "CONTOSO\\eve", false)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    let c = w
        .service
        .close(&v.id, "CONTOSO\\jdoe", false)
        .await
        .unwrap();
    assert_eq!(c.state, "closed");
    let e = w.service.close(&v.id, "admin", true).await.unwrap_err();
    assert!(e.to_string().contains("is closed already"), "{e}");
    w.clock.advance(SignedDuration::from_hours(3));
    assert_eq!(
        w.service.expire_due().await.unwrap(),
        0,
        "a closed activation does not expire"
    );
    assert_eq!(event_ids(&w, &v.id).await, [200, 203, 205]);
    let verified = w.service.store().read(events::verify).await.unwrap();
    assert!(
        matches!(verified, events::Verification::Intact(_)),
        "{verified:?}"
    );
}
}

both! {
#[tokio::test]
async fn request_creation_is_rate_limited_per_account(backend) {
    let w = world_with(backend, Settings {
        requests_per_minute: 3,
        ..Default::default()
    })
    .await;
    for _ in 0..3 {
        let v = w
            .service
            .request("CONTOSO\\jdoe", "auto", "x", None, None)
            .await
            .unwrap();
        // One live activation per user and role: closed for the next.
        w.service.close(&v.id, "CONTOSO\\jdoe", false).await.unwrap();
    }
    let e = w
        .service
        .request("CONTOSO\\jdoe", "auto", "x", None, None)
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "too many requests; try again in 20 s");
    // Another account has its own bucket; time refills this one.
    w.service
        .request("CONTOSO\\boss", "auto", "x", None, None)
        .await
        .unwrap();
    w.clock.advance(SignedDuration::from_secs(20));
    w.service
        .request("CONTOSO\\jdoe", "auto", "x", None, None)
        .await
        .unwrap();
}
}

both! {
#[tokio::test]
async fn a_changed_role_policy_applies_to_the_next_request(backend) {
    let w = world(backend).await;
    w.service
        .request("CONTOSO\\jdoe", "auto", "x", None, None)
        .await
        .unwrap();
    let mut changed = spec("auto", false, false);
    changed.candidates = ["CONTOSO\\boss".to_string()].into();
    w.service
        .store()
        .write(move |tx| roles::replace(tx, &changed, "admin", 1))
        .await
        .unwrap();
    let e = w
        .service
        .request("CONTOSO\\jdoe", "auto", "x", None, None)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "`CONTOSO\\jdoe` is not a candidate for role `auto`"
    );
}
}

both! {
#[tokio::test]
async fn a_delayed_start_is_granted_now_and_active_later(backend) {
    let w = world(backend).await;
    let t0: Timestamp = T0.parse().unwrap();
    let start = t0 + SignedDuration::from_hours(2);
    let v = w
        .service
        .request_at("CONTOSO\\jdoe", "mfa", "x", None, None, Some(start))
        .await
        .unwrap();
    let done = w
        .service
        .answer(&v.id, "CONTOSO\\jdoe", code(right_code(&v)))
        .await
        .unwrap();
    assert_eq!(done.state, "scheduled");
    assert_eq!(done.expires_at, Some(start.as_millisecond() + 3_600_000));
    w.clock.advance(SignedDuration::from_hours(1));
    w.service.expire_due().await.unwrap();
    assert_eq!(w.service.get(&v.id, None).await.unwrap().state, "scheduled");
    w.clock.advance(SignedDuration::from_hours(1));
    w.service.expire_due().await.unwrap();
    assert_eq!(w.service.get(&v.id, None).await.unwrap().state, "active");
    w.clock.advance(SignedDuration::from_hours(1));
    w.service.expire_due().await.unwrap();
    assert_eq!(w.service.get(&v.id, None).await.unwrap().state, "expired");
    assert_eq!(event_ids(&w, &v.id).await, [200, 103, 203, 204]);
    // Too far ahead is refused; the window applies at the start time.
    let e = w
        .service
        .request_at(
            "CONTOSO\\jdoe",
            "auto",
            "x",
            None,
            None,
            Some(t0 + SignedDuration::from_hours(24 * 40)),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("days away"), "{e}");
    let saturday = "2026-11-28T10:00:00Z".parse::<Timestamp>().unwrap();
    let e = w
        .service
        .request_at(
            "CONTOSO\\jdoe",
            "office-hours",
            "x",
            None,
            None,
            Some(saturday),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("can be activated only"), "{e}");
}
}

/// A write that enables or disables `account`, as an admin's `user set` does.
fn set_enabled(
    account: &'static str,
    on: bool,
) -> impl FnOnce(&mut dyn rolegate::store::Tx) -> rolegate::Result<users::User> + Send + 'static {
    move |tx| {
        users::update(
            tx,
            account,
            users::UserChanges {
                enabled: Some(on),
                ..Default::default()
            },
            1,
            "admin",
            0,
        )
    }
}

both! {
#[tokio::test]
async fn a_change_reaches_the_next_request_though_the_last_one_read_it(backend) {
    // The role and the account's rows a create reads are kept for the next creates (SQLite,
    // while its writer reports them unchanged): each change below must still count at once.
    let w = world(backend).await;
    let jdoe = "CONTOSO\\jdoe";
    // Each activation is closed at once: one live per user and role.
    let request = |role: &'static str| {
        let s = Arc::clone(&w.service);
        async move {
            let v = s.request(jdoe, role, "x", None, None).await?;
            if v.state != "pending_mfa" {
                s.close(&v.id, jdoe, false).await?;
            }
            Ok::<_, Error>(v)
        }
    };
    for role in ["auto", "auto", "mfa", "mfa"] {
        request(role).await.unwrap();
    }
    let store = w.service.store().clone();
    let enable = |on: bool| {
        let store = store.clone();
        async move {
            store.write(set_enabled(jdoe, on)).await.unwrap();
        }
    };
    enable(false).await;
    let e = request("auto").await.unwrap_err();
    assert!(e.to_string().contains("not an enabled rolegate user"), "{e}");
    enable(true).await;
    request("auto").await.unwrap();
    // A lockout written by any code path (here a bare statement) refuses the next request.
    let until = w.clock.now().as_millisecond() + 3_600_000;
    store
        .write(move |tx| {
            tx.execute(
                "INSERT INTO lockouts (account_key, provider, failures, locked_until) VALUES ($1, 'hello', 0, $2)",
                &[users::account_key(jdoe).into(), until.into()],
            )
        })
        .await
        .unwrap();
    let e = request("mfa").await.unwrap_err();
    assert!(e.to_string().starts_with("too many failed attempts with `hello`"), "{e}");
    assert!(w.service.unlock(jdoe, "hello", "admin").await.unwrap());
    request("mfa").await.unwrap();
    // A changed role, then a removed one.
    let mut changed = spec("auto", false, false);
    changed.candidates = ["CONTOSO\\boss".to_string()].into();
    store
        .write(move |tx| roles::replace(tx, &changed, "admin", 1))
        .await
        .unwrap();
    let e = request("auto").await.unwrap_err();
    assert_eq!(e.to_string(), "`CONTOSO\\jdoe` is not a candidate for role `auto`");
    store
        .write(|tx| roles::remove(tx, "mfa"))
        .await
        .unwrap();
    let e = request("mfa").await.unwrap_err();
    assert_eq!(e.to_string(), "role `mfa` not found");
    // Another process's change (here a second store on the same database, whose triggers this
    // service's writer does not run), with an event of its own: the writer notices the commit
    // (within 100 ms when idle; waited for here in real time, the clock standing still), every
    // cache drops what it kept, and the writer's event head is read again.
    request("approval").await.unwrap();
    let stamp = store
        .changes()
        .map(|c| c.stamp());
    let other = w._at.open().await;
    other
        .write(|tx| {
            set_enabled(jdoe, false)(tx)?;
            events::admin_change(
                tx,
                events::USER_CHANGED,
                "import",
                Some(jdoe),
                None,
                "disabled by another process",
                0,
            )
        })
        .await
        .unwrap();
    other.close();
    if let (Some(c), Some(stamp)) = (store.changes(), stamp) {
        let mut waited = 0;
        while c.unchanged(Kind::Account, "contoso\\jdoe", stamp) {
            assert!(waited < 5_000, "the writer never noticed the other process's commit");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            waited += 20;
        }
    }
    let e = request("approval").await.unwrap_err();
    assert!(e.to_string().contains("not an enabled rolegate user"), "{e}");
    // The next events follow the other process's in one intact chain.
    store.write(set_enabled(jdoe, true)).await.unwrap();
    request("approval").await.unwrap();
    let report = store.read_long(events::verify).await.unwrap();
    assert!(
        matches!(report, events::Verification::Intact(_)),
        "{report:?}"
    );
}
}

/// A service whose role "patch" (for CONTOSO\\jdoe, who exists) asks the misbehave plugin,
/// loaded in-process as `id` in `mode`.
async fn misbehave_role(at: &Location, id: &str, mode: &str) -> Service {
    let mut cfg = rolegate_e2e::provider_config(id, rolegate_e2e::misbehave_lib(), "in-process");
    cfg.settings.insert("mode".into(), mode.into());
    let providers = rolegate_e2e::load_providers(vec![cfg]).await.unwrap();
    let clock = Arc::new(ManualClock::new(T0.parse().unwrap()));
    let service = open_service(at, Arc::new(providers), clock, Settings::default()).await;
    let id = id.to_string();
    service
        .store()
        .write(move |tx| {
            for account in ["CONTOSO\\jdoe", "CONTOSO\\boss"] {
                users::create(
                    tx,
                    NewUser {
                        account: account.into(),
                        display_name: "Jane".into(),
                        ..Default::default()
                    },
                    1,
                    0,
                )?;
            }
            let mut role = spec("patch", true, false);
            role.providers = vec![id];
            roles::create(tx, &role, 0)
        })
        .await
        .unwrap();
    service
}

both! {
#[tokio::test]
async fn a_provider_is_told_the_request_it_challenges(backend) {
    // Issue 30: what a provider may bind its challenge to — the role, the activation's
    // length and the justification — reaches it (the misbehave plugin says what it heard).
    let at = Location::new(backend);
    let service = misbehave_role(&at, "ctx", "context").await;
    let v = service
        .request(
            "CONTOSO\\jdoe",
            "patch",
            "  night window  ",
            Some(SignedDuration::from_mins(30)),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        v.prompt.as_ref().unwrap()["message"],
        "Type 1234 (role patch, 1800 s, because night window)"
    );
    let done = service
        .answer(&v.id, "CONTOSO\\jdoe", code("1234".into()))
        .await
        .unwrap();
    assert_eq!(done.state, "active");
}
}

both! {
#[tokio::test]
async fn a_credential_answering_as_a_copy_is_set_aside_for_the_admin(backend) {
    // Issue 30: a provider that sees a copied credential (a WebAuthn counter that went
    // backwards) denies with `cloned` and names it; the host marks it (event 312), stops
    // offering it, and refuses a new enrolment until an admin removes it. An approval's
    // detail reaches event 103, cleaned of control characters and backquotes.
    let at = Location::new(backend);
    let service = misbehave_role(&at, "sec", "enrol").await;
    let jdoe = "CONTOSO\\jdoe";
    let enrol = || async {
        let v = service.enroll_start(jdoe, "sec").await?;
        service
            .enroll_continue(jdoe, "sec", v.state.as_deref().unwrap_or(""), code("4321".into()))
            .await
    };
    assert!(enrol().await.unwrap().done);
    let listed = |kind: i64| {
        let s = &service;
        async move {
            s.store()
                .read(move |tx| {
                    events::list(
                        tx,
                        &Filter {
                            id: Some(kind),
                            ..Default::default()
                        },
                    )
                })
                .await
                .unwrap()
        }
    };

    let v = service.request(jdoe, "patch", "fix", None, None).await.unwrap();
    let done = service.answer(&v.id, jdoe, code("4321".into())).await.unwrap();
    assert_eq!(done.state, "active");
    let completed = listed(events::MFA_COMPLETED).await;
    assert_eq!(completed[0].message, "MFA completed: credential c1 matched");

    service.close(&done.id, jdoe, false).await.unwrap();
    let v = service.request(jdoe, "patch", "fix", None, None).await.unwrap();
    let failed = service.answer(&v.id, jdoe, code("clone".into())).await.unwrap();
    assert_eq!(failed.state, "failed");
    let reason = failed.reason.unwrap();
    assert!(reason.contains("set aside for an administrator"), "{reason}");
    assert!(!reason.contains("counter"), "the admin's words stay the admin's: {reason}");
    let flagged = listed(events::CREDENTIAL_FLAGGED).await;
    assert_eq!(flagged.len(), 1);
    assert!(
        flagged[0].message.contains("credential `c1` in `sec` set aside")
            && flagged[0].message.contains("the counter went backwards"),
        "{}",
        flagged[0].message
    );
    let not_completed = listed(events::MFA_NOT_COMPLETED).await;
    assert!(
        not_completed[0].message.contains("(cloned)")
            && not_completed[0].message.contains("(credential `c1`)"),
        "{}",
        not_completed[0].message
    );
    let creds = service.credentials(jdoe).await.unwrap();
    assert_eq!(creds[0].flag.as_deref(), Some("the counter went backwards"));
    assert!(creds[0].flagged_at.is_some());

    // No longer offered: the provider sees no credential; no new enrolment beside it.
    let v = service.request(jdoe, "patch", "fix", None, None).await.unwrap();
    assert_eq!(v.state, "failed", "{v:?}");
    assert!(v.reason.unwrap().contains("not enrolled"));
    let e = enrol().await.unwrap_err().to_string();
    assert!(e.contains("set aside for an admin to review"), "{e}");

    // The admin removes it; the user enrols again and activates.
    service
        .remove_credential(jdoe, "sec", "c1", "admin")
        .await
        .unwrap();
    assert!(enrol().await.unwrap().done);
    let v = service.request(jdoe, "patch", "fix", None, None).await.unwrap();
    let done = service.answer(&v.id, jdoe, code("4321".into())).await.unwrap();
    assert_eq!(done.state, "active");
    assert!(service.credentials(jdoe).await.unwrap()[0].flag.is_none());
}
}

both! {
#[tokio::test]
async fn one_live_request_per_user_and_role(backend) {
    use rolegate::service::RequestFilter;
    let w = world(backend).await;
    // Another spelling of the same account.
    let jdoe = "contoso\\JDOE";
    let first = w
        .service
        .request("CONTOSO\\jdoe", "auto", "x", None, None)
        .await
        .unwrap();
    assert_eq!(first.account, "CONTOSO\\jdoe", "shown as the user spells it");
    let e = w
        .service
        .request(jdoe, "auto", "again", None, None)
        .await
        .unwrap_err();
    let end = Timestamp::from_millisecond(first.expires_at.unwrap())
        .unwrap()
        .strftime("%Y-%m-%d %H:%M UTC")
        .to_string();
    assert!(matches!(e, Error::Conflict(_)), "{e:?}");
    assert!(
        e.to_string().contains(&first.id) && e.to_string().contains(&format!("active until {end}")),
        "the first one's id and end: {e}"
    );
    // Waiting for an approver holds the place too; other roles and users have their own.
    let waiting = w.service.request(jdoe, "approval", "x", None, None).await.unwrap();
    assert_eq!(waiting.state, "pending_approval");
    let e = w
        .service
        .request(jdoe, "approval", "x", None, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("waiting for an approver"), "{e}");
    w.service
        .request("CONTOSO\\boss", "auto", "x", None, None)
        .await
        .unwrap();
    // Closed: room again.
    w.service.close(&first.id, jdoe, false).await.unwrap();
    let again = w.service.request(jdoe, "auto", "x", None, None).await.unwrap();
    assert_eq!(again.state, "active");
    // A prompt left unanswered (a closed tab) gives way to the new request.
    let p1 = w.service.request(jdoe, "mfa", "x", None, None).await.unwrap();
    w.clock.advance(SignedDuration::from_secs(1));
    let p2 = w.service.request(jdoe, "mfa", "x", None, None).await.unwrap();
    let old = w.service.get(&p1.id, None).await.unwrap();
    assert_eq!(old.state, "cancelled");
    assert!(old.reason.as_deref().unwrap_or_default().contains(&p2.id), "{old:?}");
    assert_eq!(event_ids(&w, &p1.id).await, [200, 205]);
    let e = w
        .service
        .answer(&p1.id, jdoe, code(right_code(&p1)))
        .await
        .unwrap_err();
    assert!(e.to_string().contains(&p1.id), "{e}");
    let done = w
        .service
        .answer(&p2.id, jdoe, code(right_code(&p2)))
        .await
        .unwrap();
    assert_eq!(done.state, "active");
    // An admin's view: everyone's, narrowed by user, role and state, newest first.
    let list = |account: Option<&str>, role: Option<&str>, states: &str| {
        let s = Arc::clone(&w.service);
        let f = RequestFilter {
            account: account.map(String::from),
            role: role.map(String::from),
            states: states
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect(),
            before_ms: None,
            limit: 100,
        };
        async move {
            s.list_requests(f)
                .await
                .unwrap()
                .into_iter()
                .map(|v| v.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(Some("CONTOSO\\jdoe"), Some("mfa"), "").await, [p2.id.clone(), p1.id.clone()]);
    let active = list(None, None, "active").await;
    assert_eq!(active.len(), 3, "{active:?}");
    assert!(active.contains(&again.id) && active.contains(&p2.id));
    assert_eq!(list(None, None, "pending_approval").await, [waiting.id]);
    assert_eq!(list(None, None, "").await.len(), 6);
}
}
