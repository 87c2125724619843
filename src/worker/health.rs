//! The worker's liveness, for a supervisor that restarts a stuck worker (a
//! Kubernetes liveness probe): `GET /healthz` answers 200 `ok` while the run loop
//! beats, and 503 with the reason once it has stopped beating or something decided
//! the worker cannot go on ([`Health::trip`], the circuit breaker).
//!
//! The loop beats on each poll of the queue, each heartbeat of a running job and each
//! retry of a write that waits for the store: a worker riding out a store outage is
//! alive, and restarting it would not bring the store back.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub type HealthResult<T> = Result<T, HealthError>;

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("cannot listen for health checks on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// How many beat periods without a beat make the worker stale.
const STALE_AFTER_BEATS: u32 = 10;

/// The shortest staleness window: the end of a job (its last upload, the store's
/// answer) runs between two beats, and a probe that restarts a worker busy uploading
/// a checkpoint would lose the attempt.
const STALE_AFTER_AT_LEAST: Duration = Duration::from_secs(120);

/// How long a stopping endpoint waits for a request in flight.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// Whether the worker is alive, shared by the run loop (which beats), whoever trips
/// it, and the endpoint (which reads it). Atomics and a `OnceLock`: written from the
/// loop and read by every probe, never held.
#[derive(Debug)]
pub struct Health {
    born: Instant,
    /// Milliseconds after `born` of the last beat.
    last_beat_ms: AtomicU64,
    stale_after: Duration,
    /// The first reason given: later trips are usually its consequences.
    tripped: OnceLock<String>,
}

/// What the endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Ok,
    Failing(String),
}

impl Health {
    /// A worker whose loop beats at least every `beat_every` (its poll or heartbeat
    /// period, the longer); it counts as beaten now.
    pub fn new(beat_every: Duration) -> Health {
        Health {
            born: Instant::now(),
            last_beat_ms: AtomicU64::new(0),
            stale_after: (beat_every * STALE_AFTER_BEATS).max(STALE_AFTER_AT_LEAST),
            tripped: OnceLock::new(),
        }
    }

    /// The loop is alive.
    pub fn beat(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_beat_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// The worker cannot go on (a broken device, a circuit breaker open for good):
    /// the endpoint fails from now on, with `reason`, whatever the loop does.
    pub fn trip(&self, reason: impl Into<String>) {
        let reason = reason.into();
        tracing::error!(%reason, "the worker reports itself unhealthy");
        let _ = self.tripped.set(reason);
    }

    pub fn status(&self) -> Status {
        self.status_at(Instant::now())
    }

    fn status_at(&self, now: Instant) -> Status {
        if let Some(reason) = self.tripped.get() {
            return Status::Failing(reason.clone());
        }
        let last = self.born + Duration::from_millis(self.last_beat_ms.load(Ordering::Relaxed));
        let silent = now.saturating_duration_since(last);
        if silent > self.stale_after {
            return Status::Failing(format!(
                "the worker loop has not run for {:.0} s (stale after {:.0} s)",
                silent.as_secs_f64(),
                self.stale_after.as_secs_f64()
            ));
        }
        Status::Ok
    }
}

/// A bound listener, before it serves.
#[derive(Debug)]
pub struct Endpoint {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Endpoint {
    /// Binds `addr` (port 0: any free port) and logs the address actually bound.
    pub async fn bind(addr: SocketAddr) -> HealthResult<Endpoint> {
        let bind_error = |source| HealthError::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        tracing::info!(%addr, "health endpoint listening");
        Ok(Endpoint { listener, addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Answers `GET /healthz` until `shutdown` is cancelled.
pub async fn serve(endpoint: Endpoint, health: Arc<Health>, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .with_state(health);
    let served = axum::serve(endpoint.listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(error) = served {
        tracing::warn!(addr = %endpoint.addr, %error, "the health endpoint stopped");
    }
}

async fn healthz(State(health): State<Arc<Health>>) -> (StatusCode, String) {
    match health.status() {
        Status::Ok => (StatusCode::OK, "ok\n".to_owned()),
        Status::Failing(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

/// The endpoint serving on its own task, for as long as the worker runs; dropped
/// (the worker ended early), it stops serving all the same.
pub struct Server {
    stop: tokio_util::sync::DropGuard,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Binds `addr` and serves `health` there; the bind's failure is the caller's.
    pub async fn start(addr: SocketAddr, health: Arc<Health>) -> HealthResult<Server> {
        let endpoint = Endpoint::bind(addr).await?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(endpoint, health, stop.clone()));
        Ok(Server {
            stop: stop.drop_guard(),
            task,
        })
    }

    /// Stops serving, waiting a little for a request in flight.
    pub async fn stop(self) {
        let Server { stop, task } = self;
        drop(stop);
        let abort = task.abort_handle();
        if tokio::time::timeout(STOP_WAIT, task).await.is_err() {
            abort.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[test]
    fn a_worker_that_beats_is_healthy() {
        let health = Health::new(Duration::from_secs(2));
        assert_eq!(health.status(), Status::Ok);
        health.beat();
        assert_eq!(
            health.status_at(Instant::now() + Duration::from_secs(60)),
            Status::Ok
        );
    }

    #[test]
    fn a_loop_that_stops_beating_is_stale() {
        let health = Health::new(Duration::from_secs(20));
        health.beat();
        let window = Duration::from_secs(20 * u64::from(STALE_AFTER_BEATS));
        let now = Instant::now();
        assert_eq!(
            health.status_at(now + window - Duration::from_secs(1)),
            Status::Ok
        );
        let Status::Failing(reason) = health.status_at(now + window + Duration::from_secs(5))
        else {
            panic!("a loop silent for longer than its window is stale");
        };
        assert!(reason.contains("has not run for 205 s"), "{reason}");
        assert!(reason.contains("stale after 200 s"), "{reason}");
    }

    #[test]
    fn a_short_period_still_leaves_time_for_the_end_of_a_job() {
        let health = Health::new(Duration::from_millis(100));
        let now = Instant::now();
        assert_eq!(health.status_at(now + Duration::from_secs(60)), Status::Ok);
        assert!(matches!(
            health.status_at(now + STALE_AFTER_AT_LEAST + Duration::from_secs(1)),
            Status::Failing(_)
        ));
    }

    #[test]
    fn a_trip_fails_with_its_first_reason_whatever_the_loop_does() {
        let health = Health::new(Duration::from_secs(2));
        health.trip("cuda:0 failed 5 jobs in a row".to_owned());
        health.trip("a later consequence");
        health.beat();
        assert_eq!(
            health.status(),
            Status::Failing("cuda:0 failed 5 jobs in a row".into())
        );
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn the_endpoint_answers_200_then_503_with_the_reason() {
        let health = Arc::new(Health::new(Duration::from_secs(2)));
        let endpoint = Endpoint::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = endpoint.addr();
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(endpoint, Arc::clone(&health), stop.clone()));

        let ok = get(addr, "/healthz").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains("text/plain"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nok\n"), "{ok}");

        health.trip("the device is gone");
        let failing = get(addr, "/healthz").await;
        assert!(failing.starts_with("HTTP/1.1 503"), "{failing}");
        assert!(
            failing.ends_with("\r\n\r\nthe device is gone\n"),
            "{failing}"
        );

        let elsewhere = get(addr, "/").await;
        assert!(elsewhere.starts_with("HTTP/1.1 404"), "{elsewhere}");

        stop.cancel();
        task.await.unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn a_taken_address_is_a_bind_error_naming_it() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let error = Endpoint::bind(addr).await.unwrap_err();
        assert!(error.to_string().contains(&addr.to_string()), "{error}");
    }
}
