//! rolegate: privileged role activation gated by pluggable multi-factor authentication.
//!
//! The host loads MFA provider plugins through the stable ABI of `rolegate-sdk`, in-process
//! or in supervised worker processes, and drives them for role activation.
//!
//! # Layers
//!
//! Each module imports only modules of its own layer or below, with no cycle
//! (`tests/layers.rs` fails on any other import; docs/architecture.md draws them):
//!
//! 1. **model**, pure: `error`, `refusal`, `identity`, `limits`, `phone`, `clock`, `caches`,
//!    `activation` (the request's states), `role` (policy), `metrics` (counters, a leaf);
//! 2. **storage**: `store` (SQLite, PostgreSQL, migrations with their backfills, the event
//!    head), `secrets` (sealing), `private_files`;
//! 3. **records**: `events` and their `anchor`, `users`, `roles`, `tokens`, `import`,
//!    `directory`;
//! 4. **plugins**: `plugins` (loader, workers, their settings), `check`;
//! 5. **the activation service**: `service`;
//! 6. **surfaces**: `api`, `web`, `server`, `tls`, `access`;
//! 7. **the binary's side**: `config` (assembles every component's settings; nobody below
//!    imports it), `client`; and the binary itself (`main.rs`, `cli/`, `daemon/`).

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
