//! The decoded-image cache: every file of a dataset decoded once per resolution into
//! one file that every job and every worker of the machine reads.
//!
//! Images are converted to RGB, centre-cropped to a square of their shorter side and
//! resized to `S × S` with a triangle (bilinear, area-aware when shrinking) filter —
//! the same as resizing the shorter side to `S` and centre-cropping, without a
//! second pass. They are stored as `uint8 [N, 3, S, S]` in the sorted order of their
//! paths.
//!
//! The key is a hash of the file list (path, size, modification time) and the
//! resolution, so an edited or added file means a new cache. A build writes a
//! temporary file and renames it into place (readers never see half a file); builders
//! take an exclusive `flock` on `<key>.lock` first, so a second process or thread that
//! finds a build in progress waits for it and then reads its result. The kernel drops
//! the lock when its holder dies, so there is no stale lock to time out. (`flock` is
//! reliable on local file systems only: the cache directory is meant to be local to
//! the machine whose workers share it.)
//!
//! File layout: the magic `SWPIMG01`, the header's length (u64, little-endian), the
//! header as JSON ([`Header`]), then the pixels.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Instant, UNIX_EPOCH};

use image::imageops::{self, FilterType};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

use super::{CacheOutcome, DataError, DataResult, LoadOptions};

const MAGIC: &[u8; 8] = b"SWPIMG01";
/// Part of the key: bump it when decoding changes, so old caches are not reused.
const DECODER_VERSION: &str = "rgb-centre-crop-triangle-v1";
/// Images per unit of work handed to a decoding thread.
const CHUNK_IMAGES: usize = 16;
/// Builds at least this big log their progress.
const PROGRESS_MIN_IMAGES: usize = 500;

/// Decoded images of a sorted file list.
#[derive(Debug)]
pub struct Decoded {
    /// `uint8 [N, 3, S, S]`, row `i` is `paths[i]` (zeros where decoding failed).
    pub images: Tensor,
    pub paths: Vec<PathBuf>,
    /// Why file `i` could not be decoded, if it could not.
    pub failures: Vec<Option<String>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    key: String,
    count: usize,
    image_size: i64,
    /// `(index, reason)` of every file that could not be decoded.
    failures: Vec<(usize, String)>,
}

/// The cache file's name (without directory) for these files at this resolution.
pub fn cache_key(paths: &[PathBuf], image_size: i64) -> String {
    let mut hasher = Sha256::new();
    hasher.update(DECODER_VERSION.as_bytes());
    hasher.update(image_size.to_le_bytes());
    hasher.update((paths.len() as u64).to_le_bytes());
    for path in paths {
        hasher.update(path.as_os_str().as_encoded_bytes());
        hasher.update([0u8]);
        // An unreadable file hashes as size 0 / time 0 and is skipped when decoded.
        let (size, modified_ns) = fs::metadata(path)
            .map(|meta| {
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |since| since.as_nanos());
                (meta.len(), modified)
            })
            .unwrap_or((0, 0));
        hasher.update(size.to_le_bytes());
        hasher.update(modified_ns.to_le_bytes());
    }
    hex::encode(&hasher.finalize()[..16])
}

/// Where the cache of `key` lives in `cache_dir`.
pub fn cache_path(cache_dir: &Path, key: &str) -> PathBuf {
    cache_dir.join(format!("{key}.u8img"))
}

/// Reads the cache of `paths` at `image_size`, building it first when it is missing.
pub fn open_or_build(
    paths: &[PathBuf],
    image_size: i64,
    cache_dir: &Path,
    options: &LoadOptions,
) -> DataResult<(Decoded, CacheOutcome)> {
    let key = cache_key(paths, image_size);
    let path = cache_path(cache_dir, &key);
    if path.exists() {
        match read(&path, &key, paths, image_size) {
            Ok(decoded) => return Ok((decoded, CacheOutcome::Hit)),
            Err(error) => tracing::warn!("decoded-image cache unusable, rebuilding: {error}"),
        }
    }

    fs::create_dir_all(cache_dir).map_err(|source| DataError::Io {
        path: cache_dir.to_path_buf(),
        source,
    })?;
    let lock_path = cache_dir.join(format!("{key}.lock"));
    // Held until this function returns: the build and the rename happen under it.
    let lock = BuildLock::acquire(&lock_path)?;

    // Whoever held the lock before may have built it meanwhile.
    if path.exists() {
        match read(&path, &key, paths, image_size) {
            Ok(decoded) => {
                let outcome = if lock.waited {
                    CacheOutcome::Waited
                } else {
                    CacheOutcome::Hit
                };
                return Ok((decoded, outcome));
            }
            Err(error) => tracing::warn!("decoded-image cache unusable, rebuilding: {error}"),
        }
    }

    let decoded = decode_all(paths, image_size, options.decode_threads)?;
    if let Err(error) = write(&path, &key, &decoded, image_size) {
        // The images are decoded; a cache that cannot be written only costs time.
        tracing::warn!("could not write the decoded-image cache: {error}");
    }
    Ok((decoded, CacheOutcome::Built))
}

/// An exclusive `flock` on the lock file, released when dropped (or when the process
/// dies). The lock file itself stays: removing it could let a waiter lock a file
/// that is no longer the one a newcomer creates.
struct BuildLock {
    _file: File,
    waited: bool,
}

impl BuildLock {
    fn acquire(path: &Path) -> DataResult<Self> {
        let io_error = |source| DataError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io_error)?;
        let fd = file.as_raw_fd();
        // SAFETY: `fd` is an open descriptor owned by `file`, alive for this call.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(BuildLock {
                _file: file,
                waited: false,
            });
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io_error(error));
        }
        tracing::info!(
            "another process is building the decoded-image cache; waiting on {}",
            path.display()
        );
        loop {
            // SAFETY: as above.
            if unsafe { libc::flock(fd, libc::LOCK_EX) } == 0 {
                return Ok(BuildLock {
                    _file: file,
                    waited: true,
                });
            }
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(io_error(error));
            }
        }
    }
}

/// A contiguous CPU `uint8` tensor's bytes.
fn bytes_of(tensor: &Tensor) -> &[u8] {
    assert!(
        tensor.kind() == Kind::Uint8 && tensor.device() == Device::Cpu && tensor.is_contiguous()
    );
    let len = tensor.numel();
    if len == 0 {
        return &[];
    }
    // SAFETY: the tensor is a contiguous uint8 CPU tensor (checked above) whose storage
    // holds `numel` bytes from `data_ptr`; the borrow of `tensor` keeps it alive.
    unsafe { std::slice::from_raw_parts(tensor.data_ptr() as *const u8, len) }
}

/// A contiguous CPU `uint8` tensor's bytes, writable.
fn bytes_of_mut(tensor: &mut Tensor) -> &mut [u8] {
    assert!(
        tensor.kind() == Kind::Uint8 && tensor.device() == Device::Cpu && tensor.is_contiguous()
    );
    let len = tensor.numel();
    if len == 0 {
        return &mut [];
    }
    // SAFETY: as in `bytes_of`; the exclusive borrow of this handle is the only access
    // because the tensor was allocated here and no other handle shares its storage.
    unsafe { std::slice::from_raw_parts_mut(tensor.data_ptr() as *mut u8, len) }
}

fn empty_images(count: usize, image_size: i64) -> DataResult<Tensor> {
    Ok(Tensor::f_zeros(
        [count as i64, 3, image_size, image_size],
        (Kind::Uint8, Device::Cpu),
    )?)
}

fn read(path: &Path, key: &str, paths: &[PathBuf], image_size: i64) -> DataResult<Decoded> {
    let io_error = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let corrupt = |reason: String| DataError::CorruptCache {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = File::open(path).map_err(io_error)?;
    let file_len = file.metadata().map_err(io_error)?.len();
    let mut magic = [0u8; 8];
    let mut header_len = [0u8; 8];
    file.read_exact(&mut magic).map_err(io_error)?;
    if &magic != MAGIC {
        return Err(corrupt("not a decoded-image cache".into()));
    }
    file.read_exact(&mut header_len).map_err(io_error)?;
    let header_len = u64::from_le_bytes(header_len);
    if header_len > file_len {
        return Err(corrupt(format!("header length {header_len} past the end")));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(io_error)?;
    let header: Header =
        serde_json::from_slice(&header).map_err(|e| corrupt(format!("header: {e}")))?;
    if header.key != key || header.count != paths.len() || header.image_size != image_size {
        return Err(corrupt(format!(
            "header says key {}, {} images of {} px; expected {key}, {} of {image_size} px",
            header.key,
            header.count,
            header.image_size,
            paths.len()
        )));
    }
    let pixels = paths.len() as u64 * 3 * (image_size as u64).pow(2);
    if file_len != 16 + header_len + pixels {
        return Err(corrupt(format!(
            "{file_len} bytes, expected {}",
            16 + header_len + pixels
        )));
    }
    let mut images = empty_images(paths.len(), image_size)?;
    file.read_exact(bytes_of_mut(&mut images))
        .map_err(io_error)?;
    let mut failures = vec![None; paths.len()];
    for (index, reason) in header.failures {
        if let Some(slot) = failures.get_mut(index) {
            *slot = Some(reason);
        }
    }
    Ok(Decoded {
        images,
        paths: paths.to_vec(),
        failures,
    })
}

fn write(path: &Path, key: &str, decoded: &Decoded, image_size: i64) -> DataResult<()> {
    let header = Header {
        key: key.to_string(),
        count: decoded.paths.len(),
        image_size,
        failures: decoded
            .failures
            .iter()
            .enumerate()
            .filter_map(|(index, failure)| failure.clone().map(|reason| (index, reason)))
            .collect(),
    };
    // Serialising plain strings and numbers cannot fail.
    let header = serde_json::to_vec(&header).expect("cache header serialises");
    let temporary = path.with_extension(format!(
        "tmp.{}.{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let io_error = |source| DataError::Io {
        path: temporary.clone(),
        source,
    };
    let result = (|| {
        let mut out = BufWriter::new(File::create(&temporary).map_err(io_error)?);
        out.write_all(MAGIC).map_err(io_error)?;
        out.write_all(&(header.len() as u64).to_le_bytes())
            .map_err(io_error)?;
        out.write_all(&header).map_err(io_error)?;
        out.write_all(bytes_of(&decoded.images)).map_err(io_error)?;
        let file = out.into_inner().map_err(|e| io_error(e.into_error()))?;
        file.sync_all().map_err(io_error)?;
        fs::rename(&temporary, path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

/// Decodes every file with `threads` threads (0: up to 8, by the CPUs available).
fn decode_all(paths: &[PathBuf], image_size: i64, threads: usize) -> DataResult<Decoded> {
    let mut images = empty_images(paths.len(), image_size)?;
    let side = image_size as u32;
    let image_bytes = 3 * (image_size as usize).pow(2);
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get().min(8)),
        n => n,
    };
    let started = Instant::now();
    let done = AtomicUsize::new(0);
    let chunks = Mutex::new(
        bytes_of_mut(&mut images)
            .chunks_mut(CHUNK_IMAGES * image_bytes.max(1))
            .enumerate(),
    );
    let failures: Vec<(usize, String)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                scope.spawn(|| {
                    let mut failures = Vec::new();
                    loop {
                        // A poisoned lock means another decoder panicked; that panic
                        // reaches the caller through its join below.
                        let next = chunks.lock().map(|mut chunks| chunks.next());
                        let Ok(Some((chunk, buffer))) = next else {
                            break;
                        };
                        let first = chunk * CHUNK_IMAGES;
                        for (offset, out) in buffer.chunks_mut(image_bytes).enumerate() {
                            let path = &paths[first + offset];
                            if let Err(reason) = decode_into(path, side, out) {
                                tracing::warn!("skipping image {}: {reason}", path.display());
                                failures.push((first + offset, reason));
                            }
                        }
                        let finished = buffer.len() / image_bytes.max(1);
                        let before = done.fetch_add(finished, Ordering::Relaxed);
                        log_progress(before, before + finished, paths.len(), started);
                    }
                    failures
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| match worker.join() {
                Ok(failures) => failures,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    let mut by_index = vec![None; paths.len()];
    for (index, reason) in failures {
        by_index[index] = Some(reason);
    }
    if paths.len() >= PROGRESS_MIN_IMAGES {
        tracing::info!(
            "decoded {} images at {image_size} px in {:.1} s",
            paths.len(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(Decoded {
        images,
        paths: paths.to_vec(),
        failures: by_index,
    })
}

/// Logs each tenth of a big build once, from whichever thread crosses it.
fn log_progress(before: usize, after: usize, total: usize, started: Instant) {
    if total < PROGRESS_MIN_IMAGES {
        return;
    }
    let tenth = |count: usize| count * 10 / total;
    if tenth(after) > tenth(before) && after < total {
        tracing::info!(
            "decoding images: {after}/{total} ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
    }
}

/// Decodes one file into `out` (`3 × side × side` bytes, channel-major).
fn decode_into(path: &Path, side: u32, out: &mut [u8]) -> Result<(), String> {
    let image = image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?
        .to_rgb8();
    let (width, height) = image.dimensions();
    if width == 0 || height == 0 {
        return Err(format!("empty image ({width}×{height})"));
    }
    let square = width.min(height);
    let cropped = imageops::crop_imm(
        &image,
        (width - square) / 2,
        (height - square) / 2,
        square,
        square,
    )
    .to_image();
    let resized = if square == side {
        cropped
    } else {
        imageops::resize(&cropped, side, side, FilterType::Triangle)
    };
    let plane = (side * side) as usize;
    for (index, pixel) in resized.pixels().enumerate() {
        for channel in 0..3 {
            out[channel * plane + index] = pixel[channel];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_crops_the_centre_square_and_goes_channel_major() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wide.png");
        // 6×2: the centre 2×2 (columns 2 and 3) is red on the left, blue on the right.
        let image = image::RgbImage::from_fn(6, 2, |x, _| match x {
            2 => image::Rgb([255, 0, 0]),
            3 => image::Rgb([0, 0, 255]),
            _ => image::Rgb([0, 255, 0]),
        });
        image.save(&path).unwrap();
        let mut out = vec![0u8; 3 * 4];
        decode_into(&path, 2, &mut out).unwrap();
        // Planes R, G, B; pixels (0,0), (1,0), (0,1), (1,1).
        assert_eq!(out, vec![255, 0, 255, 0, 0, 0, 0, 0, 0, 255, 0, 255]);
    }

    #[test]
    fn decode_reports_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.png");
        fs::write(&path, b"not a png at all").unwrap();
        let mut out = vec![0u8; 3 * 4];
        assert!(decode_into(&path, 2, &mut out).is_err());
    }

    #[test]
    fn key_changes_with_resolution_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bmp");
        fs::write(&path, b"1234").unwrap();
        let paths = vec![path.clone()];
        let key = cache_key(&paths, 32);
        assert_eq!(key, cache_key(&paths, 32));
        assert_ne!(key, cache_key(&paths, 64));
        fs::write(&path, b"12345").unwrap();
        assert_ne!(key, cache_key(&paths, 32));
    }
}
