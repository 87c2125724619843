//! Mini-batches of an [`ImageSet`], prepared one step ahead on a background thread.
//!
//! While the training step runs on batch `k`, a loader thread gathers batch `k + 1`
//! (`index_select` on the CPU) and moves it to the training device (through pinned
//! memory with a non-blocking copy on CUDA). A bounded channel of two keeps at most
//! two batches in flight, so memory stays flat whatever the epoch size.

use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor};

use super::ImageSet;

/// Batches prepared ahead and not yet taken.
const PREFETCH: usize = 2;

/// An epoch's batches: `(uint8 [B, 3, S, S], int64 [B])`, both on the device.
///
/// Dropping it early stops the loader thread.
pub struct Batches {
    receiver: Option<Receiver<(Tensor, Tensor)>>,
    loader: Option<JoinHandle<()>>,
    remaining: usize,
}

/// One epoch over `set` in batches of `batch_size`: in order, or shuffled by a
/// generator seeded with `shuffle`. Without `drop_last` the last batch may be smaller.
///
/// # Panics
///
/// When `batch_size` < 1 (the sweep checker refuses it before a job exists). A
/// failure of the loader thread (a CUDA out-of-memory while copying, say) is raised
/// again on the thread that iterates.
pub fn batches(
    set: &ImageSet,
    batch_size: i64,
    shuffle: Option<u64>,
    drop_last: bool,
    device: Device,
) -> Batches {
    assert!(
        batch_size >= 1,
        "batch size {batch_size} must be at least 1"
    );
    let count = set.len();
    let batch_size = batch_size as usize;
    let mut order: Vec<i64> = (0..count as i64).collect();
    if let Some(seed) = shuffle {
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    }
    let batch_count = if drop_last {
        count / batch_size
    } else {
        count.div_ceil(batch_size)
    };
    order.truncate(batch_count * batch_size);

    // New handles on the same storage: the loader only reads it.
    let images = set.images.shallow_clone();
    let labels = set.labels.shallow_clone();
    let (sender, receiver) = mpsc::sync_channel(PREFETCH);
    let loader = std::thread::Builder::new()
        .name("batch-loader".into())
        .spawn(move || {
            for indices in order.chunks(batch_size) {
                let indices = Tensor::from_slice(indices);
                let batch = (
                    to_device(images.index_select(0, &indices), device),
                    to_device(labels.index_select(0, &indices), device),
                );
                if sender.send(batch).is_err() {
                    // The consumer dropped its `Batches`: stop early.
                    return;
                }
            }
        })
        // Spawning fails only when the OS is out of threads; nothing sensible remains.
        .expect("spawn the batch loader thread");
    Batches {
        receiver: Some(receiver),
        loader: Some(loader),
        remaining: batch_count,
    }
}

fn to_device(tensor: Tensor, device: Device) -> Tensor {
    match device {
        Device::Cpu => tensor,
        // Pinned memory lets the copy run asynchronously; the caching host allocator
        // keeps the pinned block alive until the copy has finished.
        _ => tensor
            .pin_memory(device)
            .to_device_(device, tensor.kind(), true, false),
    }
}

impl Batches {
    /// Batches left in this epoch.
    pub fn remaining(&self) -> usize {
        self.remaining
    }

    /// Joins the loader; re-raises its panic here, so a failed copy is not mistaken
    /// for the end of the epoch.
    fn join_loader(&mut self) {
        if let Some(loader) = self.loader.take() {
            if let Err(panic) = loader.join() {
                std::panic::resume_unwind(panic);
            }
        }
    }
}

impl Iterator for Batches {
    type Item = (Tensor, Tensor);

    fn next(&mut self) -> Option<Self::Item> {
        let batch = self.receiver.as_ref()?.recv().ok();
        match batch {
            Some(batch) => {
                self.remaining = self.remaining.saturating_sub(1);
                Some(batch)
            }
            None => {
                self.receiver = None;
                self.join_loader();
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Batches {}

impl Drop for Batches {
    fn drop(&mut self) {
        // Closing the channel first makes a loader blocked on `send` return.
        self.receiver = None;
        if let Some(loader) = self.loader.take() {
            // Its panic, if any, has nowhere to go while dropping.
            let _ = loader.join();
        }
    }
}

impl std::fmt::Debug for Batches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batches")
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn numbered_set(count: i64) -> ImageSet {
        // Image i is filled with the value i, so a batch's pixels name its rows.
        let images = Tensor::arange(count, (Kind::Uint8, Device::Cpu))
            .view([count, 1, 1, 1])
            .expand([count, 3, 2, 2], false)
            .contiguous();
        ImageSet {
            images,
            labels: Tensor::arange(count, (Kind::Int64, Device::Cpu)),
            label_names: vec!["only".into()],
            skipped: Vec::new(),
        }
    }

    fn epoch(set: &ImageSet, batch: i64, shuffle: Option<u64>, drop_last: bool) -> Vec<Vec<i64>> {
        batches(set, batch, shuffle, drop_last, Device::Cpu)
            .map(|(images, labels)| {
                let rows: Vec<i64> = Vec::try_from(
                    images
                        .select(1, 0)
                        .select(1, 0)
                        .select(1, 0)
                        .to_kind(Kind::Int64),
                )
                .unwrap();
                let labels: Vec<i64> = Vec::try_from(labels).unwrap();
                assert_eq!(rows, labels, "images and labels travel together");
                labels
            })
            .collect()
    }

    #[test]
    fn shuffled_epoch_covers_every_index_once() {
        let set = numbered_set(103);
        let batches = epoch(&set, 10, Some(7), false);
        assert_eq!(batches.len(), 11);
        assert_eq!(batches.last().map(Vec::len), Some(3));
        let mut seen: Vec<i64> = batches.concat();
        assert_ne!(seen, (0..103).collect::<Vec<_>>(), "shuffled");
        seen.sort();
        assert_eq!(seen, (0..103).collect::<Vec<_>>());
    }

    #[test]
    fn same_seed_same_order_other_seed_other_order() {
        let set = numbered_set(50);
        assert_eq!(
            epoch(&set, 8, Some(1), false),
            epoch(&set, 8, Some(1), false)
        );
        assert_ne!(
            epoch(&set, 8, Some(1), false),
            epoch(&set, 8, Some(2), false)
        );
    }

    #[test]
    fn unshuffled_batches_keep_order_and_drop_last_drops_the_rest() {
        let set = numbered_set(25);
        let batches = epoch(&set, 10, None, true);
        assert_eq!(
            batches,
            vec![(0..10).collect::<Vec<_>>(), (10..20).collect()]
        );
        assert_eq!(super::batches(&set, 10, None, true, Device::Cpu).len(), 2);
        assert_eq!(super::batches(&set, 30, None, true, Device::Cpu).count(), 0);
    }

    #[test]
    fn dropping_early_stops_the_loader() {
        let set = numbered_set(1000);
        let mut batches = super::batches(&set, 1, Some(3), false, Device::Cpu);
        assert!(batches.next().is_some());
        assert_eq!(batches.remaining(), 999);
        drop(batches); // must not hang on the loader blocked in `send`
    }
}
