//! Moving a role to a new factor, on both stores: a shadow factor asked after the real one
//! (recorded, never deciding), readiness counting who could use each provider, and the
//! provider lists' history and rollback.

use std::sync::Arc;

use jiff::SignedDuration;
use rolegate::Error;
use rolegate::model::clock::{Clock as _, ManualClock};
use rolegate::records::roles::{self, RoleSpec};
use rolegate::records::users::{self, NewUser};
use rolegate::service::{self, RequestView, Service, Settings};
use rolegate::store::Value;
use rolegate::store::secrets::SealingKey;
use rolegate_e2e::both;
use rolegate_e2e::stores::{Backend, Location};
use rolegate_provider_totp::{Secret, code_for_secret};
use rolegate_sdk::{Credential, Input};

const T0: &str = "2026-11-26T10:00:00Z";
const JDOE: &str = "CONTOSO\\jdoe";
const BOSS: &str = "CONTOSO\\boss";

struct World {
    _at: Location,
    service: Arc<Service>,
    clock: Arc<ManualClock>,
    key: Arc<SealingKey>,
    app: Secret,
}

/// A service with `hello` (the real factor: no enrolment) and `totp` (the one moved to);
/// jdoe enrolled in TOTP, boss not; role `ops` accepts hello, with totp in shadow.
async fn world(backend: Backend) -> World {
    let hello = rolegate_e2e::provider_config("hello", rolegate_e2e::hello_lib(), "in-process");
    let totp = rolegate_e2e::provider_config("totp", rolegate_e2e::totp_lib(), "in-process");
    let providers = rolegate_e2e::load_providers(vec![hello, totp])
        .await
        .unwrap();
    let at = Location::new(backend);
    let clock = Arc::new(ManualClock::new(T0.parse().unwrap()));
    let store = Arc::new(at.open().await);
    let key = Arc::new(SealingKey::load_or_create(&at.path().join("rolegate.key")).unwrap());
    let app = Secret {
        secret: "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ".into(),
        algorithm: "SHA1".into(),
        digits: 6,
        period: 30,
        last_step: None,
    };
    let credential = app_credential(&app);
    let sealing = Arc::clone(&key);
    store
        .write(move |tx| {
            for account in [JDOE, BOSS] {
                users::create(
                    tx,
                    NewUser {
                        account: account.into(),
                        display_name: account.into(),
                        ..Default::default()
                    },
                    1,
                    0,
                )?;
            }
            roles::create(tx, &ops(), 0)?;
            service::store_credential(tx, &sealing, JDOE, "totp", &credential, 0)
        })
        .await
        .unwrap();
    let service = Service::new(
        store,
        Arc::new(providers),
        clock.clone(),
        Arc::clone(&key),
        Settings::default(),
    );
    World {
        _at: at,
        service: Arc::new(service),
        clock,
        key,
        app,
    }
}

fn app_credential(app: &Secret) -> Credential {
    Credential {
        id: "app".into(),
        label: "Authenticator app".into(),
        data: serde_json::to_vec(app).unwrap().into(),
    }
}

fn ops() -> RoleSpec {
    RoleSpec {
        name: "ops".into(),
        candidates: [JDOE.to_string(), BOSS.to_string()].into(),
        approvers: Default::default(),
        ttl_s: 3600,
        max_ttl_s: 3600,
        availability: None,
        justification_required: false,
        approval_enabled: false,
        mfa_enabled: true,
        providers: vec!["hello".into()],
        when_factor_down: Default::default(),
        shadow: vec!["totp".into()],
    }
}

/// The right answer to hello's prompt: the digits it shows, reversed.
fn hello_code(view: &RequestView) -> Input {
    let message = view.prompt.as_ref().unwrap()["message"].as_str().unwrap();
    let digits = message.split(' ').nth(1).unwrap();
    Input::Code {
        code: digits.chars().rev().collect(),
    }
}

fn code(c: &str) -> Input {
    Input::Code { code: c.into() }
}

impl World {
    /// The app's code now.
    fn totp(&self) -> String {
        let now = self.clock.now().as_second();
        code_for_secret(&self.app, u64::try_from(now).unwrap()).unwrap()
    }

    /// `account` requests `ops` and answers hello rightly: the view that completes MFA.
    async fn through_hello(&self, account: &str) -> RequestView {
        rolegate_e2e::close_active(&self.service, account, "ops").await;
        let v = self
            .service
            .request(account, "ops", "moving to TOTP", None, None)
            .await
            .unwrap();
        assert_eq!(v.state, "pending_mfa", "{v:?}");
        assert_eq!(v.provider.as_deref(), Some("hello"));
        assert!(v.shadow.is_none(), "the shadow waits for the real factor");
        self.service
            .answer(&v.id, account, hello_code(&v))
            .await
            .unwrap()
    }

    async fn event_ids(&self, request: &str) -> Vec<i64> {
        rolegate_e2e::request_event_ids(&self.service, request).await
    }

    async fn events_of(&self, id: i64) -> Vec<rolegate::records::events::Event> {
        use rolegate::records::events::{self, Filter};
        self.service
            .store()
            .read(move |tx| {
                events::list(
                    tx,
                    &Filter {
                        id: Some(id),
                        ..Default::default()
                    },
                )
            })
            .await
            .unwrap()
    }
}

both! {
    #[tokio::test]
    async fn a_shadow_factor_is_asked_after_the_real_one_and_decides_nothing(backend) {
        let w = world(backend).await;
        let v = w.through_hello(JDOE).await;
        assert_eq!(v.state, "active", "the request moved on before the shadow: {v:?}");
        let s = v.shadow.clone().expect("the shadow is asked");
        assert_eq!((s.provider.as_str(), s.outcome), ("totp", "asked"));
        assert_eq!(s.prompt.as_ref().unwrap()["kind"], "code");
        assert_eq!(w.event_ids(&v.id).await, [200, 103, 203]);

        // A wrong shadow answer is asked again, and changes nothing of the request.
        let wrong = if w.totp() == "000000" { "111111" } else { "000000" };
        let r = w.service.answer(&v.id, JDOE, code(wrong)).await.unwrap();
        assert_eq!(r.state, "active");
        let s = r.shadow.unwrap();
        assert_eq!(s.outcome, "asked");
        assert!(s.reason.unwrap().ends_with("2 attempt(s) left"));
        // Reading the request shows the open trial (to its user, and to an admin).
        let got = w.service.get(&v.id, Some(JDOE)).await.unwrap();
        assert_eq!(got.shadow.as_ref().map(|s| s.outcome), Some("asked"), "{got:?}");
        // Another account cannot answer it.
        let e = w.service.answer(&v.id, BOSS, code(&w.totp())).await.unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
        // The right code completes it: event 207, the request as it was.
        let r = w.service.answer(&v.id, JDOE, code(&w.totp())).await.unwrap();
        assert_eq!(r.state, "active");
        assert_eq!(r.shadow.as_ref().unwrap().outcome, "completed");
        assert_eq!(w.event_ids(&v.id).await, [200, 103, 203, 207]);
        assert!(w.service.get(&v.id, None).await.unwrap().shadow.is_none());
        // Nothing is left to answer.
        let e = w.service.answer(&v.id, JDOE, code(&w.totp())).await.unwrap_err();
        assert!(e.to_string().contains("is active, not waiting for MFA"), "{e}");

        // The code used in shadow was stored as used: the same code again is a replay.
        let v = w.through_hello(JDOE).await;
        let r = w.service.answer(&v.id, JDOE, code(&w.totp())).await.unwrap();
        let s = r.shadow.unwrap();
        assert_eq!(s.outcome, "asked", "a replay is asked again: {s:?}");
        // Three wrong answers end the shadow (event 208), never the request, and never lock
        // the user out: the next request still asks the shadow.
        for _ in 0..2 {
            w.service.answer(&v.id, JDOE, code(wrong)).await.unwrap();
        }
        let ids = w.event_ids(&v.id).await;
        assert_eq!(ids, [200, 103, 203, 208], "{ids:?}");
        let last = w.events_of(208).await;
        assert!(last[0].message.contains("no attempts left"), "{}", last[0].message);
        let v = w.through_hello(JDOE).await;
        assert_eq!(v.state, "active");
        assert_eq!(v.shadow.as_ref().unwrap().outcome, "asked");

        // Left unanswered, it ends with the prompt's time (the sweep's event 208).
        w.clock.advance(SignedDuration::from_mins(11));
        w.service.expire_due().await.unwrap();
        assert_eq!(w.event_ids(&v.id).await, [200, 103, 203, 208]);
        assert!(w.events_of(208).await[0].message.contains("not answered in time"));
        let e = w.service.answer(&v.id, JDOE, code(&w.totp())).await.unwrap_err();
        assert!(matches!(e, Error::Conflict(_)), "{e}");

        // A candidate who cannot use the shadow is not asked; it is recorded, and the
        // request is not touched.
        let v = w.through_hello(BOSS).await;
        assert_eq!(v.state, "active");
        let s = v.shadow.unwrap();
        assert_eq!(s.outcome, "not_asked");
        assert!(s.reason.unwrap().contains("`totp`: not enrolled"));
        assert_eq!(w.event_ids(&v.id).await, [200, 103, 203, 208]);
    }
}

both! {
    #[tokio::test]
    async fn readiness_counts_who_could_use_each_provider_and_the_shadow_successes(backend) {
        let w = world(backend).await;
        let v = w.through_hello(JDOE).await;
        w.service.answer(&v.id, JDOE, code(&w.totp())).await.unwrap();

        let r = w.service.readiness(Some("ops")).await.unwrap().pop().unwrap();
        assert_eq!(r.role, "ops");
        let hello = &r.providers[0];
        assert_eq!((hello.provider.as_str(), hello.shadow, hello.ready, hello.candidates), ("hello", false, 2, 2));
        let totp = &r.providers[1];
        assert_eq!((totp.provider.as_str(), totp.shadow, totp.ready, totp.candidates), ("totp", true, 1, 2));
        assert_eq!((totp.shadow_completed_by, totp.shadow_completed), (1, 1));
        let boss = r.candidates.iter().find(|c| c.account == BOSS).unwrap();
        assert_eq!(boss.providers["totp"], "not enrolled");
        assert_eq!(boss.providers["hello"], "ready");
        assert!(
            r.summary.iter().any(|s| s == "`totp` (shadow): 1 of 2 candidates ready; not yet: CONTOSO\\boss (not enrolled); completed in shadow by 1 of 2 (1 completed, 0 not)"),
            "{:?}", r.summary
        );
        assert!(r.summary.iter().any(|s| s.starts_with("not ready to drop `hello`")), "{:?}", r.summary);

        // boss enrols: everyone could use TOTP, but boss never tried it in shadow.
        let (key, cred) = (Arc::clone(&w.key), app_credential(&w.app));
        w.service
            .store()
            .write(move |tx| service::store_credential(tx, &key, BOSS, "totp", &cred, 1))
            .await
            .unwrap();
        let r = w.service.readiness(Some("ops")).await.unwrap().pop().unwrap();
        assert_eq!(r.providers[1].ready, 2);
        assert!(
            r.summary.iter().any(|s| s == "`hello` could be dropped: every candidate can use `totp`, but only 1 of 2 completed it in shadow yet"),
            "{:?}", r.summary
        );

        // A lockout and a disabled account count against readiness, named.
        let until = w.clock.now().as_millisecond() + 60_000;
        w.service
            .store()
            .write(move |tx| {
                tx.execute(
                    "INSERT INTO lockouts (account_key, provider, failures, locked_until) VALUES ($1, 'totp', 0, $2)",
                    &[users::account_key(BOSS).into(), Value::Int(until)],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let r = w.service.readiness(None).await.unwrap().pop().unwrap();
        let boss = r.candidates.iter().find(|c| c.account == BOSS).unwrap();
        assert!(boss.providers["totp"].starts_with("locked out until 2026-11-26T10:01:00"), "{boss:?}");
        assert_eq!(r.providers[1].ready, 1);

        // A shadow this daemon has not loaded is never asked: `role get` warns of it.
        let mut role = ops().to_role().unwrap();
        role.shadow = vec!["totp".into(), "gone".into()];
        let warnings = w.service.role_warnings(&role).await.unwrap();
        assert_eq!(
            warnings,
            ["shadow provider `gone` is not loaded on this daemon: it is never asked"],
            "{warnings:?}"
        );

        let e = w.service.readiness(Some("nope")).await.unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
    }
}
