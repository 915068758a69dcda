//! Serves the browser client (`web/`), embedded in the binary, at `/` with strict security headers.

use axum::Router;
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::ApiError;

/// Scripts and styles come only from this node, and nothing may frame the client: user content
/// that slipped past escaping could still not run or load anything.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

const INDEX: &str = include_str!("../../../web/index.html");

/// Every asset under `/app/`, by path below it.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../../web/style.css"),
    ),
    ("js/main.js", JS, include_str!("../../../web/js/main.js")),
    ("js/api.js", JS, include_str!("../../../web/js/api.js")),
    (
        "js/gateway.js",
        JS,
        include_str!("../../../web/js/gateway.js"),
    ),
    ("js/state.js", JS, include_str!("../../../web/js/state.js")),
    ("js/dom.js", JS, include_str!("../../../web/js/dom.js")),
    (
        "js/markdown.js",
        JS,
        include_str!("../../../web/js/markdown.js"),
    ),
    ("js/perms.js", JS, include_str!("../../../web/js/perms.js")),
    ("js/auth.js", JS, include_str!("../../../web/js/auth.js")),
    (
        "js/layout.js",
        JS,
        include_str!("../../../web/js/layout.js"),
    ),
    (
        "js/messages.js",
        JS,
        include_str!("../../../web/js/messages.js"),
    ),
    (
        "js/panels.js",
        JS,
        include_str!("../../../web/js/panels.js"),
    ),
    (
        "js/settings.js",
        JS,
        include_str!("../../../web/js/settings.js"),
    ),
    ("js/voice.js", JS, include_str!("../../../web/js/voice.js")),
    (
        "js/xchacha.js",
        JS,
        include_str!("../../../web/js/xchacha.js"),
    ),
    (
        "js/dmcrypto.js",
        JS,
        include_str!("../../../web/js/dmcrypto.js"),
    ),
    (
        "js/dmconv.js",
        JS,
        include_str!("../../../web/js/dmconv.js"),
    ),
    ("js/dm.js", JS, include_str!("../../../web/js/dm.js")),
];

const JS: &str = "text/javascript; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";

/// The client's routes: `/`, `/app/{asset}`, and index.html for any other page path so that
/// links such as `/invite/<code>` open the client. Unknown `/api/` paths stay JSON errors.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { asset(HTML, INDEX) }))
        .route("/app/{*path}", get(app_asset))
        .fallback(fallback)
}

async fn app_asset(axum::extract::Path(path): axum::extract::Path<String>) -> Response {
    match ASSETS.iter().find(|(p, _, _)| *p == path) {
        Some((_, content_type, body)) => asset(content_type, body),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

async fn fallback(method: Method, uri: Uri) -> Response {
    if uri.path() == "/api" || uri.path().starts_with("/api/") {
        return ApiError::not_found("unknown_endpoint", "no such endpoint; see spec/rest.md")
            .into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    asset(HTML, INDEX)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The assets live in the binary, so a new binary must be picked up without a stale cache.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
