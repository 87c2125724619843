//! The demo dataset generator: layout and counts, determinism, labels that differ
//! in shape and texture, and the demo sweep's datasets loading from it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sweeper::sweep::DatasetSpec;
use sweeper::train::data::{load, LoadRequest, Split};
use sweeper::train::synth::{generate, SynthConfig, MAIN_LABELS, OTHER_LABELS};

fn small() -> SynthConfig {
    SynthConfig {
        seed: 9,
        image_size: 32,
        main_per_label: 2,
        other_labels: 3,
        other_per_label: 3,
        rare_labels: 1,
        rare_per_label: 1,
        labelled_per_label: 2,
        train_per_label: 2,
        test_per_label: 1,
        threads: 1,
    }
}

/// Every file under `root`, relative, with its bytes.
fn files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(path.strip_prefix(root).unwrap().to_path_buf(), bytes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn layout_and_counts_follow_the_config() {
    let out = tempfile::tempdir().unwrap();
    let summary = generate(out.path(), &small()).unwrap();
    // set A: 5 × 2 main + 2 × 3 other + 1 rare; set A labelled: 2 × 2 (not the rare
    // label); set B: 5 × 2 train + 5 × 1 test.
    assert_eq!(summary.images, 10 + 6 + 1 + 4 + 10 + 5);
    let written = files(out.path());
    assert_eq!(written.len(), summary.images);
    for (folder, count) in &summary.folders {
        let here = written
            .keys()
            .filter(|p| p.parent() == Some(folder.as_path()))
            .count();
        assert_eq!(here, *count, "{}", folder.display());
    }
    for label in MAIN_LABELS {
        for part in ["setA", "setB/train", "setB/test"] {
            assert!(out.path().join(part).join(label).is_dir(), "{part}/{label}");
        }
    }
    assert!(out.path().join("setA").join(OTHER_LABELS[2]).is_dir());
    assert!(out
        .path()
        .join("setA_labelled")
        .join(OTHER_LABELS[1])
        .is_dir());
    assert!(!out
        .path()
        .join("setA_labelled")
        .join(OTHER_LABELS[2])
        .exists());
    assert!(!out.path().join("setA").join(OTHER_LABELS[3]).exists());
    let image = image::open(out.path().join("setA/HSIL/HSIL_00000.png")).unwrap();
    assert_eq!((image.width(), image.height()), (32, 32));

    let defaults = SynthConfig::default();
    assert_eq!(defaults.image_size, 64);
    assert!(defaults.other_per_label >= 40 && defaults.other_labels - defaults.rare_labels >= 6);
    assert!(defaults.train_per_label >= 80 && defaults.test_per_label >= 40);
}

#[test]
fn same_seed_same_bytes_whatever_the_threads() {
    let (first, second, other) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    generate(first.path(), &small()).unwrap();
    generate(
        second.path(),
        &SynthConfig {
            threads: 3,
            ..small()
        },
    )
    .unwrap();
    assert_eq!(files(first.path()), files(second.path()));
    generate(
        other.path(),
        &SynthConfig {
            seed: 10,
            ..small()
        },
    )
    .unwrap();
    let (a, b) = (files(first.path()), files(other.path()));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    assert!(
        a.values().zip(b.values()).all(|(x, y)| x != y),
        "another seed, other images"
    );
}

/// Features of one image: the share of dark (nuclear) pixels, their mean luma, and
/// the spread of their luma (chromatin texture).
fn nuclear_features(path: &Path) -> [f64; 3] {
    let image = image::open(path).unwrap().to_rgb8();
    let luma: Vec<f64> = image
        .pixels()
        .map(|p| 0.299 * p[0] as f64 + 0.587 * p[1] as f64 + 0.114 * p[2] as f64)
        .collect();
    let dark: Vec<f64> = luma.iter().copied().filter(|&l| l < 110.0).collect();
    let share = dark.len() as f64 / luma.len() as f64;
    let mean = if dark.is_empty() {
        110.0
    } else {
        dark.iter().sum::<f64>() / dark.len() as f64
    };
    let spread = if dark.len() < 2 {
        0.0
    } else {
        (dark.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / dark.len() as f64).sqrt()
    };
    [share, mean, spread]
}

#[test]
fn labels_differ_in_nuclear_size_darkness_and_texture() {
    let out = tempfile::tempdir().unwrap();
    let config = SynthConfig {
        seed: 1,
        image_size: 64,
        main_per_label: 0,
        other_labels: 1,
        other_per_label: 40,
        rare_labels: 0,
        rare_per_label: 0,
        labelled_per_label: 0,
        train_per_label: 40,
        test_per_label: 40,
        threads: 0,
    };
    generate(out.path(), &config).unwrap();
    let features = |folder: &str, label: &str| -> Vec<[f64; 3]> {
        let dir = out.path().join(folder).join(label);
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        paths.iter().map(|p| nuclear_features(p)).collect()
    };
    let mean_share = |rows: &[[f64; 3]]| rows.iter().map(|r| r[0]).sum::<f64>() / rows.len() as f64;

    // Nuclear area: HSIL's large nuclei against NILM_superficial's pyknotic dots.
    let hsil = features("setB/train", "HSIL");
    let superficial = features("setA", "NILM_superficial");
    assert!(
        mean_share(&hsil) > 4.0 * mean_share(&superficial),
        "{} vs {}",
        mean_share(&hsil),
        mean_share(&superficial)
    );
    assert!(mean_share(&hsil) > 1.5 * mean_share(&features("setB/train", "ASC_US")));

    // A nearest-centroid classifier on these three features, fitted on setB/train and
    // scored on setB/test, beats chance (0.2) over the five main labels by far.
    let standardise = |rows: &[[f64; 3]]| -> [(f64, f64); 3] {
        [0, 1, 2].map(|k| {
            let mean = rows.iter().map(|r| r[k]).sum::<f64>() / rows.len() as f64;
            let sd = (rows.iter().map(|r| (r[k] - mean).powi(2)).sum::<f64>() / rows.len() as f64)
                .sqrt();
            (mean, sd.max(1e-9))
        })
    };
    let train: Vec<Vec<[f64; 3]>> = MAIN_LABELS
        .iter()
        .map(|l| features("setB/train", l))
        .collect();
    let scale = standardise(&train.concat());
    let z = |row: &[f64; 3]| [0, 1, 2].map(|k| (row[k] - scale[k].0) / scale[k].1);
    let centroids: Vec<[f64; 3]> = train
        .iter()
        .map(|rows| {
            let zs: Vec<[f64; 3]> = rows.iter().map(z).collect();
            [0, 1, 2].map(|k| zs.iter().map(|r| r[k]).sum::<f64>() / zs.len() as f64)
        })
        .collect();
    let (mut correct, mut total) = (0, 0);
    for (truth, label) in MAIN_LABELS.iter().enumerate() {
        for row in features("setB/test", label) {
            let point = z(&row);
            let distance = |c: &[f64; 3]| (0..3).map(|k| (point[k] - c[k]).powi(2)).sum::<f64>();
            let predicted = (0..centroids.len())
                .min_by(|&a, &b| distance(&centroids[a]).total_cmp(&distance(&centroids[b])))
                .unwrap();
            correct += usize::from(predicted == truth);
            total += 1;
        }
    }
    let accuracy = correct as f64 / total as f64;
    assert!(accuracy > 0.5, "nearest-centroid accuracy {accuracy}");
}

#[test]
fn the_demo_sweeps_datasets_load_from_the_default_generation() {
    let root = tempfile::tempdir().unwrap();
    let summary = generate(root.path(), &SynthConfig::default()).unwrap();
    assert_eq!(summary.images, 1834);
    let cache = root.path().join("cache");
    let main: Vec<String> = MAIN_LABELS.iter().map(|s| s.to_string()).collect();
    // The datasets of sweeps/demo.toml.
    let a1 = DatasetSpec {
        folder: "setA".into(),
        exclude_labels: main.clone(),
        min_images_per_label: Some(20),
        take_labels: Some(6),
        max_total: Some(600),
        ..DatasetSpec::default()
    };
    let a2 = DatasetSpec {
        folder: "setA_labelled".into(),
        split: vec![0.60, 0.15, 0.25],
        ..DatasetSpec::default()
    };
    let b = DatasetSpec {
        folder: "setB/train".into(),
        include_labels: Some(main.clone()),
        max_total: Some(400),
        split: vec![0.85, 0.15],
        test_folder: Some("setB/test".into()),
        test_max_total: Some(200),
        ..DatasetSpec::default()
    };
    let size = |spec: &DatasetSpec, split: Split, fraction: f64| -> (usize, usize) {
        let set = load(&LoadRequest {
            spec,
            data_root: root.path(),
            split,
            image_size: 32,
            fraction,
            seed: 0,
            cache_dir: &cache,
        })
        .unwrap();
        assert_eq!(set.image_size(), 32);
        (set.len(), set.label_names.len())
    };
    assert_eq!(size(&a1, Split::Train, 1.0), (600, 6));
    assert_eq!(size(&a1, Split::Train, 0.5), (300, 6));
    assert_eq!(size(&a2, Split::Train, 1.0), (216, 6));
    assert_eq!(size(&a2, Split::Val, 1.0), (54, 6));
    assert_eq!(size(&a2, Split::Test, 1.0), (90, 6));
    // The linear protocol's images are none of the pretext's: same labels, other pixels.
    let pretext: std::collections::BTreeSet<Vec<u8>> =
        files(&root.path().join("setA")).into_values().collect();
    let labelled = files(&root.path().join("setA_labelled"));
    assert_eq!(labelled.len(), 360);
    assert!(labelled.values().all(|bytes| !pretext.contains(bytes)));
    let a1_labels: std::collections::BTreeSet<String> =
        std::fs::read_dir(root.path().join("setA_labelled"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
    assert!(
        a1_labels.iter().all(|label| !main.contains(label)),
        "{a1_labels:?}"
    );
    assert_eq!(size(&b, Split::Train, 1.0), (340, 5));
    assert_eq!(size(&b, Split::Val, 1.0), (60, 5));
    assert_eq!(size(&b, Split::Test, 1.0), (200, 5));
}
