//! Mirroring a job directory to the store and back, and finding checkpoints there.
//!
//! Checkpoints are named as the training code writes them: epoch E is
//! `epoch-EEEE.ot` (weights), `epoch-EEEE.optim.ot` (optimizer state) and the sidecar
//! `epoch-EEEE.json`, written last. A checkpoint is complete when all three exist,
//! and the sidecar is always stored after the other two, so a sidecar in the store
//! means its weights are whole there too. Local files that are being written (hidden
//! names, `*.tmp`) are never synced.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::{ArtifactError, ArtifactResult, Artifacts};

/// The names of epoch `epoch`'s checkpoint files: weights, optimizer, sidecar.
pub fn checkpoint_file_names(epoch: i64) -> [String; 3] {
    let stem = format!("epoch-{epoch:04}");
    [
        format!("{stem}.ot"),
        format!("{stem}.optim.ot"),
        format!("{stem}.json"),
    ]
}

/// The epoch of a checkpoint file name, and whether it is the sidecar.
fn checkpoint_epoch(name: &str) -> Option<(i64, bool)> {
    let rest = name.strip_prefix("epoch-")?;
    let (digits, suffix) = rest.split_once('.')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let epoch = digits.parse().ok()?;
    match suffix {
        "ot" | "optim.ot" => Some((epoch, false)),
        "json" => Some((epoch, true)),
        _ => None,
    }
}

/// The complete checkpoints among `names` (file names in one directory), oldest
/// first.
fn complete_epochs<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<i64> {
    let names: BTreeSet<&str> = names.into_iter().collect();
    let mut epochs: Vec<i64> = names
        .iter()
        .filter_map(|name| checkpoint_epoch(name))
        .filter(|(_, sidecar)| *sidecar)
        .map(|(epoch, _)| epoch)
        .filter(|epoch| {
            checkpoint_file_names(*epoch)
                .iter()
                .all(|n| names.contains(n.as_str()))
        })
        .collect();
    epochs.sort_unstable();
    epochs.dedup();
    epochs
}

/// A complete checkpoint in the store (full keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteCheckpoint {
    pub epoch: i64,
    pub weights: String,
    pub optimizer: String,
    pub sidecar: String,
}

/// A complete checkpoint fetched into a local directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCheckpoint {
    pub epoch: i64,
    pub weights: PathBuf,
    pub optimizer: PathBuf,
    pub sidecar: PathBuf,
}

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Files copied, by name relative to the directory / prefix, in copy order.
    pub transferred: Vec<String>,
    /// Bytes copied.
    pub bytes: u64,
    /// Files already present with the same size.
    pub unchanged: usize,
    /// Old checkpoint files removed from the store (see [`Artifacts::sync_up`]).
    pub removed: Vec<String>,
    /// Files left for a later sync: removed locally while the sync ran, or a
    /// sidecar whose weights or optimizer state are not in the store.
    pub skipped: Vec<String>,
}

/// A regular file under a local directory.
#[derive(Debug, Clone)]
struct LocalFile {
    /// Relative to the directory, `/`-separated.
    name: String,
    path: PathBuf,
    size: u64,
}

/// Data before metadata: every `.json` file (checkpoint sidecars among them) goes
/// after every other file, so a sidecar never arrives before its weights.
fn copy_order(name: &str) -> (bool, &str) {
    (name.ends_with(".json"), name)
}

/// Files being written are skipped: hidden names (our downloads, the object store's
/// staging files) and `*.tmp` (the training code's).
fn in_progress(name: &str) -> bool {
    name.starts_with('.') || name.ends_with(".tmp")
}

fn join_key(prefix: &str, name: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

/// Every finished regular file under `dir` (none when `dir` does not exist).
async fn local_files(dir: &Path) -> ArtifactResult<Vec<LocalFile>> {
    let root = dir.to_path_buf();
    let walked = tokio::task::spawn_blocking(move || {
        let mut found = Vec::new();
        walk(&root, "", &mut found).map(|()| found)
    })
    .await
    .map_err(|e| ArtifactError::Local {
        path: dir.to_path_buf(),
        source: std::io::Error::other(format!("directory listing did not finish: {e}")),
    })?;
    walked.map_err(|(path, source)| ArtifactError::Local { path, source })
}

fn walk(
    dir: &Path,
    relative: &str,
    found: &mut Vec<LocalFile>,
) -> Result<(), (PathBuf, std::io::Error)> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && relative.is_empty() => return Ok(()),
        Err(e) => return Err((dir.to_path_buf(), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| (dir.to_path_buf(), e))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            return Err((
                path,
                std::io::Error::other("the file name is not UTF-8, so it cannot be a key"),
            ));
        };
        if in_progress(&name) {
            continue;
        }
        let name = if relative.is_empty() {
            name
        } else {
            format!("{relative}/{name}")
        };
        let file_type = entry.file_type().map_err(|e| (path.clone(), e))?;
        if file_type.is_dir() {
            walk(&path, &name, found)?;
        } else {
            // Follows a symlink to a file; a file that vanished meanwhile is skipped.
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() => found.push(LocalFile {
                    name,
                    path,
                    size: meta.len(),
                }),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err((path, e)),
            }
        }
    }
    Ok(())
}

impl Artifacts {
    /// Objects under `prefix`, by name relative to it, with sizes.
    async fn remote_files(&self, prefix: &str) -> ArtifactResult<BTreeMap<String, u64>> {
        let prefix = prefix.trim_matches('/');
        let objects = self.list_objects(prefix).await?;
        Ok(objects
            .into_iter()
            .filter_map(|o| {
                let name = if prefix.is_empty() {
                    Some(o.key.as_str())
                } else {
                    o.key
                        .strip_prefix(prefix)
                        .and_then(|rest| rest.strip_prefix('/'))
                };
                name.map(|n| (n.to_string(), o.size))
            })
            .collect())
    }

    /// Mirrors `local_dir` to `prefix`: uploads every file the store lacks or holds
    /// with another size (files are written once under a name, as checkpoints are),
    /// data first and `.json` sidecars last; a checkpoint sidecar goes up only once
    /// its weights and optimizer state are in the store. Training may go on while
    /// this runs: a file it prunes meanwhile is skipped. Then removes from the store the
    /// checkpoints that training pruned locally: those older than the newest local
    /// complete checkpoint and absent from `local_dir` (sidecar first). Nothing else
    /// is ever removed. A missing `local_dir` uploads nothing.
    ///
    /// Two attempts of one job share the prefix; only the attempt that holds the
    /// job's lease may call this.
    pub async fn sync_up(&self, local_dir: &Path, prefix: &str) -> ArtifactResult<SyncReport> {
        let mut local = local_files(local_dir).await?;
        local.sort_by(|a, b| copy_order(&a.name).cmp(&copy_order(&b.name)));
        let remote = self.remote_files(prefix).await?;
        let mut report = SyncReport::default();
        // What the store holds by now, for the sidecar rule below.
        let mut stored: BTreeSet<String> = remote.keys().cloned().collect();
        for file in &local {
            if remote.get(&file.name) == Some(&file.size) {
                report.unchanged += 1;
                continue;
            }
            if let Some((epoch, true)) = checkpoint_epoch(&file.name) {
                let [weights, optimizer, _] = checkpoint_file_names(epoch);
                if !(stored.contains(&weights) && stored.contains(&optimizer)) {
                    report.skipped.push(file.name.clone());
                    continue;
                }
            }
            match self
                .put_file(&join_key(prefix, &file.name), &file.path)
                .await
            {
                Ok(bytes) => {
                    report.bytes += bytes;
                    report.transferred.push(file.name.clone());
                    stored.insert(file.name.clone());
                }
                // Training pruned it while we synced (it keeps running meanwhile).
                Err(ArtifactError::Local { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    report.skipped.push(file.name.clone());
                }
                Err(e) => return Err(e),
            }
        }

        let local_names: BTreeSet<&str> = local.iter().map(|f| f.name.as_str()).collect();
        let local_epochs: BTreeSet<i64> = local_names
            .iter()
            .filter_map(|n| checkpoint_epoch(n))
            .map(|(epoch, _)| epoch)
            .collect();
        if let Some(&newest_local) = complete_epochs(local_names.iter().copied()).last() {
            let mut stale: Vec<(bool, &String)> = remote
                .keys()
                .filter_map(|name| {
                    let (epoch, sidecar) = checkpoint_epoch(name)?;
                    (epoch < newest_local && !local_epochs.contains(&epoch))
                        .then_some((!sidecar, name))
                })
                .collect();
            // Sidecars (false) first: a half-removed checkpoint is never complete.
            stale.sort();
            for (_, name) in stale {
                self.delete(&join_key(prefix, name)).await?;
                report.removed.push(name.clone());
            }
        }
        Ok(report)
    }

    /// Copies everything under `prefix` into `local_dir` that is missing there or
    /// has another size, data first and `.json` sidecars last, each file atomically.
    /// Local files the store lacks are left alone.
    pub async fn sync_down(&self, prefix: &str, local_dir: &Path) -> ArtifactResult<SyncReport> {
        let remote = self.remote_files(prefix).await?;
        let local: BTreeMap<String, u64> = local_files(local_dir)
            .await?
            .into_iter()
            .map(|f| (f.name, f.size))
            .collect();
        let mut names: Vec<(&String, &u64)> = remote.iter().collect();
        names.sort_by(|a, b| copy_order(a.0).cmp(&copy_order(b.0)));
        let mut report = SyncReport::default();
        for (name, size) in names {
            if local.get(name) == Some(size) {
                report.unchanged += 1;
                continue;
            }
            report.bytes += self
                .get_file(&join_key(prefix, name), &local_dir.join(name))
                .await?;
            report.transferred.push(name.clone());
        }
        Ok(report)
    }

    /// The newest complete checkpoint of a job in the store.
    pub async fn latest_checkpoint(
        &self,
        sweep: &str,
        job: Uuid,
    ) -> ArtifactResult<Option<RemoteCheckpoint>> {
        self.latest_checkpoint_under(&Artifacts::job_prefix(sweep, job))
            .await
    }

    /// The newest complete checkpoint directly under `prefix`.
    pub async fn latest_checkpoint_under(
        &self,
        prefix: &str,
    ) -> ArtifactResult<Option<RemoteCheckpoint>> {
        let remote = self.remote_files(prefix).await?;
        let newest = complete_epochs(remote.keys().map(String::as_str))
            .last()
            .copied();
        Ok(newest.map(|epoch| {
            let [weights, optimizer, sidecar] = checkpoint_file_names(epoch);
            RemoteCheckpoint {
                epoch,
                weights: join_key(prefix, &weights),
                optimizer: join_key(prefix, &optimizer),
                sidecar: join_key(prefix, &sidecar),
            }
        }))
    }

    /// Fetches the newest complete checkpoint under `prefix` into `local_dir`
    /// (weights and optimizer, then the sidecar), skipping files already there with
    /// the right size. What a downstream job needs from its pretext winner.
    pub async fn fetch_latest_checkpoint(
        &self,
        prefix: &str,
        local_dir: &Path,
    ) -> ArtifactResult<Option<LocalCheckpoint>> {
        let Some(remote) = self.latest_checkpoint_under(prefix).await? else {
            return Ok(None);
        };
        let [weights, optimizer, sidecar] = checkpoint_file_names(remote.epoch);
        for (key, name) in [
            (&remote.weights, &weights),
            (&remote.optimizer, &optimizer),
            (&remote.sidecar, &sidecar),
        ] {
            let local = local_dir.join(name);
            let local_size = tokio::fs::metadata(&local).await.ok().map(|m| m.len());
            if local_size.is_none() || local_size != self.size(key).await? {
                self.get_file(key, &local).await?;
            }
        }
        Ok(Some(LocalCheckpoint {
            epoch: remote.epoch,
            weights: local_dir.join(weights),
            optimizer: local_dir.join(optimizer),
            sidecar: local_dir.join(sidecar),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_names_parse_back() {
        for epoch in [0, 5, 1234, 12345] {
            let [w, o, s] = checkpoint_file_names(epoch);
            assert_eq!(checkpoint_epoch(&w), Some((epoch, false)));
            assert_eq!(checkpoint_epoch(&o), Some((epoch, false)));
            assert_eq!(checkpoint_epoch(&s), Some((epoch, true)));
        }
        assert_eq!(checkpoint_file_names(5)[0], "epoch-0005.ot");
        for other in [
            "epoch-.ot",
            "epoch-x1.ot",
            "epoch-0001.ot.tmp",
            "loss.json",
            "epoch-1",
        ] {
            assert_eq!(checkpoint_epoch(other), None, "{other}");
        }
    }

    #[test]
    fn a_checkpoint_is_complete_only_with_all_three_files() {
        let names = [
            "epoch-0001.ot",
            "epoch-0001.optim.ot",
            "epoch-0001.json",
            "epoch-0002.ot",
            "epoch-0002.json",
            "epoch-0003.ot",
            "epoch-0003.optim.ot",
            "metrics.json",
        ];
        assert_eq!(complete_epochs(names), vec![1]);
    }

    #[test]
    fn sidecars_sort_after_all_data() {
        let mut names = vec![
            "epoch-0002.json",
            "epoch-0002.ot",
            "epoch-0001.json",
            "plots/loss.svg",
            "epoch-0002.optim.ot",
            "epoch-0001.ot",
        ];
        names.sort_by(|a, b| copy_order(a).cmp(&copy_order(b)));
        assert_eq!(
            names,
            vec![
                "epoch-0001.ot",
                "epoch-0002.optim.ot",
                "epoch-0002.ot",
                "plots/loss.svg",
                "epoch-0001.json",
                "epoch-0002.json",
            ]
        );
    }
}
