//! The HTTP entry (axum): liveness, readiness, Prometheus metrics, the last-active JSON
//! handler for controllers that poll over HTTP (admin key required), and the tenant's token
//! endpoint, `POST /sandgate/v1/sandboxes/{id}/tokens`, which Envoy routes here (envoy.yaml):
//! a tenant's key mints an access token for one of its own sandboxes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jiff::Timestamp;
use sandgate_core::{Deny, DenyCode, RequestGrammar};
use serde::Deserialize;

use crate::control::unix_rfc3339;
use crate::decide::Gateway;
use crate::tokens::issue::{IssueError, TokenRequest};

/// Whether the resolver has a complete view of its sources (first informer syncs done).
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
pub struct HttpState {
    pub gateway: Arc<Gateway>,
    /// How the token endpoint reads the caller's key: as the gateway's entries do.
    pub grammar: Arc<RequestGrammar>,
    pub ready: Readiness,
}

/// Where the tenant's token endpoint lives (under Envoy's listener too).
pub const TOKEN_PATH: &str = "/sandgate/v1/sandboxes/{id}/tokens";

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/last-active", get(last_active))
        .route(TOKEN_PATH, post(mint_token))
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
    let gw = &s.gateway;
    gw.metrics.set_sizes(gw.routes.len(), gw.activity.len());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        gw.metrics.encode(),
    )
        .into_response()
}

async fn last_active(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(sandgate_core::bearer_token);
    if !presented.is_some_and(|k| s.gateway.keys.is_admin(k)) {
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
    axum::Json(s.gateway.activity.snapshot()).into_response()
}

/// The token endpoint's body; every field optional (an empty body is `{}`).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct TokenBody {
    /// The ports the token opens; none: every port.
    ports: Vec<u32>,
    /// Lifetime in seconds; 0 or none: the configured default (capped by the maximum).
    ttl_seconds: u64,
}

/// `POST /sandgate/v1/sandboxes/{id}/tokens` with the caller's key (any way the gateway reads
/// one): `{"token", "expires_at", "sandbox_id", "ports"}`, or a refusal in the gateway's JSON
/// shape. A tenant key mints for its own namespace's sandboxes only, bound to the key.
async fn mint_token(
    State(s): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let list: Vec<(&str, &[u8])> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    let key = match s.grammar.api_key_of(&list) {
        Ok(k) => k.unwrap_or_default(),
        Err(deny) => return refuse(&deny),
    };
    let principal = match s.gateway.keys.authenticate(key, Timestamp::now()) {
        Ok(p) => p,
        Err(deny) => return refuse(&deny),
    };
    let ask: TokenBody = if body.iter().all(u8::is_ascii_whitespace) {
        TokenBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(serde_json::json!({
                        "code": "invalid_request",
                        "message": format!("body: {e}"),
                    })),
                )
                    .into_response();
            }
        }
    };
    let request = TokenRequest {
        sandbox_id: &id,
        namespace: "",
        ports: &ask.ports,
        ttl: (ask.ttl_seconds > 0).then(|| Duration::from_secs(ask.ttl_seconds)),
    };
    match s.gateway.issue_token(&principal, Some(key), &request) {
        Ok(m) => (
            StatusCode::CREATED,
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(serde_json::json!({
                "token": m.token,
                "expires_at": unix_rfc3339(m.claims.expires_at),
                "sandbox_id": m.claims.sandbox_id,
                "ports": m.claims.ports,
            })),
        )
            .into_response(),
        Err(IssueError::Refused(deny)) => refuse(&deny),
        Err(IssueError::Unavailable(e)) => refuse(&Deny::new(
            DenyCode::ResolverUnavailable,
            format!("cannot mint access tokens: {e}"),
        )),
    }
}

fn refuse(deny: &Deny) -> Response {
    (
        StatusCode::from_u16(deny.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        deny.json_body(),
    )
        .into_response()
}
