//! `sandgate-bench`: how fast the gateway is, against the floor it stands on.
//!
//! `full` / `smoke` drive everything and write `report.json` + `report.md`: HTTP through
//! Envoy (one worker) for ten configurations in interleaved rounds — plain Envoy, a do-nothing
//! wasm filter (alone and making a cache hit's host calls), the native module doing nothing,
//! do-nothing wasm and ext_proc callouts, and sandgate's three entries —, the cache-related ones
//! and the native ones again paired with a baseline (the do-nothing wasm filter, or plain
//! Envoy; CPU per request, both loaded at once; the cached entry with the tenant key and with
//! an access token), the resolver alone on one core, informer scale against the Kubernetes
//! API emulator, and wake on traffic (a held request's release once its Pod runs, through the
//! wasm and ext_proc entries, and the resolver's memory per held request). The criterion
//! numbers (`cargo bench -p sandgate-resolver` and `-p sandgate-bench --bench native`, run by
//! `just bench` first) are read from target/criterion. `null` and `rpc-load` are the helper
//! processes the driver starts.

mod drive;
mod null;
mod report;
mod rpc;
mod wake;
mod wrk;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "sandgate benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The full run (minutes): report in target/bench/.
    Full(drive::RunArgs),
    /// Every part for a second or so, so the bench code cannot rot: report in target/bench-smoke/.
    Smoke(drive::RunArgs),
    /// The do-nothing Resolve and ext_proc servers.
    Null {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// gRPC load against a resolver; prints one JSON line.
    RpcLoad(rpc::LoadArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Full(args) => {
            drive::run(drive::Plan::full(), args, PathBuf::from("target/bench")).await
        }
        Cmd::Smoke(args) => {
            drive::run(
                drive::Plan::smoke(),
                args,
                PathBuf::from("target/bench-smoke"),
            )
            .await
        }
        Cmd::Null { listen } => null::serve(listen).await,
        Cmd::RpcLoad(args) => {
            let result = rpc::run(args).await?;
            println!("{}", serde_json::to_string(&result)?);
            Ok(())
        }
    }
}
