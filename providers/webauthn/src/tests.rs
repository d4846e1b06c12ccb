//! The provider with a software authenticator (webauthn-authenticator-rs's SoftPasskey):
//! registration, request-bound authentication, and the refusals.

use rolegate_sdk::UserContext;
use webauthn_authenticator_rs::WebauthnAuthenticator;
use webauthn_authenticator_rs::softpasskey::SoftPasskey;
use webauthn_authenticator_rs::softtoken::{AAGUID as SOFT_AAGUID, SoftToken};
use webauthn_rs::prelude::{CreationChallengeResponse, RequestChallengeResponse};

use super::*;

const ORIGIN: &str = "https://pam.contoso.test";
const NOW: u64 = 1_767_225_600;

fn provider(extra: Value) -> Result<WebauthnProvider, ProviderError> {
    let mut s = json!({"profile": "passkey", "rp_id": "pam.contoso.test", "origins": [ORIGIN]});
    if let (Some(base), Value::Object(more)) = (s.as_object_mut(), extra) {
        base.extend(more);
    }
    let Value::Object(map) = s else {
        unreachable!("built as an object")
    };
    WebauthnProvider::create(Settings(map))
}

fn user() -> UserContext {
    UserContext {
        account: "CONTOSO\\jdoe".into(),
        display_name: "Jane Doe".into(),
        ..Default::default()
    }
}

fn enrol_ctx(credentials: Vec<Credential>) -> EnrollContext {
    EnrollContext {
        user: user(),
        credentials,
        origin: Some(ORIGIN.into()),
        now: NOW,
    }
}

fn challenge_ctx(request_id: &str, credentials: Vec<Credential>) -> ChallengeContext {
    ChallengeContext {
        user: user(),
        role: "Domain Admins".into(),
        request_id: request_id.into(),
        ttl_s: 3600,
        justification: "patch night".into(),
        credentials,
        origin: Some(ORIGIN.into()),
        now: NOW + 10,
    }
}

fn ask(step: Step) -> (Value, Vec<u8>) {
    match step {
        Step::Ask {
            prompt: Prompt::Webauthn { options },
            state,
            ..
        } => (options, state.as_slice().to_vec()),
        other => panic!("expected a WebAuthn prompt, got {other:?}"),
    }
}

fn approved(step: Step) -> Credential {
    match step {
        Step::Done {
            verdict:
                Verdict::Approved {
                    credential: Some(c),
                    ..
                },
        } => c,
        other => panic!("expected an approval with a credential, got {other:?}"),
    }
}

fn denied(step: Step) -> (DenyReason, String) {
    match step {
        Step::Done {
            verdict: Verdict::Denied {
                reason, message, ..
            },
        } => (reason, message),
        other => panic!("expected a denial, got {other:?}"),
    }
}

/// Enrols the soft authenticator; the stored credential.
fn enrol(p: &WebauthnProvider, auth: &mut SoftPasskey, label: &str) -> Credential {
    let (options, state) = ask(p.enroll_start(&enrol_ctx(vec![])).unwrap());
    let ccr: CreationChallengeResponse = serde_json::from_value(options).unwrap();
    let reg = auth
        .do_registration(Url::parse(ORIGIN).unwrap(), ccr)
        .unwrap();
    let input = Input::Json {
        value: json!({"credential": reg, "label": label}),
    };
    approved(
        p.enroll_continue(&enrol_ctx(vec![]), &state, &input)
            .unwrap(),
    )
}

/// Starts a challenge for `request`; the options (as the page gets them) and state.
fn start(p: &WebauthnProvider, request: &str, creds: &[Credential]) -> (Value, Vec<u8>) {
    ask(p
        .challenge_start(&challenge_ctx(request, creds.to_vec()))
        .unwrap())
}

/// The soft authenticator's assertion for the options.
fn sign(auth: &mut SoftPasskey, options: &Value, origin: &str) -> Value {
    let rcr: RequestChallengeResponse = serde_json::from_value(options.clone()).unwrap();
    let a = auth
        .do_authentication(Url::parse(origin).unwrap(), rcr)
        .unwrap();
    serde_json::to_value(a).unwrap()
}

#[test]
fn a_registered_passkey_approves_its_request_and_the_counter_advances() {
    let p = provider(json!({})).unwrap();
    let mut auth = SoftPasskey::new(true);
    let cred = enrol(&p, &mut auth, "work laptop");
    assert_eq!(cred.label, "work laptop");
    let stored: Stored = serde_json::from_slice(cred.data.as_slice()).unwrap();
    assert_eq!(stored.profile, Profile::Passkey);

    let (options, state) = start(&p, "req-1", std::slice::from_ref(&cred));
    // The page shows what the user approves; the challenge is the bound one.
    assert_eq!(options["request"]["role"], "Domain Admins");
    assert_eq!(options["request"]["ttl_s"], 3600);
    assert_eq!(options["request"]["justification"], "patch night");
    let bound = options["publicKey"]["challenge"]
        .as_str()
        .unwrap()
        .to_string();
    let kept: Challenge = serde_json::from_slice(&state).unwrap();
    assert_eq!(
        bound,
        bound_challenge(&kept.nonce, &challenge_ctx("req-1", vec![]))
    );

    let assertion = sign(&mut auth, &options, ORIGIN);
    let ctx = challenge_ctx("req-1", vec![cred.clone()]);
    let updated = approved(
        p.challenge_continue(&ctx, &state, &Input::Json { value: assertion })
            .unwrap(),
    );
    assert_eq!(
        (updated.id.as_str(), updated.label.as_str()),
        (cred.id.as_str(), "work laptop")
    );
    assert_ne!(updated.data, cred.data, "the counter moved and is stored");
}

#[test]
fn an_assertion_answers_only_the_request_it_was_made_for_and_only_once() {
    let p = provider(json!({})).unwrap();
    let mut auth = SoftPasskey::new(true);
    let cred = enrol(&p, &mut auth, "laptop");
    let (options_a, state_a) = start(&p, "req-a", std::slice::from_ref(&cred));
    let (_, state_b) = start(&p, "req-b", std::slice::from_ref(&cred));
    let assertion = sign(&mut auth, &options_a, ORIGIN);
    // Request b's state with a's assertion: another challenge.
    let ctx_b = challenge_ctx("req-b", vec![cred.clone()]);
    let (reason, why) = denied(
        p.challenge_continue(
            &ctx_b,
            &state_b,
            &Input::Json {
                value: assertion.clone(),
            },
        )
        .unwrap(),
    );
    assert_eq!(reason, DenyReason::WrongAnswer);
    assert!(why.contains("another challenge"), "{why}");
    // a's state handed back for request b is refused before any check.
    let e = p
        .challenge_continue(
            &ctx_b,
            &state_a,
            &Input::Json {
                value: assertion.clone(),
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("another request"), "{e}");
    // The same justification edited: the bound challenge differs, so a's assertion fails.
    let mut edited = challenge_ctx("req-a", vec![cred.clone()]);
    edited.justification = "patch night and more".into();
    let kept: Challenge = serde_json::from_slice(&state_a).unwrap();
    assert_ne!(
        bound_challenge(&kept.nonce, &edited),
        bound_challenge(&kept.nonce, &challenge_ctx("req-a", vec![]))
    );
    // Answered once; the same assertion again, against the credential as updated, fails.
    let ctx_a = challenge_ctx("req-a", vec![cred.clone()]);
    let updated = approved(
        p.challenge_continue(
            &ctx_a,
            &state_a,
            &Input::Json {
                value: assertion.clone(),
            },
        )
        .unwrap(),
    );
    // (The host never asks twice for one prompt: a counter at or below the stored one on a
    // fresh challenge means another authenticator holds the key — a copy, named for the host
    // to set the credential aside.)
    let ctx_again = challenge_ctx("req-a", vec![updated]);
    let step = p
        .challenge_continue(&ctx_again, &state_a, &Input::Json { value: assertion })
        .unwrap();
    let Step::Done {
        verdict:
            Verdict::Denied {
                reason,
                message,
                credential_id,
            },
    } = step
    else {
        panic!("expected a denial, got {step:?}");
    };
    assert_eq!(reason, DenyReason::Cloned);
    assert!(message.contains("counter did not advance"), "{message}");
    assert_eq!(credential_id.as_deref(), Some(cred.id.as_str()));
}

#[test]
fn an_approval_says_what_was_verified_for_the_admin() {
    let p = provider(json!({})).unwrap();
    let mut auth = SoftPasskey::new(true);
    let cred = enrol(&p, &mut auth, "work laptop");
    let (options, state) = start(&p, "req-1", std::slice::from_ref(&cred));
    let assertion = sign(&mut auth, &options, ORIGIN);
    let step = p
        .challenge_continue(
            &challenge_ctx("req-1", vec![cred.clone()]),
            &state,
            &Input::Json { value: assertion },
        )
        .unwrap();
    let Step::Done {
        verdict: Verdict::Approved { detail, .. },
    } = step
    else {
        panic!("expected an approval, got {step:?}");
    };
    assert!(
        detail.starts_with(&format!("credential {} (work laptop), AAGUID ", cred.id))
            && detail.contains("user verified, counter "),
        "{detail}"
    );
}

#[test]
fn a_second_credential_needs_a_held_one_proved_first() {
    let p = provider(json!({})).unwrap();
    assert!(p.info().several_credentials);
    let mut laptop = SoftPasskey::new(true);
    let first = enrol(&p, &mut laptop, "laptop");
    let held = vec![first.clone()];
    // The user holds one: the enrolment asks for an assertion by it, not a registration.
    let (options, state) = ask(p.enroll_start(&enrol_ctx(held.clone())).unwrap());
    assert_eq!(options["ceremony"], "get");
    assert_eq!(options["purpose"], "prove");
    // A registration answered at once (skipping the proof) is no assertion: bad input.
    let e = p
        .enroll_continue(
            &enrol_ctx(held.clone()),
            &state,
            &Input::Json {
                value: json!({"credential": {}, "label": "spare"}),
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("not a WebAuthn assertion"), "{e}");
    // An assertion by a credential the user does not hold proves nothing.
    let (reason, _) = denied(
        p.enroll_continue(
            &enrol_ctx(held.clone()),
            &state,
            &Input::Json {
                value: json!({"id": "AAAA", "rawId": "AAAA", "type": "public-key",
                    "response": {"clientDataJSON": "e30", "authenticatorData": "AAAA",
                        "signature": "AAAA", "userHandle": null}}),
            },
        )
        .unwrap(),
    );
    assert_eq!(reason, DenyReason::WrongAnswer);
    // The laptop proves itself: then the registration, excluding the laptop's credential.
    let proof = sign(&mut laptop, &options, ORIGIN);
    let (options, state) = ask(p
        .enroll_continue(
            &enrol_ctx(held.clone()),
            &state,
            &Input::Json { value: proof },
        )
        .unwrap());
    assert_eq!(options["ceremony"], "create");
    assert_eq!(
        options["publicKey"]["excludeCredentials"][0]["id"],
        json!(first.id)
    );
    let mut second = SoftPasskey::new(true);
    let ccr: CreationChallengeResponse = serde_json::from_value(options).unwrap();
    let reg = second
        .do_registration(Url::parse(ORIGIN).unwrap(), ccr)
        .unwrap();
    let added = approved(
        p.enroll_continue(
            &enrol_ctx(held),
            &state,
            &Input::Json {
                value: json!({"credential": reg, "label": "spare key"}),
            },
        )
        .unwrap(),
    );
    assert_eq!(added.label, "spare key");
    assert_ne!(added.id, first.id);
}

#[test]
fn bad_assertions_are_denied_by_name_and_malformed_ones_are_bad_input() {
    let p = provider(json!({})).unwrap();
    let mut auth = SoftPasskey::new(true);
    let cred = enrol(&p, &mut auth, "laptop");
    let ctx = challenge_ctx("req-1", vec![cred.clone()]);

    // Made on an origin the provider does not allow (a subdomain the authenticator accepts).
    let (options, state) = start(&p, "req-1", std::slice::from_ref(&cred));
    let evil = sign(&mut auth, &options, "https://evil.pam.contoso.test");
    let (_, why) = denied(
        p.challenge_continue(&ctx, &state, &Input::Json { value: evil })
            .unwrap(),
    );
    assert!(why.contains("origin"), "{why}");

    // Altered clientDataJSON.
    let (options, state) = start(&p, "req-1", std::slice::from_ref(&cred));
    let mut altered = sign(&mut auth, &options, ORIGIN);
    let cd = altered["response"]["clientDataJSON"]
        .as_str()
        .unwrap()
        .to_string();
    let mut raw = URL_SAFE_NO_PAD.decode(cd).unwrap();
    let last = raw.len() - 2;
    raw[last] ^= 0x01;
    altered["response"]["clientDataJSON"] = json!(URL_SAFE_NO_PAD.encode(raw));
    let step = p.challenge_continue(&ctx, &state, &Input::Json { value: altered });
    match step {
        Ok(s) => {
            denied(s);
        }
        Err(e) => assert!(e.to_string().contains("assertion"), "{e}"),
    }

    // Altered authenticator data: the counter raised after signing (the signature covers
    // it), and the user-verified flag cleared.
    for (byte, flip, said) in [
        (36usize, 0x10u8, "signature does not verify"),
        (32, 0x04, "did not verify the user"),
    ] {
        let (options, state) = start(&p, "req-1", std::slice::from_ref(&cred));
        let mut altered = sign(&mut auth, &options, ORIGIN);
        let ad = altered["response"]["authenticatorData"]
            .as_str()
            .unwrap()
            .to_string();
        let mut raw = URL_SAFE_NO_PAD.decode(ad).unwrap();
        raw[byte] ^= flip;
        altered["response"]["authenticatorData"] = json!(URL_SAFE_NO_PAD.encode(raw));
        let step = p
            .challenge_continue(&ctx, &state, &Input::Json { value: altered })
            .unwrap();
        let (reason, why) = denied(step);
        assert_ne!(reason, DenyReason::Cloned, "{why}");
        assert!(why.contains(said), "{why}");
    }

    // Made for another relying party id (the authenticator signs what the options say).
    let (mut options, state) = start(&p, "req-1", std::slice::from_ref(&cred));
    options["publicKey"]["rpId"] = json!("contoso.test");
    let other_rp = sign(&mut auth, &options, ORIGIN);
    let (_, why) = denied(
        p.challenge_continue(&ctx, &state, &Input::Json { value: other_rp })
            .unwrap(),
    );
    assert!(
        why.contains("relying party") || why.contains("refused"),
        "{why}"
    );

    // A credential this user does not own.
    let mut other = SoftPasskey::new(true);
    let foreign = enrol(&p, &mut other, "someone else's");
    let (options, state) = start(&p, "req-1", &[cred.clone(), foreign.clone()]);
    let theirs = sign(&mut other, &options, ORIGIN);
    let (reason, why) = denied(
        p.challenge_continue(&ctx, &state, &Input::Json { value: theirs })
            .unwrap(),
    );
    assert_eq!(reason, DenyReason::WrongAnswer);
    assert!(why.contains("has not registered"), "{why}");

    // Malformed answers change nothing and say so.
    let (_, state) = start(&p, "req-1", std::slice::from_ref(&cred));
    for bad in [
        Input::Code {
            code: "123456".into(),
        },
        Input::Json {
            value: json!({"id": 7}),
        },
    ] {
        let e = p.challenge_continue(&ctx, &state, &bad).unwrap_err();
        assert_eq!(e.kind, rolegate_sdk::ErrorKind::BadInput, "{e}");
    }
    // An expired prompt.
    let mut late = ctx.clone();
    late.now = NOW + 10_000;
    let (reason, _) = denied(
        p.challenge_continue(&late, &state, &Input::Json { value: json!({}) })
            .unwrap(),
    );
    assert_eq!(reason, DenyReason::Expired);
}

#[test]
fn a_registration_with_malformed_cbor_is_denied_and_stores_nothing() {
    let p = provider(json!({})).unwrap();
    let mut auth = SoftPasskey::new(true);
    let (options, state) = ask(p.enroll_start(&enrol_ctx(vec![])).unwrap());
    let ccr: CreationChallengeResponse = serde_json::from_value(options).unwrap();
    let reg = auth
        .do_registration(Url::parse(ORIGIN).unwrap(), ccr)
        .unwrap();
    let mut reg = serde_json::to_value(reg).unwrap();
    reg["response"]["attestationObject"] = json!(URL_SAFE_NO_PAD.encode([0xa5, 0xff, 0x00, 0x13]));
    let step = p
        .enroll_continue(
            &enrol_ctx(vec![]),
            &state,
            &Input::Json {
                value: json!({"credential": reg, "label": "x"}),
            },
        )
        .unwrap();
    let (_, why) = denied(step);
    assert!(why.contains("refused"), "{why}");
    // Not a registration response at all: bad input, the user may try again.
    let e = p
        .enroll_continue(
            &enrol_ctx(vec![]),
            &state,
            &Input::Json {
                value: json!({"credential": {"id": 1}}),
            },
        )
        .unwrap_err();
    assert_eq!(e.kind, rolegate_sdk::ErrorKind::BadInput, "{e}");
    // A label that is too long, or holds control characters.
    for label in ["x".repeat(65), "a\u{7}b".to_string()] {
        let e = p
            .enroll_continue(
                &enrol_ctx(vec![]),
                &state,
                &Input::Json {
                    value: json!({"credential": {}, "label": label}),
                },
            )
            .unwrap_err();
        assert!(e.to_string().contains("label"), "{e}");
    }
}

#[test]
fn user_verification_is_required_where_the_profile_says() {
    let p = provider(json!({})).unwrap();
    // An authenticator that does not verify its user, behind a client that drops the
    // requirement from the options, cannot register a passkey.
    let mut lax = SoftPasskey::new(false);
    let (mut options, state) = ask(p.enroll_start(&enrol_ctx(vec![])).unwrap());
    options["publicKey"]["authenticatorSelection"]["userVerification"] = json!("discouraged");
    let ccr: CreationChallengeResponse = serde_json::from_value(options).unwrap();
    let reg = lax
        .do_registration(Url::parse(ORIGIN).unwrap(), ccr)
        .unwrap();
    let (_, why) = denied(
        p.enroll_continue(
            &enrol_ctx(vec![]),
            &state,
            &Input::Json {
                value: json!({"credential": reg}),
            },
        )
        .unwrap(),
    );
    assert!(why.contains("verify the user"), "{why}");
}

#[test]
fn windows_hello_accepts_only_authenticators_that_say_they_are_windows_hello() {
    // The software authenticator attests itself without an AAGUID: Windows Hello's profile,
    // which accepts only listed authenticators, refuses it and stores nothing.
    let p = provider(json!({"profile": "windows-hello"})).unwrap();
    assert_eq!(p.info().name, "Windows Hello");
    let mut auth = SoftPasskey::new(true);
    let (options, state) = ask(p.enroll_start(&enrol_ctx(vec![])).unwrap());
    assert_eq!(
        options["publicKey"]["authenticatorSelection"]["authenticatorAttachment"],
        "platform"
    );
    assert_eq!(options["publicKey"]["attestation"], "direct");
    // The software authenticator is no platform one: a client that passes the request to it
    // anyway (the attachment is only a hint) still gets nowhere.
    let mut options = options;
    options["publicKey"]["authenticatorSelection"]
        .as_object_mut()
        .unwrap()
        .remove("authenticatorAttachment");
    let ccr: CreationChallengeResponse = serde_json::from_value(options).unwrap();
    let reg = auth
        .do_registration(Url::parse(ORIGIN).unwrap(), ccr)
        .unwrap();
    let step = p
        .enroll_continue(
            &enrol_ctx(vec![]),
            &state,
            &Input::Json {
                value: json!({"credential": reg, "label": "this PC"}),
            },
        )
        .unwrap();
    let (_, why) = denied(step);
    assert!(why.contains("did not say what it is"), "{why}");
}

#[test]
fn bad_settings_are_refused_naming_the_setting() {
    let cases = [
        (
            json!({"origins": ["http://pam.contoso.test"]}),
            "must be https",
        ),
        (
            json!({"origins": ["https://evil.example"]}),
            "nor a subdomain",
        ),
        (
            json!({"origins": ["https://pam.contoso.test/login"]}),
            "without a path",
        ),
        (json!({"origins": []}), "at least one origin"),
        (
            json!({"rp_id": "https://pam.contoso.test"}),
            "must be a domain",
        ),
        (json!({"profile": "yubikey"}), "profile"),
        (json!({"aaguids": ["not-a-uuid"]}), "is not an AAGUID"),
        (
            json!({"user_verification": "discouraged"}),
            "always requires it",
        ),
        (json!({"expires_in": 5}), "between 30 and 600"),
        (json!({"colour": "blue"}), "unknown field"),
    ];
    for (extra, needle) in cases {
        let e = provider(extra.clone())
            .err()
            .unwrap_or_else(|| panic!("{extra} accepted"));
        assert_eq!(e.kind, rolegate_sdk::ErrorKind::Config, "{e}");
        assert!(e.to_string().contains(needle), "{extra}: {e}");
    }
    // Loopback http is allowed for a test deployment; a subdomain origin too.
    provider(json!({"rp_id": "localhost", "origins": ["http://localhost:8420"]})).unwrap();
    provider(json!({"origins": ["https://login.pam.contoso.test"]})).unwrap();
    provider(json!({"profile": "security-key", "user_verification": "discouraged"})).unwrap();
}

/// A soft token (packed attestation under its own CA) and that CA as a PEM file.
fn soft_token_with_ca(dir: &std::path::Path) -> (SoftToken, String) {
    use x509_cert::der::EncodePem as _;
    let (token, ca) = SoftToken::new(true).unwrap();
    let pem = ca.to_pem(x509_cert::der::pem::LineEnding::LF).unwrap();
    let file = dir.join("soft-ca.pem");
    std::fs::write(&file, pem).unwrap();
    (token, file.display().to_string())
}

fn security_key(extra: Value) -> Result<WebauthnProvider, ProviderError> {
    let mut base = json!({"profile": "security-key", "user_verification": "discouraged"});
    if let (Some(b), Value::Object(more)) = (base.as_object_mut(), extra) {
        b.extend(more);
    }
    provider(base)
}

/// Registers the token with the provider: the verdict.
fn register(p: &WebauthnProvider, token: &mut dyn WebauthnAuthenticator) -> Step {
    let (options, state) = ask(p.enroll_start(&enrol_ctx(vec![])).unwrap());
    let ccr: CreationChallengeResponse = serde_json::from_value(options).unwrap();
    let reg = token
        .do_registration(Url::parse(ORIGIN).unwrap(), ccr)
        .unwrap();
    p.enroll_continue(
        &enrol_ctx(vec![]),
        &state,
        &Input::Json {
            value: json!({"credential": reg, "label": "key"}),
        },
    )
    .unwrap()
}

#[test]
fn attestation_from_a_configured_root_is_accepted_and_from_another_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut token, ca) = soft_token_with_ca(dir.path());
    let aaguid = SOFT_AAGUID.to_string();
    // The token's CA configured for its AAGUID: registered, and the AAGUID proven.
    let p = security_key(json!({"aaguids": [aaguid], "attestation_roots": [ca]})).unwrap();
    let cred = approved(register(&p, &mut token));
    let stored: Stored = serde_json::from_slice(cred.data.as_slice()).unwrap();
    assert!(stored.attested);
    assert_eq!(stored.aaguid.as_deref(), Some(aaguid.as_str()));
    // Another token (its own CA, the same AAGUID claimed): its chain reaches no root.
    let other_dir = tempfile::tempdir().unwrap();
    let (mut forged, _) = soft_token_with_ca(other_dir.path());
    let (reason, why) = denied(register(&p, &mut forged));
    assert_eq!(reason, DenyReason::Other);
    assert!(why.contains("does not chain to a configured root"), "{why}");
    // Without roots the same claim is taken as said (self-asserted), and stored as such.
    let p = security_key(json!({"aaguids": [aaguid]})).unwrap();
    let cred = approved(register(&p, &mut forged));
    let stored: Stored = serde_json::from_slice(cred.data.as_slice()).unwrap();
    assert!(!stored.attested);
}

#[test]
fn attestation_roots_are_refused_by_name_where_they_cannot_apply() {
    let dir = tempfile::tempdir().unwrap();
    let (_, ca) = soft_token_with_ca(dir.path());
    let e = provider(json!({"attestation_roots": [ca]}))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("`passkey` profile accepts any authenticator"),
        "{e}"
    );
    let e = security_key(json!({"attestation_roots": [ca]}))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("needs `aaguids`"), "{e}");
    let e = security_key(json!({"aaguids": [WINDOWS_HELLO_AAGUIDS[0]], "attestation_roots": ["/nonexistent/ca.pem"]}))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("`/nonexistent/ca.pem` cannot be read"), "{e}");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let e =
        security_key(json!({"aaguids": [WINDOWS_HELLO_AAGUIDS[0]], "attestation_roots": [junk]}))
            .err()
            .unwrap()
            .to_string();
    assert!(e.contains("is not a PEM certificate"), "{e}");
}

#[test]
fn an_oversized_answer_is_bad_input_and_changes_nothing() {
    let p = provider(json!({})).unwrap();
    let mut auth = SoftPasskey::new(true);
    let cred = enrol(&p, &mut auth, "laptop");
    let (options, state) = start(&p, "req-1", std::slice::from_ref(&cred));
    let mut assertion = sign(&mut auth, &options, ORIGIN);
    assertion["response"]["clientDataJSON"] = json!("A".repeat(100_000));
    let e = p
        .challenge_continue(
            &challenge_ctx("req-1", vec![cred.clone()]),
            &state,
            &Input::Json { value: assertion },
        )
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("larger than any authenticator's assertion"),
        "{e}"
    );
    // The right answer still lands (the state is untouched).
    let assertion = sign(&mut auth, &options, ORIGIN);
    approved(
        p.challenge_continue(
            &challenge_ctx("req-1", vec![cred]),
            &state,
            &Input::Json { value: assertion },
        )
        .unwrap(),
    );
}
