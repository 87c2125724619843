//! Pretraining helps on real images: SimCLR on Fashion-MNIST (Debian's
//! `dataset-fashion-mnist`, which `make test` installs), then the linear protocol,
//! against the same protocol from the untrained backbone, over three seeds. Every seed
//! must clear the margin; the margins are printed.
//!
//! The images are split by [`sweeper::train::idx`] into a pretext pool and, disjoint
//! from it, labelled train/validation images; the test images come from the test file.
//! The path is `SWEEPER_TEST_FASHION_MNIST` (the Makefile sets it), else Debian's.
//! Without the files the test fails: it never skips.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;

use serde_json::{json, Value};
use sweeper::sweep::{DatasetSpec, Params, StageKind};
use sweeper::train::idx::{self, IdxSplit};
use sweeper::train::{run_job, TrainJob};
use tch::Device;

const SEEDS: [i64; 3] = [0, 1, 2];
/// Images per label: pretext pool, labelled (train + validation), test.
const PRETEXT_PER_LABEL: usize = 150;
const LABELLED_PER_LABEL: usize = 60;
const TEST_PER_LABEL: usize = 60;
/// What every seed's linear-protocol accuracy must beat its random-init baseline by.
const MARGIN: f64 = 0.03;

fn fashion_mnist() -> PathBuf {
    let dir = std::env::var_os("SWEEPER_TEST_FASHION_MNIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/datasets/fashion-mnist"));
    assert!(
        dir.join("train-images-idx3-ubyte.gz").is_file(),
        "{} has no Fashion-MNIST: install Debian's dataset-fashion-mnist (`make real-data`)",
        dir.display()
    );
    dir
}

fn object(value: Value) -> Params {
    value.as_object().expect("an object").clone()
}

fn job(kind: StageKind, params: Params, dataset: DatasetSpec, root: &Path, dir: &Path) -> TrainJob {
    TrainJob {
        job_id: uuid::Uuid::new_v4(),
        attempt: 1,
        kind,
        params,
        dataset,
        dataset_name: "fashion-mnist".into(),
        data_root: root.to_owned(),
        job_dir: dir.to_owned(),
        init_checkpoint: None,
        cache_dir: root.join("cache"),
        device: Device::Cpu,
        halt_at: None,
    }
}

fn run(job: &TrainJob) -> Value {
    let (tx, _rx) = mpsc::channel();
    run_job(job, &tx, &AtomicBool::new(false))
        .unwrap_or_else(|e| panic!("{:?} job fails: {e}", job.kind))
}

#[test]
fn simclr_on_fashion_mnist_beats_the_random_init_baseline_for_every_seed() {
    tch::set_num_threads(2);
    let source = fashion_mnist();
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("data");
    let split = IdxSplit {
        pretext_per_label: PRETEXT_PER_LABEL,
        labelled_per_label: LABELLED_PER_LABEL,
        test_per_label: TEST_PER_LABEL,
        label_names: idx::FASHION_MNIST_LABELS.map(String::from).to_vec(),
    };
    idx::write_folders(&source, &root, &split).expect("the IDX files convert");
    let pretext_data = DatasetSpec {
        folder: "pretext".into(),
        ..DatasetSpec::default()
    };
    let labelled = DatasetSpec {
        folder: "labelled".into(),
        split: vec![0.8, 0.2],
        test_folder: Some("test".into()),
        ..DatasetSpec::default()
    };

    let mut margins = Vec::new();
    for seed in SEEDS {
        let pretext = run(&job(
            StageKind::Pretext,
            object(json!({
                "backbone": "small_resnet", "image_size": 32, "batch_size": 128,
                "projection_dim": 64, "epochs": 8, "checkpoint_every": 8, "seed": seed,
            })),
            pretext_data.clone(),
            &root,
            &dir.path().join(format!("pretext-{seed}")),
        ));
        let loss = pretext["loss"].as_f64().expect("a loss");
        let chance = pretext["chance_loss"].as_f64().expect("a chance level");
        assert!(
            loss < 0.9 * chance,
            "seed {seed}: loss {loss} vs chance {chance}"
        );
        let checkpoint = PathBuf::from(pretext["checkpoint"].as_str().expect("a checkpoint"));

        let linear_params = |baseline: bool| {
            object(json!({
                "backbone": "small_resnet", "image_size": 32, "batch_size": 256,
                "seed": seed, "baseline": baseline,
            }))
        };
        let mut pretrained = job(
            StageKind::Linear,
            linear_params(false),
            labelled.clone(),
            &root,
            &dir.path().join(format!("linear-{seed}")),
        );
        pretrained.init_checkpoint = Some(checkpoint);
        let accuracy = run(&pretrained)["accuracy"].as_f64().expect("accuracy");
        let baseline = run(&job(
            StageKind::Linear,
            linear_params(true),
            labelled.clone(),
            &root,
            &dir.path().join(format!("baseline-{seed}")),
        ))["accuracy"]
            .as_f64()
            .expect("accuracy");
        eprintln!(
            "seed {seed}: pretext loss {loss:.3} (chance {chance:.3}), linear {accuracy:.3}, \
             random init {baseline:.3}, margin {:+.3}",
            accuracy - baseline
        );
        margins.push((seed, accuracy - baseline));
    }
    for (seed, margin) in &margins {
        assert!(
            *margin > MARGIN,
            "seed {seed}: pretraining gains {margin:+.3} over random init, not > {MARGIN} \
             (all: {margins:?})"
        );
    }
}
