//! TLS for both sides of the proxy.
//!
//! Server side: the certificate is chosen by SNI from the snapshot that is current *at
//! handshake time*, so a publish takes effect for the next handshake without rebuilding
//! listeners. Clients without SNI, or naming a host with no certificate, get a
//! self-signed default certificate generated at startup (ingress-nginx's "fake
//! certificate" does the same).
//!
//! Client side (to upstreams): certificates are not verified, like nginx's
//! `proxy_ssl_verify off` default; handshake signatures still are.
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};

use crate::runtime::Runtime;

/// DNS name in the default certificate; `.invalid` can never be a real host.
pub const DEFAULT_CERT_NAME: &str = "airgate-default.invalid";

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating the default certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The one crypto provider airgate uses (ring), passed explicitly so the library never
/// depends on a process-wide default being installed.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A fresh self-signed certificate for [`DEFAULT_CERT_NAME`].
pub fn default_certificate() -> Result<Arc<CertifiedKey>, TlsError> {
    let generated = rcgen::generate_simple_self_signed(vec![DEFAULT_CERT_NAME.to_string()])?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        generated.signing_key.serialize_der(),
    ));
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)?;
    Ok(Arc::new(CertifiedKey::new(
        vec![generated.cert.der().clone()],
        signer,
    )))
}

/// Picks the server certificate from the current snapshot by SNI.
#[derive(Debug)]
pub struct SniResolver {
    runtime: Arc<Runtime>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    pub fn new(runtime: Arc<Runtime>, default: Arc<CertifiedKey>) -> Self {
        SniResolver { runtime, default }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = client_hello.server_name() else {
            return Some(self.default.clone());
        };
        // rustls already rejects malformed names; SNI is case-insensitive.
        let name = name.to_ascii_lowercase();
        let snapshot = self.runtime.load();
        Some(
            snapshot
                .config
                .certs
                .find(&name)
                .cloned()
                .unwrap_or_else(|| self.default.clone()),
        )
    }
}

/// Server config for the HTTPS listener: ALPN h2 and http/1.1, SNI resolver.
pub fn server_config(
    runtime: Arc<Runtime>,
    default: Arc<CertifiedKey>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver::new(runtime, default)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Client config for TLS upstreams, offering exactly one ALPN protocol so the upstream
/// speaks what the pool expects.
pub fn upstream_client_config(alpn: &[u8]) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoCertificateVerification { provider }))
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

/// Accepts any upstream certificate (nginx `proxy_ssl_verify off`), but still checks that
/// the peer holds the key of the certificate it presented.
#[derive(Debug)]
struct NoCertificateVerification {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for NoCertificateVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_certificate_names_the_invalid_host() {
        let cert = default_certificate().expect("generate");
        let der = cert.cert[0].as_ref();
        assert!(
            der.windows(DEFAULT_CERT_NAME.len())
                .any(|w| w == DEFAULT_CERT_NAME.as_bytes())
        );
    }
}
