//! The live state shared by the control side and the data plane: the current snapshot
//! (one `ArcSwap`), and state that must outlive snapshots (rate-zone counters, the auth
//! hook client and its cache).
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::policy::auth::AuthClient;
use crate::policy::ratelimit::{Zone, ZoneRegistry};

/// What the data plane reads per request: one routing config plus the zone state it links to.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub config: Config,
    /// Zone state for `config.zones`, same order.
    pub zones: Vec<Arc<Zone>>,
    /// Monotonic counter of published snapshots.
    pub generation: u64,
}

/// Holds the current snapshot. Publishing builds everything off the request path and
/// swaps in one atomic store; readers keep the snapshot they loaded.
#[derive(Debug, Default)]
pub struct Runtime {
    current: ArcSwap<Snapshot>,
    pub zones: ZoneRegistry,
    pub auth: AuthClient,
    ready: AtomicBool,
}

impl Runtime {
    pub fn new() -> Arc<Self> {
        Arc::new(Runtime::default())
    }

    /// The snapshot to serve one request (or one stream) with.
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Link `config` to zone state and swap it in. Returns the new generation.
    pub fn publish(&self, config: Config) -> u64 {
        self.swap_in(config).0
    }

    /// [`Runtime::publish`], also returning the snapshot it replaced, so that the caller
    /// chooses when to free it: with many routes that takes milliseconds that need not
    /// delay anything (requests still holding it keep it alive anyway).
    pub fn swap_in(&self, config: Config) -> (u64, Arc<Snapshot>) {
        let zones = self.zones.link(&config.zones);
        // Every route takes hold of its metrics now: a route that stays across the
        // reload keeps counting where it was, and metrics no snapshot holds any more
        // (a deleted route's) are dropped at the next scrape, as ingress-nginx drops a
        // deleted Ingress's metrics.
        for route in config.routes() {
            route.metrics.attach(&route.name);
        }
        let generation = self.current.load().generation + 1;
        let previous = self.current.swap(Arc::new(Snapshot {
            config,
            zones,
            generation,
        }));
        crate::telemetry::metrics()
            .config_generation
            .set(generation as i64);
        (generation, previous)
    }

    /// Ready once the first complete configuration is published (file mode) or the
    /// first full sync is done (cluster mode).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}
