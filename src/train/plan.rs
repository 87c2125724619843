//! One job of a sweep file, planned to run outside the queue (`sweeper train FILE`):
//! the stage, the cell picked by `--set KEY=VALUE`, the dataset and the device, as
//! the [`TrainJob`] a worker would have built.
//!
//! A root stage's job is the first cell of its grid whose parameters match every
//! `--set` value; a downstream stage's is its own parameters. Either way the `--set`
//! values then override the job's parameters.

use std::path::PathBuf;

use serde_json::Value;

use super::TrainJob;
use crate::devices::DeviceError;
use crate::sweep::{self, Params, SweepError};

/// What `sweeper train` was asked for.
#[derive(Debug, Clone)]
pub struct StandaloneRequest {
    /// The sweep file.
    pub file: PathBuf,
    /// Replaces the file's data root.
    pub data_root: Option<PathBuf>,
    /// The stage to take the job from; the first when unset.
    pub stage: Option<String>,
    /// `KEY=VALUE` items: a value that reads as JSON is that JSON, else a string.
    pub set: Vec<String>,
    /// The pretext checkpoint a `linear` or `finetune` job starts from.
    pub init: Option<PathBuf>,
    /// A `--device` value (`cpu`, `cuda`, `cuda:N`, `auto`).
    pub device: String,
    /// The job's directory: checkpoints go here and a rerun resumes from them.
    pub out: PathBuf,
    /// The decoded-image cache directory.
    pub cache: PathBuf,
}

/// A planned standalone job.
#[derive(Debug, Clone)]
pub struct StandalonePlan {
    /// The stage the job was taken from.
    pub stage: String,
    pub job: TrainJob,
}

/// Why a standalone job could not be planned; every variant is the user's input.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Sweep(#[from] SweepError),
    #[error("{file}: no stage named {stage:?}")]
    UnknownStage { file: PathBuf, stage: String },
    #[error("{file}: no stages")]
    NoStages { file: PathBuf },
    #[error("--set {0:?}: expected KEY=VALUE")]
    BadSetting(String),
    #[error("no cell of stage {0:?} matches the --set values")]
    NoMatchingCell(String),
    #[error("stage {0:?} names no dataset")]
    NoDataset(String),
    #[error("no dataset {0:?}")]
    UnknownDataset(String),
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// Reads and checks the sweep file (its datasets must be here) and plans the job.
pub fn plan_standalone(request: &StandaloneRequest) -> Result<StandalonePlan, PlanError> {
    let overrides = sweep::Overrides {
        data_root: request.data_root.clone(),
        check_data: true,
        ..sweep::Overrides::default()
    };
    let loaded = sweep::load_file(&request.file, &overrides)?;
    let spec = &loaded.spec;
    let stage = match &request.stage {
        Some(name) => spec.stage(name).ok_or_else(|| PlanError::UnknownStage {
            file: request.file.clone(),
            stage: name.clone(),
        })?,
        None => spec.stages.first().ok_or_else(|| PlanError::NoStages {
            file: request.file.clone(),
        })?,
    };
    let settings = parse_settings(&request.set)?;
    let mut params = if stage.from.is_none() {
        sweep::expand::expand(spec)
            .into_iter()
            .filter(|job| job.stage == stage.name)
            .find(|job| matches_settings(stage, &job.params, &settings))
            .map(|job| job.params)
            .ok_or_else(|| PlanError::NoMatchingCell(stage.name.clone()))?
    } else {
        stage.params.clone()
    };
    params.extend(settings);
    let dataset_name = stage
        .dataset
        .as_deref()
        .ok_or_else(|| PlanError::NoDataset(stage.name.clone()))?;
    let dataset = spec
        .datasets
        .get(dataset_name)
        .cloned()
        .ok_or_else(|| PlanError::UnknownDataset(dataset_name.to_owned()))?;
    let device = crate::devices::parse_device(&request.device)?
        .resolve(&[], tch::Cuda::device_count())
        .to_tch();
    let job = TrainJob {
        job_id: uuid::Uuid::now_v7(),
        attempt: 1,
        kind: stage.kind,
        params,
        dataset,
        dataset_name: dataset_name.to_owned(),
        data_root: spec.data_root.clone(),
        job_dir: request.out.clone(),
        init_checkpoint: request.init.clone(),
        cache_dir: request.cache.clone(),
        device,
        halt_at: None,
    };
    Ok(StandalonePlan {
        stage: stage.name.clone(),
        job,
    })
}

/// `KEY=VALUE` items in order; a value that is not JSON is a string.
fn parse_settings(items: &[String]) -> Result<Vec<(String, Value)>, PlanError> {
    items
        .iter()
        .map(|item| {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| PlanError::BadSetting(item.clone()))?;
            let value = serde_json::from_str::<Value>(value).unwrap_or(Value::String(value.into()));
            Ok((key.to_owned(), value))
        })
        .collect()
}

/// A cell matches when every setting it has is equal (numbers by value: `64` is
/// `64.0`); settings it lacks are overrides, not filters.
/// Whether a cell has every `--set` value of the stage's grid axes (and seed); other
/// keys, such as a fixed `epochs`, only override.
fn matches_settings(
    stage: &sweep::StageSpec,
    params: &Params,
    settings: &[(String, Value)],
) -> bool {
    settings
        .iter()
        .filter(|(key, _)| key == "seed" || stage.grid.iter().any(|(axis, _)| axis == key))
        .all(|(key, value)| {
            params.get(key).map_or(true, |v| {
                v == value || v.as_f64().is_some() && v.as_f64() == value.as_f64()
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_read_json_values_and_fall_back_to_strings() {
        let settings =
            parse_settings(&["batch_size=64".into(), "backbone=resnet18".into()]).unwrap();
        assert_eq!(
            settings,
            [
                ("batch_size".to_owned(), json!(64)),
                ("backbone".to_owned(), json!("resnet18"))
            ]
        );
        assert!(matches!(
            parse_settings(&["backbone".into()]),
            Err(PlanError::BadSetting(item)) if item == "backbone"
        ));
    }

    #[test]
    fn a_cell_matches_grid_values_by_value_and_other_keys_only_override() {
        let stage = sweep::StageSpec {
            name: "pretext".into(),
            kind: sweep::StageKind::Pretext,
            dataset: None,
            grid: vec![("batch_size".into(), vec![json!(32), json!(64)])],
            params: Params::new(),
            exclude: Vec::new(),
            from: None,
            command: None,
            seeds: None,
            priority: 0,
            max_attempts: 1,
            halving: None,
        };
        let params: Params =
            serde_json::from_value(json!({"batch_size": 64, "epochs": 15, "seed": 0})).unwrap();
        // A fixed parameter of another value is an override, not a mismatch.
        assert!(matches_settings(
            &stage,
            &params,
            &[
                ("batch_size".into(), json!(64.0)),
                ("epochs".into(), json!(2))
            ]
        ));
        assert!(!matches_settings(
            &stage,
            &params,
            &[("batch_size".into(), json!(32))]
        ));
        assert!(!matches_settings(
            &stage,
            &params,
            &[("seed".into(), json!(1))]
        ));
    }
}
