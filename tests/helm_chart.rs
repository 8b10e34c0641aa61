//! The Helm chart's generated and copied parts must not drift from their
//! sources: the chart's appVersion from the crate version, the chart's CRD
//! copy from `airgate crd`, and docs/helm.md from values.yaml.
//! (Rendering and installing the chart is tested on a real API server in
//! `e2e/helm.rs`.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

fn read(rel: &str) -> String {
    let path = root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn yaml(rel: &str) -> serde_yaml::Value {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("parsing {rel}: {e}"))
}

#[test]
fn chart_app_version_is_the_crate_version() {
    let chart = yaml("charts/airgate/Chart.yaml");
    let app_version = chart["appVersion"]
        .as_str()
        .expect("Chart.yaml appVersion must be a string");
    assert_eq!(
        app_version,
        env!("CARGO_PKG_VERSION"),
        "charts/airgate/Chart.yaml appVersion must equal the version in Cargo.toml (it is the default image tag)"
    );
}

#[test]
fn chart_crd_is_the_generated_crd() {
    let chart_copy = read("charts/airgate/crds/airroute.yaml");
    let regen = "regenerate with: cargo run -q -- crd > crds/airroute.yaml && cp crds/airroute.yaml charts/airgate/crds/airroute.yaml";
    assert!(
        chart_copy == airgate::api::crd_yaml(),
        "charts/airgate/crds/airroute.yaml differs from `airgate crd`; {regen}"
    );
    // crds/ is the committed copy users apply without Helm; both must agree.
    let committed = root().join("crds/airroute.yaml");
    if Path::new(&committed).exists() {
        assert!(
            chart_copy == read("crds/airroute.yaml"),
            "charts/airgate/crds/airroute.yaml differs from crds/airroute.yaml; {regen}"
        );
    }
}

/// Every leaf of values.yaml, as dotted path -> value. Empty maps and lists
/// are leaves too (they are values a user sets).
fn leaves(prefix: &str, v: &serde_yaml::Value, out: &mut BTreeMap<String, serde_yaml::Value>) {
    match v {
        serde_yaml::Value::Mapping(m) if !m.is_empty() => {
            for (k, child) in m {
                let k = k.as_str().expect("values.yaml keys are strings");
                let path = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&path, child, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), v.clone());
        }
    }
}

fn lookup<'a>(v: &'a serde_yaml::Value, dotted: &str) -> Option<&'a serde_yaml::Value> {
    dotted.split('.').try_fold(v, |v, k| v.get(k))
}

/// The values table of docs/helm.md: key -> default cell (JSON).
fn documented() -> BTreeMap<String, String> {
    let doc = read("docs/helm.md");
    let mut rows = BTreeMap::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        if cells.len() < 3 {
            continue;
        }
        let key = cells[0].trim_start_matches("| ").trim_matches('`');
        let default = cells[1].trim_matches('`');
        // The "What the chart creates" table also has backticked first cells.
        if key.contains(' ') || key.contains('<') {
            continue;
        }
        rows.insert(key.to_string(), default.to_string());
    }
    rows
}

#[test]
fn docs_list_every_value_with_its_default() {
    let values = yaml("charts/airgate/values.yaml");
    let mut all = BTreeMap::new();
    leaves("", &values, &mut all);
    assert!(
        all.len() > 30,
        "values.yaml looks truncated: {} leaves",
        all.len()
    );
    let docs = documented();

    let fix = "update docs/helm.md with scripts/helm-docs-check.sh --write";
    let missing: Vec<&String> = all
        .keys()
        .filter(|leaf| {
            // A documented ancestor (e.g. `resources`) covers its children.
            let parts: Vec<&str> = leaf.split('.').collect();
            !(1..=parts.len()).any(|n| docs.contains_key(&parts[..n].join(".")))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "values missing from docs/helm.md: {missing:?}; {fix}"
    );

    for (key, cell) in &docs {
        let actual = lookup(&values, key).unwrap_or_else(|| {
            panic!("docs/helm.md documents `{key}`, which values.yaml does not have; {fix}")
        });
        let actual = serde_json::to_value(actual).expect("values.yaml is JSON-representable");
        let shown: serde_json::Value = serde_json::from_str(cell).unwrap_or_else(|e| {
            panic!("docs/helm.md default of `{key}` is not JSON ({cell}): {e}")
        });
        assert_eq!(
            shown, actual,
            "docs/helm.md shows a stale default for `{key}`; {fix}"
        );
    }
}
