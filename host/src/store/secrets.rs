//! Secrets at rest: credentials sealed with a key kept outside the database, API tokens
//! stored as hashes, and a CSPRNG for everything unguessable.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hmac::{KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};

use crate::model::error::{Error, Result};
use crate::store::private_files::check_private;

/// Format byte of sealed data; a new scheme gets a new byte.
const SEALED_V1: u8 = 1;
const NONCE: usize = 24;

/// Fills `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::Io {
        what: "reading the system's random source".into(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// A random identifier: 128 bits, lower-case hex.
pub fn random_id() -> Result<String> {
    let mut b = [0u8; 16];
    random_bytes(&mut b)?;
    Ok(hex::encode(b))
}

/// A random identifier that sorts by creation time: 48 bits of milliseconds, then 128
/// random bits, lower-case hex. New rows then land at the end of the table's B-tree instead
/// of on a random page: fewer pages written per commit. The random part alone is as hard to
/// guess as [`random_id`]; the time part tells only when the row was made.
pub fn time_ordered_id(now_ms: i64) -> Result<String> {
    let mut b = [0u8; 16];
    random_bytes(&mut b)?;
    let ms = u64::try_from(now_ms).unwrap_or(0) & 0xffff_ffff_ffff;
    Ok(format!("{ms:012x}{}", hex::encode(b)))
}

/// HMAC-SHA256 of `parts`, one after the other, under `key`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32]> {
    Ok(hmac_of(key, parts)?.finalize().into_bytes().into())
}

/// Whether `mac` is the HMAC-SHA256 of `parts` under `key` (compared in constant time).
pub fn hmac_sha256_matches(key: &[u8], parts: &[&[u8]], mac: &[u8]) -> bool {
    hmac_of(key, parts).is_ok_and(|m| m.verify_slice(mac).is_ok())
}

fn hmac_of(key: &[u8], parts: &[&[u8]]) -> Result<hmac::Hmac<sha2_hmac::Sha256>> {
    let mut m =
        hmac::Hmac::<sha2_hmac::Sha256>::new_from_slice(key).map_err(|_| Error::Invalid {
            what: "an HMAC key".into(),
            message: "its length is not accepted".into(),
        })?;
    for p in parts {
        m.update(p);
    }
    Ok(m)
}

/// The key that seals credentials, read from a file only its owner can read.
pub struct SealingKey {
    cipher: XChaCha20Poly1305,
    /// The key's bytes, for the keys derived from it ([`SealingKey::derive`]); never shown.
    raw: [u8; 32],
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(<secret>)")
    }
}

impl SealingKey {
    /// Reads the key file (64 hex digits), creating it with a fresh key and mode 0600 when
    /// it does not exist. A file its group or others can read is refused.
    pub fn load_or_create(path: &Path) -> Result<Self> {
        if !path.exists() {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let mut key = [0u8; 32];
            random_bytes(&mut key)?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|source| Error::Io {
                    what: format!("creating the key file {}", path.display()),
                    source,
                })?;
            f.write_all(format!("{}\n", hex::encode(key)).as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|source| Error::Io {
                    what: format!("writing the key file {}", path.display()),
                    source,
                })?;
        }
        check_private(path)?;
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: format!("reading the key file {}", path.display()),
            source,
        })?;
        let key = hex::decode(text.trim())
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| Error::Config {
                path: path.to_path_buf(),
                message: "the key file must hold 64 hex digits (a 256-bit key)".into(),
            })?;
        let mut raw = [0u8; 32];
        raw.copy_from_slice(&key);
        Ok(Self {
            cipher: XChaCha20Poly1305::new(Key::from_slice(&key)),
            raw,
        })
    }

    /// A 256-bit key for another purpose, derived from this one: HMAC-SHA256(key, `label`).
    /// Each purpose has a label of its own (`rolegate anchor v1`), so that no derived key is
    /// another's, nor the sealing key itself; none of them reveals the sealing key.
    pub fn derive(&self, label: &str) -> Result<[u8; 32]> {
        hmac_sha256(&self.raw, &[label.as_bytes()])
    }

    /// Seals `plain`, bound to `context` (the row it belongs to): sealed data moved to another
    /// row does not open.
    pub fn seal(&self, plain: &[u8], context: &str) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE];
        random_bytes(&mut nonce)?;
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| Error::Store {
                what: "sealing a credential".into(),
                message: "encryption failed".into(),
            })?;
        let mut out = Vec::with_capacity(1 + NONCE + sealed.len());
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens data sealed for `context`; fails when the key, the context or a byte differs.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>> {
        let refused = || Error::Store {
            what: "opening a credential".into(),
            message:
                "it does not open with this key (wrong key file, or the data was altered or moved)"
                    .into(),
        };
        if sealed.len() < 1 + NONCE + 16 || sealed[0] != SEALED_V1 {
            return Err(refused());
        }
        self.cipher
            .decrypt(
                XNonce::from_slice(&sealed[1..1 + NONCE]),
                Payload {
                    msg: &sealed[1 + NONCE..],
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| refused())
    }
}

/// A new API token (shown once) and the hash that is stored.
pub fn new_token() -> Result<(String, String)> {
    let mut b = [0u8; 32];
    random_bytes(&mut b)?;
    let token = format!("rg_{}", hex::encode(b));
    let hash = token_hash(&token);
    Ok((token, hash))
}

/// The stored form of a token: its SHA-256 (tokens are 256 random bits, so no salt or
/// stretching is needed).
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The sealing context of the key check value.
const KEY_CHECK: &str = "rolegate key check";

/// Checks that `key` is the key this database's secrets were sealed with (storing a check
/// value on first use), so an instance started with another key file stops at once instead
/// of failing on each credential.
pub fn check_key(tx: &mut dyn crate::store::Tx, key: &SealingKey) -> Result<()> {
    use crate::store::Value;
    let rows = tx.query(
        "SELECT value FROM meta WHERE name = $1",
        &[Value::from("key_check")],
    )?;
    match rows.first() {
        None => {
            let sealed = key.seal(KEY_CHECK.as_bytes(), KEY_CHECK)?;
            tx.execute(
                "INSERT INTO meta (name, value) VALUES ($1, $2)",
                &[Value::from("key_check"), Value::Blob(sealed)],
            )?;
            Ok(())
        }
        Some(row) => match key.open(&row.blob(0)?, KEY_CHECK) {
            Ok(plain) if plain == KEY_CHECK.as_bytes() => Ok(()),
            _ => Err(Error::Invalid {
                what: "the key file".into(),
                message: "it does not open this database's secrets: every rolegate instance on one database needs the same key file (copy it, mode 0600); a lost key file means re-enrolling every credential".into(),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_data_opens_only_with_its_key_and_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rolegate.key");
        let key = SealingKey::load_or_create(&path).unwrap();
        let sealed = key.seal(b"JBSWY3DPEHPK3PXP", "jdoe/totp/app").unwrap();
        assert!(!sealed.windows(8).any(|w| w == b"JBSWY3DP"));
        assert_eq!(
            key.open(&sealed, "jdoe/totp/app").unwrap(),
            b"JBSWY3DPEHPK3PXP"
        );
        assert!(key.open(&sealed, "eve/totp/app").is_err());
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(key.open(&flipped, "jdoe/totp/app").is_err());
        // The same file gives the same key; another key does not open it.
        let again = SealingKey::load_or_create(&path).unwrap();
        assert!(again.open(&sealed, "jdoe/totp/app").is_ok());
        let other = SealingKey::load_or_create(&dir.path().join("other.key")).unwrap();
        let e = other.open(&sealed, "jdoe/totp/app").unwrap_err();
        assert!(e.to_string().contains("wrong key file"), "{e}");
        assert_eq!(format!("{key:?}"), "SealingKey(<secret>)");
    }

    #[test]
    fn a_readable_or_malformed_key_file_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rolegate.key");
        SealingKey::load_or_create(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = SealingKey::load_or_create(&path).unwrap_err();
        assert!(e.to_string().contains("mode 640"), "{e}");
        std::fs::write(&path, "not hex").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = SealingKey::load_or_create(&path).unwrap_err();
        assert!(e.to_string().contains("64 hex digits"), "{e}");
        assert!(!e.to_string().contains("not hex"), "{e}");
    }

    #[test]
    fn derived_keys_are_hmac_of_the_key_and_differ_by_label() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rolegate.key");
        std::fs::write(&path, format!("{}\n", "0b".repeat(32))).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let key = SealingKey::load_or_create(&path).unwrap();
        let a = key.derive("rolegate anchor v1").unwrap();
        assert_eq!(
            a,
            hmac_sha256(&[0x0b; 32], &[b"rolegate anchor v1"]).unwrap()
        );
        assert_ne!(a, key.derive("rolegate other v1").unwrap());
        assert_ne!(a, [0x0b; 32]);
        // RFC 4231, test case 2.
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]).unwrap();
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(hmac_sha256_matches(
            b"Jefe",
            &[b"what do ya want for nothing?"],
            &mac
        ));
        assert!(!hmac_sha256_matches(
            b"Jefe",
            &[b"what do ya want for nothing!"],
            &mac
        ));
        assert!(!hmac_sha256_matches(
            b"Jefe",
            &[b"what do ya want for nothing?"],
            &mac[..31]
        ));
    }

    #[test]
    fn tokens_are_stored_as_hashes() {
        let (token, hash) = new_token().unwrap();
        assert!(token.starts_with("rg_") && token.len() == 67);
        assert_eq!(token_hash(&token), hash);
        assert_ne!(hash, token);
        assert_ne!(new_token().unwrap().0, token);
        assert_eq!(random_id().unwrap().len(), 32);
        let (a, b) = (
            time_ordered_id(1_764_150_000_000).unwrap(),
            time_ordered_id(1_764_150_000_001).unwrap(),
        );
        assert_eq!(a.len(), 44);
        assert!(a < b, "sorts by time");
        assert_ne!(a[12..], b[12..], "random after the time");
    }
}
