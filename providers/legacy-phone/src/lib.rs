//! legacy-phone: the Azure MFA (PhoneFactor) phone call that MIM PAM used for activation,
//! configured by the deployment's `MfaSettings.xml` as it is.
//!
//! The settings file reader ([`mfa_settings`]), the PhoneFactor `pfpMessage` v1.5 request
//! and response ([`pfp`]), the meaning of every `callStatus` code ([`call_status`]), the HTTPS
//! transport with the client certificate and failover ([`transport`]), and the provider on
//! them ([`provider::LegacyPhone`]) in SDK mode: standard calls (press #), PIN calls (the PIN
//! each user enrolled), two-way and one-way SMS. MFA Server mode is refused with a message
//! saying why (its Web Service SDK is not publicly documented).

pub mod call_status;
pub mod mfa_settings;
pub mod pfp;
pub mod provider;
pub mod transport;

use std::path::PathBuf;

/// What can go wrong reading the legacy settings or the PhoneFactor messages.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A secret file its group or others may read (the MIM docs insist on this too).
    #[error("{} is readable by others (mode {mode:03o}): run `chmod 600 {}` first", path.display(), path.display())]
    NotPrivate {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not well-formed XML in a known encoding.
    #[error("{} is not valid XML: {message}", path.display())]
    Xml {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// An element is missing, repeated, malformed, or contradicts another.
    #[error("{}: element <{element}> {message}", path.display())]
    Element {
        /// The file.
        path: PathBuf,
        /// The element, as the file spells it.
        element: String,
        /// What is wrong with it.
        message: String,
    },
    /// A phone number that cannot be dialled.
    #[error("phone number `{number}`: {message}")]
    Phone {
        /// The number as stored.
        number: String,
        /// Why.
        message: String,
    },
    /// The PKCS#12 file could not be used.
    #[error("the certificate file {file} {message}")]
    Certificate {
        /// The file, as configured.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// The HTTPS exchange with PhoneFactor failed.
    #[error("{0}")]
    Transport(String),
    /// A PhoneFactor response that could not be read.
    #[error("the PhoneFactor response is not valid: {0}")]
    Response(String),
}

rolegate_sdk::export_provider!(provider::LegacyPhone);
