//! Host names of peer gateways → IP addresses. Envoy's ORIGINAL_DST cluster connects to an
//! `ip:port` and never resolves names, so the resolver does, with a small cache.
//!
//! Precedence: an IP literal is itself; a host alias from the cluster configuration wins over
//! DNS (that is what aliases are for); then a cached answer younger than its TTL; then a
//! lookup, bounded by a timeout. A failed lookup is remembered for a shorter time so a dead
//! name does not cost a lookup per request, nor stay dead long after it is fixed.
//!
//! Owns the cache only; which host to resolve is the cluster configuration's business.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::time::Instant;

/// Turns a host name into its addresses.
pub type Lookup =
    Arc<dyn Fn(String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> + Send + Sync>;

/// Past this many names, expired entries are dropped on insert: peers are few, names are not
/// client input, but nothing here should grow without bound.
const SWEEP_AT: usize = 256;

pub struct DnsCache {
    ttl: Duration,
    failure_ttl: Duration,
    timeout: Duration,
    lookup: Lookup,
    entries: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    answer: Result<IpAddr, String>,
    expires: Instant,
}

impl DnsCache {
    /// The system resolver (getaddrinfo, on tokio's blocking pool).
    pub fn system(ttl: Duration, timeout: Duration) -> Self {
        let lookup: Lookup = Arc::new(|host: String| {
            Box::pin(async move {
                let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
                Ok(addrs.map(|a| a.ip()).collect())
            })
        });
        DnsCache::with_lookup(ttl, timeout, lookup)
    }

    pub fn with_lookup(ttl: Duration, timeout: Duration, lookup: Lookup) -> Self {
        DnsCache {
            ttl,
            failure_ttl: ttl.min(Duration::from_secs(5)),
            timeout,
            lookup,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The address to connect to for `host`; the error says why there is none.
    pub async fn resolve(
        &self,
        host: &str,
        aliases: &HashMap<String, IpAddr>,
    ) -> Result<IpAddr, String> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(ip);
        }
        if let Some(ip) = aliases.get(host) {
            return Ok(*ip);
        }
        let now = Instant::now();
        if let Some(e) = self.entries.lock().get(host)
            && e.expires > now
        {
            return e.answer.clone();
        }
        let answer = match tokio::time::timeout(self.timeout, (self.lookup)(host.to_string())).await
        {
            Ok(Ok(addrs)) => addrs
                .first()
                .copied()
                .ok_or_else(|| format!("{host} has no addresses")),
            Ok(Err(e)) => Err(format!("{host} does not resolve: {e}")),
            Err(_) => Err(format!("resolving {host} timed out")),
        };
        let ttl = if answer.is_ok() {
            self.ttl
        } else {
            self.failure_ttl
        };
        let mut entries = self.entries.lock();
        if entries.len() >= SWEEP_AT {
            entries.retain(|_, e| e.expires > now);
        }
        entries.insert(
            host.to_string(),
            Entry {
                answer: answer.clone(),
                expires: Instant::now() + ttl,
            },
        );
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A lookup that answers from a table it can be told to change, counting its calls.
    fn table(answers: Arc<Mutex<HashMap<String, IpAddr>>>, calls: Arc<AtomicUsize>) -> Lookup {
        Arc::new(move |host: String| {
            calls.fetch_add(1, Ordering::SeqCst);
            let answer = answers.lock().get(&host).copied();
            Box::pin(async move {
                if host == "slow.test" {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                answer
                    .map(|ip| vec![ip])
                    .ok_or_else(|| std::io::Error::other("NXDOMAIN"))
            })
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    struct Fixture {
        dns: DnsCache,
        answers: Arc<Mutex<HashMap<String, IpAddr>>>,
        calls: Arc<AtomicUsize>,
    }

    fn fixture() -> Fixture {
        let answers = Arc::new(Mutex::new(HashMap::from([(
            "gw.test".to_string(),
            ip("10.0.0.1"),
        )])));
        let calls = Arc::new(AtomicUsize::new(0));
        let dns = DnsCache::with_lookup(
            Duration::from_secs(30),
            Duration::from_secs(2),
            table(answers.clone(), calls.clone()),
        );
        Fixture {
            dns,
            answers,
            calls,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn answers_are_kept_for_the_ttl() {
        let f = fixture();
        let none = HashMap::new();
        assert_eq!(f.dns.resolve("gw.test", &none).await, Ok(ip("10.0.0.1")));
        f.answers.lock().insert("gw.test".into(), ip("10.0.0.2"));
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_eq!(f.dns.resolve("gw.test", &none).await, Ok(ip("10.0.0.1")));
        assert_eq!(f.calls.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(f.dns.resolve("gw.test", &none).await, Ok(ip("10.0.0.2")));
        assert_eq!(f.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn aliases_and_literals_win_over_dns() {
        let f = fixture();
        let aliases = HashMap::from([("gw.test".to_string(), ip("127.0.0.9"))]);
        assert_eq!(
            f.dns.resolve("gw.test", &aliases).await,
            Ok(ip("127.0.0.9"))
        );
        assert_eq!(f.dns.resolve("fd00::1", &aliases).await, Ok(ip("fd00::1")));
        assert_eq!(
            f.dns.resolve("10.1.1.1", &aliases).await,
            Ok(ip("10.1.1.1"))
        );
        assert_eq!(
            f.calls.load(Ordering::SeqCst),
            0,
            "no lookup for aliases or literals"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_errors_remembered_briefly() {
        let f = fixture();
        let none = HashMap::new();
        let err = f.dns.resolve("nx.test", &none).await.unwrap_err();
        assert!(err.contains("nx.test") && err.contains("NXDOMAIN"), "{err}");
        // Remembered: the next request does not look it up again…
        assert!(f.dns.resolve("nx.test", &none).await.is_err());
        assert_eq!(f.calls.load(Ordering::SeqCst), 1);
        // …but only for the short failure TTL, after which a fixed name works.
        f.answers.lock().insert("nx.test".into(), ip("10.0.0.3"));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(f.dns.resolve("nx.test", &none).await, Ok(ip("10.0.0.3")));
        // A lookup that hangs is cut at the timeout.
        let err = f.dns.resolve("slow.test", &none).await.unwrap_err();
        assert!(err.contains("timed out"), "{err}");
    }
}
