//! Starting a claimed job: its spec and stage, its files pulled from the artifact
//! store, its provenance, then its runner (a child process or a training thread).

use super::provenance::dataset_fingerprint;
use super::*;

/// Why a job could not start.
pub(super) enum Started {
    Failed(Failure),
    Store(StoreError),
}

impl From<Failure> for Started {
    fn from(failure: Failure) -> Started {
        Started::Failed(failure)
    }
}

pub(super) fn fatal(kind: FailureKind, message: String) -> Started {
    Started::Failed(Failure::job(kind, message))
}

impl Worker {
    /// Starts the job on its runner.
    pub(super) async fn start(
        &self,
        job: &ClaimedJob,
        files: &JobFiles,
    ) -> Result<Execution, Started> {
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

    pub(super) async fn train_job(
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
            halt_at: job.halt_at,
        })
    }
}
