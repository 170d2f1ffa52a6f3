//! The bytes the filter exchanges with its host: the Resolve callout and the argument of
//! Envoy's `set_envoy_filter_state` foreign function.
//!
//! Owns encoding and decoding only (plain Rust, tested natively); the contexts in lib.rs do
//! the host calls.

use prost::Message;
use sandgate_core::{Decision, Deny, DenyCode, Forward, PeerUpstream, Target};
use sandgate_proto::resolver::v1::{Cacheable, ResolveReply, ResolveRequest, resolve_reply};

pub const RESOLVER_SERVICE: &str = "sandgate.resolver.v1.Resolver";
pub const RESOLVE_METHOD: &str = "Resolve";
pub const WATCH_METHOD: &str = "WatchGenerations";
pub const HITS_METHOD: &str = "ReportHits";
pub const WAIT_MANY_METHOD: &str = "WaitMany";

/// Filter-state key the ORIGINAL_DST cluster reads before dynamic metadata and headers; a
/// client cannot write it, unlike `x-envoy-original-dst-host`.
pub const ORIGINAL_DST_KEY: &str = "envoy.network.transport_socket.original_dst_address";

/// The Resolve call for `target`; `source` is Envoy's `source.address` property, if read.
pub fn resolve_request(target: &Target<'_>, source: Option<&str>) -> Vec<u8> {
    resolve_message(target, source).encode_to_vec()
}

/// The Resolve message for `target` (also what a held request's WaitMany entry carries).
pub fn resolve_message(target: &Target<'_>, source: Option<&str>) -> ResolveRequest {
    ResolveRequest {
        api_key: target
            .api_key
            .map(|(k, _)| k.to_string())
            .unwrap_or_default(),
        sandbox_id: target.sandbox_id.to_string(),
        port: u32::from(target.port),
        forwarded: target.forwarded,
        client_address: source
            .and_then(sandgate_core::client_ip)
            .map(|ip| ip.to_string())
            .unwrap_or_default(),
        other_credentials: target
            .other_credentials
            .iter()
            .map(|(_, v)| (*v).to_string())
            .collect(),
        e2b: target.e2b,
        access_token: target.token.map(|(t, _)| t.to_string()).unwrap_or_default(),
    }
}

/// A Resolve or Wait answer: a decision (and whether a cache may keep it), or hold.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Decided(Decision, Option<Cacheable>),
    /// Call Wait; past Unix ms `until` the resolver answers 503 itself.
    Hold {
        until: u64,
    },
}

/// What a kept Resolve answer means for the request (a hold is never kept, and reads as the
/// resolver being unavailable).
pub fn decision(grpc_status: u32, body: Option<&[u8]>) -> Decision {
    match answer(grpc_status, body) {
        Answer::Decided(decision, _) => decision,
        Answer::Hold { .. } => Decision::Deny(unavailable("a kept answer cannot be a hold")),
    }
}

/// What a Resolve or Wait answer means for the request. Anything the filter cannot make sense
/// of is the resolver being unavailable: the request is refused, never routed on a guess.
pub fn answer(grpc_status: u32, body: Option<&[u8]>) -> Answer {
    if grpc_status != 0 {
        let why = format!("resolver call failed (gRPC status {grpc_status})");
        return Answer::Decided(Decision::Deny(unavailable(&why)), None);
    }
    let Some(Ok(reply)) = body.map(ResolveReply::decode) else {
        return Answer::Decided(
            Decision::Deny(unavailable("resolver sent an unreadable reply")),
            None,
        );
    };
    if let Some(resolve_reply::Outcome::Hold(hold)) = &reply.outcome {
        return Answer::Hold {
            until: hold.until_unix_ms,
        };
    }
    let decision = outcome(reply.outcome);
    // Only an answer that means something may be kept: never the 503 standing in for nonsense.
    let keep = match &decision {
        Decision::Deny(d) if d.code == DenyCode::ResolverUnavailable => None,
        _ => reply.cacheable,
    };
    Answer::Decided(decision, keep)
}

fn outcome(outcome: Option<resolve_reply::Outcome>) -> Decision {
    match outcome {
        Some(resolve_reply::Outcome::Route(r)) if !r.destination.is_empty() => Decision::Route {
            destination: r.destination,
            strip_credentials: r.strip_credentials,
        },
        Some(resolve_reply::Outcome::Forward(f)) if !f.destination.is_empty() => {
            // An upstream this filter does not know would match no route: refuse instead.
            let Some(upstream) = PeerUpstream::parse(&f.upstream) else {
                return Decision::Deny(unavailable("resolver sent an unknown peer upstream"));
            };
            Decision::Forward(Box::new(Forward {
                destination: f.destination,
                authority: f.authority,
                path_prefix: f.path_prefix,
                upstream,
                headers: f.headers.into_iter().map(|h| (h.name, h.value)).collect(),
                from_cluster: f.from_cluster,
            }))
        }
        Some(resolve_reply::Outcome::Deny(d)) => {
            // The code is looked up in the shared table so the status always matches it; an
            // unknown code (a newer resolver) is not guessed at.
            let code = DenyCode::ALL.into_iter().find(|c| c.as_str() == d.code);
            match code {
                Some(code) => {
                    let status = u16::try_from(d.status).unwrap_or_default();
                    Decision::Deny(Deny::new(code, d.message).with_status(status))
                }
                None => Decision::Deny(unavailable("resolver sent an unknown refusal")),
            }
        }
        _ => Decision::Deny(unavailable("resolver sent an empty reply")),
    }
}

pub fn unavailable(message: &str) -> Deny {
    Deny::new(DenyCode::ResolverUnavailable, message)
}

/// `envoy.source.extensions.common.wasm.SetEnvoyFilterStateArguments`.
#[derive(Clone, PartialEq, Message)]
pub struct SetEnvoyFilterStateArguments {
    #[prost(string, tag = "1")]
    pub path: String,
    #[prost(string, tag = "2")]
    pub value: String,
    /// LifeSpan: 0 FilterChain, 1 DownstreamRequest, 2 DownstreamConnection.
    #[prost(int32, tag = "3")]
    pub span: i32,
}

/// Argument that stores `destination` as this request's original destination.
pub fn original_dst_argument(destination: &str) -> Vec<u8> {
    SetEnvoyFilterStateArguments {
        path: ORIGINAL_DST_KEY.into(),
        value: destination.into(),
        span: 1,
    }
    .encode_to_vec()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use sandgate_core::KeySource;
    use sandgate_proto::resolver::v1::{Deny as WireDeny, Forward as WireForward, Header, Route};

    fn reply(outcome: resolve_reply::Outcome) -> Vec<u8> {
        ResolveReply {
            outcome: Some(outcome),
            cacheable: None,
        }
        .encode_to_vec()
    }

    #[test]
    fn request_carries_key_id_and_port() {
        let t = Target {
            api_key: Some(("k", KeySource::Bearer)),
            sandbox_id: "sb",
            port: 8080,
            rewritten_path: None,
            path: "/",
            other_credentials: vec![("authorization", "app")],
            e2b: true,
            forwarded: true,
            token: Some(("sgt1.t", sandgate_core::TokenSource::Cookie)),
            ..Default::default()
        };
        let r =
            ResolveRequest::decode(resolve_request(&t, Some("[fd00::9]:4711")).as_slice()).unwrap();
        assert_eq!(
            (
                r.api_key.as_str(),
                r.sandbox_id.as_str(),
                r.port,
                r.forwarded,
                r.client_address.as_str()
            ),
            ("k", "sb", 8080, true, "fd00::9")
        );
        assert_eq!(
            (r.other_credentials, r.e2b, r.access_token.as_str()),
            (vec!["app".to_string()], true, "sgt1.t")
        );
        let r = ResolveRequest::decode(resolve_request(&t, None).as_slice()).unwrap();
        assert_eq!(r.client_address, "");
    }

    #[test]
    fn replies_become_decisions() {
        let route = reply(resolve_reply::Outcome::Route(Route {
            destination: "[fd00::1]:80".into(),
            strip_credentials: 5,
        }));
        assert_eq!(
            decision(0, Some(&route)),
            Decision::Route {
                destination: "[fd00::1]:80".into(),
                strip_credentials: 5,
            }
        );
        let deny = reply(resolve_reply::Outcome::Deny(WireDeny {
            status: 403,
            code: "forbidden".into(),
            message: "not yours".into(),
        }));
        assert_eq!(
            decision(0, Some(&deny)),
            Decision::Deny(Deny::new(DenyCode::Forbidden, "not yours"))
        );
        let forward = reply(resolve_reply::Outcome::Forward(WireForward {
            destination: "10.0.0.9:443".into(),
            authority: "gw2".into(),
            path_prefix: "/p".into(),
            upstream: "peer-tls".into(),
            headers: vec![Header {
                name: "x-t".into(),
                value: "v".into(),
            }],
            from_cluster: "c1".into(),
        }));
        assert_eq!(
            decision(0, Some(&forward)),
            Decision::Forward(Box::new(Forward {
                destination: "10.0.0.9:443".into(),
                authority: "gw2".into(),
                path_prefix: "/p".into(),
                upstream: PeerUpstream::Tls,
                headers: vec![("x-t".into(), "v".into())],
                from_cluster: "c1".into(),
            }))
        );
    }

    #[test]
    fn a_hold_is_an_answer_of_its_own_never_a_kept_one() {
        let hold = reply(resolve_reply::Outcome::Hold(
            sandgate_proto::resolver::v1::Hold {
                until_unix_ms: 1_800_000_000_123,
            },
        ));
        assert_eq!(
            answer(0, Some(&hold)),
            Answer::Hold {
                until: 1_800_000_000_123
            }
        );
        // Never kept, so never read back from a cache as one.
        assert_eq!(
            decision(0, Some(&hold)),
            Decision::Deny(unavailable("a kept answer cannot be a hold"))
        );
    }

    #[test]
    fn anything_else_is_503() {
        let unknown = reply(resolve_reply::Outcome::Deny(WireDeny {
            status: 200,
            code: "made_up".into(),
            message: String::new(),
        }));
        let empty_route = reply(resolve_reply::Outcome::Route(Route {
            destination: String::new(),
            strip_credentials: 0,
        }));
        let odd_upstream = reply(resolve_reply::Outcome::Forward(WireForward {
            destination: "10.0.0.9:443".into(),
            upstream: "sandboxes".into(),
            ..Default::default()
        }));
        for (status, body) in [
            (14, None),
            (4, None),
            (0, None),
            (0, Some(&b"\xff\xff\xff"[..])),
            (0, Some(&[][..])),
            (0, Some(unknown.as_slice())),
            (0, Some(empty_route.as_slice())),
            (0, Some(odd_upstream.as_slice())),
        ] {
            match decision(status, body) {
                Decision::Deny(d) => assert_eq!(d.code, DenyCode::ResolverUnavailable),
                other => panic!("{status} {body:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn filter_state_argument_layout() {
        let arg =
            SetEnvoyFilterStateArguments::decode(original_dst_argument("10.0.0.1:8080").as_slice())
                .unwrap();
        assert_eq!(arg.path, ORIGINAL_DST_KEY);
        assert_eq!(arg.value, "10.0.0.1:8080");
        assert_eq!(arg.span, 1);
    }
}
