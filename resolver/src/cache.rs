//! The route cache: sandbox id → (namespace, pod name), as pushed by the controller.
//!
//! Owns only the mapping and its expiry. It carries no phase and no IP: those are read live from
//! the Pod store on every resolve, so a stale route can at worst name a Pod that no longer serves
//! the sandbox, which the decision then refuses.
//!
//! Reads are lock-free: one atomic load of a shard's current map and a hash lookup. Writes
//! clone-mutate-swap a shard under that shard's writer mutex; sharding keeps the clone small
//! when the cache holds many routes.

use std::collections::HashMap;
use std::hash::BuildHasher;

use foldhash::fast::RandomState;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::generation::Generations;

/// A pushed route. Immutable once built; a push replaces it.
#[derive(Debug, PartialEq, Eq)]
pub struct Route {
    pub namespace: Box<str>,
    pub pod_name: Box<str>,
    /// Milliseconds since the cache's epoch after which the route no longer answers.
    expires_at_ms: u64,
}

/// foldhash instead of SipHash: ids come from the controller, not from clients (a client's id
/// is only ever looked up), and a lookup hashes twice (shard, then bucket), which SipHash made
/// a third of an in-cache lookup. Randomly seeded per process all the same.
type Shard = HashMap<Box<str>, Arc<Route>, RandomState>;

pub struct RouteCache {
    shards: Box<[ArcSwap<Shard>]>,
    writers: Box<[Mutex<()>]>,
    hasher: RandomState,
    ttl: Duration,
    epoch: Instant,
    /// Bumped per sandbox id a push or evict changes.
    pub generations: Generations,
}

impl RouteCache {
    /// `shards` is rounded up to a power of two (at least 1).
    pub fn new(ttl: Duration, shards: usize) -> Self {
        let n = shards.max(1).next_power_of_two();
        RouteCache {
            shards: (0..n)
                .map(|_| ArcSwap::from_pointee(Shard::default()))
                .collect(),
            writers: (0..n).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::default(),
            ttl,
            epoch: Instant::now(),
            generations: Generations::default(),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn shard_of(&self, sandbox_id: &str) -> usize {
        (self.hasher.hash_one(sandbox_id) as usize) & (self.shards.len() - 1)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The live route for `sandbox_id`. An expired entry reads as absent; it is removed later by
    /// [`RouteCache::sweep`], never here, so the read path does not write.
    pub fn get(&self, sandbox_id: &str) -> Option<Arc<Route>> {
        let shard = self.shards.get(self.shard_of(sandbox_id))?.load();
        let route = shard.get(sandbox_id)?;
        (route.expires_at_ms > self.now_ms()).then(|| Arc::clone(route))
    }

    fn expiry_from_now(&self) -> u64 {
        self.now_ms().saturating_add(self.ttl.as_millis() as u64)
    }

    /// Inserts or replaces the route, restarting its TTL.
    pub fn push(&self, sandbox_id: &str, namespace: &str, pod_name: &str) {
        let route = Arc::new(Route {
            namespace: namespace.into(),
            pod_name: pod_name.into(),
            expires_at_ms: self.expiry_from_now(),
        });
        self.update(self.shard_of(sandbox_id), |m| {
            m.insert(sandbox_id.into(), route);
            true
        });
        self.generations.bump(sandbox_id);
    }

    /// [`RouteCache::push`] for many `(sandbox id, namespace, pod name)` at once: one
    /// clone-swap per shard touched instead of one per route, so filling a large cache is linear
    /// rather than quadratic in its size (1M single pushes copy a shard a million times).
    pub fn push_many<'a>(&self, routes: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) {
        let expires_at_ms = self.expiry_from_now();
        let mut batches: Vec<Vec<(Box<str>, Arc<Route>)>> = vec![Vec::new(); self.shards.len()];
        let mut ids = Vec::new();
        for (sandbox_id, namespace, pod_name) in routes {
            let route = Arc::new(Route {
                namespace: namespace.into(),
                pod_name: pod_name.into(),
                expires_at_ms,
            });
            if let Some(batch) = batches.get_mut(self.shard_of(sandbox_id)) {
                batch.push((sandbox_id.into(), route));
            }
            ids.push(sandbox_id);
        }
        for (shard, batch) in batches.into_iter().enumerate() {
            if !batch.is_empty() {
                self.update(shard, |m| {
                    m.extend(batch);
                    true
                });
            }
        }
        for id in ids {
            self.generations.bump(id);
        }
    }

    /// Removes the route; returns whether a live one was present.
    pub fn evict(&self, sandbox_id: &str) -> bool {
        let now = self.now_ms();
        let mut live = false;
        self.update(self.shard_of(sandbox_id), |m| match m.remove(sandbox_id) {
            Some(r) => {
                live = r.expires_at_ms > now;
                true
            }
            None => false,
        });
        self.generations.bump(sandbox_id);
        live
    }

    /// Drops expired entries; returns how many. Shards without expired entries are not copied.
    pub fn sweep(&self) -> usize {
        let now = self.now_ms();
        let mut removed = 0;
        for (i, shard) in self.shards.iter().enumerate() {
            // Most sweeps find nothing: check the live map before paying for a clone.
            if !shard.load().values().any(|r| r.expires_at_ms <= now) {
                continue;
            }
            self.update(i, |m| {
                let before = m.len();
                m.retain(|_, r| r.expires_at_ms > now);
                removed += before - m.len();
                before != m.len()
            });
        }
        removed
    }

    /// Entries held, expired or not (what the memory holds, for metrics).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.load().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Clone-mutate-swap of one shard. `mutate` returns whether it changed anything; when it did
    /// not, the clone is dropped and readers keep the current map.
    fn update(&self, shard: usize, mutate: impl FnOnce(&mut Shard) -> bool) {
        let (Some(writer), Some(slot)) = (self.writers.get(shard), self.shards.get(shard)) else {
            return;
        };
        let _writer = writer.lock();
        let mut next = Shard::clone(&slot.load());
        if mutate(&mut next) {
            slot.store(Arc::new(next));
        }
    }

    /// Runs [`RouteCache::sweep`] every `interval` until the task is dropped.
    pub async fn run_sweeper(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let removed = self.sweep();
            if removed > 0 {
                tracing::debug!(removed, "swept expired routes");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn push_get_evict() {
        let c = RouteCache::new(Duration::from_secs(60), 4);
        assert!(c.get("a").is_none());
        c.push("a", "ns", "pod-1");
        let r = c.get("a").unwrap();
        assert_eq!((&*r.namespace, &*r.pod_name), ("ns", "pod-1"));
        c.push("a", "ns", "pod-2");
        assert_eq!(&*c.get("a").unwrap().pod_name, "pod-2");
        assert_eq!(c.len(), 1);
        assert!(c.evict("a"));
        assert!(!c.evict("a"));
        assert!(c.get("a").is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn push_many_is_push_for_each() {
        let c = RouteCache::new(Duration::from_secs(60), 4);
        c.push("a", "ns", "old");
        let ids: Vec<String> = (0..100).map(|i| format!("s{i}")).collect();
        c.push_many(
            ids.iter()
                .map(|id| (id.as_str(), "ns", "p"))
                .chain([("a", "ns", "new")]),
        );
        c.push_many([]);
        assert_eq!(c.len(), 101);
        assert!(ids.iter().all(|id| &*c.get(id).unwrap().pod_name == "p"));
        assert_eq!(&*c.get("a").unwrap().pod_name, "new", "replaces like push");
    }

    #[test]
    fn ttl_expires_lazily_and_sweeper_removes() {
        let c = RouteCache::new(Duration::from_millis(30), 2);
        c.push("old", "ns", "p");
        std::thread::sleep(Duration::from_millis(50));
        c.push("new", "ns", "p");
        assert!(c.get("old").is_none(), "expired entry must read as absent");
        assert_eq!(c.len(), 2, "a read does not remove anything");
        assert!(
            !c.evict("old"),
            "evicting an expired route reports no live route"
        );
        c.push("old", "ns", "p");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(c.sweep(), 2);
        assert!(c.is_empty());
        assert_eq!(c.sweep(), 0);
    }

    #[test]
    fn concurrent_readers_see_whole_routes_during_writes() {
        let c = Arc::new(RouteCache::new(Duration::from_secs(60), 8));
        for i in 0..64 {
            c.push(&format!("s{i}"), "ns", &format!("pod-{i}-0"));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let (c, stop) = (Arc::clone(&c), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut reads = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for i in 0..64 {
                            let r = c.get(&format!("s{i}")).expect("pushed routes never vanish");
                            // A route is always one consistent push: its pod belongs to its id.
                            assert!(r.pod_name.starts_with(&format!("pod-{i}-")));
                            reads += 1;
                        }
                    }
                    reads
                })
            })
            .collect();
        for round in 1..200 {
            for i in 0..64 {
                c.push(&format!("s{i}"), "ns", &format!("pod-{i}-{round}"));
            }
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
        assert_eq!(&*c.get("s5").unwrap().pod_name, "pod-5-199");
    }
}
