//! Typed command-line configuration. Every flag has an environment-variable twin and a default
//! that works for local use; nothing else in the crate parses flags or reads the environment,
//! except [`crate::compat`], which reads the Go gateway's flags and maps them onto [`ServeArgs`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::decide::DecideConfig;
use crate::pods::PodKeys;

#[derive(Debug, Parser)]
#[command(
    name = "sandgate-resolver",
    version,
    about = "The sandgate resolver: routes requests to sandbox Pods"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the resolver.
    Serve(Box<ServeArgs>),
    /// Talk to a running resolver's ControlPlaneService.
    Ctl(CtlArgs),
    /// Run the resolver with the Go gateway's (envoyextproc's) flags, as the Go Helm chart
    /// passes them; also what runs when this binary is invoked as `envoyextproc`. Keyless data
    /// plane unless --extproc-enable-auth and an admin key (see README, "Coming from the Go
    /// gateway").
    GoCompat(Box<crate::compat::GoCompatArgs>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PodSource {
    /// Watch Pods through the Kubernetes API (in-cluster config, KUBECONFIG or --kubeconfig).
    Kube,
    /// Read Pods from a static YAML inventory file, reloaded when it changes.
    Inventory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address of the internal gRPC server: Resolve and the filter's cache calls, ext_proc, the
    /// activity access log (internal token required).
    #[arg(long, env = "SANDGATE_GRPC_LISTEN", default_value = "127.0.0.1:50051")]
    pub grpc_listen: SocketAddr,
    /// Address of the ControlPlaneService gRPC server (admin key required).
    #[arg(
        long,
        env = "SANDGATE_CONTROL_LISTEN",
        default_value = "127.0.0.1:50052"
    )]
    pub control_listen: SocketAddr,
    /// Address of the HTTP server: /healthz, /readyz, /metrics, /v1/last-active.
    #[arg(long, env = "SANDGATE_HTTP_LISTEN", default_value = "127.0.0.1:9090")]
    pub http_listen: SocketAddr,

    #[arg(long, env = "SANDGATE_POD_SOURCE", value_enum, default_value = "kube")]
    pub pod_source: PodSource,
    /// Kubeconfig file; without it: KUBECONFIG, ~/.kube/config, then in-cluster.
    #[arg(long, env = "SANDGATE_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Static Pod inventory (with --pod-source inventory).
    #[arg(long, env = "SANDGATE_INVENTORY")]
    pub inventory: Option<PathBuf>,
    /// Namespace to watch Pods in; all namespaces when unset.
    #[arg(long, env = "SANDGATE_NAMESPACE")]
    pub namespace: Option<String>,
    /// Label selector for sandbox Pods; defaults to "has the sandbox-id label".
    #[arg(long, env = "SANDGATE_POD_SELECTOR")]
    pub pod_selector: Option<String>,

    #[arg(
        long,
        env = "SANDGATE_SANDBOX_ID_LABEL",
        default_value = "agentbox.navix.sh/sandbox-id"
    )]
    pub sandbox_id_label: String,
    #[arg(
        long,
        env = "SANDGATE_PHASE_LABEL",
        default_value = "agentbox.navix.sh/sandbox-phase"
    )]
    pub phase_label: String,
    #[arg(
        long,
        env = "SANDGATE_LAST_ACTIVE_ANNOTATION",
        default_value = "agentbox.navix.sh/last-active"
    )]
    pub last_active_annotation: String,
    #[arg(
        long,
        env = "SANDGATE_ARMED_ANNOTATION",
        default_value = "agentbox.navix.sh/sandbox-armed"
    )]
    pub armed_annotation: String,

    /// On a route-cache miss, find the sandbox by its label (false: pure push model, miss = 404).
    #[arg(long, env = "SANDGATE_INDEX_FALLBACK", default_value_t = true, action = clap::ArgAction::Set)]
    pub index_fallback: bool,
    /// Route a Running Pod only once its armed annotation equals the sandbox id.
    #[arg(long, env = "SANDGATE_ARMED_GATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub armed_gate: bool,
    /// The status of `sandbox_not_found`: 404, or 502 (what the E2B SDK reads as "gone"; a
    /// request addressed the E2B way always gets 502).
    #[arg(long, env = "SANDGATE_SANDBOX_NOT_FOUND_STATUS", default_value_t = 404, value_parser = parse_not_found_status)]
    pub sandbox_not_found_status: u16,

    /// Lifetime of a pushed route (e.g. 60s, 500ms, 5m).
    #[arg(long, env = "SANDGATE_ROUTE_TTL", default_value = "60s", value_parser = parse_duration)]
    pub route_ttl: Duration,
    #[arg(long, env = "SANDGATE_ROUTE_CACHE_SHARDS", default_value_t = 64)]
    pub route_cache_shards: usize,
    /// How often expired routes are dropped from memory.
    #[arg(long, env = "SANDGATE_SWEEP_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub sweep_interval: Duration,
    /// How often activity of sandboxes without a Running Pod is forgotten.
    #[arg(long, env = "SANDGATE_ACTIVITY_GC_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub activity_gc_interval: Duration,

    /// Admin key (repeat, or comma-separate in the env var, to accept several during rotation).
    #[arg(
        long = "admin-key",
        env = "AGENTBOX_ADMIN_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub admin_keys: Vec<String>,
    /// File with admin keys, one per line (e.g. a mounted Secret); reloaded when it changes.
    #[arg(long, env = "SANDGATE_ADMIN_KEY_FILE")]
    pub admin_key_file: Option<PathBuf>,
    /// Token the gateway's Envoy presents (`authorization: Bearer <token>`) on every call to
    /// --grpc-listen. Repeat, or comma-separate in the env var, to accept several during
    /// rotation. With no token at all, every call there is refused.
    #[arg(
        long = "internal-token",
        env = "SANDGATE_INTERNAL_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub internal_tokens: Vec<String>,
    /// File with internal tokens, one per line (e.g. a mounted Secret); reloaded when it changes.
    #[arg(long, env = "SANDGATE_INTERNAL_TOKEN_FILE")]
    pub internal_token_file: Option<PathBuf>,
    /// YAML file with tenant (and optionally admin) keys; reloaded when it changes.
    #[arg(long, env = "SANDGATE_KEYS_FILE")]
    pub keys_file: Option<PathBuf>,
    /// Watch tenant keys in Kubernetes Secrets (only with --pod-source kube).
    #[arg(long, env = "SANDGATE_KEY_SECRETS", default_value_t = true, action = clap::ArgAction::Set)]
    pub key_secrets: bool,
    /// Namespace holding the key Secrets; all namespaces when unset.
    #[arg(long, env = "SANDGATE_KEY_SECRET_NAMESPACE")]
    pub key_secret_namespace: Option<String>,
    #[arg(long, env = "SANDGATE_KEY_SECRET_SELECTOR", default_value = crate::keys::secrets::DEFAULT_SELECTOR)]
    pub key_secret_selector: String,
    /// Access-token signing keys: a YAML file of `id: base64 secret` (≥ 32 bytes each); the
    /// greatest id signs, every one verifies. Reloaded when it changes.
    #[arg(long, env = "SANDGATE_TOKEN_KEYS_FILE")]
    pub token_keys_file: Option<PathBuf>,
    /// Access-token signing keys from the Secret `namespace/name` (kube source): each data
    /// entry's name is a key id, its bytes the secret. Watched; shared by every replica.
    #[arg(long, env = "SANDGATE_TOKEN_KEYS_SECRET")]
    pub token_keys_secret: Option<String>,
    /// Lifetime of a minted access token when the request names none.
    #[arg(long, env = "SANDGATE_TOKEN_TTL", default_value = "1h", value_parser = parse_duration)]
    pub token_ttl: Duration,
    /// Longest lifetime a minted access token gets, whatever was asked.
    #[arg(long, env = "SANDGATE_TOKEN_MAX_TTL", default_value = "24h", value_parser = parse_duration)]
    pub token_max_ttl: Duration,
    /// Origins (`scheme://host[:port]`) a WebSocket authenticated by the token cookie may come
    /// from besides the gateway's own (ext_proc entry; the filter's `request.tokens`).
    #[arg(
        long = "token-allowed-origin",
        env = "SANDGATE_TOKEN_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub token_allowed_origins: Vec<String>,
    /// How long a request for a sandbox that is starting (or being woken) is held before 503
    /// `sandbox_starting`; 0: not held (an instant 502). With ext_proc, Envoy's
    /// `max_message_timeout` must exceed it.
    #[arg(long, env = "SANDGATE_HOLD_BUDGET", default_value = "30s", value_parser = parse_duration_or_zero)]
    pub hold_budget: Duration,
    /// Requests held at once for one sandbox; more are 503 `too_many_waiting` at once.
    #[arg(long, env = "SANDGATE_HOLD_MAX_PER_SANDBOX", default_value_t = 1000)]
    pub hold_max_per_sandbox: usize,
    /// Requests held at once in all.
    #[arg(long, env = "SANDGATE_HOLD_MAX_TOTAL", default_value_t = 20_000)]
    pub hold_max_total: usize,
    /// Wake (and hold) a request for a sandbox id nobody knows, instead of not-found: for
    /// controllers that create sandboxes on demand.
    #[arg(long, env = "SANDGATE_WAKE_UNKNOWN", default_value_t = false, action = clap::ArgAction::Set)]
    pub wake_unknown: bool,
    /// POST every wake as JSON `{sandbox_id, namespace, port}` to this http:// URL, besides
    /// ControlPlaneService.WatchWakeRequests.
    #[arg(long, env = "SANDGATE_WAKE_WEBHOOK", value_parser = crate::hold::parse_webhook)]
    pub wake_webhook: Option<hyper::Uri>,
    /// DEVELOPMENT ONLY: admit every request as admin, with or without a key.
    #[arg(long, env = "SANDGATE_INSECURE_DISABLE_AUTH", default_value_t = false, action = clap::ArgAction::Set)]
    pub insecure_disable_auth: bool,

    // The ext_proc entry's request grammar: the wasm filter's `request` object, as flags.
    // Defaults are the filter's, so both entries read requests alike out of the box.
    /// ext_proc entry: headers that may carry the API key, tried in order before Bearer.
    #[arg(
        long,
        env = "SANDGATE_EXTPROC_KEY_HEADERS",
        value_delimiter = ',',
        default_value = "agentbox-api-key,x-api-key"
    )]
    pub extproc_key_headers: Vec<String>,
    /// ext_proc entry: accept `authorization: Bearer <key>` after the key headers.
    #[arg(long, env = "SANDGATE_EXTPROC_BEARER", default_value_t = true, action = clap::ArgAction::Set)]
    pub extproc_bearer: bool,
    /// ext_proc entry: the header naming the sandbox (wins over the path).
    #[arg(
        long,
        env = "SANDGATE_EXTPROC_ID_HEADER",
        default_value = "x-sandbox-id"
    )]
    pub extproc_id_header: String,
    /// ext_proc entry: the header naming the sandbox's port.
    #[arg(
        long,
        env = "SANDGATE_EXTPROC_PORT_HEADER",
        default_value = "x-sandbox-port"
    )]
    pub extproc_port_header: String,
    /// ext_proc entry: the path segment before `{id}/{port}`.
    #[arg(
        long,
        env = "SANDGATE_EXTPROC_PATH_MARKER",
        default_value = "sandboxes"
    )]
    pub extproc_path_marker: String,
    /// ext_proc entry: port for requests that name none (unset: a missing port is a 400).
    #[arg(long, env = "SANDGATE_EXTPROC_DEFAULT_PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub extproc_default_port: Option<u16>,
    /// ext_proc entry: domains under which a Host `{port}-{id}.{domain}` names a sandbox (the
    /// E2B SDK's addressing); repeatable or comma-separated.
    #[arg(
        long = "extproc-e2b-domain",
        env = "SANDGATE_EXTPROC_E2B_DOMAINS",
        value_delimiter = ','
    )]
    pub extproc_e2b_domains: Vec<String>,

    /// Write each sandbox's last activity onto its Pod (kube source), so replicas share it and
    /// a restart keeps it. Needs `patch` on Pods.
    #[arg(long, env = "SANDGATE_WRITE_LAST_ACTIVE", default_value_t = true, action = clap::ArgAction::Set)]
    pub write_last_active: bool,
    /// How old a busy sandbox's last-active annotation may grow before it is rewritten: R of a
    /// Pod without an idle timeout, and the longest R (with one, R = max(1s, min(this, T/3))).
    /// The writer looks every min(this, 5s), and reads the other replicas' writes then.
    #[arg(long, env = "SANDGATE_LAST_ACTIVE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub last_active_interval: Duration,
    /// At most this many annotation writes in any --last-active-interval (the rest wait).
    #[arg(long, env = "SANDGATE_LAST_ACTIVE_MAX_WRITES", default_value_t = 500)]
    pub last_active_max_writes: usize,
    /// The Pod annotation holding the sandbox's idle timeout T in seconds (the agentbox
    /// controller's); it paces the last-active writes.
    #[arg(
        long,
        env = "SANDGATE_IDLE_TIMEOUT_ANNOTATION",
        default_value = "agentbox.navix.sh/idle-timeout"
    )]
    pub idle_timeout_annotation: String,

    /// Invalid API keys one client address may present per --key-failure-window before every
    /// keyed request from it gets 429 until the window passes (0: no limit).
    #[arg(long, env = "SANDGATE_KEY_FAILURE_LIMIT", default_value_t = 30)]
    pub key_failure_limit: u32,
    #[arg(long, env = "SANDGATE_KEY_FAILURE_WINDOW", default_value = "60s", value_parser = parse_duration)]
    pub key_failure_window: Duration,

    /// This cluster's id for cross-cluster routing: `{id}.{uuid}` is local (the prefix is
    /// stripped); any other `{cluster}.{uuid}` goes to that cluster's gateway. Empty: every
    /// prefixed id belongs to a peer.
    #[arg(long, env = "SANDGATE_CLUSTER_ID", default_value = "")]
    pub cluster_id: String,
    /// Peer clusters from a file (agentbox's clusters config.yaml format), reloaded on change.
    #[arg(
        long,
        env = "SANDGATE_CLUSTERS_FILE",
        conflicts_with = "clusters_configmap"
    )]
    pub clusters_file: Option<PathBuf>,
    /// Peer clusters from this ConfigMap's `config.yaml` (or its legacy `clusters.yaml` when
    /// there is no `config.yaml`), e.g. agentbox-clusters-config; watched.
    #[arg(long, env = "SANDGATE_CLUSTERS_CONFIGMAP")]
    pub clusters_configmap: Option<String>,
    /// Namespace of the clusters ConfigMap (default: --namespace, else "default").
    #[arg(long, env = "SANDGATE_CLUSTERS_CONFIGMAP_NAMESPACE")]
    pub clusters_configmap_namespace: Option<String>,
    /// How long a peer gateway's resolved address is used before it is looked up again.
    #[arg(long, env = "SANDGATE_PEER_DNS_TTL", default_value = "30s", value_parser = parse_duration)]
    pub peer_dns_ttl: Duration,
    /// Longest wait for one peer-gateway lookup (the request gets a 502 after it).
    #[arg(long, env = "SANDGATE_PEER_DNS_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub peer_dns_timeout: Duration,

    /// /readyz turns 503 once the Pod watch has been lost this long (it serves from the last
    /// state meanwhile): a short API-server outage must not take every replica out at once.
    #[arg(long, env = "SANDGATE_SYNC_LOSS_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub sync_loss_grace: Duration,

    /// How often local files (inventory, key files) are checked for changes.
    #[arg(long, env = "SANDGATE_RELOAD_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub reload_interval: Duration,
    #[arg(long, env = "SANDGATE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// No flag: set only by `go-compat` ([`crate::compat`]). With no internal token configured
    /// at all (neither flag nor file), the gRPC port admits calls without one, as the Go
    /// gateway's did; with one configured it is required as always.
    #[arg(skip)]
    pub grpc_open_without_token: bool,
}

impl ServeArgs {
    pub fn pod_keys(&self) -> PodKeys {
        PodKeys {
            sandbox_id_label: self.sandbox_id_label.clone(),
            phase_label: self.phase_label.clone(),
            last_active_annotation: self.last_active_annotation.clone(),
            armed_annotation: self.armed_annotation.clone(),
            idle_timeout_annotation: self.idle_timeout_annotation.clone(),
        }
    }

    /// What the ext_proc entry reads from a request; the rest of the grammar is the default
    /// the wasm filter ships with.
    /// The ext_proc entry's grammar, refused at start-up when no request could match it.
    pub fn request_grammar(&self) -> Result<sandgate_core::RequestGrammar, String> {
        let grammar = sandgate_core::RequestGrammar {
            key_headers: self.extproc_key_headers.clone(),
            bearer: self.extproc_bearer,
            id_header: self.extproc_id_header.clone(),
            port_header: self.extproc_port_header.clone(),
            path_marker: self.extproc_path_marker.clone(),
            default_port: self.extproc_default_port,
            e2b_domains: self.extproc_e2b_domains.clone(),
            tokens: sandgate_core::TokenGrammar {
                allowed_origins: self.token_allowed_origins.clone(),
                ..Default::default()
            },
        };
        grammar.check().map(|()| grammar)
    }

    pub fn token_lifetimes(&self) -> crate::tokens::Lifetimes {
        crate::tokens::Lifetimes {
            default: self.token_ttl.min(self.token_max_ttl),
            max: self.token_max_ttl,
        }
    }

    /// `--token-keys-secret` as (namespace, name).
    pub fn token_keys_secret(&self) -> anyhow::Result<Option<(String, String)>> {
        self.token_keys_secret
            .as_deref()
            .map(|s| match s.split_once('/') {
                Some((ns, name)) if !ns.is_empty() && !name.is_empty() => {
                    Ok((ns.to_string(), name.to_string()))
                }
                _ => anyhow::bail!("--token-keys-secret must be namespace/name, got {s:?}"),
            })
            .transpose()
    }

    pub fn hold_config(&self) -> crate::hold::HoldConfig {
        crate::hold::HoldConfig {
            budget: self.hold_budget,
            max_per_sandbox: self.hold_max_per_sandbox,
            max_total: self.hold_max_total,
        }
    }

    pub fn decide_config(&self) -> DecideConfig {
        DecideConfig {
            index_fallback: self.index_fallback,
            armed_gate: self.armed_gate,
            not_found_502: self.sandbox_not_found_status == 502,
            wake_unknown: self.wake_unknown,
        }
    }

    pub fn pod_selector(&self) -> String {
        self.pod_selector
            .clone()
            .unwrap_or_else(|| self.sandbox_id_label.clone())
    }
}

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// ControlPlaneService address.
    #[arg(
        long,
        env = "SANDGATE_CONTROL_ADDR",
        default_value = "http://127.0.0.1:50052"
    )]
    pub addr: String,
    #[arg(long, env = "AGENTBOX_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: String,
    #[command(subcommand)]
    pub op: CtlOp,
}

#[derive(Debug, Subcommand)]
pub enum CtlOp {
    /// Tell the resolver which Pod serves a sandbox.
    Push {
        sandbox_id: String,
        namespace: String,
        pod_name: String,
    },
    /// Forget a sandbox's route.
    Evict { sandbox_id: String },
    /// Print every sandbox's last activity as JSON.
    LastActive,
    /// Replace the peer-cluster configuration with this file (agentbox's config.yaml format).
    Clusters { file: PathBuf },
    /// Mint an access token for a sandbox; prints the token (and its expiry on stderr).
    Token {
        sandbox_id: String,
        /// The tenant; default: the namespace of the Pod serving the sandbox now.
        #[arg(long, default_value = "")]
        namespace: String,
        /// A port the token opens (repeat for several); none: every port.
        #[arg(long = "port")]
        ports: Vec<u32>,
        /// Lifetime, e.g. 10m (default: the resolver's --token-ttl; capped by --token-max-ttl).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
    },
}

/// `sandbox_not_found`'s status: the table's 404 or its alternative, 502.
fn parse_not_found_status(raw: &str) -> Result<u16, String> {
    match raw {
        "404" => Ok(404),
        "502" => Ok(502),
        _ => Err("must be 404 or 502".into()),
    }
}

/// [`parse_duration`] where zero means "off".
fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim().trim_end_matches(|c: char| c.is_ascii_alphabetic()) == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(s)
}

/// Accepts `250ms`, `10s`, `5m`, `1h`, or a bare number of seconds. Zero is refused: every
/// duration here is an interval or a lifetime, and zero would spin or expire at once.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 500ms, 10s, 5m"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    if d.is_zero() {
        return Err("duration must be greater than zero".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        for bad in ["", "0s", "s", "1d", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cli_is_consistent_and_defaults_work() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["sandgate-resolver", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve expected")
        };
        assert_eq!(args.pod_source, PodSource::Kube);
        assert!(args.index_fallback);
        assert!(!args.armed_gate);
        assert_eq!(args.route_ttl, Duration::from_secs(60));
        assert_eq!(args.pod_selector(), "agentbox.navix.sh/sandbox-id");
        assert_eq!(
            args.request_grammar(),
            Ok(sandgate_core::RequestGrammar::default())
        );
    }

    #[test]
    fn internal_tokens_repeat_or_comma_separate() {
        let cli = Cli::try_parse_from([
            "sandgate-resolver",
            "serve",
            "--internal-token",
            "a,b",
            "--internal-token=c",
            "--internal-token-file",
            "/run/sandgate/token",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("serve expected")
        };
        assert_eq!(args.internal_tokens, ["a", "b", "c"]);
        assert_eq!(
            args.internal_token_file,
            Some(PathBuf::from("/run/sandgate/token"))
        );
    }

    #[test]
    fn the_extproc_grammar_is_checked() {
        let grammar = |flags: &[&str]| {
            let cli = Cli::try_parse_from(["sandgate-resolver", "serve"].iter().chain(flags))
                .expect("flags parse");
            let Command::Serve(args) = cli.command else {
                panic!("serve expected")
            };
            args.request_grammar()
        };
        let g = grammar(&[
            "--extproc-key-headers",
            "k1,k2",
            "--extproc-bearer",
            "false",
        ])
        .unwrap();
        assert_eq!(
            (g.key_headers, g.bearer),
            (vec!["k1".into(), "k2".into()], false)
        );
        assert!(grammar(&["--extproc-id-header", "X-Id"]).is_err());
        assert!(grammar(&["--extproc-path-marker", "a/b"]).is_err());
    }
}
