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
    /// Sent as `authorization: Bearer <token>` on every call to the resolver (Resolve,
    /// WatchGenerations, ReportHits), which refuses calls without its internal token. Empty:
    /// nothing is sent.
    pub internal_token: String,
    /// `Bearer <internal_token>`, prepared once by [`Config::parse`] (not configurable).
    #[serde(skip)]
    bearer: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            resolver_cluster: "resolver".into(),
            timeout_ms: 1000,
            fail_closed: true,
            request: RequestGrammar::default(),
            cache: CacheConfig::default(),
            internal_token: String::new(),
            bearer: String::new(),
        }
    }
}

impl Config {
    /// Parses and checks the configuration; an empty one means all defaults.
    pub fn parse(raw: &[u8]) -> Result<Config, String> {
        let mut cfg: Config = if raw.iter().all(u8::is_ascii_whitespace) {
            Config::default()
        } else {
            serde_json::from_slice(raw).map_err(|e| format!("invalid configuration: {e}"))?
        };
        cfg.check()?;
        cfg.bearer = if cfg.internal_token.is_empty() {
            String::new()
        } else {
            format!("Bearer {}", cfg.internal_token)
        };
        Ok(cfg)
    }

    fn check(&self) -> Result<(), String> {
        if self.timeout_ms == 0 {
            return Err("timeout_ms must be at least 1 (Envoy fails a 0 deadline at once)".into());
        }
        if self.resolver_cluster.is_empty() {
            return Err("resolver_cluster must name an Envoy cluster".into());
        }
        // A header value Envoy sends as is: visible ASCII, no spaces. The error never quotes it.
        if !self.internal_token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("internal_token must be visible ASCII without spaces".into());
        }
        self.request.check().map_err(|e| format!("request: {e}"))?;
        self.cache.check().map_err(|e| format!("cache: {e}"))
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// The initial metadata of every call to the resolver: the internal token as a bearer
    /// credential, or nothing when none is configured.
    pub fn grpc_metadata(&self) -> Vec<(&str, &[u8])> {
        if self.bearer.is_empty() {
            Vec::new()
        } else {
            vec![("authorization", self.bearer.as_bytes())]
        }
    }
}

/// [`Config::grpc_metadata`] of the configuration if there is one yet; none otherwise.
pub fn grpc_metadata(config: Option<&Config>) -> Vec<(&str, &[u8])> {
    config.map(Config::grpc_metadata).unwrap_or_default()
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
    fn the_internal_token_is_sent_as_a_bearer_credential() {
        assert!(
            Config::default().grpc_metadata().is_empty(),
            "none by default"
        );
        assert!(
            grpc_metadata(None).is_empty(),
            "none before a configuration"
        );
        assert!(
            Config::parse(br#"{"internal_token": ""}"#)
                .unwrap()
                .grpc_metadata()
                .is_empty()
        );
        let c = Config::parse(br#"{"internal_token": "s3cr3t-Tok_en.~"}"#).unwrap();
        assert_eq!(
            c.grpc_metadata(),
            vec![("authorization", b"Bearer s3cr3t-Tok_en.~".as_slice())]
        );
        let err = Config::parse(br#"{"internal_token": "two words"}"#).unwrap_err();
        assert!(
            !err.contains("words"),
            "the error never quotes the token: {err}"
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
            r#"{"internal_token": "two words"}"#,
            r#"{"internal_token": "line\nbreak"}"#,
            r#"{"internal_token": "é"}"#,
            r#"{"internal_token": 5}"#,
            "not json",
        ] {
            assert!(Config::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
