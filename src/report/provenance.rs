//! The report's provenance section: per stage, what produced its numbers (code,
//! libtorch, device, host, data, sweep version), and a warning where one table mixes
//! code versions or datasets.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::ReportInput;
use crate::provenance::Provenance;

/// The section, or nothing when the input carries no provenance at all.
pub fn section(input: &ReportInput) -> String {
    if input.provenance.is_empty() {
        return String::new();
    }
    let mut out = String::from("## Provenance\n\n");
    let _ = writeln!(
        out,
        "| Stage | Results | Code | libtorch | Device | Hosts | Data | Sweep versions |"
    );
    let _ = writeln!(out, "| :-- | --: | :-- | :-- | :-- | :-- | :-- | :-- |");
    let mut warnings = Vec::new();
    for stage in &input.stages {
        let rows: Vec<_> = input
            .provenance
            .iter()
            .filter(|row| row.stage == stage.name)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let known: Vec<&Provenance> = rows.iter().filter_map(|r| r.provenance.as_ref()).collect();
        let distinct = |f: &dyn Fn(&Provenance) -> Option<String>| -> BTreeSet<String> {
            known.iter().filter_map(|p| f(p)).collect()
        };
        let imported = known.iter().filter(|p| p.imported_from.is_some()).count();
        let code = distinct(&|p| Some(p.code()));
        let data = distinct(&|p| p.dataset.as_ref().map(|d| d.short()));
        let versions: BTreeSet<String> = rows.iter().map(|r| r.spec_version.to_string()).collect();
        let mut code_cell = joined(&code);
        if imported > 0 {
            code_cell = format!("{code_cell} ({imported} imported)");
        }
        let unrecorded = rows.len() - known.len();
        let results = if unrecorded > 0 {
            format!("{} ({unrecorded} unrecorded)", rows.len())
        } else {
            rows.len().to_string()
        };
        let _ = writeln!(
            out,
            "| {} | {results} | {code_cell} | {} | {} | {} | {} | {} |",
            stage.name,
            joined(&distinct(&|p| p.libtorch.clone())),
            joined(&distinct(
                &|p| (!p.device_name.is_empty()).then(|| p.device_name.clone())
            )),
            joined(&distinct(&|p| (!p.host.is_empty()).then(|| p.host.clone()))),
            joined(&data),
            joined(&versions),
        );
        let trained_code: BTreeSet<String> = known
            .iter()
            .filter(|p| p.imported_from.is_none())
            .map(|p| p.code())
            .collect();
        if trained_code.len() > 1 {
            warnings.push(format!(
                "stage `{}` mixes {} code versions ({}): its rows may not compare",
                stage.name,
                trained_code.len(),
                joined(&trained_code)
            ));
        }
        if data.len() > 1 {
            warnings.push(format!(
                "stage `{}` mixes {} dataset fingerprints ({}): its rows were trained on different data",
                stage.name,
                data.len(),
                joined(&data)
            ));
        }
        if versions.len() > 1 {
            warnings.push(format!(
                "stage `{}` has results from sweep versions {}",
                stage.name,
                joined(&versions)
            ));
        }
    }
    out.push('\n');
    for warning in warnings {
        let _ = writeln!(out, "> **Mixed:** {warning}.\n");
    }
    out
}

fn joined(values: &BTreeSet<String>) -> String {
    if values.is_empty() {
        "—".to_owned()
    } else {
        values.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}
