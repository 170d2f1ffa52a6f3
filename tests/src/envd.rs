//! A stand-in for envd, the agent inside an E2B sandbox: just the HTTP API the E2B Python SDK
//! (PyPI `e2b`) uses for `Sandbox.is_running()`, `files.write()` and `files.read()`, so the real
//! SDK can be driven through the gateway (tests/tests/e2b_sdk.rs). Files live in memory, and
//! every request's method, path and headers are recorded, so a test can prove what reached the
//! sandbox (no gateway key, ever).
//!
//! The contract, as the SDK (e2b 2.63, `e2b/envd/api.py`, `e2b/sandbox_sync/main.py`,
//! `e2b/sandbox_sync/filesystem/filesystem.py`) relies on it:
//!
//! * `GET /health` → 204. The SDK counts any 2xx as running; a 502 (from the proxy in front of
//!   envd) as gone; anything else raises.
//! * `POST /files?path=<p>[&username=<u>]`, `multipart/form-data`, one part `file` per file
//!   whose filename is the file's path (`path` is sent too when there is exactly one) → 200
//!   `[{"name", "type": "file", "path"}]`. Also `application/octet-stream` (the body is the
//!   file, `path` required), which the SDK uses for streamed data or on request. The SDK's
//!   `gzip=True` (`Content-Encoding: gzip`) is refused with 400: nothing here needs it.
//! * `GET /files?path=<p>[&username=<u>]` → 200 with the bytes, 404
//!   `{"code": 404, "message"}` when there is no such file (the SDK: `FileNotFoundException`).
//!
//! Relative paths are taken relative to `/home/user`, as envd does for the default user.
//! Anything else is 404 `{"code", "message"}` (and recorded like the rest).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use serde_json::json;
use tokio::net::TcpListener;

use crate::fixtures::pod;
use crate::gateway::Gateway;
use crate::process::Outcome;
use crate::stack::{ADMIN_KEY, PROPAGATION};

/// envd's port in every E2B sandbox; the SDK's `ConnectionConfig.envd_port`, which it sends as
/// `E2b-Sandbox-Port` and puts in envd's URL.
pub const ENVD_PORT: u16 = 49983;

/// The largest upload the stand-in reads.
const BODY_LIMIT: usize = 64 << 20;

/// One request as it reached the stand-in.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// The path with the query.
    pub path: String,
    /// Every header, in order, names lower case, values lossily as text.
    pub headers: Vec<(String, String)>,
}

#[derive(Default)]
struct Inner {
    files: Mutex<BTreeMap<String, Vec<u8>>>,
    seen: Mutex<Vec<Seen>>,
}

/// The stand-in's state: its files and what it has seen. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Envd(Arc<Inner>);

impl Envd {
    pub fn new() -> Envd {
        Envd::default()
    }

    /// Serves the envd API on `listener` until the task is dropped.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        let app = Router::new().fallback(handle).with_state(self);
        axum::serve(listener, app).await
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.0.seen.lock().clone()
    }

    /// A file's content, by absolute path.
    pub fn file(&self, path: &str) -> Option<Vec<u8>> {
        self.0.files.lock().get(path).cloned()
    }

    /// Every (request, header name) whose header name or value contains `needle`, ignoring
    /// ASCII case: empty when `needle` never reached the stand-in in any header.
    pub fn headers_containing(&self, needle: &str) -> Vec<(String, String)> {
        let needle = needle.to_ascii_lowercase();
        self.requests()
            .into_iter()
            .flat_map(|r| {
                let what = format!("{} {}", r.method, r.path);
                r.headers
                    .into_iter()
                    .filter(|(n, v)| {
                        n.contains(&needle) || v.to_ascii_lowercase().contains(&needle)
                    })
                    .map(move |(n, _)| (what.clone(), n))
            })
            .collect()
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = json!({"code": status.as_u16(), "message": message.into()});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// envd's view of a path: relative ones are in the default user's home.
fn absolute(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/home/user/{path}")
    }
}

async fn handle(State(envd): State<Envd>, req: Request) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    envd.0.seen.lock().push(Seen {
        method: method.to_string(),
        path: path_and_query,
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
    });
    let query = match Query::<HashMap<String, String>>::try_from_uri(&uri) {
        Ok(Query(q)) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad query: {e}")),
    };
    match (method, uri.path()) {
        (Method::GET, "/health") => StatusCode::NO_CONTENT.into_response(),
        (Method::GET, "/files") => {
            let Some(path) = query.get("path") else {
                return error(StatusCode::BAD_REQUEST, "path is required");
            };
            let path = absolute(path);
            match envd.file(&path) {
                Some(content) => (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "application/octet-stream")],
                    content,
                )
                    .into_response(),
                None => error(
                    StatusCode::NOT_FOUND,
                    format!("path '{path}' does not exist"),
                ),
            }
        }
        (Method::POST, "/files") => {
            let headers = req.headers().clone();
            let body = match axum::body::to_bytes(req.into_body(), BODY_LIMIT).await {
                Ok(b) => b,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
            };
            upload(&envd, &query, &headers, body)
        }
        (_, path) => error(StatusCode::NOT_FOUND, format!("no envd route {path}")),
    }
}

fn upload(
    envd: &Envd,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING)
        && encoding.as_bytes() != b"identity"
    {
        return error(
            StatusCode::BAD_REQUEST,
            "the envd stand-in takes no Content-Encoding",
        );
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let written: Vec<(String, Vec<u8>)> = match mime.as_str() {
        "application/octet-stream" => {
            let Some(path) = query.get("path") else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "path is required for an octet-stream upload",
                );
            };
            vec![(absolute(path), body.to_vec())]
        }
        "multipart/form-data" => {
            let Some(boundary) = param(content_type, "boundary") else {
                return error(StatusCode::BAD_REQUEST, "multipart without a boundary");
            };
            let parts = match multipart(&body, &boundary) {
                Ok(parts) => parts,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("multipart: {e}")),
            };
            let files: Vec<_> = parts.into_iter().filter(|p| p.name == "file").collect();
            if files.is_empty() {
                return error(StatusCode::BAD_REQUEST, "no `file` part");
            }
            let single = files.len() == 1;
            let mut written = Vec::new();
            for part in files {
                // envd: with one file the `path` parameter names it, else each part's filename.
                let path = match (single, query.get("path"), part.filename) {
                    (true, Some(path), _) => path.clone(),
                    (_, _, Some(filename)) => filename,
                    _ => return error(StatusCode::BAD_REQUEST, "a file part without a path"),
                };
                written.push((absolute(&path), part.content));
            }
            written
        }
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unsupported Content-Type {other:?}"),
            );
        }
    };
    let mut infos = Vec::new();
    let mut files = envd.0.files.lock();
    for (path, content) in written {
        let name = path.rsplit('/').next().unwrap_or_default().to_string();
        infos.push(json!({"name": name, "type": "file", "path": path}));
        files.insert(path, content);
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::Value::Array(infos).to_string(),
    )
        .into_response()
}

/// One part of a `multipart/form-data` body.
struct Part {
    name: String,
    filename: Option<String>,
    content: Vec<u8>,
}

/// A parameter of a header value such as `form-data; name="file"; filename="/a"`, unquoted.
fn param(value: &str, name: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case(name).then(|| {
            let v = v.trim();
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
                .to_string()
        })
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses a `multipart/form-data` body (RFC 7578): enough for what httpx sends.
fn multipart(body: &[u8], boundary: &str) -> Result<Vec<Part>, String> {
    let delimiter = format!("--{boundary}");
    let start = find(body, delimiter.as_bytes()).ok_or("no opening boundary")?;
    let mut rest = &body[start + delimiter.len()..];
    let mut parts = Vec::new();
    loop {
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .ok_or("no CRLF after a boundary")?;
        let head_end = find(rest, b"\r\n\r\n").ok_or("a part without a blank line")?;
        let head = std::str::from_utf8(&rest[..head_end]).map_err(|_| "part headers not UTF-8")?;
        rest = &rest[head_end + 4..];
        let next = format!("\r\n{delimiter}");
        let end = find(rest, next.as_bytes()).ok_or("a part without a closing boundary")?;
        let content = rest[..end].to_vec();
        rest = &rest[end + next.len()..];
        let disposition = head
            .split("\r\n")
            .find_map(|line| {
                let (k, v) = line.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-disposition")
                    .then(|| v.trim().to_string())
            })
            .ok_or("a part without Content-Disposition")?;
        parts.push(Part {
            name: param(&disposition, "name").ok_or("a part without a name")?,
            filename: param(&disposition, "filename"),
            content,
        });
    }
}

/// A running envd stand-in serving as a sandbox's Pod; the server stops when this drops.
pub struct EnvdSandbox {
    pub envd: Envd,
    pub sandbox: String,
    /// Its Pod IP (a loopback address); it listens on [`ENVD_PORT`] there.
    pub ip: IpAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EnvdSandbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A loopback address of 127.64.0.0/10 no other test is likely to pick, varying per call.
fn random_loopback() -> IpAddr {
    let [a, b, c, ..] = crate::emulator::random_u64().to_le_bytes();
    IpAddr::V4(Ipv4Addr::new(127, 64 + (a & 63), b, c.clamp(1, 254)))
}

impl Gateway {
    /// Starts an envd stand-in on a fresh loopback address at envd's own port ([`ENVD_PORT`],
    /// so the SDK needs no port override), and publishes a running Pod `namespace/name` for
    /// `sandbox` at that address.
    pub async fn envd_sandbox(
        &mut self,
        namespace: &str,
        name: &str,
        sandbox: &str,
    ) -> EnvdSandbox {
        let mut tries = 0;
        let listener = loop {
            let ip = random_loopback();
            match TcpListener::bind(SocketAddr::new(ip, ENVD_PORT)).await {
                Ok(l) => break l,
                Err(e) if tries < 64 && e.kind() == std::io::ErrorKind::AddrInUse => tries += 1,
                Err(e) => panic!("bind the envd stand-in on {ip}:{ENVD_PORT}: {e}"),
            }
        };
        let ip = listener.local_addr().expect("envd addr").ip();
        let envd = Envd::new();
        let task = tokio::spawn({
            let envd = envd.clone();
            async move {
                let _ = envd.serve(listener).await;
            }
        });
        self.publish_envd_pod(namespace, name, sandbox, ip).await;
        EnvdSandbox {
            envd,
            sandbox: sandbox.to_string(),
            ip,
            task,
        }
    }

    /// Publishes a running Pod `namespace/name` for `sandbox` on a loopback address where
    /// nothing listens on [`ENVD_PORT`]: a sandbox whose envd port is not open (connections
    /// are refused). Returns that address.
    pub async fn closed_envd_sandbox(
        &mut self,
        namespace: &str,
        name: &str,
        sandbox: &str,
    ) -> IpAddr {
        let ip = loop {
            let ip = random_loopback();
            // Free now (a bind succeeds); closed at once.
            if std::net::TcpListener::bind(SocketAddr::new(ip, ENVD_PORT)).is_ok() {
                break ip;
            }
        };
        self.publish_envd_pod(namespace, name, sandbox, ip).await;
        ip
    }

    async fn publish_envd_pod(&mut self, namespace: &str, name: &str, sandbox: &str, ip: IpAddr) {
        let ip = ip.to_string();
        self.kube.emu.apply(
            pod(namespace, name)
                .sandbox(sandbox)
                .phase("running")
                .ip(&ip)
                .json(),
        );
        let want = Outcome::Route(format!("{ip}:{ENVD_PORT}"));
        let got = self
            .kube
            .resolver
            .resolve_until(ADMIN_KEY, sandbox, u32::from(ENVD_PORT), &want, PROPAGATION)
            .await;
        assert_eq!(got, want, "the resolver did not see sandbox {sandbox}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_httpx_sends() {
        let body = b"--b36c\r\nContent-Disposition: form-data; name=\"file\"; \
            filename=\"/home/user/a.txt\"\r\nContent-Type: text/plain\r\n\r\nline one\r\n\
            line two\n\r\n--b36c--\r\n";
        let parts = multipart(body, "b36c").unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].name, "file");
        assert_eq!(parts[0].filename.as_deref(), Some("/home/user/a.txt"));
        assert_eq!(parts[0].content, b"line one\r\nline two\n");
        assert_eq!(
            param("multipart/form-data; boundary=b36c", "boundary").as_deref(),
            Some("b36c")
        );
        assert!(multipart(b"--x\r\nno blank line", "x").is_err());
    }

    #[test]
    fn relative_paths_are_in_the_home() {
        assert_eq!(absolute("a/b"), "/home/user/a/b");
        assert_eq!(absolute("/etc/x"), "/etc/x");
    }
}
