//! The host's side of the ABI: its decoding of a provider's answer
//! (`rolegate::plugins::LoadedProvider::call` decodes `Response<T>` for these four `T`).
//!
//! Checks: what decodes encodes (tag first) and decodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rolegate_sdk::message::{Health, ProviderInfo, Response, Step};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T: Serialize + DeserializeOwned>(data: &[u8]) {
    let Ok(first) = serde_json::from_slice::<Response<T>>(data) else {
        return;
    };
    let json = serde_json::to_vec(&first).expect("a decoded answer encodes");
    let back: Response<T> = match serde_json::from_slice(&json) {
        Ok(b) => b,
        Err(e) => panic!("`{}` does not decode: {e}", String::from_utf8_lossy(&json)),
    };
    let again = serde_json::to_vec(&back).expect("it encodes again");
    assert_eq!(
        String::from_utf8_lossy(&again),
        String::from_utf8_lossy(&json)
    );
}

fuzz_target!(|data: &[u8]| {
    round_trip::<Step>(data);
    round_trip::<ProviderInfo>(data);
    round_trip::<Health>(data);
    round_trip::<Option<serde_json::Value>>(data);
});
