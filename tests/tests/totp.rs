//! The TOTP provider loaded by the host's service, on both stores: a code sent with the
//! request (`NewRequest::answer`) is judged at once and stored with its outcome in one write.

use std::sync::Arc;

use rolegate::model::clock::{Clock as _, ManualClock};
use rolegate::records::roles::{self, RoleSpec};
use rolegate::records::users::{self, NewUser};
use rolegate::service::{self, NewRequest, RequestView, Requester, Service, Settings};
use rolegate::store::secrets::SealingKey;
use rolegate_e2e::both;
use rolegate_e2e::stores::{Backend, Location};
use rolegate_e2e::totp_lib;
use rolegate_provider_totp::{Secret, code_for_secret};
use rolegate_sdk::{Credential, Input};

const T0: &str = "2026-11-26T10:00:00Z";
const JDOE: &str = "CONTOSO\\jdoe";

struct World {
    _at: Location,
    service: Arc<Service>,
    clock: Arc<ManualClock>,
    app: Secret,
}

/// A service with the TOTP provider (`isolation` as the config spells it), jdoe enrolled,
/// and two TOTP roles: `totp` (MFA only) and `totp-approved` (MFA, then approval).
async fn world(backend: Backend, isolation: &str) -> World {
    let totp = rolegate_e2e::provider_config("totp", totp_lib(), isolation);
    let providers = rolegate_e2e::load_providers(vec![totp]).await.unwrap();
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
    let credential = Credential {
        id: "app".into(),
        label: "Authenticator app".into(),
        data: serde_json::to_vec(&app).unwrap().into(),
    };
    let sealing = Arc::clone(&key);
    store
        .write(move |tx| {
            for account in [JDOE, "CONTOSO\\boss"] {
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
            for (name, approval) in [("totp", false), ("totp-approved", true)] {
                roles::create(
                    tx,
                    &RoleSpec {
                        name: name.into(),
                        candidates: [JDOE.to_string()].into(),
                        approvers: ["CONTOSO\\boss".to_string()].into(),
                        ttl_s: 3600,
                        max_ttl_s: 3600,
                        availability: None,
                        justification_required: false,
                        approval_enabled: approval,
                        mfa_enabled: true,
                        providers: vec!["totp".into()],
                        when_factor_down: Default::default(),
                        shadow: Vec::new(),
                    },
                    0,
                )?;
            }
            service::store_credential(tx, &sealing, JDOE, "totp", &credential, 0)
        })
        .await
        .unwrap();
    let service = Service::new(
        store,
        Arc::new(providers),
        clock.clone(),
        key,
        Settings::default(),
    );
    World {
        _at: at,
        service: Arc::new(service),
        clock,
        app,
    }
}

impl World {
    /// The app's code `steps` time steps from the clock's now.
    fn code(&self, steps: i64) -> String {
        let now = self.clock.now().as_second() + steps * 30;
        code_for_secret(&self.app, u64::try_from(now).unwrap()).unwrap()
    }

    /// Requests `role` with `code` sent along.
    async fn request(&self, role: &str, code: String) -> rolegate::Result<RequestView> {
        self.request_on(&self.service, role, code).await
    }

    async fn event_ids(&self, request: &str) -> Vec<i64> {
        rolegate_e2e::request_event_ids(&self.service, request).await
    }
}

both! {
    #[tokio::test]
    async fn a_code_sent_with_the_request_activates_and_cannot_be_used_twice(backend) {
        let w = world(backend, "in-process").await;
        let code = w.code(0);
        let v = w.request("totp", code.clone()).await.unwrap();
        assert_eq!(v.state, "active", "{v:?}");
        assert!(v.prompt.is_none() && v.expires_at.is_some(), "{v:?}");
        assert_eq!(w.event_ids(&v.id).await, [200, 103, 203]);
        // Stored as the answer left it.
        assert_eq!(w.service.get(&v.id, Some(JDOE)).await.unwrap().state, "active");
        // One row write: the granting transition inserts it, its prompt and sealed challenge
        // already gone, at the version an insert and an update would have left.
        let id = v.id.clone();
        let row = w
            .service
            .store()
            .read(move |tx| {
                tx.query(
                    "SELECT state, version, wrong_answers, CASE WHEN challenge IS NULL AND ask_expires_at IS NULL AND prompt IS NULL AND reason IS NULL THEN 1 ELSE 0 END, expires_at FROM requests WHERE id = $1",
                    &[id.into()],
                )
            })
            .await
            .unwrap();
        assert_eq!(row.len(), 1);
        assert_eq!(row[0].text(0).unwrap(), "active");
        assert_eq!((row[0].int(1).unwrap(), row[0].int(2).unwrap(), row[0].int(3).unwrap()), (2, 0, 1));
        assert_eq!(Some(row[0].int(4).unwrap()), v.expires_at);
        // A second request with the next code while this one holds the role: refused by the
        // write that would have granted it, which is undone whole — the code is not spent
        // (it answers a prompt below).
        let e = w.request("totp", w.code(1)).await.unwrap_err();
        assert!(e.to_string().contains("active until"), "{e}");
        rolegate_e2e::close_active(&w.service, JDOE, "totp").await;

        // The same code again: stored, open, its prompt answerable with the next code.
        let again = w.request("totp", code).await.unwrap();
        assert_eq!(again.state, "pending_mfa", "{again:?}");
        assert!(again.reason.as_deref().unwrap_or("").contains("used already"), "{again:?}");
        assert_eq!(again.prompt.as_ref().unwrap()["kind"], "code");
        let done = w
            .service
            .answer(&again.id, JDOE, Input::Code { code: w.code(1) })
            .await
            .unwrap();
        assert_eq!(done.state, "active", "{done:?}");

        // MFA first, then the approver: the code moves the request on to approval.
        let v = w.request("totp-approved", w.code(-1)).await.unwrap();
        assert_eq!(v.state, "pending_mfa", "a step before the last used is a replay: {v:?}");
        w.clock.advance(jiff::SignedDuration::from_secs(60));
        let v = w.request("totp-approved", w.code(0)).await.unwrap();
        assert_eq!(v.state, "pending_approval", "{v:?}");
        assert_eq!(w.event_ids(&v.id).await, [200, 103]);

        // A malformed code stores nothing.
        rolegate_e2e::close_active(&w.service, JDOE, "totp").await;
        let before = w.service.requests_of(JDOE, 100).await.unwrap().len();
        let e = w.request("totp", "12 34".into()).await.unwrap_err();
        assert!(e.to_string().contains("6 digits"), "{e}");
        assert_eq!(w.service.requests_of(JDOE, 100).await.unwrap().len(), before);
    }
}

/// The provider's `answer_ahead` crosses the worker process's boundary too.
#[tokio::test]
async fn a_code_sent_with_the_request_activates_through_a_worker_process() {
    let w = world(Backend::Sqlite, "process").await;
    let v = w.request("totp", w.code(0)).await.unwrap();
    assert_eq!(v.state, "active", "{v:?}");
    assert_eq!(w.event_ids(&v.id).await, [200, 103, 203]);
}

impl World {
    /// Another host on the same store (a second service over the same database and key, its
    /// own plugin instance and caches), as two daemons sharing PostgreSQL are.
    async fn second_host(&self) -> Service {
        let totp = rolegate_e2e::provider_config("totp", totp_lib(), "in-process");
        let providers = rolegate_e2e::load_providers(vec![totp]).await.unwrap();
        let store = Arc::new(self._at.open().await);
        let key =
            Arc::new(SealingKey::load_or_create(&self._at.path().join("rolegate.key")).unwrap());
        Service::new(
            store,
            Arc::new(providers),
            self.clock.clone(),
            key,
            Settings::default(),
        )
    }
}

both! {
    #[tokio::test]
    async fn any_host_continues_a_challenge_another_host_took_a_wrong_answer_to(backend) {
        // Issue 33: created on A (which keeps it for the answer), answered wrongly on B, then
        // rightly on A — A must judge against the request as stored, not its own copy.
        let w = world(backend, "in-process").await;
        let b = w.second_host().await;
        let v = w.service.request(JDOE, "totp", "x", None, None).await.unwrap();
        assert_eq!(v.state, "pending_mfa", "{v:?}");
        let wrong = b
            .answer(&v.id, JDOE, Input::Code { code: "000000".into() })
            .await
            .unwrap();
        assert_eq!(wrong.state, "pending_mfa", "{wrong:?}");
        let done = w
            .service
            .answer(&v.id, JDOE, Input::Code { code: w.code(0) })
            .await
            .unwrap();
        assert_eq!(done.state, "active", "{done:?}");
        assert_eq!(w.event_ids(&v.id).await, [200, 103, 203]);
        let chain = w.service.store().read_long(rolegate::records::events::verify).await.unwrap();
        assert!(matches!(chain, rolegate::records::events::Verification::Intact(_)), "{chain:?}");
    }
}

/// Asserts that exactly one of two outcomes moved its request on (active, or on to
/// approval) and returns what the other said (its reason, or its error).
fn one_granted(a1: &rolegate::Result<RequestView>, a2: &rolegate::Result<RequestView>) -> String {
    let granted = |r: &rolegate::Result<RequestView>| matches!(r, Ok(v) if v.state == "active" || v.state == "pending_approval");
    assert_eq!(
        [granted(a1), granted(a2)].iter().filter(|g| **g).count(),
        1,
        "one code, one success: {a1:?} {a2:?}"
    );
    match if granted(a1) { a2 } else { a1 } {
        Ok(v) => v.reason.clone().unwrap_or_default(),
        Err(e) => e.to_string(),
    }
}

both! {
    #[tokio::test]
    async fn a_code_used_on_two_hosts_at_once_counts_once_and_the_other_hears_it_was_used(backend) {
        let w = world(backend, "in-process").await;
        let b = w.second_host().await;
        // Two requests (two roles: one live per user and role), one on each host.
        let r1 = w.service.request(JDOE, "totp", "x", None, None).await.unwrap();
        let r2 = b.request(JDOE, "totp-approved", "x", None, None).await.unwrap();
        let code = w.code(0);
        let (a1, a2) = tokio::join!(
            w.service.answer(&r1.id, JDOE, Input::Code { code: code.clone() }),
            b.answer(&r2.id, JDOE, Input::Code { code }),
        );
        let said = one_granted(&a1, &a2);
        assert!(said.contains("used already"), "the second hears the code was used: {said}");
        assert!(!said.contains("an admin"), "{said}");
    }
}

both! {
    #[tokio::test]
    async fn a_right_answer_is_refused_when_another_host_disabled_the_user_or_changed_the_credentials(backend) {
        // The answer's write checks the account in the credential's own update when it cannot
        // trust the create's read (another host wrote meanwhile): each change below must still
        // refuse it, say why, and leave the code unspent.
        let w = world(backend, "in-process").await;
        let b = w.second_host().await;
        let set_enabled = |on: bool| {
            b.store().write(move |tx| {
                users::update(
                    tx,
                    JDOE,
                    users::UserChanges {
                        enabled: Some(on),
                        ..Default::default()
                    },
                    1,
                    "admin",
                    0,
                )
            })
        };

        // Disabled on B after the create on A.
        let v = w.service.request(JDOE, "totp", "x", None, None).await.unwrap();
        set_enabled(false).await.unwrap();
        let e = w
            .service
            .answer(&v.id, JDOE, Input::Code { code: w.code(0) })
            .await
            .unwrap_err();
        assert!(matches!(e, rolegate::Error::Refused(_)), "{e:?}");
        set_enabled(true).await.unwrap();
        let stored = w.service.get(&v.id, Some(JDOE)).await.unwrap();
        assert_ne!(stored.state, "active", "{stored:?}");
        w.service.close(&v.id, JDOE, false).await.unwrap();

        // A second key of the provider enrolled on B after the create on A.
        let v = w.service.request(JDOE, "totp", "x", None, None).await.unwrap();
        let key = Arc::new(SealingKey::load_or_create(&w._at.path().join("rolegate.key")).unwrap());
        let second = Credential {
            id: "app2".into(),
            label: "Second app".into(),
            data: serde_json::to_vec(&w.app).unwrap().into(),
        };
        b.store()
            .write(move |tx| service::store_credential(tx, &key, JDOE, "totp", &second, 1))
            .await
            .unwrap();
        let e = w
            .service
            .answer(&v.id, JDOE, Input::Code { code: w.code(0) })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("credentials changed"), "{e}");
        let stored = w.service.get(&v.id, Some(JDOE)).await.unwrap();
        assert_ne!(stored.state, "active", "{stored:?}");

        // Neither refusal spent the code: the same code still activates on B.
        let done = w.request_on(&b, "totp-approved", w.code(0)).await.unwrap();
        assert_eq!(done.state, "pending_approval", "{done:?}");
    }
}

impl World {
    /// Requests `role` on `host` with `code` sent along.
    async fn request_on(
        &self,
        host: &Service,
        role: &str,
        code: String,
    ) -> rolegate::Result<RequestView> {
        host.request_as(
            Requester::Account(JDOE.into()),
            NewRequest {
                role,
                justification: "patch night",
                answer: Some(Input::Code { code }),
                ..Default::default()
            },
        )
        .await
        .map(|(_, v)| v)
    }
}

both! {
    #[tokio::test]
    async fn a_code_sent_after_a_wrong_one_activates_and_clears_the_failure(backend) {
        // A failure on record makes the write judge the account again before it stores the
        // request (on PostgreSQL the insert's own check misses first): it activates, and the
        // failure count is cleared as an answered prompt's success clears it.
        let w = world(backend, "in-process").await;
        let wrong = w.request("totp", "000000".into()).await.unwrap();
        assert_eq!(wrong.state, "pending_mfa", "{wrong:?}");
        let failures = || {
            w.service.store().read(|tx| {
                tx.query(
                    "SELECT failures FROM lockouts WHERE account_key = $1 AND provider = 'totp'",
                    &[users::account_key(JDOE).into()],
                )
                .map(|r| r.first().and_then(|r| r.int(0).ok()).unwrap_or(0))
            })
        };
        assert_eq!(failures().await.unwrap(), 1);
        let v = w.request("totp-approved", w.code(0)).await.unwrap();
        assert_eq!(v.state, "pending_approval", "{v:?}");
        assert_eq!(failures().await.unwrap(), 0);
        // The code is spent.
        w.service.close(&wrong.id, JDOE, false).await.unwrap();
        let again = w.request("totp", w.code(0)).await.unwrap();
        assert_eq!(again.state, "pending_mfa", "{again:?}");
        assert!(again.reason.as_deref().unwrap_or("").contains("used already"), "{again:?}");
    }
}

both! {
    #[tokio::test]
    async fn an_activation_stays_written_when_a_later_write_of_its_batch_fails(backend) {
        // On PostgreSQL a write that fails is undone by rolling its group commit back and
        // running the others' statements again: the activation's one statement (the request
        // inserted with the credential's update) must be among them.
        let w = world(backend, "in-process").await;
        let store = w.service.store().clone();
        let pause = match backend {
            Backend::Postgres => "SELECT 1 FROM pg_sleep(1)",
            Backend::Sqlite => "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000) SELECT count(*) FROM n",
        };
        // The writer busy while the activation's write and then a failing one queue behind it
        // (one group commit).
        let busy = store.write(move |tx| tx.query(pause, &[]).map(|_| ()));
        let activation = async {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            w.request("totp", w.code(0)).await
        };
        let failing = async {
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
            store
                .write(|tx| {
                    tx.execute(
                        "UPDATE users SET display_name = 'x' WHERE account_key = $1",
                        &[users::account_key(JDOE).into()],
                    )?;
                    Err::<(), _>(rolegate::Error::Conflict("this write fails".into()))
                })
                .await
        };
        let (busy, activation, failing) = tokio::join!(busy, activation, failing);
        busy.unwrap();
        assert!(failing.is_err());
        let v = activation.unwrap();
        assert_eq!(v.state, "active", "{v:?}");
        // Written: read back by another host, its events on record, the code spent, and the
        // failed write's change gone.
        let b = w.second_host().await;
        assert_eq!(b.get(&v.id, Some(JDOE)).await.unwrap().state, "active");
        assert_eq!(w.event_ids(&v.id).await, [200, 103, 203]);
        let again = w.request_on(&b, "totp-approved", w.code(0)).await.unwrap();
        assert_eq!(again.state, "pending_mfa", "{again:?}");
        assert!(again.reason.as_deref().unwrap_or("").contains("used already"), "{again:?}");
        let name = store
            .read(|tx| users::get(tx, JDOE))
            .await
            .unwrap()
            .map(|u| u.display_name);
        assert_eq!(name.as_deref(), Some(JDOE));
    }
}

both! {
    #[tokio::test]
    async fn a_code_sent_with_requests_on_two_hosts_at_once_activates_once(backend) {
        // The same code sent along with two requests (two roles), one on each host, at once:
        // each host's provider accepts it, and the writes race on the credential's update
        // (on PostgreSQL, the statement that also inserts the request) — one activation, the
        // other hears the code was used, and the event chain stays whole.
        let w = world(backend, "in-process").await;
        let b = w.second_host().await;
        let code = w.code(0);
        let (a1, a2) = tokio::join!(
            w.request("totp", code.clone()),
            w.request_on(&b, "totp-approved", code),
        );
        let said = one_granted(&a1, &a2);
        assert!(said.contains("used already"), "the other hears the code was used: {said}");
        let chain = w.service.store().read_long(rolegate::records::events::verify).await.unwrap();
        assert!(matches!(chain, rolegate::records::events::Verification::Intact(_)), "{chain:?}");
    }
}
