//! The portal's static files, built into the binary (plain HTML, CSS and JavaScript; no build
//! step), served with a strict Content-Security-Policy.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

/// `(path below /portal/, content type, body)` of every file.
const FILES: &[(&str, &str, &str)] = &[
    ("", "text/html; charset=utf-8", include_str!("../../assets/portal/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../assets/portal/app.js")),
    ("i18n.js", "text/javascript; charset=utf-8", include_str!("../../assets/portal/i18n.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("../../assets/portal/style.css")),
];

/// Only our own files, no inline script or style, no framing; the desktop opens in its own tab.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The file at `path` below `/portal/`, or a 404 in the API's error shape.
pub fn serve(path: &str) -> Response {
    let Some((_, content_type, body)) = FILES.iter().find(|(p, _, _)| *p == path) else {
        return crate::http::error::ApiError::not_found("no such portal file").into_response();
    };
    let mut response = (StatusCode::OK, *body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
