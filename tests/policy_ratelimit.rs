//! Rate-limit zones through the real proxy: nginx `limit_req` bursts, a zone shared by
//! two routes, a header key, delay mode, and state surviving reconfiguration.
mod policy_support;

use std::time::{Duration, Instant};

use airgate::config::ZoneKey;
use http::HeaderName;
use policy_support::{ConfigBuilder, Proxy, Server, client, limited, metric, zone};

const MINUTE: Duration = Duration::from_secs(60);

async fn statuses(c: &reqwest::Client, url: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(c.get(url).send().await.expect("request").status().as_u16());
    }
    out
}

#[tokio::test]
async fn burst_nodelay_admits_burst_plus_one_then_429_with_retry_after() {
    let backend = Server::backend().await;
    let config = ConfigBuilder::default()
        .zone(zone("it/burst/llm", 1, MINUTE, ZoneKey::ClientIp))
        .route("/llm", backend.addr, limited(0, 2, true))
        .build();
    let proxy = Proxy::start(config).await;
    let c = client();
    assert_eq!(
        statuses(&c, &proxy.url("/llm/chat"), 3).await,
        [200, 200, 200]
    );
    let rejected = c.get(proxy.url("/llm/chat")).send().await.unwrap();
    assert_eq!(rejected.status(), 429);
    // 3 admitted at 1 r/m with burst 2: the next slot opens one minute after the first.
    let retry: u64 = rejected.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((59..=60).contains(&retry), "Retry-After {retry}");
    let body: serde_json::Value = rejected.json().await.unwrap();
    assert!(
        body["error"]["message"].is_string(),
        "OpenAI-shaped error: {body}"
    );
    assert_eq!(
        backend.count(),
        3,
        "rejected requests never reach the backend"
    );
    assert_eq!(
        metric("airgate_ratelimit_total{outcome=\"rejected\",zone=\"it/burst/llm\"}"),
        Some(1.0)
    );

    // Publishing the same zone again keeps its counters (no reset on reconfiguration).
    let again = ConfigBuilder::default()
        .zone(zone("it/burst/llm", 1, MINUTE, ZoneKey::ClientIp))
        .route("/llm", backend.addr, limited(0, 2, true))
        .build();
    proxy.runtime.publish(again);
    assert_eq!(statuses(&c, &proxy.url("/llm/chat"), 1).await, [429]);

    // A new rate is a new zone: it starts empty.
    let faster = ConfigBuilder::default()
        .zone(zone("it/burst/llm", 2, MINUTE, ZoneKey::ClientIp))
        .route("/llm", backend.addr, limited(0, 2, true))
        .build();
    proxy.runtime.publish(faster);
    assert_eq!(
        statuses(&c, &proxy.url("/llm/chat"), 4).await,
        [200, 200, 200, 429]
    );
}

#[tokio::test]
async fn one_zone_named_by_two_routes_is_one_bucket_per_client() {
    let backend = Server::backend().await;
    let config = ConfigBuilder::default()
        .zone(zone("it/shared/llm", 1, MINUTE, ZoneKey::ClientIp))
        .route("/chat", backend.addr, limited(0, 1, true))
        .route("/tts", backend.addr, limited(0, 3, true))
        .build();
    let proxy = Proxy::start(config).await;
    let c = client();
    assert_eq!(statuses(&c, &proxy.url("/chat"), 3).await, [200, 200, 429]);
    // /tts has a larger burst over the same bucket: 2 requests already count.
    assert_eq!(statuses(&c, &proxy.url("/tts"), 3).await, [200, 200, 429]);
    assert_eq!(statuses(&c, &proxy.url("/chat"), 1).await, [429]);
    assert_eq!(backend.count(), 4);
}

#[tokio::test]
async fn header_key_gives_each_api_key_its_own_bucket() {
    let backend = Server::backend().await;
    let key = ZoneKey::Header(HeaderName::from_static("x-api-key"));
    let config = ConfigBuilder::default()
        .zone(zone("it/header/llm", 1, MINUTE, key))
        .route("/", backend.addr, limited(0, 0, true))
        .build();
    let proxy = Proxy::start(config).await;
    let c = client();
    let with_key = |k: &'static str| c.get(proxy.url("/v1/models")).header("x-api-key", k);
    assert_eq!(with_key("alice").send().await.unwrap().status(), 200);
    assert_eq!(with_key("alice").send().await.unwrap().status(), 429);
    assert_eq!(with_key("bob").send().await.unwrap().status(), 200);
    // No header: keyed by client IP, which has its own bucket.
    assert_eq!(statuses(&c, &proxy.url("/v1/models"), 2).await, [200, 429]);
    assert_eq!(backend.count(), 3);
}

#[tokio::test]
async fn without_nodelay_excess_requests_wait_their_turn() {
    let backend = Server::backend().await;
    let config = ConfigBuilder::default()
        .zone(zone(
            "it/delay/llm",
            10,
            Duration::from_secs(1),
            ZoneKey::ClientIp,
        ))
        .route("/", backend.addr, limited(0, 3, false))
        .build();
    let proxy = Proxy::start(config).await;
    let c = client();
    let started = Instant::now();
    let url = proxy.url("/slowly");
    let requests: Vec<_> = (0..5).map(|_| c.get(&url).send()).collect();
    let results = futures_util::future::join_all(requests).await;
    let elapsed = started.elapsed();
    let mut codes: Vec<u16> = results
        .into_iter()
        .map(|r| r.expect("request").status().as_u16())
        .collect();
    codes.sort();
    // 1 at once + 3 delayed by 100, 200, 300 ms; the fifth is beyond the burst.
    assert_eq!(codes, [200, 200, 200, 200, 429]);
    assert!(
        elapsed >= Duration::from_millis(290),
        "delayed requests proceeded at the rate, took {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    assert_eq!(backend.count(), 4);
}

#[tokio::test]
async fn ingress_nginx_style_limits_answer_503() {
    let backend = Server::backend().await;
    let mut policy = limited(0, 0, true);
    if let Some(limit) = policy.rate_limit.as_mut() {
        limit.reject_status = 503;
    }
    let config = ConfigBuilder::default()
        .zone(zone(
            "it/annotation/rps",
            1,
            Duration::from_secs(1),
            ZoneKey::ClientIp,
        ))
        .route("/", backend.addr, policy)
        .build();
    let proxy = Proxy::start(config).await;
    let c = client();
    let codes = statuses(&c, &proxy.url("/x"), 2).await;
    assert_eq!(codes, [200, 503]);
}
