//! The Go gateway's deployment in front of sandgate, unchanged: the Go Helm chart's gateway
//! container (`/envoyextproc --health-probe-bind-address=:8081 --extproc-bind-address=:9002
//! --internal-api-bind-address=:9003 --apikey-namespace=<ns> --clusters-configmap-name=<name>`,
//! env `LOCAL_CLUSTER_ID`, plus the controller's `AGENTBOX_ADMIN_KEY`) starts the resolver, as
//! `sandgate-resolver go-compat …` and as a symlink named `envoyextproc`; and the Go
//! controller's ControlPlaneService calls, made as it makes them — a stock tonic client on the
//! legacy method names `/sandbox.ctrlplane.v1.ControlPlaneService/…`, the admin key raw or as
//! `Bearer`, the Go client's deadlines (PushRoute 2 s, EvictRoute 2 s, GetLastActive 5 s) — are
//! served. Ports are free loopback ports in the chart's flags (`127.0.0.1:<p>`, or the chart's
//! own `:<p>` form, which binds every interface, reached on 127.0.0.1). `KUBECONFIG` (the
//! emulator) stands in for the Pod's in-cluster configuration.
//!
//! The entry's Go behaviour is checked too: no key needed on the data plane unless
//! `--extproc-enable-auth` AND an admin key; `sandbox_not_found` is 502; the gRPC port open
//! without an internal token unless one is configured; each announced at start-up. `serve`
//! keeps requiring keys and answering 404.

use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Reply;
use sandgate_proto::ctrlplane::v1::{
    EvictRouteRequest, EvictRouteResponse, GetLastActiveRequest, GetLastActiveResponse,
    PushRouteRequest, PushRouteResponse,
};
use sandgate_tests::emulator::Emulator;
use sandgate_tests::every_entry;
use sandgate_tests::fixtures::{key_secret, pod};
use sandgate_tests::gateway::{Entry, Gateway};
use sandgate_tests::process::{GoEntry, Outcome, Resolver, free_ports};
use sandgate_tests::stack::{ACME_KEY as STACK_ACME_KEY, ADMIN_KEY as STACK_ADMIN_KEY, Control};
use tonic::transport::Channel;
use tonic::{Code, Status};

const ADMIN_KEY: &str = "go-compat-admin-key-0123456789";
const ACME_KEY: &str = "go-compat-acme-key-0123456789";
/// The chart's `--apikey-namespace={{ .Release.Namespace }}`.
const RELEASE_NS: &str = "agentbox-system";
const CLUSTERS_CONFIGMAP: &str = "agentbox-sandbox-clusters-config";
const SANDBOX: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";
const POD_IP: &str = "10.61.0.7";
const ROUTE: &str = "10.61.0.7:8080";

/// How the chart's flags name an address.
#[derive(Clone, Copy)]
enum Bind {
    /// `127.0.0.1:<port>`.
    Loopback,
    /// `:<port>`, the chart's own form: every interface.
    EveryInterface,
}

/// An emulator holding one running sandbox Pod (acme) and acme's key Secret, and the resolver
/// started the Go chart's way on it.
struct GoGateway {
    resolver: Resolver,
    _emu: Emulator,
    _dir: tempfile::TempDir,
}

/// The Go chart's gateway arguments, on fresh ports, then `extra` (Go flags too).
fn chart_args(bind: Bind, extra: &[&str]) -> (Vec<String>, (SocketAddr, SocketAddr, SocketAddr)) {
    let [health, extproc, internal] = free_ports();
    let flag = |name: &str, port: u16| match bind {
        Bind::Loopback => format!("--{name}=127.0.0.1:{port}"),
        Bind::EveryInterface => format!("--{name}=:{port}"),
    };
    let mut args = vec![
        flag("health-probe-bind-address", health),
        flag("extproc-bind-address", extproc),
        flag("internal-api-bind-address", internal),
        format!("--apikey-namespace={RELEASE_NS}"),
        format!("--clusters-configmap-name={CLUSTERS_CONFIGMAP}"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let at = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    (args, (at(extproc), at(internal), at(health)))
}

/// Starts the Go entry on a fresh emulator: the chart's arguments plus `extra`, the chart's
/// environment (`LOCAL_CLUSTER_ID=""`) plus `env`. Waits until ready.
async fn start(entry: GoEntry, bind: Bind, extra: &[&str], env: &[(&str, &str)]) -> GoGateway {
    let emu = Emulator::start().await;
    emu.apply(key_secret(RELEASE_NS, "key-acme", ACME_KEY, "acme", None));
    emu.apply(
        pod("acme", "sandbox-pod-1")
            .sandbox(SANDBOX)
            .phase("running")
            .ip(POD_IP)
            .json(),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = emu.write_kubeconfig(dir.path());
    let kubeconfig = kubeconfig.to_str().expect("utf-8 path");
    let mut environment = vec![("LOCAL_CLUSTER_ID", ""), ("KUBECONFIG", kubeconfig)];
    environment.extend_from_slice(env);
    let (args, addrs) = chart_args(bind, extra);
    let resolver = Resolver::start_go_compat(entry, &args, &environment, addrs).await;
    resolver.wait_ready().await;
    GoGateway {
        resolver,
        _emu: emu,
        _dir: dir,
    }
}

/// What the Go controller puts in `authorization`.
#[derive(Clone, Copy, Debug)]
enum Auth<'a> {
    None,
    /// The bare key, which the Go gateway accepted.
    Raw(&'a str),
    /// `Bearer <key>`, what the Go controller sends.
    Bearer(&'a str),
}

fn request<T>(msg: T, auth: Auth<'_>, deadline: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(deadline);
    let value = match auth {
        Auth::None => None,
        Auth::Raw(k) => Some(k.to_string()),
        Auth::Bearer(k) => Some(format!("Bearer {k}")),
    };
    if let Some(v) = value {
        r.metadata_mut()
            .insert("authorization", v.parse().expect("ascii"));
    }
    r
}

/// One unary call on `method` of the legacy service, with a stock tonic client and prost.
macro_rules! legacy_call {
    ($channel:expr, $method:literal, $msg:expr, $auth:expr, $deadline:expr) => {{
        let mut grpc = tonic::client::Grpc::new($channel.clone());
        async {
            grpc.ready()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            grpc.unary(
                request($msg, $auth, $deadline),
                http::uri::PathAndQuery::from_static(concat!(
                    "/sandbox.ctrlplane.v1.ControlPlaneService/",
                    $method
                )),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .map(tonic::Response::into_inner)
        }
        .await
    }};
}

/// The Go controller's ControlPlaneService client: the legacy names, its deadlines.
struct GoController {
    channel: Channel,
}

impl GoController {
    async fn connect(r: &Resolver) -> GoController {
        let channel = Channel::from_shared(format!("http://{}", r.control))
            .expect("uri")
            .connect()
            .await
            .expect("connect to the internal API");
        GoController { channel }
    }

    async fn push(&self, auth: Auth<'_>, id: &str) -> Result<PushRouteResponse, Status> {
        let msg = PushRouteRequest {
            sandbox_id: id.into(),
            namespace: "acme".into(),
            pod_name: "sandbox-pod-1".into(),
        };
        legacy_call!(self.channel, "PushRoute", msg, auth, Duration::from_secs(2))
    }

    async fn evict(&self, auth: Auth<'_>, id: &str) -> Result<EvictRouteResponse, Status> {
        let msg = EvictRouteRequest {
            sandbox_id: id.into(),
        };
        legacy_call!(
            self.channel,
            "EvictRoute",
            msg,
            auth,
            Duration::from_secs(2)
        )
    }

    async fn last_active(&self, auth: Auth<'_>) -> Result<GetLastActiveResponse, Status> {
        let msg = GetLastActiveRequest {};
        legacy_call!(
            self.channel,
            "GetLastActive",
            msg,
            auth,
            Duration::from_secs(5)
        )
    }
}

/// Envoy's ext_proc stream as the Go chart's Envoy opens it (no internal token unless the
/// resolver has one): one request-headers message for `id`, with `api_key` if any; the reply.
async fn ext_proc(r: &Resolver, id: &str, api_key: Option<&str>) -> Result<Reply, Status> {
    let path = format!("/sandboxes/{id}/8080/status");
    let mut headers = vec![
        (":method", "GET"),
        (":path", path.as_str()),
        (":authority", "agentbox-data-plane"),
    ];
    headers.extend(api_key.map(|k| ("agentbox-api-key", k)));
    let message = sandgate_tests::extproc::request_headers(&headers);
    let channel = Channel::from_shared(format!("http://{}", r.grpc))
        .expect("uri")
        .connect()
        .await
        .expect("connect to the ext_proc port");
    let mut replies = ExternalProcessorClient::new(channel)
        .process(r.authorize(futures::stream::iter([message])))
        .await?
        .into_inner();
    let reply = tokio::time::timeout(Duration::from_secs(5), replies.message())
        .await
        .expect("ext_proc answers at once")?
        .expect("a reply to the request headers");
    Ok(reply.response.expect("a response"))
}

/// The destination an ext_proc reply routes to, or the status it answers with.
fn routed_to(reply: &Reply) -> Result<String, i32> {
    match reply {
        Reply::RequestHeaders(h) => {
            let set = &h
                .response
                .as_ref()
                .and_then(|c| c.header_mutation.as_ref())
                .expect("a header mutation")
                .set_headers;
            let dest = set
                .iter()
                .filter_map(|o| o.header.as_ref())
                .find(|h| h.key == "x-envoy-original-dst-host")
                .expect("a destination");
            Ok(String::from_utf8(dest.raw_value.clone()).expect("text"))
        }
        Reply::ImmediateResponse(i) => Err(i.status.as_ref().map_or(0, |s| s.code)),
        other => panic!("unexpected ext_proc reply {other:?}"),
    }
}

/// /healthz, /readyz and /metrics on the health port; ext_proc and Resolve on the ext_proc
/// port, keyless and without an internal token; the legacy control plane with the raw key.
async fn the_three_listeners_answer(r: &Resolver) {
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(r.http_get(path, None).await.0, 200, "{path}");
    }
    let reply = ext_proc(r, SANDBOX, None).await.expect("ext_proc");
    assert_eq!(routed_to(&reply), Ok(ROUTE.to_string()));
    assert_eq!(
        r.resolve("", SANDBOX, 8080).await,
        Outcome::Route(ROUTE.into())
    );
    let go = GoController::connect(r).await;
    let active = go
        .last_active(Auth::Raw(ADMIN_KEY))
        .await
        .expect("GetLastActive");
    assert!(active.last_active.contains_key(SANDBOX), "{active:?}");
    let logs = r.logs();
    for warning in ["API KEYS ARE NOT CHECKED", "the gRPC port is OPEN"] {
        assert!(
            logs.lines()
                .any(|l| l.contains("WARN") && l.contains(warning)),
            "no warning {warning:?}:\n{logs}"
        );
    }
    assert!(!logs.contains(ADMIN_KEY), "the log shows the admin key");
}

#[tokio::test]
async fn the_go_charts_command_line_starts_the_resolver_as_go_compat_and_as_envoyextproc() {
    let env = [("AGENTBOX_ADMIN_KEY", ADMIN_KEY)];
    for (entry, bind) in [
        (GoEntry::Subcommand, Bind::Loopback),
        (GoEntry::Symlink, Bind::Loopback),
        (GoEntry::Subcommand, Bind::EveryInterface),
    ] {
        let g = start(entry, bind, &[], &env).await;
        the_three_listeners_answer(&g.resolver).await;
    }
}

/// The acceptance line, literally: the chart's five arguments in the chart's own `:port` form
/// (free ports for 8081, 9002, 9003), its `LOCAL_CLUSTER_ID`, the admin key the controller
/// holds, and the controller's three calls with the raw key on the legacy names.
#[tokio::test]
async fn sandgate_resolver_started_with_exactly_the_go_charts_arguments_and_env_serves_the_legacy_control_plane_service_to_a_stock_grpc_client_with_the_raw_admin_key()
 {
    let g = start(
        GoEntry::Symlink,
        Bind::EveryInterface,
        &[],
        &[("AGENTBOX_ADMIN_KEY", ADMIN_KEY)],
    )
    .await;
    let r = &g.resolver;
    let go = GoController::connect(r).await;
    go.push(Auth::Raw(ADMIN_KEY), SANDBOX)
        .await
        .expect("PushRoute");
    assert_eq!(
        r.resolve("", SANDBOX, 8080).await,
        Outcome::Route(ROUTE.into())
    );
    let active = go
        .last_active(Auth::Raw(ADMIN_KEY))
        .await
        .expect("GetLastActive");
    let seen: jiff::Timestamp = active.last_active[SANDBOX].parse().expect("RFC 3339");
    assert!(jiff::Timestamp::now().duration_since(seen).as_secs() < 60);
    assert!(
        go.evict(Auth::Raw(ADMIN_KEY), SANDBOX)
            .await
            .expect("EvictRoute")
            .evicted
    );
    the_three_listeners_answer(r).await;
}

#[tokio::test]
async fn the_controllers_calls_on_the_legacy_names_raw_or_bearer_with_go_deadlines() {
    // Pure push (a Go flag too), so only a pushed route routes.
    let g = start(
        GoEntry::Subcommand,
        Bind::Loopback,
        &["--extproc-sandbox-indexer-fallback=false"],
        &[("AGENTBOX_ADMIN_KEY", ADMIN_KEY)],
    )
    .await;
    let r = &g.resolver;
    let go = GoController::connect(r).await;
    let gone = Outcome::deny(502, "sandbox_not_found");

    // Refused without the admin key, whatever the form, and nothing changes.
    for auth in [
        Auth::None,
        Auth::Raw("wrong-key"),
        Auth::Bearer("wrong-key"),
        Auth::Raw(ACME_KEY),
        Auth::Bearer(ACME_KEY),
        Auth::Raw(""),
        Auth::Raw("Bearer"),
    ] {
        let push = go.push(auth, SANDBOX).await.unwrap_err();
        let evict = go.evict(auth, SANDBOX).await.unwrap_err();
        let last = go.last_active(auth).await.unwrap_err();
        for status in [push, evict, last] {
            assert_eq!(status.code(), Code::Unauthenticated, "{auth:?}: {status:?}");
        }
    }
    // A missing sandbox is 502 in this entry (the Go gateway's, the E2B SDK's "gone").
    assert_eq!(r.resolve("", SANDBOX, 8080).await, gone);
    assert_eq!(
        routed_to(&ext_proc(r, SANDBOX, None).await.unwrap()),
        Err(502)
    );

    // PushRoute (raw key, 2 s), then a routed decision on both gRPC entries.
    go.push(Auth::Raw(ADMIN_KEY), SANDBOX)
        .await
        .expect("PushRoute, raw key");
    assert_eq!(
        r.resolve("", SANDBOX, 8080).await,
        Outcome::Route(ROUTE.into())
    );
    assert_eq!(
        routed_to(&ext_proc(r, SANDBOX, None).await.unwrap()),
        Ok(ROUTE.into())
    );
    go.push(Auth::Bearer(ADMIN_KEY), SANDBOX)
        .await
        .expect("PushRoute, Bearer");

    // GetLastActive (5 s): every value is RFC 3339, the routed sandbox among them.
    for auth in [Auth::Raw(ADMIN_KEY), Auth::Bearer(ADMIN_KEY)] {
        let active = go.last_active(auth).await.expect("GetLastActive");
        assert!(active.last_active.contains_key(SANDBOX), "{active:?}");
        for (id, value) in &active.last_active {
            let t: jiff::Timestamp = value.parse().unwrap_or_else(|e| panic!("{id}: {e}"));
            assert!(jiff::Timestamp::now().duration_since(t).as_secs() < 60);
        }
    }

    // EvictRoute (Bearer, 2 s): the sandbox is gone again.
    let evicted = go
        .evict(Auth::Bearer(ADMIN_KEY), SANDBOX)
        .await
        .expect("EvictRoute");
    assert!(evicted.evicted);
    assert_eq!(r.resolve("", SANDBOX, 8080).await, gone);
    assert!(
        !go.evict(Auth::Raw(ADMIN_KEY), SANDBOX)
            .await
            .expect("EvictRoute, raw key")
            .evicted
    );

    // Our own name is served on the same listener, by the same service.
    let mut ours = Control {
        client: r.control_client().await,
        key: Some(ADMIN_KEY.into()),
    };
    ours.push(SANDBOX, "acme", "sandbox-pod-1").await.unwrap();
    assert_eq!(
        r.resolve("", SANDBOX, 8080).await,
        Outcome::Route(ROUTE.into())
    );
    assert!(
        go.evict(Auth::Raw(ADMIN_KEY), SANDBOX)
            .await
            .unwrap()
            .evicted,
        "a route pushed under our name is evicted under Go's"
    );
    // A method neither service has is still UNIMPLEMENTED under the Go name.
    let mut grpc = tonic::client::Grpc::new(go.channel.clone());
    grpc.ready().await.unwrap();
    let nope: Result<tonic::Response<GetLastActiveResponse>, Status> = grpc
        .unary(
            request(
                GetLastActiveRequest {},
                Auth::Raw(ADMIN_KEY),
                Duration::from_secs(5),
            ),
            http::uri::PathAndQuery::from_static("/sandbox.ctrlplane.v1.ControlPlaneService/Nope"),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    assert_eq!(nope.unwrap_err().code(), Code::Unimplemented);

    let refused = |reason: &str| {
        format!(r#"sandgate_unauthenticated_calls_total{{listener="control",reason="{reason}"}}"#)
    };
    assert_eq!(
        r.metric(&refused("missing")).await,
        9,
        "None, Raw(\"\"), Bearer"
    );
    assert_eq!(r.metric(&refused("invalid")).await, 12);
}

#[tokio::test]
async fn keys_are_checked_only_with_extproc_enable_auth_and_an_admin_key() {
    // Both: serve's data plane, tenant isolation included.
    let g = start(
        GoEntry::Symlink,
        Bind::Loopback,
        &["--extproc-enable-auth"],
        &[("AGENTBOX_ADMIN_KEY", ADMIN_KEY)],
    )
    .await;
    let r = &g.resolver;
    assert_eq!(
        r.resolve("", SANDBOX, 8080).await,
        Outcome::deny(401, "missing_api_key")
    );
    assert_eq!(
        routed_to(&ext_proc(r, SANDBOX, None).await.unwrap()),
        Err(401)
    );
    for key in [ACME_KEY, ADMIN_KEY] {
        assert_eq!(
            r.resolve(key, SANDBOX, 8080).await,
            Outcome::Route(ROUTE.into())
        );
    }
    assert_eq!(
        routed_to(&ext_proc(r, SANDBOX, Some(ACME_KEY)).await.unwrap()),
        Ok(ROUTE.into())
    );
    assert!(!r.logs().contains("NOT CHECKED"), "{}", r.logs());
    drop(g);

    // The flag without an admin key: keyless, as in Go, and the control plane refuses all.
    let g = start(
        GoEntry::Subcommand,
        Bind::Loopback,
        &["--extproc-enable-auth=true"],
        &[],
    )
    .await;
    let r = &g.resolver;
    assert_eq!(
        r.resolve("", SANDBOX, 8080).await,
        Outcome::Route(ROUTE.into())
    );
    let logs = r.logs();
    for warning in [
        "--extproc-enable-auth is set but there is no admin key",
        "ControlPlaneService refuses every call",
    ] {
        assert!(logs.contains(warning), "no {warning:?}:\n{logs}");
    }
    let go = GoController::connect(r).await;
    for auth in [Auth::None, Auth::Raw(ADMIN_KEY), Auth::Bearer("")] {
        let refused = go.last_active(auth).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{auth:?}");
    }
}

#[tokio::test]
async fn a_configured_internal_token_closes_the_grpc_port_again() {
    let g = start(
        GoEntry::Subcommand,
        Bind::Loopback,
        &[],
        &[
            ("AGENTBOX_ADMIN_KEY", ADMIN_KEY),
            ("SANDGATE_INTERNAL_TOKEN", "go-compat-internal-token"),
        ],
    )
    .await;
    let r = &g.resolver;
    // With the token (the harness sends the one in the environment): served.
    assert_eq!(
        routed_to(&ext_proc(r, SANDBOX, None).await.unwrap()),
        Ok(ROUTE.into())
    );
    // Without it: refused, as in serve.
    let channel = Channel::from_shared(format!("http://{}", r.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let refused = sandgate_proto::resolver::v1::resolver_client::ResolverClient::new(channel)
        .resolve(sandgate_proto::resolver::v1::ResolveRequest {
            sandbox_id: SANDBOX.into(),
            port: 8080,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let logs = r.logs();
    assert!(!logs.contains("the gRPC port is OPEN"), "{logs}");
    assert!(
        !logs.contains("go-compat-internal-token"),
        "the log shows the token"
    );
}

/// `serve` is untouched by the Go entry: keys required, a missing sandbox 404.
#[tokio::test]
async fn serve_keeps_requiring_keys_and_answers_404() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pods.yaml"),
        format!(
            "- {{name: p, namespace: acme, ip: {POD_IP}, sandboxId: {SANDBOX}, phase: running}}\n"
        ),
    )
    .unwrap();
    let r = Resolver::start([
        "--pod-source=inventory".to_string(),
        format!("--inventory={}", dir.path().join("pods.yaml").display()),
        format!("--admin-key={ADMIN_KEY}"),
    ])
    .await;
    r.wait_ready().await;
    assert_eq!(
        r.resolve("", SANDBOX, 8080).await,
        Outcome::deny(401, "missing_api_key")
    );
    assert_eq!(
        r.resolve(ADMIN_KEY, "no-such-sandbox", 8080).await,
        Outcome::deny(404, "sandbox_not_found")
    );
    // The legacy names and the raw key work on serve's control plane too.
    let go = GoController::connect(&r).await;
    go.push(Auth::Raw(ADMIN_KEY), SANDBOX).await.unwrap();
    assert!(
        go.evict(Auth::Bearer(ADMIN_KEY), SANDBOX)
            .await
            .unwrap()
            .evicted
    );
}

/// The controller's push on the legacy name, with the raw admin key, is what routes a real
/// request through Envoy (the label index is off, so nothing else could), on every entry; its
/// evict takes the route away again.
async fn a_route_the_controller_pushes_on_the_legacy_name_routes_through_envoy(entry: Entry) {
    let mut gw = Gateway::start_args(entry, &["--index-fallback=false"]).await;
    let id = "sb-pushed";
    let port = gw.echo(id, "127.0.0.31").await;
    gw.kube.emu.apply(
        pod("acme", "sandbox-pod-1")
            .sandbox(id)
            .phase("running")
            .ip("127.0.0.31")
            .json(),
    );
    let path = format!("/sandboxes/{id}/{port}/x");
    let key = [("x-api-key", STACK_ACME_KEY)];
    assert_eq!(gw.get(&path, &key).await.status, 404, "not pushed yet");

    let go = GoController::connect(&gw.kube.resolver).await;
    go.push(Auth::Raw(STACK_ADMIN_KEY), id)
        .await
        .expect("PushRoute on the legacy name");
    // Routed as soon as the resolver has seen the Pod the route names.
    let r = gw.get_until(&path, &key, 200, Duration::from_secs(5)).await;
    assert_eq!((r.status, r.json()["sandbox"].as_str()), (200, Some(id)));

    let evicted = go.evict(Auth::Bearer(STACK_ADMIN_KEY), id).await.unwrap();
    assert!(evicted.evicted);
    assert_eq!(gw.get(&path, &key).await.status, 404, "evicted");
}

every_entry!(a_route_the_controller_pushes_on_the_legacy_name_routes_through_envoy);
