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
    // Under the Go gateway's name (`envoyextproc`) this is `go-compat` without the word.
    let cli = Cli::parse_from(sandgate_resolver::compat::argv(std::env::args_os()));
    let result = match cli.command {
        Command::Serve(args) => {
            init_logs(args.log_format);
            sandgate_resolver::serve::serve(*args).await
        }
        Command::GoCompat(go) => match go.into_plan() {
            Ok(plan) => {
                init_logs(plan.serve.log_format);
                plan.announce();
                sandgate_resolver::serve::serve(plan.serve).await
            }
            Err(error) => Err(error),
        },
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
