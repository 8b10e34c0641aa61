//! The auth hook through the real proxy, against a real local hook server: allow,
//! deny, slow, down and cached, checking what the hook and the backend each received.
mod policy_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use airgate::config::{AuthHookPolicy, RoutePolicy};
use policy_support::{Answer, ConfigBuilder, Proxy, Seen, Server, auth_hook, client, metric};

/// Answers by `X-API-Key`: `good` -> 200 with X-User-Id, `anonymous` -> 200 without
/// it, `slow` -> 200 after 3 s,
/// `broken` -> 502, anything else -> 401 with WWW-Authenticate.
async fn hook_server() -> Server {
    Server::start(|seen: &Seen| -> Answer {
        let key = seen
            .headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match key {
            "good" => (
                200,
                vec![
                    ("x-user-id", "u-42".into()),
                    ("x-internal", "hook-only".into()),
                ],
                String::new(),
                None,
            ),
            "anonymous" => (200, vec![], String::new(), None),
            "slow" => (200, vec![], String::new(), Some(Duration::from_secs(3))),
            "broken" => (502, vec![], "upstream of the hook is down".into(), None),
            _ => (
                401,
                vec![
                    ("www-authenticate", "Bearer realm=\"ai\"".into()),
                    ("x-internal", "hook-only".into()),
                ],
                "no".into(),
                None,
            ),
        }
    })
    .await
}

fn with_hook(hook: AuthHookPolicy) -> RoutePolicy {
    RoutePolicy {
        auth: Some(Arc::new(hook)),
        ..Default::default()
    }
}

#[tokio::test]
async fn allowed_request_reaches_backend_with_copied_headers_and_hook_sees_no_body() {
    let hook = hook_server().await;
    let backend = Server::backend().await;
    let policy = with_hook(auth_hook(hook.addr, Duration::from_secs(2), false));
    let proxy = Proxy::start(
        ConfigBuilder::default()
            .route("/", backend.addr, policy)
            .build(),
    )
    .await;
    let res = client()
        .post(proxy.url("/v1/chat/completions?stream=true"))
        .header("x-api-key", "good")
        .header("x-user-id", "forged-by-client")
        .header("cookie", "session=private")
        .header("x-request-id", "req-abc")
        .body(r#"{"model":"llama3","messages":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "hello from backend");

    let seen = hook.seen();
    assert_eq!(seen.len(), 1);
    let sub = &seen[0];
    assert_eq!(sub.method, "GET");
    assert_eq!(sub.uri, "/internal/auth");
    assert!(sub.body.is_empty(), "the hook never gets the body");
    let h = |n: &str| sub.headers.get(n).map(|v| v.to_str().unwrap().to_string());
    assert_eq!(h("content-length").as_deref(), Some("0"));
    assert_eq!(h("x-api-key").as_deref(), Some("good"));
    assert_eq!(
        h("x-original-uri").as_deref(),
        Some("/v1/chat/completions?stream=true")
    );
    assert_eq!(h("x-original-method").as_deref(), Some("POST"));
    assert_eq!(h("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(h("x-forwarded-proto").as_deref(), Some("http"));
    assert!(h("x-forwarded-host").is_some());
    assert!(h("x-request-id").is_some());
    assert_eq!(h("cookie"), None, "only forwardHeaders reach the hook");

    let upstream = backend.seen();
    assert_eq!(upstream.len(), 1);
    let got: Vec<_> = upstream[0].headers.get_all("x-user-id").iter().collect();
    assert_eq!(got, ["u-42"], "the hook's X-User-Id replaces the client's");
    assert!(
        !upstream[0].headers.contains_key("x-internal"),
        "only copyHeaders"
    );
    assert_eq!(
        &upstream[0].body[..],
        br#"{"model":"llama3","messages":[]}"#
    );
}

#[tokio::test]
async fn denied_request_gets_401_with_www_authenticate_and_backend_is_untouched() {
    let hook = hook_server().await;
    let backend = Server::backend().await;
    let policy = with_hook(auth_hook(hook.addr, Duration::from_secs(2), false));
    let proxy = Proxy::start(
        ConfigBuilder::default()
            .route("/", backend.addr, policy)
            .build(),
    )
    .await;
    let res = client()
        .post(proxy.url("/v1/embeddings"))
        .header("x-api-key", "stolen")
        .body("secret text")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"ai\"");
    assert!(
        !res.headers().contains_key("x-internal"),
        "nothing else from the hook"
    );
    assert_eq!(hook.count(), 1);
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn slow_broken_or_down_hooks_fail_closed() {
    let hook = hook_server().await;
    let backend = Server::backend().await;
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_addr = free.local_addr().unwrap();
    drop(free);
    let mut down = auth_hook(down_addr, Duration::from_secs(2), false);
    down.failure_status = 503;
    let config = ConfigBuilder::default()
        .route(
            "/up",
            backend.addr,
            with_hook(auth_hook(hook.addr, Duration::from_millis(500), false)),
        )
        .route("/down", backend.addr, with_hook(down))
        .build();
    let proxy = Proxy::start(config).await;
    let c = client();

    let started = Instant::now();
    let slow = c
        .get(proxy.url("/up/x"))
        .header("x-api-key", "slow")
        .send()
        .await
        .unwrap();
    assert_eq!(slow.status(), 500, "timeout fails like nginx");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "cut at the hook timeout"
    );

    let broken = c
        .get(proxy.url("/up/x"))
        .header("x-api-key", "broken")
        .send()
        .await
        .unwrap();
    assert_eq!(broken.status(), 500);

    let refused = c
        .get(proxy.url("/down/x"))
        .header("x-api-key", "good")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");

    assert_eq!(
        backend.count(),
        0,
        "a failing hook never lets a request through"
    );
}

#[tokio::test]
async fn cached_answers_skip_the_hook() {
    let hook = hook_server().await;
    let backend = Server::backend().await;
    let h = auth_hook(hook.addr, Duration::from_secs(2), true);
    let id = h.id.to_string();
    let proxy = Proxy::start(
        ConfigBuilder::default()
            .route("/", backend.addr, with_hook(h))
            .build(),
    )
    .await;
    let c = client();
    for _ in 0..3 {
        let res = c
            .get(proxy.url("/v1/models"))
            .header("x-api-key", "good")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    for _ in 0..2 {
        let res = c
            .get(proxy.url("/v1/models"))
            .header("x-api-key", "nope")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"ai\"");
    }
    assert_eq!(hook.count(), 2, "one call per key");
    assert_eq!(backend.count(), 3);
    let upstream = backend.seen();
    assert!(
        upstream.iter().all(|s| s.headers["x-user-id"] == "u-42"),
        "cached allow copies headers"
    );
    assert_eq!(
        metric(&format!(
            "airgate_auth_total{{hook=\"{id}\",outcome=\"cache_hit\"}}"
        )),
        Some(3.0)
    );
    // The two calls the hook answered: one allow, one deny, both timed.
    for outcome in ["allowed", "denied"] {
        assert_eq!(
            metric(&format!(
                "airgate_auth_total{{hook=\"{id}\",outcome=\"{outcome}\"}}"
            )),
            Some(1.0),
            "{outcome}"
        );
    }
    assert_eq!(
        metric(&format!(
            "airgate_auth_duration_seconds_count{{hook=\"{id}\"}}"
        )),
        Some(2.0)
    );
}

#[tokio::test]
async fn client_cannot_forge_copied_headers_when_the_hook_sends_none() {
    let hook = hook_server().await;
    let backend = Server::backend().await;
    let policy = with_hook(auth_hook(hook.addr, Duration::from_secs(2), false));
    let proxy = Proxy::start(
        ConfigBuilder::default()
            .route("/", backend.addr, policy)
            .build(),
    )
    .await;
    let res = client()
        .get(proxy.url("/v1/models"))
        .header("x-api-key", "anonymous")
        .header("x-user-id", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let upstream = backend.seen();
    assert_eq!(upstream.len(), 1);
    assert!(
        !upstream[0].headers.contains_key("x-user-id"),
        "a copyHeaders name is set only by the hook: {:?}",
        upstream[0].headers
    );
}
