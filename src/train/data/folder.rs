//! Which files a [`DatasetSpec`] selects from an ImageFolder tree, and how they split.
//!
//! An ImageFolder is a folder with one sub-folder per label; every JPEG, PNG, TIFF or
//! BMP file below a label folder (at any depth, hidden files left out, symbolic links
//! followed) is an image of that label, each folder and file counted once however
//! many links lead to it, so a link loop cannot multiply a label. The spec's rules apply in this order:
//!
//! 1. list the label folders, sorted by name;
//! 2. `include_labels` (only these; any that is missing is an error),
//!    `exclude_labels`;
//! 3. drop labels with fewer than `min_images_per_label` images;
//! 4. `take_labels`: keep the first K, sorted by name (an error when fewer are left);
//! 5. per label, a seeded shuffle, then the `per_label` cap;
//! 6. the `max_total` cap, balanced across labels ([`balanced_quotas`]);
//! 7. the split, stratified per label: `split` ratios train/val/test (`[]` or `[1.0]`:
//!    everything is train). With a `test_folder`, the test split comes from that
//!    folder instead (the same labels, each shuffled and capped by `per_label`, then
//!    `test_max_total`, balanced) and `split` divides the rest into train/val.
//!
//! The `fraction` of a request ([`fraction_subset`]) is then taken from the requested
//! split, stratified per label.
//!
//! Every shuffle draws from a generator seeded by (seed, purpose, label name), so the
//! same (spec, seed) always yields the same images, whatever the machine, and one
//! label's images do not change when another label is added or removed.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use super::{DataError, DataResult, Split};
use crate::sweep::DatasetSpec;

/// File extensions read as images (compared without case).
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "tif", "tiff", "bmp"];

/// How far split ratios may be from summing to 1.
const RATIO_TOLERANCE: f64 = 1e-6;

/// One selected image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    /// Index into [`Selection::label_names`].
    pub label: usize,
}

/// Every split of a dataset, for one seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Selection {
    pub label_names: Vec<String>,
    pub train: Vec<Entry>,
    pub val: Vec<Entry>,
    pub test: Vec<Entry>,
}

impl Selection {
    pub fn split(&self, split: Split) -> &[Entry] {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
            Split::Test => &self.test,
        }
    }

    /// Every selected file, sorted and without duplicates: what the decoded cache holds.
    pub fn all_paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = [&self.train, &self.val, &self.test]
            .into_iter()
            .flatten()
            .map(|entry| entry.path.clone())
            .collect();
        paths.sort();
        paths.dedup();
        paths
    }
}

/// Train/val/test shares of the images left after the caps.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ratios {
    train: f64,
    val: f64,
    test: f64,
}

/// The splits a dataset defines: train always, val when `split` has a second ratio,
/// test when it has a third or a `test_folder` is set.
pub fn available_splits(spec: &DatasetSpec) -> Vec<Split> {
    let mut splits = vec![Split::Train];
    if spec.split.len() >= 2 {
        splits.push(Split::Val);
    }
    if spec.split.len() >= 3 || spec.test_folder.is_some() {
        splits.push(Split::Test);
    }
    splits
}

/// Applies every rule of the spec (see the module docs) and splits the result.
pub fn select(spec: &DatasetSpec, data_root: &Path, seed: u64) -> DataResult<Selection> {
    let ratios = ratios(spec)?;
    if !data_root.is_dir() {
        // `submit` checked the data root where it ran: missing here, it is this
        // machine's mount that is missing, not the sweep's data.
        return Err(DataError::MissingRoot {
            root: data_root.to_path_buf(),
        });
    }
    let folder = data_root.join(&spec.folder);
    let labels = filter_labels(spec, &folder, list_labels(&folder)?)?;
    let label_names: Vec<String> = labels.keys().cloned().collect();

    let capped = cap_per_label(labels, spec.per_label, seed, "train");
    let capped = cap_total(capped, spec.max_total);

    let mut selection = Selection {
        label_names: label_names.clone(),
        train: Vec::new(),
        val: Vec::new(),
        test: Vec::new(),
    };
    for (label, files) in capped.into_values().enumerate() {
        let count = files.len();
        // Cumulative boundaries, so the three parts always add up to the label's count.
        let train_end = ((count as f64 * ratios.train).round() as usize).min(count);
        let val_end = (((count as f64) * (ratios.train + ratios.val)).round() as usize)
            .clamp(train_end, count);
        for (position, path) in files.into_iter().enumerate() {
            let entry = Entry { path, label };
            if position < train_end {
                selection.train.push(entry);
            } else if position < val_end {
                selection.val.push(entry);
            } else {
                selection.test.push(entry);
            }
        }
    }

    if let Some(test_folder) = &spec.test_folder {
        let test_folder = data_root.join(test_folder);
        let mut test_labels = list_labels(&test_folder)?;
        let missing: Vec<String> = label_names
            .iter()
            .filter(|name| !test_labels.contains_key(*name))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(DataError::MissingLabels {
                folder: test_folder,
                labels: missing,
            });
        }
        test_labels.retain(|name, _| label_names.contains(name));
        let capped = cap_per_label(test_labels, spec.per_label, seed, "test");
        let capped = cap_total(capped, spec.test_max_total);
        selection.test = capped
            .into_values()
            .enumerate()
            .flat_map(|(label, files)| files.into_iter().map(move |path| Entry { path, label }))
            .collect();
    }
    Ok(selection)
}

/// A seeded random subset of `entries` with `round(fraction × len)` images (at least
/// one when `entries` is not empty), stratified per label by largest remainders.
///
/// Each label keeps a prefix of its entries, which [`select`] already shuffled with
/// the seed, so a smaller fraction takes (nearly always) a subset of a larger one.
pub fn fraction_subset(entries: &[Entry], fraction: f64, labels: usize) -> Vec<Entry> {
    if fraction >= 1.0 || entries.is_empty() {
        return entries.to_vec();
    }
    let total = entries.len();
    let wanted = ((total as f64 * fraction).round() as usize).clamp(1, total);
    let mut counts = vec![0usize; labels];
    for entry in entries {
        counts[entry.label] += 1;
    }
    let quotas = proportional_quotas(&counts, wanted);
    let mut taken = vec![0usize; labels];
    entries
        .iter()
        .filter(|entry| {
            let keep = taken[entry.label] < quotas[entry.label];
            taken[entry.label] += 1;
            keep
        })
        .cloned()
        .collect()
}

/// Splits `wanted` across labels in proportion to `counts` (largest remainder; ties
/// go to the label listed first). The quotas sum to `wanted` when `wanted` ≤ the sum.
fn proportional_quotas(counts: &[usize], wanted: usize) -> Vec<usize> {
    let total: usize = counts.iter().sum();
    if total == 0 {
        return vec![0; counts.len()];
    }
    let mut quotas: Vec<usize> = counts.iter().map(|&c| c * wanted / total).collect();
    let mut remainders: Vec<(usize, usize)> = counts
        .iter()
        .enumerate()
        .map(|(label, &c)| (c * wanted % total, label))
        .collect();
    // Largest remainder first, then the lower label index.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let short = wanted.saturating_sub(quotas.iter().sum());
    for &(_, label) in remainders.iter().take(short) {
        quotas[label] += 1;
    }
    quotas
}

/// How many images each label keeps under a total cap, balanced as far as the labels'
/// counts allow: every label gets the same share, a label with fewer images keeps all
/// of them and its unused share goes to the others; what does not divide evenly goes
/// one image each to the labels listed first.
pub fn balanced_quotas(counts: &[usize], max_total: usize) -> Vec<usize> {
    if counts.iter().sum::<usize>() <= max_total {
        return counts.to_vec();
    }
    // The largest level L with sum(min(count, L)) ≤ max_total; it exists because the
    // sum at L = 0 is 0, and it is below the largest count because the full sum is over.
    let kept_at = |level: usize| counts.iter().map(|&c| c.min(level)).sum::<usize>();
    let (mut low, mut high) = (0usize, counts.iter().copied().max().unwrap_or(0));
    while low < high {
        let mid = (low + high).div_ceil(2);
        if kept_at(mid) <= max_total {
            low = mid;
        } else {
            high = mid - 1;
        }
    }
    let mut quotas: Vec<usize> = counts.iter().map(|&c| c.min(low)).collect();
    let mut left = max_total - kept_at(low);
    for (quota, &count) in quotas.iter_mut().zip(counts) {
        if left == 0 {
            break;
        }
        if count > *quota {
            *quota += 1;
            left -= 1;
        }
    }
    quotas
}

fn ratios(spec: &DatasetSpec) -> DataResult<Ratios> {
    let bad = |why: String| DataError::Spec(format!("split {:?}: {why}", spec.split));
    if spec.split.iter().any(|r| !r.is_finite() || *r < 0.0) {
        return Err(bad("ratios must be finite and not negative".into()));
    }
    let sum: f64 = spec.split.iter().sum();
    if !spec.split.is_empty() && (sum - 1.0).abs() > RATIO_TOLERANCE {
        return Err(bad(format!("ratios sum to {sum}, not 1")));
    }
    match (spec.split.as_slice(), &spec.test_folder) {
        ([] | [_], _) => Ok(Ratios {
            train: 1.0,
            val: 0.0,
            test: 0.0,
        }),
        ([train, val], _) => Ok(Ratios {
            train: *train,
            val: *val,
            test: 0.0,
        }),
        ([_, _, _], Some(test_folder)) => Err(bad(format!(
            "three ratios, but the test split comes from test_folder {}; give train/val only",
            test_folder.display()
        ))),
        ([train, val, test], None) => Ok(Ratios {
            train: *train,
            val: *val,
            test: *test,
        }),
        _ => Err(bad("at most three ratios (train/val/test)".into())),
    }
}

/// The label folders of `folder` with their image files, both sorted.
fn list_labels(folder: &Path) -> DataResult<BTreeMap<String, Vec<PathBuf>>> {
    if !folder.is_dir() {
        return Err(DataError::MissingFolder {
            path: folder.to_path_buf(),
        });
    }
    let mut labels = BTreeMap::new();
    for dir_entry in read_dir(folder)? {
        let path = dir_entry.path();
        let name = dir_entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !path.is_dir() {
            continue;
        }
        let mut files = Vec::new();
        let mut seen = Seen::default();
        collect_images(&path, &mut files, &mut seen)?;
        files.sort();
        labels.insert(name, files);
    }
    if labels.is_empty() {
        return Err(DataError::NoLabels {
            folder: folder.to_path_buf(),
        });
    }
    Ok(labels)
}

/// What one label's walk has visited, by canonical path: a folder reached twice (a
/// symbolic link to an ancestor, or two links to one folder) is read once, and a file
/// reached twice counts once.
#[derive(Default)]
struct Seen {
    dirs: HashSet<PathBuf>,
    files: HashSet<PathBuf>,
}

fn collect_images(dir: &Path, files: &mut Vec<PathBuf>, seen: &mut Seen) -> DataResult<()> {
    let canonical = std::fs::canonicalize(dir).map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    if !seen.dirs.insert(canonical) {
        tracing::debug!(dir = %dir.display(), "folder already read through another path; skipped");
        return Ok(());
    }
    // By name, so that which path of a file reached twice is kept never depends on
    // the order the file system lists a folder in.
    let mut entries = read_dir(dir)?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for dir_entry in entries {
        let path = dir_entry.path();
        if dir_entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect_images(&path, files, seen)?;
        } else if is_image(&path) {
            // A dangling link is kept as it is: decoding reports it like any bad file.
            let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if seen.files.insert(canonical) {
                files.push(path);
            }
        }
    }
    Ok(())
}

fn read_dir(dir: &Path) -> DataResult<Vec<std::fs::DirEntry>> {
    let io_error = |source| DataError::Io {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::read_dir(dir)
        .map_err(io_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_error)
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|extension| extension.to_str())
        .is_some_and(|extension| {
            IMAGE_EXTENSIONS
                .iter()
                .any(|known| known.eq_ignore_ascii_case(extension))
        })
}

/// Steps 2 to 4 of the module docs.
fn filter_labels(
    spec: &DatasetSpec,
    folder: &Path,
    mut labels: BTreeMap<String, Vec<PathBuf>>,
) -> DataResult<BTreeMap<String, Vec<PathBuf>>> {
    if let Some(include) = &spec.include_labels {
        let missing: Vec<String> = include
            .iter()
            .filter(|name| !labels.contains_key(*name))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(DataError::MissingLabels {
                folder: folder.to_path_buf(),
                labels: missing,
            });
        }
        labels.retain(|name, _| include.contains(name));
    }
    labels.retain(|name, _| !spec.exclude_labels.contains(name));
    if let Some(min_images) = spec.min_images_per_label {
        labels.retain(|_, files| files.len() >= min_images);
    }
    if let Some(take) = spec.take_labels {
        if labels.len() < take {
            return Err(DataError::TooFewLabels {
                folder: folder.to_path_buf(),
                wanted: take,
                left: labels.keys().cloned().collect(),
            });
        }
        // BTreeMap iterates in name order, so this keeps the first K by name.
        labels = labels.into_iter().take(take).collect();
    }
    Ok(labels)
}

/// Step 5: shuffles each label's files with its own seeded generator, then caps them.
fn cap_per_label(
    labels: BTreeMap<String, Vec<PathBuf>>,
    per_label: Option<usize>,
    seed: u64,
    purpose: &str,
) -> BTreeMap<String, Vec<PathBuf>> {
    labels
        .into_iter()
        .map(|(name, mut files)| {
            files.shuffle(&mut label_rng(seed, purpose, &name));
            if let Some(cap) = per_label {
                files.truncate(cap);
            }
            (name, files)
        })
        .collect()
}

fn cap_total(
    labels: BTreeMap<String, Vec<PathBuf>>,
    max_total: Option<usize>,
) -> BTreeMap<String, Vec<PathBuf>> {
    let Some(max_total) = max_total else {
        return labels;
    };
    let counts: Vec<usize> = labels.values().map(Vec::len).collect();
    let quotas = balanced_quotas(&counts, max_total);
    labels
        .into_iter()
        .zip(quotas)
        .map(|((name, mut files), quota)| {
            files.truncate(quota);
            (name, files)
        })
        .collect()
}

/// A generator for one label and purpose, from the dataset seed. Hashing keeps the
/// streams of different labels independent and stable across platforms.
fn label_rng(seed: u64, purpose: &str, label: &str) -> ChaCha8Rng {
    let mut hasher = Sha256::new();
    hasher.update(seed.to_le_bytes());
    hasher.update(purpose.as_bytes());
    hasher.update([0u8]);
    hasher.update(label.as_bytes());
    ChaCha8Rng::from_seed(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_quotas_fill_up_from_small_labels() {
        assert_eq!(balanced_quotas(&[10, 10, 10], 30), vec![10, 10, 10]);
        assert_eq!(balanced_quotas(&[10, 10, 10], 100), vec![10, 10, 10]);
        assert_eq!(balanced_quotas(&[10, 10, 10], 9), vec![3, 3, 3]);
        assert_eq!(balanced_quotas(&[10, 10, 10], 11), vec![4, 4, 3]);
        // The small label keeps all 2; the 16 left split 8/8.
        assert_eq!(balanced_quotas(&[2, 50, 50], 18), vec![2, 8, 8]);
        assert_eq!(balanced_quotas(&[2, 50, 5, 50], 20), vec![2, 7, 5, 6]);
        assert_eq!(balanced_quotas(&[4, 4], 0), vec![0, 0]);
    }

    #[test]
    fn proportional_quotas_sum_to_the_target() {
        assert_eq!(proportional_quotas(&[10, 10, 10], 12), vec![4, 4, 4]);
        assert_eq!(proportional_quotas(&[10, 20, 30], 30), vec![5, 10, 15]);
        // Shares (1.71, 1.71, 0.57): floors (1, 1, 0), the two images left go to the
        // largest remainders, the first two labels.
        assert_eq!(proportional_quotas(&[3, 3, 1], 4), vec![2, 2, 0]);
        for wanted in 0..=7 {
            assert_eq!(
                proportional_quotas(&[3, 3, 1], wanted)
                    .iter()
                    .sum::<usize>(),
                wanted
            );
        }
    }

    #[test]
    fn ratios_accept_one_two_or_three_parts() {
        let mut spec = DatasetSpec::default();
        assert_eq!(ratios(&spec).unwrap().train, 1.0);
        spec.split = vec![0.7, 0.15, 0.15];
        assert_eq!(ratios(&spec).unwrap().test, 0.15);
        spec.split = vec![0.7, 0.2];
        assert!(matches!(ratios(&spec), Err(DataError::Spec(_))));
        spec.test_folder = Some("test".into());
        spec.split = vec![0.7, 0.15, 0.15];
        let error = ratios(&spec).unwrap_err().to_string();
        assert!(error.contains("test_folder"), "{error}");
    }

    #[test]
    fn image_extensions_ignore_case() {
        assert!(is_image(Path::new("a/b.JPG")));
        assert!(is_image(Path::new("a/b.tiff")));
        assert!(!is_image(Path::new("a/b.txt")));
        assert!(!is_image(Path::new("a/jpg")));
    }
}
