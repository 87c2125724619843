//! Results of `command` stages through the real binary: metric lines become the job's
//! result (final and best values, a `result` line over them), every report format shows
//! them, and `sweeper logs` prints what the program wrote, every attempt, from the job's
//! directory or from a shared artifact store. The sweeps here name no `data_root`.

use std::process::Output;
use std::time::Duration;

use crate::common::{wait_all, TestDb};
use serde_json::{json, Value};
use sweeper::store::{JobRow, JobState};

backend_tests!(
    metrics_become_results_in_every_report_and_the_log_keeps_the_output,
    every_attempt_appends_to_the_log_in_a_shared_store,
);

/// Two jobs (`w` = 1, 2). Losses `w.0`, `0.w`, `0.w5` by step: final `0.w5`, best
/// `0.w`. Accuracies 0.5, `0.9w`, 0.8: best `0.9w`, final replaced by the result line.
const TRAIN: &str = r#"w=$1
echo "starting w=$w"
echo "{\"metric\": \"loss\", \"value\": $w.0, \"step\": 0}"
echo '{"metric": "accuracy", "value": 0.5, "step": 0}'
echo "{\"metric\": \"loss\", \"value\": 0.$w, \"step\": 1}"
echo "{\"metric\": \"accuracy\", \"value\": 0.9$w, \"step\": 1}"
echo "warning from w=$w" >&2
echo "{\"metric\": \"loss\", \"value\": 0.${w}5, \"step\": 2}"
echo '{"metric": "accuracy", "value": 0.8, "step": 2}'
echo '{"result": {"accuracy": 0.85, "epochs": 3}}'
"#;

const SWEEP: &str = r#"[sweep]
name = "metrics"
seeds = [7]

[[stages]]
name = "train"
kind = "command"
command = ["sh", "train.sh", "{w}"]

[stages.grid]
w = [1, 2]
"#;

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn stdout(output: &Output) -> String {
    assert!(output.status.success(), "{}", text(output));
    String::from_utf8(output.stdout.clone()).expect("UTF-8 output")
}

fn submit(db: &TestDb, sweep: &str) {
    std::fs::write(db.path("sweep.toml"), sweep).unwrap();
    // No data_root and no dataset: a command-only sweep needs neither.
    let submitted = db.sweeper(&["submit", "sweep.toml"]);
    assert!(submitted.status.success(), "{}", text(&submitted));
}

fn run_worker(db: &TestDb, extra: &[&str]) {
    let mut args = vec!["--exit-when-idle"];
    args.extend_from_slice(extra);
    let mut worker = db.spawn_worker(0, &args);
    let statuses = wait_all(std::slice::from_mut(&mut worker), Duration::from_secs(120));
    assert!(statuses[0].success(), "{}", db.worker_logs());
}

fn by_param<'a>(jobs: &'a [JobRow], name: &str, value: i64) -> &'a JobRow {
    jobs.iter()
        .find(|job| job.params.get(name) == Some(&json!(value)))
        .unwrap_or_else(|| panic!("no job with {name} = {value}: {jobs:#?}"))
}

/// The longest start two ids share.
fn common_start(a: &str, b: &str) -> String {
    a.chars()
        .zip(b.chars())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x)
        .collect()
}

async fn metrics_become_results_in_every_report_and_the_log_keeps_the_output(db: &TestDb) {
    std::fs::write(db.path("train.sh"), TRAIN).unwrap();
    submit(db, SWEEP);
    // The default artifact store, `artifacts/`, is also the job directories' home.
    run_worker(db, &[]);

    let store = db.store().await;
    let jobs = store.jobs_for_report("metrics").await.unwrap();
    assert_eq!(jobs.len(), 2, "{jobs:#?}");
    assert!(
        jobs.iter().all(|job| job.state == JobState::Succeeded),
        "{jobs:#?}\n{}",
        db.worker_logs()
    );
    let one = by_param(&jobs, "w", 1);
    let two = by_param(&jobs, "w", 2);
    assert_eq!(
        one.result,
        Some(json!({
            "loss": 0.15, "loss_best": 0.1,
            "accuracy": 0.85, "accuracy_best": 0.91,
            "epochs": 3,
        }))
    );
    assert_eq!(
        two.result,
        Some(json!({
            "loss": 0.25, "loss_best": 0.2,
            "accuracy": 0.85, "accuracy_best": 0.92,
            "epochs": 3,
        }))
    );
    // The metric lines are still metrics, step by step.
    let losses: Vec<(i64, f64)> = store
        .metrics(one.id)
        .await
        .unwrap()
        .iter()
        .filter(|m| m.name == "loss")
        .map(|m| (m.step, m.value))
        .collect();
    assert_eq!(losses, vec![(0, 1.0), (1, 0.1), (2, 0.15)]);

    let markdown = stdout(&db.sweeper(&["report", "metrics", "--format", "md"]));
    for line in [
        "## Stage 1: command (`train`)",
        "| w | seed | state | accuracy | accuracy_best | epochs | loss | loss_best |",
        "| 1 | 7 | succeeded | 0.85 | 0.91 | 3.0 | 0.15 | 0.1 |",
        "| 2 | 7 | succeeded | 0.85 | 0.92 | 3.0 | 0.25 | 0.2 |",
    ] {
        assert!(
            markdown.lines().any(|l| l == line),
            "no line {line:?} in\n{markdown}"
        );
    }

    let csv = stdout(&db.sweeper(&["report", "metrics", "--format", "csv"]));
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("sweep,stage,job_id,parent,state,w,seed,metric,value")
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 10, "{csv}");
    for (job, metric, value) in [
        (one, "loss", "0.15"),
        (one, "loss_best", "0.1"),
        (one, "accuracy_best", "0.91"),
        (two, "loss", "0.25"),
        (two, "epochs", "3"),
    ] {
        let row = format!(
            "metrics,train,{},,succeeded,{},7,{metric},{value}",
            job.id, job.params["w"]
        );
        assert!(rows.contains(&row.as_str()), "no row {row:?} in\n{csv}");
    }

    let json: Value = serde_json::from_str(&stdout(
        &db.sweeper(&["report", "metrics", "--format", "json"]),
    ))
    .expect("JSON");
    let reported = json["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|job| job["id"] == json!(two.id))
        .expect("the job in the JSON report");
    assert_eq!(reported["state"], "succeeded");
    assert_eq!(reported["params"], json!({"w": 2, "seed": 7}));
    assert_eq!(
        reported["metrics"],
        json!({
            "accuracy": 0.85, "accuracy_best": 0.92, "epochs": 3,
            "loss": 0.25, "loss_best": 0.2,
        })
    );

    // The log: by the whole id and by a unique start of it.
    let id = one.id.to_string();
    for given in [id.as_str(), &id[..30]] {
        let log = stdout(&db.sweeper(&["logs", given]));
        let lines: Vec<&str> = log.lines().collect();
        assert!(
            lines[0].starts_with(&format!("==> job {id} attempt 1: started ")),
            "{log}"
        );
        assert_eq!(lines[1], "==> $ sh train.sh 1", "{log}");
        for expected in [
            "starting w=1",
            "warning from w=1",
            r#"{"metric": "loss", "value": 0.15, "step": 2}"#,
            r#"{"result": {"accuracy": 0.85, "epochs": 3}}"#,
        ] {
            assert!(lines.contains(&expected), "no {expected:?} in\n{log}");
        }
        let last = lines.last().unwrap();
        assert!(
            last.starts_with("==> attempt 1 exited with status 0 after "),
            "{log}"
        );
        assert!(!log.contains("w=2"), "the other job's output:\n{log}");
    }

    // A start that two ids share, and one that none has: bad input.
    let shared = common_start(&id, &two.id.to_string());
    if !shared.is_empty() {
        let ambiguous = db.sweeper(&["logs", &shared]);
        assert_eq!(ambiguous.status.code(), Some(2), "{}", text(&ambiguous));
        assert!(
            String::from_utf8_lossy(&ambiguous.stderr).contains("several job ids start with"),
            "{}",
            text(&ambiguous)
        );
    }
    for bad in ["ffffffff-ffff", "not-an-id"] {
        let refused = db.sweeper(&["logs", bad]);
        assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    }
}

/// Attempt 1 prints a low loss and asks for a retry (exit 75); attempt 2 succeeds. A
/// second stage fails for good. Jobs write in a scratch directory that is gone before
/// `logs` runs, so the logs come from the shared store.
async fn every_attempt_appends_to_the_log_in_a_shared_store(db: &TestDb) {
    let flaky = r#"echo "attempt $SWEEPER_ATTEMPT"
if [ "$SWEEPER_ATTEMPT" = 1 ]; then
  echo '{"metric": "loss", "value": 0.01, "step": 0}'
  echo "retry me" >&2
  exit 75
fi
echo '{"metric": "loss", "value": 1.5, "step": 0}'
echo '{"metric": "loss", "value": 1.25, "step": 1}'
"#;
    std::fs::write(db.path("flaky.sh"), flaky).unwrap();
    let sweep = r#"[sweep]
name = "attempts"
max_attempts = 3

[[stages]]
name = "flaky"
kind = "command"
command = ["sh", "flaky.sh"]

[[stages]]
name = "broken"
kind = "command"
command = ["sh", "-c", "echo partial; echo boom >&2; exit 3", "postgres://u:pw-in-argv@db/x"]
"#;
    submit(db, sweep);
    let shared = format!("file://{}", db.path("shared").display());
    let scratch = db.path("scratch");
    run_worker(
        db,
        &[
            "--artifacts",
            &shared,
            "--scratch",
            scratch.to_str().unwrap(),
        ],
    );
    std::fs::remove_dir_all(&scratch).expect("the scratch directory");

    let store = db.store().await;
    let jobs = store.jobs_for_report("attempts").await.unwrap();
    let flaky = jobs.iter().find(|job| job.stage == "flaky").unwrap();
    let broken = jobs.iter().find(|job| job.stage == "broken").unwrap();
    assert_eq!(
        (flaky.state, flaky.attempt),
        (JobState::Succeeded, 2),
        "{}",
        db.worker_logs()
    );
    // Only the attempt that succeeded counts: attempt 1's 0.01 is not the best.
    assert_eq!(flaky.result, Some(json!({"loss": 1.25, "loss_best": 1.25})));
    assert_eq!((broken.state, broken.attempt), (JobState::Failed, 1));

    let log = stdout(&db.sweeper(&["logs", &flaky.id.to_string(), "--artifacts", &shared]));
    let marks: Vec<&str> = log.lines().filter(|l| l.starts_with("==> ")).collect();
    assert_eq!(marks.len(), 6, "{log}");
    assert!(
        marks[0].starts_with(&format!("==> job {} attempt 1: started ", flaky.id)),
        "{log}"
    );
    assert!(
        marks[2].starts_with("==> attempt 1 exited with status 75 after "),
        "{log}"
    );
    assert!(
        marks[3].starts_with(&format!("==> job {} attempt 2: started ", flaky.id)),
        "{log}"
    );
    assert!(
        marks[5].starts_with("==> attempt 2 exited with status 0 after "),
        "{log}"
    );
    // Each attempt's output, stdout and stderr alike, sits inside its own section; the
    // two pipes are read apart, so their order within a section is not fixed.
    let section_two = log.find(marks[3]).expect("attempt 2's header");
    let section_one_end = log.find(marks[2]).expect("attempt 1's end");
    for line in ["attempt 1\n", "retry me\n"] {
        let at = log
            .find(line)
            .unwrap_or_else(|| panic!("no {line:?} in\n{log}"));
        assert!(
            at < section_one_end,
            "{line:?} after attempt 1 ended:\n{log}"
        );
    }
    let attempt_two = log.find("attempt 2\n").expect("attempt 2's output");
    assert!(section_two < attempt_two, "{log}");

    // A final failure's log reaches the store too.
    let log = stdout(&db.sweeper(&["logs", &broken.id.to_string(), "--artifacts", &shared]));
    for expected in ["partial", "boom"] {
        assert!(
            log.lines().any(|l| l == expected),
            "no {expected:?} in\n{log}"
        );
    }
    assert!(
        log.contains("==> attempt 1 exited with status 3 after "),
        "{log}"
    );
    // The header shows the command, a password in it masked.
    assert!(
        log.contains("postgres://u:***@db/x") && !log.contains("pw-in-argv"),
        "{log}"
    );

    // Not in this store: an error that says so.
    let elsewhere = db.sweeper(&[
        "logs",
        &flaky.id.to_string(),
        "--artifacts",
        db.path("nowhere").to_str().unwrap(),
    ]);
    assert_eq!(elsewhere.status.code(), Some(1), "{}", text(&elsewhere));
    assert!(
        String::from_utf8_lossy(&elsewhere.stderr).contains("has no output log"),
        "{}",
        text(&elsewhere)
    );
    assert!(!db.path("nowhere").exists(), "a reader creates nothing");
}
