//! Faults under way: the resolver dies and comes back while clients keep sending, and Envoy is
//! replaced while the resolver keeps its routing state. Every entry (the native entry's gateway
//! is its Envoy: its restart is Envoy's).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sandgate_tests::every_entry;
use sandgate_tests::fixtures::{LAST_ACTIVE, pod};
use sandgate_tests::gateway::{Entry, Gateway, TEST_CALLOUT_TIMEOUT};
use sandgate_tests::http;
use sandgate_tests::process::eventually;
use sandgate_tests::stack::{ACME_KEY, PROPAGATION};

const UP: u8 = 0;
const DOWN: u8 = 1;
const BACK: u8 = 2;

struct Sample {
    sent_in: u8,
    answered_in: u8,
    status: u16,
    code: String,
    took: Duration,
    at: Instant,
}

async fn a_resolver_restart_fails_requests_only_while_it_is_down(entry: Entry) {
    let mut gw = Gateway::start_args(entry, &["--last-active-interval=200ms"]).await;
    let port = gw.sandbox("acme", "pod-a", "sb-a", "127.0.0.11").await;
    let path = format!("/sandboxes/sb-a/{port}/");
    let (addr, phase, stop) = (
        gw.envoy.addr,
        Arc::new(AtomicU8::new(UP)),
        Arc::new(AtomicBool::new(false)),
    );
    let samples = Arc::new(Mutex::new(Vec::<Sample>::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (phase, stop, samples, path) = (
            Arc::clone(&phase),
            Arc::clone(&stop),
            Arc::clone(&samples),
            path.clone(),
        );
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let sent_in = phase.load(Ordering::SeqCst);
                let started = Instant::now();
                let r = http::send(addr, "GET", &path, &[("x-api-key", ACME_KEY)]).await;
                let (status, body) = r.map(|r| (r.status, r.body)).unwrap_or((0, String::new()));
                let code = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["code"].as_str().map(str::to_string))
                    .unwrap_or_default();
                samples.lock().push(Sample {
                    sent_in,
                    answered_in: phase.load(Ordering::SeqCst),
                    status,
                    code,
                    took: started.elapsed(),
                    at: Instant::now(),
                });
            }
        }));
    }
    // Serving: the annotation carries sb-a's activity before the resolver goes.
    let pod_annotation = |gw: &Gateway| {
        gw.kube
            .emu
            .get(sandgate_tests::emulator::Kind::Pod, "acme", "pod-a")
            .and_then(|p| {
                p["metadata"]["annotations"][LAST_ACTIVE]
                    .as_str()
                    .map(str::to_string)
            })
    };
    assert!(
        eventually(PROPAGATION, || async { pod_annotation(&gw).is_some() }).await,
        "no last-active written before the fault"
    );
    let before = pod_annotation(&gw).unwrap_or_default();
    tokio::time::sleep(Duration::from_millis(500)).await;

    phase.store(DOWN, Ordering::SeqCst);
    gw.stop_decisions().await;
    let killed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let back_at = Instant::now();
    phase.store(BACK, Ordering::SeqCst);
    gw.start_decisions().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }

    let samples = std::mem::take(&mut *samples.lock());
    let wholly = |p: u8| {
        samples
            .iter()
            .filter(move |s| s.sent_in == p && s.answered_in == p)
    };
    assert!(wholly(UP).count() > 10, "too little load before the fault");
    for s in wholly(UP) {
        assert_eq!(s.status, 200, "before the fault: {} {}", s.status, s.code);
    }
    for s in wholly(DOWN) {
        // The filter may still answer from its cache until its stream notices the resolver
        // is gone, and never after the cache TTL.
        if s.status == 200 && s.at - s.took < killed_at + entry.staleness() {
            continue;
        }
        // The native entry's gateway is its Envoy: while it is down nothing listens.
        if !entry.resolver_process() && s.status == 0 {
            continue;
        }
        assert_eq!((s.status, s.code.as_str()), (503, "resolver_unavailable"));
        assert!(
            s.took < TEST_CALLOUT_TIMEOUT + Duration::from_secs(2),
            "took {:?}",
            s.took
        );
    }
    assert!(
        wholly(DOWN).count() > 0,
        "no request while the resolver was down"
    );
    // Back: failures only until the first success, then every request succeeds.
    let recovered = samples
        .iter()
        .filter(|s| s.sent_in == BACK && s.status == 200)
        .map(|s| s.at)
        .min()
        .expect("no request succeeded after the restart");
    for s in samples
        .iter()
        .filter(|s| s.sent_in == BACK && s.at > recovered)
    {
        let started = s.at - s.took;
        if started > recovered {
            assert_eq!(s.status, 200, "after recovery: {} {}", s.status, s.code);
        }
    }
    println!(
        "resolver restart ({entry:?}): {} requests, recovered {:?} after the restart began",
        samples.len(),
        recovered - back_at
    );

    // History: the restarted resolver starts from the Pods' annotations.
    let mut control = gw.kube.control().await;
    let after = control
        .last_active_until(PROPAGATION, |m| m.contains_key("sb-a"))
        .await;
    let seen = after.get("sb-a").cloned().unwrap_or_default();
    assert!(seen >= before, "last-active went back: {seen} < {before}");
}

async fn a_new_envoy_finds_the_routing_state_where_it_was(entry: Entry) {
    // Pure push model: only the routes the resolver holds can route.
    let mut gw = Gateway::start_args(entry, &["--index-fallback=false"]).await;
    let port = gw.echo("sb-a", "127.0.0.11").await;
    gw.kube.emu.apply(
        pod("acme", "pod-a")
            .sandbox("sb-a")
            .phase("running")
            .ip("127.0.0.11")
            .json(),
    );
    // What the controller does when sb-a starts.
    let push = async |gw: &Gateway| {
        let mut control = gw.kube.control().await;
        control.push("sb-a", "acme", "pod-a").await.expect("push");
    };
    push(&gw).await;
    let path = format!("/sandboxes/sb-a/{port}/");
    let key = [("x-api-key", ACME_KEY)];
    let r = gw.get_until(&path, &key, 200, PROPAGATION).await;
    assert_eq!(r.status, 200, "{}", r.body);

    gw.replace_envoy().await;
    if !entry.resolver_process() {
        // The native entry's pushed routes lived in the Envoy that went, as a resolver's live
        // in its process: the new gateway knows the Pod, and routes once the controller
        // pushes again.
        let r = gw.get(&path, &key).await;
        assert_eq!(r.json()["code"], "sandbox_not_found", "{}", r.body);
        push(&gw).await;
    }
    let r = gw.get(&path, &key).await;
    assert_eq!(
        (r.status, r.json()["sandbox"].as_str()),
        (200, Some("sb-a")),
        "{}",
        r.body
    );
    let seen = gw
        .kube
        .control()
        .await
        .last_active()
        .await
        .expect("last-active");
    assert!(seen.contains_key("sb-a"));
}

every_entry!(
    a_resolver_restart_fails_requests_only_while_it_is_down,
    a_new_envoy_finds_the_routing_state_where_it_was,
);
