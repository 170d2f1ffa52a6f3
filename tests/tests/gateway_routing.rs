//! Real traffic through Envoy and the wasm filter: by header and by path to the right sandbox,
//! what the sandbox sees (rewritten path, no gateway headers), tenant isolation, forged
//! destinations, and Pods that move.

use sandgate_tests::every_entry;
use sandgate_tests::fixtures::pod;
use sandgate_tests::gateway::{Entry, Gateway};
use sandgate_tests::stack::{ACME_KEY, GLOBEX_KEY, PROPAGATION};

async fn routes_by_header_and_by_path_with_the_rewritten_path_and_query(entry: Entry) {
    let mut gw = Gateway::start(entry).await;
    let a = gw.sandbox("acme", "pod-a", "sb-a", "127.0.0.11").await;
    let b = gw.sandbox("acme", "pod-b", "sb-b", "127.0.0.12").await;

    let (a_port, b_port) = (a.to_string(), b.to_string());
    let r = gw
        .get(
            "/api/items?x=1&y=%20",
            &[
                ("x-sandbox-id", "sb-a"),
                ("x-sandbox-port", &a_port),
                ("x-api-key", ACME_KEY),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let echo = r.json();
    assert_eq!(echo["sandbox"], "sb-a");
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/api/items?x=1&y=%20");

    let r = gw
        .send(
            "POST",
            &format!("/v1/sandboxes/sb-b/{b_port}/deep/path?q=sandboxes/sb-a/1"),
            &[("agentbox-api-key", ACME_KEY)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let echo = r.json();
    assert_eq!(echo["sandbox"], "sb-b");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/deep/path?q=sandboxes/sb-a/1");

    let r = gw
        .get(
            &format!("/sandboxes/sb-a/{a_port}"),
            &[("authorization", &format!("Bearer {ACME_KEY}"))],
        )
        .await;
    assert_eq!((r.status, r.json()["path"].as_str()), (200, Some("/")));
}

async fn the_sandbox_never_sees_keys_or_gateway_headers(entry: Entry) {
    let mut gw = Gateway::start(entry).await;
    let port = gw
        .sandbox("acme", "pod-a", "sb-a", "127.0.0.11")
        .await
        .to_string();
    let bearer = format!("Bearer {ACME_KEY}");
    for key_headers in [
        vec![
            ("agentbox-api-key", ACME_KEY),
            ("x-api-key", ACME_KEY),
            ("authorization", bearer.as_str()),
        ],
        vec![("authorization", bearer.as_str())],
    ] {
        let mut headers = vec![
            ("x-sandbox-id", "sb-a"),
            ("x-sandbox-port", port.as_str()),
            ("x-sandbox-extra", "gateway-only"),
            ("x-app-header", "kept"),
        ];
        headers.extend(key_headers);
        let r = gw.get("/", &headers).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let seen = r.json()["headers"].as_object().unwrap().clone();
        assert_eq!(seen["x-app-header"], "kept");
        for name in seen.keys() {
            assert!(!name.starts_with("x-sandbox"), "{name} leaked: {seen:?}");
            assert!(
                !["agentbox-api-key", "x-api-key", "authorization"].contains(&name.as_str()),
                "{name} leaked"
            );
        }
        assert!(
            !r.body.contains(ACME_KEY),
            "the key reached the sandbox: {}",
            r.body
        );
    }
    // An authorization header meant for the sandbox's own app is not the gateway's to drop.
    let r = gw
        .get(
            &format!("/sandboxes/sb-a/{port}/"),
            &[
                ("x-api-key", ACME_KEY),
                ("authorization", "Bearer app-token"),
            ],
        )
        .await;
    assert_eq!(r.json()["headers"]["authorization"], "Bearer app-token");
    assert!(!r.body.contains(ACME_KEY));
}

async fn a_forged_original_destination_header_cannot_steer_a_request(entry: Entry) {
    let mut gw = Gateway::start(entry).await;
    let a = gw.sandbox("acme", "pod-a", "sb-a", "127.0.0.11").await;
    // A private service that no sandbox route leads to.
    let secret = gw.echo("secret-service", "127.0.0.13").await;
    let forged = format!("127.0.0.13:{secret}");
    let a_port = a.to_string();
    let valid_but_forged = [
        ("x-sandbox-id", "sb-a"),
        ("x-sandbox-port", a_port.as_str()),
        ("x-api-key", ACME_KEY),
        ("x-envoy-original-dst-host", forged.as_str()),
    ];

    // Routed request: goes to sb-a, not to the forged address, which the sandbox never sees.
    let r = gw.get("/", &valid_but_forged).await;
    assert_eq!(r.json()["sandbox"], "sb-a");
    assert!(
        r.json()["headers"]
            .get("x-envoy-original-dst-host")
            .is_none()
    );

    // Every refusal path, with the forged header: always a local answer, never the service.
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![],                                                      // no id: 400
        vec![("x-sandbox-id", "sb-a"), ("x-sandbox-port", "0")],     // bad port: 400
        vec![("x-sandbox-id", "sb-a"), ("x-sandbox-port", &a_port)], // no key: 401
        vec![
            ("x-sandbox-id", "sb-a"),
            ("x-sandbox-port", &a_port),
            ("x-api-key", GLOBEX_KEY),
        ], // 403
        vec![
            ("x-sandbox-id", "nobody"),
            ("x-sandbox-port", &a_port),
            ("x-api-key", ACME_KEY),
        ], // 404
    ];
    for mut headers in cases {
        headers.push(("x-envoy-original-dst-host", &forged));
        let r = gw.get("/", &headers).await;
        assert!(r.status >= 400, "{headers:?}: {} {}", r.status, r.body);
        assert!(
            !r.body.contains("secret-service"),
            "{headers:?} reached the forged destination"
        );
        assert!(r.json()["code"].is_string(), "{}", r.body);
    }
    // The resolver gone (503): still no way through. (The native entry's gateway cannot go
    // without its Envoy.)
    if entry.resolver_process() {
        gw.kube.resolver.kill().await;
        let r = gw.get("/", &valid_but_forged).await;
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(!r.body.contains("secret-service"));
    }
}

async fn tenants_reach_only_their_own_sandboxes(entry: Entry) {
    let mut gw = Gateway::start(entry).await;
    let a = gw.sandbox("acme", "pod-a", "sb-acme", "127.0.0.11").await;
    let g = gw
        .sandbox("globex", "pod-g", "sb-globex", "127.0.0.12")
        .await;
    let ok = gw
        .get(
            &format!("/sandboxes/sb-globex/{g}/"),
            &[("x-api-key", GLOBEX_KEY)],
        )
        .await;
    assert_eq!(ok.json()["sandbox"], "sb-globex");
    let r = gw
        .get(
            &format!("/sandboxes/sb-globex/{g}/"),
            &[("x-api-key", ACME_KEY)],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["code"], "forbidden");
    let r = gw
        .get(
            &format!("/sandboxes/sb-acme/{a}/"),
            &[("x-api-key", GLOBEX_KEY)],
        )
        .await;
    assert_eq!(r.status, 403);
}

async fn a_pod_whose_ip_changes_is_followed(entry: Entry) {
    let mut gw = Gateway::start(entry).await;
    let port = gw.sandbox("acme", "pod-a", "sb-a", "127.0.0.11").await;
    let path = format!("/sandboxes/sb-a/{port}/where");
    let r = gw.get(&path, &[("x-api-key", ACME_KEY)]).await;
    assert_eq!(r.json()["sandbox"], "sb-a");

    // The Pod is recreated at a new IP; the new address serves on the same port number, so
    // only the IP tells them apart.
    let listener = tokio::net::TcpListener::bind(("127.0.0.15", port))
        .await
        .expect("same port free on 127.0.0.15");
    tokio::spawn(sandgate_tests::echo::serve(listener, "sb-a@new-ip".into()));
    gw.kube.emu.apply(
        pod("acme", "pod-a")
            .sandbox("sb-a")
            .phase("running")
            .ip("127.0.0.15")
            .json(),
    );
    let deadline = tokio::time::Instant::now() + PROPAGATION;
    loop {
        let r = gw.get(&path, &[("x-api-key", ACME_KEY)]).await;
        if r.status == 200 && r.json()["sandbox"] == "sb-a@new-ip" {
            assert_eq!(r.json()["path"], "/where");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not followed: {} {}",
            r.status,
            r.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

every_entry!(
    routes_by_header_and_by_path_with_the_rewritten_path_and_query,
    the_sandbox_never_sees_keys_or_gateway_headers,
    a_forged_original_destination_header_cannot_steer_a_request,
    tenants_reach_only_their_own_sandboxes,
    a_pod_whose_ip_changes_is_followed,
);
