//! The static Pod source for local use and the demo: a YAML list of Pods, reloaded when it
//! changes. Owns the file format only; the store and the projection are shared with the
//! Kubernetes source.
//!
//! ```yaml
//! - name: demo-a            # required
//!   namespace: acme         # required
//!   ip: 127.0.0.11
//!   sandboxId: demo-a       # shorthand for the sandbox-id label
//!   phase: running          # shorthand for the phase label
//!   labels: {}              # any other labels
//!   annotations: {}         # e.g. the armed or last-active annotation
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{PodFacts, PodKeys, PodStore, PodView};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Entry {
    name: String,
    namespace: String,
    #[serde(default)]
    ip: Option<String>,
    #[serde(default)]
    sandbox_id: Option<String>,
    #[serde(default)]
    phase: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// Parses the inventory into Pod views.
pub fn parse(yaml: &str, keys: &PodKeys) -> anyhow::Result<Vec<PodView>> {
    let entries: Vec<Entry> = if yaml.trim().is_empty() {
        Vec::new()
    } else {
        serde_saphyr::from_str(yaml)?
    };
    let mut seen = std::collections::HashSet::new();
    entries
        .into_iter()
        .map(|mut e| {
            if e.name.is_empty() || e.namespace.is_empty() {
                anyhow::bail!("every pod needs a name and a namespace");
            }
            if !seen.insert((e.namespace.clone(), e.name.clone())) {
                anyhow::bail!("pod {}/{} is listed twice", e.namespace, e.name);
            }
            if let Some(ip) = &e.ip {
                ip.parse::<std::net::IpAddr>().map_err(|_| {
                    anyhow::anyhow!("pod {}/{}: bad ip {ip:?}", e.namespace, e.name)
                })?;
            }
            if let Some(id) = e.sandbox_id.take() {
                e.labels.insert(keys.sandbox_id_label.clone(), id);
            }
            if let Some(phase) = e.phase.take() {
                e.labels.insert(keys.phase_label.clone(), phase);
            }
            // A stable per-name uid: the file has no object identity beyond its names.
            let uid = format!("inventory:{}/{}", e.namespace, e.name);
            Ok(PodView::project(
                PodFacts {
                    uid: &uid,
                    namespace: &e.namespace,
                    name: &e.name,
                    labels: Some(&e.labels),
                    annotations: Some(&e.annotations),
                    ip: e.ip.as_deref(),
                    resource_version: None,
                },
                keys,
            ))
        })
        .collect()
}

/// Parses and installs the inventory as the store's whole state.
pub fn load(yaml: &str, keys: &PodKeys, store: &PodStore) -> anyhow::Result<usize> {
    let pods = parse(yaml, keys)?;
    let n = pods.len();
    store.replace_all(pods);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pods::Phase;

    #[test]
    fn parses_shorthands_and_labels() {
        let keys = PodKeys::default();
        let pods = parse(
            r#"
- name: demo-a
  namespace: acme
  ip: 127.0.0.11
  sandboxId: demo-a
  phase: running
- name: spare
  namespace: acme
  labels:
    agentbox.navix.sh/sandbox-phase: idle
  annotations:
    agentbox.navix.sh/last-active: "2026-01-01T00:00:00Z"
"#,
            &keys,
        )
        .unwrap();
        assert_eq!(pods.len(), 2);
        assert_eq!(pods[0].sandbox_id.as_deref(), Some("demo-a"));
        assert_eq!(pods[0].phase, Phase::Running);
        assert_eq!(pods[0].ip, Some("127.0.0.11".parse().unwrap()));
        assert_eq!(pods[1].phase, Phase::Idle);
        assert!(pods[1].last_active.is_some());
        assert!(parse("", &keys).unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_files() {
        let keys = PodKeys::default();
        for bad in [
            "- namespace: a",
            "- {name: a, namespace: b, ip: nope}",
            "- {name: a, namespace: b}\n- {name: a, namespace: b}",
            "- {name: a, namespace: b, typo: 1}",
            "not a list",
        ] {
            assert!(parse(bad, &keys).is_err(), "{bad}");
        }
    }
}
