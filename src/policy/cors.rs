//! CORS. OWNER: policies. Contract used by the proxy pipeline:
//! `allowed_origin`, `is_preflight`, `preflight_headers`, `apply` (and `strip_upstream`).
//!
//! Behaviour (ingress-nginx's `enable-cors` template is the reference; differences noted):
//!
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an
//!   allowed origin is answered by the proxy: 204 with an empty body and the
//!   [`preflight_headers`]; the backend never sees it.
//! - A preflight from an origin the policy does not allow is answered by the proxy too:
//!   204 with no `Access-Control-*` headers, so the browser fails the preflight and never
//!   sends the real request. (ingress-nginx's template short-circuited `OPTIONS` only for
//!   matching origins and forwarded the others to the backend; answering here keeps the
//!   outcome independent of how the backend treats `OPTIONS`, and backends of AI APIs
//!   rarely handle it.)
//! - Every other response (relayed or made by the proxy: 404, 413, 429, 502...) to an
//!   allowed origin gets [`apply`]: the origin echoed, `Vary: Origin` appended,
//!   credentials and exposed headers as configured. Other origins get nothing.
//! - When a route has a CORS policy, airgate owns CORS on that route: the proxy calls
//!   [`strip_upstream`] on every relayed response, removing the `Access-Control-*`
//!   headers the backend sent. Many AI servers (Ollama, dev servers) answer
//!   `Access-Control-Allow-Origin: *`; left in place, that would silently widen the
//!   policy the user wrote. (ingress-nginx overwrote them only for allowed origins and
//!   let them through for others, which is the surprise we avoid.) Routes without a
//!   CORS policy relay the backend's CORS headers untouched.
//! - `*` is sent only when the policy allows any origin, and then never together with
//!   `Access-Control-Allow-Credentials` (browsers reject that pair).
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ORIGIN,
    VARY,
};
use http::{HeaderMap, HeaderValue, Method};

use crate::config::CorsPolicy;

const ANY: HeaderValue = HeaderValue::from_static("*");
const TRUE: HeaderValue = HeaderValue::from_static("true");
const ORIGIN_VARY: HeaderValue = HeaderValue::from_static("Origin");

/// The request's Origin if the policy allows it (the value to echo back), or `*` when
/// the policy allows any origin.
pub fn allowed_origin(policy: &CorsPolicy, request_headers: &HeaderMap) -> Option<HeaderValue> {
    // Several Origin headers are malformed; refuse rather than guess which one counts.
    let mut values = request_headers.get_all(ORIGIN).iter();
    let origin = values.next()?;
    if values.next().is_some() {
        return None;
    }
    if policy.allow_any_origin {
        return Some(ANY);
    }
    let text = origin.to_str().ok()?;
    if origin_matches(policy, text) {
        Some(origin.clone())
    } else {
        None
    }
}

/// Exact origins compare case-insensitively (scheme and host are); a wildcard
/// `https://*.example.com` matches exactly one extra DNS label.
fn origin_matches(policy: &CorsPolicy, origin: &str) -> bool {
    if policy
        .exact_origins
        .iter()
        .any(|o| o.eq_ignore_ascii_case(origin))
    {
        return true;
    }
    policy.wildcard_origins.iter().any(|(scheme, suffix)| {
        let Some(rest) = strip_prefix_ignore_case(origin, scheme) else {
            return false;
        };
        let Some(label) = strip_suffix_ignore_case(rest, suffix) else {
            return false;
        };
        is_dns_label(label)
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn strip_suffix_ignore_case<'a>(s: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = s.len().checked_sub(suffix.len())?;
    let tail = s.get(cut..)?;
    tail.eq_ignore_ascii_case(suffix).then(|| &s[..cut])
}

fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// True for an OPTIONS request with Origin and Access-Control-Request-Method.
pub fn is_preflight(method: &Method, request_headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && request_headers.contains_key(http::header::ORIGIN)
        && request_headers.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// Headers of the proxy's 204 answer to a preflight from an allowed origin.
pub fn preflight_headers(policy: &CorsPolicy, origin: &HeaderValue, out: &mut HeaderMap) {
    allow_origin(policy, origin, out);
    out.insert(ACCESS_CONTROL_ALLOW_METHODS, policy.allow_methods.clone());
    out.insert(ACCESS_CONTROL_ALLOW_HEADERS, policy.allow_headers.clone());
    out.insert(ACCESS_CONTROL_MAX_AGE, policy.max_age.clone());
}

/// Add CORS headers for an allowed origin to any response (relayed or proxy-made).
pub fn apply(policy: &CorsPolicy, origin: &HeaderValue, out: &mut HeaderMap) {
    allow_origin(policy, origin, out);
    if let Some(expose) = &policy.expose_headers {
        out.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
    }
}

/// Remove every `Access-Control-*` header the upstream sent; call on each relayed
/// response of a route with a CORS policy, before [`apply`].
pub fn strip_upstream(out: &mut HeaderMap) {
    let names: Vec<_> = out
        .keys()
        .filter(|name| name.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for name in names {
        out.remove(name);
    }
}

fn allow_origin(policy: &CorsPolicy, origin: &HeaderValue, out: &mut HeaderMap) {
    let any = policy.allow_any_origin || origin == ANY;
    out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    if policy.allow_credentials && !any {
        out.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
    }
    if !any {
        add_vary_origin(out);
    }
}

/// Append `Origin` to `Vary` unless it is already there (or `Vary: *`); keep whatever
/// the upstream listed.
fn add_vary_origin(out: &mut HeaderMap) {
    let present = out.get_all(VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.eq_ignore_ascii_case("origin"))
        })
    });
    if !present {
        out.append(VARY, ORIGIN_VARY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CorsPolicy {
        CorsPolicy {
            allow_any_origin: false,
            exact_origins: vec!["https://app.example.com".into()],
            wildcard_origins: vec![("https://".into(), ".example.org".into())],
            allow_methods: HeaderValue::from_static("GET, POST, OPTIONS"),
            allow_headers: HeaderValue::from_static("Authorization, Content-Type"),
            expose_headers: None,
            allow_credentials: false,
            max_age: HeaderValue::from_static("86400"),
        }
    }

    fn origin(o: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(ORIGIN, HeaderValue::from_str(o).unwrap());
        h
    }

    #[test]
    fn exact_and_one_label_wildcard_origins() {
        let p = policy();
        let ok = |o: &str| allowed_origin(&p, &origin(o)).is_some();
        assert!(ok("https://app.example.com"));
        assert!(
            ok("HTTPS://APP.example.com"),
            "scheme and host are case-insensitive"
        );
        assert!(!ok("http://app.example.com"), "scheme matters");
        assert!(!ok("https://app.example.com:8443"), "port matters");
        assert!(!ok("https://evil.com"));
        assert!(!ok("https://app.example.com.evil.com"));
        assert!(ok("https://a.example.org"));
        assert!(!ok("https://example.org"), "wildcard needs one label");
        assert!(!ok("https://a.b.example.org"), "exactly one label");
        assert!(!ok("https://.example.org"));
        assert!(!ok("http://a.example.org"));
        assert!(!ok("https://evil.com/.example.org"));
        assert!(!ok("null"));
        assert!(allowed_origin(&p, &HeaderMap::new()).is_none());
        let mut two = origin("https://app.example.com");
        two.append(ORIGIN, HeaderValue::from_static("https://app.example.com"));
        assert!(allowed_origin(&p, &two).is_none());
        // The value echoed is the request's, byte for byte.
        assert_eq!(
            allowed_origin(&p, &origin("https://a.example.org")).unwrap(),
            "https://a.example.org"
        );
    }

    #[test]
    fn preflight_detection() {
        let mut h = origin("https://app.example.com");
        assert!(!is_preflight(&Method::OPTIONS, &h));
        h.insert(
            http::header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        assert!(is_preflight(&Method::OPTIONS, &h));
        assert!(!is_preflight(&Method::POST, &h));
    }

    #[test]
    fn preflight_header_set() {
        let mut p = policy();
        p.allow_credentials = true;
        let o = HeaderValue::from_static("https://app.example.com");
        let mut out = HeaderMap::new();
        preflight_headers(&p, &o, &mut out);
        assert_eq!(out[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(out[ACCESS_CONTROL_ALLOW_METHODS], "GET, POST, OPTIONS");
        assert_eq!(
            out[ACCESS_CONTROL_ALLOW_HEADERS],
            "Authorization, Content-Type"
        );
        assert_eq!(out[ACCESS_CONTROL_MAX_AGE], "86400");
        assert_eq!(out[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(out[VARY], "Origin");
        assert!(!out.contains_key(ACCESS_CONTROL_EXPOSE_HEADERS));
    }

    #[test]
    fn response_headers_append_vary_and_expose() {
        let mut p = policy();
        p.expose_headers = Some(HeaderValue::from_static("X-Request-ID"));
        let o = HeaderValue::from_static("https://app.example.com");
        let mut out = HeaderMap::new();
        out.insert(VARY, HeaderValue::from_static("Accept-Encoding"));
        apply(&p, &o, &mut out);
        assert_eq!(out[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(out[ACCESS_CONTROL_EXPOSE_HEADERS], "X-Request-ID");
        let vary: Vec<_> = out.get_all(VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);
        assert!(!out.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
        assert!(!out.contains_key(ACCESS_CONTROL_ALLOW_METHODS));
        // Applying twice (e.g. a proxy-made error) does not duplicate Vary.
        apply(&p, &o, &mut out);
        assert_eq!(out.get_all(VARY).iter().count(), 2);
    }

    #[test]
    fn any_origin_sends_star_and_never_credentials() {
        let mut p = policy();
        p.allow_any_origin = true;
        p.allow_credentials = true;
        let o = allowed_origin(&p, &origin("https://whoever.net")).unwrap();
        assert_eq!(o, "*");
        let mut out = HeaderMap::new();
        apply(&p, &o, &mut out);
        assert_eq!(out[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(!out.contains_key(ACCESS_CONTROL_ALLOW_CREDENTIALS));
        assert!(!out.contains_key(VARY));
    }

    #[test]
    fn upstream_cors_headers_are_removed() {
        let mut out = HeaderMap::new();
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, ANY);
        out.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
        out.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        strip_upstream(&mut out);
        assert_eq!(out.len(), 1);
        assert!(out.contains_key(http::header::CONTENT_TYPE));
    }
}
