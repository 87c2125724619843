//! The queue's writes: submit, claim, heartbeat, fenced writes, finish, release, the
//! reaper, cancel, retry and worker registration. Stage promotion, which the writes
//! that end a job run in their transaction, lives in [`super::promotion`].
//!
//! Long because claims, fencing and versions share one transaction helper; submit
//! (with sweep versions) and worker registration are the seams to split next.

use std::time::Duration;

use serde_json::Value;
use sqlx::types::Json;
use sqlx::Row as _;
use uuid::Uuid;

use super::error::Context as _;
use super::{
    on_conn, parse_kind, Backend, Blame, CancelSummary, ClaimedJob, Conn, EarlierMetric, Finish,
    Id, JobFilter, JobState, Lease, MetricPoint, Store, StoreError, StoreResult, SubmitSummary,
    WorkerInfo, Write,
};
use crate::progress::EpochSummary;
use crate::provenance::Provenance;
use crate::sweep::{version, JobSpec, Params, Spec};

impl Store {
    /// Stores the sweep (its text, hash and checked spec) and adds the jobs whose key
    /// is new; jobs already stored are kept as they are.
    pub async fn submit(
        &self,
        spec: &Spec,
        text: &str,
        hash: &str,
        jobs: &[JobSpec],
    ) -> StoreResult<SubmitSummary> {
        self.submit_version(spec, text, hash, jobs, false).await
    }

    /// Stores a version of the sweep and adds its missing jobs. A file that only
    /// extends the stored version (or repeats it) is accepted; one that changes
    /// stored cells is refused with the changes unless `new_version` is set.
    pub async fn submit_version(
        &self,
        spec: &Spec,
        text: &str,
        hash: &str,
        jobs: &[JobSpec],
        new_version: bool,
    ) -> StoreResult<SubmitSummary> {
        let mut tx = self.write_tx().await?;
        let mut conn = tx.conn();
        let stored = conn.sweep_head(&spec.name).await?;
        // The grid the members were built from is only unchanged by an identical file.
        let (version, grid_changed) = match stored {
            None => {
                conn.upsert_sweep(spec, text, hash, 1).await?;
                conn.insert_version(spec, text, hash, 1, &[]).await?;
                (1, true)
            }
            Some((version, stored_hash, stored_spec)) => {
                let changes = version::changes(&stored_spec, spec);
                if !changes.is_empty() && !new_version {
                    return Err(StoreError::SpecChanged {
                        sweep: spec.name.clone(),
                        version,
                        changes,
                    });
                }
                if stored_hash == hash && stored_spec == *spec && !new_version {
                    (version, false)
                } else {
                    conn.upsert_sweep(spec, text, hash, version + 1).await?;
                    conn.insert_version(spec, text, hash, version + 1, &changes)
                        .await?;
                    (version + 1, true)
                }
            }
        };
        let added = conn.insert_jobs(spec, version, jobs).await?;
        if grid_changed {
            conn.index_members(spec).await?;
        } else {
            conn.ensure_members(spec).await?;
        }
        tx.commit().await?;
        Ok(SubmitSummary {
            version,
            added,
            kept: jobs.len() as u64 - added,
        })
    }

    /// Records a job run elsewhere as succeeded with `result` (for `import`), so that
    /// submit never runs it. A stored job of the same key that is queued, failed or
    /// cancelled becomes succeeded; a running or succeeded one is left alone (false).
    pub async fn insert_succeeded(
        &self,
        sweep: &str,
        job: &JobSpec,
        result: Value,
        provenance: &Provenance,
    ) -> StoreResult<bool> {
        let mut tx = self.write_tx().await?;
        let mut conn = tx.conn();
        let Some(spec) = conn.sweep_spec(sweep).await? else {
            return Err(StoreError::UnknownSweep {
                name: sweep.to_owned(),
            });
        };
        let written = on_conn!(&mut conn, |c, b| {
            let sql = format!(
                "INSERT INTO jobs (id, sweep, stage, kind, key, params, priority, max_attempts, \
                                   state, result, finished_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'succeeded', $9, {now}) \
                 ON CONFLICT (sweep, key) DO UPDATE SET state = 'succeeded', \
                     result = excluded.result, finished_at = excluded.finished_at, \
                     error_kind = NULL, error_message = NULL, updated_at = {now} \
                 WHERE jobs.state IN ('queued', 'failed', 'cancelled') \
                 RETURNING id",
                now = b.now()
            );
            sqlx::query(&sql)
                .bind(Id(Uuid::now_v7()))
                .bind(sweep)
                .bind(&job.stage)
                .bind(job.kind.as_str())
                .bind(&job.key)
                .bind(Json(&job.params))
                .bind(job.priority)
                .bind(job.max_attempts)
                .bind(Json(&result))
                .fetch_optional(&mut *c)
                .await
                .context("cannot record an imported job")?
                .map(|row| row.try_get::<Id, _>("id"))
                .transpose()
                .context("cannot record an imported job")?
        });
        if let Some(id) = &written {
            on_conn!(&mut conn, |c, _b| {
                sqlx::query(
                    "INSERT INTO attempts (job_id, attempt, provenance) \
                     SELECT id, attempt, $2 FROM jobs WHERE id = $1 \
                     ON CONFLICT (job_id, attempt) DO UPDATE SET provenance = excluded.provenance",
                )
                .bind(*id)
                .bind(Json(provenance))
                .execute(&mut *c)
                .await
                .context("cannot record an imported job's provenance")?;
            });
        }
        let written = written.is_some();
        if written {
            conn.ensure_members(&spec).await?;
            conn.add_member(&spec, job).await?;
            conn.promote(sweep, &job.stage, &job.params).await?;
        }
        tx.commit().await?;
        Ok(written)
    }

    /// Claims the next queued job for `worker`, holding it for `lease`.
    pub async fn claim(&self, worker: &str, lease: Duration) -> StoreResult<Option<ClaimedJob>> {
        let mut pooled = self.acquire().await?;
        let mut conn = pooled.conn();
        on_conn!(&mut conn, |c, b| {
            let set = format!(
                "state = 'running', attempt = attempt + 1, worker = $1, \
                 lease_expires_at = {lease}, heartbeat_at = {now}, started_at = {now}, \
                 finished_at = NULL, progress_step = NULL, progress = NULL, progress_at = NULL, \
                 updated_at = {now}",
                lease = b.now_plus("$2"),
                now = b.now()
            );
            let returning = match b {
                Backend::Sqlite => {
                    "id, sweep, stage, kind, key, params, attempt, parent_job_id, halt_at"
                }
                Backend::Postgres => {
                    "jobs.id, jobs.sweep, jobs.stage, jobs.kind, jobs.key, jobs.params, \
                     jobs.attempt, jobs.parent_job_id, jobs.halt_at"
                }
            };
            let sql = match b {
                // One autocommit statement: SQLite takes the write lock when it starts, so
                // no other claim can read the same row in between.
                Backend::Sqlite => format!(
                    "UPDATE jobs SET {set} \
                     WHERE state = 'queued' AND id = (SELECT id FROM jobs \
                         WHERE state = 'queued' AND run_after <= {now} \
                         ORDER BY priority DESC, id LIMIT 1) \
                     RETURNING {returning}",
                    now = b.now()
                ),
                // The CTE keeps the LIMIT honest; SKIP LOCKED lets claims run side by side.
                Backend::Postgres => format!(
                    "WITH next AS (SELECT id FROM jobs \
                         WHERE state = 'queued' AND run_after <= now() \
                         ORDER BY priority DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                     UPDATE jobs SET {set} FROM next WHERE jobs.id = next.id \
                     RETURNING {returning}"
                ),
            };
            let row = sqlx::query(&sql)
                .bind(worker)
                .bind(lease.as_secs_f64())
                .fetch_optional(&mut *c)
                .await
                .context("cannot claim a job")?;
            let Some(row) = row else { return Ok(None) };
            let decode = || -> Result<ClaimedJob, sqlx::Error> {
                Ok(ClaimedJob {
                    id: row.try_get::<Id, _>("id")?.0,
                    sweep: row.try_get("sweep")?,
                    stage: row.try_get("stage")?,
                    kind: parse_kind(row.try_get("kind")?)?,
                    key: row.try_get("key")?,
                    params: row.try_get::<Json<Params>, _>("params")?.0,
                    attempt: row.try_get("attempt")?,
                    parent_job_id: row
                        .try_get::<Option<Id>, _>("parent_job_id")?
                        .map(|id| id.0),
                    halt_at: row.try_get("halt_at")?,
                })
            };
            Ok(Some(decode().context("cannot read a claimed job")?))
        })
    }

    /// Renews the lease of `(job, attempt)` for `lease` and records its progress: the
    /// step, and the epoch that ended since the last heartbeat, if one did.
    pub async fn heartbeat(
        &self,
        job: Uuid,
        attempt: i32,
        lease: Duration,
        step: Option<i64>,
        epoch: Option<&EpochSummary>,
    ) -> StoreResult<Lease> {
        let mut pooled = self.acquire().await?;
        let mut conn = pooled.conn();
        on_conn!(&mut conn, |c, b| {
            let sql = format!(
                "UPDATE jobs SET heartbeat_at = {now}, lease_expires_at = {lease}, \
                     progress_step = COALESCE($4, progress_step), \
                     progress = COALESCE($5, progress), \
                     progress_at = CASE WHEN $5 IS NULL THEN progress_at ELSE {now} END, \
                     updated_at = {now} \
                 WHERE id = $1 AND attempt = $2 AND state = 'running' \
                 RETURNING cancel_requested",
                now = b.now(),
                lease = b.now_plus("$3"),
            );
            let cancel: Option<bool> = sqlx::query_scalar(&sql)
                .bind(Id(job))
                .bind(attempt)
                .bind(lease.as_secs_f64())
                .bind(step)
                .bind(epoch.map(Json))
                .fetch_optional(&mut *c)
                .await
                .context("cannot renew a lease")?;
            Ok(match cancel {
                Some(cancel) => Lease::Held { cancel },
                None => Lease::Lost,
            })
        })
    }

    /// Stores metric values of `(job, attempt)`, all or none.
    pub async fn record_metrics(
        &self,
        job: Uuid,
        attempt: i32,
        points: &[MetricPoint],
    ) -> StoreResult<Write> {
        if points.is_empty() {
            return Ok(Write::Applied);
        }
        let mut tx = self.write_tx().await?;
        let mut conn = tx.conn();
        if !conn.holds(job, attempt).await? {
            return Ok(Write::Superseded);
        }
        on_conn!(&mut conn, |c, b| {
            let sql = format!(
                "INSERT INTO metrics (job_id, attempt, step, name, value, recorded_at) \
                 VALUES ($1, $2, $3, $4, $5, {now})",
                now = b.now()
            );
            for point in points {
                sqlx::query(&sql)
                    .bind(Id(job))
                    .bind(attempt)
                    .bind(point.step)
                    .bind(&point.name)
                    .bind(point.value)
                    .execute(&mut *c)
                    .await
                    .context("cannot record a metric")?;
            }
        });
        tx.commit().await?;
        Ok(Write::Applied)
    }

    /// Records what runs `(job, attempt)`: code, libtorch, device, host, data. Written
    /// when the attempt starts; a second write for the same attempt replaces it.
    pub async fn record_provenance(
        &self,
        job: Uuid,
        attempt: i32,
        provenance: &Provenance,
    ) -> StoreResult<()> {
        let mut pooled = self.acquire().await?;
        let mut conn = pooled.conn();
        on_conn!(&mut conn, |c, _b| {
            sqlx::query(
                "INSERT INTO attempts (job_id, attempt, provenance) VALUES ($1, $2, $3) \
                 ON CONFLICT (job_id, attempt) DO UPDATE SET provenance = excluded.provenance",
            )
            .bind(Id(job))
            .bind(attempt)
            .bind(Json(provenance))
            .execute(&mut *c)
            .await
            .context("cannot record an attempt's provenance")?;
        });
        Ok(())
    }

    /// Stores, for the holder of `(job, attempt)`, the values of earlier attempts
    /// that the job's metrics lack (no value at that step and name in any attempt),
    /// under the attempt that measured them; all or none.
    pub async fn restore_metrics(
        &self,
        job: Uuid,
        attempt: i32,
        earlier: &[EarlierMetric],
    ) -> StoreResult<Write> {
        if earlier.is_empty() {
            return Ok(Write::Applied);
        }
        let mut tx = self.write_tx().await?;
        let mut conn = tx.conn();
        if !conn.holds(job, attempt).await? {
            return Ok(Write::Superseded);
        }
        on_conn!(&mut conn, |c, b| {
            let sql = format!(
                "INSERT INTO metrics (job_id, attempt, step, name, value, recorded_at) \
                 SELECT $1, $2, $3, $4, $5, {now} WHERE NOT EXISTS \
                     (SELECT 1 FROM metrics WHERE job_id = $1 AND step = $3 AND name = $4)",
                now = b.now()
            );
            for metric in earlier {
                sqlx::query(&sql)
                    .bind(Id(job))
                    .bind(metric.attempt)
                    .bind(metric.point.step)
                    .bind(&metric.point.name)
                    .bind(metric.point.value)
                    .execute(&mut *c)
                    .await
                    .context("cannot restore a metric")?;
            }
        });
        tx.commit().await?;
        Ok(Write::Applied)
    }

    /// Records the newest checkpoint of `(job, attempt)`.
    pub async fn set_checkpoint(&self, job: Uuid, attempt: i32, path: &str) -> StoreResult<Write> {
        let mut pooled = self.acquire().await?;
        let mut conn = pooled.conn();
        on_conn!(&mut conn, |c, b| {
            let sql = format!(
                "UPDATE jobs SET checkpoint = $3, updated_at = {now} \
                 WHERE id = $1 AND attempt = $2 AND state = 'running'",
                now = b.now()
            );
            let done = sqlx::query(&sql)
                .bind(Id(job))
                .bind(attempt)
                .bind(path)
                .execute(&mut *c)
                .await
                .context("cannot record a checkpoint")?;
            Ok(applied(done.rows_affected()))
        })
    }

    /// Ends `(job, attempt)`: succeeded, failed (back to the queue after `backoff` when
    /// retryable and attempts remain) or cancelled. A job whose cancel was requested
    /// ends cancelled whatever the attempt reports, unless it succeeded. Promotes the
    /// stage's winners in the same transaction. `None` when the attempt was superseded.
    pub async fn finish(
        &self,
        job: Uuid,
        attempt: i32,
        finish: &Finish,
        backoff: Duration,
    ) -> StoreResult<Option<JobState>> {
        let mut tx = self.write_tx().await?;
        let mut conn = tx.conn();
        let ended = on_conn!(&mut conn, |c, b| {
            let now = b.now();
            let fence = "WHERE id = $1 AND attempt = $2 AND state = 'running' \
                         RETURNING sweep, stage, params, state";
            let sql = match finish {
                Finish::Succeeded(_) => format!(
                    "UPDATE jobs SET state = 'succeeded', result = $3, error_kind = NULL, \
                         error_message = NULL, lease_expires_at = NULL, finished_at = {now}, \
                         updated_at = {now} {fence}"
                ),
                // An infrastructure failure ($7) goes back to the queue whatever the
                // attempts, and the attempt it spent is given back.
                Finish::Failed(_) => format!(
                    "UPDATE jobs SET state = CASE WHEN cancel_requested THEN 'cancelled' \
                             WHEN $7 THEN 'queued' \
                             WHEN $5 AND attempt - free_attempts < max_attempts THEN 'queued' \
                             ELSE 'failed' END, \
                         free_attempts = free_attempts + CASE WHEN $7 THEN 1 ELSE 0 END, \
                         error_kind = $3, error_message = $4, run_after = {later}, \
                         lease_expires_at = NULL, finished_at = {now}, updated_at = {now} \
                     {fence}",
                    later = b.now_plus("$6")
                ),
                Finish::Cancelled => format!(
                    "UPDATE jobs SET state = 'cancelled', error_kind = 'cancelled', \
                         error_message = 'cancelled on request', lease_expires_at = NULL, \
                         finished_at = {now}, updated_at = {now} {fence}"
                ),
                // A pause at a rung spends no attempt: the next one resumes the run.
                Finish::AtRung { .. } => format!(
                    "UPDATE jobs SET state = CASE WHEN cancel_requested THEN 'cancelled' \
                             ELSE 'paused' END, \
                         free_attempts = free_attempts + 1, lease_expires_at = NULL, \
                         updated_at = {now} {fence}"
                ),
            };
            let query = sqlx::query(&sql).bind(Id(job)).bind(attempt);
            let query = match finish {
                Finish::Succeeded(result) => query.bind(Json(result)),
                Finish::Failed(failure) => query
                    .bind(failure.kind.as_str())
                    .bind(&failure.message)
                    .bind(failure.retryable())
                    .bind(backoff.as_secs_f64())
                    .bind(failure.blame == Blame::Infrastructure),
                Finish::Cancelled | Finish::AtRung { .. } => query,
            };
            let row = query
                .fetch_optional(&mut *c)
                .await
                .context("cannot finish a job")?;
            row.map(|row| decode_ended(&row))
                .transpose()
                .context("cannot read a finished job")?
        });
        let Some(ended) = ended else { return Ok(None) };
        if let (Finish::AtRung { epoch }, JobState::Paused) = (finish, ended.state) {
            conn.pause_at_rung(job, &ended.sweep, &ended.stage, *epoch)
                .await?;
        }
        if ended.state.is_terminal() || ended.state == JobState::Paused {
            conn.promote(&ended.sweep, &ended.stage, &ended.params)
                .await?;
        }
        tx.commit().await?;
        Ok(Some(ended.state))
    }

    /// Gives `(job, attempt)` back to the queue at once (a worker shutting down); the
    /// attempt does not count against `max_attempts`.
    pub async fn release(&self, job: Uuid, attempt: i32) -> StoreResult<Write> {
        let mut tx = self.write_tx().await?;
        let mut conn = tx.conn();
        let ended = on_conn!(&mut conn, |c, b| {
            let sql = format!(
                "UPDATE jobs SET state = CASE WHEN cancel_requested THEN 'cancelled' \
                         ELSE 'queued' END, \
                     free_attempts = free_attempts + 1, worker = NULL, lease_expires_at = NULL, \
                     run_after = {now}, updated_at = {now} \
                 WHERE id = $1 AND attempt = $2 AND state = 'running' \
                 RETURNING sweep, stage, params, state",
                now = b.now()
            );
            let row = sqlx::query(&sql)
                .bind(Id(job))
                .bind(attempt)
                .fetch_optional(&mut *c)
                .await
                .context("cannot release a job")?;
            row.map(|row| decode_ended(&row))
                .transpose()
                .context("cannot read a released job")?
        });
        let Some(ended) = ended else {
            return Ok(Write::Superseded);
        };
        if ended.state.is_terminal() {
            conn.promote(&ended.sweep, &ended.stage, &ended.params)
                .await?;
        }
        tx.commit().await?;
        Ok(Write::Applied)
    }

    /// Requeues running jobs whose lease expired while attempts remain, fails the
    /// others ("lease expired"), cancels those whose cancel was requested. Returns the
    /// jobs changed and their new state.
    pub async fn reap(&self) -> StoreResult<Vec<(Uuid, JobState)>> {
        // A cheap read first: most calls find nothing, and on SQLite a write
        // transaction would take the database's only write lock for nothing.
        {
            let mut pooled = self.acquire().await?;
            let mut conn = pooled.conn();
            let expired: bool = on_conn!(&mut conn, |c, b| {
                let sql = format!(
                    "SELECT EXISTS (SELECT 1 FROM jobs WHERE state = 'running' \
                         AND lease_expires_at < {now})",
                    now = b.now()
                );
                sqlx::query_scalar(&sql)
                    .fetch_one(&mut *c)
                    .await
                    .context("cannot look for expired leases")?
            });
            if !expired {
                return Ok(Vec::new());
            }
        }
        let mut tx = self.write_tx().await?;
        let mut conn = tx.conn();
        let reaped = on_conn!(&mut conn, |c, b| {
            let sql = format!(
                "UPDATE jobs SET \
                     state = CASE WHEN cancel_requested THEN 'cancelled' \
                         WHEN attempt - free_attempts < max_attempts THEN 'queued' \
                         ELSE 'failed' END, \
                     error_kind = CASE WHEN cancel_requested THEN 'cancelled' \
                         ELSE 'lease expired' END, \
                     error_message = 'the lease of attempt ' || attempt || ' held by worker ' \
                         || COALESCE(worker, '?') || ' expired', \
                     lease_expires_at = NULL, finished_at = {now}, updated_at = {now} \
                 WHERE state = 'running' AND lease_expires_at < {now} \
                 RETURNING id, sweep, stage, params, state",
                now = b.now()
            );
            let rows = sqlx::query(&sql)
                .fetch_all(&mut *c)
                .await
                .context("cannot requeue jobs with expired leases")?;
            rows.iter()
                .map(|row| Ok((row.try_get::<Id, _>("id")?.0, decode_ended(row)?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .context("cannot read reaped jobs")?
        });
        for (_, ended) in &reaped {
            if ended.state.is_terminal() {
                conn.promote(&ended.sweep, &ended.stage, &ended.params)
                    .await?;
            }
        }
        tx.commit().await?;
        for (id, ended) in &reaped {
            tracing::warn!(job = %id, state = %ended.state, "lease expired");
        }
        Ok(reaped
            .into_iter()
            .map(|(id, ended)| (id, ended.state))
            .collect())
    }

    /// Cancels queued and paused jobs at once and asks the workers of running ones to stop them.
    pub async fn cancel(&self, filter: &JobFilter) -> StoreResult<CancelSummary> {
        let mut tx = self.write_tx().await?;
        let mut conn = tx.conn();
        conn.check_ids(&filter.ids).await?;
        let mut summary = CancelSummary::default();
        let mut ended = Vec::new();
        for id in filter_ids(filter) {
            on_conn!(&mut conn, |c, b| {
                let sql = format!(
                    "UPDATE jobs SET state = 'cancelled', error_kind = 'cancelled', \
                         error_message = 'cancelled on request', finished_at = {now}, \
                         updated_at = {now} \
                     WHERE state IN ('queued', 'paused') AND {filter} \
                     RETURNING sweep, stage, params, state",
                    now = b.now(),
                    filter = FILTER_SQL
                );
                let rows = bind_filter(sqlx::query(&sql), id, filter)
                    .fetch_all(&mut *c)
                    .await
                    .context("cannot cancel jobs")?;
                for row in &rows {
                    ended.push(decode_ended(row).context("cannot read a cancelled job")?);
                }
                summary.cancelled += rows.len() as u64;
                let sql = format!(
                    "UPDATE jobs SET cancel_requested = TRUE, updated_at = {now} \
                     WHERE state = 'running' AND NOT cancel_requested AND {filter}",
                    now = b.now(),
                    filter = FILTER_SQL
                );
                let done = bind_filter(sqlx::query(&sql), id, filter)
                    .execute(&mut *c)
                    .await
                    .context("cannot cancel running jobs")?;
                summary.stopping += done.rows_affected();
            });
        }
        for job in &ended {
            conn.promote(&job.sweep, &job.stage, &job.params).await?;
        }
        tx.commit().await?;
        Ok(summary)
    }

    /// Puts failed and cancelled jobs back in the queue with a fresh set of attempts.
    /// A filter on another state matches nothing.
    pub async fn retry(&self, filter: &JobFilter) -> StoreResult<u64> {
        let mut tx = self.write_tx().await?;
        let mut conn = tx.conn();
        conn.check_ids(&filter.ids).await?;
        let mut retried = 0;
        for id in filter_ids(filter) {
            retried += on_conn!(&mut conn, |c, b| {
                let sql = format!(
                    "UPDATE jobs SET state = 'queued', free_attempts = attempt, \
                         cancel_requested = FALSE, run_after = {now}, worker = NULL, \
                         lease_expires_at = NULL, finished_at = NULL, error_kind = NULL, \
                         error_message = NULL, updated_at = {now} \
                     WHERE state IN ('failed', 'cancelled') AND {filter}",
                    now = b.now(),
                    filter = FILTER_SQL
                );
                bind_filter(sqlx::query(&sql), id, filter)
                    .execute(&mut *c)
                    .await
                    .context("cannot retry jobs")?
                    .rows_affected()
            });
        }
        tx.commit().await?;
        Ok(retried)
    }

    /// Sends stopped jobs (those a rung of successive halving ended) on from their
    /// checkpoints to the full epoch count, past every rung; their selections decide
    /// again once they finish. A filter on another state matches nothing.
    pub async fn resume(&self, filter: &JobFilter) -> StoreResult<u64> {
        let mut tx = self.write_tx().await?;
        let mut conn = tx.conn();
        conn.check_ids(&filter.ids).await?;
        let mut resumed = 0;
        for id in filter_ids(filter) {
            resumed += on_conn!(&mut conn, |c, b| {
                let sql = format!(
                    "UPDATE jobs SET state = 'queued', halt_at = NULL, cancel_requested = FALSE, \
                         run_after = {now}, worker = NULL, lease_expires_at = NULL, \
                         finished_at = NULL, updated_at = {now} \
                     WHERE state = 'stopped' AND {filter}",
                    now = b.now(),
                    filter = FILTER_SQL
                );
                bind_filter(sqlx::query(&sql), id, filter)
                    .execute(&mut *c)
                    .await
                    .context("cannot resume jobs")?
                    .rows_affected()
            });
        }
        tx.commit().await?;
        Ok(resumed)
    }

    /// Registers a worker on `device`.
    pub async fn register_worker(&self, info: &WorkerInfo, device: &str) -> StoreResult<()> {
        let mut pooled = self.acquire().await?;
        pooled.conn().insert_worker(info, device).await
    }

    /// Registers a worker on the lowest of its host's `gpu_count` GPUs that no live
    /// worker of that host holds (seen within `live_within`), chosen by
    /// [`crate::devices::pick_auto`], else on `"cpu"`; returns the device (`cuda:N` or
    /// `cpu`). The choice and the registration are one transaction, serialised per
    /// host, so two workers starting together never take the same GPU.
    pub async fn register_worker_auto(
        &self,
        info: &WorkerInfo,
        gpu_count: i64,
        live_within: Duration,
    ) -> StoreResult<String> {
        let mut tx = self.write_tx().await?;
        let mut conn = tx.conn();
        let held: Vec<String> = on_conn!(&mut conn, |c, b| {
            if b == Backend::Postgres {
                // Two workers starting together on one host must not pick the same GPU.
                sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                    .bind(format!("sweeper devices {}", info.host))
                    .execute(&mut *c)
                    .await
                    .context("cannot lock the host's devices")?;
            }
            let sql = format!(
                "SELECT device FROM workers WHERE host = $1 AND stopped_at IS NULL \
                     AND {since} < $2",
                since = b.seconds_since("last_seen_at")
            );
            sqlx::query_scalar(&sql)
                .bind(&info.host)
                .bind(live_within.as_secs_f64())
                .fetch_all(&mut *c)
                .await
                .context("cannot read the devices in use")?
        });
        let held: Vec<i64> = held
            .iter()
            .filter_map(|device| device.strip_prefix("cuda:")?.parse().ok())
            .collect();
        let device = match crate::devices::pick_auto(&held, gpu_count) {
            Some(index) => format!("cuda:{index}"),
            None => "cpu".to_owned(),
        };
        conn.insert_worker(info, &device).await?;
        tx.commit().await?;
        Ok(device)
    }

    /// Marks the worker alive now.
    pub async fn touch_worker(&self, id: &str) -> StoreResult<()> {
        self.set_worker_time(id, "last_seen_at").await
    }

    /// Marks the worker stopped.
    pub async fn stop_worker(&self, id: &str) -> StoreResult<()> {
        self.set_worker_time(id, "stopped_at").await
    }

    async fn set_worker_time(&self, id: &str, column: &str) -> StoreResult<()> {
        let mut pooled = self.acquire().await?;
        let mut conn = pooled.conn();
        on_conn!(&mut conn, |c, b| {
            let sql = format!(
                "UPDATE workers SET {column} = {now} WHERE id = $1",
                now = b.now()
            );
            sqlx::query(&sql)
                .bind(id)
                .execute(&mut *c)
                .await
                .context("cannot update the workers table")?;
        });
        Ok(())
    }
}

/// Matches [`JobFilter`]: `$1` id, `$2` sweep, `$3` stage, `$4` state.
const FILTER_SQL: &str = "($1 IS NULL OR id = $1) AND ($2 IS NULL OR sweep = $2) \
                          AND ($3 IS NULL OR stage = $3) AND ($4 IS NULL OR state = $4)";

fn bind_filter<'q, DB>(
    query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    id: Option<Uuid>,
    filter: &'q JobFilter,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    DB: sqlx::Database,
    Option<Id>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    query
        .bind(id.map(Id))
        .bind(filter.sweep.as_deref())
        .bind(filter.stage.as_deref())
        .bind(filter.state.map(JobState::as_str))
}

/// The ids to run a filtered statement for: each listed id, or once for all.
fn filter_ids(filter: &JobFilter) -> Vec<Option<Uuid>> {
    if filter.ids.is_empty() {
        vec![None]
    } else {
        filter.ids.iter().copied().map(Some).collect()
    }
}

fn applied(rows: u64) -> Write {
    if rows == 0 {
        Write::Superseded
    } else {
        Write::Applied
    }
}

/// A job that changed state, with what stage promotion needs.
struct Ended {
    sweep: String,
    stage: String,
    params: Params,
    state: JobState,
}

fn decode_ended<R>(row: &R) -> Result<Ended, sqlx::Error>
where
    R: sqlx::Row,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Json<Params>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
{
    let state: String = row.try_get("state")?;
    Ok(Ended {
        sweep: row.try_get("sweep")?,
        stage: row.try_get("stage")?,
        params: row.try_get::<Json<Params>, _>("params")?.0,
        state: JobState::parse(&state).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: "state".into(),
            source: format!("unknown job state {state:?}").into(),
        })?,
    })
}

impl Conn<'_> {
    async fn upsert_sweep(
        &mut self,
        spec: &Spec,
        text: &str,
        hash: &str,
        version: i64,
    ) -> StoreResult<()> {
        on_conn!(self, |c, b| {
            let sql = format!(
                "INSERT INTO sweeps (name, spec_text, spec_hash, spec_json, version) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (name) DO UPDATE SET spec_text = excluded.spec_text, \
                     spec_hash = excluded.spec_hash, spec_json = excluded.spec_json, \
                     version = excluded.version, updated_at = {now}",
                now = b.now()
            );
            sqlx::query(&sql)
                .bind(&spec.name)
                .bind(text)
                .bind(hash)
                .bind(Json(spec))
                .bind(version as i32)
                .execute(&mut *c)
                .await
                .context("cannot store the sweep")?;
        });
        Ok(())
    }

    async fn insert_version(
        &mut self,
        spec: &Spec,
        text: &str,
        hash: &str,
        version: i64,
        changes: &[version::Change],
    ) -> StoreResult<()> {
        on_conn!(self, |c, _b| {
            sqlx::query(
                "INSERT INTO sweep_versions (sweep, version, spec_text, spec_hash, spec_json, \
                                             changes) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&spec.name)
            .bind(version as i32)
            .bind(text)
            .bind(hash)
            .bind(Json(spec))
            .bind(Json(changes))
            .execute(&mut *c)
            .await
            .context("cannot store the sweep's version")?;
        });
        Ok(())
    }

    /// The stored sweep's latest version, file hash and checked spec.
    async fn sweep_head(&mut self, sweep: &str) -> StoreResult<Option<(i64, String, Spec)>> {
        let row: Option<(i32, String, Json<Value>)> = on_conn!(self, |c, _b| {
            sqlx::query_as("SELECT version, spec_hash, spec_json FROM sweeps WHERE name = $1")
                .bind(sweep)
                .fetch_optional(&mut *c)
                .await
                .context("cannot read a sweep")?
        });
        row.map(|(version, hash, Json(value))| {
            let spec = serde_json::from_value(value).map_err(|source| StoreError::BadSpec {
                sweep: sweep.to_owned(),
                source,
            })?;
            Ok((i64::from(version), hash, spec))
        })
        .transpose()
    }

    /// Inserts a queued job unless its key is stored; true when inserted.
    pub(super) async fn insert_job(
        &mut self,
        sweep: &str,
        job: &JobSpec,
        parent: Option<Uuid>,
    ) -> StoreResult<bool> {
        on_conn!(self, |c, _b| {
            let done = sqlx::query(
                // A job belongs to the version of the sweep current when it is added
                // (a promoted job, to the version its promotion ran under).
                "INSERT INTO jobs (id, sweep, stage, kind, key, params, priority, max_attempts, \
                                   parent_job_id, spec_version) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                         (SELECT version FROM sweeps WHERE name = $2)) \
                 ON CONFLICT (sweep, key) DO NOTHING",
            )
            .bind(Id(Uuid::now_v7()))
            .bind(sweep)
            .bind(&job.stage)
            .bind(job.kind.as_str())
            .bind(&job.key)
            .bind(Json(&job.params))
            .bind(job.priority)
            .bind(job.max_attempts)
            .bind(parent.map(Id))
            .execute(&mut *c)
            .await
            .context("cannot store a job")?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Inserts the queued root jobs of `submit` whose key is not stored, in multi-row
    /// batches; returns how many were new.
    async fn insert_jobs(
        &mut self,
        spec: &Spec,
        version: i64,
        jobs: &[JobSpec],
    ) -> StoreResult<u64> {
        // 11 bound values a row: far below either backend's limit.
        const BATCH: usize = 500;
        // A job of a stage with successive halving first stops at the first rung.
        let first_rung = |stage: &str| {
            spec.stage(stage)
                .and_then(|stage| stage.halving.as_ref())
                .and_then(|rule| rule.rungs.first().copied())
        };
        let sweep = spec.name.as_str();
        let mut added = 0;
        for batch in jobs.chunks(BATCH) {
            added += on_conn!(self, |c, _b| {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO jobs (id, sweep, stage, kind, key, params, priority, \
                                       max_attempts, parent_job_id, spec_version, halt_at) ",
                );
                insert.push_values(batch, |mut row, job| {
                    row.push_bind(Id(Uuid::now_v7()))
                        .push_bind(sweep)
                        .push_bind(&job.stage)
                        .push_bind(job.kind.as_str())
                        .push_bind(&job.key)
                        .push_bind(Json(&job.params))
                        .push_bind(job.priority)
                        .push_bind(job.max_attempts)
                        .push_bind(None::<Id>)
                        .push_bind(version as i32)
                        .push_bind(first_rung(&job.stage));
                });
                insert.push(" ON CONFLICT (sweep, key) DO NOTHING");
                insert
                    .build()
                    .execute(&mut *c)
                    .await
                    .context("cannot store a job")?
                    .rows_affected()
            });
        }
        Ok(added)
    }

    /// True while `(job, attempt)` is the running attempt; on Postgres the row stays
    /// locked until the transaction ends, so the answer holds until then.
    async fn holds(&mut self, job: Uuid, attempt: i32) -> StoreResult<bool> {
        on_conn!(self, |c, b| {
            let sql = format!(
                "SELECT attempt FROM jobs WHERE id = $1 AND attempt = $2 AND state = 'running'{}",
                b.lock_row()
            );
            let found: Option<i32> = sqlx::query_scalar(&sql)
                .bind(Id(job))
                .bind(attempt)
                .fetch_optional(&mut *c)
                .await
                .context("cannot check a job's attempt")?;
            Ok(found.is_some())
        })
    }

    async fn check_ids(&mut self, ids: &[Uuid]) -> StoreResult<()> {
        for &id in ids {
            let found: i64 = on_conn!(self, |c, _b| {
                sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE id = $1")
                    .bind(Id(id))
                    .fetch_one(&mut *c)
                    .await
                    .context("cannot look up a job")?
            });
            if found == 0 {
                return Err(StoreError::UnknownJob { id });
            }
        }
        Ok(())
    }

    async fn insert_worker(&mut self, info: &WorkerInfo, device: &str) -> StoreResult<()> {
        on_conn!(self, |c, _b| {
            sqlx::query(
                "INSERT INTO workers (id, name, host, pid, device) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&info.id)
            .bind(&info.name)
            .bind(&info.host)
            .bind(info.pid)
            .bind(device)
            .execute(&mut *c)
            .await
            .context("cannot register the worker")?;
        });
        Ok(())
    }

    pub(crate) async fn sweep_spec(&mut self, sweep: &str) -> StoreResult<Option<Spec>> {
        let json: Option<Json<Value>> = on_conn!(self, |c, _b| {
            sqlx::query_scalar("SELECT spec_json FROM sweeps WHERE name = $1")
                .bind(sweep)
                .fetch_optional(&mut *c)
                .await
                .context("cannot read a sweep")?
        });
        json.map(|Json(value)| {
            serde_json::from_value(value).map_err(|source| StoreError::BadSpec {
                sweep: sweep.to_owned(),
                source,
            })
        })
        .transpose()
    }
}

impl Store {
    /// Deletes a sweep with its jobs, metrics and promotions.
    pub async fn delete_sweep(&self, name: &str) -> StoreResult<()> {
        let mut tx = self.write_tx().await?;
        let mut conn = tx.conn();
        on_conn!(&mut conn, |c, _b| {
            sqlx::query(
                "DELETE FROM metrics WHERE job_id IN (SELECT id FROM jobs WHERE sweep = $1)",
            )
            .bind(name)
            .execute(&mut *c)
            .await
            .context("cannot delete a sweep's metrics")?;
            // Children first: parent_job_id has no cascade.
            sqlx::query("DELETE FROM jobs WHERE sweep = $1 AND parent_job_id IS NOT NULL")
                .bind(name)
                .execute(&mut *c)
                .await
                .context("cannot delete a sweep's jobs")?;
            sqlx::query("DELETE FROM sweeps WHERE name = $1")
                .bind(name)
                .execute(&mut *c)
                .await
                .context("cannot delete a sweep")?;
        });
        tx.commit().await
    }
}
