//! `sweeper bench queue`: claim + complete throughput of the store with trivial jobs.
//!
//! Each "worker" is a task with its own connection that claims a job and marks it
//! succeeded until the queue is empty; the figure is jobs per second of wall time.

use std::time::{Duration, Instant};

use serde_json::{json, Map};
use tokio::task::JoinSet;
use uuid::Uuid;

use super::{Backend, Finish, Store, StoreResult};
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

/// Submits `jobs` trivial jobs to a new sweep and times `workers` concurrent claim +
/// complete loops draining them; the sweep is deleted afterwards.
pub async fn bench_queue(url: &str, jobs: usize, workers: usize) -> StoreResult<BenchFigure> {
    let connections = u32::try_from(workers + 1).unwrap_or(u32::MAX);
    let store = Store::open_with(url, connections).await?;
    let spec = bench_spec(&format!("bench-{}", Uuid::now_v7()));
    let specs: Vec<JobSpec> = (0..jobs)
        .map(|i| JobSpec {
            stage: "noop".into(),
            kind: StageKind::Command,
            key: format!("noop-{i}"),
            params: Map::from_iter([("i".to_owned(), json!(i))]),
            priority: 0,
            max_attempts: 1,
        })
        .collect();
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

fn bench_spec(name: &str) -> Spec {
    Spec {
        name: name.to_owned(),
        data_root: ".".into(),
        seeds: vec![0],
        max_attempts: 1,
        datasets: Default::default(),
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
        }],
        selections: Vec::new(),
    }
}
