//! The integration tests, linked into one binary so that libtorch is linked once
//! rather than once per file. Each module is one area; `common` holds the helpers
//! they share and the `backend_tests!` macro that runs a test against SQLite and
//! Postgres.
//!
//! Run one area with `cargo test --release --test it multihost::`, one test with its
//! full path (`multihost::a_killed_hosts_job_resumes_on_another_host::postgres`).

#[macro_use]
mod common;

mod artifacts_atomic;
mod artifacts_sync;
mod backbones;
mod cli_refusals;
mod command_results;
mod data_load;
mod data_select;
mod data_symlinks;
mod data_synth;
mod linking;
mod multihost;
mod multihost_security;
mod provenance;
mod queue_cli;
mod queue_store;
mod queue_submit;
mod queue_workers;
mod redact_urls;
mod report_cli;
mod report_golden;
mod report_import;
mod report_plots;
mod report_seed;
mod report_states;
mod report_wide;
mod science_real;
mod serve_dashboard;
mod status_view;
mod store_outage;
mod store_readonly;
mod store_reaper;
mod submit_params;
mod sweep_halving;
mod sweep_redecide;
mod sweep_select;
mod sweep_spec;
mod train_downstream;
mod train_pretext;
mod train_resume;
mod train_science;
mod worker_health;
mod worker_infra;
mod worker_signals;
