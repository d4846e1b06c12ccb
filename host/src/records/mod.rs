//! The records: what the daemon keeps in the store's rows (users, roles, tokens, the event
//! chain and its anchor) and the ways records arrive in bulk (the MIM import, the directory).

/// Signed checkpoints of the event chain's head, kept outside the database.
pub mod anchor;
pub mod directory;
pub mod events;
pub mod import;
pub mod roles;
pub mod tokens;
pub mod users;
