//! The CLI's smartcard responder: signs a challenge with a PIV card's PIV Authentication key
//! (slot 9A) through the PC/SC service (pcscd).
//!
//! The flow: list the readers, wait for a card, SELECT the PIV application, read the slot 9A
//! certificate, VERIFY the PIN, then GENERAL AUTHENTICATE with the algorithm of the
//! certificate's key (P-256: SHA-256 of the challenge; P-384: SHA-384; RSA-2048: the
//! PKCS#1 v1.5 block of the SHA-256 DigestInfo). The card is disconnected with a reset, so
//! the verified PIN does not outlive the call.
//!
//! A wrong PIN is not retried: [`sign`] returns an error naming the tries left. A PIN source
//! that is not a person (a variable, a pipe) would otherwise send the same wrong PIN until the
//! card blocks. The PIN never appears in an error or a log.

use std::ffi::{CStr, CString};
use std::time::{Duration, Instant};

use sha2::Digest as _;

use crate::model::error::Error;

/// What the card gave: its slot 9A certificate (DER) and its signature over the challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardAnswer {
    /// The PIV Authentication certificate, DER.
    pub certificate: Vec<u8>,
    /// The signature: DER ECDSA for the EC keys, the raw 256-byte PKCS#1 v1.5 signature for RSA.
    pub signature: Vec<u8>,
}

/// Options: which reader, and how long to wait for a card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The reader to use; `None`: the only reader, or of several the only one holding a card
    /// (an error lists them when several hold one).
    pub reader: Option<String>,
    /// How long to wait for a card to be inserted.
    pub wait: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            reader: None,
            wait: Duration::from_secs(30),
        }
    }
}

/// PIV's application identifier with its version (SP 800-73-4).
const PIV_AID: &[u8] = &[
    0xA0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00,
];
/// The DigestInfo prefix of SHA-256 (RFC 8017, 9.2).
const SHA256_DIGEST_INFO: &[u8] = &[
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// The key types the responder signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    P256,
    P384,
    Rsa2048,
}

fn card_error(message: String) -> Error {
    Error::Invalid {
        what: "smartcard".into(),
        message,
    }
}

fn service_error(e: pcsc::Error) -> Error {
    Error::Io {
        what: "the PC/SC service (pcscd) is not running".into(),
        source: std::io::Error::other(format!(
            "{e} (start it: `systemctl start pcscd.socket`, package pcscd)"
        )),
    }
}

fn is_service_down(e: pcsc::Error) -> bool {
    matches!(
        e,
        pcsc::Error::NoService | pcsc::Error::ServiceStopped | pcsc::Error::UnknownResMng
    )
}

fn is_removed(e: pcsc::Error) -> bool {
    matches!(
        e,
        pcsc::Error::RemovedCard
            | pcsc::Error::NoSmartcard
            | pcsc::Error::ResetCard
            | pcsc::Error::UnpoweredCard
            | pcsc::Error::UnresponsiveCard
            | pcsc::Error::CommError
            | pcsc::Error::ReaderUnavailable
    )
}

/// Maps an error of a call on the card: the service, a removed card, or anything else.
fn op_error(e: pcsc::Error, reader: &str, step: &str) -> Error {
    if is_service_down(e) {
        service_error(e)
    } else if is_removed(e) {
        card_error(format!(
            "the card was removed from `{reader}` during {step} ({e}); insert it and try again"
        ))
    } else {
        card_error(format!("{step} on the card in `{reader}` failed: {e}"))
    }
}

fn establish() -> Result<pcsc::Context, Error> {
    pcsc::Context::establish(pcsc::Scope::User).map_err(|e| {
        if is_service_down(e) {
            service_error(e)
        } else {
            card_error(format!("cannot reach the PC/SC service (pcscd): {e}"))
        }
    })
}

fn list(ctx: &pcsc::Context) -> Result<Vec<CString>, Error> {
    match ctx.list_readers_owned() {
        Ok(r) => Ok(r),
        Err(pcsc::Error::NoReadersAvailable) => Ok(Vec::new()),
        Err(e) if is_service_down(e) => Err(service_error(e)),
        Err(e) => Err(card_error(format!("cannot list the readers: {e}"))),
    }
}

fn name(r: &CStr) -> String {
    r.to_string_lossy().into_owned()
}

fn names(rs: &[CString]) -> String {
    rs.iter()
        .map(|r| format!("`{}`", name(r)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The readers pcscd knows, for `--reader` and messages.
pub fn readers() -> Result<Vec<String>, Error> {
    let ctx = establish()?;
    Ok(list(&ctx)?.iter().map(|r| name(r)).collect())
}

/// Signs `challenge` with the card's PIV Authentication key (slot 9A): lists readers, waits
/// for a card (calling `progress` with a human message while waiting), SELECTs PIV, reads
/// the 9A certificate, asks `pin()` for the PIN and VERIFYs it (a wrong PIN is an error
/// naming the tries left, not asked again), then GENERAL AUTHENTICATE with the algorithm of
/// the certificate's key: SHA-256(challenge) for P-256, SHA-384(challenge) for P-384, the
/// PKCS#1 v1.5 DigestInfo(SHA-256(challenge)) block for RSA-2048.
pub fn sign(
    challenge: &[u8],
    opts: &Options,
    pin: &mut dyn FnMut(&str) -> Result<String, Error>,
    progress: &mut dyn FnMut(&str),
) -> Result<CardAnswer, Error> {
    let ctx = establish()?;
    let all = list(&ctx)?;
    if all.is_empty() {
        return Err(card_error(
            "no smartcard reader is connected (pcscd lists none); plug one in and try again".into(),
        ));
    }
    let candidates: Vec<CString> = match &opts.reader {
        Some(wanted) => match all.iter().find(|r| name(r) == *wanted) {
            Some(r) => vec![r.clone()],
            None => {
                return Err(card_error(format!(
                    "no reader named `{wanted}`; the readers are: {}",
                    names(&all)
                )));
            }
        },
        None => all,
    };
    let reader = wait_for_card(&ctx, &candidates, opts.wait, progress)?;
    let rname = name(&reader);
    let mut card = ctx
        .connect(&reader, pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
        .map_err(|e| op_error(e, &rname, "connecting"))?;
    let answer = {
        let tx = card
            .transaction()
            .map_err(|e| op_error(e, &rname, "starting a transaction"))?;
        let r = piv_sign(&tx, &rname, challenge, pin);
        // Reset: the verified PIN must not outlive this call.
        let _ = tx.end(pcsc::Disposition::ResetCard);
        r
    };
    let _ = card.disconnect(pcsc::Disposition::ResetCard);
    answer
}

/// Waits until one of `candidates` holds a card; returns that reader.
fn wait_for_card(
    ctx: &pcsc::Context,
    candidates: &[CString],
    wait: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<CString, Error> {
    let deadline = Instant::now() + wait;
    let mut states: Vec<pcsc::ReaderState> = candidates
        .iter()
        .map(|r| pcsc::ReaderState::new(r.clone(), pcsc::State::UNAWARE))
        .collect();
    let mut told = false;
    let mut timeout = Duration::ZERO;
    loop {
        match ctx.get_status_change(timeout, &mut states) {
            Ok(()) | Err(pcsc::Error::Timeout) => {}
            Err(e) if is_service_down(e) => return Err(service_error(e)),
            Err(e) => return Err(card_error(format!("waiting for a card failed: {e}"))),
        }
        let with_card: Vec<&pcsc::ReaderState> = states
            .iter()
            .filter(|s| {
                let st = s.event_state();
                st.contains(pcsc::State::PRESENT) && !st.contains(pcsc::State::MUTE)
            })
            .collect();
        match with_card.as_slice() {
            [one] => return Ok(one.name().to_owned()),
            [] => {}
            several => {
                let rs: Vec<CString> = several.iter().map(|s| s.name().to_owned()).collect();
                return Err(card_error(format!(
                    "several readers hold a card ({}); choose one with --reader",
                    names(&rs)
                )));
            }
        }
        for s in &mut states {
            s.sync_current_state();
        }
        let now = Instant::now();
        if now >= deadline {
            let which = if candidates.len() == 1 {
                format!("reader {}", names(candidates))
            } else {
                format!("any of the readers {}", names(candidates))
            };
            return Err(card_error(format!(
                "no card was inserted in {which} within {} s",
                wait.as_secs_f64().ceil()
            )));
        }
        if !told {
            told = true;
            let where_ = if candidates.len() == 1 {
                names(candidates)
            } else {
                format!("one of {}", names(candidates))
            };
            progress(&format!(
                "Insert your PIV smartcard in {where_} (waiting up to {} s)…",
                wait.as_secs_f64().ceil()
            ));
        }
        // Short slices: a reader unplugged meanwhile does not hold the wait.
        timeout = (deadline - now).min(Duration::from_millis(500));
    }
}

/// A response APDU: its data and status word.
struct Response {
    data: Vec<u8>,
    sw: u16,
}

/// Sends one command (chained in 255-byte pieces when longer), following `61 xx` with GET
/// RESPONSE and `6C xx` with the right Le.
fn transmit(
    tx: &pcsc::Transaction<'_>,
    reader: &str,
    step: &str,
    header: [u8; 4],
    data: &[u8],
) -> Result<Response, Error> {
    let mut buf = vec![0u8; pcsc::MAX_BUFFER_SIZE];
    let mut chunks: Vec<&[u8]> = data.chunks(255).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let last = chunks.len() - 1;
    let mut out = Vec::new();
    let mut reply: Vec<u8> = Vec::new();
    for (i, chunk) in chunks.iter().enumerate() {
        let mut apdu = header.to_vec();
        if i < last {
            apdu[0] |= 0x10;
        }
        if !chunk.is_empty() {
            apdu.push(chunk.len() as u8); // at most 255: chunks(255)
            apdu.extend_from_slice(chunk);
        }
        if i == last && (header[1] != 0x20) {
            apdu.push(0x00); // Le: up to 256 bytes
        }
        let r = tx.transmit(&apdu, &mut buf);
        // The command may carry the PIN: clear the copy.
        apdu.fill(0);
        reply = r.map_err(|e| op_error(e, reader, step))?.to_vec();
        check_reply(&reply, reader, step)?;
        if i < last && reply[reply.len() - 2..] != [0x90, 0x00] {
            break;
        }
    }
    loop {
        let n = reply.len();
        let (sw1, sw2) = (reply[n - 2], reply[n - 1]);
        out.extend_from_slice(&reply[..n - 2]);
        let next: Vec<u8> = match sw1 {
            0x61 => vec![0x00, 0xC0, 0x00, 0x00, sw2],
            0x6C => {
                let mut a = header.to_vec();
                if !data.is_empty() && data.len() <= 255 {
                    a.push(data.len() as u8);
                    a.extend_from_slice(data);
                }
                a.push(sw2);
                a
            }
            _ => {
                return Ok(Response {
                    data: out,
                    sw: u16::from_be_bytes([sw1, sw2]),
                });
            }
        };
        if out.len() > 64 * 1024 {
            return Err(card_error(format!(
                "the card in `{reader}` sent more than 64 KiB during {step}"
            )));
        }
        reply = tx
            .transmit(&next, &mut buf)
            .map_err(|e| op_error(e, reader, step))?
            .to_vec();
        check_reply(&reply, reader, step)?;
    }
}

/// A reply too short for a status word: none at all is a card that went away mid-command
/// (vpcd answers so for a card whose connection closed).
fn check_reply(reply: &[u8], reader: &str, step: &str) -> Result<(), Error> {
    match reply.len() {
        0 => Err(card_error(format!(
            "the card was removed from `{reader}` during {step} (it stopped answering); insert it and try again"
        ))),
        1 => Err(card_error(format!(
            "the card in `{reader}` sent a malformed answer during {step}"
        ))),
        _ => Ok(()),
    }
}

/// One BER-TLV (one-byte tag, or the two-/three-byte tags of GET DATA answers).
fn tlv_find(mut b: &[u8], tag: &[u8]) -> Option<Vec<u8>> {
    while !b.is_empty() {
        let mut t = 1;
        if b[0] & 0x1F == 0x1F {
            while *b.get(t)? & 0x80 != 0 {
                t += 1;
            }
            t += 1;
        }
        let this = b.get(..t)?;
        let (len, hdr) = match *b.get(t)? {
            n @ 0..=0x7F => (usize::from(n), t + 1),
            0x81 => (usize::from(*b.get(t + 1)?), t + 2),
            0x82 => (
                usize::from(u16::from_be_bytes([*b.get(t + 1)?, *b.get(t + 2)?])),
                t + 3,
            ),
            _ => return None,
        };
        let value = b.get(hdr..hdr + len)?;
        if this == tag {
            return Some(value.to_vec());
        }
        b = &b[hdr + len..];
    }
    None
}

fn ber_len(n: usize) -> Vec<u8> {
    match n {
        0..=0x7F => vec![n as u8],
        0x80..=0xFF => vec![0x81, n as u8],
        _ => vec![0x82, (n >> 8) as u8, n as u8],
    }
}

fn key_kind(cert: &[u8], reader: &str) -> Result<KeyKind, Error> {
    let bad = |m: String| card_error(format!("the 9A certificate of the card in `{reader}` {m}"));
    let (_, c) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| bad(format!("cannot be read: {e}")))?;
    let spki = c.public_key();
    let alg = spki.algorithm.algorithm.to_id_string();
    match alg.as_str() {
        "1.2.840.10045.2.1" => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string())
                .unwrap_or_default();
            match curve.as_str() {
                "1.2.840.10045.3.1.7" => Ok(KeyKind::P256),
                "1.3.132.0.34" => Ok(KeyKind::P384),
                other => Err(bad(format!(
                    "has an EC key on curve {other}; rolegate signs with P-256, P-384 or RSA-2048"
                ))),
            }
        }
        "1.2.840.113549.1.1.1" => {
            let bits = spki.parsed().map(|k| k.key_size()).unwrap_or(0);
            if bits == 2048 {
                Ok(KeyKind::Rsa2048)
            } else {
                Err(bad(format!(
                    "has an RSA-{bits} key; rolegate signs with P-256, P-384 or RSA-2048"
                )))
            }
        }
        other => Err(bad(format!(
            "has a key of algorithm {other}; rolegate signs with P-256, P-384 or RSA-2048"
        ))),
    }
}

/// Whether `pin` is a PIV PIN rolegate sends: 6 to 8 digits.
fn pin_ok(pin: &str) -> bool {
    (6..=8).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit())
}

fn piv_sign(
    tx: &pcsc::Transaction<'_>,
    reader: &str,
    challenge: &[u8],
    pin: &mut dyn FnMut(&str) -> Result<String, Error>,
) -> Result<CardAnswer, Error> {
    // SELECT PIV
    let r = transmit(
        tx,
        reader,
        "SELECT of the PIV application",
        [0x00, 0xA4, 0x04, 0x00],
        PIV_AID,
    )?;
    if r.sw != 0x9000 {
        return Err(card_error(format!(
            "the card in `{reader}` is not a PIV card (SELECT of the PIV application answered {:04X})",
            r.sw
        )));
    }

    // The PIV Authentication certificate.
    let r = transmit(
        tx,
        reader,
        "reading the 9A certificate",
        [0x00, 0xCB, 0x3F, 0xFF],
        &[0x5C, 0x03, 0x5F, 0xC1, 0x05],
    )?;
    match r.sw {
        0x9000 => {}
        0x6A82 => {
            return Err(card_error(format!(
                "the PIV card in `{reader}` has no PIV Authentication (9A) certificate"
            )));
        }
        sw => {
            return Err(card_error(format!(
                "reading the 9A certificate of the card in `{reader}` failed ({sw:04X})"
            )));
        }
    }
    let object = tlv_find(&r.data, &[0x53]).unwrap_or_default();
    let certificate = tlv_find(&object, &[0x70]).unwrap_or_default();
    if certificate.is_empty() {
        return Err(card_error(format!(
            "the PIV card in `{reader}` has an empty or malformed 9A certificate object"
        )));
    }
    if tlv_find(&object, &[0x71]).is_some_and(|info| info.first() == Some(&0x01)) {
        return Err(card_error(format!(
            "the 9A certificate of the card in `{reader}` is compressed; rolegate reads uncompressed ones"
        )));
    }
    let kind = key_kind(&certificate, reader)?;

    // The PIN: its tries left first (no PIN sent).
    let r = transmit(
        tx,
        reader,
        "reading the PIN's tries left",
        [0x00, 0x20, 0x00, 0x80],
        &[],
    )?;
    let blocked = || {
        card_error(format!(
            "the PIN of the card in `{reader}` is blocked (too many wrong PINs); unblock it with the card's PUK"
        ))
    };
    let prompt = match r.sw {
        0x6983 => return Err(blocked()),
        0x63C0 => return Err(blocked()),
        sw if sw & 0xFFF0 == 0x63C0 => {
            let n = sw & 0x0F;
            format!(
                "PIN for the card in `{reader}` ({n} {} left)",
                if n == 1 { "try" } else { "tries" }
            )
        }
        _ => format!("PIN for the card in `{reader}`"),
    };
    let mut given = pin(&prompt)?.into_bytes();
    let ok = std::str::from_utf8(&given).is_ok_and(pin_ok);
    if !ok {
        given.fill(0);
        return Err(Error::Invalid {
            what: "PIN".into(),
            message: "a PIV PIN is 6 to 8 digits; nothing was sent to the card".into(),
        });
    }
    let mut block = [0xFFu8; 8];
    block[..given.len()].copy_from_slice(&given);
    // Best effort: the PIN's copies do not stay in memory longer than the check.
    given.fill(0);
    let r = transmit(
        tx,
        reader,
        "the PIN check",
        [0x00, 0x20, 0x00, 0x80],
        &block,
    );
    block.fill(0);
    let r = r?;
    match r.sw {
        0x9000 => {}
        0x6983 | 0x63C0 => return Err(blocked()),
        sw if sw & 0xFFF0 == 0x63C0 => {
            let n = sw & 0x0F;
            return Err(card_error(format!(
                "wrong PIN for the card in `{reader}`: {n} {} left before the PIN is blocked",
                if n == 1 { "try" } else { "tries" }
            )));
        }
        sw => {
            return Err(card_error(format!(
                "the card in `{reader}` refused the PIN check ({sw:04X})"
            )));
        }
    }

    // GENERAL AUTHENTICATE with slot 9A.
    let (alg, input) = match kind {
        KeyKind::P256 => (0x11, sha2::Sha256::digest(challenge).to_vec()),
        KeyKind::P384 => (0x14, sha2::Sha384::digest(challenge).to_vec()),
        KeyKind::Rsa2048 => {
            let hash = sha2::Sha256::digest(challenge);
            let t_len = SHA256_DIGEST_INFO.len() + hash.len();
            let mut em = vec![0x00, 0x01];
            em.extend(std::iter::repeat_n(0xFF, 256 - 3 - t_len));
            em.push(0x00);
            em.extend_from_slice(SHA256_DIGEST_INFO);
            em.extend_from_slice(&hash);
            (0x07, em)
        }
    };
    let mut inner = vec![0x82, 0x00, 0x81];
    inner.extend(ber_len(input.len()));
    inner.extend_from_slice(&input);
    let mut template = vec![0x7C];
    template.extend(ber_len(inner.len()));
    template.extend(inner);
    let r = transmit(
        tx,
        reader,
        "the signature",
        [0x00, 0x87, alg, 0x9A],
        &template,
    )?;
    match r.sw {
        0x9000 => {}
        0x6982 => {
            return Err(card_error(format!(
                "the card in `{reader}` refused to sign: the PIN is not verified (6982)"
            )));
        }
        sw => {
            return Err(card_error(format!(
                "the card in `{reader}` refused to sign ({sw:04X})"
            )));
        }
    }
    let signature = tlv_find(&r.data, &[0x7C])
        .and_then(|t| tlv_find(&t, &[0x82]))
        .unwrap_or_default();
    if signature.is_empty() {
        return Err(card_error(format!(
            "the card in `{reader}` answered the signature without one"
        )));
    }
    Ok(CardAnswer {
        certificate,
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_six_to_eight_digits() {
        assert!(pin_ok("123456"));
        assert!(pin_ok("12345678"));
        assert!(!pin_ok("12345"));
        assert!(!pin_ok("123456789"));
        assert!(!pin_ok("12345a"));
        assert!(!pin_ok("１２３４５６"));
    }

    #[test]
    fn tlvs_with_long_tags_and_lengths() {
        let mut cert = vec![0x70, 0x82, 0x01, 0x00];
        cert.extend(vec![7u8; 256]);
        let mut obj = vec![0x53, 0x82, 0x01, 0x09];
        obj.extend(&cert);
        obj.extend([0x71, 0x01, 0x00, 0xFE, 0x00]);
        let inner = tlv_find(&obj, &[0x53]).unwrap_or_default();
        assert_eq!(tlv_find(&inner, &[0x70]).map(|c| c.len()), Some(256));
        assert_eq!(tlv_find(&inner, &[0x71]), Some(vec![0x00]));
        assert_eq!(
            tlv_find(&[0x5F, 0xC1, 0x05, 0x01, 0xAA], &[0x5F, 0xC1, 0x05]),
            Some(vec![0xAA])
        );
        assert_eq!(tlv_find(&[0x53, 0x05, 0x00], &[0x53]), None);
    }
}
