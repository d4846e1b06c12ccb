//! End-to-end tests: the host loading real plugin libraries.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failed unwrap is a failed test

mod anchor;
mod api;
mod check_cli;
mod console;
mod guide;
mod health;
mod hosts;
mod isolation;
mod loader;
mod migration;
mod openapi;
mod package;
mod separation;
mod service;
mod smartcard;
mod smartcard_card;
mod sms;
mod store;
mod totp;
mod webauthn;
