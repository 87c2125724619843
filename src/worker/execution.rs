//! A job in progress, whatever runs it: events out, a way to ask it to stop, and its
//! outcome.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::progress::EpochSummary;
use crate::store::{EarlierMetric, Failure, MetricPoint};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JobEvent {
    Metric(MetricPoint),
    Progress {
        step: i64,
    },
    Checkpoint(PathBuf),
    /// An epoch ended: logged, and stored with a heartbeat at once.
    Epoch(EpochSummary),
    /// Metrics of earlier attempts kept by the checkpoint the job resumed from.
    Resumed(Vec<EarlierMetric>),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    Succeeded(Value),
    Failed(Failure),
    /// It stopped because it was asked to.
    Stopped,
    /// It trained up to the rung `epoch` of its stage's successive halving and wrote
    /// its checkpoint there.
    AtRung {
        epoch: i64,
    },
}

/// How to ask a running job to stop.
pub(crate) enum Stopper {
    /// The command task watches the tokens: `stop` sends SIGTERM, then SIGKILL after a
    /// grace period; `kill` sends SIGKILL to the program's process group at once.
    Command {
        stop: CancellationToken,
        kill: CancellationToken,
    },
    /// The training loop reads the flag every step.
    Flag(Arc<AtomicBool>),
}

impl Stopper {
    pub(crate) fn stop(&self) {
        match self {
            Stopper::Command { stop, .. } => stop.cancel(),
            Stopper::Flag(flag) => flag.store(true, Ordering::Relaxed),
        }
    }

    /// Ends the job now: a program's process group is killed; a training thread is
    /// asked to stop and dies with the process if it has not by then.
    pub(crate) fn kill(&self) {
        match self {
            Stopper::Command { stop, kill } => {
                stop.cancel();
                kill.cancel();
            }
            Stopper::Flag(flag) => flag.store(true, Ordering::Relaxed),
        }
    }
}

pub(crate) struct Execution {
    pub events: mpsc::UnboundedReceiver<JobEvent>,
    pub done: oneshot::Receiver<Outcome>,
    pub stopper: Stopper,
}
