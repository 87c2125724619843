//! From what the user wrote ([`raw`](super::raw)) to a checked [`Spec`]: every
//! cross-field rule lives here, and every refusal names the file, `line:column` and
//! field, before anything is written to a store.
//!
//! The rules of each section live in a submodule: [`dataset`] (folders, labels,
//! splits), [`stage`] (grids, typed parameters, exclusions, commands) and
//! [`selection`] (rankings and their groups).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::{Map, Number, Value};
use toml::Spanned;

mod dataset;
mod halving;
mod selection;
mod stage;

use super::expand;
use super::params::{self, CommandParams, DownstreamParams, JobParams, ParamError, PretextParams};
use super::raw::{self, RawDataset, RawFile, RawHalving, RawParams, RawSelection, RawStage};
use super::{
    DatasetSpec, OnFailure, Overrides, Params, Preference, SelectionSpec, Spec, StageKind,
    StageSpec, SweepError, SweepResult,
};

/// Attempts per job when neither the sweep nor the stage says.
pub const DEFAULT_MAX_ATTEMPTS: i32 = 3;

/// Result fields a selection may rank on, besides parameters, by the kind of the
/// stage it ranks. A `command` stage's result is whatever its program prints, so any
/// name goes there.
pub const PRETEXT_METRICS: &[&str] = &["loss"];
pub const EVALUATION_METRICS: &[&str] = &["accuracy", "precision", "recall", "f1", "loss"];

/// Placeholders a `command` may use besides the job's parameters; the worker fills
/// them in when it starts the job (see [`render_command`](super::expand::render_command)).
pub const RUNTIME_PLACEHOLDERS: &[&str] = &["job_id", "attempt", "job_dir", "data_root"];

/// Cells a stage may expand to unless `--max-cells` says otherwise.
pub const DEFAULT_MAX_CELLS: usize = 100_000;

/// Builds the [`Spec`] from a parsed file. `text` and `origin` are only used to
/// turn spans into `file:line:column`.
pub fn check(
    raw_file: RawFile,
    text: &str,
    origin: &Path,
    overrides: &Overrides,
) -> SweepResult<Spec> {
    Checker { text, origin }.check(raw_file, overrides)
}

struct Checker<'a> {
    text: &'a str,
    origin: &'a Path,
}

/// What a stage's jobs carry in their parameters: its axes and fixed parameters,
/// `seed`, and for downstream stages everything their winners carried.
#[derive(Debug, Clone, Default)]
struct StageFields {
    names: BTreeSet<String>,
}

impl Checker<'_> {
    fn invalid(
        &self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> SweepError {
        SweepError::Invalid {
            location: raw::location(self.origin, self.text, span.start),
            field: field.into(),
            message: message.into(),
        }
    }

    fn check(&self, raw_file: RawFile, overrides: &Overrides) -> SweepResult<Spec> {
        let sweep_span = raw_file.sweep.span();
        let sweep = raw_file.sweep.into_inner();

        let name = self.name(&sweep.name, "sweep.name")?;
        let data_root = match (&overrides.data_root, &sweep.data_root) {
            (Some(root), _) => absolute(root),
            (None, Some(root)) => {
                if root.get_ref().as_os_str().is_empty() {
                    return Err(self.invalid(root.span(), "sweep.data_root", "is empty"));
                }
                absolute(root.get_ref())
            }
            // Only an error once a stage needs a dataset (a command-only sweep
            // needs none); checked below.
            (None, None) => PathBuf::new(),
        };
        let seeds = match &sweep.seeds {
            Some(seeds) => self.seeds(seeds, "sweep.seeds")?,
            None => vec![0],
        };
        let max_attempts = match &sweep.max_attempts {
            Some(value) => self.max_attempts(value, "sweep.max_attempts")?,
            None => DEFAULT_MAX_ATTEMPTS,
        };
        let priority = match &sweep.priority {
            Some(value) => self.priority(value, "sweep.priority")?,
            None => 0,
        };

        if raw_file.stages.is_empty() {
            return Err(self.invalid(
                sweep_span,
                "stages",
                "the file defines no [[stages]]: a sweep needs at least one stage to run",
            ));
        }

        let mut datasets = BTreeMap::new();
        for (dataset_name, dataset) in &raw_file.datasets.0 {
            let field = format!("datasets.{dataset_name}");
            datasets.insert(
                dataset_name.clone(),
                self.dataset(dataset.get_ref(), &field)?,
            );
        }

        // Selections by name, so a stage can check its `from` before the selections'
        // own rules (which need the checked stages) are. A selection ranking a stage
        // that does not exist is its own error, not the stage's.
        let stage_names: BTreeSet<&str> = raw_file
            .stages
            .iter()
            .map(|stage| stage.get_ref().name.get_ref().as_str())
            .collect();
        let mut selection_index: HashMap<&str, usize> = HashMap::new();
        for (index, selection) in raw_file.selections.iter().enumerate() {
            let selection = selection.get_ref();
            let field = format!("selections[{index}].name");
            self.name(&selection.name, &field)?;
            if selection_index
                .insert(selection.name.get_ref(), index)
                .is_some()
            {
                return Err(self.invalid(
                    selection.name.span(),
                    field,
                    format!(
                        "a selection named `{}` is already defined",
                        selection.name.get_ref()
                    ),
                ));
            }
            self.known_stage(
                &selection.from,
                &stage_names,
                &format!("selections[{index}].from"),
            )?;
        }

        let mut stages: Vec<StageSpec> = Vec::new();
        let mut stage_fields: Vec<StageFields> = Vec::new();
        for (index, stage) in raw_file.stages.iter().enumerate() {
            let defaults = StageDefaults {
                priority,
                max_attempts,
            };
            let context = StageContext {
                datasets: &datasets,
                selections: &raw_file.selections,
                selection_index: &selection_index,
                stages: &stages,
                stage_fields: &stage_fields,
                sweep_seeds: seeds.len(),
                first_seed: seeds[0],
                max_cells: overrides.max_cells.unwrap_or(DEFAULT_MAX_CELLS),
            };
            let (checked, fields) =
                self.stage(index, stage.get_ref(), stage.span(), &context, defaults)?;
            stages.push(checked);
            stage_fields.push(fields);
        }

        let mut selections = Vec::new();
        for (index, selection) in raw_file.selections.iter().enumerate() {
            selections.push(self.selection(index, selection.get_ref(), &stages, &stage_fields)?);
        }

        let used: BTreeSet<&str> = stages.iter().filter_map(|s| s.dataset.as_deref()).collect();
        let data_root = if used.is_empty() && data_root.as_os_str().is_empty() {
            absolute(Path::new("."))
        } else if data_root.as_os_str().is_empty() {
            return Err(self.invalid(
                sweep_span,
                "sweep.data_root",
                "missing: set `data_root` here or pass --data-root",
            ));
        } else {
            data_root
        };
        if overrides.check_data {
            for (dataset_name, dataset) in &raw_file.datasets.0 {
                if used.contains(dataset_name.as_str()) {
                    self.dataset_on_disk(&data_root, dataset_name, dataset.get_ref())?;
                }
            }
        }

        Ok(Spec {
            name,
            data_root,
            seeds,
            max_attempts,
            datasets,
            stages,
            selections,
            baselines: sweep.baselines.as_ref().map_or(true, |b| *b.get_ref()),
        })
    }

    fn known_stage(
        &self,
        name: &Spanned<String>,
        stages: &BTreeSet<&str>,
        field: &str,
    ) -> SweepResult<()> {
        if stages.contains(name.get_ref().as_str()) {
            return Ok(());
        }
        Err(self.invalid(
            name.span(),
            field,
            format!(
                "no stage named `{}` (defined: {})",
                name.get_ref(),
                list_or_none(stages.iter())
            ),
        ))
    }

    /// Names become folder names and appear in reports: letters, digits, `_`, `-`, `.`.
    fn name(&self, name: &Spanned<String>, field: &str) -> SweepResult<String> {
        let value = name.get_ref();
        let valid = !value.is_empty()
            && !value.starts_with('.')
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid {
            return Err(self.invalid(
                name.span(),
                field,
                format!("{value:?} is not a valid name (use letters, digits, `_`, `-`, `.`)"),
            ));
        }
        Ok(value.clone())
    }

    fn seeds(&self, seeds: &Spanned<Vec<Spanned<i64>>>, field: &str) -> SweepResult<Vec<i64>> {
        if seeds.get_ref().is_empty() {
            return Err(self.invalid(seeds.span(), field, "is empty: give at least one seed"));
        }
        let mut out = Vec::new();
        for seed in seeds.get_ref() {
            if out.contains(seed.get_ref()) {
                return Err(self.invalid(
                    seed.span(),
                    field,
                    format!("seed {} is listed twice", seed.get_ref()),
                ));
            }
            out.push(*seed.get_ref());
        }
        Ok(out)
    }

    fn max_attempts(&self, value: &Spanned<i64>, field: &str) -> SweepResult<i32> {
        match i32::try_from(*value.get_ref()) {
            Ok(attempts) if attempts >= 1 => Ok(attempts),
            _ => Err(self.invalid(
                value.span(),
                field,
                format!(
                    "{} is not a number of attempts (at least 1)",
                    value.get_ref()
                ),
            )),
        }
    }

    fn priority(&self, value: &Spanned<i64>, field: &str) -> SweepResult<i32> {
        i32::try_from(*value.get_ref()).map_err(|_| {
            self.invalid(
                value.span(),
                field,
                format!("{} is out of range for a priority", value.get_ref()),
            )
        })
    }

    /// A count that must be at least `minimum`.
    fn count(&self, value: &Spanned<i64>, field: &str, minimum: i64) -> SweepResult<usize> {
        match usize::try_from(*value.get_ref()) {
            Ok(count) if *value.get_ref() >= minimum => Ok(count),
            _ => Err(self.invalid(
                value.span(),
                field,
                format!(
                    "{} is not allowed: must be at least {minimum}",
                    value.get_ref()
                ),
            )),
        }
    }
}

#[derive(Clone, Copy)]
struct StageDefaults {
    priority: i32,
    max_attempts: i32,
}

/// What a stage's rules look at besides the stage itself.
struct StageContext<'a> {
    datasets: &'a BTreeMap<String, DatasetSpec>,
    selections: &'a [Spanned<RawSelection>],
    selection_index: &'a HashMap<&'a str, usize>,
    /// The stages checked so far (those before this one).
    stages: &'a [StageSpec],
    stage_fields: &'a [StageFields],
    /// The sweep's seeds: how many, and the first (what a cell's check runs with).
    sweep_seeds: usize,
    first_seed: i64,
    max_cells: usize,
}

/// Spans of a stage's grid values (per axis, per value) and fixed parameters.
#[derive(Debug, Default)]
struct ParamSpans {
    grid: Vec<Vec<Range<usize>>>,
    fixed: HashMap<String, Range<usize>>,
}

/// A data_root relative to the current directory, as the user typed it on the
/// command line; left as is if the current directory cannot be read.
fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_owned();
    }
    std::env::current_dir().map_or_else(|_| path.to_owned(), |dir| dir.join(path))
}

fn list_or_none<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    let names: Vec<String> = items.map(|item| format!("`{item}`")).collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// Converts a TOML value to JSON; dates and non-finite floats have no JSON form.
pub(crate) fn to_json(value: &toml::Value) -> Result<Value, String> {
    Ok(match value {
        toml::Value::String(text) => Value::String(text.clone()),
        toml::Value::Integer(number) => Value::Number(Number::from(*number)),
        toml::Value::Float(number) => Number::from_f64(*number)
            .map(Value::Number)
            .ok_or_else(|| format!("{number} is not a finite number"))?,
        toml::Value::Boolean(flag) => Value::Bool(*flag),
        toml::Value::Datetime(date) => {
            return Err(format!(
                "{date}: dates are not supported as parameters; quote it"
            ))
        }
        toml::Value::Array(items) => {
            Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?)
        }
        toml::Value::Table(table) => {
            let mut object = Map::new();
            for (key, item) in table {
                object.insert(key.clone(), to_json(item)?);
            }
            Value::Object(object)
        }
    })
}

/// Equal values, with `1` and `1.0` counted as the same number.
pub(crate) fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A text that two values share exactly when [`same_value`] holds: numbers by their
/// `f64` value, anything else by its JSON.
fn value_identity(value: &Value) -> String {
    match value {
        Value::Number(number) => format!("n:{:?}", number.as_f64()),
        other => format!("j:{other}"),
    }
}

/// The `{name}` placeholders of a command argument; `{{` and `}}` stand for literal
/// braces.
pub(crate) fn placeholders(argument: &str) -> Result<Vec<&str>, String> {
    let mut names = Vec::new();
    let mut rest = argument;
    while let Some(position) = rest.find(['{', '}']) {
        let (brace, after) = (&rest[position..position + 1], &rest[position + 1..]);
        if after.starts_with(brace) {
            rest = &after[1..];
            continue;
        }
        if brace == "}" {
            return Err("has an unmatched `}` (write `}}` for a literal brace)".to_owned());
        }
        let Some(end) = after.find('}') else {
            return Err("has an unclosed `{` (write `{{` for a literal brace)".to_owned());
        };
        let name = &after[..end];
        if name.is_empty() || name.contains('{') {
            return Err(format!("has an invalid placeholder `{{{name}}}`"));
        }
        names.push(name);
        rest = &after[end + 1..];
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_found_and_braces_escape() {
        assert_eq!(placeholders("--bs={batch_size}").unwrap(), ["batch_size"]);
        assert_eq!(placeholders("{a}{b}-{{c}}").unwrap(), ["a", "b"]);
        assert!(placeholders("plain").unwrap().is_empty());
        assert!(placeholders("{open").is_err());
        assert!(placeholders("close}").is_err());
        assert!(placeholders("{}").is_err());
    }

    #[test]
    fn numbers_compare_by_value() {
        assert!(same_value(&serde_json::json!(1), &serde_json::json!(1.0)));
        assert!(!same_value(&serde_json::json!(1), &serde_json::json!("1")));
    }

    #[test]
    fn toml_dates_and_nan_have_no_json_form() {
        let nan = toml::Value::Float(f64::NAN);
        assert!(to_json(&nan).is_err());
        let table: toml::Table = toml::from_str("d = 1979-05-27").expect("valid TOML");
        assert!(to_json(&table["d"]).is_err());
    }
}
