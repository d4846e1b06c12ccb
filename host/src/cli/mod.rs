//! The CLI's commands that talk to the daemon, one file per noun; each returns what to print.

pub(crate) mod approval;
pub(crate) mod enrol;
pub(crate) mod events;
pub(crate) mod import;
pub(crate) mod provider_local;
pub(crate) mod providers;
pub(crate) mod request;
pub(crate) mod role;
pub(crate) mod token;
pub(crate) mod user;

/// What a command prints: a value, and the table's columns (title, key) when it is a list.
pub(crate) type Out = (
    serde_json::Value,
    Option<&'static [(&'static str, &'static str)]>,
);
