//! Provenance: a trained job's attempt records the code, libtorch, device, host and
//! dataset fingerprint; an imported row records its file; the report summarises them
//! and flags a table that mixes code versions.

use std::time::Duration;

use crate::common::{wait_all, TestDb};
use sweeper::provenance::Provenance;
use sweeper::store::{JobFilter, JobState};
use sweeper::train::synth::{self, SynthConfig};

backend_tests!(trained_and_imported_rows_say_what_produced_them);

const SWEEP: &str = r#"
[sweep]
name = "prov"
data_root = "data"
seeds = [0]

[datasets.A]
folder = "setA"
include_labels = ["ASC_H", "ASC_US"]

[[stages]]
name = "pretext"
kind = "pretext"
dataset = "A"

[stages.grid]
batch_size = [8, 16]

[stages.params]
backbone = "small_resnet"
image_size = 32
epochs = 1
projection_dim = 8
checkpoint_every = 1

[[stages]]
name = "elsewhere"
kind = "command"
command = ["true"]

[stages.grid]
x = [1, 2]
"#;

async fn trained_and_imported_rows_say_what_produced_them(db: &TestDb) {
    synth::generate(
        &db.path("data"),
        &SynthConfig {
            image_size: 32,
            main_per_label: 10,
            other_labels: 0,
            rare_labels: 0,
            train_per_label: 0,
            test_per_label: 0,
            threads: 1,
            ..SynthConfig::default()
        },
    )
    .expect("the dataset");
    std::fs::write(db.path("prov.toml"), SWEEP).expect("the sweep file");
    // One of the command cells comes from elsewhere, before anything is queued.
    std::fs::write(db.path("rows.csv"), "x,loss\n1,0.25\n").expect("the rows");
    let imported = db.sweeper(&[
        "import",
        "rows.csv",
        "--sweep",
        "prov",
        "--stage",
        "elsewhere",
        "--sweep-file",
        "prov.toml",
    ]);
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let submitted = db.sweeper(&["submit", "prov.toml"]);
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );

    let mut worker = vec![db.spawn_worker(0, &["--exit-when-idle"])];
    let statuses = wait_all(&mut worker, Duration::from_secs(600));
    assert!(statuses[0].success(), "{}", db.worker_logs());
    // Each training job's epoch is one line of the log, with its loss and speed.
    let logs = db.worker_logs();
    let epoch_lines: Vec<&str> = logs
        .lines()
        .filter(|line| line.contains("epoch 1/1: loss ") && line.contains(" images/s, eta 0 s"))
        .collect();
    assert_eq!(epoch_lines.len(), 2, "{logs}");
    assert!(
        epoch_lines
            .iter()
            .all(|line| line.contains("kind=\"pretext\"") || line.contains("kind=pretext")),
        "{logs}"
    );

    let store = db.store().await;
    let jobs = store.jobs(&JobFilter::default(), None).await.expect("jobs");
    assert!(
        jobs.iter().all(|j| j.state == JobState::Succeeded),
        "{jobs:#?}\n{}",
        db.worker_logs()
    );
    let rows = store.provenance("prov").await.expect("provenance");
    assert_eq!(rows.len(), 4, "{rows:#?}");

    let of_stage = |stage: &str| -> Vec<Provenance> {
        rows.iter()
            .filter(|r| r.stage == stage)
            .map(|r| r.provenance.clone().expect("recorded"))
            .collect()
    };
    let trained = of_stage("pretext");
    assert_eq!(trained.len(), 2);
    for p in &trained {
        assert_eq!(p.sweeper_version, env!("CARGO_PKG_VERSION"));
        assert!(
            p.libtorch
                .as_deref()
                .is_some_and(|v| v.starts_with("2.11.0")),
            "{p:?}"
        );
        assert_eq!(p.device, "cpu");
        assert!(!p.device_name.is_empty() && !p.host.is_empty(), "{p:?}");
        let data = p.dataset.as_ref().expect("a dataset fingerprint");
        // Two labels of ten images each, every file of the selection.
        assert_eq!((data.files, data.sampled), (20, 20), "{data:?}");
        assert_eq!(data.list_sha256.len(), 64);
        assert!(p.imported_from.is_none());
    }
    assert_eq!(
        trained[0].dataset, trained[1].dataset,
        "one dataset, one fingerprint"
    );
    let commands = of_stage("elsewhere");
    let imported: Vec<&Provenance> = commands
        .iter()
        .filter(|p| p.imported_from.is_some())
        .collect();
    assert_eq!(imported.len(), 1, "{commands:?}");
    assert!(imported[0]
        .imported_from
        .as_deref()
        .is_some_and(|f| f.ends_with("rows.csv")));

    let report = |db: &TestDb| -> String {
        let output = db.sweeper(&["report", "prov"]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let clean = report(db);
    assert!(clean.contains("## Provenance"), "{clean}");
    assert!(clean.contains("(1 imported)"), "{clean}");
    assert!(!clean.contains("**Mixed:**"), "{clean}");

    // One result from other code: the table now mixes two code versions.
    let first = rows
        .iter()
        .find(|r| r.stage == "pretext")
        .expect("a pretext row");
    let job = store.job(first.job).await.expect("read").expect("the job");
    let mut other = trained[0].clone();
    other.commit = Some("0123456789ab".into());
    store
        .record_provenance(job.id, job.attempt, &other)
        .await
        .expect("recorded");
    let mixed = report(db);
    assert!(
        mixed.contains("**Mixed:** stage `pretext` mixes 2 code versions"),
        "{mixed}"
    );
}
