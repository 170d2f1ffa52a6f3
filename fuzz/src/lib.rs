//! What the fuzz targets share: splitting fuzz input into a header list, and a resolver
//! gateway with a little state (keys, Pods, a peer cluster) for the decision to work on.

use std::sync::Arc;
use std::time::Duration;

use sandgate_resolver::activity::ActivityTracker;
use sandgate_resolver::cache::RouteCache;
use sandgate_resolver::clusters::dns::DnsCache;
use sandgate_resolver::clusters::{ClusterStore, Source as ClusterSource};
use sandgate_resolver::decide::{DecideConfig, Gateway};
use sandgate_resolver::hold::{HoldConfig, Holds};
use sandgate_resolver::keys::limit::FailureLimiter;
use sandgate_resolver::keys::{KeyStore, Source, file};
use sandgate_resolver::metrics::Metrics;
use sandgate_resolver::pods::{PodKeys, PodStore, inventory};
use sandgate_resolver::tokens::{Lifetimes, SigningKey, Source as TokenSource, TokenKeys};

/// Input as header lines `name: value` (the first line is the `:path`), so a corpus file reads
/// like a request. Names are lower-cased, as Envoy hands them over; names and values stay
/// bytes, whatever they are (Envoy passes obs-text 0x80–0xFF in values).
pub fn header_list(data: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut lines = data.split(|&b| b == b'\n');
    let path = lines.next().unwrap_or(b"/");
    let mut list = vec![(b":path".to_vec(), path.to_vec())];
    for line in lines {
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(at) => (&line[..at], &line[at + 1..]),
            None => (line, &[][..]),
        };
        list.push((
            name.trim_ascii().to_ascii_lowercase(),
            value.trim_ascii().to_vec(),
        ));
    }
    list
}

const PODS: &str = "
- {name: p1, namespace: acme, ip: 10.0.0.1, sandboxId: sb-a, phase: running}
- {name: p2, namespace: acme, ip: 'fd00::2', sandboxId: 0f8fad5b-d9cb-469f-a165-70867728950e, phase: running}
- {name: p3, namespace: globex, ip: 10.0.0.3, sandboxId: sb-g, phase: stopping}
- {name: p4, namespace: acme, sandboxId: sb-s, phase: starting}
";

const KEYS: &str = "
admins: [{key: admin}]
tenants:
  - {key: acme-key, namespace: acme}
  - {key: globex-key, namespace: globex}
";

const PEERS: &str = "
clusters:
  - {id: c2, gateway: {dataURL: 'https://10.9.0.1:8443/p', headers: {x-sandgate-peer: t}}}
  - {id: dark}
";

/// A gateway as `serve` builds one, from the same file formats.
pub fn gateway() -> Arc<Gateway> {
    let metrics = Arc::new(Metrics::default());
    let keys = KeyStore::new(false);
    keys.set_source(
        Source::KeysFile,
        file::parse_keys_file(KEYS).expect("fixture keys"),
    );
    let pods = PodStore::default();
    inventory::load(PODS, &PodKeys::default(), &pods).expect("fixture Pods");
    let routes = RouteCache::new(Duration::from_secs(60), 4);
    routes.push("sb-r", "acme", "p1");
    let clusters = ClusterStore::new("c1", Arc::clone(&metrics));
    clusters
        .apply(ClusterSource::File, PEERS)
        .expect("fixture peers");
    Arc::new(Gateway {
        keys: Arc::new(keys),
        routes: Arc::new(routes),
        pods: Arc::new(pods),
        activity: Arc::new(ActivityTracker::default()),
        metrics,
        clusters: Arc::new(clusters),
        // Every peer host above is an IP literal: no input reaches a real lookup.
        dns: Arc::new(DnsCache::system(
            Duration::from_secs(30),
            Duration::from_secs(1),
        )),
        key_failures: Arc::new(FailureLimiter::new(3, Duration::from_secs(60))),
        // A signing key, so a token's MAC is checked (no input can forge one).
        tokens: Arc::new({
            let tokens = TokenKeys::new(Lifetimes {
                default: Duration::from_secs(3600),
                max: Duration::from_secs(86_400),
            });
            if let Ok(key) = SigningKey::new("fuzz", vec![7; 32]) {
                tokens.set_source(TokenSource::File, vec![key]);
            }
            tokens
        }),
        holds: Arc::new(Holds::new(
            HoldConfig::OFF,
            None,
            Arc::new(Metrics::default()),
        )),
        config: DecideConfig {
            index_fallback: true,
            armed_gate: false,
            not_found_502: false,
            wake_unknown: false,
        },
    })
}
