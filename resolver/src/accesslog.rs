//! The gRPC access-log entry (envoy.service.accesslog.v3): how the resolver learns that a
//! long-lived stream — a WebSocket, an SSE response — is still in use after its one Resolve.
//!
//! Envoy logs every open stream periodically (`access_log_flush_interval`, filtered to
//! `DownstreamPeriodic` entries in envoy.yaml). A report whose byte counters moved since the
//! stream's previous report touches the sandbox behind the stream's upstream address; an open
//! but silent stream does not, so a forgotten connection cannot keep a sandbox alive forever.
//! Works the same behind the wasm filter and the ext_proc entry: it needs nothing but Envoy.
//!
//! Owns the per-stream byte bookkeeping; who a Pod IP belongs to is the Pod store's, and what
//! activity means is the tracker's.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::data::accesslog::v3::{AccessLogCommon, HttpAccessLogEntry};
use envoy_types::pb::envoy::service::accesslog::v3::access_log_service_server::{
    AccessLogService, AccessLogServiceServer,
};
use envoy_types::pb::envoy::service::accesslog::v3::stream_access_logs_message::LogEntries;
use envoy_types::pb::envoy::service::accesslog::v3::{
    StreamAccessLogsMessage, StreamAccessLogsResponse,
};
use futures::StreamExt;
use parking_lot::Mutex;
use tonic::{Request, Response, Status, Streaming};

use crate::activity::ActivityTracker;
use crate::metrics::Metrics;
use crate::pods::{Phase, PodStore};

/// Streams not reported for this long are forgotten (they ended, or Envoy restarted).
const FORGET_AFTER: Duration = Duration::from_secs(600);

pub struct StreamActivity {
    pods: Arc<PodStore>,
    activity: Arc<ActivityTracker>,
    metrics: Arc<Metrics>,
    /// stream id → (bytes seen so far, when last reported).
    streams: Mutex<HashMap<String, (u64, Instant)>>,
}

pub fn server(
    pods: Arc<PodStore>,
    activity: Arc<ActivityTracker>,
    metrics: Arc<Metrics>,
) -> AccessLogServiceServer<StreamActivity> {
    AccessLogServiceServer::new(StreamActivity::new(pods, activity, metrics))
}

impl StreamActivity {
    pub fn new(pods: Arc<PodStore>, activity: Arc<ActivityTracker>, metrics: Arc<Metrics>) -> Self {
        StreamActivity {
            pods,
            activity,
            metrics,
            streams: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one report; returns the sandboxes it counted as active.
    pub fn observe(&self, entry: &HttpAccessLogEntry, now: Instant) -> Vec<String> {
        let Some(common) = &entry.common_properties else {
            return Vec::new();
        };
        if !self.moved(common, now) {
            self.metrics.stream_report("idle");
            return Vec::new();
        }
        let Some(ip) = upstream_ip(common) else {
            self.metrics.stream_report("unattributed");
            return Vec::new();
        };
        let active: Vec<String> = self
            .pods
            .by_ip(ip)
            .iter()
            .filter(|p| matches!(p.phase, Phase::Running | Phase::Stopping))
            .filter_map(|p| p.sandbox_id.as_deref().map(str::to_string))
            .collect();
        for id in &active {
            self.activity.touch(id);
        }
        self.metrics.stream_report(if active.is_empty() {
            "unattributed"
        } else {
            "active"
        });
        active
    }

    /// Whether the stream carried bytes since its previous report. Envoy's counters are
    /// cumulative for the stream's life, so "moved" is "grew".
    fn moved(&self, common: &AccessLogCommon, now: Instant) -> bool {
        let total = common
            .downstream_wire_bytes_received
            .saturating_add(common.downstream_wire_bytes_sent);
        if common.stream_id.is_empty() {
            return total > 0;
        }
        let mut streams = self.streams.lock();
        let previous = streams.insert(common.stream_id.clone(), (total, now));
        match previous {
            // The first report covers the upgrade and whatever followed it.
            None => total > 0,
            Some((seen, _)) => total > seen,
        }
    }

    fn forget_old_streams(&self, now: Instant) {
        self.streams
            .lock()
            .retain(|_, (_, seen)| now.duration_since(*seen) < FORGET_AFTER);
    }
}

fn upstream_ip(common: &AccessLogCommon) -> Option<IpAddr> {
    match common.upstream_remote_address.as_ref()?.address.as_ref()? {
        AddressKind::SocketAddress(s) => s.address.parse().ok(),
        _ => None,
    }
}

#[tonic::async_trait]
impl AccessLogService for StreamActivity {
    async fn stream_access_logs(
        &self,
        request: Request<Streaming<StreamAccessLogsMessage>>,
    ) -> Result<Response<StreamAccessLogsResponse>, Status> {
        let mut messages = request.into_inner();
        while let Some(message) = messages.next().await {
            let message = message?;
            let now = Instant::now();
            if let Some(LogEntries::HttpLogs(logs)) = &message.log_entries {
                for entry in &logs.log_entry {
                    self.observe(entry, now);
                }
            }
            self.forget_old_streams(now);
        }
        Ok(Response::new(StreamAccessLogsResponse {}))
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};

    use super::*;
    use crate::pods::PodView;

    fn pod(name: &str, id: &str, phase: Phase, ip: &str) -> PodView {
        PodView {
            uid: name.into(),
            namespace: "ns".into(),
            name: name.into(),
            sandbox_id: Some(id.into()),
            phase,
            ip: Some(ip.parse().unwrap()),
            armed_for: None,
            last_active: None,
            resource_version: 1,
        }
    }

    fn report(stream: &str, upstream: &str, bytes: u64) -> HttpAccessLogEntry {
        HttpAccessLogEntry {
            common_properties: Some(AccessLogCommon {
                stream_id: stream.into(),
                downstream_wire_bytes_received: bytes,
                downstream_wire_bytes_sent: bytes / 2,
                upstream_remote_address: Some(Address {
                    address: Some(AddressKind::SocketAddress(SocketAddress {
                        address: upstream.into(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn fixture() -> StreamActivity {
        let pods = Arc::new(PodStore::default());
        pods.apply(pod("p1", "sb-1", Phase::Running, "10.0.0.1"));
        pods.apply(pod("p2", "sb-2", Phase::Idle, "10.0.0.2"));
        StreamActivity::new(pods, Arc::default(), Arc::default())
    }

    #[test]
    fn a_stream_that_moves_bytes_touches_its_sandbox() {
        let s = fixture();
        let t = Instant::now();
        assert_eq!(s.observe(&report("st", "10.0.0.1", 100), t), ["sb-1"]);
        assert!(s.activity.get("sb-1").is_some());
        assert_eq!(s.observe(&report("st", "10.0.0.1", 150), t), ["sb-1"]);
    }

    #[test]
    fn a_silent_stream_does_not() {
        let s = fixture();
        let t = Instant::now();
        s.observe(&report("st", "10.0.0.1", 100), t);
        assert!(s.observe(&report("st", "10.0.0.1", 100), t).is_empty());
        assert!(
            s.observe(&report("fresh-but-empty", "10.0.0.1", 0), t)
                .is_empty()
        );
    }

    #[test]
    fn only_routable_pods_are_credited() {
        let s = fixture();
        let t = Instant::now();
        assert!(
            s.observe(&report("a", "10.0.0.2", 10), t).is_empty(),
            "idle pod"
        );
        assert!(
            s.observe(&report("b", "10.9.9.9", 10), t).is_empty(),
            "unknown ip"
        );
        assert!(s.observe(&report("c", "not-an-ip", 10), t).is_empty());
        assert!(s.observe(&HttpAccessLogEntry::default(), t).is_empty());
        assert!(s.activity.is_empty());
    }

    #[test]
    fn old_streams_are_forgotten() {
        let s = fixture();
        let t = Instant::now();
        s.observe(&report("st", "10.0.0.1", 100), t);
        s.forget_old_streams(t + FORGET_AFTER);
        assert!(s.streams.lock().is_empty());
    }
}
