//! What a worker records about itself: its code, libtorch and device for every
//! attempt, the fingerprint of a job's data, and how far its clock is from the
//! database's.

use super::*;

/// Clocks further apart than this are worth a line in the log.
pub(super) const CLOCK_DIFFERENCE_NOTED_SECS: f64 = 5.0;

/// Logs how far this machine's clock is from the database's. Leases are measured on
/// the database's clock alone, so a difference changes nothing but the log's dates.
pub(super) async fn note_clock_difference(store: &Store, config: &WorkerConfig) {
    let database = match store.database_now().await {
        Ok(now) => now,
        Err(error) => {
            tracing::debug!(error = %redact_url(&error.to_string()), "cannot read the database's clock");
            return;
        }
    };
    let local = config.local_now();
    let ahead = (local - database).num_milliseconds() as f64 / 1000.0;
    if ahead.abs() > CLOCK_DIFFERENCE_NOTED_SECS {
        tracing::warn!(
            local = %local.to_rfc3339(),
            database = %database.to_rfc3339(),
            "this machine's clock is {:.0} s {} the database's; leases follow the database's clock",
            ahead.abs(),
            if ahead > 0.0 { "ahead of" } else { "behind" },
        );
    }
}

/// The code, libtorch and device this worker runs attempts with.
pub(super) fn worker_provenance(device: Device, host: String) -> Provenance {
    let report = crate::devices::describe();
    let name = device.to_string();
    let device_name = match name
        .strip_prefix("cuda:")
        .and_then(|i| i.parse::<i64>().ok())
    {
        Some(index) => report
            .gpus
            .iter()
            .find(|gpu| gpu.index == index)
            .and_then(|gpu| gpu.name.clone())
            .unwrap_or_else(|| format!("GPU {index}")),
        None => cpu_model().unwrap_or_else(|| "CPU".to_owned()),
    };
    Provenance {
        libtorch: report.libtorch_version,
        cuda: report.libtorch_cuda_build,
        cudnn: report.cudnn_version.map(|v| v.to_string()),
        device: name,
        device_name,
        host,
        ..Provenance::of_this_build()
    }
}

/// The processor's model name, from Linux's `/proc/cpuinfo`.
pub(super) fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, model)| model.trim().to_owned())
}

/// The fingerprint of the files the job will train on (its seed's selection), or
/// `None` where they cannot be listed: the job then fails with the data error itself.
pub(super) async fn dataset_fingerprint(job: &TrainJob) -> Option<DataFingerprint> {
    let seed = match JobParams::parse(job.kind, &job.params) {
        Ok(JobParams::Pretext(p)) => p.seed,
        Ok(JobParams::Linear(p) | JobParams::Finetune(p)) => p.seed,
        _ => return None,
    };
    let (dataset, root, cache) = (
        job.dataset.clone(),
        job.data_root.clone(),
        job.cache_dir.clone(),
    );
    let listed = tokio::task::spawn_blocking(move || {
        let selection = crate::train::data::folder::select(&dataset, &root, seed as u64)
            .map_err(|e| e.to_string())?;
        crate::provenance::fingerprint(&root, &selection.all_paths(), &cache)
            .map_err(|e| e.to_string())
    })
    .await;
    match listed {
        Ok(Ok(fingerprint)) => Some(fingerprint),
        Ok(Err(error)) => {
            tracing::debug!(%error, "no dataset fingerprint");
            None
        }
        Err(_) => None,
    }
}
