//! Training with libtorch through `tch`.
//!
//! The worker hands a [`TrainJob`] to [`run_job`] on a dedicated `std::thread` (the
//! thread owns the `VarStore`: a `Tensor` is `Send`, not `Sync`). Progress goes out as
//! [`TrainEvent`]s over a channel; cancellation comes in through an `AtomicBool` that
//! the training loop checks every step.
//!
//! - [`config`]: job parameters, checked, with defaults.
//! - [`pretext`]: SimCLR training ([`simclr`]: projection head and NT-Xent, [`optim`]:
//!   LARS/SGD/Adam, [`schedule`]: warmup + cosine, [`augment`]: batched views).
//! - [`downstream`]: the linear protocol and fine-tuning, with early stopping.
//! - [`checkpoint`]: atomic checkpoints in the job's directory, resume.
//! - [`device`]: bf16 autocast and channels-last on CUDA; libtorch failures as errors.
//! - [`standalone`]: one job's configuration run outside the queue with a progress
//!   bar, and the training benchmarks; [`plan`] builds that job from a sweep file and
//!   the `train` command's flags.
//!
//! Only [`run_job`] touches the data module; the stages take decoded [`data::ImageSet`]s.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::Sender;

use serde_json::json;

use crate::sweep::{DatasetSpec, Params, StageKind};

pub mod augment;
pub mod backbone;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
pub mod downstream;
pub mod idx;
pub mod loader;
pub mod metrics;
pub mod optim;
pub mod plan;
pub mod pretext;
pub mod schedule;
pub mod simclr;
pub mod standalone;
pub mod synth;

pub use standalone::{bench_train, train_standalone, BenchMode, BenchOptions, BenchReport};

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
    /// The dataset's name in the sweep file, for messages.
    pub dataset_name: String,
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
    /// The epoch to stop at for a rung of successive halving (pretext only).
    pub halt_at: Option<i64>,
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
    /// The job resumed after `epoch` from a checkpoint that kept the metrics of the
    /// epochs before it (sent once, before any epoch of this attempt).
    Resumed {
        epoch: i64,
        history: Vec<checkpoint::EpochMetrics>,
    },
    /// An epoch ended: what the worker's log and `sweeper train` print, one line each.
    Epoch(EpochSummary),
}

pub use crate::progress::EpochSummary;

/// Why a job did not finish. The variant, not the message, decides whether the
/// queue retries it.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("cancelled")]
    Cancelled,
    /// The job's own fault; another attempt would fail the same way: bad config,
    /// NaN loss, missing data.
    #[error("{0}")]
    Fatal(String),
    /// The GPU, its driver, CUDA or cuDNN failed: not the job's fault.
    #[error("{0}")]
    Device(String),
    /// The device or the host ran out of memory: another device may fit the job.
    #[error("{0}")]
    OutOfMemory(String),
    /// Local I/O failed for a reason of the machine's (a stale NFS handle, a full
    /// disk, a timeout), or a thread could not be started.
    #[error("{0}")]
    Io(String),
}

impl TrainError {
    /// The machine's fault, not the job's: worth another attempt elsewhere.
    pub fn is_infrastructure(&self) -> bool {
        matches!(
            self,
            TrainError::Device(_) | TrainError::OutOfMemory(_) | TrainError::Io(_)
        )
    }
}

pub type TrainResult<T> = Result<T, TrainError>;

/// Runs one training job to the end and returns its result (a JSON object: the
/// final loss for pretext jobs; accuracy, precision, recall, F1, per-class figures
/// and the confusion matrix for downstream jobs).
///
/// Pretext: `{"loss", "epochs", "train_images", "chance_loss", "skipped_images",
/// "checkpoint"}`, `loss` being the last epoch's mean NT-Xent (mean convention, see
/// [`simclr`]). Linear / fine-tune: `{"accuracy", "precision", "recall", "f1",
/// "per_class", "confusion", "best_epoch", "train_images", "test_images",
/// "skipped_images"}`.
pub fn run_job(
    job: &TrainJob,
    events: &Sender<TrainEvent>,
    cancel: &AtomicBool,
) -> TrainResult<serde_json::Value> {
    match run(job, events, cancel)? {
        RunEnd::Finished(result) => Ok(result),
        RunEnd::AtRung { epoch } => Err(TrainError::Fatal(format!(
            "job {}: stopped at the rung of epoch {epoch}, before the end",
            job.job_id
        ))),
    }
}

/// How a run of [`run`] ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    /// At the end, with [`run_job`]'s result.
    Finished(serde_json::Value),
    /// At [`TrainJob::halt_at`], its checkpoint written there.
    AtRung { epoch: i64 },
}

/// [`run_job`], stopping at [`TrainJob::halt_at`] when it comes before the end.
pub fn run(
    job: &TrainJob,
    events: &Sender<TrainEvent>,
    cancel: &AtomicBool,
) -> TrainResult<RunEnd> {
    let id = job.job_id;
    match job.kind {
        StageKind::Pretext => {
            let mut cfg = config::PretextConfig::from_params(&job.params, id)?;
            cfg.halt_at = job.halt_at;
            let set = load_split(
                job,
                data::Split::Train,
                cfg.image_size,
                cfg.data_fraction,
                cfg.seed,
            )?;
            if (set.len() as i64) < cfg.batch_size {
                return Err(TrainError::Fatal(format!(
                    "job {id}: the pretext split (train, data_fraction {}) of dataset {:?} in \
                     {} has {} images, fewer than one batch of {}",
                    cfg.data_fraction,
                    job.dataset_name,
                    job.data_root.join(&job.dataset.folder).display(),
                    set.len(),
                    cfg.batch_size
                )));
            }
            let outcome = pretext::train(
                &cfg,
                &set,
                &job.job_dir,
                job.device,
                job.attempt,
                events,
                cancel,
            )?;
            if let Some(epoch) = outcome.halted_at {
                return Ok(RunEnd::AtRung { epoch });
            }
            Ok(RunEnd::Finished(json!({
                "loss": outcome.loss,
                "epochs": outcome.epochs,
                "train_images": outcome.train_images,
                "chance_loss": outcome.chance_loss,
                "skipped_images": set.skipped.len(),
                "checkpoint": outcome.checkpoint,
            })))
        }
        StageKind::Linear | StageKind::Finetune => {
            let linear = job.kind == StageKind::Linear;
            let cfg = config::DownstreamConfig::from_params(&job.params, id, linear)?;
            let init = match &job.init_checkpoint {
                Some(path) if !path.exists() => {
                    return Err(TrainError::Fatal(format!(
                        "job {id}: the pretext checkpoint {} does not exist",
                        path.display()
                    )))
                }
                Some(path) => Some(path.as_path()),
                None => {
                    tracing::warn!(job = %id, "no pretext checkpoint: the backbone starts from random weights");
                    None
                }
            };
            let train = load_split(job, data::Split::Train, cfg.image_size, 1.0, cfg.seed)?;
            let mut val = load_split(job, data::Split::Val, cfg.image_size, 1.0, cfg.seed)?;
            let test = load_split(job, data::Split::Test, cfg.image_size, 1.0, cfg.seed)?;
            let mut train = train;
            if val.labels.size()[0] == 0 {
                // No validation split in the dataset: early stopping watches a seeded
                // tenth of the training split instead.
                let mut rng =
                    <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(cfg.seed);
                let (rest, held) = loader::split_off(&train, 0.1, &mut rng);
                train = rest;
                val = held;
            }
            let protocol = if linear {
                downstream::Protocol::Linear
            } else {
                downstream::Protocol::Finetune
            };
            let splits = downstream::Splits {
                train: &train,
                val: &val,
                test: &test,
            };
            let outcome =
                downstream::train(protocol, &cfg, splits, init, job.device, events, cancel)?;
            let figures =
                metrics::classification(&outcome.predictions, &outcome.truth, &outcome.label_names);
            let skipped = train.skipped.len() + val.skipped.len() + test.skipped.len();
            Ok(RunEnd::Finished(json!({
                "accuracy": figures.accuracy,
                "precision": figures.precision,
                "recall": figures.recall,
                "f1": figures.f1,
                "per_class": figures.per_class,
                "confusion": figures.confusion,
                "best_epoch": outcome.best_epoch,
                "train_images": outcome.train_images,
                "test_images": outcome.test_images,
                "skipped_images": skipped,
            })))
        }
        StageKind::Command => Err(TrainError::Fatal(format!(
            "job {id}: command jobs are run by the worker, not the trainer"
        ))),
    }
}

/// Loads one split of the job's dataset; a missing dataset is final.
fn load_split(
    job: &TrainJob,
    split: data::Split,
    image_size: i64,
    fraction: f64,
    seed: u64,
) -> TrainResult<data::ImageSet> {
    let request = data::LoadRequest {
        spec: &job.dataset,
        data_root: &job.data_root,
        split,
        image_size,
        fraction,
        seed,
        cache_dir: &job.cache_dir,
    };
    data::load(&request).map_err(|e| TrainError::Fatal(format!("job {}: {e}", job.job_id)))
}
