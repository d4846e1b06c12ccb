//! The provider with certificates, keys, signatures and a CRL made by the `openssl` command
//! (an independent implementation): enrolment's checks, request-bound signatures for P-256,
//! P-384 and RSA-2048, and the refusals.

use std::path::{Path, PathBuf};
use std::process::Command;

use rolegate_sdk::UserContext;
use rolegate_sdk::serde_json::json;

use super::*;

/// Runs openssl in `dir`; panics with its words when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test PKI in a temporary folder: a P-256 CA, and card certificates it issues.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("ca.cnf"),
            "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 30\n",
        )
        .unwrap();
        std::fs::write(d.join("index.txt"), "").unwrap();
        std::fs::write(d.join("crlnumber"), "01\n").unwrap();
        openssl(
            d,
            &[
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "ca.key",
            ],
        );
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-subj",
                "/CN=Contoso Card CA",
                "-days",
                "3650",
                "-out",
                "ca.pem",
            ],
        );
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A card key (`p256`, `p384`, `rsa`) and its certificate `name.pem`/`name.der`, issued by
    /// the CA (or self-signed), with the key usage given.
    fn card(&self, name: &str, alg: &str, key_usage: &str, self_signed: bool) -> Vec<u8> {
        let d = self.dir.path();
        let key = format!("{name}.key");
        match alg {
            "p256" => openssl(
                d,
                &[
                    "ecparam",
                    "-name",
                    "prime256v1",
                    "-genkey",
                    "-noout",
                    "-out",
                    &key,
                ],
            ),
            "p384" => openssl(
                d,
                &[
                    "ecparam",
                    "-name",
                    "secp384r1",
                    "-genkey",
                    "-noout",
                    "-out",
                    &key,
                ],
            ),
            _ => openssl(d, &["genrsa", "-out", &key, "2048"]),
        }
        let ext = format!(
            "keyUsage=critical,{key_usage}\nextendedKeyUsage=clientAuth,1.3.6.1.4.1.311.20.2.2\n"
        );
        std::fs::write(d.join(format!("{name}.ext")), ext).unwrap();
        let subj = format!("/CN={name}/O=Contoso");
        if self_signed {
            openssl(
                d,
                &[
                    "req",
                    "-x509",
                    "-new",
                    "-key",
                    &key,
                    "-subj",
                    &subj,
                    "-days",
                    "365",
                    "-extensions",
                    "v3",
                    "-config",
                    &self.cnf(name),
                    "-out",
                    &format!("{name}.pem"),
                ],
            );
        } else {
            openssl(
                d,
                &[
                    "req",
                    "-new",
                    "-key",
                    &key,
                    "-subj",
                    &subj,
                    "-out",
                    &format!("{name}.csr"),
                ],
            );
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "365",
                    "-extfile",
                    &format!("{name}.ext"),
                    "-out",
                    &format!("{name}.pem"),
                ],
            );
        }
        openssl(
            d,
            &[
                "x509",
                "-in",
                &format!("{name}.pem"),
                "-outform",
                "DER",
                "-out",
                &format!("{name}.der"),
            ],
        );
        std::fs::read(d.join(format!("{name}.der"))).unwrap()
    }

    /// A config for a self-signed card certificate with the card's extensions.
    fn cnf(&self, name: &str) -> String {
        let ext = std::fs::read_to_string(self.path(&format!("{name}.ext"))).unwrap();
        let file = format!("{name}.cnf");
        std::fs::write(
            self.path(&file),
            format!("[req]\ndistinguished_name = dn\n[dn]\n[v3]\n{ext}"),
        )
        .unwrap();
        file
    }

    /// The card `name`'s signature over `message`, as openssl makes it (ECDSA DER with the
    /// curve's hash, RSA PKCS#1 v1.5 with SHA-256).
    fn sign(&self, name: &str, message: &[u8], hash: &str) -> Vec<u8> {
        std::fs::write(self.path("msg.bin"), message).unwrap();
        openssl(
            self.dir.path(),
            &[
                "dgst",
                hash,
                "-sign",
                &format!("{name}.key"),
                "-out",
                "sig.bin",
                "msg.bin",
            ],
        );
        std::fs::read(self.path("sig.bin")).unwrap()
    }

    /// Revokes `name`'s certificate and writes the CA's CRL (`crl.pem`).
    fn revoke(&self, name: &str) {
        let d = self.dir.path();
        openssl(
            d,
            &[
                "ca",
                "-config",
                "ca.cnf",
                "-keyfile",
                "ca.key",
                "-cert",
                "ca.pem",
                "-revoke",
                &format!("{name}.pem"),
            ],
        );
        self.crl();
    }

    /// Writes the CA's CRL as it stands (`crl.pem`).
    fn crl(&self) {
        openssl(
            self.dir.path(),
            &[
                "ca", "-config", "ca.cnf", "-keyfile", "ca.key", "-cert", "ca.pem", "-gencrl",
                "-out", "crl.pem",
            ],
        );
    }
}

fn provider(settings: Value) -> Result<SmartcardProvider, ProviderError> {
    let Value::Object(map) = settings else {
        unreachable!("an object")
    };
    SmartcardProvider::create(Settings(map))
}

fn user() -> UserContext {
    UserContext {
        account: "CONTOSO\\jdoe".into(),
        display_name: "Jane Doe".into(),
        ..Default::default()
    }
}

fn enrol_ctx(now: u64) -> EnrollContext {
    EnrollContext {
        user: user(),
        credentials: vec![],
        origin: None,
        now,
    }
}

fn challenge_ctx(request: &str, credentials: Vec<Credential>, now: u64) -> ChallengeContext {
    ChallengeContext {
        user: user(),
        role: "Domain Admins".into(),
        request_id: request.into(),
        ttl_s: 3600,
        justification: "patch night".into(),
        credentials,
        origin: None,
        now,
    }
}

/// The prompt's bytes to sign and the state.
fn prompt(step: Step) -> (Vec<u8>, String, Vec<u8>) {
    match step {
        Step::Ask {
            prompt: Prompt::Smartcard { message, challenge },
            state,
            ..
        } => (
            challenge.as_slice().to_vec(),
            message,
            state.as_slice().to_vec(),
        ),
        other => panic!("expected a smartcard prompt, got {other:?}"),
    }
}

fn card_answer(cert: &[u8], sig: &[u8]) -> Input {
    Input::Json {
        value: json!({"certificate": STANDARD.encode(cert), "signature": STANDARD.encode(sig)}),
    }
}

fn verdict(step: Step) -> Verdict {
    match step {
        Step::Done { verdict } => verdict,
        other => panic!("expected a verdict, got {other:?}"),
    }
}

fn denied(step: Step) -> (DenyReason, String) {
    match verdict(step) {
        Verdict::Denied {
            reason, message, ..
        } => (reason, message),
        other => panic!("expected a denial, got {other:?}"),
    }
}

/// Enrols card `name` with provider `p`: the verdict.
fn enrol(p: &SmartcardProvider, pki: &Pki, name: &str, cert: &[u8], hash: &str, now: u64) -> Step {
    let (challenge, _, state) = prompt(p.enroll_start(&enrol_ctx(now)).unwrap());
    let sig = pki.sign(name, &challenge, hash);
    p.enroll_continue(&enrol_ctx(now), &state, &card_answer(cert, &sig))
        .unwrap()
}

fn credential(step: Step) -> Credential {
    match verdict(step) {
        Verdict::Approved {
            credential: Some(c),
            ..
        } => c,
        other => panic!("expected an approval with a credential, got {other:?}"),
    }
}

#[test]
fn each_supported_key_enrols_and_signs_a_request_bound_challenge() {
    let pki = Pki::new();
    let ca = pki.path("ca.pem").display().to_string();
    let p = provider(json!({"ca_files": [ca], "extended_key_usages": ["1.3.6.1.4.1.311.20.2.2"]}))
        .unwrap();
    for (name, alg, hash) in [
        ("p256card", "p256", "-sha256"),
        ("p384card", "p384", "-sha384"),
        ("rsacard", "rsa", "-sha256"),
    ] {
        let cert = pki.card(name, alg, "digitalSignature", false);
        let cred = credential(enrol(&p, &pki, name, &cert, hash, unix_now()));
        assert_eq!(cred.id, hex(&Sha256::digest(&cert)), "{name}");
        assert!(cred.label.contains(&format!("CN={name}")), "{}", cred.label);

        let ctx = challenge_ctx("req-1", vec![cred.clone()], unix_now() + 5);
        let (challenge, message, state) = prompt(p.challenge_start(&ctx).unwrap());
        // The user reads what they approve; the bytes commit to it.
        assert!(
            message.contains("Domain Admins")
                && message.contains("60 min")
                && message.contains("patch night"),
            "{message}"
        );
        let kept: Pending = serde_json::from_slice(&state).unwrap();
        assert_eq!(STANDARD.decode(kept.challenge).unwrap(), challenge);
        let sig = pki.sign(name, &challenge, hash);
        match verdict(
            p.challenge_continue(&ctx, &state, &card_answer(&cert, &sig))
                .unwrap(),
        ) {
            Verdict::Approved {
                credential: None,
                detail,
            } => {
                assert!(
                    detail.contains(&format!("CN={name}")) && detail.contains(&cred.id),
                    "{detail}"
                );
            }
            other => panic!("{name}: {other:?}"),
        }
        // The signature alone (no certificate) is tried against the enrolled card.
        let step = p
            .challenge_continue(
                &ctx,
                &state,
                &Input::Bytes {
                    data: sig.clone().into(),
                },
            )
            .unwrap();
        assert!(matches!(verdict(step), Verdict::Approved { .. }), "{name}");
        // The same signature for another request (another nonce, another request id): no.
        let other = challenge_ctx("req-2", vec![cred.clone()], unix_now() + 5);
        let (_, _, state2) = prompt(p.challenge_start(&other).unwrap());
        let (reason, why) = denied(
            p.challenge_continue(&other, &state2, &card_answer(&cert, &sig))
                .unwrap(),
        );
        assert_eq!(reason, DenyReason::WrongAnswer, "{name}: {why}");
        assert!(why.contains("over this request's challenge"), "{why}");
    }
}

#[test]
fn enrolment_refuses_certificates_the_settings_do_not_accept_and_stores_nothing() {
    let pki = Pki::new();
    let ca = pki.path("ca.pem").display().to_string();
    let p =
        provider(json!({"ca_files": [ca], "extended_key_usages": ["1.3.6.1.5.5.7.3.2"]})).unwrap();
    // No digitalSignature in the key usage.
    let cert = pki.card("encipher", "p256", "keyEncipherment", false);
    let (reason, why) = denied(enrol(&p, &pki, "encipher", &cert, "-sha256", unix_now()));
    assert_eq!(reason, DenyReason::Other);
    assert!(why.contains("not for digital signatures"), "{why}");
    // Not issued by the configured CA.
    let cert = pki.card("selfsigned", "p256", "digitalSignature", true);
    let (_, why) = denied(enrol(&p, &pki, "selfsigned", &cert, "-sha256", unix_now()));
    assert!(
        why.contains("not issued by a CA this provider trusts"),
        "{why}"
    );
    // Expired (the host's clock after its end) and not yet valid.
    let cert = pki.card("good", "p256", "digitalSignature", false);
    let (_, why) = denied(enrol(
        &p,
        &pki,
        "good",
        &cert,
        "-sha256",
        unix_now() + 3 * 365 * 86_400,
    ));
    assert!(why.contains("expired on"), "{why}");
    let (_, why) = denied(enrol(&p, &pki, "good", &cert, "-sha256", 1_000_000_000));
    assert!(why.contains("not valid before"), "{why}");
    // An extended key usage the provider does not require.
    let p2 = provider(json!({"extended_key_usages": ["1.3.6.1.5.5.7.3.4"]})).unwrap();
    let (_, why) = denied(enrol(&p2, &pki, "good", &cert, "-sha256", unix_now()));
    assert!(why.contains("none of the extended key usages"), "{why}");
    // A signature by another key over the challenge: the card does not hold this certificate's key.
    let _ = pki.card("other", "p256", "digitalSignature", false);
    let (challenge, _, state) = prompt(p.enroll_start(&enrol_ctx(unix_now())).unwrap());
    let sig = pki.sign("other", &challenge, "-sha256");
    let (reason, why) = denied(
        p.enroll_continue(&enrol_ctx(unix_now()), &state, &card_answer(&cert, &sig))
            .unwrap(),
    );
    assert_eq!(reason, DenyReason::WrongAnswer);
    assert!(why.contains("not the card's"), "{why}");
    // Malformed DER, no certificate, a wrong input kind: bad input.
    for input in [
        card_answer(b"\x30\x03\x02\x01", b"x"),
        Input::Json {
            value: json!({"signature": "AAAA"}),
        },
        Input::Code {
            code: "123456".into(),
        },
        Input::Json {
            value: json!({"certificate": "not base64!", "signature": "AAAA"}),
        },
    ] {
        let (_, _, state) = prompt(p.enroll_start(&enrol_ctx(unix_now())).unwrap());
        match p.enroll_continue(&enrol_ctx(unix_now()), &state, &input) {
            Err(e) => assert_eq!(e.kind, rolegate_sdk::ErrorKind::BadInput, "{e}"),
            Ok(step) => {
                let (_, why) = denied(step);
                assert!(why.contains("not valid DER"), "{why}");
            }
        }
    }
}

#[test]
fn expiry_and_revocation_are_checked_again_at_each_use() {
    let pki = Pki::new();
    let ca = pki.path("ca.pem").display().to_string();
    pki.crl();
    let crl = pki.path("crl.pem").display().to_string();
    let p = provider(json!({"ca_files": [ca], "crl_file": crl})).unwrap();
    let cert = pki.card("card", "p256", "digitalSignature", false);
    // Enrolled while the CRL was recent (it is dated now; the test's clock is the CRL's).
    let now = unix_now();
    let cred = credential(enrol(&p, &pki, "card", &cert, "-sha256", now));
    let use_at = |t: u64| {
        let ctx = challenge_ctx("req-1", vec![cred.clone()], t);
        let (challenge, _, state) = prompt(p.challenge_start(&ctx).unwrap());
        let sig = pki.sign("card", &challenge, "-sha256");
        p.challenge_continue(&ctx, &state, &card_answer(&cert, &sig))
            .unwrap()
    };
    assert!(matches!(verdict(use_at(now + 5)), Verdict::Approved { .. }));
    // The CRL past its next update: every card refused (fail closed).
    let (_, why) = denied(use_at(now + 40 * 86_400));
    assert!(why.contains("out of date"), "{why}");
    // The certificate expired after enrolment.
    let p_no_crl = provider(json!({})).unwrap();
    let ctx = challenge_ctx("req-9", vec![cred.clone()], now + 2 * 365 * 86_400);
    let (challenge, _, state) = prompt(p_no_crl.challenge_start(&ctx).unwrap());
    let sig = pki.sign("card", &challenge, "-sha256");
    let (_, why) = denied(
        p_no_crl
            .challenge_continue(&ctx, &state, &card_answer(&cert, &sig))
            .unwrap(),
    );
    assert!(why.contains("expired on"), "{why}");
    // Revoked after enrolment: refused at the next use, and at enrolment.
    pki.revoke("card");
    let (_, why) = denied(use_at(now + 5));
    assert!(why.contains("was revoked on"), "{why}");
    let (_, why) = denied(enrol(&p, &pki, "card", &cert, "-sha256", now));
    assert!(why.contains("was revoked on"), "{why}");
}

#[test]
fn another_card_and_malformed_answers_are_refused_by_name() {
    let pki = Pki::new();
    let p = provider(json!({})).unwrap();
    let cert = pki.card("mine", "p256", "digitalSignature", false);
    let cred = credential(enrol(&p, &pki, "mine", &cert, "-sha256", unix_now()));
    let theirs = pki.card("theirs", "p256", "digitalSignature", false);
    let ctx = challenge_ctx("req-1", vec![cred.clone()], unix_now() + 5);
    let (challenge, _, state) = prompt(p.challenge_start(&ctx).unwrap());
    let sig = pki.sign("theirs", &challenge, "-sha256");
    let (reason, why) = denied(
        p.challenge_continue(&ctx, &state, &card_answer(&theirs, &sig))
            .unwrap(),
    );
    assert_eq!(reason, DenyReason::WrongAnswer);
    assert!(
        why.contains("CN=theirs") && why.contains("is not the one enrolled"),
        "{why}"
    );
    // The enrolled certificate with another key's signature, or over other bytes.
    let (reason, _) = denied(
        p.challenge_continue(&ctx, &state, &card_answer(&cert, &sig))
            .unwrap(),
    );
    assert_eq!(reason, DenyReason::WrongAnswer);
    let other_bytes = pki.sign("mine", b"something else", "-sha256");
    let (reason, _) = denied(
        p.challenge_continue(&ctx, &state, &card_answer(&cert, &other_bytes))
            .unwrap(),
    );
    assert_eq!(reason, DenyReason::WrongAnswer);
    // Another request's state, an expired prompt, a malformed answer.
    let e = p
        .challenge_continue(
            &challenge_ctx("req-2", vec![cred.clone()], unix_now() + 5),
            &state,
            &card_answer(&cert, &sig),
        )
        .unwrap_err();
    assert!(e.to_string().contains("another user or request"), "{e}");
    let late = challenge_ctx("req-1", vec![cred.clone()], unix_now() + 1000);
    let (reason, _) = denied(
        p.challenge_continue(&late, &state, &card_answer(&cert, &sig))
            .unwrap(),
    );
    assert_eq!(reason, DenyReason::Expired);
    let e = p
        .challenge_continue(
            &ctx,
            &state,
            &Input::Json {
                value: json!({"certificate": STANDARD.encode(&cert)}),
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("no `signature`"), "{e}");
    // Not enrolled.
    let (reason, _) = denied(
        p.challenge_start(&challenge_ctx("req-3", vec![], unix_now()))
            .unwrap(),
    );
    assert_eq!(reason, DenyReason::NotEnrolled);
}

#[test]
fn unsupported_keys_and_bad_settings_are_refused_by_name() {
    let pki = Pki::new();
    let d = pki.dir.path();
    // An Ed25519 card certificate (self-signed): not a PIV algorithm this provider verifies.
    openssl(d, &["genpkey", "-algorithm", "ed25519", "-out", "ed.key"]);
    std::fs::write(
        d.join("ed.cnf"),
        "[req]\ndistinguished_name = dn\n[dn]\n[v3]\nkeyUsage=critical,digitalSignature\n",
    )
    .unwrap();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "ed.key",
            "-subj",
            "/CN=ed",
            "-days",
            "30",
            "-extensions",
            "v3",
            "-config",
            "ed.cnf",
            "-outform",
            "DER",
            "-out",
            "ed.der",
        ],
    );
    let ed = std::fs::read(d.join("ed.der")).unwrap();
    let p = provider(json!({})).unwrap();
    let (_, _, state) = prompt(p.enroll_start(&enrol_ctx(unix_now())).unwrap());
    let (_, why) = denied(
        p.enroll_continue(&enrol_ctx(unix_now()), &state, &card_answer(&ed, b"sig"))
            .unwrap(),
    );
    assert!(
        why.contains("key algorithm") && why.contains("not supported"),
        "{why}"
    );

    for (settings, said) in [
        (
            json!({"ca_files": ["/nonexistent/ca.pem"]}),
            "`/nonexistent/ca.pem` cannot be read",
        ),
        (
            json!({"extended_key_usages": ["client auth"]}),
            "`client auth` is not an OID",
        ),
        (
            json!({"crl_file": "/nonexistent/crl.pem"}),
            "`/nonexistent/crl.pem` cannot be read",
        ),
        (json!({"expires_in": 5}), "between 30 and 600"),
        (json!({"pin": "1234"}), "pin"),
    ] {
        let e = provider(settings).err().unwrap().to_string();
        assert!(e.contains(said), "{e}");
    }
    let junk = pki.path("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let e = provider(json!({"ca_files": [junk]}))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("holds no certificate") || e.contains("is not PEM"),
        "{e}"
    );
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
