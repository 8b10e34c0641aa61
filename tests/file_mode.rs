//! File mode end to end: the real binary serving manifests from a directory.
mod file_mode_harness;

use std::time::{Duration, Instant};

use file_mode_harness::{Airgate, Backend, airroute, client, metric, poll, write_atomically};

const BAD_ROUTE: &str = r#"apiVersion: airgate.dev/v1alpha1
kind: AIRoute
metadata:
  name: broken
  namespace: ai
spec:
  routes:
    - path: /broken/
      backend: {url: "http://127.0.0.1:9"}
      websocket: maybe
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_route_serves_while_bad_manifest_is_reported() {
    let backend = Backend::start("llm").await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("good.yaml"),
        airroute(
            "ai",
            "stack",
            &[("/llm/", format!("http://{}", backend.addr))],
        ),
    )
    .expect("write good");
    std::fs::write(dir.path().join("bad.yaml"), BAD_ROUTE).expect("write bad");

    let ag = Airgate::serve(dir.path(), &[]).await;
    // The bad document is named by object, file#document and field.
    let log = ag.stderr.joined();
    let bad_line = log
        .lines()
        .find(|l| l.contains("AIRoute ai/broken"))
        .unwrap_or_else(|| panic!("bad manifest not reported:\n{log}"));
    assert!(bad_line.contains("bad.yaml#1"), "{bad_line}");
    assert!(bad_line.contains("spec.routes[0].websocket"), "{bad_line}");
    assert!(bad_line.contains("ERROR"), "{bad_line}");

    let c = client();
    let resp = c
        .get(ag.url("/llm/v1/models"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body"), "llm GET /llm/v1/models");
    // The broken route was left out, not half-served.
    let resp = c.get(ag.url("/broken/x")).send().await.expect("request");
    assert_eq!(resp.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_file_is_served_within_a_second() {
    let a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("routes.yaml");
    std::fs::write(
        &file,
        airroute("default", "r", &[("/a/", format!("http://{}", a.addr))]),
    )
    .expect("write");
    let ag = Airgate::serve(dir.path(), &[]).await;
    let c = client();
    let (ok, status, body) =
        poll(&c, &ag.url("/a/1"), Duration::from_secs(5), |s, _| s == 200).await;
    assert!(ok, "initial route not served: {status} {body}");

    let from = ag.stderr.len();
    let changed = Instant::now();
    write_atomically(
        &file,
        &airroute(
            "default",
            "r",
            &[
                ("/a/", format!("http://{}", a.addr)),
                ("/b/", format!("http://{}", b.addr)),
            ],
        ),
    );
    let (ok, status, body) = poll(&c, &ag.url("/b/2"), Duration::from_secs(1), |s, body| {
        s == 200 && body == "b GET /b/2"
    })
    .await;
    let took = changed.elapsed();
    assert!(ok, "new route not served after {took:?}: {status} {body}");
    assert!(took < Duration::from_secs(1), "reload took {took:?}");
    assert!(
        ag.stderr
            .wait_for(from, Duration::from_secs(1), |l| l
                .contains("configuration loaded generation=2"))
            .await
            .is_some(),
        "{}",
        ag.stderr.joined()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_is_recorded_and_unreadable_config_keeps_last_good() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).expect("mkdir");
    let file = conf.join("routes.yaml");
    std::fs::write(
        &file,
        airroute("default", "r", &[("/a/", "http://127.0.0.1:9".into())]),
    )
    .expect("write");
    let ag = Airgate::serve(&conf, &[]).await;
    let c = client();
    let metrics = |c: reqwest::Client, url: String| async move {
        c.get(url)
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("body")
    };
    let text = metrics(c.clone(), ag.admin_url("/metrics")).await;
    assert_eq!(
        metric(&text, "airgate_config_generation"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "airgate_config_reloads_total{result=\"success\"}"),
        Some(1.0)
    );

    // An edit bumps the generation within a second.
    write_atomically(
        &file,
        &airroute("default", "r", &[("/b/", "http://127.0.0.1:9".into())]),
    );
    let (ok, _, text) = poll(
        &c,
        &ag.admin_url("/metrics"),
        Duration::from_secs(1),
        |_, t| metric(t, "airgate_config_generation") == Some(2.0),
    )
    .await;
    assert!(ok, "generation did not reach 2:\n{text}");
    assert!(metric(&text, "airgate_config_reload_duration_seconds_count").unwrap_or(0.0) >= 2.0);

    // Saving the same bytes again publishes nothing new.
    write_atomically(
        &file,
        &airroute("default", "r", &[("/b/", "http://127.0.0.1:9".into())]),
    );

    // Removing the whole directory: keep serving the last good snapshot and stay ready.
    let from = ag.stderr.len();
    std::fs::remove_dir_all(&conf).expect("rm config dir");
    let line = ag
        .stderr
        .wait_for(from, Duration::from_secs(35), |l| {
            l.contains("still serving the last good one")
        })
        .await;
    assert!(line.is_some(), "{}", ag.stderr.joined());
    let text = metrics(c.clone(), ag.admin_url("/metrics")).await;
    assert_eq!(
        metric(&text, "airgate_config_generation"),
        Some(2.0),
        "{text}"
    );
    assert!(metric(&text, "airgate_config_reloads_total{result=\"error\"}").unwrap_or(0.0) >= 1.0);
    let ready = c.get(ag.admin_url("/readyz")).send().await.expect("readyz");
    assert_eq!(ready.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_report_health_readiness_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("bad.yaml"), BAD_ROUTE).expect("write");
    let ag = Airgate::serve(dir.path(), &[]).await;
    let c = client();
    let health = c
        .get(ag.admin_url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let ready = c.get(ag.admin_url("/readyz")).send().await.expect("readyz");
    assert_eq!(
        ready.status(),
        200,
        "ready once the first config is published"
    );
    let resp = c
        .get(ag.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/plain; version=0.0.4")
    );
    let text = resp.text().await.expect("body");
    assert_eq!(
        metric(&text, "airgate_translation_errors"),
        Some(1.0),
        "{text}"
    );
    assert!(text.contains("airgate_build_info{version=\""), "{text}");
    let missing = c.get(ag.admin_url("/nope")).send().await.expect("404");
    assert_eq!(missing.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("r.yaml"),
        airroute("default", "r", &[("/a/", "http://127.0.0.1:9".into())]),
    )
    .expect("write");
    for sig in ["TERM", "INT"] {
        let mut ag = Airgate::serve(dir.path(), &[]).await;
        ag.signal(sig);
        let status = ag
            .wait_exit(Duration::from_secs(10))
            .await
            .expect("exits within 10s");
        assert!(
            status.success(),
            "SIG{sig}: {status}\n{}",
            ag.stderr.joined()
        );
        assert!(
            ag.stderr
                .wait_for(0, Duration::from_secs(1), |l| l.contains("stopped"))
                .await
                .is_some(),
            "{}",
            ag.stderr.joined()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_a_missing_config_path_and_a_busy_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = Airgate::try_serve(&dir.path().join("missing"), &[])
        .await
        .err()
        .expect("must not start");
    assert!(err.contains("exited with exit status: 1"), "{err}");
    assert!(err.contains("missing: No such file or directory"), "{err}");

    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").to_string();
    std::fs::write(dir.path().join("r.yaml"), "").expect("write");
    let err = Airgate::try_serve(dir.path(), &["--admin-addr", &port])
        .await
        .err()
        .expect("must not start on a busy port");
    assert!(
        err.contains(&format!("cannot listen on admin address {port}")),
        "{err}"
    );
}

/// Access-log lines, text then JSON, for a proxied request and a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lines_in_text_and_json() {
    let backend = Backend::start("llm").await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("r.yaml"),
        airroute(
            "ai",
            "stack",
            &[("/llm/", format!("http://{}", backend.addr))],
        ),
    )
    .expect("write");
    let c = client();

    let ag = Airgate::serve(dir.path(), &[]).await;
    let resp = c
        .get(ag.url("/llm/v1/models?q=1"))
        .header("user-agent", "access-test/1.0")
        .header("x-request-id", "rid-text-1")
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let (_, line) = ag
        .stdout
        .wait_for(0, Duration::from_secs(5), |l| l.contains("/llm/v1/models"))
        .await
        .unwrap_or_else(|| panic!("no access-log line; stdout:\n{}", ag.stdout.joined()));
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.contains("\"GET /llm/v1/models") && line.contains(" HTTP/1.1\" 200 "),
        "{line}"
    );
    assert!(line.contains("\"access-test/1.0\""), "{line}");
    assert!(
        line.contains(&format!("upstream={}", backend.addr)),
        "{line}"
    );
    assert!(line.contains("rid=rid-text-1"), "{line}");
    drop(ag);

    let ag = Airgate::serve(dir.path(), &["--log-format", "json"]).await;
    let resp = c
        .get(ag.url("/nothing-here"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 404);
    let (_, line) = ag
        .stdout
        .wait_for(0, Duration::from_secs(5), |l| l.contains("/nothing-here"))
        .await
        .unwrap_or_else(|| panic!("no access-log line; stdout:\n{}", ag.stdout.joined()));
    let v: serde_json::Value = serde_json::from_str(&line).expect("JSON access line");
    assert_eq!(v["status"], 404);
    assert_eq!(v["method"], "GET");
    assert_eq!(v["client_ip"], "127.0.0.1");
    assert!(v["upstream_addr"].is_null(), "{line}");
    assert!(
        v["request_id"].as_str().is_some_and(|r| !r.is_empty()),
        "{line}"
    );
    // Diagnostics stay off stdout in JSON mode too: every stdout line is an access line.
    for l in ag.stdout.snapshot() {
        let v: serde_json::Value = serde_json::from_str(&l).expect("JSON");
        assert!(v.get("status").is_some(), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_to_a_file_and_off() {
    let backend = Backend::start("llm").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("conf");
    std::fs::create_dir(&conf).expect("mkdir");
    std::fs::write(
        conf.join("r.yaml"),
        airroute(
            "ai",
            "stack",
            &[("/llm/", format!("http://{}", backend.addr))],
        ),
    )
    .expect("write");
    let log_path = dir.path().join("access.log");
    let c = client();
    let mut ag = Airgate::serve(&conf, &["--access-log", log_path.to_str().expect("utf8")]).await;
    let resp = c.get(ag.url("/llm/file")).send().await.expect("request");
    assert_eq!(resp.status(), 200);
    ag.signal("TERM");
    ag.wait_exit(Duration::from_secs(10)).await.expect("exit");
    // Shutdown flushes the writer.
    let text = std::fs::read_to_string(&log_path).expect("access log file");
    assert!(text.contains("\"GET /llm/file HTTP/1.1\" 200"), "{text}");
    assert!(ag.stdout.snapshot().is_empty());

    let ag = Airgate::serve(&conf, &["--access-log", "off"]).await;
    let resp = c.get(ag.url("/llm/off")).send().await.expect("request");
    assert_eq!(resp.status(), 200);
    let line = ag
        .stdout
        .wait_for(0, Duration::from_millis(300), |_| true)
        .await;
    assert!(line.is_none(), "{line:?}");
}

/// `--config` naming one file: editors replace it by rename, which a watch on the file
/// itself would lose after the first save; every save must still be picked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_file_config_survives_repeated_rename_saves() {
    let a = Backend::start("a").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("airgate.yaml");
    std::fs::write(
        &file,
        airroute("default", "r", &[("/v0/", format!("http://{}", a.addr))]),
    )
    .expect("write");
    let ag = Airgate::serve(&file, &[]).await;
    let c = client();
    let mut worst = Duration::ZERO;
    for i in 1..=3 {
        let path = format!("/v{i}/");
        let changed = Instant::now();
        write_atomically(
            &file,
            &airroute("default", "r", &[(&path, format!("http://{}", a.addr))]),
        );
        let url = ag.url(&format!("{path}x"));
        let (ok, status, body) = poll(&c, &url, Duration::from_secs(1), |s, _| s == 200).await;
        let took = changed.elapsed();
        assert!(ok, "save {i} not served after {took:?}: {status} {body}");
        worst = worst.max(took);
        // The previous version of the route is gone: one snapshot, swapped whole.
        let old = c
            .get(ag.url(&format!("/v{}/x", i - 1)))
            .send()
            .await
            .expect("request");
        assert_eq!(old.status(), 404);
    }
    println!("worst change-to-served latency: {worst:?}");
}

/// Per-route metrics follow the configuration: a route that stays across a reload keeps
/// counting where it was, and a deleted route's series leave `/metrics`, as ingress-nginx
/// drops a deleted Ingress's metrics.
#[tokio::test]
async fn route_metrics_follow_the_routes_across_reloads() {
    let backend = Backend::start("m").await;
    let url = format!("http://{}", backend.addr);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("routes.yaml");
    std::fs::write(
        &file,
        airroute(
            "metrics",
            "m",
            &[("/kept/", url.clone()), ("/gone/", url.clone())],
        ),
    )
    .expect("write");
    let ag = Airgate::serve(dir.path(), &[]).await;
    let c = client();
    for path in ["/kept/x", "/gone/x"] {
        let resp = c.get(ag.url(path)).send().await.expect("request");
        assert_eq!(resp.status(), 200, "{path}");
        resp.bytes().await.expect("body");
    }
    // Counted when the response body ends, which may trail the client by a moment.
    let counts = |text: &str| -> Vec<(String, f64)> {
        text.lines()
            .filter_map(|l| l.strip_prefix("airgate_requests_total{route=\"airroute/metrics/m/"))
            .filter_map(|l| {
                let (labels, value) = l.rsplit_once(' ')?;
                let (route, status) = labels.split_once("\",")?;
                let value: f64 = value.parse().ok()?;
                (status == "status=\"200\"}").then(|| (route.to_string(), value))
            })
            .collect()
    };
    let metrics_url = ag.admin_url("/metrics");
    let (ok, _, text) = poll(&c, &metrics_url, Duration::from_secs(5), |_, t| {
        counts(t).len() == 2 && counts(t).iter().all(|(_, n)| *n == 1.0)
    })
    .await;
    assert!(ok, "both routes should have counted one request:\n{text}");

    write_atomically(&file, &airroute("metrics", "m", &[("/kept/", url)]));
    let (ok, status, _) = poll(&c, &ag.url("/gone/x"), Duration::from_secs(5), |s, _| {
        s == 404
    })
    .await;
    assert!(ok, "the deleted route still answered: {status}");
    // A scrape between the reload and the kept route's next request: the kept route
    // is still listed (the new snapshot holds its metrics), the deleted one is not.
    let text = c
        .get(&metrics_url)
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("body");
    assert_eq!(counts(&text).len(), 1, "{text}");
    assert_eq!(counts(&text)[0].1, 1.0, "{text}");
    let resp = c.get(ag.url("/kept/x")).send().await.expect("request");
    assert_eq!(resp.status(), 200);
    resp.bytes().await.expect("body");
    let (ok, _, text) = poll(&c, &metrics_url, Duration::from_secs(5), |_, t| {
        let counts = counts(t);
        counts.len() == 1 && counts[0].1 == 2.0
    })
    .await;
    assert!(
        ok,
        "the kept route should count on (2) and the deleted one be gone:\n{text}"
    );
}
