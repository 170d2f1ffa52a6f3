//! Header values and paths that are not UTF-8 (issue 15, findings F1 and F5).
//!
//! Envoy accepts any byte 0x80–0xFF in a header value (obs-text) on HTTP/1.1 and HTTP/2. Such a
//! value once crashed the wasm filter inside its SDK, and Envoy then failed every in-flight
//! stream of that worker — another tenant's WebSockets and event streams included (F1); and
//! ext_proc let gateway-only headers through when their value was not UTF-8 (F5).
//!
//! Each test opens another tenant's (globex) WebSocket and event stream through the same Envoy
//! (one worker), sends every case over one protocol, and then asserts that each case got its
//! deliberate answer, that the WebSocket still echoes and the event stream never stalled, and
//! that Envoy logged no wasm VM failure. Every entry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use sandgate_tests::every_entry;
use sandgate_tests::gateway::{Entry, Gateway};
use sandgate_tests::http::{self, Response};
use sandgate_tests::raw;
use sandgate_tests::stack::{ACME_KEY, ADMIN_KEY, GLOBEX_KEY};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The byte every case carries: not UTF-8 anywhere in a value.
const BAD: &[u8] = b"\xff";
/// What the echo sandbox reports for a value that is exactly [`BAD`] (it decodes lossily).
const BAD_AS_ECHOED: &str = "\u{fffd}";
/// Longest pause between two events of a stream sending every 100 ms that still counts as
/// "kept delivering".
const MAX_GAP: Duration = Duration::from_millis(1500);
/// Every await on a stream is bounded by this.
const STEP: Duration = Duration::from_secs(5);
/// Envoy's counter of requests its codec refused (the listener's `stat_prefix` is sandgate).
const PROTOCOL_ERRORS: &str = "http.sandgate.downstream_cx_protocol_error";

#[derive(Clone, Copy, Debug)]
enum Proto {
    /// Bytes on a TcpStream, as written.
    Http1,
    /// h2c through hyper (`HeaderValue::from_bytes`), the `:path` swapped in as bytes.
    H2c,
}

struct Case {
    name: &'static str,
    /// The request target / `:path`, as bytes.
    path: Vec<u8>,
    headers: Vec<(&'static str, Vec<u8>)>,
    want: Want,
}

enum Want {
    /// sandgate's own refusal: status and JSON `code`.
    Refused(u16, &'static str),
    /// 200 from sb-a, which saw `path`, these headers with these (echoed) values, and none
    /// of the headers named in `absent` (exact names, or prefixes ending in `-`).
    Reached {
        path: String,
        seen: Vec<(&'static str, &'static str)>,
        absent: Vec<&'static str>,
    },
    /// Envoy's HTTP/1 codec refuses the request before any filter: 400 with its plain-text
    /// "Bad Request" (not sandgate's JSON), counted as a downstream protocol error.
    EnvoyCodec,
}

fn key() -> (&'static str, Vec<u8>) {
    ("x-api-key", ACME_KEY.as_bytes().to_vec())
}

fn h(name: &'static str, value: &[u8]) -> (&'static str, Vec<u8>) {
    (name, value.to_vec())
}

fn with(prefix: &[u8], tail: &[u8]) -> Vec<u8> {
    [prefix, tail].concat()
}

/// Every gateway-only header a routed request must have lost.
const GATEWAY_HEADERS: [&str; 5] = [
    "x-api-key",
    "agentbox-api-key",
    "x-sandbox-",
    "x-sandgate-",
    "x-envoy-original-dst-host",
];

fn reached(path: String, seen: Vec<(&'static str, &'static str)>) -> Want {
    Want::Reached {
        path,
        seen,
        absent: GATEWAY_HEADERS.to_vec(),
    }
}

fn cases(port_a: u16, proto: Proto) -> Vec<Case> {
    let a = format!("/sandboxes/sb-a/{port_a}");
    let p = |rest: &str| format!("{a}{rest}").into_bytes();
    let port = port_a.to_string().into_bytes();
    let mut cases = vec![
        Case {
            name: "no key, an ordinary header with a 0xFF byte (the original reproducer)",
            path: p("/x"),
            headers: vec![h("x-note", BAD)],
            want: Want::Refused(401, "missing_api_key"),
        },
        Case {
            name: "a valid key and an ordinary header with a 0xFF byte: it passes untouched",
            path: p("/x"),
            headers: vec![key(), h("x-note", BAD)],
            want: reached("/x".into(), vec![("x-note", BAD_AS_ECHOED)]),
        },
        Case {
            name: "x-api-key: 0xFF",
            path: p("/x"),
            headers: vec![h("x-api-key", BAD)],
            want: Want::Refused(401, "invalid_api_key"),
        },
        Case {
            name: "agentbox-api-key: 0xFF",
            path: p("/x"),
            headers: vec![h("agentbox-api-key", BAD)],
            want: Want::Refused(401, "invalid_api_key"),
        },
        Case {
            name: "no key header, authorization: Bearer 0xFF",
            path: p("/x"),
            headers: vec![h("authorization", &with(b"Bearer ", BAD))],
            want: Want::Refused(401, "invalid_api_key"),
        },
        Case {
            name: "a valid x-api-key and the app's own authorization: Basic 0xFF",
            path: p("/basic"),
            headers: vec![key(), h("authorization", &with(b"Basic ", BAD))],
            want: reached("/basic".into(), vec![("authorization", "Basic \u{fffd}")]),
        },
        Case {
            name: "x-sandbox-id: 0xFF (a valid key and port header)",
            path: b"/x".to_vec(),
            headers: vec![key(), h("x-sandbox-id", BAD), h("x-sandbox-port", &port)],
            want: Want::Refused(400, "invalid_sandbox_id"),
        },
        Case {
            name: "x-sandbox-id: 0xFF wins over a path naming sb-a",
            path: p("/x"),
            headers: vec![key(), h("x-sandbox-id", BAD)],
            want: Want::Refused(400, "invalid_sandbox_id"),
        },
        Case {
            name: "x-sandbox-id: sb-a, x-sandbox-port: 0xFF",
            path: b"/x".to_vec(),
            headers: vec![key(), h("x-sandbox-id", b"sb-a"), h("x-sandbox-port", BAD)],
            want: Want::Refused(400, "invalid_port"),
        },
        Case {
            name: "a valid request with x-sandbox-extra: 0xFF and x-sandgate-foo: 0xFF",
            path: p("/extra"),
            headers: vec![
                key(),
                h("x-sandbox-extra", BAD),
                h("x-sandgate-foo", BAD),
                h("x-note", b"plain"),
            ],
            want: reached("/extra".into(), vec![("x-note", "plain")]),
        },
    ];
    // A raw 0xFF byte in the path. What Envoy 1.40 does with it, as configured, depends on the
    // codec (found out on both entries before any sandgate fix):
    let in_id = [
        b"/sandboxes/sb-a".as_slice(),
        BAD,
        format!("/{port_a}/x").as_bytes(),
    ]
    .concat();
    let (after_port, in_id_want) = match proto {
        // HTTP/1.1: Envoy's codec refuses the request line itself (400 "Bad Request", a
        // downstream protocol error that closes the connection); no filter runs at all.
        Proto::Http1 => (Want::EnvoyCodec, Want::EnvoyCodec),
        // h2c: the HTTP/2 codec takes the `:path`, and path normalisation (`normalize_path`)
        // percent-encodes the byte before any filter reads it, so sandgate reads plain ASCII.
        // After the port it is sb-a's business: sb-a sees `/caf%FF`. In the id it makes
        // `sb-a%FF`, which sandgate refuses.
        Proto::H2c => (
            reached("/caf%FF".into(), vec![]),
            Want::Refused(400, "invalid_sandbox_id"),
        ),
    };
    cases.push(Case {
        name: "a raw 0xFF byte in the path after the port",
        path: with(&p("/caf"), BAD),
        headers: vec![key()],
        want: after_port,
    });
    cases.push(Case {
        name: "a raw 0xFF byte in the sandbox id",
        path: in_id,
        headers: vec![key()],
        want: in_id_want,
    });
    cases
}

async fn send(gw: &Gateway, proto: Proto, case: &Case) -> std::io::Result<Response> {
    let headers: Vec<raw::RawHeader<'_>> = case
        .headers
        .iter()
        .map(|(k, v)| (*k, v.as_slice()))
        .collect();
    let addr = gw.envoy.addr;
    match proto {
        Proto::Http1 => raw::h1(addr, &raw::h1_request("GET", &case.path, &headers)).await,
        Proto::H2c => match std::str::from_utf8(&case.path) {
            Ok(path) => raw::h2(addr, path, &headers).await,
            Err(_) => raw::h2_raw_path(addr, &case.path, &headers).await,
        },
    }
}

/// What is wrong with `r` as the answer to `case` (empty: nothing).
fn check(case: &Case, r: &Response) -> Vec<String> {
    let mut wrong = Vec::new();
    let echo: Option<Value> = serde_json::from_str(&r.body).ok();
    let served = echo
        .as_ref()
        .and_then(|e| e["sandbox"].as_str())
        .map(str::to_string);
    for k in [ACME_KEY, ADMIN_KEY, GLOBEX_KEY] {
        if r.body.contains(k) {
            wrong.push("a gateway key is in the answer".into());
        }
    }
    match &case.want {
        Want::EnvoyCodec => {
            if (r.status, r.body.as_str()) != (400, "Bad Request") {
                wrong.push(format!(
                    "{} {:?} (wanted Envoy's own 400 \"Bad Request\")",
                    r.status, r.body
                ));
            }
        }
        Want::Refused(status, code) => {
            if r.status != *status {
                wrong.push(format!("status {} (wanted {status})", r.status));
            }
            let got = echo.as_ref().and_then(|v| v["code"].as_str());
            if got != Some(*code) {
                wrong.push(format!("code {got:?} (wanted {code})"));
            }
            if let Some(s) = served {
                wrong.push(format!("reached sandbox {s}"));
            }
        }
        Want::Reached { path, seen, absent } => {
            if r.status != 200 {
                wrong.push(format!("status {} (wanted 200)", r.status));
            }
            if served.as_deref() != Some("sb-a") {
                wrong.push(format!("answered by {served:?} (wanted sb-a)"));
            }
            let Some(echo) = echo.filter(|_| served.is_some()) else {
                return wrong;
            };
            if echo["path"].as_str() != Some(path) {
                wrong.push(format!("sb-a saw path {} (wanted {path})", echo["path"]));
            }
            let headers = echo["headers"].as_object().cloned().unwrap_or_default();
            for (name, value) in seen {
                let got = headers.get(*name).and_then(Value::as_str);
                if got != Some(*value) {
                    wrong.push(format!("sb-a saw {name}: {got:?} (wanted {value:?})"));
                }
            }
            for name in headers.keys() {
                let leaked = absent.iter().any(|a| {
                    if a.ends_with('-') {
                        name.starts_with(a)
                    } else {
                        name == a
                    }
                });
                if leaked {
                    wrong.push(format!(
                        "sb-a saw the gateway header {name}: {}",
                        headers[name]
                    ));
                }
            }
        }
    }
    wrong
}

/// Another tenant's event stream, watched by a task: when each event arrived, and whether and
/// why it ended.
struct Events {
    arrivals: Arc<Mutex<Vec<Instant>>>,
    ended: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Events {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn open_events(gw: &Gateway, port: u16) -> Events {
    let resp = tokio::time::timeout(
        STEP,
        http::open(
            gw.envoy.addr,
            "GET",
            &format!("/sandboxes/sb-g/{port}/events"),
            &[
                ("x-api-key", GLOBEX_KEY),
                ("accept", "text/event-stream"),
                ("x-echo-events", "3000"),
                ("x-echo-interval-ms", "100"),
            ],
        ),
    )
    .await
    .expect("event stream opened within 5 s")
    .expect("event stream through envoy");
    assert_eq!(resp.status(), 200, "globex's event stream");
    let arrivals: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let ended: Arc<Mutex<Option<String>>> = Arc::default();
    let (a, e) = (Arc::clone(&arrivals), Arc::clone(&ended));
    let task = tokio::spawn(async move {
        let mut body = resp.into_body();
        loop {
            match tokio::time::timeout(STEP * 2, http::next_chunk(&mut body)).await {
                Ok(Some(chunk)) => {
                    let text = String::from_utf8_lossy(&chunk);
                    if !text.contains("\"sandbox\":\"sb-g\"") {
                        *e.lock() = Some(format!("an event not from sb-g: {text}"));
                        return;
                    }
                    let now = Instant::now();
                    a.lock()
                        .extend(std::iter::repeat_n(now, text.matches("data: ").count()));
                }
                Ok(None) => {
                    *e.lock() = Some("the stream ended (cut or reset)".into());
                    return;
                }
                Err(_) => {
                    *e.lock() = Some(format!("no event for {:?}", STEP * 2));
                    return;
                }
            }
        }
    });
    Events {
        arrivals,
        ended,
        task,
    }
}

impl Events {
    fn count(&self) -> usize {
        self.arrivals.lock().len()
    }

    /// Waits for at least `n` events (bounded).
    async fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + STEP;
        while self.count() < n {
            assert!(
                Instant::now() < deadline,
                "globex's stream sent {} events, wanted {n}; ended: {:?}",
                self.count(),
                self.ended.lock()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What went wrong with the stream between `from` and `to`: it ended, or paused longer
    /// than [`MAX_GAP`], or sent nothing after `to`.
    fn problems(&self, from: Instant, to: Instant) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(why) = self.ended.lock().clone() {
            out.push(format!("globex's event stream: {why}"));
        }
        let arrivals = self.arrivals.lock().clone();
        let mut last = from;
        for t in arrivals.iter().filter(|t| **t > from) {
            if t.duration_since(last) > MAX_GAP {
                out.push(format!(
                    "globex's event stream stalled for {:?} ({:?} into the cases)",
                    t.duration_since(last),
                    last.duration_since(from)
                ));
            }
            last = *t;
        }
        if !arrivals.iter().any(|t| *t > to) {
            out.push(format!(
                "globex's event stream sent nothing after the cases (last event {:?} into them)",
                last.duration_since(from)
            ));
        }
        out
    }
}

async fn websocket(gw: &Gateway, port: u16) -> Ws {
    let mut req = format!("ws://{}/sandboxes/sb-g/{port}/ws", gw.envoy.addr)
        .into_client_request()
        .expect("ws request");
    req.headers_mut()
        .insert("x-api-key", GLOBEX_KEY.parse().expect("ascii key"));
    let (ws, resp) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
        .await
        .expect("websocket upgrade within 5 s")
        .unwrap_or_else(|e| panic!("websocket upgrade through envoy: {e}"));
    assert_eq!(resp.status(), 101);
    ws
}

/// One message there and back, bounded; `Err` says what went wrong.
async fn round_trip(ws: &mut Ws, text: &str) -> Result<(), String> {
    tokio::time::timeout(STEP, ws.send(Message::text(text)))
        .await
        .map_err(|_| "send timed out".to_string())?
        .map_err(|e| format!("send failed: {e}"))?;
    let reply = tokio::time::timeout(STEP, ws.next())
        .await
        .map_err(|_| "no echo within 5 s".to_string())?
        .ok_or("the WebSocket closed")?
        .map_err(|e| format!("the WebSocket failed: {e}"))?;
    if reply != Message::text(text) {
        return Err(format!("echoed {reply:?}, not {text:?}"));
    }
    Ok(())
}

async fn bad_bytes(entry: Entry, proto: Proto) {
    let mut gw = Gateway::start(entry).await;
    let pa = gw.sandbox("acme", "pod-a", "sb-a", "127.0.0.11").await;
    let pg = gw.sandbox("globex", "pod-g", "sb-g", "127.0.0.13").await;

    // Another tenant's long-lived streams, open through the same worker.
    let mut ws = websocket(&gw, pg).await;
    round_trip(&mut ws, "before")
        .await
        .expect("globex's WebSocket");
    let events = open_events(&gw, pg).await;
    events.wait_for(2).await;

    let started = Instant::now();
    let mut failures = Vec::new();
    let mut ws_alive = true;
    for (i, case) in cases(pa, proto).iter().enumerate() {
        let codec_errors = raw::envoy_stat(&gw.envoy, PROTOCOL_ERRORS).await;
        match send(&gw, proto, case).await {
            Ok(r) => {
                let mut wrong = check(case, &r);
                let counted = raw::envoy_stat(&gw.envoy, PROTOCOL_ERRORS).await - codec_errors;
                let want = u64::from(matches!(case.want, Want::EnvoyCodec));
                if counted != want {
                    wrong.push(format!(
                        "{counted} downstream protocol errors (wanted {want})"
                    ));
                }
                if !wrong.is_empty() {
                    failures.push(format!(
                        "{}: {} — {} {:.300}",
                        case.name,
                        wrong.join(", "),
                        r.status,
                        r.body
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: no answer ({e})", case.name)),
        }
        // The other tenant's WebSocket, after every case: which one broke it, if any.
        if ws_alive && let Err(e) = round_trip(&mut ws, &format!("after case {i}")).await {
            failures.push(format!(
                "globex's WebSocket broke after \"{}\": {e}",
                case.name
            ));
            ws_alive = false;
        }
    }
    let finished = Instant::now();
    // A few more events must arrive after the last case.
    tokio::time::sleep(Duration::from_millis(500)).await;
    if ws_alive && let Err(e) = round_trip(&mut ws, "after every case").await {
        failures.push(format!("globex's WebSocket after every case: {e}"));
    }
    failures.extend(events.problems(started, finished));
    let log = raw::envoy_log(&gw.envoy).await;
    let crashes = raw::vm_failures(&log);
    if !crashes.is_empty() {
        failures.push(format!(
            "Envoy logged a wasm VM failure:\n  {}",
            crashes.join("\n  ")
        ));
    }
    assert!(
        failures.is_empty(),
        "{entry:?} over {proto:?}:\n{}",
        failures.join("\n")
    );
}

async fn over_http1(entry: Entry) {
    bad_bytes(entry, Proto::Http1).await
}

async fn over_h2c(entry: Entry) {
    bad_bytes(entry, Proto::H2c).await
}

every_entry!(over_http1, over_h2c);
