//! Resolved upstream host names, kept for [`DNS_VALID`] so a request to a host-name
//! upstream (a `url` backend, an ExternalName Service) does not wait for a lookup.
//!
//! The system resolver (getaddrinfo) does not report TTLs, so answers are kept for a
//! fixed time, like nginx's `resolver … valid=30s`. When an answer expires, one request
//! looks the name up again while the others keep using the old answer; if the lookup
//! fails, the old answer stays in use until a lookup succeeds (a resolver outage does not
//! take down upstreams that did not move).
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// How long an answer is used before the name is looked up again.
pub const DNS_VALID: Duration = Duration::from_secs(30);
/// Addresses kept per name (more are never tried: failover stops after a few).
const MAX_ADDRS: usize = 16;

pub type Addrs = Arc<[SocketAddr]>;

struct Entry {
    port: u16,
    addrs: Addrs,
    expires: Instant,
    /// A request is looking the name up again since then (see [`DnsCache::resolve`]).
    refreshing_since: Option<Instant>,
}

/// Answers by host name, then port (a name is almost always used with one port).
#[derive(Default)]
pub struct DnsCache {
    entries: Mutex<HashMap<String, Vec<Entry>>>,
}

enum Plan {
    /// A current answer.
    Use(Addrs),
    /// Look the name up; fall back on the old answer, if any, when that fails.
    Lookup(Option<Addrs>),
}

impl DnsCache {
    /// The addresses of `host:port`: the kept answer while it is valid, else the result
    /// of `lookup` (bounded by `timeout`).
    pub async fn resolve<F, Fut, I>(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
        lookup: F,
    ) -> std::io::Result<Addrs>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = std::io::Result<I>>,
        I: Iterator<Item = SocketAddr>,
    {
        let stale = match self.plan(host, port, timeout, Instant::now()) {
            Plan::Use(addrs) => return Ok(addrs),
            Plan::Lookup(stale) => stale,
        };
        let looked_up = match tokio::time::timeout(timeout, lookup()).await {
            Ok(Ok(found)) => {
                let addrs: Vec<SocketAddr> = found.take(MAX_ADDRS).collect();
                if addrs.is_empty() {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "the name has no addresses",
                    ))
                } else {
                    Ok(Addrs::from(addrs))
                }
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "DNS lookup timed out",
            )),
        };
        match (looked_up, stale) {
            (Ok(addrs), _) => {
                self.store(host, port, addrs.clone(), Instant::now());
                Ok(addrs)
            }
            (Err(e), Some(stale)) => {
                tracing::warn!(host, error = %e, "DNS lookup failed; using the previous answer");
                self.retry_later(host, port);
                Ok(stale)
            }
            (Err(e), None) => Err(e),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Entry>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn plan(&self, host: &str, port: u16, timeout: Duration, now: Instant) -> Plan {
        let mut entries = self.lock();
        let Some(entry) = entry_mut(&mut entries, host, port) else {
            return Plan::Lookup(None);
        };
        if entry.expires > now {
            return Plan::Use(entry.addrs.clone());
        }
        // Expired: one request looks it up again, the others go on with the old answer.
        // A lookup that never came back (its request was dropped) is taken over.
        match entry.refreshing_since {
            Some(since) if now.duration_since(since) < timeout => Plan::Use(entry.addrs.clone()),
            _ => {
                entry.refreshing_since = Some(now);
                Plan::Lookup(Some(entry.addrs.clone()))
            }
        }
    }

    fn store(&self, host: &str, port: u16, addrs: Addrs, now: Instant) {
        let entry = Entry {
            port,
            addrs,
            expires: now + DNS_VALID,
            refreshing_since: None,
        };
        let mut entries = self.lock();
        match entry_mut(&mut entries, host, port) {
            Some(old) => *old = entry,
            None => entries.entry(host.to_string()).or_default().push(entry),
        }
    }

    /// After a failed refresh: the next request tries again.
    fn retry_later(&self, host: &str, port: u16) {
        if let Some(entry) = entry_mut(&mut self.lock(), host, port) {
            entry.refreshing_since = None;
        }
    }
}

fn entry_mut<'a>(
    entries: &'a mut HashMap<String, Vec<Entry>>,
    host: &str,
    port: u16,
) -> Option<&'a mut Entry> {
    entries.get_mut(host)?.iter_mut().find(|e| e.port == port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const TIMEOUT: Duration = Duration::from_secs(1);

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, last], 8080))
    }

    /// A resolver answering what each test tells it, counting its calls.
    #[derive(Default)]
    struct Resolver {
        calls: AtomicUsize,
    }

    impl Resolver {
        async fn answer(
            &self,
            answer: std::io::Result<Vec<SocketAddr>>,
        ) -> std::io::Result<std::vec::IntoIter<SocketAddr>> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            answer.map(Vec::into_iter)
        }

        fn calls(&self) -> usize {
            self.calls.load(Ordering::Relaxed)
        }
    }

    /// `cache.resolve` with `r` answering `answer` if it is asked.
    async fn resolve(
        cache: &DnsCache,
        r: &Resolver,
        host: &str,
        port: u16,
        answer: std::io::Result<Vec<SocketAddr>>,
    ) -> std::io::Result<Addrs> {
        cache
            .resolve(host, port, TIMEOUT, || r.answer(answer))
            .await
    }

    /// A lookup that never comes back.
    async fn never() -> std::io::Result<std::vec::IntoIter<SocketAddr>> {
        std::future::pending().await
    }

    /// Let the kept answer for `host` run out, as `DNS_VALID` passing would.
    fn expire(cache: &DnsCache, host: &str) {
        let mut entries = cache.lock();
        for entry in entries.get_mut(host).unwrap() {
            entry.expires = Instant::now();
        }
    }

    fn refused() -> std::io::Error {
        std::io::Error::other("resolver down")
    }

    #[tokio::test]
    async fn answers_are_kept_until_they_expire() {
        let cache = DnsCache::default();
        let r = Resolver::default();
        for _ in 0..3 {
            let got = resolve(&cache, &r, "api.example.com", 443, Ok(vec![addr(1)]))
                .await
                .unwrap();
            assert_eq!(&*got, &[addr(1)]);
        }
        assert_eq!(r.calls(), 1, "one lookup for three requests");
        // Another port of the same name is an answer of its own.
        resolve(&cache, &r, "api.example.com", 80, Ok(vec![addr(9)]))
            .await
            .unwrap();
        assert_eq!(r.calls(), 2);

        expire(&cache, "api.example.com");
        let got = resolve(&cache, &r, "api.example.com", 443, Ok(vec![addr(2)]))
            .await
            .unwrap();
        assert_eq!(&*got, &[addr(2)], "the name moved: the new answer is used");
        assert_eq!(r.calls(), 3);
    }

    #[tokio::test]
    async fn a_failed_refresh_keeps_the_old_answer_and_a_first_failure_is_an_error() {
        let cache = DnsCache::default();
        let r = Resolver::default();
        let err = resolve(&cache, &r, "gone.example.com", 443, Err(refused()))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "resolver down");
        let err = resolve(&cache, &r, "empty.example.com", 443, Ok(vec![]))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
        let err = cache
            .resolve("slow.example.com", 443, Duration::from_millis(1), never)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);

        resolve(&cache, &r, "api.example.com", 443, Ok(vec![addr(1)]))
            .await
            .unwrap();
        expire(&cache, "api.example.com");
        let got = resolve(&cache, &r, "api.example.com", 443, Err(refused()))
            .await
            .unwrap();
        assert_eq!(
            &*got,
            &[addr(1)],
            "resolver outage: the last answer still serves"
        );
        // The next request tries again, and a good answer replaces the old one.
        let got = resolve(&cache, &r, "api.example.com", 443, Ok(vec![addr(3)]))
            .await
            .unwrap();
        assert_eq!(&*got, &[addr(3)]);
    }

    #[tokio::test]
    async fn while_one_request_refreshes_the_others_use_the_old_answer() {
        let cache = DnsCache::default();
        let r = Resolver::default();
        resolve(&cache, &r, "api.example.com", 443, Ok(vec![addr(1)]))
            .await
            .unwrap();
        expire(&cache, "api.example.com");
        // The refreshing request's lookup does not come back (its client went away).
        let stuck = std::pin::pin!(cache.resolve("api.example.com", 443, TIMEOUT, never));
        assert!(futures_poll_once(stuck).await, "the refresh is under way");
        let got = resolve(&cache, &r, "api.example.com", 443, Ok(vec![addr(2)]))
            .await
            .unwrap();
        assert_eq!(&*got, &[addr(1)], "no second lookup while one is under way");
        assert_eq!(r.calls(), 1);
        // Once that lookup is older than the timeout, the next request takes it over.
        {
            let mut entries = cache.lock();
            let entry = &mut entries.get_mut("api.example.com").unwrap()[0];
            entry.refreshing_since = Instant::now().checked_sub(TIMEOUT);
        }
        let got = resolve(&cache, &r, "api.example.com", 443, Ok(vec![addr(2)]))
            .await
            .unwrap();
        assert_eq!(&*got, &[addr(2)]);
    }

    /// Poll `fut` once; true if it is still pending.
    async fn futures_poll_once<F: Future>(mut fut: std::pin::Pin<&mut F>) -> bool {
        std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx).is_pending())).await
    }
}
