//! Rung decisions of successive halving ([`crate::sweep::halving`]), made inside the
//! transaction that pauses a job at a rung or ends one of its group, so that a rung
//! is decided exactly once, by whichever write completes it.
//!
//! A group's rung is ready once none of its jobs is still on its way to that rung
//! (queued or running with `halt_at` at it) or waiting at an earlier one. Its paused
//! jobs are then cut: the best `keep` go back to the queue with the next rung (or the
//! end) as their halt, the others become `stopped` there. The decision, with every
//! candidate's value, the cut and who went on, is one row of `rung_decisions`.

use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::Row as _;
use uuid::Uuid;

use super::error::Context as _;
use super::{on_conn, Conn, Id, JobState, StoreResult};
use crate::sweep::halving::{HalvingSpec, RungCandidate, RungCut};
use crate::sweep::{select, Params, Spec, StageSpec};

/// Where a job is paused or was stopped: `jobs.halted`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Halted {
    pub epoch: i64,
    pub metric: String,
    /// The metric at that epoch; `None` when the job recorded none (it ranks last).
    pub value: Option<f64>,
}

/// One stored rung decision (`rung_decisions.decision`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RungDecision {
    pub stage: String,
    /// The group's parameters.
    pub group: Params,
    pub rung: i64,
    pub metric: String,
    pub keep: String,
    #[serde(flatten)]
    pub cut: RungCut,
}

/// The name a stage's halving groups have among the selection groups' members
/// (selection names cannot hold a colon).
pub(super) fn grouping_name(stage: &StageSpec) -> String {
    format!("halving:{}", stage.name)
}

/// One job of a halving group as a rung decision sees it.
struct GroupJob {
    id: Uuid,
    key: String,
    params: Params,
    state: JobState,
    halt_at: Option<i64>,
    halted: Option<Halted>,
}

impl Conn<'_> {
    /// Decides every rung of the group of a job of `stage` that is ready; returns the
    /// parameters of the jobs it stopped (their selections may be ready now).
    pub(super) async fn decide_rungs(
        &mut self,
        spec: &Spec,
        stage: &str,
        params: &Params,
    ) -> StoreResult<Vec<Params>> {
        let Some(stage) = spec.stage(stage) else {
            return Ok(Vec::new());
        };
        let Some(rule) = &stage.halving else {
            return Ok(Vec::new());
        };
        let grouping = grouping_name(stage);
        let group_key = select::per_key(&rule.per, params);
        self.lock_key(&format!(
            "sweeper halving\u{1f}{}\u{1f}{grouping}\u{1f}{group_key}",
            spec.name
        ))
        .await?;
        let jobs = self
            .halving_group(&spec.name, &grouping, &group_key)
            .await?;
        let mut rungs: Vec<i64> = jobs
            .iter()
            .filter(|job| job.state == JobState::Paused)
            .filter_map(|job| job.halted.as_ref().map(|h| h.epoch))
            .collect();
        rungs.sort_unstable();
        rungs.dedup();
        let mut stopped = Vec::new();
        for rung in rungs {
            let on_the_way = jobs.iter().any(|job| {
                let heading = matches!(job.state, JobState::Queued | JobState::Running)
                    && job.halt_at == Some(rung);
                let earlier = job.state == JobState::Paused
                    && job.halted.as_ref().is_some_and(|h| h.epoch < rung);
                heading || earlier
            });
            if on_the_way {
                continue;
            }
            let at_rung: Vec<&GroupJob> = jobs
                .iter()
                .filter(|job| {
                    job.state == JobState::Paused
                        && job.halted.as_ref().is_some_and(|h| h.epoch == rung)
                })
                .collect();
            let candidates: Vec<RungCandidate> = at_rung
                .iter()
                .map(|job| RungCandidate {
                    job_id: job.id,
                    key: job.key.clone(),
                    value: job
                        .halted
                        .as_ref()
                        .and_then(|h| h.value)
                        .unwrap_or(f64::NAN),
                })
                .collect();
            let cut = rule.cut(&candidates);
            let decision = RungDecision {
                stage: stage.name.clone(),
                group: select::per_group(&rule.per, params),
                rung,
                metric: rule.metric.clone(),
                keep: rule.keep.to_string(),
                cut,
            };
            if !self
                .insert_rung_decision(&spec.name, &group_key, &decision)
                .await?
            {
                continue;
            }
            let next = rule.next_rung(rung);
            for kept in &decision.cut.kept {
                self.send_on(kept.job_id, next).await?;
            }
            for gone in &decision.cut.stopped {
                self.stop_at_rung(gone.job_id).await?;
                if let Some(job) = at_rung.iter().find(|job| job.id == gone.job_id) {
                    stopped.push(job.params.clone());
                }
            }
            tracing::info!(
                sweep = %spec.name,
                stage = %stage.name,
                group = %group_key,
                rung,
                kept = decision.cut.kept.len(),
                stopped = decision.cut.stopped.len(),
                cut = ?decision.cut.cut,
                "rung decided"
            );
        }
        Ok(stopped)
    }

    /// Records where a job that just paused is and the value it is compared on. A job
    /// whose stage has no rule any more (a new version dropped it) goes on to the end.
    pub(super) async fn pause_at_rung(
        &mut self,
        job: Uuid,
        sweep: &str,
        stage: &str,
        epoch: i64,
    ) -> StoreResult<()> {
        let rule = self
            .sweep_spec(sweep)
            .await?
            .and_then(|spec| spec.stage(stage).and_then(|stage| stage.halving.clone()));
        let Some(rule) = rule else {
            return self.send_on(job, None).await;
        };
        let halted = self.rung_value(job, &rule, epoch).await?;
        on_conn!(self, |c, _b| {
            sqlx::query("UPDATE jobs SET halted = $2 WHERE id = $1")
                .bind(Id(job))
                .bind(Json(&halted))
                .execute(&mut *c)
                .await
                .context("cannot record a job's rung")?;
        });
        Ok(())
    }

    /// The value a job pausing at `epoch` is compared on: the metric its newest
    /// attempt recorded at that epoch.
    async fn rung_value(
        &mut self,
        job: Uuid,
        rule: &HalvingSpec,
        epoch: i64,
    ) -> StoreResult<Halted> {
        let value: Option<f64> = on_conn!(self, |c, _b| {
            sqlx::query_scalar(
                "SELECT value FROM metrics WHERE job_id = $1 AND name = $2 AND step = $3 \
                 ORDER BY attempt DESC LIMIT 1",
            )
            .bind(Id(job))
            .bind(&rule.metric)
            .bind(epoch)
            .fetch_optional(&mut *c)
            .await
            .context("cannot read a job's value at its rung")?
        });
        Ok(Halted {
            epoch,
            metric: rule.metric.clone(),
            value,
        })
    }

    async fn halving_group(
        &mut self,
        sweep: &str,
        grouping: &str,
        group_key: &str,
    ) -> StoreResult<Vec<GroupJob>> {
        on_conn!(self, |c, _b| {
            let rows = sqlx::query(
                "SELECT j.id, j.key, j.params, j.state, j.halt_at, j.halted \
                 FROM selection_members m JOIN jobs j ON j.sweep = m.sweep AND j.key = m.key \
                 WHERE m.sweep = $1 AND m.selection = $2 AND m.group_key = $3",
            )
            .bind(sweep)
            .bind(grouping)
            .bind(group_key)
            .fetch_all(&mut *c)
            .await
            .context("cannot read a halving group")?;
            rows.iter()
                .map(|row| -> Result<GroupJob, sqlx::Error> {
                    let state: String = row.try_get("state")?;
                    Ok(GroupJob {
                        id: row.try_get::<Id, _>("id")?.0,
                        key: row.try_get("key")?,
                        params: row.try_get::<Json<Params>, _>("params")?.0,
                        state: JobState::parse(&state).ok_or_else(|| {
                            sqlx::Error::ColumnDecode {
                                index: "state".into(),
                                source: format!("unknown job state {state:?}").into(),
                            }
                        })?,
                        halt_at: row.try_get("halt_at")?,
                        halted: row
                            .try_get::<Option<Json<Halted>>, _>("halted")?
                            .map(|json| json.0),
                    })
                })
                .collect::<Result<Vec<_>, _>>()
                .context("cannot read a halving group")
        })
    }

    /// Records a rung's decision; false when another transaction did.
    async fn insert_rung_decision(
        &mut self,
        sweep: &str,
        group_key: &str,
        decision: &RungDecision,
    ) -> StoreResult<bool> {
        on_conn!(self, |c, _b| {
            let done = sqlx::query(
                "INSERT INTO rung_decisions (sweep, stage, group_key, rung, decision) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(sweep)
            .bind(&decision.stage)
            .bind(group_key)
            .bind(decision.rung)
            .bind(Json(decision))
            .execute(&mut *c)
            .await
            .context("cannot record a rung decision")?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// A kept job goes back to the queue, to resume from its checkpoint up to `next`
    /// (the end when `None`).
    async fn send_on(&mut self, job: Uuid, next: Option<i64>) -> StoreResult<()> {
        on_conn!(self, |c, b| {
            let sql = format!(
                "UPDATE jobs SET state = 'queued', halt_at = $2, run_after = {now}, \
                     finished_at = NULL, updated_at = {now} \
                 WHERE id = $1 AND state = 'paused'",
                now = b.now()
            );
            sqlx::query(&sql)
                .bind(Id(job))
                .bind(next)
                .execute(&mut *c)
                .await
                .context("cannot send a job on past its rung")?;
        });
        Ok(())
    }

    async fn stop_at_rung(&mut self, job: Uuid) -> StoreResult<()> {
        on_conn!(self, |c, b| {
            let sql = format!(
                "UPDATE jobs SET state = 'stopped', error_kind = NULL, error_message = NULL, \
                     finished_at = {now}, updated_at = {now} \
                 WHERE id = $1 AND state = 'paused'",
                now = b.now()
            );
            sqlx::query(&sql)
                .bind(Id(job))
                .execute(&mut *c)
                .await
                .context("cannot stop a job at its rung")?;
        });
        Ok(())
    }
}
