//! Training with libtorch through `tch`.
//!
//! The worker hands a [`TrainJob`] to [`run_job`] on a dedicated `std::thread` (the
//! thread owns the `VarStore`: a `Tensor` is `Send`, not `Sync`). Progress goes out as
//! [`TrainEvent`]s over a channel; cancellation comes in through an `AtomicBool` that
//! the training loop checks every step.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;

use crate::sweep::{DatasetSpec, Params, StageKind};

pub mod backbone;
pub mod data;
pub mod metrics;

/// Everything one training job needs, resolved by the worker.
#[derive(Debug, Clone)]
pub struct TrainJob {
    pub job_id: uuid::Uuid,
    pub attempt: i32,
    pub kind: StageKind,
    /// The cell's resolved parameters (for downstream stages: the winner's parameters
    /// merged under the stage's own).
    pub params: Params,
    pub dataset: DatasetSpec,
    /// Absolute root the dataset's folders are relative to.
    pub data_root: PathBuf,
    /// This job's own directory: checkpoints are written here and a retried attempt
    /// resumes from the newest one found here.
    pub job_dir: PathBuf,
    /// The pretext winner's final checkpoint, for `linear` and `finetune` jobs.
    pub init_checkpoint: Option<PathBuf>,
    /// Where decoded-image caches are shared by every job of this machine.
    pub cache_dir: PathBuf,
    pub device: tch::Device,
}

/// What a running job reports.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainEvent {
    /// A metric value at a step (per-epoch metrics use the epoch as the step).
    Metric { step: i64, name: String, value: f64 },
    /// Progress within the job, for heartbeats and `status`.
    Progress {
        epoch: i64,
        step: i64,
        total_steps: i64,
    },
    /// A checkpoint was written atomically at this path.
    Checkpoint { epoch: i64, path: PathBuf },
}

/// Why a job did not finish. The variant, not the message, decides whether the
/// queue retries it.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("cancelled")]
    Cancelled,
    /// Worth another attempt: CUDA out of memory, preemption, a transient I/O error.
    #[error("{0}")]
    Retryable(String),
    /// Another attempt would fail the same way: bad config, NaN loss, missing data.
    #[error("{0}")]
    Fatal(String),
}

impl TrainError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, TrainError::Retryable(_))
    }
}

pub type TrainResult<T> = Result<T, TrainError>;

/// Runs one training job to the end and returns its result (a JSON object: the
/// final loss for pretext jobs; accuracy, precision, recall, F1, per-class figures
/// and the confusion matrix for downstream jobs).
pub fn run_job(
    job: &TrainJob,
    events: &Sender<TrainEvent>,
    cancel: &AtomicBool,
) -> TrainResult<serde_json::Value> {
    let _ = (job, events, cancel);
    Err(TrainError::Fatal(format!(
        "the {} job kind is not implemented yet",
        job.kind.as_str()
    )))
}
