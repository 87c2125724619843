//! The worker: claim a job, run it, report it, again.
//!
//! One worker holds one device for its life and runs one job at a time. The async loop
//! only talks to the store; the job itself runs elsewhere (a child process for
//! `command` jobs, a dedicated thread for training jobs) and reports through a channel.
//! While it runs, the loop renews the lease every heartbeat, writes metrics and
//! checkpoints fenced by `(job, attempt)`, stops the job when it is cancelled or the
//! attempt is superseded, and on SIGINT/SIGTERM asks the job to stop and gives its lease
//! back so that another worker can take it at once.
//!
//! A job's files are written on this machine's scratch space and mirrored to the
//! artifact store ([`files`]): pulled before the job starts, pushed after each
//! checkpoint (once the lease is confirmed) and at the end, however it ended (a
//! `command` job's output log among them, see [`read_output_log`]). The job's `checkpoint`
//! column holds the artifact key, which a downstream job on any machine fetches.
//! A checkpoint also keeps the metrics of the epochs it covers, and an attempt that
//! resumes from one records those the store lacks, so a job's curve has every epoch
//! wherever its attempts died.
//!
//! Every lease is measured on the database's clock; the worker's own clock (shifted
//! by `clock_skew`, to test exactly that) only dates what it logs.
//!
//! Long because the run loop, its outage handling and provenance share the
//! `Worker` state; the outage bookkeeping and provenance are the seams to split next.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::artifacts::{ArtifactError, ArtifactResult, SyncReport};
use crate::provenance::{self, DataFingerprint, Provenance};
use crate::redact::redact_url;
use crate::store::{
    Blame, ClaimedJob, EarlierMetric, Failure, FailureKind, Finish, JobState, Lease, MetricPoint,
    Store, StoreError, WorkerInfo, Write,
};
use crate::sweep::params::JobParams;
use crate::sweep::{Spec, StageKind};
use crate::train::TrainJob;

mod breaker;
pub mod command;
mod execution;
mod files;
pub mod health;
pub mod summary;
mod training;

pub use crate::devices::{Device, DeviceRequest};
use breaker::{Breaker, Tripped};
use execution::{Execution, JobEvent, Outcome};
use files::{artifact_failure, JobFiles, Storage};

pub type WorkerResult<T> = Result<T, WorkerError>;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Artifacts(#[from] ArtifactError),
    #[error(transparent)]
    Device(#[from] crate::devices::DeviceError),
    #[error(
        "the last {count} jobs failed for reasons of this machine, not theirs (last: {last}); \
         stopping so that a sound worker takes them"
    )]
    Broken {
        count: u32,
        last: String,
    },
    #[error(transparent)]
    Health(#[from] health::HealthError),
    #[error("the store failed {count} times in a row; giving up")]
    StoreUnavailable {
        count: u32,
        #[source]
        last: StoreError,
    },
}

impl WorkerError {
    /// The user's input is wrong (a device this host lacks, a health address taken),
    /// not the machine.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, WorkerError::Device(_) | WorkerError::Health(_))
    }
}

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
    fn jobs(&self) -> u64 {
        self.succeeded + self.failed + self.requeued + self.cancelled + self.lost + self.released
    }
}

/// How the worker's part in one attempt ended.
enum End {
    Finished(JobState),
    Lost,
    Released,
}

/// Why the worker asked a job to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    Cancel,
    Shutdown,
    Lost,
}

/// How long an idle worker waits for a store that does not answer before giving up.
const STORE_OUTAGE_TOLERATED: Duration = Duration::from_secs(600);

/// Consecutive store errors (the store answering) the loop rides out before giving up.
const STORE_FAILURES_TOLERATED: u32 = 30;

/// A store outage as the worker lives it; `None` while the store answers.
type Outage = Option<OutageState>;

struct OutageState {
    since: Instant,
    reminded: Instant,
    /// What could not be written, and how many times, for the line at the end.
    missed: std::collections::BTreeMap<String, u64>,
}

/// How often a long outage is logged again.
const OUTAGE_REMINDER: Duration = Duration::from_secs(60);

/// The longest pause between two tries of a write that waits for the store.
const OUTAGE_RETRY_MAX: Duration = Duration::from_secs(2);

/// How long a killed job has to report its end before its lease is given back anyway.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// Clocks further apart than this are worth a line in the log.
const CLOCK_DIFFERENCE_NOTED_SECS: f64 = 5.0;

/// This host's name, as the operating system says it.
pub fn hostname() -> String {
    hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Registers a worker and runs jobs until `shutdown` is cancelled, `max_jobs` is
/// reached, or (with `exit_when_idle`) the store has nothing left to do.
pub async fn run(
    store: Store,
    config: WorkerConfig,
    shutdown: CancellationToken,
) -> WorkerResult<WorkerSummary> {
    run_with_kill(store, config, shutdown, CancellationToken::new()).await
}

/// [`run`], and once `kill` is cancelled (a second signal) the running job is ended
/// at once (a program's whole process group is killed, whatever signals it ignores),
/// its lease given back without waiting for the shutdown grace, and the worker stops.
pub async fn run_with_kill(
    store: Store,
    config: WorkerConfig,
    shutdown: CancellationToken,
    kill: CancellationToken,
) -> WorkerResult<WorkerSummary> {
    // A device this host lacks is refused before anything is claimed or registered:
    // a worker that cannot train must not fail the queue's jobs one by one.
    let gpu_count = crate::devices::usable_gpus();
    config
        .device
        .check(gpu_count, || crate::devices::describe().found())?;
    crate::train::device::quiet_training_panics();
    // Bound before anything is claimed: a taken address stops the worker at once.
    let health = Arc::new(health::Health::new(config.poll.max(config.heartbeat)));
    let health_server = match config.health_addr {
        Some(addr) => Some(health::Server::start(addr, Arc::clone(&health)).await?),
        None => None,
    };
    let storage = Storage::open(&config.artifacts, config.scratch.as_deref())?;
    let cache_dir = match &config.cache_dir {
        Some(dir) => absolute(dir),
        None => storage.scratch.join("cache"),
    };
    let info = WorkerInfo {
        id: Uuid::now_v7().to_string(),
        name: config.name.clone(),
        host: config.host.clone().unwrap_or_else(hostname),
        pid: i32::try_from(std::process::id()).unwrap_or(i32::MAX),
    };
    let device = match config.device {
        DeviceRequest::Fixed(device) => {
            store.register_worker(&info, &device.to_string()).await?;
            device
        }
        DeviceRequest::Auto => {
            let live_within = (config.lease * 2).max(Duration::from_secs(30));
            let chosen = store
                .register_worker_auto(&info, gpu_count, live_within)
                .await?;
            // The store only hands back a candidate or "cpu", both valid.
            match chosen.parse() {
                Ok(DeviceRequest::Fixed(device)) => device,
                _ => Device::Cpu,
            }
        }
    };
    note_clock_difference(&store, &config).await;
    let provenance = tokio::task::spawn_blocking({
        let host = info.host.clone();
        move || worker_provenance(device, host)
    })
    .await
    .unwrap_or_default();
    let worker = Worker {
        store,
        config,
        info,
        device,
        storage,
        cache_dir,
        provenance,
        kill,
        shutdown: shutdown.clone(),
        outage: std::sync::Mutex::new(Outage::default()),
        breaker: std::sync::Mutex::new(Breaker::default()),
        health,
    };
    tracing::info!(
        worker = %worker.info.name,
        id = %worker.info.id,
        host = %worker.info.host,
        %device,
        artifacts = %worker.storage.artifacts.description(),
        scratch = %worker.storage.scratch.display(),
        "worker started"
    );
    let summary = worker.run_loop(&shutdown).await;
    if let Some(server) = health_server {
        server.stop().await;
    }
    if let Err(error) = worker.store.stop_worker(&worker.info.id).await {
        tracing::warn!(%error, "cannot mark the worker stopped");
    }
    let summary = summary?;
    tracing::info!(worker = %worker.info.name, ?summary, "worker stopped");
    Ok(summary)
}

/// The output log of a `command` job ([`command::OUTPUT_LOG`]), every attempt's:
/// `<scratch>/<sweep>/<job>/output.log` when `scratch` is given and holds it (a job
/// running on this machine writes there first and uploads at its end), else the copy
/// in the artifact store at `artifacts` (a directory, `file://` or `s3://`). None when
/// neither has one; nothing is created.
pub async fn read_output_log(
    artifacts: &str,
    scratch: Option<&Path>,
    sweep: &str,
    job: Uuid,
) -> ArtifactResult<Option<Vec<u8>>> {
    let key = format!(
        "{}/{}",
        crate::artifacts::Artifacts::job_prefix(sweep, job),
        command::OUTPUT_LOG
    );
    if let Some(scratch) = scratch {
        let local = scratch.join(&key);
        match tokio::fs::read(&local).await {
            Ok(bytes) => return Ok(Some(bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ArtifactError::Local {
                    path: local,
                    source,
                })
            }
        }
    }
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    let location = crate::artifacts::Location::parse(artifacts, &env)?;
    if let crate::artifacts::Location::Directory(dir) = &location {
        // Opening a directory store creates it; a reader has no business doing so.
        if !dir.is_dir() {
            return Ok(None);
        }
    }
    let store = crate::artifacts::Artifacts::open(&location, &env)?;
    if store.size(&key).await?.is_none() {
        return Ok(None);
    }
    store.get_bytes(&key).await.map(Some)
}

/// Logs how far this machine's clock is from the database's. Leases are measured on
/// the database's clock alone, so a difference changes nothing but the log's dates.
async fn note_clock_difference(store: &Store, config: &WorkerConfig) {
    let database = match store.database_now().await {
        Ok(now) => now,
        Err(error) => {
            tracing::debug!(error = %redact_url(&error.to_string()), "cannot read the database's clock");
            return;
        }
    };
    let local = config.local_now();
    let ahead = (local - database).num_milliseconds() as f64 / 1000.0;
    if ahead.abs() > CLOCK_DIFFERENCE_NOTED_SECS {
        tracing::warn!(
            local = %local.to_rfc3339(),
            database = %database.to_rfc3339(),
            "this machine's clock is {:.0} s {} the database's; leases follow the database's clock",
            ahead.abs(),
            if ahead > 0.0 { "ahead of" } else { "behind" },
        );
    }
}

struct Worker {
    store: Store,
    config: WorkerConfig,
    info: WorkerInfo,
    device: Device,
    storage: Storage,
    cache_dir: PathBuf,
    /// Cancelled on a second signal: end the running job now and give it back.
    kill: CancellationToken,
    /// The first signal: no more claims, and writes that wait for the store give up
    /// after the shutdown grace.
    shutdown: CancellationToken,
    /// A std mutex: held for a few field updates, never across an await.
    outage: std::sync::Mutex<Outage>,
    /// A std mutex, as `outage`.
    breaker: std::sync::Mutex<Breaker>,
    /// This worker's part of every attempt's provenance; the dataset is added per job.
    provenance: Provenance,
    /// Beaten by the loop, tripped by what decides the worker cannot go on.
    health: Arc<health::Health>,
}

/// The code, libtorch and device this worker runs attempts with.
fn worker_provenance(device: Device, host: String) -> Provenance {
    let report = crate::devices::describe();
    let name = device.to_string();
    let device_name = match name
        .strip_prefix("cuda:")
        .and_then(|i| i.parse::<i64>().ok())
    {
        Some(index) => report
            .gpus
            .iter()
            .find(|gpu| gpu.index == index)
            .and_then(|gpu| gpu.name.clone())
            .unwrap_or_else(|| format!("GPU {index}")),
        None => cpu_model().unwrap_or_else(|| "CPU".to_owned()),
    };
    Provenance {
        libtorch: report.libtorch_version,
        cuda: report.libtorch_cuda_build,
        cudnn: report.cudnn_version.map(|v| v.to_string()),
        device: name,
        device_name,
        host,
        ..Provenance::of_this_build()
    }
}

/// The processor's model name, from Linux's `/proc/cpuinfo`.
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
}

impl Worker {
    async fn run_loop(&self, shutdown: &CancellationToken) -> WorkerResult<WorkerSummary> {
        let mut summary = WorkerSummary::default();
        let mut failures = 0u32;
        let mut failing_since: Option<Instant> = None;
        let mut next_reap = Instant::now();
        loop {
            self.health.beat();
            if shutdown.is_cancelled() || self.kill.is_cancelled() {
                return Ok(summary);
            }
            if self
                .config
                .max_jobs
                .is_some_and(|max| summary.jobs() >= max)
            {
                return Ok(summary);
            }
            match self.step(&mut summary, &mut next_reap, shutdown).await {
                Ok(true) => {
                    failures = 0;
                    failing_since = None;
                    self.store_answered();
                    let tripped = self.breaker.lock().map_or(None, |breaker| {
                        breaker.tripped(self.config.max_infra_failures)
                    });
                    if let Some(Tripped { count, last }) = tripped {
                        let broken = WorkerError::Broken { count, last };
                        // Probes fail for as long as the process takes to end.
                        self.health.trip(broken.to_string());
                        return Err(broken);
                    }
                }
                Ok(false) => return Ok(summary),
                Err(error) => {
                    failures += 1;
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    // An outage is waited out for minutes (a database restart); an
                    // error that repeats while the store answers, a few tries.
                    let give_up = if error.is_unavailable() {
                        since.elapsed() >= STORE_OUTAGE_TOLERATED
                    } else {
                        failures >= STORE_FAILURES_TOLERATED
                    };
                    if give_up {
                        return Err(WorkerError::StoreUnavailable {
                            count: failures,
                            last: error,
                        });
                    }
                    if error.is_unavailable() {
                        self.store_failed("claims", &error);
                    } else {
                        tracing::warn!(error = %redact_url(&format!("{:#}", anyhow_like(&error))), "store error; trying again");
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(summary),
                        () = tokio::time::sleep(self.config.poll) => {}
                    }
                }
            }
        }
    }

    /// Reaps, claims and runs one job, or waits for one; false when the worker is done.
    async fn step(
        &self,
        summary: &mut WorkerSummary,
        next_reap: &mut Instant,
        shutdown: &CancellationToken,
    ) -> Result<bool, StoreError> {
        if Instant::now() >= *next_reap {
            self.store.reap().await?;
            *next_reap = Instant::now() + self.config.heartbeat;
        }
        let Some(job) = self.store.claim(&self.info.id, self.config.lease).await? else {
            if self.config.exit_when_idle && self.store.active_jobs().await? == 0 {
                return Ok(false);
            }
            self.store.touch_worker(&self.info.id).await?;
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = tokio::time::sleep(self.config.poll) => {}
            }
            return Ok(true);
        };
        let span = tracing::info_span!("job", job = %job.id, attempt = job.attempt);
        let end = self.run_job(&job, shutdown).instrument(span).await?;
        match end {
            End::Finished(JobState::Succeeded) => summary.succeeded += 1,
            End::Finished(JobState::Failed) => summary.failed += 1,
            End::Finished(JobState::Cancelled) => summary.cancelled += 1,
            End::Finished(_) => summary.requeued += 1,
            End::Lost => summary.lost += 1,
            End::Released => summary.released += 1,
        }
        Ok(true)
    }

    async fn run_job(
        &self,
        job: &ClaimedJob,
        shutdown: &CancellationToken,
    ) -> Result<End, StoreError> {
        tracing::info!(sweep = %job.sweep, stage = %job.stage, key = %job.key, "claimed");
        let files = self.storage.job_files(&job.sweep, job.id);
        let execution = match self.start(job, &files).await {
            Ok(execution) => execution,
            Err(Started::Failed(failure)) => {
                tracing::warn!(kind = %failure.kind, message = %failure.message, "cannot start the job");
                if files.dir.join(command::OUTPUT_LOG).is_file() {
                    self.push_progress(job, &files).await;
                }
                return self.finish(job, Finish::Failed(failure)).await;
            }
            Err(Started::Store(error)) => {
                // Give the job back rather than hold it while the store is away.
                let _ = self.store.release(job.id, job.attempt).await;
                return Err(error);
            }
        };
        self.supervise(job, &files, execution, shutdown).await
    }

    /// Drives a running job: events, heartbeats, checkpoint uploads, cancellation and
    /// shutdown.
    async fn supervise(
        &self,
        job: &ClaimedJob,
        files: &JobFiles,
        mut execution: Execution,
        shutdown: &CancellationToken,
    ) -> Result<End, StoreError> {
        let mut heartbeat = tokio::time::interval(self.config.heartbeat);
        heartbeat.tick().await; // the first tick is immediate; the claim just renewed
        let mut metrics = Buffered::default();
        let mut step: Option<i64> = None;
        let mut stop: Option<StopReason> = None;
        // One upload at a time; a checkpoint that arrives meanwhile waits for the next.
        let mut upload: Option<Upload> = None;
        let mut newest_checkpoint: Option<PathBuf> = None;
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        let mut deadline = far;
        let mut killed = false;
        let outcome = loop {
            if upload.is_none() && stop != Some(StopReason::Lost) {
                if let Some(path) = newest_checkpoint.take() {
                    // No gap in a resumed job's curve: the metrics of the epochs a
                    // checkpoint covers go to the store before its upload starts, so
                    // the database is not behind the artifact store as a rule. That
                    // alone guarantees nothing (the upload mirrors the directory, which
                    // may hold a newer checkpoint by then; a metrics write can fail;
                    // a store in place holds a checkpoint the moment it is written;
                    // the worker can die in between), so every checkpoint also keeps
                    // the metrics of its epochs, and an attempt that resumes from one
                    // records those the store lacks (`JobEvent::Resumed`).
                    self.flush(job, &mut metrics, &mut stop, &execution).await;
                    upload = self
                        .start_upload(job, files, path, step, &mut stop, &execution)
                        .await;
                }
            }
            tokio::select! {
                done = &mut execution.done => {
                    break done.unwrap_or_else(|_| Outcome::Failed(Failure::transient(
                        FailureKind::Crash,
                        "the job's runner ended without an outcome (a panic)",
                    )));
                }
                Some(event) = execution.events.recv() => match event {
                    JobEvent::Metric(point) => {
                        metrics.points.push(point);
                        if metrics.points.len() >= 256 && stop.is_none() {
                            self.flush(job, &mut metrics, &mut stop, &execution).await;
                        }
                    }
                    JobEvent::Resumed(earlier) => {
                        metrics.earlier.extend(earlier);
                        if stop.is_none() {
                            self.flush(job, &mut metrics, &mut stop, &execution).await;
                        }
                    }
                    JobEvent::Progress { step: now } => step = Some(now),
                    JobEvent::Checkpoint(path) => newest_checkpoint = Some(path),
                },
                uploaded = wait_upload(&mut upload) => {
                    if let Some(done) = upload.take() {
                        self.record_upload(job, files, &done.checkpoint, uploaded, &mut stop, &execution).await;
                    }
                }
                _ = heartbeat.tick(), if stop != Some(StopReason::Lost) => {
                    self.health.beat();
                    // While the store is away one failed call per tick is enough.
                    if self.flush(job, &mut metrics, &mut stop, &execution).await
                        && self.renew(job, step, &mut stop, &execution).await
                    {
                        if let Err(error) = self.store.touch_worker(&self.info.id).await {
                            tracing::debug!(error = %redact_url(&error.to_string()), "cannot mark the worker alive");
                        }
                    }
                }
                () = shutdown.cancelled(), if stop.is_none() => {
                    tracing::info!(grace = ?self.config.shutdown_grace, "shutting down; stopping the job");
                    stop = Some(StopReason::Shutdown);
                    deadline = Instant::now() + self.config.shutdown_grace + Duration::from_secs(1);
                    execution.stopper.stop();
                }
                () = self.kill.cancelled(), if !killed => {
                    tracing::warn!("stopping now: killing the job and giving its lease back");
                    killed = true;
                    if stop.is_none() {
                        stop = Some(StopReason::Shutdown);
                    }
                    deadline = Instant::now() + KILL_WAIT;
                    execution.stopper.kill();
                }
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!("the job did not stop in time; giving its lease back");
                    break Outcome::Stopped;
                }
            }
        };
        while let Ok(event) = execution.events.try_recv() {
            match event {
                JobEvent::Metric(point) => metrics.points.push(point),
                JobEvent::Resumed(earlier) => metrics.earlier.extend(earlier),
                JobEvent::Progress { .. } | JobEvent::Checkpoint(_) => {}
            }
        }
        if let Some(running) = upload.take() {
            if stop == Some(StopReason::Lost) {
                // A superseded attempt writes nothing more to the job's prefix.
                running.task.abort();
            } else {
                // Let it end before the final push: one sync of a prefix at a time.
                let _ = running.task.await;
            }
        }
        if stop != Some(StopReason::Lost) && !metrics.earlier.is_empty() {
            // Earlier attempts' values restored from the checkpoint, and this one's.
            self.flush(job, &mut metrics, &mut stop, &execution).await;
        }
        if stop != Some(StopReason::Lost) && !metrics.points.is_empty() {
            let points = metrics.points.len();
            let written = self
                .until_recorded(job, &format!("its last {points} metric values"), || {
                    self.store
                        .record_metrics(job.id, job.attempt, &metrics.points)
                })
                .await;
            match written {
                Ok(Write::Applied) => metrics.points.clear(),
                Ok(Write::Superseded) => lose(&mut stop, &execution),
                Err(_) => metrics.points.clear(),
            }
        }
        let finish = match (outcome, stop) {
            (_, Some(StopReason::Lost)) => {
                tracing::warn!("the attempt was superseded; nothing more is written for it");
                return Ok(End::Lost);
            }
            (Outcome::Succeeded(result), _) => {
                match self.store_outputs(job, files, result.clone()).await {
                    Ok(Ok(result)) => Finish::Succeeded(result),
                    Ok(Err(Stored::Lost)) => return Ok(End::Lost),
                    Ok(Err(Stored::Failed(failure))) => Finish::Failed(failure),
                    Err(error) => {
                        tracing::error!(
                            job = %job.id,
                            attempt = job.attempt,
                            %result,
                            "job {} attempt {} succeeded but its end could not be recorded",
                            job.id,
                            job.attempt
                        );
                        return Err(error);
                    }
                }
            }
            (Outcome::Failed(_) | Outcome::Stopped, Some(StopReason::Cancel)) => {
                // Its files (a command's output log among them) stay readable.
                self.push_progress(job, files).await;
                Finish::Cancelled
            }
            (Outcome::Failed(_) | Outcome::Stopped, Some(StopReason::Shutdown)) => {
                // What the job did so far goes to the store for whoever takes it next,
                // unless the worker must end now.
                if !killed {
                    self.push_progress(job, files).await;
                }
                let released = self
                    .until_recorded(job, "the release of its lease", || {
                        self.store.release(job.id, job.attempt)
                    })
                    .await?;
                return match released {
                    Write::Applied => {
                        tracing::info!("job given back to the queue");
                        Ok(End::Released)
                    }
                    Write::Superseded => Ok(End::Lost),
                };
            }
            (Outcome::Failed(failure), None) => {
                // For the next attempt to resume from, or for whoever reads why it
                // failed (a command's output log).
                self.push_progress(job, files).await;
                Finish::Failed(failure)
            }
            (Outcome::Stopped, None) => Finish::Failed(Failure::transient(
                FailureKind::Stopped,
                "the job stopped without being asked to",
            )),
        };
        self.finish(job, finish).await
    }

    /// Renews the lease (the fence every write checks); false unless it is held.
    async fn renew(
        &self,
        job: &ClaimedJob,
        step: Option<i64>,
        stop: &mut Option<StopReason>,
        execution: &Execution,
    ) -> bool {
        match self
            .store
            .heartbeat(job.id, job.attempt, self.config.lease, step)
            .await
        {
            Ok(Lease::Held { cancel }) => {
                self.store_answered();
                if cancel && stop.is_none() {
                    tracing::info!("cancel requested; stopping the job");
                    *stop = Some(StopReason::Cancel);
                    execution.stopper.stop();
                }
                true
            }
            Ok(Lease::Lost) => {
                lose(stop, execution);
                false
            }
            Err(error) if error.is_unavailable() => {
                self.store_failed(&format!("lease renewals of job {}", job.id), &error);
                false
            }
            Err(error) => {
                tracing::warn!(error = %redact_url(&error.to_string()), "cannot renew the lease");
                false
            }
        }
    }

    /// Starts mirroring the job's directory to the store for a new checkpoint, once
    /// the lease is confirmed (two attempts share the job's prefix; only the holder
    /// writes there). Where the store is the scratch directory, records it at once.
    async fn start_upload(
        &self,
        job: &ClaimedJob,
        files: &JobFiles,
        checkpoint: PathBuf,
        step: Option<i64>,
        stop: &mut Option<StopReason>,
        execution: &Execution,
    ) -> Option<Upload> {
        if !self.renew(job, step, stop, execution).await {
            return None;
        }
        if self.storage.in_place {
            if let Some(key) = files.key_of(&checkpoint) {
                self.record_checkpoint(job, &key, stop, execution).await;
            }
            return None;
        }
        let storage = self.storage.clone();
        let owned = files.clone();
        let task = tokio::spawn(async move { storage.push(&owned).await });
        Some(Upload { checkpoint, task })
    }

    /// Records a checkpoint whose upload ended, if it reached the store (training
    /// may have pruned it meanwhile, when a newer one is on its way).
    async fn record_upload(
        &self,
        job: &ClaimedJob,
        files: &JobFiles,
        checkpoint: &Path,
        uploaded: Result<ArtifactResult<SyncReport>, tokio::task::JoinError>,
        stop: &mut Option<StopReason>,
        execution: &Execution,
    ) {
        match uploaded {
            Ok(Ok(report)) => {
                tracing::debug!(
                    files = report.transferred.len(),
                    bytes = report.bytes,
                    "job files uploaded"
                );
                let Some(key) = files.key_of(checkpoint) else {
                    return;
                };
                match self.storage.holds(&key).await {
                    Ok(true) => self.record_checkpoint(job, &key, stop, execution).await,
                    Ok(false) => tracing::debug!(%key, "checkpoint pruned before it was uploaded"),
                    Err(error) => tracing::warn!(%error, "cannot look up an uploaded checkpoint"),
                }
            }
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot upload the job's files; trying again at the next checkpoint")
            }
            Err(error) => tracing::warn!(%error, "the upload of the job's files ended abnormally"),
        }
    }

    async fn record_checkpoint(
        &self,
        job: &ClaimedJob,
        key: &str,
        stop: &mut Option<StopReason>,
        execution: &Execution,
    ) {
        if *stop == Some(StopReason::Lost) {
            return;
        }
        match self.store.set_checkpoint(job.id, job.attempt, key).await {
            Ok(Write::Applied) => tracing::info!(checkpoint = %key, "checkpoint stored"),
            Ok(Write::Superseded) => lose(stop, execution),
            Err(error) if error.is_unavailable() => self.store_failed(
                &format!(
                    "checkpoint {key} of job {} (the final one is recorded at the end)",
                    job.id
                ),
                &error,
            ),
            Err(error) => {
                tracing::warn!(error = %redact_url(&error.to_string()), "cannot record a checkpoint")
            }
        }
    }

    /// Puts a finished job's files in the store and its final checkpoint's key in
    /// the store's `checkpoint` column and in the result (in place of the local path
    /// that training reports, which means nothing on another machine).
    async fn store_outputs(
        &self,
        job: &ClaimedJob,
        files: &JobFiles,
        mut result: serde_json::Value,
    ) -> Result<Result<serde_json::Value, Stored>, StoreError> {
        let lease = self
            .until_recorded(
                job,
                "the renewal of its lease before storing its files",
                || {
                    self.store
                        .heartbeat(job.id, job.attempt, self.config.lease, None)
                },
            )
            .await?;
        if let Lease::Lost = lease {
            return Ok(Err(Stored::Lost));
        }
        if let Err(error) = self.storage.push(files).await {
            let what = format!(
                "cannot store the job's files in {}",
                self.storage.artifacts.description()
            );
            return Ok(Err(Stored::Failed(artifact_failure(&what, &error))));
        }
        let local = result
            .get("checkpoint")
            .and_then(serde_json::Value::as_str)
            .map(PathBuf::from);
        if let Some(key) = local.and_then(|path| files.key_of(&path)) {
            let recorded = self
                .until_recorded(job, "its final checkpoint", || {
                    self.store.set_checkpoint(job.id, job.attempt, &key)
                })
                .await?;
            if let Write::Superseded = recorded {
                return Ok(Err(Stored::Lost));
            }
            tracing::info!(checkpoint = %key, "final checkpoint stored");
            result["checkpoint"] = serde_json::Value::String(key);
        }
        Ok(Ok(result))
    }

    /// Mirrors an unfinished job's files to the store, so that the next attempt,
    /// wherever it runs, resumes from them. Best effort: the last checkpoint upload
    /// already put most of it there.
    async fn push_progress(&self, job: &ClaimedJob, files: &JobFiles) {
        match self
            .store
            .heartbeat(job.id, job.attempt, self.config.lease, None)
            .await
        {
            Ok(Lease::Held { .. }) => {}
            Ok(Lease::Lost) | Err(_) => return,
        }
        if let Err(error) = self.storage.push(files).await {
            tracing::warn!(%error, "cannot store the unfinished job's files");
        }
    }

    /// Writes the buffered metrics; false when the store did not answer (they are
    /// kept for the next flush).
    async fn flush(
        &self,
        job: &ClaimedJob,
        metrics: &mut Buffered,
        stop: &mut Option<StopReason>,
        execution: &Execution,
    ) -> bool {
        if !metrics.earlier.is_empty() {
            match self
                .store
                .restore_metrics(job.id, job.attempt, &metrics.earlier)
                .await
            {
                Ok(Write::Applied) => {
                    tracing::debug!(
                        values = metrics.earlier.len(),
                        "earlier attempts' metrics restored from the checkpoint"
                    );
                    metrics.earlier.clear();
                }
                Ok(Write::Superseded) => {
                    metrics.earlier.clear();
                    metrics.points.clear();
                    lose(stop, execution);
                    return true;
                }
                Err(error) => tracing::warn!(%error, "cannot restore earlier attempts' metrics"),
            }
        }
        if metrics.points.is_empty() {
            return true;
        }
        match self
            .store
            .record_metrics(job.id, job.attempt, &metrics.points)
            .await
        {
            Ok(Write::Applied) => {
                self.store_answered();
                metrics.points.clear();
                true
            }
            Ok(Write::Superseded) => {
                metrics.points.clear();
                lose(stop, execution);
                true
            }
            Err(error) if error.is_unavailable() => {
                self.store_failed(
                    &format!(
                        "metric flushes of job {} (kept, written once it answers)",
                        job.id
                    ),
                    &error,
                );
                false
            }
            Err(error) => {
                tracing::warn!(%error, "cannot record metrics");
                true
            }
        }
    }

    /// Runs `write`, a store write that ends or records an attempt, until the store
    /// takes it: an outage delays the attempt's end, it does not drop it. Gives up on
    /// an error that is not an outage, on a second signal, or once the shutdown grace
    /// has passed after the first, and then logs the job, the attempt and `what` was
    /// lost.
    async fn until_recorded<T, F, Fut>(
        &self,
        job: &ClaimedJob,
        what: &str,
        mut write: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut pause = Duration::from_millis(200);
        let mut give_up_at: Option<Instant> = None;
        loop {
            let error = match write().await {
                Ok(value) => {
                    self.store_answered();
                    return Ok(value);
                }
                Err(error) => error,
            };
            if self.shutdown.is_cancelled() && give_up_at.is_none() {
                give_up_at = Some(Instant::now() + self.config.shutdown_grace);
            }
            let out_of_time = give_up_at.is_some_and(|at| Instant::now() >= at);
            if !error.is_unavailable() || self.kill.is_cancelled() || out_of_time {
                tracing::error!(
                    job = %job.id,
                    attempt = job.attempt,
                    error = %redact_url(&format!("{:#}", anyhow_like(&error))),
                    "job {} attempt {}: {what} could not be recorded",
                    job.id,
                    job.attempt
                );
                return Err(error);
            }
            self.store_failed(&format!("job {}: {what}", job.id), &error);
            self.health.beat();
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.kill.cancelled() => {}
            }
            pause = (pause * 2).min(OUTAGE_RETRY_MAX);
        }
    }

    /// Notes a call that failed because the store is away: the first one of an
    /// outage is logged with its cause, then a reminder at most every
    /// [`OUTAGE_REMINDER`] with how long it has lasted; `what` is counted for the line
    /// logged when the store answers again.
    fn store_failed(&self, what: &str, error: &StoreError) {
        let cause = redact_url(&format!("{:#}", anyhow_like(error)));
        let mut outage = self
            .outage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let state = outage.get_or_insert_with(|| {
            tracing::warn!(
                error = %cause,
                "the store cannot be reached; retrying (a running job goes on, what it \
                 reports meanwhile is kept)"
            );
            OutageState {
                since: now,
                reminded: now,
                missed: std::collections::BTreeMap::new(),
            }
        });
        if now.duration_since(state.reminded) >= OUTAGE_REMINDER {
            state.reminded = now;
            tracing::warn!(
                error = %cause,
                "the store has been unreachable for {:.0} s; still retrying",
                now.duration_since(state.since).as_secs_f64()
            );
        }
        *state.missed.entry(what.to_owned()).or_default() += 1;
    }

    /// Ends an outage, if there was one, with a line saying how long it lasted and
    /// what could not be written meanwhile.
    fn store_answered(&self) {
        let ended = self
            .outage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(state) = ended {
            let missed: Vec<String> = state
                .missed
                .iter()
                .map(|(what, times)| format!("{what}: {times} failed"))
                .collect();
            tracing::warn!(
                "the store answers again after {:.1} s; not recorded meanwhile: {}",
                state.since.elapsed().as_secs_f64(),
                missed.join("; ")
            );
        }
    }

    async fn finish(&self, job: &ClaimedJob, finish: Finish) -> Result<End, StoreError> {
        // The machine's fault says nothing about the job: it waits the first delay only.
        let backoff = match &finish {
            Finish::Failed(failure) if failure.blame == Blame::Infrastructure => {
                self.config.retry_backoff
            }
            _ => self.config.backoff(job.attempt),
        };
        let what = match &finish {
            Finish::Succeeded(result) => format!("its end (succeeded, result {result})"),
            Finish::Failed(failure) => format!(
                "its end (failed, {}: {})",
                failure.kind,
                failure.message.lines().next().unwrap_or("")
            ),
            Finish::Cancelled => "its end (cancelled)".to_owned(),
        };
        let ended = self
            .until_recorded(job, &what, || {
                self.store.finish(job.id, job.attempt, &finish, backoff)
            })
            .await?;
        if let Ok(mut breaker) = self.breaker.lock() {
            breaker.record(&finish);
        }
        match ended {
            Some(state) => {
                match (&finish, state) {
                    (Finish::Failed(failure), JobState::Queued)
                        if failure.blame == Blame::Infrastructure =>
                    {
                        tracing::warn!(
                            kind = %failure.kind, message = %failure.message, ?backoff,
                            "failed for a reason of this machine; back in the queue, no attempt spent"
                        )
                    }
                    (Finish::Failed(failure), JobState::Queued) => tracing::warn!(
                        kind = %failure.kind, message = %failure.message, ?backoff, "failed; will retry"
                    ),
                    (Finish::Failed(failure), _) => {
                        tracing::error!(kind = %failure.kind, message = %failure.message, "failed")
                    }
                    _ => tracing::info!(%state, "finished"),
                }
                Ok(End::Finished(state))
            }
            None => {
                tracing::warn!(
                    job = %job.id,
                    attempt = job.attempt,
                    "the attempt was superseded; {what} was not recorded"
                );
                Ok(End::Lost)
            }
        }
    }

    /// Starts the job on its runner.
    async fn start(&self, job: &ClaimedJob, files: &JobFiles) -> Result<Execution, Started> {
        let spec = self
            .store
            .spec(&job.sweep)
            .await
            .map_err(Started::Store)?
            .ok_or_else(|| {
                fatal(
                    FailureKind::NoSpec,
                    format!("sweep {:?} is not stored", job.sweep),
                )
            })?;
        let stage = spec
            .stages
            .iter()
            .find(|s| s.name == job.stage)
            .ok_or_else(|| {
                fatal(
                    FailureKind::NoStage,
                    format!("sweep {:?} has no stage {:?}", job.sweep, job.stage),
                )
            })?;
        let job_dir = files.dir.clone();
        std::fs::create_dir_all(&job_dir).map_err(|error| {
            Failure::infrastructure(
                FailureKind::Io,
                format!("cannot create {}: {error}", job_dir.display()),
            )
        })?;
        // A retried attempt (on any machine) resumes from what the last one stored.
        match self.storage.pull(files).await {
            Ok(report) if !report.transferred.is_empty() => tracing::info!(
                files = report.transferred.len(),
                bytes = report.bytes,
                from = %self.storage.artifacts.description(),
                "fetched the job's files"
            ),
            Ok(_) => {}
            Err(error) => {
                let what = format!(
                    "cannot fetch the job's files from {}",
                    self.storage.artifacts.description()
                );
                return Err(artifact_failure(&what, &error).into());
            }
        }
        match job.kind {
            StageKind::Command => {
                self.store
                    .record_provenance(job.id, job.attempt, &self.provenance)
                    .await
                    .map_err(Started::Store)?;
                let argv = stage.command.as_deref().ok_or_else(|| {
                    fatal(
                        FailureKind::BadCommand,
                        format!("stage {:?} has no command", stage.name),
                    )
                })?;
                let data_root = self.config.data_root.as_ref().unwrap_or(&spec.data_root);
                Ok(command::start(command::CommandJob {
                    job,
                    argv,
                    device: self.device,
                    job_dir: &absolute(&job_dir),
                    data_root: &absolute(data_root),
                    grace: self.config.shutdown_grace,
                    worker: &self.info.name,
                    host: &self.info.host,
                    started_at: self.config.local_now(),
                })?)
            }
            StageKind::Pretext | StageKind::Linear | StageKind::Finetune => {
                let train_job = self
                    .train_job(job, &spec, stage.dataset.as_deref(), job_dir)
                    .await?;
                let mut provenance = self.provenance.clone();
                provenance.dataset = dataset_fingerprint(&train_job).await;
                self.store
                    .record_provenance(job.id, job.attempt, &provenance)
                    .await
                    .map_err(Started::Store)?;
                Ok(training::start(train_job)?)
            }
        }
    }

    async fn train_job(
        &self,
        job: &ClaimedJob,
        spec: &Spec,
        dataset: Option<&str>,
        job_dir: PathBuf,
    ) -> Result<TrainJob, Started> {
        let dataset_name = dataset.ok_or_else(|| {
            fatal(
                FailureKind::NoDataset,
                format!("stage {:?} names no dataset", job.stage),
            )
        })?;
        let dataset = spec.datasets.get(dataset_name).cloned().ok_or_else(|| {
            fatal(
                FailureKind::NoDataset,
                format!("sweep {:?} has no dataset {dataset_name:?}", job.sweep),
            )
        })?;
        let init_checkpoint = match job.parent_job_id {
            Some(parent) => {
                let parent_row = self.store.job(parent).await.map_err(Started::Store)?;
                let checkpoint = parent_row.and_then(|row| row.checkpoint).ok_or_else(|| {
                    fatal(
                        FailureKind::NoCheckpoint,
                        format!("the parent job {parent} left no checkpoint"),
                    )
                })?;
                let local = self
                    .storage
                    .fetch_checkpoint(&checkpoint)
                    .await
                    .map_err(|error| {
                        artifact_failure(
                            &format!("cannot fetch the checkpoint of the parent job {parent}"),
                            &error,
                        )
                    })?;
                Some(local)
            }
            None => None,
        };
        let data_root = self
            .config
            .data_root
            .clone()
            .unwrap_or_else(|| spec.data_root.clone());
        Ok(TrainJob {
            job_id: job.id,
            attempt: job.attempt,
            kind: job.kind,
            params: job.params.clone(),
            dataset,
            dataset_name: dataset_name.to_owned(),
            data_root: absolute(&data_root),
            job_dir: absolute(&job_dir),
            init_checkpoint,
            cache_dir: self.cache_dir.clone(),
            device: self.device.to_tch(),
        })
    }
}

/// The fingerprint of the files the job will train on (its seed's selection), or
/// `None` where they cannot be listed: the job then fails with the data error itself.
async fn dataset_fingerprint(job: &TrainJob) -> Option<DataFingerprint> {
    let seed = match JobParams::parse(job.kind, &job.params) {
        Ok(JobParams::Pretext(p)) => p.seed,
        Ok(JobParams::Linear(p) | JobParams::Finetune(p)) => p.seed,
        _ => return None,
    };
    let (dataset, root, cache) = (
        job.dataset.clone(),
        job.data_root.clone(),
        job.cache_dir.clone(),
    );
    let listed = tokio::task::spawn_blocking(move || {
        let selection = crate::train::data::folder::select(&dataset, &root, seed as u64)
            .map_err(|e| e.to_string())?;
        provenance::fingerprint(&root, &selection.all_paths(), &cache).map_err(|e| e.to_string())
    })
    .await;
    match listed {
        Ok(Ok(fingerprint)) => Some(fingerprint),
        Ok(Err(error)) => {
            tracing::debug!(%error, "no dataset fingerprint");
            None
        }
        Err(_) => None,
    }
}

/// Metric values on their way to the store.
#[derive(Default)]
struct Buffered {
    /// This attempt's.
    points: Vec<MetricPoint>,
    /// Earlier attempts', from the checkpoint this one resumed from.
    earlier: Vec<EarlierMetric>,
}

/// A mirror of the job's directory in progress, for the checkpoint that asked for it.
struct Upload {
    checkpoint: PathBuf,
    task: tokio::task::JoinHandle<ArtifactResult<SyncReport>>,
}

/// The end of the upload in progress; never, when there is none.
async fn wait_upload(
    upload: &mut Option<Upload>,
) -> Result<ArtifactResult<SyncReport>, tokio::task::JoinError> {
    match upload {
        Some(running) => (&mut running.task).await,
        None => std::future::pending().await,
    }
}

/// Why a finished job's outputs were not stored.
enum Stored {
    /// The attempt was superseded.
    Lost,
    Failed(Failure),
}

/// Why a job could not start.
enum Started {
    Failed(Failure),
    Store(StoreError),
}

impl From<Failure> for Started {
    fn from(failure: Failure) -> Started {
        Started::Failed(failure)
    }
}

fn fatal(kind: FailureKind, message: String) -> Started {
    Started::Failed(Failure::job(kind, message))
}

fn lose(stop: &mut Option<StopReason>, execution: &Execution) {
    if *stop != Some(StopReason::Lost) {
        tracing::warn!("the lease was lost to another attempt; stopping the job");
        *stop = Some(StopReason::Lost);
        execution.stopper.stop();
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Formats an error with its sources, like anyhow's `{:#}`.
fn anyhow_like(error: &StoreError) -> impl std::fmt::Display + '_ {
    struct Chain<'a>(&'a StoreError);
    impl std::fmt::Display for Chain<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}", self.0)?;
            let mut source = std::error::Error::source(self.0);
            while let Some(error) = source {
                write!(f, ": {error}")?;
                source = error.source();
            }
            Ok(())
        }
    }
    Chain(error)
}
