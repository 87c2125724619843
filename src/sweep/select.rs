//! Placeholder for the selection rules: just enough for the store's promotion path.

use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::{Params, Preference, SelectionSpec};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub job_id: Uuid,
    pub key: String,
    pub params: Params,
    pub state: CandidateState,
    pub result: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateState {
    Succeeded,
    Failed,
    Pending,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankedCandidate {
    pub job_id: Uuid,
    pub rank: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub winners: Vec<Candidate>,
    pub rule: String,
    pub ranked: Vec<RankedCandidate>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Waiting { reason: String },
    Ready(Outcome),
}

/// The group a job's parameters belong to: the `per` parameters.
pub fn group_of(sel: &SelectionSpec, params: &Params) -> Params {
    sel.per
        .iter()
        .filter_map(|name| params.get(name).map(|value| (name.clone(), value.clone())))
        .collect()
}

/// Ranks a finished group, or says why it is not finished.
pub fn decide(sel: &SelectionSpec, group: &[Candidate]) -> Decision {
    if group.iter().any(|c| c.state == CandidateState::Pending) {
        return Decision::Waiting {
            reason: "jobs pending".into(),
        };
    }
    let mut done: Vec<&Candidate> = group
        .iter()
        .filter(|c| c.state == CandidateState::Succeeded)
        .collect();
    let lookup = |c: &Candidate, name: &str| -> f64 {
        c.params
            .get(name)
            .or_else(|| c.result.as_ref().and_then(|r| r.get(name)))
            .and_then(Value::as_f64)
            .unwrap_or(f64::NAN)
    };
    done.sort_by(|a, b| {
        for pref in &sel.prefer {
            let ord = match pref {
                Preference::Max(name) => lookup(b, name).total_cmp(&lookup(a, name)),
                Preference::Min(name) => lookup(a, name).total_cmp(&lookup(b, name)),
            };
            if ord.is_ne() {
                return ord;
            }
        }
        a.key.cmp(&b.key)
    });
    let ranked = done
        .iter()
        .enumerate()
        .map(|(rank, c)| RankedCandidate {
            job_id: c.job_id,
            rank,
        })
        .collect();
    Decision::Ready(Outcome {
        winners: done.iter().take(sel.top).map(|c| (*c).clone()).collect(),
        rule: "placeholder".into(),
        ranked,
    })
}
