//! Loading splits: decoded pixels and labels, the shared cache (built once, shared
//! between splits and concurrent loaders), corrupt images and their threshold.

use std::path::{Path, PathBuf};
use std::sync::Barrier;

use sweeper::sweep::DatasetSpec;
use sweeper::train::data::{
    load, load_with, CacheOutcome, DataError, ImageSet, LoadOptions, LoadRequest, Split,
};
use sweeper::train::TrainError;
use tch::{Kind, Tensor};

use crate::common::data_tree::{spec, write_image, write_tree};

fn request<'a>(
    spec: &'a DatasetSpec,
    root: &'a Path,
    cache: &'a Path,
    split: Split,
) -> LoadRequest<'a> {
    LoadRequest {
        spec,
        data_root: root,
        split,
        image_size: 4,
        fraction: 1.0,
        seed: 0,
        cache_dir: cache,
    }
}

fn cache_files(cache: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(cache)
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.retain(|path| path.extension().is_some_and(|e| e == "u8img"));
    files.sort();
    files
}

/// The (red, green) colour of each image of the set, from its centre pixel.
fn colours(set: &ImageSet) -> Vec<(i64, i64)> {
    let centre = set.images.select(3, 2).select(2, 2).to_kind(Kind::Int64);
    let red: Vec<i64> = Vec::try_from(centre.select(1, 0)).unwrap();
    let green: Vec<i64> = Vec::try_from(centre.select(1, 1)).unwrap();
    red.into_iter().zip(green).collect()
}

fn labels(set: &ImageSet) -> Vec<i64> {
    Vec::try_from(&set.labels).unwrap()
}

#[test]
fn loads_pixels_and_labels_of_every_format() {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    write_tree(root.path(), "setA", &[("a", 10), ("b", 10), ("c", 10)]);
    let mut spec = spec("setA");
    spec.split = vec![0.6, 0.2, 0.2];
    let set = load(&request(&spec, root.path(), &cache, Split::Train)).unwrap();
    assert_eq!(set.images.size(), [18, 3, 4, 4]);
    assert_eq!(set.images.kind(), Kind::Uint8);
    assert_eq!(set.labels.size(), [18]);
    assert_eq!(set.labels.kind(), Kind::Int64);
    assert_eq!(set.label_names, ["a", "b", "c"]);
    assert!(set.skipped.is_empty());
    // Each image's colour names its label (red = 20 × label) and the images are the
    // decoded files, crop and all (a flat image stays flat; JPEG within a few levels).
    for ((red, _), label) in colours(&set).into_iter().zip(labels(&set)) {
        assert!((red - 20 * label).abs() <= 3, "red {red} for label {label}");
    }
    let flat = set.images.to_kind(Kind::Float);
    let spread = (flat.amax([2, 3], false) - flat.amin([2, 3], false)).max();
    assert!(
        spread.double_value(&[]) <= 4.0,
        "centre-cropped flat images stay flat"
    );
    let blue = set
        .images
        .select(1, 2)
        .to_kind(Kind::Float)
        .mean(Kind::Float);
    assert!((blue.double_value(&[]) - 7.0).abs() < 1.5);

    // The three splits partition the dataset: every (label, image) once. Green is
    // 8 × the image's index, so JPEG's error of a few levels cannot blur two images.
    let mut seen: Vec<(i64, i64)> = Vec::new();
    for split in [Split::Train, Split::Val, Split::Test] {
        let set = load(&request(&spec, root.path(), &cache, split)).unwrap();
        for ((_, green), label) in colours(&set).into_iter().zip(labels(&set)) {
            seen.push((label, (green + 4) / 8));
        }
    }
    seen.sort();
    let expected: Vec<(i64, i64)> = (0..3).flat_map(|l| (0..10).map(move |i| (l, i))).collect();
    assert_eq!(seen, expected);
}

#[test]
fn cache_is_built_once_and_shared_by_splits_and_fractions() {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    write_tree(root.path(), "setA", &[("a", 20), ("b", 20)]);
    let mut spec = spec("setA");
    spec.split = vec![0.5, 0.5];
    let options = LoadOptions::default();

    let (train, outcome) =
        load_with(&request(&spec, root.path(), &cache, Split::Train), &options).unwrap();
    assert_eq!(outcome, CacheOutcome::Built);
    let files = cache_files(&cache);
    assert_eq!(files.len(), 1);
    let built_at = std::fs::metadata(&files[0]).unwrap().modified().unwrap();

    let (again, outcome) =
        load_with(&request(&spec, root.path(), &cache, Split::Train), &options).unwrap();
    assert_eq!(outcome, CacheOutcome::Hit);
    assert!(train.images.equal(&again.images) && train.labels.equal(&again.labels));
    let (_, outcome) =
        load_with(&request(&spec, root.path(), &cache, Split::Val), &options).unwrap();
    assert_eq!(outcome, CacheOutcome::Hit, "val shares the dataset's cache");
    let mut half = request(&spec, root.path(), &cache, Split::Train);
    half.fraction = 0.5;
    let (half, outcome) = load_with(&half, &options).unwrap();
    assert_eq!(outcome, CacheOutcome::Hit);
    assert_eq!(half.len(), 10);
    assert_eq!(cache_files(&cache), files);
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().modified().unwrap(),
        built_at
    );

    // Another resolution, or a changed file, is another cache.
    let mut bigger = request(&spec, root.path(), &cache, Split::Train);
    bigger.image_size = 8;
    let (bigger, outcome) = load_with(&bigger, &options).unwrap();
    assert_eq!(outcome, CacheOutcome::Built);
    assert_eq!(bigger.images.size(), [20, 3, 8, 8]);
    write_image(&root.path().join("setA/a/img0000.png"), [200, 200, 200]);
    let (_, outcome) =
        load_with(&request(&spec, root.path(), &cache, Split::Train), &options).unwrap();
    assert_eq!(outcome, CacheOutcome::Built);
    assert_eq!(cache_files(&cache).len(), 3);
}

#[test]
fn concurrent_loaders_build_one_cache_and_see_the_same_tensors() {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    write_tree(root.path(), "setA", &[("a", 150), ("b", 150)]);
    let spec = spec("setA");
    let loaders = 4;
    let barrier = Barrier::new(loaders);
    let results: Vec<(Tensor, Tensor, CacheOutcome)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..loaders)
            .map(|_| {
                scope.spawn(|| {
                    let mut request = request(&spec, root.path(), &cache, Split::Train);
                    request.image_size = 32;
                    let options = LoadOptions {
                        decode_threads: 1,
                        ..LoadOptions::default()
                    };
                    barrier.wait();
                    let (set, outcome) = load_with(&request, &options).unwrap();
                    (set.images, set.labels, outcome)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let built = results
        .iter()
        .filter(|r| r.2 == CacheOutcome::Built)
        .count();
    assert_eq!(
        built,
        1,
        "exactly one loader decodes: {:?}",
        results.iter().map(|r| r.2).collect::<Vec<_>>()
    );
    assert_eq!(cache_files(&cache).len(), 1);
    for (images, labels, _) in &results[1..] {
        assert!(images.equal(&results[0].0) && labels.equal(&results[0].1));
    }
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn corrupt_images_are_skipped_and_listed_up_to_the_threshold() {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    write_tree(root.path(), "setA", &[("a", 100), ("b", 100)]);
    std::fs::write(
        root.path().join("setA/a/zz_garbage.png"),
        b"definitely not a PNG",
    )
    .unwrap();
    // A truncated PNG: a valid header, then nothing.
    let whole = std::fs::read(root.path().join("setA/b/img0000.png")).unwrap();
    std::fs::write(
        root.path().join("setA/b/zz_truncated.png"),
        &whole[..whole.len() / 2],
    )
    .unwrap();
    let spec = spec("setA");

    // 2 of 202: under 1%.
    let set = load(&request(&spec, root.path(), &cache, Split::Train)).unwrap();
    assert_eq!(set.len(), 200);
    assert_eq!(set.labels.size(), [200]);
    let mut skipped: Vec<String> = set
        .skipped
        .iter()
        .map(|(path, _)| path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    skipped.sort();
    assert_eq!(skipped, ["zz_garbage.png", "zz_truncated.png"]);
    assert!(set.skipped.iter().all(|(_, reason)| !reason.is_empty()));
    let counts: Vec<i64> = Vec::try_from(set.labels.bincount::<Tensor>(None, 2)).unwrap();
    assert_eq!(counts, [100, 100]);

    // A third: 3 of 203 is past 1%, and the error names the files.
    std::fs::write(root.path().join("setA/a/zz_empty.jpg"), b"").unwrap();
    let error = load(&request(&spec, root.path(), &cache, Split::Train)).unwrap_err();
    assert!(
        matches!(
            error,
            DataError::TooManySkipped {
                count: 3,
                total: 203,
                ..
            }
        ),
        "{error}"
    );
    let message = error.to_string();
    for name in ["zz_garbage.png", "zz_truncated.png", "zz_empty.jpg"] {
        assert!(message.contains(name), "{message}");
    }
    assert!(matches!(TrainError::from(error), TrainError::Fatal(_)));

    // A more tolerant caller still gets the set.
    let options = LoadOptions {
        max_skipped_share: 0.05,
        ..LoadOptions::default()
    };
    let (set, outcome) =
        load_with(&request(&spec, root.path(), &cache, Split::Train), &options).unwrap();
    assert_eq!(outcome, CacheOutcome::Hit, "the failures are cached too");
    assert_eq!((set.len(), set.skipped.len()), (200, 3));
}

#[test]
fn bad_requests_are_clear_fatal_errors() {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    write_tree(root.path(), "setA", &[("a", 4)]);

    let missing = spec("nowhere");
    let error = load(&request(&missing, root.path(), &cache, Split::Train)).unwrap_err();
    let expected_path = root.path().join("nowhere").display().to_string();
    assert!(error.to_string().contains(&expected_path), "{error}");
    match TrainError::from(error) {
        TrainError::Fatal(message) => assert!(message.contains(&expected_path)),
        other => panic!("missing data must be fatal, got {other:?}"),
    }

    let mut include = spec("setA");
    include.include_labels = Some(vec!["a".into(), "HSIL".into()]);
    let error = load(&request(&include, root.path(), &cache, Split::Train)).unwrap_err();
    assert!(error.to_string().contains("HSIL"), "{error}");

    let all_train = spec("setA");
    let error = load(&request(&all_train, root.path(), &cache, Split::Val)).unwrap_err();
    assert!(error.to_string().contains("no val split"), "{error}");

    let mut zero = request(&all_train, root.path(), &cache, Split::Train);
    zero.fraction = 0.0;
    assert!(load(&zero).unwrap_err().to_string().contains("fraction"));
}
