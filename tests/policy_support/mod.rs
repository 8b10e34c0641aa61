//! Shared parts of the policy integration tests: a real proxy on loopback ports bound as
//! `:0`, real HTTP backends and auth hooks that record what they received, and a small
//! builder for hand-made `Config` snapshots.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use airgate::config::{
    AuthCachePolicy, AuthHookPolicy, Backend, Config, CorsPolicy, Endpoints, HookTarget, PathMatch,
    RateLimit, Route, RoutePolicy, Upstream, UpstreamProtocol, VirtualHost, ZoneKey, ZoneSpec,
};
use airgate::proxy::{BoundProxy, ProxySettings};
use airgate::runtime::Runtime;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// One request as a backend or hook saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// How a test server answers: status, headers, body, and an optional delay.
pub type Answer = (u16, Vec<(&'static str, String)>, String, Option<Duration>);
type Responder = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

/// A real HTTP/1.1 server on 127.0.0.1:0 that records every request. Aborted on drop.
pub struct Server {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub async fn start(respond: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Server {
        let respond: Responder = Arc::new(respond);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let record = record.clone();
                let respond = respond.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let record = record.clone();
                        let respond = respond.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let seen = Seen {
                                method: parts.method,
                                uri: parts.uri.to_string(),
                                headers: parts.headers,
                                body,
                            };
                            let (status, headers, text, delay) = respond(&seen);
                            record.lock().unwrap().push(seen);
                            if let Some(d) = delay {
                                tokio::time::sleep(d).await;
                            }
                            let mut resp = Response::builder().status(status);
                            for (n, v) in headers {
                                resp = resp.header(n, v);
                            }
                            Ok::<_, Infallible>(resp.body(Full::new(Bytes::from(text))).unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Server { addr, seen, task }
    }

    /// A backend answering 200 "hello from backend" to everything.
    pub async fn backend() -> Server {
        Server::start(|_| (200, vec![], "hello from backend".into(), None)).await
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// The real proxy serving `config`, on loopback ports chosen by the OS. Shut down and
/// aborted on drop.
pub struct Proxy {
    pub runtime: Arc<Runtime>,
    pub http: SocketAddr,
    pub https: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

impl Proxy {
    pub async fn start(config: Config) -> Proxy {
        let runtime = Runtime::new();
        runtime.publish(config);
        runtime.set_ready(true);
        let settings = ProxySettings {
            http_addr: "127.0.0.1:0".parse().unwrap(),
            https_addr: "127.0.0.1:0".parse().unwrap(),
            trusted_proxies: vec![],
            shutdown_grace: Duration::from_secs(1),
        };
        let bound = BoundProxy::bind(settings, runtime.clone())
            .await
            .expect("bind proxy");
        let http = bound.http_addr();
        let https = bound.https_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(bound.serve(async move {
            let _ = stopped.await;
        }));
        Proxy {
            runtime,
            http,
            https,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .no_proxy()
        .build()
        .expect("client")
}

pub fn upstream(addr: SocketAddr) -> Arc<Upstream> {
    Arc::new(Upstream::new(
        addr.to_string(),
        UpstreamProtocol::Http,
        Endpoints::Static(vec![addr]),
    ))
}

/// Builds a `Config` with one any-host virtual host of prefix routes.
#[derive(Default)]
pub struct ConfigBuilder {
    routes: Vec<(String, Arc<Route>)>,
    zones: Vec<ZoneSpec>,
}

impl ConfigBuilder {
    pub fn zone(mut self, spec: ZoneSpec) -> Self {
        self.zones.push(spec);
        self
    }

    pub fn route(mut self, prefix: &str, backend: SocketAddr, policy: RoutePolicy) -> Self {
        let route = Route {
            name: format!("test{prefix}").into(),
            path: PathMatch::Prefix(prefix.to_string()),
            backend: Backend::Upstream(upstream(backend)),
            policy,
            metrics: Default::default(),
        };
        self.routes.push((prefix.to_string(), Arc::new(route)));
        self
    }

    pub fn build(self) -> Config {
        let prefix: HashMap<String, Arc<Route>> = self.routes.into_iter().collect();
        Config {
            vhosts: vec![VirtualHost {
                host: String::new(),
                prefix,
                ..Default::default()
            }],
            any_host: Some(0),
            zones: self.zones,
            ..Default::default()
        }
    }
}

pub fn zone(id: &str, requests: u32, per: Duration, key: ZoneKey) -> ZoneSpec {
    ZoneSpec {
        id: id.into(),
        requests,
        per,
        key,
        size_bytes: 1024 * 1024,
    }
}

pub fn limited(zone: usize, burst: u32, nodelay: bool) -> RoutePolicy {
    RoutePolicy {
        rate_limit: Some(RateLimit {
            zone,
            burst,
            nodelay,
            reject_status: 429,
            exempt: None,
        }),
        ..Default::default()
    }
}

pub fn cors(origins: &[&str]) -> CorsPolicy {
    CorsPolicy {
        allow_any_origin: false,
        exact_origins: origins.iter().map(|o| o.to_lowercase()).collect(),
        wildcard_origins: vec![],
        allow_methods: HeaderValue::from_static("GET, POST, OPTIONS"),
        allow_headers: HeaderValue::from_static("Authorization, Content-Type"),
        expose_headers: Some(HeaderValue::from_static("X-Request-ID")),
        allow_credentials: false,
        max_age: HeaderValue::from_static("86400"),
    }
}

pub fn auth_hook(hook: SocketAddr, timeout: Duration, cache: bool) -> AuthHookPolicy {
    let upstream = upstream(hook);
    AuthHookPolicy {
        id: format!("test/hook-{}", hook.port()).into(),
        target: HookTarget::new(&upstream, "/internal/auth").unwrap(),
        upstream,
        path_and_query: "/internal/auth".into(),
        method: Method::GET,
        forward_headers: vec![HeaderName::from_static("x-api-key")],
        copy_headers: vec![HeaderName::from_static("x-user-id")],
        timeout,
        cache: cache.then(|| AuthCachePolicy {
            ttl: Duration::from_secs(60),
            key: vec![HeaderName::from_static("x-api-key")],
        }),
        failure_status: 500,
        metrics: Default::default(),
    }
}

/// The value of a Prometheus sample line `name{labels} value` in the text exposition.
pub fn metric(name_and_labels: &str) -> Option<f64> {
    airgate::telemetry::metrics()
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}
