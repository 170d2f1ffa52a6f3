//! Peer clusters for cross-cluster routing: which other clusters exist, where their gateways
//! are, what each requires, and how their host names resolve.
//!
//! Owns the configuration document (the `config.yaml` of agentbox's `agentbox-clusters-config`
//! ConfigMap, also read from a file or pushed over the control plane), its checking, the
//! current configuration every decision reads ([`ClusterStore`]), and the DNS cache
//! ([`dns`]). It decides nothing about a request: `decide` asks it for a peer.
//!
//! Every source replaces the whole configuration; the last write wins, and a document that
//! does not parse or check is refused with the current configuration kept. A document must
//! name at least one known top-level key (`clusters`, `hostAliases`): one whose keys are all
//! unknown (a typo such as `clusterz:`, or another program's document) is refused rather than
//! read as "no peers". "No peers" is said with `clusters: []`, or with an empty document
//! (nothing but whitespace and comments), which always meant that.

pub mod configmap;
pub mod dns;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use sandgate_core::{HOP_HEADER, PeerUpstream, UPSTREAM_HEADER};
use serde::Deserialize;

use crate::generation::Generations;
use crate::metrics::Metrics;

/// The document, as agentbox writes it. Unknown fields are ignored: the ConfigMap carries
/// more than the gateway reads. A top-level key is `None` when absent and `Some` when present
/// (an empty list included), so a document that names none of them can be told from one that
/// lists no peers.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    #[serde(default, deserialize_with = "present")]
    clusters: Option<Vec<ClusterDoc>>,
    #[serde(default, deserialize_with = "present")]
    host_aliases: Option<Vec<HostAliasDoc>>,
}

/// The known top-level keys, for the refusal of a document that names none of them.
const KNOWN_KEYS: &str = "`clusters`, `hostAliases`";

/// Nothing but blank lines and comments: no YAML node at all. (A line that starts with `#`
/// is a comment unless it continues a block scalar, and a block scalar needs a line that is
/// not a comment before it.)
fn is_empty_yaml(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim_start();
        line.is_empty() || line.starts_with('#')
    })
}

/// A key that is present: its value as `T` would read it (so `clusters: ~` stays an error,
/// as it was before the key's presence mattered).
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClusterDoc {
    id: String,
    #[serde(default)]
    gateway: Option<GatewayDoc>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GatewayDoc {
    #[serde(default, rename = "dataURL")]
    data_url: Option<String>,
    #[serde(default)]
    headers: HashMap<String, String>,
    #[serde(default)]
    data_headers: HashMap<String, String>,
    /// sandgate's own addition: TLS to this peer without certificate verification.
    #[serde(default)]
    insecure_skip_verify: bool,
}

#[derive(Debug, Deserialize)]
struct HostAliasDoc {
    ip: IpAddr,
    #[serde(default)]
    hostnames: Vec<String>,
}

/// One peer cluster's gateway, checked and ready to forward to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerGateway {
    pub upstream: PeerUpstream,
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// `:authority` for the peer: host, plus the port when it is not the scheme's default.
    pub authority: String,
    /// "" or "/…" without a trailing slash.
    pub path_prefix: String,
    /// `gateway.headers` overlaid by `gateway.dataHeaders`, names in lower case, sorted.
    pub headers: Vec<(String, String)>,
}

/// A peer cluster: known, with or without a gateway to reach it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub id: String,
    pub gateway: Option<PeerGateway>,
}

/// A checked configuration.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub peers: HashMap<String, Arc<Peer>>,
    /// Host name (lower case) → IP, taking precedence over DNS.
    pub host_aliases: HashMap<String, IpAddr>,
}

impl ClusterConfig {
    /// Parses and checks a document; the error names the field at fault. An empty document
    /// (whitespace and comments only) is the empty configuration; a mapping without any known
    /// top-level key is refused.
    pub fn parse(text: &str) -> Result<ClusterConfig, String> {
        let doc = if is_empty_yaml(text) {
            Document::default()
        } else {
            let doc: Document =
                serde_saphyr::from_str(text).map_err(|e| format!("not a cluster config: {e}"))?;
            if doc.clusters.is_none() && doc.host_aliases.is_none() {
                return Err(format!(
                    "not a cluster config: no known top-level key ({KNOWN_KEYS}); \
                     `clusters: []` says \"no peers\""
                ));
            }
            doc
        };
        let mut peers = HashMap::new();
        for c in doc.clusters.unwrap_or_default() {
            if c.id.is_empty()
                || !c
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
            {
                return Err(format!(
                    "cluster id {:?} must be letters, digits, '.', '-' or '_'",
                    c.id
                ));
            }
            let gateway = match c.gateway {
                Some(g) => peer_gateway(&c.id, g)?,
                None => None,
            };
            let peer = Peer {
                id: c.id.clone(),
                gateway,
            };
            if peers.insert(c.id.clone(), Arc::new(peer)).is_some() {
                return Err(format!("cluster {} is listed twice", c.id));
            }
        }
        let mut host_aliases = HashMap::new();
        for a in doc.host_aliases.unwrap_or_default() {
            for h in a.hostnames {
                host_aliases.insert(h.to_ascii_lowercase(), a.ip);
            }
        }
        Ok(ClusterConfig {
            peers,
            host_aliases,
        })
    }
}

fn peer_gateway(cluster: &str, g: GatewayDoc) -> Result<Option<PeerGateway>, String> {
    let Some(url) = g.data_url.filter(|u| !u.trim().is_empty()) else {
        return Ok(None);
    };
    let url = parse_url(url.trim()).map_err(|e| format!("cluster {cluster}: dataURL: {e}"))?;
    let upstream = match (url.https, g.insecure_skip_verify) {
        (false, _) => PeerUpstream::Plain,
        (true, false) => PeerUpstream::Tls,
        (true, true) => PeerUpstream::TlsInsecure,
    };
    let mut headers: HashMap<String, String> = HashMap::new();
    // dataHeaders overlay headers: the data plane may need a different credential.
    for (name, value) in g.headers.into_iter().chain(g.data_headers) {
        let name = name.to_ascii_lowercase();
        check_header(&name, &value)
            .map_err(|e| format!("cluster {cluster}: header {name:?}: {e}"))?;
        headers.insert(name, value);
    }
    let mut headers: Vec<_> = headers.into_iter().collect();
    headers.sort();
    Ok(Some(PeerGateway {
        upstream,
        authority: url.authority,
        host: url.host,
        port: url.port,
        path_prefix: url.path_prefix,
        headers,
    }))
}

/// Names a peer's headers may not use: they would re-target the request or impersonate what
/// the gateways write themselves. Other `x-sandgate-*` names are the right home for a
/// credential only gateways care about: every gateway strips them before a sandbox.
fn check_header(name: &str, value: &str) -> Result<(), &'static str> {
    let token = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if !token {
        return Err("is not a header name");
    }
    if matches!(
        name,
        "host" | "x-forwarded-proto" | "x-envoy-original-dst-host"
    ) || name == HOP_HEADER
        || name == UPSTREAM_HEADER
    {
        return Err("is written by the gateway itself");
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
        return Err("value holds a line break or NUL");
    }
    Ok(())
}

struct Url {
    https: bool,
    host: String,
    port: u16,
    authority: String,
    path_prefix: String,
}

/// `http[s]://host[:port][/prefix]`; no user info, query or fragment.
fn parse_url(url: &str) -> Result<Url, String> {
    let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(format!("{url:?} must start with http:// or https://"));
    };
    if rest.contains(['?', '#', '@']) {
        return Err(format!(
            "{url:?} may not hold user info, a query or a fragment"
        ));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let default_port = if https { 443 } else { 80 };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("unclosed '[' in the host")?;
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("{host:?} is not an IPv6 address"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let host_ok = !host.is_empty()
        && (host.contains(':')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
    if !host_ok {
        return Err(format!("{host:?} is not a host name"));
    }
    let port = match port {
        None => default_port,
        Some(p) => {
            sandgate_core::parse_port(p).map_err(|_| format!("port {p:?} is not 1..=65535"))?
        }
    };
    let host = host.to_ascii_lowercase();
    let shown = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    let authority = if port == default_port {
        shown
    } else {
        format!("{shown}:{port}")
    };
    Ok(Url {
        https,
        host,
        port,
        authority,
        path_prefix: path.trim_end_matches('/').to_string(),
    })
}

/// Where an update came from, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    File,
    ConfigMap,
    ControlPlane,
}

impl Source {
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::File => "file",
            Source::ConfigMap => "configmap",
            Source::ControlPlane => "control_plane",
        }
    }
}

/// This cluster's id and the current peer configuration.
pub struct ClusterStore {
    local: String,
    current: ArcSwap<ClusterConfig>,
    metrics: Arc<Metrics>,
    /// Bumped (all at once) by every replacement.
    pub generations: Generations,
}

impl ClusterStore {
    /// `local` is this cluster's id ("" = none: every prefixed id is another cluster's).
    pub fn new(local: impl Into<String>, metrics: Arc<Metrics>) -> Self {
        ClusterStore {
            local: local.into(),
            current: ArcSwap::from_pointee(ClusterConfig::default()),
            metrics,
            generations: Generations::default(),
        }
    }

    pub fn local(&self) -> &str {
        &self.local
    }

    pub fn current(&self) -> Arc<ClusterConfig> {
        self.current.load_full()
    }

    /// Parses `text` and makes it the configuration; on error the current one stays.
    pub fn apply(&self, source: Source, text: &str) -> Result<usize, String> {
        let result = ClusterConfig::parse(text);
        self.metrics
            .cluster_config_update(source.as_str(), result.is_ok());
        let config = result?;
        for peer in config.peers.values() {
            if let Some(g) = &peer.gateway
                && g.upstream == PeerUpstream::TlsInsecure
            {
                tracing::warn!(
                    cluster = peer.id,
                    host = g.host,
                    "TLS to this peer gateway is NOT verified (insecureSkipVerify)"
                );
            }
        }
        let n = config.peers.len();
        self.metrics.set_peer_clusters(n);
        self.current.store(Arc::new(config));
        self.generations.bump_all();
        tracing::info!(
            source = source.as_str(),
            peers = n,
            "cluster configuration replaced"
        );
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"
clusters:
  - id: cluster2
    gateway:
      dataURL: https://GW2.example.com:8443/edge/
      headers: {X-Token: api, x-both: from-headers}
      dataHeaders: {x-both: from-data}
      apiURL: https://ignored.example.com
  - id: eu.west.1
    gateway:
      dataURL: http://10.0.0.9
  - id: bare
  - id: plain-v6
    gateway:
      dataURL: http://[fd00::1]:8092
      insecureSkipVerify: true
hostAliases:
  - ip: 127.0.0.2
    hostnames: [gw2.example.com, Other.Example]
somethingElse: true
"#;

    #[test]
    fn the_agentbox_document_is_read() {
        let c = ClusterConfig::parse(DOC).unwrap();
        let g = c.peers["cluster2"].gateway.clone().unwrap();
        assert_eq!(g.upstream, PeerUpstream::Tls);
        assert_eq!((g.host.as_str(), g.port), ("gw2.example.com", 8443));
        assert_eq!(g.authority, "gw2.example.com:8443");
        assert_eq!(g.path_prefix, "/edge");
        assert_eq!(
            g.headers,
            vec![
                ("x-both".to_string(), "from-data".to_string()),
                ("x-token".to_string(), "api".to_string())
            ]
        );
        let g = c.peers["eu.west.1"].gateway.clone().unwrap();
        assert_eq!(
            (g.upstream, g.authority.as_str(), g.port),
            (PeerUpstream::Plain, "10.0.0.9", 80)
        );
        assert_eq!(c.peers["bare"].gateway, None);
        // insecureSkipVerify means nothing without TLS.
        let g = c.peers["plain-v6"].gateway.clone().unwrap();
        assert_eq!(
            (g.upstream, g.host.as_str(), g.authority.as_str()),
            (PeerUpstream::Plain, "fd00::1", "[fd00::1]:8092")
        );
        assert_eq!(
            c.host_aliases["other.example"],
            "127.0.0.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(ClusterConfig::parse("").unwrap(), ClusterConfig::default());
    }

    #[test]
    fn bad_documents_are_refused_with_the_field() {
        for (doc, says) in [
            (
                "clusters: [{id: a, gateway: {dataURL: ftp://x}}]",
                "http://",
            ),
            (
                "clusters: [{id: a, gateway: {dataURL: 'http://x:0'}}]",
                "port",
            ),
            (
                "clusters: [{id: a, gateway: {dataURL: 'http://x?y'}}]",
                "query",
            ),
            (
                "clusters: [{id: a, gateway: {dataURL: 'http://u@x'}}]",
                "user info",
            ),
            (
                "clusters: [{id: a, gateway: {dataURL: 'http://[zz]'}}]",
                "IPv6",
            ),
            (
                "clusters: [{id: a, gateway: {dataURL: 'http://a b'}}]",
                "host",
            ),
            ("clusters: [{id: a}, {id: a}]", "twice"),
            ("clusters: [{id: 'a/b'}]", "cluster id"),
            (
                "clusters: [{id: a, gateway: {dataURL: 'http://x', headers: {x-sandgate-hop: y}}}]",
                "gateway itself",
            ),
            (
                "clusters: [{id: a, gateway: {dataURL: 'http://x', headers: {Host: y}}}]",
                "gateway itself",
            ),
            (
                "clusters: [{id: a, gateway: {dataURL: 'http://x', headers: {'a b': y}}}]",
                "header name",
            ),
            (
                "clusters: [{id: a, gateway: {dataURL: 'http://x', headers: {a: \"x\\ny\"}}}]",
                "line break",
            ),
            (
                "hostAliases: [{ip: nope, hostnames: [a]}]",
                "not a cluster config",
            ),
            ("clusters: 3", "not a cluster config"),
        ] {
            let err = ClusterConfig::parse(doc).unwrap_err();
            assert!(err.contains(says), "{doc}: {err}");
        }
    }

    #[test]
    fn a_document_without_a_known_key_is_refused() {
        for doc in [
            "clusterz:\n  - id: c2\n",
            "Clusters: []",
            "host_aliases: []",
            "somethingElse: true\napiURL: https://x.example.com",
            "{}",
            "# a comment, then\nclusterz: []\n",
        ] {
            let err = ClusterConfig::parse(doc).unwrap_err();
            assert!(err.contains("no known top-level key"), "{doc:?}: {err}");
            assert!(err.contains("clusters: []"), "{doc:?}: {err}");
        }
        // Not mappings at all, as before.
        for doc in ["~", "[]", "clusters", "3", "clusters: ~", "clusters:"] {
            let err = ClusterConfig::parse(doc).unwrap_err();
            assert!(err.contains("not a cluster config"), "{doc:?}: {err}");
        }
    }

    #[test]
    fn empty_documents_and_empty_known_keys_mean_no_peers() {
        for doc in [
            "",
            "  \n\t\n",
            "# no peers yet\n",
            "clusters: []",
            "hostAliases: []",
            "clusters: []\nsomethingElse: true",
        ] {
            assert_eq!(
                ClusterConfig::parse(doc),
                Ok(ClusterConfig::default()),
                "{doc:?}"
            );
        }
        // One known key is enough; the other defaults to empty.
        let c = ClusterConfig::parse("hostAliases: [{ip: 10.0.0.1, hostnames: [a]}]").unwrap();
        assert!(c.peers.is_empty());
        assert_eq!(c.host_aliases.len(), 1);
        let c = ClusterConfig::parse("clusters: [{id: c2}]").unwrap();
        assert_eq!((c.peers.len(), c.host_aliases.len()), (1, 0));
    }

    #[test]
    fn a_bad_update_keeps_the_last_good_configuration() {
        let store = ClusterStore::new("c1", Arc::new(Metrics::default()));
        assert_eq!(store.apply(Source::File, DOC), Ok(4));
        assert!(
            store
                .apply(Source::ControlPlane, "clusters: [{id: ''}]")
                .is_err()
        );
        assert_eq!(store.current().peers.len(), 4);
        // Unknown keys only, from every source: refused, the peers stay.
        for source in [Source::File, Source::ConfigMap, Source::ControlPlane] {
            assert!(store.apply(source, "clusterz: []").is_err());
            assert_eq!(store.current().peers.len(), 4, "{source:?}");
        }
        assert_eq!(store.apply(Source::ConfigMap, "clusters: []"), Ok(0));
        assert!(store.current().peers.is_empty());
        assert_eq!(store.local(), "c1");
    }
}
