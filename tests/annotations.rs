//! ingress-nginx annotations end to end: manifests -> translate -> the real proxy on
//! loopback, real backends and a real auth hook, a real HTTP client.
mod support;

use std::path::Path;

use airgate::source::file::{Loaded, parse_file};
use airgate::translate::{Options, Severity, Translation, translate};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;
use support::{TestBackend, TestProxy, backend, client, echo_backend, full};

/// A Service `ai/<name>` whose one ready endpoint is `addr`.
fn service(name: &str, addr: std::net::SocketAddr) -> String {
    format!(
        r#"
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: ai}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: ai
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {port}, protocol: TCP}}]
endpoints:
  - addresses: ["{ip}"]
    conditions: {{ready: true}}
"#,
        port = addr.port(),
        ip = addr.ip(),
    )
}

/// An Ingress `ai/<name>` routing `path` (ImplementationSpecific) to Service `echo`.
fn ingress(name: &str, path: &str, annotations: &[(&str, &str)]) -> String {
    let mut ann = String::new();
    for (k, v) in annotations {
        ann.push_str(&format!("    {k}: {v:?}\n"));
    }
    format!(
        r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: ai
  annotations:
{ann}spec:
  rules:
    - http:
        paths:
          - path: "{path}"
            pathType: ImplementationSpecific
            backend: {{service: {{name: echo, port: {{number: 80}}}}}}
"#
    )
}

fn translate_yaml(yaml: &str) -> Translation {
    let mut loaded = Loaded::default();
    parse_file(Path::new("test.yaml"), yaml, &mut loaded);
    assert_eq!(loaded.error_count(), 0, "{:#?}", loaded.problems);
    translate(&loaded.objects, &Options::default())
}

/// Allows requests with `Authorization: Bearer good` and tells the backend who it was.
async fn auth_hook() -> TestBackend {
    backend(|req: Request<Incoming>| async move {
        let good = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .is_some_and(|v| v == "Bearer good");
        let mut response = Response::new(full(""));
        if good {
            response
                .headers_mut()
                .insert("x-user-id", http::HeaderValue::from_static("alice"));
        } else {
            *response.status_mut() = StatusCode::UNAUTHORIZED;
        }
        response
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_nginx_annotations_are_enforced_by_the_proxy() {
    let echo = echo_backend().await;
    let hook = auth_hook().await;
    let mut yaml = service("echo", echo.addr);
    yaml += &ingress(
        "rewrite",
        "/llm(/|$)(.*)",
        &[("nginx.ingress.kubernetes.io/rewrite-target", "/$2")],
    );
    yaml += &ingress(
        "limited",
        "/limited",
        &[
            ("nginx.ingress.kubernetes.io/limit-rpm", "1"),
            ("nginx.ingress.kubernetes.io/limit-burst-multiplier", "1"),
        ],
    );
    yaml += &ingress(
        "limited429",
        "/limited429",
        &[
            ("nginx.ingress.kubernetes.io/limit-rpm", "1"),
            ("nginx.ingress.kubernetes.io/limit-burst-multiplier", "1"),
            ("airgate.dev/limit-status-code", "429"),
        ],
    );
    yaml += &ingress(
        "cors",
        "/cors",
        &[
            ("nginx.ingress.kubernetes.io/enable-cors", "true"),
            (
                "nginx.ingress.kubernetes.io/cors-allow-origin",
                "https://app.example.com",
            ),
        ],
    );
    yaml += &ingress(
        "private",
        "/private",
        &[(
            "nginx.ingress.kubernetes.io/whitelist-source-range",
            "10.0.0.0/8",
        )],
    );
    yaml += &ingress(
        "small",
        "/small",
        &[("nginx.ingress.kubernetes.io/proxy-body-size", "1k")],
    );
    yaml += &ingress(
        "secure",
        "/secure",
        &[("nginx.ingress.kubernetes.io/force-ssl-redirect", "true")],
    );
    yaml += &ingress(
        "authed",
        "/authed",
        &[
            (
                "nginx.ingress.kubernetes.io/auth-url",
                &format!("http://{}/verify", hook.addr),
            ),
            (
                "nginx.ingress.kubernetes.io/auth-response-headers",
                "X-User-Id",
            ),
        ],
    );
    yaml += &ingress(
        "snippet",
        "/snippet",
        &[(
            "nginx.ingress.kubernetes.io/configuration-snippet",
            "more_set_headers \"X-Hacked: 1\";",
        )],
    );

    let t = translate_yaml(&yaml);
    let errors: Vec<String> = t
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.to_string())
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("Ingress ai/snippet")
            && e.contains("nginx.ingress.kubernetes.io/configuration-snippet")),
        "{errors:#?}"
    );
    assert!(
        errors.iter().all(|e| e.contains("Ingress ai/snippet")),
        "only the snippet Ingress is in error: {errors:#?}"
    );
    let proxy = TestProxy::start(t.config).await;
    let c = client();

    // rewrite-target: the capture group becomes the upstream path, case-insensitively.
    let echoed: Value = c
        .get(proxy.url("/LLM/v1/chat?stream=true"))
        .send()
        .await
        .expect("rewrite request")
        .json()
        .await
        .expect("echo json");
    assert_eq!(echoed["path"], "/v1/chat?stream=true");

    // limit-rpm 1 with burst multiplier 1: burst 1 nodelay admits two, then 503.
    for _ in 0..2 {
        let r = c.get(proxy.url("/limited")).send().await.expect("limited");
        assert_eq!(r.status(), StatusCode::OK);
    }
    let hits = echo.hits();
    let r = c.get(proxy.url("/limited")).send().await.expect("limited");
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        echo.hits(),
        hits,
        "a rejected request never reaches the backend"
    );
    // The same with airgate.dev/limit-status-code: 429.
    for _ in 0..2 {
        c.get(proxy.url("/limited429"))
            .send()
            .await
            .expect("limited");
    }
    let r = c
        .get(proxy.url("/limited429"))
        .send()
        .await
        .expect("limited");
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);

    // CORS: the allowed origin is echoed with credentials; another origin gets nothing.
    let r = c
        .get(proxy.url("/cors"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .expect("cors");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    let r = c
        .get(proxy.url("/cors"))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .expect("cors");
    assert!(r.headers().get("access-control-allow-origin").is_none());

    // whitelist-source-range: 127.0.0.1 is not in 10.0.0.0/8.
    let hits = echo.hits();
    let r = c.get(proxy.url("/private")).send().await.expect("private");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(echo.hits(), hits);

    // proxy-body-size 1k.
    let r = c
        .post(proxy.url("/small"))
        .body(vec![b'x'; 2048])
        .send()
        .await
        .expect("small");
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let r = c
        .post(proxy.url("/small"))
        .body(vec![b'x'; 512])
        .send()
        .await
        .expect("small");
    assert_eq!(r.status(), StatusCode::OK);

    // force-ssl-redirect on an Ingress without TLS.
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = no_redirects
        .get(proxy.url("/secure?x=1"))
        .send()
        .await
        .expect("secure");
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    let location = r.headers()["location"].to_str().expect("location");
    assert!(
        location.starts_with("https://") && location.ends_with("/secure?x=1"),
        "{location}"
    );

    // auth-url: denied without credentials, allowed with them, X-User-Id copied.
    let hits = echo.hits();
    let r = c.get(proxy.url("/authed")).send().await.expect("authed");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(echo.hits(), hits);
    let echoed: Value = c
        .get(proxy.url("/authed"))
        .header("authorization", "Bearer good")
        .send()
        .await
        .expect("authed")
        .json()
        .await
        .expect("echo json");
    assert_eq!(echoed["headers"]["x-user-id"][0], "alice");

    // The snippet Ingress is not served at all.
    let r = c.get(proxy.url("/snippet")).send().await.expect("snippet");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
