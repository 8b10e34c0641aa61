//! Streaming behaviour: unbuffered SSE, read timeouts between chunks, WebSockets, and
//! in-flight work surviving reconfiguration and graceful shutdown.
mod support;

use std::time::Duration;

use airgate::config::{Config, RoutePolicy, Timeouts};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use support::*;
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(5);

fn with_read_timeout(ms: u64) -> RoutePolicy {
    RoutePolicy {
        timeouts: Timeouts {
            connect: Duration::from_secs(2),
            read: Duration::from_millis(ms),
            send: Duration::from_secs(5),
        },
        ..RoutePolicy::default()
    }
}

/// Read from `response` until `expected` bytes have arrived (an event may be split
/// across frames, never merged with one the backend has not written yet).
async fn read_exactly(response: &mut reqwest::Response, expected: &[u8]) {
    let mut got = Vec::new();
    while got.len() < expected.len() {
        let chunk = next_chunk(response, WAIT)
            .await
            .expect("stream ended early");
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, expected);
}

/// The stream ends without error and without more data (h2 may end with an empty
/// DATA frame carrying END_STREAM, which clients surface as an empty chunk).
async fn assert_clean_end(response: &mut reqwest::Response) {
    for _ in 0..3 {
        match next_chunk(response, WAIT).await {
            None => return,
            Some(tail) => assert!(tail.is_empty(), "unexpected data after the end: {tail:?}"),
        }
    }
    panic!("stream did not end");
}

async fn sse_events_arrive_one_by_one(client: reqwest::Client) {
    let (backend, mut streams) = stream_backend().await;
    let proxy = TestProxy::start(config(
        "",
        vec![prefix_route(
            "sse",
            "/",
            upstream(vec![backend.addr]),
            RoutePolicy::default(),
        )],
    ))
    .await;
    let mut response = client.get(proxy.url("/v1/chat")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = tokio::time::timeout(WAIT, streams.recv())
        .await
        .unwrap()
        .unwrap();
    // The backend writes the next event only after the test saw the previous one, so
    // any buffering on the way (proxy or pool) would stall this loop.
    let big = format!("data: {}\n\n", "x".repeat(200 * 1024));
    for i in 0..5 {
        let event = if i == 2 {
            big.clone()
        } else {
            format!("data: {{\"token\":{i}}}\n\n")
        };
        events.send(Bytes::from(event.clone())).await.unwrap();
        read_exactly(&mut response, event.as_bytes()).await;
    }
    drop(events);
    assert_clean_end(&mut response).await;
}

#[tokio::test]
async fn sse_is_not_buffered_over_http1() {
    sse_events_arrive_one_by_one(client()).await;
}

#[tokio::test]
async fn sse_is_not_buffered_over_h2c() {
    sse_events_arrive_one_by_one(h2c_client()).await;
}

#[tokio::test]
async fn steady_stream_outlives_the_read_timeout() {
    let (backend, mut streams) = stream_backend().await;
    let proxy = TestProxy::start(config(
        "",
        vec![prefix_route(
            "sse",
            "/",
            upstream(vec![backend.addr]),
            with_read_timeout(400),
        )],
    ))
    .await;
    let mut response = client().get(proxy.url("/")).send().await.unwrap();
    let events = tokio::time::timeout(WAIT, streams.recv())
        .await
        .unwrap()
        .unwrap();
    let started = std::time::Instant::now();
    // 10 events 150ms apart: 1.5s in total, well over the 400ms read timeout, but never
    // silent for longer than it.
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let event = format!("data: {i}\n\n");
        events.send(Bytes::from(event.clone())).await.unwrap();
        read_exactly(&mut response, event.as_bytes()).await;
    }
    assert!(started.elapsed() > Duration::from_millis(1000));
    drop(events);
    assert_clean_end(&mut response).await;
}

#[tokio::test]
async fn stream_silent_past_the_read_timeout_is_cut() {
    let (backend, mut streams) = stream_backend().await;
    let proxy = TestProxy::start(config(
        "",
        vec![prefix_route(
            "sse",
            "/",
            upstream(vec![backend.addr]),
            with_read_timeout(300),
        )],
    ))
    .await;
    let mut response = client().get(proxy.url("/")).send().await.unwrap();
    let events = tokio::time::timeout(WAIT, streams.recv())
        .await
        .unwrap()
        .unwrap();
    events
        .send(Bytes::from_static(b"data: 1\n\n"))
        .await
        .unwrap();
    read_exactly(&mut response, b"data: 1\n\n").await;
    // Now the backend goes silent (the sender stays alive): the proxy must abort.
    let ended = tokio::time::timeout(WAIT, response.chunk())
        .await
        .expect("cut in time");
    assert!(
        ended.is_err(),
        "an aborted stream is an error, not a clean end: {ended:?}"
    );
    drop(events);
}

#[tokio::test]
async fn sse_stream_survives_a_publish() {
    let (backend, mut streams) = stream_backend().await;
    let proxy = TestProxy::start(config(
        "",
        vec![prefix_route(
            "sse",
            "/",
            upstream(vec![backend.addr]),
            RoutePolicy::default(),
        )],
    ))
    .await;
    let mut response = client().get(proxy.url("/")).send().await.unwrap();
    let events = tokio::time::timeout(WAIT, streams.recv())
        .await
        .unwrap()
        .unwrap();
    events
        .send(Bytes::from_static(b"data: before\n\n"))
        .await
        .unwrap();
    read_exactly(&mut response, b"data: before\n\n").await;

    // A new snapshot without the route: new requests see it, the stream does not.
    proxy.runtime.publish(Config::default());
    let status = client().get(proxy.url("/")).send().await.unwrap().status();
    assert_eq!(status, 404);

    events
        .send(Bytes::from_static(b"data: after\n\n"))
        .await
        .unwrap();
    read_exactly(&mut response, b"data: after\n\n").await;
    drop(events);
    assert_clean_end(&mut response).await;
}

#[tokio::test]
async fn websocket_survives_a_publish() {
    let backend = ws_echo_backend().await;
    let proxy = TestProxy::start(config(
        "",
        vec![prefix_route(
            "ws",
            "/ws",
            upstream(vec![backend.addr]),
            RoutePolicy::default(),
        )],
    ))
    .await;
    let url = format!("ws://{}/ws/echo", proxy.http);
    let (mut ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(&url))
        .await
        .unwrap()
        .expect("websocket handshake through the proxy");
    assert_eq!(response.status(), 101);
    ws.send(Message::text("one")).await.unwrap();
    let echoed = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "one");

    proxy.runtime.publish(Config::default());
    let refused = tokio_tungstenite::connect_async(&url).await;
    assert!(refused.is_err(), "new handshakes use the new snapshot");

    let big = "z".repeat(100_000);
    for text in ["two", big.as_str()] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn shutdown_drains_an_in_flight_request() {
    let (backend, mut gates) = gated_backend().await;
    let mut proxy = TestProxy::start(config(
        "",
        vec![prefix_route(
            "slow",
            "/",
            upstream(vec![backend.addr]),
            RoutePolicy::default(),
        )],
    ))
    .await;
    let url = proxy.url("/slow");
    let request = tokio::spawn(async move {
        let response = client().get(url).send().await?;
        let status = response.status();
        response.text().await.map(|body| (status, body))
    });
    let gate = tokio::time::timeout(WAIT, gates.recv())
        .await
        .unwrap()
        .unwrap();
    let serving = proxy.shutdown();

    // Stop accepting: bounded poll until new connections are refused.
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(proxy.http).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "listener still accepting"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !serving.is_finished(),
        "serve waits for the in-flight request"
    );

    gate.send(()).unwrap();
    let (status, body) = tokio::time::timeout(WAIT, request)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "released"));
    tokio::time::timeout(WAIT, serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn shutdown_closes_streams_after_the_grace_period() {
    let (backend, mut streams) = stream_backend().await;
    let mut proxy = TestProxy::start_with(
        config(
            "",
            vec![prefix_route(
                "sse",
                "/",
                upstream(vec![backend.addr]),
                RoutePolicy::default(),
            )],
        ),
        Vec::new(),
        Duration::from_millis(300),
    )
    .await;
    let mut response = client().get(proxy.url("/")).send().await.unwrap();
    let events = tokio::time::timeout(WAIT, streams.recv())
        .await
        .unwrap()
        .unwrap();
    events
        .send(Bytes::from_static(b"data: 1\n\n"))
        .await
        .unwrap();
    read_exactly(&mut response, b"data: 1\n\n").await;
    let started = std::time::Instant::now();
    tokio::time::timeout(WAIT, proxy.shutdown())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "grace was honoured"
    );
    let ended = tokio::time::timeout(WAIT, response.chunk())
        .await
        .expect("closed in time");
    assert!(
        !matches!(ended, Ok(Some(_))),
        "no more data after the grace: {ended:?}"
    );
    drop(events);
}

#[tokio::test]
async fn idle_websocket_is_closed_after_the_read_timeout() {
    let backend = ws_echo_backend().await;
    let proxy = TestProxy::start(config(
        "",
        vec![prefix_route(
            "ws",
            "/",
            upstream(vec![backend.addr]),
            with_read_timeout(300),
        )],
    ))
    .await;
    let url = format!("ws://{}/", proxy.http);
    let (mut ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(&url))
        .await
        .unwrap()
        .unwrap();
    // Activity keeps it open past the idle limit...
    for i in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
        let echoed = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), format!("m{i}"));
    }
    // ...silence closes it.
    let started = std::time::Instant::now();
    let end = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("closed in time");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections_at_once() {
    use http_body_util::BodyExt;
    let backend = echo_backend().await;
    let grace = Duration::from_secs(30);
    let mut proxy = TestProxy::start_with(
        config(
            "",
            vec![prefix_route(
                "r",
                "/",
                upstream(vec![backend.addr]),
                RoutePolicy::default(),
            )],
        ),
        Vec::new(),
        grace,
    )
    .await;
    // One kept-alive HTTP/1.1 connection, its connection driver watched for the close.
    let tcp = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get("/once")
        .header("host", "a")
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();

    // The connection now sits idle, kept alive. Shutdown must close it and finish
    // without waiting out the grace period.
    let started = std::time::Instant::now();
    tokio::time::timeout(WAIT, proxy.shutdown())
        .await
        .expect("serve finished before the grace period")
        .unwrap()
        .unwrap();
    tokio::time::timeout(WAIT, connection)
        .await
        .expect("the idle connection was closed")
        .unwrap()
        .expect("closed cleanly, without another response");
    assert!(started.elapsed() < grace / 2);
}
