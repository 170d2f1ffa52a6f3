//! Routing decisions against live Pod state: pushed routes, the sandbox-id index, phases,
//! reuse of Pods for other sandboxes, eviction, TTL expiry and the armed gate.

use std::time::Duration;

use sandgate_tests::emulator::Kind;
use sandgate_tests::fixtures::{ARMED, pod};
use sandgate_tests::process::Outcome;
use sandgate_tests::stack::{ADMIN_KEY, KubeStack, PROPAGATION};

fn route(dest: &str) -> Outcome {
    Outcome::Route(dest.into())
}

#[tokio::test]
async fn push_before_the_informer_sees_the_pod_is_502_then_routes() {
    let s = KubeStack::start(&["--index-fallback=false"]).await;
    let mut ctl = s.control().await;
    ctl.push("sb-1", "acme", "pod-1").await.unwrap();
    assert_eq!(
        s.resolver.resolve(ADMIN_KEY, "sb-1", 8080).await,
        Outcome::deny(502, "sandbox_pod_missing")
    );
    s.emu.apply(
        pod("acme", "pod-1")
            .sandbox("sb-1")
            .phase("running")
            .ip("10.1.0.5")
            .json(),
    );
    let want = route("10.1.0.5:8080");
    let got = s
        .resolver
        .resolve_until(ADMIN_KEY, "sb-1", 8080, &want, PROPAGATION)
        .await;
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_cached_route_to_a_reused_pod_is_502_never_the_other_sandbox() {
    let s = KubeStack::start(&[]).await;
    let mut ctl = s.control().await;
    s.emu.apply(
        pod("acme", "pod-1")
            .sandbox("sb-1")
            .phase("running")
            .ip("10.1.0.7")
            .json(),
    );
    ctl.push("sb-1", "acme", "pod-1").await.unwrap();
    let want = route("10.1.0.7:80");
    assert_eq!(
        s.resolver
            .resolve_until(ADMIN_KEY, "sb-1", 80, &want, PROPAGATION)
            .await,
        want
    );

    // The controller releases pod-1 and assigns it to sb-2; sb-1's pushed route is now stale.
    s.emu.apply(
        pod("acme", "pod-1")
            .sandbox("sb-2")
            .phase("running")
            .ip("10.1.0.7")
            .json(),
    );
    let reassigned = Outcome::deny(502, "sandbox_reassigned");
    assert_eq!(
        s.resolver
            .resolve_until(ADMIN_KEY, "sb-1", 80, &reassigned, PROPAGATION)
            .await,
        reassigned
    );
    // sb-2 reaches its pod through the index; sb-1 never gets that address again.
    assert_eq!(s.resolver.resolve(ADMIN_KEY, "sb-2", 80).await, want);
    for _ in 0..20 {
        assert_eq!(s.resolver.resolve(ADMIN_KEY, "sb-1", 80).await, reassigned);
    }
}

#[tokio::test]
async fn only_running_or_stopping_pods_with_an_ip_route() {
    let s = KubeStack::start(&[]).await;
    for (id, phase) in [
        ("sb-start", "starting"),
        ("sb-idle", "idle"),
        ("sb-fail", "failed"),
    ] {
        s.emu.apply(
            pod("acme", id)
                .sandbox(id)
                .phase(phase)
                .ip("10.2.0.1")
                .json(),
        );
    }
    s.emu.apply(
        pod("acme", "sb-noip")
            .sandbox("sb-noip")
            .phase("running")
            .no_ip()
            .json(),
    );
    s.emu.apply(
        pod("acme", "sb-stop")
            .sandbox("sb-stop")
            .phase("stopping")
            .ip("10.2.0.9")
            .json(),
    );
    let want = route("10.2.0.9:3000");
    assert_eq!(
        s.resolver
            .resolve_until(ADMIN_KEY, "sb-stop", 3000, &want, PROPAGATION)
            .await,
        want
    );
    for id in ["sb-start", "sb-idle", "sb-fail"] {
        assert_eq!(
            s.resolver.resolve(ADMIN_KEY, id, 3000).await,
            Outcome::deny(502, "sandbox_not_ready"),
            "{id}"
        );
    }
    assert_eq!(
        s.resolver.resolve(ADMIN_KEY, "sb-noip", 3000).await,
        Outcome::deny(502, "sandbox_no_ip")
    );

    // The Pod gets its IP: routable from then on.
    s.emu.apply(
        pod("acme", "sb-noip")
            .sandbox("sb-noip")
            .phase("running")
            .ip("10.2.0.3")
            .json(),
    );
    let want = route("10.2.0.3:3000");
    assert_eq!(
        s.resolver
            .resolve_until(ADMIN_KEY, "sb-noip", 3000, &want, PROPAGATION)
            .await,
        want
    );
}

#[tokio::test]
async fn unknown_ids_are_404_with_or_without_the_index() {
    let with_index = KubeStack::start(&["--index-fallback=true"]).await;
    assert_eq!(
        with_index.resolver.resolve(ADMIN_KEY, "nobody", 80).await,
        Outcome::deny(404, "sandbox_not_found")
    );

    let push_only = KubeStack::start(&["--index-fallback=false"]).await;
    push_only.emu.apply(
        pod("acme", "p")
            .sandbox("labelled")
            .phase("running")
            .ip("10.3.0.1")
            .json(),
    );
    // Wait for the Pod to be seen (through a pushed route), then evict: a labelled but
    // unpushed sandbox is unknown in the pure push model.
    let mut ctl = push_only.control().await;
    ctl.push("labelled", "acme", "p").await.unwrap();
    let want = route("10.3.0.1:80");
    assert_eq!(
        push_only
            .resolver
            .resolve_until(ADMIN_KEY, "labelled", 80, &want, PROPAGATION)
            .await,
        want
    );
    assert!(ctl.evict("labelled").await.unwrap());
    assert!(
        !ctl.evict("labelled").await.unwrap(),
        "second evict finds nothing"
    );
    assert_eq!(
        push_only.resolver.resolve(ADMIN_KEY, "labelled", 80).await,
        Outcome::deny(404, "sandbox_not_found")
    );
    assert_eq!(
        push_only.resolver.resolve(ADMIN_KEY, "nobody", 80).await,
        Outcome::deny(404, "sandbox_not_found")
    );
}

#[tokio::test]
async fn an_expired_route_falls_back_to_the_index() {
    let s = KubeStack::start(&["--route-ttl=400ms", "--sweep-interval=100ms"]).await;
    let mut ctl = s.control().await;
    s.emu.apply(
        pod("acme", "real")
            .sandbox("sb")
            .phase("running")
            .ip("10.4.0.2")
            .json(),
    );
    let want = route("10.4.0.2:80");
    assert_eq!(
        s.resolver
            .resolve_until(ADMIN_KEY, "sb", 80, &want, PROPAGATION)
            .await,
        want
    );
    // A pushed route to a Pod that does not exist overrides the index while it lives...
    ctl.push("sb", "acme", "ghost").await.unwrap();
    assert_eq!(
        s.resolver.resolve(ADMIN_KEY, "sb", 80).await,
        Outcome::deny(502, "sandbox_pod_missing")
    );
    // ...and once it expires the index answers again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.resolver.resolve(ADMIN_KEY, "sb", 80).await, want);
}

#[tokio::test]
async fn the_armed_gate_holds_running_pods_until_armed() {
    let gated = KubeStack::start(&["--armed-gate=true"]).await;
    let plain = KubeStack::start(&[]).await;
    for s in [&gated, &plain] {
        s.emu.apply(
            pod("acme", "p")
                .sandbox("sb")
                .phase("running")
                .ip("10.5.0.1")
                .json(),
        );
    }
    let want = route("10.5.0.1:80");
    assert_eq!(
        plain
            .resolver
            .resolve_until(ADMIN_KEY, "sb", 80, &want, PROPAGATION)
            .await,
        want
    );
    let not_armed = Outcome::deny(502, "sandbox_not_armed");
    assert_eq!(
        gated
            .resolver
            .resolve_until(ADMIN_KEY, "sb", 80, &not_armed, PROPAGATION)
            .await,
        not_armed
    );

    // Armed for a previous tenant of the Pod: still held.
    gated.emu.apply(
        pod("acme", "p")
            .sandbox("sb")
            .phase("running")
            .ip("10.5.0.1")
            .annotation(ARMED, "old")
            .json(),
    );
    gated.barrier().await;
    assert_eq!(gated.resolver.resolve(ADMIN_KEY, "sb", 80).await, not_armed);

    gated.emu.apply(
        pod("acme", "p")
            .sandbox("sb")
            .phase("running")
            .ip("10.5.0.1")
            .annotation(ARMED, "sb")
            .json(),
    );
    assert_eq!(
        gated
            .resolver
            .resolve_until(ADMIN_KEY, "sb", 80, &want, PROPAGATION)
            .await,
        want
    );

    // Stopping is exempt from the gate: in-flight work can finish.
    gated.emu.apply(
        pod("acme", "p")
            .sandbox("sb")
            .phase("stopping")
            .ip("10.5.0.1")
            .json(),
    );
    gated.barrier().await;
    assert_eq!(gated.resolver.resolve(ADMIN_KEY, "sb", 80).await, want);
}

#[tokio::test]
async fn a_recreated_pod_and_a_new_ip_are_followed() {
    let s = KubeStack::start(&[]).await;
    s.emu.apply(
        pod("acme", "p")
            .sandbox("sb")
            .phase("running")
            .ip("10.6.0.1")
            .json(),
    );
    let first = route("10.6.0.1:80");
    assert_eq!(
        s.resolver
            .resolve_until(ADMIN_KEY, "sb", 80, &first, PROPAGATION)
            .await,
        first
    );
    assert!(s.emu.delete(Kind::Pod, "acme", "p"));
    let gone = Outcome::deny(404, "sandbox_not_found");
    assert_eq!(
        s.resolver
            .resolve_until(ADMIN_KEY, "sb", 80, &gone, PROPAGATION)
            .await,
        gone
    );
    s.emu.apply(
        pod("acme", "p")
            .sandbox("sb")
            .phase("running")
            .ip("10.6.0.2")
            .json(),
    );
    let second = route("10.6.0.2:80");
    assert_eq!(
        s.resolver
            .resolve_until(ADMIN_KEY, "sb", 80, &second, PROPAGATION)
            .await,
        second
    );
}
