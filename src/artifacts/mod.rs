//! Job outputs (checkpoints, plots, result files) in one place every worker reaches.
//!
//! [`Artifacts`] is one interface over the `object_store` crate: a local directory by
//! default, a shared file system (`file:///shared/path`) or an S3 bucket
//! (`s3://bucket/prefix`, with `SWEEPER_S3_ENDPOINT` for S3-compatible servers) when
//! workers span machines. Keys are `/`-separated and relative to the location; a
//! job's outputs live under [`Artifacts::job_prefix`], `<sweep>/<job>`.
//!
//! **Writes are atomic**: a reader sees the whole old object, the whole new one, or
//! none. An S3 `PUT` and the completion of a multipart upload are atomic by S3's
//! contract; the local store writes to a hidden staging file beside the target and
//! renames it into place. Downloads do the same on the local side.
//!
//! Training writes checkpoints into a local job directory; the worker mirrors it
//! with [`Artifacts::sync_up`] after each checkpoint (checkpoint sidecars last, so a
//! sidecar in the store means its weights are there), and a retried or downstream
//! job on another machine fetches what it needs with [`Artifacts::sync_down`] or
//! [`Artifacts::fetch_latest_checkpoint`]. Decoded-image caches stay local to each
//! machine and never pass through here.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

use crate::redact::redact_url;

mod location;
mod sync;

pub use location::{Location, S3Settings, S3_ENDPOINT_VAR};
pub use sync::{checkpoint_file_names, LocalCheckpoint, RemoteCheckpoint, SyncReport};

/// Files up to this size go up in one `PUT`; larger ones in parts.
const SINGLE_PUT_LIMIT: u64 = 8 * 1024 * 1024;
/// Multipart part size (S3 wants at least 5 MiB for every part but the last).
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded at once: bounds the memory a large upload holds.
const PARTS_IN_FLIGHT: usize = 4;
/// Read buffer for local files.
const READ_CHUNK: usize = 1024 * 1024;
/// Empty chunks in a row after which a download is taken to make no progress.
const MAX_EMPTY_CHUNKS: u32 = 64;

/// Why an artifact operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("artifact location {location:?}: {reason}")]
    BadLocation { location: String, reason: String },
    #[error("artifact key {key:?}: {reason}")]
    BadKey { key: String, reason: String },
    #[error("artifact {key:?} is not in {location}")]
    NotFound { key: String, location: String },
    #[error("local file {}: {source}", path.display())]
    Local {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The store's own error as text: its message can quote a URL, so it is redacted
    /// and the original error is not kept as a `source` (which would print unredacted
    /// in an error chain).
    #[error("{op} {key:?} in {location}: {message}")]
    Store {
        op: &'static str,
        key: String,
        location: String,
        message: String,
    },
}

impl ArtifactError {
    /// Worth another attempt: the store or the local disk failed, as opposed to a
    /// bad location, a bad key or a missing object, which another attempt would
    /// meet again.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ArtifactError::Store { .. } | ArtifactError::Local { .. }
        )
    }
}

pub type ArtifactResult<T> = Result<T, ArtifactError>;

fn local_error(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Local {
        path: path.to_path_buf(),
        source,
    }
}

/// One stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The key, relative to the location.
    pub key: String,
    pub size: u64,
}

/// The artifact store of a sweep's workers. Cheap to clone: clones share the
/// store (and, for S3, its connection pool).
#[derive(Clone)]
pub struct Artifacts {
    store: Arc<dyn ObjectStore>,
    /// Printed in messages; never holds a secret.
    description: String,
}

/// Only the description: the S3 client's own `Debug` shows its credentials.
impl std::fmt::Debug for Artifacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Artifacts")
            .field("location", &self.description)
            .finish_non_exhaustive()
    }
}

impl Artifacts {
    /// Opens `url_or_path` (`artifacts`, `/abs/dir`, `file:///shared/dir`,
    /// `s3://bucket/prefix`), reading S3 settings from this process's environment.
    /// A directory is created if missing.
    pub fn from_url(url_or_path: &str) -> ArtifactResult<Artifacts> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Artifacts::from_url_with_env(url_or_path, &env)
    }

    /// [`Artifacts::from_url`] with the environment given explicitly.
    pub fn from_url_with_env(
        url_or_path: &str,
        env: &HashMap<String, String>,
    ) -> ArtifactResult<Artifacts> {
        Artifacts::open(&Location::parse(url_or_path, env)?, env)
    }

    /// Opens a parsed location.
    pub fn open(location: &Location, env: &HashMap<String, String>) -> ArtifactResult<Artifacts> {
        let bad = |reason: String| ArtifactError::BadLocation {
            location: location.to_string(),
            reason,
        };
        match location {
            Location::Directory(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| bad(format!("cannot create the directory: {e}")))?;
                // Removing the last object of a directory removes the directory, so
                // pruned checkpoints leave no empty folders behind.
                let store = LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| bad(redact_url(&e.to_string())))?
                    .with_automatic_cleanup(true);
                let absolute = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
                Ok(Artifacts {
                    store: Arc::new(store),
                    description: absolute.display().to_string(),
                })
            }
            Location::S3(s3) => {
                let client = s3
                    .builder(env)
                    .build()
                    .map_err(|e| bad(redact_url(&e.to_string())))?;
                let store: Arc<dyn ObjectStore> = if s3.prefix.is_empty() {
                    Arc::new(client)
                } else {
                    let prefix = ObjectPath::parse(&s3.prefix)
                        .map_err(|e| bad(format!("bad key prefix: {e}")))?;
                    Arc::new(PrefixStore::new(client, prefix))
                };
                Ok(Artifacts {
                    store,
                    description: location.to_string(),
                })
            }
            Location::Memory => Ok(Artifacts::in_memory()),
        }
    }

    /// An empty store in this process's memory.
    pub fn in_memory() -> Artifacts {
        Artifacts::from_store(Arc::new(InMemory::new()), "memory://")
    }

    /// Wraps any `object_store` backend; `description` appears in messages and must
    /// hold no secret.
    pub fn from_store(store: Arc<dyn ObjectStore>, description: &str) -> Artifacts {
        Artifacts {
            store,
            description: redact_url(description),
        }
    }

    /// Where this store is, for messages and `status` (never holds a secret).
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The key prefix of one job's outputs: `<sweep>/<job>`.
    pub fn job_prefix(sweep: &str, job: Uuid) -> String {
        format!("{sweep}/{job}")
    }

    /// Uploads a local file to `key`, atomically (a reader of `key` sees the old
    /// object, or none, until the whole new one is there). Returns its size.
    pub async fn put_file(&self, key: &str, local: &Path) -> ArtifactResult<u64> {
        let path = object_path(key)?;
        let mut file = tokio::fs::File::open(local)
            .await
            .map_err(local_error(local))?;
        let size = file.metadata().await.map_err(local_error(local))?.len();
        if size <= SINGLE_PUT_LIMIT {
            let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
            file.read_to_end(&mut bytes)
                .await
                .map_err(local_error(local))?;
            let sent = bytes.len() as u64;
            self.store
                .put(&path, PutPayload::from(bytes))
                .await
                .map_err(|e| self.store_error("upload", key, e))?;
            return Ok(sent);
        }
        let upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| self.store_error("upload", key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        match self.pump(&mut file, local, key, &mut writer).await {
            Ok(sent) if sent == size => {
                writer
                    .finish()
                    .await
                    .map_err(|e| self.store_error("upload", key, e))?;
                Ok(sent)
            }
            Ok(sent) => {
                // Nothing becomes visible: the parts are thrown away.
                let _ = writer.abort().await;
                Err(ArtifactError::Local {
                    path: local.to_path_buf(),
                    source: std::io::Error::other(format!(
                        "changed while it was uploaded ({size} bytes, then {sent})"
                    )),
                })
            }
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// Feeds a local file into a multipart upload; returns the bytes read.
    async fn pump(
        &self,
        file: &mut tokio::fs::File,
        local: &Path,
        key: &str,
        writer: &mut WriteMultipart,
    ) -> ArtifactResult<u64> {
        let mut buffer = vec![0u8; READ_CHUNK];
        let mut sent = 0u64;
        loop {
            let n = file.read(&mut buffer).await.map_err(local_error(local))?;
            if n == 0 {
                return Ok(sent);
            }
            writer
                .wait_for_capacity(PARTS_IN_FLIGHT)
                .await
                .map_err(|e| self.store_error("upload", key, e))?;
            writer.write(&buffer[..n]);
            sent += n as u64;
        }
    }

    /// Stores `bytes` at `key`, atomically.
    pub async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> ArtifactResult<()> {
        let path = object_path(key)?;
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|e| self.store_error("upload", key, e))?;
        Ok(())
    }

    /// Downloads `key` to `local`, atomically on the local side too: the object goes
    /// to a hidden temporary file beside `local`, which is renamed into place once
    /// complete. Creates `local`'s directory. Returns the size.
    pub async fn get_file(&self, key: &str, local: &Path) -> ArtifactResult<u64> {
        let path = object_path(key)?;
        let file_name =
            local
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| ArtifactError::Local {
                    path: local.to_path_buf(),
                    source: std::io::Error::other("not a file path"),
                })?;
        let dir = match local.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(local_error(dir))?;
        let got = self
            .store
            .get(&path)
            .await
            .map_err(|e| self.store_error("download", key, e))?;
        let expected = got.meta.size;
        // Hidden and not named like any output, so neither a sync nor the
        // checkpoint loader takes it for a file.
        let tmp = dir.join(format!(".{file_name}.part-{}", Uuid::new_v4().simple()));
        let written = async {
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .map_err(local_error(&tmp))?;
            let mut stream = got.into_stream();
            let mut written = 0u64;
            let mut empty_in_a_row = 0;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.store_error("download", key, e))?;
                // The local store streams empty chunks forever when a file shrinks
                // under it (someone rewrote it in place): stop instead of spinning.
                empty_in_a_row = if chunk.is_empty() {
                    empty_in_a_row + 1
                } else {
                    0
                };
                if empty_in_a_row > MAX_EMPTY_CHUNKS || written + chunk.len() as u64 > expected {
                    return Err(self.store_error_text(
                        "download",
                        key,
                        format!("the object changed while it was read ({expected} bytes)"),
                    ));
                }
                file.write_all(&chunk).await.map_err(local_error(&tmp))?;
                written += chunk.len() as u64;
            }
            file.sync_all().await.map_err(local_error(&tmp))?;
            if written != expected {
                return Err(self.store_error_text(
                    "download",
                    key,
                    format!("got {written} bytes of {expected}"),
                ));
            }
            Ok(written)
        }
        .await;
        let written = match written {
            Ok(n) => n,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        if let Err(e) = tokio::fs::rename(&tmp, local).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(local_error(local)(e));
        }
        Ok(written)
    }

    /// The whole object at `key`.
    pub async fn get_bytes(&self, key: &str) -> ArtifactResult<Vec<u8>> {
        let path = object_path(key)?;
        let got = self
            .store
            .get(&path)
            .await
            .map_err(|e| self.store_error("download", key, e))?;
        let bytes = got
            .bytes()
            .await
            .map_err(|e| self.store_error("download", key, e))?;
        Ok(bytes.to_vec())
    }

    /// The size of the object at `key`, or `None` where there is none.
    pub async fn size(&self, key: &str) -> ArtifactResult<Option<u64>> {
        let path = object_path(key)?;
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.store_error("look up", key, e)),
        }
    }

    /// Every key under `prefix` (a whole path segment: `a/b` holds `a/b/c`, not
    /// `a/bc`), sorted. An empty prefix lists everything.
    pub async fn list(&self, prefix: &str) -> ArtifactResult<Vec<String>> {
        Ok(self
            .list_objects(prefix)
            .await?
            .into_iter()
            .map(|o| o.key)
            .collect())
    }

    /// [`Artifacts::list`] with sizes.
    pub async fn list_objects(&self, prefix: &str) -> ArtifactResult<Vec<ObjectInfo>> {
        let path = if prefix.trim_matches('/').is_empty() {
            None
        } else {
            Some(object_path(prefix)?)
        };
        let mut stream = self.store.list(path.as_ref());
        let mut found = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta.map_err(|e| self.store_error("list", prefix, e))?;
            found.push(ObjectInfo {
                key: meta.location.as_ref().to_string(),
                size: meta.size,
            });
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    /// Removes the object at `key`; a missing object is not an error.
    pub async fn delete(&self, key: &str) -> ArtifactResult<()> {
        let path = object_path(key)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.store_error("delete", key, e)),
        }
    }

    fn store_error(&self, op: &'static str, key: &str, e: object_store::Error) -> ArtifactError {
        match e {
            object_store::Error::NotFound { .. } => ArtifactError::NotFound {
                key: key.to_string(),
                location: self.description.clone(),
            },
            other => self.store_error_text(op, key, other.to_string()),
        }
    }

    fn store_error_text(&self, op: &'static str, key: &str, message: String) -> ArtifactError {
        ArtifactError::Store {
            op,
            key: key.to_string(),
            location: self.description.clone(),
            message: redact_url(&message),
        }
    }
}

/// Checks a key and turns it into a store path. Segments are made of letters,
/// digits and `-_.+=,@~`, and do not start with `.`: hidden names are reserved for
/// files being written, and the characters are those every backend stores verbatim.
fn object_path(key: &str) -> ArtifactResult<ObjectPath> {
    let bad = |reason: &str| ArtifactError::BadKey {
        key: key.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = key.trim_matches('/');
    if trimmed.is_empty() {
        return Err(bad("empty"));
    }
    for segment in trimmed.split('/') {
        if segment.is_empty() {
            return Err(bad("has an empty path segment (`//`)"));
        }
        if segment.starts_with('.') {
            return Err(bad("a path segment starts with `.`"));
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-_.+=,@~".contains(*c)))
        {
            return Err(bad(&format!(
                "{c:?} is not allowed (letters, digits and -_.+=,@~ only)"
            )));
        }
    }
    ObjectPath::parse(trimmed).map_err(|e| bad(&e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_round_trip_and_list_is_sorted_and_segment_wise() {
        let store = Artifacts::in_memory();
        store.put_bytes("s/j2/b", b"2".to_vec()).await.unwrap();
        store.put_bytes("s/j1/a", b"1".to_vec()).await.unwrap();
        store.put_bytes("s/j10/a", b"10".to_vec()).await.unwrap();
        assert_eq!(store.get_bytes("s/j10/a").await.unwrap(), b"10");
        assert_eq!(store.list("s/j1").await.unwrap(), vec!["s/j1/a"]);
        assert_eq!(
            store.list("").await.unwrap(),
            vec!["s/j1/a", "s/j10/a", "s/j2/b"]
        );
        assert_eq!(store.size("s/j2/b").await.unwrap(), Some(1));
        assert_eq!(store.size("s/j3/b").await.unwrap(), None);
        store.delete("s/j2/b").await.unwrap();
        store.delete("s/j2/b").await.unwrap();
        assert_eq!(store.list("s").await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_missing_object_is_not_found_and_not_retryable() {
        let store = Artifacts::in_memory();
        let err = store.get_bytes("s/j/none").await.unwrap_err();
        assert!(matches!(err, ArtifactError::NotFound { .. }), "{err}");
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("s/j/none"), "{err}");
    }

    #[test]
    fn keys_are_checked() {
        for good in [
            "a",
            "sweep/0190a-b/epoch-0001.optim.ot",
            "/lead/trail/",
            "a+b=c,d@e~f",
        ] {
            assert!(object_path(good).is_ok(), "{good}");
        }
        for bad in [
            "", "/", "a//b", "a/../b", "a/./b", ".hidden", "a/.x", "a b", "a#1", "é",
        ] {
            assert!(
                matches!(object_path(bad), Err(ArtifactError::BadKey { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn job_prefix_is_sweep_then_job() {
        let job = Uuid::parse_str("0190f5e2-7c1a-7d3e-8f00-000000000001").unwrap();
        assert_eq!(
            Artifacts::job_prefix("report", job),
            "report/0190f5e2-7c1a-7d3e-8f00-000000000001"
        );
    }

    #[test]
    fn store_messages_are_redacted() {
        let store = Artifacts::from_store(
            Arc::new(InMemory::new()),
            "s3://b/p at http://u:pw@minio:9000",
        );
        assert_eq!(store.description(), "s3://b/p at http://u:***@minio:9000");
        let err = store.store_error_text(
            "upload",
            "k",
            "Error performing PUT http://admin:hunter2@minio/b/k".into(),
        );
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.is_retryable());
    }
}
