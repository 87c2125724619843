//! A selection's rules: the stage it ranks, its groups and its preferences.

use super::*;

impl Checker<'_> {
    pub(super) fn selection(
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
