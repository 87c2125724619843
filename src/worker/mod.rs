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
//! checkpoint (once the lease is confirmed) and at the end. The job's `checkpoint`
//! column holds the artifact key, which a downstream job on any machine fetches.
//! A checkpoint also keeps the metrics of the epochs it covers, and an attempt that
//! resumes from one records those the store lacks, so a job's curve has every epoch
//! wherever its attempts died.
//!
//! Every lease is measured on the database's clock; the worker's own clock (shifted
//! by `clock_skew`, to test exactly that) only dates what it logs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::artifacts::{ArtifactError, ArtifactResult, SyncReport};
use crate::redact::redact_url;
use crate::store::{
    ClaimedJob, EarlierMetric, Failure, Finish, JobState, Lease, MetricPoint, Store, StoreError,
    WorkerInfo, Write,
};
use crate::sweep::{Spec, StageKind};
use crate::train::TrainJob;

pub mod command;
pub mod device;
mod execution;
mod files;
mod training;

pub use device::{Device, DeviceRequest};
use execution::{Execution, JobEvent, Outcome};
use files::{artifact_failure, JobFiles, Storage};

pub type WorkerResult<T> = Result<T, WorkerError>;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Artifacts(#[from] ArtifactError),
    #[error("the store failed {count} times in a row; giving up")]
    StoreUnavailable {
        count: u32,
        #[source]
        last: StoreError,
    },
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
            artifacts: "artifacts".into(),
            scratch: None,
            cache_dir: None,
            data_root: None,
            clock_skew_secs: 0.0,
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

/// Consecutive store failures the loop rides out before giving up.
const STORE_FAILURES_TOLERATED: u32 = 30;

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
            let gpu_count = i64::try_from(Device::gpus().len()).unwrap_or(0);
            let live_within = (config.lease * 2).max(Duration::from_secs(30));
            let chosen = store
                .register_worker_auto(&info, gpu_count, live_within)
                .await?;
            // The store only hands back a candidate or "cpu", both valid.
            chosen.parse().unwrap_or(Device::Cpu)
        }
    };
    note_clock_difference(&store, &config).await;
    let worker = Worker {
        store,
        config,
        info,
        device,
        storage,
        cache_dir,
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
    if let Err(error) = worker.store.stop_worker(&worker.info.id).await {
        tracing::warn!(%error, "cannot mark the worker stopped");
    }
    let summary = summary?;
    tracing::info!(worker = %worker.info.name, ?summary, "worker stopped");
    Ok(summary)
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
}

impl Worker {
    async fn run_loop(&self, shutdown: &CancellationToken) -> WorkerResult<WorkerSummary> {
        let mut summary = WorkerSummary::default();
        let mut failures = 0u32;
        let mut next_reap = Instant::now();
        loop {
            if shutdown.is_cancelled() {
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
                Ok(true) => failures = 0,
                Ok(false) => return Ok(summary),
                Err(error) => {
                    failures += 1;
                    if failures >= STORE_FAILURES_TOLERATED {
                        return Err(WorkerError::StoreUnavailable {
                            count: failures,
                            last: error,
                        });
                    }
                    tracing::warn!(error = %redact_url(&format!("{:#}", anyhow_like(&error))), "store error; trying again");
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
                    break done.unwrap_or_else(|_| Outcome::Failed(Failure {
                        kind: "crash".into(),
                        message: "the job's runner ended without an outcome (a panic)".into(),
                        retryable: false,
                    }));
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
                    self.flush(job, &mut metrics, &mut stop, &execution).await;
                    self.renew(job, step, &mut stop, &execution).await;
                    if let Err(error) = self.store.touch_worker(&self.info.id).await {
                        tracing::debug!(error = %redact_url(&error.to_string()), "cannot mark the worker alive");
                    }
                }
                () = shutdown.cancelled(), if stop.is_none() => {
                    tracing::info!(grace = ?self.config.shutdown_grace, "shutting down; stopping the job");
                    stop = Some(StopReason::Shutdown);
                    deadline = Instant::now() + self.config.shutdown_grace + Duration::from_secs(1);
                    execution.stopper.stop();
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
        if stop != Some(StopReason::Lost) {
            self.flush(job, &mut metrics, &mut stop, &execution).await;
        }
        let finish = match (outcome, stop) {
            (_, Some(StopReason::Lost)) => {
                tracing::warn!("the attempt was superseded; nothing more is written for it");
                return Ok(End::Lost);
            }
            (Outcome::Succeeded(result), _) => {
                match self.store_outputs(job, files, result).await? {
                    Ok(result) => Finish::Succeeded(result),
                    Err(Stored::Lost) => return Ok(End::Lost),
                    Err(Stored::Failed(failure)) => Finish::Failed(failure),
                }
            }
            (Outcome::Failed(_) | Outcome::Stopped, Some(StopReason::Cancel)) => Finish::Cancelled,
            (Outcome::Failed(_) | Outcome::Stopped, Some(StopReason::Shutdown)) => {
                // What the job did so far goes to the store for whoever takes it next.
                self.push_progress(job, files).await;
                return match self.store.release(job.id, job.attempt).await? {
                    Write::Applied => {
                        tracing::info!("job given back to the queue");
                        Ok(End::Released)
                    }
                    Write::Superseded => Ok(End::Lost),
                };
            }
            (Outcome::Failed(failure), None) => {
                if failure.retryable {
                    self.push_progress(job, files).await;
                }
                Finish::Failed(failure)
            }
            (Outcome::Stopped, None) => Finish::Failed(Failure {
                kind: "stopped".into(),
                message: "the job stopped without being asked to".into(),
                retryable: true,
            }),
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
        if let Lease::Lost = self
            .store
            .heartbeat(job.id, job.attempt, self.config.lease, None)
            .await?
        {
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
            if let Write::Superseded = self.store.set_checkpoint(job.id, job.attempt, &key).await? {
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

    /// Writes the buffered metrics; what the store refuses is kept for the next flush.
    async fn flush(
        &self,
        job: &ClaimedJob,
        metrics: &mut Buffered,
        stop: &mut Option<StopReason>,
        execution: &Execution,
    ) {
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
                    return;
                }
                Err(error) => tracing::warn!(%error, "cannot restore earlier attempts' metrics"),
            }
        }
        if metrics.points.is_empty() {
            return;
        }
        match self
            .store
            .record_metrics(job.id, job.attempt, &metrics.points)
            .await
        {
            Ok(Write::Applied) => metrics.points.clear(),
            Ok(Write::Superseded) => {
                metrics.points.clear();
                lose(stop, execution);
            }
            Err(error) => tracing::warn!(%error, "cannot record metrics"),
        }
    }

    async fn finish(&self, job: &ClaimedJob, finish: Finish) -> Result<End, StoreError> {
        let backoff = self.config.backoff(job.attempt);
        match self
            .store
            .finish(job.id, job.attempt, &finish, backoff)
            .await?
        {
            Some(state) => {
                match (&finish, state) {
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
                tracing::warn!("the attempt was superseded; its end was not recorded");
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
            .ok_or_else(|| fatal("no spec", format!("sweep {:?} is not stored", job.sweep)))?;
        let stage = spec
            .stages
            .iter()
            .find(|s| s.name == job.stage)
            .ok_or_else(|| {
                fatal(
                    "no stage",
                    format!("sweep {:?} has no stage {:?}", job.sweep, job.stage),
                )
            })?;
        let job_dir = files.dir.clone();
        std::fs::create_dir_all(&job_dir).map_err(|error| Failure {
            kind: "io".into(),
            message: format!("cannot create {}: {error}", job_dir.display()),
            retryable: true,
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
                let argv = stage.command.as_deref().ok_or_else(|| {
                    fatal(
                        "bad command",
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
                })?)
            }
            StageKind::Pretext | StageKind::Linear | StageKind::Finetune => {
                let train_job = self
                    .train_job(job, &spec, stage.dataset.as_deref(), job_dir)
                    .await?;
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
                "no dataset",
                format!("stage {:?} names no dataset", job.stage),
            )
        })?;
        let dataset = spec.datasets.get(dataset_name).cloned().ok_or_else(|| {
            fatal(
                "no dataset",
                format!("sweep {:?} has no dataset {dataset_name:?}", job.sweep),
            )
        })?;
        let init_checkpoint = match job.parent_job_id {
            Some(parent) => {
                let parent_row = self.store.job(parent).await.map_err(Started::Store)?;
                let checkpoint = parent_row.and_then(|row| row.checkpoint).ok_or_else(|| {
                    fatal(
                        "no checkpoint",
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
            data_root: absolute(&data_root),
            job_dir: absolute(&job_dir),
            init_checkpoint,
            cache_dir: self.cache_dir.clone(),
            device: self.device.to_tch(),
        })
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

fn fatal(kind: &str, message: String) -> Started {
    Started::Failed(Failure {
        kind: kind.into(),
        message,
        retryable: false,
    })
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
