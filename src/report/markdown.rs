//! The report in Markdown, laid out like the seed report: the pretext tables per
//! backbone and batch size, the selection's reasoning and winners, then one table per
//! downstream stage.
//!
//! Numbers are rounded to two decimals (losses) or three (classification metrics) and
//! written without trailing zeros but with at least one decimal, as the seed writes
//! them (`4.26`, `5.0`, `0.58`). Bold marks the best value of a pretext row (lowest
//! loss) and of a downstream column (highest), compared at the precision shown, so
//! equal-looking values are bold together.
//!
//! Over 700 lines (a fifth of it unit tests) because every section renders from the
//! same private helpers (`cell_text`, `best_flags`, the marks); the seams to split
//! next are the selection reasoning (`selection_section`, `decision_reasoning`) and
//! the downstream tables with their random-init gains, each a module of its own once
//! those helpers move to `layout`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;

use serde_json::Value;
use uuid::Uuid;

use super::baseline;
use super::format::{mean_std, plain, pretty_backbone, same_value, trimmed, LossConvention};
use super::layout::{
    param, pretext_layout, Cell, Mark, PretextLayout, BACKBONE, BATCH_SIZE, DATA_FRACTION, LOSS,
    PROJECTION_DIM, SEED,
};
use super::model::{DecisionRecord, JobRecord, JobState, ReportInput, StageInfo};
use super::names::ModelNames;
use crate::sweep::StageKind;

const LOSS_DECIMALS: usize = 2;
const METRIC_DECIMALS: usize = 3;

/// The downstream tables' columns: result field and heading.
pub const DOWNSTREAM_METRICS: [(&str, &str); 4] = [
    ("accuracy", "Accuracy"),
    ("precision", "Precision"),
    ("recall", "Recall"),
    ("f1", "F1-score"),
];

/// The whole report.
pub fn markdown(input: &ReportInput) -> String {
    let names = ModelNames::new(input);
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# Sweep `{}`\n", input.sweep);
    let _ = writeln!(out, "{}\n", job_summary(&input.jobs));

    let mut placed: BTreeSet<&str> = BTreeSet::new();
    let selections = selection_sources(input);
    let mut used_marks = BTreeSet::new();
    for (number, stage) in input.stages.iter().enumerate() {
        let title = stage_title(stage.kind);
        let _ = writeln!(out, "## Stage {}: {title} (`{}`)\n", number + 1, stage.name);
        if !stage.params.is_empty() {
            let fixed: Vec<String> = stage
                .params
                .iter()
                .map(|(key, value)| format!("{key} {}", plain(value)))
                .collect();
            let _ = writeln!(out, "Parameters: {}.\n", fixed.join(", "));
        }
        match stage.kind {
            StageKind::Pretext => {
                pretext_section(
                    &mut out,
                    stage,
                    &pretext_layout(stage, &input.jobs),
                    &mut used_marks,
                );
                super::halving::section(&mut out, input, &stage.name);
            }
            StageKind::Linear | StageKind::Finetune => {
                downstream_section(&mut out, input, stage, &names, &mut used_marks)
            }
            StageKind::Command => command_section(&mut out, input, stage, &mut used_marks),
        }
        for (selection, source) in &selections {
            if source.as_deref() == Some(stage.name.as_str()) && placed.insert(selection) {
                selection_section(&mut out, input, selection, &names);
            }
        }
    }
    for (selection, _) in &selections {
        if placed.insert(selection) {
            selection_section(&mut out, input, selection, &names);
        }
    }
    if !used_marks.is_empty() {
        let legend: Vec<String> = Mark::ALL
            .iter()
            .filter(|mark| used_marks.contains(*mark))
            .map(|mark| format!("{} {}", mark.symbol(), mark.meaning()))
            .collect();
        let _ = writeln!(
            out,
            "Marks: {}. A value beside a mark is the mean of the seeds that finished.\n",
            legend.join(", ")
        );
    }
    out.push_str(&super::provenance::section(input));
    // One trailing newline, whatever the last section wrote.
    let trimmed_len = out.trim_end().len();
    out.truncate(trimmed_len);
    out.push('\n');
    out
}

fn stage_title(kind: StageKind) -> &'static str {
    match kind {
        StageKind::Pretext => "SimCLR pretext training",
        StageKind::Linear => "linear protocol evaluation",
        StageKind::Finetune => "downstream task (fine-tuning)",
        StageKind::Command => "command",
    }
}

/// `108 jobs: 100 succeeded, 2 running, 6 queued.`
fn job_summary(jobs: &[JobRecord]) -> String {
    let mut counts: BTreeMap<JobState, usize> = BTreeMap::new();
    for job in jobs {
        *counts.entry(job.state).or_default() += 1;
    }
    let parts: Vec<String> = [
        JobState::Succeeded,
        JobState::Running,
        JobState::Paused,
        JobState::Queued,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Stopped,
    ]
    .iter()
    .filter_map(|state| counts.get(state).map(|n| format!("{n} {}", state.as_str())))
    .collect();
    if parts.is_empty() {
        "No jobs yet.".to_string()
    } else {
        format!("{} jobs: {}.", jobs.len(), parts.join(", "))
    }
}

/// Each selection named by a decision, in the decisions' order, with the stage its
/// winners come from (unknown while no group has a winner).
fn selection_sources(input: &ReportInput) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for decision in &input.decisions {
        let source = decision
            .winners
            .iter()
            .find_map(|id| input.jobs.iter().find(|job| job.id == *id))
            .map(|job| job.stage.clone());
        match out.iter_mut().find(|(name, _)| *name == decision.selection) {
            Some((_, known)) => {
                if known.is_none() {
                    *known = source;
                }
            }
            None => out.push((decision.selection.clone(), source)),
        }
    }
    out
}

/// A cell's text: the mean (± std over seeds), then the marks of what is unfinished.
/// `bold` wraps the value, never the marks.
fn cell_text(values: &[f64], marks: &[Mark], decimals: usize, bold: bool) -> String {
    let mut parts = Vec::new();
    if let Some((mean, std)) = mean_std(values) {
        let value = match std {
            Some(std) => format!("{} ± {}", trimmed(mean, decimals), trimmed(std, decimals)),
            None => trimmed(mean, decimals),
        };
        parts.push(if bold { format!("**{value}**") } else { value });
    }
    if !marks.is_empty() {
        parts.push(marks.iter().map(|mark| mark.symbol()).collect::<String>());
    }
    parts.join(" ")
}

/// The value at the precision shown, as an integer, so ties are exact.
fn shown(value: f64, decimals: usize) -> i64 {
    (value * 10f64.powi(decimals as i32)).round() as i64
}

/// Which of `means` are the best at the precision shown (`lowest` or highest).
fn best_flags(means: &[Option<f64>], decimals: usize, lowest: bool) -> Vec<bool> {
    let keys: Vec<Option<i64>> = means
        .iter()
        .map(|m| m.map(|v| shown(v, decimals)))
        .collect();
    let best = if lowest {
        keys.iter().flatten().min()
    } else {
        keys.iter().flatten().max()
    };
    keys.iter()
        .map(|key| key.is_some() && key.as_ref() == best)
        .collect()
}

fn mean(values: &[f64]) -> Option<f64> {
    mean_std(values).map(|(mean, _)| mean)
}

fn pretext_section(
    out: &mut String,
    layout_stage: &StageInfo,
    layout: &PretextLayout,
    used_marks: &mut BTreeSet<Mark>,
) {
    let projections: Vec<String> = layout.projections.iter().map(plain).collect();
    let _ = writeln!(
        out,
        "Each table: one backbone and one batch size; rows are the data amount; a cell holds \
         the final NT-Xent loss for projection output {} (mean ± sample std where several \
         seeds ran); **bold** marks the lowest of the row. Losses at different batch sizes \
         are compared against the chance level of each batch size N: ln(2N−1) for the \
         mean over the 2N anchors, as sweeper computes it, or 2·ln(2N−1) for losses \
         imported as the sum of both halves (what google-research/simclr logs).\n",
        projections.join(" / ")
    );
    if layout
        .groups
        .iter()
        .all(|group| group.panels.iter().all(|p| p.rows.is_empty()))
    {
        let _ = writeln!(out, "No jobs yet.\n");
        return;
    }
    let projections = projections.join("/");
    for group in &layout.groups {
        let backbone = pretty_backbone(&plain(&group.backbone));
        let extras: Vec<String> = group
            .extras
            .iter()
            .map(|(axis, value)| format!("{axis} {}", plain(value)))
            .collect();
        if extras.is_empty() {
            let _ = writeln!(out, "### {backbone}\n");
        } else {
            let _ = writeln!(out, "### {backbone} ({})\n", extras.join(", "));
        }
        for panel in &group.panels {
            let batch = plain(&panel.batch_size);
            let batch_pairs = panel.batch_size.as_u64().filter(|n| *n > 0);
            match batch_pairs {
                Some(n) => {
                    let _ = writeln!(out, "#### batch {batch} — {}\n", chance_heading(panel, n));
                }
                None => {
                    let _ = writeln!(out, "#### batch {batch}\n");
                }
            }
            let _ = writeln!(
                out,
                "| Backbone | Total Data | Batch-size | Projection Output | Optimizer | NT-Xent Loss |"
            );
            let _ = writeln!(
                out,
                "| :--: | :-----: | :----: | :---: | :-------: | :----------: |"
            );
            let middle = panel.rows.len().saturating_sub(1) / 2;
            // `a/b/c` as the seed writes it; spaced when a cell holds more than a number.
            let plain_cells = panel
                .rows
                .iter()
                .flat_map(|row| row.cells.iter())
                .all(|cell| cell.jobs.len() == 1 && cell.jobs[0].state == JobState::Succeeded);
            let separator = if plain_cells { "/" } else { " / " };
            let mut lowest: Vec<(f64, String)> = Vec::new();
            for (index, row) in panel.rows.iter().enumerate() {
                let means: Vec<Option<f64>> = row
                    .cells
                    .iter()
                    .map(|cell| mean(&cell.values(LOSS)))
                    .collect();
                let bold = best_flags(&means, LOSS_DECIMALS, true);
                let cells: Vec<String> = row
                    .cells
                    .iter()
                    .zip(&bold)
                    .map(|(cell, bold)| {
                        let mut marks = cell.marks(LOSS);
                        if batch_pairs.is_some_and(|n| at_chance(cell, n)) {
                            marks.push(Mark::AtChance);
                        }
                        used_marks.extend(marks.iter().copied());
                        cell_text(&cell.values(LOSS), &marks, LOSS_DECIMALS, *bold)
                    })
                    .collect();
                for (mean, projection) in means.iter().zip(&layout.projections) {
                    if let Some(mean) = mean {
                        lowest.push((
                            *mean,
                            format!(
                                "{} images, projection {}",
                                row.data_label,
                                plain(projection)
                            ),
                        ));
                    }
                }
                let (backbone_cell, batch_cell) = if index == middle {
                    (backbone.as_str(), batch.as_str())
                } else {
                    ("", "")
                };
                let _ = writeln!(
                    out,
                    "| {backbone_cell} | {} | {batch_cell} | {projections} | {} | {} |",
                    row.data_label,
                    optimizer(row.cells.iter(), layout_stage),
                    cells.join(separator)
                );
            }
            out.push('\n');
            if let Some(best) = lowest.iter().map(|(loss, _)| *loss).min_by(f64::total_cmp) {
                let places: Vec<&str> = lowest
                    .iter()
                    .filter(|(loss, _)| shown(*loss, LOSS_DECIMALS) == shown(best, LOSS_DECIMALS))
                    .map(|(_, place)| place.as_str())
                    .collect();
                let _ = writeln!(
                    out,
                    "Lowest: {} ({}).\n",
                    trimmed(best, LOSS_DECIMALS),
                    places.join("; ")
                );
            }
        }
    }
}

/// The conventions of a panel's losses, each once: sweeper's mean unless imported
/// otherwise.
fn conventions(panel: &super::layout::Panel<'_>) -> Vec<LossConvention> {
    let mut found: Vec<LossConvention> = panel
        .rows
        .iter()
        .flat_map(|row| row.cells.iter())
        .flat_map(|cell| cell.jobs.iter())
        .filter(|job| job.metric(LOSS).is_some())
        .map(|job| job.loss_convention())
        .collect();
    found.sort();
    found.dedup();
    if found.is_empty() {
        found.push(LossConvention::default());
    }
    found
}

/// `chance ln(127) = 4.84`, naming the convention when the panel's losses were summed.
fn chance_heading(panel: &super::layout::Panel<'_>, batch_pairs: u64) -> String {
    let conventions = conventions(panel);
    let parts: Vec<String> = conventions
        .iter()
        .map(|convention| {
            let level = format!(
                "{} = {:.2}",
                convention.chance_formula(batch_pairs),
                convention.chance(batch_pairs)
            );
            match (conventions.len(), convention) {
                (1, LossConvention::Mean) => level,
                (_, LossConvention::Mean) => format!("{level} (mean)"),
                (_, LossConvention::Sum) => format!("{level} (losses summed over both halves)"),
            }
        })
        .collect();
    format!("chance {}", parts.join(" / "))
}

/// Whether a finished seed of the cell ended with a loss not below its chance level.
fn at_chance(cell: &Cell<'_>, batch_pairs: u64) -> bool {
    cell.jobs
        .iter()
        .filter(|job| job.state == JobState::Succeeded)
        .any(|job| {
            job.metric(LOSS)
                .is_some_and(|loss| loss >= job.loss_convention().chance(batch_pairs))
        })
}

/// The row's optimizer(s) as the seed writes them (`LARS`): the jobs', else the
/// stage's, `—` when neither says.
fn optimizer<'a>(cells: impl Iterator<Item = &'a Cell<'a>>, stage: &StageInfo) -> String {
    let mut names: Vec<String> = Vec::new();
    for job in cells.flat_map(|cell| cell.jobs.iter()) {
        if let Some(name) = job.params.get("optimizer") {
            let name = plain(name).to_uppercase();
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    if names.is_empty() {
        stage
            .params
            .get("optimizer")
            .map_or("—".to_string(), |name| plain(name).to_uppercase())
    } else {
        names.join("/")
    }
}

/// The jobs of a study by id, and by stage and group values: built once per
/// selection, so that reasoning about every decision stays linear in the jobs.
struct JobIndex<'a> {
    /// The `per` keys `by_group` is keyed on, in the decisions' order.
    keys: Vec<String>,
    by_id: HashMap<Uuid, &'a JobRecord>,
    /// Stage and group key (see [`group_key`]) → its jobs, for one set of `per` keys.
    by_group: HashMap<(&'a str, String), Vec<&'a JobRecord>>,
}

/// A group's values as one comparable text: numbers by value (`1` and `1.0` are the
/// same, as [`same_value`] has it), everything else as JSON.
fn group_key<'a>(
    keys: impl Iterator<Item = &'a String>,
    value_of: impl Fn(&str) -> &'a Value,
) -> String {
    let parts: Vec<String> = keys
        .map(|key| match value_of(key) {
            Value::Number(n) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                // -0.0 equals 0.0 by value.
                format!("{key}={}", if x == 0.0 { 0.0 } else { x })
            }
            other => format!("{key}={other}"),
        })
        .collect();
    parts.join("\u{1f}")
}

impl<'a> JobIndex<'a> {
    fn new(input: &'a ReportInput, keys: &[String]) -> JobIndex<'a> {
        let mut by_group: HashMap<(&str, String), Vec<&JobRecord>> = HashMap::new();
        for job in &input.jobs {
            let key = group_key(keys.iter(), |name| param(job, name));
            by_group
                .entry((job.stage.as_str(), key))
                .or_default()
                .push(job);
        }
        JobIndex {
            keys: keys.to_vec(),
            by_id: input.jobs.iter().map(|job| (job.id, job)).collect(),
            by_group,
        }
    }
}

fn selection_section(out: &mut String, input: &ReportInput, selection: &str, names: &ModelNames) {
    let decisions: Vec<&DecisionRecord> = input
        .decisions
        .iter()
        .filter(|d| d.selection == selection)
        .collect();
    let keys: Vec<String> = decisions
        .first()
        .map(|d| d.group.keys().cloned().collect())
        .unwrap_or_default();
    let index = JobIndex::new(input, &keys);
    let _ = writeln!(out, "### Selection `{selection}`\n");
    let mut rules: Vec<&str> = decisions.iter().map(|d| d.rule.as_str()).collect();
    rules.dedup();
    let _ = writeln!(out, "Rule: `{}`.\n", rules.join("`, `"));
    for decision in &decisions {
        let _ = writeln!(
            out,
            "- {}",
            decision_reasoning(input, &index, decision, names)
        );
    }
    out.push('\n');
    let _ = writeln!(out, "Selected models:\n");
    for decision in &decisions {
        let winners: Vec<String> = decision
            .winners
            .iter()
            .map(|id| format!("**{}**", names.name(*id)))
            .collect();
        let winners = if winners.is_empty() {
            "none yet".to_string()
        } else {
            winners.join(", ")
        };
        let _ = writeln!(out, "- {}: {winners}", group_label(&decision.group));
    }
    out.push('\n');
}

/// `ResNet-50` for a backbone group, else `key = value, …`.
fn group_label(group: &serde_json::Map<String, Value>) -> String {
    if group.len() == 1 {
        if let Some(backbone) = group.get(BACKBONE) {
            return pretty_backbone(&plain(backbone));
        }
    }
    if group.is_empty() {
        return "all".to_string();
    }
    group
        .iter()
        .map(|(k, v)| format!("{k} = {}", plain(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The candidates compared, the winner and, when it is not the winner, the group's
/// lowest loss, in one line.
fn decision_reasoning(
    input: &ReportInput,
    index: &JobIndex<'_>,
    decision: &DecisionRecord,
    names: &ModelNames,
) -> String {
    let winner_jobs: Vec<&JobRecord> = decision
        .winners
        .iter()
        .filter_map(|id| index.by_id.get(id).copied())
        .collect();
    let source_stage = winner_jobs.first().map(|job| job.stage.as_str());
    let in_group = |job: &&JobRecord| {
        decision
            .group
            .iter()
            .all(|(key, value)| same_value(param(job, key), value))
    };
    let candidates: Vec<&JobRecord> = match source_stage {
        // The index holds the group's jobs; the check keeps the exact comparison.
        Some(stage) if decision.group.keys().eq(index.keys.iter()) => {
            let key = group_key(decision.group.keys(), |name| &decision.group[name]);
            index
                .by_group
                .get(&(stage, key))
                .into_iter()
                .flatten()
                .copied()
                .filter(in_group)
                .collect()
        }
        _ => input
            .jobs
            .iter()
            .filter(|job| source_stage.map_or(true, |stage| job.stage == stage))
            .filter(in_group)
            .collect(),
    };
    let succeeded = candidates
        .iter()
        .filter(|job| job.state == JobState::Succeeded)
        .count();
    // What the rule saw when it decided: the stored outcome's `ranked` list (every
    // candidate then, ranked or not).
    let at_decision = decision.detail.get("ranked").and_then(Value::as_array);
    let compared = at_decision
        .map(|ranked| ranked.iter().filter(|c| !c["rank"].is_null()).count())
        .unwrap_or(succeeded);
    let ranked_ids: BTreeSet<String> = at_decision
        .into_iter()
        .flatten()
        .filter(|c| !c["rank"].is_null())
        .filter_map(|c| c["job_id"].as_str().map(str::to_owned))
        .collect();
    // Candidates that succeeded after the decision: the rule never ranked them.
    let unranked_now = match at_decision {
        Some(_) => candidates
            .iter()
            .filter(|job| job.state == JobState::Succeeded)
            .filter(|job| !ranked_ids.contains(&job.id.to_string()))
            .count(),
        None => 0,
    };
    let unfinished: Vec<String> = [
        JobState::Running,
        JobState::Queued,
        JobState::Failed,
        JobState::Cancelled,
    ]
    .iter()
    .filter_map(|state| {
        let n = candidates.iter().filter(|job| job.state == *state).count();
        (n > 0).then(|| format!("{n} {}", state.as_str()))
    })
    .collect();
    let group: Vec<String> = decision
        .group
        .iter()
        .map(|(k, v)| format!("{k} = {}", plain(v)))
        .collect();
    let mut line = format!(
        "{} (`{}`): ",
        group_label(&decision.group),
        group.join(", ")
    );
    if compared == candidates.len() || unfinished.is_empty() {
        let _ = write!(line, "{compared} ranked of {} candidates", candidates.len());
    } else {
        let _ = write!(
            line,
            "{compared} ranked of {} candidates (not ranked: {})",
            candidates.len(),
            unfinished.join(", ")
        );
    }
    match &decision.stale {
        Some(stale) => {
            let picks: Vec<String> = stale
                .winners
                .iter()
                .map(|id| format!("**{}**", names.name(*id)))
                .collect();
            let _ = write!(
                line,
                "; **stale**: {unranked_now} more succeeded after the decision; the rule would \
                 now pick {} (kept: {})",
                picks.join(", "),
                stale.reason
            );
        }
        None if unranked_now > 0 => {
            let _ = write!(
                line,
                "; **stale**: {unranked_now} more succeeded after the decision and were never \
                 ranked"
            );
        }
        None => {}
    }
    if winner_jobs.is_empty() {
        line.push_str("; no winner yet.");
        return line;
    }
    let seeds: Vec<&Value> = candidates
        .iter()
        .filter_map(|job| job.params.get(SEED))
        .collect();
    let several_seeds = seeds.iter().any(|seed| !same_value(seed, seeds[0]));
    let described: Vec<String> = winner_jobs
        .iter()
        .map(|job| {
            format!(
                "**{}** ({})",
                names.name(job.id),
                describe(input, job, several_seeds, true)
            )
        })
        .collect();
    let _ = write!(line, "; winner {}.", described.join(", "));
    let lowest = candidates
        .iter()
        .filter(|job| job.state == JobState::Succeeded)
        .filter_map(|job| job.metric(LOSS).map(|loss| (loss, *job)))
        .min_by(|a, b| a.0.total_cmp(&b.0));
    if let Some((loss, job)) = lowest {
        if !decision.winners.contains(&job.id) {
            let _ = write!(
                line,
                " Lowest loss of the group: {} ({}).",
                trimmed(loss, LOSS_DECIMALS),
                describe(input, job, several_seeds, false)
            );
        }
    }
    line
}

/// `30.000 images, batch 256, projection 64, loss 2.84` for a pretext job (the seed
/// only when the group ran several); its grid values and metrics for any other.
fn describe(input: &ReportInput, job: &JobRecord, with_seed: bool, with_loss: bool) -> String {
    let stage = input.stages.iter().find(|stage| stage.name == job.stage);
    let mut parts = Vec::new();
    if job.kind == StageKind::Pretext {
        if let Some(stage) = stage {
            let fraction = param(job, DATA_FRACTION);
            parts.push(format!(
                "{} images",
                super::layout::data_label(stage, fraction, &[job])
            ));
        }
        for (axis, label) in [(BATCH_SIZE, "batch"), (PROJECTION_DIM, "projection")] {
            if let Some(value) = job.params.get(axis) {
                parts.push(format!("{label} {}", plain(value)));
            }
        }
        if let Some(seed) = job.params.get(SEED).filter(|_| with_seed) {
            parts.push(format!("seed {}", plain(seed)));
        }
        if let Some(loss) = job.metric(LOSS).filter(|_| with_loss) {
            parts.push(format!("loss {}", trimmed(loss, LOSS_DECIMALS)));
        }
    } else {
        for (axis, _) in stage.map(|stage| stage.grid.as_slice()).unwrap_or(&[]) {
            if let Some(value) = job.params.get(axis) {
                parts.push(format!("{axis} {}", plain(value)));
            }
        }
        parts.extend(job.metrics().into_iter().filter_map(|(name, value)| {
            Some(format!(
                "{name} {}",
                trimmed(value.as_f64()?, METRIC_DECIMALS)
            ))
        }));
    }
    parts.join(", ")
}

/// One row of a downstream table: the model (and any other grid values) and its jobs.
struct ModelRow<'a> {
    label: String,
    order: (usize, usize),
    cell: Cell<'a>,
}

fn downstream_section(
    out: &mut String,
    input: &ReportInput,
    stage: &StageInfo,
    names: &ModelNames,
    used_marks: &mut BTreeSet<Mark>,
) {
    let jobs: Vec<&JobRecord> = input
        .jobs
        .iter()
        .filter(|job| job.stage == stage.name)
        .collect();
    if jobs.is_empty() {
        let _ = writeln!(out, "No jobs yet.\n");
        return;
    }
    let extra_axes: Vec<&str> = stage
        .grid
        .iter()
        .map(|(axis, _)| axis.as_str())
        .filter(|axis| *axis != SEED)
        .collect();
    let mut rows: Vec<ModelRow> = Vec::new();
    for (position, job) in jobs.iter().enumerate() {
        let baseline = baseline::is_baseline_job(job);
        let mut label = match job.parent {
            Some(parent) => names.name(parent),
            None if baseline => format!(
                "{} (random init)",
                pretty_backbone(&plain(param(job, BACKBONE)))
            ),
            None => {
                super::format::model_name(job.params.get(BACKBONE), job.params.get(PROJECTION_DIM))
            }
        };
        let extras: Vec<String> = extra_axes
            .iter()
            .map(|axis| format!("{axis} {}", plain(param(job, axis))))
            .collect();
        if !extras.is_empty() {
            let _ = write!(label, " ({})", extras.join(", "));
        }
        match rows.iter_mut().find(|row| row.label == label) {
            Some(row) => row.cell.jobs.push(job),
            None => rows.push(ModelRow {
                // Baselines last, after every winner.
                order: (
                    if baseline {
                        usize::MAX
                    } else {
                        names.rank(job.parent)
                    },
                    position,
                ),
                label,
                cell: Cell { jobs: vec![job] },
            }),
        }
    }
    rows.sort_by_key(|row| row.order);

    let with_gains = baseline::stage_has_baselines(input, &stage.name);
    let gain_headings: String = baseline::GAIN_METRICS
        .iter()
        .map(|(_, heading)| format!(" Gain ({heading}) |"))
        .collect();
    let gain_rule = " :---: |".repeat(baseline::GAIN_METRICS.len());
    let (gain_headings, gain_rule) = if with_gains {
        (gain_headings.as_str(), gain_rule.as_str())
    } else {
        ("", "")
    };
    let _ = writeln!(
        out,
        "| Model | Accuracy | Precision | Recall | F1-score |{gain_headings}"
    );
    let _ = writeln!(
        out,
        "| :---- | :------: | :-------: | :----: | :------: |{gain_rule}"
    );
    let columns: Vec<Vec<bool>> = DOWNSTREAM_METRICS
        .iter()
        .map(|(metric, _)| {
            let means: Vec<Option<f64>> = rows
                .iter()
                .map(|row| mean(&row.cell.values(metric)))
                .collect();
            best_flags(&means, METRIC_DECIMALS, false)
        })
        .collect();
    for (index, row) in rows.iter().enumerate() {
        let cells: Vec<String> = DOWNSTREAM_METRICS
            .iter()
            .zip(&columns)
            .map(|((metric, _), bold)| {
                let marks = row.cell.marks(metric);
                used_marks.extend(marks.iter().copied());
                cell_text(
                    &row.cell.values(metric),
                    &marks,
                    METRIC_DECIMALS,
                    bold[index],
                )
            })
            .collect();
        let gains: String = if !with_gains {
            String::new()
        } else if row
            .cell
            .jobs
            .iter()
            .any(|job| baseline::is_baseline_job(job))
        {
            " — |".repeat(baseline::GAIN_METRICS.len())
        } else {
            baseline::GAIN_METRICS
                .iter()
                .map(|(metric, _)| {
                    match baseline::gain(input, &stage.name, &row.cell.jobs, metric) {
                        Some(gain) => format!(" {} |", baseline::signed(gain, METRIC_DECIMALS)),
                        None => " – |".to_owned(),
                    }
                })
                .collect()
        };
        let _ = writeln!(out, "| {} | {} |{gains}", row.label, cells.join(" | "));
    }
    out.push('\n');
    if with_gains {
        let _ = writeln!(
            out,
            "Random init: the same protocol from an untrained backbone of the same \
             architecture; a gain is the model's mean minus its random init's (– while \
             either has no value).\n"
        );
    }
}

/// A `command` stage: one row per job with its grid values, seed and state, then a
/// column per numeric result field (a metric's final value, its `_best`, and what the
/// program's `result` lines set), sorted by name so a metric sits beside its best.
fn command_section(
    out: &mut String,
    input: &ReportInput,
    stage: &StageInfo,
    used_marks: &mut BTreeSet<Mark>,
) {
    let jobs: Vec<&JobRecord> = input
        .jobs
        .iter()
        .filter(|job| job.stage == stage.name)
        .collect();
    if jobs.is_empty() {
        let _ = writeln!(out, "No jobs yet.\n");
        return;
    }
    let axes: Vec<&str> = stage
        .grid
        .iter()
        .map(|(axis, _)| axis.as_str())
        .filter(|axis| *axis != SEED)
        .collect();
    let with_seed = jobs.iter().any(|job| job.params.contains_key(SEED));
    let metric_names: BTreeSet<String> = jobs
        .iter()
        .flat_map(|job| job.metrics().into_keys())
        .collect();
    if !metric_names.is_empty() {
        let _ = writeln!(
            out,
            "One row per job. A metric's column holds its final value and `<metric>_best` its \
             best: the lowest for a loss or an error, the highest for anything else, unless \
             the program said otherwise.\n"
        );
    }
    let header: Vec<&str> = axes
        .iter()
        .copied()
        .chain(with_seed.then_some(SEED))
        .chain(std::iter::once("state"))
        .chain(metric_names.iter().map(String::as_str))
        .collect();
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}", " :--: |".repeat(header.len()));
    for job in &jobs {
        let mut cells: Vec<String> = axes.iter().map(|axis| plain(param(job, axis))).collect();
        if with_seed {
            cells.push(plain(param(job, SEED)));
        }
        cells.push(job.state.as_str().to_string());
        let cell = Cell { jobs: vec![job] };
        for name in &metric_names {
            let marks = cell.marks(name);
            used_marks.extend(marks.iter().copied());
            cells.push(cell_text(&cell.values(name), &marks, 4, false));
        }
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bold_ties_at_the_precision_shown() {
        let flags = best_flags(&[Some(4.751), Some(4.749), None, Some(5.0)], 2, true);
        assert_eq!(flags, vec![true, true, false, false]);
        let flags = best_flags(&[Some(0.699), Some(0.645)], 3, false);
        assert_eq!(flags, vec![true, false]);
        assert_eq!(best_flags(&[None, None], 2, true), vec![false, false]);
    }

    #[test]
    fn cell_text_puts_marks_outside_the_bold() {
        assert_eq!(
            cell_text(&[2.0, 4.0], &[Mark::Running], 2, true),
            "**3.0 ± 1.41** ▶"
        );
        assert_eq!(
            cell_text(&[], &[Mark::Failed, Mark::Missing], 2, false),
            "✗–"
        );
        assert_eq!(cell_text(&[4.17], &[], 2, false), "4.17");
    }
}
