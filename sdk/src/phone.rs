//! Phone numbers, for the host and for phone and SMS providers: normalised to E.164 as MIM did, with the default country code applied to
//! numbers that carry none, and the extension kept apart.

use std::fmt;

use crate::SdkError;

type Result<T> = std::result::Result<T, SdkError>;

/// Country calling codes (ITU-T E.164 assignments). They are prefix-free, which is what lets
/// a number in international form be split into country code and national number.
const COUNTRY_CODES: &[u16] = &[
    1, 7, 20, 27, 30, 31, 32, 33, 34, 36, 39, 40, 41, 43, 44, 45, 46, 47, 48, 49, 51, 52, 53, 54,
    55, 56, 57, 58, 60, 61, 62, 63, 64, 65, 66, 81, 82, 84, 86, 90, 91, 92, 93, 94, 95, 98, 211,
    212, 213, 216, 218, 220, 221, 222, 223, 224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234,
    235, 236, 237, 238, 239, 240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253,
    254, 255, 256, 257, 258, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 290, 291, 297, 298,
    299, 350, 351, 352, 353, 354, 355, 356, 357, 358, 359, 370, 371, 372, 373, 374, 375, 376, 377,
    378, 379, 380, 381, 382, 383, 385, 386, 387, 389, 420, 421, 423, 500, 501, 502, 503, 504, 505,
    506, 507, 508, 509, 590, 591, 592, 593, 594, 595, 596, 597, 598, 599, 670, 672, 673, 674, 675,
    676, 677, 678, 679, 680, 681, 682, 683, 685, 686, 687, 688, 689, 690, 691, 692, 800, 808, 850,
    852, 853, 855, 856, 870, 878, 880, 881, 882, 883, 886, 888, 960, 961, 962, 963, 964, 965, 966,
    967, 968, 970, 971, 972, 973, 974, 975, 976, 977, 979, 992, 993, 994, 995, 996, 998,
];

/// Whether `code` is an assigned country calling code.
pub fn is_country_code(code: u16) -> bool {
    COUNTRY_CODES.binary_search(&code).is_ok()
}

/// A phone number split as the legacy phone protocol sends it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber {
    /// Country calling code (`1`, `44`, `358`).
    pub country_code: u16,
    /// The national significant number, digits only.
    pub national: String,
    /// An extension dialled after the call connects: digits, `*`, `#`, `,` (pause), with an
    /// optional leading `@` (dial it at once), as MIM and the PhoneFactor SDK take it.
    pub extension: Option<String>,
}

fn invalid(input: &str, reason: impl fmt::Display) -> SdkError {
    SdkError::Phone {
        input: input.chars().take(64).collect(),
        reason: reason.to_string(),
    }
}

fn split_extension(input: &str) -> (&str, Option<&str>) {
    let lower = input.to_ascii_lowercase();
    for marker in [
        " extension ",
        " ext. ",
        " ext ",
        "ext.",
        " x ",
        "x",
        ";ext=",
    ] {
        if let Some(i) = lower.find(marker) {
            return (&input[..i], Some(&input[i + marker.len()..]));
        }
    }
    (input, None)
}

impl PhoneNumber {
    /// Parses a number as people write it, applying `default_country_code` when the number has
    /// no international prefix (`+` or `00`); a national trunk `0` is dropped in that case.
    pub fn parse(input: &str, default_country_code: u16) -> Result<Self> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(invalid(input, "the number is empty"));
        }
        let (number, extension) = split_extension(trimmed);
        let extension = match extension.map(str::trim) {
            None | Some("") => None,
            Some(ext) => {
                let body = ext.strip_prefix('@').unwrap_or(ext);
                if body.is_empty()
                    || body.len() > 32
                    || !body
                        .chars()
                        .all(|c| c.is_ascii_digit() || "*#,".contains(c))
                {
                    return Err(invalid(
                        input,
                        "the extension may hold only digits, `*`, `#`, `,` and a leading `@`",
                    ));
                }
                Some(ext.to_string())
            }
        };
        let mut international = false;
        let mut digits = String::with_capacity(number.len());
        let mut rest = number.trim();
        if let Some(r) = rest.strip_prefix('+') {
            international = true;
            rest = r;
        }
        // "(0)" after a country code is the national trunk prefix written for locals.
        let cleaned = rest.replace("(0)", "");
        for c in cleaned.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' | '/' | '\u{a0}' => {}
                other => {
                    return Err(invalid(
                        input,
                        format!("`{other}` is not part of a phone number"),
                    ));
                }
            }
        }
        if !international && digits.starts_with("00") {
            international = true;
            digits.drain(..2);
        }
        let (country_code, national) = if international {
            let split = (1..=3).find_map(|n| {
                let cc: u16 = digits.get(..n)?.parse().ok()?;
                is_country_code(cc).then(|| (cc, digits[n..].to_string()))
            });
            split.ok_or_else(|| invalid(input, "it does not start with a known country code"))?
        } else {
            if !is_country_code(default_country_code) {
                return Err(invalid(
                    input,
                    format!("the default country code {default_country_code} is not assigned"),
                ));
            }
            // A national trunk `0` is not part of the international number, except in
            // Italy, San Marino and the Vatican, where the leading 0 belongs to the number.
            let keeps_zero = matches!(default_country_code, 1 | 39 | 378 | 379);
            let national = if keeps_zero {
                digits.clone()
            } else {
                digits.trim_start_matches('0').to_string()
            };
            (default_country_code, national)
        };
        let total = country_code.to_string().len() + national.len();
        if national.len() < 4 {
            return Err(invalid(input, "the number is too short"));
        }
        if total > 15 {
            return Err(invalid(
                input,
                "the number is longer than the 15 digits E.164 allows",
            ));
        }
        Ok(Self {
            country_code,
            national,
            extension,
        })
    }

    /// The number in E.164 form, without the extension (`+14255550100`).
    pub fn e164(&self) -> String {
        format!("+{}{}", self.country_code, self.national)
    }
}

impl fmt::Display for PhoneNumber {
    /// E.164, then ` x<extension>` when there is one: the form rolegate stores.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}{}", self.country_code, self.national)?;
        if let Some(ext) = &self.extension {
            write!(f, " x{ext}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e164(s: &str, cc: u16) -> String {
        PhoneNumber::parse(s, cc).unwrap().to_string()
    }

    #[test]
    fn the_table_is_sorted_for_binary_search() {
        assert!(COUNTRY_CODES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn national_numbers_take_the_default_country_code() {
        assert_eq!(e164("(425) 555-0100", 1), "+14255550100");
        assert_eq!(e164("425.555.0100", 1), "+14255550100");
        assert_eq!(e164("020 7946 0958", 44), "+442079460958");
        assert_eq!(e164("06 12 34 56 78", 33), "+33612345678");
        assert_eq!(e164("06 1234 5678", 39), "+390612345678");
    }

    #[test]
    fn numbers_with_a_country_code_keep_it() {
        assert_eq!(e164("+44 20 7946 0958", 1), "+442079460958");
        assert_eq!(e164("+44 (0)20 7946 0958", 1), "+442079460958");
        assert_eq!(e164("0044 20 7946 0958", 1), "+442079460958");
        assert_eq!(e164("+358 40 1234567", 1), "+358401234567");
        assert_eq!(e164("+1 425 555 0100", 44), "+14255550100");
        let p = PhoneNumber::parse("+358 40 1234567", 1).unwrap();
        assert_eq!((p.country_code, p.national.as_str()), (358, "401234567"));
    }

    #[test]
    fn extensions_travel_apart() {
        let p = PhoneNumber::parse("+1 425 555 0100 x123#", 1).unwrap();
        assert_eq!(p.extension.as_deref(), Some("123#"));
        assert_eq!(p.e164(), "+14255550100");
        assert_eq!(p.to_string(), "+14255550100 x123#");
        let p = PhoneNumber::parse("425-555-0100 ext. @,,45", 1).unwrap();
        assert_eq!(p.extension.as_deref(), Some("@,,45"));
        // What rolegate stores parses back to itself.
        assert_eq!(e164("+14255550100 x123#", 44), "+14255550100 x123#");
    }

    #[test]
    fn garbage_gets_an_error_naming_the_problem() {
        let msg = |s: &str, cc: u16| PhoneNumber::parse(s, cc).unwrap_err().to_string();
        assert!(msg("", 1).contains("empty"));
        assert!(msg("call me", 1).contains("`c` is not part of a phone number"));
        assert!(msg("+999 1234 5678", 1).contains("known country code"));
        assert!(msg("12", 1).contains("too short"));
        assert!(msg("+1 425 555 0100 1234 5678", 1).contains("15 digits"));
        assert!(msg("425 555 0100 x12a", 1).contains("extension"));
        assert!(msg("425 555 0100", 999).contains("default country code 999"));
    }
}
