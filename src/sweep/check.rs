//! From what the user wrote ([`raw`](super::raw)) to a checked [`Spec`]: every
//! cross-field rule lives here, and every refusal names the file, `line:column` and
//! field, before anything is written to a store.
//!
//! Long because each section of the file has its own rules; stages, datasets and
//! selections are the seams to split into submodules next.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::{Map, Number, Value};
use toml::Spanned;

use super::expand;
use super::params::{self, CommandParams, DownstreamParams, JobParams, ParamError, PretextParams};
use super::raw::{self, RawDataset, RawFile, RawParams, RawSelection, RawStage};
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

    fn labels(
        &self,
        labels: &Spanned<Vec<Spanned<String>>>,
        field: &str,
    ) -> SweepResult<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        for label in labels.get_ref() {
            if label.get_ref().is_empty() {
                return Err(self.invalid(label.span(), field, "a label name is empty"));
            }
            if out.contains(label.get_ref()) {
                return Err(self.invalid(
                    label.span(),
                    field,
                    format!("label {:?} is listed twice", label.get_ref()),
                ));
            }
            out.push(label.get_ref().clone());
        }
        Ok(out)
    }

    /// A dataset's folders must exist where the sweep says its data lives.
    fn dataset_on_disk(&self, root: &Path, name: &str, dataset: &RawDataset) -> SweepResult<()> {
        let folders = std::iter::once(("folder", &dataset.folder)).chain(
            dataset
                .test_folder
                .as_ref()
                .map(|test| ("test_folder", test)),
        );
        for (key, folder) in folders {
            let path = root.join(folder.get_ref());
            if !path.is_dir() {
                let why = if root.is_dir() {
                    format!("{} is not a folder", path.display())
                } else {
                    format!("the data root {} does not exist", root.display())
                };
                return Err(self.invalid(
                    folder.span(),
                    format!("datasets.{name}.{key}"),
                    format!(
                        "{why} (set data_root or --data-root; --no-data-check skips this \
                         check when the data lives only on the workers)"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn dataset(&self, dataset: &RawDataset, field: &str) -> SweepResult<DatasetSpec> {
        if dataset.folder.get_ref().as_os_str().is_empty() {
            return Err(self.invalid(dataset.folder.span(), format!("{field}.folder"), "is empty"));
        }
        let include_labels = match &dataset.include_labels {
            Some(labels) => {
                let labels = self.labels(labels, &format!("{field}.include_labels"))?;
                if labels.is_empty() {
                    return Err(self.invalid(
                        dataset.include_labels.as_ref().map_or(0..0, Spanned::span),
                        format!("{field}.include_labels"),
                        "is empty: it would keep no label (leave it out to keep every label)",
                    ));
                }
                Some(labels)
            }
            None => None,
        };
        let exclude_labels = match &dataset.exclude_labels {
            Some(labels) => self.labels(labels, &format!("{field}.exclude_labels"))?,
            None => Vec::new(),
        };
        if let (Some(included), Some(excluded)) = (&include_labels, &dataset.exclude_labels) {
            if let Some(both) = excluded
                .get_ref()
                .iter()
                .find(|label| included.contains(label.get_ref()))
            {
                return Err(self.invalid(
                    both.span(),
                    format!("{field}.exclude_labels"),
                    format!("label {:?} is both included and excluded", both.get_ref()),
                ));
            }
        }

        let optional_count = |value: &Option<Spanned<i64>>, name: &str, minimum: i64| {
            value
                .as_ref()
                .map(|value| self.count(value, &format!("{field}.{name}"), minimum))
                .transpose()
        };
        let min_images_per_label =
            optional_count(&dataset.min_images_per_label, "min_images_per_label", 0)?;
        let take_labels = optional_count(&dataset.take_labels, "take_labels", 1)?;
        let per_label = optional_count(&dataset.per_label, "per_label", 1)?;
        let max_total = optional_count(&dataset.max_total, "max_total", 1)?;
        let test_max_total = optional_count(&dataset.test_max_total, "test_max_total", 1)?;

        let test_folder = match &dataset.test_folder {
            Some(folder) if folder.get_ref().as_os_str().is_empty() => {
                return Err(self.invalid(folder.span(), format!("{field}.test_folder"), "is empty"))
            }
            Some(folder) => Some(folder.get_ref().clone()),
            None => None,
        };
        if let (None, Some(value)) = (&test_folder, &dataset.test_max_total) {
            return Err(self.invalid(
                value.span(),
                format!("{field}.test_max_total"),
                "needs `test_folder`: without it the test images come from `split`",
            ));
        }

        let split = match &dataset.split {
            Some(split) => self.split(split, &format!("{field}.split"), test_folder.is_some())?,
            None => vec![1.0],
        };

        Ok(DatasetSpec {
            folder: dataset.folder.get_ref().clone(),
            include_labels,
            exclude_labels,
            min_images_per_label,
            take_labels,
            per_label,
            max_total,
            split,
            test_folder,
            test_max_total,
        })
    }

    fn split(
        &self,
        split: &Spanned<Vec<Spanned<f64>>>,
        field: &str,
        has_test_folder: bool,
    ) -> SweepResult<Vec<f64>> {
        let parts = split.get_ref();
        if parts.is_empty() || parts.len() > 3 {
            return Err(self.invalid(
                split.span(),
                field,
                format!(
                    "has {} entries: give 1 to 3 ratios (train, val, test)",
                    parts.len()
                ),
            ));
        }
        if has_test_folder && parts.len() == 3 {
            return Err(self.invalid(
                split.span(),
                field,
                "has a test ratio, but `test_folder` already holds the test images: \
                 give train and val only",
            ));
        }
        for part in parts {
            let ratio = *part.get_ref();
            if !(ratio > 0.0 && ratio <= 1.0) {
                return Err(self.invalid(part.span(), field, format!("{ratio} is outside (0, 1]")));
            }
        }
        let sum: f64 = parts.iter().map(|part| *part.get_ref()).sum();
        if (sum - 1.0).abs() > 1e-6 {
            // Rounded so 0.7 + 0.2 + 0.15 reads 1.05, not 1.0499999999999998.
            let sum = (sum * 1e6).round() / 1e6;
            return Err(self.invalid(split.span(), field, format!("ratios sum to {sum}, not 1")));
        }
        Ok(parts.iter().map(|part| *part.get_ref()).collect())
    }

    fn stage(
        &self,
        index: usize,
        stage: &RawStage,
        stage_span: Range<usize>,
        context: &StageContext,
        defaults: StageDefaults,
    ) -> SweepResult<(StageSpec, StageFields)> {
        let field = |name: &str| format!("stages[{index}].{name}");
        let name = self.name(&stage.name, &field("name"))?;
        if context.stages.iter().any(|earlier| earlier.name == name) {
            return Err(self.invalid(
                stage.name.span(),
                field("name"),
                format!("a stage named `{name}` is already defined"),
            ));
        }

        let Some(kind) = StageKind::parse(stage.kind.get_ref()) else {
            return Err(self.invalid(
                stage.kind.span(),
                field("kind"),
                format!(
                    "unknown stage kind {:?}: use \"command\", \"pretext\", \
                     \"linear\" or \"finetune\"",
                    stage.kind.get_ref()
                ),
            ));
        };

        let dataset = match &stage.dataset {
            Some(dataset) => {
                if !context.datasets.contains_key(dataset.get_ref()) {
                    return Err(self.invalid(
                        dataset.span(),
                        field("dataset"),
                        format!(
                            "no dataset named `{}` (defined: {})",
                            dataset.get_ref(),
                            list_or_none(context.datasets.keys())
                        ),
                    ));
                }
                Some(dataset.get_ref().clone())
            }
            None if kind != StageKind::Command => {
                return Err(self.invalid(
                    stage_span,
                    field("dataset"),
                    format!("missing: a {} stage trains on a dataset", kind.as_str()),
                ))
            }
            None => None,
        };

        // The fields a downstream stage inherits from the winners it runs on.
        let mut fields = StageFields::default();
        let from = match &stage.from {
            Some(from) => {
                let Some(&selection_index) = context.selection_index.get(from.get_ref().as_str())
                else {
                    return Err(self.invalid(
                        from.span(),
                        field("from"),
                        format!(
                            "no selection named `{}` (defined: {})",
                            from.get_ref(),
                            list_or_none(context.selection_index.keys())
                        ),
                    ));
                };
                let ranked = context.selections[selection_index].get_ref().from.get_ref();
                let Some(upstream) = context.stages.iter().position(|s| &s.name == ranked) else {
                    return Err(self.invalid(
                        from.span(),
                        field("from"),
                        format!(
                            "selection `{}` ranks stage `{ranked}`, which is not defined \
                             before this stage; a stage runs on the winners of an earlier one",
                            from.get_ref()
                        ),
                    ));
                };
                let upstream_kind = context.stages[upstream].kind;
                if matches!(kind, StageKind::Linear | StageKind::Finetune)
                    && upstream_kind != StageKind::Pretext
                {
                    return Err(self.invalid(
                        from.span(),
                        field("from"),
                        format!(
                            "selection `{}` ranks the {} stage `{ranked}`; a {} stage \
                             starts from a pretext stage's checkpoint",
                            from.get_ref(),
                            upstream_kind.as_str(),
                            kind.as_str()
                        ),
                    ));
                }
                fields.names = context.stage_fields[upstream].names.clone();
                if matches!(kind, StageKind::Linear | StageKind::Finetune) {
                    // Not inherited (see `expand::downstream`); the stage's own count.
                    for key in DownstreamParams::OWN_KEYS {
                        fields.names.remove(*key);
                    }
                }
                Some(from.get_ref().clone())
            }
            None if matches!(kind, StageKind::Linear | StageKind::Finetune) => {
                return Err(self.invalid(
                    stage_span,
                    field("from"),
                    format!(
                        "missing: a {} stage runs on the winners of a selection \
                         (from = \"<selection name>\")",
                        kind.as_str()
                    ),
                ))
            }
            None => None,
        };

        let mut grid: Vec<(String, Vec<Value>)> = Vec::new();
        // Where each grid value and fixed parameter was written, for the typed check.
        let mut spans = ParamSpans::default();
        if let Some(raw_grid) = &stage.grid {
            if from.is_some() && !raw_grid.get_ref().0.is_empty() {
                return Err(self.invalid(
                    raw_grid.span(),
                    field("grid"),
                    "a stage with `from` runs once per winner and takes no grid; \
                     put its settings in [stages.params]",
                ));
            }
            for (axis, values) in &raw_grid.get_ref().0 {
                let axis_field = field(&format!("grid.{axis}"));
                self.parameter_name(axis, values.span(), &axis_field)?;
                if values.get_ref().is_empty() {
                    return Err(self.invalid(
                        values.span(),
                        axis_field,
                        "has no values: give at least one",
                    ));
                }
                let mut checked: Vec<Value> = Vec::with_capacity(values.get_ref().len());
                // One hash lookup per value: a long axis is checked in linear time.
                let mut seen: HashSet<String> = HashSet::with_capacity(values.get_ref().len());
                for value in values.get_ref() {
                    let json = self.json_value(value, &axis_field)?;
                    if !seen.insert(value_identity(&json)) {
                        return Err(self.invalid(
                            value.span(),
                            axis_field,
                            format!("{json} is listed twice"),
                        ));
                    }
                    checked.push(json);
                }
                spans
                    .grid
                    .push(values.get_ref().iter().map(Spanned::span).collect());
                grid.push((axis.clone(), checked));
            }
        }

        let mut params = Params::new();
        if let Some(raw_params) = &stage.params {
            for (name, value) in &raw_params.get_ref().0 {
                let param_field = field(&format!("params.{name}"));
                self.parameter_name(name, value.span(), &param_field)?;
                if grid.iter().any(|(axis, _)| axis == name) {
                    return Err(self.invalid(
                        value.span(),
                        param_field,
                        "is also a grid axis: a parameter is either fixed or swept",
                    ));
                }
                let json = self.json_value(value, &param_field)?;
                spans.fixed.insert(name.clone(), value.span());
                params.insert(name.clone(), json);
            }
        }

        let exclude = match &stage.exclude {
            Some(exclude) => self.exclude(exclude, &grid, &field("exclude"))?,
            None => Vec::new(),
        };

        let seeds = stage
            .seeds
            .as_ref()
            .map(|seeds| self.seeds(seeds, &field("seeds")))
            .transpose()?;

        fields
            .names
            .extend(grid.iter().map(|(axis, _)| axis.clone()));
        fields.names.extend(params.keys().cloned());
        fields.names.insert("seed".to_owned());

        let command = match (&stage.command, kind) {
            (Some(command), StageKind::Command) => {
                Some(self.command(command, &fields, &field("command"))?)
            }
            (Some(command), _) => {
                return Err(self.invalid(
                    command.span(),
                    field("command"),
                    format!(
                        "only command stages run a command; a {} stage is trained by sweeper",
                        kind.as_str()
                    ),
                ))
            }
            (None, StageKind::Command) => {
                return Err(self.invalid(
                    stage_span,
                    field("command"),
                    "missing: a command stage needs command = [\"program\", \"arg\", ...]",
                ))
            }
            (None, _) => None,
        };

        let priority = match &stage.priority {
            Some(value) => self.priority(value, &field("priority"))?,
            None => defaults.priority,
        };
        let max_attempts = match &stage.max_attempts {
            Some(value) => self.max_attempts(value, &field("max_attempts"))?,
            None => defaults.max_attempts,
        };

        let checked = StageSpec {
            name,
            kind,
            dataset,
            grid,
            params,
            exclude,
            from,
            command,
            seeds,
            priority,
            max_attempts,
        };
        let cells = expand::grid_size(&checked)
            .saturating_mul(checked.seeds.as_ref().map_or(context.sweep_seeds, Vec::len) as u128);
        if cells > context.max_cells as u128 {
            return Err(self.invalid(
                stage
                    .grid
                    .as_ref()
                    .map_or(stage_span.clone(), Spanned::span),
                field("grid"),
                format!(
                    "{cells} cells (axes × seeds) is over the limit of {}; \
                     raise it with --max-cells if the study really has that many jobs",
                    context.max_cells
                ),
            ));
        }
        self.typed_params(index, &checked, &spans, stage_span, context)?;
        Ok((checked, fields))
    }

    /// Axis and parameter names: `seed` is set from `seeds`, never by hand.
    fn parameter_name(&self, name: &str, span: Range<usize>, field: &str) -> SweepResult<()> {
        if name == "seed" {
            return Err(self.invalid(
                span,
                field,
                "`seed` is set from `seeds` ([sweep] or the stage), not as a parameter",
            ));
        }
        if name.is_empty() {
            return Err(self.invalid(span, field, "a parameter name is empty"));
        }
        Ok(())
    }

    /// TOML to JSON: the store and the trainer see JSON parameters.
    fn json_value(&self, value: &Spanned<toml::Value>, field: &str) -> SweepResult<Value> {
        to_json(value.get_ref()).map_err(|message| self.invalid(value.span(), field, message))
    }

    /// Builds the typed parameters of every cell the stage will run, the way the
    /// worker will, and points a refusal at the grid value or fixed parameter that
    /// caused it. Downstream stages run on winners not known yet: their own settings
    /// are checked against the downstream parameters.
    fn typed_params(
        &self,
        index: usize,
        stage: &StageSpec,
        spans: &ParamSpans,
        stage_span: Range<usize>,
        context: &StageContext,
    ) -> SweepResult<()> {
        let refuse = |error: ParamError, cell: Option<&[usize]>| -> SweepError {
            let axis = stage.grid.iter().position(|(axis, _)| *axis == error.key);
            let (span, field) = match (axis, cell) {
                (Some(axis), Some(cell)) => (
                    spans.grid[axis][cell[axis]].clone(),
                    format!("stages[{index}].grid.{}", error.key),
                ),
                _ => (
                    spans
                        .fixed
                        .get(&error.key)
                        .cloned()
                        .unwrap_or_else(|| stage_span.clone()),
                    format!("stages[{index}].params.{}", error.key),
                ),
            };
            self.invalid(span, field, error.message)
        };
        let Some(known) = JobParams::stage_keys(stage.kind) else {
            // A command's parameters are its program's, but for the few names the
            // report and selections read: each value is checked once.
            for (axis, (name, values)) in stage.grid.iter().enumerate() {
                for (position, value) in values.iter().enumerate() {
                    CommandParams::check_value(name, value).map_err(|e| {
                        let mut cell = vec![0; stage.grid.len()];
                        cell[axis] = position;
                        refuse(e, Some(&cell))
                    })?;
                }
            }
            for (name, value) in &stage.params {
                CommandParams::check_value(name, value).map_err(|e| refuse(e, None))?;
            }
            return Ok(());
        };
        // Unknown names first, once per name, with the closest known one.
        for name in stage
            .grid
            .iter()
            .map(|(axis, _)| axis)
            .chain(stage.params.keys())
        {
            if !known.contains(&name.as_str()) {
                let message = if DownstreamParams::ARCHITECTURE_KEYS.contains(&name.as_str())
                    && stage.from.is_some()
                {
                    "comes from the winner this stage runs on and cannot be set here".to_owned()
                } else {
                    params::unknown_key_message(name, known)
                };
                return Err(refuse(
                    ParamError {
                        key: name.clone(),
                        message,
                    },
                    Some(&vec![0; stage.grid.len()]),
                ));
            }
        }
        match stage.kind {
            StageKind::Pretext => {
                let seed = stage
                    .seeds
                    .as_ref()
                    .and_then(|seeds| seeds.first())
                    .copied()
                    .unwrap_or(context.first_seed);
                for cell in expand::cell_indices(stage) {
                    let mut params = expand::cell_at(stage, &cell);
                    params.extend(stage.params.iter().map(|(k, v)| (k.clone(), v.clone())));
                    params.insert("seed".to_owned(), Value::from(seed));
                    PretextParams::from_params(&params).map_err(|e| refuse(e, Some(&cell)))?;
                }
            }
            StageKind::Linear | StageKind::Finetune => {
                // The winner supplies the architecture; any known one checks the rest.
                let mut params = stage.params.clone();
                params.insert(
                    "backbone".to_owned(),
                    Value::from(params::SMALL_RESNET.name),
                );
                DownstreamParams::from_params(&params).map_err(|e| refuse(e, None))?;
            }
            StageKind::Command => {}
        }
        Ok(())
    }

    fn exclude(
        &self,
        exclude: &Spanned<Vec<Spanned<RawParams>>>,
        grid: &[(String, Vec<Value>)],
        field: &str,
    ) -> SweepResult<Vec<Params>> {
        let mut out = Vec::new();
        for (index, entry) in exclude.get_ref().iter().enumerate() {
            let entry_field = format!("{field}[{index}]");
            if entry.get_ref().0.is_empty() {
                return Err(self.invalid(
                    entry.span(),
                    entry_field,
                    "names no axis: it would exclude every cell",
                ));
            }
            let mut cell = Params::new();
            for (axis, value) in &entry.get_ref().0 {
                let axis_field = format!("{entry_field}.{axis}");
                let Some((_, values)) = grid.iter().find(|(name, _)| name == axis) else {
                    return Err(self.invalid(
                        value.span(),
                        axis_field,
                        format!(
                            "`{axis}` is not a grid axis of this stage (axes: {})",
                            list_or_none(grid.iter().map(|(name, _)| name))
                        ),
                    ));
                };
                let json = self.json_value(value, &axis_field)?;
                if !values.iter().any(|candidate| same_value(candidate, &json)) {
                    return Err(self.invalid(
                        value.span(),
                        axis_field,
                        format!("{json} is not a value of axis `{axis}`"),
                    ));
                }
                cell.insert(axis.clone(), json);
            }
            out.push(cell);
        }
        Ok(out)
    }

    fn command(
        &self,
        command: &Spanned<Vec<Spanned<String>>>,
        fields: &StageFields,
        field: &str,
    ) -> SweepResult<Vec<String>> {
        let Some(program) = command.get_ref().first() else {
            return Err(self.invalid(command.span(), field, "is empty: name a program"));
        };
        if program.get_ref().is_empty() {
            return Err(self.invalid(program.span(), field, "the program name is empty"));
        }
        for argument in command.get_ref() {
            let names = placeholders(argument.get_ref())
                .map_err(|message| self.invalid(argument.span(), field, message))?;
            for name in names {
                if !fields.names.contains(name) && !RUNTIME_PLACEHOLDERS.contains(&name) {
                    return Err(self.invalid(
                        argument.span(),
                        field,
                        format!(
                            "{{{name}}} names no parameter of this stage (parameters: {}; \
                             also {})",
                            list_or_none(fields.names.iter()),
                            RUNTIME_PLACEHOLDERS.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(command
            .get_ref()
            .iter()
            .map(|arg| arg.get_ref().clone())
            .collect())
    }

    fn selection(
        &self,
        index: usize,
        selection: &RawSelection,
        stages: &[StageSpec],
        stage_fields: &[StageFields],
    ) -> SweepResult<SelectionSpec> {
        let field = |name: &str| format!("selections[{index}].{name}");
        let Some(stage_index) = stages
            .iter()
            .position(|s| &s.name == selection.from.get_ref())
        else {
            return Err(self.invalid(
                selection.from.span(),
                field("from"),
                format!(
                    "no stage named `{}` (defined: {})",
                    selection.from.get_ref(),
                    list_or_none(stages.iter().map(|s| &s.name))
                ),
            ));
        };
        let stage = &stages[stage_index];
        let fields = &stage_fields[stage_index];

        let mut per: Vec<String> = Vec::new();
        for name in &selection.per {
            if !fields.names.contains(name.get_ref()) {
                return Err(self.invalid(
                    name.span(),
                    field("per"),
                    format!(
                        "`{}` is not a parameter of stage `{}` (parameters: {})",
                        name.get_ref(),
                        stage.name,
                        list_or_none(fields.names.iter())
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

        if selection.prefer.get_ref().is_empty() {
            return Err(self.invalid(
                selection.prefer.span(),
                field("prefer"),
                "is empty: name at least one field to rank by, e.g. [{ min = \"loss\" }]",
            ));
        }
        let metrics = match stage.kind {
            StageKind::Command => None,
            StageKind::Pretext => Some(PRETEXT_METRICS),
            StageKind::Linear | StageKind::Finetune => Some(EVALUATION_METRICS),
        };
        let mut prefer = Vec::new();
        for (position, preference) in selection.prefer.get_ref().iter().enumerate() {
            let preference_field = field(&format!("prefer[{position}]"));
            let (name, checked) = match (&preference.get_ref().max, &preference.get_ref().min) {
                (Some(name), None) => (name, Preference::Max(name.get_ref().clone())),
                (None, Some(name)) => (name, Preference::Min(name.get_ref().clone())),
                _ => {
                    return Err(self.invalid(
                        preference.span(),
                        preference_field,
                        "give exactly one of `max` or `min`",
                    ))
                }
            };
            let known = fields.names.contains(name.get_ref())
                || metrics.map_or(true, |metrics| metrics.contains(&name.get_ref().as_str()));
            if !known {
                return Err(self.invalid(
                    name.span(),
                    preference_field,
                    format!(
                        "`{}` is neither a parameter of stage `{}` ({}) nor a result of a {} \
                         stage ({})",
                        name.get_ref(),
                        stage.name,
                        list_or_none(fields.names.iter()),
                        stage.kind.as_str(),
                        list_or_none(metrics.unwrap_or_default().iter())
                    ),
                ));
            }
            prefer.push(checked);
        }

        let top = match &selection.top {
            Some(top) => self.count(top, &field("top"), 1)?,
            None => 1,
        };
        let on_failure = match &selection.on_failure {
            None => OnFailure::Wait,
            Some(value) => match value.get_ref().as_str() {
                "wait" => OnFailure::Wait,
                "promote" => OnFailure::Promote,
                other => {
                    return Err(self.invalid(
                        value.span(),
                        field("on_failure"),
                        format!("{other:?} is not \"wait\" or \"promote\""),
                    ))
                }
            },
        };

        Ok(SelectionSpec {
            name: selection.name.get_ref().clone(),
            from: stage.name.clone(),
            per,
            prefer,
            top,
            on_failure,
        })
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
