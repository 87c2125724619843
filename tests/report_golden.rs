//! Golden files of the Markdown, CSV and JSON report of a fixed sweep in every state
//! (`tests/golden/`). `UPDATE_GOLDEN=1 cargo test --release --test report_golden`
//! rewrites them; review the diff before committing it.

#[path = "common/report.rs"]
mod common;

use common::{demo_input, golden};
use sweeper::report;

fn check(name: &str, actual: &str) {
    let path = golden(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    if expected != actual {
        let first_difference = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the output, first at line {}:\n--- expected\n{}\n--- actual\n{}",
            path.display(),
            first_difference + 1,
            expected.lines().nth(first_difference).unwrap_or("<end>"),
            actual.lines().nth(first_difference).unwrap_or("<end>"),
        );
    }
}

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
