//! The error a provider returns, and the kinds the host acts on.

use serde::{Deserialize, Serialize};

/// What went wrong, so the host can decide what to do (retry, refuse, alert).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The provider's settings are wrong; the message names the key.
    Config,
    /// A service or device the provider needs is not reachable now; the host may retry.
    Unavailable,
    /// The request, state or user input is malformed; retrying the same input will fail again.
    BadInput,
    /// The provider does not implement this operation (for example a newer host's operation).
    Unsupported,
    /// The provider panicked; the SDK's export layer caught it.
    Panicked,
    /// A bug or an unexpected condition inside the provider.
    ///
    /// Kinds unknown to this SDK version also decode as `Internal`.
    #[serde(other)]
    Internal,
}

impl ErrorKind {
    /// The kind's stable name, as it travels in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::BadInput => "bad_input",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Internal => "internal",
            ErrorKind::Panicked => "panicked",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error from a provider: a kind and a message fit for an admin (never a secret).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ProviderError {
    /// What kind of failure this is.
    pub kind: ErrorKind,
    /// What happened, for an admin; must not contain secrets.
    pub message: String,
}

impl ProviderError {
    /// An error of the given kind.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// A settings error; the message should name the key.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// A retryable failure of a service or device.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// Malformed request, state or input.
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadInput, message)
    }

    /// An operation this provider does not offer.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    /// An unexpected failure inside the provider.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

/// Errors of the SDK itself, outside any provider: encoding and the conformance suite's setup.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SdkError {
    /// A message could not be encoded or decoded.
    #[error("message {what} failed: {source}")]
    Codec {
        /// Which message, and whether encoding or decoding.
        what: &'static str,
        /// The underlying JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A phone number that cannot be parsed or dialled.
    #[error("phone number `{input}` is not valid: {reason}")]
    Phone {
        /// What was given (at most 64 characters).
        input: String,
        /// Why it is refused.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_kind_decodes_as_internal() {
        let e: ProviderError = serde_json::from_str(r#"{"kind":"quantum","message":"x"}"#).unwrap();
        assert_eq!(e.kind, ErrorKind::Internal);
    }

    #[test]
    fn kinds_round_trip_by_name() {
        for k in [
            ErrorKind::Config,
            ErrorKind::Unavailable,
            ErrorKind::BadInput,
            ErrorKind::Unsupported,
            ErrorKind::Internal,
            ErrorKind::Panicked,
        ] {
            let s = serde_json::to_string(&k).unwrap();
            assert_eq!(s, format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<ErrorKind>(&s).unwrap(), k);
        }
    }
}
