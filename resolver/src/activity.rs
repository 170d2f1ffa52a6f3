//! Last activity per sandbox: touched on every routed request, read by the controller to decide
//! which sandboxes are idle.
//!
//! Owns the in-memory record only. Seeding from Pod annotations and garbage collection take the
//! Pod store's view as input; this module never reads Kubernetes itself.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};

use dashmap::DashMap;
use jiff::Timestamp;

/// Touch is a shard read-lock, a hash lookup and an atomic max when the sandbox is known (the
/// common case); only a sandbox's first touch takes a shard write lock to insert it.
#[derive(Default)]
pub struct ActivityTracker {
    last: DashMap<Box<str>, AtomicI64>,
}

impl ActivityTracker {
    pub fn touch(&self, sandbox_id: &str) {
        self.touch_at(sandbox_id, Timestamp::now());
    }

    /// Records activity at `at`; never moves a sandbox's time backwards.
    pub fn touch_at(&self, sandbox_id: &str, at: Timestamp) {
        let ms = at.as_millisecond();
        if let Some(entry) = self.last.get(sandbox_id) {
            entry.fetch_max(ms, Ordering::Relaxed);
            return;
        }
        self.last
            .entry(sandbox_id.into())
            .or_insert_with(|| AtomicI64::new(ms))
            .fetch_max(ms, Ordering::Relaxed);
    }

    pub fn get(&self, sandbox_id: &str) -> Option<Timestamp> {
        let ms = self.last.get(sandbox_id)?.load(Ordering::Relaxed);
        Timestamp::from_millisecond(ms).ok()
    }

    /// Every sandbox with its last activity, RFC 3339 UTC at second precision (the format of the
    /// last-active annotation).
    pub fn snapshot(&self) -> BTreeMap<String, String> {
        self.entries()
            .into_iter()
            .map(|(id, ts)| (id, format_rfc3339(ts)))
            .collect()
    }

    /// Every sandbox with its last activity, at full precision.
    pub fn entries(&self) -> Vec<(String, Timestamp)> {
        self.last
            .iter()
            .filter_map(|e| {
                let ts = Timestamp::from_millisecond(e.value().load(Ordering::Relaxed)).ok()?;
                Some((e.key().to_string(), ts))
            })
            .collect()
    }

    /// Drops every sandbox for which `keep` is false; returns how many.
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) -> usize {
        let before = self.last.len();
        self.last.retain(|id, _| keep(id));
        before - self.last.len()
    }

    pub fn len(&self) -> usize {
        self.last.len()
    }

    pub fn is_empty(&self) -> bool {
        self.last.is_empty()
    }
}

/// RFC 3339 UTC, whole seconds: `2026-01-02T03:04:05Z`.
pub fn format_rfc3339(ts: Timestamp) -> String {
    let secs = Timestamp::from_second(ts.as_second()).unwrap_or(ts);
    secs.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn touch_only_moves_forward() {
        let t = ActivityTracker::default();
        t.touch_at("a", ts("2026-01-01T00:00:10Z"));
        t.touch_at("a", ts("2026-01-01T00:00:05Z"));
        assert_eq!(t.get("a"), Some(ts("2026-01-01T00:00:10Z")));
        t.touch_at("a", ts("2026-01-01T00:00:20.750Z"));
        assert_eq!(
            t.snapshot(),
            BTreeMap::from([("a".to_string(), "2026-01-01T00:00:20Z".to_string())])
        );
        assert!(t.get("b").is_none());
    }

    #[test]
    fn touch_now_is_recent() {
        let t = ActivityTracker::default();
        let before = Timestamp::now();
        t.touch("x");
        let got = t.get("x").unwrap();
        assert!(got >= Timestamp::from_millisecond(before.as_millisecond()).unwrap());
    }

    #[test]
    fn retain_drops_unkept() {
        let t = ActivityTracker::default();
        for id in ["a", "b", "c"] {
            t.touch(id);
        }
        assert_eq!(t.retain(|id| id != "b"), 1);
        assert_eq!(t.len(), 2);
        assert!(t.get("b").is_none());
    }

    #[test]
    fn concurrent_touches_keep_the_maximum() {
        let t = Arc::new(ActivityTracker::default());
        let threads: Vec<_> = (0..4)
            .map(|k| {
                let t = Arc::clone(&t);
                std::thread::spawn(move || {
                    for i in 0..2000i64 {
                        let id = format!("s{}", i % 50);
                        t.touch_at(
                            &id,
                            Timestamp::from_second(1_700_000_000 + i * 4 + k).unwrap(),
                        );
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        assert_eq!(t.len(), 50);
        // The largest time written for s49 is i = 1999, k = 3.
        assert_eq!(
            t.get("s49").unwrap(),
            Timestamp::from_second(1_700_000_000 + 1999 * 4 + 3).unwrap()
        );
    }
}
