//! The Kubernetes Pod source: a kube-rs watcher (list + watch, re-list on 410) feeding the
//! [`PodStore`](super::PodStore).
//!
//! Owns the slim wire type it decodes Pods into and the translation of watcher events into store
//! operations. It decodes only metadata and `status.podIP`, so neither the spec nor the rest of
//! the status is ever held in memory, not even transiently.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::ListParams;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use serde::Deserialize;

use super::{PodFacts, PodKeys, PodStore, PodView};
use crate::metrics::Metrics;

/// A Pod as routing reads it off the wire. Unknown fields are skipped by serde while decoding.
#[derive(Debug, Clone, Deserialize)]
pub struct SlimPod {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: Option<SlimPodStatus>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SlimPodStatus {
    // The wire name is `podIP`, which `rename_all = "camelCase"` would spell `podIp`.
    #[serde(default, rename = "podIP")]
    pub pod_ip: Option<String>,
}

impl k8s_openapi::Resource for SlimPod {
    const API_VERSION: &'static str = "v1";
    const GROUP: &'static str = "";
    const KIND: &'static str = "Pod";
    const VERSION: &'static str = "v1";
    const URL_PATH_SEGMENT: &'static str = "pods";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::Metadata for SlimPod {
    type Ty = ObjectMeta;

    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl SlimPod {
    fn view(&self, keys: &PodKeys) -> PodView {
        let m = &self.metadata;
        PodView::project(
            PodFacts {
                uid: m.uid.as_deref().unwrap_or_default(),
                namespace: m.namespace.as_deref().unwrap_or_default(),
                name: m.name.as_deref().unwrap_or_default(),
                labels: m.labels.as_ref(),
                annotations: m.annotations.as_ref(),
                ip: self.status.as_ref().and_then(|s| s.pod_ip.as_deref()),
                resource_version: m.resource_version.as_deref(),
            },
            keys,
        )
    }
}

/// Where and what to watch.
#[derive(Debug, Clone)]
pub struct WatchScope {
    /// `None` watches every namespace.
    pub namespace: Option<String>,
    pub label_selector: String,
}

/// Runs until the task is dropped. Errors are logged and retried with kube-rs's default
/// backoff; the store keeps serving its last state meanwhile.
pub async fn run(
    client: Client,
    scope: WatchScope,
    store: Arc<PodStore>,
    keys: PodKeys,
    metrics: Arc<Metrics>,
) {
    let api: Api<SlimPod> = match &scope.namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let mut config = watcher::Config::default();
    if !scope.label_selector.is_empty() {
        config = config.labels(&scope.label_selector);
    }
    let probe_params = ListParams::default().labels(&scope.label_selector).limit(1);
    let mut events = watcher::watcher(api.clone(), config)
        .default_backoff()
        .boxed();
    // While the stream is lost, a cheap list tells when the API server answers again: the
    // watcher may resume without a single event in a quiet cluster, and readiness must not
    // wait for one.
    let mut probe = tokio::time::interval(PROBE_EVERY);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A re-list is buffered and swapped in whole at InitDone, so readers never see a half list.
    let mut relist: Vec<PodView> = Vec::new();
    loop {
        let event = tokio::select! {
            event = events.next() => match event {
                Some(event) => event,
                None => return,
            },
            _ = probe.tick(), if store.lost() => {
                if api.list_metadata(&probe_params).await.is_ok() {
                    tracing::info!("API server answers again; pod sync regained");
                    store.mark_synced();
                }
                continue;
            }
        };
        match event {
            Ok(Event::Init) => {
                relist.clear();
                metrics.informer_event("pods", "init");
            }
            Ok(Event::InitApply(pod)) => relist.push(pod.view(&keys)),
            Ok(Event::InitDone) => {
                let n = relist.len();
                store.replace_all(relist.drain(..));
                relist.shrink_to_fit();
                metrics.informer_event("pods", "init_done");
                metrics.set_pods(store.len());
                tracing::info!(pods = n, "pod informer synced");
            }
            Ok(Event::Apply(pod)) => {
                let outcome = store.apply(pod.view(&keys));
                metrics.informer_event("pods", outcome_label("apply", outcome));
                metrics.set_pods(store.len());
                regained(&store);
            }
            Ok(Event::Delete(pod)) => {
                let m = &pod.metadata;
                let outcome = store.delete(
                    m.namespace.as_deref().unwrap_or_default(),
                    m.name.as_deref().unwrap_or_default(),
                    m.uid.as_deref().unwrap_or_default(),
                );
                metrics.informer_event("pods", outcome_label("delete", outcome));
                metrics.set_pods(store.len());
                regained(&store);
            }
            Err(error) => {
                metrics.informer_event("pods", "error");
                if store.is_synced() {
                    tracing::warn!(%error, "pod sync lost; serving from the last state");
                } else {
                    tracing::debug!(%error, "pod watch failed again; retrying");
                }
                store.mark_unsynced();
            }
        }
    }
}

/// How often a lost stream probes the API server.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Events flow again after a loss: the stream is back.
fn regained(store: &PodStore) {
    if store.lost() {
        tracing::info!("pod sync regained");
        store.mark_synced();
    }
}

fn outcome_label(kind: &'static str, outcome: super::Applied) -> &'static str {
    use super::Applied::*;
    match (kind, outcome) {
        ("apply", Stored) => "apply",
        ("delete", Stored) => "delete",
        (_, Stale) => "stale",
        (_, Fenced) => "fenced",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_wire_pod_shape_and_projects_routing_facts() {
        let body = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "namespace": "acme", "name": "pod-1", "uid": "u-1", "resourceVersion": "42",
                "labels": {"agentbox.navix.sh/sandbox-id": "sb-1",
                           "agentbox.navix.sh/sandbox-phase": "running"},
            },
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": "10.1.2.3", "podIPs": [{"ip": "10.1.2.3"}]},
        });
        let pod: SlimPod = serde_json::from_value(body).unwrap();
        let view = pod.view(&PodKeys::default());
        assert_eq!(view.ip, Some("10.1.2.3".parse().unwrap()));
        assert_eq!(view.sandbox_id.as_deref(), Some("sb-1"));
        assert_eq!(view.resource_version, 42);
        assert_eq!(&*view.uid, "u-1");
    }
}
