//! The pieces the end-to-end scenarios run on: a real control plane (etcd +
//! kube-apiserver from `e2e/harness`), kubectl, the real `airgate controller` binary, and
//! local HTTP backends on loopback. Every process is reaped: the control plane by a Drop
//! guard running `down.sh` (and by the harness watchdog if this process dies), the
//! controller by `kill_on_drop`, the backends by aborting their tasks.
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

pub type R<T = ()> = Result<T, String>;

/// `ensure!(cond, "message {}", x)`: fail the scenario with a message.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(format!($($arg)+));
        }
    };
}

/// Poll `f` every 50 ms until it succeeds or `within` passes; the error names what was
/// awaited and the last failure.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut f: F) -> R<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = R<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        let attempt = tokio::time::timeout(within, f()).await;
        match attempt {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if Instant::now() >= deadline => {
                return Err(format!("{what}: not true within {within:?}; last: {e}"));
            }
            Err(_) => return Err(format!("{what}: one attempt took longer than {within:?}")),
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn harness_dir() -> PathBuf {
    std::env::var_os("AIRGATE_E2E_HARNESS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("CARGO_MANIFEST_DIR")
                .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
                .join("e2e/harness")
        })
}

fn parse_env(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// A running control plane. Dropping it runs `down.sh`.
pub struct Cluster {
    pub statedir: PathBuf,
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    harness: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    /// Build (cached) and start the control plane. Panics with the script's output when
    /// that fails: the suite must not pass without a cluster.
    pub fn start() -> Cluster {
        let harness = harness_dir();
        assert!(
            harness.join("up.sh").exists(),
            "e2e harness not found at {} (set AIRGATE_E2E_HARNESS)",
            harness.display()
        );
        let build = std::process::Command::new(harness.join("build.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("running e2e/harness/build.sh");
        assert!(
            build.status.success(),
            "e2e/harness/build.sh failed ({}); the e2e suite needs kube-apiserver, etcd and kubectl",
            build.status
        );
        let tools = parse_env(&String::from_utf8_lossy(&build.stdout));
        let tmp = tempfile::Builder::new()
            .prefix("airgate-e2e-")
            .tempdir()
            .expect("temp dir");
        let statedir = tmp.path().join("cluster");
        let up = std::process::Command::new(harness.join("up.sh"))
            .arg(&statedir)
            // The harness watchdog tears the cluster down if this process dies without
            // running Drop (SIGKILL, abort).
            .env("AIRGATE_E2E_OWNER_PID", std::process::id().to_string())
            .env("AIRGATE_E2E_MAX_LIFETIME", "3600")
            .stderr(Stdio::inherit())
            .output()
            .expect("running e2e/harness/up.sh");
        let cluster = Cluster {
            kubeconfig: statedir.join("kubeconfig"),
            kubectl: tools
                .get("KUBECTL")
                .map(PathBuf::from)
                .expect("build.sh prints KUBECTL="),
            statedir,
            harness,
            _tmp: tmp,
        };
        assert!(
            up.status.success(),
            "e2e/harness/up.sh failed ({}): {}",
            up.status,
            String::from_utf8_lossy(&up.stdout)
        );
        cluster
    }

    /// Run kubectl with `stdin`, bounded to 30 s. Returns (success, stdout, stderr).
    pub async fn kubectl_raw(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> R<(bool, String, String)> {
        let mut cmd = Command::new(&self.kubectl);
        cmd.args(["--request-timeout=10s"])
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| format!("spawning kubectl: {e}"))?;
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().ok_or("kubectl stdin")?;
            pipe.write_all(input.as_bytes())
                .await
                .map_err(|e| format!("writing to kubectl: {e}"))?;
            drop(pipe);
        }
        let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
            .await
            .map_err(|_| format!("kubectl {args:?} took longer than 30s"))?
            .map_err(|e| format!("kubectl {args:?}: {e}"))?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// kubectl that must succeed; returns stdout.
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> R<String> {
        let (ok, out, err) = self.kubectl_raw(args, stdin).await?;
        ensure!(ok, "kubectl {args:?} failed: {err}{out}");
        Ok(out)
    }

    /// `kubectl apply` of a JSON manifest (or a `List`).
    pub async fn apply(&self, manifest: &serde_json::Value) -> R {
        self.kubectl(&["apply", "-f", "-"], Some(&manifest.to_string()))
            .await
            .map(|_| ())
    }

    /// The object as JSON (`kubectl get -o json`).
    pub async fn get_json(&self, kind: &str, ns: &str, name: &str) -> R<serde_json::Value> {
        let out = self
            .kubectl(&["get", kind, "-n", ns, name, "-o", "json"], None)
            .await?;
        serde_json::from_str(&out).map_err(|e| format!("parsing kubectl output: {e}"))
    }

    pub async fn restart_apiserver(&self) -> R {
        let out = Command::new(self.harness.join("restart-apiserver.sh"))
            .arg(&self.statedir)
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(120), out)
            .await
            .map_err(|_| "restart-apiserver.sh took longer than 120s".to_string())?
            .map_err(|e| format!("restart-apiserver.sh: {e}"))?;
        ensure!(
            out.status.success(),
            "restart-apiserver.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let status = std::process::Command::new(self.harness.join("down.sh"))
            .arg(&self.statedir)
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "e2e: down.sh {} failed: {status:?}",
                self.statedir.display()
            );
        }
    }
}

/// The `airgate controller` process and what it printed.
pub struct Controller {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
    child: Child,
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip to the end of the CSI sequence.
            for n in chars.by_ref() {
                if n.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn addr_after(line: &str, key: &str) -> Option<SocketAddr> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

impl Controller {
    /// Start the real binary on loopback ports chosen by the kernel and wait for its
    /// `listening ...` line (bounded).
    pub async fn start(cluster: &Cluster, extra: &[&str]) -> Controller {
        let mut child = Command::new(env!("CARGO_BIN_EXE_airgate"))
            .arg("controller")
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--https-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
                "--shutdown-grace",
                "2s",
            ])
            .args(extra)
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info,airgate=debug")
            .env_remove("AIRGATE_HTTP_ADDR")
            .env_remove("AIRGATE_HTTPS_ADDR")
            .env_remove("AIRGATE_ADMIN_ADDR")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning airgate controller");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(64);
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let logs = logs.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let line = strip_ansi(&line);
                    eprintln!("[airgate] {line}");
                    let _ = tx.try_send(line.clone());
                    if let Ok(mut l) = logs.lock() {
                        l.push(line);
                    }
                }
            });
        }
        drop(tx);
        let listening = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = rx.recv().await {
                if line.contains("listening http=") {
                    return Some(line);
                }
            }
            None
        })
        .await;
        let line = match listening {
            Ok(Some(l)) => l,
            other => {
                let status = child.try_wait();
                panic!(
                    "airgate controller did not print its listening line within 30s ({other:?}); exit: {status:?}"
                );
            }
        };
        let parse =
            |k: &str| addr_after(&line, k).unwrap_or_else(|| panic!("no {k} address in {line:?}"));
        Controller {
            http: parse("http="),
            https: parse("https="),
            admin: parse("admin="),
            logs,
            child,
        }
    }

    pub fn logs_contain(&self, needle: &str) -> bool {
        self.logs
            .lock()
            .map(|l| l.iter().any(|line| line.contains(needle)))
            .unwrap_or(false)
    }

    /// True while the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM and wait (bounded) for a clean exit.
    pub async fn terminate(mut self) -> R<std::process::ExitStatus> {
        let pid = self.child.id().ok_or("controller already exited")?;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .map_err(|e| format!("kill: {e}"))?;
        ensure!(status.success(), "kill -TERM {pid} failed");
        tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .map_err(|_| "controller did not exit within 15s of SIGTERM".to_string())?
            .map_err(|e| format!("waiting for controller: {e}"))
    }
}

/// A local HTTP backend that answers every request with `backend=<name> path=<path>`.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start(name: &str, bind: SocketAddr) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let label: Arc<str> = name.into();
        let task = tokio::spawn({
            let label = label.clone();
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let label = label.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                            let body = format!("backend={} path={}", label, req.uri().path());
                            async move {
                                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                                    Bytes::from(body),
                                )))
                            }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            }
        });
        Ok(Backend {
            name: name.to_string(),
            addr,
            task,
        })
    }
}

/// An HTTP client for the proxy; host names are resolved to the proxy's loopback address.
pub fn client(hosts: &[&str], roots: Vec<reqwest::Certificate>) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .tls_certs_only(roots);
    for h in hosts {
        // The port comes from the URL; only the IP is taken from here.
        b = b.resolve(h, SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    b.build().expect("reqwest client")
}

/// GET and return (status, body).
pub async fn get(client: &reqwest::Client, url: &str) -> R<(u16, String)> {
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e:#}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .text()
        .await
        .map_err(|e| format!("GET {url} body: {e}"))?;
    Ok((status, body))
}
