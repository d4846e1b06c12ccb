//! Unit tests: settings, the challenge's state and answers, and the client against a tiny
//! local HTTP responder (the full Twilio double lives in the e2e crate).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rolegate_sdk::serde_json::{Value, json};
use rolegate_sdk::{ErrorKind, UserContext};

use super::*;

const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "f00dfeedf00dfeedf00dfeedf00dfeed";

/// One canned answer: status, extra headers, body.
type Answer = (u16, Vec<(&'static str, String)>, String);

/// A local HTTP/1.1 responder: answers requests in order (the last answer repeats) and keeps
/// the decoded form of each request.
struct Responder {
    url: String,
    forms: Arc<Mutex<Vec<Form>>>,
}

/// A decoded form body, fields in order.
type Form = Vec<(String, String)>;

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

impl Responder {
    fn start(answers: Vec<Answer>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let forms = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&forms);
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let form = String::from_utf8_lossy(&body)
                    .split('&')
                    .filter_map(|p| p.split_once('='))
                    .map(|(k, v)| (decode(k), decode(v)))
                    .collect();
                seen.lock().unwrap().push(form);
                let (status, headers, text) = answers[n.min(answers.len() - 1)].clone();
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                    text.len()
                );
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                let _ = stream.write_all(format!("{head}\r\n{text}").as_bytes());
            }
        });
        Self { url, forms }
    }

    fn accepting() -> Self {
        Self::start(vec![created()])
    }

    fn forms(&self) -> Vec<Form> {
        self.forms.lock().unwrap().clone()
    }

    fn field(&self, i: usize, name: &str) -> Option<String> {
        self.forms()[i]
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

/// The SID of every message [`created`] answers.
const MESSAGE_SID: &str = "SM0123456789abcdef0123456789abcdef";

fn created() -> Answer {
    (
        201,
        vec![],
        json!({"sid": MESSAGE_SID, "status": "queued", "error_code": null, "error_message": null})
            .to_string(),
    )
}

/// A 201 whose message Twilio already gave up on, as its API answers one.
fn created_failed(status: &str, code: Option<u64>, message: Option<&str>) -> Answer {
    (
        201,
        vec![],
        json!({"sid": MESSAGE_SID, "status": status, "error_code": code,
               "error_message": message, "to": "+14255550142", "num_segments": "1"})
        .to_string(),
    )
}

fn twilio_error(http: u16, code: u64, message: &str) -> Answer {
    (
        http,
        vec![],
        json!({"code": code, "message": message, "more_info": format!("https://www.twilio.com/docs/errors/{code}"), "status": http}).to_string(),
    )
}

struct TokenFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn token_file(mode: u32) -> TokenFile {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("twilio.token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    TokenFile { _dir: dir, path }
}

fn settings_for(base_url: &str, token: &TokenFile, extra: Value) -> Value {
    let mut s = json!({
        "account_sid": SID,
        "auth_token_file": token.path,
        "from": "+14155552345",
        "base_url": base_url,
        "body": "{code}",
    });
    if let (Value::Object(s), Value::Object(extra)) = (&mut s, extra) {
        s.extend(extra);
    }
    s
}

fn create(settings: Value) -> Result<SmsTwilio, ProviderError> {
    let Value::Object(map) = settings else {
        panic!("not an object")
    };
    SmsTwilio::create(Settings(map))
}

fn ctx(request_id: &str, now: u64, phone: Option<&str>) -> ChallengeContext {
    ChallengeContext {
        user: UserContext {
            account: "CONTOSO\\jdoe".into(),
            phone: phone.map(String::from),
            ..Default::default()
        },
        role: "admins".into(),
        request_id: request_id.into(),
        now,
        ..Default::default()
    }
}

fn code(c: &str) -> Input {
    Input::Code { code: c.into() }
}

fn start(p: &SmsTwilio, r: &Responder, request_id: &str, now: u64) -> (String, Bytes, String) {
    let before = r.forms().len();
    match p
        .challenge_start(&ctx(request_id, now, Some("+14255550142")))
        .unwrap()
    {
        Step::Ask {
            prompt: Prompt::Code { message, length },
            state,
            expires_in,
            reference,
        } => {
            // The SID Twilio answered goes with the step, for the host's event.
            assert_eq!(reference.as_deref(), Some(MESSAGE_SID));
            assert_eq!(length, Some(p.settings.code_length));
            assert_eq!(expires_in, p.settings.code_lifetime_s);
            let sent = r.field(before, "Body").unwrap();
            (sent, state, message)
        }
        other => panic!("{other:?}"),
    }
}

fn config_error(settings: Value) -> String {
    let e = create(settings).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{}", e.message);
    assert!(!e.message.contains(TOKEN), "{}", e.message);
    e.message
}

// --- settings ------------------------------------------------------------------------------

#[test]
fn good_settings_are_accepted_with_defaults() {
    let t = token_file(0o600);
    let p = create(json!({"account_sid": SID, "auth_token_file": t.path, "from": "+14155552345"}))
        .unwrap();
    assert_eq!(p.settings.base_url, "https://api.twilio.com");
    assert_eq!(p.settings.code_length, 6);
    assert_eq!(p.settings.code_lifetime_s, 300);
    assert_eq!(p.settings.timeout.as_millis(), 4_000);
    assert_eq!(p.settings.max_attempts, 3);
    assert!(p.settings.body.contains("{code}"));
    let info = p.info();
    assert_eq!(info.id, "sms-twilio");
    assert!(info.needs_phone && !info.needs_enrolment && !info.quick);
    assert_eq!(info.factor, FactorKind::Code);
    assert_eq!(info.responder, PromptKind::Code);
    assert_eq!(p.health().status, HealthStatus::Ok);
    // The Debug form names where the token is, never the token.
    assert!(!format!("{p:?}").contains(TOKEN));
}

#[test]
fn unknown_keys_and_a_token_in_the_settings_are_refused() {
    let t = token_file(0o600);
    let m = config_error(settings_for(
        "https://api.twilio.com",
        &t,
        json!({"form": "+1"}),
    ));
    assert!(m.contains("form"), "{m}");
    let m = config_error(settings_for(
        "https://api.twilio.com",
        &t,
        json!({"auth_token": TOKEN}),
    ));
    assert!(
        m.contains("`auth_token`") && m.contains("auth_token_file"),
        "{m}"
    );
}

#[test]
fn the_token_comes_from_exactly_one_private_source() {
    let private = token_file(0o600);
    let base = json!({"account_sid": SID, "from": "+14155552345"});
    let with = |extra: Value| {
        let mut s = base.clone();
        if let (Value::Object(s), Value::Object(e)) = (&mut s, extra) {
            s.extend(e);
        }
        s
    };
    let m = config_error(with(json!({})));
    assert!(
        m.contains("auth_token_file") && m.contains("auth_token_env"),
        "{m}"
    );
    let m = config_error(with(
        json!({"auth_token_file": private.path, "auth_token_env": "PATH"}),
    ));
    assert!(m.contains("only one"), "{m}");
    // OpenSSH's rule: group or others may not read it. The message names the file.
    for mode in [0o644, 0o640, 0o604] {
        let open = token_file(mode);
        let m = config_error(with(json!({"auth_token_file": open.path})));
        assert!(m.contains(&open.path.display().to_string()), "{m}");
        assert!(m.contains("readable by group or others"), "{m}");
        assert!(m.contains("chmod 600"), "{m}");
    }
    let m = config_error(with(json!({"auth_token_file": "relative/token"})));
    assert!(m.contains("absolute"), "{m}");
    let m = config_error(with(
        json!({"auth_token_file": "/nonexistent/rolegate/token"}),
    ));
    assert!(m.contains("/nonexistent/rolegate/token"), "{m}");
    let empty = token_file(0o600);
    std::fs::write(&empty.path, "\n").unwrap();
    let m = config_error(with(json!({"auth_token_file": empty.path})));
    assert!(m.contains("empty"), "{m}");
    let m = config_error(with(
        json!({"auth_token_env": "ROLEGATE_TEST_SURELY_UNSET_VARIABLE"}),
    ));
    assert!(
        m.contains("ROLEGATE_TEST_SURELY_UNSET_VARIABLE") && m.contains("not set"),
        "{m}"
    );
    let m = config_error(with(json!({"auth_token_env": "1BAD-NAME"})));
    assert!(m.contains("`auth_token_env`"), "{m}");
    // Any set variable works as a source (PATH stands in for a real token here).
    assert!(create(with(json!({"auth_token_env": "PATH"}))).is_ok());
}

#[test]
fn every_other_setting_is_checked_and_named() {
    let t = token_file(0o600);
    let url = "https://api.twilio.com";
    let cases: Vec<(Value, &str)> = vec![
        (json!({"account_sid": "AC123"}), "`account_sid`"),
        (
            json!({"account_sid": "MG0123456789abcdef0123456789abcdef"}),
            "`account_sid`",
        ),
        (json!({"from": "14155552345"}), "`from`"),
        (json!({"from": "+0155"}), "`from`"),
        (
            json!({"messaging_service_sid": "MG0123456789abcdef0123456789abcdef"}),
            "only one",
        ),
        (json!({"base_url": "http://api.twilio.com"}), "`base_url`"),
        (json!({"base_url": "ftp://127.0.0.1"}), "`base_url`"),
        (json!({"base_url": "not a url"}), "`base_url`"),
        (
            json!({"base_url": "https://user:pw@api.twilio.com"}),
            "`base_url`",
        ),
        (json!({"body": "no code here"}), "`body`"),
        (json!({"body": "{code} {cdoe}"}), "`body`"),
        (json!({"body": "{code} {"}), "`body`"),
        (
            json!({"body": format!("{{code}}{}", "x".repeat(1600))}),
            "`body`",
        ),
        (json!({"code_length": 5}), "`code_length`"),
        (json!({"code_length": 11}), "`code_length`"),
        (json!({"code_length": "six"}), "code_length"),
        (json!({"code_lifetime_s": 29}), "`code_lifetime_s`"),
        (json!({"code_lifetime_s": 3601}), "`code_lifetime_s`"),
        (json!({"timeout_ms": 0}), "`timeout_ms`"),
        (json!({"timeout_ms": 600000}), "`timeout_ms`"),
        (json!({"max_attempts": 0}), "`max_attempts`"),
        (json!({"max_attempts": 11}), "`max_attempts`"),
    ];
    for (extra, key) in cases {
        let m = config_error(settings_for(url, &t, extra.clone()));
        assert!(m.contains(key), "{extra}: {m}");
    }
    let mut neither = settings_for(url, &t, json!({}));
    neither.as_object_mut().unwrap().remove("from");
    let m = config_error(neither.clone());
    assert!(
        m.contains("`from`") && m.contains("messaging_service_sid"),
        "{m}"
    );
    neither["messaging_service_sid"] = json!("MGxyz");
    let m = config_error(neither.clone());
    assert!(m.contains("`messaging_service_sid`"), "{m}");
    neither["messaging_service_sid"] = json!("MG0123456789abcdef0123456789abcdef");
    assert!(create(neither).is_ok());
    for ok in [
        "http://127.0.0.1:8080",
        "http://localhost:1/",
        "http://[::1]:9",
    ] {
        assert!(create(settings_for(ok, &t, json!({}))).is_ok(), "{ok}");
    }
    let p = create(settings_for("http://localhost:1/", &t, json!({}))).unwrap();
    assert_eq!(p.settings.base_url, "http://localhost:1");
}

#[test]
fn from_takes_a_number_a_short_code_or_an_alphanumeric_sender_id() {
    let t = token_file(0o600);
    let r = Responder::accepting();
    for ok in [
        "+14155552345",
        "54321",
        "123456",
        "Contoso",
        "Contoso IT",
        "A",
        "ACME-2FA",
        "R&D_Team+1",
        "12345678 9a",
    ] {
        let p = create(settings_for(&r.url, &t, json!({"from": ok})))
            .unwrap_or_else(|e| panic!("`{ok}` refused: {}", e.message));
        let before = r.forms().len();
        start(&p, &r, "r1", 0);
        assert_eq!(r.field(before, "From").as_deref(), Some(ok), "sent as is");
    }
    for (bad, why) in [
        ("1234", "at least one letter"),
        ("1234567", "at least one letter"),
        ("12345678901", "at least one letter"),
        ("14155552345", "at least one letter"),
        ("+0155", "at least one letter"),
        ("ContosoITDept", "at most 11 characters, and this has 13"),
        ("Contoso.IT", "`.` is not allowed"),
        ("Contosö", "is not allowed"),
        ("Contoso\tIT", "`\\t` is not allowed"),
        ("   ", "it is empty"),
    ] {
        let m = config_error(settings_for(&r.url, &t, json!({"from": bad})));
        assert!(m.starts_with("setting `from`: "), "{bad}: {m}");
        assert!(m.contains(why), "{bad}: {m}");
        assert!(
            m.contains("E.164") && m.contains("short code") && m.contains("alphanumeric"),
            "{bad}: {m}"
        );
    }
}

#[test]
fn the_body_template_is_filled_in() {
    assert_eq!(
        render_body(settings::DEFAULT_BODY, "123456", 300),
        "Your rolegate code is 123456. It expires in 5 minutes."
    );
    assert_eq!(render_body("{code}/{minutes}", "1", 61), "1/2");
}

// --- challenges ------------------------------------------------------------------------------

#[test]
fn the_right_code_is_approved_and_the_state_holds_no_code() {
    let t = token_file(0o600);
    let r = Responder::accepting();
    let p = create(settings_for(&r.url, &t, json!({"code_length": 8}))).unwrap();
    let (sent, state, message) = start(&p, &r, "r1", 1000);
    assert_eq!(sent.len(), 8);
    assert!(sent.bytes().all(|b| b.is_ascii_digit()), "{sent}");
    assert_eq!(message, "Type the code sent by SMS to …42");
    let form = &r.forms()[0];
    assert!(
        form.contains(&("To".into(), "+14255550142".into())),
        "{form:?}"
    );
    assert!(
        form.contains(&("From".into(), "+14155552345".into())),
        "{form:?}"
    );
    assert!(
        !form.iter().any(|(k, _)| k == "MessagingServiceSid"),
        "{form:?}"
    );
    let text = String::from_utf8(state.0.clone()).unwrap();
    assert!(
        !text.contains(&sent),
        "the state holds the code in clear: {text}"
    );
    assert!(text.contains("\"request_id\":\"r1\""), "{text}");
    assert!(text.contains("\"expires_at\":1300"), "{text}");
    let ok = p
        .challenge_continue(
            &ctx("r1", 1299, None),
            &state.0,
            &code(&format!(" {sent} ")),
        )
        .unwrap();
    assert_eq!(
        ok,
        Step::Done {
            verdict: Verdict::approved(None)
        }
    );
    // Another instance (after a restart) continues the same state.
    let again = create(settings_for(&r.url, &t, json!({"code_length": 8}))).unwrap();
    let ok = again
        .challenge_continue(&ctx("r1", 1001, None), &state.0, &code(&sent))
        .unwrap();
    assert!(matches!(
        ok,
        Step::Done {
            verdict: Verdict::Approved { .. }
        }
    ));
}

#[test]
fn a_wrong_code_is_denied_and_an_expired_one_too() {
    let t = token_file(0o600);
    let r = Responder::accepting();
    let p = create(settings_for(&r.url, &t, json!({"code_lifetime_s": 30}))).unwrap();
    let (sent, state, _) = start(&p, &r, "r1", 1000);
    let wrong: String = sent
        .chars()
        .map(|c| if c == '1' { '2' } else { '1' })
        .collect();
    let step = p
        .challenge_continue(&ctx("r1", 1001, None), &state.0, &code(&wrong))
        .unwrap();
    assert!(matches!(
        step,
        Step::Done {
            verdict: Verdict::Denied {
                reason: DenyReason::WrongAnswer,
                ..
            }
        }
    ));
    let step = p
        .challenge_continue(&ctx("r1", 1030, None), &state.0, &code(&sent))
        .unwrap();
    assert!(matches!(
        step,
        Step::Done {
            verdict: Verdict::Denied {
                reason: DenyReason::Expired,
                ..
            }
        }
    ));
}

#[test]
fn the_state_is_bound_to_its_request() {
    let t = token_file(0o600);
    let r = Responder::accepting();
    let p = create(settings_for(&r.url, &t, json!({}))).unwrap();
    let (sent, state, _) = start(&p, &r, "r1", 1000);
    let e = p
        .challenge_continue(&ctx("r2", 1001, None), &state.0, &code(&sent))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadInput);
    assert!(e.message.contains("another request"), "{}", e.message);
    // Rewriting the request id inside the state does not help: the hash is bound to it.
    let text = String::from_utf8(state.0.clone())
        .unwrap()
        .replace("\"r1\"", "\"r2\"");
    let step = p
        .challenge_continue(&ctx("r2", 1001, None), text.as_bytes(), &code(&sent))
        .unwrap();
    assert!(matches!(
        step,
        Step::Done {
            verdict: Verdict::Denied {
                reason: DenyReason::WrongAnswer,
                ..
            }
        }
    ));
}

#[test]
fn bad_input_is_refused_cleanly() {
    let t = token_file(0o600);
    let r = Responder::accepting();
    let p = create(settings_for(&r.url, &t, json!({}))).unwrap();
    let (_, state, _) = start(&p, &r, "r1", 0);
    for bad in [
        "12",
        "abcdef",
        "1234567",
        "",
        "12345x",
        "１２３４５６",
        "12 456",
    ] {
        let e = p
            .challenge_continue(&ctx("r1", 1, None), &state.0, &code(bad))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadInput, "{bad}");
        assert!(e.message.contains("6 digits"), "{}", e.message);
    }
    for input in [
        Input::Acknowledge,
        Input::Json {
            value: json!("123456"),
        },
        Input::Bytes {
            data: Bytes(b"123456".to_vec()),
        },
    ] {
        let e = p
            .challenge_continue(&ctx("r1", 1, None), &state.0, &input)
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadInput);
    }
    for garbage in [&b""[..], b"\x00\xff", b"{}", b"[1,2]", br#"{"v":1}"#] {
        let e = p
            .challenge_continue(&ctx("r1", 1, None), garbage, &code("123456"))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadInput);
    }
    // A state whose salt or hash has the wrong size is refused, not indexed out of bounds.
    let mut v: Value = rolegate_sdk::serde_json::from_slice(&state.0).unwrap();
    v["hash"] = json!("AAAA");
    let e = p
        .challenge_continue(
            &ctx("r1", 1, None),
            v.to_string().as_bytes(),
            &code("123456"),
        )
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadInput);
}

#[test]
fn a_user_without_a_phone_is_refused_and_nothing_is_sent() {
    let t = token_file(0o600);
    let r = Responder::accepting();
    let p = create(settings_for(&r.url, &t, json!({}))).unwrap();
    for phone in [None, Some(""), Some("  ")] {
        let step = p.challenge_start(&ctx("r1", 0, phone)).unwrap();
        match step {
            Step::Done {
                verdict:
                    Verdict::Denied {
                        reason: DenyReason::NotEnrolled,
                        message,
                        ..
                    },
            } => assert!(message.contains("no phone number"), "{message}"),
            other => panic!("{other:?}"),
        }
    }
    let e = p
        .challenge_start(&ctx("r1", 0, Some("425 555 0100")))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadInput);
    assert!(r.forms().is_empty(), "something was sent");
}

#[test]
fn an_extension_is_not_sent_to_twilio() {
    let t = token_file(0o600);
    let r = Responder::accepting();
    let mut s = settings_for(
        &r.url,
        &t,
        json!({"messaging_service_sid": "MG0123456789abcdef0123456789abcdef"}),
    );
    s.as_object_mut().unwrap().remove("from");
    let p = create(s).unwrap();
    p.challenge_start(&ctx("r1", 0, Some("+14255550100x123")))
        .unwrap();
    assert_eq!(r.field(0, "To").as_deref(), Some("+14255550100"));
    assert_eq!(
        r.field(0, "MessagingServiceSid").as_deref(),
        Some("MG0123456789abcdef0123456789abcdef")
    );
    assert_eq!(r.field(0, "From"), None);
}

// --- the client ------------------------------------------------------------------------------

#[test]
fn a_201_for_a_failed_or_undelivered_message_is_a_failure_not_a_prompt() {
    let t = token_file(0o600);
    for (answer, needles) in [
        (
            created_failed(
                "failed",
                Some(30003),
                Some(&format!(
                    "Unreachable destination handset +14255550142 {TOKEN}"
                )),
            ),
            &[
                "`failed`",
                "Twilio error 30003: Unreachable destination handset …42 [redacted]",
                "https://www.twilio.com/docs/errors/30003",
            ][..],
        ),
        (
            created_failed("undelivered", Some(30005), None),
            &["`undelivered`", "Twilio error 30005"][..],
        ),
        // Queued, yet with an error code: Twilio says something already went wrong.
        (
            created_failed("queued", Some(30007), Some("Message filtered")),
            &["`queued`", "Twilio error 30007: Message filtered"][..],
        ),
        // Failed without a code.
        (created_failed("failed", None, None), &["`failed`"][..]),
    ] {
        let r = Responder::start(vec![answer]);
        let p = create(settings_for(&r.url, &t, json!({}))).unwrap();
        let e = p
            .challenge_start(&ctx("r1", 0, Some("+14255550142")))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unavailable, "{}", e.message);
        assert!(e.message.contains(MESSAGE_SID), "{}", e.message);
        assert!(e.message.contains("will not arrive"), "{}", e.message);
        for n in needles {
            assert!(e.message.contains(n), "`{n}` missing: {}", e.message);
        }
        assert!(!e.message.contains(TOKEN), "{}", e.message);
        assert!(!e.message.contains("+14255550142"), "{}", e.message);
        let sent = r.field(0, "Body").unwrap();
        assert!(!e.message.contains(&sent), "{}", e.message);
        assert_eq!(r.forms().len(), 1, "a message Twilio made was sent again");
    }
}

#[test]
fn what_a_201_says_is_read_as_twilio_writes_it() {
    use crate::twilio::read_created;
    let to = "+14255550142";
    let ok = |body: &str| read_created(body, &[TOKEN], to);
    assert_eq!(
        ok(&created().2).unwrap().as_deref(),
        Some(MESSAGE_SID),
        "queued, no error"
    );
    for status in ["accepted", "scheduled", "sending", "sent", "delivered"] {
        let body = json!({"sid": MESSAGE_SID, "status": status, "error_code": null}).to_string();
        assert_eq!(ok(&body).unwrap().as_deref(), Some(MESSAGE_SID), "{status}");
    }
    // A body Twilio would not send still means it took the message; a SID that is not one
    // is not passed on.
    assert_eq!(ok("not json").unwrap(), None);
    assert_eq!(ok("{}").unwrap(), None);
    assert_eq!(ok(r#"{"sid":"SM12 `; rm -rf"}"#).unwrap(), None);
    assert_eq!(
        ok(&format!(r#"{{"sid":"{}"}}"#, "S".repeat(65))).unwrap(),
        None
    );
    // An error code as a string, and a status in capitals, are read too.
    let e = ok(r#"{"sid":"SMx1","status":"FAILED","error_code":"30008"}"#).unwrap_err();
    assert!(
        e.message.contains("Twilio error 30008") && e.message.contains("message SMx1"),
        "{}",
        e.message
    );
    let e = ok(r#"{"status":"undelivered"}"#).unwrap_err();
    assert!(
        e.message
            .contains("Twilio created the message with status `undelivered`")
    );
}

#[test]
fn a_429_is_retried_and_then_succeeds() {
    let t = token_file(0o600);
    let r = Responder::start(vec![
        (
            429,
            vec![("Retry-After", "0".into())],
            json!({"code": 20429, "message": "Too Many Requests", "status": 429}).to_string(),
        ),
        created(),
    ]);
    let p = create(settings_for(&r.url, &t, json!({}))).unwrap();
    let (sent, _, _) = start(&p, &r, "r1", 0);
    assert_eq!(r.forms().len(), 2);
    assert_eq!(r.field(1, "Body"), Some(sent));
}

#[test]
fn server_errors_are_retried_then_given_up_clearly() {
    let t = token_file(0o600);
    let r = Responder::start(vec![twilio_error(500, 20500, "Internal Server Error")]);
    let p = create(settings_for(&r.url, &t, json!({"max_attempts": 3}))).unwrap();
    let e = p
        .challenge_start(&ctx("r1", 0, Some("+14255550142")))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable);
    assert!(e.message.contains("3 attempt(s)"), "{}", e.message);
    assert!(e.message.contains("20500"), "{}", e.message);
    assert!(!e.message.contains(TOKEN), "{}", e.message);
    assert_eq!(r.forms().len(), 3);
}

#[test]
fn a_retry_after_past_the_budget_gives_up_at_once() {
    let t = token_file(0o600);
    let r = Responder::start(vec![(429, vec![("Retry-After", "30".into())], "{}".into())]);
    let p = create(settings_for(&r.url, &t, json!({"timeout_ms": 2000}))).unwrap();
    let started = std::time::Instant::now();
    let e = p
        .challenge_start(&ctx("r1", 0, Some("+14255550142")))
        .unwrap_err();
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(e.kind, ErrorKind::Unavailable);
    assert!(
        e.message.contains("1 attempt(s)") && e.message.contains("30 s"),
        "{}",
        e.message
    );
}

#[test]
fn refusals_are_not_retried_and_hold_no_secret() {
    let t = token_file(0o600);
    for (answer, kind, needle) in [
        (
            twilio_error(400, 21211, "The 'To' number is not a valid phone number."),
            ErrorKind::BadInput,
            "21211",
        ),
        (
            twilio_error(400, 21610, "Attempt to send to unsubscribed recipient"),
            ErrorKind::BadInput,
            "STOP",
        ),
        (
            twilio_error(
                400,
                21408,
                "Permission to send an SMS has not been enabled for the region",
            ),
            ErrorKind::Config,
            "region",
        ),
        (
            twilio_error(401, 20003, &format!("Authenticate {TOKEN}")),
            ErrorKind::Config,
            "credentials",
        ),
    ] {
        let r = Responder::start(vec![answer]);
        let p = create(settings_for(&r.url, &t, json!({}))).unwrap();
        let e = p
            .challenge_start(&ctx("r1", 0, Some("+14255550142")))
            .unwrap_err();
        assert_eq!(e.kind, kind, "{}", e.message);
        assert!(e.message.contains(needle), "{}", e.message);
        assert!(!e.message.contains(TOKEN), "{}", e.message);
        let sent = r.field(0, "Body").unwrap();
        assert!(!e.message.contains(&sent), "{}", e.message);
        assert_eq!(r.forms().len(), 1, "a refusal was retried");
    }
}

#[test]
fn nothing_listening_is_unavailable_after_the_attempts() {
    let t = token_file(0o600);
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let p = create(settings_for(
        &format!("http://127.0.0.1:{port}"),
        &t,
        json!({"max_attempts": 2}),
    ))
    .unwrap();
    let e = p
        .challenge_start(&ctx("r1", 0, Some("+14255550142")))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable);
    assert!(e.message.contains("2 attempt(s)"), "{}", e.message);
    assert!(e.message.contains("connect"), "{}", e.message);
}

#[test]
fn health_reports_an_unreadable_token() {
    let t = token_file(0o600);
    let p = create(settings_for("https://api.twilio.com", &t, json!({}))).unwrap();
    assert_eq!(p.health().status, HealthStatus::Ok);
    std::fs::set_permissions(&t.path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let h = p.health();
    assert_eq!(h.status, HealthStatus::Down);
    assert!(
        h.message.contains("readable by group or others"),
        "{}",
        h.message
    );
}

#[test]
fn sms_twilio_passes_the_conformance_suite_through_the_c_abi() {
    use rolegate_sdk::conformance::{Options, Outcome, check_provider};
    let t = token_file(0o600);
    let r = Responder::accepting();
    let options = Options {
        settings: settings_for(&r.url, &t, json!({})),
        ..Options::default()
    };
    let report = check_provider::<SmsTwilio>(&options);
    eprintln!("{report}");
    assert!(report.passed_strict(), "{report}");
    // The state really went through another instance, and SMS were really sent.
    let round_trip = report.check(rolegate_sdk::conformance::ROUND_TRIP).unwrap();
    assert_eq!(round_trip.outcome, Outcome::Pass, "{report}");
    assert!(!r.forms().is_empty());
}
