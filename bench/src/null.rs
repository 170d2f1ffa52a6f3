//! `sandgate-bench null`: the do-nothing servers of the floor. Resolve answers an empty reply
//! and ext_proc answers every message with its phase's empty CONTINUE, without reading a byte
//! of the request: what one gRPC round trip per request costs, with no gateway work in it.

use std::net::SocketAddr;
use std::pin::Pin;

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_server::{
    ExternalProcessor, ExternalProcessorServer,
};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as Phase;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Reply;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    BodyResponse, HeadersResponse, ProcessingRequest, ProcessingResponse, TrailersResponse,
};
use futures::{Stream, StreamExt};
use sandgate_proto::resolver::v1::resolver_server::{Resolver, ResolverServer};
use sandgate_proto::resolver::v1::{
    Generations, HitReport, HitReportReply, ResolveReply, ResolveRequest, WaitManyReply,
    WaitManyRequest, WatchGenerationsRequest,
};
use tonic::{Request, Response, Status, Streaming};

struct NullResolver;

#[tonic::async_trait]
impl Resolver for NullResolver {
    async fn resolve(&self, _: Request<ResolveRequest>) -> Result<Response<ResolveReply>, Status> {
        Ok(Response::new(ResolveReply::default()))
    }

    type WatchGenerationsStream = Pin<Box<dyn Stream<Item = Result<Generations, Status>> + Send>>;

    // A floor keeps nothing: without generations a filter's cache stays off.
    async fn watch_generations(
        &self,
        _: Request<WatchGenerationsRequest>,
    ) -> Result<Response<Self::WatchGenerationsStream>, Status> {
        Err(Status::unimplemented(
            "the null resolver has no generations",
        ))
    }

    async fn report_hits(&self, _: Request<HitReport>) -> Result<Response<HitReportReply>, Status> {
        Ok(Response::new(HitReportReply {}))
    }

    // Nothing is ever held by a server that answers nothing.
    async fn wait_many(
        &self,
        _: Request<WaitManyRequest>,
    ) -> Result<Response<WaitManyReply>, Status> {
        Ok(Response::new(WaitManyReply::default()))
    }
}

struct NullExtProc;

fn continue_for(phase: Option<Phase>) -> Option<Reply> {
    Some(match phase? {
        Phase::RequestHeaders(_) => Reply::RequestHeaders(HeadersResponse::default()),
        Phase::ResponseHeaders(_) => Reply::ResponseHeaders(HeadersResponse::default()),
        Phase::RequestBody(_) => Reply::RequestBody(BodyResponse::default()),
        Phase::ResponseBody(_) => Reply::ResponseBody(BodyResponse::default()),
        Phase::RequestTrailers(_) => Reply::RequestTrailers(TrailersResponse::default()),
        Phase::ResponseTrailers(_) => Reply::ResponseTrailers(TrailersResponse::default()),
    })
}

type Replies = Pin<Box<dyn Stream<Item = Result<ProcessingResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalProcessor for NullExtProc {
    type ProcessStream = Replies;

    async fn process(
        &self,
        request: Request<Streaming<ProcessingRequest>>,
    ) -> Result<Response<Replies>, Status> {
        let replies = request.into_inner().filter_map(|m| {
            std::future::ready(match m {
                Ok(m) => continue_for(m.request).map(|r| {
                    Ok(ProcessingResponse {
                        response: Some(r),
                        ..Default::default()
                    })
                }),
                Err(e) => Some(Err(e)),
            })
        });
        Ok(Response::new(Box::pin(replies)))
    }
}

pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    tonic::transport::Server::builder()
        .add_service(ResolverServer::new(NullResolver))
        .add_service(ExternalProcessorServer::new(NullExtProc))
        .serve(listen)
        .await?;
    Ok(())
}
