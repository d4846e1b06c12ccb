//! The MIM import's files (`rolegate::records::import`), read as `rolegate import mim` reads
//! them: the bytes decoded (UTF-8, UTF-16 with a BOM), the separator found, the records, then
//! the users (first byte 0) or the roles (otherwise) in them.
//!
//! Checks: no panic; the records, written back quoted with `,` and CRLF, parse to the same
//! fields; line numbers rise.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rolegate::records::import::{Record, decode, other_reading, parse_csv, read_role_file};
use rolegate::records::import::{read_user_file, ttl_seconds};

fn quoted(fields: &[String]) -> String {
    let cells: Vec<String> = fields
        .iter()
        .map(|f| format!("\"{}\"", f.replace('"', "\"\"")))
        .collect();
    cells.join(",") + "\r\n"
}

fn fields(records: &[Record]) -> Vec<Vec<String>> {
    records.iter().map(|r| r.fields.clone()).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let Ok(text) = decode("file.csv", bytes) else {
        return;
    };
    if let Ok(records) = parse_csv("file.csv", &text) {
        assert!(records.windows(2).all(|w| w[0].line < w[1].line));
        let written: String = records.iter().map(|r| quoted(&r.fields)).collect();
        match parse_csv("again.csv", &written) {
            Ok(back) => assert_eq!(fields(&back), fields(&records), "{written:?}"),
            Err(e) => panic!("{written:?}: {e}"),
        }
        for r in &records {
            for f in &r.fields {
                let _ = ttl_seconds(f);
            }
        }
    }
    if which == 0 {
        if let Ok(file) = read_user_file("users.csv", &text) {
            for (_, u) in file.users {
                let _ = rolegate::model::identity::account_key(&u.account);
                if let Some(p) = u.phone {
                    let _ = rolegate::model::phone::parse(&p, 44);
                    let _ = other_reading(&p, 44);
                }
            }
        }
    } else {
        let _ = read_role_file("roles.csv", &text, "phone-legacy", Some("Europe/London"));
    }
});
