//! The job store over SQLite (the embedded default) and Postgres (workers on many
//! machines), chosen by URL.
//!
//! One schema, two migration folders (`migrations/sqlite`, `migrations/postgres`),
//! embedded and applied at start. The queue's rules live here so that every process
//! obeys them, whichever command it runs:
//!
//! - a claim is one statement (SQLite: `UPDATE … WHERE id = (SELECT … LIMIT 1)`;
//!   Postgres: `FOR UPDATE SKIP LOCKED` in a CTE) and bumps the job's `attempt`;
//! - a claim holds a lease that the worker renews by heartbeat, on the database's clock;
//! - every write a worker makes names `(job, attempt)` and changes nothing once that
//!   attempt was superseded ([`Write::Superseded`], [`Lease::Lost`]);
//! - any process reaps expired leases ([`Store::reap`]);
//! - finishing a job and promoting its stage's winners happen in one transaction.
//!
//! Multi-statement writes on SQLite start with `BEGIN IMMEDIATE`: a deferred
//! transaction that reads and then writes fails with "database is locked" at once,
//! whatever `busy_timeout` says.
//!
//! Over 700 lines because the row types every reader and writer shares live here;
//! they are the seam to split next (a `rows` module).

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use crate::progress::EpochSummary;
use crate::redact::redact_url;
use crate::sweep::select::Outcome;
use crate::sweep::{Params, StageKind};

pub mod bench;
mod error;
mod failure;
mod halving;
mod id;
mod members;
mod promotion;
pub mod query;
mod queue;
mod read;
pub mod read_only;
pub mod table;

pub use query::query_read_only;

pub use error::{StoreError, StoreResult};
pub use failure::{Blame, Failure, FailureKind, UnknownFailureKind};
pub use halving::{Halted, RungDecision};
pub(crate) use id::Id;
pub use id::IdPrefix;

use error::Context as _;

/// Where the store lives when neither `--db` nor `SWEEPER_DB` says.
pub const DEFAULT_URL: &str = "sqlite://sweeper.db";

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// How long a Postgres call waits for a connection before the store counts as
/// unreachable, and how long opening one may take. Short, so that an outage shows at
/// once; a slow but working server answers well within it.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// SQLite waits this long for another writer before giving up. Writes are short (the
/// longest is a submit of a whole grid), so reaching it means something is wrong.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> StoreResult<Backend> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(StoreError::bad_url(url))
        }
    }

    /// The database's clock.
    pub(crate) fn now(self) -> &'static str {
        match self {
            Backend::Sqlite => "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            Backend::Postgres => "now()",
        }
    }

    /// The database's clock plus `param` (a float number of seconds).
    pub(crate) fn now_plus(self, param: &str) -> String {
        match self {
            Backend::Sqlite => {
                format!("strftime('%Y-%m-%dT%H:%M:%fZ', 'now', {param} || ' seconds')")
            }
            Backend::Postgres => format!("(now() + make_interval(secs => {param}))"),
        }
    }

    /// Seconds from `column` to now, as a float.
    pub(crate) fn seconds_since(self, column: &str) -> String {
        match self {
            Backend::Sqlite => format!("((julianday('now') - julianday({column})) * 86400.0)"),
            Backend::Postgres => format!("(EXTRACT(EPOCH FROM (now() - {column})))::float8"),
        }
    }

    /// Seconds from timestamp column `from` to `to` (NULL where either is).
    pub(crate) fn seconds_between(self, from: &str, to: &str) -> String {
        match self {
            Backend::Sqlite => format!("((julianday({to}) - julianday({from})) * 86400.0)"),
            Backend::Postgres => format!("(EXTRACT(EPOCH FROM ({to} - {from})))::float8"),
        }
    }

    /// Row lock that keeps a fenced check valid until the transaction ends (SQLite's
    /// `BEGIN IMMEDIATE` already holds the only write lock).
    pub(crate) fn lock_row(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }
}

/// A handle on the store; cheap to clone (it holds a connection pool).
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    url: String,
    /// How to connect to Postgres directly, to tell why the pool cannot.
    postgres: Option<PgConnectOptions>,
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// One connection of either backend; the store's statements are methods on it, so
/// that the same logic runs inside a transaction or on its own.
pub(crate) enum Conn<'c> {
    Sqlite(&'c mut SqliteConnection),
    Postgres(&'c mut PgConnection),
}

enum Pooled {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

impl Pooled {
    fn conn(&mut self) -> Conn<'_> {
        match self {
            Pooled::Sqlite(c) => Conn::Sqlite(c),
            Pooled::Postgres(c) => Conn::Postgres(c),
        }
    }
}

/// A write transaction (`BEGIN IMMEDIATE` on SQLite); rolled back when dropped.
pub(crate) enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

impl Tx {
    pub(crate) fn conn(&mut self) -> Conn<'_> {
        match self {
            Tx::Sqlite(tx) => Conn::Sqlite(tx),
            Tx::Postgres(tx) => Conn::Postgres(tx),
        }
    }

    pub(crate) async fn commit(self) -> StoreResult<()> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
        .context("cannot commit a transaction")
    }
}

/// Runs `$body` with `$c` bound to the backend's connection (`&mut SqliteConnection` or
/// `&mut PgConnection`) and `$b` to its [`Backend`]; the body is compiled once per
/// backend, so generic sqlx calls resolve for each.
macro_rules! on_conn {
    ($conn:expr, |$c:ident, $b:ident| $body:expr) => {
        match $conn {
            $crate::store::Conn::Sqlite(conn) => {
                let $c: &mut sqlx::SqliteConnection = &mut **conn;
                let $b = $crate::store::Backend::Sqlite;
                let _ = $b;
                $body
            }
            $crate::store::Conn::Postgres(conn) => {
                let $c: &mut sqlx::PgConnection = &mut **conn;
                let $b = $crate::store::Backend::Postgres;
                let _ = $b;
                $body
            }
        }
    };
}
pub(crate) use on_conn;

impl Store {
    /// Opens the store at `url` (creating a SQLite file when missing) and brings its
    /// schema up to date; refuses a schema newer than this binary.
    pub async fn open(url: &str) -> StoreResult<Store> {
        Store::open_with(url, 8).await
    }

    /// [`Store::open`] with a pool of at most `max_connections`.
    pub async fn open_with(url: &str, max_connections: u32) -> StoreResult<Store> {
        let open_error = |source| StoreError::open(url, &source);
        let mut postgres = None;
        let pool = match Backend::of_url(url)? {
            Backend::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)
                    .map_err(open_error)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // WAL with NORMAL cannot corrupt on a crash; it may lose the last
                    // commits on power loss, which the lease protocol tolerates.
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT)
                    .foreign_keys(true);
                let pool = SqlitePoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(SQLITE_BUSY_TIMEOUT)
                    .connect_with(options)
                    .await
                    .map_err(open_error)?;
                Pool::Sqlite(pool)
            }
            Backend::Postgres => {
                let options = PgConnectOptions::from_str(url).map_err(open_error)?;
                // The pool retries a refused connection until its timeout and then says
                // only "pool timed out": one direct connection first says why, at once.
                probe_postgres(&options)
                    .await
                    .map_err(|reason| StoreError::Open {
                        url: redact_url(url),
                        reason,
                    })?;
                let pool = PgPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .connect_with(options.clone())
                    .await
                    .map_err(open_error)?;
                postgres = Some(options);
                Pool::Postgres(pool)
            }
        };
        let store = Store {
            pool,
            url: url.to_owned(),
            postgres,
        };
        store.migrate().await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// The URL the store was opened with, password included: never print it (use
    /// [`Store::display_url`]).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL with any password masked, for messages and logs.
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The newest schema version this binary knows.
    pub fn known_schema_version(backend: Backend) -> i64 {
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATOR,
            Backend::Postgres => &POSTGRES_MIGRATOR,
        };
        migrator.iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// The newest schema version applied to the database (0 for a new one).
    pub async fn schema_version(&self) -> StoreResult<i64> {
        let mut pooled = self.acquire().await?;
        pooled.conn().schema_version().await
    }

    async fn migrate(&self) -> StoreResult<()> {
        let known = Store::known_schema_version(self.backend());
        // Several workers may start on a new SQLite file at once: one applies the
        // migrations, the others fail on "table exists" and find the schema current.
        let mut tries = 0;
        loop {
            let found = self.schema_version().await?;
            if found > known {
                return Err(StoreError::SchemaTooNew { found, known });
            }
            if found == known {
                return Ok(());
            }
            let applied = match &self.pool {
                Pool::Sqlite(pool) => SQLITE_MIGRATOR.run(pool).await,
                Pool::Postgres(pool) => POSTGRES_MIGRATOR.run(pool).await,
            };
            match applied {
                Ok(()) => return Ok(()),
                Err(source) if tries >= 5 => {
                    return Err(StoreError::Migrate {
                        url: redact_url(&self.url),
                        source,
                    })
                }
                Err(error) => {
                    tracing::debug!(%error, "migration raced another process; checking again");
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100 * tries)).await;
                }
            }
        }
    }

    async fn acquire(&self) -> StoreResult<Pooled> {
        let acquired = match &self.pool {
            Pool::Sqlite(pool) => pool.acquire().await.map(Pooled::Sqlite),
            Pool::Postgres(pool) => pool.acquire().await.map(Pooled::Postgres),
        };
        match acquired {
            Ok(pooled) => Ok(pooled),
            Err(source) => Err(self.pool_error(source, "cannot reach the store").await),
        }
    }

    pub(crate) async fn write_tx(&self) -> StoreResult<Tx> {
        let begun = match &self.pool {
            Pool::Sqlite(pool) => pool.begin_with("BEGIN IMMEDIATE").await.map(Tx::Sqlite),
            Pool::Postgres(pool) => pool.begin().await.map(Tx::Postgres),
        };
        match begun {
            Ok(tx) => Ok(tx),
            Err(source) => Err(self.pool_error(source, "cannot start a transaction").await),
        }
    }

    /// A pool that timed out says nothing of why: on Postgres a direct connection
    /// tells (refused, unknown host, no answer), or that the server answers and every
    /// connection is busy.
    async fn pool_error(&self, source: sqlx::Error, context: &'static str) -> StoreError {
        match (&source, &self.postgres) {
            (sqlx::Error::PoolTimedOut, Some(options)) => match probe_postgres(options).await {
                Err(reason) => StoreError::Unreachable { reason },
                Ok(()) => StoreError::Database {
                    context: "every connection to the store stayed busy",
                    source,
                },
            },
            _ => StoreError::Database { context, source },
        }
    }

    /// Closes the pool, waiting for connections in use.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }
}

/// Connects to Postgres once, directly, within [`CONNECT_TIMEOUT`]: the driver's own
/// reason when it cannot (redacted), such as "Connection refused".
async fn probe_postgres(options: &PgConnectOptions) -> Result<(), String> {
    match tokio::time::timeout(
        CONNECT_TIMEOUT,
        <PgConnection as sqlx::Connection>::connect_with(options),
    )
    .await
    {
        Ok(Ok(conn)) => {
            let _ = sqlx::Connection::close(conn).await;
            Ok(())
        }
        Ok(Err(error)) => Err(redact_url(&error.to_string())),
        Err(_) => Err(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())),
    }
}

impl Conn<'_> {
    async fn schema_version(&mut self) -> StoreResult<i64> {
        on_conn!(self, |c, b| {
            let exists_sql = match b {
                Backend::Sqlite => {
                    "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
                }
                Backend::Postgres => "SELECT to_regclass('_sqlx_migrations') IS NOT NULL",
            };
            let exists: bool = sqlx::query_scalar(exists_sql)
                .fetch_one(&mut *c)
                .await
                .context("cannot read the schema version")?;
            if !exists {
                return Ok(0);
            }
            let version: Option<i64> =
                sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                    .fetch_one(&mut *c)
                    .await
                    .context("cannot read the schema version")?;
            Ok(version.unwrap_or(0))
        })
    }
}

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    /// At a rung of its stage's successive halving, its checkpoint stored, waiting for
    /// the rest of its group; it holds no device.
    Paused,
    Succeeded,
    Failed,
    Cancelled,
    /// Ended at a rung by its stage's successive halving; `resume` sends it on.
    Stopped,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Running,
        JobState::Paused,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Paused => "paused",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Stopped => "stopped",
        }
    }

    pub fn parse(text: &str) -> Option<JobState> {
        JobState::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::Stopped
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored stage kind; a row this binary cannot read is an error, never a default.
pub(crate) fn parse_kind(text: &str) -> Result<StageKind, sqlx::Error> {
    StageKind::parse(text).ok_or_else(|| sqlx::Error::ColumnDecode {
        index: "kind".into(),
        source: format!("unknown stage kind {text:?}").into(),
    })
}

/// What `submit` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SubmitSummary {
    /// Jobs new to the store.
    pub added: u64,
    /// Jobs whose key was already stored, left as they were.
    pub kept: u64,
    /// The sweep's version after the submit (1 for a new sweep).
    pub version: i64,
}

/// A job a worker claimed: everything it needs to run it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedJob {
    pub id: Uuid,
    pub sweep: String,
    pub stage: String,
    pub kind: StageKind,
    pub key: String,
    pub params: Params,
    /// The fencing token: every write for this job names it.
    pub attempt: i32,
    pub parent_job_id: Option<Uuid>,
    /// The epoch this attempt stops at for a rung of successive halving; `None`: the
    /// end.
    pub halt_at: Option<i64>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Renewed; `cancel` asks the worker to stop the job and report it cancelled.
    Held { cancel: bool },
    /// Another attempt owns the job now (or it was reaped): stop, write nothing more.
    Lost,
}

/// The effect of a fenced write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Write {
    Applied,
    /// The attempt was superseded: nothing was written.
    Superseded,
}

/// How a job's attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    Succeeded(Value),
    Failed(Failure),
    Cancelled,
    /// It reached the rung `epoch` of its stage's successive halving, checkpoint
    /// stored: it pauses there for its group's decision.
    AtRung {
        epoch: i64,
    },
}

/// One metric value of a job's attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    pub step: i64,
    pub name: String,
    pub value: f64,
}

/// A metric value of an earlier attempt of a job, as the checkpoint a later attempt
/// resumed from kept it.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlierMetric {
    pub attempt: i32,
    pub point: MetricPoint,
}

/// Which jobs a command is about; empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    pub ids: Vec<Uuid>,
    pub sweep: Option<String>,
    pub stage: Option<String>,
    pub state: Option<JobState>,
}

/// What produced a succeeded job's result (see [`crate::provenance`]).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct JobProvenance {
    pub job: Uuid,
    pub stage: String,
    pub spec_version: i64,
    pub provenance: Option<crate::provenance::Provenance>,
}

/// One attempt of a job and what ran it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttemptRow {
    pub attempt: i32,
    pub provenance: crate::provenance::Provenance,
    pub started_at: DateTime<Utc>,
}

/// Every column of a job, for `jobs` and the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRow {
    pub id: Uuid,
    pub sweep: String,
    pub stage: String,
    pub kind: StageKind,
    pub key: String,
    pub params: Params,
    pub state: JobState,
    pub priority: i32,
    pub attempt: i32,
    pub max_attempts: i32,
    pub free_attempts: i32,
    pub cancel_requested: bool,
    pub worker: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub progress_step: Option<i64>,
    pub error_kind: Option<FailureKind>,
    pub error_message: Option<String>,
    pub result: Option<Value>,
    pub checkpoint: Option<String>,
    pub parent_job_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Where successive halving paused or stopped it, with the value compared there.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub halted: Option<Halted>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricRow {
    pub job_id: Uuid,
    pub attempt: i32,
    pub step: i64,
    pub name: String,
    pub value: f64,
    pub recorded_at: DateTime<Utc>,
}

/// A selection's decision in force for one group: made when the group's last job
/// finished, re-made when candidates succeeded after it and its downstream jobs had
/// not started.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PromotionRow {
    pub sweep: String,
    pub selection: String,
    /// The group's parameters.
    pub group: Params,
    /// The [`crate::sweep::select::Outcome`] as JSON.
    pub decision: Value,
    /// 1 for the first decision, one more each time it was re-made.
    pub revision: i32,
    /// Set when the group changed but the decision could not be re-made.
    pub stale: Option<Stale>,
    /// When the group was first decided.
    pub created_at: DateTime<Utc>,
    /// When this revision was.
    pub decided_at: DateTime<Utc>,
}

/// Why a decision no longer is what its rule picks from the group, and what it
/// picks now: kept because downstream jobs of the winners it would drop had started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stale {
    pub reason: String,
    /// The rule's decision over the group as it is now, never applied.
    pub outcome: Outcome,
}

/// A decision that a later revision replaced, kept for the record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SupersededPromotion {
    pub sweep: String,
    pub selection: String,
    pub group: Params,
    pub revision: i32,
    /// The [`crate::sweep::select::Outcome`] as JSON.
    pub decision: Value,
    pub decided_at: DateTime<Utc>,
    pub superseded_at: DateTime<Utc>,
    /// Why the next revision was made.
    pub reason: String,
    /// The queued, never claimed downstream jobs the next revision deleted:
    /// `[{id, stage, key, params, parent_job_id}]`.
    pub removed_jobs: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerRow {
    pub id: String,
    pub name: String,
    pub host: String,
    pub pid: i32,
    pub device: String,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub seconds_since_seen: f64,
    /// The job it runs now.
    pub job: Option<Uuid>,
}

/// Jobs of one sweep, stage and state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageCount {
    pub sweep: String,
    pub stage: String,
    pub state: JobState,
    pub count: i64,
    /// The mean run time in seconds of these jobs' last attempts, where they have
    /// one (`succeeded` jobs always do): what a stage's ETA goes by.
    pub mean_seconds: Option<f64>,
}

/// A running job as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunningRow {
    pub id: Uuid,
    pub sweep: String,
    pub stage: String,
    pub attempt: i32,
    pub worker: Option<String>,
    pub step: Option<i64>,
    /// The last epoch the job finished, for training jobs, and how long ago the
    /// worker stored it.
    pub epoch: Option<EpochSummary>,
    pub epoch_age_seconds: Option<f64>,
    pub running_seconds: f64,
    pub heartbeat_age_seconds: f64,
    pub lease_left_seconds: f64,
    pub cancel_requested: bool,
}

/// What a worker registers about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerInfo {
    pub id: String,
    pub name: String,
    pub host: String,
    pub pid: i32,
}

/// What `cancel` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CancelSummary {
    /// Queued jobs, cancelled at once.
    pub cancelled: u64,
    /// Running jobs whose workers were asked to stop them.
    pub stopping: u64,
}
