//! The status writer: after each translation the leader writes AIRoute conditions,
//! Ingress `status.loadBalancer`, and Warning Events for problems.
//!
//! Input arrives on a `watch` channel, a queue bounded at one that keeps only the newest
//! translation: a slow API server can delay status but never makes work pile up. Every
//! write is server-side apply on the status subresource with field manager `airgate`,
//! bounded by a timeout, counted in `airgate_status_writes_total{kind,result}` and timed
//! in `airgate_status_write_duration_seconds`. Writes are skipped when the object already
//! shows the wanted status, so a steady state costs no API calls.
use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::{Api, Client};
use tokio::sync::watch;

pub mod lease;

use crate::api::{AIRoute, AIRouteStatus, Condition};
use crate::translate::{Diagnostic, ObjectRef, Objects, Problem, Severity};

/// Field manager of every status write.
pub const FIELD_MANAGER: &str = "airgate";

/// Errors of the status side; each maps to a metric label.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing status of {object}: {source}")]
    Write {
        object: ObjectRef,
        #[source]
        source: kube::Error,
    },
    #[error("writing status of {object} timed out after {timeout:?}")]
    Timeout {
        object: ObjectRef,
        timeout: Duration,
    },
    #[error("reading publish Service {service}: {message}")]
    PublishService { service: String, message: String },
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Write { .. } => "error",
            Error::Timeout { .. } => "timeout",
            Error::PublishService { .. } => "error",
        }
    }
}

/// One translation's worth of facts for the status writer.
#[derive(Debug, Default)]
pub struct StatusInput {
    pub objects: Objects,
    pub diagnostics: Vec<Diagnostic>,
    /// Ingresses and AIRoutes of our class that were translated.
    pub accepted: Vec<ObjectRef>,
}

/// Settings from the command line.
#[derive(Debug, Clone)]
pub struct StatusSettings {
    /// `namespace/name` of the Service whose address is published.
    pub publish_service: Option<String>,
    /// Addresses published as they are (IPs or host names).
    pub publish_address: Vec<String>,
    pub write_timeout: Duration,
    /// Delay before retrying after a failed write.
    pub retry_after: Duration,
    /// `Reporter.instance` for Events (the pod name).
    pub instance: String,
}

// --------------------------------------------------------------------------- pure part

/// Condition types and reasons written on AIRoutes.
pub mod reasons {
    pub const ACCEPTED: &str = "Accepted";
    pub const RESOLVED_REFS: &str = "ResolvedRefs";
    pub const READY: &str = "Ready";
    pub const INVALID: &str = "Invalid";
    pub const CONFLICT: &str = "Conflict";
    pub const REF_NOT_FOUND: &str = "RefNotFound";
    pub const NOT_READY: &str = "NotReady";
}

/// The status an AIRoute should show, given the diagnostics naming it. Conditions whose
/// status did not change keep their `lastTransitionTime` (as `meta.SetStatusCondition`).
pub fn airroute_status(route: &AIRoute, diagnostics: &[&Diagnostic], now: &str) -> AIRouteStatus {
    let generation = route.metadata.generation;
    let errors = |p: Problem| -> Vec<&Diagnostic> {
        diagnostics
            .iter()
            .copied()
            .filter(|d| d.severity == Severity::Error && d.problem == p)
            .collect()
    };
    let invalid = errors(Problem::Invalid);
    let conflicts = errors(Problem::Conflict);
    let missing = errors(Problem::RefNotFound);

    let accepted = if let Some(first) = invalid.first() {
        cond(
            reasons::ACCEPTED,
            false,
            reason_of(first, reasons::INVALID),
            join(&invalid),
        )
    } else if let Some(first) = conflicts.first() {
        cond(
            reasons::ACCEPTED,
            false,
            reason_of(first, reasons::CONFLICT),
            join(&conflicts),
        )
    } else {
        cond(
            reasons::ACCEPTED,
            true,
            reasons::ACCEPTED,
            "the route is valid and served".into(),
        )
    };
    let resolved = if let Some(first) = missing.first() {
        cond(
            reasons::RESOLVED_REFS,
            false,
            reason_of(first, reasons::REF_NOT_FOUND),
            join(&missing),
        )
    } else {
        cond(
            reasons::RESOLVED_REFS,
            true,
            reasons::RESOLVED_REFS,
            "all references resolved".into(),
        )
    };
    let ready = if accepted.status == "True" && resolved.status == "True" {
        cond(
            reasons::READY,
            true,
            reasons::READY,
            "serving traffic".into(),
        )
    } else {
        let failing = if accepted.status != "True" {
            &accepted
        } else {
            &resolved
        };
        cond(
            reasons::READY,
            false,
            reasons::NOT_READY,
            format!("{} is False: {}", failing.type_, failing.message),
        )
    };

    let previous = route
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or(&[]);
    let conditions = [accepted, resolved, ready]
        .into_iter()
        .map(|mut c| {
            c.observed_generation = generation;
            c.last_transition_time = previous
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == c.status)
                .and_then(|p| p.last_transition_time.clone())
                .or_else(|| Some(now.to_string()));
            c
        })
        .collect();
    AIRouteStatus {
        observed_generation: generation,
        conditions,
    }
}

fn cond(type_: &str, ok: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        // metav1.Condition caps messages at 32768 bytes.
        message: truncate(message, 32_000),
        last_transition_time: None,
        observed_generation: None,
    }
}

fn reason_of<'a>(d: &'a Diagnostic, fallback: &'a str) -> &'a str {
    // Condition reasons must be CamelCase identifiers.
    if !d.reason.is_empty() && d.reason.chars().all(|c| c.is_ascii_alphanumeric()) {
        &d.reason
    } else {
        fallback
    }
}

fn join(ds: &[&Diagnostic]) -> String {
    ds.iter()
        .map(|d| {
            if d.field.is_empty() {
                d.message.clone()
            } else {
                format!("{}: {}", d.field, d.message)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// `status.loadBalancer.ingress` entries for addresses: IPs as `ip`, the rest as `hostname`.
pub fn load_balancer_entries(addresses: &[String]) -> Vec<IngressLoadBalancerIngress> {
    let mut seen = HashSet::new();
    addresses
        .iter()
        .map(|a| a.trim())
        .filter(|a| !a.is_empty() && seen.insert(a.to_string()))
        .map(|a| {
            if a.parse::<IpAddr>().is_ok() {
                IngressLoadBalancerIngress {
                    ip: Some(a.to_string()),
                    ..Default::default()
                }
            } else {
                IngressLoadBalancerIngress {
                    hostname: Some(a.to_string()),
                    ..Default::default()
                }
            }
        })
        .collect()
}

/// The addresses a `--publish-service` Service offers: its load balancer's, else its
/// external IPs, else its cluster IP.
pub fn service_addresses(svc: &Service) -> Vec<String> {
    let lb: Vec<String> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ing| {
            ing.iter()
                .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
                .collect()
        })
        .unwrap_or_default();
    if !lb.is_empty() {
        return lb;
    }
    let spec = svc.spec.as_ref();
    let external = spec
        .and_then(|s| s.external_ips.clone())
        .unwrap_or_default();
    if !external.is_empty() {
        return external;
    }
    spec.and_then(|s| s.cluster_ip.clone())
        .filter(|ip| !ip.is_empty() && ip != "None")
        .into_iter()
        .collect()
}

/// Whether field manager airgate owns the Ingress's `status.loadBalancer` (it published
/// an address there).
fn wrote_load_balancer(ing: &Ingress) -> bool {
    ing.metadata.managed_fields.iter().flatten().any(|m| {
        m.manager.as_deref() == Some(FIELD_MANAGER)
            && m.subresource.as_deref() == Some("status")
            && m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:status/f:loadBalancer").is_some())
    })
}

fn ingress_entries(ing: &Ingress) -> Vec<IngressLoadBalancerIngress> {
    ing.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default()
}

/// A Warning Event worth publishing once: the object, reason and message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EventKey {
    object: ObjectRef,
    reason: String,
    note: String,
}

fn event_key(d: &Diagnostic) -> EventKey {
    EventKey {
        object: d.object.clone(),
        reason: if d.reason.is_empty() {
            match d.problem {
                Problem::Invalid => reasons::INVALID.into(),
                Problem::RefNotFound => reasons::REF_NOT_FOUND.into(),
                Problem::Conflict => reasons::CONFLICT.into(),
            }
        } else {
            d.reason.clone()
        },
        note: truncate(
            if d.field.is_empty() {
                d.message.clone()
            } else {
                format!("{}: {}", d.field, d.message)
            },
            1000,
        ),
    }
}

fn api_version_of(kind: &str) -> &'static str {
    match kind {
        "AIRoute" => "airgate.dev/v1alpha1",
        "Ingress" | "IngressClass" => "networking.k8s.io/v1",
        "EndpointSlice" => "discovery.k8s.io/v1",
        _ => "v1",
    }
}

fn uid_of(objects: &Objects, r: &ObjectRef) -> Option<String> {
    let matches = |m: &kube::api::ObjectMeta| {
        m.name.as_deref() == Some(&r.name) && m.namespace.as_deref().unwrap_or("") == r.namespace
    };
    let meta = match r.kind.as_str() {
        "AIRoute" => objects
            .airroutes
            .iter()
            .map(|o| &o.metadata)
            .find(|m| matches(m)),
        "Ingress" => objects
            .ingresses
            .iter()
            .map(|o| &o.metadata)
            .find(|m| matches(m)),
        "IngressClass" => objects
            .ingress_classes
            .iter()
            .map(|o| &o.metadata)
            .find(|m| matches(m)),
        "Service" => objects
            .services
            .iter()
            .map(|o| &o.metadata)
            .find(|m| matches(m)),
        "Secret" => objects
            .secrets
            .iter()
            .map(|o| &o.metadata)
            .find(|m| matches(m)),
        _ => None,
    };
    meta.and_then(|m| m.uid.clone())
}

// --------------------------------------------------------------------------- writer

/// Writes status for one translation at a time. Owned by the status task.
pub struct StatusWriter {
    client: Client,
    settings: StatusSettings,
    recorder: Recorder,
    /// Events already published for problems that still exist; a problem that goes
    /// away and comes back is reported again.
    reported: HashSet<EventKey>,
}

impl StatusWriter {
    pub fn new(client: Client, settings: StatusSettings) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "airgate".into(),
                instance: Some(settings.instance.clone()),
            },
        );
        StatusWriter {
            client,
            settings,
            recorder,
            reported: HashSet::new(),
        }
    }

    /// Bring every object's status in line with `input`. Returns the errors (each write
    /// is independent: one failure does not stop the others).
    pub async fn sync(&mut self, input: &StatusInput) -> Vec<Error> {
        let mut errors = Vec::new();
        self.sync_airroutes(input, &mut errors).await;
        self.sync_ingresses(input, &mut errors).await;
        self.publish_events(input).await;
        errors
    }

    async fn sync_airroutes(&self, input: &StatusInput, errors: &mut Vec<Error>) {
        let accepted: HashSet<&ObjectRef> = input.accepted.iter().collect();
        let mut by_object: BTreeMap<&ObjectRef, Vec<&Diagnostic>> = BTreeMap::new();
        for d in &input.diagnostics {
            by_object.entry(&d.object).or_default().push(d);
        }
        let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        for route in &input.objects.airroutes {
            let r = ObjectRef {
                kind: "AIRoute".into(),
                namespace: route.metadata.namespace.clone().unwrap_or_default(),
                name: route.metadata.name.clone().unwrap_or_default(),
            };
            let diags = by_object.get(&r).map(Vec::as_slice).unwrap_or(&[]);
            // Routes of another class are not ours to write.
            if !accepted.contains(&r) && diags.is_empty() {
                continue;
            }
            let wanted = airroute_status(route, diags, &now);
            if route.status.as_ref() == Some(&wanted) {
                continue;
            }
            let body = serde_json::json!({
                "apiVersion": "airgate.dev/v1alpha1",
                "kind": "AIRoute",
                "status": wanted,
            });
            let api: Api<AIRoute> = Api::namespaced(self.client.clone(), &r.namespace);
            if let Err(e) = self
                .write("airroute", &r, || async {
                    api.patch_status(
                        &r.name,
                        &PatchParams::apply(FIELD_MANAGER).force(),
                        &Patch::Apply(&body),
                    )
                    .await
                    .map(|_| ())
                })
                .await
            {
                errors.push(e);
            }
        }
    }

    async fn sync_ingresses(&self, input: &StatusInput, errors: &mut Vec<Error>) {
        let accepted: HashSet<&ObjectRef> = input
            .accepted
            .iter()
            .filter(|r| r.kind == "Ingress")
            .collect();
        let ref_of = |ing: &Ingress| ObjectRef {
            kind: "Ingress".into(),
            namespace: ing.metadata.namespace.clone().unwrap_or_default(),
            name: ing.metadata.name.clone().unwrap_or_default(),
        };
        // An Ingress that is no longer ours (its class changed) gives back the address we
        // published on it, so what reads it (external-dns, kubectl) stops pointing here.
        // Applying no status with our field manager removes exactly the fields we own;
        // another controller's address, written under its own manager, stays.
        for ing in &input.objects.ingresses {
            let r = ref_of(ing);
            if accepted.contains(&r) || !wrote_load_balancer(ing) {
                continue;
            }
            let body = serde_json::json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "status": {},
            });
            if let Err(e) = self.apply_ingress_status(&r, &body).await {
                errors.push(e);
            }
        }

        let addresses = match self.publish_addresses().await {
            Ok(Some(a)) => a,
            // Nothing to publish: leave Ingress status alone.
            Ok(None) => return,
            Err(e) => {
                errors.push(e);
                return;
            }
        };
        let wanted = load_balancer_entries(&addresses);
        for ing in &input.objects.ingresses {
            let r = ref_of(ing);
            if !accepted.contains(&r) || ingress_entries(ing) == wanted {
                continue;
            }
            let body = serde_json::json!({
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "status": {"loadBalancer": {"ingress": wanted}},
            });
            if let Err(e) = self.apply_ingress_status(&r, &body).await {
                errors.push(e);
            }
        }
    }

    /// Server-side apply of `body` to the Ingress's status, as field manager airgate.
    async fn apply_ingress_status(
        &self,
        r: &ObjectRef,
        body: &serde_json::Value,
    ) -> Result<(), Error> {
        let api: Api<Ingress> = Api::namespaced(self.client.clone(), &r.namespace);
        self.write("ingress", r, || async {
            api.patch_status(
                &r.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(body),
            )
            .await
            .map(|_| ())
        })
        .await
    }

    /// `None` when neither `--publish-service` nor `--publish-address` is set.
    async fn publish_addresses(&self) -> Result<Option<Vec<String>>, Error> {
        if let Some(svc) = &self.settings.publish_service {
            let (ns, name) = svc.split_once('/').unwrap_or(("default", svc.as_str()));
            let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
            let got = tokio::time::timeout(self.settings.write_timeout, api.get_opt(name))
                .await
                .map_err(|_| Error::PublishService {
                    service: svc.clone(),
                    message: "timed out".into(),
                })?
                .map_err(|e| Error::PublishService {
                    service: svc.clone(),
                    message: e.to_string(),
                })?;
            let Some(got) = got else {
                return Err(Error::PublishService {
                    service: svc.clone(),
                    message: "not found (check --publish-service)".into(),
                });
            };
            return Ok(Some(service_addresses(&got)));
        }
        if self.settings.publish_address.is_empty() {
            Ok(None)
        } else {
            Ok(Some(self.settings.publish_address.clone()))
        }
    }

    async fn write<F, Fut>(&self, kind: &str, object: &ObjectRef, call: F) -> Result<(), Error>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(), kube::Error>>,
    {
        let m = crate::telemetry::metrics();
        let timer = m.status_write_duration.start_timer();
        let result = match tokio::time::timeout(self.settings.write_timeout, call()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(Error::Write {
                object: object.clone(),
                source,
            }),
            Err(_) => Err(Error::Timeout {
                object: object.clone(),
                timeout: self.settings.write_timeout,
            }),
        };
        timer.observe_duration();
        let label = match &result {
            Ok(()) => "success",
            Err(e) => e.metric_label(),
        };
        m.status_writes.with_label_values(&[kind, label]).inc();
        match &result {
            Ok(()) => tracing::debug!(%object, "status written"),
            Err(e) => tracing::warn!(error = %e, "status write failed; will retry"),
        }
        result
    }

    async fn publish_events(&mut self, input: &StatusInput) {
        let current: HashSet<EventKey> = input.diagnostics.iter().map(event_key).collect();
        self.reported.retain(|k| current.contains(k));
        for d in &input.diagnostics {
            let key = event_key(d);
            if self.reported.contains(&key) {
                continue;
            }
            let reference = ObjectReference {
                api_version: Some(api_version_of(&d.object.kind).into()),
                kind: Some(d.object.kind.clone()),
                name: Some(d.object.name.clone()),
                namespace: (!d.object.namespace.is_empty()).then(|| d.object.namespace.clone()),
                uid: uid_of(&input.objects, &d.object),
                ..Default::default()
            };
            let event = KubeEvent {
                type_: EventType::Warning,
                reason: key.reason.clone(),
                note: Some(key.note.clone()),
                action: "Translate".into(),
                secondary: None,
            };
            let published = tokio::time::timeout(
                self.settings.write_timeout,
                self.recorder.publish(&event, &reference),
            )
            .await;
            let label = match published {
                Ok(Ok(())) => {
                    self.reported.insert(key);
                    "success"
                }
                Ok(Err(e)) => {
                    tracing::warn!(object = %d.object, error = %e, "publishing Event failed");
                    "error"
                }
                Err(_) => "timeout",
            };
            crate::telemetry::metrics()
                .status_writes
                .with_label_values(&["event", label])
                .inc();
        }
    }
}

/// Run the writer: whenever a new translation arrives or we become leader, and we lead,
/// sync status; after a failure, retry the newest input after `retry_after`.
pub fn spawn(
    client: Client,
    settings: StatusSettings,
    mut leader: watch::Receiver<bool>,
    mut inputs: watch::Receiver<Option<Arc<StatusInput>>>,
    mut shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let retry_after = settings.retry_after;
    let mut writer = StatusWriter::new(client, settings);
    tokio::spawn(async move {
        let mut retry = false;
        loop {
            let wait_retry = async {
                if retry {
                    tokio::time::sleep(retry_after).await
                } else {
                    std::future::pending::<()>().await
                }
            };
            tokio::select! {
                r = inputs.changed() => if r.is_err() { break },
                r = leader.changed() => if r.is_err() { break },
                _ = wait_retry => {}
                _ = shutdown.changed() => break,
            }
            if !*leader.borrow_and_update() {
                retry = false;
                continue;
            }
            let Some(input) = inputs.borrow_and_update().clone() else {
                continue;
            };
            let errors = writer.sync(&input).await;
            retry = !errors.is_empty();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(generation: i64, status: Option<AIRouteStatus>) -> AIRoute {
        let mut r = AIRoute::new("r", Default::default());
        r.metadata.namespace = Some("ai".into());
        r.metadata.generation = Some(generation);
        r.status = status;
        r
    }

    fn diag(problem: Problem, field: &str, reason: &str, message: &str) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            problem,
            object: ObjectRef {
                kind: "AIRoute".into(),
                namespace: "ai".into(),
                name: "r".into(),
            },
            field: field.into(),
            message: message.into(),
            reason: reason.into(),
        }
    }

    fn get<'a>(s: &'a AIRouteStatus, t: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .expect("condition present")
    }

    #[test]
    fn a_clean_route_is_accepted_resolved_and_ready() {
        let s = airroute_status(&route(3, None), &[], "2026-01-01T00:00:00Z");
        assert_eq!(s.observed_generation, Some(3));
        for t in ["Accepted", "ResolvedRefs", "Ready"] {
            assert_eq!(get(&s, t).status, "True", "{t}");
            assert_eq!(get(&s, t).observed_generation, Some(3));
        }
    }

    #[test]
    fn a_missing_service_makes_resolved_refs_false_naming_it() {
        let d = diag(
            Problem::RefNotFound,
            "spec.routes[0].backend.service.name",
            "ServiceNotFound",
            "Service ai/kokoro not found",
        );
        let s = airroute_status(&route(1, None), &[&d], "t0");
        let rr = get(&s, "ResolvedRefs");
        assert_eq!(
            (rr.status.as_str(), rr.reason.as_str()),
            ("False", "ServiceNotFound")
        );
        assert!(rr.message.contains("ai/kokoro"), "{}", rr.message);
        assert!(rr.message.contains("spec.routes[0].backend.service.name"));
        assert_eq!(get(&s, "Accepted").status, "True");
        assert_eq!(get(&s, "Ready").status, "False");
    }

    #[test]
    fn an_invalid_field_makes_accepted_false_naming_the_field() {
        let d = diag(
            Problem::Invalid,
            "spec.rateZones[0].rate",
            "InvalidRate",
            "bad rate",
        );
        let s = airroute_status(&route(1, None), &[&d], "t0");
        let a = get(&s, "Accepted");
        assert_eq!(
            (a.status.as_str(), a.reason.as_str()),
            ("False", "InvalidRate")
        );
        assert!(a.message.starts_with("spec.rateZones[0].rate"));
        assert_eq!(get(&s, "Ready").status, "False");
    }

    #[test]
    fn transition_time_is_kept_while_status_holds_and_reset_when_it_flips() {
        let first = airroute_status(&route(1, None), &[], "t0");
        // Same facts later: identical status, so the writer skips the write.
        let again = airroute_status(&route(2, Some(first.clone())), &[], "t1");
        assert_eq!(
            get(&again, "Ready").last_transition_time.as_deref(),
            Some("t0")
        );
        let same_gen = airroute_status(&route(1, Some(first.clone())), &[], "t1");
        assert_eq!(
            same_gen, first,
            "unchanged facts must give an identical status"
        );
        let d = diag(Problem::RefNotFound, "f", "ServiceNotFound", "m");
        let flipped = airroute_status(&route(2, Some(first)), &[&d], "t2");
        assert_eq!(
            get(&flipped, "Ready").last_transition_time.as_deref(),
            Some("t2")
        );
        assert_eq!(
            get(&flipped, "Accepted").last_transition_time.as_deref(),
            Some("t0")
        );
    }

    #[test]
    fn warnings_do_not_fail_conditions() {
        let mut d = diag(Problem::Invalid, "f", "X", "m");
        d.severity = Severity::Warning;
        let s = airroute_status(&route(1, None), &[&d], "t0");
        assert_eq!(get(&s, "Ready").status, "True");
    }

    #[test]
    fn addresses_become_ip_or_hostname_entries() {
        let e = load_balancer_entries(&[
            "127.0.0.1".into(),
            "lb.example.com".into(),
            "::1".into(),
            "127.0.0.1".into(),
        ]);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(e[1].hostname.as_deref(), Some("lb.example.com"));
        assert_eq!(e[2].ip.as_deref(), Some("::1"));
    }

    #[test]
    fn publish_service_prefers_lb_then_external_then_cluster_ip() {
        let mut svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "s"},
            "spec": {"clusterIP": "10.96.0.10", "externalIPs": ["192.0.2.7"]},
            "status": {"loadBalancer": {"ingress": [{"hostname": "lb.example.com"}]}}
        }))
        .expect("valid service");
        assert_eq!(service_addresses(&svc), vec!["lb.example.com"]);
        svc.status = None;
        assert_eq!(service_addresses(&svc), vec!["192.0.2.7"]);
        svc.spec.as_mut().expect("spec").external_ips = None;
        assert_eq!(service_addresses(&svc), vec!["10.96.0.10"]);
    }
}
