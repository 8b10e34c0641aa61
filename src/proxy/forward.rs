//! Forwarding to the upstream: rewrite the target, set proxy headers, stream the body
//! both ways, and hand WebSocket handshakes over to a tunnel.

use http::request::Parts;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::upgrade::OnUpgrade;
use tokio::time::Instant;

use super::body::{BodyVerdict, InboundBody, RequestBody, UpstreamBody};
use super::errors::json_error;
use super::headers::{self, Forwarding};
use super::pipeline::{Ctx, too_large};
use super::server::{Lifecycle, Shared};
use crate::config::{PathRewrite, Route, Upstream, UpstreamProtocol};
use crate::upstream::{BodySent, ProxyBody, ResponseWait, UpstreamError};

/// The upstream path for a request path: rewrite, then prepend the base path.
pub fn upstream_path(rewrite: &PathRewrite, base_path: &str, path: &str) -> String {
    let rewritten: String = match rewrite {
        PathRewrite::None => path.to_string(),
        PathRewrite::StripPrefix(prefix) => match path.strip_prefix(prefix.as_str()) {
            Some(rest) if rest.starts_with('/') => rest.to_string(),
            Some(rest) => format!("/{rest}"),
            None => path.to_string(),
        },
        PathRewrite::Regex { regex, replacement } => {
            let out = regex.replace(path, replacement.as_str()).into_owned();
            if out.starts_with('/') {
                out
            } else {
                format!("/{out}")
            }
        }
    };
    if base_path.is_empty() {
        rewritten
    } else {
        format!("{base_path}{rewritten}")
    }
}

/// Everything borrowed: an `async fn` keeps its arguments in its state for its whole life
/// (see [`super::pipeline::handle`]), and only what crosses the `.await` below belongs
/// there; the upstream request is built by `prepare`, outside the future's state.
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    ctx: &mut Ctx,
    shared: &Shared,
    life: &Lifecycle,
    route: &Route,
    upstream: &Upstream,
    parts: &mut Parts,
    body: &mut Option<InboundBody>,
    copy: &HeaderMap,
) -> (Response<ProxyBody>, bool) {
    let Some(body) = body.take() else {
        return (
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "request body already used",
            ),
            false,
        );
    };
    // Taken apart at once: a field moved out of a struct that is still needed after the
    // `.await` would keep the whole struct's room in the future's state.
    let Outgoing {
        request,
        wait,
        verdict,
        client_upgrade,
        websocket,
    } = match prepare(ctx, route, upstream, parts, body, copy) {
        Ok(outgoing) => outgoing,
        Err(response) => return (response, false),
    };
    let policy = &route.policy;
    let timeouts = &policy.timeouts;

    let started = Instant::now();
    let sent = shared
        .upstreams
        .send(upstream, request, timeouts.connect, &wait, websocket)
        .await;
    let elapsed = started.elapsed();
    let exchange = match sent {
        Ok(exchange) => exchange,
        Err(e) => {
            if verdict.as_ref().is_some_and(BodyVerdict::too_large) {
                return (too_large(policy.max_body_size.unwrap_or_default()), false);
            }
            if verdict.as_ref().is_some_and(BodyVerdict::stalled) {
                let message = format!(
                    "the client sent no request body data for {:?}",
                    timeouts.send
                );
                return (json_error(StatusCode::REQUEST_TIMEOUT, &message), false);
            }
            crate::telemetry::metrics()
                .upstream_errors
                .with_label_values(&[&*route.name, e.kind()])
                .inc();
            tracing::warn!(route = %route.name, request_id = ctx.request_id(), error = %e, "upstream request failed");
            return (upstream_failure(&e), false);
        }
    };
    ctx.upstream_addr = Some(exchange.addr);
    ctx.upstream_time = Some(elapsed);
    route.metrics.upstream(&route.name, elapsed);

    let mut response = exchange.response;
    let idle = exchange.idle;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let (Some(client_upgrade), true) = (client_upgrade, websocket) else {
            return (
                json_error(
                    StatusCode::BAD_GATEWAY,
                    "upstream switched protocols unasked",
                ),
                false,
            );
        };
        let Some(upstream_upgrade) = response.extensions_mut().remove::<OnUpgrade>() else {
            return (
                json_error(StatusCode::BAD_GATEWAY, "upstream upgrade is not available"),
                false,
            );
        };
        super::upgrade::spawn_tunnel(
            client_upgrade,
            upstream_upgrade,
            timeouts.read,
            life.clone(),
        );
        let (mut parts, _) = response.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, true);
        return (Response::from_parts(parts, super::errors::empty()), false);
    }

    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
    let body = UpstreamBody::new(body, timeouts.read, route.name.clone(), idle).boxed_unsync();
    (Response::from_parts(parts, body), true)
}

/// The upstream request, and what its exchange needs besides.
struct Outgoing {
    request: Request<ProxyBody>,
    wait: ResponseWait,
    /// Why the request body was cut off, if it was; `None` without a body.
    verdict: Option<BodyVerdict>,
    client_upgrade: Option<OnUpgrade>,
    websocket: bool,
}

/// Build the upstream request: target URI, headers, body. `Err` is the answer when the
/// rewritten target is not valid.
// The `Ok` value is the larger one anyway, and a boxed error would cost an allocation.
#[allow(clippy::result_large_err)]
fn prepare(
    ctx: &Ctx,
    route: &Route,
    upstream: &Upstream,
    parts: &mut Parts,
    body: InboundBody,
    copy: &HeaderMap,
) -> Result<Outgoing, Response<ProxyBody>> {
    let policy = &route.policy;
    let timeouts = policy.timeouts;
    let websocket = policy.websocket
        && parts.version == Version::HTTP_11
        && headers::is_upgrade(&parts.headers);
    let client_upgrade = if websocket {
        parts.extensions.remove::<OnUpgrade>()
    } else {
        None
    };

    // Target URI. Without a rewrite or base path the client's path and query are used
    // as they are (a reference-counted copy, no parsing).
    let unchanged = matches!(policy.rewrite, PathRewrite::None) && upstream.base_path.is_empty();
    let path_and_query = match parts.uri.path_and_query() {
        Some(pq) if unchanged => Ok(pq.clone()),
        _ => {
            let path = upstream_path(&policy.rewrite, &upstream.base_path, parts.uri.path());
            PathAndQuery::try_from(match parts.uri.query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            })
        }
    };
    let Ok(path_and_query) = path_and_query else {
        return Err(json_error(
            StatusCode::BAD_REQUEST,
            "the rewritten request path is not valid",
        ));
    };

    // Headers.
    let mut out_headers = std::mem::take(&mut parts.headers);
    let keep_te_trailers = out_headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    headers::strip_request_hop_by_hop(&mut out_headers, websocket);
    let host_value = match &upstream.host_override {
        Some(h) => Some(h.clone()),
        None => ctx
            .authority
            .as_ref()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok()),
    };
    // Room for the forwarding headers at once, rather than growing the map as they go in.
    out_headers.reserve(8);
    headers::set_forwarding(
        &mut out_headers,
        &Forwarding {
            peer: ctx.conn.peer.ip(),
            conn: &ctx.conn.headers,
            client_ip_value: &ctx.client_ip_value,
            trusted_peer: ctx.trusted_peer,
            scheme: ctx.scheme(),
            host: ctx.host(),
            request_id: &ctx.request_id,
        },
    );
    if let Some(hook) = &policy.auth {
        crate::policy::auth::apply_allow(hook, copy, &mut out_headers);
    }
    let h2_upstream = !websocket
        && matches!(
            upstream.protocol,
            UpstreamProtocol::H2 | UpstreamProtocol::H2c
        );
    let mut uri_parts = http::uri::Parts::default();
    uri_parts.path_and_query = Some(path_and_query);
    if h2_upstream {
        // HTTP/2 carries the host in :authority; gRPC needs `te: trailers` end to end.
        out_headers.remove(header::HOST);
        if keep_te_trailers {
            out_headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        uri_parts.scheme = Some(if upstream.protocol == UpstreamProtocol::H2 {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        });
        uri_parts.authority = host_value
            .as_ref()
            .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
            .or_else(|| Some(http::uri::Authority::from_static("upstream")));
    } else {
        if let Some(h) = host_value {
            out_headers.insert(header::HOST, h);
        }
        headers::join_cookies(&mut out_headers);
    }
    let uri = match Uri::from_parts(uri_parts) {
        Ok(u) => u,
        Err(_) => {
            return Err(json_error(
                StatusCode::BAD_REQUEST,
                "the request target is not valid",
            ));
        }
    };

    // A request without a body (most GETs) skips the body wrapper and its shared state.
    let (body, verdict, body_sent) = if body.is_end_stream() {
        let empty = http_body_util::Empty::new().map_err(|never| match never {});
        (empty.boxed_unsync(), None, BodySent::already())
    } else {
        let verdict = BodyVerdict::default();
        let sent = BodySent::pending();
        let body = RequestBody::new(
            body,
            policy.max_body_size,
            timeouts.send,
            verdict.clone(),
            sent.clone(),
        );
        (body.boxed_unsync(), Some(verdict), sent)
    };
    let wait = ResponseWait {
        read_timeout: timeouts.read,
        body_sent,
    };
    let mut request = Request::new(body);
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = out_headers;
    *request.version_mut() = if h2_upstream {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };

    Ok(Outgoing {
        request,
        wait,
        verdict,
        client_upgrade,
        websocket,
    })
}

fn upstream_failure(e: &UpstreamError) -> Response<ProxyBody> {
    match e {
        UpstreamError::ResponseTimeout { .. } => json_error(
            StatusCode::GATEWAY_TIMEOUT,
            "the upstream did not answer in time",
        ),
        UpstreamError::NoEndpoints { .. } => json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the upstream has no available endpoints",
        ),
        e if e.is_connect() => {
            json_error(StatusCode::BAD_GATEWAY, "the upstream could not be reached")
        }
        _ => json_error(StatusCode::BAD_GATEWAY, "the upstream request failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_prefix_keeps_a_leading_slash() {
        let strip = PathRewrite::StripPrefix("/tts".into());
        assert_eq!(upstream_path(&strip, "", "/tts/speak"), "/speak");
        assert_eq!(upstream_path(&strip, "", "/tts"), "/");
        assert_eq!(upstream_path(&strip, "", "/tts/"), "/");
        assert_eq!(upstream_path(&strip, "/v1", "/tts/speak"), "/v1/speak");
    }

    #[test]
    fn regex_rewrite_uses_captures() {
        let rewrite = PathRewrite::Regex {
            regex: regex::Regex::new("^/api(/|$)(.*)").unwrap(),
            replacement: "/$2".into(),
        };
        assert_eq!(upstream_path(&rewrite, "", "/api/chat/x"), "/chat/x");
        assert_eq!(upstream_path(&rewrite, "", "/api"), "/");
    }
}
