//! Translation tests: manifests as users write them -> Config -> `find_route`.
use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::config::{
    Backend, DEFAULT_MAX_BODY_SIZE, Endpoints, PathMatch, PathRewrite, Route, Timeouts,
    UpstreamProtocol, ZoneKey,
};

/// Parse multi-document YAML as a user would `kubectl apply` it.
pub(crate) fn objects(yaml: &str) -> Objects {
    let mut o = Objects::default();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v = serde_yaml::Value::deserialize(doc).expect("yaml");
        if v.is_null() {
            continue;
        }
        let kind = v["kind"].as_str().expect("kind").to_string();
        match kind.as_str() {
            "Ingress" => o
                .ingresses
                .push(Arc::new(serde_yaml::from_value(v).expect("Ingress"))),
            "IngressClass" => o
                .ingress_classes
                .push(Arc::new(serde_yaml::from_value(v).expect("IngressClass"))),
            "AIRoute" => o
                .airroutes
                .push(Arc::new(serde_yaml::from_value(v).expect("AIRoute"))),
            "Service" => o
                .services
                .push(Arc::new(serde_yaml::from_value(v).expect("Service"))),
            "EndpointSlice" => o
                .endpoint_slices
                .push(Arc::new(serde_yaml::from_value(v).expect("EndpointSlice"))),
            "Secret" => o
                .secrets
                .push(Arc::new(serde_yaml::from_value(v).expect("Secret"))),
            k => panic!("unexpected kind {k}"),
        }
    }
    o
}

use serde::Deserialize;

fn run(yaml: &str) -> Translation {
    translate(&objects(yaml), &Options::default())
}

/// A Service `ns/name` with port 80 named `http`, and an EndpointSlice with one ready
/// endpoint at `ip:8080`.
fn svc(ns: &str, name: &str, ip: &str) -> String {
    format!(
        r#"
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-abc
  namespace: {ns}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
  - addresses: ["{ip}"]
    conditions: {{ready: true}}
"#
    )
}

fn route<'a>(t: &'a Translation, host: &str, path: &str) -> Option<&'a Route> {
    t.config.find_route(host, path).map(|r| &**r)
}

fn route_name(t: &Translation, host: &str, path: &str) -> Option<String> {
    route(t, host, path).map(|r| r.name.to_string())
}

fn addrs(r: &Route) -> Vec<SocketAddr> {
    match &r.backend {
        Backend::Upstream(u) => match &u.endpoints {
            Endpoints::Static(a) => a.clone(),
            e => panic!("unexpected endpoints {e:?}"),
        },
        b => panic!("unexpected backend {b:?}"),
    }
}

fn has_diag(t: &Translation, reason: &str, field: &str) -> bool {
    t.diagnostics
        .iter()
        .any(|d| d.reason == reason && d.field == field)
}

fn ingress_paths(paths: &[(&str, &str, &str)]) -> String {
    // One Ingress per path so each route has a distinct backend service to check.
    let mut y = String::new();
    for (i, (ty, path, service)) in paths.iter().enumerate() {
        y.push_str(&format!(
            r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: ing{i}, namespace: web}}
spec:
  rules:
    - host: docs.example.com
      http:
        paths:
          - path: "{path}"
            pathType: {ty}
            backend: {{service: {{name: {service}, port: {{number: 80}}}}}}
"#
        ));
        y.push_str(&svc("web", service, &format!("10.0.0.{}", i + 1)));
    }
    y
}

/// Every example of the path-matching table in the Kubernetes Ingress documentation.
#[test]
fn kubernetes_docs_path_table() {
    // (paths as (type, path, service), request path, expected service or None)
    type Case<'a> = (&'a [(&'a str, &'a str, &'a str)], &'a str, Option<&'a str>);
    let cases: &[Case<'_>] = &[
        (&[("Prefix", "/", "root")], "/anything/at/all", Some("root")),
        (&[("Exact", "/foo", "foo")], "/foo", Some("foo")),
        (&[("Exact", "/foo", "foo")], "/bar", None),
        (&[("Exact", "/foo", "foo")], "/foo/", None),
        (&[("Exact", "/foo/", "foo")], "/foo", None),
        (&[("Prefix", "/foo", "foo")], "/foo", Some("foo")),
        (&[("Prefix", "/foo", "foo")], "/foo/", Some("foo")),
        (&[("Prefix", "/foo/", "foo")], "/foo", Some("foo")),
        (&[("Prefix", "/foo/", "foo")], "/foo/", Some("foo")),
        (&[("Prefix", "/aaa/bb", "bb")], "/aaa/bbb", None),
        (&[("Prefix", "/aaa/bbb", "bbb")], "/aaa/bbb", Some("bbb")),
        (&[("Prefix", "/aaa/bbb/", "bbb")], "/aaa/bbb", Some("bbb")),
        (&[("Prefix", "/aaa/bbb", "bbb")], "/aaa/bbb/", Some("bbb")),
        (
            &[("Prefix", "/aaa/bbb", "bbb")],
            "/aaa/bbb/ccc",
            Some("bbb"),
        ),
        (&[("Prefix", "/aaa/bbb", "bbb")], "/aaa/bbbxyz", None),
        (
            &[("Prefix", "/", "root"), ("Prefix", "/aaa", "aaa")],
            "/aaa/ccc",
            Some("aaa"),
        ),
        (
            &[
                ("Prefix", "/", "root"),
                ("Prefix", "/aaa", "aaa"),
                ("Prefix", "/aaa/bbb", "bbb"),
            ],
            "/aaa/bbb",
            Some("bbb"),
        ),
        (
            &[
                ("Prefix", "/", "root"),
                ("Prefix", "/aaa", "aaa"),
                ("Prefix", "/aaa/bbb", "bbb"),
            ],
            "/ccc",
            Some("root"),
        ),
        (&[("Prefix", "/aaa", "aaa")], "/ccc", None),
        (
            &[("Prefix", "/foo", "prefix"), ("Exact", "/foo", "exact")],
            "/foo",
            Some("exact"),
        ),
        // ImplementationSpecific behaves as Prefix.
        (
            &[("ImplementationSpecific", "/aaa", "aaa")],
            "/aaa/x",
            Some("aaa"),
        ),
        (&[("ImplementationSpecific", "/aaa", "aaa")], "/aaax", None),
    ];
    for (paths, request, expected) in cases {
        let t = run(&ingress_paths(paths));
        assert!(
            t.diagnostics.is_empty(),
            "{paths:?}: unexpected diagnostics {:?}",
            t.diagnostics
        );
        let got = route(&t, "docs.example.com", request).map(|r| match &r.backend {
            Backend::Upstream(u) => u.name.split(':').next().unwrap_or("").to_string(),
            b => panic!("{b:?}"),
        });
        let expected = expected.map(|s| format!("web/{s}"));
        assert_eq!(got, expected, "paths {paths:?}, request {request}");
    }
}

#[test]
fn wildcard_hosts_match_exactly_one_label() {
    let y = format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: wild, namespace: web}}
spec:
  rules:
    - host: "*.example.com"
      http:
        paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: a, port: {{number: 80}}}}}}}}]
    - host: exact.example.com
      http:
        paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: b, port: {{number: 80}}}}}}}}]
{}{}"#,
        svc("web", "a", "10.0.0.1"),
        svc("web", "b", "10.0.0.2")
    );
    let t = run(&y);
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    assert_eq!(
        route_name(&t, "foo.example.com", "/x").as_deref(),
        Some("ingress/web/wild/*.example.com/")
    );
    assert_eq!(
        route_name(&t, "exact.example.com", "/").as_deref(),
        Some("ingress/web/wild/exact.example.com/")
    );
    assert!(route(&t, "example.com", "/").is_none());
    assert!(route(&t, "a.b.example.com", "/").is_none());
}

#[test]
fn rule_without_host_serves_any_host_and_default_backend_catches_the_rest() {
    let y = format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: mixed, namespace: web}}
spec:
  defaultBackend: {{service: {{name: fallback, port: {{number: 80}}}}}}
  rules:
    - http:
        paths: [{{path: /api, pathType: Prefix, backend: {{service: {{name: api, port: {{number: 80}}}}}}}}]
    - host: h.example.com
      http:
        paths: [{{path: /only, pathType: Exact, backend: {{service: {{name: api, port: {{number: 80}}}}}}}}]
{}{}"#,
        svc("web", "api", "10.0.0.1"),
        svc("web", "fallback", "10.0.0.9")
    );
    let t = run(&y);
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    assert_eq!(
        route_name(&t, "whatever.test", "/api/x").as_deref(),
        Some("ingress/web/mixed/_/api")
    );
    assert_eq!(
        route_name(&t, "whatever.test", "/other").as_deref(),
        Some("ingress/web/mixed/defaultBackend")
    );
    // A known host whose paths do not match falls back to the default backend.
    assert_eq!(
        route_name(&t, "h.example.com", "/nope").as_deref(),
        Some("ingress/web/mixed/defaultBackend")
    );
    assert_eq!(
        addrs(route(&t, "h.example.com", "/nope").unwrap()),
        vec!["10.0.0.9:8080".parse().unwrap()]
    );
}

fn class_yaml(controller: &str, default: bool) -> String {
    format!(
        r#"
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: airgate
  annotations: {{ingressclass.kubernetes.io/is-default-class: "{default}"}}
spec: {{controller: {controller}}}
"#
    )
}

fn simple_ingress(name: &str, class: Option<&str>, legacy: Option<&str>, path: &str) -> String {
    let class_line = class
        .map(|c| format!("  ingressClassName: {c}\n"))
        .unwrap_or_default();
    let ann = legacy
        .map(|c| format!("  annotations: {{kubernetes.io/ingress.class: {c}}}\n"))
        .unwrap_or_default();
    format!(
        r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: web
{ann}spec:
{class_line}  rules:
    - http:
        paths: [{{path: {path}, pathType: Prefix, backend: {{service: {{name: s, port: {{number: 80}}}}}}}}]
"#
    )
}

#[test]
fn class_selection() {
    let objs = |class: &str| {
        format!(
            "{class}{}{}{}{}{}",
            simple_ingress("named", Some("airgate"), None, "/named"),
            simple_ingress("legacy", None, Some("airgate"), "/legacy"),
            simple_ingress("classless", None, None, "/classless"),
            simple_ingress("other", Some("nginx"), None, "/other"),
            svc("web", "s", "10.0.0.1")
        )
    };
    let served = |t: &Translation| {
        let mut v: Vec<String> = t.accepted.iter().map(|o| o.name.clone()).collect();
        v.sort();
        v
    };

    // Our IngressClass, not default: named and legacy-annotated only.
    let t = run(&objs(&class_yaml(crate::api::CONTROLLER_NAME, false)));
    assert_eq!(served(&t), ["legacy", "named"]);
    assert!(route(&t, "x", "/classless").is_none());
    assert!(route(&t, "x", "/named").is_some());

    // Default class: classless Ingresses too.
    let t = run(&objs(&class_yaml(crate::api::CONTROLLER_NAME, true)));
    assert_eq!(served(&t), ["classless", "legacy", "named"]);

    // The class named airgate belongs to another controller: nothing is ours.
    let t = run(&objs(&class_yaml("k8s.io/ingress-nginx", true)));
    assert!(served(&t).is_empty());
    assert!(route(&t, "x", "/named").is_none());

    // File mode, no IngressClass: the named class and classless Ingresses are ours.
    let t = run(&objs(""));
    assert_eq!(served(&t), ["classless", "legacy", "named"]);
    assert!(route(&t, "x", "/other").is_none());

    // AIRoutes: omitted class is ours, another class is not.
    let ar = |name: &str, class: &str, path: &str| {
        format!(
            r#"
---
apiVersion: airgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: {name}, namespace: web}}
spec:
  {class}
  routes: [{{path: {path}, backend: {{url: "http://127.0.0.1:9"}}}}]
"#
        )
    };
    let t = run(&format!(
        "{}{}{}",
        ar("mine", "", "/mine"),
        ar("named", "ingressClassName: airgate", "/named"),
        ar("theirs", "ingressClassName: nginx", "/theirs")
    ));
    assert!(route(&t, "x", "/mine").is_some());
    assert!(route(&t, "x", "/named").is_some());
    assert!(route(&t, "x", "/theirs").is_none());
}

#[test]
fn duplicate_path_oldest_wins_and_loser_gets_conflict() {
    let ing = |name: &str, ts: &str, service: &str| {
        format!(
            r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: web, creationTimestamp: "{ts}"}}
spec:
  rules:
    - host: ai.example.com
      http:
        paths:
          - {{path: /v1, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}
          - {{path: /{name}, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}
"#
        )
    };
    // Listed newest first, to prove order of input does not matter.
    let y = format!(
        "{}{}{}{}",
        ing("young", "2026-02-01T00:00:00Z", "b"),
        ing("old", "2026-01-01T00:00:00Z", "a"),
        svc("web", "a", "10.0.0.1"),
        svc("web", "b", "10.0.0.2")
    );
    let t = run(&y);
    assert_eq!(
        route_name(&t, "ai.example.com", "/v1/chat").as_deref(),
        Some("ingress/web/old/ai.example.com/v1")
    );
    // Both objects' other paths are merged into the same host.
    assert!(route(&t, "ai.example.com", "/young").is_some());
    assert!(route(&t, "ai.example.com", "/old").is_some());
    let conflicts: Vec<_> = t
        .diagnostics
        .iter()
        .filter(|d| d.problem == Problem::Conflict)
        .collect();
    assert_eq!(conflicts.len(), 1, "{:?}", t.diagnostics);
    assert_eq!(conflicts[0].object.name, "young");
    assert_eq!(conflicts[0].field, "spec.rules[0].http.paths[0]");
    assert!(conflicts[0].message.contains("Ingress web/old"));
}

#[test]
fn service_port_by_name_uses_endpointslice_port_and_skips_not_ready() {
    let y = r#"
apiVersion: v1
kind: Service
metadata: {name: llm, namespace: ai}
spec:
  ports:
    - {name: metrics, port: 9100}
    - {name: api, port: 80, targetPort: api}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: llm-1, namespace: ai, labels: {kubernetes.io/service-name: llm}}
addressType: IPv4
ports: [{name: api, port: 11434}, {name: metrics, port: 9100}]
endpoints:
  - addresses: ["10.1.0.1"]
    conditions: {ready: true}
  - addresses: ["10.1.0.2"]
    conditions: {ready: false}
  - addresses: ["10.1.0.3"]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: llm-2, namespace: ai, labels: {kubernetes.io/service-name: llm}}
addressType: IPv4
ports: [{name: api, port: 11434}]
endpoints:
  - addresses: ["10.1.0.4"]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: other, namespace: ai, labels: {kubernetes.io/service-name: other}}
addressType: IPv4
ports: [{name: api, port: 1}]
endpoints: [{addresses: ["10.9.9.9"]}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: llm, namespace: ai}
spec:
  rules:
    - http:
        paths: [{path: /, pathType: Prefix, backend: {service: {name: llm, port: {name: api}}}}]
"#;
    let t = run(y);
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    let r = route(&t, "any", "/v1").expect("route");
    assert_eq!(
        addrs(r),
        ["10.1.0.1:11434", "10.1.0.3:11434", "10.1.0.4:11434"]
            .map(|a| a.parse::<SocketAddr>().unwrap())
    );
    match &r.backend {
        Backend::Upstream(u) => assert_eq!(&*u.name, "ai/llm:api"),
        b => panic!("{b:?}"),
    }
}

#[test]
fn missing_service_port_and_endpoints_answer_503_with_diagnostics() {
    let y = r#"
apiVersion: v1
kind: Service
metadata: {name: idle, namespace: ai}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: idle-1, namespace: ai, labels: {kubernetes.io/service-name: idle}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints: [{addresses: ["10.0.0.1"], conditions: {ready: false}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: i, namespace: ai}
spec:
  rules:
    - http:
        paths:
          - {path: /missing, pathType: Prefix, backend: {service: {name: ghost, port: {number: 80}}}}
          - {path: /idle, pathType: Prefix, backend: {service: {name: idle, port: {number: 80}}}}
          - {path: /badport, pathType: Prefix, backend: {service: {name: idle, port: {number: 81}}}}
"#;
    let t = run(y);
    let unavailable = |path: &str| match &route(&t, "h", path).expect(path).backend {
        Backend::Unavailable { status, message } => (*status, message.to_string()),
        b => panic!("{b:?}"),
    };
    assert_eq!(
        unavailable("/missing"),
        (503, "service ai/ghost not found".into())
    );
    assert_eq!(unavailable("/idle").0, 503);
    assert!(unavailable("/idle").1.contains("no ready endpoints"));
    assert!(unavailable("/badport").1.contains("no port 81"));
    let d = t
        .diagnostics
        .iter()
        .find(|d| d.reason == "ServiceNotFound")
        .expect("ServiceNotFound");
    assert_eq!(d.problem, Problem::RefNotFound);
    assert_eq!(d.field, "spec.rules[0].http.paths[0].backend.service.name");
    let d = t
        .diagnostics
        .iter()
        .find(|d| d.reason == "NoReadyEndpoints")
        .expect("NoReadyEndpoints");
    assert_eq!(d.severity, Severity::Warning);
    assert!(has_diag(
        &t,
        "ServicePortNotFound",
        "spec.rules[0].http.paths[2].backend.service.port"
    ));
}

#[test]
fn ingress_tls_loads_certificates_and_bad_secrets_degrade_to_default_cert() {
    let (crt, key) = super::tls::tests::self_signed("secure.example.com");
    let indent = |s: &str| s.replace('\n', "\n    ");
    let y = format!(
        r#"
apiVersion: v1
kind: Secret
metadata: {{name: good, namespace: web}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
    {}
  tls.key: |
    {}
---
apiVersion: v1
kind: Secret
metadata: {{name: bad, namespace: web}}
type: kubernetes.io/tls
stringData: {{tls.crt: "garbage", tls.key: "garbage"}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: tls, namespace: web}}
spec:
  tls:
    - {{hosts: [secure.example.com], secretName: good}}
    - {{hosts: [broken.example.com], secretName: bad}}
    - {{hosts: [missing.example.com], secretName: nope}}
  rules:
    - host: secure.example.com
      http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: s, port: {{number: 80}}}}}}}}]}}
    - host: broken.example.com
      http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: s, port: {{number: 80}}}}}}}}]}}
    - host: missing.example.com
      http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: s, port: {{number: 80}}}}}}}}]}}
{}"#,
        indent(crt.trim()),
        indent(key.trim()),
        svc("web", "s", "10.0.0.1")
    );
    let t = run(&y);
    assert!(t.config.certs.find("secure.example.com").is_some());
    assert!(t.config.certs.find("broken.example.com").is_none());
    assert!(t.config.certs.find("missing.example.com").is_none());
    // Hosts with unusable certificates are still served.
    for h in ["secure", "broken", "missing"] {
        assert!(route(&t, &format!("{h}.example.com"), "/").is_some(), "{h}");
    }
    let d = t
        .diagnostics
        .iter()
        .find(|d| d.reason == "InvalidCertificate")
        .expect("InvalidCertificate");
    assert_eq!(d.field, "spec.tls[1].secretName");
    assert!(
        d.message.contains("web/bad") && d.message.contains("tls.crt"),
        "{}",
        d.message
    );
    let d = t
        .diagnostics
        .iter()
        .find(|d| d.reason == "SecretNotFound")
        .expect("SecretNotFound");
    assert_eq!(d.problem, Problem::RefNotFound);
    assert!(d.message.contains("web/nope"));
}

#[test]
fn ingress_invalid_paths_and_hosts_leave_only_that_part_out() {
    let y = format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: messy, namespace: web}}
spec:
  rules:
    - host: "bad host"
      http: {{paths: [{{path: /a, pathType: Prefix, backend: {{service: {{name: s, port: {{number: 80}}}}}}}}]}}
    - http:
        paths:
          - {{path: "", pathType: Exact, backend: {{service: {{name: s, port: {{number: 80}}}}}}}}
          - {{path: "nope", pathType: Prefix, backend: {{service: {{name: s, port: {{number: 80}}}}}}}}
          - {{path: /x, pathType: Weird, backend: {{service: {{name: s, port: {{number: 80}}}}}}}}
          - {{path: /y, pathType: Prefix, backend: {{resource: {{kind: Bucket, name: b}}}}}}
          - {{path: /ok, pathType: Prefix, backend: {{service: {{name: s, port: {{number: 80}}}}}}}}
          - {{pathType: Prefix, backend: {{service: {{name: s, port: {{number: 80}}}}}}}}
{}"#,
        svc("web", "s", "10.0.0.1")
    );
    let t = run(&y);
    assert!(has_diag(&t, "InvalidHost", "spec.rules[0].host"));
    assert!(has_diag(
        &t,
        "InvalidPath",
        "spec.rules[1].http.paths[0].path"
    ));
    assert!(has_diag(
        &t,
        "InvalidPath",
        "spec.rules[1].http.paths[1].path"
    ));
    assert!(has_diag(
        &t,
        "InvalidPath",
        "spec.rules[1].http.paths[2].pathType"
    ));
    assert!(has_diag(
        &t,
        "UnsupportedBackend",
        "spec.rules[1].http.paths[3].backend.service"
    ));
    assert_eq!(
        route_name(&t, "h", "/ok").as_deref(),
        Some("ingress/web/messy/_/ok")
    );
    // The path-less Prefix entry means `/`.
    assert_eq!(
        route_name(&t, "h", "/else").as_deref(),
        Some("ingress/web/messy/_/")
    );
}

const FULL_AIROUTE: &str = r#"
apiVersion: airgate.dev/v1alpha1
kind: AIRoute
metadata: {name: ai-stack, namespace: ai}
spec:
  hosts: ["ai.example.com", "*.ai.example.com"]
  tls: {secretName: ai-tls}
  rateZones:
    - {name: llm, rate: 4r/m}
    - {name: keyed, rate: 10r/s, key: "header:X-API-Key", size: 1Mi}
  cors:
    allowOrigins: ["https://app.example.com", "https://*.example.org"]
    exposeHeaders: [X-Request-ID]
  authHook:
    url: http://127.0.0.1:7000/internal/auth?check=1
    forwardHeaders: [X-API-Key]
    copyHeaders: [X-User-Id]
    cache: {ttl: 30s, key: [X-API-Key]}
  securityHeaders: true
  routes:
    - path: /tts/
      stripPrefix: true
      backend: {service: {name: kokoro, port: 80}}
      rateLimit: {zone: llm, burst: 5, nodelay: true}
      maxBodySize: 10Mi
      timeouts: {connect: 2s, read: 10m}
    - path: /v1/models
      pathType: Exact
      backend: {url: "https://models.internal:8443/base/"}
      rateLimit: {zone: keyed, rejectStatus: 503}
      maxBodySize: 0
      streaming: false
      websocket: false
      auth: false
    - path: /
      backend: {url: "http://127.0.0.1:9000"}
"#;

#[test]
fn airroute_fields_and_defaults() {
    let y = format!("{FULL_AIROUTE}{}", svc("ai", "kokoro", "10.2.0.1"));
    let t = run(&y);
    // The TLS Secret is missing: a warning, everything else is served.
    assert_eq!(t.error_count(), 0, "{:?}", t.diagnostics);
    assert!(has_diag(&t, "SecretNotFound", "spec.tls.secretName"));

    let tts = route(&t, "ai.example.com", "/tts/speak").expect("tts");
    assert_eq!(&*tts.name, "airroute/ai/ai-stack/tts");
    assert!(matches!(&tts.path, PathMatch::Prefix(p) if p == "/tts"));
    assert!(matches!(&tts.policy.rewrite, PathRewrite::StripPrefix(p) if p == "/tts"));
    assert_eq!(addrs(tts), vec!["10.2.0.1:8080".parse().unwrap()]);
    assert_eq!(tts.policy.max_body_size, Some(10 * 1024 * 1024));
    assert_eq!(tts.policy.timeouts.connect, Duration::from_secs(2));
    assert_eq!(tts.policy.timeouts.read, Duration::from_secs(600));
    assert_eq!(tts.policy.timeouts.send, Timeouts::default().send);
    assert!(tts.policy.streaming && tts.policy.websocket);
    assert_eq!(tts.policy.https_redirect, Some(308));
    assert!(tts.policy.security_headers);
    let rl = tts.policy.rate_limit.as_ref().expect("rate limit");
    assert_eq!((rl.burst, rl.nodelay, rl.reject_status), (5, true, 429));
    let zone = &t.config.zones[rl.zone];
    assert_eq!(&*zone.id, "ai/ai-stack/llm");
    assert_eq!((zone.requests, zone.per), (4, Duration::from_secs(60)));
    assert_eq!(zone.key, ZoneKey::ClientIp);
    assert_eq!(zone.size_bytes, 10 * 1024 * 1024);

    let cors = tts.policy.cors.as_ref().expect("cors");
    assert!(!cors.allow_any_origin && !cors.allow_credentials);
    assert_eq!(cors.exact_origins, ["https://app.example.com"]);
    assert_eq!(
        cors.wildcard_origins,
        [("https://".to_string(), ".example.org".to_string())]
    );
    assert_eq!(cors.allow_methods, "GET, POST, PUT, DELETE, PATCH, OPTIONS");
    assert_eq!(cors.allow_headers, "Authorization, Content-Type");
    assert_eq!(cors.expose_headers.as_ref().unwrap(), "X-Request-ID");
    assert_eq!(cors.max_age, "86400");

    let auth = tts.policy.auth.as_ref().expect("auth on by default");
    assert_eq!(auth.path_and_query, "/internal/auth?check=1");
    assert_eq!(auth.method, http::Method::GET);
    assert_eq!(auth.timeout, Duration::from_secs(5));
    assert_eq!(auth.failure_status, 500);
    assert_eq!(auth.forward_headers, ["x-api-key"]);
    assert_eq!(auth.copy_headers, ["x-user-id"]);
    assert_eq!(auth.cache.as_ref().unwrap().ttl, Duration::from_secs(30));
    assert_eq!(auth.upstream.base_path, "");
    assert!(
        matches!(&auth.upstream.endpoints, Endpoints::Static(a) if a == &["127.0.0.1:7000".parse::<SocketAddr>().unwrap()])
    );

    // Same route served on the wildcard host.
    assert_eq!(
        route_name(&t, "x.ai.example.com", "/tts").as_deref(),
        Some("airroute/ai/ai-stack/tts")
    );

    let models = route(&t, "ai.example.com", "/v1/models").expect("models");
    assert!(route(&t, "ai.example.com", "/v1/models/x").map(|r| &*r.name) != Some(&*models.name));
    assert!(models.policy.auth.is_none());
    assert!(!models.policy.streaming && !models.policy.websocket);
    assert_eq!(models.policy.max_body_size, None);
    let rl = models.policy.rate_limit.as_ref().unwrap();
    assert_eq!((rl.burst, rl.nodelay, rl.reject_status), (0, false, 503));
    let zone = &t.config.zones[rl.zone];
    assert_eq!(
        zone.key,
        ZoneKey::Header(http::HeaderName::from_static("x-api-key"))
    );
    assert_eq!(zone.size_bytes, 1024 * 1024);
    match &models.backend {
        Backend::Upstream(u) => {
            assert_eq!(u.protocol, UpstreamProtocol::Https);
            assert_eq!(u.base_path, "/base");
            assert_eq!(u.host_override.as_ref().unwrap(), "models.internal:8443");
            assert_eq!(u.tls_server_name.as_deref(), Some("models.internal"));
            assert!(
                matches!(&u.endpoints, Endpoints::Dns { host, port: 8443 } if host == "models.internal")
            );
        }
        b => panic!("{b:?}"),
    }

    let root = route(&t, "ai.example.com", "/other").expect("root");
    assert_eq!(&*root.name, "airroute/ai/ai-stack/2");
    assert_eq!(root.policy.max_body_size, Some(DEFAULT_MAX_BODY_SIZE));
    assert!(matches!(root.policy.rewrite, PathRewrite::None));
    assert_eq!(root.policy.timeouts, Timeouts::default());
    // Not served on other hosts.
    assert!(route(&t, "other.example.com", "/tts").is_none());
}

#[test]
fn airroute_minimal_defaults() {
    let t = run(r#"
apiVersion: airgate.dev/v1alpha1
kind: AIRoute
metadata: {name: min, namespace: ai}
spec:
  routes: [{path: /v1, backend: {url: "http://10.0.0.5:8000/"}}]
"#);
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    let r = route(&t, "anything", "/v1/chat/completions").expect("route");
    assert!(r.policy.https_redirect.is_none());
    assert!(!r.policy.security_headers);
    assert!(r.policy.cors.is_none() && r.policy.auth.is_none() && r.policy.rate_limit.is_none());
    assert!(r.policy.streaming && r.policy.websocket);
    match &r.backend {
        Backend::Upstream(u) => {
            assert_eq!(u.base_path, "");
            assert_eq!(u.protocol, UpstreamProtocol::Http);
            assert_eq!(u.host_override.as_ref().unwrap(), "10.0.0.5:8000");
            assert!(u.tls_server_name.is_none());
        }
        b => panic!("{b:?}"),
    }
}

#[test]
fn airroute_tls_redirect_can_be_disabled_and_cert_is_loaded() {
    let (crt, key) = super::tls::tests::self_signed("ai.example.com");
    let mut o = objects(
        r#"
apiVersion: airgate.dev/v1alpha1
kind: AIRoute
metadata: {name: t, namespace: ai}
spec:
  hosts: [ai.example.com]
  tls: {secretName: cert, redirect: false}
  routes: [{path: /, backend: {url: "http://10.0.0.5:8000"}}]
"#,
    );
    o.secrets.push(Arc::new(super::tls::tests::tls_secret(
        "ai", "cert", &crt, &key,
    )));
    let t = translate(&o, &Options::default());
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    assert!(t.config.certs.find("ai.example.com").is_some());
    assert!(
        route(&t, "ai.example.com", "/")
            .unwrap()
            .policy
            .https_redirect
            .is_none()
    );
}

fn airroute_with(spec_tail: &str) -> String {
    format!(
        r#"
---
apiVersion: airgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: bad, namespace: ai}}
spec:
{spec_tail}
---
apiVersion: airgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: good, namespace: ai}}
spec:
  routes: [{{path: /good, backend: {{url: "http://10.0.0.1:80"}}}}]
"#
    )
}

/// Object-wide errors leave the whole AIRoute out; other objects keep working.
#[test]
fn airroute_object_errors() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "  hosts: [\"bad_host\"]\n  routes: [{path: /x, backend: {url: \"http://10.0.0.1\"}}]",
            "InvalidHost",
            "spec.hosts[0]",
        ),
        (
            "  rateZones: [{name: z, rate: 10r/h}]\n  routes: [{path: /x, backend: {url: \"http://10.0.0.1\"}}]",
            "InvalidRateZone",
            "spec.rateZones[0].rate",
        ),
        (
            "  rateZones: [{name: z, rate: 1r/s, key: cookie}]\n  routes: [{path: /x, backend: {url: \"http://10.0.0.1\"}}]",
            "InvalidRateZone",
            "spec.rateZones[0].key",
        ),
        (
            "  rateZones: [{name: z, rate: 1r/s, size: 0}]\n  routes: [{path: /x, backend: {url: \"http://10.0.0.1\"}}]",
            "InvalidRateZone",
            "spec.rateZones[0].size",
        ),
        (
            "  rateZones: [{name: z, rate: 1r/s}, {name: z, rate: 2r/s}]\n  routes: [{path: /x, backend: {url: \"http://10.0.0.1\"}}]",
            "DuplicateZone",
            "spec.rateZones[1].name",
        ),
        (
            "  cors: {allowOrigins: [\"*\"], allowCredentials: true}\n  routes: [{path: /x, backend: {url: \"http://10.0.0.1\"}}]",
            "InvalidCORS",
            "spec.cors.allowOrigins",
        ),
        (
            "  cors: {allowOrigins: [\"app.example.com\"]}\n  routes: [{path: /x, backend: {url: \"http://10.0.0.1\"}}]",
            "InvalidCORS",
            "spec.cors.allowOrigins",
        ),
        (
            "  cors: {allowOrigins: [\"*\"], maxAge: forever}\n  routes: [{path: /x, backend: {url: \"http://10.0.0.1\"}}]",
            "InvalidCORS",
            "spec.cors.maxAge",
        ),
        (
            "  authHook: {url: \"ftp://x\"}\n  routes: [{path: /x, backend: {url: \"http://10.0.0.1\"}}]",
            "InvalidAuthHook",
            "spec.authHook.url",
        ),
        (
            "  authHook: {url: \"http://a\", service: {name: s, port: 80}}\n  routes: [{path: /x, backend: {url: \"http://10.0.0.1\"}}]",
            "InvalidAuthHook",
            "spec.authHook.url",
        ),
        (
            "  authHook: {url: \"http://a\", timeout: 5}\n  routes: [{path: /x, backend: {url: \"http://10.0.0.1\"}}]",
            "InvalidAuthHook",
            "spec.authHook.timeout",
        ),
        (
            "  authHook: {url: \"http://a\", failureStatus: 200}\n  routes: [{path: /x, backend: {url: \"http://10.0.0.1\"}}]",
            "InvalidAuthHook",
            "spec.authHook.failureStatus",
        ),
        (
            // Not a valid request target: the hook could never be called.
            "  authHook: {service: {name: s, port: 80, path: \"/check me\"}}\n  routes: [{path: /x, backend: {url: \"http://10.0.0.1\"}}]",
            "InvalidAuthHook",
            "spec.authHook.service.path",
        ),
        ("  routes: []", "NoRoutes", "spec.routes"),
    ];
    for (spec, reason, field) in cases {
        let t = run(&airroute_with(spec));
        assert!(has_diag(&t, reason, field), "{spec}: {:?}", t.diagnostics);
        assert!(has_diag(&t, "NotServed", "spec"), "{spec}");
        assert!(
            route(&t, "h", "/x").is_none(),
            "{spec}: must not be half-applied"
        );
        assert!(
            route(&t, "h", "/good").is_some(),
            "{spec}: other objects unaffected"
        );
        assert!(t.accepted.iter().any(|o| o.name == "bad"));
        assert!(t.diagnostics.iter().all(|d| d.object.name == "bad"));
    }
}

/// Route-level errors leave that route out; the object's other routes are served.
#[test]
fn airroute_route_errors() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "{path: x, backend: {url: \"http://10.0.0.1\"}}",
            "InvalidPath",
            "spec.routes[0].path",
        ),
        (
            "{path: /x, backend: {}}",
            "InvalidBackend",
            "spec.routes[0].backend",
        ),
        (
            "{path: /x, backend: {url: \"http://10.0.0.1\", service: {name: s, port: 80}}}",
            "InvalidBackend",
            "spec.routes[0].backend",
        ),
        (
            "{path: /x, backend: {url: \"ws://10.0.0.1\"}}",
            "InvalidURL",
            "spec.routes[0].backend.url",
        ),
        (
            "{path: /x, backend: {url: \"http://10.0.0.1/?a=b\"}}",
            "InvalidURL",
            "spec.routes[0].backend.url",
        ),
        (
            "{path: /x, backend: {url: \"http://u:p@10.0.0.1\"}}",
            "InvalidURL",
            "spec.routes[0].backend.url",
        ),
        (
            "{path: /x, backend: {service: {name: Bad_Name, port: 80}}}",
            "InvalidServiceName",
            "spec.routes[0].backend.service.name",
        ),
        (
            "{path: /x, backend: {service: {name: s, port: 0}}}",
            "InvalidPort",
            "spec.routes[0].backend.service.port",
        ),
        (
            "{path: /x, backend: {url: \"http://10.0.0.1\"}, rateLimit: {zone: nope}}",
            "UnknownZone",
            "spec.routes[0].rateLimit.zone",
        ),
        (
            "{path: /x, backend: {url: \"http://10.0.0.1\"}, rateLimit: {zone: z, rejectStatus: 200}}",
            "InvalidStatus",
            "spec.routes[0].rateLimit.rejectStatus",
        ),
        (
            "{path: /x, backend: {url: \"http://10.0.0.1\"}, maxBodySize: 10MB}",
            "InvalidSize",
            "spec.routes[0].maxBodySize",
        ),
        (
            "{path: /x, backend: {url: \"http://10.0.0.1\"}, timeouts: {read: 60}}",
            "InvalidDuration",
            "spec.routes[0].timeouts.read",
        ),
        (
            "{path: /x, backend: {url: \"http://10.0.0.1\"}, timeouts: {connect: 0s}}",
            "InvalidDuration",
            "spec.routes[0].timeouts.connect",
        ),
        (
            "{path: /x, backend: {url: \"http://10.0.0.1\"}, auth: true}",
            "NoAuthHook",
            "spec.routes[0].auth",
        ),
    ];
    for (r, reason, field) in cases {
        let spec = format!(
            "  rateZones: [{{name: z, rate: 1r/s}}]\n  routes:\n    - {r}\n    - {{path: /fine, backend: {{url: \"http://10.0.0.1\"}}}}"
        );
        let t = run(&airroute_with(&spec));
        assert!(has_diag(&t, reason, field), "{r}: {:?}", t.diagnostics);
        assert!(
            has_diag(&t, "RouteNotServed", "spec.routes[0]") || reason == &"InvalidPath",
            "{r}"
        );
        assert!(route(&t, "h", "/x").is_none(), "{r}: invalid route served");
        assert!(
            route(&t, "h", "/fine").is_some(),
            "{r}: sibling route dropped"
        );
        assert!(
            route(&t, "h", "/good").is_some(),
            "{r}: other object dropped"
        );
    }
}

#[test]
fn airroute_service_backend_by_port_name_and_auth_service() {
    let y = format!(
        r#"
apiVersion: airgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: a, namespace: ai}}
spec:
  authHook: {{service: {{name: ghost, port: 80, path: /check}}, method: post, timeout: 2s, failureStatus: 503}}
  routes:
    - {{path: /x, backend: {{service: {{name: s, port: http}}}}}}
{}"#,
        svc("ai", "s", "10.0.0.7")
    );
    let t = run(&y);
    let r = route(&t, "h", "/x").expect("route");
    assert_eq!(addrs(r), vec!["10.0.0.7:8080".parse().unwrap()]);
    let auth = r.policy.auth.as_ref().expect("auth");
    assert_eq!(auth.method, http::Method::POST);
    assert_eq!(auth.path_and_query, "/check");
    assert_eq!(auth.failure_status, 503);
    assert_eq!(auth.timeout, Duration::from_secs(2));
    // Missing hook Service: fail closed (no endpoints), and say so.
    assert!(matches!(&auth.upstream.endpoints, Endpoints::Static(a) if a.is_empty()));
    assert!(has_diag(&t, "ServiceNotFound", "spec.authHook.service"));
}

#[test]
fn never_panics_on_odd_input() {
    let t = run(&airroute_with(
        r#"  rateZones: [{name: z, rate: 4294967295r/s}]
  routes:
    - {path: /x, backend: {url: "http://[::1]:8080"}, rateLimit: {zone: z, burst: 4294967295}, maxBodySize: 99999999999Ti, timeouts: {read: 999999999999h}}
    - {path: "/\u0000", backend: {url: "http://"}}
    - {path: "/é", backend: {url: "https://[::1"}}
"#,
    ));
    // The huge values are accepted or rejected with a diagnostic, never a panic.
    assert!(route(&t, "h", "/good").is_some());
    let t = run(r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: empty, namespace: web}
"#);
    assert!(has_diag(&t, "EmptySpec", "spec"));
}

#[test]
fn airroute_and_ingress_share_a_host() {
    let y = format!(
        r#"
apiVersion: airgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: a, namespace: ai, creationTimestamp: "2026-01-01T00:00:00Z"}}
spec:
  hosts: [ai.example.com]
  routes: [{{path: /v1, backend: {{url: "http://10.0.0.1"}}}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: i, namespace: ai, creationTimestamp: "2026-03-01T00:00:00Z"}}
spec:
  rules:
    - host: ai.example.com
      http:
        paths:
          - {{path: /v1/, pathType: Prefix, backend: {{service: {{name: s, port: {{number: 80}}}}}}}}
          - {{path: /ui, pathType: Prefix, backend: {{service: {{name: s, port: {{number: 80}}}}}}}}
{}"#,
        svc("ai", "s", "10.0.0.2")
    );
    let t = run(&y);
    assert_eq!(
        route_name(&t, "ai.example.com", "/v1/x").as_deref(),
        Some("airroute/ai/a/v1")
    );
    assert_eq!(
        route_name(&t, "ai.example.com", "/ui").as_deref(),
        Some("ingress/ai/i/ai.example.com/ui")
    );
    let c = t
        .diagnostics
        .iter()
        .find(|d| d.problem == Problem::Conflict)
        .expect("conflict");
    assert_eq!(c.object, ObjectRef::new("Ingress", "ai", "i"));
    assert!(c.message.contains("AIRoute ai/a"), "{}", c.message);
}

#[test]
fn url_upstream_forms() {
    use super::endpoints::url_upstream;
    let u = url_upstream("n", "http://127.0.0.1:9010").unwrap();
    assert!(
        matches!(&u.endpoints, Endpoints::Static(a) if a == &["127.0.0.1:9010".parse::<SocketAddr>().unwrap()])
    );
    assert_eq!(u.base_path, "");
    let u = url_upstream("n", "https://[::1]/v1/").unwrap();
    assert!(
        matches!(&u.endpoints, Endpoints::Static(a) if a == &["[::1]:443".parse::<SocketAddr>().unwrap()])
    );
    assert_eq!(u.base_path, "/v1");
    assert_eq!(u.tls_server_name.as_deref(), Some("::1"));
    assert_eq!(u.host_override.as_ref().unwrap(), "[::1]");
    let u = url_upstream("n", "http://Auth.AI.svc:8080/internal/auth").unwrap();
    assert!(matches!(&u.endpoints, Endpoints::Dns { host, port: 8080 } if host == "auth.ai.svc"));
    for bad in [
        "",
        "localhost:80",
        "ftp://x",
        "http://",
        "http://x:0",
        "http://x:99999",
        "http://a@b",
    ] {
        assert!(url_upstream("n", bad).is_err(), "{bad}");
    }
}

#[test]
fn fqdn_localhost_endpoints_resolve_to_loopback_and_other_fqdns_are_skipped() {
    let y = r#"
apiVersion: v1
kind: Service
metadata: {name: tts, namespace: ai}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: tts-a, namespace: ai, labels: {kubernetes.io/service-name: tts}}
addressType: FQDN
ports: [{name: http, port: 9001}]
endpoints: [{addresses: ["backend-a.localhost"]}, {addresses: ["model.example.com"]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: tts-b, namespace: ai, labels: {kubernetes.io/service-name: tts}}
addressType: FQDN
ports: [{name: http, port: 9002}]
endpoints: [{addresses: ["LOCALHOST."]}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: tts, namespace: ai}
spec:
  rules:
    - http:
        paths: [{path: /, pathType: Prefix, backend: {service: {name: tts, port: {number: 80}}}}]
"#;
    let t = run(y);
    let r = route(&t, "any", "/speak").expect("route");
    assert_eq!(
        addrs(r),
        ["127.0.0.1:9001", "127.0.0.1:9002"].map(|a| a.parse::<SocketAddr>().unwrap())
    );
}

#[test]
fn app_protocol_picks_upstream_protocol_for_airroutes() {
    let y = r#"
apiVersion: v1
kind: Service
metadata: {name: tls-llm, namespace: ai}
spec: {ports: [{name: api, port: 443, appProtocol: https}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: tls-llm-1, namespace: ai, labels: {kubernetes.io/service-name: tls-llm}}
addressType: IPv4
ports: [{name: api, port: 8443}]
endpoints: [{addresses: ["10.0.0.1"]}]
---
apiVersion: airgate.dev/v1alpha1
kind: AIRoute
metadata: {name: a, namespace: ai}
spec:
  routes: [{path: /, backend: {service: {name: tls-llm, port: 443}}}]
"#;
    let t = run(y);
    match &route(&t, "h", "/").unwrap().backend {
        Backend::Upstream(u) => assert_eq!(u.protocol, UpstreamProtocol::Https),
        b => panic!("{b:?}"),
    }
}

/// Creation times are compared as times, not as text (`00Z` sorts after `00.5Z` as text).
#[test]
fn conflict_age_uses_timestamps_not_text() {
    let ar = |name: &str, ts: &str| {
        format!(
            r#"
---
apiVersion: airgate.dev/v1alpha1
kind: AIRoute
metadata: {{name: {name}, namespace: ai, creationTimestamp: "{ts}"}}
spec:
  routes: [{{path: /v1, backend: {{url: "http://10.0.0.1"}}}}]
"#
        )
    };
    let t = run(&format!(
        "{}{}",
        ar("a-later", "2026-01-01T00:00:00.5Z"),
        ar("z-earlier", "2026-01-01T00:00:00Z")
    ));
    assert_eq!(
        route_name(&t, "h", "/v1").as_deref(),
        Some("airroute/ai/z-earlier/v1")
    );
}

/// The example in DESIGN.md, as users will copy it, translates without errors.
#[test]
fn design_example_translates() {
    let y = r#"
apiVersion: airgate.dev/v1alpha1
kind: AIRoute
metadata: {name: ai-stack, namespace: ai}
spec:
  ingressClassName: airgate            # optional; the default class when omitted
  hosts: ["ai.example.com"]            # exact or *.wildcard (one label); empty = any host
  tls:
    secretName: ai-example-tls         # kubernetes.io/tls Secret in the same namespace
    redirect: true                     # plain HTTP -> 308 to https (default true when tls set)
  rateZones:                           # nginx limit_req_zone
    - name: llm
      rate: 4r/m                       # "N r/s" or "N r/m", written 10r/s, 4r/m
      key: clientIP                    # clientIP (default) | header:<Name>
      size: 10Mi                       # bounded memory; least recently used keys evicted
  cors:
    allowOrigins: ["https://app.example.com"]   # exact origins; https://*.example.com allowed
    allowMethods: [GET, POST, OPTIONS]
    allowHeaders: [Authorization, Content-Type]
    exposeHeaders: []
    allowCredentials: false
    maxAge: 24h
  authHook:                            # nginx auth_request
    url: http://auth.ai.svc:8080/internal/auth  # or service: {name, port, path}
    forwardHeaders: [X-API-Key]        # request headers sent to the hook; never the body
    copyHeaders: [X-User-Id]           # hook response headers added to the upstream request
    timeout: 2s
    cache: {ttl: 30s, key: [X-API-Key]}          # optional
  securityHeaders: true                # the standard set (nosniff, frame DENY, referrer, CSP)
  routes:
    - path: /tts/
      pathType: Prefix                 # Prefix (default, element-wise like Ingress) | Exact
      stripPrefix: true                # like nginx proxy_pass http://upstream/;
      backend:
        service: {name: kokoro-tts, port: 9010}  # resolved through EndpointSlices
        # url: http://127.0.0.1:9010             # or a fixed URL (http or https upstream)
      rateLimit: {zone: llm, burst: 5, nodelay: true}   # nginx limit_req
      maxBodySize: 10Mi                # 413 above it; 0 = unlimited
      timeouts: {connect: 5s, read: 300s, send: 60s}   # read = longest silence between bytes
      streaming: true                  # never buffer; flush each chunk (SSE)
      websocket: true                  # allow Upgrade; the read timeout is the idle limit
      auth: true                       # apply spec.authHook (default true when it is set)
---
apiVersion: v1
kind: Service
metadata: {name: kokoro-tts, namespace: ai}
spec: {ports: [{port: 9010}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: kokoro-tts-1, namespace: ai, labels: {kubernetes.io/service-name: kokoro-tts}}
addressType: IPv4
ports: [{port: 9010}]
endpoints: [{addresses: ["10.3.0.1"]}]
"#;
    let t = run(y);
    assert_eq!(t.error_count(), 0, "{:?}", t.diagnostics);
    let r = route(&t, "ai.example.com", "/tts/v1/audio").expect("route");
    assert_eq!(addrs(r), vec!["10.3.0.1:9010".parse().unwrap()]);
    assert!(r.policy.auth.is_some() && r.policy.cors.is_some());
    assert_eq!(
        r.policy.cors.as_ref().unwrap().allow_methods,
        "GET, POST, OPTIONS"
    );
}

/// Translation of a large cluster stays fast enough to run on every change.
#[test]
fn large_input_translates_completely() {
    let n = 1000;
    let mut o = Objects::default();
    for i in 0..n {
        let y = format!(
            r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: ing{i}, namespace: ns{m}}}
spec:
  rules:
    - host: h{i}.example.com
      http:
        paths:
          - {{path: /a, pathType: Prefix, backend: {{service: {{name: s, port: {{number: 80}}}}}}}}
          - {{path: /b, pathType: Exact, backend: {{service: {{name: s, port: {{number: 80}}}}}}}}
          - {{path: /c/d, pathType: Prefix, backend: {{service: {{name: s, port: {{number: 80}}}}}}}}
{svc}"#,
            m = i % 50,
            svc = if i < 50 {
                svc(&format!("ns{i}"), "s", "10.0.0.1")
            } else {
                String::new()
            }
        );
        let more = objects(&y);
        o.ingresses.extend(more.ingresses);
        o.services.extend(more.services);
        o.endpoint_slices.extend(more.endpoint_slices);
    }
    let start = std::time::Instant::now();
    let t = translate(&o, &Options::default());
    let took = start.elapsed();
    eprintln!("translated {n} Ingresses ({} routes) in {took:?}", n * 3);
    assert!(
        t.diagnostics.is_empty(),
        "{:?}",
        &t.diagnostics[..3.min(t.diagnostics.len())]
    );
    assert_eq!(t.config.vhosts.len(), n);
    assert_eq!(
        route_name(&t, "h777.example.com", "/c/d/e").as_deref(),
        Some("ingress/ns27/ing777/h777.example.com/c/d")
    );
}

fn annotated_ingress(name: &str, annotations: &str, paths: &str) -> String {
    format!(
        r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: web
  annotations: {{{annotations}}}
spec:
  tls: [{{hosts: [secure.example.com]}}]
  rules:
    - host: secure.example.com
      http:
        paths: [{paths}]
    - host: plain.example.com
      http:
        paths: [{paths}]
"#
    )
}

const BACKEND: &str = "backend: {service: {name: s, port: {number: 80}}}";

#[test]
fn ingress_annotations_are_wired_per_path() {
    let y = format!(
        "{}{}{}",
        annotated_ingress(
            "limited",
            r#"nginx.ingress.kubernetes.io/limit-rps: "5""#,
            &format!(
                "{{path: /a, pathType: Prefix, {BACKEND}}}, {{path: /b, pathType: Prefix, {BACKEND}}}"
            )
        ),
        annotated_ingress(
            "regex",
            r#"nginx.ingress.kubernetes.io/use-regex: "true""#,
            &format!("{{path: \"/v[0-9]+/chat\", pathType: ImplementationSpecific, {BACKEND}}}")
        ),
        svc("web", "s", "10.0.0.1")
    );
    let t = run(&y);
    assert_eq!(t.error_count(), 0, "{:?}", t.diagnostics);

    // Both paths of one Ingress share its zone, at the right global index.
    let a = route(&t, "plain.example.com", "/a").unwrap();
    let b = route(&t, "plain.example.com", "/b").unwrap();
    let (za, zb) = (
        a.policy.rate_limit.as_ref().unwrap().zone,
        b.policy.rate_limit.as_ref().unwrap().zone,
    );
    assert_eq!(za, zb);
    assert_eq!(t.config.zones.len(), 1);
    assert_eq!(t.config.zones[za].requests, 5);
    assert!(t.config.zones[za].id.starts_with("web/limited/"));

    // TLS hosts redirect by default (ssl-redirect), plain hosts do not.
    assert_eq!(
        route(&t, "secure.example.com", "/a")
            .unwrap()
            .policy
            .https_redirect,
        Some(308)
    );
    assert_eq!(a.policy.https_redirect, None);

    // use-regex: case-insensitive, anchored at the start.
    let r = route(&t, "plain.example.com", "/V2/Chat/completions").expect("regex route");
    assert!(r.name.starts_with("ingress/web/regex/"));
    assert!(matches!(r.path, PathMatch::Regex(_)));
    assert!(route(&t, "plain.example.com", "/x/v2/chat").is_none());
}

#[test]
fn refused_or_invalid_annotations_leave_the_ingress_out() {
    let y = format!(
        "{}{}{}",
        annotated_ingress(
            "snippet",
            r#"nginx.ingress.kubernetes.io/configuration-snippet: "more_set_headers x""#,
            &format!("{{path: /snippet, pathType: Prefix, {BACKEND}}}")
        ),
        annotated_ingress(
            "badrate",
            r#"nginx.ingress.kubernetes.io/limit-rps: "lots""#,
            &format!("{{path: /badrate, pathType: Prefix, {BACKEND}}}")
        ),
        annotated_ingress(
            "fine",
            "",
            &format!("{{path: /fine, pathType: Prefix, {BACKEND}}}")
        ),
    );
    let t = run(&format!("{y}{}", svc("web", "s", "10.0.0.1")));
    assert!(route(&t, "plain.example.com", "/snippet").is_none());
    assert!(route(&t, "plain.example.com", "/badrate").is_none());
    assert!(route(&t, "plain.example.com", "/fine").is_some());
    for name in ["snippet", "badrate"] {
        assert!(
            t.diagnostics
                .iter()
                .any(|d| d.object.name == name && d.reason == "InvalidAnnotations"),
            "{name}: {:?}",
            t.diagnostics
        );
    }
}

/// An AIRoute exactly as the API server stores and returns it (JSON, numbers kept as
/// numbers: `maxBodySize: 0`, `size: 1048576`, named port), as the controller sees it.
#[test]
fn airroute_as_returned_by_the_api_server_translates() {
    let json = r#"{"apiVersion":"airgate.dev/v1alpha1","kind":"AIRoute","metadata":{"creationTimestamp":"2026-11-22T01:36:34Z","name":"ai-stack","namespace":"ai"},"spec":{"authHook":{"cache":{"key":["X-API-Key"],"ttl":"30s"},"copyHeaders":["X-User-Id"],"failureStatus":503,"forwardHeaders":["X-API-Key"],"timeout":"2s","url":"http://auth.ai.svc:8080/internal/auth"},"cors":{"allowCredentials":true,"allowHeaders":["Authorization","Content-Type"],"allowMethods":["GET","POST","OPTIONS"],"allowOrigins":["https://app.example.com","https://*.example.com"],"exposeHeaders":[],"maxAge":"24h"},"hosts":["ai.example.com","*.ai.example.com"],"ingressClassName":"airgate","rateZones":[{"key":"clientIP","name":"llm","rate":"4r/m","size":"10Mi"},{"key":"header:X-API-Key","name":"keyed","rate":"10r/s","size":1048576}],"routes":[{"auth":true,"backend":{"service":{"name":"kokoro-tts","port":9010}},"maxBodySize":"10Mi","path":"/tts/","pathType":"Prefix","rateLimit":{"burst":5,"nodelay":true,"zone":"llm"},"streaming":true,"stripPrefix":true,"timeouts":{"connect":"5s","read":"300s","send":"60s"},"websocket":true},{"backend":{"service":{"name":"llm","port":"http"}},"maxBodySize":0,"path":"/v1/models","pathType":"Exact","rateLimit":{"rejectStatus":503,"zone":"keyed"}},{"auth":false,"backend":{"url":"https://api.example.com/v1/"},"path":"/"}],"securityHeaders":true,"tls":{"redirect":true,"secretName":"ai-example-tls"}}}"#;
    let ar: crate::api::AIRoute = serde_json::from_str(json).expect("AIRoute JSON");
    let o = Objects {
        airroutes: vec![Arc::new(ar)],
        ..Objects::default()
    };
    let t = translate(&o, &Options::default());
    assert_eq!(
        t.error_count(),
        2,
        "only the two missing Services: {:?}",
        t.diagnostics
    );
    assert!(
        t.diagnostics
            .iter()
            .all(|d| d.severity == Severity::Warning || d.reason == "ServiceNotFound")
    );
    let models = route(&t, "ai.example.com", "/v1/models").expect("route");
    assert_eq!(models.policy.max_body_size, None);
    let rl = models.policy.rate_limit.as_ref().unwrap();
    assert_eq!(t.config.zones[rl.zone].size_bytes, 1048576);
    assert!(route(&t, "x.ai.example.com", "/tts/a").is_some());
}

#[test]
fn wildcard_certificate_serves_one_label() {
    let (crt, key) = super::tls::tests::self_signed("*.example.com");
    let mut o = objects(
        r#"
apiVersion: airgate.dev/v1alpha1
kind: AIRoute
metadata: {name: w, namespace: ai}
spec:
  hosts: ["*.example.com"]
  tls: {secretName: wild}
  routes: [{path: /, backend: {url: "http://10.0.0.5:8000"}}]
"#,
    );
    o.secrets.push(Arc::new(super::tls::tests::tls_secret(
        "ai", "wild", &crt, &key,
    )));
    let t = translate(&o, &Options::default());
    assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
    assert!(t.config.certs.find("a.example.com").is_some());
    assert!(t.config.certs.find("example.com").is_none());
    assert!(t.config.certs.find("a.b.example.com").is_none());
    assert_eq!(
        route(&t, "a.example.com", "/")
            .unwrap()
            .policy
            .https_redirect,
        Some(308)
    );
}
