//! A resolver running against the Kubernetes API emulator: the set-up most behaviour tests share.

use std::time::Duration;

use sandgate_proto::ctrlplane::v1::control_plane_service_client::ControlPlaneServiceClient;
use sandgate_proto::ctrlplane::v1::{
    EvictRouteRequest, GetLastActiveRequest, MintAccessTokenRequest, PushClusterConfigRequest,
    PushRouteRequest,
};
use tonic::transport::Channel;

use crate::emulator::Emulator;
use crate::fixtures::{ARMED, key_secret, pod, token_keys_secret};
use crate::process::{Outcome, Resolver};

pub const ADMIN_KEY: &str = "test-admin-key";
pub const ACME_KEY: &str = "acme-key-0123456789";
pub const GLOBEX_KEY: &str = "globex-key-0123456789";
/// Where the agentbox API server keeps key Secrets.
pub const KEYS_NAMESPACE: &str = "agentbox-system";
/// The Secret of access-token signing keys every test resolver watches (in KEYS_NAMESPACE),
/// and the one key it starts with.
pub const TOKEN_KEYS_SECRET: &str = "sandgate-token-keys";
pub const TOKEN_KEY: (&str, &[u8]) = ("2026-12-01", b"test signing key: thirty-two bytes or more");

pub struct KubeStack {
    pub emu: Emulator,
    pub resolver: Resolver,
    barriers: std::sync::atomic::AtomicUsize,
    _dir: tempfile::TempDir,
}

impl KubeStack {
    /// Emulator with two tenants' key Secrets (acme, globex), and a ready resolver watching it.
    pub async fn start(extra_args: &[&str]) -> KubeStack {
        let (emu, dir) = Self::emulator().await;
        let resolver = resolver_on(&emu, dir.path(), extra_args).await;
        Self::with_resolver(emu, resolver, dir)
    }

    /// A stack whose gateway was started elsewhere (inside the native entry's Envoy) with
    /// [`gateway_args`] for `emu` and `dir`.
    pub fn with_resolver(emu: Emulator, resolver: Resolver, dir: tempfile::TempDir) -> KubeStack {
        KubeStack {
            emu,
            resolver,
            barriers: Default::default(),
            _dir: dir,
        }
    }

    /// The emulator with two tenants' key Secrets (acme, globex) and the token signing keys,
    /// and a directory for a gateway's files (its kubeconfig).
    pub async fn emulator() -> (Emulator, tempfile::TempDir) {
        let emu = Emulator::start().await;
        emu.apply(key_secret(
            KEYS_NAMESPACE,
            "key-acme",
            ACME_KEY,
            "acme",
            None,
        ));
        emu.apply(key_secret(
            KEYS_NAMESPACE,
            "key-globex",
            GLOBEX_KEY,
            "globex",
            None,
        ));
        emu.apply(token_keys_secret(
            KEYS_NAMESPACE,
            TOKEN_KEYS_SECRET,
            &[TOKEN_KEY],
        ));
        (emu, tempfile::tempdir().expect("tempdir"))
    }

    /// Another resolver on the same emulator (a second gateway replica), ready.
    pub async fn start_replica(&self, extra_args: &[&str]) -> Resolver {
        resolver_on(&self.emu, self._dir.path(), extra_args).await
    }

    /// Waits until the resolver has applied every Pod event the emulator has sent so far: a
    /// fresh sentinel Pod is written last, and events arrive in order, so once the sentinel
    /// routes everything before it has been seen. Use it before asserting that something did
    /// *not* change.
    pub async fn barrier(&self) {
        let n = self
            .barriers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("barrier-{n}");
        self.emu.apply(
            pod("sandgate-barrier", &id)
                .sandbox(&id)
                .phase("running")
                .ip("10.255.0.1")
                .annotation(ARMED, &id)
                .json(),
        );
        let want = Outcome::Route("10.255.0.1:1".into());
        let got = self
            .resolver
            .resolve_until(ADMIN_KEY, &id, 1, &want, PROPAGATION)
            .await;
        assert_eq!(got, want, "resolver did not catch up with the emulator");
    }

    pub async fn control(&self) -> Control {
        Control {
            client: self.resolver.control_client().await,
            key: Some(ADMIN_KEY.into()),
        }
    }
}

/// The flags of a gateway watching `emu` (its kubeconfig written into `dir`), then `extra_args`.
pub fn gateway_args(emu: &Emulator, dir: &std::path::Path, extra_args: &[&str]) -> Vec<String> {
    let kubeconfig = emu.write_kubeconfig(dir);
    let mut args = vec![
        "--pod-source=kube".to_string(),
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--admin-key={ADMIN_KEY}"),
        format!("--token-keys-secret={KEYS_NAMESPACE}/{TOKEN_KEYS_SECRET}"),
    ];
    args.extend(extra_args.iter().map(|s| s.to_string()));
    args
}

/// A ready resolver watching `emu`, its kubeconfig written into `dir`.
async fn resolver_on(emu: &Emulator, dir: &std::path::Path, extra_args: &[&str]) -> Resolver {
    let resolver = Resolver::start(gateway_args(emu, dir, extra_args)).await;
    resolver.wait_ready().await;
    resolver
}

/// A ControlPlaneService client that sends `key` (or nothing) as its bearer token.
pub struct Control {
    pub client: ControlPlaneServiceClient<Channel>,
    pub key: Option<String>,
}

impl Control {
    fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(k) = &self.key {
            r.metadata_mut().insert(
                "authorization",
                format!("Bearer {k}").parse().expect("ascii key"),
            );
        }
        r
    }

    pub async fn push(&mut self, id: &str, ns: &str, pod: &str) -> Result<(), tonic::Status> {
        let r = self.req(PushRouteRequest {
            sandbox_id: id.into(),
            namespace: ns.into(),
            pod_name: pod.into(),
        });
        self.client.push_route(r).await.map(|_| ())
    }

    /// Replaces the peer-cluster configuration; returns how many peers it holds.
    pub async fn push_clusters(&mut self, config_yaml: &str) -> Result<u32, tonic::Status> {
        let r = self.req(PushClusterConfigRequest {
            config_yaml: config_yaml.into(),
        });
        Ok(self
            .client
            .push_cluster_config(r)
            .await?
            .into_inner()
            .clusters)
    }

    /// An access token for `id`'s `ports` (none: all), its namespace the sandbox's own when
    /// `namespace` is empty.
    pub async fn mint(
        &mut self,
        id: &str,
        namespace: &str,
        ports: &[u16],
        ttl_seconds: u64,
    ) -> Result<String, tonic::Status> {
        let r = self.req(MintAccessTokenRequest {
            sandbox_id: id.into(),
            namespace: namespace.into(),
            ports: ports.iter().map(|p| u32::from(*p)).collect(),
            ttl_seconds,
        });
        Ok(self.client.mint_access_token(r).await?.into_inner().token)
    }

    pub async fn evict(&mut self, id: &str) -> Result<bool, tonic::Status> {
        let r = self.req(EvictRouteRequest {
            sandbox_id: id.into(),
        });
        Ok(self.client.evict_route(r).await?.into_inner().evicted)
    }

    pub async fn last_active(
        &mut self,
    ) -> Result<std::collections::BTreeMap<String, String>, tonic::Status> {
        let r = self.req(GetLastActiveRequest {});
        Ok(self
            .client
            .get_last_active(r)
            .await?
            .into_inner()
            .last_active
            .into_iter()
            .collect())
    }

    /// Polls GetLastActive until `pred` holds or `within` passes; returns the last answer.
    pub async fn last_active_until(
        &mut self,
        within: Duration,
        pred: impl Fn(&std::collections::BTreeMap<String, String>) -> bool,
    ) -> std::collections::BTreeMap<String, String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = self.last_active().await.expect("GetLastActive");
            if pred(&got) || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// How long a watch event may take to reach the resolver's decisions in these tests.
pub const PROPAGATION: Duration = Duration::from_secs(5);
