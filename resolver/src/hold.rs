//! Wake on traffic: a request for a sandbox that is about to be routable (its Pod starting,
//! being armed, getting its IP; a released sandbox the controller brings back) is held until
//! it is, within a budget, instead of an instant 502.
//!
//! Owns the waiting room — how many requests are held, per sandbox and in all, each counted by
//! a guard that also closes its metrics, so a client that goes away costs nothing afterwards —
//! and the wakes: one per sandbox while requests wait for it, sent to every
//! `WatchWakeRequests` subscriber (those pending at subscription first) and to the webhook.
//! What is routable stays `decide`'s: a hold only looks again when a store signals a change of
//! the sandbox's bucket ([`crate::generation::Generations::changes`]), never on a timer.
//!
//! Entries: the Resolve callout answers `Hold` at once and the filter calls `Wait` in slices
//! shorter than its callout deadline, so a dead resolver is still noticed within that deadline
//! (a held call on a live connection would look the same as a hung resolver for the whole
//! budget); ext_proc extends its message timeout and waits in one piece.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use sandgate_core::{Decision, Deny, DenyCode};
use sandgate_proto::ctrlplane::v1::WakeRequest;
use tokio::sync::{broadcast, mpsc};

use crate::decide::{Facts, Gateway, Keep, Pending};
use crate::metrics::Metrics;

/// How long and how many requests are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldConfig {
    /// Zero: nothing is held (an instant 502, as before).
    pub budget: Duration,
    pub max_per_sandbox: usize,
    pub max_total: usize,
}

impl HoldConfig {
    /// Nothing held: every refusal at once, as without this module.
    pub const OFF: HoldConfig = HoldConfig {
        budget: Duration::ZERO,
        max_per_sandbox: 0,
        max_total: 0,
    };
}

/// What an entry does with a request now.
#[derive(Debug)]
pub enum Answer {
    Decided(Decision, Option<Keep>),
    /// Wait (again) until Unix milliseconds `until`.
    Held {
        until: u64,
    },
}

#[derive(Default)]
struct Room {
    /// Held now, by sandbox (as the stores know it).
    held: HashMap<String, usize>,
    total: usize,
    /// Wakes sent and not yet answered, with when: a wake older than the budget is sent again.
    pending: HashMap<String, (WakeRequest, Instant)>,
}

pub struct Holds {
    config: HoldConfig,
    room: Mutex<Room>,
    wakes: broadcast::Sender<WakeRequest>,
    webhook: Option<mpsc::Sender<WakeRequest>>,
    metrics: Arc<Metrics>,
}

impl Holds {
    /// `webhook`: where wakes go besides the stream (see [`webhook`]).
    pub fn new(
        config: HoldConfig,
        webhook: Option<mpsc::Sender<WakeRequest>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Holds {
            config,
            room: Mutex::new(Room::default()),
            wakes: broadcast::channel(1024).0,
            webhook,
            metrics,
        }
    }

    pub fn enabled(&self) -> bool {
        !self.config.budget.is_zero()
    }

    /// Whether one more request for `id` may be held; the refusal when not.
    fn admit(&self, id: &str) -> Result<(), Deny> {
        let room = self.room.lock();
        let here = room.held.get(id).copied().unwrap_or(0);
        if here >= self.config.max_per_sandbox || room.total >= self.config.max_total {
            return Err(Deny::new(
                DenyCode::TooManyWaiting,
                format!("too many requests are waiting for sandbox {id} or for any sandbox"),
            ));
        }
        Ok(())
    }

    /// Counts a held request until the guard goes.
    fn enter(self: &Arc<Self>, id: &str, since: Instant) -> Result<HeldGuard, Deny> {
        self.admit(id)?;
        let mut room = self.room.lock();
        *room.held.entry(id.to_string()).or_default() += 1;
        room.total += 1;
        self.metrics.hold_began();
        Ok(HeldGuard {
            holds: Arc::clone(self),
            id: id.to_string(),
            since,
            ended: None,
        })
    }

    /// Asks the controller to bring `id` back, unless a wake for it is pending already.
    fn wake(&self, id: &str, namespace: &str, port: u16) {
        let wake = WakeRequest {
            sandbox_id: id.to_string(),
            namespace: namespace.to_string(),
            port: u32::from(port),
        };
        {
            let mut room = self.room.lock();
            let budget = self.config.budget;
            match room.pending.get(id) {
                Some((_, sent)) if sent.elapsed() < budget => return,
                _ => room
                    .pending
                    .insert(id.to_string(), (wake.clone(), Instant::now())),
            };
        }
        tracing::info!(sandbox_id = id, namespace, port, "wake requested");
        if self.wakes.send(wake.clone()).is_ok() {
            self.metrics.wake_sent("stream");
        }
        if let Some(webhook) = &self.webhook
            && webhook.try_send(wake).is_err()
        {
            tracing::warn!(sandbox_id = id, "wake webhook queue full; wake not posted");
        }
    }

    /// The wakes pending now, then every new one, for one subscriber.
    pub fn subscribe(&self) -> (Vec<WakeRequest>, broadcast::Receiver<WakeRequest>) {
        let room = self.room.lock();
        let rx = self.wakes.subscribe();
        let pending = room
            .pending
            .values()
            .filter(|(_, sent)| sent.elapsed() < self.config.budget)
            .map(|(wake, _)| wake.clone())
            .collect();
        (pending, rx)
    }
}

/// One held request, counted while it lives.
struct HeldGuard {
    holds: Arc<Holds>,
    id: String,
    /// When the hold began (its first look), for the hold-time histogram.
    since: Instant,
    /// How it ended: `Some(expired)` once decided; `None` when the call ends between slices
    /// (or the client went), which closes nothing but the count.
    ended: Option<bool>,
}

impl Drop for HeldGuard {
    fn drop(&mut self) {
        let mut room = self.holds.room.lock();
        room.total = room.total.saturating_sub(1);
        if let Some(n) = room.held.get_mut(&self.id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                room.held.remove(&self.id);
                // The last hold ended (routed, final or out of budget): the next request wakes
                // it again. Between a filter's Wait slices the wake stays pending.
                if self.ended.is_some() {
                    room.pending.remove(&self.id);
                }
            }
        }
        drop(room);
        match self.ended {
            Some(expired) => self.holds.metrics.hold_ended(self.since.elapsed(), expired),
            None => self.holds.metrics.hold_left(),
        }
    }
}

/// Unix milliseconds now.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Gateway {
    /// The first look at a request: its decision, or `Held` when its sandbox may become
    /// routable within the budget (a wake sent first when the controller must bring it back).
    pub async fn answer(&self, facts: Facts<'_>) -> Answer {
        let started = Instant::now();
        let look = self.look(facts).await;
        let Some(pending) = look.pending.filter(|_| self.holds.enabled()) else {
            self.record(&look.decision, started);
            return Answer::Decided(look.decision, look.keep);
        };
        let id = self.place(facts.sandbox_id).unwrap_or(facts.sandbox_id);
        if let Err(deny) = self.holds.admit(id) {
            let decision = Decision::Deny(deny);
            self.record(&decision, started);
            return Answer::Decided(decision, None);
        }
        if let Pending::Wake { namespace } = &pending {
            self.holds
                .wake(id, namespace, u16::try_from(facts.port).unwrap_or(0));
        }
        Answer::Held {
            until: unix_ms().saturating_add(duration_ms(self.holds.config.budget)),
        }
    }

    /// Holds one request until its sandbox is routable (then decided as usual), a look says
    /// the refusal is final, Unix ms `until` passes (503 `sandbox_starting`), or `slice` ends
    /// (`Held` again: the caller waits again).
    pub async fn wait(&self, facts: Facts<'_>, until: u64, slice: Duration) -> Answer {
        let held = [Held {
            id: 0,
            facts,
            until,
        }];
        match self.wait_many(&held, slice).await.pop() {
            Some((_, decision, keep)) => Answer::Decided(decision, keep),
            None => Answer::Held { until },
        }
    }

    /// Holds many requests at once (one call of a filter VM): returns as soon as one is
    /// decided, with every one decided by then (by its `id`), or with none when `slice` ends.
    /// The undecided stay held by their caller, who sends them again.
    pub async fn wait_many(
        &self,
        held: &[Held<'_>],
        slice: Duration,
    ) -> Vec<(u64, Decision, Option<Keep>)> {
        let budget = duration_ms(self.holds.config.budget);
        let now = unix_ms();
        let mut decided = Vec::new();
        let mut waiting = Vec::with_capacity(held.len());
        for h in held {
            let id = self.place(h.facts.sandbox_id).unwrap_or(h.facts.sandbox_id);
            // Never past the budget a Hold answer could have given; the hold began a budget
            // before its end, so earlier calls count towards its time too.
            let left = h.until.min(now.saturating_add(budget)).saturating_sub(now);
            let begun = Instant::now()
                .checked_sub(Duration::from_millis(budget.saturating_sub(left)))
                .unwrap_or_else(Instant::now);
            match self.holds.enter(id, begun) {
                Ok(guard) => {
                    let end = Instant::now() + Duration::from_millis(left);
                    waiting.push((h, id, guard, end));
                }
                Err(deny) => {
                    let decision = Decision::Deny(deny);
                    self.record(&decision, Instant::now());
                    decided.push((h.id, decision, None));
                }
            }
        }
        let slice_end = Instant::now() + slice;
        while decided.is_empty() && !waiting.is_empty() {
            // Armed before looking: a change between a look and the wait still wakes it.
            let mut buckets: Vec<u32> = waiting
                .iter()
                .map(|(_, id, _, _)| crate::generation::bucket(id))
                .collect();
            buckets.sort_unstable();
            buckets.dedup();
            let mut signals: Vec<_> = buckets
                .iter()
                .flat_map(|b| {
                    [
                        self.pods.generations.changes(*b),
                        self.routes.generations.changes(*b),
                    ]
                })
                .flatten()
                .map(|n| Box::pin(n.notified()))
                .collect();
            for s in &mut signals {
                s.as_mut().enable();
            }
            let mut still = Vec::with_capacity(waiting.len());
            for (h, id, mut guard, end) in waiting {
                let started = Instant::now();
                let look = self.look(h.facts).await;
                match &look.pending {
                    None => {
                        guard.ended = Some(false);
                        self.record(&look.decision, started);
                        decided.push((h.id, look.decision, look.keep));
                    }
                    Some(_) if Instant::now() >= end => {
                        guard.ended = Some(true);
                        let decision = Decision::Deny(Deny::new(
                            DenyCode::SandboxStarting,
                            format!(
                                "sandbox {id} did not become ready within {} s; try again",
                                self.holds.config.budget.as_secs()
                            ),
                        ));
                        self.record(&decision, started);
                        decided.push((h.id, decision, None));
                    }
                    // Again only when the wake it sent aged out (the sandbox stayed released).
                    Some(Pending::Wake { namespace }) => {
                        let port = u16::try_from(h.facts.port).unwrap_or(0);
                        self.holds.wake(id, namespace, port);
                        still.push((h, id, guard, end));
                    }
                    Some(Pending::Starting) => still.push((h, id, guard, end)),
                }
            }
            waiting = still;
            let first_end = waiting.iter().map(|(_, _, _, end)| *end).min();
            let wake_at = first_end.map_or(slice_end, |e| e.min(slice_end));
            if !decided.is_empty() || waiting.is_empty() || Instant::now() >= slice_end {
                break;
            }
            tokio::select! {
                _ = futures::future::select_all(signals), if !signals.is_empty() => {}
                () = tokio::time::sleep_until(wake_at.into()) => {}
            }
        }
        decided
    }
}

/// One held request of a [`Gateway::wait_many`] call.
#[derive(Debug, Clone, Copy)]
pub struct Held<'a> {
    pub id: u64,
    pub facts: Facts<'a>,
    /// Unix ms, as the Hold answer gave it.
    pub until: u64,
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Posts every wake to `url` (`http://host[:port]/path`) as JSON
/// `{"sandbox_id","namespace","port"}`, one at a time, for controllers that do not speak gRPC.
/// A failed post is logged and not retried: the next request for the sandbox wakes it again.
pub async fn webhook(
    url: hyper::Uri,
    mut wakes: mpsc::Receiver<WakeRequest>,
    metrics: Arc<Metrics>,
) {
    while let Some(wake) = wakes.recv().await {
        let body = serde_json::json!({
            "sandbox_id": wake.sandbox_id,
            "namespace": wake.namespace,
            "port": wake.port,
        })
        .to_string();
        match tokio::time::timeout(Duration::from_secs(5), post(&url, body)).await {
            Ok(Ok(status)) if status.is_success() => metrics.wake_sent("webhook"),
            Ok(Ok(status)) => {
                tracing::warn!(%status, sandbox_id = wake.sandbox_id, "wake webhook refused")
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, sandbox_id = wake.sandbox_id, "wake webhook failed")
            }
            Err(_) => tracing::warn!(sandbox_id = wake.sandbox_id, "wake webhook timed out"),
        }
    }
}

async fn post(url: &hyper::Uri, body: String) -> anyhow::Result<hyper::StatusCode> {
    let host = url.host().ok_or_else(|| anyhow::anyhow!("no host"))?;
    let port = url.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host, port)).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let authority = url.authority().map_or(host, |a| a.as_str());
    let request = hyper::Request::post(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))?;
    Ok(sender.send_request(request).await?.status())
}

/// `--wake-webhook`: an `http://` URL (a controller inside the cluster).
pub fn parse_webhook(raw: &str) -> Result<hyper::Uri, String> {
    let uri: hyper::Uri = raw.parse().map_err(|e| format!("{raw:?}: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!("{raw:?}: must be http://host[:port]/path"));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holds(max_per_sandbox: usize, max_total: usize) -> Arc<Holds> {
        Arc::new(Holds::new(
            HoldConfig {
                budget: Duration::from_secs(30),
                max_per_sandbox,
                max_total,
            },
            None,
            Arc::new(Metrics::default()),
        ))
    }

    #[test]
    fn the_room_is_capped_per_sandbox_and_in_all_and_empties_with_its_guards() {
        let h = holds(2, 3);
        let a1 = h.enter("a", Instant::now()).unwrap();
        let _a2 = h.enter("a", Instant::now()).unwrap();
        assert_eq!(
            h.enter("a", Instant::now()).err().map(|d| d.code),
            Some(DenyCode::TooManyWaiting)
        );
        let _b = h.enter("b", Instant::now()).unwrap();
        assert_eq!(h.admit("c").unwrap_err().code, DenyCode::TooManyWaiting);
        drop(a1);
        assert!(h.admit("c").is_ok() && h.admit("a").is_ok());
    }

    #[test]
    fn one_wake_per_sandbox_while_it_is_pending() {
        let h = holds(10, 10);
        let (pending, mut rx) = h.subscribe();
        assert!(pending.is_empty());
        let guard = h.enter("sb", Instant::now()).unwrap();
        for _ in 0..5 {
            h.wake("sb", "acme", 8080);
        }
        let wake = rx.try_recv().unwrap();
        assert_eq!(
            (wake.sandbox_id.as_str(), wake.namespace.as_str(), wake.port),
            ("sb", "acme", 8080)
        );
        assert!(rx.try_recv().is_err(), "one wake");
        // A subscriber that comes later hears of it first.
        let (pending, _) = h.subscribe();
        assert_eq!(pending.len(), 1);
        // A slice ending keeps the wake pending; the last hold ending lets the next request
        // wake it again.
        drop(guard);
        h.wake("sb", "acme", 8080);
        assert!(rx.try_recv().is_err(), "still pending between slices");
        let mut guard = h.enter("sb", Instant::now()).unwrap();
        guard.ended = Some(true);
        drop(guard);
        h.wake("sb", "acme", 8080);
        assert!(rx.try_recv().is_ok());
    }

    use crate::decide::tests::{FALLBACK, fixture, pod};
    use crate::pods::Phase;

    fn facts(id: &'static str) -> Facts<'static> {
        Facts {
            api_key: "acme-key",
            sandbox_id: id,
            port: 80,
            forwarded: false,
            client: None,
            other_credentials: &[],
            e2b: false,
            access_token: "",
        }
    }

    fn gateway(budget: Duration) -> Arc<Gateway> {
        let mut f = fixture(FALLBACK);
        f.gw.holds = Arc::new(Holds::new(
            HoldConfig {
                budget,
                max_per_sandbox: 10,
                max_total: 10,
            },
            None,
            Arc::new(Metrics::default()),
        ));
        Arc::new(f.gw)
    }

    /// Sandbox `sb`'s Pod in `phase`.
    fn set(gw: &Gateway, phase: Phase) {
        gw.pods
            .apply(pod("acme", "p1", Some("sb"), phase, Some("10.0.0.7")));
    }

    #[tokio::test]
    async fn a_held_request_is_routed_when_its_pod_runs_and_not_before() {
        let gw = gateway(Duration::from_secs(5));
        set(&gw, Phase::Starting);
        let Answer::Held { until } = gw.answer(facts("sb")).await else {
            panic!("a starting sandbox is held");
        };
        let waiter = tokio::spawn({
            let gw = Arc::clone(&gw);
            async move { gw.wait(facts("sb"), until, Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished(), "answered before the Pod ran");
        set(&gw, Phase::Running);
        let answer = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("released by the Pod's change, not a timer")
            .unwrap();
        assert!(
            matches!(&answer, Answer::Decided(Decision::Route { destination, .. }, Some(_)) if destination == "10.0.0.7:80"),
            "{answer:?}"
        );
        assert_eq!(gw.holds.room.lock().total, 0);
    }

    #[tokio::test]
    async fn a_hold_ends_with_its_budget_its_slice_or_a_final_refusal() {
        let gw = gateway(Duration::from_millis(300));
        set(&gw, Phase::Starting);
        let Answer::Held { until } = gw.answer(facts("sb")).await else {
            panic!("held");
        };
        // A slice shorter than the budget: hold again.
        let again = gw.wait(facts("sb"), until, Duration::from_millis(50)).await;
        assert!(
            matches!(again, Answer::Held { until: u } if u == until),
            "{again:?}"
        );
        let Answer::Decided(Decision::Deny(d), None) =
            gw.wait(facts("sb"), until, Duration::from_secs(5)).await
        else {
            panic!("the budget ends the hold");
        };
        assert_eq!(d.code, DenyCode::SandboxStarting);
        // A failed Pod is final at once.
        set(&gw, Phase::Failed);
        let Answer::Decided(Decision::Deny(d), _) = gw.answer(facts("sb")).await else {
            panic!("not held");
        };
        assert_eq!(d.code, DenyCode::SandboxNotReady);
    }

    #[tokio::test]
    async fn a_released_sandbox_is_woken_once_however_many_wait() {
        let gw = gateway(Duration::from_secs(5));
        gw.pods
            .apply(pod("acme", "p1", Some("sb"), Phase::Idle, Some("10.0.0.7")));
        let (_, mut wakes) = gw.holds.subscribe();
        for _ in 0..5 {
            assert!(matches!(gw.answer(facts("sb")).await, Answer::Held { .. }));
        }
        let wake = wakes.try_recv().unwrap();
        assert_eq!(
            (wake.sandbox_id.as_str(), wake.namespace.as_str()),
            ("sb", "acme")
        );
        assert!(wakes.try_recv().is_err());
    }

    #[test]
    fn webhooks_are_plain_http_urls() {
        assert!(parse_webhook("http://controller.agentbox:8080/wake").is_ok());
        assert!(parse_webhook("https://c/wake").is_err());
        assert!(parse_webhook("/wake").is_err());
    }
}
