//! A locked-out address is locked out of kept answers too (issue 15, finding F3).
//!
//! Past `--key-failure-limit` invalid keys within `--key-failure-window`, every keyed request
//! from that client address is 429 `too_many_key_failures` (README, "Rotating keys"), the valid
//! key included. With the wasm filter's decision cache on, a (key, id, port) the cache held was
//! once still answered 200 from a locked address. Here the valid route is first kept (the wasm
//! entry's cache is checked to answer it without a Resolve), then the address guesses past the
//! limit: its valid request must be 429, another address's 200, and once the window has passed
//! the first address gets 200 again.
//!
//! Client addresses are real: each client socket is bound to its own loopback address before it
//! connects (no X-Forwarded-For). Every entry; ext_proc and native keep nothing, so they are the
//! reference.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use sandgate_tests::every_entry;
use sandgate_tests::gateway::{Entry, Gateway};
use sandgate_tests::http::Response;
use sandgate_tests::raw;
use sandgate_tests::stack::ACME_KEY;

const LIMIT: u32 = 3;
const WINDOW: Duration = Duration::from_secs(6);
/// Answers the wasm entry keeps: far longer than the test runs, so a 200 from a locked address
/// can only have come from the cache.
const LONG_TTL: Duration = Duration::from_secs(60);
/// How long a new lock may take to reach the filter before every keyed request from the
/// address must be refused.
const LOCK_PROPAGATION: Duration = Duration::from_millis(100);

const A: &str = "127.0.0.2";
const B: &str = "127.0.0.3";

/// The gateway for this test: the resolver with a small failure limit and a short window,
/// Envoy with the entry (the wasm cache kept for [`LONG_TTL`]), and sb-a's echo.
struct Stack {
    gw: Gateway,
    path: String,
}

async fn start(entry: Entry) -> Stack {
    let limit = format!("--key-failure-limit={LIMIT}");
    let window = format!("--key-failure-window={}s", WINDOW.as_secs());
    let mut gw =
        Gateway::start_args_cached(entry, &[limit.as_str(), window.as_str()], LONG_TTL).await;
    let port = gw.sandbox("acme", "pod-a", "sb-a", "127.0.0.11").await;
    Stack {
        gw,
        path: format!("/sandboxes/sb-a/{port}/"),
    }
}

impl Stack {
    /// One GET of sb-a's path from `source` with `key` in x-api-key.
    async fn get(&self, source: &str, key: &str) -> Response {
        let ip: IpAddr = source.parse().expect("loopback address");
        let headers = [("x-api-key", key)];
        let sent = raw::send_from(ip, self.gw.envoy.addr, "GET", &self.path, &headers);
        match sent.await {
            Ok(r) => r,
            Err(e) => panic!(
                "request from {source} failed: {e}\n{}",
                raw::envoy_log(&self.gw.envoy).await
            ),
        }
    }

    /// For the wasm entry: sends the valid request from `source` until one is answered without
    /// a Resolve (the worker's VM has its generations and keeps the answer).
    async fn warm(&self, source: &str) {
        self.gw
            .kube
            .resolver
            .warm_cache(|| self.get(source, ACME_KEY))
            .await;
    }
}

fn code(r: &Response) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_string))
}

fn served(r: &Response) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v["sandbox"].as_str().map(str::to_string))
}

async fn a_locked_address_gets_429_even_for_a_kept_route(entry: Entry) {
    let gw = start(entry).await;

    // The valid route is decided, and for the wasm entry kept: the next one costs no Resolve.
    let first = gw.get(A, ACME_KEY).await;
    assert_eq!(
        (first.status, served(&first).as_deref()),
        (200, Some("sb-a")),
        "{}",
        first.body
    );
    if entry == Entry::Wasm {
        gw.warm(A).await;
    }

    // A guesses past the limit: each guess is a new key, so none is a kept refusal.
    for i in 1..=LIMIT {
        let r = gw.get(A, &format!("guess-{i}")).await;
        assert_eq!(
            (r.status, code(&r).as_deref()),
            (401, Some("invalid_api_key")),
            "guess {i}: {}",
            r.body
        );
    }
    let r = gw.get(A, "guess-past-the-limit").await;
    assert_eq!(
        (r.status, code(&r).as_deref()),
        (429, Some("too_many_key_failures")),
        "the guess past the limit: {}",
        r.body
    );
    let locked_at = Instant::now();

    // The route A's valid key asks for is still kept (wasm), yet A is locked out of it. A
    // lock may take as long to reach the filter as any pushed change (README, "The decision
    // cache": a few milliseconds); far less than the cache's TTL, which is what let A in.
    tokio::time::sleep(LOCK_PROPAGATION).await;
    let mut failures = Vec::new();
    for attempt in 1..=3 {
        let r = gw.get(A, ACME_KEY).await;
        if (r.status, code(&r).as_deref()) != (429, Some("too_many_key_failures")) {
            failures.push(format!(
                "the valid key from the locked address {A} (attempt {attempt}): {} {:.200}{}",
                r.status,
                r.body,
                if served(&r).is_some() {
                    " — reached the sandbox"
                } else {
                    ""
                }
            ));
        }
    }
    assert!(
        locked_at.elapsed() < WINDOW,
        "the machine is too slow for this window"
    );

    // Another address is not locked: the same valid request is 200.
    let r = gw.get(B, ACME_KEY).await;
    if (r.status, served(&r).as_deref()) != (200, Some("sb-a")) {
        failures.push(format!(
            "the valid key from another address {B}: {} {:.200}",
            r.status, r.body
        ));
    }
    assert!(failures.is_empty(), "{entry:?}:\n{}", failures.join("\n"));

    // Once the window has passed, A's valid key works again.
    let deadline = locked_at + WINDOW + Duration::from_secs(5);
    let last = loop {
        let r = gw.get(A, ACME_KEY).await;
        if r.status != 429 || Instant::now() >= deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(
        (last.status, served(&last).as_deref()),
        (200, Some("sb-a")),
        "{entry:?}: A after the window: {}",
        last.body
    );
}

every_entry!(a_locked_address_gets_429_even_for_a_kept_route);
