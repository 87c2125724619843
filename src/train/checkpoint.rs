//! Checkpoints in a job's directory.
//!
//! Epoch E writes three files, each to a temporary name then renamed into place:
//! `epoch-EEEE.ot` (every variable of the `VarStore`, via `VarStore::save`),
//! `epoch-EEEE.optim.ot` (the optimizer's buffers) and last `epoch-EEEE.json`, the
//! sidecar (epoch, optimizer steps, RNG scheme and seed, model configuration, and the
//! metrics of every epoch it covers). The sidecar is written last, so a checkpoint
//! counts only once it is complete: a crash in between leaves files that [`latest`]
//! ignores.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::Tensor;

use super::{TrainError, TrainResult};

/// How many complete checkpoints a job keeps (older ones are removed).
pub const KEEP: usize = 2;

/// The sidecar: everything but the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sidecar {
    /// Epochs completed when this was written.
    pub epoch: i64,
    pub backbone: String,
    pub feature_dim: i64,
    pub projection_dim: i64,
    pub image_size: i64,
    pub optimizer: String,
    pub optimizer_steps: i64,
    /// Every epoch's shuffling and augmentation draw from ChaCha8 seeded with
    /// `epoch_seed(seed, epoch)`, so the seed and the epoch are the whole RNG state.
    pub seed: u64,
    pub rng: String,
    /// Mean loss of the epoch just finished.
    pub loss: Option<f64>,
    /// The metrics of epochs 1 to `epoch`, each with the attempt that measured it.
    /// A checkpoint can reach the artifact store before its epochs' metrics reach
    /// the database (they travel separately, and a worker can die in between); an
    /// attempt that resumes from it records those the database lacks, so a job's
    /// curve has every epoch it resumed past. Empty in checkpoints written before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<EpochMetrics>,
}

/// One epoch's metrics as the attempt that ran it reported them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: i64,
    pub attempt: i32,
    /// Finite values only (JSON has no NaN).
    pub values: BTreeMap<String, f64>,
}

/// The paths of one checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub epoch: i64,
    pub weights: PathBuf,
    pub optimizer: PathBuf,
    pub sidecar: PathBuf,
}

impl Checkpoint {
    pub fn at(dir: &Path, epoch: i64) -> Checkpoint {
        let stem = format!("epoch-{epoch:04}");
        Checkpoint {
            epoch,
            weights: dir.join(format!("{stem}.ot")),
            optimizer: dir.join(format!("{stem}.optim.ot")),
            sidecar: dir.join(format!("{stem}.json")),
        }
    }

    pub fn read_sidecar(&self) -> TrainResult<Sidecar> {
        let text = fs::read_to_string(&self.sidecar).map_err(|e| io_error(&self.sidecar, e))?;
        serde_json::from_str(&text).map_err(|e| {
            TrainError::Fatal(format!(
                "checkpoint sidecar {} is not valid: {e}",
                self.sidecar.display()
            ))
        })
    }
}

fn io_error(path: &Path, e: std::io::Error) -> TrainError {
    TrainError::Io(format!("checkpoint file {}: {e}", path.display()))
}

fn tch_error(path: &Path, e: tch::TchError) -> TrainError {
    TrainError::Io(format!("checkpoint file {}: {e}", path.display()))
}

fn tmp_name(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes a complete checkpoint for `sidecar.epoch` and prunes older ones.
pub fn save(
    dir: &Path,
    vs: &VarStore,
    optimizer_state: &[(String, Tensor)],
    sidecar: &Sidecar,
) -> TrainResult<Checkpoint> {
    fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let ckpt = Checkpoint::at(dir, sidecar.epoch);
    let tmp = tmp_name(&ckpt.weights);
    vs.save(&tmp).map_err(|e| tch_error(&tmp, e))?;
    fs::rename(&tmp, &ckpt.weights).map_err(|e| io_error(&ckpt.weights, e))?;
    let tmp = tmp_name(&ckpt.optimizer);
    if optimizer_state.is_empty() {
        // save_multi refuses an empty list; an empty file still marks "no state".
        fs::write(&tmp, b"").map_err(|e| io_error(&tmp, e))?;
    } else {
        Tensor::save_multi(optimizer_state, &tmp).map_err(|e| tch_error(&tmp, e))?;
    }
    fs::rename(&tmp, &ckpt.optimizer).map_err(|e| io_error(&ckpt.optimizer, e))?;
    let tmp = tmp_name(&ckpt.sidecar);
    let text =
        serde_json::to_string_pretty(sidecar).map_err(|e| TrainError::Fatal(e.to_string()))?;
    fs::write(&tmp, text).map_err(|e| io_error(&tmp, e))?;
    fs::rename(&tmp, &ckpt.sidecar).map_err(|e| io_error(&ckpt.sidecar, e))?;
    prune(dir, KEEP);
    Ok(ckpt)
}

/// Every complete checkpoint in `dir`, oldest first.
pub fn list(dir: &Path) -> Vec<Checkpoint> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<Checkpoint> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let epoch = name
                .strip_prefix("epoch-")?
                .strip_suffix(".json")?
                .parse::<i64>()
                .ok()?;
            let ckpt = Checkpoint::at(dir, epoch);
            (ckpt.weights.exists() && ckpt.optimizer.exists()).then_some(ckpt)
        })
        .collect();
    found.sort_by_key(|c| c.epoch);
    found
}

/// The newest complete checkpoint in `dir`, if any.
pub fn latest(dir: &Path) -> Option<Checkpoint> {
    list(dir).pop()
}

/// Removes all but the newest `keep` checkpoints; a failure to remove is harmless.
fn prune(dir: &Path, keep: usize) {
    let all = list(dir);
    for old in all.iter().take(all.len().saturating_sub(keep)) {
        // Sidecar first, so a half-removed checkpoint is never taken for complete.
        for path in [&old.sidecar, &old.weights, &old.optimizer] {
            let _ = fs::remove_file(path);
        }
    }
}

/// Loads the optimizer buffers of a checkpoint (none for an empty file).
pub fn load_optimizer_state(
    ckpt: &Checkpoint,
    device: tch::Device,
) -> TrainResult<Vec<(String, Tensor)>> {
    let len = fs::metadata(&ckpt.optimizer)
        .map_err(|e| io_error(&ckpt.optimizer, e))?
        .len();
    if len == 0 {
        return Ok(Vec::new());
    }
    Tensor::load_multi_with_device(&ckpt.optimizer, device).map_err(|e| {
        TrainError::Fatal(format!(
            "checkpoint file {} is unreadable: {e}",
            ckpt.optimizer.display()
        ))
    })
}

/// The seed of epoch `epoch`'s generator: a SplitMix64 step of (seed, epoch), so
/// neighbouring epochs and seeds get unrelated streams.
pub fn epoch_seed(seed: u64, epoch: i64) -> u64 {
    let mut z = seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device, Kind};

    fn sidecar(epoch: i64) -> Sidecar {
        Sidecar {
            epoch,
            backbone: "tiny".into(),
            feature_dim: 4,
            projection_dim: 2,
            image_size: 8,
            optimizer: "lars".into(),
            optimizer_steps: epoch * 3,
            seed: 5,
            rng: "chacha8".into(),
            loss: Some(1.0),
            history: (1..=epoch)
                .map(|e| EpochMetrics {
                    epoch: e,
                    attempt: 1,
                    values: [("loss".to_string(), 1.0 / e as f64)].into(),
                })
                .collect(),
        }
    }

    #[test]
    fn save_list_prune_and_ignore_incomplete() {
        let dir = tempfile::tempdir().expect("temp dir");
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[2, 2], nn::Init::Const(1.5));
        let state = vec![("first.w".to_string(), w.zeros_like())];
        for epoch in 1..=3 {
            save(dir.path(), &vs, &state, &sidecar(epoch)).expect("save");
        }
        let kept: Vec<i64> = list(dir.path()).iter().map(|c| c.epoch).collect();
        assert_eq!(kept, vec![2, 3]);
        // A crash before the sidecar: epoch 4's weights exist, but it is not complete.
        vs.save(Checkpoint::at(dir.path(), 4).weights)
            .expect("weights");
        let newest = latest(dir.path()).expect("a checkpoint");
        assert_eq!(newest.epoch, 3);
        assert_eq!(newest.read_sidecar().expect("sidecar"), sidecar(3));
        let mut other = nn::VarStore::new(Device::Cpu);
        let w2 = other.root().var("w", &[2, 2], nn::Init::Const(0.0));
        other.load(&newest.weights).expect("load");
        assert!(w2.allclose(
            &Tensor::full([2, 2], 1.5, (Kind::Float, Device::Cpu)),
            0.0,
            0.0,
            false
        ));
        assert_eq!(
            load_optimizer_state(&newest, Device::Cpu)
                .expect("state")
                .len(),
            1
        );
        assert!(!dir.path().join("epoch-0003.ot.tmp").exists());
    }

    #[test]
    fn epoch_seeds_differ() {
        assert_ne!(epoch_seed(0, 0), epoch_seed(0, 1));
        assert_ne!(epoch_seed(0, 1), epoch_seed(1, 0));
        assert_eq!(epoch_seed(3, 4), epoch_seed(3, 4));
    }
}
