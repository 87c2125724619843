//! The sweep file through the library: the shipped sweeps, every refusal with its
//! position and field, and the job keys that make resubmitting idempotent.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::json;
use sha2::{Digest, Sha256};
use sweeper::sweep::expand::{dry_run_summary, expand};
use sweeper::sweep::{
    load_file, parse_str, JobSpec, OnFailure, Overrides, Preference, StageKind, SweepError,
};

use crate::common::sweep::*;

/// A small valid sweep; the bad-file cases below each change one thing in it.
const BASE: &str = r#"[sweep]
name = "x"
data_root = "data"
seeds = [0]

[datasets.A]
folder = "setA"
split = [0.7, 0.15, 0.15]

[[stages]]
name = "pretext"
kind = "pretext"
dataset = "A"
[stages.grid]
data_fraction = [1.0, 0.5]
batch_size = [64, 128]
backbone = ["resnet50", "resnet101"]
[stages.params]
epochs = 2

[[selections]]
name = "winners"
from = "pretext"
per = ["backbone"]
prefer = [{ max = "batch_size" }, { min = "loss" }]

[[stages]]
name = "linear"
kind = "linear"
from = "winners"
dataset = "A"
"#;

const COMMAND: &str = r#"[sweep]
name = "cmd"
data_root = "/data"

[[stages]]
name = "run"
kind = "command"
command = ["python", "train.py", "--bs", "{batch_size}", "--out={job_dir}"]
[stages.grid]
batch_size = [8, 16]
"#;

fn keys(jobs: &[JobSpec]) -> BTreeSet<String> {
    jobs.iter().map(|job| job.key.clone()).collect()
}

// ---------------------------------------------------------------- shipped sweeps

#[test]
fn report_sweep_expands_to_the_108_pretext_runs() {
    let loaded = load_shipped("report.toml");
    let jobs = expand(&loaded.spec);
    assert_eq!(jobs.len(), 108);
    assert!(jobs
        .iter()
        .all(|job| job.stage == "pretext" && job.kind == StageKind::Pretext));
    assert_eq!(keys(&jobs).len(), 108, "every cell has its own key");
    // 4 backbones × 3 fractions × 3 batch sizes × 3 projections, each exactly once.
    let cells: BTreeSet<String> = jobs
        .iter()
        .map(|job| {
            let p = &job.params;
            format!(
                "{}/{}/{}/{}",
                p["backbone"], p["data_fraction"], p["batch_size"], p["projection_dim"]
            )
        })
        .collect();
    assert_eq!(cells.len(), 108);
    let first = &jobs[0].params;
    assert_eq!(first["backbone"], json!("resnet50"));
    assert_eq!(first["epochs"], json!(100));
    assert_eq!(first["optimizer"], json!("lars"));
    assert_eq!(first["temperature"], json!(0.5));
    assert_eq!(first["seed"], json!(0));
    assert!(jobs
        .iter()
        .all(|job| job.max_attempts == 3 && job.priority == 0));
}

#[test]
fn report_sweep_is_checked_into_the_papers_datasets_and_rule() {
    let spec = load_shipped("report.toml").spec;
    assert_eq!(spec.name, "cytology-simclr");
    assert!(spec.data_root.is_absolute());
    assert!(spec.data_root.ends_with("data/cytology"));
    let a2 = &spec.datasets["A2"];
    assert_eq!(a2.take_labels, Some(30));
    assert_eq!(a2.per_label, Some(100));
    assert_eq!(a2.split, [0.70, 0.15, 0.15]);
    assert_eq!(spec.datasets["A1"].split, [1.0], "no split means one part");
    assert_eq!(spec.datasets["B"].test_max_total, Some(7000));
    let winners = spec.selection("winners").expect("selection exists");
    assert_eq!(winners.per, ["backbone"]);
    assert_eq!(
        winners.prefer,
        [
            Preference::Max("batch_size".into()),
            Preference::Min("loss".into())
        ]
    );
    assert_eq!((winners.top, winners.on_failure), (1, OnFailure::Wait));
    let grid_axes: Vec<&str> = spec.stages[0]
        .grid
        .iter()
        .map(|(a, _)| a.as_str())
        .collect();
    assert_eq!(
        grid_axes,
        ["backbone", "data_fraction", "batch_size", "projection_dim"]
    );
}

#[test]
fn report_dry_run_counts_pretext_now_and_downstream_once_promoted() {
    let summary = dry_run_summary(&load_shipped("report.toml").spec);
    assert!(summary.contains("pretext: 108 jobs"), "{summary}");
    assert!(
        summary.contains(
            "linear: 4 jobs once promoted (4 groups of [backbone] × top 1, from selection winners)"
        ),
        "{summary}"
    );
    assert!(
        summary.contains(
            "finetune: 4 jobs once promoted (4 groups of [backbone] × top 1, from selection winners)"
        ),
        "{summary}"
    );
}

#[test]
fn demo_sweep_expands() {
    let loaded = load_shipped("demo.toml");
    let jobs = expand(&loaded.spec);
    // 1 backbone × 2 fractions × 2 batch sizes × 2 projections.
    assert_eq!(jobs.len(), 8);
    assert!(jobs.iter().all(|job| job.max_attempts == 2));
    let summary = dry_run_summary(&loaded.spec);
    assert!(summary.contains("pretext: 8 jobs"), "{summary}");
    assert!(
        summary.contains("linear: 1 job once promoted (1 group of [backbone]"),
        "{summary}"
    );
    let winners = loaded.spec.selection("winners").expect("selection exists");
    assert_eq!(winners.on_failure, OnFailure::Promote);
}

#[test]
fn loaded_sweep_hashes_its_text() {
    let loaded = load_shipped("demo.toml");
    assert_eq!(loaded.text, shipped_text("demo.toml"));
    assert_eq!(
        loaded.hash,
        hex::encode(Sha256::digest(loaded.text.as_bytes()))
    );
}

#[test]
fn data_root_override_replaces_the_files() {
    let overrides = Overrides {
        data_root: Some("/mnt/cytology".into()),
        ..Overrides::default()
    };
    let loaded = parse_str(&shipped_text("report.toml"), Path::new(ORIGIN), &overrides)
        .expect("report parses");
    assert_eq!(loaded.spec.data_root, Path::new("/mnt/cytology"));
    // Where the data is mounted decides nothing about a job's outcome.
    assert_eq!(
        keys(&expand(&loaded.spec)),
        keys(&expand(&load_shipped("report.toml").spec))
    );
}

#[test]
fn missing_file_is_a_read_error() {
    let error = load_file(Path::new("/nonexistent/sweep.toml"), &Overrides::default())
        .expect_err("no such file");
    assert!(matches!(error, SweepError::Read { .. }), "{error}");
}

#[test]
fn base_and_command_snippets_are_valid() {
    let spec = parse_ok(BASE);
    assert_eq!(expand(&spec).len(), 8);
    let spec = parse_ok(COMMAND);
    assert_eq!(spec.stages[0].dataset, None);
    assert_eq!(expand(&spec).len(), 2);
}

// ---------------------------------------------------------------- refusals

/// Applies `old → new` to [`BASE`] and checks the error's location (the `nth`
/// occurrence of `needle` in the edited text), field and message.
fn refused(old: &str, new: &str, needle: (&str, usize), field: &str, message: &str) {
    refused_in(BASE, old, new, needle, field, message);
}

fn refused_in(base: &str, old: &str, new: &str, needle: (&str, usize), field: &str, message: &str) {
    let text = edit(base, old, new);
    let (location, got_field, got_message) = invalid(&text);
    assert_eq!(
        location,
        at(&text, needle.0, needle.1),
        "location ({got_message})"
    );
    assert_eq!(got_field, field, "field ({got_message})");
    assert!(
        got_message.contains(message),
        "{got_message:?} lacks {message:?}"
    );
}

#[test]
fn error_reads_file_line_column_field_message() {
    let text = edit(
        BASE,
        "data_fraction = [1.0, 0.5]",
        "data_fraction = [1.5, 0.5]",
    );
    let error = parse(&text).expect_err("1.5 is not a fraction");
    assert_eq!(
        error.to_string(),
        "sweeps/x.toml:15:18: stages[0].grid.data_fraction: 1.5 is outside (0, 1]"
    );
}

#[test]
fn refuses_unknown_keys() {
    refused(
        "epochs = 2",
        "epochs = 2\n[stages.extra]\nx = 1",
        ("extra", 0),
        "stages[0].extra",
        "unknown field `extra`",
    );
    refused(
        "seeds = [0]",
        "seeds = [0]\ncolour = \"red\"",
        ("colour", 0),
        "sweep.colour",
        "unknown field `colour`",
    );
    refused(
        "folder = \"setA\"",
        "folder = \"setA\"\nlabels = 3",
        ("labels", 0),
        "datasets.A.labels",
        "unknown field `labels`",
    );
    refused(
        "per = [\"backbone\"]",
        "per = [\"backbone\"]\nbest = 1",
        ("best", 0),
        "selections[0].best",
        "unknown field `best`",
    );
    refused(
        "{ min = \"loss\" }",
        "{ least = \"loss\" }",
        ("least", 0),
        "selections[0].prefer[1].least",
        "unknown field `least`",
    );
}

#[test]
fn refuses_wrong_types() {
    refused(
        "seeds = [0]",
        "seeds = 0",
        ("0", 0),
        "sweep.seeds",
        "invalid type",
    );
    refused(
        "name = \"x\"",
        "name = 7",
        ("7", 0),
        "sweep.name",
        "invalid type",
    );
    refused(
        "batch_size = [64, 128]",
        "batch_size = 64",
        ("64", 0),
        "stages[0].grid.batch_size",
        "invalid type",
    );
    refused(
        "split = [0.7, 0.15, 0.15]",
        "split = [\"a\"]",
        ("\"a\"", 0),
        "datasets.A.split[0]",
        "invalid type",
    );
}

#[test]
fn refuses_empty_and_duplicated_axis_values() {
    refused(
        "batch_size = [64, 128]",
        "batch_size = []",
        ("[]", 0),
        "stages[0].grid.batch_size",
        "no values",
    );
    refused(
        "batch_size = [64, 128]",
        "batch_size = [64, 128, 64]",
        ("64", 1),
        "stages[0].grid.batch_size",
        "64 is listed twice",
    );
    refused(
        "data_fraction = [1.0, 0.5]",
        "data_fraction = [1, 0.5, 1.0]",
        ("1.0", 0),
        "stages[0].grid.data_fraction",
        "listed twice",
    );
}

#[test]
fn refuses_data_fraction_outside_the_unit_interval() {
    refused(
        "data_fraction = [1.0, 0.5]",
        "data_fraction = [1.0, 0]",
        ("0]", 1),
        "stages[0].grid.data_fraction",
        "0 is outside (0, 1]",
    );
    refused(
        "data_fraction = [1.0, 0.5]",
        "data_fraction = [-0.5]",
        ("-0.5", 0),
        "stages[0].grid.data_fraction",
        "outside (0, 1]",
    );
    // A downstream stage trains on its winner's data: it sets no fraction of its own.
    for value in ["1.01", "\"all\""] {
        let text = format!("{BASE}[stages.params]\ndata_fraction = {value}\n");
        let (location, field, got) = invalid(&text);
        assert_eq!(location, at(&text, value, 0));
        assert_eq!(field, "stages[1].params.data_fraction");
        assert!(got.contains("is not a parameter of this stage"), "{got}");
    }
}

#[test]
fn refuses_non_positive_batch_sizes() {
    refused(
        "batch_size = [64, 128]",
        "batch_size = [64, 0]",
        ("0]", 1),
        "stages[0].grid.batch_size",
        "must be at least 2 (batch norm needs two samples), got 0",
    );
    refused(
        "batch_size = [64, 128]",
        "batch_size = [-64]",
        ("-64", 0),
        "stages[0].grid.batch_size",
        "must be at least 2",
    );
    refused(
        "batch_size = [64, 128]",
        "batch_size = [64.5]",
        ("64.5", 0),
        "stages[0].grid.batch_size",
        "expected an integer",
    );
}

#[test]
fn refuses_non_positive_batch_size_in_params() {
    let text = format!("{BASE}[stages.params]\nbatch_size = 0\n");
    let (location, field, message) = invalid(&text);
    assert_eq!(location, at(&text, "0", text.matches('0').count() - 1));
    assert_eq!(field, "stages[1].params.batch_size");
    assert!(message.contains("must be at least 2"), "{message}");
}

#[test]
fn refuses_unknown_stage_kinds() {
    refused(
        "kind = \"linear\"",
        "kind = \"probe\"",
        ("\"probe\"", 0),
        "stages[1].kind",
        "unknown stage kind \"probe\"",
    );
}

#[test]
fn refuses_duplicate_names() {
    refused(
        "name = \"linear\"",
        "name = \"pretext\"",
        ("\"pretext\"", 3),
        "stages[1].name",
        "already defined",
    );
    let text = format!("{BASE}\n[[selections]]\nname = \"winners\"\nfrom = \"pretext\"\nprefer = [{{ min = \"loss\" }}]\n");
    let (location, field, message) = invalid(&text);
    assert_eq!(location, at(&text, "\"winners\"", 2));
    assert_eq!(field, "selections[1].name");
    assert!(message.contains("already defined"), "{message}");
}

#[test]
fn refuses_unknown_references() {
    refused(
        "dataset = \"A\"\n[stages.grid]",
        "dataset = \"Z\"\n[stages.grid]",
        ("\"Z\"", 0),
        "stages[0].dataset",
        "no dataset named `Z` (defined: `A`)",
    );
    refused(
        "from = \"winners\"",
        "from = \"best\"",
        ("\"best\"", 0),
        "stages[1].from",
        "no selection named `best`",
    );
    refused(
        "from = \"pretext\"",
        "from = \"pretrain\"",
        ("\"pretrain\"", 0),
        "selections[0].from",
        "no stage named `pretrain`",
    );
}

#[test]
fn refuses_a_stage_running_on_a_later_stage() {
    // The selection ranks `linear`, which `linear` itself would run on.
    refused(
        "from = \"pretext\"",
        "from = \"linear\"",
        ("\"winners\"", 1),
        "stages[1].from",
        "not defined before this stage",
    );
}

#[test]
fn refuses_selection_fields_that_are_not_parameters() {
    refused(
        "per = [\"backbone\"]",
        "per = [\"arch\"]",
        ("\"arch\"", 0),
        "selections[0].per",
        "`arch` is not a parameter of stage `pretext`",
    );
    refused(
        "per = [\"backbone\"]",
        "per = [\"loss\"]",
        ("\"loss\"", 0),
        "selections[0].per",
        "not a parameter",
    );
    refused(
        "{ min = \"loss\" }",
        "{ min = \"los\" }",
        ("\"los\"", 0),
        "selections[0].prefer[1]",
        "`los` is neither a parameter",
    );
    refused(
        "{ min = \"loss\" }",
        "{ min = \"accuracy\" }",
        ("\"accuracy\"", 0),
        "selections[0].prefer[1]",
        "nor a result of a pretext stage (`loss`)",
    );
    refused(
        "{ min = \"loss\" }",
        "{ min = \"loss\", max = \"loss\" }",
        ("{ min", 0),
        "selections[0].prefer[1]",
        "exactly one",
    );
    refused(
        "prefer = [{ max = \"batch_size\" }, { min = \"loss\" }]",
        "prefer = []",
        ("[]", 0),
        "selections[0].prefer",
        "is empty",
    );
}

#[test]
fn accepts_result_metrics_and_parameters_in_prefer() {
    let spec = parse_ok(&edit(BASE, "{ min = \"loss\" }", "{ min = \"epochs\" }"));
    assert_eq!(
        spec.selections[0].prefer[1],
        Preference::Min("epochs".into())
    );
    // A command stage's result is whatever its program prints.
    let text = format!(
        "{COMMAND}\n[[selections]]\nname = \"s\"\nfrom = \"run\"\nprefer = [{{ max = \"anything\" }}]\n"
    );
    assert_eq!(
        parse_ok(&text).selections[0].prefer[0],
        Preference::Max("anything".into())
    );
}

#[test]
fn refuses_downstream_stage_without_from() {
    refused(
        "from = \"winners\"\n",
        "",
        ("[[stages]]", 1),
        "stages[1].from",
        "a linear stage runs on the winners",
    );
}

#[test]
fn refuses_training_stage_without_dataset() {
    refused(
        "dataset = \"A\"\n[stages.grid]",
        "[stages.grid]",
        ("[[stages]]", 0),
        "stages[0].dataset",
        "a pretext stage trains on a dataset",
    );
}

#[test]
fn refuses_command_stage_without_command() {
    refused_in(
        COMMAND,
        "command = [\"python\", \"train.py\", \"--bs\", \"{batch_size}\", \"--out={job_dir}\"]\n",
        "",
        ("[[stages]]", 0),
        "stages[0].command",
        "missing",
    );
    refused_in(
        COMMAND,
        "[\"python\", \"train.py\", \"--bs\", \"{batch_size}\", \"--out={job_dir}\"]",
        "[]",
        ("[]", 0),
        "stages[0].command",
        "is empty",
    );
    refused(
        "kind = \"linear\"",
        "kind = \"linear\"\ncommand = [\"x\"]",
        ("[\"x\"]", 0),
        "stages[1].command",
        "only command stages",
    );
}

#[test]
fn refuses_placeholders_naming_no_parameter() {
    refused_in(
        COMMAND,
        "\"{batch_size}\"",
        "\"{batchsize}\"",
        ("\"{batchsize}\"", 0),
        "stages[0].command",
        "{batchsize} names no parameter",
    );
    refused_in(
        COMMAND,
        "\"{batch_size}\"",
        "\"{batch_size\"",
        ("\"{batch_size\"", 0),
        "stages[0].command",
        "unclosed",
    );
}

#[test]
fn refuses_exclude_naming_unknown_axis() {
    let text = edit(
        BASE,
        "epochs = 2",
        "epochs = 2\n[[stages.exclude]]\nbackbone = \"resnet50\"\nlayers = 50",
    );
    let (location, field, message) = invalid(&text);
    assert_eq!(location, at(&text, "50", 2));
    assert_eq!(field, "stages[0].exclude[0].layers");
    assert!(message.contains("`layers` is not a grid axis"), "{message}");
    refused(
        "dataset = \"A\"\n[stages.grid]",
        "dataset = \"A\"\nexclude = [{ batch_size = 32 }]\n[stages.grid]",
        ("32", 0),
        "stages[0].exclude[0].batch_size",
        "32 is not a value of axis",
    );
}

#[test]
fn refuses_bad_splits() {
    refused(
        "split = [0.7, 0.15, 0.15]",
        "split = [0.7, 0.2, 0.15]",
        ("[0.7", 0),
        "datasets.A.split",
        "sum to 1.05",
    );
    refused(
        "split = [0.7, 0.15, 0.15]",
        "split = [0.4, 0.3, 0.2, 0.1]",
        ("[0.4", 0),
        "datasets.A.split",
        "4 entries",
    );
    refused(
        "split = [0.7, 0.15, 0.15]",
        "split = []",
        ("[]", 0),
        "datasets.A.split",
        "0 entries",
    );
    refused(
        "split = [0.7, 0.15, 0.15]",
        "split = [1.5, -0.5]",
        ("1.5", 0),
        "datasets.A.split",
        "outside (0, 1]",
    );
    // Within 1e-6 of 1 is 1.
    parse_ok(&edit(
        BASE,
        "split = [0.7, 0.15, 0.15]",
        "split = [0.7, 0.1500001, 0.15]",
    ));
}

#[test]
fn refuses_max_attempts_below_one_and_empty_seeds() {
    refused(
        "seeds = [0]",
        "seeds = [0]\nmax_attempts = 0",
        ("0", 1),
        "sweep.max_attempts",
        "at least 1",
    );
    refused(
        "kind = \"linear\"",
        "kind = \"linear\"\nmax_attempts = -1",
        ("-1", 0),
        "stages[1].max_attempts",
        "at least 1",
    );
    refused(
        "seeds = [0]",
        "seeds = []",
        ("[]", 0),
        "sweep.seeds",
        "is empty",
    );
    refused(
        "kind = \"linear\"",
        "kind = \"linear\"\nseeds = []",
        ("[]", 0),
        "stages[1].seeds",
        "is empty",
    );
    refused(
        "seeds = [0]",
        "seeds = [0, 1, 0]",
        ("0]", 0),
        "sweep.seeds",
        "seed 0 is listed twice",
    );
}

#[test]
fn refuses_seed_as_a_parameter_and_a_grid_on_a_downstream_stage() {
    refused(
        "epochs = 2",
        "epochs = 2\nseed = 17",
        ("17", 0),
        "stages[0].params.seed",
        "set from `seeds`",
    );
    let text = format!("{BASE}[stages.grid]\nlr = [0.1, 0.2]\n");
    let (location, field, message) = invalid(&text);
    assert_eq!(location, at(&text, "[stages.grid]", 1));
    assert_eq!(field, "stages[1].grid");
    assert!(message.contains("takes no grid"), "{message}");
}

// ---------------------------------------------------------------- keys

#[test]
fn keys_follow_the_documented_recipe() {
    let spec = parse_ok(COMMAND);
    let jobs = expand(&spec);
    // sha256 of the canonical JSON (sorted keys, no spaces) of the resolved config,
    // written out by hand.
    let canonical = r#"{"command":["python","train.py","--bs","{batch_size}","--out={job_dir}"],"dataset":null,"kind":"command","params":{"batch_size":8,"seed":0},"stage":"run"}"#;
    assert_eq!(
        jobs[0].key,
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
}

#[test]
fn keys_are_stable_across_parses() {
    let first = keys(&expand(&parse_ok(BASE)));
    let second = keys(&expand(&parse_ok(BASE)));
    assert_eq!(first, second);
    assert_eq!(first.len(), 8);
}

#[test]
fn keys_ignore_toml_key_order() {
    let reordered = r#"[[selections]]
prefer = [{ max = "batch_size" }, { min = "loss" }]
per = ["backbone"]
from = "pretext"
name = "winners"

[[stages]]
dataset = "A"
kind = "pretext"
name = "pretext"
[stages.params]
epochs = 2
[stages.grid]
backbone = ["resnet50", "resnet101"]
batch_size = [64, 128]
data_fraction = [1.0, 0.5]

[[stages]]
dataset = "A"
from = "winners"
kind = "linear"
name = "linear"

[datasets.A]
split = [0.7, 0.15, 0.15]
folder = "setA"

[sweep]
seeds = [0]
data_root = "data"
name = "x"
"#;
    let original = expand(&parse_ok(BASE));
    let reordered = expand(&parse_ok(reordered));
    assert_eq!(keys(&original), keys(&reordered));
    // Axis order decides the job order only.
    assert_eq!(original[0].params["data_fraction"], json!(1.0));
    assert_eq!(original[1].params["data_fraction"], json!(1.0));
    assert_ne!(
        reordered[0].params["backbone"],
        reordered[4].params["backbone"]
    );
}

#[test]
fn any_change_to_the_configuration_changes_every_key() {
    let base = keys(&expand(&parse_ok(BASE)));
    for (old, new) in [
        ("epochs = 2", "epochs = 3"),
        ("epochs = 2", "epochs = 2\nlr_base = 0.1"),
        ("folder = \"setA\"", "folder = \"setB\""),
        ("split = [0.7, 0.15, 0.15]", "split = [0.8, 0.1, 0.1]"),
        ("folder = \"setA\"", "folder = \"setA\"\nmax_total = 100"),
        ("seeds = [0]", "seeds = [1]"),
    ] {
        let changed = keys(&expand(&parse_ok(&edit(BASE, old, new))));
        assert_eq!(changed.len(), base.len());
        assert!(changed.is_disjoint(&base), "{old} → {new} kept a key");
    }
    let renamed = edit(BASE, "name = \"pretext\"", "name = \"pre\"");
    let renamed = edit(&renamed, "from = \"pretext\"", "from = \"pre\"");
    assert!(keys(&expand(&parse_ok(&renamed))).is_disjoint(&base));
    let command = keys(&expand(&parse_ok(COMMAND)));
    let edited = keys(&expand(&parse_ok(&edit(
        COMMAND,
        "\"--bs\"",
        "\"--batch\"",
    ))));
    assert!(command.is_disjoint(&edited));
}

#[test]
fn priority_attempts_and_data_root_do_not_change_keys() {
    let base = keys(&expand(&parse_ok(BASE)));
    for (old, new) in [
        ("seeds = [0]", "seeds = [0]\npriority = 5\nmax_attempts = 7"),
        ("data_root = \"data\"", "data_root = \"/elsewhere\""),
        ("kind = \"pretext\"", "kind = \"pretext\"\npriority = 9"),
    ] {
        let spec = parse_ok(&edit(BASE, old, new));
        assert_eq!(keys(&expand(&spec)), base, "{old} → {new}");
    }
    let spec = parse_ok(&edit(
        BASE,
        "seeds = [0]",
        "seeds = [0]\npriority = 5\nmax_attempts = 7",
    ));
    assert!(expand(&spec)
        .iter()
        .all(|job| job.priority == 5 && job.max_attempts == 7));
}

#[test]
fn extending_a_grid_keeps_old_keys_and_adds_only_new_cells() {
    let old = keys(&expand(&parse_ok(BASE)));
    let extended_spec = parse_ok(&edit(
        BASE,
        "batch_size = [64, 128]",
        "batch_size = [64, 128, 256]",
    ));
    let extended = expand(&extended_spec);
    assert_eq!(extended.len(), 12);
    assert!(old.is_subset(&keys(&extended)));
    let added: Vec<&JobSpec> = extended
        .iter()
        .filter(|job| !old.contains(&job.key))
        .collect();
    assert_eq!(added.len(), 4);
    assert!(added
        .iter()
        .all(|job| job.params["batch_size"] == json!(256)));
    // The report's grid extended by a fourth batch size: 108 old cells plus 36.
    let report = keys(&expand(&load_shipped("report.toml").spec));
    let text = edit(
        &shipped_text("report.toml"),
        "batch_size = [64, 128, 256]",
        "batch_size = [64, 128, 256, 512]",
    );
    let bigger = keys(&expand(&parse_ok(&text)));
    assert_eq!(bigger.len(), 144);
    assert!(report.is_subset(&bigger));
}

#[test]
fn seeds_multiply_jobs() {
    let spec = parse_ok(&edit(BASE, "seeds = [0]", "seeds = [0, 1, 2]"));
    let jobs = expand(&spec);
    assert_eq!(jobs.len(), 24);
    assert_eq!(keys(&jobs).len(), 24);
    // Seed varies fastest.
    let seeds: Vec<_> = jobs[..3]
        .iter()
        .map(|job| job.params["seed"].clone())
        .collect();
    assert_eq!(seeds, [json!(0), json!(1), json!(2)]);
    // Seed 0's jobs keep their keys.
    assert!(keys(&expand(&parse_ok(BASE))).is_subset(&keys(&jobs)));
    // A stage's own seeds replace the sweep's.
    let spec = parse_ok(&edit(
        BASE,
        "kind = \"pretext\"",
        "kind = \"pretext\"\nseeds = [7, 8]",
    ));
    let jobs = expand(&spec);
    assert_eq!(jobs.len(), 16);
    assert!(jobs
        .iter()
        .all(|job| job.params["seed"] == json!(7) || job.params["seed"] == json!(8)));
}

#[test]
fn exclude_removes_matching_cells() {
    let text = edit(
        BASE,
        "dataset = \"A\"\n[stages.grid]",
        "dataset = \"A\"\nexclude = [{ backbone = \"resnet101\", batch_size = 128 }, { data_fraction = 0.5, backbone = \"resnet50\" }]\n[stages.grid]",
    );
    let jobs = expand(&parse_ok(&text));
    // 8 cells; the first rule removes 2 (both fractions), the second 2 (both batch sizes).
    assert_eq!(jobs.len(), 4);
    for job in &jobs {
        let p = &job.params;
        assert!(!(p["backbone"] == json!("resnet101") && p["batch_size"] == json!(128)));
        assert!(!(p["backbone"] == json!("resnet50") && p["data_fraction"] == json!(0.5)));
    }
    assert!(keys(&jobs).is_subset(&keys(&expand(&parse_ok(BASE)))));
    let summary = dry_run_summary(&parse_ok(&text));
    assert!(summary.contains("pretext: 4 jobs (2 data_fraction × 2 batch_size × 2 backbone × 1 seed, 4 cells excluded)"), "{summary}");
}

#[test]
fn refuses_bad_selection_settings() {
    refused(
        "per = [\"backbone\"]",
        "per = [\"backbone\"]\ntop = -2",
        ("-2", 0),
        "selections[0].top",
        "at least 1",
    );
    refused(
        "per = [\"backbone\"]",
        "per = [\"backbone\"]\non_failure = \"skip\"",
        ("\"skip\"", 0),
        "selections[0].on_failure",
        "not \"wait\" or \"promote\"",
    );
    refused(
        "per = [\"backbone\"]",
        "per = [\"backbone\", \"backbone\"]",
        ("\"backbone\"", 1),
        "selections[0].per",
        "listed twice",
    );
}

#[test]
fn refuses_bad_dataset_fields() {
    refused(
        "folder = \"setA\"",
        "folder = \"setA\"\ntest_max_total = 10",
        ("10", 0),
        "datasets.A.test_max_total",
        "needs `test_folder`",
    );
    refused(
        "folder = \"setA\"",
        "folder = \"setA\"\ninclude_labels = [\"HSIL\", \"SCC\"]\nexclude_labels = [\"SCC\"]",
        ("\"SCC\"", 1),
        "datasets.A.exclude_labels",
        "both included and excluded",
    );
    refused(
        "folder = \"setA\"",
        "folder = \"setA\"\ntake_labels = 0",
        ("0", 1),
        "datasets.A.take_labels",
        "at least 1",
    );
}

#[test]
fn data_root_comes_from_the_file_or_the_override() {
    let text = edit(BASE, "data_root = \"data\"\n", "");
    let (location, field, message) = invalid(&text);
    assert_eq!(location, at(&text, "[sweep]", 0));
    assert_eq!(field, "sweep.data_root");
    assert!(message.contains("--data-root"), "{message}");
    let overrides = Overrides {
        data_root: Some("/srv/data".into()),
        ..Overrides::default()
    };
    let loaded = parse_str(&text, Path::new(ORIGIN), &overrides).expect("override supplies it");
    assert_eq!(loaded.spec.data_root, Path::new("/srv/data"));
    // Relative roots are relative to the current directory.
    let spec = parse_ok(BASE);
    assert_eq!(
        spec.data_root,
        std::env::current_dir().expect("cwd").join("data")
    );
}

#[test]
fn refuses_a_file_without_a_sweep_table() {
    let text = BASE.replacen(
        "[sweep]\nname = \"x\"\ndata_root = \"data\"\nseeds = [0]\n",
        "",
        1,
    );
    let (location, _, message) = invalid(&text);
    assert_eq!(location, format!("{ORIGIN}:1:1"));
    assert!(message.contains("missing field `sweep`"), "{message}");
}

// ---------------------------------------------------------------- successive halving

/// Where [`BASE`]'s pretext stage gets a halving rule.
const HALVING_AT: &str = "[stages.params]\nepochs = 2\n";

fn halving_text(rule: &str) -> String {
    format!("[stages.params]\nepochs = 20\n[stages.halving]\n{rule}\n")
}

/// [`BASE`]'s pretext stage with a halving rule.
fn with_halving(rule: &str) -> String {
    edit(BASE, HALVING_AT, &halving_text(rule))
}

#[test]
fn a_halving_rule_is_checked_where_it_is_written() {
    let ok = parse_ok(&with_halving(
        "metric = \"loss\"\nrungs = [5, 10]\nkeep = \"1/3\"\nper = [\"backbone\", \"batch_size\"]",
    ));
    let rule = ok.stages[0].halving.as_ref().expect("the rule");
    assert_eq!(
        (rule.rungs.clone(), rule.keep.of(9), rule.keep.of(4)),
        (vec![5, 10], 3, 2)
    );
    let cases = [
        (
            "metric = \"loss\"\nrungs = [5, 20]\nkeep = \"1/3\"\nper = [\"batch_size\"]",
            ("20]", 0),
            "stages[0].halving.rungs",
            "not below the 20 epochs",
        ),
        (
            "metric = \"loss\"\nrungs = [10, 5]\nkeep = \"1/3\"\nper = [\"batch_size\"]",
            ("5]", 2),
            "stages[0].halving.rungs",
            "does not come after",
        ),
        (
            "metric = \"loss\"\nrungs = [5]\nkeep = \"3/2\"\nper = [\"batch_size\"]",
            ("\"3/2\"", 0),
            "stages[0].halving.keep",
            "between 0 and 1",
        ),
        (
            "metric = \"accuracy\"\nrungs = [5]\nkeep = 0.5\nper = [\"batch_size\"]",
            ("\"accuracy\"", 0),
            "stages[0].halving.metric",
            "records every epoch",
        ),
        (
            "metric = \"loss\"\nrungs = [5]\nkeep = 0.5\nper = [\"backbone\"]",
            ("\"backbone\"", 0),
            "stages[0].halving.per",
            "add \"batch_size\" to per",
        ),
        (
            "metric = \"loss\"\nrungs = [5]\nkeep = 0.5\nper = [\"lr\"]",
            ("\"lr\"", 0),
            "stages[0].halving.per",
            "not a parameter of stage `pretext`",
        ),
    ];
    for (rule, needle, field, message) in cases {
        refused_in(
            BASE,
            HALVING_AT,
            &halving_text(rule),
            needle,
            field,
            message,
        );
    }
    let misspelled =
        with_halving("metric = \"loss\"\nrung = [5]\nkeep = 0.5\nper = [\"batch_size\"]");
    assert!(parse(&misspelled).is_err(), "an unknown key is refused");
}
