//! Outages you can see: a refused connection fails at once and says so; a worker
//! whose store goes away logs it once with the cause, keeps its job running, records
//! what it could not write once the store is back, and names the job whose end it
//! could never record. The store is cut with a TCP proxy in front of the test server.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{self, eventually, spec, submit, TestDb};
use serde_json::json;
use sweeper::store::{JobState, Store};
use sweeper::sweep::{Params, StageKind, StageSpec};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

/// Forwards 127.0.0.1:`addr.port()` to `target` until cut; a cut closes every
/// forwarded connection and refuses new ones until restored on the same port.
struct Proxy {
    addr: SocketAddr,
    target: String,
    up: Option<CancellationToken>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let mut proxy = Proxy {
            addr: "127.0.0.1:0".parse().unwrap(),
            target,
            up: None,
        };
        let listener = proxy.listen().await;
        proxy.addr = listener.local_addr().unwrap();
        proxy.serve(listener);
        proxy
    }

    async fn listen(&self) -> TcpListener {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let socket = TcpSocket::new_v4().unwrap();
            socket.set_reuseaddr(true).unwrap();
            match socket.bind(self.addr).and_then(|()| socket.listen(64)) {
                Ok(listener) => return listener,
                Err(error) if Instant::now() > deadline => panic!("cannot listen again: {error}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn serve(&mut self, listener: TcpListener) {
        let up = CancellationToken::new();
        self.up = Some(up.clone());
        let target = self.target.clone();
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    () = up.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(_) => continue,
                    },
                };
                let target = target.clone();
                let up = up.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        () = up.cancelled() => {}
                    }
                });
            }
        });
    }

    async fn cut(&mut self) {
        if let Some(up) = self.up.take() {
            up.cancel();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    async fn restore(&mut self) {
        let listener = self.listen().await;
        self.serve(listener);
    }

    /// `url` with its host and port replaced by the proxy's.
    fn url(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).unwrap();
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(self.addr.port())).unwrap();
        url.to_string()
    }
}

/// host:port of a Postgres URL.
fn target_of(url: &str) -> String {
    let url = url::Url::parse(url).unwrap();
    format!(
        "{}:{}",
        url.host_str().unwrap_or("127.0.0.1"),
        url.port().unwrap_or(5432)
    )
}

/// A worker on the store at `url`, its log in `worker-0.log` of the test's directory.
fn spawn_worker(db: &TestDb, url: &str, extra: &[&str]) -> Child {
    let log = std::fs::File::create(db.path("worker-0.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_sweeper"))
        .args(["worker", "--device", "cpu", "--name", "w0", "--db", url])
        .args([
            "--lease-secs",
            "60",
            "--heartbeat-secs",
            "0.3",
            "--poll-secs",
            "0.2",
        ])
        .args(extra)
        .current_dir(db.dir.path())
        .env_remove("SWEEPER_DB")
        .env_remove("SWEEPER_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

/// One command job running `sh script`.
fn script_stage(script: &std::path::Path) -> StageSpec {
    let mut stage = common::command_stage("s", &["sh"], 1, 3);
    stage.command = Some(vec!["sh".into(), script.display().to_string()]);
    stage.kind = StageKind::Command;
    stage.params = Params::new();
    stage
}

async fn running_job(store: &Store) -> uuid::Uuid {
    let found = eventually(Duration::from_secs(60), || async {
        !store.running(None).await.unwrap().is_empty()
    })
    .await;
    assert!(found, "no job started");
    store.running(None).await.unwrap()[0].id
}

#[test]
fn a_refused_connection_fails_at_once_and_says_so() {
    for command in [
        vec!["status"],
        vec!["jobs"],
        vec!["worker", "--device", "cpu"],
    ] {
        let started = Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_sweeper"))
            .args(&command)
            .args(["--db", "postgres://127.0.0.1:1/x"])
            .env_remove("SWEEPER_DB")
            .output()
            .unwrap();
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{command:?}: {stderr}");
        assert!(
            stderr.to_lowercase().contains("connection refused"),
            "{command:?}: {stderr}"
        );
        // The message is the check: a connection that waited for its timeout says
        // "timed out". The bound only catches a wait far beyond any start-up on a
        // loaded machine (libtorch alone can take seconds to load there).
        assert!(!stderr.contains("timed out"), "{command:?}: {stderr}");
        assert!(took < Duration::from_secs(30), "{command:?} took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_rides_out_an_outage_and_records_everything_after() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let mut proxy = Proxy::start(target_of(&db.url)).await;
    let store = db.store().await;
    let dir = db.dir.path().display().to_string();
    let script = db.path("job.sh");
    std::fs::write(
        &script,
        format!(
            r#"for i in 1 2 3; do echo "{{\"metric\": \"m\", \"value\": $i, \"step\": $i}}"; done
while [ ! -e '{dir}/outage' ]; do sleep 0.1; done
for i in 4 5 6; do echo "{{\"metric\": \"m\", \"value\": $i, \"step\": $i}}"; sleep 0.2; done
echo '{{"result": {{"loss": 1.5}}}}'
touch '{dir}/done'
"#
        ),
    )
    .unwrap();
    submit(&store, &spec("o", vec![script_stage(&script)], vec![])).await;
    let mut worker = spawn_worker(&db, &proxy.url(&db.url), &["--exit-when-idle"]);
    let job = running_job(&store).await;
    let recorded = eventually(Duration::from_secs(120), || async {
        store.metrics(job).await.unwrap().len() == 3
    })
    .await;
    assert!(recorded, "{}", db.worker_logs());

    proxy.cut().await;
    std::fs::write(db.path("outage"), "").unwrap();
    let noticed = eventually(Duration::from_secs(120), || async {
        db.path("done").exists() && db.worker_logs().contains("the store cannot be reached")
    })
    .await;
    assert!(noticed, "{}", db.worker_logs());
    // A few more failed tries with the job's end in hand.
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.restore().await;

    let statuses = common::wait_all(std::slice::from_mut(&mut worker), Duration::from_secs(90));
    let logs = db.worker_logs();
    assert!(statuses[0].success(), "{logs}");
    let row = store.job(job).await.unwrap().unwrap();
    assert_eq!(row.state, JobState::Succeeded, "{logs}");
    assert_eq!(row.attempt, 1, "the job was run again: {logs}");
    assert_eq!(row.result.as_ref().unwrap()["loss"], json!(1.5));
    let mut steps: Vec<i64> = store
        .metrics(job)
        .await
        .unwrap()
        .iter()
        .map(|m| m.step)
        .collect();
    steps.sort();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6], "{logs}");
    assert_eq!(
        logs.lines()
            .filter(|line| line.contains("the store cannot be reached; retrying"))
            .count(),
        1,
        "one line per outage: {logs}"
    );
    let down = logs
        .lines()
        .find(|line| line.contains("the store cannot be reached"))
        .unwrap();
    assert!(down.contains("error="), "the cause is given: {down}");
    let back = logs
        .lines()
        .find(|line| line.contains("the store answers again"))
        .unwrap_or_else(|| panic!("no line for the store's return: {logs}"));
    assert!(back.contains(&job.to_string()), "{back}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_end_the_store_never_took_is_logged_with_its_job() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let mut proxy = Proxy::start(target_of(&db.url)).await;
    let store = db.store().await;
    let dir = db.dir.path().display().to_string();
    let script = db.path("job.sh");
    std::fs::write(
        &script,
        format!(
            r#"touch '{dir}/started'
while [ ! -e '{dir}/outage' ]; do sleep 0.1; done
echo '{{"result": {{"loss": 2.5}}}}'
touch '{dir}/done'
"#
        ),
    )
    .unwrap();
    submit(&store, &spec("lost", vec![script_stage(&script)], vec![])).await;
    let mut worker = spawn_worker(&db, &proxy.url(&db.url), &["--shutdown-grace-secs", "1"]);
    let job = running_job(&store).await;
    // The program runs before the store goes away: a worker that is still setting
    // the job up when the cut comes waits for the store instead of starting it.
    let started = eventually(Duration::from_secs(120), || async {
        db.path("started").exists()
    })
    .await;
    assert!(
        started,
        "the job's program never started: {}",
        db.worker_logs()
    );
    proxy.cut().await;
    std::fs::write(db.path("outage"), "").unwrap();
    let noticed = eventually(Duration::from_secs(120), || async {
        db.path("done").exists() && db.worker_logs().contains("the store cannot be reached")
    })
    .await;
    assert!(noticed, "{}", db.worker_logs());
    // SAFETY: kill(2) on the worker this test started.
    unsafe {
        libc::kill(worker.id() as libc::pid_t, libc::SIGTERM);
    }
    common::wait_all(std::slice::from_mut(&mut worker), Duration::from_secs(60));
    let logs = db.worker_logs();
    let lost = logs
        .lines()
        .find(|line| line.contains("succeeded but its end could not be recorded"))
        .unwrap_or_else(|| panic!("the lost end is not logged: {logs}"));
    assert!(lost.contains(&job.to_string()), "{lost}");
    assert!(lost.contains("2.5"), "the result is in the log: {lost}");
    proxy.restore().await;
}
