//! Where a job's files live: a directory on this machine's scratch space, mirrored to
//! the artifact store that every worker reaches.
//!
//! A job writes into `<scratch>/<sweep>/<job>`; its key prefix in the store is
//! [`Artifacts::job_prefix`], the same `<sweep>/<job>`, so a key names the same file
//! under the store and under any worker's scratch directory. Before a job starts the
//! worker pulls its prefix (a retried attempt on another machine resumes from the
//! newest checkpoint there); the job's checkpoints are pushed as they come and at the
//! end. Where the store is the scratch directory itself (the default: both
//! `artifacts/`), nothing is copied.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::artifacts::{ArtifactError, ArtifactResult, Artifacts, Location, SyncReport};
use crate::store::{Failure, FailureKind};

/// The artifact store and this machine's side of it.
#[derive(Debug, Clone)]
pub(crate) struct Storage {
    pub artifacts: Artifacts,
    /// Absolute; job directories are made under it.
    pub scratch: PathBuf,
    /// The store is the scratch directory: job directories are already in it.
    pub in_place: bool,
}

/// One job's directory and its prefix in the store.
#[derive(Debug, Clone)]
pub(crate) struct JobFiles {
    /// Absolute.
    pub dir: PathBuf,
    pub prefix: String,
}

impl JobFiles {
    /// The key of a file of this job's directory.
    pub fn key_of(&self, local: &Path) -> Option<String> {
        let name = local.strip_prefix(&self.dir).ok()?.to_str()?;
        Some(format!("{}/{}", self.prefix, name.replace('\\', "/")))
    }
}

impl Storage {
    /// Opens the store at `url` (a directory, `file://` or `s3://`). Scratch space
    /// defaults to the store's directory when it is one, else `scratch/`.
    pub fn open(url: &str, scratch: Option<&Path>) -> ArtifactResult<Storage> {
        let env: HashMap<String, String> = std::env::vars().collect();
        let location = Location::parse(url, &env)?;
        let artifacts = Artifacts::open(&location, &env)?;
        let store_dir = match &location {
            Location::Directory(dir) => Some(dir.clone()),
            Location::S3(_) | Location::Memory => None,
        };
        let scratch = scratch
            .map(Path::to_path_buf)
            .or_else(|| store_dir.clone())
            .unwrap_or_else(|| PathBuf::from("scratch"));
        std::fs::create_dir_all(&scratch).map_err(|source| ArtifactError::Local {
            path: scratch.clone(),
            source,
        })?;
        let scratch = std::fs::canonicalize(&scratch).map_err(|source| ArtifactError::Local {
            path: scratch.clone(),
            source,
        })?;
        let in_place = store_dir
            .and_then(|dir| std::fs::canonicalize(dir).ok())
            .is_some_and(|dir| dir == scratch);
        Ok(Storage {
            artifacts,
            scratch,
            in_place,
        })
    }

    pub fn job_files(&self, sweep: &str, job: Uuid) -> JobFiles {
        JobFiles {
            dir: self.scratch.join(sweep).join(job.to_string()),
            prefix: Artifacts::job_prefix(sweep, job),
        }
    }

    /// Brings what the store holds of the job into its directory.
    pub async fn pull(&self, files: &JobFiles) -> ArtifactResult<SyncReport> {
        if self.in_place {
            return Ok(SyncReport::default());
        }
        self.artifacts.sync_down(&files.prefix, &files.dir).await
    }

    /// Mirrors the job's directory to the store. Only the holder of the job's lease
    /// may call this.
    pub async fn push(&self, files: &JobFiles) -> ArtifactResult<SyncReport> {
        if self.in_place {
            return Ok(SyncReport::default());
        }
        self.artifacts.sync_up(&files.dir, &files.prefix).await
    }

    /// Whether `key` is in the store.
    pub async fn holds(&self, key: &str) -> ArtifactResult<bool> {
        if self.in_place {
            return Ok(self.scratch.join(key).is_file());
        }
        Ok(self.artifacts.size(key).await?.is_some())
    }

    /// A local path to the checkpoint a parent job recorded: its weights and sidecar
    /// fetched from the store into `<scratch>/<key>` (the parent's directory on this
    /// machine) unless already there. A recorded absolute path that exists here is
    /// taken as it is (a store written before checkpoints were keys).
    pub async fn fetch_checkpoint(&self, recorded: &str) -> ArtifactResult<PathBuf> {
        let as_path = Path::new(recorded);
        if as_path.is_absolute() && as_path.is_file() {
            return Ok(as_path.to_path_buf());
        }
        let weights = self.scratch.join(recorded);
        if self.in_place {
            return if weights.is_file() {
                Ok(weights)
            } else {
                Err(ArtifactError::NotFound {
                    key: recorded.to_string(),
                    location: self.artifacts.description().to_string(),
                })
            };
        }
        let sidecar_key = recorded
            .strip_suffix(".ot")
            .map(|stem| format!("{stem}.json"));
        let mut wanted = vec![(recorded.to_string(), weights.clone(), true)];
        if let Some(key) = sidecar_key {
            let local = self.scratch.join(&key);
            wanted.push((key, local, false));
        }
        for (key, local, required) in wanted {
            let here = tokio::fs::metadata(&local).await.ok().map(|m| m.len());
            let there = self.artifacts.size(&key).await?;
            match there {
                None if required => {
                    return Err(ArtifactError::NotFound {
                        key,
                        location: self.artifacts.description().to_string(),
                    })
                }
                None => {}
                Some(size) if here == Some(size) => {}
                Some(_) => {
                    self.artifacts.get_file(&key, &local).await?;
                }
            }
        }
        Ok(weights)
    }
}

/// An artifact error as a job failure: the machine's when the store or the disk
/// failed, the job's when its location, key or object is wrong.
pub(crate) fn artifact_failure(what: &str, error: &ArtifactError) -> Failure {
    let message = format!("{what}: {error}");
    if error.is_retryable() {
        Failure::infrastructure(FailureKind::Artifacts, message)
    } else {
        Failure::job(FailureKind::Artifacts, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_local_store_used_as_scratch_copies_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("artifacts");
        let storage = Storage::open(store.to_str().unwrap(), None).unwrap();
        assert!(storage.in_place);
        let job = Uuid::now_v7();
        let files = storage.job_files("s", job);
        std::fs::create_dir_all(&files.dir).unwrap();
        std::fs::write(files.dir.join("epoch-0001.ot"), b"w").unwrap();
        assert_eq!(storage.push(&files).await.unwrap(), SyncReport::default());
        let key = files.key_of(&files.dir.join("epoch-0001.ot")).unwrap();
        assert_eq!(key, format!("s/{job}/epoch-0001.ot"));
        assert!(storage.holds(&key).await.unwrap());
        assert_eq!(
            storage.fetch_checkpoint(&key).await.unwrap(),
            files.dir.join("epoch-0001.ot")
        );
    }

    #[tokio::test]
    async fn a_shared_store_mirrors_jobs_and_serves_checkpoints_to_other_scratch() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("shared").display());
        let a = Storage::open(&url, Some(&dir.path().join("a"))).unwrap();
        let b = Storage::open(&url, Some(&dir.path().join("b"))).unwrap();
        assert!(!a.in_place && !b.in_place);
        let job = Uuid::now_v7();
        let files_a = a.job_files("s", job);
        std::fs::create_dir_all(&files_a.dir).unwrap();
        for (name, bytes) in [
            ("epoch-0001.ot", &b"weights"[..]),
            ("epoch-0001.optim.ot", b"optim"),
            ("epoch-0001.json", b"{}"),
        ] {
            std::fs::write(files_a.dir.join(name), bytes).unwrap();
        }
        a.push(&files_a).await.unwrap();
        let key = files_a.key_of(&files_a.dir.join("epoch-0001.ot")).unwrap();
        assert!(b.holds(&key).await.unwrap());

        let fetched = b.fetch_checkpoint(&key).await.unwrap();
        assert_eq!(
            fetched,
            dir.path()
                .join("b/s")
                .join(job.to_string())
                .join("epoch-0001.ot")
        );
        assert_eq!(std::fs::read(&fetched).unwrap(), b"weights");
        assert_eq!(
            std::fs::read(fetched.with_extension("json")).unwrap(),
            b"{}"
        );
        // The optimizer state is not needed downstream.
        assert!(!fetched.with_file_name("epoch-0001.optim.ot").exists());

        let files_b = b.job_files("s", job);
        let pulled = b.pull(&files_b).await.unwrap();
        assert_eq!(pulled.transferred, vec!["epoch-0001.optim.ot"]);
        assert_eq!(pulled.unchanged, 2);

        let missing = b
            .fetch_checkpoint("s/none/epoch-0001.ot")
            .await
            .unwrap_err();
        assert!(
            matches!(missing, ArtifactError::NotFound { .. }),
            "{missing}"
        );
    }
}
