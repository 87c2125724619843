//! How a worker behaves (the CLI's flags) and what it did.

use super::*;

/// How a worker behaves; the CLI's flags.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub name: String,
    /// The host recorded in the workers table (default: this machine's hostname).
    /// `--device auto` shares GPUs only among workers of one host.
    pub host: Option<String>,
    pub device: DeviceRequest,
    /// Stop after this many jobs.
    pub max_jobs: Option<u64>,
    /// Stop once no job is queued or running anywhere in the store.
    pub exit_when_idle: bool,
    /// How long a claim or heartbeat holds a job. Long enough to ride out a slow
    /// database; short enough that a dead worker's job is soon picked up again.
    pub lease: Duration,
    pub heartbeat: Duration,
    /// Pause between claims when the queue is empty.
    pub poll: Duration,
    /// How long a job has to stop on shutdown before its lease is given back anyway.
    pub shutdown_grace: Duration,
    /// First retry delay of a retryable failure; doubles with each attempt.
    pub retry_backoff: Duration,
    /// The circuit breaker: stop after this many infrastructure failures in a row
    /// (0: never).
    pub max_infra_failures: u32,
    /// The artifact store: a directory, `file:///shared/dir` or `s3://bucket/prefix`.
    pub artifacts: String,
    /// Where jobs write on this machine (default: the store's directory when it is
    /// one, else `scratch/`).
    pub scratch: Option<PathBuf>,
    /// Decoded-image caches, local to this machine (default: `<scratch>/cache`).
    pub cache_dir: Option<PathBuf>,
    /// Overrides the sweep's data root.
    pub data_root: Option<PathBuf>,
    /// Seconds added to this machine's clock, for the worker's own notion of the
    /// time only (tests of a skewed clock); leases never read it.
    pub clock_skew_secs: f64,
    /// Where to answer liveness probes (`GET /healthz`); none by default.
    pub health_addr: Option<SocketAddr>,
}

impl WorkerConfig {
    pub fn new(name: impl Into<String>, device: DeviceRequest) -> WorkerConfig {
        WorkerConfig {
            name: name.into(),
            host: None,
            device,
            max_jobs: None,
            exit_when_idle: false,
            lease: Duration::from_secs(60),
            heartbeat: Duration::from_secs(10),
            poll: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(30),
            retry_backoff: Duration::from_secs(10),
            max_infra_failures: 3,
            artifacts: "artifacts".into(),
            scratch: None,
            cache_dir: None,
            data_root: None,
            clock_skew_secs: 0.0,
            health_addr: None,
        }
    }

    /// This machine's clock as the worker sees it (shifted by `clock_skew_secs`).
    pub fn local_now(&self) -> chrono::DateTime<chrono::Utc> {
        let skew = chrono::TimeDelta::milliseconds((self.clock_skew_secs * 1000.0).round() as i64);
        chrono::Utc::now() + skew
    }

    /// The delay before attempt `attempt + 1` after a retryable failure.
    pub fn backoff(&self, attempt: i32) -> Duration {
        let doublings = u32::try_from(attempt.saturating_sub(1))
            .unwrap_or(0)
            .min(16);
        (self.retry_backoff * 2u32.pow(doublings)).min(Duration::from_secs(600))
    }
}

/// What a worker did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    pub succeeded: u64,
    pub failed: u64,
    pub requeued: u64,
    pub cancelled: u64,
    /// Attempts another worker took over (lease lost): nothing was written for them.
    pub lost: u64,
    /// Jobs given back at shutdown.
    pub released: u64,
}

impl WorkerSummary {
    pub(super) fn jobs(&self) -> u64 {
        self.succeeded + self.failed + self.requeued + self.cancelled + self.lost + self.released
    }
}
