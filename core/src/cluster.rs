//! Cross-cluster sandbox ids and what a forwarded request looks like.
//!
//! Owns the id rule (`{clusterID}.{uuid}` names a sandbox in another cluster; anything else is
//! local), the private headers gateways use between each other, and [`Forward`], the decision
//! to send a request on to a peer gateway. Which peers exist and where they are is the
//! resolver's business; this module only knows the shapes.

/// Set by a gateway on every request it forwards, with its own cluster id as the value. A
/// request that arrives with it is never forwarded again, so two misconfigured clusters cannot
/// bounce a request between them. A client that sends it only stops its own request from
/// crossing; it is a gateway header and never reaches a sandbox.
pub const HOP_HEADER: &str = "x-sandgate-hop";

/// Set on a forwarded request for Envoy's route match: it picks the peer cluster (plain or TLS)
/// instead of the sandboxes. Dropped from client input before the filter runs.
pub const UPSTREAM_HEADER: &str = "x-sandgate-upstream";

/// Every header whose name starts with this is the gateways' own and never reaches a sandbox.
pub const PRIVATE_HEADER_PREFIX: &str = "x-sandgate-";

/// A sandbox id split into the cluster it names (if any) and the id within that cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxRef<'a> {
    /// `Some` when the id is `{cluster}.{uuid}` with a non-empty cluster part.
    pub cluster: Option<&'a str>,
    /// The id the owning cluster knows: the UUID for a prefixed id, else the whole id.
    pub id: &'a str,
}

const UUID_LEN: usize = 36;

/// `{clusterID}.{uuid}` → (cluster, uuid), split at the dot before a 36-character UUID that
/// ends the id (cluster ids may contain dots; the UUID may be upper case). Any other id — a
/// bare UUID, an id without such a suffix, an empty cluster part — is local and kept whole.
pub fn split_cluster(id: &str) -> SandboxRef<'_> {
    let local = SandboxRef { cluster: None, id };
    // The byte before the UUID must be the ASCII dot; only then are both split points char
    // boundaries, whatever text comes before (ids are validated as ASCII, but not everywhere
    // this is called).
    let Some(dot) = id.len().checked_sub(UUID_LEN + 1) else {
        return local;
    };
    if dot == 0 || id.as_bytes().get(dot) != Some(&b'.') {
        return local;
    }
    let (cluster, uuid) = (&id[..dot], &id[dot + 1..]);
    if is_uuid(uuid) {
        SandboxRef {
            cluster: Some(cluster),
            id: uuid,
        }
    } else {
        local
    }
}

/// 8-4-4-4-12 hex digits, either case.
pub fn is_uuid(s: &str) -> bool {
    s.len() == UUID_LEN
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// Which Envoy cluster carries a forwarded request (the value of [`UPSTREAM_HEADER`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerUpstream {
    /// Plain HTTP to the peer gateway.
    Plain,
    /// TLS, the peer's certificate verified against the configured CA and the gateway host.
    Tls,
    /// TLS without verification: an explicit per-peer opt-out, logged when configured.
    TlsInsecure,
}

impl PeerUpstream {
    pub const ALL: [PeerUpstream; 3] = [
        PeerUpstream::Plain,
        PeerUpstream::Tls,
        PeerUpstream::TlsInsecure,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            PeerUpstream::Plain => "peer",
            PeerUpstream::Tls => "peer-tls",
            PeerUpstream::TlsInsecure => "peer-tls-insecure",
        }
    }

    pub fn parse(s: &str) -> Option<PeerUpstream> {
        PeerUpstream::ALL.into_iter().find(|u| u.as_str() == s)
    }

    /// The `x-forwarded-proto` the peer sees.
    pub const fn scheme(self) -> &'static str {
        match self {
            PeerUpstream::Plain => "http",
            PeerUpstream::Tls | PeerUpstream::TlsInsecure => "https",
        }
    }
}

/// Send the request on to another cluster's gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// `ip:port` of the peer gateway (ORIGINAL_DST does not resolve names).
    pub destination: String,
    /// The gateway's host (and port, when not the scheme's default): Host matching and SNI.
    pub authority: String,
    /// Prepended to the client's path; empty or `/…` without a trailing slash.
    pub path_prefix: String,
    pub upstream: PeerUpstream,
    /// Headers the peer gateway requires (its own credential); written before sandgate's own
    /// headers, so they cannot replace the hop marker, the key or the destination.
    pub headers: Vec<(String, String)>,
    /// This gateway's cluster id, the value of [`HOP_HEADER`].
    pub from_cluster: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    // The same tests run natively and, under `just wasm-test`, as 32-bit wasm in Node.
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const U: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

    fn split(id: &str) -> (Option<&str>, &str) {
        let r = split_cluster(id);
        (r.cluster, r.id)
    }

    #[test]
    fn prefixed_ids_name_their_cluster() {
        let id = format!("cluster2.{U}");
        assert_eq!(split(&id), (Some("cluster2"), U));
        // Dots inside the cluster id: the split is at the last one, before the UUID.
        let id = format!("eu.west.1.{U}");
        assert_eq!(split(&id), (Some("eu.west.1"), U));
        // Upper-case UUIDs are UUIDs.
        let upper = U.to_ascii_uppercase();
        let id = format!("c.{upper}");
        assert_eq!(split(&id), (Some("c"), upper.as_str()));
    }

    #[test]
    fn everything_else_is_local() {
        let empty_prefix = format!(".{U}");
        let no_dot = format!("c{U}");
        let short = format!("c.{}", &U[1..]);
        let not_hex = format!("c.{}", U.replace('a', "g"));
        let dashes_moved = format!("c.{}", U.replace('-', "0"));
        for id in [
            U,
            "demo-a",
            "a.b",
            "",
            empty_prefix.as_str(),
            no_dot.as_str(),
            short.as_str(),
            not_hex.as_str(),
            dashes_moved.as_str(),
        ] {
            assert_eq!(split(id), (None, id), "{id:?}");
        }
        // 36 characters that are no UUID, after a prefix.
        let id = format!("c.{}", "x".repeat(36));
        assert_eq!(split(&id), (None, id.as_str()));
        // Multi-byte text right before the UUID must not split inside a character (the
        // second was found by the request_grammar fuzz target: a split point inside 'é').
        let id = format!("é{U}");
        assert_eq!(split(&id), (None, id.as_str()));
        let id = format!("abé{}", &U[1..]);
        assert_eq!(split(&id), (None, id.as_str()));
        let id = format!("é.{U}");
        assert_eq!(split(&id), (Some("é"), U));
    }

    #[test]
    fn upstreams_round_trip() {
        for u in PeerUpstream::ALL {
            assert_eq!(PeerUpstream::parse(u.as_str()), Some(u));
            assert!(u.as_str().len() < 20);
        }
        assert_eq!(PeerUpstream::parse("sandbox"), None);
        assert_eq!(PeerUpstream::Plain.scheme(), "http");
        assert_eq!(PeerUpstream::Tls.scheme(), "https");
    }
}
