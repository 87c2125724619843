//! The sweep file: what the user wrote ([`raw`]), checked into a [`Spec`]
//! ([`check`]), expanded into jobs ([`expand`]) and the selection rules that pick the
//! winners of one stage for the next ([`select`]).
//!
//! Domain code only ever sees the checked types in this file; raw TOML values never
//! reach the store or the trainer unchecked.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub mod check;
pub mod error;
pub mod expand;
pub mod raw;
pub mod select;

pub use error::{SweepError, SweepResult};

/// A parameter set: axis values and fixed parameters, resolved for one job.
pub type Params = Map<String, Value>;

/// A checked sweep file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub name: String,
    /// Root the datasets' folders are relative to (after `--data-root` /
    /// `SWEEPER_DATA_ROOT` overrides).
    pub data_root: PathBuf,
    pub seeds: Vec<i64>,
    pub max_attempts: i32,
    pub datasets: BTreeMap<String, DatasetSpec>,
    /// In file order; a stage only names selections of stages before it.
    pub stages: Vec<StageSpec>,
    pub selections: Vec<SelectionSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StageKind {
    /// Any program, with the job's parameters substituted into its arguments.
    Command,
    /// SimCLR pretext training.
    Pretext,
    /// Linear protocol on a frozen pretext backbone.
    Linear,
    /// Fine-tuning of the whole pretext network.
    Finetune,
}

impl StageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StageKind::Command => "command",
            StageKind::Pretext => "pretext",
            StageKind::Linear => "linear",
            StageKind::Finetune => "finetune",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSpec {
    pub name: String,
    pub kind: StageKind,
    /// Name of a dataset in [`Spec::datasets`].
    pub dataset: Option<String>,
    /// Grid axes in file order; every value list is non-empty and duplicate-free.
    pub grid: Vec<(String, Vec<Value>)>,
    /// Fixed parameters, the same for every cell.
    pub params: Params,
    /// Cells matching every key of any one of these are left out.
    pub exclude: Vec<Params>,
    /// A selection whose winners this stage runs on (downstream stages only).
    pub from: Option<String>,
    /// Program and arguments for `command` stages; `{name}` is replaced by a parameter.
    pub command: Option<Vec<String>>,
    /// Replaces [`Spec::seeds`] for this stage. For a stage with `from`, each winner
    /// runs once per seed; without it, once with the winner's own seed.
    #[serde(default)]
    pub seeds: Option<Vec<i64>>,
    pub priority: i32,
    pub max_attempts: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelectionSpec {
    pub name: String,
    /// The stage whose finished jobs are ranked.
    pub from: String,
    /// Parameters that form the groups; one selection per group.
    pub per: Vec<String>,
    /// Applied in order; later preferences break ties of earlier ones.
    pub prefer: Vec<Preference>,
    /// How many winners per group.
    pub top: usize,
    pub on_failure: OnFailure,
}

/// One ranking criterion: a parameter or a result field, largest or smallest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Preference {
    Max(String),
    Min(String),
}

/// What a group with failed jobs does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Wait until every job of the group succeeded (a retry may still fix it).
    Wait,
    /// Promote from the jobs that succeeded once none is queued or running.
    Promote,
}

/// A dataset definition: which images of which labels, and how they split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DatasetSpec {
    /// Folder with one sub-folder per label, relative to [`Spec::data_root`].
    pub folder: PathBuf,
    pub include_labels: Option<Vec<String>>,
    pub exclude_labels: Vec<String>,
    pub min_images_per_label: Option<usize>,
    /// Keep the first K labels (sorted by name) that pass the filters.
    pub take_labels: Option<usize>,
    pub per_label: Option<usize>,
    pub max_total: Option<usize>,
    /// train/val/test (or train/val) ratios summing to 1; `[1.0]` when absent.
    pub split: Vec<f64>,
    /// A separate folder for the test split.
    pub test_folder: Option<PathBuf>,
    pub test_max_total: Option<usize>,
}

/// One job of a stage, before it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub stage: String,
    pub kind: StageKind,
    /// Hash of the resolved configuration (stage, params, seed, parent); unique
    /// within a sweep, so submitting twice adds nothing.
    pub key: String,
    /// Axis values, fixed parameters and `seed`, resolved.
    pub params: Params,
    pub priority: i32,
    pub max_attempts: i32,
}

/// Command-line overrides applied while loading a sweep file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_root: Option<PathBuf>,
}

/// A checked sweep with the text it came from and that text's hash.
#[derive(Debug, Clone)]
pub struct LoadedSweep {
    pub spec: Spec,
    pub text: String,
    pub hash: String,
}

/// Reads, parses and checks a sweep file.
pub fn load_file(path: &std::path::Path, overrides: &Overrides) -> SweepResult<LoadedSweep> {
    let _ = overrides;
    Err(SweepError::Invalid {
        location: path.display().to_string(),
        field: "sweep".into(),
        message: "sweep file parsing is not implemented yet".into(),
    })
}
