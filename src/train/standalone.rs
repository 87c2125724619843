//! Running training outside the queue: one job's configuration with a progress bar
//! (`sweeper train FILE`), and the training-throughput benchmark (`sweeper bench
//! train`, compared with PyTorch by `benches/run.sh`).

use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::config::{Architecture, PretextConfig};
use super::data::ImageSet;
use super::device::guard;
use super::loader;
use super::optim::{Optimizer, OptimizerKind};
use super::pretext::SimclrModel;
use super::schedule::LrScaling;
use super::{run_job, TrainError, TrainEvent, TrainJob, TrainResult};

/// Runs `job` on a training thread and draws its progress on the terminal; metrics
/// and checkpoints are printed above the bar. `cancel` stops it within one step.
pub fn train_standalone(job: &TrainJob, cancel: Arc<AtomicBool>) -> TrainResult<serde_json::Value> {
    super::device::quiet_training_panics();
    let (tx, rx) = mpsc::channel();
    let owned = job.clone();
    let flag = Arc::clone(&cancel);
    let worker = std::thread::Builder::new()
        .name(format!("train-{}", job.job_id))
        .spawn(move || run_job(&owned, &tx, &flag))
        .map_err(|e| TrainError::Io(format!("cannot start the training thread: {e}")))?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} epoch {prefix} [{bar:40}] {pos}/{len} steps {elapsed_precise} (eta {eta}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    // The channel closes when the training thread ends, whatever the outcome.
    for event in rx {
        match event {
            TrainEvent::Progress {
                epoch,
                step,
                total_steps,
            } => {
                bar.set_length(total_steps.max(0) as u64);
                bar.set_position(step.max(0) as u64);
                bar.set_prefix((epoch + 1).to_string());
            }
            TrainEvent::Metric { step, name, value } => {
                bar.println(format!("epoch {step}: {name} = {value:.5}"));
                if name == "loss" || name == "val_accuracy" {
                    bar.set_message(format!("{name} {value:.4}"));
                }
            }
            TrainEvent::Checkpoint { epoch, path } => {
                bar.println(format!("epoch {epoch}: checkpoint {}", path.display()))
            }
            TrainEvent::Resumed { epoch, .. } => {
                bar.println(format!("resumed after epoch {epoch}"))
            }
            // Without a terminal the bar draws nothing: the epoch lines are the
            // progress a log or a pipe sees.
            TrainEvent::Epoch(summary) if bar.is_hidden() => eprintln!("{}", summary.line()),
            TrainEvent::Epoch(_) => {}
        }
    }
    bar.finish();
    worker
        .join()
        .map_err(|payload| super::device::panic_error("training", payload.as_ref()))?
}

/// What the benchmark times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchMode {
    /// Forward, NT-Xent, backward and LARS on views already on the device.
    Compute,
    /// Batch gather from uint8 images in memory, augmentation of both views, then
    /// the compute step.
    EndToEnd,
}

impl BenchMode {
    /// `compute`, or `end_to_end` (also `e2e`).
    pub fn parse(text: &str) -> Option<BenchMode> {
        match text {
            "compute" => Some(BenchMode::Compute),
            "end_to_end" | "e2e" => Some(BenchMode::EndToEnd),
            _ => None,
        }
    }
}

/// One benchmark's settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub backbone: String,
    pub image_size: i64,
    pub batch_size: i64,
    pub steps: i64,
    /// Untimed steps first (allocator and kernel selection).
    pub warmup_steps: i64,
    pub mode: BenchMode,
    pub device: Device,
}

impl Default for BenchOptions {
    /// The small ResNet at 32 px, batch 64, 5 timed steps after 2, compute only, CPU.
    fn default() -> Self {
        BenchOptions {
            backbone: "small_resnet".into(),
            image_size: 32,
            batch_size: 64,
            steps: 5,
            warmup_steps: 2,
            mode: BenchMode::Compute,
            device: Device::Cpu,
        }
    }
}

/// Measured throughput.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub implementation: &'static str,
    pub backbone: String,
    pub image_size: i64,
    pub batch_size: i64,
    pub mode: BenchMode,
    pub device: String,
    /// libtorch's intra-op threads.
    pub threads: i32,
    pub steps: i64,
    pub seconds: f64,
    /// Source images per second (each gives two views).
    pub images_per_s: f64,
}

/// Times SimCLR training steps of a named backbone on synthetic images: the
/// pretext stage's own step ([`SimclrModel::train_step`]) and, end to end, its own
/// prefetching view loader ([`loader::simclr_epoch`]).
pub fn bench_train(opts: &BenchOptions) -> TrainResult<BenchReport> {
    if opts.batch_size < 2 || opts.image_size < 1 || opts.steps < 1 || opts.warmup_steps < 0 {
        return Err(TrainError::Fatal(format!(
            "bench: batch ({}) must be at least 2, image size ({}) and steps ({}) at least 1, warmup ({}) not negative",
            opts.batch_size, opts.image_size, opts.steps, opts.warmup_steps
        )));
    }
    let arch = Architecture::named(&opts.backbone)?;
    let params = serde_json::Map::new();
    let mut cfg = PretextConfig::with_arch(&params, arch, opts.image_size)?;
    cfg.batch_size = opts.batch_size;
    cfg.projection_dim = 128;
    cfg.lr_scaling = LrScaling::Linear { base: 0.3 };
    tch::manual_seed(0);
    let device = opts.device;
    let model = guard("building the model", || SimclrModel::new(&cfg, device))?;
    let mut optimizer = Optimizer::new(OptimizerKind::Lars, 1e-6, model.trainable());
    let aug = cfg.augment();
    let n = opts.batch_size;
    let s = opts.image_size;
    // A pool of four batches of random images, like a decoded cache in memory.
    let pool = ImageSet {
        images: Tensor::randint(256, [4 * n, 3, s, s], (Kind::Uint8, Device::Cpu)),
        labels: Tensor::zeros([4 * n], (Kind::Int64, Device::Cpu)),
        label_names: vec!["random".into()],
        skipped: Vec::new(),
    };
    let fixed = (
        Tensor::rand([n, 3, s, s], (Kind::Float, device)),
        Tensor::rand([n, 3, s, s], (Kind::Float, device)),
    );
    // Epoch after epoch over the pool, each prepared ahead by the loader thread.
    let mut views =
        (0u64..).flat_map(|epoch| loader::simclr_epoch(&pool, n, 4, epoch, device, &aug));
    let lr = cfg.lr_scaling.peak(n);
    let mut step = || -> TrainResult<Tensor> {
        guard("benchmark step", || {
            let (v1, v2) = match opts.mode {
                BenchMode::Compute => (fixed.0.shallow_clone(), fixed.1.shallow_clone()),
                BenchMode::EndToEnd => views
                    .next()
                    .ok_or_else(|| TrainError::Fatal("the view loader stopped".into()))?,
            };
            Ok(model.train_step(&mut optimizer, &v1, &v2, cfg.temperature, lr))
        })
    };
    let finish = |loss: Tensor| guard("benchmark sync", || Ok(loss.double_value(&[])));
    let mut last = None;
    for _ in 0..opts.warmup_steps {
        last = Some(step()?);
    }
    if let Some(loss) = last.take() {
        finish(loss)?;
    }
    let started = Instant::now();
    for _ in 0..opts.steps {
        // Like the pretext loop: the previous loss is read once this step is queued.
        let loss = step()?;
        if let Some(previous) = last.replace(loss) {
            finish(previous)?;
        }
    }
    if let Some(loss) = last {
        // Waits for the device, so the clock measures finished work.
        finish(loss)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(BenchReport {
        implementation: "sweeper",
        backbone: opts.backbone.clone(),
        image_size: s,
        batch_size: n,
        mode: opts.mode,
        device: format!("{device:?}"),
        threads: tch::get_num_threads(),
        steps: opts.steps,
        seconds,
        images_per_s: (opts.steps * n) as f64 / seconds,
    })
}
