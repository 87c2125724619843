//! The `sweeper` binary: parse the command line, set up tracing, run the command
//! ([`cli::run`]), and turn an error into an exit status (2 for bad input, 1 for
//! anything else) after printing its chain.

use std::process::ExitCode;

use clap::Parser as _;

mod cli;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWEEPER_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{},sqlx=error", cli.default_log_level()))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sweeper::redact::redacted_stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "error: {}",
                sweeper::redact::redact_url(&format!("{error:#}"))
            );
            ExitCode::from(cli::exit_status(&error))
        }
    }
}
