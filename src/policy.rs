//! Per-route policies enforced by the proxy: rate-limit zones, CORS, the auth hook and
//! security headers. The policy *specs* live in [`crate::config`]; this module holds the
//! enforcement and any state that must outlive a snapshot.
pub mod auth;
pub mod cors;
pub mod headers;
pub mod ratelimit;
