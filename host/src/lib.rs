//! rolegate: privileged role activation gated by pluggable multi-factor authentication.
//!
//! The host loads MFA provider plugins through the stable ABI of `rolegate-sdk`, in-process
//! or in supervised worker processes, and drives them for role activation.
//!
//! # Layers
//!
//! One folder a layer, lowest first; each imports only its own layer or those below it, with
//! no cycle (`tests/layers.rs` fails on any other import; docs/architecture.md draws them):
//!
//! 1. [`model`], pure: the request's states, role policy, the identity rule, text limits,
//!    phone numbers, the clock, caches, refusals, errors, metrics counters (a leaf);
//! 2. [`store`]: rows and transactions (SQLite, PostgreSQL, migrations), sealing of secrets,
//!    private files;
//! 3. [`records`]: what is kept in rows: events and their anchor, users, roles, tokens, the
//!    MIM import, the directory;
//! 4. [`plugins`]: the loader, worker processes and their supervision, the provider check;
//! 5. [`service`]: the activation service (requests, answers, approvals, enrolment, expiry);
//! 6. [`http`]: the surfaces: the API, the web page, the server, TLS, the access log;
//! 7. the binary's side: [`config`] (assembles every component's settings; nobody below
//!    imports it), [`client`] and its smartcard responder [`smartcard`] (PC/SC); and the
//!    binary itself (`main.rs`, `cli/`, `daemon/`).

pub mod client;
pub mod config;
pub mod http;
pub mod model;
pub mod plugins;
pub mod records;
pub mod service;
pub mod smartcard;
pub mod store;

pub use model::error::{Error, Result};
