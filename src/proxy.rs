//! The hyper data plane: listeners, the per-request pipeline, forwarding, upgrades.
//! OWNER: data plane. Contract used by `main`, the admin server and tests:
//! [`ProxySettings`], [`BoundProxy::bind`], [`BoundProxy::serve`].
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use tokio::net::TcpListener;

use crate::runtime::Runtime;

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

/// The data plane with its sockets bound (so callers can learn ports bound as `:0`).
pub struct BoundProxy {
    settings: ProxySettings,
    runtime: Arc<Runtime>,
    http: TcpListener,
    https: TcpListener,
}

impl BoundProxy {
    pub async fn bind(settings: ProxySettings, runtime: Arc<Runtime>) -> std::io::Result<Self> {
        let http = TcpListener::bind(settings.http_addr).await?;
        let https = TcpListener::bind(settings.https_addr).await?;
        Ok(BoundProxy {
            settings,
            runtime,
            http,
            https,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http.local_addr().expect("bound socket has an address")
    }

    pub fn https_addr(&self) -> SocketAddr {
        self.https
            .local_addr()
            .expect("bound socket has an address")
    }

    /// Serve until `shutdown` completes, then stop accepting and drain in-flight requests
    /// and streams for up to `shutdown_grace`.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let _ = (&self.settings, &self.runtime);
        shutdown.await;
        Ok(())
    }
}
