//! `import` then `report` through the real binary: the seed report's 108 stage-1 losses
//! become succeeded jobs of `sweeps/report.toml`, the report regenerates the seed's
//! tables, and the selection rule picks its winners from those numbers.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_sweeper");

fn sweeper(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("SWEEPER_DB")
        .env_remove("SWEEPER_DATA_ROOT")
        .output()
        .expect("run sweeper")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "sweeper failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn seed_numbers_imported_then_reported_and_selected_by_the_rule() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let csv = root.join("tests/fixtures/seed_stage1.csv");
    let sweep_file = root.join("sweeps/report.toml");
    let db = "sqlite://seed.db";

    let out = stdout(&sweeper(
        dir.path(),
        &[
            "import",
            csv.to_str().unwrap(),
            "--sweep",
            "cytology-simclr",
            "--stage",
            "pretext",
            "--sweep-file",
            sweep_file.to_str().unwrap(),
            // The seed logged google-research/simclr's sum of both halves.
            "--loss-convention",
            "sum",
            "--db",
            db,
        ],
    ));
    assert!(out.contains("108 rows imported"), "{out}");

    let report = stdout(&sweeper(dir.path(), &["report", "--db", db]));
    // Twelve tables: four backbones × three batch sizes.
    assert_eq!(
        report.matches("| Backbone | Total Data |").count(),
        12,
        "{report}"
    );
    // Rows as in the seed, bold from the numbers.
    assert!(report.contains("| ResNet-50 | 21.000 | 64 | 32/64/128 | LARS | 6.13/**5.92**/7.13 |"));
    assert!(report.contains("|  | 30.000 |  | 32/64/128 | LARS | 3.18/**2.84**/2.88 |"));
    // The seed bolds 2.7 in this row, but 2.39 is lower.
    assert!(report.contains("|  | 30.000 |  | 32/64/128 | LARS | **2.39**/2.83/2.7 |"));

    // Largest batch, then lowest loss, applied to the seed's own numbers.
    for model in [
        "ResNet50_projection64",
        "ResNet101_projection128",
        "InceptionV3_projection32",
        "InceptionResNetV2_projection128",
    ] {
        assert!(
            report.contains(&format!("**{model}**")),
            "{model} not selected:\n{report}"
        );
    }

    // The winners' downstream jobs are queued, one per stage and backbone; a second
    // import and a submit add nothing that already ran.
    let status = stdout(&sweeper(dir.path(), &["status", "--db", db]));
    let line = |stage: &str| {
        status
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(stage))
            .unwrap_or_else(|| panic!("no {stage} line in:\n{status}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(line("linear")[2], "4", "{status}");
    assert_eq!(line("finetune")[2], "4", "{status}");
    assert_eq!(line("pretext")[4], "108", "{status}");

    let submit = stdout(&sweeper(
        dir.path(),
        // The results were trained elsewhere: the data need not be here.
        &[
            "submit",
            sweep_file.to_str().unwrap(),
            "--db",
            db,
            "--no-data-check",
        ],
    ));
    // Only the random-init baselines, one per backbone for each downstream stage,
    // were never run: submit adds them and keeps every imported cell.
    assert!(
        submit.contains("8 jobs added, 108 already stored and kept"),
        "{submit}"
    );
}

#[test]
fn import_refuses_a_row_outside_the_grid_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sweep_file = root.join("sweeps/report.toml");
    let csv = dir.path().join("bad.csv");
    std::fs::write(
        &csv,
        "backbone,data_fraction,batch_size,projection_dim,loss\n\
         resnet50,1.0,64,32,4.26\n\
         resnet50,1.0,96,32,4.0\n",
    )
    .unwrap();
    let out = sweeper(
        dir.path(),
        &[
            "import",
            csv.to_str().unwrap(),
            "--sweep",
            "cytology-simclr",
            "--stage",
            "pretext",
            "--sweep-file",
            sweep_file.to_str().unwrap(),
            "--db",
            "sqlite://x.db",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.csv:3"), "{stderr}");
    let jobs = stdout(&sweeper(
        dir.path(),
        &[
            "query",
            "SELECT COUNT(*) AS n FROM jobs",
            "--db",
            "sqlite://x.db",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(jobs.lines().nth(1), Some("0"), "{jobs}");
}
