//! The cluster configuration from a Kubernetes ConfigMap (agentbox's `agentbox-clusters-config`,
//! key `config.yaml`, or the legacy key `clusters.yaml` when there is no `config.yaml`, as the Go
//! gateway reads it), watched so an edit takes effect without a restart.
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
/// The key the Go chart seeds (`clusters.yaml: ""`) and older hand-written ConfigMaps use; read
/// only when [`KEY`] is missing.
pub const LEGACY_KEY: &str = "clusters.yaml";

/// The document and the key it was found under: [`KEY`] when present, else [`LEGACY_KEY`].
fn document(cm: &ConfigMap) -> Option<(&'static str, &str)> {
    let data = cm.data.as_ref()?;
    [KEY, LEGACY_KEY]
        .into_iter()
        .find_map(|key| data.get(key).map(|text| (key, text.as_str())))
}

fn apply(store: &ClusterStore, cm: &ConfigMap) {
    let Some((key, text)) = document(cm) else {
        tracing::error!(
            key = KEY,
            legacy_key = LEGACY_KEY,
            "cluster ConfigMap has neither key; keeping the last configuration"
        );
        return;
    };
    if key == LEGACY_KEY {
        tracing::debug!(key, "cluster ConfigMap read from its legacy key");
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(entries: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            data: Some(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn config_yaml_wins_and_clusters_yaml_is_the_fallback() {
        let both = cm(&[("clusters.yaml", "legacy"), ("config.yaml", "current")]);
        assert_eq!(document(&both), Some(("config.yaml", "current")));
        let legacy = cm(&[("clusters.yaml", "legacy"), ("other", "x")]);
        assert_eq!(document(&legacy), Some(("clusters.yaml", "legacy")));
        // The Go chart's seed: an empty legacy document is still the document ("no peers").
        assert_eq!(
            document(&cm(&[("clusters.yaml", "")])),
            Some(("clusters.yaml", ""))
        );
        assert_eq!(document(&cm(&[("other", "x")])), None);
        assert_eq!(document(&ConfigMap::default()), None);
    }
}
