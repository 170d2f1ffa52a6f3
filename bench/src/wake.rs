//! Wake on traffic (issue 19), measured on the real path: the resolver watching the Kubernetes
//! API emulator, with holds on (`--hold-budget`).
//!
//! * **Release**: through Envoy, each entry: a fresh sandbox whose Pod is `starting`, one
//!   request held by the resolver (its `sandgate_held_requests` says so), then the Pod flipped
//!   to `running` through the emulator; timed from just before that write to the sandbox's 200
//!   reaching the client (watch event, the hold's wake-up, the decision, the entry routing it,
//!   the echo sandbox's answer).
//! * **Memory**: many requests held at once on one starting sandbox, as the filter holds them:
//!   `WaitMany` calls of many requests each, over warmed HTTP/2 connections; the resolver's RSS
//!   growth divided by the number of requests held.
//!   Then every call is cancelled, and the held gauge must return to 0.
//!
//! Collects samples only; [`crate::report`] turns them into percentiles and bytes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use sandgate_proto::resolver::v1::resolver_client::ResolverClient;
use sandgate_proto::resolver::v1::{HeldRequest, ResolveRequest, WaitManyRequest, resolve_reply};
use sandgate_tests::emulator::Emulator;
use sandgate_tests::envoy::{Entry, Envoy, EnvoyOptions, SHIPPED_INTERNAL_TOKEN};
use sandgate_tests::fixtures::{key_secret, pod};
use sandgate_tests::{echo, http};
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::drive::{Plan, ResolverProc};
use crate::report::{Held, Wake};

/// The tenant the bench's sandboxes belong to, and its key (a Secret, as the API server
/// writes it).
const NS: &str = "acme";
const KEY: &str = "bench-wake-key-0123456789";
const KEYS_NAMESPACE: &str = "agentbox-system";
/// The resolver's gauge of requests held now.
const HELD_NOW: &str = "sandgate_held_requests";
/// Every sandbox's Pod IP: the echo servers listen on loopback, one port per sandbox.
const POD_IP: &str = "127.0.0.1";
/// Held calls per HTTP/2 connection in the memory run (servers allow ~200 streams each).
/// Held requests one WaitMany call carries: what a filter VM sends in one call (every request
/// held when it is sent); a hundred calls for 10,000 is far more calls than two Envoy workers
/// make, so the call's own cost is, if anything, over-counted.
const HELD_PER_CALL: usize = 100;
/// How long the resolver may take to see a Pod, a gauge to move, a held request to end.
const PROPAGATION: Duration = Duration::from_secs(10);

/// The entries timed, by the name their report keys carry.
pub const ENTRIES: [(&str, Entry); 2] = [("wasm", Entry::Wasm), ("extproc", Entry::ExtProc)];

pub async fn run(plan: &Plan, bins: &Path, dir: &Path) -> anyhow::Result<Wake> {
    let mut release_ms = BTreeMap::new();
    for (name, entry) in ENTRIES {
        let samples = release(plan, bins, dir, name, entry)
            .await
            .with_context(|| format!("wake release through {name}"))?;
        release_ms.insert(name, samples);
    }
    let held = held_memory(plan, bins, dir)
        .await
        .context("memory per held request")?;
    Ok(Wake { release_ms, held })
}

/// The emulator (with the tenant's key Secret) and a ready resolver watching it with `args`.
struct Kube {
    emu: Emulator,
    resolver: ResolverProc,
}

impl Kube {
    async fn start(bins: &Path, dir: &Path, name: &str, args: &[&str]) -> anyhow::Result<Kube> {
        let emu = Emulator::start().await;
        emu.apply(key_secret(KEYS_NAMESPACE, "key-bench", KEY, NS, None));
        let own = dir.join(format!("kube-{name}"));
        std::fs::create_dir_all(&own)?;
        let kubeconfig = emu.write_kubeconfig(&own);
        let mut source = vec![
            "--pod-source=kube".to_string(),
            format!("--kubeconfig={}", kubeconfig.display()),
        ];
        source.extend(args.iter().map(|a| a.to_string()));
        let mut resolver = ResolverProc::start(bins, dir, name, &source, None)?;
        resolver
            .ready(Instant::now(), Duration::from_secs(30))
            .await?;
        Ok(Kube { emu, resolver })
    }

    /// Publishes `sandbox`'s Pod in `phase`.
    fn pod(&self, sandbox: &str, phase: &str) {
        self.emu.apply(
            pod(NS, &format!("pod-{sandbox}"))
                .sandbox(sandbox)
                .phase(phase)
                .ip(POD_IP)
                .json(),
        );
    }

    async fn held_now(&self) -> anyhow::Result<f64> {
        self.resolver.metric(HELD_NOW).await
    }

    /// Polls the held gauge until `pred` holds; its last reading.
    async fn held_until(&self, pred: impl Fn(f64) -> bool) -> anyhow::Result<f64> {
        let deadline = Instant::now() + PROPAGATION;
        loop {
            let n = self.held_now().await?;
            if pred(n) || Instant::now() >= deadline {
                return Ok(n);
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// A call to the resolver's gRPC port, with the internal token Envoy sends.
fn authorized<T>(msg: T) -> anyhow::Result<tonic::Request<T>> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {SHIPPED_INTERNAL_TOKEN}").parse()?,
    );
    Ok(r)
}

fn facts(sandbox: &str, port: u16) -> ResolveRequest {
    ResolveRequest {
        api_key: KEY.into(),
        sandbox_id: sandbox.into(),
        port: u32::from(port),
        ..Default::default()
    }
}

/// Resolve until it answers Hold: the resolver has seen `sandbox`'s starting Pod. (A Resolve
/// that answers Hold holds nothing itself: only WaitMany does.)
async fn until_hold(channel: &Channel, sandbox: &str, port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + PROPAGATION;
    loop {
        let reply = ResolverClient::new(channel.clone())
            .resolve(authorized(facts(sandbox, port))?)
            .await?
            .into_inner();
        match reply.outcome {
            Some(resolve_reply::Outcome::Hold(_)) => return Ok(()),
            other => ensure!(
                Instant::now() < deadline,
                "{sandbox}: Resolve answers {other:?}, not Hold"
            ),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await
        .with_context(|| format!("connecting the resolver's gRPC port {addr}"))
}

/// Pod running → held request answered, ms, once per trial through `entry` (after one untimed
/// trial that warms Envoy and the filter).
async fn release(
    plan: &Plan,
    bins: &Path,
    dir: &Path,
    name: &str,
    entry: Entry,
) -> anyhow::Result<Vec<f64>> {
    let kube = Kube::start(bins, dir, &format!("wake-{name}"), &["--hold-budget=60s"]).await?;
    let envoy = Envoy::start(&EnvoyOptions {
        entry,
        resolver: kube.resolver.grpc,
        resolver_http: kube.resolver.http,
        activity_interval: Duration::from_secs(30),
        // As shipped: the filter waits in slices below it, ext_proc extends it.
        callout_timeout: Duration::from_secs(1),
        fail_closed: true,
        peer_ca: None,
        cache_ttl: None,
        gateway_args: Vec::new(),
    })
    .await;
    let channel = connect(kube.resolver.grpc).await?;
    let mut samples = Vec::with_capacity(plan.wake_trials);
    for trial in 0..=plan.wake_trials {
        let sandbox = format!("wake-{name}-{trial}");
        let took = release_once(&kube, &envoy, &channel, &sandbox)
            .await
            .with_context(|| format!("{sandbox}; resolver log {}", kube.resolver.log.display()))?;
        if trial > 0 {
            samples.push(took.as_secs_f64() * 1e3);
        }
    }
    let mut sorted = samples.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "{name:>8}: {} releases, fastest {:.2} ms, median {:.2} ms, slowest {:.2} ms",
        sorted.len(),
        sorted.first().copied().unwrap_or(f64::NAN),
        sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN),
        sorted.last().copied().unwrap_or(f64::NAN),
    );
    Ok(samples)
}

/// One trial: `sandbox` starting, a request through `envoy` held, the Pod running; the time
/// from just before that write to the sandbox's answer.
async fn release_once(
    kube: &Kube,
    envoy: &Envoy,
    channel: &Channel,
    sandbox: &str,
) -> anyhow::Result<Duration> {
    let listener = tokio::net::TcpListener::bind((POD_IP, 0)).await?;
    let port = listener.local_addr()?.port();
    let upstream = tokio::spawn(echo::serve(listener, sandbox.to_string()));
    let _upstream = AbortOnDrop(upstream);

    // Nothing held from the trial before, and the resolver knows this sandbox as starting.
    let before = kube.held_until(|n| n == 0.0).await?;
    ensure!(
        before == 0.0,
        "{before} requests still held before the trial"
    );
    kube.pod(sandbox, "starting");
    until_hold(channel, sandbox, port).await?;

    let (addr, path) = (envoy.addr, format!("/sandboxes/{sandbox}/{port}/"));
    let request = tokio::spawn(async move {
        let r = http::send(addr, "GET", &path, &[("x-api-key", KEY)]).await;
        (r, Instant::now())
    });
    let held = kube.held_until(|n| n >= 1.0).await?;
    if request.is_finished() || held < 1.0 {
        let (r, _) = request.await?;
        bail!(
            "the request was not held (held gauge {held}): {:?}",
            r.map(|r| (r.status, r.body))
        );
    }

    let flipped = Instant::now();
    kube.pod(sandbox, "running");
    let (r, arrived) = tokio::time::timeout(PROPAGATION, request)
        .await
        .context("no answer after the Pod ran")??;
    let r = r.context("the held request")?;
    let answered_by = serde_json::from_str::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v["sandbox"].as_str().map(str::to_string));
    ensure!(
        r.status == 200 && answered_by.as_deref() == Some(sandbox),
        "after the Pod ran: {} {}",
        r.status,
        r.body
    );
    Ok(arrived.saturating_duration_since(flipped))
}

/// Aborts the task when dropped (an echo sandbox outlives nothing it serves).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `plan.held` requests held at once (in WaitMany calls) on one starting sandbox: the resolver's RSS before
/// (connections open and warmed) and while they are held; then all of them cancelled.
async fn held_memory(plan: &Plan, bins: &Path, dir: &Path) -> anyhow::Result<Held> {
    let n = plan.held;
    ensure!(n <= 20_000, "the resolver below holds at most 20000");
    let kube = Kube::start(
        bins,
        dir,
        "held",
        &[
            "--hold-budget=120s",
            "--hold-max-total=20000",
            "--hold-max-per-sandbox=20000",
        ],
    )
    .await?;
    let (sandbox, port) = ("held", 8080);
    kube.pod(sandbox, "starting");
    // The connections are opened and used once before the idle reading: what is measured is
    // the held calls, not the connections that carry them.
    let connections = 4;
    let mut channels = Vec::with_capacity(connections);
    for _ in 0..connections {
        let channel = connect(kube.resolver.grpc).await?;
        until_hold(&channel, sandbox, port).await?;
        channels.push(channel);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = kube.resolver.rss_bytes()?;

    let until = unix_ms() + 100_000;
    let started = Instant::now();
    let mut calls = JoinSet::new();
    for (call, first) in (0..n).step_by(HELD_PER_CALL).enumerate() {
        let channel = channels[call % connections].clone();
        let held = (first..(first + HELD_PER_CALL).min(n))
            .map(|i| HeldRequest {
                id: i as u64,
                request: Some(facts(sandbox, port)),
                until_unix_ms: until,
            })
            .collect();
        let request = authorized(WaitManyRequest {
            held,
            max_wait_ms: 60_000,
        })?;
        calls.spawn(async move { ResolverClient::new(channel).wait_many(request).await });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let held = loop {
        let held = kube.held_now().await?;
        if held >= n as f64 {
            break held;
        }
        if let Some(done) = calls.try_join_next() {
            bail!(
                "a held call ended early: {:?}",
                done?.map(|r| r.into_inner())
            );
        }
        ensure!(
            Instant::now() < deadline,
            "{held} of {n} requests held after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let ramp = started.elapsed();
    // Let the allocations of the ramp settle, and make sure none of the calls has ended.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_held = kube.resolver.rss_bytes()?;
    let still = kube.held_now().await?;
    ensure!(
        still == held && calls.len() == n.div_ceil(HELD_PER_CALL),
        "held {held}, then {still}; {} calls open",
        calls.len()
    );

    // The clients go away: every held call is reset, nothing may stay counted.
    let cancelled = Instant::now();
    calls.abort_all();
    while calls.join_next().await.is_some() {}
    let after_cancel = kube.held_until(|h| h == 0.0).await?;
    let drained = cancelled.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after_cancel = kube.resolver.rss_bytes()?;
    drop(channels);
    println!(
        "{n} held over {connections} connections in {:.2} s: RSS {:.1} → {:.1} MiB ({:.0} bytes per held request); cancelled: {after_cancel} held after {:.0} ms, RSS {:.1} MiB",
        ramp.as_secs_f64(),
        rss_idle as f64 / 1048576.0,
        rss_held as f64 / 1048576.0,
        (rss_held as f64 - rss_idle as f64) / n as f64,
        drained.as_secs_f64() * 1e3,
        rss_after_cancel as f64 / 1048576.0,
    );
    Ok(Held {
        requests: n,
        connections,
        rss_idle,
        rss_held,
        rss_after_cancel,
        after_cancel,
    })
}
