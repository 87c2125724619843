//! Stage promotion: each selection group's decision and the downstream jobs of its
//! winners, made inside the transaction that ends (or imports) a job of the ranked
//! stage, so that a group is never done but not promoted.
//!
//! A decision stays true to its group. When the group's ranking changes after it was
//! made (the grid was extended and the new cells succeeded, or a failed candidate was
//! retried and succeeded), the selection decides again:
//!
//! - while none of the downstream jobs of the winners it would drop has started, the
//!   decision is re-made: those jobs are deleted, the new winners' jobs are queued,
//!   and the replaced decision moves to `superseded_promotions` with the jobs it
//!   deleted and why;
//! - once one of them has started, the decision stays, marked stale with the reason
//!   and the rule's pick now ([`Stale`]). Nothing that started or finished is touched.
//!
//! The replaced jobs are deleted rather than cancelled or rewritten: they are queued
//! and were never claimed, so no attempt, metric, log or checkpoint names them, and the
//! superseded decision keeps their ids, keys and parameters. A cancelled copy would
//! sit in `status` and the report's tables as a run somebody stopped and keep its key
//! taken; a job rewritten in place would give one id to two different runs.

use std::collections::{BTreeMap, HashSet};

use serde_json::{json, Value};
use sqlx::types::Json;
use sqlx::Row as _;
use uuid::Uuid;

use super::error::Context as _;
use super::{members, on_conn, Conn, Id, JobState, Stale, StoreError, StoreResult};
use crate::sweep::select::{self, Candidate, CandidateState, Decision, Outcome};
use crate::sweep::{expand, Params, SelectionSpec, Spec};

/// One selection group of one sweep: what every step of a decision names.
struct Group<'a> {
    sweep: &'a str,
    spec: &'a Spec,
    selection: &'a SelectionSpec,
    /// The group's parameters as canonical JSON.
    key: &'a str,
}

/// The decision in force for a group.
struct Current {
    revision: i32,
    outcome: Outcome,
    stale: Option<Stale>,
}

/// A downstream job of a winner, as deciding again sees it.
struct DownstreamJob {
    id: Uuid,
    stage: String,
    key: String,
    params: Params,
    parent: Uuid,
    state: JobState,
    attempt: i32,
}

impl DownstreamJob {
    /// Claimed at least once, or finished without a claim (imported): its results, or
    /// the work towards them, belong to the decision that made it.
    fn started(&self) -> bool {
        self.attempt > 0
            || matches!(
                self.state,
                JobState::Running | JobState::Succeeded | JobState::Failed
            )
    }

    /// Queued and never claimed: nothing refers to it yet. (A job cancelled before it
    /// ever ran is neither started nor replaced: it stays as the user left it.)
    fn replaceable(&self) -> bool {
        self.state == JobState::Queued && self.attempt == 0
    }
}

impl Conn<'_> {
    /// After a job of `stage` ended or paused at a rung: decides the ready rungs of its
    /// halving group ([`super::halving`]), then runs the selections that rank `stage`
    /// for its group and for those of the jobs the rungs stopped: decides a group the
    /// first time it is ready, and decides it again when its ranking changed since (see
    /// the module's documentation).
    pub(super) async fn promote(
        &mut self,
        sweep: &str,
        stage: &str,
        params: &Params,
    ) -> StoreResult<()> {
        let Some(spec) = self.sweep_spec(sweep).await? else {
            return Ok(());
        };
        self.ensure_members(&spec).await?;
        // Jobs a rung decision stops have ended: their selection groups may be ready.
        let mut ended = vec![params.clone()];
        ended.extend(self.decide_rungs(&spec, stage, params).await?);
        for params in &ended {
            self.promote_selections(sweep, &spec, stage, params).await?;
        }
        Ok(())
    }

    async fn promote_selections(
        &mut self,
        sweep: &str,
        spec: &Spec,
        stage: &str,
        params: &Params,
    ) -> StoreResult<()> {
        for selection in spec.selections.iter().filter(|s| s.from == stage) {
            let values = select::group_of(selection, params);
            let key = select::group_key(selection, params);
            let group = Group {
                sweep,
                spec,
                selection,
                key: &key,
            };
            self.lock_group(&group).await?;
            let candidates = self.group_candidates(&group, &values).await?;
            let outcome = match select::decide(selection, &candidates) {
                Decision::Waiting { reason } => {
                    // A decided group that waits again (new cells still to run) keeps its
                    // decision until they end.
                    tracing::debug!(sweep, selection = %selection.name, group = %key, %reason, "waiting");
                    continue;
                }
                Decision::Ready(outcome) => outcome,
            };
            match self.current_decision(&group).await? {
                None => self.decide_first(&group, &outcome).await?,
                Some(current) => self.decide_again(&group, current, &outcome).await?,
            }
        }
        Ok(())
    }

    async fn decide_first(&mut self, group: &Group<'_>, outcome: &Outcome) -> StoreResult<()> {
        if !self.insert_promotion(group, outcome).await? {
            return Ok(());
        }
        let queued = self.queue_downstream(group, &outcome.winners).await?;
        tracing::info!(
            sweep = group.sweep,
            selection = %group.selection.name,
            group = %group.key,
            winners = outcome.winners.len(),
            queued,
            "promoted"
        );
        Ok(())
    }

    /// Re-makes a decided group's decision when its ranking changed, or marks it stale
    /// when a downstream job of a winner it would drop has started.
    async fn decide_again(
        &mut self,
        group: &Group<'_>,
        current: Current,
        outcome: &Outcome,
    ) -> StoreResult<()> {
        if ranking(&current.outcome) == ranking(outcome) {
            // Nothing new was ranked: a candidate failed, or was cancelled.
            return Ok(());
        }
        let winner_ids = |outcome: &Outcome| -> HashSet<Uuid> {
            outcome.winners.iter().map(|w| w.job_id).collect()
        };
        let (before, now) = (winner_ids(&current.outcome), winner_ids(outcome));
        let dropped: Vec<Uuid> = current
            .outcome
            .winners
            .iter()
            .map(|w| w.job_id)
            .filter(|id| !now.contains(id))
            .collect();
        let downstream = self.downstream_jobs(group, &dropped).await?;
        let started: Vec<&DownstreamJob> = downstream.iter().filter(|j| j.started()).collect();
        if !started.is_empty() {
            let stale = Stale {
                reason: started_reason(&started),
                outcome: outcome.clone(),
            };
            if current.stale.as_ref() != Some(&stale) {
                self.mark_stale(group, &stale).await?;
                tracing::warn!(
                    sweep = group.sweep,
                    selection = %group.selection.name,
                    group = %group.key,
                    reason = %stale.reason,
                    "decision kept, stale"
                );
            }
            return Ok(());
        }
        let replaced: Vec<&DownstreamJob> = downstream.iter().filter(|j| j.replaceable()).collect();
        let removed = self.delete_unclaimed(group, &replaced).await?;
        let reason = redecided_reason(&current.outcome, outcome);
        self.supersede(group, current.revision, &reason, &removed, outcome)
            .await?;
        let added: Vec<Candidate> = outcome
            .winners
            .iter()
            .filter(|w| !before.contains(&w.job_id))
            .cloned()
            .collect();
        let queued = self.queue_downstream(group, &added).await?;
        tracing::info!(
            sweep = group.sweep,
            selection = %group.selection.name,
            group = %group.key,
            revision = current.revision + 1,
            removed = removed.len(),
            queued,
            %reason,
            "decided again"
        );
        Ok(())
    }

    /// The group's candidates: its stored jobs of the ranked stage, and the cells of the
    /// sweep's grid not stored yet (still to run), read from the group's members alone.
    async fn group_candidates(
        &mut self,
        group: &Group<'_>,
        values: &Params,
    ) -> StoreResult<Vec<Candidate>> {
        let members = self
            .group_members(group.sweep, group.selection, group.key)
            .await?;
        let mut candidates = members.stored;
        // A cell of the sweep that is not stored yet (an import of part of a grid that
        // `submit` completes later) is still to run: the group is not done. Jobs stored
        // under keys of their own (not from this spec's grid) are the whole group.
        if !members.unstored.is_empty()
            && (members.stored_from_grid
                || self
                    .stage_stored_from_grid(group.sweep, group.selection)
                    .await?)
        {
            candidates.extend(
                members
                    .unstored
                    .into_iter()
                    .map(|key| members::pending(key, values)),
            );
        }
        Ok(candidates)
    }

    /// Queues the downstream jobs of each winner; returns how many were new.
    async fn queue_downstream(
        &mut self,
        group: &Group<'_>,
        winners: &[Candidate],
    ) -> StoreResult<u64> {
        let mut queued = 0;
        for winner in winners {
            for job in expand::downstream(group.spec, &group.selection.name, winner) {
                if self
                    .insert_job(group.sweep, &job, Some(winner.job_id))
                    .await?
                {
                    self.add_member(group.spec, &job).await?;
                    queued += 1;
                }
            }
        }
        Ok(queued)
    }

    /// Serialises promotion of one group across Postgres transactions (SQLite's write
    /// transactions are serial already): without it two workers finishing a group's last
    /// two jobs at once would each see the other's job unfinished.
    async fn lock_group(&mut self, group: &Group<'_>) -> StoreResult<()> {
        self.lock_key(&format!(
            "sweeper promotion\u{1f}{}\u{1f}{}\u{1f}{}",
            group.sweep, group.selection.name, group.key
        ))
        .await
    }

    /// Holds a transaction-scoped lock on `name` (Postgres; SQLite's write
    /// transactions are serial already).
    pub(super) async fn lock_key(&mut self, name: &str) -> StoreResult<()> {
        if let Conn::Postgres(c) = self {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(name)
                .execute(&mut **c)
                .await
                .context("cannot lock a group")?;
        }
        Ok(())
    }

    async fn current_decision(&mut self, group: &Group<'_>) -> StoreResult<Option<Current>> {
        type Stored = (i32, Json<Value>, Option<Json<Value>>);
        let row: Option<Stored> = on_conn!(self, |c, _b| {
            sqlx::query_as(
                "SELECT revision, decision, stale FROM promotions \
                 WHERE sweep = $1 AND selection = $2 AND group_key = $3",
            )
            .bind(group.sweep)
            .bind(&group.selection.name)
            .bind(group.key)
            .fetch_optional(&mut *c)
            .await
            .context("cannot read promotions")?
        });
        let Some((revision, Json(decision), stale)) = row else {
            return Ok(None);
        };
        let bad = |source| StoreError::BadDecision {
            sweep: group.sweep.to_owned(),
            selection: group.selection.name.clone(),
            source,
        };
        Ok(Some(Current {
            revision,
            outcome: serde_json::from_value(decision).map_err(bad)?,
            stale: stale
                .map(|Json(stale)| serde_json::from_value(stale))
                .transpose()
                .map_err(bad)?,
        }))
    }

    /// Records a group's first decision; false when another transaction did.
    async fn insert_promotion(
        &mut self,
        group: &Group<'_>,
        outcome: &Outcome,
    ) -> StoreResult<bool> {
        on_conn!(self, |c, b| {
            let sql = format!(
                "INSERT INTO promotions (sweep, selection, group_key, decision, revision, \
                                         decided_at) \
                 VALUES ($1, $2, $3, $4, 1, {now}) ON CONFLICT DO NOTHING",
                now = b.now()
            );
            let done = sqlx::query(&sql)
                .bind(group.sweep)
                .bind(&group.selection.name)
                .bind(group.key)
                .bind(Json(outcome))
                .execute(&mut *c)
                .await
                .context("cannot record a promotion")?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Moves the decision in force (revision `revision`) to `superseded_promotions`
    /// and puts `outcome` in its place as the next revision.
    async fn supersede(
        &mut self,
        group: &Group<'_>,
        revision: i32,
        reason: &str,
        removed: &[Value],
        outcome: &Outcome,
    ) -> StoreResult<()> {
        on_conn!(self, |c, b| {
            sqlx::query(
                "INSERT INTO superseded_promotions (sweep, selection, group_key, revision, \
                     decision, decided_at, reason, removed_jobs) \
                 SELECT sweep, selection, group_key, revision, decision, \
                     COALESCE(decided_at, created_at), $5, $6 \
                 FROM promotions WHERE sweep = $1 AND selection = $2 AND group_key = $3 \
                     AND revision = $4",
            )
            .bind(group.sweep)
            .bind(&group.selection.name)
            .bind(group.key)
            .bind(revision)
            .bind(reason)
            .bind(Json(removed))
            .execute(&mut *c)
            .await
            .context("cannot keep a superseded decision")?;
            let sql = format!(
                "UPDATE promotions SET decision = $5, revision = $4 + 1, decided_at = {now}, \
                     stale = NULL \
                 WHERE sweep = $1 AND selection = $2 AND group_key = $3 AND revision = $4",
                now = b.now()
            );
            sqlx::query(&sql)
                .bind(group.sweep)
                .bind(&group.selection.name)
                .bind(group.key)
                .bind(revision)
                .bind(Json(outcome))
                .execute(&mut *c)
                .await
                .context("cannot record a decision")?;
        });
        Ok(())
    }

    async fn mark_stale(&mut self, group: &Group<'_>, stale: &Stale) -> StoreResult<()> {
        on_conn!(self, |c, _b| {
            sqlx::query(
                "UPDATE promotions SET stale = $4 \
                 WHERE sweep = $1 AND selection = $2 AND group_key = $3",
            )
            .bind(group.sweep)
            .bind(&group.selection.name)
            .bind(group.key)
            .bind(Json(stale))
            .execute(&mut *c)
            .await
            .context("cannot mark a decision stale")?;
        });
        Ok(())
    }

    /// The jobs of the selection's downstream stages whose parent is one of `winners`,
    /// locked on Postgres until the transaction ends, so that no claim starts one
    /// between the check and the delete (a claim in flight is waited for and seen).
    async fn downstream_jobs(
        &mut self,
        group: &Group<'_>,
        winners: &[Uuid],
    ) -> StoreResult<Vec<DownstreamJob>> {
        let stages: HashSet<&str> = group
            .spec
            .stages
            .iter()
            .filter(|stage| stage.from.as_deref() == Some(group.selection.name.as_str()))
            .map(|stage| stage.name.as_str())
            .collect();
        let mut jobs = Vec::new();
        for &winner in winners {
            let rows = on_conn!(self, |c, b| {
                let sql = format!(
                    // A job id is unique across sweeps: the parent alone finds them.
                    "SELECT id, stage, key, params, parent_job_id, state, attempt FROM jobs \
                     WHERE parent_job_id = $1 ORDER BY id{}",
                    b.lock_row()
                );
                let rows = sqlx::query(&sql)
                    .bind(Id(winner))
                    .fetch_all(&mut *c)
                    .await
                    .context("cannot read a winner's downstream jobs")?;
                rows.iter()
                    .map(|row| -> Result<DownstreamJob, sqlx::Error> {
                        let state: String = row.try_get("state")?;
                        Ok(DownstreamJob {
                            id: row.try_get::<Id, _>("id")?.0,
                            stage: row.try_get("stage")?,
                            key: row.try_get("key")?,
                            params: row.try_get::<Json<Params>, _>("params")?.0,
                            parent: winner,
                            state: JobState::parse(&state).ok_or_else(|| {
                                sqlx::Error::ColumnDecode {
                                    index: "state".into(),
                                    source: format!("unknown job state {state:?}").into(),
                                }
                            })?,
                            attempt: row.try_get("attempt")?,
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .context("cannot read a winner's downstream jobs")?
            });
            jobs.extend(
                rows.into_iter()
                    .filter(|job| stages.contains(job.stage.as_str())),
            );
        }
        Ok(jobs)
    }

    /// Deletes queued jobs that were never claimed; returns what each one was, for the
    /// superseded decision's record.
    async fn delete_unclaimed(
        &mut self,
        group: &Group<'_>,
        jobs: &[&DownstreamJob],
    ) -> StoreResult<Vec<Value>> {
        let mut removed = Vec::new();
        for job in jobs {
            let done = on_conn!(self, |c, _b| {
                sqlx::query("DELETE FROM jobs WHERE id = $1 AND state = 'queued' AND attempt = 0")
                    .bind(Id(job.id))
                    .execute(&mut *c)
                    .await
                    .context("cannot replace a downstream job")?
                    .rows_affected()
            });
            if done == 1 {
                self.remove_member(group.sweep, &job.key).await?;
                removed.push(json!({
                    "id": job.id,
                    "stage": job.stage,
                    "key": job.key,
                    "params": job.params,
                    "parent_job_id": job.parent,
                }));
            }
        }
        Ok(removed)
    }
}

/// What a decision ranked, best first: the candidates that succeeded and the values
/// they were compared on. Two decisions with the same ranking pick the same winners.
fn ranking(outcome: &Outcome) -> Vec<(Uuid, &Params)> {
    outcome
        .ranked
        .iter()
        .filter(|c| c.rank.is_some())
        .map(|c| (c.job_id, &c.values))
        .collect()
}

/// `3 candidates ranked (2 before); winners 0190… (were 0190…)`.
fn redecided_reason(before: &Outcome, now: &Outcome) -> String {
    let ids = |outcome: &Outcome| {
        let ids: Vec<String> = outcome
            .winners
            .iter()
            .map(|w| w.job_id.to_string())
            .collect();
        ids.join(", ")
    };
    format!(
        "{} candidates ranked ({} before); winners {} (were {})",
        ranking(now).len(),
        ranking(before).len(),
        ids(now),
        ids(before)
    )
}

/// `downstream jobs of the winners it would replace have started: probe 1 succeeded`.
fn started_reason(started: &[&DownstreamJob]) -> String {
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for job in started {
        let state = match job.state {
            // Back in the queue after an attempt.
            JobState::Queued => "requeued",
            state => state.as_str(),
        };
        *counts.entry((job.stage.as_str(), state)).or_default() += 1;
    }
    let parts: Vec<String> = counts
        .into_iter()
        .map(|((stage, state), n)| format!("{stage} {n} {state}"))
        .collect();
    format!(
        "downstream jobs of the winners it would replace have started: {}",
        parts.join(", ")
    )
}

pub(super) fn decode_candidate<R>(row: &R) -> Result<Candidate, sqlx::Error>
where
    R: sqlx::Row,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Id: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Json<Params>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<Json<Value>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r str: sqlx::ColumnIndex<R>,
{
    let state: String = row.try_get("state")?;
    Ok(Candidate {
        job_id: row.try_get::<Id, _>("id")?.0,
        key: row.try_get("key")?,
        params: row.try_get::<Json<Params>, _>("params")?.0,
        state: match JobState::parse(&state) {
            Some(JobState::Succeeded) => CandidateState::Succeeded,
            Some(JobState::Failed) => CandidateState::Failed,
            Some(JobState::Cancelled) => CandidateState::Cancelled,
            Some(JobState::Stopped) => CandidateState::Stopped,
            _ => CandidateState::Pending,
        },
        result: row
            .try_get::<Option<Json<Value>>, _>("result")?
            .map(|json| json.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(stage: &str, state: JobState, attempt: i32) -> DownstreamJob {
        DownstreamJob {
            id: Uuid::now_v7(),
            stage: stage.to_owned(),
            key: "k".to_owned(),
            params: Params::new(),
            parent: Uuid::nil(),
            state,
            attempt,
        }
    }

    #[test]
    fn only_queued_jobs_never_claimed_are_replaced() {
        let fresh = job("probe", JobState::Queued, 0);
        assert!(fresh.replaceable() && !fresh.started());
        // Requeued after an attempt: it ran, so it belongs to the decision.
        let requeued = job("probe", JobState::Queued, 1);
        assert!(!requeued.replaceable() && requeued.started());
        for state in [JobState::Running, JobState::Succeeded, JobState::Failed] {
            // Attempt 0 with a result: imported.
            let ended = job("probe", state, 0);
            assert!(!ended.replaceable() && ended.started(), "{state}");
        }
        let cancelled_unrun = job("probe", JobState::Cancelled, 0);
        assert!(!cancelled_unrun.replaceable() && !cancelled_unrun.started());
        assert!(job("probe", JobState::Cancelled, 2).started());
    }

    #[test]
    fn the_reason_counts_started_jobs_per_stage_and_state() {
        let jobs = [
            job("probe", JobState::Succeeded, 1),
            job("linear", JobState::Running, 1),
            job("probe", JobState::Succeeded, 1),
            job("probe", JobState::Queued, 1),
        ];
        let started: Vec<&DownstreamJob> = jobs.iter().collect();
        assert_eq!(
            started_reason(&started),
            "downstream jobs of the winners it would replace have started: linear 1 running, \
             probe 1 requeued, probe 2 succeeded"
        );
    }
}
