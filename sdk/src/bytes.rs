//! Opaque byte strings that travel as base64 inside JSON messages.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Opaque bytes (challenge state, credential data, signatures) carried as a base64 string.
///
/// `Debug` prints only the length: these bytes often hold secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl Bytes {
    /// Wraps a byte vector.
    pub fn new(data: Vec<u8>) -> Self {
        Self(data)
    }

    /// The bytes as a slice.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many bytes there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bytes(<{} bytes>)", self.0.len())
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Self(v)
    }
}

impl From<&[u8]> for Bytes {
    fn from(v: &[u8]) -> Self {
        Self(v.to_vec())
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Bytes, E> {
                STANDARD
                    .decode(v)
                    .map(Bytes)
                    .map_err(|e| E::custom(format!("not valid base64: {e}")))
            }
        }
        d.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_base64() {
        let b = Bytes(vec![0, 1, 2, 255]);
        let s = serde_json::to_string(&b).unwrap();
        assert_eq!(s, "\"AAEC/w==\"");
        assert_eq!(serde_json::from_str::<Bytes>(&s).unwrap(), b);
    }

    #[test]
    fn refuses_non_base64() {
        let e = serde_json::from_str::<Bytes>("\"***\"").unwrap_err();
        assert!(e.to_string().contains("not valid base64"), "{e}");
    }

    #[test]
    fn debug_hides_content() {
        assert_eq!(
            format!("{:?}", Bytes(b"secret".to_vec())),
            "Bytes(<6 bytes>)"
        );
    }
}
