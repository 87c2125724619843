//! Which jobs each selection group ranks, and each halving group cuts
//! (`selection_members`), kept as jobs are
//! stored, so that deciding a group reads that group alone: a finish costs the size of
//! its group, not of its stage, and never expands the grid inside the write
//! transaction.
//!
//! A sweep's members are rebuilt whenever `submit` stores a version (the grid is
//! expanded there anyway); a job stored later under a key of its own (a promoted job
//! of a ranked stage, an import) adds its row as it is inserted, and leaves with it.
//! A store written before the table existed builds a sweep's members the first time
//! one of its groups is decided.

use std::collections::HashSet;

use serde_json::Value;
use sqlx::types::Json;
use sqlx::Row as _;

use super::error::Context as _;
use super::{on_conn, Conn, StoreResult};
use crate::sweep::select::{self, Candidate, CandidateState};
use crate::sweep::{expand, params, JobSpec, Params, SelectionSpec, Spec};

/// Rows per multi-row INSERT: 5 bound values each, far below either backend's limit.
const BATCH: usize = 500;

/// One row of `selection_members`.
struct Member<'a> {
    selection: &'a str,
    key: &'a str,
    group_key: String,
}

/// What groups a stage's jobs: a selection, or a stage's halving rule.
struct Grouping<'a> {
    name: String,
    stage: &'a str,
    per: &'a [String],
}

/// Every grouping of the sweep: its selections, then its halving stages.
fn groupings(spec: &Spec) -> Vec<Grouping<'_>> {
    let selections = spec.selections.iter().map(|selection| Grouping {
        name: selection.name.clone(),
        stage: &selection.from,
        per: &selection.per,
    });
    let halving = spec.stages.iter().filter_map(|stage| {
        stage.halving.as_ref().map(|rule| Grouping {
            name: super::halving::grouping_name(stage),
            stage: &stage.name,
            per: &rule.per,
        })
    });
    selections.chain(halving).collect()
}

/// A group's members as deciding it needs them.
pub(super) struct GroupMembers {
    /// Its stored jobs, in key order.
    pub stored: Vec<Candidate>,
    /// Grid cells of the current version not stored yet.
    pub unstored: Vec<String>,
    /// Whether any stored member is a grid cell.
    pub stored_from_grid: bool,
}

impl Conn<'_> {
    /// Rebuilds the sweep's members from its current grid and its stored jobs.
    pub(super) async fn index_members(&mut self, spec: &Spec) -> StoreResult<()> {
        on_conn!(self, |c, _b| {
            sqlx::query("DELETE FROM selection_members WHERE sweep = $1")
                .bind(&spec.name)
                .execute(&mut *c)
                .await
                .context("cannot rebuild a sweep's selection groups")?;
        });
        let cells = expand::expand(spec);
        for grouping in groupings(spec) {
            let members: Vec<Member> = cells
                .iter()
                .filter(|cell| cell.stage == grouping.stage)
                .filter_map(|cell| member(&grouping, cell))
                .collect();
            self.insert_members(&spec.name, &members, true).await?;
            // Stored jobs of the stage under keys of their own: their keys are compared
            // here rather than by an anti-join, which a planner without statistics for
            // rows inserted in this transaction may run as a nested loop.
            let grid: HashSet<&str> = members.iter().map(|m| m.key).collect();
            let keys: Vec<String> = on_conn!(self, |c, _b| {
                sqlx::query_scalar("SELECT key FROM jobs WHERE sweep = $1 AND stage = $2")
                    .bind(&spec.name)
                    .bind(grouping.stage)
                    .fetch_all(&mut *c)
                    .await
                    .context("cannot read a ranked stage's jobs")?
            });
            let mut rows: Vec<(String, Json<Params>)> = Vec::new();
            for key in keys.iter().filter(|key| !grid.contains(key.as_str())) {
                let params: Json<Params> = on_conn!(self, |c, _b| {
                    sqlx::query_scalar("SELECT params FROM jobs WHERE sweep = $1 AND key = $2")
                        .bind(&spec.name)
                        .bind(key)
                        .fetch_one(&mut *c)
                        .await
                        .context("cannot read a ranked stage's jobs")?
                });
                rows.push((key.clone(), params));
            }
            let own: Vec<Member> = rows
                .iter()
                .filter(|(_, Json(params))| !params::is_baseline(params))
                .map(|(key, Json(params))| Member {
                    selection: &grouping.name,
                    key,
                    group_key: select::per_key(grouping.per, params),
                })
                .collect();
            self.insert_members(&spec.name, &own, false).await?;
        }
        on_conn!(self, |c, _b| {
            sqlx::query("UPDATE sweeps SET members_indexed = TRUE WHERE name = $1")
                .bind(&spec.name)
                .execute(&mut *c)
                .await
                .context("cannot rebuild a sweep's selection groups")?;
        });
        Ok(())
    }

    /// Builds the sweep's members if its store predates them.
    pub(super) async fn ensure_members(&mut self, spec: &Spec) -> StoreResult<()> {
        let indexed = |lock: &'static str| {
            format!("SELECT members_indexed FROM sweeps WHERE name = $1{lock}")
        };
        let built: bool = on_conn!(self, |c, _b| {
            sqlx::query_scalar(&indexed(""))
                .bind(&spec.name)
                .fetch_one(&mut *c)
                .await
                .context("cannot read a sweep")?
        });
        if built {
            return Ok(());
        }
        // Two transactions of Postgres finding it missing build it one after the other.
        let built: bool = on_conn!(self, |c, b| {
            sqlx::query_scalar(&indexed(b.lock_row()))
                .bind(&spec.name)
                .fetch_one(&mut *c)
                .await
                .context("cannot read a sweep")?
        });
        if !built {
            tracing::info!(sweep = %spec.name, "indexing the selection groups of an older store");
            self.index_members(spec).await?;
        }
        Ok(())
    }

    /// Adds a job stored after submit (a promoted job, an import) to the groups that
    /// rank its stage; a grid cell's row is already there.
    pub(super) async fn add_member(&mut self, spec: &Spec, job: &JobSpec) -> StoreResult<()> {
        let groupings = groupings(spec);
        let members: Vec<Member> = groupings
            .iter()
            .filter(|grouping| grouping.stage == job.stage)
            .filter_map(|grouping| member(grouping, job))
            .collect();
        self.insert_members(&spec.name, &members, false).await
    }

    /// Removes a deleted job's own rows (a grid cell's stays: the cell is still to run).
    pub(super) async fn remove_member(&mut self, sweep: &str, key: &str) -> StoreResult<()> {
        on_conn!(self, |c, _b| {
            sqlx::query(
                "DELETE FROM selection_members WHERE sweep = $1 AND key = $2 AND NOT in_grid",
            )
            .bind(sweep)
            .bind(key)
            .execute(&mut *c)
            .await
            .context("cannot remove a job from its selection group")?;
        });
        Ok(())
    }

    /// The members of one group, with the stored ones' states and results.
    pub(super) async fn group_members(
        &mut self,
        sweep: &str,
        selection: &SelectionSpec,
        group_key: &str,
    ) -> StoreResult<GroupMembers> {
        let mut members = on_conn!(self, |c, _b| {
            let rows = sqlx::query(
                "SELECT m.key, m.in_grid, j.id, j.params, j.state, j.result \
                 FROM selection_members m \
                 LEFT JOIN jobs j ON j.sweep = m.sweep AND j.key = m.key \
                 WHERE m.sweep = $1 AND m.selection = $2 AND m.group_key = $3",
            )
            .bind(sweep)
            .bind(&selection.name)
            .bind(group_key)
            .fetch_all(&mut *c)
            .await
            .context("cannot read a selection group")?;
            let mut members = GroupMembers {
                stored: Vec::new(),
                unstored: Vec::new(),
                stored_from_grid: false,
            };
            for row in &rows {
                let key: String = row
                    .try_get("key")
                    .context("cannot read a selection group")?;
                let in_grid: bool = row
                    .try_get("in_grid")
                    .context("cannot read a selection group")?;
                let stored: Option<super::Id> =
                    row.try_get("id").context("cannot read a selection group")?;
                if stored.is_none() {
                    members.unstored.push(key);
                    continue;
                }
                members.stored_from_grid |= in_grid;
                members.stored.push(
                    super::promotion::decode_candidate(row)
                        .context("cannot read a selection group")?,
                );
            }
            members
        });
        members.stored.sort_by(|a, b| a.key.cmp(&b.key));
        members.unstored.sort();
        Ok(members)
    }

    /// Whether any job of the selection's stage stored so far is a cell of the grid.
    pub(super) async fn stage_stored_from_grid(
        &mut self,
        sweep: &str,
        selection: &SelectionSpec,
    ) -> StoreResult<bool> {
        on_conn!(self, |c, _b| {
            let found: Option<i32> = sqlx::query_scalar(
                "SELECT 1 FROM selection_members m \
                 JOIN jobs j ON j.sweep = m.sweep AND j.key = m.key \
                 WHERE m.sweep = $1 AND m.selection = $2 AND m.in_grid LIMIT 1",
            )
            .bind(sweep)
            .bind(&selection.name)
            .fetch_optional(&mut *c)
            .await
            .context("cannot read a selection's groups")?;
            Ok(found.is_some())
        })
    }

    async fn insert_members(
        &mut self,
        sweep: &str,
        members: &[Member<'_>],
        in_grid: bool,
    ) -> StoreResult<()> {
        for batch in members.chunks(BATCH) {
            on_conn!(self, |c, _b| {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO selection_members (sweep, selection, key, group_key, in_grid) ",
                );
                insert.push_values(batch, |mut row, member| {
                    row.push_bind(sweep)
                        .push_bind(member.selection)
                        .push_bind(member.key)
                        .push_bind(&member.group_key)
                        .push_bind(in_grid);
                });
                insert.push(" ON CONFLICT (sweep, selection, key) DO NOTHING");
                insert
                    .build()
                    .execute(&mut *c)
                    .await
                    .context("cannot store a selection group's members")?;
            });
        }
        Ok(())
    }
}

/// A job's row in the selection's groups; none for a random-init baseline, which is
/// the yardstick of its stage, never one of its candidates.
fn member<'a>(grouping: &'a Grouping<'_>, job: &'a JobSpec) -> Option<Member<'a>> {
    (!params::is_baseline(&job.params)).then(|| Member {
        selection: &grouping.name,
        key: &job.key,
        group_key: select::per_key(grouping.per, &job.params),
    })
}

/// A grid cell not stored yet, as a candidate: still to run.
pub(super) fn pending(key: String, group: &Params) -> Candidate {
    Candidate {
        job_id: uuid::Uuid::nil(),
        key,
        // Deciding only counts it; its group's values are all this index knows of it.
        params: group.clone(),
        state: CandidateState::Pending,
        result: None::<Value>,
    }
}
