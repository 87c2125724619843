//! Helpers shared by the report tests: fixture paths, jobs built from parameters,
//! and a reader for the pretext tables of a Markdown report.
#![allow(dead_code)]

use std::path::PathBuf;

use serde_json::{json, Map, Value};
use sweeper::report::{JobRecord, JobState, StageInfo};
use sweeper::sweep::{Params, StageKind};
use uuid::Uuid;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

pub fn read_fixture(name: &str) -> String {
    let path = fixture(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn params(pairs: &[(&str, Value)]) -> Params {
    pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.clone()))
        .collect()
}

/// The seed study's pretext stage: four backbones, three fractions, three batch sizes,
/// three projections, 30,000 images.
pub fn seed_pretext_stage() -> StageInfo {
    StageInfo {
        name: "pretext".into(),
        kind: StageKind::Pretext,
        grid: vec![
            (
                "backbone".into(),
                vec![
                    json!("resnet50"),
                    json!("resnet101"),
                    json!("inception_v3"),
                    json!("inception_resnet_v2"),
                ],
            ),
            (
                "data_fraction".into(),
                vec![json!(1.0), json!(0.7), json!(0.4)],
            ),
            ("batch_size".into(), vec![json!(64), json!(128), json!(256)]),
            (
                "projection_dim".into(),
                vec![json!(32), json!(64), json!(128)],
            ),
        ],
        nominal_size: Some(30_000),
        params: params(&[
            ("epochs", json!(100)),
            ("optimizer", json!("lars")),
            ("temperature", json!(0.5)),
        ]),
    }
}

/// A job with a fixed id so that outputs are reproducible.
pub fn job(
    id: u128,
    stage: &str,
    kind: StageKind,
    state: JobState,
    params: Params,
    result: Option<Value>,
) -> JobRecord {
    JobRecord {
        id: Uuid::from_u128(id),
        stage: stage.into(),
        kind,
        state,
        params,
        result,
        error: (state == JobState::Failed).then(|| "loss became NaN at epoch 3".to_string()),
        parent: None,
        attempt: if state == JobState::Queued { 0 } else { 1 },
        // A fixed hour for every job that ran, ended 90.5 s later where it ended.
        started_at: (state != JobState::Queued).then(|| "2026-06-01T10:00:00Z".parse().unwrap()),
        finished_at: matches!(state, JobState::Succeeded | JobState::Failed)
            .then(|| "2026-06-01T10:01:30.500Z".parse().unwrap()),
    }
}

pub fn loss(value: f64) -> Option<Value> {
    Some(json!({ "loss": value }))
}

pub fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// One row of a pretext table as the Markdown shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct TableRow {
    /// The backbone as the heading above the table writes it (`ResNet-50`).
    pub backbone: String,
    pub batch: u64,
    /// The `#### batch …` heading line.
    pub heading: String,
    pub data: String,
    pub projections: String,
    pub optimizer: String,
    /// The cell's `a/b/c` parts as written, bold markers included.
    pub cells: Vec<String>,
}

impl TableRow {
    pub fn numbers(&self) -> Vec<f64> {
        self.cells
            .iter()
            .map(|cell| {
                let text = cell.replace("**", "");
                let first = text.split_whitespace().next().unwrap_or("");
                first.parse().unwrap_or(f64::NAN)
            })
            .collect()
    }

    pub fn bold(&self) -> Vec<bool> {
        self.cells.iter().map(|cell| cell.contains("**")).collect()
    }
}

/// Every pretext table row of a report written by `sweeper::report::markdown`.
pub fn pretext_rows(markdown: &str) -> Vec<TableRow> {
    let mut rows = Vec::new();
    let mut backbone = String::new();
    let mut heading = String::new();
    let mut batch = 0;
    for line in markdown.lines() {
        if let Some(name) = line.strip_prefix("### ") {
            backbone = name.trim().to_string();
        } else if let Some(rest) = line.strip_prefix("#### batch ") {
            heading = line.to_string();
            batch = rest
                .split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        } else if line.starts_with("| ")
            && !heading.is_empty()
            && !line.starts_with("| Backbone")
            && !line.starts_with("| :")
        {
            let fields: Vec<&str> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            if fields.len() != 6 {
                continue;
            }
            rows.push(TableRow {
                backbone: backbone.clone(),
                batch,
                heading: heading.clone(),
                data: fields[1].to_string(),
                projections: fields[3].to_string(),
                optimizer: fields[4].to_string(),
                cells: fields[5]
                    .split('/')
                    .map(|cell| cell.trim().to_string())
                    .collect(),
            });
        } else if line.starts_with("## ") {
            heading.clear();
        }
    }
    rows
}

/// The rows of the Markdown table that follows the heading line starting with
/// `heading`, as lists of cells (header and alignment rows left out).
pub fn table_after(markdown: &str, heading: &str) -> Vec<Vec<String>> {
    let mut lines = markdown
        .lines()
        .skip_while(|line| !line.starts_with(heading))
        .skip(1);
    let mut rows = Vec::new();
    let mut in_table = false;
    for line in lines.by_ref() {
        if line.starts_with('|') {
            in_table = true;
            rows.push(
                line.trim()
                    .trim_matches('|')
                    .split('|')
                    .map(|c| c.trim().to_string())
                    .collect(),
            );
        } else if in_table {
            break;
        }
    }
    rows.into_iter().skip(2).collect()
}

/// A small sweep in every state: two backbones on a 2 × 2 × 2 grid, two seeds on some
/// cells, failed, running, queued, cancelled and missing cells, decisions for both
/// groups, downstream jobs on the winners, and loss curves. Ids are fixed, so the
/// outputs are reproducible.
pub fn demo_input() -> sweeper::report::ReportInput {
    use sweeper::report::{DecisionRecord, ReportInput};

    let pretext = StageInfo {
        name: "pretext".into(),
        kind: StageKind::Pretext,
        grid: vec![
            (
                "backbone".into(),
                vec![json!("small_resnet"), json!("resnet18")],
            ),
            ("data_fraction".into(), vec![json!(1.0), json!(0.5)]),
            ("batch_size".into(), vec![json!(32), json!(64)]),
            ("projection_dim".into(), vec![json!(16), json!(32)]),
        ],
        nominal_size: Some(600),
        params: params(&[("epochs", json!(3)), ("optimizer", json!("lars"))]),
    };
    let downstream = |name: &str, kind, lr: f64| StageInfo {
        name: name.into(),
        kind,
        grid: vec![],
        nominal_size: None,
        params: params(&[("batch_size", json!(64)), ("lr", json!(lr))]),
    };
    let cell = |backbone: &str, fraction: f64, batch: i64, projection: i64, seed: i64| {
        params(&[
            ("backbone", json!(backbone)),
            ("data_fraction", json!(fraction)),
            ("batch_size", json!(batch)),
            ("projection_dim", json!(projection)),
            ("epochs", json!(3)),
            ("optimizer", json!("lars")),
            ("seed", json!(seed)),
        ])
    };
    let done = |loss: f64, images: i64| Some(json!({ "loss": loss, "train_images": images }));
    use JobState::*;
    let pretext_job =
        |id, state, params, result| job(id, "pretext", StageKind::Pretext, state, params, result);
    let mut jobs = vec![
        // small_resnet: everything finished; batch 64 ran two seeds.
        pretext_job(
            1,
            Succeeded,
            cell("small_resnet", 1.0, 32, 16, 0),
            done(3.91, 600),
        ),
        pretext_job(
            2,
            Succeeded,
            cell("small_resnet", 1.0, 32, 32, 0),
            done(3.87, 600),
        ),
        pretext_job(
            3,
            Succeeded,
            cell("small_resnet", 0.5, 32, 16, 0),
            done(4.02, 300),
        ),
        pretext_job(
            4,
            Succeeded,
            cell("small_resnet", 0.5, 32, 32, 0),
            done(4.05, 300),
        ),
        pretext_job(
            5,
            Succeeded,
            cell("small_resnet", 1.0, 64, 16, 0),
            done(4.55, 600),
        ),
        pretext_job(
            6,
            Succeeded,
            cell("small_resnet", 1.0, 64, 16, 1),
            done(4.61, 600),
        ),
        pretext_job(
            7,
            Succeeded,
            cell("small_resnet", 1.0, 64, 32, 0),
            done(4.48, 600),
        ),
        pretext_job(
            8,
            Succeeded,
            cell("small_resnet", 1.0, 64, 32, 1),
            done(4.52, 600),
        ),
        pretext_job(
            9,
            Succeeded,
            cell("small_resnet", 0.5, 64, 16, 0),
            done(4.7, 300),
        ),
        pretext_job(
            10,
            Succeeded,
            cell("small_resnet", 0.5, 64, 16, 1),
            done(4.66, 300),
        ),
        pretext_job(
            11,
            Succeeded,
            cell("small_resnet", 0.5, 64, 32, 0),
            done(4.73, 300),
        ),
        pretext_job(12, Failed, cell("small_resnet", 0.5, 64, 32, 1), None),
        // resnet18: half done; one cell never submitted (1.0, 64, 32).
        pretext_job(13, Succeeded, cell("resnet18", 1.0, 32, 16, 0), loss(3.8)),
        pretext_job(14, Running, cell("resnet18", 1.0, 32, 32, 0), None),
        pretext_job(15, Queued, cell("resnet18", 0.5, 32, 16, 0), None),
        pretext_job(16, Cancelled, cell("resnet18", 0.5, 32, 32, 0), None),
        pretext_job(17, Succeeded, cell("resnet18", 1.0, 64, 16, 0), loss(4.4)),
        pretext_job(18, Succeeded, cell("resnet18", 0.5, 64, 16, 0), loss(4.6)),
        pretext_job(19, Succeeded, cell("resnet18", 0.5, 64, 32, 0), loss(4.6)),
    ];
    let decisions = vec![
        DecisionRecord {
            selection: "winners".into(),
            group: object(json!({ "backbone": "small_resnet" })),
            winners: vec![Uuid::from_u128(7)],
            rule: "max batch_size, then min loss, top 1".into(),
            detail: json!({ "on_failure": "promote" }),
            revision: 1,
            stale: None,
        },
        DecisionRecord {
            selection: "winners".into(),
            group: object(json!({ "backbone": "resnet18" })),
            winners: vec![Uuid::from_u128(17)],
            rule: "max batch_size, then min loss, top 1".into(),
            detail: json!({ "on_failure": "promote" }),
            revision: 1,
            stale: None,
        },
    ];
    // A downstream job carries its winner's architecture, as `expand::downstream`
    // writes it; a baseline the same with `baseline = true` and no parent.
    let downstream_params = |backbone: &str, batch: i64, lr: f64, seed: i64| {
        params(&[
            ("backbone", json!(backbone)),
            ("batch_size", json!(batch)),
            ("lr", json!(lr)),
            ("seed", json!(seed)),
        ])
    };
    let baseline_params = |backbone: &str, lr: f64, seed: i64| {
        let mut p = downstream_params(backbone, 64, lr, seed);
        p.insert("baseline".into(), json!(true));
        p
    };
    let classification = |accuracy: f64, precision: f64, recall: f64, f1: f64| {
        Some(json!({
            "accuracy": accuracy, "precision": precision, "recall": recall, "f1": f1,
            "per_class": [{"label": "A", "precision": precision, "recall": recall, "f1": f1, "support": 12}],
            "confusion": [[10, 2], [3, 9]],
        }))
    };
    let mut downstream_jobs = vec![
        job(
            20,
            "linear",
            StageKind::Linear,
            Succeeded,
            downstream_params("small_resnet", 64, 0.2, 0),
            classification(0.6125, 0.6, 0.59, 0.5949),
        ),
        job(
            21,
            "linear",
            StageKind::Linear,
            Running,
            downstream_params("resnet18", 64, 0.2, 0),
            None,
        ),
        job(
            22,
            "finetune",
            StageKind::Finetune,
            Succeeded,
            downstream_params("small_resnet", 64, 0.001, 0),
            classification(0.7, 0.71, 0.69, 0.7),
        ),
        job(
            23,
            "finetune",
            StageKind::Finetune,
            Succeeded,
            downstream_params("small_resnet", 64, 0.001, 1),
            classification(0.72, 0.7, 0.71, 0.704),
        ),
        job(
            24,
            "finetune",
            StageKind::Finetune,
            Failed,
            downstream_params("resnet18", 64, 0.001, 0),
            None,
        ),
    ];
    for (job, parent) in downstream_jobs.iter_mut().zip([7, 17, 7, 7, 17]) {
        job.parent = Some(Uuid::from_u128(parent));
    }
    jobs.extend(downstream_jobs);
    // Random-init baselines: small_resnet's finished (two seeds for fine-tuning),
    // resnet18's linear one still queued.
    jobs.extend([
        job(
            25,
            "linear",
            StageKind::Linear,
            Succeeded,
            baseline_params("small_resnet", 0.2, 0),
            classification(0.3915, 0.4, 0.39, 0.38),
        ),
        job(
            26,
            "linear",
            StageKind::Linear,
            Queued,
            baseline_params("resnet18", 0.2, 0),
            None,
        ),
        job(
            27,
            "finetune",
            StageKind::Finetune,
            Succeeded,
            baseline_params("small_resnet", 0.001, 0),
            classification(0.6, 0.6, 0.6, 0.59),
        ),
        job(
            28,
            "finetune",
            StageKind::Finetune,
            Succeeded,
            baseline_params("small_resnet", 0.001, 1),
            classification(0.62, 0.61, 0.6, 0.61),
        ),
        job(
            29,
            "finetune",
            StageKind::Finetune,
            Succeeded,
            baseline_params("resnet18", 0.001, 0),
            classification(0.5, 0.5, 0.5, 0.5),
        ),
    ]);
    let curves = (1..=11u128)
        .map(|id| {
            let start = 5.0 + id as f64 * 0.01;
            (
                Uuid::from_u128(id),
                vec![(1, start), (2, start - 0.6), (3, start - 0.9)],
            )
        })
        .chain(std::iter::once((
            Uuid::from_u128(13),
            vec![(1, 4.6), (2, 4.1), (3, 3.8)],
        )))
        .collect();
    ReportInput {
        sweep: "demo".into(),
        stages: vec![
            pretext,
            downstream("linear", StageKind::Linear, 0.2),
            downstream("finetune", StageKind::Finetune, 0.001),
        ],
        jobs,
        decisions,
        curves,
        provenance: Vec::new(),
        histories: Default::default(),
        halving: Vec::new(),
    }
}

/// Compares `actual` with `tests/golden/<name>`; `UPDATE_GOLDEN=1` rewrites the file.
pub fn check_golden(name: &str, actual: &str) {
    let path = golden(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    if expected != actual {
        let first_difference = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the output, first at line {}:\n--- expected\n{}\n--- actual\n{}",
            path.display(),
            first_difference + 1,
            expected.lines().nth(first_difference).unwrap_or("<end>"),
            actual.lines().nth(first_difference).unwrap_or("<end>"),
        );
    }
}
