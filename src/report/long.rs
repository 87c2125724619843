//! Every job with its parameters and final metrics, in long form: CSV with one row per
//! job and metric, JSON with one object per job.

use serde_json::{json, Value};

use super::model::ReportInput;
use super::names::ModelNames;

/// The CSV columns before the parameters.
const LEADING: [&str; 5] = ["sweep", "stage", "job_id", "parent", "state"];
/// The CSV columns after the parameters.
const TRAILING: [&str; 2] = ["metric", "value"];

/// Parameter names over all jobs: the stages' grid axes in file order, then the rest
/// sorted.
pub(super) fn param_columns(input: &ReportInput) -> Vec<String> {
    let mut columns: Vec<String> = Vec::new();
    for (axis, _) in input.stages.iter().flat_map(|stage| stage.grid.iter()) {
        if !columns.contains(axis) {
            columns.push(axis.clone());
        }
    }
    let mut rest: Vec<String> = input
        .jobs
        .iter()
        .flat_map(|job| job.params.keys())
        .filter(|key| !columns.contains(key))
        .cloned()
        .collect();
    rest.sort();
    rest.dedup();
    columns.extend(rest);
    columns
}

/// A parameter in a CSV cell: strings as they are, numbers and booleans as JSON
/// writes them, lists and tables as JSON, nothing for a missing value.
fn csv_value(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    }
}

/// A CSV field, quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn push_record<'a>(out: &mut String, fields: impl Iterator<Item = &'a str>) {
    let fields: Vec<String> = fields.map(csv_field).collect();
    out.push_str(&fields.join(","));
    out.push('\n');
}

/// One row per job and numeric result field; a job without any (queued, running,
/// failed) still has one row, with `metric` and `value` empty.
pub fn csv(input: &ReportInput) -> String {
    let params = param_columns(input);
    let header: Vec<String> = LEADING
        .iter()
        .map(|name| name.to_string())
        .chain(params.iter().map(|name| {
            // A parameter named like a fixed column keeps its meaning under a prefix.
            if LEADING.contains(&name.as_str()) || TRAILING.contains(&name.as_str()) {
                format!("param_{name}")
            } else {
                name.clone()
            }
        }))
        .chain(TRAILING.iter().map(|name| name.to_string()))
        .collect();
    let mut out = String::new();
    push_record(&mut out, header.iter().map(String::as_str));
    for job in &input.jobs {
        let leading = [
            input.sweep.clone(),
            job.stage.clone(),
            job.id.to_string(),
            job.parent.map(|id| id.to_string()).unwrap_or_default(),
            job.state.as_str().to_string(),
        ];
        let values: Vec<String> = params
            .iter()
            .map(|name| csv_value(job.params.get(name)))
            .collect();
        let job_metrics = job.metrics();
        let rows: Vec<[String; 2]> = if job_metrics.is_empty() {
            vec![[String::new(), String::new()]]
        } else {
            job_metrics
                .iter()
                .map(|(name, value)| [name.clone(), value.to_string()])
                .collect()
        };
        for metric in rows {
            let record = leading.iter().chain(values.iter()).chain(metric.iter());
            push_record(&mut out, record.map(String::as_str));
        }
    }
    out
}

/// The sweep's stages, every job (parameters, numeric metrics, the full result and
/// any error) and the selection decisions with their winners' model names.
pub fn json(input: &ReportInput) -> Value {
    let names = ModelNames::new(input);
    let stages: Vec<Value> = input
        .stages
        .iter()
        .map(|stage| {
            json!({
                "name": stage.name,
                "kind": stage.kind.as_str(),
                "grid": stage.grid.iter().map(|(axis, values)| json!({"axis": axis, "values": values})).collect::<Vec<_>>(),
                "nominal_size": stage.nominal_size,
                "params": stage.params,
            })
        })
        .collect();
    let jobs: Vec<Value> = input
        .jobs
        .iter()
        .map(|job| {
            json!({
                "id": job.id,
                "stage": job.stage,
                "kind": job.kind.as_str(),
                "state": job.state.as_str(),
                "attempt": job.attempt,
                "parent": job.parent,
                "params": job.params,
                "metrics": job.metrics(),
                "result": job.result,
                "error": job.error,
            })
        })
        .collect();
    let selections: Vec<Value> = input
        .decisions
        .iter()
        .map(|decision| {
            json!({
                "selection": decision.selection,
                "group": decision.group,
                "rule": decision.rule,
                "winners": decision.winners.iter().map(|id| json!({"id": id, "model": names.name(*id)})).collect::<Vec<_>>(),
                "detail": decision.detail,
                "revision": decision.revision,
                "stale": decision.stale.as_ref().map(|stale| json!({
                    "reason": stale.reason,
                    "picks_now": stale.winners.iter().map(|id| json!({"id": id, "model": names.name(*id)})).collect::<Vec<_>>(),
                })),
            })
        })
        .collect();
    json!({
        "sweep": input.sweep,
        "stages": stages,
        "jobs": jobs,
        "selections": selections,
        "baselines": super::baseline::json(input, &names),
    })
}
