//! `status` while a study runs: each training job's epoch, headline metric, speed and
//! ETA, each stage's ended count and ETA, and `status --watch`. The view's layout is a
//! golden file (`tests/golden/status.txt`, `status.json`; `UPDATE_GOLDEN=1` rewrites
//! them); a real worker's job shows its epochs there while it trains.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::common::report::check_golden;
use crate::common::{eventually, TestDb};
use sweeper::progress::EpochSummary;
use sweeper::status::{stage_table, Status};
use sweeper::store::table::{Format, Table};
use sweeper::store::{JobState, RunningRow, StageCount};
use sweeper::train::synth::{self, SynthConfig};

backend_tests!(a_training_jobs_epochs_show_in_status_while_it_runs);

fn count(stage: &str, state: JobState, count: i64, mean_seconds: Option<f64>) -> StageCount {
    StageCount {
        sweep: "study".into(),
        stage: stage.into(),
        state,
        count,
        mean_seconds,
    }
}

fn running(n: u128, stage: &str, epoch: Option<EpochSummary>, age: f64) -> RunningRow {
    RunningRow {
        id: Uuid::from_u128(n),
        sweep: "study".into(),
        stage: stage.into(),
        attempt: 1,
        worker: Some(format!("gpu{n}")),
        step: Some(40),
        epoch_age_seconds: epoch.as_ref().map(|_| age),
        epoch,
        running_seconds: 95.04,
        heartbeat_age_seconds: 1.26,
        lease_left_seconds: 58.74,
        cancel_requested: false,
    }
}

/// A study mid-way: pretext with two jobs running (epoch 3 of 15 at 4.2 s an epoch,
/// stored 2 s ago: 12 × 4.2 − 2 = 48.4 s left; epoch 14 of 15, 1 s ago: 3.2 s left),
/// four queued and six done at 60 s each; linear not started.
fn mid_study() -> Status {
    let epoch = |epoch, value, seconds| EpochSummary {
        epoch,
        epochs: 15,
        metric: "loss".into(),
        value,
        images_per_s: 487.6,
        seconds,
    };
    let counts = vec![
        count("pretext", JobState::Queued, 4, None),
        count("pretext", JobState::Running, 2, None),
        count("pretext", JobState::Succeeded, 6, Some(60.0)),
        count("linear", JobState::Queued, 2, None),
    ];
    let running = vec![
        running(1, "pretext", Some(epoch(3, 4.73125, 4.2)), 2.0),
        running(2, "pretext", Some(epoch(14, 4.19, 4.2)), 1.0),
    ];
    Status {
        stages: stage_table(&counts, &running),
        counts,
        running,
        stale_decisions: Table::new(["selection"]),
    }
}

#[test]
fn the_status_view_matches_the_golden_files() {
    let status = mid_study();
    check_golden("status.txt", &status.render(Format::Text));
    check_golden("status.json", &status.render(Format::Json));
}

/// The ETAs from the numbers in `mid_study`'s comment: the stage's work left is
/// 48.4 + 3.2 + 4 × 60 = 291.6 s over two running jobs.
#[test]
fn etas_count_down_from_the_stored_epoch() {
    let status = mid_study();
    let json = status.to_json();
    let pretext = &json["stages"][0];
    assert_eq!(pretext["done"], json!(6));
    assert_eq!(pretext["eta s"], json!(146));
    // The linear stage has queued jobs and nothing running: no pace, no ETA.
    assert_eq!(json["stages"][1]["eta s"], Value::Null);
    let jobs = status.running_table().to_json_value();
    assert_eq!(jobs[0]["progress"], json!("epoch 3/15"));
    assert_eq!(jobs[0]["latest"], json!("loss 4.7313"));
    assert_eq!(jobs[0]["images/s"], json!(488));
    assert_eq!(jobs[0]["eta s"], json!(48));
    assert_eq!(jobs[1]["eta s"], json!(3));
    assert_eq!(status.active(), 8);
}

const SWEEP: &str = r#"
[sweep]
name = "live"
data_root = "data"
seeds = [0]

[datasets.A]
folder = "setA"
include_labels = ["ASC_H", "ASC_US"]

[[stages]]
name = "pretext"
kind = "pretext"
dataset = "A"

[stages.params]
backbone = "small_resnet"
image_size = 32
batch_size = 8
epochs = 2000
projection_dim = 8
checkpoint_every = 2000
"#;

/// A job of 2,000 short epochs (cancelled long before its end): `status` shows its epochs as they end, `status --watch` on a pipe
/// prints one timestamped view per tick, and once the job is cancelled the watch
/// shows it and ends by itself.
async fn a_training_jobs_epochs_show_in_status_while_it_runs(db: &TestDb) {
    synth::generate(
        &db.path("data"),
        &SynthConfig {
            image_size: 32,
            main_per_label: 8,
            other_labels: 0,
            rare_labels: 0,
            train_per_label: 0,
            test_per_label: 0,
            threads: 1,
            ..SynthConfig::default()
        },
    )
    .expect("the dataset");
    std::fs::write(db.path("live.toml"), SWEEP).expect("the sweep file");
    let submitted = db.sweeper(&["submit", "live.toml"]);
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let mut worker = db.spawn_worker(0, &[]);

    let mut watch = db
        .command(&["status", "live", "--watch", "0.2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("status --watch starts");
    let status_json = || -> Value {
        let out = db.sweeper(&["status", "live", "--format", "json"]);
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    };
    // Epoch 2 rather than 1: the second epoch's ETA goes by a warmed-up pace.
    let seen = eventually(Duration::from_secs(300), || async {
        status_json()["running"][0]["epoch"]["epoch"]
            .as_i64()
            .unwrap_or(0)
            >= 2
    })
    .await;
    assert!(
        seen,
        "no epoch in status: {}\n{}",
        status_json(),
        db.worker_logs()
    );
    let status = status_json();
    let epoch = &status["running"][0]["epoch"];
    assert_eq!(epoch["epochs"], json!(2000), "{status}");
    assert_eq!(epoch["metric"], json!("loss"), "{status}");
    // NT-Xent at batch 8 starts near ln(2·8 − 1) = 2.708.
    let loss = epoch["value"].as_f64().unwrap();
    assert!(loss > 1.0 && loss < 4.0, "{status}");
    assert!(epoch["images_per_s"].as_f64().unwrap() > 0.0, "{status}");
    // Nothing finished yet, so the stage's ETA is the running job's own.
    let stage_eta = status["stages"][0]["eta s"].as_f64().expect("a stage ETA");
    assert!(stage_eta > 0.0, "{status}");

    let text = String::from_utf8(db.sweeper(&["status", "live"]).stdout).unwrap();
    let row = text
        .lines()
        .find(|line| line.contains(" pretext ") && line.contains("epoch "))
        .unwrap_or_else(|| panic!("no running row in\n{text}"));
    assert!(row.contains("/2000") && row.contains("loss "), "{text}");

    let cancelled = db.sweeper(&["cancel", "--sweep", "live"]);
    assert!(
        cancelled.status.success(),
        "{}",
        String::from_utf8_lossy(&cancelled.stderr)
    );
    // The watch ends by itself once nothing is queued or running.
    let mut views = Vec::new();
    let mut last = String::new();
    for line in BufReader::new(watch.stdout.take().unwrap()).lines() {
        let line = line.expect("a line of the watch");
        if line.starts_with("== ") {
            views.push(std::mem::take(&mut last));
        }
        last.push_str(&line);
        last.push('\n');
    }
    assert!(watch.wait().expect("the watch ends").success());
    assert!(views.len() >= 2, "one view per tick:\n{views:?}\n{last}");
    assert!(
        views.iter().any(|view| view.contains("epoch ")),
        "a view while it trained:\n{views:?}"
    );
    let last_counts: Vec<&str> = last
        .lines()
        .find(|line| line.starts_with("live "))
        .unwrap_or_else(|| panic!("no stage row in the last view:\n{last}"))
        .split_whitespace()
        .collect();
    // sweep, stage, queued, running, succeeded, failed, cancelled, total, done, eta.
    assert_eq!(
        last_counts[2..9],
        ["0", "0", "0", "0", "1", "1", "1"],
        "{last}"
    );
    let _ = worker.kill();
    let _ = worker.wait();
}
