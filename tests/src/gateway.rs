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
use crate::stack::{ADMIN_KEY, KubeStack, PROPAGATION};

pub struct Gateway {
    pub kube: KubeStack,
    pub envoy: Envoy,
    envoy_options: EnvoyOptions,
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

    /// The wasm entry with the filter's decision cache kept for `ttl` (0: off).
    pub async fn start_cached(ttl: Duration) -> Gateway {
        Self::launch(Entry::Wasm, true, &[], None, Some(ttl)).await
    }

    /// With extra resolver flags.
    pub async fn start_args(entry: Entry, resolver_args: &[&str]) -> Gateway {
        Self::launch(entry, true, resolver_args, None, None).await
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
        // The demo stack's E2B domain, as envoy.yaml's filter configuration has it.
        let mut args = vec![E2B_DOMAIN_FLAG];
        args.extend_from_slice(resolver_args);
        let kube = KubeStack::start(&args).await;
        let envoy_options = EnvoyOptions {
            entry,
            resolver: kube.resolver.grpc,
            resolver_http: kube.resolver.http,
            activity_interval: TEST_ACTIVITY_INTERVAL,
            callout_timeout: TEST_CALLOUT_TIMEOUT,
            fail_closed,
            peer_ca,
            cache_ttl,
        };
        let envoy = Envoy::start(&envoy_options).await;
        Gateway {
            kube,
            envoy,
            envoy_options,
            upstreams: Vec::new(),
        }
    }

    /// Replaces Envoy with a new process on the same configuration (new ports), as a rollout
    /// or a crash would; the resolver and the sandboxes stay.
    pub async fn replace_envoy(&mut self) {
        self.envoy = Envoy::start(&self.envoy_options).await;
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

/// Defines each listed test once per entry (`<name>::wasm`, `<name>::ext_proc`): the body is an
/// `async fn name(entry: Entry)`, and both entries must meet the same expectations.
#[macro_export]
macro_rules! both_entries {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn wasm() {
                    super::$name($crate::gateway::Entry::Wasm).await
                }
                #[tokio::test]
                async fn ext_proc() {
                    super::$name($crate::gateway::Entry::ExtProc).await
                }
            }
        )*
    };
}
