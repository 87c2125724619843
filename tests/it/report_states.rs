//! Reports of unfinished sweeps: failed, running, queued, cancelled and missing cells,
//! several seeds per cell, and the long-form outputs carrying every job.

use serde_json::json;
use sweeper::report::{self, JobState, ReportInput};
use sweeper::sweep::StageKind;

use crate::common::report::*;

fn row<'a>(rows: &'a [TableRow], backbone: &str, batch: u64, data: &str) -> &'a TableRow {
    rows.iter()
        .find(|row| row.backbone == backbone && row.batch == batch && row.data == data)
        .unwrap_or_else(|| panic!("no row {backbone} {batch} {data} in {rows:#?}"))
}

#[test]
fn seeds_show_mean_and_sample_std_and_bold_compares_means() {
    let markdown = report::markdown(&demo_input());
    let rows = pretext_rows(&markdown);
    // 4.55 and 4.61: mean 4.58, sample std 0.0424; 4.48 and 4.52: 4.5, 0.0283.
    let full = row(&rows, "Small ResNet", 64, "600");
    assert_eq!(full.cells, vec!["4.58 ± 0.04", "**4.5 ± 0.03**"]);
    // 4.7 and 4.66: 4.68 ± 0.03; the other cell has one seed done and one failed.
    let half = row(&rows, "Small ResNet", 64, "300");
    assert_eq!(half.cells, vec!["**4.68 ± 0.03**", "4.73 ✗"]);
}

#[test]
fn unfinished_cells_carry_marks_and_never_bold() {
    let markdown = report::markdown(&demo_input());
    let rows = pretext_rows(&markdown);
    assert_eq!(
        row(&rows, "ResNet-18", 32, "600").cells,
        vec!["**3.8**", "▶"]
    );
    assert_eq!(row(&rows, "ResNet-18", 32, "300").cells, vec!["…", "⊘"]);
    // The cell (600, 64, 32) has no job at all.
    assert_eq!(
        row(&rows, "ResNet-18", 64, "600").cells,
        vec!["**4.4**", "–"]
    );
    // Equal values are bold together.
    assert_eq!(
        row(&rows, "ResNet-18", 64, "300").cells,
        vec!["**4.6**", "**4.6**"]
    );
    // Without `train_images`, 0.5 × 600 nominal images.
    assert!(rows
        .iter()
        .any(|row| row.backbone == "ResNet-18" && row.data == "300"));

    assert!(markdown.contains(
        "Marks: … queued, ▶ running, ✗ failed, ⊘ cancelled, – no job (not submitted or excluded)."
    ));
    assert!(markdown.contains("29 jobs: 22 succeeded, 2 running, 2 queued, 2 failed, 1 cancelled."));
    let linear = table_after(&markdown, "## Stage 2");
    assert_eq!(
        linear[1],
        vec!["ResNet18_projection16", "▶", "▶", "▶", "▶", "–", "–"]
    );
    let finetune = table_after(&markdown, "## Stage 3");
    assert_eq!(
        finetune[1],
        vec!["ResNet18_projection16", "✗", "✗", "✗", "✗", "–", "–"]
    );
    // 0.7 and 0.72: 0.71 ± 0.014.
    assert_eq!(finetune[0][1], "**0.71 ± 0.014**");
}

#[test]
fn a_cell_whose_seeds_all_failed_has_no_value_and_three_seeds_average() {
    let stage = seed_pretext_stage();
    let cell = |projection: i64, seed: i64| {
        params(&[
            ("backbone", json!("resnet50")),
            ("data_fraction", json!(1.0)),
            ("batch_size", json!(64)),
            ("projection_dim", json!(projection)),
            ("seed", json!(seed)),
        ])
    };
    let pretext =
        |id, state, params, result| job(id, "pretext", StageKind::Pretext, state, params, result);
    let jobs = vec![
        pretext(1, JobState::Succeeded, cell(32, 0), loss(3.0)),
        pretext(2, JobState::Succeeded, cell(32, 1), loss(3.2)),
        pretext(3, JobState::Succeeded, cell(32, 2), loss(3.4)),
        pretext(4, JobState::Failed, cell(64, 0), None),
        pretext(5, JobState::Failed, cell(64, 1), None),
        pretext(
            6,
            JobState::Succeeded,
            cell(128, 0),
            Some(json!({"accuracy": 0.5 })),
        ),
    ];
    let input = ReportInput {
        sweep: "s".into(),
        stages: vec![stage],
        jobs,
        ..ReportInput::default()
    };
    let markdown = report::markdown(&input);
    let rows = pretext_rows(&markdown);
    assert_eq!(rows.len(), 4 * 3 * 3);
    // 3.0, 3.2, 3.4: mean 3.2, sample std 0.2.
    assert_eq!(
        row(&rows, "ResNet-50", 64, "30.000").cells,
        vec!["**3.2 ± 0.2**", "✗", "?"]
    );
    assert_eq!(
        row(&rows, "ResNet-50", 128, "30.000").cells,
        vec!["–", "–", "–"]
    );
    assert_eq!(
        row(&rows, "ResNet-101", 64, "21.000").cells,
        vec!["–", "–", "–"]
    );
    // The seed pretext stage says LARS even where no job exists yet.
    assert!(rows.iter().all(|row| row.optimizer == "LARS"));
    assert!(markdown.contains("✗ failed"));
    assert!(markdown.contains("? finished without this metric"));
    assert!(!markdown.contains("▶ running"));
}

#[test]
fn long_forms_carry_every_job_whatever_its_state() {
    let input = demo_input();
    let csv = report::csv(&input);
    for job in &input.jobs {
        let id = job.id.to_string();
        let rows: Vec<&str> = csv.lines().filter(|line| line.contains(&id)).collect();
        let metrics = job.metrics().len().max(1);
        // Rows of this job as a job, not as another job's parent.
        let own = rows
            .iter()
            .filter(|line| line.split(',').nth(2) == Some(id.as_str()))
            .count();
        assert_eq!(own, metrics, "{id}");
    }
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    assert_eq!(
        &header[..5],
        &["sweep", "stage", "job_id", "parent", "state"]
    );
    assert_eq!(&header[header.len() - 2..], &["metric", "value"]);
    assert!(csv.contains(
       "demo,pretext,00000000-0000-0000-0000-00000000000c,,failed,small_resnet,0.5,64,32,,3,,lars,1,,"
    ));

    let json = report::json(&input);
    let jobs = json["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), input.jobs.len());
    let failed = jobs
        .iter()
        .find(|job| job["id"] == json!("00000000-0000-0000-0000-00000000000c"))
        .unwrap();
    assert_eq!(failed["state"], json!("failed"));
    assert_eq!(failed["error"], json!("loss became NaN at epoch 3"));
    assert_eq!(failed["metrics"], json!({}));
    let winners = &json["selections"][0]["winners"][0];
    assert_eq!(winners["model"], json!("SmallResNet_projection32"));
}
