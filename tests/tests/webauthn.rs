//! WebAuthn end to end (issue 30): the daemon with the webauthn provider, its page in real
//! headless Chromium with virtual authenticators (Chrome's DevTools WebAuthn domain, through
//! WebDriver): a platform authenticator with user verification as Windows Hello presents
//! itself, and a USB security key; beside the legacy phone call for the migration.

use rolegate_e2e::browser::Browser;
use rolegate_e2e::daemon::{Daemon, call, cli, serve_config};
use serde_json::{Value, json};

/// The AAGUID Chrome's virtual authenticators attest (packed self attestation): this test's
/// stand-in for a Windows Hello AAGUID in the provider's allow-list.
const VIRTUAL_AAGUID: &str = "01020304-0506-0708-0102-030405060708";

/// A daemon on `port` (the page's origin is `http://localhost:port`, which the provider's
/// settings name) with the WebAuthn profiles `windows-hello` and `security-key`, and the
/// legacy phone provider `phone-legacy` against a scripted PhoneFactor double. The first
/// admin token is in `Daemon::admin`; keep the double and its PKI folder alive with it.
fn daemon(
    port: u16,
    windows_hello_aaguids: &str,
) -> (Daemon, rolegate_e2e::phonefactor::Double, tempfile::TempDir) {
    use rolegate_e2e::phonefactor::{Double, deployment, pki, scripted};
    let pki_dir = tempfile::tempdir().unwrap();
    pki(pki_dir.path());
    let double = Double::start(pki_dir.path(), scripted);
    let s = deployment(pki_dir.path(), double.port);
    let lib = rolegate_e2e::webauthn_lib();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("rolegate.toml");
    rolegate_e2e::write_private(
        &cfg,
        &format!(
            r#"[server]
listen = "127.0.0.1:{port}"

[[provider]]
id = "windows-hello"
library = "{lib}"
unpinned = true
[provider.settings]
profile = "windows-hello"
rp_id = "localhost"
rp_name = "Contoso PAM (test)"
origins = ["http://localhost:{port}"]
{windows_hello_aaguids}

[[provider]]
id = "security-key"
library = "{lib}"
unpinned = true
[provider.settings]
profile = "security-key"
rp_id = "localhost"
origins = ["http://localhost:{port}"]
user_verification = "discouraged"

[[provider]]
id = "phone-legacy"
library = "{phone}"
unpinned = true
[provider.settings]
mfa_settings = "{mfa}"
ca_file = "{ca}"
endpoints = ["{endpoint}"]
call_timeout_s = 10
"#,
            lib = lib.display(),
            phone = rolegate_e2e::legacy_phone_lib().display(),
            mfa = s["mfa_settings"].as_str().unwrap(),
            ca = s["ca_file"].as_str().unwrap(),
            endpoint = s["endpoints"][0].as_str().unwrap(),
        ),
    );
    (serve_config(dir, &cfg), double, pki_dir)
}

/// Creates jdoe (the scripted PhoneFactor user who answers) and the roles: "Domain Admins"
/// accepts Windows Hello or the phone call, "Key only" a security key, "Phone only" the call.
/// Returns jdoe's token.
async fn setup(d: &Daemon) -> String {
    let admin = d.admin.clone();
    let (s, v) = call(
        d,
        Some(&admin),
        "POST",
        "/v1/users",
        Some(json!({"account": "jdoe", "display_name": "Jane Doe", "phone": "+1 425 555 0001"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    for (name, providers) in [
        ("Domain Admins", json!(["windows-hello", "phone-legacy"])),
        ("Key only", json!(["security-key"])),
        ("Phone only", json!(["phone-legacy"])),
    ] {
        let role = json!({"name": name, "candidates": ["jdoe"], "ttl_s": 1800, "max_ttl_s": 3600,
                          "mfa_enabled": true, "providers": providers});
        let (s, e) = call(d, Some(&admin), "POST", "/v1/roles", Some(role)).await;
        assert_eq!(s, 201, "{e}");
    }
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

/// Enrols in `provider` from the console's Enrol screen, naming the credential `label`; the
/// text the page shows beside the enrolment when it is over (the result, or the error).
async fn enrol(b: &Browser, provider: &str, label: &str) -> String {
    b.eval("location.hash = '#/enrol'; return true").await;
    b.wait_for(
        &format!("return !!document.querySelector('#enrol-provider option[value=\"{provider}\"]')"),
        "the providers that need enrolment",
    )
    .await;
    b.eval(&format!(
        "document.getElementById('enrol-provider').value = '{provider}'; document.getElementById('enrol-result').textContent = ''; return true"
    ))
    .await;
    b.click("#enrol-form button[type=submit]").await;
    b.wait_for(
        "return !document.getElementById('enrol-webauthn').hidden",
        "the WebAuthn enrolment step",
    )
    .await;
    b.type_into("#enrol-label", label).await;
    b.click("#enrol-webauthn-go").await;
    b.wait_for(ENROL_OVER, "the enrolment's end").await;
    b.text("#enrol-result").await
}

/// The enrolment's status line says how it ended (not that it is under way).
const ENROL_OVER: &str = "const s = document.getElementById('enrol-result').classList; return s.contains('ok') || s.contains('err')";

/// Requests `role` with `provider` from the console's request screen (the role preselected
/// by its link) and confirms with the authenticator; what the page says of the request in
/// the end (or the refusal beside the form or the prompt).
async fn activate(b: &Browser, role: &str, provider: &str, justification: &str) -> String {
    b.eval(&format!(
        "location.hash = '#/activate/' + encodeURIComponent({}); return true",
        json!(role)
    ))
    .await;
    b.wait_for(
        &format!(
            "return document.getElementById('scr-activate').dataset.loaded === 'yes' && document.getElementById('role').value === {} && !!document.querySelector('#request-provider option[value=\"{provider}\"]')",
            json!(role)
        ),
        "the role picked and its factors to choose from",
    )
    .await;
    b.eval(&format!(
        "document.getElementById('request-provider').value = '{provider}'; document.getElementById('request-result').textContent = ''; return true"
    ))
    .await;
    b.type_into("#justification", justification).await;
    b.type_into("#minutes", "30").await;
    b.click("#request-form button[type=submit]").await;
    b.wait_for(
        "return document.getElementById('request-form-status').classList.contains('err') || document.getElementById('request-result').textContent !== ''",
        "the WebAuthn prompt",
    )
    .await;
    if b.eval("return document.getElementById('request-form-status').classList.contains('err')")
        .await
        == Value::Bool(true)
    {
        return b.text("#request-form-status").await;
    }
    if b.eval("return !document.getElementById('webauthn').hidden")
        .await
        == Value::Bool(true)
    {
        let facts = b.text("#webauthn-facts").await;
        assert!(
            facts.contains(role) && facts.contains("30 min") && facts.contains(justification),
            "the page shows what the user approves: {facts}"
        );
        b.click("#webauthn-go").await;
        b.wait_for(
            "return document.getElementById('mfa-status').classList.contains('err') || !document.getElementById('request-result').textContent.includes('waiting for your second factor')",
            "the request's end",
        )
        .await;
    }
    b.eval("return document.getElementById('request-result').textContent + ' ' + document.getElementById('mfa-status').textContent")
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Closes the user's open requests for `role` (one at a time per role: the next request for
/// it would be refused).
async fn close_open(d: &Daemon, user: &str, role: &str) {
    let (_, list) = call(d, Some(user), "GET", "/v1/requests", None).await;
    for v in list.as_array().cloned().unwrap_or_default() {
        let open = ["active", "scheduled", "pending_mfa", "pending_approval"];
        if v["role"] == role && open.contains(&v["state"].as_str().unwrap_or_default()) {
            let id = v["id"].as_str().unwrap_or_default();
            let (s, e) = call(
                d,
                Some(user),
                "POST",
                &format!("/v1/requests/{id}/close"),
                None,
            )
            .await;
            assert_eq!(s, 200, "{e}");
        }
    }
}

async fn events(d: &Daemon, id: u32) -> Vec<Value> {
    let (_, ev) = call(
        d,
        Some(&d.admin),
        "GET",
        &format!("/v1/events?id={id}"),
        None,
    )
    .await;
    ev.as_array().cloned().unwrap_or_default()
}

/// Windows Hello from enrolment to activation in a real browser, the security-key role that
/// refuses the platform credential, the phone call beside Windows Hello on one role, and a
/// cloned authenticator set aside.
#[tokio::test]
async fn windows_hello_enrols_and_activates_in_a_real_browser() {
    let port = rolegate_e2e::free_port();
    let (d, _double, _pki) = daemon(port, &format!("aaguids = [\"{VIRTUAL_AAGUID}\"]"));
    let user = setup(&d).await;
    let page = format!("http://localhost:{port}/");

    // A terminal cannot run the ceremony: the CLI gives the page's link.
    let (okay, out) = cli(&d, &user, &["enrol", "windows-hello"], "");
    assert!(!okay, "{out}");
    assert!(
        out.contains("runs in a browser") && out.contains("/#enrol/windows-hello"),
        "{out}"
    );

    let b = Browser::start().await;
    b.goto(&page).await;
    let hello = b.add_authenticator("internal", true).await;
    b.sign_in(&page, &user).await;
    let said = enrol(&b, "windows-hello", "work laptop").await;
    assert!(said.starts_with("Enrolled"), "{said}");
    b.wait_for(
        "return document.getElementById('my-credentials-body').textContent.includes('work laptop')",
        "the new credential in the user's list, by its label",
    )
    .await;

    // Activation: the page shows the request's facts; the signature commits to them.
    let said = activate(&b, "Domain Admins", "windows-hello", "patch night").await;
    assert!(said.contains(" is active until "), "{said}");
    let completed = events(&d, 103).await;
    let msg = completed[0]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("(work laptop)")
            && msg.contains(&format!("AAGUID {VIRTUAL_AAGUID} (self-asserted)"))
            && msg.contains("user verified")
            && msg.contains("counter "),
        "{msg}"
    );
    assert_eq!(completed[0]["provider"], "windows-hello");
    assert!(!events(&d, 203).await.is_empty());
    // Requested in a terminal: the CLI gives the link to the request's prompt on the page,
    // where the ceremony completes it.
    close_open(&d, &user, "Domain Admins").await;
    let (okay, out) = cli(
        &d,
        &user,
        &[
            "request",
            "new",
            "--role",
            "Domain Admins",
            "--provider",
            "windows-hello",
        ],
        "",
    );
    assert!(!okay && out.contains("runs in a browser"), "{out}");
    let fragment = out
        .split(&format!("{}/", d.url))
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_default()
        .to_string();
    assert!(fragment.starts_with("#request/"), "{out}");
    b.eval("document.getElementById('request-result').textContent = ''; return true")
        .await;
    b.goto(&format!("{page}{fragment}")).await;
    b.wait_for(
        "return !document.getElementById('webauthn').hidden",
        "the request's prompt the link opens",
    )
    .await;
    b.click("#webauthn-go").await;
    b.wait_for(
        "return document.getElementById('request-result').textContent.includes(' is active until ')",
        "the activation from the link",
    )
    .await;

    // The key as the authenticator holds it (its private key and count), for the clone below.
    let laptop_key = b.authenticator_credentials(&hello).await.remove(0);
    assert!(
        laptop_key["signCount"].as_u64().unwrap_or(0) > 0,
        "{laptop_key}"
    );

    // The security-key role: nothing the user holds answers it until a key is enrolled.
    let said = activate(&b, "Key only", "security-key", "key please").await;
    assert!(
        said.contains("`security-key` cannot be used") && said.contains("not enrolled"),
        "{said}"
    );
    // A USB security key enrols (the ceremony asks for a roaming authenticator: the laptop's
    // is not offered) and answers it.
    let key = b.add_authenticator("usb", false).await;
    let said = enrol(&b, "security-key", "yubikey").await;
    assert!(said.starts_with("Enrolled"), "{said}");
    close_open(&d, &user, "Key only").await;
    let said = activate(&b, "Key only", "security-key", "key please").await;
    assert!(said.contains(" is active until "), "{said}");
    // The Windows Hello credential signs a key-only request's very challenge (the page's
    // code, told to use the laptop's credential; the key unplugged): refused, the request
    // still waiting.
    b.remove_authenticator(&key).await;
    close_open(&d, &user, "Key only").await;
    let (s, r) = call(
        &d,
        Some(&user),
        "POST",
        "/v1/requests",
        Some(json!({"role": "Key only", "provider": "security-key", "justification": "sneak"})),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    let mut options = r["prompt"]["options"].clone();
    options["publicKey"]["allowCredentials"] =
        json!([{"type": "public-key", "id": laptop_key["credentialId"]}]);
    // (Whatever steers the browser to a roaming key is the page's to drop.)
    if let Some(pk) = options["publicKey"].as_object_mut() {
        pk.remove("hints");
    }
    let signed = b
        .eval_async(&format!(
            "const done = arguments[arguments.length - 1]; assertion({options}).then(done, (e) => done(String(e)));"
        ))
        .await;
    assert!(signed["response"]["signature"].is_string(), "{signed}");
    let (_, answered) = call(
        &d,
        Some(&user),
        "POST",
        &format!("/v1/requests/{}/answer", r["id"].as_str().unwrap()),
        Some(json!({"input": {"kind": "json", "value": signed}})),
    )
    .await;
    assert_eq!(answered["state"], "pending_mfa", "{answered}");
    assert!(
        answered["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("has not registered here"),
        "{answered}"
    );

    // The phone call beside Windows Hello on one role: the user chooses; a role that lists
    // only the call refuses Windows Hello.
    let (s, r) = call(
        &d,
        Some(&user),
        "POST",
        "/v1/requests",
        Some(json!({"role": "Phone only", "provider": "windows-hello"})),
    )
    .await;
    assert!(s >= 400, "{r}");
    close_open(&d, &user, "Domain Admins").await;
    let (okay, out) = cli(
        &d,
        &user,
        &[
            "request",
            "new",
            "--role",
            "Domain Admins",
            "--provider",
            "phone-legacy",
        ],
        "",
    );
    assert!(okay && out.contains("is active until"), "{out}");

    // A copy of the Windows Hello key in another authenticator, its counter behind the
    // stored one: the assertion is refused, the credential set aside (event 312), shown to
    // the admin, and no longer offered.
    let mut copy = laptop_key.clone();
    copy["signCount"] = json!(0);
    b.remove_authenticator(&hello).await;
    let clone = b.add_authenticator("internal", true).await;
    b.add_credential(&clone, copy).await;
    close_open(&d, &user, "Domain Admins").await;
    let said = activate(&b, "Domain Admins", "windows-hello", "cloned").await;
    assert!(said.contains("set aside for an administrator"), "{said}");
    let flagged = events(&d, 312).await;
    assert_eq!(flagged.len(), 1, "{flagged:?}");
    assert!(
        flagged[0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("signature counter"),
        "{flagged:?}"
    );
    let (_, creds) = call(
        &d,
        Some(&d.admin),
        "GET",
        "/v1/users/jdoe/credentials",
        None,
    )
    .await;
    let hello_cred = creds
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["provider"] == "windows-hello")
        .unwrap();
    assert!(hello_cred["flag"].is_string(), "{creds}");
    close_open(&d, &user, "Domain Admins").await;
    let said = activate(&b, "Domain Admins", "windows-hello", "again").await;
    assert!(said.contains("not enrolled"), "{said}");
}

/// The Windows Hello profile's default AAGUID list: an authenticator that is not Windows Hello
/// (Chrome's virtual one) is refused at enrolment, naming its AAGUID, and nothing is stored.
/// The page is reached by the link the CLI prints.
#[tokio::test]
async fn windows_hello_refuses_an_authenticator_that_is_not_windows_hello() {
    let port = rolegate_e2e::free_port();
    let (d, _double, _pki) = daemon(port, "");
    let user = setup(&d).await;
    let b = Browser::start().await;
    b.goto(&format!("http://localhost:{port}/")).await;
    b.add_authenticator("internal", true).await;
    let link = format!("http://localhost:{port}/#enrol/windows-hello");
    b.sign_in(&link, &user).await;
    b.wait_for(
        "return !document.getElementById('enrol-webauthn').hidden",
        "the enrolment the link starts",
    )
    .await;
    b.type_into("#enrol-label", "not hello").await;
    b.click("#enrol-webauthn-go").await;
    b.wait_for(ENROL_OVER, "the enrolment's end").await;
    let said = b.text("#enrol-result").await;
    assert!(
        said.contains(&format!("AAGUID {VIRTUAL_AAGUID}"))
            && said.contains("not one this provider accepts"),
        "{said}"
    );
    let (_, creds) = call(
        &d,
        Some(&d.admin),
        "GET",
        "/v1/users/jdoe/credentials",
        None,
    )
    .await;
    assert_eq!(creds, json!([]), "nothing stored");
    // An oversized answer is refused at the door (413), before any provider reads it: the
    // daemon answers as soon as the declared length is known (over a plain socket, headers
    // only — an HTTP client still writing the body may see its pipe closed instead).
    let said = oversized_post(&d.url, &user, "/v1/enrolments/continue", 2 << 20);
    assert!(said.starts_with("HTTP/1.1 413"), "{said}");
}

/// Sends the head of a POST declaring a JSON body of `len` bytes, and returns the start of the
/// daemon's answer (which must not wait for the body).
fn oversized_post(url: &str, token: &str, path: &str, len: usize) -> String {
    use std::io::{Read as _, Write as _};
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut answer = vec![0u8; 256];
    let n = s.read(&mut answer).unwrap_or(0);
    String::from_utf8_lossy(&answer[..n]).into_owned()
}
