//! The pretext runner end to end on a small network: resume after an interrupted
//! attempt, NaN detection, cancellation, and downstream jobs loading its checkpoint.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use serde_json::json;
use sweeper::train::config::{DownstreamConfig, PretextConfig};
use sweeper::train::data::ImageSet;
use sweeper::train::downstream::{self, Protocol, Splits};
use sweeper::train::pretext::{self, PretextOutcome};
use sweeper::train::{checkpoint, TrainError, TrainEvent, TrainResult};
use tch::Device;

use crate::common;

fn pretext_config(extra: serde_json::Value) -> PretextConfig {
    let mut p = common::params(json!({
        "batch_size": 16, "projection_dim": 8, "epochs": 4, "checkpoint_every": 1,
        "seed": 3, "lr_sqrt": true, "warmup_epochs": 1
    }));
    p.extend(common::params(extra));
    PretextConfig::with_arch(&p, common::tiny_arch(), 32).expect("valid test params")
}

/// Runs pretext on a thread as the first attempt; see [`run_attempt`].
fn run(
    cfg: &PretextConfig,
    data: &ImageSet,
    dir: &Path,
    stop_after: Option<i64>,
) -> (TrainResult<PretextOutcome>, Vec<TrainEvent>) {
    run_attempt(cfg, data, dir, 1, stop_after)
}

/// Runs pretext on a thread as attempt `attempt`; `stop_after` sets the cancel flag
/// once that epoch's checkpoint is announced, as a worker dying there would stop the
/// attempt.
fn run_attempt(
    cfg: &PretextConfig,
    data: &ImageSet,
    dir: &Path,
    attempt: i32,
    stop_after: Option<i64>,
) -> (TrainResult<PretextOutcome>, Vec<TrainEvent>) {
    let (tx, rx) = mpsc::channel();
    let cancel = AtomicBool::new(false);
    std::thread::scope(|s| {
        // Tensors are Send but not Sync: the thread gets its own handles to the data.
        let owned = common::slice(data, 0, data.labels.size()[0]);
        let (cancel, tx) = (&cancel, &tx);
        let handle =
            s.spawn(move || pretext::train(cfg, &owned, dir, Device::Cpu, attempt, tx, cancel));
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(std::time::Duration::from_millis(50)) {
                Ok(event) => {
                    if let TrainEvent::Checkpoint { epoch, .. } = &event {
                        if Some(*epoch) == stop_after {
                            cancel.store(true, Ordering::SeqCst);
                        }
                    }
                    seen.push(event);
                }
                Err(_) if handle.is_finished() => break,
                Err(_) => {}
            }
        }
        seen.extend(rx.try_iter());
        (
            handle.join().expect("the training thread does not panic"),
            seen,
        )
    })
}

fn checkpoints(events: &[TrainEvent]) -> Vec<i64> {
    events
        .iter()
        .filter_map(|e| {
            if let TrainEvent::Checkpoint { epoch, .. } = e {
                Some(*epoch)
            } else {
                None
            }
        })
        .collect()
}

fn metric(events: &[TrainEvent], name: &str) -> Vec<(i64, f64)> {
    events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Metric {
                step,
                name: n,
                value,
            } if n == name => Some((*step, *value)),
            _ => None,
        })
        .collect()
}

#[test]
fn an_interrupted_run_resumes_at_its_checkpoint_and_matches_an_uninterrupted_one() {
    let data = common::shapes(128, 32, 1);
    let cfg = pretext_config(json!({}));
    let interrupted = tempfile::tempdir().expect("temp dir");

    let (first, events) = run(&cfg, &data, interrupted.path(), Some(2));
    assert!(matches!(first, Err(TrainError::Cancelled)), "{first:?}");
    assert_eq!(checkpoints(&events), vec![1, 2]);
    assert_eq!(
        checkpoint::latest(interrupted.path()).map(|c| c.epoch),
        Some(2)
    );

    let first_losses = metric(&events, "loss");
    let (second, events) = run_attempt(&cfg, &data, interrupted.path(), 2, None);
    let second = second.expect("the second attempt finishes");
    assert_eq!(second.resumed_from, 2);
    // The checkpoint it resumed from kept the first attempt's epochs, announced before
    // any epoch of the second; its own checkpoints add the second attempt's.
    let resumed: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Resumed { epoch, history } => Some((*epoch, history.clone())),
            _ => None,
        })
        .collect();
    assert!(
        matches!(events.first(), Some(TrainEvent::Resumed { .. })),
        "{events:?}"
    );
    assert_eq!(resumed.len(), 1);
    let (resumed_at, history) = &resumed[0];
    assert_eq!(*resumed_at, 2);
    let kept: Vec<(i64, i32, f64)> = history
        .iter()
        .map(|h| (h.epoch, h.attempt, h.values["loss"]))
        .collect();
    assert_eq!(
        kept,
        first_losses
            .iter()
            .filter(|(epoch, _)| *epoch <= 2)
            .map(|(epoch, loss)| (*epoch, 1, *loss))
            .collect::<Vec<_>>()
    );
    assert!(history.iter().all(|h| h.values.len() == 4), "{history:?}");
    let last = checkpoint::latest(interrupted.path())
        .expect("a checkpoint")
        .read_sidecar()
        .expect("its sidecar");
    assert_eq!(
        last.history
            .iter()
            .map(|h| (h.epoch, h.attempt))
            .collect::<Vec<_>>(),
        vec![(1, 1), (2, 1), (3, 2), (4, 2)]
    );
    let first_progress = events.iter().find_map(|e| match e {
        TrainEvent::Progress { epoch, step, .. } => Some((*epoch, *step)),
        _ => None,
    });
    // Epoch index 2 is the third epoch; 8 steps per epoch were already done twice.
    assert_eq!(first_progress, Some((2, 17)));
    assert_eq!(checkpoints(&events), vec![3, 4]);
    assert_eq!(
        metric(&events, "loss")
            .iter()
            .map(|(s, _)| *s)
            .collect::<Vec<_>>(),
        vec![3, 4]
    );

    // The same job never interrupted: identical losses for epochs 3 and 4, because
    // weights, batch-norm statistics, optimizer buffers and the RNG were all restored.
    let straight = tempfile::tempdir().expect("temp dir");
    let (whole, events) = run(&cfg, &data, straight.path(), None);
    let whole = whole.expect("the uninterrupted run finishes");
    assert_eq!(whole.resumed_from, 0);
    assert_eq!(whole.epoch_losses.len(), 4);
    for (resumed, original) in second.epoch_losses.iter().zip(&whole.epoch_losses[2..]) {
        assert!(
            (resumed - original).abs() < 1e-4,
            "resumed {resumed} vs uninterrupted {original}"
        );
    }
    assert!((second.loss - whole.loss).abs() < 1e-4);

    // Per-epoch metrics: chance level ln(2·16 − 1), a positive rate, the scheduled lr.
    let chance = metric(&events, "chance_loss");
    assert_eq!(chance.len(), 4);
    assert!(chance.iter().all(|(_, v)| (v - 31f64.ln()).abs() < 1e-12));
    assert!(metric(&events, "images_per_s")
        .iter()
        .all(|(_, v)| *v > 0.0));
    let lrs = metric(&events, "lr");
    assert!(
        lrs.windows(2).all(|w| w[1].1 < w[0].1),
        "cosine decay after the warmup: {lrs:?}"
    );
    // The first epoch's loss sits near chance; training brings it down.
    let losses = metric(&events, "loss");
    assert!(
        (losses[0].1 - 31f64.ln()).abs() < 0.6,
        "first epoch {}",
        losses[0].1
    );
    assert!(losses[3].1 < losses[0].1, "{losses:?}");
    assert!(whole.checkpoint.ends_with("epoch-0004.ot"));
}

#[test]
fn a_run_that_diverges_fails_with_the_epoch_and_step() {
    let data = common::shapes(64, 32, 2);
    let cfg = pretext_config(
        json!({"optimizer": "sgd", "lr_base": 1e35, "lr_sqrt": false, "warmup_epochs": 0, "epochs": 3}),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let (result, _) = run(&cfg, &data, dir.path(), None);
    match result {
        Err(TrainError::Fatal(message)) => {
            assert!(message.contains("at epoch 1, step"), "{message}");
            assert!(
                message.contains("NaN") || message.contains("infinite"),
                "{message}"
            );
        }
        other => panic!("expected a fatal NaN error, got {other:?}"),
    }
}

#[test]
fn a_cancelled_run_stops_before_its_first_step() {
    let data = common::shapes(64, 32, 3);
    let cfg = pretext_config(json!({}));
    let dir = tempfile::tempdir().expect("temp dir");
    let (tx, rx) = mpsc::channel();
    let cancel = AtomicBool::new(true);
    let result = pretext::train(&cfg, &data, dir.path(), Device::Cpu, 1, &tx, &cancel);
    assert!(matches!(result, Err(TrainError::Cancelled)));
    assert!(rx.try_iter().next().is_none());
    assert!(checkpoint::latest(dir.path()).is_none());
}

#[test]
fn too_few_images_for_one_batch_is_a_clear_error() {
    let data = common::shapes(10, 32, 4);
    let cfg = pretext_config(json!({}));
    let dir = tempfile::tempdir().expect("temp dir");
    let (result, _) = run(&cfg, &data, dir.path(), None);
    let message = result.expect_err("10 images, batch 16").to_string();
    assert!(
        message.contains("10 images") && message.contains("16"),
        "{message}"
    );
}

#[test]
fn downstream_jobs_load_the_pretext_backbone_and_report_every_split() {
    let data = common::shapes(96, 32, 5);
    let cfg = pretext_config(json!({"epochs": 1}));
    let dir = tempfile::tempdir().expect("temp dir");
    let (outcome, _) = run(&cfg, &data, dir.path(), None);
    let outcome = outcome.expect("pretext finishes");

    let labelled = common::shapes(90, 32, 6);
    let (train, val, test) = (
        common::slice(&labelled, 0, 45),
        common::slice(&labelled, 45, 15),
        common::slice(&labelled, 60, 30),
    );
    let splits = Splits {
        train: &train,
        val: &val,
        test: &test,
    };
    for (protocol, linear) in [(Protocol::Linear, true), (Protocol::Finetune, false)] {
        let p =
            common::params(json!({"batch_size": 16, "max_epochs": 3, "patience": 2, "seed": 1}));
        let dcfg = DownstreamConfig::with_arch(&p, common::tiny_arch(), 32, linear).expect("valid");
        let (tx, rx) = mpsc::channel();
        let result = downstream::train(
            protocol,
            &dcfg,
            splits,
            Some(&outcome.checkpoint),
            Device::Cpu,
            &tx,
            &AtomicBool::new(false),
        )
        .expect("downstream finishes");
        assert_eq!(result.predictions.len(), 30);
        assert_eq!(result.truth.len(), 30);
        assert!(result.predictions.iter().all(|p| (0..3).contains(p)));
        assert!((1..=3).contains(&result.best_epoch));
        assert_eq!((result.train_images, result.test_images), (45, 30));
        let names: Vec<String> = rx
            .try_iter()
            .filter_map(|e| {
                if let TrainEvent::Metric { name, .. } = e {
                    Some(name)
                } else {
                    None
                }
            })
            .collect();
        assert!(
            names.contains(&"train_loss".to_string())
                && names.contains(&"val_accuracy".to_string())
        );
    }

    // A checkpoint of another backbone is refused, naming both.
    let p = common::params(json!({}));
    let mut other = common::tiny_arch();
    other.name = "resnet18".into();
    let dcfg = DownstreamConfig::with_arch(&p, other, 32, true).expect("valid");
    let (tx, _rx) = mpsc::channel();
    let err = downstream::train(
        Protocol::Linear,
        &dcfg,
        splits,
        Some(&outcome.checkpoint),
        Device::Cpu,
        &tx,
        &AtomicBool::new(false),
    )
    .expect_err("wrong backbone");
    assert!(
        err.to_string().contains("tiny") && err.to_string().contains("resnet18"),
        "{err}"
    );
}

#[test]
fn the_linear_protocol_learns_a_colour_label_from_random_features() {
    // Label = which channel is bright: random features separate it easily.
    let n = 120i64;
    let labels = tch::Tensor::arange(n, (tch::Kind::Int64, Device::Cpu)).remainder(3);
    let images = labels
        .one_hot(3)
        .to_kind(tch::Kind::Float)
        .view([n, 3, 1, 1])
        .expand([n, 3, 32, 32], false)
        * 200.0
        + 20.0;
    let set = ImageSet {
        images: images.to_kind(tch::Kind::Uint8).contiguous(),
        labels,
        label_names: vec!["r".into(), "g".into(), "b".into()],
        skipped: Vec::new(),
    };
    let (train, val, test) = (
        common::slice(&set, 0, 60),
        common::slice(&set, 60, 30),
        common::slice(&set, 90, 30),
    );
    let p = common::params(json!({"batch_size": 16, "max_epochs": 20, "patience": 5}));
    let dcfg = DownstreamConfig::with_arch(&p, common::tiny_arch(), 32, true).expect("valid");
    let (tx, _rx) = mpsc::channel();
    let splits = Splits {
        train: &train,
        val: &val,
        test: &test,
    };
    let result = downstream::train(
        Protocol::Linear,
        &dcfg,
        splits,
        None,
        Device::Cpu,
        &tx,
        &AtomicBool::new(false),
    )
    .expect("runs");
    assert!(result.test_accuracy() > 0.95, "{}", result.test_accuracy());
}
