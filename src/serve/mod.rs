//! `sweeper serve`: a read-only web dashboard over the store (SQLite or Postgres).
//!
//! Pages are rendered on the server ([`pages`], maud); the figures are the `plot`
//! module's, embedded as SVG; the little script in `app.js` (embedded in the binary)
//! only re-fetches the parts of a page marked live and swaps them in. Every route is
//! a GET: nothing here writes to the store.
//!
//! Binding anywhere but a loopback address takes a token ([`access`]): a dashboard
//! shows parameters, hosts and logs, which a network should not read unasked.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::store::Store;

mod access;
pub mod bench;
mod pages;
mod routes;

pub use access::Token;

/// How the dashboard is served.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub bind: SocketAddr,
    /// Required for a non-loopback `bind`; when set, every request must carry it.
    pub token: Option<Token>,
    /// The artifact store the workers write to, for the jobs' logs (as `worker
    /// --artifacts` takes it); none: pages say where to find logs instead.
    pub artifacts: Option<String>,
    /// A worker's scratch directory on this machine, where a running job's log is
    /// before it reaches the artifact store.
    pub scratch: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to serve on {0} without a token: anyone who reaches it could read the \
         store; pass --token (or SWEEPER_DASHBOARD_TOKEN), or bind 127.0.0.1"
    )]
    TokenRequired(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the dashboard stopped: {0}")]
    Serve(std::io::Error),
}

/// What every handler reads.
pub(crate) struct App {
    pub store: Store,
    pub config: ServeConfig,
}

/// A bound dashboard, before it serves.
pub struct Dashboard {
    listener: TcpListener,
    addr: SocketAddr,
    app: Arc<App>,
}

impl Dashboard {
    /// Checks the token policy, then binds (port 0: any free port).
    pub async fn bind(store: Store, config: ServeConfig) -> Result<Dashboard, ServeError> {
        let addr = config.bind;
        if !addr.ip().is_loopback() && config.token.is_none() {
            return Err(ServeError::TokenRequired(addr));
        }
        let bind_error = |source| ServeError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        Ok(Dashboard {
            listener,
            addr,
            app: Arc::new(App { store, config }),
        })
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        let app = router(Arc::clone(&self.app));
        axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .map_err(ServeError::Serve)
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(routes::sweeps))
        .route("/progress-all", get(routes::progress_all))
        .route("/sweeps/{name}", get(routes::sweep))
        .route("/sweeps/{name}/progress", get(routes::sweep_progress))
        .route("/sweeps/{name}/report", get(routes::sweep_report))
        .route("/jobs/{id}", get(routes::job))
        .route("/jobs/{id}/charts", get(routes::job_charts))
        .route("/workers", get(routes::workers))
        .route("/app.js", get(routes::script))
        .route("/app.css", get(routes::style))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            access::require_token,
        ))
        .with_state(app)
}
