//! Datasets: ImageFolder trees filtered and split as a [`DatasetSpec`] says, decoded
//! once per (manifest, resolution) into a cache shared by every job of the machine.

use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::sweep::DatasetSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
    Test,
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

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{0}")]
    Missing(String),
}

pub type DataResult<T> = Result<T, DataError>;

pub fn load(req: &LoadRequest<'_>) -> DataResult<ImageSet> {
    Err(DataError::Missing(format!(
        "dataset loading is not implemented yet ({})",
        req.data_root.join(&req.spec.folder).display()
    )))
}
