//! A real PostgreSQL server for the store tests.
//!
//! `scripts/test` starts one cluster for the whole run and names it in
//! `ROLEGATE_TEST_POSTGRES` (a connection string to a role that may create databases). When
//! that is unset (a bare `cargo test`), the first test that asks starts a private cluster for
//! its process: `initdb` in a temporary folder, `postgres` on a free 127.0.0.1 port (as the
//! `postgres` system user when running as root, since the server refuses root), a bounded
//! readiness wait, and a stop at process exit. Each test gets a database of its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The environment variable naming a running test cluster.
pub const ENV: &str = "ROLEGATE_TEST_POSTGRES";

struct Private {
    child: Child,
    dir: PathBuf,
}

static SERVER: OnceLock<String> = OnceLock::new();
static PRIVATE: Mutex<Option<Private>> = Mutex::new(None);

/// The folder of the newest installed PostgreSQL server binaries.
pub fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let v = e.file_name().to_str()?.parse::<u32>().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("postgres").exists().then_some((v, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().map(|(_, b)| b).unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server under /usr/lib/postgresql: run ./scripts/test, which installs it"
        )
    })
}

/// The uid and gid of `user` from /etc/passwd.
fn ids_of(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&user))
            .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))?
    })
}

/// Connects on a thread of its own (the sync client must not run on an async runtime).
fn with_client<T: Send + 'static>(
    conn: &str,
    f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error> + Send + 'static,
) -> Result<T, postgres::Error> {
    let conn = conn.to_string();
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&conn, postgres::NoTls)?;
        f(&mut client)
    })
    .join()
    .unwrap_or_else(|_| panic!("the PostgreSQL client thread panicked"))
}

extern "C" fn stop_private() {
    let Ok(mut guard) = PRIVATE.lock() else {
        return;
    };
    if let Some(mut p) = guard.take() {
        // SIGINT: fast shutdown (disconnects clients, then a clean checkpoint).
        // SAFETY: signalling a child this process started and has not reaped.
        unsafe { libc::kill(p.child.id() as libc::pid_t, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = p.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = p.child.kill();
        let _ = p.child.wait();
        let _ = std::fs::remove_dir_all(&p.dir);
    }
}

/// Starts a cluster in `dir` on `port`; returns the running postmaster.
pub fn start_cluster(dir: &Path, port: u16) -> Child {
    let bin = bin_dir();
    let data = dir.join("data");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ids = if root {
        let ids = ids_of("postgres").unwrap_or_else(|| {
            panic!("running as root needs the `postgres` system user (package postgresql)")
        });
        std::os::unix::fs::chown(dir, Some(ids.0), Some(ids.1))
            .unwrap_or_else(|e| panic!("chown {}: {e}", dir.display()));
        Some(ids)
    } else {
        None
    };
    let as_user = |cmd: &mut Command| {
        use std::os::unix::process::CommandExt as _;
        if let Some((uid, gid)) = ids {
            cmd.uid(uid).gid(gid);
        }
    };
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .args([
            "-A",
            "trust",
            "-U",
            "rolegate",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    as_user(&mut initdb);
    let out = initdb
        .output()
        .unwrap_or_else(|e| panic!("cannot run initdb: {e}"));
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut server = Command::new(bin.join("postgres"));
    server
        .arg("-D")
        .arg(&data)
        .arg("-k")
        .arg(dir)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "max_connections=200",
        ])
        .args(["-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    as_user(&mut server);
    server
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start postgres: {e}"))
}

/// Waits (bounded) until the server at `conn` answers a query.
pub fn wait_ready(conn: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if with_client(conn, |c| c.simple_query("SELECT 1").map(|_| ())).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("postgres exited during start-up: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "postgres did not answer within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The connection string of the test server (starting a private one when none is named).
pub fn server() -> &'static str {
    SERVER.get_or_init(|| {
        if let Ok(conn) = std::env::var(ENV)
            && !conn.is_empty()
        {
            return conn;
        }
        let dir = std::env::temp_dir().join(format!(
            "rolegate-test-pg-{}-{}",
            std::process::id(),
            crate::free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let port = crate::free_port();
        let mut child = start_cluster(&dir, port);
        let conn = format!("host=127.0.0.1 port={port} user=rolegate dbname=postgres");
        wait_ready(&conn, &mut child);
        if let Ok(mut p) = PRIVATE.lock() {
            *p = Some(Private { child, dir });
        }
        // SAFETY: registers a plain extern "C" function to run at exit.
        unsafe { libc::atexit(stop_private) };
        conn
    })
}

/// Creates an empty database for one test; returns its connection string.
pub fn fresh_database() -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = server();
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!("t_{}_{n}_{nanos}", std::process::id());
    let sql = format!("CREATE DATABASE {name}");
    with_client(base, move |c| c.batch_execute(&sql))
        .unwrap_or_else(|e| panic!("cannot create a test database: {e}"));
    let mut config: postgres::Config = base
        .parse()
        .unwrap_or_else(|e| panic!("{ENV} is not a connection string: {e}"));
    config.dbname(&name);
    // Rebuild as key=value text, the form rolegate's config takes.
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "127.0.0.1".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("rolegate").to_string();
    format!("host={host} port={port} user={user} dbname={name}")
}
