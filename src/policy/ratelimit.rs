//! Rate-limit zones with nginx `limit_req` semantics.
//! OWNER: policies. Contract used by the proxy pipeline and the runtime:
//! `ZoneRegistry::link`, `Zone::check`, `Decision`.
//!
//! # The algorithm
//!
//! nginx keeps, per key, `(excess, last)` in milli-requests and milliseconds and computes
//! for each request `excess' = max(0, excess - rate * elapsed + 1)`; it rejects when
//! `excess' > burst`, otherwise stores `excess'` and, without `nodelay`, delays the request
//! by `excess' / rate`. That is exactly GCRA with a *theoretical arrival time*
//! `tat = last + (excess + 1) / rate`: with `T = 1 / rate` and `now' = max(tat, now)`,
//! `excess' = (now' - now) / T`, so a request is rejected when `now' - now > burst * T`,
//! otherwise `tat = now' + T` and the delay is `now' - now`. We keep `tat` in nanoseconds,
//! which removes nginx's millisecond and milli-request rounding but nothing else
//! (nginx truncates 4r/m to 66 milli-requests per second; we use the exact 15 s).
//!
//! Because the state per key is one number and the burst only enters the comparison,
//! several routes can name one zone with different bursts and share one bucket per key,
//! as several `limit_req` directives on one `limit_req_zone` do in nginx.
//!
//! # Why not `governor`
//!
//! governor implements the same GCRA, but (1) each `RateLimiter` measures time from its
//! own start instant, so limiters with different bursts cannot share one state store;
//! (2) it only answers "now or not until", with no way to *reserve* a slot, which the
//! delay mode (no `nodelay`) needs; (3) the memory bound by bytes with LRU eviction needs
//! a store of our own anyway. What is left is twenty lines of arithmetic, tested below on
//! a fake clock.
//!
//! # Memory
//!
//! Keys are hashed with a per-zone random SipHash key to a `u64`, so entries are
//! fixed-size. Each shard is a slab of 24-byte entries linked in LRU order plus a hash
//! index; everything is allocated when the zone is created, sized from `size_bytes`
//! with [`BYTES_PER_KEY`]. Measured on 100,000 keys by `tests/policy_zone_memory.rs`:
//! 46 bytes per key from the allocations' layout, 49 from the process's resident set,
//! against nginx's 128. When a shard is full, its least recently used key is
//! evicted. Two clients whose keys collide in 64 bits would share a bucket; with a
//! secret per-zone hash key an attacker cannot aim for that.
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use http::HeaderMap;
use prometheus::{IntCounter, IntGauge};
use tokio::time::Instant;

use crate::config::{RateLimit, ZoneKey, ZoneSpec};
use crate::telemetry::metrics;

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

/// Memory budget per tracked key, used to turn a zone's `size` into a key capacity.
/// An entry is 24 bytes in the slab; the hash index adds 16 bytes per bucket plus one
/// control byte at a load factor of at most 7/8, i.e. about 19.4–38.9 bytes per key.
/// 48 is a conservative round figure; the measured total is reported by
/// `tests/policy_zone_memory.rs`.
pub const BYTES_PER_KEY: u64 = 48;

/// Fewest keys a zone tracks, whatever its `size` says, so a tiny size still limits.
const MIN_KEYS: usize = 16;
/// Shards trade lock contention against LRU precision (eviction is per shard).
const MAX_SHARDS: usize = 16;
/// A shard holds at least this many keys before we split the zone further.
const MIN_KEYS_PER_SHARD: usize = 1024;

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Entry {
    hash: u64,
    /// Theoretical arrival time in nanoseconds since the zone's epoch.
    tat: u64,
    prev: u32,
    next: u32,
}

/// The key is already a SipHash output; hashing it again would only cost time.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used for our keys; fold anything else for completeness.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// One shard: a fixed slab of entries in a doubly linked LRU list, most recent at `head`.
#[derive(Debug)]
struct Shard {
    entries: Vec<Entry>,
    index: HashMap<u64, u32, BuildHasherDefault<IdentityHasher>>,
    head: u32,
    tail: u32,
    capacity: usize,
}

impl Shard {
    fn new(capacity: usize) -> Self {
        Shard {
            entries: Vec::with_capacity(capacity),
            index: HashMap::with_capacity_and_hasher(capacity, Default::default()),
            head: NIL,
            tail: NIL,
            capacity,
        }
    }

    fn unlink(&mut self, i: u32) {
        let Entry { prev, next, .. } = self.entries[i as usize];
        if prev == NIL {
            self.head = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.entries[next as usize].prev = prev;
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let e = &mut self.entries[i as usize];
            e.prev = NIL;
            e.next = old;
        }
        if old == NIL {
            self.tail = i;
        } else {
            self.entries[old as usize].prev = i;
        }
        self.head = i;
    }

    /// The slot for `hash`, marked most recently used. A new key starts with `tat = now`
    /// (nginx's fresh node with `excess = 0`) and may evict the least recently used key.
    /// Returns the slot and whether the key is new.
    fn slot(&mut self, hash: u64, now: u64) -> (u32, bool) {
        if let Some(&i) = self.index.get(&hash) {
            if self.head != i {
                self.unlink(i);
                self.push_front(i);
            }
            return (i, false);
        }
        let fresh = Entry {
            hash,
            tat: now,
            prev: NIL,
            next: NIL,
        };
        let i = if self.entries.len() < self.capacity {
            self.entries.push(fresh);
            (self.entries.len() - 1) as u32
        } else {
            let victim = self.tail;
            self.unlink(victim);
            self.index.remove(&self.entries[victim as usize].hash);
            self.entries[victim as usize] = fresh;
            victim
        };
        self.index.insert(hash, i);
        self.push_front(i);
        (i, true)
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    /// Keys from least to most recently used.
    fn oldest_first(&self) -> impl Iterator<Item = &Entry> {
        let mut cur = self.tail;
        let mut left = self.entries.len();
        std::iter::from_fn(move || {
            if cur == NIL || left == 0 {
                return None;
            }
            left -= 1;
            let e = &self.entries[cur as usize];
            cur = e.prev;
            Some(e)
        })
    }

    /// Bytes held by this shard's allocations (slab plus hash index), from their layout.
    fn allocated_bytes(&self) -> usize {
        let slab = self.entries.capacity() * std::mem::size_of::<Entry>();
        // hashbrown keeps a power-of-two number of buckets with at most 7/8 of them
        // used, each a (u64, u32) pair plus one control byte, plus a group of 16
        // trailing control bytes.
        let cap = self.index.capacity().max(1);
        let buckets = if cap < 8 {
            (cap + 1).next_power_of_two()
        } else {
            (cap * 8).div_ceil(7).next_power_of_two()
        };
        let index = buckets * (std::mem::size_of::<(u64, u32)>() + 1) + 16;
        slab + index
    }
}

/// Zone state, shared by every route that names the zone.
#[derive(Debug)]
pub struct Zone {
    pub spec: ZoneSpec,
    /// Nanoseconds between two admitted requests at the zone's rate (nginx's `1/rate`).
    interval: u64,
    epoch: Instant,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
    keys: IntGauge,
    allowed: IntCounter,
    delayed: IntCounter,
    rejected: IntCounter,
}

impl Zone {
    /// A zone with empty state.
    pub fn new(spec: ZoneSpec) -> Self {
        Self::with_state(spec, RandomState::new(), Instant::now())
    }

    fn with_state(spec: ZoneSpec, hasher: RandomState, epoch: Instant) -> Self {
        let capacity = Self::capacity_for(spec.size_bytes);
        let shard_count = (capacity / MIN_KEYS_PER_SHARD).clamp(1, MAX_SHARDS);
        let per_shard = capacity.div_ceil(shard_count);
        let shards = (0..shard_count)
            .map(|_| Mutex::new(Shard::new(per_shard)))
            .collect();
        let interval = spec
            .per
            .as_nanos()
            .checked_div(u128::from(spec.requests.max(1)))
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(u64::MAX)
            .max(1);
        let m = metrics();
        let id: &str = &spec.id;
        let keys = m.ratelimit_keys.with_label_values(&[id]);
        keys.set(0);
        Zone {
            interval,
            epoch,
            hasher,
            shards,
            keys,
            allowed: m.ratelimit.with_label_values(&[id, "allowed"]),
            delayed: m.ratelimit.with_label_values(&[id, "delayed"]),
            rejected: m.ratelimit.with_label_values(&[id, "rejected"]),
            spec,
        }
    }

    /// How many keys a zone of `size_bytes` tracks.
    pub fn capacity_for(size_bytes: u64) -> usize {
        usize::try_from(size_bytes / BYTES_PER_KEY)
            .unwrap_or(usize::MAX)
            .clamp(MIN_KEYS, u32::MAX as usize - 1)
    }

    /// Keys currently tracked.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes allocated for this zone's key state, computed from the allocations' layout.
    pub fn allocated_bytes(&self) -> usize {
        self.shards.iter().map(|s| lock(s).allocated_bytes()).sum()
    }

    /// Account one request from `client_ip` with `headers` against this zone with the
    /// route's burst and delay mode.
    ///
    /// With `key: header:<Name>`, requests without the header (or with an empty one) are
    /// keyed by client IP, so leaving the header out never escapes the limit. Clients in
    /// the route's `exempt` networks are always allowed and not counted.
    pub fn check(&self, limit: &RateLimit, headers: &HeaderMap, client_ip: IpAddr) -> Decision {
        self.check_at(limit, headers, client_ip, Instant::now())
    }

    /// [`Zone::check`] at a given instant (tests drive time with this).
    pub fn check_at(
        &self,
        limit: &RateLimit,
        headers: &HeaderMap,
        client_ip: IpAddr,
        now: Instant,
    ) -> Decision {
        if limit
            .exempt
            .as_ref()
            .is_some_and(|exempt| exempt.iter().any(|net| net.contains(&client_ip)))
        {
            self.allowed.inc();
            return Decision::Allow;
        }
        let hash = self.key_hash(headers, client_ip);
        let now =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let decision = self.account(hash, now, limit.burst, limit.nodelay);
        match decision {
            Decision::Allow => self.allowed.inc(),
            Decision::Delay(_) => self.delayed.inc(),
            Decision::Reject { .. } => self.rejected.inc(),
        }
        decision
    }

    fn key_hash(&self, headers: &HeaderMap, client_ip: IpAddr) -> u64 {
        let mut h = self.hasher.build_hasher();
        match &self.spec.key {
            ZoneKey::Header(name) => match headers.get(name) {
                Some(v) if !v.is_empty() => {
                    // Tag the kind so a header value never shares a bucket with an IP.
                    h.write_u8(1);
                    h.write(v.as_bytes());
                }
                _ => hash_ip(&mut h, client_ip),
            },
            ZoneKey::ClientIp => hash_ip(&mut h, client_ip),
        }
        h.finish()
    }

    /// The GCRA step described in the module docs. `now` is nanoseconds since the epoch.
    fn account(&self, hash: u64, now: u64, burst: u32, nodelay: bool) -> Decision {
        let t = self.interval;
        let tolerance = t.saturating_mul(u64::from(burst));
        let shard = &self.shards[shard_of(hash, self.shards.len())];
        let mut shard = lock(shard);
        let before = shard.len();
        let (i, _) = shard.slot(hash, now);
        if shard.len() > before {
            self.keys.inc();
        }
        let entry = &mut shard.entries[i as usize];
        let start = entry.tat.max(now);
        let wait = start - now;
        if wait > tolerance {
            // Seconds until `start - (now + d) <= tolerance`, rounded up, at least 1.
            let until = wait - tolerance;
            return Decision::Reject {
                retry_after: Duration::from_secs(until.div_ceil(1_000_000_000).max(1)),
            };
        }
        entry.tat = start.saturating_add(t);
        if wait == 0 || nodelay {
            Decision::Allow
        } else {
            Decision::Delay(Duration::from_nanos(wait))
        }
    }

    /// A zone with `spec` that keeps the most recently used keys of `old` (used when only
    /// the zone's size changed).
    fn resized_from(old: &Zone, spec: ZoneSpec) -> Zone {
        let zone = Zone::with_state(spec, old.hasher.clone(), old.epoch);
        for shard in old.shards.iter() {
            let shard = lock(shard);
            for e in shard.oldest_first() {
                let mut target = lock(&zone.shards[shard_of(e.hash, zone.shards.len())]);
                let (i, _) = target.slot(e.hash, e.tat);
                target.entries[i as usize].tat = e.tat;
            }
        }
        zone.keys.set(zone.len() as i64);
        zone
    }
}

fn hash_ip(h: &mut impl Hasher, ip: IpAddr) {
    h.write_u8(0);
    match ip {
        IpAddr::V4(v4) => h.write(&v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => h.write(&v4.octets()),
            None => h.write(&v6.octets()),
        },
    }
}

fn shard_of(hash: u64, shards: usize) -> usize {
    // The high bits pick the shard; the index inside uses all 64.
    ((hash >> 48) as usize) % shards
}

/// Shard locks are held for a few arithmetic steps and never across an await, so a
/// poisoned lock only means another thread panicked mid-update; the state is still
/// usable numbers, so keep serving.
fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Zones by identity, kept across snapshots so counters survive reconfiguration.
#[derive(Debug, Default)]
pub struct ZoneRegistry {
    zones: Mutex<HashMap<Arc<str>, Arc<Zone>>>,
}

impl ZoneRegistry {
    /// The zone state for each spec (same order), reusing state of zones that still
    /// exist with the same id and rate, and forgetting zones no longer named.
    ///
    /// A zone whose rate or key changed starts empty; one whose only change is its
    /// size keeps its most recently used keys.
    pub fn link(&self, specs: &[ZoneSpec]) -> Vec<Arc<Zone>> {
        let mut current = self
            .zones
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut next: HashMap<Arc<str>, Arc<Zone>> = HashMap::with_capacity(specs.len());
        let linked = specs
            .iter()
            .map(|spec| {
                if let Some(z) = next.get(&spec.id) {
                    return z.clone();
                }
                let zone = match current.get(&spec.id) {
                    Some(old) if old.spec == *spec => old.clone(),
                    Some(old)
                        if old.spec.requests == spec.requests
                            && old.spec.per == spec.per
                            && old.spec.key == spec.key =>
                    {
                        Arc::new(Zone::resized_from(old, spec.clone()))
                    }
                    _ => Arc::new(Zone::new(spec.clone())),
                };
                next.insert(spec.id.clone(), zone.clone());
                zone
            })
            .collect();
        let m = metrics();
        for id in current.keys() {
            if !next.contains_key(id) {
                let id: &str = id;
                let _ = m.ratelimit_keys.remove_label_values(&[id]);
            }
        }
        *current = next;
        linked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::net::Ipv4Addr;

    fn spec(id: &str, requests: u32, per: Duration) -> ZoneSpec {
        ZoneSpec {
            id: id.into(),
            requests,
            per,
            key: ZoneKey::ClientIp,
            size_bytes: 1024 * 1024,
        }
    }

    fn limit(burst: u32, nodelay: bool) -> RateLimit {
        RateLimit {
            zone: 0,
            burst,
            nodelay,
            reject_status: 429,
            exempt: None,
        }
    }

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const IP2: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));

    /// Runs `n` requests at `at` and counts how many were admitted.
    fn admitted(zone: &Zone, l: &RateLimit, ip: IpAddr, at: Instant, n: usize) -> usize {
        let h = HeaderMap::new();
        (0..n)
            .filter(|_| !matches!(zone.check_at(l, &h, ip, at), Decision::Reject { .. }))
            .count()
    }

    fn one(zone: &Zone, l: &RateLimit, ip: IpAddr, at: Instant) -> Decision {
        zone.check_at(l, &HeaderMap::new(), ip, at)
    }

    #[test]
    fn burst_nodelay_admits_burst_plus_one_then_the_rate() {
        let t0 = Instant::now();
        let zone = Zone::with_state(
            spec("t/a/z", 10, Duration::from_secs(1)),
            RandomState::new(),
            t0,
        );
        let l = limit(5, true);
        let mut allowed = 0;
        for _ in 0..10 {
            if one(&zone, &l, IP, t0) == Decision::Allow {
                allowed += 1;
            }
        }
        assert_eq!(allowed, 6, "burst 5 nodelay admits 6 at once");
        // 99 ms later still nothing: one slot opens every 100 ms.
        assert!(matches!(
            one(&zone, &l, IP, t0 + Duration::from_millis(99)),
            Decision::Reject { .. }
        ));
        assert_eq!(
            one(&zone, &l, IP, t0 + Duration::from_millis(100)),
            Decision::Allow
        );
        assert!(matches!(
            one(&zone, &l, IP, t0 + Duration::from_millis(100)),
            Decision::Reject { .. }
        ));
        // Over 10 more seconds exactly 100 more are admitted when clients hammer it.
        let mut more = 0;
        for ms in (101..=10_100).step_by(1) {
            if one(&zone, &l, IP, t0 + Duration::from_millis(ms)) == Decision::Allow {
                more += 1;
            }
        }
        assert_eq!(more, 100);
        // Another client has its own bucket.
        assert_eq!(one(&zone, &l, IP2, t0), Decision::Allow);
    }

    #[test]
    fn per_minute_rate_and_retry_after() {
        let t0 = Instant::now();
        let zone = Zone::with_state(
            spec("t/a/m", 4, Duration::from_secs(60)),
            RandomState::new(),
            t0,
        );
        let l = limit(0, true);
        assert_eq!(one(&zone, &l, IP, t0), Decision::Allow);
        // Next slot at 15 s.
        assert_eq!(
            one(&zone, &l, IP, t0 + Duration::from_secs(1)),
            Decision::Reject {
                retry_after: Duration::from_secs(14)
            }
        );
        assert_eq!(
            one(&zone, &l, IP, t0 + Duration::from_millis(14_500)),
            Decision::Reject {
                retry_after: Duration::from_secs(1)
            },
            "rounded up, at least 1 s"
        );
        assert_eq!(
            one(&zone, &l, IP, t0 + Duration::from_secs(15)),
            Decision::Allow
        );
        assert_eq!(admitted(&zone, &l, IP, t0 + Duration::from_secs(29), 3), 0);
        assert_eq!(
            one(&zone, &l, IP, t0 + Duration::from_secs(30)),
            Decision::Allow
        );
    }

    #[test]
    fn delay_mode_spaces_requests_at_the_rate_and_rejects_beyond_burst() {
        let t0 = Instant::now();
        let zone = Zone::with_state(
            spec("t/a/d", 2, Duration::from_secs(1)),
            RandomState::new(),
            t0,
        );
        let l = limit(3, false);
        assert_eq!(one(&zone, &l, IP, t0), Decision::Allow);
        assert_eq!(
            one(&zone, &l, IP, t0),
            Decision::Delay(Duration::from_millis(500))
        );
        assert_eq!(
            one(&zone, &l, IP, t0),
            Decision::Delay(Duration::from_millis(1000))
        );
        assert_eq!(
            one(&zone, &l, IP, t0),
            Decision::Delay(Duration::from_millis(1500))
        );
        assert_eq!(
            one(&zone, &l, IP, t0),
            Decision::Reject {
                retry_after: Duration::from_secs(1)
            }
        );
        // Half a second later one slot freed: the queue moved on by one.
        assert_eq!(
            one(&zone, &l, IP, t0 + Duration::from_millis(500)),
            Decision::Delay(Duration::from_millis(1500))
        );
        // After the queue drains, a request goes straight through again.
        assert_eq!(
            one(&zone, &l, IP, t0 + Duration::from_secs(5)),
            Decision::Allow
        );
    }

    #[test]
    fn one_zone_shared_by_routes_with_different_bursts_is_one_bucket() {
        let t0 = Instant::now();
        let zone = Zone::with_state(
            spec("t/a/s", 1, Duration::from_secs(1)),
            RandomState::new(),
            t0,
        );
        let small = limit(1, true);
        let big = limit(4, true);
        // Route A (burst 1) spends two requests of the key's bucket.
        assert_eq!(admitted(&zone, &small, IP, t0, 5), 2);
        // Route B (burst 4) sees the same bucket: only 3 more fit under its burst.
        assert_eq!(admitted(&zone, &big, IP, t0, 10), 3);
        // Route A is now far over its own burst.
        assert!(matches!(
            one(&zone, &small, IP, t0 + Duration::from_secs(1)),
            Decision::Reject { .. }
        ));
    }

    #[test]
    fn header_key_separates_clients_and_falls_back_to_ip() {
        let t0 = Instant::now();
        let mut s = spec("t/a/h", 1, Duration::from_secs(1));
        s.key = ZoneKey::Header(http::HeaderName::from_static("x-api-key"));
        let zone = Zone::with_state(s, RandomState::new(), t0);
        let l = limit(0, true);
        let mut a = HeaderMap::new();
        a.insert("x-api-key", HeaderValue::from_static("alice"));
        let mut b = HeaderMap::new();
        b.insert("x-api-key", HeaderValue::from_static("bob"));
        assert_eq!(zone.check_at(&l, &a, IP, t0), Decision::Allow);
        assert!(
            matches!(zone.check_at(&l, &a, IP2, t0), Decision::Reject { .. }),
            "same key from another IP shares the bucket"
        );
        assert_eq!(
            zone.check_at(&l, &b, IP, t0),
            Decision::Allow,
            "another key has its own bucket"
        );
        let none = HeaderMap::new();
        assert_eq!(
            zone.check_at(&l, &none, IP, t0),
            Decision::Allow,
            "no header: keyed by IP"
        );
        assert!(matches!(
            zone.check_at(&l, &none, IP, t0),
            Decision::Reject { .. }
        ));
        assert_eq!(zone.check_at(&l, &none, IP2, t0), Decision::Allow);
    }

    #[test]
    fn ipv4_mapped_ipv6_clients_share_the_ipv4_bucket() {
        // A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d.
        let t0 = Instant::now();
        let zone = Zone::with_state(
            spec("t/a/v6", 1, Duration::from_secs(60)),
            RandomState::new(),
            t0,
        );
        let l = limit(0, true);
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(one(&zone, &l, IP, t0), Decision::Allow);
        assert!(matches!(
            one(&zone, &l, mapped, t0),
            Decision::Reject { .. }
        ));
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(one(&zone, &l, v6, t0), Decision::Allow);
    }

    #[test]
    fn exempt_clients_are_not_counted() {
        let t0 = Instant::now();
        let zone = Zone::with_state(
            spec("t/a/x", 1, Duration::from_secs(60)),
            RandomState::new(),
            t0,
        );
        let mut l = limit(0, true);
        l.exempt = Some(Arc::from(vec!["10.0.0.1/32".parse().unwrap()]));
        assert_eq!(admitted(&zone, &l, IP, t0, 10), 10);
        assert_eq!(admitted(&zone, &l, IP2, t0, 10), 1);
    }

    #[test]
    fn full_zone_evicts_least_recently_used_keys() {
        let t0 = Instant::now();
        let mut s = spec("t/a/e", 1, Duration::from_secs(3600));
        s.size_bytes = 0; // the minimum: MIN_KEYS keys in one shard
        let zone = Zone::with_state(s, RandomState::new(), t0);
        assert_eq!(zone.shards.len(), 1);
        let l = limit(0, true);
        let ip = |i: u32| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        for i in 0..MIN_KEYS as u32 {
            assert_eq!(one(&zone, &l, ip(i), t0), Decision::Allow);
        }
        assert_eq!(zone.len(), MIN_KEYS);
        // Touch key 0 so key 1 becomes the least recently used.
        assert!(matches!(one(&zone, &l, ip(0), t0), Decision::Reject { .. }));
        assert_eq!(one(&zone, &l, ip(1000), t0), Decision::Allow);
        assert_eq!(zone.len(), MIN_KEYS, "memory stays bounded");
        assert_eq!(
            one(&zone, &l, ip(1), t0),
            Decision::Allow,
            "key 1 was evicted and starts fresh"
        );
        assert!(
            matches!(one(&zone, &l, ip(0), t0), Decision::Reject { .. }),
            "key 0 kept its state"
        );
        assert_eq!(zone.keys.get(), MIN_KEYS as i64);
        // Many more keys than fit: still bounded, no panic.
        for i in 2000..12_000 {
            one(&zone, &l, ip(i), t0);
        }
        assert_eq!(zone.len(), MIN_KEYS);
    }

    #[test]
    fn link_keeps_state_for_same_rate_and_resets_when_rate_changes() {
        let registry = ZoneRegistry::default();
        let s = spec("t/link/z", 1, Duration::from_secs(60));
        let l = limit(0, true);
        let first = registry.link(std::slice::from_ref(&s));
        assert_eq!(first[0].check(&l, &HeaderMap::new(), IP), Decision::Allow);
        assert!(matches!(
            first[0].check(&l, &HeaderMap::new(), IP),
            Decision::Reject { .. }
        ));

        let again = registry.link(std::slice::from_ref(&s));
        assert!(Arc::ptr_eq(&first[0], &again[0]));
        assert!(
            matches!(
                again[0].check(&l, &HeaderMap::new(), IP),
                Decision::Reject { .. }
            ),
            "counters survive reconfiguration"
        );

        let mut bigger = s.clone();
        bigger.size_bytes *= 4;
        let resized = registry.link(std::slice::from_ref(&bigger));
        assert!(!Arc::ptr_eq(&first[0], &resized[0]));
        assert!(
            matches!(
                resized[0].check(&l, &HeaderMap::new(), IP),
                Decision::Reject { .. }
            ),
            "a resize keeps keys"
        );
        assert_eq!(resized[0].len(), 1);

        let mut faster = bigger.clone();
        faster.requests = 2;
        let changed = registry.link(std::slice::from_ref(&faster));
        assert_eq!(
            changed[0].check(&l, &HeaderMap::new(), IP),
            Decision::Allow,
            "a new rate starts empty"
        );

        // Two ids in one link share nothing; a repeated id shares one zone.
        let other = spec("t/link/other", 1, Duration::from_secs(60));
        let both = registry.link(&[faster.clone(), other, faster]);
        assert!(Arc::ptr_eq(&both[0], &changed[0]));
        assert!(Arc::ptr_eq(&both[0], &both[2]));
        assert!(!Arc::ptr_eq(&both[0], &both[1]));
    }

    #[test]
    fn concurrent_checks_on_one_key_never_admit_more_than_the_burst() {
        let t0 = Instant::now();
        let zone = Arc::new(Zone::with_state(
            spec("t/a/threads", 1, Duration::from_secs(3600)),
            RandomState::new(),
            t0,
        ));
        let l = limit(7, true);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let zone = zone.clone();
                let l = l.clone();
                std::thread::spawn(move || admitted(&zone, &l, IP, t0, 1000))
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 8, "burst 7 nodelay admits exactly 8 across threads");
    }

    #[test]
    fn allocated_bytes_per_key_is_well_below_nginx() {
        let zone = Zone::new(ZoneSpec {
            size_bytes: 10 * 1024 * 1024,
            ..spec("t/a/mem", 1, Duration::from_secs(1))
        });
        let keys = Zone::capacity_for(10 * 1024 * 1024);
        let per_key = zone.allocated_bytes() as f64 / keys as f64;
        assert!(per_key < 64.0, "{per_key} bytes per key");
        assert!(zone.allocated_bytes() as u64 <= 10 * 1024 * 1024 + 64 * 1024);
    }
}
