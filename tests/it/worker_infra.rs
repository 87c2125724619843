//! Workers that refuse what they cannot do: a GPU this host lacks is refused before
//! anything is claimed, and jobs failing for reasons of the machine go back to the
//! queue without spending an attempt until the worker's circuit breaker trips.

use std::time::Duration;

use sweeper::store::{FailureKind, JobState};

use crate::common::{wait_all, TestDb};

backend_tests!(
    a_gpu_this_host_lacks_is_refused_before_anything_is_claimed,
    machine_faults_spend_no_attempt_and_trip_the_breaker,
);

const SWEEP: &str = r#"[sweep]
name = "infra"
max_attempts = 1

[[stages]]
name = "work"
kind = "command"
command = ["true"]
grid = { i = [0, 1, 2, 3] }
"#;

fn text(output: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Every row a worker could have touched, as text.
fn dump(db: &TestDb) -> String {
    let mut out = String::new();
    for sql in [
        "SELECT id, state, attempt, free_attempts, worker, error_kind FROM jobs ORDER BY key",
        "SELECT count(*) AS workers FROM workers",
        "SELECT count(*) AS attempts FROM attempts",
    ] {
        let output = db.sweeper(&["query", sql, "--format", "json"]);
        assert!(output.status.success(), "{}", text(&output));
        out.push_str(&String::from_utf8_lossy(&output.stdout));
    }
    out
}

fn submit(db: &TestDb) {
    std::fs::write(db.path("sweep.toml"), SWEEP).unwrap();
    let submitted = db.sweeper(&["submit", "sweep.toml"]);
    assert!(submitted.status.success(), "{}", text(&submitted));
}

/// This machine has no GPU (CI's does not): both a first and a seventh GPU are
/// refused with exit 2, saying what the host has, and the store is as it was.
async fn a_gpu_this_host_lacks_is_refused_before_anything_is_claimed(db: &TestDb) {
    assert!(
        !tch::Cuda::is_available(),
        "this test needs a host without a usable GPU"
    );
    submit(db);
    let before = dump(db);
    for device in ["cuda:0", "cuda:7", "cuda"] {
        let refused = db.sweeper(&["worker", "--device", device, "--exit-when-idle"]);
        assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
        let stderr = String::from_utf8_lossy(&refused.stderr);
        let given = if device == "cuda" { "cuda:0" } else { device };
        assert!(
            stderr.contains(&format!("device \"{given}\"")),
            "{}",
            text(&refused)
        );
        assert!(
            stderr.contains("none that libtorch can use") && stderr.contains("sweeper devices"),
            "{}",
            text(&refused)
        );
        assert!(
            stderr.lines().count() < 20 && stderr.len() < 2_000,
            "{}",
            text(&refused)
        );
    }
    assert_eq!(dump(db), before, "a refused worker changed the store");
}

/// The job directories cannot be made (the sweep's folder in the scratch space is a
/// file): every job fails for a reason of this machine. Each goes back to the queue
/// with its one attempt given back, and after three in a row the worker stops with
/// exit 1 and the reason. Once the machine is sound again every job runs and succeeds.
async fn machine_faults_spend_no_attempt_and_trip_the_breaker(db: &TestDb) {
    submit(db);
    let scratch = db.path("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::write(scratch.join("infra"), "not a directory").unwrap();
    let artifacts = db.path("shared");
    let flags = [
        "--exit-when-idle",
        "--scratch",
        scratch.to_str().unwrap(),
        "--artifacts",
        artifacts.to_str().unwrap(),
    ];
    let mut worker = db.spawn_worker(0, &flags);
    let status = wait_all(std::slice::from_mut(&mut worker), Duration::from_secs(120));
    let logs = db.worker_logs();
    assert_eq!(status[0].code(), Some(1), "{logs}");
    assert!(
        logs.contains("the last 3 jobs failed for reasons of this machine"),
        "{logs}"
    );
    assert!(logs.contains("io: cannot create"), "{logs}");

    let store = db.store().await;
    let jobs = store.jobs_for_report("infra").await.unwrap();
    assert_eq!(jobs.len(), 4);
    let mut tried = 0;
    for job in &jobs {
        assert_eq!(job.state, JobState::Queued, "{job:#?}");
        assert_eq!(
            job.attempt, job.free_attempts,
            "an attempt was spent: {job:#?}"
        );
        if job.attempt > 0 {
            assert_eq!(job.error_kind, Some(FailureKind::Io), "{job:#?}");
        }
        tried += job.attempt;
    }
    assert_eq!(
        tried, 3,
        "the breaker trips at the third failure: {jobs:#?}"
    );

    std::fs::remove_file(scratch.join("infra")).unwrap();
    let mut worker = db.spawn_worker(1, &flags);
    let status = wait_all(std::slice::from_mut(&mut worker), Duration::from_secs(120));
    assert!(status[0].success(), "{}", db.worker_logs());
    let jobs = store.jobs_for_report("infra").await.unwrap();
    for job in &jobs {
        assert_eq!(job.state, JobState::Succeeded, "{job:#?}");
        assert_eq!(job.attempt - job.free_attempts, 1, "{job:#?}");
    }
}
