//! `sweeper status`, `jobs` and `workers` (tables from [`sweeper::status`]), and
//! `cancel` and `retry`, which act on the jobs a selection of ids, sweep, stage and
//! state names.

use anyhow::bail;
use clap::Args;
use uuid::Uuid;

use sweeper::status::{self, Status};
use sweeper::store::table;
use sweeper::store::{JobFilter, JobState};

use super::{open_reaped, print_table, BadInput, FormatArgs};

#[derive(Debug, Args)]
pub(super) struct StatusArgs {
    /// Only this sweep.
    sweep: Option<String>,
    #[command(flatten)]
    format: FormatArgs,
}

#[derive(Debug, Args)]
pub(super) struct JobsArgs {
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
pub(super) struct SelectArgs {
    /// Job ids.
    ids: Vec<Uuid>,
    #[arg(long)]
    sweep: Option<String>,
    #[arg(long)]
    stage: Option<String>,
    #[arg(long, value_parser = parse_state)]
    state: Option<JobState>,
}

fn parse_state(text: &str) -> Result<JobState, String> {
    JobState::parse(text).ok_or_else(|| {
        format!("unknown state {text:?}: use queued, running, succeeded, failed or cancelled")
    })
}

pub(super) async fn status(db: &str, args: StatusArgs) -> anyhow::Result<()> {
    let store = open_reaped(db).await?;
    let status = Status::read(&store, args.sweep.as_deref()).await?;
    let format = args.format.format;
    if format == table::Format::Json {
        println!("{:#}", status.to_json());
        return Ok(());
    }
    print_table(&status.stages, format);
    if !status.running.is_empty() {
        println!();
        print_table(&status.running_table(), format);
    }
    if !status.stale_decisions.rows.is_empty() {
        println!();
        print_table(&status.stale_decisions, format);
    }
    Ok(())
}

pub(super) async fn jobs(db: &str, args: JobsArgs) -> anyhow::Result<()> {
    let store = open_reaped(db).await?;
    let filter = JobFilter {
        ids: Vec::new(),
        sweep: args.sweep,
        stage: args.stage,
        state: args.state,
    };
    let rows = store.jobs(&filter, args.limit).await?;
    print_table(&status::jobs_table(&rows), args.format.format);
    Ok(())
}

pub(super) async fn workers(db: &str, args: FormatArgs) -> anyhow::Result<()> {
    let store = open_reaped(db).await?;
    let rows = store.workers().await?;
    print_table(&status::workers_table(&rows), args.format);
    Ok(())
}

/// The jobs `verb` acts on; selecting every job of the store takes asking for it.
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

pub(super) async fn cancel(db: &str, args: SelectArgs) -> anyhow::Result<()> {
    let filter = job_filter(args, "cancel")?;
    let store = open_reaped(db).await?;
    let summary = store.cancel(&filter).await?;
    println!(
        "{} queued jobs cancelled; {} running jobs asked to stop",
        summary.cancelled, summary.stopping
    );
    Ok(())
}

pub(super) async fn retry(db: &str, args: SelectArgs) -> anyhow::Result<()> {
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
