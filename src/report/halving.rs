//! The successive-halving section of a pretext stage: every rung decision, with each
//! candidate's value at the rung, the cut and who stopped. A stopped cell's value is
//! shown here, at its rung, never in the stage's table of final losses.

use std::collections::HashMap;
use std::fmt::Write as _;

use uuid::Uuid;

use super::format::plain;
use super::model::{JobRecord, ReportInput};
use crate::sweep::halving::RungCandidate;

/// `### Successive halving` under the stage's tables; nothing when it has no rung
/// decision.
pub fn section(out: &mut String, input: &ReportInput, stage: &str) {
    let decisions: Vec<_> = input.halving.iter().filter(|d| d.stage == stage).collect();
    let Some(first) = decisions.first() else {
        return;
    };
    let jobs: HashMap<Uuid, &JobRecord> = input.jobs.iter().map(|job| (job.id, job)).collect();
    let axes: Vec<&str> = input
        .stages
        .iter()
        .filter(|s| s.name == stage)
        .flat_map(|s| s.grid.iter())
        .filter(|(_, values)| values.len() > 1)
        .map(|(axis, _)| axis.as_str())
        .collect();
    let _ = writeln!(out, "### Successive halving\n");
    let _ = writeln!(
        out,
        "At each rung, within each group, the best {} of the jobs there by {} went on; the \
         others stopped at that epoch. A value here is the {} at the rung, not a final one.\n",
        first.keep, first.metric, first.metric
    );
    let _ = writeln!(out, "| Group | Rung | Jobs | Cut | Went on | Stopped |");
    let _ = writeln!(out, "| :-- | --: | --: | --: | :-- | :-- |");
    for decision in &decisions {
        let group: Vec<String> = decision
            .group
            .iter()
            .map(|(key, value)| format!("{key} {}", plain(value)))
            .collect();
        let label = |candidate: &RungCandidate| {
            let cell: Vec<String> = jobs
                .get(&candidate.job_id)
                .map(|job| {
                    job.params
                        .iter()
                        // The cell: its swept axes outside the group.
                        .filter(|(key, _)| {
                            axes.contains(&key.as_str()) && !decision.group.contains_key(*key)
                        })
                        .map(|(key, value)| format!("{key} {}", plain(value)))
                        .collect()
                })
                .unwrap_or_default();
            let value = if candidate.value.is_nan() {
                "no value".to_owned()
            } else {
                format!("{:.3}", candidate.value)
            };
            let name = if cell.is_empty() {
                // A group of one cell per value: the job key's start names it.
                candidate.key.chars().take(8).collect()
            } else {
                cell.join(", ")
            };
            format!("{name} ({value})")
        };
        let list = |set: &[RungCandidate]| {
            if set.is_empty() {
                "–".to_owned()
            } else {
                set.iter().map(label).collect::<Vec<_>>().join("; ")
            }
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            if group.is_empty() {
                "all".to_owned()
            } else {
                group.join(", ")
            },
            decision.rung,
            decision.cut.kept.len() + decision.cut.stopped.len(),
            decision
                .cut
                .cut
                .map_or("–".to_owned(), |cut| format!("{cut:.3}")),
            list(&decision.cut.kept),
            list(&decision.cut.stopped),
        );
    }
    out.push('\n');
}
