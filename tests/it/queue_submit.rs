//! `sweeper submit` end to end: refusals of bad files (exit 2, the line and field named,
//! the store unchanged), idempotent submit and grid extension, `--dry-run`, and a
//! two-stage command sweep promoted by real workers.

use serde_json::Value;
use sweeper::store::JobState;

use crate::common::{self, TestDb};

backend_tests!(
    bad_files_exit_2_name_the_line_and_change_nothing,
    submit_twice_and_extend,
    command_sweep_promotes_its_winners
);

/// A valid command sweep over `batch_size` and `data_fraction`.
fn sweep_text(batch_sizes: &str) -> String {
    format!(
        r#"[sweep]
name = "cli"
data_root = "data"
seeds = [0]

[[stages]]
name = "run"
kind = "command"
command = ["sh", "-c", "exit 0", "{{batch_size}}"]

[stages.grid]
batch_size = {batch_sizes}
data_fraction = [1.0, 0.5]
"#
    )
}

fn run(db: &TestDb, text: &str, extra: &[&str]) -> std::process::Output {
    std::fs::write(db.path("sweep.toml"), text).unwrap();
    let mut args = vec!["submit", "sweep.toml"];
    args.extend_from_slice(extra);
    db.sweeper(&args)
}

fn text(output: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn bad_files_exit_2_name_the_line_and_change_nothing(db: &TestDb) {
    let good = sweep_text("[8, 16]");
    let submitted = run(db, &good, &[]);
    assert!(submitted.status.success(), "{:?}", text(&submitted));
    let store = db.store().await;
    let before = store.jobs_for_report("cli").await.unwrap();

    // (replace this, with this, the line it is on, the field named)
    let cases = [
        ("seeds = [0]", "seeds = [0]\nbogus = 1", 5, "bogus"),
        (
            "batch_size = [8, 16]",
            "batch_size = \"8\"",
            12,
            "batch_size",
        ),
        ("batch_size = [8, 16]", "batch_size = []", 12, "batch_size"),
        (
            "batch_size = [8, 16]",
            "batch_size = [8, 8]",
            12,
            "batch_size",
        ),
        (
            "batch_size = [8, 16]",
            "batch_size = [0, 16]",
            12,
            "batch_size",
        ),
        (
            "data_fraction = [1.0, 0.5]",
            "data_fraction = [1.5, 0.5]",
            13,
            "data_fraction",
        ),
        (
            "data_fraction = [1.0, 0.5]",
            "data_fraction = [0.0]",
            13,
            "data_fraction",
        ),
        ("kind = \"command\"", "kind = \"shell\"", 8, "kind"),
    ];
    for (old, new, line, field) in cases {
        let bad = good.replace(old, new);
        assert_ne!(bad, good);
        let output = run(db, &bad, &[]);
        let (_, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(2), "{new}: {stderr}");
        assert!(
            stderr.contains(&format!("sweep.toml:{line}:")),
            "{new}: line {line} in {stderr}"
        );
        assert!(stderr.contains(field), "{new}: {field} in {stderr}");
    }
    assert_eq!(store.jobs_for_report("cli").await.unwrap(), before);
    assert_eq!(store.sweeps().await.unwrap(), vec!["cli".to_owned()]);

    // A refused file never creates a store either.
    let fresh = db.path("fresh.db");
    std::fs::write(
        db.path("sweep.toml"),
        good.replace("seeds = [0]", "seeds = []"),
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sweeper"))
        .args([
            "submit",
            "sweep.toml",
            "--db",
            &format!("sqlite://{}", fresh.display()),
        ])
        .current_dir(db.dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{:?}", text(&output));
    assert!(!fresh.exists());
}

async fn submit_twice_and_extend(db: &TestDb) {
    let dry = run(db, &sweep_text("[8, 16]"), &["--dry-run"]);
    let (stdout, _) = text(&dry);
    assert!(dry.status.success());
    assert!(stdout.contains("run: 4 jobs"), "{stdout}");
    if !db.is_postgres() {
        assert!(
            !db.path("sweeper.db").exists(),
            "--dry-run created the store"
        );
    }

    let first = run(db, &sweep_text("[8, 16]"), &[]);
    assert_eq!(
        text(&first).0.trim(),
        "sweep cli (version 1): 4 jobs added, 0 already stored and kept"
    );
    let again = run(db, &sweep_text("[8, 16]"), &[]);
    assert_eq!(
        text(&again).0.trim(),
        "sweep cli (version 1): 0 jobs added, 4 already stored and kept"
    );
    let wider = run(db, &sweep_text("[8, 16, 32]"), &[]);
    assert_eq!(
        text(&wider).0.trim(),
        "sweep cli (version 2): 2 jobs added, 4 already stored and kept"
    );
    let store = db.store().await;
    assert_eq!(store.jobs_for_report("cli").await.unwrap().len(), 6);
}

/// Pretext-like command jobs print a loss; the selection keeps the lowest per
/// `data_fraction`, and the downstream stage runs on each winner.
async fn command_sweep_promotes_its_winners(db: &TestDb) {
    let text = r#"[sweep]
name = "chain"
data_root = "data"
seeds = [0]

[[stages]]
name = "train"
kind = "command"
command = ["sh", "-c", "echo \"{{\\\"result\\\": {{\\\"loss\\\": $SWEEPER_PARAM_BATCH_SIZE}}}}\""]

[stages.grid]
batch_size = [8, 16, 32]
data_fraction = [1.0, 0.5]

[[selections]]
name = "best"
from = "train"
per = ["data_fraction"]
prefer = [{ min = "loss" }]
top = 1

[[stages]]
name = "probe"
kind = "command"
from = "best"
command = ["sh", "-c", "test {batch_size} = 8"]
"#;
    let output = run(db, text, &[]);
    assert!(output.status.success(), "{:?}", self::text(&output));
    let mut workers: Vec<_> = (0..2)
        .map(|n| db.spawn_worker(n, &["--exit-when-idle"]))
        .collect();
    let statuses = common::wait_all(&mut workers, std::time::Duration::from_secs(120));
    assert!(statuses.iter().all(|s| s.success()), "{}", db.worker_logs());

    let store = db.store().await;
    let jobs = store.jobs_for_report("chain").await.unwrap();
    assert_eq!(jobs.len(), 8, "{jobs:#?}");
    assert!(
        jobs.iter().all(|j| j.state == JobState::Succeeded),
        "{jobs:#?}"
    );
    let probes: Vec<_> = jobs.iter().filter(|j| j.stage == "probe").collect();
    assert_eq!(probes.len(), 2);
    for probe in probes {
        let parent = jobs
            .iter()
            .find(|j| Some(j.id) == probe.parent_job_id)
            .unwrap();
        assert_eq!(parent.params["batch_size"], Value::from(8));
        assert_eq!(parent.result.as_ref().unwrap()["loss"], Value::from(8));
    }
    assert_eq!(store.promotions("chain").await.unwrap().len(), 2);
}
