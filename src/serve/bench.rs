//! `sweeper bench serve`: the dashboard on a large store. It fills a fresh store with
//! `jobs` finished jobs and `metrics_per_job` metric rows each (by default 100,000
//! and 100: ten million rows), serves it in-process and times each page from the
//! request to the first byte of the answer, and to its last. Each request gets a new
//! connection, so nothing is cached between them but the database's own pages.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Dashboard, ServeConfig};
use crate::store::bench::fill_dashboard_store;
use crate::store::table::Table;
use crate::store::Store;

/// What `sweeper bench serve` runs.
#[derive(Debug, Clone)]
pub struct ServeBench {
    pub jobs: usize,
    pub metrics_per_job: usize,
    /// Requests per page; the table gives their median and slowest.
    pub requests: usize,
    /// A Postgres database to fill instead of a new SQLite file.
    pub postgres: Option<String>,
}

/// One page's timings in milliseconds: (first byte, whole answer), per request.
async fn time_page(addr: std::net::SocketAddr, path: &str) -> std::io::Result<(f64, f64, u16)> {
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).await?;
    let first_byte = started.elapsed().as_secs_f64() * 1000.0;
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await?;
    let whole = started.elapsed().as_secs_f64() * 1000.0;
    let head = String::from_utf8_lossy(&rest[..rest.len().min(20)]).into_owned();
    // "HTTP/1.1 200 OK": the status follows the first byte's "H".
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((first_byte, whole, status))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Fills the store, serves it and returns one row per page: its target, the median
/// and slowest time to first byte, the median time to the whole answer.
pub async fn run_serve_bench(bench: &ServeBench) -> anyhow::Result<Table> {
    let sqlite = std::env::temp_dir().join(format!("sweeper-serve-bench-{}.db", Uuid::now_v7()));
    let url = match &bench.postgres {
        Some(url) => url.clone(),
        None => format!("sqlite://{}", sqlite.display()),
    };
    let ran = serve_bench(bench, &url).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", sqlite.display()));
    }
    ran
}

async fn serve_bench(bench: &ServeBench, url: &str) -> anyhow::Result<Table> {
    let store = Store::open(url).await?;
    let filling = Instant::now();
    let (sweep, job) = fill_dashboard_store(&store, bench.jobs, bench.metrics_per_job).await?;
    eprintln!(
        "filled {} jobs and {} metric rows in {:.1} s",
        bench.jobs,
        bench.jobs * bench.metrics_per_job,
        filling.elapsed().as_secs_f64()
    );
    let config = ServeConfig {
        bind: "127.0.0.1:0".parse()?,
        token: None,
        artifacts: None,
        scratch: None,
    };
    let dashboard = Dashboard::bind(store.clone(), config).await?;
    let addr = dashboard.addr();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(dashboard.serve(shutdown.clone()));
    let pages = [
        ("sweeps", "/".to_owned(), Some(200.0)),
        ("sweep", format!("/sweeps/{sweep}"), Some(200.0)),
        ("job", format!("/jobs/{job}"), Some(50.0)),
        (
            "job curves (live part)",
            format!("/jobs/{job}/charts"),
            None,
        ),
        (
            "sweep progress (live part)",
            format!("/sweeps/{sweep}/progress"),
            None,
        ),
        (
            "sweep report (loaded after the page)",
            format!("/sweeps/{sweep}/report"),
            None,
        ),
    ];
    let mut table = Table::new([
        "page",
        "target first byte ms",
        "median first byte ms",
        "slowest first byte ms",
        "median whole ms",
        "status",
    ]);
    for (name, path, target) in pages {
        let (mut first, mut whole, mut status) = (Vec::new(), Vec::new(), 0);
        // One request warms the database's cache; it is not counted.
        time_page(addr, &path).await?;
        for _ in 0..bench.requests.max(1) {
            let (f, w, s) = time_page(addr, &path).await?;
            first.push(f);
            whole.push(w);
            status = s;
        }
        let slowest = first.iter().copied().fold(0.0, f64::max);
        let round = |ms: f64| (ms * 10.0).round() / 10.0;
        table.push(vec![
            json!(name),
            json!(target),
            json!(round(median(&mut first))),
            json!(round(slowest)),
            json!(round(median(&mut whole))),
            json!(status),
        ]);
    }
    for (name, plan) in crate::store::bench::job_page_plans(&store).await? {
        eprintln!("plan of the {name} read: {plan}");
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    if bench.postgres.is_some() {
        // A SQLite file is removed whole; deleting ten million rows one job at a
        // time would take longer than the benchmark.
        store.delete_sweep(&sweep).await?;
    }
    store.close().await;
    Ok(table)
}
