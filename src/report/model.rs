//! What a report is made from: the sweep's stages, its jobs with their final results,
//! the stored selection decisions and the per-epoch loss curves. The store fills these
//! types; the renderers in this module never touch the store.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};
use uuid::Uuid;

use crate::sweep::{Params, StageKind};

/// Everything one report shows, for one sweep.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ReportInput {
    pub sweep: String,
    /// In the sweep file's order.
    pub stages: Vec<StageInfo>,
    /// In the store's order (creation order); renderers sort by the grid, not by this.
    pub jobs: Vec<JobRecord>,
    /// The stored selection decisions, one per group.
    pub decisions: Vec<DecisionRecord>,
    /// Per-epoch `loss` of pretext jobs, `(epoch, loss)` sorted by epoch, for the plots.
    pub curves: BTreeMap<Uuid, Vec<(i64, f64)>>,
    /// What produced each succeeded job's result.
    #[serde(default)]
    pub provenance: Vec<crate::store::JobProvenance>,
    /// Every metric history of the downstream and command jobs, by job and name,
    /// `(step, value)` sorted by step: for `plot` (validation curves, a command's
    /// own metrics), filled by [`super::from_store::load_histories`]; the tables
    /// never need it.
    #[serde(default)]
    pub histories: BTreeMap<Uuid, BTreeMap<String, Vec<(i64, f64)>>>,
    /// Every rung decision of successive halving, by stage, group and rung.
    #[serde(default)]
    pub halving: Vec<crate::store::RungDecision>,
}

/// One stage of the sweep, as far as the report needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageInfo {
    pub name: String,
    pub kind: StageKind,
    /// Grid axes in file order with their values. The values order the tables' rows,
    /// columns and tables, and name the cells that have no job yet (shown as missing).
    /// Values seen on jobs but not listed here are appended in the jobs' order.
    pub grid: Vec<(String, Vec<Value>)>,
    /// The dataset's nominal size (`max_total`), which turns a `data_fraction` into an
    /// image count when a job's result does not carry `train_images`.
    pub nominal_size: Option<u64>,
    /// The stage's fixed parameters (`epochs = 100`, `lr = 0.2`, …), shown above its
    /// tables.
    #[serde(default)]
    pub params: Params,
}

impl StageInfo {
    /// The values listed for one grid axis, empty when the stage has no such axis.
    pub fn axis_values(&self, axis: &str) -> &[Value] {
        self.grid
            .iter()
            .find(|(name, _)| name == axis)
            .map(|(_, values)| values.as_slice())
            .unwrap_or(&[])
    }
}

/// One job and, once it finished, its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: Uuid,
    pub stage: String,
    pub kind: StageKind,
    pub state: JobState,
    /// Axis values, fixed parameters and `seed`.
    pub params: Params,
    /// The final result object: `loss` (and `train_images`) for pretext jobs;
    /// `accuracy`, `precision`, `recall`, `f1` for downstream jobs.
    pub result: Option<Value>,
    pub error: Option<String>,
    /// The pretext job whose checkpoint a downstream job starts from.
    pub parent: Option<Uuid>,
    pub attempt: i32,
    /// When the last attempt started and the job ended (none for imported rows).
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobRecord {
    /// Seconds from the last attempt's start to the job's end.
    pub fn duration_seconds(&self) -> Option<f64> {
        let (started, finished) = (self.started_at?, self.finished_at?);
        Some((finished - started).num_milliseconds() as f64 / 1000.0)
    }

    /// A numeric field of the result, if the job has a result with that field.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.result.as_ref()?.get(name)?.as_f64()
    }

    /// How the job's `loss` was summed: what its result declares (an import from a
    /// sum-convention run), else sweeper's mean.
    pub fn loss_convention(&self) -> super::LossConvention {
        self.result
            .as_ref()
            .and_then(|result| result.get(super::LossConvention::FIELD))
            .and_then(Value::as_str)
            .and_then(super::LossConvention::parse)
            .unwrap_or_default()
    }

    /// The numeric fields of the result (the final metrics), by name, as stored.
    pub fn metrics(&self) -> BTreeMap<String, Number> {
        match &self.result {
            Some(Value::Object(fields)) => fields
                .iter()
                .filter_map(|(name, value)| match value {
                    Value::Number(number) => Some((name.clone(), number.clone())),
                    _ => None,
                })
                .collect(),
            _ => BTreeMap::new(),
        }
    }
}

/// The store's job state: one definition, which reports read and write.
pub use crate::store::JobState;

/// One stored selection decision: the winners of one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRecord {
    /// The selection's name in the sweep file.
    pub selection: String,
    /// The group's values of the selection's `per` parameters.
    pub group: Params,
    /// Best first.
    pub winners: Vec<Uuid>,
    /// The rule as the user reads it, e.g. `max batch_size, then min loss, top 1`.
    pub rule: String,
    /// Whatever else the selection stored. When it holds a `candidates` array, its
    /// length is the number of candidates compared; otherwise the report counts the
    /// group's jobs in the winners' stage.
    pub detail: Value,
    /// 1 for a first decision, one more each time the group was decided again.
    #[serde(default = "first_revision")]
    pub revision: i32,
    /// Set when the rule now picks other winners but the decision was kept.
    #[serde(default)]
    pub stale: Option<StaleMark>,
}

fn first_revision() -> i32 {
    1
}

/// A decision kept although its rule picks otherwise now, because downstream jobs of
/// the winners it would replace had started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StaleMark {
    /// Why the decision was kept.
    pub reason: String,
    /// What the rule picks now, best first.
    pub winners: Vec<Uuid>,
}
