//! Successive halving in the store: jobs that reach a rung pause, the rung's decision
//! is made once when the group has arrived, the worse jobs stop there with their
//! value, the others resume; stopped jobs never rank in a selection, and `resume`
//! sends them on to the end. Prescribed curves make every decision known beforehand;
//! four concurrent workers and both backends race for each rung.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sweeper::store::{Finish, JobFilter, JobRow, JobState, MetricPoint, Store};
use sweeper::sweep::halving::{HalvingSpec, Keep, Mode};
use sweeper::sweep::{Preference, StageKind};
use tokio::task::JoinSet;

use crate::common::{self, TestDb};

backend_tests!(the_worse_jobs_stop_at_each_rung_once_and_resume_to_the_end,);

const EPOCHS: i64 = 12;

/// Six cells per batch size; cell `c` has loss 5 + c/10 − e/100 at epoch `e`, except
/// cell 1, which drops to 4 from epoch 5: at rung 2 cells 0 and 1 go on (a third of 6,
/// two), at rung 6 only cell 1 (a third of 2, rounded up: one).
fn loss(cell: i64, epoch: i64) -> f64 {
    if cell == 1 && epoch >= 5 {
        4.0 - epoch as f64 / 1000.0
    } else {
        5.0 + cell as f64 / 10.0 - epoch as f64 / 100.0
    }
}

fn halving_spec(name: &str) -> sweeper::sweep::Spec {
    let mut stage = common::command_stage("pretext", &["true"], 1, 2);
    stage.kind = StageKind::Pretext;
    stage.grid = vec![
        ("batch_size".into(), vec![json!(32), json!(64)]),
        ("cell".into(), (0..6).map(|c| json!(c)).collect()),
    ];
    stage.command = None;
    stage.halving = Some(HalvingSpec {
        metric: "loss".into(),
        mode: Mode::Min,
        rungs: vec![2, 6],
        keep: Keep::parse("1/3").unwrap(),
        per: vec!["batch_size".into()],
    });
    let mut best = common::selection(
        "best",
        "pretext",
        &["batch_size"],
        vec![Preference::Min("loss".into())],
    );
    best.on_failure = sweeper::sweep::OnFailure::Wait;
    common::spec(name, vec![stage], vec![best])
}

/// Claims and runs jobs until none is left: each trains from the epoch it reached to
/// its halt (or the end), recording the prescribed loss of every epoch.
async fn drain(store: &Store, workers: usize, reached: &Arc<Mutex<HashMap<uuid::Uuid, i64>>>) {
    let mut tasks = JoinSet::new();
    for worker in 0..workers {
        let store = store.clone();
        let reached = Arc::clone(reached);
        tasks.spawn(async move {
            let name = format!("halving-{worker}");
            while let Some(job) = store.claim(&name, Duration::from_secs(600)).await.unwrap() {
                let cell = job.params["cell"].as_i64().unwrap();
                let from = reached.lock().unwrap().get(&job.id).copied().unwrap_or(0);
                let to = job.halt_at.unwrap_or(EPOCHS);
                let points: Vec<MetricPoint> = (from + 1..=to)
                    .map(|epoch| MetricPoint {
                        step: epoch,
                        name: "loss".into(),
                        value: loss(cell, epoch),
                    })
                    .collect();
                let _ = store
                    .record_metrics(job.id, job.attempt, &points)
                    .await
                    .unwrap();
                reached.lock().unwrap().insert(job.id, to);
                let finish = match job.halt_at {
                    Some(epoch) => Finish::AtRung { epoch },
                    None => Finish::Succeeded(json!({ "loss": loss(cell, EPOCHS) })),
                };
                store
                    .finish(job.id, job.attempt, &finish, Duration::ZERO)
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("a worker task panicked");
    }
}

fn by_cell(jobs: &[JobRow]) -> BTreeMap<(i64, i64), &JobRow> {
    jobs.iter()
        .map(|job| {
            let at = |name: &str| job.params[name].as_i64().unwrap();
            ((at("batch_size"), at("cell")), job)
        })
        .collect()
}

async fn the_worse_jobs_stop_at_each_rung_once_and_resume_to_the_end(db: &TestDb) {
    let store = db.store().await;
    let spec = halving_spec("halving");
    common::submit(&store, &spec).await;
    let reached = Arc::new(Mutex::new(HashMap::new()));
    drain(&store, 4, &reached).await;

    let jobs = store.jobs(&JobFilter::default(), None).await.unwrap();
    assert_eq!(jobs.len(), 12);
    for ((batch, cell), job) in by_cell(&jobs) {
        let (state, epoch) = match cell {
            1 => (JobState::Succeeded, None),
            0 => (JobState::Stopped, Some(6)),
            _ => (JobState::Stopped, Some(2)),
        };
        assert_eq!(job.state, state, "batch {batch} cell {cell}");
        match epoch {
            Some(epoch) => {
                let halted = job.halted.as_ref().expect("a stopped job keeps its rung");
                assert_eq!(halted.epoch, epoch, "batch {batch} cell {cell}");
                assert_eq!(halted.value, Some(loss(cell, epoch)));
                // Its value at the rung is not a final loss.
                assert_eq!(job.result, None, "batch {batch} cell {cell}");
            }
            None => assert_eq!(job.result.as_ref().unwrap()["loss"], json!(loss(1, EPOCHS))),
        }
    }

    // One decision per group and rung, whatever the races between the four workers.
    let decisions = store.rung_decisions("halving").await.unwrap();
    let summary: Vec<(i64, i64, usize, usize)> = decisions
        .iter()
        .map(|d| {
            (
                d.group["batch_size"].as_i64().unwrap(),
                d.rung,
                d.cut.kept.len(),
                d.cut.stopped.len(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [(32, 2, 2, 4), (32, 6, 1, 1), (64, 2, 2, 4), (64, 6, 1, 1)]
    );
    let rung_6 = &decisions[1];
    assert_eq!(rung_6.cut.cut, Some(loss(1, 6)));
    assert_eq!(rung_6.keep, "1/3");

    // The selection ranked the one job that finished; the stopped ones are no failures
    // (on_failure = "wait" would otherwise wait forever).
    let promotions = store.promotions("halving").await.unwrap();
    assert_eq!(promotions.len(), 2, "{promotions:?}");
    for promotion in &promotions {
        let ranked = promotion.decision["ranked"].as_array().unwrap();
        let with_rank = ranked.iter().filter(|c| !c["rank"].is_null()).count();
        assert_eq!(with_rank, 1, "{promotion:?}");
    }

    // Resumed, the stopped jobs run to the end from where they stopped.
    let resumed = store
        .resume(&JobFilter {
            state: Some(JobState::Stopped),
            ..JobFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(resumed, 10);
    drain(&store, 4, &reached).await;
    let jobs = store.jobs(&JobFilter::default(), None).await.unwrap();
    for ((batch, cell), job) in by_cell(&jobs) {
        assert_eq!(job.state, JobState::Succeeded, "batch {batch} cell {cell}");
        let mut epochs: Vec<i64> = store
            .metrics(job.id)
            .await
            .unwrap()
            .iter()
            .filter(|m| m.name == "loss")
            .map(|m| m.step)
            .collect();
        epochs.sort_unstable();
        assert_eq!(epochs, (1..=EPOCHS).collect::<Vec<_>>(), "no epoch twice");
    }
    assert_eq!(
        store.rung_decisions("halving").await.unwrap().len(),
        4,
        "a resumed job passes no rung again"
    );
    // With every cell finished the selection decided again, on all six.
    for promotion in store.promotions("halving").await.unwrap() {
        assert_eq!(promotion.revision, 2, "{promotion:?}");
        let ranked = promotion.decision["ranked"].as_array().unwrap();
        assert_eq!(ranked.iter().filter(|c| !c["rank"].is_null()).count(), 6);
    }
}

/// `bench halving` replays seed-shaped curves through the rule; the reference in
/// `benches/`, written apart, stops the same jobs at the same rungs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_stops_what_the_reference_implementation_stops() {
    let db = TestDb::sqlite().await;
    let (curves, stops) = (db.path("curves.json"), db.path("stops.json"));
    let output = db.sweeper(&[
        "bench",
        "halving",
        "--curves-out",
        curves.to_str().unwrap(),
        "--stops-out",
        stops.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("10800"), "{table}");
    let studies: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&curves).unwrap()).unwrap();
    let ours: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&stops).unwrap()).unwrap();
    let study = db.path("study.json");
    std::fs::write(&study, serde_json::to_vec(&studies[0]).unwrap()).unwrap();
    let reference = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/halving_reference.py"
        ))
        .arg(&study)
        .output()
        .expect("python3 runs the reference");
    assert!(
        reference.status.success(),
        "{}",
        String::from_utf8_lossy(&reference.stderr)
    );
    let theirs: Vec<serde_json::Value> = serde_json::from_slice(&reference.stdout).unwrap();
    let pairs = |stops: &[serde_json::Value]| -> Vec<(String, i64)> {
        stops
            .iter()
            .map(|s| {
                (
                    s["job"].as_str().unwrap().to_owned(),
                    s["rung"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(theirs.len(), 96, "8 of each group's 9 cells stop");
    assert_eq!(pairs(ours[0].as_array().unwrap()), pairs(&theirs));
}
