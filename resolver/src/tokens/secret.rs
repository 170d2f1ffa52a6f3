//! Signing keys from one Kubernetes Secret (`--token-keys-secret namespace/name`): each data
//! entry is a key, its name the key id and its bytes the secret (at least 32). Every replica
//! watching the same Secret signs with the same newest key and verifies all of them.
//!
//! Owns the translation of that Secret into [`super::Source::Secret`]: an edit applies as soon
//! as its watch event arrives, and a deleted Secret removes its keys (their tokens die).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

use super::{SigningKey, Source, TokenKeys};
use crate::metrics::Metrics;

/// The keys a Secret holds; an entry that is no key is skipped with a warning that names it.
pub fn signing_keys(secret: &Secret) -> Vec<SigningKey> {
    let Some(data) = &secret.data else {
        return Vec::new();
    };
    data.iter()
        .filter_map(|(id, bytes)| match SigningKey::new(id, bytes.0.clone()) {
            Ok(key) => Some(key),
            Err(error) => {
                tracing::warn!(%error, "ignoring a token signing key");
                None
            }
        })
        .collect()
}

/// Watches `namespace/name` until the task is dropped; `synced` is signalled after the first
/// list, so readiness waits for the keys.
pub async fn run(
    client: Client,
    namespace: String,
    name: String,
    store: Arc<TokenKeys>,
    metrics: Arc<Metrics>,
    synced: tokio::sync::watch::Sender<bool>,
) {
    let api: Api<Secret> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let mut relist = Vec::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => relist.clear(),
            Ok(Event::InitApply(s)) => relist = signing_keys(&s),
            Ok(Event::InitDone) => {
                let keys = std::mem::take(&mut relist);
                tracing::info!(keys = keys.len(), "token signing keys synced");
                store.set_source(Source::Secret, keys);
                metrics.informer_event("token_keys", "init_done");
                synced.send_replace(true);
            }
            Ok(Event::Apply(s)) => {
                store.set_source(Source::Secret, signing_keys(&s));
                metrics.informer_event("token_keys", "apply");
            }
            Ok(Event::Delete(_)) => {
                store.set_source(Source::Secret, Vec::new());
                metrics.informer_event("token_keys", "delete");
            }
            Err(error) => {
                metrics.informer_event("token_keys", "error");
                tracing::warn!(%error, "token signing key watch failed; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    #[test]
    fn each_data_entry_is_a_key_and_bad_ones_are_skipped() {
        let secret = Secret {
            data: Some(BTreeMap::from([
                ("2026-12".to_string(), ByteString(vec![7; 32])),
                ("short".to_string(), ByteString(vec![7; 8])),
                ("bad id".to_string(), ByteString(vec![7; 32])),
            ])),
            ..Default::default()
        };
        let keys = signing_keys(&secret);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].id, "2026-12");
        assert!(signing_keys(&Secret::default()).is_empty());
    }
}
