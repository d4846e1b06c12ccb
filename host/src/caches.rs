//! Room in the daemon's in-memory caches, made without holding up the requests that use them.

use std::collections::HashMap;
use std::hash::Hash;

/// Entries an account-sized cache (accounts' rows, tokens, rate-limit buckets) keeps at
/// most: every account that activates within a cache's minute at over 1,600 activations a
/// second, in well under 100 MB.
pub const MAX_ENTRIES: usize = 100_000;

/// Makes room in `map` once it holds `max` entries: the entries `stale` names go, and if
/// fewer than a quarter go, all go. What goes is dropped on a thread of its own: dropping a
/// few hundred thousand entries takes tens of milliseconds, which the holder of the cache's
/// lock — and every request waiting for that lock — would otherwise wait.
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

#[cfg(test)]
mod tests {
    use super::*;

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
