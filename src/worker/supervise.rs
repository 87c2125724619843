//! A running job: its events, heartbeats, metrics, checkpoint uploads,
//! cancellation and shutdown, up to the end the worker records.

use super::*;

/// How long a killed job has to report its end before its lease is given back anyway.
pub(super) const KILL_WAIT: Duration = Duration::from_secs(2);

/// Metric values on their way to the store.
#[derive(Default)]
pub(super) struct Buffered {
    /// This attempt's.
    pub(super) points: Vec<MetricPoint>,
    /// Earlier attempts', from the checkpoint this one resumed from.
    pub(super) earlier: Vec<EarlierMetric>,
}

/// A mirror of the job's directory in progress, for the checkpoint that asked for it.
pub(super) struct Upload {
    pub(super) checkpoint: PathBuf,
    pub(super) task: tokio::task::JoinHandle<ArtifactResult<SyncReport>>,
}

/// The end of the upload in progress; never, when there is none.
pub(super) async fn wait_upload(
    upload: &mut Option<Upload>,
) -> Result<ArtifactResult<SyncReport>, tokio::task::JoinError> {
    match upload {
        Some(running) => (&mut running.task).await,
        None => std::future::pending().await,
    }
}

/// Why a finished job's outputs were not stored.
pub(super) enum Stored {
    /// The attempt was superseded.
    Lost,
    Failed(Failure),
}

pub(super) fn lose(stop: &mut Option<StopReason>, execution: &Execution) {
    if *stop != Some(StopReason::Lost) {
        tracing::warn!("the lease was lost to another attempt; stopping the job");
        *stop = Some(StopReason::Lost);
        execution.stopper.stop();
    }
}

impl Worker {
    /// Drives a running job: events, heartbeats, checkpoint uploads, cancellation and
    /// shutdown.
    pub(super) async fn supervise(
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
        // The epoch that ended since the last heartbeat that got through.
        let mut epoch: Option<EpochSummary> = None;
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
                    JobEvent::Epoch(summary) => {
                        // `status` shows it now, not at the next tick.
                        epoch = Some(summary);
                        if stop.is_none() && self.renew(job, step, epoch.as_ref(), &mut stop, &execution).await {
                            epoch = None;
                        }
                    }
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
                        && self.renew(job, step, epoch.as_ref(), &mut stop, &execution).await
                    {
                        epoch = None;
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
                JobEvent::Progress { .. } | JobEvent::Checkpoint(_) | JobEvent::Epoch(_) => {}
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
            (Outcome::AtRung { epoch }, None) => {
                // The next attempt, on any machine, resumes from this checkpoint.
                self.push_progress(job, files).await;
                Finish::AtRung { epoch }
            }
            (
                Outcome::Failed(_) | Outcome::Stopped | Outcome::AtRung { .. },
                Some(StopReason::Cancel),
            ) => {
                // Its files (a command's output log among them) stay readable.
                self.push_progress(job, files).await;
                Finish::Cancelled
            }
            (
                Outcome::Failed(_) | Outcome::Stopped | Outcome::AtRung { .. },
                Some(StopReason::Shutdown),
            ) => {
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
    pub(super) async fn renew(
        &self,
        job: &ClaimedJob,
        step: Option<i64>,
        epoch: Option<&EpochSummary>,
        stop: &mut Option<StopReason>,
        execution: &Execution,
    ) -> bool {
        match self
            .store
            .heartbeat(job.id, job.attempt, self.config.lease, step, epoch)
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
    pub(super) async fn start_upload(
        &self,
        job: &ClaimedJob,
        files: &JobFiles,
        checkpoint: PathBuf,
        step: Option<i64>,
        stop: &mut Option<StopReason>,
        execution: &Execution,
    ) -> Option<Upload> {
        if !self.renew(job, step, None, stop, execution).await {
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
    pub(super) async fn record_upload(
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

    pub(super) async fn record_checkpoint(
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
    pub(super) async fn store_outputs(
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
                        .heartbeat(job.id, job.attempt, self.config.lease, None, None)
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
    pub(super) async fn push_progress(&self, job: &ClaimedJob, files: &JobFiles) {
        match self
            .store
            .heartbeat(job.id, job.attempt, self.config.lease, None, None)
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
    pub(super) async fn flush(
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
}
