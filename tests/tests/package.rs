//! The Debian package (`cargo deb`, `[package.metadata.deb]` in host/Cargo.toml) and what it
//! ships: the hardened systemd unit, the default config, the maintainer scripts.
//!
//! The package is built from this test build's own artefacts (`--profile dev --no-build`),
//! never with a release build. cargo-deb and systemd-analyze are required in CI (`CI` set;
//! scripts/test installs cargo-deb); elsewhere a test without them says it is skipped.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use rolegate::config::{Config, DEFAULT_MAX_CONNECTIONS};
use rolegate_e2e::{free_port, rolegate_bin, target_dir, workspace_root, write_private};

/// The first-party plugin libraries the package installs, with their provider ids in the
/// default config.
const PLUGINS: [(&str, &str); 5] = [
    ("totp", "librolegate_provider_totp.so"),
    ("sms", "librolegate_provider_sms_twilio.so"),
    ("phone-legacy", "librolegate_provider_legacy_phone.so"),
    ("webauthn", "librolegate_provider_webauthn.so"),
    ("smartcard", "librolegate_provider_smartcard.so"),
];
const PLUGIN_DIR: &str = "/usr/lib/rolegate/plugins";
/// The placeholder of the default config's commented `sha256` lines.
const PIN_PLACEHOLDER: &str = "PASTE-SHA256-HERE";
/// Room the daemon keeps beside its connections (host/src/daemon: `raise_open_files`).
const FILES_BESIDE_CONNECTIONS: usize = 256;

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Whether `tool args` runs. Without it the test is skipped, with a message — but not in CI,
/// where the tool must be there.
fn have(tool: &str, args: &[&str], why: &str) -> bool {
    let ok = Command::new(tool)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !in_ci(),
            "`{tool} {}` does not run: {why}; CI must run this test",
            args.join(" ")
        );
        eprintln!("skipped: {tool} missing ({why})");
    }
    ok
}

fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn have_cargo_deb() -> bool {
    let ok = Command::new(cargo())
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !in_ci(),
            "cargo-deb is missing (scripts/test installs it); CI must run this test"
        );
        eprintln!("skipped: cargo-deb missing (`cargo install cargo-deb --locked`)");
    }
    ok
}

fn have_systemd_analyze() -> bool {
    have(
        "systemd-analyze",
        &["--version"],
        "the unit is checked with `systemd-analyze verify` (package systemd)",
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed; its stdout.
fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn both(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn sha256_hex(path: &Path) -> String {
    use sha2::Digest as _;
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The values of `key=` in a unit's text (comments and other keys left out), in order.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .collect()
}

/// `systemd-analyze verify` on `unit` (a file named `rolegate.service`): what it says about
/// the unit (every line of its output naming it), and whether it succeeded.
fn verify(unit: &Path) -> (bool, Vec<String>) {
    let out = run(Command::new("systemd-analyze").arg("verify").arg(unit));
    let about: Vec<String> = both(&out)
        .lines()
        .filter(|l| l.contains("rolegate"))
        .map(String::from)
        .collect();
    (out.status.success(), about)
}

/// The unit with ExecStart on `binary` (verify checks that the binary exists), as
/// `dir/rolegate.service`.
fn unit_on(unit: &str, binary: &Path, dir: &Path) -> PathBuf {
    let adapted = unit.replace(
        "ExecStart=/usr/bin/rolegate ",
        &format!("ExecStart={} ", binary.display()),
    );
    assert_ne!(adapted, unit, "the unit has no ExecStart=/usr/bin/rolegate");
    let path = dir.join("rolegate.service");
    std::fs::write(&path, adapted).unwrap();
    path
}

/// The unit's own checks, shared by the source's test and the package's.
fn check_unit_verifies(unit: &str, binary: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let path = unit_on(unit, binary, dir.path());
    let (success, about) = verify(&path);
    assert!(
        success && about.is_empty(),
        "systemd-analyze verify warns about the unit:\n{}",
        about.join("\n")
    );
    let exposure = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20"])
        .arg(&path));
    assert!(
        exposure.status.success(),
        "the unit's exposure is above 2.0 (was 1.5):\n{}",
        both(&exposure)
    );
}

#[test]
fn the_unit_is_hardened_and_systemd_verifies_it() {
    if !have_systemd_analyze() {
        return;
    }
    let unit = read(&workspace_root().join("packaging/rolegate.service"));
    let one = |key: &str| {
        let v = unit_values(&unit, key);
        assert_eq!(v.len(), 1, "{key}= should be set once: {v:?}");
        v[0].clone()
    };
    for (key, value) in [
        (
            "ExecStart",
            "/usr/bin/rolegate serve --config /etc/rolegate/rolegate.toml",
        ),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("RestartForceExitStatus", "SIGHUP"),
        ("User", "rolegate"),
        ("Group", "rolegate"),
        ("UMask", "0077"),
        ("StateDirectory", "rolegate"),
        ("StateDirectoryMode", "0700"),
        ("LogsDirectory", "rolegate"),
        ("LogsDirectoryMode", "0700"),
        ("ConfigurationDirectory", "rolegate"),
        ("ConfigurationDirectoryMode", "0750"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("SystemCallFilter", "@system-service"),
        ("MemoryDenyWriteExecute", "yes"),
        ("WantedBy", "multi-user.target"),
    ] {
        assert_eq!(one(key), value, "{key}=");
    }
    assert!(
        unit_values(&unit, "DynamicUser").is_empty(),
        "a static user owns the private config"
    );

    // Type=exec: the daemon does not speak sd_notify. Should it learn to, Type=notify.
    assert_eq!(one("Type"), "exec");
    let mut sources = vec![workspace_root().join("host/src")];
    while let Some(dir) = sources.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                assert!(
                    !read(&path).contains("NOTIFY_SOCKET"),
                    "{} speaks sd_notify: make the unit Type=notify",
                    path.display()
                );
            }
        }
    }

    // ExecStart's syntax is the binary's: `serve --config`.
    let help = ok(Command::new(rolegate_bin()).args(["serve", "--help"]));
    assert!(help.contains("--config <CONFIG>"), "{help}");

    // The rule: LimitNOFILE >= max_connections + 256 (what the daemon raises its soft limit
    // to), for the default config's max_connections.
    let nofile: usize = one("LimitNOFILE").parse().expect("LimitNOFILE is a number");
    let config = Config::parse(
        &read(&workspace_root().join("packaging/rolegate.toml")),
        Path::new("rolegate.toml"),
    )
    .unwrap();
    assert_eq!(config.server.max_connections, DEFAULT_MAX_CONNECTIONS);
    assert!(
        nofile >= config.server.max_connections + FILES_BESIDE_CONNECTIONS,
        "LimitNOFILE={nofile} is below max_connections {} + {FILES_BESIDE_CONNECTIONS}",
        config.server.max_connections
    );
    // The default port needs no capability.
    let port: u16 = config
        .server
        .listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap();
    assert!(port >= 1024, "port {port} would need CAP_NET_BIND_SERVICE");

    check_unit_verifies(&unit, &rolegate_bin());

    // The checks see what they should: a misspelt key is reported, and a unit without the
    // hardening is over the exposure threshold.
    let dir = tempfile::tempdir().unwrap();
    let typo = unit_on(
        &unit.replace("ProtectSystem=strict", "ProtectSystm=strict"),
        &rolegate_bin(),
        dir.path(),
    );
    let (_, about) = verify(&typo);
    assert!(
        about.iter().any(|l| l.contains("ProtectSystm")),
        "verify did not report the misspelt key: {about:?}"
    );
    let bare = format!(
        "[Unit]\nDescription=rolegate\n\n[Service]\nExecStart={} serve --config /etc/rolegate/rolegate.toml\n",
        rolegate_bin().display()
    );
    std::fs::write(&typo, bare).unwrap();
    let exposure = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20"])
        .arg(&typo));
    assert!(
        !exposure.status.success(),
        "an unhardened unit passed the threshold"
    );
}

/// The commented `[[provider]]` block of the default config for `library`, uncommented.
fn provider_block(config: &str, library: &str) -> String {
    let lines: Vec<&str> = config.lines().collect();
    let lib_line = format!("# library = \"{PLUGIN_DIR}/{library}\"");
    let at = lines
        .iter()
        .position(|l| *l == lib_line)
        .unwrap_or_else(|| panic!("no commented block for {library}"));
    let start = (0..at)
        .rev()
        .find(|&i| lines[i] == "# [[provider]]")
        .unwrap();
    let end = (at..lines.len())
        .find(|&i| !lines[i].starts_with("# "))
        .unwrap_or(lines.len());
    lines[start..end]
        .iter()
        .map(|l| l.strip_prefix("# ").unwrap())
        // The comments after the values stay comments.
        .fold(String::new(), |acc, l| acc + l + "\n")
}

#[test]
fn the_default_config_loads_and_its_provider_blocks_pin() {
    let text = read(&workspace_root().join("packaging/rolegate.toml"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rolegate.toml");
    write_private(&path, &text);

    // The real loader, as the daemon reads it.
    let config = Config::load(&path).unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:8420");
    assert!(config.server.listen_refusal().is_none());
    assert_eq!(
        config.store.sqlite,
        Path::new("/var/lib/rolegate/rolegate.db")
    );
    assert_eq!(
        config.store.key_file,
        Path::new("/var/lib/rolegate/rolegate.key")
    );
    assert!(config.store.postgres.is_none());
    assert_eq!(
        config.server.access_log.as_deref(),
        Some(Path::new("/var/log/rolegate/access.jsonl")),
        "without an access log (or TLS), SIGHUP would stop the daemon"
    );
    assert!(config.providers.is_empty(), "shipped without a provider");
    let listed = ok(Command::new(rolegate_bin())
        .args(["provider", "list", "--json", "--config"])
        .arg(&path));
    assert_eq!(listed.trim(), "[]");

    // Readable by its group: refused (hence the postinst's statoverride to 0600).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let refused = Config::load(&path).unwrap_err();
    assert!(
        matches!(refused, rolegate::Error::Permissions { mode: 0o640, .. }),
        "{refused}"
    );

    // Every commented provider block is valid once uncommented.
    let mut all = text.clone();
    for (_id, library) in PLUGINS {
        let block = provider_block(&text, library);
        assert!(
            block.contains(&format!("sha256 = \"{PIN_PLACEHOLDER}\"")),
            "{block}"
        );
        all.push('\n');
        all.push_str(&block);
    }
    let config = Config::parse(&all, Path::new("rolegate.toml")).unwrap();
    let got: Vec<(&str, PathBuf)> = config
        .providers
        .iter()
        .map(|p| (p.id.as_str(), p.library.clone()))
        .collect();
    let want: Vec<(&str, PathBuf)> = PLUGINS
        .iter()
        .map(|(id, lib)| (*id, Path::new(PLUGIN_DIR).join(lib)))
        .collect();
    assert_eq!(got, want);
    assert!(
        config
            .providers
            .iter()
            .all(|p| p.isolation == rolegate::config::Isolation::Process && !p.unpinned)
    );

    // The pin, as an admin sets it: the placeholder is refused, naming the library's real
    // SHA-256; `rolegate provider pin`'s value loads it.
    let totp = target_dir().join("librolegate_provider_totp.so");
    let block = provider_block(&text, "librolegate_provider_totp.so").replace(
        &format!("{PLUGIN_DIR}/librolegate_provider_totp.so"),
        &totp.display().to_string(),
    );
    let pinned_path = dir.path().join("pinned.toml");
    write_private(&pinned_path, &format!("{text}\n{block}"));
    let out = run(Command::new(rolegate_bin())
        .args(["provider", "list", "--json", "--config"])
        .arg(&pinned_path));
    let said = both(&out);
    let sha = sha256_hex(&totp);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "its SHA-256 is {sha} but the config pins {PIN_PLACEHOLDER}"
        )),
        "{said}"
    );
    let pin = ok(Command::new(rolegate_bin())
        .args(["provider", "pin"])
        .arg(&totp));
    assert_eq!(pin.trim(), sha);
    write_private(
        &pinned_path,
        &format!("{text}\n{}", block.replace(PIN_PLACEHOLDER, pin.trim())),
    );
    let listed: serde_json::Value = serde_json::from_str(&ok(Command::new(rolegate_bin())
        .args(["provider", "list", "--json", "--config"])
        .arg(&pinned_path)))
    .unwrap();
    assert_eq!(listed[0]["id"], "totp", "{listed}");
    assert_eq!(listed[0]["sha256"], sha.as_str(), "{listed}");
    assert_eq!(listed[0]["isolation"], "process", "{listed}");
    assert_eq!(listed[0]["health"], "ok", "{listed}");
}

/// Installs the package into an overlay of this machine's root (its writes on a tmpfs, in a
/// mount namespace of its own: nothing of it outlives the script), as root in a chroot, and
/// goes through what an admin does after: the pins the postinst printed pasted into the
/// config, the daemon started as its user, reloaded, stopped; then a purge. Sections start
/// with "== ".
const CHROOT_SCRIPT: &str = r#"#!/bin/sh
set -eu
base=$1 deb=$2 port=$3
mount -t tmpfs -o mode=0755 tmpfs "$base"
mkdir "$base/upper" "$base/work" "$base/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$base/upper,workdir=$base/work" "$base/root"
r="$base/root"
mount --bind /proc "$r/proc"
mount --bind /dev "$r/dev"
mount -t tmpfs tmpfs "$r/run"
mount -t tmpfs tmpfs "$r/tmp"
cp "$deb" "$r/tmp/rolegate.deb"
in_root() { chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
as_rolegate() { in_root setpriv --reuid=rolegate --regid=rolegate --init-groups -- "$@"; }
echo "== install"
in_root dpkg -i /tmp/rolegate.deb >"$r/tmp/install.log" 2>&1 || { cat "$r/tmp/install.log"; exit 1; }
cat "$r/tmp/install.log"
echo "== reinstall"
in_root dpkg -i /tmp/rolegate.deb 2>&1
echo "== user"
in_root getent passwd rolegate
echo "== stat"
in_root stat -c '%n %U %G %a' /etc/rolegate /etc/rolegate/rolegate.toml /usr/bin/rolegate \
  /usr/lib/systemd/system/rolegate.service /usr/lib/rolegate/plugins/librolegate_provider_totp.so
echo "== statoverride"
in_root dpkg-statoverride --list
echo "== list as rolegate"
as_rolegate /usr/bin/rolegate provider list --config /etc/rolegate/rolegate.toml --json
# The admin's edit: the port (a free one for the test) and the TOTP provider with the pin
# the postinst printed.
pin=$(sed -n 's/^  librolegate_provider_totp.so: sha256 = "\([0-9a-f]*\)"$/\1/p' "$r/tmp/install.log")
[ -n "$pin" ] || { echo "no pin for totp in the postinst's output" >&2; exit 1; }
sed -i "s/^listen = \"127.0.0.1:8420\"/listen = \"127.0.0.1:$port\"/" "$r/etc/rolegate/rolegate.toml"
cat >>"$r/etc/rolegate/rolegate.toml" <<EOT

[[provider]]
id = "totp"
library = "/usr/lib/rolegate/plugins/librolegate_provider_totp.so"
sha256 = "$pin"
isolation = "process"
EOT
echo "== edited"
in_root stat -c '%n %U %G %a' /etc/rolegate/rolegate.toml
# What the unit's StateDirectory= and LogsDirectory= make before the start.
in_root install -d -o rolegate -g rolegate -m 0700 /var/lib/rolegate /var/log/rolegate
echo "== serve"
# A simple command (no function, no subshell): $! is the daemon itself once chroot, env and
# setpriv have exec'd. Killed on any exit of this script; its output goes to files only, so a
# daemon left behind could never hold the test's pipe.
chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  setpriv --reuid=rolegate --regid=rolegate --init-groups -- \
  /usr/bin/rolegate serve --config /etc/rolegate/rolegate.toml \
  </dev/null >"$r/tmp/serve.out" 2>"$r/tmp/serve.log" &
pid=$!
trap 'kill -KILL "$pid" 2>/dev/null || true' EXIT
i=0
until grep -q 'serving on' "$r/tmp/serve.log"; do
  i=$((i + 1))
  if [ "$i" -gt 300 ] || ! kill -0 "$pid" 2>/dev/null; then cat "$r/tmp/serve.log" >&2; exit 1; fi
  sleep 0.1
done
kill -HUP "$pid"
sleep 0.5
if kill -0 "$pid" 2>/dev/null; then echo "alive after SIGHUP"; else echo "dead after SIGHUP"; fi
kill -TERM "$pid" 2>/dev/null || true
status=0
wait "$pid" || status=$?
echo "exit $status"
grep -v 'ROLEGATE_TOKEN=' "$r/tmp/serve.log" || true
echo "== state"
in_root sh -c 'stat -c "%n %U %G %a" /var/lib/rolegate/* /var/log/rolegate/*'
echo "== purge"
in_root dpkg --purge rolegate 2>&1
echo "== after purge"
for p in /etc/rolegate/rolegate.toml /usr/bin/rolegate /var/lib/rolegate/rolegate.db; do
  if [ -e "$r$p" ]; then echo "present $p"; else echo "absent $p"; fi
done
in_root dpkg-statoverride --list | grep rolegate || echo "no rolegate statoverride"
echo "== end"
"#;

/// A section of the chroot script's output.
fn section<'a>(out: &'a str, name: &str) -> &'a str {
    let start = out
        .find(&format!("== {name}\n"))
        .unwrap_or_else(|| panic!("no section {name} in:\n{out}"))
        + name.len()
        + 4;
    let rest = &out[start..];
    &rest[..rest.find("\n== ").map_or(rest.len(), |e| e + 1)]
}

#[test]
fn the_debian_package_holds_the_daemon_and_installs() {
    if !have_cargo_deb() || !have_systemd_analyze() {
        return;
    }
    let root = workspace_root();
    let dir = tempfile::tempdir().unwrap();
    let deb = dir.path().join("rolegate.deb");

    // From the artefacts of this build: `--profile dev` maps cargo-deb's target/release/
    // asset paths to target/debug (cargo-deb warns that it prefers release builds).
    let started = Instant::now();
    let target = target_dir()
        .parent()
        .map(Path::to_path_buf)
        .expect("target/debug has a parent");
    let built = run(Command::new(cargo())
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &target)
        // cargo-deb's staging folder (target/debian/rolegate otherwise): one per run, as
        // several test runs may package at once.
        .env("CARGO_BUILD_BUILD_DIR", dir.path().join("build"))
        .args([
            "deb",
            "-p",
            "rolegate",
            "--no-build",
            "--profile",
            "dev",
            "--fast",
        ])
        .arg("--output")
        .arg(&deb));
    assert!(
        built.status.success(),
        "cargo deb failed:\n{}",
        both(&built)
    );
    eprintln!("cargo deb: {:.1} s", started.elapsed().as_secs_f64());

    // The control fields.
    let field = |name: &str| ok(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name));
    assert_eq!(field("Package").trim(), "rolegate");
    assert_eq!(
        field("Version").trim(),
        format!("{}-1", env!("CARGO_PKG_VERSION"))
    );
    let depends = field("Depends");
    assert!(
        depends.contains("libpcsclite1") && depends.contains("libc6"),
        "{depends}"
    );
    let info = ok(Command::new("dpkg-deb").arg("-I").arg(&deb));
    for script in ["postinst", "postrm", "prerm", "conffiles"] {
        assert!(
            info.contains(&format!(" {script} ")),
            "no {script}:\n{info}"
        );
    }
    let control = dir.path().join("control");
    ok(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    assert_eq!(
        read(&control.join("conffiles")).trim(),
        "/etc/rolegate/rolegate.toml"
    );
    let postinst = read(&control.join("postinst"));
    assert!(postinst.starts_with("#!/bin/sh\n"), "{postinst}");
    assert!(postinst.contains("\nset -e\n"), "{postinst}");
    assert!(
        postinst.contains("deb-systemd-helper"),
        "no unit handling:\n{postinst}"
    );
    for script in ["postinst", "postrm", "prerm"] {
        let path = control.join(script);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{script} is not executable");
        ok(Command::new("sh").arg("-n").arg(&path));
    }

    // The files, their places and modes.
    let listing = ok(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let entry = |path: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" .{path}")))
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{listing}"))
            .to_string()
    };
    assert!(entry("/usr/bin/rolegate").starts_with("-rwxr-xr-x 0/0"));
    for (_, library) in PLUGINS {
        assert!(entry(&format!("{PLUGIN_DIR}/{library}")).starts_with("-rw-r--r-- 0/0"));
    }
    assert!(entry("/usr/lib/systemd/system/rolegate.service").starts_with("-rw-r--r-- 0/0"));
    assert!(entry("/etc/rolegate/rolegate.toml").starts_with("-rw------- 0/0"));
    for doc in [
        "README.md",
        "install.md",
        "config.md",
        "plugins.md",
        "providers/totp.md",
        "copyright",
    ] {
        entry(&format!("/usr/share/doc/rolegate/{doc}"));
    }
    for doc in std::fs::read_dir(root.join("docs")).unwrap() {
        let name = doc.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".md") {
            entry(&format!("/usr/share/doc/rolegate/{name}"));
        }
    }
    assert!(
        !listing.contains("librolegate_test_") && !listing.contains("librolegate_example_"),
        "test or example plugins in the package:\n{listing}"
    );

    // Extracted: what it holds is what the tree has, and it runs.
    let tree = dir.path().join("tree");
    ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree));
    let unit = read(&tree.join("usr/lib/systemd/system/rolegate.service"));
    assert_eq!(unit, read(&root.join("packaging/rolegate.service")));
    assert_eq!(
        read(&tree.join("etc/rolegate/rolegate.toml")),
        read(&root.join("packaging/rolegate.toml"))
    );
    let binary = tree.join("usr/bin/rolegate");
    let version = ok(Command::new(&binary).arg("--version"));
    assert_eq!(
        version.trim(),
        format!("rolegate {}", env!("CARGO_PKG_VERSION"))
    );
    check_unit_verifies(&unit, &binary);

    // The packaged config, as the packaged binary reads it, with a packaged plugin pinned.
    let totp = tree
        .join(PLUGIN_DIR.trim_start_matches('/'))
        .join("librolegate_provider_totp.so");
    let sha = sha256_hex(&totp);
    let pin = ok(Command::new(&binary).args(["provider", "pin"]).arg(&totp));
    assert_eq!(pin.trim(), sha);
    let config = dir.path().join("rolegate.toml");
    write_private(
        &config,
        &format!(
            "{}\n[[provider]]\nid = \"totp\"\nlibrary = \"{}\"\nsha256 = \"{sha}\"\nisolation = \"process\"\n",
            read(&tree.join("etc/rolegate/rolegate.toml")),
            totp.display()
        ),
    );
    let listed: serde_json::Value = serde_json::from_str(&ok(Command::new(&binary)
        .args(["provider", "list", "--json", "--config"])
        .arg(&config)))
    .unwrap();
    assert_eq!(listed[0]["health"], "ok", "{listed}");

    // MemoryDenyWriteExecute= holds for dlopen'd plugins that need no executable stack and no
    // text relocations: the packaged ones.
    if have(
        "readelf",
        &["--version"],
        "the plugins' ELF headers are read with it",
    ) {
        for (_, library) in PLUGINS {
            let lib = tree.join(PLUGIN_DIR.trim_start_matches('/')).join(library);
            let headers = ok(Command::new("readelf").args(["-lW"]).arg(&lib));
            let stack = headers
                .lines()
                .find(|l| l.trim_start().starts_with("GNU_STACK"))
                .unwrap_or_else(|| panic!("{library} has no GNU_STACK header"));
            assert!(stack.contains(" RW "), "{library}: {stack}");
            let dynamic = ok(Command::new("readelf").args(["-dW"]).arg(&lib));
            assert!(
                !dynamic.contains("TEXTREL"),
                "{library} has text relocations"
            );
        }
    }

    install_in_a_chroot(&deb, dir.path());
}

/// The install, an admin's first steps, and the purge, in an overlay of this machine (see
/// [`CHROOT_SCRIPT`]). Needs root and mounts; skipped, saying so, without them.
fn install_in_a_chroot(deb: &Path, dir: &Path) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: installing the package in a chroot needs root");
        return;
    }
    let script = dir.join("install.sh");
    std::fs::write(&script, CHROOT_SCRIPT).unwrap();
    let base = dir.join("chroot");
    std::fs::create_dir(&base).unwrap();
    // Mounting is refused in some containers: then the chroot part is skipped.
    let probe = run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!("mount -t tmpfs tmpfs '{}'", base.display())));
    if !probe.status.success() {
        eprintln!(
            "skipped: no private mount namespace here to install the package in: {}",
            both(&probe).trim()
        );
        return;
    }
    let port = free_port();
    let started = Instant::now();
    // A deadline, so that a script gone wrong fails the test rather than hanging it.
    let out = run(Command::new("timeout")
        .args(["--kill-after=10", "180", "unshare"])
        .args(["--mount", "--propagation", "private", "sh"])
        .arg(&script)
        .arg(&base)
        .arg(deb)
        .arg(port.to_string()));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "installing in the chroot failed ({}):\n{text}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "chroot install, serve, purge: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The postinst printed a pin per plugin, the packaged libraries' own.
    let tree = dir.join("tree");
    let install = section(&text, "install");
    for (_, library) in PLUGINS {
        let sha = sha256_hex(&tree.join(PLUGIN_DIR.trim_start_matches('/')).join(library));
        assert!(
            install.contains(&format!("  {library}: sha256 = \"{sha}\"\n")),
            "no pin for {library}:\n{install}"
        );
    }
    // Idempotent: installed again over itself.
    assert!(
        section(&text, "reinstall").contains("Setting up rolegate"),
        "{text}"
    );
    let user = section(&text, "user");
    assert!(
        user.starts_with("rolegate:")
            && user
                .trim_end()
                .ends_with(":/var/lib/rolegate:/usr/sbin/nologin"),
        "{user}"
    );
    let stat = section(&text, "stat");
    for line in [
        "/etc/rolegate root rolegate 750",
        "/etc/rolegate/rolegate.toml rolegate rolegate 600",
        "/usr/bin/rolegate root root 755",
        "/usr/lib/systemd/system/rolegate.service root root 644",
        &format!("{PLUGIN_DIR}/librolegate_provider_totp.so root root 644"),
    ] {
        assert!(stat.lines().any(|l| l == line), "no `{line}` in:\n{stat}");
    }
    let overrides = section(&text, "statoverride");
    assert!(
        overrides.contains("rolegate rolegate 600 /etc/rolegate/rolegate.toml"),
        "{overrides}"
    );
    assert!(
        overrides.contains("root rolegate 750 /etc/rolegate\n"),
        "{overrides}"
    );
    // The daemon's user reads its private config; the edit kept its owner and mode.
    assert_eq!(section(&text, "list as rolegate").trim(), "[]");
    assert_eq!(
        section(&text, "edited").trim(),
        "/etc/rolegate/rolegate.toml rolegate rolegate 600"
    );
    // Served as the rolegate user with the pinned plugin; SIGHUP reloaded (the shipped
    // config's access log), SIGTERM stopped it cleanly.
    let serve = section(&text, "serve");
    assert!(
        serve.contains(&format!("serving on http://127.0.0.1:{port}")),
        "{serve}"
    );
    assert!(serve.contains("rolegate: first start."), "{serve}");
    assert!(serve.contains("alive after SIGHUP"), "{serve}");
    assert!(serve.contains("exit 0"), "{serve}");
    assert!(serve.contains("rolegate: stopped"), "{serve}");
    let state = section(&text, "state");
    for file in [
        "/var/lib/rolegate/rolegate.db",
        "/var/lib/rolegate/rolegate.key",
        "/var/log/rolegate/access.jsonl",
    ] {
        assert!(
            state.contains(&format!("{file} rolegate rolegate 600")),
            "{file}:\n{state}"
        );
    }
    // Purged: the package's files and statoverrides go, the state stays.
    let after = section(&text, "after purge");
    for line in [
        "absent /etc/rolegate/rolegate.toml",
        "absent /usr/bin/rolegate",
        "present /var/lib/rolegate/rolegate.db",
        "no rolegate statoverride",
    ] {
        assert!(after.contains(line), "no `{line}` in:\n{after}");
    }
}
