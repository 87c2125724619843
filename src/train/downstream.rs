//! Downstream evaluation of a pretext backbone: the linear protocol (frozen backbone,
//! batch norm in inference mode, features computed once, one linear layer) and
//! fine-tuning (every weight trains). Both stop early on the validation accuracy,
//! restore the best epoch's weights and predict the test split.
//!
//! Fine-tuning follows a cosine learning-rate decay over `max_epochs`, crops that keep
//! most of a small image, and recomputes the batch-norm running statistics over the
//! training split before every evaluation: the running averages of a short run still
//! remember the pretext's augmented views (or, from a random start, nothing), and in
//! inference mode such stale statistics can make a network call every image one class.
//!
//! The feature is always the backbone's pooled output, never the projection.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use super::augment::{self, AugmentConfig};
use super::backbone::Backbone;
use super::checkpoint;
use super::config::DownstreamConfig;
use super::data::ImageSet;
use super::device::{self, guard};
use super::loader;
use super::optim::{Optimizer, OptimizerKind};
use super::pretext::trainable;
use super::schedule::Schedule;
use super::{EpochSummary, TrainError, TrainEvent, TrainResult};

/// Which protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Linear,
    Finetune,
}

/// The three splits a downstream job uses.
#[derive(Debug, Clone, Copy)]
pub struct Splits<'a> {
    pub train: &'a ImageSet,
    pub val: &'a ImageSet,
    pub test: &'a ImageSet,
}

/// What a downstream run found on the test split.
#[derive(Debug, Clone, PartialEq)]
pub struct DownstreamOutcome {
    pub predictions: Vec<i64>,
    pub truth: Vec<i64>,
    pub label_names: Vec<String>,
    /// 1-based epoch whose weights were kept.
    pub best_epoch: i64,
    pub best_val_accuracy: f64,
    pub epochs_run: i64,
    pub train_images: i64,
    pub test_images: i64,
}

impl DownstreamOutcome {
    pub fn test_accuracy(&self) -> f64 {
        let right = self
            .predictions
            .iter()
            .zip(&self.truth)
            .filter(|(p, t)| p == t)
            .count();
        right as f64 / self.truth.len().max(1) as f64
    }
}

/// Builds the backbone under `backbone.*` and loads it from a pretext checkpoint
/// (which also holds the projection head, ignored here). `None` keeps the random
/// initialisation: the baseline the pretext stage must beat.
fn load_backbone(
    cfg: &DownstreamConfig,
    vs: &mut nn::VarStore,
    init: Option<&Path>,
) -> TrainResult<Backbone> {
    let backbone = (cfg.arch.build)(&(vs.root() / "backbone"))?;
    if let Some(path) = init {
        let sidecar = path.with_extension("json");
        if let Ok(text) = std::fs::read_to_string(&sidecar) {
            let meta: checkpoint::Sidecar = serde_json::from_str(&text).map_err(|e| {
                TrainError::Fatal(format!(
                    "checkpoint sidecar {} is not valid: {e}",
                    sidecar.display()
                ))
            })?;
            if meta.backbone != cfg.arch.name {
                return Err(TrainError::Fatal(format!(
                    "checkpoint {} holds a {} backbone, the job asks for {}",
                    path.display(),
                    meta.backbone,
                    cfg.arch.name
                )));
            }
        }
        let missing = vs.load_partial(path).map_err(|e| {
            TrainError::Fatal(format!(
                "cannot load the pretext checkpoint {}: {e}",
                path.display()
            ))
        })?;
        let missing: Vec<&String> = missing
            .iter()
            .filter(|n| n.starts_with("backbone."))
            .collect();
        if !missing.is_empty() {
            return Err(TrainError::Fatal(format!(
                "checkpoint {} lacks {} backbone variables (first: {})",
                path.display(),
                missing.len(),
                missing[0]
            )));
        }
    }
    device::channels_last_weights(vs);
    Ok(backbone)
}

/// Evaluation input: centre crop, normalised, channels-last where it helps.
fn eval_input(images: &Tensor, image_size: i64) -> Tensor {
    device::channels_last(
        &augment::normalize(&augment::center_crop(images, image_size)),
        images.device(),
    )
}

/// Pooled features of a whole split, batch norm in inference mode, no gradients.
fn features(
    backbone: &Backbone,
    set: &ImageSet,
    cfg: &DownstreamConfig,
    device: Device,
    cancel: &AtomicBool,
) -> TrainResult<Tensor> {
    let n = set.labels.size()[0];
    let mut chunks = Vec::new();
    for idx in loader::sequential(n, cfg.batch_size) {
        if cancel.load(Ordering::Relaxed) {
            return Err(TrainError::Cancelled);
        }
        let (images, _) = loader::gather(set, &idx, device);
        // Inference-mode forwards run in float32: batch norm with running statistics
        // under CUDA autocast fails on half inputs, and features are computed once.
        let f = tch::no_grad(|| backbone.forward_t(&eval_input(&images, cfg.image_size), false));
        chunks.push(f.to_kind(Kind::Float));
    }
    Ok(Tensor::cat(&chunks, 0))
}

/// Momentum of every batch-norm layer sweeper builds (tch's default, as PyTorch's).
const BATCH_NORM_MOMENTUM: f64 = 0.1;

/// Replaces every batch-norm running mean and variance under `vs` by its average over
/// `set` (centre crops, as evaluation sees them), with the weights as they are now.
///
/// Training-mode forwards normalise with each batch's own statistics and fold them
/// into the running ones with momentum m; zeroing the running statistics before each
/// batch leaves exactly m × the batch's statistics there, so dividing by m recovers
/// them and their size-weighted mean is the split's, whatever m and the batch order.
fn recalibrate_batch_norm(
    vs: &nn::VarStore,
    backbone: &Backbone,
    set: &ImageSet,
    cfg: &DownstreamConfig,
    device: Device,
    cancel: &AtomicBool,
) -> TrainResult<()> {
    let mut running: Vec<Tensor> = vs
        .variables()
        .into_iter()
        .filter(|(name, _)| name.ends_with(".running_mean") || name.ends_with(".running_var"))
        .map(|(_, tensor)| tensor)
        .collect();
    let mut sums: Vec<Tensor> = running.iter().map(Tensor::zeros_like).collect();
    let mut images_seen = 0i64;
    for idx in loader::sequential(set.labels.size()[0], cfg.batch_size) {
        if cancel.load(Ordering::Relaxed) {
            return Err(TrainError::Cancelled);
        }
        // Training-mode batch norm needs two samples; a last batch of one adds nothing.
        if idx.len() < 2 {
            continue;
        }
        let (images, _) = loader::gather(set, &idx, device);
        let weight = idx.len() as f64 / BATCH_NORM_MOMENTUM;
        tch::no_grad(|| {
            for stat in running.iter_mut() {
                let _ = stat.zero_();
            }
            let _ = backbone.forward_t(&eval_input(&images, cfg.image_size), true);
            for (sum, stat) in sums.iter_mut().zip(&running) {
                *sum += stat.to_kind(Kind::Float) * weight;
            }
        });
        images_seen += idx.len() as i64;
    }
    if images_seen == 0 {
        return Err(TrainError::Fatal(
            "batch-norm statistics need at least two training images".into(),
        ));
    }
    tch::no_grad(|| {
        for (stat, sum) in running.iter_mut().zip(&sums) {
            stat.copy_(&(sum / images_seen as f64));
        }
    });
    Ok(())
}

fn accuracy(predicted: &Tensor, truth: &Tensor) -> f64 {
    predicted
        .eq_tensor(truth)
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[])
}

/// Copies of every variable, to restore the best epoch later.
fn snapshot(vs: &nn::VarStore) -> HashMap<String, Tensor> {
    vs.variables()
        .into_iter()
        .map(|(name, t)| (name, t.detach().copy()))
        .collect()
}

fn restore(vs: &nn::VarStore, saved: &HashMap<String, Tensor>) {
    tch::no_grad(|| {
        for (name, mut var) in vs.variables() {
            if let Some(value) = saved.get(&name) {
                var.copy_(value);
            }
        }
    });
}

/// Tracks early stopping: the best validation accuracy and how long ago it was.
struct EarlyStop {
    patience: i64,
    best: f64,
    best_epoch: i64,
}

impl EarlyStop {
    /// Records an epoch; true when it is the best so far.
    fn improved(&mut self, epoch: i64, val_accuracy: f64) -> bool {
        if val_accuracy > self.best {
            self.best = val_accuracy;
            self.best_epoch = epoch;
            true
        } else {
            false
        }
    }

    fn exhausted(&self, epoch: i64) -> bool {
        epoch - self.best_epoch >= self.patience
    }
}

/// Runs the linear protocol or fine-tuning.
pub fn train(
    protocol: Protocol,
    cfg: &DownstreamConfig,
    splits: Splits<'_>,
    init: Option<&Path>,
    device: Device,
    events: &Sender<TrainEvent>,
    cancel: &AtomicBool,
) -> TrainResult<DownstreamOutcome> {
    for (name, set) in [
        ("train", splits.train),
        ("validation", splits.val),
        ("test", splits.test),
    ] {
        if set.labels.size()[0] == 0 {
            return Err(TrainError::Fatal(format!("the {name} split is empty")));
        }
    }
    tch::manual_seed(cfg.seed as i64);
    match protocol {
        Protocol::Linear => linear(cfg, splits, init, device, events, cancel),
        Protocol::Finetune => finetune(cfg, splits, init, device, events, cancel),
    }
}

fn linear(
    cfg: &DownstreamConfig,
    splits: Splits<'_>,
    init: Option<&Path>,
    device: Device,
    events: &Sender<TrainEvent>,
    cancel: &AtomicBool,
) -> TrainResult<DownstreamOutcome> {
    let classes = splits.train.label_names.len() as i64;
    let mut backbone_vs = nn::VarStore::new(device);
    let backbone = load_backbone(cfg, &mut backbone_vs, init)?;
    backbone_vs.freeze();
    let (train_x, val_x, test_x) = guard("computing features", || {
        recalibrate_batch_norm(&backbone_vs, &backbone, splits.train, cfg, device, cancel)?;
        Ok((
            features(&backbone, splits.train, cfg, device, cancel)?,
            features(&backbone, splits.val, cfg, device, cancel)?,
            features(&backbone, splits.test, cfg, device, cancel)?,
        ))
    })?;
    // Standardised with the training split's statistics: a fixed affine map the linear
    // layer could absorb, but one that lets the same lr suit any backbone's scale.
    let mean = train_x.mean_dim(&[0i64][..], true, Kind::Float);
    let std = train_x.std_dim(&[0i64][..], true, true).clamp_min(1e-6);
    let standardise = |x: &Tensor| (x - &mean) / &std;
    let (train_x, val_x, test_x) = (
        standardise(&train_x),
        standardise(&val_x),
        standardise(&test_x),
    );
    let train_y = splits.train.labels.to_device(device);
    let val_y = splits.val.labels.to_device(device);

    let vs = nn::VarStore::new(device);
    let classifier = nn::linear(
        vs.root() / "classifier",
        cfg.arch.feature_dim,
        classes,
        Default::default(),
    );
    let mut optimizer = Optimizer::new(OptimizerKind::Sgd, 0.0, trainable(&vs));
    let n = train_x.size()[0];
    let mut stop = EarlyStop {
        patience: cfg.patience,
        best: -1.0,
        best_epoch: 0,
    };
    let mut best = snapshot(&vs);
    let mut epochs_run = 0;
    for epoch in 1..=cfg.max_epochs {
        let at = Epoch::begin(epoch, cfg, n);
        let mut rng = ChaCha8Rng::seed_from_u64(checkpoint::epoch_seed(cfg.seed, epoch));
        let order = loader::epoch_order(n, &mut rng);
        let mut loss_sum = 0.0;
        let mut batches = 0;
        for chunk in order.chunks(cfg.batch_size as usize) {
            if cancel.load(Ordering::Relaxed) {
                return Err(TrainError::Cancelled);
            }
            let idx = Tensor::from_slice(chunk).to_device(device);
            let logits = classifier.forward(&train_x.index_select(0, &idx));
            let loss = logits.cross_entropy_for_logits(&train_y.index_select(0, &idx));
            optimizer.zero_grad();
            loss.backward();
            optimizer.step(cfg.lr);
            loss_sum += loss.double_value(&[]);
            batches += 1;
        }
        let val_accuracy =
            tch::no_grad(|| accuracy(&classifier.forward(&val_x).argmax(1, false), &val_y));
        report(events, at, loss_sum / batches as f64, val_accuracy);
        check_finite(loss_sum, epoch)?;
        epochs_run = epoch;
        if stop.improved(epoch, val_accuracy) {
            best = snapshot(&vs);
        } else if stop.exhausted(epoch) {
            break;
        }
    }
    restore(&vs, &best);
    let predictions = tch::no_grad(|| classifier.forward(&test_x).argmax(1, false));
    Ok(outcome(predictions, splits, &stop, epochs_run))
}

fn finetune(
    cfg: &DownstreamConfig,
    splits: Splits<'_>,
    init: Option<&Path>,
    device: Device,
    events: &Sender<TrainEvent>,
    cancel: &AtomicBool,
) -> TrainResult<DownstreamOutcome> {
    let classes = splits.train.label_names.len() as i64;
    let mut vs = nn::VarStore::new(device);
    let backbone = load_backbone(cfg, &mut vs, init)?;
    let classifier = nn::linear(
        vs.root() / "classifier",
        cfg.arch.feature_dim,
        classes,
        Default::default(),
    );
    let mut optimizer = Optimizer::new(OptimizerKind::Adam, 0.0, trainable(&vs));
    let aug = AugmentConfig::fine_tune(cfg.image_size);
    let n = splits.train.labels.size()[0];
    if n < 2 {
        return Err(TrainError::Fatal(
            "fine-tuning needs at least two training images".into(),
        ));
    }
    let steps_per_epoch = (n + cfg.batch_size - 1) / cfg.batch_size;
    let schedule = Schedule {
        peak_lr: cfg.lr,
        warmup_steps: 0,
        total_steps: steps_per_epoch * cfg.max_epochs,
    };
    let mut step_count = 0i64;
    let predict = |set: &ImageSet| -> TrainResult<Tensor> {
        let mut out = Vec::new();
        for idx in loader::sequential(set.labels.size()[0], cfg.batch_size) {
            if cancel.load(Ordering::Relaxed) {
                return Err(TrainError::Cancelled);
            }
            let (images, _) = loader::gather(set, &idx, device);
            // float32, like the features above: inference-mode batch norm under autocast
            // fails on CUDA.
            let logits = tch::no_grad(|| {
                backbone
                    .forward_t(&eval_input(&images, cfg.image_size), false)
                    .apply(&classifier)
            });
            out.push(logits.argmax(1, false));
        }
        Ok(Tensor::cat(&out, 0))
    };
    let val_y = splits.val.labels.to_device(device);
    let mut stop = EarlyStop {
        patience: cfg.patience,
        best: -1.0,
        best_epoch: 0,
    };
    let mut best = snapshot(&vs);
    let mut epochs_run = 0;
    for epoch in 1..=cfg.max_epochs {
        let at = Epoch::begin(epoch, cfg, n);
        let mut rng = ChaCha8Rng::seed_from_u64(checkpoint::epoch_seed(cfg.seed, epoch));
        let order = loader::epoch_order(n, &mut rng);
        let mut loss_sum = 0.0;
        let mut batches = 0;
        for (step, chunk) in order.chunks(cfg.batch_size as usize).enumerate() {
            if cancel.load(Ordering::Relaxed) {
                return Err(TrainError::Cancelled);
            }
            // Batch norm in training mode needs two samples per batch.
            if chunk.len() < 2 {
                continue;
            }
            let loss = guard(&format!("epoch {epoch}, step {}", step + 1), || {
                let (images, labels) = loader::gather(splits.train, chunk, device);
                let params = augment::sample_params(&mut rng, chunk.len(), images.size()[2], &aug);
                let input = device::channels_last(
                    &augment::normalize(&augment::apply(&images, &params, &aug)),
                    device,
                );
                let logits = device::autocast(device, || {
                    backbone.forward_t(&input, true).apply(&classifier)
                });
                let loss = logits
                    .to_kind(Kind::Float)
                    .cross_entropy_for_logits(&labels);
                optimizer.zero_grad();
                loss.backward();
                optimizer.step(schedule.lr(step_count));
                Ok(loss.double_value(&[]))
            })?;
            step_count += 1;
            loss_sum += loss;
            batches += 1;
        }
        check_finite(loss_sum, epoch)?;
        let val_accuracy = guard("validation", || {
            recalibrate_batch_norm(&vs, &backbone, splits.train, cfg, device, cancel)?;
            Ok(accuracy(&predict(splits.val)?, &val_y))
        })?;
        report(events, at, loss_sum / batches.max(1) as f64, val_accuracy);
        epochs_run = epoch;
        if stop.improved(epoch, val_accuracy) {
            best = snapshot(&vs);
        } else if stop.exhausted(epoch) {
            break;
        }
    }
    restore(&vs, &best);
    let predictions = guard("testing", || predict(splits.test))?;
    Ok(outcome(predictions, splits, &stop, epochs_run))
}

fn check_finite(loss_sum: f64, epoch: i64) -> TrainResult<()> {
    if loss_sum.is_finite() {
        Ok(())
    } else {
        Err(TrainError::Fatal(format!(
            "training loss became NaN or infinite at epoch {epoch}"
        )))
    }
}

/// Where an epoch of a downstream run is, for its report.
struct Epoch {
    epoch: i64,
    epochs: i64,
    /// Training images seen per epoch.
    images: i64,
    started: std::time::Instant,
}

impl Epoch {
    /// Epoch `epoch` of `cfg.max_epochs` starts now, over `images` training images.
    fn begin(epoch: i64, cfg: &DownstreamConfig, images: i64) -> Epoch {
        Epoch {
            epoch,
            epochs: cfg.max_epochs,
            images,
            started: std::time::Instant::now(),
        }
    }
}

fn report(events: &Sender<TrainEvent>, at: Epoch, train_loss: f64, val_accuracy: f64) {
    for (name, value) in [("train_loss", train_loss), ("val_accuracy", val_accuracy)] {
        let _ = events.send(TrainEvent::Metric {
            step: at.epoch,
            name: name.to_string(),
            value,
        });
    }
    let seconds = at.started.elapsed().as_secs_f64();
    let _ = events.send(TrainEvent::Epoch(EpochSummary {
        epoch: at.epoch,
        epochs: at.epochs,
        metric: "val_accuracy".into(),
        value: val_accuracy,
        images_per_s: at.images as f64 / seconds.max(1e-9),
        seconds,
    }));
}

fn outcome(
    predictions: Tensor,
    splits: Splits<'_>,
    stop: &EarlyStop,
    epochs_run: i64,
) -> DownstreamOutcome {
    let to_vec = |t: &Tensor| {
        Vec::<i64>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Int64)).unwrap_or_default()
    };
    DownstreamOutcome {
        predictions: to_vec(&predictions),
        truth: to_vec(&splits.test.labels),
        label_names: splits.train.label_names.clone(),
        best_epoch: stop.best_epoch,
        best_val_accuracy: stop.best,
        epochs_run,
        train_images: splits.train.labels.size()[0],
        test_images: splits.test.labels.size()[0],
    }
}
