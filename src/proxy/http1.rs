//! airgate's own HTTP/1.1 server side, for ordinary requests.
//!
//! Why: hyper's server connection (its dispatcher, message state machine, body channel
//! and per-request boxed timer) cost about 13,000 instructions per proxied request,
//! 40 % of the whole (callgrind, `bash bench/profile.sh plain`). This loop reads a
//! request, runs the pipeline on it in the connection's own task, and writes the
//! response, with one read buffer and one write buffer per connection.
//!
//! What it serves: HTTP/1.1 requests whose head parses, that are not CONNECT and carry
//! no `Transfer-Encoding`, `Expect` or `Upgrade`, and whose body (by `Content-Length`)
//! has arrived whole with the head — GETs and the usual small JSON POST. Everything else
//! (HTTP/1.0, chunked or still-arriving bodies, `Expect: 100-continue`, WebSocket
//! upgrades, h2c prior knowledge, malformed or oversized heads) is handed to hyper with
//! the bytes read so far, and hyper serves the connection from then on, answering
//! exactly as it did before this loop existed.
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, header};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::body::{ClientBody, InboundBody};
use super::pipeline::{self, ConnInfo};
use super::server::{Lifecycle, Shared};
use crate::http1::{
    HeadSpans, MAX_HEADERS, content_length, has_token, hex_size, poll_read_more, put_field,
};

/// Room read at a time for request heads (and bodies that come with them).
const READ_BUF: usize = 8 * 1024;
/// hyper's limit; a longer request target is handed over, and hyper answers 414.
const MAX_URI_LEN: usize = u16::MAX as usize - 1;
/// Response body frames up to this size are copied behind the head (or their chunk
/// header) and go out in one write; larger ones are written from where they are.
const COALESCE: usize = 16 * 1024;

/// How the loop ended.
pub enum Ended<I> {
    /// The connection is done: closed by either side, timed out, or drained.
    Closed,
    /// A request this loop does not serve: hyper takes the connection and the bytes
    /// already read from it.
    HandOver { io: I, read: Bytes },
}

/// What the loop needs besides the connection itself.
pub struct Limits {
    /// Time a client gets to send a complete request head, idle keep-alive included.
    pub header_read: Duration,
    /// Largest request head read; a larger one is handed over (hyper answers 431).
    pub max_head: usize,
}

/// Serve requests on `io` until it closes or a request needs hyper. `draining` is set
/// when graceful shutdown begins: the request in flight is answered with
/// `Connection: close`, and an idle connection closes.
pub async fn serve<I>(
    mut io: I,
    shared: &Arc<Shared>,
    conn: &Arc<ConnInfo>,
    life: &Lifecycle,
    draining: &AtomicBool,
    limits: Limits,
) -> Ended<I>
where
    I: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut read = BytesMut::with_capacity(READ_BUF);
    let mut out = Vec::with_capacity(1024);
    let mut timer = HeadTimer {
        limit: limits.header_read,
        sleep: None,
        waiting_since: None,
    };
    loop {
        let next = loop {
            match next_request(&mut read, limits.max_head) {
                Next::Partial => {}
                Next::Request(next) => break next,
                Next::HandOver => {
                    return Ended::HandOver {
                        io,
                        read: read.freeze(),
                    };
                }
            }
            if !timer.fill(&mut io, &mut read, draining).await {
                return Ended::Closed;
            }
        };
        timer.waiting_since = None;
        let response =
            pipeline::handle(shared.clone(), conn.clone(), life.clone(), next.request).await;
        let keep_alive = next.keep_alive && !draining.load(Ordering::Acquire);
        match respond(&mut io, &mut out, response, next.head_method, keep_alive).await {
            Ok(true) => {}
            Ok(false) => {
                let _ = io.shutdown().await;
                return Ended::Closed;
            }
            Err(e) => {
                tracing::debug!(peer = %conn.peer, error = %e, "writing the response failed");
                return Ended::Closed;
            }
        }
    }
}

/// The header-read timeout, one timer per connection. The timer is not moved for every
/// request: it keeps an older, earlier deadline, and when it fires early it is set to
/// the current one (one reset per `limit` at most, instead of one per request).
struct HeadTimer {
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// When the wait for the current head began (its first read that had to wait).
    waiting_since: Option<Instant>,
}

impl HeadTimer {
    /// Read more of the next request. `false`: the connection is over (closed, failed,
    /// timed out, or idle while draining).
    async fn fill<I>(&mut self, io: &mut I, read: &mut BytesMut, draining: &AtomicBool) -> bool
    where
        I: AsyncRead + Unpin,
    {
        std::future::poll_fn(|cx| {
            if read.is_empty() && draining.load(Ordering::Acquire) {
                return Poll::Ready(false);
            }
            match poll_read_more(&mut *io, cx, read, READ_BUF) {
                Poll::Ready(Ok(n)) => Poll::Ready(n > 0),
                Poll::Ready(Err(_)) => Poll::Ready(false),
                Poll::Pending if self.expired(cx) => Poll::Ready(false),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = *self.waiting_since.get_or_insert_with(Instant::now) + self.limit;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        while sleep.as_mut().poll(cx).is_ready() {
            if Instant::now() >= deadline {
                return true;
            }
            sleep.as_mut().reset(deadline);
        }
        false
    }
}

struct ParsedRequest {
    request: Request<InboundBody>,
    keep_alive: bool,
    head_method: bool,
}

// Returned by value once per request; a boxed request would cost an allocation.
#[allow(clippy::large_enum_variant)]
enum Next {
    Partial,
    Request(ParsedRequest),
    HandOver,
}

/// Parse the next request in `read`, taking its head and body out of it.
fn next_request(read: &mut BytesMut, max_head: usize) -> Next {
    if read.is_empty() {
        return Next::Partial;
    }
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        read,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) if len <= max_head => len,
        Ok(httparse::Status::Partial) if read.len() <= max_head => return Next::Partial,
        // Too large, too many fields, or not valid: hyper gives the answer (431, 400).
        _ => return Next::HandOver,
    };
    let (Some(method), Some(path), Some(1)) = (parsed.method, parsed.path, parsed.version) else {
        return Next::HandOver;
    };
    if path.len() > MAX_URI_LEN {
        return Next::HandOver;
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Next::HandOver;
    };
    if method == Method::CONNECT {
        return Next::HandOver;
    }
    let mut body_len: Option<u64> = None;
    let mut keep_alive = true;
    for field in parsed.headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            match content_length(field.value) {
                Some(n) if body_len.is_none_or(|seen| seen == n) => body_len = Some(n),
                _ => return Next::HandOver,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"expect")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return Next::HandOver;
        } else if name.eq_ignore_ascii_case(b"connection") && has_token(field.value, "close") {
            keep_alive = false;
        }
    }
    // A body still on its way is streamed by hyper, which applies the route's limits
    // while it arrives; only a body already here is taken whole.
    let body_len = match usize::try_from(body_len.unwrap_or(0)) {
        Ok(n) if n <= read.len() - len => n,
        _ => return Next::HandOver,
    };
    let path_start = path.as_ptr() as usize - read.as_ptr() as usize;
    let path_range = path_start..path_start + path.len();
    let spans = HeadSpans::record(read, parsed.headers);
    let (head, headers) = match spans.split(read, len) {
        Ok(split) => split,
        Err(head) => return hand_back(read, &head),
    };
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path_range)) else {
        return hand_back(read, &head);
    };
    let body = (body_len > 0).then(|| read.split_to(body_len).freeze());
    let head_method = method == Method::HEAD;
    let mut request = Request::new(InboundBody::Whole(body));
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    Next::Request(ParsedRequest {
        request,
        keep_alive,
        head_method,
    })
}

/// Put a head taken out of `read` back in front of it, for hyper.
fn hand_back(read: &mut BytesMut, head: &[u8]) -> Next {
    let mut whole = BytesMut::with_capacity(head.len() + read.len());
    whole.extend_from_slice(head);
    whole.extend_from_slice(read);
    *read = whole;
    Next::HandOver
}

/// How the response body is delimited.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// Write the response. `Ok(true)`: the connection can take another request.
async fn respond<I>(
    io: &mut I,
    out: &mut Vec<u8>,
    response: Response<ClientBody>,
    head_method: bool,
    mut keep_alive: bool,
) -> std::io::Result<bool>
where
    I: AsyncWrite + Unpin,
{
    let (mut parts, body) = response.into_parts();
    if parts.status.is_informational() {
        // Nothing in the pipeline answers 1xx here (upgrades are hyper's); as hyper does.
        parts.status = StatusCode::INTERNAL_SERVER_ERROR;
        parts.headers.clear();
    }
    let status = parts.status;
    let no_content = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let declared = match parts.headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(value) => match content_length(value.as_bytes()) {
            Some(n) => Some(n),
            None => {
                parts.headers.remove(header::CONTENT_LENGTH);
                None
            }
        },
    };
    let mut body = std::pin::pin!(body);
    // Framing by the Content-Length the response carries, else by the body's known
    // size, else chunked; written as hyper writes it (a HEAD answer states the length
    // its body would have had).
    let (mut framing, length_field) = match declared {
        Some(n) => (Framing::Length(n), None),
        None if no_content => (Framing::None, None),
        None => match body.size_hint().exact() {
            Some(n) => (Framing::Length(n), Some(n)),
            None if head_method => (Framing::None, None),
            None => (Framing::Chunked, None),
        },
    };
    if head_method || no_content {
        framing = Framing::None;
    }

    out.clear();
    if status == StatusCode::OK {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let (mut said_close, mut has_date, mut trailer_names) = (false, false, None);
    for (name, value) in &parts.headers {
        if name == header::TRANSFER_ENCODING {
            continue;
        } else if name == header::CONNECTION {
            said_close |= has_token(value.as_bytes(), "close");
        } else if name == header::DATE {
            has_date = true;
        } else if name == header::TRAILER {
            trailer_names = Some(value);
        }
        put_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    keep_alive &= !said_close;
    if !keep_alive && !said_close {
        put_field(out, b"connection", b"close");
    }
    if !has_date {
        put_date(out);
    }
    if let Some(n) = length_field {
        put_field(
            out,
            b"content-length",
            itoa::Buffer::new().format(n).as_bytes(),
        );
    } else if framing == Framing::Chunked {
        put_field(out, b"transfer-encoding", b"chunked");
    }
    out.extend_from_slice(b"\r\n");

    if framing == Framing::None {
        io.write_all(out).await?;
        io.flush().await?;
        return Ok(keep_alive);
    }

    let mut left = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    let mut ended = false;
    while !body.is_end_stream() {
        // Whatever is ready goes out together; before waiting for more, what is
        // buffered is sent (a stream's head and each event leave at once).
        let frame = match body.frame().now_or_never() {
            Some(frame) => frame,
            None if out.is_empty() => body.frame().await,
            None => {
                io.write_all(out).await?;
                io.flush().await?;
                out.clear();
                continue;
            }
        };
        let frame = match frame {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(_)) => {
                // The upstream's body failed (logged by the body): the client sees the
                // response cut short, not a clean end.
                io.write_all(out).await?;
                return Ok(false);
            }
        };
        match frame.into_data() {
            Ok(data) => {
                if data.is_empty() {
                    continue;
                }
                let mut data = data;
                if framing == Framing::Chunked {
                    let mut line = [0u8; 18];
                    out.extend_from_slice(hex_size(data.len(), &mut line));
                    out.extend_from_slice(b"\r\n");
                } else {
                    // More than the stated length would corrupt the next response.
                    if data.len() as u64 > left {
                        data.truncate(left as usize);
                        keep_alive = false;
                    }
                    left -= data.len() as u64;
                }
                if data.len() > COALESCE {
                    io.write_all(out).await?;
                    out.clear();
                    io.write_all(&data).await?;
                } else {
                    out.extend_from_slice(&data);
                }
                if framing == Framing::Chunked {
                    out.extend_from_slice(b"\r\n");
                }
            }
            Err(frame) => {
                if let (Framing::Chunked, Ok(trailers)) = (framing, frame.into_trailers()) {
                    put_trailers(out, &trailers, trailer_names);
                    ended = true;
                }
                break;
            }
        }
    }
    match framing {
        Framing::Chunked if !ended => out.extend_from_slice(b"0\r\n\r\n"),
        // Cut short: the client has to see the connection end.
        Framing::Length(_) if left > 0 => keep_alive = false,
        _ => {}
    }
    io.write_all(out).await?;
    io.flush().await?;
    Ok(keep_alive)
}

/// The last chunk and the trailer fields the response announced in `Trailer` (hyper
/// sends only those too).
fn put_trailers(out: &mut Vec<u8>, trailers: &HeaderMap, announced: Option<&http::HeaderValue>) {
    out.extend_from_slice(b"0\r\n");
    if let Some(announced) = announced {
        for (name, value) in trailers {
            if has_token(announced.as_bytes(), name.as_str()) {
                put_field(out, name.as_str().as_bytes(), value.as_bytes());
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// `date: <IMF-fixdate>\r\n`, formatted once a second per thread.
fn put_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let second = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(cached, value)| {
        if *cached != second || value.is_empty() {
            *cached = second;
            *value = httpdate::fmt_http_date(now);
        }
        put_field(out, b"date", value.as_bytes());
    });
}

/// The connection as hyper reads it after a hand-over: the bytes airgate already read,
/// then the rest.
pub struct Prefixed<I> {
    read: Bytes,
    io: I,
}

impl<I> Prefixed<I> {
    pub fn new(read: Bytes, io: I) -> Self {
        Prefixed { read, io }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.read.is_empty() {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let n = this.read.len().min(buf.remaining());
        buf.put_slice(&this.read[..n]);
        this.read.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn the_head_timeout_counts_from_each_heads_own_wait() {
        let limit = Duration::from_millis(300);
        let (mut client, mut server) = tokio::io::duplex(1024);
        let mut timer = HeadTimer {
            limit,
            sleep: None,
            waiting_since: None,
        };
        let mut read = BytesMut::new();
        let draining = AtomicBool::new(false);

        // A client that takes 200 ms (a slow client, the behaviour under test) for its
        // first bytes is within the limit.
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
            client
        });
        assert!(timer.fill(&mut server, &mut read, &draining).await);
        let client = writer.await.unwrap();

        // The next head's wait starts now: the timer armed for the first wait fires
        // 100 ms into it and must be moved on, not end the connection.
        timer.waiting_since = None;
        read.clear();
        let started = Instant::now();
        assert!(!timer.fill(&mut server, &mut read, &draining).await);
        let waited = started.elapsed();
        assert!(
            waited >= limit,
            "timed out after {waited:?}, limit {limit:?}"
        );
        assert!(waited < limit * 10, "timed out only after {waited:?}");

        // Idle while draining: over at once.
        draining.store(true, Ordering::Release);
        let started = Instant::now();
        assert!(!timer.fill(&mut server, &mut read, &draining).await);
        assert!(started.elapsed() < limit);
        drop(client);
    }
}
