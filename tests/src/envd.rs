//! A stand-in for envd, the agent inside an E2B sandbox: just the HTTP API the E2B Python SDK
//! (PyPI `e2b`) uses for `Sandbox.is_running()`, `files.write()` and `files.read()`, and the one
//! RPC behind `commands.run("echo …")`, so the real SDK can be driven through the gateway
//! (tests/tests/e2b_sdk.rs). Files live in memory, and every request's method, path and headers
//! are recorded, so a test can prove what reached the sandbox (no gateway key, ever; the access
//! token it was handed).
//!
//! The contract, as the SDK (e2b 2.63, `e2b/envd/api.py`, `e2b/sandbox_sync/main.py`,
//! `e2b/sandbox_sync/filesystem/filesystem.py`, `e2b/sandbox_sync/commands/`) relies on it:
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
//! * `POST /process.Process/Start`, Connect RPC (server streaming) with the SDK's JSON codec
//!   (`e2b/envd/client_shared.py`): `Content-Type: application/connect+json`, the request one
//!   enveloped `StartRequest` (a 5-byte frame header — flags byte, big-endian length — then the
//!   JSON). This is `commands.run(cmd)`: the SDK asks for `/bin/bash -l -c <cmd>`. The stand-in
//!   runs nothing; it answers `echo <words>` as bash would (a start event with a pid, the words
//!   and a newline as one stdout data event, an end event with exit code 0), anything else with
//!   exit code 127 and a stderr line saying so, then the end-of-stream frame (flags `0x02`,
//!   `{}`). Protocol errors go in the end-of-stream frame too (`{"error": {"code",
//!   "message"}}`), as Connect streaming does.
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
    /// The scripts `Process.Start` was asked to run (`bash -l -c <script>`), in order.
    commands: Mutex<Vec<String>>,
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

    /// The commands the SDK started (`commands.run(cmd)`'s `cmd`), in order.
    pub fn commands(&self) -> Vec<String> {
        self.0.commands.lock().clone()
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

/// E2B's error body, which envd and the platform's API both answer with.
pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
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
        (Method::POST, PROCESS_START) => {
            let headers = req.headers().clone();
            let body = match axum::body::to_bytes(req.into_body(), BODY_LIMIT).await {
                Ok(b) => b,
                Err(e) => return error(StatusCode::BAD_REQUEST, format!("body: {e}")),
            };
            process_start(&envd, &headers, &body)
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

/// envd's `process.Process/Start`, the server-streaming RPC behind `commands.run`.
const PROCESS_START: &str = "/process.Process/Start";
/// What the SDK's codec (protobuf JSON) is called in a Connect streaming content type.
const CONNECT_JSON_STREAM: &str = "application/connect+json";
/// A Connect envelope's flag for the end-of-stream message; `0x01` is compression, which the
/// SDK never uses for envd (`ENVD_RPC_COMPRESSION`).
const END_STREAM: u8 = 0x02;
/// The pid of the first command; each later one gets the next.
const FIRST_PID: u32 = 1000;

/// One Connect envelope: the flags byte, the length big-endian, the message.
fn envelope(flags: u8, message: &[u8]) -> Vec<u8> {
    let len = u32::try_from(message.len()).expect("a message below 4 GiB");
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(flags);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// The messages of a Connect streaming request body, refusing compressed or truncated ones.
fn messages(body: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut rest = body;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let Some((head, after)) = rest.split_first_chunk::<5>() else {
            return Err("a truncated envelope header".into());
        };
        if head[0] != 0 {
            return Err(format!(
                "envelope flags {:#04x}: no compression here",
                head[0]
            ));
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if after.len() < len {
            return Err("a truncated envelope".into());
        }
        let (message, later) = after.split_at(len);
        out.push(message);
        rest = later;
    }
    Ok(out)
}

/// A Connect streaming answer: `events` (each a `StartResponse` as JSON), then the end of the
/// stream, carrying `error` (a Connect code and message) when the call failed. Always HTTP
/// 200, as Connect streaming answers once the call was routed.
fn connect_stream(events: &[serde_json::Value], error: Option<(&str, &str)>) -> Response {
    let mut body = Vec::new();
    for event in events {
        body.extend(envelope(0, event.to_string().as_bytes()));
    }
    let end = match error {
        Some((code, message)) => json!({"error": {"code": code, "message": message}}),
        None => json!({}),
    };
    body.extend(envelope(END_STREAM, end.to_string().as_bytes()));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, CONNECT_JSON_STREAM)],
        body,
    )
        .into_response()
}

/// `commands.run(cmd)`: the SDK starts `/bin/bash -l -c <cmd>`; the stand-in answers what
/// bash would for `echo` of plain words and runs nothing.
fn process_start(envd: &Envd, headers: &HeaderMap, body: &[u8]) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.eq_ignore_ascii_case(CONNECT_JSON_STREAM) {
        // Connect answers a content type it does not speak with 415 before any stream.
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("the envd stand-in speaks {CONNECT_JSON_STREAM} only, not {content_type:?}"),
        );
    }
    let request = match messages(body) {
        Ok(m) if m.len() == 1 => serde_json::from_slice::<serde_json::Value>(m[0])
            .map_err(|e| format!("StartRequest is no JSON: {e}")),
        Ok(m) => Err(format!("{} messages; Start takes one", m.len())),
        Err(e) => Err(e),
    };
    let request = match request {
        Ok(r) => r,
        Err(e) => return connect_stream(&[], Some(("invalid_argument", &e))),
    };
    let process = &request["process"];
    let args: Vec<&str> = process["args"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let script = match (process["cmd"].as_str(), args.as_slice()) {
        (Some("/bin/bash"), ["-l", "-c", script]) => script.to_string(),
        _ => {
            let message =
                format!("the envd stand-in starts `/bin/bash -l -c <cmd>` only: {process}");
            return connect_stream(&[], Some(("invalid_argument", &message)));
        }
    };
    let pid = {
        let mut commands = envd.0.commands.lock();
        commands.push(script.clone());
        FIRST_PID + commands.len() as u32 - 1
    };
    let (stream, output, exit_code) = match echo(&script) {
        Some(line) => ("stdout", line, 0),
        None => (
            "stderr",
            format!("envd stand-in: runs `echo <plain words>` only, not {script:?}\n"),
            127,
        ),
    };
    let events = [
        json!({"event": {"start": {"pid": pid}}}),
        json!({"event": {"data": {stream: base64(output.as_bytes())}}}),
        json!({"event": {"end": {
            "exitCode": exit_code,
            "exited": true,
            "status": format!("exit status {exit_code}"),
        }}}),
    ];
    connect_stream(&events, None)
}

/// What bash prints for `echo` followed by plain words (no quotes, no expansions, no
/// options); `None` for any other script.
fn echo(script: &str) -> Option<String> {
    let mut words = script.split_ascii_whitespace();
    if words.next() != Some("echo") {
        return None;
    }
    let words: Vec<&str> = words.collect();
    let plain = |w: &&str| {
        !w.starts_with('-')
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._,:/+=@%".contains(&b))
    };
    words.iter().all(plain).then(|| words.join(" ") + "\n")
}

/// Standard base64 with padding: how protobuf JSON spells `bytes` (the data events' output).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from_be_bytes([0, b[0], b[1], b[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
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
    fn envelopes_round_trip_and_refuse_what_the_sdk_never_sends() {
        let mut body = envelope(0, b"{\"a\":1}");
        body.extend(envelope(0, b""));
        assert_eq!(messages(&body).unwrap(), vec![&b"{\"a\":1}"[..], &b""[..]]);
        assert!(messages(&envelope(1, b"x")).is_err(), "compressed");
        assert!(
            messages(&body[..body.len() - 1]).is_err(),
            "truncated header"
        );
        assert!(
            messages(&envelope(0, b"xyz")[..6]).is_err(),
            "truncated message"
        );
    }

    #[test]
    fn echoes_plain_words_only() {
        assert_eq!(
            echo("echo hello  sandgate").as_deref(),
            Some("hello sandgate\n")
        );
        assert_eq!(echo("echo").as_deref(), Some("\n"));
        for script in ["ls", "echo $HOME", "echo 'a'", "echo -n a", "echo a; rm x"] {
            assert_eq!(echo(script), None, "{script}");
        }
    }

    #[test]
    fn base64_is_the_standard_alphabet_with_padding() {
        for (raw, text) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"hello\n", "aGVsbG8K"),
            (&[0xfb, 0xff], "+/8="),
        ] {
            assert_eq!(base64(raw), text);
        }
    }

    #[test]
    fn relative_paths_are_in_the_home() {
        assert_eq!(absolute("a/b"), "/home/user/a/b");
        assert_eq!(absolute("/etc/x"), "/etc/x");
    }
}
