//! What `status`, `jobs` and `workers` show, computed from the store's rows: job
//! counts per stage and state, the running jobs with their worker, step and lease,
//! the job list, and the rule for when a registered worker counts as live.
//!
//! The command line only prints these [`Table`]s; anything else that shows the
//! queue (a test, a dashboard) reads the same ones.

use std::time::Duration;

use serde_json::{json, Value};

use crate::store::table::Table;
use crate::store::{
    JobRow, JobState, RunningRow, StageCount, Store, StoreError, StoreResult, WorkerRow,
};

/// A sweep's progress (or every sweep's): job counts per stage, and the jobs running.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// One row per sweep and stage: a count per [`JobState`] and the total.
    pub stages: Table,
    pub running: Vec<RunningRow>,
    /// Decisions whose group gained candidates after their downstream jobs started:
    /// kept, with the winners the rule would pick now.
    pub stale_decisions: Table,
}

impl Status {
    /// Reads the status of sweep `sweep` (a name the store does not hold is an
    /// error, not an empty table), or of every sweep.
    pub async fn read(store: &Store, sweep: Option<&str>) -> StoreResult<Status> {
        if let Some(name) = sweep {
            if store.spec(name).await?.is_none() {
                return Err(StoreError::UnknownSweep {
                    name: name.to_owned(),
                });
            }
        }
        let counts = store.stage_counts(sweep).await?;
        Ok(Status {
            stages: stage_table(&counts),
            running: store.running(sweep).await?,
            stale_decisions: store.stale_decisions(sweep).await?,
        })
    }

    /// The running jobs as a table.
    pub fn running_table(&self) -> Table {
        running_table(&self.running)
    }

    /// `{"stages": [...], "running": [...], "stale_decisions": [...]}`: the stage
    /// table's rows as objects, every field of each running job, and the stale
    /// decisions' rows as objects.
    pub fn to_json(&self) -> Value {
        json!({
            "stages": self.stages.to_json_value(),
            "running": self.running,
            "stale_decisions": self.stale_decisions.to_json_value(),
        })
    }
}

/// Counts per sweep and stage, in the store's order (sweep, then stage creation), one
/// column per [`JobState`] plus the total.
pub fn stage_table(counts: &[StageCount]) -> Table {
    let mut columns = vec!["sweep", "stage"];
    columns.extend(JobState::ALL.iter().map(|s| s.as_str()));
    columns.push("total");
    let mut table = Table::new(columns);
    let mut rows: Vec<((&str, &str), [i64; JobState::ALL.len()])> = Vec::new();
    for count in counts {
        let key = (count.sweep.as_str(), count.stage.as_str());
        let at = match rows.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                rows.push((key, [0; JobState::ALL.len()]));
                rows.len() - 1
            }
        };
        let column = JobState::ALL
            .iter()
            .position(|s| *s == count.state)
            .unwrap_or(0);
        rows[at].1[column] += count.count;
    }
    for ((sweep, stage), per_state) in rows {
        let mut row = vec![json!(sweep), json!(stage)];
        row.extend(per_state.iter().map(|n| json!(n)));
        row.push(json!(per_state.iter().sum::<i64>()));
        table.push(row);
    }
    table
}

/// Running jobs with worker, step and times in seconds to a tenth; a job whose worker
/// was asked to stop it shows `(cancelling)` after its stage.
pub fn running_table(running: &[RunningRow]) -> Table {
    let mut table = Table::new([
        "running job",
        "stage",
        "attempt",
        "worker",
        "step",
        "running s",
        "heartbeat age s",
        "lease left s",
    ]);
    let tenths = |seconds: f64| (seconds * 10.0).round() / 10.0;
    for job in running {
        let stage = if job.cancel_requested {
            format!("{} (cancelling)", job.stage)
        } else {
            job.stage.clone()
        };
        table.push(vec![
            json!(job.id.to_string()),
            json!(stage),
            json!(job.attempt),
            json!(job.worker),
            json!(job.step),
            json!(tenths(job.running_seconds)),
            json!(tenths(job.heartbeat_age_seconds)),
            json!(tenths(job.lease_left_seconds)),
        ]);
    }
    table
}

/// One row per job: parameters and result as JSON text, an error as `kind: first
/// line of the message`.
pub fn jobs_table(jobs: &[JobRow]) -> Table {
    let mut table = Table::new([
        "id", "sweep", "stage", "state", "attempt", "max", "worker", "params", "result", "error",
    ]);
    for job in jobs {
        let error = match (&job.error_kind, &job.error_message) {
            (Some(kind), Some(message)) => {
                json!(format!("{kind}: {}", message.lines().next().unwrap_or("")))
            }
            (Some(kind), None) => json!(kind),
            _ => Value::Null,
        };
        table.push(vec![
            json!(job.id.to_string()),
            json!(job.sweep),
            json!(job.stage),
            json!(job.state.as_str()),
            json!(job.attempt),
            json!(job.max_attempts),
            json!(job.worker),
            json!(Value::Object(job.params.clone()).to_string()),
            job.result
                .as_ref()
                .map_or(Value::Null, |r| json!(r.to_string())),
            error,
        ]);
    }
    table
}

/// How long a worker may go unseen before `workers` calls it silent. Workers mark
/// themselves alive every heartbeat (10 s by default), so two minutes of silence
/// means a dead, hung or cut-off worker, not a slow step.
pub const SILENT_AFTER: Duration = Duration::from_secs(120);

/// Whether a registered worker is still there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Seen within [`SILENT_AFTER`] and not stopped.
    Live,
    /// Not stopped, but not seen for longer than [`SILENT_AFTER`].
    Silent,
    /// Stopped and said so.
    Stopped,
}

impl WorkerState {
    pub fn of(worker: &WorkerRow) -> WorkerState {
        if worker.stopped_at.is_some() {
            WorkerState::Stopped
        } else if worker.seconds_since_seen > SILENT_AFTER.as_secs_f64() {
            WorkerState::Silent
        } else {
            WorkerState::Live
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Live => "live",
            WorkerState::Silent => "silent",
            WorkerState::Stopped => "stopped",
        }
    }
}

/// One row per registered worker with its [`WorkerState`].
pub fn workers_table(workers: &[WorkerRow]) -> Table {
    let mut table = Table::new([
        "name",
        "host",
        "pid",
        "device",
        "state",
        "job",
        "last seen s",
        "started",
    ]);
    for worker in workers {
        table.push(vec![
            json!(worker.name),
            json!(worker.host),
            json!(worker.pid),
            json!(worker.device),
            json!(WorkerState::of(worker).as_str()),
            json!(worker.job.map(|id| id.to_string())),
            json!(worker.seconds_since_seen.round()),
            json!(worker.started_at.to_rfc3339()),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn count(sweep: &str, stage: &str, state: JobState, count: i64) -> StageCount {
        StageCount {
            sweep: sweep.into(),
            stage: stage.into(),
            state,
            count,
        }
    }

    #[test]
    fn stage_table_has_one_row_per_stage_in_store_order() {
        let table = stage_table(&[
            count("s", "pretext", JobState::Queued, 3),
            count("s", "pretext", JobState::Succeeded, 2),
            count("s", "linear", JobState::Failed, 1),
        ]);
        assert_eq!(
            table.columns,
            [
                "sweep",
                "stage",
                "queued",
                "running",
                "succeeded",
                "failed",
                "cancelled",
                "total"
            ]
        );
        assert_eq!(
            table.rows,
            [
                vec![
                    json!("s"),
                    json!("pretext"),
                    json!(3),
                    json!(0),
                    json!(2),
                    json!(0),
                    json!(0),
                    json!(5)
                ],
                vec![
                    json!("s"),
                    json!("linear"),
                    json!(0),
                    json!(0),
                    json!(0),
                    json!(1),
                    json!(0),
                    json!(1)
                ],
            ]
        );
    }

    fn worker(seconds_since_seen: f64, stopped: bool) -> WorkerRow {
        let now = Utc::now();
        WorkerRow {
            id: "w".into(),
            name: "w".into(),
            host: "h".into(),
            pid: 1,
            device: "cpu".into(),
            started_at: now,
            last_seen_at: now,
            stopped_at: stopped.then_some(now),
            seconds_since_seen,
            job: None,
        }
    }

    #[test]
    fn a_worker_is_silent_after_two_minutes_unseen_and_stopped_once_it_says_so() {
        assert_eq!(WorkerState::of(&worker(5.0, false)), WorkerState::Live);
        assert_eq!(WorkerState::of(&worker(120.0, false)), WorkerState::Live);
        assert_eq!(WorkerState::of(&worker(120.5, false)), WorkerState::Silent);
        assert_eq!(WorkerState::of(&worker(5.0, true)), WorkerState::Stopped);
        assert_eq!(WorkerState::of(&worker(500.0, true)), WorkerState::Stopped);
    }

    #[test]
    fn a_cancelling_job_says_so_after_its_stage() {
        let row = RunningRow {
            id: uuid::Uuid::nil(),
            sweep: "s".into(),
            stage: "pretext".into(),
            attempt: 1,
            worker: Some("w".into()),
            step: Some(4),
            running_seconds: 12.345,
            heartbeat_age_seconds: 0.04,
            lease_left_seconds: 59.96,
            cancel_requested: true,
        };
        let table = running_table(&[row]);
        assert_eq!(table.rows[0][1], json!("pretext (cancelling)"));
        assert_eq!(table.rows[0][5], json!(12.3));
        assert_eq!(table.rows[0][7], json!(60.0));
    }
}
