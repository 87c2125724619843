//! The dashboard's handlers: each reads what its page shows with aggregated or
//! indexed queries (counts per stage, one page of jobs, one job's metrics), never a
//! whole sweep's metric history, and renders it with [`super::pages`].

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::pages::{self, deferred, figure, layout, live};
use super::App;
use crate::report::plot::{self, ConfusionFigure, CurveFigure};
use crate::report::{self, from_store, JobRecord};
use crate::status::{self, Status};
use crate::store::table::Table;
use crate::store::{JobFilter, JobRow, JobState, StoreError};
use crate::sweep::StageKind;

/// Jobs per page of a sweep's job list.
const PAGE: i64 = 50;

/// Why a page could not be shown, as a status and a line of text.
pub(super) struct PageError(StatusCode, String);

impl From<StoreError> for PageError {
    fn from(error: StoreError) -> Self {
        let status = match &error {
            StoreError::UnknownSweep { .. } => StatusCode::NOT_FOUND,
            error if error.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        PageError(status, crate::redact::redact_url(&error.to_string()))
    }
}

impl From<report::ReportError> for PageError {
    fn from(error: report::ReportError) -> Self {
        PageError(StatusCode::INTERNAL_SERVER_ERROR, error.to_string())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        (self.0, layout("error", html! { p.failed { (self.1) } })).into_response()
    }
}

type Page = Result<Markup, PageError>;

fn job_link(id: &str) -> String {
    format!("/jobs/{id}")
}

/// Links the id columns of the status tables to their jobs.
fn link_jobs(column: &str, value: &Value) -> Option<String> {
    let id = value.as_str()?;
    matches!(column, "running job" | "id" | "job" | "job_id").then(|| job_link(id))
}

/// Every sweep with its stages' progress.
pub(super) async fn sweeps(State(app): State<Arc<App>>) -> Page {
    let status = Status::read(&app.store, None).await?;
    let names = app.store.sweeps().await?;
    let stages = status.stages.clone();
    Ok(layout(
        "sweeps",
        html! {
            @if names.is_empty() {
                p.muted { "The store holds no sweep yet: " code { "sweeper submit FILE" } "." }
            }
            ul.sweeps {
                @for name in &names {
                    li { a href=(format!("/sweeps/{name}")) { (name) } }
                }
            }
            (live("progress", "/progress-all", 5000, progress(&status)))
            @if stages.rows.is_empty() { p.muted { "no jobs" } }
        },
    ))
}

/// The stage table (with each sweep linked) and the running jobs.
fn progress(status: &Status) -> Markup {
    html! {
        h2 { "stages" }
        (pages::table("stages", &status.stages, |column, value| {
            (column == "sweep").then(|| format!("/sweeps/{}", value.as_str().unwrap_or("")))
        }))
        @if !status.running.is_empty() {
            h2 { "running" }
            (pages::table("running", &status.running_table(), link_jobs))
        }
        @if !status.stale_decisions.rows.is_empty() {
            h2 { "stale decisions" }
            (pages::table("stale", &status.stale_decisions, |_, _| None))
        }
    }
}

pub(super) async fn progress_all(State(app): State<Arc<App>>) -> Page {
    Ok(progress(&Status::read(&app.store, None).await?))
}

#[derive(Debug, Deserialize)]
pub(super) struct JobsQuery {
    after: Option<Uuid>,
    stage: Option<String>,
    state: Option<String>,
}

/// A sweep: its pipeline and progress (live), its selections and their decisions,
/// one page of its jobs, and the report's tables and figures (loaded after the page).
pub(super) async fn sweep(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(query): Query<JobsQuery>,
) -> Page {
    // The filter first: a state the store has no name for is the request's fault.
    let state = match query.state.as_deref() {
        None => None,
        Some(text) => Some(JobState::parse(text).ok_or_else(|| {
            PageError(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown state {text:?}: use queued, running, succeeded, failed or cancelled"
                ),
            )
        })?),
    };
    let status = Status::read(&app.store, Some(&name)).await?;
    let spec = app
        .store
        .spec(&name)
        .await?
        .ok_or_else(|| StoreError::UnknownSweep { name: name.clone() })?;
    let decisions = app.store.promotions(&name).await?;
    let filter = JobFilter {
        ids: Vec::new(),
        sweep: Some(name.clone()),
        stage: query.stage.clone(),
        state,
    };
    let jobs = app
        .store
        .jobs_after(&filter, query.after, Some(PAGE))
        .await?;
    let next = (jobs.len() as i64 == PAGE).then(|| {
        let mut next = format!("/sweeps/{name}?after={}", jobs[jobs.len() - 1].id);
        if let Some(stage) = &query.stage {
            next.push_str(&format!("&stage={stage}"));
        }
        if let Some(state) = &query.state {
            next.push_str(&format!("&state={state}"));
        }
        next
    });
    let live_url = format!("/sweeps/{name}/progress");
    Ok(layout(
        &format!("sweep {name}"),
        html! {
            h2 { "pipeline" }
            ol.pipeline {
                @for stage in &spec.stages {
                    li {
                        strong { (stage.name) } " (" (stage.kind.as_str()) ")"
                        @for selection in spec.selections.iter().filter(|s| s.from == stage.name) {
                            " → selection " em { (selection.name) }
                            " per " (selection.per.join(", "))
                        }
                    }
                }
            }
            (live("progress", &live_url, 3000, progress(&status)))
            @if !decisions.is_empty() {
                h2 { "decisions" }
                @for decision in &decisions {
                    (decision_view(decision))
                }
            }
            h2 { "jobs" }
            (pages::table("jobs", &job_list(&jobs), link_jobs))
            @if let Some(next) = next { p { a href=(next) { "next " (PAGE) " jobs →" } } }
            h2 { "report" }
            (deferred("report", &format!("/sweeps/{name}/report"), "the report's tables and figures"))
        },
    ))
}

pub(super) async fn sweep_progress(State(app): State<Arc<App>>, Path(name): Path<String>) -> Page {
    Ok(progress(&Status::read(&app.store, Some(&name)).await?))
}

/// One selection decision: the group, the rule, every candidate as ranked.
fn decision_view(decision: &crate::store::PromotionRow) -> Markup {
    let group = Value::Object(decision.group.clone()).to_string();
    let ranked = decision.decision["ranked"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    html! {
        div.decision {
            h3 { (decision.selection) " " code { (group) } " (revision " (decision.revision) ")" }
            p { "rule: " (decision.decision["rule"].as_str().unwrap_or("")) }
            @if decision.stale.is_some() { p.failed { "stale: the group changed after its downstream jobs started" } }
            table.ranked {
                thead { tr { th { "rank" } th { "job" } th { "state" } th { "values" } th { "winner" } } }
                tbody {
                    @for candidate in &ranked {
                        @let id = candidate["job_id"].as_str().unwrap_or("");
                        tr {
                            td.num { (candidate["rank"].as_u64().map(|r| r.to_string()).unwrap_or_else(|| "–".into())) }
                            td { a href=(job_link(id)) { (id.get(..8).unwrap_or(id)) } }
                            td { (candidate["state"].as_str().unwrap_or("")) }
                            td { code { (candidate["values"].to_string()) } }
                            td { @if candidate["winner"] == json!(true) { strong { "winner" } } }
                        }
                    }
                }
            }
        }
    }
}

/// One row per job of a page of the list.
fn job_list(jobs: &[JobRow]) -> Table {
    let mut table = Table::new(["id", "stage", "state", "attempt", "params", "result"]);
    for job in jobs {
        let headline = job.result.as_ref().map(|result| {
            ["loss", "accuracy", "f1"]
                .iter()
                .filter_map(|key| {
                    result
                        .get(*key)
                        .and_then(Value::as_f64)
                        .map(|v| format!("{key} {v:.4}"))
                })
                .collect::<Vec<_>>()
                .join(", ")
        });
        table.push(vec![
            json!(job.id.to_string()),
            json!(job.stage),
            json!(job.state.as_str()),
            json!(job.attempt),
            json!(Value::Object(job.params.clone()).to_string()),
            json!(headline),
        ]);
    }
    table
}

/// The report's tables as `report` prints them, the loss heat maps and the final
/// loss against each grid axis. Reads the sweep's jobs (not their metrics).
pub(super) async fn sweep_report(State(app): State<Arc<App>>, Path(name): Path<String>) -> Page {
    let mut input = from_store::load_tables(&app.store, &name).await?;
    input.curves.clear();
    let heat_maps = plot::heat_maps_svg(&input)?;
    let axes = plot::axes_svg(&input)?;
    Ok(html! {
        div.report { (pages::markdown(&report::markdown(&input))) }
        h2 { "heat maps" }
        @for (title, svg) in &heat_maps { (figure(title, 0, svg)) }
        @if let Some((points, svg)) = &axes {
            h2 { "final loss by grid axis" }
            (figure("axes", *points, svg))
        }
    })
}

/// A job: parameters, result, attempts with what ran them, its curves (live while it
/// runs), the confusion matrix of a downstream job, a command job's log.
pub(super) async fn job(State(app): State<Arc<App>>, Path(id): Path<Uuid>) -> Page {
    let job = app
        .store
        .job(id)
        .await?
        .ok_or_else(|| PageError(StatusCode::NOT_FOUND, format!("no job {id} in the store")))?;
    let attempts = app.store.attempts(id).await?;
    let charts = charts(&app, &job).await?;
    let active = matches!(job.state, JobState::Queued | JobState::Running);
    let log = if job.kind == StageKind::Command {
        match &app.config.artifacts {
            Some(artifacts) => crate::worker::read_output_log(
                artifacts,
                app.config.scratch.as_deref(),
                &job.sweep,
                job.id,
            )
            .await
            .ok()
            .flatten(),
            None => None,
        }
    } else {
        None
    };
    let mut facts = serde_json::Map::new();
    for (key, value) in [
        ("sweep", json!(job.sweep)),
        ("stage", json!(job.stage)),
        ("kind", json!(job.kind.as_str())),
        ("state", json!(job.state.as_str())),
        (
            "attempt",
            json!(format!("{} of {}", job.attempt, job.max_attempts)),
        ),
        ("worker", json!(job.worker)),
        ("parent", json!(job.parent_job_id.map(|p| p.to_string()))),
        ("started", json!(job.started_at.map(|t| t.to_rfc3339()))),
        ("finished", json!(job.finished_at.map(|t| t.to_rfc3339()))),
    ] {
        if !value.is_null() {
            facts.insert(key.into(), value);
        }
    }
    let confusion = record(&job).and_then(|record| ConfusionFigure::of(&record, "this job"));
    let confusion = match confusion {
        Some(figure) => Some(plot::to_svg(&figure)?),
        None => None,
    };
    Ok(layout(
        &format!("job {}", job.id),
        html! {
            (pages::object("facts", &facts))
            @if let Some(parent) = job.parent_job_id {
                p { "starts from " a href=(job_link(&parent.to_string())) { "its pretext job" } }
            }
            h2 { "parameters" }
            (pages::object("params", &job.params))
            @if let Some(message) = &job.error_message {
                h2 { "error" }
                p.failed { (job.error_kind.map(|k| k.as_str()).unwrap_or("")) ": " (message) }
            }
            @if let Some(Value::Object(result)) = &job.result {
                h2 { "result" }
                (pages::object("result", &result.iter()
                    .filter(|(key, _)| !matches!(key.as_str(), "confusion" | "per_class"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()))
            }
            h2 { "attempts" }
            (pages::table("attempts", &attempt_table(&attempts), |_, _| None))
            h2 { "curves" }
            @if active {
                (live("charts", &format!("/jobs/{id}/charts"), 2000, charts))
            } @else {
                div id="charts" { (charts) }
            }
            @if let Some(svg) = confusion {
                h2 { "confusion matrix" }
                (figure("confusion", 0, &svg))
            }
            @if let Some(bytes) = log {
                h2 { "output log" }
                pre.log { (tail(&String::from_utf8_lossy(&bytes), 200)) }
            }
        },
    ))
}

pub(super) async fn job_charts(State(app): State<Arc<App>>, Path(id): Path<Uuid>) -> Page {
    let job = app
        .store
        .job(id)
        .await?
        .ok_or_else(|| PageError(StatusCode::NOT_FOUND, format!("no job {id} in the store")))?;
    charts(&app, &job).await
}

/// The job as the report module sees it, for its figures.
fn record(job: &JobRow) -> Option<JobRecord> {
    job.result.as_ref()?;
    Some(JobRecord {
        id: job.id,
        stage: job.stage.clone(),
        kind: job.kind,
        state: report::JobState::Succeeded,
        params: job.params.clone(),
        result: job.result.clone(),
        error: None,
        parent: job.parent_job_id,
        attempt: job.attempt,
        started_at: job.started_at,
        finished_at: job.finished_at,
    })
}

/// One figure per metric the job recorded (the newest attempt's value per step),
/// the loss with its chance level; an empty note before the first value.
async fn charts(app: &App, job: &JobRow) -> Page {
    let metrics = app.store.metrics(job.id).await?;
    let curves: BTreeMap<String, Vec<(i64, f64)>> = from_store::curves(&metrics);
    if curves.is_empty() {
        return Ok(html! { p.muted { "no metric recorded yet" } });
    }
    let chance = curves
        .get("chance_loss")
        .and_then(|points| points.last())
        .map(|(_, value)| *value);
    let x_desc = if job.kind == StageKind::Command {
        "step"
    } else {
        "epoch"
    };
    let mut out = Vec::new();
    for (name, points) in curves
        .iter()
        .filter(|(name, _)| name.as_str() != "chance_loss")
    {
        let references = match (name.as_str(), chance) {
            ("loss", Some(level)) => vec![(format!("chance ln(2N−1) = {level:.3}"), level)],
            _ => Vec::new(),
        };
        let curve = CurveFigure {
            title: format!("{name} per {x_desc}"),
            x_desc: x_desc.into(),
            y_desc: name.clone(),
            series: vec![(
                name.clone(),
                points.iter().map(|(x, y)| (*x as f64, *y)).collect(),
            )],
            references,
            size: (820, 440),
        };
        out.push((name.clone(), points.len(), plot::to_svg(&curve)?));
    }
    Ok(html! {
        @for (name, points, svg) in &out { (figure(name, *points, svg)) }
    })
}

fn attempt_table(attempts: &[crate::store::AttemptRow]) -> Table {
    let mut table = Table::new([
        "attempt", "started", "host", "device", "libtorch", "sweeper", "commit", "data",
    ]);
    for attempt in attempts {
        let p = &attempt.provenance;
        table.push(vec![
            json!(attempt.attempt),
            json!(attempt.started_at.to_rfc3339()),
            json!(p.host),
            json!(format!("{} ({})", p.device, p.device_name)),
            json!(p.libtorch),
            json!(p.sweeper_version),
            json!(p.commit),
            json!(p.dataset.as_ref().map(|d| format!(
                "{} files, {} bytes, {}",
                d.files,
                d.bytes,
                d.list_sha256.get(..12).unwrap_or("")
            ))),
        ]);
    }
    table
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Every registered worker: host, device, its job, when it was last seen.
pub(super) async fn workers(State(app): State<Arc<App>>) -> Page {
    let workers = app.store.workers().await?;
    Ok(layout(
        "workers",
        html! {
            @if workers.is_empty() { p.muted { "no worker has registered yet" } }
            (pages::table("workers", &status::workers_table(&workers), link_jobs))
        },
    ))
}

pub(super) async fn script() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript")], pages::SCRIPT)
}

pub(super) async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css")], pages::STYLE)
}
