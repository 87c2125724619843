//! The command line: the clap [`Cli`] and its [`Command`]s, one function per command,
//! and the exit status an error maps to. Each file holds one command family's
//! argument structs and handlers:
//!
//! - [`submit`] holds `submit`;
//! - [`status`] holds `status`, `jobs`, `workers`, `cancel`, `retry`, `resume`;
//! - [`report`] holds `report`, `plot`, `import`, `query`, `logs`;
//! - [`serve`] holds `serve`, the dashboard;
//! - [`worker`] holds `worker` and its signal handling;
//! - [`train`] holds `train`, `bench`, `devices`, `models`, `make-dataset`.
//!
//! A handler reads its flags, calls the library and prints; what it computes lives in
//! the library, where the worker and the tests reach it too. Adding a command is a
//! variant, an argument struct and a function.

use clap::{Args, Parser, Subcommand};

use sweeper::store::table::{self, Table};
use sweeper::store::{self, Store, StoreError};
use sweeper::sweep::SweepError;

mod report;
mod serve;
mod status;
mod submit;
mod train;
mod worker;

#[derive(Debug, Parser)]
#[command(
    name = "sweeper",
    version,
    about = "Experiment sweeps for self-supervised learning: TOML grids in, jobs in SQLite or Postgres, workers, tables out."
)]
pub struct Cli {
    /// The store: sqlite://PATH (created when missing) or postgres://USER@HOST/DB.
    #[arg(long, global = true, env = "SWEEPER_DB", default_value = store::DEFAULT_URL)]
    db: String,
    #[command(subcommand)]
    command: Command,
}

impl Cli {
    /// The level logged when `SWEEPER_LOG` is unset: a worker tells what it does, any
    /// other command only warns.
    pub fn default_log_level(&self) -> &'static str {
        if matches!(self.command, Command::Worker(_)) {
            "info"
        } else {
            "warn"
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a sweep file and add its missing jobs to the store.
    Submit(submit::SubmitArgs),
    /// Job counts per stage and state; running jobs with worker, step and lease.
    Status(status::StatusArgs),
    /// List jobs.
    Jobs(status::JobsArgs),
    /// Cancel queued jobs at once; ask the workers of running ones to stop them.
    Cancel(status::SelectArgs),
    /// Put failed or cancelled jobs back in the queue.
    Retry(status::SelectArgs),
    /// Send jobs a rung of successive halving stopped on to their full epoch count,
    /// from their checkpoints.
    Resume(status::SelectArgs),
    /// Print a command job's output log: its stdout and stderr, every attempt.
    Logs(report::LogsArgs),
    /// List the workers that registered in the store.
    Workers(FormatArgs),
    /// Run read-only SQL against the store.
    Query(report::QueryArgs),
    /// Claim and run jobs until stopped.
    Worker(worker::WorkerArgs),
    /// The study's tables: Markdown like the seed report, or every job as CSV or JSON.
    Report(report::ReportArgs),
    /// Every metric value a sweep's jobs recorded, long form (CSV or JSON lines).
    Metrics(report::MetricsArgs),
    /// Record results of runs made elsewhere (CSV) as succeeded jobs of a stage.
    Import(report::ImportArgs),
    /// A read-only web dashboard over the store: sweeps, progress, decisions, the
    /// report's tables and figures, jobs with live curves, workers.
    Serve(serve::ServeArgs),
    /// Write the loss curves and loss heat maps of a sweep as PNG and SVG.
    Plot(report::PlotArgs),
    /// Every backbone with its parameter count, feature width and input sizes.
    Models,
    /// libtorch's version, whether CUDA works, and each GPU.
    Devices(train::DevicesArgs),
    /// Run one job of a sweep file without the queue, with a progress bar.
    Train(train::TrainArgs),
    /// Generate a small cytology-like ImageFolder (sets A and B) for demos and tests.
    MakeDataset(train::MakeDatasetArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(train::BenchCommand),
}

/// Runs the command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let db = cli.db.as_str();
    match cli.command {
        Command::Submit(args) => submit::submit(db, args).await,
        Command::Status(args) => status::status(db, args).await,
        Command::Jobs(args) => status::jobs(db, args).await,
        Command::Cancel(args) => status::cancel(db, args).await,
        Command::Retry(args) => status::retry(db, args).await,
        Command::Resume(args) => status::resume(db, args).await,
        Command::Logs(args) => report::logs(db, args).await,
        Command::Workers(args) => status::workers(db, args).await,
        Command::Query(args) => report::query(db, args).await,
        Command::Worker(args) => worker::run_worker(db, args).await,
        Command::Report(args) => report::report(db, args).await,
        Command::Metrics(args) => report::metrics(db, args).await,
        Command::Import(args) => report::import(db, args).await,
        Command::Plot(args) => report::plot(db, args).await,
        Command::Serve(args) => serve::serve(db, args).await,
        Command::Models => train::models().await,
        Command::Devices(args) => train::devices(args),
        Command::Train(args) => train::train(args).await,
        Command::MakeDataset(args) => train::make_dataset(args).await,
        Command::Bench(train::BenchCommand::Queue(args)) => train::bench_queue(args).await,
        Command::Bench(train::BenchCommand::Train(args)) => train::bench_train(args).await,
        Command::Bench(train::BenchCommand::Serve(args)) => train::bench_serve(args).await,
        Command::Bench(train::BenchCommand::Scale(args)) => train::bench_scale(args).await,
        Command::Bench(train::BenchCommand::Halving(args)) => train::bench_halving(db, args).await,
    }
}

/// `--format table|csv|json` of the commands that print a [`Table`].
#[derive(Debug, Args)]
struct FormatArgs {
    #[arg(long, value_enum, default_value_t = table::Format::Text)]
    format: table::Format,
}

/// Input the user must fix that no library error names: exit status 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadInput(String);

/// 2 when the error is the user's input (a sweep file, an id, a name, SQL), else 1.
pub fn exit_status(error: &anyhow::Error) -> u8 {
    let bad_input = error.chain().any(|cause| {
        cause.is::<SweepError>()
            || cause.is::<BadInput>()
            || cause
                .downcast_ref::<StoreError>()
                .is_some_and(StoreError::is_bad_input)
            || cause
                .downcast_ref::<sweeper::report::ReportError>()
                .is_some_and(sweeper::report::ReportError::is_bad_input)
            || cause
                .downcast_ref::<store::bench::BenchError>()
                .is_some_and(store::bench::BenchError::is_bad_input)
            || cause.is::<sweeper::train::plan::PlanError>()
            || cause.is::<sweeper::devices::DeviceError>()
            || cause
                .downcast_ref::<sweeper::worker::WorkerError>()
                .is_some_and(sweeper::worker::WorkerError::is_bad_input)
    });
    if bad_input {
        2
    } else {
        1
    }
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

fn print_table(table: &Table, format: table::Format) {
    print!("{}", table.render(format));
}
