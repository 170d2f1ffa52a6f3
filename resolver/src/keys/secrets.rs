//! Tenant keys from Kubernetes Secrets, as the agentbox API server writes them: label
//! `agentbox.io/type=api-key`, label `agentbox.io/token-hash` (first 16 hex of the key's
//! SHA-256), data `token` (the full SHA-256 hex), `namespace` (the tenant), optional `expiresAt`.
//!
//! Owns the translation of watched Secrets into the [`Source::Secrets`] key set. A new or deleted
//! Secret takes effect as soon as its watch event arrives.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};

use super::{KeySet, KeyStore, Source, TenantKey, parse_digest};
use crate::metrics::Metrics;

pub const TOKEN_HASH_LABEL: &str = "agentbox.io/token-hash";
pub const DEFAULT_SELECTOR: &str = "agentbox.io/type=api-key";

/// The tenant key a Secret holds, or why it holds none (the reason never contains key material).
pub fn tenant_key(secret: &Secret) -> Result<TenantKey, &'static str> {
    let data = secret.data.as_ref().ok_or("no data")?;
    let text = |k: &str| {
        data.get(k)
            .map(|v| std::str::from_utf8(&v.0).map(str::trim))
            .transpose()
            .map_err(|_| "data is not UTF-8")
    };
    let token = text("token")?.ok_or("no token")?;
    let digest = parse_digest(token).ok_or("token is not a SHA-256 hex digest")?;
    let label = secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(TOKEN_HASH_LABEL));
    if let Some(label) = label
        && !token
            .get(..16)
            .is_some_and(|p| p.eq_ignore_ascii_case(label))
    {
        return Err("token-hash label does not match the token");
    }
    let namespace = text("namespace")?
        .filter(|n| !n.is_empty())
        .ok_or("no namespace")?;
    let expires_at = match text("expiresAt")? {
        None | Some("") => None,
        Some(t) => Some(t.parse().map_err(|_| "expiresAt is not RFC 3339")?),
    };
    Ok(TenantKey {
        digest,
        namespace: namespace.into(),
        expires_at,
    })
}

fn publish(store: &KeyStore, secrets: &BTreeMap<(String, String), TenantKey>) {
    store.set_source(
        Source::Secrets,
        KeySet {
            admins: Vec::new(),
            tenants: secrets.values().cloned().collect(),
        },
    );
}

fn id(secret: &Secret) -> (String, String) {
    (
        secret.metadata.namespace.clone().unwrap_or_default(),
        secret.metadata.name.clone().unwrap_or_default(),
    )
}

/// Watches key Secrets until the task is dropped. `synced` is signalled after the first full
/// list has been published, so readiness can wait for keys as well as Pods.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    selector: String,
    store: Arc<KeyStore>,
    metrics: Arc<Metrics>,
    synced: tokio::sync::watch::Sender<bool>,
) {
    let api: Api<Secret> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let mut events = watcher::watcher(api, watcher::Config::default().labels(&selector))
        .default_backoff()
        .boxed();
    let mut current: BTreeMap<(String, String), TenantKey> = BTreeMap::new();
    let mut relist: BTreeMap<(String, String), TenantKey> = BTreeMap::new();
    let accept = |secret: &Secret| match tenant_key(secret) {
        Ok(k) => Some(k),
        Err(reason) => {
            let (ns, name) = id(secret);
            tracing::warn!(namespace = ns, name, reason, "ignoring API key secret");
            None
        }
    };
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => relist.clear(),
            Ok(Event::InitApply(s)) => {
                if let Some(k) = accept(&s) {
                    relist.insert(id(&s), k);
                }
            }
            Ok(Event::InitDone) => {
                current = std::mem::take(&mut relist);
                publish(&store, &current);
                metrics.informer_event("secrets", "init_done");
                synced.send_replace(true);
                tracing::info!(keys = current.len(), "key secrets synced");
            }
            Ok(Event::Apply(s)) => {
                match accept(&s) {
                    Some(k) => current.insert(id(&s), k),
                    // An edited Secret that no longer holds a valid key revokes the old one.
                    None => current.remove(&id(&s)),
                };
                publish(&store, &current);
                metrics.informer_event("secrets", "apply");
            }
            Ok(Event::Delete(s)) => {
                current.remove(&id(&s));
                publish(&store, &current);
                metrics.informer_event("secrets", "delete");
            }
            Err(error) => {
                metrics.informer_event("secrets", "error");
                tracing::warn!(%error, "key secret watch failed; retrying");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(data: &[(&str, &str)], hash_label: Option<&str>) -> Secret {
        let mut s = Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        if let Some(l) = hash_label {
            s.metadata.labels = Some(BTreeMap::from([(
                TOKEN_HASH_LABEL.to_string(),
                l.to_string(),
            )]));
        }
        s
    }

    #[test]
    fn reads_agentbox_secrets() {
        let hex = hex::encode(super::super::digest("k"));
        let k = tenant_key(&secret(
            &[
                ("token", &hex),
                ("namespace", "acme"),
                ("expiresAt", "2027-01-01T00:00:00Z"),
            ],
            Some(&hex[..16]),
        ))
        .unwrap();
        assert_eq!(k.digest, super::super::digest("k"));
        assert_eq!(&*k.namespace, "acme");
        assert!(k.expires_at.is_some());
        let no_exp = tenant_key(&secret(
            &[("token", &hex), ("namespace", "a"), ("expiresAt", "")],
            None,
        ));
        assert_eq!(no_exp.unwrap().expires_at, None);
    }

    #[test]
    fn refuses_malformed_secrets() {
        let hex = hex::encode(super::super::digest("k"));
        for (s, why) in [
            (secret(&[("namespace", "a")], None), "no token"),
            (
                secret(&[("token", "abc"), ("namespace", "a")], None),
                "token is not",
            ),
            (secret(&[("token", &hex)], None), "no namespace"),
            (
                secret(
                    &[("token", &hex), ("namespace", "a")],
                    Some("0000000000000000"),
                ),
                "label",
            ),
            (
                secret(
                    &[("token", &hex), ("namespace", "a"), ("expiresAt", "x")],
                    None,
                ),
                "expiresAt",
            ),
            (Secret::default(), "no data"),
        ] {
            let err = tenant_key(&s).unwrap_err();
            assert!(err.contains(why), "{err} vs {why}");
        }
    }
}
