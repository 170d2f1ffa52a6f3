//! The last-active annotation, written by every replica and read by all of them.
//!
//! With several gateway replicas each sees only part of a sandbox's traffic, so each writes
//! what it saw onto the sandbox's Pod (`agentbox.navix.sh/last-active`, RFC 3339), and reads
//! back what the others wrote: the Pod is the one place all replicas and the controller agree
//! on, and it outlives a resolver restart (start-up seeds from it).
//!
//! A write is only ever forward in time (never older than the annotation the store shows), at
//! most one per Pod per pass and `max_writes` in any `every`-long window, and re-checks the Pod
//! first: it must still carry the sandbox id and be running or stopping. The patch names the
//! resourceVersion the check saw, so a Pod that changed in between (re-assigned, say) refuses
//! it with 409 and is looked at again next pass. Owns the writing and the absorbing; it decides
//! nothing about requests.
//!
//! **Pace.** A busy sandbox's annotation is rewritten once it is R old, where R is the
//! sandbox's own refresh interval (see [`refresh_interval`]): `T/3` for a Pod with an
//! idle-timeout annotation of T seconds, floored at 1 s and capped at `every`
//! (`--last-active-interval`), which is also R of a Pod without one. The Go gateway uses
//! `max(1 s, min(120 s, T/3))`, and the v-D controller releases a sandbox only when
//! `now − annotation > T + 1.25·R + 5 s`; ours is never above `max(1 s, T/3)`, so a busy
//! sandbox stays far inside that. The writer passes every `min(every, 5 s)` — new activity on a
//! sandbox whose annotation is already R old is written within that, inside the 5 s of the
//! controller's slack — and besides wakes when a sandbox with newer activity reaches its R (at
//! most once a second), so an R below 5 s is kept too. The annotation has second precision and
//! names the last request, so a sandbox busy without pause is rewritten a little more often
//! than every R (about every R − 1 s for a whole R): its annotation is never older than R,
//! plus the write's own latency.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::{Phase, PodStore, PodView};
use crate::activity::{ActivityTracker, format_rfc3339};
use crate::metrics::Metrics;

/// The longest between two passes: new activity on a sandbox whose annotation is stale waits
/// at most this (the Go gateway's flush tick, which the controller's slack allows for).
pub const MAX_TICK: Duration = Duration::from_secs(5);
/// The floor of R, and the least time between two passes.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
/// R is this fraction of the idle timeout (the Go gateway's ratio).
const REFRESH_RATIO: u32 = 3;

pub struct Annotator {
    pub client: Client,
    pub pods: Arc<PodStore>,
    pub activity: Arc<ActivityTracker>,
    pub metrics: Arc<Metrics>,
    /// The annotation's key (`--last-active-annotation`).
    pub annotation: String,
    /// `--last-active-interval`: R of a sandbox without an idle timeout, and the longest R.
    pub every: Duration,
    /// `--last-active-max-writes`: at most this many writes in any `every`-long window.
    pub max_writes: usize,
}

/// Takes the last-active annotation of every running Pod into `activity` (never backwards):
/// start-up seeds from it, and each pass reads what the other replicas wrote. Running only, as
/// activity's garbage collection keeps only sandboxes with a running Pod. Returns how many.
pub fn absorb(pods: &PodStore, activity: &ActivityTracker) -> usize {
    let mut n = 0;
    for pod in pods.all() {
        if let (Phase::Running, Some(id), Some(at)) =
            (pod.phase, &pod.sandbox_id, pod.last_active_at())
        {
            activity.touch_at(id, at);
            n += 1;
        }
    }
    n
}

/// R, the refresh interval of a sandbox: how old its annotation may grow while the sandbox is
/// busy. `max(1 s, min(every, T/3))` with an idle timeout of T seconds, else `every`. (With
/// `every` below 1 s, as tests use, `every`.)
pub fn refresh_interval(idle_timeout: Option<std::num::NonZeroU32>, every: Duration) -> Duration {
    match idle_timeout {
        None => every,
        Some(t) => (Duration::from_secs(t.get().into()) / REFRESH_RATIO)
            .max(MIN_REFRESH)
            .min(every),
    }
}

/// What one Pod needs, for the activity `seen` of sandbox `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Not the sandbox's serving Pod, or nothing newer than its annotation.
    Nothing,
    /// Newer activity, to be written when the annotation is R old: at this time.
    Later(Timestamp),
    /// Write `at` now. `since` is when it became due (`None`: the Pod has no annotation yet);
    /// `next` is when `at`, once written, is R old.
    Now {
        at: Timestamp,
        since: Option<Timestamp>,
        next: Timestamp,
    },
}

pub fn due(pod: &PodView, id: &str, seen: Timestamp, now: Timestamp, every: Duration) -> Due {
    let serving = matches!(pod.phase, Phase::Running | Phase::Stopping);
    if !serving || pod.sandbox_id.as_deref() != Some(id) {
        return Due::Nothing;
    }
    // The annotation has second precision: compare at that precision, or every pass would
    // rewrite the same second.
    let Ok(seen) = Timestamp::from_second(seen.as_second()) else {
        return Due::Nothing;
    };
    let r = refresh_interval(pod.idle_timeout(), every);
    let plus_r = |t: Timestamp| t.saturating_add(r).unwrap_or(Timestamp::MAX);
    let next = plus_r(seen);
    match pod.last_active_at() {
        Some(written) if written >= seen => Due::Nothing,
        Some(written) if now < plus_r(written) => Due::Later(plus_r(written)),
        Some(written) => Due::Now {
            at: seen,
            since: Some(plus_r(written)),
            next,
        },
        None => Due::Now {
            at: seen,
            since: None,
            next,
        },
    }
}

/// The writer's timing and write budget, apart from the I/O so a made-up clock can drive it.
pub struct Pacer {
    every: Duration,
    max_writes: usize,
    /// When each write of the last `every` was planned, oldest first: the spent budget.
    recent: VecDeque<Timestamp>,
}

/// One pass's plan.
#[derive(Debug)]
pub struct Pass {
    /// The Pods to write, most overdue first, with the time to write onto each.
    pub writes: Vec<(Arc<PodView>, Timestamp)>,
    /// Due writes the budget leaves for a later pass.
    pub deferred: usize,
    /// How long until the next pass.
    pub wait: Duration,
}

impl Pacer {
    pub fn new(every: Duration, max_writes: usize) -> Pacer {
        Pacer {
            every,
            max_writes,
            recent: VecDeque::new(),
        }
    }

    /// The longest between two passes.
    pub fn tick(&self) -> Duration {
        self.every.min(MAX_TICK)
    }

    /// What to write now, and when to look again.
    pub fn plan(&mut self, now: Timestamp, pods: &PodStore, activity: &ActivityTracker) -> Pass {
        let mut ready = Vec::new();
        let mut wake: Option<Timestamp> = None;
        let mut soonest = |t: Timestamp| wake = Some(wake.map_or(t, |w| w.min(t)));
        for (id, seen) in activity.entries() {
            for pod in pods.by_sandbox(&id) {
                match due(&pod, &id, seen, now, self.every) {
                    Due::Nothing => {}
                    Due::Later(t) => soonest(t),
                    Due::Now { at, since, next } => ready.push((since, pod, at, next)),
                }
            }
        }
        // Never written first (None sorts first), then the longest overdue.
        ready.sort_by_key(|(since, ..)| *since);

        let window_start = now.saturating_sub(self.every).unwrap_or(Timestamp::MIN);
        // A clock that went back leaves times after `now`: they are dropped too.
        self.recent.retain(|&t| t > window_start && t <= now);
        let room = self.max_writes.saturating_sub(self.recent.len());
        let deferred = ready.len().saturating_sub(room);
        ready.truncate(room);
        let mut writes = Vec::with_capacity(ready.len());
        for (_, pod, at, next) in ready {
            self.recent.push_back(now);
            soonest(next);
            writes.push((pod, at));
        }
        if deferred > 0
            && let Some(&oldest) = self.recent.front()
        {
            soonest(oldest.saturating_add(self.every).unwrap_or(Timestamp::MAX));
        }

        let tick = self.tick();
        let wait = wake.map_or(tick, |t| {
            let until = Duration::try_from(now.duration_until(t)).unwrap_or(Duration::ZERO);
            until.max(tick.min(MIN_REFRESH)).min(tick)
        });
        Pass {
            writes,
            deferred,
            wait,
        }
    }
}

impl Annotator {
    /// Until the task is dropped: absorb the other replicas' writes, then write ours.
    pub async fn run(self) {
        self.pods.wait_synced().await;
        let mut pacer = Pacer::new(self.every, self.max_writes);
        loop {
            let started = tokio::time::Instant::now();
            absorb(&self.pods, &self.activity);
            let pass = pacer.plan(Timestamp::now(), &self.pods, &self.activity);
            if pass.deferred > 0 {
                self.metrics.annotation_write("deferred");
            }
            for (pod, at) in &pass.writes {
                let outcome = self.write(pod, *at).await;
                self.metrics.annotation_write(outcome);
            }
            tokio::time::sleep_until(started + pass.wait).await;
        }
    }

    async fn write(&self, pod: &PodView, at: Timestamp) -> &'static str {
        // The slim type: the reply is decoded like a watch event, without the spec.
        let api: Api<super::kube::SlimPod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let patch = json!({
            "metadata": {
                "resourceVersion": pod.resource_version.to_string(),
                "annotations": { &self.annotation: format_rfc3339(at) },
            }
        });
        match api
            .patch(&pod.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => "written",
            // The Pod changed since the check (re-assigned, or another replica wrote first):
            // the next pass looks again.
            Err(kube::Error::Api(e)) if e.code == 409 => "conflict",
            Err(error) => {
                tracing::warn!(pod = %pod.name, namespace = %pod.namespace, %error, "last-active write failed");
                "failed"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;
    use crate::decide::tests::pod;
    use crate::pods::LastActive;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn plus(t: Timestamp, d: Duration) -> Timestamp {
        t.saturating_add(d).unwrap()
    }

    const EVERY: Duration = Duration::from_secs(30);

    /// A running Pod of sandbox `id` with these annotations.
    fn annotated(name: &str, id: &str, at: Option<&str>, idle_timeout: u32) -> PodView {
        let mut p = pod("acme", name, Some(id), Phase::Running, Some("10.0.0.1"));
        p.last_active = LastActive::new(at.map(ts), NonZeroU32::new(idle_timeout));
        p
    }

    /// What the watch does after a write: the store shows the new annotation.
    fn written(pods: &PodStore, pod: &PodView, at: Timestamp) {
        pods.apply(PodView {
            last_active: LastActive::new(Some(at), pod.idle_timeout()),
            resource_version: pod.resource_version + 1,
            ..pod.clone()
        });
    }

    #[test]
    fn absorbing_takes_running_pods_annotations_forward_only() {
        let pods = PodStore::default();
        let annotated = |name: &str, id: &str, phase: Phase, at: &str| {
            let mut p = pod("acme", name, Some(id), phase, Some("10.0.0.1"));
            p.last_active = LastActive::new(Some(ts(at)), None);
            p
        };
        pods.apply(annotated("p1", "a", Phase::Running, "2026-12-02T10:00:00Z"));
        pods.apply(annotated(
            "p2",
            "b",
            Phase::Stopping,
            "2026-12-02T10:00:00Z",
        ));
        pods.apply(pod(
            "acme",
            "p3",
            Some("c"),
            Phase::Running,
            Some("10.0.0.3"),
        ));
        let activity = ActivityTracker::default();
        activity.touch_at("a", ts("2026-12-02T11:00:00Z"));
        assert_eq!(absorb(&pods, &activity), 1);
        assert_eq!(
            activity.get("a"),
            Some(ts("2026-12-02T11:00:00Z")),
            "never backwards"
        );
        assert_eq!(
            activity.get("b"),
            None,
            "stopping: garbage collection would drop it"
        );
        assert_eq!(activity.get("c"), None, "no annotation");
    }

    #[test]
    fn refresh_interval_follows_the_idle_timeout_up_to_the_interval() {
        let r = |t: u32, every: Duration| refresh_interval(NonZeroU32::new(t), every);
        assert_eq!(r(0, EVERY), EVERY, "no idle timeout: the interval");
        assert_eq!(r(1, EVERY), secs(1), "floored at 1 s");
        assert_eq!(r(3, EVERY), secs(1));
        assert_eq!(r(9, EVERY), secs(3));
        assert_eq!(
            r(10, EVERY),
            Duration::from_millis(3333) + Duration::from_nanos(333_333)
        );
        assert_eq!(r(30, EVERY), secs(10));
        assert_eq!(r(90, EVERY), secs(30));
        assert_eq!(r(600, EVERY), secs(30), "capped at the interval");
        // With the interval at the Go gateway's 120 s, R is the Go gateway's.
        assert_eq!(r(600, secs(120)), secs(120));
        assert_eq!(r(300, secs(120)), secs(100));
        assert_eq!(r(u32::MAX, secs(120)), secs(120));
        // An interval under the floor (tests) is kept.
        let fast = Duration::from_millis(200);
        assert_eq!((r(0, fast), r(3, fast)), (fast, fast));
    }

    #[test]
    fn only_forward_and_only_onto_the_sandbox_s_serving_pod() {
        let mut p = pod("acme", "p1", Some("sb"), Phase::Running, Some("10.0.0.1"));
        let t = ts("2026-12-02T10:00:00.750Z");
        let now = ts("2026-12-02T10:00:01Z");
        let second = ts("2026-12-02T10:00:00Z");
        let first = Due::Now {
            at: second,
            since: None,
            next: plus(second, EVERY),
        };
        assert_eq!(due(&p, "sb", t, now, EVERY), first);
        p.last_active = LastActive::new(Some(second), None);
        assert_eq!(
            due(&p, "sb", t, now, EVERY),
            Due::Nothing,
            "same second: nothing new"
        );
        p.last_active = LastActive::new(Some(ts("2026-12-02T10:05:00Z")), None);
        assert_eq!(
            due(&p, "sb", t, now, EVERY),
            Due::Nothing,
            "never backwards"
        );
        p.last_active = None;
        assert_eq!(
            due(&p, "other", t, now, EVERY),
            Due::Nothing,
            "re-assigned Pod"
        );
        for phase in [Phase::Idle, Phase::Starting, Phase::Failed] {
            p.phase = phase;
            assert_eq!(due(&p, "sb", t, now, EVERY), Due::Nothing, "{phase:?}");
        }
        p.phase = Phase::Stopping;
        assert_eq!(due(&p, "sb", t, now, EVERY), first);
    }

    #[test]
    fn newer_activity_waits_until_the_annotation_is_r_old() {
        let at = "2026-12-02T10:00:00Z";
        let seen = ts("2026-12-02T10:00:02.500Z");
        // T = 9 s: R = 3 s.
        let short = annotated("p1", "sb", Some(at), 9);
        assert_eq!(
            due(&short, "sb", seen, seen, EVERY),
            Due::Later(ts("2026-12-02T10:00:03Z"))
        );
        let now = ts("2026-12-02T10:00:03Z");
        assert_eq!(
            due(&short, "sb", seen, now, EVERY),
            Due::Now {
                at: ts("2026-12-02T10:00:02Z"),
                since: Some(now),
                next: ts("2026-12-02T10:00:05Z"),
            }
        );
        // No idle timeout: R is the interval.
        let plain = annotated("p1", "sb", Some(at), 0);
        assert_eq!(
            due(&plain, "sb", seen, now, EVERY),
            Due::Later(ts("2026-12-02T10:00:30Z"))
        );
    }

    /// Drives the pacer on a made-up clock, as `Annotator::run` does, while `busy` sandboxes
    /// get a request at every pass; every write lands at once. Returns (pass time, Pod, value)
    /// per write, and the deferred count per pass.
    fn simulate(
        pods: &PodStore,
        pacer: &mut Pacer,
        busy: &[&str],
        start: Timestamp,
        run: Duration,
    ) -> (Vec<(Timestamp, String, Timestamp)>, Vec<usize>) {
        let activity = ActivityTracker::default();
        let (mut writes, mut deferred) = (Vec::new(), Vec::new());
        let mut now = start;
        while now < plus(start, run) {
            for id in busy {
                activity.touch_at(id, now);
            }
            absorb(pods, &activity);
            let pass = pacer.plan(now, pods, &activity);
            for (pod, at) in pass.writes {
                written(pods, &pod, at);
                writes.push((now, pod.name.to_string(), at));
            }
            deferred.push(pass.deferred);
            assert!(
                pass.wait >= MIN_REFRESH.min(pacer.tick()),
                "{:?}",
                pass.wait
            );
            assert!(pass.wait <= pacer.tick(), "{:?}", pass.wait);
            now = plus(now, pass.wait);
        }
        (writes, deferred)
    }

    fn gaps(writes: &[(Timestamp, String, Timestamp)], name: &str) -> Vec<Duration> {
        let times: Vec<Timestamp> = writes.iter().filter(|w| w.1 == name).map(|w| w.0).collect();
        times
            .windows(2)
            .map(|w| Duration::try_from(w[0].duration_until(w[1])).unwrap())
            .collect()
    }

    #[test]
    fn a_busy_sandbox_with_a_short_idle_timeout_is_rewritten_every_r() {
        let pods = PodStore::default();
        pods.apply(annotated("short", "sb-short", None, 9));
        pods.apply(annotated("plain", "sb-plain", None, 0));
        let mut pacer = Pacer::new(EVERY, 500);
        assert_eq!(pacer.tick(), MAX_TICK);
        let start = ts("2026-12-02T10:00:00.300Z");
        let (writes, _) = simulate(
            &pods,
            &mut pacer,
            &["sb-short", "sb-plain"],
            start,
            secs(120),
        );
        // Both are written at the first pass (no annotation yet).
        assert_eq!(writes[0].0, start);
        assert_eq!(writes[1].0, start);

        let short = gaps(&writes, "short");
        assert!(short.len() >= 39, "{} writes in 120 s", short.len() + 1);
        assert!(short.iter().all(|&g| g <= secs(3)), "{short:?}");
        // The written times advance by at most R too: the annotation is never older than R
        // while the sandbox is busy (the Go controller allows T + 1.25·R + 5 s).
        let values: Vec<Timestamp> = writes
            .iter()
            .filter(|w| w.1 == "short")
            .map(|w| w.2)
            .collect();
        assert!(
            values
                .windows(2)
                .all(|v| v[0] < v[1]
                    && v[0].duration_until(v[1]) <= jiff::SignedDuration::from_secs(3)),
            "{values:?}"
        );

        // Without an idle timeout: the interval, as before.
        let plain = gaps(&writes, "plain");
        assert_eq!(plain.len(), 4, "{plain:?}");
        assert!(
            plain.iter().all(|&g| g <= EVERY && g > EVERY - secs(1)),
            "{plain:?}"
        );
    }

    #[test]
    fn new_activity_on_a_stale_annotation_is_written_within_the_tick() {
        let pods = PodStore::default();
        pods.apply(annotated("p", "sb", Some("2026-12-02T09:00:00Z"), 9));
        let activity = ActivityTracker::default();
        activity.touch_at("sb", ts("2026-12-02T09:00:00Z"));
        let mut pacer = Pacer::new(EVERY, 500);
        let now = ts("2026-12-02T10:00:00Z");
        // Idle: nothing to write, nothing to wake for before the tick.
        let pass = pacer.plan(now, &pods, &activity);
        assert!(pass.writes.is_empty());
        assert_eq!(pass.wait, MAX_TICK);
        // A request just after the pass: the next pass (a tick later) writes it.
        activity.touch_at("sb", ts("2026-12-02T10:00:00.100Z"));
        let pass = pacer.plan(plus(now, pass.wait), &pods, &activity);
        assert_eq!(pass.writes.len(), 1);
        assert_eq!(pass.writes[0].1, now);
    }

    #[test]
    fn the_write_bound_holds_in_every_interval() {
        let pods = PodStore::default();
        let names: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
        let ids: Vec<String> = (0..10).map(|i| format!("sb-{i}")).collect();
        for (i, (name, id)) in names.iter().zip(&ids).enumerate() {
            // Half with a short idle timeout, so R alone would ask for many more writes.
            pods.apply(annotated(name, id, None, if i % 2 == 0 { 6 } else { 0 }));
        }
        let busy: Vec<&str> = ids.iter().map(String::as_str).collect();
        let mut pacer = Pacer::new(EVERY, 3);
        let start = ts("2026-12-02T10:00:00Z");
        let (writes, deferred) = simulate(&pods, &mut pacer, &busy, start, secs(300));
        assert!(deferred[0] == 7, "{deferred:?}");
        for w in &writes {
            let window_end = plus(w.0, EVERY);
            let n = writes
                .iter()
                .filter(|x| x.0 >= w.0 && x.0 < window_end)
                .count();
            assert!(n <= 3, "{n} writes in the 30 s from {}", w.0);
        }
        // The budget is used, and every Pod gets its turn (never-written ones first).
        assert_eq!(writes.len(), 30, "3 per interval for 300 s");
        let first_ten: std::collections::HashSet<&str> =
            writes[..10].iter().map(|w| w.1.as_str()).collect();
        assert_eq!(first_ten.len(), 10, "{writes:?}");
    }
}
