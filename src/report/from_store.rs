//! The bridge between the store and the report: fills a [`ReportInput`] from what the
//! store holds, and turns parsed import rows into succeeded jobs ([`import_file`]: the
//! whole `import` command, sweep file included). The renderers never touch the store;
//! this file is the only one here that does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use uuid::Uuid;

use super::model::{DecisionRecord, JobRecord, ReportInput, StageInfo, StaleMark};
use super::{parse_import_csv, ImportIssue, ReportError, ReportResult};
use crate::store::{self, Store};
use crate::sweep::{self, expand, JobSpec, Spec, StageKind};

/// Everything the report of `sweep` shows, read from the store.
pub async fn load(store: &Store, sweep: &str) -> ReportResult<ReportInput> {
    load_with(store, sweep, true).await
}

/// [`load`] without the loss curves: the tables only need the jobs, not their
/// metrics (one read per pretext job), so a dashboard page stays cheap.
pub async fn load_tables(store: &Store, sweep: &str) -> ReportResult<ReportInput> {
    load_with(store, sweep, false).await
}

async fn load_with(store: &Store, sweep: &str, with_curves: bool) -> ReportResult<ReportInput> {
    let spec = store
        .spec(sweep)
        .await?
        .ok_or_else(|| ReportError::UnknownSweep(sweep.to_owned()))?;
    let rows = store.jobs_for_report(sweep).await?;
    let mut curves = BTreeMap::new();
    let mut jobs = Vec::with_capacity(rows.len());
    for row in rows {
        let kind = stage_kind(&spec, &row.stage, row.kind);
        if with_curves && kind == StageKind::Pretext && row.state != store::JobState::Queued {
            let curve = loss_curve(&store.metrics(row.id).await?);
            if !curve.is_empty() {
                curves.insert(row.id, curve);
            }
        }
        jobs.push(JobRecord {
            id: row.id,
            stage: row.stage,
            kind,
            state: row.state,
            params: row.params,
            result: row.result,
            error: row.error_message,
            parent: row.parent_job_id,
            attempt: row.attempt,
            started_at: row.started_at,
            finished_at: row.finished_at,
        });
    }
    let decisions = store
        .promotions(sweep)
        .await?
        .into_iter()
        .map(decision_record)
        .collect();
    Ok(ReportInput {
        sweep: sweep.to_owned(),
        stages: stage_infos(&spec),
        jobs,
        decisions,
        curves,
        provenance: store.provenance(sweep).await?,
        histories: BTreeMap::new(),
        halving: store.rung_decisions(sweep).await?,
    })
}

/// Fills `input.histories`: every metric of the sweep's downstream and command jobs,
/// in one streamed read, the newest attempt's value of each step kept.
pub async fn load_histories(store: &Store, input: &mut ReportInput) -> ReportResult<()> {
    let wanted: std::collections::BTreeSet<Uuid> = input
        .jobs
        .iter()
        .filter(|job| job.kind != StageKind::Pretext)
        .map(|job| job.id)
        .collect();
    let mut rows: BTreeMap<Uuid, Vec<store::MetricRow>> = BTreeMap::new();
    store
        .metric_history(&input.sweep, |_stage, row| {
            if wanted.contains(&row.job_id) {
                rows.entry(row.job_id).or_default().push(row);
            }
            true
        })
        .await?;
    input.histories = rows
        .into_iter()
        .map(|(job, metrics)| (job, curves(&metrics)))
        .collect();
    Ok(())
}

/// One job's metrics as curves by name, `(step, value)` sorted by step. A resumed
/// attempt only logs the steps it ran; earlier ones come from the attempts before
/// it, and where two attempts logged a step the later one wins.
pub fn curves(metrics: &[store::MetricRow]) -> BTreeMap<String, Vec<(i64, f64)>> {
    let mut newest: BTreeMap<&str, BTreeMap<i64, (i32, f64)>> = BTreeMap::new();
    for metric in metrics {
        let by_step = newest.entry(metric.name.as_str()).or_default();
        let keep = by_step
            .get(&metric.step)
            .map_or(true, |(attempt, _)| *attempt <= metric.attempt);
        if keep {
            by_step.insert(metric.step, (metric.attempt, metric.value));
        }
    }
    newest
        .into_iter()
        .map(|(name, steps)| {
            let points = steps.into_iter().map(|(step, (_, value))| (step, value));
            (name.to_owned(), points.collect())
        })
        .collect()
}

/// What an import wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportSummary {
    /// Rows that became succeeded jobs.
    pub imported: usize,
    /// Rows whose cell already ran or is running here; left as they were.
    pub kept: usize,
}

/// What `sweeper import` was asked to do.
#[derive(Debug, Clone)]
pub struct ImportRequest {
    /// The CSV: a header of axis names and metric names, one grid cell per row.
    pub file: PathBuf,
    pub sweep: String,
    /// The stage whose grid cells the rows are.
    pub stage: String,
    /// The sweep file, stored first when the store does not hold the sweep yet (no
    /// job is queued: `submit` later adds only the cells not imported).
    pub sweep_file: Option<PathBuf>,
    /// Replaces the sweep file's data root.
    pub data_root: Option<PathBuf>,
    /// How the file's `loss` column was summed; recorded with every row that has one.
    pub loss_convention: super::LossConvention,
}

/// Reads an import file before anything touches the store.
pub fn read_import_file(path: &Path) -> ReportResult<String> {
    std::fs::read_to_string(path).map_err(|error| ReportError::Read {
        path: path.to_owned(),
        error,
    })
}

/// Imports `text`, the contents of `request.file`: takes the sweep from the store or
/// from `request.sweep_file`, checks every row against the stage's grid, and only
/// then stores the sweep (when new) and the rows. A refused row or a sweep file that
/// names another sweep leaves the store as it was.
pub async fn import_file(
    store: &Store,
    request: &ImportRequest,
    text: &str,
) -> ReportResult<ImportSummary> {
    let stored = store.spec(&request.sweep).await?;
    let (spec, new_sweep) = match (&request.sweep_file, stored) {
        (Some(file), stored) => {
            // Imported results were trained elsewhere: the data need not be here.
            let overrides = sweep::Overrides {
                data_root: request.data_root.clone(),
                ..sweep::Overrides::default()
            };
            let loaded = sweep::load_file(file, &overrides)?;
            if loaded.spec.name != request.sweep {
                return Err(ReportError::OtherSweep {
                    file: file.clone(),
                    defines: loaded.spec.name,
                    wanted: request.sweep.clone(),
                });
            }
            match stored {
                Some(_) => (loaded.spec, None),
                None => (loaded.spec.clone(), Some(loaded)),
            }
        }
        (None, Some(spec)) => (spec, None),
        (None, None) => return Err(ReportError::SweepNotStored(request.sweep.clone())),
    };
    let mut rows = import_rows(&spec, &request.stage, text, &request.file)?;
    if request.loss_convention != super::LossConvention::default() {
        for (_, result) in &mut rows {
            if let Some(fields) = result.as_object_mut().filter(|f| f.contains_key("loss")) {
                fields.insert(
                    super::LossConvention::FIELD.to_owned(),
                    Value::from(request.loss_convention.as_str()),
                );
            }
        }
    }
    if let Some(loaded) = new_sweep {
        store
            .submit(&loaded.spec, &loaded.text, &loaded.hash, &[])
            .await?;
    }
    import_checked(store, &spec, rows, &request.file).await
}

/// Records the rows of an import file as succeeded jobs of `stage`. Each row must name
/// one cell of the stage's grid (its axis values, and `seed` when the sweep has
/// several); the job gets exactly the key `submit` would give that cell, so submit
/// never runs an imported cell. Every row is checked before anything is written.
pub async fn import(
    store: &Store,
    spec: &Spec,
    stage: &str,
    text: &str,
    origin: &Path,
) -> ReportResult<ImportSummary> {
    let rows = import_rows(spec, stage, text, origin)?;
    import_checked(store, spec, rows, origin).await
}

/// The grid cells of `stage` that the CSV's rows are, with their results; an error
/// names every row that is not one. Reads nothing from the store and writes nothing.
pub fn import_rows(
    spec: &Spec,
    stage: &str,
    text: &str,
    origin: &Path,
) -> ReportResult<Vec<(JobSpec, Value)>> {
    let stage_spec = spec.stage(stage).ok_or_else(|| ReportError::UnknownStage {
        sweep: spec.name.clone(),
        stage: stage.to_owned(),
    })?;
    let axes: Vec<String> = stage_spec
        .grid
        .iter()
        .map(|(name, _)| name.clone())
        .collect();
    let rows = parse_import_csv(text, origin, &axes)?;
    let cells: Vec<JobSpec> = expand::expand(spec)
        .into_iter()
        .filter(|job| job.stage == stage)
        .collect();

    let mut matched = Vec::with_capacity(rows.len());
    let mut issues = Vec::new();
    for row in &rows {
        let found = cells.iter().find(|cell| {
            row.params
                .iter()
                .all(|(name, value)| cell.params.get(name).is_some_and(|v| same_value(v, value)))
        });
        match found {
            Some(cell) => matched.push((cell.clone(), Value::Object(row.result.clone()))),
            None => issues.push(ImportIssue {
                line: row.line,
                column: None,
                message: format!(
                    "{} is not a cell of stage {stage}'s grid",
                    Value::Object(row.params.clone())
                ),
            }),
        }
    }
    if !issues.is_empty() {
        return Err(ReportError::Import {
            origin: origin.to_owned(),
            issues,
        });
    }
    Ok(matched)
}

/// Records rows checked by [`import_rows`] as succeeded jobs of sweep `spec`, with
/// `origin` (the file they came from) as their provenance.
pub async fn import_checked(
    store: &Store,
    spec: &Spec,
    rows: Vec<(JobSpec, Value)>,
    origin: &Path,
) -> ReportResult<ImportSummary> {
    // An imported number was trained elsewhere: only its file is known.
    let provenance = crate::provenance::Provenance {
        imported_from: Some(origin.display().to_string()),
        ..crate::provenance::Provenance::of_this_build()
    };
    let mut summary = ImportSummary::default();
    for (cell, result) in rows {
        if store
            .insert_succeeded(&spec.name, &cell, result, &provenance)
            .await?
        {
            summary.imported += 1;
        } else {
            summary.kept += 1;
        }
    }
    Ok(summary)
}

/// Numbers compare by value (`64` and `64.0`, `0.7` written either way); the rest exactly.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
        _ => a == b,
    }
}

fn stage_infos(spec: &Spec) -> Vec<StageInfo> {
    spec.stages
        .iter()
        .map(|stage| StageInfo {
            name: stage.name.clone(),
            kind: stage.kind,
            grid: stage.grid.clone(),
            nominal_size: spec
                .dataset_of(stage)
                .and_then(|dataset| dataset.max_total)
                .map(|n| n as u64),
            params: stage.params.clone(),
        })
        .collect()
}

fn stage_kind(spec: &Spec, stage: &str, stored: StageKind) -> StageKind {
    spec.stage(stage).map_or(stored, |s| s.kind)
}

/// The per-epoch `loss` of the job's newest attempt, by epoch.
fn loss_curve(metrics: &[store::MetricRow]) -> Vec<(i64, f64)> {
    curves(metrics).remove("loss").unwrap_or_default()
}

fn decision_record(row: store::PromotionRow) -> DecisionRecord {
    let winners = row
        .decision
        .get("winners")
        .and_then(Value::as_array)
        .map(|winners| {
            winners
                .iter()
                .filter_map(|w| w.get("job_id")?.as_str()?.parse::<Uuid>().ok())
                .collect()
        })
        .unwrap_or_default();
    let rule = row
        .decision
        .get("rule")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let stale = row.stale.map(|stale| StaleMark {
        reason: stale.reason,
        winners: stale.outcome.winners.iter().map(|w| w.job_id).collect(),
    });
    DecisionRecord {
        selection: row.selection,
        group: row.group,
        winners,
        rule,
        detail: row.decision,
        revision: row.revision,
        stale,
    }
}
