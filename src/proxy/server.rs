//! Connections: airgate's own HTTP/1.1 loop for ordinary requests, hyper's auto
//! (HTTP/1.1 + h2/h2c) connection builder for everything else, and the drain on
//! shutdown.
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use super::body::InboundBody;
use super::http1;
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
            None => serve_io(shared, tcp, conn, life, false).await,
            Some(acceptor) => {
                let mut hard_stop = life.hard_stop.clone();
                let accepted = tokio::select! {
                    r = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => r,
                    _ = hard_stop.wait_for(|s| *s) => return,
                };
                match accepted {
                    Ok(Ok(stream)) => {
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                        serve_io(shared, stream, conn, life, h2).await
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }
        }
    });
}

/// Serve a connection: HTTP/1.1 with airgate's own loop first (see [`http1`]), with
/// hyper from the first request that loop hands over, or from the start for HTTP/2
/// negotiated by ALPN.
async fn serve_io<I>(shared: Arc<Shared>, io: I, conn: Arc<ConnInfo>, life: Lifecycle, h2: bool)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut graceful = life.graceful.clone();
    let mut hard_stop = life.hard_stop.clone();
    let draining = AtomicBool::new(false);
    let (io, read) = if h2 {
        (io, Bytes::new())
    } else {
        let limits = http1::Limits {
            header_read: HEADER_READ_TIMEOUT,
            max_head: MAX_HEADER_BYTES,
        };
        let own = std::pin::pin!(http1::serve(io, &shared, &conn, &life, &draining, limits));
        let ended = drive(own, &mut graceful, &mut hard_stop, false, |_| {
            draining.store(true, Ordering::Release)
        })
        .await;
        match ended {
            Some(http1::Ended::HandOver { io, read }) => (io, read),
            // Closed, or the grace period is over; the drain token goes with `life`.
            _ => return,
        }
    };
    let service_shared = shared.clone();
    let service_life = life.clone();
    let service_conn = conn.clone();
    let service = service_fn(move |request: Request<Incoming>| {
        // Boxed: hyper moves the service future by value a few times before polling it,
        // and the pipeline's future is several KiB; a pointer moves for free.
        let response = Box::pin(pipeline::handle(
            service_shared.clone(),
            service_conn.clone(),
            service_life.clone(),
            request.map(InboundBody::Streamed),
        ));
        async move { Ok::<_, Infallible>(response.await) }
    });
    let connection = shared
        .builder
        .serve_connection_with_upgrades(TokioIo::new(http1::Prefixed::new(read, io)), service);
    tokio::pin!(connection);
    let draining = draining.load(Ordering::Acquire);
    if draining {
        connection.as_mut().graceful_shutdown();
    }
    let ended = drive(
        connection,
        &mut graceful,
        &mut hard_stop,
        draining,
        |connection| connection.graceful_shutdown(),
    )
    .await;
    if let Some(Err(e)) = ended {
        tracing::debug!(peer = %conn.peer, error = %e, "connection ended with an error");
    }
    // The drain token in `life` is released here, after the connection is done.
    drop(life);
}

/// Poll a connection to its end while watching the shutdown signals: on the graceful one
/// `start_draining` is called once (and the connection polled on); on the hard stop the
/// connection is abandoned (`None`).
async fn drive<F: Future>(
    mut connection: Pin<&mut F>,
    graceful: &mut watch::Receiver<bool>,
    hard_stop: &mut watch::Receiver<bool>,
    mut draining: bool,
    mut start_draining: impl FnMut(Pin<&mut F>),
) -> Option<F::Output> {
    // The shutdown signals get a waker of their own and are polled only after they used
    // it: a busy connection's task wakes several times per request, and polling two
    // watch receivers on every wake-up cost ~2.5 % of the instructions per request.
    let signals = Arc::new(SignalWaker {
        woken: AtomicBool::new(true),
        task: AtomicWaker::new(),
    });
    let signals_waker = Waker::from(signals.clone());
    loop {
        let mut stop = std::pin::pin!(next_stop(graceful, hard_stop, draining));
        signals.woken.store(true, Ordering::Release);
        let event = std::future::poll_fn(|cx| {
            if let Poll::Ready(output) = connection.as_mut().poll(cx) {
                return Poll::Ready(Event::Closed(output));
            }
            signals.task.register(cx.waker());
            if signals.woken.swap(false, Ordering::AcqRel) {
                let mut signals_cx = Context::from_waker(&signals_waker);
                if let Poll::Ready(stop) = stop.as_mut().poll(&mut signals_cx) {
                    return Poll::Ready(Event::Stop(stop));
                }
            }
            Poll::Pending
        })
        .await;
        match event {
            Event::Closed(output) => return Some(output),
            Event::Stop(Stop::Graceful) => {
                draining = true;
                start_draining(connection.as_mut());
            }
            Event::Stop(Stop::Hard) => return None,
        }
    }
}

enum Event<T> {
    /// The connection is done (the client closed it, or it finished draining).
    Closed(T),
    Stop(Stop),
}

enum Stop {
    /// Finish the requests in flight, then close.
    Graceful,
    /// The grace period is over: close now.
    Hard,
}

/// The next shutdown signal for a connection (graceful only while not yet draining).
async fn next_stop(
    graceful: &mut watch::Receiver<bool>,
    hard_stop: &mut watch::Receiver<bool>,
    draining: bool,
) -> Stop {
    tokio::select! {
        _ = graceful.wait_for(|g| *g), if !draining => Stop::Graceful,
        _ = hard_stop.wait_for(|s| *s) => Stop::Hard,
    }
}

/// Records that the shutdown signals woke the connection's task, then wakes it.
struct SignalWaker {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for SignalWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}
