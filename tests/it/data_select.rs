//! Which images a dataset spec selects: label filters, caps, splits, fractions,
//! determinism and the errors for missing folders and labels.

use std::collections::HashSet;
use std::path::PathBuf;

use sweeper::train::data::folder::{fraction_subset, select, Entry, Selection};
use sweeper::train::data::{available_splits, DataError, Split};

use crate::common::data_tree::{label_counts, spec, write_tree};

const LABELS: &[(&str, usize)] = &[
    ("ASC_H", 30),
    ("Atrophy", 12),
    ("Candida", 5),
    ("HSIL", 30),
    ("NILM_intermediate", 40),
    ("NILM_superficial", 25),
];

fn tree() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("temp dir");
    write_tree(root.path(), "setA", LABELS);
    root
}

fn counts(selection: &Selection, split: Split) -> Vec<usize> {
    label_counts(
        selection.split(split).iter().map(|entry| entry.label),
        selection.label_names.len(),
    )
}

fn paths(entries: &[Entry]) -> HashSet<PathBuf> {
    entries.iter().map(|entry| entry.path.clone()).collect()
}

#[test]
fn without_rules_every_label_and_image_is_train() {
    let root = tree();
    let selection = select(&spec("setA"), root.path(), 0).unwrap();
    assert_eq!(
        selection.label_names,
        [
            "ASC_H",
            "Atrophy",
            "Candida",
            "HSIL",
            "NILM_intermediate",
            "NILM_superficial"
        ]
    );
    assert_eq!(
        counts(&selection, Split::Train),
        vec![30, 12, 5, 30, 40, 25]
    );
    assert!(selection.val.is_empty() && selection.test.is_empty());
    // Labels follow the folders: every path sits in its label's folder.
    for entry in &selection.train {
        let folder = entry.path.parent().unwrap().file_name().unwrap();
        assert_eq!(
            folder.to_str(),
            Some(selection.label_names[entry.label].as_str())
        );
    }
}

#[test]
fn exclude_min_and_take_apply_in_order() {
    let root = tree();
    let mut spec = spec("setA");
    spec.exclude_labels = vec!["ASC_H".into(), "HSIL".into()];
    spec.min_images_per_label = Some(12);
    spec.take_labels = Some(2);
    let selection = select(&spec, root.path(), 0).unwrap();
    // Candida (5) is below the minimum; of Atrophy, NILM_intermediate and
    // NILM_superficial the first two by name are kept.
    assert_eq!(selection.label_names, ["Atrophy", "NILM_intermediate"]);
    assert_eq!(counts(&selection, Split::Train), vec![12, 40]);

    spec.take_labels = Some(4);
    let error = select(&spec, root.path(), 0).unwrap_err();
    assert!(
        matches!(error, DataError::TooFewLabels { wanted: 4, .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("take_labels = 4") && message.contains("NILM_superficial"),
        "{message}"
    );
}

#[test]
fn include_keeps_only_those_and_names_missing_ones() {
    let root = tree();
    let mut spec = spec("setA");
    spec.include_labels = Some(vec!["HSIL".into(), "ASC_H".into()]);
    let selection = select(&spec, root.path(), 0).unwrap();
    assert_eq!(selection.label_names, ["ASC_H", "HSIL"]);

    spec.include_labels = Some(vec!["HSIL".into(), "SCC".into(), "LSIL".into()]);
    let error = select(&spec, root.path(), 0).unwrap_err();
    match &error {
        DataError::MissingLabels { labels, folder } => {
            assert_eq!(labels, &["SCC".to_string(), "LSIL".to_string()]);
            assert!(folder.ends_with("setA"));
        }
        other => panic!("expected MissingLabels, got {other}"),
    }
    assert!(error.to_string().contains("SCC"));
}

#[test]
fn missing_folder_is_an_error_naming_the_path() {
    let root = tree();
    let error = select(&spec("setZ"), root.path(), 0).unwrap_err();
    assert!(matches!(error, DataError::MissingFolder { .. }));
    let message = error.to_string();
    assert!(
        message.contains(&root.path().join("setZ").display().to_string()),
        "{message}"
    );
}

#[test]
fn per_label_and_balanced_max_total_caps() {
    let root = tree();
    let mut spec = spec("setA");
    spec.per_label = Some(20);
    let selection = select(&spec, root.path(), 0).unwrap();
    assert_eq!(
        counts(&selection, Split::Train),
        vec![20, 12, 5, 20, 20, 20]
    );

    // 97 images over six labels: Candida and Atrophy keep all theirs (5 + 12), the
    // other four share the 80 left, 20 each.
    spec.per_label = None;
    spec.max_total = Some(97);
    let selection = select(&spec, root.path(), 0).unwrap();
    assert_eq!(
        counts(&selection, Split::Train),
        vec![20, 12, 5, 20, 20, 20]
    );
    // 30 does not divide by six evenly at the level the small labels allow: level 5
    // gives 30 exactly.
    spec.max_total = Some(30);
    let selection = select(&spec, root.path(), 0).unwrap();
    assert_eq!(counts(&selection, Split::Train), vec![5, 5, 5, 5, 5, 5]);
    spec.max_total = Some(33);
    let selection = select(&spec, root.path(), 0).unwrap();
    assert_eq!(counts(&selection, Split::Train), vec![6, 6, 5, 6, 5, 5]);
}

#[test]
fn three_way_split_is_stratified_disjoint_and_complete() {
    let root = tree();
    let mut spec = spec("setA");
    spec.split = vec![0.7, 0.15, 0.15];
    let selection = select(&spec, root.path(), 3).unwrap();
    // Per label: train = round(0.7 n), val = round(0.85 n) − train, test the rest.
    assert_eq!(counts(&selection, Split::Train), vec![21, 8, 4, 21, 28, 18]);
    assert_eq!(counts(&selection, Split::Val), vec![5, 2, 0, 5, 6, 3]);
    assert_eq!(counts(&selection, Split::Test), vec![4, 2, 1, 4, 6, 4]);

    let (train, val, test) = (
        paths(&selection.train),
        paths(&selection.val),
        paths(&selection.test),
    );
    assert!(train.is_disjoint(&val) && train.is_disjoint(&test) && val.is_disjoint(&test));
    assert_eq!(train.len() + val.len() + test.len(), 142);
    assert_eq!(selection.all_paths().len(), 142);
    assert_eq!(
        available_splits(&spec),
        vec![Split::Train, Split::Val, Split::Test]
    );
}

#[test]
fn same_seed_same_images_other_seed_other_images() {
    let root = tree();
    let mut spec = spec("setA");
    spec.per_label = Some(10);
    spec.split = vec![0.5, 0.5];
    let first = select(&spec, root.path(), 11).unwrap();
    let again = select(&spec, root.path(), 11).unwrap();
    assert_eq!(first, again);
    let other = select(&spec, root.path(), 12).unwrap();
    assert_ne!(paths(&first.train), paths(&other.train));
    // The shuffle really shuffles: the capped train images are not the first files.
    let hsil_first: Vec<_> = first.train.iter().filter(|e| e.label == 3).collect();
    let names: Vec<String> = hsil_first
        .iter()
        .map(|e| e.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_ne!(
        names,
        [
            "img0000.png",
            "img0001.bmp",
            "img0002.tiff",
            "img0003.jpg",
            "img0004.png"
        ]
    );
}

#[test]
fn a_label_keeps_its_images_when_another_label_is_removed() {
    let root = tree();
    let mut spec = spec("setA");
    spec.per_label = Some(8);
    let all = select(&spec, root.path(), 5).unwrap();
    spec.exclude_labels = vec!["ASC_H".into()];
    let fewer = select(&spec, root.path(), 5).unwrap();
    let hsil = |selection: &Selection| -> HashSet<PathBuf> {
        let index = selection
            .label_names
            .iter()
            .position(|n| n == "HSIL")
            .unwrap();
        selection
            .train
            .iter()
            .filter(|e| e.label == index)
            .map(|e| e.path.clone())
            .collect()
    };
    assert_eq!(hsil(&all), hsil(&fewer));
}

#[test]
fn fractions_are_stratified_sized_and_nested() {
    let root = tree();
    let mut spec = spec("setA");
    spec.exclude_labels = vec!["Candida".into()];
    let selection = select(&spec, root.path(), 0).unwrap();
    let train = &selection.train;
    assert_eq!(train.len(), 137);
    let labels = selection.label_names.len();
    let seventy = fraction_subset(train, 0.7, labels);
    let forty = fraction_subset(train, 0.4, labels);
    assert_eq!(seventy.len(), 96); // round(95.9)
    assert_eq!(forty.len(), 55); // round(54.8)
    let per_label = |entries: &[Entry]| label_counts(entries.iter().map(|e| e.label), labels);
    // Largest remainders of (30, 12, 30, 40, 25) × 96 / 137 and × 55 / 137.
    assert_eq!(per_label(&seventy), vec![21, 8, 21, 28, 18]);
    assert_eq!(per_label(&forty), vec![12, 5, 12, 16, 10]);
    assert!(paths(&forty).is_subset(&paths(&seventy)));
    assert!(paths(&seventy).is_subset(&paths(train)));
    assert_eq!(fraction_subset(train, 1.0, labels), *train);
    assert_eq!(
        fraction_subset(&train[..3], 0.01, labels).len(),
        1,
        "at least one image"
    );
}

#[test]
fn test_folder_gives_the_test_split_and_split_divides_the_rest() {
    let root = tempfile::tempdir().unwrap();
    let main = [("ASC_H", 40), ("HSIL", 30), ("LSIL", 20)];
    write_tree(root.path(), "setB/train", &main);
    write_tree(
        root.path(),
        "setB/test",
        &[("ASC_H", 25), ("HSIL", 25), ("LSIL", 4), ("Other", 9)],
    );
    let mut spec = spec("setB/train");
    spec.include_labels = Some(vec!["ASC_H".into(), "HSIL".into(), "LSIL".into()]);
    spec.max_total = Some(60);
    spec.split = vec![0.85, 0.15];
    spec.test_folder = Some("setB/test".into());
    spec.test_max_total = Some(30);
    let selection = select(&spec, root.path(), 0).unwrap();
    assert_eq!(selection.label_names, ["ASC_H", "HSIL", "LSIL"]);
    assert_eq!(counts(&selection, Split::Train), vec![17, 17, 17]);
    assert_eq!(counts(&selection, Split::Val), vec![3, 3, 3]);
    // LSIL has only 4 test images; ASC_H and HSIL share the rest of the 30.
    assert_eq!(counts(&selection, Split::Test), vec![13, 13, 4]);
    assert!(selection
        .test
        .iter()
        .all(|e| e.path.starts_with(root.path().join("setB/test"))));
    assert_eq!(
        available_splits(&spec),
        vec![Split::Train, Split::Val, Split::Test]
    );

    std::fs::remove_dir_all(root.path().join("setB/test/LSIL")).unwrap();
    let error = select(&spec, root.path(), 0).unwrap_err();
    assert!(
        matches!(&error, DataError::MissingLabels { labels, folder } if labels == &["LSIL".to_string()] && folder.ends_with("setB/test")),
        "{error}"
    );
}
