//! How steady this machine's CPU is: one thread does the same small piece of arithmetic over
//! and over for a few seconds and reports how long each piece took — nothing else of rolegate
//! runs. On a steady machine every 20-ms window looks like the next; on a shared virtual one
//! some windows run several times slower, and every latency measured in them (the activation
//! bench's p99 among them) carries that. Run it on an otherwise idle machine, beside the
//! activation bench's numbers: `cargo bench -p rolegate --bench noise`.
//! `ROLEGATE_NOISE_SECS` sets the length (default 8 s, at most 60).

use std::time::{Duration, Instant};

#[path = "common/work.rs"]
mod work;

/// The window over which the speed is judged: long enough for a few hundred pieces, short
/// enough to see a stall that a p99 would.
const WINDOW: Duration = Duration::from_millis(20);

/// The piece at quantile `q` of pieces sorted by duration.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted
        .get(((sorted.len().saturating_sub(1)) as f64 * q) as usize)
        .copied()
        .unwrap_or_default()
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let secs: u64 = std::env::var("ROLEGATE_NOISE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8)
        .clamp(1, 60);
    let n = work::steps_for(Duration::from_micros(50));
    let start = Instant::now();
    let run = Duration::from_secs(secs);
    let mut pieces: Vec<work::Piece> = Vec::with_capacity((secs as usize) * 30_000);
    while start.elapsed() < run && pieces.len() < 5_000_000 {
        let t = Instant::now();
        work::piece(n);
        pieces.push((t - start, t.elapsed()));
    }
    let mut all: Vec<Duration> = pieces.iter().map(|p| p.1).collect();
    all.sort();
    let median = quantile(&all, 0.5).max(Duration::from_nanos(1));
    // Each window's median piece against the whole run's.
    let windows: Vec<(Duration, f64)> = work::window_medians(&pieces, WINDOW)
        .into_iter()
        .map(|(at, m)| (at, m.as_secs_f64() / median.as_secs_f64()))
        .collect();
    let slower = |f: f64| windows.iter().filter(|w| w.1 >= f).count();
    println!(
        "one thread, {} pieces of ~{:.0} µs over {secs} s: p99 {:.0} µs, p99.9 {:.0} µs, max {:.0} µs",
        pieces.len(),
        micros(median),
        micros(quantile(&all, 0.99)),
        micros(quantile(&all, 0.999)),
        micros(quantile(&all, 1.0)),
    );
    println!(
        "| {}-ms windows whose median piece took | count | share |",
        WINDOW.as_millis()
    );
    println!("|---|---|---|");
    for f in [1.4, 2.0, 4.0] {
        let k = slower(f);
        println!(
            "| ≥ {f}× the run's median | {k} of {} | {:.1}% |",
            windows.len(),
            k as f64 * 100.0 / windows.len().max(1) as f64
        );
    }
    // Where the slow stretches were: consecutive slow windows joined.
    let mut stretches: Vec<(Duration, Duration, f64)> = Vec::new();
    for &(at, ratio) in windows.iter().filter(|w| w.1 >= 1.4) {
        match stretches.last_mut() {
            Some(s) if at - s.1 <= WINDOW => {
                s.1 = at;
                s.2 = s.2.max(ratio);
            }
            _ => stretches.push((at, at, ratio)),
        }
    }
    let shown: Vec<String> = stretches
        .iter()
        .map(|(from, to, worst)| {
            format!(
                "{:.2} s ({} ms, worst {worst:.1}×)",
                from.as_secs_f64(),
                (*to - *from + WINDOW).as_millis()
            )
        })
        .collect();
    println!(
        "slow stretches (windows ≥ 1.4×): {}",
        if shown.is_empty() {
            "none".to_string()
        } else {
            shown.join(", ")
        }
    );
}
