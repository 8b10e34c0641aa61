//! `networking.k8s.io/v1` Ingress -> routes.
use std::sync::Arc;

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use super::annotations::{self, IngressAnnotations};
use super::builder::{Plan, PlannedCert, PlannedRoute};
use super::endpoints::{PortRef, Refs, upstream_backend};
use super::tls::{certified_key, tls_covers, validate_host};
use super::{Diagnostic, ObjectRef, Problem, Severity, namespace_of};
use crate::config::{Backend, PathMatch, Route, RoutePolicy, ZoneSpec, normalize_prefix};

/// Longest path we accept; longer ones are almost certainly mistakes.
pub(crate) const MAX_PATH_LEN: usize = 1024;

/// Check a path users wrote for a route: absolute, printable, bounded.
pub(crate) fn validate_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("path {path:?} must start with /"));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(format!("path is longer than {MAX_PATH_LEN} characters"));
    }
    if path
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '?' || c == '#')
    {
        return Err(format!(
            "path {path:?} must not contain spaces, control characters, ? or #"
        ));
    }
    Ok(())
}

pub(crate) fn translate_ingress(
    ing: &Ingress,
    refs: &Refs<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Plan {
    let ns = namespace_of(&ing.metadata);
    let name = ing.metadata.name.as_deref().unwrap_or_default();
    let object = ObjectRef::new("Ingress", ns, name);
    let mut plan = Plan::new(object.clone());

    let (ann, ann_diags) = annotations::parse(ing);
    let ann_failed = ann.refused() || ann_diags.iter().any(|d| d.severity == Severity::Error);
    diags.extend(ann_diags);
    if ann_failed {
        // Serving the Ingress without the policy its author asked for (a limit, an auth
        // hook, an allow-list) could expose the backend: leave the whole Ingress out.
        diags.push(Diagnostic::error(
            &object,
            "metadata.annotations",
            "InvalidAnnotations",
            "the Ingress is not served until the errors in its annotations are fixed",
        ));
        return plan;
    }

    let Some(spec) = ing.spec.as_ref() else {
        diags.push(Diagnostic::error(
            &object,
            "spec",
            "EmptySpec",
            "Ingress has no spec; add rules or a defaultBackend",
        ));
        return plan;
    };

    // Hosts of all rules, to give TLS entries without hosts and the defaultBackend a scope.
    let mut rule_hosts: Vec<String> = Vec::new();
    for rule in spec.rules.as_deref().unwrap_or_default() {
        if let Some(h) = rule.host.as_deref().filter(|h| !h.is_empty()) {
            if let Ok(h) = validate_host(h) {
                if !rule_hosts.contains(&h) {
                    rule_hosts.push(h);
                }
            }
        }
    }

    let mut tls_hosts: Vec<String> = Vec::new();
    for (ti, tls) in spec.tls.as_deref().unwrap_or_default().iter().enumerate() {
        let mut hosts = Vec::new();
        for (hi, h) in tls.hosts.as_deref().unwrap_or_default().iter().enumerate() {
            match validate_host(h) {
                Ok(h) => hosts.push(h),
                Err(e) => diags.push(Diagnostic::error(
                    &object,
                    format!("spec.tls[{ti}].hosts[{hi}]"),
                    "InvalidHost",
                    e,
                )),
            }
        }
        if tls.hosts.as_deref().unwrap_or_default().is_empty() {
            // Like ingress-nginx: a TLS entry without hosts covers the rule hosts.
            hosts = rule_hosts.clone();
        }
        tls_hosts.extend(hosts.iter().cloned());
        let field = format!("spec.tls[{ti}].secretName");
        match tls.secret_name.as_deref().filter(|s| !s.is_empty()) {
            None => diags.push(Diagnostic::warning(
                &object,
                &field,
                "MissingSecretName",
                "TLS entry has no secretName; these hosts use the default certificate",
            )),
            Some(secret_name) => match refs.secret(ns, secret_name) {
                None => diags.push(
                    Diagnostic::warning(
                        &object,
                        &field,
                        "SecretNotFound",
                        format!(
                            "Secret {ns}/{secret_name} not found; hosts {} are served with the default certificate. \
                             Create a kubernetes.io/tls Secret with tls.crt and tls.key",
                            hosts.join(", ")
                        ),
                    )
                    .with_problem(Problem::RefNotFound),
                ),
                Some(secret) => match certified_key(secret) {
                    Err(e) => diags.push(Diagnostic::warning(
                        &object,
                        &field,
                        "InvalidCertificate",
                        format!(
                            "Secret {ns}/{secret_name} field {}: {}; hosts {} are served with the default certificate",
                            e.field,
                            e.message,
                            hosts.join(", ")
                        ),
                    )),
                    Ok(ck) => {
                        let ck = Arc::new(ck);
                        for h in hosts {
                            plan.certs.push(PlannedCert {
                                host: h,
                                cert: ck.clone(),
                                field: field.clone(),
                            });
                        }
                    }
                },
            },
        }
    }
    let host_has_tls = |host: &str| tls_hosts.iter().any(|t| tls_covers(t, host));

    let mut zones: Vec<ZoneSpec> = Vec::new();
    for (ri, rule) in spec.rules.as_deref().unwrap_or_default().iter().enumerate() {
        let host = match rule.host.as_deref().filter(|h| !h.is_empty()) {
            None => String::new(),
            Some(h) => match validate_host(h) {
                Ok(h) => h,
                Err(e) => {
                    diags.push(Diagnostic::error(
                        &object,
                        format!("spec.rules[{ri}].host"),
                        "InvalidHost",
                        format!("{e}; this rule is not served"),
                    ));
                    continue;
                }
            },
        };
        let Some(http) = rule.http.as_ref() else {
            continue;
        };
        for (pi, p) in http.paths.iter().enumerate() {
            let field = format!("spec.rules[{ri}].http.paths[{pi}]");
            let raw_path = p.path.as_deref().unwrap_or("");
            let path_match = match path_match(&ann, &p.path_type, raw_path) {
                Ok(m) => m,
                Err((sub, e)) => {
                    diags.push(Diagnostic::error(
                        &object,
                        format!("{field}.{sub}"),
                        "InvalidPath",
                        format!("{e}; this path is not served"),
                    ));
                    continue;
                }
            };
            let Some(backend) = backend(
                &object,
                ns,
                &p.backend,
                &format!("{field}.backend"),
                &ann,
                refs,
                diags,
            ) else {
                continue;
            };
            let mut policy = RoutePolicy::default();
            annotations::apply(&ann, &mut policy, &mut zones, host_has_tls(&host));
            policy.rewrite = annotations::rewrite_for_path(&ann, raw_path);
            let shown_host = if host.is_empty() { "_" } else { host.as_str() };
            let shown_path = if raw_path.is_empty() { "/" } else { raw_path };
            plan.routes.push(PlannedRoute {
                hosts: vec![host.clone()],
                route: Route {
                    name: format!("ingress/{ns}/{name}/{shown_host}{shown_path}").into(),
                    path: path_match,
                    backend,
                    policy,
                    metrics: Default::default(),
                },
                field,
            });
        }
    }

    if let Some(db) = spec.default_backend.as_ref() {
        if let Some(backend) = backend(&object, ns, db, "spec.defaultBackend", &ann, refs, diags) {
            let mut policy = RoutePolicy::default();
            // The default backend serves every host, so only a TLS entry that covers all
            // of this Ingress's hosts may send it to https.
            let all_tls = !rule_hosts.is_empty() && rule_hosts.iter().all(|h| host_has_tls(h));
            annotations::apply(&ann, &mut policy, &mut zones, all_tls);
            let route = Route {
                name: format!("ingress/{ns}/{name}/defaultBackend").into(),
                path: PathMatch::Prefix("/".into()),
                backend,
                policy,
                metrics: Default::default(),
            };
            plan.default_route = Some((route, rule_hosts.clone()));
        }
    }
    plan.zones = zones;
    plan
}

/// The match for one Ingress path. ImplementationSpecific behaves as Prefix; with
/// `use-regex`, non-Exact paths are case-insensitive regexes anchored at the start
/// (ingress-nginx `location ~*`).
fn path_match(
    ann: &IngressAnnotations,
    path_type: &str,
    raw: &str,
) -> Result<PathMatch, (&'static str, String)> {
    let path = if raw.is_empty() { "/" } else { raw };
    match path_type {
        "Exact" => {
            if raw.is_empty() {
                return Err(("path", "an Exact path must not be empty".into()));
            }
            validate_path(path).map_err(|e| ("path", e))?;
            Ok(PathMatch::Exact(path.to_string()))
        }
        "Prefix" | "ImplementationSpecific" | "" => {
            if ann.use_regex {
                if !path.starts_with('/') || path.len() > MAX_PATH_LEN {
                    return Err((
                        "path",
                        format!(
                            "regex path {path:?} must start with / and be at most {MAX_PATH_LEN} characters"
                        ),
                    ));
                }
                // The same regex the rewrite uses, so matching and rewriting agree.
                let re = annotations::path_regex(path)
                    .map_err(|e| ("path", format!("{e} (use-regex is on)")))?;
                Ok(PathMatch::Regex(re))
            } else {
                validate_path(path).map_err(|e| ("path", e))?;
                Ok(PathMatch::Prefix(normalize_prefix(path)))
            }
        }
        other => Err((
            "pathType",
            format!("unknown pathType {other:?}; use Exact, Prefix or ImplementationSpecific"),
        )),
    }
}

fn backend(
    object: &ObjectRef,
    ns: &str,
    b: &IngressBackend,
    field: &str,
    ann: &IngressAnnotations,
    refs: &Refs<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Option<Backend> {
    let Some(svc) = b.service.as_ref() else {
        let what = if b.resource.is_some() {
            "resource backends are not supported; use a service backend"
        } else {
            "backend has no service"
        };
        diags.push(Diagnostic::error(
            object,
            format!("{field}.service"),
            "UnsupportedBackend",
            format!("{what}; this path is not served"),
        ));
        return None;
    };
    let port = match svc.port.as_ref() {
        Some(p) => match (p.number, p.name.as_deref()) {
            (Some(n), _) if (1..=65535).contains(&n) => PortRef::Number(n),
            (None, Some(n)) if !n.is_empty() => PortRef::Name(n),
            _ => {
                diags.push(Diagnostic::error(
                    object,
                    format!("{field}.service.port"),
                    "InvalidPort",
                    "set port.number (1-65535) or port.name; this path is not served",
                ));
                return None;
            }
        },
        None => {
            diags.push(Diagnostic::error(
                object,
                format!("{field}.service.port"),
                "InvalidPort",
                "service backend has no port; set port.number or port.name",
            ));
            return None;
        }
    };
    match refs.resolve_service(ns, &svc.name, port, Some(ann.backend_protocol)) {
        Ok(u) => Some(upstream_backend(u)),
        Err(u) => {
            let sub = if u.reason == "ServicePortNotFound" {
                "service.port"
            } else {
                "service.name"
            };
            diags.push(Diagnostic {
                severity: u.severity,
                problem: u.problem,
                object: object.clone(),
                field: format!("{field}.{sub}"),
                message: format!("{}; requests get {} until it is fixed", u.message, u.status),
                reason: u.reason.into(),
            });
            Some(u.backend())
        }
    }
}
