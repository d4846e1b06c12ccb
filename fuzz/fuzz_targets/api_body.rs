//! The API's request bodies and query strings, decoded into each route's own type as its
//! extractor does (`rolegate::http::api::fuzz::decode`; the first byte picks the route).
//!
//! Checks: no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rolegate::http::api::fuzz::decode;

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    let _ = decode(usize::from(route), body);
});
