//! Watches on the API server: one kube-runtime reflector per kind and namespace, feeding
//! in-memory stores that [`KubeSource::objects`] turns into translation input.
//!
//! A malformed object never stops a watch: every kind is watched through
//! [`DeserializeGuard`], so an object that does not deserialize is logged, counted
//! (`airgate_watch_events_total{kind="invalid"}`) and left out of translation while the
//! watch carries on (linkerd2's approach).
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use crate::api::AIRoute;
use crate::translate::Objects;

/// How to install the CRD, repeated wherever its absence is reported.
pub const CRD_INSTALL_HINT: &str =
    "install it with `airgate crd | kubectl apply -f -` or `kubectl apply -f crds/airroute.yaml`";

/// Where to watch.
#[derive(Debug, Clone, Default)]
pub struct WatchScope {
    /// Namespaces to watch; all namespaces when empty.
    pub namespaces: Vec<String>,
}

type Stores<K> = Vec<Store<DeserializeGuard<K>>>;

/// The running watches. Cheap to clone; every clone reads the same stores.
#[derive(Clone)]
pub struct KubeSource {
    ingress_classes: Stores<IngressClass>,
    ingresses: Stores<Ingress>,
    airroutes: Stores<AIRoute>,
    services: Stores<Service>,
    endpoint_slices: Stores<EndpointSlice>,
    secrets: Stores<Secret>,
    synced: Arc<[AtomicBool]>,
    changed: Arc<Notify>,
    tasks: Arc<TaskSet>,
}

/// Aborts the watch tasks when the last [`KubeSource`] clone is dropped.
struct TaskSet(Vec<tokio::task::JoinHandle<()>>);

impl Drop for TaskSet {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Per-watch settings shared by [`spawn_watch`] calls.
struct WatchCtx {
    changed: Arc<Notify>,
    synced: Arc<[AtomicBool]>,
    next_slot: usize,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl KubeSource {
    /// Start every watch. Returns at once; the stores fill in the background and
    /// [`KubeSource::changed`] fires on every change and on each completed initial list.
    pub fn start(client: Client, scope: &WatchScope) -> KubeSource {
        let namespaces: Vec<Option<&str>> = if scope.namespaces.is_empty() {
            vec![None]
        } else {
            scope.namespaces.iter().map(|n| Some(n.as_str())).collect()
        };
        // IngressClass is cluster scoped: one watch; five namespaced kinds per namespace.
        let slots = 1 + 5 * namespaces.len();
        let synced: Arc<[AtomicBool]> = (0..slots).map(|_| AtomicBool::new(false)).collect();
        let mut ctx = WatchCtx {
            changed: Arc::new(Notify::new()),
            synced,
            next_slot: 0,
            tasks: Vec::new(),
        };
        let all = watcher::Config::default();
        let ingress_classes = vec![spawn_watch(
            &mut ctx,
            Api::all(client.clone()),
            all.clone(),
            "IngressClass",
        )];
        let mut src = KubeSource {
            ingress_classes,
            ingresses: Vec::new(),
            airroutes: Vec::new(),
            services: Vec::new(),
            endpoint_slices: Vec::new(),
            secrets: Vec::new(),
            synced: ctx.synced.clone(),
            changed: ctx.changed.clone(),
            tasks: Arc::new(TaskSet(Vec::new())),
        };
        for ns in namespaces {
            src.ingresses.push(spawn_watch(
                &mut ctx,
                api(&client, ns),
                all.clone(),
                "Ingress",
            ));
            src.airroutes.push(spawn_watch(
                &mut ctx,
                api(&client, ns),
                all.clone(),
                "AIRoute",
            ));
            src.services.push(spawn_watch(
                &mut ctx,
                api(&client, ns),
                all.clone(),
                "Service",
            ));
            src.endpoint_slices.push(spawn_watch(
                &mut ctx,
                api(&client, ns),
                all.clone(),
                "EndpointSlice",
            ));
            // Only TLS Secrets: never hold every token and password of the cluster in memory.
            src.secrets.push(spawn_watch(
                &mut ctx,
                api(&client, ns),
                all.clone().fields("type=kubernetes.io/tls"),
                "Secret",
            ));
        }
        src.tasks = Arc::new(TaskSet(std::mem::take(&mut ctx.tasks)));
        src
    }

    /// Fires after any change to a watched object and after each watch's initial list.
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// True once every watch has completed its first list (or, for AIRoute, found the CRD
    /// missing, which means there are none).
    pub fn is_synced(&self) -> bool {
        self.synced.iter().all(|s| s.load(Ordering::Acquire))
    }

    /// Everything in the stores, valid objects only, in a stable order.
    pub fn objects(&self) -> Objects {
        Objects {
            ingress_classes: collect(&self.ingress_classes),
            ingresses: collect(&self.ingresses),
            airroutes: collect(&self.airroutes),
            services: collect(&self.services),
            endpoint_slices: collect(&self.endpoint_slices),
            secrets: collect(&self.secrets),
            origins: Default::default(),
        }
    }
}

fn api<K>(client: &Client, ns: Option<&str>) -> Api<DeserializeGuard<K>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn collect<K: Clone + Resource<DynamicType = ()>>(stores: &Stores<K>) -> Vec<Arc<K>> {
    let mut out: Vec<Arc<K>> = stores
        .iter()
        .flat_map(|s| s.state())
        .filter_map(|g| g.0.as_ref().ok().cloned().map(Arc::new))
        .collect();
    // Store order is a hash order; translation input should not depend on it.
    out.sort_by(|a, b| {
        let (ma, mb) = (a.meta(), b.meta());
        (&ma.namespace, &ma.name).cmp(&(&mb.namespace, &mb.name))
    });
    out
}

/// Exponential backoff for failed watches: 250 ms doubling to 5 s, reset on success.
/// Shorter than kube's default (30 s cap) so that a restarted API server or a CRD
/// installed later is noticed within seconds.
#[derive(Debug, Clone, Default)]
pub struct WatchBackoff {
    attempt: u32,
}

impl Iterator for WatchBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let ms = 250u64.saturating_mul(1u64 << self.attempt.min(5));
        self.attempt = self.attempt.saturating_add(1);
        Some(Duration::from_millis(ms.min(5_000)))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.attempt = 0;
    }
}

fn spawn_watch<K>(
    ctx: &mut WatchCtx,
    api: Api<DeserializeGuard<K>>,
    config: watcher::Config,
    kind: &'static str,
) -> Store<DeserializeGuard<K>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let slot = ctx.next_slot;
    ctx.next_slot += 1;
    let synced = ctx.synced.clone();
    let changed = ctx.changed.clone();
    let (reader, writer) = reflector::store();
    let stream = watch(api, config)
        .backoff(WatchBackoff::default())
        .reflect(writer);
    let task = tokio::spawn(async move {
        let metrics = crate::telemetry::metrics();
        let mut stream = std::pin::pin!(stream);
        let mut crd_missing_reports = 0u64;
        // The stream never ends on its own: errors are retried with backoff.
        while let Some(event) = stream.next().await {
            match event {
                Ok(Event::Apply(obj) | Event::Delete(obj)) => {
                    metrics.watch_events.with_label_values(&[kind]).inc();
                    report_invalid(kind, &obj);
                    changed.notify_one();
                }
                Ok(Event::InitApply(obj)) => {
                    metrics.watch_events.with_label_values(&[kind]).inc();
                    report_invalid(kind, &obj);
                }
                Ok(Event::Init) => {}
                Ok(Event::InitDone) => {
                    if crd_missing_reports > 0 {
                        tracing::info!("the AIRoute CRD is installed now; watching AIRoutes");
                        crd_missing_reports = 0;
                    }
                    if !synced[slot].swap(true, Ordering::AcqRel) {
                        tracing::debug!(kind, "initial list complete");
                    }
                    changed.notify_one();
                }
                Err(err) if kind == "AIRoute" && is_not_found(&err) => {
                    // No CRD means no AIRoutes: count the watch as synced so Ingresses are
                    // served and /readyz turns ready, and keep retrying for when it appears.
                    if crd_missing_reports % 60 == 0 {
                        tracing::error!(
                            "the AIRoute CRD (airoutes.airgate.dev) is not installed: {CRD_INSTALL_HINT}; serving Ingresses only and retrying"
                        );
                    }
                    crd_missing_reports += 1;
                    if !synced[slot].swap(true, Ordering::AcqRel) {
                        changed.notify_one();
                    }
                }
                Err(err) => {
                    tracing::warn!(kind, error = %err, "watch failed; retrying with backoff (serving the last good configuration)");
                }
            }
        }
    });
    ctx.tasks.push(task);
    reader
}

fn report_invalid<K: Resource>(kind: &str, obj: &DeserializeGuard<K>) {
    if let Err(invalid) = &obj.0 {
        crate::telemetry::metrics()
            .watch_events
            .with_label_values(&["invalid"])
            .inc();
        tracing::warn!(
            kind,
            namespace = invalid.metadata.namespace.as_deref().unwrap_or(""),
            name = invalid.metadata.name.as_deref().unwrap_or(""),
            error = %invalid.error,
            "skipping {kind} that does not match its schema"
        );
    }
}

fn is_not_found(err: &watcher::Error) -> bool {
    match err {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => {
            matches!(e, kube::Error::Api(s) if s.code == 404)
        }
        watcher::Error::WatchError(s) => s.code == 404,
        watcher::Error::NoResourceVersion => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_cap_and_resets() {
        let mut b = WatchBackoff::default();
        let first: Vec<u128> = b.by_ref().take(8).map(|d| d.as_millis()).collect();
        assert_eq!(first, vec![250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
        b.reset();
        assert_eq!(b.next(), Some(Duration::from_millis(250)));
    }

    #[test]
    fn collect_skips_invalid_objects_and_sorts() {
        let (reader, mut writer) = reflector::store::<DeserializeGuard<Service>>();
        let good = |ns: &str, name: &str| {
            let mut s = Service::default();
            s.metadata.namespace = Some(ns.into());
            s.metadata.name = Some(name.into());
            DeserializeGuard(Ok(s))
        };
        let bad: DeserializeGuard<Service> = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "broken", "namespace": "a"},
            "spec": {"ports": "not-a-list"}
        }))
        .expect("the guard absorbs schema errors");
        assert!(
            bad.0.is_err(),
            "a bad spec must deserialize as InvalidObject"
        );
        writer.apply_watcher_event(&Event::Init);
        for o in [good("b", "x"), bad, good("a", "y"), good("a", "a")] {
            writer.apply_watcher_event(&Event::InitApply(o));
        }
        writer.apply_watcher_event(&Event::InitDone);
        let names: Vec<String> = collect(&vec![reader])
            .into_iter()
            .map(|s| {
                format!(
                    "{}/{}",
                    s.metadata.namespace.as_deref().unwrap_or_default(),
                    s.metadata.name.as_deref().unwrap_or_default()
                )
            })
            .collect();
        assert_eq!(names, vec!["a/a", "a/y", "b/x"]);
    }

    #[test]
    fn not_found_is_recognised() {
        let status = kube::core::Status::failure(
            "the server could not find the requested resource",
            "NotFound",
        )
        .with_code(404);
        let err = watcher::Error::InitialListFailed(kube::Error::Api(status.boxed()));
        assert!(is_not_found(&err));
        let forbidden = kube::core::Status::failure("forbidden", "Forbidden").with_code(403);
        assert!(!is_not_found(&watcher::Error::InitialListFailed(
            kube::Error::Api(forbidden.boxed())
        )));
    }
}
