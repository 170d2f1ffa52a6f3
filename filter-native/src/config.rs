//! The module's configuration: the `filter_config` of envoy-native.yaml (a JSON object).
//!
//! Owns parsing and defaults only. The gateway's own settings are the resolver's flags
//! (`args`, and their `SANDGATE_*` environment twins in Envoy's environment), so the native
//! entry has no setting the standalone resolver lacks.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModuleConfig {
    /// `sandgate-resolver serve` flags for the gateway this process runs (README, "Flags").
    pub args: Vec<String>,
    /// When the gateway cannot decide (not started yet, or stopped): 503
    /// `resolver_unavailable` (true), or on with no destination, which the ORIGINAL_DST
    /// cluster refuses anyway.
    pub fail_closed: bool,
    /// Threads of the module's runtime (the informer, the listeners, held requests); Envoy's
    /// workers decide on their own threads.
    pub runtime_threads: usize,
    /// Do nothing at all: the benchmark's floor for a native module (never deployed). No
    /// gateway is started.
    pub noop: bool,
}

impl Default for ModuleConfig {
    fn default() -> Self {
        ModuleConfig {
            args: Vec::new(),
            fail_closed: true,
            runtime_threads: 2,
            noop: false,
        }
    }
}

impl ModuleConfig {
    /// An empty configuration is the defaults; anything else must be the JSON object.
    pub fn parse(raw: &[u8]) -> Result<ModuleConfig, String> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(ModuleConfig::default());
        }
        let config: ModuleConfig = serde_json::from_slice(raw)
            .map_err(|e| format!("sandgate module configuration: {e}"))?;
        if config.runtime_threads == 0 {
            return Err("sandgate module configuration: runtime_threads must be at least 1".into());
        }
        Ok(config)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_the_defaults_and_unknown_fields_are_refused() {
        assert_eq!(ModuleConfig::parse(b" ").unwrap(), ModuleConfig::default());
        let c =
            ModuleConfig::parse(br#"{"args": ["--admin-key=a"], "fail_closed": false}"#).unwrap();
        assert_eq!(c.args, ["--admin-key=a"]);
        assert!(!c.fail_closed);
        assert_eq!(c.runtime_threads, 2);
        assert!(ModuleConfig::parse(br#"{"arg": []}"#).is_err());
        assert!(ModuleConfig::parse(br#"{"runtime_threads": 0}"#).is_err());
        assert!(ModuleConfig::parse(b"bogus").is_err());
    }
}
