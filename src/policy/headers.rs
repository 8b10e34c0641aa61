//! Security headers. OWNER: policies.
//!
//! airgate fronts APIs, not pages, so the set is the strict one for API responses:
//! `Content-Security-Policy: default-src 'none'; frame-ancestors 'none'` forbids a
//! response from loading anything or being framed (OWASP's REST guidance), which is
//! harmless for JSON, SSE and audio, and would break an HTML UI behind the same route;
//! such a route should leave `securityHeaders` off or set its own CSP (the upstream's
//! headers win).
//!
//! `Strict-Transport-Security` is sent only on responses over TLS: RFC 6797 §7.2 says a
//! server must not send it over plain HTTP (browsers ignore it there anyway). The value
//! is ingress-nginx's default, `max-age=31536000; includeSubDomains`.
use http::HeaderMap;
use http::header::{
    CONTENT_SECURITY_POLICY, REFERRER_POLICY, STRICT_TRANSPORT_SECURITY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use http::{HeaderName, HeaderValue};

const STANDARD: [(HeaderName, HeaderValue); 4] = [
    (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    (X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    (
        REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    ),
    (
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    ),
];

/// ingress-nginx's `hsts-max-age` default (one year) with `includeSubDomains`.
pub const HSTS: HeaderValue = HeaderValue::from_static("max-age=31536000; includeSubDomains");

/// Add the standard security headers (nosniff, frame DENY, referrer policy, CSP) unless
/// the upstream already set them.
pub fn apply_security_headers(out: &mut HeaderMap) {
    // Room for all of them at once; `entry` hashes each name once.
    out.reserve(STANDARD.len() + 1);
    for (name, value) in STANDARD {
        out.entry(name).or_insert(value);
    }
}

/// [`apply_security_headers`] plus `Strict-Transport-Security` when the client
/// connection is TLS. The proxy calls this with `tls` from the listener.
pub fn apply_security_headers_tls(out: &mut HeaderMap, tls: bool) {
    apply_security_headers(out);
    if tls {
        out.entry(STRICT_TRANSPORT_SECURITY).or_insert(HSTS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_standard_set_without_overwriting_upstream() {
        let mut out = HeaderMap::new();
        out.insert(X_FRAME_OPTIONS, HeaderValue::from_static("SAMEORIGIN"));
        apply_security_headers(&mut out);
        assert_eq!(out[X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(
            out[X_FRAME_OPTIONS], "SAMEORIGIN",
            "the upstream's value wins"
        );
        assert_eq!(out[REFERRER_POLICY], "strict-origin-when-cross-origin");
        assert_eq!(
            out[CONTENT_SECURITY_POLICY],
            "default-src 'none'; frame-ancestors 'none'"
        );
        assert!(!out.contains_key(STRICT_TRANSPORT_SECURITY));
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn hsts_only_over_tls() {
        let mut plain = HeaderMap::new();
        apply_security_headers_tls(&mut plain, false);
        assert!(!plain.contains_key(STRICT_TRANSPORT_SECURITY));
        let mut tls = HeaderMap::new();
        apply_security_headers_tls(&mut tls, true);
        assert_eq!(
            tls[STRICT_TRANSPORT_SECURITY],
            "max-age=31536000; includeSubDomains"
        );
        assert_eq!(tls[X_FRAME_OPTIONS], "DENY");
    }
}
