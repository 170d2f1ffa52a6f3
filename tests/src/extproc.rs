//! Envoy's side of the ext_proc protocol, for tests that call the resolver as Envoy does.

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::ext_proc::v3::processing_request::Request as Phase;
use envoy_types::pb::envoy::service::ext_proc::v3::{HttpHeaders, ProcessingRequest};

/// The request-headers message Envoy sends for `headers` (values as `raw_value`, the whole
/// request in the headers).
pub fn request_headers(headers: &[(&str, &str)]) -> ProcessingRequest {
    ProcessingRequest {
        request: Some(Phase::RequestHeaders(HttpHeaders {
            headers: Some(HeaderMap {
                headers: headers
                    .iter()
                    .map(|(k, v)| HeaderValue {
                        key: (*k).into(),
                        raw_value: v.as_bytes().to_vec(),
                        ..Default::default()
                    })
                    .collect(),
            }),
            end_of_stream: true,
            ..Default::default()
        })),
        ..Default::default()
    }
}
