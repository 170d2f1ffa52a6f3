//! Wake on traffic (issue 19), through Envoy on every entry: a request for a sandbox that is
//! not routable yet but may be soon is held until its Pod is, instead of an instant 502; a
//! released (or, with `--wake-unknown`, unknown) sandbox is reported to the controller once
//! however many clients wait, over `WatchWakeRequests` or the webhook; a hold that runs out of
//! budget, or one too many, is a 503 with `Retry-After`; a resolver that dies during a hold is
//! noticed within the entry's normal callout timeout.
//!
//! The harness's resolvers run with `SANDGATE_HOLD_BUDGET=0` (no holds); every test here turns
//! holds on with `--hold-budget`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use sandgate_tests::controller::{Claim, Controller, Wake};
use sandgate_tests::fixtures::{ARMED, pod};
use sandgate_tests::gateway::{Entry, Gateway, TEST_CALLOUT_TIMEOUT};
use sandgate_tests::http::{self, Response};
use sandgate_tests::process::{Resolver, eventually};
use sandgate_tests::stack::{ACME_KEY, PROPAGATION};
use sandgate_tests::{entries_with_a_resolver_process, every_entry};
use tokio::task::JoinHandle;

const NS: &str = "acme";
const HELD_NOW: &str = "sandgate_held_requests";
const HELD_TOTAL: &str = "sandgate_held_requests_total";
const EXPIRED: &str = "sandgate_hold_expired_total";
/// The hold-time histogram (`_count`, `_sum`, `_bucket`).
const HOLD_SECONDS: &str = "sandgate_hold_seconds";
const WAKES_STREAM: &str = r#"sandgate_wakes_total{via="stream"}"#;
const WAKES_WEBHOOK: &str = r#"sandgate_wakes_total{via="webhook"}"#;
/// More than a loaded machine needs to pass an answer from the resolver to the client.
const SLACK: Duration = Duration::from_secs(2);

fn path(sandbox: &str, port: u16) -> String {
    format!("/sandboxes/{sandbox}/{port}/wake")
}

/// A request sent now on a task of its own: its answer and how long it took.
type Pending = JoinHandle<(Response, Duration)>;

fn send(envoy: SocketAddr, path: String) -> Pending {
    tokio::spawn(async move {
        let started = Instant::now();
        let r = http::send(envoy, "GET", &path, &[("x-api-key", ACME_KEY)])
            .await
            .unwrap_or_else(|e| panic!("GET {path} through Envoy: {e}"));
        (r, started.elapsed())
    })
}

async fn answer(pending: Pending, within: Duration) -> (Response, Duration) {
    tokio::time::timeout(within, pending)
        .await
        .unwrap_or_else(|_| panic!("no answer within {within:?}"))
        .expect("the client task failed")
}

/// Asserts the request is still unanswered (held), failing with its answer if it is not.
async fn assert_unanswered(pending: &mut Pending, what: &str) {
    if pending.is_finished() {
        let (r, took) = pending.await.expect("the client task failed");
        panic!(
            "{what}: answered while it should be held, after {took:?}: {} {}",
            r.status, r.body
        );
    }
}

/// Waits until the resolver counts `n` requests held now.
async fn held_now(resolver: &Resolver, n: u64) {
    let ok = eventually(PROPAGATION, || async {
        resolver.metric(HELD_NOW).await == n
    })
    .await;
    assert!(
        ok,
        "{HELD_NOW} is {}, not {n}\n{}",
        resolver.metric(HELD_NOW).await,
        tail(&resolver.logs())
    );
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The body of a sandbox's answer: 200, from `sandbox`'s echo.
fn assert_served(r: &Response, sandbox: &str) {
    assert_eq!(r.status, 200, "{sandbox}: {}", r.body);
    assert_eq!(r.json()["sandbox"], sandbox, "{}", r.body);
}

/// A refusal in the status table's shape, with the `Retry-After` it must (or must not) carry.
fn assert_refused(r: &Response, status: u16, code: &str, retry_after: Option<&str>) {
    assert_eq!(r.status, status, "{code}: {}", r.body);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["code"], code, "{}", r.body);
    assert!(r.json().get("sandbox").is_none(), "reached a sandbox");
    assert_eq!(r.header("retry-after"), retry_after, "{code}: Retry-After");
}

/// A metric's value as exposed, fractions kept (0 when absent).
async fn metric_f64(resolver: &Resolver, series: &str) -> f64 {
    let (_, text) = resolver.http_get("/metrics", None).await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn starting(sandbox: &str, ip: &str) -> serde_json::Value {
    pod(NS, &format!("pod-{sandbox}"))
        .sandbox(sandbox)
        .phase("starting")
        .ip(ip)
        .json()
}

fn running(sandbox: &str, ip: &str) -> serde_json::Value {
    pod(NS, &format!("pod-{sandbox}"))
        .sandbox(sandbox)
        .phase("running")
        .ip(ip)
        .json()
}

/// Held while `starting`, and not answered before the Pod runs; then routed to it.
async fn a_request_to_a_starting_pod_is_held_until_it_runs(entry: Entry) {
    let mut gw = Gateway::start_args(entry, &["--hold-budget=10s"]).await;
    let ip = "127.0.0.21";
    let port = gw.echo("sb-s", ip).await;
    gw.kube.emu.apply(starting("sb-s", ip));
    gw.kube.barrier().await;

    let mut held = send(gw.envoy.addr, path("sb-s", port));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_unanswered(&mut held, "sb-s while starting").await;
    // Past the entry's callout timeout too: the hold is not the callout's deadline.
    tokio::time::sleep(TEST_CALLOUT_TIMEOUT).await;
    assert_unanswered(&mut held, "sb-s past the callout timeout").await;

    let flipped = Instant::now();
    gw.kube.emu.apply(running("sb-s", ip));
    let (r, took) = answer(held, PROPAGATION).await;
    assert_served(&r, "sb-s");
    println!(
        "starting ({entry:?}): held {took:?}, answered {:?} after the Pod ran",
        flipped.elapsed()
    );
    // The held request, finally routed, counts as the sandbox's activity.
    let seen = gw
        .kube
        .control()
        .await
        .last_active_until(PROPAGATION, |m| m.contains_key("sb-s"))
        .await;
    assert!(seen.contains_key("sb-s"), "no activity recorded: {seen:?}");
    // Routable now: answered at once.
    let r = gw
        .get(&path("sb-s", port), &[("x-api-key", ACME_KEY)])
        .await;
    assert_served(&r, "sb-s");
}

/// The other ways to be not yet routable: running without an IP, and (armed gate) running
/// but not armed. Each is held until the Pod has what it lacked.
async fn a_request_is_held_until_the_pod_has_an_ip_and_is_armed(entry: Entry) {
    let mut gw = Gateway::start_args(entry, &["--hold-budget=10s", "--armed-gate=true"]).await;
    let (ip_n, ip_u) = ("127.0.0.25", "127.0.0.26");
    let port_n = gw.echo("sb-n", ip_n).await;
    let port_u = gw.echo("sb-u", ip_u).await;
    let armed = |sandbox: &str| {
        pod(NS, &format!("pod-{sandbox}"))
            .sandbox(sandbox)
            .phase("running")
            .annotation(ARMED, sandbox)
    };
    gw.kube.emu.apply(armed("sb-n").no_ip().json());
    gw.kube.emu.apply(
        pod(NS, "pod-sb-u")
            .sandbox("sb-u")
            .phase("running")
            .ip(ip_u)
            .json(),
    );
    gw.kube.barrier().await;

    let mut no_ip = send(gw.envoy.addr, path("sb-n", port_n));
    let mut unarmed = send(gw.envoy.addr, path("sb-u", port_u));
    held_now(&gw.kube.resolver, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_unanswered(&mut no_ip, "sb-n without an IP").await;
    assert_unanswered(&mut unarmed, "sb-u not armed").await;

    gw.kube.emu.apply(armed("sb-n").ip(ip_n).json());
    let (r, _) = answer(no_ip, PROPAGATION).await;
    assert_served(&r, "sb-n");
    assert_unanswered(&mut unarmed, "sb-u not armed, after sb-n ran").await;

    gw.kube.emu.apply(armed("sb-u").ip(ip_u).json());
    let (r, _) = answer(unarmed, PROPAGATION).await;
    assert_served(&r, "sb-u");
    held_now(&gw.kube.resolver, 0).await;
}

/// A hold ends at once, with today's refusal, when the Pod can no longer serve the sandbox:
/// it failed, or it was re-labelled to another sandbox.
async fn a_held_request_ends_at_once_when_its_pod_fails_or_moves(entry: Entry) {
    let mut gw = Gateway::start_args(entry, &["--hold-budget=20s"]).await;
    let (ip_f, ip_m) = ("127.0.0.27", "127.0.0.28");
    let port_f = gw.echo("sb-f", ip_f).await;
    let port_m = gw.echo("sb-m", ip_m).await;
    gw.kube.emu.apply(starting("sb-f", ip_f));
    gw.kube.emu.apply(starting("sb-m", ip_m));
    gw.kube.barrier().await;
    let failed = send(gw.envoy.addr, path("sb-f", port_f));
    let moved = send(gw.envoy.addr, path("sb-m", port_m));
    held_now(&gw.kube.resolver, 2).await;

    let at = Instant::now();
    gw.kube.emu.apply(
        pod(NS, "pod-sb-f")
            .sandbox("sb-f")
            .phase("failed")
            .ip(ip_f)
            .json(),
    );
    let (r, _) = answer(failed, PROPAGATION).await;
    assert_refused(&r, 502, "sandbox_not_ready", None);
    assert!(
        at.elapsed() < SLACK,
        "failed: answered after {:?}",
        at.elapsed()
    );

    let at = Instant::now();
    gw.kube.emu.apply(
        pod(NS, "pod-sb-m")
            .sandbox("sb-other")
            .phase("running")
            .ip(ip_m)
            .json(),
    );
    let (r, _) = answer(moved, PROPAGATION).await;
    assert!(
        matches!(r.status, 404 | 502),
        "re-labelled: {} {}",
        r.status,
        r.body
    );
    assert!(r.json().get("sandbox").is_none(), "reached a sandbox");
    assert!(
        at.elapsed() < SLACK,
        "moved: answered after {:?}",
        at.elapsed()
    );
    held_now(&gw.kube.resolver, 0).await;
}

/// 100 clients wait for one sandbox the controller is to wake; it hears of it once, claims a
/// Pod, and every client is served by that sandbox. `via` is the wake metric's label.
async fn hundred_clients_one_wake(gw: &Gateway, ctl: &Controller, id: &str, port: u16, via: &str) {
    const CLIENTS: usize = 100;
    ctl.pause();
    let clients: Vec<Pending> = (0..CLIENTS)
        .map(|_| send(gw.envoy.addr, path(id, port)))
        .collect();
    // All of them wait (the controller holds its claim back until then).
    held_now(&gw.kube.resolver, CLIENTS as u64).await;
    let wakes = ctl.wakes_for_until(id, 1, PROPAGATION).await;
    assert_eq!(
        wakes,
        vec![Wake {
            sandbox_id: id.into(),
            namespace: NS.into(),
            port: u32::from(port),
        }],
        "one wake for {CLIENTS} waiting clients"
    );
    let claimed_at = Instant::now();
    ctl.resume();
    let mut slowest = Duration::ZERO;
    for c in clients {
        let (r, took) = answer(c, PROPAGATION + SLACK).await;
        assert_served(&r, id);
        slowest = slowest.max(took);
    }
    println!(
        "{CLIENTS} clients via {via}: all served {:?} after the claim (slowest held {slowest:?})",
        claimed_at.elapsed()
    );
    held_now(&gw.kube.resolver, 0).await;
    // Routed now, and no late second wake.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ctl.wakes_for(id).len(), 1, "{:?}", ctl.wakes());
    assert_eq!(ctl.claimed(), vec![id.to_string()]);
    let series = format!(r#"sandgate_wakes_total{{via="{via}"}}"#);
    assert_eq!(
        gw.kube.resolver.metric(&series).await,
        ctl.wakes().len() as u64,
        "{series}"
    );
}

/// A released sandbox: its Pod is `idle`. The controller subscribes to WatchWakeRequests.
async fn a_released_sandbox_is_woken_once_for_100_clients_over_the_stream(entry: Entry) {
    let mut gw = Gateway::start_args(entry, &["--hold-budget=10s"]).await;
    let ip = "127.0.0.22";
    let port = gw.echo("sb-w", ip).await;
    gw.kube.emu.apply(
        pod(NS, "pod-sb-w")
            .sandbox("sb-w")
            .phase("idle")
            .ip(ip)
            .json(),
    );
    gw.kube.barrier().await;
    let ctl = Controller::stream(&gw.kube.resolver).await;
    ctl.plan(&gw.kube.emu, "sb-w", Claim::new(NS, "pod-sb-w", ip));
    hundred_clients_one_wake(&gw, &ctl, "sb-w", port, "stream").await;
    assert_eq!(gw.kube.resolver.metric(WAKES_WEBHOOK).await, 0);
    assert_eq!(ctl.ended(), None);
}

/// The same with the webhook: the controller is an HTTP server taking the resolver's POSTs.
async fn a_released_sandbox_is_woken_once_for_100_clients_over_the_webhook(entry: Entry) {
    let ctl = Controller::webhook().await;
    let hook = ctl.webhook_flag();
    let mut gw = Gateway::start_args(entry, &["--hold-budget=10s", hook.as_str()]).await;
    let ip = "127.0.0.23";
    let port = gw.echo("sb-h", ip).await;
    gw.kube.emu.apply(
        pod(NS, "pod-sb-h")
            .sandbox("sb-h")
            .phase("idle")
            .ip(ip)
            .json(),
    );
    gw.kube.barrier().await;
    ctl.plan(&gw.kube.emu, "sb-h", Claim::new(NS, "pod-sb-h", ip));
    hundred_clients_one_wake(&gw, &ctl, "sb-h", port, "webhook").await;
    assert!(ctl.malformed().is_empty(), "{:?}", ctl.malformed());
}

/// With `--wake-unknown`, an id the resolver has never seen is woken (in the calling tenant's
/// namespace) and held; the controller creates its Pod.
async fn an_unknown_sandbox_is_woken_once_for_100_clients_with_wake_unknown(entry: Entry) {
    let mut gw = Gateway::start_args(entry, &["--hold-budget=10s", "--wake-unknown=true"]).await;
    let ip = "127.0.0.24";
    let port = gw.echo("sb-new", ip).await;
    let ctl = Controller::stream(&gw.kube.resolver).await;
    ctl.plan(&gw.kube.emu, "sb-new", Claim::new(NS, "pod-sb-new", ip));
    hundred_clients_one_wake(&gw, &ctl, "sb-new", port, "stream").await;
}

/// Wakes pending when the controller subscribes come first on its stream: traffic that
/// arrived while no controller listened is not lost.
async fn a_wake_pending_before_the_controller_subscribes_reaches_it(entry: Entry) {
    let mut gw = Gateway::start_args(entry, &["--hold-budget=10s", "--wake-unknown=true"]).await;
    let ip = "127.0.0.29";
    let port = gw.echo("sb-late", ip).await;
    let clients: Vec<Pending> = (0..3)
        .map(|_| send(gw.envoy.addr, path("sb-late", port)))
        .collect();
    held_now(&gw.kube.resolver, 3).await;

    let ctl = Controller::stream(&gw.kube.resolver).await;
    ctl.plan(&gw.kube.emu, "sb-late", Claim::new(NS, "pod-sb-late", ip));
    let wakes = ctl.wakes_for_until("sb-late", 1, PROPAGATION).await;
    assert_eq!(wakes.len(), 1, "{wakes:?}");
    for c in clients {
        let (r, _) = answer(c, PROPAGATION).await;
        assert_served(&r, "sb-late");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ctl.wakes_for("sb-late").len(), 1, "{:?}", ctl.wakes());
}

/// One client waiting for seconds — far longer than a callout's deadline, however the entry
/// waits meanwhile — is still one wake while the controller has not answered it.
async fn one_client_waiting_for_seconds_wakes_its_sandbox_once(entry: Entry) {
    let mut gw = Gateway::start_args(entry, &["--hold-budget=10s"]).await;
    let ip = "127.0.0.37";
    let port = gw.echo("sb-1", ip).await;
    gw.kube.emu.apply(
        pod(NS, "pod-sb-1")
            .sandbox("sb-1")
            .phase("idle")
            .ip(ip)
            .json(),
    );
    gw.kube.barrier().await;
    let ctl = Controller::stream(&gw.kube.resolver).await;
    ctl.plan(&gw.kube.emu, "sb-1", Claim::new(NS, "pod-sb-1", ip));
    ctl.pause();
    let mut client = send(gw.envoy.addr, path("sb-1", port));
    assert_eq!(ctl.wakes_for_until("sb-1", 1, PROPAGATION).await.len(), 1);
    tokio::time::sleep(TEST_CALLOUT_TIMEOUT * 3).await;
    assert_unanswered(&mut client, "sb-1 before its claim").await;
    assert_eq!(ctl.wakes_for("sb-1").len(), 1, "{:?}", ctl.wakes());
    ctl.resume();
    let (r, took) = answer(client, PROPAGATION).await;
    assert_served(&r, "sb-1");
    assert!(took >= TEST_CALLOUT_TIMEOUT * 3, "held {took:?}");
    assert_eq!(ctl.wakes_for("sb-1").len(), 1, "{:?}", ctl.wakes());
    assert_eq!(gw.kube.resolver.metric(WAKES_STREAM).await, 1);
}

/// A client that leaves while held costs nothing afterwards: the resolver stops holding its
/// request (within a callout deadline, however the entry carries it), and nothing is left
/// to answer when the sandbox comes up.
async fn a_client_that_leaves_while_held_costs_nothing_afterwards(entry: Entry) {
    use tokio::io::AsyncWriteExt;
    let mut gw = Gateway::start_args(entry, &["--hold-budget=20s"]).await;
    let ip = "127.0.0.38";
    let port = gw.echo("sb-gone", ip).await;
    gw.kube.emu.apply(starting("sb-gone", ip));
    gw.kube.barrier().await;
    let request = format!(
        "GET {} HTTP/1.1\r\nhost: gw\r\nx-api-key: {ACME_KEY}\r\n\r\n",
        path("sb-gone", port)
    );
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = tokio::net::TcpStream::connect(gw.envoy.addr)
            .await
            .expect("connect to Envoy");
        c.write_all(request.as_bytes()).await.expect("send");
        clients.push(c);
    }
    held_now(&gw.kube.resolver, 3).await;

    let left = Instant::now();
    drop(clients);
    held_now(&gw.kube.resolver, 0).await;
    assert!(
        left.elapsed() < TEST_CALLOUT_TIMEOUT + SLACK,
        "still held {:?} after the clients left",
        left.elapsed()
    );
    println!(
        "clients left ({entry:?}): nothing held {:?} later",
        left.elapsed()
    );
    // Nothing is answered for them later, and the sandbox serves as usual.
    gw.kube.emu.apply(running("sb-gone", ip));
    let r = gw
        .get_until(
            &path("sb-gone", port),
            &[("x-api-key", ACME_KEY)],
            200,
            PROPAGATION,
        )
        .await;
    assert_served(&r, "sb-gone");
    assert_eq!(gw.kube.resolver.metric(HELD_NOW).await, 0);
    assert_eq!(gw.kube.resolver.metric(EXPIRED).await, 0);
}

/// A sandbox that never comes up: held for the budget, then 503 `sandbox_starting` with
/// `Retry-After: 5` — a Pod stuck `starting`, and a released one the controller leaves be.
async fn a_sandbox_that_never_comes_up_is_503_sandbox_starting_after_the_budget(entry: Entry) {
    const BUDGET: Duration = Duration::from_secs(1);
    let mut gw = Gateway::start_args(entry, &["--hold-budget=1s"]).await;
    let (ip_s, ip_i) = ("127.0.0.30", "127.0.0.31");
    let port_s = gw.echo("sb-stuck", ip_s).await;
    let port_i = gw.echo("sb-asleep", ip_i).await;
    gw.kube.emu.apply(starting("sb-stuck", ip_s));
    gw.kube.emu.apply(
        pod(NS, "pod-sb-asleep")
            .sandbox("sb-asleep")
            .phase("idle")
            .ip(ip_i)
            .json(),
    );
    gw.kube.barrier().await;
    // A controller that hears the wake and ignores it.
    let ctl = Controller::stream(&gw.kube.resolver).await;

    let stuck = send(gw.envoy.addr, path("sb-stuck", port_s));
    let asleep = send(gw.envoy.addr, path("sb-asleep", port_i));
    for (what, pending) in [("starting", stuck), ("idle", asleep)] {
        let (r, took) = answer(pending, BUDGET + SLACK + TEST_CALLOUT_TIMEOUT).await;
        assert_refused(&r, 503, "sandbox_starting", Some("5"));
        assert!(
            took >= BUDGET.mul_f32(0.9),
            "{what}: refused after {took:?}, before the budget"
        );
        println!("never up ({entry:?}, {what}): 503 after {took:?} (budget {BUDGET:?})");
    }
    assert_eq!(ctl.wakes_for("sb-asleep").len(), 1, "{:?}", ctl.wakes());
    assert_eq!(gw.kube.resolver.metric(EXPIRED).await, 2);
    held_now(&gw.kube.resolver, 0).await;
}

/// Past the caps — two per sandbox, three in all — a request is not held but refused at once
/// with 503 `too_many_waiting`, `Retry-After: 1`; those held are still served.
async fn past_the_caps_a_request_is_refused_at_once(entry: Entry) {
    let mut gw = Gateway::start_args(
        entry,
        &[
            "--hold-budget=10s",
            "--hold-max-per-sandbox=2",
            "--hold-max-total=3",
        ],
    )
    .await;
    let (ip_a, ip_b) = ("127.0.0.32", "127.0.0.33");
    let port_a = gw.echo("sb-a", ip_a).await;
    let port_b = gw.echo("sb-b", ip_b).await;
    gw.kube.emu.apply(starting("sb-a", ip_a));
    gw.kube.emu.apply(starting("sb-b", ip_b));
    gw.kube.barrier().await;

    let mut held: Vec<(&str, Pending)> = (0..2)
        .map(|_| ("sb-a", send(gw.envoy.addr, path("sb-a", port_a))))
        .collect();
    held_now(&gw.kube.resolver, 2).await;
    let (r, took) = answer(send(gw.envoy.addr, path("sb-a", port_a)), SLACK).await;
    assert_refused(&r, 503, "too_many_waiting", Some("1"));
    assert!(
        took < TEST_CALLOUT_TIMEOUT,
        "per sandbox: refused after {took:?}"
    );

    held.push(("sb-b", send(gw.envoy.addr, path("sb-b", port_b))));
    held_now(&gw.kube.resolver, 3).await;
    let (r, took) = answer(send(gw.envoy.addr, path("sb-b", port_b)), SLACK).await;
    assert_refused(&r, 503, "too_many_waiting", Some("1"));
    assert!(
        took < TEST_CALLOUT_TIMEOUT,
        "in total: refused after {took:?}"
    );
    held_now(&gw.kube.resolver, 3).await;

    gw.kube.emu.apply(running("sb-a", ip_a));
    gw.kube.emu.apply(running("sb-b", ip_b));
    for (id, pending) in held {
        let (r, _) = answer(pending, PROPAGATION).await;
        assert_served(&r, id);
    }
    held_now(&gw.kube.resolver, 0).await;
}

/// The resolver dies while it holds requests: the entry notices within its normal callout
/// timeout and answers 503 `resolver_unavailable`, long before the hold budget.
async fn a_resolver_killed_during_a_hold_is_503_within_the_callout_timeout(entry: Entry) {
    const BUDGET: Duration = Duration::from_secs(20);
    let mut gw = Gateway::start_args(entry, &["--hold-budget=20s"]).await;
    let ip = "127.0.0.34";
    let port = gw.echo("sb-k", ip).await;
    gw.kube.emu.apply(starting("sb-k", ip));
    gw.kube.barrier().await;
    let held: Vec<Pending> = (0..3)
        .map(|_| send(gw.envoy.addr, path("sb-k", port)))
        .collect();
    held_now(&gw.kube.resolver, 3).await;
    // Well into the hold: past the first callout deadline.
    tokio::time::sleep(TEST_CALLOUT_TIMEOUT + Duration::from_millis(300)).await;

    gw.kube.resolver.kill().await;
    let killed = Instant::now();
    for pending in held {
        let (r, took) = answer(pending, BUDGET).await;
        assert_refused(&r, 503, "resolver_unavailable", None);
        let after = killed.elapsed();
        assert!(
            after < TEST_CALLOUT_TIMEOUT + SLACK,
            "answered {after:?} after the kill (held {took:?}); the budget is {BUDGET:?}"
        );
    }
    println!(
        "killed during a hold ({entry:?}): every client answered within {:?}",
        killed.elapsed()
    );
}

/// A hung resolver (stopped, its sockets open) during a hold looks like a holding one on the
/// wire; the wasm filter waits in calls no longer than its callout deadline, and ext_proc's
/// Envoy pings the resolver's connection every second (envoy-extproc.yaml's
/// `connection_keepalive`), so both answer 503 `resolver_unavailable` within about that
/// deadline, long before the budget.
async fn a_resolver_hung_during_a_hold_is_503_within_the_callout_timeout(entry: Entry) {
    const BUDGET: Duration = Duration::from_secs(20);
    let mut gw = Gateway::start_args(entry, &["--hold-budget=20s"]).await;
    let ip = "127.0.0.39";
    let port = gw.echo("sb-hung", ip).await;
    gw.kube.emu.apply(starting("sb-hung", ip));
    gw.kube.barrier().await;
    let held: Vec<Pending> = (0..3)
        .map(|_| send(gw.envoy.addr, path("sb-hung", port)))
        .collect();
    held_now(&gw.kube.resolver, 3).await;
    tokio::time::sleep(TEST_CALLOUT_TIMEOUT + Duration::from_millis(300)).await;

    gw.kube.resolver.freeze(true);
    let frozen = Instant::now();
    let mut answers = Vec::new();
    for pending in held {
        answers.push(answer(pending, BUDGET + SLACK).await);
    }
    let after = frozen.elapsed();
    gw.kube.resolver.freeze(false);
    for (r, _) in &answers {
        assert_refused(r, 503, "resolver_unavailable", None);
    }
    println!("hung during a hold ({entry:?}): every client answered within {after:?}");
    assert!(
        after < TEST_CALLOUT_TIMEOUT * 2 + SLACK,
        "answered {after:?} after the resolver hung; the budget is {BUDGET:?}"
    );
}

/// The metrics follow holds and wakes: held now up while held and back to 0, held total,
/// the hold-time histogram, one wake, one budget expiry.
async fn hold_and_wake_metrics_move(entry: Entry) {
    let mut gw = Gateway::start_args(entry, &["--hold-budget=3s"]).await;
    let r = &gw.kube.resolver;
    for series in [HELD_NOW, HELD_TOTAL, EXPIRED, WAKES_STREAM, WAKES_WEBHOOK] {
        assert_eq!(r.metric(series).await, 0, "{series} before any hold");
    }
    let (ip, ip_x) = ("127.0.0.35", "127.0.0.36");
    let port = gw.echo("sb-m", ip).await;
    let port_x = gw.echo("sb-x", ip_x).await;
    gw.kube.emu.apply(
        pod(NS, "pod-sb-m")
            .sandbox("sb-m")
            .phase("idle")
            .ip(ip)
            .json(),
    );
    gw.kube.emu.apply(starting("sb-x", ip_x));
    gw.kube.barrier().await;
    let ctl = Controller::stream(&gw.kube.resolver).await;
    ctl.plan(&gw.kube.emu, "sb-m", Claim::new(NS, "pod-sb-m", ip));
    ctl.pause();

    let r = &gw.kube.resolver;
    let clients: Vec<Pending> = (0..3)
        .map(|_| send(gw.envoy.addr, path("sb-m", port)))
        .collect();
    held_now(r, 3).await;
    assert_eq!(
        ctl.wakes_for_until("sb-m", 1, PROPAGATION).await.len(),
        1,
        "wake"
    );
    assert_eq!(r.metric(WAKES_STREAM).await, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    ctl.resume();
    for c in clients {
        let (resp, _) = answer(c, PROPAGATION).await;
        assert_served(&resp, "sb-m");
    }
    held_now(r, 0).await;
    assert_eq!(r.metric(HELD_TOTAL).await, 3);
    assert_eq!(r.metric(&format!("{HOLD_SECONDS}_count")).await, 3);
    let sum = metric_f64(r, &format!("{HOLD_SECONDS}_sum")).await;
    assert!(sum >= 0.9, "three holds of 300 ms or more: {sum} s in all");
    assert_eq!(r.metric(EXPIRED).await, 0);

    let (resp, _) = answer(
        send(gw.envoy.addr, path("sb-x", port_x)),
        Duration::from_secs(3) + SLACK + TEST_CALLOUT_TIMEOUT,
    )
    .await;
    assert_refused(&resp, 503, "sandbox_starting", Some("5"));
    assert_eq!(r.metric(EXPIRED).await, 1);
    assert_eq!(r.metric(HELD_TOTAL).await, 4);
    assert_eq!(r.metric(&format!("{HOLD_SECONDS}_count")).await, 4);
    assert_eq!(
        r.metric(WAKES_STREAM).await,
        1,
        "a starting Pod is not woken"
    );
    held_now(r, 0).await;
}

every_entry!(
    a_request_to_a_starting_pod_is_held_until_it_runs,
    a_request_is_held_until_the_pod_has_an_ip_and_is_armed,
    a_held_request_ends_at_once_when_its_pod_fails_or_moves,
    a_released_sandbox_is_woken_once_for_100_clients_over_the_stream,
    a_released_sandbox_is_woken_once_for_100_clients_over_the_webhook,
    an_unknown_sandbox_is_woken_once_for_100_clients_with_wake_unknown,
    a_wake_pending_before_the_controller_subscribes_reaches_it,
    one_client_waiting_for_seconds_wakes_its_sandbox_once,
    a_client_that_leaves_while_held_costs_nothing_afterwards,
    a_sandbox_that_never_comes_up_is_503_sandbox_starting_after_the_budget,
    past_the_caps_a_request_is_refused_at_once,
    hold_and_wake_metrics_move,
);
entries_with_a_resolver_process!(
    a_resolver_killed_during_a_hold_is_503_within_the_callout_timeout,
    a_resolver_hung_during_a_hold_is_503_within_the_callout_timeout,
);
