//! The web UI's files at `/` (embedded by `shorthorn-ui`), with the headers that keep a
//! page of this origin from running anything but its own script: a Content-Security-Policy
//! of `default-src 'self'` with no inline script or style, no framing, no MIME sniffing.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// The UI loads only its own files and talks only to this API.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
form-action 'self'; frame-ancestors 'none'";

/// `/`: the single page (or, in a build without the UI, how to build it).
pub(super) async fn index() -> Response {
    match shorthorn_ui::asset("index.html") {
        Some(asset) => page(asset.bytes, asset.content_type, false),
        None => page(
            shorthorn_ui::NOT_BUILT_PAGE.as_bytes(),
            "text/html; charset=utf-8",
            false,
        ),
    }
}

/// `/assets/…` and the other built files.
pub(super) async fn file(Path(path): Path<String>) -> Response {
    match shorthorn_ui::asset(&path) {
        Some(asset) => page(asset.bytes, asset.content_type, asset.immutable),
        None => {
            ApiError::new(StatusCode::NOT_FOUND, format!("no UI file {path:?}")).into_response()
        }
    }
}

/// `/assets/…` as built by Vite (the router's wildcard drops the prefix).
pub(super) async fn built_asset(Path(path): Path<String>) -> Response {
    file(Path(format!("assets/{path}"))).await
}

fn page(bytes: &'static [u8], content_type: &'static str, immutable: bool) -> Response {
    let cache = if immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}
