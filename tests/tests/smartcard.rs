//! Smartcards end to end (issue 31): the daemon with the smartcard provider, the CLI as the
//! card's responder through a real pcscd with vpcd's virtual reader, and a virtual PIV card.

use rolegate_e2e::browser::Browser;
use rolegate_e2e::daemon::{Daemon, call, cli, serve_config};
use rolegate_e2e::pcsc::{Card, CardSpec, KeyType, Pcscd, READERS, TestCa, Usage};
use serde_json::json;

/// A daemon whose role "Domain Admins" (jdoe a candidate) asks the smartcard provider, which
/// trusts `ca` (PEM); jdoe's token.
async fn daemon(ca: &std::path::Path) -> (Daemon, String) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rolegate.toml");
    rolegate_e2e::write_private(
        &cfg,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[[provider]]\nid = \"smartcard\"\nlibrary = \"{}\"\nunpinned = true\n[provider.settings]\nca_files = [\"{}\"]\n",
            rolegate_e2e::smartcard_lib().display(),
            ca.display()
        ),
    );
    let d = serve_config(dir, &cfg);
    let admin = d.admin.clone();
    let (s, v) = call(
        &d,
        Some(&admin),
        "POST",
        "/v1/users",
        Some(json!({"account": "jdoe"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let role = json!({"name": "Domain Admins", "candidates": ["jdoe"], "ttl_s": 1800,
                      "max_ttl_s": 3600, "mfa_enabled": true, "providers": ["smartcard"]});
    let (s, e) = call(&d, Some(&admin), "POST", "/v1/roles", Some(role)).await;
    assert_eq!(s, 201, "{e}");
    let (s, t) = call(
        &d,
        Some(&admin),
        "POST",
        "/v1/tokens",
        Some(json!({"account": "jdoe"})),
    )
    .await;
    assert_eq!(s, 201, "{t}");
    (d, t["token"].as_str().unwrap().to_string())
}

/// `rolegate request new` for "Domain Admins" with the card in slot 0's reader; the PIN
/// lines on standard input.
fn request(d: &Daemon, token: &str, pins: &str) -> (bool, String) {
    request_in(d, token, pins, READERS[0])
}

/// [`request`] with the card in `reader`.
fn request_in(d: &Daemon, token: &str, pins: &str, reader: &str) -> (bool, String) {
    cli(
        d,
        token,
        &[
            "request",
            "new",
            "--role",
            "Domain Admins",
            "--justification",
            "patch night",
            "--reader",
            reader,
            "--card-wait",
            "5",
        ],
        pins,
    )
}

/// Enrolment from the card and activation through pcscd; a wrong PIN (the tries left said,
/// then the right one), a card pulled mid-signature, another card refused, a blocked PIN.
#[tokio::test]
async fn a_piv_card_enrols_and_activates_a_role_through_pcscd() {
    let pki = tempfile::tempdir().unwrap();
    let mut ca = TestCa::new(pki.path(), "Contoso Card CA");
    let jdoe = ca.issue("jdoe", KeyType::P256, Usage::DigitalSignature);
    let other = ca.issue("someone else", KeyType::P256, Usage::DigitalSignature);
    let (d, token) = daemon(&ca.cert_pem).await;
    let pcscd = Pcscd::start();

    let card = Card::insert(&pcscd, CardSpec::new(&jdoe, "123456"));
    let (okay, out) = cli(
        &d,
        &token,
        &[
            "enrol",
            "smartcard",
            "--reader",
            READERS[0],
            "--card-wait",
            "5",
        ],
        "123456\n",
    );
    assert!(okay, "{out}");
    assert!(out.contains("enrolled in `smartcard`"), "{out}");
    assert!(!out.contains("123456"), "the PIN is never shown: {out}");

    let (okay, out) = request(&d, &token, "123456\n");
    assert!(okay && out.contains("is active until"), "{out}");
    let (_, ev) = call(&d, Some(&d.admin), "GET", "/v1/events?id=103", None).await;
    let msg = ev[0]["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("CN=jdoe") && msg.contains("SHA-256"), "{msg}");
    // Closed, so that the role may be asked again (one live activation per user and role).
    rolegate_e2e::daemon::close_active(&d, &token, "Domain Admins").await;

    // A wrong PIN: the tries left are said, nothing is sent, and the request still waits;
    // `rolegate request answer` completes it with the right PIN.
    let (okay, out) = request(&d, &token, "000000\n");
    assert!(
        !okay && out.contains("wrong PIN") && out.contains("2 tries left"),
        "{out}"
    );
    let pending = out
        .split("(request ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_default()
        .to_string();
    let (okay, out) = cli(
        &d,
        &token,
        &[
            "request",
            "answer",
            &pending,
            "--reader",
            READERS[0],
            "--card-wait",
            "5",
        ],
        "123456\n",
    );
    assert!(okay && out.contains("is active until"), "{out}");
    rolegate_e2e::daemon::close_active(&d, &token, "Domain Admins").await;

    // The card pulled mid-signature (in the second reader: vpcd takes a while to offer a
    // reader again after a card vanished in the middle of a command).
    card.remove();
    let mut spec = CardSpec::new(&jdoe, "123456");
    spec.die_on_sign = true;
    spec.slot = 1;
    let pulled = Card::insert(&pcscd, spec);
    let (okay, out) = request_in(&d, &token, "123456\n", READERS[1]);
    assert!(!okay && out.to_lowercase().contains("removed"), "{out}");
    drop(pulled);

    // Another card (its own certificate from the same CA): not the one enrolled.
    let theirs = Card::insert(&pcscd, CardSpec::new(&other, "123456"));
    let (okay, out) = request(&d, &token, "123456\n");
    assert!(!okay && out.contains("is not the one enrolled"), "{out}");
    theirs.remove();

    // A blocked PIN: one try left, a wrong PIN, and the card says so.
    let mut spec = CardSpec::new(&jdoe, "123456");
    spec.retries = Some(1);
    let blocked = Card::insert(&pcscd, spec);
    let (okay, out) = request(&d, &token, "000000\n123456\n");
    assert!(!okay && out.to_lowercase().contains("blocked"), "{out}");
    blocked.remove();

    // The web page cannot reach the reader: its smartcard prompt gives the command that
    // answers it, and it follows the request while the terminal answers.
    let _card = Card::insert(&pcscd, CardSpec::new(&jdoe, "123456"));
    let b = Browser::start().await;
    // The console's request screen, the role picked from My roles' link.
    b.sign_in(&format!("{}/#/activate/Domain%20Admins", d.url), &token)
        .await;
    b.wait_for(
        "return document.getElementById('role').value === 'Domain Admins'",
        "the role picked",
    )
    .await;
    b.type_into("#justification", "from the page").await;
    b.click("#request-form button[type=submit]").await;
    b.wait_for(
        "return document.getElementById('mfa-message').textContent.includes('rolegate request answer ')",
        "the smartcard prompt's command",
    )
    .await;
    let said = b.text("#mfa-message").await;
    assert!(
        said.contains("from the page"),
        "the facts to approve: {said}"
    );
    let id = said
        .split("rolegate request answer ")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string();
    let (okay, out) = cli(
        &d,
        &token,
        &[
            "request",
            "answer",
            &id,
            "--reader",
            READERS[0],
            "--card-wait",
            "5",
        ],
        "123456\n",
    );
    assert!(okay && out.contains("is active until"), "{out}");
    b.wait_for(
        "return document.getElementById('request-result').textContent.includes(' is active until ')",
        "the page following the request to its activation",
    )
    .await;
}
