//! `airgate check` and `airgate crd`, run as a user would.
mod file_mode_harness;

use std::path::Path;
use std::process::Output;

use file_mode_harness::{BIN, airroute};

fn run(args: &[&str]) -> Output {
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(args).env_remove("RUST_BACKTRACE");
    for (k, _) in std::env::vars() {
        if k.starts_with("AIRGATE_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("run airgate")
}

fn check(path: &Path) -> (i32, String, String) {
    let out = run(&["check", "--config", path.to_str().expect("utf8 path")]);
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_a_good_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("r.yaml"),
        airroute("ai", "stack", &[("/llm/", "http://127.0.0.1:9".into())]),
    )
    .expect("write");
    let (code, stdout, stderr) = check(dir.path());
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("ok: "), "{stdout}");
    assert!(
        stdout.contains("(1 file, 1 object): 0 errors, 0 warnings"),
        "{stdout}"
    );
}

#[test]
fn check_reports_parse_errors_with_file_document_object_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = airroute("ai", "stack", &[("/llm/", "http://127.0.0.1:9".into())]);
    let bad = "apiVersion: airgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {name: oops, namespace: ai}\nspec:\n  routes:\n    - path: /x/\n      backend: {url: \"http://127.0.0.1:9\"}\n      websocket: maybe\n";
    std::fs::write(dir.path().join("all.yaml"), format!("{good}---\n{bad}")).expect("write");
    let (code, stdout, _) = check(dir.path());
    assert_eq!(code, 1, "{stdout}");
    let file = dir.path().join("all.yaml");
    let expected = format!(
        "error: AIRoute ai/oops ({}#2) spec.routes[0].websocket: ",
        file.display()
    );
    assert!(
        stdout.lines().any(|l| l.starts_with(&expected)),
        "want {expected:?} in:\n{stdout}"
    );
    assert!(stdout.contains("failed: "), "{stdout}");
    assert!(stdout.contains("1 error, 0 warnings"), "{stdout}");
}

#[test]
fn check_warnings_do_not_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\n",
    )
    .expect("write");
    let (code, stdout, _) = check(dir.path());
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("warning: ConfigMap default/settings"),
        "{stdout}"
    );
    assert!(stdout.contains("0 errors, 1 warning"), "{stdout}");
}

/// Translation problems (not only YAML shape) are reported with their field.
#[test]
fn check_reports_translation_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = "apiVersion: airgate.dev/v1alpha1\nkind: AIRoute\nmetadata: {name: zones, namespace: ai}\nspec:\n  routes:\n    - path: /llm/\n      backend: {url: \"http://127.0.0.1:9\"}\n      rateLimit: {zone: nosuchzone}\n";
    std::fs::write(dir.path().join("z.yaml"), doc).expect("write");
    let (code, stdout, _) = check(dir.path());
    assert_eq!(code, 1, "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("error: AIRoute ai/zones ("))
        .unwrap_or_else(|| panic!("no diagnostic for the unknown zone:\n{stdout}"));
    assert!(
        line.contains("z.yaml#1) spec.routes[0].rateLimit.zone"),
        "{line}"
    );
}

#[test]
fn check_fails_clearly_on_a_missing_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope");
    let (code, stdout, stderr) = check(&missing);
    assert_eq!(code, 1);
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(
        stderr.trim(),
        format!(
            "airgate: config path {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
}

#[test]
fn crd_prints_the_airroute_definition() {
    let out = run(&["crd"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf8");
    let crd: serde_yaml::Value = serde_yaml::from_str(&text).expect("CRD is YAML");
    assert_eq!(crd["kind"].as_str(), Some("CustomResourceDefinition"));
    assert_eq!(
        crd["metadata"]["name"].as_str(),
        Some("airoutes.airgate.dev")
    );
    assert_eq!(crd["spec"]["names"]["shortNames"][0].as_str(), Some("air"));
    assert_eq!(crd["spec"]["scope"].as_str(), Some("Namespaced"));
}

#[test]
fn help_lists_env_twins() {
    let out = run(&["serve", "--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for env in [
        "AIRGATE_CONFIG",
        "AIRGATE_HTTP_ADDR",
        "AIRGATE_HTTPS_ADDR",
        "AIRGATE_ADMIN_ADDR",
        "AIRGATE_LOG_FORMAT",
        "AIRGATE_ACCESS_LOG",
    ] {
        assert!(
            text.contains(env),
            "{env} missing from serve --help:\n{text}"
        );
    }
}

#[test]
fn env_twins_configure_like_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    )
    .expect("write");
    let out = std::process::Command::new(BIN)
        .arg("check")
        .env("AIRGATE_CONFIG", dir.path())
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 warning"));
}
