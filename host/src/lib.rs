//! rolegate: privileged role activation gated by pluggable multi-factor authentication.
//!
//! The host loads MFA provider plugins through the stable ABI of `rolegate-sdk`, in-process
//! or in supervised worker processes, and drives them for role activation.

pub mod access;
pub mod activation;
/// Signed checkpoints of the event chain's head, kept outside the database.
pub mod anchor;
pub mod api;
pub mod caches;
pub mod check;
pub mod client;
pub mod clock;
pub mod config;
pub mod directory;
pub mod error;
pub mod events;
pub mod identity;
pub mod import;
pub mod limits;
pub mod metrics;
pub mod phone;
pub mod plugins;
pub mod private_files;
pub mod refusal;
pub mod role;
pub mod roles;
pub mod secrets;
pub mod server;
pub mod service;
pub mod store;
pub mod tls;
pub mod tokens;
pub mod users;
pub mod web;

pub use error::{Error, Result};
