//! Server certificates from `kubernetes.io/tls` Secrets, and host name validation.
use k8s_openapi::api::core::v1::Secret;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// A certificate problem: the Secret field at fault and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertError {
    /// `data[tls.crt]`, `data[tls.key]` or `type`.
    pub field: &'static str,
    pub message: String,
}

fn secret_bytes<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    if let Some(b) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return Some(b.0.as_slice());
    }
    // File mode users often write `stringData`; the API server would fold it into `data`.
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|s| s.as_bytes())
}

/// Parse a `kubernetes.io/tls` Secret's `tls.crt` chain and `tls.key` into a key rustls
/// can serve, checking that the key belongs to the certificate.
pub fn certified_key(secret: &Secret) -> Result<CertifiedKey, CertError> {
    if let Some(t) = secret.type_.as_deref() {
        if t != "kubernetes.io/tls" {
            return Err(CertError {
                field: "type",
                message: format!("Secret has type {t:?}; it must be kubernetes.io/tls"),
            });
        }
    }
    let crt = secret_bytes(secret, "tls.crt").ok_or_else(|| CertError {
        field: "data[tls.crt]",
        message: "Secret has no tls.crt".into(),
    })?;
    let key = secret_bytes(secret, "tls.key").ok_or_else(|| CertError {
        field: "data[tls.key]",
        message: "Secret has no tls.key".into(),
    })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(crt)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError {
            field: "data[tls.crt]",
            message: format!("tls.crt is not valid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(CertError {
            field: "data[tls.crt]",
            message: "tls.crt holds no PEM CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| CertError {
        field: "data[tls.key]",
        message: format!("tls.key holds no usable PEM private key: {e}"),
    })?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| CertError {
        field: "data[tls.key]",
        message: format!("tls.key is not a supported RSA, ECDSA or Ed25519 key: {e}"),
    })?;
    let ck = CertifiedKey::new(certs, signer);
    match ck.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(ck),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(CertError {
                field: "data[tls.key]",
                message: "tls.key does not belong to the first certificate in tls.crt".into(),
            })
        }
        Err(e) => Err(CertError {
            field: "data[tls.crt]",
            message: format!("tls.crt is not a valid X.509 certificate: {e}"),
        }),
    }
}

/// Validate a host as written in an Ingress rule or AIRoute: a DNS name, or `*.` plus a
/// DNS name (one-label wildcard). Returns it lower-cased.
pub fn validate_host(host: &str) -> Result<String, String> {
    let h = host.trim().to_ascii_lowercase();
    let hint = "write a DNS name like ai.example.com or a wildcard like *.example.com";
    if h.is_empty() {
        return Err(format!("empty host; {hint}"));
    }
    if h.len() > 253 {
        return Err(format!("host {host:?} is longer than 253 characters"));
    }
    let name = h.strip_prefix("*.").unwrap_or(&h);
    if name.is_empty() || name.contains('*') {
        return Err(format!(
            "host {host:?}: a wildcard must be `*.` followed by a domain, covering exactly one label; {hint}"
        ));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!("host {host:?} is not a valid DNS name; {hint}"));
        }
    }
    Ok(h)
}

/// Whether a TLS host entry covers a rule host (same pattern, or a wildcard covering it).
pub fn tls_covers(tls_host: &str, host: &str) -> bool {
    if tls_host == host {
        return true;
    }
    match (tls_host.strip_prefix("*."), host.split_once('.')) {
        (Some(suffix), Some((first, rest))) => first != "*" && rest == suffix,
        _ => false,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    pub(crate) fn self_signed(host: &str) -> (String, String) {
        let ck = rcgen::generate_simple_self_signed(vec![host.to_string()]).expect("rcgen");
        (ck.cert.pem(), ck.signing_key.serialize_pem())
    }

    pub(crate) fn tls_secret(ns: &str, name: &str, crt: &str, key: &str) -> Secret {
        let mut data = BTreeMap::new();
        data.insert("tls.crt".to_string(), ByteString(crt.as_bytes().to_vec()));
        data.insert("tls.key".to_string(), ByteString(key.as_bytes().to_vec()));
        Secret {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            data: Some(data),
            ..Default::default()
        }
    }

    #[test]
    fn valid_secret_parses() {
        let (crt, key) = self_signed("ai.example.com");
        let ck = certified_key(&tls_secret("ai", "t", &crt, &key)).expect("valid");
        assert_eq!(ck.cert.len(), 1);
    }

    #[test]
    fn garbage_pem_is_an_error_naming_the_field() {
        let (crt, key) = self_signed("ai.example.com");
        let e = certified_key(&tls_secret("ai", "t", "not pem at all", &key)).unwrap_err();
        assert_eq!(e.field, "data[tls.crt]");
        let e = certified_key(&tls_secret("ai", "t", &crt, "garbage")).unwrap_err();
        assert_eq!(e.field, "data[tls.key]");
        let broken = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(certified_key(&tls_secret("ai", "t", broken, &key)).is_err());
    }

    #[test]
    fn mismatched_key_is_rejected() {
        let (crt, _) = self_signed("a.example.com");
        let (_, other_key) = self_signed("b.example.com");
        let e = certified_key(&tls_secret("ai", "t", &crt, &other_key)).unwrap_err();
        assert_eq!(e.field, "data[tls.key]");
        assert!(e.message.contains("does not belong"), "{}", e.message);
    }

    #[test]
    fn wrong_type_and_missing_keys() {
        let (crt, key) = self_signed("a.example.com");
        let mut s = tls_secret("ai", "t", &crt, &key);
        s.type_ = Some("Opaque".into());
        assert_eq!(certified_key(&s).unwrap_err().field, "type");
        let mut s = tls_secret("ai", "t", &crt, &key);
        s.data.as_mut().unwrap().remove("tls.key");
        assert_eq!(certified_key(&s).unwrap_err().field, "data[tls.key]");
    }

    #[test]
    fn string_data_is_accepted() {
        let (crt, key) = self_signed("a.example.com");
        let mut s = tls_secret("ai", "t", &crt, &key);
        s.data = None;
        s.string_data = Some(BTreeMap::from([
            ("tls.crt".to_string(), crt),
            ("tls.key".to_string(), key),
        ]));
        assert!(certified_key(&s).is_ok());
    }

    #[test]
    fn hosts() {
        assert_eq!(validate_host("AI.Example.com").unwrap(), "ai.example.com");
        assert_eq!(validate_host("*.example.com").unwrap(), "*.example.com");
        for bad in [
            "",
            "*",
            "*.",
            "a.*.com",
            "**.example.com",
            "-a.com",
            "a..com",
            "a_b.com",
            "a.com:80",
            "foo*.example.com",
        ] {
            assert!(validate_host(bad).is_err(), "{bad} should be rejected");
        }
        assert!(tls_covers("*.example.com", "foo.example.com"));
        assert!(!tls_covers("*.example.com", "example.com"));
        assert!(!tls_covers("*.example.com", "a.b.example.com"));
        assert!(tls_covers("*.example.com", "*.example.com"));
    }
}
