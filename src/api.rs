//! Custom resource types served by airgate (`airgate.dev/v1alpha1`).
mod airroute;

pub use airroute::*;

/// API group of airgate's custom resources.
pub const GROUP: &str = "airgate.dev";
/// The `spec.controller` value of IngressClasses that airgate handles.
pub const CONTROLLER_NAME: &str = "airgate.dev/ingress-controller";

/// The AIRoute CustomResourceDefinition as YAML, as committed in `crds/airroute.yaml`.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&AIRoute::crd()).expect("CRD serializes")
}
