//! A stand-in for the E2B-compatible control API of a platform in front of sandgate: just the
//! endpoint the E2B Python SDK's `Sandbox.connect(sandbox_id, …)` calls, answered with access
//! tokens the resolver mints (`ControlPlaneService.MintAccessToken`) — how such a platform hands
//! the SDK a credential for one sandbox instead of a tenant key. It owns the platform's side of
//! that hand-over: which sandboxes it knows (and in which namespace), the API key it demands,
//! what it asks the resolver for, and a record of every call, so a test can compare what the
//! sandbox saw with what was minted (tests/tests/e2b_sdk.rs).
//!
//! The contract, as the SDK (e2b 2.63: `e2b/sandbox_sync/sandbox_api.py` `_cls_connect`,
//! `e2b/api/client/api/sandboxes/post_v_2_sandboxes_sandbox_id_connect.py`,
//! `e2b/api/client/models/sandbox.py`, `e2b/api/__init__.py` `ApiClient`) relies on it:
//!
//! * `POST /v2/sandboxes/{sandboxID}/connect`, `Content-Type: application/json`, body
//!   `ConnectSandboxV2` — `{}` or `{"timeout": <seconds>}` (and `"memory"` for a resume) — with
//!   the API key in `X-API-KEY` (the SDK's own spelling; any case is the same header).
//! * 200 (a running sandbox; E2B answers 201 for one it resumed) with the `Sandbox` model: the
//!   SDK requires `templateID`, `sandboxID`, `clientID`, `envdVersion`, and reads
//!   `envdAccessToken` (sent as `X-Access-Token` on every envd request), `trafficAccessToken`
//!   (exposed as `sandbox.traffic_access_token` for the sandbox's own ports) and `domain`.
//! * Errors are the `Error` model `{"code": <status>, "message"}`: 401 for a missing or wrong
//!   key (the SDK's `AuthenticationException`), 404 for a sandbox it does not know
//!   (`SandboxNotFoundException`), 500 when the resolver will not mint (`SandboxException`
//!   with the resolver's status in the message).
//!
//! Tokens: `envdAccessToken` opens envd's port only ([`ENVD_PORT`]): it is the one token the
//! sandbox itself sees (the gateway passes `X-Access-Token` on, for envd to check), so whatever
//! runs in the sandbox and reads it gains no other port. `trafficAccessToken` opens every port
//! (an empty port list): it is for the sandbox's own services, whose ports the platform does not
//! know. Both name the sandbox's namespace explicitly (the platform knows its tenant) and live
//! as long as the connect's `timeout` asks (the resolver's default when it asks none). Any other
//! request is 404 and recorded like the rest.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use sandgate_proto::ctrlplane::v1::control_plane_service_client::ControlPlaneServiceClient;
use sandgate_proto::ctrlplane::v1::{MintAccessTokenRequest, MintAccessTokenResponse};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::envd::{ENVD_PORT, error};
use crate::gateway::Gateway;
use crate::stack::ADMIN_KEY;

/// The envd version the stand-in reports: a current envd (no default-user parameter, octet
/// stream uploads); tests/e2b/drive.py assumes the same for the sandboxes it builds itself.
pub const ENVD_VERSION: &str = "0.6.4";
/// The template every sandbox reports; the SDK requires the field and reads nothing from it.
pub const TEMPLATE_ID: &str = "base";
/// E2B's legacy `clientID`, a constant the SDK requires and ignores.
pub const CLIENT_ID: &str = "6532622b";

/// The largest request body the stand-in reads (a connect body is a few bytes).
const BODY_LIMIT: usize = 64 << 10;

/// One MintAccessToken call the stand-in made, and its answer (the token or the status).
#[derive(Debug, Clone)]
pub struct Mint {
    pub request: MintAccessTokenRequest,
    pub answer: Result<MintAccessTokenResponse, String>,
}

/// One request as it reached the stand-in, and what it answered.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    /// The path with the query.
    pub path: String,
    /// The API key header's value, when there was one.
    pub api_key: Option<String>,
    pub body: String,
    pub status: u16,
    /// What the stand-in asked the resolver for while answering.
    pub mints: Vec<Mint>,
}

/// The tokens one connect handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokens {
    /// `envdAccessToken`.
    pub envd: String,
    /// `trafficAccessToken`.
    pub traffic: String,
}

/// A sandbox the platform knows.
struct Known {
    namespace: String,
    /// The sandbox the tokens are minted for: the sandbox itself, unless a test makes the
    /// platform hand out another's.
    token_sandbox: String,
}

struct Inner {
    api_key: String,
    domain: String,
    control: SocketAddr,
    admin_key: String,
    sandboxes: Mutex<HashMap<String, Known>>,
    calls: Mutex<Vec<Call>>,
    handed_out: Mutex<HashMap<String, Tokens>>,
}

/// A running stand-in on a free loopback port; the server stops when this drops.
pub struct E2bApi {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for E2bApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl E2bApi {
    /// Serves the API on 127.0.0.1:<free port>, demanding `api_key` from the SDK, reporting
    /// `domain` as every sandbox's, and minting through the ControlPlaneService at `control`
    /// with `admin_key`.
    pub async fn start(
        control: SocketAddr,
        admin_key: &str,
        api_key: &str,
        domain: &str,
    ) -> E2bApi {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the e2b api stand-in");
        let addr = listener.local_addr().expect("e2b api addr");
        let inner = Arc::new(Inner {
            api_key: api_key.into(),
            domain: domain.into(),
            control,
            admin_key: admin_key.into(),
            sandboxes: Mutex::default(),
            calls: Mutex::default(),
            handed_out: Mutex::default(),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&inner));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        E2bApi { addr, inner, task }
    }

    /// The API's base URL, the SDK's `api_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes `sandbox` (in `namespace`) known: a connect to it gets tokens for it.
    pub fn add_sandbox(&self, sandbox: &str, namespace: &str) {
        self.add_sandbox_with_tokens_of(sandbox, namespace, sandbox);
    }

    /// Makes `sandbox` known, but a connect to it gets tokens minted for `token_sandbox`: a
    /// platform that mixes its sandboxes up, or a client holding another sandbox's token.
    pub fn add_sandbox_with_tokens_of(&self, sandbox: &str, namespace: &str, token_sandbox: &str) {
        self.inner.sandboxes.lock().insert(
            sandbox.into(),
            Known {
                namespace: namespace.into(),
                token_sandbox: token_sandbox.into(),
            },
        );
    }

    /// Every request so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.calls.lock().clone()
    }

    /// The tokens the latest successful connect to `sandbox` handed out.
    pub fn tokens(&self, sandbox: &str) -> Option<Tokens> {
        self.inner.handed_out.lock().get(sandbox).cloned()
    }
}

impl Gateway {
    /// The platform's E2B API in front of this gateway: minting through this gateway's
    /// resolver with the admin key, demanding `api_key` from the SDK, reporting the demo's
    /// E2B domain.
    pub async fn e2b_api(&self, api_key: &str) -> E2bApi {
        E2bApi::start(
            self.kube.resolver.control,
            ADMIN_KEY,
            api_key,
            "sandgate.test",
        )
        .await
    }
}

async fn handle(State(api): State<Arc<Inner>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let route = req.uri().path().to_string();
    let api_key = req
        .headers()
        .get("x-api-key")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let body = match axum::body::to_bytes(req.into_body(), BODY_LIMIT).await {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
    };
    let mut mints = Vec::new();
    let response = answer(&api, &method, &route, api_key.as_deref(), &body, &mut mints).await;
    api.calls.lock().push(Call {
        method: method.to_string(),
        path,
        api_key,
        body,
        status: response.status().as_u16(),
        mints,
    });
    response
}

async fn answer(
    api: &Inner,
    method: &Method,
    route: &str,
    api_key: Option<&str>,
    body: &str,
    mints: &mut Vec<Mint>,
) -> Response {
    let connect = route
        .strip_prefix("/v2/sandboxes/")
        .and_then(|rest| rest.strip_suffix("/connect"))
        .filter(|id| !id.is_empty() && !id.contains('/'));
    let Some(sandbox) = connect.filter(|_| method == Method::POST) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("the e2b api stand-in has no {method} {route}"),
        );
    };
    // The key first, as the API does: an unauthenticated caller learns nothing of sandboxes.
    if api_key != Some(api.api_key.as_str()) {
        return error(StatusCode::UNAUTHORIZED, "Invalid API key");
    }
    let timeout = match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(o)) => o.get("timeout").and_then(Value::as_u64),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "the body must be a ConnectSandboxV2 JSON object",
            );
        }
    };
    let (namespace, token_sandbox) = {
        let known = api.sandboxes.lock();
        let Some(k) = known.get(sandbox) else {
            return error(
                StatusCode::NOT_FOUND,
                format!("sandbox \"{sandbox}\" doesn't exist or you don't have access to it"),
            );
        };
        (k.namespace.clone(), k.token_sandbox.clone())
    };
    let mint = |ports: Vec<u32>| MintAccessTokenRequest {
        sandbox_id: token_sandbox.clone(),
        namespace: namespace.clone(),
        ports,
        ttl_seconds: timeout.unwrap_or(0),
    };
    let mut tokens = Vec::new();
    for request in [mint(vec![u32::from(ENVD_PORT)]), mint(Vec::new())] {
        let answer = mint_access_token(api, request.clone()).await;
        mints.push(Mint {
            request,
            answer: answer.clone(),
        });
        match answer {
            Ok(minted) => tokens.push(minted.token),
            Err(status) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("minting an access token for \"{sandbox}\": {status}"),
                );
            }
        }
    }
    let [envd, traffic] = <[String; 2]>::try_from(tokens).expect("two tokens");
    api.handed_out.lock().insert(
        sandbox.to_string(),
        Tokens {
            envd: envd.clone(),
            traffic: traffic.clone(),
        },
    );
    let body = json!({
        "templateID": TEMPLATE_ID,
        "sandboxID": sandbox,
        "clientID": CLIENT_ID,
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": envd,
        "trafficAccessToken": traffic,
        "domain": api.domain,
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// One MintAccessToken call as the admin; the error is the status, as text.
async fn mint_access_token(
    api: &Inner,
    request: MintAccessTokenRequest,
) -> Result<MintAccessTokenResponse, String> {
    let mut client = ControlPlaneServiceClient::connect(format!("http://{}", api.control))
        .await
        .map_err(|e| format!("connect to the control plane: {e}"))?;
    let mut request = tonic::Request::new(request);
    let bearer = format!("Bearer {}", api.admin_key)
        .parse()
        .map_err(|e| format!("admin key: {e}"))?;
    request.metadata_mut().insert("authorization", bearer);
    client
        .mint_access_token(request)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}
