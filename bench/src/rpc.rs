//! `sandgate-bench rpc-load`: gRPC calls against the resolver over one warmed HTTP/2
//! connection, from a separate process (pinned to the other core by the driver), so the
//! resolver's own core does nothing but serve.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use sandgate_proto::ctrlplane::v1::PushRouteRequest;
use sandgate_proto::ctrlplane::v1::control_plane_service_client::ControlPlaneServiceClient;
use sandgate_proto::resolver::v1::resolver_client::ResolverClient;
use sandgate_proto::resolver::v1::{ResolveRequest, resolve_reply};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Resolve with a tenant key for a routable sandbox (every answer must be a Route).
    Resolve,
    /// ControlPlaneService/PushRoute with the admin key, a fresh sandbox id per call.
    Push,
}

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    #[arg(long, value_enum)]
    pub kind: Kind,
    /// The resolver's Resolve (kind resolve) or control (kind push) address.
    #[arg(long)]
    pub target: String,
    #[arg(long, default_value_t = 1.0)]
    pub warmup_secs: f64,
    #[arg(long, default_value_t = 5.0)]
    pub secs: f64,
    /// Calls in flight at once, all on one connection.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Tenant key (resolve) or admin key (push).
    #[arg(long)]
    pub key: String,
    /// The resolver's internal token, sent with every Resolve (empty: none).
    #[arg(long, default_value = "")]
    pub internal_token: String,
    #[arg(long, default_value = "bench")]
    pub sandbox: String,
    #[arg(long, default_value_t = 8080)]
    pub port: u32,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct LoadResult {
    pub calls: u64,
    pub secs: f64,
    pub per_sec: f64,
}

/// One call of `kind`; an answer that is not the expected success is an error, so a
/// misconfigured run cannot report the speed of refusals.
async fn call(channel: &Channel, args: &LoadArgs, n: u64) -> anyhow::Result<()> {
    match args.kind {
        Kind::Resolve => {
            let mut request = tonic::Request::new(ResolveRequest {
                api_key: args.key.clone(),
                sandbox_id: args.sandbox.clone(),
                port: args.port,
                forwarded: false,
                client_address: String::new(),
                ..Default::default()
            });
            if !args.internal_token.is_empty() {
                request.metadata_mut().insert(
                    "authorization",
                    format!("Bearer {}", args.internal_token).parse()?,
                );
            }
            let reply = ResolverClient::new(channel.clone())
                .resolve(request)
                .await?
                .into_inner();
            match reply.outcome {
                Some(resolve_reply::Outcome::Route(_)) => Ok(()),
                other => anyhow::bail!("resolve did not route: {other:?}"),
            }
        }
        Kind::Push => {
            let mut request = tonic::Request::new(PushRouteRequest {
                sandbox_id: format!("push-{n}"),
                namespace: "bench".into(),
                pod_name: format!("pod-{}", n % 1024),
            });
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {}", args.key).parse()?);
            ControlPlaneServiceClient::new(channel.clone())
                .push_route(request)
                .await?;
            Ok(())
        }
    }
}

/// Runs `concurrency` callers for `secs` and counts completed calls; the first error aborts.
async fn phase(
    channel: &Channel,
    args: &Arc<LoadArgs>,
    secs: f64,
    seq: &Arc<AtomicU64>,
) -> anyhow::Result<u64> {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (channel, args, done, seq) = (
            channel.clone(),
            Arc::clone(args),
            Arc::clone(&done),
            Arc::clone(seq),
        );
        callers.spawn(async move {
            while Instant::now() < until {
                call(&channel, &args, seq.fetch_add(1, Ordering::Relaxed)).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = callers.join_next().await {
        r??;
    }
    Ok(done.load(Ordering::Relaxed))
}

pub async fn run(args: LoadArgs) -> anyhow::Result<LoadResult> {
    let channel = Channel::from_shared(format!("http://{}", args.target))?
        .connect()
        .await
        .with_context(|| format!("connecting {}", args.target))?;
    let (args, seq) = (Arc::new(args), Arc::new(AtomicU64::new(0)));
    phase(&channel, &args, args.warmup_secs, &seq).await?;
    let started = Instant::now();
    let calls = phase(&channel, &args, args.secs, &seq).await?;
    let secs = started.elapsed().as_secs_f64();
    Ok(LoadResult {
        calls,
        secs,
        per_sec: calls as f64 / secs,
    })
}
