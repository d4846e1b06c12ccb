use super::*;
use rolegate_sdk::serde_json::{Value, json};
use rolegate_sdk::{Bytes, ErrorKind, UserContext};

fn provider(settings: Value) -> Result<TotpProvider, ProviderError> {
    let Value::Object(map) = settings else {
        panic!("not an object")
    };
    TotpProvider::create(Settings(map))
}

fn secret(raw: &[u8], algorithm: &str, digits: u8) -> Secret {
    Secret {
        secret: totp_rs::Secret::from(raw.to_vec()).to_base32(),
        algorithm: algorithm.into(),
        digits,
        period: 30,
        last_step: None,
    }
}

fn ctx(now: u64, credentials: Vec<Credential>) -> ChallengeContext {
    ChallengeContext {
        user: UserContext {
            account: "CONTOSO\\jdoe".into(),
            ..Default::default()
        },
        role: "admins".into(),
        request_id: "r1".into(),
        credentials,
        now,
        ..Default::default()
    }
}

fn cred(s: &Secret) -> Credential {
    Credential {
        id: "totp-1".into(),
        label: "Authenticator app (SHA1)".into(),
        data: s.encode().unwrap().into(),
    }
}

fn code(c: &str) -> Input {
    Input::Code { code: c.into() }
}

fn start(p: &TotpProvider, c: &ChallengeContext) -> Bytes {
    match p.challenge_start(c).unwrap() {
        Step::Ask { state, .. } => state,
        other => panic!("{other:?}"),
    }
}

fn reason(step: &Step) -> Option<DenyReason> {
    match step {
        Step::Done {
            verdict: Verdict::Denied { reason, .. },
        } => Some(*reason),
        _ => None,
    }
}

fn approved(step: Step) -> Secret {
    match step {
        Step::Done {
            verdict:
                Verdict::Approved {
                    credential: Some(c),
                    ..
                },
        } => Secret::decode(c.data.as_slice()).unwrap(),
        other => panic!("not approved with a credential: {other:?}"),
    }
}

/// RFC 6238, appendix B: every time, every algorithm, 8 digits.
#[test]
fn rfc_6238_test_vectors() {
    let sha1 = b"12345678901234567890".as_slice();
    let sha256 = b"12345678901234567890123456789012".as_slice();
    let sha512 = b"1234567890123456789012345678901234567890123456789012345678901234".as_slice();
    let vectors: &[(u64, &str, &str, &str)] = &[
        (59, "94287082", "46119246", "90693936"),
        (1_111_111_109, "07081804", "68084774", "25091201"),
        (1_111_111_111, "14050471", "67062674", "99943326"),
        (1_234_567_890, "89005924", "91819424", "93441116"),
        (2_000_000_000, "69279037", "90698825", "38618901"),
        (20_000_000_000, "65353130", "77737706", "47863826"),
    ];
    for &(t, c1, c256, c512) in vectors {
        for (raw, alg, want) in [
            (sha1, "SHA1", c1),
            (sha256, "SHA256", c256),
            (sha512, "SHA512", c512),
        ] {
            let s = secret(raw, alg, 8);
            assert_eq!(
                code_for_secret(&s, t).as_deref(),
                Some(want),
                "{alg} at {t}"
            );
            assert_eq!(
                s.check(want, t, 0).unwrap(),
                Check::Accepted(t / 30),
                "{alg} at {t}"
            );
        }
    }
}

#[test]
fn skew_accepts_neighbouring_steps_and_nothing_further() {
    let s = secret(b"12345678901234567890", "SHA1", 6);
    let t = 1_111_111_111u64;
    let step = t / 30;
    let c = code_for_secret(&s, t).unwrap();
    // With skew 1 the code is good one step early and one step late...
    for now in [t - 30, t, t + 30] {
        assert_eq!(s.check(&c, now, 1).unwrap(), Check::Accepted(step), "{now}");
    }
    // ...and not two steps away.
    for now in [t - 60, t + 60] {
        assert_eq!(s.check(&c, now, 1).unwrap(), Check::Wrong, "{now}");
    }
    // Skew 0: only its own step; the step's first and last second both count.
    assert_eq!(s.check(&c, t + 30, 0).unwrap(), Check::Wrong);
    assert_eq!(s.check(&c, step * 30, 0).unwrap(), Check::Accepted(step));
    assert_eq!(
        s.check(&c, step * 30 + 29, 0).unwrap(),
        Check::Accepted(step)
    );
    assert_eq!(s.check(&c, step * 30 + 30, 0).unwrap(), Check::Wrong);
}

#[test]
fn a_code_is_accepted_once_and_never_an_older_one() {
    let p = provider(json!({})).unwrap();
    let s = secret(b"12345678901234567890", "SHA1", 6);
    let t = 1_700_000_000u64;
    let c = ctx(t, vec![cred(&s)]);
    let state = start(&p, &c);
    let now_code = code_for_secret(&s, t).unwrap();
    let updated = approved(
        p.challenge_continue(&c, &state.0, &code(&now_code))
            .unwrap(),
    );
    assert_eq!(
        updated.last_step,
        Some(t / 30),
        "the accepted step travels back"
    );

    // The same code again, with the credential as the host stored it: a replay.
    let c2 = ctx(t + 1, vec![cred(&updated)]);
    let state2 = start(&p, &c2);
    let step = p
        .challenge_continue(&c2, &state2.0, &code(&now_code))
        .unwrap();
    assert_eq!(reason(&step), Some(DenyReason::Replayed));
    // The previous step's code (inside the skew) is older than the accepted one: refused.
    let old = code_for_secret(&s, t - 30).unwrap();
    if old != now_code {
        let step = p.challenge_continue(&c2, &state2.0, &code(&old)).unwrap();
        assert_eq!(reason(&step), Some(DenyReason::Replayed));
    }
    // The next step's code is new: accepted, and it moves the mark on.
    let next = code_for_secret(&s, t + 30).unwrap();
    let later = approved(p.challenge_continue(&c2, &state2.0, &code(&next)).unwrap());
    assert_eq!(later.last_step, Some(t / 30 + 1));
}

#[test]
fn wrong_codes_are_denied_and_malformed_ones_are_bad_input() {
    let p = provider(json!({})).unwrap();
    let s = secret(b"12345678901234567890", "SHA1", 6);
    let t = 1_700_000_000u64;
    let c = ctx(t, vec![cred(&s)]);
    let state = start(&p, &c);
    let right = code_for_secret(&s, t).unwrap();
    let wrong: String = right
        .chars()
        .map(|ch| if ch == '1' { '2' } else { '1' })
        .collect();
    let step = p.challenge_continue(&c, &state.0, &code(&wrong)).unwrap();
    assert_eq!(reason(&step), Some(DenyReason::WrongAnswer));
    for bad in [
        "12345",
        "1234567",
        "12345a",
        "",
        "١٢٣٤٥٦",
        "+12345",
        "12 34 5",
    ] {
        let e = p.challenge_continue(&c, &state.0, &code(bad)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadInput, "{bad:?}");
        assert_eq!(e.message, "the code must be 6 digits");
    }
    // Spaces as apps show them ("123 456") are fine.
    let spaced = format!("{} {}", &right[..3], &right[3..]);
    approved(p.challenge_continue(&c, &state.0, &code(&spaced)).unwrap());
    let e = p
        .challenge_continue(&c, &state.0, &Input::Acknowledge)
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadInput);
    let e = p
        .challenge_continue(&c, b"\x00garbage", &code(&right))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadInput);
    let mut other = ctx(t, vec![cred(&s)]);
    other.request_id = "r2".into();
    let e = p
        .challenge_continue(&other, &state.0, &code(&right))
        .unwrap_err();
    assert!(e.message.contains("another request"), "{}", e.message);
    // A corrupt credential is bad input, not a panic.
    let broken = Credential {
        id: "x".into(),
        label: String::new(),
        data: b"{not json".to_vec().into(),
    };
    let e = p.challenge_start(&ctx(t, vec![broken])).unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadInput);
}

#[test]
fn an_expired_challenge_is_denied_even_with_the_right_code() {
    let p = provider(json!({"expires_in": 30})).unwrap();
    let s = secret(b"12345678901234567890", "SHA1", 6);
    let t = 1_700_000_000u64;
    let state = start(&p, &ctx(t, vec![cred(&s)]));
    let later = ctx(t + 30, vec![cred(&s)]);
    let right = code_for_secret(&s, t + 30).unwrap();
    let step = p
        .challenge_continue(&later, &state.0, &code(&right))
        .unwrap();
    assert_eq!(reason(&step), Some(DenyReason::Expired));
}

#[test]
fn no_credential_means_not_enrolled() {
    let p = provider(json!({})).unwrap();
    let step = p.challenge_start(&ctx(1, vec![])).unwrap();
    assert_eq!(reason(&step), Some(DenyReason::NotEnrolled));
}

fn enrol_ctx(now: u64) -> EnrollContext {
    EnrollContext {
        user: UserContext {
            account: "CONTOSO\\jdoe".into(),
            ..Default::default()
        },
        now,
        ..Default::default()
    }
}

#[test]
fn enrolment_shows_uri_qr_and_key_and_needs_one_valid_code() {
    for (settings, alg, digits, len) in [
        (json!({}), "SHA1", 6u8, 20usize),
        (
            json!({"algorithm": "sha256", "digits": 8, "period": 60, "issuer": "Contoso PAM"}),
            "SHA256",
            8,
            32,
        ),
        (json!({"algorithm": "SHA512"}), "SHA512", 6, 64),
    ] {
        let p = provider(settings).unwrap();
        let t = 1_700_000_000u64;
        let (uri, png, text, state) = match p.enroll_start(&enrol_ctx(t)).unwrap() {
            Step::Ask {
                prompt:
                    Prompt::Display {
                        uri: Some(uri),
                        png: Some(png),
                        text: Some(text),
                        ..
                    },
                state,
                ..
            } => (uri, png, text, state),
            other => panic!("{other:?}"),
        };
        assert!(uri.starts_with("otpauth://totp/"), "{uri}");
        assert!(
            uri.contains(&format!("digits={digits}")) || digits == 6,
            "{uri}"
        );
        let key = secret_of_uri(&uri).unwrap();
        let raw = totp_rs::Secret::try_from_base32(&key).unwrap();
        assert_eq!(raw.as_bytes().len(), len, "{alg}: the HMAC's size");
        assert_eq!(&png.0[..8], b"\x89PNG\r\n\x1a\n");
        assert!(text.contains('█') && text.contains("Key: "), "{text}");
        // The wrong code: denied, nothing enrolled.
        let right = code_for_uri(&uri, t + 5).unwrap();
        let wrong: String = right
            .chars()
            .map(|ch| if ch == '1' { '2' } else { '1' })
            .collect();
        let step = p
            .enroll_continue(&enrol_ctx(t + 5), &state.0, &code(&wrong))
            .unwrap();
        assert_eq!(reason(&step), Some(DenyReason::WrongAnswer));
        // The right one: a credential with the app's parameters, its step spent.
        let s = approved(
            p.enroll_continue(&enrol_ctx(t + 5), &state.0, &code(&right))
                .unwrap(),
        );
        assert_eq!((s.algorithm.as_str(), s.digits), (alg, digits));
        assert!(s.last_step.is_some());
        assert_eq!(
            s.check(&right, t + 5, 1).unwrap(),
            Check::Replayed,
            "the confirming code cannot answer a challenge"
        );
    }
}

#[test]
fn enrolment_refuses_expiry_and_another_users_state() {
    let p = provider(json!({"enrol_expires_in": 60})).unwrap();
    let t = 1_700_000_000u64;
    let (uri, state) = match p.enroll_start(&enrol_ctx(t)).unwrap() {
        Step::Ask {
            prompt: Prompt::Display { uri: Some(uri), .. },
            state,
            ..
        } => (uri, state),
        other => panic!("{other:?}"),
    };
    let late = code_for_uri(&uri, t + 60).unwrap();
    let step = p
        .enroll_continue(&enrol_ctx(t + 60), &state.0, &code(&late))
        .unwrap();
    assert_eq!(reason(&step), Some(DenyReason::Expired));
    let mut other = enrol_ctx(t);
    other.user.account = "CONTOSO\\mallory".into();
    let e = p
        .enroll_continue(&other, &state.0, &code(&late))
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadInput);
}

#[test]
fn settings_are_checked_and_name_the_key() {
    for (settings, key) in [
        (json!({"digitz": 6}), "digitz"),
        (json!({"digits": 7}), "`digits`"),
        (json!({"algorithm": "MD5"}), "`algorithm`"),
        (json!({"period": 5}), "`period`"),
        (json!({"skew": 11}), "`skew`"),
        (json!({"issuer": "a:b"}), "`issuer`"),
        (json!({"issuer": ""}), "`issuer`"),
        (json!({"expires_in": 5}), "`expires_in`"),
        (json!({"enrol_expires_in": 5}), "`enrol_expires_in`"),
        (json!({"period": "soon"}), "period"),
    ] {
        let e = provider(settings.clone()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config, "{settings}");
        assert!(e.message.contains(key), "{settings}: {}", e.message);
    }
    let p = provider(json!({"algorithm": "sha512", "digits": 8, "skew": 0})).unwrap();
    assert_eq!(p.settings.digits, 8);
}

#[test]
fn the_qr_code_decodes_to_its_modules() {
    let qr = qrcodegen::QrCode::encode_text(
        "otpauth://totp/x?secret=AAAA",
        qrcodegen::QrCodeEcc::Medium,
    )
    .unwrap();
    let text = qr_text(&qr);
    let lines: Vec<&str> = text.lines().collect();
    let side = usize::try_from(qr.size()).unwrap() + 4;
    assert_eq!(lines.len(), side.div_ceil(2));
    assert!(lines.iter().all(|l| l.chars().count() == side));
    // The top-left finder pattern's corner module is dark: its cell's upper half is not drawn.
    let row = lines[1].chars().nth(2).unwrap();
    assert!(row == ' ' || row == '▄', "{row:?}");
}

#[cfg(test)]
mod conformance {
    use rolegate_sdk::conformance::{Options, check_provider};

    #[test]
    fn totp_passes_the_conformance_suite_through_the_c_abi() {
        let report = check_provider::<super::TotpProvider>(&Options::default());
        eprintln!("{report}");
        assert!(report.passed_strict(), "{report}");
    }
}
