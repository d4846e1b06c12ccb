//! A provider's side of the ABI: the SDK's decoding of the host's request
//! (`rolegate_sdk::abi::decode_request`, `tagged.rs`, `message.rs`), then the whole call
//! through the C ABI (`call_impl`, `dispatch`) into the example provider.
//!
//! Checks: a decoded request encodes and decodes back to the same bytes; a refusal is
//! `bad_input` or `unsupported`; every call answers a JSON `Response`, never a panic.
//! (`totp_calls` and `sms_calls` send the same requests to those providers: a binary links
//! one provider, as each exports the same entry symbol.)
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use rolegate_fuzz::{answers, instance};
use rolegate_sdk::ErrorKind;
use rolegate_sdk::abi::{Instance, decode_request};

static HELLO: LazyLock<Instance> =
    LazyLock::new(|| instance::<rolegate_example_hello::Hello>("{}"));

fuzz_target!(|data: &[u8]| {
    match decode_request(data) {
        Ok(request) => {
            let json = serde_json::to_vec(&request).expect("a decoded request encodes");
            let back = decode_request(&json).expect("an encoded request decodes");
            let again = serde_json::to_vec(&back).expect("it encodes again");
            assert_eq!(
                String::from_utf8_lossy(&again),
                String::from_utf8_lossy(&json)
            );
        }
        Err(e) => assert!(
            matches!(e.kind, ErrorKind::BadInput | ErrorKind::Unsupported),
            "{e:?}"
        ),
    }
    answers(&HELLO, data);
});
