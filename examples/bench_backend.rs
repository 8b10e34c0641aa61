//! The fast backend the benchmarks in `bench/` put behind nginx and airgate.
//!
//! One single-threaded process (the harness pins it to one CPU beside the load generator)
//! serving plain HTTP/1.1 and, when given a certificate, TLS with HTTP/1.1 and HTTP/2 by
//! ALPN, so the "direct" column of every scenario talks to the same server the proxies do.
//!
//! Answers, by path (a suffix match, so any route prefix in front works):
//! - `…/sse?n=200&ms=10`: `n` server-sent events `ms` apart, each carrying the wall-clock
//!   time it was written in nanoseconds, so a client can measure the delay per event;
//! - `…/download?bytes=N`: N bytes streamed in 64 KiB chunks;
//! - `…/auth`: 200 with `X-User-Id`, the auth hook;
//! - any POST/PUT: reads the whole body and answers its length;
//! - anything else: a 13-byte body.
//!
//! Usage: `bench_backend [--http ADDR] [--https ADDR --cert PEM --key PEM]`; prints
//! `http=PORT` and `https=PORT` lines once listening, then serves until killed.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, Infallible>;

const SMALL: &[u8] = b"hello, world\n";
const CHUNK: usize = 64 * 1024;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn query(req: &Request<Incoming>, name: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        if k == name { v.parse().ok() } else { None }
    })
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let mut resp = if req.method() == http::Method::POST || req.method() == http::Method::PUT {
        let mut body = req.into_body();
        let mut n: u64 = 0;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        n += d.len() as u64;
                    }
                }
                Err(_) => break,
            }
        }
        Response::new(full(format!("{n}\n")))
    } else if path.ends_with("/sse") {
        let n = query(&req, "n").unwrap_or(200);
        let ms = query(&req, "ms").unwrap_or(10);
        // The first event goes out at once so the client's first reading is not the
        // connection setup; then one every `ms`, timestamped as it is handed to hyper.
        let events = stream::unfold(0u64, move |i| async move {
            if i >= n {
                return None;
            }
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            let line = format!("id: {i}\ndata: {}\n\n", now_ns());
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from(line))), i + 1))
        });
        let mut r = Response::new(StreamBody::new(events).boxed());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/event-stream"),
        );
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-cache"),
        );
        r
    } else if path.ends_with("/download") {
        let total = query(&req, "bytes").unwrap_or(1 << 20);
        let chunk = Bytes::from(vec![b'x'; CHUNK]);
        let chunks = stream::unfold(total, move |left| {
            let chunk = chunk.clone();
            async move {
                if left == 0 {
                    return None;
                }
                let take = left.min(CHUNK as u64);
                let data = chunk.slice(..take as usize);
                Some((Ok::<_, Infallible>(Frame::data(data)), left - take))
            }
        });
        let mut r = Response::new(StreamBody::new(chunks).boxed());
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, header::HeaderValue::from(total));
        r
    } else if path.ends_with("/auth") {
        let mut r = Response::new(full(Bytes::new()));
        r.headers_mut()
            .insert("x-user-id", header::HeaderValue::from_static("bench"));
        r
    } else {
        let mut r = Response::new(full(Bytes::from_static(SMALL)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain"),
        );
        r
    };
    if resp.status() == StatusCode::OK {
        resp.headers_mut()
            .insert("x-backend", header::HeaderValue::from_static("bench"));
    }
    Ok(resp)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn tls_acceptor(cert: &str, key: &str) -> Result<tokio_rustls::TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("reading {cert}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("parsing {cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("reading {key}: {e}"))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("certificate: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

async fn serve_plain(listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), service_fn(handle))
                .await;
        });
    }
}

async fn serve_tls(listener: TcpListener, acceptor: tokio_rustls::TlsAcceptor) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder.http2().max_concurrent_streams(1000);
            let _ = builder
                .serve_connection(TokioIo::new(tls), service_fn(handle))
                .await;
        });
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let http: SocketAddr = arg(&args, "--http")
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()
        .map_err(|e| format!("--http: {e}"))?;
    let plain = TcpListener::bind(http)
        .await
        .map_err(|e| format!("bind {http}: {e}"))?;
    println!(
        "http={}",
        plain.local_addr().map_err(|e| e.to_string())?.port()
    );
    let tls = match (
        arg(&args, "--https"),
        arg(&args, "--cert"),
        arg(&args, "--key"),
    ) {
        (Some(addr), Some(cert), Some(key)) => {
            let addr: SocketAddr = addr.parse().map_err(|e| format!("--https: {e}"))?;
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| format!("bind {addr}: {e}"))?;
            println!(
                "https={}",
                l.local_addr().map_err(|e| e.to_string())?.port()
            );
            Some((l, tls_acceptor(&cert, &key)?))
        }
        _ => None,
    };
    // The harness reads the ports from a pipe: make sure they leave the buffer.
    use std::io::Write;
    let _ = std::io::stdout().flush();
    match tls {
        Some((l, acceptor)) => {
            tokio::join!(serve_plain(plain), serve_tls(l, acceptor));
        }
        None => serve_plain(plain).await,
    }
    Ok(())
}
