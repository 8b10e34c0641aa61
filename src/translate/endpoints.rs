//! Backend resolution: Services through EndpointSlices, and fixed URLs.
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use http::{HeaderValue, Uri};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::{Objects, Problem, Severity, namespace_of};
use crate::config::{Backend, Endpoints, Upstream, UpstreamProtocol};

const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Objects that routes refer to, indexed by namespace and name.
///
/// Also remembers, for one translation, each backend already resolved: thousands of
/// routes often name the same Service or URL, and resolving one (endpoint slices, URL
/// parsing, labels) cost more than the rest of the route. Every route still gets its
/// own [`Upstream`] (and round-robin cursor), as without the memo.
pub struct Refs<'a> {
    services: HashMap<(&'a str, &'a str), &'a Service>,
    slices: HashMap<(&'a str, &'a str), Vec<&'a EndpointSlice>>,
    secrets: HashMap<(&'a str, &'a str), &'a Secret>,
    resolved: RefCell<HashMap<ServiceKey, Result<Upstream, Unresolved>>>,
    urls: RefCell<HashMap<String, Result<Upstream, String>>>,
}

/// A Service backend as asked for: namespace, name, port, protocol override.
type ServiceKey = (String, String, Result<i32, String>, Option<u8>);

/// A Service port as written by the user.
#[derive(Debug, Clone, Copy)]
pub enum PortRef<'a> {
    Number(i32),
    Name(&'a str),
}

/// Why a Service backend could not be resolved. The route still exists and answers
/// `status`, so users see a clear error instead of another route's content.
#[derive(Debug, Clone)]
pub struct Unresolved {
    pub status: u16,
    pub message: String,
    pub severity: Severity,
    pub problem: Problem,
    pub reason: &'static str,
}

impl Unresolved {
    pub fn backend(&self) -> Backend {
        Backend::Unavailable {
            status: self.status,
            message: self.message.as_str().into(),
        }
    }
}

impl<'a> Refs<'a> {
    pub fn new(objects: &'a Objects) -> Self {
        let mut services = HashMap::new();
        for s in &objects.services {
            if let Some(name) = s.metadata.name.as_deref() {
                services.insert((namespace_of(&s.metadata), name), &**s);
            }
        }
        let mut slices: HashMap<_, Vec<_>> = HashMap::new();
        for es in &objects.endpoint_slices {
            let svc = es
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let Some(svc) = svc {
                slices
                    .entry((namespace_of(&es.metadata), svc.as_str()))
                    .or_default()
                    .push(&**es);
            }
        }
        let mut secrets = HashMap::new();
        for s in &objects.secrets {
            if let Some(name) = s.metadata.name.as_deref() {
                secrets.insert((namespace_of(&s.metadata), name), &**s);
            }
        }
        Refs {
            services,
            slices,
            secrets,
            resolved: RefCell::default(),
            urls: RefCell::default(),
        }
    }

    /// [`Refs::resolve_uncached`], once per distinct backend within a translation.
    pub fn resolve_service(
        &self,
        namespace: &str,
        name: &str,
        port: PortRef<'_>,
        protocol: Option<UpstreamProtocol>,
    ) -> Result<Upstream, Unresolved> {
        let port_key = match port {
            PortRef::Number(n) => Ok(n),
            PortRef::Name(n) => Err(n.to_string()),
        };
        // `UpstreamProtocol` is not `Hash`; its discriminant is enough for a key.
        let protocol_key = protocol.map(|p| p as u8);
        let key = (
            namespace.to_string(),
            name.to_string(),
            port_key,
            protocol_key,
        );
        memoized(&self.resolved, key, || {
            self.resolve_uncached(namespace, name, port, protocol)
        })
    }

    /// A route's `url` backend: [`url_upstream`], refusing a query (the client's query
    /// is forwarded). Once per distinct URL within a translation.
    pub fn url_backend(&self, url: &str) -> Result<Upstream, String> {
        memoized(&self.urls, url.to_string(), || {
            parse_url(url).and_then(|p| match p.query {
                Some(_) => Err(format!(
                    "URL {url:?} must not have a query; the client's query is forwarded"
                )),
                None => url_upstream(url, url),
            })
        })
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<&'a Secret> {
        self.secrets.get(&(namespace, name)).copied()
    }

    /// Resolve `namespace/name:port` to ready endpoint addresses. With `protocol`
    /// `None`, the Service port's `appProtocol` decides (`https`, `kubernetes.io/h2c`...),
    /// plain HTTP otherwise.
    fn resolve_uncached(
        &self,
        namespace: &str,
        name: &str,
        port: PortRef<'_>,
        protocol: Option<UpstreamProtocol>,
    ) -> Result<Upstream, Unresolved> {
        let port_label = match port {
            PortRef::Number(n) => n.to_string(),
            PortRef::Name(n) => n.to_string(),
        };
        let label = format!("{namespace}/{name}:{port_label}");
        let Some(svc) = self.services.get(&(namespace, name)) else {
            return Err(Unresolved {
                status: 503,
                message: format!("service {namespace}/{name} not found"),
                severity: Severity::Error,
                problem: Problem::RefNotFound,
                reason: "ServiceNotFound",
            });
        };
        let spec = svc.spec.as_ref();
        let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
        let svc_port = ports.iter().find(|p| match port {
            PortRef::Number(n) => p.port == n,
            PortRef::Name(n) => p.name.as_deref() == Some(n),
        });

        let protocol = protocol.unwrap_or_else(|| {
            match svc_port
                .and_then(|p| p.app_protocol.as_deref())
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("https" | "kubernetes.io/wss") => UpstreamProtocol::Https,
                Some("h2c" | "kubernetes.io/h2c" | "grpc") => UpstreamProtocol::H2c,
                _ => UpstreamProtocol::Http,
            }
        });

        // ExternalName Services have no endpoints: connect to the DNS name.
        if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
            let host = spec
                .and_then(|s| s.external_name.clone())
                .unwrap_or_default();
            let number = match (port, svc_port) {
                (PortRef::Number(n), _) => Some(n),
                (PortRef::Name(_), Some(p)) => Some(p.port),
                (PortRef::Name(_), None) => None,
            };
            return match (host.is_empty(), number.and_then(|n| u16::try_from(n).ok())) {
                (false, Some(port)) if port != 0 => Ok(Upstream::new(
                    label,
                    protocol,
                    Endpoints::Dns { host, port },
                )),
                _ => Err(Unresolved {
                    status: 503,
                    message: format!(
                        "ExternalName service {namespace}/{name} has no externalName or no port {port_label}"
                    ),
                    severity: Severity::Error,
                    problem: Problem::RefNotFound,
                    reason: "ServicePortNotFound",
                }),
            };
        }

        let Some(svc_port) = svc_port else {
            return Err(Unresolved {
                status: 503,
                message: format!("service {namespace}/{name} has no port {port_label}"),
                severity: Severity::Error,
                problem: Problem::RefNotFound,
                reason: "ServicePortNotFound",
            });
        };
        let wanted_name = svc_port.name.as_deref().unwrap_or("");

        // BTreeSet: deterministic order and no duplicates across slices.
        let mut addrs = BTreeSet::new();
        for es in self.slices.get(&(namespace, name)).into_iter().flatten() {
            let fqdn = es.address_type == "FQDN";
            let Some(target) = es
                .ports
                .as_deref()
                .unwrap_or_default()
                .iter()
                .find(|p| {
                    p.name.as_deref().unwrap_or("") == wanted_name
                        && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
                })
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
            else {
                continue;
            };
            for ep in &es.endpoints {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready);
                if ready == Some(false) {
                    continue;
                }
                for a in &ep.addresses {
                    let ip = if fqdn {
                        loopback_name(a)
                    } else {
                        a.parse::<IpAddr>().ok()
                    };
                    if let Some(ip) = ip {
                        addrs.insert(SocketAddr::new(ip, target));
                    }
                }
            }
        }
        if addrs.is_empty() {
            return Err(Unresolved {
                status: 503,
                message: format!("no ready endpoints for service {label}"),
                severity: Severity::Warning,
                problem: Problem::RefNotFound,
                reason: "NoReadyEndpoints",
            });
        }
        Ok(Upstream::new(
            label,
            protocol,
            Endpoints::Static(addrs.into_iter().collect()),
        ))
    }
}

/// FQDN endpoints are only followed for `localhost` names: RFC 6761 §6.3 asks
/// resolvers to answer `localhost` and `*.localhost` with the loopback address, so no
/// lookup is needed and translation stays pure. The API server refuses loopback IPs in
/// EndpointSlices, so this is how a node-local backend (and the e2e suite) is published.
/// Other FQDN endpoints are skipped.
fn loopback_name(name: &str) -> Option<IpAddr> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    (name == "localhost" || name.ends_with(".localhost"))
        .then_some(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// A new upstream like `u`, with its own round-robin cursor.
/// `resolve()` once per key within a translation; every caller gets its own copy of the
/// upstream (own round-robin cursor).
fn memoized<K: std::hash::Hash + Eq, E: Clone>(
    cache: &RefCell<HashMap<K, Result<Upstream, E>>>,
    key: K,
    resolve: impl FnOnce() -> Result<Upstream, E>,
) -> Result<Upstream, E> {
    let copy = |r: &Result<Upstream, E>| r.as_ref().map(copy_upstream).map_err(Clone::clone);
    if let Some(r) = cache.borrow().get(&key) {
        return copy(r);
    }
    let r = resolve();
    let out = copy(&r);
    cache.borrow_mut().insert(key, r);
    out
}

fn copy_upstream(u: &Upstream) -> Upstream {
    Upstream {
        name: u.name.clone(),
        protocol: u.protocol,
        endpoints: u.endpoints.clone(),
        base_path: u.base_path.clone(),
        host_override: u.host_override.clone(),
        tls_server_name: u.tls_server_name.clone(),
        next: AtomicUsize::new(0),
    }
}

/// A parsed `http(s)://host[:port][/path][?query]` URL.
#[derive(Debug, Clone)]
pub struct ParsedUrl {
    pub https: bool,
    /// Host without brackets (`::1` for `[::1]`), lower case.
    pub host: String,
    pub port: u16,
    /// `host[:port]` exactly as written, for the Host header.
    pub authority: String,
    /// Path without trailing slash; empty for `/` or no path.
    pub base_path: String,
    pub query: Option<String>,
}

/// Parse an upstream URL. Userinfo and fragments are refused.
pub fn parse_url(url: &str) -> Result<ParsedUrl, String> {
    let example = "write e.g. http://10.0.0.1:8080/v1 or https://api.example.com";
    let uri: Uri = url
        .trim()
        .parse()
        .map_err(|e| format!("invalid URL {url:?} ({e}); {example}"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(format!("URL {url:?} must start with http:// or https://")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("URL {url:?} has no host; {example}"))?;
    if authority.as_str().contains('@') {
        return Err(format!(
            "URL {url:?} must not contain user info; pass credentials in headers"
        ));
    }
    if url.contains('#') {
        return Err(format!("URL {url:?} must not contain a fragment"));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if host.is_empty() {
        return Err(format!("URL {url:?} has no host; {example}"));
    }
    // `Authority::port` silently ignores ports that do not fit in u16; check by hand.
    let a = authority.as_str();
    let after_host = match a.strip_prefix('[') {
        Some(r) => r.split_once(']').map_or("", |(_, rest)| rest),
        None => a.find(':').map_or("", |i| &a[i..]),
    };
    let port = match after_host.strip_prefix(':') {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("URL {url:?} has an invalid port"))?,
        None if https => 443,
        None => 80,
    };
    let base_path = uri.path().trim_end_matches('/').to_string();
    Ok(ParsedUrl {
        https,
        host,
        port,
        authority: authority.as_str().to_string(),
        base_path,
        query: uri.query().map(str::to_string),
    })
}

/// An upstream for a fixed URL (AIRoute `backend.url`, `auth-url`). The URL's path
/// becomes `base_path`; a query, if any, is not part of the upstream (see [`parse_url`]).
/// The Host header is the URL's authority, and https upstreams get it as SNI name.
pub fn url_upstream(name: &str, url: &str) -> Result<Upstream, String> {
    let parsed = parse_url(url)?;
    let endpoints = match parsed.host.parse::<IpAddr>() {
        Ok(ip) => Endpoints::Static(vec![SocketAddr::new(ip, parsed.port)]),
        Err(_) => Endpoints::Dns {
            host: parsed.host.clone(),
            port: parsed.port,
        },
    };
    let host_override = HeaderValue::from_str(&parsed.authority)
        .map_err(|_| format!("URL {url:?} has a host that is not a valid Host header"))?;
    Ok(Upstream {
        name: name.into(),
        protocol: if parsed.https {
            UpstreamProtocol::Https
        } else {
            UpstreamProtocol::Http
        },
        endpoints,
        base_path: parsed.base_path,
        host_override: Some(host_override),
        tls_server_name: parsed.https.then(|| parsed.host.clone()),
        next: AtomicUsize::new(0),
    })
}

/// Shared helper: an `Arc<Upstream>` as a route backend.
pub fn upstream_backend(u: Upstream) -> Backend {
    Backend::Upstream(Arc::new(u))
}
