//! Health, readiness and metrics on the resolver's HTTP port; graceful shutdown.

use sandgate_tests::emulator::Emulator;
use sandgate_tests::fixtures::pod;
use sandgate_tests::process::{Outcome, Resolver};
use sandgate_tests::stack::{ADMIN_KEY, KubeStack, PROPAGATION};

#[tokio::test]
async fn ready_only_after_the_first_sync() {
    let emu = Emulator::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = emu.write_kubeconfig(dir.path());
    emu.set_down(true);
    let r = Resolver::start([
        "--pod-source=kube".to_string(),
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--admin-key={ADMIN_KEY}"),
    ])
    .await;
    assert_eq!(
        r.http_get("/healthz", None).await.0,
        200,
        "alive while unsynced"
    );
    // Once the resolver has been refused by the API server it has certainly not synced.
    let refused = emu.wait_for(PROPAGATION, |st| st.rejected >= 2).await;
    assert!(refused, "the resolver kept asking the API server");
    assert_eq!(r.http_get("/readyz", None).await.0, 503);
    emu.set_down(false);
    r.wait_ready().await;
}

#[tokio::test]
async fn metrics_count_outcomes_and_informer_events() {
    let s = KubeStack::start(&[]).await;
    s.emu.apply(
        pod("acme", "p")
            .sandbox("sb")
            .phase("running")
            .ip("10.13.0.1")
            .json(),
    );
    let ok = Outcome::Route("10.13.0.1:80".into());
    assert_eq!(
        s.resolver
            .resolve_until(ADMIN_KEY, "sb", 80, &ok, PROPAGATION)
            .await,
        ok
    );
    // resolve_until may itself have seen "not found" while the Pod was on its way: count the
    // one refusal made here as a difference.
    let not_found = r#"sandgate_resolves_total{outcome="sandbox_not_found"}"#;
    let before = s.resolver.metric(not_found).await;
    s.resolver.resolve(ADMIN_KEY, "nobody", 80).await;
    s.control().await.push("sb", "acme", "p").await.unwrap();
    let (status, text) = s.resolver.http_get("/metrics", None).await;
    assert_eq!(status, 200);
    assert_eq!(s.resolver.metric(not_found).await, before + 1, "{text}");
    for needle in [
        r#"sandgate_resolves_total{outcome="route"}"#,
        r#"sandgate_informer_events_total{resource="pods",event="apply"}"#,
        r#"sandgate_informer_events_total{resource="secrets",event="init_done"}"#,
        "sandgate_route_cache_entries 1",
        "sandgate_pods 1",
        "sandgate_resolve_duration_seconds_bucket",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
}

#[tokio::test]
async fn sigterm_stops_cleanly() {
    let mut s = KubeStack::start(&[]).await;
    let status = s.resolver.terminate().await;
    assert!(status.success(), "{status}");
    assert!(s.resolver.logs().contains("shutting down"));
}
