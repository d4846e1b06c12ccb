//! One-time codes: drawn from the operating system's CSPRNG, kept only as a salted hash.

use rolegate_sdk::ProviderError;
use sha2::{Digest as _, Sha256};

/// Separates this hash from any other use of SHA-256 over similar bytes.
const DOMAIN: &[u8] = b"rolegate/sms-twilio/code/v1";
/// Bytes of salt per challenge.
pub(crate) const SALT_LEN: usize = 16;

pub(crate) use rolegate_sdk::random::fill as random;

/// A code of `length` decimal digits, uniform over all such codes (the SDK's generator).
pub(crate) fn generate(length: u8) -> Result<String, ProviderError> {
    rolegate_sdk::random::digits(usize::from(length))
}

fn put(hasher: &mut Sha256, part: &[u8]) {
    hasher.update((part.len() as u64).to_be_bytes());
    hasher.update(part);
}

/// The salted hash of a code, bound to the activation request it was sent for: the same code
/// hashes differently for another request, so a state cannot be moved between requests.
pub(crate) fn digest(salt: &[u8], request_id: &str, code: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    put(&mut hasher, DOMAIN);
    put(&mut hasher, salt);
    put(&mut hasher, request_id.as_bytes());
    put(&mut hasher, code.as_bytes());
    hasher.finalize().into()
}

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) use rolegate_sdk::constant_time_eq as same;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_length_asked_and_digits_only() {
        for length in 6..=10 {
            for _ in 0..50 {
                let c = generate(length).unwrap();
                assert_eq!(c.len(), usize::from(length));
                assert!(c.bytes().all(|b| b.is_ascii_digit()), "{c}");
            }
        }
    }

    #[test]
    fn codes_differ_and_every_digit_appears() {
        let codes: Vec<String> = (0..200).map(|_| generate(6).unwrap()).collect();
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        // 200 draws from a million: a repeat has odds of about 2%; more than a few is broken.
        assert!(unique.len() >= 195, "{} unique of 200", unique.len());
        let all: String = codes.concat();
        for d in '0'..='9' {
            assert!(all.contains(d), "digit {d} never drawn in 1200 digits");
        }
    }

    #[test]
    fn the_hash_binds_salt_request_and_code() {
        let salt = [7u8; SALT_LEN];
        let h = digest(&salt, "r1", "123456");
        assert_eq!(h, digest(&salt, "r1", "123456"));
        assert_ne!(h, digest(&salt, "r2", "123456"));
        assert_ne!(h, digest(&salt, "r1", "123457"));
        assert_ne!(h, digest(&[8u8; SALT_LEN], "r1", "123456"));
        // Length prefixes: moving a character between fields changes the hash.
        assert_ne!(digest(&salt, "r11", "23456"), digest(&salt, "r1", "123456"));
    }

    #[test]
    fn comparison_is_exact() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        assert!(!same(b"", b"a"));
        assert!(same(b"", b""));
        let a = digest(&[1; SALT_LEN], "r", "000000");
        let mut b = a;
        b[31] ^= 1;
        assert!(!same(&a, &b));
        assert!(same(&a, &a));
    }
}
