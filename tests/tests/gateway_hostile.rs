//! Hostile and odd requests through Envoy, table-driven: path traversal and encodings, NULs,
//! over-long ids and headers, repeated headers that disagree, ports that only look like
//! numbers, smuggled cluster prefixes, header case, HTTP/1.0, HTTP/2 and absolute-form targets.
//! Every row has one deliberate answer, and nothing reaches a sandbox it does not name.
//! Every entry.

use sandgate_tests::every_entry;
use sandgate_tests::gateway::{Entry, Gateway};
use sandgate_tests::http::{self, Response};
use sandgate_tests::stack::{ACME_KEY, GLOBEX_KEY};

const U: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

enum Send {
    /// An HTTP/1.1 GET through the test client, with the acme key added.
    Get(String, Vec<(&'static str, String)>),
    /// Bytes on the wire, as written.
    Raw(String),
    /// HTTP/2 with prior knowledge, with the acme key.
    H2(String),
}

struct Case {
    name: &'static str,
    send: Send,
    status: u16,
    /// The JSON refusal code, for sandgate's own refusals.
    code: Option<&'static str>,
    /// For a 200: the sandbox that must have answered, and the path it saw.
    reached: Option<(&'static str, &'static str)>,
}

fn get(path: String) -> Send {
    Send::Get(path, Vec::new())
}

fn refused(name: &'static str, send: Send, status: u16, code: &'static str) -> Case {
    Case {
        name,
        send,
        status,
        code: Some(code),
        reached: None,
    }
}

fn reaches(name: &'static str, send: Send, sandbox: &'static str, path: &'static str) -> Case {
    Case {
        name,
        send,
        status: 200,
        code: None,
        reached: Some((sandbox, path)),
    }
}

/// Envoy itself answers (its codec or limits), before sandgate sees the request.
fn envoy_refuses(name: &'static str, send: Send, status: u16) -> Case {
    Case {
        name,
        send,
        status,
        code: None,
        reached: None,
    }
}

async fn run(gw: &Gateway, send: &Send) -> Response {
    let addr = gw.envoy.addr;
    let result = match send {
        Send::Get(path, extra) => {
            let mut headers = vec![("x-api-key", ACME_KEY)];
            headers.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
            http::send(addr, "GET", path, &headers).await
        }
        Send::Raw(bytes) => http::raw(addr, bytes).await,
        Send::H2(path) => http::send_h2(addr, path, &[("x-api-key", ACME_KEY)]).await,
    };
    result.unwrap_or_else(|e| panic!("request failed: {e}"))
}

fn raw(target: &str, headers: &[(&str, &str)]) -> Send {
    let mut s = format!("GET {target} HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n");
    for (k, v) in headers {
        s.push_str(&format!("{k}: {v}\r\n"));
    }
    s.push_str("\r\n");
    Send::Raw(s)
}

async fn every_hostile_request_gets_its_deliberate_answer(entry: Entry) {
    let mut gw = Gateway::start(entry).await;
    let pa = gw.sandbox("acme", "pod-a", "sb-a", "127.0.0.11").await;
    let pb = gw.sandbox("acme", "pod-b", "sb-b", "127.0.0.12").await;
    let pg = gw.sandbox("globex", "pod-g", "sb-g", "127.0.0.13").await;
    let pu = gw.sandbox("acme", "pod-u", U, "127.0.0.14").await;
    let long_id = "a".repeat(129);
    let huge = "x".repeat(70 * 1024);
    let (a, port_a) = (format!("/sandboxes/sb-a/{pa}"), pa.to_string());

    let cases = vec![
        reaches(
            "dot segments are resolved before the gateway reads the path",
            get(format!("{a}/../../../sandboxes/sb-b/{pb}/x")),
            "sb-b",
            "/x",
        ),
        refused(
            "dot segments into another tenant's sandbox",
            get(format!("{a}/../../../sandboxes/sb-g/{pg}/x")),
            403,
            "forbidden",
        ),
        refused(
            "dot segments past the root",
            get(format!("{a}/../../../..")),
            400,
            "missing_sandbox_id",
        ),
        reaches(
            "merged slashes",
            get(format!("//sandboxes//sb-a//{pa}//m")),
            "sb-a",
            "/m",
        ),
        refused(
            "encoded slashes in the id",
            get(format!("/sandboxes/sb-a%2F..%2F..%2Fsb-g/{pg}/")),
            400,
            "invalid_sandbox_id",
        ),
        refused(
            "encoded dot segments are decoded and resolved too",
            get(format!("{a}/%2E%2E/%2E%2E/%2E%2E/sandboxes/sb-g/{pg}/")),
            403,
            "forbidden",
        ),
        envoy_refuses(
            "an encoded NUL (Envoy refuses it while normalising)",
            get(format!("/sandboxes/sb%00a/{pa}/")),
            400,
        ),
        refused(
            "an id longer than 128",
            get(format!("/sandboxes/{long_id}/{pa}/")),
            400,
            "invalid_sandbox_id",
        ),
        envoy_refuses(
            "headers over Envoy's limit",
            Send::Get(format!("{a}/"), vec![("x-filler", huge.clone())]),
            431,
        ),
        refused(
            "two id headers that disagree",
            raw(
                "/",
                &[
                    ("x-sandbox-id", "sb-a"),
                    ("x-sandbox-id", "sb-b"),
                    ("x-sandbox-port", &port_a),
                    ("x-api-key", ACME_KEY),
                ],
            ),
            400,
            "ambiguous_request",
        ),
        refused(
            "two port headers that disagree",
            raw(
                "/",
                &[
                    ("x-sandbox-id", "sb-a"),
                    ("x-sandbox-port", &port_a),
                    ("x-sandbox-port", "1"),
                    ("x-api-key", ACME_KEY),
                ],
            ),
            400,
            "ambiguous_request",
        ),
        refused(
            "two key headers that disagree",
            raw(
                &format!("{a}/"),
                &[("x-api-key", GLOBEX_KEY), ("x-api-key", ACME_KEY)],
            ),
            400,
            "ambiguous_request",
        ),
        reaches(
            "two id headers that agree",
            raw(
                "/same",
                &[
                    ("x-sandbox-id", "sb-a"),
                    ("x-sandbox-id", "sb-a"),
                    ("x-sandbox-port", &port_a),
                    ("x-api-key", ACME_KEY),
                ],
            ),
            "sb-a",
            "/same",
        ),
        refused(
            "a port with a plus sign",
            get(format!("/sandboxes/sb-a/+{pa}/")),
            400,
            "invalid_port",
        ),
        refused(
            "a port with an encoded space",
            get(format!("/sandboxes/sb-a/%20{pa}/")),
            400,
            "invalid_port",
        ),
        refused(
            "a port in Arabic-Indic digits",
            get("/sandboxes/sb-a/%D9%A1%D9%A2/".to_string()),
            400,
            "invalid_port",
        ),
        refused(
            "a port header with a plus sign",
            raw(
                "/",
                &[
                    ("x-sandbox-id", "sb-a"),
                    ("x-sandbox-port", &format!("+{pa}")),
                    ("x-api-key", ACME_KEY),
                ],
            ),
            400,
            "invalid_port",
        ),
        reaches(
            "spaces around a header value are not part of it (HTTP)",
            raw(
                "/ows",
                &[
                    ("x-sandbox-id", "sb-a"),
                    ("x-sandbox-port", &format!("   {pa}  ")),
                    ("x-api-key", ACME_KEY),
                ],
            ),
            "sb-a",
            "/ows",
        ),
        refused(
            "a cluster prefix smuggled onto a local sandbox's id",
            get(format!("/sandboxes/elsewhere.{U}/{pu}/")),
            502,
            "unknown_cluster",
        ),
        reaches(
            "upper-case header names",
            raw(
                "/upper",
                &[
                    ("X-SANDBOX-ID", "sb-a"),
                    ("X-Sandbox-Port", &port_a),
                    ("X-API-KEY", ACME_KEY),
                ],
            ),
            "sb-a",
            "/upper",
        ),
        envoy_refuses(
            "HTTP/1.0",
            Send::Raw(format!(
                "GET {a}/ HTTP/1.0\r\nx-api-key: {ACME_KEY}\r\n\r\n"
            )),
            426,
        ),
        reaches(
            "HTTP/2 with prior knowledge",
            Send::H2(format!("{a}/h2")),
            "sb-a",
            "/h2",
        ),
        reaches(
            "an absolute-form target: the path decides, not the host in it",
            raw(
                &format!("http://sb-g.example{a}/abs"),
                &[("x-api-key", ACME_KEY)],
            ),
            "sb-a",
            "/abs",
        ),
    ];

    let mut failures = Vec::new();
    for case in &cases {
        let r = run(&gw, &case.send).await;
        let mut wrong = Vec::new();
        if r.status != case.status {
            wrong.push(format!("status {} (wanted {})", r.status, case.status));
        }
        if let Some(code) = case.code {
            let got = serde_json::from_str::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|v| v["code"].as_str().map(str::to_string));
            if got.as_deref() != Some(code) {
                wrong.push(format!("code {got:?} (wanted {code})"));
            }
        }
        match case.reached {
            Some((sandbox, path)) => {
                let echo: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
                if echo["sandbox"] != sandbox {
                    wrong.push(format!(
                        "answered by {} (wanted {sandbox})",
                        echo["sandbox"]
                    ));
                }
                let seen = echo["path"].as_str().unwrap_or_default();
                if seen != path {
                    wrong.push(format!("the sandbox saw path {seen:?} (wanted {path})"));
                }
            }
            None if r.body.contains("\"sandbox\"") => {
                wrong.push("reached a sandbox".to_string());
            }
            None => {}
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "{}: {} — body {:.200}",
                case.name,
                wrong.join(", "),
                r.body
            ));
        }
    }
    assert!(failures.is_empty(), "{entry:?}:\n{}", failures.join("\n"));
}

every_entry!(every_hostile_request_gets_its_deliberate_answer);
