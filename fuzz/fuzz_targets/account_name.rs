//! Account and role names as admins, CSV files and the directory give them
//! (`rolegate::model::identity`): the key every comparison uses, the look-alike skeleton, the
//! checks on new names, quoting in messages.
//!
//! Checks: no panic; a name is the same account as itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rolegate::model::identity::{
    NameKind, account_key, check_name, mixed_script_label, quoted, same_account, skeleton,
};

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    let _ = account_key(name);
    assert!(same_account(name, name));
    let _ = skeleton(name);
    let _ = mixed_script_label(name);
    let _ = quoted(name);
    let _ = check_name(NameKind::Account, name);
    let _ = check_name(NameKind::Role, name);
});
