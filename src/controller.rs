//! `airgate controller`: cluster mode. Watches the API server, translates on every change
//! (debounced) and on a timer, publishes the snapshot to the data plane, and (on the
//! elected leader only) writes status.
//!
//! The reconcile loop is the only place the control side touches the data side, through
//! [`Runtime::publish`], which swaps one snapshot off the request path.
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Client;
use tokio::sync::watch;

use crate::cli::ControllerArgs;
use crate::runtime::Runtime;
use crate::source::kube::{KubeSource, WatchScope};
use crate::status::lease::{self, LeaseSettings};
use crate::status::{self, StatusInput, StatusSettings};
use crate::translate::{self, Options, Severity};

/// Errors that stop the controller from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no Kubernetes configuration: not in a cluster and no usable KUBECONFIG ({0}); set KUBECONFIG or run in a pod"
    )]
    Client(#[source] kube::Error),
    #[error(transparent)]
    Serve(#[from] crate::serve::Error),
}

/// Timing of the reconcile loop.
#[derive(Debug, Clone, Copy)]
pub struct LoopSettings {
    /// Wait this long after a change for more changes before translating, so a burst of
    /// events (a `kubectl apply` of many objects, an initial list) costs one translation.
    pub debounce: Duration,
    /// Re-translate this often even without changes.
    pub resync: Duration,
}

impl Default for LoopSettings {
    fn default() -> Self {
        LoopSettings {
            debounce: Duration::from_millis(150),
            resync: Duration::from_secs(300),
        }
    }
}

/// Run the reconcile loop until `shutdown` fires: wait for a change, translate, publish,
/// hand the translation to the status writer. `/readyz` turns ready after the first
/// publish that follows a complete initial sync of every watch.
pub async fn reconcile_loop(
    source: KubeSource,
    runtime: Arc<Runtime>,
    options: Options,
    settings: LoopSettings,
    status_tx: watch::Sender<Option<Arc<StatusInput>>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let changed = source.changed();
    let mut resync = tokio::time::interval(settings.resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let metrics = crate::telemetry::metrics();
    loop {
        tokio::select! {
            _ = changed.notified() => {
                // Debounce: let the rest of a burst arrive. Notifications that come in
                // meanwhile are coalesced into the one permit `Notify` keeps.
                tokio::select! {
                    _ = tokio::time::sleep(settings.debounce) => {}
                    _ = shutdown.changed() => return,
                }
            }
            _ = resync.tick() => {}
            _ = shutdown.changed() => return,
        }
        if !source.is_synced() {
            // A partial view would drop routes whose objects are not listed yet.
            continue;
        }
        let started = Instant::now();
        let objects = source.objects();
        let translation = translate::translate(&objects, &options);
        let errors = translation
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count();
        for d in &translation.diagnostics {
            tracing::debug!(diagnostic = %d, "translation diagnostic");
        }
        let (generation, previous) = runtime.swap_in(translation.config);
        metrics
            .config_reload_duration
            .observe(started.elapsed().as_secs_f64());
        drop(previous);
        metrics.config_reloads.with_label_values(&["success"]).inc();
        metrics
            .translation_errors
            .set(i64::try_from(errors).unwrap_or(i64::MAX));
        if !runtime.is_ready() {
            tracing::info!(generation, "initial sync complete; ready");
            runtime.set_ready(true);
        }
        tracing::debug!(
            generation,
            errors,
            accepted = translation.accepted.len(),
            "published configuration"
        );
        status_tx.send_replace(Some(Arc::new(StatusInput {
            objects,
            diagnostics: translation.diagnostics,
            accepted: translation.accepted,
        })));
    }
}

/// The Lease namespace: `--election-namespace`, else `POD_NAMESPACE`, else `default`.
pub fn election_namespace(args: &ControllerArgs) -> String {
    args.election_namespace
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "default".into())
}

/// Entry point of `airgate controller`: logging, the tokio runtime, then [`run_async`].
pub fn run(args: ControllerArgs) -> Result<(), Error> {
    crate::telemetry::init_logging(args.proxy.log_format);
    let rt = crate::serve::tokio_runtime(args.proxy.worker_threads)?;
    rt.block_on(run_async(args))
}

/// Cluster mode on the current runtime: connect to the API server, then serve the data
/// plane and admin listeners exactly as `serve` does, with the watches, the reconcile loop,
/// leader election and the status writer as the configuration source.
pub async fn run_async(args: ControllerArgs) -> Result<(), Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let _access_log = crate::telemetry::access::init(&args.proxy.access_log, args.proxy.log_format)
        .map_err(crate::serve::Error::AccessLog)?;
    let client = Client::try_default().await.map_err(Error::Client)?;
    let runtime = Runtime::new();
    let proxy_args = args.proxy.clone();
    crate::serve::run_data_plane(&proxy_args, runtime.clone(), move |shutdown| {
        control_plane(client, args, runtime, shutdown)
    })
    .await?;
    Ok(())
}

/// Everything cluster mode adds to the data plane; returns once `shutdown` resolves and
/// the Lease is released.
async fn control_plane(
    client: Client,
    args: ControllerArgs,
    runtime: Arc<Runtime>,
    shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let source = KubeSource::start(
        client.clone(),
        &WatchScope {
            namespaces: args.watch_namespace.clone(),
        },
    );
    let identity = LeaseSettings::default_identity();
    let (leader_rx, lease_task) = lease::spawn(
        client.clone(),
        LeaseSettings {
            name: args.election_id.clone(),
            namespace: election_namespace(&args),
            identity: identity.clone(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(2),
            call_timeout: Duration::from_secs(5),
        },
        shutdown_rx.clone(),
    );
    let (status_tx, status_rx) = watch::channel(None);
    let status_task = status::spawn(
        client,
        StatusSettings {
            publish_service: args.publish_service.clone(),
            publish_address: args.publish_address.clone(),
            write_timeout: Duration::from_secs(10),
            retry_after: Duration::from_secs(2),
            instance: identity,
        },
        leader_rx,
        status_rx,
        shutdown_rx.clone(),
    );
    let options = Options {
        ingress_class: args.proxy.ingress_class.clone(),
        ..Options::default()
    };
    let loop_task = tokio::spawn(reconcile_loop(
        source,
        runtime,
        options,
        LoopSettings::default(),
        status_tx,
        shutdown_rx,
    ));
    shutdown.await;
    let _ = shutdown_tx.send(true);
    // Releasing the Lease lets another replica take over status at once; bounded so a
    // dead API server cannot hold up the exit.
    let _ = tokio::time::timeout(Duration::from_secs(5), lease_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), status_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), loop_task).await;
}
