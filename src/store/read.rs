//! The store's reads: what `status`, `jobs`, `workers` and the report show.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::types::Json;
use sqlx::Row as _;
use uuid::Uuid;

use super::error::Context as _;
use super::table::Table;
use super::{
    on_conn, AttemptRow, FailureKind, Halted, Id, IdPrefix, JobFilter, JobProvenance, JobRow,
    JobState, MetricRow, PromotionRow, RungDecision, RunningRow, StageCount, Store, StoreResult,
    SupersededPromotion, WorkerRow,
};
use crate::progress::EpochSummary;
use crate::provenance::Provenance;
use crate::sweep::select::Outcome;
use crate::sweep::{Params, Spec};

const JOB_COLUMNS: &str = "id, sweep, stage, kind, key, params, state, priority, attempt, \
    max_attempts, free_attempts, cancel_requested, worker, lease_expires_at, heartbeat_at, \
    progress_step, error_kind, error_message, result, checkpoint, parent_job_id, created_at, \
    started_at, finished_at, halted";

/// One job's metric values: what a job page reads (`metrics_job` serves it).
pub(crate) const METRICS_OF_JOB: &str = "SELECT job_id, attempt, step, name, value, recorded_at \
     FROM metrics WHERE job_id = $1 ORDER BY name, step, attempt, recorded_at";

/// One job by its primary key.
pub(crate) fn job_by_id_sql() -> String {
    format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1")
}

impl Store {
    /// The checked spec of a stored sweep.
    pub async fn spec(&self, sweep: &str) -> StoreResult<Option<Spec>> {
        let mut pooled = self.acquire().await?;
        pooled.conn().sweep_spec(sweep).await
    }

    /// Names of the stored sweeps, oldest first.
    pub async fn sweeps(&self) -> StoreResult<Vec<String>> {
        let mut pooled = self.acquire().await?;
        let mut conn = pooled.conn();
        on_conn!(&mut conn, |c, _b| {
            sqlx::query_scalar("SELECT name FROM sweeps ORDER BY created_at, name")
                .fetch_all(&mut *c)
                .await
                .context("cannot read the sweeps")
        })
    }

    /// Jobs matching `filter`, oldest first, at most `limit`.
    pub async fn jobs(&self, filter: &JobFilter, limit: Option<i64>) -> StoreResult<Vec<JobRow>> {
        self.jobs_after(filter, None, limit).await
    }

    /// Jobs matching `filter` in id order after job `after` (a page of a long list,
    /// by key rather than offset, so a late page costs what the first one does), at
    /// most `limit`.
    pub async fn jobs_after(
        &self,
        filter: &JobFilter,
        after: Option<Uuid>,
        limit: Option<i64>,
    ) -> StoreResult<Vec<JobRow>> {
        let mut pooled = self.acquire().await?;
        let mut conn = pooled.conn();
        let mut found = Vec::new();
        let ids: Vec<Option<Uuid>> = if filter.ids.is_empty() {
            vec![None]
        } else {
            filter.ids.iter().copied().map(Some).collect()
        };
        for id in ids {
            let rows = on_conn!(&mut conn, |c, _b| {
                let sql = format!(
                    "SELECT {JOB_COLUMNS} FROM jobs \
                     WHERE ($1 IS NULL OR id = $1) AND ($2 IS NULL OR sweep = $2) \
                         AND ($3 IS NULL OR stage = $3) AND ($4 IS NULL OR state = $4) \
                         AND ($6 IS NULL OR id > $6) \
                     ORDER BY id LIMIT $5"
                );
                let rows = sqlx::query(&sql)
                    .bind(id.map(Id))
                    .bind(filter.sweep.as_deref())
                    .bind(filter.stage.as_deref())
                    .bind(filter.state.map(JobState::as_str))
                    .bind(limit.unwrap_or(i64::MAX))
                    .bind(after.map(Id))
                    .fetch_all(&mut *c)
                    .await
                    .context("cannot read jobs")?;
                rows.iter()
                    .map(decode_job)
                    .collect::<Result<Vec<_>, _>>()
                    .context("cannot read jobs")?
            });
            found.extend(rows);
        }
        Ok(found)
    }

    /// One job, every column, by its primary key (a filter's `$1 IS NULL OR id = $1`
    /// would scan the table).
    pub async fn job(&self, id: Uuid) -> StoreResult<Option<JobRow>> {
        let mut pooled = self.acquire().await?;
        let mut conn = pooled.conn();
        on_conn!(&mut conn, |c, _b| {
            let sql = job_by_id_sql();
            let row = sqlx::query(&sql)
                .bind(Id(id))
                .fetch_optional(&mut *c)
                .await
                .context("cannot read a job")?;
            row.as_ref()
                .map(decode_job)
                .transpose()
                .context("cannot read a job")
        })
    }

    /// The jobs whose id starts with `prefix`, in id order, at most `limit`.
    pub async fn jobs_by_id_prefix(
        &self,
        prefix: &IdPrefix,
        limit: i64,
    ) -> StoreResult<Vec<JobRow>> {
        let mut pooled = self.acquire().await?;
        let mut conn = pooled.conn();
        on_conn!(&mut conn, |c, _b| {
            // Text ids on SQLite are lower-case and hyphenated in fixed places, so they
            // sort as the uuids do on Postgres: one range serves both.
            let sql = format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE id >= $1 AND id <= $2 ORDER BY id LIMIT $3"
            );
            let rows = sqlx::query(&sql)
                .bind(Id(prefix.first))
                .bind(Id(prefix.last))
                .bind(limit)
                .fetch_all(&mut *c)
                .await
                .context("cannot read jobs")?;
            rows.iter()
                .map(decode_job)
                .collect::<Result<Vec<_>, _>>()
                .context("cannot read jobs")
        })
    }

    /// Every job of a sweep, every column, for the report.
    pub async fn jobs_for_report(&self, sweep: &str) -> StoreResult<Vec<JobRow>> {
        let filter = JobFilter {
            sweep: Some(sweep.to_owned()),
            ..JobFilter::default()
        };
        self.jobs(&filter, None).await
    }

    /// The provenance of the attempt that produced each succeeded job's result, with
    /// the job's stage and sweep version; a job with no recorded provenance has none.
    pub async fn provenance(&self, sweep: &str) -> StoreResult<Vec<JobProvenance>> {
        let mut pooled = self.acquire().await?;
        let mut conn = pooled.conn();
        let rows: Vec<(Id, String, i32, Option<Json<Provenance>>)> =
            on_conn!(&mut conn, |c, _b| {
                sqlx::query_as(
                    "SELECT jobs.id, jobs.stage, jobs.spec_version, attempts.provenance \
                     FROM jobs LEFT JOIN attempts \
                       ON attempts.job_id = jobs.id AND attempts.attempt = jobs.attempt \
                     WHERE jobs.sweep = $1 AND jobs.state = 'succeeded' \
                     ORDER BY jobs.stage, jobs.id",
                )
                .bind(sweep)
                .fetch_all(&mut *c)
                .await
                .context("cannot read provenance")?
            });
        Ok(rows
            .into_iter()
            .map(|(id, stage, version, provenance)| JobProvenance {
                job: id.0,
                stage,
                spec_version: i64::from(version),
                provenance: provenance.map(|Json(p)| p),
            })
            .collect())
    }

    /// Every metric of a job, by name, step and attempt.
    pub async fn metrics(&self, job: Uuid) -> StoreResult<Vec<MetricRow>> {
        let mut pooled = self.acquire().await?;
        let mut conn = pooled.conn();
        on_conn!(&mut conn, |c, _b| {
            let rows = sqlx::query(METRICS_OF_JOB)
                .bind(Id(job))
                .fetch_all(&mut *c)
                .await
                .context("cannot read metrics")?;
            rows.iter()
                .map(decode_metric)
                .collect::<Result<Vec<_>, _>>()
                .context("cannot read metrics")
        })
    }

    /// Every recorded attempt of `job` with what ran it, first attempt first.
    pub async fn attempts(&self, job: Uuid) -> StoreResult<Vec<AttemptRow>> {
        let mut pooled = self.acquire().await?;
        let mut conn = pooled.conn();
        let rows: Vec<(i32, Json<Provenance>, DateTime<Utc>)> = on_conn!(&mut conn, |c, _b| {
            sqlx::query_as(
                "SELECT attempt, provenance, created_at FROM attempts \
                 WHERE job_id = $1 ORDER BY attempt",
            )
            .bind(Id(job))
            .fetch_all(&mut *c)
            .await
            .context("cannot read attempts")?
        });
        Ok(rows
            .into_iter()
            .map(|(attempt, provenance, started_at)| AttemptRow {
                attempt,
                provenance: provenance.0,
                started_at,
            })
            .collect())
    }

    /// Every metric value of sweep `sweep`, with its job's stage, streamed to `each`
    /// in job, name, step and attempt order (the `metrics_job` index's) without
    /// holding the history in memory; `each` returns false to stop early. Returns
    /// the number of rows passed on.
    pub async fn metric_history(
        &self,
        sweep: &str,
        mut each: impl FnMut(&str, MetricRow) -> bool,
    ) -> StoreResult<u64> {
        use futures::TryStreamExt as _;
        let mut pooled = self.acquire().await?;
        let mut conn = pooled.conn();
        let mut passed = 0;
        on_conn!(&mut conn, |c, _b| {
            let mut rows = sqlx::query(
                "SELECT m.job_id, j.stage, m.attempt, m.step, m.name, m.value, m.recorded_at \
                 FROM metrics m JOIN jobs j ON j.id = m.job_id WHERE j.sweep = $1 \
                 ORDER BY m.job_id, m.name, m.step, m.attempt, m.recorded_at",
            )
            .bind(sweep)
            .fetch(&mut *c);
            while let Some(row) = rows.try_next().await.context("cannot read metrics")? {
                let stage: String = row.try_get("stage").context("cannot read metrics")?;
                let metric = decode_metric(&row).context("cannot read metrics")?;
                passed += 1;
                if !each(&stage, metric) {
                    break;
                }
            }
        });
        Ok(passed)
    }

    /// Every rung decision of a sweep's successive halving, by stage, group and rung.
    pub async fn rung_decisions(&self, sweep: &str) -> StoreResult<Vec<RungDecision>> {
        let mut pooled = self.acquire().await?;
        let mut conn = pooled.conn();
        let rows: Vec<Json<RungDecision>> = on_conn!(&mut conn, |c, _b| {
            sqlx::query_scalar(
                "SELECT decision FROM rung_decisions WHERE sweep = $1 \
                 ORDER BY stage, group_key, rung",
            )
            .bind(sweep)
            .fetch_all(&mut *c)
            .await
            .context("cannot read rung decisions")?
        });
        Ok(rows.into_iter().map(|Json(decision)| decision).collect())
    }

    /// Every promotion of a sweep (the decision in force per group), oldest first.
    pub async fn promotions(&self, sweep: &str) -> StoreResult<Vec<PromotionRow>> {
        self.promotion_rows(Some(sweep)).await
    }

    /// The decisions marked stale (of one sweep, or all) as `status` shows them: the
    /// group, the winners in force, the ones the rule picks now, and why the decision
    /// was kept.
    pub async fn stale_decisions(&self, sweep: Option<&str>) -> StoreResult<Table> {
        let mut table = Table::new([
            "stale decision",
            "group",
            "revision",
            "winners",
            "rule picks now",
            "kept because",
        ]);
        for row in self.promotion_rows(sweep).await? {
            let Some(stale) = &row.stale else { continue };
            let winners = serde_json::from_value::<Outcome>(row.decision.clone())
                .map(|outcome| winner_list(&outcome))
                .unwrap_or_default();
            table.push(vec![
                json!(format!("{}/{}", row.sweep, row.selection)),
                json!(group_text(&row.group)),
                json!(row.revision),
                json!(winners),
                json!(winner_list(&stale.outcome)),
                json!(stale.reason),
            ]);
        }
        Ok(table)
    }

    async fn promotion_rows(&self, sweep: Option<&str>) -> StoreResult<Vec<PromotionRow>> {
        let mut pooled = self.acquire().await?;
        let mut conn = pooled.conn();
        on_conn!(&mut conn, |c, _b| {
            let rows = sqlx::query(
                "SELECT sweep, selection, group_key, decision, revision, stale, created_at, \
                     COALESCE(decided_at, created_at) AS decided_at FROM promotions \
                 WHERE ($1 IS NULL OR sweep = $1) \
                 ORDER BY sweep, created_at, selection, group_key",
            )
            .bind(sweep)
            .fetch_all(&mut *c)
            .await
            .context("cannot read promotions")?;
            rows.iter()
                .map(|row| -> Result<PromotionRow, sqlx::Error> {
                    let stale = row
                        .try_get::<Option<Json<Value>>, _>("stale")?
                        .map(|Json(stale)| serde_json::from_value(stale))
                        .transpose()
                        .map_err(|e| sqlx::Error::ColumnDecode {
                            index: "stale".into(),
                            source: e.into(),
                        })?;
                    Ok(PromotionRow {
                        sweep: row.try_get("sweep")?,
                        selection: row.try_get("selection")?,
                        group: decode_group(row.try_get("group_key")?)?,
                        decision: row.try_get::<Json<Value>, _>("decision")?.0,
                        revision: row.try_get("revision")?,
                        stale,
                        created_at: row.try_get("created_at")?,
                        decided_at: row.try_get("decided_at")?,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .context("cannot read promotions")
        })
    }

    /// The decisions of a sweep that later revisions replaced, in the order they were.
    pub async fn superseded_promotions(
        &self,
        sweep: &str,
    ) -> StoreResult<Vec<SupersededPromotion>> {
        let mut pooled = self.acquire().await?;
        let mut conn = pooled.conn();
        on_conn!(&mut conn, |c, _b| {
            let rows = sqlx::query(
                "SELECT sweep, selection, group_key, revision, decision, decided_at, \
                     superseded_at, reason, removed_jobs FROM superseded_promotions \
                 WHERE sweep = $1 ORDER BY superseded_at, selection, group_key, revision",
            )
            .bind(sweep)
            .fetch_all(&mut *c)
            .await
            .context("cannot read superseded decisions")?;
            rows.iter()
                .map(|row| -> Result<SupersededPromotion, sqlx::Error> {
                    Ok(SupersededPromotion {
                        sweep: row.try_get("sweep")?,
                        selection: row.try_get("selection")?,
                        group: decode_group(row.try_get("group_key")?)?,
                        revision: row.try_get("revision")?,
                        decision: row.try_get::<Json<Value>, _>("decision")?.0,
                        decided_at: row.try_get("decided_at")?,
                        superseded_at: row.try_get("superseded_at")?,
                        reason: row.try_get("reason")?,
                        removed_jobs: row.try_get::<Json<Value>, _>("removed_jobs")?.0,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .context("cannot read superseded decisions")
        })
    }

    /// Every registered worker, newest first, with the job each one runs.
    pub async fn workers(&self) -> StoreResult<Vec<WorkerRow>> {
        let mut pooled = self.acquire().await?;
        let mut conn = pooled.conn();
        on_conn!(&mut conn, |c, b| {
            let sql = format!(
                "SELECT w.id, w.name, w.host, w.pid, w.device, w.started_at, w.last_seen_at, \
                     w.stopped_at, {since} AS since, \
                     (SELECT j.id FROM jobs j WHERE j.worker = w.id AND j.state = 'running' \
                      LIMIT 1) AS job \
                 FROM workers w ORDER BY w.started_at DESC, w.id",
                since = b.seconds_since("w.last_seen_at")
            );
            let rows = sqlx::query(&sql)
                .fetch_all(&mut *c)
                .await
                .context("cannot read the workers")?;
            rows.iter()
                .map(|row| -> Result<WorkerRow, sqlx::Error> {
                    Ok(WorkerRow {
                        id: row.try_get("id")?,
                        name: row.try_get("name")?,
                        host: row.try_get("host")?,
                        pid: row.try_get("pid")?,
                        device: row.try_get("device")?,
                        started_at: row.try_get("started_at")?,
                        last_seen_at: row.try_get("last_seen_at")?,
                        stopped_at: row.try_get("stopped_at")?,
                        seconds_since_seen: row.try_get("since")?,
                        job: row.try_get::<Option<Id>, _>("job")?.map(|id| id.0),
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .context("cannot read the workers")
        })
    }

    /// Job counts per sweep, stage and state (of one sweep, or all).
    pub async fn stage_counts(&self, sweep: Option<&str>) -> StoreResult<Vec<StageCount>> {
        let mut pooled = self.acquire().await?;
        let mut conn = pooled.conn();
        on_conn!(&mut conn, |c, b| {
            let sql = format!(
                "SELECT sweep, stage, state, COUNT(*) AS n, AVG({run}) AS mean_seconds \
                 FROM jobs WHERE ($1 IS NULL OR sweep = $1) \
                 GROUP BY sweep, stage, state ORDER BY sweep, MIN(created_at), state",
                run = b.seconds_between("started_at", "finished_at"),
            );
            let rows = sqlx::query(&sql)
                .bind(sweep)
                .fetch_all(&mut *c)
                .await
                .context("cannot count jobs")?;
            rows.iter()
                .map(|row| -> Result<StageCount, sqlx::Error> {
                    let state: String = row.try_get("state")?;
                    Ok(StageCount {
                        sweep: row.try_get("sweep")?,
                        stage: row.try_get("stage")?,
                        state: parse_state(&state)?,
                        count: row.try_get("n")?,
                        mean_seconds: row.try_get("mean_seconds")?,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .context("cannot count jobs")
        })
    }

    /// Running jobs (of one sweep, or all) with their worker, step and lease.
    pub async fn running(&self, sweep: Option<&str>) -> StoreResult<Vec<RunningRow>> {
        let mut pooled = self.acquire().await?;
        let mut conn = pooled.conn();
        on_conn!(&mut conn, |c, b| {
            let sql = format!(
                "SELECT j.id, j.sweep, j.stage, j.attempt, COALESCE(w.name, j.worker) AS worker, \
                     j.progress_step, j.progress, {progress_age} AS progress_age, \
                     j.cancel_requested, {running} AS running, \
                     {beat} AS beat, -{lease} AS lease_left \
                 FROM jobs j LEFT JOIN workers w ON w.id = j.worker \
                 WHERE j.state = 'running' AND ($1 IS NULL OR j.sweep = $1) ORDER BY j.id",
                running = b.seconds_since("j.started_at"),
                beat = b.seconds_since("j.heartbeat_at"),
                lease = b.seconds_since("j.lease_expires_at"),
                progress_age = b.seconds_since("j.progress_at"),
            );
            let rows = sqlx::query(&sql)
                .bind(sweep)
                .fetch_all(&mut *c)
                .await
                .context("cannot read running jobs")?;
            rows.iter()
                .map(|row| -> Result<RunningRow, sqlx::Error> {
                    Ok(RunningRow {
                        id: row.try_get::<Id, _>("id")?.0,
                        sweep: row.try_get("sweep")?,
                        stage: row.try_get("stage")?,
                        attempt: row.try_get("attempt")?,
                        worker: row.try_get("worker")?,
                        step: row.try_get("progress_step")?,
                        epoch: row
                            .try_get::<Option<Json<EpochSummary>>, _>("progress")?
                            .map(|epoch| epoch.0),
                        epoch_age_seconds: row.try_get("progress_age")?,
                        running_seconds: row.try_get::<Option<f64>, _>("running")?.unwrap_or(0.0),
                        heartbeat_age_seconds: row
                            .try_get::<Option<f64>, _>("beat")?
                            .unwrap_or(0.0),
                        lease_left_seconds: row
                            .try_get::<Option<f64>, _>("lease_left")?
                            .unwrap_or(0.0),
                        cancel_requested: row.try_get("cancel_requested")?,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .context("cannot read running jobs")
        })
    }

    /// Jobs that are queued or running, in every sweep: zero means no work can appear
    /// any more (stage promotion only follows a running job's end).
    pub async fn active_jobs(&self) -> StoreResult<i64> {
        let mut pooled = self.acquire().await?;
        let mut conn = pooled.conn();
        on_conn!(&mut conn, |c, _b| {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running', 'paused')",
            )
            .fetch_one(&mut *c)
            .await
            .context("cannot count active jobs")
        })
    }

    /// The database's clock: the one every lease is measured on. A worker compares
    /// it with its own only to say how far apart they are.
    pub async fn database_now(&self) -> StoreResult<DateTime<Utc>> {
        let mut pooled = self.acquire().await?;
        let mut conn = pooled.conn();
        let seconds: f64 = on_conn!(&mut conn, |c, b| {
            let sql = match b {
                super::Backend::Sqlite => "SELECT (julianday('now') - 2440587.5) * 86400.0",
                super::Backend::Postgres => "SELECT EXTRACT(EPOCH FROM now())::float8",
            };
            sqlx::query_scalar(sql)
                .fetch_one(&mut *c)
                .await
                .context("cannot read the database's clock")?
        });
        let micros = (seconds * 1e6).round() as i64;
        Ok(DateTime::from_timestamp_micros(micros).unwrap_or_default())
    }
}

fn parse_state(text: &str) -> Result<JobState, sqlx::Error> {
    JobState::parse(text).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: "state".into(),
        source: format!("unknown job state {text:?}").into(),
    })
}

fn decode_job<R>(row: &R) -> Result<JobRow, sqlx::Error>
where
    R: sqlx::Row,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Id: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<Id>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Json<Params>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<Json<Value>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<Json<Halted>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> DateTime<Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<DateTime<Utc>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
{
    let state: String = row.try_get("state")?;
    Ok(JobRow {
        id: row.try_get::<Id, _>("id")?.0,
        sweep: row.try_get("sweep")?,
        stage: row.try_get("stage")?,
        kind: super::parse_kind(&row.try_get::<String, _>("kind")?)?,
        key: row.try_get("key")?,
        params: row.try_get::<Json<Params>, _>("params")?.0,
        state: parse_state(&state)?,
        priority: row.try_get("priority")?,
        attempt: row.try_get("attempt")?,
        max_attempts: row.try_get("max_attempts")?,
        free_attempts: row.try_get("free_attempts")?,
        cancel_requested: row.try_get("cancel_requested")?,
        worker: row.try_get("worker")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        heartbeat_at: row.try_get("heartbeat_at")?,
        progress_step: row.try_get("progress_step")?,
        error_kind: row
            .try_get::<Option<String>, _>("error_kind")?
            .map(|kind| {
                kind.parse::<FailureKind>()
                    .map_err(|error| sqlx::Error::ColumnDecode {
                        index: "error_kind".into(),
                        source: error.into(),
                    })
            })
            .transpose()?,
        error_message: row.try_get("error_message")?,
        result: row
            .try_get::<Option<Json<Value>>, _>("result")?
            .map(|json| json.0),
        checkpoint: row.try_get("checkpoint")?,
        parent_job_id: row
            .try_get::<Option<Id>, _>("parent_job_id")?
            .map(|id| id.0),
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
        halted: row
            .try_get::<Option<Json<Halted>>, _>("halted")?
            .map(|json| json.0),
    })
}

fn decode_metric<R>(row: &R) -> Result<MetricRow, sqlx::Error>
where
    R: sqlx::Row,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i32: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> f64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Id: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> DateTime<Utc>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
{
    Ok(MetricRow {
        job_id: row.try_get::<Id, _>("job_id")?.0,
        attempt: row.try_get("attempt")?,
        step: row.try_get("step")?,
        name: row.try_get("name")?,
        value: row.try_get("value")?,
        recorded_at: row.try_get("recorded_at")?,
    })
}

/// A stored group key (canonical JSON) as parameters.
fn decode_group(key: String) -> Result<Params, sqlx::Error> {
    serde_json::from_str(&key).map_err(|e| sqlx::Error::ColumnDecode {
        index: "group_key".into(),
        source: e.into(),
    })
}

/// `backbone = resnet50`, or `all` for a selection without `per`.
fn group_text(group: &Params) -> String {
    if group.is_empty() {
        return "all".to_owned();
    }
    let parts: Vec<String> = group
        .iter()
        .map(|(name, value)| match value {
            Value::String(text) => format!("{name} = {text}"),
            other => format!("{name} = {other}"),
        })
        .collect();
    parts.join(", ")
}

/// `0190… (loss = 1.5), 0190… (loss = 2)`: each winner's id and the values it was
/// ranked on.
fn winner_list(outcome: &Outcome) -> String {
    let parts: Vec<String> = outcome
        .winners
        .iter()
        .map(|winner| {
            let values: Vec<String> = outcome
                .ranked
                .iter()
                .find(|c| c.job_id == winner.job_id)
                .map(|c| {
                    c.values
                        .iter()
                        .map(|(field, value)| format!("{field} = {value}"))
                        .collect()
                })
                .unwrap_or_default();
            if values.is_empty() {
                winner.job_id.to_string()
            } else {
                format!("{} ({})", winner.job_id, values.join(", "))
            }
        })
        .collect();
    parts.join(", ")
}
