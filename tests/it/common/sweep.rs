//! Helpers for the sweep-file tests: loading the shipped sweeps, parsing snippets
//! under a fixed file name, and the seed report's stage-1 losses as candidates.

#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use sweeper::sweep::select::{Candidate, CandidateState};
use sweeper::sweep::{expand, parse_str, LoadedSweep, Overrides, Spec, SweepError};

/// The file name errors of [`parse`] are reported against.
pub const ORIGIN: &str = "sweeps/x.toml";

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A sweep shipped in `sweeps/`, loaded as `submit` would.
pub fn load_shipped(name: &str) -> LoadedSweep {
    let path = repo_path(&format!("sweeps/{name}"));
    sweeper::sweep::load_file(&path, &Overrides::default())
        .unwrap_or_else(|error| panic!("{name} should load: {error}"))
}

pub fn shipped_text(name: &str) -> String {
    std::fs::read_to_string(repo_path(&format!("sweeps/{name}"))).expect("shipped sweep exists")
}

pub fn parse(text: &str) -> Result<LoadedSweep, SweepError> {
    parse_str(text, Path::new(ORIGIN), &Overrides::default())
}

pub fn parse_ok(text: &str) -> Spec {
    parse(text)
        .unwrap_or_else(|error| panic!("should parse: {error}\n{text}"))
        .spec
}

/// The parts of an [`SweepError::Invalid`]; panics on anything else.
pub fn invalid(text: &str) -> (String, String, String) {
    match parse(text) {
        Err(SweepError::Invalid {
            location,
            field,
            message,
        }) => (location, field, message),
        Err(other) => panic!("expected an Invalid error, got {other}"),
        Ok(_) => panic!("expected an error, the file was accepted:\n{text}"),
    }
}

/// `sweeps/x.toml:LINE:COLUMN` of the `nth` (0-based) occurrence of `needle`,
/// found by scanning the text line by line.
pub fn at(text: &str, needle: &str, nth: usize) -> String {
    let mut seen = 0;
    for (index, line) in text.lines().enumerate() {
        let mut from = 0;
        while let Some(found) = line[from..].find(needle) {
            let column = line[..from + found].chars().count() + 1;
            if seen == nth {
                return format!("{ORIGIN}:{}:{column}", index + 1);
            }
            seen += 1;
            from += found + needle.len();
        }
    }
    panic!("{needle:?} occurs fewer than {} times", nth + 1)
}

/// `text` with `old` (which must occur exactly once) replaced by `new`.
pub fn edit(text: &str, old: &str, new: &str) -> String {
    assert_eq!(text.matches(old).count(), 1, "{old:?} must occur once");
    text.replacen(old, new, 1)
}

/// One row of `tests/fixtures/seed-report-stage1.csv`.
pub struct SeedRow {
    pub backbone: String,
    pub data_fraction: f64,
    pub batch_size: i64,
    pub projection_dim: i64,
    pub loss: f64,
}

pub fn seed_report_rows() -> Vec<SeedRow> {
    let text = std::fs::read_to_string(repo_path("tests/fixtures/seed-report-stage1.csv"))
        .expect("fixture exists");
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.starts_with("backbone,"))
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), 5, "bad fixture line {line:?}");
            SeedRow {
                backbone: fields[0].to_owned(),
                data_fraction: fields[1].parse().expect("fraction"),
                batch_size: fields[2].parse().expect("batch size"),
                projection_dim: fields[3].parse().expect("projection"),
                loss: fields[4].parse().expect("loss"),
            }
        })
        .collect()
}

/// Every pretext job of `sweeps/report.toml` as a succeeded candidate whose result is
/// the loss the seed report measured for that cell.
pub fn seed_report_candidates(spec: &Spec) -> Vec<Candidate> {
    let rows = seed_report_rows();
    expand::expand(spec)
        .into_iter()
        .map(|job| {
            let row = rows
                .iter()
                .find(|row| {
                    job.params["backbone"] == json!(row.backbone)
                        && job.params["data_fraction"].as_f64() == Some(row.data_fraction)
                        && job.params["batch_size"] == json!(row.batch_size)
                        && job.params["projection_dim"] == json!(row.projection_dim)
                })
                .unwrap_or_else(|| panic!("no seed-report loss for {:?}", job.params));
            Candidate {
                job_id: uuid::Uuid::new_v4(),
                key: job.key,
                params: job.params,
                state: CandidateState::Succeeded,
                result: Some(json!({ "loss": row.loss })),
            }
        })
        .collect()
}

pub fn param<'a>(candidate: &'a Candidate, name: &str) -> &'a Value {
    &candidate.params[name]
}
