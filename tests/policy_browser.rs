//! CORS as a real browser enforces it: headless Chromium loads a page from origin A
//! (`tests/browser/cors.html` on 127.0.0.1:<p1>) whose script POSTs JSON to the proxy
//! (127.0.0.1:<p2>, another origin) on a route that allows origin A and on one that
//! does not, and writes what happened into the DOM, which Chromium dumps.
//!
//! Needs Debian's `chromium` package (or `AIRGATE_CHROMIUM=/path/to/chrome`). The test
//! fails, rather than skips, when the browser is missing: a skipped test proves nothing.
mod policy_support;

use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use airgate::config::RoutePolicy;
use policy_support::{ConfigBuilder, Proxy, Server, cors};
use tokio::process::Command;

const PAGE: &str = include_str!("browser/cors.html");

fn chromium() -> String {
    std::env::var("AIRGATE_CHROMIUM").unwrap_or_else(|_| "chromium".to_string())
}

fn cors_route(origin: &str) -> RoutePolicy {
    RoutePolicy {
        cors: Some(Arc::new(cors(&[origin]))),
        ..Default::default()
    }
}

/// The text of `<pre id="{id}">` in the dumped DOM.
fn element_text<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let open = format!("<pre id=\"{id}\">");
    let start = dom.find(&open)? + open.len();
    let len = dom[start..].find("</pre>")?;
    Some(&dom[start..start + len])
}

#[tokio::test]
async fn headless_chromium_accepts_the_allowed_origin_and_blocks_the_other() {
    // The page server must exist before the proxy so the route can name its origin,
    // and the page must name the proxy, so the HTML is filled in afterwards.
    let html: Arc<OnceLock<String>> = Arc::default();
    let page_html = html.clone();
    let page = Server::start(move |_| {
        (
            200,
            vec![("content-type", "text/html; charset=utf-8".to_string())],
            page_html.get().cloned().unwrap_or_default(),
            None,
        )
    })
    .await;
    let page_origin = format!("http://127.0.0.1:{}", page.addr.port());

    let backend = Server::backend().await;
    let config = ConfigBuilder::default()
        .route("/allowed", backend.addr, cors_route(&page_origin))
        .route(
            "/refused",
            backend.addr,
            cors_route("https://app.example.com"),
        )
        .build();
    let proxy = Proxy::start(config).await;
    let filled = PAGE
        .replace("__ALLOWED_URL__", &proxy.url("/allowed/v1/embeddings"))
        .replace("__REFUSED_URL__", &proxy.url("/refused/v1/embeddings"));
    html.set(filled).expect("page set once");

    let profile = tempfile::tempdir().expect("profile dir");
    let mut command = Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-proxy-server",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("{page_origin}/"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().unwrap_or_else(|e| {
        panic!(
            "cannot start {}: {e}; install Debian's `chromium` package or set AIRGATE_CHROMIUM",
            chromium()
        )
    });
    let output = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("chromium finished within 90 s")
        .expect("chromium output");
    let dom = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let context = format!("DOM:\n{dom}\nstderr (tail):\n{}", tail(&stderr, 2000));

    assert_eq!(
        element_text(&dom, "allowed"),
        Some("OK 200 hello from backend"),
        "the browser accepts the allowed origin's response\n{context}"
    );
    assert_eq!(
        element_text(&dom, "refused"),
        Some("BLOCKED TypeError"),
        "the browser blocks the refused origin\n{context}"
    );
    let posts_to_refused = backend
        .seen()
        .iter()
        .filter(|s| s.method == "POST" && s.uri.starts_with("/refused"))
        .count();
    assert_eq!(
        posts_to_refused, 0,
        "the failed preflight stopped the real request"
    );
    assert_eq!(
        backend.seen().iter().filter(|s| s.method == "POST").count(),
        1,
        "only the allowed POST reached the backend"
    );
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
