//! Two hosts on one store (issue 33): two services over the same database and key file,
//! each with its own plugin instance and caches — as two daemons sharing PostgreSQL are —
//! racing on the same requests. Each decision, answer and expiry takes effect exactly once,
//! and the event chain stays whole. On both backends (two SQLite connections to one file
//! race the same way through the database's own locking).

use std::sync::Arc;

use jiff::SignedDuration;
use rolegate::model::clock::ManualClock;
use rolegate::records::events::{self, Filter};
use rolegate::records::roles::{self, RoleSpec};
use rolegate::service::{RequestView, Service, Settings};
use rolegate::store::secrets::SealingKey;
use rolegate_e2e::both;
use rolegate_e2e::stores::{Backend, Location};
use rolegate_sdk::Input;

const T0: &str = "2026-11-26T10:00:00Z";
const JDOE: &str = "CONTOSO\\jdoe";
const BOSS: &str = "CONTOSO\\boss";
/// Rounds per race: each on a role of its own (one live request per user and role).
const ROUNDS: usize = 8;

struct Hosts {
    at: Location,
    a: Arc<Service>,
    b: Arc<Service>,
    clock: Arc<ManualClock>,
}

async fn host(at: &Location, clock: &Arc<ManualClock>) -> Arc<Service> {
    let hello = rolegate_e2e::provider_config("hello", rolegate_e2e::hello_lib(), "in-process");
    let providers = rolegate_e2e::load_providers(vec![hello]).await.unwrap();
    let store = Arc::new(at.open().await);
    let key = Arc::new(SealingKey::load_or_create(&at.path().join("rolegate.key")).unwrap());
    Arc::new(Service::new(
        store,
        Arc::new(providers),
        clock.clone(),
        key,
        Settings::default(),
    ))
}

/// Two hosts; jdoe and the approver boss; per round `i` the roles `mfa-i` (hello),
/// `approval-i` and `auto-i` (neither).
async fn hosts(backend: Backend) -> Hosts {
    let at = Location::new(backend);
    let clock = Arc::new(ManualClock::new(T0.parse().unwrap()));
    let a = host(&at, &clock).await;
    a.store()
        .write(|tx| {
            rolegate_e2e::create_users(tx, &[JDOE, BOSS])?;
            for i in 0..ROUNDS {
                for (kind, mfa, approval) in [
                    ("mfa", true, false),
                    ("approval", false, true),
                    ("auto", false, false),
                ] {
                    roles::create(
                        tx,
                        &RoleSpec {
                            name: format!("{kind}-{i}"),
                            candidates: [JDOE.to_string()].into(),
                            approvers: [BOSS.to_string()].into(),
                            ttl_s: 600,
                            max_ttl_s: 600,
                            availability: None,
                            justification_required: false,
                            approval_enabled: approval,
                            mfa_enabled: mfa,
                            providers: if mfa { vec!["hello".into()] } else { vec![] },
                            when_factor_down: Default::default(),
                            shadow: Vec::new(),
                        },
                        0,
                    )?;
                }
            }
            Ok(())
        })
        .await
        .unwrap();
    let b = host(&at, &clock).await;
    Hosts { at, a, b, clock }
}

/// The right answer to hello's prompt: the digits it shows, reversed.
fn right(view: &RequestView) -> Input {
    let message = view.prompt.as_ref().unwrap()["message"].as_str().unwrap();
    let digits = message.split(' ').nth(1).unwrap();
    Input::Code {
        code: digits.chars().rev().collect(),
    }
}

/// How many events with `id` the request has.
async fn count(h: &Hosts, request: &str, id: i64) -> usize {
    let r = request.to_string();
    h.a.store()
        .read(move |tx| {
            events::list(
                tx,
                &Filter {
                    id: Some(id),
                    limit: Some(100_000),
                    ..Default::default()
                },
            )
        })
        .await
        .unwrap()
        .iter()
        .filter(|e| e.request.as_deref() == Some(r.as_str()))
        .count()
}

async fn chain_intact(h: &Hosts) {
    let report = h.a.store().read_long(events::verify).await.unwrap();
    assert!(
        matches!(report, events::Verification::Intact(_)),
        "{report:?}"
    );
}

both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_answer_sent_to_both_hosts_at_once_activates_once(backend) {
    let h = hosts(backend).await;
    for i in 0..ROUNDS {
        let role = format!("mfa-{i}");
        // Made on either host: one keeps it for the answer, the other reads it.
        let maker = if i % 2 == 0 { &h.a } else { &h.b };
        let v = maker.request(JDOE, &role, "race", None, None).await.unwrap();
        let (x, y) = tokio::join!(h.a.answer(&v.id, JDOE, right(&v)), h.b.answer(&v.id, JDOE, right(&v)));
        let active = [&x, &y]
            .iter()
            .filter(|r| matches!(r, Ok(v) if v.state == "active"))
            .count();
        assert_eq!(active, 1, "round {i}: {x:?} {y:?}");
        let loser = if matches!(&x, Ok(v) if v.state == "active") { &y } else { &x };
        assert!(loser.is_err(), "the other answer is refused: {loser:?}");
        assert_eq!(count(&h, &v.id, events::MFA_COMPLETED).await, 1, "round {i}");
        assert_eq!(count(&h, &v.id, events::REQUEST_ACTIVATED).await, 1, "round {i}");
    }
    chain_intact(&h).await;
}
}

both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_and_a_rejection_on_two_hosts_at_once_decide_once(backend) {
    let h = hosts(backend).await;
    for i in 0..ROUNDS {
        let v = h
            .a
            .request(JDOE, &format!("approval-{i}"), "race", None, None)
            .await
            .unwrap();
        assert_eq!(v.state, "pending_approval");
        let (x, y) = if i % 2 == 0 {
            let (x, y) = tokio::join!(h.a.approve(&v.id, BOSS), h.b.reject(&v.id, BOSS, Some("no")));
            (x.map(|v| v.state), y.map(|v| v.state))
        } else {
            let (y, x) = tokio::join!(h.a.reject(&v.id, BOSS, Some("no")), h.b.approve(&v.id, BOSS));
            (x.map(|v| v.state), y.map(|v| v.state))
        };
        assert!(x.is_ok() != y.is_ok(), "exactly one decision, round {i}: {x:?} {y:?}");
        let stored = h.a.get(&v.id, None).await.unwrap().state;
        let approved = count(&h, &v.id, events::REQUEST_APPROVED).await;
        let rejected = count(&h, &v.id, events::REQUEST_REJECTED).await;
        assert_eq!(approved + rejected, 1, "round {i}: one decision event");
        match stored.as_str() {
            "active" => assert_eq!((approved, x.as_deref().ok()), (1, Some("active"))),
            "rejected" => assert_eq!((rejected, y.as_deref().ok()), (1, Some("rejected"))),
            other => panic!("round {i}: {other}"),
        }
    }
    chain_intact(&h).await;
}
}

both! {
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_sweeps_on_two_hosts_end_each_activation_once(backend) {
    let h = hosts(backend).await;
    let mut ids = Vec::new();
    for i in 0..ROUNDS {
        let host = if i % 2 == 0 { &h.a } else { &h.b };
        let v = host.request(JDOE, &format!("auto-{i}"), "x", None, None).await.unwrap();
        assert_eq!(v.state, "active");
        ids.push(v.id);
    }
    h.clock.advance(SignedDuration::from_mins(11));
    let (x, y) = tokio::join!(h.a.expire_due(), h.b.expire_due());
    let (x, y) = (x.unwrap(), y.unwrap());
    // A sweep that lost the race to the other host's finds nothing left to end.
    let again = h.a.expire_due().await.unwrap();
    assert_eq!(x + y + again, ROUNDS, "{x} + {y} + {again}");
    for id in &ids {
        assert_eq!(h.a.get(id, None).await.unwrap().state, "expired");
        assert_eq!(count(&h, id, events::REQUEST_EXPIRED).await, 1, "{id}");
    }
    chain_intact(&h).await;
    drop(h.at);
}
}

both! {
/// One user's request for one role sent to both hosts at once: one is live, the other
/// refused as a second live request (or, while the first waits for its MFA, supersedes it) — on PostgreSQL each host's batch locks the user's
/// account, not the store, and the one-live-request rule still holds between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_sent_to_both_hosts_at_once_is_stored_once(backend) {
    let h = hosts(backend).await;
    for i in 0..ROUNDS {
        // A request still waiting for its MFA is superseded by the next (both stored, the
        // first cancelled): one stays live.
        let role = format!("mfa-{i}");
        let (x, y) = tokio::join!(
            h.a.request(JDOE, &role, "race", None, None),
            h.b.request(JDOE, &role, "race", None, None)
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        let mut states = Vec::new();
        for id in [&x.id, &y.id] {
            states.push(h.a.get(id, None).await.unwrap().state);
        }
        states.sort();
        assert_eq!(states, ["cancelled", "pending_mfa"], "{role}");
        for kind in ["auto", "approval"] {
            let role = format!("{kind}-{i}");
            let (x, y) = tokio::join!(
                h.a.request(JDOE, &role, "race", None, None),
                h.b.request(JDOE, &role, "race", None, None)
            );
            let stored: Vec<&RequestView> = [&x, &y].into_iter().filter_map(|r| r.as_ref().ok()).collect();
            assert_eq!(stored.len(), 1, "{role}: {x:?} {y:?}");
            let refused = if x.is_ok() { &y } else { &x };
            let e = refused.as_ref().unwrap_err().to_string();
            assert!(e.contains(&stored[0].id), "the refusal names the live request: {e}");
            assert_eq!(count(&h, &stored[0].id, events::REQUEST_CREATED).await, 1, "{role}");
        }
    }
    chain_intact(&h).await;
}
}
