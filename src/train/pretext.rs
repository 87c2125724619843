//! The SimCLR pretext stage: two augmented views per image, backbone + v1 projection
//! head, NT-Xent, LARS (or SGD/Adam) on warmup + cosine, checkpoints and resume.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

use super::augment;
use super::backbone::Backbone;
use super::checkpoint::{self, EpochMetrics, Sidecar};
use super::config::PretextConfig;
use super::data::ImageSet;
use super::device::{self, guard};
use super::loader;
use super::optim::Optimizer;
use super::schedule::Schedule;
use super::simclr::{self, ProjectionHead};
use super::{EpochSummary, TrainError, TrainEvent, TrainResult};

/// The result of a pretext run.
#[derive(Debug, Clone, PartialEq)]
pub struct PretextOutcome {
    /// Mean NT-Xent of the last epoch (mean convention, see [`simclr`]).
    pub loss: f64,
    pub epochs: i64,
    pub train_images: i64,
    /// ln(2N−1) for the batch size N.
    pub chance_loss: f64,
    /// The final checkpoint's weights, what downstream jobs load.
    pub checkpoint: PathBuf,
    /// The epoch this attempt started at (0 unless it resumed).
    pub resumed_from: i64,
    /// Mean loss of every epoch this attempt ran.
    pub epoch_losses: Vec<f64>,
    /// The epoch it stopped at for a rung ([`PretextConfig::halt_at`]), before the end.
    pub halted_at: Option<i64>,
}

/// Backbone and projection head under one `VarStore` (`backbone.*`, `head.*`).
pub struct SimclrModel {
    pub vs: nn::VarStore,
    pub backbone: Backbone,
    pub head: ProjectionHead,
}

impl SimclrModel {
    pub fn new(cfg: &PretextConfig, device: Device) -> TrainResult<SimclrModel> {
        let vs = nn::VarStore::new(device);
        let backbone = (cfg.arch.build)(&(vs.root() / "backbone"))?;
        let head = ProjectionHead::new(
            &(vs.root() / "head"),
            cfg.arch.feature_dim,
            cfg.projection_dim,
        );
        device::channels_last_weights(&vs);
        Ok(SimclrModel { vs, backbone, head })
    }

    /// Trainable variables by name, for the optimizer.
    pub fn trainable(&self) -> Vec<(String, Tensor)> {
        trainable(&self.vs)
    }

    /// NT-Xent of one batch of two views (float images in [0, 1]).
    pub fn loss(&self, view1: &Tensor, view2: &Tensor, temperature: f64, train: bool) -> Tensor {
        let device = view1.device();
        let n = view1.size()[0];
        let both = device::channels_last(
            &augment::normalize(&Tensor::cat(&[view1, view2], 0)),
            device,
        );
        let z = device::autocast(device, || {
            let features = self.backbone.forward_t(&both, train);
            self.head.forward_t(&features, train)
        });
        simclr::nt_xent(&z.narrow(0, 0, n), &z.narrow(0, n, n), temperature)
    }

    /// One training step: forward, NT-Xent, backward, update. Returns the loss,
    /// detached and still on the device: reading it is left to the caller, so the
    /// host need not wait for the device every step.
    pub fn train_step(
        &self,
        optimizer: &mut Optimizer,
        view1: &Tensor,
        view2: &Tensor,
        temperature: f64,
        lr: f64,
    ) -> Tensor {
        let loss = self.loss(view1, view2, temperature, true);
        optimizer.zero_grad();
        loss.backward();
        optimizer.step(lr);
        loss.detach()
    }
}

/// Fails on a loss that is not finite, naming where it happened.
fn check_loss(value: f64, epoch: i64, step: i64) -> TrainResult<f64> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(TrainError::Fatal(format!(
            "loss became {} at epoch {}, step {}",
            if value.is_nan() { "NaN" } else { "infinite" },
            epoch + 1,
            step + 1
        )))
    }
}

/// Every variable that requires a gradient, with its name.
pub fn trainable(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    vs.variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect()
}

/// Trains SimCLR on `data` (the pretext split, labels unused), resuming from the
/// newest checkpoint in `job_dir` if there is one. `attempt` is the job's attempt,
/// kept with each epoch's metrics in the checkpoints.
pub fn train(
    cfg: &PretextConfig,
    data: &ImageSet,
    job_dir: &Path,
    device: Device,
    attempt: i32,
    events: &Sender<TrainEvent>,
    cancel: &AtomicBool,
) -> TrainResult<PretextOutcome> {
    let train_images = data.images.size()[0];
    if train_images < cfg.batch_size {
        return Err(TrainError::Fatal(format!(
            "the pretext split has {train_images} images, fewer than one batch of {}",
            cfg.batch_size
        )));
    }
    let steps_per_epoch = train_images / cfg.batch_size; // the last partial batch is dropped
    let schedule = Schedule::simclr(
        cfg.lr_scaling,
        cfg.batch_size,
        train_images,
        cfg.epochs,
        cfg.warmup_epochs,
    );
    let aug = cfg.augment();
    let chance = simclr::chance_loss(cfg.batch_size);

    tch::manual_seed(cfg.seed as i64);
    let mut model = guard("building the model", || SimclrModel::new(cfg, device))?;
    let mut optimizer = Optimizer::new(cfg.optimizer, cfg.weight_decay, model.trainable());
    let mut start_epoch = 0;
    let mut last_checkpoint = None;
    let mut history = Vec::new();
    if let Some(ckpt) = checkpoint::latest(job_dir) {
        let sidecar = ckpt.read_sidecar()?;
        if sidecar.backbone != cfg.arch.name || sidecar.projection_dim != cfg.projection_dim {
            return Err(TrainError::Fatal(format!(
                "checkpoint {} is for {} with projection {}, not this job's {} with {}",
                ckpt.sidecar.display(),
                sidecar.backbone,
                sidecar.projection_dim,
                cfg.arch.name,
                cfg.projection_dim
            )));
        }
        model.vs.load(&ckpt.weights).map_err(|e| {
            TrainError::Fatal(format!(
                "checkpoint {} does not fit the model: {e}",
                ckpt.weights.display()
            ))
        })?;
        let state = checkpoint::load_optimizer_state(&ckpt, device)?;
        optimizer.load_state(&state, sidecar.optimizer_steps)?;
        start_epoch = sidecar.epoch;
        last_checkpoint = Some(ckpt.weights.clone());
        tracing::info!(epoch = start_epoch, path = %ckpt.weights.display(), "resuming pretext from checkpoint");
        history = sidecar.history;
        let _ = events.send(TrainEvent::Resumed {
            epoch: start_epoch,
            history: history.clone(),
        });
    }

    let total_steps = steps_per_epoch * cfg.epochs;
    let mut epoch_losses = Vec::new();
    let end = cfg
        .halt_at
        .map_or(cfg.epochs, |halt| halt.clamp(1, cfg.epochs));
    for epoch in start_epoch..end {
        let started = Instant::now();
        // The next steps' views are gathered and augmented on a loader thread while
        // this one trains.
        let mut views = loader::simclr_epoch(
            data,
            cfg.batch_size,
            steps_per_epoch,
            checkpoint::epoch_seed(cfg.seed, epoch),
            device,
            &aug,
        );
        // Each step's loss is read one step late, once the next step is queued, so
        // the device never waits for the host; a NaN still fails the job at the
        // step where it appeared.
        let mut loss_sum = 0.0;
        let mut lr = 0.0;
        let mut pending: Option<(i64, Tensor)> = None;
        for step in 0..steps_per_epoch {
            if cancel.load(Ordering::Relaxed) {
                return Err(TrainError::Cancelled);
            }
            let global_step = epoch * steps_per_epoch + step;
            lr = schedule.lr(global_step);
            let previous = pending.take();
            let (loss, earlier) =
                guard(&format!("epoch {}, step {}", epoch + 1, step + 1), || {
                    let (view1, view2) = views.next().ok_or_else(|| {
                        TrainError::Fatal(format!(
                            "the view loader stopped before step {}",
                            step + 1
                        ))
                    })?;
                    let loss =
                        model.train_step(&mut optimizer, &view1, &view2, cfg.temperature, lr);
                    let earlier = match &previous {
                        Some((at, value)) => Some(check_loss(value.double_value(&[]), epoch, *at)?),
                        None => None,
                    };
                    Ok((loss, earlier))
                })?;
            loss_sum += earlier.unwrap_or(0.0);
            pending = Some((step, loss));
            let _ = events.send(TrainEvent::Progress {
                epoch,
                step: global_step + 1,
                total_steps,
            });
        }
        if let Some((at, value)) = pending {
            loss_sum += check_loss(value.double_value(&[]), epoch, at)?;
        }
        let mean_loss = loss_sum / steps_per_epoch as f64;
        let seconds = started.elapsed().as_secs_f64();
        let done = epoch + 1;
        let mut values = BTreeMap::new();
        for (name, value) in [
            ("loss", mean_loss),
            ("chance_loss", chance),
            (
                "images_per_s",
                (steps_per_epoch * cfg.batch_size) as f64 / seconds,
            ),
            ("lr", lr),
        ] {
            let _ = events.send(TrainEvent::Metric {
                step: done,
                name: name.to_string(),
                value,
            });
            if value.is_finite() {
                values.insert(name.to_string(), value);
            }
        }
        history.push(EpochMetrics {
            epoch: done,
            attempt,
            values,
        });
        let _ = events.send(TrainEvent::Epoch(EpochSummary {
            epoch: done,
            epochs: cfg.epochs,
            metric: "loss".into(),
            value: mean_loss,
            images_per_s: (steps_per_epoch * cfg.batch_size) as f64 / seconds,
            seconds,
        }));
        epoch_losses.push(mean_loss);
        if done % cfg.checkpoint_every == 0 || done == end {
            let sidecar = Sidecar {
                epoch: done,
                backbone: cfg.arch.name.clone(),
                feature_dim: cfg.arch.feature_dim,
                projection_dim: cfg.projection_dim,
                image_size: cfg.image_size,
                optimizer: cfg.optimizer.as_str().to_string(),
                optimizer_steps: optimizer.steps,
                seed: cfg.seed,
                rng: "chacha8(epoch_seed(seed, epoch))".to_string(),
                loss: Some(mean_loss),
                history: history.clone(),
            };
            let ckpt = checkpoint::save(job_dir, &model.vs, &optimizer.state_tensors(), &sidecar)?;
            let _ = events.send(TrainEvent::Checkpoint {
                epoch: done,
                path: ckpt.weights.clone(),
            });
            last_checkpoint = Some(ckpt.weights);
        }
    }
    let checkpoint =
        last_checkpoint.ok_or_else(|| TrainError::Fatal("the run wrote no checkpoint".into()))?;
    // An attempt that resumed after the last epoch reports the loss its sidecar kept.
    let loss = match epoch_losses.last() {
        Some(loss) => *loss,
        None => checkpoint::latest(job_dir)
            .and_then(|c| c.read_sidecar().ok())
            .and_then(|s| s.loss)
            .unwrap_or(f64::NAN),
    };
    Ok(PretextOutcome {
        loss,
        epochs: cfg.epochs,
        train_images,
        chance_loss: chance,
        checkpoint,
        resumed_from: start_epoch,
        epoch_losses,
        halted_at: (end < cfg.epochs).then_some(end),
    })
}

/// Mean loss of `cfg` on one batch with no training: used by tests and benchmarks.
pub fn batch_loss(cfg: &PretextConfig, images: &Tensor, seed: u64) -> TrainResult<f64> {
    let model = SimclrModel::new(cfg, images.device())?;
    let aug = cfg.augment();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (v1, v2) = augment::simclr_views(images, &mut rng, &aug);
    Ok(tch::no_grad(|| model.loss(&v1, &v2, cfg.temperature, true))
        .to_kind(Kind::Double)
        .double_value(&[]))
}
