//! rolegate: privileged role activation gated by pluggable multi-factor authentication.
//!
//! The host loads MFA provider plugins through the stable ABI of `rolegate-sdk`, in-process
//! or in supervised worker processes, and drives them for role activation.

pub mod check;
pub mod config;
pub mod error;
pub mod plugins;

pub use error::{Error, Result};
