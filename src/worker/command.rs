//! The `command` job kind: any program, with the job's parameters substituted into its
//! arguments (`{batch_size}`, and `{job_id}`, `{attempt}`, `{job_dir}`, `{data_root}`)
//! and passed as `SWEEPER_PARAM_*` variables.
//!
//! A stdout line that is a JSON object `{"metric": …, "value": …, "step": …}` (with an
//! optional `"goal": "min"` or `"max"`) is a metric; `{"result": {…}}` sets keys of the
//! job's result, which otherwise holds the final and best value of every metric
//! ([`super::summary`]). Everything the program prints on stdout and stderr is
//! appended to [`OUTPUT_LOG`] in the job's directory, under a header line per attempt
//! and a footer saying how it ended; the worker mirrors that file to the artifact
//! store with the job's other files. Exit status 0 is success; 75
//! (`EX_TEMPFAIL`) or death by a signal nobody sent is worth another attempt; any other
//! status fails the job with the tail of stderr. The program runs in its own process
//! group, so that a cancel stops its children too, and dies with the worker
//! (`PR_SET_PDEATHSIG`), so that a killed worker leaves no job running unowned.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::execution::{Execution, JobEvent, Outcome, Stopper};
use super::summary::{CommandResult, Goal};
use crate::devices::Device;
use crate::store::{ClaimedJob, Failure, FailureKind, MetricPoint};
use crate::sweep::expand::render_command;
use crate::sweep::Params;

/// Exit status a program uses to ask for another attempt (`EX_TEMPFAIL`).
pub const EXIT_RETRY: i32 = 75;

/// The file in the job's directory that holds the program's output, every attempt.
pub const OUTPUT_LOG: &str = "output.log";

/// What marks the log's own lines (headers, footers) apart from the program's.
pub const LOG_MARK: &str = "==>";

/// Lines of stderr kept for the failure message.
const STDERR_TAIL_LINES: usize = 20;
const STDERR_LINE_CHARS: usize = 400;

/// Output one attempt may add to the log; what comes after is dropped (metric lines
/// still count), so that a chatty program cannot fill the disk.
const LOG_BYTES_PER_ATTEMPT: u64 = 64 * 1024 * 1024;

/// Lines waiting for the log's writer; a full queue holds the readers back, and with
/// them the program, rather than memory.
const LOG_QUEUE_LINES: usize = 1024;

/// Everything that decides how the program is started.
pub(crate) struct CommandJob<'a> {
    pub job: &'a ClaimedJob,
    pub argv: &'a [String],
    pub device: Device,
    pub job_dir: &'a Path,
    pub data_root: &'a Path,
    /// How long the program has between SIGTERM and SIGKILL once asked to stop.
    pub grace: Duration,
    /// Who runs it, for the log's header: the worker's name and host, and the time
    /// on the worker's clock.
    pub worker: &'a str,
    pub host: &'a str,
    pub started_at: DateTime<Utc>,
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
    let argv = render_command(spec.argv, &spec.job.params, &runtime)
        .map_err(|error| Failure::job(FailureKind::BadCommand, error.to_string()))?;
    let Some((program, args)) = argv.split_first() else {
        return Err(Failure::job(
            FailureKind::BadCommand,
            "the stage's command is empty",
        ));
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
    let log_path = spec.job_dir.join(OUTPUT_LOG);
    let header = format!(
        "{LOG_MARK} job {} attempt {}: started {} by worker {} on {}\n{LOG_MARK} $ {}\n",
        spec.job.id,
        spec.job.attempt,
        spec.started_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        spec.worker,
        spec.host,
        // A password in a URL argument stays out of a file others may read.
        crate::redact::redact_url(&shell_words(&argv)),
    );
    let mut log_file = open_log(&log_path, &header).map_err(|error| {
        Failure::infrastructure(
            FailureKind::Io,
            format!("cannot write {}: {error}", log_path.display()),
        )
    })?;
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            let message = format!("cannot start {program:?}: {error}");
            // Best effort: the failure is in the store whatever the log says.
            let _ = writeln!(log_file, "{LOG_MARK} {message}");
            // A program that is not there or cannot be run is the stage's fault;
            // no process or memory to start it with is the machine's.
            return Err(match error.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                    Failure::job(FailureKind::Spawn, message)
                }
                _ => Failure::infrastructure(FailureKind::Spawn, message),
            });
        }
    };
    let (log, log_rx) = mpsc::channel(LOG_QUEUE_LINES);
    let log = LogLines(log);
    let writer = tokio::spawn(write_log(
        tokio::fs::File::from_std(log_file),
        log_rx,
        log_path.display().to_string(),
    ));

    let (events_tx, events) = mpsc::unbounded_channel();
    let (done_tx, done) = oneshot::channel();
    let stop = CancellationToken::new();
    let kill = CancellationToken::new();
    // Spawned with the pipes taken: `spawn` just succeeded with both piped.
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let stdout_task = tokio::spawn(read_stdout(stdout, events_tx, log.clone()));
    let stderr_task = tokio::spawn(read_stderr(stderr, log.clone()));
    let running = Running {
        attempt: spec.job.attempt,
        grace: spec.grace,
        started: Instant::now(),
        stdout_task,
        stderr_task,
        log,
        writer,
    };
    let watched = (stop.clone(), kill.clone());
    tokio::spawn(async move {
        let outcome = supervise(child, watched, running).await;
        let _ = done_tx.send(outcome);
    });
    Ok(Execution {
        events,
        done,
        stopper: Stopper::Command { stop, kill },
    })
}

/// A started program's readers and log, for [`supervise`].
struct Running {
    attempt: i32,
    grace: Duration,
    started: Instant,
    stdout_task: JoinHandle<CommandResult>,
    stderr_task: JoinHandle<VecDeque<String>>,
    log: LogLines,
    writer: JoinHandle<()>,
}

/// Waits for the program (stopping it when asked: SIGTERM, SIGKILL after `grace` or
/// on `kill`), closes its log with a footer and turns its end into an outcome.
async fn supervise(
    mut child: Child,
    (stop, kill): (CancellationToken, CancellationToken),
    running: Running,
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
                () = tokio::time::sleep(running.grace) => {
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
    let result = join_within(running.stdout_task, Duration::from_secs(2)).await;
    let tail = join_within(running.stderr_task, Duration::from_secs(2))
        .await
        .unwrap_or_default();
    let ended = match (&status, stopped) {
        (Ok(status), true) => format!("stopped on request ({})", describe_status(*status)),
        (Ok(status), false) => describe_status(*status),
        (Err(error), _) => format!("could not be waited for ({error})"),
    };
    let footer = format!(
        "{LOG_MARK} attempt {} {ended} after {:.1} s\n",
        running.attempt,
        running.started.elapsed().as_secs_f64()
    );
    running.log.note(footer).await;
    drop(running.log);
    // Ends once every sender is gone; the log is complete before the outcome is sent,
    // so the worker's final upload carries all of it.
    join_within(running.writer, Duration::from_secs(5)).await;
    if stopped {
        return Outcome::Stopped;
    }
    match status {
        Ok(status) if status.success() => {
            Outcome::Succeeded(Value::Object(result.unwrap_or_default().to_map()))
        }
        Ok(status) => Outcome::Failed(failure(status, &tail)),
        Err(error) => Outcome::Failed(Failure::infrastructure(
            FailureKind::Wait,
            format!("cannot wait for the program: {error}"),
        )),
    }
}

/// `exited with status 3`, `was killed by signal 9`.
fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "ended abnormally".to_string(),
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
        (Some(code), _) => {
            let message = format!("the program exited with status {code}{stderr}");
            if code == EXIT_RETRY {
                Failure::transient(FailureKind::ExitStatus, message)
            } else {
                Failure::job(FailureKind::ExitStatus, message)
            }
        }
        (None, Some(signal)) => Failure::transient(
            FailureKind::Signal,
            format!("the program was killed by signal {signal}{stderr}"),
        ),
        (None, None) => Failure::job(
            FailureKind::ExitStatus,
            format!("the program ended abnormally{stderr}"),
        ),
    }
}

/// Forwards metric lines and copies every line to the log; returns the summary of
/// the metric lines and what the `result` lines set.
async fn read_stdout(
    stdout: impl AsyncRead + Unpin,
    events: mpsc::UnboundedSender<JobEvent>,
    log: LogLines,
) -> CommandResult {
    let mut reader = BufReader::new(stdout);
    let mut result = CommandResult::default();
    let mut counts: HashMap<String, i64> = HashMap::new();
    while let Some(raw) = read_line(&mut reader).await {
        let line = String::from_utf8_lossy(&raw);
        match parse_line(line.trim_end_matches(['\n', '\r']), &mut counts) {
            Some(Line::Metric { point, goal }) => {
                result.record(&point, goal);
                let step = point.step;
                let _ = events.send(JobEvent::Metric(point));
                let _ = events.send(JobEvent::Progress { step });
            }
            Some(Line::Result(fields)) => result.declare(fields),
            None => tracing::debug!(stdout = %line.trim_end()),
        }
        log.output(raw).await;
    }
    result
}

async fn read_stderr(stderr: impl AsyncRead + Unpin, log: LogLines) -> VecDeque<String> {
    let mut reader = BufReader::new(stderr);
    let mut tail = VecDeque::with_capacity(STDERR_TAIL_LINES);
    while let Some(raw) = read_line(&mut reader).await {
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\n', '\r']);
        tracing::debug!(stderr = %line);
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line.chars().take(STDERR_LINE_CHARS).collect());
        log.output(raw).await;
    }
    tail
}

/// The next line with its end of line (added when the output's last line has none);
/// any bytes, so that output that is not UTF-8 is still read to its end. None at the
/// end or on a read error.
async fn read_line(reader: &mut (impl AsyncBufReadExt + Unpin)) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    match reader.read_until(b'\n', &mut line).await {
        Ok(0) | Err(_) => None,
        Ok(_) => {
            if !line.ends_with(b"\n") {
                line.push(b'\n');
            }
            Some(line)
        }
    }
}

/// The way to the log's writer; a closed writer drops what it is sent.
#[derive(Clone)]
struct LogLines(mpsc::Sender<LogLine>);

enum LogLine {
    /// A line of the program's output, end of line included.
    Output(Vec<u8>),
    /// A line of the log's own (the footer), written whatever the output's size.
    Note(String),
}

impl LogLines {
    async fn output(&self, line: Vec<u8>) {
        let _ = self.0.send(LogLine::Output(line)).await;
    }

    async fn note(&self, line: String) {
        let _ = self.0.send(LogLine::Note(line)).await;
    }
}

/// Creates or extends the log and writes the attempt's header.
fn open_log(path: &Path, header: &str) -> std::io::Result<std::fs::File> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(header.as_bytes())?;
    Ok(file)
}

/// Writes what the readers send until they are all gone. A write error is logged once
/// and what follows is dropped: the program runs on whatever happens to its log.
async fn write_log(file: tokio::fs::File, mut lines: mpsc::Receiver<LogLine>, path: String) {
    let mut out = tokio::io::BufWriter::new(file);
    let mut written: u64 = 0;
    let mut truncated = false;
    let mut failed = false;
    while let Some(line) = lines.recv().await {
        let bytes = match line {
            LogLine::Output(bytes) => {
                written += bytes.len() as u64;
                if written > LOG_BYTES_PER_ATTEMPT {
                    if truncated {
                        continue;
                    }
                    truncated = true;
                    format!(
                        "{LOG_MARK} more than {} MiB of output: the rest of this attempt's is not kept\n",
                        LOG_BYTES_PER_ATTEMPT / (1024 * 1024)
                    )
                    .into_bytes()
                } else {
                    bytes
                }
            }
            LogLine::Note(text) => text.into_bytes(),
        };
        if failed {
            continue;
        }
        let mut wrote = out.write_all(&bytes).await;
        // Flushed whenever the program pauses, so that the file is never far behind.
        if wrote.is_ok() && lines.is_empty() {
            wrote = out.flush().await;
        }
        if let Err(error) = wrote {
            tracing::warn!(%error, log = %path, "cannot write the program's output log");
            failed = true;
        }
    }
    if !failed {
        if let Err(error) = out.flush().await {
            tracing::warn!(%error, log = %path, "cannot write the program's output log");
        }
    }
}

#[derive(Debug, PartialEq)]
enum Line {
    Metric {
        point: MetricPoint,
        goal: Option<Goal>,
    },
    Result(Map<String, Value>),
}

/// A stdout line's meaning; a metric without a step gets the next step of its name.
/// A `result` line counts only when it holds an object; a metric line's unknown goal
/// is logged and left to the name.
fn parse_line(line: &str, counts: &mut HashMap<String, i64>) -> Option<Line> {
    let trimmed = line.trim();
    if !trimmed.starts_with('{') {
        return None;
    }
    let Ok(Value::Object(object)) = serde_json::from_str::<Value>(trimmed) else {
        return None;
    };
    if let Some(result) = object.get("result") {
        return match result {
            Value::Object(fields) => Some(Line::Result(fields.clone())),
            _ => None,
        };
    }
    let name = object.get("metric")?.as_str()?.to_owned();
    let value = object.get("value")?.as_f64()?;
    let goal = match object.get("goal") {
        None => None,
        Some(given) => match given.as_str().map(str::parse::<Goal>) {
            Some(Ok(goal)) => Some(goal),
            _ => {
                tracing::warn!(metric = %name, goal = %given, "unknown goal (use \"min\" or \"max\"); the name decides");
                None
            }
        },
    };
    let next = counts.entry(name.clone()).or_insert(0);
    let step = object.get("step").and_then(Value::as_i64).unwrap_or(*next);
    *next = step + 1;
    Some(Line::Metric {
        point: MetricPoint { step, name, value },
        goal,
    })
}

/// The command as a shell would take it back, for the log's header.
fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|word| {
            let plain = !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c));
            if plain {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
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

    fn metric(step: i64, name: &str, value: f64, goal: Option<Goal>) -> Option<Line> {
        Some(Line::Metric {
            point: MetricPoint {
                step,
                name: name.into(),
                value,
            },
            goal,
        })
    }

    #[test]
    fn reads_metric_and_result_lines() {
        let mut counts = HashMap::new();
        assert_eq!(
            parse_line(
                r#"{"metric": "loss", "value": 1.5, "step": 7}"#,
                &mut counts
            ),
            metric(7, "loss", 1.5, None)
        );
        assert_eq!(
            parse_line(r#"{"metric": "loss", "value": 1}"#, &mut counts),
            metric(8, "loss", 1.0, None)
        );
        assert_eq!(
            parse_line(
                r#"{"metric": "score", "value": 2, "goal": "min"}"#,
                &mut counts
            ),
            metric(0, "score", 2.0, Some(Goal::Min))
        );
        assert_eq!(
            parse_line(
                r#"{"metric": "score", "value": 2, "goal": "down"}"#,
                &mut counts
            ),
            metric(1, "score", 2.0, None)
        );
        assert_eq!(
            parse_line(r#"{"result": {"loss": 0.25}}"#, &mut counts),
            Some(Line::Result(
                json!({"loss": 0.25}).as_object().unwrap().clone()
            ))
        );
        assert_eq!(parse_line(r#"{"result": 3}"#, &mut counts), None);
        assert_eq!(parse_line("epoch 3 done", &mut counts), None);
        assert_eq!(
            parse_line(r#"{"metric": "loss", "value": "high"}"#, &mut counts),
            None
        );
    }

    #[test]
    fn quotes_the_command_like_a_shell() {
        let argv: Vec<String> = ["sh", "-c", "echo 'hi' > x", "--bs=8", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            shell_words(&argv),
            r#"sh -c 'echo '\''hi'\'' > x' --bs=8 ''"#
        );
    }

    #[tokio::test]
    async fn reads_lines_that_are_not_utf8_or_unterminated() {
        let mut reader = BufReader::new(&b"a\n\xff\xfe\nlast"[..]);
        assert_eq!(read_line(&mut reader).await, Some(b"a\n".to_vec()));
        assert_eq!(read_line(&mut reader).await, Some(b"\xff\xfe\n".to_vec()));
        assert_eq!(read_line(&mut reader).await, Some(b"last\n".to_vec()));
        assert_eq!(read_line(&mut reader).await, None);
    }

    #[test]
    fn names_parameter_variables() {
        assert_eq!(param_variable("batch_size"), "SWEEPER_PARAM_BATCH_SIZE");
        assert_eq!(param_variable("lr.base"), "SWEEPER_PARAM_LR_BASE");
    }
}
