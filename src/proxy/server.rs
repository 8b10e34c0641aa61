//! Listeners and connections: accept loops for the plain and TLS ports, hyper's auto
//! (HTTP/1.1 + h2/h2c) connection builder, and the drain on shutdown.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use super::pipeline::{self, ConnInfo};
use crate::runtime::Runtime;
use crate::upstream::Upstreams;

/// Time a client gets to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client gets to send a complete request head (slowloris bound).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_HEADER_BYTES: usize = 64 * 1024;
const H2_MAX_CONCURRENT_STREAMS: u32 = 256;

/// State every connection shares.
pub struct Shared {
    pub runtime: Arc<Runtime>,
    pub upstreams: Arc<Upstreams>,
    pub trusted_proxies: Vec<IpNet>,
    pub builder: auto::Builder<TokioExecutor>,
}

/// Held by every connection and tunnel: shutdown waits until all drain tokens are gone,
/// and `hard_stop` tells them the grace period is over.
#[derive(Clone)]
pub struct Lifecycle {
    pub drain: mpsc::Sender<()>,
    pub graceful: watch::Receiver<bool>,
    pub hard_stop: watch::Receiver<bool>,
}

pub fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        // hyper's default limit of 100 request headers: it parses them into a stack
        // array, where a larger limit costs a heap allocation per request.
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// Serve one accepted TCP connection (plain or TLS) until it closes, shutdown asks it to
/// finish, or the grace period is over.
pub fn spawn_connection(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    life: Lifecycle,
) {
    let listener = if tls.is_some() { "https" } else { "http" };
    crate::telemetry::metrics()
        .connections
        .with_label_values(&[listener])
        .inc();
    let _ = tcp.set_nodelay(true);
    let local = match tcp.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let conn = Arc::new(ConnInfo::new(peer, local, tls.is_some()));
    tokio::spawn(async move {
        match tls {
            None => serve_io(shared, tcp, conn, life).await,
            Some(acceptor) => {
                let mut hard_stop = life.hard_stop.clone();
                let accepted = tokio::select! {
                    r = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => r,
                    _ = hard_stop.wait_for(|s| *s) => return,
                };
                match accepted {
                    Ok(Ok(stream)) => serve_io(shared, stream, conn, life).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }
        }
    });
}

async fn serve_io<I>(shared: Arc<Shared>, io: I, conn: Arc<ConnInfo>, life: Lifecycle)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut graceful = life.graceful.clone();
    let mut hard_stop = life.hard_stop.clone();
    let service_shared = shared.clone();
    let service_life = life.clone();
    let service_conn = conn.clone();
    let service = service_fn(move |request| {
        // Boxed: hyper moves the service future by value a few times before polling it,
        // and the pipeline's future is several KiB; a pointer moves for free.
        let response = Box::pin(pipeline::handle(
            service_shared.clone(),
            service_conn.clone(),
            service_life.clone(),
            request,
        ));
        async move { Ok::<_, Infallible>(response.await) }
    });
    let connection = shared
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = graceful.wait_for(|g| *g), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            _ = hard_stop.wait_for(|s| *s) => break,
        }
    }
    // The drain token in `life` is released here, after the connection is done.
    drop(life);
}
