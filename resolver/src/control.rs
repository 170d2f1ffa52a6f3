//! The ControlPlaneService entry: how the controller pushes and evicts routes and reads activity.
//! Every RPC passes through the [`BearerGuard`], which demands `authorization: Bearer <admin key>`.

use std::sync::Arc;

use sandgate_core::validate_sandbox_id;
use sandgate_proto::ctrlplane::v1::control_plane_service_server::{
    ControlPlaneService, ControlPlaneServiceServer,
};
use sandgate_proto::ctrlplane::v1::{
    EvictRouteRequest, EvictRouteResponse, GetLastActiveRequest, GetLastActiveResponse,
    PushClusterConfigRequest, PushClusterConfigResponse, PushRouteRequest, PushRouteResponse,
};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::activity::ActivityTracker;
use crate::cache::RouteCache;
use crate::clusters::{ClusterStore, Source};
use crate::guard::{AdminKey, BearerGuard};
use crate::keys::KeyStore;
use crate::metrics::Metrics;

pub struct ControlPlane {
    routes: Arc<RouteCache>,
    activity: Arc<ActivityTracker>,
    clusters: Arc<ClusterStore>,
}

pub fn server(
    routes: Arc<RouteCache>,
    activity: Arc<ActivityTracker>,
    clusters: Arc<ClusterStore>,
    keys: Arc<KeyStore>,
    metrics: Arc<Metrics>,
) -> InterceptedService<ControlPlaneServiceServer<ControlPlane>, BearerGuard> {
    InterceptedService::new(
        ControlPlaneServiceServer::new(ControlPlane {
            routes,
            activity,
            clusters,
        }),
        BearerGuard::new("control", Arc::new(AdminKey(keys)), metrics),
    )
}

/// Kubernetes object names: DNS-1123 subdomain (lowercase alphanumerics, '-', '.'), ≤ 253.
fn check_object_name(field: &str, v: &str) -> Result<(), Status> {
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && v.as_bytes()[0].is_ascii_alphanumeric()
        && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "{field} must be a Kubernetes object name"
        )))
    }
}

#[tonic::async_trait]
impl ControlPlaneService for ControlPlane {
    async fn push_route(
        &self,
        request: Request<PushRouteRequest>,
    ) -> Result<Response<PushRouteResponse>, Status> {
        let r = request.get_ref();
        validate_sandbox_id(&r.sandbox_id).map_err(|d| Status::invalid_argument(d.message))?;
        check_object_name("namespace", &r.namespace)?;
        check_object_name("pod_name", &r.pod_name)?;
        self.routes.push(&r.sandbox_id, &r.namespace, &r.pod_name);
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
        let evicted = self.routes.evict(id);
        tracing::debug!(sandbox = id, evicted, "route evicted");
        Ok(Response::new(EvictRouteResponse { evicted }))
    }

    async fn get_last_active(
        &self,
        _request: Request<GetLastActiveRequest>,
    ) -> Result<Response<GetLastActiveResponse>, Status> {
        Ok(Response::new(GetLastActiveResponse {
            last_active: self.activity.snapshot().into_iter().collect(),
        }))
    }

    async fn push_cluster_config(
        &self,
        request: Request<PushClusterConfigRequest>,
    ) -> Result<Response<PushClusterConfigResponse>, Status> {
        let n = self
            .clusters
            .apply(Source::ControlPlane, &request.get_ref().config_yaml)
            .map_err(Status::invalid_argument)?;
        Ok(Response::new(PushClusterConfigResponse {
            clusters: u32::try_from(n).unwrap_or(u32::MAX),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
