//! What the fuzz targets share: a provider instance behind the C ABI, and the check that a
//! call through it answers a `Response`.

use rolegate_sdk::ErrorKind;
use rolegate_sdk::abi::{Instance, Table};
use rolegate_sdk::message::Response;

/// An instance of `P` created through the ABI from `settings` (JSON); the target's setup.
pub fn instance<P: rolegate_sdk::Provider>(settings: &str) -> Instance {
    match Table::for_provider::<P>().create(settings.as_bytes()) {
        Ok(i) => i,
        Err(e) => panic!("the fuzz target's provider does not start: {e:?}"),
    }
}

/// Calls `provider` with `request` through the ABI: the answer must be a JSON `Response`,
/// and an error one the provider chose, not a panic caught by the SDK.
pub fn answers(provider: &Instance, request: &[u8]) {
    let answer = provider.call_raw(request);
    match serde_json::from_slice::<Response<serde_json::Value>>(&answer) {
        Ok(Response::Error(e)) => assert_ne!(e.kind, ErrorKind::Panicked, "{}", e.message),
        Ok(Response::Ok(_)) => {}
        Err(e) => panic!(
            "the answer is no Response ({e}): {}",
            String::from_utf8_lossy(&answer)
        ),
    }
}

/// Creates an instance through `table` from `settings`: an instance or an error, never a
/// panic. (`Table::for_provider` leaks its table: make it once, not per input.)
pub fn creates(table: &Table, settings: &[u8]) {
    if let Err(e) = table.create(settings) {
        assert_ne!(e.kind, ErrorKind::Panicked, "{}", e.message);
    }
}

/// A file holding `text` with mode 0600 in a folder of this process's own under the
/// temporary directory, for what reads secrets from files (made once per process).
pub fn private_file(name: &str, text: &str) -> std::path::PathBuf {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = std::env::temp_dir().join(format!("rolegate-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .expect("a private file");
    f.write_all(text.as_bytes()).expect("written");
    path
}
