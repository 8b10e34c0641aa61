//! The scenarios, in the order `main` runs them. Each uses its own object names and host
//! names so that one failing does not disturb the next.
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::ensure;
use crate::support::{Backend, Cluster, Controller, R, client, eventually, get};

const NS: &str = "e2e";
const PUBLISH_ADDRESS: &str = "127.0.0.1";
const HOSTS: &[&str] = &[
    "web.e2e.test",
    "api.e2e.test",
    "change.e2e.test",
    "spread.e2e.test",
    "ghost.e2e.test",
    "foreign.e2e.test",
    "sentinel.e2e.test",
    "mover.e2e.test",
    "tls.e2e.test",
    "steady.e2e.test",
    "after.e2e.test",
];

pub struct Env {
    pub cluster: Cluster,
    pub controller: Controller,
    pub a: Backend,
    pub b: Backend,
    pub http: reqwest::Client,
}

impl Env {
    /// Start the cluster, the backends, the base objects, and the controller (before the
    /// CRD exists, on purpose).
    pub async fn setup() -> Env {
        let cluster = tokio::task::spawn_blocking(Cluster::start)
            .await
            .expect("cluster start task");
        let (a, b) = two_backends().await;
        cluster
            .apply(&json!({"apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
                {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                 "metadata": {"name": "airgate"},
                 "spec": {"controller": "airgate.dev/ingress-controller"}},
            ]}))
            .await
            .expect("creating the namespace and IngressClass");
        cluster
            .apply(&service("echo", &[&a]))
            .await
            .expect("creating Service echo");
        let controller = Controller::start(&cluster, &["--publish-address", PUBLISH_ADDRESS]).await;
        let http = client(HOSTS, Vec::new());
        Env {
            cluster,
            controller,
            a,
            b,
            http,
        }
    }

    pub async fn shutdown(mut self) -> R {
        ensure!(
            self.controller.is_running(),
            "the controller exited during the run"
        );
        let status = self.controller.terminate().await?;
        ensure!(
            status.success(),
            "controller exited with {status} after SIGTERM"
        );
        Ok(())
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.controller.http.port())
    }

    /// Wait until `host`+`path` answers 200 from `backend`.
    async fn served_by(&self, host: &str, path: &str, backend: &str, within: Duration) -> R {
        let url = self.url(host, path);
        eventually(&format!("{url} served by {backend}"), within, || async {
            let (status, body) = get(&self.http, &url).await?;
            ensure!(
                status == 200 && body.starts_with(&format!("backend={backend} ")),
                "{status} {body}"
            );
            Ok(())
        })
        .await
    }

    async fn answers(&self, host: &str, path: &str, want: u16, within: Duration) -> R {
        let url = self.url(host, path);
        eventually(&format!("{url} answers {want}"), within, || async {
            let (status, body) = get(&self.http, &url).await?;
            ensure!(status == want, "{status} {body}");
            Ok(())
        })
        .await
    }
}

async fn two_backends() -> (Backend, Backend) {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let a = Backend::start("a", loopback)
        .await
        .expect("binding backend a");
    let b = Backend::start("b", loopback)
        .await
        .expect("binding backend b");
    (a, b)
}

/// A Service on port 80 (target port named `http`) and one EndpointSlice per backend
/// (`<name>-<index>`), as the EndpointSlice controller makes when pods differ in port.
/// The API server refuses loopback IPs in EndpointSlices, so each backend is published as
/// an FQDN under `.localhost`, which airgate maps to 127.0.0.1 (RFC 6761 §6.3).
fn service(name: &str, backends: &[&Backend]) -> Value {
    let mut items = vec![json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]}})];
    for (i, b) in backends.iter().enumerate() {
        items.push(
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-{}", i + 1), "namespace": NS,
                         "labels": {"kubernetes.io/service-name": name}},
            "addressType": "FQDN",
            "ports": [{"name": "http", "port": b.addr.port(), "protocol": "TCP"}],
            "endpoints": [{"addresses": [format!("backend-{}.localhost", b.name)],
                           "conditions": {"ready": true}}]}),
        );
    }
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

fn ingress(name: &str, class: &str, host: &str, path: &str, svc: &str) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
           "metadata": {"name": name, "namespace": NS},
           "spec": {"ingressClassName": class, "rules": [{"host": host, "http": {"paths": [
               {"path": path, "pathType": "Prefix",
                "backend": {"service": {"name": svc, "port": {"number": 80}}}}]}}]}})
}

fn airroute(name: &str, host: &str, path: &str, svc: &str) -> Value {
    json!({"apiVersion": "airgate.dev/v1alpha1", "kind": "AIRoute",
           "metadata": {"name": name, "namespace": NS},
           "spec": {"ingressClassName": "airgate", "hosts": [host], "routes": [
               {"path": path, "backend": {"service": {"name": svc, "port": 80}}}]}})
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

// ------------------------------------------------------------------------- scenarios

/// Started before the CRD exists: it becomes ready (Ingresses are still served) and tells
/// the operator how to install the CRD.
pub async fn ready_and_explains_missing_crd(env: Arc<Env>) -> R {
    let admin = format!("http://{}/readyz", env.controller.admin);
    let plain = client(&[], Vec::new());
    eventually(
        "/readyz 200 after the initial sync",
        Duration::from_secs(30),
        || async {
            let (status, body) = get(&plain, &admin).await?;
            ensure!(status == 200, "{status} {body}");
            Ok(())
        },
    )
    .await?;
    eventually(
        "a log line explaining the missing CRD",
        Duration::from_secs(10),
        || async {
            ensure!(
                env.controller.logs_contain("AIRoute CRD")
                    && env
                        .controller
                        .logs_contain("airgate crd | kubectl apply -f -"),
                "no such line yet"
            );
            Ok(())
        },
    )
    .await
}

/// `airgate crd | kubectl apply -f -`, then wait for the CRD to be Established.
async fn wait_established(cluster: &Cluster) -> R {
    cluster
        .kubectl(
            &[
                "wait",
                "--for=condition=Established",
                "crd/airoutes.airgate.dev",
                "--timeout=30s",
            ],
            None,
        )
        .await
        .map(|_| ())
}

/// First a schema-less AIRoute CRD and an AIRoute that is not a valid AIRoute (as an
/// object written before a CRD upgrade would be), then the real CRD from
/// `airgate crd | kubectl replace -f -`. The API server keeps serving the stored bad
/// object; the controller must skip it and keep watching.
pub async fn install_crd(env: Arc<Env>) -> R {
    let loose = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "airoutes.airgate.dev"},
        "spec": {"group": "airgate.dev", "scope": "Namespaced",
            "names": {"kind": "AIRoute", "plural": "airoutes", "singular": "airoute",
                      "shortNames": ["air"], "listKind": "AIRouteList"},
            "versions": [{"name": "v1alpha1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true}}}]}});
    env.cluster
        .kubectl(&["create", "-f", "-"], Some(&loose.to_string()))
        .await?;
    wait_established(&env.cluster).await?;
    env.cluster
        .kubectl(
            &["create", "-f", "-"],
            Some(
                &json!({"apiVersion": "airgate.dev/v1alpha1", "kind": "AIRoute",
                    "metadata": {"name": "broken", "namespace": NS},
                    "spec": {"routes": "not-a-list"}})
                .to_string(),
            ),
        )
        .await?;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_airgate"))
        .arg("crd")
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("airgate crd: {e}"))?;
    ensure!(out.status.success(), "airgate crd failed");
    let yaml = String::from_utf8_lossy(&out.stdout).into_owned();
    env.cluster
        .kubectl(&["replace", "-f", "-"], Some(&yaml))
        .await?;
    wait_established(&env.cluster).await
}

/// The bad AIRoute stored under the loose CRD was logged, counted and skipped.
pub async fn malformed_airroute_is_skipped(env: Arc<Env>) -> R {
    let plain = client(&[], Vec::new());
    let metrics = format!("http://{}/metrics", env.controller.admin);
    eventually(
        "the malformed AIRoute counted as invalid",
        Duration::from_secs(10),
        || async {
            let (_, body) = get(&plain, &metrics).await?;
            let n: u64 = body
                .lines()
                .find_map(|l| l.strip_prefix("airgate_watch_events_total{kind=\"invalid\"} "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            ensure!(
                n >= 1,
                "airgate_watch_events_total{{kind=\"invalid\"}} is {n}"
            );
            ensure!(
                env.controller.logs_contain("skipping AIRoute")
                    && env.controller.logs_contain("broken"),
                "no log line naming the skipped AIRoute"
            );
            Ok(())
        },
    )
    .await?;
    // Remove it so later scenarios run against a clean store.
    env.cluster
        .kubectl(&["delete", "air", "-n", NS, "broken", "--wait=false"], None)
        .await
        .map(|_| ())
}

pub async fn ingress_is_served(env: Arc<Env>) -> R {
    env.cluster
        .apply(&ingress("web", "airgate", "web.e2e.test", "/", "echo"))
        .await?;
    env.served_by("web.e2e.test", "/hello", "a", Duration::from_secs(10))
        .await
}

/// The CRD was installed after the controller started: its AIRoute watch must pick it up.
pub async fn airroute_is_served(env: Arc<Env>) -> R {
    env.cluster
        .apply(&airroute("api", "api.e2e.test", "/v1", "echo"))
        .await?;
    env.served_by("api.e2e.test", "/v1/models", "a", Duration::from_secs(15))
        .await?;
    env.answers("api.e2e.test", "/other", 404, Duration::from_secs(2))
        .await
}

pub async fn route_change_is_served_within_a_second(env: Arc<Env>) -> R {
    env.cluster
        .apply(&airroute("change", "change.e2e.test", "/v1", "echo"))
        .await?;
    env.served_by("change.e2e.test", "/v1/x", "a", Duration::from_secs(10))
        .await?;
    env.cluster
        .apply(&airroute("change", "change.e2e.test", "/v2", "echo"))
        .await?;
    let applied = Instant::now();
    env.served_by("change.e2e.test", "/v2/x", "a", Duration::from_secs(1))
        .await?;
    eprintln!(
        "e2e: route change served {:?} after kubectl apply returned",
        applied.elapsed()
    );
    env.answers("change.e2e.test", "/v1/x", 404, Duration::from_secs(1))
        .await
}

pub async fn deleted_route_answers_404(env: Arc<Env>) -> R {
    env.cluster
        .kubectl(&["delete", "air", "-n", NS, "change", "--wait=false"], None)
        .await?;
    env.answers("change.e2e.test", "/v2/x", 404, Duration::from_secs(2))
        .await
}

pub async fn scaled_endpoints_share_traffic(env: Arc<Env>) -> R {
    env.cluster.apply(&service("spread", &[&env.a])).await?;
    env.cluster
        .apply(&ingress(
            "spread",
            "airgate",
            "spread.e2e.test",
            "/",
            "spread",
        ))
        .await?;
    env.served_by("spread.e2e.test", "/", "a", Duration::from_secs(10))
        .await?;
    env.cluster
        .apply(&service("spread", &[&env.a, &env.b]))
        .await?;
    env.served_by("spread.e2e.test", "/", "b", Duration::from_secs(5))
        .await?;
    let url = env.url("spread.e2e.test", "/");
    let (mut a, mut b) = (0, 0);
    for _ in 0..40 {
        let (status, body) = get(&env.http, &url).await?;
        ensure!(status == 200, "{status} {body}");
        if body.starts_with("backend=a ") {
            a += 1;
        } else if body.starts_with("backend=b ") {
            b += 1;
        }
    }
    ensure!(
        a >= 10 && b >= 10,
        "traffic not spread over both endpoints: a={a} b={b}"
    );
    Ok(())
}

pub async fn missing_service_sets_resolved_refs_false(env: Arc<Env>) -> R {
    env.cluster
        .apply(&airroute("ghost", "ghost.e2e.test", "/", "no-such-service"))
        .await?;
    let cluster = &env.cluster;
    eventually(
        "ResolvedRefs=False naming the Service",
        Duration::from_secs(15),
        || async {
            let obj = cluster.get_json("air", NS, "ghost").await?;
            let c = condition(&obj, "ResolvedRefs").ok_or("no ResolvedRefs condition")?;
            ensure!(c["status"] == "False", "ResolvedRefs is {c}");
            ensure!(
                c["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("no-such-service"),
                "message does not name the Service: {c}"
            );
            let ready = condition(&obj, "Ready").ok_or("no Ready condition")?;
            ensure!(ready["status"] == "False", "Ready is {ready}");
            Ok(())
        },
    )
    .await?;
    // One Warning Event for the problem, not one per reconcile.
    let events = || async {
        let out = cluster
            .kubectl(
                &[
                    "get",
                    "events",
                    "-n",
                    NS,
                    "--field-selector",
                    "involvedObject.name=ghost,type=Warning",
                    "-o",
                    "json",
                ],
                None,
            )
            .await?;
        let v: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
        Ok::<usize, String>(v["items"].as_array().map(Vec::len).unwrap_or(0))
    };
    eventually(
        "a Warning Event about ghost",
        Duration::from_secs(10),
        || async {
            let n = events().await?;
            ensure!(n >= 1, "no Warning Event yet");
            Ok(())
        },
    )
    .await?;
    let before = events().await?;
    // Force more reconciles, then check no new Event appeared for the same problem.
    env.cluster
        .apply(&ingress(
            "nudge",
            "airgate",
            "ghost.e2e.test",
            "/nudge",
            "echo",
        ))
        .await?;
    env.served_by("ghost.e2e.test", "/nudge", "a", Duration::from_secs(10))
        .await?;
    let after = events().await?;
    ensure!(
        after == before,
        "Warning Events repeated on reconcile: {before} -> {after}"
    );
    Ok(())
}

pub async fn invalid_airroute_is_refused_by_the_api_server(env: Arc<Env>) -> R {
    let mut bad_rate = airroute("bad-rate", "bad.e2e.test", "/", "echo");
    bad_rate["spec"]["rateZones"] = json!([{"name": "llm", "rate": "fast"}]);
    let (ok, _, err) = env
        .cluster
        .kubectl_raw(&["apply", "-f", "-"], Some(&bad_rate.to_string()))
        .await?;
    ensure!(
        !ok,
        "an AIRoute with rate \"fast\" was accepted by the API server"
    );
    ensure!(
        err.contains("is invalid") && err.contains("rate"),
        "the refusal does not name the field: {err}"
    );

    let mut bad_zone = airroute("bad-zone", "bad.e2e.test", "/", "echo");
    bad_zone["spec"]["rateZones"] = json!([{"name": "llm", "rate": "10r/s"}]);
    bad_zone["spec"]["routes"][0]["rateLimit"] = json!({"zone": "undeclared"});
    let (ok, _, err) = env
        .cluster
        .kubectl_raw(&["apply", "-f", "-"], Some(&bad_zone.to_string()))
        .await?;
    ensure!(
        !ok,
        "an AIRoute naming an undeclared zone was accepted by the API server"
    );
    ensure!(
        err.contains("is invalid") && err.contains("zone"),
        "the refusal does not explain the zone: {err}"
    );
    Ok(())
}

pub async fn other_class_ingress_is_ignored(env: Arc<Env>) -> R {
    env.cluster
        .apply(&ingress(
            "foreign",
            "other",
            "foreign.e2e.test",
            "/",
            "echo",
        ))
        .await?;
    // Same watch, applied later: once the sentinel is served, the foreign one was seen.
    env.cluster
        .apply(&ingress(
            "sentinel",
            "airgate",
            "sentinel.e2e.test",
            "/",
            "echo",
        ))
        .await?;
    env.served_by("sentinel.e2e.test", "/", "a", Duration::from_secs(10))
        .await?;
    let (status, body) = get(&env.http, &env.url("foreign.e2e.test", "/")).await?;
    ensure!(
        status == 404,
        "Ingress of class other was served: {status} {body}"
    );
    let obj = env.cluster.get_json("ingress", NS, "foreign").await?;
    ensure!(
        obj.pointer("/status/loadBalancer/ingress").is_none(),
        "status written on an Ingress of another class: {}",
        obj["status"]
    );
    Ok(())
}

/// Moving an Ingress to another class takes it out of service here and removes the
/// address airgate published on it (what external-dns would follow).
pub async fn ingress_moved_to_another_class_gives_back_its_status(env: Arc<Env>) -> R {
    let cluster = &env.cluster;
    cluster
        .apply(&ingress("mover", "airgate", "mover.e2e.test", "/", "echo"))
        .await?;
    env.served_by("mover.e2e.test", "/", "a", Duration::from_secs(10))
        .await?;
    address_published(cluster, "mover").await?;
    cluster
        .apply(&ingress("mover", "other", "mover.e2e.test", "/", "echo"))
        .await?;
    eventually(
        "the moved Ingress unserved and its status given back",
        Duration::from_secs(15),
        || async {
            let (status, body) = get(&env.http, &env.url("mover.e2e.test", "/")).await?;
            ensure!(status == 404, "still served: {status} {body}");
            let obj = cluster.get_json("ingress", NS, "mover").await?;
            ensure!(
                obj.pointer("/status/loadBalancer/ingress").is_none(),
                "status still names airgate: {}",
                obj["status"]
            );
            Ok(())
        },
    )
    .await
}

pub async fn tls_secret_added_later_is_served(env: Arc<Env>) -> R {
    let mut route = airroute("secure", "tls.e2e.test", "/", "echo");
    route["spec"]["tls"] = json!({"secretName": "late-cert"});
    env.cluster.apply(&route).await?;
    let cert = rcgen::generate_simple_self_signed(vec!["tls.e2e.test".to_string()])
        .map_err(|e| e.to_string())?;
    let pem = cert.cert.pem();
    let key = cert.signing_key.serialize_pem();
    let roots = vec![reqwest::Certificate::from_pem(pem.as_bytes()).map_err(|e| e.to_string())?];
    let tls_client = client(&["tls.e2e.test"], roots);
    let url = format!("https://tls.e2e.test:{}/", env.controller.https.port());
    // The Secret does not exist yet: no certificate of ours can be served.
    if let Ok((status, _)) = get(&tls_client, &url).await {
        return Err(format!(
            "TLS handshake with our CA succeeded before the Secret existed ({status})"
        ));
    }
    use base64_engine::encode;
    env.cluster
        .apply(&json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                       "metadata": {"name": "late-cert", "namespace": NS},
                       "data": {"tls.crt": encode(pem.as_bytes()), "tls.key": encode(key.as_bytes())}}))
        .await?;
    eventually(
        "the new certificate served by SNI",
        Duration::from_secs(10),
        || async {
            let (status, body) = get(&tls_client, &url).await?;
            ensure!(
                status == 200 && body.starts_with("backend=a "),
                "{status} {body}"
            );
            Ok(())
        },
    )
    .await
}

/// Wait until the Ingress `name` shows `--publish-address` in `status.loadBalancer`.
async fn address_published(cluster: &Cluster, name: &str) -> R {
    eventually(
        &format!("Ingress {name} status.loadBalancer from --publish-address"),
        Duration::from_secs(15),
        || async {
            let obj = cluster.get_json("ingress", NS, name).await?;
            let ip = obj.pointer("/status/loadBalancer/ingress/0/ip");
            ensure!(
                ip == Some(&json!(PUBLISH_ADDRESS)),
                "status is {}",
                obj["status"]
            );
            Ok(())
        },
    )
    .await
}

pub async fn status_is_written(env: Arc<Env>) -> R {
    let cluster = &env.cluster;
    address_published(cluster, "web").await?;
    eventually(
        "AIRoute api Accepted, ResolvedRefs and Ready",
        Duration::from_secs(15),
        || async {
            // kubectl hides managedFields unless asked.
            let out = cluster
                .kubectl(
                    &[
                        "get",
                        "air",
                        "-n",
                        NS,
                        "api",
                        "-o",
                        "json",
                        "--show-managed-fields",
                    ],
                    None,
                )
                .await?;
            let obj: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
            for t in ["Accepted", "ResolvedRefs", "Ready"] {
                let c = condition(&obj, t).ok_or(format!("no {t} condition: {}", obj["status"]))?;
                ensure!(c["status"] == "True", "{t} is {c}");
            }
            ensure!(
                obj.pointer("/status/observedGeneration") == obj.pointer("/metadata/generation"),
                "observedGeneration {} != generation {}",
                obj["status"]["observedGeneration"],
                obj["metadata"]["generation"]
            );
            let managers = obj
                .pointer("/metadata/managedFields")
                .cloned()
                .unwrap_or_default();
            ensure!(
                managers.as_array().is_some_and(|m| m
                    .iter()
                    .any(|f| f["manager"] == "airgate" && f["subresource"] == "status")),
                "status not written by field manager airgate: {managers}"
            );
            Ok(())
        },
    )
    .await
}

pub async fn apiserver_restart_does_not_interrupt_traffic(env: Arc<Env>) -> R {
    env.cluster
        .apply(&ingress(
            "steady",
            "airgate",
            "steady.e2e.test",
            "/",
            "echo",
        ))
        .await?;
    env.served_by("steady.e2e.test", "/", "a", Duration::from_secs(10))
        .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let traffic = tokio::spawn({
        let (stop, ok, http, url) = (
            stop.clone(),
            ok.clone(),
            env.http.clone(),
            env.url("steady.e2e.test", "/"),
        );
        async move {
            let deadline = Instant::now() + Duration::from_secs(150);
            while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
                match get(&http, &url).await {
                    Ok((200, body)) if body.starts_with("backend=a ") => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => return Err(format!("request failed during the restart: {other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        }
    });
    let restarted = env.cluster.restart_apiserver().await;
    // Traffic while the watches reconnect, then a change must be picked up again.
    let after = async {
        env.cluster
            .apply(&ingress("after", "airgate", "after.e2e.test", "/", "echo"))
            .await?;
        env.served_by("after.e2e.test", "/", "a", Duration::from_secs(20))
            .await
    }
    .await;
    stop.store(true, Ordering::Release);
    let traffic = traffic.await.map_err(|e| format!("traffic task: {e}"))?;
    restarted?;
    traffic?;
    after?;
    let served = ok.load(Ordering::Relaxed);
    ensure!(
        served >= 20,
        "only {served} requests completed during the restart"
    );
    eprintln!("e2e: {served} requests served without error across the API server restart");
    Ok(())
}

/// Standard base64 without pulling a crate in for one use.
mod base64_engine {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    pub fn encode(data: &[u8]) -> String {
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn encodes_like_rfc4648() {
        assert_eq!(encode(b""), "");
        assert_eq!(encode(b"f"), "Zg==");
        assert_eq!(encode(b"fo"), "Zm8=");
        assert_eq!(encode(b"foo"), "Zm9v");
        assert_eq!(encode(b"foobar"), "Zm9vYmFy");
    }
}

async fn leader_gauge(http: &reqwest::Client, c: &Controller) -> R<i64> {
    let (status, body) = get(http, &format!("http://{}/metrics", c.admin)).await?;
    ensure!(status == 200, "/metrics answered {status}");
    body.lines()
        .find_map(|l| l.strip_prefix("airgate_leader "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "no airgate_leader in /metrics".to_string())
}

/// Two more replicas on their own Lease: both serve traffic, exactly one leads, and when
/// the leader stops (releasing the Lease) the other takes over within seconds.
pub async fn replicas_elect_one_status_writer(env: Arc<Env>) -> R {
    let args = [
        "--election-id",
        "e2e-election",
        "--publish-address",
        PUBLISH_ADDRESS,
    ];
    let first = Controller::start(&env.cluster, &args).await;
    let plain = client(&[], Vec::new());
    eventually(
        "the first replica leads",
        Duration::from_secs(15),
        || async {
            ensure!(leader_gauge(&plain, &first).await? == 1, "not leader yet");
            Ok(())
        },
    )
    .await?;
    let second = Controller::start(&env.cluster, &args).await;
    let web = client(HOSTS, Vec::new());
    let url = format!("http://web.e2e.test:{}/", second.http.port());
    eventually(
        "the follower serves traffic",
        Duration::from_secs(15),
        || async {
            let (status, body) = get(&web, &url).await?;
            ensure!(
                status == 200 && body.starts_with("backend=a "),
                "{status} {body}"
            );
            Ok(())
        },
    )
    .await?;
    ensure!(
        leader_gauge(&plain, &second).await? == 0,
        "two replicas lead the same Lease"
    );
    let lease = env
        .cluster
        .get_json("lease", "default", "e2e-election")
        .await?;
    ensure!(
        lease["spec"]["holderIdentity"]
            .as_str()
            .is_some_and(|h| !h.is_empty()),
        "Lease has no holder: {lease}"
    );
    let stopped = first.terminate().await?;
    ensure!(
        stopped.success(),
        "leader exited with {stopped} after SIGTERM"
    );
    // Released on shutdown, so no need to wait out the 15 s lease.
    eventually(
        "the follower takes over",
        Duration::from_secs(8),
        || async {
            ensure!(leader_gauge(&plain, &second).await? == 1, "not leader yet");
            Ok(())
        },
    )
    .await?;
    let stopped = second.terminate().await?;
    ensure!(stopped.success(), "second replica exited with {stopped}");
    Ok(())
}
