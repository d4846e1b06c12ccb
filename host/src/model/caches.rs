//! Room in the daemon's in-memory caches, made without holding up the requests that use them.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// Entries an account-sized cache (accounts' rows, tokens, rate-limit buckets) keeps at
/// most: every account that activates within a cache's minute at over 1,600 activations a
/// second.
pub const MAX_ENTRIES: usize = 100_000;

/// Makes room in `map` once it holds `max` entries: the entries `stale` names go, and if
/// fewer than a quarter go, all go. What goes is dropped on a thread of its own: freeing a
/// hundred thousand entries, each several heap blocks, takes milliseconds, which the holder of
/// the cache's lock — and every request waiting for that lock — would otherwise wait.
pub fn make_room<K, V>(map: &mut HashMap<K, V>, max: usize, mut stale: impl FnMut(&K, &V) -> bool)
where
    K: Eq + Hash + Send + 'static,
    V: Send + 'static,
{
    if map.len() < max {
        return;
    }
    let gone: Vec<(K, V)> = map.extract_if(|k, v| stale(k, v)).collect();
    let all = (map.len() >= max / 4 * 3).then(|| std::mem::take(map));
    // Should the thread not start, the closure (and what it holds) is dropped here instead.
    let _ = std::thread::Builder::new()
        .name("cache-drop".into())
        .spawn(move || drop((gone, all)));
}

/// A token bucket per account for request creation: `per_minute` requests, refilled
/// evenly over the minute. Full and idle buckets are forgotten; beyond [`MAX_ENTRIES`]
/// accounts active within a minute, all are (the limits start over) rather than the map
/// growing without bound or being rescanned on every request.
#[derive(Debug, Default)]
pub struct Buckets(Mutex<HashMap<String, (f64, i64)>>);

impl Buckets {
    /// Takes one request from `key`'s bucket at `now_ms` (Unix ms), or says in how many
    /// seconds the next one is due.
    pub fn take(&self, key: &str, per_minute: u32, now_ms: i64) -> Result<(), i64> {
        self.take_within(key, per_minute, now_ms, MAX_ENTRIES)
    }

    fn take_within(&self, key: &str, per_minute: u32, now_ms: i64, max: usize) -> Result<(), i64> {
        let per_min = f64::from(per_minute.max(1));
        // A poisoned lock (a panic while it was held) still limits: its map is sound.
        let mut buckets = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        make_room(&mut buckets, max, |_, (tokens, at)| {
            *tokens >= per_min || now_ms - *at >= 60_000
        });
        let (tokens, at) = buckets.entry(key.to_string()).or_insert((per_min, now_ms));
        let refill = (now_ms - *at).max(0) as f64 / 60_000.0 * per_min;
        *tokens = (*tokens + refill).min(per_min);
        *at = now_ms;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - *tokens) / per_min * 60.0).ceil() as i64).max(1))
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().map_or(0, |b| b.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_limit_each_account_and_stay_bounded() {
        let b = Buckets::default();
        let t0 = 1_000_000;
        assert_eq!(b.take_within("jdoe", 2, t0, 64), Ok(()));
        assert_eq!(b.take_within("jdoe", 2, t0, 64), Ok(()));
        // The third within the minute waits for half a minute's refill.
        assert_eq!(b.take_within("jdoe", 2, t0, 64), Err(30));
        assert_eq!(b.take_within("boss", 2, t0, 64), Ok(()));
        assert_eq!(b.take_within("jdoe", 2, t0 + 30_000, 64), Ok(()));
        // More accounts than the bound, all active: the map starts over once instead of
        // growing, or being rescanned by every request (as it was).
        for i in 0..200 {
            assert_eq!(b.take_within(&format!("u{i}"), 2, t0 + 30_000, 64), Ok(()));
            assert!(b.len() <= 64, "{} buckets", b.len());
        }
        // Idle buckets go first: an account seen a minute ago is forgotten, a recent one kept.
        let b = Buckets::default();
        for name in ["old0", "old1"] {
            b.take_within(name, 1, t0, 4).unwrap();
        }
        for name in ["new0", "new1"] {
            b.take_within(name, 1, t0 + 59_000, 4).unwrap();
        }
        b.take_within("next", 1, t0 + 61_000, 4).unwrap();
        assert_eq!(b.take_within("new0", 1, t0 + 61_000, 4), Err(58));
        assert_eq!(b.take_within("old0", 1, t0 + 61_000, 4), Ok(()));
    }

    #[test]
    fn stale_entries_go_first_and_a_full_cache_starts_over() {
        let mut m: HashMap<u32, u32> = (0..8).map(|i| (i, i)).collect();
        // Below the bound nothing goes.
        make_room(&mut m, 9, |_, _| true);
        assert_eq!(m.len(), 8);
        // At the bound, the stale ones go (half of them: enough room).
        make_room(&mut m, 8, |_, v| v % 2 == 0);
        let mut left: Vec<u32> = m.keys().copied().collect();
        left.sort_unstable();
        assert_eq!(left, [1, 3, 5, 7]);
        // When too few are stale, the cache starts empty.
        let mut m: HashMap<u32, u32> = (0..8).map(|i| (i, i)).collect();
        make_room(&mut m, 8, |k, _| *k == 0);
        assert!(m.is_empty());
    }
}
