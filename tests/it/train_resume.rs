//! A worker dies between a checkpoint and its epochs' metrics: the store refuses the
//! metrics of epochs from the third on (a trigger, so the gap is certain, not a race),
//! the worker records checkpoints past them and is SIGKILLed. The attempt that
//! resumes from the newest checkpoint records the epochs the store lacks from the
//! checkpoint itself, under the attempt that measured them, so the job's loss curve
//! has every epoch once.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection, SqliteConnection};
use sweeper::store::{JobFilter, JobRow, JobState, Store};
use sweeper::train::synth::{self, SynthConfig};

use crate::common::{eventually, wait_all, TestDb};

backend_tests!(a_resumed_job_records_the_epochs_its_checkpoint_kept);

const EPOCHS: i64 = 10;
/// While the first attempt runs, the store refuses metrics from this epoch on.
const HELD_FROM: i64 = 3;

fn sweep_file() -> String {
    format!(
        r#"
[sweep]
name = "rs"
data_root = "data"
seeds = [0]
max_attempts = 3

[datasets.A]
folder = "setA"
include_labels = ["ASC_H", "ASC_US", "HSIL"]
split = [0.6, 0.2, 0.2]

[[stages]]
name = "pretext"
kind = "pretext"
dataset = "A"

[stages.params]
backbone = "small_resnet"
epochs = {EPOCHS}
batch_size = 16
projection_dim = 16
image_size = 32
optimizer = "lars"
temperature = 0.5
checkpoint_every = 1
"#
    )
}

/// Runs `statements` on the test's database, outside the store.
async fn execute(db: &TestDb, statements: &[&str]) {
    if db.is_postgres() {
        let mut conn = PgConnection::connect(&db.url).await.expect("connect");
        for sql in statements {
            conn.execute(*sql).await.expect(sql);
        }
        conn.close().await.ok();
    } else {
        let mut conn = SqliteConnection::connect(&db.url).await.expect("connect");
        for sql in statements {
            conn.execute(*sql).await.expect(sql);
        }
        conn.close().await.ok();
    }
}

async fn hold_metrics(db: &TestDb) {
    if db.is_postgres() {
        let function = format!(
            "CREATE FUNCTION hold_metrics() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF NEW.step >= {HELD_FROM} THEN RAISE EXCEPTION 'metrics held back'; \
             END IF; RETURN NEW; END $$"
        );
        execute(
            db,
            &[
                &function,
                "CREATE TRIGGER hold_metrics BEFORE INSERT ON metrics \
                 FOR EACH ROW EXECUTE FUNCTION hold_metrics()",
            ],
        )
        .await;
    } else {
        let trigger = format!(
            "CREATE TRIGGER hold_metrics BEFORE INSERT ON metrics WHEN NEW.step >= {HELD_FROM} \
             BEGIN SELECT RAISE(ABORT, 'metrics held back'); END"
        );
        execute(db, &[&trigger]).await;
    }
}

async fn release_metrics(db: &TestDb) {
    let drop = if db.is_postgres() {
        "DROP TRIGGER hold_metrics ON metrics"
    } else {
        "DROP TRIGGER hold_metrics"
    };
    execute(db, &[drop]).await;
}

async fn the_job(store: &Store) -> Option<JobRow> {
    store
        .jobs(&JobFilter::default(), None)
        .await
        .expect("jobs")
        .into_iter()
        .next()
}

/// The epoch of a recorded checkpoint key (`…/epoch-0004.ot`).
fn epoch_of(key: &str) -> Option<i64> {
    key.rsplit('/')
        .next()?
        .strip_prefix("epoch-")?
        .strip_suffix(".ot")?
        .parse()
        .ok()
}

async fn a_resumed_job_records_the_epochs_its_checkpoint_kept(db: &TestDb) {
    synth::generate(
        &db.path("data"),
        &SynthConfig {
            image_size: 32,
            main_per_label: 24,
            other_labels: 0,
            rare_labels: 0,
            train_per_label: 0,
            test_per_label: 0,
            threads: 1,
            ..SynthConfig::default()
        },
    )
    .expect("the dataset");
    std::fs::write(db.path("rs.toml"), sweep_file()).expect("the sweep file");
    let submitted = db.sweeper(&["submit", "rs.toml"]);
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let store = db.store().await;
    hold_metrics(db).await;

    // The first attempt runs until it has recorded a checkpoint whose epoch's
    // metrics the store refused, then dies without a word.
    let mut first = db.spawn_worker(0, &["--max-jobs", "1"]);
    let past_the_gap = eventually(Duration::from_secs(300), || async {
        the_job(&store)
            .await
            .and_then(|job| job.checkpoint)
            .and_then(|key| epoch_of(&key))
            .is_some_and(|epoch| epoch >= HELD_FROM)
    })
    .await;
    first.kill().expect("SIGKILL the first worker");
    first.wait().expect("the first worker is gone");
    let logs = db.worker_logs();
    assert!(past_the_gap, "no checkpoint past the gap:\n{logs}");
    let job = the_job(&store).await.expect("the job");
    assert_eq!(
        (job.state, job.attempt),
        (JobState::Running, 1),
        "the first attempt ended before it was killed:\n{logs}"
    );
    let recorded_before = job.checkpoint.as_deref().and_then(epoch_of).unwrap_or(0);
    let stored = store.metrics(job.id).await.expect("metrics");
    assert!(
        stored.iter().all(|m| m.step < HELD_FROM),
        "the store took metrics it should have refused: {stored:?}"
    );
    assert!(
        logs.contains("cannot record metrics"),
        "the refusal did not reach the worker:\n{logs}"
    );

    // The second attempt resumes from the newest checkpoint and fills the gap.
    release_metrics(db).await;
    let mut second = vec![db.spawn_worker(1, &["--max-jobs", "1"])];
    let statuses = wait_all(&mut second, Duration::from_secs(600));
    let logs = db.worker_logs();
    assert!(statuses.iter().all(|s| s.success()), "{statuses:?}\n{logs}");
    let job = store.job(job.id).await.expect("read").expect("the job");
    assert_eq!((job.state, job.attempt), (JobState::Succeeded, 2), "{logs}");
    assert!(logs.contains("resuming pretext from checkpoint"), "{logs}");

    let metrics = store.metrics(job.id).await.expect("metrics");
    let mut losses: BTreeMap<i64, Vec<i32>> = BTreeMap::new();
    for m in metrics.iter().filter(|m| m.name == "loss") {
        losses.entry(m.step).or_default().push(m.attempt);
    }
    assert_eq!(
        losses.keys().copied().collect::<Vec<_>>(),
        (1..=EPOCHS).collect::<Vec<_>>(),
        "the loss curve has a gap: {losses:?}"
    );
    assert!(
        losses.values().all(|attempts| attempts.len() == 1),
        "an epoch's loss is stored twice: {losses:?}"
    );
    // Attempt 1 measured every epoch up to the one the second attempt resumed after,
    // the refused ones included; attempt 2 the rest.
    let resumed_after = losses
        .iter()
        .filter(|(_, attempts)| attempts[0] == 1)
        .map(|(epoch, _)| *epoch)
        .max()
        .expect("the first attempt's epochs");
    assert!(
        resumed_after >= recorded_before,
        "resumed after {resumed_after}, before the recorded checkpoint {recorded_before}"
    );
    assert!(
        losses
            .iter()
            .all(|(epoch, attempts)| attempts[0] == if *epoch <= resumed_after { 1 } else { 2 }),
        "{losses:?}"
    );
    // Every epoch metric, not only the loss.
    for name in ["chance_loss", "images_per_s", "lr"] {
        let epochs: Vec<i64> = metrics
            .iter()
            .filter(|m| m.name == name)
            .map(|m| m.step)
            .collect();
        assert_eq!(epochs, (1..=EPOCHS).collect::<Vec<_>>(), "{name}");
    }
}
