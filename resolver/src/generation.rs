//! Generations: how a filter's decision cache learns that an answer it keeps may be wrong now.
//!
//! Owns the counters only. Every store a decision reads bumps its own [`Generations`] after a
//! change is visible to readers (Pods and routes per sandbox bucket, keys and peer clusters
//! all at once); `Gateway::generation` sums them, and the Resolve entry reads that sum *before*
//! deciding. So an answer computed from state older than a change always carries a generation
//! older than the one the change published, and a filter that has heard of the change drops it.
//!
//! Sandbox ids share 1024 buckets: a change to one sandbox also drops the cached answers of
//! the others in its bucket, which costs a round trip each, never a wrong answer.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

/// Buckets per generation vector; part of the WatchGenerations contract only through the
/// snapshot, which always carries all of them.
pub const BUCKETS: usize = 1024;

/// The bucket of a sandbox id: FNV-1a, stable across processes and builds.
pub fn bucket(sandbox_id: &str) -> u32 {
    let hash = sandbox_id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    // BUCKETS fits in u32 and the remainder is below it.
    (hash % BUCKETS as u64) as u32
}

/// A random start for this process's generations: a restarted resolver (or another replica)
/// never hands out a generation an earlier one used for other state.
pub fn epoch() -> u64 {
    static EPOCH: LazyLock<u64> = LazyLock::new(|| RandomState::new().hash_one("sandgate"));
    *EPOCH
}

/// One store's change counters: everything at once, and per bucket; and per bucket, the
/// signal a held request waits on (a change is what may make its sandbox routable).
pub struct Generations {
    all: AtomicU64,
    buckets: Box<[AtomicU64]>,
    changes: Box<[Notify]>,
}

impl Default for Generations {
    fn default() -> Self {
        Generations {
            all: AtomicU64::new(0),
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            changes: (0..BUCKETS).map(|_| Notify::new()).collect(),
        }
    }
}

impl Generations {
    /// `sandbox_id`'s answers may have changed. Call after the change is visible to readers.
    pub fn bump(&self, sandbox_id: &str) {
        if let Some(b) = self.buckets.get(bucket(sandbox_id) as usize) {
            // SeqCst: the bump must not be seen before the change it announces.
            b.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(n) = self.changes.get(bucket(sandbox_id) as usize) {
            n.notify_waiters();
        }
    }

    /// Every answer may have changed.
    pub fn bump_all(&self) {
        self.all.fetch_add(1, Ordering::SeqCst);
        for n in &self.changes {
            n.notify_waiters();
        }
    }

    /// Signalled after every bump of `bucket` (and every bump of all): a waiter takes a
    /// `notified()` and enables it *before* reading the state it waits on, so no change slips
    /// between the read and the wait. `None` for an out-of-range bucket.
    pub fn changes(&self, bucket: u32) -> Option<&Notify> {
        self.changes.get(bucket as usize)
    }

    /// The generation of `bucket` (an out-of-range bucket reads the global part only).
    pub fn get(&self, bucket: u32) -> u64 {
        let own = self
            .buckets
            .get(bucket as usize)
            .map_or(0, |b| b.load(Ordering::SeqCst));
        self.all.load(Ordering::SeqCst).wrapping_add(own)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_in_range() {
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c; the value pins the function across builds, since
        // a filter keeps the bucket a resolver named.
        assert_eq!(bucket("a"), (0xaf63_dc4c_8601_ec8c_u64 % 1024) as u32);
        let ids = ["", "sb-1", "c2.5f0c6a5e-3f0b-4e55-9f1a-0d5c1a8e9b10", "ü"];
        assert!(ids.iter().all(|id| (bucket(id) as usize) < BUCKETS));
    }

    #[test]
    fn a_bump_moves_its_bucket_and_bump_all_moves_every_bucket() {
        let g = Generations::default();
        let (mine, other) = (bucket("sb-1"), bucket("sb-2"));
        assert_ne!(mine, other, "test ids must fall in different buckets");
        g.bump("sb-1");
        assert_eq!((g.get(mine), g.get(other)), (1, 0));
        g.bump_all();
        assert_eq!((g.get(mine), g.get(other)), (2, 1));
        assert_eq!(
            g.get(u32::MAX),
            1,
            "an unknown bucket follows the global part"
        );
    }

    #[tokio::test]
    async fn a_bump_signals_its_bucket_and_bump_all_every_bucket() {
        let g = Generations::default();
        let (mine, other) = (bucket("sb-1"), bucket("sb-2"));
        let wait = |b| {
            let n = g.changes(b).unwrap().notified();
            let mut n = Box::pin(n);
            n.as_mut().enable();
            n
        };
        let (m, o) = (wait(mine), wait(other));
        g.bump("sb-1");
        tokio::time::timeout(std::time::Duration::from_secs(1), m)
            .await
            .unwrap();
        assert!(
            futures::FutureExt::now_or_never(o).is_none(),
            "another bucket"
        );
        let o = wait(other);
        g.bump_all();
        tokio::time::timeout(std::time::Duration::from_secs(1), o)
            .await
            .unwrap();
    }
}
