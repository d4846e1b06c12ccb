//! rolegate-sdk: everything a vendor needs to ship an MFA provider plugin for rolegate.
//!
//! - [`Provider`]: the typed trait a Rust vendor implements;
//! - [`export_provider!`]: turns it into a plugin (the C entry symbol, panic containment);
//! - [`message`]: the JSON messages of the contract, stable within an ABI version;
//! - [`abi`]: the C ABI itself, for hosts and for vendors in other languages
//!   (`include/rolegate_provider.h` is the same layout in C);
//! - [`random`]: the operating system's CSPRNG, and unbiased one-time codes;
//! - [`conformance`]: the contract checks `rolegate provider check` runs, usable from a
//!   vendor's own tests.
//!
//! The SDK knows nothing of storage, HTTP or roles: those are the host's.

pub mod abi;
pub mod bytes;
pub mod conformance;
pub mod error;
pub mod message;
pub mod phone;
pub mod provider;
pub mod random;
pub mod settings;
mod tagged;

pub use bytes::Bytes;
pub use error::{ErrorKind, ProviderError, SdkError};
pub use message::{
    ChallengeContext, Credential, DenyReason, EnrollContext, FactorKind, Health, HealthStatus,
    Input, Prompt, PromptKind, ProviderInfo, Request, Response, Step, UserContext, Verdict,
};
pub use provider::Provider;
pub use settings::Settings;

/// The serde version the messages use, so vendors need no separate dependency.
pub use serde;
/// The serde_json version the messages use.
pub use serde_json;

/// Compares two byte strings in time that depends only on their lengths (codes, hashes):
/// what every provider checking a secret needs, so each need not write its own.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}
