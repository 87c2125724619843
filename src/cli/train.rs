//! The commands that train or measure on this machine: `train` (one job of a sweep
//! file, outside the queue), `bench train` and `bench queue`, `devices`, `models`
//! and `make-dataset`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use serde_json::Value;

use sweeper::store::bench::{self, QueueBench};
use sweeper::store::table;
use sweeper::train::plan::{self, StandaloneRequest};
use sweeper::train::standalone::{BenchMode, BenchOptions};

use super::{print_table, BadInput};

#[derive(Debug, Args)]
pub(super) struct DevicesArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct TrainArgs {
    /// The sweep file.
    file: PathBuf,
    /// The stage to take the job from (default: the first).
    #[arg(long)]
    stage: Option<String>,
    /// Pick the first cell whose parameters match, e.g. `--set backbone=resnet50`;
    /// repeatable. Any other key overrides the job's parameter.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Pretext checkpoint for linear and finetune stages.
    #[arg(long)]
    init: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Where checkpoints go (a rerun resumes from the newest one here).
    #[arg(long, default_value = "train-out")]
    out: PathBuf,
    /// Decoded-image cache directory.
    #[arg(long, default_value = "artifacts/cache")]
    cache: PathBuf,
    /// Overrides the sweep's data root.
    #[arg(long, env = "SWEEPER_DATA_ROOT")]
    data_root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(super) struct MakeDatasetArgs {
    /// Output directory: setA/, setA_labelled/, setB/train, setB/test for the generated
    /// demo data; pretext/, labelled/, test/ with --from-idx.
    dir: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Side of the square images, in pixels.
    #[arg(long, default_value_t = 64)]
    image_size: u32,
    /// Write real images instead: a folder of IDX files (train-* and t10k-*, gzipped
    /// or not), e.g. /usr/share/datasets/fashion-mnist from Debian's
    /// dataset-fashion-mnist, as three disjoint parts.
    #[arg(long)]
    from_idx: Option<PathBuf>,
    /// With --from-idx: images per label for the pretext (the first of the train file).
    #[arg(long, default_value_t = 500)]
    pretext_per_label: usize,
    /// With --from-idx: images per label for the linear protocol (the next ones).
    #[arg(long, default_value_t = 100)]
    labelled_per_label: usize,
    /// With --from-idx: images per label for testing (the first of the t10k file).
    #[arg(long, default_value_t = 100)]
    test_per_label: usize,
    /// With --from-idx: label folder names in label order, comma-separated; Fashion-
    /// MNIST's class names when the folder is named fashion-mnist, else 0, 1, …
    #[arg(long, value_delimiter = ',')]
    label_names: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub(super) enum BenchCommand {
    /// Claim + complete throughput of the store, in jobs per second.
    Queue(BenchQueueArgs),
    /// SimCLR training throughput (images/s) of one backbone; one JSON line.
    Train(BenchTrainArgs),
    /// The dashboard on a large store: time to first byte of each page.
    Serve(BenchServeArgs),
    /// How submit, draining (with promotion), status and report grow with the study.
    Scale(BenchScaleArgs),
    /// Epochs successive halving saves, replayed from complete loss curves.
    Halving(BenchHalvingArgs),
}

#[derive(Debug, Args)]
pub(super) struct BenchHalvingArgs {
    /// Also replay this sweep's stage (its complete curves, its declared rule).
    #[arg(long, requires = "stage")]
    sweep: Option<String>,
    #[arg(long, requires = "sweep")]
    stage: Option<String>,
    /// Write the curves and rules replayed, as `benches/halving_reference.py` reads them.
    #[arg(long)]
    curves_out: Option<std::path::PathBuf>,
    /// Write every stop of the replays as JSON.
    #[arg(long)]
    stops_out: Option<std::path::PathBuf>,
}

/// A stored stage's declared rule and the complete loss curves of its jobs that ran
/// to the end, by group; a stopped job's curve ends at its rung and cannot be replayed.
async fn stored_curves(
    store: &sweeper::store::Store,
    sweep: &str,
    stage: &str,
) -> anyhow::Result<(
    sweeper::sweep::halving::HalvingSpec,
    Vec<sweeper::sweep::halving_bench::GroupCurves>,
)> {
    use sweeper::store::{JobFilter, JobState};
    let spec = store
        .spec(sweep)
        .await?
        .with_context(|| format!("no sweep named {sweep:?} in the store"))?;
    let rule = spec
        .stage(stage)
        .with_context(|| format!("sweep {sweep:?} has no stage {stage:?}"))?
        .halving
        .clone()
        .with_context(|| format!("stage {stage:?} of {sweep:?} declares no [stages.halving]"))?;
    let jobs = store
        .jobs(
            &JobFilter {
                sweep: Some(sweep.to_owned()),
                stage: Some(stage.to_owned()),
                state: Some(JobState::Succeeded),
                ..JobFilter::default()
            },
            None,
        )
        .await?;
    let mut groups: std::collections::BTreeMap<String, sweeper::sweep::halving_bench::GroupCurves> =
        Default::default();
    for job in jobs {
        let metrics = store.metrics(job.id).await?;
        let curve = sweeper::report::from_store::curves(&metrics)
            .remove(&rule.metric)
            .unwrap_or_default();
        // Complete: every epoch from 1, once.
        if curve
            .iter()
            .enumerate()
            .any(|(i, (step, _))| *step != i as i64 + 1)
        {
            continue;
        }
        let group = sweeper::sweep::select::per_group(&rule.per, &job.params);
        groups
            .entry(Value::Object(group.clone()).to_string())
            .or_insert_with(|| sweeper::sweep::halving_bench::GroupCurves {
                group,
                curves: Vec::new(),
            })
            .curves
            .push(sweeper::sweep::halving::Curve {
                job_id: job.id,
                key: job.key.clone(),
                values: curve.into_iter().map(|(_, value)| value).collect(),
            });
    }
    Ok((rule, groups.into_values().collect()))
}

pub(super) async fn bench_halving(db: &str, args: BenchHalvingArgs) -> anyhow::Result<()> {
    use sweeper::sweep::halving_bench as hb;
    let mut studies = vec![(
        "seed-shaped (108 cells, 100 epochs)".to_owned(),
        hb::seed_rule(),
        hb::seed_shaped_study(),
    )];
    if let (Some(sweep), Some(stage)) = (&args.sweep, &args.stage) {
        let store = sweeper::store::Store::open(db).await?;
        let (rule, groups) = stored_curves(&store, sweep, stage).await?;
        studies.push((format!("{sweep}/{stage} (stored)"), rule, groups));
    }
    let mut table = table::Table::new([
        "curves",
        "groups",
        "jobs",
        "epochs",
        "full grid",
        "saved",
        "same winner",
    ]);
    let mut curves = Vec::new();
    let mut stops = Vec::new();
    for (name, rule, groups) in &studies {
        let replay = hb::replay_study(rule, groups);
        let saved = 1.0 - replay.epochs_spent as f64 / replay.epochs_full.max(1) as f64;
        table.push(vec![
            serde_json::json!(name),
            serde_json::json!(replay.groups),
            serde_json::json!(replay.jobs),
            serde_json::json!(replay.epochs_spent),
            serde_json::json!(replay.epochs_full),
            serde_json::json!(format!("{:.0} %", saved * 100.0)),
            serde_json::json!(format!("{} of {}", replay.same_winner, replay.groups)),
        ]);
        curves.push(hb::curves_json(rule, groups));
        stops.push(serde_json::json!(replay.stops));
    }
    print_table(&table, table::Format::Text);
    if let Some(path) = &args.curves_out {
        std::fs::write(path, serde_json::to_vec(&curves)?)?;
    }
    if let Some(path) = &args.stops_out {
        std::fs::write(path, serde_json::to_vec(&stops)?)?;
    }
    Ok(())
}

#[derive(Debug, Args)]
pub(super) struct BenchScaleArgs {
    /// Job counts, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    sizes: Vec<usize>,
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Also run against this Postgres database.
    #[arg(long)]
    postgres: Option<String>,
}

pub(super) async fn bench_scale(args: BenchScaleArgs) -> anyhow::Result<()> {
    let table = bench::run_scale_bench(&bench::ScaleBench {
        sizes: args.sizes,
        workers: args.workers,
        postgres: args.postgres,
    })
    .await?;
    print_table(&table, table::Format::Text);
    Ok(())
}

#[derive(Debug, Args)]
pub(super) struct BenchServeArgs {
    #[arg(long, default_value_t = 100_000)]
    jobs: usize,
    /// Metric rows per job (100 × 100,000 jobs: ten million rows).
    #[arg(long, default_value_t = 100)]
    metrics_per_job: usize,
    /// Timed requests per page.
    #[arg(long, default_value_t = 10)]
    requests: usize,
    /// Fill this Postgres database instead of a new SQLite file.
    #[arg(long)]
    postgres: Option<String>,
}

pub(super) async fn bench_serve(args: BenchServeArgs) -> anyhow::Result<()> {
    let table = sweeper::serve::bench::run_serve_bench(&sweeper::serve::bench::ServeBench {
        jobs: args.jobs,
        metrics_per_job: args.metrics_per_job,
        requests: args.requests,
        postgres: args.postgres,
    })
    .await?;
    print_table(&table, table::Format::Text);
    Ok(())
}

#[derive(Debug, Args)]
pub(super) struct BenchTrainArgs {
    #[arg(long, default_value = "resnet18")]
    backbone: String,
    #[arg(long, default_value_t = 32)]
    image_size: i64,
    #[arg(long = "batch", default_value_t = 64)]
    batch_size: i64,
    /// Timed steps.
    #[arg(long, default_value_t = 5)]
    steps: i64,
    /// Untimed steps first.
    #[arg(long = "warmup", default_value_t = 2)]
    warmup_steps: i64,
    /// `compute` (model, loss, optimizer) or `end_to_end` (with augmentation and batching).
    #[arg(long, default_value = "compute")]
    mode: String,
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Debug, Args)]
pub(super) struct BenchQueueArgs {
    /// Jobs per run.
    #[arg(long, default_value_t = 2000)]
    jobs: usize,
    /// Concurrent workers, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    workers: Vec<usize>,
    /// Also run against this Postgres database.
    #[arg(long, env = "SWEEPER_BENCH_POSTGRES_URL")]
    postgres: Option<String>,
    /// Time the same loop in Python's sqlite3 (benches/queue_reference.py) with this
    /// interpreter and print the ratio.
    #[arg(long)]
    reference_python: Option<PathBuf>,
}

pub(super) async fn models() -> anyhow::Result<()> {
    let table = tokio::task::spawn_blocking(sweeper::train::backbone::models_table)
        .await
        .context("the model table thread failed")?;
    print!("{table}");
    Ok(())
}

pub(super) fn devices(args: DevicesArgs) -> anyhow::Result<()> {
    let report = sweeper::devices::describe();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

pub(super) async fn train(args: TrainArgs) -> anyhow::Result<()> {
    let request = StandaloneRequest {
        file: args.file,
        data_root: args.data_root,
        stage: args.stage,
        set: args.set,
        init: args.init,
        device: args.device,
        out: args.out,
        cache: args.cache,
    };
    let planned = plan::plan_standalone(&request)?;
    let job = planned.job;
    eprintln!(
        "training stage {} ({}) on {:?}: {}",
        planned.stage,
        job.kind.as_str(),
        job.device,
        Value::Object(job.params.clone())
    );
    let cancel = Arc::new(AtomicBool::new(false));
    let on_signal = Arc::clone(&cancel);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.store(true, Ordering::SeqCst);
        }
    });
    let result =
        tokio::task::spawn_blocking(move || sweeper::train::train_standalone(&job, cancel))
            .await
            .context("the training thread failed")??;
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}

pub(super) async fn make_dataset(args: MakeDatasetArgs) -> anyhow::Result<()> {
    use sweeper::train::synth;
    if let Some(source) = args.from_idx.clone() {
        return make_idx_dataset(source, args).await;
    }
    let config = synth::SynthConfig {
        seed: args.seed,
        image_size: args.image_size,
        ..synth::SynthConfig::default()
    };
    let dir = args.dir.clone();
    let summary = tokio::task::spawn_blocking(move || synth::generate(&dir, &config))
        .await
        .context("the dataset generator failed")?
        .with_context(|| format!("cannot write the dataset into {}", args.dir.display()))?;
    println!(
        "{} images written to {}",
        summary.images,
        args.dir.display()
    );
    Ok(())
}

async fn make_idx_dataset(source: PathBuf, args: MakeDatasetArgs) -> anyhow::Result<()> {
    use sweeper::train::idx;
    let label_names = if !args.label_names.is_empty() {
        args.label_names
    } else if source
        .file_name()
        .is_some_and(|name| name == "fashion-mnist")
    {
        idx::FASHION_MNIST_LABELS.map(String::from).to_vec()
    } else {
        Vec::new()
    };
    let split = idx::IdxSplit {
        pretext_per_label: args.pretext_per_label,
        labelled_per_label: args.labelled_per_label,
        test_per_label: args.test_per_label,
        label_names,
    };
    let dir = args.dir.clone();
    let from = source.clone();
    let summary = tokio::task::spawn_blocking(move || idx::write_folders(&from, &dir, &split))
        .await
        .context("the IDX converter failed")?
        .with_context(|| {
            format!(
                "cannot write the images of {} into {}",
                source.display(),
                args.dir.display()
            )
        })?;
    println!(
        "{} pretext, {} labelled and {} test images written to {}",
        summary.pretext,
        summary.labelled,
        summary.test,
        args.dir.display()
    );
    Ok(())
}

pub(super) async fn bench_train(args: BenchTrainArgs) -> anyhow::Result<()> {
    let Some(mode) = BenchMode::parse(&args.mode) else {
        bail!(BadInput(format!(
            "--mode {:?}: use compute or end_to_end",
            args.mode
        )));
    };
    let device = sweeper::devices::parse_device(&args.device)?
        .resolve(&[], tch::Cuda::device_count())
        .to_tch();
    let options = BenchOptions {
        backbone: args.backbone,
        image_size: args.image_size,
        batch_size: args.batch_size,
        steps: args.steps,
        warmup_steps: args.warmup_steps,
        mode,
        device,
    };
    let report = tokio::task::spawn_blocking(move || sweeper::train::bench_train(&options))
        .await
        .context("the benchmark thread failed")??;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

pub(super) async fn bench_queue(args: BenchQueueArgs) -> anyhow::Result<()> {
    let table = bench::run_queue_bench(&QueueBench {
        jobs: args.jobs,
        workers: args.workers,
        postgres: args.postgres,
        reference_python: args.reference_python,
    })
    .await?;
    print_table(&table, table::Format::Text);
    Ok(())
}
