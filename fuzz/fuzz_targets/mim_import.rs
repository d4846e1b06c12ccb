//! The MIM import's CSV files (`rolegate::records::import`): `Export-Csv`'s format, and the
//! users and roles read from it.
//!
//! Checks: no panic; the records parsed, written back quoted with CRLF line ends, parse to
//! the same fields; line numbers rise.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rolegate::records::import::{parse_csv, read_roles, read_users};

fn quoted(fields: &[String]) -> String {
    let cells: Vec<String> = fields
        .iter()
        .map(|f| format!("\"{}\"", f.replace('"', "\"\"")))
        .collect();
    cells.join(",") + "\r\n"
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(records) = parse_csv("f.csv", &text) {
        assert!(records.windows(2).all(|w| w[0].line < w[1].line));
        let written: String = records.iter().map(|r| quoted(&r.fields)).collect();
        let back = match parse_csv("again.csv", &written) {
            Ok(b) => b,
            Err(e) => panic!("{written:?}: {e}"),
        };
        let fields = |rs: &[rolegate::records::import::Record]| -> Vec<Vec<String>> {
            rs.iter().map(|r| r.fields.clone()).collect()
        };
        assert_eq!(fields(&back), fields(&records), "{written:?}");
    }
    if let Ok(users) = read_users("users.csv", &text) {
        for (_, u) in users {
            let _ = rolegate::model::identity::account_key(&u.account);
            if let Some(p) = u.phone {
                let _ = rolegate::model::phone::parse(&p, 1);
            }
        }
    }
    let _ = read_roles("roles.csv", &text, "phone-legacy");
});
