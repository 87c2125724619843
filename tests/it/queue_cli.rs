//! The command line over a real store: exit statuses (0 ok, 2 bad input, 1 anything
//! else), read-only `query`, `status`, `jobs`, `retry` and `workers`.

use serde_json::{json, Value};

use crate::common::{self, command_stage, spec, submit, TestDb};

backend_tests!(
    query_runs_read_only_whatever_the_sql_says,
    bad_input_exits_2,
    tables_show_the_queue
);

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn query_runs_read_only_whatever_the_sql_says(db: &TestDb) {
    let store = db.store().await;
    submit(
        &store,
        &spec("q", vec![command_stage("s", &["true"], 3, 3)], vec![]),
    )
    .await;

    let counted = db.sweeper(&[
        "query",
        "SELECT stage, COUNT(*) AS n FROM jobs GROUP BY stage",
        "--format",
        "json",
    ]);
    assert!(
        counted.status.success(),
        "{}",
        String::from_utf8_lossy(&counted.stderr)
    );
    let rows: Value = serde_json::from_str(&stdout(&counted)).unwrap();
    assert_eq!(rows, json!([{"stage": "s", "n": 3}]));

    let csv = db.sweeper(&[
        "query",
        "SELECT state, attempt FROM jobs ORDER BY id LIMIT 1",
        "--format",
        "csv",
    ]);
    assert_eq!(stdout(&csv), "state,attempt\nqueued,0\n");

    for sql in [
        "DELETE FROM jobs",
        "UPDATE jobs SET state = 'failed'",
        "SELECT 1; DELETE FROM jobs",
        "DROP TABLE metrics",
    ] {
        let refused = db.sweeper(&["query", sql]);
        assert_eq!(
            refused.status.code(),
            Some(2),
            "{sql}: {}",
            String::from_utf8_lossy(&refused.stderr)
        );
    }
    let jobs = store.jobs_for_report("q").await.unwrap();
    assert_eq!(jobs.len(), 3);
    assert!(jobs
        .iter()
        .all(|j| j.state == sweeper::store::JobState::Queued));
}

async fn bad_input_exits_2(db: &TestDb) {
    let store = db.store().await;
    submit(
        &store,
        &spec("b", vec![command_stage("s", &["true"], 1, 3)], vec![]),
    )
    .await;
    let unknown = uuid::Uuid::now_v7().to_string();
    for args in [
        vec!["cancel"],
        vec!["retry", unknown.as_str()],
        vec!["cancel", "not-a-uuid"],
        vec!["status", "no-such-sweep"],
        vec!["jobs", "--state", "sleeping"],
        vec!["query", "SELEC 1"],
        vec!["worker", "--device", "tpu:0"],
        vec!["frobnicate"],
    ] {
        let output = db.sweeper(&args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sweeper"))
        .args(["status", "--db", "mysql://localhost/x"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unsupported store URL"));
    // Nothing above touched the job.
    let job = &store.jobs_for_report("b").await.unwrap()[0];
    assert_eq!(
        (job.state, job.attempt),
        (sweeper::store::JobState::Queued, 0)
    );
}

async fn tables_show_the_queue(db: &TestDb) {
    let store = db.store().await;
    submit(
        &store,
        &spec(
            "t",
            vec![command_stage("s", &["sh", "-c", "exit {i}"], 2, 1)],
            vec![],
        ),
    )
    .await;
    let mut worker = db.spawn_worker(0, &["--exit-when-idle"]);
    let statuses = common::wait_all(
        std::slice::from_mut(&mut worker),
        std::time::Duration::from_secs(60),
    );
    assert!(statuses[0].success(), "{}", db.worker_logs());

    let status = stdout(&db.sweeper(&["status", "t"]));
    let lines: Vec<&str> = status.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "sweep",
            "stage",
            "queued",
            "running",
            "succeeded",
            "failed",
            "cancelled",
            "total",
            "done",
            "eta",
            "s"
        ]
    );
    // Both ended, so nothing is left: the stage's ETA is 0.
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["t", "s", "0", "0", "1", "1", "0", "2", "2", "0"]
    );

    let failed = stdout(&db.sweeper(&["jobs", "--state", "failed", "--format", "json"]));
    let failed: Value = serde_json::from_str(&failed).unwrap();
    assert_eq!(failed.as_array().unwrap().len(), 1);
    assert!(failed[0]["error"].as_str().unwrap().contains("status 1"));

    let retried = db.sweeper(&["retry", "--sweep", "t", "--state", "failed"]);
    assert_eq!(stdout(&retried).trim(), "1 jobs back in the queue");
    let queued = stdout(&db.sweeper(&["jobs", "--state", "queued", "--format", "csv"]));
    assert_eq!(queued.lines().count(), 2);

    let workers: Value =
        serde_json::from_str(&stdout(&db.sweeper(&["workers", "--format", "json"]))).unwrap();
    assert_eq!(workers[0]["name"], json!("w0"));
    assert_eq!(workers[0]["device"], json!("cpu"));
    assert_eq!(workers[0]["state"], json!("stopped"));
}
