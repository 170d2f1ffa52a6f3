//! Cross-cluster routing end to end: two complete stacks on loopback (Envoy, resolver, API
//! emulator, echo sandboxes each). A request to gateway 1 for `c2.<uuid>` is forwarded to
//! gateway 2, plain or behind TLS, and decided again there; unknown or unreachable clusters
//! and loops are 502s. Every case runs through every entry.

use sandgate_tests::every_entry;
use sandgate_tests::gateway::{Entry, Gateway};
use sandgate_tests::http::Response;
use sandgate_tests::stack::{ACME_KEY, GLOBEX_KEY};
use sandgate_tests::tls::{TestCa, TlsFront};

const U1: &str = "6f1c2a3e-0b4d-4c5e-8f60-7a8b9c0d1e2f";
const U2: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

fn assert_refused(r: &Response, status: u16, code: &str, names: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    let body = r.json();
    assert_eq!(body["code"], code, "{}", r.body);
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(names), "{message:?} should name {names}");
}

async fn a_sandbox_in_another_cluster_is_reached_through_its_gateway(entry: Entry) {
    let ca = TestCa::new(&["gw2.test"]);
    let mut gw1 = Gateway::start_cluster(entry, "c1", &ca.ca_file).await;
    let mut gw2 = Gateway::start_cluster(entry, "c2", &ca.ca_file).await;
    let port = gw2
        .sandbox("acme", "pod-2", U2, "127.0.0.21")
        .await
        .to_string();
    // A sandbox with the same port in cluster 1 that must never answer for cluster 2's id.
    gw1.sandbox("acme", "pod-1", U1, "127.0.0.22").await;
    let mut control = gw1.kube.control().await;
    let plain = format!(
        "clusters:\n- id: c2\n  gateway:\n    dataURL: http://127.0.0.1:{}\n    headers: {{x-sandgate-peer-token: s3cret}}\n",
        gw2.envoy.addr.port()
    );
    assert_eq!(control.push_clusters(&plain).await.expect("push"), 1);
    let remote = format!("c2.{U2}");

    // By path: gateway 2 sees the client's path under the (empty) prefix and rewrites it.
    let r = gw1
        .get(
            &format!("/sandboxes/{remote}/{port}/api?x=1"),
            &[("agentbox-api-key", ACME_KEY)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let echo = r.json();
    assert_eq!(
        (echo["sandbox"].as_str(), echo["path"].as_str()),
        (Some(U2), Some("/api?x=1"))
    );
    let seen = echo["headers"].as_object().expect("headers").clone();
    for name in seen.keys() {
        assert!(
            !name.starts_with("x-sandgate-")
                && !name.contains("api-key")
                && name != "authorization",
            "the sandbox saw {name}: {seen:?}"
        );
    }

    // By header, with a bearer key.
    let bearer = format!("Bearer {ACME_KEY}");
    let by_header = [
        ("x-sandbox-id", remote.as_str()),
        ("x-sandbox-port", port.as_str()),
        ("authorization", bearer.as_str()),
    ];
    let r = gw1.get("/hello", &by_header).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.json()["sandbox"].as_str(), r.json()["path"].as_str()),
        (Some(U2), Some("/hello"))
    );

    // Gateway 1 authenticates (its peer credential is not for anyone's borrowing); gateway 2
    // decides the tenant: globex's key is valid in both clusters, the sandbox is acme's.
    let bad = gw1
        .get(
            &format!("/sandboxes/{remote}/{port}/"),
            &[("x-api-key", "nope")],
        )
        .await;
    assert_eq!(bad.status, 401, "{}", bad.body);
    let other_tenant = gw1
        .get(
            &format!("/sandboxes/{remote}/{port}/"),
            &[("x-api-key", GLOBEX_KEY)],
        )
        .await;
    assert_refused(&other_tenant, 403, "forbidden", U2);

    // The peer gateway by a DNS name: the first decision waits for the system resolver (the
    // native entry finishes it off the worker and resumes the request on it).
    let by_name = format!(
        "clusters:\n- id: c2\n  gateway:\n    dataURL: http://localhost:{}\n",
        gw2.envoy.addr.port()
    );
    assert_eq!(control.push_clusters(&by_name).await.expect("push"), 1);
    let r = gw1.get("/by-name", &by_header).await;
    assert_eq!(
        (r.status, r.json()["sandbox"].as_str()),
        (200, Some(U2)),
        "{}",
        r.body
    );

    // The peer gateway behind TLS, its certificate from the test's CA, its name by alias.
    let front = TlsFront::start(&ca, gw2.envoy.addr).await;
    let tls = format!(
        "clusters:\n- id: c2\n  gateway:\n    dataURL: https://gw2.test:{}/\nhostAliases:\n- ip: 127.0.0.1\n  hostnames: [gw2.test, wrong.test]\n",
        front.addr.port()
    );
    control.push_clusters(&tls).await.expect("push TLS");
    let r = gw1.get("/over-tls", &by_header).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["sandbox"].as_str(), Some(U2));
    assert_eq!(r.json()["path"].as_str(), Some("/over-tls"));
    assert!(
        front.server_names().contains(&"gw2.test".to_string()),
        "{:?}",
        front.server_names()
    );

    // A certificate that does not name the host it is reached by is refused by Envoy.
    let wrong = tls.replace("https://gw2.test", "https://wrong.test");
    control
        .push_clusters(&wrong)
        .await
        .expect("push wrong name");
    let r = gw1.get("/over-tls", &by_header).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(!front.server_names().contains(&"wrong.test".to_string()));
}

async fn unknown_unreachable_and_looping_clusters_are_refused(entry: Entry) {
    let ca = TestCa::new(&["unused.test"]);
    let mut gw = Gateway::start_cluster(entry, "c1", &ca.ca_file).await;
    let port = gw
        .sandbox("acme", "pod-1", U1, "127.0.0.23")
        .await
        .to_string();
    let mut control = gw.kube.control().await;
    // `loop` points back at this gateway: a misconfiguration the hop marker must stop.
    let config = format!(
        "clusters:\n- id: loop\n  gateway: {{dataURL: 'http://127.0.0.1:{}'}}\n- id: dark\n",
        gw.envoy.addr.port()
    );
    assert_eq!(control.push_clusters(&config).await.expect("push"), 2);
    let key = [("x-api-key", ACME_KEY)];
    let get = |cluster: &str| format!("/sandboxes/{cluster}.{U1}/{port}/");

    assert_refused(
        &gw.get(&get("nowhere"), &key).await,
        502,
        "unknown_cluster",
        "nowhere",
    );
    assert_refused(
        &gw.get(&get("dark"), &key).await,
        502,
        "peer_unavailable",
        "dark",
    );
    assert_refused(
        &gw.get(&get("loop"), &key).await,
        502,
        "forward_loop",
        "loop",
    );

    // This cluster's own prefix is stripped; the id is the bare UUID.
    let r = gw.get(&get("c1"), &key).await;
    assert_eq!(
        (r.status, r.json()["sandbox"].as_str()),
        (200, Some(U1)),
        "{}",
        r.body
    );

    // A client's own upstream header steers nothing: the request still reaches its sandbox.
    for forged in ["peer", "peer-tls", "peer-tls-insecure"] {
        let r = gw
            .get(
                &get("c1"),
                &[("x-api-key", ACME_KEY), ("x-sandgate-upstream", forged)],
            )
            .await;
        assert_eq!(
            (r.status, r.json()["sandbox"].as_str()),
            (200, Some(U1)),
            "{forged}: {}",
            r.body
        );
        assert!(r.json()["headers"].get("x-sandgate-upstream").is_none());
    }

    // A bad push is refused and the configuration stays.
    let err = control
        .push_clusters("clusters: [{id: 'a/b'}]")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_refused(
        &gw.get(&get("dark"), &key).await,
        502,
        "peer_unavailable",
        "dark",
    );
}

every_entry!(
    a_sandbox_in_another_cluster_is_reached_through_its_gateway,
    unknown_unreachable_and_looping_clusters_are_refused,
);
