//! The HTTP access log: one JSON line per request — when, from where, what, the answer's
//! status, how long it took, and which token asked (its public id, never the token) — for the
//! requests the event log does not record: refused tokens, scans, floods.
//!
//! Lines are written by a thread of their own, so a slow disk never holds up a request; if it
//! falls far behind, lines are counted and the count is written instead of them.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::model::error::{Error, Result};

/// The client's address, as the server accepted its connection.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub SocketAddr);

/// Lines queued for the writer at most; beyond them lines are counted as dropped.
const QUEUE: usize = 65_536;

/// How often the writer takes the queued lines (and looks for a reopen).
const POLL: Duration = Duration::from_millis(50);

/// An open access log: where lines go, and how to ask for the file to be opened again.
#[derive(Clone)]
pub struct AccessLog {
    lines: mpsc::SyncSender<Msg>,
    shared: Arc<Shared>,
}

/// What the writer is sent: a line, or a request to say when everything before it is written.
enum Msg {
    Line(String),
    Flushed(mpsc::Sender<()>),
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog")
            .field("path", &self.shared.path)
            .finish_non_exhaustive()
    }
}

struct Shared {
    path: PathBuf,
    reopen: AtomicBool,
    dropped: AtomicU64,
}

impl AccessLog {
    /// Opens (or creates, mode 0600) the log at `path` for appending, and starts its writer.
    pub fn open(path: &Path) -> Result<Self> {
        let file = open_append(path)?;
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            reopen: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
        });
        let (lines, rx) = mpsc::sync_channel(QUEUE);
        let s = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_loop(file, &rx, &s))
            .map_err(|source| Error::Io {
                what: "cannot start the access log's writer".into(),
                source,
            })?;
        Ok(Self { lines, shared })
    }

    /// Asks the writer to open the file again (after logrotate moved it away).
    pub fn reopen(&self) {
        self.shared.reopen.store(true, Ordering::Release);
    }

    /// The log's file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Waits (up to `timeout`) until every line sent so far is written: before the daemon
    /// exits, so that the last requests' lines are not lost with it.
    pub fn flush(&self, timeout: Duration) {
        let (tx, rx) = mpsc::channel();
        if send_within(&self.lines, Msg::Flushed(tx), timeout) {
            let _ = rx.recv_timeout(timeout);
        }
    }

    fn send(&self, line: String) {
        if self.lines.try_send(Msg::Line(line)).is_err() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn open_append(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| Error::Io {
            what: format!("cannot open the access log {}", path.display()),
            source,
        })
}

/// `SyncSender::send` with a deadline (std's is unstable): false when the queue stays full or
/// the writer is gone.
fn send_within<T>(tx: &mpsc::SyncSender<T>, mut msg: T, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    loop {
        match tx.try_send(msg) {
            Ok(()) => return true,
            Err(mpsc::TrySendError::Full(m)) if Instant::now() < until => {
                msg = m;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return false,
        }
    }
}

fn write_loop(file: std::fs::File, rx: &mpsc::Receiver<Msg>, shared: &Shared) {
    let mut out = std::io::BufWriter::with_capacity(64 << 10, file);
    let mut failing = false;
    loop {
        // The writer looks for lines every POLL instead of waiting on the queue: a waiting
        // receiver is woken by every line (a context switch per request on a busy machine,
        // ~10 µs each here); a sleeping one takes them in batches.
        std::thread::sleep(POLL);
        if shared.reopen.swap(false, Ordering::AcqRel) {
            let _ = out.flush();
            match open_append(&shared.path) {
                Ok(f) => {
                    out = std::io::BufWriter::with_capacity(64 << 10, f);
                    failing = false;
                }
                Err(e) => {
                    tracing::error!(error = %e, "the access log could not be opened again; writing on to the old file")
                }
            }
        }
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        let mut result = Ok(());
        if dropped > 0 {
            let line = serde_json::json!({
                "time": jiff::Timestamp::now().to_string(),
                "dropped": dropped,
            });
            result = writeln!(out, "{line}");
        }
        let mut waiting = Vec::new();
        let mut gone = false;
        // At most a queue's worth per poll: under a steady flood the reopen and the flush
        // requests still come round.
        for _ in 0..QUEUE {
            match rx.try_recv() {
                Ok(Msg::Line(line)) if result.is_ok() => result = out.write_all(line.as_bytes()),
                // Lines a failing write could not take are counted, as if the queue were full.
                Ok(Msg::Line(_)) => {
                    shared.dropped.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Msg::Flushed(done)) => waiting.push(done),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    gone = true;
                    break;
                }
            }
        }
        if result.is_ok() {
            result = out.flush();
        }
        for done in waiting {
            let _ = done.send(());
        }
        // One error message per run of failures (a full disk must not flood the log).
        match (result, failing) {
            (Err(e), false) => {
                failing = true;
                tracing::error!(error = %e, path = %shared.path.display(), "writing the access log failed");
            }
            (Ok(()), true) => failing = false,
            _ => {}
        }
        if gone {
            break;
        }
    }
    let _ = out.flush();
}

/// Logs one line per request (the layer outermost, so refusals by the server's own limits
/// are logged too).
pub async fn layer(State(log): State<AccessLog>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let client = req.extensions().get::<ClientAddr>().map(|c| c.0.ip());
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // The token's public id (as `rolegate token list` shows it), never the token.
    let token = crate::http::api::bearer_token(req.headers())
        .map(|t| crate::records::tokens::id_of_hash(&crate::store::secrets::token_hash(t)));
    let response = next.run(req).await;
    let line = Line {
        time: jiff::Timestamp::now(),
        client,
        method: method.as_str(),
        path: &path,
        status: response.status().as_u16(),
        us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        token: token.as_deref(),
    };
    if let Ok(mut text) = serde_json::to_string(&line) {
        text.push('\n');
        log.send(text);
    }
    response
}

/// One request's line.
#[derive(serde::Serialize)]
struct Line<'a> {
    time: jiff::Timestamp,
    client: Option<std::net::IpAddr>,
    method: &'a str,
    path: &'a str,
    status: u16,
    us: u64,
    token: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn lines_are_appended_to_a_private_file_which_is_opened_again_when_asked() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.jsonl");
        let log = AccessLog::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        log.send("{\"n\":1}\n".into());
        log.flush(Duration::from_secs(10));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":1}\n");
        let until = Instant::now() + Duration::from_secs(10);
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        while read(&path) != "{\"n\":1}\n" {
            assert!(Instant::now() < until, "the line was not written");
            std::thread::sleep(Duration::from_millis(10));
        }
        // logrotate moves the file away, then asks for a new one.
        let rotated = dir.path().join("access.jsonl.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen();
        std::thread::sleep(Duration::from_millis(50));
        log.send("{\"n\":2}\n".into());
        while read(&path) != "{\"n\":2}\n" {
            assert!(
                Instant::now() < until,
                "the reopened file got {:?}",
                read(&path)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(read(&rotated), "{\"n\":1}\n");
    }

    #[test]
    fn every_line_is_written_or_counted_when_the_queue_overflows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.jsonl");
        let log = AccessLog::open(&path).unwrap();
        let sent = 3 * QUEUE;
        for i in 0..sent {
            log.send(format!("{{\"n\":{i}}}\n"));
        }
        // The count of dropped lines is written at the poll after the drops: two flushes.
        log.flush(Duration::from_secs(10));
        log.flush(Duration::from_secs(10));
        let (mut written, mut dropped) = (0, 0);
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            match v["dropped"].as_u64() {
                Some(n) => dropped += usize::try_from(n).unwrap(),
                None => written += 1,
            }
        }
        assert_eq!(
            written + dropped,
            sent,
            "{written} written, {dropped} counted"
        );
    }

    #[test]
    fn a_log_that_cannot_be_opened_names_its_file() {
        let e = AccessLog::open(Path::new("/nonexistent-dir/access.jsonl")).unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot open the access log /nonexistent-dir/access.jsonl"),
            "{e}"
        );
    }
}
