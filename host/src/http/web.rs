//! The web console for candidates, approvers and admins: one static page of screens over the
//! JSON API (hash-routed: `#/roles`, `#/requests`, …), built into the binary and served with a
//! strict Content-Security-Policy (no inline script or style, no third-party origin, no
//! framing). `docs/console.md` describes the screens.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

const INDEX: &str = include_str!("../../ui/index.html");
const LIB_JS: &str = include_str!("../../ui/lib.js");
const APP_JS: &str = include_str!("../../ui/app.js");
const ADMIN_JS: &str = include_str!("../../ui/admin.js");
const APP_CSS: &str = include_str!("../../ui/app.css");

/// The policy every page response carries.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

const JS: &str = "text/javascript; charset=utf-8";

/// The page's routes: `/`, `/ui/lib.js`, `/ui/app.js`, `/ui/admin.js`, `/ui/app.css`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", INDEX) }),
        )
        .route("/ui/lib.js", get(|| async { page(JS, LIB_JS) }))
        .route("/ui/app.js", get(|| async { page(JS, APP_JS) }))
        .route("/ui/admin.js", get(|| async { page(JS, ADMIN_JS) }))
        .route(
            "/ui/app.css",
            get(|| async { page("text/css; charset=utf-8", APP_CSS) }),
        )
}
