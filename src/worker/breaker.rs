//! The circuit breaker: a worker whose last jobs all failed for reasons of its
//! machine (a broken GPU, a full disk, an unreachable artifact store) stops claiming
//! and exits non-zero, so that a launcher, systemd or Kubernetes restarts or
//! reschedules it, instead of failing the rest of the queue one job at a time.

use crate::store::{Blame, Finish};

/// Consecutive infrastructure failures of one worker's attempts.
#[derive(Debug, Default)]
pub(crate) struct Breaker {
    streak: u32,
    last: Option<String>,
}

/// Why a breaker tripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tripped {
    pub count: u32,
    /// The last failure, `kind: first line`.
    pub last: String,
}

impl Breaker {
    /// Counts an attempt's recorded end: an infrastructure failure adds to the streak,
    /// a success or the job's own failure (the machine ran it) clears it, and a
    /// cancellation says nothing about the machine.
    pub fn record(&mut self, finish: &Finish) {
        match finish {
            Finish::Cancelled => {}
            Finish::Failed(failure) if failure.blame == Blame::Infrastructure => {
                self.streak += 1;
                let first_line = failure.message.lines().next().unwrap_or_default();
                self.last = Some(format!("{}: {first_line}", failure.kind));
            }
            _ => {
                self.streak = 0;
                self.last = None;
            }
        }
    }

    /// Tripped once `limit` ends in a row were the machine's; a limit of 0 never trips.
    pub fn tripped(&self, limit: u32) -> Option<Tripped> {
        (limit > 0 && self.streak >= limit).then(|| Tripped {
            count: self.streak,
            last: self.last.clone().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Failure, FailureKind};

    fn broken() -> Finish {
        Finish::Failed(Failure::infrastructure(
            FailureKind::Device,
            "CUDA error: unspecified launch failure\nmore",
        ))
    }

    #[test]
    fn trips_after_n_infrastructure_failures_in_a_row_only() {
        let mut breaker = Breaker::default();
        breaker.record(&broken());
        breaker.record(&broken());
        assert_eq!(breaker.tripped(3), None);
        // The job's own failure shows the machine works: the streak starts again.
        breaker.record(&Finish::Failed(Failure::job(FailureKind::ExitStatus, "3")));
        for _ in 0..2 {
            breaker.record(&broken());
        }
        assert_eq!(breaker.tripped(3), None);
        breaker.record(&broken());
        assert_eq!(
            breaker.tripped(3),
            Some(Tripped {
                count: 3,
                last: "device: CUDA error: unspecified launch failure".into()
            })
        );
        assert_eq!(breaker.tripped(0), None, "0 turns the breaker off");
        breaker.record(&Finish::Cancelled);
        assert!(breaker.tripped(3).is_some());
        breaker.record(&Finish::Succeeded(serde_json::json!({})));
        assert_eq!(breaker.tripped(3), None);
    }
}
