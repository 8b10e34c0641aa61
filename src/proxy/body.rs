//! Body wrappers. Nothing here buffers: every frame is passed on as soon as it arrives.
//!
//! - [`InboundBody`]: the client's request body as a connection delivered it: streamed
//!   by hyper, or already read whole by airgate's own HTTP/1.1 server side.
//! - [`RequestBody`]: the client's body on its way upstream, enforcing the route's body
//!   limit (chunked bodies are cut off when they grow past it) and the send stall limit.
//! - [`UpstreamBody`]: the upstream's body on its way back, ending the stream when the
//!   upstream is silent longer than the read timeout (measured between frames).
//! - [`ClientBody`]: what the client receives; counts bytes and writes the access log
//!   and metrics when the response is finished or abandoned.
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::config::Route;
use crate::telemetry::access::{self, AccessRecord};
use crate::upstream::{BodySent, BoxError, IdleConn, ProxyBody, ResponseBody};

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body exceeds the route's limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("client sent no request body data for {0:?}")]
    SendTimeout(Duration),
    #[error("upstream sent no response data for {0:?}")]
    ReadTimeout(Duration),
}

/// Poll a lazily armed idle timer: armed when the inner body first has nothing to give,
/// disarmed whenever a frame arrives.
fn idle_expired(
    timer: &mut Option<Pin<Box<Sleep>>>,
    limit: Duration,
    cx: &mut Context<'_>,
) -> bool {
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
    timer.as_mut().poll(cx).is_ready()
}

/// Why the client's body was cut off, shared with the pipeline so it can answer 413 or
/// 408 instead of a generic 502 for the aborted upstream request.
#[derive(Debug, Default, Clone)]
pub struct BodyVerdict(Arc<AtomicU8>);

impl BodyVerdict {
    const TOO_LARGE: u8 = 1;
    const STALLED: u8 = 2;

    pub fn too_large(&self) -> bool {
        self.0.load(Ordering::Acquire) == Self::TOO_LARGE
    }

    pub fn stalled(&self) -> bool {
        self.0.load(Ordering::Acquire) == Self::STALLED
    }

    fn set(&self, v: u8) {
        self.0.store(v, Ordering::Release);
    }
}

/// The client's request body.
#[derive(Debug)]
pub enum InboundBody {
    /// Streamed from the connection by hyper (HTTP/2, and HTTP/1.1 requests airgate's
    /// own server side hands over).
    Streamed(Incoming),
    /// Read whole with its head (`None`: no body).
    Whole(Option<Bytes>),
}

impl InboundBody {
    /// Whether the client may still be sending it, unread: an early answer then has to
    /// drain it before closing (see `pipeline::linger`).
    pub fn into_unread(self) -> Option<Incoming> {
        match self {
            InboundBody::Streamed(incoming) if !incoming.is_end_stream() => Some(incoming),
            _ => None,
        }
    }
}

impl Body for InboundBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            InboundBody::Streamed(incoming) => Pin::new(incoming).poll_frame(cx),
            InboundBody::Whole(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            InboundBody::Streamed(incoming) => incoming.is_end_stream(),
            InboundBody::Whole(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            InboundBody::Streamed(incoming) => incoming.size_hint(),
            InboundBody::Whole(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

pin_project! {
    pub struct RequestBody {
        #[pin]
        inner: InboundBody,
        limit: Option<u64>,
        seen: u64,
        stall: Duration,
        timer: Option<Pin<Box<Sleep>>>,
        verdict: BodyVerdict,
        sent: BodySent,
    }
}

impl RequestBody {
    pub fn new(
        inner: InboundBody,
        limit: Option<u64>,
        stall: Duration,
        verdict: BodyVerdict,
        sent: BodySent,
    ) -> Self {
        if inner.is_end_stream() {
            sent.mark();
        }
        RequestBody {
            inner,
            limit,
            seen: 0,
            stall,
            timer: None,
            verdict,
            sent,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.timer = None;
                if let Some(data) = frame.data_ref() {
                    *this.seen += data.len() as u64;
                    if let Some(limit) = *this.limit {
                        if *this.seen > limit {
                            this.verdict.set(BodyVerdict::TOO_LARGE);
                            this.sent.mark();
                            return Poll::Ready(Some(Err(BodyError::TooLarge { limit }.into())));
                        }
                    }
                }
                // hyper stops polling once a sized body is complete, so the end is
                // noticed here rather than only at `None`.
                if this.inner.is_end_stream() {
                    this.sent.mark();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.sent.mark();
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.sent.mark();
                Poll::Ready(None)
            }
            Poll::Pending => {
                if idle_expired(this.timer, *this.stall, cx) {
                    this.verdict.set(BodyVerdict::STALLED);
                    this.sent.mark();
                    return Poll::Ready(Some(Err(BodyError::SendTimeout(*this.stall).into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project! {
    pub struct UpstreamBody {
        #[pin]
        inner: ResponseBody,
        read_timeout: Duration,
        timer: Option<Pin<Box<Sleep>>>,
        route: Arc<str>,
        // The upstream connection, given back to the pool when the body ends.
        idle: Option<IdleConn>,
    }
}

impl UpstreamBody {
    pub fn new(
        inner: ResponseBody,
        read_timeout: Duration,
        route: Arc<str>,
        idle: Option<IdleConn>,
    ) -> Self {
        let mut body = UpstreamBody {
            inner,
            read_timeout,
            timer: None,
            route,
            idle,
        };
        // hyper never polls a body that is already complete (no content, HEAD, 304).
        if body.inner.is_end_stream() {
            release(&mut body.idle);
        }
        body
    }
}

/// Give the upstream connection back to its pool, once.
fn release(idle: &mut Option<IdleConn>) {
    if let Some(idle) = idle.take() {
        idle.release();
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.timer = None;
                // A sized body is not polled past its last frame: release here.
                if this.inner.is_end_stream() {
                    release(this.idle);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                crate::telemetry::metrics()
                    .upstream_errors
                    .with_label_values(&[&**this.route, "protocol"])
                    .inc();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                release(this.idle);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if idle_expired(this.timer, *this.read_timeout, cx) {
                    crate::telemetry::metrics()
                        .upstream_errors
                        .with_label_values(&[&**this.route, "timeout"])
                        .inc();
                    return Poll::Ready(Some(Err(
                        BodyError::ReadTimeout(*this.read_timeout).into()
                    )));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Everything the access log and metrics need once the response is over.
#[derive(Debug)]
pub struct RequestLog {
    pub started: Instant,
    pub method: Method,
    pub version: Version,
    pub status: u16,
    pub bytes_sent: u64,
    pub upstream_time: Option<Duration>,
    pub upstream_addr: Option<SocketAddr>,
    pub route: Option<Arc<Route>>,
    pub client_ip: IpAddr,
    pub request_id: HeaderValue,
    /// Counted in `airgate_active_streams` while the body streams.
    pub streaming: bool,
    /// Present only while an access log is written.
    pub logged: Option<LoggedRequest>,
}

/// What only the access log needs.
#[derive(Debug)]
pub struct LoggedRequest {
    pub host: String,
    pub uri: Uri,
    pub user_agent: Option<HeaderValue>,
}

impl RequestLog {
    fn start_stream(&mut self) {
        if self.streaming {
            crate::telemetry::metrics().active_streams.inc();
        }
    }
}

fn protocol_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        let m = crate::telemetry::metrics();
        if self.streaming {
            m.active_streams.dec();
        }
        let elapsed = self.started.elapsed();
        match &self.route {
            Some(route) => route.metrics.finished(&route.name, self.status, elapsed),
            // No route matched: counted under the route `-`.
            None => m.unmatched.finished("-", self.status, elapsed),
        }
        let Some(logged) = &self.logged else {
            return;
        };
        access::log(&AccessRecord {
            method: self.method.as_str(),
            host: &logged.host,
            // Path and query, as nginx's `$request` logs them.
            path: logged
                .uri
                .path_and_query()
                .map_or_else(|| logged.uri.path(), |p| p.as_str()),
            protocol: protocol_name(self.version),
            status: self.status,
            bytes_sent: self.bytes_sent,
            request_time: elapsed,
            upstream_time: self.upstream_time,
            upstream_addr: self.upstream_addr,
            route: self.route.as_ref().map(|r| &*r.name),
            client_ip: self.client_ip,
            request_id: self.request_id.to_str().unwrap_or("-"),
            user_agent: logged.user_agent.as_ref().and_then(|v| v.to_str().ok()),
        });
    }
}

pin_project! {
    pub struct ClientBody {
        #[pin]
        inner: ProxyBody,
        // Inline rather than boxed: one allocation fewer per request.
        log: Option<RequestLog>,
    }
}

impl ClientBody {
    pub fn new(inner: ProxyBody, mut log: RequestLog) -> Self {
        log.start_stream();
        ClientBody {
            inner,
            log: Some(log),
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let (Some(data), Some(log)) = (f.data_ref(), this.log.as_mut()) {
                    log.bytes_sent += data.len() as u64;
                }
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "response body aborted");
                // Log now: the client sees an aborted stream, not a clean end.
                this.log.take();
            }
            None => {
                this.log.take();
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
