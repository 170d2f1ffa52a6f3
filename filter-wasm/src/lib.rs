//! The proxy-wasm HTTP filter: a thin shell around the shared request grammar and the resolver.
//!
//! Owns the host side of a request: read headers, strip gateway-only ones, ask the resolver
//! over gRPC, then either pin the destination and rewrite `:path`, or answer locally with the
//! JSON refusal. The rules themselves live in `sandgate-core` (what a request asks for) and the
//! resolver (who may reach what); this crate must not grow its own.
//!
//! Host calls go through `proxy_wasm::hostcalls`, whose errors are values, rather than the
//! trait helpers, which unwrap them: a panic would leave this VM answering 503 until reload.

pub mod config;
pub mod wire;

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use sandgate_core::{Decision, Deny, Forward};

use config::Config;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Per-plugin state: the parsed configuration shared by every request.
#[derive(Default)]
struct Root {
    config: Option<Rc<Config>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let raw = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size) {
            Ok(raw) => raw.unwrap_or_default(),
            Err(e) => {
                log(LogLevel::Error, &format!("reading configuration: {e:?}"));
                return false;
            }
        };
        match Config::parse(&raw) {
            Ok(config) => {
                self.config = Some(Rc::new(config));
                true
            }
            // Refusing the configuration makes Envoy reject the listener update: better than
            // running with settings nobody asked for.
            Err(e) => {
                log(LogLevel::Error, &e);
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone()?;
        Some(Box::new(Request {
            config,
            callout: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request: waits for at most one Resolve answer.
struct Request {
    config: Rc<Config>,
    callout: Option<Pending>,
}

/// A Resolve call in flight and what applying its answer needs.
struct Pending {
    token: u32,
    /// The path to set if it routes to a local sandbox.
    path: Option<String>,
    /// The client sent the private upstream header: match the route again once it is gone.
    rematch: bool,
    /// The client's headers as they came (moved, not copied): a forward re-reads them.
    headers: Vec<(String, String)>,
}

impl Request {
    fn on_headers(&mut self) -> Action {
        let headers = match hostcalls::get_map(MapType::HttpRequestHeaders) {
            Ok(h) => h,
            Err(e) => return self.refuse(&wire::unavailable(&format!("headers: {e:?}"))),
        };
        let parsed = self.config.request.parse_headers(&headers);

        // Strip first, whatever happens next: no later branch can forget it.
        let api_key = parsed.as_ref().ok().and_then(|t| t.api_key.map(|(k, _)| k));
        for (name, value) in &headers {
            if self.config.request.is_gateway_header(name, value, api_key)
                && let Err(e) = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None)
            {
                return self.refuse(&wire::unavailable(&format!("removing {name}: {e:?}")));
            }
        }

        let target = match parsed {
            Ok(t) => t,
            Err(deny) => return self.refuse(&deny),
        };
        let cfg = Rc::clone(&self.config);
        // Where the request comes from, for the resolver's per-client limit on key guesses.
        let source = hostcalls::get_property(vec!["source", "address"])
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok());
        let message = wire::resolve_request(&target, source.as_deref());
        let rematch = target.rematch;
        let path = target.rewritten_path;
        match hostcalls::dispatch_grpc_call(
            &cfg.resolver_cluster,
            wire::RESOLVER_SERVICE,
            wire::RESOLVE_METHOD,
            Vec::new(),
            Some(&message),
            cfg.timeout(),
        ) {
            Ok(token) => {
                self.callout = Some(Pending {
                    token,
                    path,
                    rematch,
                    headers,
                });
                Action::Pause
            }
            Err(e) => self.unavailable(&format!("resolver call not sent: {e:?}")),
        }
    }

    fn apply(&mut self, decision: Decision, pending: Pending) {
        let result = match decision {
            Decision::Route { destination } => {
                self.route(&destination, pending.path.as_deref(), pending.rematch)
            }
            Decision::Forward(forward) => self.forward(&forward, &pending.headers),
            Decision::Deny(deny) if deny.code == sandgate_core::DenyCode::ResolverUnavailable => {
                if self.unavailable(&deny.message) == Action::Continue {
                    // The request is paused on the callout: failing open must wake it.
                    let _ = hostcalls::resume_http_request();
                }
                Ok(())
            }
            Decision::Deny(deny) => {
                self.refuse(&deny);
                Ok(())
            }
        };
        if let Err(e) = result {
            self.refuse(&wire::unavailable(&e));
        }
    }

    fn route(&self, destination: &str, path: Option<&str>, rematch: bool) -> Result<(), String> {
        set_destination(destination)?;
        if let Some(path) = path {
            set_header(":path", path)?;
        }
        if rematch {
            clear_route_cache()?;
        }
        hostcalls::resume_http_request().map_err(|e| format!("resuming: {e:?}"))
    }

    /// On to another cluster's gateway: the writes are the shared grammar's, and the route is
    /// matched again so the private upstream header picks the peer cluster.
    fn forward(&self, forward: &Forward, headers: &[(String, String)]) -> Result<(), String> {
        let target = self
            .config
            .request
            .parse_headers(headers)
            .map_err(|d| format!("re-reading the request: {}", d.message))?;
        set_destination(&forward.destination)?;
        for (name, value) in self.config.request.forward_writes(&target, forward) {
            set_header(&name, &value)?;
        }
        clear_route_cache()?;
        hostcalls::resume_http_request().map_err(|e| format!("resuming: {e:?}"))
    }

    /// The resolver could not decide: 503, or on with no destination when failing open
    /// (`Continue`; a caller whose request is paused must resume it).
    fn unavailable(&self, why: &str) -> Action {
        log(LogLevel::Warn, why);
        if self.config.fail_closed {
            self.refuse(&wire::unavailable(why))
        } else {
            Action::Continue
        }
    }

    /// Answers locally; the request never reaches an upstream.
    fn refuse(&self, deny: &Deny) -> Action {
        let body = deny.json_body();
        let sent = hostcalls::send_http_response(
            u32::from(deny.status()),
            vec![
                ("content-type", "application/json"),
                ("cache-control", "no-store"),
            ],
            Some(body.as_bytes()),
        );
        if let Err(e) = sent {
            log(LogLevel::Error, &format!("local reply failed: {e:?}"));
        }
        Action::Pause
    }
}

impl Context for Request {
    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        let Some(pending) = self.callout.take() else {
            return;
        };
        if pending.token != token {
            self.callout = Some(pending);
            return;
        }
        let body = hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size)
            .ok()
            .flatten();
        let decision = wire::decision(status, body.as_deref());
        self.apply(decision, pending);
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        self.on_headers()
    }
}

fn set_destination(destination: &str) -> Result<(), String> {
    hostcalls::call_foreign_function(
        "set_envoy_filter_state",
        Some(&wire::original_dst_argument(destination)),
    )
    .map(drop)
    .map_err(|e| format!("setting the destination: {e:?}"))
}

/// Envoy's foreign function (since proxy-wasm header writes stopped clearing it implicitly):
/// the router matches the route again on the headers as they are now.
fn clear_route_cache() -> Result<(), String> {
    hostcalls::call_foreign_function("clear_route_cache", None)
        .map(drop)
        .map_err(|e| format!("clearing the route cache: {e:?}"))
}

fn set_header(name: &str, value: &str) -> Result<(), String> {
    hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
        .map_err(|e| format!("writing {name}: {e:?}"))
}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}
