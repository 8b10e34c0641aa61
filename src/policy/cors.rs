//! CORS. OWNER: policies. Contract used by the proxy pipeline:
//! `allowed_origin`, `is_preflight`, `preflight_headers`, `apply`.
use http::{HeaderMap, HeaderValue, Method};

use crate::config::CorsPolicy;

/// The request's Origin if the policy allows it (the value to echo back).
pub fn allowed_origin(policy: &CorsPolicy, request_headers: &HeaderMap) -> Option<HeaderValue> {
    let _ = (policy, request_headers);
    None
}

/// True for an OPTIONS request with Origin and Access-Control-Request-Method.
pub fn is_preflight(method: &Method, request_headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && request_headers.contains_key(http::header::ORIGIN)
        && request_headers.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Headers of the proxy's 204 answer to a preflight from an allowed origin.
pub fn preflight_headers(policy: &CorsPolicy, origin: &HeaderValue, out: &mut HeaderMap) {
    let _ = (policy, origin, out);
}

/// Add CORS headers for an allowed origin to any response (relayed or proxy-made).
pub fn apply(policy: &CorsPolicy, origin: &HeaderValue, out: &mut HeaderMap) {
    let _ = (policy, origin, out);
}
