//! Memory per rate-limit key, measured two ways on 100,000 keys:
//!
//! 1. from the layout of the zone's allocations (`Zone::allocated_bytes`: slab capacity
//!    times entry size plus the hash index's buckets and control bytes), and
//! 2. from the process's resident set (`/proc/self/statm`) before the zone exists and
//!    after every key was written, which counts what the allocator really handed out.
//!
//! This file holds one test so no other test allocates while it measures. Run with
//! `cargo test --test policy_zone_memory -- --nocapture` to see the figures.
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use airgate::config::{RateLimit, ZoneKey, ZoneSpec};
use airgate::policy::ratelimit::{BYTES_PER_KEY, Decision, Zone};
use http::HeaderMap;

/// nginx's documented cost of one `limit_req` state on 64-bit platforms.
const NGINX_BYTES_PER_KEY: f64 = 128.0;
const KEYS: u32 = 100_000;

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[test]
fn one_hundred_thousand_keys_cost_well_under_nginx_per_key() {
    let before = resident_bytes();
    let zone = Zone::new(ZoneSpec {
        id: "memory/test/zone".into(),
        requests: 10,
        per: Duration::from_secs(1),
        key: ZoneKey::ClientIp,
        size_bytes: u64::from(KEYS) * BYTES_PER_KEY,
    });
    let limit = RateLimit {
        zone: 0,
        burst: 0,
        nodelay: true,
        reject_status: 429,
        exempt: None,
    };
    let headers = HeaderMap::new();
    for i in 0..KEYS {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        assert_eq!(zone.check(&limit, &headers, ip), Decision::Allow);
    }
    let after = resident_bytes();

    // Eviction is per shard, so a shard that drew more than its share of keys evicts
    // a few before the zone as a whole is full.
    let tracked = zone.len();
    assert!(
        tracked as f64 >= f64::from(KEYS) * 0.98 && tracked <= KEYS as usize + 16,
        "tracked {tracked} of {KEYS}"
    );

    let layout = zone.allocated_bytes() as f64 / f64::from(KEYS);
    println!("layout: {layout:.1} bytes per key ({tracked} keys tracked)");
    assert!(
        layout <= BYTES_PER_KEY as f64 * 1.1,
        "layout {layout:.1} B/key exceeds the budget"
    );
    assert!(layout < NGINX_BYTES_PER_KEY / 2.0);

    if let (Some(before), Some(after)) = (before, after) {
        let rss = after.saturating_sub(before) as f64 / f64::from(KEYS);
        println!("resident set growth: {rss:.1} bytes per key");
        // Page granularity and the test harness add a little; the claim to check is
        // that a key costs well under nginx's 128 bytes.
        assert!(rss < NGINX_BYTES_PER_KEY * 0.75, "rss {rss:.1} B/key");
    }
}
