//! `sweeper serve`: the read-only dashboard ([`sweeper::serve`]) until Ctrl-C or
//! SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use tokio_util::sync::CancellationToken;

use sweeper::serve::{Dashboard, ServeConfig, Token};

use super::{open, BadInput};

#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    /// Address to listen on; anything but a loopback address needs --token.
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: SocketAddr,
    /// The token every request must carry (`?token=…` once, or a bearer header).
    #[arg(long, env = "SWEEPER_DASHBOARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The artifact store the workers write to, for command jobs' logs.
    #[arg(long, env = "SWEEPER_ARTIFACTS")]
    artifacts: Option<String>,
    /// A worker's scratch directory on this machine (running jobs' logs).
    #[arg(long, env = "SWEEPER_SCRATCH")]
    scratch: Option<PathBuf>,
}

pub(super) async fn serve(db: &str, args: ServeArgs) -> anyhow::Result<()> {
    let token = match args.token {
        Some(text) => {
            Some(Token::new(text).ok_or_else(|| BadInput("--token must not be empty".into()))?)
        }
        None => None,
    };
    let config = ServeConfig {
        bind: args.bind,
        token,
        artifacts: args.artifacts,
        scratch: args.scratch,
    };
    if !config.bind.ip().is_loopback() && config.token.is_none() {
        // Refused before the store is opened: nothing to clean up.
        return Err(
            BadInput(sweeper::serve::ServeError::TokenRequired(config.bind).to_string()).into(),
        );
    }
    let store = open(db).await?;
    let dashboard = Dashboard::bind(store, config).await?;
    // Tests and scripts read the address from this line (port 0 picks a free one).
    eprintln!("dashboard at http://{}/", dashboard.addr());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(term) => { term.recv().await; } None => std::future::pending().await } } => {}
        }
        stop.cancel();
    });
    dashboard.serve(shutdown).await?;
    Ok(())
}
