//! ingress-nginx and airgate.dev annotations on Ingress objects.
use crate::config::{PathRewrite, RoutePolicy, UpstreamProtocol, ZoneSpec};
use crate::translate::Diagnostic;
use k8s_openapi::api::networking::v1::Ingress;

/// Annotations of one Ingress, parsed and validated. A policy whose annotations are
/// invalid is disabled as a whole and reported.
#[derive(Debug, Clone, Default)]
pub struct IngressAnnotations {
    pub use_regex: bool,
    pub backend_protocol: UpstreamProtocol,
    // ...private parsed fields owned by the annotations engineer...
}

/// Parse every annotation of `ingress` we know; unknown ones are ignored, snippets refused.
pub fn parse(ingress: &Ingress) -> (IngressAnnotations, Vec<Diagnostic>) {
    let _ = ingress;
    (IngressAnnotations::default(), Vec::new())
}

/// Apply the parsed policies to one route's policy. `host_has_tls` drives ssl-redirect.
/// Rate zones are appended to `zones` (deduplicated by id) and referenced by index.
pub fn apply(
    ann: &IngressAnnotations,
    policy: &mut RoutePolicy,
    zones: &mut Vec<ZoneSpec>,
    host_has_tls: bool,
) {
    let _ = (ann, policy, zones, host_has_tls);
}

/// The rewrite for one path of the Ingress (rewrite-target, with use-regex capture groups).
pub fn rewrite_for_path(ann: &IngressAnnotations, path: &str) -> PathRewrite {
    let _ = (ann, path);
    PathRewrite::None
}
