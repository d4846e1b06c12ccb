//! Randomness for providers: the operating system's CSPRNG (the `getrandom` system call, no
//! file to open), with the errors a provider returns when it fails.

use crate::ProviderError;

/// Fills `buf` from the operating system's CSPRNG: for secrets, salts, nonces and codes.
pub fn fill(buf: &mut [u8]) -> Result<(), ProviderError> {
    getrandom::fill(buf).map_err(|e| {
        ProviderError::unavailable(format!("the operating system's random source failed: {e}"))
    })
}

/// A random `u32`, for identifiers that need not be secret beyond being unguessable.
pub fn u32() -> Result<u32, ProviderError> {
    let mut b = [0u8; 4];
    fill(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

/// A one-time code of `length` decimal digits, uniform over all such codes.
///
/// Each digit comes from one random byte; bytes of 250 and above are rejected (250 is the
/// largest multiple of 10 that fits in a byte), so `byte % 10` has no modulo bias.
pub fn digits(length: usize) -> Result<String, ProviderError> {
    let mut out = String::with_capacity(length);
    // Enough bytes for most codes in one system call (about 2% of bytes are rejected).
    let mut pool = [0u8; 32];
    while out.len() < length {
        fill(&mut pool)?;
        for &b in pool.iter().filter(|&&b| b < 250) {
            if out.len() == length {
                break;
            }
            out.push(char::from(b'0' + b % 10));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_length_asked_and_only_digits() {
        for n in [0, 1, 6, 8, 31, 32, 33, 100] {
            let c = digits(n).unwrap();
            assert_eq!(c.len(), n);
            assert!(c.bytes().all(|b| b.is_ascii_digit()), "{c}");
        }
    }

    #[test]
    fn every_digit_appears_and_none_dominates() {
        // 20,000 digits: each of the ten is expected 2,000 times; a biased or stuck source
        // (say, `byte % 10` without rejection skews 0-5 up by 2.4%) stays inside 1,700-2,300
        // only by chance far below 1e-9.
        let code = digits(20_000).unwrap();
        let mut seen = [0usize; 10];
        for b in code.bytes() {
            seen[usize::from(b - b'0')] += 1;
        }
        for (d, n) in seen.iter().enumerate() {
            assert!((1_700..=2_300).contains(n), "digit {d} seen {n} times");
        }
        assert_ne!(digits(16).unwrap(), digits(16).unwrap());
    }

    #[test]
    fn fill_changes_the_buffer() {
        let mut a = [0u8; 32];
        fill(&mut a).unwrap();
        assert_ne!(a, [0u8; 32]);
        let some: Vec<u32> = (0..8).map(|_| u32().unwrap()).collect();
        assert!(some.iter().any(|v| *v != some[0]), "{some:?}");
    }
}
