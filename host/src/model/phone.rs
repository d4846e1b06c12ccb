//! Phone numbers: the SDK's parser (shared with phone and SMS providers), with its errors
//! as the host's.

pub use rolegate_sdk::phone::{PhoneNumber, is_country_code};

use crate::model::error::{Error, Result};

/// Parses a number as people write it (see [`PhoneNumber::parse`]), with the host's error.
pub fn parse(input: &str, default_country_code: u16) -> Result<PhoneNumber> {
    PhoneNumber::parse(input, default_country_code).map_err(|e| match e {
        rolegate_sdk::SdkError::Phone { input, reason } => Error::Phone { input, reason },
        other => Error::Phone {
            input: input.chars().take(64).collect(),
            reason: other.to_string(),
        },
    })
}
