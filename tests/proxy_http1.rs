//! airgate's own HTTP/1.1 server side, byte for byte on real TCP connections: keep-alive,
//! pipelining, response framing, and the hand-over to hyper for the requests it leaves
//! to hyper (chunked and still-arriving bodies, `Expect`, HTTP/1.0, malformed heads).
mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// Reads responses one after another from one connection, framing them as a client must
/// (RFC 9112 6.3): no body after HEAD, 1xx, 204, 304; chunked; Content-Length; or to EOF.
struct Wire {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Wire {
    async fn connect(proxy: &TestProxy) -> Wire {
        Wire {
            tcp: TcpStream::connect(proxy.http).await.expect("connect"),
            buf: Vec::new(),
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.expect("write");
    }

    /// Read more; `false` at EOF.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), self.tcp.read(&mut chunk))
            .await
            .expect("the proxy answers within 10s")
            .unwrap_or(0);
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(self.fill().await, "connection closed inside a body");
        }
        self.buf.drain(..n).collect()
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.take(end + 2).await;
                return String::from_utf8_lossy(&line[..end]).into_owned();
            }
            assert!(self.fill().await, "connection closed inside a chunked body");
        }
    }

    async fn response(&mut self, to_head: bool) -> Answer {
        let (status, headers, len) = loop {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut parsed = httparse::Response::new(&mut fields);
            if let httparse::Status::Complete(len) = parsed.parse(&self.buf).expect("valid head") {
                let headers = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect::<Vec<_>>();
                break (parsed.code.unwrap(), headers, len);
            }
            assert!(
                self.fill().await,
                "connection closed before a response head"
            );
        };
        self.buf.drain(..len);
        let mut answer = Answer {
            status,
            headers,
            body: Vec::new(),
        };
        if to_head || status < 200 || status == 204 || status == 304 {
            return answer;
        }
        if answer.header("transfer-encoding") == Some("chunked") {
            loop {
                let size = usize::from_str_radix(self.line().await.trim(), 16).expect("chunk size");
                if size == 0 {
                    assert_eq!(self.line().await, "", "no trailers");
                    break;
                }
                answer.body.extend(self.take(size).await);
                assert_eq!(self.take(2).await, b"\r\n");
            }
        } else if let Some(len) = answer.header("content-length") {
            let len = len.parse().expect("numeric content-length");
            answer.body = self.take(len).await;
        } else {
            while self.fill().await {}
            answer.body = std::mem::take(&mut self.buf);
        }
        answer
    }

    /// Whether the proxy closes the connection with nothing more to say.
    async fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }
}

async fn echo_proxy() -> (TestBackend, TestProxy) {
    let backend = echo_backend().await;
    let route = prefix_route("r", "/", upstream(vec![backend.addr]), Default::default());
    let proxy = TestProxy::start(config("", vec![route])).await;
    (backend, proxy)
}

#[tokio::test]
async fn pipelined_requests_with_bodies_and_head_share_one_connection() {
    let (backend, proxy) = echo_proxy().await;
    let mut wire = Wire::connect(&proxy).await;
    // Four requests in one write: each answer must come in order, framed exactly, or
    // the next one would be read from the wrong place.
    wire.send(
        b"GET /one?x=1 HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
          HEAD /three HTTP/1.1\r\nHost: a\r\n\r\n\
          DELETE /four HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n",
    )
    .await;
    let one = wire.response(false).await;
    assert_eq!(one.status, 200);
    assert_eq!(one.json()["path"], "/one?x=1");
    assert!(one.header("date").is_some(), "{one:?}");
    assert_eq!(one.header("x-backend"), Some("echo"));
    assert_eq!(
        one.header("x-backend-hop"),
        None,
        "hop-by-hop named in Connection"
    );
    assert_eq!(one.header("connection"), None, "keep-alive is the default");

    let two = wire.response(false).await;
    assert_eq!(two.json()["method"], "POST");
    assert_eq!(two.json()["body_len"], 5);

    let three = wire.response(true).await;
    assert_eq!(three.status, 200);
    assert!(three.body.is_empty());

    let four = wire.response(false).await;
    assert_eq!(four.json()["method"], "DELETE");
    assert_eq!(four.json()["path"], "/four");
    assert_eq!(backend.hits(), 4);
    assert_eq!(
        backend
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one upstream connection, reused"
    );
}

#[tokio::test]
async fn connection_close_is_answered_and_honoured() {
    let (_backend, proxy) = echo_proxy().await;
    let mut wire = Wire::connect(&proxy).await;
    wire.send(b"GET /bye HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await;
    let answer = wire.response(false).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(wire.closed().await, "the proxy closes after the answer");
}

#[tokio::test]
async fn a_body_of_unknown_length_is_sent_chunked() {
    let (backend, mut streams) = stream_backend().await;
    let route = prefix_route("r", "/", upstream(vec![backend.addr]), Default::default());
    let proxy = TestProxy::start(config("", vec![route])).await;
    let mut wire = Wire::connect(&proxy).await;
    wire.send(b"GET /events HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let chunks = streams
        .recv()
        .await
        .expect("the request reached the backend");
    chunks.send("data: one\n\n".into()).await.unwrap();
    chunks.send("data: two\n\n".into()).await.unwrap();
    drop(chunks);
    let answer = wire.response(false).await;
    assert_eq!(answer.header("transfer-encoding"), Some("chunked"));
    assert_eq!(answer.header("content-type"), Some("text/event-stream"));
    assert_eq!(answer.body, b"data: one\n\ndata: two\n\n");
    // The connection is still good for the next request.
    wire.send(b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let chunks = streams.recv().await.expect("second request");
    drop(chunks);
    let again = wire.response(false).await;
    assert_eq!(again.status, 200);
    assert!(again.body.is_empty());
}

#[tokio::test]
async fn requests_left_to_hyper_are_served_on_the_same_connection() {
    let (_backend, proxy) = echo_proxy().await;
    let mut wire = Wire::connect(&proxy).await;
    // A chunked body is hyper's: the connection is handed over after the first request,
    // with the bytes already read.
    wire.send(
        b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /chunked HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n\
          GET /third HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert_eq!(wire.response(false).await.json()["path"], "/first");
    let chunked = wire.response(false).await.json();
    assert_eq!(chunked["path"], "/chunked");
    assert_eq!(chunked["body_len"], 11);
    assert_eq!(wire.response(false).await.json()["path"], "/third");

    // `Expect: 100-continue`: the client waits for the interim answer before its body.
    let mut wire = Wire::connect(&proxy).await;
    wire.send(
        b"PUT /expect HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    )
    .await;
    assert_eq!(wire.response(false).await.status, 100);
    wire.send(b"data").await;
    let answer = wire.response(false).await.json();
    assert_eq!(answer["body_len"], 4);
    assert!(
        answer["headers"].get("expect").is_none(),
        "Expect is not forwarded"
    );

    // A body that has not all arrived with its head is streamed by hyper.
    let mut wire = Wire::connect(&proxy).await;
    wire.send(b"POST /late HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123")
        .await;
    wire.send(b"456789").await;
    assert_eq!(wire.response(false).await.json()["body_len"], 10);

    // HTTP/1.0 is answered in HTTP/1.0, and the connection closed.
    let mut wire = Wire::connect(&proxy).await;
    wire.send(b"GET /old HTTP/1.0\r\nHost: a\r\n\r\n").await;
    let old = wire.response(false).await;
    assert_eq!(old.status, 200);
    assert_eq!(old.json()["path"], "/old");
    assert!(wire.closed().await);
}

#[tokio::test]
async fn malformed_and_oversized_heads_are_refused() {
    let (backend, proxy) = echo_proxy().await;
    let refused = |request: Vec<u8>| {
        let proxy = &proxy;
        async move {
            let mut wire = Wire::connect(proxy).await;
            wire.send(&request).await;
            let status = wire.response(false).await.status;
            assert!(wire.closed().await, "closed after refusing");
            status
        }
    };
    assert_eq!(refused(b"GARBAGE\r\n\r\n".to_vec()).await, 400);
    assert_eq!(
        refused(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\nx".to_vec()).await,
        400
    );
    let mut many = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    for i in 0..120 {
        many.extend_from_slice(format!("x-field-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(refused(many).await, 431);
    let mut long = b"GET / HTTP/1.1\r\nHost: a\r\nx-long: ".to_vec();
    long.extend(std::iter::repeat_n(b'a', 70 * 1024));
    long.extend_from_slice(b"\r\n\r\n");
    assert_eq!(refused(long).await, 431);
    assert_eq!(backend.hits(), 0, "nothing malformed reached the backend");
}
