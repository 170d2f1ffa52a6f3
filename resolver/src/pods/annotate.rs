//! The last-active annotation, written by every replica and read by all of them.
//!
//! With several gateway replicas each sees only part of a sandbox's traffic, so each writes
//! what it saw onto the sandbox's Pod (`agentbox.navix.sh/last-active`, RFC 3339), and reads
//! back what the others wrote: the Pod is the one place all replicas and the controller agree
//! on, and it outlives a resolver restart (start-up seeds from it).
//!
//! A write is only ever forward in time (never older than the annotation the store shows), at
//! most one per Pod per tick and `max_per_tick` in all, and re-checks the Pod first: it must
//! still carry the sandbox id and be running or stopping. The patch names the resourceVersion
//! the check saw, so a Pod that changed in between (re-assigned, say) refuses it with 409 and is
//! looked at again next tick. Owns the writing and the absorbing; it decides nothing about
//! requests.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use super::{Phase, PodStore, PodView};
use crate::activity::{ActivityTracker, format_rfc3339};
use crate::metrics::Metrics;

pub struct Annotator {
    pub client: Client,
    pub pods: Arc<PodStore>,
    pub activity: Arc<ActivityTracker>,
    pub metrics: Arc<Metrics>,
    /// The annotation's key (`--last-active-annotation`).
    pub annotation: String,
    pub every: Duration,
    pub max_per_tick: usize,
}

/// Takes the last-active annotation of every running Pod into `activity` (never backwards):
/// start-up seeds from it, and each tick reads what the other replicas wrote. Running only, as
/// activity's garbage collection keeps only sandboxes with a running Pod. Returns how many.
pub fn absorb(pods: &PodStore, activity: &ActivityTracker) -> usize {
    let mut n = 0;
    for pod in pods.all() {
        if let (Phase::Running, Some(id), Some(at)) = (pod.phase, &pod.sandbox_id, pod.last_active)
        {
            activity.touch_at(id, at);
            n += 1;
        }
    }
    n
}

/// What one Pod needs: the time to write, when it is newer than what the Pod shows.
pub fn due(pod: &PodView, id: &str, seen: Timestamp) -> Option<Timestamp> {
    let serving = matches!(pod.phase, Phase::Running | Phase::Stopping);
    if !serving || pod.sandbox_id.as_deref() != Some(id) {
        return None;
    }
    // The annotation has second precision: compare at that precision, or every tick would
    // rewrite the same second.
    let seen = Timestamp::from_second(seen.as_second()).ok()?;
    match pod.last_active {
        Some(written) if written >= seen => None,
        _ => Some(seen),
    }
}

impl Annotator {
    /// Until the task is dropped: absorb the other replicas' writes, then write ours.
    pub async fn run(self) {
        self.pods.wait_synced().await;
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            absorb(&self.pods, &self.activity);
            self.write_due().await;
        }
    }

    async fn write_due(&self) {
        let mut budget = self.max_per_tick;
        for (id, seen) in self.activity.entries() {
            for pod in self.pods.by_sandbox(&id) {
                let Some(at) = due(&pod, &id, seen) else {
                    continue;
                };
                if budget == 0 {
                    self.metrics.annotation_write("deferred");
                    return;
                }
                budget -= 1;
                let outcome = self.write(&pod, at).await;
                self.metrics.annotation_write(outcome);
            }
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
            // the next tick looks again.
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
    use super::*;
    use crate::decide::tests::pod;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn absorbing_takes_running_pods_annotations_forward_only() {
        let pods = PodStore::default();
        let annotated = |name: &str, id: &str, phase: Phase, at: &str| {
            let mut p = pod("acme", name, Some(id), phase, Some("10.0.0.1"));
            p.last_active = Some(ts(at));
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
    fn only_forward_and_only_onto_the_sandbox_s_serving_pod() {
        let mut p = pod("acme", "p1", Some("sb"), Phase::Running, Some("10.0.0.1"));
        let t = ts("2026-12-02T10:00:00.750Z");
        assert_eq!(due(&p, "sb", t), Some(ts("2026-12-02T10:00:00Z")));
        p.last_active = Some(ts("2026-12-02T10:00:00Z"));
        assert_eq!(due(&p, "sb", t), None, "same second: nothing new");
        p.last_active = Some(ts("2026-12-02T10:05:00Z"));
        assert_eq!(due(&p, "sb", t), None, "never backwards");
        p.last_active = None;
        assert_eq!(due(&p, "other", t), None, "re-assigned Pod");
        for phase in [Phase::Idle, Phase::Starting, Phase::Failed] {
            p.phase = phase;
            assert_eq!(due(&p, "sb", t), None, "{phase:?}");
        }
        p.phase = Phase::Stopping;
        assert!(due(&p, "sb", t).is_some());
    }
}
