//! Several gateway replicas (two Envoys, two resolvers, one API server): each sees only part of
//! the traffic, yet last-active is right everywhere, because every replica writes what it saw
//! onto the sandbox's Pod and reads back what the others wrote. Writes go only forward in time
//! and only onto a Pod that still serves the sandbox; a restarted replica keeps the history.

use std::time::Duration;

use sandgate_tests::echo;
use sandgate_tests::emulator::Kind;
use sandgate_tests::envoy::{Entry, Envoy, EnvoyOptions};
use sandgate_tests::fixtures::{LAST_ACTIVE, pod};
use sandgate_tests::http;
use sandgate_tests::process::{Resolver, eventually};
use sandgate_tests::stack::{ACME_KEY, ADMIN_KEY, Control, KubeStack, PROPAGATION};

const TICK: &str = "--last-active-interval=200ms";

async fn envoy_for(resolver: &Resolver) -> Envoy {
    Envoy::start(&EnvoyOptions {
        entry: Entry::Wasm,
        resolver: resolver.grpc,
        resolver_http: resolver.http,
        activity_interval: Duration::from_secs(1),
        callout_timeout: Duration::from_secs(1),
        fail_closed: true,
        peer_ca: None,
        cache_ttl: None,
        gateway_args: Vec::new(),
    })
    .await
}

async fn get_ok(envoy: &Envoy, sandbox: &str, port: u16) {
    let path = format!("/sandboxes/{sandbox}/{port}/");
    let r = http::send(envoy.addr, "GET", &path, &[("x-api-key", ACME_KEY)])
        .await
        .expect("request through Envoy");
    assert_eq!(r.status, 200, "{}", r.body);
}

async fn admin(resolver: &Resolver) -> Control {
    Control {
        client: resolver.control_client().await,
        key: Some(ADMIN_KEY.into()),
    }
}

fn annotation(stack: &KubeStack, name: &str) -> Option<String> {
    let p = stack.emu.get(Kind::Pod, "acme", name)?;
    p["metadata"]["annotations"][LAST_ACTIVE]
        .as_str()
        .map(str::to_string)
}

#[tokio::test]
async fn replicas_share_last_active_through_the_pods() {
    let stack = KubeStack::start(&[TICK]).await;
    let mut replica = stack.start_replica(&[TICK]).await;
    let (envoy1, envoy2) = (envoy_for(&stack.resolver).await, envoy_for(&replica).await);
    let mut ports = Vec::new();
    for (name, id, ip) in [("p1", "sb-1", "127.0.0.31"), ("p2", "sb-2", "127.0.0.32")] {
        let listener = tokio::net::TcpListener::bind(format!("{ip}:0"))
            .await
            .unwrap();
        ports.push(listener.local_addr().unwrap().port());
        tokio::spawn(echo::serve(listener, id.to_string()));
        stack
            .emu
            .apply(pod("acme", name).sandbox(id).phase("running").ip(ip).json());
    }
    // Wait for both replicas to hold both Pods without resolving anything: a Resolve is
    // activity, and each replica must see only its own sandbox's.
    for r in [&stack.resolver, &replica] {
        let holds_both = || async {
            r.http_get("/metrics", None)
                .await
                .1
                .contains("sandgate_pods 2")
        };
        assert!(
            eventually(PROPAGATION, holds_both).await,
            "a replica missed a Pod"
        );
    }
    // Each replica carries one sandbox's traffic (Resolve as the filter calls it, via Envoy), so
    // each knows the other's sandbox only through the Pod annotation.
    get_ok(&envoy1, "sb-1", ports[0]).await;
    get_ok(&envoy2, "sb-2", ports[1]).await;

    // Both Pods carry the time; both replicas report both sandboxes.
    assert!(
        eventually(PROPAGATION, || async {
            annotation(&stack, "p1").is_some() && annotation(&stack, "p2").is_some()
        })
        .await,
        "annotations not written"
    );
    let mut c1 = stack.control().await;
    let both = |m: &std::collections::BTreeMap<String, String>| {
        m.contains_key("sb-1") && m.contains_key("sb-2")
    };
    assert!(both(&c1.last_active_until(PROPAGATION, both).await));
    let mut c2 = admin(&replica).await;
    assert!(both(&c2.last_active_until(PROPAGATION, both).await));

    // Each replica wrote its own sandbox's Pod.
    for r in [&stack.resolver, &replica] {
        let (_, metrics) = r.http_get("/metrics", None).await;
        assert!(
            metrics.contains("sandgate_last_active_writes_total{result=\"written\"}"),
            "{metrics}"
        );
    }

    // Only forward: a newer time on the Pod (another replica's, or the controller's) stays.
    let future = "2030-01-01T00:00:00Z";
    stack.emu.apply(
        pod("acme", "p1")
            .sandbox("sb-1")
            .phase("running")
            .ip("127.0.0.31")
            .annotation(LAST_ACTIVE, future)
            .json(),
    );
    get_ok(&envoy1, "sb-1", ports[0]).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(annotation(&stack, "p1").as_deref(), Some(future));

    // A Pod handed to another sandbox is not written with the old sandbox's time.
    stack.emu.apply(
        pod("acme", "p2")
            .sandbox("sb-3")
            .phase("running")
            .ip("127.0.0.32")
            .json(),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(annotation(&stack, "p2"), None);

    // A restarted replica starts from the Pods: the history survives.
    replica.kill().await;
    replica.restart().await;
    replica.wait_ready().await;
    let mut c2 = admin(&replica).await;
    let after = c2
        .last_active_until(PROPAGATION, |m| {
            m.get("sb-1").map(String::as_str) == Some(future)
        })
        .await;
    assert_eq!(after.get("sb-1").map(String::as_str), Some(future));
}
