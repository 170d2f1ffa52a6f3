//! No gateway key reaches a sandbox (issue 15, finding F4).
//!
//! A valid gateway key once reached the sandbox in `authorization`: the caller's own key sent as
//! `Bearer<TAB>key` (only a single space was recognised), and, when `x-api-key` authenticated,
//! an `authorization: Bearer` carrying the admin key or another tenant's key passed untouched.
//! Whatever authenticates, no header value a sandbox sees may hold any gateway key; an app's own
//! token still passes, and so does its own `x-api-key` when the key came in `agentbox-api-key`.
//! Sent as bytes on the wire (HTTP/1.1: some clients refuse tabs) and over
//! h2c. Every entry.

use sandgate_tests::every_entry;
use sandgate_tests::gateway::{Entry, Gateway};
use sandgate_tests::http::Response;
use sandgate_tests::raw;
use sandgate_tests::stack::{ACME_KEY, ADMIN_KEY, GLOBEX_KEY};
use serde_json::Value;

const KEYS: [(&str, &str); 3] = [
    ("acme", ACME_KEY),
    ("admin", ADMIN_KEY),
    ("globex", GLOBEX_KEY),
];

struct Case {
    name: String,
    headers: Vec<(&'static str, String)>,
    /// For the app's own credential: the header sb-a must see, and its value.
    passes: Option<(&'static str, &'static str)>,
}

fn with_x_api_key(authorization: String) -> Case {
    Case {
        name: format!("x-api-key and authorization {authorization:?}"),
        headers: vec![
            ("x-api-key", ACME_KEY.into()),
            ("authorization", authorization),
        ],
        passes: None,
    }
}

fn bearer_only(authorization: String) -> Case {
    Case {
        name: format!("only authorization {authorization:?}"),
        headers: vec![("authorization", authorization)],
        passes: None,
    }
}

fn cases() -> Vec<Case> {
    let mut cases: Vec<Case> = [
        format!("Bearer {ACME_KEY}"),
        format!("Bearer\t{ACME_KEY}"),
        format!("bearer   {ACME_KEY}"),
        format!("BEARER {ACME_KEY}"),
        format!("Bearer {ADMIN_KEY}"),
        format!("Bearer\t{ADMIN_KEY}"),
        format!("Bearer {GLOBEX_KEY}"),
        format!("bearer {GLOBEX_KEY}"),
    ]
    .into_iter()
    .map(with_x_api_key)
    .collect();
    cases.extend(
        [
            format!("Bearer {ACME_KEY}"),
            format!("Bearer\t{ACME_KEY}"),
            format!("bEaReR   {ACME_KEY}"),
        ]
        .into_iter()
        .map(bearer_only),
    );
    cases.push(Case {
        name: "x-api-key and the app's own Bearer token".into(),
        headers: vec![
            ("x-api-key", ACME_KEY.into()),
            ("authorization", "Bearer app-token-123".into()),
        ],
        passes: Some(("authorization", "Bearer app-token-123")),
    });
    // The key in agentbox-api-key: x-api-key is then the app's own (issue 16), unless it holds
    // another gateway key.
    cases.push(Case {
        name: "agentbox-api-key and the app's own x-api-key".into(),
        headers: vec![
            ("agentbox-api-key", ACME_KEY.into()),
            ("x-api-key", "app-key-7".into()),
        ],
        passes: Some(("x-api-key", "app-key-7")),
    });
    for other in [ADMIN_KEY, GLOBEX_KEY, ACME_KEY] {
        cases.push(Case {
            name: "agentbox-api-key and a gateway key in x-api-key".into(),
            headers: vec![
                ("agentbox-api-key", ACME_KEY.into()),
                ("x-api-key", other.into()),
            ],
            passes: None,
        });
    }
    cases
}

#[derive(Clone, Copy, Debug)]
enum Proto {
    Http1,
    H2c,
}

async fn send(gw: &Gateway, proto: Proto, path: &str, case: &Case) -> std::io::Result<Response> {
    let headers: Vec<raw::RawHeader<'_>> = case
        .headers
        .iter()
        .map(|(k, v)| (*k, v.as_bytes()))
        .collect();
    match proto {
        Proto::Http1 => {
            let request = raw::h1_request("GET", path.as_bytes(), &headers);
            raw::h1(gw.envoy.addr, &request).await
        }
        Proto::H2c => raw::h2(gw.envoy.addr, path, &headers).await,
    }
}

/// What is wrong with `r` (empty: nothing): it must come from sb-a, hold no gateway key in any
/// header value it saw, and show the app's token when there is one.
fn check(case: &Case, r: &Response) -> Vec<String> {
    let mut wrong = Vec::new();
    if r.status != 200 {
        wrong.push(format!("status {} (wanted 200)", r.status));
    }
    let echo: Value = serde_json::from_str(&r.body).unwrap_or_default();
    if echo["sandbox"] != "sb-a" {
        wrong.push(format!("answered by {} (wanted sb-a)", echo["sandbox"]));
    }
    let headers = echo["headers"].as_object().cloned().unwrap_or_default();
    for (name, value) in &headers {
        let value = value.as_str().unwrap_or_default();
        for (whose, key) in KEYS {
            if value.contains(key) {
                wrong.push(format!("sb-a saw {whose}'s key in {name}"));
            }
        }
    }
    for (whose, key) in KEYS {
        if r.body.contains(key) && !wrong.iter().any(|w| w.contains(whose)) {
            wrong.push(format!("{whose}'s key is in the answer"));
        }
    }
    if let Some((name, want)) = case.passes {
        let got = headers.get(name).and_then(Value::as_str);
        if got != Some(want) {
            wrong.push(format!("sb-a saw {name} {got:?} (wanted {want:?})"));
        }
    }
    wrong
}

async fn no_gateway_key_reaches_a_sandbox(entry: Entry) {
    let mut gw = Gateway::start(entry).await;
    let pa = gw.sandbox("acme", "pod-a", "sb-a", "127.0.0.11").await;
    let path = format!("/sandboxes/sb-a/{pa}/leak");
    let mut failures = Vec::new();
    for proto in [Proto::Http1, Proto::H2c] {
        for case in cases() {
            match send(&gw, proto, &path, &case).await {
                Ok(r) => {
                    let wrong = check(&case, &r);
                    if !wrong.is_empty() {
                        failures.push(format!(
                            "{proto:?}, {}: {} — {} {:.300}",
                            case.name,
                            wrong.join(", "),
                            r.status,
                            r.body
                        ));
                    }
                }
                Err(e) => failures.push(format!("{proto:?}, {}: no answer ({e})", case.name)),
            }
        }
    }
    // Keys are secrets: the report names whose key leaked, never the key.
    let report = KEYS.iter().fold(failures.join("\n"), |s, (whose, key)| {
        s.replace(key, &format!("<{whose} key>"))
    });
    assert!(failures.is_empty(), "{entry:?}:\n{report}");
}

every_entry!(no_gateway_key_reaches_a_sandbox);
