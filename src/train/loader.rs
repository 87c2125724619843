//! Batches from an in-memory [`ImageSet`]: a seeded order per epoch and the gather of
//! one batch. (Kept to this one small surface so a prefetching loader can replace it.)

use rand::seq::SliceRandom;
use rand::Rng;
use tch::{Device, Tensor};

use super::data::ImageSet;

/// A shuffled order of `n` indices.
pub fn epoch_order(n: i64, rng: &mut impl Rng) -> Vec<i64> {
    let mut order: Vec<i64> = (0..n).collect();
    order.shuffle(rng);
    order
}

/// The images (uint8) and labels at `indices`, moved to `device`.
pub fn gather(set: &ImageSet, indices: &[i64], device: Device) -> (Tensor, Tensor) {
    let idx = Tensor::from_slice(indices);
    let images = set.images.index_select(0, &idx).to_device(device);
    let labels = set.labels.index_select(0, &idx).to_device(device);
    (images, labels)
}

/// Contiguous batches of `batch_size` over `0..n` in order (the last may be short).
pub fn sequential(n: i64, batch_size: i64) -> impl Iterator<Item = Vec<i64>> {
    (0..n)
        .step_by(batch_size.max(1) as usize)
        .map(move |start| (start..(start + batch_size).min(n)).collect())
}

/// Splits `fraction` of `set` off, seeded, as a validation set: `(rest, validation)`.
pub fn split_off(set: &ImageSet, fraction: f64, rng: &mut impl Rng) -> (ImageSet, ImageSet) {
    let n = set.labels.size()[0];
    let order = epoch_order(n, rng);
    let held = ((n as f64 * fraction).round() as i64).clamp(1.min(n), n);
    let (val, rest) = order.split_at(held as usize);
    let take = |idx: &[i64]| {
        let t = Tensor::from_slice(idx);
        ImageSet {
            images: set.images.index_select(0, &t),
            labels: set.labels.index_select(0, &t),
            label_names: set.label_names.clone(),
            skipped: Vec::new(),
        }
    };
    (take(rest), take(val))
}
