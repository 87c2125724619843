//! Typed parameters at `submit`: a battery of bad files through the real binary
//! (exit 2, `file:line:column: field` at the offending key or value, the store's
//! dump unchanged), and every documented parameter reaching the trainer's typed
//! configuration with the value the file gave.

use crate::common::{self, TestDb};
use serde_json::json;
use sweeper::store::JobFilter;
use sweeper::sweep::params::{OptimizerKind, PretextParams};
use sweeper::sweep::StageKind;
use sweeper::train::config::{DownstreamConfig, PretextConfig};
use sweeper::train::schedule::LrScaling;

backend_tests!(
    a_bad_parameter_is_refused_at_its_span_and_nothing_changes,
    every_documented_parameter_reaches_the_trainer,
    a_changed_file_is_refused_unless_it_is_a_new_version
);

/// A valid three-stage sweep with every kind of setting the cases below break.
const GOOD: &str = r#"[sweep]
name = "typed"
data_root = "data"
seeds = [0]
max_attempts = 2

[datasets.A]
folder = "setA"
split = [0.6, 0.2, 0.2]

[datasets.B]
folder = "setB"
test_folder = "setB-test"

[[stages]]
name = "pretext"
kind = "pretext"
dataset = "A"

[stages.grid]
backbone = ["small_resnet"]
batch_size = [16, 32]
projection_dim = [16, 32]
data_fraction = [1.0, 0.5]

[stages.params]
epochs = 3
image_size = 32
optimizer = "lars"
temperature = 0.5
lr_sqrt = false
lr_base = 0.3
weight_decay = 1e-6
warmup_epochs = 1.0
checkpoint_every = 1
augment_strength = 0.5
crop_min_scale = 0.08

[[selections]]
name = "winners"
from = "pretext"
per = ["backbone"]
prefer = [{ max = "batch_size" }, { min = "loss" }]
top = 1

[[stages]]
name = "linear"
kind = "linear"
from = "winners"
dataset = "A"

[stages.params]
batch_size = 16
lr = 0.2
max_epochs = 2
patience = 2

[[stages]]
name = "finetune"
kind = "finetune"
from = "winners"
dataset = "B"

[stages.params]
batch_size = 16
lr = 1e-3
max_epochs = 3
patience = 2
"#;

/// One bad file: `old` (a unique piece of [`GOOD`]) becomes `new`; the error must
/// name `field` and point at the first occurrence of `at` in the bad file, or, where
/// `at` is a `key = value` piece, at its value (where TOML keeps the position).
struct Case {
    old: &'static str,
    new: &'static str,
    at: &'static str,
    field: &'static str,
    words: &'static str,
    extra: &'static [&'static str],
}

const fn case(
    old: &'static str,
    new: &'static str,
    at: &'static str,
    field: &'static str,
    words: &'static str,
) -> Case {
    Case {
        old,
        new,
        at,
        field,
        words,
        extra: &[],
    }
}

const P: &str = "stages[0].params.";

fn cases() -> Vec<Case> {
    let fixed =
        |key: &'static str| -> &'static str { Box::leak(format!("{P}{key}").into_boxed_str()) };
    vec![
        case(
            "epochs = 3",
            "epoch = 3",
            "epoch = 3",
            fixed("epoch"),
            "did you mean `epochs`",
        ),
        case(
            "epochs = 3",
            "epochs = 0",
            "epochs = 0",
            fixed("epochs"),
            "at least 1",
        ),
        case(
            "epochs = 3",
            "epochs = 2.5",
            "epochs = 2.5",
            fixed("epochs"),
            "integer",
        ),
        case(
            "epochs = 3",
            "epochs = \"3\"",
            "epochs = \"3\"",
            fixed("epochs"),
            "integer",
        ),
        case(
            "temperature = 0.5",
            "temperature = 0.0",
            "temperature = 0.0",
            fixed("temperature"),
            "positive",
        ),
        case(
            "temperature = 0.5",
            "temperature = -1.0",
            "temperature = -1.0",
            fixed("temperature"),
            "positive",
        ),
        case(
            "temperature = 0.5",
            "temprature = 0.5",
            "temprature = 0.5",
            fixed("temprature"),
            "did you mean `temperature`",
        ),
        case(
            "optimizer = \"lars\"",
            "optimizer = \"adamw\"",
            "optimizer = ",
            fixed("optimizer"),
            "adamw",
        ),
        case(
            "optimizer = \"lars\"",
            "optimizer = 3",
            "optimizer = 3",
            fixed("optimizer"),
            "invalid type",
        ),
        case(
            "lr_base = 0.3",
            "lr_base = -0.5",
            "lr_base = -0.5",
            fixed("lr_base"),
            "positive",
        ),
        case(
            "lr_base = 0.3",
            "lr = -0.5",
            "lr = -0.5",
            fixed("lr"),
            "not a parameter",
        ),
        case(
            "weight_decay = 1e-6",
            "weight_decay = -1e-6",
            "weight_decay = -",
            fixed("weight_decay"),
            "negative",
        ),
        case(
            "warmup_epochs = 1.0",
            "warmup_epochs = -2.0",
            "warmup_epochs = -",
            fixed("warmup_epochs"),
            "negative",
        ),
        case(
            "checkpoint_every = 1",
            "checkpoint_every = 0",
            "checkpoint_every = 0",
            fixed("checkpoint_every"),
            "at least 1",
        ),
        case(
            "augment_strength = 0.5",
            "augment_strength = 3.0",
            "augment_strength = 3",
            fixed("augment_strength"),
            "[0, 2]",
        ),
        case(
            "crop_min_scale = 0.08",
            "crop_min_scale = 0.0",
            "crop_min_scale = 0",
            fixed("crop_min_scale"),
            "(0, 1]",
        ),
        case(
            "crop_min_scale = 0.08",
            "crop_min_scale = 1.5",
            "crop_min_scale = 1",
            fixed("crop_min_scale"),
            "(0, 1]",
        ),
        case(
            "lr_sqrt = false",
            "lr_sqrt = \"no\"",
            "lr_sqrt = ",
            fixed("lr_sqrt"),
            "true or false",
        ),
        case(
            "image_size = 32",
            "image_size = 0",
            "image_size = 0",
            fixed("image_size"),
            "below",
        ),
        case(
            "image_size = 32",
            "image_size = 16.5",
            "image_size = 16",
            fixed("image_size"),
            "integer",
        ),
        case(
            "seeds = [0]\nmax_attempts = 2",
            "seeds = [0]\nmax_attempts = 2\nepochs = 3",
            "epochs",
            "sweep.epochs",
            "unknown field",
        ),
        case(
            "checkpoint_every = 1",
            "checkpoint_every = 1\nseed = 4",
            "seed = 4",
            fixed("seed"),
            "seeds",
        ),
        case(
            "checkpoint_every = 1",
            "checkpoint_every = 1\nbatch_size = 8",
            "batch_size = 8",
            fixed("batch_size"),
            "also a grid axis",
        ),
        // Grid axes: the error points at the value (or the axis) that fails.
        case(
            "projection_dim = [16, 32]",
            "projection_dim = [16, 0]",
            "0]\ndata_fraction",
            "stages[0].grid.projection_dim",
            "at least 1",
        ),
        case(
            "batch_size = [16, 32]",
            "batch_sise = [16, 32]",
            "16, 32]",
            "stages[0].grid.batch_sise",
            "did you mean `batch_size`",
        ),
        case(
            "batch_size = [16, 32]",
            "batch_size = [16, 1]",
            "1]",
            "stages[0].grid.batch_size",
            "at least 2",
        ),
        case(
            "batch_size = [16, 32]",
            "batch_size = [16, 0.5]",
            "0.5]",
            "stages[0].grid.batch_size",
            "integer",
        ),
        case(
            "batch_size = [16, 32]",
            "batch_size = [16, 16]",
            "16]",
            "stages[0].grid.batch_size",
            "listed twice",
        ),
        case(
            "batch_size = [16, 32]",
            "batch_size = []",
            "[]",
            "stages[0].grid.batch_size",
            "no values",
        ),
        case(
            "backbone = [\"small_resnet\"]",
            "backbone = [\"small_resnet\", \"resnet9000\"]",
            "\"resnet9000\"",
            "stages[0].grid.backbone",
            "not a backbone",
        ),
        case(
            "backbone = [\"small_resnet\"]",
            "backbone = [\"inception_v3\"]",
            "32\noptimizer",
            fixed("image_size"),
            "75 px",
        ),
        case(
            "data_fraction = [1.0, 0.5]",
            "data_fraction = [1.0, 1.5]",
            "1.5]",
            "stages[0].grid.data_fraction",
            "(0, 1]",
        ),
        case(
            "data_fraction = [1.0, 0.5]",
            "data_fraction = [1.0, \"half\"]",
            "\"half\"",
            "stages[0].grid.data_fraction",
            "invalid type",
        ),
        // Downstream stages: their own settings only.
        case(
            "lr = 0.2",
            "lr = -0.2",
            "lr = -0.2",
            "stages[1].params.lr",
            "positive",
        ),
        case(
            "max_epochs = 2",
            "max_epochs = 0",
            "max_epochs = 0",
            "stages[1].params.max_epochs",
            "at least 1",
        ),
        case(
            "patience = 2\n\n[[stages]]",
            "patiense = 2\n\n[[stages]]",
            "patiense = 2",
            "stages[1].params.patiense",
            "did you mean `patience`",
        ),
        case(
            "batch_size = 16\nlr = 0.2",
            "batch_size = 1\nlr = 0.2",
            "batch_size = 1",
            "stages[1].params.batch_size",
            "at least 2",
        ),
        case(
            "lr = 0.2",
            "lr = 0.2\nbackbone = \"resnet50\"",
            "backbone = \"resnet50\"",
            "stages[1].params.backbone",
            "comes from the winner",
        ),
        case(
            "lr = 0.2",
            "lr = 0.2\ntemperature = 0.5",
            "temperature = 0.5\nmax_epochs",
            "stages[1].params.temperature",
            "not a parameter",
        ),
        case(
            "lr = 1e-3",
            "lr = 0",
            "lr = 0\n",
            "stages[2].params.lr",
            "positive",
        ),
        case(
            "max_epochs = 3",
            "max_epochs = \"3\"",
            "max_epochs = \"3\"",
            "stages[2].params.max_epochs",
            "integer",
        ),
        // The file's structure and its data.
        case(
            "kind = \"pretext\"",
            "kind = \"pretxt\"",
            "\"pretxt\"",
            "stages[0].kind",
            "unknown stage kind",
        ),
        case(
            "folder = \"setA\"",
            "folder = \"nowhere\"",
            "\"nowhere\"",
            "datasets.A.folder",
            "not a folder",
        ),
        case(
            "test_folder = \"setB-test\"",
            "test_folder = \"gone\"",
            "\"gone\"",
            "datasets.B.test_folder",
            "not a folder",
        ),
        case(
            "split = [0.6, 0.2, 0.2]",
            "split = [0.6, 0.2, 0.3]",
            "[0.6",
            "datasets.A.split",
            "sum",
        ),
        case(
            "from = \"winners\"\ndataset = \"A\"",
            "from = \"winner\"\ndataset = \"A\"",
            "\"winner\"",
            "stages[1].from",
            "no selection",
        ),
        case(
            "dataset = \"A\"\n\n[stages.grid]",
            "dataset = \"A9\"\n\n[stages.grid]",
            "\"A9\"",
            "stages[0].dataset",
            "no dataset",
        ),
        case(
            "max_attempts = 2",
            "max_attempts = 0",
            "max_attempts = 0",
            "sweep.max_attempts",
            "",
        ),
        Case {
            extra: &["--max-cells", "4"],
            ..case(
                "[stages.grid]\nbackbone",
                "[stages.grid]\nbackbone",
                "[stages.grid]",
                "stages[0].grid",
                "8 cells",
            )
        },
    ]
}

/// Every row a submit could have touched, as text.
fn dump(db: &TestDb) -> String {
    let mut out = String::new();
    for sql in [
        "SELECT name, spec_text, spec_hash FROM sweeps ORDER BY name",
        "SELECT id, stage, key, state, params FROM jobs ORDER BY key",
    ] {
        let output = db.sweeper(&["query", sql, "--format", "json"]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        out.push_str(&String::from_utf8_lossy(&output.stdout));
    }
    out
}

fn make_data(db: &TestDb) {
    for folder in ["setA", "setB", "setB-test"] {
        std::fs::create_dir_all(db.path("data").join(folder)).expect("a data folder");
    }
}

fn submit(db: &TestDb, text: &str, extra: &[&str]) -> std::process::Output {
    std::fs::write(db.path("typed.toml"), text).expect("the sweep file");
    let mut args = vec!["submit", "typed.toml"];
    args.extend_from_slice(extra);
    db.sweeper(&args)
}

/// `line:column` of the first `needle` in `text` (of its value, for `key = value`),
/// counting from 1 in characters.
fn position(text: &str, needle: &str) -> String {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} is not in the file"));
    let offset = offset + needle.find(" = ").map_or(0, |at| at + 3);
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    format!("{line}:{column}")
}

async fn a_bad_parameter_is_refused_at_its_span_and_nothing_changes(db: &TestDb) {
    make_data(db);
    let accepted = submit(db, GOOD, &[]);
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    let before = dump(db);
    assert!(before.contains("pretext"), "{before}");

    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for case in &cases {
        assert!(
            GOOD.contains(case.old),
            "{:?} is not in the good file",
            case.old
        );
        let bad = GOOD.replacen(case.old, case.new, 1);
        let output = submit(db, &bad, case.extra);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let expected = format!("typed.toml:{}: {}:", position(&bad, case.at), case.field);
        if output.status.code() != Some(2)
            || !stderr.contains(&expected)
            || !stderr.contains(case.words)
            || stderr.lines().count() != 1
        {
            wrong.push(format!(
                "{:?}: exit {:?}, expected {expected:?} and {:?} in one line:\n{stderr}",
                case.new,
                output.status.code(),
                case.words
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    assert_eq!(dump(db), before, "a refused file changed the store");

    // The data check can be skipped for data that lives only on the workers.
    let elsewhere = GOOD.replace("folder = \"setA\"", "folder = \"only-on-workers\"");
    let output = submit(
        db,
        &elsewhere.replace("name = \"typed\"", "name = \"remote\""),
        &["--no-data-check"],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The good file again: accepted, nothing added.
    let again = submit(db, GOOD, &[]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 jobs added"));
}

/// Every parameter the README documents, set to a value other than its default,
/// comes back from the store as the trainer's configuration with that value.
async fn every_documented_parameter_reaches_the_trainer(db: &TestDb) {
    make_data(db);
    let text = GOOD
        .replace("optimizer = \"lars\"", "optimizer = \"adam\"")
        .replace("lr_sqrt = false", "lr_sqrt = true")
        .replace("lr_base = 0.3", "lr_base = 0.05")
        .replace("weight_decay = 1e-6", "weight_decay = 1e-4")
        .replace("temperature = 0.5", "temperature = 0.2")
        .replace("augment_strength = 0.5", "augment_strength = 0.7")
        .replace("crop_min_scale = 0.08", "crop_min_scale = 0.3")
        .replace("checkpoint_every = 1", "checkpoint_every = 2")
        .replace("seeds = [0]", "seeds = [7]");
    let output = submit(db, &text, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let store = db.store().await;
    let jobs = store
        .jobs(&JobFilter::default(), None)
        .await
        .expect("the jobs");
    assert_eq!(jobs.len(), 10);
    // Beside the 8 cells, one random-init baseline per downstream stage, whose typed
    // parameters say so and carry the pretext grid's architecture.
    let (baselines, jobs): (Vec<_>, Vec<_>) = jobs
        .into_iter()
        .partition(|job| job.kind != StageKind::Pretext);
    assert_eq!(baselines.len(), 2);
    for job in &baselines {
        let typed = sweeper::sweep::params::DownstreamParams::from_params(&job.params)
            .expect("a baseline's params parse");
        assert!(typed.baseline, "{:?}", job.params);
        assert_eq!(
            (typed.backbone.as_str(), typed.image_size, typed.seed),
            ("small_resnet", Some(32), 7)
        );
        assert!(job.parent_job_id.is_none());
    }
    let mut seen = std::collections::BTreeSet::new();
    for job in &jobs {
        assert_eq!(job.kind, StageKind::Pretext);
        let typed = PretextParams::from_params(&job.params).expect("stored params parse");
        let cfg = PretextConfig::from_typed(&typed).expect("a configuration");
        assert_eq!(cfg.arch.name, "small_resnet");
        assert_eq!((cfg.epochs, cfg.image_size, cfg.seed), (3, 32, 7));
        assert_eq!(cfg.optimizer, OptimizerKind::Adam);
        assert_eq!(cfg.lr_scaling, LrScaling::Sqrt { base: 0.05 });
        assert_eq!((cfg.weight_decay, cfg.temperature), (1e-4, 0.2));
        // Warmup is clipped to a tenth of the run.
        assert!(
            (cfg.warmup_epochs - 0.3).abs() < 1e-12,
            "{}",
            cfg.warmup_epochs
        );
        assert_eq!(cfg.augment_strength, Some(0.7));
        assert_eq!((cfg.crop_min_scale, cfg.checkpoint_every), (0.3, 2));
        seen.insert((
            cfg.batch_size,
            cfg.projection_dim,
            (cfg.data_fraction * 10.0) as i64,
        ));
    }
    assert_eq!(seen.len(), 8, "every grid cell once: {seen:?}");

    // A downstream job's parameters are its winner's overlaid by the stage's own.
    let mut winner = jobs[0].params.clone();
    winner.extend(common::params(
        json!({"batch_size": 16, "lr": 0.2, "max_epochs": 2, "patience": 2}),
    ));
    let linear = DownstreamConfig::from_params(&winner, "linear", true).expect("valid");
    assert_eq!(
        (
            linear.batch_size,
            linear.lr,
            linear.max_epochs,
            linear.patience,
            linear.image_size
        ),
        (16, 0.2, 2, 2, 32)
    );
    winner.remove("lr");
    winner.remove("max_epochs");
    winner.remove("patience");
    let fine = DownstreamConfig::from_params(&winner, "finetune", false).expect("valid");
    assert_eq!((fine.lr, fine.max_epochs, fine.patience), (1e-4, 30, 5));
}

fn query(db: &TestDb, sql: &str) -> String {
    let output = db.sweeper(&["query", sql, "--format", "csv"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Extending a grid adds cells under a new version; an edit that changes stored
/// cells is refused with what it changes; `--new-version` records it, and every job
/// keeps the version it came from.
async fn a_changed_file_is_refused_unless_it_is_a_new_version(db: &TestDb) {
    make_data(db);
    for folder in ["setA", "setB", "setB-test"] {
        std::fs::create_dir_all(db.path("other").join(folder)).expect("another data root");
    }
    let first = submit(db, GOOD, &[]);
    assert!(first.status.success());
    assert!(
        // 8 pretext cells and a random-init baseline for each downstream stage.
        String::from_utf8_lossy(&first.stdout).contains("(version 1): 10 jobs added"),
        "{}",
        String::from_utf8_lossy(&first.stdout)
    );
    let before = dump(db);

    let edits: [(&str, &str, &[&str], &str); 6] = [
        (
            "epochs = 3",
            "epochs = 5",
            &[],
            "stages.pretext.params.epochs: 3 → 5",
        ),
        (
            "split = [0.6, 0.2, 0.2]",
            "split = [0.5, 0.25, 0.25]",
            &[],
            "datasets.A.split",
        ),
        (
            "batch_size = [16, 32]",
            "batch_size = [16]",
            &[],
            "stages.pretext.grid.batch_size: [16, 32] → [16] (removes 32)",
        ),
        (
            "seeds = [0]",
            "seeds = [1]",
            &[],
            "sweep.seeds: [0] → [1] (removes 0)",
        ),
        ("top = 1", "top = 2", &[], "selections.winners.top: 1 → 2"),
        (
            "epochs = 3",
            "epochs = 3",
            &["--data-root", "other"],
            "data_root: ",
        ),
    ];
    for (old, new, extra, diff) in edits {
        let output = submit(db, &GOOD.replace(old, new), extra);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{new}: {stderr}");
        assert!(stderr.contains(diff), "{new}: {diff:?} in {stderr}");
        assert!(stderr.contains("--new-version"), "{stderr}");
    }
    assert_eq!(dump(db), before, "a refused resubmission changed the store");

    // An extension: two more batch sizes' cells, under version 2.
    let wider = GOOD.replace("batch_size = [16, 32]", "batch_size = [16, 32, 64]");
    let extended = submit(db, &wider, &[]);
    let stdout = String::from_utf8_lossy(&extended.stdout);
    assert!(
        stdout.contains("(version 2): 4 jobs added, 10 already stored"),
        "{stdout}"
    );

    // A real change, asked for: every pretext cell is new under version 3, and so is
    // the fine-tune baseline (the edit also turns its `max_epochs = 3` into 5); the
    // linear baseline, which neither touches, is kept.
    let changed = wider.replace("epochs = 3", "epochs = 5");
    let output = submit(db, &changed, &["--new-version"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("(version 3): 13 jobs added, 1 already"),
        "{stdout}"
    );

    assert_eq!(
        query(db, "SELECT spec_version, COUNT(*) AS n FROM jobs GROUP BY spec_version ORDER BY spec_version"),
        "spec_version,n\n1,10\n2,4\n3,13\n"
    );
    let versions = query(
        db,
        "SELECT version, changes FROM sweep_versions ORDER BY version",
    );
    assert_eq!(versions.lines().count(), 4, "{versions}");
    assert!(
        versions.lines().nth(2).is_some_and(|l| l.contains("[]")),
        "{versions}"
    );
    assert!(
        versions.contains("stages.pretext.params.epochs"),
        "{versions}"
    );
    // Submitting the newest file again changes nothing.
    let again = submit(db, &changed, &[]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("(version 3): 0 jobs added"));
}
