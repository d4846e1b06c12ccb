//! What the import takes from MfaSettings.xml itself: `DefaultCountryCode`, the country code
//! MIM applied to phone numbers written without one. (The file as a whole is read and checked
//! by the legacy phone provider.)

use crate::model::error::{Error, Result};

/// `DefaultCountryCode` from an MfaSettings.xml's bytes (UTF-8 or UTF-16 with a BOM), `None`
/// when the element is absent or empty; refused when it is not an assigned country code.
pub fn country_code(name: &str, bytes: &[u8]) -> Result<Option<u16>> {
    let text = super::csv::decode(name, bytes)?;
    let lower = text.to_ascii_lowercase();
    let open = "<defaultcountrycode>";
    let Some(start) = lower.find(open).map(|i| i + open.len()) else {
        return Ok(None);
    };
    let Some(len) = lower[start..].find("</defaultcountrycode>") else {
        return Err(Error::Invalid {
            what: name.to_string(),
            message: "<DefaultCountryCode> is not closed".into(),
        });
    };
    let value = text[start..start + len].trim().trim_start_matches('+');
    if value.is_empty() {
        return Ok(None);
    }
    match value.parse::<u16>() {
        Ok(cc) if value.len() <= 3 && crate::model::phone::is_country_code(cc) => Ok(Some(cc)),
        _ => Err(Error::Invalid {
            what: name.to_string(),
            message: format!("<DefaultCountryCode> `{value}` is not an assigned country code"),
        }),
    }
}

/// The reading of a number written without `+` or `00` whose digits start with the default
/// country code and would make a whole number after it: it may already carry that code.
/// Returns the other reading (`+<digits>`) when it parses.
pub fn other_reading(raw: &str, default_cc: u16) -> Option<String> {
    let t = raw.trim();
    if t.starts_with('+') || t.starts_with("00") {
        return None;
    }
    let digits: String = t
        .split(['x', 'X', ';'])
        .next()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    let cc = default_cc.to_string();
    let rest = digits.strip_prefix(&cc)?;
    // A national significant number is at least 7 digits in the plans that matter here.
    if rest.len() < 7 {
        return None;
    }
    let other = crate::model::phone::parse(&format!("+{digits}"), default_cc).ok()?;
    (other.country_code == default_cc).then(|| other.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_country_code_is_read_in_either_encoding_and_checked() {
        let xml = "\u{feff}<?xml version=\"1.0\"?>\r\n<MfaSettings>\r\n<DefaultCountryCode>44</DefaultCountryCode>\r\n</MfaSettings>\r\n";
        assert_eq!(country_code("m.xml", xml.as_bytes()).unwrap(), Some(44));
        let mut utf16 = vec![0xFF, 0xFE];
        for u in xml.trim_start_matches('\u{feff}').encode_utf16() {
            utf16.extend(u.to_le_bytes());
        }
        assert_eq!(country_code("m.xml", &utf16).unwrap(), Some(44));
        assert_eq!(country_code("m.xml", b"<MfaSettings/>").unwrap(), None);
        let e = country_code(
            "m.xml",
            b"<a><DefaultCountryCode>999</DefaultCountryCode></a>",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`999` is not an assigned country code"), "{e}");
    }

    #[test]
    fn digits_that_may_carry_the_country_code_are_ambiguous() {
        assert_eq!(
            other_reading("12135551212", 1).as_deref(),
            Some("+12135551212")
        );
        assert_eq!(
            other_reading("44 20 7946 0011", 44).as_deref(),
            Some("+442079460011")
        );
        for (raw, cc) in [
            ("2135551212", 1),
            ("020 7946 0011", 44),
            ("+1 213 555 1212", 1),
            ("0044 20 7946 0011", 44),
            ("1555", 1),
        ] {
            assert_eq!(other_reading(raw, cc), None, "{raw}");
        }
    }
}
