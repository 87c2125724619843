//! Backbones: networks that map an image batch `[N, 3, S, S]` (float, normalised) to
//! pooled features `[N, feature_dim]`. The projection head and classifiers live
//! elsewhere; a backbone never includes a classifier.
//!
//! - [`resnet`]: ResNet-18/50/101 as torchvision builds them, and `small_resnet`, a
//!   CPU-friendly ResNet with a CIFAR stem for demos and tests.
//! - [`inception_v3`]: torchvision's Inception-v3 without the auxiliary branch.
//! - [`inception_resnet_v2`]: timm's Inception-ResNet-v2.
//! - [`layers`]: the conv, batch-norm and pooling pieces they share.
//!
//! Every backbone is initialised as torchvision initialises a network trained from
//! scratch (Kaiming-normal fan-out convolutions, batch norm at weight 1 and bias 0),
//! keeps its reference's variable names, and runs on channels-last inputs.

use tch::nn;

use super::{TrainError, TrainResult};
use crate::sweep::params as sizes;

mod inception_resnet_v2;
mod inception_v3;
mod layers;
mod resnet;

use resnet::ResNetConfig;

/// What `sweeper models` shows and what training checks before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackboneInfo {
    pub name: &'static str,
    /// Width of the pooled feature the backbone returns.
    pub feature_dim: i64,
    /// The resolution the architecture was designed for.
    pub default_input: i64,
    /// The smallest square input the forward pass accepts. At 1 px a ResNet still
    /// runs (padding keeps every map at least 1×1). In training mode batch norm also
    /// needs several values per channel, and a map of 1×1 leaves only the batch: with
    /// a batch of 2 every normalised value is ±1 and the gradients of a deep net blow
    /// up (ResNet-101 at 1 px overflows `f32`), while a batch of 16 trains normally.
    pub min_input: i64,
}

/// Every backbone sweeper can build.
pub static BACKBONES: &[BackboneInfo] = &[
    BackboneInfo {
        name: sizes::RESNET18.name,
        feature_dim: ResNetConfig::RESNET18.feature_dim(),
        default_input: sizes::RESNET18.default_input,
        min_input: sizes::RESNET18.min_input,
    },
    BackboneInfo {
        name: sizes::RESNET50.name,
        feature_dim: ResNetConfig::RESNET50.feature_dim(),
        default_input: sizes::RESNET50.default_input,
        min_input: sizes::RESNET50.min_input,
    },
    BackboneInfo {
        name: sizes::RESNET101.name,
        feature_dim: ResNetConfig::RESNET101.feature_dim(),
        default_input: sizes::RESNET101.default_input,
        min_input: sizes::RESNET101.min_input,
    },
    BackboneInfo {
        name: sizes::INCEPTION_V3.name,
        feature_dim: inception_v3::FEATURE_DIM,
        default_input: sizes::INCEPTION_V3.default_input,
        min_input: sizes::INCEPTION_V3.min_input,
    },
    BackboneInfo {
        name: sizes::INCEPTION_RESNET_V2.name,
        feature_dim: inception_resnet_v2::FEATURE_DIM,
        default_input: sizes::INCEPTION_RESNET_V2.default_input,
        min_input: sizes::INCEPTION_RESNET_V2.min_input,
    },
    BackboneInfo {
        name: sizes::SMALL_RESNET.name,
        feature_dim: ResNetConfig::SMALL.feature_dim(),
        default_input: sizes::SMALL_RESNET.default_input,
        min_input: sizes::SMALL_RESNET.min_input,
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
    let backbone: Backbone = match info(name)?.name {
        "resnet18" => Box::new(resnet::ResNet::new(p, ResNetConfig::RESNET18)),
        "resnet50" => Box::new(resnet::ResNet::new(p, ResNetConfig::RESNET50)),
        "resnet101" => Box::new(resnet::ResNet::new(p, ResNetConfig::RESNET101)),
        "small_resnet" => Box::new(resnet::ResNet::new(p, ResNetConfig::SMALL)),
        "inception_v3" => Box::new(inception_v3::InceptionV3::new(p)),
        "inception_resnet_v2" => Box::new(inception_resnet_v2::InceptionResNetV2::new(p)),
        other => {
            return Err(TrainError::Fatal(format!(
                "backbone {other} is listed but has no builder"
            )))
        }
    };
    Ok(backbone)
}

/// Trainable parameters of the backbone (without any classifier), counted on a
/// freshly built CPU copy. Batch-norm running statistics are buffers, not parameters.
pub fn trainable_parameters(name: &str) -> TrainResult<i64> {
    let store = nn::VarStore::new(tch::Device::Cpu);
    build(name, &store.root())?;
    Ok(store
        .trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum())
}

/// Where each architecture comes from, for `sweeper models`.
fn origin(name: &str) -> &'static str {
    match name {
        "resnet18" | "resnet50" | "resnet101" => "torchvision",
        "inception_v3" => "torchvision, no aux branch",
        "inception_resnet_v2" => "timm",
        "small_resnet" => "CIFAR stem, CPU demos",
        _ => "",
    }
}

/// A plain-text table of every backbone: trainable parameters (without classifier),
/// feature width, default and smallest input. Builds each backbone once on the CPU
/// to count its parameters (a few seconds for all of them).
pub fn models_table() -> String {
    let header = [
        "backbone",
        "parameters",
        "features",
        "default input",
        "smallest input",
        "origin",
    ];
    let mut rows: Vec<[String; 6]> = vec![header.map(String::from)];
    for backbone in BACKBONES {
        let parameters = match trainable_parameters(backbone.name) {
            Ok(count) => thousands(count),
            Err(error) => format!("error: {error}"),
        };
        rows.push([
            backbone.name.to_string(),
            parameters,
            backbone.feature_dim.to_string(),
            format!("{} px", backbone.default_input),
            format!("{} px", backbone.min_input),
            origin(backbone.name).to_string(),
        ]);
    }
    let mut widths = [0; 6];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut table = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(column, (cell, width))| match column {
                // Names and notes read left to right; numbers line up on the right.
                0 | 5 => format!("{cell:<width$}"),
                _ => format!("{cell:>width$}"),
            })
            .collect();
        table.push_str(line.join("  ").trim_end());
        table.push('\n');
    }
    table
}

/// `23508032` → `"23,508,032"`.
fn thousands(value: i64) -> String {
    let digits = value.unsigned_abs().to_string();
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if value < 0 {
        format!("-{grouped}")
    } else {
        grouped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits_by_three() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(23_508_032), "23,508,032");
        assert_eq!(thousands(-1_234_567), "-1,234,567");
    }

    #[test]
    fn every_listed_backbone_has_an_origin() {
        for backbone in BACKBONES {
            assert!(
                !origin(backbone.name).is_empty(),
                "{} has no origin",
                backbone.name
            );
        }
    }

    #[test]
    fn unknown_backbone_error_lists_known_names() {
        let message = info("resnet34").unwrap_err().to_string();
        assert!(message.contains("\"resnet34\""), "{message}");
        for backbone in BACKBONES {
            assert!(message.contains(backbone.name), "{message}");
        }
    }

    #[test]
    fn check_input_accepts_the_minimum_and_refuses_one_below() {
        for backbone in BACKBONES {
            assert!(check_input(backbone.name, backbone.min_input).is_ok());
            assert!(check_input(backbone.name, backbone.default_input).is_ok());
            if backbone.min_input > 1 {
                let error = check_input(backbone.name, backbone.min_input - 1).unwrap_err();
                assert!(!error.is_infrastructure());
                let message = error.to_string();
                assert!(message.contains(backbone.name), "{message}");
                assert!(
                    message.contains(&format!("{} px", backbone.min_input)),
                    "{message}"
                );
            }
        }
        assert!(check_input("small_resnet", 0).is_err());
    }

    #[test]
    fn small_resnet_matches_its_documented_size() {
        // Hand count: stem 3·32·9 + 2·32; per basic block 9·c_in·w + 9·w² + 4·w,
        // plus c_in·w + 2·w for the projection shortcut of stages 2–4.
        let stem = 3 * 32 * 9 + 2 * 32;
        let block = |c_in: i64, w: i64| 9 * c_in * w + 9 * w * w + 4 * w;
        let shortcut = |c_in: i64, w: i64| c_in * w + 2 * w;
        let expected = stem
            + block(32, 32)
            + block(32, 64)
            + shortcut(32, 64)
            + block(64, 128)
            + shortcut(64, 128)
            + block(128, 256)
            + shortcut(128, 256);
        assert_eq!(trainable_parameters("small_resnet").unwrap(), expected);
    }
}
