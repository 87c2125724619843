//! Datasets: ImageFolder trees filtered and split as a [`DatasetSpec`] says, decoded
//! once per (manifest, resolution) into a cache shared by every job of the machine.
//!
//! - [`folder`]: which files a spec selects, per split ([`folder::select`]), and the
//!   seeded `fraction` subset; the rules and their order are documented there.
//! - [`cache`]: decoding (RGB, centre crop of the shorter side, resize) and the shared
//!   decoded-image cache with its build lock.
//! - [`batch`]: mini-batches prepared on a background thread ([`batches`]).
//!
//! [`load`] ties them together: it selects the files of every split, opens (or
//! builds) the cache of all of them, so train, val, test and every fraction of a
//! dataset share one cache file, and picks out the requested split.

use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::sweep::DatasetSpec;
use crate::train::TrainError;

pub mod batch;
pub mod cache;
pub mod folder;

pub use batch::{batches, Batches};
pub use folder::available_splits;

/// A split fails to load when more than this share of its images cannot be decoded…
pub const MAX_SKIPPED_SHARE: f64 = 0.01;
/// …or more than this many.
pub const MAX_SKIPPED_IMAGES: usize = 20;
/// How many failing files an error names.
const NAMED_FAILURES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decoded split, in memory on the CPU.
#[derive(Debug)]
pub struct ImageSet {
    /// `uint8 [N, 3, S, S]`.
    pub images: Tensor,
    /// `int64 [N]`, indices into `label_names`.
    pub labels: Tensor,
    pub label_names: Vec<String>,
    /// Images that could not be decoded, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.size().first().map_or(0, |&n| n as usize)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The side `S` of the square images.
    pub fn image_size(&self) -> i64 {
        self.images.size().last().copied().unwrap_or(0)
    }
}

/// Which split of which dataset, at what resolution.
#[derive(Debug, Clone)]
pub struct LoadRequest<'a> {
    pub spec: &'a DatasetSpec,
    pub data_root: &'a Path,
    pub split: Split,
    pub image_size: i64,
    /// Seeded random subset of the split, in (0, 1].
    pub fraction: f64,
    pub seed: u64,
    pub cache_dir: &'a Path,
}

/// Knobs of [`load_with`]; [`load`] uses the defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// Decoding threads; 0 means one per CPU, at most 8.
    pub decode_threads: usize,
    /// See [`MAX_SKIPPED_SHARE`].
    pub max_skipped_share: f64,
    /// See [`MAX_SKIPPED_IMAGES`].
    pub max_skipped_images: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            decode_threads: 0,
            max_skipped_share: MAX_SKIPPED_SHARE,
            max_skipped_images: MAX_SKIPPED_IMAGES,
        }
    }
}

/// How [`load_with`] got its decoded images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// The cache file was there.
    Hit,
    /// Another process or thread was building it; this load waited and read its file.
    Waited,
    /// This load decoded the images (and wrote the cache file).
    Built,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("dataset folder {path} does not exist or is not a directory")]
    MissingFolder { path: PathBuf },
    #[error("the data root {root} is not reachable on this machine (not mounted?)")]
    MissingRoot { root: PathBuf },
    #[error("dataset folder {folder} has no label folders")]
    NoLabels { folder: PathBuf },
    #[error("dataset folder {folder} lacks the labels {labels:?}")]
    MissingLabels {
        folder: PathBuf,
        labels: Vec<String>,
    },
    #[error(
        "dataset folder {folder}: take_labels = {wanted}, but only {} labels are left after \
         the filters ({left:?})", left.len()
    )]
    TooFewLabels {
        folder: PathBuf,
        wanted: usize,
        left: Vec<String>,
    },
    #[error("dataset: {0}")]
    Spec(String),
    #[error(
        "{count} of the {total} images of the {split} split of {folder} could not be decoded \
         (at most {limit} may be skipped); first: {first}"
    )]
    TooManySkipped {
        folder: PathBuf,
        split: Split,
        count: usize,
        total: usize,
        limit: String,
        first: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("decoded-image cache {path} is corrupt: {reason}")]
    CorruptCache { path: PathBuf, reason: String },
    #[error("tensor: {0}")]
    Tensor(#[from] tch::TchError),
}

pub type DataResult<T> = Result<T, DataError>;

impl DataError {
    /// Whether another attempt, maybe on another machine, might succeed: a data root
    /// this machine does not reach, and I/O errors that a busy or flaky file system
    /// produces. Missing data and bad specs stay missing and bad.
    pub fn is_transient(&self) -> bool {
        use std::io::ErrorKind;
        match self {
            DataError::MissingRoot { .. } => true,
            DataError::Io { source, .. } => {
                matches!(
                    source.kind(),
                    ErrorKind::Interrupted
                        | ErrorKind::TimedOut
                        | ErrorKind::WouldBlock
                        | ErrorKind::OutOfMemory
                        | ErrorKind::ConnectionReset
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::NotConnected
                ) || matches!(source.raw_os_error(), Some(libc::ESTALE | libc::ENOSPC))
            }
            _ => false,
        }
    }
}

impl From<DataError> for TrainError {
    fn from(error: DataError) -> Self {
        if error.is_transient() {
            TrainError::Io(error.to_string())
        } else {
            TrainError::Fatal(error.to_string())
        }
    }
}

/// Loads one split with the default [`LoadOptions`].
pub fn load(req: &LoadRequest<'_>) -> DataResult<ImageSet> {
    load_with(req, &LoadOptions::default()).map(|(set, _)| set)
}

/// Loads one split: selects the files, reads or builds the decoded cache of the whole
/// dataset, takes the requested split and fraction, and leaves out (listing them in
/// [`ImageSet::skipped`]) the images that could not be decoded — failing when there
/// are too many of them.
pub fn load_with(
    req: &LoadRequest<'_>,
    options: &LoadOptions,
) -> DataResult<(ImageSet, CacheOutcome)> {
    if req.image_size < 1 {
        return Err(DataError::Spec(format!(
            "image size {} must be at least 1",
            req.image_size
        )));
    }
    if !(req.fraction > 0.0 && req.fraction <= 1.0) {
        return Err(DataError::Spec(format!(
            "data fraction {} must be in (0, 1]",
            req.fraction
        )));
    }
    let folder = req.data_root.join(&req.spec.folder);
    if !available_splits(req.spec).contains(&req.split) {
        return Err(DataError::Spec(format!(
            "{} has no {} split (split = {:?}{})",
            folder.display(),
            req.split,
            req.spec.split,
            if req.spec.test_folder.is_some() {
                ", with a test_folder"
            } else {
                ""
            }
        )));
    }

    let selection = folder::select(req.spec, req.data_root, req.seed)?;
    let entries = folder::fraction_subset(
        selection.split(req.split),
        req.fraction,
        selection.label_names.len(),
    );
    let all_paths = selection.all_paths();
    let (decoded, outcome) =
        cache::open_or_build(&all_paths, req.image_size, req.cache_dir, options)?;

    let mut rows = Vec::with_capacity(entries.len());
    let mut labels = Vec::with_capacity(entries.len());
    let mut skipped = Vec::new();
    for entry in &entries {
        // `all_paths` is sorted and holds every entry, so the search always finds it.
        let row = all_paths
            .binary_search(&entry.path)
            .expect("every selected path is in the cache");
        match &decoded.failures[row] {
            Some(reason) => skipped.push((entry.path.clone(), reason.clone())),
            None => {
                rows.push(row as i64);
                labels.push(entry.label as i64);
            }
        }
    }
    check_skipped(&skipped, entries.len(), &folder, req.split, options)?;
    if !skipped.is_empty() {
        tracing::warn!(
            "{} of the {} images of the {} split of {} could not be decoded and are left out",
            skipped.len(),
            entries.len(),
            req.split,
            folder.display()
        );
    }

    let images = decoded
        .images
        .f_index_select(0, &Tensor::f_from_slice(&rows)?)?;
    let labels = Tensor::f_from_slice(&labels)?;
    let set = ImageSet {
        images,
        labels,
        label_names: selection.label_names,
        skipped,
    };
    Ok((set, outcome))
}

fn check_skipped(
    skipped: &[(PathBuf, String)],
    total: usize,
    folder: &Path,
    split: Split,
    options: &LoadOptions,
) -> DataResult<()> {
    let too_many_share = skipped.len() as f64 > options.max_skipped_share * total as f64;
    if skipped.is_empty() || (!too_many_share && skipped.len() <= options.max_skipped_images) {
        return Ok(());
    }
    let first = skipped
        .iter()
        .take(NAMED_FAILURES)
        .map(|(path, reason)| format!("{} ({reason})", path.display()))
        .collect::<Vec<_>>()
        .join(", ");
    Err(DataError::TooManySkipped {
        folder: folder.to_path_buf(),
        split,
        count: skipped.len(),
        total,
        limit: format!(
            "{:.0}% or {}",
            options.max_skipped_share * 100.0,
            options.max_skipped_images
        ),
        first,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_data_is_fatal_and_flaky_io_retryable() {
        let missing: TrainError = DataError::MissingFolder {
            path: "/nowhere".into(),
        }
        .into();
        assert!(matches!(missing, TrainError::Fatal(ref m) if m.contains("/nowhere")));
        let not_found: TrainError = DataError::Io {
            path: "/a".into(),
            source: std::io::ErrorKind::NotFound.into(),
        }
        .into();
        assert!(!not_found.is_infrastructure());
        let stale: TrainError = DataError::Io {
            path: "/nfs/a".into(),
            source: std::io::Error::from_raw_os_error(libc::ESTALE),
        }
        .into();
        assert!(stale.is_infrastructure());
        let timed_out: TrainError = DataError::Io {
            path: "/a".into(),
            source: std::io::ErrorKind::TimedOut.into(),
        }
        .into();
        assert!(timed_out.is_infrastructure());
        let unmounted: TrainError = DataError::MissingRoot {
            root: "/mnt/data".into(),
        }
        .into();
        assert!(unmounted.is_infrastructure());
    }

    #[test]
    fn skip_threshold_is_a_share_or_a_count() {
        let options = LoadOptions::default();
        let skipped = |n: usize| -> Vec<(PathBuf, String)> {
            (0..n)
                .map(|i| (PathBuf::from(format!("img{i}.png")), "bad".into()))
                .collect()
        };
        let folder = Path::new("setA");
        assert!(check_skipped(&skipped(1), 100, folder, Split::Train, &options).is_ok());
        assert!(check_skipped(&skipped(2), 100, folder, Split::Train, &options).is_err());
        assert!(check_skipped(&skipped(20), 10_000, folder, Split::Train, &options).is_ok());
        let error = check_skipped(&skipped(21), 10_000, folder, Split::Val, &options)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("21 of the 10000 images of the val split"),
            "{error}"
        );
        assert!(
            error.contains("img0.png (bad)") && error.contains("img4.png"),
            "{error}"
        );
        assert!(
            !error.contains("img5.png"),
            "names only the first few: {error}"
        );
    }
}
