//! The check that proves the pretext stage learns: on images whose label is a shape
//! (a property crops, flips and colour changes keep), a short SimCLR run followed by
//! the linear protocol beats the same backbone at its random initialisation.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::mpsc;

use serde_json::json;
use sweeper::train::config::{DownstreamConfig, ParamReader, PretextConfig};
use sweeper::train::downstream::{self, Protocol, Splits};
use sweeper::train::pretext;
use tch::Device;

#[test]
#[ignore = "does not reach the margin yet: at 15-30 epochs on 576 images the small test network's SimCLR features score 0.40-0.54 against 0.41-0.55 for random ones; needs a stronger small backbone or a longer run"]
fn simclr_features_beat_random_features_on_shapes() {
    tch::set_num_threads(2);
    let unlabelled = common::shapes(576, 32, 10);
    let labelled = common::shapes(600, 32, 11);
    let train = common::slice(&labelled, 0, 300);
    let val = common::slice(&labelled, 300, 100);
    let test = common::slice(&labelled, 400, 200);
    let splits = Splits {
        train: &train,
        val: &val,
        test: &test,
    };

    let p = common::params(json!({
        "batch_size": 32, "projection_dim": 32, "epochs": 15, "seed": 0,
        "optimizer": "adam", "lr_base": 0.008, "weight_decay": 0.0, "temperature": 0.5,
        "checkpoint_every": 15
    }));
    let cfg = PretextConfig::with_arch(&ParamReader::new(&p, "science"), common::tiny_arch(), 32)
        .expect("valid");
    let dir = tempfile::tempdir().expect("temp dir");
    let (tx, _rx) = mpsc::channel();
    let never = AtomicBool::new(false);
    let outcome = pretext::train(&cfg, &unlabelled, dir.path(), Device::Cpu, &tx, &never)
        .expect("pretext finishes");
    let losses = &outcome.epoch_losses;
    assert!(
        losses[losses.len() - 1] < losses[0] - 0.3,
        "the NT-Xent loss fell: {losses:?}"
    );

    let p = common::params(json!({"batch_size": 64, "max_epochs": 60, "patience": 15, "seed": 0}));
    let dcfg = DownstreamConfig::with_arch(
        &ParamReader::new(&p, "science-linear"),
        common::tiny_arch(),
        32,
        true,
    )
    .expect("valid");
    let probe = |init: Option<&std::path::Path>| {
        downstream::train(
            Protocol::Linear,
            &dcfg,
            splits,
            init,
            Device::Cpu,
            &tx,
            &never,
        )
        .expect("linear protocol finishes")
    };
    let pretrained = probe(Some(&outcome.checkpoint)).test_accuracy();
    let random = probe(None).test_accuracy();
    eprintln!("linear protocol on shapes: SimCLR {pretrained:.3}, random initialisation {random:.3}, losses {losses:?}");
    assert!(
        pretrained >= random + 0.10,
        "SimCLR {pretrained:.3} vs random {random:.3}"
    );
    assert!(pretrained > 0.6, "well above chance (1/3): {pretrained:.3}");
}
