//! The routing snapshot: the only type the control side and the data side share.
//!
//! A [`Config`] is plain data built off the request path by `translate` and published in
//! one atomic swap. The proxy only reads it: [`Config::find_route`] returns a reference
//! into the table and allocates nothing.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;
use regex::Regex;
use rustls::sign::CertifiedKey;

/// One complete routing snapshot.
#[derive(Debug, Default)]
pub struct Config {
    /// Virtual hosts by host name; see [`Config::find_vhost`].
    pub vhosts: Vec<VirtualHost>,
    /// Exact host name (lower case, no port) -> index into `vhosts`.
    pub exact_hosts: HashMap<String, usize>,
    /// Wildcard suffix (`example.com` for `*.example.com`) -> index into `vhosts`.
    pub wildcard_hosts: HashMap<String, usize>,
    /// Index of the virtual host for routes with no host (any host).
    pub any_host: Option<usize>,
    /// Served when no virtual host and no route matches (an Ingress `defaultBackend`).
    pub default_route: Option<Arc<Route>>,
    /// Server certificates, chosen by SNI.
    pub certs: Certificates,
    /// Rate-limit zones; [`RateLimit::zone`] indexes this.
    pub zones: Vec<ZoneSpec>,
}

/// All routes for one host name.
#[derive(Debug, Default)]
pub struct VirtualHost {
    /// `example.com`, `*.example.com`, or empty for any host.
    pub host: String,
    /// Exact-path routes by path.
    pub exact: HashMap<String, Arc<Route>>,
    /// Prefix routes by normalised prefix (no trailing slash; `/` stays `/`).
    /// Lookup walks the request path's element boundaries from longest to shortest, so
    /// it costs one hash probe per path segment, never a scan of the routes.
    pub prefix: HashMap<String, Arc<Route>>,
    /// Regex routes (ingress-nginx `use-regex`), tried in order before prefixes.
    pub regex: Vec<Arc<Route>>,
    /// Route used when nothing in this host matched (the Ingress `defaultBackend`).
    pub fallback: Option<Arc<Route>>,
}

/// A matched route: where to send the request and what to do on the way.
#[derive(Debug)]
pub struct Route {
    /// Stable label for logs and metrics, e.g. `airroute/ai/ai-stack/tts`.
    pub name: Arc<str>,
    pub path: PathMatch,
    pub backend: Backend,
    pub policy: RoutePolicy,
    /// This route's metric children, resolved on first use.
    pub metrics: crate::telemetry::metrics::RouteMetrics,
}

#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(String),
    /// Element-wise prefix, stored without its trailing slash (`/` for the root).
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug)]
pub enum Backend {
    Upstream(Arc<Upstream>),
    /// The backend could not be resolved (missing Service, no ready endpoints...).
    /// Requests get `status` with `message` in an OpenAI-shaped error body.
    Unavailable {
        status: u16,
        message: Arc<str>,
    },
}

/// Where an upstream lives and how to talk to it.
#[derive(Debug)]
pub struct Upstream {
    /// Label for logs/metrics: `ns/service:port` or the URL.
    pub name: Arc<str>,
    pub protocol: UpstreamProtocol,
    pub endpoints: Endpoints,
    /// Path prefix to prepend (from a `url` backend such as `http://host/v1`), no trailing slash.
    pub base_path: String,
    /// Host header to send instead of the client's (for `url` backends); `None` preserves it.
    pub host_override: Option<HeaderValue>,
    /// Server name for TLS to the upstream (SNI); certificates are not verified, as
    /// nginx's `proxy_ssl_verify off` default.
    pub tls_server_name: Option<String>,
    /// Round-robin cursor over `endpoints`.
    pub next: AtomicUsize,
}

impl Upstream {
    /// An upstream with no base path, Host override or TLS server name.
    pub fn new(
        name: impl Into<Arc<str>>,
        protocol: UpstreamProtocol,
        endpoints: Endpoints,
    ) -> Self {
        Upstream {
            name: name.into(),
            protocol,
            endpoints,
            base_path: String::new(),
            host_override: None,
            tls_server_name: None,
            next: AtomicUsize::new(0),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpstreamProtocol {
    #[default]
    Http,
    Https,
    /// HTTP/2 with prior knowledge (ingress-nginx `backend-protocol: GRPC`/`H2C`).
    H2c,
    /// HTTP/2 over TLS (`GRPCS`).
    H2,
}

#[derive(Debug, Clone)]
pub enum Endpoints {
    /// Resolved addresses (ready EndpointSlice endpoints, or a URL with an IP).
    Static(Vec<SocketAddr>),
    /// A host name resolved at connect time (a `url` backend).
    Dns { host: String, port: u16 },
}

/// Everything a route does besides forwarding.
#[derive(Debug, Clone)]
pub struct RoutePolicy {
    pub rewrite: PathRewrite,
    /// `None` means unlimited.
    pub max_body_size: Option<u64>,
    pub timeouts: Timeouts,
    /// Never buffer responses (always true today; kept for `proxy-buffering`).
    pub streaming: bool,
    pub websocket: bool,
    /// Answer plain-HTTP requests with this redirect status to https (308, or 301/308 for annotations).
    pub https_redirect: Option<u16>,
    pub security_headers: bool,
    pub cors: Option<Arc<CorsPolicy>>,
    pub rate_limit: Option<RateLimit>,
    pub auth: Option<Arc<AuthHookPolicy>>,
    /// `whitelist-source-range`: only these client networks; others get 403.
    pub allow_sources: Option<Arc<[IpNet]>>,
}

impl Default for RoutePolicy {
    fn default() -> Self {
        RoutePolicy {
            rewrite: PathRewrite::None,
            max_body_size: Some(DEFAULT_MAX_BODY_SIZE),
            timeouts: Timeouts::default(),
            streaming: true,
            websocket: true,
            https_redirect: None,
            security_headers: false,
            cors: None,
            rate_limit: None,
            auth: None,
            allow_sources: None,
        }
    }
}

/// ingress-nginx's default `proxy-body-size` is 1m; AI uploads need more, so AIRoute and
/// airgate default to 100Mi unless a route says otherwise (documented in docs/).
pub const DEFAULT_MAX_BODY_SIZE: u64 = 100 * 1024 * 1024;

#[derive(Debug, Clone)]
pub enum PathRewrite {
    None,
    /// Remove this prefix (no trailing slash) and keep the rest, always starting with `/`.
    StripPrefix(String),
    /// ingress-nginx `rewrite-target` with `use-regex`: replace the regex match with the
    /// template (`$1`, `$2`...).
    Regex {
        regex: Regex,
        replacement: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Longest silence between two reads from the upstream (also the WebSocket idle limit).
    pub read: Duration,
    /// Longest silence between two writes to the upstream.
    pub send: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(300),
            send: Duration::from_secs(60),
        }
    }
}

/// CORS policy with header values prepared at translation time.
#[derive(Debug, Clone)]
pub struct CorsPolicy {
    /// `*` allowed (never combined with credentials).
    pub allow_any_origin: bool,
    /// Exact origins, lower-cased (`https://app.example.com`).
    pub exact_origins: Vec<String>,
    /// One-label wildcard origins as (scheme + "://", suffix) e.g. ("https://", ".example.com").
    pub wildcard_origins: Vec<(String, String)>,
    pub allow_methods: HeaderValue,
    pub allow_headers: HeaderValue,
    pub expose_headers: Option<HeaderValue>,
    pub allow_credentials: bool,
    pub max_age: HeaderValue,
}

/// A route's use of a rate-limit zone (nginx `limit_req`).
#[derive(Debug, Clone)]
pub struct RateLimit {
    /// Index into [`Config::zones`].
    pub zone: usize,
    pub burst: u32,
    pub nodelay: bool,
    /// 429 for AIRoute, 503 for ingress-nginx annotations (their default).
    pub reject_status: u16,
    /// Clients exempt from the limit (`limit-whitelist`).
    pub exempt: Option<Arc<[IpNet]>>,
}

/// A rate-limit zone (nginx `limit_req_zone`). State lives outside the snapshot, keyed by
/// `id`, so counters survive reconfiguration while a zone with the same id and rate exists.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneSpec {
    /// `namespace/object/zone`; unique per zone.
    pub id: Arc<str>,
    /// Requests allowed per `per`.
    pub requests: u32,
    pub per: Duration,
    pub key: ZoneKey,
    /// Memory bound in bytes.
    pub size_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZoneKey {
    ClientIp,
    /// Requests without the header are keyed by client IP.
    Header(HeaderName),
}

/// nginx `auth_request`, resolved.
#[derive(Debug)]
pub struct AuthHookPolicy {
    /// Identity for the hook's cache and metrics: `namespace/object`.
    pub id: Arc<str>,
    pub upstream: Arc<Upstream>,
    /// Path and query of the hook request.
    pub path_and_query: String,
    /// The hook request's URI and `Host`, prepared from `path_and_query` and `upstream`
    /// by [`HookTarget::new`].
    pub target: HookTarget,
    pub method: Method,
    pub forward_headers: Vec<HeaderName>,
    pub copy_headers: Vec<HeaderName>,
    pub timeout: Duration,
    pub cache: Option<AuthCachePolicy>,
    /// Status when the hook fails (500 like nginx, or 503).
    pub failure_status: u16,
    pub metrics: crate::telemetry::metrics::AuthHookMetrics,
}

/// What every sub-request of a hook sends the same way, built once per snapshot.
#[derive(Debug, Clone)]
pub struct HookTarget {
    /// `path_and_query` as a URI.
    pub uri: http::Uri,
    /// `Host`: the URL's host and port (a URL hook), else the first endpoint's address.
    pub host: Option<HeaderValue>,
}

impl HookTarget {
    pub fn new(upstream: &Upstream, path_and_query: &str) -> Result<HookTarget, String> {
        let uri = http::Uri::try_from(path_and_query)
            .ok()
            .filter(|u| u.path().starts_with('/') && u.authority().is_none())
            .ok_or_else(|| format!("{path_and_query:?} is not a valid request path"))?;
        let host = match (&upstream.host_override, &upstream.endpoints) {
            (Some(host), _) => Some(host.clone()),
            (None, Endpoints::Dns { host, port }) => {
                HeaderValue::from_str(&format!("{host}:{port}")).ok()
            }
            (None, Endpoints::Static(addrs)) => addrs
                .first()
                .and_then(|a| HeaderValue::from_str(&a.to_string()).ok()),
        };
        Ok(HookTarget { uri, host })
    }
}

#[derive(Debug, Clone)]
pub struct AuthCachePolicy {
    pub ttl: Duration,
    pub key: Vec<HeaderName>,
}

/// Server certificates by SNI name.
#[derive(Debug, Default, Clone)]
pub struct Certificates {
    pub exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*.`.
    pub wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl Certificates {
    pub fn find(&self, server_name: &str) -> Option<&Arc<CertifiedKey>> {
        if let Some(c) = self.exact.get(server_name) {
            return Some(c);
        }
        let (_, suffix) = server_name.split_once('.')?;
        self.wildcard.get(suffix)
    }
}

impl Config {
    /// The virtual host for a request's host (lower case, port removed): exact name
    /// first, then a one-label wildcard, then the any-host routes.
    pub fn find_vhost(&self, host: &str) -> Option<&VirtualHost> {
        let idx = self
            .exact_hosts
            .get(host)
            .or_else(|| {
                host.split_once('.')
                    .and_then(|(_, suffix)| self.wildcard_hosts.get(suffix))
            })
            .or(self.any_host.as_ref())?;
        self.vhosts.get(*idx)
    }

    /// Every route of the snapshot (a route shared by several hosts or paths may come
    /// more than once).
    pub fn routes(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.vhosts
            .iter()
            .flat_map(|v| {
                v.exact
                    .values()
                    .chain(v.prefix.values())
                    .chain(v.regex.iter())
                    .chain(v.fallback.iter())
            })
            .chain(self.default_route.iter())
    }

    /// The route for a request: Exact beats regex beats Prefix, longest prefix wins,
    /// then the host's fallback, then the global default backend.
    pub fn find_route(&self, host: &str, path: &str) -> Option<&Arc<Route>> {
        match self.find_vhost(host) {
            Some(vhost) => vhost.find(path).or(self.default_route.as_ref()),
            None => self.default_route.as_ref(),
        }
    }
}

impl VirtualHost {
    pub fn find(&self, path: &str) -> Option<&Arc<Route>> {
        if let Some(r) = self.exact.get(path) {
            return Some(r);
        }
        if let Some(r) = self.regex.iter().find(|r| match &r.path {
            PathMatch::Regex(re) => re.is_match(path),
            _ => false,
        }) {
            return Some(r);
        }
        if !self.prefix.is_empty() {
            // Element-wise: try the whole path (minus a trailing slash), then each
            // shorter prefix ending at a `/` boundary, then the root.
            let mut candidate = path.strip_suffix('/').unwrap_or(path);
            loop {
                if candidate.is_empty() {
                    break;
                }
                if let Some(r) = self.prefix.get(candidate) {
                    return Some(r);
                }
                match candidate.rfind('/') {
                    Some(i) => candidate = &candidate[..i],
                    None => break,
                }
            }
            if let Some(r) = self.prefix.get("/") {
                return Some(r);
            }
        }
        self.fallback.as_ref()
    }
}

/// Normalise a Prefix path for the `prefix` map: strip trailing slashes, keep `/`.
pub fn normalize_prefix(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, path: PathMatch) -> Arc<Route> {
        Arc::new(Route {
            name: name.into(),
            path,
            backend: Backend::Unavailable {
                status: 503,
                message: "test".into(),
            },
            policy: RoutePolicy::default(),
            metrics: Default::default(),
        })
    }

    fn vhost(host: &str, prefixes: &[&str]) -> VirtualHost {
        let mut vh = VirtualHost {
            host: host.into(),
            ..VirtualHost::default()
        };
        for p in prefixes {
            let key = normalize_prefix(p);
            vh.prefix.insert(
                key.clone(),
                route(&format!("{host}{p}"), PathMatch::Prefix(key)),
            );
        }
        vh
    }

    fn name(c: &Config, host: &str, path: &str) -> Option<String> {
        c.find_route(host, path).map(|r| r.name.to_string())
    }

    #[test]
    fn host_precedence_exact_then_wildcard_then_any() {
        let mut c = Config {
            vhosts: vec![
                vhost("a.example.com", &["/"]),
                vhost("*.example.com", &["/"]),
                vhost("", &["/"]),
            ],
            ..Config::default()
        };
        c.exact_hosts.insert("a.example.com".into(), 0);
        c.wildcard_hosts.insert("example.com".into(), 1);
        c.any_host = Some(2);
        c.default_route = Some(route("default", PathMatch::Prefix("/".into())));
        assert_eq!(name(&c, "a.example.com", "/x").unwrap(), "a.example.com/");
        assert_eq!(name(&c, "b.example.com", "/x").unwrap(), "*.example.com/");
        assert_eq!(name(&c, "example.com", "/x").unwrap(), "/");
        assert_eq!(name(&c, "a.b.example.com", "/x").unwrap(), "/");
        c.any_host = None;
        assert_eq!(name(&c, "other.test", "/x").unwrap(), "default");
    }

    #[test]
    fn exact_then_regex_then_prefix_then_fallback() {
        let mut vh = vhost("h", &["/", "/v1"]);
        vh.exact.insert(
            "/v1/models".into(),
            route("exact", PathMatch::Exact("/v1/models".into())),
        );
        let re = regex::RegexBuilder::new("^/v1/chat/.*")
            .case_insensitive(true)
            .build()
            .unwrap();
        vh.regex.push(route("regex", PathMatch::Regex(re)));
        let mut c = Config {
            vhosts: vec![vh],
            ..Config::default()
        };
        c.exact_hosts.insert("h".into(), 0);
        assert_eq!(name(&c, "h", "/v1/models").unwrap(), "exact");
        assert_eq!(name(&c, "h", "/v1/models/x").unwrap(), "h/v1");
        assert_eq!(name(&c, "h", "/V1/CHAT/completions").unwrap(), "regex");
        assert_eq!(name(&c, "h", "/v1").unwrap(), "h/v1");
        assert_eq!(name(&c, "h", "/v2").unwrap(), "h/");
        assert_eq!(name(&c, "h", "").unwrap(), "h/");

        let mut vh = vhost("h", &["/api"]);
        vh.fallback = Some(route("fallback", PathMatch::Prefix("/".into())));
        let mut c = Config {
            vhosts: vec![vh],
            ..Config::default()
        };
        c.exact_hosts.insert("h".into(), 0);
        c.default_route = Some(route("default", PathMatch::Prefix("/".into())));
        assert_eq!(name(&c, "h", "/other").unwrap(), "fallback");
        assert_eq!(name(&c, "elsewhere", "/api").unwrap(), "default");
    }

    #[test]
    fn normalize_prefix_keeps_root() {
        assert_eq!(normalize_prefix("/"), "/");
        assert_eq!(normalize_prefix("///"), "/");
        assert_eq!(normalize_prefix("/a/b/"), "/a/b");
        assert_eq!(normalize_prefix(""), "/");
    }
}
