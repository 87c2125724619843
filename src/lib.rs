//! # sweeper
//!
//! An experiment-sweep orchestrator for self-supervised learning. One TOML file
//! describes a study (a grid of SimCLR pretext runs, a selection rule, downstream
//! linear-protocol and fine-tuning runs); `submit` expands it into jobs in a store,
//! workers (one per device, on any machine that reaches the store) claim and train
//! them with libtorch, and `report` prints the study's tables from the store.
//!
//! ## Where things live
//!
//! - [`sweep`]: the sweep file. A raw serde model of what the user wrote, checked
//!   into a [`sweep::Spec`] (every cross-field rule, errors with file, line and
//!   field), grid expansion into [`sweep::JobSpec`]s with stable keys, and the
//!   selection rules that pick winners between stages.
//! - [`store`]: the job store over SQLite (embedded default) and Postgres (workers on
//!   many machines): atomic claims, leases renewed by heartbeat, fencing by
//!   `(job, attempt)`, the reaper, metrics, stage promotion, read-only queries.
//! - [`worker`]: the claim / run / complete loop, device pinning, heartbeats,
//!   cancellation and graceful shutdown; runs `command` jobs itself (their metric
//!   lines summarised into a typed result, their output kept in a log among the
//!   job's artifacts) and hands training jobs to [`train`] on a dedicated thread;
//!   an optional `/healthz` endpoint for liveness probes.
//! - [`train`]: libtorch through `tch`: backbones, the SimCLR pretext task (projection
//!   head, NT-Xent, LARS, warmup + cosine), batched augmentation on the training
//!   device, ImageFolder datasets with a shared decoded cache, the linear protocol,
//!   fine-tuning, checkpoints.
//! - [`artifacts`]: checkpoints, plots and other job outputs in one store every
//!   worker reaches: a local directory, a shared file system (`file://`) or S3
//!   (`s3://`); atomic writes, job directories mirrored up and fetched down.
//! - [`devices`]: what this host trains on (`sweeper devices`), `--device` parsing and
//!   `auto` GPU picking.
//! - [`redact`]: passwords masked out of URLs in anything shown or logged.
//! - [`progress`]: a running job's last epoch (metric, speed, ETA) as the worker
//!   logs and stores it, and a stage's ETA.
//! - [`provenance`]: what produced each attempt's numbers (code, libtorch, device,
//!   host, dataset fingerprint), stored with the attempt and summarised by `report`.
//! - [`report`]: the study's tables (Markdown like the seed report, CSV, JSON), CSV
//!   import of results run elsewhere (sweep file and rows, checked before anything is
//!   written), and plots.
//! - [`serve`]: `sweeper serve`, a read-only web dashboard over the store (axum,
//!   server-rendered pages, the report's figures as SVG, live parts re-fetched).
//! - [`status`]: what `status`, `jobs` and `workers` show, computed from the store's
//!   rows, and when a registered worker counts as live.
//!
//! The command line is the binary's: `src/main.rs` parses arguments, sets up tracing,
//! runs the command and maps its error to an exit status; `src/cli/` holds the clap
//! argument structs and one file per command family (`submit`, `status`, `report`,
//! `worker`, `train`). Its handlers read flags, call these modules and print; what
//! they compute (a standalone training job's plan in [`train::plan`], the queue
//! benchmark in [`store::bench`]) lives here.

pub mod artifacts;
pub mod devices;
pub mod progress;
pub mod provenance;
pub mod redact;
pub mod report;
pub mod serve;
pub mod status;
pub mod store;
pub mod sweep;
pub mod train;
pub mod worker;
