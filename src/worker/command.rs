//! The `command` job kind: any program, with the job's parameters substituted into its
//! arguments (`{batch_size}`, and `{job_id}`, `{attempt}`, `{job_dir}`, `{data_root}`)
//! and passed as `SWEEPER_PARAM_*` variables.
//!
//! A stdout line that is a JSON object `{"metric": …, "value": …, "step": …}` is a
//! metric; `{"result": {…}}` sets the job's result. Exit status 0 is success; 75
//! (`EX_TEMPFAIL`) or death by a signal nobody sent is worth another attempt; any other
//! status fails the job with the tail of stderr. The program runs in its own process
//! group, so that a cancel stops its children too, and dies with the worker
//! (`PR_SET_PDEATHSIG`), so that a killed worker leaves no job running unowned.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::device::Device;
use super::execution::{Execution, JobEvent, Outcome, Stopper};
use crate::store::{ClaimedJob, Failure, MetricPoint};
use crate::sweep::expand::render_command;
use crate::sweep::Params;

/// Exit status a program uses to ask for another attempt (`EX_TEMPFAIL`).
pub const EXIT_RETRY: i32 = 75;

/// Lines of stderr kept for the failure message.
const STDERR_TAIL_LINES: usize = 20;
const STDERR_LINE_CHARS: usize = 400;

/// Everything that decides how the program is started.
pub(crate) struct CommandJob<'a> {
    pub job: &'a ClaimedJob,
    pub argv: &'a [String],
    pub device: Device,
    pub job_dir: &'a Path,
    pub data_root: &'a Path,
    /// How long the program has between SIGTERM and SIGKILL once asked to stop.
    pub grace: Duration,
}

/// Starts the program; `Err` is a final failure of the job (bad arguments, no such
/// program).
pub(crate) fn start(spec: CommandJob<'_>) -> Result<Execution, Failure> {
    let runtime = Params::from_iter([
        ("job_id".to_owned(), Value::from(spec.job.id.to_string())),
        ("attempt".to_owned(), Value::from(spec.job.attempt)),
        (
            "job_dir".to_owned(),
            Value::from(spec.job_dir.to_string_lossy()),
        ),
        (
            "data_root".to_owned(),
            Value::from(spec.data_root.to_string_lossy()),
        ),
    ]);
    let argv = render_command(spec.argv, &spec.job.params, &runtime).map_err(|error| Failure {
        kind: "bad command".into(),
        message: error.to_string(),
        retryable: false,
    })?;
    let Some((program, args)) = argv.split_first() else {
        return Err(Failure {
            kind: "bad command".into(),
            message: "the stage's command is empty".into(),
            retryable: false,
        });
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0)
        .env("CUDA_VISIBLE_DEVICES", spec.device.cuda_visible_devices())
        .env("SWEEPER_JOB_ID", spec.job.id.to_string())
        .env("SWEEPER_ATTEMPT", spec.job.attempt.to_string())
        .env("SWEEPER_SWEEP", &spec.job.sweep)
        .env("SWEEPER_STAGE", &spec.job.stage)
        .env("SWEEPER_JOB_DIR", spec.job_dir)
        .env("SWEEPER_DATA_ROOT", spec.data_root);
    for (name, value) in &spec.job.params {
        command.env(param_variable(name), param_text(value));
    }
    // SAFETY: prctl is async-signal-safe and touches only the child being started.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|error| Failure {
        kind: "spawn".into(),
        message: format!("cannot start {program:?}: {error}"),
        retryable: false,
    })?;

    let (events_tx, events) = mpsc::unbounded_channel();
    let (done_tx, done) = oneshot::channel();
    let stop = CancellationToken::new();
    let kill = CancellationToken::new();
    // Spawned with the pipes taken: `spawn` just succeeded with both piped.
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let stdout_task = tokio::spawn(read_stdout(stdout, events_tx));
    let stderr_task = tokio::spawn(read_stderr(stderr));
    let grace = spec.grace;
    let watched = (stop.clone(), kill.clone());
    tokio::spawn(async move {
        let outcome = supervise(child, watched, grace, stdout_task, stderr_task).await;
        let _ = done_tx.send(outcome);
    });
    Ok(Execution {
        events,
        done,
        stopper: Stopper::Command { stop, kill },
    })
}

/// Waits for the program (stopping it when asked: SIGTERM, SIGKILL after `grace` or
/// on `kill`) and turns its end into an outcome.
async fn supervise(
    mut child: Child,
    (stop, kill): (CancellationToken, CancellationToken),
    grace: Duration,
    stdout_task: tokio::task::JoinHandle<Option<Value>>,
    stderr_task: tokio::task::JoinHandle<VecDeque<String>>,
) -> Outcome {
    let pid = child.id();
    let mut stopped = false;
    let status = tokio::select! {
        status = child.wait() => status,
        () = stop.cancelled() => {
            stopped = true;
            signal_group(pid, libc::SIGTERM);
            tokio::select! {
                status = child.wait() => status,
                () = tokio::time::sleep(grace) => {
                    signal_group(pid, libc::SIGKILL);
                    child.wait().await
                }
                () = kill.cancelled() => {
                    signal_group(pid, libc::SIGKILL);
                    child.wait().await
                }
            }
        }
    };
    // The group may still hold the pipes open (a background grandchild): end it.
    signal_group(pid, libc::SIGKILL);
    let result = join_within(stdout_task, Duration::from_secs(2))
        .await
        .flatten();
    let tail = join_within(stderr_task, Duration::from_secs(2))
        .await
        .unwrap_or_default();
    if stopped {
        return Outcome::Stopped;
    }
    match status {
        Ok(status) if status.success() => {
            Outcome::Succeeded(result.unwrap_or_else(|| Value::Object(Map::new())))
        }
        Ok(status) => Outcome::Failed(failure(status, &tail)),
        Err(error) => Outcome::Failed(Failure {
            kind: "wait".into(),
            message: format!("cannot wait for the program: {error}"),
            retryable: true,
        }),
    }
}

async fn join_within<T>(task: tokio::task::JoinHandle<T>, limit: Duration) -> Option<T> {
    let abort = task.abort_handle();
    match tokio::time::timeout(limit, task).await {
        Ok(joined) => joined.ok(),
        Err(_) => {
            abort.abort();
            None
        }
    }
}

fn signal_group(pid: Option<u32>, signal: libc::c_int) {
    let Some(pid) = pid.and_then(|pid| libc::pid_t::try_from(pid).ok()) else {
        return;
    };
    // SAFETY: kill(2) with a negative pid signals the process group the child leads.
    unsafe {
        libc::kill(-pid, signal);
    }
}

fn failure(status: ExitStatus, tail: &VecDeque<String>) -> Failure {
    use std::os::unix::process::ExitStatusExt;
    let stderr = if tail.is_empty() {
        String::new()
    } else {
        format!("\n{}", Vec::from(tail.clone()).join("\n"))
    };
    match (status.code(), status.signal()) {
        (Some(code), _) => Failure {
            kind: "exit status".into(),
            message: format!("the program exited with status {code}{stderr}"),
            retryable: code == EXIT_RETRY,
        },
        (None, Some(signal)) => Failure {
            kind: "signal".into(),
            message: format!("the program was killed by signal {signal}{stderr}"),
            retryable: true,
        },
        (None, None) => Failure {
            kind: "exit status".into(),
            message: format!("the program ended abnormally{stderr}"),
            retryable: false,
        },
    }
}

/// Forwards metric lines; returns the last `{"result": …}` seen.
async fn read_stdout(
    stdout: impl AsyncRead + Unpin,
    events: mpsc::UnboundedSender<JobEvent>,
) -> Option<Value> {
    let mut lines = BufReader::new(stdout).lines();
    let mut result = None;
    let mut counts: HashMap<String, i64> = HashMap::new();
    while let Ok(Some(line)) = lines.next_line().await {
        match parse_line(&line, &mut counts) {
            Some(Line::Metric(point)) => {
                let step = point.step;
                let _ = events.send(JobEvent::Metric(point));
                let _ = events.send(JobEvent::Progress { step });
            }
            Some(Line::Result(value)) => result = Some(value),
            None => tracing::debug!(stdout = %line),
        }
    }
    result
}

async fn read_stderr(stderr: impl AsyncRead + Unpin) -> VecDeque<String> {
    let mut lines = BufReader::new(stderr).lines();
    let mut tail = VecDeque::with_capacity(STDERR_TAIL_LINES);
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(stderr = %line);
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.chars().take(STDERR_LINE_CHARS).collect());
    }
    tail
}

#[derive(Debug, PartialEq)]
enum Line {
    Metric(MetricPoint),
    Result(Value),
}

/// A stdout line's meaning; a metric without a step gets the next step of its name.
fn parse_line(line: &str, counts: &mut HashMap<String, i64>) -> Option<Line> {
    let trimmed = line.trim();
    if !trimmed.starts_with('{') {
        return None;
    }
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(trimmed) else {
        return None;
    };
    if let Some(result) = object.get("result") {
        return Some(Line::Result(result.clone()));
    }
    let name = object.get("metric")?.as_str()?.to_owned();
    let value = object.get("value")?.as_f64()?;
    let next = counts.entry(name.clone()).or_insert(0);
    let step = object.get("step").and_then(Value::as_i64).unwrap_or(*next);
    *next = step + 1;
    Some(Line::Metric(MetricPoint { step, name, value }))
}

/// `SWEEPER_PARAM_` and the name in upper case, other characters as `_`.
fn param_variable(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("SWEEPER_PARAM_{name}")
}

/// A parameter as text: strings bare, everything else as JSON.
fn param_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_metric_and_result_lines() {
        let mut counts = HashMap::new();
        assert_eq!(
            parse_line(
                r#"{"metric": "loss", "value": 1.5, "step": 7}"#,
                &mut counts
            ),
            Some(Line::Metric(MetricPoint {
                step: 7,
                name: "loss".into(),
                value: 1.5
            }))
        );
        assert_eq!(
            parse_line(r#"{"metric": "loss", "value": 1}"#, &mut counts),
            Some(Line::Metric(MetricPoint {
                step: 8,
                name: "loss".into(),
                value: 1.0
            }))
        );
        assert_eq!(
            parse_line(r#"{"result": {"loss": 0.25}}"#, &mut counts),
            Some(Line::Result(json!({"loss": 0.25})))
        );
        assert_eq!(parse_line("epoch 3 done", &mut counts), None);
        assert_eq!(
            parse_line(r#"{"metric": "loss", "value": "high"}"#, &mut counts),
            None
        );
    }

    #[test]
    fn names_parameter_variables() {
        assert_eq!(param_variable("batch_size"), "SWEEPER_PARAM_BATCH_SIZE");
        assert_eq!(param_variable("lr.base"), "SWEEPER_PARAM_LR_BASE");
    }
}
