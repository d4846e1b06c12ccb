//! Time-based one-time codes (RFC 6238 over RFC 4226) from an `otpauth://totp/` URI: what an
//! authenticator app would show, so the suite can answer an enrolment and its challenges.

/// The hash a TOTP generator uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
}

/// A TOTP generator, as an app set up from an `otpauth://totp/` URI.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Otp {
    key: Vec<u8>,
    algorithm: Algorithm,
    digits: u32,
    period: u64,
}

impl std::fmt::Debug for Otp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Otp")
            .field("algorithm", &self.algorithm)
            .field("digits", &self.digits)
            .field("period", &self.period)
            .finish_non_exhaustive()
    }
}

/// Decodes RFC 4648 base32 (either case, padding and spaces ignored); None on other characters.
fn base32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u64, 0u32);
    for c in text.chars().filter(|c| *c != '=' && *c != ' ') {
        let v = match c.to_ascii_uppercase() {
            u @ 'A'..='Z' => u as u64 - 'A' as u64,
            d @ '2'..='7' => d as u64 - '2' as u64 + 26,
            _ => return None,
        };
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Undoes %XX escapes (what a URI's query may hold); invalid escapes are kept as they are.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Otp {
    /// The generator an `otpauth://totp/...?secret=...` URI describes; None for anything else.
    pub(super) fn from_uri(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix("otpauth://")?;
        let (kind, rest) = rest.split_once('/')?;
        if !kind.eq_ignore_ascii_case("totp") {
            return None;
        }
        let query = rest.split_once('?')?.1;
        let param = |name: &str| {
            query.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                k.eq_ignore_ascii_case(name).then(|| percent_decoded(v))
            })
        };
        let key = base32(&param("secret")?)?;
        if key.is_empty() {
            return None;
        }
        let algorithm = match param("algorithm")
            .unwrap_or_else(|| "SHA1".into())
            .to_ascii_uppercase()
            .as_str()
        {
            "SHA1" => Algorithm::Sha1,
            "SHA256" => Algorithm::Sha256,
            "SHA512" => Algorithm::Sha512,
            _ => return None,
        };
        let digits = match param("digits") {
            Some(d) => d.parse().ok().filter(|d| (1..=10).contains(d))?,
            None => 6,
        };
        let period = match param("period") {
            Some(p) => p.parse().ok().filter(|p| *p > 0)?,
            None => 30,
        };
        Some(Self {
            key,
            algorithm,
            digits,
            period,
        })
    }

    /// Seconds per time step.
    pub(super) fn period(&self) -> u64 {
        self.period
    }

    /// The code shown at `now` (Unix seconds).
    pub(super) fn code(&self, now: u64) -> String {
        let counter = (now / self.period).to_be_bytes();
        let digest = match self.algorithm {
            Algorithm::Sha1 => mac::<hmac::Hmac<sha1::Sha1>>(&self.key, &counter),
            Algorithm::Sha256 => mac::<hmac::Hmac<sha2::Sha256>>(&self.key, &counter),
            Algorithm::Sha512 => mac::<hmac::Hmac<sha2::Sha512>>(&self.key, &counter),
        };
        // RFC 4226's dynamic truncation.
        let offset = usize::from(digest.last().copied().unwrap_or(0) & 0x0f);
        let word = digest
            .get(offset..offset + 4)
            .map_or(0, |b| u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]));
        let modulus = 10u64.pow(self.digits);
        format!(
            "{:0width$}",
            u64::from(word) % modulus,
            width = self.digits as usize
        )
    }
}

fn mac<M: hmac::Mac + hmac::KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    match <M as hmac::KeyInit>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// The code an authenticator app set up from `uri` (`otpauth://totp/...`) shows at `now`.
pub fn code_for_uri(uri: &str, now: u64) -> Option<String> {
    Otp::from_uri(uri).map(|o| o.code(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 6238, appendix B: the SHA-1 seed "12345678901234567890", 8 digits.
    const SEED: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    #[test]
    fn codes_check_out_against_the_rfc_6238_vectors() {
        let uri = format!("otpauth://totp/x?secret={SEED}&digits=8");
        assert_eq!(code_for_uri(&uri, 59).as_deref(), Some("94287082"));
        assert_eq!(
            code_for_uri(&uri, 1_111_111_109).as_deref(),
            Some("07081804")
        );
        assert_eq!(
            code_for_uri(&uri, 2_000_000_000).as_deref(),
            Some("69279037")
        );
        // SHA-256 with its 32-byte seed.
        let seed256 = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQGEZA";
        let uri = format!("otpauth://totp/x?secret={seed256}&digits=8&algorithm=SHA256");
        assert_eq!(code_for_uri(&uri, 59).as_deref(), Some("46119246"));
    }

    #[test]
    fn other_uris_check_out_as_none() {
        assert_eq!(
            code_for_uri("otpauth://hotp/x?secret=AAAA&counter=1", 0),
            None
        );
        assert_eq!(code_for_uri("https://example.com/?secret=AAAA", 0), None);
        assert_eq!(code_for_uri("otpauth://totp/x?secret=!!", 0), None);
        assert_eq!(code_for_uri("otpauth://totp/x?issuer=a", 0), None);
        let o = Otp::from_uri("otpauth://totp/a%3Ab?secret=gezdgnbv&period=60").unwrap();
        assert_eq!(o.period(), 60);
        assert_eq!(o.code(0).len(), 6);
    }
}
