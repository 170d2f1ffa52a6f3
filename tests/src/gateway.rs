//! The whole product on loopback: Envoy with the built filter, the resolver watching the
//! Kubernetes API emulator, and echo servers standing in for sandbox Pods.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::echo::Identity;
pub use crate::envoy::Entry;
use crate::envoy::{Envoy, EnvoyOptions};
use crate::fixtures::pod;
use crate::http::{self, Response};
use crate::process::{Resolver, free_ports};
use crate::stack::{ADMIN_KEY, KubeStack, PROPAGATION, gateway_args as gateway_args_for};

pub struct Gateway {
    pub kube: KubeStack,
    pub envoy: Envoy,
    envoy_options: EnvoyOptions,
    /// The native module Envoy loads instead of the built one.
    module: Option<PathBuf>,
    upstreams: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for u in &self.upstreams {
            u.abort();
        }
    }
}

/// The ext_proc entry's E2B domain, the demo stack's (`{port}-{id}.sandgate.test`).
pub const E2B_DOMAIN_FLAG: &str = "--extproc-e2b-domain=sandgate.test";

/// How the tests' Envoy differs from the shipped one: a short activity period so long-stream
/// reporting can be watched in seconds.
pub const TEST_ACTIVITY_INTERVAL: Duration = Duration::from_secs(1);
pub const TEST_CALLOUT_TIMEOUT: Duration = Duration::from_millis(1000);

impl Gateway {
    pub async fn start(entry: Entry) -> Gateway {
        Self::start_with(entry, true).await
    }

    /// With the entry failing closed (503) or open as given.
    pub async fn start_with(entry: Entry, fail_closed: bool) -> Gateway {
        Self::launch(entry, fail_closed, &[], None, None).await
    }

    /// The native entry with `module` loaded instead of the built one (the panic test's).
    pub async fn start_native_module(module: &Path) -> Gateway {
        let mut gw = Self::launch_with(Entry::Native, true, &[], None, None, Some(module)).await;
        gw.module = Some(module.to_path_buf());
        gw
    }

    /// The wasm entry with the filter's decision cache kept for `ttl` (0: off).
    pub async fn start_cached(ttl: Duration) -> Gateway {
        Self::launch(Entry::Wasm, true, &[], None, Some(ttl)).await
    }

    /// With extra resolver flags.
    pub async fn start_args(entry: Entry, resolver_args: &[&str]) -> Gateway {
        Self::launch(entry, true, resolver_args, None, None).await
    }

    /// With extra resolver flags, and for the wasm entry its decision cache kept for `ttl`.
    pub async fn start_args_cached(entry: Entry, resolver_args: &[&str], ttl: Duration) -> Gateway {
        let ttl = (entry == Entry::Wasm).then_some(ttl);
        Self::launch(entry, true, resolver_args, None, ttl).await
    }

    /// One cluster of several: the resolver knows itself as `cluster_id`, and Envoy verifies
    /// peer gateways' certificates against `peer_ca`.
    pub async fn start_cluster(entry: Entry, cluster_id: &str, peer_ca: &Path) -> Gateway {
        let id = format!("--cluster-id={cluster_id}");
        Self::launch(
            entry,
            true,
            &[id.as_str()],
            Some(peer_ca.to_path_buf()),
            None,
        )
        .await
    }

    async fn launch(
        entry: Entry,
        fail_closed: bool,
        resolver_args: &[&str],
        peer_ca: Option<PathBuf>,
        cache_ttl: Option<Duration>,
    ) -> Gateway {
        Self::launch_with(entry, fail_closed, resolver_args, peer_ca, cache_ttl, None).await
    }

    async fn launch_with(
        entry: Entry,
        fail_closed: bool,
        resolver_args: &[&str],
        peer_ca: Option<PathBuf>,
        cache_ttl: Option<Duration>,
        module: Option<&Path>,
    ) -> Gateway {
        // The demo stack's E2B domain, as envoy.yaml's filter configuration has it.
        let mut args = vec![E2B_DOMAIN_FLAG];
        args.extend_from_slice(resolver_args);
        let options =
            |resolver: SocketAddr, resolver_http: SocketAddr, gateway_args| EnvoyOptions {
                entry,
                resolver,
                resolver_http,
                activity_interval: TEST_ACTIVITY_INTERVAL,
                callout_timeout: TEST_CALLOUT_TIMEOUT,
                fail_closed,
                peer_ca,
                cache_ttl,
                gateway_args,
            };
        let (kube, envoy_options, envoy) = if entry.resolver_process() {
            let kube = KubeStack::start(&args).await;
            let envoy_options = options(kube.resolver.grpc, kube.resolver.http, Vec::new());
            let envoy = Envoy::start(&envoy_options).await;
            (kube, envoy_options, envoy)
        } else {
            // The gateway starts inside Envoy, on ports chosen here.
            let (emu, dir) = KubeStack::emulator().await;
            let ports @ (grpc, control, http) = {
                let [a, b, c] = free_ports();
                let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
                (addr(a), addr(b), addr(c))
            };
            let mut gateway_args = vec![
                format!("--grpc-listen={grpc}"),
                format!("--control-listen={control}"),
                format!("--http-listen={http}"),
            ];
            gateway_args.extend(gateway_args_for(&emu, dir.path(), &args));
            let envoy_options = options(grpc, http, gateway_args.clone());
            let envoy = Envoy::start_module(&envoy_options, module).await;
            let resolver = Resolver::in_envoy(ports, envoy.log.clone(), gateway_args).await;
            (
                KubeStack::with_resolver(emu, resolver, dir),
                envoy_options,
                envoy,
            )
        };
        Gateway {
            kube,
            envoy,
            envoy_options,
            module: None,
            upstreams: Vec::new(),
        }
    }

    /// Replaces Envoy with a new process on the same configuration (new ports), as a rollout
    /// or a crash would; the resolver and the sandboxes stay. The native entry's gateway goes
    /// with its Envoy, and the new one's starts on the same gateway ports.
    pub async fn replace_envoy(&mut self) {
        if !self.envoy_options.entry.resolver_process() {
            self.envoy.kill().await;
        }
        self.envoy = Envoy::start_module(&self.envoy_options, self.module.as_deref()).await;
        if !self.envoy_options.entry.resolver_process() {
            self.kube.resolver.replaced().await;
        }
    }

    /// Kills whatever decides: the resolver, or the native entry's Envoy (its gateway inside).
    pub async fn stop_decisions(&mut self) {
        if self.envoy_options.entry.resolver_process() {
            self.kube.resolver.kill().await;
        } else {
            self.envoy.kill().await;
        }
    }

    /// Starts what [`Gateway::stop_decisions`] killed again, on the same ports; returns once it
    /// is ready.
    pub async fn start_decisions(&mut self) {
        if self.envoy_options.entry.resolver_process() {
            self.kube.resolver.restart().await;
        } else {
            self.envoy.restart().await;
            self.kube.resolver.replaced().await;
        }
        self.kube.resolver.wait_ready().await;
    }

    /// Starts an echo server for `sandbox` on `ip` (a loopback address, as its Pod IP), and
    /// publishes a running Pod `namespace/name` for it. Returns the echo's port, the port
    /// clients ask for.
    /// An access token for `sandbox`'s `ports` (none: every port), minted by the admin over
    /// ControlPlaneService with the default lifetime.
    pub async fn mint(&self, sandbox: &str, ports: &[u16]) -> String {
        self.kube
            .control()
            .await
            .mint(sandbox, "", ports, 0)
            .await
            .unwrap_or_else(|e| panic!("minting a token for {sandbox}: {e}"))
    }

    pub async fn sandbox(&mut self, namespace: &str, name: &str, sandbox: &str, ip: &str) -> u16 {
        self.sandbox_as(namespace, name, sandbox, Identity::new(sandbox), ip)
            .await
    }

    /// [`Gateway::sandbox`] whose echo reports whatever `identity` says (a Pod that can be
    /// handed to another sandbox).
    pub async fn sandbox_as(
        &mut self,
        namespace: &str,
        name: &str,
        sandbox: &str,
        identity: Identity,
        ip: &str,
    ) -> u16 {
        let port = self.echo_as(identity, ip).await;
        self.kube.emu.apply(
            pod(namespace, name)
                .sandbox(sandbox)
                .phase("running")
                .ip(ip)
                .json(),
        );
        let want = crate::process::Outcome::Route(format!("{ip}:{port}"));
        let got = self
            .kube
            .resolver
            .resolve_until(ADMIN_KEY, sandbox, u32::from(port), &want, PROPAGATION)
            .await;
        assert_eq!(got, want, "the resolver did not see sandbox {sandbox}");
        port
    }

    /// Starts an echo server reporting itself as `sandbox` on `ip`:<random port>.
    pub async fn echo(&mut self, sandbox: &str, ip: &str) -> u16 {
        self.echo_as(Identity::new(sandbox), ip).await
    }

    /// Starts an echo server on `ip`:<random port> that reports whatever `identity` says.
    pub async fn echo_as(&mut self, identity: Identity, ip: &str) -> u16 {
        let ip: IpAddr = ip.parse().expect("loopback ip");
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0))
            .await
            .expect("bind echo upstream");
        let port = listener.local_addr().expect("echo addr").port();
        self.upstreams.push(tokio::spawn(async move {
            let _ = crate::echo::serve_as(listener, identity).await;
        }));
        port
    }

    /// One request through Envoy.
    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
        http::send(self.envoy.addr, method, path, headers)
            .await
            .unwrap_or_else(|e| panic!("request through envoy failed: {e}\n{}", self.envoy.logs()))
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.send("GET", path, headers).await
    }

    /// Repeats a GET until its status is `status` or `within` passes; returns the last answer.
    pub async fn get_until(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        status: u16,
        within: Duration,
    ) -> Response {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let r = self.get(path, headers).await;
            if r.status == status || tokio::time::Instant::now() >= deadline {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Defines each listed test once per entry (`<name>::wasm`, `<name>::ext_proc`,
/// `<name>::native`): the body is an `async fn name(entry: Entry)`, and every entry must meet
/// the same expectations.
#[macro_export]
macro_rules! every_entry {
    ($($name:ident),* $(,)?) => {
        $crate::entry_cases!([Wasm wasm, ExtProc ext_proc, Native native] $($name),*);
    };
}

/// [`every_entry!`] for cases about a resolver process of its own (killed, frozen, restarted
/// under a running Envoy): the wasm filter and ext_proc. The native entry has none; its
/// gateway is Envoy (tests/tests/native_panics.rs and the Envoy restarts of gateway_faults.rs
/// are its faults).
#[macro_export]
macro_rules! entries_with_a_resolver_process {
    ($($name:ident),* $(,)?) => {
        $crate::entry_cases!([Wasm wasm, ExtProc ext_proc] $($name),*);
    };
}

/// One `#[tokio::test]` per listed entry (`Entry` variant, test name) for each case.
#[doc(hidden)]
#[macro_export]
macro_rules! entry_cases {
    ($entries:tt $($name:ident),*) => {
        $($crate::entry_cases!(@case $entries $name);)*
    };
    (@case [$($entry:ident $test:ident),*] $name:ident) => {
        mod $name {
            $(
                #[tokio::test]
                async fn $test() {
                    super::$name($crate::gateway::Entry::$entry).await
                }
            )*
        }
    };
}
