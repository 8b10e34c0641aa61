//! The cluster admin's path, on a real kube-apiserver and etcd (started by
//! `e2e/harness/up.sh` into a temp dir, stopped by `down.sh` on drop):
//!
//! * `helm lint`, `helm template | kubectl apply --dry-run=server`, `helm install`;
//! * the chart's RBAC is least privilege (`kubectl auth can-i --as=<sa>`);
//! * `helm upgrade` with other values, `helm uninstall` leaves nothing cluster-wide;
//! * the controller binary, run as a local process with the chart's ServiceAccount
//!   token, watches, serves traffic and writes status without a single `forbidden`.
//!
//! There is no kubelet: the chart's pods never run, so the controller runs here
//! as a process under the same identity the pods would have.
//!
//! Run: `cargo test --test e2e_helm -- --nocapture`. The harness builds the
//! pinned binaries once into ~/.cache/airgate/bin (long the first time).
//! `AIRGATE_E2E_HARNESS` overrides the harness directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::time::Instant;

const RELEASE: &str = "ag";
const NS: &str = "airgate-system";
/// Object name prefix the chart gives release `ag`.
const FULLNAME: &str = "ag-airgate";
const SA: &str = "system:serviceaccount:airgate-system:ag-airgate";
/// Every external command is bounded by this.
const CMD_TIMEOUT: Duration = Duration::from_secs(120);

/// Each test starts its own control plane; on two shared cores they take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn run_serial(test: impl std::future::Future<Output = ()>) {
    let _turn = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(test);
}

fn repo() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

fn chart() -> String {
    repo().join("charts/airgate").display().to_string()
}

fn harness_dir() -> PathBuf {
    let dir = std::env::var_os("AIRGATE_E2E_HARNESS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("e2e/harness"));
    assert!(
        dir.join("up.sh").exists(),
        "no e2e harness at {} (set AIRGATE_E2E_HARNESS to the directory holding up.sh)",
        dir.display()
    );
    dir
}

/// A control plane from `up.sh`, torn down by `down.sh` when dropped (also on panic).
struct ControlPlane {
    env: BTreeMap<String, String>,
    statedir: PathBuf,
    // Removed after down.sh; holds the statedir and the test's own files.
    tmp: tempfile::TempDir,
}

impl ControlPlane {
    async fn up() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let statedir = tmp.path().join("cp");
        let mut cmd = Command::new(harness_dir().join("up.sh"));
        cmd.arg(&statedir)
            // The harness's watchdog tears the cluster down if this process dies
            // without running Drop (e.g. SIGKILL).
            .env("AIRGATE_E2E_OWNER_PID", std::process::id().to_string())
            .env("AIRGATE_E2E_MAX_LIFETIME", "1800");
        let out = output(cmd, Duration::from_secs(600)).await;
        // Built before checking the result so a half-started plane is still torn down.
        let mut cp = ControlPlane {
            env: BTreeMap::new(),
            statedir,
            tmp,
        };
        assert!(
            out.status.success(),
            "up.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cp.env = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        cp
    }

    fn var(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("up.sh did not print {key}"))
    }

    fn kubeconfig(&self) -> &str {
        self.var("KUBECONFIG")
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    async fn kubectl(&self, args: &[&str]) -> std::process::Output {
        self.kubectl_stdin(args, None).await
    }

    async fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        let mut cmd = Command::new(self.var("KUBECTL"));
        cmd.env("KUBECONFIG", self.kubeconfig())
            .arg("--request-timeout=30s")
            .args(args);
        match stdin {
            Some(input) => output_with_stdin(cmd, input, CMD_TIMEOUT).await,
            None => output(cmd, CMD_TIMEOUT).await,
        }
    }

    /// kubectl that must succeed; returns stdout.
    async fn k(&self, args: &[&str]) -> String {
        ok(
            &format!("kubectl {}", args.join(" ")),
            self.kubectl(args).await,
        )
    }

    async fn apply(&self, yaml: &str) {
        let out = self.kubectl_stdin(&["apply", "-f", "-"], Some(yaml)).await;
        ok("kubectl apply", out);
    }

    async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.k(&all).await).expect("kubectl -o json")
    }

    async fn helm(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(self.var("HELM"));
        cmd.env("KUBECONFIG", self.kubeconfig())
            // Helm keeps caches and config under HOME; keep them per test.
            .env("HELM_CACHE_HOME", self.dir().join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.dir().join("helm/config"))
            .env("HELM_DATA_HOME", self.dir().join("helm/data"))
            .args(args);
        output(cmd, CMD_TIMEOUT).await
    }

    async fn h(&self, args: &[&str]) -> String {
        ok(&format!("helm {}", args.join(" ")), self.helm(args).await)
    }

    /// `kubectl auth can-i ... --as=<the chart's ServiceAccount>` -> yes/no.
    async fn can_i(&self, args: &[&str]) -> bool {
        let mut all = vec!["auth", "can-i"];
        all.extend(args);
        let as_sa = format!("--as={SA}");
        all.push(&as_sa);
        let out = self.kubectl(&all).await;
        match String::from_utf8_lossy(&out.stdout).trim() {
            "yes" => true,
            "no" => false,
            other => panic!(
                "kubectl auth can-i {args:?}: unexpected answer {other:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// The chart's ServiceAccount as a kubeconfig: a bearer token from the
    /// TokenRequest API and the API server's CA, nothing else.
    async fn service_account_kubeconfig(&self) -> PathBuf {
        let token = self
            .k(&["create", "token", FULLNAME, "-n", NS, "--duration=1h"])
            .await;
        let ca = std::fs::read(self.var("CA_CERT")).expect("CA cert");
        let kubeconfig = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "e2e", "cluster": {
                "server": self.var("APISERVER_URL"),
                "certificate-authority-data": base64(&ca),
            }}],
            "users": [{"name": "airgate", "user": {"token": token.trim()}}],
            "contexts": [{"name": "airgate", "context": {"cluster": "e2e", "user": "airgate", "namespace": NS}}],
            "current-context": "airgate",
        });
        let path = self.dir().join("airgate-sa.kubeconfig");
        std::fs::write(&path, kubeconfig.to_string()).expect("write kubeconfig");
        path
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Synchronous on purpose: Drop may run while unwinding, outside the runtime.
        let status = std::process::Command::new("timeout")
            .arg("60")
            .arg(harness_dir().join("down.sh"))
            .arg(&self.statedir)
            .stdin(Stdio::null())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("down.sh {} failed: {status:?}", self.statedir.display());
        }
    }
}

async fn output(mut cmd: Command, limit: Duration) -> std::process::Output {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let what = format!("{cmd:?}");
    match tokio::time::timeout(limit, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("running {what}: {e}"),
        Err(_) => panic!("{what} took longer than {limit:?}"),
    }
}

async fn output_with_stdin(mut cmd: Command, input: &str, limit: Duration) -> std::process::Output {
    use tokio::io::AsyncWriteExt;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let what = format!("{cmd:?}");
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_owned();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(input.as_bytes()).await;
    });
    let out = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => panic!("running {what}: {e}"),
        Err(_) => panic!("{what} took longer than {limit:?}"),
    };
    let _ = writer.await;
    out
}

fn ok(what: &str, out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                s.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Poll `probe` until it returns Some, at most `limit`; the panic names `what`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    let mut last = String::new();
    for _ in 0..10_000 {
        match probe().await {
            Ok(v) => return v,
            Err(why) => last = why,
        }
        if Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{what}: not true within {limit:?}; last: {last}");
}

fn args_of(deploy: &Value) -> Vec<String> {
    deploy["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("container args")
        .iter()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect()
}

/// Names of the chart's cluster-scoped objects still present.
async fn cluster_scoped_leftovers(cp: &ControlPlane) -> Vec<String> {
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    let out = cp
        .k(&[
            "get",
            "clusterroles,clusterrolebindings,ingressclasses",
            "-l",
            &selector,
            "-o",
            "name",
        ])
        .await;
    out.lines().map(str::to_owned).collect()
}

#[test]
fn chart_lints_installs_least_privilege_upgrades_and_uninstalls_cleanly() {
    run_serial(async {
        let cp = ControlPlane::up().await;
        let chart = chart();

        // Lint with the defaults and with every optional template switched on.
        cp.h(&["lint", "--strict", &chart]).await;
        cp.h(&[
            "lint",
            "--strict",
            &chart,
            "--set",
            "watchNamespaces={team-a,team-b}",
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "ingressClass.isDefault=true",
            "--set",
            "trustedProxies={10.0.0.0/8}",
            "--set",
            "publishAddress={203.0.113.7}",
        ])
        .await;

        // Everything the chart renders is accepted by the API server's validation
        // (schemas, RBAC object shape, CRD structural schema), in both RBAC modes.
        for ns in [NS, "team-a", "team-b"] {
            cp.k(&["create", "namespace", ns]).await;
        }
        for extra in [&[][..], &["--set", "watchNamespaces={team-a,team-b}"][..]] {
            let mut args = vec!["template", RELEASE, &chart, "-n", NS, "--include-crds"];
            args.extend(extra);
            let rendered = cp.h(&args).await;
            let out = cp
                .kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], Some(&rendered))
                .await;
            ok("kubectl apply --dry-run=server (helm template)", out);
        }

        // Install. No --wait: there is no kubelet, the pods never start.
        cp.h(&[
            "install",
            RELEASE,
            &chart,
            "-n",
            NS,
            "--set",
            "replicaCount=1",
        ])
        .await;
        let deploy = cp.json(&["-n", NS, "get", "deployment", FULLNAME]).await;
        let pod = &deploy["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(deploy["spec"]["replicas"], 1);
        assert_eq!(pod["serviceAccountName"], FULLNAME);
        assert_eq!(pod["securityContext"]["runAsUser"], 65532);
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(
            c["securityContext"]["capabilities"]["drop"],
            serde_json::json!(["ALL"])
        );
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(c["livenessProbe"]["httpGet"]["port"], "admin");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
        // 5s preStop + 30s drain + 5s margin: SIGKILL never cuts a drain short.
        assert_eq!(pod["terminationGracePeriodSeconds"], 40);
        let args = args_of(&deploy);
        assert_eq!(args[0], "controller");
        for want in [
            "--shutdown-grace=30s",
            "--ingress-class=airgate",
            "--admin-addr=0.0.0.0:9090",
            "--election-namespace=airgate-system",
            "--publish-service=airgate-system/ag-airgate",
        ] {
            assert!(args.iter().any(|a| a == want), "{want} not in {args:?}");
        }
        let env: Vec<&str> = c["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(|e| e["name"].as_str())
            .collect();
        assert!(
            env.contains(&"POD_NAME") && env.contains(&"POD_NAMESPACE"),
            "{env:?}"
        );

        let svc = cp.json(&["-n", NS, "get", "service", FULLNAME]).await;
        assert_eq!(svc["spec"]["type"], "LoadBalancer");
        let ports: Vec<i64> = svc["spec"]["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .filter_map(|p| p["port"].as_i64())
            .collect();
        assert_eq!(ports, [80, 443]);
        cp.k(&["-n", NS, "get", "service", "ag-airgate-metrics"])
            .await;
        cp.k(&["-n", NS, "get", "serviceaccount", FULLNAME]).await;
        cp.k(&["-n", NS, "get", "poddisruptionbudget", FULLNAME])
            .await;
        cp.k(&["get", "crd", "airoutes.airgate.dev"]).await;
        let class = cp.json(&["get", "ingressclass", "airgate"]).await;
        assert_eq!(
            class["spec"]["controller"],
            "airgate.dev/ingress-controller"
        );
        assert!(
            class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"]
                .is_null(),
            "not the default class unless asked"
        );

        // Least privilege, as the API server's authorizer sees it.
        for read in [
            "ingresses.networking.k8s.io",
            "ingressclasses.networking.k8s.io",
            "airoutes.airgate.dev",
            "services",
            "endpointslices.discovery.k8s.io",
            "secrets",
        ] {
            for verb in ["list", "watch"] {
                assert!(cp.can_i(&[verb, read, "-A"]).await, "{verb} {read}");
            }
        }
        for (status_of, verb) in [
            ("ingresses.networking.k8s.io", "patch"),
            ("ingresses.networking.k8s.io", "update"),
            ("airoutes.airgate.dev", "patch"),
        ] {
            assert!(
                cp.can_i(&[verb, status_of, "--subresource=status", "-n", "default"])
                    .await,
                "{verb} {status_of}/status"
            );
        }
        assert!(cp.can_i(&["create", "events", "-n", "default"]).await);
        assert!(
            cp.can_i(&["patch", "events.events.k8s.io", "-n", "default"])
                .await
        );
        assert!(
            cp.can_i(&["create", "leases.coordination.k8s.io", "-n", NS])
                .await
        );
        assert!(
            cp.can_i(&[
                "update",
                "leases.coordination.k8s.io/airgate-leader",
                "-n",
                NS
            ])
            .await
        );
        for denied in [
            &["create", "secrets", "-n", "default"][..],
            &["update", "secrets", "-n", "default"],
            &["delete", "secrets", "-n", "default"],
            &["get", "pods", "-n", "default"],
            &["list", "pods", "-A"],
            &["update", "ingresses.networking.k8s.io", "-n", "default"],
            &["patch", "ingresses.networking.k8s.io", "-n", "default"],
            &["delete", "ingresses.networking.k8s.io", "-n", "default"],
            &["update", "airoutes.airgate.dev", "-n", "default"],
            &["create", "services", "-n", "default"],
            &["update", "endpointslices.discovery.k8s.io", "-n", "default"],
            &["create", "leases.coordination.k8s.io", "-n", "default"],
            &[
                "update",
                "leases.coordination.k8s.io/someone-else",
                "-n",
                NS,
            ],
            &["create", "clusterrolebindings.rbac.authorization.k8s.io"],
        ] {
            assert!(
                !cp.can_i(denied).await,
                "the ServiceAccount must not {denied:?}"
            );
        }

        // Upgrade to more replicas, two watched namespaces and the default class.
        cp.h(&[
            "upgrade",
            RELEASE,
            &chart,
            "-n",
            NS,
            "--set",
            "replicaCount=3",
            "--set",
            "watchNamespaces={team-a,team-b}",
            "--set",
            "ingressClass.isDefault=true",
        ])
        .await;
        let deploy = cp.json(&["-n", NS, "get", "deployment", FULLNAME]).await;
        assert_eq!(deploy["spec"]["replicas"], 3);
        let args = args_of(&deploy);
        assert!(
            args.iter().any(|a| a == "--watch-namespace=team-a,team-b"),
            "{args:?}"
        );
        let class = cp.json(&["get", "ingressclass", "airgate"]).await;
        assert_eq!(
            class["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"],
            "true"
        );
        // Rights moved from cluster-wide to the two namespaces.
        assert!(cp.can_i(&["list", "secrets", "-n", "team-a"]).await);
        assert!(
            cp.can_i(&["watch", "airoutes.airgate.dev", "-n", "team-b"])
                .await
        );
        assert!(
            cp.can_i(&[
                "patch",
                "ingresses.networking.k8s.io",
                "--subresource=status",
                "-n",
                "team-a"
            ])
            .await
        );
        assert!(!cp.can_i(&["list", "secrets", "-n", "default"]).await);
        assert!(!cp.can_i(&["list", "secrets", "-A"]).await);
        assert!(
            !cp.can_i(&["list", "ingresses.networking.k8s.io", "-n", "default"])
                .await
        );
        assert!(
            cp.can_i(&["list", "ingressclasses.networking.k8s.io"])
                .await
        );

        // Uninstall: nothing cluster-wide or namespaced is left but the CRD,
        // which Helm never deletes from crds/ (documented in docs/helm.md).
        cp.h(&["uninstall", RELEASE, "-n", NS, "--wait", "--timeout=60s"])
            .await;
        let left = cluster_scoped_leftovers(&cp).await;
        assert!(left.is_empty(), "left after uninstall: {left:?}");
        for ns in [NS, "team-a", "team-b"] {
            let out = cp
                .k(&[
                    "-n",
                    ns,
                    "get",
                    "deployments,services,serviceaccounts,roles,rolebindings,poddisruptionbudgets",
                    "-l",
                    &format!("app.kubernetes.io/instance={RELEASE}"),
                    "-o",
                    "name",
                ])
                .await;
            assert!(out.trim().is_empty(), "left in {ns} after uninstall: {out}");
        }
        assert!(
            !cp.can_i(&["list", "ingresses.networking.k8s.io", "-n", "team-a"])
                .await
        );
        cp.k(&["get", "crd", "airoutes.airgate.dev"]).await;
    });
}

/// A backend that answers every request with what it saw.
async fn start_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    use http_body_util::Full;
    use hyper::body::Bytes;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("backend addr");
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let host = req
                            .headers()
                            .get(hyper::header::HOST)
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let body = format!("backend saw {} {}", host, req.uri().path());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

/// The controller process; killed when dropped.
struct Controller {
    child: Child,
    log: PathBuf,
}

impl Controller {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// `listening http=A https=B admin=C` from the controller's log.
fn listening(log: &str) -> Option<(SocketAddr, SocketAddr)> {
    let line = log.lines().find(|l| l.contains("listening http="))?;
    let field = |name: &str| -> Option<SocketAddr> {
        let start = line.find(&format!("{name}="))? + name.len() + 1;
        let rest = &line[start..];
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ':'))
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    Some((field("http")?, field("admin")?))
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

#[test]
fn controller_with_the_charts_service_account_watches_serves_and_writes_status() {
    run_serial(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cp = ControlPlane::up().await;
        let chart = chart();
        cp.k(&["create", "namespace", NS]).await;
        cp.h(&[
            "install",
            RELEASE,
            &chart,
            "-n",
            NS,
            "--set",
            "replicaCount=1",
        ])
        .await;

        let (backend, _backend_task) = start_backend().await;
        let port = backend.port();
        cp.k(&["create", "namespace", "ai"]).await;
        // EndpointSlices may not hold loopback addresses (API validation), so the
        // Service reaches the local backend as ExternalName `localhost`.
        cp.apply(&format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: ai}}
spec:
  type: ExternalName
  externalName: localhost
  ports: [{{name: http, port: {port}}}]
---
apiVersion: airgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: llm, namespace: ai}}
spec:
  ingressClassName: airgate
  hosts: ["ai.airgate.test"]
  routes:
    - path: /v1/
      backend: {{service: {{name: echo, port: {port}}}}}
    - path: /direct/
      backend: {{url: "http://127.0.0.1:{port}"}}
---
apiVersion: airgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: broken, namespace: ai}}
spec:
  ingressClassName: airgate
  hosts: ["broken.airgate.test"]
  routes:
    - path: /
      backend: {{service: {{name: no-such-service, port: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: web, namespace: ai}}
spec:
  ingressClassName: airgate
  rules:
    - host: web.airgate.test
      http:
        paths:
          - path: /
            pathType: Prefix
            backend: {{service: {{name: echo, port: {{number: {port}}}}}}}
"#
        ))
        .await;

        // The controller under the chart's identity and nothing more.
        let kubeconfig = cp.service_account_kubeconfig().await;
        let log = cp.dir().join("controller.log");
        let log_file = std::fs::File::create(&log).expect("controller log");
        let child = Command::new(env!("CARGO_BIN_EXE_airgate"))
            .args([
                "controller",
                "--http-addr=127.0.0.1:0",
                "--https-addr=127.0.0.1:0",
                "--admin-addr=127.0.0.1:0",
                "--publish-address=127.0.0.1",
                "--log-format=text",
            ])
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAME", "airgate-e2e-helm")
            .env("POD_NAMESPACE", NS)
            .env("RUST_LOG", "info")
            .env_remove("AIRGATE_WATCH_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log fd"))
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn airgate controller");
        let mut ctl = Controller { child, log };

        let (http, admin) = eventually("controller listening", Duration::from_secs(30), || {
            let status = ctl.child.try_wait();
            let log = ctl.log();
            async move {
                if let Ok(Some(status)) = status {
                    return Err(format!("controller exited ({status}):\n{log}"));
                }
                listening(&log).ok_or_else(|| log.clone())
            }
        })
        .await;

        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");

        // Ready only after every watch synced: proves list/watch on all kinds.
        eventually("/readyz 200", Duration::from_secs(60), || {
            let client = client.clone();
            async move {
                let r = client
                    .get(format!("http://{admin}/readyz"))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if r.status() == 200 {
                    Ok(())
                } else {
                    Err(format!("readyz {}", r.status()))
                }
            }
        })
        .await;

        // Traffic through the Service and through a fixed URL, and via the Ingress.
        for (host, path) in [
            ("ai.airgate.test", "/v1/models"),
            ("ai.airgate.test", "/direct/ping"),
            ("web.airgate.test", "/hello"),
        ] {
            let body = eventually(
                &format!("200 for {host}{path}"),
                Duration::from_secs(30),
                || {
                    let client = client.clone();
                    async move {
                        let r = client
                            .get(format!("http://{http}{path}"))
                            .header("host", host)
                            .send()
                            .await
                            .map_err(|e| e.to_string())?;
                        let status = r.status();
                        let body = r.text().await.map_err(|e| e.to_string())?;
                        if status == 200 {
                            Ok(body)
                        } else {
                            Err(format!("{status}: {body}"))
                        }
                    }
                },
            )
            .await;
            assert!(body.starts_with("backend saw "), "{host}{path}: {body}");
            assert!(body.ends_with(path), "{host}{path}: {body}");
        }

        // Status writes (leader only): conditions on AIRoutes, address on the Ingress.
        eventually("AIRoute llm Ready", Duration::from_secs(30), || async {
            let r = cp.json(&["-n", "ai", "get", "airoute", "llm"]).await;
            match condition(&r, "Ready") {
                Some(c) if c["status"] == "True" => Ok(()),
                _ => Err(r["status"].to_string()),
            }
        })
        .await;
        let broken = eventually(
            "AIRoute broken ResolvedRefs=False",
            Duration::from_secs(30),
            || async {
                let r = cp.json(&["-n", "ai", "get", "airoute", "broken"]).await;
                match condition(&r, "ResolvedRefs") {
                    Some(c) if c["status"] == "False" => Ok(c.clone()),
                    _ => Err(r["status"].to_string()),
                }
            },
        )
        .await;
        assert!(
            broken["message"]
                .as_str()
                .unwrap_or("")
                .contains("no-such-service"),
            "the condition names the missing Service: {broken}"
        );
        eventually(
            "Ingress status address",
            Duration::from_secs(30),
            || async {
                let ing = cp.json(&["-n", "ai", "get", "ingress", "web"]).await;
                let lb = &ing["status"]["loadBalancer"]["ingress"][0];
                if lb["ip"] == "127.0.0.1" {
                    Ok(())
                } else {
                    Err(ing["status"].to_string())
                }
            },
        )
        .await;
        eventually(
            "a Warning Event about the broken AIRoute",
            Duration::from_secs(30),
            || async {
                let events = cp
                    .json(&[
                        "-n",
                        "ai",
                        "get",
                        "events",
                        "--field-selector",
                        "involvedObject.name=broken,type=Warning",
                    ])
                    .await;
                match events["items"].as_array() {
                    Some(items) if !items.is_empty() => Ok(()),
                    _ => Err("no events".to_string()),
                }
            },
        )
        .await;
        let lease = cp.json(&["-n", NS, "get", "lease", "airgate-leader"]).await;
        assert_eq!(lease["spec"]["holderIdentity"], "airgate-e2e-helm");

        let log = ctl.log();
        // kube reports RBAC denials as `reason: "Forbidden", code: 403`; a bare
        // "403" would also match a random port such as 127.0.0.1:40315.
        for word in ["forbidden", "Forbidden", "code: 403"] {
            assert!(
                !log.contains(word),
                "the controller hit RBAC ({word}):\n{log}"
            );
        }
        let _ = ctl.child.start_kill();
    });
}
