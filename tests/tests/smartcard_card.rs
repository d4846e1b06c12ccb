//! Smartcards end to end: a real pcscd with vpcd's virtual readers and the virtual PIV card
//! `rolegate-test-piv-card`. OpenSC (an independent PIV client) reads and signs with the
//! card, and the CLI's responder `rolegate::smartcard::sign` signs with P-256, P-384 and
//! RSA-2048 cards; every refusal's message is checked. The tests share the one pcscd a
//! machine can run through `rolegate_e2e::pcsc`'s lock, so they run one at a time.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rolegate::smartcard::{self, CardAnswer, Options};
use rolegate_e2e::pcsc::{Card, CardCert, CardSpec, KeyType, Pcscd, READERS, TestCa, Usage};

const PIN: &str = "123456";
const CHALLENGE: &[u8] = b"rolegate challenge: request 42 for role db-admin, nonce 9f8e7d";

/// A CA and one card certificate of `kind` in a new folder.
fn cert(kind: KeyType) -> (tempfile::TempDir, CardCert) {
    let dir = tempfile::tempdir().unwrap();
    let mut ca = TestCa::new(dir.path(), "rolegate-test-ca");
    let c = ca.issue("jdoe", kind, Usage::DigitalSignature);
    (dir, c)
}

fn opts(wait_ms: u64) -> Options {
    Options {
        reader: None,
        wait: Duration::from_millis(wait_ms),
    }
}

/// `sign` with a fixed PIN; returns the answer and the prompts it was asked with.
fn sign_with(pin: &str, o: &Options) -> (Result<CardAnswer, rolegate::Error>, Vec<String>) {
    let mut prompts = Vec::new();
    let mut progress = Vec::new();
    let r = smartcard::sign(
        CHALLENGE,
        o,
        &mut |p: &str| {
            prompts.push(p.to_string());
            Ok(pin.to_string())
        },
        &mut |m: &str| progress.push(m.to_string()),
    );
    (r, prompts)
}

fn err_text(r: Result<CardAnswer, rolegate::Error>) -> String {
    match r {
        Ok(_) => panic!("the signature succeeded; an error was expected"),
        Err(e) => e.to_string(),
    }
}

/// Runs a command with a bound on its time (killed after `secs`).
fn run_bounded(cmd: &mut Command, secs: u64) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let deadline = Instant::now() + Duration::from_secs(secs);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// An OpenSC configuration without file caching: each test's card is new.
fn opensc_conf(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("opensc.conf");
    std::fs::write(
        &p,
        "app default {\n  framework pkcs15 {\n    use_file_caching = no;\n  }\n}\n",
    )
    .unwrap();
    p
}

fn pem_body(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
}

/// OpenSC reads the card's certificate and signs `data` with `mechanism`; `openssl dgst`
/// verifies the signature with the certificate's public key.
fn opensc_reads_and_signs(kind: KeyType, mechanism: &str, dgst: &str) {
    let (dir, c) = cert(kind);
    let conf = opensc_conf(dir.path());
    let _pcscd = Pcscd::start();
    let _card = Card::insert(&_pcscd, CardSpec::new(&c, PIN));

    let out = run_bounded(
        Command::new("opensc-tool")
            .arg("-n")
            .env("OPENSC_CONF", &conf),
        30,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "Personal Identity Verification Card",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = run_bounded(
        Command::new("pkcs15-tool")
            .args(["--read-certificate", "01"])
            .env("OPENSC_CONF", &conf),
        30,
    );
    assert!(out.status.success(), "{out:?}");
    let read = String::from_utf8_lossy(&out.stdout);
    let mine = std::fs::read_to_string(&c.cert_pem).unwrap();
    assert_eq!(
        pem_body(&read),
        pem_body(&mine),
        "OpenSC read another certificate"
    );

    let data = dir.path().join("data");
    let sig = dir.path().join("sig");
    std::fs::write(&data, CHALLENGE).unwrap();
    let mut cmd = Command::new("pkcs11-tool");
    cmd.args([
        "--module",
        "/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
        "--login",
        "--pin",
        PIN,
        "--sign",
        "--id",
        "01",
        "--mechanism",
        mechanism,
        "--input-file",
    ])
    .arg(&data)
    .arg("--output-file")
    .arg(&sig)
    .env("OPENSC_CONF", &conf);
    if kind != KeyType::Rsa2048 {
        cmd.args(["--signature-format", "openssl"]);
    }
    let out = run_bounded(&mut cmd, 60);
    assert!(out.status.success(), "pkcs11-tool: {out:?}");

    let out = run_bounded(
        Command::new("openssl")
            .args(["dgst", dgst, "-verify"])
            .arg(&c.public_pem)
            .arg("-signature")
            .arg(&sig)
            .arg(&data),
        30,
    );
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK"),
        "openssl could not verify OpenSC's signature: {out:?}"
    );
}

#[test]
fn opensc_reads_the_certificate_and_signs_p256() {
    opensc_reads_and_signs(KeyType::P256, "ECDSA-SHA256", "-sha256");
}

#[test]
fn opensc_reads_the_certificate_and_signs_p384() {
    opensc_reads_and_signs(KeyType::P384, "ECDSA-SHA384", "-sha384");
}

#[test]
fn opensc_reads_the_certificate_and_signs_rsa2048() {
    opensc_reads_and_signs(KeyType::Rsa2048, "SHA256-RSA-PKCS", "-sha256");
}

/// Signs with `rolegate::smartcard::sign` and verifies with the certificate's public key.
fn sign_verifies(kind: KeyType) {
    let (_dir, c) = cert(kind);
    let pcscd = Pcscd::start();
    let _card = Card::insert(&pcscd, CardSpec::new(&c, PIN));
    let (r, prompts) = sign_with(PIN, &opts(5000));
    let answer = r.unwrap_or_else(|e| panic!("sign: {e}\npcscd: {}", pcscd.log()));
    assert_eq!(
        prompts,
        vec![format!(
            "PIN for the card in `{}` (3 tries left)",
            READERS[0]
        )]
    );
    assert_eq!(answer.certificate, std::fs::read(&c.cert_der).unwrap());
    let public = std::fs::read_to_string(&c.public_pem).unwrap();
    match kind {
        KeyType::P256 => {
            use p256::ecdsa::signature::Verifier as _;
            use p256::pkcs8::DecodePublicKey as _;
            let key = p256::ecdsa::VerifyingKey::from_public_key_pem(&public).unwrap();
            let sig = p256::ecdsa::Signature::from_der(&answer.signature).unwrap();
            key.verify(CHALLENGE, &sig)
                .expect("P-256 signature over SHA-256(challenge)");
        }
        KeyType::P384 => {
            use p384::ecdsa::signature::Verifier as _;
            use p384::pkcs8::DecodePublicKey as _;
            let key = p384::ecdsa::VerifyingKey::from_public_key_pem(&public).unwrap();
            let sig = p384::ecdsa::Signature::from_der(&answer.signature).unwrap();
            key.verify(CHALLENGE, &sig)
                .expect("P-384 signature over SHA-384(challenge)");
        }
        KeyType::Rsa2048 => {
            use rsa::pkcs8::DecodePublicKey as _;
            use sha2::Digest as _;
            let key = rsa::RsaPublicKey::from_public_key_pem(&public).unwrap();
            let mut digest_info = vec![
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ];
            digest_info.extend_from_slice(&sha2::Sha256::digest(CHALLENGE));
            assert_eq!(answer.signature.len(), 256);
            key.verify(
                rsa::Pkcs1v15Sign::new_unprefixed(),
                &digest_info,
                &answer.signature,
            )
            .expect("RSA PKCS#1 v1.5 SHA-256 signature over the challenge");
        }
    }
}

#[test]
fn sign_p256_verifies_with_the_certificate_key() {
    sign_verifies(KeyType::P256);
}

#[test]
fn sign_p384_verifies_with_the_certificate_key() {
    sign_verifies(KeyType::P384);
}

#[test]
fn sign_rsa2048_verifies_with_the_certificate_key() {
    sign_verifies(KeyType::Rsa2048);
}

#[test]
fn sign_waits_for_a_card_inserted_late_and_says_so() {
    let (_dir, c) = cert(KeyType::P256);
    let pcscd = Pcscd::start();
    let (tx, rx) = std::sync::mpsc::channel();
    let signer = std::thread::spawn(move || {
        let mut progress = Vec::new();
        let r = smartcard::sign(
            CHALLENGE,
            &opts(10_000),
            &mut |_: &str| Ok(PIN.to_string()),
            &mut |m: &str| {
                progress.push(m.to_string());
                let _ = tx.send(());
            },
        );
        (r, progress)
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("sign said nothing while waiting for a card");
    let _card = Card::insert(&pcscd, CardSpec::new(&c, PIN));
    let (r, progress) = signer.join().unwrap();
    r.unwrap();
    assert_eq!(
        progress,
        vec![format!(
            "Insert your PIV smartcard in one of `{}`, `{}` (waiting up to 10 s)…",
            READERS[0], READERS[1]
        )]
    );
}

#[test]
fn refuses_when_pcscd_is_not_running() {
    let _lock = rolegate_e2e::pcsc::PcscLock::acquire();
    let (r, prompts) = sign_with(PIN, &opts(1000));
    let e = err_text(r);
    assert_eq!(
        e,
        "the PC/SC service (pcscd) is not running: The Smart card resource manager is not \
         running (start it: `systemctl start pcscd.socket`, package pcscd)"
    );
    assert!(prompts.is_empty());
    let e = smartcard::readers().unwrap_err().to_string();
    assert!(
        e.starts_with("the PC/SC service (pcscd) is not running: "),
        "{e}"
    );
}

#[test]
fn refuses_when_there_is_no_reader() {
    let _pcscd = Pcscd::start_without_readers();
    assert_eq!(smartcard::readers().unwrap(), Vec::<String>::new());
    let e = err_text(sign_with(PIN, &opts(1000)).0);
    assert_eq!(
        e,
        "smartcard: no smartcard reader is connected (pcscd lists none); plug one in and try again"
    );
}

#[test]
fn refuses_when_no_card_arrives_in_time() {
    let _pcscd = Pcscd::start();
    assert_eq!(smartcard::readers().unwrap(), READERS.to_vec());
    let started = Instant::now();
    let e = err_text(sign_with(PIN, &opts(1000)).0);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        e,
        format!(
            "smartcard: no card was inserted in any of the readers `{}`, `{}` within 1 s",
            READERS[0], READERS[1]
        )
    );
    let o = Options {
        reader: Some(READERS[1].into()),
        wait: Duration::from_millis(300),
    };
    let e = err_text(sign_with(PIN, &o).0);
    assert_eq!(
        e,
        format!(
            "smartcard: no card was inserted in reader `{}` within 1 s",
            READERS[1]
        )
    );
}

#[test]
fn refuses_an_unknown_reader_and_several_cards_without_a_choice() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca = TestCa::new(dir.path(), "ca");
    let a = ca.issue("a", KeyType::P256, Usage::DigitalSignature);
    let b = ca.issue("b", KeyType::P256, Usage::DigitalSignature);
    let pcscd = Pcscd::start();
    let o = Options {
        reader: Some("Nope Reader 00 00".into()),
        wait: Duration::from_secs(1),
    };
    let e = err_text(sign_with(PIN, &o).0);
    assert_eq!(
        e,
        format!(
            "smartcard: no reader named `Nope Reader 00 00`; the readers are: `{}`, `{}`",
            READERS[0], READERS[1]
        )
    );
    let _a = Card::insert(&pcscd, CardSpec::new(&a, PIN));
    let mut spec = CardSpec::new(&b, PIN);
    spec.slot = 1;
    let _b = Card::insert(&pcscd, spec);
    let e = err_text(sign_with(PIN, &opts(1000)).0);
    assert_eq!(
        e,
        format!(
            "smartcard: several readers hold a card (`{}`, `{}`); choose one with --reader",
            READERS[0], READERS[1]
        )
    );
    let o = Options {
        reader: Some(READERS[1].into()),
        wait: Duration::from_secs(1),
    };
    let answer = sign_with(PIN, &o).0.unwrap();
    assert_eq!(answer.certificate, std::fs::read(&b.cert_der).unwrap());
}

#[test]
fn refuses_a_card_that_is_not_piv() {
    let (_dir, c) = cert(KeyType::P256);
    let pcscd = Pcscd::start();
    let mut spec = CardSpec::new(&c, PIN);
    spec.not_piv = true;
    let _card = Card::insert(&pcscd, spec);
    let (r, prompts) = sign_with(PIN, &opts(1000));
    assert_eq!(
        err_text(r),
        format!(
            "smartcard: the card in `{}` is not a PIV card (SELECT of the PIV application answered 6A82)",
            READERS[0]
        )
    );
    assert!(
        prompts.is_empty(),
        "a PIN was asked for a card that is not PIV"
    );
}

#[test]
fn wrong_pins_name_the_tries_left_then_the_pin_is_blocked_and_stays_blocked() {
    let (dir, c) = cert(KeyType::P256);
    let state = dir.path().join("card-state");
    let pcscd = Pcscd::start();
    let mut spec = CardSpec::new(&c, PIN);
    spec.state = Some(state.clone());
    let card = Card::insert(&pcscd, spec.clone());
    let reader = READERS[0];

    let (r, prompts) = sign_with("654321", &opts(1000));
    let e = err_text(r);
    assert_eq!(
        e,
        format!(
            "smartcard: wrong PIN for the card in `{reader}`: 2 tries left before the PIN is blocked"
        )
    );
    assert!(!e.contains("654321"));
    assert_eq!(
        prompts,
        vec![format!("PIN for the card in `{reader}` (3 tries left)")]
    );

    let (r, prompts) = sign_with("654321", &opts(1000));
    assert_eq!(
        err_text(r),
        format!(
            "smartcard: wrong PIN for the card in `{reader}`: 1 try left before the PIN is blocked"
        )
    );
    assert_eq!(
        prompts,
        vec![format!("PIN for the card in `{reader}` (2 tries left)")]
    );

    let blocked = format!(
        "smartcard: the PIN of the card in `{reader}` is blocked (too many wrong PINs); unblock it with the card's PUK"
    );
    let (r, _) = sign_with("654321", &opts(1000));
    assert_eq!(err_text(r), blocked);

    // The right PIN does not help, and is not even asked for.
    let (r, prompts) = sign_with(PIN, &opts(1000));
    assert_eq!(err_text(r), blocked);
    assert!(prompts.is_empty());

    // Pulled and inserted again: still blocked (the card keeps its counter).
    card.remove();
    let _card = Card::insert(&pcscd, spec);
    let (r, prompts) = sign_with(PIN, &opts(1000));
    assert_eq!(err_text(r), blocked);
    assert!(prompts.is_empty());
}

#[test]
fn a_right_pin_after_a_wrong_one_resets_the_tries() {
    let (_dir, c) = cert(KeyType::P256);
    let pcscd = Pcscd::start();
    let _card = Card::insert(&pcscd, CardSpec::new(&c, PIN));
    let _ = err_text(sign_with("000000", &opts(1000)).0);
    let (r, prompts) = sign_with(PIN, &opts(1000));
    r.unwrap();
    assert_eq!(
        prompts,
        vec![format!(
            "PIN for the card in `{}` (2 tries left)",
            READERS[0]
        )]
    );
    let (r, prompts) = sign_with(PIN, &opts(1000));
    r.unwrap();
    assert_eq!(
        prompts,
        vec![format!(
            "PIN for the card in `{}` (3 tries left)",
            READERS[0]
        )]
    );
}

#[test]
fn refuses_a_malformed_pin_without_sending_it() {
    let (_dir, c) = cert(KeyType::P256);
    let pcscd = Pcscd::start();
    let _card = Card::insert(&pcscd, CardSpec::new(&c, PIN));
    for bad in ["12345", "123456789", "12345a", ""] {
        let e = err_text(sign_with(bad, &opts(1000)).0);
        assert_eq!(
            e,
            "PIN: a PIV PIN is 6 to 8 digits; nothing was sent to the card"
        );
    }
    // Nothing reached the card: it still has its 3 tries.
    let (r, prompts) = sign_with(PIN, &opts(1000));
    r.unwrap();
    assert_eq!(
        prompts,
        vec![format!(
            "PIN for the card in `{}` (3 tries left)",
            READERS[0]
        )]
    );
}

#[test]
fn a_pin_prompt_that_gives_up_ends_the_signature_with_its_error() {
    let (_dir, c) = cert(KeyType::P256);
    let pcscd = Pcscd::start();
    let _card = Card::insert(&pcscd, CardSpec::new(&c, PIN));
    let r = smartcard::sign(
        CHALLENGE,
        &opts(1000),
        &mut |_: &str| {
            Err(rolegate::Error::Invalid {
                what: "PIN".into(),
                message: "no PIN given".into(),
            })
        },
        &mut |_: &str| {},
    );
    assert_eq!(err_text(r), "PIN: no PIN given");
}

#[test]
fn a_card_removed_mid_signature_is_named() {
    let (_dir, c) = cert(KeyType::P256);
    let pcscd = Pcscd::start();
    let mut spec = CardSpec::new(&c, PIN);
    spec.die_on_sign = true;
    let mut card = Card::insert(&pcscd, spec);
    let started = Instant::now();
    let e = err_text(sign_with(PIN, &opts(1000)).0);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        e.starts_with(&format!(
            "smartcard: the card was removed from `{}` during the signature (",
            READERS[0]
        )) && e.ends_with("); insert it and try again"),
        "{e}\npcscd: {}",
        pcscd.log()
    );
    // The card process closed its socket as it exited: it may still be exiting (bounded).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !card.exited() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(card.exited());
}

#[test]
fn a_card_pulled_while_the_pin_is_typed_is_named() {
    let (_dir, c) = cert(KeyType::P256);
    let pcscd = Pcscd::start();
    let mut card = Some(Card::insert(&pcscd, CardSpec::new(&c, PIN)));
    let r = smartcard::sign(
        CHALLENGE,
        &opts(1000),
        &mut |_: &str| {
            if let Some(c) = card.take() {
                c.remove();
            }
            Ok(PIN.to_string())
        },
        &mut |_: &str| {},
    );
    assert!(card.is_none(), "the PIN was never asked for");
    assert_eq!(
        err_text(r),
        format!(
            "smartcard: the card was removed from `{}` during the PIN check (The smart card has \
             been removed, so further communication is not possible); insert it and try again",
            READERS[0]
        )
    );
}

#[test]
fn a_certificate_without_digital_signature_is_still_returned_for_the_provider_to_judge() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca = TestCa::new(dir.path(), "ca");
    let c = ca.issue("jdoe", KeyType::P256, Usage::WithoutDigitalSignature);
    let text = run_bounded(
        Command::new("openssl")
            .args(["x509", "-noout", "-ext", "keyUsage", "-in"])
            .arg(&c.cert_pem),
        30,
    );
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("Non Repudiation") && !text.contains("Digital Signature"),
        "{text}"
    );
    let pcscd = Pcscd::start();
    let _card = Card::insert(&pcscd, CardSpec::new(&c, PIN));
    let answer = sign_with(PIN, &opts(1000)).0.unwrap();
    assert_eq!(answer.certificate, std::fs::read(&c.cert_der).unwrap());
}
