//! MIM's `MfaSettings.xml`: the legacy phone provider's reader
//! (`rolegate_provider_legacy_phone::mfa_settings::parse`) and the import's, which takes its
//! `DefaultCountryCode` (`rolegate::records::import::settings_country_code`).
//!
//! Checks: no panic; UTF-8 text reads the same in UTF-16 with its byte-order mark (as
//! Notepad saves "Unicode"); of a file the provider reads, the import takes the provider's
//! country code (or refuses one that is not assigned).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rolegate::model::phone::is_country_code;
use rolegate::records::import::settings_country_code;
use rolegate_provider_legacy_phone::mfa_settings::{Mode, parse};

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/etc/rolegate/MfaSettings.xml");
    let first = parse(path, data);
    if let Ok(settings) = &first {
        let provider = match &settings.mode {
            Mode::Sdk(s) => &s.default_country_code,
            Mode::MfaServer(s) => &s.default_country_code,
        };
        let provider: u16 = provider.parse().expect("1 to 3 digits");
        match settings_country_code("MfaSettings.xml", data) {
            Ok(Some(cc)) => assert_eq!(cc, provider, "the import's country code"),
            Ok(None) => assert_eq!(provider, 1, "the import found no country code"),
            Err(e) => assert!(!is_country_code(provider), "{e}"),
        }
    }
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
