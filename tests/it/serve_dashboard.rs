//! `sweeper serve` in a real browser: Debian's Chromium, driven through chromedriver
//! (both installed by `make test`'s `browser` target; missing, the test fails — it
//! never skips), loads each page of a store filled by a real small run and the test
//! asserts on the DOM: the tables, the report's bold cell, a chart's data points, a
//! live update after a new metric is written. Screenshots go to the test's temp dir
//! (`KEEP_SCREENSHOTS=DIR` copies them out). Also: the token.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::common::{eventually, wait_all, TestDb};
use sweeper::store::{JobState, MetricPoint, Write};
use sweeper::train::synth::{self, SynthConfig};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

const SWEEP: &str = r#"
[sweep]
name = "dash"
data_root = "data"
seeds = [0]
baselines = false

[datasets.A]
folder = "setA"
include_labels = ["ASC_H", "ASC_US", "HSIL"]

[datasets.L]
folder = "setA_labelled"
split = [0.6, 0.2, 0.2]

[[stages]]
name = "pretext"
kind = "pretext"
dataset = "A"

[stages.grid]
backbone = ["small_resnet"]
batch_size = [8, 16]

[stages.params]
image_size = 32
epochs = 2
projection_dim = 8
checkpoint_every = 2

[[selections]]
name = "winners"
from = "pretext"
per = ["backbone"]
prefer = [{ min = "loss" }]
top = 1

[[stages]]
name = "linear"
kind = "linear"
from = "winners"
dataset = "L"

[stages.params]
batch_size = 16
max_epochs = 3
patience = 3
"#;

/// A running `sweeper serve` and the address it printed.
struct Served {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(db: &TestDb, extra: &[&str]) -> Served {
    let mut args = vec!["serve", "--bind", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut child = db
        .command(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sweeper serve starts");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines() {
        let line = line.expect("serve's stderr");
        if let Some(rest) = line.strip_prefix("dashboard at http://") {
            let addr = rest.trim_end_matches('/').parse().expect("an address");
            return Served { child, addr };
        }
    }
    let _ = child.wait();
    panic!("sweeper serve ended without saying where it listens");
}

/// chromedriver on a free port, with Chromium headless.
async fn browser(dir: &std::path::Path) -> (Child, Client) {
    for part in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            std::path::Path::new(part).exists(),
            "{part} is missing: `make browser` installs Debian's chromium and chromium-driver"
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let up = eventually(Duration::from_secs(60), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    assert!(up, "chromedriver did not listen on {port}");
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1000",
                format!("--user-data-dir={}", dir.join("chromium-profile").display()),
            ],
        }),
    );
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session");
    (driver, client)
}

async fn screenshot(client: &Client, dir: &std::path::Path, name: &str) {
    let png = client.screenshot().await.expect("a screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    std::fs::write(dir.join(format!("{name}.png")), &png).unwrap();
    if let Some(keep) = std::env::var_os("KEEP_SCREENSHOTS") {
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::write(
            std::path::Path::new(&keep).join(format!("{name}.png")),
            &png,
        )
        .unwrap();
    }
}

async fn text_of(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .text()
        .await
        .unwrap()
}

async fn attr(client: &Client, css: &str, name: &str) -> Option<String> {
    client
        .find(Locator::Css(css))
        .await
        .ok()?
        .attr(name)
        .await
        .ok()?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_renders_in_chromium_and_a_running_job_updates_live() {
    let db = TestDb::sqlite().await;
    synth::generate(
        &db.path("data"),
        &SynthConfig {
            image_size: 32,
            main_per_label: 12,
            // The labelled set holds the common other labels: three of them.
            other_labels: 3,
            other_per_label: 4,
            rare_labels: 0,
            train_per_label: 0,
            test_per_label: 0,
            labelled_per_label: 10,
            threads: 1,
            ..SynthConfig::default()
        },
    )
    .expect("the dataset");
    std::fs::write(db.path("dash.toml"), SWEEP).unwrap();
    let submitted = db.sweeper(&["submit", "dash.toml"]);
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );
    let mut worker = vec![db.spawn_worker(0, &["--exit-when-idle"])];
    let statuses = wait_all(&mut worker, Duration::from_secs(600));
    assert!(statuses[0].success(), "{}", db.worker_logs());

    // The exports a notebook reads: one row per job, and the metric history.
    let wide = db.sweeper(&["report", "dash", "--format", "csv", "--wide"]);
    assert!(
        wide.status.success(),
        "{}",
        String::from_utf8_lossy(&wide.stderr)
    );
    let wide = String::from_utf8(wide.stdout).unwrap();
    assert_eq!(
        wide.lines().count(),
        1 + 3,
        "a header and one row per job:\n{wide}"
    );
    let header: Vec<&str> = wide.lines().next().unwrap().split(',').collect();
    for column in [
        "job_id",
        "batch_size",
        "seed",
        "loss",
        "accuracy",
        "duration_s",
        "host",
        "device",
    ] {
        assert!(header.contains(&column), "no {column} in {header:?}");
    }
    let history = db.sweeper(&["metrics", "dash"]);
    let history = String::from_utf8(history.stdout).unwrap();
    let losses = history
        .lines()
        .filter(|line| line.contains(",pretext,") && line.contains(",loss,"))
        .count();
    assert_eq!(losses, 2 * 2, "two jobs of two epochs:\n{history}");
    let refused = db.sweeper(&["report", "dash", "--wide"]);
    assert_eq!(refused.status.code(), Some(2), "--wide needs csv or json");

    // A job that is running while the browser watches: claimed here, no worker.
    std::fs::write(
        db.path("live.toml"),
        "[sweep]\nname = \"live\"\n\n[[stages]]\nname = \"steps\"\nkind = \"command\"\ncommand = [\"true\"]\n",
    )
    .unwrap();
    assert!(db.sweeper(&["submit", "live.toml"]).status.success());
    let store = db.store().await;
    let claimed = store
        .claim("watcher", Duration::from_secs(600))
        .await
        .unwrap()
        .expect("the live job");
    let point = |step: i64, value: f64| MetricPoint {
        step,
        name: "score".into(),
        value,
    };
    let written = store
        .record_metrics(claimed.id, claimed.attempt, &[point(1, 0.5), point(2, 0.7)])
        .await
        .unwrap();
    assert_eq!(written, Write::Applied);

    let served = serve(&db, &[]);
    let base = format!("http://{}", served.addr);
    let shots = db.path("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let (mut driver, client) = browser(db.dir()).await;

    // Sweeps: both sweeps, and the stage table with the pretext stage done.
    client.goto(&format!("{base}/")).await.unwrap();
    let list = text_of(&client, "ul.sweeps").await;
    assert!(list.contains("dash") && list.contains("live"), "{list}");
    let stages = text_of(&client, "table.stages").await;
    assert!(
        stages.contains("pretext") && stages.contains("linear"),
        "{stages}"
    );
    screenshot(&client, &shots, "sweeps").await;

    // A sweep: the pipeline, the decision with what was ranked, the job list, and the
    // report loaded after the page with the winner in bold and the heat map drawn.
    client.goto(&format!("{base}/sweeps/dash")).await.unwrap();
    let pipeline = text_of(&client, "ol.pipeline").await;
    assert!(pipeline.contains("selection winners"), "{pipeline}");
    let ranked = client
        .find_all(Locator::Css("table.ranked tbody tr"))
        .await
        .unwrap();
    assert_eq!(ranked.len(), 2, "both pretext cells ranked");
    let jobs = client
        .find_all(Locator::Css("table.jobs tbody tr"))
        .await
        .unwrap();
    assert_eq!(jobs.len(), 3, "two pretext jobs and one linear job");
    client
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css("#report[data-loaded] .report table strong"))
        .await
        .expect("the report's bold cell");
    let bold = text_of(&client, "#report .report table strong").await;
    assert!(bold.parse::<f64>().is_ok(), "a number in bold: {bold:?}");
    let heat = client
        .find_all(Locator::Css("#report figure.chart svg rect"))
        .await
        .unwrap();
    assert!(heat.len() >= 2, "the heat map's cells are drawn");
    assert!(
        attr(&client, "#report figure[data-figure=axes]", "data-points")
            .await
            .as_deref()
            == Some("4"),
        "two jobs against two axes"
    );
    screenshot(&client, &shots, "sweep").await;

    // A pretext job: parameters, provenance, its loss curve with one point per epoch.
    let pretext = store
        .jobs(
            &sweeper::store::JobFilter {
                stage: Some("pretext".into()),
                state: Some(JobState::Succeeded),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    client
        .goto(&format!("{base}/jobs/{}", pretext[0].id))
        .await
        .unwrap();
    let params = text_of(&client, "table.params").await;
    assert!(
        params.contains("batch_size") && params.contains("small_resnet"),
        "{params}"
    );
    let attempts = text_of(&client, "table.attempts").await;
    assert!(attempts.contains("cpu"), "{attempts}");
    assert_eq!(
        attr(&client, "figure[data-figure=loss]", "data-points")
            .await
            .as_deref(),
        Some("2")
    );
    assert!(text_of(&client, "figure[data-figure=loss]")
        .await
        .contains("chance"));
    screenshot(&client, &shots, "pretext-job").await;

    // The linear job: its validation curve and confusion matrix.
    let linear = store
        .jobs(
            &sweeper::store::JobFilter {
                stage: Some("linear".into()),
                ..Default::default()
            },
            None,
        )
        .await
        .unwrap();
    client
        .goto(&format!("{base}/jobs/{}", linear[0].id))
        .await
        .unwrap();
    let epochs = match attr(&client, "figure[data-figure=val_accuracy]", "data-points").await {
        Some(points) => points,
        None => panic!("no validation curve in\n{}", client.source().await.unwrap()),
    };
    assert!(epochs.parse::<u32>().unwrap() >= 1, "{epochs}");
    let confusion = client
        .find_all(Locator::Css("figure[data-figure=confusion] svg rect"))
        .await
        .unwrap();
    assert!(confusion.len() >= 9, "a 3 × 3 confusion matrix");
    screenshot(&client, &shots, "linear-job").await;

    // The running job: two points, then a third written while the page is open.
    client
        .goto(&format!("{base}/jobs/{}", claimed.id))
        .await
        .unwrap();
    assert_eq!(
        attr(&client, "#charts figure[data-figure=score]", "data-points")
            .await
            .as_deref(),
        Some("2")
    );
    let written = store
        .record_metrics(claimed.id, claimed.attempt, &[point(3, 0.9)])
        .await
        .unwrap();
    assert_eq!(written, Write::Applied);
    client
        .wait()
        .at_most(Duration::from_secs(60))
        .for_element(Locator::Css(
            "#charts figure[data-figure=score][data-points='3']",
        ))
        .await
        .expect("the chart updates without a reload");
    screenshot(&client, &shots, "live-job").await;

    // Workers: the one that ran the study.
    client.goto(&format!("{base}/workers")).await.unwrap();
    let workers = text_of(&client, "table.workers").await;
    assert!(
        workers.contains("w0") && workers.contains("cpu"),
        "{workers}"
    );
    screenshot(&client, &shots, "workers").await;

    client.close().await.unwrap();
    let _ = driver.kill();
    let _ = driver.wait();
    for name in [
        "sweeps",
        "sweep",
        "pretext-job",
        "linear-job",
        "live-job",
        "workers",
    ] {
        assert!(shots.join(format!("{name}.png")).exists());
    }
}

#[tokio::test]
async fn a_non_local_bind_needs_a_token_and_requests_without_it_get_401() {
    let db = TestDb::sqlite().await;
    let refused = db.sweeper(&["serve", "--bind", "0.0.0.0:0"]);
    assert_eq!(refused.status.code(), Some(2));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("without a token"), "{message}");

    let served = serve(&db, &["--token", "s3cret"]);
    let base = format!("http://{}", served.addr);
    let client = reqwest::Client::new();
    let get = |url: String, bearer: Option<&'static str>| {
        let mut request = client.get(url);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        request.send()
    };
    assert_eq!(get(format!("{base}/"), None).await.unwrap().status(), 401);
    assert_eq!(
        get(format!("{base}/workers"), Some("wrong"))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        get(format!("{base}/"), Some("s3cret"))
            .await
            .unwrap()
            .status(),
        200
    );
    let by_query = get(format!("{base}/workers?token=s3cret"), None)
        .await
        .unwrap();
    assert_eq!(by_query.status(), 200);
    let cookie = by_query.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    // A filter the store has no state for is refused, not ignored.
    let unknown = get(format!("{base}/sweeps/x?state=done"), Some("s3cret"))
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    // Every page is read-only: nothing but GET is routed.
    let posted = client
        .post(format!("{base}/"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 405);
}
