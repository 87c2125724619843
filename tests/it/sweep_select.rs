//! Selection rules against the seed report's own stage-1 numbers, the failure
//! policies, top-k, and the downstream jobs a winner starts.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sweeper::sweep::expand::downstream;
use sweeper::sweep::select::{decide, group_of, Candidate, CandidateState, Decision, Outcome};
use sweeper::sweep::{OnFailure, Params, Preference, SelectionSpec, Spec};

use crate::common::sweep::*;

fn report() -> Spec {
    load_shipped("report.toml").spec
}

/// The report's candidates split into the selection's groups, keyed by backbone.
fn groups(spec: &Spec, candidates: Vec<Candidate>) -> BTreeMap<String, Vec<Candidate>> {
    let selection = spec.selection("winners").expect("report has the selection");
    let mut groups: BTreeMap<String, Vec<Candidate>> = BTreeMap::new();
    for candidate in candidates {
        let group = group_of(selection, &candidate.params);
        let backbone = group["backbone"]
            .as_str()
            .expect("backbone is a string")
            .to_owned();
        groups.entry(backbone).or_default().push(candidate);
    }
    groups
}

fn ready(decision: Decision) -> Outcome {
    match decision {
        Decision::Ready(outcome) => outcome,
        Decision::Waiting { reason } => panic!("expected a decision, waiting: {reason}"),
    }
}

fn waiting(decision: Decision) -> String {
    match decision {
        Decision::Waiting { reason } => reason,
        Decision::Ready(outcome) => panic!("expected to wait, decided {:?}", outcome.winners),
    }
}

fn with_policy(spec: &Spec, on_failure: OnFailure, top: usize) -> SelectionSpec {
    let mut selection = spec.selection("winners").expect("selection exists").clone();
    selection.on_failure = on_failure;
    selection.top = top;
    selection
}

fn loss(candidate: &Candidate) -> f64 {
    candidate
        .result
        .as_ref()
        .and_then(|r| r["loss"].as_f64())
        .expect("a loss")
}

#[test]
fn fixture_holds_the_reports_108_cells() {
    let rows = seed_report_rows();
    assert_eq!(rows.len(), 108);
    // Every row matches exactly one job of report.toml (checked inside the helper),
    // and the helper uses every job.
    assert_eq!(seed_report_candidates(&report()).len(), 108);
}

#[test]
fn seed_report_rule_picks_the_largest_batch_then_the_lowest_loss() {
    let spec = report();
    let selection = spec.selection("winners").expect("selection exists");
    let groups = groups(&spec, seed_report_candidates(&spec));
    assert_eq!(groups.len(), 4);
    assert!(groups.values().all(|group| group.len() == 27));

    let expected = [
        ("resnet50", 1.0, 64, 2.84),
        ("resnet101", 0.7, 128, 2.78),
        // The report's text names projection 128 (2.7), but its own table has 2.39
        // for projection 32 in the same row: the rule applied to the table gives 32.
        ("inception_v3", 1.0, 32, 2.39),
        ("inception_resnet_v2", 1.0, 128, 1.92),
    ];
    for (backbone, fraction, projection, best_loss) in expected {
        let outcome = ready(decide(selection, &groups[backbone]));
        assert_eq!(outcome.winners.len(), 1);
        let winner = &outcome.winners[0];
        assert_eq!(param(winner, "backbone"), &json!(backbone));
        assert_eq!(param(winner, "batch_size"), &json!(256), "{backbone}");
        assert_eq!(
            param(winner, "data_fraction").as_f64(),
            Some(fraction),
            "{backbone}"
        );
        assert_eq!(
            param(winner, "projection_dim"),
            &json!(projection),
            "{backbone}"
        );
        assert_eq!(loss(winner), best_loss, "{backbone}");

        assert_eq!(outcome.rule, "largest batch_size, then lowest loss");
        assert_eq!(outcome.ranked.len(), 27);
        let first = &outcome.ranked[0];
        assert_eq!((first.rank, first.winner), (Some(1), true));
        assert_eq!(first.key, winner.key);
        assert_eq!(first.values["batch_size"], json!(256));
        assert_eq!(first.values["loss"], json!(best_loss));
        // Batch 256 first (9 runs), then 128, then 64; losses rise within a batch size.
        let batches: Vec<i64> = outcome
            .ranked
            .iter()
            .map(|r| r.values["batch_size"].as_i64().unwrap_or(0))
            .collect();
        assert_eq!(batches, [[256; 9], [128; 9], [64; 9]].concat());
        for window in outcome.ranked.windows(2) {
            if window[0].values["batch_size"] == window[1].values["batch_size"] {
                assert!(window[0].values["loss"].as_f64() <= window[1].values["loss"].as_f64());
            }
        }
        assert!(outcome.ranked[1..].iter().all(|r| !r.winner));
    }
}

#[test]
fn the_first_preference_decides_before_the_loss() {
    // Preferring the smallest batch instead moves ResNet-50's pick to batch 64.
    let spec = report();
    let mut selection = spec.selection("winners").expect("selection exists").clone();
    selection.prefer = vec![
        Preference::Min("batch_size".into()),
        Preference::Min("loss".into()),
    ];
    let groups = groups(&spec, seed_report_candidates(&spec));
    let outcome = ready(decide(&selection, &groups["resnet50"]));
    // Batch 64 of ResNet-50: lowest is 4.17 (full data, projection 64).
    assert_eq!(param(&outcome.winners[0], "batch_size"), &json!(64));
    assert_eq!(loss(&outcome.winners[0]), 4.17);
}

#[test]
fn later_preferences_break_ties_and_the_key_breaks_the_last() {
    // ResNet-101, batch 64, 70 % of the data: projections 64 and 128 tie at 4.75.
    let spec = report();
    let tied: Vec<Candidate> = seed_report_candidates(&spec)
        .into_iter()
        .filter(|c| {
            param(c, "backbone") == &json!("resnet101")
                && param(c, "batch_size") == &json!(64)
                && param(c, "data_fraction").as_f64() == Some(0.7)
        })
        .collect();
    assert_eq!(tied.len(), 3);
    let mut selection = spec.selection("winners").expect("selection exists").clone();
    selection.prefer = vec![Preference::Min("loss".into())];
    selection.top = 2;
    let outcome = ready(decide(&selection, &tied));
    let losses: Vec<f64> = outcome.winners.iter().map(loss).collect();
    assert_eq!(losses, [4.75, 4.75]);
    assert!(
        outcome.winners[0].key < outcome.winners[1].key,
        "the key orders a tie"
    );
    // The same order whatever order the store lists them in.
    let mut reversed = tied.clone();
    reversed.reverse();
    assert_eq!(
        ready(decide(&selection, &reversed)).winners,
        outcome.winners
    );

    for (preference, projection) in [
        (Preference::Max("projection_dim".into()), 128),
        (Preference::Min("projection_dim".into()), 64),
    ] {
        selection.prefer = vec![Preference::Min("loss".into()), preference];
        selection.top = 1;
        let outcome = ready(decide(&selection, &tied));
        assert_eq!(
            param(&outcome.winners[0], "projection_dim"),
            &json!(projection)
        );
    }
}

#[test]
fn top_k_takes_the_k_best_in_order() {
    let spec = report();
    let groups = groups(&spec, seed_report_candidates(&spec));
    let selection = with_policy(&spec, OnFailure::Wait, 3);
    let outcome = ready(decide(&selection, &groups["inception_resnet_v2"]));
    // Batch 256 of InceptionResNetV2, lowest three: 1.92, 1.94, 2.16.
    let losses: Vec<f64> = outcome.winners.iter().map(loss).collect();
    assert_eq!(losses, [1.92, 1.94, 2.16]);
    let winners: Vec<bool> = outcome.ranked.iter().take(4).map(|r| r.winner).collect();
    assert_eq!(winners, [true, true, true, false]);

    // More winners asked for than the group holds: all of them.
    let small: Vec<Candidate> = groups["resnet50"].iter().take(2).cloned().collect();
    let outcome = ready(decide(&with_policy(&spec, OnFailure::Wait, 5), &small));
    assert_eq!(outcome.winners.len(), 2);
}

/// The ResNet-50 group with the given candidates' states changed, picked by loss.
fn resnet50_with(states: &[(f64, CandidateState)]) -> (Spec, Vec<Candidate>) {
    let spec = report();
    let mut group = groups(&spec, seed_report_candidates(&spec))
        .remove("resnet50")
        .expect("group");
    for (target_loss, state) in states {
        let candidate = group
            .iter_mut()
            .find(|c| c.result.is_some() && loss(c) == *target_loss)
            .expect("a run with that loss");
        candidate.state = *state;
        if *state != CandidateState::Succeeded {
            candidate.result = None;
        }
    }
    (spec, group)
}

#[test]
fn wait_policy_waits_for_pending_and_failed_jobs() {
    let (spec, group) = resnet50_with(&[(6.13, CandidateState::Pending)]);
    let reason = waiting(decide(&with_policy(&spec, OnFailure::Wait, 1), &group));
    assert!(
        reason.contains("1 of 27 jobs still queued or running"),
        "{reason}"
    );

    // The winner itself failed: waiting, not promoting the runner-up.
    let (spec, group) = resnet50_with(&[(2.84, CandidateState::Failed)]);
    let reason = waiting(decide(&with_policy(&spec, OnFailure::Wait, 1), &group));
    assert!(
        reason.contains("1 of 27 jobs failed or were cancelled"),
        "{reason}"
    );

    let (spec, group) = resnet50_with(&[(9.0, CandidateState::Cancelled)]);
    assert!(matches!(
        decide(&with_policy(&spec, OnFailure::Wait, 1), &group),
        Decision::Waiting { .. }
    ));
}

#[test]
fn promote_policy_waits_for_pending_then_ranks_the_succeeded() {
    let (spec, group) = resnet50_with(&[
        (2.84, CandidateState::Failed),
        (5.0, CandidateState::Pending),
    ]);
    let promote = with_policy(&spec, OnFailure::Promote, 1);
    let reason = waiting(decide(&promote, &group));
    assert!(
        reason.contains("1 of 27 jobs still queued or running"),
        "{reason}"
    );

    let (spec, group) = resnet50_with(&[
        (2.84, CandidateState::Failed),
        (2.88, CandidateState::Cancelled),
    ]);
    let outcome = ready(decide(&with_policy(&spec, OnFailure::Promote, 1), &group));
    // 2.84 failed and 2.88 was cancelled: the next of batch 256 is 3.16.
    assert_eq!(loss(&outcome.winners[0]), 3.16);
    assert_eq!(outcome.ranked.len(), 27, "every candidate is listed");
    let unranked: Vec<CandidateState> = outcome
        .ranked
        .iter()
        .filter(|r| r.rank.is_none())
        .map(|r| r.state)
        .collect();
    assert_eq!(unranked.len(), 2);
    assert!(
        unranked.contains(&CandidateState::Failed) && unranked.contains(&CandidateState::Cancelled)
    );
    assert_eq!(outcome.ranked[24].rank, Some(25));
}

#[test]
fn promote_with_no_success_waits_with_a_reason() {
    let spec = report();
    let mut group = groups(&spec, seed_report_candidates(&spec))
        .remove("resnet101")
        .expect("group");
    for candidate in &mut group {
        candidate.state = CandidateState::Failed;
        candidate.result = None;
    }
    let reason = waiting(decide(&with_policy(&spec, OnFailure::Promote, 1), &group));
    assert!(reason.contains("none of the 27 jobs succeeded"), "{reason}");
    let reason = waiting(decide(&with_policy(&spec, OnFailure::Promote, 1), &[]));
    assert!(reason.contains("no jobs"), "{reason}");
}

#[test]
fn group_of_takes_the_per_values() {
    let spec = report();
    let selection = spec.selection("winners").expect("selection exists");
    let params: Params = match json!({"backbone": "resnet50", "batch_size": 64, "seed": 0}) {
        Value::Object(map) => map,
        _ => unreachable!("an object literal"),
    };
    let group = group_of(selection, &params);
    assert_eq!(Value::Object(group), json!({"backbone": "resnet50"}));
}

#[test]
fn winners_start_one_job_per_downstream_stage() {
    let spec = report();
    let groups = groups(&spec, seed_report_candidates(&spec));
    let selection = spec.selection("winners").expect("selection exists");
    let mut all_keys = Vec::new();
    for group in groups.values() {
        let winner = ready(decide(selection, group)).winners.remove(0);
        let jobs = downstream(&spec, "winners", &winner);
        let stages: Vec<&str> = jobs.iter().map(|job| job.stage.as_str()).collect();
        assert_eq!(stages, ["linear", "finetune"]);
        let linear = &jobs[0].params;
        // The stage's own parameters win over the winner's (batch 256 either way here,
        // the pretext lr absent), the winner's identity stays.
        assert_eq!(linear["lr"], json!(0.2));
        assert_eq!(linear["batch_size"], json!(256));
        assert_eq!(linear["max_epochs"], json!(100));
        assert_eq!(linear["backbone"], winner.params["backbone"]);
        assert_eq!(linear["projection_dim"], winner.params["projection_dim"]);
        assert_eq!(linear["seed"], json!(0));
        assert_eq!(jobs[1].params["lr"], json!(1e-4));
        assert_eq!(jobs[1].params["max_epochs"], json!(30));
        assert_eq!(jobs[1].max_attempts, 3);
        // Same winner, same jobs.
        assert_eq!(downstream(&spec, "winners", &winner), jobs);
        all_keys.extend(jobs.into_iter().map(|job| job.key));
    }
    all_keys.sort();
    all_keys.dedup();
    assert_eq!(all_keys.len(), 8);
    assert!(downstream(&spec, "no-such-selection", &groups["resnet50"][0]).is_empty());
}

#[test]
fn downstream_keys_follow_the_winner_and_the_stage() {
    let spec = report();
    let candidates = seed_report_candidates(&spec);
    let a = downstream(&spec, "winners", &candidates[0]);
    let b = downstream(&spec, "winners", &candidates[1]);
    assert_ne!(a[0].key, b[0].key);
    // The demo overrides batch_size downstream: the stage's value wins.
    let demo = load_shipped("demo.toml").spec;
    let winner = seed_report_candidates(&spec)
        .into_iter()
        .find(|c| param(c, "batch_size") == &json!(256))
        .expect("a batch-256 run");
    let jobs = downstream(&demo, "winners", &winner);
    assert_eq!(jobs[0].params["batch_size"], json!(64));
    // Same params, other parent: other key.
    let other = Candidate {
        key: "other".into(),
        ..winner.clone()
    };
    assert_ne!(downstream(&demo, "winners", &other)[0].key, jobs[0].key);
}

#[test]
fn downstream_stage_seeds_run_each_winner_once_per_seed() {
    let text = shipped_text("report.toml").replacen(
        "from = \"winners\"\ndataset = \"A2\"",
        "from = \"winners\"\ndataset = \"A2\"\nseeds = [1, 2, 3]",
        1,
    );
    let spec = parse_ok(&text);
    let winner = seed_report_candidates(&spec).remove(0);
    let jobs = downstream(&spec, "winners", &winner);
    let linear_seeds: Vec<&Value> = jobs
        .iter()
        .filter(|job| job.stage == "linear")
        .map(|job| &job.params["seed"])
        .collect();
    assert_eq!(linear_seeds, [&json!(1), &json!(2), &json!(3)]);
    assert_eq!(jobs.len(), 4, "three linear jobs and one fine-tune job");
    let summary = sweeper::sweep::expand::dry_run_summary(&spec);
    assert!(
        summary.contains("linear: 12 jobs once promoted (4 groups of [backbone] × top 1 × 3 seeds"),
        "{summary}"
    );
}

/// The report's study: one random-init baseline per backbone for each downstream
/// stage, with the stage's own settings and no winner's, under keys no winner's job
/// shares; off when the sweep says so.
#[test]
fn baselines_are_one_per_backbone_and_downstream_stage() {
    let spec = report();
    let baselines = sweeper::sweep::expand::baselines(&spec);
    let placed: Vec<(&str, &str)> = baselines
        .iter()
        .map(|job| {
            (
                job.stage.as_str(),
                job.params["backbone"].as_str().expect("a backbone"),
            )
        })
        .collect();
    assert_eq!(
        placed,
        [
            ("linear", "resnet50"),
            ("linear", "resnet101"),
            ("linear", "inception_v3"),
            ("linear", "inception_resnet_v2"),
            ("finetune", "resnet50"),
            ("finetune", "resnet101"),
            ("finetune", "inception_v3"),
            ("finetune", "inception_resnet_v2"),
        ]
    );
    for job in &baselines {
        assert!(
            sweeper::sweep::params::is_baseline(&job.params),
            "{:?}",
            job.params
        );
        assert_eq!(job.params["seed"], json!(0));
        // Nothing of a pretext cell but its architecture.
        for key in ["projection_dim", "data_fraction", "epochs", "optimizer"] {
            assert!(!job.params.contains_key(key), "{key} in {:?}", job.params);
        }
        let typed = sweeper::sweep::params::DownstreamParams::from_params(&job.params)
            .expect("typed downstream parameters");
        assert!(typed.baseline);
    }
    assert_eq!(baselines[0].params["lr"], json!(0.2));
    assert_eq!(baselines[4].params["lr"], json!(1e-4));

    let groups = groups(&spec, seed_report_candidates(&spec));
    let selection = spec.selection("winners").expect("selection exists");
    let winner = ready(decide(selection, &groups["resnet50"]))
        .winners
        .remove(0);
    let promoted: Vec<String> = downstream(&spec, "winners", &winner)
        .into_iter()
        .map(|job| job.key)
        .collect();
    assert!(baselines.iter().all(|job| !promoted.contains(&job.key)));

    let off = Spec {
        baselines: false,
        ..spec
    };
    assert!(sweeper::sweep::expand::baselines(&off).is_empty());
}
