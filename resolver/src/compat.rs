//! `sandgate-resolver go-compat`: the Go gateway's command line (scitix/Agent-Sandbox's
//! `envoyextproc`), so the Go Helm chart's gateway container starts sandgate as it is:
//!
//! ```text
//! /envoyextproc --health-probe-bind-address=:8081 --extproc-bind-address=:9002 \
//!   --internal-api-bind-address=:9003 --apikey-namespace=<ns> --clusters-configmap-name=<name>
//! ```
//!
//! The same entry answers when the binary runs under the name `envoyextproc` (argv\[0\]'s file
//! name, e.g. a symlink `/envoyextproc` → `sandgate-resolver`), without the subcommand word; a
//! single dash works like a double one for the Go flags, as in Go (`-extproc-bind-address=…`).
//!
//! Not a second server: [`GoCompatArgs::into_plan`] maps the Go flags onto [`ServeArgs`] (the
//! one configuration type) and [`crate::serve::serve`] runs as it does for `serve`. For each
//! setting the first of these wins:
//!
//! 1. the Go flag, when given (for `--admin-key` and `--local-cluster-id` also their Go
//!    environment variables, `AGENTBOX_ADMIN_KEY` and `LOCAL_CLUSTER_ID`);
//! 2. serve's environment twin (`SANDGATE_…`), when set;
//! 3. the Go gateway's default;
//! 4. serve's default: every setting no Go flag names (the kube Pod source, the key headers…).
//!
//! | Go flag | Go default | serve setting |
//! |---|---|---|
//! | `--health-probe-bind-address` | `:8081` | `--http-listen` (`/healthz`, `/readyz`, `/metrics`) |
//! | `--extproc-bind-address` | `:9002` | `--grpc-listen` (ext_proc, Resolve, access log) |
//! | `--internal-api-bind-address` | `:9003` | `--control-listen` (ControlPlaneService) |
//! | `--apikey-namespace` | `agentbox-system` | `--key-secret-namespace` and `--clusters-configmap-namespace` |
//! | `--clusters-configmap-name` | `agentbox-clusters-config` | `--clusters-configmap`, watched only with a local cluster id (as in Go) |
//! | `--local-cluster-id`, `LOCAL_CLUSTER_ID` | empty | `--cluster-id` |
//! | `--admin-key`, `AGENTBOX_ADMIN_KEY` | — | `--admin-key`: one key, not split on commas (Go reads one string) |
//! | `--extproc-enable-auth` | `false` | keys checked only with it AND an admin key (below) |
//! | `--extproc-sandbox-indexer-fallback` | `true` | `--index-fallback` |
//! | `--activity-tracker-gc-interval` | `5m` | `--activity-gc-interval` |
//! | `--kubeconfig` (controller-runtime's) | inferred | `--kubeconfig` |
//! | `--apikey-cache-ttl`, `--sandbox-port` | | accepted, no effect: key Secrets are watched (a change applies at once); Go never used the port |
//!
//! An address is `host:port`, or `:port` for every interface (`0.0.0.0:port`), as in Go.
//!
//! What this entry does that `serve` never does, each announced at start-up (warn):
//!
//! * **Keyless data plane**, the Go gateway's default: unless `--extproc-enable-auth` is given
//!   AND there is an admin key (`--admin-key`, `AGENTBOX_ADMIN_KEY`, `SANDGATE_ADMIN_KEY_FILE`),
//!   every request is admitted without a key and reaches every sandbox (serve's
//!   `--insecure-disable-auth`). With both, keys are checked as in `serve`, tenant isolation
//!   included (the Go gateway let any valid key reach any sandbox).
//! * **An open gRPC port** when no internal token is configured (neither
//!   `SANDGATE_INTERNAL_TOKEN` nor `SANDGATE_INTERNAL_TOKEN_FILE`): the Go chart's Envoy sends
//!   none. With one configured it is required, as in `serve`.
//! * **`sandbox_not_found` is 502** (Go v-C and later; what the E2B SDK reads as "gone"), unless
//!   `SANDGATE_SANDBOX_NOT_FOUND_STATUS` says otherwise (404 for a v-A controller's clients).
//!
//! The control plane is `serve`'s: every call needs the admin key (raw or `Bearer`). Without
//! one every call is refused, where the Go gateway accepted them all: that too is a warning.

use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{Args, FromArgMatches};

use crate::config::ServeArgs;

/// The Go gateway's binary name: invoked under it, the resolver runs this entry.
pub const GO_BINARY: &str = "envoyextproc";
/// The subcommand word of this entry.
pub const SUBCOMMAND: &str = "go-compat";

const GO_NAMESPACE: &str = "agentbox-system";
const GO_CLUSTERS_CONFIGMAP: &str = "agentbox-clusters-config";
const GO_HEALTH_PORT: u16 = 8081;
const GO_EXTPROC_PORT: u16 = 9002;
const GO_INTERNAL_API_PORT: u16 = 9003;
const GO_ACTIVITY_GC_INTERVAL: Duration = Duration::from_secs(300);

/// Every flag of this entry, as the Go binary spells it (for the single-dash form).
const GO_FLAGS: &[&str] = &[
    "health-probe-bind-address",
    "extproc-bind-address",
    "internal-api-bind-address",
    "extproc-enable-auth",
    "admin-key",
    "apikey-namespace",
    "apikey-cache-ttl",
    "clusters-configmap-name",
    "local-cluster-id",
    "extproc-sandbox-indexer-fallback",
    "activity-tracker-gc-interval",
    "sandbox-port",
    "kubeconfig",
    "help",
];

/// The Go gateway's flags. Every setting they do not name keeps serve's default and its
/// `SANDGATE_…` environment twin (see `sandgate-resolver serve --help`).
#[derive(Debug, Default, Args)]
#[command(
    after_help = "Every other setting keeps serve's default and its SANDGATE_* environment \
    variable (`sandgate-resolver serve --help`); those variables also win over the Go defaults \
    above, the Go flags win over them."
)]
pub struct GoCompatArgs {
    /// [Go default ":8081"] /healthz, /readyz, /metrics (serve's --http-listen).
    #[arg(long, value_name = "[HOST]:PORT", value_parser = parse_bind_address)]
    pub health_probe_bind_address: Option<SocketAddr>,
    /// [Go default ":9002"] ext_proc and Resolve (serve's --grpc-listen).
    #[arg(long, value_name = "[HOST]:PORT", value_parser = parse_bind_address)]
    pub extproc_bind_address: Option<SocketAddr>,
    /// [Go default ":9003"] ControlPlaneService (serve's --control-listen).
    #[arg(long, value_name = "[HOST]:PORT", value_parser = parse_bind_address)]
    pub internal_api_bind_address: Option<SocketAddr>,
    /// Check API keys on the data plane; only together with an admin key. Without both, every
    /// request is admitted WITHOUT a key, as in the Go gateway.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = parse_go_bool)]
    pub extproc_enable_auth: Option<bool>,
    /// The admin key (one string, as in Go): the control plane's credential.
    #[arg(long, env = "AGENTBOX_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// [Go default "agentbox-system"] Where key Secrets and the clusters ConfigMap live.
    #[arg(long, value_name = "NAMESPACE")]
    pub apikey_namespace: Option<String>,
    /// Accepted for the Go chart; no effect (key Secrets are watched).
    #[arg(long, value_name = "DURATION", value_parser = parse_go_duration)]
    pub apikey_cache_ttl: Option<Duration>,
    /// [Go default "agentbox-clusters-config"] The peer-cluster ConfigMap, watched when a local
    /// cluster id is set.
    #[arg(long, value_name = "NAME")]
    pub clusters_configmap_name: Option<String>,
    /// This cluster's id (serve's --cluster-id); empty: no cross-cluster routing.
    #[arg(long, env = "LOCAL_CLUSTER_ID", value_name = "ID")]
    pub local_cluster_id: Option<String>,
    /// [Go default true] On a route-cache miss, find the sandbox by its label.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = parse_go_bool)]
    pub extproc_sandbox_indexer_fallback: Option<bool>,
    /// [Go default 5m] How often activity of sandboxes without a Running Pod is forgotten.
    #[arg(long, value_name = "DURATION", value_parser = parse_go_duration)]
    pub activity_tracker_gc_interval: Option<Duration>,
    /// Accepted for the Go chart; no effect (the Go gateway did not use it either).
    #[arg(long, value_name = "PORT")]
    pub sandbox_port: Option<i64>,
    /// Kubeconfig file (controller-runtime's flag); without it: KUBECONFIG, then in-cluster.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
}

/// A start-up announcement, logged once logging is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Warn(String),
    Info(String),
}

/// What `go-compat` runs: serve's configuration, and what to announce first.
#[derive(Debug)]
pub struct Plan {
    pub serve: ServeArgs,
    pub notices: Vec<Notice>,
}

impl Plan {
    /// Logs the announcements (call after logging is set up).
    pub fn announce(&self) {
        for notice in &self.notices {
            match notice {
                Notice::Warn(m) => tracing::warn!("go-compat: {m}"),
                Notice::Info(m) => tracing::info!("go-compat: {m}"),
            }
        }
    }
}

/// The process's arguments as clap should read them: under the Go binary's name the
/// subcommand word is inserted, and this entry's single-dash Go flags get their second dash.
pub fn argv(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    let as_go = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|name| name == GO_BINARY);
    if as_go {
        args.insert(1, SUBCOMMAND.into());
    }
    if args.get(1).is_some_and(|a| a == SUBCOMMAND) {
        for arg in args.iter_mut().skip(2) {
            if arg == "--" {
                break;
            }
            if let Some(long) = single_dash_go_flag(arg) {
                *arg = long;
            }
        }
    }
    args
}

/// `-name[=value]` for one of this entry's flags, as `--name[=value]`.
fn single_dash_go_flag(arg: &OsString) -> Option<OsString> {
    let rest = arg.to_str()?.strip_prefix('-')?;
    let name = rest.split_once('=').map_or(rest, |(name, _)| name);
    (!rest.starts_with('-') && GO_FLAGS.contains(&name)).then(|| format!("--{rest}").into())
}

/// Go's listen address: `:port` is every interface (0.0.0.0), otherwise `host:port` (an IP
/// literal, `[v6]:port`, or a name resolved now).
pub fn parse_bind_address(s: &str) -> Result<SocketAddr, String> {
    if let Some(port) = s.strip_prefix(':') {
        return port
            .parse::<u16>()
            .map(|p| SocketAddr::from(([0, 0, 0, 0], p)))
            .map_err(|_| format!("{s:?}: the port is not a number from 0 to 65535"));
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if !s.contains(':') {
        return Err(format!(
            "{s:?} is not an address like :9002 or 127.0.0.1:9002"
        ));
    }
    s.to_socket_addrs()
        .map_err(|e| format!("{s:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{s:?}: the name has no address"))
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean (true or false)")),
    }
}

/// Go's `time.ParseDuration` (`300ms`, `1.5h`, `2h45m`), without signs; zero is refused, as
/// in serve: every duration here is an interval.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like 30s, 5m or 1h30m");
    if s.is_empty() || s == "0" {
        return Err(if s.is_empty() {
            bad()
        } else {
            "duration must be greater than zero".into()
        });
    }
    let mut rest = s;
    let mut nanos = 0f64;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, tail) = rest.split_at(num_end);
        let n: f64 = match num {
            "" | "." => return Err(bad()),
            _ => num.parse().map_err(|_| bad())?,
        };
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        nanos += n * scale;
        rest = next;
    }
    match Duration::try_from_secs_f64(nanos / 1e9) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("duration must be greater than zero".into()),
        Err(_) => Err(bad()),
    }
}

/// The Go flag if given, else serve's setting if its environment twin was set, else Go's
/// default.
fn choose<T>(go_flag: Option<T>, twin_set: bool, serve: T, go_default: T) -> T {
    match go_flag {
        Some(v) => v,
        None if twin_set => serve,
        None => go_default,
    }
}

fn every_interface(port: u16) -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], port))
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

impl GoCompatArgs {
    /// serve's configuration from the environment (its `SANDGATE_…` twins and defaults), with
    /// the Go flags laid over it.
    pub fn into_plan(self) -> anyhow::Result<Plan> {
        let matches = ServeArgs::augment_args(clap::Command::new(SUBCOMMAND))
            .try_get_matches_from([SUBCOMMAND])?;
        let serve = ServeArgs::from_arg_matches(&matches)?;
        let twin_set = |id: &str| matches.value_source(id) == Some(ValueSource::EnvVariable);
        Ok(self.over(serve, &twin_set))
    }

    /// Lays the Go flags over `serve`; `twin_set(id)` tells whether serve's setting `id` came
    /// from its environment variable.
    fn over(self, mut s: ServeArgs, twin_set: &dyn Fn(&str) -> bool) -> Plan {
        let mut notices = Vec::new();

        s.http_listen = choose(
            self.health_probe_bind_address,
            twin_set("http_listen"),
            s.http_listen,
            every_interface(GO_HEALTH_PORT),
        );
        s.grpc_listen = choose(
            self.extproc_bind_address,
            twin_set("grpc_listen"),
            s.grpc_listen,
            every_interface(GO_EXTPROC_PORT),
        );
        s.control_listen = choose(
            self.internal_api_bind_address,
            twin_set("control_listen"),
            s.control_listen,
            every_interface(GO_INTERNAL_API_PORT),
        );

        // An empty namespace is every namespace, as for serve.
        let namespace = self.apikey_namespace.map(|ns| non_empty(Some(ns)));
        s.key_secret_namespace = choose(
            namespace.clone(),
            twin_set("key_secret_namespace"),
            s.key_secret_namespace.take(),
            Some(GO_NAMESPACE.into()),
        );
        s.clusters_configmap_namespace = choose(
            namespace,
            twin_set("clusters_configmap_namespace"),
            s.clusters_configmap_namespace.take(),
            Some(GO_NAMESPACE.into()),
        );

        s.cluster_id = choose(
            non_empty(self.local_cluster_id),
            twin_set("cluster_id"),
            std::mem::take(&mut s.cluster_id),
            String::new(),
        );
        let configmap = choose(
            non_empty(self.clusters_configmap_name).map(Some),
            twin_set("clusters_configmap"),
            s.clusters_configmap.take(),
            Some(GO_CLUSTERS_CONFIGMAP.into()),
        );
        s.clusters_configmap = if s.clusters_file.is_some() {
            notices.push(Notice::Info(
                "peer clusters come from SANDGATE_CLUSTERS_FILE; the clusters ConfigMap is not \
                 watched"
                    .into(),
            ));
            None
        } else if s.cluster_id.is_empty() {
            notices.push(Notice::Info(
                "no local cluster id (LOCAL_CLUSTER_ID): cross-cluster routing is off and the \
                 clusters ConfigMap is not watched, as in the Go gateway"
                    .into(),
            ));
            None
        } else {
            configmap
        };

        // One admin key, as the Go gateway reads it: a comma is part of the key.
        let admin = non_empty(self.admin_key);
        let has_admin = admin.is_some() || s.admin_key_file.is_some();
        s.admin_keys = admin.into_iter().collect();
        let enable_auth = self.extproc_enable_auth.unwrap_or(false);
        if !(enable_auth && has_admin) {
            s.insecure_disable_auth = true;
            let why = if enable_auth {
                "--extproc-enable-auth is set but there is no admin key (--admin-key, \
                 AGENTBOX_ADMIN_KEY, SANDGATE_ADMIN_KEY_FILE), so"
            } else {
                "without --extproc-enable-auth"
            };
            notices.push(Notice::Warn(format!(
                "API KEYS ARE NOT CHECKED: {why}, as in the Go gateway, every request on the \
                 data plane is admitted without a key and reaches EVERY sandbox in every \
                 namespace; pass --extproc-enable-auth and an admin key to require keys"
            )));
        }
        if !has_admin && s.keys_file.is_none() {
            notices.push(Notice::Warn(
                "no admin key (--admin-key, AGENTBOX_ADMIN_KEY, SANDGATE_ADMIN_KEY_FILE): the \
                 ControlPlaneService refuses every call, where the Go gateway accepted them \
                 unauthenticated; give this container the controller's AGENTBOX_ADMIN_KEY"
                    .into(),
            ));
        }

        s.index_fallback = choose(
            self.extproc_sandbox_indexer_fallback,
            twin_set("index_fallback"),
            s.index_fallback,
            true,
        );
        s.activity_gc_interval = choose(
            self.activity_tracker_gc_interval,
            twin_set("activity_gc_interval"),
            s.activity_gc_interval,
            GO_ACTIVITY_GC_INTERVAL,
        );
        if let Some(path) = self.kubeconfig {
            s.kubeconfig = Some(path);
        }
        if !twin_set("sandbox_not_found_status") {
            s.sandbox_not_found_status = 502;
        }
        // serve opens the port only if no internal token is configured at all.
        s.grpc_open_without_token = true;

        for (flag, given) in [
            ("--apikey-cache-ttl", self.apikey_cache_ttl.is_some()),
            ("--sandbox-port", self.sandbox_port.is_some()),
        ] {
            if given {
                notices.push(Notice::Info(format!("{flag} has no effect in sandgate")));
            }
        }
        Plan { serve: s, notices }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::config::{Cli, Command, PodSource};

    fn parse(argv0: &str, args: &[&str]) -> GoCompatArgs {
        let raw = std::iter::once(argv0)
            .chain(args.iter().copied())
            .map(OsString::from);
        match Cli::try_parse_from(super::argv(raw))
            .expect("parses")
            .command
        {
            Command::GoCompat(go) => *go,
            other => panic!("go-compat expected, got {other:?}"),
        }
    }

    /// serve's settings as if no `SANDGATE_…` variable were set.
    fn serve_defaults() -> ServeArgs {
        let m = ServeArgs::augment_args(clap::Command::new("t"))
            .try_get_matches_from(["t"])
            .unwrap();
        ServeArgs::from_arg_matches(&m).unwrap()
    }

    fn plan(go: GoCompatArgs) -> Plan {
        go.over(serve_defaults(), &|_| false)
    }

    fn warned(p: &Plan, what: &str) -> bool {
        p.notices
            .iter()
            .any(|n| matches!(n, Notice::Warn(m) if m.contains(what)))
    }

    const CHART: &[&str] = &[
        "--health-probe-bind-address=:8081",
        "--extproc-bind-address=:9002",
        "--internal-api-bind-address=:9003",
        "--apikey-namespace=agentbox-system",
        "--clusters-configmap-name=agentbox-clusters-config",
    ];

    #[test]
    fn the_go_charts_command_line_maps_onto_serve() {
        for go in [
            parse("sandgate-resolver", &[&["go-compat"], CHART].concat()),
            parse("/envoyextproc", CHART),
            parse("/usr/local/bin/envoyextproc", CHART),
        ] {
            let p = plan(go);
            let s = &p.serve;
            assert_eq!(s.http_listen, "0.0.0.0:8081".parse().unwrap());
            assert_eq!(s.grpc_listen, "0.0.0.0:9002".parse().unwrap());
            assert_eq!(s.control_listen, "0.0.0.0:9003".parse().unwrap());
            assert_eq!(s.key_secret_namespace.as_deref(), Some("agentbox-system"));
            assert_eq!(
                s.clusters_configmap_namespace.as_deref(),
                Some("agentbox-system")
            );
            assert_eq!(s.clusters_configmap, None, "no local cluster id");
            assert_eq!(s.pod_source, PodSource::Kube, "serve's default");
            assert_eq!(s.sandbox_not_found_status, 502);
            assert!(s.decide_config().not_found_502);
            assert!(s.insecure_disable_auth, "keyless, as in Go");
            assert!(s.grpc_open_without_token);
            assert!(s.admin_keys.is_empty());
            assert!(s.index_fallback);
            assert_eq!(s.activity_gc_interval, GO_ACTIVITY_GC_INTERVAL);
            assert!(warned(&p, "API KEYS ARE NOT CHECKED"));
            assert!(warned(&p, "reaches EVERY sandbox"));
            assert!(warned(&p, "ControlPlaneService refuses every call"));
        }
    }

    #[test]
    fn go_defaults_fill_in_what_the_chart_leaves_out() {
        let p = plan(parse("envoyextproc", &[]));
        assert_eq!(p.serve.grpc_listen, "0.0.0.0:9002".parse().unwrap());
        assert_eq!(p.serve.control_listen, "0.0.0.0:9003".parse().unwrap());
        assert_eq!(p.serve.http_listen, "0.0.0.0:8081".parse().unwrap());
        assert_eq!(
            p.serve.key_secret_namespace.as_deref(),
            Some("agentbox-system")
        );
    }

    #[test]
    fn keys_are_checked_only_with_the_flag_and_an_admin_key() {
        let with = |args: &[&str]| plan(parse("envoyextproc", args));
        let p = with(&["--extproc-enable-auth", "--admin-key=k,with,commas"]);
        assert!(!p.serve.insecure_disable_auth);
        assert_eq!(
            p.serve.admin_keys,
            ["k,with,commas"],
            "one key, as Go reads it"
        );
        assert!(!warned(&p, "NOT CHECKED") && !warned(&p, "refuses every call"));

        let p = with(&["--extproc-enable-auth"]);
        assert!(p.serve.insecure_disable_auth);
        assert!(warned(
            &p,
            "--extproc-enable-auth is set but there is no admin key"
        ));

        let p = with(&["--admin-key=k"]);
        assert!(p.serve.insecure_disable_auth);
        assert!(warned(&p, "without --extproc-enable-auth"));
        assert!(!warned(&p, "refuses every call"));

        for off in ["--extproc-enable-auth=false", "-extproc-enable-auth=F"] {
            assert!(with(&[off, "--admin-key=k"]).serve.insecure_disable_auth);
        }
        for on in ["--extproc-enable-auth=true", "-extproc-enable-auth=1"] {
            assert!(!with(&[on, "--admin-key=k"]).serve.insecure_disable_auth);
        }
        // A value after a space is not the boolean's, as in Go.
        let err = Cli::try_parse_from(super::argv(
            ["envoyextproc", "--extproc-enable-auth", "true"].map(OsString::from),
        ));
        assert!(err.is_err());
    }

    #[test]
    fn the_clusters_configmap_is_watched_only_with_a_local_cluster_id() {
        let p = plan(parse(
            "envoyextproc",
            &[
                "--local-cluster-id=c1",
                "--clusters-configmap-name=cm",
                "--apikey-namespace=ns",
            ],
        ));
        assert_eq!(p.serve.cluster_id, "c1");
        assert_eq!(p.serve.clusters_configmap.as_deref(), Some("cm"));
        assert_eq!(p.serve.clusters_configmap_namespace.as_deref(), Some("ns"));
        let p = plan(parse("envoyextproc", &["--local-cluster-id=c1"]));
        assert_eq!(
            p.serve.clusters_configmap.as_deref(),
            Some("agentbox-clusters-config")
        );
        // The chart sets LOCAL_CLUSTER_ID="" for a single cluster.
        let p = plan(parse("envoyextproc", &["--local-cluster-id="]));
        assert_eq!(
            (p.serve.cluster_id.as_str(), p.serve.clusters_configmap),
            ("", None)
        );
    }

    #[test]
    fn serves_environment_twins_beat_go_defaults_but_not_go_flags() {
        let mut base = serve_defaults();
        base.grpc_listen = "127.0.0.1:7000".parse().unwrap();
        base.control_listen = "127.0.0.1:7001".parse().unwrap();
        base.sandbox_not_found_status = 404;
        base.cluster_id = "from-env".into();
        let twins = [
            "grpc_listen",
            "control_listen",
            "sandbox_not_found_status",
            "cluster_id",
        ];
        let twin_set = |id: &str| twins.contains(&id);
        let go = parse("envoyextproc", &["--internal-api-bind-address=:9999"]);
        let s = go.over(base, &twin_set).serve;
        assert_eq!(s.grpc_listen, "127.0.0.1:7000".parse().unwrap(), "twin");
        assert_eq!(s.control_listen, "0.0.0.0:9999".parse().unwrap(), "Go flag");
        assert_eq!(s.http_listen, "0.0.0.0:8081".parse().unwrap(), "Go default");
        assert_eq!(s.sandbox_not_found_status, 404);
        assert_eq!(s.cluster_id, "from-env");
    }

    #[test]
    fn other_go_flags_parse() {
        let go = parse(
            "envoyextproc",
            &[
                "-extproc-sandbox-indexer-fallback=false",
                "--activity-tracker-gc-interval=1m30s",
                "--apikey-cache-ttl",
                "2m",
                "--sandbox-port=8080",
                "--kubeconfig=/k",
                "--admin-key",
                "spaced",
            ],
        );
        let p = plan(go);
        assert!(!p.serve.index_fallback);
        assert_eq!(p.serve.activity_gc_interval, Duration::from_secs(90));
        assert_eq!(p.serve.kubeconfig, Some(PathBuf::from("/k")));
        assert_eq!(p.serve.admin_keys, ["spaced"]);
        assert!(p.notices.contains(&Notice::Info(
            "--apikey-cache-ttl has no effect in sandgate".into()
        )));
        for bad in [
            &["--extproc-bind-address=9002"][..],
            &["--health-probe-bind-address=:99999"],
            &["--activity-tracker-gc-interval=5"],
            &["--grpc-listen=127.0.0.1:1"],
            &["--extproc-enable-auth=yes"],
        ] {
            let raw = ["envoyextproc"].iter().chain(bad).map(OsString::from);
            assert!(Cli::try_parse_from(super::argv(raw)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bind_addresses_in_gos_forms() {
        let ok = |s: &str| parse_bind_address(s).unwrap();
        assert_eq!(ok(":8081"), "0.0.0.0:8081".parse().unwrap());
        assert_eq!(ok(":0"), "0.0.0.0:0".parse().unwrap());
        assert_eq!(ok("127.0.0.1:9002"), "127.0.0.1:9002".parse().unwrap());
        assert_eq!(ok("[::1]:9002"), "[::1]:9002".parse().unwrap());
        assert!(ok("localhost:9002").ip().is_loopback());
        for bad in ["", ":", "9002", ":x", ":65536", "127.0.0.1", "a b:1"] {
            assert!(parse_bind_address(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn go_durations_and_booleans() {
        let d = |s: &str| parse_go_duration(s);
        assert_eq!(d("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(d("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(d("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(d("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(d("2µs"), Ok(Duration::from_micros(2)));
        for bad in ["", "0", "0s", "5", "-1m", "1d", "m", ".s", "1.2.3s"] {
            assert!(d(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_go_bool("T"), Ok(true));
        assert_eq!(parse_go_bool("0"), Ok(false));
        assert!(parse_go_bool("yes").is_err());
    }

    #[test]
    fn argv_is_rewritten_only_for_the_go_entry() {
        let v = |args: &[&str]| {
            super::argv(args.iter().map(OsString::from))
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            v(&["/envoyextproc", "-admin-key=x", "-v=2"]),
            ["/envoyextproc", "go-compat", "--admin-key=x", "-v=2"],
            "only Go flags of this entry get a second dash"
        );
        assert_eq!(v(&["envoyextproc"]), ["envoyextproc", "go-compat"]);
        assert_eq!(
            v(&["sandgate-resolver", "serve", "-admin-key=x"]),
            ["sandgate-resolver", "serve", "-admin-key=x"]
        );
        assert_eq!(
            v(&["x", "go-compat", "--", "-admin-key"]),
            ["x", "go-compat", "--", "-admin-key"]
        );
        assert_eq!(v(&["/bin/envoyextproc-old"])[..], ["/bin/envoyextproc-old"]);
        // Every name the rewrite knows is a flag of this entry (or clap's own --help).
        let cmd = Cli::command();
        let sub = cmd.find_subcommand(SUBCOMMAND).unwrap();
        for name in GO_FLAGS.iter().filter(|n| **n != "help") {
            assert!(
                sub.get_arguments().any(|a| a.get_long() == Some(name)),
                "{name}"
            );
        }
    }
}
