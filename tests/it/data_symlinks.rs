//! Symbolic links in an ImageFolder are followed, but a folder or file reached twice
//! counts once: a link loop does not multiply a label.

use crate::common::data_tree::{spec, write_tree};
use sweeper::train::data::folder::select;

#[test]
fn a_link_loop_counts_each_image_once() {
    let root = tempfile::tempdir().unwrap();
    let folder = write_tree(root.path(), "set", &[("a", 24), ("b", 24)]);
    let plain = select(&spec("set"), root.path(), 0).unwrap();
    assert_eq!(plain.train.len(), 48);

    // a/loop -> a, a/sub/up -> a, and b/twin -> ../b: three ways round again.
    std::os::unix::fs::symlink(".", folder.join("a/loop")).unwrap();
    std::fs::create_dir(folder.join("a/sub")).unwrap();
    std::os::unix::fs::symlink("..", folder.join("a/sub/up")).unwrap();
    std::os::unix::fs::symlink("../b", folder.join("b/twin")).unwrap();
    let looped = select(&spec("set"), root.path(), 0).unwrap();
    assert_eq!(looped.train.len(), 48);
    assert_eq!(looped, plain, "the same images, by the same paths");
}

#[test]
fn links_to_other_folders_and_files_are_followed() {
    let root = tempfile::tempdir().unwrap();
    let folder = write_tree(root.path(), "set", &[("a", 4), ("b", 4)]);
    let elsewhere = write_tree(root.path(), "elsewhere", &[("more", 3)]);
    std::os::unix::fs::symlink(elsewhere.join("more"), folder.join("a/more")).unwrap();
    std::os::unix::fs::symlink(
        folder.join("b/img0000.png"),
        folder.join("b/same-image.png"),
    )
    .unwrap();
    let selection = select(&spec("set"), root.path(), 0).unwrap();
    let count = |label: usize| selection.train.iter().filter(|e| e.label == label).count();
    assert_eq!((count(0), count(1)), (7, 4));
}
