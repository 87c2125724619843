//! Sweep versions: what a resubmitted file changes against the stored version.
//!
//! A resubmission that only adds (axis values, seeds, stages, datasets, selections)
//! extends the study: the cells already stored keep their meaning, and only the new
//! ones are added. Anything that would change what a stored cell means (a fixed
//! parameter, a dataset definition, `data_root`, a selection rule, a removed value)
//! is a [`Change`]; `submit` refuses it, with the list, unless a new version is asked
//! for explicitly.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use super::check::same_value;
use super::{Params, Spec, StageSpec};

/// One difference that alters stored cells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// Where, in the file's terms: `stages.pretext.params.epochs`, `data_root`, …
    pub path: String,
    pub before: String,
    pub after: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} → {}", self.path, self.before, self.after)
    }
}

/// Every change from `stored` to `new` that alters cells already stored; empty when
/// `new` is the same study or only extends it.
pub fn changes(stored: &Spec, new: &Spec) -> Vec<Change> {
    let mut out = Vec::new();
    let mut push = |path: String, before: String, after: String| {
        out.push(Change {
            path,
            before,
            after,
        })
    };
    if stored.data_root != new.data_root {
        push(
            "data_root".into(),
            stored.data_root.display().to_string(),
            new.data_root.display().to_string(),
        );
    }
    let removed: Vec<String> = stored
        .seeds
        .iter()
        .filter(|seed| !new.seeds.contains(seed))
        .map(i64::to_string)
        .collect();
    if !removed.is_empty() {
        push(
            "sweep.seeds".into(),
            format!("{:?}", stored.seeds),
            format!("{:?} (removes {})", new.seeds, removed.join(", ")),
        );
    }
    for (name, dataset) in &stored.datasets {
        let path = format!("datasets.{name}");
        match new.datasets.get(name) {
            None => push(path, "defined".into(), "removed".into()),
            Some(after) => diff_values(&path, &to_value(dataset), &to_value(after), &mut push),
        }
    }
    for stage in &stored.stages {
        let path = format!("stages.{}", stage.name);
        match new.stage(&stage.name) {
            None => push(path, "defined".into(), "removed".into()),
            Some(after) => stage_changes(&path, stage, after, &mut push),
        }
    }
    for selection in &stored.selections {
        let path = format!("selections.{}", selection.name);
        match new.selection(&selection.name) {
            None => push(path, "defined".into(), "removed".into()),
            Some(after) => diff_values(&path, &to_value(selection), &to_value(after), &mut push),
        }
    }
    out
}

fn stage_changes(
    path: &str,
    stored: &StageSpec,
    new: &StageSpec,
    push: &mut impl FnMut(String, String, String),
) {
    let fixed = |stage: &StageSpec| {
        serde_json::json!({
            "kind": stage.kind,
            "dataset": stage.dataset,
            "from": stage.from,
            "command": stage.command,
            "exclude": stage.exclude,
        })
    };
    diff_values(path, &fixed(stored), &fixed(new), push);
    diff_values(
        &format!("{path}.params"),
        &Value::Object(stored.params.clone()),
        &Value::Object(new.params.clone()),
        push,
    );
    let axes = |stage: &StageSpec| -> Vec<String> {
        stage.grid.iter().map(|(axis, _)| axis.clone()).collect()
    };
    if axes(stored) != axes(new) {
        // A new axis gives every stored cell a parameter it was not trained with.
        push(
            format!("{path}.grid"),
            format!("axes [{}]", axes(stored).join(", ")),
            format!("axes [{}]", axes(new).join(", ")),
        );
        return;
    }
    for ((axis, before), (_, after)) in stored.grid.iter().zip(&new.grid) {
        let removed: Vec<String> = before
            .iter()
            .filter(|value| !after.iter().any(|v| same_value(v, value)))
            .map(Value::to_string)
            .collect();
        if !removed.is_empty() {
            push(
                format!("{path}.grid.{axis}"),
                list(before),
                format!("{} (removes {})", list(after), removed.join(", ")),
            );
        }
    }
    if let Some(seeds) = &stored.seeds {
        let kept: BTreeSet<i64> = new.seeds.iter().flatten().copied().collect();
        if new.seeds.is_none() || seeds.iter().any(|seed| !kept.contains(seed)) {
            push(
                format!("{path}.seeds"),
                format!("{seeds:?}"),
                format!("{:?}", new.seeds),
            );
        }
    }
}

fn list(values: &[Value]) -> String {
    let items: Vec<String> = values.iter().map(Value::to_string).collect();
    format!("[{}]", items.join(", "))
}

fn to_value(value: &impl Serialize) -> Value {
    // Specs are plain data: serialising one cannot fail.
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Differences between two JSON values, key by key for objects.
fn diff_values(
    path: &str,
    before: &Value,
    after: &Value,
    push: &mut impl FnMut(String, String, String),
) {
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let absent = Value::Null;
                diff_values(
                    &format!("{path}.{key}"),
                    a.get(key).unwrap_or(&absent),
                    b.get(key).unwrap_or(&absent),
                    push,
                );
            }
        }
        (a, b) if same_value(a, b) => {}
        (a, b) => push(path.to_owned(), shown(a), shown(b)),
    }
}

fn shown(value: &Value) -> String {
    match value {
        Value::Null => "unset".to_owned(),
        other => other.to_string(),
    }
}

/// Parameters of stored cells compare by value (1 and 1.0 alike).
pub fn same_params(a: &Params, b: &Params) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(key, value)| b.get(key).is_some_and(|other| same_value(value, other)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::{parse_str, Overrides};
    use std::path::Path;

    const BASE: &str = r#"
[sweep]
name = "v"
data_root = "/data"
seeds = [0]
[datasets.A]
folder = "a"
max_total = 100
[[stages]]
name = "pretext"
kind = "pretext"
dataset = "A"
[stages.grid]
backbone = ["small_resnet"]
batch_size = [16, 32]
[stages.params]
epochs = 3
"#;

    fn spec(text: &str) -> Spec {
        parse_str(text, Path::new("v.toml"), &Overrides::default())
            .expect("valid")
            .spec
    }

    #[test]
    fn extensions_change_nothing_stored() {
        let base = spec(BASE);
        assert!(changes(&base, &base).is_empty());
        let wider = spec(
            &BASE
                .replace("[16, 32]", "[16, 32, 64]")
                .replace("seeds = [0]", "seeds = [0, 1]"),
        );
        assert!(
            changes(&base, &wider).is_empty(),
            "{:?}",
            changes(&base, &wider)
        );
        let more = spec(&format!(
            "{BASE}[[stages]]\nname = \"other\"\nkind = \"command\"\ncommand = [\"true\"]\n"
        ));
        assert!(changes(&base, &more).is_empty());
    }

    #[test]
    fn each_kind_of_edit_is_a_change_with_its_path() {
        let base = spec(BASE);
        let cases = [
            (
                "epochs = 3",
                "epochs = 5",
                "stages.pretext.params.epochs",
                "3",
                "5",
            ),
            (
                "epochs = 3",
                "epochs = 3\ntemperature = 0.2",
                "stages.pretext.params.temperature",
                "unset",
                "0.2",
            ),
            (
                "max_total = 100",
                "max_total = 50",
                "datasets.A.max_total",
                "100",
                "50",
            ),
            (
                "data_root = \"/data\"",
                "data_root = \"/other\"",
                "data_root",
                "/data",
                "/other",
            ),
            (
                "[16, 32]",
                "[16]",
                "stages.pretext.grid.batch_size",
                "[16, 32]",
                "[16] (removes 32)",
            ),
            (
                "seeds = [0]",
                "seeds = [1]",
                "sweep.seeds",
                "[0]",
                "[1] (removes 0)",
            ),
        ];
        for (old, new, path, before, after) in cases {
            let found = changes(&base, &spec(&BASE.replace(old, new)));
            assert_eq!(
                found,
                [Change {
                    path: path.into(),
                    before: before.into(),
                    after: after.into()
                }],
                "{new}"
            );
        }
        let axis = changes(
            &base,
            &spec(&BASE.replace("epochs = 3", "").replace(
                "batch_size = [16, 32]",
                "batch_size = [16, 32]\nepochs = [3]",
            )),
        );
        assert_eq!(axis.len(), 2, "{axis:?}");
        assert!(
            axis.iter().any(|c| c.path == "stages.pretext.grid"),
            "{axis:?}"
        );
    }
}
