//! The committed CRD must be the one the code generates, and it must be a schema the
//! Kubernetes API server accepts (structural, CEL rules bounded in cost).
use std::path::PathBuf;

use serde_json::Value;

fn generated() -> Value {
    serde_yaml::from_str(&airgate::api::crd_yaml()).expect("generated CRD is YAML")
}

fn spec_schema(crd: &Value) -> &Value {
    &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
}

#[test]
fn committed_crd_matches_generated() {
    // The checkout running the test, not the one the binary was built from (see
    // docs/operations.md, "Tests").
    let path = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("crds/airroute.yaml");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == airgate::api::crd_yaml(),
        "crds/airroute.yaml is out of date with src/api; run `cargo run -- crd > crds/airroute.yaml` and commit it"
    );
}

/// Kubernetes requires a structural schema: every node has a type (or is int-or-string),
/// and anyOf/allOf/oneOf/not carry no types or properties.
fn check_structural(node: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(obj) = node.as_object() else {
        return;
    };
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if !obj.contains_key("type") && !int_or_string && !preserve {
        problems.push(format!("{path}: no type"));
    }
    for key in ["anyOf", "allOf", "oneOf"] {
        if let Some(branches) = obj.get(key).and_then(Value::as_array) {
            for (i, b) in branches.iter().enumerate() {
                if b.get("type").is_some() || b.get("properties").is_some() {
                    problems.push(format!(
                        "{path}.{key}[{i}]: type/properties not allowed here"
                    ));
                }
            }
        }
    }
    if let Some(e) = obj.get("enum").and_then(Value::as_array) {
        if e.iter().any(Value::is_null) {
            problems.push(format!("{path}: null in enum"));
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            check_structural(v, &format!("{path}.{k}"), problems);
        }
    }
    if let Some(items) = obj.get("items") {
        check_structural(items, &format!("{path}[]"), problems);
    }
}

#[test]
fn schema_is_structural() {
    let crd = generated();
    let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut problems = Vec::new();
    check_structural(root, "", &mut problems);
    assert!(problems.is_empty(), "not structural: {problems:#?}");
}

/// CEL rules are rejected at CRD creation when their estimated cost is unbounded: every
/// list in spec has maxItems and every string inside a list has maxLength.
#[test]
fn spec_lists_and_their_strings_are_bounded() {
    fn walk(node: &Value, path: &str, in_list: bool, problems: &mut Vec<String>) {
        let ty = node.get("type").and_then(Value::as_str);
        if ty == Some("array") {
            if node.get("maxItems").is_none() {
                problems.push(format!("{path}: array without maxItems"));
            }
            if let Some(items) = node.get("items") {
                walk(items, &format!("{path}[]"), true, problems);
            }
        }
        if ty == Some("string")
            && in_list
            && node.get("maxLength").is_none()
            && node.get("enum").is_none()
        {
            problems.push(format!("{path}: string in a list without maxLength"));
        }
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (k, v) in props {
                walk(v, &format!("{path}.{k}"), in_list, problems);
            }
        }
    }
    let crd = generated();
    let mut problems = Vec::new();
    walk(spec_schema(&crd), "spec", false, &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
}

fn rules(node: &Value) -> Vec<String> {
    node["x-kubernetes-validations"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["rule"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn cel_rules_cover_cross_field_constraints() {
    let crd = generated();
    let spec = spec_schema(&crd);
    let spec_rules = rules(spec).join("\n");
    assert!(spec_rules.contains("r.rateLimit.zone"), "{spec_rules}");
    assert!(spec_rules.contains("has(self.authHook)"), "{spec_rules}");
    let props = &spec["properties"];
    assert!(
        rules(&props["rateZones"])
            .iter()
            .any(|r| r.contains("exists_one"))
    );
    let route = &props["routes"]["items"]["properties"];
    assert_eq!(
        rules(&route["backend"]),
        ["has(self.service) != has(self.url)"]
    );
    assert_eq!(
        rules(&props["authHook"]),
        ["has(self.url) != has(self.service)"]
    );
    assert!(
        rules(&props["cors"])
            .iter()
            .any(|r| r.contains("allowCredentials"))
    );
    assert_eq!(props["routes"]["minItems"], 1);
    assert_eq!(
        route["pathType"]["enum"],
        serde_json::json!(["Prefix", "Exact"])
    );
    let port = &route["backend"]["properties"]["service"]["properties"]["port"];
    assert_eq!(port["x-kubernetes-int-or-string"], true);
    assert!(rules(port)[0].contains("type(self) == string"));
}

fn pattern(node: &Value) -> regex::Regex {
    let p = node["pattern"].as_str().expect("pattern");
    regex::Regex::new(p).expect("pattern compiles")
}

/// The API server's patterns accept what users write and refuse the classic mistakes.
#[test]
fn patterns_accept_and_reject_what_users_write() {
    let crd = generated();
    let props = &spec_schema(&crd)["properties"];
    let zone = &props["rateZones"]["items"]["properties"];
    let route = &props["routes"]["items"]["properties"];
    let cases: Vec<(&str, &Value, Vec<&str>, Vec<&str>)> = vec![
        (
            "hosts",
            &props["hosts"]["items"],
            vec!["ai.example.com", "*.example.com", "localhost"],
            vec![
                "*",
                "a.*.com",
                "AI.example.com",
                "ai.example.com:443",
                "-a.com",
                "*example.com",
            ],
        ),
        (
            "rate",
            &zone["rate"],
            vec!["10r/s", "4r/m"],
            vec!["0r/s", "10/s", "10r/h", "10 r/s", "r/s"],
        ),
        (
            "key",
            &zone["key"],
            vec!["clientIP", "header:X-API-Key"],
            vec!["clientip", "header:", "cookie:x", "header:X Key"],
        ),
        (
            "size",
            &zone["size"],
            vec!["10Mi", "1Gi", "0", "512Ki", "1.5Mi"],
            vec!["10MB", "Mi", "-1", "10 Mi"],
        ),
        (
            "timeouts.read",
            &route["timeouts"]["properties"]["read"],
            vec!["500ms", "60s", "5m", "1h30m", "1.5s", "0"],
            vec!["60", "5x", "", "s"],
        ),
        (
            "path",
            &route["path"],
            vec!["/", "/v1/chat", "/tts/"],
            vec!["v1", "/a b", "/a?x=1"],
        ),
        (
            "backend.url",
            &route["backend"]["properties"]["url"],
            vec![
                "http://127.0.0.1:9010",
                "https://api.example.com/v1/",
                "http://[::1]:8080",
            ],
            vec![
                "ftp://x",
                "127.0.0.1:80",
                "http://u:p@x",
                "http://x/?q=1",
                "http://",
            ],
        ),
        (
            "authHook.url",
            &props["authHook"]["properties"]["url"],
            vec![
                "http://auth.ai.svc:8080/internal/auth",
                "https://a/check?x=1",
            ],
            vec!["auth.ai.svc", "ws://a"],
        ),
        (
            "cors.allowOrigins",
            &props["cors"]["properties"]["allowOrigins"]["items"],
            vec![
                "*",
                "https://app.example.com",
                "https://*.example.com",
                "http://localhost:3000",
            ],
            vec!["app.example.com", "https://app.example.com/", "https://*"],
        ),
    ];
    for (name, node, good, bad) in cases {
        let re = pattern(node);
        for g in good {
            assert!(re.is_match(g), "{name}: {g:?} should be accepted");
        }
        for b in bad {
            assert!(!re.is_match(b), "{name}: {b:?} should be rejected");
        }
    }
}

/// Every value the schema accepts for these fields must also parse in translation, so a
/// route the API server admitted is not rejected later for format alone.
#[test]
fn examples_admitted_by_schema_translate_cleanly() {
    use airgate::translate::units::{parse_duration, parse_quantity, parse_rate};
    for d in ["500ms", "60s", "5m", "1h30m", "1.5s", "0"] {
        assert!(parse_duration(d).is_ok(), "{d}");
    }
    for q in ["10Mi", "1Gi", "0", "512Ki", "1.5Mi", "8M", "100k"] {
        assert!(parse_quantity(q).is_ok(), "{q}");
    }
    for r in ["10r/s", "4r/m"] {
        assert!(parse_rate(r).is_ok(), "{r}");
    }
}
