//! Input the command line must refuse, cleanly: duration flags out of range (exit 2,
//! never a panic), a sweep file with no stages (its file:line:col), an import whose
//! CSV is bad (nothing stored, not even the sweep), and a pretext split too small to
//! train on (the dataset and its folder named).

use crate::common::TestDb;

backend_tests!(a_bad_import_stores_nothing);

fn text(output: &std::process::Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn duration_flags_out_of_range_exit_2() {
    let db = TestDb::sqlite().await;
    let flags = [
        "--lease-secs",
        "--heartbeat-secs",
        "--poll-secs",
        "--shutdown-grace-secs",
        "--retry-backoff-secs",
    ];
    for flag in flags {
        for value in ["1e300", "1e20", "inf", "NaN", "-1", "0", "soon"] {
            let output = db.sweeper(&["worker", "--device", "cpu", &format!("{flag}={value}")]);
            assert_eq!(
                output.status.code(),
                Some(2),
                "{flag} {value}: {}",
                text(&output)
            );
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
            assert!(!stderr.contains("panicked"), "{flag} {value}: {stderr}");
        }
    }
    let output = db
        .command(&["worker", "--device", "cpu"])
        .env("SWEEPER_LEASE_SECS", "1e300")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    for value in ["1e300", "-1e300", "inf"] {
        let output = db.sweeper(&["worker", "--device", "cpu", "--clock-skew-secs", value]);
        assert_eq!(output.status.code(), Some(2), "{value}: {}", text(&output));
    }
    // Nothing got as far as the store.
    assert!(!db.path("sweeper.db").exists());
}

#[tokio::test]
async fn a_sweep_with_no_stages_is_refused_with_its_location() {
    let db = TestDb::sqlite().await;
    std::fs::write(
        db.path("empty.toml"),
        "# no stages below\n[sweep]\nname = \"nothing\"\ndata_root = \"data\"\n",
    )
    .unwrap();
    for args in [
        vec!["submit", "empty.toml"],
        vec!["submit", "empty.toml", "--dry-run"],
    ] {
        let output = db.sweeper(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", text(&output));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("empty.toml:2:1"), "{stderr}");
        assert!(stderr.contains("stages"), "{stderr}");
    }
    assert!(!db.path("sweeper.db").exists());
}

const IMPORT_SWEEP: &str = r#"[sweep]
name = "old"
data_root = "data"

[[stages]]
name = "run"
kind = "command"
command = ["true"]

[stages.grid]
batch_size = [8, 16]
"#;

async fn a_bad_import_stores_nothing(db: &TestDb) {
    std::fs::write(db.path("old.toml"), IMPORT_SWEEP).unwrap();
    std::fs::write(db.path("bad.csv"), "batch_size,loss\n8,1.5\n999,2.0\n").unwrap();
    std::fs::write(db.path("good.csv"), "batch_size,loss\n8,1.5\n").unwrap();
    let import = |csv: &str| {
        db.sweeper(&[
            "import",
            csv,
            "--sweep",
            "old",
            "--stage",
            "run",
            "--sweep-file",
            "old.toml",
        ])
    };
    let refused = import("bad.csv");
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("nothing imported"));
    let store = db.store().await;
    assert_eq!(
        store.sweeps().await.unwrap(),
        Vec::<String>::new(),
        "the sweep was stored"
    );

    let imported = import("good.csv");
    assert!(imported.status.success(), "{}", text(&imported));
    assert_eq!(store.sweeps().await.unwrap(), ["old"]);
    let jobs = store.jobs_for_report("old").await.unwrap();
    assert_eq!(jobs.len(), 1);
}

#[tokio::test]
async fn an_empty_pretext_split_names_its_dataset_and_folder() {
    let db = TestDb::sqlite().await;
    for label in ["a", "b"] {
        std::fs::create_dir_all(db.path(&format!("data/hollow/{label}"))).unwrap();
        std::fs::write(
            db.path(&format!("data/hollow/{label}/notes.txt")),
            "no image",
        )
        .unwrap();
    }
    std::fs::write(
        db.path("hollow.toml"),
        r#"[sweep]
name = "hollow"
data_root = "data"

[datasets.H]
folder = "hollow"

[[stages]]
name = "pretext"
kind = "pretext"
dataset = "H"

[stages.grid]
backbone = ["small_resnet"]
batch_size = [8]
projection_dim = [16]

[stages.params]
epochs = 1
image_size = 16
"#,
    )
    .unwrap();
    let output = db.sweeper(&["train", "hollow.toml", "--out", "out", "--cache", "cache"]);
    assert!(!output.status.success(), "{}", text(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("dataset \"H\""), "{stderr}");
    assert!(stderr.contains("hollow"), "{stderr}");
    assert!(stderr.contains("has 0 images"), "{stderr}");
}
