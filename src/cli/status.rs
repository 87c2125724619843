//! `sweeper status`, `jobs` and `workers` (tables from [`sweeper::status`]), and
//! `cancel` and `retry`, which act on the jobs a selection of ids, sweep, stage and
//! state names.

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use uuid::Uuid;

use sweeper::redact::redact_url;
use sweeper::status::{self, Status};
use sweeper::store::table;
use sweeper::store::{JobFilter, JobState, Store};

use super::{open_reaped, print_table, BadInput, FormatArgs};

#[derive(Debug, Args)]
pub(super) struct StatusArgs {
    /// Only this sweep.
    sweep: Option<String>,
    /// Redraw every SECONDS (2 when not given) until nothing is queued or running;
    /// on a terminal in place, otherwise one timestamped view after another.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
    watch: Option<f64>,
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
    let format = args.format.format;
    let Some(every) = args.watch else {
        let status = Status::read(&store, args.sweep.as_deref()).await?;
        print!("{}", status.render(format));
        return Ok(());
    };
    if !(every.is_finite() && every >= 0.1) {
        bail!(BadInput(format!(
            "--watch takes a number of seconds of at least 0.1, not {every}"
        )));
    }
    watch(
        &store,
        args.sweep.as_deref(),
        format,
        Duration::from_secs_f64(every),
    )
    .await
}

/// `status --watch`: one view per tick until nothing is left to run or Ctrl-C. A store
/// that stops answering is a line in the view, not the end of the watch.
async fn watch(
    store: &Store,
    sweep: Option<&str>,
    format: table::Format,
    every: Duration,
) -> anyhow::Result<()> {
    let terminal = std::io::stdout().is_terminal();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S");
        let read = async {
            store.reap().await?;
            Status::read(store, sweep).await
        };
        let (view, done) = match read.await {
            Ok(status) => (status.render(format), status.active() == 0),
            Err(error) if error.is_unavailable() => (
                format!(
                    "the store does not answer: {}\n",
                    redact_url(&error.to_string())
                ),
                false,
            ),
            Err(error) => return Err(error.into()),
        };
        let mut out = std::io::stdout().lock();
        if terminal {
            // Home and clear, then the whole view: one write, so it does not flicker.
            write!(
                out,
                "\x1b[H\x1b[2J{now}  every {every:?}, Ctrl-C to stop\n\n{view}"
            )?;
        } else {
            write!(out, "== {now} ==\n{view}\n")?;
        }
        out.flush()?;
        if done {
            return Ok(());
        }
    }
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

pub(super) async fn resume(db: &str, args: SelectArgs) -> anyhow::Result<()> {
    let filter = job_filter(args, "resume")?;
    if filter.state.is_some_and(|s| s != JobState::Stopped) {
        bail!(BadInput("resume takes --state stopped".into()));
    }
    let store = open_reaped(db).await?;
    let resumed = store.resume(&filter).await?;
    println!("{resumed} stopped jobs back in the queue, to run to their full epochs");
    Ok(())
}
