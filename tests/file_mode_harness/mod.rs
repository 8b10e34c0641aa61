//! Runs the real `airgate` binary on loopback ports chosen by the OS, captures its
//! output, and offers tiny real backends. Shared by tests/file_mode*.rs, cli*.rs and
//! example*.rs.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

pub const BIN: &str = env!("CARGO_BIN_EXE_airgate");
const STARTUP: Duration = Duration::from_secs(20);

/// Lines an output stream produced so far, with a wake-up on each new line.
#[derive(Default, Clone)]
pub struct Lines {
    lines: Arc<Mutex<Vec<String>>>,
    notify: Arc<Notify>,
}

impl Lines {
    pub fn snapshot(&self) -> Vec<String> {
        self.lines.lock().expect("lines lock").clone()
    }

    pub fn joined(&self) -> String {
        self.snapshot().join("\n")
    }

    /// The first line (from `from` on) matching `pred`, waiting up to `timeout`.
    pub async fn wait_for(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<(usize, String)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            {
                let lines = self.lines.lock().expect("lines lock");
                if let Some((i, l)) = lines.iter().enumerate().skip(from).find(|(_, l)| pred(l)) {
                    return Some((i, l.clone()));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lines.lock().expect("lines lock").len()
    }

    fn spawn_reader(&self, stream: impl tokio::io::AsyncRead + Unpin + Send + 'static) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stream).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                me.lines.lock().expect("lines lock").push(line);
                me.notify.notify_waiters();
            }
        });
    }
}

/// A running `airgate serve`, killed when dropped.
pub struct Airgate {
    pub child: Child,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub stdout: Lines,
    pub stderr: Lines,
}

impl Airgate {
    /// `airgate serve --config <config>` on 127.0.0.1:0 ports, text logs.
    pub async fn serve(config: &Path, extra: &[&str]) -> Airgate {
        Self::try_serve(config, extra)
            .await
            .unwrap_or_else(|e| panic!("airgate did not start: {e}"))
    }

    pub async fn try_serve(config: &Path, extra: &[&str]) -> Result<Airgate, String> {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve").arg("--config").arg(config);
        for flag in ["--http-addr", "--https-addr", "--admin-addr"] {
            if !extra.contains(&flag) {
                cmd.args([flag, "127.0.0.1:0"]);
            }
        }
        cmd.args(["--worker-threads", "2"])
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("RUST_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, _) in std::env::vars() {
            if k.starts_with("AIRGATE_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().map_err(|e| format!("spawn {BIN}: {e}"))?;
        let stdout = Lines::default();
        let stderr = Lines::default();
        stdout.spawn_reader(child.stdout.take().expect("piped stdout"));
        stderr.spawn_reader(child.stderr.take().expect("piped stderr"));

        let re =
            regex::Regex::new(r#"listening http=([^\s"\\]+) https=([^\s"\\]+) admin=([^\s"\\]+)"#)
                .expect("valid regex");
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some((_, line)) = stderr
                .wait_for(0, Duration::from_millis(100), |l| re.is_match(l))
                .await
            {
                let caps = re.captures(&line).expect("matched");
                let addr = |i: usize| -> SocketAddr {
                    caps[i]
                        .trim_matches('"')
                        .parse()
                        .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"))
                };
                return Ok(Airgate {
                    http: addr(1),
                    https: addr(2),
                    admin: addr(3),
                    child,
                    stdout,
                    stderr,
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Let the readers catch the last lines.
                let _ = stderr
                    .wait_for(usize::MAX, Duration::from_millis(200), |_| false)
                    .await;
                return Err(format!(
                    "exited with {status}; stderr:\n{}",
                    stderr.joined()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no startup line in {STARTUP:?}; stderr:\n{}",
                    stderr.joined()
                ));
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().expect("child still running");
        let status = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {pid}");
    }

    /// Wait for exit, bounded.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

/// GET `url` until `pred(status, body)` holds, bounded by `timeout`. Returns the last
/// (status, body) seen and whether the predicate held.
pub async fn poll(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    pred: impl Fn(u16, &str) -> bool,
) -> (bool, u16, String) {
    let deadline = Instant::now() + timeout;
    let mut last = (0, String::new());
    for _ in 0..10_000 {
        if let Ok(resp) = client.get(url).send().await {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            if pred(status, &body) {
                return (true, status, body);
            }
            last = (status, body);
        }
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (false, last.0, last.1)
}

/// A real HTTP/1.1 backend on 127.0.0.1:0 answering `<name> <method> <path>` so tests
/// can see which backend got which request. Stops when dropped.
pub struct Backend {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start(name: &'static str) -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend addr");
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                while conns.try_join_next().is_some() {}
                conns.spawn(async move {
                    let svc = service_fn(move |req: hyper::Request<Incoming>| async move {
                        let body = format!("{name} {} {}", req.method(), req.uri());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Backend { addr, task }
    }
}

/// An AIRoute in namespace `ns` with one Prefix route per (path, url) pair.
pub fn airroute(ns: &str, name: &str, routes: &[(&str, String)]) -> String {
    let mut s = format!(
        "apiVersion: airgate.dev/v1alpha1\nkind: AIRoute\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  routes:\n"
    );
    for (path, url) in routes {
        s.push_str(&format!(
            "    - path: {path}\n      backend:\n        url: \"{url}\"\n"
        ));
    }
    s
}

/// Write `contents` to `path` the way editors do: a temporary file renamed over it.
pub fn write_atomically(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, contents).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over");
}

/// Value of a sample line `name{labels} value` (or `name value`) in Prometheus text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == series).then(|| v.parse().ok()).flatten()
    })
}
