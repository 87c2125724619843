//! Job parameters, checked: every training stage reads its settings from the job's
//! JSON parameter map through these types, which fill in defaults and refuse bad
//! values with an error that names the parameter and the job.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;
use tch::nn;

use super::augment::AugmentConfig;
use super::backbone::{self, Backbone};
use super::optim::OptimizerKind;
use super::schedule::LrScaling;
use super::{TrainError, TrainResult};
use crate::sweep::Params;

/// Builds a backbone's variables under a path.
pub type BuildBackbone = Arc<dyn Fn(&nn::Path) -> TrainResult<Backbone> + Send + Sync>;

/// How to build a backbone: a named one from [`backbone`], or any network with a
/// known feature width (tests use small ones).
#[derive(Clone)]
pub struct Architecture {
    pub name: String,
    pub feature_dim: i64,
    pub build: BuildBackbone,
}

impl fmt::Debug for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Architecture({}, {} features)",
            self.name, self.feature_dim
        )
    }
}

impl Architecture {
    /// A backbone sweeper knows by name.
    pub fn named(name: &str) -> TrainResult<Architecture> {
        let info = backbone::info(name)?;
        let owned = info.name;
        Ok(Architecture {
            name: owned.to_string(),
            feature_dim: info.feature_dim,
            build: Arc::new(move |p: &nn::Path| backbone::build(owned, p)),
        })
    }
}

/// Settings of a pretext job.
#[derive(Debug, Clone)]
pub struct PretextConfig {
    pub arch: Architecture,
    pub batch_size: i64,
    pub projection_dim: i64,
    pub data_fraction: f64,
    pub epochs: i64,
    pub temperature: f64,
    pub optimizer: OptimizerKind,
    pub lr_scaling: LrScaling,
    pub weight_decay: f64,
    /// Already clipped to a tenth of the run.
    pub warmup_epochs: f64,
    pub image_size: i64,
    pub checkpoint_every: i64,
    pub seed: u64,
    /// Colour-jitter strength; `None` picks REFERENCE.md's (0.5 at ≤ 32 px, else 1.0).
    pub augment_strength: Option<f64>,
    /// Smallest area of a random resized crop, as a fraction of the image (0.08).
    pub crop_min_scale: f64,
}

impl PretextConfig {
    /// The augmentation of both views.
    pub fn augment(&self) -> AugmentConfig {
        let mut aug = AugmentConfig::simclr(self.image_size, self.augment_strength);
        aug.crop_scale.0 = self.crop_min_scale;
        aug
    }
}

/// The parameters a downstream (linear or fine-tune) job reads.
///
/// A downstream job's parameters are its pretext winner's, overlaid by the stage's
/// own (see [`crate::sweep::expand::downstream`]). From the winner it takes the
/// architecture, [`ARCHITECTURE_KEYS`] (and the `seed`, unless the stage sets
/// seeds); its training settings, [`DOWNSTREAM_KEYS`], are its own: where the stage
/// leaves one out, the protocol's default applies, never the value the pretext job
/// trained with (a pretext batch of 64 does not make a linear-protocol batch of 64).
pub const DOWNSTREAM_KEYS: &[&str] = &["batch_size", "lr", "max_epochs", "patience"];

/// The winner's parameters that describe the network a downstream job loads.
pub const ARCHITECTURE_KEYS: &[&str] = &["backbone", "image_size"];

/// Settings of a linear-protocol or fine-tune job: the architecture keys, the
/// downstream keys and `seed`, nothing else (see [`DOWNSTREAM_KEYS`]).
#[derive(Debug, Clone)]
pub struct DownstreamConfig {
    pub arch: Architecture,
    pub image_size: i64,
    pub batch_size: i64,
    pub lr: f64,
    pub max_epochs: i64,
    pub patience: i64,
    pub seed: u64,
}

/// Reads typed values from a job's parameters; every error names the job.
pub struct ParamReader<'a> {
    params: &'a Params,
    job: String,
}

impl<'a> ParamReader<'a> {
    pub fn new(params: &'a Params, job: impl fmt::Display) -> Self {
        ParamReader {
            params,
            job: job.to_string(),
        }
    }

    pub fn bad(&self, name: &str, why: impl fmt::Display) -> TrainError {
        TrainError::Fatal(format!("job {}: parameter `{name}` {why}", self.job))
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.params.get(name).filter(|v| !v.is_null())
    }

    pub fn f64_or(&self, name: &str, default: f64) -> TrainResult<f64> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| self.bad(name, format!("must be a number, got {v}"))),
        }
    }

    pub fn opt_f64(&self, name: &str) -> TrainResult<Option<f64>> {
        self.get(name).map(|_| self.f64_or(name, 0.0)).transpose()
    }

    pub fn i64_or(&self, name: &str, default: i64) -> TrainResult<i64> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| self.bad(name, format!("must be an integer, got {v}"))),
        }
    }

    pub fn opt_i64(&self, name: &str) -> TrainResult<Option<i64>> {
        self.get(name).map(|_| self.i64_or(name, 0)).transpose()
    }

    pub fn str_or(&self, name: &str, default: &'a str) -> TrainResult<&'a str> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .as_str()
                .ok_or_else(|| self.bad(name, format!("must be a string, got {v}"))),
        }
    }

    pub fn bool_or(&self, name: &str, default: bool) -> TrainResult<bool> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.bad(name, format!("must be true or false, got {v}"))),
        }
    }

    pub fn positive_i64(&self, name: &str, default: i64) -> TrainResult<i64> {
        let v = self.i64_or(name, default)?;
        if v < 1 {
            return Err(self.bad(name, format!("must be at least 1, got {v}")));
        }
        Ok(v)
    }

    pub fn positive_f64(&self, name: &str, default: f64) -> TrainResult<f64> {
        let v = self.f64_or(name, default)?;
        if v <= 0.0 {
            return Err(self.bad(name, format!("must be positive, got {v}")));
        }
        Ok(v)
    }

    /// The backbone and the image size it is fed, checked against its minimum.
    pub fn arch_and_size(&self) -> TrainResult<(Architecture, i64)> {
        let name = self
            .get("backbone")
            .ok_or_else(|| self.bad("backbone", "is missing"))?;
        let name = name
            .as_str()
            .ok_or_else(|| self.bad("backbone", format!("must be a string, got {name}")))?;
        let arch = Architecture::named(name).map_err(|e| self.bad("backbone", e))?;
        let default = backbone::info(name)?.default_input;
        let image_size = self.positive_i64("image_size", default)?;
        backbone::check_input(name, image_size).map_err(|e| self.bad("image_size", e))?;
        Ok((arch, image_size))
    }

    pub fn seed(&self) -> TrainResult<u64> {
        // Negative seeds are fine: only the bits matter.
        Ok(self.i64_or("seed", 0)? as u64)
    }
}

impl PretextConfig {
    pub fn from_params(params: &Params, job: impl fmt::Display) -> TrainResult<PretextConfig> {
        let r = ParamReader::new(params, job);
        let (arch, image_size) = r.arch_and_size()?;
        PretextConfig::with_arch(&r, arch, image_size)
    }

    /// Everything but the backbone, read from `r` (tests pass their own network).
    pub fn with_arch(
        r: &ParamReader<'_>,
        arch: Architecture,
        image_size: i64,
    ) -> TrainResult<PretextConfig> {
        let batch_size = r.positive_i64("batch_size", 256)?;
        if batch_size < 2 {
            return Err(r.bad(
                "batch_size",
                "must be at least 2 (batch norm needs two samples)",
            ));
        }
        let data_fraction = r.f64_or("data_fraction", 1.0)?;
        if !(data_fraction > 0.0 && data_fraction <= 1.0) {
            return Err(r.bad(
                "data_fraction",
                format!("must be in (0, 1], got {data_fraction}"),
            ));
        }
        let epochs = r.positive_i64("epochs", 100)?;
        let optimizer_name = r.str_or("optimizer", "lars")?;
        let optimizer = OptimizerKind::parse(optimizer_name).ok_or_else(|| {
            r.bad(
                "optimizer",
                format!("must be lars, sgd or adam, got {optimizer_name:?}"),
            )
        })?;
        let lr_scaling = if r.bool_or("lr_sqrt", false)? {
            LrScaling::Sqrt {
                base: r.positive_f64("lr_base", 0.075)?,
            }
        } else {
            LrScaling::Linear {
                base: r.positive_f64("lr_base", 0.3)?,
            }
        };
        let weight_decay = r.f64_or("weight_decay", 1e-6)?;
        if weight_decay < 0.0 {
            return Err(r.bad(
                "weight_decay",
                format!("must not be negative, got {weight_decay}"),
            ));
        }
        let warmup_epochs = r.f64_or("warmup_epochs", 10.0)?;
        if warmup_epochs < 0.0 {
            return Err(r.bad(
                "warmup_epochs",
                format!("must not be negative, got {warmup_epochs}"),
            ));
        }
        let augment_strength = r.opt_f64("augment_strength")?;
        if let Some(s) = augment_strength.filter(|s| !(0.0..=2.0).contains(s)) {
            return Err(r.bad("augment_strength", format!("must be in [0, 2], got {s}")));
        }
        let crop_min_scale = r.f64_or("crop_min_scale", 0.08)?;
        if !(crop_min_scale > 0.0 && crop_min_scale <= 1.0) {
            return Err(r.bad(
                "crop_min_scale",
                format!("must be in (0, 1], got {crop_min_scale}"),
            ));
        }
        Ok(PretextConfig {
            arch,
            batch_size,
            projection_dim: r.positive_i64("projection_dim", 128)?,
            data_fraction,
            epochs,
            temperature: r.positive_f64("temperature", 0.5)?,
            optimizer,
            lr_scaling,
            weight_decay,
            // A short run keeps a tenth of itself for warmup, like the 10 of 100 default.
            warmup_epochs: warmup_epochs.min(epochs as f64 / 10.0),
            image_size,
            checkpoint_every: r.positive_i64("checkpoint_every", 10)?,
            seed: r.seed()?,
            augment_strength,
            crop_min_scale,
        })
    }
}

impl DownstreamConfig {
    /// Defaults: batch 256; lr 0.2 (linear) or 1e-4 (fine-tune); 100 or 30 epochs;
    /// patience 10 or 5.
    pub fn from_params(
        params: &Params,
        job: impl fmt::Display,
        linear: bool,
    ) -> TrainResult<DownstreamConfig> {
        let r = ParamReader::new(params, job);
        let (arch, image_size) = r.arch_and_size()?;
        DownstreamConfig::with_arch(&r, arch, image_size, linear)
    }

    pub fn with_arch(
        r: &ParamReader<'_>,
        arch: Architecture,
        image_size: i64,
        linear: bool,
    ) -> TrainResult<DownstreamConfig> {
        let (lr, max_epochs, patience) = if linear {
            (0.2, 100, 10)
        } else {
            (1e-4, 30, 5)
        };
        Ok(DownstreamConfig {
            arch,
            image_size,
            batch_size: r.positive_i64("batch_size", 256)?,
            lr: r.positive_f64("lr", lr)?,
            max_epochs: r.positive_i64("max_epochs", max_epochs)?,
            patience: r.positive_i64("patience", patience)?,
            seed: r.seed()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Params {
        v.as_object().expect("an object").clone()
    }

    #[test]
    fn defaults_fill_in() {
        let cfg =
            PretextConfig::from_params(&params(json!({"backbone": "resnet18", "epochs": 3})), "j1")
                .expect("valid params");
        assert_eq!(cfg.image_size, 224);
        assert_eq!(cfg.batch_size, 256);
        assert_eq!(cfg.temperature, 0.5);
        assert_eq!(cfg.optimizer, OptimizerKind::Lars);
        assert_eq!(cfg.lr_scaling, LrScaling::Linear { base: 0.3 });
        assert!(
            (cfg.warmup_epochs - 0.3).abs() < 1e-12,
            "clipped to a tenth of 3 epochs"
        );
        assert_eq!(cfg.checkpoint_every, 10);
        let linear =
            DownstreamConfig::from_params(&params(json!({"backbone": "resnet50"})), "j2", true)
                .expect("valid");
        assert_eq!((linear.batch_size, linear.lr), (256, 0.2));
        let fine =
            DownstreamConfig::from_params(&params(json!({"backbone": "resnet50"})), "j3", false)
                .expect("valid");
        assert_eq!(fine.lr, 1e-4);
    }

    #[test]
    fn bad_values_name_the_parameter_and_the_job() {
        let cases = [
            (
                json!({"backbone": "resnet18", "batch_size": 0}),
                "batch_size",
            ),
            (
                json!({"backbone": "resnet18", "temperature": "hot"}),
                "temperature",
            ),
            (
                json!({"backbone": "resnet18", "data_fraction": 1.5}),
                "data_fraction",
            ),
            (
                json!({"backbone": "resnet18", "optimizer": "rmsprop"}),
                "optimizer",
            ),
            (json!({"backbone": "vgg"}), "backbone"),
            (json!({}), "backbone"),
        ];
        for (p, name) in cases {
            let err = PretextConfig::from_params(&params(p), "job-42").expect_err("bad params");
            let msg = err.to_string();
            assert!(!err.is_retryable());
            assert!(msg.contains(name) && msg.contains("job-42"), "{msg}");
        }
    }

    #[test]
    fn sqrt_scaling_option() {
        let cfg = PretextConfig::from_params(
            &params(json!({"backbone": "resnet18", "lr_sqrt": true})),
            "j",
        )
        .expect("valid");
        assert!((cfg.lr_scaling.peak(256) - 1.2).abs() < 1e-12);
    }
}
