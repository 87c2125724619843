//! Training jobs: [`crate::train::run_job`] on a dedicated `std::thread` that owns the
//! model (a `Tensor` is `Send`, not `Sync`), bridged to the async worker by channels.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::execution::{Execution, JobEvent, Outcome, Stopper};
use crate::store::{EarlierMetric, Failure, FailureKind, MetricPoint};
use crate::train::{self, TrainError, TrainEvent, TrainJob};

/// Starts the job's thread; `Err` when the thread cannot be created.
pub(crate) fn start(job: TrainJob) -> Result<Execution, Failure> {
    let (train_tx, train_rx) = std::sync::mpsc::channel::<TrainEvent>();
    let (events_tx, events) = mpsc::unbounded_channel();
    let (done_tx, done) = oneshot::channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    // The outcome goes through the event thread, after every event before it: a job
    // that ends right after its last epoch still has that epoch's metrics stored.
    let (outcome_tx, outcome_rx) = std::sync::mpsc::channel::<Outcome>();
    let name = format!("train-{}", job.job_id);
    let (job_id, kind) = (job.job_id, job.kind);
    // Started first: a training thread must never run without its event pump.
    // It forwards until the training thread drops its sender.
    std::thread::Builder::new()
        .name(format!("{name}-events"))
        .spawn(move || {
            for event in train_rx {
                let event = match event {
                    // One line per epoch in the worker's log.
                    TrainEvent::Epoch(summary) => {
                        tracing::info!(job = %job_id, kind = kind.as_str(), "{}", summary.line());
                        JobEvent::Epoch(summary)
                    }
                    TrainEvent::Metric { step, name, value } => {
                        JobEvent::Metric(MetricPoint { step, name, value })
                    }
                    TrainEvent::Progress { step, .. } => JobEvent::Progress { step },
                    TrainEvent::Checkpoint { path, .. } => JobEvent::Checkpoint(path),
                    TrainEvent::Resumed { history, .. } => JobEvent::Resumed(
                        history
                            .into_iter()
                            .flat_map(|epoch| {
                                epoch
                                    .values
                                    .into_iter()
                                    .map(move |(name, value)| EarlierMetric {
                                        attempt: epoch.attempt,
                                        point: MetricPoint {
                                            step: epoch.epoch,
                                            name,
                                            value,
                                        },
                                    })
                            })
                            .collect(),
                    ),
                };
                if events_tx.send(event).is_err() {
                    break;
                }
            }
            // The training thread's sender is gone, so every event is forwarded.
            if let Ok(outcome) = outcome_rx.recv() {
                // The receiver is gone only when the worker gave up on the job.
                let _ = done_tx.send(outcome);
            }
        })
        .map_err(|error| {
            Failure::infrastructure(
                FailureKind::Thread,
                format!("cannot start the training event thread: {error}"),
            )
        })?;
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            // The boundary: whatever libtorch panics with outside a guarded step
            // becomes a failure blamed on the job or the machine, its message cut.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                train::run(&job, &train_tx, &flag)
            }));
            let outcome = match ran {
                Ok(Ok(train::RunEnd::Finished(result))) => Outcome::Succeeded(result),
                Ok(Ok(train::RunEnd::AtRung { epoch })) => Outcome::AtRung { epoch },
                Ok(Err(error)) => outcome_of(error, FailureKind::Fatal),
                Err(payload) => outcome_of(
                    train::device::panic_error("training", payload.as_ref()),
                    FailureKind::Crash,
                ),
            };
            drop(train_tx);
            let _ = outcome_tx.send(outcome);
        })
        .map_err(|error| {
            Failure::infrastructure(
                FailureKind::Thread,
                format!("cannot start the training thread: {error}"),
            )
        })?;
    Ok(Execution {
        events,
        done,
        stopper: Stopper::Flag(cancel),
    })
}

/// How a training error ends the attempt; `own` is the kind of a fault of the job's
/// (`fatal` for a refusal, `crash` for a panic).
fn outcome_of(error: TrainError, own: FailureKind) -> Outcome {
    let message = error.to_string();
    Outcome::Failed(match error {
        TrainError::Cancelled => return Outcome::Stopped,
        TrainError::Fatal(_) => Failure::job(own, message),
        TrainError::Device(_) => Failure::infrastructure(FailureKind::Device, message),
        TrainError::OutOfMemory(_) => Failure::infrastructure(FailureKind::OutOfMemory, message),
        TrainError::Io(_) => Failure::infrastructure(FailureKind::Io, message),
    })
}
