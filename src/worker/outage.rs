//! A store outage as the worker lives it: one line when it starts, a reminder a
//! minute, what could not be written when it ends, and writes that wait for the
//! store to come back (an attempt's end is retried until it is recorded).

use super::*;

/// A store outage as the worker lives it; `None` while the store answers.
pub(super) type Outage = Option<OutageState>;

pub(super) struct OutageState {
    since: Instant,
    reminded: Instant,
    /// What could not be written, and how many times, for the line at the end.
    missed: std::collections::BTreeMap<String, u64>,
}

/// How often a long outage is logged again.
pub(super) const OUTAGE_REMINDER: Duration = Duration::from_secs(60);

/// The longest pause between two tries of a write that waits for the store.
pub(super) const OUTAGE_RETRY_MAX: Duration = Duration::from_secs(2);

/// Formats an error with its sources, like anyhow's `{:#}`.
pub(super) fn anyhow_like(error: &StoreError) -> impl std::fmt::Display + '_ {
    struct Chain<'a>(&'a StoreError);
    impl std::fmt::Display for Chain<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{}", self.0)?;
            let mut source = std::error::Error::source(self.0);
            while let Some(error) = source {
                write!(f, ": {error}")?;
                source = error.source();
            }
            Ok(())
        }
    }
    Chain(error)
}

impl Worker {
    /// Runs `write`, a store write that ends or records an attempt, until the store
    /// takes it: an outage delays the attempt's end, it does not drop it. Gives up on
    /// an error that is not an outage, on a second signal, or once the shutdown grace
    /// has passed after the first, and then logs the job, the attempt and `what` was
    /// lost.
    pub(super) async fn until_recorded<T, F, Fut>(
        &self,
        job: &ClaimedJob,
        what: &str,
        mut write: F,
    ) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let mut pause = Duration::from_millis(200);
        let mut give_up_at: Option<Instant> = None;
        loop {
            let error = match write().await {
                Ok(value) => {
                    self.store_answered();
                    return Ok(value);
                }
                Err(error) => error,
            };
            if self.shutdown.is_cancelled() && give_up_at.is_none() {
                give_up_at = Some(Instant::now() + self.config.shutdown_grace);
            }
            let out_of_time = give_up_at.is_some_and(|at| Instant::now() >= at);
            if !error.is_unavailable() || self.kill.is_cancelled() || out_of_time {
                tracing::error!(
                    job = %job.id,
                    attempt = job.attempt,
                    error = %redact_url(&format!("{:#}", anyhow_like(&error))),
                    "job {} attempt {}: {what} could not be recorded",
                    job.id,
                    job.attempt
                );
                return Err(error);
            }
            self.store_failed(&format!("job {}: {what}", job.id), &error);
            self.health.beat();
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = self.kill.cancelled() => {}
            }
            pause = (pause * 2).min(OUTAGE_RETRY_MAX);
        }
    }

    /// Notes a call that failed because the store is away: the first one of an
    /// outage is logged with its cause, then a reminder at most every
    /// [`OUTAGE_REMINDER`] with how long it has lasted; `what` is counted for the line
    /// logged when the store answers again.
    pub(super) fn store_failed(&self, what: &str, error: &StoreError) {
        let cause = redact_url(&format!("{:#}", anyhow_like(error)));
        let mut outage = self
            .outage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let state = outage.get_or_insert_with(|| {
            tracing::warn!(
                error = %cause,
                "the store cannot be reached; retrying (a running job goes on, what it \
                 reports meanwhile is kept)"
            );
            OutageState {
                since: now,
                reminded: now,
                missed: std::collections::BTreeMap::new(),
            }
        });
        if now.duration_since(state.reminded) >= OUTAGE_REMINDER {
            state.reminded = now;
            tracing::warn!(
                error = %cause,
                "the store has been unreachable for {:.0} s; still retrying",
                now.duration_since(state.since).as_secs_f64()
            );
        }
        *state.missed.entry(what.to_owned()).or_default() += 1;
    }

    /// Ends an outage, if there was one, with a line saying how long it lasted and
    /// what could not be written meanwhile.
    pub(super) fn store_answered(&self) {
        let ended = self
            .outage
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(state) = ended {
            let missed: Vec<String> = state
                .missed
                .iter()
                .map(|(what, times)| format!("{what}: {times} failed"))
                .collect();
            tracing::warn!(
                "the store answers again after {:.1} s; not recorded meanwhile: {}",
                state.since.elapsed().as_secs_f64(),
                missed.join("; ")
            );
        }
    }
}
