//! Errors of the store. A message names what the user asked for (the URL, the job, the
//! sweep); the database's own error is kept as the source.
//!
//! A store URL may carry a password: every URL kept here went through
//! [`redact_url`] first (use [`StoreError::open`], [`StoreError::bad_url`]), and the
//! driver's error on opening, which may quote the URL, is kept redacted as text.

use crate::redact::redact_url;

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `url` is redacted.
    #[error("unsupported store URL {url:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    BadUrl { url: String },
    /// `url` and `reason` are redacted; the driver's error is not kept as a source,
    /// which would print unredacted in an error chain.
    #[error("cannot open the store at {url}: {reason}")]
    Open { url: String, reason: String },
    /// `url` is redacted.
    #[error("cannot bring the schema of {url} up to date")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// The database was migrated by a newer sweeper: this binary must not write to it.
    #[error(
        "the store's schema is at version {found}, newer than this sweeper binary knows \
         (version {known}); upgrade sweeper before using this store"
    )]
    SchemaTooNew { found: i64, known: i64 },
    #[error("no sweep named {name:?} in the store")]
    UnknownSweep { name: String },
    /// A resubmitted file would change cells already stored (see
    /// [`crate::sweep::version`]); nothing was written.
    #[error(
        "sweep {sweep:?}: this file changes what the stored cells of version {version} were \
         made with:\n{}\nnothing was stored; submit with --new-version to record it as \
         version {} (stored results keep their version), or give the sweep another name",
        list_changes(changes),
        version + 1
    )]
    SpecChanged {
        sweep: String,
        version: i64,
        changes: Vec<crate::sweep::version::Change>,
    },
    #[error("no job with id {id} in the store")]
    UnknownJob { id: uuid::Uuid },
    #[error("the stored spec of sweep {sweep:?} cannot be read")]
    BadSpec {
        sweep: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("the stored decision of selection {selection:?} in sweep {sweep:?} cannot be read")]
    BadDecision {
        sweep: String,
        selection: String,
        #[source]
        source: serde_json::Error,
    },
    /// `sweeper query` got SQL that may do more than read: refused before it ran.
    #[error("sweeper query runs one statement that only reads: {reason}")]
    Refused { reason: String },
    /// `sweeper query` got SQL the database refused: the user's input, not a fault.
    #[error("the query failed")]
    Query {
        #[source]
        source: sqlx::Error,
    },
    /// The store does not answer: `reason` (redacted) is why, as far as the driver
    /// knows ("Connection refused", "no answer within 5 s").
    #[error("the store cannot be reached: {reason}")]
    Unreachable { reason: String },
    #[error("{context}")]
    Database {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

impl StoreError {
    /// The store at `url` cannot be opened, with passwords masked.
    pub fn open(url: &str, source: &sqlx::Error) -> StoreError {
        StoreError::Open {
            url: redact_url(url),
            reason: redact_url(&source.to_string()),
        }
    }

    /// `url` names no store this binary knows, with passwords masked.
    pub fn bad_url(url: &str) -> StoreError {
        StoreError::BadUrl {
            url: redact_url(url),
        }
    }

    /// True when the error comes from what the user typed (an id, a name, a URL, SQL).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            StoreError::BadUrl { .. }
                | StoreError::UnknownSweep { .. }
                | StoreError::UnknownJob { .. }
                | StoreError::SpecChanged { .. }
                | StoreError::Query { .. }
                | StoreError::Refused { .. }
        )
    }
}

fn list_changes(changes: &[crate::sweep::version::Change]) -> String {
    let lines: Vec<String> = changes.iter().map(|c| format!("  {c}")).collect();
    lines.join("\n")
}

impl StoreError {
    /// True when the store could not be reached or lost the connection: the same
    /// call may work once it is back. False for errors that would repeat.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unreachable { .. } => true,
            StoreError::Database { source, .. } => sqlx_unavailable(source),
            _ => false,
        }
    }
}

fn sqlx_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(error) => error.code().is_some_and(|code| {
            // Postgres: connection exceptions, the server shutting down or starting,
            // too many connections. SQLite: busy and locked.
            code.starts_with("08")
                || ["57P01", "57P02", "57P03", "53300"].contains(&code.as_ref())
                || ["5", "6", "261", "262", "517"].contains(&code.as_ref())
        }),
        _ => false,
    }
}

/// Attaches what the store was doing to a database error.
pub(crate) trait Context<T> {
    fn context(self, context: &'static str) -> StoreResult<T>;
}

impl<T> Context<T> for Result<T, sqlx::Error> {
    fn context(self, context: &'static str) -> StoreResult<T> {
        self.map_err(|source| StoreError::Database { context, source })
    }
}
