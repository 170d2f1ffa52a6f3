//! The proxy-wasm HTTP filter: a thin shell around the shared request grammar and the resolver.
//!
//! Owns the host side of a request: read headers, strip gateway-only ones, ask the resolver
//! over gRPC, then either pin the destination and rewrite `:path`, or answer locally with the
//! JSON refusal. The rules themselves live in `sandgate-core` (what a request asks for) and the
//! resolver (who may reach what); this crate must not grow its own.
//!
//! A request's host calls go through [`host`], whose every status is an error value and whose
//! header values are bytes: the SDK's own calls panic on unlisted statuses and on header bytes
//! that are not UTF-8, and a panic traps the VM and fails every stream of its worker. The SDK
//! keeps the context dispatcher, the gRPC calls and the tick (README, "Hostile input").

pub mod cache;
pub mod config;
pub mod hold;
pub mod host;
pub mod wire;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use prost::Message;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel};
use sandgate_core::{Decision, Deny, DenyCode, Redirect, Routing, Target};
use sandgate_proto::resolver::v1::{
    Cacheable, Generations, HitReport, WaitManyReply, WatchGenerationsRequest,
};

use cache::{Entry, Hits, Kept, Key, Local, Lockouts, View};
use config::Config;
use hold::{Held, Holding};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> {
        Box::new(Root { id, ..Root::default() })
    });
}}

/// How often the root context looks after the generation stream and the hit counts.
const TICK: Duration = Duration::from_millis(100);

/// What one VM's contexts share (a VM serves one worker thread, so no locking): the
/// generations and locked client addresses its stream delivered, its decoded copies of shared
/// entries, and the cache hits not yet reported.
#[derive(Default)]
struct Shared {
    view: View,
    lockouts: Lockouts,
    local: Local,
    hits: Hits,
    holding: Holding,
}

/// Per-plugin state: the parsed configuration shared by every request, and, with the cache
/// on, the VM's WatchGenerations stream and hit reports.
#[derive(Default)]
struct Root {
    /// Its context id: the effective context it returns to after answering held requests in
    /// theirs, so the calls it makes next are its own (a request's would die with it).
    id: u32,
    config: Option<Rc<Config>>,
    shared: Rc<RefCell<Shared>>,
    /// The open WatchGenerations stream.
    stream: Option<u32>,
    /// A ReportHits call in flight, with what it carries (put back if it fails).
    flush: Option<(u32, HitReport)>,
    ticks: u64,
}

impl Root {
    fn open_stream(&mut self, cluster: &str) {
        let opened = hostcalls::open_grpc_stream(
            cluster,
            wire::RESOLVER_SERVICE,
            wire::WATCH_METHOD,
            config::grpc_metadata(self.config.as_deref()),
        )
        .and_then(|token| {
            let request = WatchGenerationsRequest {}.encode_to_vec();
            hostcalls::send_grpc_stream_message(token, Some(&request), true).map(|()| token)
        });
        // A failure is retried on the next tick; the close callback logs a lost stream.
        self.stream = opened.ok();
    }

    fn flush_hits(&mut self, cluster: &str) {
        let Some(report) = self
            .shared
            .try_borrow_mut()
            .ok()
            .and_then(|mut s| s.hits.take())
        else {
            return;
        };
        let sent = hostcalls::dispatch_grpc_call(
            cluster,
            wire::RESOLVER_SERVICE,
            wire::HITS_METHOD,
            config::grpc_metadata(self.config.as_deref()),
            Some(&report.encode_to_vec()),
            Duration::from_secs(5),
        );
        match sent {
            Ok(token) => self.flush = Some((token, report)),
            Err(_) => self.restore_hits(report),
        }
    }

    fn restore_hits(&self, report: HitReport) {
        if let Ok(mut s) = self.shared.try_borrow_mut() {
            s.hits.restore(report);
        }
    }

    /// Sends every held request no WaitMany call carries yet, in one call.
    fn send_holds(&mut self) {
        let Some(config) = self.config.clone() else {
            return;
        };
        // The resolver answers well before this call's deadline, with nothing if need be.
        let max_wait_ms = u32::try_from(config.timeout_ms.saturating_mul(3) / 4)
            .unwrap_or(u32::MAX)
            .max(1);
        let Some((ids, message)) = self
            .shared
            .try_borrow()
            .ok()
            .and_then(|s| s.holding.unsent(max_wait_ms))
        else {
            return;
        };
        let sent = hostcalls::dispatch_grpc_call(
            &config.resolver_cluster,
            wire::RESOLVER_SERVICE,
            wire::WAIT_MANY_METHOD,
            config.grpc_metadata(),
            Some(&message),
            config.timeout(),
        );
        match sent {
            Ok(token) => {
                if let Ok(mut s) = self.shared.try_borrow_mut() {
                    s.holding.sent(&ids, token);
                }
            }
            Err(e) => {
                let failed: Vec<(u32, Held)> = self
                    .shared
                    .try_borrow_mut()
                    .map(|mut s| {
                        ids.iter()
                            .filter_map(|id| Some((*id, s.holding.take(*id)?)))
                            .collect()
                    })
                    .unwrap_or_default();
                fail_held(&config, failed, &format!("resolver wait not sent: {e:?}"));
                self.own_context();
            }
        }
    }

    /// Makes the root context the effective one again after acting in requests' contexts.
    fn own_context(&self) {
        if let Err(e) = host::set_effective_context(self.id) {
            log(
                LogLevel::Error,
                &format!("returning to the root context: {e:?}"),
            );
        }
    }

    /// A WaitMany call ended: each request it decided is answered in its own context; a
    /// failed call fails every request it carried (503, within the callout deadline).
    fn held_answers(&mut self, token: u32, status: u32, size: usize) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let reply = (status == 0)
            .then(|| {
                host::buffer(BufferType::GrpcReceiveBuffer as u32, size)
                    .ok()
                    .flatten()
            })
            .flatten()
            .and_then(|b| WaitManyReply::decode(b.as_slice()).ok());
        let Ok(mut shared) = self.shared.try_borrow_mut() else {
            return;
        };
        let Some(reply) = reply else {
            let failed = shared.holding.failed(token);
            drop(shared);
            let why = format!("resolver wait failed (gRPC status {status})");
            fail_held(&config, failed, &why);
            return;
        };
        let answered = shared.holding.answered(token, reply.answers);
        drop(shared);
        for (id, held, reply) in answered {
            if host::set_effective_context(id).is_err() {
                continue;
            }
            let bytes = reply.encode_to_vec();
            let answer = match wire::answer(0, Some(&bytes)) {
                wire::Answer::Decided(decision, cacheable) => (decision, cacheable),
                wire::Answer::Hold { .. } => (
                    Decision::Deny(wire::unavailable("resolver held an answered request")),
                    None,
                ),
            };
            settle(
                &config,
                &self.shared,
                &held.headers,
                held.key,
                answer,
                Some(&bytes),
            );
        }
    }

    fn forget_generations(&self) {
        if let Ok(mut s) = self.shared.try_borrow_mut() {
            s.view.forget();
            s.lockouts.forget();
        }
    }
}

impl Context for Root {
    fn on_grpc_stream_message(&mut self, token: u32, size: usize) {
        if self.stream != Some(token) {
            return;
        }
        let message = host::buffer(BufferType::GrpcReceiveBuffer as u32, size)
            .ok()
            .flatten()
            .and_then(|b| Generations::decode(b.as_slice()).ok());
        let applied = match (&message, self.shared.try_borrow_mut(), now_ns()) {
            (Some(m), Ok(mut s), Some(now)) => {
                s.lockouts.apply(m, now);
                s.view.apply(m)
            }
            _ => false,
        };
        if !applied {
            // Nothing answers from the cache until a new stream starts with a reset.
            log(
                LogLevel::Warn,
                "unusable generation message; restarting the stream",
            );
            self.forget_generations();
            let _ = hostcalls::cancel_grpc_stream(token);
            self.stream = None;
        }
    }

    fn on_grpc_stream_close(&mut self, token: u32, status: u32) {
        if self.stream != Some(token) {
            return;
        }
        self.stream = None;
        let was_live = self.shared.try_borrow().is_ok_and(|s| s.view.is_live());
        self.forget_generations();
        if was_live {
            log(
                LogLevel::Warn,
                &format!(
                    "generation stream closed (gRPC status {status}); cache off until it is back"
                ),
            );
        }
    }

    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        match self.flush.take() {
            Some((t, report)) if t == token => {
                if status != 0 {
                    self.restore_hits(report);
                }
                return;
            }
            other => self.flush = other,
        }
        let carried = self
            .shared
            .try_borrow()
            .is_ok_and(|s| s.holding.carries(token));
        if carried {
            self.held_answers(token, status, size);
            self.own_context();
            self.send_holds();
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, size: usize) -> bool {
        let raw = match host::buffer(BufferType::PluginConfiguration as u32, size) {
            Ok(raw) => raw.unwrap_or_default(),
            Err(e) => {
                log(LogLevel::Error, &format!("reading configuration: {e:?}"));
                return false;
            }
        };
        match Config::parse(&raw) {
            Ok(config) => {
                // The tick sends held requests' waits, and with the cache on looks after its
                // stream and hit reports.
                if let Err(e) = hostcalls::set_tick_period(TICK) {
                    log(LogLevel::Error, &format!("starting the tick: {e:?}"));
                    return false;
                }
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

    fn on_tick(&mut self) {
        let Some(config) = self.config.clone() else {
            return;
        };
        self.send_holds();
        if !config.cache.enabled() {
            return;
        }
        if self.stream.is_none() {
            self.open_stream(&config.resolver_cluster);
        }
        self.ticks += 1;
        let every = (config.cache.flush_ms / TICK.as_millis() as u64).max(1);
        if self.ticks % every == 0 && self.flush.is_none() {
            self.flush_hits(&config.resolver_cluster);
        }
    }

    /// Never `None`: the SDK panics on it. Without a configuration (Envoy refuses a plugin
    /// whose configuration failed, so this is not expected) a request is refused with 503.
    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(match self.config.clone() {
            Some(config) => Box::new(Request {
                id: context_id,
                config,
                shared: Rc::clone(&self.shared),
                callout: None,
            }),
            None => Box::new(Unconfigured),
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One request: answered from the cache, or waits for at most one Resolve answer (and, when
/// held, for the root context's WaitMany answers).
struct Request {
    /// Its context id: how the root context finds it again for a held request's answer.
    id: u32,
    config: Rc<Config>,
    shared: Rc<RefCell<Shared>>,
    callout: Option<Pending>,
}

/// A request that arrived before any configuration: refused, never passed on undecided.
struct Unconfigured;

impl Context for Unconfigured {}

impl HttpContext for Unconfigured {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        refuse(&wire::unavailable("the filter has no configuration"))
    }
}

/// A Resolve call in flight and what applying its answer needs.
struct Pending {
    token: u32,
    /// The client's headers as they came (moved, not copied): the answer is applied to what
    /// they ask for, read again.
    headers: Vec<host::Header>,
    /// Where the answer goes in the cache, when the cache is on.
    key: Option<Key>,
}

impl Request {
    fn on_headers(&mut self) -> Action {
        let headers = match host::request_headers() {
            Ok(h) => h,
            Err(e) => return self.refuse(&wire::unavailable(&format!("headers: {e:?}"))),
        };
        let parsed = self.config.request.parse_headers(&headers);

        // Strip first, whatever happens next: no later branch can forget it.
        let api_key = parsed.as_ref().ok().and_then(|t| t.api_key.map(|(k, _)| k));
        for (name, value) in &headers {
            if self.config.request.is_gateway_header(name, value, api_key)
                && let Err(e) = host::remove_request_header(name)
            {
                let name = String::from_utf8_lossy(name);
                return self.refuse(&wire::unavailable(&format!("removing {name}: {e:?}")));
            }
        }

        let target = match parsed {
            Ok(t) => t,
            Err(deny) => return self.refuse(&deny),
        };
        let key = self.config.cache.enabled().then(|| Key::of(&target));
        if let Some(decision) = key.and_then(|k| self.kept_answer(k, &target)) {
            return apply(&self.config, &decision, &target);
        }
        let cfg = Rc::clone(&self.config);
        let message = wire::resolve_request(&target, source_address().as_deref());
        match hostcalls::dispatch_grpc_call(
            &cfg.resolver_cluster,
            wire::RESOLVER_SERVICE,
            wire::RESOLVE_METHOD,
            cfg.grpc_metadata(),
            Some(&message),
            cfg.timeout(),
        ) {
            Ok(token) => {
                self.callout = Some(Pending {
                    token,
                    headers,
                    key,
                });
                Action::Pause
            }
            Err(e) => unavailable(&self.config, &format!("resolver call not sent: {e:?}")),
        }
    }

    /// A kept answer for `key`: a route (counted as a hit of its sandbox) or a refusal.
    /// `None` sends the request to the resolver, as does a route whose hit could not be
    /// counted (the resolver then records the activity itself).
    fn kept_answer(&self, key: Key, target: &Target<'_>) -> Option<Decision> {
        let now = now_ns()?;
        let copy = {
            let mut shared = self.shared.try_borrow_mut().ok()?;
            // A client the failed-key limiter refuses is asked about, never answered from here.
            if shared.lockouts.any(now) {
                let client = source_address().and_then(|a| sandgate_core::client_ip(&a));
                if shared.lockouts.holds(client, now) {
                    return None;
                }
            }
            let Shared { local, view, .. } = &mut *shared;
            local.answer(key, view, now)
        };
        let decision = match copy {
            Kept::Hit(decision) => decision,
            Kept::Renew => return None,
            Kept::Miss => {
                let slot = host::shared_data(&key.slot(self.config.cache.slots)).ok()?;
                let mut shared = self.shared.try_borrow_mut().ok()?;
                let entry = Entry::read(&slot?, key, &shared.view, now)?;
                let decision = wire::decision(0, Some(&entry.reply));
                let max = self.config.cache.slots as usize;
                let renew = self.config.cache.renew_ns();
                shared
                    .local
                    .keep(key, &entry, decision.clone(), max, now, renew);
                decision
            }
        };
        match decision {
            route @ Decision::Route { .. } => {
                let max = self.config.cache.max_sandboxes;
                let mut shared = self.shared.try_borrow_mut().ok()?;
                shared.hits.count(target.sandbox_id, max).then_some(route)
            }
            Decision::Deny(d) if d.code != DenyCode::ResolverUnavailable => Some(Decision::Deny(d)),
            _ => None,
        }
    }

    fn refuse(&self, deny: &Deny) -> Action {
        refuse(deny)
    }
}

/// Applies a Resolve answer (or a held request's) to the paused request these `headers` came
/// with: kept in the cache first when the resolver allows (`reply` is its wire form), then
/// routed or answered locally, and resumed when it goes on.
fn settle(
    config: &Config,
    shared: &RefCell<Shared>,
    headers: &[host::Header],
    key: Option<Key>,
    (decision, cacheable): (Decision, Option<Cacheable>),
    reply: Option<&[u8]>,
) {
    if let (Some(key), Some(cacheable), Some(reply)) = (key, cacheable, reply) {
        remember(config, shared, key, &cacheable, &decision, reply);
    }
    // The same headers parsed before the call: this cannot fail, but is not unwrapped.
    let applied = match config.request.parse_headers(headers) {
        Ok(target) => apply(config, &decision, &target),
        Err(d) => refuse(&wire::unavailable(&format!(
            "re-reading the request: {}",
            d.message
        ))),
    };
    go_on_if(applied);
}

/// The request is paused on the callout: going on must wake it.
fn go_on_if(applied: Action) {
    if applied == Action::Continue
        && let Err(e) = host::resume_request()
    {
        log(LogLevel::Error, &format!("resuming: {e:?}"));
    }
}

/// Keeps a Resolve answer the resolver marked cacheable, for every VM and (decoded) for this
/// one.
fn remember(
    config: &Config,
    shared: &RefCell<Shared>,
    key: Key,
    cacheable: &Cacheable,
    decision: &Decision,
    reply: &[u8],
) {
    let (Some(now), Ok(mut shared)) = (now_ns(), shared.try_borrow_mut()) else {
        return;
    };
    let denial = matches!(decision, Decision::Deny(_));
    let cache = &config.cache;
    let Some(entry) = Entry::new(key, cacheable, denial, reply, cache, &shared.view, now) else {
        return;
    };
    let slot = key.slot(cache.slots);
    if let Err(e) = host::set_shared_data(&slot, &entry.encode_to_vec()) {
        log(LogLevel::Warn, &format!("keeping a decision: {e:?}"));
    }
    shared.local.keep(
        key,
        &entry,
        decision.clone(),
        cache.slots as usize,
        now,
        cache.renew_ns(),
    );
}

/// Applies a decision to the request `target` came from, as the shared grammar's [`Routing`]
/// says. `Continue`: the request goes on (a caller whose request is paused on the callout must
/// resume it); `Pause`: it was answered locally.
fn apply(config: &Config, decision: &Decision, target: &Target<'_>) -> Action {
    match config.request.routing(target, decision) {
        Ok(Routing {
            redirect: Some(redirect),
            ..
        }) => {
            let sent =
                host::send_response(u32::from(Redirect::STATUS), &redirect.reply_headers(), b"");
            if let Err(e) = sent {
                log(LogLevel::Error, &format!("redirect failed: {e:?}"));
            }
            Action::Pause
        }
        Ok(routing) => match route(&routing) {
            Ok(()) => Action::Continue,
            Err(e) => refuse(&wire::unavailable(&e)),
        },
        Err(deny) if deny.code == DenyCode::ResolverUnavailable => {
            unavailable(config, &deny.message)
        }
        Err(deny) => refuse(deny),
    }
}

/// The resolver could not decide: 503, or on with no destination when failing open
/// (`Continue`).
fn unavailable(config: &Config, why: &str) -> Action {
    log(LogLevel::Warn, why);
    if config.fail_closed {
        refuse(&wire::unavailable(why))
    } else {
        Action::Continue
    }
}

/// Answers locally; the request never reaches an upstream.
fn refuse(deny: &Deny) -> Action {
    let body = deny.json_body();
    let headers = deny.reply_headers();
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let sent = host::send_response(u32::from(deny.status()), &headers, body.as_bytes());
    if let Err(e) = sent {
        log(LogLevel::Error, &format!("local reply failed: {e:?}"));
    }
    Action::Pause
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
        let body = host::buffer(BufferType::GrpcReceiveBuffer as u32, size)
            .ok()
            .flatten();
        match wire::answer(status, body.as_deref()) {
            wire::Answer::Decided(decision, cacheable) => settle(
                &self.config,
                &self.shared,
                &pending.headers,
                pending.key,
                (decision, cacheable),
                body.as_deref(),
            ),
            // Held: the root context waits for it with every other held request of this VM
            // (WaitMany calls no longer than the callout deadline, so a resolver that dies is
            // still noticed within it). Nothing of a hold is kept.
            wire::Answer::Hold { until } => {
                let request = self
                    .config
                    .request
                    .parse_headers(&pending.headers)
                    .map(|t| wire::resolve_message(&t, source_address().as_deref()));
                let held = match (request, self.shared.try_borrow_mut()) {
                    (Ok(request), Ok(mut shared)) => {
                        let held = Held::new(pending.headers, pending.key, request, until);
                        shared.holding.hold(self.id, held);
                        true
                    }
                    _ => false,
                };
                if !held {
                    go_on_if(unavailable(&self.config, "holding the request"));
                }
            }
        }
    }
}

/// A held request whose context goes (its client left) is forgotten, its answer dropped.
impl Drop for Request {
    fn drop(&mut self) {
        if let Ok(mut shared) = self.shared.try_borrow_mut() {
            shared.holding.forget(self.id);
        }
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _headers: usize, _end_of_stream: bool) -> Action {
        self.on_headers()
    }
}

/// Fails held requests, each in its own context (one that is gone is skipped).
fn fail_held(config: &Config, failed: Vec<(u32, Held)>, why: &str) {
    for (id, _) in failed {
        if host::set_effective_context(id).is_ok() {
            go_on_if(unavailable(config, why));
        }
    }
}

/// Where the request comes from (Envoy's `source.address`, `ip:port`), for the resolver's
/// per-client limit on key guesses.
fn source_address() -> Option<String> {
    host::property(&["source", "address"])
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
}

/// Unix time in nanoseconds, as the host tells it.
fn now_ns() -> Option<u64> {
    u64::try_from(host::now().ok()?.as_nanos()).ok()
}

/// Pins the destination, rewrites the path, writes the headers in order, and has the route
/// matched again when the routing says so.
fn route(routing: &Routing<'_>) -> Result<(), String> {
    set_destination(routing.destination)?;
    if let Some(path) = routing.path {
        set_header(":path", path)?;
    }
    for (name, value) in &routing.writes {
        set_header(name, value)?;
    }
    for name in &routing.strip {
        host::remove_request_header(name.as_bytes())
            .map_err(|e| format!("removing {name}: {e:?}"))?;
    }
    match routing.cookie {
        Some("") => {
            host::remove_request_header(b"cookie").map_err(|e| format!("removing cookie: {e:?}"))?
        }
        Some(cookie) => set_header("cookie", cookie)?,
        None => {}
    }
    if routing.rematch {
        clear_route_cache()?;
    }
    Ok(())
}

fn set_destination(destination: &str) -> Result<(), String> {
    host::call_foreign(
        "set_envoy_filter_state",
        &wire::original_dst_argument(destination),
    )
    .map_err(|e| format!("setting the destination: {e:?}"))
}

/// Envoy's foreign function (since proxy-wasm header writes stopped clearing it implicitly):
/// the router matches the route again on the headers as they are now.
fn clear_route_cache() -> Result<(), String> {
    host::call_foreign("clear_route_cache", &[])
        .map_err(|e| format!("clearing the route cache: {e:?}"))
}

fn set_header(name: &str, value: &str) -> Result<(), String> {
    host::set_request_header(name, value.as_bytes()).map_err(|e| format!("writing {name}: {e:?}"))
}

fn log(level: LogLevel, message: &str) {
    host::log(level as u32, message);
}
