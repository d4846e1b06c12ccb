//! A private OpenLDAP `slapd` on 127.0.0.1 for directory tests: a temporary database with a
//! `dc=contoso,dc=test` tree, started on a free port, stopped (by its recorded pid) on drop.
//! `scripts/test` installs Debian's `slapd` and `ldap-utils`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The directory's admin DN.
pub const ADMIN_DN: &str = "cn=admin,dc=contoso,dc=test";
/// The admin's password.
pub const ADMIN_PASSWORD: &str = "directory-secret";
/// Where people are.
pub const BASE_DN: &str = "ou=people,dc=contoso,dc=test";

/// A running slapd.
pub struct Slapd {
    /// `ldap://127.0.0.1:<port>`.
    pub url: String,
    dir: tempfile::TempDir,
}

impl Drop for Slapd {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("slapd.pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            // SAFETY: a plain kill(2) of the slapd this value started, by its recorded pid.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
}

impl Slapd {
    /// Starts slapd with the base entries and `people` (LDIF of `ou=people` entries).
    pub fn start(people: &str) -> Slapd {
        for bin in ["/usr/sbin/slapd", "/usr/bin/ldapadd"] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: install slapd and ldap-utils (scripts/test does)"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("db")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.path().join("slapd.conf");
        std::fs::write(
            &conf,
            format!(
                "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\ninclude /etc/ldap/schema/inetorgperson.schema\nmodulepath /usr/lib/ldap\nmoduleload back_mdb\npidfile {pid}\ndatabase mdb\nmaxsize 10485760\nsuffix \"dc=contoso,dc=test\"\nrootdn \"{ADMIN_DN}\"\nrootpw {ADMIN_PASSWORD}\ndirectory {db}\n",
                pid = dir.path().join("slapd.pid").display(),
                db = dir.path().join("db").display(),
            ),
        )
        .unwrap();
        let url = format!("ldap://127.0.0.1:{port}");
        let status = Command::new("/usr/sbin/slapd")
            .args(["-h", &format!("{url}/"), "-f"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "slapd did not start");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "slapd not ready in 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        let s = Slapd { url, dir };
        s.add(&format!(
            "dn: dc=contoso,dc=test\nobjectClass: dcObject\nobjectClass: organization\no: Contoso\ndc: contoso\n\ndn: {BASE_DN}\nobjectClass: organizationalUnit\nou: people\n\n{people}"
        ));
        s
    }

    /// Runs an ldap-utils command as the admin with `ldif` on its input.
    fn run(&self, tool: &str, ldif: &str) {
        use std::io::Write as _;
        let mut child = Command::new(tool)
            .args(["-x", "-H", &self.url, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ldif.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Adds entries.
    pub fn add(&self, ldif: &str) {
        self.run("/usr/bin/ldapadd", ldif);
    }

    /// Applies modifications (`changetype: modify` LDIF).
    pub fn modify(&self, ldif: &str) {
        self.run("/usr/bin/ldapmodify", ldif);
    }

    /// A private file holding the admin's password, in `dir`.
    pub fn password_file(&self, dir: &Path) -> PathBuf {
        let p = dir.join("ldap.password");
        crate::write_private(&p, ADMIN_PASSWORD);
        p
    }
}
