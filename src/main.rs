//! The `sweeper` command line: parse, set up tracing, call the library, turn the error
//! into an exit status (2 for bad input, 1 for anything else).
//!
//! Each subcommand is a variant of [`Command`] with its own argument struct and one
//! function below; adding one is a variant, a struct and a function.
//!
//! Not yet thin: the command handlers still live here; moving them into a `cli`
//! module (argument structs and one file per command family) is the next step.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use sweeper::store::table::{self, Table};
use sweeper::store::{self, JobFilter, JobState, Store, StoreError};
use sweeper::sweep::{self, SweepError};
use sweeper::worker::{self, DeviceRequest, WorkerConfig};

#[derive(Debug, Parser)]
#[command(
    name = "sweeper",
    version,
    about = "Experiment sweeps for self-supervised learning: TOML grids in, jobs in SQLite or Postgres, workers, tables out."
)]
struct Cli {
    /// The store: sqlite://PATH (created when missing) or postgres://USER@HOST/DB.
    #[arg(long, global = true, env = "SWEEPER_DB", default_value = store::DEFAULT_URL)]
    db: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a sweep file and add its missing jobs to the store.
    Submit(SubmitArgs),
    /// Job counts per stage and state; running jobs with worker, step and lease.
    Status(StatusArgs),
    /// List jobs.
    Jobs(JobsArgs),
    /// Cancel queued jobs at once; ask the workers of running ones to stop them.
    Cancel(SelectArgs),
    /// Put failed or cancelled jobs back in the queue.
    Retry(SelectArgs),
    /// Print a command job's output log: its stdout and stderr, every attempt.
    Logs(LogsArgs),
    /// List the workers that registered in the store.
    Workers(FormatArgs),
    /// Run read-only SQL against the store.
    Query(QueryArgs),
    /// Claim and run jobs until stopped.
    Worker(WorkerArgs),
    /// The study's tables: Markdown like the seed report, or every job as CSV or JSON.
    Report(ReportArgs),
    /// Record results of runs made elsewhere (CSV) as succeeded jobs of a stage.
    Import(ImportArgs),
    /// Write the loss curves and loss heat maps of a sweep as PNG and SVG.
    Plot(PlotArgs),
    /// Every backbone with its parameter count, feature width and input sizes.
    Models,
    /// libtorch's version, whether CUDA works, and each GPU.
    Devices(DevicesArgs),
    /// Run one job of a sweep file without the queue, with a progress bar.
    Train(TrainArgs),
    /// Generate a small cytology-like ImageFolder (sets A and B) for demos and tests.
    MakeDataset(MakeDatasetArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ReportFormat {
    Md,
    Csv,
    Json,
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// The sweep; optional when the store holds only one.
    sweep: Option<String>,
    #[arg(long, value_enum, default_value = "md")]
    format: ReportFormat,
    /// Also write the plots (PNG and SVG) into this directory.
    #[arg(long)]
    plots: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ImportArgs {
    /// CSV with a header of axis names and metric names, e.g.
    /// `backbone,data_fraction,batch_size,projection_dim,loss`.
    file: PathBuf,
    /// The sweep the rows belong to.
    #[arg(long)]
    sweep: String,
    /// The stage whose grid cells the rows are.
    #[arg(long)]
    stage: String,
    /// The sweep file, to store the sweep first when the store does not hold it yet
    /// (no job is queued; `submit` later adds only the cells not imported).
    #[arg(long)]
    sweep_file: Option<PathBuf>,
    /// Overrides the sweep's data root (with --sweep-file).
    #[arg(long, env = "SWEEPER_DATA_ROOT")]
    data_root: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct PlotArgs {
    /// The sweep; optional when the store holds only one.
    sweep: Option<String>,
    /// Directory the figures go to.
    #[arg(long, default_value = "plots")]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct DevicesArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct TrainArgs {
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
struct MakeDatasetArgs {
    /// Output directory (setA/, setB/train, setB/test are created in it).
    dir: PathBuf,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Side of the square images, in pixels.
    #[arg(long, default_value_t = 64)]
    image_size: u32,
}

#[derive(Debug, Args)]
struct SubmitArgs {
    /// The sweep file (TOML).
    file: PathBuf,
    /// Print the expansion (jobs per stage) and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Overrides the sweep's data root.
    #[arg(long, env = "SWEEPER_DATA_ROOT")]
    data_root: Option<PathBuf>,
    /// Most cells one stage may expand to (axes × seeds).
    #[arg(long, default_value_t = sweep::check::DEFAULT_MAX_CELLS)]
    max_cells: usize,
    /// Do not check that the datasets' folders exist here (the data lives only on
    /// the workers' machines).
    #[arg(long)]
    no_data_check: bool,
    /// Record the file as a new version of the sweep even where it changes what
    /// stored cells were made with (without it such a file is refused).
    #[arg(long)]
    new_version: bool,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// Only this sweep.
    sweep: Option<String>,
    #[command(flatten)]
    format: FormatArgs,
}

#[derive(Debug, Args)]
struct JobsArgs {
    #[arg(long)]
    sweep: Option<String>,
    #[arg(long)]
    stage: Option<String>,
    #[arg(long, value_parser = parse_state)]
    state: Option<JobState>,
    /// At most this many jobs.
    #[arg(long)]
    limit: Option<i64>,
    #[command(flatten)]
    format: FormatArgs,
}

#[derive(Debug, Args)]
struct SelectArgs {
    /// Job ids.
    ids: Vec<Uuid>,
    #[arg(long)]
    sweep: Option<String>,
    #[arg(long)]
    stage: Option<String>,
    #[arg(long, value_parser = parse_state)]
    state: Option<JobState>,
}

#[derive(Debug, Args)]
struct LogsArgs {
    /// The job: its id, or the start of it when no other job's id starts the same.
    job: String,
    /// The artifact store the workers write to, as `worker --artifacts` takes it.
    #[arg(long, env = "SWEEPER_ARTIFACTS", default_value = "artifacts")]
    artifacts: String,
    /// A worker's scratch directory on this machine, read first, as `worker --scratch`
    /// takes it: a running job's log is there before it reaches the store.
    #[arg(long, env = "SWEEPER_SCRATCH")]
    scratch: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct FormatArgs {
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    Table,
    Csv,
    Json,
}

#[derive(Debug, Args)]
struct QueryArgs {
    /// One SQL statement; it runs read-only whatever it says.
    sql: String,
    #[command(flatten)]
    format: FormatArgs,
}

#[derive(Debug, Args)]
struct WorkerArgs {
    /// cpu, cuda:N, or auto (a GPU no other live worker of this host holds, else cpu).
    #[arg(long, default_value = "auto")]
    device: DeviceRequest,
    /// Stop after this many jobs.
    #[arg(long)]
    max_jobs: Option<u64>,
    /// Stop once no job is queued or running in the store.
    #[arg(long)]
    exit_when_idle: bool,
    /// The worker's name in `status` and `workers` (default: host-pid).
    #[arg(long)]
    name: Option<String>,
    /// The host recorded in `workers` (default: this machine's hostname); `--device
    /// auto` shares GPUs among the workers of one host.
    #[arg(long, env = "SWEEPER_HOST")]
    host: Option<String>,
    /// The artifact store every worker reaches: a directory, file:///shared/dir or
    /// s3://bucket/prefix (credentials from AWS_* variables, SWEEPER_S3_ENDPOINT).
    /// A job's outputs go under <sweep>/<job id>.
    #[arg(long, env = "SWEEPER_ARTIFACTS", default_value = "artifacts")]
    artifacts: String,
    /// Where jobs write on this machine (default: the artifact directory when it is
    /// one, else scratch/).
    #[arg(long, env = "SWEEPER_SCRATCH")]
    scratch: Option<PathBuf>,
    /// Decoded-image caches, local to this machine (default: <scratch>/cache).
    #[arg(long, env = "SWEEPER_CACHE")]
    cache: Option<PathBuf>,
    /// Overrides the sweeps' data root.
    #[arg(long, env = "SWEEPER_DATA_ROOT")]
    data_root: Option<PathBuf>,
    /// Seconds a claim or heartbeat holds a job.
    #[arg(long, env = "SWEEPER_LEASE_SECS", default_value = "60", value_parser = parse_seconds)]
    lease_secs: Duration,
    /// Seconds between heartbeats (and cancel checks).
    #[arg(long, env = "SWEEPER_HEARTBEAT_SECS", default_value = "10", value_parser = parse_seconds)]
    heartbeat_secs: Duration,
    /// Seconds between claims when the queue is empty.
    #[arg(long, env = "SWEEPER_POLL_SECS", default_value = "2", value_parser = parse_seconds)]
    poll_secs: Duration,
    /// Seconds a job has to stop at shutdown before its lease is given back.
    #[arg(long, env = "SWEEPER_SHUTDOWN_GRACE_SECS", default_value = "30", value_parser = parse_seconds)]
    shutdown_grace_secs: Duration,
    /// First retry delay after a retryable failure; doubles with every attempt.
    #[arg(long, env = "SWEEPER_RETRY_BACKOFF_SECS", default_value = "10", value_parser = parse_seconds)]
    retry_backoff_secs: Duration,
    /// Stop (exit 1) after this many jobs in a row failed for reasons of this machine
    /// (GPU, driver, memory, disk, artifact store), so that a launcher restarts or
    /// reschedules the worker; 0 never stops.
    #[arg(long, env = "SWEEPER_MAX_INFRA_FAILURES", default_value_t = 3)]
    max_infra_failures: u32,
    /// Seconds added to this machine's clock as the worker sees it (tests only:
    /// leases follow the database's clock whatever this says).
    #[arg(
        long,
        env = "SWEEPER_CLOCK_SKEW_SECS",
        default_value_t = 0.0,
        value_parser = parse_skew,
        hide = true,
        allow_negative_numbers = true
    )]
    clock_skew_secs: f64,
    /// Answer liveness probes on IP:PORT (`GET /healthz`: 200 ok, or 503 and why);
    /// port 0 takes a free one, logged. Off by default.
    #[arg(long, env = "SWEEPER_HEALTH_ADDR", value_name = "IP:PORT")]
    health_addr: Option<std::net::SocketAddr>,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Claim + complete throughput of the store, in jobs per second.
    Queue(BenchQueueArgs),
    /// SimCLR training throughput (images/s) of one backbone; one JSON line.
    Train(BenchTrainArgs),
}

#[derive(Debug, Args)]
struct BenchTrainArgs {
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
struct BenchQueueArgs {
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

/// Input the user must fix: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadInput(String);

fn parse_state(text: &str) -> Result<JobState, String> {
    JobState::parse(text).ok_or_else(|| {
        format!("unknown state {text:?}: use queued, running, succeeded, failed or cancelled")
    })
}

/// The longest period any duration flag takes: longer ones would overflow the
/// clocks they are added to (and mean nothing for a lease or a poll).
const MAX_FLAG_SECS: f64 = 365.0 * 86_400.0;

fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= MAX_FLAG_SECS => Duration::try_from_secs_f64(secs)
            .map_err(|error| format!("{text:?} is not a usable number of seconds: {error}")),
        Ok(secs) if secs > MAX_FLAG_SECS => Err(format!(
            "{text:?} seconds is more than a year ({MAX_FLAG_SECS} s), the longest period taken"
        )),
        _ => Err(format!("{text:?} is not a positive number of seconds")),
    }
}

/// A clock offset in seconds, either sign, at most a year.
fn parse_skew(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(secs) if secs.abs() <= MAX_FLAG_SECS => Ok(secs),
        _ => Err(format!(
            "{text:?} is not a number of seconds within a year either way"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Worker(_)) {
        "info"
    } else {
        "warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWEEPER_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default_level},sqlx=error"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(sweeper::redact::redacted_stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "error: {}",
                sweeper::redact::redact_url(&format!("{error:#}"))
            );
            ExitCode::from(exit_status(&error))
        }
    }
}

/// 2 when the error is the user's input (a sweep file, an id, a name, SQL), else 1.
fn exit_status(error: &anyhow::Error) -> u8 {
    let bad_input = error.chain().any(|cause| {
        cause.is::<SweepError>()
            || cause.is::<BadInput>()
            || cause
                .downcast_ref::<StoreError>()
                .is_some_and(StoreError::is_bad_input)
            || cause
                .downcast_ref::<sweeper::report::ReportError>()
                .is_some_and(sweeper::report::ReportError::is_bad_input)
            || cause.is::<sweeper::devices::DeviceError>()
            || cause
                .downcast_ref::<worker::WorkerError>()
                .is_some_and(worker::WorkerError::is_bad_input)
    });
    if bad_input {
        2
    } else {
        1
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let db = cli.db.as_str();
    match cli.command {
        Command::Submit(args) => submit(db, args).await,
        Command::Status(args) => status(db, args).await,
        Command::Jobs(args) => jobs(db, args).await,
        Command::Cancel(args) => cancel(db, args).await,
        Command::Retry(args) => retry(db, args).await,
        Command::Logs(args) => logs(db, args).await,
        Command::Workers(args) => workers(db, args).await,
        Command::Query(args) => query(db, args).await,
        Command::Worker(args) => run_worker(db, args).await,
        Command::Report(args) => report(db, args).await,
        Command::Import(args) => import(db, args).await,
        Command::Plot(args) => plot(db, args).await,
        Command::Models => models().await,
        Command::Devices(args) => devices(args),
        Command::Train(args) => train(args).await,
        Command::MakeDataset(args) => make_dataset(args).await,
        Command::Bench(BenchCommand::Queue(args)) => bench_queue(args).await,
        Command::Bench(BenchCommand::Train(args)) => bench_train(args).await,
    }
}

/// The named sweep, or the only one in the store.
async fn sweep_name(store: &Store, given: Option<String>) -> anyhow::Result<String> {
    if let Some(name) = given {
        return Ok(name);
    }
    let names = store.sweeps().await?;
    match names.as_slice() {
        [only] => Ok(only.clone()),
        [] => Err(BadInput("the store holds no sweep; submit one first".into()).into()),
        _ => Err(BadInput(format!(
            "the store holds several sweeps ({}); name one",
            names.join(", ")
        ))
        .into()),
    }
}

async fn report(db: &str, args: ReportArgs) -> anyhow::Result<()> {
    let store = open_reaped(db).await?;
    let name = sweep_name(&store, args.sweep).await?;
    let input = sweeper::report::from_store::load(&store, &name).await?;
    match args.format {
        ReportFormat::Md => print!("{}", sweeper::report::markdown(&input)),
        ReportFormat::Csv => print!("{}", sweeper::report::csv(&input)),
        ReportFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&sweeper::report::json(&input))?
        ),
    }
    if let Some(dir) = args.plots {
        let written = sweeper::report::plots(&input, &dir)?;
        eprintln!("{} plot files written to {}", written.len(), dir.display());
    }
    Ok(())
}

async fn plot(db: &str, args: PlotArgs) -> anyhow::Result<()> {
    let store = open_reaped(db).await?;
    let name = sweep_name(&store, args.sweep).await?;
    let input = sweeper::report::from_store::load(&store, &name).await?;
    let written = sweeper::report::plots(&input, &args.out)?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

async fn import(db: &str, args: ImportArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| BadInput(format!("cannot read {}: {e}", args.file.display())))?;
    let store = open(db).await?;
    let stored = store.spec(&args.sweep).await?;
    // The sweep file is stored only once the rows are known to fit it: a bad CSV
    // leaves the store as it was.
    let (spec, new_sweep) = match (&args.sweep_file, stored) {
        (Some(file), stored) => {
            // Imported results were trained elsewhere: the data need not be here.
            let overrides = sweep::Overrides {
                data_root: args.data_root.clone(),
                ..sweep::Overrides::default()
            };
            let loaded = sweep::load_file(file, &overrides)?;
            if loaded.spec.name != args.sweep {
                bail!(BadInput(format!(
                    "{} defines sweep {:?}, not {:?}",
                    file.display(),
                    loaded.spec.name,
                    args.sweep
                )));
            }
            match stored {
                Some(_) => (loaded.spec, None),
                None => (loaded.spec.clone(), Some(loaded)),
            }
        }
        (None, Some(spec)) => (spec, None),
        (None, None) => bail!(BadInput(format!(
            "no sweep named {:?} in the store; pass --sweep-file to store it",
            args.sweep
        ))),
    };
    let rows = sweeper::report::from_store::import_rows(&spec, &args.stage, &text, &args.file)?;
    if let Some(loaded) = new_sweep {
        store
            .submit(&loaded.spec, &loaded.text, &loaded.hash, &[])
            .await?;
    }
    let summary =
        sweeper::report::from_store::import_checked(&store, &spec, rows, &args.file).await?;
    println!(
        "sweep {} stage {}: {} rows imported as succeeded jobs, {} already run here and kept",
        args.sweep, args.stage, summary.imported, summary.kept
    );
    Ok(())
}

async fn models() -> anyhow::Result<()> {
    let table = tokio::task::spawn_blocking(sweeper::train::backbone::models_table)
        .await
        .context("the model table thread failed")?;
    print!("{table}");
    Ok(())
}

fn devices(args: DevicesArgs) -> anyhow::Result<()> {
    let report = sweeper::devices::describe();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

async fn train(args: TrainArgs) -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let overrides = sweep::Overrides {
        data_root: args.data_root.clone(),
        check_data: true,
        ..sweep::Overrides::default()
    };
    let loaded = sweep::load_file(&args.file, &overrides)?;
    let spec = &loaded.spec;
    let stage = match &args.stage {
        Some(name) => spec
            .stage(name)
            .ok_or_else(|| BadInput(format!("{}: no stage named {name:?}", args.file.display())))?,
        None => spec
            .stages
            .first()
            .ok_or_else(|| BadInput(format!("{}: no stages", args.file.display())))?,
    };
    let mut settings = Vec::new();
    for item in &args.set {
        let (key, value) = item
            .split_once('=')
            .ok_or_else(|| BadInput(format!("--set {item:?}: expected KEY=VALUE")))?;
        let value = serde_json::from_str::<Value>(value).unwrap_or(Value::String(value.into()));
        settings.push((key.to_owned(), value));
    }
    // A root stage's cells; a downstream stage runs on its own parameters plus --set.
    let mut params = if stage.from.is_none() {
        let cells: Vec<_> = sweep::expand::expand(spec)
            .into_iter()
            .filter(|job| job.stage == stage.name)
            .collect();
        let matches = |p: &sweep::Params| {
            settings.iter().all(|(key, value)| {
                p.get(key).map_or(true, |v| {
                    v == value || v.as_f64().is_some() && v.as_f64() == value.as_f64()
                })
            })
        };
        cells
            .into_iter()
            .find(|job| matches(&job.params))
            .map(|job| job.params)
            .ok_or_else(|| {
                BadInput(format!(
                    "no cell of stage {:?} matches the --set values",
                    stage.name
                ))
            })?
    } else {
        stage.params.clone()
    };
    for (key, value) in settings {
        params.insert(key, value);
    }
    let dataset_name = stage
        .dataset
        .as_deref()
        .ok_or_else(|| BadInput(format!("stage {:?} names no dataset", stage.name)))?;
    let dataset = spec
        .datasets
        .get(dataset_name)
        .cloned()
        .ok_or_else(|| BadInput(format!("no dataset {dataset_name:?}")))?;
    let device = sweeper::devices::parse_device(&args.device)?
        .resolve(&[], tch::Cuda::device_count())
        .to_tch();
    let job = sweeper::train::TrainJob {
        job_id: Uuid::now_v7(),
        attempt: 1,
        kind: stage.kind,
        params,
        dataset,
        dataset_name: dataset_name.to_owned(),
        data_root: spec.data_root.clone(),
        job_dir: args.out.clone(),
        init_checkpoint: args.init.clone(),
        cache_dir: args.cache.clone(),
        device,
    };
    eprintln!(
        "training stage {} ({}) on {:?}: {}",
        stage.name,
        stage.kind.as_str(),
        device,
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

async fn make_dataset(args: MakeDatasetArgs) -> anyhow::Result<()> {
    use sweeper::train::synth;
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

async fn bench_train(args: BenchTrainArgs) -> anyhow::Result<()> {
    use sweeper::train::standalone::{BenchMode, BenchOptions};
    let mode = match args.mode.as_str() {
        "compute" => BenchMode::Compute,
        "end_to_end" | "e2e" => BenchMode::EndToEnd,
        other => bail!(BadInput(format!(
            "--mode {other:?}: use compute or end_to_end"
        ))),
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

async fn open(db: &str) -> anyhow::Result<Store> {
    Ok(Store::open(db).await?)
}

/// Opens the store and first requeues (attempts left) or fails (none left) the jobs
/// whose lease expired, so that a command never shows or acts on a job as running
/// when no worker holds it, whether or not any worker is alive to reap.
async fn open_reaped(db: &str) -> anyhow::Result<Store> {
    let store = open(db).await?;
    store.reap().await?;
    Ok(store)
}

fn print_table(table: &Table, format: OutputFormat) {
    let format = match format {
        OutputFormat::Table => table::Format::Text,
        OutputFormat::Csv => table::Format::Csv,
        OutputFormat::Json => table::Format::Json,
    };
    print!("{}", table.render(format));
}

async fn submit(db: &str, args: SubmitArgs) -> anyhow::Result<()> {
    let overrides = sweep::Overrides {
        data_root: args.data_root,
        max_cells: Some(args.max_cells),
        check_data: !args.no_data_check,
    };
    let loaded = sweep::load_file(&args.file, &overrides)?;
    if args.dry_run {
        print!("{}", sweep::expand::dry_run_summary(&loaded.spec));
        return Ok(());
    }
    let jobs = sweep::expand::expand(&loaded.spec);
    let store = open(db).await?;
    let summary = store
        .submit_version(
            &loaded.spec,
            &loaded.text,
            &loaded.hash,
            &jobs,
            args.new_version,
        )
        .await
        .with_context(|| format!("cannot submit {}", args.file.display()))?;
    println!(
        "sweep {} (version {}): {} jobs added, {} already stored and kept",
        loaded.spec.name, summary.version, summary.added, summary.kept
    );
    Ok(())
}

async fn status(db: &str, args: StatusArgs) -> anyhow::Result<()> {
    let store = open_reaped(db).await?;
    if let Some(sweep) = &args.sweep {
        if store.spec(sweep).await?.is_none() {
            return Err(StoreError::UnknownSweep {
                name: sweep.clone(),
            }
            .into());
        }
    }
    let counts = store.stage_counts(args.sweep.as_deref()).await?;
    let mut columns = vec!["sweep", "stage"];
    columns.extend(JobState::ALL.iter().map(|s| s.as_str()));
    columns.push("total");
    let mut table = Table::new(columns);
    let mut rows: Vec<((String, String), [i64; 5])> = Vec::new();
    for count in counts {
        let key = (count.sweep, count.stage);
        let at = match rows.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                rows.push((key, [0; 5]));
                rows.len() - 1
            }
        };
        let column = JobState::ALL
            .iter()
            .position(|s| *s == count.state)
            .unwrap_or(0);
        rows[at].1[column] += count.count;
    }
    for ((sweep, stage), per_state) in rows {
        let mut row = vec![json!(sweep), json!(stage)];
        row.extend(per_state.iter().map(|n| json!(n)));
        row.push(json!(per_state.iter().sum::<i64>()));
        table.push(row);
    }
    let running = store.running(args.sweep.as_deref()).await?;
    let stale = store.stale_decisions(args.sweep.as_deref()).await?;
    if matches!(args.format.format, OutputFormat::Json) {
        let running: Vec<Value> = running.iter().map(|r| json!(r)).collect();
        let counts: Value = serde_json::from_str(&table.to_json())?;
        let stale: Value = serde_json::from_str(&stale.to_json())?;
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"stages": counts, "running": running, "stale_decisions": stale})
            )?
        );
        return Ok(());
    }
    print_table(&table, args.format.format);
    if !running.is_empty() {
        let mut jobs = Table::new([
            "running job",
            "stage",
            "attempt",
            "worker",
            "step",
            "running s",
            "heartbeat age s",
            "lease left s",
        ]);
        for job in running {
            let stage = if job.cancel_requested {
                format!("{} (cancelling)", job.stage)
            } else {
                job.stage
            };
            jobs.push(vec![
                json!(job.id.to_string()),
                json!(stage),
                json!(job.attempt),
                json!(job.worker),
                json!(job.step),
                json!((job.running_seconds * 10.0).round() / 10.0),
                json!((job.heartbeat_age_seconds * 10.0).round() / 10.0),
                json!((job.lease_left_seconds * 10.0).round() / 10.0),
            ]);
        }
        println!();
        print_table(&jobs, args.format.format);
    }
    if !stale.rows.is_empty() {
        println!();
        print_table(&stale, args.format.format);
    }
    Ok(())
}

async fn jobs(db: &str, args: JobsArgs) -> anyhow::Result<()> {
    let store = open_reaped(db).await?;
    let filter = JobFilter {
        ids: Vec::new(),
        sweep: args.sweep,
        stage: args.stage,
        state: args.state,
    };
    let rows = store.jobs(&filter, args.limit).await?;
    let mut table = Table::new([
        "id", "sweep", "stage", "state", "attempt", "max", "worker", "params", "result", "error",
    ]);
    for job in rows {
        let error = match (&job.error_kind, &job.error_message) {
            (Some(kind), Some(message)) => json!(format!("{kind}: {}", first_line(message))),
            (Some(kind), None) => json!(kind),
            _ => Value::Null,
        };
        table.push(vec![
            json!(job.id.to_string()),
            json!(job.sweep),
            json!(job.stage),
            json!(job.state.as_str()),
            json!(job.attempt),
            json!(job.max_attempts),
            json!(job.worker),
            json!(Value::Object(job.params).to_string()),
            job.result.map_or(Value::Null, |r| json!(r.to_string())),
            error,
        ]);
    }
    print_table(&table, args.format.format);
    Ok(())
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

fn job_filter(args: SelectArgs, verb: &str) -> anyhow::Result<JobFilter> {
    if args.ids.is_empty() && args.sweep.is_none() && args.stage.is_none() && args.state.is_none() {
        return Err(BadInput(format!(
            "{verb} needs job ids or --sweep, --stage or --state"
        ))
        .into());
    }
    Ok(JobFilter {
        ids: args.ids,
        sweep: args.sweep,
        stage: args.stage,
        state: args.state,
    })
}

async fn cancel(db: &str, args: SelectArgs) -> anyhow::Result<()> {
    let filter = job_filter(args, "cancel")?;
    let store = open_reaped(db).await?;
    let summary = store.cancel(&filter).await?;
    println!(
        "{} queued jobs cancelled; {} running jobs asked to stop",
        summary.cancelled, summary.stopping
    );
    Ok(())
}

async fn retry(db: &str, args: SelectArgs) -> anyhow::Result<()> {
    let filter = job_filter(args, "retry")?;
    if filter
        .state
        .is_some_and(|s| !matches!(s, JobState::Failed | JobState::Cancelled))
    {
        bail!(BadInput(
            "retry takes --state failed or --state cancelled".into()
        ));
    }
    let store = open_reaped(db).await?;
    let retried = store.retry(&filter).await?;
    println!("{retried} jobs back in the queue");
    Ok(())
}

async fn logs(db: &str, args: LogsArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    let prefix = store::IdPrefix::parse(&args.job).ok_or_else(|| {
        BadInput(format!(
            "{:?} is not a job id or the start of one",
            args.job
        ))
    })?;
    let store = open(db).await?;
    let mut found = store.jobs_by_id_prefix(&prefix, 2).await?;
    let job = match found.len() {
        0 => bail!(BadInput(format!("no job id starts with {:?}", args.job))),
        1 => found.remove(0),
        _ => bail!(BadInput(format!(
            "several job ids start with {:?} ({}, {}, …): give more of the id",
            args.job, found[0].id, found[1].id
        ))),
    };
    if job.kind != sweep::StageKind::Command {
        bail!(BadInput(format!(
            "job {} is a {} job: only command jobs keep an output log",
            job.id,
            job.kind.as_str()
        )));
    }
    let log = worker::read_output_log(&args.artifacts, args.scratch.as_deref(), &job.sweep, job.id)
        .await?;
    let Some(bytes) = log else {
        bail!(
            "job {} ({}) has no output log in {}",
            job.id,
            job.state.as_str(),
            args.artifacts
        );
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&bytes)?;
    stdout.flush()?;
    Ok(())
}

async fn workers(db: &str, args: FormatArgs) -> anyhow::Result<()> {
    let store = open_reaped(db).await?;
    let mut table = Table::new([
        "name",
        "host",
        "pid",
        "device",
        "state",
        "job",
        "last seen s",
        "started",
    ]);
    for worker in store.workers().await? {
        let state = if worker.stopped_at.is_some() {
            "stopped"
        } else if worker.seconds_since_seen > 120.0 {
            "silent"
        } else {
            "live"
        };
        table.push(vec![
            json!(worker.name),
            json!(worker.host),
            json!(worker.pid),
            json!(worker.device),
            json!(state),
            json!(worker.job.map(|id| id.to_string())),
            json!(worker.seconds_since_seen.round()),
            json!(worker.started_at.to_rfc3339()),
        ]);
    }
    print_table(&table, args.format);
    Ok(())
}

async fn query(db: &str, args: QueryArgs) -> anyhow::Result<()> {
    let table = store::query_read_only(db, &args.sql).await?;
    print_table(&table, args.format.format);
    Ok(())
}

async fn run_worker(db: &str, args: WorkerArgs) -> anyhow::Result<()> {
    let store = open(db).await?;
    let host = args.host.unwrap_or_else(worker::hostname);
    let name = args
        .name
        .unwrap_or_else(|| format!("{host}-{}", std::process::id()));
    let mut config = WorkerConfig::new(name, args.device);
    config.host = Some(host);
    config.max_jobs = args.max_jobs;
    config.exit_when_idle = args.exit_when_idle;
    config.cache_dir = args.cache;
    config.scratch = args.scratch;
    config.artifacts = args.artifacts;
    config.clock_skew_secs = args.clock_skew_secs;
    config.data_root = args.data_root;
    config.lease = args.lease_secs;
    config.heartbeat = args.heartbeat_secs;
    config.poll = args.poll_secs;
    config.shutdown_grace = args.shutdown_grace_secs;
    config.retry_backoff = args.retry_backoff_secs;
    config.max_infra_failures = args.max_infra_failures;
    config.health_addr = args.health_addr;
    if config.heartbeat >= config.lease {
        bail!(BadInput(
            "--heartbeat-secs must be shorter than --lease-secs".into()
        ));
    }

    let shutdown = CancellationToken::new();
    let kill = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone(), kill.clone()));
    let ran = worker::run_with_kill(store.clone(), config, shutdown, kill.clone()).await;
    store.close().await;
    if kill.is_cancelled() {
        // The job was killed and given back; a second signal still means "now".
        std::process::exit(130);
    }
    ran?;
    Ok(())
}

/// The first SIGINT/SIGTERM asks the worker to finish up; a second one kills the
/// running job (its process group), gives its lease back and exits 130; a third, or
/// a worker still not done after [`KILL_EXIT_AFTER`], exits at once.
async fn watch_signals(shutdown: CancellationToken, kill: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for signals; stop the worker with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("signal received: no more claims; stopping the running job");
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: killing the running job and giving it back");
    kill.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        () = tokio::time::sleep(KILL_EXIT_AFTER) => {}
    }
    tracing::warn!("exiting now");
    std::process::exit(130);
}

/// How long a second signal waits for the job to be killed and given back.
const KILL_EXIT_AFTER: Duration = Duration::from_secs(15);

async fn bench_queue(args: BenchQueueArgs) -> anyhow::Result<()> {
    let mut table = Table::new([
        "backend",
        "workers",
        "jobs",
        "seconds",
        "jobs/s",
        "python sqlite3 jobs/s",
        "ratio",
    ]);
    let mut targets: Vec<(String, bool)> = Vec::new();
    let sqlite_path = std::env::temp_dir().join(format!("sweeper-bench-{}.db", Uuid::now_v7()));
    targets.push((format!("sqlite://{}", sqlite_path.display()), true));
    if let Some(url) = &args.postgres {
        targets.push((url.clone(), false));
    }
    for (url, is_sqlite) in &targets {
        for &workers in &args.workers {
            let figure = store::bench::bench_queue(url, args.jobs, workers).await?;
            let reference = match (&args.reference_python, is_sqlite) {
                (Some(python), true) => Some(python_reference(python, args.jobs, workers)?),
                _ => None,
            };
            let rate = figure.jobs_per_second();
            table.push(vec![
                json!(if *is_sqlite { "sqlite" } else { "postgres" }),
                json!(workers),
                json!(figure.jobs),
                json!((figure.seconds * 1000.0).round() / 1000.0),
                json!(rate.round()),
                json!(reference.map(f64::round)),
                json!(reference.map(|r| (rate / r * 10.0).round() / 10.0)),
            ]);
        }
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", sqlite_path.display()));
    }
    print_table(&table, OutputFormat::Table);
    Ok(())
}

/// Runs benches/queue_reference.py and reads its jobs per second.
fn python_reference(python: &std::path::Path, jobs: usize, workers: usize) -> anyhow::Result<f64> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("benches/queue_reference.py");
    let output = std::process::Command::new(python)
        .arg(&script)
        .args([
            "--jobs",
            &jobs.to_string(),
            "--workers",
            &workers.to_string(),
        ])
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !output.status.success() {
        bail!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let report: Value = serde_json::from_slice(&output.stdout)
        .with_context(|| format!("{} printed no JSON", script.display()))?;
    report["jobs_per_second"]
        .as_f64()
        .with_context(|| format!("{} printed no jobs_per_second", script.display()))
}
