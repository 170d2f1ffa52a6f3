//! The Resolve gRPC entry: the callout the wasm filter makes per request. A thin shell: it maps
//! the wire message to [`Facts`], asks the [`Gateway`], and maps the [`Decision`] back.

use std::sync::Arc;

use sandgate_core::Decision;
use sandgate_proto::resolver::v1::resolver_server::{Resolver, ResolverServer};
use sandgate_proto::resolver::v1::{
    Deny, Forward, Header, ResolveReply, ResolveRequest, Route, resolve_reply,
};
use tonic::{Request, Response, Status};

use crate::decide::{Facts, Gateway};

pub struct ResolveService {
    gateway: Arc<Gateway>,
}

pub fn server(gateway: Arc<Gateway>) -> ResolverServer<ResolveService> {
    ResolverServer::new(ResolveService { gateway })
}

/// The wire form of a decision.
pub fn reply(decision: Decision) -> ResolveReply {
    let outcome = match decision {
        Decision::Route { destination } => resolve_reply::Outcome::Route(Route { destination }),
        Decision::Forward(f) => resolve_reply::Outcome::Forward(Forward {
            destination: f.destination,
            authority: f.authority,
            path_prefix: f.path_prefix,
            upstream: f.upstream.as_str().to_string(),
            headers: f
                .headers
                .into_iter()
                .map(|(name, value)| Header { name, value })
                .collect(),
            from_cluster: f.from_cluster,
        }),
        Decision::Deny(d) => resolve_reply::Outcome::Deny(Deny {
            status: u32::from(d.status()),
            code: d.code.as_str().to_string(),
            message: d.message,
        }),
    };
    ResolveReply {
        outcome: Some(outcome),
    }
}

#[tonic::async_trait]
impl Resolver for ResolveService {
    async fn resolve(
        &self,
        request: Request<ResolveRequest>,
    ) -> Result<Response<ResolveReply>, Status> {
        let r = request.get_ref();
        let decision = self
            .gateway
            .decide(Facts {
                api_key: &r.api_key,
                sandbox_id: &r.sandbox_id,
                port: r.port,
                forwarded: r.forwarded,
                client: r.client_address.parse().ok(),
            })
            .await;
        Ok(Response::new(reply(decision)))
    }
}
