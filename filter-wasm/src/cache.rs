//! The decision cache: Resolve answers kept in VM-shared data, so a request the resolver has
//! already answered for the same key, sandbox id and port skips the round trip.
//!
//! Owns the cache's rules in plain Rust (tested natively): the entry key (a SHA-256 of the API
//! key with the id, port and hop marker — never the key itself), the bounded slot table (an
//! entry's digest picks one of `slots` shared-data keys; a newer entry for the same slot
//! replaces the older one, so the table never grows), when an entry may answer, the
//! generations this VM has heard of, and the per-sandbox hit counts that become activity.
//! lib.rs does the host calls.
//!
//! An entry answers only while all hold: its digest is the request's; this VM's generation
//! stream is open and has the entry's bucket at the entry's generation (the resolver moves a
//! bucket's generation whenever anything a decision in it read changes); its expiry (TTL,
//! shorter for refusals, never past the key's expiry) has not passed. So a change reaches the
//! cache as fast as the stream does, and a silent stream costs at most the TTL.

use std::collections::HashMap;
use std::net::IpAddr;

use prost::Message;
use sandgate_core::{Decision, Target};
use sandgate_proto::resolver::v1::{Cacheable, Generations, HitReport, SandboxHits};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// How long a route is kept at most; 0 turns the cache off.
    pub ttl_ms: u64,
    /// How long a refusal is kept at most (never longer than `ttl_ms`).
    pub deny_ttl_ms: u64,
    /// Entries held at most (shared by every worker's VM).
    pub slots: u32,
    /// Distinct sandboxes whose hits one VM counts between flushes; a request for another one
    /// goes to the resolver, which records its activity itself.
    pub max_sandboxes: usize,
    /// How often hit counts are sent to the resolver.
    pub flush_ms: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            ttl_ms: 500,
            deny_ttl_ms: 250,
            slots: 4096,
            max_sandboxes: 4096,
            flush_ms: 1000,
        }
    }
}

impl CacheConfig {
    pub fn enabled(&self) -> bool {
        self.ttl_ms > 0
    }

    /// How long before a kept answer's end one request renews it: the last fifth of a route's
    /// TTL.
    pub fn renew_ns(&self) -> u64 {
        self.ttl_ms.saturating_mul(1_000_000) / 5
    }

    pub fn check(&self) -> Result<(), String> {
        if self.enabled() && (self.slots == 0 || self.max_sandboxes == 0 || self.flush_ms == 0) {
            return Err("slots, max_sandboxes and flush_ms must be at least 1".into());
        }
        Ok(())
    }
}

/// What identifies an answer: a digest of everything the resolver's decision read from the
/// request. The key is hashed with a cryptographic hash, so two keys cannot be made to share
/// an entry and the key cannot be read back from shared data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key([u8; 16]);

impl Key {
    pub fn of(target: &Target<'_>) -> Key {
        let mut h = Sha256::new();
        let key = target.api_key.map_or("", |(k, _)| k);
        // An access token stands where the key would (a request presents one or the other):
        // its answer is kept under its own hash, as a key's is.
        let token = target.token.map_or("", |(t, _)| t);
        // Length-prefixed, so no two (key, token, id) splits of the same bytes collide. The
        // other credentials are part of the question: which are stripped is part of the
        // answer, as E2B addressing is of a refusal's status.
        let others = target.other_credentials.iter().map(|(_, v)| *v);
        for part in [key, token, target.sandbox_id].into_iter().chain(others) {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.update(target.port.to_le_bytes());
        h.update([u8::from(target.forwarded), u8::from(target.e2b)]);
        let mut out = [0u8; 16];
        for (o, d) in out.iter_mut().zip(h.finalize()) {
            *o = d;
        }
        Key(out)
    }

    /// The shared-data key of this entry's slot.
    pub fn slot(&self, slots: u32) -> String {
        let [a, b, c, d, ..] = self.0;
        let n = u32::from_le_bytes([a, b, c, d]) % slots.max(1);
        format!("sandgate.decision.{n}")
    }
}

/// What a slot holds: one Resolve answer and when it may be used.
#[derive(Clone, PartialEq, Message)]
pub struct Entry {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(uint32, tag = "2")]
    pub bucket: u32,
    #[prost(uint64, tag = "3")]
    pub generation: u64,
    /// Unix time in nanoseconds after which the entry does not answer.
    #[prost(uint64, tag = "4")]
    pub expires_ns: u64,
    /// The ResolveReply as the resolver sent it: decoded by the same code as a live answer.
    #[prost(bytes = "vec", tag = "5")]
    pub reply: Vec<u8>,
}

impl Entry {
    /// An entry for `reply` if the resolver marked it cacheable and this VM's view is at the
    /// generation the answer was made at (a lagging or newer view cannot vouch for it).
    pub fn new(
        key: Key,
        cacheable: &Cacheable,
        denial: bool,
        reply: &[u8],
        config: &CacheConfig,
        view: &View,
        now_ns: u64,
    ) -> Option<Entry> {
        if view.generation(cacheable.bucket)? != cacheable.generation {
            return None;
        }
        let mut ttl_ms = if denial {
            config.deny_ttl_ms.min(config.ttl_ms)
        } else {
            config.ttl_ms
        };
        if cacheable.max_age_ms > 0 {
            ttl_ms = ttl_ms.min(cacheable.max_age_ms);
        }
        (ttl_ms > 0).then(|| Entry {
            key: key.0.to_vec(),
            bucket: cacheable.bucket,
            generation: cacheable.generation,
            expires_ns: now_ns.saturating_add(ttl_ms.saturating_mul(1_000_000)),
            reply: reply.to_vec(),
        })
    }

    /// The entry in a slot's bytes, if it may answer `key` now.
    pub fn read(slot: &[u8], key: Key, view: &View, now_ns: u64) -> Option<Entry> {
        let e = Entry::decode(slot).ok()?;
        (e.key == key.0 && fresh(e.bucket, e.generation, e.expires_ns, view, now_ns)).then_some(e)
    }
}

/// The one rule for any kept answer: before its expiry, and at the generation this VM has.
fn fresh(bucket: u32, generation: u64, expires_ns: u64, view: &View, now_ns: u64) -> bool {
    now_ns < expires_ns && view.generation(bucket) == Some(generation)
}

/// This VM's decoded copies of the shared entries it has used: a repeated hit then costs no
/// host call and no decoding. Each copy answers under exactly the rule of its entry, so it can
/// never outlive it; at most `max` are held (all dropped when full, the shared table stays).
#[derive(Debug, Default)]
pub struct Local {
    copies: HashMap<Key, Copy>,
}

#[derive(Debug)]
struct Copy {
    /// The entry's validity (its key and reply bytes dropped).
    entry: Entry,
    decision: Decision,
    /// From then on, the first request to see the copy renews it.
    renew_from_ns: u64,
    /// One request is already renewing this answer.
    renewing: bool,
}

/// What this VM's copies say about a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Kept {
    /// Answer with this.
    Hit(Decision),
    /// Valid, but close to its end: this one request asks the resolver, so the answer is
    /// renewed before it expires, while every other request keeps being answered from it
    /// (instead of all of them missing together when it expires).
    Renew,
    /// Nothing valid here: look in the shared table.
    Miss,
}

impl Local {
    /// Near its expiry (see [`Local::keep`]), the first request to see a copy renews it.
    pub fn answer(&mut self, key: Key, view: &View, now_ns: u64) -> Kept {
        let Some(copy) = self.copies.get_mut(&key) else {
            return Kept::Miss;
        };
        let e = &copy.entry;
        if !fresh(e.bucket, e.generation, e.expires_ns, view, now_ns) {
            return Kept::Miss;
        }
        if !copy.renewing && now_ns >= copy.renew_from_ns {
            copy.renewing = true;
            return Kept::Renew;
        }
        Kept::Hit(copy.decision.clone())
    }

    /// Keeps `decision` (decoded from `entry`) for `key` at `now_ns`. The copy drops the reply
    /// bytes. It is renewed `renew_ns` before its end, or in the last fifth of what is left of
    /// it when that is shorter: an answer its own bound cuts short (a token about to expire)
    /// is still answered from here most of its life.
    pub fn keep(
        &mut self,
        key: Key,
        entry: &Entry,
        decision: Decision,
        max: usize,
        now_ns: u64,
        renew_ns: u64,
    ) {
        if self.copies.len() >= max && !self.copies.contains_key(&key) {
            self.copies.clear();
        }
        let copy = Copy {
            entry: Entry {
                key: Vec::new(),
                reply: Vec::new(),
                ..entry.clone()
            },
            decision,
            renew_from_ns: entry
                .expires_ns
                .saturating_sub(renew_ns.min(entry.expires_ns.saturating_sub(now_ns) / 5)),
            renewing: false,
        };
        self.copies.insert(key, copy);
    }
}

/// The generations this VM has heard of; empty (nothing answers) until the stream's first
/// message and after it breaks.
#[derive(Debug, Default)]
pub struct View {
    generations: Vec<u64>,
}

/// More buckets than a resolver sends is a broken message, not a reason to grow unbounded.
const MAX_BUCKETS: usize = 1 << 16;

impl View {
    pub fn generation(&self, bucket: u32) -> Option<u64> {
        self.generations.get(bucket as usize).copied()
    }

    /// Takes in one stream message. A malformed one (lists of different lengths, a change
    /// before any reset, a bucket out of range) forgets everything: false, and the caller drops
    /// the stream to start over.
    pub fn apply(&mut self, message: &Generations) -> bool {
        let ok = message.bucket.len() == message.generation.len()
            && (message.reset || !self.generations.is_empty());
        if !ok {
            self.forget();
            return false;
        }
        if message.reset {
            self.generations.clear();
        }
        for (&b, &g) in message.bucket.iter().zip(&message.generation) {
            let b = b as usize;
            if b >= MAX_BUCKETS {
                self.forget();
                return false;
            }
            if b >= self.generations.len() {
                // A bucket never announced reads as a generation no answer carries.
                self.generations.resize(b + 1, u64::MAX);
            }
            if let Some(slot) = self.generations.get_mut(b) {
                *slot = g;
            }
        }
        true
    }

    pub fn forget(&mut self) {
        self.generations = Vec::new();
    }

    pub fn is_live(&self) -> bool {
        !self.generations.is_empty()
    }
}

/// Client addresses the resolver's failed-key limiter refuses now, as its stream last said:
/// a keyed request from one of them is never answered from the cache (the resolver answers
/// it 429). Empty in the normal case, and then no request reads its client address.
#[derive(Debug, Default)]
pub struct Lockouts {
    until_ns: HashMap<IpAddr, u64>,
    /// The latest end of any lock: past it, nothing is locked.
    latest_ns: u64,
    /// The resolver had more locks than it sends: every address counts as locked.
    overflow: bool,
}

/// More addresses than the resolver sends in one message is a broken message: treat it as
/// the overflow it would be.
const MAX_LOCKOUTS: usize = 1 << 14;

impl Lockouts {
    /// Takes in a stream message that carries the list; others leave it as it is.
    pub fn apply(&mut self, message: &Generations, now_ns: u64) {
        if !message.lockouts_set {
            return;
        }
        self.forget();
        self.overflow = message.lockouts_overflow || message.lockouts.len() > MAX_LOCKOUTS;
        for l in message.lockouts.iter().take(MAX_LOCKOUTS) {
            let Ok(ip) = l.address.parse::<IpAddr>() else {
                // An address this filter cannot match must not be silently unlocked.
                self.overflow = true;
                continue;
            };
            let until = now_ns.saturating_add(l.remaining_ms.saturating_mul(1_000_000));
            self.until_ns.insert(ip, until);
            self.latest_ns = self.latest_ns.max(until);
        }
    }

    /// Whether any lock may be in force (then the client's address must be looked at).
    pub fn any(&self, now_ns: u64) -> bool {
        self.overflow || self.latest_ns > now_ns
    }

    /// Whether `client` (unknown: `None`) must not be answered from the cache.
    pub fn holds(&self, client: Option<IpAddr>, now_ns: u64) -> bool {
        self.overflow
            || client
                .and_then(|ip| self.until_ns.get(&ip))
                .is_some_and(|&until| until > now_ns)
    }

    pub fn forget(&mut self) {
        *self = Lockouts::default();
    }
}

/// Requests answered from the cache per sandbox, since the last flush.
#[derive(Debug, Default)]
pub struct Hits {
    counts: HashMap<String, u64>,
}

impl Hits {
    /// Counts one hit for `sandbox_id`; false (nothing counted) when the table is full and the
    /// id is new: the caller then asks the resolver, so no activity is lost.
    pub fn count(&mut self, sandbox_id: &str, max: usize) -> bool {
        if let Some(n) = self.counts.get_mut(sandbox_id) {
            *n += 1;
            return true;
        }
        if self.counts.len() >= max {
            return false;
        }
        self.counts.insert(sandbox_id.to_string(), 1);
        true
    }

    /// The report of everything counted so far, or `None` when there is nothing to send.
    pub fn take(&mut self) -> Option<HitReport> {
        if self.counts.is_empty() {
            return None;
        }
        let hits = self
            .counts
            .drain()
            .map(|(sandbox_id, count)| SandboxHits { sandbox_id, count })
            .collect();
        Some(HitReport { hits })
    }

    /// Puts back a report that did not reach the resolver, so the next flush carries it.
    pub fn restore(&mut self, report: HitReport) {
        for h in report.hits {
            *self.counts.entry(h.sandbox_id).or_default() += h.count;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use sandgate_core::{KeySource, TokenSource};

    fn target<'a>(key: &'a str, id: &'a str, port: u16) -> Target<'a> {
        Target {
            api_key: Some((key, KeySource::Bearer)),
            sandbox_id: id,
            port,
            path: "/",
            ..Default::default()
        }
    }

    fn view(generations: &[u64]) -> View {
        let mut v = View::default();
        assert!(v.apply(&Generations {
            reset: true,
            bucket: (0..generations.len() as u32).collect(),
            generation: generations.to_vec(),
            ..Default::default()
        }));
        v
    }

    fn cacheable(bucket: u32, generation: u64) -> Cacheable {
        Cacheable {
            bucket,
            generation,
            max_age_ms: 0,
        }
    }

    #[test]
    fn keys_differ_in_every_part_and_never_hold_the_api_key() {
        let base = Key::of(&target("k", "sb", 80));
        for other in [
            Key::of(&target("k2", "sb", 80)),
            Key::of(&target("k", "sb2", 80)),
            Key::of(&target("k", "sb", 81)),
            // The length prefix: moving a byte from key to id is another entry.
            Key::of(&target("ks", "b", 80)),
            Key::of(&Target {
                forwarded: true,
                ..target("k", "sb", 80)
            }),
            // Whether another bearer token is stripped is part of the answer.
            Key::of(&Target {
                other_credentials: vec![("authorization", "admin-key")],
                ..target("k", "sb", 80)
            }),
            Key::of(&Target {
                e2b: true,
                ..target("k", "sb", 80)
            }),
            // A token is another credential than the same bytes as a key.
            Key::of(&Target {
                api_key: None,
                token: Some(("k", TokenSource::Query)),
                ..target("k", "sb", 80)
            }),
        ] {
            assert_ne!(base, other);
        }
        let secret = "sk-very-secret-api-key";
        let k = Key::of(&target(secret, "sb", 80));
        assert!(
            !k.0.windows(4)
                .any(|w| secret.as_bytes().windows(4).any(|s| s == w))
        );
        assert!(!k.slot(4096).contains("secret"));
    }

    #[test]
    fn slots_are_bounded() {
        let slots: std::collections::HashSet<String> = (0..2000)
            .map(|i| Key::of(&target("k", &format!("sb-{i}"), 80)).slot(16))
            .collect();
        assert_eq!(slots.len(), 16, "2000 ids share the 16 slots");
    }

    #[test]
    fn an_entry_and_its_local_copy_answer_only_their_key_at_their_generation_before_expiry() {
        let config = CacheConfig::default();
        let key = Key::of(&target("k", "sb", 80));
        let v = view(&[7, 3]);
        let e = Entry::new(key, &cacheable(1, 3), false, b"reply", &config, &v, 1_000).unwrap();
        assert_eq!(e.expires_ns, 1_000 + 500_000_000);
        let bytes = e.encode_to_vec();
        let route = Decision::Route {
            destination: "10.0.0.1:80".into(),
            strip_credentials: 0,
        };
        let mut local = Local::default();
        local.keep(key, &e, route.clone(), 8, 1_000, 0);
        // (shared, local) answers; both follow one rule.
        let mut both = |key, v: &View, now| {
            let shared = Entry::read(&bytes, key, v, now).map(|e| e.reply);
            (shared, local.answer(key, v, now))
        };
        let hit = (Some(b"reply".to_vec()), Kept::Hit(route));
        assert_eq!(both(key, &v, 2_000), hit);
        let other = Key::of(&target("k", "sb", 81));
        assert_eq!(both(other, &v, 2_000), (None, Kept::Miss), "other key");
        assert_eq!(both(key, &v, e.expires_ns), (None, Kept::Miss), "expired");
        assert_eq!(
            both(key, &view(&[7, 4]), 2_000),
            (None, Kept::Miss),
            "moved"
        );
        let none = View::default();
        assert_eq!(both(key, &none, 2_000), (None, Kept::Miss), "no stream");
        assert_eq!(Entry::read(b"\xff\xff", key, &v, 2_000), None, "garbage");
    }

    #[test]
    fn one_request_renews_a_copy_near_its_end_the_others_keep_using_it() {
        let config = CacheConfig::default();
        let key = Key::of(&target("k", "sb", 80));
        let v = view(&[3]);
        let e = Entry::new(key, &cacheable(0, 3), false, b"r", &config, &v, 0).unwrap();
        let route = Decision::Route {
            destination: "10.0.0.1:80".into(),
            strip_credentials: 0,
        };
        let mut local = Local::default();
        let renew = 100;
        local.keep(key, &e, route.clone(), 8, 0, renew);
        let end = e.expires_ns;
        assert_eq!(local.answer(key, &v, end - 101), Kept::Hit(route.clone()));
        assert_eq!(local.answer(key, &v, end - 100), Kept::Renew);
        assert_eq!(local.answer(key, &v, end - 99), Kept::Hit(route.clone()));
        assert_eq!(local.answer(key, &v, end), Kept::Miss, "never past its end");
        // The renewed answer replaces the copy, which may be renewed again near its own end.
        let later = Entry::new(key, &cacheable(0, 3), false, b"r", &config, &v, end).unwrap();
        local.keep(key, &later, route.clone(), 8, end, renew);
        assert_eq!(local.answer(key, &v, end), Kept::Hit(route.clone()));
        assert_eq!(local.answer(key, &v, later.expires_ns - 1), Kept::Renew);
        // An answer its own bound cuts short (1 s left, a 60 s renew window): renewed in the
        // last fifth of that second, not from the start.
        let short = Cacheable {
            max_age_ms: 1_000,
            ..cacheable(0, 3)
        };
        let config = CacheConfig {
            ttl_ms: 300_000,
            ..CacheConfig::default()
        };
        let e = Entry::new(key, &short, false, b"r", &config, &v, 0).unwrap();
        local.keep(key, &e, route.clone(), 8, 0, config.renew_ns());
        assert_eq!(local.answer(key, &v, 799_999_999), Kept::Hit(route));
        assert_eq!(local.answer(key, &v, 800_000_000), Kept::Renew);
    }

    #[test]
    fn local_copies_are_bounded() {
        let config = CacheConfig::default();
        let v = view(&[3]);
        let mut local = Local::default();
        let deny = Decision::Deny(sandgate_core::Deny::new(
            sandgate_core::DenyCode::Forbidden,
            "no",
        ));
        for i in 0..10 {
            let key = Key::of(&target("k", &format!("sb-{i}"), 80));
            let e = Entry::new(key, &cacheable(0, 3), true, b"r", &config, &v, 0).unwrap();
            local.keep(key, &e, deny.clone(), 4, 0, 0);
            assert!(local.copies.len() <= 4);
            assert!(
                local
                    .copies
                    .values()
                    .all(|c| c.entry.reply.is_empty() && c.entry.key.is_empty())
            );
        }
    }

    #[test]
    fn an_entry_is_made_only_at_the_views_generation_and_within_its_bounds() {
        let config = CacheConfig::default();
        let key = Key::of(&target("k", "sb", 80));
        let v = view(&[7, 3]);
        let make =
            |c: &Cacheable, denial, v: &View| Entry::new(key, c, denial, b"r", &config, v, 0);
        assert!(make(&cacheable(1, 2), false, &v).is_none(), "view moved on");
        assert!(make(&cacheable(1, 4), false, &v).is_none(), "view lags");
        assert!(
            make(&cacheable(5, 3), false, &v).is_none(),
            "unknown bucket"
        );
        assert!(
            make(&cacheable(1, 3), false, &View::default()).is_none(),
            "no stream"
        );
        let deny = make(&cacheable(1, 3), true, &v).unwrap();
        assert_eq!(
            deny.expires_ns, 250_000_000,
            "refusals for the shorter time"
        );
        let short = Cacheable {
            max_age_ms: 40,
            ..cacheable(1, 3)
        };
        assert_eq!(
            make(&short, false, &v).unwrap().expires_ns,
            40_000_000,
            "key expiry"
        );
        let off = CacheConfig {
            deny_ttl_ms: 0,
            ..CacheConfig::default()
        };
        assert!(Entry::new(key, &cacheable(1, 3), true, b"r", &off, &v, 0).is_none());
    }

    #[test]
    fn the_view_follows_resets_and_changes_and_forgets_on_nonsense() {
        let mut v = View::default();
        let change = Generations {
            reset: false,
            bucket: vec![0],
            generation: vec![1],
            ..Default::default()
        };
        assert!(!v.apply(&change), "a change before the first reset");
        v = view(&[1, 2, 3]);
        assert!(v.apply(&Generations {
            reset: false,
            bucket: vec![2],
            generation: vec![9],
            ..Default::default()
        }));
        assert_eq!(
            (v.generation(0), v.generation(2), v.generation(3)),
            (Some(1), Some(9), None)
        );
        assert!(!v.apply(&Generations {
            reset: false,
            bucket: vec![1, 2],
            generation: vec![5],
            ..Default::default()
        }));
        assert!(!v.is_live(), "forgotten");
        v = view(&[1]);
        assert!(!v.apply(&Generations {
            reset: false,
            bucket: vec![u32::MAX],
            generation: vec![1],
            ..Default::default()
        }));
        assert!(!v.is_live());
    }

    #[test]
    fn hits_are_counted_bounded_and_restored() {
        let mut h = Hits::default();
        assert!(h.count("a", 2) && h.count("a", 2) && h.count("b", 2));
        assert!(!h.count("c", 2), "full: a new id is not counted");
        assert!(h.count("b", 2), "a known one still is");
        let report = h.take().unwrap();
        let mut got: Vec<_> = report
            .hits
            .iter()
            .map(|s| (s.sandbox_id.clone(), s.count))
            .collect();
        got.sort();
        assert_eq!(got, vec![("a".into(), 2), ("b".into(), 2)]);
        assert!(h.take().is_none());
        h.count("a", 2);
        h.restore(report);
        let total: u64 = h.take().unwrap().hits.iter().map(|s| s.count).sum();
        assert_eq!(total, 5);
    }

    #[test]
    fn config_checks() {
        assert!(CacheConfig::default().enabled());
        let off = CacheConfig {
            ttl_ms: 0,
            slots: 0,
            ..CacheConfig::default()
        };
        assert!(
            !off.enabled() && off.check().is_ok(),
            "off needs nothing else"
        );
        let bad = CacheConfig {
            slots: 0,
            ..CacheConfig::default()
        };
        assert!(bad.check().is_err());
    }

    #[test]
    fn lockouts_hold_their_addresses_until_their_time_and_only_when_sent() {
        use sandgate_proto::resolver::v1::Lockout;
        let lock = |address: &str, ms| Lockout {
            address: address.into(),
            remaining_ms: ms,
        };
        let mut l = Lockouts::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(!l.any(0) && !l.holds(Some(a), 0));
        let m = Generations {
            lockouts_set: true,
            lockouts: vec![lock("192.0.2.1", 1), lock("2001:db8::1", 5)],
            ..Default::default()
        };
        l.apply(&m, 1_000);
        assert!(l.any(1_000) && l.holds(Some(a), 1_000) && l.holds(Some(b), 1_000));
        assert!(!l.holds(None, 1_000) && !l.holds(Some("192.0.2.9".parse().unwrap()), 1_000));
        // Each lock ends at its own time; then nothing is looked at any more.
        assert!(!l.holds(Some(a), 1_000 + 1_000_000) && l.holds(Some(b), 1_000 + 1_000_000));
        assert!(!l.any(1_000 + 5_000_000));
        // A message without the list changes nothing; one with an empty list clears it.
        l.apply(&Generations::default(), 2_000);
        assert!(l.holds(Some(b), 2_000));
        l.apply(
            &Generations {
                lockouts_set: true,
                ..Default::default()
            },
            2_000,
        );
        assert!(!l.any(2_000));
        // Overflow, and an address that cannot be read, lock everyone.
        for m in [
            Generations {
                lockouts_set: true,
                lockouts_overflow: true,
                ..Default::default()
            },
            Generations {
                lockouts_set: true,
                lockouts: vec![lock("not an address", 9)],
                ..Default::default()
            },
        ] {
            l.apply(&m, 0);
            assert!(l.any(u64::MAX) && l.holds(None, u64::MAX));
        }
    }
}
