//! The driver of `full` and `smoke`: starts every peer on loopback, measures, and hands the
//! numbers to [`report`]. Owns process lifecycles and measurement order; no arithmetic on
//! results beyond collecting them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use sandgate_proto::ctrlplane::v1::MintAccessTokenRequest;
use sandgate_proto::ctrlplane::v1::control_plane_service_client::ControlPlaneServiceClient;
use sandgate_tests::emulator::Emulator;
use sandgate_tests::envoy::{Entry, Envoy, EnvoyOptions, SHIPPED_INTERNAL_TOKEN, repo_root};
use sandgate_tests::fixtures::pod;
use sandgate_tests::process::{Resolver, free_port};
use sandgate_tests::{echo, http};
use tokio::process::{Child, Command};

use crate::report::{self, Alone, Informer, Pair, Paired, Report, Through};
use crate::rpc::LoadResult;
use crate::wrk::{Run, Wrk};

const TENANT_KEY: &str = "bench-tenant-key";
const ADMIN_KEY: &str = "bench-admin-key";
const SANDBOX: &str = "bench";
/// The header a token-authenticated request carries its access token in (no API key).
const TOKEN_HEADER: &str = "x-access-token";
/// The resolver's access-token signing keys (`--token-keys-file`): a rotation under way, the
/// greatest id signs, both verify. Secrets of at least 32 bytes, base64.
const TOKEN_KEYS: &str = "'2026-11-01': YmVuY2ggc2lnbmluZyBrZXksIG5vdmVtYmVyIDIwMjYhISE=\n\
                          '2026-12-01': YmVuY2ggc2lnbmluZyBrZXksIGRlY2VtYmVyIDIwMjYhISE=\n";

/// How long and how much; `full` is what the README reports, `smoke` only proves it runs.
pub struct Plan {
    pub name: &'static str,
    pub rounds: usize,
    /// Before each measured run of a round (none when zero).
    pub warmup: Duration,
    pub measure: Duration,
    /// Each paired run (see [`report::Paired`]), once per round and paired configuration.
    pub paired: Duration,
    pub connections: u32,
    pub rpc_warmup_secs: f64,
    pub rpc_secs: f64,
    /// Pod counts of the informer runs (besides the empty one that is their baseline).
    pub pods: [usize; 2],
    /// Whether criterion estimates are part of the report (smoke runs criterion in test
    /// mode, which measures nothing; an older run's files must not pass for this one's).
    pub criterion: bool,
    /// Wake on traffic ([`crate::wake`]): timed releases per entry, and requests held at once
    /// for the resolver's memory per held request.
    pub wake_trials: usize,
    pub held: usize,
}

impl Plan {
    pub fn full() -> Plan {
        Plan {
            name: "full",
            rounds: 3,
            warmup: Duration::from_secs(2),
            measure: Duration::from_secs(8),
            paired: Duration::from_secs(5),
            connections: 32,
            rpc_warmup_secs: 1.0,
            rpc_secs: 5.0,
            pods: [10_000, 100_000],
            criterion: true,
            wake_trials: 100,
            held: 10_000,
        }
    }

    pub fn smoke() -> Plan {
        Plan {
            name: "smoke",
            rounds: 1,
            // No warm-up: smoke times nothing, and it is part of `just test`'s budget.
            warmup: Duration::ZERO,
            measure: Duration::from_secs(1),
            paired: Duration::from_secs(1),
            connections: 4,
            rpc_warmup_secs: 0.2,
            rpc_secs: 0.5,
            pods: [500, 1_000],
            criterion: false,
            wake_trials: 5,
            held: 200,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The wrk binary (`just bench` installs Debian's).
    #[arg(long, env = "SANDGATE_WRK", default_value = "wrk")]
    wrk: PathBuf,
}

/// The HTTP configurations, in the order of every round.
pub const CONFIGS: [&str; 10] = [
    "direct",
    "noop_wasm",
    "noop_native",
    "hostcalls_wasm",
    "null_wasm",
    "null_extproc",
    "wasm",
    "wasm_uncached",
    "extproc",
    "native",
];

/// sandgate's entries (the shipped configurations, deciding against a gateway); the others are
/// `bench/envoy-floor.yaml` with at most one do-nothing filter.
fn is_entry(config: &str) -> bool {
    matches!(config, "wasm" | "wasm_uncached" | "extproc" | "native")
}

/// How a timed request authenticates: the tenant key in `x-api-key`, or an access token
/// minted for the bench's sandbox and port in [`TOKEN_HEADER`] and no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Key,
    Token,
}

impl Credential {
    /// The header the credential travels in.
    pub fn header(self) -> &'static str {
        match self {
            Credential::Key => "x-api-key",
            Credential::Token => TOKEN_HEADER,
        }
    }
}

/// One paired run (see [`report::Paired`]): the name reported, the configuration loaded, the
/// baseline loaded beside it, and the credential both receive.
#[derive(Debug, Clone, Copy)]
pub struct PairedRun {
    pub name: &'static str,
    pub config: &'static str,
    pub baseline: &'static str,
    pub credential: Credential,
}

const fn pair(
    name: &'static str,
    config: &'static str,
    baseline: &'static str,
    credential: Credential,
) -> PairedRun {
    PairedRun {
        name,
        config,
        baseline,
        credential,
    }
}

/// The runs measured in pairs, in the order of every paired round. Most are against `noop_wasm`
/// (the do-nothing wasm filter); `wasm_token` is the cached entry again with token-authenticated
/// requests, right after the key-authenticated run it is compared with. The native module, the
/// do-nothing one (`noop_native`, its floor) and the entry, is measured against both
/// `noop_wasm` and `direct` (plain Envoy): `*_direct` names the latter pairs.
pub const PAIRED: [PairedRun; 8] = [
    pair(
        "hostcalls_wasm",
        "hostcalls_wasm",
        "noop_wasm",
        Credential::Key,
    ),
    pair("wasm", "wasm", "noop_wasm", Credential::Key),
    pair("wasm_token", "wasm", "noop_wasm", Credential::Token),
    pair(
        "wasm_uncached",
        "wasm_uncached",
        "noop_wasm",
        Credential::Key,
    ),
    pair("noop_native", "noop_native", "noop_wasm", Credential::Key),
    pair("native", "native", "noop_wasm", Credential::Key),
    pair(
        "noop_native_direct",
        "noop_native",
        "direct",
        Credential::Key,
    ),
    pair("native_direct", "native", "direct", Credential::Key),
];

/// The resolver's series that tell how the cached wasm entry was answered.
const HITS: &str = "sandgate_filter_cache_hits_total";
const ROUTED: &str = "sandgate_resolves_total{outcome=\"route\"}";

pub async fn run(plan: Plan, args: RunArgs, out: PathBuf) -> anyhow::Result<()> {
    let root = repo_root();
    let out = root.join(out);
    std::fs::create_dir_all(&out)?;
    let dir = tempfile::tempdir()?;
    let bins = std::env::current_exe()?
        .parent()
        .context("binary directory")?
        .to_path_buf();
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let pin = cpus >= 2 && which("taskset");

    println!("== HTTP through Envoy ({} round(s))", plan.rounds);
    let through = through_envoy(&plan, &args, &bins, dir.path(), pin).await?;
    println!("== the resolver alone (pinned to one core: {pin})");
    let alone = resolver_alone(&plan, &bins, dir.path(), pin).await?;
    println!("== informer scale");
    let informer = informer_scale(&plan, &bins, dir.path(), pin).await?;
    println!("== wake on traffic");
    let wake = crate::wake::run(&plan, &bins, dir.path()).await?;
    let criterion = report::criterion(&root.join("target/criterion"), plan.criterion)?;

    let report = Report::new(
        &plan,
        report::Machine::read(cpus, &args.wrk),
        through,
        alone,
        informer,
        wake,
        criterion,
    );
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report.json())?,
    )?;
    let md = report.markdown();
    std::fs::write(out.join("report.md"), &md)?;
    println!("\n{md}\nwritten: {}/report.{{json,md}}", out.display());
    Ok(())
}

fn which(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Spawns a helper process whose output goes to `log`; it dies with its handle.
fn spawn(
    program: &Path,
    args: &[String],
    pin_cpu: Option<usize>,
    log: &Path,
) -> anyhow::Result<Child> {
    let mut cmd = on_cpus(program, pin_cpu.map(|c| c.to_string()).as_deref());
    let file = std::fs::File::create(log)?;
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", program.display()))
}

/// `program` under `taskset -c <cpus>` (a CPU list), or wherever the kernel puts it.
pub fn on_cpus(program: &Path, cpus: Option<&str>) -> Command {
    match cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A resolver process and its addresses.
pub(crate) struct ResolverProc {
    child: Child,
    pub(crate) grpc: SocketAddr,
    control: SocketAddr,
    pub(crate) http: SocketAddr,
    pub(crate) log: PathBuf,
}

impl ResolverProc {
    pub(crate) fn start(
        bins: &Path,
        dir: &Path,
        name: &str,
        source: &[String],
        pin: Option<usize>,
    ) -> anyhow::Result<Self> {
        let (grpc, control, http) = (loopback(), loopback(), loopback());
        let mut args = vec![
            "serve".to_string(),
            format!("--grpc-listen={grpc}"),
            format!("--control-listen={control}"),
            format!("--http-listen={http}"),
            format!("--admin-key={ADMIN_KEY}"),
            // The token the shipped Envoy configurations send (and rpc-load, for Resolve).
            format!("--internal-token={SHIPPED_INTERNAL_TOKEN}"),
        ];
        args.extend_from_slice(source);
        let log = dir.join(format!("resolver-{name}.log"));
        let child = spawn(&bins.join("sandgate-resolver"), &args, pin, &log)?;
        Ok(ResolverProc {
            child,
            grpc,
            control,
            http,
            log,
        })
    }

    /// Polls /readyz; returns how long since `since` it took.
    pub(crate) async fn ready(
        &mut self,
        since: Instant,
        within: Duration,
    ) -> anyhow::Result<Duration> {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "resolver exited ({status}): {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if let Ok((200, _)) = http::get(self.http, "/readyz", None).await {
                return Ok(since.elapsed());
            }
            ensure!(
                since.elapsed() < within,
                "resolver not ready after {within:?}; log {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub(crate) fn rss_bytes(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("resolver gone")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmRSS")?;
        Ok(kb * 1024)
    }

    /// A series from /metrics, e.g. `sandgate_pods`.
    pub(crate) async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let (_, text) = http::get(self.http, "/metrics", None).await?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .with_context(|| format!("{name} not in /metrics"))
    }
}

async fn wait_tcp(addr: SocketAddr) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        ensure!(Instant::now() < until, "nothing listens on {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn inventory_args(dir: &Path, pod_ip: &str) -> anyhow::Result<Vec<String>> {
    let pods = dir.join("pods.yaml");
    std::fs::write(
        &pods,
        format!(
            "- name: bench-pod\n  namespace: bench\n  ip: {pod_ip}\n  sandboxId: {SANDBOX}\n  phase: running\n"
        ),
    )?;
    let keys = dir.join("keys.yaml");
    std::fs::write(
        &keys,
        format!("tenants:\n  - key: {TENANT_KEY}\n    namespace: bench\n"),
    )?;
    let token_keys = dir.join("token-keys.yaml");
    std::fs::write(&token_keys, TOKEN_KEYS)?;
    Ok(vec![
        "--pod-source=inventory".into(),
        format!("--inventory={}", pods.display()),
        format!("--keys-file={}", keys.display()),
        format!("--token-keys-file={}", token_keys.display()),
    ])
}

/// The filter a floor configuration adds, as YAML at the http_filters indentation: the
/// do-nothing wasm filter (`null_filter`) in one of its modes, ext_proc, or the native module
/// (`native_module`) in its do-nothing mode, which starts no gateway.
fn floor_filter(config: &str, null_filter: &Path, native_module: &Path) -> anyhow::Result<String> {
    let wasm = |mode: &str| {
        format!(
            r#"                  - name: envoy.filters.http.wasm
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
                      config:
                        name: noop
                        root_id: noop
                        vm_config:
                          vm_id: noop
                          runtime: envoy.wasm.runtime.v8
                          code:
                            local:
                              filename: {}
                        configuration:
                          "@type": type.googleapis.com/google.protobuf.StringValue
                          value: '{{{mode}, "cluster": "noop_server"}}'
"#,
            null_filter.display()
        )
    };
    Ok(match config {
        "direct" => String::new(),
        "noop_wasm" => wasm(r#""callout": false"#),
        "hostcalls_wasm" => wasm(r#""host_calls": true"#),
        "null_wasm" => wasm(r#""callout": true"#),
        "noop_native" => format!(
            r#"                  - name: sandgate
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter
                      dynamic_module_config:
                        name: sandgate_native
                        module:
                          local:
                            filename: {}
                      filter_name: sandgate
                      filter_config:
                        "@type": type.googleapis.com/google.protobuf.Struct
                        value:
                          noop: true
"#,
            native_module.display()
        ),
        "null_extproc" => r#"                  - name: envoy.filters.http.ext_proc
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor
                      grpc_service:
                        envoy_grpc:
                          cluster_name: noop_server
                      failure_mode_allow: false
                      message_timeout: 1s
                      processing_mode:
                        request_header_mode: SEND
                        response_header_mode: SKIP
                        request_body_mode: NONE
                        response_body_mode: NONE
                        request_trailer_mode: SKIP
                        response_trailer_mode: SKIP
"#
        .to_string(),
        other => bail!("not a floor configuration: {other}"),
    })
}

/// One Envoy per configuration, all started before the first round so every round measures
/// the same processes; the paired runs after the last round.
async fn through_envoy(
    plan: &Plan,
    args: &RunArgs,
    bins: &Path,
    dir: &Path,
    pin: bool,
) -> anyhow::Result<Through> {
    let root = repo_root();
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let upstream_port = upstream.local_addr()?.port();
    let _echo = tokio::spawn(echo::serve(upstream, SANDBOX.to_string()));

    let null_addr = loopback();
    let null = spawn(
        &bins.join("sandgate-bench"),
        &["null".into(), format!("--listen={null_addr}")],
        None,
        &dir.join("null.log"),
    )?;
    wait_tcp(null_addr).await?;

    let mut resolver =
        ResolverProc::start(bins, dir, "http", &inventory_args(dir, "127.0.0.1")?, None)?;
    resolver
        .ready(Instant::now(), Duration::from_secs(30))
        .await?;

    let floor = std::fs::read_to_string(root.join("bench/envoy-floor.yaml"))?;
    let null_filter = sandgate_tests::envoy::artefact(
        "SANDGATE_NULL_WASM",
        "target/wasm/sandgate_null_filter.wasm",
        "run `just wasm`",
    );
    let native_module = sandgate_tests::envoy::artefact(
        "SANDGATE_NATIVE",
        "target/native/libsandgate_native.so",
        "run `just native`",
    );
    let mut envoys = Vec::new();
    // The native entry's gateway, inside its Envoy (ready before anything is timed; its
    // counters show that it routed every request the `native` runs were answered).
    let mut native_gateway = None;
    for config in CONFIGS {
        let envoy = match config {
            "wasm" | "wasm_uncached" | "extproc" => {
                Envoy::start(&EnvoyOptions {
                    entry: if config == "extproc" {
                        Entry::ExtProc
                    } else {
                        Entry::Wasm
                    },
                    resolver: resolver.grpc,
                    resolver_http: resolver.http,
                    activity_interval: Duration::from_secs(30),
                    callout_timeout: Duration::from_secs(1),
                    fail_closed: true,
                    peer_ca: None,
                    // The shipped cache for `wasm`; none for `wasm_uncached`.
                    cache_ttl: (config == "wasm_uncached").then_some(Duration::ZERO),
                    gateway_args: Vec::new(),
                })
                .await
            }
            "native" => {
                // envoy-native.yaml as shipped, its gateway given the flags the resolver above
                // runs with (the same inventory, keys and signing keys) on ports of its own.
                let ports @ (grpc, control, http) = (loopback(), loopback(), loopback());
                let mut gateway_args = vec![
                    format!("--grpc-listen={grpc}"),
                    format!("--control-listen={control}"),
                    format!("--http-listen={http}"),
                    format!("--admin-key={ADMIN_KEY}"),
                    format!("--internal-token={SHIPPED_INTERNAL_TOKEN}"),
                ];
                gateway_args.extend(inventory_args(dir, "127.0.0.1")?);
                let envoy = Envoy::start(&EnvoyOptions {
                    entry: Entry::Native,
                    resolver: grpc,
                    resolver_http: http,
                    activity_interval: Duration::from_secs(30),
                    callout_timeout: Duration::from_secs(1),
                    fail_closed: true,
                    peer_ca: None,
                    cache_ttl: None,
                    gateway_args: gateway_args.clone(),
                })
                .await;
                native_gateway =
                    Some(Resolver::in_envoy(ports, envoy.log.clone(), gateway_args).await);
                envoy
            }
            floor_config => {
                Envoy::launch(
                    &floor,
                    vec![
                        ("port_value: 18080", format!("port_value: {upstream_port}")),
                        (
                            "address: 127.0.0.1, port_value: 50051",
                            format!("address: 127.0.0.1, port_value: {}", null_addr.port()),
                        ),
                        (
                            "                  # FILTER\n",
                            floor_filter(floor_config, &null_filter, &native_module)?,
                        ),
                    ],
                )
                .await
            }
        };
        envoys.push((config, envoy));
    }

    let path = format!("/sandboxes/{SANDBOX}/{upstream_port}/");
    let headers = [(Credential::Key.header(), TENANT_KEY)];
    let token = mint_token(resolver.control, upstream_port).await?;
    let token_headers = [(Credential::Token.header(), token.as_str())];
    // Every configuration must reach the echo sandbox with this very request before it is
    // timed; sandgate's entries must also have rewritten the path and dropped the key, and
    // answer the token-authenticated request (no key) from the sandbox too.
    for (config, envoy) in &envoys {
        let sandgate = is_entry(config);
        let credentials: &[&[(&str, &str)]] = if sandgate {
            &[&headers, &token_headers]
        } else {
            &[&headers]
        };
        for sent in credentials {
            let r = http::send(envoy.addr, "GET", &path, sent).await?;
            ensure!(r.status == 200, "{config}: {} {}", r.status, r.body);
            let echo = r.json();
            ensure!(echo["sandbox"] == SANDBOX, "{config}: {}", r.body);
            if sandgate {
                ensure!(
                    echo["path"] == "/" && echo["headers"].get("x-api-key").is_none(),
                    "{config}: {}",
                    r.body
                );
            }
        }
    }
    // And the token is what opened it: the same claims under a wrong MAC are refused.
    let forged = forge(&token);
    let wasm = envoys
        .iter()
        .find(|(c, _)| *c == "wasm")
        .map(|(_, e)| e.addr)
        .context("wasm: Envoy not running")?;
    let r = http::send(wasm, "GET", &path, &[(TOKEN_HEADER, &forged)]).await?;
    ensure!(
        r.status == 401 && r.body.contains("invalid_access_token"),
        "a forged token: {} {}",
        r.status,
        r.body
    );

    let script = Wrk::write_script(dir)?;
    let wrk = Wrk {
        binary: &args.wrk,
        script: &script,
        connections: plan.connections,
        cpus: None,
    };
    let native_gateway = native_gateway.context("native: no gateway")?;
    let mut runs: BTreeMap<&'static str, Vec<Run>> = BTreeMap::new();
    let (mut hits, mut resolved) = (0.0, 0.0);
    for round in 1..=plan.rounds {
        for (config, envoy) in &envoys {
            let cached = *config == "wasm";
            let before = if cached {
                (resolver.metric(HITS).await?, resolver.metric(ROUTED).await?)
            } else {
                (0.0, 0.0)
            };
            let native_before = native_gateway.metric(ROUTED).await;
            let warmed = if plan.warmup.is_zero() {
                0
            } else {
                wrk.run(envoy.addr, &path, &headers, plan.warmup)
                    .await
                    .with_context(|| format!("{config} warm-up"))?
                    .requests
            };
            let run = wrk
                .run(envoy.addr, &path, &headers, plan.measure)
                .await
                .with_context(|| config.to_string())?;
            if *config == "native" {
                // Every answered request was routed by the gateway inside Envoy (and nothing
                // else routes through it: the other Envoys do not ask it).
                let decided = native_gateway.metric(ROUTED).await - native_before;
                ensure!(
                    decided >= warmed + run.requests,
                    "native: the gateway routed {decided} requests, wrk was answered {}",
                    warmed + run.requests
                );
            }
            if cached {
                // The filter reports its hits once a second: wait for the last report.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                hits += resolver.metric(HITS).await? - before.0;
                resolved += resolver.metric(ROUTED).await? - before.1;
            }
            println!(
                "round {round} {config:>12}: {:>8.0} req/s  p50 {:>6.2} ms  p99 {:>6.2} ms",
                run.rps, run.p50_ms, run.p99_ms
            );
            runs.entry(config).or_default().push(run);
        }
    }
    let cache_hit_rate = hits / (hits + resolved);
    println!(
        "cache hit rate of the cached wasm entry: {cache_hit_rate:.4} ({hits} hits, {resolved} resolved)"
    );
    let resolver_pid = resolver.child.id().context("resolver gone")?;
    let null_pid = null.id().context("null server gone")?;
    // With two or more cores the paired Envoys get core 0 to themselves: the load, the echo
    // upstream (this process) and the servers move to the others.
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let rest = format!("1-{}", cpus - 1);
    let mut pinned = pin;
    if pin {
        for pid in [std::process::id(), resolver_pid, null_pid] {
            pinned &= set_affinity(pid, &rest);
        }
    }
    let load = Load {
        wrk: &Wrk {
            cpus: pinned.then(|| rest.clone()),
            ..wrk
        },
        path: &path,
        key_headers: &headers,
        token_headers: &token_headers,
        duration: plan.paired,
    };
    let paired = paired(plan.rounds, &load, &envoys, &resolver, pinned).await;
    if pin {
        // Back to every core for what follows (the emulator runs in this process).
        set_affinity(std::process::id(), &format!("0-{}", cpus - 1));
    }
    let paired = paired?;
    // The token was good to the end: still answered by the sandbox after the last paired run.
    let r = http::send(wasm, "GET", &path, &token_headers).await?;
    ensure!(
        r.status == 200 && r.json()["sandbox"] == SANDBOX,
        "the token after the paired runs: {} {}",
        r.status,
        r.body
    );
    Ok(Through {
        runs,
        paired,
        cache_hit_rate,
    })
}

/// An access token for the bench's sandbox and `port` only, minted by the resolver's control
/// plane (ControlPlaneService.MintAccessToken, the admin key) with its signing keys; it
/// outlives the run.
async fn mint_token(control: SocketAddr, port: u16) -> anyhow::Result<String> {
    let mut client = ControlPlaneServiceClient::connect(format!("http://{control}"))
        .await
        .context("connecting the resolver's control plane")?;
    let mut request = tonic::Request::new(MintAccessTokenRequest {
        sandbox_id: SANDBOX.into(),
        // The namespace of the Pod serving the sandbox.
        namespace: String::new(),
        ports: vec![u32::from(port)],
        ttl_seconds: 3 * 3600,
    });
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {ADMIN_KEY}").parse()?);
    let token = client
        .mint_access_token(request)
        .await
        .context("MintAccessToken")?
        .into_inner()
        .token;
    ensure!(token.starts_with("sgt1."), "not a token: {token:?}");
    Ok(token)
}

/// `token` with one base64url character of its MAC changed (not the last, whose spare bits
/// must stay zero): the same claims under another MAC.
fn forge(token: &str) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let at = bytes.len() - 5;
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("a token is ASCII")
}

/// The request every configuration is timed on, by credential, and how long.
struct Load<'a> {
    wrk: &'a Wrk<'a>,
    path: &'a str,
    key_headers: &'a [(&'a str, &'a str)],
    token_headers: &'a [(&'a str, &'a str)],
    duration: Duration,
}

impl Load<'_> {
    fn headers(&self, credential: Credential) -> &[(&str, &str)] {
        match credential {
            Credential::Key => self.key_headers,
            Credential::Token => self.token_headers,
        }
    }
}

/// Each of [`PAIRED`] under load at the same moment as its baseline, their Envoys on core 0
/// when `pin`; each charged the CPU time it spent per request.
async fn paired(
    rounds: usize,
    load: &Load<'_>,
    envoys: &[(&'static str, Envoy)],
    resolver: &ResolverProc,
    pin: bool,
) -> anyhow::Result<Paired> {
    let resolver_pid = resolver.child.id().context("resolver gone")?;
    let envoy = |name: &str| {
        envoys
            .iter()
            .find(|(c, _)| *c == name)
            .and_then(|(_, e)| Some((e.pid()?, e.addr)))
            .with_context(|| format!("{name}: Envoy not running"))
    };
    let mut pinned = pin;
    if pin {
        for run in PAIRED {
            pinned &= set_affinity(envoy(run.config)?.0, "0");
            pinned &= set_affinity(envoy(run.baseline)?.0, "0");
        }
    }
    println!("== paired, each beside its baseline (Envoys on one core: {pinned})");
    let per_second = clock_ticks_per_second()?;
    let us_per_request =
        |ticks: u64, requests: u64| ticks as f64 * 1e6 / per_second as f64 / requests.max(1) as f64;
    let mut runs: BTreeMap<&'static str, Vec<Pair>> = BTreeMap::new();
    let (mut token_hits, mut token_resolved) = (0.0, 0.0);
    for round in 1..=rounds {
        for PairedRun {
            name,
            config,
            baseline,
            credential,
        } in PAIRED
        {
            let (base, other) = (envoy(baseline)?, envoy(config)?);
            let headers = load.headers(credential);
            let counted = credential == Credential::Token;
            let before_counters = if counted {
                // The filter reports its hits once a second: let the run before report its last.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                (resolver.metric(HITS).await?, resolver.metric(ROUTED).await?)
            } else {
                (0.0, 0.0)
            };
            // The wasm entries are charged the resolver's time too: a miss is decided there.
            // The native entry's gateway runs inside its Envoy, so its time is the Envoy's.
            let charged = |pid: u32| -> anyhow::Result<u64> {
                let server = match config {
                    "wasm" | "wasm_uncached" => cpu_ticks(resolver_pid)?,
                    _ => 0,
                };
                Ok(cpu_ticks(pid)? + server)
            };
            let before = (cpu_ticks(base.0)?, charged(other.0)?);
            let (a, b) = tokio::join!(
                load.wrk.run(base.1, load.path, headers, load.duration),
                load.wrk.run(other.1, load.path, headers, load.duration),
            );
            let (a, b) = (
                a.with_context(|| format!("{baseline} beside {name}, paired"))?,
                b.with_context(|| format!("{name}, paired"))?,
            );
            let after = (cpu_ticks(base.0)?, charged(other.0)?);
            if counted {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                token_hits += resolver.metric(HITS).await? - before_counters.0;
                token_resolved += resolver.metric(ROUTED).await? - before_counters.1;
            }
            let pair = Pair {
                base_rps: a.rps,
                rps: b.rps,
                base_cpu_us: us_per_request(after.0 - before.0, a.requests),
                cpu_us: us_per_request(after.1 - before.1, b.requests),
                base_p99_ms: a.p99_ms,
                p99_ms: b.p99_ms,
            };
            println!(
                "round {round} {name:>18} beside {baseline:<9}: {:>7.0} / {:>7.0} req/s, {:>6.2} / {:>6.2} CPU µs per request, p99 {:.2} / {:.2} ms",
                pair.rps,
                pair.base_rps,
                pair.cpu_us,
                pair.base_cpu_us,
                pair.p99_ms,
                pair.base_p99_ms
            );
            runs.entry(name).or_default().push(pair);
        }
    }
    let token_cache_hit_rate = token_hits / (token_hits + token_resolved);
    println!(
        "cache hit rate of the cached wasm entry, token-authenticated: {token_cache_hit_rate:.4} ({token_hits} hits, {token_resolved} resolved)"
    );
    Ok(Paired {
        pinned,
        runs,
        token_cache_hit_rate,
    })
}

/// CPU time `pid` has used so far (user + system, every thread, in clock ticks).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces or parentheses: count fields from the last ')'.
    // utime and stime are fields 14 and 15 of the line, the 12th and 13th after the name.
    let after_name: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| {
        after_name
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .with_context(|| format!("/proc/{pid}/stat: {stat}"))
    };
    Ok(field(11)? + field(12)?)
}

fn clock_ticks_per_second() -> anyhow::Result<u64> {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("getconf CLK_TCK")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("getconf CLK_TCK printed no number")
}

/// Moves every thread of `pid` to `cpus` (a CPU list); false when taskset refuses.
fn set_affinity(pid: u32, cpus: &str) -> bool {
    std::process::Command::new("taskset")
        .args(["-a", "-cp", cpus, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Resolve and PushRoute calls per second, the resolver on one core and the caller on the
/// other.
async fn resolver_alone(plan: &Plan, bins: &Path, dir: &Path, pin: bool) -> anyhow::Result<Alone> {
    let mut resolver = ResolverProc::start(
        bins,
        dir,
        "alone",
        &inventory_args(dir, "127.0.0.1")?,
        pin.then_some(0),
    )?;
    resolver
        .ready(Instant::now(), Duration::from_secs(30))
        .await?;
    let resolve_rps = rpc_load(plan, bins, pin, "resolve", resolver.grpc, TENANT_KEY).await?;
    let push_rps = rpc_load(plan, bins, pin, "push", resolver.control, ADMIN_KEY).await?;
    Ok(Alone {
        pinned: pin,
        resolve_rps,
        push_rps,
    })
}

/// One `sandgate-bench rpc-load` process (on the second core when pinning); its calls/s.
async fn rpc_load(
    plan: &Plan,
    bins: &Path,
    pin: bool,
    kind: &str,
    target: SocketAddr,
    key: &str,
) -> anyhow::Result<f64> {
    let mut cmd = if pin {
        let mut c = Command::new("taskset");
        c.args(["-c", "1"]).arg(bins.join("sandgate-bench"));
        c
    } else {
        Command::new(bins.join("sandgate-bench"))
    };
    cmd.arg("rpc-load")
        .arg(format!("--kind={kind}"))
        .arg(format!("--target={target}"))
        .arg(format!("--warmup-secs={}", plan.rpc_warmup_secs))
        .arg(format!("--secs={}", plan.rpc_secs))
        .arg(format!("--key={key}"))
        .arg(format!("--internal-token={SHIPPED_INTERNAL_TOKEN}"))
        .arg(format!("--sandbox={SANDBOX}"));
    let out = cmd.output().await?;
    ensure!(
        out.status.success(),
        "rpc-load {kind}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: LoadResult = serde_json::from_slice(&out.stdout).context("rpc-load output")?;
    println!("{kind:>8}: {:>8.0} calls/s", r.per_sec);
    Ok(r.per_sec)
}

/// Initial sync time and resident memory of a resolver watching `n` Pods, against one
/// watching none.
async fn informer_scale(
    plan: &Plan,
    bins: &Path,
    dir: &Path,
    pin: bool,
) -> anyhow::Result<Vec<Informer>> {
    let mut out = Vec::new();
    for n in [0, plan.pods[0], plan.pods[1]] {
        let emu = Emulator::start().await;
        for i in 0..n {
            emu.apply(
                pod("bench", &format!("pod-{i}"))
                    .sandbox(&format!("sb-{i}"))
                    .phase("running")
                    .ip(&format!(
                        "10.{}.{}.{}",
                        i >> 16 & 255,
                        i >> 8 & 255,
                        i & 255
                    ))
                    .json(),
            );
        }
        let kubeconfig = emu.write_kubeconfig(dir);
        let source = vec![
            "--pod-source=kube".to_string(),
            format!("--kubeconfig={}", kubeconfig.display()),
        ];
        let started = Instant::now();
        let mut resolver = ResolverProc::start(
            bins,
            dir,
            &format!("informer-{n}"),
            &source,
            pin.then_some(0),
        )?;
        let sync = resolver.ready(started, Duration::from_secs(300)).await?;
        let held = resolver.metric("sandgate_pods").await?;
        ensure!(
            held as usize == n,
            "resolver holds {held} Pods, the emulator {n}"
        );
        // Settle: the first list's buffers are freed, the watch is idle.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss = resolver.rss_bytes()?;
        println!(
            "{n:>8} Pods: ready in {:.2} s, RSS {:.1} MiB",
            sync.as_secs_f64(),
            rss as f64 / 1048576.0
        );
        out.push(Informer {
            pods: n,
            sync_s: sync.as_secs_f64(),
            rss_bytes: rss,
        });
    }
    Ok(out)
}
