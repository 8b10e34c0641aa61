//! Shared helpers for integration tests: real local backends on 127.0.0.1:0, a proxy
//! harness that binds airgate on ephemeral ports, and small `Config` builders.
//! Everything spawned here is aborted on drop.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use airgate::config::{
    Backend, Config, Endpoints, PathMatch, Route, RoutePolicy, Upstream, UpstreamProtocol,
    VirtualHost, normalize_prefix,
};
use airgate::proxy::{BoundProxy, ProxySettings};
use airgate::runtime::Runtime;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = BoxBody<Bytes, BoxError>;
type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<TestBody>> + Send>>
        + Send
        + Sync,
>;

/// Aborts a task when dropped, so no test leaves servers running.
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A real HTTP server (HTTP/1.1 and h2c, with upgrades) on 127.0.0.1:0.
pub struct TestBackend {
    pub addr: SocketAddr,
    /// Requests this backend has received.
    pub hits: Arc<AtomicUsize>,
    /// TCP connections this backend has accepted.
    pub connections: Arc<AtomicUsize>,
    _task: AbortOnDrop,
}

impl TestBackend {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

pub async fn backend<F, Fut>(handler: F) -> TestBackend
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let handler: Handler = Arc::new(move |req| Box::pin(handler(req)));
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("backend addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = connections.clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            accepted.fetch_add(1, Ordering::SeqCst);
            let handler = handler.clone();
            let counter = counter.clone();
            conns.spawn(async move {
                let service = service_fn(move |req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                    .await;
            });
            // Reap finished connections so the set stays bounded.
            while conns.try_join_next().is_some() {}
        }
    });
    TestBackend {
        addr,
        hits,
        connections,
        _task: AbortOnDrop(task),
    }
}

pub fn full(body: impl Into<Bytes>) -> TestBody {
    http_body_util::Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A backend that answers every request with a JSON echo of what it received:
/// method, path-and-query, headers (name -> list of values), body length, version.
pub async fn echo_backend() -> TestBackend {
    backend(|req: Request<Incoming>| async move {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut headers: HashMap<String, Vec<String>> = HashMap::new();
        for (name, value) in &parts.headers {
            headers
                .entry(name.as_str().to_string())
                .or_default()
                .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
        }
        let echo = serde_json::json!({
            "method": parts.method.as_str(),
            "uri": parts.uri.to_string(),
            "path": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
            "headers": headers,
            "body_len": body.len(),
            "version": format!("{:?}", parts.version),
        });
        let mut response = Response::new(full(echo.to_string()));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        // Hop-by-hop headers a proxy must not relay.
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("x-backend-hop"),
        );
        response
            .headers_mut()
            .insert("x-backend-hop", http::HeaderValue::from_static("secret"));
        response
            .headers_mut()
            .insert("x-backend", http::HeaderValue::from_static("echo"));
        response
    })
    .await
}

/// A backend whose every response is a stream the test writes into: for each request
/// the test receives (via the returned receiver) a sender for that response's chunks.
/// Dropping the sender ends the response.
pub async fn stream_backend() -> (TestBackend, mpsc::UnboundedReceiver<mpsc::Sender<Bytes>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let backend = backend(move |_req: Request<Incoming>| {
        let tx = tx.clone();
        async move {
            let (chunk_tx, chunk_rx) = mpsc::channel::<Bytes>(1);
            let _ = tx.send(chunk_tx);
            let stream = futures_util::stream::unfold(chunk_rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|b| (Ok::<_, BoxError>(Frame::data(b)), rx))
            });
            let mut response = Response::new(StreamBody::new(stream).boxed());
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/event-stream"),
            );
            response
        }
    })
    .await;
    (backend, rx)
}

/// An address that refuses connections (a listener bound then closed).
pub async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr
}

pub fn upstream(addrs: Vec<SocketAddr>) -> Arc<Upstream> {
    upstream_with(addrs, UpstreamProtocol::Http)
}

pub fn upstream_with(addrs: Vec<SocketAddr>, protocol: UpstreamProtocol) -> Arc<Upstream> {
    Arc::new(Upstream::new(
        "test/backend",
        protocol,
        Endpoints::Static(addrs),
    ))
}

pub fn prefix_route(
    name: &str,
    prefix: &str,
    upstream: Arc<Upstream>,
    policy: RoutePolicy,
) -> Arc<Route> {
    Arc::new(Route {
        name: Arc::from(name),
        path: PathMatch::Prefix(normalize_prefix(prefix)),
        backend: Backend::Upstream(upstream),
        policy,
        metrics: Default::default(),
    })
}

/// A config with one virtual host (`""` = any host) holding prefix routes.
pub fn config(host: &str, routes: Vec<Arc<Route>>) -> Config {
    let mut vhost = VirtualHost {
        host: host.to_string(),
        ..Default::default()
    };
    for route in routes {
        if let PathMatch::Prefix(p) = &route.path {
            vhost.prefix.insert(p.clone(), route.clone());
        }
    }
    let mut config = Config {
        vhosts: vec![vhost],
        ..Default::default()
    };
    if host.is_empty() {
        config.any_host = Some(0);
    } else {
        config.exact_hosts.insert(host.to_string(), 0);
    }
    config
}

/// airgate bound on ephemeral loopback ports, serving in the background.
pub struct TestProxy {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub runtime: Arc<Runtime>,
    pub default_cert_der: Vec<u8>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestProxy {
    pub async fn start(config: Config) -> TestProxy {
        Self::start_with(config, Vec::new(), Duration::from_secs(5)).await
    }

    pub async fn start_with(
        config: Config,
        trusted_proxies: Vec<ipnet::IpNet>,
        shutdown_grace: Duration,
    ) -> TestProxy {
        let runtime = Runtime::new();
        runtime.publish(config);
        let settings = ProxySettings {
            http_addr: "127.0.0.1:0".parse().expect("addr"),
            https_addr: "127.0.0.1:0".parse().expect("addr"),
            trusted_proxies,
            shutdown_grace,
        };
        let bound = BoundProxy::bind(settings, runtime.clone())
            .await
            .expect("bind proxy");
        let (http, https) = (bound.http_addr(), bound.https_addr());
        let default_cert_der = bound.default_certificate().cert[0].as_ref().to_vec();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(bound.serve(async move {
            let _ = rx.await;
        }));
        TestProxy {
            http,
            https,
            runtime,
            default_cert_der,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    /// Ask for graceful shutdown; returns the serve task to await.
    pub fn shutdown(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("proxy still running")
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// HTTP/1.1 client (no proxy from the environment, no connection reuse surprises).
pub fn client() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

pub fn h2c_client() -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// Read the next chunk of a streaming response, failing the test after `limit`.
pub async fn next_chunk(response: &mut reqwest::Response, limit: Duration) -> Option<Bytes> {
    tokio::time::timeout(limit, response.chunk())
        .await
        .expect("chunk arrived in time")
        .expect("stream intact")
}

/// A WebSocket echo server (HTTP/1.1 Upgrade handled by hyper, frames by tungstenite).
pub async fn ws_echo_backend() -> TestBackend {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;

    backend(|mut req: Request<Incoming>| async move {
        let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
            let mut r = Response::new(full("not a websocket request"));
            *r.status_mut() = http::StatusCode::BAD_REQUEST;
            return r;
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else {
                return;
            };
            let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                None,
            )
            .await;
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() || msg.is_binary() {
                    if ws.send(msg).await.is_err() {
                        break;
                    }
                } else if msg.is_close() {
                    break;
                }
            }
        });
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert("connection", http::HeaderValue::from_static("upgrade"));
        h.insert("upgrade", http::HeaderValue::from_static("websocket"));
        h.insert(
            "sec-websocket-accept",
            http::HeaderValue::from_str(&derive_accept_key(key.as_bytes())).expect("header"),
        );
        r
    })
    .await
}

/// A backend that holds each response until the test releases it: for every request the
/// test receives a sender; sending on it lets the backend answer 200 "released".
pub async fn gated_backend() -> (TestBackend, mpsc::UnboundedReceiver<oneshot::Sender<()>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let backend = backend(move |_req: Request<Incoming>| {
        let tx = tx.clone();
        async move {
            let (gate_tx, gate_rx) = oneshot::channel();
            let _ = tx.send(gate_tx);
            let _ = gate_rx.await;
            Response::new(full("released"))
        }
    })
    .await;
    (backend, rx)
}
