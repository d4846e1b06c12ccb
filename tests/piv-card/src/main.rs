//! A virtual PIV card for the tests: connects to vpcd (the virtual reader driver of pcscd)
//! and answers the PIV commands a PIV Authentication (slot 9A) signature needs.
//!
//! Usage: `rolegate-test-piv-card <host:port> --key <PKCS#8 PEM> --cert <DER or PEM>
//! --pin <digits> [--retries N] [--state FILE] [--not-piv] [--die-on-sign]`.
//!
//! vpcd's protocol: every message is a 2-byte big-endian length and a payload; from vpcd a
//! 1-byte payload is a control code (00 power off, 01 power on, 02 reset, 04 get ATR), a
//! longer one a command APDU answered with the response APDU.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::ExitCode;

/// The ATR: T=1, no extended length (the readers chain commands and use GET RESPONSE).
const ATR: &[u8] = &[
    0x3B, 0x88, 0x80, 0x01, b'R', b'G', b'P', b'I', b'V', b'C', b'A', b'R', 0x5D,
];
/// The PIV application identifier (without its version).
const PIV_AID: &[u8] = &[0xA0, 0x00, 0x00, 0x03, 0x08];
/// GET DATA's tag of the PIV Authentication certificate.
const TAG_CERT_9A: &[u8] = &[0x5F, 0xC1, 0x05];

/// The card's private key.
enum Key {
    /// ECC P-256 (algorithm 11).
    P256(p256::ecdsa::SigningKey),
    /// ECC P-384 (algorithm 14).
    P384(p384::ecdsa::SigningKey),
    /// RSA-2048 (algorithm 07).
    Rsa(Box<rsa::RsaPrivateKey>),
}

/// What the command line configures.
struct Config {
    addr: String,
    key: Key,
    cert: Vec<u8>,
    pin: Vec<u8>,
    max_retries: u8,
    state: Option<PathBuf>,
    not_piv: bool,
    die_on_sign: bool,
}

/// The card's volatile and persistent state.
struct Card {
    config: Config,
    retries: u8,
    selected: bool,
    verified: bool,
    /// Command data gathered by command chaining (CLA bit 0x10).
    chain: Vec<u8>,
    /// Response data still to be fetched with GET RESPONSE.
    pending: Vec<u8>,
}

fn main() -> ExitCode {
    let config = match parse_args() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("rolegate-test-piv-card: {e}");
            return ExitCode::from(2);
        }
    };
    let retries = config
        .state
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|s| s.trim().parse::<u8>().ok())
        .unwrap_or(config.max_retries);
    let mut card = Card {
        config,
        retries,
        selected: false,
        verified: false,
        chain: Vec::new(),
        pending: Vec::new(),
    };
    match card.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rolegate-test-piv-card: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_args() -> Result<Config, String> {
    let mut args = std::env::args().skip(1);
    let mut addr = None;
    let mut key = None;
    let mut cert = None;
    let mut pin = None;
    let mut max_retries = 3u8;
    let mut state = None;
    let mut not_piv = false;
    let mut die_on_sign = false;
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--key" => key = Some(PathBuf::from(value("--key")?)),
            "--cert" => cert = Some(PathBuf::from(value("--cert")?)),
            "--pin" => pin = Some(value("--pin")?),
            "--retries" => {
                max_retries = value("--retries")?
                    .parse()
                    .map_err(|e| format!("--retries: {e}"))?;
            }
            "--state" => state = Some(PathBuf::from(value("--state")?)),
            "--not-piv" => not_piv = true,
            "--die-on-sign" => die_on_sign = true,
            s if s.starts_with("--") => return Err(format!("unknown flag {s}")),
            s => addr = Some(s.to_string()),
        }
    }
    let addr = addr.ok_or("the vpcd address (host:port) is missing")?;
    let key_path = key.ok_or("--key is missing")?;
    let cert_path = cert.ok_or("--cert is missing")?;
    let pin = pin.ok_or("--pin is missing")?;
    let key_pem =
        std::fs::read_to_string(&key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
    let key = load_key(&key_pem).map_err(|e| format!("{}: {e}", key_path.display()))?;
    let cert_bytes =
        std::fs::read(&cert_path).map_err(|e| format!("{}: {e}", cert_path.display()))?;
    let cert = if cert_bytes.starts_with(b"-----BEGIN") {
        der::pem::decode_vec(&cert_bytes)
            .map_err(|e| format!("{}: {e}", cert_path.display()))?
            .1
    } else {
        cert_bytes
    };
    Ok(Config {
        addr,
        key,
        cert,
        pin: pin.into_bytes(),
        max_retries,
        state,
        not_piv,
        die_on_sign,
    })
}

fn load_key(pem: &str) -> Result<Key, String> {
    use p256::pkcs8::DecodePrivateKey as _;
    if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(pem) {
        return Ok(Key::P256(k));
    }
    if let Ok(k) = p384::ecdsa::SigningKey::from_pkcs8_pem(pem) {
        return Ok(Key::P384(k));
    }
    match rsa::RsaPrivateKey::from_pkcs8_pem(pem) {
        Ok(k) => Ok(Key::Rsa(Box::new(k))),
        Err(e) => Err(format!(
            "not a PKCS#8 EC P-256, EC P-384 or RSA private key ({e})"
        )),
    }
}

/// A parsed command APDU.
struct Apdu {
    cla: u8,
    ins: u8,
    p1: u8,
    p2: u8,
    data: Vec<u8>,
}

fn parse_apdu(b: &[u8]) -> Option<Apdu> {
    if b.len() < 4 {
        return None;
    }
    let (cla, ins, p1, p2) = (b[0], b[1], b[2], b[3]);
    let body = &b[4..];
    let data = match body.len() {
        0 | 1 => Vec::new(),
        _ if body[0] == 0 && body.len() >= 3 => {
            // Extended: 00 Lc1 Lc2 data [Le1 Le2], or 00 Le1 Le2.
            let lc = usize::from(u16::from_be_bytes([body[1], body[2]]));
            if body.len() == 3 {
                Vec::new()
            } else {
                body.get(3..3 + lc)?.to_vec()
            }
        }
        _ => {
            let lc = usize::from(body[0]);
            body.get(1..1 + lc)?.to_vec()
        }
    };
    Some(Apdu {
        cla,
        ins,
        p1,
        p2,
        data,
    })
}

/// BER-TLV length bytes.
fn ber_len(n: usize) -> Vec<u8> {
    match n {
        0..=0x7F => vec![n as u8],
        0x80..=0xFF => vec![0x81, n as u8],
        _ => vec![0x82, (n >> 8) as u8, n as u8],
    }
}

fn tlv(tag: &[u8], value: &[u8]) -> Vec<u8> {
    let mut v = tag.to_vec();
    v.extend(ber_len(value.len()));
    v.extend_from_slice(value);
    v
}

/// Reads BER-TLVs with one-byte tags (enough for GENERAL AUTHENTICATE's template).
fn parse_tlvs(mut b: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let tag = b[0];
        let (len, hdr) = match *b.get(1)? {
            n @ 0..=0x7F => (usize::from(n), 2),
            0x81 => (usize::from(*b.get(2)?), 3),
            0x82 => (usize::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?])), 4),
            _ => return None,
        };
        out.push((tag, b.get(hdr..hdr + len)?));
        b = &b[hdr + len..];
    }
    Some(out)
}

fn sw(data: &[u8], sw1: u8, sw2: u8) -> Vec<u8> {
    let mut v = data.to_vec();
    v.extend([sw1, sw2]);
    v
}

/// Asks the kernel to acknowledge what arrives on `stream` at once (TCP_QUICKACK).
fn quick_ack(stream: &TcpStream) {
    use std::os::fd::AsRawFd as _;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, a pointer to an int of the size given.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

impl Card {
    fn run(&mut self) -> Result<(), String> {
        let mut stream = TcpStream::connect(&self.config.addr)
            .map_err(|e| format!("connect {}: {e}", self.config.addr))?;
        let _ = stream.set_nodelay(true);
        loop {
            // vpcd writes a message's length and its payload in two sends without
            // TCP_NODELAY: acknowledged at once, its second send is not held by Nagle's
            // algorithm for a delayed ACK (~40 ms a message). Linux clears the flag as it
            // goes, so it is set again before each read.
            quick_ack(&stream);
            let mut len = [0u8; 2];
            if let Err(e) = stream.read_exact(&mut len) {
                // vpcd closed the connection: pcscd stopped.
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    return Ok(());
                }
                return Err(format!("read: {e}"));
            }
            let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream
                .read_exact(&mut msg)
                .map_err(|e| format!("read: {e}"))?;
            let reply = match msg.as_slice() {
                [0x00] | [0x02] => {
                    self.power_reset();
                    None
                }
                [0x01] => None,
                [0x04] => Some(ATR.to_vec()),
                [_] => None,
                apdu => Some(self.apdu(apdu)),
            };
            if let Some(r) = reply {
                let n = u16::try_from(r.len()).map_err(|_| "response too long".to_string())?;
                let mut out = n.to_be_bytes().to_vec();
                out.extend(r);
                stream.write_all(&out).map_err(|e| format!("write: {e}"))?;
            }
        }
    }

    fn power_reset(&mut self) {
        self.selected = false;
        self.verified = false;
        self.chain.clear();
        self.pending.clear();
    }

    fn save_retries(&self) {
        if let Some(p) = &self.config.state {
            let _ = std::fs::write(p, format!("{}\n", self.retries));
        }
    }

    /// Answers `data` in chunks of 256 bytes: the rest waits for GET RESPONSE.
    fn respond(&mut self, data: Vec<u8>) -> Vec<u8> {
        if data.len() <= 256 {
            self.pending.clear();
            return sw(&data, 0x90, 0x00);
        }
        let first = data[..256].to_vec();
        self.pending = data[256..].to_vec();
        let more = self.pending.len().min(256) as u8; // 0 means 256 or more
        sw(&first, 0x61, more)
    }

    fn apdu(&mut self, raw: &[u8]) -> Vec<u8> {
        let Some(a) = parse_apdu(raw) else {
            return sw(&[], 0x67, 0x00);
        };
        if a.ins == 0xC0 {
            // GET RESPONSE
            if self.pending.is_empty() {
                return sw(&[], 0x6A, 0x86);
            }
            let rest = std::mem::take(&mut self.pending);
            return self.respond(rest);
        }
        self.pending.clear();
        if a.cla & 0xEC != 0 {
            return sw(&[], 0x6E, 0x00);
        }
        if a.cla & 0x10 != 0 {
            self.chain.extend_from_slice(&a.data);
            return sw(&[], 0x90, 0x00);
        }
        let mut data = std::mem::take(&mut self.chain);
        data.extend_from_slice(&a.data);
        match a.ins {
            0xA4 => self.select(a.p1, &data),
            _ if !self.selected => sw(&[], 0x69, 0x85),
            0x20 => self.verify(a.p1, a.p2, &data),
            0xCB => self.get_data(a.p1, a.p2, &data),
            0x87 => self.general_authenticate(a.p1, a.p2, &data),
            _ => sw(&[], 0x6D, 0x00),
        }
    }

    fn select(&mut self, p1: u8, data: &[u8]) -> Vec<u8> {
        if p1 != 0x04 || !data.starts_with(PIV_AID) || self.config.not_piv {
            self.selected = false;
            return sw(&[], 0x6A, 0x82);
        }
        self.selected = true;
        self.verified = false;
        // Application property template: the PIV application's id and its authority.
        let mut apt = tlv(&[0x4F], &[0x00, 0x00, 0x10, 0x00, 0x01, 0x00]);
        apt.extend(tlv(&[0x79], &tlv(&[0x4F], PIV_AID)));
        self.respond(tlv(&[0x61], &apt))
    }

    fn verify(&mut self, p1: u8, p2: u8, data: &[u8]) -> Vec<u8> {
        if p2 != 0x80 {
            return sw(&[], 0x6A, 0x88);
        }
        if p1 == 0xFF {
            self.verified = false;
            return sw(&[], 0x90, 0x00);
        }
        if self.retries == 0 {
            return sw(&[], 0x69, 0x83);
        }
        if data.is_empty() {
            if self.verified {
                return sw(&[], 0x90, 0x00);
            }
            return sw(&[], 0x63, 0xC0 | self.retries.min(15));
        }
        if data.len() != 8 {
            return sw(&[], 0x67, 0x00);
        }
        let given: Vec<u8> = data.iter().copied().take_while(|b| *b != 0xFF).collect();
        if given == self.config.pin {
            self.retries = self.config.max_retries;
            self.verified = true;
            self.save_retries();
            return sw(&[], 0x90, 0x00);
        }
        self.verified = false;
        self.retries -= 1;
        self.save_retries();
        if self.retries == 0 {
            return sw(&[], 0x69, 0x83);
        }
        sw(&[], 0x63, 0xC0 | self.retries.min(15))
    }

    fn get_data(&mut self, p1: u8, p2: u8, data: &[u8]) -> Vec<u8> {
        if (p1, p2) != (0x3F, 0xFF) {
            return sw(&[], 0x6A, 0x86);
        }
        match parse_tlvs(data).as_deref() {
            Some([(0x5C, tag)]) if *tag == TAG_CERT_9A => {
                let mut body = tlv(&[0x70], &self.config.cert);
                body.extend(tlv(&[0x71], &[0x00]));
                body.extend(tlv(&[0xFE], &[]));
                let obj = tlv(&[0x53], &body);
                self.respond(obj)
            }
            Some([(0x5C, _)]) => sw(&[], 0x6A, 0x82),
            _ => sw(&[], 0x6A, 0x80),
        }
    }

    fn general_authenticate(&mut self, alg: u8, slot: u8, data: &[u8]) -> Vec<u8> {
        if slot != 0x9A {
            return sw(&[], 0x6A, 0x86);
        }
        if self.config.die_on_sign {
            // Pulled from the reader mid-signature: the connection closes unanswered.
            std::process::exit(0);
        }
        if !self.verified {
            return sw(&[], 0x69, 0x82);
        }
        let Some(outer) = parse_tlvs(data) else {
            return sw(&[], 0x6A, 0x80);
        };
        let Some((_, template)) = outer.iter().find(|(t, _)| *t == 0x7C) else {
            return sw(&[], 0x6A, 0x80);
        };
        let Some(inner) = parse_tlvs(template) else {
            return sw(&[], 0x6A, 0x80);
        };
        let wants_response = inner.iter().any(|(t, v)| *t == 0x82 && v.is_empty());
        let Some((_, input)) = inner.iter().find(|(t, _)| *t == 0x81) else {
            return sw(&[], 0x6A, 0x80);
        };
        if !wants_response {
            return sw(&[], 0x6A, 0x80);
        }
        let signature = match (&self.config.key, alg) {
            (Key::P256(k), 0x11) if input.len() == 32 => {
                use p256::ecdsa::signature::hazmat::PrehashSigner as _;
                let s: Result<p256::ecdsa::DerSignature, _> = k.sign_prehash(input);
                s.map(|s| s.as_bytes().to_vec()).ok()
            }
            (Key::P384(k), 0x14) if input.len() == 48 => {
                use p384::ecdsa::signature::hazmat::PrehashSigner as _;
                let s: Result<p384::ecdsa::DerSignature, _> = k.sign_prehash(input);
                s.map(|s| s.as_bytes().to_vec()).ok()
            }
            (Key::Rsa(k), 0x07) if input.len() == 256 => rsa_raw(k, input),
            _ => return sw(&[], 0x6A, 0x80),
        };
        match signature {
            Some(s) => {
                let resp = tlv(&[0x7C], &tlv(&[0x82], &s));
                self.respond(resp)
            }
            None => sw(&[], 0x6F, 0x00),
        }
    }
}

/// The raw RSA private operation on a PKCS#1 v1.5 type 1 block (the only blocks the tests
/// and OpenSC send for signatures).
fn rsa_raw(k: &rsa::RsaPrivateKey, block: &[u8]) -> Option<Vec<u8>> {
    let rest = block.strip_prefix(&[0x00, 0x01])?;
    let ff = rest.iter().take_while(|b| **b == 0xFF).count();
    if ff < 8 || rest.get(ff) != Some(&0x00) {
        return None;
    }
    let payload = &rest[ff + 1..];
    k.sign(rsa::Pkcs1v15Sign::new_unprefixed(), payload).ok()
}
