//! The bytes of an `Export-Csv` (or `Out-File`) file as text, and that text as records:
//! UTF-8 with or without a BOM, UTF-16 LE or BE with a BOM; `,`, `;` or tab between fields
//! (whichever the header line uses); quoted fields; LF or CRLF; the `#TYPE` line skipped.

use crate::model::error::{Error, Result};

/// One CSV record with the line it started on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// 1-based line number in the file.
    pub line: usize,
    /// The fields.
    pub fields: Vec<String>,
}

/// Decodes a file as PowerShell writes it: UTF-16 LE or BE when it starts with that BOM,
/// otherwise UTF-8 (a BOM dropped).
pub fn decode(name: &str, bytes: &[u8]) -> Result<String> {
    let utf16 = |rest: &[u8], be: bool| {
        let units = rest.chunks(2).map(|c| match (c, be) {
            ([a, b], false) => u16::from_le_bytes([*a, *b]),
            ([a, b], true) => u16::from_be_bytes([*a, *b]),
            // An odd last byte cannot be a code unit; it decodes as a replacement below.
            _ => 0xDC00,
        });
        char::decode_utf16(units)
            .collect::<std::result::Result<String, _>>()
            .map_err(|_| Error::Invalid {
                what: name.to_string(),
                message: "the file starts with a UTF-16 BOM but is not valid UTF-16".into(),
            })
    };
    match bytes {
        [0xFF, 0xFE, rest @ ..] => utf16(rest, false),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, true),
        _ => {
            let rest = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
            String::from_utf8(rest.to_vec()).map_err(|e| Error::Invalid {
                what: name.to_string(),
                message: format!(
                    "byte {} is not UTF-8 (export with `-Encoding UTF8` or `Unicode`; Windows \
                     PowerShell 5.1's default ASCII loses accents)",
                    e.utf8_error().valid_up_to() + rest.len().abs_diff(bytes.len())
                ),
            })
        }
    }
}

/// The field separator the header line uses: `,`, `;` (`Export-Csv -UseCulture` in many
/// cultures) or a tab, whichever appears most outside quotes; `,` when none does.
pub fn delimiter(text: &str) -> char {
    let header = text
        .trim_start_matches('\u{feff}')
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with("#TYPE"))
        .unwrap_or_default();
    let mut counts = [(',', 0usize), (';', 0), ('\t', 0)];
    let mut quoted = false;
    for c in header.chars() {
        if c == '"' {
            quoted = !quoted;
        } else if !quoted {
            for (d, n) in counts.iter_mut() {
                if *d == c {
                    *n += 1;
                }
            }
        }
    }
    // The first of the most frequent: `,` wins a tie.
    counts
        .iter()
        .fold(
            (',', 0),
            |best, &(d, n)| if n > best.1 { (d, n) } else { best },
        )
        .0
}

/// Parses CSV as PowerShell's `Export-Csv` writes it, with the separator the header line uses
/// (see [`delimiter`]): a `#TYPE` line is skipped, fields may be quoted (`""` inside quotes is
/// a quote), line ends are LF or CRLF, a BOM is ignored.
pub fn parse_csv(name: &str, text: &str) -> Result<Vec<Record>> {
    parse_with(name, text, delimiter(text))
}

/// Parses CSV with a given field separator (see [`parse_csv`]).
pub fn parse_with(name: &str, text: &str, sep: char) -> Result<Vec<Record>> {
    let text = text.trim_start_matches('\u{feff}');
    let mut out = Vec::new();
    let mut fields: Vec<String> = Vec::new();
    let mut field = String::new();
    let (mut line, mut start_line) = (1usize, 1usize);
    let mut in_quotes = false;
    let mut at_field_start = true;
    let mut chars = text.chars().peekable();
    let bad = |line: usize, m: &str| Error::Invalid {
        what: format!("{name} line {line}"),
        message: m.to_string(),
    };
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => {
                    in_quotes = false;
                    if !matches!(chars.peek(), None | Some('\r' | '\n'))
                        && chars.peek() != Some(&sep)
                    {
                        return Err(bad(line, "text after a closing quote"));
                    }
                }
                '\n' => {
                    line += 1;
                    field.push('\n');
                }
                c => field.push(c),
            }
            continue;
        }
        match c {
            '"' if at_field_start => {
                in_quotes = true;
                at_field_start = false;
            }
            c if c == sep => {
                fields.push(std::mem::take(&mut field));
                at_field_start = true;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                fields.push(std::mem::take(&mut field));
                let record = std::mem::take(&mut fields);
                if is_data(&record) {
                    out.push(Record {
                        line: start_line,
                        fields: record,
                    });
                }
                line += 1;
                start_line = line;
                at_field_start = true;
            }
            c => {
                field.push(c);
                at_field_start = false;
            }
        }
    }
    if in_quotes {
        return Err(bad(start_line, "a quoted field is not closed"));
    }
    if !field.is_empty() || !fields.is_empty() {
        fields.push(field);
        // The last line, without its line end, is blank or data by the same rule as any.
        if is_data(&fields) {
            out.push(Record {
                line: start_line,
                fields,
            });
        }
    }
    Ok(out)
}

/// Whether a record is data: neither blank (one field of white space, as an empty line
/// reads) nor `Export-Csv`'s `#TYPE` line.
fn is_data(record: &[String]) -> bool {
    let blank = record.len() == 1 && record[0].trim().is_empty();
    !blank && !record.first().is_some_and(|f| f.starts_with("#TYPE"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utf16(text: &str, be: bool) -> Vec<u8> {
        let mut out = if be {
            vec![0xFE, 0xFF]
        } else {
            vec![0xFF, 0xFE]
        };
        for u in text.encode_utf16() {
            out.extend(if be { u.to_be_bytes() } else { u.to_le_bytes() });
        }
        out
    }

    #[test]
    fn every_encoding_powershell_writes_decodes_to_the_same_text() {
        let text = "\"SourceAccountName\",\"DisplayName\"\r\n\"jdoe\",\"Jérôme\"\r\n";
        let mut bom = vec![0xEF, 0xBB, 0xBF];
        bom.extend(text.as_bytes());
        for bytes in [
            text.as_bytes().to_vec(),
            bom,
            utf16(text, false),
            utf16(text, true),
        ] {
            assert_eq!(decode("u.csv", &bytes).unwrap(), text);
        }
        let e = decode("u.csv", b"a,b\n\xE9t\xE9,x\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("u.csv") && e.contains("byte 4 is not UTF-8"),
            "{e}"
        );
        let e = decode("u.csv", &[0xFF, 0xFE, 0x00, 0xD8, 0x41, 0x00])
            .unwrap_err()
            .to_string();
        assert!(e.contains("not valid UTF-16"), "{e}");
    }

    #[test]
    fn the_separator_is_the_one_the_header_line_uses() {
        assert_eq!(
            delimiter("#TYPE X\r\n\"A\";\"B\";\"C\"\r\n\"1,5\";\"2\";\"3\"\r\n"),
            ';'
        );
        assert_eq!(delimiter("\"A;B\",\"C\"\n"), ',');
        assert_eq!(delimiter("A\tB\n"), '\t');
        assert_eq!(delimiter("A\n"), ',');
        let r = parse_csv("r.csv", "\"A\";\"B\"\r\n\"x;y\";\"1,5\"\r\n").unwrap();
        assert_eq!(r[1].fields, vec!["x;y".to_string(), "1,5".to_string()]);
    }
}
