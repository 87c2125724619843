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
//! Here: the worker's errors, its start and its loop (claim, run, record the end).
//! [`config`] holds its settings, `start` starts a claimed job, `supervise` drives it
//! while it runs, `outage` rides out a store that does not answer, `provenance`
//! records what produced each attempt, `breaker` stops a worker whose machine fails.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::artifacts::{ArtifactError, ArtifactResult, SyncReport};
use crate::progress::EpochSummary;
use crate::provenance::{DataFingerprint, Provenance};
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
mod config;
mod execution;
mod files;
pub mod health;
mod outage;
mod provenance;
mod start;
pub mod summary;
mod supervise;
mod training;

pub use crate::devices::{Device, DeviceRequest};
use breaker::{Breaker, Tripped};
pub use config::{WorkerConfig, WorkerSummary};
use execution::{Execution, JobEvent, Outcome};
use files::{artifact_failure, JobFiles, Storage};
use outage::{anyhow_like, Outage};
use provenance::{note_clock_difference, worker_provenance};
use start::Started;

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
    Broken { count: u32, last: String },
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
            Finish::AtRung { epoch } => format!("its pause at the rung of epoch {epoch}"),
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
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
