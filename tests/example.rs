//! The bundled example (`examples/ai-stack` + `examples/demo_backend.rs`) really works:
//! the manifests pass `check`, and every route of the stack answers through airgate.
mod file_mode_harness;

#[allow(dead_code)]
#[path = "../examples/demo_backend.rs"]
mod demo;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use file_mode_harness::{Airgate, BIN, client};

fn example_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
        .join("examples/ai-stack")
}

#[test]
fn example_manifests_pass_check() {
    let out = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(example_dir())
        .env_remove("AIRGATE_INGRESS_CLASS")
        .output()
        .expect("run check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(": 0 errors, 0 warnings"), "{stdout}");
}

/// Copy the example, pointing its backends at `demo` instead of the fixed 9100.
fn example_copy(demo: SocketAddr) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(example_dir()).expect("read example dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).expect("read manifest");
            let text = text
                .replace("http://127.0.0.1:9100", &format!("http://{demo}"))
                .replace("port: 9100", &format!("port: {}", demo.port()));
            std::fs::write(dir.path().join(path.file_name().expect("name")), text)
                .expect("write manifest");
        }
    }
    dir
}

struct Stack {
    ag: Airgate,
    _dir: tempfile::TempDir,
    demo: tokio::task::JoinHandle<()>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.demo.abort();
    }
}

async fn stack(token_delay: Duration) -> Stack {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind demo");
    let addr = listener.local_addr().expect("demo addr");
    let demo = tokio::spawn(demo::serve(listener, token_delay));
    let dir = example_copy(addr);
    let ag = Airgate::serve(dir.path(), &[]).await;
    Stack {
        ag,
        _dir: dir,
        demo,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tts_stt_and_upload_routes() {
    let s = stack(Duration::from_millis(10)).await;
    let c = client();

    let resp = c
        .post(s.ag.url("/tts/v1/audio/speech"))
        .body(r#"{"input":"hello"}"#)
        .send()
        .await
        .expect("tts");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "audio/wav");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    let wav = resp.bytes().await.expect("wav");
    assert_eq!(&wav[..4], b"RIFF");
    assert_eq!(&wav[8..12], b"WAVE");

    // stripPrefix: the TTS route only reaches the backend with /tts removed, so an
    // unstripped path would have been a backend 404.
    let resp = c
        .post(s.ag.url("/stt/v1/audio/transcriptions"))
        .body(wav.clone())
        .send()
        .await
        .expect("stt");
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.expect("stt json");
    assert_eq!(v["bytes"], wav.len());

    let big = vec![7u8; 8 * 1024 * 1024];
    let resp = c
        .post(s.ag.url("/api/upload/dataset.bin"))
        .body(big.clone())
        .send()
        .await
        .expect("upload");
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.expect("upload json");
    assert_eq!(v["bytes_received"], big.len());

    // The TTS route allows 1Mi; more is refused by airgate with an OpenAI-shaped error.
    let resp = c
        .post(s.ag.url("/tts/v1/audio/speech"))
        .body(vec![b'x'; 2 * 1024 * 1024])
        .send()
        .await
        .expect("too big");
    assert_eq!(resp.status(), 413);
    let v: serde_json::Value = resp.json().await.expect("error json");
    assert!(v["error"]["message"].is_string(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_streams_sse_chunks_as_they_are_made() {
    let s = stack(Duration::from_millis(150)).await;
    let c = client();
    let started = Instant::now();
    let resp = c
        .post(s.ag.url("/llm/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(r#"{"model":"demo","stream":true,"messages":[{"role":"user","content":"hi"}]}"#)
        .send()
        .await
        .expect("chat");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut stream = resp.bytes_stream();
    let mut text = String::new();
    let mut first_chunk_at = None;
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("chunk within 10s")
    {
        let chunk = chunk.expect("chunk");
        first_chunk_at.get_or_insert_with(|| started.elapsed());
        text.push_str(std::str::from_utf8(&chunk).expect("utf8"));
    }
    let total = started.elapsed();
    let first = first_chunk_at.expect("at least one chunk");
    // 11 words 150 ms apart: a buffering proxy would deliver everything after ~1.6 s.
    assert!(total >= Duration::from_millis(1500), "{total:?}");
    assert!(
        first < Duration::from_millis(700),
        "first chunk after {first:?} of {total:?}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert_eq!(text.matches("chat.completion.chunk").count(), 11, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_cors_and_the_legacy_ingress() {
    let s = stack(Duration::from_millis(10)).await;
    let connect = tokio_tungstenite::connect_async(format!("ws://{}/ws/echo", s.ag.http));
    let (mut ws, resp) = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .expect("websocket handshake within 10s")
        .expect("websocket through airgate");
    assert_eq!(resp.status(), 101);
    for i in 0..3 {
        ws.send(Message::text(format!("ping {i}")))
            .await
            .expect("send");
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("echo within 5s")
            .expect("open")
            .expect("message");
        assert_eq!(msg, Message::text(format!("ping {i}")));
    }
    ws.close(None).await.expect("close");

    let c = client();
    let resp = c
        .request(
            reqwest::Method::OPTIONS,
            s.ag.url("/llm/v1/chat/completions"),
        )
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .expect("preflight");
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let resp = c
        .request(
            reqwest::Method::OPTIONS,
            s.ag.url("/llm/v1/chat/completions"),
        )
        .header("origin", "https://evil.example.net")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("preflight");
    assert!(resp.headers().get("access-control-allow-origin").is_none());

    // The migration Ingresses answer on their host with the same backends.
    let resp = c
        .get(s.ag.url("/llm/v1/models"))
        .header("host", "legacy.localhost")
        .send()
        .await
        .expect("legacy");
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.expect("models json");
    assert_eq!(v["data"][0]["id"], "demo");
}
