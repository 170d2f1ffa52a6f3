//! Criterion: one decision of the native entry (`filter-native/`), as its filter makes it on
//! Envoy's worker for a routed request, in-process (no Envoy, no host calls).
//!
//! The gateway is the resolver's own wiring ([`serve::run`], as the module starts it) with the
//! flags the HTTP bench gives the native entry: a static inventory (here 10k running Pods, found
//! by the sandbox-id label as in the HTTP bench: nothing is pushed), one tenant key, access-token
//! signing keys; its listeners on ephemeral loopback ports. One iteration is what
//! `Filter::on_request_headers` does between copying Envoy's headers and writing the result:
//!
//! * `RequestGrammar::parse_headers` of a realistic header list (what Envoy hands the filter for
//!   a client's request: pseudo-headers, a user agent and accepts, the key, the headers the
//!   connection manager and `cdn_loop` add), one Pod per iteration in stride order;
//! * the gateway-header scan the filter strips by (`is_gateway_header` over every header);
//! * `Facts::of` and `Gateway::answer`, polled once on this thread inside the runtime's
//!   context with a no-op waker (`Live::now` in filter-native/src/embedded.rs);
//! * `RequestGrammar::routing` of the decision.
//!
//! Id `native/decision` (`target/criterion/native/decision/new/estimates.json`), read by the
//! bench's report as `native_decision_ns`. Before measuring, every probe must route to its own
//! Pod with the path rewritten, so the figure cannot be a refusal's.

use std::future::Future;
use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use clap::Parser;
use criterion::{Criterion, criterion_group, criterion_main};
use sandgate_core::{Decision, RequestGrammar};
use sandgate_resolver::config::ServeArgs;
use sandgate_resolver::decide::{Facts, Gateway};
use sandgate_resolver::hold::Answer;
use sandgate_resolver::serve;

const PODS: usize = 10_000;
const PORT: u16 = 8080;
const TENANT_KEY: &str = "bench-tenant-key";
/// Prime, coprime with PODS: consecutive probes hit unrelated Pods (the resolver bench's).
const STRIDE: usize = 7919;
/// The HTTP bench's signing keys (bench/src/drive.rs).
const TOKEN_KEYS: &str = "'2026-11-01': YmVuY2ggc2lnbmluZyBrZXksIG5vdmVtYmVyIDIwMjYhISE=\n\
                          '2026-12-01': YmVuY2ggc2lnbmluZyBrZXksIGRlY2VtYmVyIDIwMjYhISE=\n";

fn sandbox_id(i: usize) -> String {
    format!("sb-{i:07}")
}

fn pod_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000 + i as u32)
}

/// `sandgate-resolver serve`'s flags, as the module parses its `args`.
#[derive(Parser)]
#[command(name = "sandgate-native", no_binary_name = true)]
struct Flags {
    #[command(flatten)]
    serve: ServeArgs,
}

/// The running gateway and its grammar, as the module's `Live` holds them.
struct Live {
    gateway: Arc<Gateway>,
    grammar: RequestGrammar,
    runtime: tokio::runtime::Handle,
    _dir: tempfile::TempDir,
}

/// Starts the gateway on a runtime of its own (two threads, the module's default) and returns
/// once it is ready. It serves until the process ends, as the module's does.
fn start() -> Live {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut pods = String::new();
    for i in 0..PODS {
        pods += &format!(
            "- name: pod-{i:07}\n  namespace: bench\n  ip: {}\n  sandboxId: {}\n  phase: running\n",
            pod_ip(i),
            sandbox_id(i)
        );
    }
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let inventory = write("pods.yaml", &pods);
    let keys = write(
        "keys.yaml",
        &format!("tenants:\n  - key: {TENANT_KEY}\n    namespace: bench\n"),
    );
    let token_keys = write("token-keys.yaml", TOKEN_KEYS);
    let args = [
        "--grpc-listen=127.0.0.1:0".to_string(),
        "--control-listen=127.0.0.1:0".into(),
        "--http-listen=127.0.0.1:0".into(),
        "--admin-key=bench-admin-key".into(),
        "--internal-token=demo-internal-token".into(),
        "--pod-source=inventory".into(),
        format!("--inventory={inventory}"),
        format!("--keys-file={keys}"),
        format!("--token-keys-file={token_keys}"),
    ];
    let flags = Flags::try_parse_from(args).expect("the gateway's flags");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let handle = runtime.handle().clone();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let served = runtime.block_on(serve::run(
            flags.serve,
            std::future::pending(),
            move |started| {
                let _ = tx.send(started);
            },
        ));
        panic!("the gateway stopped: {served:?}");
    });
    let started = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the gateway started");
    let since = Instant::now();
    while !(started.ready)() {
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "the gateway is not ready after 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Live {
        gateway: started.gateway,
        grammar: started.grammar,
        runtime: handle,
        _dir: dir,
    }
}

/// What Envoy hands the filter for a client's request to Pod `i` (HTTP/1.1, through
/// envoy-native.yaml's connection manager and `cdn_loop`), in its order.
fn request(i: usize) -> Vec<(String, String)> {
    [
        (":authority", "gateway.example.com:8092".to_string()),
        (
            ":path",
            format!("/sandboxes/{}/{PORT}/api/files?path=%2Fhome", sandbox_id(i)),
        ),
        (":method", "GET".into()),
        (":scheme", "http".into()),
        ("user-agent", "python-httpx/0.28.1".into()),
        ("accept", "application/json".into()),
        ("accept-encoding", "gzip, deflate".into()),
        ("x-api-key", TENANT_KEY.into()),
        ("x-forwarded-for", "10.200.3.7".into()),
        ("x-forwarded-proto", "http".into()),
        (
            "x-request-id",
            "5f0c2d7e-8a41-4c3b-9e62-0d1f7a9b3c55".into(),
        ),
        ("cdn-loop", "sandgate".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// One decision as the filter makes it: parse, the strip scan, the gateway's answer polled
/// once, the routing. Hands a local route's destination and rewritten path to `routed` (`None`
/// for anything else), which costs the measured loop nothing it would not otherwise pay.
fn decide<'a, R>(
    live: &Live,
    headers: &[(&'a [u8], &'a [u8])],
    routed: impl FnOnce(&str, Option<&str>) -> R,
) -> Option<R> {
    let parsed = live.grammar.parse_headers(headers);
    let api_key = parsed.as_ref().ok().and_then(|t| t.api_key.map(|(k, _)| k));
    let mut strip = 0usize;
    for (name, value) in headers {
        strip += usize::from(live.grammar.is_gateway_header(name, value, api_key));
    }
    black_box(strip);
    let target = parsed.ok()?;
    let client = Some(std::net::IpAddr::V4(Ipv4Addr::new(10, 200, 3, 7)));
    let others = target.other_credential_values();
    let decision = {
        let _context = live.runtime.enter();
        let mut answer = pin!(live.gateway.answer(Facts::of(&target, &others, client)));
        match answer
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(Answer::Decided(decision, _)) => decision,
            Poll::Ready(Answer::Held { .. }) | Poll::Pending => return None,
        }
    };
    let routing = live.grammar.routing(&target, &decision).ok()?;
    match decision {
        Decision::Route { .. } => Some(routed(routing.destination, routing.path)),
        _ => None,
    }
}

fn bench_native(c: &mut Criterion) {
    let live = start();
    let requests: Vec<Vec<(String, String)>> =
        (0..PODS).map(|k| request(k * STRIDE % PODS)).collect();
    // As the filter holds them: (name, value) byte slices over one request's copy.
    let views: Vec<Vec<(&[u8], &[u8])>> = requests
        .iter()
        .map(|r| {
            r.iter()
                .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
                .collect()
        })
        .collect();
    for (k, view) in views.iter().enumerate() {
        let i = k * STRIDE % PODS;
        assert_eq!(
            decide(&live, view, |destination, path| (
                destination.to_string(),
                path.map(str::to_string)
            )),
            Some((
                SocketAddr::from((pod_ip(i), PORT)).to_string(),
                Some("/api/files?path=%2Fhome".to_string()),
            )),
            "{}",
            sandbox_id(i)
        );
    }
    let mut group = c.benchmark_group("native");
    group.bench_function("decision", |b| {
        let mut k = 0;
        b.iter(|| {
            let view = &views[k];
            k += 1;
            if k == views.len() {
                k = 0;
            }
            decide(&live, black_box(view), |destination, path| {
                destination.len() + path.map_or(0, str::len)
            })
        });
    });
    group.finish();
}

criterion_group!(benches, bench_native);
criterion_main!(benches);
