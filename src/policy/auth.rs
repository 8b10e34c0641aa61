//! The auth hook (nginx `auth_request`). OWNER: policies. Contract used by the proxy
//! pipeline: `AuthClient::check`, `AuthOutcome` and `apply_allow`.
//!
//! For each request on a route with a hook, the proxy asks the hook first:
//!
//! - The sub-request goes to `hook.upstream` + `hook.path_and_query` (the complete path;
//!   the upstream's `base_path` is not added) with `hook.method` (GET unless configured)
//!   and **never a body** (`Content-Length: 0`). It carries the configured
//!   `forward_headers` and `X-Original-URI`, `X-Original-URL`, `X-Original-Method`,
//!   `X-Real-IP`, `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and
//!   `X-Request-ID`. No other client header reaches the hook.
//! - 2xx: allow, adding the hook's `copy_headers` to the upstream request
//!   ([`apply_allow`] also removes client-sent headers of those names, as
//!   ingress-nginx's `proxy_set_header` did, so a client cannot forge `X-User-Id`).
//! - 401/403: deny with that status; only the hook's `WWW-Authenticate` reaches the
//!   client. The backend is never contacted.
//! - Anything else, a timeout (`hook.timeout`, from connect to the response headers;
//!   the hook's body is ignored) or a connection failure: fail closed with `hook.failure_status` (500 like nginx, or 503).
//!
//! Answers are cached when the hook has a cache with at least one key header: keyed by
//! the hook id and the key headers' exact values, for `ttl`; only allow and deny are
//! cached, never failures. The cache holds at most [`CACHE_CAPACITY`] answers over all
//! hooks, least recently used evicted first. Connections to hooks are pooled and kept
//! alive by the same [`Upstreams`] machinery that forwards requests.
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Empty, Limited};
use lru::LruCache;
use tokio::time::Instant;

use crate::config::AuthHookPolicy;
use crate::telemetry::metrics::HookOutcome;
use crate::upstream::{BodySent, ResponseWait, UpstreamError, Upstreams};

/// Most cached hook answers kept, over all hooks.
pub const CACHE_CAPACITY: usize = 10_000;

/// Hook response bodies are read (to keep the connection reusable) up to this size,
/// then the connection is dropped instead.
const MAX_HOOK_BODY: usize = 64 * 1024;

/// How long the answer may wait for a small hook body already on its way.
const INLINE_DRAIN: Duration = Duration::from_millis(50);

/// What the pipeline needs to know about the client request to build the sub-request.
#[derive(Debug)]
pub struct AuthRequest<'a> {
    pub parts: &'a http::request::Parts,
    /// The client's IP (`X-Real-IP`, `X-Forwarded-For`), as the proxy forwards it.
    pub client_ip: &'a HeaderValue,
    /// `http` or `https`.
    pub scheme: &'static str,
    pub host: &'a str,
    pub request_id: &'a HeaderValue,
}

#[derive(Debug)]
pub enum AuthOutcome {
    /// Forward, adding these headers (the hook's `copyHeaders`) to the upstream request.
    Allow { copy: HeaderMap },
    /// 401/403 from the hook: answer the client with this status and headers
    /// (WWW-Authenticate); the backend is never contacted.
    Deny {
        status: StatusCode,
        headers: HeaderMap,
    },
    /// The hook failed (other status, timeout, connection error): fail closed with this status.
    Fail { status: StatusCode, reason: String },
}

/// Set the hook's `copy_headers` on the upstream request: every configured name is
/// removed first (so client-sent values never pass for the hook's), then the hook's
/// values are added.
pub fn apply_allow(hook: &AuthHookPolicy, copy: &HeaderMap, upstream_request: &mut HeaderMap) {
    for name in &hook.copy_headers {
        upstream_request.remove(name);
    }
    for (name, value) in copy {
        upstream_request.append(name.clone(), value.clone());
    }
}

#[derive(Debug, Clone)]
enum Cached {
    Allow(HeaderMap),
    Deny(StatusCode, HeaderMap),
}

impl Cached {
    fn outcome(&self) -> AuthOutcome {
        match self {
            Cached::Allow(copy) => AuthOutcome::Allow { copy: copy.clone() },
            Cached::Deny(status, headers) => AuthOutcome::Deny {
                status: *status,
                headers: headers.clone(),
            },
        }
    }
}

#[derive(Debug)]
struct CacheEntry {
    expires: Instant,
    answer: Cached,
}

#[derive(Debug, thiserror::Error)]
enum HookError {
    #[error("auth hook {hook} unreachable: {source}")]
    Request {
        hook: String,
        #[source]
        source: UpstreamError,
    },
    #[error("auth hook {hook} timed out after {timeout:?}")]
    Timeout { hook: String, timeout: Duration },
}

/// Calls auth hooks over pooled connections and caches their answers. Lives outside the
/// snapshot.
pub struct AuthClient {
    /// Hook connections: the same pools, endpoint choice and failover as upstreams
    /// (hook certificates are not verified either, like nginx's `proxy_ssl_verify off`).
    upstreams: Arc<Upstreams>,
    cache: Mutex<LruCache<Vec<u8>, CacheEntry>>,
}

impl std::fmt::Debug for AuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthClient").finish_non_exhaustive()
    }
}

impl Default for AuthClient {
    fn default() -> Self {
        let capacity = NonZeroUsize::new(CACHE_CAPACITY).unwrap_or(NonZeroUsize::MIN);
        AuthClient {
            upstreams: Upstreams::new().unwrap_or_else(|e| {
                // Only a broken crypto provider gets here; plain-HTTP hooks still work.
                tracing::error!(error = %e, "no TLS client for auth hooks; https hooks will fail");
                Upstreams::without_tls()
            }),
            cache: Mutex::new(LruCache::new(capacity)),
        }
    }
}

impl AuthClient {
    pub async fn check(&self, hook: &AuthHookPolicy, request: &AuthRequest<'_>) -> AuthOutcome {
        let id: &str = &hook.id;
        let cache_key = cache_key(hook, &request.parts.headers);
        let cached = cache_key
            .as_ref()
            .and_then(|key| self.cache_get(key, Instant::now()));
        if let Some(answer) = cached {
            hook.metrics.outcome(id, HookOutcome::CacheHit);
            return answer.outcome();
        }

        let started = Instant::now();
        let result = tokio::time::timeout(hook.timeout, self.call(hook, request)).await;
        hook.metrics.duration(id, started.elapsed());
        let result = result.unwrap_or_else(|_| {
            Err(HookError::Timeout {
                hook: hook.id.to_string(),
                timeout: hook.timeout,
            })
        });
        let answer = match result {
            Ok((status, headers)) => classify(hook, status, &headers),
            Err(e) => Err(e.to_string()),
        };
        match answer {
            Ok(answer) => {
                let outcome = match &answer {
                    Cached::Allow(_) => HookOutcome::Allowed,
                    Cached::Deny(..) => HookOutcome::Denied,
                };
                hook.metrics.outcome(id, outcome);
                let result = answer.outcome();
                if let (Some(key), Some(cache)) = (cache_key, &hook.cache) {
                    self.cache_put(key, answer, Instant::now() + cache.ttl);
                }
                result
            }
            Err(reason) => {
                hook.metrics.outcome(id, HookOutcome::Error);
                tracing::warn!(hook = id, %reason, "auth hook failed; failing closed");
                AuthOutcome::Fail {
                    status: StatusCode::from_u16(hook.failure_status)
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    reason,
                }
            }
        }
    }

    /// The sub-request: status and headers of the hook's answer. The body is drained
    /// (bounded) so the pooled connection can be reused.
    async fn call(
        &self,
        hook: &AuthHookPolicy,
        request: &AuthRequest<'_>,
    ) -> Result<(StatusCode, HeaderMap), HookError> {
        let empty = Empty::<Bytes>::new().map_err(|never| match never {});
        let mut sub = Request::new(empty.boxed_unsync());
        *sub.method_mut() = hook.method.clone();
        *sub.uri_mut() = hook.target.uri.clone();
        *sub.headers_mut() = sub_request_headers(hook, request);
        // The hook answers within `hook.timeout` as a whole (the caller's timeout); the
        // same bound applies to connecting and to the wait for response headers.
        let wait = ResponseWait {
            read_timeout: hook.timeout,
            body_sent: BodySent::already(),
        };
        let exchange =
            self.upstreams
                .send(&hook.upstream, sub, hook.timeout, &wait, false)
                .await
                .map_err(|source| match source {
                    UpstreamError::ResponseTimeout { .. }
                    | UpstreamError::ConnectTimeout { .. } => HookError::Timeout {
                        hook: hook.id.to_string(),
                        timeout: hook.timeout,
                    },
                    source => HookError::Request {
                        hook: hook.id.to_string(),
                        source,
                    },
                })?;
        let (parts, body) = exchange.response.into_parts();
        let idle = exchange.idle;
        // The answer is in the status and headers; the body only has to be drained so
        // the pooled connection can be reused. A small body of known length normally
        // arrived with the headers, so it is read here (briefly: a stall only costs the
        // connection); anything else is drained off the request path.
        if body.is_end_stream() {
            if let Some(idle) = idle {
                idle.release();
            }
        } else {
            let small = body
                .size_hint()
                .exact()
                .is_some_and(|n| n <= MAX_HOOK_BODY as u64);
            let drain = async move {
                if Limited::new(body, MAX_HOOK_BODY).collect().await.is_ok() {
                    if let Some(idle) = idle {
                        idle.release();
                    }
                }
            };
            if small {
                let _ = tokio::time::timeout(INLINE_DRAIN, drain).await;
            } else {
                let timeout = hook.timeout;
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(timeout, drain).await;
                });
            }
        }
        Ok((parts.status, parts.headers))
    }

    fn cache_get(&self, key: &[u8], now: Instant) -> Option<Cached> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(key) {
            Some(entry) if entry.expires > now => Some(entry.answer.clone()),
            Some(_) => {
                cache.pop(key);
                None
            }
            None => None,
        }
    }

    fn cache_put(&self, key: Vec<u8>, answer: Cached, expires: Instant) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.put(key, CacheEntry { expires, answer });
    }
}

/// Map the hook's status to an answer (`Err` = fail closed with this reason).
fn classify(
    hook: &AuthHookPolicy,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<Cached, String> {
    if status.is_success() {
        let mut copy = HeaderMap::new();
        for name in &hook.copy_headers {
            for value in headers.get_all(name) {
                copy.append(name.clone(), value.clone());
            }
        }
        Ok(Cached::Allow(copy))
    } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        let mut deny = HeaderMap::new();
        for value in headers.get_all(WWW_AUTHENTICATE) {
            deny.append(WWW_AUTHENTICATE, value.clone());
        }
        Ok(Cached::Deny(status, deny))
    } else {
        Err(format!(
            "auth hook {} answered {}",
            hook.id,
            status.as_u16()
        ))
    }
}

/// The cache key, or `None` when this hook's answers are not cached. Values are
/// length-prefixed so no two different header sets encode alike.
fn cache_key(hook: &AuthHookPolicy, headers: &HeaderMap) -> Option<Vec<u8>> {
    let cache = hook.cache.as_ref()?;
    if cache.key.is_empty() {
        // With no key every client would share one answer.
        return None;
    }
    let mut key = Vec::with_capacity(64);
    push_field(&mut key, hook.id.as_bytes());
    for name in &cache.key {
        push_field(&mut key, name.as_str().as_bytes());
        let values = headers.get_all(name);
        key.extend_from_slice(&(values.iter().count() as u32).to_le_bytes());
        for value in values {
            push_field(&mut key, value.as_bytes());
        }
    }
    Some(key)
}

fn push_field(key: &mut Vec<u8>, bytes: &[u8]) {
    key.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    key.extend_from_slice(bytes);
}

const X_ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The sub-request's headers: the hook's `forwardHeaders` from the client's request,
/// then what nginx's `auth_request` conventions add.
fn sub_request_headers(hook: &AuthHookPolicy, request: &AuthRequest<'_>) -> HeaderMap {
    // Sized for everything below, so the map never grows while it is filled.
    let mut out = HeaderMap::with_capacity(hook.forward_headers.len() + SUB_REQUEST_HEADERS);
    let client = &request.parts.headers;
    for name in &hook.forward_headers {
        for value in client.get_all(name) {
            out.append(name.clone(), value.clone());
        }
    }
    let uri = request
        .parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str());
    // Values come from an already parsed request, so they are valid; skip any that are
    // not rather than fail the request.
    if let Ok(v) = HeaderValue::from_str(uri) {
        out.insert(X_ORIGINAL_URI, v);
    }
    let mut url = String::with_capacity(request.scheme.len() + 3 + request.host.len() + uri.len());
    for part in [request.scheme, "://", request.host, uri] {
        url.push_str(part);
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(url)) {
        out.insert(X_ORIGINAL_URL, v);
    }
    if let Some(v) = method_value(&request.parts.method) {
        out.insert(X_ORIGINAL_METHOD, v);
    }
    out.insert(X_REAL_IP, request.client_ip.clone());
    out.insert(X_FORWARDED_FOR, request.client_ip.clone());
    out.insert(X_FORWARDED_PROTO, HeaderValue::from_static(request.scheme));
    if let Ok(v) = HeaderValue::from_str(request.host) {
        out.insert(X_FORWARDED_HOST, v);
    }
    out.insert(X_REQUEST_ID, request.request_id.clone());
    if let Some(host) = &hook.target.host {
        out.insert(HOST, host.clone());
    }
    out.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    out
}

/// Headers [`sub_request_headers`] adds besides the forwarded ones.
const SUB_REQUEST_HEADERS: usize = 11;

/// `X-Original-Method`: the standard methods without an allocation.
fn method_value(method: &Method) -> Option<HeaderValue> {
    let name = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => return HeaderValue::from_str(method.as_str()).ok(),
    };
    Some(HeaderValue::from_static(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::config::{Endpoints, HookTarget, Upstream, UpstreamProtocol};
    use http::Response;
    use http_body_util::Full;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use crate::config::AuthCachePolicy;

    /// What the hook saw.
    #[derive(Debug, Clone)]
    struct Seen {
        method: Method,
        uri: String,
        headers: HeaderMap,
        body_len: usize,
    }

    /// A real HTTP hook on 127.0.0.1:0. It answers by the `x-api-key` header:
    /// `good` -> 200 with X-User-Id, `slow` -> 200 after 2 s, `broken` -> 502,
    /// `forbidden` -> 403, anything else -> 401 with WWW-Authenticate.
    struct Hook {
        addr: SocketAddr,
        seen: Arc<Mutex<Vec<Seen>>>,
        connections: Arc<AtomicUsize>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for Hook {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn hook_server() -> Hook {
        hook_server_with(None).await
    }

    /// The same hook behind TLS with a self-signed certificate.
    async fn tls_hook_server() -> Hook {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cert = crate::tls::default_certificate().unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(cert)));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        hook_server_with(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn hook_server_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Hook {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let record = seen.clone();
        let connections: Arc<AtomicUsize> = Arc::default();
        let accepted = connections.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let record = record.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let record = record.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes().len());
                            record.lock().unwrap().push(Seen {
                                method: parts.method.clone(),
                                uri: parts.uri.to_string(),
                                headers: parts.headers.clone(),
                                body_len: body.unwrap_or(usize::MAX),
                            });
                            let key = parts
                                .headers
                                .get("x-api-key")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("");
                            let mut resp = Response::builder();
                            resp = match key {
                                "good" => resp
                                    .status(200)
                                    .header("x-user-id", "u-42")
                                    .header("x-internal", "secret"),
                                "slow" => {
                                    tokio::time::sleep(Duration::from_secs(2)).await;
                                    resp.status(200)
                                }
                                "broken" => resp.status(502),
                                "forbidden" => resp.status(403).header("x-internal", "secret"),
                                _ => resp
                                    .status(401)
                                    .header("www-authenticate", "Bearer realm=\"ai\"")
                                    .header("x-internal", "secret"),
                            };
                            Ok::<_, Infallible>(
                                resp.body(Full::new(Bytes::from_static(b"hook says hi")))
                                    .unwrap(),
                            )
                        }
                    });
                    let http1 = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = http1.serve_connection(TokioIo::new(stream), svc).await;
                            }
                        }
                        None => {
                            let _ = http1.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        Hook {
            addr,
            seen,
            connections,
            task,
        }
    }

    fn hook(addr: SocketAddr, cache: bool) -> AuthHookPolicy {
        let upstream = Upstream::new(
            "hook",
            UpstreamProtocol::Http,
            Endpoints::Static(vec![addr]),
        );
        let path_and_query = "/internal/auth?v=1";
        AuthHookPolicy {
            id: format!("test/hook-{}", addr.port()).into(),
            target: HookTarget::new(&upstream, path_and_query).unwrap(),
            upstream: Arc::new(upstream),
            path_and_query: path_and_query.into(),
            method: Method::GET,
            forward_headers: vec![HeaderName::from_static("x-api-key")],
            copy_headers: vec![HeaderName::from_static("x-user-id")],
            timeout: Duration::from_millis(300),
            cache: cache.then(|| AuthCachePolicy {
                ttl: Duration::from_secs(30),
                key: vec![HeaderName::from_static("x-api-key")],
            }),
            failure_status: 500,
            metrics: Default::default(),
        }
    }

    fn client_request(key: &str) -> http::request::Parts {
        let (parts, ()) = Request::builder()
            .method(Method::POST)
            .uri("/v1/chat/completions?stream=true")
            .header("x-api-key", key)
            .header("cookie", "session=private")
            .header("content-length", "17")
            .body(())
            .unwrap()
            .into_parts();
        parts
    }

    async fn ask(client: &AuthClient, hook: &AuthHookPolicy, key: &str) -> AuthOutcome {
        let parts = client_request(key);
        client
            .check(
                hook,
                &AuthRequest {
                    parts: &parts,
                    client_ip: &HeaderValue::from_static("192.0.2.7"),
                    scheme: "https",
                    host: "ai.example.com",
                    request_id: &HeaderValue::from_static("req-1"),
                },
            )
            .await
    }

    #[tokio::test]
    async fn allow_copies_headers_and_sends_the_right_sub_request() {
        let server = hook_server().await;
        let h = hook(server.addr, false);
        let client = AuthClient::default();
        let AuthOutcome::Allow { copy } = ask(&client, &h, "good").await else {
            panic!("expected allow");
        };
        assert_eq!(copy.len(), 1, "only copyHeaders: {copy:?}");
        assert_eq!(copy["x-user-id"], "u-42");

        let seen = server.seen.lock().unwrap()[0].clone();
        assert_eq!(seen.method, Method::GET);
        assert_eq!(seen.uri, "/internal/auth?v=1");
        assert_eq!(seen.body_len, 0);
        let hdr = |n: &str| seen.headers.get(n).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(hdr("content-length").as_deref(), Some("0"));
        assert_eq!(hdr("x-api-key").as_deref(), Some("good"));
        assert_eq!(
            hdr("x-original-uri").as_deref(),
            Some("/v1/chat/completions?stream=true")
        );
        assert_eq!(
            hdr("x-original-url").as_deref(),
            Some("https://ai.example.com/v1/chat/completions?stream=true")
        );
        assert_eq!(hdr("x-original-method").as_deref(), Some("POST"));
        assert_eq!(hdr("x-forwarded-for").as_deref(), Some("192.0.2.7"));
        assert_eq!(hdr("x-forwarded-proto").as_deref(), Some("https"));
        assert_eq!(hdr("x-forwarded-host").as_deref(), Some("ai.example.com"));
        assert_eq!(hdr("x-request-id").as_deref(), Some("req-1"));
        assert_eq!(hdr("cookie"), None, "only forwardHeaders reach the hook");

        let mut upstream = HeaderMap::new();
        upstream.insert("x-user-id", HeaderValue::from_static("forged"));
        apply_allow(&h, &copy, &mut upstream);
        assert_eq!(
            upstream.get_all("x-user-id").iter().collect::<Vec<_>>(),
            ["u-42"]
        );
    }

    #[tokio::test]
    async fn https_hooks_work_without_certificate_verification() {
        let server = tls_hook_server().await;
        let mut h = hook(server.addr, false);
        h.upstream = Arc::new(Upstream::new(
            "tls-hook",
            UpstreamProtocol::Https,
            Endpoints::Static(vec![server.addr]),
        ));
        let client = AuthClient::default();
        match ask(&client, &h, "good").await {
            AuthOutcome::Allow { copy } => assert_eq!(copy["x-user-id"], "u-42"),
            other => panic!("expected allow over TLS, got {other:?}"),
        }
        assert!(matches!(
            ask(&client, &h, "bad").await,
            AuthOutcome::Deny { .. }
        ));
        assert_eq!(server.seen.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn hook_connections_are_kept_alive_and_reused() {
        let server = hook_server().await;
        let h = hook(server.addr, false);
        let client = AuthClient::default();
        for _ in 0..5 {
            assert!(matches!(
                ask(&client, &h, "good").await,
                AuthOutcome::Allow { .. }
            ));
        }
        assert_eq!(server.seen.lock().unwrap().len(), 5);
        assert_eq!(
            server.connections.load(Ordering::SeqCst),
            1,
            "one pooled connection"
        );
    }

    #[tokio::test]
    async fn deny_passes_only_www_authenticate() {
        let server = hook_server().await;
        let h = hook(server.addr, false);
        let client = AuthClient::default();
        match ask(&client, &h, "wrong").await {
            AuthOutcome::Deny { status, headers } => {
                assert_eq!(status, StatusCode::UNAUTHORIZED);
                assert_eq!(headers.len(), 1);
                assert_eq!(headers[WWW_AUTHENTICATE], "Bearer realm=\"ai\"");
            }
            other => panic!("expected deny, got {other:?}"),
        }
        match ask(&client, &h, "forbidden").await {
            AuthOutcome::Deny { status, headers } => {
                assert_eq!(status, StatusCode::FORBIDDEN);
                assert!(headers.is_empty());
            }
            other => panic!("expected deny, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn failures_fail_closed_with_the_configured_status() {
        let server = hook_server().await;
        let mut h = hook(server.addr, true);
        let client = AuthClient::default();
        match ask(&client, &h, "broken").await {
            AuthOutcome::Fail { status, reason } => {
                assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
                assert!(reason.contains("502"), "{reason}");
            }
            other => panic!("expected fail, got {other:?}"),
        }
        // Failures are not cached: the hook is asked again.
        let _ = ask(&client, &h, "broken").await;
        assert_eq!(server.seen.lock().unwrap().len(), 2);

        let started = Instant::now();
        match ask(&client, &h, "slow").await {
            AuthOutcome::Fail { status, reason } => {
                assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
                assert!(reason.contains("timed out"), "{reason}");
            }
            other => panic!("expected fail, got {other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the timeout cut the wait"
        );

        // A hook that is down: a port that was just free.
        let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let down = free.local_addr().unwrap();
        drop(free);
        h = hook(down, false);
        h.failure_status = 503;
        match ask(&client, &h, "good").await {
            AuthOutcome::Fail { status, reason } => {
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
                assert!(reason.contains("unreachable"), "{reason}");
            }
            other => panic!("expected fail, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn cache_answers_allow_and_deny_per_key_until_ttl() {
        let server = hook_server().await;
        let h = hook(server.addr, true);
        let client = AuthClient::default();
        let calls = || server.seen.lock().unwrap().len();
        assert!(matches!(
            ask(&client, &h, "good").await,
            AuthOutcome::Allow { .. }
        ));
        let AuthOutcome::Allow { copy } = ask(&client, &h, "good").await else {
            panic!("expected cached allow");
        };
        assert_eq!(
            copy["x-user-id"], "u-42",
            "cached allow keeps copied headers"
        );
        assert_eq!(calls(), 1);
        assert!(matches!(
            ask(&client, &h, "wrong").await,
            AuthOutcome::Deny { .. }
        ));
        assert!(matches!(
            ask(&client, &h, "wrong").await,
            AuthOutcome::Deny { .. }
        ));
        assert_eq!(calls(), 2, "deny cached per key");
        assert!(matches!(
            ask(&client, &h, "forbidden").await,
            AuthOutcome::Deny { .. }
        ));
        assert_eq!(calls(), 3, "another key is another entry");

        // Expiry: past the TTL the entry is gone.
        let key = cache_key(&h, &client_request("good").headers).unwrap();
        assert!(client.cache_get(&key, Instant::now()).is_some());
        assert!(
            client
                .cache_get(&key, Instant::now() + Duration::from_secs(31))
                .is_none()
        );
        assert!(matches!(
            ask(&client, &h, "good").await,
            AuthOutcome::Allow { .. }
        ));
        assert_eq!(calls(), 4);
    }

    #[test]
    fn cache_keys_are_unambiguous_and_need_a_key_header() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut h = hook(addr, true);
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (n, v) in pairs {
                m.append(*n, HeaderValue::from_static(v));
            }
            m
        };
        let a = cache_key(&h, &headers(&[("x-api-key", "ab")]));
        let b = cache_key(&h, &headers(&[("x-api-key", "a"), ("x-api-key", "b")]));
        let none = cache_key(&h, &headers(&[]));
        assert_ne!(a, b);
        assert_ne!(a, none);
        assert!(a.is_some());
        h.cache.as_mut().unwrap().key.clear();
        assert!(cache_key(&h, &headers(&[("x-api-key", "ab")])).is_none());
    }

    #[test]
    fn client_builds_outside_a_runtime() {
        let _ = AuthClient::default();
    }
}
