//! Phone numbers as people write them (`rolegate_sdk::phone::PhoneNumber::parse`, which the
//! host, the import and the phone and SMS providers share); the first byte picks the default
//! country code.
//!
//! Checks: no panic; the form rolegate stores (E.164 and the extension) is at most 15 digits
//! and parses back to the same number whatever the default country code.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rolegate_sdk::phone::PhoneNumber;

const CODES: [u16; 9] = [1, 7, 33, 39, 44, 358, 379, 999, 0];

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let cc = CODES[usize::from(which) % CODES.len()];
    let text = String::from_utf8_lossy(rest);
    let Ok(number) = PhoneNumber::parse(&text, cc) else {
        return;
    };
    assert!(number.e164().len() <= 16, "{number}");
    let stored = number.to_string();
    for other in [1, 44] {
        match PhoneNumber::parse(&stored, other) {
            Ok(back) => assert_eq!(back, number, "{text:?} stored as {stored:?}"),
            Err(e) => panic!("{text:?} stored as {stored:?}: {e}"),
        }
    }
    let _ = rolegate::records::users::masked(Some(&stored));
});
