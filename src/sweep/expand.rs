//! Placeholder for grid expansion: just enough for the store's promotion path.

use sha2::{Digest, Sha256};

use super::{select::Candidate, JobSpec, Params, Spec, SweepError, SweepResult};

/// Every job of the stages that do not wait on a selection.
pub fn expand(spec: &Spec) -> Vec<JobSpec> {
    let _ = spec;
    Vec::new()
}

/// The jobs of every stage that runs on `selection`'s winners, for one winner.
pub fn downstream(spec: &Spec, selection: &str, winner: &Candidate) -> Vec<JobSpec> {
    spec.stages
        .iter()
        .filter(|stage| stage.from.as_deref() == Some(selection))
        .map(|stage| {
            let mut params = winner.params.clone();
            params.extend(stage.params.clone());
            let key = hex::encode(Sha256::digest(
                format!(
                    "{}/{}/{}",
                    stage.name,
                    winner.key,
                    serde_json::Value::Object(params.clone())
                )
                .as_bytes(),
            ));
            JobSpec {
                stage: stage.name.clone(),
                kind: stage.kind,
                key,
                params,
                priority: stage.priority,
                max_attempts: stage.max_attempts,
            }
        })
        .collect()
}

/// What `submit --dry-run` prints.
pub fn dry_run_summary(spec: &Spec) -> String {
    format!("sweep {}: {} stages", spec.name, spec.stages.len())
}

/// Fills a command's `{name}` placeholders from the job's parameters, then from
/// `runtime`; `{{` and `}}` are literal braces.
pub fn render_command(
    command: &[String],
    params: &Params,
    runtime: &Params,
) -> SweepResult<Vec<String>> {
    command
        .iter()
        .map(|arg| {
            let mut out = String::new();
            let mut rest = arg.as_str();
            let fail = |message: String| SweepError::Invalid {
                location: "command".into(),
                field: arg.clone(),
                message,
            };
            while let Some(at) = rest.find(['{', '}']) {
                out.push_str(&rest[..at]);
                let tail = &rest[at..];
                if tail.starts_with("{{") || tail.starts_with("}}") {
                    out.push_str(&tail[..1]);
                    rest = &tail[2..];
                    continue;
                }
                let end = tail.find('}').filter(|_| tail.starts_with('{'));
                let end = end.ok_or_else(|| fail("unbalanced braces".into()))?;
                let name = &tail[1..end];
                let value = params
                    .get(name)
                    .or_else(|| runtime.get(name))
                    .ok_or_else(|| fail(format!("{{{name}}} names no parameter of this job")))?;
                match value {
                    serde_json::Value::String(text) => out.push_str(text),
                    other => out.push_str(&other.to_string()),
                }
                rest = &tail[end + 1..];
            }
            out.push_str(rest);
            Ok(out)
        })
        .collect()
}
