//! Why an attempt failed, and whose fault that was.
//!
//! The queue decides from the [`Blame`] alone: a job's own fault is final, a transient
//! one is retried while attempts remain, and an infrastructure fault (a broken GPU, a
//! full or flaky disk, an unreachable artifact store) is retried elsewhere without
//! spending an attempt and never counts as the job's end, so it never triggers a
//! promotion. [`FailureKind`] is the one vocabulary of failures: the word stored in
//! `jobs.error_kind`, shown by `jobs` and `status`, and parsed back from rows.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// Whose fault a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Blame {
    /// The job's own: bad data, a NaN loss, its program's exit status. Final.
    Job,
    /// The attempt's, not the job's: another attempt may succeed (a program asking
    /// for a retry, a lost lease, a job that stopped unasked). Retried while attempts
    /// remain.
    Transient,
    /// The machine's: CUDA or driver errors, out of memory, the artifact store or
    /// the scratch disk. Retried elsewhere; no attempt is spent.
    Infrastructure,
}

/// What went wrong, as stored in `jobs.error_kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// Training refused the job: bad data, NaN loss, an impossible configuration.
    Fatal,
    /// Code panicked while running the job (a libtorch error that is not the device's).
    Crash,
    /// A `command` job's program exited with a non-zero status.
    ExitStatus,
    /// A `command` job's program was killed by a signal.
    Signal,
    /// A `command` stage's argv cannot run.
    BadCommand,
    /// A `command` job's program could not be started.
    Spawn,
    /// The job's sweep, stage, dataset or parent checkpoint is not in the store.
    NoSpec,
    NoStage,
    NoDataset,
    NoCheckpoint,
    /// The job stopped without being asked to.
    Stopped,
    /// The worker holding the job stopped renewing its lease.
    LeaseExpired,
    Cancelled,
    /// The GPU, its driver, CUDA or cuDNN failed.
    Device,
    /// The device or the host ran out of memory.
    OutOfMemory,
    /// The artifact store could not be read or written.
    Artifacts,
    /// Local I/O failed: the scratch disk, the dataset's files, a checkpoint file.
    Io,
    /// A thread or a child process could not be created or waited for.
    Thread,
    Wait,
    /// Rows written before infrastructure failures had kinds of their own.
    Retryable,
}

const NAMES: [(FailureKind, &str); 20] = [
    (FailureKind::Fatal, "fatal"),
    (FailureKind::Crash, "crash"),
    (FailureKind::ExitStatus, "exit status"),
    (FailureKind::Signal, "signal"),
    (FailureKind::BadCommand, "bad command"),
    (FailureKind::Spawn, "spawn"),
    (FailureKind::NoSpec, "no spec"),
    (FailureKind::NoStage, "no stage"),
    (FailureKind::NoDataset, "no dataset"),
    (FailureKind::NoCheckpoint, "no checkpoint"),
    (FailureKind::Stopped, "stopped"),
    (FailureKind::LeaseExpired, "lease expired"),
    (FailureKind::Cancelled, "cancelled"),
    (FailureKind::Device, "device"),
    (FailureKind::OutOfMemory, "out of memory"),
    (FailureKind::Artifacts, "artifacts"),
    (FailureKind::Io, "io"),
    (FailureKind::Thread, "thread"),
    (FailureKind::Wait, "wait"),
    (FailureKind::Retryable, "retryable"),
];

impl FailureKind {
    pub fn as_str(self) -> &'static str {
        NAMES
            .iter()
            .find(|(kind, _)| *kind == self)
            .map(|(_, name)| *name)
            // Every variant is in NAMES (the unit test walks them all).
            .unwrap_or("unknown")
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for FailureKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown failure kind {0:?}")]
pub struct UnknownFailureKind(pub String);

impl FromStr for FailureKind {
    type Err = UnknownFailureKind;
    fn from_str(text: &str) -> Result<FailureKind, UnknownFailureKind> {
        NAMES
            .iter()
            .find(|(_, name)| *name == text)
            .map(|(kind, _)| *kind)
            .ok_or_else(|| UnknownFailureKind(text.to_owned()))
    }
}

/// How one attempt failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub kind: FailureKind,
    pub message: String,
    pub blame: Blame,
}

impl Failure {
    /// The job's own fault: final.
    pub fn job(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            blame: Blame::Job,
        }
    }

    /// Worth another attempt, which counts.
    pub fn transient(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            blame: Blame::Transient,
        }
    }

    /// The machine's fault: tried again elsewhere, no attempt spent.
    pub fn infrastructure(kind: FailureKind, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            message: message.into(),
            blame: Blame::Infrastructure,
        }
    }

    /// Another attempt may succeed.
    pub fn retryable(&self) -> bool {
        self.blame != Blame::Job
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_name_that_parses_back() {
        let mut names: Vec<&str> = NAMES.iter().map(|(_, name)| *name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), NAMES.len(), "a name is used twice");
        for (kind, name) in NAMES {
            assert_eq!(kind.as_str(), name);
            assert_eq!(name.parse::<FailureKind>(), Ok(kind));
        }
        assert!("exit-status".parse::<FailureKind>().is_err());
    }

    #[test]
    fn only_the_jobs_own_fault_is_final() {
        assert!(!Failure::job(FailureKind::Fatal, "nan").retryable());
        assert!(Failure::transient(FailureKind::ExitStatus, "75").retryable());
        assert!(Failure::infrastructure(FailureKind::Device, "xid").retryable());
    }
}
