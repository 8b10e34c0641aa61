//! The TLS listener: certificates chosen by SNI from the current snapshot, the default
//! certificate for unknown names, ALPN h2, and HTTPS upstreams.
mod support;

use std::sync::Arc;

use airgate::config::{Config, RoutePolicy, UpstreamProtocol};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use support::*;

fn certificate(name: &str) -> (Arc<CertifiedKey>, Vec<u8>) {
    let generated = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
    let der = generated.cert.der().to_vec();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
    (
        Arc::new(CertifiedKey::new(
            vec![generated.cert.der().clone()],
            signer,
        )),
        der,
    )
}

fn tls_client(proxy: &TestProxy, names: &[&str]) -> reqwest::Client {
    install_crypto();
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .tls_info(true);
    for name in names {
        builder = builder.resolve(name, proxy.https);
    }
    builder.build().unwrap()
}

fn peer_cert(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("TLS info")
        .to_vec()
}

fn config_with_certs(backend: std::net::SocketAddr, certs: &[(&str, Arc<CertifiedKey>)]) -> Config {
    let mut config = config(
        "",
        vec![prefix_route(
            "r",
            "/",
            upstream(vec![backend]),
            RoutePolicy::default(),
        )],
    );
    for (name, key) in certs {
        config.certs.exact.insert(name.to_string(), key.clone());
    }
    config
}

#[tokio::test]
async fn sni_picks_the_certificate_and_unknown_names_get_the_default() {
    let backend = echo_backend().await;
    let (a_key, a_der) = certificate("a.test");
    let (b_key, b_der) = certificate("b.test");
    let (wild_key, wild_der) = certificate("*.wild.test");
    let mut cfg = config_with_certs(backend.addr, &[("a.test", a_key), ("b.test", b_key)]);
    cfg.certs.wildcard.insert("wild.test".into(), wild_key);
    let proxy = TestProxy::start(cfg).await;
    let names = ["a.test", "b.test", "x.wild.test", "unknown.test"];
    let client = tls_client(&proxy, &names);
    let port = proxy.https.port();

    for (name, expected) in [
        ("a.test", &a_der),
        ("b.test", &b_der),
        ("x.wild.test", &wild_der),
        ("unknown.test", &proxy.default_cert_der),
    ] {
        let response = client
            .get(format!("https://{name}:{port}/hello"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            response.version(),
            reqwest::Version::HTTP_2,
            "ALPN h2 for {name}"
        );
        assert_eq!(&peer_cert(&response), expected, "certificate for {name}");
        let echo: serde_json::Value = response.json().await.unwrap();
        assert_eq!(echo["headers"]["x-forwarded-proto"][0], "https");
        assert_eq!(echo["headers"]["x-forwarded-host"][0], name);
    }
    assert!(
        proxy
            .default_cert_der
            .windows(airgate::tls::DEFAULT_CERT_NAME.len())
            .any(|w| w == airgate::tls::DEFAULT_CERT_NAME.as_bytes())
    );
}

#[tokio::test]
async fn published_certificate_is_used_by_the_next_handshake() {
    let backend = echo_backend().await;
    let (old_key, old_der) = certificate("a.test");
    let (new_key, new_der) = certificate("a.test");
    let proxy = TestProxy::start(config_with_certs(backend.addr, &[("a.test", old_key)])).await;
    let url = format!("https://a.test:{}/", proxy.https.port());
    let response = tls_client(&proxy, &["a.test"])
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(peer_cert(&response), old_der);

    proxy
        .runtime
        .publish(config_with_certs(backend.addr, &[("a.test", new_key)]));
    // A fresh client makes a fresh handshake.
    let response = tls_client(&proxy, &["a.test"])
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(peer_cert(&response), new_der);
}

#[tokio::test]
async fn http1_over_tls_and_https_upstream() {
    let backend = echo_backend().await;
    // The proxy's own TLS listener stands in for an HTTPS upstream (self-signed, not
    // verified, as nginx's proxy_ssl_verify off).
    let inner = TestProxy::start(config(
        "",
        vec![prefix_route(
            "inner",
            "/",
            upstream(vec![backend.addr]),
            RoutePolicy::default(),
        )],
    ))
    .await;
    let outer = TestProxy::start(config(
        "",
        vec![
            prefix_route(
                "https",
                "/s",
                upstream_with(vec![inner.https], UpstreamProtocol::Https),
                RoutePolicy::default(),
            ),
            prefix_route(
                "h2",
                "/h2",
                upstream_with(vec![inner.https], UpstreamProtocol::H2),
                RoutePolicy::default(),
            ),
        ],
    ))
    .await;
    install_crypto();
    let client = reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{}/s/x", outer.https.port());
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    let echo: serde_json::Value = response.json().await.unwrap();
    // The inner proxy saw the outer one as its (untrusted) client over TLS.
    assert_eq!(echo["headers"]["x-forwarded-proto"][0], "https");
    assert_eq!(echo["path"], "/s/x");

    let url = format!("https://127.0.0.1:{}/h2/y", outer.https.port());
    let response = client.post(&url).body("123").send().await.unwrap();
    assert_eq!(response.status(), 200);
    let echo: serde_json::Value = response.json().await.unwrap();
    assert_eq!(echo["path"], "/h2/y");
    assert_eq!(echo["body_len"], 3);
}
