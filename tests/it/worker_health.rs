//! `sweeper worker --health-addr`: the liveness endpoint is up before the worker
//! claims anything and answers 200 while a job runs; a taken address stops the worker
//! with status 2 before it registers or claims.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::common::{self, command_stage, eventually, spec, submit, TestDb};
use sweeper::store::JobState;

/// The address the worker says it listens on, once it has said so.
fn logged_addr(logs: &str) -> Option<SocketAddr> {
    let line = logs
        .lines()
        .find(|line| line.contains("health endpoint listening"))?;
    let (_, rest) = line.split_once("addr=")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The whole HTTP/1.1 response to `GET path`.
async fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the endpoint accepts");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_answers_liveness_probes_while_it_runs() {
    let db = TestDb::sqlite().await;
    let store = db.store().await;
    let started = db.path("started");
    let script = format!("touch '{}'; exec sleep 300", started.display());
    submit(
        &store,
        &spec(
            "health",
            vec![command_stage("s", &["sh", "-c", &script], 1, 1)],
            vec![],
        ),
    )
    .await;
    let mut worker = db.spawn_worker(0, &["--health-addr", "127.0.0.1:0"]);
    let running = eventually(Duration::from_secs(60), || async { started.exists() }).await;
    assert!(running, "the job did not start: {}", db.worker_logs());

    let logs = db.worker_logs();
    let addr = logged_addr(&logs).unwrap_or_else(|| panic!("no address logged: {logs}"));
    assert_ne!(addr.port(), 0, "the bound port, not the one asked for");
    let listening = logs.find("health endpoint listening").unwrap();
    let claimed = logs.find("claimed").expect("the claim is logged");
    assert!(listening < claimed, "bound after the claim: {logs}");

    let response = get(addr, "/healthz").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("\r\n\r\nok\n"), "{response}");

    // SAFETY: kill(2) on the worker this test started.
    assert_eq!(
        unsafe { libc::kill(worker.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let status = common::wait_all(std::slice::from_mut(&mut worker), Duration::from_secs(30));
    assert_eq!(status[0].code(), Some(0), "{}", db.worker_logs());
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the endpoint outlives the worker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_health_address_stops_the_worker_before_it_claims() {
    let db = TestDb::sqlite().await;
    let store = db.store().await;
    submit(
        &store,
        &spec("health", vec![command_stage("s", &["true"], 1, 1)], vec![]),
    )
    .await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();

    let output = db.sweeper(&[
        "worker",
        "--device",
        "cpu",
        "--exit-when-idle",
        "--health-addr",
        &addr,
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen for health checks on {addr}")),
        "{stderr}"
    );
    let job = &store.jobs_for_report("health").await.unwrap()[0];
    assert_eq!((job.state, job.attempt), (JobState::Queued, 0));
    assert!(store.workers().await.unwrap().is_empty(), "it registered");
}
