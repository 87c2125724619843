//! A stage's rules: its kind, grid and fixed parameters (each cell built into its
//! typed parameters, with the span of the value that breaks it), exclusions and
//! command.

use super::*;

impl Checker<'_> {
    pub(super) fn stage(
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
            halving: None,
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
        let mut checked = checked;
        if let Some(rule) = &stage.halving {
            checked.halving = Some(self.halving(index, rule, &checked, &fields)?);
        }
        Ok((checked, fields))
    }

    /// Axis and parameter names: `seed` is set from `seeds`, never by hand.
    pub(super) fn parameter_name(
        &self,
        name: &str,
        span: Range<usize>,
        field: &str,
    ) -> SweepResult<()> {
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
    pub(super) fn json_value(
        &self,
        value: &Spanned<toml::Value>,
        field: &str,
    ) -> SweepResult<Value> {
        to_json(value.get_ref()).map_err(|message| self.invalid(value.span(), field, message))
    }

    /// Builds the typed parameters of every cell the stage will run, the way the
    /// worker will, and points a refusal at the grid value or fixed parameter that
    /// caused it. Downstream stages run on winners not known yet: their own settings
    /// are checked against the downstream parameters.
    pub(super) fn typed_params(
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

    pub(super) fn exclude(
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

    pub(super) fn command(
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
}
