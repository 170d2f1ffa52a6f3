//! The demo sandbox: an HTTP server that tells the caller exactly what reached it.
//!
//! Public contract (README, "The demo"): every request is answered with JSON
//! `{"sandbox": <id>, "method": ..., "path": <path incl. query>, "headers": {name: value}}`;
//! WebSocket upgrades echo every message back; a request that accepts `text/event-stream`
//! gets that same JSON as SSE events, `x-echo-events` of them (default 3) every
//! `x-echo-interval-ms` (default 100), so tests can hold a stream open as long as they like.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use parking_lot::RwLock;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Which sandbox an echo server serves; shared so a test can re-assign a running server the
/// way a pre-warmed Pod is handed to another sandbox (open connections included). Empty: the
/// Pod serves no sandbox, and says so in every answer.
#[derive(Clone, Default)]
pub struct Identity(Arc<RwLock<String>>);

impl Identity {
    pub fn new(sandbox: &str) -> Identity {
        Identity(Arc::new(RwLock::new(sandbox.to_string())))
    }

    pub fn set(&self, sandbox: &str) {
        *self.0.write() = sandbox.to_string();
    }

    pub fn get(&self) -> String {
        self.0.read().clone()
    }
}

#[derive(Clone)]
struct Echo {
    sandbox: Identity,
}

/// Serves the echo app for `sandbox` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, sandbox: String) -> std::io::Result<()> {
    serve_as(listener, Identity::new(&sandbox)).await
}

/// Serves the echo app as whatever `identity` says at the time of each request.
pub async fn serve_as(listener: TcpListener, identity: Identity) -> std::io::Result<()> {
    let app = Router::new()
        .fallback(handle)
        .with_state(Echo { sandbox: identity });
    axum::serve(listener, app).await
}

/// What the echo server reports about a request.
pub fn describe(sandbox: &str, method: &str, path: &str, headers: &HeaderMap) -> Value {
    let mut map = BTreeMap::<String, String>::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        map.entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    json!({"sandbox": sandbox, "method": method, "path": path, "headers": map})
}

async fn handle(State(echo): State<Echo>, req: Request) -> Response {
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let report = describe(&echo.sandbox.get(), &method, &path, req.headers());
    let (mut parts, _body) = req.into_parts();
    if parts.headers.contains_key(header::UPGRADE) {
        return match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(ws) => ws.on_upgrade(websocket_echo),
            Err(rejection) => rejection.into_response(),
        };
    }
    let wants_sse = parts
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    if wants_sse {
        return sse(report, &parts.headers);
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        report.to_string(),
    )
        .into_response()
}

fn sse(report: Value, headers: &HeaderMap) -> Response {
    let number = |name: &str, default: u64| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(default)
    };
    let events = number("x-echo-events", 3);
    let interval = Duration::from_millis(number("x-echo-interval-ms", 100));
    let data = format!("data: {report}\n\n");
    let stream = futures::stream::iter(0..events).then(move |i| {
        let data = data.clone();
        async move {
            if i > 0 {
                tokio::time::sleep(interval).await;
            }
            Ok::<_, Infallible>(data)
        }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn websocket_echo(mut socket: WebSocket) {
    while let Some(Ok(msg)) = socket.recv().await {
        let reply = match msg {
            Message::Text(_) | Message::Binary(_) => msg,
            Message::Ping(p) => Message::Pong(p),
            Message::Pong(_) => continue,
            Message::Close(_) => break,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}
