//! docs/migration-from-mim.md, followed literally: every `rolegate` command this test runs is
//! checked to be one of the guide's own (its `sh` blocks), and runs as the guide writes it,
//! in the deployment's directory, against a real daemon — the import of exports written as
//! PowerShell writes them, the phone call (the PhoneFactor double), TOTP in shadow,
//! readiness, the switch, the rollback, and a re-run of the import that loses nothing.

use std::path::Path;
use std::process::{Command, Stdio};

use rolegate_e2e::daemon::{Daemon, call, enrol_totp, finish, serve_config};
use rolegate_e2e::phonefactor::{Double, deployment, pki, scripted};
use rolegate_e2e::{rolegate_bin, workspace_root, write_private};
use rolegate_provider_totp::code_for_uri;
use serde_json::{Value, json};

/// The commands of the guide's `sh` blocks, a continued line joined, comments dropped.
fn guide_commands() -> Vec<String> {
    let text = std::fs::read_to_string(workspace_root().join("docs/migration-from-mim.md"))
        .expect("reading docs/migration-from-mim.md");
    let mut out = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        if !in_sh || line.trim_start().starts_with('#') {
            continue;
        }
        let line = match line.find("  #") {
            Some(i) => &line[..i],
            None => line,
        };
        match line.trim_end().strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(line);
                let cmd = pending.split_whitespace().collect::<Vec<_>>().join(" ");
                if !cmd.is_empty() {
                    out.push(cmd);
                }
                pending.clear();
            }
        }
    }
    out
}

/// Splits a command as the shell would for what the guide writes: words, '…' and "…".
fn words(cmd: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    let mut started = false;
    for c in cmd.chars() {
        match (quote, c) {
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (Some(q), c) if c == q => quote = None,
            (None, c) if c.is_whitespace() => {
                if started {
                    out.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            (_, c) => {
                cur.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(cur);
    }
    out
}

struct Guide {
    commands: Vec<String>,
    dir: std::path::PathBuf,
    url: String,
}

impl Guide {
    /// The guide's command `cmd`, as `token`'s holder, in the deployment's directory, with
    /// `stdin`: success and the combined output.
    fn run(&self, token: &str, cmd: &str, stdin: &str) -> (bool, String) {
        finish(self.spawn(token, cmd), stdin)
    }

    fn spawn(&self, token: &str, cmd: &str) -> std::process::Child {
        assert!(
            self.commands.iter().any(|c| c == cmd),
            "`{cmd}` is not a command of docs/migration-from-mim.md; its commands are:\n{}",
            self.commands.join("\n")
        );
        let w = words(cmd);
        assert_eq!(w[0], "rolegate");
        Command::new(rolegate_bin())
            .args(&w[1..])
            .current_dir(&self.dir)
            .env("ROLEGATE_URL", &self.url)
            .env("ROLEGATE_TOKEN", token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `rolegate enrol totp` as the guide has it, typing the code of the key it shows;
    /// returns the key's otpauth URI.
    fn enrol_totp(&self, token: &str) -> String {
        enrol_totp(self.spawn(token, "rolegate enrol totp"), |uri| {
            code_for_uri(uri, unix_now()).unwrap()
        })
        .uri
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Text as UTF-16 with a BOM, little- or big-endian (PowerShell's `-Encoding Unicode` and
/// `BigEndianUnicode`).
fn utf16(text: &str, little: bool) -> Vec<u8> {
    let mut out = if little {
        vec![0xFF, 0xFE]
    } else {
        vec![0xFE, 0xFF]
    };
    for u in text.encode_utf16() {
        out.extend(if little {
            u.to_le_bytes()
        } else {
            u.to_be_bytes()
        });
    }
    out
}

/// The exports as Windows PowerShell 5.1 writes them: `Get-PAMUser | Out-File` (UTF-16 LE,
/// the `#TYPE` line, CRLF, MIM's `Source…` columns and the PAM account), and PowerShell 7's
/// `Export-Csv -UseCulture` in a `;` culture (UTF-8 with a BOM, TTL as a TimeSpan), the role's
/// candidates named by their PAM account and by their source account.
fn exports_first(dir: &Path) {
    let users = "#TYPE Microsoft.ResourceManagement.Automation.ObjectModel.PAMUser\r\n\"SourceAccountName\",\"SourceDomain\",\"DisplayName\",\"SourcePhoneNumber\",\"AccountName\"\r\n\"jdoe\",\"CONTOSO\",\"Jane Doe\",\"425 555 0001\",\"PRIV.jdoe\"\r\n\"bob\",\"CONTOSO\",\"Bob Smith\",\"425 555 0009\",\"PRIV.bob\"\r\n";
    std::fs::write(dir.join("users.csv"), utf16(users, true)).unwrap();
    let roles = "\u{feff}\"DisplayName\";\"Candidates\";\"Approvers\";\"TTL\";\"MFAEnabled\";\"ApprovalEnabled\";\"AvailabilityWindowEnabled\";\"AvailableFrom\";\"AvailableTo\"\r\n\"Domain Admins\";\"PRIV.jdoe;CONTOSO\\bob\";\"\";\"01:00:00\";\"True\";\"False\";\"False\";\"\";\"\"\r\n\"Helpdesk\";\"CONTOSO\\bob\";\"\";\"00:30:00\";\"False\";\"False\";\"False\";\"\";\"\"\r\n";
    std::fs::write(dir.join("roles.csv"), roles).unwrap();
}

/// The same deployment exported again in other shapes: UTF-16 BE with tabs and no `#TYPE`
/// line; UTF-8 without a BOM, commas, LF, TTL in seconds, candidates by source account.
fn exports_again(dir: &Path) {
    let users = "SourceAccountName\tSourceDomain\tDisplayName\tSourcePhoneNumber\tAccountName\r\njdoe\tCONTOSO\tJane Doe\t425 555 0001\tPRIV.jdoe\r\nbob\tCONTOSO\tBob Smith\t425 555 0009\tPRIV.bob\r\n";
    std::fs::write(dir.join("users.csv"), utf16(users, false)).unwrap();
    let roles = "DisplayName,Candidates,Approvers,TTL,MFAEnabled,ApprovalEnabled,AvailabilityWindowEnabled,AvailableFrom,AvailableTo\nDomain Admins,CONTOSO\\jdoe;CONTOSO\\bob,,3600,True,False,False,,\nHelpdesk,CONTOSO\\bob,,1800,False,False,False,,\n";
    std::fs::write(dir.join("roles.csv"), roles).unwrap();
}

async fn token_for(d: &Daemon, account: &str) -> String {
    let (s, t) = call(
        d,
        Some(&d.admin),
        "POST",
        "/v1/tokens",
        Some(json!({"account": account})),
    )
    .await;
    assert_eq!(s, 201, "{t}");
    t["token"].as_str().unwrap().to_string()
}

async fn role(d: &Daemon) -> Value {
    call(d, Some(&d.admin), "GET", "/v1/roles/Domain%20Admins", None)
        .await
        .1
}

const IMPORT_DRY: &str = "rolegate import mim --config rolegate.toml --settings MfaSettings.xml --users users.csv --roles roles.csv --time-zone Europe/London --dry-run";
const IMPORT: &str = "rolegate import mim --config rolegate.toml --settings MfaSettings.xml --users users.csv --roles roles.csv --time-zone Europe/London";
const IMPORT_UPDATE: &str = "rolegate import mim --config rolegate.toml --settings MfaSettings.xml --users users.csv --roles roles.csv --time-zone Europe/London --update";
const REQUEST: &str = "rolegate request new --role 'Domain Admins' --justification 'patch night'";

#[tokio::test]
async fn the_migration_guide_followed_literally_moves_a_role_and_back_losing_nothing() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let double = Double::start(dir.path(), scripted);
    let calls = || double.bodies.lock().unwrap().len();
    let s = deployment(dir.path(), double.port);
    // A real deployment's import adds the provider block for PhoneFactor's endpoints; this
    // one points it at the double, which the import finds configured (the guide's case
    // "configured already").
    write_private(
        &dir.path().join("rolegate.toml"),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n\n[[provider]]\nid = \"phone-legacy\"\nlibrary = \"{}\"\nunpinned = true\n[provider.settings]\nmfa_settings = \"{}\"\nca_file = \"{}\"\nendpoints = [\"{}\"]\ncall_timeout_s = 10\n\n[[provider]]\nid = \"totp\"\nlibrary = \"{}\"\nunpinned = true\n[provider.settings]\nissuer = \"Contoso PAM\"\nskew = 3\n",
            rolegate_e2e::legacy_phone_lib().display(),
            s["mfa_settings"].as_str().unwrap(),
            s["ca_file"].as_str().unwrap(),
            s["endpoints"][0].as_str().unwrap(),
            rolegate_e2e::totp_lib().display(),
        ),
    );
    exports_first(dir.path());
    let mut g = Guide {
        commands: guide_commands(),
        dir: dir.path().to_path_buf(),
        url: String::new(),
    };

    // Importing: the dry run writes nothing; the import creates both users and roles, the
    // PAM account resolving to the user.
    let (ok, out) = g.run("", IMPORT_DRY, "");
    assert!(ok, "{out}");
    assert!(out.contains("users: 2 would be created"), "{out}");
    let (ok, out) = g.run("", IMPORT, "");
    assert!(ok, "{out}");
    assert!(
        out.contains("users: 2 created") && out.contains("roles: 2 created"),
        "{out}"
    );
    assert!(
        !out.contains("matches no user"),
        "PRIV.jdoe resolved: {out}"
    );

    let cfg = dir.path().join("rolegate.toml");
    let d = serve_config(dir, &cfg);
    g.url = d.url.clone();
    let admin = d.admin.clone();
    let jdoe = token_for(&d, "CONTOSO\\jdoe").await;
    let bob = token_for(&d, "CONTOSO\\bob").await;
    let r = role(&d).await;
    assert_eq!(
        r["candidates"],
        json!(["CONTOSO\\bob", "CONTOSO\\jdoe"]),
        "{r}"
    );
    assert_eq!(
        (&r["providers"], &r["ttl_s"]),
        (&json!(["phone-legacy"]), &json!(3600))
    );

    // 1. The phone call still works.
    let (ok, out) = g.run(&jdoe, REQUEST, "");
    assert!(
        ok && out.contains("Calling +1 •••0001") && out.contains("is active until"),
        "{out}"
    );
    assert_eq!(calls(), 1);

    // 2. Candidates enrol in TOTP.
    let jdoe_app = g.enrol_totp(&jdoe);
    let bob_app = g.enrol_totp(&bob);

    // 3. TOTP in shadow: the call grants the role, then the app's code is asked, recorded.
    let (ok, out) = g.run(
        &admin,
        "rolegate role set 'Domain Admins' --shadow totp",
        "",
    );
    assert!(
        ok && out.contains("phone-legacy") && out.contains("totp"),
        "{out}"
    );
    for (token, app) in [(&jdoe, &jdoe_app), (&bob, &bob_app)] {
        let code = code_for_uri(app, unix_now() + 30).unwrap();
        // The trial's activation before is closed (one live per user and role).
        rolegate_e2e::daemon::close_active(&d, token, "Domain Admins").await;
        let (ok, out) = g.run(token, REQUEST, &format!("{code}\n"));
        assert!(ok, "{out}");
        assert!(
            out.contains("is trying the factor `totp`")
                && out.contains("the new factor worked")
                && out.contains("is active until"),
            "{out}"
        );
    }
    assert_eq!(calls(), 3, "the call decided, the shadow only followed it");
    let (_, ev) = call(&d, Some(&admin), "GET", "/v1/events?id=207", None).await;
    assert_eq!(ev.as_array().unwrap().len(), 2, "{ev}");

    // 4. Readiness: everyone can use TOTP and has completed it in shadow.
    let (ok, out) = g.run(&admin, "rolegate role readiness 'Domain Admins'", "");
    let guide =
        std::fs::read_to_string(workspace_root().join("docs/migration-from-mim.md")).unwrap();
    assert!(
        guide.contains(out.trim()),
        "the guide shows readiness as it is printed:\n{out}"
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("- `totp` (shadow): 2 of 2 candidates ready; completed in shadow by 2 of 2 (2 completed, 0 not)")
            && out.contains("- ready to drop `phone-legacy`: every candidate can use `totp`"),
        "{out}"
    );

    // 5. The switch: TOTP alone; no call is placed.
    let (ok, out) = g.run(
        &admin,
        "rolegate role set 'Domain Admins' --providers totp --no-shadow",
        "",
    );
    assert!(ok, "{out}");
    let code = code_for_uri(&jdoe_app, unix_now() + 60).unwrap();
    rolegate_e2e::daemon::close_active(&d, &jdoe, "Domain Admins").await;
    let (ok, out) = g.run(&jdoe, REQUEST, &format!("{code}\n"));
    assert!(ok && out.contains("is active until"), "{out}");
    assert_eq!(calls(), 3, "TOTP alone: no call");

    // 6. Rollback: the lists before the switch are back; the history has all three changes.
    let (ok, out) = g.run(&admin, "rolegate role rollback 'Domain Admins'", "");
    assert!(ok, "{out}");
    let r = role(&d).await;
    assert_eq!(
        (&r["providers"], &r["shadow"]),
        (&json!(["phone-legacy"]), &json!(["totp"])),
        "{r}"
    );
    let (ok, out) = g.run(&admin, "rolegate role history 'Domain Admins'", "");
    assert!(ok, "{out}");
    assert_eq!(out.lines().count(), 4, "a header and three changes: {out}");
    assert!(
        out.lines().nth(1).unwrap().contains("true"),
        "the newest is the rollback: {out}"
    );
    let (_, ev) = call(&d, Some(&admin), "GET", "/v1/events?id=513", None).await;
    assert!(
        ev[0]["message"]
            .as_str()
            .unwrap()
            .contains("rolled back from [totp] to [phone-legacy] (shadow: [totp])"),
        "{ev}"
    );

    // 7. The exports again, in other shapes: a re-run, even with --update, changes nothing
    // an admin set since, and loses nothing.
    exports_again(&g.dir);
    let (ok, out) = g.run("", IMPORT_UPDATE, "");
    assert!(ok, "{out}");
    assert!(
        out.contains("users: 2 unchanged") && out.contains("roles: 2 unchanged"),
        "the same deployment in other shapes reads the same: {out}"
    );
    let r = role(&d).await;
    assert_eq!(
        (&r["providers"], &r["shadow"]),
        (&json!(["phone-legacy"]), &json!(["totp"])),
        "{r}"
    );
    let code = code_for_uri(&jdoe_app, unix_now() + 90).unwrap();
    rolegate_e2e::daemon::close_active(&d, &jdoe, "Domain Admins").await;
    let (ok, out) = g.run(&jdoe, REQUEST, &format!("{code}\n"));
    assert!(
        ok && out.contains("the new factor worked") && out.contains("is active until"),
        "jdoe's enrolment survived: {out}"
    );
    assert_eq!(calls(), 4);
    let (_, v) = call(&d, Some(&admin), "GET", "/v1/events/verify", None).await;
    assert_eq!(v["intact"], true, "{v}");
}
