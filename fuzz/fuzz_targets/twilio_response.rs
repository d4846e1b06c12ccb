//! Twilio's answers to the SMS provider (`rolegate_provider_sms_twilio::fuzz_answer`: what
//! the provider makes of a status, a `Retry-After` header and a body).
//!
//! Checks: no panic; what the provider says never holds the auth token, the code or the
//! recipient's whole number, nor the first 8 characters of one, when Twilio's body held it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rolegate_provider_sms_twilio::fuzz_answer;

const TOKEN: &str = "s3cr3tt0k3n5ecr3tt0k3n5ecr3tt0k3";
const CODE: &str = "48213307";
const TO: &str = "+14255550142";

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let status = u16::from_le_bytes([data[0], data[1]]) % 600;
    let rest = &data[3..];
    let split = usize::from(data[2]).min(rest.len());
    let header = String::from_utf8_lossy(&rest[..split]);
    let body = String::from_utf8_lossy(&rest[split..]);
    let header = (split > 0).then_some(header.as_ref());
    let said = match fuzz_answer(status, header, &body, TO, TOKEN, CODE) {
        Ok(sid) => return drop(sid),
        Err((said, _wait)) => said,
    };
    for secret in [TOKEN, CODE, TO] {
        // Only what came from the whole secret in Twilio's body is the provider's to hide:
        // a fragment of it that the body holds alone is not the secret.
        if body.replace(secret, "").contains(fragment(secret)) {
            continue;
        }
        assert!(
            !without_error_codes(&said).contains(fragment(secret)),
            "{said:?} holds part of {secret:?}"
        );
    }
});

/// The text without the numbers of `Twilio error <code>`: Twilio's own error code, a number
/// that may hold any digits (the code's too) without being the code.
fn without_error_codes(said: &str) -> String {
    let mut out = String::new();
    let mut rest = said;
    while let Some(i) = rest.find("Twilio error ") {
        let after = &rest[i + "Twilio error ".len()..];
        out.push_str(&rest[..i]);
        rest = after.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    out.push_str(rest);
    out
}

/// Enough of a secret to count as a leak: its first 8 characters.
fn fragment(secret: &str) -> &str {
    &secret[..8]
}
