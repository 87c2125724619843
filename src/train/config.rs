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
use crate::sweep::params::{DownstreamParams, ParamError, PretextParams};
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
    /// Stop after this epoch, checkpoint written, for a rung of successive halving
    /// (not a parameter: the store sets it per attempt). The schedule still spans
    /// `epochs`, so a run paused and resumed trains exactly as one never paused.
    pub halt_at: Option<i64>,
}

impl PretextConfig {
    /// The augmentation of both views.
    pub fn augment(&self) -> AugmentConfig {
        let mut aug = AugmentConfig::simclr(self.image_size, self.augment_strength);
        aug.crop_scale.0 = self.crop_min_scale;
        aug
    }
}

/// Settings of a linear-protocol or fine-tune job, resolved from its typed
/// parameters ([`DownstreamParams`]): the winner's architecture, the stage's own
/// training settings or the protocol's defaults.
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

/// A typed-parameter refusal, as a final training error that names the job.
fn refused(job: impl fmt::Display, error: ParamError) -> TrainError {
    TrainError::Fatal(format!("job {job}: {error}"))
}

impl PretextConfig {
    /// The configuration of a stored pretext job (its parameters were checked at
    /// submit; they are checked again here because a store can be written by hand).
    pub fn from_params(params: &Params, job: impl fmt::Display) -> TrainResult<PretextConfig> {
        let typed = PretextParams::from_params(params).map_err(|e| refused(&job, e))?;
        PretextConfig::from_typed(&typed)
    }

    pub fn from_typed(params: &PretextParams) -> TrainResult<PretextConfig> {
        let arch = Architecture::named(&params.backbone)?;
        Ok(PretextConfig::resolve(
            params,
            arch,
            params.resolved_image_size(),
        ))
    }

    /// Every setting of `settings` but the backbone, which is `arch` (tests and the
    /// benchmark pass their own network).
    pub fn with_arch(
        settings: &Params,
        arch: Architecture,
        image_size: i64,
    ) -> TrainResult<PretextConfig> {
        let typed = PretextParams::from_params(&with_placeholder_backbone(settings))
            .map_err(|e| refused(&arch.name, e))?;
        Ok(PretextConfig::resolve(&typed, arch, image_size))
    }

    fn resolve(p: &PretextParams, arch: Architecture, image_size: i64) -> PretextConfig {
        let base = p.resolved_lr_base();
        PretextConfig {
            arch,
            batch_size: p.batch_size,
            projection_dim: p.projection_dim,
            data_fraction: p.data_fraction,
            epochs: p.epochs,
            temperature: p.temperature,
            optimizer: p.optimizer,
            lr_scaling: if p.lr_sqrt {
                LrScaling::Sqrt { base }
            } else {
                LrScaling::Linear { base }
            },
            weight_decay: p.weight_decay,
            // A short run keeps a tenth of itself for warmup, like the 10 of 100 default.
            warmup_epochs: p.warmup_epochs.min(p.epochs as f64 / 10.0),
            image_size,
            checkpoint_every: p.checkpoint_every,
            // Negative seeds are fine: only the bits matter.
            seed: p.seed as u64,
            augment_strength: p.augment_strength,
            crop_min_scale: p.crop_min_scale,
            halt_at: None,
        }
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
        let typed = DownstreamParams::from_params(params).map_err(|e| refused(&job, e))?;
        let arch = Architecture::named(&typed.backbone)?;
        Ok(DownstreamConfig::resolve(
            &typed,
            arch,
            typed.resolved_image_size(),
            linear,
        ))
    }

    /// Every setting of `settings` but the backbone, which is `arch`.
    pub fn with_arch(
        settings: &Params,
        arch: Architecture,
        image_size: i64,
        linear: bool,
    ) -> TrainResult<DownstreamConfig> {
        let typed = DownstreamParams::from_params(&with_placeholder_backbone(settings))
            .map_err(|e| refused(&arch.name, e))?;
        Ok(DownstreamConfig::resolve(&typed, arch, image_size, linear))
    }

    fn resolve(
        p: &DownstreamParams,
        arch: Architecture,
        image_size: i64,
        linear: bool,
    ) -> DownstreamConfig {
        let defaults = DownstreamParams::defaults_for(linear);
        DownstreamConfig {
            arch,
            image_size,
            batch_size: p.batch_size,
            lr: p.lr.unwrap_or(defaults.lr),
            max_epochs: p.max_epochs.unwrap_or(defaults.max_epochs),
            patience: p.patience.unwrap_or(defaults.patience),
            seed: p.seed as u64,
        }
    }
}

/// `settings` with a known backbone and no image size, so that the typed
/// parameters parse when the network and its input size are given separately.
fn with_placeholder_backbone(settings: &Params) -> Params {
    let mut settings = settings.clone();
    settings.insert(
        "backbone".into(),
        Value::from(crate::sweep::params::SMALL_RESNET.name),
    );
    settings.remove("image_size");
    settings
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
        assert_eq!(cfg.lr_scaling, LrScaling::Sqrt { base: 0.075 });
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
            assert!(!err.is_infrastructure());
            assert!(msg.contains(name) && msg.contains("job-42"), "{msg}");
        }
    }

    #[test]
    fn linear_scaling_option() {
        let cfg = PretextConfig::from_params(
            &params(json!({"backbone": "resnet18", "lr_sqrt": false})),
            "j",
        )
        .expect("valid");
        // REFERENCE.md: 0.3 × 4096 / 256 = 4.8, and 0.3 at batch 256.
        assert!((cfg.lr_scaling.peak(4096) - 4.8).abs() < 1e-12);
        assert!((cfg.lr_scaling.peak(256) - 0.3).abs() < 1e-12);
        let default = PretextConfig::from_params(&params(json!({"backbone": "resnet18"})), "j")
            .expect("valid");
        assert!((default.lr_scaling.peak(256) - 1.2).abs() < 1e-12);
    }
}
