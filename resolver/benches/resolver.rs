//! Criterion benchmarks of the resolver's hot path, in-process (no gRPC, no Envoy).
//!
//! Ids are read by a driver: `target/criterion/<group>/<function>/new/estimates.json`.
//! * `cache_get/{10k,1m}`: [`RouteCache::get`] of a present id.
//! * `decide/{pushed_route,label_index,denied_wrong_tenant}`: one [`Gateway::decide`] with a
//!   tenant key over 10k running Pods.
//! * `activity/touch`: [`ActivityTracker::touch`] of a known id among 10k.
//! * `keys/{unknown,near_miss,valid}`: [`KeyStore::authenticate`] among 10k tenant keys of a
//!   key nobody has, of a valid key with its last character changed, and of a valid key. The
//!   first two must cost the same: timing must not tell a guesser that a guess was close.
//! * `tokens/verify`: [`TokenKeys::verify`] of a valid access token (parse, the MAC with its
//!   signing key, the expiry) with three signing keys held, as in a rotation: the newest signs,
//!   the older two still verify.
//!
//! Every benchmark asserts once before measuring that it exercises the path it is named after
//! (and, where a TTL could expire mid-run, again after): a bench that quietly measures a miss or
//! a refusal would report a number for the wrong code.

use std::cell::OnceCell;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use sandgate_core::{Decision, DenyCode};
use sandgate_resolver::activity::ActivityTracker;
use sandgate_resolver::cache::RouteCache;
use sandgate_resolver::clusters::ClusterStore;
use sandgate_resolver::clusters::dns::DnsCache;
use sandgate_resolver::decide::{DecideConfig, Facts, Gateway};
use sandgate_resolver::hold::{HoldConfig, Holds};
use sandgate_resolver::keys::limit::FailureLimiter;
use sandgate_resolver::keys::{KeySet, KeyStore, Source, TenantKey, digest};
use sandgate_resolver::metrics::Metrics;
use sandgate_resolver::pods::{Phase, PodStore, PodView};
use sandgate_resolver::tokens::{Lifetimes, Mint, SigningKey, Source as TokenSource, TokenKeys};

/// The resolver's defaults (`--route-ttl 60s`, `--route-cache-shards 64`, see config.rs), so the
/// cache is measured as it is deployed.
const ROUTE_TTL: Duration = Duration::from_secs(60);
const ROUTE_SHARDS: usize = 64;

/// Prime and coprime with every size used here (10^4, 10^6 have only factors 2 and 5), so
/// `k * STRIDE % n` visits every id once, in an order that jumps across the whole key space:
/// consecutive probes hit unrelated shards and buckets instead of one hot, cached key.
const STRIDE: usize = 7919;

const TENANT_NS: &str = "acme";
const TENANT_KEY: &str = "acme-key";
const OTHER_TENANT_KEY: &str = "globex-key";
const PODS: usize = 10_000;
const PORT: u32 = 8080;

fn sandbox_id(i: usize) -> String {
    format!("sb-{i:07}")
}

fn pod_name(i: usize) -> String {
    format!("pod-{i:07}")
}

/// 10.0.0.0/8 addresses, one per Pod.
fn pod_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32))
}

/// All `n` indices in stride order; probes cycle through this.
fn stride_order(n: usize) -> Vec<usize> {
    // STRIDE is prime, so coprime with n exactly when it does not divide n.
    assert!(!n.is_multiple_of(STRIDE), "stride must be coprime with {n}");
    (0..n).map(|k| k * STRIDE % n).collect()
}

/// Calls `f` on the next probe each iteration, wrapping around; a compare instead of `%` keeps
/// a division out of the measured loop.
fn cycle<'a, T>(probes: &'a [T]) -> impl FnMut() -> &'a T {
    let mut i = 0;
    move || {
        let p = &probes[i];
        i += 1;
        if i == probes.len() {
            i = 0;
        }
        p
    }
}

// --- cache_get ---------------------------------------------------------------------------------

/// A cache with `n` routes and the ids to probe, in stride order.
fn filled_cache(n: usize) -> (RouteCache, Vec<String>) {
    let ids: Vec<String> = stride_order(n).into_iter().map(sandbox_id).collect();
    let pods: Vec<String> = (0..n).map(pod_name).collect();
    let cache = RouteCache::new(ROUTE_TTL, ROUTE_SHARDS);
    // push_many, not n × push: a single push copies its whole shard, which makes filling 1M
    // routes quadratic (minutes); the bulk push copies each shard once.
    cache.push_many(
        ids.iter()
            .zip(&pods)
            .map(|(id, pod)| (id.as_str(), TENANT_NS, pod.as_str())),
    );
    assert_eq!(cache.len(), n);
    assert!(
        ids.iter().all(|id| cache.get(id).is_some()),
        "every probed id must be a hit"
    );
    (cache, ids)
}

fn bench_cache_get(c: &mut Criterion) {
    let mut group = c.benchmark_group("cache_get");
    for (name, n) in [("10k", 10_000), ("1m", 1_000_000)] {
        // Built on first use, so a filtered run (`-- decide`) does not pay for the 1M fill.
        let state = OnceCell::new();
        group.bench_function(name, |b| {
            let (cache, ids) = state.get_or_init(|| filled_cache(n));
            let mut next = cycle(ids);
            b.iter(|| cache.get(black_box(next())));
            // Routes expire after ROUTE_TTL: a measurement longer than that would have timed
            // misses. Fail rather than report them.
            assert!(
                cache.get(&ids[0]).is_some(),
                "routes expired during measurement; keep it under {ROUTE_TTL:?}"
            );
        });
    }
    group.finish();
}

// --- decide ------------------------------------------------------------------------------------

/// Two Gateways over the same keys and 10k running Pods in the tenant's namespace: `pushed` has
/// a route pushed for every sandbox, `indexed` has none and finds Pods by the sandbox-id label.
/// Built as serve.rs builds it, with the default DecideConfig (index fallback on, armed gate off).
struct Gateways {
    pushed: Gateway,
    indexed: Gateway,
    /// Sandbox ids in stride order, with the destination each must route to.
    probes: Vec<(String, String)>,
}

fn gateways() -> Gateways {
    let keys = Arc::new(KeyStore::new(false));
    // As the keys file delivers them: one key per tenant namespace, plus an admin key that no
    // request presents (authenticate compares every admin digest first, as in production).
    keys.set_source(
        Source::KeysFile,
        KeySet {
            admins: vec![digest("admin-key")],
            tenants: [(TENANT_KEY, TENANT_NS), (OTHER_TENANT_KEY, "globex")]
                .into_iter()
                .map(|(key, ns)| TenantKey {
                    digest: digest(key),
                    namespace: ns.into(),
                    expires_at: None,
                })
                .collect(),
        },
    );
    let pods = Arc::new(PodStore::default());
    // A full list, as the informer's initial sync or the inventory applies it.
    pods.replace_all((0..PODS).map(|i| {
        let name = pod_name(i);
        PodView {
            uid: format!("uid-{name}").into(),
            namespace: TENANT_NS.into(),
            name: name.into(),
            sandbox_id: Some(sandbox_id(i).into()),
            phase: Phase::Running,
            ip: Some(pod_ip(i)),
            armed_for: None,
            last_active: None,
            resource_version: 1,
        }
    }));
    assert_eq!(pods.len(), PODS);

    let config = DecideConfig {
        index_fallback: true,
        armed_gate: false,
        not_found_502: false,
        wake_unknown: false,
    };
    let gateway = |routes: RouteCache| Gateway {
        keys: Arc::clone(&keys),
        routes: Arc::new(routes),
        pods: Arc::clone(&pods),
        activity: Arc::new(ActivityTracker::default()),
        metrics: Arc::new(Metrics::default()),
        clusters: Arc::new(ClusterStore::new("", Arc::new(Metrics::default()))),
        dns: Arc::new(DnsCache::system(
            Duration::from_secs(30),
            Duration::from_secs(1),
        )),
        // The shipped limit, so its per-request lookup is part of what decide costs.
        key_failures: Arc::new(FailureLimiter::new(30, Duration::from_secs(60))),
        tokens: Arc::new(TokenKeys::new(Lifetimes {
            default: Duration::from_secs(3600),
            max: Duration::from_secs(86_400),
        })),
        holds: Arc::new(Holds::new(
            HoldConfig::OFF,
            None,
            Arc::new(Metrics::default()),
        )),
        config,
    };
    let pushed = gateway(RouteCache::new(ROUTE_TTL, ROUTE_SHARDS));
    // One push per sandbox, as the controller does (10k single pushes are cheap).
    for i in 0..PODS {
        pushed.routes.push(&sandbox_id(i), TENANT_NS, &pod_name(i));
    }
    let indexed = gateway(RouteCache::new(ROUTE_TTL, ROUTE_SHARDS));
    let probes = stride_order(PODS)
        .into_iter()
        .map(|i| {
            let dest = std::net::SocketAddr::new(pod_ip(i), PORT as u16).to_string();
            (sandbox_id(i), dest)
        })
        .collect();
    Gateways {
        pushed,
        indexed,
        probes,
    }
}

/// A local decision never waits (only a peer's DNS lookup does), so polling it once on this
/// thread measures the decision, not an executor.
fn decide(gw: &Gateway, key: &str, id: &str) -> Decision {
    futures::executor::block_on(gw.decide(Facts {
        api_key: key,
        sandbox_id: id,
        port: PORT,
        forwarded: false,
        client: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        other_credentials: &[],
        e2b: false,
        access_token: "",
    }))
}

/// Every probe routes to its own Pod through `gw` with the tenant key.
fn assert_all_route(gw: &Gateway, probes: &[(String, String)]) {
    for (id, dest) in probes {
        assert_eq!(
            decide(gw, TENANT_KEY, id),
            Decision::Route {
                destination: dest.clone(),
                strip_credentials: 0,
            },
            "{id}"
        );
    }
}

fn assert_routes_live(gw: &Gateway, probes: &[(String, String)]) {
    assert!(
        gw.routes.get(&probes[0].0).is_some(),
        "pushed routes expired during measurement; keep it under {ROUTE_TTL:?}"
    );
}

fn bench_decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    let state = OnceCell::new();
    let setup = || {
        let g = gateways();
        // pushed: every id has a live route, so `locate` never reaches the index.
        assert!(
            g.probes
                .iter()
                .all(|(id, _)| g.pushed.routes.get(id).is_some())
        );
        assert_all_route(&g.pushed, &g.probes);
        // indexed: the cache is empty, so every Route below came from the label index.
        assert!(g.indexed.routes.is_empty());
        assert_all_route(&g.indexed, &g.probes);
        // The other tenant's key is refused with 403 at the tenant check of the pushed route.
        for (id, _) in &g.probes {
            match decide(&g.pushed, OTHER_TENANT_KEY, id) {
                Decision::Deny(d) => {
                    assert_eq!(d.code, DenyCode::Forbidden, "{id}");
                    assert_eq!(d.code.http_status(), 403);
                }
                other => panic!("{id}: another tenant's key must be refused, got {other:?}"),
            }
        }
        g
    };

    group.bench_function("pushed_route", |b| {
        let g = state.get_or_init(setup);
        let mut next = cycle(&g.probes);
        b.iter(|| decide(&g.pushed, black_box(TENANT_KEY), black_box(&next().0)));
        assert_routes_live(&g.pushed, &g.probes);
    });
    group.bench_function("label_index", |b| {
        let g = state.get_or_init(setup);
        let mut next = cycle(&g.probes);
        b.iter(|| decide(&g.indexed, black_box(TENANT_KEY), black_box(&next().0)));
    });
    group.bench_function("denied_wrong_tenant", |b| {
        let g = state.get_or_init(setup);
        let mut next = cycle(&g.probes);
        b.iter(|| decide(&g.pushed, black_box(OTHER_TENANT_KEY), black_box(&next().0)));
        // Refused at the pushed route's namespace, not after an expiry sent it to the index.
        assert_routes_live(&g.pushed, &g.probes);
    });
    group.finish();
}

// --- activity ----------------------------------------------------------------------------------

fn bench_activity(c: &mut Criterion) {
    let mut group = c.benchmark_group("activity");
    // Criterion calls the closure once per sample: build the tracker once.
    let state = OnceCell::new();
    group.bench_function("touch", |b| {
        let (activity, ids) = state.get_or_init(|| {
            let activity = ActivityTracker::default();
            let ids: Vec<String> = stride_order(PODS).into_iter().map(sandbox_id).collect();
            for id in &ids {
                activity.touch(id);
            }
            // Every probe is known, so touch takes the read-lock + fetch_max path, never the
            // first-touch insert.
            assert_eq!(activity.len(), PODS);
            assert!(ids.iter().all(|id| activity.get(id).is_some()));
            (activity, ids)
        });
        let mut next = cycle(ids);
        b.iter(|| activity.touch(black_box(next())));
        assert_eq!(activity.len(), PODS, "touch of a known id must not insert");
    });
    group.finish();
}

// --- keys --------------------------------------------------------------------------------------

fn bench_keys(c: &mut Criterion) {
    let mut group = c.benchmark_group("keys");
    let keys = KeyStore::new(false);
    let tenant_key = |i: usize| format!("tenant-key-{i:07}-0123456789abcdef");
    keys.set_source(
        Source::KeysFile,
        KeySet {
            admins: vec![digest("admin-key")],
            tenants: (0..PODS)
                .map(|i| TenantKey {
                    digest: digest(&tenant_key(i)),
                    namespace: TENANT_NS.into(),
                    expires_at: None,
                })
                .collect(),
        },
    );
    let valid = tenant_key(PODS / 2);
    let mut near_miss = valid.clone();
    near_miss.pop();
    near_miss.push('x');
    let unknown = "zzzzzz-not-a-key-at-all-0123456789".to_string();
    let now = jiff::Timestamp::now();
    for (name, key, ok) in [
        ("unknown", &unknown, false),
        ("near_miss", &near_miss, false),
        ("valid", &valid, true),
    ] {
        assert_eq!(keys.authenticate(key, now).is_ok(), ok, "{name}");
        group.bench_function(name, |b| {
            b.iter(|| keys.authenticate(black_box(key), now).is_ok())
        });
    }
    group.finish();
}

// --- tokens ------------------------------------------------------------------------------------

fn bench_tokens(c: &mut Criterion) {
    let mut group = c.benchmark_group("tokens");
    let tokens = TokenKeys::new(Lifetimes {
        default: Duration::from_secs(3600),
        max: Duration::from_secs(86_400),
    });
    // A rotation under way: the greatest id signs, the two before it still verify.
    tokens.set_source(
        TokenSource::File,
        [("2026-10-01", 1u8), ("2026-11-01", 2), ("2026-12-01", 3)]
            .into_iter()
            .map(|(id, fill)| SigningKey::new(id, vec![fill; 32]).expect("a valid signing key"))
            .collect(),
    );
    assert_eq!(tokens.count(), 3);
    let now = u64::try_from(jiff::Timestamp::now().as_second()).expect("after 1970");
    // As a tenant mints one for a browser: one sandbox, one port, bound to the minting key.
    let minted = tokens
        .mint(
            &Mint {
                namespace: TENANT_NS,
                sandbox_id: &sandbox_id(PODS / 2),
                ports: vec![PORT as u16],
                ttl: None,
                minted_by: Some(([0x5a; 8], None)),
            },
            now,
        )
        .expect("minting with a signing key held");
    assert_eq!(minted.claims.key_id, "2026-12-01");
    let verified = tokens
        .verify(&minted.token, now)
        .expect("the token verifies");
    assert_eq!(verified, minted.claims);
    // The MAC is what is checked: the same claims under another MAC are refused.
    let forged = minted.claims.encode(&[0; sandgate_core::token::MAC_LEN]);
    assert_eq!(
        tokens.verify(&forged, now).map_err(|d| d.code),
        Err(DenyCode::InvalidAccessToken)
    );
    group.bench_function("verify", |b| {
        b.iter(|| {
            tokens
                .verify(black_box(&minted.token), black_box(now))
                .is_ok()
        })
    });
    // The token lives an hour: a measurement cannot outlast it, but fail rather than time
    // refusals if one did.
    let later = u64::try_from(jiff::Timestamp::now().as_second()).expect("after 1970");
    assert!(
        tokens.verify(&minted.token, later).is_ok(),
        "the token expired during measurement"
    );
    group.finish();
}

criterion_group!(
    benches,
    bench_cache_get,
    bench_decide,
    bench_activity,
    bench_keys,
    bench_tokens
);
criterion_main!(benches);
