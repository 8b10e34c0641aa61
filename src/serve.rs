//! Wiring of `airgate serve` and `airgate check`: logging, the tokio runtime, the file
//! source, the data plane and the admin server, and an orderly shutdown.
//!
//! [`run_data_plane`] is the part cluster mode shares: it binds the listeners, prints
//! the startup line, runs a configuration source beside them and drains on SIGTERM.
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::admin::AdminServer;
use crate::cli::{CheckArgs, ProxyArgs, ServeArgs};
use crate::proxy::{BoundProxy, ProxySettings};
use crate::runtime::Runtime;
use crate::source::file::{self, FileSource};
use crate::telemetry::{self, access};
use crate::translate::Options;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("starting the async runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error(transparent)]
    Config(#[from] file::Error),
    #[error(
        "cannot listen on {what} address {addr}: {source} (is another process using it? see --{what}-addr)"
    )]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the access log: {0}")]
    AccessLog(#[source] std::io::Error),
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    #[error("data plane: {0}")]
    Proxy(#[source] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Build the tokio runtime: `worker_threads` 0 means one per core.
pub fn tokio_runtime(worker_threads: usize) -> Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("airgate-worker");
    if worker_threads > 0 {
        builder.worker_threads(worker_threads);
    }
    builder.build().map_err(Error::Runtime)
}

/// `airgate serve --config PATH`.
pub fn serve(args: ServeArgs) -> Result<()> {
    telemetry::init_logging(args.proxy.log_format);
    let rt = tokio_runtime(args.proxy.worker_threads)?;
    rt.block_on(serve_async(args))
}

async fn serve_async(args: ServeArgs) -> Result<()> {
    let _access_log =
        access::init(&args.proxy.access_log, args.proxy.log_format).map_err(Error::AccessLog)?;
    let runtime = Runtime::new();
    let options = Options {
        ingress_class: args.proxy.ingress_class.clone(),
        ..Options::default()
    };
    let config = args.config.clone();
    let mut source = FileSource::new(config.clone(), options, runtime.clone());
    // The first load must succeed: serving nothing because of a typo in --config
    // would look healthy while answering 404 to everything.
    source.reload()?;
    runtime.set_ready(true);
    tracing::info!(config = %config.display(), "file mode");
    run_data_plane(&args.proxy, runtime, move |shutdown| async move {
        if let Err(e) = source.watch(shutdown).await {
            tracing::error!(error = %e, "configuration watch stopped; restart to pick up changes");
        }
    })
    .await
}

/// Resolves once shutdown has begun. Cheap to clone; hand one to each task.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// Bind the proxy and admin listeners, log the startup line, run `source` beside them,
/// and serve until SIGTERM/SIGINT; then stop reporting ready, drain, and return.
pub async fn run_data_plane<F, Fut>(
    proxy_args: &ProxyArgs,
    runtime: Arc<Runtime>,
    source: F,
) -> Result<()>
where
    F: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let settings = ProxySettings {
        http_addr: proxy_args.http_addr,
        https_addr: proxy_args.https_addr,
        trusted_proxies: proxy_args.trusted_proxies.clone(),
        shutdown_grace: proxy_args.shutdown_grace,
    };
    let proxy = BoundProxy::bind(settings, runtime.clone())
        .await
        .map_err(|source| bind_error(proxy_args, source))?;
    let admin = AdminServer::bind(proxy_args.admin_addr, runtime.clone())
        .await
        .map_err(|source| Error::Bind {
            what: "admin",
            addr: proxy_args.admin_addr,
            source,
        })?;
    let admin_addr = admin.local_addr().map_err(|source| Error::Bind {
        what: "admin",
        addr: proxy_args.admin_addr,
        source,
    })?;
    // Handlers go in before the startup line: whoever reads it may signal right away.
    let signals = wait_for_signal().await.map_err(Error::Signals)?;
    // Tests and scripts parse this exact line; keep its shape.
    tracing::info!(
        "listening http={} https={} admin={}",
        proxy.http_addr(),
        proxy.https_addr(),
        admin_addr
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let shutdown = Shutdown(stop_rx);
    let source_task = tokio::spawn(source(Box::pin(shutdown.clone().wait())));
    let admin_task = tokio::spawn(admin.serve(shutdown.clone().wait()));

    let grace = proxy_args.shutdown_grace;
    let rt = runtime.clone();
    let stop = async move {
        let name = signals.await;
        // Unready first, so load balancers stop sending while in-flight work drains.
        rt.set_ready(false);
        tracing::info!(signal = name, grace = ?grace, "shutting down; draining in-flight requests");
    };
    let served = proxy.serve(stop).await;
    let _ = stop_tx.send(true);
    let _ = source_task.await;
    let _ = admin_task.await;
    served.map_err(Error::Proxy)?;
    tracing::info!("stopped");
    Ok(())
}

fn bind_error(args: &ProxyArgs, source: std::io::Error) -> Error {
    // BoundProxy binds both listeners; find which one failed by probing the first.
    let http_free = std::net::TcpListener::bind(args.http_addr).is_ok();
    let (what, addr) = if http_free {
        ("https", args.https_addr)
    } else {
        ("http", args.http_addr)
    };
    Error::Bind { what, addr, source }
}

/// Install SIGTERM/SIGINT handlers now (so a signal arriving during startup is not
/// lost) and return a future resolving with the signal's name.
async fn wait_for_signal() -> std::io::Result<impl Future<Output = &'static str> + Send> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}

/// What `airgate check` found.
pub struct CheckReport {
    pub errors: usize,
    pub warnings: usize,
}

/// `airgate check --config PATH`: print every problem with its object, file and field,
/// then a summary. The caller exits non-zero when `errors > 0`.
pub fn check(args: &CheckArgs, out: &mut dyn std::io::Write) -> Result<CheckReport> {
    let options = Options {
        ingress_class: args.ingress_class.clone(),
        ..Options::default()
    };
    let outcome = file::load_and_translate(&args.config, &options)?;
    for (_, line) in outcome.lines() {
        let _ = writeln!(out, "{line}");
    }
    let report = CheckReport {
        errors: outcome.errors(),
        warnings: outcome.warnings(),
    };
    let files = outcome.loaded.files.len();
    let objects = outcome.loaded.objects.origins.len();
    let verdict = if report.errors == 0 { "ok" } else { "failed" };
    let _ = writeln!(
        out,
        "{verdict}: {} ({files} file{}, {objects} object{}): {} error{}, {} warning{}",
        args.config.display(),
        plural(files),
        plural(objects),
        report.errors,
        plural(report.errors),
        report.warnings,
        plural(report.warnings),
    );
    Ok(report)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
