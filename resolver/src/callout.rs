//! The Resolve gRPC entry: the callout the wasm filter makes per request (and, for a held
//! request, its Wait calls), and the two calls its decision cache makes per VM
//! (WatchGenerations, ReportHits). A thin shell: it maps the wire message to [`Facts`], asks
//! the [`Gateway`], and maps the [`Answer`] back.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use sandgate_core::Decision;
use sandgate_proto::resolver::v1::resolver_server::{Resolver, ResolverServer};
use sandgate_proto::resolver::v1::{
    Cacheable, Deny, Forward, Generations, Header, HeldAnswer, HitReport, HitReportReply, Hold,
    Lockout, ResolveReply, ResolveRequest, Route, WaitManyReply, WaitManyRequest,
    WatchGenerationsRequest, resolve_reply,
};
use tonic::{Request, Response, Status};

use crate::decide::{Facts, Gateway, Keep};
use crate::generation::BUCKETS;
use crate::hold::{Answer, Held};
use crate::keys::limit::Locked;

/// How often a watcher looks for changed generations: the most a filter lags behind a change
/// (plus delivery). Reading 1024 sums costs a few microseconds.
const WATCH_INTERVAL: Duration = Duration::from_millis(5);

pub struct ResolveService {
    gateway: Arc<Gateway>,
}

pub fn server(gateway: Arc<Gateway>) -> ResolverServer<ResolveService> {
    ResolverServer::new(ResolveService { gateway })
}

/// The wire form of a decision.
pub fn reply(decision: Decision, keep: Option<Keep>) -> ResolveReply {
    let outcome = match decision {
        Decision::Route {
            destination,
            strip_credentials,
        } => resolve_reply::Outcome::Route(Route {
            destination,
            strip_credentials,
        }),
        Decision::Forward(f) => resolve_reply::Outcome::Forward(Forward {
            destination: f.destination,
            authority: f.authority,
            path_prefix: f.path_prefix,
            upstream: f.upstream.as_str().to_string(),
            headers: f
                .headers
                .into_iter()
                .map(|(name, value)| Header { name, value })
                .collect(),
            from_cluster: f.from_cluster,
        }),
        Decision::Deny(d) => resolve_reply::Outcome::Deny(Deny {
            status: u32::from(d.status()),
            code: d.code.as_str().to_string(),
            message: d.message,
        }),
    };
    ResolveReply {
        outcome: Some(outcome),
        cacheable: keep.and_then(cacheable),
    }
}

/// The wire form of an answer: a decision, or hold (never kept by a cache).
pub fn answer_reply(answer: Answer) -> ResolveReply {
    match answer {
        Answer::Decided(decision, keep) => reply(decision, keep),
        Answer::Held { until } => ResolveReply {
            outcome: Some(resolve_reply::Outcome::Hold(Hold {
                until_unix_ms: until,
            })),
            cacheable: None,
        },
    }
}

/// The facts of a Resolve message; `others` holds the other credentials' texts.
fn facts<'a>(r: &'a ResolveRequest, others: &'a [&'a str]) -> Facts<'a> {
    Facts {
        api_key: &r.api_key,
        sandbox_id: &r.sandbox_id,
        port: r.port,
        forwarded: r.forwarded,
        client: r.client_address.parse().ok(),
        other_credentials: others,
        e2b: r.e2b,
        access_token: &r.access_token,
    }
}

/// `None` when the key expires so soon that no cache could keep the answer at all.
fn cacheable(keep: Keep) -> Option<Cacheable> {
    let max_age_ms = match keep.until {
        None => 0,
        Some(until) => {
            let left = until.duration_since(jiff::Timestamp::now()).as_millis();
            u64::try_from(left).ok().filter(|&ms| ms > 0)?
        }
    };
    Some(Cacheable {
        bucket: keep.bucket,
        generation: keep.generation,
        max_age_ms,
    })
}

/// The message that brings a watcher holding `held` up to `now`: every bucket the first time
/// (`held` empty), then only the ones that moved; `None` when nothing did.
fn changes(held: &[u64], now: &[u64]) -> Option<Generations> {
    let reset = held.len() != now.len();
    let (bucket, generation) = now
        .iter()
        .enumerate()
        .filter(|&(b, g)| reset || held.get(b) != Some(g))
        .map(|(b, &g)| (b as u32, g))
        .unzip::<_, _, Vec<_>, Vec<_>>();
    (reset || !bucket.is_empty()).then_some(Generations {
        reset,
        bucket,
        generation,
        ..Default::default()
    })
}

/// Most locked addresses one message carries; past it the filters treat every address as
/// locked (they ask the resolver, which knows) until the list fits again.
const MAX_LOCKOUTS: usize = 4096;

/// Adds the failed-key limiter's locked addresses to `message` (creating one if needed).
fn with_lockouts(message: Option<Generations>, locked: Locked) -> Generations {
    let mut m = message.unwrap_or_default();
    m.lockouts_set = true;
    m.lockouts_overflow = locked.overflow;
    m.lockouts = locked
        .addresses
        .into_iter()
        .map(|(ip, left)| Lockout {
            address: ip.to_string(),
            // Rounded up: a lock must not end early in the filter.
            remaining_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX) + 1,
        })
        .collect();
    m
}

/// Counts an open watcher in the metrics for as long as it lives.
struct Watcher(Arc<Gateway>);

impl Watcher {
    fn new(gateway: Arc<Gateway>) -> Self {
        gateway.metrics.generation_watchers(1);
        Watcher(gateway)
    }

    fn now(&self) -> Vec<u64> {
        (0..BUCKETS as u32).map(|b| self.0.generation(b)).collect()
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.metrics.generation_watchers(-1);
    }
}

type GenerationStream = Pin<Box<dyn Stream<Item = Result<Generations, Status>> + Send>>;

#[tonic::async_trait]
impl Resolver for ResolveService {
    async fn resolve(
        &self,
        request: Request<ResolveRequest>,
    ) -> Result<Response<ResolveReply>, Status> {
        let r = request.get_ref();
        let others: Vec<&str> = r.other_credentials.iter().map(String::as_str).collect();
        let answer = self.gateway.answer(facts(r, &others)).await;
        Ok(Response::new(answer_reply(answer)))
    }

    async fn wait_many(
        &self,
        request: Request<WaitManyRequest>,
    ) -> Result<Response<WaitManyReply>, Status> {
        let w = request.get_ref();
        let others: Vec<Vec<&str>> = w
            .held
            .iter()
            .map(|h| {
                h.request.as_ref().map_or_else(Vec::new, |r| {
                    r.other_credentials.iter().map(String::as_str).collect()
                })
            })
            .collect();
        let held: Vec<Held<'_>> = w
            .held
            .iter()
            .zip(&others)
            .filter_map(|(h, others)| {
                Some(Held {
                    id: h.id,
                    facts: facts(h.request.as_ref()?, others),
                    until: h.until_unix_ms,
                })
            })
            .collect();
        if held.len() != w.held.len() {
            return Err(Status::invalid_argument(
                "every held request needs its request",
            ));
        }
        let slice = Duration::from_millis(u64::from(w.max_wait_ms.max(1)));
        let answers = self
            .gateway
            .wait_many(&held, slice)
            .await
            .into_iter()
            .map(|(id, decision, keep)| HeldAnswer {
                id,
                reply: Some(reply(decision, keep)),
            })
            .collect();
        Ok(Response::new(WaitManyReply { answers }))
    }

    type WatchGenerationsStream = GenerationStream;

    async fn watch_generations(
        &self,
        _: Request<WatchGenerationsRequest>,
    ) -> Result<Response<GenerationStream>, Status> {
        let watcher = Watcher::new(Arc::clone(&self.gateway));
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The lock list goes out first with everything, then whenever an address is newly
        // locked (an expired lock ends in the filter by its own clock).
        let stream = futures::stream::unfold(
            (watcher, Vec::new(), None, tick),
            |(watcher, mut held, mut locks, mut tick)| async move {
                loop {
                    tick.tick().await;
                    let now = watcher.now();
                    let mut message = changes(&held, &now);
                    held = now;
                    let limiter = &watcher.0.key_failures;
                    let version = limiter.version();
                    if locks != Some(version) {
                        locks = Some(version);
                        message = Some(with_lockouts(message, limiter.locked(MAX_LOCKOUTS)));
                    }
                    if let Some(message) = message {
                        return Some((Ok(message), (watcher, held, locks, tick)));
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn report_hits(
        &self,
        request: Request<HitReport>,
    ) -> Result<Response<HitReportReply>, Status> {
        for h in &request.get_ref().hits {
            self.gateway.record_hits(&h.sandbox_id, h.count);
        }
        Ok(Response::new(HitReportReply {}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watcher_gets_everything_first_then_what_moved() {
        let first = changes(&[], &[5, 6, 7]).unwrap();
        assert!(first.reset);
        assert_eq!(
            (first.bucket, first.generation),
            (vec![0, 1, 2], vec![5, 6, 7])
        );
        assert_eq!(changes(&[5, 6, 7], &[5, 6, 7]), None);
        let moved = changes(&[5, 6, 7], &[5, 9, 7]).unwrap();
        assert!(!moved.reset);
        assert_eq!((moved.bucket, moved.generation), (vec![1], vec![9]));
    }

    #[test]
    fn locked_addresses_ride_along_or_make_their_own_message() {
        let locked = Locked {
            addresses: vec![("192.0.2.7".parse().unwrap(), Duration::from_millis(1500))],
            overflow: false,
        };
        let alone = with_lockouts(None, locked);
        assert!(alone.lockouts_set && !alone.reset && alone.bucket.is_empty());
        assert_eq!(alone.lockouts[0].address, "192.0.2.7");
        assert_eq!(alone.lockouts[0].remaining_ms, 1501);
        let first = with_lockouts(changes(&[], &[1, 2]), Locked::default());
        assert!(first.reset && first.lockouts_set && first.lockouts.is_empty());
        assert_eq!(first.bucket, vec![0, 1]);
    }

    #[test]
    fn an_answer_is_kept_no_longer_than_its_key() {
        let keep = |until| Keep {
            bucket: 3,
            generation: 9,
            until,
        };
        let c = cacheable(keep(None)).unwrap();
        assert_eq!((c.bucket, c.generation, c.max_age_ms), (3, 9, 0));
        let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60);
        let ms = cacheable(keep(Some(soon))).unwrap().max_age_ms;
        assert!((59_000..=60_000).contains(&ms), "{ms}");
        let past = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1);
        assert_eq!(cacheable(keep(Some(past))), None);
    }
}
