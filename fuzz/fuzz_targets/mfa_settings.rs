//! MIM's `MfaSettings.xml` (`rolegate_provider_legacy_phone::mfa_settings::parse`).
//!
//! Checks: no panic; UTF-8 text reads the same in UTF-16 with its byte-order mark (as
//! Notepad saves "Unicode").
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rolegate_provider_legacy_phone::mfa_settings::parse;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/etc/rolegate/MfaSettings.xml");
    let first = parse(path, data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.starts_with('\u{feff}') {
        return;
    }
    let mut utf16 = vec![0xFF, 0xFE];
    for unit in text.encode_utf16() {
        utf16.extend_from_slice(&unit.to_le_bytes());
    }
    match (first, parse(path, &utf16)) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("UTF-8: {a:?}\nUTF-16: {b:?}"),
    }
});
