//! `sweeper submit`: check a sweep file and add its missing jobs to the store.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use sweeper::sweep;

#[derive(Debug, Args)]
pub(super) struct SubmitArgs {
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

pub(super) async fn submit(db: &str, args: SubmitArgs) -> anyhow::Result<()> {
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
    let jobs = sweep::expand::submitted(&loaded.spec);
    let store = super::open(db).await?;
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
