//! Backbones: networks that map an image batch `[N, 3, S, S]` (float, normalised) to
//! pooled features `[N, feature_dim]`. The projection head and classifiers live
//! elsewhere; a backbone never includes a classifier.

use tch::nn;

use super::{TrainError, TrainResult};

/// What `sweeper models` shows and what training checks before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackboneInfo {
    pub name: &'static str,
    /// Width of the pooled feature the backbone returns.
    pub feature_dim: i64,
    /// The resolution the architecture was designed for.
    pub default_input: i64,
    /// The smallest square input the forward pass accepts.
    pub min_input: i64,
}

/// Every backbone sweeper can build.
pub static BACKBONES: &[BackboneInfo] = &[
    BackboneInfo {
        name: "resnet18",
        feature_dim: 512,
        default_input: 224,
        min_input: 1,
    },
    BackboneInfo {
        name: "resnet50",
        feature_dim: 2048,
        default_input: 224,
        min_input: 1,
    },
];

/// Looks a backbone up by name; the error lists the known names.
pub fn info(name: &str) -> TrainResult<&'static BackboneInfo> {
    BACKBONES.iter().find(|b| b.name == name).ok_or_else(|| {
        let known: Vec<&str> = BACKBONES.iter().map(|b| b.name).collect();
        TrainError::Fatal(format!(
            "unknown backbone {name:?}; known: {}",
            known.join(", ")
        ))
    })
}

/// Refuses an input smaller than the backbone accepts, before any training starts.
pub fn check_input(name: &str, image_size: i64) -> TrainResult<()> {
    let info = info(name)?;
    if image_size < info.min_input {
        return Err(TrainError::Fatal(format!(
            "backbone {name} needs inputs of at least {} px, got {image_size} px",
            info.min_input
        )));
    }
    Ok(())
}

/// A built backbone: `forward_t(images, train)` gives pooled features `[N, feature_dim]`.
pub type Backbone = Box<dyn nn::ModuleT>;

/// Builds the backbone's variables under `p` and returns the network.
pub fn build(name: &str, p: &nn::Path) -> TrainResult<Backbone> {
    match info(name)?.name {
        "resnet18" => Ok(Box::new(tch::vision::resnet::resnet18_no_final_layer(p))),
        "resnet50" => Ok(Box::new(tch::vision::resnet::resnet50_no_final_layer(p))),
        other => Err(TrainError::Fatal(format!(
            "backbone {other} cannot be built yet"
        ))),
    }
}
