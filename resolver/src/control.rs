//! The ControlPlaneService entry: how the controller pushes and evicts routes, reads activity
//! and mints access tokens.
//! Every RPC passes through the [`BearerGuard`], which demands the admin key in `authorization`:
//! `Bearer <admin key>`, or the bare key as the Go gateway accepted it.
//!
//! ## Two names, one service
//!
//! The Go gateway served this service as `sandbox.ctrlplane.v1.ControlPlaneService` (same
//! messages, same field numbers); ours is `sandgate.ctrlplane.v1.ControlPlaneService`. A Go
//! controller calls `/sandbox.ctrlplane.v1.ControlPlaneService/PushRoute` and would otherwise
//! get UNIMPLEMENTED. So the control listener mounts the one guarded service twice: under its
//! own name, and wrapped in [`Legacy`], which is registered under the Go name and rewrites the
//! request path to ours before handing it to the very same service value (a clone of an `Arc`:
//! the same [`ControlPlane`], route cache and guard). No second generated service and no copy
//! of the handlers: nothing can drift between the names. The rewrite sits on this service, not
//! on the listener, so it cannot reach anything else; every method of ours answers under the
//! Go name (PushClusterConfig too, which Go never had), and an unknown method is still
//! UNIMPLEMENTED under either name.

use std::sync::Arc;

use sandgate_core::validate_sandbox_id;
use sandgate_proto::ctrlplane::v1::control_plane_service_server::{
    ControlPlaneService, ControlPlaneServiceServer,
};
use sandgate_proto::ctrlplane::v1::{
    EvictRouteRequest, EvictRouteResponse, GetLastActiveRequest, GetLastActiveResponse,
    MintAccessTokenRequest, MintAccessTokenResponse, PushClusterConfigRequest,
    PushClusterConfigResponse, PushRouteRequest, PushRouteResponse, WakeRequest,
    WatchWakeRequestsRequest,
};
use tonic::codegen::{Context, Poll, Service, http};
use tonic::server::NamedService;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::clusters::Source;
use crate::decide::Gateway;
use crate::guard::{AdminKey, BearerGuard};
use crate::keys::Principal;
use crate::tokens::issue::{IssueError, TokenRequest};

pub struct ControlPlane {
    gateway: Arc<Gateway>,
}

/// The guarded service, as the control listener mounts it (under both names, see [`Legacy`]).
pub type Guarded = InterceptedService<ControlPlaneServiceServer<ControlPlane>, BearerGuard>;

pub fn server(gateway: Arc<Gateway>) -> Guarded {
    let guard = BearerGuard::new(
        "control",
        Arc::new(AdminKey(Arc::clone(&gateway.keys))),
        Arc::clone(&gateway.metrics),
    );
    InterceptedService::new(
        ControlPlaneServiceServer::new(ControlPlane { gateway }),
        guard.accepting_raw(),
    )
}

/// The Go gateway's name of this service.
pub const LEGACY_NAME: &str = "sandbox.ctrlplane.v1.ControlPlaneService";

/// A service mounted under [`LEGACY_NAME`] that hands every call to `S` with the path
/// rewritten to `S`'s own name (see the module documentation).
#[derive(Clone)]
pub struct Legacy<S>(pub S);

impl<S> NamedService for Legacy<S> {
    const NAME: &'static str = LEGACY_NAME;
}

impl<S: NamedService, B> Service<http::Request<B>> for Legacy<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if let Some(uri) = to_current::<S>(request.uri()) {
            *request.uri_mut() = uri;
        }
        self.0.call(request)
    }
}

/// `/<LEGACY_NAME>/<method>` as `/<S::NAME>/<method>`, the rest of the URI kept; `None` for
/// any other path (the router sends only legacy paths here).
fn to_current<S: NamedService>(uri: &http::Uri) -> Option<http::Uri> {
    let method = uri
        .path()
        .strip_prefix('/')?
        .strip_prefix(LEGACY_NAME)?
        .strip_prefix('/')?;
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(format!("/{}/{method}", S::NAME).parse().ok()?);
    http::Uri::from_parts(parts).ok()
}

/// Kubernetes object names: DNS-1123 subdomain (lowercase alphanumerics, '-', '.'), ≤ 253.
fn check_object_name(field: &str, v: &str) -> Result<(), Status> {
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && v.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && v.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric);
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "{field} must be a Kubernetes object name"
        )))
    }
}

type WakeStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<WakeRequest, Status>> + Send>>;

#[tonic::async_trait]
impl ControlPlaneService for ControlPlane {
    type WatchWakeRequestsStream = WakeStream;

    async fn watch_wake_requests(
        &self,
        _request: Request<WatchWakeRequestsRequest>,
    ) -> Result<Response<WakeStream>, Status> {
        use futures::StreamExt;
        let (pending, rx) = self.gateway.holds.subscribe();
        // A subscriber too slow for the channel misses wakes, not the stream: each missed
        // sandbox is woken again by its next request once its pending wake ages out.
        let live = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(wake) => return Some((Ok(wake), rx)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "a wake subscriber fell behind");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        let stream = futures::stream::iter(pending.into_iter().map(Ok)).chain(live);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn push_route(
        &self,
        request: Request<PushRouteRequest>,
    ) -> Result<Response<PushRouteResponse>, Status> {
        let r = request.get_ref();
        validate_sandbox_id(&r.sandbox_id).map_err(|d| Status::invalid_argument(d.message))?;
        check_object_name("namespace", &r.namespace)?;
        check_object_name("pod_name", &r.pod_name)?;
        self.gateway
            .routes
            .push(&r.sandbox_id, &r.namespace, &r.pod_name);
        tracing::debug!(
            sandbox = r.sandbox_id,
            namespace = r.namespace,
            pod = r.pod_name,
            "route pushed"
        );
        Ok(Response::new(PushRouteResponse {}))
    }

    async fn evict_route(
        &self,
        request: Request<EvictRouteRequest>,
    ) -> Result<Response<EvictRouteResponse>, Status> {
        let id = &request.get_ref().sandbox_id;
        validate_sandbox_id(id).map_err(|d| Status::invalid_argument(d.message))?;
        let evicted = self.gateway.routes.evict(id);
        tracing::debug!(sandbox = id, evicted, "route evicted");
        Ok(Response::new(EvictRouteResponse { evicted }))
    }

    async fn get_last_active(
        &self,
        _request: Request<GetLastActiveRequest>,
    ) -> Result<Response<GetLastActiveResponse>, Status> {
        Ok(Response::new(GetLastActiveResponse {
            last_active: self.gateway.activity.snapshot().into_iter().collect(),
        }))
    }

    async fn push_cluster_config(
        &self,
        request: Request<PushClusterConfigRequest>,
    ) -> Result<Response<PushClusterConfigResponse>, Status> {
        let n = self
            .gateway
            .clusters
            .apply(Source::ControlPlane, &request.get_ref().config_yaml)
            .map_err(Status::invalid_argument)?;
        Ok(Response::new(PushClusterConfigResponse {
            clusters: u32::try_from(n).unwrap_or(u32::MAX),
        }))
    }

    async fn mint_access_token(
        &self,
        request: Request<MintAccessTokenRequest>,
    ) -> Result<Response<MintAccessTokenResponse>, Status> {
        let r = request.get_ref();
        if !r.namespace.is_empty() {
            check_object_name("namespace", &r.namespace)?;
        }
        let ask = TokenRequest {
            sandbox_id: &r.sandbox_id,
            namespace: &r.namespace,
            ports: &r.ports,
            ttl: (r.ttl_seconds > 0).then(|| std::time::Duration::from_secs(r.ttl_seconds)),
        };
        let minted = self
            .gateway
            .issue_token(&Principal::Admin, None, &ask)
            .map_err(|e| match e {
                IssueError::Unavailable(e) => Status::failed_precondition(e.to_string()),
                IssueError::Refused(d) => {
                    Status::new(tonic::Code::from(d.code.grpc_code() as i32), d.message)
                }
            })?;
        Ok(Response::new(MintAccessTokenResponse {
            token: minted.token,
            expires_at: unix_rfc3339(minted.claims.expires_at),
            key_id: minted.claims.key_id,
        }))
    }
}

/// Unix seconds as RFC 3339 UTC (an out-of-range value, which no minted token has, as "").
pub fn unix_rfc3339(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the path it was called with.
    #[derive(Clone, Default)]
    struct Recorder(Arc<parking_lot::Mutex<Vec<String>>>);

    impl NamedService for Recorder {
        const NAME: &'static str = "sandgate.ctrlplane.v1.ControlPlaneService";
    }

    impl Service<http::Request<()>> for Recorder {
        type Response = ();
        type Error = std::convert::Infallible;
        type Future = std::future::Ready<Result<(), Self::Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<()>) -> Self::Future {
            self.0.lock().push(request.uri().to_string());
            std::future::ready(Ok(()))
        }
    }

    #[test]
    fn legacy_paths_map_onto_ours() {
        assert_eq!(
            <ControlPlaneServiceServer<ControlPlane> as NamedService>::NAME,
            Recorder::NAME,
            "the recorder stands for our service"
        );
        let seen = Recorder::default();
        let mut legacy = Legacy(seen.clone());
        for path in [
            "/sandbox.ctrlplane.v1.ControlPlaneService/PushRoute",
            "http://10.0.0.1:9003/sandbox.ctrlplane.v1.ControlPlaneService/GetLastActive",
            "/sandbox.ctrlplane.v1.ControlPlaneService/Nope",
            // Not legacy paths (the router never sends these here): left alone.
            "/sandbox.ctrlplane.v1.ControlPlaneServiceX/PushRoute",
            "/sandbox.ctrlplane.v1.ControlPlaneService",
            "/sandgate.ctrlplane.v1.ControlPlaneService/EvictRoute",
        ] {
            let called = legacy.call(http::Request::builder().uri(path).body(()).unwrap());
            assert_eq!(called.into_inner(), Ok(()));
        }
        assert_eq!(
            *seen.0.lock(),
            [
                "/sandgate.ctrlplane.v1.ControlPlaneService/PushRoute",
                "http://10.0.0.1:9003/sandgate.ctrlplane.v1.ControlPlaneService/GetLastActive",
                "/sandgate.ctrlplane.v1.ControlPlaneService/Nope",
                "/sandbox.ctrlplane.v1.ControlPlaneServiceX/PushRoute",
                "/sandbox.ctrlplane.v1.ControlPlaneService",
                "/sandgate.ctrlplane.v1.ControlPlaneService/EvictRoute",
            ]
        );
        assert_eq!(<Legacy<Recorder> as NamedService>::NAME, LEGACY_NAME);
    }

    #[test]
    fn object_names() {
        for ok in ["a", "pod-1", "a.b-c", "x".repeat(253).as_str()] {
            assert!(check_object_name("f", ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "-a", "a-", "a_b", "a/b", "x".repeat(254).as_str()] {
            assert!(check_object_name("f", bad).is_err(), "{bad}");
        }
    }
}
