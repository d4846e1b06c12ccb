//! The SMS-via-Twilio provider behind the C ABI: its settings (first byte 0, then the
//! `[provider.settings]` table as JSON) or any request but `challenge_start` (otherwise: the
//! rest is the request), with the state in it as the host hands it back.
//!
//! Checks: `create` and every call answer a `Response`, never a panic. `challenge_start`
//! sends an SMS: it is not called (Twilio's answers are `twilio_response`'s).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use rolegate_fuzz::{answers, creates, instance, private_file};
use rolegate_provider_sms_twilio::SmsTwilio;
use rolegate_sdk::abi::{Instance, Table, decode_request};
use rolegate_sdk::message::Request;

static TABLE: LazyLock<Table> = LazyLock::new(Table::for_provider::<SmsTwilio>);
// Nothing listens on port 9, and no SMS is ever sent.
static SMS: LazyLock<Instance> = LazyLock::new(|| {
    let token = private_file("twilio.token", "0123456789abcdef0123456789abcdef\n");
    let settings = serde_json::json!({
        "account_sid": "AC0123456789abcdef0123456789abcdef",
        "auth_token_file": token,
        "from": "+14155552345",
        "base_url": "http://127.0.0.1:9",
    });
    instance::<SmsTwilio>(&settings.to_string())
});

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0, settings)) => creates(&TABLE, settings),
        Some((_, request))
            if !matches!(decode_request(request), Ok(Request::ChallengeStart { .. })) =>
        {
            answers(&SMS, request)
        }
        _ => {}
    }
});
