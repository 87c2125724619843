//! Expired leases do not wait for a worker: `status`, `jobs`, `retry` (and the other
//! commands that read the queue) requeue or fail them first, so nothing looks running
//! when nothing runs.

use std::time::Duration;

use crate::common::{command_stage, eventually, spec, submit, TestDb};
use serde_json::{json, Value};
use sweeper::store::Store;

backend_tests!(readers_reap_expired_leases);

fn stdout(output: &std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Claims every queued job for a worker that never comes back, with a one-second
/// lease, and waits until the database's clock has passed every lease.
async fn claim_and_abandon(store: &Store) -> usize {
    let mut claimed = 0;
    while store
        .claim("vanished", Duration::from_secs(1))
        .await
        .unwrap()
        .is_some()
    {
        claimed += 1;
    }
    let expired = eventually(Duration::from_secs(30), || async {
        let running = store.running(None).await.unwrap();
        running.iter().all(|job| job.lease_left_seconds < 0.0)
    })
    .await;
    assert!(expired, "the leases did not expire on the database's clock");
    claimed
}

/// (queued, running, failed) of a stage in `status --format json`.
fn counts(status: &Value, stage: &str) -> (i64, i64, i64) {
    let row = status["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["stage"] == json!(stage))
        .unwrap_or_else(|| panic!("no stage {stage} in {status}"));
    (
        row["queued"].as_i64().unwrap(),
        row["running"].as_i64().unwrap(),
        row["failed"].as_i64().unwrap(),
    )
}

async fn readers_reap_expired_leases(db: &TestDb) {
    let store = db.store().await;
    submit(
        &store,
        &spec(
            "e",
            vec![
                command_stage("again", &["true"], 1, 3),
                command_stage("last", &["true"], 1, 1),
            ],
            vec![],
        ),
    )
    .await;

    // `status`: the job with attempts left is queued again, the other failed.
    assert_eq!(claim_and_abandon(&store).await, 2);
    let status: Value =
        serde_json::from_str(&stdout(&db.sweeper(&["status", "--format", "json"]))).unwrap();
    assert_eq!(status["running"], json!([]), "{status}");
    assert_eq!(counts(&status, "again"), (1, 0, 0), "{status}");
    assert_eq!(counts(&status, "last"), (0, 0, 1), "{status}");
    let failed: Value = serde_json::from_str(&stdout(
        &db.sweeper(&["jobs", "--state", "failed", "--format", "json"]),
    ))
    .unwrap();
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("lease expired"),
        "{failed}"
    );

    // `retry`: the job whose last lease expired is failed first, then retried.
    assert_eq!(
        stdout(&db.sweeper(&["retry", "--sweep", "e", "--state", "failed"])).trim(),
        "1 jobs back in the queue"
    );
    assert_eq!(claim_and_abandon(&store).await, 2);
    assert_eq!(
        stdout(&db.sweeper(&["retry", "--sweep", "e", "--state", "failed"])).trim(),
        "1 jobs back in the queue"
    );

    // `jobs`: nothing is listed as running.
    assert_eq!(claim_and_abandon(&store).await, 2);
    let jobs: Value =
        serde_json::from_str(&stdout(&db.sweeper(&["jobs", "--format", "json"]))).unwrap();
    let states: Vec<&str> = jobs
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["state"].as_str().unwrap())
        .collect();
    assert!(!states.contains(&"running"), "{jobs}");
    assert_eq!(store.running(None).await.unwrap(), []);
}
