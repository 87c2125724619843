//! A second SIGTERM to a worker whose job ignores SIGTERM still ends the job's whole
//! process group and gives its lease back before the worker exits (status 130).

use std::time::Duration;

use crate::common::{self, command_stage, eventually, spec, submit, TestDb};
use sweeper::store::JobState;

backend_tests!(a_second_signal_kills_the_job_and_gives_it_back);

/// Processes of process group `pgid` that are still alive (zombies left out).
fn live_members(pgid: i32) -> Vec<i32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp …; comm may hold spaces, so read after the ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string() {
            members.push(pid);
        }
    }
    members
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on the worker this test started.
    let sent = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(sent, 0, "cannot signal the worker");
}

async fn a_second_signal_kills_the_job_and_gives_it_back(db: &TestDb) {
    let store = db.store().await;
    let pgid_file = db.path("pgid");
    // The ignored SIGTERM is inherited by `sleep`, so the whole group ignores it.
    let script = format!(
        "trap '' TERM; echo $$ > '{}'; sleep 300 & sleep 300",
        pgid_file.display()
    );
    submit(
        &store,
        &spec(
            "sig",
            vec![command_stage("s", &["sh", "-c", &script], 1, 3)],
            vec![],
        ),
    )
    .await;
    let mut worker = db.spawn_worker(0, &["--shutdown-grace-secs", "300"]);
    let started = eventually(Duration::from_secs(60), || async {
        std::fs::read_to_string(&pgid_file).is_ok_and(|text| text.ends_with('\n'))
    })
    .await;
    assert!(started, "the job did not start: {}", db.worker_logs());
    let pgid: i32 = std::fs::read_to_string(&pgid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(live_members(pgid).len() >= 2, "the job's processes");

    signal(worker.id(), libc::SIGTERM);
    let asked = eventually(Duration::from_secs(10), || async {
        db.worker_logs().contains("shutting down; stopping the job")
    })
    .await;
    assert!(asked, "{}", db.worker_logs());
    // The job ignores it: still running, still held.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(store.running(None).await.unwrap().len(), 1);
    assert!(!live_members(pgid).is_empty());

    signal(worker.id(), libc::SIGTERM);
    let status = common::wait_all(std::slice::from_mut(&mut worker), Duration::from_secs(30));
    assert_eq!(status[0].code(), Some(130), "{}", db.worker_logs());

    let gone = eventually(Duration::from_secs(10), || async {
        live_members(pgid).is_empty()
    })
    .await;
    assert!(
        gone,
        "processes of the job's group survive: {:?}",
        live_members(pgid)
    );
    let job = &store.jobs_for_report("sig").await.unwrap()[0];
    assert_eq!(job.state, JobState::Queued, "{}", db.worker_logs());
    assert_eq!(job.worker, None);
    assert_eq!(job.lease_expires_at, None);
    // Given back, not failed: the attempt does not count.
    assert_eq!((job.attempt, job.free_attempts), (1, 1));
    assert!(db.worker_logs().contains("job given back to the queue"));
}
