//! The ext_proc entry (envoy.service.ext_proc.v3.ExternalProcessor/Process): the same gateway
//! for Envoys without wasm. A thin shell like the wasm filter: the request grammar is
//! `sandgate_core::RequestGrammar`, the decision is [`Gateway::decide`]; this module only maps
//! ext_proc messages to facts and decisions back to messages.
//!
//! The destination is the header [`DESTINATION_HEADER`], which the ORIGINAL_DST cluster reads
//! (`use_http_header`). envoy-extproc.yaml drops a client's copy before ext_proc runs and
//! removes ours after host selection (the sandbox never sees it); here it is *overwritten* on
//! every routed request and a refusal is an immediate reply, so no request reaches the router
//! with a value the resolver did not write.
//!
//! The route cache is cleared only for a forward to another cluster's gateway (the forward's
//! private upstream header must be matched to pick the peer cluster) and when a client sent
//! that header itself (it is removed, and the route it matched must not stand). A local route keeps the
//! route matched on the client's request: the sandbox route matches every path, and
//! re-matching on the rewritten `:path` could only pick a route the client did not ask for.
//!
//! Owns the ext_proc wire mapping only; it may not decide anything itself.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue, HeaderValueOption};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as Phase;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Reply;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyResponse, CommonResponse, HeaderMutation, HeadersResponse, HttpHeaders, ImmediateResponse,
    ProcessingRequest, ProcessingResponse, TrailersResponse,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::google::protobuf::Duration as ProtoDuration;
use envoy_types::pb::google::protobuf::value::Kind;
use futures::{Stream, StreamExt};
use sandgate_core::{Decision, Deny, Redirect, RequestGrammar};
use tonic::{Request, Response, Status, Streaming};

use crate::decide::{Facts, Gateway};
use crate::hold::Answer;

/// Where the destination `<podIP>:<port>` goes (envoy-extproc.yaml's cluster reads it).
pub const DESTINATION_HEADER: &str = "x-envoy-original-dst-host";

/// Cheap to clone: every ext_proc stream's replies are produced by its own clone.
#[derive(Clone)]
pub struct ExtProc {
    gateway: Arc<Gateway>,
    grammar: Arc<RequestGrammar>,
}

pub fn server(gateway: Arc<Gateway>, grammar: RequestGrammar) -> ExternalProcessorServer<ExtProc> {
    ExternalProcessorServer::new(ExtProc::new(gateway, grammar))
}

impl ExtProc {
    pub fn new(gateway: Arc<Gateway>, grammar: RequestGrammar) -> Self {
        ExtProc {
            gateway,
            grammar: Arc::new(grammar),
        }
    }

    /// The answer to one message: request headers are decided; every other phase gets its
    /// phase-matched CONTINUE (a processing_mode that sends more must not abort streams); a
    /// message with no phase gets no answer rather than a wrong-phase one. A held request first
    /// hands `extend` the message that moves Envoy's timer to the hold's end.
    pub async fn respond(
        &self,
        message: &ProcessingRequest,
        extend: impl FnOnce(ProcessingResponse) + Send,
    ) -> Option<ProcessingResponse> {
        let reply = match message.request.as_ref()? {
            Phase::RequestHeaders(h) => {
                let client = client_address(message);
                return Some(self.on_request_headers(h, client, extend).await);
            }
            Phase::ResponseHeaders(_) => Reply::ResponseHeaders(HeadersResponse::default()),
            Phase::RequestBody(_) => Reply::RequestBody(BodyResponse::default()),
            Phase::ResponseBody(_) => Reply::ResponseBody(BodyResponse::default()),
            Phase::RequestTrailers(_) => Reply::RequestTrailers(TrailersResponse::default()),
            Phase::ResponseTrailers(_) => Reply::ResponseTrailers(TrailersResponse::default()),
        };
        Some(ProcessingResponse {
            response: Some(reply),
            ..Default::default()
        })
    }

    async fn on_request_headers(
        &self,
        message: &HttpHeaders,
        client: Option<std::net::IpAddr>,
        extend: impl FnOnce(ProcessingResponse) + Send,
    ) -> ProcessingResponse {
        let headers = header_list(message.headers.as_ref());
        let target = match self.grammar.parse_headers(&headers) {
            Ok(t) => t,
            Err(deny) => return refuse(&deny),
        };
        let api_key = target.api_key.map(|(k, _)| k);
        let others = target.other_credential_values();
        let facts = Facts::of(&target, &others, client);
        let mut answer = self.gateway.answer(facts).await;
        if let Answer::Held { until } = answer {
            // One extension for the whole hold (Envoy takes one per phase), a second past it so
            // the hold's own 503 comes first; a resolver that dies closes this stream anyway.
            let left = Duration::from_millis(until.saturating_sub(crate::hold::unix_ms()));
            extend(ProcessingResponse {
                override_message_timeout: Some(ProtoDuration {
                    seconds: i64::try_from(left.as_secs() + 1).unwrap_or(i64::MAX),
                    nanos: i32::try_from(left.subsec_nanos()).unwrap_or(0),
                }),
                ..Default::default()
            });
            answer = self.gateway.wait(facts, until, left).await;
        }
        let decision = match answer {
            Answer::Decided(decision, _) => decision,
            Answer::Held { .. } => Decision::Deny(Deny::new(
                sandgate_core::DenyCode::SandboxStarting,
                format!("sandbox {} did not become ready in time", target.sandbox_id),
            )),
        };
        let routing = match self.grammar.routing(&target, &decision) {
            Ok(routing) => routing,
            Err(deny) => return refuse(deny),
        };
        if let Some(redirect) = routing.redirect {
            return immediate(
                Redirect::STATUS,
                redirect
                    .reply_headers()
                    .iter()
                    .map(|(k, v)| raw_header(k, v))
                    .collect(),
                Vec::new(),
                "sandgate_token_redirect".into(),
            );
        }
        // ext_proc cannot set filter state: the destination goes in the header the
        // ORIGINAL_DST cluster reads (removed again by its upstream filter), before the rest.
        let mut writes = vec![(DESTINATION_HEADER, routing.destination)];
        writes.extend(routing.path.map(|p| (":path", p)));
        writes.extend(routing.writes.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        // The cookie header without the token cookie; with no other cookie it goes (below).
        writes.extend(
            routing
                .cookie
                .filter(|c| !c.is_empty())
                .map(|c| ("cookie", c)),
        );
        // A header that is written is overwritten, not also removed: one write, whatever
        // order Envoy applies removals and sets in. Judged by name (and, for authorization,
        // value) whatever the value's bytes: a gateway header that is not text goes too.
        let mut remove_headers: Vec<String> = headers
            .iter()
            .filter(|(name, value)| {
                !writes.iter().any(|(w, _)| w.as_bytes() == name.as_bytes())
                    && (self
                        .grammar
                        .is_gateway_header(name.as_bytes(), value, api_key)
                        || routing.strip.contains(&name.as_str())
                        || (name == "cookie" && routing.cookie == Some("")))
            })
            .map(|(name, _)| name.clone())
            .collect();
        remove_headers.sort_unstable();
        remove_headers.dedup();
        ProcessingResponse {
            response: Some(Reply::RequestHeaders(HeadersResponse {
                response: Some(CommonResponse {
                    header_mutation: Some(HeaderMutation {
                        set_headers: writes.iter().map(|(k, v)| raw_header(k, v)).collect(),
                        remove_headers,
                    }),
                    clear_route_cache: routing.rematch,
                    ..Default::default()
                }),
            })),
            ..Default::default()
        }
    }
}

/// The attribute envoy-extproc.yaml asks Envoy to send (`request_attributes`), under the
/// filter's name.
const ATTRIBUTES_KEY: &str = "envoy.filters.http.ext_proc";

/// The client's address from the request attributes, when Envoy sent it.
fn client_address(message: &ProcessingRequest) -> Option<std::net::IpAddr> {
    let value = message
        .attributes
        .get(ATTRIBUTES_KEY)?
        .fields
        .get("source.address")?;
    match &value.kind {
        Some(Kind::StringValue(s)) => sandgate_core::client_ip(s),
        _ => None,
    }
}

/// Header names (lower case) and values as bytes, every one of them: Envoy sends values in
/// `raw_value` or, from older versions, `value`. The grammar decides on the bytes, so a value
/// that is not UTF-8 still gets its deliberate answer and, if it is a gateway header, removed.
fn header_list(map: Option<&HeaderMap>) -> Vec<(String, Vec<u8>)> {
    map.map(|m| m.headers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|h| {
            let value = if h.raw_value.is_empty() {
                h.value.as_bytes().to_vec()
            } else {
                h.raw_value.clone()
            };
            (h.key.to_ascii_lowercase(), value)
        })
        .collect()
}

/// A header write that replaces every existing copy: the default action appends, which
/// would leave a client-sent copy in front of ours.
fn raw_header(key: &str, value: &str) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.into(),
            raw_value: value.as_bytes().to_vec(),
            ..Default::default()
        }),
        append_action: HeaderAppendAction::OverwriteIfExistsOrAdd.into(),
        ..Default::default()
    }
}

/// The local reply the wasm filter sends too: status, JSON body, no caching.
fn refuse(deny: &Deny) -> ProcessingResponse {
    immediate(
        deny.status(),
        deny.reply_headers()
            .iter()
            .map(|(k, v)| raw_header(k, v))
            .collect(),
        deny.json_body().into_bytes(),
        format!("sandgate_{}", deny.code),
    )
}

/// Answers locally with `status`, `headers` and `body`; the request never reaches an upstream.
fn immediate(
    status: u16,
    headers: Vec<HeaderValueOption>,
    body: Vec<u8>,
    details: String,
) -> ProcessingResponse {
    ProcessingResponse {
        response: Some(Reply::ImmediateResponse(ImmediateResponse {
            // envoy.type.v3.StatusCode values are the HTTP codes themselves.
            status: Some(HttpStatus {
                code: i32::from(status),
            }),
            headers: Some(HeaderMutation {
                set_headers: headers,
                remove_headers: Vec::new(),
            }),
            body,
            details,
            ..Default::default()
        })),
        ..Default::default()
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for ExtProc {
    type ProcessStream = ReplyStream;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Self::ProcessStream>, Status> {
        let this = self.clone();
        let mut inbound = request.into_inner();
        // Replies go through a channel: a held request sends two (the timer extension, then
        // its answer), and a stream Envoy closes while a request is held ends the hold.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<ProcessingResponse, Status>>(4);
        tokio::spawn(async move {
            while let Some(message) = inbound.next().await {
                let message = match message {
                    Ok(m) => m,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                };
                let early = tx.clone();
                let extend = move |r| {
                    let _ = early.try_send(Ok(r));
                };
                let reply = tokio::select! {
                    reply = this.respond(&message, extend) => reply,
                    () = tx.closed() => return,
                };
                if let Some(reply) = reply
                    && tx.send(Ok(reply)).await.is_err()
                {
                    return;
                }
            }
        });
        let replies = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|reply| (reply, rx))
        });
        Ok(Response::new(Box::pin(replies)))
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::service::ext_proc::v3::{HttpBody, HttpTrailers};

    use super::*;
    use crate::decide::tests::{FALLBACK, fixture, pod};
    use crate::pods::Phase as PodPhase;

    impl ExtProc {
        fn respond_now(&self, m: &ProcessingRequest) -> Option<ProcessingResponse> {
            futures::executor::block_on(self.respond(m, |_| panic!("nothing is held here")))
        }
    }

    fn extproc() -> ExtProc {
        let f = fixture(FALLBACK);
        f.gw.pods.apply(pod(
            "acme",
            "p1",
            Some("sb"),
            PodPhase::Running,
            Some("10.0.0.7"),
        ));
        ExtProc::new(Arc::new(f.gw), RequestGrammar::default())
    }

    fn headers(list: &[(&str, &str)]) -> ProcessingRequest {
        let list: Vec<(&str, &[u8])> = list.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        header_bytes(&list)
    }

    fn header_bytes(list: &[(&str, &[u8])]) -> ProcessingRequest {
        ProcessingRequest {
            request: Some(Phase::RequestHeaders(HttpHeaders {
                headers: Some(HeaderMap {
                    headers: list
                        .iter()
                        .map(|(k, v)| HeaderValue {
                            key: (*k).into(),
                            raw_value: v.to_vec(),
                            ..Default::default()
                        })
                        .collect(),
                }),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    /// The value written to the destination header, if this is a routed headers response.
    fn destination(r: &ProcessingResponse) -> Option<String> {
        let Some(Reply::RequestHeaders(h)) = &r.response else {
            return None;
        };
        let set = &h.response.as_ref()?.header_mutation.as_ref()?.set_headers;
        let header = set
            .iter()
            .filter_map(|o| o.header.as_ref())
            .find(|h| h.key == DESTINATION_HEADER)?;
        String::from_utf8(header.raw_value.clone()).ok()
    }

    fn immediate(r: &ProcessingResponse) -> Option<(i32, String)> {
        match &r.response {
            Some(Reply::ImmediateResponse(i)) => Some((
                i.status.as_ref()?.code,
                String::from_utf8(i.body.clone()).ok()?,
            )),
            _ => None,
        }
    }

    fn mutation(r: &ProcessingResponse) -> HeaderMutation {
        match &r.response {
            Some(Reply::RequestHeaders(h)) => h
                .response
                .as_ref()
                .and_then(|c| c.header_mutation.clone())
                .unwrap_or_default(),
            other => panic!("not a headers response: {other:?}"),
        }
    }

    #[test]
    fn routes_with_destination_header_path_rewrite_and_removals() {
        let x = extproc();
        let r = x
            .respond_now(&headers(&[
                (":path", "/sandboxes/sb/8080/api?q=1"),
                ("x-api-key", "acme-key"),
                ("x-envoy-original-dst-host", "1.2.3.4:5"),
                ("x-sandbox-extra", "1"),
                ("accept", "*/*"),
            ]))
            .unwrap();
        assert_eq!(destination(&r).as_deref(), Some("10.0.0.7:8080"));
        let Some(Reply::RequestHeaders(HeadersResponse {
            response: Some(common),
        })) = &r.response
        else {
            panic!("not a headers response: {r:?}")
        };
        // The route matched on the client's request stays (see the module doc).
        assert!(!common.clear_route_cache);
        assert_eq!(common.status, 0, "CONTINUE, not CONTINUE_AND_REPLACE");
        let m = mutation(&r);
        let sets: Vec<(&str, &[u8], i32)> = m
            .set_headers
            .iter()
            .map(|o| {
                let h = o.header.as_ref().unwrap();
                (h.key.as_str(), h.raw_value.as_slice(), o.append_action)
            })
            .collect();
        // Both written as raw bytes, replacing whatever the client sent (never appended).
        let overwrite = i32::from(HeaderAppendAction::OverwriteIfExistsOrAdd);
        assert_eq!(
            sets,
            [
                (DESTINATION_HEADER, &b"10.0.0.7:8080"[..], overwrite),
                (":path", &b"/api?q=1"[..], overwrite)
            ]
        );
        assert!(
            m.set_headers
                .iter()
                .all(|o| o.header.as_ref().unwrap().value.is_empty())
        );
        assert_eq!(m.remove_headers, ["x-api-key", "x-sandbox-extra"]);
    }

    #[test]
    fn gateway_headers_go_whatever_their_bytes_and_other_gateway_keys_with_them() {
        let x = extproc();
        let removed = |extra: &[(&str, &[u8])]| {
            let mut list: Vec<(&str, &[u8])> =
                vec![(":path", b"/sandboxes/sb/80/"), ("x-api-key", b"acme-key")];
            list.extend_from_slice(extra);
            let r = x.respond_now(&header_bytes(&list)).unwrap();
            assert_eq!(destination(&r).as_deref(), Some("10.0.0.7:80"), "{extra:?}");
            mutation(&r).remove_headers
        };
        assert_eq!(
            removed(&[
                ("x-sandbox-extra", b"\xff"),
                ("x-sandgate-hop", b"\xfe"),
                ("x-note", b"\xff"),
            ]),
            ["x-api-key", "x-sandbox-extra", "x-sandgate-hop"]
        );
        // Another gateway key in authorization (any spelling) goes; an app's token stays.
        for auth in [&b"Bearer admin"[..], b"bearer\tglobex-key"] {
            assert!(removed(&[("authorization", auth)]).contains(&"authorization".to_string()));
        }
        assert_eq!(
            removed(&[("authorization", b"Bearer app-token")]),
            ["x-api-key"]
        );
        // A key that is not text is the 401 it is, not a missing key.
        let r = x
            .respond_now(&header_bytes(&[
                (":path", b"/sandboxes/sb/80/"),
                ("x-api-key", b"\xff"),
            ]))
            .unwrap();
        assert_eq!(immediate(&r).map(|(s, _)| s), Some(401));
        assert!(immediate(&r).unwrap().1.contains("invalid_api_key"));
    }

    #[test]
    fn a_forward_rewrites_for_the_peer_and_clears_the_route_cache() {
        let x = extproc();
        x.gateway
            .clusters
            .apply(
                crate::clusters::Source::File,
                "clusters: [{id: c2, gateway: {dataURL: 'http://127.0.0.9:8092/gw', headers: {x-peer: p}}}]",
            )
            .unwrap();
        let id = "c2.0f8fad5b-d9cb-469f-a165-70867728950e";
        let r = x
            .respond_now(&headers(&[
                (":path", "/app"),
                (":authority", "gw1"),
                ("x-sandbox-id", id),
                ("x-sandbox-port", "8080"),
                ("authorization", "Bearer acme-key"),
                ("x-sandgate-upstream", "forged"),
            ]))
            .unwrap();
        let Some(Reply::RequestHeaders(HeadersResponse {
            response: Some(common),
        })) = &r.response
        else {
            panic!("not a headers response: {r:?}")
        };
        assert!(common.clear_route_cache);
        let m = mutation(&r);
        let set = |name: &str| {
            m.set_headers
                .iter()
                .filter_map(|o| o.header.as_ref())
                .filter(|h| h.key == name)
                .map(|h| String::from_utf8(h.raw_value.clone()).unwrap())
                .next_back()
        };
        assert_eq!(set(DESTINATION_HEADER).as_deref(), Some("127.0.0.9:8092"));
        assert_eq!(set(":authority").as_deref(), Some("127.0.0.9:8092"));
        assert_eq!(set(":path").as_deref(), Some("/gw/app"));
        assert_eq!(set("x-sandgate-upstream").as_deref(), Some("peer"));
        assert_eq!(set("x-sandgate-hop").as_deref(), Some("home"));
        assert_eq!(set("x-sandbox-id").as_deref(), Some(id));
        assert_eq!(set("agentbox-api-key").as_deref(), Some("acme-key"));
        assert_eq!(set("x-peer").as_deref(), Some("p"));
        // The bearer copy of the key goes; what is rewritten is not also removed.
        assert_eq!(m.remove_headers, ["authorization"]);
    }

    #[test]
    fn refusals_are_immediate_json_replies_with_the_table_status() {
        let x = extproc();
        for (list, status, code) in [
            (vec![(":path", "/")], 400, "missing_sandbox_id"),
            (
                vec![(":path", "/sandboxes/sb/8080/")],
                401,
                "missing_api_key",
            ),
            (
                vec![
                    (":path", "/sandboxes/sb/8080/"),
                    ("x-api-key", "globex-key"),
                ],
                403,
                "forbidden",
            ),
            (
                vec![(":path", "/sandboxes/no/8080/"), ("x-api-key", "acme-key")],
                404,
                "sandbox_not_found",
            ),
        ] {
            let r = x.respond_now(&headers(&list)).unwrap();
            let (got, body) = immediate(&r).unwrap_or_else(|| panic!("{list:?}: {r:?}"));
            assert_eq!(got, status);
            assert!(body.contains(&format!("\"code\":\"{code}\"")), "{body}");
            assert!(destination(&r).is_none());
        }
    }

    #[test]
    fn malformed_input_is_refused_not_routed() {
        let x = extproc();
        // No header map at all: nothing names a sandbox.
        let none = ProcessingRequest {
            request: Some(Phase::RequestHeaders(HttpHeaders::default())),
            ..Default::default()
        };
        assert_eq!(immediate(&x.respond_now(&none).unwrap()).unwrap().0, 400);
        // Values in `value` (older Envoys) are read like `raw_value`.
        let legacy = ProcessingRequest {
            request: Some(Phase::RequestHeaders(HttpHeaders {
                headers: Some(HeaderMap {
                    headers: vec![
                        HeaderValue {
                            key: ":path".into(),
                            value: "/sandboxes/sb/80/".into(),
                            ..Default::default()
                        },
                        HeaderValue {
                            key: "x-api-key".into(),
                            value: "acme-key".into(),
                            ..Default::default()
                        },
                    ],
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(
            destination(&x.respond_now(&legacy).unwrap()).as_deref(),
            Some("10.0.0.7:80")
        );
        // Duplicate pseudo-headers: the first one decides, as in the wasm filter, and the
        // rewrite replaces every copy, so the sandbox sees one consistent path.
        let dup = headers(&[
            (":path", "/sandboxes/sb/80/first"),
            (":path", "/sandboxes/other/80/second"),
            ("x-api-key", "acme-key"),
        ]);
        let r = x.respond_now(&dup).unwrap();
        assert_eq!(destination(&r).as_deref(), Some("10.0.0.7:80"));
        // A key that is not UTF-8 is no key.
        let bad = ProcessingRequest {
            request: Some(Phase::RequestHeaders(HttpHeaders {
                headers: Some(HeaderMap {
                    headers: vec![
                        HeaderValue {
                            key: ":path".into(),
                            raw_value: b"/sandboxes/sb/80/".to_vec(),
                            ..Default::default()
                        },
                        HeaderValue {
                            key: "x-api-key".into(),
                            raw_value: vec![0xff, 0xfe],
                            ..Default::default()
                        },
                    ],
                }),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(immediate(&x.respond_now(&bad).unwrap()).unwrap().0, 401);
    }

    #[test]
    fn other_phases_get_their_own_continue_and_no_phase_gets_nothing() {
        let x = extproc();
        // A CONTINUE is the phase's response with no mutation and no status override.
        let cases = [
            (
                Phase::ResponseHeaders(HttpHeaders::default()),
                Reply::ResponseHeaders(HeadersResponse::default()),
            ),
            (
                Phase::RequestBody(HttpBody::default()),
                Reply::RequestBody(BodyResponse::default()),
            ),
            (
                Phase::ResponseBody(HttpBody::default()),
                Reply::ResponseBody(BodyResponse::default()),
            ),
            (
                Phase::RequestTrailers(HttpTrailers::default()),
                Reply::RequestTrailers(TrailersResponse::default()),
            ),
            (
                Phase::ResponseTrailers(HttpTrailers::default()),
                Reply::ResponseTrailers(TrailersResponse::default()),
            ),
        ];
        for (phase, expected) in cases {
            let r = x
                .respond_now(&ProcessingRequest {
                    request: Some(phase),
                    ..Default::default()
                })
                .unwrap();
            assert_eq!(
                r,
                ProcessingResponse {
                    response: Some(expected),
                    ..Default::default()
                }
            );
        }
        assert!(x.respond_now(&ProcessingRequest::default()).is_none());
    }
}
