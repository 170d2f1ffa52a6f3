//! `sandgate-echo --serve demo-a=127.0.0.11:8080 [--serve ...]`: the demo sandboxes, each an
//! echo server on its own address (see `sandgate_tests::echo` for what they answer).

use clap::Parser;

#[derive(Parser)]
#[command(about = "Demo sandboxes: echo servers that report what reached them")]
struct Cli {
    /// `<sandbox-id>=<ip:port>`; repeat for several sandboxes.
    #[arg(
        long = "serve",
        env = "SANDGATE_ECHO_SERVE",
        value_delimiter = ',',
        required = true
    )]
    serve: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut tasks = tokio::task::JoinSet::new();
    for spec in cli.serve {
        let (id, addr) = spec
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--serve {spec:?}: expected <sandbox-id>=<ip:port>"))?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("{id}: cannot listen on {addr}: {e}"))?;
        println!("sandbox {id} listening on {}", listener.local_addr()?);
        tasks.spawn(sandgate_tests::echo::serve(listener, id.to_string()));
    }
    tokio::select! {
        Some(done) = tasks.join_next() => done??,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
