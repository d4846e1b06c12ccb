//! The plugin worker process: serves one plugin instance over the framed pipe.
//!
//! `rolegate plugin-worker --library L --sha256 H` loads the library (refusing any file that
//! does not match the hash the host checked), reads a `CREATE` frame with the settings, then
//! answers `CALL` frames on a small thread pool until its input closes. Anything the plugin
//! prints to stdout is sent to stderr, so it cannot corrupt the pipe.

use std::fs::File;
use std::io::{BufReader, Write as _};
use std::os::fd::FromRawFd as _;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rolegate_sdk::ProviderError;
use rolegate_sdk::abi::Instance;
use rolegate_sdk::message::Response;

use super::frame::{self, CALL, CREATE, FATAL};
use super::library;

/// How many threads serve calls concurrently inside one worker.
const THREADS: usize = 8;

/// Moves the protocol off fd 1 and points fd 1 at stderr; returns the protocol output.
fn take_stdout() -> std::io::Result<File> {
    // SAFETY: dup of a descriptor the process owns.
    let proto = unsafe { libc::dup(1) };
    if proto < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors are open; fd 1 is replaced by a copy of fd 2.
    if unsafe { libc::dup2(2, 1) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `proto` is a fresh descriptor this function owns.
    Ok(unsafe { File::from_raw_fd(proto) })
}

fn send(out: &Mutex<File>, kind: u8, id: u64, payload: &[u8]) {
    let bytes = frame::encode(kind, id, payload);
    let mut out = match out.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
        // The host is gone: nothing left to serve.
        std::process::exit(0);
    }
}

/// Runs the worker until the host closes the pipe; returns the process exit code.
pub fn run(library: &Path, sha256: &str) -> i32 {
    // Die with the host, whatever happens to the pipe.
    // SAFETY: prctl with PR_SET_PDEATHSIG and a valid signal number.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // Signals sent to the host's whole process group — Ctrl-C in a terminal, `timeout`, a
    // service manager's stop (systemd signals every process of the unit) — are the host's to
    // act on: it stops its workers itself, and a worker whose host is gone dies with it
    // (above) or at the end of its pipe. Dying of them here would look like a crash, logged
    // and recorded as one, on every stop.
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: sets a standard signal's disposition, before the worker starts any thread.
        unsafe { libc::signal(signal, libc::SIG_IGN) };
    }
    let out = match take_stdout() {
        Ok(f) => Arc::new(Mutex::new(f)),
        Err(e) => {
            eprintln!("rolegate plugin-worker: cannot set up the pipe: {e}");
            return 2;
        }
    };
    let loaded = match library::open("worker", library, Some(sha256)) {
        Ok(l) => l,
        Err(e) => {
            let reason = match e {
                crate::Error::Load { reason, .. } => reason,
                other => other.to_string(),
            };
            send(&out, FATAL, 0, reason.as_bytes());
            return 2;
        }
    };
    let mut input = BufReader::with_capacity(64 * 1024, std::io::stdin());
    let settings = match frame::read_sync(&mut input) {
        Ok(Some(f)) if f.kind == CREATE => f,
        Ok(None) => return 0,
        Ok(Some(f)) => {
            send(
                &out,
                FATAL,
                f.id,
                b"protocol error: the first frame must be CREATE",
            );
            return 2;
        }
        Err(e) => {
            send(&out, FATAL, 0, format!("protocol error: {e}").as_bytes());
            return 2;
        }
    };
    let instance: Arc<Instance> = match loaded.table.create(&settings.payload) {
        Ok(i) => {
            send(&out, CREATE, settings.id, br#"{"ok":null}"#);
            Arc::new(i)
        }
        Err(e) => {
            let body = serde_json::to_vec(&Response::<()>::Error(e)).unwrap_or_default();
            send(&out, CREATE, settings.id, &body);
            return 0;
        }
    };
    // Leader/follower: each thread takes the input in turn, reads one frame, releases the
    // input and answers that frame itself, so no call pays a hand-off to another thread.
    let input = Arc::new(Mutex::new(input));
    let mut threads = Vec::with_capacity(THREADS);
    for _ in 0..THREADS {
        let input = Arc::clone(&input);
        let out = Arc::clone(&out);
        let instance = Arc::clone(&instance);
        threads.push(std::thread::spawn(move || {
            loop {
                let next = {
                    let mut input = match input.lock() {
                        Ok(g) => g,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                    frame::read_sync(&mut *input)
                };
                let code = match next {
                    Ok(Some(f)) if f.kind == CALL => {
                        let answer = instance.call_raw(&f.payload);
                        send(&out, CALL, f.id, &answer);
                        continue;
                    }
                    Ok(Some(f)) => {
                        let e =
                            ProviderError::bad_input(format!("unexpected frame kind {}", f.kind));
                        let body =
                            serde_json::to_vec(&Response::<()>::Error(e)).unwrap_or_default();
                        send(&out, CALL, f.id, &body);
                        continue;
                    }
                    Ok(None) => 0,
                    Err(e) => {
                        send(&out, FATAL, 0, format!("protocol error: {e}").as_bytes());
                        2
                    }
                };
                // The input is closed or broken: the whole worker is done.
                std::process::exit(code);
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    0
}
