//! `rolegate serve` as a process for end-to-end tests: started on a written config, its URL and
//! first admin token read from what it prints, stopped on drop; and the HTTP and CLI calls
//! tests make against it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::rolegate_bin;

/// A running daemon.
pub struct Daemon {
    child: Child,
    /// Its base URL (`http://127.0.0.1:port`).
    pub url: String,
    /// The first admin token (empty when the database had one already).
    pub admin: String,
    /// The folder of its config and database.
    pub dir: tempfile::TempDir,
    /// What it printed up to its `serving on` line.
    pub start_lines: Vec<String>,
    /// What it prints after it started, line by line.
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Kills the daemon at once (SIGKILL: no shutdown, no final checkpoint), keeping its
    /// folder for a restart.
    pub fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    /// Sends SIGHUP (as `systemctl reload` does).
    pub fn hangup(&self) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill only sends a signal, to the child this value owns (not yet waited for).
        assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    }

    /// The next line the daemon prints that contains `needle`, waiting up to 10 s; the lines
    /// before it are dropped.
    pub fn said(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("the daemon did not say `{needle}` within 10 s");
    }

    /// Sends SIGTERM (as systemd stops a service) and waits for the exit (up to 20 s): its
    /// status, what it printed meanwhile, and its folder for a restart.
    pub fn terminate(self) -> (std::process::ExitStatus, Vec<String>, tempfile::TempDir) {
        self.stop_with(false)
    }

    /// Like [`Daemon::terminate`], with SIGTERM sent to the daemon's whole process group (its
    /// plugin workers too), as Ctrl-C in a terminal or systemd's stop of a unit signal them all.
    pub fn terminate_group(self) -> (std::process::ExitStatus, Vec<String>, tempfile::TempDir) {
        self.stop_with(true)
    }

    fn stop_with(
        mut self,
        group: bool,
    ) -> (std::process::ExitStatus, Vec<String>, tempfile::TempDir) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // The daemon leads a process group of its own (see `serve_config`).
        let target = if group { -pid } else { pid };
        // SAFETY: kill only sends a signal, to the child this value owns (not yet waited for)
        // or to the group it leads.
        assert_eq!(unsafe { libc::kill(target, libc::SIGTERM) }, 0);
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "still running 20 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends with the process's stderr: everything it said is queued.
        let mut said = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            said.push(line);
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (status, said, dir)
    }
}

/// Runs `rolegate serve` on `cfg`, which must refuse to start: what it said.
pub fn refused_to_serve(cfg: &std::path::Path) -> String {
    let out = Command::new(rolegate_bin())
        .args(["serve", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "it started: {said}");
    said
}

/// Starts `rolegate serve` on a config file that is already written (in `dir`).
pub fn serve_config(dir: tempfile::TempDir, cfg: &std::path::Path) -> Daemon {
    use std::os::unix::process::CommandExt as _;
    let mut child = Command::new(rolegate_bin())
        .args(["serve", "--config"])
        .arg(cfg)
        // A process group of its own: a signal to it reaches the daemon and its workers only.
        .process_group(0)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut url, mut admin, mut seen) = (None, None, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(20);
    while url.is_none() && Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        if let Some(t) = line.trim().strip_prefix("export ROLEGATE_TOKEN=") {
            admin = Some(t.to_string());
        }
        if let Some(rest) = line.strip_prefix("rolegate: serving on ") {
            url = rest.split_whitespace().next().map(String::from);
        }
        seen.push(line);
    }
    let url = url.unwrap_or_else(|| {
        panic!(
            "the daemon did not start in 20 s; it said:\n{}",
            seen.join("\n")
        )
    });
    Daemon {
        child,
        url,
        // Only the first start on a database prints one.
        admin: admin.unwrap_or_default(),
        dir,
        start_lines: seen,
        lines: rx,
    }
}

/// One HTTP call with an optional bearer token; the answer's status and JSON (or text).
pub async fn call(
    d: &Daemon,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("{}{path}", d.url);
    let mut req = match method {
        "GET" => client.get(&url),
        "POST" => client.post(&url),
        "PATCH" => client.patch(&url),
        "PUT" => client.put(&url),
        _ => client.delete(&url),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// Closes the token's user's active activations of `role` through the API: one live request
/// per user and role, so a test that activates a role again is done with the last one first.
pub async fn close_active(d: &Daemon, token: &str, role: &str) {
    let (s, list) = call(
        d,
        Some(token),
        "GET",
        &format!(
            "/v1/requests?state=active&role={}",
            role.replace(' ', "%20")
        ),
        None,
    )
    .await;
    assert_eq!(s, 200, "{list}");
    for v in list.as_array().into_iter().flatten() {
        let id = v["id"].as_str().unwrap_or_default();
        let (s, r) = call(
            d,
            Some(token),
            "POST",
            &format!("/v1/requests/{id}/close"),
            None,
        )
        .await;
        assert_eq!(s, 200, "{r}");
    }
}

/// Runs the `rolegate` CLI against the daemon with `token`, feeding `stdin`; success and the
/// combined output.
pub fn cli(d: &Daemon, token: &str, args: &[&str], stdin: &str) -> (bool, String) {
    cli_at(&d.url, token, args, stdin)
}

/// Like [`cli`], against the daemon at `url` (another name or address of it).
pub fn cli_at(url: &str, token: &str, args: &[&str], stdin: &str) -> (bool, String) {
    let child = Command::new(rolegate_bin())
        .args(["--server", url])
        .args(args)
        .env("ROLEGATE_TOKEN", token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    finish(child, stdin)
}

/// Feeds `stdin` to a CLI started with piped streams and waits: success and the combined
/// output.
pub fn finish(mut child: Child, stdin: &str) -> (bool, String) {
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The sum of the samples in Prometheus text whose line starts with `series`.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What `rolegate enrol totp` showed and was answered.
pub struct TotpEnrolment {
    /// The key's otpauth URI, as the terminal showed it.
    pub uri: String,
    /// The code typed to confirm it (now spent).
    pub code: String,
    /// What the terminal showed before the code was asked (the QR code, the key).
    pub screen: String,
}

/// Drives a started `rolegate enrol totp` (piped streams): reads the key it shows, types the
/// app's code for it (`code_of` the otpauth URI: the TOTP crate is not linked here, where
/// plugin crates' tests would get its entry symbol twice), and checks that it enrolled.
pub fn enrol_totp(mut child: Child, code_of: impl Fn(&str) -> String) -> TotpEnrolment {
    use std::io::Write as _;
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut shown = Vec::new();
    let uri = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("no otpauth URI shown:\n{}", shown.join("\n")))
            .unwrap();
        shown.push(line.clone());
        if line.starts_with("otpauth://") {
            break line;
        }
    };
    let screen = shown.join("\n");
    let code = code_of(&uri);
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{code}").unwrap();
    drop(stdin);
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = child.wait_with_output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        rest.join("\n")
    );
    assert!(out.status.success(), "{screen}\n{all}");
    assert!(all.contains("enrolled in `totp`"), "{all}");
    TotpEnrolment { uri, code, screen }
}
