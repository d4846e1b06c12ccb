//! The anchor file of the event chain (`rolegate::records::anchor::Anchors::parse`): lines
//! the daemon signed, and whatever else a file on disk may hold.
//!
//! Checks: no panic; a checkpoint signed with the key and appended to the file is read as
//! one more valid checkpoint.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use rolegate::records::anchor::{AnchorKey, Anchors};
use rolegate::store::secrets::SealingKey;
use rolegate_fuzz::private_file;

static KEY: LazyLock<AnchorKey> = LazyLock::new(|| {
    let path = private_file(
        "rolegate.key",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n",
    );
    let key = SealingKey::load_or_create(&path).expect("the key read");
    AnchorKey::derive(&key).expect("the anchor key")
});

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let anchors = Anchors::parse(&text, &KEY);
    for r in anchors.refused() {
        let _ = r.to_string();
    }
    for c in anchors.valid() {
        let _ = c.at();
    }
    let newest = anchors.newest().map(|c| c.seq);
    let seq = newest.unwrap_or(0).saturating_add(1);
    let c = KEY.sign(seq, "ab12", 1_700_000_000_000).expect("signed");
    let line = serde_json::to_string(&c).expect("encoded");
    let more = Anchors::parse(&format!("{text}\n{line}\n"), &KEY);
    assert_eq!(more.valid().len(), anchors.valid().len() + 1);
    assert_eq!(more.newest().map(|c| c.seq), Some(seq));
});
