//! The API's HTTP server: the router behind hyper, with the limits a daemon facing
//! untrusted clients needs — a deadline for each request's headers and body (which also
//! closes kept-alive connections left idle), a cap on open connections — and a graceful stop
//! that lets requests in progress finish.
//!
//! Without them, a client that opens connections and sends its headers a byte a minute
//! (slowloris) holds a socket each until the daemon runs out of file descriptors, and every
//! user is refused with it.

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, HttpBody as _};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::http::access::{self, AccessLog, ClientAddr};
use crate::http::tls::ServerTls;
use crate::model::metrics::METRICS;

/// The default of `[server] client_timeout_s`.
pub const DEFAULT_CLIENT_TIMEOUT_S: u64 = 30;

/// The default of `[server] max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// The default of `[server] max_connections_per_client`.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 128;

/// What the server allows its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a client may take to send a request's headers, and then its body; also how
    /// long a kept-alive connection may sit idle before it is closed.
    pub client_timeout: Duration,
    /// Open connections at most; one accepted beyond them is closed at once.
    pub max_connections: usize,
    /// Open connections from one client address at most (IPv6: one /64), so that one client
    /// cannot take every place in `max_connections`.
    pub max_connections_per_client: usize,
    /// How long a stop waits for requests in progress before it gives up on them.
    pub drain: Duration,
    /// Bytes of request bodies over [`SMALL_BODY`] held at once, across all connections: a
    /// crowd of clients each sending a large body gets `503`, not the daemon's memory.
    pub body_budget: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            client_timeout: Duration::from_secs(DEFAULT_CLIENT_TIMEOUT_S),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            drain: Duration::from_secs(10),
            body_budget: 64 << 20,
        }
    }
}

/// The largest request body accepted: the API's bodies are small JSON documents.
pub const MAX_BODY: usize = 1 << 20;

/// Bodies up to this size are read without drawing on [`Limits::body_budget`] (every request
/// of the activation path is far smaller; `max_connections` of them bound their memory).
pub const SMALL_BODY: usize = 16 << 10;

/// What [`bounded_body`] needs: the client timeout and the shared budget (in KiB permits).
#[derive(Clone)]
struct BodyLimits {
    timeout: Duration,
    budget: Arc<Semaphore>,
}

/// How the server serves: its limits, its TLS, its access log.
#[derive(Debug, Clone, Default)]
pub struct Serving {
    /// What clients are allowed.
    pub limits: Limits,
    /// The certificate to serve HTTPS with; plain HTTP without.
    pub tls: Option<Arc<ServerTls>>,
    /// Where a line per request goes, if anywhere.
    pub access_log: Option<AccessLog>,
}

/// Serves `router` on `listener` as `serving` says — over HTTPS when it has TLS — until
/// `stop` completes, then stops accepting, lets the requests in progress finish (up to
/// `limits.drain`), and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    serving: Serving,
    stop: impl Future<Output = ()>,
) {
    let Serving {
        limits,
        tls,
        access_log,
    } = serving;
    let budget_kib = (limits.body_budget / 1024).clamp(MAX_BODY / 1024, Semaphore::MAX_PERMITS);
    let router = router.layer(axum::middleware::from_fn_with_state(
        BodyLimits {
            timeout: limits.client_timeout,
            budget: Arc::new(Semaphore::new(budget_kib)),
        },
        bounded_body,
    ));
    // Outermost, so that the server's own refusals (408, 413, 503) are logged too.
    let logging = access_log.is_some();
    let router = match access_log {
        Some(log) => router.layer(axum::middleware::from_fn_with_state(log, access::layer)),
        None => router,
    };
    // Over HTTPS, browsers are told to use nothing else for this host (the web page holds
    // tokens and answers MFA prompts).
    let router = if tls.is_some() {
        router.layer(axum::middleware::map_response(strict_transport))
    } else {
        router
    };
    let all = u32::try_from(limits.max_connections)
        .unwrap_or(u32::MAX)
        .max(1);
    let max = all as usize;
    let open = Arc::new(Semaphore::new(max));
    let (stopping_tx, stopping) = watch::channel(false);
    let refused = Refused::default();
    let per_client = Arc::new(PerClient::new(limits.max_connections_per_client));
    let refused_client = Refused::default();
    // One connection setting for all: the header deadline (which also ends idle keep-alives).
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.client_timeout)
        .keep_alive(true);
    let http1 = Arc::new(http1);
    let mut stop = std::pin::pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors (or a connection reset before it was
                    // accepted): wait a moment instead of spinning on the error.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(place) = PerClient::enter(&per_client, peer.ip()) else {
            drop(stream);
            refused_client.note(|n| {
                tracing::warn!(
                    refused = n,
                    client = %client_key(peer.ip()),
                    max_connections_per_client = per_client.max,
                    "connections refused: a client holds its maximum of open connections"
                );
            });
            continue;
        };
        let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
            drop(stream);
            refused.note(|n| {
                tracing::warn!(
                    refused = n,
                    max_connections = max,
                    "connections refused: the server holds its maximum of open connections"
                );
            });
            continue;
        };
        // Both places are given back when the connection ends, and it is counted as open
        // until then.
        let permit = (permit, place, OpenConnection::new());
        // Responses go out as soon as they are written (each is one write).
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(WithClient {
            router: router.clone(),
            client: logging.then_some(peer),
        });
        let (stopping, http1) = (stopping.clone(), Arc::clone(&http1));
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        let timeout = limits.client_timeout;
        tokio::spawn(async move {
            match acceptor {
                None => {
                    drive(
                        http1.serve_connection(TokioIo::new(stream), service),
                        stopping,
                    )
                    .await
                }
                Some(acceptor) => {
                    // The handshake has the client timeout too: a client that opens a
                    // connection and says nothing must not hold it; nor may it hold up a stop.
                    let mut stop = stopping.clone();
                    let shaken = tokio::select! {
                        s = handshake(acceptor, stream, timeout) => s,
                        _ = stop.wait_for(|s| *s) => None,
                    };
                    if let Some(stream) = shaken {
                        let conn = http1.serve_connection(TokioIo::new(stream), service);
                        drive(conn, stopping).await;
                    }
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    // Every connection holds a permit until it ends: all of them back means all ended.
    if tokio::time::timeout(limits.drain, open.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            connections = max - open.available_permits(),
            "stopping with requests still in progress"
        );
    }
}

/// The router, with the client's address put in each request for the access log.
#[derive(Clone)]
struct WithClient {
    router: Router,
    client: Option<std::net::SocketAddr>,
}

impl tower_service::Service<hyper::Request<hyper::body::Incoming>> for WithClient {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = <Router as tower_service::Service<hyper::Request<hyper::body::Incoming>>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower_service::Service::<hyper::Request<hyper::body::Incoming>>::poll_ready(
            &mut self.router,
            cx,
        )
    }

    fn call(&mut self, mut req: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        if let Some(client) = self.client {
            req.extensions_mut().insert(ClientAddr(client));
        }
        self.router.call(req)
    }
}

/// HSTS for every answer over HTTPS: a year, as browsers' preload rules ask for.
async fn strict_transport(mut r: Response) -> Response {
    r.headers_mut().insert(
        axum::http::header::STRICT_TRANSPORT_SECURITY,
        axum::http::HeaderValue::from_static("max-age=31536000"),
    );
    r
}

/// Serves one connection until it ends, or until a stop: then its request in progress
/// finishes and the connection closes.
async fn drive<I>(
    conn: hyper::server::conn::http1::Connection<I, TowerToHyperService<WithClient>>,
    mut stopping: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut conn = std::pin::pin!(conn);
    let stop = async move { stopping.wait_for(|s| *s).await.map(|_| ()) };
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// What a client that speaks plain HTTP to the HTTPS port is told, instead of a handshake
/// failure it cannot read.
const PLAIN_TO_TLS: &str = r#"{"error":{"code":"https_required","message":"this port serves HTTPS: use an https:// URL for the rolegate API"}}"#;

/// The TLS handshake, within `timeout`; `None` when it fails (a scanner, a client that does
/// not trust the certificate — which it says in its own alert) or a plain-HTTP client.
async fn handshake(
    acceptor: tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    timeout: Duration,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let deadline = tokio::time::Instant::now() + timeout;
    // A TLS connection opens with a handshake record (0x16); a letter is an HTTP method.
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut first)).await;
    match peeked {
        Ok(Ok(1)) if first[0].is_ascii_uppercase() => {
            let mut stream = stream;
            let answer = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{PLAIN_TO_TLS}",
                PLAIN_TO_TLS.len()
            );
            let _ = tokio::time::timeout_at(deadline, stream.write_all(answer.as_bytes())).await;
            let _ = stream.shutdown().await;
            // What the client sent is read (a little, briefly) before the socket closes: closed
            // with unread bytes, it would reset the connection and lose the answer.
            let mut sink = [0u8; 4096];
            for _ in 0..16 {
                match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut sink)).await
                {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => break,
                }
            }
            return None;
        }
        Ok(Ok(1)) => {}
        _ => return None,
    }
    match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "a TLS handshake failed");
            None
        }
        Err(_) => None,
    }
}

/// A connection counted in `rolegate_connections_open` while it lives.
struct OpenConnection;

impl OpenConnection {
    fn new() -> Self {
        METRICS.connections_open.fetch_add(1, Ordering::Relaxed);
        Self
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        METRICS.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Connections refused over the cap, reported at most once every 10 seconds (a flood of
/// them must not become a flood of log lines).
#[derive(Default)]
struct Refused {
    since_report: AtomicU64,
    last_report: std::sync::Mutex<Option<Instant>>,
}

impl Refused {
    /// Counts one refusal (in the metrics too); `report` gets the count since the last
    /// report, at most once every 10 seconds.
    fn note(&self, report: impl FnOnce(u64)) {
        METRICS.connections_refused.fetch_add(1, Ordering::Relaxed);
        let n = self.since_report.fetch_add(1, Ordering::Relaxed) + 1;
        let Ok(mut last) = self.last_report.lock() else {
            return;
        };
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            *last = Some(Instant::now());
            self.since_report.store(0, Ordering::Relaxed);
            report(n);
        }
    }
}

/// Open connections per client address: one client (a misbehaving script, an attacker with
/// one address) must not hold every place the server has.
struct PerClient {
    max: usize,
    open: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
}

/// One connection's place in its client's count, given back when dropped.
struct ClientPlace {
    table: Arc<PerClient>,
    client: IpAddr,
}

impl PerClient {
    fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            open: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// A place for one more connection from `ip`, or `None` when its client holds `max`.
    fn enter(table: &Arc<Self>, ip: IpAddr) -> Option<ClientPlace> {
        let client = client_key(ip);
        let mut open = table.open.lock().ok()?;
        let n = open.entry(client).or_insert(0);
        if *n >= table.max {
            return None;
        }
        *n += 1;
        Some(ClientPlace {
            table: Arc::clone(table),
            client,
        })
    }
}

impl Drop for ClientPlace {
    fn drop(&mut self) {
        if let Ok(mut open) = self.table.open.lock()
            && let Some(n) = open.get_mut(&self.client)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.client);
            }
        }
    }
}

/// The address a client is counted by: an IPv4 address (also when it comes IPv4-mapped), or
/// an IPv6 address's /64 — one subscriber's network, which holds more addresses than any
/// count could.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Reads a request's body within the client timeout (and at most [`MAX_BODY`] bytes) before
/// the handler sees it: a client that sends its headers and then trickles the body gets 408,
/// not a connection held open for as long as it likes.
async fn bounded_body(State(limits): State<BodyLimits>, req: Request, next: Next) -> Response {
    // Every answer is counted here, by status, with how long it took (`/metrics`): its own
    // refusals (408, 413, 503) too. One layer for both costs less than two.
    let started = Instant::now();
    let response = bound_body(limits, req, next).await;
    METRICS.http(response.status().as_u16(), started.elapsed());
    response
}

async fn bound_body(limits: BodyLimits, req: Request, next: Next) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let too_large_refusal = || {
        refusal(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request's body is larger than {} KiB", MAX_BODY / 1024),
        )
    };
    // What the body may take: its declared length, or the most a body may be.
    let declared = req.body().size_hint().exact();
    let expected = declared.map_or(MAX_BODY, |n| usize::try_from(n).unwrap_or(usize::MAX));
    if expected > MAX_BODY {
        return too_large_refusal();
    }
    // Held until the body has been handed on (and dropped with the request).
    let _reserved = if expected > SMALL_BODY {
        let kib = u32::try_from(expected.div_ceil(1024)).unwrap_or(u32::MAX);
        match Arc::clone(&limits.budget).try_acquire_many_owned(kib) {
            Ok(permit) => Some(permit),
            Err(_) => {
                let mut r = refusal(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy",
                    "the server holds as many large request bodies as it allows: retry shortly"
                        .into(),
                );
                r.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                );
                return r;
            }
        }
    } else {
        None
    };
    let timeout = limits.timeout;
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(e)) if too_large(&e) => too_large_refusal(),
        Ok(Err(_)) => refusal(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request's body could not be read".into(),
        ),
        Err(_) => refusal(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "the request's body did not arrive within {} s",
                timeout.as_secs_f64()
            ),
        ),
    }
}

/// Whether reading a body failed for its length (not for the connection).
fn too_large(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// An error in the API's shape (`{"error": {"code", "message"}}`), closing the connection.
fn refusal(status: StatusCode, code: &str, message: String) -> Response {
    let mut r = (
        status,
        axum::Json(serde_json::json!({"error": {"code": code, "message": message}})),
    )
        .into_response();
    r.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    /// Generous bound on every wait in these tests (they end in about a second each).
    const BOUND: Duration = Duration::from_secs(10);

    /// A server on 127.0.0.1 with `limits` (serving `/`, `/echo` and `/slow`), and the
    /// switch that stops it.
    async fn start(
        limits: Limits,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        start_on(limits, None).await
    }

    /// Like [`start`], over HTTPS when `tls` is given.
    async fn start_on(
        limits: Limits,
        tls: Option<Arc<ServerTls>>,
    ) -> (
        std::net::SocketAddr,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let router = Router::new()
            .route("/", get(|| async { "ok" }))
            .route("/echo", post(|body: String| async move { body }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "done"
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let serving = Serving {
            limits,
            tls,
            access_log: None,
        };
        let server = tokio::spawn(serve(listener, router, serving, async move {
            let _ = rx.await;
        }));
        (addr, tx, server)
    }

    fn limits(timeout_ms: u64, max_connections: usize) -> Limits {
        Limits {
            client_timeout: Duration::from_millis(timeout_ms),
            max_connections,
            drain: BOUND,
            ..Limits::default()
        }
    }

    /// Reads until the server closes the connection (or BOUND passes): what it sent.
    async fn read_to_close(s: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let until = tokio::time::Instant::now() + BOUND;
        loop {
            match tokio::time::timeout_at(until, s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return String::from_utf8_lossy(&out).into_owned(),
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Err(_) => panic!(
                    "the server kept the connection open for {BOUND:?}; it sent: {}",
                    String::from_utf8_lossy(&out)
                ),
            }
        }
    }

    /// Sends one request on a kept-alive connection and reads its (short) answer.
    async fn request(s: &mut TcpStream, path: &str) -> String {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await
            .unwrap();
        answer(s).await
    }

    /// The head of a POST to `/echo` declaring a body of `len` bytes.
    fn post_head(len: usize) -> String {
        format!("POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n")
    }

    /// One read of a (short) answer, within BOUND.
    async fn answer(s: &mut TcpStream) -> String {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(BOUND, s.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[tokio::test]
    async fn headers_sent_too_slowly_lose_the_connection() {
        let (addr, _stop, _server) = start(limits(500, 16)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n").await.unwrap();
        let said = read_to_close(&mut s).await;
        assert!(
            started.elapsed() >= Duration::from_millis(400),
            "closed before its deadline"
        );
        assert!(!said.contains("200 OK"), "{said}");
    }

    #[tokio::test]
    async fn an_idle_kept_alive_connection_is_closed() {
        // Long enough that a busy machine's pause between the two requests does not end it.
        let (addr, _stop, _server) = start(limits(2_000, 16)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        assert!(request(&mut s, "/").await.starts_with("HTTP/1.1 200"));
        // Still open for the next request at once …
        assert!(request(&mut s, "/").await.starts_with("HTTP/1.1 200"));
        // … and closed once it sits idle past the timeout.
        assert_eq!(read_to_close(&mut s).await, "");
    }

    #[tokio::test]
    async fn a_body_sent_too_slowly_is_answered_408() {
        let (addr, _stop, _server) = start(limits(500, 16)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("{}ab", post_head(10)).as_bytes())
            .await
            .unwrap();
        let said = read_to_close(&mut s).await;
        assert!(said.starts_with("HTTP/1.1 408"), "{said}");
        assert!(said.contains(r#""code":"timeout""#), "{said}");
        assert!(
            said.contains("the request's body did not arrive within 0.5 s"),
            "{said}"
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_answered_413_and_one_within_it_passes() {
        let (addr, _stop, _server) = start(limits(5_000, 16)).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("{}hello", post_head(5)).as_bytes())
            .await
            .unwrap();
        let said = answer(&mut s).await;
        assert!(
            said.starts_with("HTTP/1.1 200") && said.ends_with("hello"),
            "{said}"
        );

        let s = TcpStream::connect(addr).await.unwrap();
        // Chunked, so no length is declared: the limit is found while reading.
        let len = MAX_BODY + 1;
        let head = format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{len:x}\r\n"
        );
        let mut whole = head.into_bytes();
        whole.resize(whole.len() + len, b'x');
        whole.extend_from_slice(b"\r\n0\r\n\r\n");
        let (mut r, mut w) = s.into_split();
        let writer = tokio::spawn(async move {
            let _ = w.write_all(&whole).await;
            w
        });
        let mut out = Vec::new();
        let _ = tokio::time::timeout(BOUND, r.read_to_end(&mut out)).await;
        let said = String::from_utf8_lossy(&out);
        assert!(said.starts_with("HTTP/1.1 413"), "{said}");
        assert!(
            said.contains("the request's body is larger than 1024 KiB"),
            "{said}"
        );
        drop(writer.await);
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_before_reading() {
        let (addr, _stop, _server) = start(limits(5_000, 16)).await;
        let before = METRICS.http_answers(413);
        let mut s = TcpStream::connect(addr).await.unwrap();
        // Headers only: the answer must not wait for the body.
        s.write_all(post_head(MAX_BODY + 1).as_bytes())
            .await
            .unwrap();
        let said = read_to_close(&mut s).await;
        assert!(said.starts_with("HTTP/1.1 413"), "{said}");
        // The server's own refusal is in the metrics too.
        assert!(METRICS.http_answers(413) > before);
    }

    #[tokio::test]
    async fn large_bodies_held_at_once_stop_at_the_budget() {
        // A budget of one largest body: a second large body waits its turn (503), a small
        // one does not draw on it.
        let (addr, _stop, _server) = start(Limits {
            body_budget: MAX_BODY,
            ..limits(5_000, 16)
        })
        .await;
        let big = MAX_BODY - 100;
        let mut first = TcpStream::connect(addr).await.unwrap();
        first.write_all(post_head(big).as_bytes()).await.unwrap();
        first.write_all(b"partial").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The first body is being read (its reservation held) …
        let until = std::time::Instant::now() + BOUND;
        let said = loop {
            let mut second = TcpStream::connect(addr).await.unwrap();
            second
                .write_all(post_head(SMALL_BODY + 1).as_bytes())
                .await
                .unwrap();
            let said = read_to_close(&mut second).await;
            if said.starts_with("HTTP/1.1 503") || std::time::Instant::now() > until {
                break said;
            }
        };
        assert!(said.starts_with("HTTP/1.1 503"), "{said}");
        assert!(
            said.to_ascii_lowercase().contains("retry-after: 1"),
            "{said}"
        );
        assert!(said.contains(r#""code":"busy""#), "{said}");
        // … a small body is served meanwhile …
        let mut small = TcpStream::connect(addr).await.unwrap();
        small
            .write_all(format!("{}hello", post_head(5)).as_bytes())
            .await
            .unwrap();
        assert!(answer(&mut small).await.ends_with("hello"));
        // … and once the first body is complete and answered, its reservation is free again.
        first
            .write_all(&vec![b'x'; big - "partial".len()])
            .await
            .unwrap();
        assert!(answer(&mut first).await.starts_with("HTTP/1.1 200"));
        let mut again = TcpStream::connect(addr).await.unwrap();
        let body = vec![b'y'; SMALL_BODY + 1];
        again
            .write_all(post_head(body.len()).as_bytes())
            .await
            .unwrap();
        again.write_all(&body).await.unwrap();
        let said = answer(&mut again).await;
        assert!(said.starts_with("HTTP/1.1 200"), "{said}");
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_closed_and_the_others_served() {
        let (addr, _stop, _server) = start(limits(5_000, 2)).await;
        let refused = METRICS.connections_refused.load(Ordering::Relaxed);
        let mut a = TcpStream::connect(addr).await.unwrap();
        let mut b = TcpStream::connect(addr).await.unwrap();
        assert!(request(&mut a, "/").await.starts_with("HTTP/1.1 200"));
        assert!(request(&mut b, "/").await.starts_with("HTTP/1.1 200"));
        let mut c = TcpStream::connect(addr).await.unwrap();
        let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(
            read_to_close(&mut c).await,
            "",
            "a third connection was served"
        );
        assert!(METRICS.connections_refused.load(Ordering::Relaxed) > refused);
        assert!(request(&mut a, "/").await.starts_with("HTTP/1.1 200"));
        // One closed frees its place (once the server has seen it close).
        drop(b);
        served_again(async || TcpStream::connect(addr).await.unwrap()).await;
    }

    /// Connects (with `connect`) until a connection is served: a freed place is reused once the
    /// server has seen the old connection close.
    async fn served_again(mut connect: impl AsyncFnMut() -> TcpStream) {
        let until = std::time::Instant::now() + BOUND;
        loop {
            let mut c = connect().await;
            let _ = c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
            let mut buf = [0u8; 256];
            if let Ok(Ok(n)) = tokio::time::timeout(BOUND, c.read(&mut buf)).await
                && n > 0
            {
                assert!(buf.starts_with(b"HTTP/1.1 200"));
                return;
            }
            assert!(
                std::time::Instant::now() < until,
                "the freed place was not reused"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A connection to `addr` from the loopback address `from` (all of 127/8 is this machine).
    async fn connect_from(from: &str, addr: std::net::SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        socket.connect(addr).await.unwrap()
    }

    #[tokio::test]
    async fn one_client_cannot_take_every_connection() {
        let (addr, _stop, _server) = start(Limits {
            max_connections_per_client: 2,
            ..limits(5_000, 16)
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut c = connect_from("127.0.0.1", addr).await;
            assert!(request(&mut c, "/").await.starts_with("HTTP/1.1 200"));
            held.push(c);
        }
        let mut third = connect_from("127.0.0.1", addr).await;
        let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await;
        assert_eq!(
            read_to_close(&mut third).await,
            "",
            "a client's third connection was served"
        );
        // Another client is served meanwhile.
        let mut other = connect_from("127.0.0.2", addr).await;
        assert!(request(&mut other, "/").await.starts_with("HTTP/1.1 200"));
        // A closed connection gives its client's place back.
        drop(held.pop());
        served_again(async || connect_from("127.0.0.1", addr).await).await;
    }

    #[test]
    fn clients_are_counted_by_ipv4_address_or_ipv6_network() {
        let key = |s: &str| client_key(s.parse().unwrap()).to_string();
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    }

    #[tokio::test]
    async fn a_stop_lets_the_request_in_progress_finish_then_refuses_new_ones() {
        let (addr, stop, server) = start(limits(5_000, 16)).await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        assert!(request(&mut idle, "/").await.starts_with("HTTP/1.1 200"));
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.send(()).unwrap();
        let said = read_to_close(&mut s).await;
        assert!(
            said.starts_with("HTTP/1.1 200") && said.ends_with("done"),
            "{said}"
        );
        // The idle connection is closed, and the server returns.
        assert_eq!(read_to_close(&mut idle).await, "");
        tokio::time::timeout(BOUND, server)
            .await
            .expect("the server returned")
            .unwrap();
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    }

    /// A self-signed certificate and its key, made with the openssl command.
    fn self_signed(dir: &std::path::Path) -> Arc<ServerTls> {
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args([
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=t",
            ])
            .args(["-addext", "subjectAltName=IP:127.0.0.1"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-keyout", "key.pem", "-out", "cert.pem"])
            .current_dir(dir)
            .output()
            .expect("the openssl command (scripts/test installs it)");
        assert!(out.status.success(), "{out:?}");
        {
            use std::os::unix::fs::PermissionsExt as _;
            let private = std::fs::Permissions::from_mode(0o600);
            std::fs::set_permissions(dir.join("key.pem"), private).unwrap();
        }
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        Arc::new(ServerTls::load(&cert, &key, None, jiff::Timestamp::now()).unwrap())
    }

    #[tokio::test]
    async fn https_serves_with_hsts_answers_plain_http_and_stops_without_waiting_for_a_silent_client()
     {
        let dir = tempfile::tempdir().unwrap();
        let tls = self_signed(dir.path());
        // A client timeout and a drain far longer than the stop may take.
        let limits = Limits {
            client_timeout: Duration::from_secs(60),
            drain: Duration::from_secs(30),
            ..Limits::default()
        };
        let (addr, stop, server) = start_on(limits, Some(tls)).await;
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain
            .write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi")
            .await
            .unwrap();
        let answer = read_to_close(&mut plain).await;
        assert!(
            answer.starts_with("HTTP/1.1 400") && answer.contains("\"https_required\""),
            "{answer}"
        );
        // A TLS client that trusts the certificate is served, and told to stay on HTTPS.
        let mut roots = rustls::RootCertStore::empty();
        {
            use rustls::pki_types::pem::PemObject as _;
            let cert = dir.path().join("cert.pem");
            roots
                .add(rustls::pki_types::CertificateDer::from_pem_file(cert).unwrap())
                .unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, TcpStream::connect(addr).await.unwrap())
            .await
            .unwrap();
        tls.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(BOUND, tls.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(
            answer.starts_with("http/1.1 200")
                && answer.contains("strict-transport-security: max-age=31536000")
                && answer.ends_with("ok"),
            "{answer}"
        );
        let silent = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stopping = Instant::now();
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(40), server)
            .await
            .expect("the server never stopped")
            .unwrap();
        assert!(
            stopping.elapsed() < Duration::from_secs(5),
            "the stop waited {:?} for a client that never started its handshake",
            stopping.elapsed()
        );
        drop(silent);
    }
}
