//! The commands that read what the store holds: `report`, `plot`, `query` and `logs`;
//! and `import`, which records results of runs made elsewhere.

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;

use sweeper::report::{self, from_store};
use sweeper::store::{self, Store};
use sweeper::{sweep, worker};

use super::{open, open_reaped, print_table, BadInput, FormatArgs};

#[derive(Debug, Args)]
pub(super) struct ReportArgs {
    /// The sweep; optional when the store holds only one.
    sweep: Option<String>,
    #[arg(long, value_enum, default_value = "md")]
    format: report::Format,
    /// With csv or json: one row per job (parameters, final metrics, state,
    /// attempts, duration, host, device) instead of one per job and metric.
    #[arg(long)]
    wide: bool,
    /// Also write the plots (PNG and SVG) into this directory.
    #[arg(long)]
    plots: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(super) struct MetricsArgs {
    /// The sweep; optional when the store holds only one.
    sweep: Option<String>,
    #[arg(long, value_enum, default_value_t = MetricsFormat::Csv)]
    format: MetricsFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MetricsFormat {
    // Plain comments: clap would print doc comments in `--help`. `jsonl` is one
    // object per line, so a history of millions of rows streams.
    Csv,
    Jsonl,
}

#[derive(Debug, Args)]
pub(super) struct ImportArgs {
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
    /// How the file's `loss` column was computed: `mean` over the 2N anchors
    /// (sweeper, lightly) or `sum` of both halves (google-research/simclr logs this,
    /// twice the mean); sets the chance levels the report compares against.
    #[arg(long, value_enum, default_value_t = report::LossConvention::Mean)]
    loss_convention: report::LossConvention,
}

#[derive(Debug, Args)]
pub(super) struct PlotArgs {
    /// The sweep; optional when the store holds only one.
    sweep: Option<String>,
    /// Directory the figures go to.
    #[arg(long, default_value = "plots")]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub(super) struct QueryArgs {
    /// One SQL statement; it runs read-only whatever it says.
    sql: String,
    #[command(flatten)]
    format: FormatArgs,
}

#[derive(Debug, Args)]
pub(super) struct LogsArgs {
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

pub(super) async fn report(db: &str, args: ReportArgs) -> anyhow::Result<()> {
    let store = open_reaped(db).await?;
    let name = sweep_name(&store, args.sweep).await?;
    if args.wide && args.format == report::Format::Md {
        bail!(BadInput(
            "--wide takes --format csv or --format json: the Markdown tables are the study's own"
                .into()
        ));
    }
    let input = from_store::load(&store, &name).await?;
    match (args.wide, args.format) {
        (true, report::Format::Json) => println!("{:#}", report::wide::json(&input)),
        (true, _) => print!("{}", report::wide::csv(&input)),
        (false, format) => print!("{}", report::render(&input, format)),
    }
    if let Some(dir) = args.plots {
        let mut input = input;
        from_store::load_histories(&store, &mut input).await?;
        let written = report::plots(&input, &dir)?;
        eprintln!("{} plot files written to {}", written.len(), dir.display());
    }
    Ok(())
}

pub(super) async fn plot(db: &str, args: PlotArgs) -> anyhow::Result<()> {
    let store = open_reaped(db).await?;
    let name = sweep_name(&store, args.sweep).await?;
    let mut input = from_store::load(&store, &name).await?;
    from_store::load_histories(&store, &mut input).await?;
    let written = report::plots(&input, &args.out)?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}

/// `metrics`: the history streamed to stdout as the store hands it over; a closed
/// pipe (`| head`) ends it quietly.
pub(super) async fn metrics(db: &str, args: MetricsArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    let store = open_reaped(db).await?;
    let name = sweep_name(&store, args.sweep).await?;
    if store.spec(&name).await?.is_none() {
        bail!(store::StoreError::UnknownSweep { name });
    }
    enum Sink {
        Csv(Box<csv::Writer<std::io::BufWriter<std::io::Stdout>>>),
        Jsonl(std::io::BufWriter<std::io::Stdout>),
    }
    let stdout = || std::io::BufWriter::new(std::io::stdout());
    let mut sink = match args.format {
        MetricsFormat::Csv => {
            let mut writer = csv::Writer::from_writer(stdout());
            writer.write_record([
                "job_id",
                "stage",
                "attempt",
                "step",
                "name",
                "value",
                "recorded_at",
            ])?;
            Sink::Csv(Box::new(writer))
        }
        MetricsFormat::Jsonl => Sink::Jsonl(stdout()),
    };
    let mut failed: Option<std::io::Error> = None;
    store
        .metric_history(&name, |stage, row| {
            let recorded_at = row.recorded_at.to_rfc3339();
            let written = match &mut sink {
                Sink::Csv(writer) => writer
                    .write_record([
                        row.job_id.to_string().as_str(),
                        stage,
                        &row.attempt.to_string(),
                        &row.step.to_string(),
                        &row.name,
                        &row.value.to_string(),
                        &recorded_at,
                    ])
                    .map_err(std::io::Error::from),
                Sink::Jsonl(out) => {
                    let line = serde_json::json!({
                        "job_id": row.job_id, "stage": stage, "attempt": row.attempt,
                        "step": row.step, "name": row.name, "value": row.value,
                        "recorded_at": recorded_at,
                    });
                    writeln!(out, "{line}")
                }
            };
            match written {
                Ok(()) => true,
                Err(error) => {
                    failed = Some(error);
                    false
                }
            }
        })
        .await?;
    let flushed = match failed {
        Some(error) => Err(error),
        None => match &mut sink {
            Sink::Csv(writer) => writer.flush(),
            Sink::Jsonl(out) => out.flush(),
        },
    };
    match flushed {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

pub(super) async fn import(db: &str, args: ImportArgs) -> anyhow::Result<()> {
    // A file that cannot be read is refused before the store is opened (or created).
    let text = from_store::read_import_file(&args.file)?;
    let store = open(db).await?;
    let request = from_store::ImportRequest {
        file: args.file,
        sweep: args.sweep,
        stage: args.stage,
        sweep_file: args.sweep_file,
        data_root: args.data_root,
        loss_convention: args.loss_convention,
    };
    let summary = from_store::import_file(&store, &request, &text).await?;
    println!(
        "sweep {} stage {}: {} rows imported as succeeded jobs, {} already run here and kept",
        request.sweep, request.stage, summary.imported, summary.kept
    );
    Ok(())
}

pub(super) async fn query(db: &str, args: QueryArgs) -> anyhow::Result<()> {
    let table = store::query_read_only(db, &args.sql).await?;
    print_table(&table, args.format.format);
    Ok(())
}

pub(super) async fn logs(db: &str, args: LogsArgs) -> anyhow::Result<()> {
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
