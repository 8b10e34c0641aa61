//! Rate-limit zones with nginx `limit_req` semantics.
//! OWNER: policies. Contract used by the proxy pipeline and the runtime:
//! `ZoneRegistry::link`, `Zone::check`, `Decision`.
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use crate::config::{RateLimit, ZoneSpec};

/// Outcome of a rate-limit check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Within the burst without `nodelay`: wait this long, then forward.
    Delay(Duration),
    /// Over the burst: reject; the client may retry after this long.
    Reject {
        retry_after: Duration,
    },
}

/// Zone state, shared by every route that names the zone.
#[derive(Debug)]
pub struct Zone {
    pub spec: ZoneSpec,
}

impl Zone {
    /// Account one request from `client_ip` with `headers` against this zone with the
    /// route's burst and delay mode.
    pub fn check(&self, limit: &RateLimit, headers: &HeaderMap, client_ip: IpAddr) -> Decision {
        let _ = (limit, headers, client_ip);
        Decision::Allow
    }
}

/// Zones by identity, kept across snapshots so counters survive reconfiguration.
#[derive(Debug, Default)]
pub struct ZoneRegistry {}

impl ZoneRegistry {
    /// The zone state for each spec (same order), reusing state of zones that still
    /// exist with the same id and rate, and forgetting zones no longer named.
    pub fn link(&self, specs: &[ZoneSpec]) -> Vec<Arc<Zone>> {
        specs
            .iter()
            .map(|spec| Arc::new(Zone { spec: spec.clone() }))
            .collect()
    }
}
