//! What produced a number: the code, libtorch, the device, the host and the data of
//! each attempt, stored beside it (`attempts.provenance`) and summarised by `report`.
//!
//! The dataset's fingerprint is the list of its selected files with their sizes and a
//! content hash of an evenly spaced sample of them; it is computed once per dataset
//! and kept beside the decoded cache, so a sweep of a hundred jobs reads the sample
//! once.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Files whose bytes go into the content hash: enough to tell two copies of a
/// dataset apart when a file was re-encoded, few enough to read in a moment.
pub const CONTENT_SAMPLE: usize = 64;

/// Everything recorded for one attempt of a job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// `CARGO_PKG_VERSION` of the binary that ran the attempt.
    pub sweeper_version: String,
    /// The commit it was built from, where it was built in a git checkout.
    #[serde(default)]
    pub commit: Option<String>,
    #[serde(default)]
    pub libtorch: Option<String>,
    /// The CUDA version libtorch was built against.
    #[serde(default)]
    pub cuda: Option<String>,
    #[serde(default)]
    pub cudnn: Option<String>,
    /// `cpu` or `cuda:N`.
    #[serde(default)]
    pub device: String,
    /// The GPU model (`NVIDIA H200`) or `CPU`.
    #[serde(default)]
    pub device_name: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub dataset: Option<DataFingerprint>,
    /// For a row brought in by `import`: the file it came from.
    #[serde(default)]
    pub imported_from: Option<String>,
}

impl Provenance {
    /// The binary's own part: its version and commit.
    pub fn of_this_build() -> Provenance {
        Provenance {
            sweeper_version: env!("CARGO_PKG_VERSION").to_owned(),
            commit: option_env!("SWEEPER_COMMIT")
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
            ..Provenance::default()
        }
    }

    /// `0.1.0 (abc123def456)`.
    pub fn code(&self) -> String {
        match &self.commit {
            Some(commit) => format!("{} ({commit})", self.sweeper_version),
            None => self.sweeper_version.clone(),
        }
    }
}

/// What identifies a dataset's selected files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFingerprint {
    pub files: usize,
    pub bytes: u64,
    /// SHA-256 of the relative paths and sizes, in sorted order.
    pub list_sha256: String,
    /// SHA-256 of the bytes of [`CONTENT_SAMPLE`] evenly spaced files.
    pub content_sha256: String,
    pub sampled: usize,
}

impl DataFingerprint {
    /// Short enough for a table: the first 12 hex digits of both hashes.
    pub fn short(&self) -> String {
        format!(
            "{} files, {}/{}",
            self.files,
            &self.list_sha256[..12.min(self.list_sha256.len())],
            &self.content_sha256[..12.min(self.content_sha256.len())]
        )
    }
}

/// The fingerprint of `paths` (files under `root`), read from `cache_dir` when a
/// fingerprint of the same list, sizes and modification times is there.
pub fn fingerprint(
    root: &Path,
    paths: &[PathBuf],
    cache_dir: &Path,
) -> std::io::Result<DataFingerprint> {
    let mut sorted: Vec<&PathBuf> = paths.iter().collect();
    sorted.sort();
    let mut list = Sha256::new();
    let mut stamp = Sha256::new();
    let mut sizes = Vec::with_capacity(sorted.len());
    for path in &sorted {
        let meta = std::fs::metadata(path)?;
        let relative = path.strip_prefix(root).unwrap_or(path);
        list.update(relative.as_os_str().as_encoded_bytes());
        list.update([0u8]);
        list.update(meta.len().to_le_bytes());
        stamp.update(path.as_os_str().as_encoded_bytes());
        stamp.update(meta.len().to_le_bytes());
        let modified = meta
            .modified()
            .ok()
            .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |since| since.as_nanos());
        stamp.update(modified.to_le_bytes());
        sizes.push(meta.len());
    }
    let cached = cache_dir.join(format!(
        "{}.fingerprint.json",
        hex::encode(&stamp.finalize()[..16])
    ));
    if let Some(found) = std::fs::read(&cached)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<DataFingerprint>(&bytes).ok())
    {
        return Ok(found);
    }
    let mut content = Sha256::new();
    let sample = sample_indices(sorted.len(), CONTENT_SAMPLE);
    let mut buffer = Vec::new();
    for &index in &sample {
        buffer.clear();
        std::fs::File::open(sorted[index])?.read_to_end(&mut buffer)?;
        content.update((buffer.len() as u64).to_le_bytes());
        content.update(&buffer);
    }
    let found = DataFingerprint {
        files: sorted.len(),
        bytes: sizes.iter().sum(),
        list_sha256: hex::encode(list.finalize()),
        content_sha256: hex::encode(content.finalize()),
        sampled: sample.len(),
    };
    // Best effort: a fingerprint not cached is computed again next time.
    if std::fs::create_dir_all(cache_dir).is_ok() {
        if let Ok(bytes) = serde_json::to_vec(&found) {
            let partial = cached.with_extension("json.partial");
            if std::fs::write(&partial, bytes).is_ok() {
                let _ = std::fs::rename(&partial, &cached);
            }
        }
    }
    Ok(found)
}

/// `count` indices spread evenly over `0..len` (all of them when `len <= count`).
fn sample_indices(len: usize, count: usize) -> Vec<usize> {
    if len <= count {
        return (0..len).collect();
    }
    (0..count).map(|i| i * len / count).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_is_spread_and_complete_for_small_sets() {
        assert_eq!(sample_indices(3, 64), [0, 1, 2]);
        let spread = sample_indices(1000, 4);
        assert_eq!(spread, [0, 250, 500, 750]);
    }

    #[test]
    fn a_changed_byte_or_file_changes_the_fingerprint() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let root = dir.path().join("data");
        std::fs::create_dir_all(root.join("a")).expect("a folder");
        let files: Vec<PathBuf> = (0..3)
            .map(|i| root.join("a").join(format!("{i}.png")))
            .collect();
        for (i, file) in files.iter().enumerate() {
            std::fs::write(file, vec![i as u8; 10 + i]).expect("a file");
        }
        let cache = dir.path().join("cache");
        let first = fingerprint(&root, &files, &cache).expect("a fingerprint");
        assert_eq!((first.files, first.bytes, first.sampled), (3, 33, 3));
        assert_eq!(fingerprint(&root, &files, &cache).expect("cached"), first);
        // Same size, other bytes: the list hash stays, the content hash moves.
        // (A fresh cache: the file's time may not have moved within the clock's tick.)
        std::fs::write(&files[1], vec![9u8; 11]).expect("rewritten");
        let edited = fingerprint(&root, &files, &dir.path().join("cache2")).expect("a fingerprint");
        assert_eq!(edited.list_sha256, first.list_sha256);
        assert_ne!(edited.content_sha256, first.content_sha256);
        let fewer = fingerprint(&root, &files[..2], &cache).expect("a fingerprint");
        assert_ne!(fewer.list_sha256, first.list_sha256);
        // The same files under another root give the same fingerprint.
        let moved = dir.path().join("moved");
        std::fs::rename(&root, &moved).expect("moved");
        let files: Vec<PathBuf> = files
            .iter()
            .map(|f| moved.join(f.strip_prefix(&root).unwrap()))
            .collect();
        assert_eq!(
            fingerprint(&moved, &files, &cache)
                .expect("a fingerprint")
                .list_sha256,
            edited.list_sha256
        );
    }
}
