//! Failed key guesses per client address: after `max` invalid keys within `window`, a client
//! address gets 429 for every keyed request until the window has passed — valid keys included,
//! so the answer never tells a guesser that a guess was right.
//!
//! Owns the counting only; `decide` asks before authenticating and reports each invalid key.
//! Addresses are kept in full (an IPv6 client could rotate within its /64; the window bounds
//! what that buys). Memory is bounded: past `MAX_TRACKED` addresses, expired ones are dropped
//! and, if that is not enough, the oldest window goes first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sandgate_core::{Deny, DenyCode};

const MAX_TRACKED: usize = 100_000;

pub struct FailureLimiter {
    /// 0 turns the limit off.
    max: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, Window>>,
    /// Moves each time an address becomes locked, so watchers know to send the list again.
    version: AtomicU64,
}

/// The addresses locked now, for the filters' caches ([`FailureLimiter::locked`]).
#[derive(Debug, Default, PartialEq)]
pub struct Locked {
    pub addresses: Vec<(IpAddr, Duration)>,
    /// More were locked than asked for.
    pub overflow: bool,
}

#[derive(Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

impl FailureLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        FailureLimiter {
            max,
            window,
            seen: Mutex::new(HashMap::new()),
            version: AtomicU64::new(0),
        }
    }

    /// Moves whenever an address becomes locked.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// Up to `max` addresses refused now, each with how long it stays refused.
    pub fn locked(&self, max: usize) -> Locked {
        let mut out = Locked::default();
        if self.max == 0 {
            return out;
        }
        for (ip, w) in self.seen.lock().iter() {
            let left = self.window.saturating_sub(w.started.elapsed());
            if w.failures >= self.max && !left.is_zero() {
                if out.addresses.len() == max {
                    out.overflow = true;
                    break;
                }
                out.addresses.push((*ip, left));
            }
        }
        out
    }

    /// Refuses a client address that used up its failures in the current window.
    pub fn check(&self, client: Option<IpAddr>) -> Result<(), Deny> {
        let (Some(ip), true) = (client, self.max > 0) else {
            return Ok(());
        };
        let seen = self.seen.lock();
        match seen.get(&ip) {
            Some(w) if w.started.elapsed() < self.window && w.failures >= self.max => {
                Err(Deny::new(
                    DenyCode::TooManyKeyFailures,
                    format!(
                        "too many invalid API keys from this address; try again in {} s",
                        self.window
                            .saturating_sub(w.started.elapsed())
                            .as_secs()
                            .max(1)
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Counts one invalid key from `client`.
    pub fn failed(&self, client: Option<IpAddr>) {
        let (Some(ip), true) = (client, self.max > 0) else {
            return;
        };
        let now = Instant::now();
        let mut seen = self.seen.lock();
        if seen.len() >= MAX_TRACKED && !seen.contains_key(&ip) {
            seen.retain(|_, w| now.duration_since(w.started) < self.window);
            if seen.len() >= MAX_TRACKED
                && let Some(oldest) = seen.iter().min_by_key(|(_, w)| w.started).map(|(k, _)| *k)
            {
                seen.remove(&oldest);
            }
        }
        let w = seen.entry(ip).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now.duration_since(w.started) >= self.window {
            *w = Window {
                started: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
        if w.failures == self.max {
            self.version.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn an_address_is_refused_after_max_failures_until_the_window_passes() {
        let l = FailureLimiter::new(3, Duration::from_millis(200));
        let (a, b) = (ip("10.0.0.1"), ip("fd00::1"));
        for _ in 0..3 {
            assert!(l.check(a).is_ok());
            l.failed(a);
        }
        let err = l.check(a).unwrap_err();
        assert_eq!(
            (err.code, err.status()),
            (DenyCode::TooManyKeyFailures, 429)
        );
        assert!(l.check(b).is_ok(), "other addresses are not affected");
        assert!(l.check(None).is_ok(), "an unknown address is not limited");
        std::thread::sleep(Duration::from_millis(250));
        assert!(l.check(a).is_ok(), "the window passed");
        l.failed(a);
        assert!(l.check(a).is_ok(), "a new window starts at one failure");
    }

    #[test]
    fn locked_addresses_are_listed_and_each_new_lock_moves_the_version() {
        let l = FailureLimiter::new(2, Duration::from_secs(60));
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let v0 = l.version();
        l.failed(a);
        assert_eq!((l.version(), l.locked(8)), (v0, Locked::default()));
        l.failed(a);
        assert_eq!(l.version(), v0 + 1);
        l.failed(a);
        assert_eq!(l.version(), v0 + 1, "only becoming locked moves it");
        let locked = l.locked(8);
        assert_eq!(locked.addresses.len(), 1);
        assert_eq!(Some(locked.addresses[0].0), a);
        assert!(locked.addresses[0].1 > Duration::from_secs(59));
        l.failed(b);
        l.failed(b);
        let capped = l.locked(1);
        assert!(capped.overflow && capped.addresses.len() == 1);
        assert_eq!(
            FailureLimiter::new(0, Duration::ZERO).locked(8),
            Locked::default()
        );
    }

    #[test]
    fn zero_turns_it_off() {
        let l = FailureLimiter::new(0, Duration::from_secs(60));
        for _ in 0..10 {
            l.failed(ip("10.0.0.1"));
        }
        assert!(l.check(ip("10.0.0.1")).is_ok());
    }
}
