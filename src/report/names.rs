//! Names of selected models (`ResNet50_projection64`), unique within a report.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use uuid::Uuid;

use super::format::{model_name, plain, same_value};
use super::layout::{BACKBONE, PROJECTION_DIM};
use super::model::ReportInput;
use crate::sweep::Params;

/// Every winner's model name, and the order the winners were decided in.
pub struct ModelNames<'a> {
    input: &'a ReportInput,
    winners: Vec<Uuid>,
    names: BTreeMap<Uuid, String>,
}

impl<'a> ModelNames<'a> {
    pub fn new(input: &'a ReportInput) -> Self {
        let mut winners: Vec<Uuid> = Vec::new();
        // The winners the rules of stale decisions pick now come last, and are named
        // like winners: the report names them next to the ones kept.
        let picked_now = input
            .decisions
            .iter()
            .flat_map(|decision| decision.stale.iter())
            .flat_map(|stale| stale.winners.iter());
        let mut seen = std::collections::HashSet::new();
        for id in input
            .decisions
            .iter()
            .flat_map(|decision| decision.winners.iter())
            .chain(picked_now)
        {
            if seen.insert(*id) {
                winners.push(*id);
            }
        }
        // By id and by name once, so that naming stays near linear in the winners
        // and the jobs however many groups a study has.
        let params: std::collections::HashMap<Uuid, &Params> =
            input.jobs.iter().map(|job| (job.id, &job.params)).collect();
        let base: Vec<(Uuid, String)> = winners
            .iter()
            .map(|id| (*id, Self::base_name(params.get(id).copied(), *id)))
            .collect();
        let mut by_name: std::collections::HashMap<&str, Vec<Uuid>> = Default::default();
        for (id, name) in &base {
            by_name.entry(name.as_str()).or_default().push(*id);
        }
        let mut names = BTreeMap::new();
        for (id, name) in &base {
            let clashing = &by_name[name.as_str()];
            // Winners with the same backbone and projection are told apart by the
            // parameters they differ in; winners that differ by seed alone are one
            // model, and share a name so their rows aggregate as seeds.
            let name = if clashing.len() > 1 {
                format!("{name}{}", Self::difference(&params, *id, clashing))
            } else {
                name.clone()
            };
            names.insert(*id, name);
        }
        ModelNames {
            input,
            winners,
            names,
        }
    }

    /// `_temperature0.1_optimizeradam`: the values of `id` for every parameter (but
    /// the seed) whose value is not the same on all of `group`.
    fn difference(
        params: &std::collections::HashMap<Uuid, &Params>,
        id: Uuid,
        group: &[Uuid],
    ) -> String {
        let params_of = |job: Uuid| params.get(&job).copied();
        let Some(own) = params_of(id) else {
            return format!("_{}", short_id(id));
        };
        let mut keys: BTreeSet<&String> = BTreeSet::new();
        for other in group.iter().filter_map(|other| params_of(*other)) {
            for key in own.keys().chain(other.keys()) {
                if key != "seed"
                    && !same_value(
                        own.get(key).unwrap_or(&Value::Null),
                        other.get(key).unwrap_or(&Value::Null),
                    )
                {
                    keys.insert(key);
                }
            }
        }
        keys.iter()
            .map(|key| format!("_{key}{}", own.get(*key).map_or("unset".to_owned(), plain)))
            .collect()
    }

    /// `SmallResNet_projection32` from a job's parameters; `job_<id>` without them.
    fn base_name(params: Option<&Params>, id: Uuid) -> String {
        match params {
            Some(params) => model_name(params.get(BACKBONE), params.get(PROJECTION_DIM)),
            None => format!("job_{}", short_id(id)),
        }
    }

    /// The model a job trained: the winner's name, or one built from the job's
    /// parameters.
    pub fn name(&self, id: Uuid) -> String {
        self.names.get(&id).cloned().unwrap_or_else(|| {
            let params = self.input.jobs.iter().find(|job| job.id == id);
            Self::base_name(params.map(|job| &job.params), id)
        })
    }

    /// Where a parent comes in the decisions' order; jobs without a decided parent last.
    pub fn rank(&self, parent: Option<Uuid>) -> usize {
        parent
            .and_then(|id| self.winners.iter().position(|winner| *winner == id))
            .unwrap_or(usize::MAX)
    }
}

fn short_id(id: Uuid) -> String {
    id.simple().to_string()[..8].to_string()
}
