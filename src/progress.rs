//! Where a running job is: the epoch it finished last, its headline metric, its speed
//! and how long the rest should take at that speed.
//!
//! One value, [`EpochSummary`], travels the whole way: the training loop sends it at
//! each epoch's end, the worker logs it as one line and stores it with the next
//! heartbeat, and `status`, `status --watch` and the dashboard read it back.

use serde::{Deserialize, Serialize};

/// One finished epoch as a person follows a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochSummary {
    /// 1-based.
    pub epoch: i64,
    /// The planned epochs (`epochs`, or `max_epochs` where early stopping may end
    /// the run sooner).
    pub epochs: i64,
    /// `loss` for a pretext job, `val_accuracy` for a downstream one.
    pub metric: String,
    pub value: f64,
    /// Training images per second over this epoch.
    pub images_per_s: f64,
    /// Seconds this epoch took.
    pub seconds: f64,
}

impl EpochSummary {
    /// Seconds the remaining epochs take at this epoch's pace.
    pub fn eta_seconds(&self) -> f64 {
        (self.epochs - self.epoch).max(0) as f64 * self.seconds
    }

    /// `epoch 3/15: loss 4.2100, 310 images/s, eta 42 s`.
    pub fn line(&self) -> String {
        format!(
            "epoch {}/{}: {} {:.4}, {:.0} images/s, eta {:.0} s",
            self.epoch,
            self.epochs,
            self.metric,
            self.value,
            self.images_per_s,
            self.eta_seconds()
        )
    }
}

/// A stage's expected remaining time: the work left (each running job's own ETA, or
/// the stage's mean duration less what it has run; the queued jobs at the mean
/// duration) spread over the jobs running now. `None` before any job of the stage
/// has finished, when there is no duration to go by, or when nothing runs.
pub fn stage_eta_seconds(
    mean_seconds: Option<f64>,
    queued: i64,
    running_left: &[Option<f64>],
) -> Option<f64> {
    if running_left.is_empty() {
        return if queued == 0 { Some(0.0) } else { None };
    }
    let mut work = 0.0;
    for left in running_left {
        work += match (left, mean_seconds) {
            (Some(left), _) => left.max(0.0),
            (None, Some(mean)) => mean,
            (None, None) => return None,
        };
    }
    if queued > 0 {
        work += queued as f64 * mean_seconds?;
    }
    Some(work / running_left.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_is_the_remaining_epochs_at_this_epochs_pace() {
        let summary = EpochSummary {
            epoch: 3,
            epochs: 15,
            metric: "loss".into(),
            value: 4.21,
            images_per_s: 310.4,
            seconds: 3.5,
        };
        assert_eq!(summary.eta_seconds(), 42.0);
        assert_eq!(
            summary.line(),
            "epoch 3/15: loss 4.2100, 310 images/s, eta 42 s"
        );
        let last = EpochSummary {
            epoch: 15,
            ..summary
        };
        assert_eq!(last.eta_seconds(), 0.0);
    }

    #[test]
    fn a_stage_eta_spreads_the_work_left_over_the_running_jobs() {
        // Two running (10 s and 30 s left), four queued at 60 s each: 280 s over 2.
        assert_eq!(
            stage_eta_seconds(Some(60.0), 4, &[Some(10.0), Some(30.0)]),
            Some(140.0)
        );
        // A running job without an epoch yet counts a mean duration.
        assert_eq!(stage_eta_seconds(Some(60.0), 0, &[None]), Some(60.0));
        // Nothing finished yet: no duration to go by.
        assert_eq!(stage_eta_seconds(None, 3, &[Some(10.0)]), None);
        // Queued work but nothing running: no pace.
        assert_eq!(stage_eta_seconds(Some(60.0), 3, &[]), None);
        assert_eq!(stage_eta_seconds(None, 0, &[]), Some(0.0));
    }
}
