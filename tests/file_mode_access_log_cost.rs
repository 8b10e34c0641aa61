//! What the access log costs the request path: formatting one line, and `log()`
//! (format + enqueue to the writer thread). A measurement, not a check:
//! `cargo test --release --test file_mode_access_log_cost -- --ignored --nocapture`
use std::time::{Duration, Instant, SystemTime};

use airgate::cli::LogFormat;
use airgate::telemetry::access::{self, AccessLogTarget, AccessRecord};

fn record<'a>() -> AccessRecord<'a> {
    AccessRecord {
        method: "POST",
        host: "ai.example.com",
        path: "/llm/v1/chat/completions",
        protocol: "HTTP/1.1",
        status: 200,
        bytes_sent: 5120,
        request_time: Duration::from_millis(1234),
        upstream_time: Some(Duration::from_millis(12)),
        upstream_addr: Some("127.0.0.1:9000".parse().expect("addr")),
        route: Some("airroute/ai/ai-stack/llm"),
        client_ip: "10.0.0.7".parse().expect("ip"),
        request_id: "5b0e8f6c2a8d4d7e9d2f0b1c3a4e5f60",
        user_agent: Some("openai-python/1.50.0"),
    }
}

#[test]
#[ignore = "measurement, not a check"]
fn access_log_cost() {
    let r = record();
    let n = 200_000u32;
    for format in [LogFormat::Text, LogFormat::Json] {
        let t = Instant::now();
        let mut bytes = 0;
        for _ in 0..n {
            bytes += access::format_line(&r, format, SystemTime::now()).len();
        }
        println!(
            "{format:?}: format_line {:?}/line ({} bytes)",
            t.elapsed() / n,
            bytes / n as usize
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("access.log");
    let guard = access::init(&AccessLogTarget::File(path.clone()), LogFormat::Text).expect("init");
    let t = Instant::now();
    for _ in 0..n {
        access::log(&r);
    }
    let per = t.elapsed() / n;
    guard.flush();
    let total = t.elapsed();
    let lines = std::fs::read_to_string(&path).expect("log").lines().count();
    let dropped = airgate::telemetry::metrics().access_log_dropped.get();
    println!(
        "log(): {per:?}/call on the request path; {lines} lines on disk after {total:?}; dropped {dropped}"
    );
    assert_eq!(lines as u64 + dropped, u64::from(n));
}
