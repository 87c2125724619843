//! Real worker processes against SQLite and Postgres: exactly-once execution with eight
//! workers, SIGKILL chaos, cancel, graceful shutdown, and the `command` job kind.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;
use sweeper::store::{JobRow, JobState};

use crate::common::{self, command_stage, params, spec, submit, wait_all, TestDb};

backend_tests!(
    eight_workers_run_each_of_500_jobs_once,
    sigkilled_workers_lose_no_job_and_repeat_none,
    cancel_stops_a_running_command,
    sigterm_gives_the_running_job_back,
    command_jobs_get_params_report_metrics_and_fail_with_stderr,
);

fn states(jobs: &[JobRow]) -> HashMap<JobState, usize> {
    let mut counts = HashMap::new();
    for job in jobs {
        *counts.entry(job.state).or_insert(0) += 1;
    }
    counts
}

/// Every job appends a line to its own counter file: after eight workers drain 500
/// jobs, each file holds exactly one line. No "database is locked" reaches anyone.
async fn eight_workers_run_each_of_500_jobs_once(db: &TestDb) {
    const JOBS: usize = 500;
    std::fs::create_dir(db.path("counters")).unwrap();
    let store = db.store().await;
    let stage = command_stage("bump", &["sh", "-c", "echo run >> counters/{i}"], JOBS, 3);
    submit(&store, &spec("once", vec![stage], vec![])).await;

    let mut workers: Vec<_> = (0..8)
        .map(|n| db.spawn_worker(n, &["--exit-when-idle"]))
        .collect();
    // Readers at the same time as the workers write.
    for _ in 0..5 {
        let status = db.sweeper(&["status", "once"]);
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let statuses = wait_all(&mut workers, Duration::from_secs(150));
    assert!(
        statuses.iter().all(|s| s.success()),
        "{statuses:?}\n{}",
        db.worker_logs()
    );

    for i in 0..JOBS {
        let runs = common::read_lines(&db.path(&format!("counters/{i}")));
        assert_eq!(runs.len(), 1, "job {i} ran {} times", runs.len());
    }
    let jobs = store.jobs_for_report("once").await.unwrap();
    assert_eq!(states(&jobs), HashMap::from([(JobState::Succeeded, JOBS)]));
    assert!(jobs.iter().all(|j| j.attempt == 1));
    let logs = db.worker_logs();
    assert!(!logs.contains("database is locked"), "{logs}");
    assert!(!logs.contains("ERROR"), "{logs}");
}

/// Workers are SIGKILLed while they run a job, at random moments within it, and
/// replaced. Every job still succeeds; no job is running at the end; and no attempt of
/// a job started after the attempt that completed it (a job completed twice would show
/// a later start).
async fn sigkilled_workers_lose_no_job_and_repeat_none(db: &TestDb) {
    const JOBS: usize = 100;
    std::fs::create_dir(db.path("runs")).unwrap();
    let store = db.store().await;
    let script = "echo $SWEEPER_ATTEMPT >> runs/{i}; sleep 0.$(( {i} % 4 ))";
    let stage = command_stage("work", &["sh", "-c", script], JOBS, 50);
    submit(&store, &spec("chaos", vec![stage], vec![])).await;

    let fast = ["--lease-secs", "1", "--exit-when-idle"];
    let mut workers: Vec<_> = (0..4).map(|n| db.spawn_worker(n, &fast)).collect();
    let mut kills = 0;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for next in workers.len()..workers.len() + 14 {
        // The victim is a worker the store says runs a job, so a slow start on a
        // loaded machine cannot make every kill miss; none left once all is done.
        let deadline = Instant::now() + Duration::from_secs(120);
        let victim = loop {
            let busy: Vec<i32> = store
                .workers()
                .await
                .unwrap()
                .into_iter()
                .filter(|w| w.job.is_some())
                .map(|w| w.pid)
                .collect();
            let running = workers.iter_mut().position(|child| {
                busy.contains(&i32::try_from(child.id()).unwrap())
                    && child.try_wait().unwrap().is_none()
            });
            if running.is_some() || store.active_jobs().await.unwrap() == 0 {
                break running;
            }
            assert!(
                Instant::now() < deadline,
                "no worker ran a job:\n{}",
                db.worker_logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let Some(victim) = victim else { break };
        // xorshift: a reproducible "random" moment within the job.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(seed % 100)).await;
        if workers[victim].try_wait().unwrap().is_none() {
            workers[victim].kill().unwrap(); // SIGKILL
            workers[victim].wait().unwrap();
            kills += 1;
        }
        workers[victim] = db.spawn_worker(next, &fast);
    }
    assert!(kills > 5);
    let statuses = wait_all(&mut workers, Duration::from_secs(150));
    assert!(
        statuses.iter().all(|s| s.success()),
        "{statuses:?}\n{}",
        db.worker_logs()
    );

    let jobs = store.jobs_for_report("chaos").await.unwrap();
    assert_eq!(states(&jobs), HashMap::from([(JobState::Succeeded, JOBS)]));
    let mut retried = 0;
    for job in &jobs {
        let i = job.params["i"].as_u64().unwrap();
        let started: Vec<i32> = common::read_lines(&db.path(&format!("runs/{i}")))
            .iter()
            .map(|line| line.parse().unwrap())
            .collect();
        assert_eq!(
            started.iter().max(),
            Some(&job.attempt),
            "job {i}: starts {started:?}"
        );
        retried += usize::from(job.attempt > 1);
    }
    assert!(
        retried > 0,
        "no job was ever interrupted: the test killed nothing that mattered"
    );
    assert!(!db.worker_logs().contains("database is locked"));
}

async fn cancel_stops_a_running_command(db: &TestDb) {
    let store = db.store().await;
    let stage = command_stage("long", &["sh", "-c", "echo $$ > pid; exec sleep 60"], 1, 3);
    submit(&store, &spec("cancel", vec![stage], vec![])).await;
    let mut worker = db.spawn_worker(0, &["--exit-when-idle"]);
    let pid_file = db.path("pid");
    let started = common::eventually(Duration::from_secs(30), || async {
        !common::read_lines(&pid_file).is_empty()
    })
    .await;
    assert!(started, "{}", db.worker_logs());
    let pid: i32 = common::read_lines(&pid_file)[0].parse().unwrap();
    let job = store.jobs_for_report("cancel").await.unwrap().remove(0);
    assert_eq!(job.state, JobState::Running);

    let output = db.sweeper(&["cancel", &job.id.to_string()]);
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "0 queued jobs cancelled; 1 running jobs asked to stop"
    );
    let cancelled = common::eventually(Duration::from_secs(10), || async {
        store.job(job.id).await.unwrap().unwrap().state == JobState::Cancelled
    })
    .await;
    assert!(cancelled, "{}", db.worker_logs());
    // SAFETY: signal 0 only checks whether the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    assert!(!alive, "the cancelled program still runs");
    let statuses = wait_all(std::slice::from_mut(&mut worker), Duration::from_secs(30));
    assert!(statuses[0].success());
}

async fn sigterm_gives_the_running_job_back(db: &TestDb) {
    let store = db.store().await;
    let stage = command_stage("long", &["sh", "-c", "echo $$ > pid; exec sleep 60"], 1, 1);
    submit(&store, &spec("term", vec![stage], vec![])).await;
    let mut worker = db.spawn_worker(0, &[]);
    let pid_file = db.path("pid");
    assert!(
        common::eventually(Duration::from_secs(30), || async {
            !common::read_lines(&pid_file).is_empty()
        })
        .await,
        "{}",
        db.worker_logs()
    );
    // SAFETY: a plain kill(2) of the worker we started.
    unsafe { libc::kill(worker.id() as i32, libc::SIGTERM) };
    let statuses = wait_all(std::slice::from_mut(&mut worker), Duration::from_secs(30));
    assert!(statuses[0].success(), "{}", db.worker_logs());

    let job = store.jobs_for_report("term").await.unwrap().remove(0);
    assert_eq!(job.state, JobState::Queued);
    assert_eq!((job.attempt, job.free_attempts, job.worker), (1, 1, None));
    // Given back at once, and the released attempt did not use up max_attempts = 1.
    let claimed = store
        .claim("next", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((claimed.id, claimed.attempt), (job.id, 2));
    let workers = store.workers().await.unwrap();
    assert!(workers[0].stopped_at.is_some());
}

async fn command_jobs_get_params_report_metrics_and_fail_with_stderr(db: &TestDb) {
    let store = db.store().await;
    let report = r#"echo '{"metric": "loss", "value": 0.5, "step": 1}'
echo 'plain text is ignored'
echo '{"metric": "loss", "value": 0.25, "step": 2}'
echo "{\"result\": {\"arg\": \"$1\", \"env\": $SWEEPER_PARAM_BATCH_SIZE, \"cuda\": \"$CUDA_VISIBLE_DEVICES\", \"attempt\": $2}}""#;
    // In a file: braces in arguments are placeholders.
    std::fs::write(db.path("report.sh"), report).unwrap();
    let mut ok = command_stage(
        "ok",
        &["sh", "report.sh", "--bs={batch_size}", "{attempt}"],
        1,
        3,
    );
    ok.params = params(json!({"batch_size": 64}));
    let fails = command_stage(
        "fails",
        &["sh", "-c", "echo first >&2; echo boom >&2; exit 3"],
        1,
        3,
    );
    let flaky = command_stage("flaky", &["sh", "-c", "exit 75"], 1, 2);
    let bad = command_stage("bad", &["true", "{missing}"], 1, 3);
    submit(&store, &spec("cmd", vec![ok, fails, flaky, bad], vec![])).await;

    let mut worker = db.spawn_worker(0, &["--exit-when-idle"]);
    let statuses = wait_all(std::slice::from_mut(&mut worker), Duration::from_secs(60));
    assert!(statuses[0].success(), "{}", db.worker_logs());

    let jobs = store.jobs_for_report("cmd").await.unwrap();
    let by_stage: HashMap<&str, &JobRow> = jobs.iter().map(|j| (j.stage.as_str(), j)).collect();
    let ok = by_stage["ok"];
    assert_eq!(ok.state, JobState::Succeeded, "{:?}", ok.error_message);
    assert_eq!(
        ok.result,
        Some(
            json!({"arg": "--bs=64", "env": 64, "cuda": "", "attempt": 1, "loss": 0.25, "loss_best": 0.25})
        )
    );
    let losses: Vec<(i64, f64)> = store
        .metrics(ok.id)
        .await
        .unwrap()
        .iter()
        .map(|m| (m.step, m.value))
        .collect();
    assert_eq!(losses, vec![(1, 0.5), (2, 0.25)]);

    let fails = by_stage["fails"];
    assert_eq!(
        (fails.state, fails.attempt),
        (JobState::Failed, 1),
        "exit 3 is final"
    );
    let message = fails.error_message.as_deref().unwrap();
    assert!(
        message.contains("status 3") && message.contains("first\nboom"),
        "{message}"
    );

    let flaky = by_stage["flaky"];
    assert_eq!(
        (flaky.state, flaky.attempt),
        (JobState::Failed, 2),
        "exit 75 is retried"
    );

    let bad = by_stage["bad"];
    assert_eq!(bad.state, JobState::Failed);
    assert!(bad.error_message.as_deref().unwrap().contains("{missing}"));
    let logs = db.worker_logs();
    assert!(
        logs.contains(&format!("job{{job={}", ok.id)),
        "log lines name the job:\n{logs}"
    );
}
