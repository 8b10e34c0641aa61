//! Plain-HTTP behaviour of the data plane against real local backends.
mod support;

use std::sync::Arc;
use std::time::Duration;

use airgate::config::{Backend, PathRewrite, Route, RoutePolicy, Timeouts, UpstreamProtocol};
use http::StatusCode;
use serde_json::Value;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn policy() -> RoutePolicy {
    RoutePolicy::default()
}

fn short_timeouts(read_ms: u64) -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(2),
        read: Duration::from_millis(read_ms),
        send: Duration::from_secs(5),
    }
}

async fn json(response: reqwest::Response) -> Value {
    response.json().await.expect("JSON body")
}

async fn assert_json_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "proxy-made errors are JSON"
    );
    let body = json(response).await;
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    assert!(body["error"]["type"].is_string());
    body
}

/// Send raw bytes and read until the peer closes or the status line is complete.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let read = tokio::time::timeout_at(deadline, tcp.read(&mut chunk))
            .await
            .expect("response within deadline");
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        let text = String::from_utf8_lossy(&buf);
        if let Some(head_end) = text.find("\r\n\r\n") {
            // Stop once the declared body has arrived.
            let len = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= head_end + 4 + len {
                break;
            }
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn forwards_with_proxy_headers_and_strips_hop_by_hop() {
    let backend = echo_backend().await;
    let proxy = TestProxy::start(config(
        "",
        vec![prefix_route(
            "r",
            "/",
            upstream(vec![backend.addr]),
            policy(),
        )],
    ))
    .await;
    let response = client()
        .post(proxy.url("/v1/chat?stream=true"))
        .header("host", "API.Example.com")
        .header("connection", "keep-alive, x-per-hop")
        .header("x-per-hop", "must-not-pass")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-request-id", "req-123")
        .body("hello")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-backend"], "echo");
    assert!(
        response.headers().get("x-backend-hop").is_none(),
        "headers named by the upstream's Connection header are stripped"
    );
    let echo = json(response).await;
    let h = &echo["headers"];
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/v1/chat?stream=true");
    assert_eq!(echo["body_len"], 5);
    assert_eq!(h["host"][0], "API.Example.com", "Host is preserved");
    assert_eq!(h["x-real-ip"][0], "127.0.0.1");
    assert_eq!(
        h["x-forwarded-for"][0], "127.0.0.1",
        "an untrusted client's X-Forwarded-For is replaced"
    );
    assert_eq!(h["x-forwarded-proto"][0], "http");
    assert_eq!(h["x-forwarded-host"][0], "api.example.com");
    assert_eq!(h["x-forwarded-port"][0], proxy.http.port().to_string());
    assert_eq!(h["x-request-id"][0], "req-123");
    for hop in [
        "x-per-hop",
        "keep-alive",
        "proxy-authorization",
        "connection",
    ] {
        assert!(h.get(hop).is_none(), "{hop} reached the backend: {h}");
    }
}

#[tokio::test]
async fn trusted_proxies_extend_forwarding_headers() {
    let backend = echo_backend().await;
    let proxy = TestProxy::start_with(
        config(
            "",
            vec![prefix_route(
                "r",
                "/",
                upstream(vec![backend.addr]),
                policy(),
            )],
        ),
        vec!["127.0.0.0/8".parse().unwrap()],
        Duration::from_secs(5),
    )
    .await;
    let echo = json(
        client()
            .get(proxy.url("/"))
            .header("x-forwarded-for", "203.0.113.9")
            .header("x-forwarded-proto", "https")
            .header("x-request-id", "bad id with spaces")
            .send()
            .await
            .expect("request"),
    )
    .await;
    let h = &echo["headers"];
    assert_eq!(h["x-forwarded-for"][0], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-real-ip"][0], "203.0.113.9");
    assert_eq!(h["x-forwarded-proto"][0], "https");
    let id = h["x-request-id"][0].as_str().unwrap();
    assert!(
        !id.contains(' ') && id.len() >= 16,
        "unsafe ids are replaced: {id}"
    );
}

#[tokio::test]
async fn strip_prefix_and_base_path_rewrite_the_upstream_path() {
    let backend = echo_backend().await;
    let mut up = upstream(vec![backend.addr]);
    Arc::get_mut(&mut up).unwrap().base_path = "/api".into();
    let tts = RoutePolicy {
        rewrite: PathRewrite::StripPrefix("/tts".into()),
        ..policy()
    };
    let proxy = TestProxy::start(config("", vec![prefix_route("tts", "/tts/", up, tts)])).await;
    let c = client();
    let echo = json(
        c.get(proxy.url("/tts/speak?voice=af"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(echo["path"], "/api/speak?voice=af");
    let echo = json(c.get(proxy.url("/tts")).send().await.unwrap()).await;
    assert_eq!(echo["path"], "/api/");
    // Element-wise prefix: /ttsx is not under /tts.
    let response = c.get(proxy.url("/ttsx")).send().await.unwrap();
    assert_json_error(response, 404, "route_not_found").await;
}

#[tokio::test]
async fn unknown_host_gets_json_404() {
    let backend = echo_backend().await;
    let proxy = TestProxy::start(config(
        "api.test",
        vec![prefix_route(
            "r",
            "/",
            upstream(vec![backend.addr]),
            policy(),
        )],
    ))
    .await;
    let c = client();
    let ok = c
        .get(proxy.url("/x"))
        .header("host", "api.test:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200, "host matching ignores the port");
    let response = c
        .get(proxy.url("/x"))
        .header("host", "other.test")
        .send()
        .await
        .unwrap();
    assert_json_error(response, 404, "route_not_found").await;
    assert_eq!(backend.hits(), 1);
}

#[tokio::test]
async fn unavailable_backend_is_a_json_503() {
    let route = Arc::new(Route {
        name: Arc::from("r"),
        path: airgate::config::PathMatch::Prefix("/".into()),
        backend: Backend::Unavailable {
            status: 503,
            message: Arc::from("service ai/llm has no ready endpoints"),
        },
        policy: policy(),
        metrics: Default::default(),
    });
    let proxy = TestProxy::start(config("", vec![route])).await;
    let response = client().get(proxy.url("/")).send().await.unwrap();
    let body = assert_json_error(response, 503, "service_unavailable").await;
    assert_eq!(
        body["error"]["message"],
        "service ai/llm has no ready endpoints"
    );
}

#[tokio::test]
async fn body_over_content_length_limit_is_413_before_the_backend() {
    let backend = echo_backend().await;
    let limited = RoutePolicy {
        max_body_size: Some(1024),
        ..policy()
    };
    let proxy = TestProxy::start(config(
        "",
        vec![prefix_route(
            "r",
            "/",
            upstream(vec![backend.addr]),
            limited,
        )],
    ))
    .await;
    // Headers only: the proxy must answer from Content-Length alone.
    let answer = raw_exchange(
        proxy.http,
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("request_too_large"), "{answer}");
    assert_eq!(backend.hits(), 0, "the backend was never contacted");

    // Within the limit it passes.
    let response = client()
        .post(proxy.url("/upload"))
        .body(vec![b'x'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(json(response).await["body_len"], 1024);
}

#[tokio::test]
async fn client_still_uploading_reads_the_413_instead_of_a_reset() {
    let backend = echo_backend().await;
    let limited = RoutePolicy {
        max_body_size: Some(1024),
        ..policy()
    };
    let proxy = TestProxy::start(config(
        "",
        vec![prefix_route(
            "r",
            "/",
            upstream(vec![backend.addr]),
            limited,
        )],
    ))
    .await;
    // A real client sends the whole 8 MiB body before it reads the answer. The proxy
    // answers 413 from Content-Length at once; if it closed the connection then, the
    // client's remaining writes would hit a reset (broken pipe) and the 413 would be lost.
    for _ in 0..3 {
        let response = client()
            .post(proxy.url("/upload"))
            .body(vec![b'x'; 8 * 1024 * 1024])
            .send()
            .await
            .expect("the client reads an answer, not a broken pipe");
        assert_json_error(response, 413, "request_too_large").await;
    }
    // Deterministic form: read the early 413 first, then keep sending the declared body.
    // Without the drain the proxy has closed the socket and these writes are reset.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    let body_len = 4 * 1024 * 1024;
    tcp.write_all(
        format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {body_len}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = vec![0u8; 4096];
    let n = tcp.read(&mut head).await.unwrap();
    let head = String::from_utf8_lossy(&head[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..body_len / chunk.len() {
        tcp.write_all(&chunk)
            .await
            .expect("the proxy drains the rest of the body instead of resetting");
    }
    let mut rest = Vec::new();
    let eof = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await;
    assert!(
        eof.is_ok(),
        "the proxy closes the connection once the body is drained"
    );
    assert_eq!(backend.hits(), 0, "the backend was never contacted");
}

#[tokio::test]
async fn chunked_body_growing_past_the_limit_is_413() {
    let backend = echo_backend().await;
    let limited = RoutePolicy {
        max_body_size: Some(1024),
        ..policy()
    };
    let proxy = TestProxy::start(config(
        "",
        vec![prefix_route(
            "r",
            "/",
            upstream(vec![backend.addr]),
            limited,
        )],
    ))
    .await;
    let mut request =
        b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    request.extend_from_slice(format!("{:x}\r\n", 3000).as_bytes());
    request.extend_from_slice(&[b'y'; 3000]);
    request.extend_from_slice(b"\r\n");
    let answer = raw_exchange(proxy.http, &request).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/json"), "{answer}");
}

#[tokio::test]
async fn silent_backend_is_a_504() {
    let backend = backend(|_req| async move {
        std::future::pending::<()>().await;
        unreachable!()
    })
    .await;
    let route = RoutePolicy {
        timeouts: short_timeouts(300),
        ..policy()
    };
    let proxy = TestProxy::start(config(
        "",
        vec![prefix_route("r", "/", upstream(vec![backend.addr]), route)],
    ))
    .await;
    let started = std::time::Instant::now();
    let response = client().get(proxy.url("/")).send().await.unwrap();
    assert_json_error(response, 504, "upstream_timeout").await;
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn refused_endpoint_is_a_502_and_failover_reaches_the_next() {
    let dead = refused_addr().await;
    let proxy_dead = TestProxy::start(config(
        "",
        vec![prefix_route("r", "/", upstream(vec![dead]), policy())],
    ))
    .await;
    let response = client().get(proxy_dead.url("/")).send().await.unwrap();
    assert_json_error(response, 502, "bad_gateway").await;

    let backend = echo_backend().await;
    let proxy = TestProxy::start(config(
        "",
        vec![prefix_route(
            "r",
            "/",
            upstream(vec![dead, backend.addr]),
            policy(),
        )],
    ))
    .await;
    let c = client();
    // Round robin starts at each endpoint in turn; every request must still succeed.
    for _ in 0..4 {
        let response = c.get(proxy.url("/")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(backend.hits(), 4);
}

#[tokio::test]
async fn round_robin_spreads_requests() {
    let a = echo_backend().await;
    let b = echo_backend().await;
    let proxy = TestProxy::start(config(
        "",
        vec![prefix_route(
            "r",
            "/",
            upstream(vec![a.addr, b.addr]),
            policy(),
        )],
    ))
    .await;
    let c = client();
    for _ in 0..6 {
        assert_eq!(c.get(proxy.url("/")).send().await.unwrap().status(), 200);
    }
    assert_eq!((a.hits(), b.hits()), (3, 3));
}

#[tokio::test]
async fn https_redirect_is_308_to_the_same_path() {
    let backend = echo_backend().await;
    let redirecting = RoutePolicy {
        https_redirect: Some(308),
        ..policy()
    };
    let proxy = TestProxy::start(config(
        "api.test",
        vec![prefix_route(
            "r",
            "/",
            upstream(vec![backend.addr]),
            redirecting,
        )],
    ))
    .await;
    let c = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = c
        .post(proxy.url("/v1/chat?x=1"))
        .header("host", "api.test:8080")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        response.headers()["location"],
        "https://api.test/v1/chat?x=1"
    );
    assert_eq!(backend.hits(), 0);
}

#[tokio::test]
async fn h2c_prior_knowledge_client_and_h2c_upstream() {
    let backend = echo_backend().await;
    let proxy = TestProxy::start(config(
        "",
        vec![
            prefix_route("h1", "/h1", upstream(vec![backend.addr]), policy()),
            prefix_route(
                "h2",
                "/h2",
                upstream_with(vec![backend.addr], UpstreamProtocol::H2c),
                policy(),
            ),
        ],
    ))
    .await;
    let c = h2c_client();
    let response = c.get(proxy.url("/h1/x")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let echo = json(response).await;
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(
        echo["headers"]["host"][0],
        proxy.http.to_string(),
        ":authority becomes Host"
    );

    let response = c.post(proxy.url("/h2/y")).body("abc").send().await.unwrap();
    let echo = json(response).await;
    assert_eq!(echo["version"], "HTTP/2.0");
    assert_eq!(echo["body_len"], 3);
    assert_eq!(echo["headers"]["x-forwarded-host"][0], "127.0.0.1");
}

#[tokio::test]
async fn source_ranges_and_cors_preflight_are_answered_by_the_proxy() {
    let backend = echo_backend().await;
    let cors = airgate::config::CorsPolicy {
        allow_any_origin: false,
        exact_origins: vec!["https://app.example.com".into()],
        wildcard_origins: Vec::new(),
        allow_methods: http::HeaderValue::from_static("GET, POST"),
        allow_headers: http::HeaderValue::from_static("Authorization"),
        expose_headers: None,
        allow_credentials: false,
        max_age: http::HeaderValue::from_static("86400"),
    };
    let open = RoutePolicy {
        cors: Some(Arc::new(cors)),
        ..policy()
    };
    let closed = RoutePolicy {
        allow_sources: Some(Arc::from(vec![
            "10.0.0.0/8".parse::<ipnet::IpNet>().unwrap(),
        ])),
        ..policy()
    };
    let proxy = TestProxy::start(config(
        "",
        vec![
            prefix_route("open", "/open", upstream(vec![backend.addr]), open),
            prefix_route("closed", "/closed", upstream(vec![backend.addr]), closed),
        ],
    ))
    .await;
    let c = client();
    let response = c
        .request(http::Method::OPTIONS, proxy.url("/open/v1/chat"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = c.get(proxy.url("/closed/x")).send().await.unwrap();
    assert_json_error(response, 403, "forbidden").await;
    assert_eq!(backend.hits(), 0, "neither request reached the backend");
}

#[tokio::test]
async fn requests_are_counted_per_route_and_status() {
    let backend = echo_backend().await;
    let name = "metrics-test/route";
    let proxy = TestProxy::start(config(
        "",
        vec![prefix_route(
            name,
            "/",
            upstream(vec![backend.addr]),
            policy(),
        )],
    ))
    .await;
    let counter = airgate::telemetry::metrics().routes.get(name);
    let before = counter.requests(200);
    let c = client();
    for _ in 0..3 {
        let response = c.get(proxy.url("/")).send().await.unwrap();
        response.bytes().await.unwrap();
    }
    // The record is written when the body ends, which may trail the client by a moment.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while counter.requests(200) < before + 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "requests were not counted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(counter.requests(200), before + 3);
}

#[tokio::test]
async fn split_cookies_from_h2_reach_an_h1_backend_as_one_header() {
    let backend = echo_backend().await;
    let proxy = TestProxy::start(config(
        "",
        vec![prefix_route(
            "r",
            "/",
            upstream(vec![backend.addr]),
            policy(),
        )],
    ))
    .await;
    let response = h2c_client()
        .get(proxy.url("/"))
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("expect", "100-continue")
        .send()
        .await
        .unwrap();
    let echo = json(response).await;
    assert_eq!(echo["headers"]["cookie"], serde_json::json!(["a=1; b=2"]));
    assert!(echo["headers"].get("expect").is_none());
}

#[tokio::test]
async fn upstream_connections_are_reused_across_requests_and_publishes() {
    let backend = echo_backend().await;
    let make = || {
        config(
            "",
            vec![prefix_route(
                "r",
                "/",
                upstream(vec![backend.addr]),
                policy(),
            )],
        )
    };
    let proxy = TestProxy::start(make()).await;
    let c = client();
    for i in 0..10 {
        if i == 5 {
            // Pools are keyed by endpoint, not by snapshot.
            proxy.runtime.publish(make());
        }
        let response = c.get(proxy.url("/")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
    }
    assert_eq!(backend.hits(), 10);
    // A connection returns to the pool once its response is fully read, which races
    // with the client's next request; without pooling this would be 10.
    let connections = backend
        .connections
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        connections <= 3,
        "{connections} upstream connections for 10 requests"
    );
}

#[tokio::test]
async fn stalled_request_body_is_a_408() {
    let backend = echo_backend().await;
    let route = RoutePolicy {
        timeouts: Timeouts {
            connect: Duration::from_secs(2),
            read: Duration::from_secs(10),
            send: Duration::from_millis(300),
        },
        ..policy()
    };
    let proxy = TestProxy::start(config(
        "",
        vec![prefix_route("r", "/", upstream(vec![backend.addr]), route)],
    ))
    .await;
    // 10 of 100 promised bytes, then silence (the socket stays open).
    let started = std::time::Instant::now();
    let answer = raw_exchange(
        proxy.http,
        b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn dns_endpoints_resolve_and_fail_over_between_addresses() {
    let backend = echo_backend().await;
    let up = Arc::new(airgate::config::Upstream {
        name: Arc::from("dns"),
        protocol: UpstreamProtocol::Http,
        // `localhost` may also resolve to ::1, where nothing listens: the proxy must
        // move on to 127.0.0.1.
        endpoints: airgate::config::Endpoints::Dns {
            host: "localhost".into(),
            port: backend.addr.port(),
        },
        base_path: "/base".into(),
        host_override: Some(http::HeaderValue::from_static("model.internal")),
        tls_server_name: None,
        next: Default::default(),
    });
    let proxy = TestProxy::start(config("", vec![prefix_route("r", "/", up, policy())])).await;
    let c = client();
    for _ in 0..4 {
        let echo = json(c.get(proxy.url("/x")).send().await.unwrap()).await;
        assert_eq!(echo["path"], "/base/x");
        assert_eq!(echo["headers"]["host"][0], "model.internal");
    }
}

#[tokio::test]
async fn slow_upload_longer_than_the_read_timeout_succeeds() {
    let backend = echo_backend().await;
    let route = RoutePolicy {
        timeouts: Timeouts {
            connect: Duration::from_secs(2),
            read: Duration::from_millis(300),
            send: Duration::from_secs(2),
        },
        ..policy()
    };
    let proxy = TestProxy::start(config(
        "",
        vec![prefix_route("r", "/", upstream(vec![backend.addr]), route)],
    ))
    .await;
    // 8 chunks 150ms apart: the upload takes ~1.2s, four times the read timeout, which
    // only starts counting once the body is sent (nginx's proxy_read_timeout too).
    let chunks = futures_util::stream::unfold(0u32, |i| async move {
        if i == 8 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        Some((Ok::<_, std::io::Error>(vec![b'a'; 1000]), i + 1))
    });
    let started = std::time::Instant::now();
    let response = client()
        .post(proxy.url("/transcribe"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(json(response).await["body_len"], 8000);
    assert!(started.elapsed() > Duration::from_millis(1000));
}

/// Read one request head (this backend's requests carry no body).
async fn read_head(tcp: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match tcp.read(&mut byte).await {
            Ok(1) => buf.push(byte[0]),
            _ => return false,
        }
        if buf.len() > 64 * 1024 {
            return false;
        }
    }
    true
}

#[tokio::test]
async fn safe_request_on_a_dropped_keepalive_connection_is_retried() {
    // The first connection answers once with keep-alive, then closes without answering
    // the next request on it (an upstream closing an idle connection as it is reused).
    // Later connections answer normally.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = AbortOnDrop(tokio::spawn(async move {
        let mut first = true;
        for _ in 0..8 {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let reply = if first { "one" } else { "two" };
            let close_after_one = first;
            first = false;
            tokio::spawn(async move {
                for _ in 0..16 {
                    if !read_head(&mut tcp).await {
                        return;
                    }
                    let response = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{reply}",
                        reply.len()
                    );
                    if tcp.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                    if close_after_one {
                        // Wait for the reuse, then drop it unanswered.
                        let _ = read_head(&mut tcp).await;
                        return;
                    }
                }
            });
        }
    }));
    let proxy = TestProxy::start(config(
        "",
        vec![prefix_route("r", "/", upstream(vec![addr]), policy())],
    ))
    .await;
    let c = client();
    let first = c.get(proxy.url("/")).send().await.unwrap();
    assert_eq!(first.text().await.unwrap(), "one");
    let second = c.get(proxy.url("/")).send().await.unwrap();
    assert_eq!(second.status(), 200, "GET is retried on a new connection");
    assert_eq!(second.text().await.unwrap(), "two");
    drop(server);
}
