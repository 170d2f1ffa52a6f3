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
use sandgate_tests::process::{Outcome, eventually};
use sandgate_tests::stack::{ACME_KEY, ADMIN_KEY, KubeStack, PROPAGATION};

const TICK: &str = "--last-active-interval=200ms";

async fn envoy_for(resolver: std::net::SocketAddr) -> Envoy {
    Envoy::start(&EnvoyOptions {
        entry: Entry::Wasm,
        resolver,
        activity_interval: Duration::from_secs(1),
        callout_timeout: Duration::from_secs(1),
        fail_closed: true,
        peer_ca: None,
    })
    .await
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
    let (envoy1, envoy2) = (
        envoy_for(stack.resolver.grpc).await,
        envoy_for(replica.grpc).await,
    );
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
    for r in [&stack.resolver, &replica] {
        for (id, port) in [("sb-1", ports[0]), ("sb-2", ports[1])] {
            let want = Outcome::Route(format!(
                "127.0.0.3{}:{port}",
                if id == "sb-1" { 1 } else { 2 }
            ));
            assert_eq!(
                r.resolve_until(ADMIN_KEY, id, u32::from(port), &want, PROPAGATION)
                    .await,
                want
            );
        }
    }
    // Each replica carries one sandbox's traffic (Resolve as the filter calls it, via Envoy).
    let key = [("x-api-key", ACME_KEY)];
    let r = http::send(
        envoy1.addr,
        "GET",
        &format!("/sandboxes/sb-1/{}/", ports[0]),
        &key,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = http::send(
        envoy2.addr,
        "GET",
        &format!("/sandboxes/sb-2/{}/", ports[1]),
        &key,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);

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
    let mut c2 = sandgate_tests::stack::Control {
        client: replica.control_client().await,
        key: Some(ADMIN_KEY.into()),
    };
    assert!(both(&c2.last_active_until(PROPAGATION, both).await));

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
    let r = http::send(
        envoy1.addr,
        "GET",
        &format!("/sandboxes/sb-1/{}/", ports[0]),
        &key,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
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
    let mut c2 = sandgate_tests::stack::Control {
        client: replica.control_client().await,
        key: Some(ADMIN_KEY.into()),
    };
    let after = c2
        .last_active_until(PROPAGATION, |m| {
            m.get("sb-1").map(String::as_str) == Some(future)
        })
        .await;
    assert_eq!(after.get("sb-1").map(String::as_str), Some(future));

    let (_, metrics) = stack.resolver.http_get("/metrics", None).await;
    assert!(
        metrics.contains("sandgate_last_active_writes_total{result=\"written\"}"),
        "{metrics}"
    );
}
