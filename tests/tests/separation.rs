//! Separation of duties and lockout under every spelling and every order (issue 26): one
//! identity rule for every comparison, no look-alike accounts, no self-approval, nothing done
//! by a disabled user, lockout counted per account and provider across requests and checked
//! at every answer, provider faults never counted. Every test on SQLite and PostgreSQL.

use std::sync::Arc;

use rolegate::Error;
use rolegate::model::clock::{Clock as _, ManualClock};
use rolegate::records::events::{self, Filter};
use rolegate::records::roles::{self, RoleSpec};
use rolegate::records::users::{self, NewUser, UserChanges, UserRules};
use rolegate::service::{RequestView, Service, Settings};
use rolegate::store::secrets::SealingKey;
use rolegate_e2e::both;
use rolegate_e2e::stores::{Backend, Location};
use rolegate_e2e::{hello_lib, misbehave_lib};
use rolegate_sdk::Input;

const T0: &str = "2026-11-26T10:00:00Z";
const ASA: &str = "CONTOSO\\Åsa";
const BOSS: &str = "CONTOSO\\boss";

struct World {
    _at: Location,
    service: Arc<Service>,
    clock: Arc<ManualClock>,
}

/// hello, and two misbehaving providers: `down` (its service is down at every start) and
/// `flaky` (asks, then fails every answer).
async fn world_with(backend: Backend, settings: Settings) -> World {
    let at = Location::new(backend);
    let mut down = rolegate_e2e::provider_config("down", misbehave_lib(), "in-process");
    down.settings.insert("mode".into(), "outage".into());
    let mut flaky = rolegate_e2e::provider_config("flaky", misbehave_lib(), "in-process");
    flaky.settings.insert("mode".into(), "outage-answer".into());
    let hello = rolegate_e2e::provider_config("hello", hello_lib(), "in-process");
    let providers = rolegate_e2e::load_providers(vec![hello, down, flaky])
        .await
        .unwrap();
    let clock = Arc::new(ManualClock::new(T0.parse().unwrap()));
    let store = Arc::new(at.open().await);
    let key = Arc::new(SealingKey::load_or_create(&at.path().join("rolegate.key")).unwrap());
    let service = Service::new(
        store,
        Arc::new(providers),
        Arc::clone(&clock) as Arc<dyn rolegate::model::clock::Clock>,
        key,
        settings,
    );
    service
        .store()
        .write(|tx| {
            rolegate_e2e::create_users(tx, &[ASA, BOSS])?;
            // Ten more MFA roles: one live request per user and role, and the lockout test
            // opens ten at once.
            let more: Vec<(String, Option<&str>, bool)> = (0..10)
                .map(|i| (format!("mfa-{i}"), Some("hello"), false))
                .collect();
            for (name, provider, approval) in [
                ("approval".to_string(), None, true),
                ("mfa".to_string(), Some("hello"), false),
                ("down".to_string(), Some("down"), false),
                ("flaky".to_string(), Some("flaky"), false),
            ]
            .into_iter()
            .chain(more)
            {
                roles::create(
                    tx,
                    &RoleSpec {
                        name,
                        // The candidate is written in another spelling than the user.
                        candidates: ["contoso\\ÅSA".to_string(), BOSS.to_string()].into(),
                        approvers: ["CONTOSO\\A\u{30a}sa".to_string(), BOSS.to_string()].into(),
                        ttl_s: 3600,
                        max_ttl_s: 7200,
                        availability: None,
                        justification_required: false,
                        approval_enabled: approval,
                        mfa_enabled: provider.is_some(),
                        providers: provider.map(String::from).into_iter().collect(),
                        when_factor_down: Default::default(),
                        shadow: Vec::new(),
                    },
                    0,
                )?;
            }
            Ok(())
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

/// hello's right answer: the digits its prompt shows, reversed.
fn right(view: &RequestView) -> Input {
    let message = view.prompt.as_ref().unwrap()["message"].as_str().unwrap();
    let digits = message.split(' ').nth(1).unwrap();
    Input::Code {
        code: digits.chars().rev().collect(),
    }
}

fn wrong(view: &RequestView) -> Input {
    let Input::Code { code } = right(view) else {
        unreachable!()
    };
    Input::Code {
        code: code
            .chars()
            .map(|c| if c == '1' { '2' } else { '1' })
            .collect(),
    }
}

async fn events_of(w: &World, account: &str, id: Option<i64>) -> Vec<events::Event> {
    let f = Filter {
        account: Some(account.into()),
        id,
        ..Default::default()
    };
    w.service
        .store()
        .read(move |tx| events::list(tx, &f))
        .await
        .unwrap()
}

async fn failures(w: &World, provider: &str) -> (i64, Option<i64>) {
    let p = provider.to_string();
    let rows = w
        .service
        .store()
        .read(move |tx| {
            tx.query(
                "SELECT failures, locked_until FROM lockouts WHERE provider = $1",
                &[p.into()],
            )
        })
        .await
        .unwrap();
    match rows.first() {
        None => (0, None),
        Some(r) => (
            r.int(0).unwrap(),
            match r.0.get(1) {
                Some(rolegate::store::Value::Int(t)) => Some(*t),
                _ => None,
            },
        ),
    }
}

both! {
#[tokio::test]
async fn nobody_approves_their_own_request_under_any_spelling(backend) {
    let w = world(backend).await;
    // The candidate list spells her `contoso\ÅSA`, the approvers decomposed `A` + ring.
    let v = w.service.request(ASA, "approval", "x", None, None).await.unwrap();
    assert_eq!(v.state, "pending_approval");
    for me in [ASA, "contoso\\åsa", "CONTOSO\\A\u{30a}SA", "  CONTOSO\\\u{212b}sa "] {
        let e = w.service.approve(&v.id, me).await.unwrap_err();
        assert!(
            matches!(e, Error::Refused(rolegate::model::role::Refusal::SelfApproval { .. })),
            "{me}: {e}"
        );
        let e = w.service.reject(&v.id, me, None).await.unwrap_err();
        assert!(e.to_string().contains("cannot approve their own request"), "{e}");
    }
    // She sees nothing to approve; the boss sees it, approves, and it is active.
    assert!(w.service.pending_approvals("contoso\\ÅSA").await.unwrap().is_empty());
    assert_eq!(w.service.pending_approvals(BOSS).await.unwrap().len(), 1);
    let a = w.service.approve(&v.id, BOSS).await.unwrap();
    assert_eq!(a.state, "active");
    // Her history under any spelling is one history.
    let ids: Vec<i64> = events_of(&w, "CONTOSO\\ÅSA", None).await.iter().map(|e| e.id).collect();
    assert!(ids.contains(&events::REQUEST_CREATED) && ids.contains(&events::REQUEST_ACTIVATED), "{ids:?}");
    assert_eq!(
        events_of(&w, "contoso\\a\u{30a}sa", None).await.len(),
        ids.len()
    );
}
}

both! {
#[tokio::test]
async fn a_disabled_approver_approves_nothing(backend) {
    let w = world(backend).await;
    let v = w.service.request(ASA, "approval", "x", None, None).await.unwrap();
    let set_enabled = |account: &'static str, enabled: bool| {
        let s = Arc::clone(&w.service);
        async move {
            s.store()
                .write(move |tx| {
                    users::update(
                        tx,
                        account,
                        UserChanges {
                            enabled: Some(enabled),
                            ..Default::default()
                        },
                        1,
                        "admin",
                        1,
                    )
                })
                .await
                .unwrap();
        }
    };
    set_enabled(BOSS, false).await;
    let e = w.service.approve(&v.id, "contoso\\BOSS").await.unwrap_err();
    assert!(e.to_string().contains("not an enabled rolegate user"), "{e}");
    let e = w.service.reject(&v.id, BOSS, Some("no")).await.unwrap_err();
    assert!(e.to_string().contains("not an enabled rolegate user"), "{e}");
    assert_eq!(w.service.get(&v.id, None).await.unwrap().state, "pending_approval");
    // Nor is a disabled requester's request granted (it may still be rejected).
    set_enabled(BOSS, true).await;
    set_enabled(ASA, false).await;
    let e = w.service.approve(&v.id, BOSS).await.unwrap_err();
    assert!(e.to_string().contains("`contoso\\åsa` is not an enabled rolegate user"), "{e}");
    assert_eq!(w.service.get(&v.id, None).await.unwrap().state, "pending_approval");
    set_enabled(ASA, true).await;
    // A removed approver approves nothing either.
    w.service.store().write(|tx| users::remove(tx, BOSS)).await.unwrap();
    let e = w.service.approve(&v.id, BOSS).await.unwrap_err();
    assert!(e.to_string().contains("not an enabled rolegate user"), "{e}");
    assert_eq!(w.service.get(&v.id, None).await.unwrap().state, "pending_approval");
}
}

both! {
#[tokio::test]
async fn lockout_counts_wrong_answers_across_requests_and_stops_every_open_one(backend) {
    let w = world_with(backend, Settings {
        lockout_threshold: 5,
        max_wrong_answers: 3,
        ..Default::default()
    })
    .await;
    // Ten requests (of ten roles: one live per user and role) opened before any answer, each
    // spelled another way.
    let spellings = [ASA, "contoso\\åsa", "CONTOSO\\ÅSA", "CONTOSO\\A\u{30a}sa", "CONTOSO\\\u{212b}sa"];
    let mut open = Vec::new();
    for i in 0..10 {
        let role = format!("mfa-{i}");
        open.push(w.service.request(spellings[i % 5], &role, "x", None, None).await.unwrap());
    }
    // Wrong answers, three per request, until the answers stop being judged.
    let mut judged = 0;
    let mut refused = 0;
    for (i, v) in open.iter().enumerate() {
        for _ in 0..3 {
            match w.service.answer(&v.id, spellings[(i + 1) % 5], wrong(v)).await {
                Ok(r) => {
                    judged += 1;
                    assert_ne!(r.state, "active");
                }
                Err(e) => {
                    refused += 1;
                    let m = e.to_string();
                    assert!(
                        m.contains("locked out") || m.contains("is failed, not waiting for MFA"),
                        "{m}"
                    );
                }
            }
        }
    }
    assert_eq!(judged, 5, "exactly the threshold's wrong answers are judged");
    assert_eq!(refused, 25);
    assert_eq!(events_of(&w, ASA, Some(events::LOCKED_OUT)).await.len(), 1);
    // Every request opened before the lockout is over, and a right answer activates none.
    for v in &open {
        let e = w.service.answer(&v.id, ASA, right(v)).await.unwrap_err();
        assert!(!e.to_string().is_empty());
        assert_ne!(w.service.get(&v.id, None).await.unwrap().state, "active");
    }
    // No new request either, under any spelling.
    let e = w.service.request("contoso\\ÅSA", "mfa", "x", None, None).await.unwrap_err();
    assert!(e.to_string().contains("locked out until"), "{e}");
    // Past the lockout the user is welcome again.
    w.clock.advance(jiff::SignedDuration::from_mins(16));
    let v = w.service.request(ASA, "mfa", "x", None, None).await.unwrap();
    let r = w.service.answer(&v.id, ASA, right(&v)).await.unwrap();
    assert_eq!(r.state, "active");
}
}

both! {
#[tokio::test]
async fn a_lockout_set_while_an_answer_was_judged_refuses_a_right_answer(backend) {
    let w = world(backend).await;
    let v = w.service.request(ASA, "mfa", "x", None, None).await.unwrap();
    // Another host's wrong answers lock the account out (a bare statement, as another writer).
    let until = w.clock.now().as_millisecond() + 60_000;
    let key = users::account_key(ASA);
    w.service
        .store()
        .write(move |tx| {
            tx.execute(
                "INSERT INTO lockouts (account_key, provider, failures, locked_until) VALUES ($1, 'hello', 0, $2)",
                &[key.into(), rolegate::store::Value::Int(until)],
            )
        })
        .await
        .unwrap();
    let right_answer = w.service.answer(&v.id, ASA, right(&v)).await.unwrap_err();
    let wrong_answer = w.service.answer(&v.id, ASA, wrong(&v)).await.unwrap_err();
    // The same refusal whatever the answer: a lockout is no oracle.
    assert_eq!(right_answer.to_string(), wrong_answer.to_string());
    assert!(right_answer.to_string().contains("locked out until"), "{right_answer}");
    let stored = w.service.get(&v.id, None).await.unwrap();
    assert_eq!(stored.state, "pending_mfa", "nothing of a refused answer stays");
    assert_eq!(failures(&w, "hello").await.0, 0, "a refused answer counts nowhere");
}
}

both! {
#[tokio::test]
async fn provider_faults_never_count_against_the_user(backend) {
    let w = world_with(backend, Settings {
        lockout_threshold: 2,
        ..Default::default()
    })
    .await;
    for _ in 0..6 {
        // An outage when the challenge starts.
        let v = w.service.request(ASA, "down", "x", None, None).await.unwrap();
        assert_eq!(v.state, "failed");
        let reason = v.reason.unwrap();
        assert!(reason.contains("the factor `down` is unavailable"), "{reason}");
        assert!(reason.contains("try again later, or choose another factor"), "{reason}");
        assert!(!reason.contains("503"), "the user hears no detail: {reason}");
        // An outage when the answer comes.
        let v = w.service.request(ASA, "flaky", "x", None, None).await.unwrap();
        assert_eq!(v.state, "pending_mfa");
        let r = w
            .service
            .answer(&v.id, ASA, Input::Code { code: "1234".into() })
            .await
            .unwrap();
        assert_eq!(r.state, "failed");
        assert!(r.reason.unwrap().contains("the factor `flaky` is unavailable"));
    }
    assert_eq!(failures(&w, "down").await, (0, None));
    assert_eq!(failures(&w, "flaky").await, (0, None));
    assert!(events_of(&w, ASA, Some(events::LOCKED_OUT)).await.is_empty());
    // The admin reads what failed in event 101.
    let failed = events_of(&w, ASA, Some(events::MFA_NOT_COMPLETED)).await;
    assert_eq!(failed.len(), 12);
    for e in &failed {
        assert!(e.message.contains("HTTP 503 (outage)"), "{}", e.message);
        assert!(e.message.contains("not counted as the user's failure"), "{}", e.message);
    }
    // The provider is back for a user who was never locked out.
    let v = w.service.request(ASA, "mfa", "x", None, None).await.unwrap();
    assert_eq!(w.service.answer(&v.id, ASA, right(&v)).await.unwrap().state, "active");
}
}

both! {
#[tokio::test]
async fn look_alike_accounts_and_hidden_characters_are_refused(backend) {
    let w = world(backend).await;
    let create = |account: &str, allow: bool| {
        let s = Arc::clone(&w.service);
        let account = account.to_string();
        async move {
            s.store()
                .write(move |tx| {
                    users::create(
                        tx,
                        NewUser {
                            account,
                            ..Default::default()
                        },
                        UserRules {
                            allow_lookalike: allow,
                            ..UserRules::from(1)
                        },
                        0,
                    )
                })
                .await
        }
    };
    create("CONTOSO\\jdoe", false).await.unwrap();
    create("CONTOSO\\kate", false).await.unwrap();
    for (fake, resembles) in [
        ("CONTOSO\\jd\u{3bf}e", "mixes scripts"),       // Greek omicron
        ("CONTOSO\\jdo\u{435}", "mixes scripts"),       // Cyrillic ie
        ("CONTOSO\u{2216}jdoe", "looks like the existing user `CONTOSO\\jdoe`"),
        ("CONTOSO\\jd\u{200b}oe", "U+200B"),            // zero-width space
        ("CONTOSO\\jdoe\u{202e}", "U+202E"),            // right-to-left override
        ("CONTOSO\\ｊｄｏｅ", "exists already"),        // fullwidth: the same account
        ("CONTOSO\\\u{212a}ate", "exists already"),     // Kelvin sign: the same account as kate
        ("contoso\\JDOE", "exists already"),
    ] {
        let e = create(fake, false).await;
        let e = e.expect_err(fake);
        assert!(e.to_string().contains(resembles), "{fake:?}: {e}");
        assert!(!e.to_string().contains('\u{202e}'), "{e}");
    }
    // A script mix an admin checked letter by letter may be allowed; still not a hidden one.
    create("CONTOSO\\jd\u{3bf}e", true).await.unwrap();
    assert!(create("CONTOSO\\j\u{200b}doe", true).await.is_err());
    let all = w.service.store().read(|tx| users::list(tx)).await.unwrap();
    let names: Vec<&str> = all.iter().map(|u| u.account.as_str()).collect();
    assert!(names.contains(&"CONTOSO\\jd\u{3bf}e"), "{names:?}");
    assert!(!names.iter().any(|n| n.contains('\u{200b}') || n.contains('\u{202e}')), "{names:?}");
}
}

both! {
#[tokio::test]
async fn free_text_is_bounded_and_names_say_what_they_show(backend) {
    let w = world(backend).await;
    // A justification over its limit is refused by name; nothing is stored.
    let long = "x".repeat(900_000);
    let e = w.service.request(ASA, "mfa", &long, None, None).await.unwrap_err();
    let m = e.to_string();
    assert!(m.contains("`justification` has 900000 characters; the limit is 1024"), "{}", &m[..m.len().min(300)]);
    assert!(w.service.requests_of(ASA, 10).await.unwrap().is_empty());
    // A rejection's reason too.
    let v = w.service.request(ASA, "approval", "x", None, None).await.unwrap();
    let e = w.service.reject(&v.id, BOSS, Some(&"r".repeat(513))).await.unwrap_err();
    assert!(e.to_string().contains("`reason` has 513 characters; the limit is 512"), "{e}");
    // A display name of 500 KB.
    let e = w
        .service
        .store()
        .write(|tx| {
            users::create(
                tx,
                NewUser {
                    account: "CONTOSO\\big".into(),
                    display_name: "d".repeat(500_000),
                    ..Default::default()
                },
                1,
                0,
            )
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("at most 256 characters"), "{e}");
    // Role names: NUL, a newline, a bidi override, surrounding spaces, a look-alike of a role.
    for (name, why) in [
        ("ops\u{0}", "U+0000"),
        ("ops\nadmins", "U+000A"),
        ("ops\u{202e}", "U+202E"),
        (" ops ", "white space"),
        ("MFA", "looks like the existing role `mfa`"),
    ] {
        let spec = RoleSpec {
            name: name.into(),
            candidates: [ASA.to_string()].into(),
            approvers: Default::default(),
            ttl_s: 60,
            max_ttl_s: 60,
            availability: None,
            justification_required: false,
            approval_enabled: false,
            mfa_enabled: false,
            providers: vec![],
            when_factor_down: Default::default(),
            shadow: Vec::new(),
        };
        let e = w
            .service
            .store()
            .write(move |tx| roles::create(tx, &spec, 0))
            .await
            .unwrap_err();
        assert!(e.to_string().contains(why), "{name:?}: {e}");
    }
    let n = w.service.store().read(|tx| roles::list(tx)).await.unwrap().len();
    assert_eq!(n, 14, "nothing was stored");
}
}

/// A small deterministic generator (xorshift), so that a failure names its seed.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

/// Letters with the spellings that fold to them: case, decomposed, compatibility forms.
const LETTERS: &[&[&str]] = &[
    &["a", "A", "ａ", "Ａ"],
    &["å", "Å", "a\u{30a}", "A\u{30a}", "\u{212b}"],
    &["é", "É", "e\u{301}", "E\u{301}", "ｅ\u{301}"],
    &["k", "K", "\u{212a}", "ｋ"],
    &["ss", "SS", "ß", "sS", "ẞ"],
    &["ö", "Ö", "o\u{308}", "O\u{308}"],
    &["σ", "Σ", "ς"],
    &["и", "И"],
    &["fi", "ﬁ", "FI", "Fi"],
    &["1", "１"],
    &["n", "N", "ｎ"],
];

/// A look-alike for a Latin letter from another script (for the confusable pairs).
const CONFUSABLES: &[(char, char)] = &[
    ('a', '\u{430}'),
    ('e', '\u{435}'),
    ('o', '\u{3bf}'),
    ('p', '\u{440}'),
    ('c', '\u{441}'),
    ('x', '\u{445}'),
];

/// Two spellings of one random account: each letter (of `letters`) drawn from its spellings
/// twice.
fn spelling_pair(g: &mut Gen, letters: &[&[&str]]) -> (String, String) {
    let (mut a, mut b) = ("CONTOSO\\".to_string(), "contoso\\".to_string());
    let n = 3 + g.next() % 6;
    for _ in 0..n {
        let letter = g.pick(letters);
        a.push_str(g.pick(letter));
        b.push_str(g.pick(letter));
    }
    (a, b)
}

#[test]
fn generated_spellings_of_one_account_are_one_account_and_confusables_share_a_skeleton() {
    let mut g = Gen(0x5eed_1d3a_7e11_0001);
    for case in 0..2_000 {
        let (a, b) = spelling_pair(&mut g, LETTERS);
        let ka = users::account_key(&a);
        assert_eq!(ka, users::account_key(&b), "case {case}: {a:?} ~ {b:?}");
        assert_eq!(
            users::account_key(&ka),
            ka,
            "case {case}: the key is its own key"
        );
        assert!(users::same_account(&a, &b));
        assert_eq!(
            rolegate::model::identity::skeleton(&a),
            rolegate::model::identity::skeleton(&b)
        );
        // A role listing one spelling admits and hears the other, and refuses it as its own
        // approver.
        let role = RoleSpec {
            name: "r".into(),
            candidates: [a.clone()].into(),
            approvers: [a.clone()].into(),
            ttl_s: 60,
            max_ttl_s: 60,
            availability: None,
            justification_required: false,
            approval_enabled: true,
            mfa_enabled: false,
            providers: vec![],
            when_factor_down: Default::default(),
            shadow: Vec::new(),
        }
        .to_role()
        .unwrap();
        assert!(role.is_candidate(&b) && role.is_approver(&b), "case {case}");
        assert!(
            role.check_approver(&b, &a).is_err(),
            "case {case}: self-approval"
        );
        // Swapping one Latin letter for its look-alike makes another key, the same skeleton.
        let plain: String = (0..6)
            .map(|_| g.pick(&['a', 'e', 'o', 'p', 'c', 'x', 'n', 't']))
            .collect();
        let (from, to) = g.pick(CONFUSABLES);
        let real = format!("CONTOSO\\{from}{plain}");
        let fake = format!("CONTOSO\\{to}{plain}");
        assert_ne!(
            users::account_key(&real),
            users::account_key(&fake),
            "case {case}"
        );
        assert_eq!(
            rolegate::model::identity::skeleton(&real),
            rolegate::model::identity::skeleton(&fake),
            "case {case}: {real:?} ~ {fake:?}"
        );
    }
}

both! {
#[tokio::test]
async fn generated_spellings_count_as_one_account_in_the_store(backend) {
    // Through a real store: each generated pair creates one user (the second is a conflict),
    // and a confusable of it is refused, naming it.
    let w = world(backend).await;
    let mut g = Gen(0x0bad_cafe_0000_0007);
    let mut made = 0;
    for case in 0..40 {
        // Latin letters only: a name that mixes scripts is refused before its key is compared.
        let (a, b) = spelling_pair(&mut g, &LETTERS[..6]);
        let (a2, b2) = (a.clone(), b.clone());
        let first = w
            .service
            .store()
            .write(move |tx| users::create(tx, NewUser { account: a2, ..Default::default() }, 1, 0))
            .await;
        if first.is_err() {
            continue; // an earlier case made the same account
        }
        made += 1;
        let e = w
            .service
            .store()
            .write(move |tx| users::create(tx, NewUser { account: b2, ..Default::default() }, 1, 0))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("exists already"), "case {case}: {a:?} ~ {b:?}: {e}");
        let found = w
            .service
            .store()
            .read(move |tx| users::get(tx, &b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.account, a, "case {case}");
    }
    assert!(made >= 20, "{made}");
    // The first pairs made: requests and answers under either spelling count for one account
    // (one lockout count, one history), and a self-approval under the other is refused.
    let pairs: Vec<(String, String)> = {
        let mut g = Gen(0x0bad_cafe_0000_0007);
        (0..40).map(|_| spelling_pair(&mut g, &LETTERS[..6])).take(5).collect()
    };
    let candidates: std::collections::BTreeSet<String> = pairs.iter().map(|(a, _)| a.clone()).collect();
    let role = RoleSpec {
        name: "generated".into(),
        candidates: candidates.clone(),
        approvers: candidates,
        ttl_s: 60,
        max_ttl_s: 60,
        availability: None,
        justification_required: false,
        approval_enabled: true,
        mfa_enabled: true,
        providers: vec!["hello".into()],
        when_factor_down: Default::default(),
        shadow: Vec::new(),
    };
    w.service.store().write(move |tx| roles::create(tx, &role, 0)).await.unwrap();
    for (case, (a, b)) in pairs.iter().enumerate() {
        let Some(user) = w.service.store().read({
            let a = a.clone();
            move |tx| users::get(tx, &a)
        }).await.unwrap() else {
            continue;
        };
        let v = w.service.request(b, "generated", "x", None, None).await.unwrap();
        let r = w.service.answer(&v.id, a, wrong(&v)).await.unwrap();
        assert_eq!(r.state, "pending_mfa", "case {case}");
        let key = users::account_key(&user.account);
        let counted = w
            .service
            .store()
            .read(move |tx| tx.query("SELECT failures FROM lockouts WHERE account_key = $1 AND provider = 'hello'", &[key.into()]))
            .await
            .unwrap();
        assert_eq!(counted[0].int(0).unwrap(), 1, "case {case}: one count under both spellings");
        let r = w.service.answer(&v.id, b, right(&v)).await.unwrap();
        assert_eq!(r.state, "pending_approval", "case {case}");
        let e = w.service.approve(&v.id, a).await.unwrap_err();
        assert!(e.to_string().contains("cannot approve their own request"), "case {case}: {e}");
        let by_a: Vec<i64> = events_of(&w, a, None).await.iter().map(|e| e.seq).collect();
        let by_b: Vec<i64> = events_of(&w, b, None).await.iter().map(|e| e.seq).collect();
        assert_eq!(by_a, by_b, "case {case}: one history");
        assert!(by_a.len() >= 2, "case {case}: {by_a:?}");
    }
    // Confusables of an existing Latin account.
    w.service
        .store()
        .write(|tx| users::create(tx, NewUser { account: "CONTOSO\\paco".into(), ..Default::default() }, 1, 0))
        .await
        .unwrap();
    for (from, to) in CONFUSABLES.iter().filter(|(f, _)| "paco".contains(*f)) {
        let fake = format!("CONTOSO\\{}", "paco".replacen(*from, &to.to_string(), 1));
        let e = w
            .service
            .store()
            .write(move |tx| users::create(tx, NewUser { account: fake, ..Default::default() }, 1, 0))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("mixes scripts") || e.to_string().contains("`CONTOSO\\paco`"), "{e}");
    }
}
}

both! {
#[tokio::test]
async fn a_token_speaks_only_for_an_enabled_user(backend) {
    use rolegate::records::tokens;
    let w = world(backend).await;
    let now = w.clock.now().as_millisecond();
    let (user, admin, first) = w
        .service
        .store()
        .write(move |tx| {
            Ok((
                tokens::issue(tx, "contoso\\ÅSA", false, "laptop", now)?,
                tokens::issue(tx, BOSS, true, "admin", now)?,
                tokens::issue(tx, "admin", true, "first admin", now)?,
            ))
        })
        .await
        .unwrap();
    let verify = |token: String| {
        let s = Arc::clone(&w.service);
        async move {
            s.store()
                .read(move |tx| tokens::verify(tx, &token, now))
                .await
        }
    };
    let caller = verify(user.clone()).await.unwrap().unwrap();
    assert!(users::same_account(&caller.account, ASA));
    for (account, enabled) in [(ASA, false), (BOSS, false)] {
        w.service
            .store()
            .write(move |tx| {
                users::update(tx, account, UserChanges { enabled: Some(enabled), ..Default::default() }, 1, "admin", 1)
            })
            .await
            .unwrap();
    }
    // A disabled user's token, an admin's too, is refused, saying why.
    for token in [user.clone(), admin.clone()] {
        let e = verify(token).await.unwrap_err();
        assert!(e.to_string().contains("not an enabled rolegate user"), "{e}");
    }
    // The first admin is no user: its token stays valid.
    assert!(verify(first).await.unwrap().unwrap().admin);
    // A removed user's token does nothing either.
    w.service.store().write(|tx| users::remove(tx, "CONTOSO\\åsa")).await.unwrap();
    assert!(verify(user).await.is_err());
}
}

both! {
#[tokio::test]
async fn a_disabled_or_removed_account_holds_and_waits_for_nothing(backend) {
    let w = world(backend).await;
    let pending = w.service.request(ASA, "approval", "x", None, None).await.unwrap();
    let v = w.service.request(ASA, "mfa", "x", None, None).await.unwrap();
    let active = w.service.answer(&v.id, ASA, right(&v)).await.unwrap();
    assert_eq!(active.state, "active");
    let n = w
        .service
        .store()
        .write(|tx| rolegate::service::end_access(tx, "contoso\\ÅSA", "`CONTOSO\\Åsa` was disabled by `admin`", 5))
        .await
        .unwrap();
    assert_eq!(n, 2);
    let closed = w.service.get(&active.id, None).await.unwrap();
    assert_eq!((closed.state.as_str(), closed.reason.as_deref()), ("closed", Some("`CONTOSO\\Åsa` was disabled by `admin`")));
    assert_eq!(w.service.get(&pending.id, None).await.unwrap().state, "cancelled");
    let ended = events_of(&w, ASA, Some(events::REQUEST_CLOSED)).await;
    assert_eq!(ended.len(), 2);
    // Nothing left to end: a second call ends nothing.
    let n = w
        .service
        .store()
        .write(|tx| rolegate::service::end_access(tx, ASA, "again", 6))
        .await
        .unwrap();
    assert_eq!(n, 0);
}
}
