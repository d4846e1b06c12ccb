//! Which rows changed since a cache read them, as the SQLite writer reports its own commits.
//!
//! Every create reads the same few rows (the role, the user, their credentials and lockouts)
//! that change seldom. A cache may keep them as long as nothing changed them, and only the
//! writer can tell: triggers on its connection name each changed key (users, credentials and
//! lockouts by account key, roles by name, tokens by hash), and after the transaction ends —
//! before any of its callers hears back — the writer advances that key's epoch here. A cache
//! entry carries the [`Stamp`] taken *before* its read, so a read that raced a commit is
//! stale at once, never trusted.
//!
//! Another process writing the same file (`rolegate import`) is not seen by the triggers;
//! the writer notices its commits (SQLite's `data_version`) before each batch and, when idle,
//! every 100 ms, and then marks every key changed. Caches also drop what they read more than
//! [`MAX_AGE_MS`] ago, a safety net. PostgreSQL has no such account (other hosts write too):
//! its store reports none, and every read goes to the database.

use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// How long a cache keeps a row the writer reports unchanged, at most: a safety net, as the
/// writer reports other processes' commits too (within 100 ms).
pub const MAX_AGE_MS: i64 = 60_000;

/// Whether a read made at `read_at` (Unix ms) is still young enough at `now_ms` for a cache
/// to keep: the [`MAX_AGE_MS`] safety net alone (freshness needs [`Changes::still_fresh`]).
pub fn young(read_at: i64, now_ms: i64) -> bool {
    (0..MAX_AGE_MS).contains(&(now_ms - read_at))
}

/// Epoch slots; keys share a slot by hash (a shared slot only costs a spurious miss).
const SLOTS: usize = 16_384;

/// What a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An account's user row, credentials and lockouts, by account key.
    Account,
    /// A role, by name.
    Role,
    /// An API token, by hash.
    Token,
}

impl Kind {
    /// Every kind.
    pub(crate) const ALL: [Kind; 3] = [Kind::Account, Kind::Role, Kind::Token];

    /// The tag the writer's triggers name the kind by.
    pub(crate) fn tag(self) -> &'static str {
        match self {
            Kind::Account => "u",
            Kind::Role => "r",
            Kind::Token => "t",
        }
    }

    /// The kind a trigger names by its tag.
    pub(crate) fn from_tag(tag: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.tag() == tag)
    }
}

/// A key's epoch when a cache read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    slot: u64,
    generation: u64,
}

/// The epochs of changed keys, advanced by the writer after each transaction.
pub struct Changes {
    slots: Box<[AtomicU64]>,
    /// Advanced when any key may have changed (a batch whose keys were not all recorded).
    generation: AtomicU64,
    hasher: std::collections::hash_map::RandomState,
}

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes").finish_non_exhaustive()
    }
}

impl Default for Changes {
    fn default() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            generation: AtomicU64::new(0),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl Changes {
    fn slot(&self, kind: Kind, key: &str) -> &AtomicU64 {
        let h = self.hasher.hash_one((kind.tag(), key));
        &self.slots[(h % SLOTS as u64) as usize]
    }

    /// The key's epoch now: take it before reading the rows a cache will keep.
    pub fn stamp(&self, kind: Kind, key: &str) -> Stamp {
        Stamp {
            generation: self.generation.load(Ordering::SeqCst),
            slot: self.slot(kind, key).load(Ordering::SeqCst),
        }
    }

    /// Whether the key is unchanged since `stamp` was taken.
    pub fn unchanged(&self, kind: Kind, key: &str, stamp: Stamp) -> bool {
        self.stamp(kind, key) == stamp
    }

    /// Whether a read of the key, stamped before it and made at `read_at` (Unix ms), may stand
    /// for a read at `now_ms`: unchanged by the writer, and younger than [`MAX_AGE_MS`].
    pub fn still_fresh(
        &self,
        kind: Kind,
        key: &str,
        stamp: Stamp,
        read_at: i64,
        now_ms: i64,
    ) -> bool {
        young(read_at, now_ms) && self.unchanged(kind, key, stamp)
    }

    /// Records a change of the key (the writer, after the transaction that made it).
    pub(crate) fn changed(&self, kind: Kind, key: &str) {
        self.slot(kind, key).fetch_add(1, Ordering::SeqCst);
    }

    /// Records that any key may have changed.
    pub(crate) fn all_changed(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_makes_only_its_own_key_stale() {
        let c = Changes::default();
        let alice = c.stamp(Kind::Account, "alice");
        let role = c.stamp(Kind::Role, "alice");
        assert!(c.unchanged(Kind::Account, "alice", alice));
        c.changed(Kind::Account, "alice");
        assert!(!c.unchanged(Kind::Account, "alice", alice));
        // The same name as another kind is another key (barring a shared slot, which only
        // makes it stale too: never the other way round).
        let bob = c.stamp(Kind::Account, "bob");
        c.all_changed();
        assert!(!c.unchanged(Kind::Account, "bob", bob));
        assert!(!c.unchanged(Kind::Role, "alice", role));
        let fresh = c.stamp(Kind::Account, "alice");
        assert!(c.unchanged(Kind::Account, "alice", fresh));
    }
}
