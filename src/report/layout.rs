//! A stage's jobs arranged as the seed report arranges them: per backbone, one panel
//! per batch size, rows by data amount, columns by projection size, each cell holding
//! the jobs (seeds) of that grid point. Markdown and the heat maps both draw from it.

use serde_json::Value;

use super::format::{same_value, thousands, trimmed};
use super::model::{JobRecord, JobState, StageInfo};

pub const BACKBONE: &str = "backbone";
pub const DATA_FRACTION: &str = "data_fraction";
pub const BATCH_SIZE: &str = "batch_size";
pub const PROJECTION_DIM: &str = "projection_dim";
pub const SEED: &str = "seed";
/// The pretext result field holding the final NT-Xent loss.
pub const LOSS: &str = "loss";
/// The pretext result field holding the number of images trained on.
pub const TRAIN_IMAGES: &str = "train_images";

/// Why a cell (or part of it) has no value yet, or why its value says nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mark {
    Running,
    Queued,
    /// At a rung of successive halving, waiting for its group.
    Paused,
    Failed,
    Cancelled,
    /// Stopped at a rung by successive halving: its loss there is not a final one.
    Stopped,
    /// No job for this grid point.
    Missing,
    /// The job succeeded but its result lacks the metric.
    NoValue,
    /// A loss not below its chance level: the encoder tells no view from another.
    AtChance,
}

impl Mark {
    pub const ALL: [Mark; 9] = [
        Mark::Queued,
        Mark::Running,
        Mark::Paused,
        Mark::Failed,
        Mark::Cancelled,
        Mark::Stopped,
        Mark::Missing,
        Mark::NoValue,
        Mark::AtChance,
    ];

    pub fn symbol(self) -> &'static str {
        match self {
            Mark::Queued => "…",
            Mark::Running => "▶",
            Mark::Failed => "✗",
            Mark::Paused => "‖",
            Mark::Cancelled => "⊘",
            Mark::Stopped => "✂",
            Mark::Missing => "–",
            Mark::NoValue => "?",
            Mark::AtChance => "≥",
        }
    }

    pub fn meaning(self) -> &'static str {
        match self {
            Mark::Queued => "queued",
            Mark::Running => "running",
            Mark::Failed => "failed",
            Mark::Paused => "paused at a rung of successive halving",
            Mark::Cancelled => "cancelled",
            Mark::Stopped => "stopped at a rung by successive halving (see its section)",
            Mark::Missing => "no job (not submitted or excluded)",
            Mark::NoValue => "finished without this metric",
            Mark::AtChance => "loss not below chance (learned nothing measurable)",
        }
    }
}

/// The jobs of one grid point; several when the sweep runs several seeds.
#[derive(Debug, Clone, Default)]
pub struct Cell<'a> {
    pub jobs: Vec<&'a JobRecord>,
}

impl<'a> Cell<'a> {
    /// The metric of every succeeded job that reported it.
    pub fn values(&self, metric: &str) -> Vec<f64> {
        self.jobs
            .iter()
            .filter(|job| job.state == JobState::Succeeded)
            .filter_map(|job| job.metric(metric))
            .collect()
    }

    /// Why some of the cell has no value, each reason once, in [`Mark`] order.
    pub fn marks(&self, metric: &str) -> Vec<Mark> {
        if self.jobs.is_empty() {
            return vec![Mark::Missing];
        }
        let mut marks: Vec<Mark> = self
            .jobs
            .iter()
            .filter_map(|job| match job.state {
                JobState::Queued => Some(Mark::Queued),
                JobState::Running => Some(Mark::Running),
                JobState::Failed => Some(Mark::Failed),
                JobState::Cancelled => Some(Mark::Cancelled),
                JobState::Paused => Some(Mark::Paused),
                JobState::Stopped => Some(Mark::Stopped),
                JobState::Succeeded if job.metric(metric).is_none() => Some(Mark::NoValue),
                JobState::Succeeded => None,
            })
            .collect();
        marks.sort();
        marks.dedup();
        marks
    }
}

/// One data amount of a panel: a cell per projection size.
#[derive(Debug, Clone)]
pub struct Row<'a> {
    /// `30.000` images, or the fraction as a percentage when the size is unknown.
    pub data_label: String,
    pub cells: Vec<Cell<'a>>,
}

/// One batch size of one backbone: the seed's single table.
#[derive(Debug, Clone)]
pub struct Panel<'a> {
    pub batch_size: Value,
    pub rows: Vec<Row<'a>>,
}

/// One backbone (and one value of every other grid axis, if the stage has more).
#[derive(Debug, Clone)]
pub struct Group<'a> {
    pub backbone: Value,
    /// Values of grid axes beyond the seed's four (and `seed`), e.g. `temperature`.
    pub extras: Vec<(String, Value)>,
    pub panels: Vec<Panel<'a>>,
}

/// A pretext stage arranged in the seed's tables.
#[derive(Debug, Clone)]
pub struct PretextLayout<'a> {
    /// The columns' projection sizes, the same for every panel.
    pub projections: Vec<Value>,
    pub groups: Vec<Group<'a>>,
}

/// A parameter of a job, `null` when the job does not have it.
pub fn param<'a>(job: &'a JobRecord, name: &str) -> &'a Value {
    job.params.get(name).unwrap_or(&Value::Null)
}

/// An axis's values: the grid's, in file order, then any other value the jobs carry,
/// in the jobs' order. A stage without the axis has one value, `null`.
pub fn axis_values(stage: &StageInfo, jobs: &[&JobRecord], axis: &str) -> Vec<Value> {
    let mut values: Vec<Value> = stage.axis_values(axis).to_vec();
    for job in jobs {
        let value = param(job, axis);
        if !values.iter().any(|known| same_value(known, value)) {
            values.push(value.clone());
        }
    }
    if values.is_empty() {
        values.push(Value::Null);
    }
    values
}

/// The grid axes that are none of the seed's four and not `seed`.
fn extra_axes(stage: &StageInfo) -> Vec<String> {
    stage
        .grid
        .iter()
        .map(|(name, _)| name.clone())
        .filter(|name| {
            ![BACKBONE, DATA_FRACTION, BATCH_SIZE, PROJECTION_DIM, SEED].contains(&name.as_str())
        })
        .collect()
}

/// Every combination of the given axes' values, the first axis varying slowest.
fn combinations(axes: &[(String, Vec<Value>)]) -> Vec<Vec<(String, Value)>> {
    let mut out = vec![Vec::new()];
    for (name, values) in axes {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                values.iter().map(move |value| {
                    let mut next = prefix.clone();
                    next.push((name.clone(), value.clone()));
                    next
                })
            })
            .collect();
    }
    out
}

/// The jobs of `stage` arranged per backbone, batch size, data amount and projection.
pub fn pretext_layout<'a>(stage: &'a StageInfo, all_jobs: &'a [JobRecord]) -> PretextLayout<'a> {
    let jobs: Vec<&JobRecord> = all_jobs
        .iter()
        .filter(|job| job.stage == stage.name)
        .collect();
    let backbones = axis_values(stage, &jobs, BACKBONE);
    let batch_sizes = axis_values(stage, &jobs, BATCH_SIZE);
    let fractions = axis_values(stage, &jobs, DATA_FRACTION);
    let projections = axis_values(stage, &jobs, PROJECTION_DIM);
    let extras: Vec<(String, Vec<Value>)> = extra_axes(stage)
        .into_iter()
        .map(|axis| {
            let values = axis_values(stage, &jobs, &axis);
            (axis, values)
        })
        .collect();

    let matches = |job: &JobRecord, axis: &str, value: &Value| same_value(param(job, axis), value);
    let mut groups = Vec::new();
    for backbone in &backbones {
        for extra in combinations(&extras) {
            let group_jobs: Vec<&JobRecord> = jobs
                .iter()
                .copied()
                .filter(|job| matches(job, BACKBONE, backbone))
                .filter(|job| extra.iter().all(|(axis, value)| matches(job, axis, value)))
                .collect();
            let panels = batch_sizes
                .iter()
                .map(|batch_size| Panel {
                    batch_size: batch_size.clone(),
                    rows: fractions
                        .iter()
                        .map(|fraction| {
                            let row_jobs: Vec<&JobRecord> = group_jobs
                                .iter()
                                .copied()
                                .filter(|job| matches(job, BATCH_SIZE, batch_size))
                                .filter(|job| matches(job, DATA_FRACTION, fraction))
                                .collect();
                            Row {
                                data_label: data_label(stage, fraction, &row_jobs),
                                cells: projections
                                    .iter()
                                    .map(|projection| Cell {
                                        jobs: row_jobs
                                            .iter()
                                            .copied()
                                            .filter(|job| matches(job, PROJECTION_DIM, projection))
                                            .collect(),
                                    })
                                    .collect(),
                            }
                        })
                        .collect(),
                })
                .collect();
            groups.push(Group {
                backbone: backbone.clone(),
                extras: extra,
                panels,
            });
        }
    }
    PretextLayout {
        projections,
        groups,
    }
}

/// A data amount as the seed writes it: the images a job of this row trained on
/// (`result.train_images`), else the dataset's nominal size times the fraction, else
/// the fraction as a percentage.
pub fn data_label(stage: &StageInfo, fraction: &Value, row_jobs: &[&JobRecord]) -> String {
    if let Some(images) = row_jobs.iter().find_map(|job| {
        job.result
            .as_ref()?
            .get(TRAIN_IMAGES)?
            .as_f64()
            .filter(|n| *n >= 0.0)
    }) {
        return thousands(images.round() as u64);
    }
    match (fraction.as_f64(), stage.nominal_size) {
        (Some(fraction), Some(size)) => thousands((size as f64 * fraction).round() as u64),
        (Some(fraction), None) => {
            format!("{}%", trimmed(fraction * 100.0, 1).trim_end_matches(".0"))
        }
        (None, Some(size)) => thousands(size),
        (None, None) => "all".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::StageKind;
    use serde_json::json;

    fn stage(nominal_size: Option<u64>) -> StageInfo {
        StageInfo {
            name: "pretext".into(),
            kind: StageKind::Pretext,
            grid: vec![(DATA_FRACTION.into(), vec![json!(1.0), json!(0.7)])],
            nominal_size,
            params: Default::default(),
        }
    }

    fn job(fraction: Value, result: Option<Value>, state: JobState) -> JobRecord {
        let mut params = serde_json::Map::new();
        params.insert(DATA_FRACTION.into(), fraction);
        JobRecord {
            id: uuid::Uuid::new_v4(),
            stage: "pretext".into(),
            kind: StageKind::Pretext,
            state,
            params,
            result,
            error: None,
            parent: None,
            attempt: 1,
            started_at: None,
            finished_at: None,
        }
    }

    #[test]
    fn data_label_prefers_the_measured_count() {
        let measured = job(
            json!(0.7),
            Some(json!({"loss": 3.0, "train_images": 20999})),
            JobState::Succeeded,
        );
        assert_eq!(
            data_label(&stage(Some(30_000)), &json!(0.7), &[&measured]),
            "20.999"
        );
        assert_eq!(data_label(&stage(Some(30_000)), &json!(0.7), &[]), "21.000");
        assert_eq!(data_label(&stage(None), &json!(0.7), &[]), "70%");
        assert_eq!(data_label(&stage(None), &json!(0.125), &[]), "12.5%");
    }

    #[test]
    fn axis_values_keep_grid_order_then_add_unknown_values() {
        let extra = job(json!(0.4), None, JobState::Queued);
        let same = job(json!(1), None, JobState::Queued);
        let values = axis_values(&stage(None), &[&extra, &same], DATA_FRACTION);
        assert_eq!(values, vec![json!(1.0), json!(0.7), json!(0.4)]);
    }

    #[test]
    fn marks_name_every_unfinished_state_once() {
        let done = job(json!(1.0), Some(json!({"loss": 3.0})), JobState::Succeeded);
        let bare = job(json!(1.0), Some(json!({})), JobState::Succeeded);
        let failed = job(json!(1.0), None, JobState::Failed);
        let failed_again = job(json!(1.0), None, JobState::Failed);
        let running = job(json!(1.0), None, JobState::Running);
        let cell = Cell {
            jobs: vec![&done, &failed, &running, &failed_again, &bare],
        };
        assert_eq!(
            cell.marks(LOSS),
            vec![Mark::Running, Mark::Failed, Mark::NoValue]
        );
        assert_eq!(cell.values(LOSS), vec![3.0]);
        assert_eq!(Cell::default().marks(LOSS), vec![Mark::Missing]);
    }
}
