//! The TOTP provider behind the C ABI: its settings (first byte 0, then the
//! `[provider.settings]` table as JSON) or any request (otherwise: the rest is the request),
//! with the state and credentials in it as the host hands them back.
//!
//! Checks: `create` and every call answer a `Response`, never a panic.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use rolegate_fuzz::{answers, creates, instance};
use rolegate_provider_totp::TotpProvider;
use rolegate_sdk::abi::{Instance, Table};

static TABLE: LazyLock<Table> = LazyLock::new(Table::for_provider::<TotpProvider>);
static TOTP: LazyLock<Instance> = LazyLock::new(|| instance::<TotpProvider>("{}"));

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((0, settings)) => creates(&TABLE, settings),
        Some((_, request)) => answers(&TOTP, request),
        None => {}
    }
});
