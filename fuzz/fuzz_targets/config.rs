//! The configuration file (`rolegate::config::Config::parse`), and what the daemon derives
//! from it without touching files or the network.
//!
//! Checks: no panic; the durations it accepts are usable as the service uses them (in
//! milliseconds, added to a time in the year 2100, within i64).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rolegate::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::parse(text, Path::new("/etc/rolegate/rolegate.toml")) else {
        return;
    };
    for p in &config.providers {
        let _ = p.settings_json();
        let _ = p.sunset();
        let _ = p.deadline(&config.plugins);
    }
    let _ = config.server.limits();
    let _ = config.server.client_certs();
    let _ = config
        .events
        .anchor_path(Path::new("/var/lib/rolegate/rolegate.key"));
    let year_2100_ms: i64 = 4_102_444_800_000;
    let policy = &config.policy;
    for (key, seconds) in [
        ("lockout_s", policy.lockout_s),
        ("approval_timeout_s", policy.approval_timeout_s),
    ] {
        let fits = seconds
            .checked_mul(1000)
            .and_then(|ms| year_2100_ms.checked_add(ms))
            .is_some();
        assert!(fits, "[policy] {key} = {seconds} was accepted");
    }
});
