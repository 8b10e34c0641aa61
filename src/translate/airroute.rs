//! AIRoute -> routes, zones, CORS and auth-hook policies, with DESIGN.md's defaults.
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

use super::builder::{Plan, PlannedCert, PlannedRoute};
use super::endpoints::{PortRef, Refs, parse_url, upstream_backend, url_upstream};
use super::ingress::validate_path;
use super::tls::{certified_key, validate_host};
use super::units::{parse_duration, parse_quantity, parse_rate};
use super::{Diagnostic, ObjectRef, Problem, namespace_of};
use crate::api::{self, AIRoute, PathType, ServicePort};
use crate::config::{
    AuthCachePolicy, AuthHookPolicy, Backend, CorsPolicy, DEFAULT_MAX_BODY_SIZE, Endpoints,
    HookTarget, PathMatch, PathRewrite, RateLimit, Route, RoutePolicy, Timeouts, Upstream,
    UpstreamProtocol, ZoneKey, ZoneSpec, normalize_prefix,
};

/// Default zone memory bound (`rateZones[].size`).
pub const DEFAULT_ZONE_SIZE: u64 = 10 * 1024 * 1024;
pub const DEFAULT_CORS_METHODS: &str = "GET, POST, PUT, DELETE, PATCH, OPTIONS";
pub const DEFAULT_CORS_HEADERS: &str = "Authorization, Content-Type";
pub const DEFAULT_CORS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// Collects an object's errors; any error leaves the object out.
struct Ctx<'a> {
    object: ObjectRef,
    ns: &'a str,
    diags: &'a mut Vec<Diagnostic>,
    errors: usize,
}

impl Ctx<'_> {
    fn error(&mut self, field: impl Into<String>, reason: &str, message: impl Into<String>) {
        self.errors += 1;
        self.diags
            .push(Diagnostic::error(&self.object, field, reason, message));
    }
}

pub(crate) fn translate_airroute(
    ar: &AIRoute,
    refs: &Refs<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Plan {
    let ns = namespace_of(&ar.metadata);
    let name = ar.metadata.name.as_deref().unwrap_or_default();
    let object = ObjectRef::new("AIRoute", ns, name);
    let mut plan = Plan::new(object.clone());
    let spec = &ar.spec;
    let mut cx = Ctx {
        object,
        ns,
        diags,
        errors: 0,
    };

    // Object-wide parts first: if any is invalid the whole AIRoute is left out, since
    // every route may depend on it (hosts, zones, CORS, auth).
    let mut hosts = Vec::new();
    for (i, h) in spec.hosts.iter().enumerate() {
        match validate_host(h) {
            Ok(h) if !hosts.contains(&h) => hosts.push(h),
            Ok(_) => {}
            Err(e) => cx.error(format!("spec.hosts[{i}]"), "InvalidHost", e),
        }
    }

    let mut zone_names: Vec<&str> = Vec::new();
    let mut zones = Vec::new();
    for (i, z) in spec.rate_zones.iter().enumerate() {
        let f = format!("spec.rateZones[{i}]");
        match zone_spec(ns, name, z) {
            Ok(spec) => {
                if zone_names.contains(&z.name.as_str()) {
                    cx.error(
                        format!("{f}.name"),
                        "DuplicateZone",
                        format!(
                            "zone name {:?} is declared twice; zone names must be unique",
                            z.name
                        ),
                    );
                }
                zone_names.push(&z.name);
                zones.push(spec);
            }
            Err((sub, e)) => cx.error(format!("{f}.{sub}"), "InvalidRateZone", e),
        }
    }

    let cors = match spec.cors.as_ref().map(cors_policy).transpose() {
        Ok(c) => c.map(Arc::new),
        Err((sub, e)) => {
            cx.error(format!("spec.cors.{sub}"), "InvalidCORS", e);
            None
        }
    };

    let auth = match spec.auth_hook.as_ref() {
        None => None,
        Some(h) => match auth_hook(&mut cx, refs, h) {
            Ok(a) => Some(Arc::new(a)),
            Err((sub, e)) => {
                cx.error(format!("spec.authHook.{sub}"), "InvalidAuthHook", e);
                None
            }
        },
    };

    if spec.routes.is_empty() {
        cx.error(
            "spec.routes",
            "NoRoutes",
            "an AIRoute needs at least one route",
        );
    }
    if cx.errors > 0 {
        cx.diags.push(Diagnostic::error(
            &cx.object,
            "spec",
            "NotServed",
            "this AIRoute is not served until its errors in spec are fixed",
        ));
        return plan;
    }

    let mut https_redirect = None;
    if let Some(tls) = spec.tls.as_ref() {
        if tls.redirect.unwrap_or(true) {
            https_redirect = Some(308);
        }
        load_certs(&mut cx, refs, tls, &hosts, &mut plan.certs);
    }

    let mut used_names = HashSet::new();
    for (i, r) in spec.routes.iter().enumerate() {
        let f = format!("spec.routes[{i}]");
        let before = cx.errors;
        if let Err(e) = validate_path(&r.path) {
            cx.error(format!("{f}.path"), "InvalidPath", e);
        }
        let path_type = r.path_type.unwrap_or_default();
        let path = match path_type {
            PathType::Exact => PathMatch::Exact(r.path.clone()),
            PathType::Prefix => PathMatch::Prefix(normalize_prefix(&r.path)),
        };
        let rewrite = match (r.strip_prefix.unwrap_or(false), &path) {
            (true, PathMatch::Prefix(p) | PathMatch::Exact(p)) if normalize_prefix(p) != "/" => {
                PathRewrite::StripPrefix(normalize_prefix(p))
            }
            _ => PathRewrite::None,
        };

        let backend = route_backend(&mut cx, refs, &r.backend, &format!("{f}.backend"));

        let rate_limit = match r.rate_limit.as_ref() {
            None => None,
            Some(rl) => match zone_names.iter().position(|z| *z == rl.zone) {
                None => {
                    cx.error(
                        format!("{f}.rateLimit.zone"),
                        "UnknownZone",
                        format!(
                            "zone {:?} is not declared in spec.rateZones (declared: {})",
                            rl.zone,
                            if zone_names.is_empty() {
                                "none".to_string()
                            } else {
                                zone_names.join(", ")
                            }
                        ),
                    );
                    None
                }
                Some(zone) => {
                    let reject_status = rl.reject_status.unwrap_or(429);
                    if !(400..=599).contains(&reject_status) {
                        cx.error(
                            format!("{f}.rateLimit.rejectStatus"),
                            "InvalidStatus",
                            format!("rejectStatus {reject_status} must be a 4xx or 5xx status (e.g. 429 or 503)"),
                        );
                    }
                    Some(RateLimit {
                        zone,
                        burst: rl.burst.unwrap_or(0),
                        nodelay: rl.nodelay.unwrap_or(false),
                        reject_status,
                        exempt: None,
                    })
                }
            },
        };

        let max_body_size = match r.max_body_size.as_deref() {
            None => Some(DEFAULT_MAX_BODY_SIZE),
            Some(q) => match parse_quantity(q) {
                Ok(0) => None,
                Ok(n) => Some(n),
                Err(e) => {
                    cx.error(format!("{f}.maxBodySize"), "InvalidSize", e);
                    None
                }
            },
        };

        let mut timeouts = Timeouts::default();
        if let Some(t) = r.timeouts.as_ref() {
            for (key, value, slot) in [
                ("connect", &t.connect, &mut timeouts.connect),
                ("read", &t.read, &mut timeouts.read),
                ("send", &t.send, &mut timeouts.send),
            ] {
                if let Some(v) = value {
                    match parse_duration(v) {
                        Ok(d) if !d.is_zero() => *slot = d,
                        Ok(_) => cx.error(
                            format!("{f}.timeouts.{key}"),
                            "InvalidDuration",
                            "timeout must be greater than 0",
                        ),
                        Err(e) => cx.error(format!("{f}.timeouts.{key}"), "InvalidDuration", e),
                    }
                }
            }
        }

        let use_auth = r.auth.unwrap_or(spec.auth_hook.is_some());
        if use_auth && auth.is_none() {
            cx.error(
                format!("{f}.auth"),
                "NoAuthHook",
                "auth is true but spec.authHook is not set; set spec.authHook or remove auth",
            );
        }

        if cx.errors > before {
            cx.diags.push(Diagnostic::error(
                &cx.object,
                &f,
                "RouteNotServed",
                format!(
                    "route {} is not served until the errors in {f} are fixed",
                    r.path
                ),
            ));
            continue;
        }
        let Some(backend) = backend else { continue };

        let label = {
            let trimmed = r.path.trim_matches('/');
            let base = if trimmed.is_empty() {
                i.to_string()
            } else {
                trimmed.to_string()
            };
            if used_names.insert(base.clone()) {
                base
            } else {
                used_names.insert(i.to_string());
                i.to_string()
            }
        };
        plan.routes.push(PlannedRoute {
            hosts: if hosts.is_empty() {
                vec![String::new()]
            } else {
                hosts.clone()
            },
            route: Route {
                name: format!("airroute/{ns}/{name}/{label}").into(),
                path,
                backend,
                policy: RoutePolicy {
                    rewrite,
                    max_body_size,
                    timeouts,
                    streaming: r.streaming.unwrap_or(true),
                    websocket: r.websocket.unwrap_or(true),
                    https_redirect,
                    security_headers: spec.security_headers.unwrap_or(false),
                    cors: cors.clone(),
                    rate_limit,
                    auth: if use_auth { auth.clone() } else { None },
                    allow_sources: None,
                },
                metrics: Default::default(),
            },
            field: f,
        });
    }
    plan.zones = zones;
    plan
}

fn load_certs(
    cx: &mut Ctx<'_>,
    refs: &Refs<'_>,
    tls: &api::AIRouteTls,
    hosts: &[String],
    out: &mut Vec<PlannedCert>,
) {
    let field = "spec.tls.secretName";
    let ns = cx.ns;
    let secret_name = tls.secret_name.as_str();
    if hosts.is_empty() {
        cx.diags.push(Diagnostic::warning(
            &cx.object,
            "spec.hosts",
            "TLSWithoutHosts",
            "spec.tls is set but spec.hosts is empty, so the certificate cannot be chosen by SNI; list the hosts",
        ));
        return;
    }
    match refs.secret(ns, secret_name) {
        None => cx.diags.push(
            Diagnostic::warning(
                &cx.object,
                field,
                "SecretNotFound",
                format!(
                    "Secret {ns}/{secret_name} not found; HTTPS uses the default certificate. \
                     Create a kubernetes.io/tls Secret with tls.crt and tls.key"
                ),
            )
            .with_problem(Problem::RefNotFound),
        ),
        Some(secret) => match certified_key(secret) {
            Err(e) => cx.diags.push(Diagnostic::warning(
                &cx.object,
                field,
                "InvalidCertificate",
                format!(
                    "Secret {ns}/{secret_name} field {}: {}; HTTPS uses the default certificate",
                    e.field, e.message
                ),
            )),
            Ok(ck) => {
                let ck = Arc::new(ck);
                for h in hosts {
                    out.push(PlannedCert {
                        host: h.clone(),
                        cert: ck.clone(),
                        field: field.into(),
                    });
                }
            }
        },
    }
}

fn zone_spec(
    ns: &str,
    object: &str,
    z: &api::RateZone,
) -> Result<ZoneSpec, (&'static str, String)> {
    if !is_dns_label(&z.name) {
        return Err((
            "name",
            format!(
                "zone name {:?} must be a DNS label (lower case letters, digits, -; at most 63)",
                z.name
            ),
        ));
    }
    let (requests, per) = parse_rate(&z.rate).map_err(|e| ("rate", e))?;
    let key = match z.key.as_deref().unwrap_or("clientIP") {
        "clientIP" => ZoneKey::ClientIp,
        k => match k.strip_prefix("header:") {
            Some(h) => ZoneKey::Header(HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                (
                    "key",
                    format!("key {k:?} names an invalid header; write header:X-API-Key"),
                )
            })?),
            None => {
                return Err((
                    "key",
                    format!("key {k:?} must be clientIP or header:<Name>, e.g. header:X-API-Key"),
                ));
            }
        },
    };
    let size_bytes = match z.size.as_deref() {
        None => DEFAULT_ZONE_SIZE,
        Some(s) => match parse_quantity(s).map_err(|e| ("size", e))? {
            0 => {
                return Err((
                    "size",
                    "zone size must be greater than 0 (e.g. 10Mi)".into(),
                ));
            }
            n => n,
        },
    };
    Ok(ZoneSpec {
        id: format!("{ns}/{object}/{}", z.name).into(),
        requests,
        per,
        key,
        size_bytes,
    })
}

pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn header_list(
    field: &'static str,
    values: &[String],
) -> Result<Vec<HeaderName>, (&'static str, String)> {
    values
        .iter()
        .map(|v| {
            HeaderName::from_bytes(v.trim().as_bytes())
                .map_err(|_| (field, format!("{v:?} is not a valid header name")))
        })
        .collect()
}

fn joined_value(
    field: &'static str,
    items: &[String],
) -> Result<HeaderValue, (&'static str, String)> {
    HeaderValue::from_str(&items.join(", "))
        .map_err(|_| (field, "values must be printable ASCII".to_string()))
}

/// Build the CORS policy. `*` is refused with credentials: browsers reject that pair, so
/// it can only be a mistake.
pub(crate) fn cors_policy(c: &api::Cors) -> Result<CorsPolicy, (&'static str, String)> {
    let credentials = c.allow_credentials.unwrap_or(false);
    let mut allow_any_origin = false;
    let mut exact_origins = Vec::new();
    let mut wildcard_origins = Vec::new();
    if c.allow_origins.is_empty() {
        return Err((
            "allowOrigins",
            "list at least one origin, e.g. https://app.example.com".into(),
        ));
    }
    for o in &c.allow_origins {
        let o = o.trim().to_ascii_lowercase();
        if o == "*" {
            if credentials {
                return Err((
                    "allowOrigins",
                    "origin * cannot be combined with allowCredentials: true; list the origins"
                        .into(),
                ));
            }
            allow_any_origin = true;
            continue;
        }
        let (scheme, rest) = o
            .split_once("://")
            .filter(|(s, _)| *s == "http" || *s == "https")
            .ok_or_else(|| {
                (
                    "allowOrigins",
                    format!("origin {o:?} must look like https://app.example.com"),
                )
            })?;
        let host =
            rest.rsplit_once(':').map_or(
                rest,
                |(h, port)| {
                    if port.parse::<u16>().is_ok() { h } else { rest }
                },
            );
        if validate_host(host).is_err() && host.parse::<std::net::IpAddr>().is_err() {
            return Err((
                "allowOrigins",
                format!(
                    "origin {o:?} must be scheme://host[:port] with no path, e.g. https://app.example.com"
                ),
            ));
        }
        match rest.strip_prefix('*') {
            Some(suffix) => wildcard_origins.push((format!("{scheme}://"), suffix.to_string())),
            None => exact_origins.push(o.clone()),
        }
    }
    let methods = match c.allow_methods.as_deref() {
        None => HeaderValue::from_static(DEFAULT_CORS_METHODS),
        Some(m) => {
            for x in m {
                Method::from_bytes(x.trim().as_bytes())
                    .map_err(|_| ("allowMethods", format!("{x:?} is not an HTTP method")))?;
            }
            joined_value("allowMethods", m)?
        }
    };
    let headers = match c.allow_headers.as_deref() {
        None => HeaderValue::from_static(DEFAULT_CORS_HEADERS),
        Some(h) => {
            header_list("allowHeaders", h)?;
            joined_value("allowHeaders", h)?
        }
    };
    let expose = if c.expose_headers.is_empty() {
        None
    } else {
        header_list("exposeHeaders", &c.expose_headers)?;
        Some(joined_value("exposeHeaders", &c.expose_headers)?)
    };
    let max_age = match c.max_age.as_deref() {
        None => DEFAULT_CORS_MAX_AGE,
        Some(s) => parse_duration(s).map_err(|e| ("maxAge", e))?,
    };
    Ok(CorsPolicy {
        allow_any_origin,
        exact_origins,
        wildcard_origins,
        allow_methods: methods,
        allow_headers: headers,
        expose_headers: expose,
        allow_credentials: credentials,
        max_age: HeaderValue::from(max_age.as_secs()),
    })
}

fn auth_hook(
    cx: &mut Ctx<'_>,
    refs: &Refs<'_>,
    h: &api::AuthHook,
) -> Result<AuthHookPolicy, (&'static str, String)> {
    let (upstream, path_and_query) = match (h.url.as_deref(), h.service.as_ref()) {
        (Some(url), None) => {
            let parsed = parse_url(url).map_err(|e| ("url", e))?;
            let mut u = url_upstream(url, url).map_err(|e| ("url", e))?;
            // The hook's path is sent as is, not as a prefix of the client's path.
            u.base_path = String::new();
            let path = if parsed.base_path.is_empty() {
                "/".to_string()
            } else {
                parsed.base_path
            };
            let pq = match parsed.query {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            (u, pq)
        }
        (None, Some(svc)) => {
            let path = svc.path.clone().unwrap_or_else(|| "/".into());
            if !path.starts_with('/') {
                return Err(("service.path", format!("path {path:?} must start with /")));
            }
            if http::uri::PathAndQuery::try_from(path.as_str()).is_err() {
                return Err((
                    "service.path",
                    format!("path {path:?} is not a valid URL path"),
                ));
            }
            let port = match &svc.port {
                ServicePort::Number(0) => {
                    return Err(("service.port", "port must be 1-65535".into()));
                }
                ServicePort::Number(n) => PortRef::Number(i32::from(*n)),
                ServicePort::Name(n) => PortRef::Name(n),
            };
            let u = match refs.resolve_service(cx.ns, &svc.name, port, None) {
                Ok(u) => u,
                Err(e) => {
                    // Fail closed: an upstream with no endpoints makes every check fail
                    // with failureStatus, so the protected routes never open up.
                    cx.diags.push(Diagnostic {
                        severity: e.severity,
                        problem: e.problem,
                        object: cx.object.clone(),
                        field: "spec.authHook.service".into(),
                        message: format!(
                            "{}; requests to routes using the hook fail until it is fixed",
                            e.message
                        ),
                        reason: e.reason.into(),
                    });
                    Upstream {
                        name: format!("{}/{}", cx.ns, svc.name).into(),
                        protocol: UpstreamProtocol::Http,
                        endpoints: Endpoints::Static(Vec::new()),
                        base_path: String::new(),
                        host_override: None,
                        tls_server_name: None,
                        next: Default::default(),
                    }
                }
            };
            (u, path)
        }
        _ => {
            return Err((
                "url",
                "set exactly one of authHook.url and authHook.service".into(),
            ));
        }
    };
    let method = match h.method.as_deref() {
        None => Method::GET,
        Some(m) => Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
            .map_err(|_| ("method", format!("{m:?} is not an HTTP method")))?,
    };
    let timeout = match h.timeout.as_deref() {
        None => DEFAULT_AUTH_TIMEOUT,
        Some(t) => match parse_duration(t).map_err(|e| ("timeout", e))? {
            d if d.is_zero() => return Err(("timeout", "timeout must be greater than 0".into())),
            d => d,
        },
    };
    let cache = match h.cache.as_ref() {
        None => None,
        Some(c) => {
            let ttl = parse_duration(&c.ttl).map_err(|e| ("cache.ttl", e))?;
            Some(AuthCachePolicy {
                ttl,
                key: header_list("cache.key", &c.key)?,
            })
        }
    };
    let failure_status = h.failure_status.unwrap_or(500);
    if !(500..=599).contains(&failure_status) {
        return Err((
            "failureStatus",
            format!("failureStatus {failure_status} must be a 5xx status (500 or 503)"),
        ));
    }
    let field = if h.url.is_some() {
        "url"
    } else {
        "service.path"
    };
    let target = HookTarget::new(&upstream, &path_and_query).map_err(|e| (field, e))?;
    Ok(AuthHookPolicy {
        id: format!("{}/{}", cx.ns, cx.object.name).into(),
        upstream: Arc::new(upstream),
        path_and_query,
        target,
        method,
        forward_headers: header_list("forwardHeaders", &h.forward_headers)?,
        copy_headers: header_list("copyHeaders", &h.copy_headers)?,
        timeout,
        cache,
        failure_status,
        metrics: Default::default(),
    })
}

fn route_backend(
    cx: &mut Ctx<'_>,
    refs: &Refs<'_>,
    b: &api::RouteBackend,
    field: &str,
) -> Option<Backend> {
    match (&b.service, b.url.as_deref()) {
        (Some(svc), None) => {
            if !is_dns_label(&svc.name) {
                cx.error(
                    format!("{field}.service.name"),
                    "InvalidServiceName",
                    format!("{:?} is not a valid Service name", svc.name),
                );
                return None;
            }
            let port = match &svc.port {
                ServicePort::Number(0) => {
                    cx.error(
                        format!("{field}.service.port"),
                        "InvalidPort",
                        "port must be 1-65535 or a port name",
                    );
                    return None;
                }
                ServicePort::Number(n) => PortRef::Number(i32::from(*n)),
                ServicePort::Name(n) => PortRef::Name(n),
            };
            match refs.resolve_service(cx.ns, &svc.name, port, None) {
                Ok(u) => Some(upstream_backend(u)),
                Err(e) => {
                    let sub = if e.reason == "ServicePortNotFound" {
                        "port"
                    } else {
                        "name"
                    };
                    cx.diags.push(Diagnostic {
                        severity: e.severity,
                        problem: e.problem,
                        object: cx.object.clone(),
                        field: format!("{field}.service.{sub}"),
                        message: format!(
                            "{}; requests get {} until it is fixed",
                            e.message, e.status
                        ),
                        reason: e.reason.into(),
                    });
                    Some(e.backend())
                }
            }
        }
        (None, Some(url)) => match refs.url_backend(url) {
            Ok(u) => Some(upstream_backend(u)),
            Err(e) => {
                cx.error(format!("{field}.url"), "InvalidURL", e);
                None
            }
        },
        _ => {
            cx.error(
                field,
                "InvalidBackend",
                "set exactly one of backend.service and backend.url",
            );
            None
        }
    }
}
