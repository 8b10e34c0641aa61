//! Request and response header handling: host parsing, hop-by-hop stripping (RFC 9110
//! §7.6.1), forwarding headers and request ids.
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::Authority;
use ipnet::IpNet;

/// Headers that describe one connection, never forwarded (besides those `Connection`
/// names). `Upgrade` and `Connection` are put back for a forwarded WebSocket handshake.
/// A `static`, not a `const`: a `const` array is built and dropped at every use, and the
/// check below uses it once per header field (~250 instructions per proxied request).
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's authority: `:authority` (h2, absolute-form) or `Host`, as sent (with
/// port), which is what the upstream sees as `Host` when it is preserved.
pub fn request_authority(parts: &Parts) -> Option<Authority> {
    match parts.uri.authority() {
        Some(a) => Some(a.clone()),
        None => {
            let raw = parts.headers.get(header::HOST)?;
            Authority::try_from(raw.as_bytes()).ok()
        }
    }
}

/// The host for routing: lower case, without port or trailing dot.
#[derive(Debug, Clone)]
pub enum RoutingHost {
    /// Already in that form: where it sits in `authority.as_str()` (no copy).
    InAuthority(std::ops::Range<usize>),
    /// A lower-cased copy.
    Lowered(String),
}

impl RoutingHost {
    pub fn of(authority: &Authority) -> Self {
        let whole = authority.as_str();
        let host = authority.host().trim_end_matches('.');
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            return RoutingHost::Lowered(host.to_ascii_lowercase());
        }
        // `host()` borrows from `as_str()`; the offset skips any `userinfo@`.
        let start = (host.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
        RoutingHost::InAuthority(start..start + host.len())
    }

    pub fn as_str<'a>(&'a self, authority: &'a Authority) -> &'a str {
        match self {
            RoutingHost::InAuthority(range) => authority.as_str().get(range.clone()).unwrap_or(""),
            RoutingHost::Lowered(host) => host,
        }
    }
}

/// True for an HTTP/1.1 `Connection: upgrade` request with an `Upgrade` header.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Remove hop-by-hop headers, including every header the `Connection` header names.
/// With `keep_upgrade`, the `Upgrade` header and `Connection: upgrade` survive.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    strip(headers, keep_upgrade, false);
}

/// [`strip_hop_by_hop`] for a request on its way upstream, which also loses `Expect`:
/// the proxy answers `Expect: 100-continue` itself (hyper does, when the body is first
/// read); passing it on would make the upstream send an interim response.
pub fn strip_request_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    strip(headers, keep_upgrade, true);
}

fn strip(headers: &mut HeaderMap, keep_upgrade: bool, request: bool) {
    // One pass over the names first: most messages carry none of these, and then
    // nothing is removed (every `remove` hashes its name).
    let present = headers.keys().any(|k| {
        HOP_BY_HOP.contains(k)
            || k == header::UPGRADE
            || (request && k == header::EXPECT)
            || k.as_str().starts_with("proxy-")
    });
    if present {
        remove_hop_by_hop(headers, keep_upgrade);
        if request {
            headers.remove(header::EXPECT);
        }
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .take(32)
        .collect();
    for name in named {
        if keep_upgrade && name == header::UPGRADE {
            continue;
        }
        headers.remove(&name);
    }
    for name in HOP_BY_HOP.iter() {
        headers.remove(name);
    }
    // Every Proxy-* header is addressed to a proxy, never to the origin.
    let proxy_named: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy_named {
        headers.remove(&name);
    }
    if !keep_upgrade {
        headers.remove(header::UPGRADE);
    }
}

/// HTTP/2 clients may split `Cookie` into several fields; HTTP/1.1 servers expect one
/// (RFC 9113 §8.2.3).
pub fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().count() < 2 {
        return;
    }
    let joined: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if let Ok(value) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, value);
    }
}

pub fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    trusted.iter().any(|n| n.contains(&ip))
}

/// The client's address: the peer, or, when the peer is a trusted proxy, the rightmost
/// `X-Forwarded-For` entry that is not itself trusted (nginx `real_ip_recursive on`).
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted: &[IpNet]) -> IpAddr {
    if !is_trusted(trusted, peer) {
        return peer;
    }
    let mut candidate = peer;
    let entries: Vec<IpAddr> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .take(64)
        .collect();
    for ip in entries.into_iter().rev() {
        candidate = ip;
        if !is_trusted(trusted, ip) {
            break;
        }
    }
    candidate
}

/// A client-supplied request id is kept when it is short and made of safe characters
/// (it ends up in logs and upstream headers); otherwise a new one is generated.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= 128
            && b.iter()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=".contains(b))
        {
            return v.clone();
        }
    }
    let mut buf = [0u8; uuid::fmt::Simple::LENGTH];
    let id = uuid::Uuid::new_v4().simple().encode_lower(&mut buf);
    HeaderValue::from_str(id).expect("hex digits are a valid header value")
}

/// The connection's addresses as header values, formatted once per connection rather
/// than for every request on it.
#[derive(Debug)]
pub struct ConnHeaders {
    /// The peer's IP (`X-Forwarded-For`, `X-Real-IP`).
    pub peer_ip: HeaderValue,
    /// The local port (`X-Forwarded-Port`).
    pub port: HeaderValue,
}

impl ConnHeaders {
    pub fn new(peer: IpAddr, port: u16) -> Self {
        ConnHeaders {
            peer_ip: ip_value(peer),
            port: HeaderValue::from(port),
        }
    }
}

pub fn ip_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_string()).expect("an IP address is a valid header value")
}

/// What the forwarding headers describe.
pub struct Forwarding<'a> {
    pub peer: IpAddr,
    pub conn: &'a ConnHeaders,
    /// `X-Real-IP`: see [`crate::proxy::pipeline::Ctx::client_ip_value`].
    pub client_ip_value: &'a HeaderValue,
    pub trusted_peer: bool,
    pub scheme: &'static str,
    pub host: &'a str,
    pub request_id: &'a HeaderValue,
}

/// Set `X-Real-IP`, `X-Forwarded-*` and `X-Request-ID`. Client-sent values are kept
/// (or appended to) only when the peer is a trusted proxy.
pub fn set_forwarding(headers: &mut HeaderMap, f: &Forwarding<'_>) {
    let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prior) if f.trusted_peer && !prior.trim().is_empty() => {
            HeaderValue::from_str(&format!("{prior}, {}", f.peer))
                .unwrap_or_else(|_| f.conn.peer_ip.clone())
        }
        _ => f.conn.peer_ip.clone(),
    };
    headers.insert(X_FORWARDED_FOR.clone(), xff);
    headers.insert(X_REAL_IP.clone(), f.client_ip_value.clone());
    let keep = |h: &HeaderMap, name: &HeaderName| f.trusted_peer && h.contains_key(name);
    if !keep(headers, &X_FORWARDED_PROTO) {
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(f.scheme),
        );
    }
    if !keep(headers, &X_FORWARDED_HOST) {
        insert(headers, &X_FORWARDED_HOST, f.host);
    }
    if !keep(headers, &X_FORWARDED_PORT) {
        headers.insert(X_FORWARDED_PORT.clone(), f.conn.port.clone());
    }
    headers.insert(X_REQUEST_ID.clone(), f.request_id.clone());
}

fn insert(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name.clone(), v);
    } else {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_connection_named_headers_and_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        h.insert("proxy-foo", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn routing_host_is_lower_case_without_port_userinfo_or_trailing_dot() {
        let host = |raw: &'static str| {
            let a = Authority::from_static(raw);
            RoutingHost::of(&a).as_str(&a).to_string()
        };
        assert_eq!(host("api.example.com:8443"), "api.example.com");
        assert_eq!(host("api.example.com."), "api.example.com");
        assert_eq!(host("API.Example.COM.:80"), "api.example.com");
        assert_eq!(host("user@api.example.com:80"), "api.example.com");
        assert_eq!(host("[::1]:8080"), "[::1]");
        assert_eq!(host("127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn joins_split_cookies() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        join_cookies(&mut h);
        assert_eq!(h.get_all(header::COOKIE).iter().count(), 1);
        assert_eq!(h[header::COOKIE], "a=1; b=2");
    }

    #[test]
    fn keeps_upgrade_for_handshake() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }

    #[test]
    fn client_ip_trusts_forwarded_for_only_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_FOR.clone(),
            HeaderValue::from_static("1.2.3.4, 10.0.0.7"),
        );
        assert_eq!(
            client_ip(&h, "10.0.0.1".parse().unwrap(), &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(&h, "192.0.2.1".parse().unwrap(), &trusted),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn request_id_rejects_unsafe_values() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(X_REQUEST_ID.clone(), HeaderValue::from_static("a b\"c"));
        assert_ne!(request_id(&h), "a b\"c");
    }
}
