//! `rolegate provider check` on good and contract-breaking libraries.

use std::process::Command;

use rolegate_e2e::{
    build_c, hello_lib, misbehave_lib, rolegate_bin, workspace_root, write_private,
};

fn check(args: &[&str]) -> (bool, String) {
    let out = Command::new(rolegate_bin())
        .args(["provider", "check"])
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn hello_passes_in_both_isolation_modes() {
    let lib = hello_lib();
    for iso in ["in-process", "process"] {
        let (ok, out) = check(&[lib.to_str().unwrap(), "--isolation", iso]);
        assert!(ok, "{out}");
        assert!(out.contains("checks: "), "{out}");
        assert!(out.contains(" 0 failed"), "{out}");
        assert!(!out.contains("FAIL"), "{out}");
    }
}

#[test]
fn the_c_provider_passes() {
    let dir = tempfile::tempdir().unwrap();
    let lib = build_c(
        &workspace_root().join("examples/c-provider/hello_c.c"),
        dir.path(),
    );
    for iso in ["in-process", "process"] {
        let (ok, out) = check(&[lib.to_str().unwrap(), "--isolation", iso]);
        assert!(ok, "{out}");
        assert!(!out.contains("FAIL"), "{out}");
    }
}

#[test]
fn settings_come_from_a_private_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("hello.toml");
    write_private(&cfg, "digits = 8\n");
    let lib = hello_lib();
    let (ok, out) = check(&[lib.to_str().unwrap(), "--config", cfg.to_str().unwrap()]);
    assert!(ok, "{out}");
    write_private(&cfg, "digits = 99\n");
    let (ok, out) = check(&[lib.to_str().unwrap(), "--config", cfg.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("`digits` must be between 4 and 9, not 99"),
        "{out}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, out) = check(&[lib.to_str().unwrap(), "--config", cfg.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        out.contains("is readable by group or others (mode 644)"),
        "{out}"
    );
}

#[test]
fn a_provider_that_accepts_unknown_settings_fails_with_a_clear_report() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("lenient.toml");
    write_private(&cfg, "mode = \"lenient\"\n");
    let lib = misbehave_lib();
    let (ok, out) = check(&[lib.to_str().unwrap(), "--config", cfg.to_str().unwrap()]);
    assert!(!ok, "{out}");
    let fail = out
        .lines()
        .find(|l| l.contains("FAIL"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(fail.contains("unknown settings"), "{out}");
    assert!(fail.contains("rolegate_check_unknown_key"), "{out}");
}

#[test]
fn a_provider_that_hangs_fails_the_check_without_hanging_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("hang.toml");
    write_private(&cfg, "mode = \"hang\"\n");
    let lib = misbehave_lib();
    let t = std::time::Instant::now();
    let (ok, out) = check(&[
        lib.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--isolation",
        "process",
        "--deadline-ms",
        "300",
    ]);
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL"), "{out}");
    assert!(t.elapsed() < std::time::Duration::from_secs(30), "{out}");
}

#[test]
fn a_library_that_is_not_a_plugin_fails_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("libtext.so");
    std::fs::write(&path, "hello").unwrap();
    let (ok, out) = check(&[path.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        out.contains("FAIL  load") && out.contains("no ELF header"),
        "{out}"
    );
}

#[test]
fn quickstart_writes_a_private_config_and_loads_both_isolation_modes() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let qs = dir.path().join("qs");
    let out = Command::new(rolegate_bin())
        .args(["quickstart", "--no-serve", "--dir"])
        .arg(&qs)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::metadata(qs.join("rolegate.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("hello")).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(
        rows[0].contains("in-process") && rows[0].contains(" ok "),
        "{text}"
    );
    assert!(
        rows[1].contains("process") && rows[1].contains(" ok "),
        "{text}"
    );
    // The first-party TOTP provider is loaded too; SMS is shown, commented out, until an
    // admin gives it a Twilio account.
    let totp = text
        .lines()
        .find(|l| l.starts_with("totp"))
        .unwrap_or_default();
    assert!(totp.contains(" ok "), "{text}");
    let config = std::fs::read_to_string(qs.join("rolegate.toml")).unwrap();
    assert!(config.contains("# id = \"sms\""), "{config}");
}
