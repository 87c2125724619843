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

/// Gains computed by hand from the fixture's numbers: linear accuracy 0.6125 − 0.3915,
/// F1 0.5949 − 0.38; fine-tune means over two seeds each, (0.7 + 0.72)/2 − (0.6 + 0.62)/2
/// and (0.7 + 0.704)/2 − (0.59 + 0.61)/2. A model or baseline without a value has no gain.
#[test]
fn random_init_rows_sit_below_the_winners_with_the_gains() {
    let markdown = sweeper::report::markdown(&demo_input());
    let rows: Vec<&str> = markdown
        .lines()
        .filter(|line| {
            line.starts_with("| SmallResNet")
                || line.starts_with("| ResNet18")
                || line.contains("(random init)")
        })
        .collect();
    assert_eq!(
        rows,
        [
            "| SmallResNet_projection32 | **0.613** | **0.6** | **0.59** | **0.595** | +0.221 | +0.215 |",
            "| ResNet18_projection16 | ▶ | ▶ | ▶ | ▶ | – | – |",
            "| Small ResNet (random init) | 0.392 | 0.4 | 0.39 | 0.38 | — | — |",
            "| ResNet-18 (random init) | … | … | … | … | — | — |",
            "| SmallResNet_projection32 | **0.71 ± 0.014** | **0.705 ± 0.007** | **0.7 ± 0.014** | **0.702 ± 0.003** | +0.1 | +0.102 |",
            "| ResNet18_projection16 | ✗ | ✗ | ✗ | ✗ | – | – |",
            "| Small ResNet (random init) | 0.61 ± 0.014 | 0.605 ± 0.007 | 0.6 ± 0.0 | 0.6 ± 0.014 | — | — |",
            "| ResNet-18 (random init) | 0.5 | 0.5 | 0.5 | 0.5 | — | — |",
        ]
    );
    let json = sweeper::report::json(&demo_input());
    let baselines = json["baselines"].as_array().expect("a baselines list");
    let linear_small = baselines
        .iter()
        .find(|b| b["stage"] == "linear" && b["architecture"]["backbone"] == "small_resnet")
        .expect("the linear small_resnet baseline");
    assert_eq!(linear_small["random_init"]["mean"]["accuracy"], 0.3915);
    let model = &linear_small["models"][0];
    assert_eq!(model["model"], "SmallResNet_projection32");
    assert!((model["gain"]["accuracy"].as_f64().unwrap() - 0.221).abs() < 1e-12);
    assert!((model["gain"]["f1"].as_f64().unwrap() - 0.2149).abs() < 1e-12);
    // CSV: the baseline is a parameter column, true on the random-init rows only.
    let csv = sweeper::report::csv(&demo_input());
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let column = header
        .iter()
        .position(|h| *h == "baseline")
        .expect("a baseline column");
    let marked = csv
        .lines()
        .skip(1)
        .filter(|line| line.split(',').nth(column) == Some("true"))
        .count();
    // Five baseline jobs: one metric row each per numeric field (accuracy, precision,
    // recall, f1) when finished, one empty row for the queued one.
    assert_eq!(marked, 4 * 4 + 1);
}
