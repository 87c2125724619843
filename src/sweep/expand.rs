//! From a checked [`Spec`] to jobs: the grid cells of every root stage, the jobs a
//! selection's winner starts downstream, and the stable key that makes submitting the
//! same cell twice a no-op.
//!
//! A key is the SHA-256 of the canonical JSON (keys sorted, no whitespace) of what
//! decides a job's outcome: stage name, kind, parameters (seed included), the
//! dataset definition, the command, and for downstream jobs the winner's key. It
//! leaves out what does not: priority, attempts, `data_root` (each machine may mount
//! the data elsewhere) and the rest of the grid, so extending a grid keeps the keys
//! of the cells already there.

use std::fmt::Write as _;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::check::{placeholders, same_value};
use super::params::{DownstreamParams, BASELINE_KEY};
use super::select::{self, Candidate};
use super::{JobSpec, Params, Spec, StageKind, StageSpec, SweepError, SweepResult};

/// Every job of the stages that run on no selection, stage by stage in file order;
/// within a stage the first axis varies slowest and the seed fastest.
pub fn expand(spec: &Spec) -> Vec<JobSpec> {
    spec.stages
        .iter()
        .filter(|stage| stage.from.is_none())
        .flat_map(|stage| root_jobs(spec, stage))
        .collect()
}

/// Every job `submit` stores: the grid cells of [`expand`], then the random-init
/// [`baselines`].
pub fn submitted(spec: &Spec) -> Vec<JobSpec> {
    let mut jobs = expand(spec);
    jobs.extend(baselines(spec));
    jobs
}

/// The random-init baselines of a sweep that has them on: for every linear and
/// fine-tune stage whose selection ranks a pretext stage, one job per architecture
/// (backbone and input size) that stage trains and per seed of the stage, with the
/// stage's own settings, `baseline = true` and no parent, so it starts from an
/// untrained backbone. They need no winner, so they are queued at submit; the report
/// prints them as "random init" beside the winners.
pub fn baselines(spec: &Spec) -> Vec<JobSpec> {
    if !spec.baselines {
        return Vec::new();
    }
    let mut jobs = Vec::new();
    for stage in &spec.stages {
        if !matches!(stage.kind, StageKind::Linear | StageKind::Finetune) {
            continue;
        }
        let Some(source) = stage
            .from
            .as_deref()
            .and_then(|selection| spec.selection(selection))
            .and_then(|selection| spec.stage(&selection.from))
            .filter(|source| source.kind == StageKind::Pretext)
        else {
            continue;
        };
        for architecture in architectures(source) {
            for &seed in spec.seeds_of(stage) {
                let mut params = architecture.clone();
                params.extend(stage.params.clone());
                params.insert("seed".to_owned(), Value::from(seed));
                params.insert(BASELINE_KEY.to_owned(), Value::Bool(true));
                let key = job_key(spec, stage, &params, None);
                jobs.push(job(stage, key, params));
            }
        }
    }
    jobs
}

/// The distinct values of the architecture keys (`backbone`, `image_size`) over a
/// stage's cells, in grid order.
fn architectures(stage: &StageSpec) -> Vec<Params> {
    let mut seen: Vec<Params> = Vec::new();
    for indices in cell_indices(stage) {
        let mut architecture = Params::new();
        for key in DownstreamParams::ARCHITECTURE_KEYS {
            let axis = stage.grid.iter().position(|(name, _)| name == key);
            let value = match axis {
                Some(axis) => Some(&stage.grid[axis].1[indices[axis]]),
                None => stage.params.get(*key),
            };
            if let Some(value) = value {
                architecture.insert((*key).to_owned(), value.clone());
            }
        }
        if !seen.contains(&architecture) {
            seen.push(architecture);
        }
    }
    seen
}

/// The jobs one winner of `selection` starts: one per stage whose `from` is that
/// selection (one per seed where the stage sets its own seeds). Its parameters are the
/// winner's, overlaid by the stage's own; for linear and fine-tune stages the
/// winner's values of the downstream training settings
/// ([`super::params::DownstreamParams::OWN_KEYS`], e.g. `batch_size`) are left out first,
/// so a setting the stage does not give takes the protocol's default rather than
/// the pretext job's. An unknown selection starts nothing.
pub fn downstream(spec: &Spec, selection: &str, winner: &Candidate) -> Vec<JobSpec> {
    let mut jobs = Vec::new();
    for stage in spec
        .stages
        .iter()
        .filter(|stage| stage.from.as_deref() == Some(selection))
    {
        let mut params = winner.params.clone();
        if matches!(stage.kind, StageKind::Linear | StageKind::Finetune) {
            for key in DownstreamParams::OWN_KEYS {
                params.remove(*key);
            }
        }
        params.extend(stage.params.clone());
        let seeds: Vec<Option<i64>> = match &stage.seeds {
            Some(seeds) => seeds.iter().copied().map(Some).collect(),
            // The winner's own seed, already in its parameters.
            None => vec![None],
        };
        for seed in seeds {
            let mut params = params.clone();
            if let Some(seed) = seed {
                params.insert("seed".to_owned(), Value::from(seed));
            }
            let key = job_key(spec, stage, &params, Some(&winner.key));
            jobs.push(job(stage, key, params));
        }
    }
    jobs
}

/// What `submit --dry-run` prints: how many jobs each stage gets now, and how many a
/// downstream stage will get once its selection has promoted.
pub fn dry_run_summary(spec: &Spec) -> String {
    let mut now = 0;
    let mut later = 0;
    let mut lines = Vec::new();
    let baseline_jobs = baselines(spec);
    for stage in &spec.stages {
        match &stage.from {
            None => {
                let count = cell_indices(stage).count() * spec.seeds_of(stage).len();
                now += count;
                lines.push(format!(
                    "{}: {}{}",
                    stage.name,
                    jobs(count),
                    grid_shape(spec, stage)
                ));
            }
            Some(selection_name) => {
                let plan = promoted(spec, stage);
                later += plan.count;
                let seeds = match &stage.seeds {
                    Some(seeds) => format!(" × {}", plural(seeds.len(), "seed")),
                    None => String::new(),
                };
                let (per, top) = spec
                    .selection(selection_name)
                    .map(|selection| (selection.per.join(", "), selection.top))
                    .unwrap_or_default();
                let groups = match plan.groups {
                    Some(groups) => plural(groups, "group"),
                    None => "groups".to_owned(),
                };
                let baselines = baseline_jobs
                    .iter()
                    .filter(|job| job.stage == stage.name)
                    .count();
                now += baselines;
                let baselines = if baselines > 0 {
                    format!(", and {} now", plural(baselines, "random-init baseline"))
                } else {
                    String::new()
                };
                lines.push(format!(
                    "{}: {}{} once promoted ({groups} of [{per}] × top {top}{seeds}, \
                     from selection {selection_name}){baselines}",
                    stage.name,
                    if plan.groups.is_some() {
                        ""
                    } else {
                        "at most "
                    },
                    jobs(plan.count),
                ));
            }
        }
    }
    let mut out = format!(
        "sweep {}: {} now, {} more once promoted\n",
        spec.name,
        jobs(now),
        later
    );
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Fills a command's `{name}` placeholders from the job's parameters, then from
/// `runtime` (the worker's `job_id`, `attempt`, `job_dir`, `data_root`). Strings go in
/// as they are, other values as JSON (`64`, `0.5`, `true`).
pub fn render_command(
    command: &[String],
    params: &Params,
    runtime: &Params,
) -> SweepResult<Vec<String>> {
    command
        .iter()
        .map(|argument| render_argument(argument, params, runtime))
        .collect()
}

fn render_argument(argument: &str, params: &Params, runtime: &Params) -> SweepResult<String> {
    let fail = |message: String| SweepError::Placeholder {
        argument: argument.to_owned(),
        message,
    };
    // Validates the braces; the loop below then walks the same structure.
    placeholders(argument).map_err(fail)?;
    let mut out = String::new();
    let mut rest = argument;
    while let Some(position) = rest.find(['{', '}']) {
        out.push_str(&rest[..position]);
        let (brace, after) = (&rest[position..position + 1], &rest[position + 1..]);
        if after.starts_with(brace) {
            out.push_str(brace);
            rest = &after[1..];
            continue;
        }
        // `placeholders` accepted the argument, so this `{` has a closing `}`.
        let end = after.find('}').unwrap_or(after.len());
        let name = &after[..end];
        let value = params
            .get(name)
            .or_else(|| runtime.get(name))
            .ok_or_else(|| fail(format!("{{{name}}} names no parameter of this job")))?;
        match value {
            Value::String(text) => out.push_str(text),
            other => out.push_str(&other.to_string()),
        }
        rest = after.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(out)
}

/// SHA-256 as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// JSON with object keys sorted at every level and no whitespace: the same value
/// always gives the same text, whatever order it was built in.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(object) => {
            let mut keys: Vec<&String> = object.keys().collect();
            keys.sort();
            out.push('{');
            for (index, key) in keys.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&object[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => {
            // Writing to a String cannot fail.
            let _ = write!(out, "{scalar}");
        }
    }
}

/// The key of a job of `stage` with these resolved parameters.
pub fn job_key(spec: &Spec, stage: &StageSpec, params: &Params, parent: Option<&str>) -> String {
    let mut config = json!({
        "stage": stage.name,
        "kind": stage.kind.as_str(),
        "params": params,
        "dataset": dataset_config(spec, stage),
        "command": stage.command,
    });
    if let Some(parent) = parent {
        config["parent"] = Value::String(parent.to_owned());
    }
    sha256_hex(canonical_json(&config).as_bytes())
}

/// The stage's dataset definition with unset fields left out, so a field added to
/// [`DatasetSpec`](super::DatasetSpec) later, unset, changes no existing key.
fn dataset_config(spec: &Spec, stage: &StageSpec) -> Value {
    let Some(dataset) = spec.dataset_of(stage) else {
        return Value::Null;
    };
    match serde_json::to_value(dataset) {
        Ok(Value::Object(mut fields)) => {
            fields.retain(|_, value| match value {
                Value::Null => false,
                Value::Array(items) => !items.is_empty(),
                _ => true,
            });
            Value::Object(fields)
        }
        // A struct of paths, strings and numbers always serializes to an object.
        _ => Value::Null,
    }
}

/// How many cells a stage's grid has before excludes (the product of its axes'
/// lengths), counted without expanding it; saturates instead of overflowing.
pub fn grid_size(stage: &StageSpec) -> u128 {
    stage.grid.iter().fold(1u128, |product, (_, values)| {
        product.saturating_mul(values.len() as u128)
    })
}

/// The grid cells of a stage as value indices per axis, axes in file order (first
/// slowest), minus excludes. Lazy: one cell in memory at a time, whatever the grid's
/// size.
pub fn cell_indices(stage: &StageSpec) -> impl Iterator<Item = Vec<usize>> + '_ {
    let lengths: Vec<usize> = stage.grid.iter().map(|(_, values)| values.len()).collect();
    let mut next = if lengths.contains(&0) {
        None
    } else {
        Some(vec![0; lengths.len()])
    };
    std::iter::from_fn(move || {
        let current = next.take()?;
        // Odometer: the last axis turns fastest.
        let mut following = current.clone();
        for axis in (0..lengths.len()).rev() {
            following[axis] += 1;
            if following[axis] < lengths[axis] {
                next = Some(following);
                break;
            }
            following[axis] = 0;
        }
        Some(current)
    })
    .filter(move |indices| !excluded(stage, indices))
}

/// The cell at these value indices.
pub fn cell_at(stage: &StageSpec, indices: &[usize]) -> Params {
    stage
        .grid
        .iter()
        .zip(indices)
        .map(|((axis, values), &index)| (axis.clone(), values[index].clone()))
        .collect()
}

fn excluded(stage: &StageSpec, indices: &[usize]) -> bool {
    stage.exclude.iter().any(|rule| {
        rule.iter().all(|(axis, value)| {
            stage
                .grid
                .iter()
                .zip(indices)
                .find(|((name, _), _)| name == axis)
                .is_some_and(|((_, values), &index)| same_value(&values[index], value))
        })
    })
}

/// The grid cells of a stage, lazily (see [`cell_indices`]).
fn cells(stage: &StageSpec) -> impl Iterator<Item = Params> + '_ {
    cell_indices(stage).map(move |indices| cell_at(stage, &indices))
}

fn root_jobs(spec: &Spec, stage: &StageSpec) -> Vec<JobSpec> {
    let mut jobs = Vec::new();
    for cell in cells(stage) {
        for &seed in spec.seeds_of(stage) {
            let mut params = cell.clone();
            params.extend(stage.params.clone());
            params.insert("seed".to_owned(), Value::from(seed));
            let key = job_key(spec, stage, &params, None);
            jobs.push(job(stage, key, params));
        }
    }
    jobs
}

fn job(stage: &StageSpec, key: String, params: Params) -> JobSpec {
    JobSpec {
        stage: stage.name.clone(),
        kind: stage.kind,
        key,
        params,
        priority: stage.priority,
        max_attempts: stage.max_attempts,
    }
}

/// ` (4 backbone × 3 batch_size × 1 seed, 2 cells excluded)`.
fn grid_shape(spec: &Spec, stage: &StageSpec) -> String {
    let mut factors: Vec<String> = stage
        .grid
        .iter()
        .map(|(axis, values)| format!("{} {axis}", values.len()))
        .collect();
    factors.push(plural(spec.seeds_of(stage).len(), "seed"));
    let full = grid_size(stage);
    let excluded = if stage.exclude.is_empty() {
        0
    } else {
        full.saturating_sub(cell_indices(stage).count() as u128)
    };
    let excluded = if excluded > 0 {
        format!(", {} excluded", plural(excluded as usize, "cell"))
    } else {
        String::new()
    };
    format!(" ({}{excluded})", factors.join(" × "))
}

/// How many jobs a downstream stage gets once every group has promoted; `groups` is
/// `None` where that depends on results not known yet (the count is then a bound).
struct Promoted {
    count: usize,
    groups: Option<usize>,
}

fn promoted(spec: &Spec, stage: &StageSpec) -> Promoted {
    let seeds = stage.seeds.as_ref().map_or(1, Vec::len);
    let Some(selection) = stage.from.as_deref().and_then(|name| spec.selection(name)) else {
        return Promoted {
            count: 0,
            groups: Some(0),
        };
    };
    let Some(ranked) = spec.stage(&selection.from) else {
        return Promoted {
            count: 0,
            groups: Some(0),
        };
    };
    if ranked.from.is_some() {
        // Ranking a downstream stage: its candidates are winners not known yet, so
        // the number of groups is not either; every candidate winning is the bound.
        return Promoted {
            count: promoted(spec, ranked).count * seeds,
            groups: None,
        };
    }
    let mut sizes: Vec<(Params, usize)> = Vec::new();
    for job in root_jobs(spec, ranked) {
        let group = select::group_of(selection, &job.params);
        match sizes.iter_mut().find(|(known, _)| *known == group) {
            Some((_, size)) => *size += 1,
            None => sizes.push((group, 1)),
        }
    }
    let winners: usize = sizes
        .iter()
        .map(|(_, size)| (*size).min(selection.top))
        .sum();
    Promoted {
        count: winners * seeds,
        groups: Some(sizes.len()),
    }
}

fn jobs(count: usize) -> String {
    plural(count, "job")
}

fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(value: Value) -> Params {
        match value {
            Value::Object(map) => map,
            _ => unreachable!("tests pass objects"),
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a = json!({"b": 1, "a": {"y": [1, {"d": 2, "c": 3}], "x": "s"}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"x":"s","y":[1,{"c":3,"d":2}]},"b":1}"#
        );
    }

    #[test]
    fn sha256_matches_the_standard_test_vector() {
        // FIPS 180-2, appendix B.1.
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn render_fills_parameters_then_runtime_values() {
        let command = vec![
            "train".to_owned(),
            "--bs={batch_size}".to_owned(),
            "--name={backbone}".to_owned(),
            "{job_dir}/out-{{x}}".to_owned(),
        ];
        let job = params(json!({"batch_size": 64, "backbone": "resnet50"}));
        let runtime = params(json!({"job_dir": "/tmp/j"}));
        assert_eq!(
            render_command(&command, &job, &runtime).expect("every placeholder has a value"),
            ["train", "--bs=64", "--name=resnet50", "/tmp/j/out-{x}"]
        );
        let missing = render_command(&["{lr}".to_owned()], &job, &runtime);
        assert!(matches!(missing, Err(SweepError::Placeholder { .. })));
    }

    #[test]
    fn cells_turn_the_last_axis_fastest_and_skip_excluded_ones() {
        let stage = StageSpec {
            name: "s".into(),
            kind: StageKind::Command,
            dataset: None,
            grid: vec![
                ("a".into(), vec![json!(1), json!(2)]),
                ("b".into(), vec![json!("x"), json!("y"), json!("z")]),
            ],
            params: Params::new(),
            // 1.0 matches the integer 1: numbers compare by value.
            exclude: vec![
                params(json!({"a": 1.0, "b": "y"})),
                params(json!({"b": "z"})),
            ],
            from: None,
            command: Some(vec!["true".into()]),
            seeds: None,
            priority: 0,
            max_attempts: 1,
            halving: None,
        };
        let cells: Vec<Vec<usize>> = cell_indices(&stage).collect();
        assert_eq!(cells, [vec![0, 0], vec![1, 0], vec![1, 1]]);
        assert_eq!(grid_size(&stage), 6);
        assert_eq!(cell_at(&stage, &[1, 1]), params(json!({"a": 2, "b": "y"})));
    }

    #[test]
    fn a_huge_grid_is_counted_not_expanded() {
        let axis = |name: &str| (name.to_owned(), (0..1000).map(|i| json!(i)).collect());
        let mut stage = StageSpec {
            name: "s".into(),
            kind: StageKind::Command,
            dataset: None,
            grid: vec![
                axis("a"),
                axis("b"),
                axis("c"),
                axis("d"),
                axis("e"),
                axis("f"),
                axis("g"),
            ],
            params: Params::new(),
            exclude: Vec::new(),
            from: None,
            command: Some(vec!["true".into()]),
            seeds: None,
            priority: 0,
            max_attempts: 1,
            halving: None,
        };
        assert_eq!(grid_size(&stage), 10u128.pow(21));
        assert_eq!(cell_indices(&stage).take(3).count(), 3);
        stage.grid.push(("h".into(), Vec::new()));
        assert_eq!(cell_indices(&stage).count(), 0);
    }
}
