//! The cluster configuration from a Kubernetes ConfigMap (agentbox's `agentbox-clusters-config`,
//! key `config.yaml`), watched so an edit takes effect without a restart.
//!
//! Owns only the watch and the hand-over to [`ClusterStore::apply`]; a document that does not
//! check keeps the last good configuration (logged). A deleted ConfigMap keeps it too: losing
//! every peer because an object was briefly recreated would strand remote sandboxes.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

use super::{ClusterStore, Source};

/// The key of the document inside the ConfigMap.
pub const KEY: &str = "config.yaml";

fn apply(store: &ClusterStore, cm: &ConfigMap) {
    let Some(text) = cm.data.as_ref().and_then(|d| d.get(KEY)) else {
        tracing::error!(
            key = KEY,
            "cluster ConfigMap has no such key; keeping the last configuration"
        );
        return;
    };
    if let Err(error) = store.apply(Source::ConfigMap, text) {
        tracing::error!(%error, "invalid cluster ConfigMap; keeping the last good configuration");
    }
}

/// Watches one ConfigMap by name until the task is dropped.
pub async fn run(client: Client, namespace: String, name: String, store: Arc<ClusterStore>) {
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Apply(cm) | Event::InitApply(cm)) => apply(&store, &cm),
            Ok(Event::Delete(_)) => {
                tracing::warn!(
                    namespace,
                    name,
                    "cluster ConfigMap deleted; keeping the last configuration"
                )
            }
            Ok(Event::Init | Event::InitDone) => {}
            Err(error) => tracing::warn!(%error, "cluster ConfigMap watch failed; retrying"),
        }
    }
}
