//! Small ImageFolder trees for the dataset tests.
//!
//! Every image is one flat colour that names it: red = 20 × label index (in the
//! order given), green = 8 × image index (wrapping), blue = 7. The images are 6 × 4
//! pixels, so the centre crop is exercised, and a decoded image of any size is still
//! that colour.

// Each test file uses only some of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use sweeper::sweep::DatasetSpec;

/// Writes `labels` (name, image count) under `root/folder` as PNG files and returns
/// the folder. Every fifth image is a BMP, JPEG or TIFF instead, so each reader runs.
pub fn write_tree(root: &Path, folder: &str, labels: &[(&str, usize)]) -> PathBuf {
    let base = root.join(folder);
    for (label_index, (label, count)) in labels.iter().enumerate() {
        let dir = base.join(label);
        std::fs::create_dir_all(&dir).expect("create label folder");
        for index in 0..*count {
            let extension = match index % 5 {
                1 => "bmp",
                2 => "tiff",
                // JPEG is lossy; flat colours survive it within a few levels.
                3 => "jpg",
                _ => "png",
            };
            write_image(
                &dir.join(format!("img{index:04}.{extension}")),
                [20 * label_index as u8, (index as u8).wrapping_mul(8), 7],
            );
        }
    }
    base
}

pub fn write_image(path: &Path, colour: [u8; 3]) {
    image::RgbImage::from_pixel(6, 4, image::Rgb(colour))
        .save(path)
        .expect("write test image");
}

/// A spec over `folder` with everything else at its default.
pub fn spec(folder: &str) -> DatasetSpec {
    DatasetSpec {
        folder: folder.into(),
        ..DatasetSpec::default()
    }
}

/// How many entries of each label index.
pub fn label_counts(labels: impl IntoIterator<Item = usize>, label_count: usize) -> Vec<usize> {
    let mut counts = vec![0; label_count];
    for label in labels {
        counts[label] += 1;
    }
    counts
}
