//! Every refusal through Envoy: status, JSON body `{"code", "message"}`, and a local answer
//! that never reaches a sandbox; the resolver's absence is a prompt 503 and its return heals.

use std::time::{Duration, Instant};

use sandgate_tests::fixtures::{key_secret, pod};
use sandgate_tests::gateway::{Entry, Gateway, TEST_CALLOUT_TIMEOUT};
use sandgate_tests::http::Response;
use sandgate_tests::process::Outcome;
use sandgate_tests::stack::{ACME_KEY, GLOBEX_KEY, KEYS_NAMESPACE, PROPAGATION};
use sandgate_tests::{entries_with_a_resolver_process, every_entry};

fn assert_refused(r: &Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{code}: {}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["code"], code, "{}", r.body);
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{}",
        r.body
    );
    assert!(
        body.get("sandbox").is_none(),
        "reached a sandbox: {}",
        r.body
    );
}

async fn every_refusal_has_its_status_and_json_code(entry: Entry) {
    let mut gw = Gateway::start(entry).await;
    let port = gw.sandbox("acme", "pod-a", "sb-a", "127.0.0.11").await;
    let p = port.to_string();
    for (phase, id) in [
        ("starting", "sb-starting"),
        ("idle", "sb-idle"),
        ("failed", "sb-failed"),
    ] {
        gw.kube.emu.apply(
            pod("acme", id)
                .sandbox(id)
                .phase(phase)
                .ip("127.0.0.11")
                .json(),
        );
    }
    gw.kube.emu.apply(
        pod("acme", "sb-noip")
            .sandbox("sb-noip")
            .phase("running")
            .no_ip()
            .json(),
    );
    gw.kube.emu.apply(key_secret(
        KEYS_NAMESPACE,
        "key-expired",
        "expired-key-0123456789",
        "acme",
        Some("2020-01-01T00:00:00Z"),
    ));
    gw.kube.barrier().await;

    let key = [("x-api-key", ACME_KEY)];
    let by_path = |id: &str, port: &str| format!("/sandboxes/{id}/{port}/x");
    // (path, headers, status, code)
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("/plain".into(), key.to_vec(), 400, "missing_sandbox_id"),
        (
            by_path("-bad-", &p),
            key.to_vec(),
            400,
            "invalid_sandbox_id",
        ),
        ("/sandboxes/sb-a".into(), key.to_vec(), 400, "missing_port"),
        (by_path("sb-a", "65536"), key.to_vec(), 400, "invalid_port"),
        (by_path("sb-a", "http"), key.to_vec(), 400, "invalid_port"),
        (
            "/".into(),
            vec![("x-sandbox-id", "a b"), ("x-sandbox-port", "1")],
            400,
            "invalid_sandbox_id",
        ),
        (
            "/".into(),
            vec![("x-sandbox-id", "sb-a")],
            400,
            "missing_port",
        ),
        (by_path("sb-a", &p), vec![], 401, "missing_api_key"),
        (
            by_path("sb-a", &p),
            vec![("x-api-key", "wrong")],
            401,
            "invalid_api_key",
        ),
        (
            by_path("sb-a", &p),
            vec![("authorization", "Bearer expired-key-0123456789")],
            401,
            "expired_api_key",
        ),
        (
            by_path("sb-a", &p),
            vec![("x-api-key", GLOBEX_KEY)],
            403,
            "forbidden",
        ),
        (
            by_path("nobody", &p),
            key.to_vec(),
            404,
            "sandbox_not_found",
        ),
        (
            by_path("sb-starting", &p),
            key.to_vec(),
            502,
            "sandbox_not_ready",
        ),
        (
            by_path("sb-idle", &p),
            key.to_vec(),
            502,
            "sandbox_not_ready",
        ),
        (
            by_path("sb-failed", &p),
            key.to_vec(),
            502,
            "sandbox_not_ready",
        ),
        (by_path("sb-noip", &p), key.to_vec(), 502, "sandbox_no_ip"),
        // Addressed the E2B way, a missing sandbox is 502 (the SDK's "gone").
        (
            "/".into(),
            vec![
                ("x-api-key", ACME_KEY),
                ("e2b-sandbox-id", "nobody"),
                ("e2b-sandbox-port", "49983"),
            ],
            502,
            "sandbox_not_found",
        ),
        (
            "/".into(),
            vec![
                ("x-api-key", ACME_KEY),
                ("host", "49983-nobody.sandgate.test"),
            ],
            502,
            "sandbox_not_found",
        ),
        // Routed, but nothing listens on that port: Envoy's local reply, in the table's shape.
        (by_path("sb-a", "1"), key.to_vec(), 502, "port_not_open"),
    ];
    for (path, headers, status, code) in cases {
        let r = gw.get(&path, &headers).await;
        assert_refused(&r, status, code);
        // The words the E2B SDK maps to its exceptions.
        let message = r.json()["message"].as_str().unwrap_or_default().to_string();
        match code {
            "sandbox_not_found" => assert!(message.contains("was not found"), "{message}"),
            "port_not_open" => assert!(message.contains("port is not open"), "{message}"),
            _ => {}
        }
    }
    // And the sandbox itself is fine.
    assert_eq!(
        gw.get(&by_path("sb-a", &p), &key).await.json()["sandbox"],
        "sb-a"
    );
}

async fn a_dead_resolver_is_a_prompt_503_and_its_return_heals(entry: Entry) {
    let mut gw = Gateway::start(entry).await;
    let port = gw.sandbox("acme", "pod-a", "sb-a", "127.0.0.11").await;
    let path = format!("/sandboxes/sb-a/{port}/");
    let key = [("x-api-key", ACME_KEY)];
    assert_eq!(gw.get(&path, &key).await.status, 200);

    // Hung: the callout runs into its deadline.
    gw.kube.resolver.freeze(true);
    let started = Instant::now();
    let r = gw.get(&path, &key).await;
    gw.kube.resolver.freeze(false);
    assert_refused(&r, 503, "resolver_unavailable");
    assert!(
        started.elapsed() >= TEST_CALLOUT_TIMEOUT.mul_f32(0.9)
            && started.elapsed() < TEST_CALLOUT_TIMEOUT + Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(gw.get(&path, &key).await.status, 200, "thawed");

    // Gone: refused at once.
    gw.kube.resolver.kill().await;
    for _ in 0..3 {
        let started = Instant::now();
        let r = gw.get(&path, &key).await;
        assert_refused(&r, 503, "resolver_unavailable");
        // Bounded by the callout timeout (plus slack for a loaded machine), never hanging.
        assert!(
            started.elapsed() < TEST_CALLOUT_TIMEOUT + Duration::from_secs(2),
            "took {:?}",
            started.elapsed()
        );
    }

    gw.kube.resolver.restart().await;
    let r = gw.get_until(&path, &key, 200, PROPAGATION).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["sandbox"], "sb-a");
}

/// `fail_closed: false` hands an undecided request to later filters; with none deciding, it
/// still reaches no sandbox: nothing set a destination, so the sandboxes cluster has no host.
async fn failing_open_still_reaches_no_sandbox(entry: Entry) {
    let mut gw = Gateway::start_with(entry, false).await;
    let port = gw.sandbox("acme", "pod-a", "sb-a", "127.0.0.11").await;
    let path = format!("/sandboxes/sb-a/{port}/");
    let key = [("x-api-key", ACME_KEY)];
    assert_eq!(gw.get(&path, &key).await.json()["sandbox"], "sb-a");
    gw.kube.resolver.kill().await;
    let forged = format!("127.0.0.11:{port}");
    let r = gw
        .get(&path, &[key[0], ("x-envoy-original-dst-host", &forged)])
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(!r.body.contains("sb-a"), "reached the sandbox: {}", r.body);
}

/// Invalid keys are counted per client address (Envoy tells the resolver who is asking); past
/// the limit every keyed request from that address is 429, the valid key included, so a
/// guesser never learns which guess was right. Other clients are not affected.
async fn key_guesses_from_one_client_are_limited(entry: Entry) {
    let mut gw = Gateway::start_args(
        entry,
        &["--key-failure-limit=3", "--key-failure-window=60s"],
    )
    .await;
    let port = gw.sandbox("acme", "pod-a", "sb-a", "127.0.0.11").await;
    let path = format!("/sandboxes/sb-a/{port}/");
    for guess in ["guess-1", "guess-2", "guess-3"] {
        assert_refused(
            &gw.get(&path, &[("x-api-key", guess)]).await,
            401,
            "invalid_api_key",
        );
    }
    assert_refused(
        &gw.get(&path, &[("x-api-key", "guess-4")]).await,
        429,
        "too_many_key_failures",
    );
    let r = gw.get(&path, &[("x-api-key", ACME_KEY)]).await;
    assert_refused(&r, 429, "too_many_key_failures");
    assert!(!r.body.contains(ACME_KEY) && !r.body.contains("guess"));
    // A caller the resolver cannot place (here: a direct Resolve with no address) is not this
    // client.
    let direct = gw
        .kube
        .resolver
        .resolve(ACME_KEY, "sb-a", u32::from(port))
        .await;
    assert_eq!(direct, Outcome::Route(format!("127.0.0.11:{port}")));
}

every_entry!(
    key_guesses_from_one_client_are_limited,
    every_refusal_has_its_status_and_json_code,
);
entries_with_a_resolver_process!(
    a_dead_resolver_is_a_prompt_503_and_its_return_heals,
    failing_open_still_reaches_no_sandbox,
);
