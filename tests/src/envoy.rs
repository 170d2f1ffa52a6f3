//! Real Envoy (the PyPI build, V8 runtime) running the repository's envoy.yaml with the built
//! filter, on fresh loopback ports. The process is killed when the handle drops.

use std::net::SocketAddr;
use std::path::PathBuf;
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

/// Which gateway entry Envoy runs: the wasm filter (envoy.yaml) or ext_proc
/// (envoy-extproc.yaml). Everything a client sees must be the same for both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Entry {
    Wasm,
    #[value(name = "extproc")]
    ExtProc,
}

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
            Entry::ExtProc => Duration::ZERO,
        }
    }

    /// The shipped configuration, relative to the repository root.
    pub fn config_file(self) -> &'static str {
        match self {
            Entry::Wasm => "envoy.yaml",
            Entry::ExtProc => "envoy-extproc.yaml",
        }
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
}

pub struct Envoy {
    child: Child,
    /// The gateway listener (the demo's :8092).
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Envoy {
    /// Renders the entry's shipped configuration for `opts` and starts Envoy; returns once its
    /// admin says LIVE.
    pub async fn start(opts: &EnvoyOptions) -> Envoy {
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
        };
        assert_eq!(
            sent,
            want,
            "{}: (gRPC services, filter configurations) sending the internal token",
            opts.entry.config_file()
        );
        Envoy::launch(&template, replacements).await
    }

    /// Starts Envoy (one worker) on `template` after `replacements`, and on fresh ports: the
    /// template listens on `port_value: 8092` with its admin on `port_value: 9901`, as the
    /// shipped configurations do. Returns once the admin says LIVE.
    pub async fn launch(template: &str, mut replacements: Vec<(&'static str, String)>) -> Envoy {
        let envoy = artefact(
            "SANDGATE_ENVOY",
            "target/envoy-venv/bin/envoy",
            "run `just envoy`",
        );
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
        let child = Command::new(envoy)
            .arg("-c")
            .arg(&config_path)
            .args(["--disable-hot-restart", "--concurrency", "1", "-l", "info"])
            .arg("--log-path")
            .arg(&log)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn envoy");
        let mut e = Envoy {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], listen)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            log,
            _dir: dir,
        };
        e.wait_live().await;
        e
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
