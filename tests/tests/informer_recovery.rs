//! The Pod informer rides out API-server trouble: cut watch streams, 410 Gone (a forced re-list),
//! and the API server being unreachable for a while. Decisions keep coming from the last state
//! and converge once the stream is back.

use std::time::Duration;

use sandgate_tests::emulator::Kind;
use sandgate_tests::fixtures::pod;
use sandgate_tests::process::{Outcome, eventually};
use sandgate_tests::stack::{ADMIN_KEY, KubeStack, PROPAGATION};

#[tokio::test]
async fn cut_watches_resume_without_losing_events() {
    let s = KubeStack::start(&[]).await;
    s.emu.apply(
        pod("acme", "p")
            .sandbox("sb")
            .phase("running")
            .ip("10.10.0.1")
            .json(),
    );
    let first = Outcome::Route("10.10.0.1:80".into());
    assert_eq!(
        s.resolver
            .resolve_until(ADMIN_KEY, "sb", 80, &first, PROPAGATION)
            .await,
        first
    );

    s.emu.cut_watches();
    s.emu.apply(
        pod("acme", "p")
            .sandbox("sb")
            .phase("running")
            .ip("10.10.0.2")
            .json(),
    );
    let second = Outcome::Route("10.10.0.2:80".into());
    assert_eq!(
        s.resolver
            .resolve_until(ADMIN_KEY, "sb", 80, &second, PROPAGATION)
            .await,
        second
    );
}

#[tokio::test]
async fn gone_410_forces_a_relist_that_converges() {
    let s = KubeStack::start(&[]).await;
    s.emu.apply(
        pod("acme", "keep")
            .sandbox("sb-keep")
            .phase("running")
            .ip("10.11.0.1")
            .json(),
    );
    s.emu.apply(
        pod("acme", "drop")
            .sandbox("sb-drop")
            .phase("running")
            .ip("10.11.0.2")
            .json(),
    );
    let keep = Outcome::Route("10.11.0.1:80".into());
    let dropped = Outcome::Route("10.11.0.2:80".into());
    assert_eq!(
        s.resolver
            .resolve_until(ADMIN_KEY, "sb-drop", 80, &dropped, PROPAGATION)
            .await,
        dropped
    );
    let lists_before = s.emu.stats().kind(Kind::Pod).lists;

    // While the watch is down, history is compacted: the resumed watch gets 410 and the
    // informer must re-list to learn what changed, including a delete it never saw as an event.
    s.emu.compact();
    s.emu.cut_watches();
    s.emu.apply(
        pod("acme", "keep")
            .sandbox("sb-keep")
            .phase("running")
            .ip("10.11.0.9")
            .json(),
    );
    assert!(s.emu.delete(Kind::Pod, "acme", "drop"));
    s.emu.compact();

    let moved = Outcome::Route("10.11.0.9:80".into());
    assert_eq!(
        s.resolver
            .resolve_until(ADMIN_KEY, "sb-keep", 80, &moved, PROPAGATION)
            .await,
        moved
    );
    let gone = Outcome::deny(404, "sandbox_not_found");
    assert_eq!(
        s.resolver
            .resolve_until(ADMIN_KEY, "sb-drop", 80, &gone, PROPAGATION)
            .await,
        gone
    );
    assert!(
        s.emu.stats().kind(Kind::Pod).lists > lists_before,
        "a 410 must lead to a re-list"
    );
    assert_ne!(keep, moved);
}

#[tokio::test]
async fn an_unreachable_api_server_keeps_the_last_state_then_converges() {
    let s = KubeStack::start(&["--sync-loss-grace=1s"]).await;
    s.emu.apply(
        pod("acme", "p")
            .sandbox("sb")
            .phase("running")
            .ip("10.12.0.1")
            .json(),
    );
    let before = Outcome::Route("10.12.0.1:80".into());
    assert_eq!(
        s.resolver
            .resolve_until(ADMIN_KEY, "sb", 80, &before, PROPAGATION)
            .await,
        before
    );

    s.emu.set_unreachable(true);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Still serving from what it knew, alive, but no longer ready once the grace has passed:
    // this replica's view may be stale.
    assert_eq!(s.resolver.resolve(ADMIN_KEY, "sb", 80).await, before);
    assert_eq!(s.resolver.http_get("/healthz", None).await.0, 200);
    let resolver = &s.resolver;
    let status = || async move { resolver.http_get("/readyz", None).await.0 };
    assert!(
        eventually(Duration::from_secs(5), || async { status().await == 503 }).await,
        "readiness did not reflect the lost sync"
    );

    s.emu.apply(
        pod("acme", "p")
            .sandbox("sb")
            .phase("running")
            .ip("10.12.0.2")
            .json(),
    );
    s.emu.set_unreachable(false);
    let after = Outcome::Route("10.12.0.2:80".into());
    // kube-rs backs off exponentially while the server is down; allow for one long step.
    let got = s
        .resolver
        .resolve_until(ADMIN_KEY, "sb", 80, &after, Duration::from_secs(20))
        .await;
    assert_eq!(got, after);
    assert!(
        eventually(Duration::from_secs(20), || async { status().await == 200 }).await,
        "readiness did not come back"
    );
}
