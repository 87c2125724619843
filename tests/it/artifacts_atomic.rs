//! No reader ever sees half a checkpoint: while one task keeps replacing a large
//! object (multipart) and a small one (single put) under the same key, readers of
//! the store's file, of the listing and of a downloaded copy only ever see a whole
//! version or nothing.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sweeper::artifacts::Artifacts;

/// Over the single-put limit (8 MiB), so it goes up in several parts.
const BIG: usize = 20 * 1024 * 1024 + 17;
const BIG_BYTE: u8 = 0xB1;
const SMALL: usize = 3 * 1024 * 1024 + 5;
const SMALL_BYTE: u8 = 0x5A;
const KEY: &str = "study/0190f5e2-7c1a-7d3e-8f00-000000000001/epoch-0007.ot";

/// Whether `bytes` is exactly one of the two versions.
fn is_whole_version(bytes: &[u8]) -> bool {
    (bytes.len() == BIG && bytes.iter().all(|b| *b == BIG_BYTE))
        || (bytes.len() == SMALL && bytes.iter().all(|b| *b == SMALL_BYTE))
}

/// Reads `path` until `done`; panics on a torn read; returns how many whole reads.
fn keep_reading(path: PathBuf, done: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut whole = 0;
        while !done.load(Ordering::Acquire) {
            match std::fs::read(&path) {
                Ok(bytes) => {
                    assert!(
                        is_whole_version(&bytes),
                        "read {} bytes of a torn object at {}",
                        bytes.len(),
                        path.display()
                    );
                    whole += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("reading {}: {e}", path.display()),
            }
        }
        whole
    })
}

fn write_version(dir: &Path, name: &str, len: usize, byte: u8) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, vec![byte; len]).expect("write a local version");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_never_see_half_a_checkpoint() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let store_dir = tmp.path().join("shared");
    let store = Artifacts::from_url(&format!("file://{}", store_dir.display()))
        .expect("open the file:// store");
    let big = write_version(tmp.path(), "big", BIG, BIG_BYTE);
    let small = write_version(tmp.path(), "small", SMALL, SMALL_BYTE);
    let download = tmp.path().join("machine-b").join("epoch-0007.ot");

    let done = Arc::new(AtomicBool::new(false));
    let store_reader = keep_reading(store_dir.join(KEY), done.clone());
    let download_reader = keep_reading(download.clone(), done.clone());

    // A downloader and a lister run beside the writer.
    let downloader = {
        let store = store.clone();
        let done = done.clone();
        let download = download.clone();
        tokio::spawn(async move {
            let mut fetched = 0;
            while !done.load(Ordering::Acquire) {
                match store.get_file(KEY, &download).await {
                    Ok(_) => fetched += 1,
                    Err(sweeper::artifacts::ArtifactError::NotFound { .. }) => {}
                    Err(e) => panic!("download failed: {e}"),
                }
                tokio::task::yield_now().await;
            }
            fetched
        })
    };
    let lister = {
        let store = store.clone();
        let done = done.clone();
        tokio::spawn(async move {
            while !done.load(Ordering::Acquire) {
                let keys = store.list("study").await.expect("list");
                assert!(
                    keys.is_empty() || keys == [KEY],
                    "the listing shows staging files: {keys:?}"
                );
                tokio::task::yield_now().await;
            }
        })
    };

    for round in 0..10 {
        let (source, len) = if round % 2 == 0 {
            (&big, BIG)
        } else {
            (&small, SMALL)
        };
        let sent = store.put_file(KEY, source).await.expect("upload");
        assert_eq!(sent, len as u64);
    }
    // One more download after the last write, so the downloaded copy is checked too.
    store
        .get_file(KEY, &download)
        .await
        .expect("final download");
    done.store(true, Ordering::Release);

    let fetched = downloader.await.expect("downloader task");
    lister.await.expect("lister task");
    let store_reads = store_reader.join().expect("store reader");
    download_reader.join().expect("download reader");
    assert!(store_reads > 0, "the reader never saw the object");
    assert!(fetched > 0, "the downloader never fetched the object");

    // The last write (round 9) was the small version; nothing else is left behind.
    assert_eq!(std::fs::read(store_dir.join(KEY)).unwrap().len(), SMALL);
    assert!(is_whole_version(&std::fs::read(&download).unwrap()));
    let leftovers: Vec<_> = std::fs::read_dir(download.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers,
        ["epoch-0007.ot"],
        "temporary download files remain"
    );
}
