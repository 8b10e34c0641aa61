//! Prometheus metrics, served on the admin address at `/metrics`.
//!
//! One process-wide registry: the data plane and the controller record into the same
//! [`Metrics`] through [`metrics()`].
use std::sync::{Arc, LazyLock, OnceLock};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::route_stats::{RouteStats, RouteStatsTable};

/// Every metric airgate exports.
pub struct Metrics {
    pub registry: Registry,
    /// `airgate_requests_total{route,status}`, `airgate_request_duration_seconds{route}`
    /// (whole request, first byte in to last byte out) and
    /// `airgate_upstream_response_seconds{route}` (until the upstream's response headers).
    pub routes: RouteStatsTable,
    /// The same for requests no route matched, under the route `-`.
    pub unmatched: RouteMetrics,
    /// `airgate_upstream_errors_total{route,kind}` kind = connect|timeout|protocol
    pub upstream_errors: IntCounterVec,
    /// `airgate_ratelimit_total{zone,outcome}` outcome = allowed|delayed|rejected
    pub ratelimit: IntCounterVec,
    /// `airgate_ratelimit_keys{zone}`: keys tracked by a zone.
    pub ratelimit_keys: IntGaugeVec,
    /// `airgate_auth_total{hook,outcome}` outcome = allowed|denied|error|cache_hit
    pub auth: IntCounterVec,
    /// `airgate_auth_duration_seconds{hook}`
    pub auth_duration: HistogramVec,
    /// `airgate_active_streams`: responses being streamed right now (SSE and others).
    pub active_streams: IntGauge,
    /// `airgate_active_websockets`
    pub active_websockets: IntGauge,
    /// `airgate_config_reloads_total{result}` result = success|error
    pub config_reloads: IntCounterVec,
    /// `airgate_config_reload_duration_seconds`: translate + publish.
    pub config_reload_duration: Histogram,
    /// `airgate_config_generation`: generation of the serving snapshot.
    pub config_generation: IntGauge,
    /// `airgate_translation_errors`: diagnostics of severity error in the serving snapshot.
    pub translation_errors: IntGauge,
    /// `airgate_status_writes_total{kind,result}`
    pub status_writes: IntCounterVec,
    /// `airgate_status_write_duration_seconds`
    pub status_write_duration: Histogram,
    /// `airgate_leader`: 1 while this replica holds the status-writer lease.
    pub leader: IntGauge,
    /// `airgate_watch_events_total{kind}`
    pub watch_events: IntCounterVec,
    /// `airgate_connections_total{listener}` listener = http|https
    pub connections: IntCounterVec,
    /// `airgate_access_log_dropped_total`: lines dropped because the writer fell behind
    /// (the request path never waits for the log).
    pub access_log_dropped: IntCounter,
    /// `airgate_build_info{version}`: always 1.
    pub build_info: IntGaugeVec,
}

pub(super) const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0,
];

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn histogram_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

fn histogram(registry: &Registry, name: &str, help: &str) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()))
        .expect("valid metric");
    registry
        .register(Box::new(h.clone()))
        .expect("unique metric");
    h
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        let ratelimit_keys = IntGaugeVec::new(
            Opts::new(
                "airgate_ratelimit_keys",
                "Keys tracked by a rate-limit zone",
            ),
            &["zone"],
        )
        .expect("valid metric");
        r.register(Box::new(ratelimit_keys.clone()))
            .expect("unique metric");
        let access_log_dropped = IntCounter::new(
            "airgate_access_log_dropped_total",
            "Access-log lines dropped because the writer fell behind",
        )
        .expect("valid metric");
        r.register(Box::new(access_log_dropped.clone()))
            .expect("unique metric");
        let build_info = IntGaugeVec::new(
            Opts::new("airgate_build_info", "Build information; always 1"),
            &["version"],
        )
        .expect("valid metric");
        r.register(Box::new(build_info.clone()))
            .expect("unique metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let routes = RouteStatsTable::default();
        r.register(Box::new(routes.clone())).expect("unique metric");
        Metrics {
            routes,
            unmatched: RouteMetrics::default(),
            upstream_errors: counter_vec(
                &r,
                "airgate_upstream_errors_total",
                "Upstream failures by route and kind",
                &["route", "kind"],
            ),
            ratelimit: counter_vec(
                &r,
                "airgate_ratelimit_total",
                "Rate-limit decisions by zone and outcome",
                &["zone", "outcome"],
            ),
            ratelimit_keys,
            auth: counter_vec(
                &r,
                "airgate_auth_total",
                "Auth hook outcomes by hook",
                &["hook", "outcome"],
            ),
            auth_duration: histogram_vec(
                &r,
                "airgate_auth_duration_seconds",
                "Auth hook latency by hook",
                &["hook"],
            ),
            active_streams: gauge(&r, "airgate_active_streams", "Responses being streamed"),
            active_websockets: gauge(
                &r,
                "airgate_active_websockets",
                "Open WebSocket connections",
            ),
            config_reloads: counter_vec(
                &r,
                "airgate_config_reloads_total",
                "Configuration reloads by result",
                &["result"],
            ),
            config_reload_duration: histogram(
                &r,
                "airgate_config_reload_duration_seconds",
                "Time to translate and publish a snapshot",
            ),
            config_generation: gauge(
                &r,
                "airgate_config_generation",
                "Generation of the serving snapshot",
            ),
            translation_errors: gauge(
                &r,
                "airgate_translation_errors",
                "Objects or fields rejected in the serving snapshot",
            ),
            status_writes: counter_vec(
                &r,
                "airgate_status_writes_total",
                "Status writes by kind and result",
                &["kind", "result"],
            ),
            status_write_duration: histogram(
                &r,
                "airgate_status_write_duration_seconds",
                "Status write latency",
            ),
            leader: gauge(&r, "airgate_leader", "1 while this replica writes status"),
            watch_events: counter_vec(
                &r,
                "airgate_watch_events_total",
                "Watch events by kind",
                &["kind"],
            ),
            connections: counter_vec(
                &r,
                "airgate_connections_total",
                "Accepted connections by listener",
                &["listener"],
            ),
            access_log_dropped,
            build_info,
            registry: r,
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// The request metrics of one route, looked up by name on first use and kept with the
/// route, so the request path neither hashes the name nor takes the table's lock.
#[derive(Default)]
pub struct RouteMetrics {
    stats: OnceLock<Arc<RouteStats>>,
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics").finish_non_exhaustive()
    }
}

impl RouteMetrics {
    fn stats(&self, route: &str) -> &RouteStats {
        self.stats.get_or_init(|| metrics().routes.get(route))
    }

    /// Look the stats up now rather than at the first request. Called when a snapshot
    /// is published: while any published route holds its stats, they are exported.
    pub fn attach(&self, route: &str) {
        self.stats(route);
    }

    /// Count one finished request of `route` and observe its duration.
    pub fn finished(&self, route: &str, status: u16, elapsed: std::time::Duration) {
        self.stats(route).finished(status, elapsed);
    }

    /// Observe the time until the upstream's response headers.
    pub fn upstream(&self, route: &str, elapsed: std::time::Duration) {
        self.stats(route).upstream(elapsed);
    }
}

/// The metric children of one auth hook, looked up on first use and kept with the hook's
/// policy (as [`RouteMetrics`] for routes).
#[derive(Default)]
pub struct AuthHookMetrics {
    duration: OnceLock<Histogram>,
    /// `airgate_auth_total` children, indexed by [`HookOutcome`].
    outcomes: [OnceLock<IntCounter>; 4],
}

/// The `outcome` label of `airgate_auth_total`.
#[derive(Debug, Clone, Copy)]
pub enum HookOutcome {
    Allowed = 0,
    Denied = 1,
    Error = 2,
    CacheHit = 3,
}

impl HookOutcome {
    fn label(self) -> &'static str {
        match self {
            HookOutcome::Allowed => "allowed",
            HookOutcome::Denied => "denied",
            HookOutcome::Error => "error",
            HookOutcome::CacheHit => "cache_hit",
        }
    }
}

impl std::fmt::Debug for AuthHookMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthHookMetrics").finish_non_exhaustive()
    }
}

impl AuthHookMetrics {
    /// Count one answer of hook `hook` (`namespace/object`).
    pub fn outcome(&self, hook: &str, outcome: HookOutcome) {
        self.outcomes[outcome as usize]
            .get_or_init(|| metrics().auth.with_label_values(&[hook, outcome.label()]))
            .inc();
    }

    /// Observe the time one sub-request took.
    pub fn duration(&self, hook: &str, elapsed: std::time::Duration) {
        self.duration
            .get_or_init(|| metrics().auth_duration.with_label_values(&[hook]))
            .observe(elapsed.as_secs_f64());
    }
}
