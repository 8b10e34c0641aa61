//! The hyper data plane: listeners, the per-request pipeline, forwarding, upgrades.
//! Contract used by `main`, the admin server and tests: [`ProxySettings`],
//! [`BoundProxy::bind`], [`BoundProxy::serve`].
//!
//! Each request loads the current snapshot once and keeps it to the end of its response
//! body or WebSocket tunnel, so a publish never disturbs anything in flight.
mod body;
mod errors;
mod forward;
mod headers;
mod http1;
mod pipeline;
mod server;
mod upgrade;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::runtime::Runtime;
use crate::upstream::Upstreams;

pub use errors::json_error;
pub use forward::upstream_path;

/// Listener and trust settings of the data plane.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    pub http_addr: SocketAddr,
    pub https_addr: SocketAddr,
    /// Peers whose forwarding headers are trusted.
    pub trusted_proxies: Vec<IpNet>,
    /// How long shutdown waits for in-flight requests and streams.
    pub shutdown_grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

impl From<ProxyError> for std::io::Error {
    fn from(e: ProxyError) -> Self {
        match e {
            ProxyError::Bind { source, .. } => source,
            other => std::io::Error::other(other),
        }
    }
}

/// The data plane with its sockets bound (so callers can learn ports bound as `:0`).
pub struct BoundProxy {
    settings: ProxySettings,
    runtime: Arc<Runtime>,
    http: TcpListener,
    https: TcpListener,
    http_addr: SocketAddr,
    https_addr: SocketAddr,
    default_cert: Arc<CertifiedKey>,
    upstreams: Arc<Upstreams>,
}

impl BoundProxy {
    pub async fn bind(settings: ProxySettings, runtime: Arc<Runtime>) -> std::io::Result<Self> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ProxyError::Bind { addr, source })
        };
        let http = bind(settings.http_addr).await?;
        let https = bind(settings.https_addr).await?;
        let http_addr = http.local_addr()?;
        let https_addr = https.local_addr()?;
        let default_cert = crate::tls::default_certificate().map_err(ProxyError::from)?;
        let upstreams = Upstreams::new().map_err(ProxyError::from)?;
        Ok(BoundProxy {
            settings,
            runtime,
            http,
            https,
            http_addr,
            https_addr,
            default_cert,
            upstreams,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn https_addr(&self) -> SocketAddr {
        self.https_addr
    }

    /// The self-signed certificate served to clients without SNI or with an unknown name.
    pub fn default_certificate(&self) -> &Arc<CertifiedKey> {
        &self.default_cert
    }

    /// Serve until `shutdown` completes, then stop accepting and drain in-flight requests,
    /// streams and WebSockets for up to `shutdown_grace`; whatever is left is closed.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let tls = crate::tls::server_config(self.runtime.clone(), self.default_cert.clone())
            .map_err(ProxyError::from)?;
        let acceptor = TlsAcceptor::from(tls);
        let shared = Arc::new(server::Shared {
            runtime: self.runtime.clone(),
            upstreams: self.upstreams.clone(),
            trusted_proxies: self.settings.trusted_proxies.clone(),
            builder: server::builder(),
        });
        let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
        let (graceful_tx, graceful_rx) = watch::channel(false);
        let (hard_tx, hard_rx) = watch::channel(false);
        let life = server::Lifecycle {
            drain: drain_tx,
            graceful: graceful_rx,
            hard_stop: hard_rx,
        };

        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.http.accept() => match accepted {
                    Ok((tcp, peer)) => server::spawn_connection(shared.clone(), tcp, peer, None, life.clone()),
                    Err(e) => accept_error(e).await,
                },
                accepted = self.https.accept() => match accepted {
                    Ok((tcp, peer)) => server::spawn_connection(shared.clone(), tcp, peer, Some(acceptor.clone()), life.clone()),
                    Err(e) => accept_error(e).await,
                },
            }
        }
        drop(self.http);
        drop(self.https);
        let _ = graceful_tx.send(true);
        drop(life);
        // `recv` yields `None` once every connection and tunnel dropped its token.
        let drained = tokio::time::timeout(self.settings.shutdown_grace, drain_rx.recv()).await;
        if drained.is_err() {
            tracing::warn!(grace = ?self.settings.shutdown_grace, "shutdown grace period over; closing remaining connections");
            let _ = hard_tx.send(true);
        }
        Ok(())
    }
}

/// Accept errors are usually out of file descriptors; back off briefly instead of
/// spinning, and keep serving.
async fn accept_error(e: std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}
