//! Successive halving over a stage's grid: the declared rule, the cut at one rung, and
//! a replay of stored curves through the rule (what `bench halving` measures).
//!
//! The rule is synchronous within a group: a job that reaches a rung pauses there (its
//! checkpoint stored, its device given back) until every job of its group has reached
//! the rung or ended, then the group is cut in one decision. Asynchronous halving
//! (ASHA) promotes a job as soon as it ranks in the top fraction of those seen so
//! far, which keeps devices busier but makes who stops depend on which job a worker
//! happened to finish first; here the same curves always stop the same jobs, a
//! decision can be checked against any other implementation, and a paused job holds
//! no device, so the cost is only the wait for the slowest job of a group.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `[stages.halving]`: at each rung, within each group of the `per` parameters, the
/// jobs outside the best `keep` fraction stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HalvingSpec {
    /// A per-epoch metric of the stage (`loss` for pretext).
    pub metric: String,
    pub mode: Mode,
    /// Epoch counts, strictly increasing, each below the stage's epochs.
    pub rungs: Vec<i64>,
    pub keep: Keep,
    /// Parameters that form the groups; jobs are compared only within one.
    pub per: Vec<String>,
}

/// Which end of the metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Min,
    Max,
}

/// The fraction of a rung's jobs that go on, kept exact (`1/3` is not 0.333).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keep {
    pub numerator: u32,
    pub denominator: u32,
}

impl Keep {
    /// Parses `"1/3"` or a decimal such as `0.5`, strictly between 0 and 1.
    pub fn parse(text: &str) -> Result<Keep, String> {
        let (numerator, denominator) = match text.split_once('/') {
            Some((n, d)) => (
                n.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("{text:?} is not a fraction"))?,
                d.trim()
                    .parse::<u32>()
                    .map_err(|_| format!("{text:?} is not a fraction"))?,
            ),
            None => {
                let value: f64 = text
                    .trim()
                    .parse()
                    .map_err(|_| format!("{text:?} is not a number or a fraction like \"1/3\""))?;
                if !(value > 0.0 && value < 1.0) {
                    return Err(format!("{text} is not between 0 and 1"));
                }
                // Decimals as written: 0.25 is 25/100, exactly.
                let scale = 1_000_000u32;
                ((value * f64::from(scale)).round() as u32, scale)
            }
        };
        if numerator == 0 || denominator == 0 || numerator >= denominator {
            return Err(format!("{text} is not a fraction between 0 and 1"));
        }
        Ok(Keep {
            numerator,
            denominator,
        })
    }

    /// How many of `n` jobs go on: the fraction rounded up, so that at least one does.
    pub fn of(self, n: usize) -> usize {
        let n = n as u64;
        let kept = (n * u64::from(self.numerator)).div_ceil(u64::from(self.denominator));
        kept.max(1).min(n) as usize
    }
}

impl std::fmt::Display for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.numerator, self.denominator)
    }
}

impl HalvingSpec {
    /// The first rung after `epoch`, where a job that has run `epoch` epochs pauses
    /// next; `None` past the last one.
    pub fn next_rung(&self, epoch: i64) -> Option<i64> {
        self.rungs.iter().copied().find(|&rung| rung > epoch)
    }

    /// Orders two values best first; a missing value (NaN) is worst.
    fn better(&self, a: f64, b: f64) -> Ordering {
        match (a.is_nan(), b.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => match self.mode {
                Mode::Min => a.total_cmp(&b),
                Mode::Max => b.total_cmp(&a),
            },
        }
    }

    /// Cuts one group at one rung: best first by value (the job key breaks ties), the
    /// first `keep.of(n)` go on.
    pub fn cut(&self, candidates: &[RungCandidate]) -> RungCut {
        let mut ranked = self.ranked(candidates);
        let kept = self.keep.of(ranked.len());
        let cut = ranked.get(kept.saturating_sub(1)).map(|c| c.value);
        let stopped = ranked.split_off(kept.min(ranked.len()));
        RungCut {
            kept: ranked,
            stopped,
            cut,
        }
    }
}

impl HalvingSpec {
    /// Best first; the job key breaks ties.
    fn ranked(&self, candidates: &[RungCandidate]) -> Vec<RungCandidate> {
        let mut ranked = candidates.to_vec();
        ranked.sort_by(|a, b| {
            self.better(a.value, b.value)
                .then_with(|| a.key.cmp(&b.key))
        });
        ranked
    }
}

/// A job at a rung with the value it is compared on (NaN when it reported none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RungCandidate {
    pub job_id: Uuid,
    pub key: String,
    pub value: f64,
}

/// One rung decision: who goes on (best first), who stops, and the last kept value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RungCut {
    pub kept: Vec<RungCandidate>,
    pub stopped: Vec<RungCandidate>,
    pub cut: Option<f64>,
}

/// One job's curve for a replay: its metric at each epoch, from 1.
#[derive(Debug, Clone)]
pub struct Curve {
    pub job_id: Uuid,
    pub key: String,
    pub values: Vec<f64>,
}

/// What a replay of one group's curves through the rule gives.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    /// `(job, rung it stopped at)`, in the order the rungs stopped them.
    pub stopped: Vec<(Uuid, i64)>,
    /// Epochs trained with the rule, and without it.
    pub epochs_spent: i64,
    pub epochs_full: i64,
    /// The best job at the end with the rule, and without it.
    pub winner: Option<Uuid>,
    pub winner_full: Option<Uuid>,
}

impl HalvingSpec {
    /// Replays a group's complete curves through the rule, rung by rung.
    pub fn replay(&self, curves: &[Curve]) -> Replay {
        let at = |curve: &Curve, epoch: i64| {
            usize::try_from(epoch - 1)
                .ok()
                .and_then(|i| curve.values.get(i).copied())
                .unwrap_or(f64::NAN)
        };
        let candidate = |curve: &Curve, epoch: i64| RungCandidate {
            job_id: curve.job_id,
            key: curve.key.clone(),
            value: at(curve, epoch),
        };
        let mut alive: Vec<&Curve> = curves.iter().collect();
        let mut stopped = Vec::new();
        let mut epochs_spent = 0;
        for &rung in &self.rungs {
            let cut = self.cut(&alive.iter().map(|c| candidate(c, rung)).collect::<Vec<_>>());
            for gone in &cut.stopped {
                stopped.push((gone.job_id, rung));
                epochs_spent += rung;
            }
            alive.retain(|c| cut.kept.iter().any(|k| k.job_id == c.job_id));
        }
        let last = |curve: &Curve| curve.values.len() as i64;
        epochs_spent += alive.iter().map(|c| last(c)).sum::<i64>();
        let best = |set: &[&Curve]| {
            let finals: Vec<RungCandidate> = set.iter().map(|c| candidate(c, last(c))).collect();
            self.ranked(&finals).first().map(|c| c.job_id)
        };
        Replay {
            stopped,
            epochs_spent,
            epochs_full: curves.iter().map(last).sum(),
            winner: best(&alive),
            winner_full: best(&curves.iter().collect::<Vec<_>>()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(keep: &str, rungs: &[i64]) -> HalvingSpec {
        HalvingSpec {
            metric: "loss".into(),
            mode: Mode::Min,
            rungs: rungs.to_vec(),
            keep: Keep::parse(keep).unwrap(),
            per: vec!["batch_size".into()],
        }
    }

    fn candidate(key: &str, value: f64) -> RungCandidate {
        RungCandidate {
            job_id: Uuid::now_v7(),
            key: key.into(),
            value,
        }
    }

    #[test]
    fn a_third_of_nine_is_three_and_of_two_is_one() {
        let third = Keep::parse("1/3").unwrap();
        assert_eq!(
            (third.of(9), third.of(3), third.of(2), third.of(1)),
            (3, 1, 1, 1)
        );
        assert_eq!(third.of(4), 2, "4/3 rounds up");
        let half = Keep::parse("0.5").unwrap();
        assert_eq!((half.of(5), half.of(4)), (3, 2));
        for bad in ["0", "1", "1.5", "3/2", "0/4", "a/b", "-0.5"] {
            assert!(Keep::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_cut_keeps_the_lowest_losses_and_breaks_ties_by_key() {
        let rule = rule("1/2", &[5]);
        let cut = rule.cut(&[
            candidate("d", 4.0),
            candidate("a", 3.0),
            candidate("c", 3.0),
            candidate("b", f64::NAN),
        ]);
        let keys = |set: &[RungCandidate]| set.iter().map(|c| c.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&cut.kept), ["a", "c"]);
        assert_eq!(keys(&cut.stopped), ["d", "b"], "a missing value is worst");
        assert_eq!(cut.cut, Some(3.0));
        let mut max = rule.clone();
        max.mode = Mode::Max;
        assert_eq!(
            keys(&max.cut(&[candidate("x", 1.0), candidate("y", 2.0)]).kept),
            ["y"]
        );
    }

    #[test]
    fn a_replay_counts_the_epochs_each_job_ran() {
        // Four jobs of 10 epochs, rungs 2 and 5, keep 1/2: two stop at 2, one at 5.
        let curves: Vec<Curve> = [[9.0, 8.0, 7.0, 6.0, 5.0], [9.0, 7.0, 6.0, 5.0, 4.0]]
            .iter()
            .chain([[9.0, 6.0, 5.5, 5.4, 5.3], [9.0, 9.0, 9.0, 9.0, 9.0]].iter())
            .enumerate()
            .map(|(i, head)| Curve {
                job_id: Uuid::from_u128(i as u128 + 1),
                key: format!("k{i}"),
                values: head
                    .iter()
                    .copied()
                    .chain([1.0; 5].map(|v| v + i as f64))
                    .collect(),
            })
            .collect();
        let replay = rule("1/2", &[2, 5]).replay(&curves);
        assert_eq!(
            replay.stopped,
            [
                (Uuid::from_u128(1), 2),
                (Uuid::from_u128(4), 2),
                (Uuid::from_u128(3), 5)
            ]
        );
        assert_eq!(
            (replay.epochs_spent, replay.epochs_full),
            (2 + 2 + 5 + 10, 40)
        );
        assert_eq!(replay.winner, Some(Uuid::from_u128(2)));
        assert_eq!(
            replay.winner_full,
            Some(Uuid::from_u128(1)),
            "job 1 ends at 1.0"
        );
    }
}
