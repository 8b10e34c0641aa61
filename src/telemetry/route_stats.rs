//! Per-route request metrics in a compact form: `airgate_requests_total`,
//! `airgate_request_duration_seconds` and `airgate_upstream_response_seconds`.
//!
//! The prometheus crate's histogram keeps its bounds and two shards of buckets on the
//! heap, apart from the histogram itself, and adds to its sum in a compare-and-swap
//! loop. With thousands of routes every request then touches a dozen cold cache lines
//! for its route's metrics alone. Here a route's counts live in one allocation, laid out
//! so that a typical request touches three lines (one per histogram, one for the
//! status counters), with plain atomic adds. A [`Collector`] turns them into the usual
//! families when `/metrics` is scraped.
//!
//! Counts are kept by route name: a reconfiguration that rebuilds a route keeps
//! counting where it was, so counters never go backwards. Counts that no published route
//! holds any more (a deleted route's) are dropped at the next scrape.
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto;

use super::metrics::LATENCY_BUCKETS;

const BOUNDS: usize = LATENCY_BUCKETS.len();

/// [`LATENCY_BUCKETS`] in nanoseconds, so an observation is placed without floats.
const BOUNDS_NS: [u64; BOUNDS] = {
    let mut ns = [0; BOUNDS];
    let mut i = 0;
    while i < BOUNDS {
        ns[i] = (LATENCY_BUCKETS[i] * 1e9 + 0.5) as u64;
        i += 1;
    }
    ns
};

/// A latency histogram. The sum and the buckets up to 50 ms share the first cache line,
/// so most observations touch only that line. Buckets hold the observations that fell
/// into them (not cumulative); the last is above every bound.
#[repr(C, align(64))]
#[derive(Default)]
struct Latency {
    sum_ns: AtomicU64,
    buckets: [AtomicU64; BOUNDS + 1],
}

impl Latency {
    fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NS.iter().position(|&b| ns <= b).unwrap_or(BOUNDS);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The histogram in exposition form, or `None` before its first observation.
    fn proto(&self) -> Option<proto::Histogram> {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(BOUNDS);
        for (count, &bound) in self.buckets.iter().zip(LATENCY_BUCKETS) {
            cumulative += count.load(Ordering::Relaxed);
            let mut bucket = proto::Bucket::default();
            bucket.set_cumulative_count(cumulative);
            bucket.set_upper_bound(bound);
            buckets.push(bucket);
        }
        // The count is the buckets' total, so it always agrees with them.
        let count = cumulative + self.buckets[BOUNDS].load(Ordering::Relaxed);
        if count == 0 {
            return None;
        }
        let mut h = proto::Histogram::default();
        h.set_sample_count(count);
        h.set_sample_sum(self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9);
        h.set_bucket(buckets);
        Some(h)
    }
}

/// Bits of a status slot that hold the status; the count is in the bits above.
const STATUS_BITS: u32 = 10;
const STATUS_MASK: u64 = (1 << STATUS_BITS) - 1;

/// `airgate_requests_total` of one route. Each slot packs a status and its count, so
/// counting is one atomic add on one cache line. A route answers with a handful of
/// statuses; any beyond the slots are counted under a lock.
#[repr(C, align(64))]
#[derive(Default)]
struct StatusCounts {
    slots: [AtomicU64; 8],
}

impl StatusCounts {
    /// Count one answer with `status`; false when every slot holds another status.
    fn count(&self, status: u16) -> bool {
        let status = u64::from(status);
        if status == 0 || status > STATUS_MASK {
            return false;
        }
        for slot in &self.slots {
            let mut packed = slot.load(Ordering::Relaxed);
            if packed == 0 {
                // Claim the free slot, unless another request just claimed it.
                match slot.compare_exchange(
                    0,
                    (1 << STATUS_BITS) | status,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return true,
                    Err(now) => packed = now,
                }
            }
            if packed & STATUS_MASK == status {
                slot.fetch_add(1 << STATUS_BITS, Ordering::Relaxed);
                return true;
            }
        }
        false
    }

    fn counts(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        self.slots.iter().filter_map(|slot| {
            let packed = slot.load(Ordering::Relaxed);
            // The mask keeps the status within 10 bits, so the cast cannot truncate.
            (packed != 0).then_some(((packed & STATUS_MASK) as u16, packed >> STATUS_BITS))
        })
    }
}

/// The request metrics of one route (by name).
#[derive(Default)]
pub struct RouteStats {
    request: Latency,
    upstream: Latency,
    statuses: StatusCounts,
    /// Statuses that found no free slot.
    more_statuses: Mutex<Vec<(u16, u64)>>,
}

impl RouteStats {
    /// Count one finished request and observe its duration.
    pub fn finished(&self, status: u16, elapsed: Duration) {
        self.request.observe(elapsed);
        if !self.statuses.count(status) {
            let mut more = self.more_statuses.lock().unwrap_or_else(|p| p.into_inner());
            match more.iter_mut().find(|(s, _)| *s == status) {
                Some((_, n)) => *n += 1,
                None => more.push((status, 1)),
            }
        }
    }

    /// Observe the time until the upstream's response headers.
    pub fn upstream(&self, elapsed: Duration) {
        self.upstream.observe(elapsed);
    }

    /// Requests answered with `status` so far.
    pub fn requests(&self, status: u16) -> u64 {
        self.status_counts()
            .into_iter()
            .filter(|(s, _)| *s == status)
            .map(|(_, n)| n)
            .sum()
    }

    /// (status, requests) for every status answered so far, slots and overflow alike.
    fn status_counts(&self) -> Vec<(u16, u64)> {
        let more = self.more_statuses.lock().unwrap_or_else(|p| p.into_inner());
        self.statuses.counts().chain(more.iter().copied()).collect()
    }
}

/// Every route's [`RouteStats`], by route name, and the collector that exports them.
/// Clones share the table (one is registered, one serves lookups).
#[derive(Clone)]
pub struct RouteStatsTable {
    by_route: Arc<Mutex<HashMap<Arc<str>, Arc<RouteStats>>>>,
    requests: Desc,
    request_duration: Desc,
    upstream_duration: Desc,
}

impl Default for RouteStatsTable {
    fn default() -> Self {
        let desc = |name: &str, help: &str, labels: &[&str]| {
            Desc::new(
                name.into(),
                help.into(),
                labels.iter().map(|l| l.to_string()).collect(),
                HashMap::new(),
            )
            .expect("valid metric")
        };
        RouteStatsTable {
            by_route: Arc::default(),
            requests: desc(
                "airgate_requests_total",
                "Requests by route and status",
                &["route", "status"],
            ),
            request_duration: desc(
                "airgate_request_duration_seconds",
                "Request time by route",
                &["route"],
            ),
            upstream_duration: desc(
                "airgate_upstream_response_seconds",
                "Time to upstream response headers by route",
                &["route"],
            ),
        }
    }
}

impl RouteStatsTable {
    /// The stats of `route`, created on first use.
    pub fn get(&self, route: &str) -> Arc<RouteStats> {
        let mut by_route = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(stats) = by_route.get(route) {
            return Arc::clone(stats);
        }
        let stats = Arc::<RouteStats>::default();
        by_route.insert(Arc::from(route), Arc::clone(&stats));
        stats
    }
}

fn label(name: &str, value: &str) -> proto::LabelPair {
    let mut pair = proto::LabelPair::default();
    pair.set_name(name.into());
    pair.set_value(value.into());
    pair
}

fn family(
    desc: &Desc,
    kind: proto::MetricType,
    metrics: Vec<proto::Metric>,
) -> proto::MetricFamily {
    let mut family = proto::MetricFamily::default();
    family.set_name(desc.fq_name.clone());
    family.set_help(desc.help.clone());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

impl Collector for RouteStatsTable {
    fn desc(&self) -> Vec<&Desc> {
        vec![
            &self.requests,
            &self.request_duration,
            &self.upstream_duration,
        ]
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        // Copy the table out, so requests meeting a new route never wait for a scrape.
        // Stats only the table holds belong to no published route (and no request in
        // flight): the route was deleted, so its series go (see `RouteMetrics::attach`).
        let routes: Vec<(Arc<str>, Arc<RouteStats>)> = {
            let mut by_route = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
            by_route.retain(|_, stats| Arc::strong_count(stats) > 1);
            by_route
                .iter()
                .map(|(name, stats)| (Arc::clone(name), Arc::clone(stats)))
                .collect()
        };
        let mut requests = Vec::new();
        let mut request_duration = Vec::new();
        let mut upstream_duration = Vec::new();
        for (route, stats) in &routes {
            for (status, n) in stats.status_counts() {
                let mut counter = proto::Counter::default();
                counter.set_value(n as f64);
                let mut m = proto::Metric::default();
                m.set_label(vec![
                    label("route", route),
                    label("status", itoa::Buffer::new().format(status)),
                ]);
                m.set_counter(counter);
                requests.push(m);
            }
            for (latency, out) in [
                (&stats.request, &mut request_duration),
                (&stats.upstream, &mut upstream_duration),
            ] {
                if let Some(h) = latency.proto() {
                    let mut m = proto::Metric::default();
                    m.set_label(vec![label("route", route)]);
                    m.set_histogram(h);
                    out.push(m);
                }
            }
        }
        vec![
            family(&self.requests, proto::MetricType::COUNTER, requests),
            family(
                &self.request_duration,
                proto::MetricType::HISTOGRAM,
                request_duration,
            ),
            family(
                &self.upstream_duration,
                proto::MetricType::HISTOGRAM,
                upstream_duration,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_bucket_whose_bound_they_reach() {
        let latency = Latency::default();
        latency.observe(Duration::from_micros(500)); // exactly the first bound
        latency.observe(Duration::from_micros(501));
        latency.observe(Duration::from_secs(301)); // above every bound
        let h = latency.proto().expect("observed");
        assert_eq!(h.get_sample_count(), 3);
        let buckets = h.get_bucket();
        assert_eq!(buckets.len(), BOUNDS);
        assert_eq!(buckets[0].upper_bound(), 0.0005);
        assert_eq!(buckets[0].cumulative_count(), 1);
        assert_eq!(buckets[1].cumulative_count(), 2);
        assert_eq!(buckets[BOUNDS - 1].cumulative_count(), 2);
        assert!((h.get_sample_sum() - 301.001001).abs() < 1e-9);
        assert!(Latency::default().proto().is_none());
    }

    #[test]
    fn statuses_beyond_the_slots_are_still_counted() {
        let stats = RouteStats::default();
        for status in 200..215u16 {
            for _ in 0..=(status - 200) {
                stats.finished(status, Duration::from_millis(1));
            }
        }
        for status in 200..215u16 {
            assert_eq!(stats.requests(status), u64::from(status - 200) + 1);
        }
        assert_eq!(stats.requests(500), 0);
    }

    #[test]
    fn stats_are_kept_by_name_across_rebuilds() {
        let table = RouteStatsTable::default();
        // What the routes of two snapshots hold (`RouteMetrics`).
        let (a, b) = (table.get("a"), table.get("b"));
        a.finished(200, Duration::from_millis(1));
        table.get("a").finished(200, Duration::from_millis(1));
        b.upstream(Duration::from_millis(1));
        assert_eq!(table.get("a").requests(200), 2);
        let families = table.collect();
        let names: Vec<_> = families.iter().map(|f| f.name().to_string()).collect();
        assert_eq!(
            names,
            [
                "airgate_requests_total",
                "airgate_request_duration_seconds",
                "airgate_upstream_response_seconds"
            ]
        );
        // Route b answered nothing yet: no counter and no request histogram for it.
        assert_eq!(families[0].get_metric().len(), 1);
        assert_eq!(families[1].get_metric().len(), 1);
        assert_eq!(families[2].get_metric().len(), 1);
        assert_eq!(families[2].get_metric()[0].get_label()[0].value(), "b");
    }

    #[test]
    fn stats_no_route_holds_are_dropped_at_the_scrape() {
        let table = RouteStatsTable::default();
        let kept = table.get("kept");
        kept.finished(200, Duration::from_millis(1));
        table.get("gone").finished(200, Duration::from_millis(1));
        let families = table.collect();
        let routes: Vec<_> = families[0]
            .get_metric()
            .iter()
            .map(|m| m.get_label()[0].value().to_string())
            .collect();
        assert_eq!(routes, ["kept"]);
        // The held block is the same one: its count goes on.
        assert!(Arc::ptr_eq(&kept, &table.get("kept")));
        assert_eq!(table.get("gone").requests(200), 0);
    }
}
