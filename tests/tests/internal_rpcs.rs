//! The resolver's gRPC port (`--grpc-listen`) serves only its own Envoy: every call — Resolve,
//! WatchGenerations and ReportHits (the wasm filter's), ext_proc's Process stream, the
//! activity access log — needs `authorization: Bearer <internal token>`. Called here with
//! stock tonic clients, as any local process could: without the token, or with another one,
//! each is UNAUTHENTICATED and changes nothing (no activity, no decision, no watcher); with it,
//! each works. A resolver with no token refuses them all; tokens from a file rotate. Envoy
//! sends the shipped token (the gateway_* suites run the shipped configurations as they are);
//! an Envoy with another token than the resolver's gets 503, on the wasm and ext_proc entries (the native entry makes no call).

use std::path::Path;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};
use envoy_types::pb::envoy::data::accesslog::v3::{AccessLogCommon, HttpAccessLogEntry};
use envoy_types::pb::envoy::service::accesslog::v3::StreamAccessLogsMessage;
use envoy_types::pb::envoy::service::accesslog::v3::access_log_service_client::AccessLogServiceClient;
use envoy_types::pb::envoy::service::accesslog::v3::stream_access_logs_message::{
    HttpAccessLogEntries, LogEntries,
};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use envoy_types::pb::envoy::service::ext_proc::v3::processing_response::Response as Reply;
use sandgate_proto::resolver::v1::resolver_client::ResolverClient;
use sandgate_proto::resolver::v1::{
    HitReport, ResolveRequest, SandboxHits, WatchGenerationsRequest, resolve_reply,
};
use sandgate_tests::envoy::SHIPPED_INTERNAL_TOKEN;
use sandgate_tests::every_entry;
use sandgate_tests::gateway::{Entry, Gateway};
use sandgate_tests::process::{Resolver, eventually};
use sandgate_tests::stack::{ACME_KEY, Control};
use tonic::transport::Channel;
use tonic::{Code, Status};

const ADMIN_KEY: &str = "internal-rpcs-admin-key";
const TENANT_KEY: &str = "internal-rpcs-acme-key";
const WRONG_TOKEN: &str = "wrong-internal-token-0123456789";

/// One sandbox per RPC, so each one's effect on activity is seen on its own.
const RESOLVED: &str = "sb-resolve";
const HIT: &str = "sb-hits";
const STREAMED: (&str, &str) = ("sb-stream", "10.77.0.3");
const PROCESSED: &str = "sb-extproc";

const INVENTORY: &str = "
- {name: p-resolve, namespace: acme, ip: 10.77.0.1, sandboxId: sb-resolve, phase: running}
- {name: p-hits, namespace: acme, ip: 10.77.0.2, sandboxId: sb-hits, phase: running}
- {name: p-stream, namespace: acme, ip: 10.77.0.3, sandboxId: sb-stream, phase: running}
- {name: p-extproc, namespace: acme, ip: 10.77.0.4, sandboxId: sb-extproc, phase: running}
";

/// A ready resolver on the inventory above, with `token` as its internal token (`None`:
/// none) and any `extra` flags.
async fn start(dir: &Path, token: Option<&str>, extra: &[String]) -> Resolver {
    std::fs::write(dir.join("pods.yaml"), INVENTORY).unwrap();
    std::fs::write(
        dir.join("keys.yaml"),
        format!("tenants:\n  - key: {TENANT_KEY}\n    namespace: acme\n"),
    )
    .unwrap();
    let mut args = vec![
        "--pod-source=inventory".to_string(),
        format!("--inventory={}", dir.join("pods.yaml").display()),
        format!("--keys-file={}", dir.join("keys.yaml").display()),
        format!("--admin-key={ADMIN_KEY}"),
        "--reload-interval=100ms".to_string(),
    ];
    args.extend_from_slice(extra);
    let r = Resolver::start_with_token(args, token).await;
    r.wait_ready().await;
    r
}

/// `msg` with `authorization: Bearer <token>`, or with no authorization at all.
fn with<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

async fn channel(r: &Resolver) -> Channel {
    Channel::from_shared(format!("http://{}", r.grpc))
        .unwrap()
        .connect()
        .await
        .expect("connect to the gRPC port")
}

/// The five internal RPCs, each with `token`, each on the sandbox kept for it: `Ok` when it
/// was served (and did what it does), the refusal otherwise.
struct Calls {
    channel: Channel,
}

impl Calls {
    async fn resolve(&self, token: Option<&str>) -> Result<(), Status> {
        let reply = ResolverClient::new(self.channel.clone())
            .resolve(with(
                ResolveRequest {
                    api_key: TENANT_KEY.into(),
                    sandbox_id: RESOLVED.into(),
                    port: 8080,
                    ..Default::default()
                },
                token,
            ))
            .await?
            .into_inner();
        match reply.outcome {
            Some(resolve_reply::Outcome::Route(r)) => {
                assert_eq!(r.destination, "10.77.0.1:8080");
                Ok(())
            }
            other => panic!("Resolve with the token should route: {other:?}"),
        }
    }

    async fn report_hits(&self, token: Option<&str>) -> Result<(), Status> {
        ResolverClient::new(self.channel.clone())
            .report_hits(with(
                HitReport {
                    hits: vec![SandboxHits {
                        sandbox_id: HIT.into(),
                        count: 7,
                    }],
                },
                token,
            ))
            .await
            .map(|_| ())
    }

    async fn watch_generations(&self, token: Option<&str>) -> Result<(), Status> {
        let mut stream = ResolverClient::new(self.channel.clone())
            .watch_generations(with(WatchGenerationsRequest {}, token))
            .await?
            .into_inner();
        let first = tokio::time::timeout(Duration::from_secs(5), stream.message())
            .await
            .expect("the first generations arrive at once")?
            .expect("a first message");
        assert!(first.reset, "the first message carries every bucket");
        assert!(!first.bucket.is_empty());
        Ok(())
    }

    async fn process(&self, token: Option<&str>) -> Result<(), Status> {
        let headers = [
            (":method", "GET"),
            (":path", "/sandboxes/sb-extproc/8080/x"),
            ("x-api-key", TENANT_KEY),
        ];
        let message = sandgate_tests::extproc::request_headers(&headers);
        let mut replies = ExternalProcessorClient::new(self.channel.clone())
            .process(with(futures::stream::iter([message]), token))
            .await?
            .into_inner();
        let reply = tokio::time::timeout(Duration::from_secs(5), replies.message())
            .await
            .expect("ext_proc answers at once")?
            .expect("a reply to the request headers");
        match reply.response {
            Some(Reply::RequestHeaders(_)) => Ok(()),
            other => panic!("ext_proc with the token should route: {other:?}"),
        }
    }

    async fn access_log(&self, token: Option<&str>, stream_id: &str) -> Result<(), Status> {
        let (_, pod_ip) = STREAMED;
        let entry = HttpAccessLogEntry {
            common_properties: Some(AccessLogCommon {
                stream_id: stream_id.into(),
                downstream_wire_bytes_received: 4096,
                downstream_wire_bytes_sent: 1024,
                upstream_remote_address: Some(Address {
                    address: Some(AddressKind::SocketAddress(SocketAddress {
                        address: pod_ip.into(),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let message = StreamAccessLogsMessage {
            log_entries: Some(LogEntries::HttpLogs(HttpAccessLogEntries {
                log_entry: vec![entry],
            })),
            ..Default::default()
        };
        AccessLogServiceClient::new(self.channel.clone())
            .stream_access_logs(with(futures::stream::iter([message]), token))
            .await
            .map(|_| ())
    }

    /// Every call with `token`, each asserted refused as UNAUTHENTICATED.
    async fn all_refused(&self, token: Option<&str>) {
        let what = format!("with {token:?}");
        let results = [
            ("Resolve", self.resolve(token).await),
            ("ReportHits", self.report_hits(token).await),
            ("WatchGenerations", self.watch_generations(token).await),
            ("ext_proc Process", self.process(token).await),
            (
                "StreamAccessLogs",
                self.access_log(token, "refused-stream").await,
            ),
        ];
        for (rpc, result) in results {
            match result {
                Err(status) => assert_eq!(
                    status.code(),
                    Code::Unauthenticated,
                    "{rpc} {what}: {status:?}"
                ),
                Ok(()) => panic!("{rpc} {what} was served"),
            }
        }
    }
}

async fn last_active(r: &Resolver) -> std::collections::BTreeMap<String, String> {
    Control {
        client: r.control_client().await,
        key: Some(ADMIN_KEY.into()),
    }
    .last_active()
    .await
    .expect("GetLastActive")
}

#[tokio::test]
async fn without_the_internal_token_every_internal_rpc_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), Some(SHIPPED_INTERNAL_TOKEN), &[]).await;
    let calls = Calls {
        channel: channel(&r).await,
    };

    calls.all_refused(None).await;
    calls.all_refused(Some(WRONG_TOKEN)).await;
    // Keys of other kinds are not the internal token either.
    calls.all_refused(Some(ADMIN_KEY)).await;
    calls.all_refused(Some(TENANT_KEY)).await;

    assert!(
        last_active(&r).await.is_empty(),
        "a refused call recorded activity"
    );
    for (series, want) in [
        (r#"sandgate_resolves_total{outcome="route"}"#, 0),
        ("sandgate_filter_cache_hits_total", 0),
        (r#"sandgate_stream_reports_total{result="active"}"#, 0),
        ("sandgate_generation_watchers", 0),
        (
            r#"sandgate_unauthenticated_calls_total{listener="grpc",reason="missing"}"#,
            5,
        ),
        (
            r#"sandgate_unauthenticated_calls_total{listener="grpc",reason="invalid"}"#,
            15,
        ),
    ] {
        assert_eq!(r.metric(series).await, want, "{series}");
    }
    let logs = r.logs();
    for secret in [WRONG_TOKEN, ADMIN_KEY, TENANT_KEY, SHIPPED_INTERNAL_TOKEN] {
        assert!(!logs.contains(secret), "the log shows a credential");
    }
    assert!(
        logs.contains("DEBUG") && logs.contains("gRPC call refused: no valid internal token"),
        "refusals are logged at debug:\n{logs}"
    );
    assert!(
        !logs.contains("WARN"),
        "refusals are logged at debug, not warned about:\n{logs}"
    );

    // The same calls with the token: each is served and does what it does.
    let token = Some(SHIPPED_INTERNAL_TOKEN);
    calls.resolve(token).await.expect("Resolve");
    calls.report_hits(token).await.expect("ReportHits");
    calls
        .watch_generations(token)
        .await
        .expect("WatchGenerations");
    calls.process(token).await.expect("ext_proc Process");
    calls
        .access_log(token, "served-stream")
        .await
        .expect("StreamAccessLogs");
    let active = last_active(&r).await;
    for id in [RESOLVED, HIT, STREAMED.0, PROCESSED] {
        assert!(active.contains_key(id), "{id} not active: {active:?}");
    }
    assert_eq!(
        r.metric(r#"sandgate_resolves_total{outcome="route"}"#)
            .await,
        2
    );
    assert_eq!(r.metric("sandgate_filter_cache_hits_total").await, 7);
    assert_eq!(
        r.metric(r#"sandgate_stream_reports_total{result="active"}"#)
            .await,
        1
    );

    // The internal token opens the gRPC port only, never the control plane.
    let refused = Control {
        client: r.control_client().await,
        key: Some(SHIPPED_INTERNAL_TOKEN.into()),
    }
    .last_active()
    .await
    .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_resolver_without_a_token_refuses_every_internal_rpc() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), None, &[]).await;
    let calls = Calls {
        channel: channel(&r).await,
    };
    for token in [None, Some(SHIPPED_INTERNAL_TOKEN), Some(WRONG_TOKEN)] {
        calls.all_refused(token).await;
    }
    assert!(last_active(&r).await.is_empty());
    let logs = r.logs();
    assert_eq!(
        logs.matches("no internal token").count(),
        1,
        "said once at start-up:\n{logs}"
    );
    assert!(logs.contains("WARN"), "{logs}");
}

#[tokio::test]
async fn tokens_from_a_file_are_reloaded_and_rotate_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("internal-token");
    std::fs::write(&file, "# mounted from a Secret\nold-token\n").unwrap();
    let r = start(
        dir.path(),
        None,
        &[format!("--internal-token-file={}", file.display())],
    )
    .await;
    let calls = &Calls {
        channel: channel(&r).await,
    };
    calls.report_hits(Some("old-token")).await.expect("old");
    assert_eq!(
        calls
            .report_hits(Some("new-token"))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );

    // Rotation: both for a while, then only the new one.
    std::fs::write(&file, "new-token\nold-token\n").unwrap();
    let both = eventually(Duration::from_secs(5), move || async move {
        calls.report_hits(Some("new-token")).await.is_ok()
    })
    .await;
    assert!(both, "the new token was not picked up");
    calls
        .report_hits(Some("old-token"))
        .await
        .expect("old kept");
    std::fs::write(&file, "new-token\n").unwrap();
    let retired = eventually(Duration::from_secs(5), move || async move {
        calls.report_hits(Some("old-token")).await.is_err()
    })
    .await;
    assert!(retired, "the old token still works");
    calls.report_hits(Some("new-token")).await.expect("new");
    assert!(
        !r.logs().contains("no internal token"),
        "the file had one at start-up"
    );
}

/// An Envoy that sends another token than the resolver's gets no decisions: every request is
/// the gateway's own 503, never routed undecided.
async fn an_envoy_with_another_token_gets_no_decisions(entry: Entry) {
    const RESOLVERS: &str = "not-what-envoy-sends";
    let mut gw = Gateway::start_args(entry, &[&format!("--internal-token={RESOLVERS}")]).await;
    // The harness's own calls to the resolver carry its token.
    gw.kube.resolver.internal_token = Some(RESOLVERS.into());
    let port = gw.sandbox("acme", "pod-a", "sb-a", "127.0.0.11").await;
    let r = gw
        .get(
            &format!("/sandboxes/sb-a/{port}/"),
            &[("x-api-key", ACME_KEY)],
        )
        .await;
    if !entry.resolver_process() {
        // The native entry decides in Envoy's own process: no call, no token, routed.
        assert_eq!(r.json()["sandbox"], "sb-a", "{}", r.body);
        return;
    }
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (503, Some("resolver_unavailable")),
        "{}",
        r.body
    );
    let refused = gw
        .kube
        .resolver
        .metric(r#"sandgate_unauthenticated_calls_total{listener="grpc",reason="invalid"}"#)
        .await;
    assert!(refused >= 1, "Envoy's calls were not refused");
}

every_entry!(an_envoy_with_another_token_gets_no_decisions);
