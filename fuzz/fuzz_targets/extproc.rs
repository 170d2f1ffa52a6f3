//! The resolver's ext_proc entry: any bytes that decode as a ProcessingRequest get at most one
//! reply of the matching phase, and never panic the stream.
#![no_main]

use std::sync::LazyLock;

use envoy_types::pb::envoy::service::ext_proc::v3::ProcessingRequest;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as Phase;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Reply;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use sandgate_core::RequestGrammar;
use sandgate_resolver::extproc::ExtProc;

static EXTPROC: LazyLock<ExtProc> =
    LazyLock::new(|| ExtProc::new(sandgate_fuzz::gateway(), RequestGrammar::default()));

fuzz_target!(|data: &[u8]| {
    let Ok(m) = ProcessingRequest::decode(data) else {
        return;
    };
    let reply = futures::executor::block_on(EXTPROC.respond(&m, |_| {}));
    let (Some(phase), Some(reply)) = (&m.request, reply) else {
        assert!(m.request.is_none(), "a phase always gets a reply");
        return;
    };
    let matched = matches!(
        (phase, reply.response.as_ref()),
        (
            Phase::RequestHeaders(_),
            Some(Reply::RequestHeaders(_) | Reply::ImmediateResponse(_))
        ) | (Phase::ResponseHeaders(_), Some(Reply::ResponseHeaders(_)))
            | (Phase::RequestBody(_), Some(Reply::RequestBody(_)))
            | (Phase::ResponseBody(_), Some(Reply::ResponseBody(_)))
            | (Phase::RequestTrailers(_), Some(Reply::RequestTrailers(_)))
            | (Phase::ResponseTrailers(_), Some(Reply::ResponseTrailers(_)))
    );
    assert!(matched, "{phase:?} got {reply:?}");
});
