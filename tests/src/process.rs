//! Running the real `sandgate-resolver` binary on loopback, and talking to it the way Envoy, the
//! controller and operators do (gRPC and HTTP). Every process is killed when its handle drops.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use sandgate_proto::ctrlplane::v1::control_plane_service_client::ControlPlaneServiceClient;
use sandgate_proto::resolver::v1::resolver_client::ResolverClient;
use sandgate_proto::resolver::v1::{ResolveRequest, resolve_reply};
use tokio::process::{Child, Command};
use tonic::transport::Channel;

/// A free loopback port (bound and released; the OS does not hand it out again at once).
pub fn free_port() -> u16 {
    let [port] = free_ports();
    port
}

/// `N` distinct free loopback ports: every one stays bound until all are picked, so the kernel
/// cannot hand the same port out twice (two separate `free_port` calls can, and then a process
/// fails to bind its second listener).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: [TcpListener; N] =
        std::array::from_fn(|_| TcpListener::bind("127.0.0.1:0").expect("no free loopback port"));
    held.map(|l| l.local_addr().expect("bound address").port())
}

/// A built binary of this workspace, next to the test executable's `deps/` folder.
/// `just test` builds the binaries before running tests.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build it first (`cargo build --bins`, which `just test` does)",
        bin.display()
    );
    bin
}

/// What a Resolve call answered, reduced to what tests compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Route(String),
    Deny(u32, String),
    /// Sent on to another cluster's gateway at this `ip:port`.
    Forward(String),
    /// Held until Unix ms: the caller is to call Wait.
    Hold(u64),
}

impl Outcome {
    pub fn deny(status: u32, code: &str) -> Outcome {
        Outcome::Deny(status, code.to_string())
    }

    pub fn status(&self) -> u32 {
        match self {
            Outcome::Route(_) | Outcome::Forward(_) => 200,
            Outcome::Deny(s, _) => *s,
            // No HTTP answer yet.
            Outcome::Hold(_) => 0,
        }
    }
}

/// Where a resolver's gateway runs: its own process, or inside the native entry's Envoy
/// (whose process the [`crate::envoy::Envoy`] handle owns).
enum Process {
    Own(Child),
    InEnvoy,
}

pub struct Resolver {
    process: Process,
    pub grpc: SocketAddr,
    pub control: SocketAddr,
    pub http: SocketAddr,
    pub log: PathBuf,
    /// The internal token it was started with (`SANDGATE_INTERNAL_TOKEN`), which the harness's
    /// own calls to the gRPC port send.
    pub internal_token: Option<String>,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Resolver {
    /// Starts `sandgate-resolver serve` with `args` on fresh loopback ports and waits until its
    /// HTTP port answers. Ports are chosen here, and the internal token is the one the shipped
    /// Envoy configurations send; callers pass everything else.
    pub async fn start<I, S>(args: I) -> Resolver
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::start_with_token(args, Some(crate::envoy::SHIPPED_INTERNAL_TOKEN)).await
    }

    /// [`Resolver::start`] with `token` as its internal token (`SANDGATE_INTERNAL_TOKEN`;
    /// `None`: none at all, so every call to its gRPC port is refused). An `--internal-token`
    /// in `args` wins over it.
    pub async fn start_with_token<I, S>(args: I, token: Option<&str>) -> Resolver
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let args: Vec<String> = args.into_iter().map(Into::into).collect();
        let internal_token = token.map(str::to_string);
        let dir = tempfile::tempdir().expect("tempdir");
        let [grpc, control, http] = free_ports();
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let mut r = Resolver {
            process: Process::Own(spawn(
                &args,
                internal_token.as_deref(),
                addr(grpc),
                addr(control),
                addr(http),
                &dir.path().join("resolver.log"),
            )),
            grpc: addr(grpc),
            control: addr(control),
            http: addr(http),
            log: dir.path().join("resolver.log"),
            internal_token,
            args,
            _dir: dir,
        };
        r.wait_healthy().await;
        r
    }

    /// The native entry's gateway, inside an Envoy, on these ports, logging into Envoy's
    /// `log`; returns once it is ready. It has no process of its own: [`Resolver::kill`],
    /// `freeze`, `terminate` and `restart` are for a standalone resolver.
    pub async fn in_envoy(
        (grpc, control, http): (SocketAddr, SocketAddr, SocketAddr),
        log: PathBuf,
        args: Vec<String>,
    ) -> Resolver {
        let mut r = Resolver {
            process: Process::InEnvoy,
            grpc,
            control,
            http,
            log,
            internal_token: Some(crate::envoy::SHIPPED_INTERNAL_TOKEN.to_string()),
            args,
            _dir: tempfile::tempdir().expect("tempdir"),
        };
        r.wait_healthy().await;
        r.wait_ready().await;
        r
    }

    /// The native entry's Envoy was replaced (same ports): waits for the new one's gateway.
    pub async fn replaced(&mut self) {
        self.wait_healthy().await;
        self.wait_ready().await;
    }

    fn child(&mut self) -> &mut Child {
        match &mut self.process {
            Process::Own(child) => child,
            Process::InEnvoy => panic!(
                "the native entry's gateway runs inside Envoy: there is no resolver process to \
                 kill, freeze or restart (see Entry::resolver_process)"
            ),
        }
    }

    /// Kills the process (SIGKILL: no graceful anything) and waits for it.
    pub async fn kill(&mut self) {
        let _ = self.child().kill().await;
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the process: its sockets stay open but nothing
    /// answers, which is how a hung resolver looks to Envoy. Returns once every thread is
    /// stopped (or running again): `kill` only queues the signal, and a thread already on a
    /// CPU can still answer a request in the meantime.
    pub fn freeze(&mut self, frozen: bool) {
        let Some(pid) = self.child().id() else { return };
        let sig = if frozen { "-STOP" } else { "-CONT" };
        let _ = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while threads_stopped(pid) != Some(frozen) {
            assert!(
                std::time::Instant::now() < deadline,
                "resolver {pid}: threads not {}",
                if frozen { "stopped" } else { "running" }
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child().id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        tokio::time::timeout(Duration::from_secs(10), self.child().wait())
            .await
            .expect("resolver did not stop within 10 s of SIGTERM")
            .expect("wait")
    }

    /// Starts the same binary again with the same arguments and ports (after `kill`).
    pub async fn restart(&mut self) {
        self.kill().await;
        self.process = Process::Own(spawn(
            &self.args,
            self.internal_token.as_deref(),
            self.grpc,
            self.control,
            self.http,
            &self.log,
        ));
        self.wait_healthy().await;
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_healthy(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Process::Own(child) = &mut self.process
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("resolver exited early ({status}):\n{}", self.logs());
            }
            if let Ok((200, _)) = crate::http::get(self.http, "/healthz", None).await {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "resolver not healthy after 15 s:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until /readyz says ready.
    pub async fn wait_ready(&self) {
        let ok = eventually(Duration::from_secs(15), || async {
            matches!(
                crate::http::get(self.http, "/readyz", None).await,
                Ok((200, _))
            )
        })
        .await;
        assert!(ok, "resolver not ready after 15 s:\n{}", self.logs());
    }

    /// `msg` as a call to the gRPC port: with `authorization: Bearer <internal token>` when the
    /// resolver has one.
    pub fn authorize<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = &self.internal_token {
            r.metadata_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().expect("ascii token"),
            );
        }
        r
    }

    /// A client of the gRPC port; its calls need [`Resolver::authorize`].
    pub async fn resolver_client(&self) -> ResolverClient<Channel> {
        ResolverClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("connect Resolve")
    }

    pub async fn control_client(&self) -> ControlPlaneServiceClient<Channel> {
        ControlPlaneServiceClient::connect(format!("http://{}", self.control))
            .await
            .expect("connect ControlPlaneService")
    }

    /// One Resolve call on a fresh connection.
    pub async fn resolve(&self, api_key: &str, sandbox_id: &str, port: u32) -> Outcome {
        let reply = self
            .resolver_client()
            .await
            .resolve(self.authorize(ResolveRequest {
                api_key: api_key.into(),
                sandbox_id: sandbox_id.into(),
                port,
                forwarded: false,
                client_address: String::new(),
                ..Default::default()
            }))
            .await
            .expect("Resolve RPC failed")
            .into_inner();
        match reply.outcome.expect("reply without outcome") {
            resolve_reply::Outcome::Route(r) => Outcome::Route(r.destination),
            resolve_reply::Outcome::Deny(d) => Outcome::Deny(d.status, d.code),
            resolve_reply::Outcome::Forward(f) => Outcome::Forward(f.destination),
            resolve_reply::Outcome::Hold(h) => Outcome::Hold(h.until_unix_ms),
        }
    }

    /// Polls `resolve` until it answers `want` (or `within` passes); returns the last answer.
    pub async fn resolve_until(
        &self,
        api_key: &str,
        sandbox_id: &str,
        port: u32,
        want: &Outcome,
        within: Duration,
    ) -> Outcome {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = self.resolve(api_key, sandbox_id, port).await;
            if &got == want || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn http_get(&self, path: &str, bearer: Option<&str>) -> (u16, String) {
        crate::http::get(self.http, path, bearer)
            .await
            .expect("HTTP GET")
    }

    /// The value of one metric series (name with its labels, as exposed), 0 when absent.
    /// Sends with `send` (each answer must be a 200) until one is answered without a Resolve:
    /// the wasm filter's cache kept it (a VM's generation stream can lag the first requests).
    pub async fn warm_cache<F, Fut>(&self, mut send: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = crate::http::Response>,
    {
        const ROUTED: &str = r#"sandgate_resolves_total{outcome="route"}"#;
        let deadline = tokio::time::Instant::now() + crate::stack::PROPAGATION;
        loop {
            let routed = self.metric(ROUTED).await;
            let answer = send().await;
            assert_eq!(answer.status, 200, "warming the cache: {}", answer.body);
            if self.metric(ROUTED).await == routed {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no request was answered from the cache"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn metric(&self, series: &str) -> u64 {
        let (_, text) = self.http_get("/metrics", None).await;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        if let Process::Own(child) = &mut self.process {
            let _ = child.start_kill();
        }
    }
}

fn spawn(
    args: &[String],
    internal_token: Option<&str>,
    grpc: SocketAddr,
    control: SocketAddr,
    http: SocketAddr,
    log: &Path,
) -> Child {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let mut command = Command::new(workspace_bin("sandgate-resolver"));
    match internal_token {
        Some(t) => command.env("SANDGATE_INTERNAL_TOKEN", t),
        None => command.env_remove("SANDGATE_INTERNAL_TOKEN"),
    };
    command
        .arg("serve")
        .arg(format!("--grpc-listen={grpc}"))
        .arg(format!("--control-listen={control}"))
        .arg(format!("--http-listen={http}"))
        .args(args)
        .env("RUST_LOG", "info,sandgate_resolver=debug")
        // Holds off unless a test asks (`--hold-budget=…` beats this): a test of an instant
        // 502 must not wait out the shipped 30 s budget.
        .env("SANDGATE_HOLD_BUDGET", "0")
        .env_remove("AGENTBOX_ADMIN_KEY")
        .env_remove("SANDGATE_INTERNAL_TOKEN_FILE")
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sandgate-resolver")
}

/// How the Go Helm chart's gateway command reaches the resolver ([`Resolver::start_go_compat`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoEntry {
    /// `sandgate-resolver go-compat <Go flags>`.
    Subcommand,
    /// `envoyextproc <Go flags>`: a symlink named as the Go binary, to the built resolver.
    Symlink,
}

impl Resolver {
    /// Starts the resolver as the Go chart's gateway container runs it: `go_args` exactly (the
    /// Go flags, which name the ports; `grpc`, `control` and `http` are where to reach them)
    /// and `env` as its whole environment (nothing inherited). Waits until /healthz answers.
    /// The harness's gRPC calls carry the internal token only if `env` sets
    /// `SANDGATE_INTERNAL_TOKEN`. [`Resolver::restart`] is for `serve` only.
    pub async fn start_go_compat(
        entry: GoEntry,
        go_args: &[String],
        env: &[(&str, &str)],
        (grpc, control, http): (SocketAddr, SocketAddr, SocketAddr),
    ) -> Resolver {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("resolver.log");
        let mut command = match entry {
            GoEntry::Subcommand => {
                let mut c = Command::new(workspace_bin("sandgate-resolver"));
                c.arg("go-compat");
                c
            }
            GoEntry::Symlink => {
                let link = dir.path().join("envoyextproc");
                std::os::unix::fs::symlink(workspace_bin("sandgate-resolver"), &link)
                    .expect("symlink envoyextproc");
                Command::new(link)
            }
        };
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = command
            .args(go_args)
            .env_clear()
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the Go entry");
        let internal_token = env
            .iter()
            .find(|(k, _)| *k == "SANDGATE_INTERNAL_TOKEN")
            .map(|(_, v)| v.to_string());
        let mut r = Resolver {
            process: Process::Own(child),
            grpc,
            control,
            http,
            log,
            internal_token,
            args: go_args.to_vec(),
            _dir: dir,
        };
        r.wait_healthy().await;
        r
    }
}

/// Polls `check` every 20 ms until it holds or `within` passes; returns whether it held.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether every thread of `pid` is stopped (`Some(true)`), none is (`Some(false)`), or a mix
/// or unreadable (`None`). The state is the field after the parenthesised command name of
/// /proc/<pid>/task/<tid>/stat ("T" = stopped by a signal).
fn threads_stopped(pid: u32) -> Option<bool> {
    let mut states = std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .map(|task| {
            let stat = std::fs::read_to_string(task.ok()?.path().join("stat")).ok()?;
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state == 'T')
        });
    let first = states.next()??;
    states.all(|s| s == Some(first)).then_some(first)
}
