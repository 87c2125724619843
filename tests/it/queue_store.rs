//! The queue's rules, through the library, on SQLite and Postgres alike: idempotent
//! submit, exclusive claims, fencing, the reaper, retry with backoff, cancel, exactly-
//! once stage promotion under concurrency, import, and the schema-version refusal.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sweeper::store::{
    Failure, FailureKind, Finish, JobFilter, JobState, Lease, MetricPoint, Store, StoreError, Write,
};
use sweeper::sweep::{Preference, StageKind, StageSpec};

use crate::common::{self, command_stage, params, selection, spec, submit, TestDb};

const LONG: Duration = Duration::from_secs(60);

backend_tests!(
    submit_is_idempotent_and_adds_only_new_cells,
    concurrent_claims_hand_out_each_job_once,
    superseded_attempt_cannot_write,
    expired_leases_requeue_then_fail,
    retryable_failures_back_off_and_retry_grants_fresh_attempts,
    infrastructure_failures_spend_no_attempt_and_never_promote,
    cancel_stops_queued_at_once_and_flags_running,
    promotion_happens_once_per_group_under_concurrency,
    imported_result_is_never_run,
    newer_schema_is_refused,
);

async fn submit_is_idempotent_and_adds_only_new_cells(db: &TestDb) {
    let store = db.store().await;
    let small = spec("grid", vec![command_stage("s", &["true"], 4, 3)], vec![]);
    let first = submit(&store, &small).await;
    assert_eq!((first.added, first.kept), (4, 0));
    let again = submit(&store, &small).await;
    assert_eq!((again.added, again.kept), (0, 4));

    let wider = spec("grid", vec![command_stage("s", &["true"], 6, 3)], vec![]);
    let extended = submit(&store, &wider).await;
    assert_eq!((extended.added, extended.kept), (2, 4));
    assert_eq!(store.jobs_for_report("grid").await.unwrap().len(), 6);
    assert_eq!(store.spec("grid").await.unwrap(), Some(wider));
}

async fn concurrent_claims_hand_out_each_job_once(db: &TestDb) {
    let store = db.store().await;
    submit(
        &store,
        &spec(
            "claims",
            vec![command_stage("s", &["true"], 120, 3)],
            vec![],
        ),
    )
    .await;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        // A pool of its own per task: separate connections, as separate workers have.
        let store = Store::open(&db.url).await.unwrap();
        tasks.spawn(async move {
            let mut claimed = Vec::new();
            while let Some(job) = store.claim(&format!("w{worker}"), LONG).await.unwrap() {
                claimed.push((job.id, job.attempt));
            }
            claimed
        });
    }
    let mut all = Vec::new();
    while let Some(claimed) = tasks.join_next().await {
        all.extend(claimed.unwrap());
    }
    let distinct: HashSet<_> = all.iter().map(|(id, _)| *id).collect();
    assert_eq!(all.len(), 120);
    assert_eq!(distinct.len(), 120);
    assert!(all.iter().all(|(_, attempt)| *attempt == 1));
}

async fn superseded_attempt_cannot_write(db: &TestDb) {
    let store = db.store().await;
    submit(
        &store,
        &spec("fence", vec![command_stage("s", &["true"], 1, 3)], vec![]),
    )
    .await;
    let old = store
        .claim("old", Duration::from_millis(50))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        store.reap().await.unwrap(),
        vec![(old.id, JobState::Queued)]
    );
    let new = store.claim("new", LONG).await.unwrap().unwrap();
    assert_eq!((new.id, new.attempt), (old.id, 2));

    let point = |value| {
        vec![MetricPoint {
            step: 1,
            name: "loss".into(),
            value,
        }]
    };
    assert_eq!(
        store
            .heartbeat(old.id, 1, LONG, Some(5), None)
            .await
            .unwrap(),
        Lease::Lost
    );
    assert_eq!(
        store.record_metrics(old.id, 1, &point(9.0)).await.unwrap(),
        Write::Superseded
    );
    assert_eq!(
        store.set_checkpoint(old.id, 1, "old.ckpt").await.unwrap(),
        Write::Superseded
    );
    assert_eq!(store.release(old.id, 1).await.unwrap(), Write::Superseded);
    let old_result = Finish::Succeeded(json!({"by": "old"}));
    assert_eq!(
        store.finish(old.id, 1, &old_result, LONG).await.unwrap(),
        None
    );

    assert_eq!(
        store
            .heartbeat(new.id, 2, LONG, Some(1), None)
            .await
            .unwrap(),
        Lease::Held { cancel: false }
    );
    assert_eq!(
        store.record_metrics(new.id, 2, &point(1.0)).await.unwrap(),
        Write::Applied
    );
    assert_eq!(
        store.set_checkpoint(new.id, 2, "new.ckpt").await.unwrap(),
        Write::Applied
    );
    let new_result = Finish::Succeeded(json!({"by": "new"}));
    assert_eq!(
        store.finish(new.id, 2, &new_result, LONG).await.unwrap(),
        Some(JobState::Succeeded)
    );
    // Finished: even the current attempt cannot write any more.
    assert_eq!(
        store.record_metrics(new.id, 2, &point(2.0)).await.unwrap(),
        Write::Superseded
    );

    let row = store.job(new.id).await.unwrap().unwrap();
    assert_eq!(row.state, JobState::Succeeded);
    assert_eq!(row.result, Some(json!({"by": "new"})));
    assert_eq!(row.checkpoint.as_deref(), Some("new.ckpt"));
    let metrics = store.metrics(new.id).await.unwrap();
    assert_eq!(metrics.len(), 1);
    assert_eq!((metrics[0].attempt, metrics[0].value), (2, 1.0));
}

async fn expired_leases_requeue_then_fail(db: &TestDb) {
    let store = db.store().await;
    submit(
        &store,
        &spec("reap", vec![command_stage("s", &["true"], 1, 2)], vec![]),
    )
    .await;
    let short = Duration::from_millis(50);
    let first = store.claim("a", short).await.unwrap().unwrap();
    // Not expired yet for a long lease: the reaper leaves a healthy job alone.
    assert!(store.claim("b", LONG).await.unwrap().is_none());
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        store.reap().await.unwrap(),
        vec![(first.id, JobState::Queued)]
    );
    let second = store.claim("b", short).await.unwrap().unwrap();
    assert_eq!(second.attempt, 2);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        store.reap().await.unwrap(),
        vec![(first.id, JobState::Failed)]
    );
    let row = store.job(first.id).await.unwrap().unwrap();
    assert_eq!(row.error_kind, Some(FailureKind::LeaseExpired));
    assert!(row.error_message.unwrap().contains("attempt 2"));
    assert!(store.reap().await.unwrap().is_empty());
}

async fn retryable_failures_back_off_and_retry_grants_fresh_attempts(db: &TestDb) {
    let store = db.store().await;
    submit(
        &store,
        &spec("retry", vec![command_stage("s", &["true"], 1, 2)], vec![]),
    )
    .await;
    let failure = |retryable| {
        Finish::Failed(if retryable {
            Failure::transient(FailureKind::ExitStatus, "boom")
        } else {
            Failure::job(FailureKind::ExitStatus, "boom")
        })
    };
    let job = store.claim("a", LONG).await.unwrap().unwrap();
    let backoff = Duration::from_millis(400);
    assert_eq!(
        store
            .finish(job.id, 1, &failure(true), backoff)
            .await
            .unwrap(),
        Some(JobState::Queued)
    );
    assert!(
        store.claim("a", LONG).await.unwrap().is_none(),
        "claimable during its backoff"
    );
    tokio::time::sleep(backoff + Duration::from_millis(100)).await;
    let job = store.claim("a", LONG).await.unwrap().unwrap();
    assert_eq!(job.attempt, 2);
    // The last attempt: a retryable failure is final now.
    assert_eq!(
        store
            .finish(job.id, 2, &failure(true), backoff)
            .await
            .unwrap(),
        Some(JobState::Failed)
    );

    let by_state = JobFilter {
        state: Some(JobState::Failed),
        ..JobFilter::default()
    };
    assert_eq!(store.retry(&by_state).await.unwrap(), 1);
    let job = store.claim("a", LONG).await.unwrap().unwrap();
    assert_eq!(job.attempt, 3, "attempts only grow: they fence old workers");
    assert_eq!(
        store
            .finish(job.id, 3, &failure(true), Duration::ZERO)
            .await
            .unwrap(),
        Some(JobState::Queued),
        "retry grants max_attempts fresh attempts"
    );
    let job = store.claim("a", LONG).await.unwrap().unwrap();
    assert_eq!(
        store
            .finish(job.id, 4, &failure(false), Duration::ZERO)
            .await
            .unwrap(),
        Some(JobState::Failed)
    );
    let unknown = JobFilter {
        ids: vec![uuid::Uuid::now_v7()],
        ..JobFilter::default()
    };
    assert!(matches!(
        store.retry(&unknown).await,
        Err(StoreError::UnknownJob { .. })
    ));
}

/// A job with one attempt fails three times on broken machines: each time it goes
/// back to the queue with its attempt given back, and its group is never decided.
async fn infrastructure_failures_spend_no_attempt_and_never_promote(db: &TestDb) {
    let store = db.store().await;
    let pre = command_stage("pre", &["true"], 1, 1);
    let mut post = command_stage("post", &["true"], 1, 1);
    post.grid.clear();
    post.from = Some("best".into());
    let best = selection("best", "pre", &[], vec![Preference::Min("loss".into())]);
    let sweep = spec("infra", vec![pre, post], vec![best]);
    submit(&store, &sweep).await;

    let broken = Finish::Failed(Failure::infrastructure(
        FailureKind::Device,
        "CUDA error: an illegal memory access was encountered",
    ));
    for attempt in 1..=3 {
        let job = store.claim("w", LONG).await.unwrap().expect("queued again");
        assert_eq!(job.attempt, attempt);
        assert_eq!(
            store
                .finish(job.id, attempt, &broken, Duration::ZERO)
                .await
                .unwrap(),
            Some(JobState::Queued),
            "attempt {attempt} of a one-attempt job"
        );
        let row = store.job(job.id).await.unwrap().unwrap();
        assert_eq!(row.error_kind, Some(FailureKind::Device));
        assert_eq!(row.attempt - row.free_attempts, 0, "no attempt spent");
        assert!(store.promotions("infra").await.unwrap().is_empty());
    }
    // On a sound machine its one attempt is still there, and its end decides.
    let job = store.claim("w", LONG).await.unwrap().unwrap();
    let done = Finish::Succeeded(json!({"loss": 1.0}));
    assert_eq!(
        store
            .finish(job.id, job.attempt, &done, Duration::ZERO)
            .await
            .unwrap(),
        Some(JobState::Succeeded)
    );
    assert_eq!(store.promotions("infra").await.unwrap().len(), 1);
}

async fn cancel_stops_queued_at_once_and_flags_running(db: &TestDb) {
    let store = db.store().await;
    submit(
        &store,
        &spec("cancel", vec![command_stage("s", &["true"], 2, 3)], vec![]),
    )
    .await;
    let running = store.claim("a", LONG).await.unwrap().unwrap();
    let filter = JobFilter {
        sweep: Some("cancel".into()),
        ..JobFilter::default()
    };
    let summary = store.cancel(&filter).await.unwrap();
    assert_eq!((summary.cancelled, summary.stopping), (1, 1));
    assert!(store.claim("b", LONG).await.unwrap().is_none());
    assert_eq!(
        store
            .heartbeat(running.id, 1, LONG, None, None)
            .await
            .unwrap(),
        Lease::Held { cancel: true }
    );
    // The stopped program exits non-zero; the job still ends cancelled, not retried.
    let killed = Finish::Failed(Failure::transient(FailureKind::Signal, "15"));
    assert_eq!(
        store
            .finish(running.id, 1, &killed, Duration::ZERO)
            .await
            .unwrap(),
        Some(JobState::Cancelled)
    );
    let states: Vec<JobState> = store
        .jobs_for_report("cancel")
        .await
        .unwrap()
        .iter()
        .map(|j| j.state)
        .collect();
    assert_eq!(states, vec![JobState::Cancelled, JobState::Cancelled]);
}

/// Two jobs per group finish at the same moment on different connections, for many
/// groups: every group is promoted exactly once, with its best job as the parent.
async fn promotion_happens_once_per_group_under_concurrency(db: &TestDb) {
    const GROUPS: usize = 10;
    let store = db.store().await;
    let mut pre = command_stage("pre", &["true"], GROUPS, 3);
    pre.grid.push(("b".into(), vec![json!(1), json!(2)]));
    let post = StageSpec {
        name: "post".into(),
        kind: StageKind::Command,
        dataset: None,
        grid: Vec::new(),
        params: params(json!({"post": true})),
        exclude: Vec::new(),
        from: Some("best".into()),
        command: Some(vec!["true".into()]),
        seeds: None,
        priority: 1,
        max_attempts: 3,
        halving: None,
    };
    let best = selection("best", "pre", &["i"], vec![Preference::Min("loss".into())]);
    let sweep = spec("promote", vec![pre, post], vec![best]);
    submit(&store, &sweep).await;

    let mut claimed = Vec::new();
    while let Some(job) = store.claim("w", LONG).await.unwrap() {
        claimed.push(job);
    }
    assert_eq!(claimed.len(), 2 * GROUPS);
    let barrier = Arc::new(tokio::sync::Barrier::new(claimed.len()));
    let mut tasks = tokio::task::JoinSet::new();
    for job in claimed {
        let store = Store::open_with(&db.url, 1).await.unwrap();
        let barrier = Arc::clone(&barrier);
        tasks.spawn(async move {
            let i = job.params["i"].as_f64().unwrap();
            let b = job.params["b"].as_f64().unwrap();
            // b = 2 has the lower loss in every group.
            let result = Finish::Succeeded(json!({"loss": i + 1.0 / b}));
            barrier.wait().await;
            store
                .finish(job.id, job.attempt, &result, LONG)
                .await
                .unwrap()
        });
    }
    while let Some(finished) = tasks.join_next().await {
        assert_eq!(finished.unwrap(), Some(JobState::Succeeded));
    }

    let promotions = store.promotions("promote").await.unwrap();
    assert_eq!(promotions.len(), GROUPS);
    let groups: HashSet<String> = promotions
        .iter()
        .map(|p| p.group["i"].to_string())
        .collect();
    assert_eq!(groups.len(), GROUPS);
    let jobs = store.jobs_for_report("promote").await.unwrap();
    let by_id: HashMap<_, _> = jobs.iter().map(|j| (j.id, j)).collect();
    let downstream: Vec<_> = jobs.iter().filter(|j| j.stage == "post").collect();
    assert_eq!(downstream.len(), GROUPS);
    let mut parents_groups = HashSet::new();
    for job in downstream {
        assert_eq!(job.state, JobState::Queued);
        let parent = by_id[&job.parent_job_id.expect("a parent")];
        assert_eq!(parent.stage, "pre");
        assert_eq!(parent.params["b"], json!(2), "the winner is the lower loss");
        parents_groups.insert(parent.params["i"].to_string());
    }
    assert_eq!(parents_groups.len(), GROUPS);
}

async fn imported_result_is_never_run(db: &TestDb) {
    let store = db.store().await;
    let sweep = spec("import", vec![command_stage("s", &["true"], 2, 3)], vec![]);
    let jobs = common::expand(&sweep);
    let missing = store
        .insert_succeeded(
            "import",
            &jobs[0],
            json!({"loss": 1.0}),
            &Default::default(),
        )
        .await;
    assert!(matches!(missing, Err(StoreError::UnknownSweep { .. })));
    submit(&store, &sweep).await;
    assert!(store
        .insert_succeeded(
            "import",
            &jobs[0],
            json!({"loss": 1.0}),
            &Default::default()
        )
        .await
        .unwrap());
    // Already succeeded: a second import changes nothing.
    assert!(!store
        .insert_succeeded(
            "import",
            &jobs[0],
            json!({"loss": 2.0}),
            &Default::default()
        )
        .await
        .unwrap());
    let again = submit(&store, &sweep).await;
    assert_eq!((again.added, again.kept), (0, 2));
    let claimed = store.claim("w", LONG).await.unwrap().unwrap();
    assert_eq!(claimed.key, jobs[1].key);
    assert!(store.claim("w", LONG).await.unwrap().is_none());
    let rows = store.jobs_for_report("import").await.unwrap();
    let imported = rows.iter().find(|r| r.key == jobs[0].key).unwrap();
    assert_eq!(imported.state, JobState::Succeeded);
    assert_eq!(imported.result, Some(json!({"loss": 1.0})));
}

async fn newer_schema_is_refused(db: &TestDb) {
    let store = db.store().await;
    let known = Store::known_schema_version(store.backend());
    assert_eq!(store.schema_version().await.unwrap(), known);
    store.close().await;
    mark_schema_version(db, 99_999).await;

    match Store::open(&db.url).await {
        Err(StoreError::SchemaTooNew { found, known: k }) => {
            assert_eq!((found, k), (99_999, known))
        }
        Err(other) => panic!("expected SchemaTooNew, got {other}"),
        Ok(_) => panic!("a store with a newer schema opened"),
    }
    let output = db.sweeper(&["status"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("newer than this sweeper binary"),
        "{stderr}"
    );
}

/// Records a migration this binary does not know, as a newer sweeper would.
async fn mark_schema_version(db: &TestDb, version: i64) {
    use sqlx::Connection as _;
    let sql =
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
               VALUES ($1, 'from the future', TRUE, $2, 0)";
    if db.is_postgres() {
        let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query(sql)
            .bind(version)
            .bind(vec![0u8])
            .execute(&mut conn)
            .await
            .unwrap();
    } else {
        let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
        sqlx::query(sql)
            .bind(version)
            .bind(vec![0u8])
            .execute(&mut conn)
            .await
            .unwrap();
    }
}
