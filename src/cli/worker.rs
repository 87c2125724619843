//! `sweeper worker`: claim and run jobs until stopped, and the signals that stop it
//! (the first asks it to finish up, the second kills the running job).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use tokio_util::sync::CancellationToken;

use sweeper::worker::{self, DeviceRequest, WorkerConfig};

use super::{open, BadInput};

#[derive(Debug, Args)]
pub(super) struct WorkerArgs {
    /// cpu, cuda:N, or auto (a GPU no other live worker of this host holds, else cpu).
    #[arg(long, default_value = "auto")]
    device: DeviceRequest,
    /// Stop after this many jobs.
    #[arg(long)]
    max_jobs: Option<u64>,
    /// Stop once no job is queued or running in the store.
    #[arg(long)]
    exit_when_idle: bool,
    /// The worker's name in `status` and `workers` (default: host-pid).
    #[arg(long)]
    name: Option<String>,
    /// The host recorded in `workers` (default: this machine's hostname); `--device
    /// auto` shares GPUs among the workers of one host.
    #[arg(long, env = "SWEEPER_HOST")]
    host: Option<String>,
    /// The artifact store every worker reaches: a directory, file:///shared/dir or
    /// s3://bucket/prefix (credentials from AWS_* variables, SWEEPER_S3_ENDPOINT).
    /// A job's outputs go under <sweep>/<job id>.
    #[arg(long, env = "SWEEPER_ARTIFACTS", default_value = "artifacts")]
    artifacts: String,
    /// Where jobs write on this machine (default: the artifact directory when it is
    /// one, else scratch/).
    #[arg(long, env = "SWEEPER_SCRATCH")]
    scratch: Option<PathBuf>,
    /// Decoded-image caches, local to this machine (default: <scratch>/cache).
    #[arg(long, env = "SWEEPER_CACHE")]
    cache: Option<PathBuf>,
    /// Overrides the sweeps' data root.
    #[arg(long, env = "SWEEPER_DATA_ROOT")]
    data_root: Option<PathBuf>,
    /// Seconds a claim or heartbeat holds a job.
    #[arg(long, env = "SWEEPER_LEASE_SECS", default_value = "60", value_parser = parse_seconds)]
    lease_secs: Duration,
    /// Seconds between heartbeats (and cancel checks).
    #[arg(long, env = "SWEEPER_HEARTBEAT_SECS", default_value = "10", value_parser = parse_seconds)]
    heartbeat_secs: Duration,
    /// Seconds between claims when the queue is empty.
    #[arg(long, env = "SWEEPER_POLL_SECS", default_value = "2", value_parser = parse_seconds)]
    poll_secs: Duration,
    /// Seconds a job has to stop at shutdown before its lease is given back.
    #[arg(long, env = "SWEEPER_SHUTDOWN_GRACE_SECS", default_value = "30", value_parser = parse_seconds)]
    shutdown_grace_secs: Duration,
    /// First retry delay after a retryable failure; doubles with every attempt.
    #[arg(long, env = "SWEEPER_RETRY_BACKOFF_SECS", default_value = "10", value_parser = parse_seconds)]
    retry_backoff_secs: Duration,
    /// Stop (exit 1) after this many jobs in a row failed for reasons of this machine
    /// (GPU, driver, memory, disk, artifact store), so that a launcher restarts or
    /// reschedules the worker; 0 never stops.
    #[arg(long, env = "SWEEPER_MAX_INFRA_FAILURES", default_value_t = 3)]
    max_infra_failures: u32,
    /// Seconds added to this machine's clock as the worker sees it (tests only:
    /// leases follow the database's clock whatever this says).
    #[arg(
        long,
        env = "SWEEPER_CLOCK_SKEW_SECS",
        default_value_t = 0.0,
        value_parser = parse_skew,
        hide = true,
        allow_negative_numbers = true
    )]
    clock_skew_secs: f64,
    /// Answer liveness probes on IP:PORT (`GET /healthz`: 200 ok, or 503 and why);
    /// port 0 takes a free one, logged. Off by default.
    #[arg(long, env = "SWEEPER_HEALTH_ADDR", value_name = "IP:PORT")]
    health_addr: Option<std::net::SocketAddr>,
}

/// The longest period any duration flag takes: longer ones would overflow the
/// clocks they are added to (and mean nothing for a lease or a poll).
const MAX_FLAG_SECS: f64 = 365.0 * 86_400.0;

fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= MAX_FLAG_SECS => Duration::try_from_secs_f64(secs)
            .map_err(|error| format!("{text:?} is not a usable number of seconds: {error}")),
        Ok(secs) if secs > MAX_FLAG_SECS => Err(format!(
            "{text:?} seconds is more than a year ({MAX_FLAG_SECS} s), the longest period taken"
        )),
        _ => Err(format!("{text:?} is not a positive number of seconds")),
    }
}

/// A clock offset in seconds, either sign, at most a year.
fn parse_skew(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(secs) if secs.abs() <= MAX_FLAG_SECS => Ok(secs),
        _ => Err(format!(
            "{text:?} is not a number of seconds within a year either way"
        )),
    }
}

pub(super) async fn run_worker(db: &str, args: WorkerArgs) -> anyhow::Result<()> {
    let store = open(db).await?;
    let host = args.host.unwrap_or_else(worker::hostname);
    let name = args
        .name
        .unwrap_or_else(|| format!("{host}-{}", std::process::id()));
    let mut config = WorkerConfig::new(name, args.device);
    config.host = Some(host);
    config.max_jobs = args.max_jobs;
    config.exit_when_idle = args.exit_when_idle;
    config.cache_dir = args.cache;
    config.scratch = args.scratch;
    config.artifacts = args.artifacts;
    config.clock_skew_secs = args.clock_skew_secs;
    config.data_root = args.data_root;
    config.lease = args.lease_secs;
    config.heartbeat = args.heartbeat_secs;
    config.poll = args.poll_secs;
    config.shutdown_grace = args.shutdown_grace_secs;
    config.retry_backoff = args.retry_backoff_secs;
    config.max_infra_failures = args.max_infra_failures;
    config.health_addr = args.health_addr;
    if config.heartbeat >= config.lease {
        bail!(BadInput(
            "--heartbeat-secs must be shorter than --lease-secs".into()
        ));
    }

    let shutdown = CancellationToken::new();
    let kill = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone(), kill.clone()));
    let ran = worker::run_with_kill(store.clone(), config, shutdown, kill.clone()).await;
    store.close().await;
    if kill.is_cancelled() {
        // The job was killed and given back; a second signal still means "now".
        std::process::exit(130);
    }
    ran?;
    Ok(())
}

/// The first SIGINT/SIGTERM asks the worker to finish up; a second one kills the
/// running job (its process group), gives its lease back and exits 130; a third, or
/// a worker still not done after [`KILL_EXIT_AFTER`], exits at once.
async fn watch_signals(shutdown: CancellationToken, kill: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for signals; stop the worker with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("signal received: no more claims; stopping the running job");
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: killing the running job and giving it back");
    kill.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        () = tokio::time::sleep(KILL_EXIT_AFTER) => {}
    }
    tracing::warn!("exiting now");
    std::process::exit(130);
}

/// How long a second signal waits for the job to be killed and given back.
const KILL_EXIT_AFTER: Duration = Duration::from_secs(15);
