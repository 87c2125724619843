//! Whether pretraining helped: every linear and fine-tune job measured against the
//! same protocol from a randomly initialised backbone of the same architecture (a job
//! with `baseline = true`, see [`crate::sweep::expand::baselines`]).
//!
//! The gain of a model is its mean minus the baseline's mean over the seeds that
//! finished, for accuracy and F1; Markdown prints it beside the model, JSON lists it
//! per model under `baselines`.

use serde_json::{json, Value};

use super::model::{JobRecord, JobState, ReportInput};
use super::names::ModelNames;
use crate::sweep::params::{is_baseline, DownstreamParams};
use crate::sweep::Params;

/// The metrics a gain is given for: result field and heading.
pub const GAIN_METRICS: [(&str, &str); 2] = [("accuracy", "accuracy"), ("f1", "F1")];

/// The architecture a downstream job evaluates: its `backbone` and `image_size`.
pub fn architecture(job: &JobRecord) -> Params {
    DownstreamParams::ARCHITECTURE_KEYS
        .iter()
        .filter_map(|key| Some(((*key).to_owned(), job.params.get(*key)?.clone())))
        .collect()
}

/// Whether the job is a random-init baseline.
pub fn is_baseline_job(job: &JobRecord) -> bool {
    is_baseline(&job.params)
}

/// A stage's baseline jobs of one architecture.
fn baselines_of<'a>(
    input: &'a ReportInput,
    stage: &str,
    architecture: &Params,
) -> Vec<&'a JobRecord> {
    input
        .jobs
        .iter()
        .filter(|job| job.stage == stage && is_baseline_job(job))
        .filter(|job| self::architecture(job) == *architecture)
        .collect()
}

/// The mean of `metric` over the jobs that succeeded with it.
pub fn mean_of(jobs: &[&JobRecord], metric: &str) -> Option<f64> {
    let values: Vec<f64> = jobs
        .iter()
        .filter(|job| job.state == JobState::Succeeded)
        .filter_map(|job| job.metric(metric))
        .collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// `jobs`' mean of `metric` minus the mean of the stage's baselines of their
/// architecture; `None` while either side has no value.
pub fn gain(input: &ReportInput, stage: &str, jobs: &[&JobRecord], metric: &str) -> Option<f64> {
    let first = jobs.first()?;
    let baseline = baselines_of(input, stage, &architecture(first));
    Some(mean_of(jobs, metric)? - mean_of(&baseline, metric)?)
}

/// Whether a stage has any baseline jobs.
pub fn stage_has_baselines(input: &ReportInput, stage: &str) -> bool {
    input
        .jobs
        .iter()
        .any(|job| job.stage == stage && is_baseline_job(job))
}

/// `+0.123` or `−0.045` at `decimals`; a gain that rounds to zero has no sign.
pub fn signed(gain: f64, decimals: usize) -> String {
    let text = super::format::trimmed(gain.abs(), decimals);
    if text.chars().all(|c| c == '0' || c == '.') {
        text
    } else if gain > 0.0 {
        format!("+{text}")
    } else {
        format!("−{text}")
    }
}

/// For JSON: per downstream stage and architecture, the baseline's means and each
/// model's means and gains.
pub fn json(input: &ReportInput, names: &ModelNames) -> Vec<Value> {
    let mut out = Vec::new();
    for stage in &input.stages {
        let mut architectures: Vec<Params> = Vec::new();
        for job in input
            .jobs
            .iter()
            .filter(|job| job.stage == stage.name && is_baseline_job(job))
        {
            let architecture = architecture(job);
            if !architectures.contains(&architecture) {
                architectures.push(architecture);
            }
        }
        for architecture in architectures {
            let baseline = baselines_of(input, &stage.name, &architecture);
            let means = |jobs: &[&JobRecord]| -> Value {
                GAIN_METRICS
                    .iter()
                    .map(|(metric, _)| (metric.to_string(), json!(mean_of(jobs, metric))))
                    .collect::<serde_json::Map<_, _>>()
                    .into()
            };
            let mut models: Vec<(String, Vec<&JobRecord>)> = Vec::new();
            for job in input.jobs.iter().filter(|job| {
                job.stage == stage.name
                    && !is_baseline_job(job)
                    && self::architecture(job) == architecture
            }) {
                let name = job
                    .parent
                    .map(|parent| names.name(parent))
                    .unwrap_or_else(|| job.id.to_string());
                match models.iter_mut().find(|(model, _)| *model == name) {
                    Some((_, jobs)) => jobs.push(job),
                    None => models.push((name, vec![job])),
                }
            }
            let models: Vec<Value> = models
                .iter()
                .map(|(model, jobs)| {
                    let gains: serde_json::Map<String, Value> = GAIN_METRICS
                        .iter()
                        .map(|(metric, _)| {
                            (
                                metric.to_string(),
                                json!(gain(input, &stage.name, jobs, metric)),
                            )
                        })
                        .collect();
                    json!({
                        "model": model,
                        "jobs": jobs.iter().map(|job| job.id).collect::<Vec<_>>(),
                        "mean": means(jobs),
                        "gain": gains,
                    })
                })
                .collect();
            out.push(json!({
                "stage": stage.name,
                "architecture": architecture,
                "random_init": {
                    "jobs": baseline.iter().map(|job| job.id).collect::<Vec<_>>(),
                    "mean": means(&baseline),
                },
                "models": models,
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_gains_read_as_differences() {
        assert_eq!(signed(0.1234, 3), "+0.123");
        assert_eq!(signed(-0.0456, 3), "−0.046");
        assert_eq!(signed(0.0001, 3), "0.0");
        assert_eq!(signed(-0.0001, 3), "0.0");
    }
}
