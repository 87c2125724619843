//! Several machines on one: worker processes with their own host names and scratch
//! directories share one store and one `file://` artifact store. The worker holding
//! a pretext job is stopped (SIGSTOP) once its first checkpoint reached the shared
//! store, then SIGKILLed; another host rescues the job once its lease expires and
//! resumes from that checkpoint; a third host, which never saw the pretext job,
//! trains the linear job from the winner's checkpoint fetched from the shared store.
//! The rescuing hosts run with clocks two hours ahead and behind: leases follow the
//! database's clock, so neither steals the live lease nor loses its own.
//!
//! Nothing here waits a fixed time to decide an outcome: each step waits for the
//! event it needs (a row, a stored file, a worker seen polling) under a generous
//! deadline, so a loaded machine makes the test slower, not wrong.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Child;
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Executor, SqliteConnection};
use sweeper::artifacts::Artifacts;
use sweeper::store::{JobFilter, JobRow, JobState, Store, WorkerInfo};
use sweeper::train::synth::{self, SynthConfig};

use crate::common::{eventually, wait_all, TestDb};

backend_tests!(
    a_killed_hosts_job_resumes_on_another_host,
    auto_devices_are_never_shared_within_a_host
);

const EPOCHS: i64 = 8;
/// Two hours: far beyond any lease.
const SKEW_SECS: i64 = 7200;
/// Alpha's lease. Alpha renews it every 0.3 s while it runs; once stopped, it must
/// outlast the skewed hosts' polling however loaded the machine, and after the kill
/// it is what the rescue waits for.
const ALPHA_LEASE_SECS: u64 = 30;

fn sweep_file(epochs: i64) -> String {
    format!(
        r#"
[sweep]
name = "mh"
data_root = "data"
seeds = [0]
max_attempts = 3
# The test follows one job from host to host: no random-init baseline beside it.
baselines = false

[datasets.A]
folder = "setA"
include_labels = ["ASC_H", "ASC_US", "HSIL"]
split = [0.6, 0.2, 0.2]

[[stages]]
name = "pretext"
kind = "pretext"
dataset = "A"

[stages.params]
backbone = "small_resnet"
epochs = {epochs}
batch_size = 16
projection_dim = 16
image_size = 32
optimizer = "lars"
temperature = 0.5
checkpoint_every = 1

[[selections]]
name = "winners"
from = "pretext"
per = ["backbone"]
prefer = [{{ min = "loss" }}]
top = 1
on_failure = "promote"

[[stages]]
name = "linear"
kind = "linear"
from = "winners"
dataset = "A"

[stages.params]
batch_size = 16
lr = 0.2
max_epochs = 2
patience = 2
"#
    )
}

/// A CPU worker posing as `host`, with its own scratch directory.
fn spawn_host(db: &TestDb, n: usize, host: &str, artifacts: &str, extra: &[&str]) -> Child {
    let scratch = db.path(host);
    let scratch = scratch.to_str().expect("a UTF-8 path");
    let mut args = vec![
        "--host",
        host,
        "--artifacts",
        artifacts,
        "--scratch",
        scratch,
    ];
    args.extend_from_slice(extra);
    db.spawn_worker(n, &args)
}

async fn the_job(store: &Store, stage: &str) -> Option<JobRow> {
    let filter = JobFilter {
        stage: Some(stage.into()),
        ..JobFilter::default()
    };
    store
        .jobs(&filter, None)
        .await
        .expect("jobs")
        .into_iter()
        .next()
}

/// Sends `signal` to a child that has not been waited for.
fn signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    // SAFETY: kill(2) has no memory effects; the child is not reaped yet, so its pid
    // still names it.
    let sent = unsafe { libc::kill(pid, signal) };
    assert_eq!(sent, 0, "kill({pid}, {signal})");
}

/// Whether a write transaction on the SQLite store starts within half a second.
async fn sqlite_writable(db: &TestDb) -> bool {
    let options = SqliteConnectOptions::from_str(&db.url)
        .expect("a SQLite URL")
        .busy_timeout(Duration::from_millis(500));
    let mut conn = SqliteConnection::connect_with(&options)
        .await
        .expect("connect");
    let writable = conn.execute("BEGIN IMMEDIATE").await.is_ok();
    if writable {
        conn.execute("ROLLBACK").await.expect("roll back");
    }
    conn.close().await.ok();
    writable
}

/// Stops `child` (SIGSTOP) between two of its store writes: a worker stopped inside a
/// SQLite write transaction would hold the database's only write lock and block
/// every other worker until it is killed. (A Postgres transaction left open locks
/// only that worker's rows, which no one else writes while its lease is live.)
async fn stop_between_writes(child: &Child, db: &TestDb) {
    loop {
        signal(child, libc::SIGSTOP);
        if db.is_postgres() || sqlite_writable(db).await {
            return;
        }
        signal(child, libc::SIGCONT);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn log_of(db: &TestDb, n: usize) -> String {
    std::fs::read_to_string(db.path(&format!("worker-{n}.log"))).unwrap_or_default()
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in std::fs::read_dir(&at).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(relative) = path.strip_prefix(dir) {
                found.insert(relative.to_string_lossy().into_owned());
            }
        }
    }
    found
}

async fn a_killed_hosts_job_resumes_on_another_host(db: &TestDb) {
    let data = db.path("data");
    synth::generate(
        &data,
        &SynthConfig {
            image_size: 32,
            main_per_label: 24,
            other_labels: 0,
            rare_labels: 0,
            train_per_label: 0,
            test_per_label: 0,
            threads: 1,
            ..SynthConfig::default()
        },
    )
    .expect("the dataset");
    std::fs::write(db.path("mh.toml"), sweep_file(EPOCHS)).expect("the sweep file");
    let submitted = db.sweeper(&["submit", "mh.toml"]);
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let store = db.store().await;
    let shared_dir = db.path("shared");
    let shared_url = format!("file://{}", shared_dir.display());
    let shared = Artifacts::from_url(&shared_url).expect("the shared store");

    // Host alpha takes the pretext job, with a lease no load outlasts.
    let lease = format!("--lease-secs={ALPHA_LEASE_SECS}");
    let mut alpha = spawn_host(db, 0, "alpha", &shared_url, &[&lease]);
    let claimed = eventually(Duration::from_secs(300), || async {
        the_job(&store, "pretext")
            .await
            .is_some_and(|job| job.state == JobState::Running)
    })
    .await;
    assert!(claimed, "alpha did not claim the job:\n{}", log_of(db, 0));
    let pretext = the_job(&store, "pretext").await.expect("the pretext job");

    // Two more hosts join, their clocks two hours behind and ahead. From now on they
    // poll, reap and try to claim while alpha holds the job.
    let behind = format!("--clock-skew-secs=-{SKEW_SECS}");
    let ahead = format!("--clock-skew-secs={SKEW_SECS}");
    let mut rescuers = vec![
        spawn_host(db, 1, "beta", &shared_url, &[&behind, "--max-jobs", "1"]),
        spawn_host(db, 2, "gamma", &shared_url, &[&ahead, "--max-jobs", "1"]),
    ];

    // Once its first checkpoint is in the shared store, alpha is stopped: it can
    // neither finish too soon nor renew its lease while the skewed hosts poll.
    let checkpointed = eventually(Duration::from_secs(300), || async {
        shared
            .latest_checkpoint("mh", pretext.id)
            .await
            .expect("list the shared store")
            .is_some()
    })
    .await;
    assert!(
        checkpointed,
        "no checkpoint reached the shared store:\n{}",
        log_of(db, 0)
    );
    stop_between_writes(&alpha, db).await;
    let stopped_at = store.database_now().await.expect("the database's clock");

    // Each skewed host is seen polling (it marks itself alive after each claim it
    // tries, and reaps every 0.3 s) for a second after alpha stopped.
    let polled = eventually(Duration::from_secs(300), || async {
        let workers = store.workers().await.expect("workers");
        ["beta", "gamma"].iter().all(|host| {
            workers.iter().any(|w| {
                w.host == *host && w.last_seen_at > stopped_at + chrono::TimeDelta::seconds(1)
            })
        })
    })
    .await;
    assert!(
        polled,
        "beta and gamma were not seen polling:\n{}",
        db.worker_logs()
    );
    let held = store.job(pretext.id).await.expect("read").expect("the job");
    let checked_at = store.database_now().await.expect("the database's clock");
    let alpha_id = store
        .workers()
        .await
        .expect("workers")
        .into_iter()
        .find(|w| w.host == "alpha")
        .expect("alpha registered")
        .id;
    assert_eq!(
        (held.state, held.attempt, held.worker.as_deref()),
        (JobState::Running, 1, Some(alpha_id.as_str())),
        "a skewed host took alpha's live lease:\n{}",
        db.worker_logs()
    );
    // Everything they did so far, they did against a live lease.
    assert!(
        held.lease_expires_at
            .is_some_and(|expiry| expiry > checked_at),
        "alpha's lease ({:?}) ran out before {checked_at}: the check proves nothing \
         unless ALPHA_LEASE_SECS outlasts the polling on this machine",
        held.lease_expires_at
    );
    for (n, words) in [(1, "behind"), (2, "ahead of")] {
        let log = log_of(db, n);
        assert!(
            log.contains(&format!("clock is {SKEW_SECS} s {words} the database's")),
            "worker {n} did not run with a skewed clock:\n{log}"
        );
    }

    // SIGKILL: alpha gets no chance to give anything back.
    let stored_before_kill = shared
        .latest_checkpoint("mh", pretext.id)
        .await
        .expect("list")
        .expect("a checkpoint")
        .epoch;
    alpha.kill().expect("SIGKILL alpha");
    alpha.wait().expect("alpha is gone");

    let statuses = wait_all(&mut rescuers, Duration::from_secs(600));
    let logs = db.worker_logs();
    assert!(statuses.iter().all(|s| s.success()), "{statuses:?}\n{logs}");

    let hosts: HashMap<String, String> = store
        .workers()
        .await
        .expect("workers")
        .into_iter()
        .map(|w| (w.id, w.host))
        .collect();
    let host_of = |job: &JobRow| -> String {
        job.worker
            .as_ref()
            .and_then(|id| hosts.get(id))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        hosts.values().cloned().collect::<BTreeSet<_>>(),
        ["alpha", "beta", "gamma"].map(String::from).into()
    );

    // The pretext job finished on a second attempt, on another host, which kept its
    // lease to the end whatever its clock said.
    let pretext = store.job(pretext.id).await.expect("read").expect("the job");
    assert_eq!(pretext.state, JobState::Succeeded, "{logs}");
    assert_eq!(pretext.attempt, 2, "{logs}");
    let rescuer = host_of(&pretext);
    assert!(rescuer == "beta" || rescuer == "gamma", "{rescuer}");

    // It resumed from the checkpoint in the shared store: its first epoch is past
    // the first, and no later than the newest checkpoint alpha stored.
    let metrics = store.metrics(pretext.id).await.expect("metrics");
    let epochs_of = |attempt: i32| -> Vec<i64> {
        metrics
            .iter()
            .filter(|m| m.attempt == attempt && m.name == "loss")
            .map(|m| m.step)
            .collect()
    };
    let first = epochs_of(1);
    let second = epochs_of(2);
    assert_eq!(first.first(), Some(&1), "{metrics:?}");
    let resumed_at = *second.iter().min().expect("the second attempt's epochs");
    assert!(
        resumed_at > 1 && resumed_at > stored_before_kill,
        "the second attempt started at epoch {resumed_at}; alpha stored epoch {stored_before_kill}"
    );
    assert!(
        resumed_at <= first.iter().max().copied().unwrap_or(0) + 1,
        "{first:?} {second:?}"
    );
    assert_eq!(second.iter().max(), Some(&EPOCHS));
    // The two attempts together logged every epoch's loss: the checkpoint alpha left
    // carried the metrics of its epochs that never reached the database.
    let curve: BTreeSet<i64> = first.iter().chain(&second).copied().collect();
    assert_eq!(
        curve,
        (1..=EPOCHS).collect::<BTreeSet<_>>(),
        "{first:?} {second:?}"
    );
    let rescuer_log = log_of(db, if rescuer == "beta" { 1 } else { 2 });
    assert!(
        rescuer_log.contains("fetched the job's files")
            && rescuer_log.contains("resuming pretext from checkpoint"),
        "{rescuer_log}"
    );

    // The checkpoint column holds the key of the final checkpoint in the shared store.
    let final_key = format!("mh/{}/epoch-{EPOCHS:04}.ot", pretext.id);
    assert_eq!(pretext.checkpoint.as_deref(), Some(final_key.as_str()));
    assert_eq!(
        pretext
            .result
            .as_ref()
            .and_then(|r| r["checkpoint"].as_str()),
        Some(final_key.as_str())
    );
    let stored_size = shared.size(&final_key).await.expect("look up");
    assert!(
        stored_size.is_some_and(|s| s > 0),
        "{final_key} is not stored"
    );

    // The linear job ran on the third host, from the checkpoint it fetched.
    let linear = the_job(&store, "linear").await.expect("the linear job");
    assert_eq!(linear.state, JobState::Succeeded, "{logs}");
    assert_eq!(linear.attempt, 1);
    let third = host_of(&linear);
    assert!(
        third != rescuer && third != "alpha" && !third.is_empty(),
        "{third}"
    );
    assert_eq!(linear.parent_job_id, Some(pretext.id));
    let fetched = db.path(&third).join(&final_key);
    assert_eq!(
        std::fs::metadata(&fetched).map(|m| m.len()).ok(),
        stored_size,
        "{} holds {:?}",
        third,
        files_under(&db.path(&third))
    );
    // It took only what a downstream job needs from the pretext job.
    let pretext_files = files_under(&db.path(&third).join("mh").join(pretext.id.to_string()));
    assert_eq!(
        pretext_files,
        [
            format!("epoch-{EPOCHS:04}.json"),
            format!("epoch-{EPOCHS:04}.ot")
        ]
        .into()
    );
    assert!(
        !logs.contains("superseded") && !logs.contains("lease was lost"),
        "{logs}"
    );
    // The shared store kept only complete checkpoints of the pretext job.
    let stored: Vec<String> = shared
        .list(&format!("mh/{}", pretext.id))
        .await
        .expect("list");
    assert!(stored.iter().all(|k| k.contains("/epoch-")), "{stored:?}");
}

/// `--device auto` on a host with two GPUs: workers registering at once take each
/// GPU once, then the CPU; another host has its own GPUs; a stopped worker
/// frees its GPU.
async fn auto_devices_are_never_shared_within_a_host(db: &TestDb) {
    let store = db.store().await;
    let info = |n: usize, host: &str| WorkerInfo {
        id: format!("{host}-{n}"),
        name: format!("{host}-{n}"),
        host: host.into(),
        pid: 1,
    };
    let live = Duration::from_secs(60);
    let registrations = (0..4).map(|n| {
        let store = store.clone();
        let info = info(n, "node1");
        tokio::spawn(async move { store.register_worker_auto(&info, 2, live).await })
    });
    let mut devices = Vec::new();
    for registration in registrations {
        devices.push(registration.await.expect("joined").expect("registered"));
    }
    devices.sort();
    assert_eq!(devices, ["cpu", "cpu", "cuda:0", "cuda:1"]);
    let elsewhere = store
        .register_worker_auto(&info(0, "node2"), 2, live)
        .await
        .expect("registered");
    assert_eq!(elsewhere, "cuda:0");

    let holder = store
        .workers()
        .await
        .expect("workers")
        .into_iter()
        .find(|w| w.host == "node1" && w.device == "cuda:1")
        .expect("a holder of cuda:1");
    store.stop_worker(&holder.id).await.expect("stopped");
    let next = store
        .register_worker_auto(&info(9, "node1"), 2, live)
        .await
        .expect("registered");
    assert_eq!(next, "cuda:1");
}
