//! `sweeper bench queue`: claim + complete throughput of the store with trivial jobs.
//!
//! Each "worker" is a task with its own connection that claims a job and marks it
//! succeeded until the queue is empty; the figure is jobs per second of wall time.
//! [`run_queue_bench`] runs the whole command: a fresh SQLite file, optionally a
//! Postgres database, each worker count, and the same loop in Python's sqlite3 for
//! comparison.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::table::Table;
use super::{on_conn, Backend, Finish, Store, StoreError, StoreResult};
use crate::sweep::{JobSpec, Spec, StageKind, StageSpec};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BenchFigure {
    pub backend: Backend,
    pub workers: usize,
    pub jobs: usize,
    pub seconds: f64,
}

impl BenchFigure {
    pub fn jobs_per_second(&self) -> f64 {
        self.jobs as f64 / self.seconds
    }
}

/// What `sweeper bench queue` runs.
#[derive(Debug, Clone)]
pub struct QueueBench {
    /// Jobs per run.
    pub jobs: usize,
    /// One run per worker count.
    pub workers: Vec<usize>,
    /// A Postgres database to run against too (a new SQLite file always is).
    pub postgres: Option<String>,
    /// A Python interpreter to time `benches/queue_reference.py` with, on SQLite.
    pub reference_python: Option<PathBuf>,
}

/// Why a queue benchmark did not finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot run {script}: {error}")]
    RunReference {
        script: PathBuf,
        error: std::io::Error,
    },
    #[error("{script} failed: {stderr}")]
    ReferenceFailed { script: PathBuf, stderr: String },
    #[error("{script} printed no JSON: {error}")]
    ReferenceOutput {
        script: PathBuf,
        error: serde_json::Error,
    },
    #[error("{script} printed no jobs_per_second")]
    ReferenceRate { script: PathBuf },
}

impl BenchError {
    /// The user's input is at fault (a database URL), not the system.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, BenchError::Store(error) if error.is_bad_input())
    }
}

/// Runs every benchmark of `bench` and returns one row per backend and worker count:
/// jobs per second, and beside SQLite's the Python reference's rate and the ratio.
pub async fn run_queue_bench(bench: &QueueBench) -> Result<Table, BenchError> {
    let sqlite_path = std::env::temp_dir().join(format!("sweeper-bench-{}.db", Uuid::now_v7()));
    let ran = bench_table(bench, &format!("sqlite://{}", sqlite_path.display())).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", sqlite_path.display()));
    }
    ran
}

async fn bench_table(bench: &QueueBench, sqlite_url: &str) -> Result<Table, BenchError> {
    let mut table = Table::new([
        "backend",
        "workers",
        "jobs",
        "seconds",
        "jobs/s",
        "python sqlite3 jobs/s",
        "ratio",
    ]);
    let urls = std::iter::once(sqlite_url).chain(bench.postgres.as_deref());
    for url in urls {
        for &workers in &bench.workers {
            let figure = bench_queue(url, bench.jobs, workers).await?;
            let reference = match (&bench.reference_python, figure.backend) {
                (Some(python), Backend::Sqlite) => {
                    Some(python_reference(python, bench.jobs, workers).await?)
                }
                _ => None,
            };
            let rate = figure.jobs_per_second();
            table.push(vec![
                json!(match figure.backend {
                    Backend::Sqlite => "sqlite",
                    Backend::Postgres => "postgres",
                }),
                json!(workers),
                json!(figure.jobs),
                json!((figure.seconds * 1000.0).round() / 1000.0),
                json!(rate.round()),
                json!(reference.map(f64::round)),
                json!(reference.map(|r| (rate / r * 10.0).round() / 10.0)),
            ]);
        }
    }
    Ok(table)
}

/// Runs benches/queue_reference.py and reads its jobs per second.
async fn python_reference(python: &Path, jobs: usize, workers: usize) -> Result<f64, BenchError> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/queue_reference.py");
    let output = tokio::process::Command::new(python)
        .arg(&script)
        .args([
            "--jobs",
            &jobs.to_string(),
            "--workers",
            &workers.to_string(),
        ])
        .output()
        .await
        .map_err(|error| BenchError::RunReference {
            script: script.clone(),
            error,
        })?;
    if !output.status.success() {
        return Err(BenchError::ReferenceFailed {
            script,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    let report: Value =
        serde_json::from_slice(&output.stdout).map_err(|error| BenchError::ReferenceOutput {
            script: script.clone(),
            error,
        })?;
    report["jobs_per_second"]
        .as_f64()
        .ok_or(BenchError::ReferenceRate { script })
}

/// Submits `jobs` trivial jobs to a new sweep and times `workers` concurrent claim +
/// complete loops draining them; the sweep is deleted afterwards.
pub async fn bench_queue(url: &str, jobs: usize, workers: usize) -> StoreResult<BenchFigure> {
    let connections = u32::try_from(workers + 1).unwrap_or(u32::MAX);
    let store = Store::open_with(url, connections).await?;
    let spec = bench_spec(&format!("bench-{}", Uuid::now_v7()));
    let specs = noop_jobs(jobs, |i| Map::from_iter([("i".to_owned(), json!(i))]));
    store.submit(&spec, "", "", &specs).await?;

    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for worker in 0..workers {
        let store = store.clone();
        tasks.spawn(async move {
            let name = format!("bench-{worker}");
            let mut done = 0usize;
            let result = Finish::Succeeded(json!({}));
            while let Some(job) = store.claim(&name, Duration::from_secs(60)).await? {
                let _ = store
                    .finish(job.id, job.attempt, &result, Duration::ZERO)
                    .await?;
                done += 1;
            }
            StoreResult::Ok(done)
        });
    }
    let mut done = 0;
    while let Some(joined) = tasks.join_next().await {
        // A bench task only panics on a bug; surface it as one.
        done += joined.expect("bench task panicked")?;
    }
    let seconds = started.elapsed().as_secs_f64();
    debug_assert_eq!(done, jobs);
    store.delete_sweep(&spec.name).await?;
    store.close().await;
    Ok(BenchFigure {
        backend: store.backend(),
        workers,
        jobs: done,
        seconds,
    })
}

/// `jobs` jobs of the bench spec's `noop` stage, job `i` with parameters `params(i)`.
fn noop_jobs(jobs: usize, params: impl Fn(usize) -> Map<String, Value>) -> Vec<JobSpec> {
    (0..jobs)
        .map(|i| JobSpec {
            stage: "noop".into(),
            kind: StageKind::Command,
            key: format!("noop-{i}"),
            params: params(i),
            priority: 0,
            max_attempts: 1,
        })
        .collect()
}

fn bench_spec(name: &str) -> Spec {
    Spec {
        name: name.to_owned(),
        data_root: ".".into(),
        seeds: vec![0],
        max_attempts: 1,
        datasets: Default::default(),
        baselines: false,
        stages: vec![StageSpec {
            name: "noop".into(),
            kind: StageKind::Command,
            dataset: None,
            grid: Vec::new(),
            params: Map::new(),
            exclude: Vec::new(),
            from: None,
            command: Some(vec!["true".into()]),
            seeds: None,
            priority: 0,
            max_attempts: 1,
            halving: None,
        }],
        selections: Vec::new(),
    }
}

/// A sweep of `jobs` finished command jobs (a result with a `loss` each) and
/// `metrics_per_job` loss values per job, written by the database itself in a few
/// statements: what `sweeper bench serve` reads. Returns the sweep's name and one of
/// its jobs.
pub async fn fill_dashboard_store(
    store: &Store,
    jobs: usize,
    metrics_per_job: usize,
) -> StoreResult<(String, Uuid)> {
    use super::error::Context as _;
    let spec = bench_spec(&format!("bench-{}", Uuid::now_v7()));
    let specs = noop_jobs(jobs, |i| {
        Map::from_iter([
            ("i".to_owned(), json!(i)),
            ("batch_size".to_owned(), json!([64, 128, 256][i % 3])),
        ])
    });
    store.submit(&spec, "", "", &specs).await?;
    let mut pooled = store.acquire().await?;
    let mut conn = pooled.conn();
    let name = spec.name.clone();
    on_conn!(&mut conn, |c, b| {
        let (result, metrics) = match b {
            Backend::Sqlite => (
                "UPDATE jobs SET state = 'succeeded', attempt = 1, \
                     started_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-90 seconds'), \
                     finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), \
                     result = json_object('loss', 3.0 + (abs(random()) % 1000) / 1000.0) \
                 WHERE sweep = $1",
                "WITH RECURSIVE steps(step) AS \
                     (SELECT 1 UNION ALL SELECT step + 1 FROM steps WHERE step < $2) \
                 INSERT INTO metrics (job_id, attempt, step, name, value) \
                 SELECT j.id, 1, steps.step, 'loss', 4.8 - steps.step * 0.01 \
                 FROM jobs j, steps WHERE j.sweep = $1",
            ),
            Backend::Postgres => (
                "UPDATE jobs SET state = 'succeeded', attempt = 1, \
                     started_at = now() - interval '90 seconds', finished_at = now(), \
                     result = jsonb_build_object('loss', 3.0 + random()) \
                 WHERE sweep = $1",
                "INSERT INTO metrics (job_id, attempt, step, name, value) \
                 SELECT j.id, 1, s, 'loss', 4.8 - s * 0.01 \
                 FROM jobs j, generate_series(1, $2::int8) s WHERE j.sweep = $1",
            ),
        };
        sqlx::query(result)
            .bind(&name)
            .execute(&mut *c)
            .await
            .context("cannot finish the bench jobs")?;
        sqlx::query(metrics)
            .bind(&name)
            .bind(metrics_per_job as i64)
            .execute(&mut *c)
            .await
            .context("cannot write the bench metrics")?;
    });
    drop(pooled);
    let one = store
        .jobs(
            &super::JobFilter {
                sweep: Some(name.clone()),
                ..Default::default()
            },
            Some(1),
        )
        .await?;
    Ok((name, one[0].id))
}

/// SQLite's plan for each of the job page's reads (`EXPLAIN QUERY PLAN`, one line per
/// step), to show they go through an index; none on Postgres.
pub async fn job_page_plans(store: &Store) -> StoreResult<Vec<(String, String)>> {
    use super::error::Context as _;
    if store.backend() != Backend::Sqlite {
        return Ok(Vec::new());
    }
    let reads = [
        ("job by id", super::read::job_by_id_sql()),
        ("job's metrics", super::read::METRICS_OF_JOB.to_owned()),
    ];
    let mut pooled = store.acquire().await?;
    let mut conn = pooled.conn();
    let mut plans = Vec::new();
    for (name, sql) in reads {
        let steps: Vec<String> = on_conn!(&mut conn, |c, _b| {
            let rows: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .bind("00000000-0000-0000-0000-000000000000")
                    .fetch_all(&mut *c)
                    .await
                    .context("cannot explain a query")?;
            rows.into_iter().map(|(_, _, _, detail)| detail).collect()
        });
        plans.push((name.to_owned(), steps.join("; ")));
    }
    Ok(plans)
}

/// What `sweeper bench scale` runs.
#[derive(Debug, Clone)]
pub struct ScaleBench {
    /// Pretext-like jobs per run (each run adds one downstream job per group of ten).
    pub sizes: Vec<usize>,
    /// In-process workers draining each run.
    pub workers: usize,
    /// A Postgres database to run against too (a new SQLite file always is).
    pub postgres: Option<String>,
}

/// Per backend and size: the time of `submit`, of draining the queue with
/// `workers` in-process workers (claim + finish + promotion of every group), of
/// `status` and of `report`, and each one's growth against the size before (10 for
/// a tenfold size is linear).
pub async fn run_scale_bench(bench: &ScaleBench) -> anyhow::Result<Table> {
    let mut table = Table::new([
        "backend",
        "jobs",
        "submit s",
        "×",
        "drain s",
        "×",
        "status ms",
        "×",
        "report ms",
        "×",
    ]);
    let mut backends: Vec<Option<&str>> = vec![None];
    backends.extend(bench.postgres.as_deref().map(Some));
    for postgres in backends {
        let mut before: Option<[f64; 4]> = None;
        for &size in &bench.sizes {
            let sqlite = std::env::temp_dir().join(format!("sweeper-scale-{}.db", Uuid::now_v7()));
            let url =
                postgres.map_or_else(|| format!("sqlite://{}", sqlite.display()), str::to_owned);
            let ran = scale_run(&url, size, bench.workers).await;
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", sqlite.display()));
            }
            let (backend, times) = ran?;
            let growth =
                |i: usize| before.map(|b| (times[i] / b[i].max(1e-9) * 10.0).round() / 10.0);
            let round = |x: f64, digits: i32| (x * 10f64.powi(digits)).round() / 10f64.powi(digits);
            table.push(vec![
                json!(match backend {
                    Backend::Sqlite => "sqlite",
                    Backend::Postgres => "postgres",
                }),
                json!(size),
                json!(round(times[0], 3)),
                json!(growth(0)),
                json!(round(times[1], 2)),
                json!(growth(1)),
                json!(round(times[2] * 1000.0, 1)),
                json!(growth(2)),
                json!(round(times[3] * 1000.0, 1)),
                json!(growth(3)),
            ]);
            eprintln!(
                "{} jobs: submit {:.2} s, drain {:.2} s",
                size, times[0], times[1]
            );
            before = Some(times);
        }
    }
    Ok(table)
}

/// One run: `[submit, drain, status, report]` in seconds.
async fn scale_run(url: &str, size: usize, workers: usize) -> anyhow::Result<(Backend, [f64; 4])> {
    let store = Store::open_with(url, u32::try_from(workers + 1).unwrap_or(u32::MAX)).await?;
    let groups = (size / 10).max(1);
    let mut spec = bench_spec(&format!("scale-{}", Uuid::now_v7()));
    spec.stages[0].grid = vec![
        ("group".into(), (0..groups).map(|g| json!(g)).collect()),
        (
            "cell".into(),
            (0..size.div_ceil(groups)).map(|c| json!(c)).collect(),
        ),
    ];
    spec.selections = vec![crate::sweep::SelectionSpec {
        name: "best".into(),
        from: "noop".into(),
        per: vec!["group".into()],
        prefer: vec![crate::sweep::Preference::Min("loss".into())],
        top: 1,
        on_failure: crate::sweep::OnFailure::Promote,
    }];
    let mut follow = spec.stages[0].clone();
    follow.name = "follow".into();
    follow.grid = Vec::new();
    follow.from = Some("best".into());
    spec.stages.push(follow);

    let started = Instant::now();
    let jobs = crate::sweep::expand::expand(&spec);
    store.submit(&spec, "", "", &jobs).await?;
    let submit = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for worker in 0..workers {
        let store = store.clone();
        tasks.spawn(async move {
            let name = format!("scale-{worker}");
            while let Some(job) = store.claim(&name, Duration::from_secs(600)).await? {
                // A loss that differs per job and is the same on every run.
                let loss = (job.key.bytes().map(u64::from).sum::<u64>() % 997) as f64 / 100.0;
                let result = Finish::Succeeded(json!({ "loss": loss }));
                store
                    .finish(job.id, job.attempt, &result, Duration::ZERO)
                    .await?;
            }
            StoreResult::Ok(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("bench task panicked")?;
    }
    let drain = started.elapsed().as_secs_f64();

    let started = Instant::now();
    crate::status::Status::read(&store, Some(&spec.name)).await?;
    let status = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let input = crate::report::from_store::load(&store, &spec.name).await?;
    let _ = crate::report::markdown(&input);
    let report = started.elapsed().as_secs_f64();

    if store.backend() == Backend::Postgres {
        store.delete_sweep(&spec.name).await?;
    }
    store.close().await;
    Ok((store.backend(), [submit, drain, status, report]))
}
