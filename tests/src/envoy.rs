//! Real Envoy (the PyPI build, V8 runtime) running the repository's envoy.yaml with the built
//! filter, on fresh loopback ports. The process is killed when the handle drops.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::process::free_ports;

/// The repository root (envoy.yaml, target/).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository")
        .to_path_buf()
}

/// An installed artefact: `$VAR` when set, else `default` under the repository root.
pub fn artefact(var: &str, default: &str, how: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(default));
    assert!(
        path.exists(),
        "{} is missing: {how} (or point {var} at one)",
        path.display()
    );
    path
}

/// Which gateway entry Envoy runs: the wasm filter (envoy.yaml), ext_proc
/// (envoy-extproc.yaml) or the native module with the gateway inside Envoy
/// (envoy-native.yaml). Everything a client sees must be the same for all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Entry {
    Wasm,
    #[value(name = "extproc")]
    ExtProc,
    Native,
}

/// The flags of the gateway inside envoy-native.yaml as shipped (the demo stack's): the line
/// [`Envoy::start`] replaces with a test's.
pub const SHIPPED_NATIVE_ARGS: &str = r#"args: ["--pod-source=inventory", "--inventory=demo/pods.yaml", "--keys-file=demo/keys.yaml", "--admin-key-file=demo/admin-keys", "--internal-token-file=demo/internal-token", "--token-keys-file=demo/token-keys", "--extproc-e2b-domain=sandgate.test"]"#;

/// The filter's decision-cache TTL as envoy.yaml ships it (the replacement below insists the
/// file says so).
pub const SHIPPED_CACHE_TTL: Duration = Duration::from_millis(500);

/// The resolver's internal token as envoy.yaml and envoy-extproc.yaml ship it (a demo value,
/// also in demo/internal-token): the harness's resolvers accept it, so the shipped Envoy
/// configurations reach them unchanged. [`Envoy::start`] insists the files carry it.
pub const SHIPPED_INTERNAL_TOKEN: &str = "demo-internal-token";

impl Entry {
    /// How long this entry may answer from what it kept once the resolver is gone: the
    /// filter's cache TTL; ext_proc keeps nothing.
    pub fn staleness(self) -> Duration {
        match self {
            Entry::Wasm => SHIPPED_CACHE_TTL,
            Entry::ExtProc | Entry::Native => Duration::ZERO,
        }
    }

    /// The shipped configuration, relative to the repository root.
    pub fn config_file(self) -> &'static str {
        match self {
            Entry::Wasm => "envoy.yaml",
            Entry::ExtProc => "envoy-extproc.yaml",
            Entry::Native => "envoy-native.yaml",
        }
    }

    /// Whether the decisions come from a resolver process of their own, which a test can kill
    /// or freeze. The native entry's gateway is Envoy: losing it is losing Envoy.
    pub fn resolver_process(self) -> bool {
        self != Entry::Native
    }
}

/// What a test changes in the shipped configuration; everything else is as shipped.
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    pub entry: Entry,
    /// The resolver's Resolve (and access-log) gRPC address.
    pub resolver: SocketAddr,
    /// The resolver's HTTP address (the token endpoint's route).
    pub resolver_http: SocketAddr,
    /// Replaces `access_log_flush_interval` (the activity reporting period of long streams).
    pub activity_interval: Duration,
    /// Replaces the filter's callout `timeout_ms`.
    pub callout_timeout: Duration,
    /// Replaces the filter's `fail_closed`.
    pub fail_closed: bool,
    /// Replaces the CA file peer gateways' certificates are verified against.
    pub peer_ca: Option<PathBuf>,
    /// Replaces the filter's decision-cache `ttl_ms` (0: off); `None` keeps the shipped one.
    pub cache_ttl: Option<Duration>,
    /// The native entry's gateway flags (its listeners included, on `resolver` and
    /// `resolver_http`); unused by the other entries.
    pub gateway_args: Vec<String>,
}

pub struct Envoy {
    child: Child,
    /// The gateway listener (the demo's :8092).
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
    /// What started it: [`Envoy::restart`] starts the same again.
    config: PathBuf,
    env: Vec<(&'static str, String)>,
    _dir: tempfile::TempDir,
}

impl Envoy {
    /// Renders the entry's shipped configuration for `opts` and starts Envoy; returns once its
    /// admin says LIVE.
    pub async fn start(opts: &EnvoyOptions) -> Envoy {
        Envoy::start_module(opts, None).await
    }

    /// [`Envoy::start`]; the native entry loads `module` instead of the built
    /// target/native/libsandgate_native.so (or `$SANDGATE_NATIVE`).
    pub async fn start_module(opts: &EnvoyOptions, module: Option<&Path>) -> Envoy {
        let mut replacements = vec![
            (
                "address: 127.0.0.1, port_value: 50051",
                format!(
                    "address: {}, port_value: {}",
                    opts.resolver.ip(),
                    opts.resolver.port()
                ),
            ),
            (
                "address: 127.0.0.1, port_value: 9090",
                format!(
                    "address: {}, port_value: {}",
                    opts.resolver_http.ip(),
                    opts.resolver_http.port()
                ),
            ),
            (
                "access_log_flush_interval: 30s",
                format!(
                    "access_log_flush_interval: {}s",
                    opts.activity_interval.as_secs_f64()
                ),
            ),
        ];
        if let Some(ca) = &opts.peer_ca {
            replacements.push((
                "filename: /etc/ssl/certs/ca-certificates.crt",
                format!("filename: {}", ca.display()),
            ));
        }
        match opts.entry {
            Entry::Wasm => {
                let wasm = artefact(
                    "SANDGATE_WASM",
                    "target/wasm/sandgate_filter.wasm",
                    "run `just wasm`",
                );
                replacements.extend([
                    (
                        "filename: target/wasm/sandgate_filter.wasm",
                        format!("filename: {}", wasm.display()),
                    ),
                    (
                        "\"timeout_ms\": 1000",
                        format!("\"timeout_ms\": {}", opts.callout_timeout.as_millis()),
                    ),
                    (
                        "\"fail_closed\": true",
                        format!("\"fail_closed\": {}", opts.fail_closed),
                    ),
                ]);
                if let Some(ttl) = opts.cache_ttl {
                    replacements.push((
                        "\"cache\": {\"ttl_ms\": 500}",
                        format!("\"cache\": {{\"ttl_ms\": {}}}", ttl.as_millis()),
                    ));
                }
            }
            Entry::Native => {
                let module = module.map(Path::to_path_buf).unwrap_or_else(|| {
                    artefact(
                        "SANDGATE_NATIVE",
                        "target/native/libsandgate_native.so",
                        "run `just native`",
                    )
                });
                let args = serde_json::to_string(&opts.gateway_args).expect("flags as JSON");
                replacements.extend([
                    (
                        "filename: target/native/libsandgate_native.so",
                        format!("filename: {}", module.display()),
                    ),
                    (SHIPPED_NATIVE_ARGS, format!("args: {args}")),
                    (
                        "fail_closed: true",
                        format!("fail_closed: {}", opts.fail_closed),
                    ),
                ]);
            }
            Entry::ExtProc => {
                replacements.extend([
                    (
                        "message_timeout: 1s",
                        format!("message_timeout: {}s", opts.callout_timeout.as_secs_f64()),
                    ),
                    (
                        "failure_mode_allow: false",
                        format!("failure_mode_allow: {}", !opts.fail_closed),
                    ),
                ]);
            }
        }
        let template = std::fs::read_to_string(repo_root().join(opts.entry.config_file()))
            .expect("envoy configuration");
        // Every call to the resolver carries the token: envoy.yaml in the access log's metadata
        // and the filter's configuration, envoy-extproc.yaml in the access log's and ext_proc's.
        let count = |s: String| template.matches(s.as_str()).count();
        let sent = (
            count(format!("value: \"Bearer {SHIPPED_INTERNAL_TOKEN}\"")),
            count(format!("\"internal_token\": \"{SHIPPED_INTERNAL_TOKEN}\"")),
        );
        let want = match opts.entry {
            Entry::Wasm => (1, 1),
            Entry::ExtProc => (2, 0),
            // The access log; the gateway reads its token from its own flags.
            Entry::Native => (1, 0),
        };
        assert_eq!(
            sent,
            want,
            "{}: (gRPC services, filter configurations) sending the internal token",
            opts.entry.config_file()
        );
        let env = match opts.entry {
            // The gateway inside reads its flags' environment twins as a resolver would: the
            // harness's resolvers' (no hold unless a test asks, the shipped internal token).
            Entry::Native => vec![
                ("SANDGATE_HOLD_BUDGET", "0".to_string()),
                (
                    "SANDGATE_INTERNAL_TOKEN",
                    SHIPPED_INTERNAL_TOKEN.to_string(),
                ),
                ("RUST_LOG", "info,sandgate_resolver=debug".to_string()),
            ],
            Entry::Wasm | Entry::ExtProc => Vec::new(),
        };
        Envoy::launch_with_env(&template, replacements, env).await
    }

    /// Starts Envoy (one worker) on `template` after `replacements`, and on fresh ports: the
    /// template listens on `port_value: 8092` with its admin on `port_value: 9901`, as the
    /// shipped configurations do. Returns once the admin says LIVE.
    pub async fn launch(template: &str, replacements: Vec<(&'static str, String)>) -> Envoy {
        Envoy::launch_with_env(template, replacements, Vec::new()).await
    }

    /// [`Envoy::launch`] with `env` added to Envoy's environment (the embedded gateway's
    /// `SANDGATE_*` flags' twins; none is inherited from the test's own environment).
    pub async fn launch_with_env(
        template: &str,
        mut replacements: Vec<(&'static str, String)>,
        env: Vec<(&'static str, String)>,
    ) -> Envoy {
        let dir = tempfile::tempdir().expect("tempdir");
        let [listen, admin] = free_ports();
        replacements.extend([
            ("port_value: 8092", format!("port_value: {listen}")),
            ("port_value: 9901", format!("port_value: {admin}")),
        ]);
        let config = render(template, &replacements);
        let config_path = dir.path().join("envoy.yaml");
        std::fs::write(&config_path, config).expect("write envoy config");
        let log = dir.path().join("envoy.log");
        let mut e = Envoy {
            child: spawn(dir.path(), &config_path, &log, &env),
            addr: SocketAddr::from(([127, 0, 0, 1], listen)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            log,
            config: config_path,
            env,
            _dir: dir,
        };
        e.wait_live().await;
        e
    }

    /// Kills Envoy (SIGKILL) and waits for it: the native entry's gateway goes with it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Kills Envoy and starts the same configuration again, on the same ports (a crash and
    /// the restart a supervisor makes).
    pub async fn restart(&mut self) {
        self.kill().await;
        self.child = spawn(self._dir.path(), &self.config, &self.log, &self.env);
        self.wait_live().await;
    }

    async fn wait_live(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("envoy exited early ({status}):\n{}", self.logs());
            }
            if let Ok((200, body)) = crate::http::get(self.admin, "/ready", None).await
                && body.trim() == "LIVE"
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "envoy not LIVE after 30 s:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id, while it runs (the bench reads its CPU time and pins it).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

fn spawn(dir: &Path, config: &Path, log: &Path, env: &[(&'static str, String)]) -> Child {
    let envoy = artefact(
        "SANDGATE_ENVOY",
        "target/envoy-venv/bin/envoy",
        "run `just envoy`",
    );
    Command::new(envoy)
        .arg("-c")
        .arg(config)
        .args(["--disable-hot-restart", "--concurrency", "1", "-l", "info"])
        .arg("--log-path")
        .arg(log)
        .current_dir(dir)
        .env_remove("AGENTBOX_ADMIN_KEY")
        .env_remove("SANDGATE_INTERNAL_TOKEN_FILE")
        .env_remove("KUBECONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn envoy")
}

/// Applies each (from, to) replacement, insisting that `from` occurs exactly once so a change
/// to envoy.yaml cannot silently leave a test running the wrong configuration.
pub fn render(template: &str, replacements: &[(&'static str, String)]) -> String {
    let mut out = template.to_string();
    for (from, to) in replacements {
        let n = out.matches(from).count();
        assert_eq!(
            n, 1,
            "envoy.yaml must contain {from:?} exactly once (found {n})"
        );
        out = out.replace(from, to);
    }
    out
}
