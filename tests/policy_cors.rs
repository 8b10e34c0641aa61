//! CORS and security headers through the real proxy.
mod policy_support;

use std::sync::Arc;
use std::time::Duration;

use airgate::config::{RoutePolicy, ZoneKey};
use policy_support::{ConfigBuilder, Proxy, Server, client, cors, limited, zone};

const APP: &str = "http://app.example.com";
const EVIL: &str = "http://evil.example.net";

/// A backend that, like many AI servers, sends its own permissive CORS header and a Vary.
async fn permissive_backend() -> Server {
    Server::start(|_| {
        (
            200,
            vec![
                ("access-control-allow-origin", "*".to_string()),
                ("vary", "Accept-Encoding".to_string()),
                ("x-frame-options", "SAMEORIGIN".to_string()),
            ],
            "hello from backend".into(),
            None,
        )
    })
    .await
}

fn cors_route() -> RoutePolicy {
    RoutePolicy {
        cors: Some(Arc::new(cors(&[APP]))),
        security_headers: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn preflight_from_allowed_origin_is_answered_by_the_proxy() {
    let backend = permissive_backend().await;
    let proxy = Proxy::start(
        ConfigBuilder::default()
            .route("/", backend.addr, cors_route())
            .build(),
    )
    .await;
    let c = client();
    let res = c
        .request(reqwest::Method::OPTIONS, proxy.url("/v1/chat/completions"))
        .header("origin", APP)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let h = res.headers().clone();
    assert_eq!(h["access-control-allow-origin"], APP);
    assert_eq!(h["access-control-allow-methods"], "GET, POST, OPTIONS");
    assert_eq!(
        h["access-control-allow-headers"],
        "Authorization, Content-Type"
    );
    assert_eq!(h["access-control-max-age"], "86400");
    assert!(!h.contains_key("access-control-allow-credentials"));
    assert!(h.get_all("vary").iter().any(|v| v == "Origin"));
    // RFC 9110 forbids Content-Length on 204 and hyper drops it; the body is empty.
    assert!(res.bytes().await.unwrap().is_empty());
    assert_eq!(
        backend.count(),
        0,
        "the backend never sees an allowed preflight"
    );
}

#[tokio::test]
async fn preflight_from_refused_origin_gets_no_cors_headers() {
    // The proxy answers it (204, no Access-Control-*); the browser then refuses.
    let backend = permissive_backend().await;
    let proxy = Proxy::start(
        ConfigBuilder::default()
            .route("/", backend.addr, cors_route())
            .build(),
    )
    .await;
    let res = client()
        .request(reqwest::Method::OPTIONS, proxy.url("/v1/chat/completions"))
        .header("origin", EVIL)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    let cors_headers: Vec<_> = res
        .headers()
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .collect();
    assert!(
        cors_headers.is_empty(),
        "refused origin got {cors_headers:?}"
    );
}

#[tokio::test]
async fn real_requests_echo_allowed_origins_only() {
    let backend = permissive_backend().await;
    let proxy = Proxy::start(
        ConfigBuilder::default()
            .route("/", backend.addr, cors_route())
            .build(),
    )
    .await;
    let c = client();

    let ok = c
        .get(proxy.url("/v1/models"))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let h = ok.headers().clone();
    assert_eq!(
        h["access-control-allow-origin"], APP,
        "echo, not the backend's *"
    );
    assert_eq!(h.get_all("access-control-allow-origin").iter().count(), 1);
    assert_eq!(h["access-control-expose-headers"], "X-Request-ID");
    let vary: Vec<_> = h
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        vary.iter().any(|v| v.contains("Accept-Encoding")),
        "upstream Vary kept: {vary:?}"
    );
    assert!(
        vary.iter().any(|v| v.contains("Origin")),
        "Vary: Origin added: {vary:?}"
    );
    assert_eq!(ok.text().await.unwrap(), "hello from backend");

    let refused = c
        .get(proxy.url("/v1/models"))
        .header("origin", EVIL)
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        200,
        "CORS is enforced by browsers; the proxy still serves"
    );
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin"),
        "the backend's `*` must not widen the policy: {:?}",
        refused.headers()
    );
    let none = c.get(proxy.url("/v1/models")).send().await.unwrap();
    assert!(!none.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn proxy_made_errors_carry_cors_and_security_headers() {
    let backend = Server::backend().await;
    let mut policy = limited(0, 0, true);
    policy.cors = Some(Arc::new(cors(&[APP])));
    policy.security_headers = true;
    let config = ConfigBuilder::default()
        .zone(zone(
            "it/cors/zone",
            1,
            Duration::from_secs(60),
            ZoneKey::ClientIp,
        ))
        .route("/", backend.addr, policy)
        .build();
    let proxy = Proxy::start(config).await;
    let c = client();
    assert_eq!(
        c.get(proxy.url("/x"))
            .header("origin", APP)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let limited = c
        .get(proxy.url("/x"))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
    let h = limited.headers();
    assert_eq!(
        h["access-control-allow-origin"], APP,
        "a browser can read the 429"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
}

#[tokio::test]
async fn security_headers_do_not_override_the_upstream() {
    let backend = permissive_backend().await;
    let proxy = Proxy::start(
        ConfigBuilder::default()
            .route("/", backend.addr, cors_route())
            .build(),
    )
    .await;
    let res = client().get(proxy.url("/")).send().await.unwrap();
    let h = res.headers();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(
        h["x-frame-options"], "SAMEORIGIN",
        "the upstream's value wins"
    );
    assert_eq!(h["referrer-policy"], "strict-origin-when-cross-origin");
    assert_eq!(
        h["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
    assert!(
        !h.contains_key("strict-transport-security"),
        "never over plain HTTP"
    );
}

#[tokio::test]
async fn over_tls_and_http2_security_headers_include_hsts() {
    let backend = permissive_backend().await;
    let proxy = Proxy::start(
        ConfigBuilder::default()
            .route("/", backend.addr, cors_route())
            .build(),
    )
    .await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The proxy serves its self-signed default certificate when no Secret matches.
    let c = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let res = c
        .get(format!("https://{}/v1/models", proxy.https))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert_eq!(res.status(), 200);
    let h = res.headers();
    assert_eq!(
        h["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["access-control-allow-origin"], APP);
}
