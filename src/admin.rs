//! The admin server: `/metrics` (Prometheus text), `/healthz` (the process is up) and
//! `/readyz` (a configuration is being served). It runs apart from the data plane on its
//! own listener, so scraping and probes never compete with proxied traffic for routes.
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::runtime::Runtime;

/// Admin connections served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 64;
/// Probes and scrapes are tiny; a peer slower than this is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The admin listener, bound (so callers can learn a port bound as `:0`).
pub struct AdminServer {
    listener: TcpListener,
    runtime: Arc<Runtime>,
}

impl AdminServer {
    pub async fn bind(addr: SocketAddr, runtime: Arc<Runtime>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(AdminServer { listener, runtime })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serve until `shutdown` resolves, then close every admin connection.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                _ = &mut shutdown => break,
                p = limit.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let (stream, _peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // Reap finished connections so the set stays bounded by MAX_CONNECTIONS.
            while conns.try_join_next().is_some() {}
            let runtime = self.runtime.clone();
            conns.spawn(async move {
                let _permit = permit;
                let service = service_fn(move |req| {
                    let runtime = runtime.clone();
                    async move { Ok::<_, Infallible>(handle(&req, &runtime)) }
                });
                let _ = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
        conns.abort_all();
    }
}

/// Answer one admin request.
pub fn handle(req: &Request<Incoming>, runtime: &Runtime) -> Response<Full<Bytes>> {
    route(req.method(), req.uri().path(), runtime)
}

fn route(method: &Method, path: &str, runtime: &Runtime) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match path {
        "/metrics" => {
            let body = crate::telemetry::metrics().encode();
            Response::builder()
                .status(StatusCode::OK)
                .header(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )
                .body(Full::new(Bytes::from(body)))
                .unwrap_or_else(|_| Response::new(Full::default()))
        }
        "/healthz" | "/livez" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if runtime.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /healthz or /readyz\n",
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readyz_follows_the_runtime() {
        let rt = Runtime::new();
        assert_eq!(route(&Method::GET, "/readyz", &rt).status(), 503);
        rt.set_ready(true);
        assert_eq!(route(&Method::GET, "/readyz", &rt).status(), 200);
        assert_eq!(route(&Method::GET, "/healthz", &rt).status(), 200);
        assert_eq!(route(&Method::GET, "/nope", &rt).status(), 404);
        assert_eq!(route(&Method::POST, "/metrics", &rt).status(), 405);
    }
}
