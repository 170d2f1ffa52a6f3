//! The filter's decision cache (wasm entry): hits skip the resolver and still count as activity;
//! a change the resolver sees (a Pod handed to another sandbox, a revoked key) reaches the cache
//! through the generation stream, long before any TTL; a silent resolver stops the cache after
//! its TTL; `ttl_ms: 0` turns it off.
//!
//! Most cases keep answers for [`LONG_TTL`], far longer than they run: whatever changes within
//! them can only have been pushed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sandgate_tests::echo::Identity;
use sandgate_tests::emulator::Kind;
use sandgate_tests::fixtures::pod;
use sandgate_tests::gateway::{Gateway, TEST_CALLOUT_TIMEOUT};
use sandgate_tests::http;
use sandgate_tests::process::{Outcome, eventually};
use sandgate_tests::stack::{ACME_KEY, ADMIN_KEY, KEYS_NAMESPACE, PROPAGATION};

const LONG_TTL: Duration = Duration::from_secs(60);
const ROUTED: &str = r#"sandgate_resolves_total{outcome="route"}"#;
const HITS: &str = "sandgate_filter_cache_hits_total";
const WATCHERS: &str = "sandgate_generation_watchers";

/// A cached gateway with sb-a served from 127.0.0.11 as `identity` says; returns its path.
async fn serving(ttl: Duration, identity: Identity) -> (Gateway, String) {
    let mut gw = Gateway::start_cached(ttl).await;
    let port = gw
        .sandbox_as("acme", "pod-a", "sb-a", identity, "127.0.0.11")
        .await;
    (gw, format!("/sandboxes/sb-a/{port}/"))
}

/// Sends `path` until a request is answered from the filter's cache.
async fn warm(gw: &Gateway, path: &str, headers: &[(&str, &str)]) {
    gw.kube.resolver.warm_cache(|| gw.get(path, headers)).await;
}

#[tokio::test]
async fn hits_skip_the_resolver_and_still_count_as_activity() {
    let (gw, path) = serving(LONG_TTL, Identity::new("sb-a")).await;
    let key = [("x-api-key", ACME_KEY)];
    warm(&gw, &path, &key).await;
    let mut control = gw.kube.control().await;
    let first_seen = control.last_active().await.expect("last active")["sb-a"].clone();
    let routed = gw.kube.resolver.metric(ROUTED).await;
    // Last-active has whole seconds: only a touch in a later second reads as later.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..100 {
        let r = gw.get(&path, &key).await;
        assert_eq!(
            (r.status, r.json()["sandbox"].as_str()),
            (200, Some("sb-a"))
        );
    }
    assert_eq!(
        gw.kube.resolver.metric(ROUTED).await,
        routed,
        "answers kept for a minute must not be asked for again"
    );
    // The hits reach the resolver in the next flush (every second) as activity.
    let r = &gw.kube.resolver;
    assert!(
        eventually(PROPAGATION, || async { r.metric(HITS).await >= 100 }).await,
        "hits not reported: {}",
        r.metric(HITS).await
    );
    let later = control
        .last_active_until(PROPAGATION, |m| {
            m.get("sb-a").is_some_and(|t| *t > first_seen)
        })
        .await;
    assert!(later["sb-a"] > first_seen, "{later:?} vs {first_seen}");
}

#[tokio::test]
async fn with_the_cache_off_every_request_is_resolved() {
    let (gw, path) = serving(Duration::ZERO, Identity::new("sb-a")).await;
    let routed = gw.kube.resolver.metric(ROUTED).await;
    for _ in 0..20 {
        assert_eq!(gw.get(&path, &[("x-api-key", ACME_KEY)]).await.status, 200);
    }
    assert_eq!(gw.kube.resolver.metric(ROUTED).await, routed + 20);
    assert_eq!(
        gw.kube.resolver.metric(WATCHERS).await,
        0,
        "no stream when off"
    );
    assert_eq!(gw.kube.resolver.metric(HITS).await, 0);
}

/// One answer seen by a hammering client.
struct Seen {
    status: u16,
    served: String,
    started: Instant,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_handed_to_another_sandbox_is_not_reached_under_the_old_id() {
    let identity = Identity::new("sb-a");
    let (gw, path) = serving(LONG_TTL, identity.clone()).await;
    warm(&gw, &path, &[("x-api-key", ACME_KEY)]).await;
    let (addr, stop) = (gw.envoy.addr, Arc::new(AtomicBool::new(false)));
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, seen, path) = (Arc::clone(&stop), Arc::clone(&seen), path.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let r = http::send(addr, "GET", &path, &[("x-api-key", ACME_KEY)]).await;
                let (status, served) = match r {
                    Ok(r) => (r.status, r.json()["sandbox"].as_str().unwrap_or("").into()),
                    Err(_) => (0, String::new()),
                };
                seen.lock().push(Seen {
                    status,
                    served,
                    started,
                });
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The hand-over: released (no sandbox label), the gateway stops routing the old id, a
    // drain, then the Pod's process serves sb-b.
    let released_at = Instant::now();
    gw.kube
        .emu
        .apply(pod("acme", "pod-a").phase("idle").ip("127.0.0.11").json());
    let port = path.trim_end_matches('/').rsplit('/').next().unwrap_or("0");
    let r = &gw.kube.resolver;
    let port: u32 = port.parse().expect("port in path");
    assert!(
        eventually(PROPAGATION, || async {
            !matches!(r.resolve(ADMIN_KEY, "sb-a", port).await, Outcome::Route(_))
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    identity.set("sb-b");
    let switched_at = Instant::now();
    gw.kube.emu.apply(
        pod("acme", "pod-a")
            .sandbox("sb-b")
            .phase("running")
            .ip("127.0.0.11")
            .json(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }

    let seen = std::mem::take(&mut *seen.lock());
    let misroutes = seen
        .iter()
        .filter(|s| s.status == 200 && s.served != "sb-a")
        .count();
    assert_eq!(misroutes, 0, "answered by another sandbox under sb-a's id");
    let r = &gw.kube.resolver;
    assert!(
        eventually(PROPAGATION, || async { r.metric(HITS).await > 0 }).await,
        "the hammering never hit the cache"
    );
    // Once the Pod serves sb-b, nothing serves sb-a: every later request is refused, although
    // the answers that routed it were kept for a minute.
    let after: Vec<_> = seen.iter().filter(|s| s.started > switched_at).collect();
    assert!(!after.is_empty(), "no request after the hand-over");
    for s in after {
        assert!(
            s.status == 502 || s.status == 404,
            "{} {}",
            s.status,
            s.served
        );
    }
    assert!(
        seen.iter()
            .any(|s| s.started > released_at && (s.status == 502 || s.status == 404)),
        "no refusal after the release"
    );
}

#[tokio::test]
async fn a_revoked_key_is_refused_long_before_the_ttl() {
    let (gw, path) = serving(LONG_TTL, Identity::new("sb-a")).await;
    let key = [("x-api-key", ACME_KEY)];
    warm(&gw, &path, &key).await;
    let revoked_at = Instant::now();
    assert!(gw.kube.emu.delete(Kind::Secret, KEYS_NAMESPACE, "key-acme"));
    let r = gw.get_until(&path, &key, 401, PROPAGATION).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(revoked_at.elapsed() < LONG_TTL);
    assert_eq!(r.json()["code"], "invalid_api_key");
    // And it stays refused: the 401 itself may be kept, the route may not come back.
    for _ in 0..10 {
        assert_eq!(gw.get(&path, &key).await.status, 401);
    }
}

#[tokio::test]
async fn a_silent_resolver_stops_the_cache_after_its_ttl() {
    const TTL: Duration = Duration::from_millis(400);
    let (mut gw, path) = serving(TTL, Identity::new("sb-a")).await;
    let key = [("x-api-key", ACME_KEY)];
    warm(&gw, &path, &key).await;
    // Hung, not gone: the stream stays open and says nothing.
    gw.kube.resolver.freeze(true);
    let frozen_at = Instant::now();
    let mut refused = 0;
    while frozen_at.elapsed() < TTL + TEST_CALLOUT_TIMEOUT * 2 {
        let started = Instant::now();
        let r = gw.get(&path, &key).await;
        match r.status {
            200 => assert!(
                started < frozen_at + TTL,
                "answered from the cache {:?} after the resolver hung",
                started - frozen_at
            ),
            503 => refused += 1,
            other => panic!("{other}: {}", r.body),
        }
    }
    gw.kube.resolver.freeze(false);
    assert!(refused > 0, "never refused while the resolver hung");
}
