//! Connections to upstreams: endpoint choice (round robin, DNS), connect with a timeout
//! and failover, and keep-alive pools for HTTP/1.1 and shared HTTP/2 connections.
//!
//! Pools are keyed by protocol, socket address and TLS server name, never by snapshot,
//! so connections survive reconfiguration and are shared by every route that points at
//! the same endpoint.
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::Either;
use http::{Request, Response};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::{Endpoints, Upstream, UpstreamProtocol};

mod dns;
pub mod h1;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type on both sides of the proxy.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// Endpoints tried for one request before giving up (each failed connect moves on).
const MAX_CONNECT_TRIES: usize = 3;
/// Idle HTTP/1.1 connections kept per endpoint.
const MAX_IDLE_PER_KEY: usize = 64;
/// Idle HTTP/1.1 connections older than this are closed rather than reused; upstream
/// servers commonly close idle connections after 60-75s and reusing one that is being
/// closed loses the request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstream {upstream} has no endpoints")]
    NoEndpoints { upstream: String },
    #[error("resolving {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to {addr} timed out after {timeout:?}")]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    #[error("TLS server name {name:?} is invalid")]
    ServerName { name: String },
    #[error("HTTP handshake with {addr}: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("upstream {addr} did not send response headers within {timeout:?}")]
    ResponseTimeout { addr: SocketAddr, timeout: Duration },
    #[error("upstream {addr}: {source}")]
    Request {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("upstream {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("upstream {addr}: {reason}")]
    Protocol {
        addr: SocketAddr,
        reason: &'static str,
    },
    #[error("upstream {addr}: reading the request body: {source}")]
    RequestBody { addr: SocketAddr, source: BoxError },
}

impl UpstreamError {
    /// Label for `airgate_upstream_errors_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::ResponseTimeout { .. } | UpstreamError::ConnectTimeout { .. } => {
                "timeout"
            }
            UpstreamError::Request { .. }
            | UpstreamError::Handshake { .. }
            | UpstreamError::Io { .. }
            | UpstreamError::Protocol { .. }
            | UpstreamError::RequestBody { .. } => "protocol",
            _ => "connect",
        }
    }

    /// True when no connection could be made at all (the request never left the proxy).
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            UpstreamError::NoEndpoints { .. }
                | UpstreamError::Resolve { .. }
                | UpstreamError::Connect { .. }
                | UpstreamError::ConnectTimeout { .. }
                | UpstreamError::ServerName { .. }
                | UpstreamError::Handshake { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    /// 0 http, 1 https, 2 h2c, 3 h2 (UpstreamProtocol is not `Hash`).
    protocol: u8,
    addr: SocketAddr,
    server_name: Option<String>,
}

fn protocol_id(p: UpstreamProtocol) -> u8 {
    match p {
        UpstreamProtocol::Http => 0,
        UpstreamProtocol::Https => 1,
        UpstreamProtocol::H2c => 2,
        UpstreamProtocol::H2 => 3,
    }
}

fn is_h2(p: UpstreamProtocol) -> bool {
    matches!(p, UpstreamProtocol::H2c | UpstreamProtocol::H2)
}

fn is_tls(p: UpstreamProtocol) -> bool {
    matches!(p, UpstreamProtocol::Https | UpstreamProtocol::H2)
}

/// Pool keys come from configuration, not from clients: a fast hash is safe.
type FastHash = foldhash::fast::RandomState;

/// Idle HTTP/1.1 connections per endpoint, each with the time it became idle: the
/// newest is reused first, at most [`MAX_IDLE_PER_KEY`] are kept per endpoint, and none
/// older than [`IDLE_TIMEOUT`] is reused.
struct IdlePool<K, C> {
    by_key: HashMap<K, Vec<(Instant, C)>, FastHash>,
}

impl<K, C> Default for IdlePool<K, C> {
    fn default() -> Self {
        IdlePool {
            by_key: HashMap::default(),
        }
    }
}

impl<K: Eq + std::hash::Hash, C> IdlePool<K, C> {
    /// The newest idle connection for `key` that `usable` accepts; expired or unusable
    /// ones met on the way are dropped.
    fn take(&mut self, key: &K, usable: impl Fn(&C) -> bool) -> Option<C> {
        let list = self.by_key.get_mut(key)?;
        let now = Instant::now();
        while let Some((since, conn)) = list.pop() {
            if now.duration_since(since) < IDLE_TIMEOUT && usable(&conn) {
                return Some(conn);
            }
        }
        None
    }

    /// Keep `conn` for reuse. With `sweep`, first drop the connections that expired or
    /// that `alive` rejects, and endpoints left with none, so the pool stays
    /// proportional to the endpoints in use.
    fn put(&mut self, key: K, conn: C, sweep: bool, alive: impl Fn(&C) -> bool) {
        let now = Instant::now();
        if sweep {
            self.by_key.retain(|_, list| {
                list.retain(|(since, c)| now.duration_since(*since) < IDLE_TIMEOUT && alive(c));
                !list.is_empty()
            });
        }
        let list = self.by_key.entry(key).or_default();
        if list.len() >= MAX_IDLE_PER_KEY {
            list.remove(0);
        }
        list.push((now, conn));
    }
}

/// Lock a pool. A panic while holding the lock cannot leave a pool inconsistent (every
/// critical section is a single insert, removal or sweep), so poisoning is ignored.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// An upstream response body: from airgate's own HTTP/1.1 client, or from hyper's
/// (TLS, HTTP/2, upgrades).
#[derive(Debug)]
pub enum ResponseBody {
    H1(h1::RawBody),
    Hyper(Incoming),
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::H1(body) => std::pin::Pin::new(body).poll_frame(cx),
            ResponseBody::Hyper(body) => std::pin::Pin::new(body)
                .poll_frame(cx)
                .map_err(BoxError::from),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::H1(body) => body.is_end_stream(),
            ResponseBody::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            ResponseBody::H1(body) => body.size_hint(),
            ResponseBody::Hyper(body) => body.size_hint(),
        }
    }
}

enum Sender {
    H1(http1::SendRequest<ProxyBody>),
    H2(http2::SendRequest<ProxyBody>),
}

/// Marks the moment the request body has been sent in full. The read timeout (the wait
/// for response headers) starts then, so a long upload is governed by the send timeout
/// alone and never turns into a 504.
#[derive(Debug, Clone)]
pub struct BodySent(Option<Arc<BodySentState>>);

#[derive(Debug, Default)]
struct BodySentState {
    done: AtomicBool,
    notify: Notify,
}

impl BodySent {
    /// For a body still to be sent.
    pub fn pending() -> Self {
        BodySent(Some(Arc::default()))
    }

    /// For a request without a body: nothing to wait for, nothing allocated.
    pub fn already() -> Self {
        BodySent(None)
    }

    pub fn mark(&self) {
        if let Some(state) = &self.0 {
            if !state.done.swap(true, Ordering::AcqRel) {
                state.notify.notify_waiters();
            }
        }
    }

    pub fn is_done(&self) -> bool {
        self.0
            .as_ref()
            .is_none_or(|state| state.done.load(Ordering::Acquire))
    }

    pub async fn wait(&self) {
        let Some(state) = &self.0 else { return };
        loop {
            let notified = state.notify.notified();
            tokio::pin!(notified);
            // Register before checking, so a `mark` in between is not missed.
            notified.as_mut().enable();
            if self.is_done() {
                return;
            }
            notified.await;
        }
    }
}

/// How long to wait for response headers, counted from the end of the request body.
#[derive(Debug, Clone)]
pub struct ResponseWait {
    pub read_timeout: Duration,
    pub body_sent: BodySent,
}

impl ResponseWait {
    async fn expired(&self) {
        self.body_sent.wait().await;
        tokio::time::sleep(self.read_timeout).await;
    }
}

/// Up to [`MAX_CONNECT_TRIES`] endpoints for one request, in the order they are tried.
/// A fixed array: choosing endpoints does not allocate.
struct Candidates {
    addrs: [SocketAddr; MAX_CONNECT_TRIES],
    len: usize,
}

impl Candidates {
    /// `addrs` must not be empty.
    fn starting_at(addrs: &[SocketAddr], start: usize) -> Self {
        let len = addrs.len().min(MAX_CONNECT_TRIES);
        let mut picked = [addrs[start % addrs.len()]; MAX_CONNECT_TRIES];
        for (i, slot) in picked.iter_mut().enumerate().take(len) {
            *slot = addrs[(start + i) % addrs.len()];
        }
        Candidates { addrs: picked, len }
    }

    fn iter(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.addrs[..self.len].iter().copied()
    }
}

/// What a successful exchange returns.
pub struct Exchange {
    pub response: Response<ResponseBody>,
    pub addr: SocketAddr,
    /// A hyper HTTP/1.1 connection, to be given back with [`IdleConn::release`] once
    /// the response body has been read to its end. Dropped instead, it is closed.
    /// (Connections of airgate's own client go back by themselves, from the body.)
    pub idle: Option<IdleConn>,
}

impl Exchange {
    fn h1(response: Response<h1::RawBody>, addr: SocketAddr) -> Self {
        Exchange {
            response: response.map(ResponseBody::H1),
            addr,
            idle: None,
        }
    }
}

/// A kept-alive HTTP/1.1 connection whose response is still being read.
pub struct IdleConn {
    pools: Weak<Upstreams>,
    key: PoolKey,
    sender: http1::SendRequest<ProxyBody>,
}

impl IdleConn {
    /// Put the connection back into the pool. The response body has been read, so
    /// the connection is normally ready at once; if hyper has not yet seen the end,
    /// a task waits for it instead of dropping a good connection.
    pub fn release(self) {
        let IdleConn {
            pools,
            key,
            mut sender,
        } = self;
        if sender.is_ready() {
            if let Some(pools) = pools.upgrade() {
                pools.pool_idle(key, sender);
            }
            return;
        }
        tokio::spawn(async move {
            // Fails when the connection closes instead of becoming idle.
            if sender.ready().await.is_err() {
                return;
            }
            if let Some(pools) = pools.upgrade() {
                pools.pool_idle(key, sender);
            }
        });
    }
}

/// The upstream connection pools. Lives outside snapshots, for the whole process.
pub struct Upstreams {
    /// Connections of airgate's own client ([`h1`], plain-HTTP upstreams).
    idle_h1: Mutex<IdlePool<SocketAddr, h1::Conn>>,
    /// hyper's HTTP/1.1 connections (HTTPS upstreams).
    idle_hyper: Mutex<IdlePool<PoolKey, http1::SendRequest<ProxyBody>>>,
    h2: Mutex<HashMap<PoolKey, http2::SendRequest<ProxyBody>, FastHash>>,
    /// Recycles since the last sweep of dead and expired pool entries.
    recycled: AtomicUsize,
    dns: dns::DnsCache,
    /// `None` only from [`Upstreams::without_tls`].
    tls_h1: Option<Arc<ClientConfig>>,
    tls_h2: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams").finish_non_exhaustive()
    }
}

impl Upstreams {
    pub fn new() -> Result<Arc<Self>, crate::tls::TlsError> {
        Ok(Self::with_tls(
            Some(crate::tls::upstream_client_config(b"http/1.1")?),
            Some(crate::tls::upstream_client_config(b"h2")?),
        ))
    }

    /// Pools for plain-HTTP upstreams only, for when no TLS client config can be built:
    /// TLS upstreams then fail to connect instead of everything failing.
    pub fn without_tls() -> Arc<Self> {
        Self::with_tls(None, None)
    }

    fn with_tls(tls_h1: Option<Arc<ClientConfig>>, tls_h2: Option<Arc<ClientConfig>>) -> Arc<Self> {
        Arc::new(Upstreams {
            idle_h1: Mutex::default(),
            idle_hyper: Mutex::default(),
            h2: Mutex::new(HashMap::default()),
            recycled: AtomicUsize::new(0),
            dns: dns::DnsCache::default(),
            tls_h1,
            tls_h2,
        })
    }

    /// Candidate addresses for one request, starting at the round-robin cursor.
    async fn candidates(
        &self,
        upstream: &Upstream,
        timeout: Duration,
    ) -> Result<Candidates, UpstreamError> {
        let no_endpoints = || UpstreamError::NoEndpoints {
            upstream: upstream.name.to_string(),
        };
        match &upstream.endpoints {
            Endpoints::Static(addrs) => {
                if addrs.is_empty() {
                    return Err(no_endpoints());
                }
                let start = upstream.next.fetch_add(1, Ordering::Relaxed) % addrs.len();
                Ok(Candidates::starting_at(addrs, start))
            }
            Endpoints::Dns { host, port } => {
                // Boxed: the resolver's state is only needed for DNS upstreams.
                let lookup = || Box::pin(tokio::net::lookup_host((host.as_str(), *port)));
                let addrs = self
                    .dns
                    .resolve(host, *port, timeout, lookup)
                    .await
                    .map_err(|source| UpstreamError::Resolve {
                        host: host.clone(),
                        source,
                    })?;
                let start = upstream.next.fetch_add(1, Ordering::Relaxed) % addrs.len();
                Ok(Candidates::starting_at(&addrs, start))
            }
        }
    }

    /// Send `request` to one endpoint of `upstream` and wait for the response headers up
    /// to the read timeout after the body was sent. Endpoints that refuse or time out on connect are skipped (the
    /// request has not been sent to them). `upgrade` requests get a dedicated HTTP/1.1
    /// connection that is never pooled.
    pub async fn send(
        self: &Arc<Self>,
        upstream: &Upstream,
        mut request: Request<ProxyBody>,
        connect_timeout: Duration,
        wait: &ResponseWait,
        upgrade: bool,
    ) -> Result<Exchange, UpstreamError> {
        let protocol = if upgrade {
            // WebSocket needs HTTP/1.1 Upgrade; extended CONNECT over h2 is not supported.
            match upstream.protocol {
                UpstreamProtocol::H2 => UpstreamProtocol::Https,
                UpstreamProtocol::H2c => UpstreamProtocol::Http,
                p => p,
            }
        } else {
            upstream.protocol
        };
        if protocol == UpstreamProtocol::Http && !upgrade {
            return self
                .send_h1(upstream, request, connect_timeout, wait.read_timeout)
                .await;
        }
        let candidates = self.candidates(upstream, connect_timeout).await?;
        let mut last_error = None;
        for addr in candidates.iter() {
            let key = PoolKey {
                protocol: protocol_id(protocol),
                addr,
                server_name: upstream.tls_server_name.clone(),
            };
            // A pooled connection first; if it turns out to be unusable before the
            // request was written, hyper hands the request back and we connect afresh.
            if !upgrade {
                if let Some(sender) = self.checkout(&key) {
                    let replay = replayable(&request);
                    let pool_key = Some(key.clone());
                    match self.exchange(pool_key, addr, sender, request, wait).await {
                        Ok(exchange) => return Ok(exchange),
                        Err((_, Some(returned))) => request = returned,
                        // A kept-alive connection the upstream closed as we reused it:
                        // like nginx's `proxy_next_upstream error`, a bodyless safe
                        // request is sent again on a new connection.
                        Err((e @ UpstreamError::Request { .. }, None)) => match replay {
                            Some(again) => {
                                tracing::debug!(%addr, error = %e, "reused connection failed; retrying on a new one");
                                request = again;
                            }
                            None => return Err(e),
                        },
                        Err((e, None)) => return Err(e),
                    }
                }
            }
            // Boxed: the connect state (TCP, TLS, HTTP/2 handshake) is large and only
            // needed on a pool miss; inline it would be moved with every request future.
            let sender = match Box::pin(connect(
                &key,
                protocol,
                upgrade,
                connect_timeout,
                self.tls_for(protocol),
            ))
            .await
            {
                Ok(sender) => sender,
                Err(e) => {
                    tracing::debug!(upstream = %upstream.name, error = %e, "connect failed, trying next endpoint");
                    last_error = Some(e);
                    continue;
                }
            };
            if let Sender::H2(h2) = &sender {
                self.remember_h2(key.clone(), h2.clone());
            }
            let pool_key = (!upgrade).then_some(key);
            return match self.exchange(pool_key, addr, sender, request, wait).await {
                Ok(exchange) => Ok(exchange),
                Err((e, _)) => Err(e),
            };
        }
        Err(last_error.unwrap_or_else(|| UpstreamError::NoEndpoints {
            upstream: upstream.name.to_string(),
        }))
    }

    /// [`Upstreams::send`] for plain-HTTP upstreams, with airgate's own HTTP/1.1 client.
    async fn send_h1(
        self: &Arc<Self>,
        upstream: &Upstream,
        request: Request<ProxyBody>,
        connect_timeout: Duration,
        read_timeout: Duration,
    ) -> Result<Exchange, UpstreamError> {
        let candidates = self.candidates(upstream, connect_timeout).await?;
        let (parts, body) = request.into_parts();
        let head = h1::Head::encode(&parts, &body);
        drop(parts);
        let mut body = Some(body);
        let mut last_error = None;
        for addr in candidates.iter() {
            // Where the connection goes back; made per attempt, it is moved into the body.
            let home = || h1::Home {
                pools: Arc::downgrade(self),
                addr,
            };
            if let Some(conn) = self.checkout_h1(addr) {
                match h1::exchange(conn, &head, &mut body, true, read_timeout, home()).await {
                    Ok(response) => return Ok(Exchange::h1(response, addr)),
                    // A kept-alive connection the upstream closed as we reused it.
                    Err(h1::Failure::Retry(e)) => {
                        tracing::debug!(%addr, error = %e, "reused connection failed; retrying on a new one");
                    }
                    Err(h1::Failure::Fatal(e)) => return Err(e),
                }
            }
            let conn = match h1::Conn::connect(addr, connect_timeout).await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::debug!(upstream = %upstream.name, error = %e, "connect failed, trying next endpoint");
                    last_error = Some(e);
                    continue;
                }
            };
            return h1::exchange(conn, &head, &mut body, false, read_timeout, home())
                .await
                .map(|response| Exchange::h1(response, addr))
                .map_err(h1::Failure::into_error);
        }
        Err(last_error.unwrap_or_else(|| UpstreamError::NoEndpoints {
            upstream: upstream.name.to_string(),
        }))
    }

    fn checkout_h1(&self, addr: SocketAddr) -> Option<h1::Conn> {
        lock(&self.idle_h1).take(&addr, h1::Conn::is_quiet)
    }

    /// Give back a connection of airgate's own client whose response has been read.
    fn pool_h1(&self, addr: SocketAddr, conn: h1::Conn) {
        let sweep = self.sweep_due();
        lock(&self.idle_h1).put(addr, conn, sweep, h1::Conn::is_quiet);
    }

    /// Every [`SWEEP_EVERY`]th connection given back also sweeps its pool.
    fn sweep_due(&self) -> bool {
        self.recycled.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == 0
    }

    fn tls_for(&self, protocol: UpstreamProtocol) -> Option<Arc<ClientConfig>> {
        if is_h2(protocol) {
            self.tls_h2.clone()
        } else {
            self.tls_h1.clone()
        }
    }

    fn checkout(&self, key: &PoolKey) -> Option<Sender> {
        if key.protocol == protocol_id(UpstreamProtocol::H2)
            || key.protocol == protocol_id(UpstreamProtocol::H2c)
        {
            let mut h2 = lock(&self.h2);
            match h2.get(key) {
                Some(s) if !s.is_closed() => return Some(Sender::H2(s.clone())),
                Some(_) => {
                    h2.remove(key);
                }
                None => {}
            }
            return None;
        }
        lock(&self.idle_hyper)
            .take(key, http1::SendRequest::is_ready)
            .map(Sender::H1)
    }

    fn pool_idle(&self, key: PoolKey, sender: http1::SendRequest<ProxyBody>) {
        let sweep = self.sweep_due();
        lock(&self.idle_hyper).put(key, sender, sweep, |s| !s.is_closed());
    }

    /// Remember a new h2 connection, forgetting closed ones (endpoints come and go as
    /// pods do; without this the map would only grow).
    fn remember_h2(&self, key: PoolKey, sender: http2::SendRequest<ProxyBody>) {
        let mut h2 = lock(&self.h2);
        h2.retain(|_, s| !s.is_closed());
        h2.insert(key, sender);
    }

    /// Send `request` on `sender` (`pool_key`: the pool it goes back to, `None` for a
    /// connection of its own). On failure, the request comes back when it was never
    /// written, so the caller can retry on a new connection.
    ///
    /// Not an `async fn`: hyper queues the request as it is handed over, so that happens
    /// here and the future holds only the response to wait for, not the request too.
    fn exchange(
        self: &Arc<Self>,
        pool_key: Option<PoolKey>,
        addr: SocketAddr,
        mut sender: Sender,
        request: Request<ProxyBody>,
        wait: &ResponseWait,
    ) -> impl Future<Output = Result<Exchange, (UpstreamError, Option<Request<ProxyBody>>)>> {
        let response = match &mut sender {
            Sender::H1(h1) => Either::Left(h1.try_send_request(request)),
            Sender::H2(h2) => Either::Right(h2.try_send_request(request)),
        };
        async move {
            let read_timeout = wait.read_timeout;
            let sent = tokio::select! {
                sent = response => Ok(sent),
                _ = wait.expired() => Err(()),
            };
            match (sender, sent) {
                (_, Err(_)) => Err((
                    UpstreamError::ResponseTimeout {
                        addr,
                        timeout: read_timeout,
                    },
                    None,
                )),
                (sender, Ok(Err(mut e))) => {
                    let returned = e.take_message();
                    // An h2 connection that hands the request back unsent is closed.
                    if matches!(sender, Sender::H2(_)) && returned.is_some() {
                        if let Some(key) = &pool_key {
                            lock(&self.h2).remove(key);
                        }
                    }
                    Err((
                        UpstreamError::Request {
                            addr,
                            source: e.into_error(),
                        },
                        returned,
                    ))
                }
                (Sender::H1(h1), Ok(Ok(response))) => Ok(Exchange {
                    response: response.map(ResponseBody::Hyper),
                    addr,
                    idle: pool_key.map(|key| IdleConn {
                        pools: Arc::downgrade(self),
                        key,
                        sender: h1,
                    }),
                }),
                (Sender::H2(_), Ok(Ok(response))) => Ok(Exchange {
                    response: response.map(ResponseBody::Hyper),
                    addr,
                    idle: None,
                }),
            }
        }
    }
}

/// A copy of a request that is safe to send twice: a safe method and no body.
fn replayable(request: &Request<ProxyBody>) -> Option<Request<ProxyBody>> {
    use http::Method;
    use http_body::Body as _;
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !safe || !request.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    Some(copy)
}

/// Recycles between sweeps of the idle pool.
const SWEEP_EVERY: usize = 256;

/// A TCP connection to an upstream, with Nagle's algorithm off (requests and responses
/// are written whole; nothing waits for more to coalesce).
async fn open_tcp(addr: SocketAddr) -> Result<TcpStream, UpstreamError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|source| UpstreamError::Connect { addr, source })?;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Open a new connection (TCP, optional TLS, HTTP handshake) within `timeout`.
async fn connect(
    key: &PoolKey,
    protocol: UpstreamProtocol,
    upgrade: bool,
    timeout: Duration,
    tls: Option<Arc<ClientConfig>>,
) -> Result<Sender, UpstreamError> {
    let addr = key.addr;
    let connecting = async {
        let tcp = open_tcp(addr).await?;
        if is_tls(protocol) {
            let name = match &key.server_name {
                Some(n) => ServerName::try_from(n.clone())
                    .map_err(|_| UpstreamError::ServerName { name: n.clone() })?,
                None => ServerName::IpAddress(addr.ip().into()),
            };
            let tls = tls.ok_or_else(|| UpstreamError::Connect {
                addr,
                source: std::io::Error::other("no TLS client configuration"),
            })?;
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await
                .map_err(|source| UpstreamError::Connect { addr, source })?;
            handshake(TokioIo::new(stream), addr, protocol, upgrade).await
        } else {
            handshake(TokioIo::new(tcp), addr, protocol, upgrade).await
        }
    };
    tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| UpstreamError::ConnectTimeout { addr, timeout })?
}

async fn handshake<I>(
    io: I,
    addr: SocketAddr,
    protocol: UpstreamProtocol,
    upgrade: bool,
) -> Result<Sender, UpstreamError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    if is_h2(protocol) {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(io)
            .await
            .map_err(|source| UpstreamError::Handshake { addr, source })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "upstream h2 connection closed");
            }
        });
        Ok(Sender::H2(sender))
    } else {
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|source| UpstreamError::Handshake { addr, source })?;
        if upgrade {
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!(%addr, error = %e, "upstream connection closed");
                }
            });
        } else {
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%addr, error = %e, "upstream connection closed");
                }
            });
        }
        Ok(Sender::H1(sender))
    }
}
