//! Translation: a pure function from Kubernetes objects to a [`Config`] snapshot plus
//! per-object diagnostics. No I/O; file mode and cluster mode both call [`translate`].
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

pub mod airroute;
pub mod annotations;
mod builder;
pub mod endpoints;
pub mod ingress;
pub mod tls;
pub mod units;

use crate::api::AIRoute;
use crate::config::Config;

/// Every object translation looks at. Both sources fill this.
///
/// Objects are shared (`Arc`): file mode keeps the objects of unchanged files between
/// reloads, and copying thousands of them for every reload cost more than translating.
#[derive(Debug, Default, Clone)]
pub struct Objects {
    pub ingress_classes: Vec<Arc<IngressClass>>,
    pub ingresses: Vec<Arc<Ingress>>,
    pub airroutes: Vec<Arc<AIRoute>>,
    pub services: Vec<Arc<Service>>,
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    /// Only `kubernetes.io/tls` Secrets are used.
    pub secrets: Vec<Arc<Secret>>,
    /// Where an object came from (file mode): object -> `path:document`.
    pub origins: BTreeMap<ObjectRef, String>,
}

/// Settings that do not come from objects.
#[derive(Debug, Clone)]
pub struct Options {
    /// The IngressClass name this instance serves (`--ingress-class`).
    pub ingress_class: String,
    /// The `spec.controller` value of IngressClasses we serve.
    pub controller_name: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ingress_class: "airgate".into(),
            controller_name: crate::api::CONTROLLER_NAME.into(),
        }
    }
}

/// The outcome of a translation.
#[derive(Debug, Default)]
pub struct Translation {
    pub config: Config,
    pub diagnostics: Vec<Diagnostic>,
    /// Objects of our class that were translated (Ingress and AIRoute), for status.
    pub accepted: Vec<ObjectRef>,
}

/// Identifies a Kubernetes object in diagnostics and status.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// Why a diagnostic exists, for status conditions: `Invalid` makes the object
/// Accepted=False; `RefNotFound` makes it ResolvedRefs=False.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    Invalid,
    RefNotFound,
    Conflict,
}

/// A problem with one object, naming the field and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub problem: Problem,
    pub object: ObjectRef,
    /// JSON-path-like field, e.g. `spec.routes[1].rateLimit.zone`, or an annotation key.
    pub field: String,
    pub message: String,
    /// Machine-readable reason for status conditions (`ServiceNotFound`, `InvalidRate`...).
    pub reason: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{sev}: {} {}: {}", self.object, self.field, self.message)
    }
}

impl Diagnostic {
    /// An error: the field (and the route or object holding it) is left out.
    pub fn error(
        object: &ObjectRef,
        field: impl Into<String>,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Error,
            problem: Problem::Invalid,
            object: object.clone(),
            field: field.into(),
            message: message.into(),
            reason: reason.into(),
        }
    }

    /// A warning: the object is served, perhaps degraded (e.g. a 503 backend).
    pub fn warning(
        object: &ObjectRef,
        field: impl Into<String>,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(object, field, reason, message)
        }
    }

    pub fn with_problem(mut self, problem: Problem) -> Self {
        self.problem = problem;
        self
    }
}

impl ObjectRef {
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        ObjectRef {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl Translation {
    /// Diagnostics about one object, for its status conditions and Events.
    pub fn diagnostics_for<'a>(
        &'a self,
        object: &'a ObjectRef,
    ) -> impl Iterator<Item = &'a Diagnostic> + 'a {
        self.diagnostics.iter().filter(move |d| &d.object == object)
    }

    /// Number of diagnostics of severity error (the `airgate_translation_errors` gauge).
    pub fn error_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }
}

/// Which Ingresses and AIRoutes this instance serves.
///
/// An IngressClass named `options.ingress_class` must name our controller to be ours. In
/// file mode there is often no IngressClass at all: then an Ingress naming that class, or
/// naming no class, is ours. AIRoutes with no class are always ours (the CRD is ours).
struct ClassRule<'a> {
    name: &'a str,
    /// The class name is served by us (our IngressClass exists, or none by that name does).
    name_is_ours: bool,
    /// Ingresses without a class are ours.
    default_is_ours: bool,
}

const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

impl<'a> ClassRule<'a> {
    fn new(objects: &'a Objects, options: &'a Options) -> Self {
        let ours = objects
            .ingress_classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(options.ingress_class.as_str()));
        match ours {
            None => ClassRule {
                name: &options.ingress_class,
                name_is_ours: true,
                default_is_ours: true,
            },
            Some(class) => {
                let controller_matches = class.spec.as_ref().and_then(|s| s.controller.as_deref())
                    == Some(options.controller_name.as_str());
                let is_default = class
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                    .is_some_and(|v| v.trim() == "true");
                ClassRule {
                    name: &options.ingress_class,
                    name_is_ours: controller_matches,
                    default_is_ours: controller_matches && is_default,
                }
            }
        }
    }

    fn ingress_is_ours(&self, ingress: &Ingress) -> bool {
        let class = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref())
            .or_else(|| {
                ingress
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
                    .map(String::as_str)
            });
        match class {
            Some(c) => self.name_is_ours && c == self.name,
            None => self.default_is_ours,
        }
    }

    fn airroute_is_ours(&self, route: &AIRoute) -> bool {
        match route.spec.ingress_class_name.as_deref() {
            Some(c) => self.name_is_ours && c == self.name,
            None => true,
        }
    }
}

/// Conflicts are settled by age: the oldest object wins, then namespace/name.
/// Objects without a creationTimestamp (file mode) sort first, by namespace/name.
type AgeKey = (
    Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    String,
    String,
    &'static str,
);

fn age_key(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    kind: &'static str,
) -> AgeKey {
    (
        meta.creation_timestamp.clone(),
        namespace_of(meta).to_string(),
        meta.name.clone().unwrap_or_default(),
        kind,
    )
}

/// Namespace of an object, `default` when unset (as kubectl applies it).
pub(crate) fn namespace_of(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

enum Item<'a> {
    Ingress(&'a Ingress),
    AIRoute(&'a AIRoute),
}

/// Translate objects into a snapshot. Pure: same objects, same result.
pub fn translate(objects: &Objects, options: &Options) -> Translation {
    let class = ClassRule::new(objects, options);
    let refs = endpoints::Refs::new(objects);

    let mut items: Vec<(AgeKey, Item<'_>)> = Vec::new();
    for ing in &objects.ingresses {
        if class.ingress_is_ours(ing) {
            items.push((age_key(&ing.metadata, "Ingress"), Item::Ingress(ing)));
        }
    }
    for ar in &objects.airroutes {
        if class.airroute_is_ours(ar) {
            items.push((age_key(&ar.metadata, "AIRoute"), Item::AIRoute(ar)));
        }
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));

    let mut diagnostics = Vec::new();
    let mut accepted = Vec::new();
    let mut builder = builder::Builder::default();
    for (_, item) in items {
        let plan = match item {
            Item::Ingress(ing) => ingress::translate_ingress(ing, &refs, &mut diagnostics),
            Item::AIRoute(ar) => airroute::translate_airroute(ar, &refs, &mut diagnostics),
        };
        accepted.push(plan.object.clone());
        builder.commit(plan, &mut diagnostics);
    }
    Translation {
        config: builder.finish(),
        diagnostics,
        accepted,
    }
}

#[cfg(test)]
mod tests;
