//! What `status`, `jobs` and `workers` show, computed from the store's rows: job
//! counts per stage and state, the running jobs with their worker, step and lease,
//! the job list, and the rule for when a registered worker counts as live.
//!
//! The command line only prints these [`Table`]s; anything else that shows the
//! queue (a test, a dashboard) reads the same ones.

use std::time::Duration;

use serde_json::{json, Value};

use crate::progress;
use crate::store::table::{Format, Table};
use crate::store::{
    JobRow, JobState, RunningRow, StageCount, Store, StoreError, StoreResult, WorkerRow,
};

/// A sweep's progress (or every sweep's): job counts per stage, and the jobs running.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// One row per sweep and stage: a count per [`JobState`] and the total.
    pub stages: Table,
    /// The counts `stages` is made of.
    pub counts: Vec<StageCount>,
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
        let running = store.running(sweep).await?;
        Ok(Status {
            stages: stage_table(&counts, &running),
            counts,
            running,
            stale_decisions: store.stale_decisions(sweep).await?,
        })
    }

    /// What `status` prints: the stage table, then the running jobs and the stale
    /// decisions where there are any, each after a blank line (JSON: [`Self::to_json`]).
    pub fn render(&self, format: Format) -> String {
        if format == Format::Json {
            return format!("{:#}\n", self.to_json());
        }
        let mut out = self.stages.render(format);
        for table in [self.running_table(), self.stale_decisions.clone()] {
            if !table.rows.is_empty() {
                out.push('\n');
                out.push_str(&table.render(format));
            }
        }
        out
    }

    /// Jobs queued or running in what this status covers: none means it can only
    /// change by a new submission or a retry.
    pub fn active(&self) -> i64 {
        self.counts
            .iter()
            .filter(|count| matches!(count.state, JobState::Queued | JobState::Running))
            .map(|count| count.count)
            .sum()
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
/// column per [`JobState`] (paused and stopped only where some job is), the total, how
/// many have ended (succeeded, failed, cancelled or stopped) and the stage's ETA in seconds (see [`progress::stage_eta_seconds`];
/// null where there is nothing to go by yet).
pub fn stage_table(counts: &[StageCount], running: &[RunningRow]) -> Table {
    // The two states of successive halving get a column where some job is in them.
    let halving_only = [JobState::Paused, JobState::Stopped];
    let shown: Vec<usize> = (0..JobState::ALL.len())
        .filter(|&at| {
            !halving_only.contains(&JobState::ALL[at])
                || counts
                    .iter()
                    .any(|c| c.state == JobState::ALL[at] && c.count > 0)
        })
        .collect();
    let mut columns = vec!["sweep", "stage"];
    columns.extend(shown.iter().map(|&at| JobState::ALL[at].as_str()));
    columns.extend(["total", "done", "eta s"]);
    let mut table = Table::new(columns);
    struct Row<'a> {
        key: (&'a str, &'a str),
        per_state: [i64; JobState::ALL.len()],
        mean_seconds: Option<f64>,
    }
    let mut rows: Vec<Row> = Vec::new();
    for count in counts {
        let key = (count.sweep.as_str(), count.stage.as_str());
        let at = match rows.iter().position(|row| row.key == key) {
            Some(at) => at,
            None => {
                rows.push(Row {
                    key,
                    per_state: [0; JobState::ALL.len()],
                    mean_seconds: None,
                });
                rows.len() - 1
            }
        };
        let column = JobState::ALL
            .iter()
            .position(|s| *s == count.state)
            .unwrap_or(0);
        rows[at].per_state[column] += count.count;
        if count.state == JobState::Succeeded {
            rows[at].mean_seconds = count.mean_seconds;
        }
    }
    let of = |per_state: &[i64], state: JobState| {
        JobState::ALL
            .iter()
            .position(|s| *s == state)
            .map_or(0, |at| per_state[at])
    };
    for row in rows {
        let (sweep, stage) = row.key;
        let ended: i64 = JobState::ALL
            .into_iter()
            .filter(|state| state.is_terminal())
            .map(|state| of(&row.per_state, state))
            .sum();
        let running_left: Vec<Option<f64>> = running
            .iter()
            .filter(|job| job.sweep == sweep && job.stage == stage)
            .map(|job| {
                eta_left(job).or_else(|| {
                    row.mean_seconds
                        .map(|mean| (mean - job.running_seconds).max(0.0))
                })
            })
            .collect();
        let eta = progress::stage_eta_seconds(
            row.mean_seconds,
            of(&row.per_state, JobState::Queued),
            &running_left,
        );
        let mut cells = vec![json!(sweep), json!(stage)];
        cells.extend(shown.iter().map(|&at| json!(row.per_state[at])));
        cells.push(json!(row.per_state.iter().sum::<i64>()));
        cells.push(json!(ended));
        cells.push(json!(eta.map(|eta| eta.round() as i64)));
        table.push(cells);
    }
    table
}

/// Seconds a running job has left by its last epoch's pace, counted down since the
/// worker stored that epoch.
pub fn eta_left(job: &RunningRow) -> Option<f64> {
    let epoch = job.epoch.as_ref()?;
    Some((epoch.eta_seconds() - job.epoch_age_seconds.unwrap_or(0.0)).max(0.0))
}

/// Running jobs with worker, progress and times in seconds to a tenth. Progress is
/// `epoch k/N` for training jobs (with the epoch's headline metric, images/s and the
/// ETA), `step n` for jobs that report only steps. A job whose worker was asked to
/// stop it shows `(cancelling)` after its stage.
pub fn running_table(running: &[RunningRow]) -> Table {
    let mut table = Table::new([
        "running job",
        "stage",
        "attempt",
        "worker",
        "progress",
        "latest",
        "images/s",
        "eta s",
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
        let progress = match (&job.epoch, job.step) {
            (Some(epoch), _) => json!(format!("epoch {}/{}", epoch.epoch, epoch.epochs)),
            (None, Some(step)) => json!(format!("step {step}")),
            (None, None) => Value::Null,
        };
        let latest = job
            .epoch
            .as_ref()
            .map(|epoch| json!(format!("{} {:.4}", epoch.metric, epoch.value)));
        table.push(vec![
            json!(job.id.to_string()),
            json!(stage),
            json!(job.attempt),
            json!(job.worker),
            progress,
            json!(latest),
            json!(job
                .epoch
                .as_ref()
                .map(|epoch| epoch.images_per_s.round() as i64)),
            json!(eta_left(job).map(|eta| eta.round() as i64)),
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
            mean_seconds: (state == JobState::Succeeded).then_some(60.0),
        }
    }

    #[test]
    fn stage_table_has_one_row_per_stage_in_store_order() {
        let table = stage_table(
            &[
                count("s", "pretext", JobState::Queued, 3),
                count("s", "pretext", JobState::Succeeded, 2),
                count("s", "linear", JobState::Failed, 1),
            ],
            &[],
        );
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
                "total",
                "done",
                "eta s"
            ]
        );
        assert_eq!(
            table.rows,
            [
                // Three queued and nothing running: no pace to go by.
                vec![
                    json!("s"),
                    json!("pretext"),
                    json!(3),
                    json!(0),
                    json!(2),
                    json!(0),
                    json!(0),
                    json!(5),
                    json!(2),
                    Value::Null
                ],
                vec![
                    json!("s"),
                    json!("linear"),
                    json!(0),
                    json!(0),
                    json!(0),
                    json!(1),
                    json!(0),
                    json!(1),
                    json!(1),
                    json!(0)
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
            epoch: None,
            epoch_age_seconds: None,
            running_seconds: 12.345,
            heartbeat_age_seconds: 0.04,
            lease_left_seconds: 59.96,
            cancel_requested: true,
        };
        let table = running_table(&[row]);
        assert_eq!(table.rows[0][1], json!("pretext (cancelling)"));
        assert_eq!(table.rows[0][4], json!("step 4"));
        assert_eq!(table.rows[0][8], json!(12.3));
        assert_eq!(table.rows[0][10], json!(60.0));
    }
}
