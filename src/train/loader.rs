//! Batches from an in-memory [`ImageSet`]: a seeded order per epoch, the gather of
//! one batch, and [`simclr_epoch`], which prepares a pretext epoch's augmented views
//! one step ahead on a background thread.

use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor};

use super::augment::{self, AugmentConfig};
use super::data::ImageSet;

/// Pretext steps prepared ahead and not yet taken.
const PREFETCH: usize = 2;

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

/// One pretext epoch's two augmented views per step, prepared on a background thread
/// while the training step runs: gather (on the CPU), copy to the device, augment
/// there. Dropping it early stops the thread.
pub struct ViewBatches {
    receiver: Option<Receiver<(Tensor, Tensor)>>,
    loader: Option<JoinHandle<()>>,
}

/// The views of `steps` batches of `batch_size` images of `set`, in the order a
/// ChaCha generator seeded with `seed` shuffles them, augmented with draws from the
/// same generator: the same stream, and so the same views, as [`epoch_order`] then
/// [`augment::simclr_views`] on each batch in turn.
///
/// # Panics
///
/// When the OS cannot start a thread. A failure of the loader thread (a CUDA
/// out-of-memory, say) is raised again on the thread that iterates.
pub fn simclr_epoch(
    set: &ImageSet,
    batch_size: i64,
    steps: i64,
    seed: u64,
    device: Device,
    aug: &AugmentConfig,
) -> ViewBatches {
    let images = set.images.shallow_clone();
    let aug = aug.clone();
    let (sender, receiver) = mpsc::sync_channel(PREFETCH);
    let loader = std::thread::Builder::new()
        .name("view-loader".into())
        .spawn(move || {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let order = epoch_order(images.size()[0], &mut rng);
            for batch in order.chunks(batch_size as usize).take(steps as usize) {
                let idx = Tensor::from_slice(batch);
                let batch = images.index_select(0, &idx).to_device(device);
                let views = augment::simclr_views(&batch, &mut rng, &aug);
                if sender.send(views).is_err() {
                    return; // the consumer stopped early
                }
            }
        })
        // Spawning fails only when the OS is out of threads; nothing sensible remains.
        .expect("spawn the view loader thread");
    ViewBatches {
        receiver: Some(receiver),
        loader: Some(loader),
    }
}

impl Iterator for ViewBatches {
    type Item = (Tensor, Tensor);

    fn next(&mut self) -> Option<Self::Item> {
        let views = self.receiver.as_ref()?.recv().ok();
        if views.is_none() {
            self.receiver = None;
            if let Some(loader) = self.loader.take() {
                if let Err(panic) = loader.join() {
                    std::panic::resume_unwind(panic);
                }
            }
        }
        views
    }
}

impl Drop for ViewBatches {
    fn drop(&mut self) {
        // Closing the channel first makes a loader blocked on `send` return.
        self.receiver = None;
        if let Some(loader) = self.loader.take() {
            // Its panic, if any, has nowhere to go while dropping.
            let _ = loader.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    /// The prefetched views are exactly those of the same stream drawn in line.
    #[test]
    fn prefetched_views_match_views_drawn_in_line() {
        let set = ImageSet {
            images: Tensor::randint(256, [20, 3, 8, 8], (Kind::Uint8, Device::Cpu)),
            labels: Tensor::zeros([20], (Kind::Int64, Device::Cpu)),
            label_names: vec!["only".into()],
            skipped: Vec::new(),
        };
        let aug = AugmentConfig::simclr(8, None);
        let prefetched: Vec<(Tensor, Tensor)> =
            simclr_epoch(&set, 6, 3, 42, Device::Cpu, &aug).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let order = epoch_order(20, &mut rng);
        assert_eq!(prefetched.len(), 3, "the last partial batch is dropped");
        for (step, (v1, v2)) in prefetched.iter().enumerate() {
            let (images, _) = gather(&set, &order[step * 6..(step + 1) * 6], Device::Cpu);
            let (e1, e2) = augment::simclr_views(&images, &mut rng, &aug);
            assert!(v1.equal(&e1) && v2.equal(&e2), "step {step}");
        }
        // Stopping early does not hang on the loader.
        let mut early = simclr_epoch(&set, 2, 10, 1, Device::Cpu, &aug);
        assert!(early.next().is_some());
        drop(early);
    }
}
