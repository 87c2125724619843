//! What a succeeded `command` job stores as its result: the final and the best value
//! of every metric its program printed, and whatever its `{"result": {…}}` lines set.
//!
//! For a metric named `loss` the result holds
//!
//! - `loss`: the value at the highest step (the later line when a step repeats);
//! - `loss_best`: the best value of any step, the lowest or the highest by the
//!   metric's [`Goal`].
//!
//! A metric line may say its goal (`"goal": "min"` or `"max"`); otherwise the name
//! decides: the lowest is best when a word of the name (words split at anything but a
//! letter or a digit) is one of [`LOWER_IS_BETTER`] (`loss`, `val_loss`, `top1-error`,
//! `train/mse`), the highest for every other name (`accuracy`, `f1`, `reward`).
//!
//! Keys are written in this order, a later one replacing an earlier one of the same
//! name: every `<name>_best`, then every final value, then the keys of the program's
//! `result` lines (a later line over an earlier one). So a metric printed as
//! `loss_best` keeps its own final value, and the program has the last word.
//!
//! Only the attempt that succeeded is summarised: a program that resumes from its own
//! checkpoint and wants the earlier steps counted says so in a `result` line.

use std::collections::BTreeMap;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::store::MetricPoint;

/// Words of a metric's name that make its lowest value the best.
pub const LOWER_IS_BETTER: &[&str] = &[
    "loss",
    "error",
    "err",
    "mse",
    "mae",
    "rmse",
    "nll",
    "perplexity",
    "ppl",
];

/// The suffix of the key holding a metric's best value.
pub const BEST_SUFFIX: &str = "_best";

/// Which value of a metric is the best.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Goal {
    Min,
    Max,
}

impl Goal {
    /// The goal a metric's name implies when its lines name none.
    pub fn of_name(name: &str) -> Goal {
        let lower = name.to_lowercase();
        let falls = lower
            .split(|c: char| !c.is_alphanumeric())
            .any(|word| LOWER_IS_BETTER.contains(&word));
        if falls {
            Goal::Min
        } else {
            Goal::Max
        }
    }

    /// The word a metric line uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Goal::Min => "min",
            Goal::Max => "max",
        }
    }
}

impl std::str::FromStr for Goal {
    type Err = String;

    fn from_str(text: &str) -> Result<Goal, String> {
        [Goal::Min, Goal::Max]
            .into_iter()
            .find(|goal| goal.as_str() == text)
            .ok_or_else(|| format!("unknown goal {text:?}: use \"min\" or \"max\""))
    }
}

/// One metric's points, summarised as they come.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricSummary {
    pub goal: Goal,
    /// Whether a line named the goal (else the name implied it).
    pub goal_given: bool,
    /// `(step, value)` of the highest step, the later line when a step repeats.
    pub last: (i64, f64),
    /// `(step, value)` of the lowest value, the earliest step among equals.
    pub min: (i64, f64),
    /// `(step, value)` of the highest value, the earliest step among equals.
    pub max: (i64, f64),
    pub points: u64,
}

impl MetricSummary {
    fn new(point: &MetricPoint, goal: Option<Goal>) -> MetricSummary {
        let at = (point.step, point.value);
        MetricSummary {
            goal: goal.unwrap_or_else(|| Goal::of_name(&point.name)),
            goal_given: goal.is_some(),
            last: at,
            min: at,
            max: at,
            points: 1,
        }
    }

    fn add(&mut self, point: &MetricPoint, goal: Option<Goal>) {
        if let Some(goal) = goal {
            self.goal = goal;
            self.goal_given = true;
        }
        let at = (point.step, point.value);
        if point.step >= self.last.0 {
            self.last = at;
        }
        if better(at, self.min, Goal::Min) {
            self.min = at;
        }
        if better(at, self.max, Goal::Max) {
            self.max = at;
        }
        self.points += 1;
    }

    /// The final value.
    pub fn last(&self) -> f64 {
        self.last.1
    }

    /// `(step, value)` of the best value by the goal.
    pub fn best(&self) -> (i64, f64) {
        match self.goal {
            Goal::Min => self.min,
            Goal::Max => self.max,
        }
    }
}

/// Whether `candidate` beats `held` for `goal`; an equal value at an earlier step does.
fn better(candidate: (i64, f64), held: (i64, f64), goal: Goal) -> bool {
    let (step, value) = candidate;
    match goal {
        Goal::Min if value < held.1 => true,
        Goal::Max if value > held.1 => true,
        _ => value == held.1 && step < held.0,
    }
}

/// The result of a succeeded command job; serialises as one flat JSON object (see the
/// module's documentation for its keys).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommandResult {
    /// Every metric printed, by name.
    pub metrics: BTreeMap<String, MetricSummary>,
    /// What the program's `result` lines set, later lines over earlier ones.
    pub declared: Map<String, Value>,
}

impl CommandResult {
    /// Counts one metric line; `goal` is what the line said, if anything.
    pub fn record(&mut self, point: &MetricPoint, goal: Option<Goal>) {
        match self.metrics.get_mut(&point.name) {
            Some(summary) => summary.add(point, goal),
            None => {
                self.metrics
                    .insert(point.name.clone(), MetricSummary::new(point, goal));
            }
        }
    }

    /// Takes the fields of one `result` line.
    pub fn declare(&mut self, fields: Map<String, Value>) {
        self.declared.extend(fields);
    }

    /// The flat object the store keeps.
    pub fn to_map(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for (name, summary) in &self.metrics {
            out.insert(
                format!("{name}{BEST_SUFFIX}"),
                Value::from(summary.best().1),
            );
        }
        for (name, summary) in &self.metrics {
            out.insert(name.clone(), Value::from(summary.last()));
        }
        for (key, value) in &self.declared {
            out.insert(key.clone(), value.clone());
        }
        out
    }
}

impl Serialize for CommandResult {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = self.to_map();
        let mut map = serializer.serialize_map(Some(fields.len()))?;
        for (key, value) in &fields {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn point(name: &str, step: i64, value: f64) -> MetricPoint {
        MetricPoint {
            step,
            name: name.into(),
            value,
        }
    }

    #[test]
    fn names_imply_their_goal() {
        for name in ["loss", "val_loss", "top1-error", "train/MSE", "ppl", "nll"] {
            assert_eq!(Goal::of_name(name), Goal::Min, "{name}");
        }
        for name in ["accuracy", "f1", "reward", "glossary", "errand", "loss2"] {
            assert_eq!(Goal::of_name(name), Goal::Max, "{name}");
        }
        assert_eq!("min".parse::<Goal>(), Ok(Goal::Min));
        assert!("lowest".parse::<Goal>().is_err());
    }

    #[test]
    fn final_and_best_values_with_declared_keys_last() {
        let mut result = CommandResult::default();
        for (step, loss) in [(0, 2.0), (1, 0.5), (2, 0.75)] {
            result.record(&point("loss", step, loss), None);
        }
        for (step, accuracy) in [(0, 0.5), (1, 0.9), (2, 0.8)] {
            result.record(&point("accuracy", step, accuracy), None);
        }
        // Printed out of order: the highest step is the final one.
        result.record(&point("score", 5, 3.0), Some(Goal::Min));
        result.record(&point("score", 4, 1.0), None);
        result.declare(
            json!({"accuracy": 0.85, "epochs": 3})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(
            serde_json::to_value(&result).unwrap(),
            json!({
                "loss": 0.75, "loss_best": 0.5,
                "accuracy": 0.85, "accuracy_best": 0.9,
                "score": 3.0, "score_best": 1.0,
                "epochs": 3,
            })
        );
        assert_eq!(result.metrics["loss"].best(), (1, 0.5));
        assert_eq!(result.metrics["score"].points, 2);
        assert!(result.metrics["score"].goal_given);
    }

    #[test]
    fn a_repeated_step_keeps_the_later_line_and_equal_bests_the_earlier_step() {
        let mut result = CommandResult::default();
        result.record(&point("loss", 3, 1.0), None);
        result.record(&point("loss", 1, 0.5), None);
        result.record(&point("loss", 3, 0.7), None);
        result.record(&point("loss", 0, 0.5), None);
        let loss = result.metrics["loss"];
        assert_eq!(loss.last, (3, 0.7));
        assert_eq!(loss.best(), (0, 0.5));
    }

    #[test]
    fn a_metric_named_like_a_best_key_keeps_its_own_value() {
        let mut result = CommandResult::default();
        result.record(&point("loss", 0, 1.0), None);
        result.record(&point("loss_best", 0, 7.0), None);
        let map = result.to_map();
        assert_eq!(map["loss_best"], json!(7.0));
        assert_eq!(map["loss_best_best"], json!(7.0));
        assert!(CommandResult::default().to_map().is_empty());
    }
}
