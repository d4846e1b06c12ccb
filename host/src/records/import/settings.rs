//! What the import takes from MfaSettings.xml itself: `DefaultCountryCode`, the country code
//! MIM applied to phone numbers written without one. (The file as a whole is read and checked
//! by the legacy phone provider.)

use crate::model::error::{Error, Result};

/// `DefaultCountryCode` from an MfaSettings.xml's bytes (UTF-8 or UTF-16 with a BOM), `None`
/// when the element is absent or empty; refused when it is not an assigned country code.
/// Read as XML, as the legacy provider reads the file: the text of the element (entities and
/// CDATA resolved), never what a comment, a declaration or another element's text holds.
pub fn country_code(name: &str, bytes: &[u8]) -> Result<Option<u16>> {
    let text = super::csv::decode(name, bytes)?;
    let Some(value) = leaf_text(name, &text, "defaultcountrycode")? else {
        return Ok(None);
    };
    let value = value.trim().trim_start_matches('+');
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

/// The text of the first element named `wanted` (lower case; any case in the file) that
/// holds no element, below the root; `None` when there is none.
fn leaf_text(name: &str, text: &str, wanted: &str) -> Result<Option<String>> {
    use quick_xml::events::Event;
    let bad = |m: String| Error::Invalid {
        what: name.to_string(),
        message: format!("not readable as XML: {m}"),
    };
    let mut reader = quick_xml::Reader::from_str(text);
    let mut depth = 0usize;
    // The text of the open element, while it is the wanted one and has no child yet.
    let mut inside: Option<String> = None;
    loop {
        match reader.read_event().map_err(|e| bad(e.to_string()))? {
            Event::Start(e) => {
                depth += 1;
                let is_wanted = depth > 1 && e.name().as_ref().to_ascii_lowercase() == wanted;
                // A child ends the wanted element's claim to be a leaf.
                inside = is_wanted.then(String::new);
            }
            Event::Empty(e) => {
                if depth > 0 && e.name().as_ref().to_ascii_lowercase() == wanted {
                    return Ok(Some(String::new()));
                }
                inside = None;
            }
            Event::Text(t) => {
                if let Some(s) = &mut inside {
                    s.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some(s) = &mut inside {
                    s.push_str(&t.into_inner());
                }
            }
            Event::GeneralRef(r) => {
                if let Some(s) = &mut inside {
                    match r.resolve_char_ref().map_err(|e| bad(e.to_string()))? {
                        Some(c) => s.push(c),
                        None => {
                            let entity = r.into_inner();
                            let resolved = quick_xml::escape::resolve_predefined_entity(&entity)
                                .ok_or_else(|| bad(format!("unknown entity `&{entity};`")))?;
                            s.push_str(resolved);
                        }
                    }
                }
            }
            Event::End(_) => {
                depth = depth.saturating_sub(1);
                if let Some(s) = inside.take() {
                    return Ok(Some(s));
                }
            }
            Event::Eof => return Ok(None),
            _ => {}
        }
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
    fn only_the_element_counts_never_a_declaration_or_comment_that_looks_like_it() {
        // Found by fuzzing (fuzz/mfa_settings): a declaration left unclosed up to a later
        // `?>` held `<DefaultCountryCode>22</…>`, which a text search took; the provider
        // (an XML reader) took the element's 44.
        let xml = "<?xml version=\"1.0\" encoding=x <DefaultCountryCode>22</DefaultCountryCode> \"utf-8\"?>\r\n<MfaSettings>\r\n<!-- <DefaultCountryCode>33</DefaultCountryCode> -->\r\n<DefaultCountryCode>&#52;4</DefaultCountryCode>\r\n</MfaSettings>\r\n";
        assert_eq!(country_code("m.xml", xml.as_bytes()).unwrap(), Some(44));
        let cdata =
            "<MfaSettings><DefaultCountryCode><![CDATA[ 49 ]]></DefaultCountryCode></MfaSettings>";
        assert_eq!(country_code("m.xml", cdata.as_bytes()).unwrap(), Some(49));
        // An element of that name that holds others is no setting.
        let nested = "<MfaSettings><DefaultCountryCode><x>7</x></DefaultCountryCode></MfaSettings>";
        assert_eq!(country_code("m.xml", nested.as_bytes()).unwrap(), None);
        assert_eq!(
            country_code("m.xml", b"<MfaSettings><defaultcountrycode/></MfaSettings>").unwrap(),
            None
        );
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
