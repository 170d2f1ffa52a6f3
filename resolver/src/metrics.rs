//! Prometheus metrics, served as text on the resolver's HTTP port.
//!
//! Owns metric names and labels. Labels are always from fixed sets (outcome codes, event kinds):
//! never a key, never a sandbox id, so cardinality stays bounded and no secret can leak here.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    /// `route` or a deny code such as `sandbox_not_found`.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    /// `active`, `idle` or `unattributed` (no routable Pod has the stream's upstream IP).
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConfigLabels {
    source: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    /// `grpc` (the internal token) or `control` (the admin key).
    listener: &'static str,
    /// `missing` (no bearer token) or `invalid`.
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WakeLabels {
    /// `stream` (WatchWakeRequests) or `webhook`.
    via: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InformerLabels {
    resource: &'static str,
    event: &'static str,
}

pub struct Metrics {
    registry: Registry,
    resolves: Family<OutcomeLabels, Counter>,
    resolve_seconds: Histogram,
    informer_events: Family<InformerLabels, Counter>,
    stream_reports: Family<StreamLabels, Counter>,
    route_cache_entries: Gauge,
    pods: Gauge,
    sandboxes_tracked: Gauge,
    cluster_config_updates: Family<ConfigLabels, Counter>,
    peer_clusters: Gauge,
    annotation_writes: Family<StreamLabels, Counter>,
    cache_hits: Counter,
    generation_watchers: Gauge,
    unauthenticated: Family<RefusalLabels, Counter>,
    held: Gauge,
    held_total: Counter,
    hold_seconds: Histogram,
    hold_expired: Counter,
    wakes: Family<WakeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sandgate");
        let resolves = Family::<OutcomeLabels, Counter>::default();
        registry.register("resolves", "Resolve decisions by outcome", resolves.clone());
        // 1 µs .. ~1 s: in-process decisions take microseconds; the tail shows lock trouble.
        let resolve_seconds = Histogram::new(exponential_buckets(1e-6, 4.0, 11));
        registry.register(
            "resolve_duration_seconds",
            "Time to decide one request inside the resolver",
            resolve_seconds.clone(),
        );
        let informer_events = Family::<InformerLabels, Counter>::default();
        registry.register(
            "informer_events",
            "Watch events applied, by resource and kind (stale and fenced are ignored events)",
            informer_events.clone(),
        );
        let stream_reports = Family::<StreamLabels, Counter>::default();
        registry.register(
            "stream_reports",
            "Periodic access-log reports of open streams, by what they meant for activity",
            stream_reports.clone(),
        );
        let route_cache_entries = Gauge::default();
        registry.register(
            "route_cache_entries",
            "Routes held by the route cache, including expired ones not yet swept",
            route_cache_entries.clone(),
        );
        let pods = Gauge::default();
        registry.register("pods", "Pods held by the Pod store", pods.clone());
        let sandboxes_tracked = Gauge::default();
        registry.register(
            "activity_sandboxes",
            "Sandboxes with a recorded last activity",
            sandboxes_tracked.clone(),
        );
        let cluster_config_updates = Family::<ConfigLabels, Counter>::default();
        registry.register(
            "cluster_config_updates",
            "Peer-cluster configuration updates by source and result (rejected keeps the last good one)",
            cluster_config_updates.clone(),
        );
        let peer_clusters = Gauge::default();
        registry.register(
            "peer_clusters",
            "Peer clusters in the current configuration",
            peer_clusters.clone(),
        );
        let annotation_writes = Family::<StreamLabels, Counter>::default();
        registry.register(
            "last_active_writes",
            "last-active annotation writes onto Pods, by result (written, conflict, failed, deferred)",
            annotation_writes.clone(),
        );
        let cache_hits = Counter::default();
        registry.register(
            "filter_cache_hits",
            "Requests the filters answered from their decision caches, as they reported them",
            cache_hits.clone(),
        );
        let generation_watchers = Gauge::default();
        registry.register(
            "generation_watchers",
            "Open WatchGenerations streams (one per filter VM with its cache on)",
            generation_watchers.clone(),
        );
        let unauthenticated = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "unauthenticated_calls",
            "gRPC calls refused for a missing or invalid credential, by listener and reason",
            unauthenticated.clone(),
        );
        let held = Gauge::default();
        registry.register(
            "held_requests",
            "Requests held now, waiting for their sandbox to become routable",
            held.clone(),
        );
        let held_total = Counter::default();
        registry.register(
            "held_requests",
            "Requests that were held (counted when the hold ends)",
            held_total.clone(),
        );
        // 10 ms .. ~2 min: a Pod that is nearly up, to the longest budgets.
        let hold_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register(
            "hold_seconds",
            "How long a held request waited, whatever ended the hold",
            hold_seconds.clone(),
        );
        let hold_expired = Counter::default();
        registry.register(
            "hold_expired",
            "Held requests answered sandbox_starting: the budget ran out",
            hold_expired.clone(),
        );
        let wakes = Family::<WakeLabels, Counter>::default();
        registry.register(
            "wakes",
            "Wakes sent, by way (stream: once per wake while a subscriber listens; webhook: per post accepted)",
            wakes.clone(),
        );
        Metrics {
            registry,
            held,
            held_total,
            hold_seconds,
            hold_expired,
            wakes,
            unauthenticated,
            cache_hits,
            generation_watchers,
            annotation_writes,
            cluster_config_updates,
            peer_clusters,
            resolves,
            resolve_seconds,
            informer_events,
            stream_reports,
            route_cache_entries,
            pods,
            sandboxes_tracked,
        }
    }
}

impl Metrics {
    pub fn resolved(&self, outcome: &'static str, took: Duration) {
        self.resolves
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.resolve_seconds.observe(took.as_secs_f64());
    }

    pub fn informer_event(&self, resource: &'static str, event: &'static str) {
        self.informer_events
            .get_or_create(&InformerLabels { resource, event })
            .inc();
    }

    pub fn stream_report(&self, result: &'static str) {
        self.stream_reports
            .get_or_create(&StreamLabels { result })
            .inc();
    }

    pub fn cluster_config_update(&self, source: &'static str, ok: bool) {
        let result = if ok { "applied" } else { "rejected" };
        self.cluster_config_updates
            .get_or_create(&ConfigLabels { source, result })
            .inc();
    }

    pub fn annotation_write(&self, result: &'static str) {
        self.annotation_writes
            .get_or_create(&StreamLabels { result })
            .inc();
    }

    /// A gRPC call refused by a listener's guard (`reason`: `missing` or `invalid`).
    pub fn unauthenticated(&self, listener: &'static str, reason: &'static str) {
        self.unauthenticated
            .get_or_create(&RefusalLabels { listener, reason })
            .inc();
    }

    /// A hold began (+1) or ended (-1, after `took`, `expired` when its budget ran out).
    pub fn hold_began(&self) {
        self.held.inc();
    }

    pub fn hold_ended(&self, took: Duration, expired: bool) {
        self.held.dec();
        self.held_total.inc();
        self.hold_seconds.observe(took.as_secs_f64());
        if expired {
            self.hold_expired.inc();
        }
    }

    /// A slice of a hold ended without an answer (the caller waits again, or went away).
    pub fn hold_left(&self) {
        self.held.dec();
    }

    pub fn wake_sent(&self, via: &'static str) {
        self.wakes.get_or_create(&WakeLabels { via }).inc();
    }

    pub fn cache_hits(&self, n: u64) {
        self.cache_hits.inc_by(n);
    }

    /// +1 when a watcher opens, -1 when it goes.
    pub fn generation_watchers(&self, delta: i64) {
        self.generation_watchers.inc_by(delta);
    }

    pub fn set_peer_clusters(&self, n: usize) {
        self.peer_clusters.set(n as i64);
    }

    pub fn set_pods(&self, n: usize) {
        self.pods.set(n as i64);
    }

    /// Gauges that are cheaper to read at scrape time than to maintain per write.
    pub fn set_sizes(&self, route_cache: usize, tracked: usize) {
        self.route_cache_entries.set(route_cache as i64);
        self.sandboxes_tracked.set(tracked as i64);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_and_histogram() {
        let m = Metrics::default();
        m.resolved("route", Duration::from_micros(3));
        m.resolved("sandbox_not_found", Duration::from_micros(3));
        m.informer_event("pods", "apply");
        m.set_sizes(7, 2);
        let text = m.encode();
        assert!(
            text.contains(r#"sandgate_resolves_total{outcome="route"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"sandgate_informer_events_total{resource="pods",event="apply"} 1"#)
        );
        assert!(text.contains("sandgate_route_cache_entries 7"));
        assert!(text.contains("sandgate_resolve_duration_seconds_count 2"));
        assert!(text.ends_with("# EOF\n"));
    }
}
