//! airgate's own HTTP/1.1 client, for plain-HTTP upstreams (`protocol: http`, what
//! almost every model service behind an ingress speaks). TLS, HTTP/2 and WebSocket
//! upgrades stay on hyper's client.
//!
//! Why not hyper's client here: hyper drives each upstream connection as a task of its
//! own and hands every request, response and body frame to it through channels. On the
//! proxy's hot path that machinery cost about 15,000 instructions per request, as much
//! as the whole pipeline (bench/RESULTS.md, "Profile of the hot path"). Here the
//! request's own future writes the request and reads the response head on a connection
//! it took from the pool, and the response body gives the connection back when it ends.
//! Parsing is httparse's, the parser hyper itself uses.
//!
//! Framing follows RFC 9112 section 6. Request: no body and no framing header for a
//! bodyless GET (`Content-Length: 0` for an empty POST, PUT or PATCH), the client's
//! `Content-Length` when it sent one, else chunked. Response: none after HEAD, 1xx, 204
//! and 304; chunked when `Transfer-Encoding` ends in chunked; `Content-Length`;
//! otherwise until the upstream closes. A connection goes back to the pool only when
//! the response was framed, read to its end with nothing after it, and neither side
//! asked to close.
use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Weak;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version, header};
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;

use super::{BoxError, ProxyBody, UpstreamError, Upstreams};
use crate::http1::{
    HeadSpans, MAX_HEADERS, content_length, has_token, hex_size, poll_read_more, put_field,
};

/// Largest response head (status line and fields) accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longest chunk-size line accepted (the size and any chunk extensions).
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Room made in the read buffer before reading a head, and before reading a body.
const HEAD_READ: usize = 8 * 1024;
const BODY_READ: usize = 64 * 1024;
/// Request body frames up to this size are copied behind the head (or their chunk
/// header) and go out in one write; larger ones are written from where they are.
const COALESCE: usize = 16 * 1024;

/// One connection to an upstream.
pub struct Conn {
    stream: TcpStream,
    /// Bytes read from the upstream and not consumed yet.
    read: BytesMut,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("peer", &self.stream.peer_addr().ok())
            .finish_non_exhaustive()
    }
}

impl Conn {
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Conn, UpstreamError> {
        let stream = tokio::time::timeout(timeout, super::open_tcp(addr))
            .await
            .map_err(|_| UpstreamError::ConnectTimeout { addr, timeout })??;
        Ok(Conn {
            stream,
            read: BytesMut::new(),
        })
    }

    /// Whether an idle connection can take another request: the upstream has sent
    /// nothing since the last response (readable would mean it closed, or sent bytes
    /// nobody asked for). Asks the reactor's readiness, so no system call.
    pub fn is_quiet(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.read.is_empty() && self.stream.poll_read_ready(&mut cx).is_pending()
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>, room: usize) -> Poll<io::Result<usize>> {
        poll_read_more(&mut self.stream, cx, &mut self.read, room)
    }
}

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Empty,
    Length(u64),
    Chunked,
}

/// The encoded request head, kept so the request can be sent again on a new connection.
pub struct Head {
    bytes: Vec<u8>,
    framing: Framing,
    /// HEAD: the response has no body whatever its headers say.
    head_method: bool,
    /// A safe method without a body: may be sent again after a reused connection fails
    /// before any response arrived (nginx's `proxy_next_upstream error`).
    replayable: bool,
}

impl Head {
    pub fn encode(parts: &Parts, body: &ProxyBody) -> Head {
        let headers = &parts.headers;
        let mut framing = if body.is_end_stream() {
            Framing::Empty
        } else {
            match headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| content_length(v.as_bytes()))
            {
                Some(n) => Framing::Length(n),
                None => match body.size_hint().exact() {
                    Some(n) => Framing::Length(n),
                    None => Framing::Chunked,
                },
            }
        };
        let mut bytes = Vec::with_capacity(128 + 48 * headers.len());
        bytes.extend_from_slice(parts.method.as_str().as_bytes());
        bytes.push(b' ');
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        bytes.extend_from_slice(if target.is_empty() { "/" } else { target }.as_bytes());
        bytes.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in headers {
            // Framing is decided here, not copied from the client.
            if name == header::TRANSFER_ENCODING || name == header::CONTENT_LENGTH {
                continue;
            }
            put_field(&mut bytes, name.as_str().as_bytes(), value.as_bytes());
        }
        match framing {
            Framing::Empty => {
                // An empty body a server could otherwise expect (RFC 9110 8.6), or the
                // zero the caller set (the auth hook's sub-request).
                let said = headers.contains_key(header::CONTENT_LENGTH);
                if said || matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) {
                    put_field(&mut bytes, b"content-length", b"0");
                }
            }
            Framing::Length(0) => {
                put_field(&mut bytes, b"content-length", b"0");
                framing = Framing::Empty;
            }
            Framing::Length(n) => {
                let mut digits = itoa::Buffer::new();
                put_field(&mut bytes, b"content-length", digits.format(n).as_bytes());
            }
            Framing::Chunked => put_field(&mut bytes, b"transfer-encoding", b"chunked"),
        }
        bytes.extend_from_slice(b"\r\n");
        Head {
            bytes,
            framing,
            head_method: parts.method == Method::HEAD,
            replayable: framing == Framing::Empty
                && matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS),
        }
    }
}

/// Where a connection goes back once its response has been read.
#[derive(Debug)]
pub struct Home {
    pub pools: Weak<Upstreams>,
    pub addr: SocketAddr,
}

/// Why an exchange failed, and whether it may be tried again on a new connection.
pub enum Failure {
    /// A reused connection failed before the upstream can have acted on the request.
    Retry(UpstreamError),
    Fatal(UpstreamError),
}

impl Failure {
    pub fn into_error(self) -> UpstreamError {
        match self {
            Failure::Retry(e) | Failure::Fatal(e) => e,
        }
    }
}

fn io_error(addr: SocketAddr, source: io::Error) -> UpstreamError {
    UpstreamError::Io { addr, source }
}

/// Send the request on `conn` and read the response head, waiting at most
/// `read_timeout` for it once the body has been sent. `body` is taken only when the
/// request has one; `reused` says the connection came from the pool.
pub async fn exchange(
    mut conn: Conn,
    head: &Head,
    body: &mut Option<ProxyBody>,
    reused: bool,
    read_timeout: Duration,
    home: Home,
) -> Result<Response<RawBody>, Failure> {
    let addr = home.addr;
    // The upstream may answer before the body is all sent (an early 413, say); then the
    // rest is not sent, and the connection is not reused.
    let mut body_complete = true;
    if head.framing == Framing::Empty {
        if let Err(e) = write_out(&conn.stream, &head.bytes, false).await {
            // Nothing reached an upstream that closed the connection: safe to resend.
            return Err(io_failure(reused, addr, e));
        }
    } else {
        // A request with a body is sent once: its body is consumed as it goes.
        let Some(request_body) = body.take() else {
            return Err(protocol(addr, "the request body was already sent"));
        };
        body_complete = send_body(&conn.stream, head, request_body, addr)
            .await
            .map_err(Failure::Fatal)?;
    }

    let sleep = tokio::time::sleep(read_timeout);
    tokio::pin!(sleep);
    let mut received_any = false;
    let parsed = std::future::poll_fn(|cx| {
        loop {
            match parse_head(&mut conn.read, addr)? {
                Parsed::Final(parsed) => return Poll::Ready(Ok(parsed)),
                Parsed::Informational => continue,
                Parsed::Partial => {}
            }
            match conn.poll_fill(cx, HEAD_READ) {
                Poll::Ready(Ok(n)) if n > 0 => received_any = true,
                // Closed (a read of 0) or failed before a whole head arrived.
                Poll::Ready(read) => {
                    let e = read.err().unwrap_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the upstream closed the connection before a complete response head",
                        )
                    });
                    let retry = reused && !received_any && head.replayable;
                    return Poll::Ready(Err(io_failure(retry, addr, e)));
                }
                Poll::Pending => {
                    return match sleep.as_mut().poll(cx) {
                        Poll::Ready(()) => {
                            Poll::Ready(Err(Failure::Fatal(UpstreamError::ResponseTimeout {
                                addr,
                                timeout: read_timeout,
                            })))
                        }
                        Poll::Pending => Poll::Pending,
                    };
                }
            }
        }
    })
    .await?;

    let ParsedHead {
        status,
        version,
        headers,
    } = parsed;
    let (state, framed) = response_framing(head.head_method, status, &headers)
        .map_err(|reason| protocol(addr, reason))?;
    let keep_alive = body_complete && framed && wants_keep_alive(version, &headers);
    let mut response = Response::new(RawBody::new(conn, state, keep_alive, home));
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(response)
}

fn io_failure(retry: bool, addr: SocketAddr, e: io::Error) -> Failure {
    if retry {
        Failure::Retry(io_error(addr, e))
    } else {
        Failure::Fatal(io_error(addr, e))
    }
}

/// Send the head and the body. `Ok(false)`: the upstream answered before the body was
/// all sent, and the rest was not sent.
async fn send_body(
    stream: &TcpStream,
    head: &Head,
    mut body: ProxyBody,
    addr: SocketAddr,
) -> Result<bool, UpstreamError> {
    enum Step {
        Frame(Option<Result<Frame<Bytes>, BoxError>>),
        Flush,
        Answered,
    }
    let framing = head.framing;
    let mut out = Vec::with_capacity(head.bytes.len() + 1024);
    out.extend_from_slice(&head.bytes);
    let mut sent: u64 = 0;
    // Write `bytes`; `Ok(true)` when the upstream answered instead.
    let write = async |bytes: &[u8]| {
        write_out(stream, bytes, true)
            .await
            .map_err(|e| io_error(addr, e))
    };
    loop {
        let step = std::future::poll_fn(|cx| {
            if stream.poll_read_ready(cx).is_ready() {
                return Poll::Ready(Step::Answered);
            }
            match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(frame) => Poll::Ready(Step::Frame(frame)),
                // Nothing more yet: what is waiting goes out now.
                Poll::Pending if !out.is_empty() => Poll::Ready(Step::Flush),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match step {
            Step::Answered => return Ok(false),
            Step::Flush => {
                if write(&out).await? {
                    return Ok(false);
                }
                out.clear();
            }
            Step::Frame(Some(Err(source))) => {
                return Err(UpstreamError::RequestBody { addr, source });
            }
            Step::Frame(Some(Ok(frame))) => {
                // Request trailers are not forwarded over HTTP/1.1.
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                sent += data.len() as u64;
                if matches!(framing, Framing::Length(n) if sent > n) {
                    return Err(UpstreamError::Protocol {
                        addr,
                        reason: "the request body is longer than its Content-Length",
                    });
                }
                if framing == Framing::Chunked {
                    let mut line = [0u8; 18];
                    out.extend_from_slice(hex_size(data.len(), &mut line));
                    out.extend_from_slice(b"\r\n");
                }
                if data.len() <= COALESCE {
                    out.extend_from_slice(&data);
                } else {
                    // Large frames go out from where they are, after what is waiting.
                    if write(&out).await? || write(&data).await? {
                        return Ok(false);
                    }
                    out.clear();
                }
                if framing == Framing::Chunked {
                    out.extend_from_slice(b"\r\n");
                }
                if out.len() >= COALESCE {
                    if write(&out).await? {
                        return Ok(false);
                    }
                    out.clear();
                }
            }
            Step::Frame(None) => {
                if matches!(framing, Framing::Length(n) if sent != n) {
                    return Err(UpstreamError::Protocol {
                        addr,
                        reason: "the request body ended before its Content-Length",
                    });
                }
                if framing == Framing::Chunked {
                    out.extend_from_slice(b"0\r\n\r\n");
                }
                return Ok(!write(&out).await?);
            }
        }
    }
}

/// Write all of `buf`. With `watch_answer`, give up as soon as the upstream has
/// something to say (`Ok(true)`): an upstream that answers early may stop reading.
async fn write_out(stream: &TcpStream, mut buf: &[u8], watch_answer: bool) -> io::Result<bool> {
    while !buf.is_empty() {
        match stream.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let answered = std::future::poll_fn(|cx| {
                    if watch_answer && stream.poll_read_ready(cx).is_ready() {
                        return Poll::Ready(Ok(true));
                    }
                    stream.poll_write_ready(cx).map_ok(|()| false)
                })
                .await?;
                if answered {
                    return Ok(true);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

struct ParsedHead {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
}

enum Parsed {
    /// More bytes are needed.
    Partial,
    /// A 1xx response (100 Continue, 103 Early Hints) was consumed; the final one follows.
    Informational,
    Final(ParsedHead),
}

fn protocol(addr: SocketAddr, reason: &'static str) -> Failure {
    Failure::Fatal(UpstreamError::Protocol { addr, reason })
}

fn parse_head(buf: &mut BytesMut, addr: SocketAddr) -> Result<Parsed, Failure> {
    if buf.is_empty() {
        return Ok(Parsed::Partial);
    }
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(protocol(addr, "the upstream's response head is too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(protocol(addr, "the upstream sent too many header fields"));
        }
        Err(_) => return Err(protocol(addr, "the upstream sent an invalid response head")),
    };
    let code = response.code.unwrap_or(0);
    let Ok(status) = StatusCode::from_u16(code) else {
        return Err(protocol(addr, "the upstream sent an invalid status code"));
    };
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(protocol(addr, "the upstream switched protocols unasked"));
        }
        buf.advance(len);
        return Ok(Parsed::Informational);
    }
    let version = if response.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let spans = HeadSpans::record(buf, response.headers);
    let Ok((_, headers)) = spans.split(buf, len) else {
        return Err(protocol(addr, "the upstream sent an invalid header field"));
    };
    Ok(Parsed::Final(ParsedHead {
        status,
        version,
        headers,
    }))
}

/// How the response body is delimited (RFC 9112 6.3), and whether that leaves the
/// connection fit for another request. `Err`: the framing is invalid.
fn response_framing(
    head_method: bool,
    status: StatusCode,
    headers: &HeaderMap,
) -> Result<(State, bool), &'static str> {
    if head_method
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Ok((State::Done, true));
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter().peekable();
    if let Some(te) = last_transfer_coding(headers) {
        // A Content-Length beside Transfer-Encoding is ignored, and such a message may
        // be a smuggling attempt: the connection is not reused.
        let chunked = te.eq_ignore_ascii_case(b"chunked");
        let state = if chunked {
            State::ChunkSize
        } else {
            State::Eof
        };
        return Ok((state, chunked && lengths.peek().is_none()));
    }
    if lengths.peek().is_none() {
        return Ok((State::Eof, false));
    }
    // Every field must give the same valid length.
    let mut length = None;
    for value in lengths {
        match content_length(value.as_bytes()) {
            Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
            _ => return Err("the upstream sent an invalid Content-Length"),
        }
    }
    Ok((State::Length(length.unwrap_or(0)), true))
}

/// Whether the message's `Connection` lets the connection stay open after it.
fn wants_keep_alive(version: Version, headers: &HeaderMap) -> bool {
    let has = |token: &str| {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v.as_bytes(), token))
    };
    if version == Version::HTTP_10 {
        has("keep-alive")
    } else {
        !has("close")
    }
}

/// The last transfer coding named, if the response has a `Transfer-Encoding`.
fn last_transfer_coding(headers: &HeaderMap) -> Option<&[u8]> {
    let mut last = None;
    for value in headers.get_all(header::TRANSFER_ENCODING) {
        if let Some(coding) = value.as_bytes().rsplit(|&b| b == b',').next() {
            last = Some(coding.trim_ascii());
        }
    }
    last
}

/// Where the response body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes to go.
    Length(u64),
    /// A chunk-size line is next.
    ChunkSize,
    /// This many bytes of the current chunk to go.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// The trailer section after the last chunk.
    Trailers,
    /// Until the upstream closes the connection.
    Eof,
    Done,
}

/// The upstream's response body, read straight off the connection. The connection goes
/// back to the pool when the body has been read to its end; dropped earlier, it is
/// closed.
pub struct RawBody {
    conn: Option<Conn>,
    state: State,
    keep_alive: bool,
    home: Home,
}

impl std::fmt::Debug for RawBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawBody")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

fn invalid(message: &'static str) -> BoxError {
    io::Error::new(io::ErrorKind::InvalidData, message).into()
}

fn truncated() -> BoxError {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the upstream closed the connection before the end of the response body",
    )
    .into()
}

impl RawBody {
    fn new(conn: Conn, state: State, keep_alive: bool, home: Home) -> Self {
        let mut body = RawBody {
            conn: Some(conn),
            state,
            keep_alive,
            home,
        };
        if matches!(state, State::Done | State::Length(0)) {
            body.finish();
        }
        body
    }

    /// The body has been read to its end: give the connection back, if it can be used again.
    fn finish(&mut self) {
        self.state = State::Done;
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if self.keep_alive && conn.read.is_empty() {
            // An idle connection keeps a head-sized buffer at most, not what a large
            // body was read into.
            if conn.read.capacity() > 2 * HEAD_READ {
                conn.read = BytesMut::new();
            }
            if let Some(pools) = self.home.pools.upgrade() {
                pools.pool_h1(self.home.addr, conn);
            }
        }
    }

    /// Up to `left` bytes of data from what has been read, reading more if nothing is.
    fn poll_data(
        conn: &mut Conn,
        cx: &mut Context<'_>,
        left: u64,
    ) -> Poll<Result<Bytes, BoxError>> {
        if conn.read.is_empty() {
            match ready!(conn.poll_fill(cx, BODY_READ)) {
                Ok(0) => return Poll::Ready(Err(truncated())),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Err(e.into())),
            }
        }
        let take = (conn.read.len() as u64).min(left) as usize;
        Poll::Ready(Ok(conn.read.split_to(take).freeze()))
    }
}

impl Body for RawBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.state {
                State::Done => {
                    this.finish();
                    return Poll::Ready(None);
                }
                State::Length(left) => {
                    let data = ready!(Self::poll_data(conn, cx, left))?;
                    let left = left - data.len() as u64;
                    if left == 0 {
                        // A sized body is not polled past its last frame: finish now.
                        this.finish();
                    } else {
                        this.state = State::Length(left);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::ChunkData(left) => {
                    let data = ready!(Self::poll_data(conn, cx, left))?;
                    let left = left - data.len() as u64;
                    this.state = if left == 0 {
                        State::ChunkEnd
                    } else {
                        State::ChunkData(left)
                    };
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::ChunkSize => match httparse::parse_chunk_size(&conn.read) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        conn.read.advance(used);
                        this.state = if size == 0 {
                            State::Trailers
                        } else {
                            State::ChunkData(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if conn.read.len() > MAX_CHUNK_LINE => {
                        return Poll::Ready(Some(Err(invalid(
                            "the upstream sent a chunk-size line that is too long",
                        ))));
                    }
                    Ok(httparse::Status::Partial) => {
                        ready!(fill_or_truncated(conn, cx))?;
                    }
                    Err(_) => {
                        return Poll::Ready(Some(Err(invalid(
                            "the upstream sent an invalid chunk size",
                        ))));
                    }
                },
                State::ChunkEnd => {
                    if conn.read.len() < 2 {
                        ready!(fill_or_truncated(conn, cx))?;
                        continue;
                    }
                    if &conn.read[..2] != b"\r\n" {
                        return Poll::Ready(Some(Err(invalid(
                            "the upstream sent chunk data longer than its size",
                        ))));
                    }
                    conn.read.advance(2);
                    this.state = State::ChunkSize;
                }
                State::Trailers => {
                    if conn.read.starts_with(b"\r\n") {
                        conn.read.advance(2);
                        this.finish();
                        return Poll::Ready(None);
                    }
                    let mut fields = [httparse::EMPTY_HEADER; 32];
                    match httparse::parse_headers(&conn.read, &mut fields) {
                        Ok(httparse::Status::Complete((len, fields))) => {
                            let mut trailers = HeaderMap::with_capacity(fields.len());
                            for f in fields {
                                if let (Ok(name), Ok(value)) = (
                                    HeaderName::from_bytes(f.name.as_bytes()),
                                    HeaderValue::from_bytes(f.value),
                                ) {
                                    trailers.append(name, value);
                                }
                            }
                            conn.read.advance(len);
                            this.finish();
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        Ok(httparse::Status::Partial) if conn.read.len() <= MAX_HEAD_BYTES => {
                            ready!(fill_or_truncated(conn, cx))?;
                        }
                        _ => {
                            return Poll::Ready(Some(Err(invalid(
                                "the upstream sent an invalid trailer section",
                            ))));
                        }
                    }
                }
                State::Eof => {
                    if !conn.read.is_empty() {
                        let data = conn.read.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    match ready!(conn.poll_fill(cx, BODY_READ)) {
                        Ok(0) => {
                            this.finish();
                            return Poll::Ready(None);
                        }
                        Ok(_) => {}
                        Err(e) => return Poll::Ready(Some(Err(e.into()))),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || matches!(self.state, State::Done | State::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// Read more of a chunked body; the upstream closing here cuts the body short.
fn fill_or_truncated(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
    match ready!(conn.poll_fill(cx, HEAD_READ)) {
        Ok(0) => Poll::Ready(Err(truncated())),
        Ok(_) => Poll::Ready(Ok(())),
        Err(e) => Poll::Ready(Err(e.into())),
    }
}

#[cfg(test)]
mod tests {
    //! Against real TCP peers that answer with scripted bytes, so each framing case is
    //! exactly what goes over the wire.
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use http::Request;
    use http_body_util::{BodyExt, Full, StreamBody};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::config::{Endpoints, Upstream, UpstreamProtocol};
    use crate::upstream::{BodySent, Exchange, ResponseWait};

    /// What the scripted upstream does after writing a reply.
    #[derive(Clone, Copy)]
    enum Then {
        KeepAlive,
        Close,
        /// Keep the connection open without reading anything more.
        Hold,
    }

    struct Reply {
        bytes: &'static [u8],
        then: Then,
        /// Read the request body (by its framing) before replying.
        read_body: bool,
    }

    fn reply(bytes: &'static [u8]) -> Reply {
        Reply {
            bytes,
            then: Then::KeepAlive,
            read_body: true,
        }
    }

    struct Scripted {
        addr: SocketAddr,
        accepted: Arc<AtomicUsize>,
        requests: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    /// An upstream that answers the n-th request (over all connections) with
    /// `replies[n]`, recording every request's bytes.
    async fn scripted(replies: Vec<Reply>) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let replies = Arc::new(Mutex::new(replies.into_iter()));
        let (acc, reqs) = (accepted.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                acc.fetch_add(1, Ordering::SeqCst);
                let (replies, reqs) = (replies.clone(), reqs.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(head_end) = read_until(&mut tcp, &mut buf, b"\r\n\r\n").await
                        else {
                            return;
                        };
                        let Some(reply) = replies.lock().unwrap().next() else {
                            return;
                        };
                        let mut end = head_end;
                        if reply.read_body {
                            let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                            if head.contains("transfer-encoding: chunked") {
                                let Some(e) = read_until(&mut tcp, &mut buf, b"0\r\n\r\n").await
                                else {
                                    return;
                                };
                                end = e;
                            } else if let Some(n) = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: "))
                                .and_then(|n| n.trim().parse::<usize>().ok())
                            {
                                while buf.len() < head_end + n {
                                    let mut more = [0u8; 4096];
                                    match tcp.read(&mut more).await {
                                        Ok(0) | Err(_) => return,
                                        Ok(k) => buf.extend_from_slice(&more[..k]),
                                    }
                                }
                                end = head_end + n;
                            }
                        }
                        reqs.lock().unwrap().push(buf.drain(..end).collect());
                        if tcp.write_all(reply.bytes).await.is_err() {
                            return;
                        }
                        match reply.then {
                            Then::KeepAlive => {}
                            Then::Close => return,
                            Then::Hold => {
                                let mut sink = Vec::new();
                                let _ = tcp.read_to_end(&mut sink).await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        Scripted {
            addr,
            accepted,
            requests,
        }
    }

    /// Read until `buf` holds `marker`; the index just past it.
    async fn read_until(
        tcp: &mut tokio::net::TcpStream,
        buf: &mut Vec<u8>,
        marker: &[u8],
    ) -> Option<usize> {
        loop {
            if let Some(i) = buf.windows(marker.len()).position(|w| w == marker) {
                return Some(i + marker.len());
            }
            let mut more = [0u8; 4096];
            match tcp.read(&mut more).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&more[..n]),
            }
        }
    }

    fn upstream(addr: SocketAddr) -> Upstream {
        Upstream::new(
            "test/scripted",
            UpstreamProtocol::Http,
            Endpoints::Static(vec![addr]),
        )
    }

    fn get(path: &str) -> Request<ProxyBody> {
        let mut request = Request::new(
            Full::new(Bytes::new())
                .map_err(|n| match n {})
                .boxed_unsync(),
        );
        *request.uri_mut() = path.parse().unwrap();
        request
            .headers_mut()
            .insert(header::HOST, HeaderValue::from_static("models.local"));
        request
    }

    async fn send(
        pools: &Arc<Upstreams>,
        upstream: &Upstream,
        request: Request<ProxyBody>,
    ) -> Result<Exchange, UpstreamError> {
        let wait = ResponseWait {
            read_timeout: Duration::from_secs(5),
            body_sent: BodySent::already(),
        };
        pools
            .send(upstream, request, Duration::from_secs(5), &wait, false)
            .await
    }

    /// The body's data and trailers.
    async fn read_body(exchange: Exchange) -> Result<(Vec<u8>, Option<HeaderMap>), BoxError> {
        let collected = exchange.response.into_body().collect().await?;
        let trailers = collected.trailers().cloned();
        Ok((collected.to_bytes().to_vec(), trailers))
    }

    #[tokio::test]
    async fn sized_responses_reuse_one_connection() {
        const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-model: m1\r\n\r\nhello";
        let server = scripted(vec![reply(OK), reply(OK), reply(OK)]).await;
        let pools = Upstreams::without_tls();
        let upstream = upstream(server.addr);
        for i in 0..3 {
            let exchange = send(&pools, &upstream, get(&format!("/v1/models?i={i}")))
                .await
                .unwrap();
            assert_eq!(exchange.response.status(), StatusCode::OK);
            assert_eq!(exchange.response.headers()["x-model"], "m1");
            assert_eq!(exchange.response.headers()["content-length"], "5");
            assert_eq!(read_body(exchange).await.unwrap().0, b"hello");
        }
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
        let requests = server.requests.lock().unwrap();
        assert_eq!(
            requests[2],
            b"GET /v1/models?i=2 HTTP/1.1\r\nhost: models.local\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn chunked_responses_with_extensions_and_trailers() {
        const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
            5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nx-checksum: abc\r\n\r\n";
        const AGAIN: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        let server = scripted(vec![reply(CHUNKED), reply(AGAIN)]).await;
        let pools = Upstreams::without_tls();
        let upstream = upstream(server.addr);
        let exchange = send(&pools, &upstream, get("/a")).await.unwrap();
        let (data, trailers) = read_body(exchange).await.unwrap();
        assert_eq!(data, b"hello world");
        assert_eq!(trailers.unwrap()["x-checksum"], "abc");
        let exchange = send(&pools, &upstream, get("/b")).await.unwrap();
        assert_eq!(read_body(exchange).await.unwrap().0, b"ok");
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn unframed_and_closing_responses_are_read_to_the_end_and_not_pooled() {
        let server = scripted(vec![
            Reply {
                bytes: b"HTTP/1.1 200 OK\r\n\r\nuntil the end",
                then: Then::Close,
                read_body: true,
            },
            reply(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 3\r\n\r\none"),
            reply(b"HTTP/1.0 200 OK\r\ncontent-length: 3\r\n\r\ntwo"),
            reply(b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 5\r\n\r\nthree"),
            reply(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nfour"),
        ])
        .await;
        let pools = Upstreams::without_tls();
        let upstream = upstream(server.addr);
        let mut bodies = Vec::new();
        for _ in 0..5 {
            let exchange = send(&pools, &upstream, get("/")).await.unwrap();
            bodies.push(String::from_utf8(read_body(exchange).await.unwrap().0).unwrap());
        }
        assert_eq!(bodies, ["until the end", "one", "two", "three", "four"]);
        // A new connection after each of the first three; the HTTP/1.0 keep-alive one is
        // reused for the last request.
        assert_eq!(server.accepted.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn bodyless_responses_and_informational_ones() {
        let server = scripted(vec![
            reply(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"),
            reply(b"HTTP/1.1 204 No Content\r\n\r\n"),
            reply(b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n"),
            reply(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\n\
                  HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
            ),
        ])
        .await;
        let pools = Upstreams::without_tls();
        let upstream = upstream(server.addr);
        let mut head = get("/");
        *head.method_mut() = Method::HEAD;
        let exchange = send(&pools, &upstream, head).await.unwrap();
        assert!(exchange.response.body().is_end_stream());
        assert_eq!(exchange.response.headers()["content-length"], "100");
        assert!(read_body(exchange).await.unwrap().0.is_empty());
        for status in [204, 304] {
            let exchange = send(&pools, &upstream, get("/")).await.unwrap();
            assert_eq!(exchange.response.status(), status);
            assert!(exchange.response.body().is_end_stream());
        }
        let exchange = send(&pools, &upstream, get("/")).await.unwrap();
        assert_eq!(exchange.response.status(), StatusCode::CREATED);
        assert!(!exchange.response.headers().contains_key("link"));
        assert_eq!(read_body(exchange).await.unwrap().0, b"ok");
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn malformed_responses_are_errors_not_panics() {
        let heads: [&'static [u8]; 4] = [
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
            b"NOT HTTP AT ALL\r\n\r\n",
        ];
        for bytes in heads {
            let server = scripted(vec![reply(bytes)]).await;
            let pools = Upstreams::without_tls();
            let result = send(&pools, &upstream(server.addr), get("/")).await;
            assert!(
                matches!(result, Err(UpstreamError::Protocol { .. })),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        let bodies: [&'static [u8]; 3] = [
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort",
        ];
        for bytes in bodies {
            let server = scripted(vec![Reply {
                bytes,
                then: Then::Close,
                read_body: true,
            }])
            .await;
            let pools = Upstreams::without_tls();
            let exchange = send(&pools, &upstream(server.addr), get("/"))
                .await
                .unwrap();
            assert!(
                read_body(exchange).await.is_err(),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[tokio::test]
    async fn request_bodies_are_framed_by_length_or_chunked() {
        const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        let server = scripted(vec![reply(OK), reply(OK), reply(OK)]).await;
        let pools = Upstreams::without_tls();
        let upstream = upstream(server.addr);

        let mut post = get("/v1/chat");
        *post.method_mut() = Method::POST;
        *post.body_mut() = Full::new(Bytes::from_static(b"{\"a\":1}"))
            .map_err(|n| match n {})
            .boxed_unsync();
        send(&pools, &upstream, post).await.unwrap();

        // A body of unknown length, sent as it comes.
        let (tx, streamed) = streamed_post("/v1/chat", 4);
        let sending = tokio::spawn(async move {
            for part in ["first ", "second"] {
                tx.send(Ok(Frame::data(Bytes::from_static(part.as_bytes()))))
                    .await
                    .unwrap();
            }
        });
        send(&pools, &upstream, streamed).await.unwrap();
        sending.await.unwrap();

        // An empty POST still says its length.
        let mut empty = get("/v1/reset");
        *empty.method_mut() = Method::POST;
        send(&pools, &upstream, empty).await.unwrap();

        let requests = server.requests.lock().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&requests[0]),
            "POST /v1/chat HTTP/1.1\r\nhost: models.local\r\ncontent-length: 7\r\n\r\n{\"a\":1}"
        );
        let chunked = String::from_utf8_lossy(&requests[1]);
        assert!(
            chunked.starts_with(
                "POST /v1/chat HTTP/1.1\r\nhost: models.local\r\ntransfer-encoding: chunked\r\n\r\n"
            ),
            "{chunked}"
        );
        assert!(chunked.ends_with("6\r\nsecond\r\n0\r\n\r\n"), "{chunked}");
        assert!(chunked.contains("6\r\nfirst \r\n"), "{chunked}");
        assert_eq!(
            String::from_utf8_lossy(&requests[2]),
            "POST /v1/reset HTTP/1.1\r\nhost: models.local\r\ncontent-length: 0\r\n\r\n"
        );
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
    }

    type FrameSender = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

    /// A POST whose body of unknown length is what is sent on the channel, as it comes.
    fn streamed_post(path: &str, capacity: usize) -> (FrameSender, Request<ProxyBody>) {
        let (tx, mut rx) = tokio::sync::mpsc::channel(capacity);
        let frames = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut post = get(path);
        *post.method_mut() = Method::POST;
        *post.body_mut() = StreamBody::new(frames).boxed_unsync();
        (tx, post)
    }

    #[tokio::test]
    async fn an_early_answer_stops_the_upload_and_the_connection_is_not_reused() {
        let server = scripted(vec![
            Reply {
                bytes: b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\n\r\nbig!",
                then: Then::Hold,
                read_body: false,
            },
            reply(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"),
        ])
        .await;
        let pools = Upstreams::without_tls();
        let upstream = upstream(server.addr);
        // The client keeps sending and never ends its body.
        let (tx, upload) = streamed_post("/v1/files", 1);
        let feeding = tokio::spawn(async move {
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            while tx.send(Ok(Frame::data(chunk.clone()))).await.is_ok() {}
        });
        let exchange = send(&pools, &upstream, upload).await.unwrap();
        assert_eq!(exchange.response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(read_body(exchange).await.unwrap().0, b"big!");
        // The body was dropped with the exchange: the feeder stops.
        feeding.await.unwrap();
        let exchange = send(&pools, &upstream, get("/")).await.unwrap();
        assert_eq!(exchange.response.status(), StatusCode::OK);
        assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_silent_upstream_is_a_response_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let holding = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut sink = Vec::new();
            let _ = tcp.read_to_end(&mut sink).await;
        });
        let pools = Upstreams::without_tls();
        let wait = ResponseWait {
            read_timeout: Duration::from_millis(50),
            body_sent: BodySent::already(),
        };
        let result = pools
            .send(
                &upstream(addr),
                get("/"),
                Duration::from_secs(5),
                &wait,
                false,
            )
            .await;
        assert!(matches!(result, Err(UpstreamError::ResponseTimeout { .. })));
        drop(result);
        holding.await.unwrap();
    }
}
