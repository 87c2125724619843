//! The study's tables and figures, from a [`ReportInput`] the store fills:
//!
//! - [`markdown`]: the report laid out like the seed report (pretext tables per
//!   backbone and batch size with chance levels, marks on unfinished cells and mean ±
//!   std over seeds; the selection's reasoning; the downstream tables);
//! - [`csv`] and [`json`]: every job with its parameters and final metrics, long form;
//! - [`plots`]: loss curves and heat maps, PNG and SVG;
//! - [`parse_import_csv`]: results of runs made elsewhere, checked row by row before
//!   the store writes any of them.

use std::path::PathBuf;

mod baseline;
mod format;
pub mod from_store;
mod halving;
mod import;
mod layout;
mod long;
mod markdown;
pub mod model;
mod names;
pub mod plot;
mod provenance;
pub mod wide;

pub use format::{chance_level, model_backbone, model_name, pretty_backbone, LossConvention};
pub use import::{parse_import_csv, ImportIssue, ImportRow};
pub use long::{csv, json};
pub use markdown::markdown;
pub use model::{DecisionRecord, JobRecord, JobState, ReportInput, StageInfo, StaleMark};
pub use plot::plots;

/// How `report` prints a study: `--format md|csv|json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    // Plain comments: clap would print doc comments in `--help`. `md` is laid out
    // like the seed report; `csv` and `json` list every job, long form.
    #[default]
    Md,
    Csv,
    Json,
}

/// The study in `format`, as `report` prints it.
pub fn render(input: &ReportInput, format: Format) -> String {
    match format {
        Format::Md => markdown(input),
        Format::Csv => csv(input),
        // `{:#}` is serde_json's pretty form.
        Format::Json => format!("{:#}\n", json(input)),
    }
}

/// Why a report, a plot or an import could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Rows of an import file that were refused; nothing of the file may be written.
    #[error("{}", import_message(origin, issues))]
    Import {
        origin: PathBuf,
        issues: Vec<ImportIssue>,
    },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot draw {path}: {message}")]
    Plot { path: PathBuf, message: String },
    #[error("the embedded plot font could not be loaded")]
    Font,
    #[error("no sweep named {0:?} in the store")]
    UnknownSweep(String),
    /// Not a `#[source]`: the message already ends with the error's text.
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Sweep(#[from] crate::sweep::SweepError),
    #[error("{file} defines sweep {defines:?}, not {wanted:?}")]
    OtherSweep {
        file: PathBuf,
        defines: String,
        wanted: String,
    },
    #[error("no sweep named {0:?} in the store; pass --sweep-file to store it")]
    SweepNotStored(String),
    #[error("sweep {sweep} has no stage named {stage:?}")]
    UnknownStage { sweep: String, stage: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl ReportError {
    /// The user's input is at fault (a file, a sweep or stage name), not the system.
    pub fn is_bad_input(&self) -> bool {
        match self {
            ReportError::Import { .. }
            | ReportError::Read { .. }
            | ReportError::Sweep(_)
            | ReportError::OtherSweep { .. }
            | ReportError::SweepNotStored(_)
            | ReportError::UnknownSweep(_)
            | ReportError::UnknownStage { .. } => true,
            ReportError::Store(error) => error.is_bad_input(),
            _ => false,
        }
    }
}

pub type ReportResult<T> = Result<T, ReportError>;

/// `file:LINE: column X: message`, one line per refused row.
fn import_message(origin: &std::path::Path, issues: &[ImportIssue]) -> String {
    let lines: Vec<String> = issues
        .iter()
        .map(|issue| format!("{}:{issue}", origin.display()))
        .collect();
    format!(
        "{} refused ({} bad line{}, nothing imported):\n{}",
        origin.display(),
        issues.len(),
        if issues.len() == 1 { "" } else { "s" },
        lines.join("\n")
    )
}
