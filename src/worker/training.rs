//! Training jobs: [`crate::train::run_job`] on a dedicated `std::thread` that owns the
//! model (a `Tensor` is `Send`, not `Sync`), bridged to the async worker by channels.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::execution::{Execution, JobEvent, Outcome, Stopper};
use crate::store::{EarlierMetric, Failure, MetricPoint};
use crate::train::{self, TrainError, TrainEvent, TrainJob};

/// Starts the job's thread; `Err` when the thread cannot be created.
pub(crate) fn start(job: TrainJob) -> Result<Execution, Failure> {
    let (train_tx, train_rx) = std::sync::mpsc::channel::<TrainEvent>();
    let (events_tx, events) = mpsc::unbounded_channel();
    let (done_tx, done) = oneshot::channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    let name = format!("train-{}", job.job_id);
    // Started first: a training thread must never run without its event pump.
    // It forwards until the training thread drops its sender.
    std::thread::Builder::new()
        .name(format!("{name}-events"))
        .spawn(move || {
            for event in train_rx {
                let event = match event {
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
        })
        .map_err(|error| Failure {
            kind: "thread".into(),
            message: format!("cannot start the training event thread: {error}"),
            retryable: true,
        })?;
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let outcome = match train::run_job(&job, &train_tx, &flag) {
                Ok(result) => Outcome::Succeeded(result),
                Err(TrainError::Cancelled) => Outcome::Stopped,
                Err(error @ TrainError::Retryable(_)) => Outcome::Failed(Failure {
                    kind: "retryable".into(),
                    message: error.to_string(),
                    retryable: true,
                }),
                Err(error @ TrainError::Fatal(_)) => Outcome::Failed(Failure {
                    kind: "fatal".into(),
                    message: error.to_string(),
                    retryable: false,
                }),
            };
            // The receiver is gone only when the worker gave up on the job.
            let _ = done_tx.send(outcome);
        })
        .map_err(|error| Failure {
            kind: "thread".into(),
            message: format!("cannot start the training thread: {error}"),
            retryable: true,
        })?;
    Ok(Execution {
        events,
        done,
        stopper: Stopper::Flag(cancel),
    })
}
