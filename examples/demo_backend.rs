//! Demo AI backends for `examples/ai-stack`, all in one process on one port
//! (`DEMO_ADDR`, default 127.0.0.1:9100), told apart by path the way the nginx configs
//! airgate replaces route them:
//!
//! - `POST .../audio/speech` (TTS): a short WAV tone.
//! - `POST .../audio/transcriptions` (STT): reads the upload, answers JSON.
//! - `POST .../chat/completions` (LLM, OpenAI-compatible): JSON, or SSE chunks when the
//!   body says `"stream": true`; `GET .../models` lists the model.
//! - `POST /api/upload/...`: counts the bytes it received without buffering them.
//! - `GET /ws/...` with `Upgrade: websocket`: echoes every message.
//! - anything else: 404 JSON naming the path (handy to see what `stripPrefix` did).
//!
//! Run: `cargo run --example demo_backend`.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::{Message, handshake::derive_accept_key};

type Body = BoxBody<Bytes, Infallible>;

/// Words the fake LLM streams back, one SSE event each.
const WORDS: &[&str] = &[
    "Hello", " from", " the", " airgate", " demo", " model.", " Tokens", " arrive", " one", " by",
    " one.",
];
/// Largest request body the JSON endpoints read (uploads are streamed, not read whole).
const MAX_JSON_BODY: usize = 1024 * 1024;

#[allow(dead_code)] // unused when tests include this file as a module
#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::var("DEMO_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:9100".into())
        .parse()
        .map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("DEMO_ADDR: {e}"))
        })?;
    let listener = TcpListener::bind(addr).await?;
    println!("demo backend listening on {}", listener.local_addr()?);
    tokio::select! {
        _ = serve(listener, token_delay()) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}

fn token_delay() -> Duration {
    let ms = std::env::var("DEMO_TOKEN_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    Duration::from_millis(ms)
}

/// Serve forever on `listener` (HTTP/1.1 and h2c, with upgrades).
pub async fn serve(listener: TcpListener, token_delay: Duration) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(req, token_delay));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    token_delay: Duration,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    let resp = if path.starts_with("/ws") && is_websocket(&req) {
        websocket(req)
    } else if path.ends_with("/audio/speech") && req.method() == Method::POST {
        tts()
    } else if path.ends_with("/audio/transcriptions") && req.method() == Method::POST {
        stt(req).await
    } else if path.ends_with("/chat/completions") && req.method() == Method::POST {
        chat(req, token_delay).await
    } else if path.ends_with("/models") {
        json(
            StatusCode::OK,
            serde_json::json!({"object": "list", "data": [{"id": "demo", "object": "model", "owned_by": "airgate-demo"}]}),
        )
    } else if path.starts_with("/api/upload") && req.method() == Method::POST {
        upload(req).await
    } else if path == "/healthz" {
        json(StatusCode::OK, serde_json::json!({"status": "ok"}))
    } else {
        json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": {"message": format!("demo backend has nothing at {path}"), "type": "not_found", "code": 404}}),
        )
    };
    Ok(resp)
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// One second of a 440 Hz tone, 16 kHz mono 16-bit PCM.
fn tts() -> Response<Body> {
    const RATE: u32 = 16_000;
    let samples: Vec<i16> = (0..RATE)
        .map(|i| {
            let t = i as f32 / RATE as f32;
            ((t * 440.0 * std::f32::consts::TAU).sin() * 8000.0) as i16
        })
        .collect();
    let data_len = (samples.len() * 2) as u32;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&RATE.to_le_bytes());
    wav.extend_from_slice(&(RATE * 2).to_le_bytes()); // byte rate
    wav.extend_from_slice(&2u16.to_le_bytes()); // block align
    wav.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        wav.extend_from_slice(&s.to_le_bytes());
    }
    let mut resp = Response::new(full(wav));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    resp
}

/// Count a request body's bytes as they stream in.
async fn count_body(req: Request<Incoming>) -> Result<u64, String> {
    let mut body = req.into_body();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(data) = frame.data_ref() {
            total += data.len() as u64;
        }
    }
    Ok(total)
}

async fn stt(req: Request<Incoming>) -> Response<Body> {
    match count_body(req).await {
        Ok(n) => json(
            StatusCode::OK,
            serde_json::json!({"text": "hello from the demo transcriber", "bytes": n}),
        ),
        Err(e) => json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": {"message": e}}),
        ),
    }
}

async fn upload(req: Request<Incoming>) -> Response<Body> {
    match count_body(req).await {
        Ok(n) => json(StatusCode::OK, serde_json::json!({"bytes_received": n})),
        Err(e) => json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": {"message": e}}),
        ),
    }
}

async fn chat(req: Request<Incoming>, token_delay: Duration) -> Response<Body> {
    let limited = http_body_util::Limited::new(req.into_body(), MAX_JSON_BODY);
    let body = match limited.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": {"message": format!("reading body: {e}")}}),
            );
        }
    };
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let model = request["model"].as_str().unwrap_or("demo").to_string();
    if request["stream"].as_bool() != Some(true) {
        return json(
            StatusCode::OK,
            serde_json::json!({
                "id": "chatcmpl-demo", "object": "chat.completion", "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": WORDS.concat()}}],
            }),
        );
    }
    // Events go out one by one with a pause, like a real model generating tokens; a
    // buffering proxy would show them all at once at the end.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
    tokio::spawn(async move {
        for word in WORDS {
            let chunk = serde_json::json!({
                "id": "chatcmpl-demo", "object": "chat.completion.chunk", "model": model,
                "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": null}],
            });
            if tx
                .send(Ok(Frame::data(Bytes::from(format!("data: {chunk}\n\n")))))
                .await
                .is_err()
            {
                return; // client went away
            }
            tokio::time::sleep(token_delay).await;
        }
        let _ = tx
            .send(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n"))))
            .await;
    });
    let stream = tokio_stream_from(rx);
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn is_websocket(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

fn websocket(req: Request<Incoming>) -> Response<Body> {
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return json(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": {"message": "missing Sec-WebSocket-Key"}}),
        );
    };
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        // Bounded: a demo connection echoes at most this many messages.
        for _ in 0..100_000 {
            match ws.next().await {
                Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                    if ws.send(msg).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    });
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    resp
}
