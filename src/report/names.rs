//! Names of selected models (`ResNet50_projection64`), unique within a report.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::format::model_name;
use super::layout::{BACKBONE, PROJECTION_DIM};
use super::model::ReportInput;

/// Every winner's model name, and the order the winners were decided in.
pub struct ModelNames<'a> {
    input: &'a ReportInput,
    winners: Vec<Uuid>,
    names: BTreeMap<Uuid, String>,
}

impl<'a> ModelNames<'a> {
    pub fn new(input: &'a ReportInput) -> Self {
        let mut winners: Vec<Uuid> = Vec::new();
        for id in input
            .decisions
            .iter()
            .flat_map(|decision| decision.winners.iter())
        {
            if !winners.contains(id) {
                winners.push(*id);
            }
        }
        let base: Vec<(Uuid, String)> = winners
            .iter()
            .map(|id| (*id, Self::base_name(input, *id)))
            .collect();
        let mut names = BTreeMap::new();
        for (id, name) in &base {
            let clashes = base.iter().filter(|(_, other)| other == name).count() > 1;
            // Two winners with the same backbone and projection (top k > 1, or other
            // axes in the groups) are told apart by their job id.
            let name = if clashes {
                format!("{name}_{}", short_id(*id))
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

    fn base_name(input: &ReportInput, id: Uuid) -> String {
        match input.jobs.iter().find(|job| job.id == id) {
            Some(job) => model_name(job.params.get(BACKBONE), job.params.get(PROJECTION_DIM)),
            None => format!("job_{}", short_id(id)),
        }
    }

    /// The model a job trained: the winner's name, or one built from the job's
    /// parameters.
    pub fn name(&self, id: Uuid) -> String {
        self.names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| Self::base_name(self.input, id))
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
