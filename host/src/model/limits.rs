//! Bounded free text: every field a user or admin writes freely has a length limit, so that no
//! request, role or user can carry megabytes into the store and the event log (whose hash
//! chain keeps what it holds forever).

use serde::Deserialize;

use crate::model::error::{Error, Result};

/// The limits on free-text fields, in characters (`[limits]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TextLimits {
    /// A request's justification.
    pub justification_chars: usize,
    /// A user's display name.
    pub display_name_chars: usize,
    /// An approver's reason for a rejection.
    pub reason_chars: usize,
    /// A token's label, and the label a provider gives a credential.
    pub label_chars: usize,
}

/// The defaults of `[limits]`.
impl Default for TextLimits {
    fn default() -> Self {
        Self {
            justification_chars: 1024,
            display_name_chars: DEFAULT_DISPLAY_NAME_CHARS,
            reason_chars: 512,
            label_chars: 128,
        }
    }
}

/// The longest display name, by default (`[limits] display_name_chars`).
pub const DEFAULT_DISPLAY_NAME_CHARS: usize = 256;

/// The values each limit may take.
pub const RANGE: std::ops::RangeInclusive<usize> = 16..=65_536;

/// The longest label a provider's credential keeps (a provider's text, cut rather than
/// refused: the user did not write it).
pub const PROVIDER_LABEL_CHARS: usize = 128;

/// The longest message an event keeps, in characters: the longest justification the limits
/// allow, with room for what an event says around it.
pub const EVENT_MESSAGE_CHARS: usize = 66_000;

impl TextLimits {
    /// Checks every limit lies in [`RANGE`]; the message names the key.
    pub fn validate(&self) -> std::result::Result<(), String> {
        for (key, v) in [
            ("justification_chars", self.justification_chars),
            ("display_name_chars", self.display_name_chars),
            ("reason_chars", self.reason_chars),
            ("label_chars", self.label_chars),
        ] {
            if !RANGE.contains(&v) {
                return Err(format!(
                    "`[limits] {key}` = {v} is out of range ({} to {})",
                    RANGE.start(),
                    RANGE.end()
                ));
            }
        }
        Ok(())
    }
}

/// Refuses `value` when it is longer than `max` characters, naming the field, its limit and
/// the setting that raises it.
pub fn check(field: &str, value: &str, max: usize, key: &str) -> Result<()> {
    let n = value.chars().count();
    if n > max {
        return Err(Error::Invalid {
            what: field.into(),
            message: format!("`{field}` has {n} characters; the limit is {max} (`[limits] {key}`)"),
        });
    }
    Ok(())
}

/// `text` cut to at most `max` characters, with `…` where it was cut (for text the host
/// only relays, such as a provider's credential label).
pub fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((i, _)) => {
            let mut s = text[..i].to_string();
            s.pop();
            s.push('…');
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_field_is_refused_by_name_and_limit() {
        let e = check(
            "justification",
            &"é".repeat(1025),
            1024,
            "justification_chars",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("`justification` has 1025 characters; the limit is 1024"),
            "{e}"
        );
        assert!(e.contains("[limits] justification_chars"), "{e}");
        check(
            "justification",
            &"é".repeat(1024),
            1024,
            "justification_chars",
        )
        .unwrap();
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abcd", 4), "abcd");
        assert!(TextLimits::default().validate().is_ok());
        let bad = TextLimits {
            reason_chars: 1,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("reason_chars"));
    }
}
