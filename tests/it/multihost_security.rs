//! Credentials on a shared Postgres: a password in the store URL never shows in any
//! command's output, log or error, and `query` cannot write through any statement.
//! Both need `SWEEPER_TEST_POSTGRES_URL`.

use std::process::Output;

use sweeper::store::JobState;

use crate::common::{command_stage, spec, submit, TestDb};

/// Unlike anything else a command prints.
const SECRET: &str = "Zq7-hunter2-pw";

fn all_text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `url` with user `postgres` (when it names none) and password [`SECRET`].
fn with_password(url: &str) -> url::Url {
    let mut url = url::Url::parse(url).expect("a Postgres URL");
    if url.username().is_empty() {
        url.set_username("postgres").expect("a user");
    }
    url.set_password(Some(SECRET)).expect("a password");
    url
}

/// Runs `sweeper ARGS --db URL` in the test's directory with debug logs.
fn sweeper(db: &TestDb, url: &str, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sweeper"))
        .args(args)
        .arg("--db")
        .arg(url)
        .current_dir(db.dir.path())
        .env_remove("SWEEPER_DB")
        .env("SWEEPER_LOG", "debug")
        .output()
        .expect("sweeper runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_the_store_url_never_shows() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    submit(
        &db.store().await,
        &spec("pw", vec![command_stage("s", &["false"], 2, 1)], vec![]),
    )
    .await;
    let url = with_password(&db.url);
    let url = url.as_str();

    // Working commands, with debug logs: the server takes the password (or ignores
    // it, under trust authentication), and nothing prints it.
    let worker = sweeper(
        &db,
        url,
        &[
            "worker",
            "--device",
            "cpu",
            "--exit-when-idle",
            "--poll-secs",
            "0.1",
        ],
    );
    assert!(worker.status.success(), "{}", all_text(&worker));
    for args in [
        &["status"][..],
        &["jobs"],
        &["workers"],
        &["query", "SELECT current_user, error_message FROM jobs"],
    ] {
        let output = sweeper(&db, url, args);
        let text = all_text(&output);
        assert!(output.status.success(), "{args:?}: {text}");
        assert!(
            !text.contains(SECRET),
            "{args:?} printed the password:\n{text}"
        );
    }
    let worker_text = all_text(&worker);
    assert!(
        !worker_text.contains(SECRET),
        "the worker logged the password:\n{worker_text}"
    );
    let failed = db.store().await.jobs_for_report("pw").await.expect("jobs");
    assert!(failed.iter().all(|j| j.state == JobState::Failed));

    // Failing commands: a closed port, a missing database, a bad port, a foreign
    // scheme. Each error names the place, with the password masked.
    let mut closed = with_password(&db.url);
    closed.set_port(Some(1)).expect("a port");
    let mut missing = with_password(&db.url);
    missing.set_path("sweeper_no_such_database");
    let bad_port = format!("postgres://postgres:{SECRET}@127.0.0.1:notaport/db");
    let foreign = format!("mysql://root:{SECRET}@127.0.0.1/db");
    let every: &[&[&str]] = &[
        &["status"],
        &["query", "SELECT 1"],
        &["worker", "--device", "cpu"],
    ];
    // The pool retries a closed port until its timeout: one command through it.
    let closed_only: &[&[&str]] = &[&["status"], &["query", "SELECT 1"]];
    for (url, commands) in [
        (closed.as_str(), closed_only),
        (missing.as_str(), every),
        (bad_port.as_str(), every),
        (foreign.as_str(), every),
    ] {
        for args in commands {
            let output = sweeper(&db, url, args);
            let text = all_text(&output);
            assert!(!output.status.success(), "{url} {args:?}: {text}");
            assert!(
                !text.contains(SECRET),
                "{url} {args:?} printed the password:\n{text}"
            );
            assert!(
                text.contains(":***@"),
                "{url} {args:?} does not say where:\n{text}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_cannot_write_on_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let store = db.store().await;
    submit(
        &store,
        &spec("ro", vec![command_stage("s", &["true"], 3, 3)], vec![]),
    )
    .await;
    let sneaky = [
        "WITH gone AS (DELETE FROM jobs RETURNING id) SELECT count(*) FROM gone",
        "UPDATE jobs SET state = 'failed' RETURNING id",
        "INSERT INTO workers (id, name, host, pid, device) VALUES ('x', 'x', 'x', 1, 'cpu')",
        "CREATE TABLE intruder (i int)",
        "CREATE TEMP TABLE intruder (i int)",
        "TRUNCATE metrics",
        "DO $$ BEGIN DELETE FROM jobs; END $$",
        "DO $$ BEGIN COMMIT; DELETE FROM jobs; END $$",
        "DO $$ BEGIN SET TRANSACTION READ WRITE; DELETE FROM jobs; END $$",
        "COMMIT; DELETE FROM jobs",
        "SELECT 1; DELETE FROM jobs",
    ];
    for sql in sneaky {
        let output = db.sweeper(&["query", sql]);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{sql}: {}",
            all_text(&output)
        );
    }
    // Statements Postgres allows in a read-only transaction: their effects are
    // rolled back with it.
    for sql in [
        "SET TRANSACTION READ WRITE",
        "COMMIT",
        "SELECT lo_create(0)",
    ] {
        let _ = db.sweeper(&["query", sql]);
    }
    let jobs = store.jobs_for_report("ro").await.expect("jobs");
    assert_eq!(jobs.len(), 3);
    assert!(jobs.iter().all(|j| j.state == JobState::Queued));
    assert!(store.workers().await.expect("workers").is_empty());
    let tables = db.sweeper(&[
        "query",
        "SELECT count(*) AS n FROM pg_class WHERE relname = 'intruder'",
        "--format",
        "csv",
    ]);
    assert_eq!(String::from_utf8_lossy(&tables.stdout), "n\n0\n");
    let objects = db.sweeper(&[
        "query",
        "SELECT count(*) AS n FROM pg_largeobject_metadata",
        "--format",
        "csv",
    ]);
    assert_eq!(String::from_utf8_lossy(&objects.stdout), "n\n0\n");
}
