//! The floor: a proxy-wasm filter that does nothing, used only as the benchmark baseline the
//! real filter (`filter-wasm`) is measured against. Never deployed.
//!
//! With `callout: false` it is the cost of having a wasm filter at all (VM, context creation,
//! one header callback). With `callout: true` it adds one empty Resolve call and the pause and
//! resume around it, so what remains of the real filter's cost is its parsing and deciding.
//! It reads no headers, changes nothing and answers nothing: whatever the callout returns
//! (error, timeout, any body) the request goes on.
//!
//! With `host_calls: true` (and no callout) it makes, and only makes, the host calls the real
//! filter's cache hit needs to route a path-form request: read the headers, remove the key
//! header, read the clock, set the destination filter state, rewrite `:path`. That is the
//! floor of any filter that routes this way, whatever its logic; the floor's static cluster
//! ignores the destination.

use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use serde::Deserialize;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// The plugin configuration (JSON); every field optional, unknown fields refused so a typo
/// cannot silently benchmark the wrong thing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Make one empty Resolve call per request and wait for it.
    pub callout: bool,
    /// Envoy cluster (HTTP/2) the call goes to.
    pub cluster: String,
    pub timeout_ms: u64,
    /// Make the host calls a routed request needs (see the module doc).
    pub host_calls: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            callout: false,
            cluster: "null".into(),
            timeout_ms: 1000,
            host_calls: false,
        }
    }
}

impl Config {
    /// Parses the configuration; an empty one means all defaults.
    pub fn parse(raw: &[u8]) -> Result<Config, String> {
        if raw.iter().all(u8::is_ascii_whitespace) {
            return Ok(Config::default());
        }
        serde_json::from_slice(raw).map_err(|e| format!("invalid configuration: {e}"))
    }
}

#[derive(Default)]
struct Root {
    config: Rc<Config>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        // Errors as values (hostcalls, not the trait helpers that unwrap): never panic.
        let parsed = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
            .map_err(|e| format!("reading configuration: {e:?}"))
            .and_then(|raw| Config::parse(&raw.unwrap_or_default()));
        match parsed {
            Ok(config) => {
                self.config = Rc::new(config);
                true
            }
            Err(e) => {
                let _ = hostcalls::log(LogLevel::Error, &e);
                false // Envoy rejects the listener: no baseline with settings nobody asked for
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        // The Box is the SDK's; an Rc clone allocates nothing more (as in the real filter).
        Some(Box::new(Request {
            config: Rc::clone(&self.config),
            pending: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Request {
    config: Rc<Config>,
    /// Token of the callout the request is paused on.
    pending: Option<u32>,
}

impl Context for Request {
    fn on_grpc_call_response(&mut self, token: u32, _status: u32, _size: usize) {
        // Any status, any body: the answer is not the point, the round trip is.
        if self.pending == Some(token) {
            self.pending = None;
            let _ = hostcalls::resume_http_request();
        }
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        if self.config.host_calls {
            route_host_calls();
            return Action::Continue;
        }
        if !self.config.callout {
            return Action::Continue;
        }
        // An empty message is a valid (all-default) ResolveRequest: no encoding cost measured.
        match hostcalls::dispatch_grpc_call(
            &self.config.cluster,
            "sandgate.resolver.v1.Resolver",
            "Resolve",
            Vec::new(),
            Some(&[]),
            Duration::from_millis(self.config.timeout_ms),
        ) {
            Ok(token) => {
                self.pending = Some(token);
                Action::Pause
            }
            // Not sent (e.g. unknown cluster): nothing to wait for.
            Err(_) => Action::Continue,
        }
    }
}

/// `SetEnvoyFilterStateArguments{path: ORIGINAL_DST, value: "127.0.0.1:1", span: 1}`, as
/// the real filter encodes it for a destination of the same length class.
const DESTINATION_ARGUMENT: &[u8] =
    b"\x0a\x33envoy.network.transport_socket.original_dst_address\x12\x0b127.0.0.1:1\x18\x01";

/// The host calls of a routed cache hit; results ignored (the floor measures cost, not effect).
fn route_host_calls() {
    let headers = MapType::HttpRequestHeaders;
    let _ = hostcalls::get_map(headers);
    let _ = hostcalls::set_map_value(headers, "x-api-key", None);
    let _ = hostcalls::get_current_time();
    let _ = hostcalls::call_foreign_function("set_envoy_filter_state", Some(DESTINATION_ARGUMENT));
    let _ = hostcalls::set_map_value(headers, ":path", Some("/"));
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn empty_means_defaults() {
        let defaults = Config {
            callout: false,
            cluster: "null".into(),
            timeout_ms: 1000,
            host_calls: false,
        };
        assert_eq!(Config::parse(b"").unwrap(), defaults);
        assert_eq!(Config::parse(b" \n").unwrap(), defaults);
        assert_eq!(Config::parse(b"{}").unwrap(), defaults);
        assert_eq!(Config::default(), defaults);
    }

    #[test]
    fn explicit_values() {
        let c = Config::parse(br#"{"callout": true, "cluster": "resolver", "timeout_ms": 250}"#)
            .unwrap();
        assert!(c.callout);
        assert_eq!(c.cluster, "resolver");
        assert_eq!(c.timeout_ms, 250);
        // Partial: the rest keep their defaults.
        let c = Config::parse(br#"{"callout": true}"#).unwrap();
        assert_eq!(
            (c.callout, c.cluster.as_str(), c.timeout_ms),
            (true, "null", 1000)
        );
    }

    /// `envoy.source.extensions.common.wasm.SetEnvoyFilterStateArguments`, as filter-wasm's
    /// wire.rs has it (that crate cannot be linked here: both define the wasm entry points).
    #[derive(Clone, PartialEq, prost::Message)]
    struct Arguments {
        #[prost(string, tag = "1")]
        path: String,
        #[prost(string, tag = "2")]
        value: String,
        #[prost(int32, tag = "3")]
        span: i32,
    }

    #[test]
    fn the_destination_argument_is_what_the_real_filter_sends() {
        let a = <Arguments as prost::Message>::decode(DESTINATION_ARGUMENT).unwrap();
        assert_eq!(
            (a.path.as_str(), a.value.as_str(), a.span),
            (
                "envoy.network.transport_socket.original_dst_address",
                "127.0.0.1:1",
                1
            )
        );
    }

    #[test]
    fn refuses_unknown_fields_and_bad_json() {
        let e = Config::parse(br#"{"callout": true, "resolver_cluster": "x"}"#).unwrap_err();
        assert!(e.contains("resolver_cluster"), "{e}");
        assert!(Config::parse(br#"{"callout": "yes"}"#).is_err());
        assert!(Config::parse(b"not json").is_err());
    }
}
