//! Merges the routes of many objects into one [`Config`], settling conflicts by age.
use std::collections::HashMap;
use std::sync::Arc;

use rustls::sign::CertifiedKey;

use super::{Diagnostic, ObjectRef, Problem};
use crate::config::{Config, PathMatch, Route, VirtualHost, ZoneSpec};

/// What one object contributes. Built completely before anything is merged, so an
/// object is never half-applied.
#[derive(Debug)]
pub(crate) struct Plan {
    pub object: ObjectRef,
    pub routes: Vec<PlannedRoute>,
    /// Zones the routes' `rate_limit.zone` index into (object-local indexes).
    pub zones: Vec<ZoneSpec>,
    pub certs: Vec<PlannedCert>,
    /// The Ingress `defaultBackend`: global default, and fallback of `hosts`.
    pub default_route: Option<(Route, Vec<String>)>,
}

impl Plan {
    pub fn new(object: ObjectRef) -> Self {
        Plan {
            object,
            routes: Vec::new(),
            zones: Vec::new(),
            certs: Vec::new(),
            default_route: None,
        }
    }
}

#[derive(Debug)]
pub(crate) struct PlannedRoute {
    /// Validated host patterns (lower case; `*.x` wildcard; empty = any host).
    pub hosts: Vec<String>,
    pub route: Route,
    /// Where the route was declared, for conflict diagnostics.
    pub field: String,
}

#[derive(Debug)]
pub(crate) struct PlannedCert {
    pub host: String,
    pub cert: Arc<CertifiedKey>,
    pub field: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum RouteKey {
    Exact(String),
    Prefix(String),
    Regex(String),
}

fn route_key(path: &PathMatch) -> RouteKey {
    match path {
        PathMatch::Exact(p) => RouteKey::Exact(p.clone()),
        PathMatch::Prefix(p) => RouteKey::Prefix(p.clone()),
        PathMatch::Regex(r) => RouteKey::Regex(r.as_str().to_string()),
    }
}

#[derive(Default)]
pub(crate) struct Builder {
    vhosts: Vec<VirtualHost>,
    host_index: HashMap<String, usize>,
    owners: HashMap<(usize, RouteKey), ObjectRef>,
    zones: Vec<ZoneSpec>,
    zone_ids: HashMap<Arc<str>, usize>,
    config_certs: crate::config::Certificates,
    cert_owners: HashMap<String, ObjectRef>,
    default_route: Option<Arc<Route>>,
}

impl Builder {
    fn vhost(&mut self, host: &str) -> usize {
        if let Some(i) = self.host_index.get(host) {
            return *i;
        }
        let i = self.vhosts.len();
        self.vhosts.push(VirtualHost {
            host: host.to_string(),
            ..VirtualHost::default()
        });
        self.host_index.insert(host.to_string(), i);
        i
    }

    /// Zones are shared by id; returns object-local index -> global index.
    fn add_zones(&mut self, zones: Vec<ZoneSpec>) -> Vec<usize> {
        zones
            .into_iter()
            .map(|z| {
                if let Some(i) = self.zone_ids.get(&z.id) {
                    return *i;
                }
                let i = self.zones.len();
                self.zone_ids.insert(z.id.clone(), i);
                self.zones.push(z);
                i
            })
            .collect()
    }

    /// Merge one object's plan. Objects must come oldest first: on a duplicate
    /// (same host, same path, same match type) the route already present wins.
    pub fn commit(&mut self, plan: Plan, diags: &mut Vec<Diagnostic>) {
        let Plan {
            object,
            routes,
            zones,
            certs,
            default_route,
        } = plan;
        let zone_map = self.add_zones(zones);
        let remap = |mut route: Route, diags: &mut Vec<Diagnostic>, field: &str| {
            if let Some(rl) = route.policy.rate_limit.as_mut() {
                match zone_map.get(rl.zone) {
                    Some(g) => rl.zone = *g,
                    None => {
                        diags.push(Diagnostic::error(
                            &object,
                            field,
                            "InvalidRateLimit",
                            "rate limit refers to a zone that was not declared; route left out",
                        ));
                        return None;
                    }
                }
            }
            Some(route)
        };

        for planned in routes {
            let Some(route) = remap(planned.route, diags, &planned.field) else {
                continue;
            };
            let route = Arc::new(route);
            let key = route_key(&route.path);
            for host in &planned.hosts {
                let vi = self.vhost(host);
                if let Some(owner) = self.owners.get(&(vi, key.clone())) {
                    let shown_host = if host.is_empty() { "*any host*" } else { host };
                    diags.push(
                        Diagnostic::warning(
                            &object,
                            &planned.field,
                            "PathConflict",
                            format!(
                                "host {shown_host} path {} is already served by {owner}, which is older; \
                                 this route is ignored there. Use a different path or remove one of them",
                                path_label(&route.path)
                            ),
                        )
                        .with_problem(Problem::Conflict),
                    );
                    continue;
                }
                self.owners.insert((vi, key.clone()), object.clone());
                let vh = &mut self.vhosts[vi];
                match &route.path {
                    PathMatch::Exact(p) => {
                        vh.exact.insert(p.clone(), route.clone());
                    }
                    PathMatch::Prefix(p) => {
                        vh.prefix.insert(p.clone(), route.clone());
                    }
                    PathMatch::Regex(_) => vh.regex.push(route.clone()),
                }
            }
        }

        if let Some((route, hosts)) = default_route {
            if let Some(route) = remap(route, diags, "spec.defaultBackend") {
                let route = Arc::new(route);
                match &self.default_route {
                    None => self.default_route = Some(route.clone()),
                    Some(existing) => diags.push(
                        Diagnostic::warning(
                            &object,
                            "spec.defaultBackend",
                            "DefaultBackendConflict",
                            format!(
                                "the global default backend is already set by an older object ({}); \
                                 this one only serves as the fallback of its own hosts",
                                existing.name
                            ),
                        )
                        .with_problem(Problem::Conflict),
                    ),
                }
                for host in hosts {
                    let vi = self.vhost(&host);
                    let vh = &mut self.vhosts[vi];
                    if vh.fallback.is_none() {
                        vh.fallback = Some(route.clone());
                    }
                }
            }
        }

        for c in certs {
            if let Some(owner) = self.cert_owners.get(&c.host) {
                if owner != &object {
                    diags.push(
                        Diagnostic::warning(
                            &object,
                            &c.field,
                            "CertificateConflict",
                            format!(
                                "host {} already has a certificate from {owner}, which is older; this one is not used",
                                c.host
                            ),
                        )
                        .with_problem(Problem::Conflict),
                    );
                }
                continue;
            }
            self.cert_owners.insert(c.host.clone(), object.clone());
            match c.host.strip_prefix("*.") {
                Some(suffix) => self
                    .config_certs
                    .wildcard
                    .insert(suffix.to_string(), c.cert),
                None => self.config_certs.exact.insert(c.host, c.cert),
            };
        }
    }

    pub fn finish(mut self) -> Config {
        let mut config = Config {
            certs: std::mem::take(&mut self.config_certs),
            zones: std::mem::take(&mut self.zones),
            default_route: self.default_route.take(),
            ..Config::default()
        };
        for (i, mut vh) in self.vhosts.into_iter().enumerate() {
            // ingress-nginx orders regex locations longest first; keep it deterministic.
            vh.regex.sort_by(|a, b| {
                let (pa, pb) = (path_label(&a.path), path_label(&b.path));
                pb.len().cmp(&pa.len()).then_with(|| pa.cmp(&pb))
            });
            if vh.host.is_empty() {
                config.any_host = Some(i);
            } else if let Some(suffix) = vh.host.strip_prefix("*.") {
                config.wildcard_hosts.insert(suffix.to_string(), i);
            } else {
                config.exact_hosts.insert(vh.host.clone(), i);
            }
            config.vhosts.push(vh);
        }
        config
    }
}

fn path_label(path: &PathMatch) -> String {
    match path {
        PathMatch::Exact(p) => format!("{p} (Exact)"),
        PathMatch::Prefix(p) => format!("{p} (Prefix)"),
        PathMatch::Regex(r) => format!("{} (regex)", r.as_str()),
    }
}
