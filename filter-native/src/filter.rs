//! One request through the native entry: gather the facts, decide against the live gateway on
//! the worker, apply the decision. The same steps as the wasm filter and ext_proc, in the
//! shared grammar's terms: strip gateway headers first, then route ([`Routing`]) or refuse
//! with the status table's JSON.
//!
//! Owns the request's side of the decision only; no rule of its own.

use std::sync::Arc;

use parking_lot::Mutex;
use sandgate_core::{Decision, Deny, DenyCode, Redirect, RequestGrammar, Routing, Target};
use sandgate_resolver::decide::Facts;

use crate::embedded::{Embedded, Now};
use crate::host::{Headers, Host};

/// Whether the request goes on now (`Continue`) or waits: answered locally, or paused until
/// its decision is made on the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

pub struct Filter {
    embedded: Option<&'static Embedded>,
    fail_closed: bool,
    noop: bool,
    pending: Option<Pending>,
}

/// A request paused while the runtime decides it.
struct Pending {
    headers: Arc<Headers>,
    decision: Arc<Mutex<Option<Decision>>>,
    task: tokio::task::AbortHandle,
}

/// A client that leaves while its request is held costs nothing afterwards: its wait ends.
impl Drop for Filter {
    fn drop(&mut self) {
        if let Some(p) = &self.pending {
            p.task.abort();
        }
    }
}

impl Filter {
    /// `embedded`: the process's gateway (`None`: the module has none, and refuses).
    pub fn new(embedded: Option<&'static Embedded>, fail_closed: bool, noop: bool) -> Filter {
        Filter {
            embedded,
            fail_closed,
            noop,
            pending: None,
        }
    }

    pub fn on_request_headers(&mut self, host: &impl Host) -> Flow {
        if self.noop {
            return Flow::Continue;
        }
        let Some(embedded) = self.embedded else {
            return unavailable(host, self.fail_closed, "the module has no gateway");
        };
        let Some(live) = embedded.live() else {
            return unavailable(host, self.fail_closed, "the gateway is not running");
        };
        let headers = host.request_headers();
        let pairs = headers.pairs();
        let parsed = live.grammar.parse_headers(&pairs);

        // Strip first, whatever happens next: no later branch can forget it.
        let api_key = parsed.as_ref().ok().and_then(|t| t.api_key.map(|(k, _)| k));
        for (name, value) in &pairs {
            if live.grammar.is_gateway_header(name, value, api_key) && !host.remove_header(name) {
                let name = String::from_utf8_lossy(name);
                return refuse(host, &unavailable_deny(&format!("removing {name}")));
            }
        }
        let target = match parsed {
            Ok(t) => t,
            Err(deny) => return refuse(host, &deny),
        };
        let client = host
            .source_address()
            .and_then(|a| sandgate_core::client_ip(&a));
        let others = target.other_credential_values();
        let held = match live.now(&embedded.runtime, Facts::of(&target, &others, client)) {
            Now::Decided(decision) => {
                return apply(host, &live.grammar, &target, &decision, self.fail_closed);
            }
            Now::Later(held) => held,
        };
        drop(pairs);
        self.later(host, embedded, Arc::new(headers), client, held)
    }

    /// Pauses the request and decides it on the runtime; `on_scheduled` applies the decision.
    fn later(
        &mut self,
        host: &impl Host,
        embedded: &'static Embedded,
        headers: Arc<Headers>,
        client: Option<std::net::IpAddr>,
        held: Option<u64>,
    ) -> Flow {
        let Some(waker) = host.waker() else {
            return unavailable(host, self.fail_closed, "no scheduler to resume the request");
        };
        let decision = Arc::new(Mutex::new(None));
        let task = embedded.spawn({
            let (headers, decision) = (Arc::clone(&headers), Arc::clone(&decision));
            async move {
                let made = match embedded.live() {
                    Some(live) => match live.grammar.parse_headers(&headers.pairs()) {
                        Ok(target) => {
                            let others = target.other_credential_values();
                            live.later(Facts::of(&target, &others, client), held).await
                        }
                        Err(deny) => Decision::Deny(deny),
                    },
                    None => Decision::Deny(unavailable_deny("the gateway is not running")),
                };
                *decision.lock() = Some(made);
                waker.wake();
            }
        });
        self.pending = Some(Pending {
            headers,
            decision,
            task,
        });
        Flow::Stop
    }

    /// The runtime decided the paused request: apply it, and resume the request if it goes on.
    pub fn on_scheduled(&mut self, host: &impl Host) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let decision = pending.decision.lock().take();
        let flow = match (decision, self.embedded.and_then(Embedded::live)) {
            (Some(decision), Some(live)) => {
                let pairs = pending.headers.pairs();
                match live.grammar.parse_headers(&pairs) {
                    Ok(target) => apply(host, &live.grammar, &target, &decision, self.fail_closed),
                    Err(deny) => refuse(host, &deny),
                }
            }
            _ => unavailable(host, self.fail_closed, "the decision was lost"),
        };
        if flow == Flow::Continue {
            host.continue_decoding();
        }
    }
}

/// Applies a decision as the shared grammar's [`Routing`] says.
pub fn apply(
    host: &impl Host,
    grammar: &RequestGrammar,
    target: &Target<'_>,
    decision: &Decision,
    fail_closed: bool,
) -> Flow {
    match grammar.routing(target, decision) {
        Ok(Routing {
            redirect: Some(redirect),
            ..
        }) => {
            host.send_response(
                Redirect::STATUS,
                &redirect.reply_headers(),
                b"",
                "sandgate_token_redirect",
            );
            Flow::Stop
        }
        Ok(routing) => match route(host, &routing) {
            Ok(()) => Flow::Continue,
            Err(e) => refuse(host, &unavailable_deny(&e)),
        },
        Err(deny) if deny.code == DenyCode::ResolverUnavailable => {
            unavailable(host, fail_closed, &deny.message)
        }
        Err(deny) => refuse(host, deny),
    }
}

/// Pins the destination, rewrites the path, writes the headers in order, and has the route
/// matched again when the routing says so.
fn route(host: &impl Host, routing: &Routing<'_>) -> Result<(), String> {
    if !host.set_destination(routing.destination) {
        return Err("setting the destination".into());
    }
    let set = |name: &str, value: &str| {
        host.set_header(name, value)
            .then_some(())
            .ok_or_else(|| format!("writing {name}"))
    };
    if let Some(path) = routing.path {
        set(":path", path)?;
    }
    for (name, value) in &routing.writes {
        set(name, value)?;
    }
    let remove = |name: &str| {
        host.remove_header(name.as_bytes())
            .then_some(())
            .ok_or_else(|| format!("removing {name}"))
    };
    for name in &routing.strip {
        remove(name)?;
    }
    match routing.cookie {
        Some("") => remove("cookie")?,
        Some(cookie) => set("cookie", cookie)?,
        None => {}
    }
    if routing.rematch {
        host.clear_route_cache();
    }
    Ok(())
}

/// The refusal of a request the gateway could not decide.
pub fn unavailable_deny(why: &str) -> Deny {
    Deny::new(DenyCode::ResolverUnavailable, why)
}

/// The gateway could not decide: 503, or on with no destination when failing open.
pub fn unavailable(host: &impl Host, fail_closed: bool, why: &str) -> Flow {
    tracing::warn!(why, "no decision");
    if fail_closed {
        refuse(host, &unavailable_deny(why))
    } else {
        Flow::Continue
    }
}

/// Answers locally with the status table's status and JSON.
pub fn refuse(host: &impl Host, deny: &Deny) -> Flow {
    let headers = deny.reply_headers();
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let details = format!("sandgate_{}", deny.code);
    host.send_response(
        deny.status(),
        &headers,
        deny.json_body().as_bytes(),
        &details,
    );
    Flow::Stop
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// Records what the filter asked of Envoy.
    #[derive(Default)]
    struct Fake {
        calls: RefCell<Vec<String>>,
        refuse_writes: bool,
    }

    impl Fake {
        fn log(&self, call: String) -> bool {
            self.calls.borrow_mut().push(call);
            !self.refuse_writes
        }
        fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
    }

    impl Host for Fake {
        fn request_headers(&self) -> Headers {
            Headers::default()
        }
        fn set_header(&self, name: &str, value: &str) -> bool {
            self.log(format!("set {name}: {value}"))
        }
        fn remove_header(&self, name: &[u8]) -> bool {
            self.log(format!("remove {}", String::from_utf8_lossy(name)))
        }
        fn set_destination(&self, destination: &str) -> bool {
            self.log(format!("destination {destination}"))
        }
        fn clear_route_cache(&self) {
            self.log("rematch".into());
        }
        fn send_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8], details: &str) {
            let headers: Vec<String> = headers.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let body = String::from_utf8_lossy(body);
            self.log(format!(
                "reply {status} {} {body} ({details})",
                headers.join(",")
            ));
        }
        fn continue_decoding(&self) {
            self.log("continue".into());
        }
        fn source_address(&self) -> Option<String> {
            None
        }
        fn waker(&self) -> Option<Box<dyn crate::host::Wake>> {
            None
        }
    }

    fn target<'a>(grammar: &'a RequestGrammar, headers: &'a [(&'a str, &'a str)]) -> Target<'a> {
        grammar.parse_headers(headers).unwrap()
    }

    #[test]
    fn a_route_pins_the_destination_and_rewrites_the_path() {
        let grammar = RequestGrammar::default();
        let headers = [
            (":path", "/sandboxes/sb-1/8080/app?q=1"),
            ("x-api-key", "k"),
        ];
        let t = target(&grammar, &headers);
        let decision = Decision::Route {
            destination: "10.0.0.1:8080".into(),
            strip_credentials: 0,
        };
        let host = Fake::default();
        assert_eq!(apply(&host, &grammar, &t, &decision, true), Flow::Continue);
        assert_eq!(
            host.calls(),
            ["destination 10.0.0.1:8080", "set :path: /app?q=1"]
        );
    }

    #[test]
    fn a_refusal_is_the_tables_status_and_json_and_stops() {
        let grammar = RequestGrammar::default();
        let headers = [(":path", "/sandboxes/sb-1/8080/")];
        let t = target(&grammar, &headers);
        let deny = Deny::new(DenyCode::SandboxStarting, "later");
        let host = Fake::default();
        assert_eq!(
            apply(&host, &grammar, &t, &Decision::Deny(deny), true),
            Flow::Stop
        );
        assert_eq!(
            host.calls(),
            [
                "reply 503 content-type=application/json,cache-control=no-store,retry-after=5 \
                 {\"code\":\"sandbox_starting\",\"message\":\"later\"} (sandgate_sandbox_starting)"
            ]
        );
    }

    #[test]
    fn a_write_envoy_refuses_fails_closed_and_open_only_when_asked() {
        let grammar = RequestGrammar::default();
        let headers = [(":path", "/sandboxes/sb-1/8080/")];
        let t = target(&grammar, &headers);
        let decision = Decision::Route {
            destination: "10.0.0.1:8080".into(),
            strip_credentials: 0,
        };
        let host = Fake {
            refuse_writes: true,
            ..Fake::default()
        };
        assert_eq!(apply(&host, &grammar, &t, &decision, false), Flow::Stop);
        assert!(host.calls().last().unwrap().starts_with("reply 503"));
        let host = Fake::default();
        let unavailable_decision = Decision::Deny(unavailable_deny("down"));
        assert_eq!(
            apply(&host, &grammar, &t, &unavailable_decision, false),
            Flow::Continue,
            "failing open goes on, with no destination"
        );
        assert!(host.calls().is_empty());
    }

    #[test]
    fn without_a_gateway_a_request_is_refused_and_noop_does_nothing() {
        let host = Fake::default();
        assert_eq!(
            Filter::new(None, true, false).on_request_headers(&host),
            Flow::Stop
        );
        assert!(host.calls()[0].starts_with("reply 503"));
        let host = Fake::default();
        assert_eq!(
            Filter::new(None, true, true).on_request_headers(&host),
            Flow::Continue
        );
        assert!(host.calls().is_empty());
    }
}
