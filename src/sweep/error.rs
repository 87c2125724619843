//! Errors of the sweep file. Each names the file and, where the parser knows it, the
//! line, column and field.

use std::path::PathBuf;

pub type SweepResult<T> = Result<T, SweepError>;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("cannot read sweep file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Something in the file is wrong: `location` is `file:line:column` where known.
    #[error("{location}: {field}: {message}")]
    Invalid {
        location: String,
        field: String,
        message: String,
    },
    /// A `command` argument names a placeholder the job has no value for.
    #[error("command argument {argument:?}: {message}")]
    Placeholder { argument: String, message: String },
}
