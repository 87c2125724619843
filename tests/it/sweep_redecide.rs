//! Selections that stay true: a decided group that gains candidates afterwards (a
//! failed candidate retried and succeeded, a grid extended with a better cell) is
//! decided again while its downstream jobs have not started, the queued downstream job
//! of the old winner giving way to one of the new winner; once a downstream job has
//! started the decision is kept and marked stale, and `report` and `status` name what
//! the rule would pick now. Real workers run command stages whose losses the test
//! writes into files.

use std::process::Output;
use std::time::Duration;

use serde_json::{json, Value};
use sweeper::store::{JobRow, JobState, Store};

use crate::common::{wait_all, TestDb};

backend_tests!(
    a_retried_candidate_that_wins_takes_over_the_queued_downstream_job,
    a_better_cell_from_an_extended_grid_is_decided_again,
    a_started_downstream_job_keeps_the_decision_and_marks_it_stale,
    a_running_downstream_job_keeps_the_decision_too,
);

/// `train.sh P`: fails while the file `fail-P` exists, else reports the loss written
/// in `loss-P`. `probe.sh P` notes that it ran on the winner with `projection_dim` P.
const TRAIN: &str = r#"p=$1
if [ -e "fail-$p" ]; then echo "failing as the test asks" >&2; exit 1; fi
echo "{\"metric\": \"loss\", \"value\": $(cat "loss-$p"), \"step\": 0}"
"#;
const PROBE: &str = r#"echo "$1" >> probed
"#;

/// One group (`backbone`), ranked by the lowest loss; a failed candidate does not hold
/// the others back. The pretext-like stage outranks the probe in the queue, so a
/// worker runs the candidates before any downstream job.
fn sweep(projections: &str) -> String {
    format!(
        r#"[sweep]
name = "redecide"
seeds = [0]
max_attempts = 1

[[stages]]
name = "train"
kind = "command"
priority = 10
command = ["sh", "train.sh", "{{projection_dim}}"]

[stages.params]
backbone = "resnet18"

[stages.grid]
projection_dim = {projections}

[[selections]]
name = "best"
from = "train"
per = ["backbone"]
prefer = [{{ min = "loss" }}]
on_failure = "promote"

[[stages]]
name = "probe"
kind = "command"
from = "best"
command = ["sh", "probe.sh", "{{projection_dim}}"]
"#
    )
}

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

/// Writes the scripts and each projection's loss, and submits the sweep.
fn prepare(db: &TestDb, losses: &[(i64, f64)], projections: &str) {
    std::fs::write(db.path("train.sh"), TRAIN).unwrap();
    std::fs::write(db.path("probe.sh"), PROBE).unwrap();
    for (projection, loss) in losses {
        std::fs::write(db.path(&format!("loss-{projection}")), loss.to_string()).unwrap();
    }
    submit(db, projections);
}

fn submit(db: &TestDb, projections: &str) {
    std::fs::write(db.path("sweep.toml"), sweep(projections)).unwrap();
    stdout(&db.sweeper(&["submit", "sweep.toml"]));
}

/// Runs one worker to its end: after `max_jobs` jobs, or once the queue is idle.
fn run_worker(db: &TestDb, max_jobs: Option<u64>) {
    let limit = max_jobs.map(|n| n.to_string());
    let mut args = vec!["--exit-when-idle"];
    if let Some(limit) = &limit {
        args.extend_from_slice(&["--max-jobs", limit]);
    }
    let mut worker = db.spawn_worker(0, &args);
    let statuses = wait_all(std::slice::from_mut(&mut worker), Duration::from_secs(120));
    assert!(statuses[0].success(), "{}", db.worker_logs());
}

fn retry_failed(db: &TestDb) {
    let out = stdout(&db.sweeper(&["retry", "--sweep", "redecide", "--state", "failed"]));
    assert_eq!(out.trim(), "1 jobs back in the queue");
}

async fn jobs(store: &Store) -> Vec<JobRow> {
    store.jobs_for_report("redecide").await.unwrap()
}

fn train(jobs: &[JobRow], projection: i64) -> &JobRow {
    jobs.iter()
        .find(|j| j.stage == "train" && j.params["projection_dim"] == json!(projection))
        .unwrap_or_else(|| panic!("no train job with projection {projection}: {jobs:#?}"))
}

fn probes(jobs: &[JobRow]) -> Vec<&JobRow> {
    jobs.iter().filter(|j| j.stage == "probe").collect()
}

fn winner_ids(decision: &Value) -> Vec<String> {
    decision["winners"]
        .as_array()
        .expect("winners")
        .iter()
        .map(|w| w["job_id"].as_str().expect("an id").to_owned())
        .collect()
}

/// The report's line about the group's decision.
fn decision_line(db: &TestDb) -> String {
    let report = stdout(&db.sweeper(&["report", "redecide"]));
    report
        .lines()
        .find(|line| line.starts_with("- ResNet-18 (`backbone = resnet18`)"))
        .unwrap_or_else(|| panic!("no decision line in\n{report}"))
        .to_owned()
}

fn probed(db: &TestDb) -> String {
    std::fs::read_to_string(db.path("probed")).unwrap_or_default()
}

/// projection 64 fails, 32 wins and its probe is queued; 64 is retried, succeeds with
/// the lower loss before the probe was claimed: the decision is re-made, the queued
/// probe of 32 is replaced by one of 64, and only that one runs.
async fn a_retried_candidate_that_wins_takes_over_the_queued_downstream_job(db: &TestDb) {
    prepare(db, &[(32, 2.0), (64, 1.0)], "[32, 64]");
    std::fs::write(db.path("fail-64"), "").unwrap();
    run_worker(db, Some(2));

    let store = db.store().await;
    let before = jobs(&store).await;
    assert_eq!(train(&before, 64).state, JobState::Failed, "{before:#?}");
    let first_winner = train(&before, 32).id;
    let old_probe = match probes(&before)[..] {
        [probe] => probe.clone(),
        _ => panic!("one probe for the first winner: {before:#?}"),
    };
    assert_eq!(old_probe.state, JobState::Queued);
    assert_eq!(old_probe.parent_job_id, Some(first_winner));
    assert!(decision_line(db).contains("1 ranked of 2 candidates (not ranked: 1 failed)"));

    std::fs::remove_file(db.path("fail-64")).unwrap();
    retry_failed(db);
    run_worker(db, Some(1));

    let after = jobs(&store).await;
    let new_winner = train(&after, 64);
    assert_eq!(
        new_winner.state,
        JobState::Succeeded,
        "{}",
        db.worker_logs()
    );
    let new_probe = match probes(&after)[..] {
        [probe] => probe.clone(),
        _ => panic!("the old winner's probe gave way to one new probe: {after:#?}"),
    };
    assert_ne!(new_probe.id, old_probe.id);
    assert_eq!(new_probe.state, JobState::Queued);
    assert_eq!(new_probe.parent_job_id, Some(new_winner.id));
    assert_eq!(new_probe.params["projection_dim"], json!(64));

    let promotions = store.promotions("redecide").await.unwrap();
    assert_eq!(promotions.len(), 1);
    assert_eq!(promotions[0].revision, 2);
    assert_eq!(promotions[0].stale, None);
    assert_eq!(
        winner_ids(&promotions[0].decision),
        [new_winner.id.to_string()]
    );
    // The first decision is kept, with the queued job it gave up.
    let history = store.superseded_promotions("redecide").await.unwrap();
    assert_eq!(history.len(), 1, "{history:#?}");
    assert_eq!(history[0].revision, 1);
    assert_eq!(winner_ids(&history[0].decision), [first_winner.to_string()]);
    assert_eq!(history[0].removed_jobs[0]["id"], json!(old_probe.id));
    assert_eq!(
        history[0].removed_jobs[0]["parent_job_id"],
        json!(first_winner)
    );
    assert!(
        history[0].reason.contains("2 candidates ranked (1 before)"),
        "{}",
        history[0].reason
    );

    run_worker(db, None);
    assert_eq!(probed(db), "64\n", "only the new winner's probe ran");
    let line = decision_line(db);
    assert!(line.contains("2 ranked of 2 candidates;"), "{line}");
    assert!(!line.contains("stale"), "{line}");
    assert!(line.contains("winner **ResNet18_projection64**"), "{line}");
}

/// Projections 32 and 64 are decided (64 wins, its probe queued); the grid gains 128,
/// which has the lowest loss: the decision is re-made for 128 before 64's probe ran.
async fn a_better_cell_from_an_extended_grid_is_decided_again(db: &TestDb) {
    prepare(db, &[(32, 2.0), (64, 1.0), (128, 0.5)], "[32, 64]");
    run_worker(db, Some(2));
    let store = db.store().await;
    let before = jobs(&store).await;
    let old_probe = match probes(&before)[..] {
        [probe] => probe.clone(),
        _ => panic!("one probe for the first winner: {before:#?}"),
    };
    assert_eq!(old_probe.parent_job_id, Some(train(&before, 64).id));
    assert!(decision_line(db).contains("2 ranked of 2 candidates;"));

    submit(db, "[32, 64, 128]");
    // While the new cell is queued, the decision in force stands.
    assert_eq!(store.promotions("redecide").await.unwrap()[0].revision, 1);
    run_worker(db, Some(1));

    let after = jobs(&store).await;
    let best = train(&after, 128);
    assert_eq!(best.state, JobState::Succeeded, "{}", db.worker_logs());
    let new_probe = match probes(&after)[..] {
        [probe] => probe.clone(),
        _ => panic!("one probe, for the new winner: {after:#?}"),
    };
    assert_eq!(new_probe.parent_job_id, Some(best.id));
    assert_eq!(new_probe.state, JobState::Queued);
    let promotions = store.promotions("redecide").await.unwrap();
    assert_eq!(promotions[0].revision, 2);
    assert_eq!(winner_ids(&promotions[0].decision), [best.id.to_string()]);
    let history = store.superseded_promotions("redecide").await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].removed_jobs[0]["id"], json!(old_probe.id));

    run_worker(db, None);
    assert_eq!(probed(db), "128\n");
    let line = decision_line(db);
    assert!(line.contains("3 ranked of 3 candidates;"), "{line}");
    assert!(!line.contains("stale"), "{line}");
    assert!(line.contains("winner **ResNet18_projection128**"), "{line}");
}

/// 32 wins while 64 fails, and 32's probe runs to the end; 64 is retried and beats it:
/// the probe's result belongs to the decision, so it stays, marked stale, and the
/// report and `status` name 64 as what the rule would pick now.
async fn a_started_downstream_job_keeps_the_decision_and_marks_it_stale(db: &TestDb) {
    prepare(db, &[(32, 2.0), (64, 1.0)], "[32, 64]");
    std::fs::write(db.path("fail-64"), "").unwrap();
    run_worker(db, None);
    assert_eq!(probed(db), "32\n");
    assert!(!stdout(&db.sweeper(&["status"])).contains("stale decision"));

    std::fs::remove_file(db.path("fail-64")).unwrap();
    retry_failed(db);
    run_worker(db, None);

    let store = db.store().await;
    let after = jobs(&store).await;
    let (kept, better) = (train(&after, 32), train(&after, 64));
    assert_eq!(better.state, JobState::Succeeded, "{}", db.worker_logs());
    let probe = match probes(&after)[..] {
        [probe] => probe.clone(),
        _ => panic!("the finished probe is the only one: {after:#?}"),
    };
    assert_eq!(probe.state, JobState::Succeeded);
    assert_eq!(probe.parent_job_id, Some(kept.id));
    assert_eq!(probed(db), "32\n", "nothing new ran");

    let promotions = store.promotions("redecide").await.unwrap();
    assert_eq!(promotions[0].revision, 1);
    assert_eq!(winner_ids(&promotions[0].decision), [kept.id.to_string()]);
    let stale = promotions[0].stale.as_ref().expect("marked stale");
    assert_eq!(stale.outcome.winners[0].job_id, better.id);
    assert!(
        stale.reason.contains("probe 1 succeeded"),
        "{}",
        stale.reason
    );
    assert!(store
        .superseded_promotions("redecide")
        .await
        .unwrap()
        .is_empty());

    let line = decision_line(db);
    assert!(line.contains("1 ranked of 2 candidates;"), "{line}");
    assert!(
        line.contains(
            "**stale**: 1 more succeeded after the decision; the rule would now pick \
             **ResNet18_projection64** (kept: downstream jobs of the winners it would \
             replace have started: probe 1 succeeded)"
        ),
        "{line}"
    );
    assert!(line.contains("winner **ResNet18_projection32**"), "{line}");

    let status = stdout(&db.sweeper(&["status"]));
    let row = status
        .lines()
        .find(|line| line.starts_with("redecide/best"))
        .unwrap_or_else(|| panic!("no stale decision in\n{status}"));
    assert!(row.contains(&format!("{} (loss = 2", kept.id)), "{row}");
    assert!(row.contains(&format!("{} (loss = 1", better.id)), "{row}");
    assert!(row.contains("probe 1 succeeded"), "{row}");
    let json: Value =
        serde_json::from_str(&stdout(&db.sweeper(&["status", "--format", "json"]))).unwrap();
    let rows = json["stale_decisions"].as_array().expect("a list");
    assert_eq!(rows.len(), 1, "{json:#}");
    assert_eq!(rows[0]["stale decision"], json!("redecide/best"));
}

/// The probe of the first winner is claimed (running, held by the test) when the
/// retried candidate beats it: the decision stays, stale, and the probe is untouched.
async fn a_running_downstream_job_keeps_the_decision_too(db: &TestDb) {
    prepare(db, &[(32, 2.0), (64, 1.0)], "[32, 64]");
    std::fs::write(db.path("fail-64"), "").unwrap();
    run_worker(db, Some(2));
    let store = db.store().await;
    let held = store
        .claim("test", Duration::from_secs(3600))
        .await
        .unwrap()
        .expect("the first winner's probe is queued");
    assert_eq!(held.stage, "probe");

    std::fs::remove_file(db.path("fail-64")).unwrap();
    retry_failed(db);
    // The held probe keeps the queue busy: the worker stops after the retried job.
    run_worker(db, Some(1));

    let after = jobs(&store).await;
    assert_eq!(train(&after, 64).state, JobState::Succeeded);
    let probe = match probes(&after)[..] {
        [probe] => probe.clone(),
        _ => panic!("no probe was added or removed: {after:#?}"),
    };
    assert_eq!((probe.id, probe.state), (held.id, JobState::Running));
    assert_eq!(probe.parent_job_id, Some(train(&after, 32).id));
    let promotions = store.promotions("redecide").await.unwrap();
    let stale = promotions[0].stale.as_ref().expect("marked stale");
    assert!(stale.reason.contains("probe 1 running"), "{}", stale.reason);
    assert_eq!(stale.outcome.winners[0].job_id, train(&after, 64).id);
}
