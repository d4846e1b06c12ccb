//! The smartcard round trip through pcscd and vpcd at c=1: the CLI responder's whole work for
//! one signature (find the reader with a card, connect, SELECT PIV, GET DATA 9A, VERIFY PIN,
//! GENERAL AUTHENTICATE, reset on disconnect) against the tests' virtual PIV card, P-256 and
//! RSA-2048. The card is software, so this is the floor of what PC/SC and vpcd cost; a real
//! card's own signing time (tens to hundreds of ms) adds to it.
//!
//! (vpcd sends each message in two writes without TCP_NODELAY: the virtual card acknowledges
//! at once — TCP_QUICKACK — or every message waits ~40 ms for a delayed ACK, and a signature
//! took ~580 ms instead of ~2.)
//!
//! Run (as root, with pcscd, vsmartcard-vpcd and iproute2 installed, and no other pcscd):
//! `cargo build --workspace && cargo bench -p rolegate-e2e --bench card`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a bench: failing loudly is right

use std::time::{Duration, Instant};

use rolegate_e2e::pcsc::{Card, CardSpec, KeyType, Pcscd, READERS, TestCa, Usage};

fn main() {
    let pki = tempfile::tempdir().unwrap();
    let mut ca = TestCa::new(pki.path(), "Bench CA");
    let pcscd = Pcscd::start();
    println!("| card key | signatures | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|");
    for (name, kind) in [("P-256", KeyType::P256), ("RSA-2048", KeyType::Rsa2048)] {
        let cert = ca.issue(name, kind, Usage::DigitalSignature);
        let card = Card::insert(&pcscd, CardSpec::new(&cert, "123456"));
        let options = rolegate::smartcard::Options {
            reader: Some(READERS[0].into()),
            wait: Duration::from_secs(5),
        };
        let mut samples = Vec::new();
        let start = Instant::now();
        while samples.len() < 300 && start.elapsed() < Duration::from_secs(30) {
            let t = Instant::now();
            let answer = rolegate::smartcard::sign(
                b"rolegate bench challenge",
                &options,
                &mut |_| Ok("123456".into()),
                &mut |_| {},
            )
            .unwrap();
            samples.push(t.elapsed());
            assert!(!answer.signature.is_empty());
        }
        samples.sort();
        let q = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
        println!(
            "| {name} | {} | {:.2} | {:.2} | {:.2} |",
            samples.len(),
            q(0.5),
            q(0.99),
            q(1.0)
        );
        card.remove();
    }
}
