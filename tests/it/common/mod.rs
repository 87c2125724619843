//! Helpers shared by the integration tests: a fresh store per test on each backend,
//! hand-built sweeps, and the real binary run in the test's own directory.
//!
//! Postgres tests need `SWEEPER_TEST_POSTGRES_URL` (a server where the user may create
//! databases). When it is set, each test creates `sweeper_t_<uuid>` and drops it at
//! the end, and a server that cannot be reached fails the test. When it is unset, the
//! Postgres variant says it is not run.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use sqlx::{Connection, Executor, PgConnection};
use sweeper::store::Store;
use sweeper::sweep::{
    JobSpec, OnFailure, Params, Preference, SelectionSpec, Spec, StageKind, StageSpec,
};
use tempfile::TempDir;

pub const POSTGRES_ENV: &str = "SWEEPER_TEST_POSTGRES_URL";

/// A fresh, empty store and a working directory, both removed at the end.
pub struct TestDb {
    pub url: String,
    pub dir: TempDir,
    /// The admin URL and the database to drop, for Postgres.
    postgres: Option<(String, String)>,
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("a temp dir");
        let url = format!("sqlite://{}", dir.path().join("sweeper.db").display());
        TestDb {
            url,
            dir,
            postgres: None,
        }
    }

    /// None (after saying so) when `SWEEPER_TEST_POSTGRES_URL` is unset.
    pub async fn postgres() -> Option<TestDb> {
        let Ok(admin) = std::env::var(POSTGRES_ENV) else {
            eprintln!("{POSTGRES_ENV} is not set: the Postgres variant of this test is not run");
            return None;
        };
        let name = format!("sweeper_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("{POSTGRES_ENV}={admin} cannot be reached: {e}"));
        conn.execute(format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        conn.close().await.ok();
        let mut url = url::Url::parse(&admin).expect("a Postgres URL");
        url.set_path(&name);
        let dir = tempfile::tempdir().expect("a temp dir");
        Some(TestDb {
            url: url.to_string(),
            dir,
            postgres: Some((admin, name)),
        })
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    pub async fn store(&self) -> Store {
        Store::open(&self.url).await.expect("the store opens")
    }

    /// The test's own directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `sweeper ARGS --db URL` in the test's directory.
    pub fn sweeper(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("sweeper runs")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sweeper"));
        command
            .args(args)
            .arg("--db")
            .arg(&self.url)
            .current_dir(self.dir.path());
        command.env_remove("SWEEPER_DB").env_remove("SWEEPER_LOG");
        command
    }

    /// Starts a CPU worker with short lease, heartbeat and poll periods; its stderr
    /// goes to `worker-<n>.log` in the test's directory.
    pub fn spawn_worker(&self, n: usize, extra: &[&str]) -> Child {
        let log = std::fs::File::create(self.path(&format!("worker-{n}.log"))).expect("a log file");
        let mut args = vec!["worker", "--device", "cpu"];
        args.extend_from_slice(extra);
        let name = format!("w{n}");
        args.extend_from_slice(&["--name", &name]);
        // Short periods through the environment, so that `extra` flags can override them.
        self.command(&args)
            .env("SWEEPER_LEASE_SECS", "2")
            .env("SWEEPER_HEARTBEAT_SECS", "0.3")
            .env("SWEEPER_POLL_SECS", "0.1")
            .env("SWEEPER_SHUTDOWN_GRACE_SECS", "2")
            .env("SWEEPER_RETRY_BACKOFF_SECS", "0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("a worker starts")
    }

    /// Every worker log written so far, concatenated.
    pub fn worker_logs(&self) -> String {
        let mut logs = String::new();
        for entry in std::fs::read_dir(self.dir.path())
            .expect("the test dir")
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("worker-") && name.ends_with(".log") {
                logs.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        logs
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((admin, name)) = self.postgres.take() else {
            return;
        };
        // Drop may run inside the test's runtime: use a runtime of its own on a thread.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&admin).await?;
                conn.execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
                    .await?;
                conn.close().await
            })?;
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop a test database");
        }
    }
}

/// Runs each named `async fn(&TestDb)` against SQLite and Postgres, as the tests
/// `<name>::sqlite` and `<name>::postgres`. `#[macro_use]` on `mod common` makes it
/// visible in every test module declared after it.
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let db = $crate::common::TestDb::sqlite().await;
                    super::$name(&db).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let Some(db) = $crate::common::TestDb::postgres().await else { return };
                    super::$name(&db).await;
                }
            }
        )*
    };
}

pub fn params(value: Value) -> Params {
    value.as_object().cloned().expect("an object")
}

/// A command stage over one axis `i` with `n` values.
pub fn command_stage(name: &str, argv: &[&str], n: usize, max_attempts: i32) -> StageSpec {
    StageSpec {
        name: name.into(),
        kind: StageKind::Command,
        dataset: None,
        grid: vec![("i".into(), (0..n).map(|i| json!(i)).collect())],
        params: Map::new(),
        exclude: Vec::new(),
        from: None,
        command: Some(argv.iter().map(|s| s.to_string()).collect()),
        seeds: None,
        priority: 0,
        max_attempts,
        halving: None,
    }
}

pub fn spec(name: &str, stages: Vec<StageSpec>, selections: Vec<SelectionSpec>) -> Spec {
    Spec {
        name: name.into(),
        data_root: ".".into(),
        seeds: vec![0],
        max_attempts: 3,
        datasets: Default::default(),
        stages,
        selections,
        baselines: false,
    }
}

/// Every cell of the stages that wait on no selection: the grid's product, keyed by a
/// hash of the stage and the cell.
pub fn expand(spec: &Spec) -> Vec<JobSpec> {
    let mut jobs = Vec::new();
    for stage in spec.stages.iter().filter(|s| s.from.is_none()) {
        let mut cells = vec![stage.params.clone()];
        for (axis, values) in &stage.grid {
            cells = cells
                .into_iter()
                .flat_map(|cell| {
                    values.iter().map(move |v| {
                        let mut cell = cell.clone();
                        cell.insert(axis.clone(), v.clone());
                        cell
                    })
                })
                .collect();
        }
        for cell in cells {
            jobs.push(job(stage, cell));
        }
    }
    jobs
}

pub fn job(stage: &StageSpec, params: Params) -> JobSpec {
    let key = hex::encode(Sha256::digest(
        format!("{}\n{}", stage.name, Value::Object(params.clone())).as_bytes(),
    ));
    JobSpec {
        stage: stage.name.clone(),
        kind: stage.kind,
        key,
        params,
        priority: stage.priority,
        max_attempts: stage.max_attempts,
    }
}

/// Stores `spec` with its jobs.
pub async fn submit(store: &Store, spec: &Spec) -> sweeper::store::SubmitSummary {
    store
        .submit(spec, "# hand-built", "hash", &expand(spec))
        .await
        .expect("submit")
}

pub fn selection(name: &str, from: &str, per: &[&str], prefer: Vec<Preference>) -> SelectionSpec {
    SelectionSpec {
        name: name.into(),
        from: from.into(),
        per: per.iter().map(|s| s.to_string()).collect(),
        prefer,
        top: 1,
        on_failure: OnFailure::Wait,
    }
}

/// Waits for every child, killing them all if `limit` passes first.
pub fn wait_all(children: &mut [Child], limit: Duration) -> Vec<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    let mut statuses = vec![None; children.len()];
    while statuses.iter().any(Option::is_none) {
        for (child, status) in children.iter_mut().zip(statuses.iter_mut()) {
            if status.is_none() {
                *status = child.try_wait().expect("try_wait");
            }
        }
        if Instant::now() > deadline {
            for child in children.iter_mut() {
                let _ = child.kill();
            }
            panic!("workers still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    statuses.into_iter().flatten().collect()
}

/// Polls `check` until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

pub mod data_tree;
pub mod images;
pub mod report;
pub mod sweep;
#[allow(unused_imports)]
pub use images::*;
