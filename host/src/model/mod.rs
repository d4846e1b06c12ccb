//! The model: what a role, a request, an account name, a phone number and a refusal are.
//! Pure: no I/O, nothing above it imported; every other layer builds on it.

pub mod activation;
pub mod caches;
pub mod clock;
pub mod error;
pub mod identity;
pub mod limits;
pub mod metrics;
pub mod phone;
pub mod refusal;
pub mod role;

/// A yes/no value as the CLI and the API's query strings take it: `1/0`, `true/false`,
/// `yes/no`, `on/off`, in any case; `None` for anything else.
pub fn yes_no(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}
