use clap::Parser;
use sandgate_resolver::config::{Cli, Command, LogFormat};

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => {
            init_logs(args.log_format);
            sandgate_resolver::serve::serve(*args).await
        }
        Command::Ctl(args) => sandgate_resolver::ctl::run(args)
            .await
            .map(|out| println!("{out}")),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("sandgate-resolver: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
