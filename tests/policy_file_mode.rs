//! The policies as a user writes them: an AIRoute manifest on disk served by the real
//! `airgate serve` binary, with a rate zone, CORS, an auth hook and security headers,
//! in front of real local backends and a real hook. This checks the whole path from
//! YAML through translate to enforcement, and the metrics on the admin port.
mod file_mode_harness;
mod policy_support;

use file_mode_harness::{Airgate, client};
use policy_support::{Answer, Seen, Server};

fn manifest(backend: &Server, hook: &Server) -> String {
    format!(
        r#"apiVersion: airgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: stack, namespace: ai}}
spec:
  rateZones:
    - {{name: llm, rate: 2r/m, key: "header:X-API-Key", size: 1Mi}}
  cors:
    allowOrigins: ["https://app.example.com", "https://*.example.org"]
    allowMethods: [GET, POST, OPTIONS]
    allowHeaders: [Authorization, Content-Type, X-API-Key]
    maxAge: 1h
  authHook:
    url: http://{hook}/internal/auth
    forwardHeaders: [X-API-Key]
    copyHeaders: [X-User-Id]
    timeout: 1s
    cache: {{ttl: 30s, key: [X-API-Key]}}
  securityHeaders: true
  routes:
    - path: /llm/
      backend: {{url: "http://{backend}"}}
      rateLimit: {{zone: llm, burst: 1, nodelay: true}}
    - path: /public/
      backend: {{url: "http://{backend}"}}
      auth: false
"#,
        hook = hook.addr,
        backend = backend.addr,
    )
}

async fn hook() -> Server {
    Server::start(|seen: &Seen| -> Answer {
        match seen.headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
            Some(k) if k.starts_with("key-") => (
                200,
                vec![("x-user-id", format!("user-{k}"))],
                String::new(),
                None,
            ),
            _ => (
                401,
                vec![("www-authenticate", "Bearer".to_string())],
                String::new(),
                None,
            ),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn airroute_policies_from_yaml_are_enforced_by_the_binary() {
    let backend = Server::backend().await;
    let hook = hook().await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("stack.yaml"), manifest(&backend, &hook)).expect("write");
    let ag = Airgate::serve(dir.path(), &[]).await;
    let c = client();

    // Auth: no key -> 401 from the hook, backend untouched.
    let denied = c.get(ag.url("/llm/v1/models")).send().await.unwrap();
    assert_eq!(denied.status(), 401, "{}", ag.stderr.joined());
    assert_eq!(denied.headers()["www-authenticate"], "Bearer");
    assert_eq!(backend.count(), 0);

    // Rate zone keyed by X-API-Key: 2r/m with burst 1 nodelay admits 2, then 429.
    let mut codes = Vec::new();
    for _ in 0..3 {
        let res = c
            .get(ag.url("/llm/v1/models"))
            .header("x-api-key", "key-a")
            .header("origin", "https://chat.example.org")
            .send()
            .await
            .unwrap();
        codes.push(res.status().as_u16());
        let h = res.headers();
        assert_eq!(h["access-control-allow-origin"], "https://chat.example.org");
        assert_eq!(h["x-content-type-options"], "nosniff");
        if res.status() == 429 {
            let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=30).contains(&retry), "Retry-After {retry}");
        }
    }
    assert_eq!(codes, [200, 200, 429]);
    // Another API key has its own bucket.
    let other = c
        .get(ag.url("/llm/v1/models"))
        .header("x-api-key", "key-b")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
    let seen = backend.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].headers["x-user-id"], "user-key-a");
    assert_eq!(seen[2].headers["x-user-id"], "user-key-b");
    // key-a was asked once and then served from the cache.
    let hook_calls = hook
        .seen()
        .iter()
        .filter(|s| s.headers.get("x-api-key").is_some_and(|v| v == "key-a"))
        .count();
    assert_eq!(hook_calls, 1, "auth cache");

    // Preflight answered by the proxy with the YAML's values.
    let pre = c
        .request(reqwest::Method::OPTIONS, ag.url("/llm/v1/chat/completions"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert_eq!(
        pre.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(pre.headers()["access-control-max-age"], "3600");
    let refused = c
        .get(ag.url("/public/x"))
        .header("origin", "https://example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 200, "auth: false skips the hook");
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );

    // The admin port reports the decisions.
    let text = c
        .get(ag.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rejected = text
        .lines()
        .find(|l| l.starts_with("airgate_ratelimit_total{outcome=\"rejected\""))
        .unwrap_or_else(|| panic!("no rejection metric:\n{text}"));
    assert!(rejected.ends_with(" 1"), "{rejected}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("airgate_auth_total{") && l.contains("cache_hit")),
        "{text}"
    );
}
