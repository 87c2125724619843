//! Typed job parameters: one struct per stage kind, with its defaults and ranges.
//!
//! `submit` builds the struct for every expanded cell and refuses the file, with the
//! span of the offending key, before anything is stored; the worker deserialises the
//! same struct from the job's stored parameters and never reads a key by name. The
//! backbone names and their input sizes live here too, so this module (and
//! `submit`) needs no libtorch.
//!
//! Over 700 lines only with its unit tests; the code itself is one model.

use std::collections::BTreeSet;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Params, StageKind};

/// A backbone's name and the input sizes it takes; its feature width lives with the
/// network in `train::backbone`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackboneSize {
    pub name: &'static str,
    /// The resolution the architecture was designed for (the default `image_size`).
    pub default_input: i64,
    /// The smallest square input the forward pass accepts (see `train::backbone`).
    pub min_input: i64,
}

pub const RESNET18: BackboneSize = BackboneSize {
    name: "resnet18",
    default_input: 224,
    min_input: 1,
};
pub const RESNET50: BackboneSize = BackboneSize {
    name: "resnet50",
    default_input: 224,
    min_input: 1,
};
pub const RESNET101: BackboneSize = BackboneSize {
    name: "resnet101",
    default_input: 224,
    min_input: 1,
};
// Inception's stem and reduction blocks shrink a 75 px input to 1×1; below, a
// valid convolution has nothing left to slide over.
pub const INCEPTION_V3: BackboneSize = BackboneSize {
    name: "inception_v3",
    default_input: 299,
    min_input: 75,
};
pub const INCEPTION_RESNET_V2: BackboneSize = BackboneSize {
    name: "inception_resnet_v2",
    default_input: 299,
    min_input: 75,
};
pub const SMALL_RESNET: BackboneSize = BackboneSize {
    name: "small_resnet",
    default_input: 32,
    min_input: 1,
};

/// Every backbone sweeper can build, in the order `sweeper models` lists them.
pub const BACKBONE_SIZES: &[BackboneSize] = &[
    RESNET18,
    RESNET50,
    RESNET101,
    INCEPTION_V3,
    INCEPTION_RESNET_V2,
    SMALL_RESNET,
];

/// The backbone called `name`, if sweeper knows it.
pub fn backbone_size(name: &str) -> Option<&'static BackboneSize> {
    BACKBONE_SIZES.iter().find(|b| b.name == name)
}

/// The optimizer of a pretext job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// LARS as google-research/simclr applies it (the paper's choice).
    Lars,
    /// SGD with momentum 0.9.
    Sgd,
    Adam,
}

impl OptimizerKind {
    pub const ALL: [OptimizerKind; 3] =
        [OptimizerKind::Lars, OptimizerKind::Sgd, OptimizerKind::Adam];

    pub fn as_str(self) -> &'static str {
        match self {
            OptimizerKind::Lars => "lars",
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
        }
    }

    /// The one parser of an optimizer name (case-insensitive).
    pub fn parse(name: &str) -> Option<OptimizerKind> {
        OptimizerKind::ALL
            .into_iter()
            .find(|kind| kind.as_str().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parameter that cannot be used, named by its key so `submit` can point at it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("parameter `{key}` {message}")]
pub struct ParamError {
    pub key: String,
    pub message: String,
}

impl ParamError {
    fn new(key: &str, message: impl Into<String>) -> ParamError {
        ParamError {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

pub type ParamResult<T> = Result<T, ParamError>;

/// Settings of a SimCLR pretext job. Defaults follow the paper and REFERENCE.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretextParams {
    /// One of [`BACKBONE_SIZES`].
    pub backbone: String,
    /// Square input size; the backbone's design resolution when absent.
    #[serde(default)]
    pub image_size: Option<i64>,
    #[serde(default = "defaults::batch_size")]
    pub batch_size: i64,
    #[serde(default = "defaults::projection_dim")]
    pub projection_dim: i64,
    /// Share of the dataset's training split used, in (0, 1].
    #[serde(default = "defaults::one")]
    pub data_fraction: f64,
    #[serde(default = "defaults::epochs")]
    pub epochs: i64,
    /// NT-Xent temperature τ.
    #[serde(default = "defaults::temperature")]
    pub temperature: f64,
    #[serde(default = "defaults::optimizer")]
    pub optimizer: OptimizerKind,
    /// Peak learning rate `lr_base × √batch` (the default: the paper's rule for small
    /// batches and short runs, 0.6 at batch 64) instead of `lr_base × batch / 256`
    /// (0.075 at batch 64, which with LARS's trust ratio of 0.001 barely moves a
    /// convolution in a run of a few hundred steps).
    #[serde(default = "defaults::yes")]
    pub lr_sqrt: bool,
    /// 0.3 (linear scaling) or 0.075 (square-root scaling) when absent.
    #[serde(default)]
    pub lr_base: Option<f64>,
    #[serde(default = "defaults::weight_decay")]
    pub weight_decay: f64,
    /// Clipped to a tenth of the run by the trainer, like the 10 of 100 default.
    #[serde(default = "defaults::warmup_epochs")]
    pub warmup_epochs: f64,
    #[serde(default = "defaults::checkpoint_every")]
    pub checkpoint_every: i64,
    /// Colour-jitter strength in [0, 2]; 0.5 at ≤ 32 px, else 1.0, when absent.
    #[serde(default)]
    pub augment_strength: Option<f64>,
    /// Smallest area of a random resized crop, as a fraction of the image.
    #[serde(default = "defaults::crop_min_scale")]
    pub crop_min_scale: f64,
    /// Set from `seeds`, never written in the file.
    #[serde(default)]
    pub seed: i64,
}

/// Settings of a linear-protocol or fine-tune job. The architecture (`backbone`,
/// `image_size`) comes from the pretext winner; the training settings are the
/// stage's own, with the protocol's defaults ([`DownstreamParams::defaults_for`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DownstreamParams {
    pub backbone: String,
    #[serde(default)]
    pub image_size: Option<i64>,
    #[serde(default = "defaults::batch_size")]
    pub batch_size: i64,
    /// 0.2 (linear) or 1e-4 (fine-tune) when absent.
    #[serde(default)]
    pub lr: Option<f64>,
    /// 100 (linear) or 30 (fine-tune) when absent.
    #[serde(default)]
    pub max_epochs: Option<i64>,
    /// Epochs without a better validation accuracy before stopping: 10 or 5.
    #[serde(default)]
    pub patience: Option<i64>,
    #[serde(default)]
    pub seed: i64,
    /// A random-init baseline: the protocol from an untrained backbone, queued at
    /// submit beside the stage's winners ([`crate::sweep::expand::baselines`]).
    /// Set by sweeper, never written in the file.
    #[serde(default)]
    pub baseline: bool,
}

/// The parameter that marks a random-init baseline job ([`DownstreamParams::baseline`]).
pub const BASELINE_KEY: &str = "baseline";

/// Whether a job's parameters mark it as a random-init baseline.
pub fn is_baseline(params: &Params) -> bool {
    params.get(BASELINE_KEY).and_then(Value::as_bool) == Some(true)
}

/// A `command` job's parameters: whatever the stage defines, substituted into the
/// program's arguments and environment. Only their names are checked (against the
/// command's placeholders).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandParams(pub Params);

impl CommandParams {
    /// Names whose meaning sweeper's report and selections rely on in any stage:
    /// the report counts images with `data_fraction` and groups by `batch_size`.
    pub const MEANINGFUL_KEYS: &'static [&'static str] = &["batch_size", "data_fraction"];

    /// Checks the one value of a [`Self::MEANINGFUL_KEYS`] parameter; any other
    /// parameter is the program's and passes.
    pub fn check_value(key: &str, value: &Value) -> ParamResult<()> {
        match key {
            "batch_size" => match value.as_i64() {
                Some(count) if count >= 1 => Ok(()),
                _ => Err(ParamError::new(
                    key,
                    format!("{value} is not a positive integer"),
                )),
            },
            "data_fraction" => match value.as_f64() {
                Some(fraction) => unit_interval(key, fraction),
                None => Err(ParamError::new(
                    key,
                    format!("{value} is not a number in (0, 1]"),
                )),
            },
            _ => Ok(()),
        }
    }
}

/// A job's parameters, typed by its stage kind.
#[derive(Debug, Clone, PartialEq)]
pub enum JobParams {
    Pretext(PretextParams),
    Linear(DownstreamParams),
    Finetune(DownstreamParams),
    Command(CommandParams),
}

pub(crate) mod defaults {
    use super::OptimizerKind;
    pub fn batch_size() -> i64 {
        256
    }
    pub fn projection_dim() -> i64 {
        128
    }
    pub fn one() -> f64 {
        1.0
    }
    pub fn yes() -> bool {
        true
    }
    pub fn epochs() -> i64 {
        100
    }
    pub fn temperature() -> f64 {
        0.5
    }
    pub fn optimizer() -> OptimizerKind {
        OptimizerKind::Lars
    }
    pub fn weight_decay() -> f64 {
        1e-6
    }
    pub fn warmup_epochs() -> f64 {
        10.0
    }
    pub fn checkpoint_every() -> i64 {
        10
    }
    pub fn crop_min_scale() -> f64 {
        0.08
    }
}

impl PretextParams {
    /// Every key a pretext job reads.
    pub const KEYS: &'static [&'static str] = &[
        "backbone",
        "image_size",
        "batch_size",
        "projection_dim",
        "data_fraction",
        "epochs",
        "temperature",
        "optimizer",
        "lr_sqrt",
        "lr_base",
        "weight_decay",
        "warmup_epochs",
        "checkpoint_every",
        "augment_strength",
        "crop_min_scale",
        "seed",
    ];

    /// Parses and checks a pretext job's parameters.
    pub fn from_params(params: &Params) -> ParamResult<PretextParams> {
        known_keys(params, Self::KEYS, &[])?;
        let typed: PretextParams = typed(params)?;
        typed.validate()?;
        Ok(typed)
    }

    /// The backbone's own size rules and the ranges of every setting.
    fn validate(&self) -> ParamResult<()> {
        image_size_for(&self.backbone, self.image_size)?;
        at_least("batch_size", self.batch_size, 2, BATCH_NORM_NEEDS_TWO)?;
        at_least("projection_dim", self.projection_dim, 1, "")?;
        at_least("epochs", self.epochs, 1, "")?;
        at_least("checkpoint_every", self.checkpoint_every, 1, "")?;
        unit_interval("data_fraction", self.data_fraction)?;
        unit_interval("crop_min_scale", self.crop_min_scale)?;
        positive("temperature", self.temperature)?;
        if let Some(base) = self.lr_base {
            positive("lr_base", base)?;
        }
        not_negative("weight_decay", self.weight_decay)?;
        not_negative("warmup_epochs", self.warmup_epochs)?;
        if let Some(strength) = self.augment_strength {
            if !(0.0..=2.0).contains(&strength) {
                return Err(ParamError::new(
                    "augment_strength",
                    format!("must be in [0, 2], got {strength}"),
                ));
            }
        }
        Ok(())
    }

    /// The input size the network is fed: the given one or the backbone's default.
    pub fn resolved_image_size(&self) -> i64 {
        self.image_size
            .or_else(|| backbone_size(&self.backbone).map(|b| b.default_input))
            .unwrap_or(SMALL_RESNET.default_input)
    }

    /// The peak-rate base: the given one or the default of its scaling rule.
    pub fn resolved_lr_base(&self) -> f64 {
        self.lr_base
            .unwrap_or(if self.lr_sqrt { 0.075 } else { 0.3 })
    }
}

const BATCH_NORM_NEEDS_TWO: &str = " (batch norm needs two samples)";

/// The protocol defaults of a downstream job: learning rate, epochs and patience.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DownstreamDefaults {
    pub lr: f64,
    pub max_epochs: i64,
    pub patience: i64,
}

impl DownstreamParams {
    /// The settings a downstream stage sets itself; the winner's values of these are
    /// never inherited (a pretext batch of 64 does not make a linear batch of 64).
    pub const OWN_KEYS: &'static [&'static str] = &["batch_size", "lr", "max_epochs", "patience"];

    /// The winner's parameters that describe the network a downstream job loads.
    pub const ARCHITECTURE_KEYS: &'static [&'static str] = &["backbone", "image_size"];

    pub fn defaults_for(linear: bool) -> DownstreamDefaults {
        if linear {
            DownstreamDefaults {
                lr: 0.2,
                max_epochs: 100,
                patience: 10,
            }
        } else {
            DownstreamDefaults {
                lr: 1e-4,
                max_epochs: 30,
                patience: 5,
            }
        }
    }

    /// Parses a downstream job's parameters. The job also carries its winner's other
    /// parameters (they name the model in reports); those were checked when the
    /// winner was submitted and are not read here.
    pub fn from_params(params: &Params) -> ParamResult<DownstreamParams> {
        let own: Params = params
            .iter()
            .filter(|(key, _)| {
                Self::OWN_KEYS.contains(&key.as_str())
                    || Self::ARCHITECTURE_KEYS.contains(&key.as_str())
                    || key.as_str() == "seed"
                    || key.as_str() == BASELINE_KEY
            })
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        let typed: DownstreamParams = typed(&own)?;
        typed.validate()?;
        Ok(typed)
    }

    /// Checks the settings a downstream stage writes itself: only [`Self::OWN_KEYS`].
    pub fn check_stage_params(params: &Params) -> ParamResult<()> {
        known_keys(params, Self::OWN_KEYS, Self::ARCHITECTURE_KEYS)?;
        Ok(())
    }

    fn validate(&self) -> ParamResult<()> {
        image_size_for(&self.backbone, self.image_size)?;
        at_least("batch_size", self.batch_size, 2, BATCH_NORM_NEEDS_TWO)?;
        if let Some(lr) = self.lr {
            positive("lr", lr)?;
        }
        if let Some(epochs) = self.max_epochs {
            at_least("max_epochs", epochs, 1, "")?;
        }
        if let Some(patience) = self.patience {
            at_least("patience", patience, 1, "")?;
        }
        Ok(())
    }

    pub fn resolved_image_size(&self) -> i64 {
        self.image_size
            .or_else(|| backbone_size(&self.backbone).map(|b| b.default_input))
            .unwrap_or(SMALL_RESNET.default_input)
    }
}

impl JobParams {
    /// Parses a job's parameters by its stage kind; the one entry point of both
    /// `submit` (every expanded cell) and the worker (every claimed job).
    pub fn parse(kind: StageKind, params: &Params) -> ParamResult<JobParams> {
        Ok(match kind {
            StageKind::Pretext => JobParams::Pretext(PretextParams::from_params(params)?),
            StageKind::Linear => JobParams::Linear(DownstreamParams::from_params(params)?),
            StageKind::Finetune => JobParams::Finetune(DownstreamParams::from_params(params)?),
            StageKind::Command => JobParams::Command(CommandParams(params.clone())),
        })
    }

    /// Every key a stage of `kind` may set in `[stages.grid]` or `[stages.params]`;
    /// `None` for command stages, whose parameters are the program's.
    pub fn stage_keys(kind: StageKind) -> Option<&'static [&'static str]> {
        match kind {
            StageKind::Pretext => Some(PretextParams::KEYS),
            StageKind::Linear | StageKind::Finetune => Some(DownstreamParams::OWN_KEYS),
            StageKind::Command => None,
        }
    }
}

/// Refuses a key outside `known` (with the closest known key), and a key of
/// `inherited` the stage may not set itself.
fn known_keys(params: &Params, known: &[&str], inherited: &[&str]) -> ParamResult<()> {
    for key in params.keys() {
        if known.contains(&key.as_str()) {
            continue;
        }
        if inherited.contains(&key.as_str()) {
            return Err(ParamError::new(
                key,
                "comes from the winner this stage runs on and cannot be set here",
            ));
        }
        return Err(ParamError::new(key, unknown_key_message(key, known)));
    }
    Ok(())
}

/// "is not a parameter of this stage; did you mean `epochs`?" and the known keys.
pub fn unknown_key_message(key: &str, known: &[&str]) -> String {
    let closest = known
        .iter()
        .filter(|candidate| **candidate != "seed")
        .map(|candidate| (strsim::damerau_levenshtein(key, candidate), *candidate))
        .min();
    let hint = match closest {
        // Within a third of the word: a typo, not another name.
        Some((distance, candidate)) if distance <= key.len().max(3) / 3 + 1 => {
            format!("; did you mean `{candidate}`?")
        }
        _ => String::new(),
    };
    let listed: Vec<&str> = known.iter().copied().filter(|k| *k != "seed").collect();
    format!(
        "is not a parameter of this stage{hint} (known: {})",
        listed.join(", ")
    )
}

/// Deserialises `params` into `T`; a wrong type names its key.
fn typed<T: DeserializeOwned>(params: &Params) -> ParamResult<T> {
    // `null` means "not set" (a JSON export of an absent optional).
    let present: Params = params
        .iter()
        .filter(|(_, value)| !value.is_null())
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    serde_path_to_error::deserialize(Value::Object(present)).map_err(|error| {
        let key = error
            .path()
            .iter()
            .next()
            .map(|segment| segment.to_string())
            .unwrap_or_default();
        let message = error.into_inner().to_string();
        if let Some(missing) = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
        {
            return ParamError::new(missing, "is missing");
        }
        // serde_json says "invalid type: floating point `1.5`, expected i64".
        let message = message
            .replace("expected i64", "expected an integer")
            .replace("expected f64", "expected a number")
            .replace("expected a boolean", "expected true or false");
        ParamError::new(&key, message)
    })
}

fn image_size_for(backbone: &str, image_size: Option<i64>) -> ParamResult<()> {
    let Some(size) = backbone_size(backbone) else {
        let known: Vec<&str> = BACKBONE_SIZES.iter().map(|b| b.name).collect();
        return Err(ParamError::new(
            "backbone",
            format!(
                "{backbone:?} is not a backbone sweeper knows (known: {})",
                known.join(", ")
            ),
        ));
    };
    if let Some(pixels) = image_size {
        if pixels < size.min_input {
            return Err(ParamError::new(
                "image_size",
                format!(
                    "{pixels} px is below the {} px that {} needs",
                    size.min_input, size.name
                ),
            ));
        }
    }
    Ok(())
}

fn at_least(key: &str, value: i64, minimum: i64, why: &str) -> ParamResult<()> {
    if value < minimum {
        return Err(ParamError::new(
            key,
            format!("must be at least {minimum}{why}, got {value}"),
        ));
    }
    Ok(())
}

fn positive(key: &str, value: f64) -> ParamResult<()> {
    if !(value > 0.0 && value.is_finite()) {
        return Err(ParamError::new(
            key,
            format!("must be positive, got {value}"),
        ));
    }
    Ok(())
}

fn not_negative(key: &str, value: f64) -> ParamResult<()> {
    if !(value >= 0.0 && value.is_finite()) {
        return Err(ParamError::new(
            key,
            format!("must not be negative, got {value}"),
        ));
    }
    Ok(())
}

fn unit_interval(key: &str, value: f64) -> ParamResult<()> {
    if !(value > 0.0 && value <= 1.0) {
        return Err(ParamError::new(key, format!("{value} is outside (0, 1]")));
    }
    Ok(())
}

/// The keys every job of a stage of `kind` carries after inheriting `upstream`'s.
pub fn inherited_keys(upstream: &BTreeSet<String>, kind: StageKind) -> BTreeSet<String> {
    let mut names = upstream.clone();
    if matches!(kind, StageKind::Linear | StageKind::Finetune) {
        for key in DownstreamParams::OWN_KEYS {
            names.remove(*key);
        }
    }
    names
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
        let p = PretextParams::from_params(&params(json!({"backbone": "resnet18", "epochs": 3})))
            .expect("valid");
        assert_eq!(p.resolved_image_size(), 224);
        assert_eq!((p.batch_size, p.projection_dim, p.epochs), (256, 128, 3));
        assert_eq!(p.optimizer, OptimizerKind::Lars);
        assert!(p.lr_sqrt);
        assert_eq!(p.resolved_lr_base(), 0.075);
        let linear =
            PretextParams::from_params(&params(json!({"backbone": "resnet18", "lr_sqrt": false})))
                .expect("valid");
        assert_eq!(linear.resolved_lr_base(), 0.3);
    }

    #[test]
    fn every_refusal_names_its_key() {
        let cases = [
            (
                json!({"backbone": "resnet18", "epoch": 500}),
                "epoch",
                "did you mean `epochs`",
            ),
            (
                json!({"backbone": "resnet18", "batch_sise": 64}),
                "batch_sise",
                "did you mean `batch_size`",
            ),
            (
                json!({"backbone": "resnet9000"}),
                "backbone",
                "not a backbone",
            ),
            (
                json!({"backbone": "resnet18", "optimizer": "adamw"}),
                "optimizer",
                "unknown variant",
            ),
            (
                json!({"backbone": "resnet18", "temperature": 0.0}),
                "temperature",
                "positive",
            ),
            (
                json!({"backbone": "resnet18", "batch_size": 1}),
                "batch_size",
                "at least 2",
            ),
            (
                json!({"backbone": "resnet18", "epochs": 1.5}),
                "epochs",
                "integer",
            ),
            (
                json!({"backbone": "resnet18", "lr_base": -0.5}),
                "lr_base",
                "positive",
            ),
            (
                json!({"backbone": "inception_v3", "image_size": 32}),
                "image_size",
                "75 px",
            ),
            (
                json!({"backbone": "resnet18", "lr_sqrt": "yes"}),
                "lr_sqrt",
                "true or false",
            ),
            (json!({"epochs": 3}), "backbone", "missing"),
        ];
        for (p, key, words) in cases {
            let error = PretextParams::from_params(&params(p.clone())).expect_err("refused");
            assert_eq!(error.key, key, "{p}: {error}");
            assert!(error.message.contains(words), "{p}: {error}");
        }
    }

    #[test]
    fn downstream_defaults_and_inherited_keys() {
        let p = DownstreamParams::from_params(&params(json!({
            "backbone": "resnet50", "projection_dim": 64, "temperature": 0.5, "lr": 0.1, "seed": 3
        })))
        .expect("valid");
        assert_eq!((p.batch_size, p.lr, p.seed), (256, Some(0.1), 3));
        assert_eq!(DownstreamParams::defaults_for(true).lr, 0.2);
        assert_eq!(DownstreamParams::defaults_for(false).lr, 1e-4);
        let error = DownstreamParams::check_stage_params(&params(json!({"backbone": "resnet50"})))
            .expect_err("the winner's");
        assert_eq!(error.key, "backbone");
        let error = DownstreamParams::check_stage_params(&params(json!({"patiense": 3})))
            .expect_err("a typo");
        assert!(error.message.contains("did you mean `patience`"), "{error}");
        let error =
            DownstreamParams::from_params(&params(json!({"backbone": "resnet50", "lr": -1})))
                .expect_err("negative");
        assert_eq!(error.key, "lr");
    }

    #[test]
    fn typed_params_round_trip_through_json() {
        let p = PretextParams::from_params(&params(json!({
            "backbone": "small_resnet", "image_size": 32, "optimizer": "adam", "augment_strength": 0.5
        })))
        .expect("valid");
        let back: PretextParams =
            serde_json::from_value(serde_json::to_value(&p).expect("serialises")).expect("parses");
        assert_eq!(back, p);
    }

    #[test]
    fn optimizer_names_parse_once() {
        assert_eq!(OptimizerKind::parse("LARS"), Some(OptimizerKind::Lars));
        assert_eq!(OptimizerKind::parse("adamw"), None);
    }
}
