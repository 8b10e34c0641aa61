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
//!
//! `bench_backend load --addr IP:PORT --path P --rate R --secs S [--conns C] [-H 'K: V']…
//! [--tls-name NAME --ca PEM [--h2]]` is the fixed-rate load generator (wrk2 style):
//! request `i` is due at `start + i / R`, and its latency is measured from that moment,
//! not from when a connection was free to send it, so a stalled proxy shows up as
//! latency instead of silently lowering the rate (coordinated omission). Prints one JSON
//! line with p50/p99/max in milliseconds.
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
    if args.get(1).map(String::as_str) == Some("load") {
        return load::run(&args).await;
    }
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

mod load {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    use bytes::Bytes;
    use http::{HeaderName, HeaderValue, Request};
    use http_body_util::{BodyExt, Empty};
    use hyper::client::conn::{http1, http2};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::net::TcpStream;
    use tokio::time::Instant;

    use super::arg;

    enum Sender {
        H1(http1::SendRequest<Empty<Bytes>>),
        H2(http2::SendRequest<Empty<Bytes>>),
    }

    struct Target {
        addr: String,
        tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
        h2: bool,
    }

    async fn connect(t: &Target) -> Result<Sender, String> {
        let tcp = TcpStream::connect(&t.addr)
            .await
            .map_err(|e| format!("connect {}: {e}", t.addr))?;
        let _ = tcp.set_nodelay(true);
        match &t.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS to {}: {e}", t.addr))?;
                handshake(TokioIo::new(tls), t.h2).await
            }
            None => handshake(TokioIo::new(tcp), t.h2).await,
        }
    }

    async fn handshake<I>(io: I, h2: bool) -> Result<Sender, String>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        if h2 {
            let (s, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| format!("h2 handshake: {e}"))?;
            tokio::spawn(conn);
            Ok(Sender::H2(s))
        } else {
            let (s, conn) = http1::handshake(io)
                .await
                .map_err(|e| format!("h1 handshake: {e}"))?;
            tokio::spawn(conn);
            Ok(Sender::H1(s))
        }
    }

    fn tls_connector(ca: &str) -> Result<tokio_rustls::TlsConnector, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).map_err(|e| format!("reading {ca}: {e}"))? {
            roots
                .add(cert.map_err(|e| format!("parsing {ca}: {e}"))?)
                .map_err(|e| format!("{ca}: {e}"))?;
        }
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
    }

    pub async fn run(args: &[String]) -> Result<(), String> {
        let need = |n: &str| arg(args, n).ok_or_else(|| format!("load: {n} is required"));
        let addr = need("--addr")?;
        let path = need("--path")?;
        let rate: f64 = need("--rate")?
            .parse()
            .map_err(|e| format!("--rate: {e}"))?;
        let secs: f64 = need("--secs")?
            .parse()
            .map_err(|e| format!("--secs: {e}"))?;
        let conns: usize = arg(args, "--conns")
            .map(|c| c.parse().map_err(|e| format!("--conns: {e}")))
            .transpose()?
            .unwrap_or(32);
        let h2 = args.iter().any(|a| a == "--h2");
        let mut headers = Vec::new();
        for (i, a) in args.iter().enumerate() {
            if a == "-H" {
                let h = args.get(i + 1).ok_or("-H needs a value")?;
                let (k, v) = h
                    .split_once(':')
                    .ok_or_else(|| format!("bad header {h:?}"))?;
                headers.push((
                    HeaderName::try_from(k.trim()).map_err(|e| format!("{k}: {e}"))?,
                    HeaderValue::try_from(v.trim()).map_err(|e| format!("{v}: {e}"))?,
                ));
            }
        }
        let tls = match (arg(args, "--tls-name"), arg(args, "--ca")) {
            (Some(name), Some(ca)) => Some((
                tls_connector(&ca)?,
                ServerName::try_from(name.clone()).map_err(|e| format!("{name}: {e}"))?,
            )),
            _ => None,
        };
        let authority = arg(args, "--tls-name").unwrap_or_else(|| addr.clone());
        let uri: http::Uri = if h2 {
            format!("https://{authority}{path}")
        } else {
            path.clone()
        }
        .parse()
        .map_err(|e| format!("{path}: {e}"))?;
        let target = Target { addr, tls, h2 };

        // h2 multiplexes the workers over a few connections; h1 needs one per worker.
        let n_conns = if h2 { conns.div_ceil(8).max(1) } else { conns };
        let mut senders = Vec::with_capacity(n_conns);
        for _ in 0..n_conns {
            senders.push(connect(&target).await?);
        }
        let total = (rate * secs).round() as u64;
        let period = Duration::from_secs_f64(1.0 / rate);
        let next = Arc::new(AtomicU64::new(0));
        let start = Instant::now() + Duration::from_millis(50);
        let deadline = start + Duration::from_secs_f64(secs) + Duration::from_secs(30);
        let headers = Arc::new(headers);
        let host =
            HeaderValue::try_from(authority.as_str()).map_err(|e| format!("{authority}: {e}"))?;
        let workers: Vec<Sender> = if h2 {
            (0..conns)
                .filter_map(|w| match &senders[w % n_conns] {
                    Sender::H2(s) => Some(Sender::H2(s.clone())),
                    Sender::H1(_) => None,
                })
                .collect()
        } else {
            senders
        };
        let mut tasks = Vec::with_capacity(conns);
        for mut sender in workers {
            let next = next.clone();
            let headers = headers.clone();
            let uri = uri.clone();
            let host = host.clone();
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total || Instant::now() > deadline {
                        break;
                    }
                    let due = start + period.mul_f64(i as f64);
                    tokio::time::sleep_until(due).await;
                    let mut req = Request::get(uri.clone());
                    if let Some(h) = req.headers_mut() {
                        if matches!(sender, Sender::H1(_)) {
                            h.insert(http::header::HOST, host.clone());
                        }
                        for (k, v) in headers.iter() {
                            h.insert(k.clone(), v.clone());
                        }
                    }
                    let Ok(req) = req.body(Empty::<Bytes>::new()) else {
                        errors += 1;
                        continue;
                    };
                    let resp = match &mut sender {
                        Sender::H1(s) => match s.ready().await {
                            Ok(()) => s.send_request(req).await,
                            Err(e) => Err(e),
                        },
                        Sender::H2(s) => s.send_request(req).await,
                    };
                    let ok = match resp {
                        Ok(r) if r.status().is_success() => r.into_body().collect().await.is_ok(),
                        _ => false,
                    };
                    if ok {
                        lat.push(due.elapsed().as_nanos() as u64);
                    } else {
                        errors += 1;
                    }
                }
                (lat, errors)
            }));
        }
        let mut all = Vec::with_capacity(total as usize);
        let mut errors = 0;
        for t in tasks {
            let (l, e) = t.await.map_err(|e| format!("worker: {e}"))?;
            all.extend(l);
            errors += e;
        }
        all.sort_unstable();
        let q = |p: f64| -> f64 {
            if all.is_empty() {
                return 0.0;
            }
            let i = ((all.len() - 1) as f64 * p).round() as usize;
            all[i] as f64 / 1e6
        };
        println!(
            "{{\"requests\":{},\"errors\":{},\"p50_ms\":{:.4},\"p99_ms\":{:.4},\"max_ms\":{:.4}}}",
            all.len(),
            errors,
            q(0.5),
            q(0.99),
            q(1.0)
        );
        Ok(())
    }
}
