//! The sweep file: what the user wrote ([`raw`]), checked into a [`Spec`]
//! ([`check`]), expanded into jobs ([`expand`]) and the selection rules that pick the
//! winners of one stage for the next ([`select`]).
//!
//! Domain code only ever sees the checked types in this file; raw TOML values never
//! reach the store or the trainer unchecked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub mod check;
pub mod error;
pub mod expand;
pub mod halving;
pub mod halving_bench;
pub mod params;
pub mod raw;
pub mod select;
pub mod version;

pub use error::{SweepError, SweepResult};

/// Settings from the command line or the environment that replace the file's own.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Replaces `[sweep] data_root` (`--data-root`, `SWEEPER_DATA_ROOT`).
    pub data_root: Option<PathBuf>,
    /// Most cells a stage may expand to (`--max-cells`);
    /// [`check::DEFAULT_MAX_CELLS`] when unset.
    pub max_cells: Option<usize>,
    /// Refuse datasets whose folders are missing under the data root (`submit`
    /// does, unless `--no-data-check`: the data may live only on the workers).
    pub check_data: bool,
}

/// A checked sweep file with the text it was read from.
#[derive(Debug, Clone)]
pub struct LoadedSweep {
    pub spec: Spec,
    pub text: String,
    /// SHA-256 (lowercase hex) of `text`: tells a resubmitted file from an edited one.
    pub hash: String,
}

/// Reads, parses and checks a sweep file; nothing is written anywhere.
pub fn load_file(path: &Path, overrides: &Overrides) -> SweepResult<LoadedSweep> {
    let text = std::fs::read_to_string(path).map_err(|source| SweepError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_str(&text, path, overrides)
}

/// Parses and checks sweep text; `origin` is the file name errors are reported against.
pub fn parse_str(text: &str, origin: &Path, overrides: &Overrides) -> SweepResult<LoadedSweep> {
    let raw_file = raw::parse(text, origin)?;
    let spec = check::check(raw_file, text, origin, overrides)?;
    Ok(LoadedSweep {
        spec,
        text: text.to_owned(),
        hash: expand::sha256_hex(text.as_bytes()),
    })
}

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
    /// Queue, with every linear and fine-tune stage, the same protocol from a randomly
    /// initialised backbone ([`expand::baselines`]); a spec stored before this setting
    /// existed reads as on.
    #[serde(default = "baselines_on")]
    pub baselines: bool,
}

fn baselines_on() -> bool {
    true
}

impl Spec {
    pub fn stage(&self, name: &str) -> Option<&StageSpec> {
        self.stages.iter().find(|stage| stage.name == name)
    }

    pub fn selection(&self, name: &str) -> Option<&SelectionSpec> {
        self.selections
            .iter()
            .find(|selection| selection.name == name)
    }

    /// The dataset a stage trains on, if it names one.
    pub fn dataset_of(&self, stage: &StageSpec) -> Option<&DatasetSpec> {
        stage
            .dataset
            .as_ref()
            .and_then(|name| self.datasets.get(name))
    }

    /// The seeds a stage runs with: its own, or the sweep's.
    pub fn seeds_of<'a>(&'a self, stage: &'a StageSpec) -> &'a [i64] {
        stage.seeds.as_deref().unwrap_or(&self.seeds)
    }
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
    pub const ALL: [StageKind; 4] = [
        StageKind::Command,
        StageKind::Pretext,
        StageKind::Linear,
        StageKind::Finetune,
    ];

    /// The one parser of a stage kind: the sweep file, the store's rows and the
    /// report all read it through here.
    pub fn parse(text: &str) -> Option<StageKind> {
        StageKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
    }

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
    /// Successive halving over the stage's grid (pretext stages only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halving: Option<halving::HalvingSpec>,
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
