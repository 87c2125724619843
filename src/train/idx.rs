//! Real images for the science checks and the accuracy benchmark: IDX files (the
//! format MNIST and Fashion-MNIST ship in, gzipped or not) written out as an
//! ImageFolder tree of three disjoint parts.
//!
//! ```text
//! OUT/pretext/<label>/*.png    the first P images of each label in the training file
//! OUT/labelled/<label>/*.png   the next L images of each label: the linear protocol's
//!                              train and validation images, none seen by the pretext
//! OUT/test/<label>/*.png       the first T images of each label in the test file
//! ```
//!
//! Images are taken in file order, so the same files and counts give the same tree.
//! Debian's `dataset-fashion-mnist` installs such files under
//! `/usr/share/datasets/fashion-mnist`.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The class names of Fashion-MNIST, in label order (its README).
pub const FASHION_MNIST_LABELS: [&str; 10] = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle_boot",
];

/// IDX magic numbers: unsigned bytes, with 3 dimensions (images) or 1 (labels).
const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// How many images of each label each part gets, and the label folders' names.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxSplit {
    pub pretext_per_label: usize,
    pub labelled_per_label: usize,
    pub test_per_label: usize,
    /// Folder names by label number; `0`, `1`, … when empty.
    pub label_names: Vec<String>,
}

/// Grayscale images of one IDX file pair.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxImages {
    pub rows: usize,
    pub columns: usize,
    /// `rows × columns` bytes per image, row-major.
    pub pixels: Vec<u8>,
    pub labels: Vec<u8>,
}

impl IdxImages {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    fn image(&self, index: usize) -> &[u8] {
        let size = self.rows * self.columns;
        &self.pixels[index * size..(index + 1) * size]
    }
}

/// What [`write_folders`] wrote: images per part.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IdxSummary {
    pub pretext: usize,
    pub labelled: usize,
    pub test: usize,
}

fn invalid(path: &Path, message: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}: {message}", path.display()),
    )
}

/// The file's bytes, gunzipped when it starts with gzip's magic.
fn read_maybe_gzipped(path: &Path) -> io::Result<Vec<u8>> {
    let mut raw = Vec::new();
    File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?
        .read_to_end(&mut raw)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| invalid(path, format!("not valid gzip: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(bytes: &[u8], at: usize, path: &Path) -> io::Result<usize> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| invalid(path, "truncated header"))
}

/// Reads an images file and its labels file, checking magic numbers and sizes.
pub fn read_pair(images: &Path, labels: &Path) -> io::Result<IdxImages> {
    let image_bytes = read_maybe_gzipped(images)?;
    if be_u32(&image_bytes, 0, images)? != IMAGES_MAGIC as usize {
        return Err(invalid(images, "not an IDX file of unsigned-byte images"));
    }
    let (count, rows, columns) = (
        be_u32(&image_bytes, 4, images)?,
        be_u32(&image_bytes, 8, images)?,
        be_u32(&image_bytes, 12, images)?,
    );
    let pixels = image_bytes[16..].to_vec();
    if pixels.len() != count * rows * columns {
        return Err(invalid(
            images,
            format!(
                "{count} images of {rows}×{columns} need {} bytes, the file has {}",
                count * rows * columns,
                pixels.len()
            ),
        ));
    }
    let label_bytes = read_maybe_gzipped(labels)?;
    if be_u32(&label_bytes, 0, labels)? != LABELS_MAGIC as usize {
        return Err(invalid(labels, "not an IDX file of unsigned-byte labels"));
    }
    let label_count = be_u32(&label_bytes, 4, labels)?;
    let label_values = label_bytes[8..].to_vec();
    if label_count != count || label_values.len() != count {
        return Err(invalid(
            labels,
            format!(
                "{} labels for {count} images in {}",
                label_values.len(),
                images.display()
            ),
        ));
    }
    Ok(IdxImages {
        rows,
        columns,
        pixels,
        labels: label_values,
    })
}

/// The images and labels file of `part` (`train` or `t10k`) in `dir`, gzipped or not.
fn pair_in(dir: &Path, part: &str) -> io::Result<(PathBuf, PathBuf)> {
    let find = |stem: String| -> io::Result<PathBuf> {
        [format!("{stem}.gz"), stem.clone()]
            .into_iter()
            .map(|name| dir.join(name))
            .find(|path| path.is_file())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{}: no {stem} (or {stem}.gz)", dir.display()),
                )
            })
    };
    Ok((
        find(format!("{part}-images-idx3-ubyte"))?,
        find(format!("{part}-labels-idx1-ubyte"))?,
    ))
}

/// Writes `out/{pretext,labelled,test}/<label>/NNNNN.png` from the IDX files in `dir`
/// (`train-*` and `t10k-*`). A label with too few images is an error naming it.
pub fn write_folders(dir: &Path, out: &Path, split: &IdxSplit) -> io::Result<IdxSummary> {
    let (train_images, train_labels) = pair_in(dir, "train")?;
    let (test_images, test_labels) = pair_in(dir, "t10k")?;
    let train = read_pair(&train_images, &train_labels)?;
    let test = read_pair(&test_images, &test_labels)?;
    let mut summary = IdxSummary::default();
    let parts = [
        (&train, &train_images, 0, split.pretext_per_label, "pretext"),
        (
            &train,
            &train_images,
            split.pretext_per_label,
            split.labelled_per_label,
            "labelled",
        ),
        (&test, &test_images, 0, split.test_per_label, "test"),
    ];
    for (set, source, skip, take, part) in parts {
        let written = write_part(set, source, skip, take, &out.join(part), &split.label_names)?;
        match part {
            "pretext" => summary.pretext = written,
            "labelled" => summary.labelled = written,
            _ => summary.test = written,
        }
    }
    Ok(summary)
}

/// Writes images `skip..skip + take` of every label, in file order, into `folder`.
fn write_part(
    set: &IdxImages,
    source: &Path,
    skip: usize,
    take: usize,
    folder: &Path,
    names: &[String],
) -> io::Result<usize> {
    let classes = set
        .labels
        .iter()
        .copied()
        .max()
        .map_or(0, |m| m as usize + 1);
    let name = |label: usize| {
        names
            .get(label)
            .cloned()
            .unwrap_or_else(|| label.to_string())
    };
    let mut seen = vec![0usize; classes];
    let mut written = 0;
    for index in 0..set.len() {
        let label = set.labels[index] as usize;
        let position = seen[label];
        seen[label] += 1;
        if position < skip || position >= skip + take {
            continue;
        }
        let label_folder = folder.join(name(label));
        std::fs::create_dir_all(&label_folder)?;
        let path = label_folder.join(format!("{index:05}.png"));
        image::save_buffer(
            &path,
            set.image(index),
            set.columns as u32,
            set.rows as u32,
            image::ExtendedColorType::L8,
        )
        .map_err(|e| io::Error::other(format!("{}: {e}", path.display())))?;
        written += 1;
    }
    for (label, count) in seen.iter().enumerate() {
        if *count < skip + take {
            return Err(invalid(
                source,
                format!(
                    "label {} has {count} images, {} wanted for {}",
                    name(label),
                    skip + take,
                    folder.display()
                ),
            ));
        }
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IDX pair of `count` 2×3 images whose pixels are their index and whose
    /// labels cycle through 0, 1, 2.
    fn write_pair(dir: &Path, part: &str, count: usize) {
        let mut images = vec![0, 0, 8, 3];
        for value in [count as u32, 2, 3] {
            images.extend(value.to_be_bytes());
        }
        let mut labels = vec![0, 0, 8, 1];
        labels.extend((count as u32).to_be_bytes());
        for index in 0..count {
            images.extend([index as u8; 6]);
            labels.push((index % 3) as u8);
        }
        std::fs::write(dir.join(format!("{part}-images-idx3-ubyte")), images).unwrap();
        let gz = File::create(dir.join(format!("{part}-labels-idx1-ubyte.gz"))).unwrap();
        let mut encoder = flate2::write::GzEncoder::new(gz, flate2::Compression::fast());
        io::Write::write_all(&mut encoder, &labels).unwrap();
        encoder.finish().unwrap();
    }

    #[test]
    fn parts_are_disjoint_slices_in_file_order() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "train", 12);
        write_pair(dir.path(), "t10k", 6);
        let out = dir.path().join("out");
        let split = IdxSplit {
            pretext_per_label: 2,
            labelled_per_label: 1,
            test_per_label: 2,
            label_names: vec!["a".into(), "b".into()],
        };
        let summary = write_folders(dir.path(), &out, &split).unwrap();
        assert_eq!(
            summary,
            IdxSummary {
                pretext: 6,
                labelled: 3,
                test: 6
            }
        );
        // Label 0 is at indices 0, 3, 6, 9: pretext takes 0 and 3, labelled 6.
        assert!(out.join("pretext/a/00000.png").is_file());
        assert!(out.join("pretext/a/00003.png").is_file());
        assert!(out.join("labelled/a/00006.png").is_file());
        assert!(!out.join("labelled/a/00009.png").exists());
        // Unnamed labels fall back to their number.
        assert!(out.join("labelled/2/00008.png").is_file());
        let image = image::open(out.join("labelled/a/00006.png"))
            .unwrap()
            .to_luma8();
        assert_eq!(image.dimensions(), (3, 2));
        assert!(image.pixels().all(|p| p.0 == [6]));
    }

    #[test]
    fn too_few_images_of_a_label_names_it() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "train", 12);
        write_pair(dir.path(), "t10k", 6);
        let split = IdxSplit {
            pretext_per_label: 3,
            labelled_per_label: 2,
            test_per_label: 1,
            label_names: vec![],
        };
        let error = write_folders(dir.path(), &dir.path().join("out"), &split).unwrap_err();
        assert!(
            error.to_string().contains("label 0 has 4 images, 5 wanted"),
            "{error}"
        );
    }

    #[test]
    fn a_truncated_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_pair(dir.path(), "train", 4);
        let images = dir.path().join("train-images-idx3-ubyte");
        let bytes = std::fs::read(&images).unwrap();
        std::fs::write(&images, &bytes[..bytes.len() - 1]).unwrap();
        let labels = dir.path().join("train-labels-idx1-ubyte.gz");
        let error = read_pair(&images, &labels).unwrap_err();
        assert!(
            error.to_string().contains("need 24 bytes, the file has 23"),
            "{error}"
        );
    }
}
