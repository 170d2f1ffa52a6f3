//! The controller's side: ControlPlaneService guarded by the admin key, last-active over gRPC and
//! HTTP, and activity history surviving a resolver restart through the Pod annotations.

use std::time::Duration;

use sandgate_tests::fixtures::{LAST_ACTIVE, pod};
use sandgate_tests::process::Outcome;
use sandgate_tests::stack::{ACME_KEY, ADMIN_KEY, Control, KubeStack, PROPAGATION};
use tonic::Code;

#[tokio::test]
async fn every_rpc_demands_the_admin_key() {
    let s = KubeStack::start(&[]).await;
    for key in [None, Some("wrong"), Some(ACME_KEY)] {
        let mut c = Control {
            client: s.resolver.control_client().await,
            key: key.map(Into::into),
        };
        let push = c.push("sb", "acme", "p").await.unwrap_err();
        let evict = c.evict("sb").await.unwrap_err();
        let last = c.last_active().await.unwrap_err();
        for status in [push, evict, last] {
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "key {key:?}: {status:?}"
            );
        }
    }
    let mut admin = s.control().await;
    admin.push("sb", "acme", "p").await.unwrap();
    assert!(admin.evict("sb").await.unwrap());
    admin.last_active().await.unwrap();
    // Malformed pushes are refused with a clear argument error.
    for (id, ns, name) in [
        ("bad/id", "acme", "p"),
        ("sb", "", "p"),
        ("sb", "acme", "Bad_Name"),
    ] {
        let e = admin.push(id, ns, name).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{id} {ns} {name}");
    }
}

#[tokio::test]
async fn last_active_over_grpc_and_http_agree() {
    let s = KubeStack::start(&[]).await;
    for (name, id) in [("p1", "sb-1"), ("p2", "sb-2")] {
        s.emu.apply(
            pod("acme", name)
                .sandbox(id)
                .phase("running")
                .ip("10.8.0.1")
                .json(),
        );
    }
    let ok = Outcome::Route("10.8.0.1:80".into());
    assert_eq!(
        s.resolver
            .resolve_until(ADMIN_KEY, "sb-1", 80, &ok, PROPAGATION)
            .await,
        ok
    );
    assert_eq!(s.resolver.resolve(ACME_KEY, "sb-2", 80).await, ok);
    // A refused request is not activity.
    s.resolver.resolve("wrong", "sb-3", 80).await;

    let grpc = s.control().await.last_active().await.unwrap();
    let (status, body) = s
        .resolver
        .http_get("/v1/last-active", Some(ADMIN_KEY))
        .await;
    assert_eq!(status, 200, "{body}");
    let http: std::collections::BTreeMap<String, String> = serde_json::from_str(&body).unwrap();
    assert_eq!(grpc, http);
    assert_eq!(grpc.keys().collect::<Vec<_>>(), ["sb-1", "sb-2"]);
    for ts in grpc.values() {
        let t: jiff::Timestamp = ts.parse().expect("RFC 3339");
        assert!(jiff::Timestamp::now().duration_since(t).as_secs() < 60);
    }
    assert_eq!(s.resolver.http_get("/v1/last-active", None).await.0, 401);
    assert_eq!(
        s.resolver
            .http_get("/v1/last-active", Some(ACME_KEY))
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn activity_survives_a_restart_through_annotations() {
    let mut s = KubeStack::start(&[]).await;
    let seen = "2026-03-04T05:06:07Z";
    s.emu.apply(
        pod("acme", "p1")
            .sandbox("sb-1")
            .phase("running")
            .ip("10.9.0.1")
            .annotation(LAST_ACTIVE, seen)
            .json(),
    );
    // Not Running: its annotation is history of a sandbox that is gone.
    s.emu.apply(
        pod("acme", "p2")
            .sandbox("sb-2")
            .phase("idle")
            .ip("10.9.0.2")
            .annotation(LAST_ACTIVE, seen)
            .json(),
    );
    s.emu.apply(
        pod("acme", "p3")
            .sandbox("sb-3")
            .phase("running")
            .ip("10.9.0.3")
            .json(),
    );

    s.resolver.restart().await;
    s.resolver.wait_ready().await;
    let mut ctl = s.control().await;
    let got = ctl.last_active_until(PROPAGATION, |m| !m.is_empty()).await;
    assert_eq!(got, [("sb-1".to_string(), seen.to_string())].into());

    // Activity moves forward from the seeded value, never back.
    let ok = Outcome::Route("10.9.0.1:80".into());
    assert_eq!(s.resolver.resolve(ADMIN_KEY, "sb-1", 80).await, ok);
    let after = ctl.last_active().await.unwrap();
    assert!(after["sb-1"].as_str() > seen);
}

#[tokio::test]
async fn activity_of_sandboxes_without_a_running_pod_is_collected() {
    let s = KubeStack::start(&["--activity-gc-interval=200ms"]).await;
    s.emu.apply(
        pod("acme", "p")
            .sandbox("sb")
            .phase("running")
            .ip("10.9.1.1")
            .json(),
    );
    let ok = Outcome::Route("10.9.1.1:80".into());
    assert_eq!(
        s.resolver
            .resolve_until(ADMIN_KEY, "sb", 80, &ok, PROPAGATION)
            .await,
        ok
    );
    let mut ctl = s.control().await;
    assert!(ctl.last_active().await.unwrap().contains_key("sb"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        ctl.last_active().await.unwrap().contains_key("sb"),
        "running: kept"
    );
    s.emu.apply(
        pod("acme", "p")
            .sandbox("sb")
            .phase("idle")
            .ip("10.9.1.1")
            .json(),
    );
    let after = ctl
        .last_active_until(PROPAGATION, |m| !m.contains_key("sb"))
        .await;
    assert!(
        !after.contains_key("sb"),
        "idle sandbox's activity was not collected"
    );
}
