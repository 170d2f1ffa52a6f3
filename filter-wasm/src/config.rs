//! The plugin configuration: the JSON string in envoy.yaml's `configuration` field.
//!
//! Owns parsing and checking it. Every field has a default that matches the demo stack, so an
//! empty configuration (`{}` or nothing) works. What a request looks like (key headers, id and
//! port headers, path marker, default port) is `sandgate_core::RequestGrammar`, under `request`.

use std::time::Duration;

use sandgate_core::RequestGrammar;

use crate::cache::CacheConfig;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Envoy cluster (HTTP/2) that reaches the resolver's Resolve service.
    pub resolver_cluster: String,
    /// Callout deadline. 0 is refused: Envoy fails such a call at once.
    pub timeout_ms: u64,
    /// When the resolver cannot answer: `true` refuses with 503. `false` lets the request go
    /// on undecided to the next filter (which must then decide; without a destination the
    /// sandboxes cluster has no host to send it to).
    pub fail_closed: bool,
    pub request: RequestGrammar,
    /// The decision cache (`cache.ttl_ms: 0` turns it off).
    pub cache: CacheConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            resolver_cluster: "resolver".into(),
            timeout_ms: 1000,
            fail_closed: true,
            request: RequestGrammar::default(),
            cache: CacheConfig::default(),
        }
    }
}

impl Config {
    /// Parses and checks the configuration; an empty one means all defaults.
    pub fn parse(raw: &[u8]) -> Result<Config, String> {
        let cfg: Config = if raw.iter().all(u8::is_ascii_whitespace) {
            Config::default()
        } else {
            serde_json::from_slice(raw).map_err(|e| format!("invalid configuration: {e}"))?
        };
        cfg.check()?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), String> {
        if self.timeout_ms == 0 {
            return Err("timeout_ms must be at least 1 (Envoy fails a 0 deadline at once)".into());
        }
        if self.resolver_cluster.is_empty() {
            return Err("resolver_cluster must name an Envoy cluster".into());
        }
        self.request.check().map_err(|e| format!("request: {e}"))?;
        self.cache.check().map_err(|e| format!("cache: {e}"))
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn empty_means_defaults() {
        assert_eq!(Config::parse(b"").unwrap(), Config::default());
        assert_eq!(Config::parse(b"{}").unwrap(), Config::default());
        assert_eq!(Config::default().request, RequestGrammar::default());
    }

    #[test]
    fn fields_override_defaults() {
        let c = Config::parse(
            br#"{"timeout_ms": 250, "request": {"default_port": 8080, "path_marker": "sb"}}"#,
        )
        .unwrap();
        assert_eq!(c.timeout(), Duration::from_millis(250));
        assert_eq!(c.request.default_port, Some(8080));
        assert_eq!(c.request.path_marker, "sb");
        assert_eq!(
            c.request.id_header, "x-sandbox-id",
            "unset fields keep defaults"
        );
    }

    #[test]
    fn refuses_what_would_misbehave() {
        for bad in [
            r#"{"timeout_ms": 0}"#,
            r#"{"resolver_cluster": ""}"#,
            r#"{"request": {"default_port": 0}}"#,
            r#"{"request": {"default_port": 70000}}"#,
            r#"{"request": {"id_header": "X-Sandbox-Id"}}"#,
            r#"{"request": {"path_marker": "a/b"}}"#,
            r#"{"request": {"unknown": 1}}"#,
            r#"{"timeout": 5}"#,
            r#"{"cache": {"slots": 0}}"#,
            r#"{"cache": {"ttl": 1}}"#,
            "not json",
        ] {
            assert!(Config::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
