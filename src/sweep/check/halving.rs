//! A stage's successive-halving rule: a pretext stage's per-epoch metric, rungs below
//! every cell's epochs, an exact fraction, and groups that never compare values that
//! are not comparable.

use super::*;
use crate::sweep::halving::{HalvingSpec, Keep, Mode};
use crate::sweep::params::defaults;

/// Per-epoch metrics a pretext job records: what a rung can compare.
const EPOCH_METRICS: &[&str] = &["loss"];

impl Checker<'_> {
    pub(super) fn halving(
        &self,
        index: usize,
        raw: &Spanned<RawHalving>,
        stage: &StageSpec,
        fields: &StageFields,
    ) -> SweepResult<HalvingSpec> {
        let field = |name: &str| format!("stages[{index}].halving.{name}");
        let rule = raw.get_ref();
        if stage.kind != StageKind::Pretext {
            return Err(self.invalid(
                raw.span(),
                format!("stages[{index}].halving"),
                format!(
                    "a {} stage cannot pause at a rung and go on later: successive halving \
                     runs on pretext stages, which resume from their checkpoints",
                    stage.kind.as_str()
                ),
            ));
        }
        if stage.from.is_some() {
            return Err(self.invalid(
                raw.span(),
                format!("stages[{index}].halving"),
                "a stage that runs on a selection's winners trains each once: successive \
                 halving cuts a grid stage",
            ));
        }
        if !EPOCH_METRICS.contains(&rule.metric.get_ref().as_str()) {
            return Err(self.invalid(
                rule.metric.span(),
                field("metric"),
                format!(
                    "`{}` is not a metric a pretext job records every epoch ({})",
                    rule.metric.get_ref(),
                    list_or_none(EPOCH_METRICS.iter())
                ),
            ));
        }
        let mode = match rule.mode.as_ref().map(|m| m.get_ref().as_str()) {
            None | Some("min") => Mode::Min,
            Some("max") => Mode::Max,
            Some(other) => {
                return Err(self.invalid(
                    rule.mode.as_ref().map_or(raw.span(), Spanned::span),
                    field("mode"),
                    format!("{other:?} is not \"min\" or \"max\""),
                ))
            }
        };

        // The fewest epochs any cell trains: a rung at or past it would never be cut.
        let epochs = |value: &Value| value.as_i64();
        let fewest = match stage.grid.iter().find(|(axis, _)| axis == "epochs") {
            Some((_, values)) => values.iter().filter_map(epochs).min(),
            None => stage.params.get("epochs").and_then(epochs),
        }
        .unwrap_or_else(defaults::epochs);
        if rule.rungs.get_ref().is_empty() {
            return Err(self.invalid(
                rule.rungs.span(),
                field("rungs"),
                "is empty: give the epochs to cut at, e.g. rungs = [10, 30]",
            ));
        }
        let mut rungs: Vec<i64> = Vec::new();
        for rung in rule.rungs.get_ref() {
            let value = *rung.get_ref();
            let problem = if value < 1 {
                Some(format!("{value} is not an epoch count (1 or more)"))
            } else if value >= fewest {
                Some(format!(
                    "{value} is not below the {fewest} epochs of every cell: a rung must \
                     come before the end"
                ))
            } else if rungs.last().is_some_and(|&last| value <= last) {
                Some(format!("{value} does not come after the rung before it"))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(self.invalid(rung.span(), field("rungs"), problem));
            }
            rungs.push(value);
        }

        let keep_text = match rule.keep.get_ref() {
            toml::Value::String(text) => text.clone(),
            toml::Value::Float(value) => value.to_string(),
            other => other.to_string(),
        };
        let keep = Keep::parse(&keep_text).map_err(|problem| {
            self.invalid(
                rule.keep.span(),
                field("keep"),
                format!("{problem}; write the fraction that goes on, e.g. keep = \"1/3\""),
            )
        })?;

        let mut per: Vec<String> = Vec::new();
        for name in &rule.per {
            if !fields.names.contains(name.get_ref()) || name.get_ref() == "seed" {
                return Err(self.invalid(
                    name.span(),
                    field("per"),
                    format!(
                        "`{}` is not a parameter of stage `{}` (parameters: {})",
                        name.get_ref(),
                        stage.name,
                        list_or_none(fields.names.iter().filter(|n| *n != "seed"))
                    ),
                ));
            }
            if per.contains(name.get_ref()) {
                return Err(self.invalid(
                    name.span(),
                    field("per"),
                    format!("`{}` is listed twice", name.get_ref()),
                ));
            }
            per.push(name.get_ref().clone());
        }
        // NT-Xent's chance level is ln(2N − 1): losses at two batch sizes differ by
        // construction, so a group must hold one batch size.
        let swept = |axis: &str| {
            stage
                .grid
                .iter()
                .any(|(name, values)| name == axis && values.len() > 1)
        };
        if rule.metric.get_ref() == "loss"
            && swept("batch_size")
            && !per.iter().any(|p| p == "batch_size")
        {
            return Err(self.invalid(
                rule.per.first().map_or(raw.span(), Spanned::span),
                field("per"),
                "the grid sweeps batch_size, and NT-Xent losses at two batch sizes are not \
                 comparable (chance is ln(2N − 1)): add \"batch_size\" to per",
            ));
        }
        Ok(HalvingSpec {
            metric: rule.metric.get_ref().clone(),
            mode,
            rungs,
            keep,
            per,
        })
    }
}
