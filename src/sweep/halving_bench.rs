//! `sweeper bench halving`: what successive halving would save on a study, replayed
//! from complete loss curves: curves shaped like the seed report's 108 pretext cells,
//! and a stored stage's own curves.
//!
//! The curves and the replay's stops can be written as JSON, so that an independent
//! implementation (`benches/halving_reference.py`) checks the same jobs stop at the
//! same rungs.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::halving::{Curve, HalvingSpec, Keep, Mode, Replay};
use super::Params;

/// One group's complete curves.
#[derive(Debug, Clone)]
pub struct GroupCurves {
    pub group: Params,
    pub curves: Vec<Curve>,
}

/// The seed study's grid (4 backbones × data 100/70/40 % × batch 64/128/256 ×
/// projection 32/64/128) over 100 epochs. Each curve falls from chance, ln(2N − 1),
/// towards a floor that is lower for more data, larger batches and the ResNets, with
/// a deterministic wobble; ResNet-50 at 40 % and batch 64 stays near chance, as in
/// the report's tables.
pub fn seed_shaped_study() -> Vec<GroupCurves> {
    let backbones = [
        ("resnet50", 0.30),
        ("resnet101", 0.34),
        ("inception_v3", 0.40),
        ("inception_resnet_v2", 0.44),
    ];
    let mut groups = Vec::new();
    let mut index = 0u64;
    for (backbone, base) in backbones {
        for batch in [64i64, 128, 256] {
            let chance = ((2 * batch - 1) as f64).ln();
            let mut curves = Vec::new();
            for data in [1.0, 0.7, 0.4] {
                for projection in [32i64, 64, 128] {
                    index += 1;
                    let mut floor = base + (1.0 - data) * 0.35 - (batch as f64).log2() * 0.01
                        + (projection as f64).log2() * 0.004;
                    if backbone == "resnet50" && data == 0.4 && batch == 64 {
                        floor = 0.97;
                    }
                    let tau = 8.0 + 6.0 * (1.0 - data) + (index % 5) as f64;
                    let values = (1..=100)
                        .map(|epoch| {
                            let e = epoch as f64;
                            let wobble = ((index * 31 + epoch) as f64 * 0.7).sin() * 0.004;
                            chance * (floor + (1.0 - floor) * (-e / tau).exp() + wobble)
                        })
                        .collect();
                    curves.push(Curve {
                        job_id: Uuid::from_u128(u128::from(index)),
                        key: format!(
                            "{backbone}/data{:.0}/batch{batch}/proj{projection}",
                            data * 100.0
                        ),
                        values,
                    });
                }
            }
            let mut group = Params::new();
            group.insert("backbone".into(), json!(backbone));
            group.insert("batch_size".into(), json!(batch));
            groups.push(GroupCurves { group, curves });
        }
    }
    groups
}

/// The rule the seed study would declare: cut at 10 and 30 epochs, keep a third,
/// within each backbone and batch size.
pub fn seed_rule() -> HalvingSpec {
    HalvingSpec {
        metric: "loss".into(),
        mode: Mode::Min,
        rungs: vec![10, 30],
        keep: Keep {
            numerator: 1,
            denominator: 3,
        },
        per: vec!["backbone".into(), "batch_size".into()],
    }
}

/// One study's replay: per group and in total.
#[derive(Debug, Clone, Serialize)]
pub struct StudyReplay {
    pub groups: usize,
    pub jobs: usize,
    pub epochs_spent: i64,
    pub epochs_full: i64,
    /// Groups whose best job at the end is the one the full grid picks.
    pub same_winner: usize,
    /// `{group, job, key, rung}` for every stop, group by group.
    pub stops: Vec<Value>,
}

pub fn replay_study(rule: &HalvingSpec, groups: &[GroupCurves]) -> StudyReplay {
    let mut replay = StudyReplay {
        groups: groups.len(),
        jobs: 0,
        epochs_spent: 0,
        epochs_full: 0,
        same_winner: 0,
        stops: Vec::new(),
    };
    for group in groups {
        let Replay {
            stopped,
            epochs_spent,
            epochs_full,
            winner,
            winner_full,
        } = rule.replay(&group.curves);
        replay.jobs += group.curves.len();
        replay.epochs_spent += epochs_spent;
        replay.epochs_full += epochs_full;
        replay.same_winner += usize::from(winner == winner_full);
        let keys: BTreeMap<Uuid, &str> = group
            .curves
            .iter()
            .map(|c| (c.job_id, c.key.as_str()))
            .collect();
        replay.stops.extend(stopped.into_iter().map(|(job, rung)| {
            json!({ "group": group.group, "job": job, "key": keys[&job], "rung": rung })
        }));
    }
    replay
}

/// The curves and the rule as the reference implementation reads them.
pub fn curves_json(rule: &HalvingSpec, groups: &[GroupCurves]) -> Value {
    json!({
        "rule": {
            "mode": rule.mode,
            "rungs": rule.rungs,
            "keep": [rule.keep.numerator, rule.keep.denominator],
        },
        "groups": groups.iter().map(|group| json!({
            "group": group.group,
            "curves": group.curves.iter().map(|c| json!({
                "job": c.job_id, "key": c.key, "values": c.values,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_shaped_study_saves_epochs_and_keeps_most_winners() {
        let study = seed_shaped_study();
        assert_eq!(study.len(), 12);
        assert_eq!(study.iter().map(|g| g.curves.len()).sum::<usize>(), 108);
        let replay = replay_study(&seed_rule(), &study);
        assert_eq!(replay.epochs_full, 10_800);
        // Per group of 9: 6 stop at 10, 2 of the 3 left at 30, 1 runs 100.
        assert_eq!(replay.epochs_spent, 12 * (6 * 10 + 2 * 30 + 100));
        assert_eq!(replay.stops.len(), 12 * 8);
    }
}
