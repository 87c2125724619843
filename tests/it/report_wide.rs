//! Exports a notebook reads directly: `report --wide` as golden files (one row per job,
//! `tests/golden/wide.csv`, `wide.json`; `UPDATE_GOLDEN=1` rewrites them), and a heat
//! map whose grid has a single value on each axis still draws its cell and labels.

use serde_json::json;
use sweeper::report;

use crate::common::report::{check_golden, demo_input};

#[test]
fn wide_csv_matches_the_golden_file() {
    check_golden("wide.csv", &report::wide::csv(&demo_input()));
}

#[test]
fn wide_json_matches_the_golden_file() {
    let json = serde_json::to_string_pretty(&report::wide::json(&demo_input())).unwrap() + "\n";
    check_golden("wide.json", &json);
}

/// One row per job, whatever its state, with its metrics in their own columns and
/// the duration from the fixture's times (10:00:00 to 10:01:30.5).
#[test]
fn wide_rows_are_one_per_job_with_metrics_as_columns() {
    let input = demo_input();
    let table = report::wide::table(&input);
    assert_eq!(table.rows.len(), input.jobs.len());
    let column = |name: &str| {
        table
            .columns
            .iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name} in {:?}", table.columns))
    };
    for name in [
        "seed",
        "batch_size",
        "loss",
        "accuracy",
        "f1",
        "attempts",
        "host",
        "device",
    ] {
        column(name);
    }
    let succeeded = table
        .rows
        .iter()
        .find(|row| row[column("state")] == json!("succeeded") && !row[column("loss")].is_null())
        .expect("a finished pretext job");
    assert_eq!(succeeded[column("duration_s")], json!(90.5));
    let queued = table
        .rows
        .iter()
        .find(|row| row[column("state")] == json!("queued"))
        .expect("a queued job");
    assert!(queued[column("loss")].is_null() && queued[column("duration_s")].is_null());
}

/// One data amount, one projection size: the grid's only cell is drawn (its fill and
/// its value) and both axes are labelled.
#[test]
fn a_single_value_heat_map_has_its_cell_and_labels() {
    let mut input = demo_input();
    let pretext = &mut input.stages[0];
    for (axis, values) in pretext.grid.iter_mut() {
        if axis == "data_fraction" || axis == "projection_dim" {
            values.truncate(1);
        }
    }
    let keep = |job: &report::JobRecord| {
        job.stage != "pretext"
            || (job.params["data_fraction"] == json!(1.0)
                && job.params["projection_dim"] == json!(16))
    };
    input.jobs.retain(keep);
    input.curves.clear();
    let dir = tempfile::tempdir().unwrap();
    let written = report::plots(&input, dir.path()).unwrap();
    let svg = written
        .iter()
        .find(|p| p.ends_with("pretext-small_resnet-heatmap.svg"))
        .expect("the heat map");
    let svg = std::fs::read_to_string(svg).unwrap();
    let small = input
        .jobs
        .iter()
        .filter(|job| job.stage == "pretext" && job.params["backbone"] == json!("small_resnet"))
        .filter_map(|job| job.metric("loss"))
        .collect::<Vec<_>>();
    assert!(!small.is_empty());
    // The cell is filled with a viridis colour, not left out.
    let viridis_ends = ["#440154", "#FDE725", "#fde725"];
    assert!(
        viridis_ends.iter().any(|fill| svg.contains(fill)),
        "no filled cell in\n{svg}"
    );
    // The projection size under the column, the data amount beside the row.
    assert!(svg.contains(">\n16\n</text>"), "no column label");
    assert!(svg.contains(">\n600\n</text>"), "no row label");
    assert!(svg.contains(">\n3.91\n</text>"), "no value in the cell");
    // And the colour bar names its scale.
    assert!(svg.contains("final loss"));
}
