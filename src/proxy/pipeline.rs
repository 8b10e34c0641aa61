//! The per-request pipeline. One [`Ctx`] goes by `&mut` through the phases in order:
//! match, redirect, source filter, CORS preflight, rate zone, body limit, auth hook,
//! forward, respond, log. Every phase may answer the request itself; whatever answers,
//! [`finish`] adds the security and CORS headers and wires up the access log.
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::uri::Authority;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version, header};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::body::{ClientBody, InboundBody, LoggedRequest, RequestLog};
use super::errors::{self, json_error};
use super::headers::{self, ConnHeaders, RoutingHost};
use super::server::{Lifecycle, Shared};
use crate::config::{Backend, Route};
use crate::policy::auth::{AuthOutcome, AuthRequest};
use crate::policy::ratelimit::Decision;
use crate::policy::{cors, headers as security};
use crate::runtime::Snapshot;
use crate::telemetry::access;
use crate::upstream::ProxyBody;

/// Where the connection came in. Shared by every request on the connection.
#[derive(Debug)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
    /// The addresses as forwarding-header values, formatted once.
    pub headers: ConnHeaders,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, local: SocketAddr, tls: bool) -> Self {
        ConnInfo {
            peer,
            tls,
            headers: ConnHeaders::new(peer.ip(), local.port()),
        }
    }
}

/// Per-request state shared by the phases.
pub struct Ctx {
    /// The snapshot this request (and its stream or tunnel) is served with, start to end.
    pub snapshot: Arc<Snapshot>,
    pub started: Instant,
    pub conn: Arc<ConnInfo>,
    pub client_ip: IpAddr,
    /// `client_ip` as a header value (`X-Real-IP`, and the auth hook's `X-Forwarded-For`):
    /// the connection's, formatted once, unless a trusted proxy in front named another.
    pub client_ip_value: HeaderValue,
    pub trusted_peer: bool,
    /// As the client sent it (with port); forwarded as `Host` unless overridden.
    pub authority: Option<Authority>,
    /// The routing host, found once (see [`Ctx::host`]); `None` without an authority.
    routing_host: Option<RoutingHost>,
    pub request_id: HeaderValue,
    pub route: Option<Arc<Route>>,
    pub cors_origin: Option<HeaderValue>,
    pub preflight: bool,
    pub upstream_addr: Option<SocketAddr>,
    pub upstream_time: Option<Duration>,
}

impl Ctx {
    pub fn scheme(&self) -> &'static str {
        if self.conn.tls { "https" } else { "http" }
    }

    /// The host routes are matched on: lower case, no port, no trailing dot.
    pub fn host(&self) -> &str {
        match (&self.routing_host, &self.authority) {
            (Some(host), Some(authority)) => host.as_str(authority),
            _ => "",
        }
    }

    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("-")
    }
}

/// Serve one request. Never fails: every problem becomes a response.
///
/// Not an `async fn`: the set-up runs here and the future keeps each value it needs once.
/// An `async fn` keeps its arguments in its state for its whole life, beside the copies
/// its body moves them into, and the phases below take this state by reference for the
/// same reason. The future is copied into a box per request, every byte of it: this
/// took it from 5,752 to 3,088 bytes, and a plain proxied GET from ~41,490 to ~40,350
/// instructions (callgrind, bench/profile.py).
pub fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    life: Lifecycle,
    request: Request<InboundBody>,
) -> impl Future<Output = Response<ClientBody>> + Send {
    let (mut parts, body) = request.into_parts();
    let snapshot = shared.runtime.load();
    let trusted_peer = headers::is_trusted(&shared.trusted_proxies, conn.peer.ip());
    let client_ip = headers::client_ip(&parts.headers, conn.peer.ip(), &shared.trusted_proxies);
    let authority = headers::request_authority(&parts);
    let client_ip_value = if client_ip == conn.peer.ip() {
        conn.headers.peer_ip.clone()
    } else {
        headers::ip_value(client_ip)
    };
    let mut ctx = Ctx {
        snapshot,
        started: Instant::now(),
        conn,
        client_ip,
        client_ip_value,
        trusted_peer,
        routing_host: authority.as_ref().map(RoutingHost::of),
        authority,
        request_id: headers::request_id(&parts.headers),
        route: None,
        cors_origin: None,
        preflight: false,
        upstream_addr: None,
        upstream_time: None,
    };
    // What only the access log needs is kept only when there is an access log.
    let logged = access::enabled().then(|| LoggedRequest {
        host: ctx.host().to_string(),
        uri: parts.uri.clone(),
        user_agent: parts.headers.get(header::USER_AGENT).cloned(),
    });
    let mut body = Some(body);
    async move {
        let (mut response, streaming) = run(&mut ctx, &shared, &life, &mut parts, &mut body).await;
        if let Some(unread) = body.take().and_then(InboundBody::into_unread) {
            // Answered before reading the body (413, 403, 429, a denial...): close the
            // connection once the client is done sending, like nginx's lingering close.
            // Closing at once would reset a client still writing its upload, and it would
            // see a broken pipe instead of our answer.
            if parts.version <= Version::HTTP_11 {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            linger(unread);
        }
        finish(
            ctx,
            response,
            streaming,
            parts.method,
            parts.version,
            logged,
        )
    }
}

/// How long an unread request body is drained after an early answer (nginx's
/// `lingering_time` is 30s; uploads on a healthy link finish far sooner).
const LINGER: Duration = Duration::from_secs(10);

fn linger(mut body: Incoming) {
    use http_body_util::BodyExt;
    tokio::spawn(async move {
        let drain = async { while let Some(Ok(_)) = body.frame().await {} };
        let _ = tokio::time::timeout(LINGER, drain).await;
    });
}

async fn run(
    ctx: &mut Ctx,
    shared: &Shared,
    life: &Lifecycle,
    parts: &mut Parts,
    body: &mut Option<InboundBody>,
) -> (Response<ProxyBody>, bool) {
    let Some(route) = ctx
        .snapshot
        .config
        .find_route(ctx.host(), parts.uri.path())
        .cloned()
    else {
        let message = format!(
            "no route for host {:?} path {:?}",
            ctx.host(),
            parts.uri.path()
        );
        return (json_error(StatusCode::NOT_FOUND, &message), false);
    };
    ctx.route = Some(route.clone());
    let policy = &route.policy;

    if let Some(cors_policy) = &policy.cors {
        ctx.cors_origin = cors::allowed_origin(cors_policy, &parts.headers);
    }

    // Redirect before anything else, as nginx's rewrite phase runs before access checks.
    if !ctx.conn.tls {
        if let Some(code) = policy.https_redirect {
            return (redirect(code, ctx.host(), parts), false);
        }
    }

    if let Some(allowed) = &policy.allow_sources {
        if !allowed.iter().any(|net| net.contains(&ctx.client_ip)) {
            let message = format!("client {} is not allowed on this route", ctx.client_ip);
            return (json_error(StatusCode::FORBIDDEN, &message), false);
        }
    }

    if let Some(cors_policy) = &policy.cors {
        if cors::is_preflight(&parts.method, &parts.headers) {
            ctx.preflight = true;
            let mut response = Response::new(errors::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            if let Some(origin) = &ctx.cors_origin {
                cors::preflight_headers(cors_policy, origin, response.headers_mut());
            }
            return (response, false);
        }
    }

    if let Some(limit) = &policy.rate_limit {
        let exempt = limit
            .exempt
            .as_ref()
            .is_some_and(|nets| nets.iter().any(|n| n.contains(&ctx.client_ip)));
        if let (false, Some(zone)) = (exempt, ctx.snapshot.zones.get(limit.zone)) {
            match zone.check(limit, &parts.headers, ctx.client_ip) {
                Decision::Allow => {}
                Decision::Delay(wait) => tokio::time::sleep(wait).await,
                Decision::Reject { retry_after } => {
                    let mut response = errors::json_error_code(
                        limit.reject_status,
                        "rate limit exceeded; retry later",
                    );
                    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                    return (response, false);
                }
            }
        }
    }

    if let Some(limit) = policy.max_body_size {
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit) {
            return (too_large(limit), false);
        }
    }

    let mut copy = HeaderMap::new();
    if let Some(hook) = &policy.auth {
        let request = AuthRequest {
            parts,
            client_ip: &ctx.client_ip_value,
            scheme: ctx.scheme(),
            host: ctx.host(),
            request_id: &ctx.request_id,
        };
        match Box::pin(shared.runtime.auth.check(hook, &request)).await {
            AuthOutcome::Allow { copy: c } => copy = c,
            AuthOutcome::Deny { status, headers } => {
                let mut response = json_error(status, "request denied by the auth hook");
                response.headers_mut().extend(headers);
                return (response, false);
            }
            AuthOutcome::Fail { status, reason } => {
                tracing::warn!(hook = %hook.id, %reason, "auth hook failed");
                return (
                    json_error(status, "the auth hook could not be reached"),
                    false,
                );
            }
        }
    }

    match &route.backend {
        Backend::Unavailable { status, message } => {
            (errors::json_error_code(*status, message), false)
        }
        Backend::Upstream(upstream) => {
            super::forward::forward(ctx, shared, life, &route, upstream, parts, body, &copy).await
        }
    }
}

pub fn too_large(limit: u64) -> Response<ProxyBody> {
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("request body is larger than this route allows ({limit} bytes)"),
    )
}

/// `https://host{path?query}`. The host is sent without port, like nginx's `$host`: a
/// non-standard HTTPS port is not known to the plain listener's clients anyway.
fn redirect(code: u16, host: &str, parts: &Parts) -> Response<ProxyBody> {
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let status = StatusCode::from_u16(code)
        .ok()
        .filter(|s| s.is_redirection())
        .unwrap_or(StatusCode::PERMANENT_REDIRECT);
    let location = format!("https://{host}{path}");
    match HeaderValue::from_str(&location) {
        Ok(value) => {
            let mut response = Response::new(errors::empty());
            *response.status_mut() = status;
            response.headers_mut().insert(header::LOCATION, value);
            response
        }
        Err(_) => json_error(StatusCode::BAD_REQUEST, "request host is not valid"),
    }
}

/// Add the route's response headers and attach the access log to the body.
fn finish(
    ctx: Ctx,
    response: Response<ProxyBody>,
    streaming: bool,
    method: Method,
    version: Version,
    logged: Option<LoggedRequest>,
) -> Response<ClientBody> {
    let (mut parts, body) = response.into_parts();
    if let Some(route) = &ctx.route {
        if route.policy.security_headers {
            security::apply_security_headers_tls(&mut parts.headers, ctx.conn.tls);
        }
        if let (Some(cors_policy), false) = (&route.policy.cors, ctx.preflight) {
            // airgate owns CORS on routes with a policy: a backend's `*` must not widen it.
            cors::strip_upstream(&mut parts.headers);
            if let Some(origin) = &ctx.cors_origin {
                cors::apply(cors_policy, origin, &mut parts.headers);
            }
        }
    }
    let log = RequestLog {
        started: ctx.started,
        method,
        version,
        status: parts.status.as_u16(),
        bytes_sent: 0,
        upstream_time: ctx.upstream_time,
        upstream_addr: ctx.upstream_addr,
        route: ctx.route,
        client_ip: ctx.client_ip,
        request_id: ctx.request_id,
        streaming,
        logged,
    };
    Response::from_parts(parts, ClientBody::new(body, log))
}
