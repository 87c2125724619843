//! Selection rules: which finished jobs of a stage go on to the next one.
//!
//! The store groups a stage's jobs by the selection's `per` parameters
//! ([`group_of`]) and asks [`decide`] about a group whenever one of its jobs finishes.
//! The answer is either why the group must wait, or the winners with a ranking of
//! every candidate that the store keeps as JSON next to the promotion.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::{OnFailure, Params, Preference, SelectionSpec};

/// One job of the ranked stage, as the store sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub job_id: Uuid,
    pub key: String,
    pub params: Params,
    pub state: CandidateState,
    /// The job's result object (e.g. `{"loss": 2.84}`), for succeeded jobs.
    pub result: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateState {
    Succeeded,
    /// Failed for good: no attempt left, or a failure another attempt cannot fix.
    Failed,
    /// Queued, running, or paused at a rung of successive halving.
    Pending,
    Cancelled,
    /// Stopped at a rung by successive halving: it ended, but with no final value to
    /// rank, and it is no failure either.
    Stopped,
}

/// A candidate with the values it was compared on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankedCandidate {
    pub job_id: Uuid,
    pub key: String,
    pub state: CandidateState,
    /// 1 for the best; `None` for candidates that did not succeed and so were not
    /// ranked.
    pub rank: Option<usize>,
    pub winner: bool,
    /// Each preference's field and the value found (`null` where there was none).
    pub values: Params,
}

/// A decided group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Best first; at most `top`.
    pub winners: Vec<Candidate>,
    /// The preferences in words: `largest batch_size, then lowest loss`.
    pub rule: String,
    /// Every candidate: the ranked ones best first, then the ones that did not succeed.
    pub ranked: Vec<RankedCandidate>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Not yet: the reason says what the group waits for.
    Waiting {
        reason: String,
    },
    Ready(Outcome),
}

/// The group a job belongs to: its values of the selection's `per` parameters.
pub fn group_of(sel: &SelectionSpec, params: &Params) -> Params {
    per_group(&sel.per, params)
}

/// The values of the `per` parameters: a group of a selection or of a halving rule.
pub fn per_group(per: &[String], params: &Params) -> Params {
    per.iter()
        .filter_map(|name| params.get(name).map(|value| (name.clone(), value.clone())))
        .collect()
}

/// [`per_group`] as canonical JSON: how a group's decisions and members are stored.
pub fn per_key(per: &[String], params: &Params) -> String {
    Value::Object(per_group(per, params)).to_string()
}

/// A selection group's parameters as canonical JSON.
pub fn group_key(sel: &SelectionSpec, params: &Params) -> String {
    per_key(&sel.per, params)
}

/// The selection's preferences in words.
pub fn rule_text(sel: &SelectionSpec) -> String {
    sel.prefer
        .iter()
        .map(|preference| match preference {
            Preference::Max(field) => format!("largest {field}"),
            Preference::Min(field) => format!("lowest {field}"),
        })
        .collect::<Vec<_>>()
        .join(", then ")
}

/// A field of a candidate: its parameters first, then its result object.
pub fn lookup<'a>(candidate: &'a Candidate, field: &str) -> Option<&'a Value> {
    candidate.params.get(field).or_else(|| {
        candidate
            .result
            .as_ref()
            .and_then(|result| result.get(field))
    })
}

/// Decides one group: waits while the selection's failure policy says so, otherwise
/// ranks the succeeded candidates by the preferences in order (later ones break ties,
/// the job key breaks the last ones) and takes the `top` best.
pub fn decide(sel: &SelectionSpec, group: &[Candidate]) -> Decision {
    let total = group.len();
    if total == 0 {
        return waiting("the group has no jobs yet".to_owned());
    }
    let count = |state: CandidateState| group.iter().filter(|c| c.state == state).count();
    let pending = count(CandidateState::Pending);
    if pending > 0 {
        return waiting(format!("{pending} of {total} jobs still queued or running"));
    }
    let stopped = count(CandidateState::Stopped);
    let unsuccessful = total - count(CandidateState::Succeeded) - stopped;
    if sel.on_failure == OnFailure::Wait && unsuccessful > 0 {
        return waiting(format!(
            "{unsuccessful} of {total} jobs failed or were cancelled; on_failure = \"wait\" \
             waits for every job to succeed (retry them, or use on_failure = \"promote\")"
        ));
    }
    if unsuccessful + stopped == total {
        return waiting(format!("none of the {total} jobs succeeded"));
    }

    let mut succeeded: Vec<&Candidate> = group
        .iter()
        .filter(|c| c.state == CandidateState::Succeeded)
        .collect();
    succeeded.sort_by(|a, b| {
        sel.prefer
            .iter()
            .map(|preference| compare_on(preference, a, b))
            .find(|ordering| ordering.is_ne())
            .unwrap_or(Ordering::Equal)
            .then_with(|| a.key.cmp(&b.key))
    });

    let winners: Vec<Candidate> = succeeded
        .iter()
        .take(sel.top)
        .map(|c| (*c).clone())
        .collect();
    let mut ranked: Vec<RankedCandidate> = succeeded
        .iter()
        .enumerate()
        .map(|(index, candidate)| ranked_entry(sel, candidate, Some(index + 1), index < sel.top))
        .collect();
    let mut others: Vec<&Candidate> = group
        .iter()
        .filter(|c| c.state != CandidateState::Succeeded)
        .collect();
    others.sort_by(|a, b| a.key.cmp(&b.key));
    ranked.extend(
        others
            .into_iter()
            .map(|c| ranked_entry(sel, c, None, false)),
    );

    Decision::Ready(Outcome {
        winners,
        rule: rule_text(sel),
        ranked,
    })
}

fn waiting(reason: String) -> Decision {
    Decision::Waiting { reason }
}

fn ranked_entry(
    sel: &SelectionSpec,
    candidate: &Candidate,
    rank: Option<usize>,
    winner: bool,
) -> RankedCandidate {
    let values = sel
        .prefer
        .iter()
        .map(|preference| {
            let field = field_of(preference);
            let value = lookup(candidate, field).cloned().unwrap_or(Value::Null);
            (field.to_owned(), value)
        })
        .collect();
    RankedCandidate {
        job_id: candidate.job_id,
        key: candidate.key.clone(),
        state: candidate.state,
        rank,
        winner,
        values,
    }
}

fn field_of(preference: &Preference) -> &str {
    match preference {
        Preference::Max(field) | Preference::Min(field) => field,
    }
}

/// `Less` when `a` is better. A candidate without the field (or with `null`) ranks
/// after every candidate that has it, whichever the direction.
fn compare_on(preference: &Preference, a: &Candidate, b: &Candidate) -> Ordering {
    let field = field_of(preference);
    let present = |c| lookup(c, field).filter(|value| !value.is_null());
    match (present(a), present(b)) {
        (Some(x), Some(y)) => {
            let ascending = compare_values(x, y);
            match preference {
                Preference::Max(_) => ascending.reverse(),
                Preference::Min(_) => ascending,
            }
        }
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// A total order on JSON values: numbers by value, strings by text, booleans false
/// first; values of different types by type, so mixed results still rank the same
/// way every time.
fn compare_values(x: &Value, y: &Value) -> Ordering {
    fn type_rank(value: &Value) -> u8 {
        match value {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Number(_) => 2,
            Value::String(_) => 3,
            Value::Array(_) => 4,
            Value::Object(_) => 5,
        }
    }
    match (x, y) {
        (Value::Number(a), Value::Number(b)) => {
            // JSON numbers are finite, so `total_cmp` orders them as numbers.
            let (a, b) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
            a.total_cmp(&b)
        }
        (Value::String(a), Value::String(b)) => a.cmp(b),
        (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
        _ => type_rank(x)
            .cmp(&type_rank(y))
            .then_with(|| x.to_string().cmp(&y.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn selection(prefer: Vec<Preference>, top: usize, on_failure: OnFailure) -> SelectionSpec {
        SelectionSpec {
            name: "winners".to_owned(),
            from: "pretext".to_owned(),
            per: vec!["backbone".to_owned()],
            prefer,
            top,
            on_failure,
        }
    }

    fn candidate(key: &str, params: Value, state: CandidateState, result: Value) -> Candidate {
        Candidate {
            job_id: Uuid::new_v4(),
            key: key.to_owned(),
            params: match params {
                Value::Object(map) => map,
                _ => unreachable!("tests pass objects"),
            },
            state,
            result: (!result.is_null()).then_some(result),
        }
    }

    #[test]
    fn rule_text_reads_like_the_report() {
        let sel = selection(
            vec![
                Preference::Max("batch_size".into()),
                Preference::Min("loss".into()),
            ],
            1,
            OnFailure::Wait,
        );
        assert_eq!(rule_text(&sel), "largest batch_size, then lowest loss");
    }

    #[test]
    fn params_shadow_result_fields() {
        let c = candidate(
            "k",
            json!({"loss": 1.0}),
            CandidateState::Succeeded,
            json!({"loss": 2.0, "accuracy": 0.5}),
        );
        assert_eq!(lookup(&c, "loss"), Some(&json!(1.0)));
        assert_eq!(lookup(&c, "accuracy"), Some(&json!(0.5)));
        assert_eq!(lookup(&c, "f1"), None);
    }

    #[test]
    fn missing_values_rank_last_in_both_directions() {
        for preference in [
            Preference::Max("loss".into()),
            Preference::Min("loss".into()),
        ] {
            let sel = selection(vec![preference], 1, OnFailure::Promote);
            let group = [
                candidate("a", json!({}), CandidateState::Succeeded, json!({})),
                candidate(
                    "b",
                    json!({}),
                    CandidateState::Succeeded,
                    json!({"loss": 3.0}),
                ),
            ];
            let Decision::Ready(outcome) = decide(&sel, &group) else {
                panic!("every candidate finished");
            };
            assert_eq!(outcome.winners[0].key, "b");
            assert_eq!(outcome.ranked[1].values["loss"], Value::Null);
        }
    }

    #[test]
    fn outcome_round_trips_through_json() {
        let sel = selection(vec![Preference::Min("loss".into())], 1, OnFailure::Promote);
        let group = [
            candidate(
                "a",
                json!({"backbone": "r"}),
                CandidateState::Succeeded,
                json!({"loss": 1.5}),
            ),
            candidate(
                "b",
                json!({"backbone": "r"}),
                CandidateState::Failed,
                Value::Null,
            ),
        ];
        let Decision::Ready(outcome) = decide(&sel, &group) else {
            panic!("promote ranks the succeeded jobs");
        };
        let text = serde_json::to_string(&outcome).expect("an outcome is plain data");
        let back: Outcome = serde_json::from_str(&text).expect("it reads back");
        assert_eq!(back, outcome);
        assert_eq!(back.ranked[1].state, CandidateState::Failed);
        assert_eq!(back.ranked[1].rank, None);
    }
}
