//! Golden files of the Markdown, CSV and JSON report of a fixed sweep in every state
//! (`tests/golden/`). `UPDATE_GOLDEN=1 cargo test --release --test it report_golden`
//! rewrites them; review the diff before committing it.

use sweeper::report;

use crate::common::report::{check_golden as check, demo_input};

#[test]
fn markdown_matches_the_golden_file() {
    check("report.md", &report::markdown(&demo_input()));
}

#[test]
fn csv_matches_the_golden_file() {
    check("report.csv", &report::csv(&demo_input()));
}

#[test]
fn json_matches_the_golden_file() {
    let json = serde_json::to_string_pretty(&report::json(&demo_input())).unwrap() + "\n";
    check("report.json", &json);
}
