//! A TCP forwarder on 127.0.0.1 that a test cuts and restores: the database behind it goes
//! away (every connection dropped, new ones closed at once) and comes back, while the daemon
//! under test keeps running.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A forwarder from `port` to a target address.
pub struct Cuttable {
    /// The port to connect to instead of the target's.
    pub port: u16,
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    forwarded: Arc<AtomicUsize>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Cuttable {
    /// Starts forwarding to the 127.0.0.1 port a `key=value` connection string names; returns
    /// the forwarder and the string rewritten to go through it.
    pub fn in_front_of(conn: &str) -> (Self, String) {
        let port: u16 = conn
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("port="))
            .and_then(|p| p.parse().ok())
            .expect("the connection string names a port");
        let proxy = Self::start(([127, 0, 0, 1], port).into());
        let through = conn.replace(&format!("port={port}"), &format!("port={}", proxy.port));
        (proxy, through)
    }

    /// Starts forwarding to `target` (up).
    pub fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let forwarded = Arc::new(AtomicUsize::new(0));
        let (u, s, o, f) = (up.clone(), stop.clone(), open.clone(), forwarded.clone());
        let accept = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) => break,
                };
                // Cut: the connection is closed at once, as a refused one would be.
                if !u.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
                    continue;
                };
                f.fetch_add(1, Ordering::SeqCst);
                client.set_nonblocking(false).unwrap();
                let pair = [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server.try_clone().unwrap(), client.try_clone().unwrap()),
                ];
                if let Ok(mut o) = o.lock() {
                    o.push(client);
                    o.push(server);
                }
                for (mut from, mut to) in pair {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self {
            port,
            up,
            stop,
            open,
            forwarded,
            accept: Some(accept),
        }
    }

    /// Drops every connection and closes new ones until [`Cuttable::restore`].
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        if let Ok(mut o) = self.open.lock() {
            for s in o.drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// How many connections were forwarded to the target so far.
    pub fn forwarded(&self) -> usize {
        self.forwarded.load(Ordering::SeqCst)
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Cuttable {
    fn drop(&mut self) {
        self.cut();
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}
