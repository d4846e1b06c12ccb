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

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted
        .get(((sorted.len().saturating_sub(1)) as f64 * q) as usize)
        .copied()
        .unwrap_or(0.0)
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
    // (start of the piece since the run's start, its duration), both in µs.
    let mut pieces: Vec<(f64, f64)> = Vec::with_capacity((secs as usize) * 30_000);
    while start.elapsed() < run && pieces.len() < 5_000_000 {
        let t = Instant::now();
        work::piece(n);
        let took = t.elapsed();
        pieces.push(((t - start).as_secs_f64() * 1e6, took.as_secs_f64() * 1e6));
    }
    let mut all: Vec<f64> = pieces.iter().map(|p| p.1).collect();
    all.sort_by(f64::total_cmp);
    let median = quantile(&all, 0.5);
    // Each window's median piece against the whole run's.
    let window_us = WINDOW.as_secs_f64() * 1e6;
    let mut windows: Vec<(f64, f64)> = Vec::new();
    let mut current: Vec<f64> = Vec::new();
    let mut window_start = 0.0;
    for &(at, took) in &pieces {
        while at >= window_start + window_us {
            if !current.is_empty() {
                current.sort_by(f64::total_cmp);
                windows.push((window_start, quantile(&current, 0.5) / median));
                current.clear();
            }
            window_start += window_us;
        }
        current.push(took);
    }
    let slower = |f: f64| windows.iter().filter(|w| w.1 >= f).count();
    println!(
        "one thread, {} pieces of ~{median:.0} µs over {secs} s: p99 {:.0} µs, p99.9 {:.0} µs, max {:.0} µs",
        pieces.len(),
        quantile(&all, 0.99),
        quantile(&all, 0.999),
        quantile(&all, 1.0),
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
    let mut stretches: Vec<(f64, f64, f64)> = Vec::new();
    for &(at, ratio) in windows.iter().filter(|w| w.1 >= 1.4) {
        match stretches.last_mut() {
            Some(s) if at - s.1 <= window_us => {
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
                "{:.2} s ({:.0} ms, worst {worst:.1}×)",
                from / 1e6,
                (to - from + window_us) / 1e3
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
