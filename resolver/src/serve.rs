//! `sandgate-resolver serve`: builds the shared state from the configuration, starts the sources
//! (Pod informer or inventory, key Secrets and files, peer clusters), the background tasks (route sweeper,
//! activity seeding and GC) and the three servers, and shuts them down on SIGTERM/SIGINT.
//!
//! Owns wiring and lifecycle only; every rule lives in the module that owns it. [`run`] is the
//! same wiring for a host that embeds the gateway (the native entry, inside Envoy): it hands the
//! running [`Gateway`] to the host and stops when the host says, never on a signal.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::transport::server::TcpIncoming;

use crate::activity::ActivityTracker;
use crate::cache::RouteCache;
use crate::clusters::dns::DnsCache;
use crate::clusters::{ClusterStore, Source as ClusterSource};
use crate::config::{PodSource, ServeArgs};
use crate::decide::Gateway;
use crate::guard::BearerGuard;
use crate::hold::Holds;
use crate::keys::internal::InternalTokens;
use crate::keys::limit::FailureLimiter;
use crate::keys::{KeySet, KeyStore, Source, digest, file};
use crate::metrics::Metrics;
use crate::pods::{Phase, PodStore, inventory};
use crate::tokens::{Source as TokenSource, TokenKeys};
use crate::{accesslog, callout, clusters, control, extproc, http, pods, reload};

/// The standalone resolver: [`run`] until SIGTERM or SIGINT.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    run(args, shutdown_signal(), |_| {}).await
}

/// What an embedding host gets once everything is wired: the decision path, the grammar the
/// flags configure, and whether the gateway is ready (the Pod store synced, the watched
/// Secrets read), as the HTTP port's /readyz answers it.
pub struct Started {
    pub gateway: Arc<Gateway>,
    pub grammar: sandgate_core::RequestGrammar,
    pub ready: http::Readiness,
}

/// Builds the gateway from `args`, starts its sources, tasks and listeners, hands it to
/// `started`, and serves until `shutdown` completes (or a server fails).
pub async fn run(
    args: ServeArgs,
    shutdown: impl std::future::Future<Output = ()>,
    started: impl FnOnce(Started),
) -> anyhow::Result<()> {
    let grammar = args
        .request_grammar()
        .map_err(|e| anyhow::anyhow!("ext_proc request grammar: {e}"))?;
    let metrics = Arc::new(Metrics::default());
    let keys = Arc::new(KeyStore::new(args.insecure_disable_auth));
    let routes = Arc::new(RouteCache::new(args.route_ttl, args.route_cache_shards));
    let pods = Arc::new(PodStore::default());
    let activity = Arc::new(ActivityTracker::default());
    let pod_keys = args.pod_keys();
    let mut tasks = JoinSet::new();

    if args.insecure_disable_auth {
        tracing::warn!("authentication is DISABLED: every request is admitted as admin");
    }
    keys.set_source(
        Source::Flags,
        KeySet {
            admins: args
                .admin_keys
                .iter()
                .filter(|k| !k.is_empty())
                .map(|k| digest(k))
                .collect(),
            tenants: Vec::new(),
        },
    );
    if let Some(path) = &args.admin_key_file {
        watch_file(&mut tasks, path, args.reload_interval, {
            let keys = Arc::clone(&keys);
            move |text| {
                keys.set_source(Source::AdminFile, file::parse_admin_file(text));
                Ok(())
            }
        })?;
    }
    if let Some(path) = &args.keys_file {
        watch_file(&mut tasks, path, args.reload_interval, {
            let keys = Arc::clone(&keys);
            move |text| {
                keys.set_source(Source::KeysFile, file::parse_keys_file(text)?);
                Ok(())
            }
        })?;
    }

    // The gRPC port's credential: closed (every call refused) until a token is configured.
    let internal = Arc::new(InternalTokens::new(&args.internal_tokens));
    if let Some(path) = &args.internal_token_file {
        watch_file(&mut tasks, path, args.reload_interval, {
            let internal = Arc::clone(&internal);
            move |text| {
                internal.set_file(file::parse_key_lines(text));
                Ok(())
            }
        })?;
    }
    // go-compat only: no token configured at all (a configured file that is empty still
    // closes the port) opens it, as the Go gateway's was.
    let grpc_open =
        args.grpc_open_without_token && args.internal_token_file.is_none() && internal.count() == 0;
    if grpc_open {
        tracing::warn!(
            listen = %args.grpc_listen,
            "the gRPC port is OPEN: no internal token is configured (SANDGATE_INTERNAL_TOKEN, \
             SANDGATE_INTERNAL_TOKEN_FILE), so, as in the Go gateway, anyone who reaches it \
             gets decisions and ext_proc answers without one; configure a token and send it \
             from Envoy to close it"
        );
    } else if internal.count() == 0 {
        tracing::warn!(
            listen = %args.grpc_listen,
            "no internal token (--internal-token, --internal-token-file): every call to the \
             gRPC port is refused, so Envoy gets no decisions"
        );
    }

    // One Kubernetes client for everything watched there.
    let token_keys_secret = args.token_keys_secret()?;
    let kube = if args.pod_source == PodSource::Kube
        || args.clusters_configmap.is_some()
        || token_keys_secret.is_some()
    {
        Some(kube_client(args.kubeconfig.as_deref()).await?)
    } else {
        None
    };

    let clusters = Arc::new(ClusterStore::new(
        args.cluster_id.clone(),
        Arc::clone(&metrics),
    ));
    if let Some(path) = &args.clusters_file {
        watch_file(&mut tasks, path, args.reload_interval, {
            let clusters = Arc::clone(&clusters);
            move |text| {
                clusters
                    .apply(ClusterSource::File, text)
                    .map_err(anyhow::Error::msg)?;
                Ok(())
            }
        })?;
    }
    if let (Some(name), Some(client)) = (&args.clusters_configmap, &kube) {
        let namespace = args
            .clusters_configmap_namespace
            .clone()
            .or_else(|| args.namespace.clone())
            .unwrap_or_else(|| "default".into());
        tasks.spawn(clusters::configmap::run(
            client.clone(),
            namespace,
            name.clone(),
            Arc::clone(&clusters),
        ));
    }

    // Readiness: the Pod store's first sync (and no loss of it longer than the grace), and the
    // key Secrets' first sync when watched.
    let (keys_synced_tx, keys_synced) = watch::channel(true);
    match args.pod_source {
        PodSource::Inventory => {
            let path = args
                .inventory
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("--pod-source inventory needs --inventory FILE"))?;
            watch_file(&mut tasks, path, args.reload_interval, {
                let (pods, metrics) = (Arc::clone(&pods), Arc::clone(&metrics));
                move |text| {
                    let n = inventory::load(text, &pod_keys, &pods)?;
                    metrics.set_pods(n);
                    Ok(())
                }
            })?;
        }
        PodSource::Kube => {
            let client = kube
                .clone()
                .ok_or_else(|| anyhow::anyhow!("no Kubernetes client"))?;
            let scope = pods::kube::WatchScope {
                namespace: args.namespace.clone(),
                label_selector: args.pod_selector(),
            };
            if args.write_last_active {
                tasks.spawn(
                    pods::annotate::Annotator {
                        client: client.clone(),
                        pods: Arc::clone(&pods),
                        activity: Arc::clone(&activity),
                        metrics: Arc::clone(&metrics),
                        annotation: pod_keys.last_active_annotation.clone(),
                        every: args.last_active_interval,
                        max_writes: args.last_active_max_writes,
                    }
                    .run(),
                );
            }
            tasks.spawn(pods::kube::run(
                client.clone(),
                scope,
                Arc::clone(&pods),
                pod_keys,
                Arc::clone(&metrics),
            ));
            if args.key_secrets {
                keys_synced_tx.send_replace(false);
                tasks.spawn(crate::keys::secrets::run(
                    client,
                    args.key_secret_namespace.clone(),
                    args.key_secret_selector.clone(),
                    Arc::clone(&keys),
                    Arc::clone(&metrics),
                    keys_synced_tx,
                ));
            }
        }
    }
    // Access-token signing keys: a file and/or a Secret; readiness waits for the Secret's.
    let tokens = Arc::new(TokenKeys::new(args.token_lifetimes()));
    if let Some(path) = &args.token_keys_file {
        watch_file(&mut tasks, path, args.reload_interval, {
            let tokens = Arc::clone(&tokens);
            move |text| {
                tokens.set_source(TokenSource::File, crate::tokens::file::parse(text)?);
                Ok(())
            }
        })?;
    }
    let (token_keys_synced_tx, token_keys_synced) = watch::channel(true);
    if let Some((namespace, name)) = token_keys_secret {
        let client = kube
            .clone()
            .ok_or_else(|| anyhow::anyhow!("no Kubernetes client"))?;
        token_keys_synced_tx.send_replace(false);
        tasks.spawn(crate::tokens::secret::run(
            client,
            namespace,
            name,
            Arc::clone(&tokens),
            Arc::clone(&metrics),
            token_keys_synced_tx,
        ));
    }

    // Wakes for controllers that do not speak gRPC.
    let wake_webhook = args.wake_webhook.clone().map(|url| {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tasks.spawn(crate::hold::webhook(url, rx, Arc::clone(&metrics)));
        tx
    });

    let (admins, tenants) = keys.counts();
    tracing::info!(
        admins,
        tenants,
        internal_tokens = internal.count(),
        token_signing_keys = tokens.count(),
        "keys loaded from flags and files"
    );

    tasks.spawn(Arc::clone(&routes).run_sweeper(args.sweep_interval));
    tasks.spawn(activity_upkeep(
        Arc::clone(&pods),
        Arc::clone(&activity),
        args.activity_gc_interval,
    ));

    let gateway = Arc::new(Gateway {
        keys: Arc::clone(&keys),
        routes: Arc::clone(&routes),
        pods: Arc::clone(&pods),
        activity: Arc::clone(&activity),
        metrics: Arc::clone(&metrics),
        clusters: Arc::clone(&clusters),
        dns: Arc::new(DnsCache::system(args.peer_dns_ttl, args.peer_dns_timeout)),
        key_failures: Arc::new(FailureLimiter::new(
            args.key_failure_limit,
            args.key_failure_window,
        )),
        tokens,
        holds: Arc::new(Holds::new(
            args.hold_config(),
            wake_webhook,
            Arc::clone(&metrics),
        )),
        config: args.decide_config(),
    });
    let ready: http::Readiness = {
        let pods = Arc::clone(&pods);
        let grace = args.sync_loss_grace;
        Arc::new(move || pods.ready(grace) && *keys_synced.borrow() && *token_keys_synced.borrow())
    };
    let http_state = http::HttpState {
        gateway: Arc::clone(&gateway),
        grammar: Arc::new(grammar.clone()),
        ready: Arc::clone(&ready),
    };
    let embedded = Started {
        gateway: Arc::clone(&gateway),
        grammar: grammar.clone(),
        ready,
    };

    let grpc_listener = bind(args.grpc_listen, "grpc").await?;
    let control_listener = bind(args.control_listen, "control").await?;
    let http_listener = bind(args.http_listen, "http").await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let mut servers: JoinSet<anyhow::Result<()>> = JoinSet::new();
    // Envoy's `resolver` cluster carries the per-request callout (wasm filter), the ext_proc
    // entry, and the periodic access-log reports of long-lived streams: every call on this
    // listener, whatever its service, needs the internal token.
    let grpc_guard = if grpc_open {
        BearerGuard::open("grpc", Arc::clone(&metrics))
    } else {
        BearerGuard::new("grpc", internal, Arc::clone(&metrics))
    };
    let grpc = tonic::transport::Server::builder()
        .layer(tonic::service::InterceptorLayer::new(grpc_guard))
        .add_service(callout::server(Arc::clone(&gateway)))
        .add_service(extproc::server(Arc::clone(&gateway), grammar))
        .add_service(accesslog::server(
            Arc::clone(&pods),
            Arc::clone(&activity),
            Arc::clone(&metrics),
        ))
        .serve_with_incoming_shutdown(incoming(grpc_listener), stopped());
    servers.spawn(async move { Ok(grpc.await?) });
    // One ControlPlaneService under two names: ours and the Go gateway's (control::Legacy).
    let control_plane = control::server(gateway);
    let control = tonic::transport::Server::builder()
        .add_service(control::Legacy(control_plane.clone()))
        .add_service(control_plane)
        .serve_with_incoming_shutdown(incoming(control_listener), stopped());
    servers.spawn(async move { Ok(control.await?) });
    let http_server =
        axum::serve(http_listener, http::router(http_state)).with_graceful_shutdown(stopped());
    servers.spawn(async move { Ok(http_server.await?) });
    tracing::info!("resolver serving");
    started(embedded);

    let result = tokio::select! {
        _ = shutdown => {
            tracing::info!("shutting down");
            Ok(())
        }
        Some(ended) = servers.join_next() => match ended {
            Ok(Ok(())) => Err(anyhow::anyhow!("a server stopped unexpectedly")),
            Ok(Err(e)) => Err(anyhow::anyhow!("server failed: {e}")),
            Err(e) => Err(anyhow::anyhow!("server task failed: {e}")),
        },
    };
    stop_tx.send_replace(true);
    tasks.abort_all();
    // In-flight RPCs get a moment to finish; a stuck client does not hold the process.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while servers.join_next().await.is_some() {}
    })
    .await;
    result
}

/// A bound listener as tonic's incoming stream. TCP_NODELAY matters: tonic sets it only for
/// addresses it binds itself, and without it Nagle's algorithm holds back the small replies of
/// every callout (measured: the resolver behind a do-nothing filter ran at 0.85 of a
/// do-nothing server until this was set).
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Loads a file now (start-up fails on a bad one) and reloads it in the background.
fn watch_file(
    tasks: &mut JoinSet<()>,
    path: &Path,
    every: Duration,
    mut apply: impl FnMut(&str) -> anyhow::Result<()> + Send + 'static,
) -> anyhow::Result<()> {
    let initial = reload::read(path)?;
    apply(&initial).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    tasks.spawn(reload::watch(path.to_path_buf(), every, initial, apply));
    Ok(())
}

async fn bind(addr: std::net::SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for {what} on {addr}: {e}"))?;
    tracing::info!(%addr, what, "listening");
    Ok(listener)
}

async fn kube_client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(kube::Client::try_from(config)?)
}

/// Seeds activity from the last-active annotations once the Pod store has synced (so a restart
/// loses no history), then forgets sandboxes without a Running Pod on every tick.
async fn activity_upkeep(pods: Arc<PodStore>, activity: Arc<ActivityTracker>, every: Duration) {
    pods.wait_synced().await;
    let seeded = pods::annotate::absorb(&pods, &activity);
    tracing::info!(seeded, "activity seeded from pod annotations");
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let removed = activity.retain(|id| {
            pods.by_sandbox(id)
                .iter()
                .any(|p| p.phase == Phase::Running)
        });
        if removed > 0 {
            tracing::debug!(
                removed,
                "forgot activity of sandboxes without a running pod"
            );
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            // Without signal handlers the process still stops on the default SIGTERM action.
            std::future::pending::<()>().await
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn accepted_connections_do_not_wait_for_nagle() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut accepted = incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let stream = accepted.next().await.unwrap().unwrap();
        assert!(stream.nodelay().unwrap());
    }
}
