//! The HTTP entry (axum): liveness, readiness, Prometheus metrics, and the last-active JSON
//! handler for controllers that poll over HTTP (admin key required).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::activity::ActivityTracker;
use crate::cache::RouteCache;
use crate::keys::KeyStore;
use crate::metrics::Metrics;

/// Whether the resolver has a complete view of its sources (first informer syncs done).
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
pub struct HttpState {
    pub keys: Arc<KeyStore>,
    pub routes: Arc<RouteCache>,
    pub activity: Arc<ActivityTracker>,
    pub metrics: Arc<Metrics>,
    pub ready: Readiness,
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/last-active", get(last_active))
        .with_state(state)
}

async fn readyz(State(s): State<HttpState>) -> Response {
    if (s.ready)() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not synced yet\n").into_response()
    }
}

async fn metrics(State(s): State<HttpState>) -> Response {
    s.metrics.set_sizes(s.routes.len(), s.activity.len());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn last_active(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(sandgate_core::bearer_token);
    if !presented.is_some_and(|k| s.keys.is_admin(k)) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({
                "code": "invalid_api_key",
                "message": "an admin key is required: Authorization: Bearer <admin key>",
            })),
        )
            .into_response();
    }
    axum::Json(s.activity.snapshot()).into_response()
}
