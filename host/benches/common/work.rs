//! A fixed piece of CPU work for the benches that probe the host's own speed (`noise`, and the
//! activation bench's probe): the same steps take the same time on a steady machine.

use std::time::{Duration, Instant};

/// One piece: `n` steps of a 64-bit LCG (no memory traffic, no system calls).
pub(crate) fn piece(n: u64) {
    let mut x = 1u64;
    for _ in 0..n {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
    }
}

/// The number of steps that take about `target` here (measured on a piece of at least 2 ms).
pub(crate) fn steps_for(target: Duration) -> u64 {
    let mut n = 10_000u64;
    loop {
        let t = Instant::now();
        piece(n);
        let took = t.elapsed();
        if took >= Duration::from_millis(2) || n >= 1 << 34 {
            return (n as f64 * target.as_secs_f64() / took.as_secs_f64()).max(1.0) as u64;
        }
        n *= 2;
    }
}

/// A piece of a run: when it started (since the run's start) and how long it took.
pub(crate) type Piece = (Duration, Duration);

/// The median piece of each `window` of the run that has pieces, with the window's start, in
/// order: how fast the machine was, window by window.
pub(crate) fn window_medians(pieces: &[Piece], window: Duration) -> Vec<(Duration, Duration)> {
    let mut windows: std::collections::BTreeMap<u128, Vec<Duration>> = Default::default();
    for &(at, took) in pieces {
        windows
            .entry(at.as_nanos() / window.as_nanos().max(1))
            .or_default()
            .push(took);
    }
    windows
        .into_iter()
        .map(|(k, mut took)| {
            took.sort();
            let start = Duration::from_nanos((k * window.as_nanos()) as u64);
            (start, took[took.len() / 2])
        })
        .collect()
}
