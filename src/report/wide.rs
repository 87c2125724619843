//! One row per job, for a notebook: `report --wide`. Where the long form has one row
//! per job and metric, this has the job's parameters, its final metrics, state,
//! attempts, duration and the host and device of the attempt that produced its
//! result, each in its own column: `pandas.read_csv` or `pandas.DataFrame(json)` and
//! the frame is ready to group.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::long::param_columns;
use super::model::ReportInput;
use crate::store::table::Table;

/// The columns before the parameters.
const LEADING: [&str; 6] = ["sweep", "stage", "job_id", "parent", "state", "attempts"];
/// The columns after the metrics.
const TRAILING: [&str; 7] = [
    "duration_s",
    "started_at",
    "finished_at",
    "host",
    "device",
    "device_name",
    "error",
];

/// The wide table: [`LEADING`], the parameters (grid axes first, `seed` among them),
/// the numeric result fields in name order, [`TRAILING`]. A parameter or metric named
/// like another column gets a `param_` or `metric_` prefix, so no column means two
/// things. Host and device are known for succeeded jobs (their provenance).
pub fn table(input: &ReportInput) -> Table {
    let params = param_columns(input);
    let metrics: BTreeSet<String> = input
        .jobs
        .iter()
        .flat_map(|job| job.metrics().into_keys())
        .collect();
    let fixed = |name: &str| LEADING.contains(&name) || TRAILING.contains(&name);
    let mut columns: Vec<String> = LEADING.iter().map(|c| c.to_string()).collect();
    columns.extend(params.iter().map(|name| {
        if fixed(name) {
            format!("param_{name}")
        } else {
            name.clone()
        }
    }));
    columns.extend(metrics.iter().map(|name| {
        if fixed(name) || params.contains(name) {
            format!("metric_{name}")
        } else {
            name.clone()
        }
    }));
    columns.extend(TRAILING.iter().map(|c| c.to_string()));
    let mut table = Table::new(columns);
    for job in &input.jobs {
        let provenance = input
            .provenance
            .iter()
            .find(|row| row.job == job.id)
            .and_then(|row| row.provenance.as_ref());
        let job_metrics = job.metrics();
        let mut row = vec![
            json!(input.sweep),
            json!(job.stage),
            json!(job.id.to_string()),
            json!(job.parent.map(|id| id.to_string())),
            json!(job.state.as_str()),
            json!(job.attempt),
        ];
        row.extend(
            params
                .iter()
                .map(|name| job.params.get(name).cloned().unwrap_or(Value::Null)),
        );
        row.extend(
            metrics
                .iter()
                .map(|name| job_metrics.get(name).map_or(Value::Null, |n| json!(n))),
        );
        row.extend([
            json!(job.duration_seconds()),
            json!(job.started_at.map(|t| t.to_rfc3339())),
            json!(job.finished_at.map(|t| t.to_rfc3339())),
            json!(provenance.map(|p| &p.host)),
            json!(provenance.map(|p| &p.device)),
            json!(provenance.map(|p| &p.device_name)),
            json!(job.error),
        ]);
        table.push(row);
    }
    table
}

/// [`table`] as CSV: a header, then one record per job.
pub fn csv(input: &ReportInput) -> String {
    table(input).to_csv()
}

/// [`table`] as a JSON list of flat objects, one per job.
pub fn json(input: &ReportInput) -> Value {
    table(input).to_json_value()
}
