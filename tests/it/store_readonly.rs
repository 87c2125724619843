//! `sweeper query` only reads: the tables, the store's files, the server's files and
//! other sessions are as they were after every statement that would change them, and
//! each such statement exits 2 saying why.

use std::collections::BTreeSet;
use std::path::Path;

use crate::common::{command_stage, spec, submit, TestDb};
use serde_json::{json, Value};
use sqlx::{Connection as _, Executor as _, PgConnection};

backend_tests!(query_changes_nothing, query_still_reads);

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn files_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("the test dir")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Runs `sql` through `sweeper query` and expects a refusal.
fn refused(db: &TestDb, sql: &str) {
    let output = db.sweeper(&["query", sql]);
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{sql}: {message}");
    assert!(
        message.contains("sweeper query runs one statement that only reads"),
        "{sql}: {message}"
    );
}

async fn query_changes_nothing(db: &TestDb) {
    let store = db.store().await;
    submit(
        &store,
        &spec("r", vec![command_stage("s", &["true"], 3, 3)], vec![]),
    )
    .await;
    let jobs_before = store.jobs_for_report("r").await.unwrap();
    let files_before = files_in(db.dir.path());
    let dir = db.dir.path().display().to_string();

    // Every statement is refused on both backends, before the database sees it.
    let statements: Vec<String> = [
        "DELETE FROM jobs".to_owned(),
        "UPDATE jobs SET state = 'failed'".into(),
        "INSERT INTO sweeps (name) VALUES ('x')".into(),
        "DROP TABLE metrics".into(),
        "CREATE TABLE t (x INT)".into(),
        "SELECT 1; SELECT 2".into(),
        "SELECT 1; DELETE FROM jobs".into(),
        "WITH d AS (DELETE FROM jobs RETURNING id) SELECT * FROM d".into(),
        "SELECT * INTO copy FROM jobs".into(),
        "SELECT * FROM jobs FOR UPDATE".into(),
        "EXPLAIN DELETE FROM jobs".into(),
        "BEGIN".into(),
        "VACUUM".into(),
        // What would write files or copies of the store.
        "VACUUM INTO 'copy.db'".into(),
        format!("VACUUM INTO '{dir}/copy2.db'"),
        "SELECT 1; VACUUM INTO 'copy3.db'".into(),
        "ATTACH DATABASE 'other.db' AS other".into(),
        "ATTACH 'other2.db' AS other".into(),
        format!("COPY jobs TO '{dir}/out.txt'"),
        "COPY jobs TO 'out.txt'".into(),
        format!("COPY (SELECT 1) TO PROGRAM 'touch {dir}/program'"),
        "COPY jobs FROM '/etc/hostname'".into(),
        format!("SELECT lo_export(lo_import('/etc/hostname'), '{dir}/lo.txt')"),
        "SELECT lo_create(0)".into(),
        "SELECT writefile('written.txt', 'x')".into(),
        "SELECT load_extension('libsomething')".into(),
        // What would read server files or touch other sessions and settings.
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
            .into(),
        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity".into(),
        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_stat_activity".into(),
        "SELECT pg_read_file('/etc/hostname')".into(),
        "SELECT pg_read_binary_file('/etc/hostname')".into(),
        "SELECT * FROM pg_ls_dir('.')".into(),
        "SELECT pg_stat_file('postgresql.conf')".into(),
        "SELECT set_config('default_transaction_read_only', 'off', false)".into(),
        "SELECT set_config('role', 'postgres', true), 1".into(),
        "SELECT dblink_exec('dbname=test', 'DROP TABLE jobs')".into(),
        "SELECT query_to_xml('DELETE FROM jobs', true, true, '')".into(),
        "SELECT pg_advisory_lock(1)".into(),
        "SELECT pg_reload_conf()".into(),
        "SET ROLE postgres".into(),
        "DO $$ BEGIN DELETE FROM jobs; END $$".into(),
        // Pragmas that set.
        "PRAGMA user_version = 7".into(),
        "PRAGMA journal_mode = DELETE".into(),
        "PRAGMA journal_mode(DELETE)".into(),
        "PRAGMA query_only = OFF".into(),
        "PRAGMA optimize".into(),
        "PRAGMA wal_checkpoint(TRUNCATE)".into(),
    ]
    .into();
    let mut held: Option<PgConnection> = None;
    if db.is_postgres() {
        // Another session of the same user, which the query must not end.
        let mut conn = PgConnection::connect(&db.url).await.unwrap();
        conn.execute("SELECT 1").await.unwrap();
        held = Some(conn);
    }
    for sql in &statements {
        refused(db, sql);
    }

    assert_eq!(store.jobs_for_report("r").await.unwrap(), jobs_before);
    assert_eq!(files_in(db.dir.path()), files_before, "files were written");
    assert_eq!(store.sweeps().await.unwrap(), ["r"]);
    if let Some(mut conn) = held {
        let alive: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .expect("the other session is still up");
        assert_eq!(alive, 1);
    } else {
        let version = db.sweeper(&["query", "PRAGMA user_version", "--format", "csv"]);
        assert_eq!(
            String::from_utf8_lossy(&version.stdout),
            "user_version\n0\n"
        );
        let mode = db.sweeper(&["query", "PRAGMA journal_mode", "--format", "csv"]);
        assert_eq!(String::from_utf8_lossy(&mode.stdout), "journal_mode\nwal\n");
    }
}

async fn query_still_reads(db: &TestDb) {
    let store = db.store().await;
    submit(
        &store,
        &spec("r", vec![command_stage("s", &["true"], 2, 3)], vec![]),
    )
    .await;
    let json_of = |args: &[&str]| -> Value {
        let mut all = vec!["query"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--format", "json"]);
        let output = db.sweeper(&all);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        serde_json::from_slice(&output.stdout).unwrap()
    };
    assert_eq!(
        json_of(&["SELECT state, COUNT(*) AS n FROM jobs GROUP BY state"]),
        json!([{"state": "queued", "n": 2}])
    );
    assert_eq!(
        json_of(&["WITH s AS (SELECT stage FROM jobs) SELECT DISTINCT stage FROM s -- done"]),
        json!([{"stage": "s"}])
    );
    if db.is_postgres() {
        let superuser =
            json_of(&["SELECT rolsuper AS s FROM pg_roles WHERE rolname = session_user"]);
        if superuser == json!([{"s": true}]) {
            // A superuser's query runs with the rights of a reader of tables only.
            assert_eq!(
                json_of(&["SELECT current_user AS who"]),
                json!([{"who": "pg_read_all_data"}])
            );
        }
    } else {
        let columns = json_of(&["PRAGMA table_info(jobs)"]);
        assert!(columns
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == json!("lease_expires_at")));
        let names = json_of(&["SELECT name FROM sqlite_master WHERE name = 'sweeps'"]);
        assert_eq!(names, json!([{"name": "sweeps"}]));
    }
}
