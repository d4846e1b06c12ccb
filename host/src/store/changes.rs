//! Which rows changed since a cache read them, as the SQLite writer reports its own commits.
//!
//! Every create reads the same few rows (the role, the user, their credentials and lockouts)
//! that change seldom. A cache may keep them as long as nothing changed them, and only the
//! writer can tell: triggers on its connection name each changed key (users, credentials and
//! lockouts by account key, roles by name, tokens by hash), and after the transaction ends —
//! before any of its callers hears back — the writer publishes it here: the keys' slots take
//! the transaction's sequence number, then the published number does. A cache entry carries
//! the [`Stamp`] taken *before* its read (the number published then), and stays fresh while
//! every slot of its key holds a number no higher: a read that raced a commit is stale at once,
//! never trusted. The stamp does not depend on the key, so a read that learns its key only as
//! it goes (the account a bearer token names) is stamped all the same.
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

/// Slots of the last sequence number that changed a key; keys share a slot by hash (a shared
/// slot only costs a spurious miss).
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

/// The writer's published sequence number when a cache read its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    published: u64,
    generation: u64,
}

/// The sequence numbers of changed keys, published by the writer after each transaction.
pub struct Changes {
    /// Per slot, the highest sequence number that changed one of its keys.
    slots: Box<[AtomicU64]>,
    /// The highest sequence number whose keys are all in their slots: its transaction, and
    /// every one before it, ended before it was stored here.
    published: AtomicU64,
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
            published: AtomicU64::new(0),
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

    /// The point the writer has published: take it before reading the rows a cache will
    /// keep (whichever keys they turn out to be).
    pub fn stamp(&self) -> Stamp {
        Stamp {
            generation: self.generation.load(Ordering::SeqCst),
            published: self.published.load(Ordering::SeqCst),
        }
    }

    /// Whether the key is unchanged since `stamp` was taken: no transaction published after
    /// it (or still publishing) changed it. One published before it ended before the read
    /// began, so the read saw it.
    pub fn unchanged(&self, kind: Kind, key: &str, stamp: Stamp) -> bool {
        self.generation.load(Ordering::SeqCst) == stamp.generation
            && self.slot(kind, key).load(Ordering::SeqCst) <= stamp.published
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

    /// Publishes a transaction's changed keys (the writer, after the transaction ended, and
    /// only the writer: one publisher at a time keeps the numbers in order).
    pub(crate) fn publish<'a>(&self, keys: impl IntoIterator<Item = (Kind, &'a str)>) {
        let n = self.published.load(Ordering::SeqCst) + 1;
        for (kind, key) in keys {
            self.slot(kind, key).fetch_max(n, Ordering::SeqCst);
        }
        // Only now may a stamp cover n: every key of it is in its slot.
        self.published.store(n, Ordering::SeqCst);
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
        let before = c.stamp();
        assert!(c.unchanged(Kind::Account, "alice", before));
        c.publish([(Kind::Account, "alice")]);
        assert!(!c.unchanged(Kind::Account, "alice", before));
        // Another key, or the same name as another kind, is another slot (barring a shared
        // slot, which only makes it stale too: never the other way round).
        let (bob, role) = (Kind::Account, Kind::Role);
        let shared =
            |k: Kind, key: &str| std::ptr::eq(c.slot(k, key), c.slot(Kind::Account, "alice"));
        assert!(shared(bob, "bob") || c.unchanged(bob, "bob", before));
        assert!(shared(role, "alice") || c.unchanged(role, "alice", before));
        // A stamp taken after the change covers it.
        let after = c.stamp();
        assert!(c.unchanged(Kind::Account, "alice", after));
        c.publish([]);
        assert!(
            c.unchanged(Kind::Account, "alice", after),
            "a transaction that changed nothing"
        );
        c.all_changed();
        assert!(!c.unchanged(Kind::Account, "bob", after));
        assert!(c.unchanged(Kind::Account, "bob", c.stamp()));
    }

    #[test]
    fn a_change_still_being_published_is_stale_to_a_stamp_before_it() {
        let c = Changes::default();
        // The writer has put n into the key's slot, not yet into `published`: a stamp taken
        // now (n - 1) must not trust the key, whose transaction the read may or may not see.
        c.slot(Kind::Account, "alice")
            .fetch_max(1, Ordering::SeqCst);
        let during = c.stamp();
        assert!(!c.unchanged(Kind::Account, "alice", during));
        c.published.store(1, Ordering::SeqCst);
        assert!(!c.unchanged(Kind::Account, "alice", during));
        assert!(c.unchanged(Kind::Account, "alice", c.stamp()));
    }
}
