//! `airgate controller`: cluster mode. Watches the API server, translates on every change
//! (debounced) and on a timer, publishes the snapshot to the data plane, and (on the
//! elected leader only) writes status.
//!
//! The reconcile loop is the only place the control side touches the data side, through
//! [`Runtime::publish`], which swaps one snapshot off the request path.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Client;
use tokio::sync::watch;

use crate::cli::ControllerArgs;
use crate::proxy::{BoundProxy, ProxySettings};
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
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
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
        let generation = runtime.publish(translation.config);
        metrics
            .config_reload_duration
            .observe(started.elapsed().as_secs_f64());
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

/// Entry point of `airgate controller`.
pub async fn run(args: ControllerArgs) -> Result<(), Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::try_default().await.map_err(Error::Client)?;
    let runtime = Runtime::new();

    let settings = ProxySettings {
        http_addr: args.proxy.http_addr,
        https_addr: args.proxy.https_addr,
        trusted_proxies: args.proxy.trusted_proxies.clone(),
        shutdown_grace: args.proxy.shutdown_grace,
    };
    let proxy = BoundProxy::bind(settings, runtime.clone())
        .await
        .map_err(|source| Error::Bind {
            what: "proxy listeners",
            addr: args.proxy.http_addr,
            source,
        })?;
    let admin = tokio::net::TcpListener::bind(args.proxy.admin_addr)
        .await
        .map_err(|source| Error::Bind {
            what: "admin listener",
            addr: args.proxy.admin_addr,
            source,
        })?;
    let admin_addr = admin.local_addr().map_err(Error::Serve)?;
    tracing::info!(
        "listening http={} https={} admin={}",
        proxy.http_addr(),
        proxy.https_addr(),
        admin_addr
    );

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let admin_task = tokio::spawn(admin::serve(admin, runtime.clone(), shutdown_rx.clone()));

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
        runtime.clone(),
        options,
        LoopSettings::default(),
        status_tx,
        shutdown_rx.clone(),
    ));

    let signal_tx = shutdown_tx.clone();
    let served = proxy
        .serve(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: draining connections");
            let _ = signal_tx.send(true);
        })
        .await;
    let _ = shutdown_tx.send(true);
    // The Lease is released on the way out so another replica takes over status at once.
    let _ = tokio::time::timeout(Duration::from_secs(5), lease_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), status_task).await;
    loop_task.abort();
    admin_task.abort();
    served.map_err(Error::Serve)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Minimal admin endpoints for cluster mode (`/healthz`, `/readyz`, `/metrics`).
// TODO(lead): replace with the shared `crate::admin` server once it lands in main.
mod admin {
    use std::convert::Infallible;
    use std::sync::Arc;

    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::net::TcpListener;
    use tokio::sync::watch;

    use crate::runtime::Runtime;

    pub async fn serve(
        listener: TcpListener,
        runtime: Arc<Runtime>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin accept failed");
                        continue;
                    }
                },
                _ = shutdown.changed() => return,
            };
            let runtime = runtime.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let runtime = runtime.clone();
                    async move { Ok::<_, Infallible>(handle(&req, &runtime)) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    }

    fn handle<B>(req: &Request<B>, runtime: &Runtime) -> Response<Full<Bytes>> {
        let (status, body) = match req.uri().path() {
            "/healthz" => (StatusCode::OK, "ok\n".to_string()),
            "/readyz" if runtime.is_ready() => (StatusCode::OK, "ok\n".to_string()),
            "/readyz" => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: initial sync with the API server not complete\n".to_string(),
            ),
            "/metrics" => (StatusCode::OK, crate::telemetry::metrics().encode()),
            _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
        };
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        resp
    }
}
